"""takeover_mux: topics as the node resolves them, message types that never connect, the shutdown stop."""

import math
import time

import pytest
import rclpy
from geometry_msgs.msg import Twist, TwistStamped
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy

from liquid_control.ros.takeover_mux import TakeoverMuxNode
from liquid_control.ros.testing import Probe, isolated_ros_env, start_node_process, stop_process

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


def twist(linear, angular, msg_type=Twist):
    msg = msg_type()
    t = msg.twist if msg_type is TwistStamped else msg
    t.linear.x, t.angular.z = float(linear), float(angular)
    return msg


@pytest.mark.parametrize(
    "ros_args, params",
    [
        (["-r", "__ns:=/robot1"], dict(output_topic="/robot1/cmd_vel")),  # the base written absolute
        (["-r", "base/cmd_vel:=cmd_vel"], {}),  # a remapping onto the joystick's topic
        (["-r", "policy/cmd_vel:=/base/cmd_vel"], {}),
    ],
)
def test_an_output_that_resolves_to_an_input_is_refused_naming_the_resolved_topics(ros_args, params):
    """Before: refused only where the parameter values themselves were equal; with a namespace or a remapping the
    mux read its own output, took its own commands for an operator's, and over DDS the policy drove the base with
    no operator at all (39 of 40 policy commands reached /robot1/cmd_vel)."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(isolated_ros_env()["ROS_DOMAIN_ID"]))
    try:
        with pytest.raises(ValueError) as refused:
            TakeoverMuxNode(
                context=context,
                cli_args=["--ros-args", *ros_args],
                parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
            )
    finally:
        rclpy.try_shutdown(context=context)
    message = str(refused.value)
    assert "must be three different topics" in message and "namespace and remappings" in message, message
    assert "output_topic -> " in message and "operator_topic -> " in message


def test_the_same_names_in_a_namespace_are_accepted():
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(isolated_ros_env()["ROS_DOMAIN_ID"]))
    try:
        node = TakeoverMuxNode(context=context, cli_args=["--ros-args", "-r", "__ns:=/robot1"])
        assert node.resolved == {
            "policy_topic": "/robot1/policy/cmd_vel",
            "operator_topic": "/robot1/cmd_vel",
            "output_topic": "/robot1/base/cmd_vel",
        }
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_types_that_never_connect_are_named_nan_is_said_and_the_shutdown_stop_is_acknowledged(tmp_path):
    """Before: a joystick publishing TwistStamped to a mux reading Twist (or a base driver reading TwistStamped
    from a mux writing Twist) was never matched by DDS and nothing said why; a policy command with NaN was replaced
    without a word; and every shutdown warned 'the stop command at shutdown was not acknowledged' although the
    base had it (Fast DDS acknowledges at its writer's heartbeat, every 3 s; the mux waited 0.5 s)."""
    env = isolated_ros_env()
    log = tmp_path / "takeover_mux.log"
    params = dict(operator_timeout_s=5.0, policy_timeout_s=5.0)
    proc = start_node_process("liquid_control.ros.takeover_mux", "takeover_mux", params, env, log)
    probe, wrong_types = Probe(env), Probe(env, name="wrong_types")  # one type per topic and participant
    try:
        stamped_joystick = wrong_types.publisher(TwistStamped, "cmd_vel", RELIABLE)
        wrong_types.record("base/cmd_vel", TwistStamped, RELIABLE)  # a base driver of another type
        base = probe.record("base/cmd_vel", Twist, RELIABLE)
        operator = probe.publisher(Twist, "cmd_vel", RELIABLE)
        policy = probe.publisher(Twist, "policy/cmd_vel", RELIABLE)
        matched = (operator.get_subscription_count, policy.get_subscription_count, base.get_publisher_count)
        assert probe.wait_for(lambda: all(count() for count in matched), 60.0), log.read_text()
        stamped_joystick.publish(twist(0.3, 0.0, TwistStamped))

        def said(*parts):
            return all(part in log.read_text() for part in parts)

        wrong_operator = (
            "/cmd_vel (operator_topic): a publisher of geometry_msgs/msg/TwistStamped, the mux uses "
            "geometry_msgs/msg/Twist (operator_command_type: twist)"
        )
        wrong_base = "/base/cmd_vel (output_topic): a subscriber of geometry_msgs/msg/TwistStamped"
        assert probe.wait_for(lambda: said(wrong_operator, wrong_base), 30.0), log.read_text()

        def base_got(angular):
            return any(m.angular.z == angular for _, m in probe.messages("base/cmd_vel"))

        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not base_got(0.05):  # the policy drives while the two agree
            operator.publish(twist(0.3, 0.0))
            policy.publish(twist(0.3, 0.05))
            probe.wait_for(lambda: base_got(0.05), 0.2)
        deadline = time.monotonic() + 30.0  # then a NaN command: the operator's drives, and it is said
        while time.monotonic() < deadline and not said("policy command with NaN/inf"):
            operator.publish(twist(0.3, 0.0))
            policy.publish(twist(math.nan, 0.05))
            probe.wait_for(lambda: said("policy command with NaN/inf"), 0.2)
        assert base_got(0.05) and said("policy command with NaN/inf on /policy/cmd_vel: the operator's command drives")
        received = len(probe.messages("base/cmd_vel"))
        code = stop_process(proc, grace=10.0)
        probe.wait_for(lambda: len(probe.messages("base/cmd_vel")) > received, 30.0)
        last = probe.messages("base/cmd_vel")[-1][1]
    finally:
        probe.close()
        wrong_types.close()
        stop_process(proc)
    text = log.read_text()
    assert code == 0 and (last.linear.x, last.angular.z) == (0.0, 0.0), text
    assert "not acknowledged" not in text and "policy updates, operator drove" in text, text
    assert text.count(wrong_operator) == 1, text  # once per topic and type, not every second


def test_a_failing_graph_query_neither_keeps_back_the_silence_stop_nor_ends_the_watch():
    """Before: the message-type check (a ROS graph query) ran first in the watch timer; when it raised, the
    deadman's stop was skipped and the exception ended the timer callback."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(isolated_ros_env()["ROS_DOMAIN_ID"]))
    try:
        node = TakeoverMuxNode(context=context)
        sent, warnings = [], []

        def graph_fails(topic):
            raise RuntimeError("graph query failed")

        node.get_publishers_info_by_topic = node.get_subscriptions_info_by_topic = graph_fails
        node._send = lambda action, stamp_msg=None: sent.append(action)
        node.get_logger().warning = lambda msg, **kw: warnings.append(msg)
        node.driver, node.operator_at, node.policy_at = "policy", node._now() - 10.0, node._now()
        node._watch()
        assert sent == [None] and node.driver is None and node.counts["silence_stops"] == 1
        (said,) = [w for w in warnings if "could not look up the message types" in w]
        # before: "... on the mux's topics: RuntimeError('graph query failed')", a repr naming no topic
        assert (
            "on /policy/cmd_vel, /cmd_vel, " in said and "failed: graph query failed)" in said and "Error(" not in said
        ), said
        node.driver, node.operator_at, node.policy_at = "policy", node._now(), node._now() - 10.0
        node.type_checked_at = -math.inf
        node._watch()  # the next watch still stops a silent policy
        assert sent == [None, None] and node.counts["silence_stops"] == 2
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
