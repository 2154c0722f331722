"""Helpers to drive nodes over real DDS from a test or a benchmark: an isolated ROS domain, node processes,
and a probe node (publishers + recorders) spinning in a background thread of the calling process.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from liquid_control.ros.graph import parameter_argument

_DOMAIN_LOCKS: list = []  # lock files of the domain ids this process took, the newest last
_DOMAIN_LOCKS_KEPT = 4  # graphs of one process run one after the other: older ids are given back
_HOLDING = [False]  # while set (:func:`hold_domain_ids`), no id is given back


def hold_domain_ids(hold: bool) -> None:
    """While ``hold`` (the tests set it around each test), every id this process takes stays locked; unset, all but
    the last ``_DOMAIN_LOCKS_KEPT`` are given back. A node made in this process (``rclpy.init(domain_id=...)``, a
    Probe) shows its id in no process environment, so only the lock keeps another process off it: given back after
    four newer ids while that node lived, the id could go to another test's graph (whose `liquid-control sim` then
    stops itself, exit 4; see PolicyNode.destroy_node for the node that outlived even a held id). Only ids taken
    while holding are kept so: one a module's fixture takes outside a test goes back as before (take ids in
    function-scoped fixtures)."""
    _HOLDING[0] = hold
    if not hold:
        while len(_DOMAIN_LOCKS) > _DOMAIN_LOCKS_KEPT:
            _DOMAIN_LOCKS.pop(0).close()


def isolated_ros_env(domain_id: int | None = None) -> dict:
    """os.environ for a private graph: a ROS_DOMAIN_ID (1..100) no other process on this machine holds through
    this function, and localhost-only discovery."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id if domain_id is not None else free_domain_id())
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated; conflicts with the setting above
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def free_domain_id() -> int:
    """A ROS_DOMAIN_ID in 1..100 that no other process using this function holds, the least recently taken
    (:func:`_last_taken`): one lock file per id, kept while this process lives (its last few ids). Two test suites
    or benchmarks run side by side on one machine would otherwise share a graph by chance and read each other's
    messages. An id in the environment of a running process (:func:`_domains_of_running_processes`) is passed over:
    its graph is still there, whoever took the id."""
    import fcntl
    import tempfile

    in_use = _domains_of_running_processes()
    ids = [i for i in range(1, 101) if i not in in_use] or list(range(1, 101))
    random.shuffle(ids)
    paths = {i: os.path.join(tempfile.gettempdir(), f"liquid_control_ros_domain_{i}.lock") for i in ids}
    ids.sort(key=lambda i: _last_taken(paths[i]))  # least recently taken first (stable: shuffled among equals)
    for candidate in ids:
        handle = _open_lock_file(paths[candidate])
        if handle is None:  # another user's file this user may not open: that user's id, passed over
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held by another process
            handle.close()
            continue
        try:
            os.utime(handle.fileno())  # taken now: the last id to be taken again
        except OSError:  # another user's file: its time stays
            pass
        _DOMAIN_LOCKS.append(handle)
        while len(_DOMAIN_LOCKS) > _DOMAIN_LOCKS_KEPT and not _HOLDING[0]:
            _DOMAIN_LOCKS.pop(0).close()
        return candidate
    return random.randint(1, 100)  # every id held elsewhere: share one, as before


def _domains_of_running_processes() -> set[int]:
    """The ROS_DOMAIN_IDs that this user's running processes were started with (``/proc/PID/environ``; empty where
    there is no /proc). A node can outlive the lock of the test that gave its id: one still stopping, or left running
    by a test that failed before its clean-up. With ids least recently taken first, every id came back about every
    2.5 minutes in a full suite, and once a graph met such a node (`liquid-control sim` then stopped itself, exit 4:
    "another graph runs on ROS_DOMAIN_ID 47 (2 nodes named /policy_node ...)", 1 of 2,824 tests)."""
    used = set()
    try:
        pids = [entry.name for entry in os.scandir("/proc") if entry.name.isdigit()]
    except OSError:
        return used
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environment = handle.read()
        except OSError:  # gone, or another user's
            continue
        for item in environment.split(b"\0"):
            if item.startswith(b"ROS_DOMAIN_ID="):
                value = item.removeprefix(b"ROS_DOMAIN_ID=")
                if value.isdigit():
                    used.add(int(value))
                break
    return used


def _last_taken(path: str) -> int:
    """When an id was last taken (its lock file's modification time, whole seconds; 0: never). Ids are given out
    least recently taken first: a graph's node processes can outlive the test that started them by seconds (their
    shutdown, a lock given back after _DOMAIN_LOCKS_KEPT newer ids), and a random pick met them now and then
    (`liquid-control sim` then stopped, exit 4: "another graph runs on ROS_DOMAIN_ID 93"; twice in 4 fresh-clone
    runs). Least recently taken, an id comes back only after every other one was used."""
    try:
        return int(os.stat(path).st_mtime)
    except OSError:
        return 0


def _open_lock_file(path: str):
    """``path`` opened for reading (all ``flock`` needs), created readable by every user if missing; None where
    this user may not open it. Opened for writing, another user's lock file (mode 644, left in /tmp by a run as
    root) raised PermissionError, and so did creating over it (fs.protected_regular): every ROS test errored."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # another process created it just now
        return _open_lock_file(path)
    except OSError:
        return None
    os.fchmod(fd, 0o644)  # whatever the umask: readable by the other users' runs
    return os.fdopen(fd, "rb")


def start_node_process(
    module: str,
    name: str,
    parameters: dict,
    env: dict,
    log_path: str | Path | None = None,
    params_files: tuple = (),
    prefix: tuple = (),
    remappings: dict | None = None,
) -> subprocess.Popen:
    """``[prefix...] python -m module --ros-args ...`` with parameters set by ``-p`` (YAML values) and topic
    ``remappings`` (``{from: to}``) by ``-r``."""
    argv = [*prefix, sys.executable, "-m", module, "--ros-args", "-r", f"__node:={name}"]
    for source, target in (remappings or {}).items():
        argv += ["-r", f"{source}:={target}"]
    for path in params_files:
        argv += ["--params-file", str(path)]
    for key, value in parameters.items():
        argv += ["-p", parameter_argument(key, value)]
    out = open(log_path, "w") if log_path else subprocess.DEVNULL
    return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


_LISTENER = """
import importlib, sys
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy

package, _, name = sys.argv[2].rpartition(".")
rclpy.init()
node = rclpy.create_node("listener")
heard = []
qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
node.create_subscription(getattr(importlib.import_module(package), name), sys.argv[1], heard.append, qos)
while rclpy.ok():
    rclpy.spin_once(node, timeout_sec=0.05)
    if heard:
        print("heard", flush=True)
        heard.clear()
"""


def start_listener_process(topic: str, msg_type: str, env: dict, out_path: str | Path) -> subprocess.Popen:
    """A reliable subscriber to ``topic`` (``msg_type`` as ``geometry_msgs.msg.TwistStamped``) in a process of its
    own, which writes a line ``heard`` to ``out_path`` after it received messages: a subscriber a test can stop
    (SIGSTOP: still matched, acknowledging nothing)."""
    with open(out_path, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-c", _LISTENER, topic, msg_type], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def stop_process(proc: subprocess.Popen, grace: float = 5.0) -> int:
    """SIGINT ``proc`` (a clean ROS shutdown), SIGKILL after ``grace`` seconds; its exit code."""
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Probe:
    """A node in this process on its own context (domain of ``env``), spun by a background thread.

    ``record(topic, type, qos)`` keeps ``(receive time.monotonic(), msg)`` pairs in ``self.received[topic]``.
    """

    def __init__(self, env: dict, name: str = "probe", events_executor: bool = False):
        """``events_executor``: spin with rclpy's EventsExecutor (a benchmark's receiver: less dispatch delay in
        the receive times than the default SingleThreadedExecutor)."""
        import rclpy
        import rclpy.executors

        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=int(env["ROS_DOMAIN_ID"]))
        self.node = rclpy.create_node(name, context=self.context)
        if events_executor:
            from rclpy.experimental import EventsExecutor

            self.executor = EventsExecutor(context=self.context)
        else:
            self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # context shut down while waiting
                break

    def publisher(self, msg_type, topic: str, qos=10):
        """A publisher on the probe's node."""
        return self.node.create_publisher(msg_type, topic, qos)

    def record(self, topic: str, msg_type, qos=10):
        """Keep every message on ``topic`` (see the class docstring); the subscription."""
        self.received.setdefault(topic, [])

        def on_msg(msg):
            with self._lock:
                self.received[topic].append((time.monotonic(), msg))

        return self.node.create_subscription(msg_type, topic, on_msg, qos)

    def messages(self, topic: str) -> list:
        """A copy of the ``(receive time, msg)`` pairs recorded on ``topic`` so far."""
        with self._lock:
            return list(self.received.get(topic, []))

    def wait_for(self, predicate, timeout: float, poll: float = 0.01) -> bool:
        """Poll ``predicate`` until it holds or ``timeout`` seconds pass; its last value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(poll)
        return bool(predicate())

    def close(self):
        """Shut the probe's context down and destroy its node."""
        self.context.try_shutdown()
        self._thread.join(timeout=2.0)
        self.executor.shutdown()
        self.node.destroy_node()
