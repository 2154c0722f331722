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
with that probability (DAgger's beta, drawn from ``seed``). While the operator drives, each of its commands
goes to the base as it comes. No fresh operator command (none within ``operator_timeout_s``): nobody
supervises, so the base gets a stop command instead of the policy's and a warning is logged (a deadman: the
policy never drives unsupervised).

    ros2 run liquid_control takeover_mux --ros-args -p operator_share:=0.3 -p action_scale:="[0.8, 1.5]"
"""

from __future__ import annotations

import math
import sys

import numpy as np
from geometry_msgs.msg import Twist, TwistStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from liquid_control.bags.expert import Operator, Takeover
from liquid_control.conventions.params import declare_node_parameters, topic_name_problem
from liquid_control.ros.executable import run_until_signal

MUX_PARAMETERS: dict[str, tuple[object, str]] = {
    "policy_topic": ("policy/cmd_vel", "the policy node's commands (its command_topic remapped here)"),
    "operator_topic": ("cmd_vel", "the operator's commands (joystick teleop), followed all the time: the labels"),
    "output_topic": ("base/cmd_vel", "what the base executes"),
    "command_type": ("twist", "message type of all three topics: twist | twist_stamped (as the policy node's)"),
    "action_scale": ([1.0], "the policy node's action_scale (one value, or linear and angular): commands / scale"),
    "takeover_threshold": (0.5, "take over where the commands differ by more (action units, largest element)"),
    "takeover_hold_s": (1.0, "keep the base at least this long after a takeover (node clock)"),
    "operator_share": (0.0, "the operator also drives each update with this probability (DAgger's beta)"),
    "seed": (0, "seed of the operator-share draws"),
    "operator_timeout_s": (0.5, "an operator command older than this is no supervision: the base is stopped"),
}
COMMAND_TYPES = {"twist": Twist, "twist_stamped": TwistStamped}


def _twist(msg):
    return msg.twist if isinstance(msg, TwistStamped) else msg


class TakeoverMuxNode(Node):
    """Forwards the policy's or the operator's commands to the base (see the module docstring)."""

    def __init__(self, name: str = "takeover_mux", **kwargs):
        super().__init__(name, **kwargs)
        declare_node_parameters(self, MUX_PARAMETERS, dynamic_typing=True)
        p = {n: self.get_parameter(n).value for n in MUX_PARAMETERS}
        self.rule, self.scale, self.timeout, msg_type = self._checked(p)
        self.operator = Operator(self.rule, int(p["seed"]))
        self.operator_msg, self.operator_at = None, -math.inf  # latest operator command, node-clock arrival
        self.operator_driving = False
        self.counts = {"updates": 0, "operator_updates": 0, "unsupervised_stops": 0}
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.msg_type = msg_type
        self.output = self.create_publisher(msg_type, p["output_topic"], qos)
        self.create_subscription(msg_type, p["operator_topic"], self._on_operator, qos)
        self.create_subscription(msg_type, p["policy_topic"], self._on_policy, qos)
        self.get_logger().info(
            f"{p['policy_topic']} (policy) or {p['operator_topic']} (operator) -> {p['output_topic']}; "
            f"takeover {self.rule.describe()}, operator timeout {self.timeout:g} s"
        )

    @staticmethod
    def _checked(p: dict):
        """The settings, or ValueError naming the parameter."""
        for name in ("policy_topic", "operator_topic", "output_topic"):
            problem = topic_name_problem(p[name])
            if problem:
                raise ValueError(f"{name}: {problem}")
        if len({p["policy_topic"], p["operator_topic"], p["output_topic"]}) < 3:
            raise ValueError("policy_topic, operator_topic and output_topic must be three different topics")
        if p["command_type"] not in COMMAND_TYPES:
            raise ValueError(f"command_type: must be one of {', '.join(COMMAND_TYPES)}, got {p['command_type']!r}")
        try:
            scale = np.array([float(v) for v in p["action_scale"]], dtype=np.float64)
        except (TypeError, ValueError):
            scale = np.array([])
        if scale.shape not in ((1,), (2,)) or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise ValueError(
                f"action_scale: must be one or two finite numbers > 0 (linear, angular), got {p['action_scale']}"
            )
        scale = np.broadcast_to(scale, (2,)).copy()
        timeout = p["operator_timeout_s"]
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise ValueError(f"operator_timeout_s: must be a finite number of seconds > 0, got {timeout!r}")
        try:
            rule = Takeover(
                threshold=p["takeover_threshold"],
                hold_s=p["takeover_hold_s"],
                operator_share=p["operator_share"],
            )
        except ValueError as exc:  # its words name the CLI flags; the node's names are the parameters
            raise ValueError(f"takeover_threshold / takeover_hold_s / operator_share: {exc}") from None
        return rule, scale, float(timeout), COMMAND_TYPES[p["command_type"]]

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _action(self, msg) -> np.ndarray:
        t = _twist(msg)
        return np.array([t.linear.x, t.angular.z], dtype=np.float64) / self.scale

    def _on_operator(self, msg):
        if not all(math.isfinite(v) for v in self._action(msg)):
            self.get_logger().warning("operator command with NaN/inf ignored", throttle_duration_sec=2.0)
            return
        self.operator_msg, self.operator_at = msg, self._now()
        if self.operator_driving:
            self.output.publish(msg)

    def _on_policy(self, msg):
        now = self._now()
        policy = self._action(msg)
        self.counts["updates"] += 1
        if self.operator_msg is None or now - self.operator_at > self.timeout:
            self.operator_driving = False
            self.counts["unsupervised_stops"] += 1
            self.get_logger().warning(
                f"no operator command for {self.timeout:g} s: stopping the base (no unsupervised policy driving)",
                throttle_duration_sec=2.0,
            )
            self.output.publish(self._stop(msg))
            return
        takeovers = self.operator.takeovers
        finite = bool(np.all(np.isfinite(policy)))
        # a policy command with NaN/inf is no command (Operator: the operator drives that update)
        driving = self.operator.in_control(now, policy if finite else None, self._action(self.operator_msg))
        if self.operator.takeovers > takeovers:
            self.get_logger().info(f"operator takes over (takeover {self.operator.takeovers})")
        elif self.operator_driving and not driving and self.operator.until is None:
            self.get_logger().info("policy drives again")
        self.operator_driving = driving
        self.counts["operator_updates"] += int(driving)
        self.output.publish(self.operator_msg if driving else msg)

    def _stop(self, like):
        stop = self.msg_type()
        if isinstance(like, TwistStamped):
            stop.header = like.header
        return stop

    def summary(self) -> str:
        """One line of counts (logged at shutdown)."""
        c = self.counts
        return (
            f"{c['updates']} policy updates, operator drove {c['operator_updates']} ({self.operator.takeovers} "
            f"takeovers), {c['unsupervised_stops']} stopped without an operator"
        )


def main(args=None) -> int:
    """Entry point of the ``takeover_mux`` executable (launch files)."""
    return run_until_signal(
        "takeover_mux", TakeoverMuxNode, finish=lambda node: node.get_logger().info(node.summary()), args=args
    )


if __name__ == "__main__":
    sys.exit(main())
