"""Official Hiera and SAM 2 variants by name: Meta's checkpoint downloaded and converted once into a local cache.

The cache is `$HIERA_HF_CACHE`, or `~/.cache/hiera_hf`: `checkpoints/` holds Meta's `.pth` / `.pt` files as
downloaded (see `hiera_hf.checkpoints`), `models/<variant>.<checkpoint>/` (Hiera) and `models/<variant>/` (SAM 2) the
converted folders.
"""

from __future__ import annotations

from pathlib import Path

from .checkpoints import cache_dir, download_checkpoint
from .conversion import convert_hiera, convert_sam2
from .hiera.presets import HIERA_PRESETS
from .sam2.presets import SAM2_PRESETS


def resolve_model(name_or_dir: str | Path, checkpoint_name: str | None = None, progress: bool = True) -> Path:
    """A folder loadable with `from_pretrained`: an existing folder as is, or an official Hiera or SAM 2 variant
    name converted once into the cache (its checkpoint downloaded on first use) and reused afterwards."""
    path = Path(name_or_dir)
    if path.is_dir():
        return path
    name = str(name_or_dir)
    if name in SAM2_PRESETS:
        folder, checkpoint_name = cache_dir() / "models" / name, None
    elif name in HIERA_PRESETS:
        checkpoint_name = checkpoint_name or HIERA_PRESETS[name].default_checkpoint
        folder = cache_dir() / "models" / f"{name}.{checkpoint_name}"
    else:
        raise ValueError(
            f"{name!r} is neither an existing folder nor a known Hiera variant or SAM 2 variant; variants: "
            f"{', '.join(sorted(HIERA_PRESETS))}, {', '.join(SAM2_PRESETS)}"
        )
    if (folder / "config.json").is_file():
        return folder
    try:
        checkpoint = download_checkpoint(name, checkpoint_name, progress=progress)
    except ConnectionError as error:
        raise ConnectionError(f"{name} is not in the cache ({folder}) and could not be downloaded: {error}") from error
    if name in SAM2_PRESETS:
        return convert_sam2(folder, name, checkpoint=checkpoint, overwrite=True, progress=progress)
    return convert_hiera(
        folder, name, checkpoint=checkpoint, checkpoint_name=checkpoint_name, overwrite=True, progress=progress
    )


__all__ = ["resolve_model"]
