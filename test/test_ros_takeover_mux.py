"""takeover_mux: the simulated rounds' takeover rule on a robot's topics (policy or operator to the base)."""

import math
import time

import pytest
import rclpy
from geometry_msgs.msg import TwistStamped
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy

from liquid_control.ros.takeover_mux import TakeoverMuxNode
from liquid_control.ros.testing import Probe, isolated_ros_env, start_node_process, stop_process

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


def twist(linear, angular, stamp=0.0):
    msg = TwistStamped()
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp), int(round((stamp % 1) * 1e9))
    msg.twist.linear.x, msg.twist.angular.z = float(linear), float(angular)
    return msg


class Mux:
    """The node in this process, its clock and its output under the test's control."""

    def __init__(self, **params):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=int(isolated_ros_env()["ROS_DOMAIN_ID"]))
        defaults = dict(command_type="twist_stamped", action_scale=[2.0, 1.0], operator_timeout_s=0.5)
        defaults.update(params)
        overrides = [Parameter(k, value=v) for k, v in defaults.items()]
        self.node = TakeoverMuxNode(context=self.context, parameter_overrides=overrides)
        self.now, self.sent = 100.0, []
        self.node._now = lambda: self.now
        self.node.output.publish = self.sent.append

    def operator(self, linear, angular):
        self.node._on_operator(twist(linear, angular, self.now))

    def policy(self, linear, angular):
        """The message the base got for this policy update."""
        msg = twist(linear, angular, self.now)
        self.node._on_policy(msg)
        return self.sent[-1], msg

    def close(self):
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def mux(request):
    made = []

    def make(**params):
        made.append(Mux(**params))
        return made[-1]

    yield make
    for m in made:
        m.close()


def test_policy_drives_while_the_operator_agrees_and_the_operator_takes_over_where_not(mux):
    m = mux()
    out, msg = m.policy(0.4, 0.1)
    assert (out.twist.linear.x, out.twist.angular.z) == (0.0, 0.0) and out.header == msg.header  # no operator
    m.operator(1.0, 0.0)
    out, msg = m.policy(0.4, 0.1)  # 0.3 apart in action units (linear / 2): within the threshold
    assert out is msg and m.node.operator.takeovers == 0
    m.operator(1.0, 0.0)
    out, msg = m.policy(1.0, 0.7)  # angular 0.7 apart: the operator takes over, its command goes to the base
    assert out is m.node.operator_msg and out.twist.angular.z == 0.0 and m.node.operator.takeovers == 1
    m.operator(0.8, -0.2)  # while it drives, each of its commands goes to the base as it comes
    assert (m.sent[-1].twist.linear.x, m.sent[-1].twist.angular.z) == (0.8, -0.2)
    m.now += 0.5
    m.operator(0.8, -0.2)
    out, msg = m.policy(0.8, -0.2)  # agree, but within the hold (1 s): still the operator
    assert out is not msg and out is m.node.operator_msg
    m.now += 0.6
    m.operator(0.8, -0.2)
    out, msg = m.policy(0.8, -0.1)  # after the hold, agreeing within half the threshold: the policy again
    assert out is msg
    assert m.node.counts == {"updates": 5, "operator_updates": 2, "unsupervised_stops": 1}


def test_the_threshold_is_in_action_units(mux):
    for scale, takes_over in (([2.0, 1.0], False), ([1.0, 1.0], True), ([1.0], True)):
        m = mux(action_scale=scale)
        m.operator(1.0, 0.0)
        out, msg = m.policy(0.2, 0.0)  # 0.8 m/s apart: 0.4 action units at scale 2, 0.8 at scale 1
        assert (out is not msg) == takes_over and m.node.operator.takeovers == int(takes_over)


def test_a_stale_operator_stops_the_base_and_a_nan_policy_command_never_reaches_it(mux):
    m = mux()
    m.operator(0.5, 0.0)
    m.now += 0.6  # past operator_timeout_s: nobody supervises
    out, _ = m.policy(0.5, 0.0)
    assert (out.twist.linear.x, out.twist.angular.z) == (0.0, 0.0) and m.node.counts["unsupervised_stops"] == 1
    m.operator(0.5, 0.1)
    out, _ = m.policy(math.nan, 0.0)
    assert out is m.node.operator_msg
    m.operator(math.inf, 0.0)  # ignored: the last good operator command stays
    assert m.node.operator_msg.twist.angular.z == 0.1


def test_operator_share_drives_that_share_of_updates_without_takeovers(mux):
    m = mux(operator_share=0.3, seed=4)
    drove = 0
    for _ in range(400):
        m.now += 0.05
        m.operator(0.5, 0.0)
        out, msg = m.policy(0.5, 0.0)  # always agreeing: only the draws hand over the base
        drove += out is not msg
    assert m.node.operator.takeovers == 0 and 0.22 < drove / 400 < 0.38
    assert m.node.counts["operator_updates"] == drove


@pytest.mark.parametrize(
    "params, named",
    [
        (dict(action_scale=[0.0, 1.0]), "action_scale"),
        (dict(action_scale=[1.0, 1.0, 1.0]), "action_scale"),
        (dict(operator_timeout_s=0.0), "operator_timeout_s"),
        (dict(command_type="joy"), "command_type"),
        (dict(output_topic="cmd_vel"), "three different topics"),
        (dict(policy_topic="bad topic"), "policy_topic"),
        (dict(operator_share=1.5), "operator_share"),
        (dict(takeover_threshold=-1.0), "takeover_threshold"),
    ],
)
def test_bad_parameters_are_refused_naming_them(mux, params, named):
    with pytest.raises(ValueError, match=named):
        mux(**params)


def test_the_node_forwards_over_dds_and_reports_at_shutdown(tmp_path):
    env = isolated_ros_env()
    log = tmp_path / "takeover_mux.log"
    proc = start_node_process(
        "liquid_control.ros.takeover_mux",
        "takeover_mux",
        dict(command_type="twist_stamped", operator_timeout_s=5.0),
        env,
        log,
    )
    probe = Probe(env)
    try:
        operator = probe.publisher(TwistStamped, "cmd_vel", RELIABLE)
        policy = probe.publisher(TwistStamped, "policy/cmd_vel", RELIABLE)
        base = probe.record("base/cmd_vel", TwistStamped, RELIABLE)
        assert probe.wait_for(
            lambda: (
                operator.get_subscription_count() and policy.get_subscription_count() and base.get_publisher_count()
            ),
            60.0,
        ), log.read_text()

        def forwarded(linear):  # the policy's command reaches the base once the operator's has reached the mux
            deadline = time.monotonic() + 30.0
            while time.monotonic() < deadline:
                operator.publish(twist(linear, 0.0, time.time()))
                policy.publish(twist(linear, 0.05, time.time()))
                if probe.wait_for(
                    lambda: any(m.twist.angular.z == 0.05 for _, m in probe.messages("base/cmd_vel")), 0.2
                ):
                    return True
            return False

        assert forwarded(0.3), log.read_text()
    finally:
        probe.close()
        code = stop_process(proc)
    text = log.read_text()
    assert code == 0 and "policy updates, operator drove" in text, text
    # installed as `ros2 run liquid_control takeover_mux` (setup.py's console script through the node entry)
    from test_ros_launch import console_scripts

    from liquid_control.ros import entry

    assert console_scripts()["takeover_mux"] == "liquid_control.ros.entry:takeover_mux"
    assert entry.NODE_MODULES["takeover_mux"] == "liquid_control.ros.takeover_mux"
    refused = start_node_process("liquid_control.ros.takeover_mux", "takeover_mux", dict(action_scale=[1.0, -1.0]), env)
    assert refused.wait(timeout=60) == 2
