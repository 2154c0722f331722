"""Processes that end cleanly: children that end with the process that started them (Linux's
PR_SET_PDEATHSIG: the workers of training and evaluation, the nodes of ``liquid-control sim``'s graph), and a
command line that treats SIGTERM (``kill``, a batch system's time limit) as it treats Ctrl-C. Also the allocator
setting of the processes that train and evaluate (:func:`keep_freed_memory`), and the loop that collects a process
pool's results and stops it cleanly (:func:`collect_results`), and the warnings of worker processes shown once by
the process that started them (:func:`run_keeping_warnings`, :class:`WarningsOnce`), and the end of a process
whose work is saved without the interpreter's exit (:func:`end_process_now`: policy_node, sim_node)."""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import warnings
from contextlib import contextmanager

# Annotations' names only; multiprocessing (concurrent.futures.process) is imported where a pool starts, typing not
# at all: ros.entry installs a node executable's early stop handling once this module is imported, and these imports
# took ~50 ms of that window at a load of 6 on 2 cores (test_importing_processes_loads_no_multiprocessing).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from concurrent.futures import Executor, Future, ProcessPoolExecutor
    from typing import NoReturn


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


def _exit_quietly(signum, frame) -> None:
    os._exit(128 + signum)  # nothing to save here: the parent process keeps every finished episode


def quiet_ctrl_c_in_worker() -> None:
    """A pool worker's Ctrl-C: exit at once, without a traceback. Ctrl-C reaches the whole process group; the
    parent (training, evaluation) handles it and says how to resume. Ignoring it made Ctrl-C wait for the
    episodes running and queued; the default printed a KeyboardInterrupt traceback from every idle worker.
    A batch system's early warning (:data:`WARNING_SIGNALS`, sent to every process of the job) is ignored here
    silently, as the parent ignores it (:func:`sigterm_as_interrupt`), which says so once: by default it ended
    the worker, and the parent's next batch failed with 'a worker process died'. A Ctrl-C the worker inherited
    ignored (a parent started with ``&`` from a script, which ignores it too) stays ignored: the group's Ctrl-C
    ended the workers of a run that went on, which then failed with 'a worker process died'."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _exit_quietly)
    for signum in WARNING_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask where the OS has one, lowered to a container's CPU quota
    (:func:`cgroup_cpu_quota`, rounded up), which the mask does not show: a container allowed 2 CPUs on a 64-core
    host counted 64 and started 64 workers (and ``./test.sh`` 8), each throttled to a fraction of a CPU."""
    try:
        cpus = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return cpus if quota is None else max(1, min(cpus, math.ceil(quota)))


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup", membership: str = "/proc/self/cgroup") -> float | None:
    """The CPUs' worth of time this process's control groups allow (Linux cgroup v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; the lowest of its group and the groups above it), or None
    where none sets a quota or nothing can be read: the quota only lowers a count, so what cannot be read is no
    limit, never an error."""
    try:
        with open(membership, encoding="ascii") as lines:
            groups = [line.rstrip("\n").split(":", 2) for line in lines]
    except (OSError, UnicodeDecodeError):
        return None
    quotas = []
    for fields in groups:
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if ".." in path.split("/"):  # a group outside this cgroup namespace's root: not one under the mount
            continue
        if controllers == "":  # v2's one hierarchy
            quotas += (_cpu_max(d) for d in _group_and_above(root, path))
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own hierarchy, mounted under its names
            for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
                quotas += (_cfs_quota(d) for d in _group_and_above(os.path.join(root, mount), path))
    quotas = [q for q in quotas if q is not None]
    return min(quotas) if quotas else None


def _group_and_above(mount: str, path: str) -> list[str]:
    """``path``'s folder under ``mount`` and each above it up to ``mount`` (inside a container the group's path
    can name the host's hierarchy while ``mount`` shows the container's own group: then only ``mount`` exists)."""
    parts = [p for p in path.split("/") if p and p != "."]
    return [os.path.join(mount, *parts[:n]) for n in range(len(parts), -1, -1)]


def _read_numbers(path: str, count: int) -> list[str] | None:
    try:
        with open(path, encoding="ascii") as file:
            words = file.read(256).split()
    except (OSError, UnicodeDecodeError):
        return None
    return words if len(words) == count else None


def _cpu_max(group: str) -> float | None:
    """The quota in cgroup v2's ``cpu.max``: "QUOTA PERIOD" in microseconds, QUOTA "max" for none."""
    words = _read_numbers(os.path.join(group, "cpu.max"), 2)
    return None if words is None else _quota(*words)


def _cfs_quota(group: str) -> float | None:
    """The quota in cgroup v1: ``cpu.cfs_quota_us`` (-1 for none) over ``cpu.cfs_period_us``."""
    quota = _read_numbers(os.path.join(group, "cpu.cfs_quota_us"), 1)
    period = _read_numbers(os.path.join(group, "cpu.cfs_period_us"), 1)
    return None if quota is None or period is None else _quota(quota[0], period[0])


def _quota(quota: str, period: str) -> float | None:
    if not (quota.isdigit() and period.isdigit()) or int(quota) == 0 or int(period) == 0:
        return None  # "max", v1's -1, or something unreadable: no quota
    return int(quota) / int(period)


def more_workers_than_cpus(workers: int, cpus: int, holds: str) -> str | None:
    """The note for ``--workers`` above the ``cpus`` this process may use (:func:`available_cpus`; allowed: the
    same results), else None; ``holds``: what each worker process holds in memory."""
    if workers <= cpus:
        return None
    return (
        f"workers (--workers) {workers}: more than the {cpus} CPUs this process may use: the same episodes, no "
        f"sooner than with --workers {cpus}, and each worker process holds {holds}"
    )


_MALLOC_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_MALLOC_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 32 << 20  # glibc's largest on 64-bit
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """glibc: keep freed blocks of up to 32 MiB in the heap, and up to 1 GiB free at its top, for reuse.

    Training's and evaluation's numpy/torch temporaries (augmented camera chunks, activations, gradients) are
    MiBs each. By default glibc unmaps such a block when it is freed, or gives the heap's top back to the kernel
    once it exceeds twice its adaptive mmap threshold, and the next chunk faults every page in again: ~17,000
    minor page faults a recipe BC chunk, which took 1.5x the CPU time it takes with this setting. Both thresholds
    are set because setting either turns glibc's adaptive rule off. The price: a process may keep up to ~1 GiB
    of freed memory above what it uses (peak RSS of training and evaluation measured unchanged). Returns whether
    it was applied: not on other C libraries, nor when the user set MALLOC_MMAP_THRESHOLD_ /
    MALLOC_TRIM_THRESHOLD_ (or these GLIBC_TUNABLES) themselves: theirs stands."""
    if any(name in os.environ for name in _MALLOC_ENVIRONMENT):
        return False
    if any(name in os.environ.get("GLIBC_TUNABLES", "") for name in _MALLOC_TUNABLES):
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, ValueError):  # not glibc, or no confstr / mallopt here
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be: the same clean stop, exit status 143."""


def _raise_terminated(signum, frame):
    # The stop is under way: further SIGTERMs (scancel's, then srun's forwarded one, a few ms apart) are ignored
    # until the process ends. Raising again broke off the cleanup ('leaked semaphore'), and the default handler,
    # once put back, ended the process at -15 before or after its message. SIG_IGN, not a Python function: the
    # interpreter puts the default back for those as it exits. A process started from here on would inherit it:
    # none is started once a command is stopping.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


def interrupt_in_ctypes(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (KeyboardInterrupt) or SIGTERM (:class:`Terminated`) that ``exc`` stands for, else None.

    A signal handler's exception raised while ctypes converts a call's arguments in Python code (PyOpenGL's
    converters in MuJoCo's EGL render, every camera frame) reaches the caller as ``ctypes.ArgumentError('argument
    1: KeyboardInterrupt: ')``, which names the interrupt but neither chains nor subclasses it: a command that
    handles Ctrl-C then printed a traceback instead. Python 3.11 names the class (``KeyboardInterrupt``), 3.10
    prints it (``<class 'KeyboardInterrupt'>``, ``<class 'liquid_control.processes.Terminated'>``)."""
    import ctypes
    import re

    if not isinstance(exc, ctypes.ArgumentError):
        return None
    match = re.fullmatch(r"argument \d+: (?:<class '(?:[\w.]+\.)?(\w+)'>|(\w+)): .*", str(exc), re.DOTALL)
    name = None if match is None else match.group(1) or match.group(2)
    if name not in ("KeyboardInterrupt", "Terminated"):
        return None
    return Terminated() if name == "Terminated" else KeyboardInterrupt()


# A batch system's early warning before it stops a job (SLURM's --signal=USR1@SECONDS, to every process of the job
# step): by default each ends the process at once, without a word, throwing away the epoch or batch running.
WARNING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGUSR1", "SIGUSR2") if hasattr(signal, name))


def _ignored_warning(prog: str):
    def handler(signum, frame):
        # os.write: a handler that wrote through sys.stderr while the main thread was writing there raised
        # 'reentrant call' in the main thread
        line = (
            f"{prog}: {signal.Signals(signum).name} ignored (a batch system's warning before its time limit?): it "
            "goes on; SIGTERM stops it, keeping what finished\n"
        )
        try:
            os.write(2, line.encode("utf-8", "replace"))
        except OSError:  # no stderr: nothing to say it on
            pass

    return handler


@contextmanager
def sigterm_as_interrupt(prog: str = "liquid-control"):
    """Within the block SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread, so a
    command's Ctrl-C handling (its message, its exit) also covers ``kill``; and :data:`WARNING_SIGNALS` are ignored,
    each said in a line on stderr starting with ``prog``, instead of ending the process (the work finished since its
    last save lost, no word said); the workers of a process pool ignore them too (:func:`quiet_ctrl_c_in_worker`).
    After the first SIGTERM, further ones are ignored, also after the block where the handler it found was the
    default (a command's process): the command ends as a SIGTERM ends it, with its message and exit status 143; a
    handler of the caller's own is put back. Elsewhere than the main thread a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_terminated)}
    for signum in WARNING_SIGNALS:
        previous[signum] = signal.signal(signum, _ignored_warning(prog))
    try:
        yield
    finally:
        stopping = signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # set by _raise_terminated
        for signum, handler in previous.items():
            if signum == signal.SIGTERM and stopping and handler == signal.SIG_DFL:
                continue  # the default would end the stopping process (-15) before its message or exit status
            signal.signal(signum, handler)


@contextmanager
def stop_signals_held():
    """Within the block SIGINT (Ctrl-C) and SIGTERM wait: each that arrives is raised again, to the handler the block
    found, once the block ends, so a write made in it is finished whole (an evaluation's batch of records: a Ctrl-C
    between them left part of a batch, which a resume ran as a smaller batch with other results). Main thread only;
    elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda s, _frame: arrived.append(s)) for signum in stops}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(arrived):
            signal.raise_signal(signum)


EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # what a shell reports for a command killed by SIGPIPE


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (not a CI log, a ``2> file`` or a ``2>&1 | tee log``): where a progress bar,
    redrawn with carriage returns, shows; in a log it would fill it with its every state."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reading end is closed (poll reports an error on it)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no real file descriptor (e.g. captured output)
        return False


def stdout_reader_gone() -> int:
    """In an ``except BrokenPipeError``: :data:`EXIT_BROKEN_PIPE` where the reader of stdout went away (``... |
    head``), with stdout pointed at devnull so that the interpreter's final flush does not raise again; any other
    broken pipe or socket is an error, re-raised."""
    if not _stdout_closed():
        raise  # the BrokenPipeError being handled (this is called from its except block)
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


def end_process_now(status: int) -> NoReturn:
    """End the process at once with ``status``, stdout and stderr flushed first, skipping the interpreter's exit (exit
    functions, non-daemon threads, collecting torch's, MuJoCo's, rclpy's objects: a second or more on a loaded CPU).
    For a process whose work is done and saved (files closed, ROS context shut down) and which something may be
    waiting on with a deadline: a node of `liquid-control sim` or of a launch file, SIGKILLed after its grace. Also
    from a signal handler that interrupted a write to the same stream (its flush is then a 'reentrant call')."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError, RuntimeError):  # a reader gone, a closed or replaced stream, a
            pass  # write this signal handler interrupted (BufferedWriter's 'reentrant call')
    os._exit(status)


def end_on_stop_signals_once_done(status: int) -> None:
    """SIGINT (Ctrl-C) and SIGTERM end the process at once with ``status`` from now on, for a command-line process
    whose command has returned that exit status: the interpreter's exit that follows (collecting torch's, MuJoCo's,
    rclpy's objects: a second or more after the last line) ran with SIGINT at its default, so a Ctrl-C in it ended a
    finished command by the signal (status 130 in the shell, after its result line, with every file written).
    Ignoring them instead would leave an exit that hangs (a thread that never ends, a worker that is not joined) to
    SIGKILL alone. stdout and stderr are flushed first. Main thread only (elsewhere nothing)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def end(signum, frame):
        end_process_now(status)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, end)


def status_of_process_command(command: Callable[[], int | None]) -> int | None:
    """``command()``'s result, for the command a process runs and then exits with: from its return on (or its
    SystemExit, or an exception, whose traceback ends the process with 1) a stop signal ends the process at once
    with that status (:func:`end_on_stop_signals_once_done`). ``liquid-control`` (``cli.main``) and the scripts
    (:func:`exit_status_of`) run their command through it."""
    status = 1
    try:
        status = command()
        return status
    except SystemExit as exc:  # argparse's usage errors (2), sys.exit("message") (1)
        status = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        raise
    finally:
        end_on_stop_signals_once_done(0 if status is None else status)


def exit_status_of(prog: str, main: Callable[[], int | None]) -> int | None:
    """``main()``'s exit status, or 130 after one line ``PROG: interrupted`` on stderr when Ctrl-C stops it, or
    :data:`EXIT_BROKEN_PIPE` when the reader of its output went away (``| head``), as ``liquid-control`` ends; and,
    as there, a Ctrl-C or SIGTERM once it has returned ends the process with that status
    (:func:`status_of_process_command`): in the exit that follows, a SIGTERM ended a finished script by the signal
    (-15) and a Ctrl-C printed a KeyboardInterrupt traceback. For a script's own process (its ``__main__``).

    For the command-line scripts (``scripts/``, ``benchmarks/``) that have no Ctrl-C handling of their own: before,
    Ctrl-C printed a KeyboardInterrupt traceback (or, inside MuJoCo's render, a ctypes.ArgumentError one:
    :func:`interrupt_in_ctypes`)."""
    return status_of_process_command(lambda: _status_or_interrupted(prog, main))


def _status_or_interrupted(prog: str, main: Callable[[], int | None]) -> int | None:
    try:
        return main()
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        return stdout_reader_gone()
    except Exception as exc:
        if interrupt_in_ctypes(exc) is None:
            raise
    print(f"{prog}: interrupted", file=sys.stderr)
    return 130


class WorkerPoolError(RuntimeError):
    """A process pool could not start (its semaphores: a missing, read-only or full /dev/shm)."""


@contextmanager
def warning_signals_ignored():
    """Within the block :data:`WARNING_SIGNALS` are ignored (SIG_IGN, this process's handling put back after it), so
    a process started in it starts ignoring them: an ignored signal stays ignored across exec, while a handler is
    reset to the default, which ends the process. Outside the main thread, where handlers cannot be set, nothing."""
    if not WARNING_SIGNALS or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in WARNING_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def ctrl_c_blocked():
    """Within the block SIGINT is blocked in the calling thread (not ignored: one that arrives waits, and comes after
    the block), so a process it starts begins with SIGINT blocked: the signal mask survives fork and exec, and
    Python's start-up leaves it as it is. Where signal masks do not exist (Windows), nothing."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def ctrl_c_unblocked() -> None:
    """SIGINT unblocked in the calling thread (started from :func:`ctrl_c_blocked`)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker (the process a spawned pool's semaphores are registered with)
    ignoring :data:`WARNING_SIGNALS`, as the pool's workers do (the tracker resets only SIGINT and SIGTERM): a batch
    system's warning to every process of the job ended it, and the run printed 'resource_tracker: process died
    unexpectedly, relaunching. Some resources might leak' and a KeyError traceback per semaphore at its end. Where it
    runs already as it is. Started outside :func:`ctrl_c_blocked` (``spawn_context.WorkerProcess``): multiprocessing
    unblocks SIGINT in the calling thread after starting it, which ends such a block early."""
    if not WARNING_SIGNALS:  # no such signals (Windows), and no resource tracker process either
        return
    from multiprocessing import resource_tracker

    with warning_signals_ignored():
        resource_tracker.ensure_running()


def spawn_pool(workers: int, initializer: Callable[..., object], initargs: tuple = ()) -> ProcessPoolExecutor:
    """A process pool of ``workers`` spawned interpreters (not forked: a forked MuJoCo/EGL or torch state is not
    safe to reuse in a child). Its queues' locks are POSIX semaphores in /dev/shm: where that is missing, read-only
    or full the OSError (say 'Read-only file system', no file named) read as the output folder's in every command's
    message; it is raised as a :class:`WorkerPoolError` naming /dev/shm. Its workers start ignoring
    :data:`WARNING_SIGNALS` (``spawn_context.WorkerProcess``)."""
    from concurrent.futures import ProcessPoolExecutor

    from liquid_control.spawn_context import WorkerContext

    start_resource_tracker()
    try:
        return ProcessPoolExecutor(
            max_workers=workers,
            mp_context=WorkerContext(),  # the pool starts its workers as it needs them (at a submit)
            initializer=initializer,
            initargs=initargs,
        )
    except OSError as exc:
        raise WorkerPoolError(
            f"cannot start {workers} worker process(es): {exc.strerror or exc} (the pool's semaphores live in "
            "/dev/shm, which must exist, be writable and have room)"
        ) from None


def terminate_workers(pool: Executor) -> None:
    """End a process pool's worker processes at once (SIGTERM), whatever they are running: an interrupted run
    keeps what finished, and a SIGTERM to the parent alone (``kill``, a batch system's time limit) otherwise
    waited for every running task, whose result was then dropped, past the grace period before SIGKILL."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()


def _succeeded(future: Future) -> bool:
    return not future.cancelled() and future.exception() is None


def collect_results(pool: Executor, futures: Iterable[Future], on_done: Callable[[Future], object]) -> None:
    """Hand each of ``futures`` (submitted to ``pool``) to ``on_done`` as it completes; ``on_done`` takes its
    ``result()``, so a task's exception is raised there (and the caller can name the task).

    A task that fails: the queued ones are cancelled, those already running are waited for and handed to
    ``on_done`` (their results are kept), then the failed one is, and its exception goes on. Ctrl-C or SIGTERM
    (:class:`Terminated`), or an exception of ``on_done`` itself (say a full disk: no later result could be kept
    either): the workers end at once (:func:`terminate_workers`) and the queued tasks are cancelled.

    The queued tasks are cancelled by the pool's own thread (``shutdown(cancel_futures=True)``): cancelling them
    here raced with that thread marking them failed when Ctrl-C had also ended the workers (Python 3.11 printed an
    InvalidStateError traceback from it). The shutdown waits here: a ``with`` block's own shutdown would otherwise
    take back ``cancel_futures`` before the pool's thread acted on it, and the queued tasks ran."""
    from concurrent.futures import FIRST_COMPLETED, wait

    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            failed = [future for future in done if not _succeeded(future)]
            for future in done:
                if _succeeded(future):
                    on_done(future)
            if failed:
                pool.shutdown(wait=True, cancel_futures=True)  # the running tasks finish
                for future in pending:
                    if _succeeded(future):
                        on_done(future)
                pending = set()
                on_done(failed[0])  # raises its exception
    except BaseException:  # after a failed task's shutdown there is nothing left to end
        terminate_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)
        raise


WarningItem = tuple[str, str, str, str, int]  # category's module and name, text, file, line


def run_keeping_warnings(function: Callable[..., object], *args) -> tuple[object, list[WarningItem]]:
    """In a worker process: ``function(*args)`` and the warnings it gave, as plain values (the category named, not
    pickled) for :class:`WarningsOnce` in the parent to show. A worker's own stderr showed each warning once per
    worker process (the same line N times from N workers) or, from a Ray worker, whose output is not forwarded, not
    at all. Where ``function`` raises, its warnings are shown here, before its exception goes back."""
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            result = function(*args)
    except BaseException:
        for w in caught:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        raise
    return result, [
        (w.category.__module__, w.category.__qualname__, str(w.message), w.filename, w.lineno) for w in caught
    ]


def _warning_category(module: str, name: str) -> type[Warning]:
    found = sys.modules.get(module)
    for part in name.split("."):
        found = getattr(found, part, None)
    return found if isinstance(found, type) and issubclass(found, Warning) else UserWarning


def _module_name(filename: str) -> str | None:
    """The name of the module imported here from ``filename`` (what a ``-W`` filter's module part matches), or None."""
    for name, module in list(sys.modules.items()):
        if getattr(module, "__file__", None) == filename:
            return name
    return None


class WarningsOnce:
    """In the process that started the workers: shows each warning they sent (:func:`run_keeping_warnings`) once in
    the whole run, as this process shows its own (its filters, ``-W``), in the registry of the module it names: one
    this process gave itself at the same place is shown once with the default filter (a world module of one's own
    that warns when imported, the compiled kernels' warning)."""

    def __init__(self) -> None:
        self._shown: set[WarningItem] = set()

    def show(self, caught: list[WarningItem]) -> None:
        """Show those of ``caught`` not shown before in this run."""
        for item in caught:
            if item in self._shown:
                continue
            self._shown.add(item)
            category_module, category_name, text, filename, lineno = item
            category = _warning_category(category_module, category_name)
            module = _module_name(filename)
            # the module's own registry, as warnings.warn uses: one this process gave itself at the same place is
            # not shown again by the default filter (a worker's copy of the compiled kernels' warning)
            namespace = getattr(sys.modules.get(module), "__dict__", None) if module else None
            registry = namespace.setdefault("__warningregistry__", {}) if namespace is not None else None
            warnings.warn_explicit(text, category, filename, lineno, module=module, registry=registry)
