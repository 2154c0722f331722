"""The main loop of a simple node executable: the node runs until SIGINT/SIGTERM, then cleans up and exits 0.

rclpy's own signal handling is off (``SignalHandlerOptions.NO``): a signal only sets an event, so the loop ends
between callbacks and ``finish`` (closing a bag, logging counts) always runs; a second one (0.5 s or more after the
first: ``REPEATED_SIGNAL_S``) ends a wait in it for a stop's acknowledgement (``ros.delivery``). A setting the node
refuses at construction is printed on stderr and the process exits with status 2, as a command-line usage error.
``named_counts`` writes the counters a node or command reports when it ends (a bag's messages per topic, the policy
node's summary) as every such line says them.
"""

from __future__ import annotations

import inspect
import re
import signal
import sys
import threading
import time
from pathlib import Path

# A second SIGINT/SIGTERM sooner than this after the first is the same stop sent twice, not a person pressing Ctrl-C
# again: `ros2 launch --noninteractive` forwards its own signal to a node the terminal's already reached, and a
# supervisor may signal the process and its group; ending the stop's acknowledgement wait on it lost the stop
# (docs/ros.md, Stopping). A person's second press comes later (a third one ends the wait where two came fast).
REPEATED_SIGNAL_S = 0.5


def run_until_signal(
    name: str, make_node, refused=(ValueError,), finish=None, done=None, failed=None, args=None, at_signal=None
) -> int:
    """Make the node with ``make_node()`` and spin it until a signal or ``done(node)``; ``finish(node)`` then.
    ``failed(node)``: why the node stopped on an error it logged (exit status 1), or empty. A ``refused`` error
    from ``finish`` is printed (exit status 1), not a traceback. ``at_signal(node, executor)``: run when a signal
    ended the spinning, before ``finish`` (the recorder takes what was delivered before it)."""
    import rclpy
    import rclpy.executors
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()
    if not init_ros(name, args=args, signal_handler_options=SignalHandlerOptions.NO):
        return 2
    previous = stop_on_signals(stop)
    try:
        node = make_node()
    except refused as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        _restore(previous)
        return 2
    warn_sections_for_another_namespace(node, sys.argv if args is None else args)
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(node)
    status = 0
    try:
        while rclpy.ok() and not stop.is_set() and not (done is not None and done(node)):
            executor.spin_once(timeout_sec=0.05)
        if stop.is_set() and at_signal is not None:
            at_signal(node, executor)
    finally:
        executor.remove_node(node)
        try:
            if finish is not None:
                finish(node)
        except refused as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            status = 1
        node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
        _restore(previous)
    if status == 0 and failed is not None and failed(node):
        print(f"{name}: {failed(node)}", file=sys.stderr)
        status = 1
    return status


def stop_on_signals(stop: threading.Event, then=None) -> dict:
    """SIGINT/SIGTERM set ``stop``, so a node executable's loop ends between callbacks; a second one, at least
    ``REPEATED_SIGNAL_S`` after the first, also ends the process's waits for a stop's acknowledgement
    (``ros.delivery.stop_waiting``, the stop published all the same): whoever presses Ctrl-C twice wants it to end
    now. ``then(signum)`` runs after, in the handler. Returns the handlers replaced (``_restore``)."""
    from liquid_control.ros.delivery import stop_waiting

    first = []  # monotonic time of the first signal

    def on_signal(signum, _frame):
        now = time.monotonic()
        if first and now - first[0] >= REPEATED_SIGNAL_S:  # pressed twice, not one stop sent twice
            stop_waiting(f"a second stop signal ({signal.Signals(signum).name})")
        elif not first:
            first.append(now)
        stop.set()
        if then is not None:
            then(signum)

    return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


def named_counts(counts) -> str:
    """``/chatter 60, /imu 200``: each name of ``counts`` (a mapping, in its order) with its count, as the lines
    that report counters say them (a Python dict, ``{'/chatter': 60}``, is no sentence); ``none`` when empty."""
    return ", ".join(f"{name} {count}" for name, count in counts.items()) or "none"


def init_ros(name: str, **kwargs) -> bool:
    """``rclpy.init(**kwargs)``, or one line on stderr saying why not and False: a --params-file that is missing or
    not ROS parameter YAML, or a log folder rcl cannot make, makes rcl raise an RCLError whose traceback hides the
    reason in its last line; a log folder rcl cannot write its log file into, a RuntimeError."""
    import rclpy
    from rclpy._rclpy_pybind11 import RCLError

    try:
        rclpy.init(**kwargs)
    except RCLError as exc:
        reason = re.sub(r"(, at \S+:\d+)+$", "", " ".join(str(exc).split())).strip()  # rcl's source locations
        reason = reason.removeprefix("failed to initialize rcl: ")
        if "log directory" in reason:  # ROS_LOG_DIR, $ROS_HOME/log or ~/.ros/log (entry.unwritable_log_dir)
            reason += "; set ROS_LOG_DIR to a writable folder"
        print(f"{name}: cannot start: {reason}", file=sys.stderr)
        return False
    except RuntimeError:  # not an RCLError: a log folder that exists but takes no log file (spdlog's error)
        from liquid_control.ros.entry import unwritable_log_dir

        problem = unwritable_log_dir()
        if problem is None:
            raise
        print(f"{name}: cannot start: {problem}", file=sys.stderr)
        return False
    return True


def warn_sections_for_another_namespace(node, argv) -> list[str]:
    """Warn (and return the lines) where a ``--params-file`` of ``argv`` has no section naming this node but one
    naming its name in another namespace, or a name one typo from it: ROS gives the node none of its parameters
    without a word (a ``policy_node:`` section for the node started under ``/robot1``, which then refused to
    configure, 'no policy file given'; a fleet's file with ``/**:`` and ``/robot1/sim_node:`` given to robot2's
    sim_node, or ``/robot1/sim_nde:``, which ran with another robot's TF frames). A ``/**:`` section applies to
    every node, so it does not count as naming this one."""
    from liquid_control.conventions.params import (
        last_name,
        parameter_sections,
        ros_parameter_arguments,
        section_applies,
    )
    from liquid_control.yaml_numbers import load_yaml

    qualified, own, lines = node.get_fully_qualified_name(), node.get_name(), []
    for path in ros_parameter_arguments(argv)[0]:
        try:
            raw = load_yaml(Path(path).read_text(encoding="utf-8"))
        except Exception:  # rcl read it already, or refused it with its own message
            continue
        sections = [name for name, _ in parameter_sections(raw)]
        if any(section_applies(name, qualified) and "*" not in last_name(name) for name in sections):
            continue  # a section of this file names this node
        for name in sections:
            last = last_name(name)
            if last == own and not section_applies(name, qualified):
                lines.append(
                    f"{path}: its section {name!r} is for /{name.strip('/')}, and this node is {qualified}, which "
                    f"gets none of its parameters: name the section {qualified}: or /**/{own}: (any "
                    "namespace; training from bags reads that one too)"
                )
            elif "*" not in last and last != own and _one_typo_from(last, own):
                meant = name.strip("/")[: -len(last)] + own
                if section_applies(meant, qualified):
                    lines.append(
                        f"{path}: its section {name!r} names no node {qualified} is; if it is meant for this node, "
                        f"name it {'/' + meant if name.startswith('/') else meant}: (ROS gives its parameters to a "
                        f"node named {last} only)"
                    )
    for line in lines:
        node.get_logger().warning(line)
    return lines


def _one_typo_from(name: str, other: str) -> bool:
    """Whether ``name`` is ``other`` with one letter left out, added, changed or two neighbours swapped."""
    if abs(len(name) - len(other)) > 1:
        return False
    if len(name) == len(other):
        diffs = [k for k, (a, b) in enumerate(zip(name, other, strict=True)) if a != b]
        return len(diffs) == 1 or (
            len(diffs) == 2
            and diffs[1] == diffs[0] + 1
            and name[diffs[0]] == other[diffs[1]]
            and name[diffs[1]] == other[diffs[0]]
        )
    short, long_ = sorted((name, other), key=len)
    return any(long_[:k] + long_[k + 1 :] == short for k in range(len(long_)))


def _restore(handlers: dict) -> None:
    """The signal handlers as they were before (the caller may be a test process, not only an executable)."""
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


class WithMessageInfo:
    """A subscription callback that rclpy hands each message's MessageInfo (the publisher's sequence numbers and id:
    policy_node's missed-message count, the recorder's latched repeats) beside the message, then ``handle(msg,
    info)``. Its signature says two parameters, which is how rclpy decides to pass the MessageInfo; rclpy's
    EventsExecutor (policy_node's; Kilted's rclpy 9.1.2) then calls it with the (message, info) pair as one argument,
    where a two-parameter function ended the spin ('SystemError: null argument to internal routine'), and the
    other executors with two: both are taken."""

    __slots__ = ("handle",)
    __signature__ = inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.POSITIONAL_ONLY) for name in ("msg", "info")]
    )

    def __init__(self, handle):
        self.handle = handle

    def __call__(self, msg, info=None):
        """``msg, info`` (the single- and multi-threaded executors) or ``(msg, info)`` (the EventsExecutor)."""
        if info is None:  # the EventsExecutor's (message, info) pair
            msg, info = msg
        self.handle(msg, info)
