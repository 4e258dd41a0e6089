"""Writing files so that a reader never sees half of one: the one atomic writer of hiera-hf."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], mode: int = 0o644) -> Path:
    """Writes a file through `write(temporary_path)` beside `path`, then moves it into place in one rename.

    The temporary file keeps `path`'s suffix (writers such as PIL and PyAV pick the format from it) and is removed
    if `write` fails, so `path` either keeps its old content or gets the whole new one. The result gets the
    permission bits `mode` (`mkstemp` alone would leave owner-only files). Missing parent folders are created.
    Returns `path` as a `Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    try:
        write(partial)
        os.chmod(partial, mode)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return path


__all__ = ["atomic_write"]
