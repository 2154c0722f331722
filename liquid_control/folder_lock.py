"""One process at a time in an output folder: the lock that `liquid-control train`, `eval` and `record --expert`
hold on their folder while they write there, and a bag's writer on the bag while it records.

The lock is an exclusive ``flock`` on the folder itself (its descriptor: no lock file that a run would leave
behind or another command would count as content), released when the process ends however it ends. A second
command started on the same folder (two terminals, a script run twice, a job array) is refused at once with
:class:`FolderInUse`, naming the folder and, where the system says (Linux's ``/proc/locks``), the process
holding it and its command line; before, both wrote the same files (a results log holding every episode twice,
a report written twice, bags removed under the other recorder).

A process may hold a folder's lock more than once (an experiment's evaluation inside the experiment): only the
outermost hold takes and releases it. Where ``flock`` is missing (not POSIX) or the file system refuses it (some
network file systems) the command runs unlocked, with one line on stderr saying so."""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no locks
    fcntl = None

_HELD: dict[tuple[int, int], list] = {}  # (device, inode) -> [descriptor, holds] of the folders this process locked
_GUARD = threading.Lock()
_UNLOCKABLE: set[int] = set()  # devices whose folders flock refused (said once each)
_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)  # flock's "held by another" (EACCES: some NFS clients)


class FolderInUse(RuntimeError):
    """Another process holds the folder's lock; the message names the folder and, where known, that process."""


def _open(folder: Path) -> int | None:
    try:
        return os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # gone, not a folder, no permission to open it: nothing to lock
        return None


def holder(folder: str | Path) -> str:
    """Who holds ``folder``'s lock, as a message says it: ``another process (pid N: COMMAND)`` where
    ``/proc/locks`` names it, else ``another process``."""
    pid = None
    try:
        st = os.stat(folder)
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:  # not Linux, or the folder is gone
        return "another process"
    exact = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    candidates = []
    for line in lines:  # "3: FLOCK  ADVISORY  WRITE 5108 00:1b:232625 0 EOF"; a waiter's has "->" after the number
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK" or fields[3] != "WRITE" or not fields[4].isdigit():
            continue
        if fields[5] == exact:
            pid = int(fields[4])
            break
        if fields[5].rpartition(":")[2] == str(st.st_ino):  # a file system whose device numbers differ from stat's
            candidates.append(int(fields[4]))
    if pid is None and len(set(candidates)) == 1:
        pid = candidates[0]
    if not pid or pid == os.getpid():  # 0: a process outside this pid namespace
        return "another process"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        argv = []
    if len(argv) > 1 and os.path.basename(argv[0]).startswith("python") and not argv[1].startswith("-"):
        argv = argv[1:]  # `python .../liquid-control eval ...` (a console script): the script and its arguments
    if argv:
        argv[0] = os.path.basename(argv[0])
    command = " ".join(argv)
    command = command if len(command) <= 120 else command[:117] + "..."
    return f"another process (pid {pid}: {command})" if command else f"another process (pid {pid})"


def _refusal(folder: Path, instead: str, error: type[Exception]) -> Exception:
    return error(
        f"{folder}: {holder(folder)} is writing in this folder and holds its lock; wait for it to end, or {instead}"
    )


_PROBE_WAITS = 300  # x 10 ms at least: how long a hold waits out probes that hold the lock shared and no one else


def _take(fd: int) -> None:
    """The exclusive lock of ``fd``, or the OSError of ``flock``. Held shared only (probes of
    :func:`in_use_elsewhere`, an instant each, however long a loaded machine pauses the probing process there) is no
    refusal: asked again until they let go; held exclusively (another process writing there) refused at once."""
    for _ in range(_PROBE_WAITS):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in _BUSY:
                raise
            busy = exc
        try:  # granted: no process holds it exclusively, only probes shared
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise busy from None
        fcntl.flock(fd, fcntl.LOCK_UN)
        time.sleep(0.01)
    raise busy


@contextmanager
def hold(folder: str | Path, instead: str, error: type[Exception] = FolderInUse):
    """Hold the exclusive lock of ``folder`` (an existing folder) for the block; ``error`` (the command's own
    error class, else :class:`FolderInUse`) at once where another process holds it, its message ending ``... wait
    for it to end, or`` ``instead`` (what else the user can do, e.g. "evaluate into another --out")."""
    folder = Path(folder)
    fd = _open(folder) if fcntl is not None else None
    if fd is None:
        yield
        return
    key = (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
    with _GUARD:
        held = _HELD.get(key)
        if held is not None:  # this process holds it already: one more hold of the same lock
            os.close(fd)
            held[1] += 1
        else:
            try:
                _take(fd)
            except OSError as exc:
                os.close(fd)
                if exc.errno in _BUSY:
                    raise _refusal(folder, instead, error) from None
                if key[0] not in _UNLOCKABLE:  # said once per file system: record --expert locks a bag an episode
                    _UNLOCKABLE.add(key[0])
                    print(  # e.g. a network file system without flock: the run goes on, unguarded
                        f"liquid-control: warning: cannot lock {folder} ({exc.strerror or exc}): a second command "
                        "writing into it (or into another folder of its file system) at the same time would not be "
                        "refused",
                        file=sys.stderr,
                    )
                fd = None
            else:
                _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        if fd is not None:
            with _GUARD:
                held = _HELD[key]
                held[1] -= 1
                if held[1] == 0:
                    del _HELD[key]
                    os.close(held[0])  # releases the lock


def check_free(folder: str | Path, instead: str, error: type[Exception] = FolderInUse) -> None:
    """``error`` (as :func:`hold`) where another process holds ``folder``'s lock now (nothing where the folder does not
    exist): for the checks a command makes before it takes the lock, so that it refuses with who holds it rather
    than with what that process has written there so far."""
    if in_use_elsewhere(folder):
        raise _refusal(Path(folder), instead, error)


def in_use_elsewhere(folder: str | Path) -> bool:
    """Whether another process holds ``folder``'s lock (False where the folder does not exist, or cannot be
    locked): a failed command removes a folder it made only where no other process has begun to use it."""
    fd = _open(Path(folder)) if fcntl is not None else None
    if fd is None:
        return False
    try:
        st = os.fstat(fd)
        with _GUARD:
            if (st.st_dev, st.st_ino) in _HELD:
                return False
        try:  # shared: two probes at once do not see each other
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            return exc.errno in _BUSY
        return False  # closing the descriptor below gives the lock back
    finally:
        os.close(fd)
