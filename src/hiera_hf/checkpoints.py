"""Meta's official Hiera and SAM 2 checkpoints: their URLs and a download cache.

The cache is `$HIERA_HF_CACHE`, or `~/.cache/hiera_hf`; `checkpoints/` holds Meta's `.pth` / `.pt` files as
downloaded (`hiera_hf.hub` keeps the converted folders beside it, in `models/`).
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import torch

from .hiera.presets import HieraPreset, get_preset
from .io_utils import atomic_write
from .sam2.presets import SAM2_PRESETS


def cache_dir() -> Path:
    """The root of hiera-hf's cache."""
    return Path(os.environ.get("HIERA_HF_CACHE") or Path.home() / ".cache" / "hiera_hf").expanduser()


def download_checkpoint(variant: str, checkpoint_name: str | None = None, progress: bool = True) -> Path:
    """Path of Meta's checkpoint for `variant`, downloaded on first use: a Hiera `.pth` (the default checkpoint
    unless `checkpoint_name`) or a SAM 2 `.pt` (one per variant, so no `checkpoint_name`).

    Raises `ConnectionError` when the download fails (e.g. offline), naming the path to copy the file to.
    """
    if variant in SAM2_PRESETS:
        if checkpoint_name is not None:
            raise ValueError(f"{variant} has one official checkpoint; do not pass a checkpoint name")
        url = SAM2_PRESETS[variant].checkpoint
    else:
        url = checkpoint_url(get_preset(variant), checkpoint_name)
    target = cache_dir() / "checkpoints" / url.rsplit("/", 1)[-1]
    if target.is_file():
        return target
    try:
        atomic_write(target, lambda partial: torch.hub.download_url_to_file(url, partial, progress=progress))
    except (urllib.error.URLError, OSError) as error:
        raise ConnectionError(
            f"Could not download {url} ({error}). Offline, download {target.name} where there is a network and "
            f"copy it to {target} (the cache, $HIERA_HF_CACHE/checkpoints/): the same command then uses it."
        ) from error
    return target


def checkpoint_url(preset: HieraPreset, checkpoint_name: str | None = None) -> str:
    """Download URL of one of the variant's official checkpoints (its default one when `checkpoint_name` is None)."""
    name = checkpoint_name or preset.default_checkpoint
    if name not in preset.checkpoints:
        raise ValueError(f"{preset.name} has no checkpoint {name!r}; official ones: {', '.join(preset.checkpoints)}")
    return preset.checkpoints[name]


__all__ = ["cache_dir", "checkpoint_url", "download_checkpoint"]
