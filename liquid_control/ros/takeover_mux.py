"""The takeover mux: on a robot, who drives the base at each update, the policy or its supervising operator.

The simulated rounds (``liquid-control record --expert --policy P``, docs/real_robot.md section 6) decide it with
:class:`liquid_control.bags.expert.Takeover`; this node applies the same rule to a robot's topics, so that a
robot's bags hold what the simulated ones hold (labels on ``cmd_vel``, the executed command on ``base/cmd_vel``):

    policy_node (command_topic:=policy/cmd_vel) --policy/cmd_vel--> takeover_mux --base/cmd_vel--> base driver
    joystick teleop, followed all the time      --cmd_vel---------> (recorded: the labels)

At every policy command (an update) the mux compares it with the operator's latest command, both divided by
``action_scale`` (the policy node's: action units): the operator takes over where they differ by more than
``takeover_threshold``, keeps the base at least ``takeover_hold_s`` seconds and hands back at the first update
where they agree within half the threshold; with ``operator_share`` > 0 the operator also drives each update
with that probability (DAgger's beta, drawn from ``seed``; updates without an operator draw nothing). While the
operator drives, each of its commands goes to the base as it comes.

It is a deadman: the base gets a stop command, never the policy's, when no operator command came within
``operator_timeout_s`` (nobody supervises), and a stop when the one driving falls silent (no policy command within
``policy_timeout_s`` while the policy drives, no operator command while the operator drives) and at shutdown.
Times are the machine's monotonic clock, not the ROS clock: a paused or restarted ``/clock`` must not make a
silent operator look present. Only ``linear.x`` and ``angular.z`` reach the base (the rover's twist), rebuilt
from the checked values (a TwistStamped in ``command_frame_id``, the policy node's, whatever frame the joystick
names); a policy command with NaN/inf is replaced by the operator's (with a warning).

Its three topics must be different as the node resolves them (namespace, remappings): a base on the joystick's
topic would feed the mux its own commands as an operator's, and the policy would drive unsupervised. A publisher
(inputs) or subscriber (the base) of another message type on them is named in one warning: DDS never connects
them, so their commands would silently not arrive. Another publisher on the base's topic is named in a warning too:
the base takes its commands as well, and the mux's stops do not hold it.

At run time (``ros2 param set``) the rule and the deadman may be tuned: ``takeover_threshold``,
``takeover_hold_s``, ``operator_share``, ``operator_timeout_s`` and ``policy_timeout_s`` are checked as at
startup and applied from the next message; any other change (topics, types, ``action_scale``, ``seed``,
``watch_period_s``, ``use_sim_time``) is refused with the reason, as the node reads those at startup.

    ros2 run liquid_control takeover_mux --ros-args -p operator_share:=0.3 -p action_scale:="[1.0, 1.5]"
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m: as the takeover_mux executable, whose checks run before rclpy loads
    from liquid_control.ros.entry import run

    raise SystemExit(run("takeover_mux"))

import math
import re
import time

import numpy as np
from geometry_msgs.msg import Twist, TwistStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from liquid_control.bags.expert import Operator, Takeover
from liquid_control.bags.stream import absolute_topic
from liquid_control.conventions.commands import twist_vector
from liquid_control.conventions.message_types import message_type_name, other_publishers
from liquid_control.conventions.params import (
    camera_info_topic,
    declare_node_parameters,
    frame_id_problem,
    parameter_value,
    per_element,
    same_parameter_value,
    topic_name_problem,
)
from liquid_control.ros.delivery import deliver_stop
from liquid_control.ros.executable import run_until_signal
from liquid_control.shown import shown

MUX_PARAMETERS: dict[str, tuple[object, str]] = {
    "policy_topic": ("policy/cmd_vel", "the policy node's commands (its command_topic remapped here)"),
    "operator_topic": ("cmd_vel", "the operator's commands (joystick teleop), followed all the time: the labels"),
    "output_topic": ("base/cmd_vel", "what the base executes"),
    "command_type": ("twist", "message type of policy_topic and output_topic: twist | twist_stamped"),
    "operator_command_type": ("twist", "message type of operator_topic: twist | twist_stamped"),
    "command_frame_id": (
        "base_link",
        "header.frame_id of every twist_stamped command to the base (the policy node's command_frame_id)",
    ),
    "action_scale": ([1.0], "the policy node's action_scale (one value, or linear and angular): commands / scale"),
    "takeover_threshold": (0.5, "take over where the commands differ by more (action units, largest element)"),
    "takeover_hold_s": (1.0, "keep the base at least this long after a takeover"),
    "operator_share": (0.0, "the operator also drives each update with this probability (DAgger's beta)"),
    "seed": (0, "seed of the operator-share draws"),
    "operator_timeout_s": (0.5, "no operator command for this long: nobody supervises, the base is stopped"),
    "policy_timeout_s": (0.5, "no policy command for this long while the policy drives: the base is stopped"),
    "watch_period_s": (0.05, "how often the silence of the operator and of the policy is checked"),
}
# what may change at run time (checked as at startup, applied from the next message); the rest is read at startup
LIVE_PARAMETERS = ("takeover_threshold", "takeover_hold_s", "operator_share", "operator_timeout_s", "policy_timeout_s")
MESSAGE_TYPES = {"twist": Twist, "twist_stamped": TwistStamped}
MAX_TIMEOUT_S = 5.0  # a longer deadman is no deadman
TYPE_CHECK_PERIOD_S = 1.0  # how often the graph is looked at for publishers/subscribers of another message type
TOPIC_PARAMETERS = ("policy_topic", "operator_topic", "output_topic")
# Takeover's errors name the recording's flags; the node's names are its parameters
TAKEOVER_PARAMETERS = {
    "--takeover-threshold": "takeover_threshold",
    "--takeover-hold-s": "takeover_hold_s",
    "--operator-share": "operator_share",
}


def _twist(msg):
    return msg.twist if isinstance(msg, TwistStamped) else msg


def same_topic_problem(resolved: dict) -> str | None:
    """Why the mux's topics as this node resolves them (namespace, remappings) cannot be used, or None: one that
    is also another's would feed the mux its own output (its commands taken for an operator: no deadman)."""
    if len(set(resolved.values())) == len(resolved):
        return None
    as_resolved = ", ".join(f"{name} -> {topic}" for name, topic in resolved.items())
    return (
        f"{', '.join(resolved)}: must be three different topics, but with this node's namespace and remappings "
        f"they resolve to {as_resolved}"
    )


def checked_settings(p: dict) -> dict:
    """The mux's settings from its parameter values, or ValueError naming every bad parameter."""
    problems = []
    names = TOPIC_PARAMETERS
    for name in names:
        problem = topic_name_problem(p[name])
        if problem:
            problems.append(f"{name}: {problem}")
        elif p[name].startswith("~"):
            problems.append(
                f"{name}: a private name ({shown(p[name])}) is no robot topic; give a plain or absolute name"
            )
    # as resolved in the root namespace: cmd_vel and /cmd_vel are one topic (the mux would read its own output)
    if len({absolute_topic(str(p[n])) for n in names}) < 3:
        problems.append("policy_topic, operator_topic and output_topic: must be three different topics")
    for name in ("command_type", "operator_command_type"):
        if p[name] not in MESSAGE_TYPES:
            problems.append(f"{name}: must be one of {', '.join(MESSAGE_TYPES)}, got {shown(p[name])}")
    problem = frame_id_problem(p["command_frame_id"])
    if problem:
        problems.append(f"command_frame_id: {problem}")
    scale = per_element("action_scale", p["action_scale"], 2, problems, positive=False)
    seconds = {}
    for name in ("operator_timeout_s", "policy_timeout_s", "watch_period_s"):
        value = p[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_TIMEOUT_S:
            problems.append(f"{name}: must be a number of seconds in (0, {MAX_TIMEOUT_S:g}], got {shown(value)}")
        else:
            seconds[name] = float(value)
    if len(seconds) == 3 and seconds["watch_period_s"] > min(
        seconds["operator_timeout_s"], seconds["policy_timeout_s"]
    ):
        # a longer period notices a silence only that much later
        problems.append(
            f"watch_period_s {seconds['watch_period_s']:g}: must be at most operator_timeout_s "
            f"{seconds['operator_timeout_s']:g} and policy_timeout_s {seconds['policy_timeout_s']:g}"
        )
    if isinstance(p["seed"], bool) or not isinstance(p["seed"], int) or p["seed"] < 0:
        problems.append(f"seed: must be an integer >= 0, got {shown(p['seed'])}")
    rule = None
    try:
        rule = Takeover(
            threshold=p["takeover_threshold"], hold_s=p["takeover_hold_s"], operator_share=p["operator_share"]
        )
    except ValueError as exc:
        message = str(exc)
        for flag, name in TAKEOVER_PARAMETERS.items():
            message = message.replace(f"({flag})", f"({name})")
        problems.append(message)
    if problems:
        raise ValueError("; ".join(problems))
    return dict(
        rule=rule,
        scale=np.asarray(scale, dtype=np.float64),
        output_type=MESSAGE_TYPES[p["command_type"]],
        operator_type=MESSAGE_TYPES[p["operator_command_type"]],
        frame_id=p["command_frame_id"],
        operator_timeout=float(p["operator_timeout_s"]),
        policy_timeout=float(p["policy_timeout_s"]),
        seed=p["seed"],
    )


class TakeoverMuxNode(Node):
    """Forwards the policy's or the operator's commands to the base (see the module docstring)."""

    def __init__(self, name: str = "takeover_mux", **kwargs):
        super().__init__(name, **kwargs)
        declare_node_parameters(self, MUX_PARAMETERS, dynamic_typing=True)
        p = {n: self.get_parameter(n).value for n in MUX_PARAMETERS}
        s = checked_settings(p)
        # the names as the subscriptions and the publisher will use them: `-r __ns:=/robot1` with
        # output_topic:=/robot1/cmd_vel, or `-r base/cmd_vel:=cmd_vel`, passed the check above
        self.resolved = {n: self.resolve_topic_name(p[n]) for n in TOPIC_PARAMETERS}
        problem = same_topic_problem(self.resolved)
        if problem:
            self.destroy_node()
            raise ValueError(problem)
        self.rule, self.scale, self.output_type = s["rule"], s["scale"], s["output_type"]
        self.operator_type, self.frame_id = s["operator_type"], s["frame_id"]
        self.type_checked_at, self.type_warnings = -math.inf, set()
        self.other_base_publishers: tuple[str, ...] = ()  # other publishers on output_topic (said when they change)
        self.operator_timeout, self.policy_timeout = s["operator_timeout"], s["policy_timeout"]
        self.operator = Operator(self.rule, s["seed"])
        self.operator_command, self.operator_at = None, -math.inf  # latest operator command (action units)
        self.operator_message = None  # and its message (its stamp)
        self.policy_at = -math.inf
        self.driver = None  # "policy", "operator" or None (the base stopped)
        self.operator_forwarded = True  # the base has the operator's latest command
        self.counts = {
            "updates": 0,
            "operator_updates": 0,
            "unsupervised_updates": 0,
            "silence_stops": 0,
            "policy_stops": 0,
        }
        # best effort, latest only: matches reliable and best-effort publishers (joystick drivers use both)
        listen = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.output = self.create_publisher(self.output_type, p["output_topic"], QoSProfile(depth=10))
        self.create_subscription(s["operator_type"], p["operator_topic"], self._on_operator, listen)
        self.create_subscription(self.output_type, p["policy_topic"], self._on_policy, listen)
        # the steady clock: a timer on the ROS clock never fires under use_sim_time while /clock is paused or gone
        self.watch_timer = self.create_timer(
            float(p["watch_period_s"]), self._watch, clock=Clock(clock_type=ClockType.STEADY_TIME)
        )
        r = self.resolved  # as subscribed (namespace and remappings applied), as the warnings name them
        self.get_logger().info(
            f"{r['policy_topic']} (policy) or {r['operator_topic']} (operator) -> {r['output_topic']}; "
            f"{self._live_settings()}"
        )
        # after the declarations (they call it too); applied once set (rclpy without post-set callbacks: at once)
        self.add_on_set_parameters_callback(self._check_parameters)
        if hasattr(self, "add_post_set_parameters_callback"):
            self.add_post_set_parameters_callback(lambda _parameters: self._apply_parameters())

    def _values(self) -> dict:
        return {n: self.get_parameter(n).value for n in MUX_PARAMETERS}

    def _check_parameters(self, parameters) -> SetParametersResult:
        """A run-time change: refused (with the reason) unless every changed parameter is one of
        ``LIVE_PARAMETERS`` and the new values pass the startup checks."""
        values = self._values()
        # use_sim_time too: the clock of the stamps of its stops (the timing is the steady clock's), read at startup
        held = {**values, "use_sim_time": self.get_parameter("use_sim_time").value}
        changed = {
            q.name: q.value for q in parameters if q.name in held and not same_parameter_value(q.value, held[q.name])
        }
        fixed = [f"{name}={parameter_value(value)!r}" for name, value in changed.items() if name not in LIVE_PARAMETERS]
        if fixed:
            return SetParametersResult(
                successful=False,
                reason=f"{', '.join(fixed)}: read at startup; restart the node with the new value (at run time "
                f"only {', '.join(LIVE_PARAMETERS)} change)",
            )
        # every value set passes the startup checks, the same ones too: rclpy stores what was set, so `seed 3.0` for
        # 3 (no change by value) left a double, and the re-check after the set raised (the mux ended, traceback)
        stored = {**values, **{q.name: q.value for q in parameters if q.name in values}}
        try:
            checked_settings(stored)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if changed and not hasattr(self, "add_post_set_parameters_callback"):
            self._apply_parameters(stored)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, values: dict | None = None):
        """Use the (checked) live parameters from the next message on; a takeover in progress keeps its hold."""
        s = checked_settings(values or self._values())
        old = (self.rule, self.operator_timeout, self.policy_timeout)
        self.rule = self.operator.rule = s["rule"]
        self.operator_timeout, self.policy_timeout = s["operator_timeout"], s["policy_timeout"]
        if old != (self.rule, self.operator_timeout, self.policy_timeout):
            self.get_logger().info(f"parameters changed: {self._live_settings()}")

    def _live_settings(self) -> str:
        """The settings a run-time change may tune, by their parameters' names (``LIVE_PARAMETERS``); before, the
        rule was printed as a Python dict of other names, with a ``shadow`` the mux has no parameter for."""
        rule = self.rule
        return (
            f"takeover_threshold {rule.threshold:g}, takeover_hold_s {rule.hold_s:g} s, operator_share "
            f"{rule.operator_share:g}, operator_timeout_s {self.operator_timeout:g} s, policy_timeout_s "
            f"{self.policy_timeout:g} s"
        )

    def _now(self) -> float:
        return time.monotonic()

    def _action(self, msg) -> np.ndarray:
        return twist_vector(_twist(msg)) / self.scale

    def _send(self, action, stamp_msg=None):
        """The base's command: ``action`` (action units; None: stop) in the output type, stamped ``stamp_msg``'s
        header stamp where it has one, else now, in ``command_frame_id`` (the twist is rebuilt in the base's frame,
        whatever frame the operator's joystick names)."""
        msg = self.output_type()
        twist = _twist(msg)
        if action is not None:
            twist.linear.x, twist.angular.z = (float(v) for v in np.asarray(action) * self.scale)
        if isinstance(msg, TwistStamped):
            msg.header.frame_id = self.frame_id
            if isinstance(stamp_msg, TwistStamped):
                msg.header.stamp = stamp_msg.header.stamp
            else:
                msg.header.stamp = self.get_clock().now().to_msg()
        self.output.publish(msg)

    def _stop(self, why: str):
        if self.driver is not None:
            self.get_logger().warning(f"stopping the base: {why}")
        self.driver = None
        self._send(None)

    def _on_operator(self, msg):
        action = self._action(msg)
        if not np.all(np.isfinite(action)):
            self.get_logger().warning(
                f"operator command with NaN/inf on {self.resolved['operator_topic']} ignored: the last finite one "
                "holds until operator_timeout_s runs out",
                throttle_duration_sec=2.0,
            )
            return
        self.operator_command, self.operator_at, self.operator_message = action, self._now(), msg
        self.operator_forwarded = False
        if self.driver == "operator":
            self._send(action, msg)
            self.operator_forwarded = True

    def _on_policy(self, msg):
        now = self._now()
        self.policy_at = now
        policy = self._action(msg)
        if not np.any(policy):  # all zero (NaN is nonzero): the policy node's stop (its watchdog, a deactivation)
            # or a command held at rest, no decision of the policy's: not an update, no takeover rule or share drawn
            # on it (both did: takeovers logged between episodes); the base stops too unless the operator drives
            self.counts["policy_stops"] += 1
            if self.driver == "policy":  # the base stops; stopped already (None: the deadman's), or the operator drives
                self._send(policy, msg)
            return
        self.counts["updates"] += 1
        if now - self.operator_at > self.operator_timeout:
            self.counts["unsupervised_updates"] += 1
            self.get_logger().warning(
                f"no operator command on {self.resolved['operator_topic']} for {self.operator_timeout:g} s: the base "
                "stays stopped (no unsupervised policy driving)",
                throttle_duration_sec=2.0,
            )
            self._stop(f"no operator command on {self.resolved['operator_topic']}")
            return
        finite = bool(np.all(np.isfinite(policy)))
        if not finite:
            self.get_logger().warning(
                f"policy command with NaN/inf on {self.resolved['policy_topic']}: the operator's command drives",
                throttle_duration_sec=2.0,
            )
        takeovers, holding = self.operator.takeovers, self.operator.until is not None
        # a policy command with NaN/inf is no command (Operator: the operator drives that update)
        driving = self.operator.in_control(now, policy if finite else None, self.operator_command)
        if self.operator.takeovers > takeovers:
            self.get_logger().info(f"operator takes over (takeover {self.operator.takeovers})")
        elif holding and self.operator.until is None:
            self.get_logger().info("operator hands back to the policy")
        if driving:
            self.counts["operator_updates"] += 1
            if self.driver != "operator" or not self.operator_forwarded:
                self._send(self.operator_command, self.operator_message)
                self.operator_forwarded = True
            self.driver = "operator"
        else:
            self._send(policy, msg)
            self.driver = "policy"

    def _watch(self):
        """The deadman between messages: a silent driver, or a silent operator, stops the base once."""
        now = self._now()
        if self.driver is not None and now - self.operator_at > self.operator_timeout:
            self.counts["silence_stops"] += 1
            self._stop(f"no operator command on {self.resolved['operator_topic']} for {self.operator_timeout:g} s")
        elif self.driver == "policy" and now - self.policy_at > self.policy_timeout:
            self.counts["silence_stops"] += 1
            self._stop(f"no policy command on {self.resolved['policy_topic']} for {self.policy_timeout:g} s")
        if now - self.type_checked_at >= TYPE_CHECK_PERIOD_S:
            self.type_checked_at = now
            try:
                self._check_types()
            except Exception as exc:  # a failing graph query must not end this timer: it is the deadman
                topics = ", ".join(self.resolved[t] for t in TOPIC_PARAMETERS)
                self.get_logger().warning(  # what failed in words, not a repr (RuntimeError('...'))
                    f"could not look up the message types on {topics} (the ROS graph query failed: "
                    f"{str(exc) or type(exc).__name__}); the type check is retried every "
                    f"{TYPE_CHECK_PERIOD_S:g} s; the deadman still stops a silent driver",
                    throttle_duration_sec=10.0,
                )

    def _check_types(self):
        """One warning per topic and type for a publisher (inputs) or subscriber (the base) of another message
        type than the mux's: DDS never matches them, so their commands would silently never arrive (the base stays
        stopped, or gets nothing from the mux)."""
        ends = (
            ("operator_topic", "operator_command_type", self.operator_type, self.get_publishers_info_by_topic),
            ("policy_topic", "command_type", self.output_type, self.get_publishers_info_by_topic),
            ("output_topic", "command_type", self.output_type, self.get_subscriptions_info_by_topic),
        )
        self._check_other_base_publishers()
        for topic_parameter, type_parameter, msg_class, endpoints in ends:
            topic, ours = self.resolved[topic_parameter], message_type_name(msg_class)
            for other in sorted({e.topic_type for e in endpoints(topic)} - {ours}):
                if (topic, other) in self.type_warnings:
                    continue
                self.type_warnings.add((topic, other))
                role = "subscriber" if topic_parameter == "output_topic" else "publisher"
                self.get_logger().warning(
                    f"{topic} ({topic_parameter}): a {role} of {other}, the mux uses {ours} ({type_parameter}: "
                    f"{self.get_parameter(type_parameter).value}); the two never connect, set {type_parameter} "
                    "to match"
                )

    def _check_other_base_publishers(self):
        """Other publishers on the base's topic (a nav stack's controller, a policy node publishing there itself, a
        second mux): the base takes their commands too, so neither the mux's stops (deadman, silence, shutdown) nor
        the operator's takeover hold it. Said in a warning naming them when they change (info when none is left)."""
        topic, me = self.resolved["output_topic"], (self.get_namespace(), self.get_name())
        others = other_publishers(self.get_publishers_info_by_topic(topic), me, message_type_name(self.output_type))
        if others == self.other_base_publishers:
            return
        self.other_base_publishers = others
        if others:
            self.get_logger().warning(
                f"{topic} (output_topic) has other publishers: {', '.join(others)}: the base takes their commands "
                "too, and neither the mux's stops nor the operator's takeover hold it"
            )
        else:
            self.get_logger().info(f"{topic} (output_topic): no other publisher now")

    def close(self):
        """Stop the base (shutdown) and log the counts."""
        self._send(None)
        # before the writer goes away
        deliver_stop(self.output, self.get_logger(), "the stop command at shutdown", self)
        c = self.counts
        self.get_logger().info(
            f"{c['updates']} policy updates, operator drove {c['operator_updates']} ({self.operator.takeovers} "
            f"takeovers), {c['unsupervised_updates']} without an operator, {c['silence_stops']} silence stops, "
            f"{c['policy_stops']} stop commands of the policy node"
        )


POLICY_TOPIC = "policy/cmd_vel"  # where the policy node publishes in a round (the mux reads it)


# what the round's launch user gives for each mux setting round_graph makes: its errors name both
ROUND_SETTINGS = {
    "output_topic": "base_topic",
    "operator_topic": "the parameter file's command_topic",
    "policy_topic": POLICY_TOPIC,
    "command_type": "the parameter file's command_type",
    "command_frame_id": "the parameter file's command_frame_id",
    "action_scale": "the parameter file's action_scale",
}


def round_graph(
    params_file: str = "",
    policy: str = "",
    base_topic: str = "base/cmd_vel",
    operator_command_type: str = "twist",
    operator_share: float = 0.0,
    seed: int = 0,
    output: str = "",
    use_sim_time: bool | None = None,
):
    """A robot's round for launch/takeover.launch.py, in the simulated rounds' layout: the policy node (from its
    parameter file, publishing to ``policy/cmd_vel``), the mux (the operator's joystick on the file's
    ``command_topic``, where the demonstrations' labels are, the base on ``base_topic``; the file's command type
    and ``action_scale``) and the recorder (sensors, labels, the base's and the policy's commands). ValueError
    naming a bad setting before any node starts."""
    from liquid_control.bags.stream import load_node_parameters
    from liquid_control.ros.graph import NodeDescription, policy_graph
    from liquid_control.ros.recorder_node import record_graph

    (policy_node,) = policy_graph(params_file, policy, use_sim_time, autostart=True)
    values = load_node_parameters(policy_node.parameter_files[0])
    if use_sim_time is None:  # the file's, for every node of the round (the policy node's clock is the recorder's)
        use_sim_time = values.get("use_sim_time", False)
    mux = dict(
        policy_topic=POLICY_TOPIC,
        operator_topic=values["command_topic"],
        output_topic=base_topic,
        command_type=values["command_type"],
        command_frame_id=values["command_frame_id"],
        operator_command_type=operator_command_type,
        action_scale=values["action_scale"],
        operator_share=float(operator_share),
        seed=int(seed),
    )
    defaults = {n: d for n, (d, _) in MUX_PARAMETERS.items()}
    try:
        checked_settings({**defaults, **mux})  # the mux would refuse it: say so now, naming the setting
    except ValueError as exc:  # as the launch's user wrote it: base_topic:=..., the file's command_topic
        said = str(exc)
        for name, given in ROUND_SETTINGS.items():
            said = re.sub(rf"\b{name}\b", f"{given} (the mux's {name})", said)
        raise ValueError(said) from None
    camera = values["camera_topic"]  # and its camera_info: train --bag records the camera's field of view from it
    topics = [camera, camera_info_topic(camera), values["imu_topic"], values["command_topic"], base_topic, POLICY_TOPIC]
    return [
        NodeDescription(
            policy_node.executable,
            policy_node.name,
            policy_node.parameter_files,
            {**policy_node.parameters, "command_topic": POLICY_TOPIC},
            remappings=policy_node.remappings,
            lifecycle=True,
        ),
        NodeDescription("takeover_mux", "takeover_mux", (), {**mux, "use_sim_time": bool(use_sim_time)}),
        *record_graph(output=output, topics=topics, use_sim_time=use_sim_time),  # resolved in the recorder's namespace
    ]


def main(args=None) -> int:
    """Entry point of the ``takeover_mux`` executable (launch files)."""
    return run_until_signal("takeover_mux", TakeoverMuxNode, finish=lambda node: node.close(), args=args)
