"""Processes that end cleanly: children that end with the process that started them (Linux's
PR_SET_PDEATHSIG: the workers of training and evaluation, the nodes of ``liquid-control sim``'s graph), and a
command line that treats SIGTERM (``kill``, a batch system's time limit) as it treats Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Callable


def parent_death_signal() -> Callable[[], object] | None:
    """Linux: a function that makes the process calling it get SIGTERM when its parent dies. Resolved here, in
    the parent, so a child between fork and exec only calls it (no import, no dlopen after fork). None elsewhere
    (a pool worker then ends when it next finds its queue closed)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def die_with_parent() -> None:
    """A pool worker: SIGTERM when its parent dies (killed), instead of lingering idle with the parent's stdout
    open (a `liquid-control train ... | tee log` then never ended)."""
    arm = parent_death_signal()
    if arm is not None:
        arm()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be: the same clean stop, exit status 143."""


def _raise_terminated(signum, frame):
    raise Terminated


@contextmanager
def sigterm_as_interrupt():
    """Within the block SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread, so a
    command's Ctrl-C handling (its message, its exit) also covers ``kill``; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
