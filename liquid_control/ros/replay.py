"""``liquid-control replay``: play recorded bags into a running ``policy_node`` over DDS and record what it commands.

The bag's sensor messages are published unchanged (serialized bytes, original stamps) on their topics with the QoS
their publishers offered, at the recorded timing (log-time differences) or ``--rate`` times faster; the policy
integrates the stamps, so its state evolves as it would have on the robot, only the wall clock is compressed. Where
the bag's log time goes back (a step of the recording machine's clock, an NTP/chrony step: the bag is read in the
order it was written, :class:`~liquid_control.bags.BagReader`), the timing restarts at that message
(:class:`Pacing`): what follows keeps its recorded spacing instead of going out in one burst. A silence of every
replayed topic longer than ``--max-gap`` (5 s of the recording: a paused recorder, a step forward of the recording
machine's clock) is cut to it with a notice, instead of the playback sitting idle for the whole jump; the stamps are
unchanged, so the node sees the gap and resets as it would on the robot. The node's commands
(``--record``, default ``/wheel_torques`` for a bag holding it, a balancer's, else ``/cmd_vel``) are recorded into a
new bag by a :class:`~liquid_control.ros.recorder_node.BagRecorderNode` in this process. Topics that are recorded
are not replayed (the recorded commands of the bag would otherwise collide with the node's), and neither are the
bag's other commands (every topic named ``cmd_vel`` or ``wheel_torques``, e.g. ``/base/cmd_vel`` beside ``--record
/policy/cmd_vel``) unless named in ``--topics``, with one notice naming them: unlike ``ros2 bag play``, this tool
replays a policy's inputs, and on a robot a replayed ``/cmd_vel`` drives the base (and a ``takeover_mux`` takes
it for an operator) while the policy's commands are being recorded. A policy that takes one of them as its input
(the balancer's ``target_topic:=cmd_vel``) needs it named in ``--topics``; the notice, and the final warning when
nothing was recorded, say so. Ctrl-C or SIGTERM finishes the output bag with what was recorded (exit 130/143);
another one while it is being finished is told to wait.

    ros2 launch liquid_control policy.launch.py policy:=runs/from_bags/policy.pt autostart:=true
    liquid-control replay bags/heldout/episode_200 -o bags/replayed --rate 2

The recorder keeps up to ``--qos-depth`` (5000, the most Fast DDS keeps a reader) messages a topic it has not taken
yet: its executor shares the CPU with the playback and the node, and behind a 1 kHz IMU's commands by 0.7 s it lost
398 of 3415 past the 100 a ``liquid-control record`` keeps, without a word (Fast DDS reports no overrun of a
keep-last history). Where messages are lost anyway (gaps in the publisher's sequence numbers, or DDS's lost count: the
recorder's ``lost``), the end says how many of how many, and what to change. What DDS had delivered when the
playback ended is recorded before the bag is finished (``take_delivered``).

With ``command_type: twist_stamped`` every command carries the stamp of the frame it answers, so the recorded
commands can be matched to the bag's frames (``liquid-control eval --bag`` computes the same commands offline).

A recording that fails (the output bag's disk full, an I/O error) stops the playback at once: the error names the
output bag, the topic and the message that could not be written and where the playback was; the bag is finished
with what was written before where it can be (else ``liquid-control record --recover`` salvages it). Exit code 2.

A topic whose message type is not importable here (a vendor type, e.g. ``acme_msgs/msg/BaseStatus``, whose
package this environment lacks) is not replayed, with one warning naming it: a policy reads none of those (its
inputs are sensor_msgs types), and the node could not subscribe to it without the package either. A topic named
in ``--topics`` that is not importable is an error naming it. Nothing is created at ``-o`` before every check
passed: a refused replay leaves no (empty) output bag behind, and the corrected command can reuse the name.
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m: refused before rclpy loads (a foreign one was a traceback); the command checks
    import sys  # the shell's ROS settings first, which this module cannot reach (liquid_control.cli is above it)

    print(
        "python -m liquid_control.ros.replay: error: run it as liquid-control replay (or python -m "
        "liquid_control.cli replay), which checks the shell's ROS settings first",
        file=sys.stderr,
    )
    raise SystemExit(2)

import argparse
import copy
import math
import os
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import rclpy
import rclpy.executors
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from liquid_control.bags import BagError, BagReader
from liquid_control.bags.io import TopicInfo, expand_bags, message_class
from liquid_control.bags.messages import COMMAND_TYPES, SENSOR_TYPES, TWIST
from liquid_control.bags.stream import absolute_topic
from liquid_control.conventions import stamps
from liquid_control.conventions.params import (
    DDS_READER_SAMPLES,
    POLICY_NODE_PARAMETERS,
    discovery_problem,
    domain_id_problem,
    kept_by_dds,
    qos_depth_problem,
    topic_name_problem,
)
from liquid_control.paths import user_path
from liquid_control.processes import Terminated, sigterm_as_interrupt
from liquid_control.ros.entry import unwritable_log_dir

from .executable import named_counts
from .recorder_node import BagRecorderNode, default_bag_name, printable, take_delivered


def publisher_qos(profiles) -> QoSProfile:
    """The QoS a replayed topic is published with: its first recorded publisher's (rosbags Qos), keeping 100."""
    if not profiles:
        return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    q = profiles[0]
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=max(100, int(q.depth)),  # deep: a busy subscriber must not lose replayed messages
        reliability=ReliabilityPolicy.BEST_EFFORT
        if q.reliability.name == "BEST_EFFORT"
        else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL
        if q.durability.name == "TRANSIENT_LOCAL"
        else DurabilityPolicy.VOLATILE,
    )


# the recorder's history depth (keep last) per topic: deep, a command of every update of a 1 kHz IMU must wait while
# the recorder is behind (0.7 s seen on 2 cores); a history holds only what was not taken yet (no preallocation)
REPLAY_QOS_DEPTH = DDS_READER_SAMPLES  # what Fast DDS keeps at most

# the bag's velocity commands are held back from a replay unless named: a policy that reads one gets no input
HELD_BACK_INPUT_HINT = "if the policy takes one of them as an input, e.g. a target velocity, name it in --topics"


PROG = "liquid-control replay"  # the start of each line it prints on stderr, as the other commands name themselves


def _stderr(line: str) -> None:
    """``liquid-control replay: <line>`` on stderr (a warning's ``line`` starts with ``warning:``, an error's with
    ``error:``, as the other commands say theirs), its non-printable characters escaped
    (``recorder_node.printable``): the topic and type names in it come from whoever wrote the bag, and an escape
    sequence or a line break in one would act on the terminal or forge a line."""
    print(printable(f"{PROG}: {line}"), file=sys.stderr)


class RecordingFailed(BagError):
    """The commands could not be recorded (a write into the output bag failed): the playback was stopped."""


class NodeGone(RuntimeError):
    """The node the bags were to be played to ended while the replay waited for it (``replay``'s ``gone``)."""


class _PlaybackRecorder(BagRecorderNode):
    """The recorder of a replay: where it stops recording on a failed write (``failed``: the bag, the topic, the
    count), the playback stops too (``stop``) instead of playing on for hours into a recorder that records nothing."""

    def __init__(self, stop: threading.Event, **kwargs):
        self._stop_playback = stop
        super().__init__(**kwargs)

    def _on_message(self, topic: str, data: bytes, info: dict | None = None):
        super()._on_message(topic, data, info)
        if self.failed:
            self._stop_playback.set()


NODE_INPUT_TYPES = tuple(msgtype for msgtype, _ in SENSOR_TYPES.values())  # what policy_node subscribes with


def replayed_type(info: TopicInfo) -> str:
    """The type ``info``'s topic is replayed with (a publisher has one): of a topic recorded with several
    (publishers of two types on one name, e.g. an image_transport republisher's CompressedImage beside the camera's
    Image), the one policy_node subscribes with, else the most common; the others' messages are not played."""
    return next((msgtype for msgtype in info.msgtypes if msgtype in NODE_INPUT_TYPES), info.msgtype)


def topic_types(readers: list[BagReader], topics: list[str]) -> dict[str, str]:
    """The replayed message type of each of ``topics`` (the first bag that holds it; ``replayed_type``), in
    ``topics``' order."""
    types = {}
    for topic in topics:
        for reader in readers:
            info = reader.topics.get(topic)
            if info is not None:
                types[topic] = replayed_type(info)
                break
    return types


def replayable_classes(readers: list[BagReader], topics: list[str], requested: bool) -> tuple[dict, dict]:
    """The rclpy message class of every topic of ``topics`` whose type can be imported here, and the others
    (``{topic: msgtype}``), skipped. ``requested`` (the user named ``topics`` with ``--topics``): a topic that
    cannot be imported is a ValueError naming it and its type instead."""
    classes, skipped = {}, {}
    for topic, msgtype in topic_types(readers, topics).items():
        try:
            classes[topic] = message_class(msgtype)
        except BagError as exc:
            if requested:
                package = msgtype.split("/")[0]
                raise ValueError(
                    f"--topics {topic}: {exc}; source the workspace that builds {package} before replaying it, "
                    "or leave it out of --topics"
                ) from None
            skipped[topic] = msgtype
    return classes, skipped


class Pacing:
    """When each message of a bag is due on the wall clock: ``start`` plus its log time's distance from the first
    message's, divided by ``rate``. Where the log time goes back (the recording machine's clock stepped back: the
    bag is read in the order written), the timing restarts at that message, due with the one before it (a gap of
    0: the real one is not in the bag), so the messages after the step keep their recorded spacing instead of all
    being overdue at once. Where the log time jumps forward by more than ``max_gap_s`` (every replayed topic
    silent: a paused recorder, or the recording machine's clock stepped forward, an NTP step of minutes or hours),
    the timing restarts ``max_gap_s`` (/ ``rate``) after the message before: the playback does not sit idle for
    the whole jump. Each such cut is kept in ``cuts`` as (recorded seconds played before it, gap)."""

    def __init__(self, rate: float, start: float, max_gap_s: float = math.inf):
        self.rate = rate
        self.max_gap_ns = max_gap_s * 1e9
        self.base: tuple[int, float] | None = None  # (log time ns, wall time) the timing counts from
        self.last: tuple[int, float] | None = None  # (log time ns, due) of the previous message
        self.start = start
        self.cuts: list[tuple[float, float]] = []

    def due(self, log_time_ns: int) -> float:
        """The wall time (``start``'s clock) at which the message logged at ``log_time_ns`` is due."""
        if self.last is None:
            self.base = (log_time_ns, self.start)
        elif log_time_ns < self.last[0]:  # the recorder's clock stepped back: restart the timing here
            self.base = (log_time_ns, self.last[1])
        elif log_time_ns - self.last[0] > self.max_gap_ns:  # a silence longer than max_gap_s: cut to it
            self.base = (log_time_ns, self.last[1] + self.max_gap_ns * 1e-9 / self.rate)
            # where in the recording: seconds played (at rate 1), which a step back of the clock does not undo
            self.cuts.append(((self.last[1] - self.start) * self.rate, (log_time_ns - self.last[0]) * 1e-9))
        due = self.base[1] + (log_time_ns - self.base[0]) * 1e-9 / self.rate
        self.last = (log_time_ns, due)
        return due


class Replay:
    """Publishers for a bag's topics on one node, and the timed playback (``play``).

    ``classes`` (topic -> rclpy message class, see :func:`replayable_classes`): the topics to publish; default:
    every topic of ``topics`` in the bags, a type that cannot be imported a BagError."""

    def __init__(self, node, readers: list[BagReader], topics: list[str], classes: dict | None = None):
        self.node = node
        self.publishers = {}
        self.msgtypes = {}  # topic -> the type its publisher has (a topic recorded with several: replayed_type)
        for reader in readers:
            for topic in topics:
                info = reader.topics.get(topic)
                if info is None or topic in self.publishers:
                    continue
                if classes is not None and topic not in classes:
                    continue
                self.msgtypes[topic] = replayed_type(info)
                cls = classes[topic] if classes is not None else message_class(self.msgtypes[topic])
                self.publishers[topic] = node.create_publisher(cls, topic, publisher_qos(info.qos))
        self.published = {t: 0 for t in self.publishers}
        self.clock_pub = None

    def wait_for_subscribers(self, timeout: float, check=None) -> bool:
        """Wait until some replayed topic has a subscriber (the node is up); False after ``timeout``. ``check``:
        called while waiting (it may raise to end the wait: ``replay``'s ``gone``).

        Not every topic of a bag has a subscriber (a camera-only policy ignores the IMU), so one is enough.
        """
        deadline = time.monotonic() + timeout
        while not any(p.get_subscription_count() for p in self.publishers.values()):
            if check is not None:
                check()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def play(self, reader: BagReader, rate: float, stop: threading.Event, max_gap_s: float = math.inf) -> int:
        """Publish the messages of ``reader`` on the replayed topics at ``rate`` x the recorded timing
        (:class:`Pacing`: a step back of the recorder's clock restarts the timing; a silence of every replayed
        topic longer than ``max_gap_s`` is cut to it, with a notice on stderr)."""
        pacing, sent, other_types = None, 0, set()
        for msg in reader.messages(list(self.publishers)):
            if stop.is_set():
                break
            if msg.msgtype != self.msgtypes[msg.topic]:  # a topic recorded with two types: its publisher has one
                if (msg.topic, msg.msgtype) not in other_types:
                    other_types.add((msg.topic, msg.msgtype))
                    _stderr(
                        f"warning: {reader.path}: {msg.topic} also holds {msg.msgtype} messages, not replayed (its "
                        f"publisher has one type, {self.msgtypes[msg.topic]})",
                    )
                continue
            if pacing is None:
                pacing = Pacing(rate, time.monotonic(), max_gap_s)
            cuts = len(pacing.cuts)
            delay = pacing.due(msg.log_time_ns) - time.monotonic()
            if len(pacing.cuts) > cuts:
                at, gap = pacing.cuts[-1]
                _stderr(
                    f"warning: {reader.path}: no message for {gap:.1f} s of log time after {at:.3f} s of the bag "
                    "(a paused recording, or the recording machine's clock stepped forward); playing on after "
                    f"{max_gap_s:g} s of it (--max-gap)",
                )
            if delay > 0 and stop.wait(delay):  # a failed recording ends a long gap too
                break
            if self.clock_pub is not None:
                from builtin_interfaces.msg import Time
                from rosgraph_msgs.msg import Clock

                sec, nanosec = stamps.split_nanoseconds(msg.log_time_ns)
                self.clock_pub.publish(Clock(clock=Time(sec=sec, nanosec=nanosec)))
            self.publishers[msg.topic].publish(msg.data)
            self.published[msg.topic] += 1
            sent += 1
        return sent


EPILOG = """\
examples (policy_node running with autostart:=true, e.g. ros2 launch liquid_control policy.launch.py):
  liquid-control replay bags/heldout/episode_200 -o bags/replayed            # recorded timing
  liquid-control replay bags/heldout/* -o bags/replayed --rate 4 --reset-service /policy_node/reset

Give the node command_type: twist_stamped to match each command to the frame it answers (its stamp).
See docs/real_robot.md.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``liquid-control replay``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "bags",
        nargs="+",
        metavar="BAG",
        type=user_path,
        help="recorded bag(s), played one after another (one named twice plays twice); paths or quoted globs "
        "('bags/day1/*', in sorted order)",
    )
    parser.add_argument(
        "-o",
        "--output",
        default="",
        type=user_path,
        help="bag of the recorded commands (default rosbag2_<date>-<time>)",
    )
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed (2: twice as fast)")
    parser.add_argument(
        "--record",
        action="append",
        default=[],
        metavar="TOPIC",
        help="a topic to record (default: /wheel_torques where the bag holds it, a balancer's, else /cmd_vel; the "
        "bag's own in a namespace, e.g. /robot1/cmd_vel); repeat the option for several",
    )
    parser.add_argument(
        "--topics",
        nargs="*",
        default=None,
        help="topics to replay (default: every topic of the bag not recorded, except commands: topics named cmd_vel "
        "or wheel_torques, and Twist, TwistStamped, Float64MultiArray, Joy, Ackermann and JointTrajectory topics other "
        "than /target_velocity); it takes every name after it, so give the bags before it",
    )
    parser.add_argument("--clock", action="store_true", help="publish /clock from the bag's log times")
    parser.add_argument(
        "--wait",
        type=float,
        default=30.0,
        help="seconds to wait for the policy node (subscribers of the replayed topics, publishers of the recorded)",
    )
    parser.add_argument("--linger", type=float, default=1.0, help="seconds to keep recording after the last message")
    parser.add_argument(
        "--max-gap",
        type=float,
        default=5.0,
        metavar="S",
        help="longest silence of every replayed topic played as recorded, in seconds of the recording (default 5); "
        "a longer one (a paused recording, a step forward of the recording machine's clock) is cut to S, with a "
        "notice; inf: every gap as recorded",
    )
    parser.add_argument(
        "--reset-service", default="", help="std_srvs/Trigger called before each bag (e.g. /policy_node/reset)"
    )
    parser.add_argument(
        "--qos-depth",
        type=int,
        default=REPLAY_QOS_DEPTH,
        metavar="N",
        help=f"messages of each recorded topic kept while the recorder is behind (keep last; default "
        f"{REPLAY_QOS_DEPTH}, the most Fast DDS keeps a reader by default); a loss past it is counted and said at "
        "the end",
    )
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: the environment's)")
    parser.add_argument("--allow-truncated", action="store_true", help="replay what a killed recorder left")


def _call_reset(node, service: str) -> str:
    """Call the Trigger ``service``: why it did not reset (no such service, no answer, a refusal), or ''."""
    from std_srvs.srv import Trigger

    client = node.create_client(Trigger, service)
    try:
        if not client.wait_for_service(timeout_sec=5.0):
            return "did not answer: no such service after 5 s"
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + 5.0
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not future.done():
            return "did not answer within 5 s"
        answer = future.result()
        return "" if answer.success else f"refused the reset ({answer.message or 'no reason given'})"
    finally:
        node.destroy_client(client)


def replay(args, gone=None) -> dict:
    """Play ``args.bags`` and record ``args.record``; returns counts and the output bag.

    ``gone``: where the caller started the node played to (a process of its own), a callable polled while the
    replay waits for that node, returning why it will never come (its process ended: its log), else None; the
    replay then ends at once with NodeGone saying so, not after --wait, and leaves no bag at -o."""
    if not args.rate > 0:
        raise ValueError(f"--rate must be > 0, got {args.rate}")
    for option, value in (("--wait", args.wait), ("--linger", args.linger)):
        if not (math.isfinite(value) and value >= 0):  # NaN waited forever; a negative --linger failed at the end
            raise ValueError(f"{option} must be a finite number of seconds >= 0, got {value}")
    if not args.max_gap > 0:  # NaN or <= 0: every message would count as after a silence
        raise ValueError(f"--max-gap must be a number of seconds > 0 (inf: no limit), got {args.max_gap}")
    depth = getattr(args, "qos_depth", REPLAY_QOS_DEPTH)
    if problem := qos_depth_problem(depth):
        raise ValueError(f"--qos-depth {problem}")
    # a domain outside 0..232 (rclpy's RuntimeError, Fast-DDS's port error), discovery off (the policy node would never
    # see the replayed topics), a log folder rclpy.init cannot use (a traceback): refused as sim and view refuse them
    problem = domain_id_problem(args.domain_id) or discovery_problem() or unwritable_log_dir()
    if problem:
        raise ValueError(problem)
    # Bag topics are absolute: `--record cmd_vel` (the node's command_topic as its parameter file spells it)
    # must not leave the bag's own /cmd_vel among the replayed topics, where the recorder would record it.
    record = [absolute_topic(t) for t in args.record]
    output = args.output or default_bag_name()
    if Path(output).exists():  # refused now, not after the bags were opened and DDS was set up
        raise BagError(f"{output}: already exists; a bag is never overwritten, choose a new name")
    # Everything that can refuse the replay is checked before the output bag is created (last, by the recorder):
    # a refusal leaves nothing at -o, so the corrected command can use the same name.
    readers = []
    try:
        # quoted globs too ('bags/day1/*'), each checked before any plays; a bag named twice plays twice
        for bag in expand_bags(args.bags, "BAG", repeats=True):
            readers.append(BagReader(bag, allow_truncated=args.allow_truncated))
        record = record or default_recorded(readers)
        topics = _replayed_topics(readers, args.topics, record)
        commands = base_command_topics(topic_types(readers, topics))
        if args.topics is None and commands:  # `ros2 bag play` would replay them: here they are held back
            topics = [t for t in topics if t not in commands]
            _stderr(
                f"not replaying {', '.join(commands)}: recorded commands, which a robot's base (or "
                "a takeover_mux, as an operator's) would execute while the policy's commands are recorded; name "
                f"them in --topics to replay them ({HELD_BACK_INPUT_HINT})",
            )
        elif commands:
            _stderr(
                f"warning: replaying the recorded commands {', '.join(commands)} (--topics): a base "
                "listening there moves",
            )
        classes, skipped = replayable_classes(readers, topics, requested=args.topics is not None)
        for topic, msgtype in skipped.items():
            _stderr(
                f"warning: not replaying {topic}: its type {msgtype} is not importable here (no policy "
                f"input has it); source the workspace that builds {msgtype.split('/')[0]} to replay it, or choose "
                "the replayed topics with --topics",
            )
        if not classes:
            held = ", ".join(sorted({t for r in readers for t in r.topics})) or "nothing"
            left_out = [f"{', '.join(record)} (recorded, --record)"]
            if args.topics is None and commands:
                left_out.append(f"{', '.join(commands)} (commands: name them in --topics)")
            if skipped:
                left_out.append(f"{', '.join(skipped)} (not importable here)")
            raise ValueError(f"nothing to replay: the bags hold {held}; not replayed: {'; '.join(left_out)}")
    except BaseException:
        for reader in readers:
            reader.close()
        raise
    context = rclpy.Context()
    stop, failures = threading.Event(), []  # stop: the playback ends (done, or a failure: ``failures``)
    node = None
    try:
        rclpy.init(context=context, domain_id=args.domain_id)
        node = rclpy.create_node("bag_replay", context=context)
        player = Replay(node, readers, topics, classes)
        if args.clock:
            from rosgraph_msgs.msg import Clock

            player.clock_pub = node.create_publisher(Clock, "/clock", 10)
        recorder = _PlaybackRecorder(  # creates the output bag
            stop,
            context=context,
            parameter_overrides={"output": output, "topics": record, "duration_s": 0.0, "qos_depth": depth},
        )
    except BaseException:
        if node is not None:
            node.destroy_node()
        context.try_shutdown()
        for reader in readers:
            reader.close()
        raise
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(recorder)
    spinner = threading.Thread(target=lambda: _spin(executor, context, stop, failures), daemon=True)
    spinner.start()
    held_back = commands if args.topics is None else []
    result = {
        "output": str(recorder.output),
        "published": {},
        "recorded": {},
        "lost": {},  # per recorded topic: messages published while recorded that are not in the bag (see run)
        "qos_depth": depth,
        "interrupted": "",  # where Ctrl-C (SIGTERM: "terminated") stopped the playback
        "terminated": False,
        "held_back": held_back,  # the velocity commands not replayed (none named in --topics)
    }
    where, completed = "no message of the bags had been played", False

    def check_gone():
        why = gone() if gone is not None else None
        if why:
            raise NodeGone(why)

    node_gone = None
    unreadable = ""  # a bag that broke off while played (a chunk failing its CRC): the output bag is named with it
    playing, whole = None, 0  # the bag being played and how many were played whole: where a Ctrl-C stopped it
    try:
        # one --wait for the policy node: its subscriptions to the replayed topics, then its publishers of the
        # recorded ones (a wait of its own after "playing anyway" doubled it, the messages held back without a word)
        deadline = time.monotonic() + args.wait
        subscribed = player.wait_for_subscribers(args.wait, check_gone)
        if not subscribed:
            _stderr(
                f"warning: no subscriber on any of {', '.join(player.publishers)} after {args.wait:.0f} s; "
                "playing anyway",
            )
        while recorder.pending and time.monotonic() < deadline and not stop.is_set():
            check_gone()
            time.sleep(0.05)
        if subscribed and recorder.pending:  # a node that listens but commands elsewhere (its command_topic?)
            _stderr(
                f"warning: nothing publishes {', '.join(recorder.pending)} after {args.wait:.0f} s (the node's "
                "commands on another topic? see its command_topic); playing anyway, recording them if they come"
            )
        time.sleep(0.5)  # let discovery settle both ways (the node's other subscriptions, our subscription)
        check_gone()
        unused = [t for t, p in player.publishers.items() if not p.get_subscription_count()]
        if unused:
            _stderr(f"warning: nobody subscribes to {', '.join(unused)} (replayed anyway)")
        for reader in readers:
            if stop.is_set():  # the recording failed (while waiting, or during the previous bag)
                break
            why = _call_reset(node, args.reset_service) if args.reset_service else ""
            if why:
                _stderr(
                    f"warning: --reset-service {args.reset_service} {why}: the policy's liquid state was not reset "
                    f"before {reader.path}, which plays from the state the node was left in"
                )
            t0, playing, before = time.monotonic(), reader.path, sum(player.published.values())
            try:
                sent = player.play(reader, args.rate, stop, args.max_gap)
            except BagError as exc:
                played = sum(player.published.values()) - before
                unreadable = f"{exc}; the playback of {reader.path} stopped there, after {played} of its messages"
                break
            playing = None
            if stop.is_set():
                where = f"the playback of {reader.path} stopped after {sent} of its messages"
                break
            _stderr(f"replayed {reader.path}: {sent} messages in {time.monotonic() - t0:.1f} s")  # progress
            where, whole = f"the playback stopped after {reader.path}, played whole", whole + 1
        else:
            stop.wait(args.linger)
            where = "every bag had been played"
        completed = True
    except NodeGone as exc:  # before any message was played: the output bag is removed below
        node_gone = exc
    except KeyboardInterrupt as exc:  # Ctrl-C (or SIGTERM, see run): the output bag is finished below
        played = sum(player.published.values())
        if playing is not None:
            state = f"while playing {playing}"
        elif played:
            state = f"after playing {whole} of {len(readers)} bag(s) whole"
        else:
            state = "while waiting for the policy node, before any message was played"
        result["interrupted"] = f"{state} ({played} message(s) published)"
        result["terminated"] = isinstance(exc, Terminated)
        completed = True
    finally:
        unfinished = None
        try:
            # Only the bag's close (and the bounded steps before it) is shielded: a second Ctrl-C there would leave
            # the bag unfinished. What follows must stay interruptible, should one of its steps hang.
            with _signals_deferred(recorder.output):
                stop.set()
                spinner.join(timeout=2.0)
                if not spinner.is_alive() and not (recorder.failed or failures):
                    take_delivered(recorder, executor)  # a recorder behind: what DDS had delivered goes in the bag
                executor.remove_node(recorder)
                try:
                    path = recorder.close()
                except BagError as exc:  # e.g. the disk is still full: the MCAP file stays, truncated
                    path, unfinished = recorder.output, exc
            result.update(
                output=str(path),
                published=dict(player.published),
                recorded=dict(recorder.counts),
                lost={t: n for t, n in recorder.lost.items() if n},
            )
        finally:  # whatever the close raised: the nodes, the context (replay() in-process) and the bags released
            _release(
                recorder.destroy_node,
                node.destroy_node,
                lambda: executor.shutdown(timeout_sec=2.0),  # a callback stuck in the spinner cannot hang the exit
                context.try_shutdown,
                *(reader.close for reader in readers),
            )
    if node_gone is not None:
        kept = sum(recorder.counts.values())
        if not kept and unfinished is None:
            shutil.rmtree(path, ignore_errors=True)
            raise NodeGone(f"nothing was played, no bag is left at {path}: {node_gone}")
        raise NodeGone(f"nothing was played ({path} holds the {kept} message(s) recorded before): {node_gone}")
    failure = recorder.failed or (failures[0] if failures else "")
    if failure:
        if unfinished is None:
            raise RecordingFailed(
                f"{failure}; {where}; {path} was finished with the {sum(recorder.counts.values())} message(s) "
                "recorded before"
            )
        if recorder.failed:  # the recorder's error names its failed write already, and how to recover the bag
            raise RecordingFailed(f"{unfinished}; {where}")
        raise RecordingFailed(f"{failure}; {where}; {unfinished}")
    if unreadable:  # the output bag holds the commands to the bags played until then: said, not left unnamed
        kept = unfinished or f"{path} was finished with the {sum(recorder.counts.values())} message(s) recorded before"
        raise BagError(f"{unreadable}; {kept}")
    if unfinished is not None and completed:
        raise unfinished
    return result


def _release(*steps):
    """Run every step, even after one raised (a Ctrl-C that got out of a stuck one included); the first error is
    raised after the last step."""
    error = None
    for step in steps:
        try:
            step()
        except BaseException as exc:
            error = error or exc
    if error is not None:
        raise error


@contextmanager
def _signals_deferred(output):
    """Within the block Ctrl-C and SIGTERM only say that the output bag is being finished (main thread; elsewhere
    a no-op): the first one stopped the playback, a second one escaping the bag's close left it without footer
    and metadata.yaml."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def finishing_first(signum, _frame):  # os.write: a print here could re-enter one in progress on stderr
        os.write(2, f"{PROG}: finishing {output} first (kill -9 would leave it unfinished)\n".encode())

    previous = {sig: signal.signal(sig, finishing_first) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# the last name of the topics a robot's base executes: by ROS convention velocity commands, and the balancers' motor
# torques (their policy parameter files' command_topic); a policy's outputs, held back from a replay
COMMAND_TOPIC_NAMES = ("cmd_vel", "wheel_torques")
# and the types a base, a controller or a teleop node acts on, whatever the topic's name: twist_mux's /joy_vel and
# /nav_vel, ros2_control's /diff_drive_controller/cmd_vel_unstamped and forward controllers' /<controller>/commands,
# a joystick's /joy (teleop_twist_joy drives while its recorded enable button is held), Ackermann and trajectory
# commands
COMMAND_MESSAGE_TYPES = (
    *COMMAND_TYPES,  # what policy_node publishes: Twist, TwistStamped, Float64MultiArray
    "sensor_msgs/msg/Joy",
    "ackermann_msgs/msg/AckermannDrive",
    "ackermann_msgs/msg/AckermannDriveStamped",
    "trajectory_msgs/msg/JointTrajectory",
)
# a Twist named as the node's default target topic (the balancers' target velocity, a policy input): replayed
TARGET_TOPIC_NAME = POLICY_NODE_PARAMETERS["target_topic"][0]


def base_command_topics(topic_types: dict[str, str]) -> list[str]:
    """The topics of ``topic_types`` ({topic: message type}) a base, a controller or a teleop node would execute:
    named ``COMMAND_TOPIC_NAMES`` in any namespace (/cmd_vel, /base/cmd_vel, /policy/cmd_vel, /wheel_torques), or of
    a ``COMMAND_MESSAGE_TYPES`` type, but a Twist named as the node's default target topic (/target_velocity).
    Before, the name alone: a robot's bag with the joystick on /joy_vel and the base's
    /diff_drive_controller/cmd_vel_unstamped replayed both, and on the robot the base drove the recorded commands."""

    def held_back(topic: str, msgtype: str) -> bool:
        name = topic.rsplit("/", 1)[-1]
        target = msgtype == TWIST and name == TARGET_TOPIC_NAME
        return name in COMMAND_TOPIC_NAMES or (msgtype in COMMAND_MESSAGE_TYPES and not target)

    return [topic for topic, msgtype in topic_types.items() if held_back(topic, msgtype)]


def default_recorded(readers: list[BagReader]) -> list[str]:
    """What ``--record`` records when not given: the node's command topic, /wheel_torques for a bag of a balancer
    (which holds it), else /cmd_vel; a bag recorded in a namespace holding one of them there (/robot1/cmd_vel), that
    one. Before, /cmd_vel always: a balancer bag's replay republished the recorded torques on the node's own
    command topic and recorded nothing, and a robot1 bag's replay recorded /cmd_vel, where robot1's node does not
    publish ('nothing was recorded (is the policy node running and active?)')."""
    in_bags = {t for r in readers for t in r.topics}
    for name in ("wheel_torques", "cmd_vel"):  # (a name no ROS node could have is none of them)
        namespaced = sorted(t for t in in_bags if t.rsplit("/", 1)[-1] == name and topic_name_problem(t) is None)
        if f"/{name}" in in_bags or len(namespaced) > 1:
            return [f"/{name}"]
        if namespaced:
            return namespaced
    return ["/cmd_vel"]


def _replayed_topics(readers: list[BagReader], requested: list[str] | None, record: list[str]) -> list[str]:
    """The topics to replay: ``requested`` (``--topics``; each must be in some bag), else every topic of the
    bags that is not recorded."""
    in_bags = {t for r in readers for t in r.topics}
    if requested is None:
        return sorted(in_bags - set(record))
    topics = [absolute_topic(t) for t in requested]
    missing = [t for t in topics if t not in in_bags]
    if missing:
        held = ", ".join(sorted(in_bags)) or "nothing"
        raise ValueError(f"--topics {' '.join(missing)}: in none of the bags; they hold {held}")
    return topics


def _spin(executor, context, stop, failures):
    """Run the callbacks until ``stop``; a failing callback stops the playback (``failures`` says why), where
    raising here would only end this thread while the bag played on."""
    while context.ok() and not stop.is_set():
        try:
            executor.spin_once(timeout_sec=0.05)
        except Exception as exc:
            if context.ok() and not stop.is_set():
                failures.append(f"a callback failed ({type(exc).__name__}: {exc})")
                stop.set()
            break


def _interrupted_outside_playback(output: Path, existed: bool) -> str:
    """What a Ctrl-C (SIGTERM) that escaped :func:`replay` left at ``output``: none before the recorder created the
    bag, else one finished or not (metadata.yaml is written last)."""
    if existed or not output.exists():
        return "interrupted before the playback began; nothing recorded"
    if (output / "metadata.yaml").is_file():
        return f"interrupted; {output} was finished with what was recorded until then"
    return (
        f"interrupted while {output} was being finished: it is left unfinished; `liquid-control record --recover "
        f"{output} -o <new bag>` keeps what was written"
    )


def lost_text(topic: str, lost: int, recorded: int, depth: int) -> str:
    """What the end of a replay says of ``lost`` messages of ``topic`` (the recorder's ``lost``): how many of how
    many the node published while recorded, the likely cause and what to change."""
    kept = kept_by_dds(depth)
    bigger = f"a larger --qos-depth (it was {depth}), " if kept_by_dds(depth + 1) > kept else ""
    return (
        f"{topic}: {lost} of the {recorded + lost} messages published on it while recording are not in the bag "
        f"(gaps in the publisher's sequence numbers, or lost as DDS reported): the recorder fell behind by more than "
        f"{kept} messages{' (Fast DDS keeps no more a reader)' if kept < depth else ''}, or a best-effort publisher "
        f"or the node's command_qos_depth lost them; rerun with {bigger}a lower --rate or fewer other jobs on the "
        "machine"
    )


def run(args) -> int:
    """Replay the bags and report; exit code 2 for a bad bag or argument, 1 when nothing was recorded, 130 (143)
    when stopped by Ctrl-C (SIGTERM), with the output bag finished holding what was recorded until then."""
    args = copy.copy(args)
    args.output = args.output or default_bag_name()  # named here too: an escaping Ctrl-C is told what is there
    existed = Path(args.output).exists()  # replay refuses it: not its bag
    try:
        # a kill ends the replay as Ctrl-C does: the output bag finished
        with sigterm_as_interrupt("liquid-control replay"):
            result = replay(args)
    except (BagError, ValueError) as exc:
        _stderr(f"error: {exc}")
        return 2
    except KeyboardInterrupt as exc:  # outside the playback: opening the bags, starting DDS, or a late second one
        _stderr(f"{_interrupted_outside_playback(Path(args.output), existed)}")
        return 143 if isinstance(exc, Terminated) else 130
    losses = [lost_text(t, n, result["recorded"].get(t, 0), result["qos_depth"]) for t, n in result["lost"].items()]
    if result["interrupted"]:
        _stderr(
            f"interrupted {result['interrupted']}; {result['output']} is a complete bag holding what was recorded "
            f"until then: {named_counts(result['recorded'])}",
        )
        for text in losses:
            _stderr(f"warning: {text}")
        return 143 if result["terminated"] else 130  # as liquid-control record
    recorded, published = named_counts(result["recorded"]), named_counts(result["published"])
    print(printable(f"wrote {result['output']}: recorded {recorded}; published {published}"), flush=True)
    for text in losses:  # after the counts they qualify
        _stderr(f"warning: {text}")
    if not any(result["recorded"].values()):
        held_back = result["held_back"]
        hint = f"; not replayed: {', '.join(held_back)} ({HELD_BACK_INPUT_HINT})" if held_back else ""
        _stderr(f"warning: nothing was recorded (is the policy node running and active?){hint}")
        return 1
    return 0
