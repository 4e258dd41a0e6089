"""Writing files and folders so that a reader never sees half of one: the one atomic writer of hiera-hf."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], mode: int = 0o644) -> Path:
    """Writes a file through `write(temporary_path)` beside `path`, then moves it into place in one rename.

    The temporary file keeps `path`'s suffix (writers such as PIL and PyAV pick the format from it) and is removed
    if `write` fails, so `path` either keeps its old content or gets the whole new one. The result gets the
    permission bits `mode` (`mkstemp` alone would leave owner-only files). Missing parent folders are created
    (and removed again if `write` fails, `created_folder`). Returns `path` as a `Path`.
    """
    path = Path(path)
    with created_folder(path.parent):
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


@contextlib.contextmanager
def created_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Creates `folder` and its missing parents for the block; when the block fails, removes again those it
    created that are still empty, so that a refused or failed write leaves no empty folder behind."""
    folder = Path(folder)
    missing = [path for path in (folder, *folder.parents) if not os.path.lexists(path)]  # innermost first
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        for path in missing:
            try:
                path.rmdir()
            except OSError:  # not empty (another writer's files) or already gone
                break
        raise


_STAGING = "hiera-hf-staging"  # marks the hidden folders `staged_folder` writes beside its target
_RACE = "{target} was written by another process at the same time; that complete folder was kept and this one discarded"


def _staging_prefix(target: Path) -> str:
    return f".{target.name}.{_STAGING}.{os.getpid()}."


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_staging(target: str | os.PathLike) -> list[Path]:
    """Removes the hidden staging folders that an interrupted `staged_folder` (killed process) left beside
    `target`: only folders named `.<target name>.hiera-hf-staging.<pid>.*` whose process no longer runs on this
    machine. Returns the removed paths."""
    target = Path(target)
    pattern = f".{target.name}.{_STAGING}."
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in target.parent.iterdir():
            pid = entry.name[len(pattern) :].split(".", 1)[0]
            if entry.name.startswith(pattern) and pid.isdigit() and entry.is_dir() and not entry.is_symlink():
                if int(pid) != os.getpid() and not _is_alive(int(pid)):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry)
    return removed


def _contains(folder: Path, path: Path) -> bool:
    folder, path = folder.resolve(), path.resolve()
    return path == folder or folder in path.parents


def check_replaceable(
    target: str | os.PathLike,
    overwrite: bool,
    is_replaceable: Callable[[Path], bool] | None = None,
    inputs: Iterable[str | os.PathLike] = (),
    what: str = "output folder",
) -> None:
    """Refuses a `target` folder that writing must not destroy. `FileExistsError` when it exists and `overwrite` is
    false, or when it is not a folder, or when it is neither empty nor `is_replaceable(target)`; `ValueError` when
    it is or contains one of the `inputs` (with or without `overwrite`: the input would be deleted)."""
    target = Path(target)
    for source in inputs:
        if source is not None and _contains(target, Path(source)):
            raise ValueError(f"The {what} {target} holds the input {source}; choose another {what}")
    if not target.exists() and not target.is_symlink():
        return
    if not overwrite:
        raise FileExistsError(
            f"{target} already exists; choose another {what} or replace it with --overwrite (overwrite=True in Python)"
        )
    if target.is_symlink() or not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder; refusing to replace it")
    if any(target.iterdir()) and not (is_replaceable is not None and is_replaceable(target)):
        names = sorted(entry.name for entry in target.iterdir())
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise FileExistsError(
            f"{target} is not a folder hiera-hf wrote (it holds {shown}); refusing to replace it: remove it yourself "
            f"or choose another {what}"
        )


@contextlib.contextmanager
def staged_folder(
    target: str | os.PathLike,
    overwrite: bool = False,
    is_replaceable: Callable[[Path], bool] | None = None,
    inputs: Iterable[str | os.PathLike] = (),
) -> Iterator[Path]:
    """Writes a folder atomically: yields a hidden staging folder beside `target` to fill; when the block ends
    without error, the staging folder is renamed to `target` in one step; on any error it is removed and `target`
    is untouched.

    `target` may exist only with `overwrite`, and is then replaced only when it is empty or
    `is_replaceable(target)` (a folder recognisably written by hiera-hf), never when it holds one of `inputs`
    (see `check_replaceable`). Staging folders left by killed runs are removed first (`remove_stale_staging`).
    When another process writes `target` at the same time, one complete folder wins and the other writer raises
    `FileExistsError` saying so. Files get the permission bits of the umask (not `mkdtemp`'s owner-only ones).
    Missing parent folders are created, and removed again on any error (`created_folder`).
    """
    target = Path(target)
    inputs = list(inputs)
    check_replaceable(target, overwrite, is_replaceable, inputs)
    with created_folder(target.parent):
        remove_stale_staging(target)
        staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(target), dir=target.parent))
        umask = os.umask(0)
        os.umask(umask)
        previous = None
        try:
            yield staging
            for path in [staging, *staging.rglob("*")]:
                if not path.is_symlink():
                    path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
            if target.exists() and not overwrite:
                raise FileExistsError(_RACE.format(target=target))
            if target.exists():
                check_replaceable(target, overwrite, is_replaceable, inputs)  # another writer may have replaced it
                previous = Path(tempfile.mkdtemp(prefix=_staging_prefix(target), dir=target.parent)) / "old"
                os.replace(target, previous)
            try:
                os.replace(staging, target)
            except OSError as error:
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                    raise
                raise FileExistsError(_RACE.format(target=target)) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if previous is not None and not target.exists():
                os.replace(previous, target)
            raise
        finally:
            if previous is not None:
                shutil.rmtree(previous.parent, ignore_errors=True)


__all__ = ["atomic_write", "check_replaceable", "created_folder", "remove_stale_staging", "staged_folder"]
