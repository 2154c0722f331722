"""Write files so that a killed process never leaves a half-written checkpoint, dataset or report behind."""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    """The process's umask, read where the system shows it (Linux) instead of set and restored: another
    thread creating a file in between would get no umask at all."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0)
    os.umask(umask)
    return umask


def default_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give (mkstemp's 0600 would hide shipped policies)."""
    return 0o666 & ~_umask()


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", replace: bool = True, **open_kwargs):
    """Open a temporary file beside ``path``; on success flush, fsync and rename it over ``path``, on any
    error remove it and leave ``path`` as it was (an OSError of the writing, e.g. a full disk, names ``path``).
    ``replace=False``: a new file only, FileExistsError where ``path`` is there by then (made by another process
    meanwhile), the temporary file removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # a read-only folder: name the file asked for, not the temporary one
        raise _naming(exc, path) from None
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _publish(tmp, path, replace)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # a full disk: ENOSPC without a file name, from a write, flush or fsync
            raise _naming(exc, path, tmp) from None
        raise


def _naming(exc: OSError, path: Path, tmp: str | None = None) -> OSError:
    """``exc`` of writing ``path`` with ``path`` as its file name, so a message can say which file could not be
    written. With ``tmp`` (the body ran): only an error naming no file or ``tmp``; one that names another file (the
    body read one) is left as it was."""
    if exc.errno is None or (tmp is not None and exc.filename not in (None, tmp)):
        return exc
    return OSError(exc.errno, exc.strerror, str(path))  # the errno's subclass, e.g. PermissionError


@contextmanager
def atomic_path(path: str | Path):
    """A temporary path beside ``path`` with its extension (matplotlib and PIL choose the format by it), for a
    writer that takes a path (``fig.savefig``): on success synced and renamed over ``path``; on any error, or if the
    writer wrote nothing, removed, leaving ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        if os.path.getsize(tmp):
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            _publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _publish(tmp: str, path: Path, replace: bool = True) -> None:
    os.chmod(tmp, default_file_mode())
    if replace:
        os.replace(tmp, path)
    else:  # a hard link is made only where no file has the name (a rename would replace one): then the name moves
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links (FAT, some network ones): checked, then renamed
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
            os.replace(tmp, path)
            return
        os.unlink(tmp)
