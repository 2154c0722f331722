"""The process pools of training and evaluation stop cleanly (liquid_control.processes)."""

import os
import signal
import subprocess
import sys
import time

import pytest

DYING_TASK = """
import os, time

def sleep_then_die(seconds):
    time.sleep(seconds)
    os._exit(1)
"""

SCRIPT = """
import multiprocessing, time
from concurrent.futures import ProcessPoolExecutor
from dying_task import sleep_then_die
from liquid_control.processes import collect_results

def interrupted(future):
    future.result()
    raise KeyboardInterrupt

if __name__ == "__main__":
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(time.sleep, 0), pool.submit(sleep_then_die, 1.0)]
        queued = [pool.submit(time.sleep, 0) for _ in range(5)]
        try:
            collect_results(pool, futures + queued, interrupted)
            print("not interrupted")
        except KeyboardInterrupt:
            print("interrupted")
    print("queued cancelled:", sum(f.cancelled() for f in queued) > 0)
"""


def test_interrupted_pool_whose_worker_then_dies_prints_no_thread_traceback(tmp_path):
    """Before: on Ctrl-C the headline experiment and `eval --workers N` cancelled their queued futures themselves;
    when the workers ended after that (Ctrl-C reaches them too), the pool's thread marked those cancelled futures
    failed and Python 3.11 printed `Exception in thread ... InvalidStateError: CANCELLED` above the command's own
    message (2 of 3 Ctrl-Cs by hand). Here the worker's death is certain: one worker, interrupted at the first
    result while it runs a task that ends it a second later, with tasks queued behind."""
    (tmp_path / "dying_task.py").write_text(DYING_TASK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["interrupted", "queued cancelled: True"], done.stdout + done.stderr
    assert "InvalidStateError" not in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")
@pytest.mark.parametrize("signum", ["SIGUSR1", "SIGUSR2"])
def test_a_batch_systems_early_warning_during_a_workers_start_up_does_not_end_it(signum):
    """Before: a pool worker was spawned with the default handling of SIGUSR1/SIGUSR2 and ignored them only once its
    initializer ran (after the interpreter started and imported torch: seconds), so a batch system's early warning
    to every process of the job in that time ended it, and the run failed with 'a worker process died'. Here the
    signal reaches the worker before any initializer of ours; the parent's handling is put back after the spawn."""
    from liquid_control.processes import spawn_pool

    signum = getattr(signal, signum)
    before = signal.getsignal(signum)
    with spawn_pool(1, signal.raise_signal, (signum,)) as pool:  # the worker's start-up: nothing ignores it yet
        worker = pool.submit(os.getpid).result(timeout=120)
    assert worker != os.getpid()
    assert signal.getsignal(signum) is before


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_a_ctrl_c_while_a_pool_worker_starts_up_ends_it_quietly(capfd):
    """Before: a pool worker started with Python's default Ctrl-C, so a Ctrl-C to the process group while it started
    (an eval interrupted as its pool came up) ended it in its start-up with 'Fatal Python error: init_import_site
    ... KeyboardInterrupt' or a traceback, under the parent's own 'interrupted' line. Here Ctrl-C reaches the worker
    every millisecond from its start: it ends with the workers' quiet exit, nothing printed. Also as the first worker
    of its process, which starts the resource tracker: multiprocessing then unblocked SIGINT, and this test failed
    (exit -2) wherever no earlier test of its pytest process had started the tracker (run alone, always)."""
    from liquid_control.spawn_context import WorkerContext

    worker = WorkerContext().Process(target=time.sleep, args=(120,))
    worker.start()
    deadline = time.monotonic() + 120
    while worker.exitcode is None and time.monotonic() < deadline:
        try:
            os.kill(worker.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        time.sleep(0.001)
    worker.join(timeout=10)
    err = capfd.readouterr().err
    assert worker.exitcode == 128 + signal.SIGINT, (worker.exitcode, err)
    assert "Traceback" not in err and "Fatal Python error" not in err, err


def test_a_ray_tasks_setup_ignores_the_warning_signals_and_makes_ctrl_c_quiet():
    """A Ray task's process is no WorkerProcess: the evaluation's and the headline training's worker setup is all it
    gets. When the pools' workers began doing it as they start (87ab304), the setup stopped doing it, and a Ray worker
    running a batch died of a batch system's SIGUSR1 (found by a review)."""
    script = (
        "import signal\n"
        "from liquid_control.processes import _exit_quietly\n"
        "from liquid_control.evaluation import backends, experiment\n"
        "backends.die_with_parent = lambda: None\n"
        "for setup in (backends._init_worker, experiment.init_training_worker):\n"
        "    signal.signal(signal.SIGUSR1, signal.SIG_DFL)\n"
        "    signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "    setup()\n"
        "    print(signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN,\n"
        "          signal.getsignal(signal.SIGINT) is _exit_quietly)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["True", "True", "True", "True"], done.stdout + done.stderr


SCRIPT_WHOSE_EXIT_HANGS = """
import sys, threading
from liquid_control.processes import exit_status_of

status = exit_status_of("script.py", lambda: 3)  # as every script in scripts/ and benchmarks/ ends
threading.Thread(target=threading.Event().wait).start()  # a thread that never ends: the exit waits for it
print("returned", status, flush=True)
sys.exit(status)
"""


SCRIPT_WHOSE_EXIT_WAITS_ON_A_CHILD = """
import multiprocessing, os, sys, time

def child(parent):
    while os.getppid() == parent:  # until the script has ended
        time.sleep(0.1)

if __name__ == "__main__":
    # multiprocessing's exit function joins this unjoined non-daemon child; it was registered before processes'
    # import, so an exit function of processes' runs before it (ec30e40 ignored the signals there: SIGKILL only)
    multiprocessing.get_context("spawn").Process(target=child, args=(os.getpid(),)).start()
    from liquid_control.processes import exit_status_of

    status = exit_status_of("script.py", lambda: 3)
    print("returned", status, flush=True)
    sys.exit(status)
"""


@pytest.mark.parametrize(
    "script", [SCRIPT_WHOSE_EXIT_HANGS, SCRIPT_WHOSE_EXIT_WAITS_ON_A_CHILD], ids=["thread", "child"]
)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_once_a_script_has_returned_ends_it_with_its_status(signum, script, tmp_path):
    """Before: the scripts' exit_status_of left the interpreter's exit after a finished script to the default
    handling (005e3753 covered `liquid-control` only): a SIGTERM then ended it by the signal (-15, every file
    written), a Ctrl-C printed a KeyboardInterrupt traceback ('Exception ignored in: <module 'threading'>') and a
    hung exit went on. Now either ends the process at once with the script's status, as liquid-control's, also
    while an exit function registered before liquid_control's import waits (multiprocessing's join of a child).
    """
    script_file = tmp_path / "script.py"  # a file: a spawned child imports the script's functions from it
    script_file.write_text(script)
    proc = subprocess.Popen(
        [sys.executable, str(script_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background job's SIGINT is ignored
    )
    try:
        assert proc.stdout.readline() == "returned 3\n", proc.stderr.read()
        proc.send_signal(signum)
        assert proc.wait(timeout=60) == 3
        assert "Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.communicate()


SCRIPT_STOPPED_IN_A_WRITE = """
import signal, sys
from liquid_control.processes import end_process_now

signal.signal(signal.SIGTERM, lambda signum, frame: end_process_now(5))
print("writing", file=sys.stderr, flush=True)
sys.stdout.write("x" * (1 << 20))  # more than the pipe holds: blocks, holding stdout's buffer
sys.stdout.flush()
"""


def test_end_process_now_from_a_signal_handler_that_interrupted_a_write_to_stdout_ends_the_process():
    """end_process_now is called from signal handlers (a node executable's stop before its imports are done,
    ros.entry; a finished command's stop, end_on_stop_signals_once_done). Before: a signal that interrupted a write to
    stdout (a reader that stopped reading, the pipe full) made its flush raise BufferedWriter's 'RuntimeError:
    reentrant call' out of the handler: a traceback, exit status 1. Here the pipe is full (the test reads none of it)
    before the signal is sent."""
    import fcntl
    import struct
    import termios
    import time

    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # -u: no buffer whose write is interrupted
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT_STOPPED_IN_A_WRITE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        assert proc.stderr.readline() == b"writing\n", proc.stderr.read()
        capacity = fcntl.fcntl(proc.stdout, 1032)  # F_GETPIPE_SZ
        deadline = time.monotonic() + 60
        queued = 0
        while queued < capacity and time.monotonic() < deadline:
            time.sleep(0.05)
            queued = struct.unpack("i", fcntl.ioctl(proc.stdout, termios.FIONREAD, b"\0\0\0\0"))[0]
        assert queued >= capacity, f"the script did not fill its stdout pipe ({queued} of {capacity} bytes)"
        proc.send_signal(signal.SIGTERM)
        try:
            status = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            status = "still running 60 s after SIGTERM"
        assert status == 5, proc.stderr.read().decode()[-2000:]
    finally:
        proc.kill()
        proc.communicate()


def test_importing_processes_loads_no_multiprocessing():
    """ros.entry installs a node executable's early stop handling only once liquid_control.processes is imported
    (its handler ends the process with processes.end_process_now); a SIGINT before then is a KeyboardInterrupt
    traceback. multiprocessing and concurrent.futures are imported where a pool is used, not there: they took ~50 ms
    of that window at a load of 6 on 2 cores."""
    code = "import sys, liquid_control.ros.entry; print(sorted(m for m in sys.modules if m.startswith(PREFIXES)))"
    code = code.replace("PREFIXES", "('multiprocessing', 'concurrent')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_cgroup_cpu_quota_is_the_lowest_of_the_process_group_and_those_above_it(tmp_path):
    """The affinity mask does not show a container's CPU quota (a container allowed 2 CPUs on a 64-core host counted
    64): cgroup v2's cpu.max and v1's cfs quota are read, the lowest of the group and its ancestors wins."""
    from liquid_control.processes import cgroup_cpu_quota

    membership = tmp_path / "cgroup"
    root = tmp_path / "fs"
    _write(membership, "0::/a/b\n")
    _write(root / "a" / "b" / "cpu.max", "max 100000\n")
    _write(root / "a" / "cpu.max", "150000 100000\n")
    _write(root / "cpu.max", "400000 100000\n")
    assert cgroup_cpu_quota(str(root), str(membership)) == 1.5
    # inside a container the group's path can name the host's hierarchy; the mount shows the container's own group
    _write(membership, "0::/docker/0123abc\n")
    assert cgroup_cpu_quota(str(root), str(membership)) == 4.0
    # v1: the cpu controller's hierarchy, mounted under its controllers' names; -1 is no quota
    _write(membership, "9:name=systemd:/\n4:cpu,cpuacct:/k\n2:memory:/k\n")
    _write(root / "cpu,cpuacct" / "k" / "cpu.cfs_quota_us", "-1\n")
    _write(root / "cpu,cpuacct" / "k" / "cpu.cfs_period_us", "100000\n")
    _write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "50000\n")
    _write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(str(root), str(membership)) == 0.5
    # a group outside this cgroup namespace's root (nsenter): no folder under the mount is its own
    _write(membership, "0::/../sibling\n")
    _write(root / "sibling" / "cpu.max", "50000 100000\n")
    assert cgroup_cpu_quota(str(root), str(membership)) is None


@pytest.mark.parametrize(
    "membership, cpu_max",
    [
        ("0::/\n", "max 100000\n"),  # no quota
        ("0::/\n", "0 100000\n"),
        ("0::/\n", "lots 100000\n"),
        ("0::/\n", "150000\n"),
        ("0::/\n", "\u00b2 100000\n"),  # not ASCII
        ("0::/\n", None),  # no controller file
        (None, "150000 100000\n"),  # no membership file (not Linux, no /proc)
        ("garbage\n", "150000 100000\n"),
        ("0::/../../..\n", None),  # a path leaving the mount is not followed
    ],
)
def test_no_readable_cgroup_quota_is_no_limit_never_an_error(tmp_path, membership, cpu_max):
    from liquid_control.processes import cgroup_cpu_quota

    root = tmp_path / "fs" / "inner"
    root.mkdir(parents=True)
    if membership is not None:
        _write(tmp_path / "cgroup", membership)
    if cpu_max is not None:
        _write(root / "cpu.max", cpu_max)
    _write(tmp_path / "cpu.max", "100000 100000\n")  # outside the mount: never read
    assert cgroup_cpu_quota(str(root), str(tmp_path / "cgroup")) is None


@pytest.mark.parametrize("quota, expected", [(None, None), (0.5, 1), (1.5, 2), (1.0, 1), (1000.0, None)])
def test_available_cpus_follow_the_affinity_mask_lowered_to_the_quota(monkeypatch, quota, expected):
    from liquid_control import processes

    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(processes, "cgroup_cpu_quota", lambda: quota)
    assert processes.available_cpus() == (cores if expected is None else min(cores, expected))


def test_a_pool_worker_keeps_a_ctrl_c_its_parent_ignores():
    """A run started with `&` from a script ignores Ctrl-C, and so do the workers it spawns (the disposition
    survives their exec); quiet_ctrl_c_in_worker replaced it with its quiet exit, so a Ctrl-C reaching the whole
    process group ended the workers of a run that went on, which then failed with 'a worker process died' (found by
    a probe of the evaluation). A worker whose parent takes Ctrl-C still exits quietly on it."""
    from liquid_control.processes import _exit_quietly, quiet_ctrl_c_in_worker, spawn_pool

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with spawn_pool(1, quiet_ctrl_c_in_worker, ()) as pool:
            assert pool.submit(signal.getsignal, signal.SIGINT).result(timeout=120) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
    with spawn_pool(1, quiet_ctrl_c_in_worker, ()) as pool:
        assert pool.submit(signal.getsignal, signal.SIGINT).result(timeout=120) == _exit_quietly
