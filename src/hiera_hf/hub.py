"""Official Hiera and SAM 2 variants by name: Meta's checkpoint downloaded and converted once into a local cache.

The cache is `$HIERA_HF_CACHE`, or `~/.cache/hiera_hf`: `checkpoints/` holds Meta's `.pth` / `.pt` files as
downloaded (see `hiera_hf.checkpoints`), `models/<variant>.<checkpoint>/` (Hiera) and `models/<variant>/` (SAM 2) the
converted folders.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from .checkpoints import cache_dir, download_checkpoint
from .conversion import convert_hiera, convert_sam2
from .hiera.model_folder import check_model_folder
from .hiera.presets import HIERA_PRESETS
from .sam2.presets import SAM2_PRESETS


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
            f"{name!r} is neither an existing folder nor a known Hiera variant or SAM 2 variant nor a Hub repo id "
            f"(owner/name); {hint}"
        )
    if (folder / "config.json").is_file():
        return folder
    try:
        checkpoint = download_checkpoint(name, checkpoint_name, progress=progress)
    except ConnectionError as error:
        raise ConnectionError(
            f"{name} is not in the cache ({folder}) and could not be downloaded: {error} Or pass --model DIR with an "
            "already converted folder."
        ) from error
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


def load_pretrained(model_class: type, folder: str | Path, model_types: tuple[str, ...], needed: str, **kwargs):
    """`model_class.from_pretrained(folder, **kwargs)` after `check_model_folder` (whose value checks the
    `from_pretrained` of our classes runs), refusing weights that do not match the config (missing, unexpected or
    differently shaped tensors: a tampered `config.json` or the wrong file) instead of filling them with random
    values. Errors are `ValueError`s naming the folder."""
    from safetensors import SafetensorError

    check_model_folder(folder, model_types, needed, values=False)
    try:
        # Mismatched shapes come back in `info` (refused below, with their names) rather than as a bare error.
        model, info = model_class.from_pretrained(
            folder, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
    except (OSError, RuntimeError, SafetensorError, TypeError, KeyError) as error:  # a damaged or edited folder
        raise ValueError(f"Cannot load the model in {folder}: {str(error).strip().splitlines()[0]}") from error
    problems = {
        name: sorted(map(str, keys))[:3]
        for name, keys in info.items()
        if name in ("missing_keys", "unexpected_keys", "mismatched_keys") and keys
    }
    if problems:
        found = "; ".join(f"{name.replace('_', ' ')}: {', '.join(keys)}" for name, keys in problems.items())
        raise ValueError(
            f"{folder}/model.safetensors does not match {folder}/config.json ({found}); the config may have been "
            "edited or the weights belong to another model"
        )
    return model


__all__ = ["load_pretrained", "resolve_model"]
