"""Official Hiera checkpoints: download from Meta and convert once into a local cache.

The cache is `$HIERA_HF_CACHE`, or `~/.cache/hiera_hf`: `checkpoints/` holds Meta's `.pth` files as downloaded,
`models/<variant>.<checkpoint>/` the converted folders.
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
from pathlib import Path

import torch

from .hiera.presets import HIERA_PRESETS, HieraPreset, get_preset


def cache_dir() -> Path:
    """The root of hiera-hf's cache."""
    return Path(os.environ.get("HIERA_HF_CACHE") or Path.home() / ".cache" / "hiera_hf").expanduser()


def download_checkpoint(variant: str, checkpoint_name: str | None = None, progress: bool = True) -> Path:
    """Path of Meta's `.pth` for `variant` (default checkpoint unless `checkpoint_name`), downloaded on first use.

    Raises `ConnectionError` when the download fails (e.g. offline), naming the offline alternatives.
    """
    url = checkpoint_url(official_preset(variant), checkpoint_name)
    target = cache_dir() / "checkpoints" / url.rsplit("/", 1)[-1]
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        torch.hub.download_url_to_file(url, partial, progress=progress)
        os.replace(partial, target)
    except (urllib.error.URLError, OSError) as error:
        raise ConnectionError(
            f"Could not download {url} ({error}). If you are offline, download {target.name} elsewhere and pass "
            f"--checkpoint FILE (convert) or pass --model DIR with an already converted folder."
        ) from error
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return target


def resolve_model(name_or_dir: str | Path, checkpoint_name: str | None = None, progress: bool = True) -> Path:
    """A folder loadable with `from_pretrained`: an existing folder as is, or an official variant name converted
    once into the cache (its checkpoint downloaded on first use) and reused afterwards."""
    path = Path(name_or_dir)
    if path.is_dir():
        return path
    if str(name_or_dir) not in HIERA_PRESETS:
        raise ValueError(
            f"{str(name_or_dir)!r} is neither an existing folder nor a known Hiera variant; "
            f"variants: {', '.join(sorted(HIERA_PRESETS))}"
        )
    preset = HIERA_PRESETS[str(name_or_dir)]
    name = checkpoint_name or preset.default_checkpoint
    folder = cache_dir() / "models" / f"{preset.name}.{name}"
    if (folder / "config.json").is_file():
        return folder
    try:
        checkpoint = download_checkpoint(preset.name, name, progress=progress)
    except ConnectionError as error:
        raise ConnectionError(
            f"{preset.name} is not in the cache ({folder}) and could not be downloaded: {error}"
        ) from error
    from .conversion import convert_hiera

    return convert_hiera(
        folder, preset.name, checkpoint=checkpoint, checkpoint_name=name, overwrite=True, progress=progress
    )


def official_preset(variant: str) -> HieraPreset:
    """The preset of an official variant; `ValueError` listing the valid names otherwise."""
    try:
        return get_preset(variant)
    except KeyError as error:
        raise ValueError(error.args[0]) from None


def checkpoint_url(preset: HieraPreset, checkpoint_name: str | None = None) -> str:
    """Download URL of one of the variant's official checkpoints (its default one when `checkpoint_name` is None)."""
    name = checkpoint_name or preset.default_checkpoint
    if name not in preset.checkpoints:
        raise ValueError(f"{preset.name} has no checkpoint {name!r}; official ones: {', '.join(preset.checkpoints)}")
    return preset.checkpoints[name]
