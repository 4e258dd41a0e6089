"""Official Hiera and SAM 2 checkpoints: download from Meta and convert once into a local cache.

The cache is `$HIERA_HF_CACHE`, or `~/.cache/hiera_hf`: `checkpoints/` holds Meta's `.pth` / `.pt` files as
downloaded, `models/<variant>.<checkpoint>/` (Hiera) and `models/<variant>/` (SAM 2) the converted folders.
"""

from __future__ import annotations

import difflib
import os
import tempfile
import urllib.error
from pathlib import Path

import torch

from .hiera.presets import HIERA_PRESETS, HieraPreset, get_preset
from .sam2.presets import SAM2_PRESETS


def cache_dir() -> Path:
    """The root of hiera-hf's cache."""
    return Path(os.environ.get("HIERA_HF_CACHE") or Path.home() / ".cache" / "hiera_hf").expanduser()


def download_checkpoint(variant: str, checkpoint_name: str | None = None, progress: bool = True) -> Path:
    """Path of Meta's checkpoint for `variant`, downloaded on first use: a Hiera `.pth` (the default checkpoint
    unless `checkpoint_name`) or a SAM 2 `.pt` (one per variant, so no `checkpoint_name`).

    Raises `ConnectionError` when the download fails (e.g. offline), naming the offline alternatives.
    """
    if variant in SAM2_PRESETS:
        if checkpoint_name is not None:
            raise ValueError(f"{variant} has one official checkpoint; do not pass a checkpoint name")
        url = SAM2_PRESETS[variant].checkpoint
    else:
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
    """A folder loadable with `from_pretrained`, from what `--model` accepts:

    - an existing folder, as is;
    - an official Hiera or SAM 2 variant name (`hiera_base_224`, `sam2.1_hiera_tiny`): converted once into the
      cache (Meta's checkpoint downloaded on first use) and reused afterwards;
    - a Hugging Face Hub repo id (`owner/name`): downloaded with `huggingface_hub` into its cache (`HF_HOME`),
      reused offline (`HF_HUB_OFFLINE=1`) once there.

    Raises `FileNotFoundError` for a path that is not a folder, `ConnectionError` when a download is needed and
    fails (naming the offline alternatives), `ValueError` for anything else.
    """
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_dir)
    if name in SAM2_PRESETS:
        folder, checkpoint_name = cache_dir() / "models" / name, None
    elif name in HIERA_PRESETS:
        checkpoint_name = checkpoint_name or HIERA_PRESETS[name].default_checkpoint
        folder = cache_dir() / "models" / f"{name}.{checkpoint_name}"
    elif _is_repo_id(name):
        return _download_repo(name)
    elif path.exists() or name.startswith(("/", ".", "~")) or os.sep in name:
        raise FileNotFoundError(f"No such model folder: {name}")
    else:
        variants = [*sorted(HIERA_PRESETS), *SAM2_PRESETS]
        close = difflib.get_close_matches(name, variants, n=3)
        hint = f"did you mean {' or '.join(close)}?" if close else f"variants: {', '.join(variants)}"
        raise ValueError(
            f"{name!r} is neither an existing folder, a known Hiera or SAM 2 variant, nor a Hub repo id "
            f"(owner/name); {hint}"
        )
    if (folder / "config.json").is_file():
        return folder
    try:
        checkpoint = download_checkpoint(name, checkpoint_name, progress=progress)
    except ConnectionError as error:
        raise ConnectionError(f"{name} is not in the cache ({folder}) and could not be downloaded: {error}") from error
    from .conversion import convert_hiera, convert_sam2

    if name in SAM2_PRESETS:
        return convert_sam2(folder, name, checkpoint=checkpoint, overwrite=True, progress=progress)
    return convert_hiera(
        folder, name, checkpoint=checkpoint, checkpoint_name=checkpoint_name, overwrite=True, progress=progress
    )


def _is_repo_id(name: str) -> bool:
    """Whether `name` reads as a Hub model repo id (`owner/name`, no leading `/`, `.` or `~`)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if name.count("/") != 1 or name.startswith((".", "~")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _download_repo(repo_id: str) -> Path:
    """The local snapshot of Hub repo `repo_id`: downloaded (or updated) into huggingface_hub's cache, or the cached
    one when offline (`HF_HUB_OFFLINE=1`)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id))
    except GatedRepoError as error:
        raise ValueError(f"The Hub repo {repo_id} is gated: accept its terms on the Hub and log in ({error})") from error
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise ValueError(
            f"{repo_id} is not a local folder, and no Hub repo {repo_id} was found (private ones need a login: "
            f"`hf auth login`): {error}"
        ) from error
    except (LocalEntryNotFoundError, HfHubHTTPError, ConnectionError, OSError) as error:
        raise ConnectionError(
            f"{repo_id} is not a local folder, and as a Hub repo id it is not in the Hugging Face cache and could "
            f"not be downloaded (offline?): {str(error).rstrip('.')}. Download it where there is a network (`hf download {repo_id}` "
            "fills the same cache) or pass --model DIR with a local folder."
        ) from error


def official_preset(variant: str) -> HieraPreset:
    """The preset of an official variant; `ValueError` listing the valid names otherwise."""
    try:
        return get_preset(variant)
    except KeyError as error:
        raise ValueError(error.args[0]) from error


def checkpoint_url(preset: HieraPreset, checkpoint_name: str | None = None) -> str:
    """Download URL of one of the variant's official checkpoints (its default one when `checkpoint_name` is None)."""
    name = checkpoint_name or preset.default_checkpoint
    if name not in preset.checkpoints:
        raise ValueError(f"{preset.name} has no checkpoint {name!r}; official ones: {', '.join(preset.checkpoints)}")
    return preset.checkpoints[name]
