"""Recording for liquid policies: a rosbag2 (MCAP) recorder node, and ``liquid-control record``.

``BagRecorderNode`` subscribes to its topics as their publishers appear (type and QoS taken from the graph,
as ``ros2 bag record`` does: reliable only if every publisher is, transient local only if every publisher
is), receives the serialized messages (no deserialization) and writes them with the node clock as log time
(sim time with ``use_sim_time``) and the publishers' offered QoS in the bag. The bag is finished on shutdown
(SIGINT/SIGTERM or ``duration_s``); a recorder killed hard leaves a truncated bag that
``liquid-control record --recover`` rewrites.

    ros2 run liquid_control bag_recorder --ros-args -p output:=bags/run1 -p topics:="[/camera/image_raw, /cmd_vel]"
    liquid-control record -o bags/run1 /camera/image_raw /imu/data /cmd_vel
    liquid-control record -o bags/expert --expert --episodes 20 --seed 100     # simulated teleoperation
    liquid-control record -o bags/bal --expert --world LiquidBalance-v0        # ... of a balancer
    liquid-control record --info bags/run1                                     # what a bag holds
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m: as the bag_recorder executable, whose checks run before rclpy loads
    from liquid_control.ros.entry import run

    raise SystemExit(run("bag_recorder"))

import argparse
import functools
import math
import shlex
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import rclpy
import rclpy.executors
from rcl_interfaces.msg import SetParametersResult
from rclpy._rclpy_pybind11 import RCLError
from rclpy.clock import Clock, ClockType
from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from liquid_control.bags import BagError, BagReader, BagWriter
from liquid_control.bags.io import BEHIND_CACHE_BYTES, message_class, metadata_counts, qos_dict, split_limit_refusal
from liquid_control.conventions.params import (
    MAX_SECONDS,
    camera_info_topic,
    declare_node_parameters,
    discovery_problem,
    kept_by_dds,
    parameter_value,
    qos_depth_problem,
    refuse_startup_parameter_changes,
)
from liquid_control.paths import user_path
from liquid_control.ros.entry import unwritable_log_dir
from liquid_control.ros.executable import WithMessageInfo, init_ros, named_counts, run_until_signal, stop_on_signals
from liquid_control.shown import counted, shown

RECORDER_PARAMETERS: dict[str, tuple[object, str]] = {
    "output": ("", "bag folder to create (empty: rosbag2_<date>-<time> in the working directory)"),
    "topics": (["/camera/image_raw", "/imu/data", "/cmd_vel"], "topics to record (absolute or node-relative)"),
    "duration_s": (0.0, "stop after this many seconds of the node clock (0: until shutdown)"),
    "discovery_period_s": (0.2, "how often to look for publishers of topics not yet subscribed"),
    "qos_depth": (100, "subscription history depth (keep last)"),
    "compression": (False, "zstd-compress the MCAP chunks (smaller, slower to read)"),
    "max_bag_size": (
        0,
        "bytes: split the bag into <bag>_0.mcap, <bag>_1.mcap ... of about this size, at least 1048576 (0: no split)",
    ),
    "max_bag_duration": (
        0.0,
        "seconds: split the bag into files of this much recording each, at least 1 (0: no split)",
    ),
    "repeat_latched": (
        False,
        "split bag: start each file with the latched topics' last messages (each opens alone with its TF tree)",
    ),
}


LOST_WARNING_PERIOD_S = 5.0
CLOCK_WAIT_WARNING_S = 5.0  # use_sim_time and no /clock for this long (steady time): said, once
TAKE_DELIVERED_LIMIT_S = 2.0  # at a stop signal, the longest the recorder goes on taking what DDS delivered


def duration_refusal(value, until: str) -> str | None:
    """Why ``value`` is no recording duration (None: it is one), as the node's ``duration_s`` and the command's
    ``--duration`` say it; ``until``: what ends a recording of duration 0. A negative or NaN one recorded until
    stopped."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_SECONDS:
        return None
    return f"must be a finite number of seconds in [0, {MAX_SECONDS:g}] (0: until {until}), got {shown(value)}"


def recorder_parameter_problems(p: dict) -> list[str]:
    """What is wrong with the recorder's parameters, each naming the parameter and its value (empty: nothing).

    Declared with dynamic typing and checked here: with static types ``-p duration_s:=5`` (an integer) or
    ``-p topics:=[]`` ended in an rclpy traceback, and a ``discovery_period_s`` of 0 spun a core, NaN failed
    without a name, a negative one dumped rcl's traceback after the bag folder was created."""

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    problems = []
    if not isinstance(p["output"], str):
        problems.append(f"output: must be a folder name (a string), got {shown(p['output'])}")
    topics = p["topics"]
    if not topics:
        problems.append("topics: nothing to record")
    elif not isinstance(topics, (list, tuple)) or not all(isinstance(t, str) for t in topics):
        problems.append(f"topics: must be a list of topic names, got {shown(topics)}")
    if refusal := duration_refusal(p["duration_s"], "stopped"):
        problems.append(f"duration_s: {refusal}")
    period = p["discovery_period_s"]
    if not (number(period) and 1e-3 <= period <= MAX_SECONDS):
        problems.append(
            f"discovery_period_s: must be a number of seconds in [0.001, {MAX_SECONDS:g}], got {shown(period)}"
        )
    if problem := qos_depth_problem(p["qos_depth"]):
        problems.append(f"qos_depth: {problem}")
    if not isinstance(p["compression"], bool):
        problems.append(f"compression: must be true or false (a boolean), got {shown(p['compression'])}")
    size = p["max_bag_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        problems.append(f"max_bag_size: must be a whole number of bytes, 0 or more (0: no split), got {shown(size)}")
    elif refusal := split_limit_refusal("max_bag_size", size):  # -p max_bag_size:=4: a file per message
        problems.append(f"max_bag_size: {refusal}")
    split_s = p["max_bag_duration"]
    if not (number(split_s) and 0 <= split_s <= MAX_SECONDS):
        problems.append(
            f"max_bag_duration: must be a number of seconds in [0, {MAX_SECONDS:g}] (0: no split), got {shown(split_s)}"
        )
    elif refusal := split_limit_refusal("max_bag_duration", split_s):
        problems.append(f"max_bag_duration: {refusal}")
    if not isinstance(p["repeat_latched"], bool):
        problems.append(f"repeat_latched: must be true or false (a boolean), got {shown(p['repeat_latched'])}")
    elif p["repeat_latched"] and not (p["max_bag_size"] or p["max_bag_duration"]):
        problems.append("repeat_latched: only for a split bag (max_bag_size or max_bag_duration)")
    return problems


def default_bag_name() -> str:
    """``rosbag2_<date>-<time>`` of now, as ``ros2 bag record`` names its bags."""
    return datetime.now().strftime("rosbag2_%Y_%m_%d-%H_%M_%S")


def subscription_qos(profiles, depth: int):
    """The QoS ``ros2 bag record`` picks for the offered profiles of a topic's publishers."""
    reliable = bool(profiles) and all(p.reliability == ReliabilityPolicy.RELIABLE for p in profiles)
    latched = bool(profiles) and all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in profiles)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=int(depth),
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


def _remove_empty_bag(folder: Path) -> bool:
    """Remove the folder of a bag that holds no message (its writer's files alone: .mcap, metadata.yaml); whether
    it did. Anything else in it (or a folder that is not one) is left as it is."""
    try:
        entries = list(Path(folder).iterdir())
        if not all(e.is_file() and not e.is_symlink() and e.suffix in (".mcap", ".yaml") for e in entries):
            return False
        for entry in entries:
            entry.unlink()
        Path(folder).rmdir()
    except OSError:
        return False
    return True


class BagRecorderNode(Node):
    """Records ``topics`` into the bag ``output`` (see the module docstring)."""

    def __init__(
        self,
        name: str = "bag_recorder",
        parameter_overrides: dict | None = None,
        duration_name: str = "duration_s",
        **kwargs,
    ):
        """``duration_name``: what the user set the duration with, named in what the node says about it (the
        parameter; `liquid-control record` passes its option, --duration)."""
        super().__init__(name, **kwargs)
        self.duration_name = duration_name
        declare_node_parameters(self, RECORDER_PARAMETERS)
        p = {n: parameter_value(self.get_parameter(n).value) for n in RECORDER_PARAMETERS}
        p.update(parameter_overrides or {})
        problems = recorder_parameter_problems(p)
        if problems:  # before the bag folder is made: a corrected rerun into the same output is not refused
            raise ValueError("; ".join(problems))
        self.p = p
        topics = [self._resolved(t) for t in p["topics"]]
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.output = Path(user_path(p["output"]) or default_bag_name())  # ~ expanded: no shell did in -p output:=~/..
        self.writer = BagWriter(
            self.output,
            compression=bool(p["compression"]),
            custom_data={"liquid_control.source": "recorder"},
            max_bag_size=p["max_bag_size"],
            max_bag_duration=p["max_bag_duration"],
            repeat_latched=p["repeat_latched"],
        )
        self.pending = list(dict.fromkeys(topics))
        self.counts = {t: 0 for t in self.pending}
        # messages lost before they reached us (a best-effort camera's fragments dropped, a burst past qos_depth):
        # not in the bag, so said while recording (at most every LOST_WARNING_PERIOD_S) and at the end. Two lower
        # bounds of one number, the larger kept: what DDS reports (message_lost event) and the gaps in each
        # publisher's sequence numbers (Fast DDS reports none of a keep-last history overrun: a replay lost 398 of
        # 3415 commands at 1 kHz, behind by 0.7 s past the 100 kept, and said nothing)
        self.lost = {t: 0 for t in self.pending}
        self._reported_lost = {t: 0 for t in self.pending}
        self._gaps = {t: 0 for t in self.pending}
        self._last_numbers: dict = {}  # (topic, publisher gid) -> its last message's publication sequence number
        self._subscribed_at = {}
        self._warned_at = {}  # (what, topic) -> when it was last said (lost in transport, dropped by the writer)
        self._lost_unsupported_said = False
        self._recorded_types: dict[str, str] = {}  # topic -> the message type recorded on it
        self._other_types_said: dict[str, set] = {}  # topic -> other types a warning named
        self._recorded_subscriptions = {}
        self._started = None  # first reading of the node clock (with sim time: once /clock has arrived)
        self._created_at = time.monotonic()
        self._clock_wait_said = False
        self.done = threading.Event()
        self.failed = ""  # why recording stopped early (a write failed), else empty
        self.received_until_ns = None  # at a stop signal: messages DDS received after it are not recorded
        self._discover()
        # on the steady clock: a timer on the node clock under use_sim_time waits for /clock, and until a /clock
        # publisher came the recorder subscribed to nothing, saying nothing (before: --use-sim-time on a robot)
        self.create_timer(float(p["discovery_period_s"]), self._discover, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(f"recording {', '.join(self.counts)} into {self.output}")

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """A run-time change (``ros2 param set``) is refused with the reason, as sim_node's and takeover_mux's: the
        recorder reads its parameters at startup (and ``use_sim_time`` would change the log times' clock in the
        middle of the bag); before, any value was accepted and ignored. Setting the value in use is fine."""
        return refuse_startup_parameter_changes(
            self,
            parameters,
            "restart the recorder with the new value (the bag goes on with the values it started with)",
        )

    def _resolved(self, topic) -> str:
        """The full name of ``topic``, or a ValueError naming it (rclpy raises a bare RCLError)."""
        try:
            return self.resolve_topic_name(str(topic))
        except RCLError as exc:
            reason = str(exc).split(", at ")[0].removeprefix("failed to resolve name: ")
            raise ValueError(f"topics: {topic!r} is not a valid topic name ({reason})") from None

    def _discover(self):
        if self.failed:  # recording stopped: no new topics into a bag that cannot be written
            return
        for topic in list(self.pending):
            infos = self.get_publishers_info_by_topic(topic)
            if not infos:
                continue
            msgtype = infos[0].topic_type
            profiles = [i.qos_profile for i in infos]
            try:
                self.writer.add_topic(topic, msgtype, profiles)
                cls = message_class(msgtype)
            except BagError as exc:
                self.get_logger().error(f"not recording {topic}: {exc}")
                self.pending.remove(topic)
                continue
            qos = subscription_qos(profiles, self.p["qos_depth"])
            self._subscribed_at[topic] = time.monotonic()
            self._recorded_subscriptions[topic] = self._subscribe(cls, topic, qos)
            self._recorded_types[topic] = msgtype
            self.pending.remove(topic)
            self.get_logger().info(
                f"subscribed {topic} ({msgtype}, {qos.reliability.name.lower()}, {len(infos)} publisher(s))"
            )
        self._say_other_types()
        now = self.get_clock().now().nanoseconds
        if self._started is None and now > 0:
            self._started = now
        if now == 0:  # use_sim_time before any /clock (the wall clock is never 0)
            self._say_no_clock()
        duration = float(self.p["duration_s"])
        if duration > 0 and self._started is not None and now - self._started >= duration * 1e9:
            self.done.set()

    def _say_no_clock(self):
        """Before: `liquid-control record --use-sim-time --duration 10` where nothing published /clock ran on
        without a word, never ending: its duration counts node-clock time, which stays 0 until /clock comes."""
        if self._clock_wait_said or time.monotonic() - self._created_at < CLOCK_WAIT_WARNING_S:
            return
        self._clock_wait_said = True
        self.get_logger().warning(
            f"use_sim_time is set, but the node clock still reads 0 after {CLOCK_WAIT_WARNING_S:g} s (no /clock "
            "message has come, or a paused simulator publishes 0): messages are logged at time 0"
            + (f" and {self.duration_name} does not start counting" if float(self.p["duration_s"]) > 0 else "")
            + " until it moves (is the simulator publishing /clock? without use_sim_time, the wall clock)"
        )

    def _on_message(self, topic: str, data: bytes, info: dict | None = None):
        if self.writer.closed or self.failed:
            return
        if self.received_until_ns is not None and (info or {}).get("received_timestamp", 0) > self.received_until_ns:
            return  # received after the stop signal (take_delivered): not the recording's
        gid = (info or {}).get("publisher_gid") or {}
        self._count_gap(topic, gid.get("data"), (info or {}).get("publication_sequence_number"))
        try:  # the publisher: repeat_latched repeats each one's last message of a latched topic (as DDS delivers)
            kept = self.writer.write(topic, self.get_clock().now().nanoseconds, data, publisher=gid.get("data"))
        except (OSError, BagError) as exc:  # a full disk, a removed folder: stop, say what and where
            written = sum(self.counts.values())
            # the messages a failed write cut off with it (the chunk being written, kept in memory until it was
            # full: seconds of recording) are not in the bag: before, they were said written
            cut, unwritten = sum(self.writer.cut.values()), sum(self.writer.unwritten.values())
            lost = f", {cut} of them lost with it (the bag holds {written - unwritten})" if cut else ""
            self.failed = (
                f"{self.output}: recording stopped, writing a {topic} message failed after {written}{lost} ({exc})"
            )
            self.get_logger().error(self.failed)
            self.done.set()
            return
        if kept:
            self.counts[topic] += 1
        else:  # the writer behind a disk slower than the recording (BagWriter.dropped counts them)
            self._on_dropped(topic)

    def _on_dropped(self, topic: str) -> None:
        """The writer dropped a message of ``topic``, behind a disk slower than the recording: a warning with the
        count, at most every LOST_WARNING_PERIOD_S per topic (before, the callback waited and DDS dropped them
        without a word: 1,555 of 3,000 with 200 kB files and 0.5 s fsyncs)."""
        self._warn_throttled("dropped", topic, self.dropped_summary)

    def dropped_summary(self, topic: str) -> str:
        """``/camera/image_raw: 523 messages dropped by the recorder, 1200 recorded: the disk is slower ...``."""
        return (
            f"{topic}: {counted(self.writer.dropped.get(topic, 0), 'message')} dropped by the recorder, "
            f"{self.counts[topic]} recorded: the disk is slower than the recording (a finished file was still being "
            f"written to it when the next one was full, and the {BEHIND_CACHE_BYTES >> 20} MiB the recorder keeps "
            "meanwhile were full)"
        )

    def _say_other_types(self) -> None:
        """Warn, once per topic and type, of a publisher of another message type on a recorded topic: ROS never
        delivers its messages to the subscription of the type recorded, so before they were left out silently."""
        for topic, recorded in self._recorded_types.items():
            said = self._other_types_said.setdefault(topic, set())
            others = {i.topic_type for i in self.get_publishers_info_by_topic(topic)} - {recorded} - said
            for other in sorted(others):
                said.add(other)
                self.get_logger().warning(
                    f"{topic}: a publisher of {other} is not recorded: the bag records {recorded} on this topic, and "
                    "messages of another type never reach that subscription; give one of them another topic name"
                )

    def _subscribe(self, cls, topic: str, qos):
        """A raw subscription that also counts the messages DDS reports lost, where the middleware reports them
        (one that does not, e.g. some rmw implementations, records without the count: said once, not a failure)."""
        record = WithMessageInfo(functools.partial(self._on_message, topic))  # any executor (WithMessageInfo)
        events = SubscriptionEventCallbacks(message_lost=lambda info, topic=topic: self._on_lost(topic, info))
        try:
            return self.create_subscription(cls, topic, record, qos, raw=True, event_callbacks=events)
        except UnsupportedEventTypeError:
            if not self._lost_unsupported_said:
                self._lost_unsupported_said = True
                self.get_logger().info(
                    "this ROS middleware does not report messages lost in transport: a loss (a best-effort camera "
                    "over a saturated link) shows only in the counts recorded"
                )
            return self.create_subscription(cls, topic, record, qos, raw=True)

    def _on_lost(self, topic: str, info) -> None:
        """DDS lost messages of ``topic`` (``info.total_count`` so far): a warning with what was received and the
        rate that reached the bag, at most every LOST_WARNING_PERIOD_S per topic."""
        self._reported_lost[topic] = max(self._reported_lost[topic], int(info.total_count))
        self.lost[topic] = max(self._reported_lost[topic], self._gaps[topic])
        self._warn_throttled("lost", topic, self.lost_summary)

    def _count_gap(self, topic: str, publisher, number) -> None:
        """Messages of ``publisher`` numbered between its last one received and this one (``number``) never reached
        the recorder: counted into ``lost`` as :meth:`_on_lost` does. Nothing where the middleware gives no number
        or publisher id; a publisher's first message counts nothing (what it sent before was not the recording's)."""
        if number is None or publisher is None:
            return
        key = (topic, publisher)
        last = self._last_numbers.get(key)
        self._last_numbers[key] = number if last is None else max(last, number)  # one taken late is no gap
        if last is not None and number > last + 1:
            self._gaps[topic] += number - last - 1
            self.lost[topic] = max(self._reported_lost[topic], self._gaps[topic])
            self._warn_throttled("lost", topic, self.lost_summary)

    def _warn_throttled(self, what: str, topic: str, summary) -> None:
        """``summary(topic)`` + ': the bag misses them' as a warning, at most every LOST_WARNING_PERIOD_S per kind
        and topic."""
        now = time.monotonic()
        if now - self._warned_at.get((what, topic), -math.inf) < LOST_WARNING_PERIOD_S:
            return
        self._warned_at[(what, topic)] = now
        self.get_logger().warning(f"{summary(topic)}: the bag misses them")

    def lost_summary(self, topic: str) -> str:
        """``/camera/image_raw: 268 messages lost in transport, 30 received (3.0 Hz)``."""
        elapsed = time.monotonic() - self._subscribed_at.get(topic, time.monotonic())
        rate = f" ({self.counts[topic] / elapsed:.1f} Hz)" if elapsed > 0 else ""
        return f"{topic}: {counted(self.lost[topic], 'message')} lost in transport, {self.counts[topic]} received{rate}"

    def close(self) -> Path:
        """Finish the bag (call once the executor no longer runs this node's callbacks); the counts are logged
        after, also when the bag cannot be finished, so the last summary says what it holds and how to get it back:
        the messages the writer took but did not write (those held back that ``close`` could not write, a latched
        one replaced by its publisher's next, those a failed write cut off: ``BagWriter.unwritten``) are taken off
        ``counts`` and said dropped, or lost with that write (a full disk: ``BagWriter.cut``), naming its reason."""
        for sub in self._recorded_subscriptions.values():
            self.destroy_subscription(sub)
        self._recorded_subscriptions = {}
        try:
            path, failure = self.writer.close(), None
        except BagError as exc:
            path, failure = self.output, exc
        for topic, n in self.writer.unwritten.items():
            self.counts[topic] -= n
        self.get_logger().info(f"recorded into {self.output}: {named_counts(self.counts)}")
        for topic in (t for t, n in self.lost.items() if n):
            self.get_logger().warning(
                f"{self.lost_summary(topic)}: the bag misses them (best-effort publisher over a lossy or saturated "
                f"link, or the recorder behind by more than the {kept_by_dds(self.p['qos_depth'])} messages its "
                "qos_depth keeps)"
            )
        for topic in (t for t in self.counts if self.writer.dropped.get(t)):
            self.get_logger().warning(
                f"{self.dropped_summary(topic)}: the bag has gaps there (a faster disk, or less to write: fewer or "
                "smaller messages, --compress)"
            )
        for topic in (t for t in self.counts if self.writer.cut.get(t)):
            self.get_logger().warning(
                f"{topic}: {counted(self.writer.cut[topic], 'message')} received not in the bag, {self.counts[topic]} "
                f"recorded: lost with the write that failed ({self.writer.write_failure}), in the part of the bag "
                "being written (the chunk the recorder keeps in memory until it is about 1 MiB)"
            )
        if failure is not None:
            kept = sum(self.counts.values())  # what the bag holds
            recover = f"liquid-control record --recover {shlex.quote(str(self.output))} -o <new bag>"
            if kept:
                hint = f"{recover} keeps the {counted(kept, 'message')} written"
            else:  # a bag of nothing blocked the rerun ('already exists; a bag is never overwritten')
                removed = _remove_empty_bag(self.output)
                hint = "the bag holds no message: nothing to recover" + (f"; {self.output} removed" if removed else "")
            raise BagError(f"{failure}; {hint}" + (f" (first: {self.failed})" if self.failed else "")) from None
        return path


def main(args=None) -> int:
    """Entry point of the ``bag_recorder`` executable (launch files)."""
    return run_until_signal(
        "bag_recorder",
        BagRecorderNode,
        refused=(BagError, ValueError),
        finish=lambda node: node.close(),
        done=lambda node: node.done.is_set(),
        failed=lambda node: node.failed,
        args=args,
        at_signal=take_delivered,
    )


def take_delivered(
    node: BagRecorderNode, executor, signalled_ns: int | None = None, limit_s: float = TAKE_DELIVERED_LIMIT_S
) -> None:
    """Record the messages DDS had received when the stop signal came (``signalled_ns``, system clock; default now)
    and the recorder had not taken yet (a recorder behind on a loaded machine left the end of the run it was asked
    to record out of the bag); those received after it are not the recording's and are left out. Spins without
    waiting until a few turns take none (a turn may run a timer or take a later message), at most ``limit_s``; a
    second signal 0.5 s or more after the first (:func:`delivery.stop_waiting`) ends it at once."""
    from liquid_control.ros.delivery import waits_ended

    def taken() -> int:  # recorded, or dropped by a writer behind its disk
        return sum(node.counts.values()) + sum(node.writer.dropped.values())

    node.received_until_ns = time.time_ns() if signalled_ns is None else signalled_ns
    end, idle = time.monotonic() + limit_s, 0
    while idle < 3 and time.monotonic() < end and not (node.done.is_set() or node.failed):
        if waits_ended() or not executor.context.ok():
            return
        before = taken()
        executor.spin_once(timeout_sec=0.0)
        idle = idle + 1 if taken() == before else 0


# ------------------------------------------------------------------------------------------------ CLI
EPILOG = """\
examples:
  liquid-control record -o bags/run1                                   # the rover policy's topics
  liquid-control record -o bags/run1 /camera/image_raw /imu/data /cmd_vel --duration 300
  liquid-control record -o bags/expert --expert --episodes 20 --seed 100 [--noise-std 0.3]
  liquid-control record --info bags/run1
  liquid-control record --recover bags/killed -o bags/killed_fixed

A bag is a rosbag2 folder (metadata.yaml + one .mcap file, or <bag>_0.mcap, <bag>_1.mcap ... with
--max-bag-size/--max-bag-duration) that `ros2 bag` and Foxglove open.
What to record and for how long: docs/real_robot.md.
"""


SIZE_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
SIZE_UNITS.update({f"{unit}iB": 1024 ** (i + 1) for i, unit in enumerate("KMGT")})


def bag_size(text: str) -> int:
    """``--max-bag-size``: bytes, ``500M``, ``4G`` (powers of 1000), ``2GiB`` (of 1024), at least 1MiB; 0: no
    split."""
    number = text.strip()
    unit = number.lstrip("0123456789.")
    number = number[: len(number) - len(unit)]
    factor = SIZE_UNITS.get(unit.strip().upper().replace("IB", "iB"))
    try:
        size = float(number) * factor
    except (TypeError, ValueError):
        size = None
    if size is None or not math.isfinite(size):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: bytes, or a number with K, M, G, T (powers of 1000) or KiB, MiB, GiB, TiB "
            "(e.g. 4G, 500M; 0: no split)"
        )
    refusal = split_limit_refusal("max_bag_size", int(size))
    if refusal:  # argparse names the option
        raise argparse.ArgumentTypeError(f"{text!r}: {refusal}")
    return int(size)


def bag_duration(text: str) -> float:
    """``--max-bag-duration``: seconds, at least 1 (0: no split)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (0 <= seconds <= MAX_SECONDS):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds in [0, {MAX_SECONDS:g}] (0: no split)")
    refusal = split_limit_refusal("max_bag_duration", seconds)
    if refusal:
        raise argparse.ArgumentTypeError(f"{text!r}: {refusal}")
    return seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``liquid-control record``."""
    from liquid_control.bags.expert import ROVER, Takeover
    from liquid_control.conventions.sim_worlds import WORLDS
    from sim_envs.experts import SAFETY_MARGIN

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "topics",
        nargs="*",
        help="topics to record, replacing the defaults (every input topic of --node-params's policy and its command "
        "topic)",
    )
    parser.add_argument(
        "-o", "--output", default="", type=user_path, help="bag folder to create (default rosbag2_<date>-<time>)"
    )
    parser.add_argument(
        "--node-params",
        default=None,
        type=user_path,
        help="policy_node parameter file whose inputs (the topic parameters of what its policy reads: camera_topic, "
        "imu_topic, wheels_topic, target_topic) and command_topic are recorded by default "
        "(default: config/rover_policy.yaml)",
    )
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to record (0: until Ctrl-C)")
    parser.add_argument("--use-sim-time", action="store_true", help="log times from /clock")
    parser.add_argument("--compress", action="store_true", help="zstd-compress the MCAP chunks")
    parser.add_argument(
        "--max-bag-size",
        type=bag_size,
        default=0,
        metavar="SIZE",
        help="split the bag into files <bag>_0.mcap, <bag>_1.mcap ... of about SIZE: bytes, or with K, M, G, T "
        "(powers of 1000: 4G fits a FAT32 stick) or KiB, MiB, GiB, TiB; at least 1MiB (0: no split)",
    )
    parser.add_argument(
        "--max-bag-duration",
        type=bag_duration,
        default=0.0,
        metavar="SECONDS",
        help="split the bag into files of SECONDS of recording each, at least 1 (0: no split)",
    )
    parser.add_argument(
        "--repeat-latched",
        action="store_true",
        help="with --max-bag-size/--max-bag-duration: start each file with the last messages of the latched "
        "(transient local) topics, e.g. /tf_static, /robot_description, so that each opens alone with them "
        "(as ROS 1's rosbag --repeat-latched; training, eval, replay and --info read each once)",
    )
    mode = parser.add_argument_group("other modes")
    mode.add_argument(
        "--info",
        metavar="BAG",
        nargs="+",
        type=user_path,
        help="print what bags hold (topics, types, counts, QoS) and exit; paths or quoted globs ('bags/day1/*')",
    )
    mode.add_argument(
        "--recover", metavar="BAG", type=user_path, help="rewrite what a killed recorder left into --output"
    )
    mode.add_argument(
        "--expert",
        action="store_true",
        help="record expert episodes of a simulated world (no DDS): one bag per episode under --output",
    )
    sim = parser.add_argument_group("--expert")
    sim.add_argument(
        "--world",
        default=ROVER,
        help=f"the world its privileged expert drives, written as sim_node publishes it: {', '.join(WORLDS)} "
        f"(default {ROVER}; the options of noise, margin and --policy are the rover's)",
    )
    sim.add_argument("--episodes", type=int, default=20, help="episodes (bags)")
    sim.add_argument("--seed", type=int, default=100, help="episode k uses seed SEED + k")
    sim.add_argument("--shift", default="", help="world shift (default: the training distribution)")
    sim.add_argument(
        "--render-size",
        type=int,
        default=None,
        help="camera image height, and its width unless --render-width (pixels; default: the world's, rover 64)",
    )
    sim.add_argument(
        "--render-width",
        type=int,
        default=None,
        help="camera image width where not square (pixels; needs --render-size)",
    )
    sim.add_argument("--time-limit", type=float, default=0.0, help="episode time limit (s; 0: the world's)")
    sim.add_argument(
        "--noise-std", type=float, default=0.0, help="noise injected into the executed command (action units)"
    )
    sim.add_argument("--noise-correlation", type=float, default=0.0, help="correlation of that noise per update")
    sim.add_argument(
        "--burst-rate", type=float, default=0.0, help="swerves per second: random angular command for --burst-s"
    )
    sim.add_argument("--burst-s", type=float, default=0.6, help="duration of a swerve (s)")
    sim.add_argument(
        "--expert-margin",
        type=float,
        default=None,
        help="clearance (m) the expert keeps from obstacles beyond the rover's radius (default: the training "
        f"expert's {SAFETY_MARGIN}; a wider berth leaves the learned policy room for its errors)",
    )
    sim.add_argument(
        "--policy",
        default=None,
        type=user_path,
        help="a trained rover policy (.pt/.onnx) drives instead, the expert supervising it at each of the policy's "
        "updates (every message of its update sensors, observation.update_on, as liquid-control sim): it takes "
        "over where the policy's command departs from its own and only its commands are recorded as labels "
        "(/cmd_vel; the base's command on /base/cmd_vel). The deploy-record-retrain round, docs/real_robot.md",
    )
    sim.add_argument(
        "--takeover-threshold",
        type=float,
        default=None,
        help="with --policy: the operator takes over where the commands differ by more than this (action units; "
        f"default {Takeover.threshold})",
    )
    sim.add_argument(
        "--takeover-hold-s",
        type=float,
        default=None,
        help="with --policy: the operator keeps control at least this long (s), then hands back when they agree "
        f"(default {Takeover.hold_s})",
    )
    sim.add_argument(
        "--shadow",
        action="store_true",
        help="with --policy: the operator commands along at every update (shadow mode) and every update is "
        "labelled, not only those it drives (DAgger's labels; who drives stays the takeover rule's)",
    )
    sim.add_argument(
        "--operator-share",
        type=float,
        default=None,
        metavar="BETA",
        help="with --policy: the operator also drives each update with this probability, at random (DAgger's "
        "mixture policy, its beta; 0..1, default 0: only the takeover rule decides)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (--expert: a line per episode instead)"
    )
    # what the --expert options default to: one given without --expert is refused, not ignored
    parser.set_defaults(expert_defaults={dest: parser.get_default(dest) for dest in EXPERT_OPTIONS})
    parser.set_defaults(topic_defaults={dest: parser.get_default(dest) for dest in TOPIC_OPTIONS})


# the options of recording topics over DDS, which --expert and --recover do not use: given with them, refused
TOPIC_OPTIONS = (
    "node_params",
    "duration",
    "use_sim_time",
    "compress",
    "max_bag_size",
    "max_bag_duration",
    "repeat_latched",
)

EXPERT_OPTIONS = (
    "world",
    "episodes",
    "seed",
    "shift",
    "render_size",
    "render_width",
    "time_limit",
    "noise_std",
    "noise_correlation",
    "burst_rate",
    "burst_s",
    "expert_margin",
)


def default_topics(params_file: str | None = None) -> list[str]:
    """What to record for a policy: every input topic its policy_node subscribes to, then its command topic (the
    labels), from its parameter file (default: config/rover_policy.yaml), so that the bag trains that policy.
    The inputs are those of the policy the file names (``ObservationSpec.sensors``, read as the sim graph reads
    them), each at its topic parameter (``SENSOR_TYPES``: the camera, IMU, wheel encoders, the balancer's
    target), the camera's ``camera_info`` beside its image (``train --bag`` records the field of view it gives, which
    ``policy_node`` compares the robot's camera with); a policy that cannot be read (not trained yet) records every
    input topic parameter, with a note.
    Names as the file gives them: the recorder resolves a relative one in its own namespace, as the policy node
    does in its (a recorder launched under /robot1 records /robot1/camera/image_raw, the topic its node reads)."""
    from liquid_control.bags.messages import SENSOR_TYPES
    from liquid_control.bags.stream import default_node_parameters_file, load_node_parameters
    from liquid_control.paths import resolve_policy_file
    from liquid_control.ros.graph import policy_world_parameters

    params_file = params_file or default_node_parameters_file("LiquidRover-v0")
    values = load_node_parameters(params_file)
    policy, inputs = values["policy"], ""
    why = f"its policy {policy!r} cannot be read" if policy else "its parameter 'policy' is empty"
    if policy:
        try:
            path = resolve_policy_file(policy)
            # a .pt present only as its .onnx export (a robot without torch) runs that export, as the node does
            path = path if path.exists() else path.with_suffix(".onnx")
            inputs = policy_world_parameters(path, refuse=True).get("policy_inputs", "")
        except (OSError, ImportError) as exc:  # no such file, a folder; a .pt without torch installed
            why = str(exc)
        except ValueError as exc:  # why the policy node would not load it either (was only 'cannot be read')
            why = f"its policy cannot be read: {exc}"
    sensors = inputs.split(",") if inputs else list(SENSOR_TYPES)
    if not inputs:
        topic_parameters = ", ".join(SENSOR_TYPES[s][1] for s in sensors)
        print(
            f"note: {params_file}: {why}; recording every input topic parameter ({topic_parameters})", file=sys.stderr
        )
    unknown = [s for s in sensors if s not in SENSOR_TYPES]
    if unknown:
        raise ValueError(f"{params_file}: the policy {policy!r} reads {', '.join(unknown)}, which no topic carries")
    topics = []
    for name in [SENSOR_TYPES[s][1] for s in sensors] + ["command_topic"]:
        topics.append(str(values[name]))
        if name == "camera_topic":  # its camera_info: train --bag records the camera's field of view from it
            topics.append(camera_info_topic(str(values[name])))
    return list(dict.fromkeys(topics))


def record_graph(
    output: str = "",
    params_file: str = "",
    topics=(),
    use_sim_time: bool = False,
    duration_s: float = 0.0,
    max_bag_size: int = 0,
    max_bag_duration: float = 0.0,
    repeat_latched: bool = False,
):
    """The recorder node for launch/record.launch.py (one description, as liquid_control.ros.graph)."""
    from liquid_control.ros.graph import NodeDescription

    params_file = user_path(params_file)  # ~ expanded: no shell expands it in a launch argument
    if params_file and not Path(params_file).is_file():
        raise FileNotFoundError(f"parameter file {params_file} not found")
    parameters = {
        "output": output,
        "topics": list(topics) or default_topics(params_file or None),
        "duration_s": float(duration_s),
        "use_sim_time": bool(use_sim_time),
        "max_bag_size": int(max_bag_size),
        "max_bag_duration": float(max_bag_duration),
        "repeat_latched": bool(repeat_latched),
    }
    return [NodeDescription("bag_recorder", "bag_recorder", (), parameters)]


def bag_info(path: str) -> str:
    """A human summary of a bag, like ``ros2 bag info``: its counts; for a truncated bag with a metadata.yaml
    (``ros2 bag info`` shows only that file's) both what that file says was recorded and what is readable up to
    the break (what training, eval and replay get with --allow-truncated)."""
    with BagReader(path, allow_truncated=True) as reader:
        recorded = metadata_counts(reader.path) if reader.salvaged else None

        def readable_of(readable: int, in_metadata: int | None) -> str:
            if in_metadata is None:
                return counted(readable, "message")
            return f"{counted(in_metadata, 'message')} recorded (metadata.yaml), {readable} readable up to the break"

        total, by_topic = recorded or (None, {})
        count = str(reader.message_count) if total is None else readable_of(reader.message_count, total)
        lines = [f"bag: {reader.path}", f"duration: {reader.duration_s:.3f} s, messages: {count}"]
        if reader.salvaged:
            lines.append(f"TRUNCATED: {reader.salvage_note}")
        for topic, info in sorted(reader.topics.items()):
            qos = ", ".join(f"{q['reliability']}/{q['durability']}/depth {q['depth']}" for q in map(qos_dict, info.qos))
            kinds = " and ".join(f"{t} ({counted(n, 'message')})" for t, n in info.msgtypes.items())
            kinds = info.msgtype if len(info.msgtypes) == 1 else f"{kinds}: one topic, two or more types"
            lines.append(f"  {topic}: {kinds}, {readable_of(info.count, by_topic.get(topic))}, offered QoS [{qos}]")
    return "\n".join(map(printable, lines))


def printable(text: str) -> str:
    r"""``text`` with every character a terminal would act on written as its escape (``\x1b``, ``\n``,
    ``\u202e``): a bag's topic and type names come from whoever wrote it, and ROS names hold none of these, so a
    name with an escape sequence (clearing the screen, retitling the window) or a line break (a forged line) is
    shown as what it is."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def command_recorder_node(context, overrides: dict, cli_args: list[str], cls=None) -> "BagRecorderNode":
    """The recorder node of `liquid-control record` (``cls``: a subclass, for tests), which names the options the
    user typed (--duration), not the node's parameters."""
    return (cls or BagRecorderNode)(
        context=context, parameter_overrides=overrides, duration_name="--duration", cli_args=cli_args
    )


def _record_graph(args, topics: list[str]) -> int:
    from rclpy.signals import SignalHandlerOptions

    context = rclpy.Context()
    cli_args = ["--ros-args", "-p", f"use_sim_time:={'true' if args.use_sim_time else 'false'}"]
    if not init_ros(
        "liquid-control record", context=context, args=cli_args, signal_handler_options=SignalHandlerOptions.NO
    ):
        return 2  # refused before anything was recorded, as the log-folder check before it
    # Our own handlers: SIGINT and SIGTERM finish the bag, also where the shell started us with SIGINT ignored
    # (`liquid-control record ... &` in a script) or a supervisor stops us with SIGTERM.
    stop = threading.Event()
    previous = stop_on_signals(stop)  # a second signal also ends take_delivered
    overrides = {
        "output": args.output,
        "topics": topics,
        "duration_s": args.duration,
        "compression": args.compress,
        "max_bag_size": args.max_bag_size,
        "max_bag_duration": args.max_bag_duration,
        "repeat_latched": args.repeat_latched,
    }
    try:
        node = command_recorder_node(context, overrides, cli_args)
    except BaseException:
        context.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        raise
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    # resolved names; on stderr, as progress: stdout holds only the result (`bag=$(liquid-control record ...)`)
    print(f"recording {', '.join(node.counts)} -> {node.output} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        while context.ok() and not stop.is_set() and not node.done.is_set():
            executor.spin_once(timeout_sec=0.05)
        if stop.is_set():
            take_delivered(node, executor)
    finally:
        executor.remove_node(node)
        path = node.close()
        node.destroy_node()
        executor.shutdown()
        context.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if node.failed:
        raise BagError(f"{node.failed}; the bag {path} holds what came before")
    print(f"wrote {path}: {named_counts(node.counts)}")
    missing = [t for t, n in node.counts.items() if n == 0]
    if missing:
        print(f"liquid-control record: warning: nothing received on {', '.join(missing)}", file=sys.stderr)
    return 0


def run(args) -> int:
    """Record topics or expert episodes, or show or recover a bag; exit code 2 for a bad bag or argument."""
    try:
        topic_defaults = getattr(args, "topic_defaults", {})
        ignored = [f"--{k.replace('_', '-')}" for k in topic_defaults if getattr(args, k) != topic_defaults[k]]
        if args.topics:
            ignored.insert(0, "topics")
        if ignored and (args.expert or args.recover or args.info):
            mode = "--expert episodes" if args.expert else "--recover" if args.recover else "--info"
            raise ValueError(f"{', '.join(ignored)}: only for recording topics over DDS ({mode} would ignore them)")
        if args.info:
            from liquid_control.bags.io import expand_bags

            print("\n\n".join(bag_info(bag) for bag in expand_bags(args.info, "--info", repeats=True)))
            return 0
        if args.recover:
            if not args.output:
                raise ValueError("--recover needs -o/--output for the new bag")
            from liquid_control.bags import recover

            path, kept, note = recover(args.recover, args.output)
            print(f"recovered {counted(kept, 'message')} of {args.recover} into {path}")
            # where the source broke off (a cut record or a chunk failing its CRC check) and what was not read
            print(f"  {note}" if note else "  the source was complete: nothing was left out")
            return 0
        if args.policy and not args.expert:
            raise ValueError("--policy drives simulated episodes under the expert's supervision: it needs --expert")
        defaults = getattr(args, "expert_defaults", {})
        given = [k for k in EXPERT_OPTIONS if k in defaults and getattr(args, k) != defaults[k]]
        if given and not args.expert:
            options = ", ".join("--" + k.replace("_", "-") for k in given)
            raise ValueError(f"{options}: only for --expert episodes (recording topics over DDS ignores them)")
        takeover = {
            "threshold": args.takeover_threshold,
            "hold_s": args.takeover_hold_s,
            "operator_share": args.operator_share,
        }
        takeover = {k: v for k, v in takeover.items() if v is not None}  # the rest: Takeover's defaults
        if args.shadow:
            takeover["shadow"] = True
        if takeover and not args.policy:
            raise ValueError(
                "--takeover-threshold, --takeover-hold-s, --shadow and --operator-share supervise a driving policy: "
                "they need --policy"
            )
        if args.expert:
            from liquid_control.bags.expert import ExpertNoise, Takeover, record_expert_episodes

            if args.render_width is not None and args.render_size is None:
                raise ValueError("--render-width needs --render-size, the camera's height")
            if args.render_width is not None and not (args.render_width == 0 or 8 <= args.render_width <= 1024):
                raise ValueError(
                    f"--render-width must be 0 (square) or between 8 and 1024 pixels, got {args.render_width}"
                )

            out = args.output or default_bag_name()
            t0 = time.monotonic()
            # SIGINT/SIGTERM: the episode being recorded is removed, the finished bags stay complete. A flag, not
            # KeyboardInterrupt from the handler: raised inside MuJoCo's ctypes calls it became a ctypes.ArgumentError
            stop, received = threading.Event(), []

            def on_signal(signum, _frame):
                received.append(signum)
                stop.set()

            previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                results = record_expert_episodes(
                    out,
                    range(args.seed, args.seed + args.episodes),
                    world=args.world,
                    render_size=args.render_size
                    if not args.render_width  # None or 0: square
                    else (args.render_size, args.render_width),
                    shift=args.shift,
                    time_limit=args.time_limit,
                    noise=ExpertNoise(args.noise_std, args.noise_correlation, args.burst_rate, args.burst_s),
                    margin=args.expert_margin,
                    progress=not args.no_progress,
                    stop=stop,
                    policy=args.policy,
                    takeover=Takeover(**takeover),
                    log=(lambda line: print(line, file=sys.stderr, flush=True)) if args.no_progress else None,
                )
            except KeyboardInterrupt:
                from liquid_control.bags.expert import the_rest
                from liquid_control.bags.recording import existing_episode_seeds

                done = sorted(Path(out).glob("episode_*")) if Path(out).is_dir() else []
                # the episodes are recorded in seed order: the next free seed continues (a rerun as it was refuses
                # the seeds already recorded)
                recorded, end = existing_episode_seeds(out), args.seed + args.episodes
                following = next((s for s in range(args.seed, end) if s not in recorded), end)
                rest = f"; {the_rest(out, following, end - following)}" if following < end else ""
                print(
                    f"liquid-control record: interrupted; the episode being recorded was discarded, {out} holds "
                    f"{len(done)} complete bag(s){rest}",
                    file=sys.stderr,
                )
                return 128 + (received[0] if received else signal.SIGINT)  # 130 / 143, as liquid-control sim
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            wins = sum(r["success"] for r in results)
            seconds = sum(r["sim_time"] for r in results)
            if args.policy:
                took = sum(r["operator_updates"] for r in results) / max(1, sum(r["updates"] for r in results))
                print(
                    f"recorded {counted(len(results), 'episode')} of {args.policy} driving with expert takeover"
                    f"{' and shadow labels' if args.shadow else ''}"
                    f"{f', operator share {args.operator_share:g}' if args.operator_share else ''} ({seconds:.1f} s "
                    f"of driving, {sum(r['takeovers'] for r in results)} takeovers, the operator drove {took:.0%} of "
                    f"the updates, success {wins}/{len(results)}) into {out} in {time.monotonic() - t0:.1f} s"
                )
                return 0
            print(
                f"recorded {counted(len(results), 'expert episode')} of {args.world} ({seconds:.1f} s of driving, "
                f"expert success {wins}/{len(results)}) into {out} in {time.monotonic() - t0:.1f} s"
            )
            return 0
        # the options the node's parameters come from, refused as the user gave them (the node names its parameters)
        if refusal := duration_refusal(args.duration, "Ctrl-C"):
            raise ValueError(f"--duration: {refusal}")
        if args.repeat_latched and not (args.max_bag_size or args.max_bag_duration):
            raise ValueError("--repeat-latched: only for a split bag (--max-bag-size or --max-bag-duration)")
        # discovery off: the recorder would find no publisher and record nothing; a log folder rcl cannot make
        problem = discovery_problem() or unwritable_log_dir()
        if problem:
            raise ValueError(problem)
        if args.topics and args.node_params is not None:  # it was read for nothing: a session without its inputs
            defaults = " ".join(default_topics(args.node_params))
            raise ValueError(
                f"--node-params {args.node_params} chooses the topics recorded by default, and the topics named "
                f"({' '.join(args.topics)}) replace them: name every topic to record (its defaults: {defaults}), or "
                "leave the topics out"
            )
        return _record_graph(args, list(args.topics) or default_topics(args.node_params))
    except (BagError, ValueError) as exc:
        print(f"liquid-control record: error: {exc}", file=sys.stderr)
        return 2
