"""The multiprocessing context of :func:`liquid_control.processes.spawn_pool`: spawned processes that start ignoring a
batch system's warning signals. A module of its own, imported when a pool starts: multiprocessing's import (~50 ms
at a load of 6 on 2 cores, with concurrent.futures.process) would otherwise come with every import of ``processes``,
which a node executable makes before its early stop handling is in place (``ros.entry``)."""

from __future__ import annotations

from multiprocessing.context import SpawnContext, SpawnProcess

from liquid_control.processes import warning_signals_ignored


class WorkerProcess(SpawnProcess):
    """A pool worker started ignoring :data:`~liquid_control.processes.WARNING_SIGNALS` (``warning_signals_ignored``):
    spawned with their default handling, a worker ignored them only once its initializer ran
    (``quiet_ctrl_c_in_worker``, after the interpreter started and imported torch), and a batch system's warning to
    the job in that time ended it (the next batch failed: 'a worker process died'). A signal to this process while one
    starts is ignored without a word."""

    def start(self) -> None:
        """Start it as multiprocessing does, with the warning signals ignored meanwhile."""
        with warning_signals_ignored():
            super().start()


class WorkerContext(SpawnContext):
    """multiprocessing's spawn context, its processes :class:`WorkerProcess`."""

    Process = WorkerProcess
