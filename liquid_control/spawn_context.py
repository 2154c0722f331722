"""The multiprocessing context of :func:`liquid_control.processes.spawn_pool`: spawned processes that start ignoring a
batch system's warning signals. A module of its own, imported when a pool starts: multiprocessing's import (~50 ms
at a load of 6 on 2 cores, with concurrent.futures.process) would otherwise come with every import of ``processes``,
which a node executable makes before its early stop handling is in place (``ros.entry``)."""

from __future__ import annotations

from multiprocessing.context import SpawnContext, SpawnProcess

from liquid_control.processes import (
    ctrl_c_blocked,
    ctrl_c_unblocked,
    quiet_ctrl_c_in_worker,
    start_resource_tracker,
    warning_signals_ignored,
)


class WorkerProcess(SpawnProcess):
    """A pool worker started ignoring :data:`~liquid_control.processes.WARNING_SIGNALS` (``warning_signals_ignored``):
    spawned with their default handling, a worker ignored them only once its initializer ran (after the interpreter
    started and imported torch), and a batch system's warning to the job in that time ended it (the next batch
    failed: 'a worker process died'). A signal to this process while one starts is ignored without a word. Ctrl-C
    waits (blocked, ``ctrl_c_blocked``) until the worker's interpreter is up and :meth:`run` makes it a quiet exit:
    at Python's default a Ctrl-C to the process group while a worker started ended it with 'Fatal Python error:
    init_import_site ... KeyboardInterrupt' on the terminal below the parent's own 'interrupted' line (an eval
    interrupted as its pool started)."""

    def start(self) -> None:
        """Start it as multiprocessing does, with the warning signals ignored and Ctrl-C blocked meanwhile. The resource
        tracker first: a worker's start starts it where it is not running, and multiprocessing then unblocks SIGINT
        (``resource_tracker.ensure_running``), so a Ctrl-C in the worker's start-up ended it with Python's default
        handling (exit -2, a traceback or 'Fatal Python error'). ``spawn_pool`` starts the tracker before its pool, so
        only a worker started on its own, the first of its process, was open to it."""
        start_resource_tracker()
        with warning_signals_ignored(), ctrl_c_blocked():
            super().start()

    def run(self) -> None:
        """In the worker: Ctrl-C and the warning signals handled as a worker's (``quiet_ctrl_c_in_worker``), then
        Ctrl-C unblocked (one that came during the start-up ends the worker now, quietly), then the pool's loop."""
        quiet_ctrl_c_in_worker()
        ctrl_c_unblocked()
        super().run()


class WorkerContext(SpawnContext):
    """multiprocessing's spawn context, its processes :class:`WorkerProcess`."""

    Process = WorkerProcess
