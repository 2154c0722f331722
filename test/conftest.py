"""Test-wide settings: headless rendering, small deterministic torch thread pools; fixtures of several files."""

import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


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
