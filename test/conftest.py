"""Test-wide settings: headless rendering, small deterministic torch thread pools; fixtures of several files."""

import os
import signal

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

# The Ctrl-C tests send SIGINT to a process that takes it, as from a terminal. A suite started in the background of a
# script (`./test.sh &` in a non-interactive shell) inherits SIGINT ignored, and five of them failed there (measured
# 2026-12-07): each test process takes it as Python does by default (a test of an ignoring parent sets SIG_IGN itself).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def first_fsync_held(monkeypatch):
    """A disk slower than the recording: the first fsync a bag writer's background thread makes (a finished file's)
    lasts until the test sets ``release``; ``blocked`` is set once it started. ``(blocked, release)``; released at
    the end of the test in any case."""
    import threading

    from liquid_control.bags import io

    fsync, blocked, release = io.os.fsync, threading.Event(), threading.Event()

    def slow(fd):
        if threading.current_thread() is not threading.main_thread() and not blocked.is_set():
            blocked.set()
            release.wait(timeout=60)
        return fsync(fd)

    monkeypatch.setattr(io.os, "fsync", slow)
    yield blocked, release
    release.set()


@pytest.fixture(autouse=True)
def stop_signal_handlers_put_back():
    """SIGINT's and SIGTERM's handling as it was before the test: a script run in this process (runpy, ``__main__``)
    ends through ``processes.exit_status_of``, which sets both to end the process once the script has returned."""
    import signal

    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in before.items():
        if handler is not None:  # None: set from outside Python, which cannot be put back from here
            signal.signal(signum, handler)


@pytest.fixture(autouse=True)
def domain_ids_held_while_the_test_runs():
    """Every ROS domain id the test takes stays locked until it ends (its in-process nodes, torn down by its own
    fixtures before this one, show their ids in no process environment); then all but the last few go back."""
    from liquid_control.ros import testing

    testing.hold_domain_ids(True)
    yield
    testing.hold_domain_ids(False)
