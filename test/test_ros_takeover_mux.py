"""takeover_mux: the simulated rounds' takeover rule on a robot's topics (policy or operator to the base)."""

import math
import time
from array import array

import pytest
import rclpy
import rclpy.executors
from geometry_msgs.msg import Twist, TwistStamped
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from test_ros_launch import console_scripts, launch_stubs  # noqa: F401 (a fixture)

from liquid_control.ros import entry
from liquid_control.ros.executable import REPEATED_SIGNAL_S
from liquid_control.ros.takeover_mux import TakeoverMuxNode
from liquid_control.ros.testing import Probe, isolated_ros_env, start_listener_process, start_node_process, stop_process

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


def twist(linear, angular, stamp=0.0, stamped=True):
    msg = TwistStamped() if stamped else Twist()
    if stamped:
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp), int(round((stamp % 1) * 1e9))
    t = msg.twist if stamped else msg
    t.linear.x, t.angular.z = float(linear), float(angular)
    return msg


def values(msg):
    t = msg.twist if isinstance(msg, TwistStamped) else msg
    return (t.linear.x, t.angular.z)


class Mux:
    """The node in this process, its clock and its output under the test's control."""

    def __init__(self, real_clock=False, **params):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=int(isolated_ros_env()["ROS_DOMAIN_ID"]))
        defaults = dict(command_type="twist_stamped", operator_command_type="twist_stamped", action_scale=[2.0, 1.0])
        defaults.update(params)
        overrides = [Parameter(k, value=v) for k, v in defaults.items()]
        self.node = TakeoverMuxNode(context=self.context, parameter_overrides=overrides)
        self.now, self.sent = 100.0, []
        if not real_clock:
            self.node._now = lambda: self.now
        self.node.output.publish = self.sent.append

    def operator(self, linear, angular, stamped=True):
        self.node._on_operator(twist(linear, angular, self.now, stamped))

    def policy(self, linear, angular):
        """What the base got for this policy update (the last message sent) and the policy's message."""
        msg = twist(linear, angular, self.now)
        self.node._on_policy(msg)
        return self.sent[-1], msg

    def close(self):
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def mux():
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
    assert values(out) == (0.0, 0.0) and m.node.driver is None  # no operator: a stop
    m.operator(1.0, 0.0)
    out, msg = m.policy(0.4, 0.1)  # 0.3 apart in action units (linear / 2): within the threshold
    assert values(out) == (0.4, 0.1) and out.header.stamp == msg.header.stamp and m.node.operator.takeovers == 0
    m.operator(1.0, 0.0)
    out, _ = m.policy(1.0, 0.7)  # angular 0.7 apart: the operator takes over, its command goes to the base
    assert values(out) == (1.0, 0.0) and m.node.operator.takeovers == 1 and m.node.driver == "operator"
    m.operator(0.8, -0.2)  # while it drives, each of its commands goes to the base as it comes
    assert values(m.sent[-1]) == (0.8, -0.2)
    sent = len(m.sent)
    m.now += 0.3
    m.policy(0.0, 0.5)  # still the operator, whose latest command the base already has: nothing sent twice
    assert len(m.sent) == sent
    m.now += 0.2
    m.operator(0.8, -0.2)
    out, _ = m.policy(0.8, -0.2)  # agree, but within the hold (1 s): still the operator
    assert m.node.driver == "operator" and values(out) == (0.8, -0.2) and out.header.stamp.sec == 100
    m.now += 0.6
    m.operator(0.8, -0.2)
    out, msg = m.policy(0.8, -0.1)  # after the hold, agreeing within half the threshold: the policy again
    assert values(out) == (0.8, -0.1) and m.node.driver == "policy"
    assert m.node.counts == {
        "updates": 6, "operator_updates": 3, "unsupervised_updates": 1, "silence_stops": 0, "policy_stops": 0
    }  # fmt: skip


def test_the_policy_nodes_stops_are_no_updates_and_start_no_takeover(mux):
    """Before: policy_node's stop commands (zeros: its watchdog between episodes, a deactivation) counted as policy
    updates ('625 policy updates' of 378 updates and 268 stops) and went through the takeover rule, which fired on
    them (a takeover logged after the episode had ended) and drew the operator share on them (found by a probe of
    the robot's DAgger rounds). A stop goes to the base where the policy drives, and counts as a stop."""
    m = mux()
    m.operator(1.0, 0.0)
    out, _ = m.policy(1.0, 0.1)
    assert values(out) == (1.0, 0.1) and m.node.driver == "policy"
    out, _ = m.policy(0.0, 0.0)  # 0.5 from the operator's in action units: was a takeover
    assert values(out) == (0.0, 0.0) and m.node.operator.takeovers == 0 and m.node.driver == "policy"
    out, _ = m.policy(1.0, 0.7)  # the operator takes over
    assert values(out) == (1.0, 0.0) and m.node.operator.takeovers == 1
    sent = len(m.sent)
    m.policy(0.0, 0.0)  # the policy node stops while the operator drives: the operator's command holds
    assert len(m.sent) == sent and m.node.driver == "operator"
    assert m.node.counts["updates"] == 2 and m.node.counts["policy_stops"] == 2
    # the operator silent past its timeout: the deadman stops the base once; the policy node's stops repeated while
    # it waits for its inputs (its watchdog) leave it stopped (a review: each restarted the 'policy' driver, and the
    # deadman stopped it again, a warning and a silence stop each)
    m.now += 1.0
    m.node._watch()
    stops, sent = m.node.counts["silence_stops"], len(m.sent)
    for _ in range(5):
        m.policy(0.0, 0.0)
        m.node._watch()
    assert m.node.driver is None and m.node.counts["silence_stops"] == stops and len(m.sent) == sent


def test_the_threshold_is_in_action_units_and_only_the_checked_fields_reach_the_base(mux):
    for scale, takes_over in (([2.0, 1.0], False), ([1.0, 1.0], True), ([1.0], True), ([-2.0, 1.0], False)):
        m = mux(action_scale=scale)
        m.operator(1.0, 0.0)
        out, _ = m.policy(0.2, 0.0)  # 0.8 m/s apart: 0.4 action units at scale 2, 0.8 at scale 1
        assert (values(out) == (1.0, 0.0)) == takes_over and m.node.operator.takeovers == int(takes_over)
    m = mux()
    m.operator(0.5, 0.0)
    msg = twist(0.5, 0.1, m.now)
    msg.twist.linear.y, msg.twist.angular.x = 3.0, math.nan  # a field the rover's twist does not have
    m.node._on_policy(msg)
    assert values(m.sent[-1]) == (0.5, 0.1) and m.sent[-1].twist.linear.y == 0.0 and m.sent[-1].twist.angular.x == 0


def test_every_stamped_command_to_the_base_is_in_the_command_frame(mux):
    """Before: the mux rebuilt each TwistStamped with an empty header.frame_id, so the base got the policy node's
    commands (frame base_link, its command_frame_id) with no frame through the mux; operator commands and stops too."""
    m = mux()
    m.policy(0.4, 0.1)  # no operator: a stop
    m.operator(1.0, 0.0)
    m.policy(0.4, 0.1)  # the policy's
    m.policy(1.0, 0.7)  # taken over: the operator's
    m.operator(0.8, -0.2)  # the operator's, as it comes
    assert len(m.sent) == 4 and [msg.header.frame_id for msg in m.sent] == ["base_link"] * 4
    m = mux(command_frame_id="robot1/base_footprint", operator_command_type="twist")
    m.operator(1.0, 0.0, stamped=False)
    out, _ = m.policy(0.4, 0.1)
    assert out.header.frame_id == "robot1/base_footprint"
    m = mux(command_type="twist", command_frame_id="")  # no header to carry it: accepted, unused
    m = mux(command_type="twist_stamped", command_frame_id="")  # empty: no base reads a frame from its commands
    with pytest.raises(ValueError, match="command_frame_id: must be a TF frame id"):
        mux(command_frame_id=3)
    with pytest.raises(ValueError, match="command_frame_id: '/base_link' is not a valid TF frame id"):
        mux(command_frame_id="/base_link")  # tf2 refuses a leading '/' (was accepted)


def test_the_operator_may_publish_another_type_than_the_policy(mux):
    m = mux(command_type="twist", operator_command_type="twist_stamped")
    m.operator(0.5, 0.0)
    m.node._on_policy(twist(0.5, 2.0, stamped=False))
    assert isinstance(m.sent[-1], Twist) and values(m.sent[-1]) == (0.5, 0.0)  # taken over: the operator's
    m = mux(command_type="twist_stamped", operator_command_type="twist")
    m.operator(0.5, 0.0, stamped=False)
    out, _ = m.policy(0.5, 2.0)
    assert isinstance(out, TwistStamped) and values(out) == (0.5, 0.0) and out.header.stamp.sec > 0  # stamped now


def test_a_silent_operator_or_a_silent_driver_stops_the_base_once(mux):
    m = mux(operator_timeout_s=0.5, policy_timeout_s=0.3)
    m.operator(0.5, 0.0)
    m.now += 0.6  # past operator_timeout_s: nobody supervises
    out, _ = m.policy(0.5, 0.0)
    assert values(out) == (0.0, 0.0) and m.node.counts["unsupervised_updates"] == 1
    sent = len(m.sent)
    m.operator(0.5, 0.1)  # the operator is back, but nobody drives until the next update: nothing forwarded
    assert len(m.sent) == sent
    out, _ = m.policy(math.nan, 0.0)  # a NaN command: the operator's instead
    assert values(out) == (0.5, 0.1)
    m.operator(math.inf, 0.0)  # ignored: the last good operator command stays
    assert list(m.node.operator_command) == [0.25, 0.1]

    m.operator(0.5, 0.0)
    out, _ = m.policy(0.5, 0.0)
    assert m.node.driver == "policy"
    sent = len(m.sent)
    m.now += 0.2
    m.operator(0.5, 0.0)
    m.node._watch()  # 0.2 s without a policy command: nothing yet
    assert m.node.driver == "policy" and len(m.sent) == sent
    m.now += 0.2
    m.operator(0.5, 0.0)
    m.node._watch()  # 0.4 s: the policy fell silent while driving: one stop
    m.node._watch()
    assert m.node.driver is None and [values(x) for x in m.sent[sent:]] == [(0.0, 0.0)]
    assert m.node.counts["silence_stops"] == 1

    m.operator(1.6, 0.0)
    m.policy(0.0, 0.01)  # 0.8 action units apart: the operator takes over ...
    assert m.node.driver == "operator"
    m.now += 0.6
    m.node._watch()  # ... and falls silent: a stop
    assert m.node.driver is None and values(m.sent[-1]) == (0.0, 0.0) and m.node.counts["silence_stops"] == 2

    m.operator(0.5, 0.0)
    m.policy(0.5, 0.0)  # the policy drives, hands on the joystick ...
    m.now += 0.45
    m.policy(0.5, 0.0)  # ... the policy goes on, the operator's last command ages ...
    m.now += 0.1
    sent = len(m.sent)
    for _ in range(3):
        m.node._watch()  # ... past its timeout between two policy commands: one stop, not one per check
    assert [values(x) for x in m.sent[sent:]] == [(0.0, 0.0)] and m.node.counts["silence_stops"] == 3


def test_the_deadman_runs_on_the_steady_clock_also_with_sim_time(mux):
    """With use_sim_time and no /clock the ROS clock stands still; the silence must be noticed anyway."""
    m = mux(real_clock=True, use_sim_time=True, operator_timeout_s=0.1, policy_timeout_s=0.1, watch_period_s=0.02)
    m.operator(0.5, 0.0)
    m.policy(0.5, 0.0)
    assert m.node.driver == "policy"
    executor = rclpy.executors.SingleThreadedExecutor(context=m.context)
    executor.add_node(m.node)
    deadline = time.monotonic() + 5.0
    while m.node.driver is not None and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    executor.remove_node(m.node)
    assert m.node.driver is None and values(m.sent[-1]) == (0.0, 0.0) and m.node.counts["silence_stops"] == 1


def test_operator_share_drives_that_share_of_updates_the_same_for_the_same_seed(mux):
    def drive(seed):
        m = mux(operator_share=0.3, seed=seed)
        drove = []
        for i in range(400):
            m.now += 0.05
            m.operator(0.5, 0.0)
            m.policy(0.5, 0.01 * (i % 3))  # always agreeing: only the draws hand the base over
            drove.append(m.node.driver == "operator")
        assert m.node.operator.takeovers == 0 and m.node.counts["operator_updates"] == sum(drove)
        return drove

    first = drive(4)
    assert 0.22 < sum(first) / 400 < 0.38 and drive(4) == first and drive(5) != first


@pytest.mark.parametrize(
    "params, named",
    [
        (dict(action_scale=[0.0, 1.0]), "action_scale"),
        (dict(action_scale=[1.0, 1.0, 1.0]), "action_scale"),
        (dict(operator_timeout_s=0.0), "operator_timeout_s"),
        (dict(operator_timeout_s=100.0), "operator_timeout_s"),
        (dict(policy_timeout_s=-1.0), "policy_timeout_s"),
        (dict(watch_period_s=1.0), "watch_period_s"),  # longer than the timeouts (0.5 s)
        (dict(command_type="joy"), "command_type"),
        (dict(operator_command_type="float64_multi_array"), "operator_command_type"),
        (dict(output_topic="cmd_vel"), "three different topics"),
        (dict(policy_topic="bad topic"), "policy_topic"),
        (dict(operator_share=1.5), r"\(operator_share\)"),
        (dict(takeover_threshold=-1.0), r"\(takeover_threshold\)"),
        (dict(takeover_hold_s=0.0), r"\(takeover_hold_s\)"),
        (dict(seed=-3), "seed"),
        (dict(seed="abc"), "seed"),
    ],
)
def test_bad_parameters_are_refused_naming_them(mux, params, named):
    with pytest.raises(ValueError, match=named):
        mux(**params)


def test_the_node_forwards_over_dds_and_stops_the_base_at_shutdown(tmp_path):
    env = isolated_ros_env()
    log = tmp_path / "takeover_mux.log"
    params = dict(command_type="twist_stamped", operator_timeout_s=5.0, policy_timeout_s=5.0)
    proc = start_node_process("liquid_control.ros.takeover_mux", "takeover_mux", params, env, log)
    probe = Probe(env)
    try:
        # the default operator type, a joystick's Twist, from a best-effort publisher (some joystick drivers)
        operator = probe.publisher(Twist, "cmd_vel", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        policy = probe.publisher(TwistStamped, "policy/cmd_vel", RELIABLE)
        base = probe.record("base/cmd_vel", TwistStamped, RELIABLE)
        assert probe.wait_for(
            lambda: (
                operator.get_subscription_count() and policy.get_subscription_count() and base.get_publisher_count()
            ),
            60.0,
        ), log.read_text()

        def heard(angular):
            return any(m.twist.angular.z == angular for _, m in probe.messages("base/cmd_vel"))

        deadline = time.monotonic() + 30.0  # the policy's command reaches the base once the operator's reached the mux
        while time.monotonic() < deadline and not heard(0.05):
            operator.publish(twist(0.3, 0.0, stamped=False))
            policy.publish(twist(0.3, 0.05, time.time()))
            probe.wait_for(lambda: heard(0.05), 0.2)
        assert heard(0.05), log.read_text()
        received = len(probe.messages("base/cmd_vel"))
        code = stop_process(proc)
        probe.wait_for(lambda: any(values(m) == (0.0, 0.0) for _, m in probe.messages("base/cmd_vel")[received:]), 30.0)
        last = probe.messages("base/cmd_vel")[-1][1]
    finally:
        probe.close()
        stop_process(proc)
    text = log.read_text()
    assert code == 0 and "policy updates, operator drove" in text, text
    assert values(last) == (0.0, 0.0), "the base was left moving at shutdown"
    # installed as `ros2 run liquid_control takeover_mux` (setup.py's console script through the node entry)
    assert console_scripts()["takeover_mux"] == "liquid_control.ros.entry:takeover_mux"
    assert entry.NODE_MODULES["takeover_mux"] == "liquid_control.ros.takeover_mux"
    refused = start_node_process("liquid_control.ros.takeover_mux", "takeover_mux", dict(action_scale=[1.0, 0.0]), env)
    assert refused.wait(timeout=60) == 2


def test_a_second_signal_ends_the_wait_for_the_stops_acknowledgement_at_shutdown(tmp_path):
    """At SIGINT/SIGTERM the mux stops the base and waits up to 4 s for every subscriber to acknowledge it
    (ros.delivery); a second Ctrl-C did not cut that wait. A base that never acknowledges (a subscriber process
    stopped with SIGSTOP, still matched) holds it; the second SIGINT ends it, said in one line."""
    import os
    import signal

    env = isolated_ros_env()
    log = tmp_path / "takeover_mux.log"
    params = dict(command_type="twist_stamped", operator_timeout_s=5.0, policy_timeout_s=5.0)
    proc = start_node_process("liquid_control.ros.takeover_mux", "takeover_mux", params, env, log)
    listener_out = tmp_path / "listener.out"
    listener = start_listener_process("base/cmd_vel", "geometry_msgs.msg.TwistStamped", env, listener_out)
    probe = Probe(env)
    try:
        operator = probe.publisher(Twist, "cmd_vel", RELIABLE)
        policy = probe.publisher(TwistStamped, "policy/cmd_vel", RELIABLE)
        base = probe.record("base/cmd_vel", TwistStamped, RELIABLE)
        assert probe.wait_for(
            lambda: (
                operator.get_subscription_count() and policy.get_subscription_count() and base.get_publisher_count()
            ),
            60.0,
        ), log.read_text()
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and "heard" not in listener_out.read_text():  # the base hears the mux
            operator.publish(twist(0.3, 0.0, stamped=False))
            policy.publish(twist(0.3, 0.05, time.time()))
            time.sleep(0.1)
        assert "heard" in listener_out.read_text(), log.read_text()
        assert probe.wait_for(lambda: probe.messages("base/cmd_vel"), 10.0)
        listener.send_signal(signal.SIGSTOP)  # matched, acknowledging nothing from here on
        moving = len(probe.messages("base/cmd_vel"))
        proc.send_signal(signal.SIGINT)
        stopped = lambda: any(values(m) == (0.0, 0.0) for _, m in probe.messages("base/cmd_vel")[moving:])  # noqa: E731
        assert probe.wait_for(stopped, 30.0), log.read_text()  # the stop is out: its wait begins
        # a press, not the same stop twice: counted from the node's handler, which has run by now (4 s of wait left)
        time.sleep(REPEATED_SIGNAL_S + 0.1)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30.0)
    finally:
        probe.close()
        stop_process(proc)
        os.kill(listener.pid, signal.SIGCONT)
        stop_process(listener)
    text = log.read_text()
    assert code == 0, text
    assert (
        "/base/cmd_vel: the stop command at shutdown was published but not acknowledged by every subscriber: a second "
        "stop signal (SIGINT) ended the wait (the robot may keep its last command); its subscribers: " in text
    ), text
    # the subscribers named (before: none, and a killed recorder's unacknowledged stop read as the robot's)
    assert "/listener" in text.split("its subscribers: ")[1].split(" (any of them")[0], text
    assert "within 4 s" not in text, text


def test_run_time_changes_apply_the_checked_rule_and_deadman_and_refuse_the_rest(mux):
    """Before: set_parameters answered successful=True to everything (operator_timeout_s=60, a threshold 'abc',
    another output topic) and nothing changed: the node read its parameters only at startup."""
    m = mux(operator_timeout_s=0.5)
    m.operator(0.0, 0.0)
    m.policy(0.0, 0.7)  # 0.7 action units apart, threshold 0.5: the operator takes over
    assert m.node.driver == "operator" and m.node.operator.takeovers == 1
    m.now += 1.5  # past the hold; they agree: back to the policy
    m.operator(0.0, 0.0)
    m.policy(0.0, 0.01)
    assert m.node.driver == "policy"

    def set_(**values):
        return [m.node.set_parameters([Parameter(k, value=v)])[0] for k, v in values.items()]

    (r,) = set_(takeover_threshold=1.0)
    assert r.successful
    m.policy(0.0, 0.7)  # the new threshold is used from the next update: the policy drives on
    assert m.node.driver == "policy" and m.node.operator.takeovers == 1
    (r,) = set_(operator_timeout_s=0.2)
    assert r.successful
    m.now += 0.3  # past the new timeout (not the old 0.5 s): the base is stopped
    m.policy(0.0, 0.01)
    assert m.node.driver is None and values(m.sent[-1]) == (0.0, 0.0)

    # use_sim_time was accepted: the stops' stamps moved to a sim clock that reads 0 without /clock
    refused = set_(operator_timeout_s=60.0, takeover_threshold="abc", output_topic="cmd_vel", seed=3, use_sim_time=True)
    assert not any(r.successful for r in refused)
    assert "operator_timeout_s: must be a number of seconds in (0, 5], got 60.0" in refused[0].reason
    assert "(takeover_threshold) must be a finite number > 0, got 'abc'" in refused[1].reason
    for r, name in zip(refused[2:], ("output_topic='cmd_vel'", "seed=3", "use_sim_time=True")):
        assert f"{name}: read at startup; restart the node with the new value" in r.reason, r.reason
    assert not m.node.get_clock().ros_time_is_active
    assert m.node.get_parameter("takeover_threshold").value == 1.0 and m.node.operator_timeout == 0.2
    assert m.node.rule.threshold == 1.0 and m.node.get_parameter("output_topic").value == "base/cmd_vel"
    (r,) = set_(output_topic="base/cmd_vel")  # the value in use: nothing changes, accepted
    assert r.successful
    # a startup parameter set to its value as another type (`ros2 param set /takeover_mux seed 0.0`): before,
    # accepted, rclpy stored the double, and the re-check of every parameter after the set raised (over DDS the mux
    # ended with a traceback, the base left without commands)
    seed = m.node.get_parameter("seed").value
    (r,) = set_(seed=float(seed))
    assert not r.successful and f"seed: must be an integer >= 0, got {float(seed)!r}" in r.reason, r.reason
    assert m.node.get_parameter("seed").value == seed
    (r,) = set_(action_scale=array("d", [9.0, 9.0]))  # as a list arrives over DDS: named as a list, not array('d', ..)
    assert "action_scale=[9.0, 9.0]: read at startup" in r.reason, r.reason
    (r,) = set_(action_scale=array("d", m.node.get_parameter("action_scale").value))  # the value in use, over DDS
    assert r.successful, r.reason
    (r,) = set_(policy_timeout_s=0.01)  # the reason names the two timeouts the watch period is held to
    assert "watch_period_s 0.05: must be at most operator_timeout_s 0.2 and policy_timeout_s 0.01" in r.reason, r.reason


def _remote_parameters(probe, node: str, **values):
    """set_parameters over DDS (as `ros2 param set` does): each parameter's (successful, reason), then the values
    the node holds afterwards."""
    from rcl_interfaces.srv import GetParameters, SetParameters
    from rclpy.parameter import parameter_value_to_python

    def call(srv, name, request):
        client = probe.node.create_client(srv, f"/{node}/{name}")
        assert client.wait_for_service(timeout_sec=30.0), f"/{node}/{name} not offered"
        future = client.call_async(request)
        for _ in range(6):  # DDS can match the reply's path after the request's: a reply lost so is asked again
            if probe.wait_for(future.done, 5.0):
                break
            client.remove_pending_request(future)
            future = client.call_async(request)
        assert future.done(), f"no answer from /{node}/{name} in 30 s"
        probe.node.destroy_client(client)
        return future.result()

    request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    results = [(r.successful, r.reason) for r in call(SetParameters, "set_parameters", request).results]
    held = call(GetParameters, "get_parameters", GetParameters.Request(names=list(values))).values
    return results, dict(zip(values, (parameter_value_to_python(v) for v in held)))


def test_parameters_set_over_dds_are_applied_or_refused_with_the_reason(tmp_path):
    env = isolated_ros_env()
    log = tmp_path / "takeover_mux.log"
    proc = start_node_process("liquid_control.ros.takeover_mux", "takeover_mux", {}, env, log)
    probe = Probe(env)
    try:
        results, held = _remote_parameters(
            probe, "takeover_mux", operator_timeout_s=60.0, takeover_threshold="abc", output_topic="cmd_vel"
        )
        assert [ok for ok, _ in results] == [False, False, False], results
        assert "(0, 5], got 60.0" in results[0][1] and "got 'abc'" in results[1][1]
        assert "read at startup; restart the node with the new value" in results[2][1]
        assert held == dict(operator_timeout_s=0.5, takeover_threshold=0.5, output_topic="base/cmd_vel")
        results, held = _remote_parameters(probe, "takeover_mux", takeover_threshold=0.8, operator_timeout_s=1.0)
        assert results == [(True, ""), (True, "")] and held == dict(takeover_threshold=0.8, operator_timeout_s=1.0)
        assert probe.wait_for(lambda: "operator_timeout_s 1 s" in log.read_text(), 10.0), log.read_text()
    finally:
        probe.close()
        stop_process(proc)
    text = log.read_text()
    # by the parameters' names, not the rule as a Python dict ({'threshold': 0.8, ..., 'shadow': False}: before)
    assert (
        "/policy/cmd_vel (policy) or /cmd_vel (operator) -> /base/cmd_vel; takeover_threshold 0.5, "
        "takeover_hold_s 1 s, operator_share 0, operator_timeout_s 0.5 s, policy_timeout_s 0.5 s" in text
    ), text
    assert "parameters changed: takeover_threshold 0.8, takeover_hold_s 1 s, operator_share 0, " in text, text
    assert "{'" not in text and "Traceback" not in text, text


def test_takeover_launch_runs_a_round_the_policy_through_the_mux(launch_stubs, mux, tmp_path):  # noqa: F811
    """launch/takeover.launch.py, the simulated rounds' layout: the joystick on the parameter file's command_topic
    (the labels), the policy node to the mux, the mux to base_topic (with the file's command type and
    action_scale), the recorder on the sensors, the labels and both commands."""
    from test_ros_launch import ROOT, check_node

    from liquid_control.ros.takeover_mux import MUX_PARAMETERS

    path = ROOT / "launch" / "takeover.launch.py"
    declared, nodes = launch_stubs(path, policy="runs/r0/policy.pt", output="bags/r1", operator_share="0.3")
    assert {"params_file", "policy", "base_topic", "operator_share", "seed", "output", "use_sim_time"} <= set(declared)
    assert [(type(n).__name__, n.kwargs["name"]) for n in nodes] == [
        ("LifecycleNode", "policy_node"),
        ("Node", "takeover_mux"),
        ("Node", "bag_recorder"),
    ]
    policy = check_node(nodes[0])  # the rover's parameter file, overrides the node declares
    assert policy == {  # use_sim_time: the file's (before: false, over a robot file's true)
        "autostart": True,
        "policy": "runs/r0/policy.pt",
        "command_topic": "policy/cmd_vel",
    }
    params = nodes[1].kwargs["parameters"][-1]
    assert set(params) <= set(MUX_PARAMETERS) | {"use_sim_time"} and nodes[1].kwargs["executable"] == "takeover_mux"
    assert (params["policy_topic"], params["operator_topic"], params["output_topic"]) == (
        "policy/cmd_vel",
        "cmd_vel",
        "base/cmd_vel",
    )
    assert (
        params["action_scale"] == [1.0, 1.5] and params["command_type"] == "twist" and params["operator_share"] == 0.3
    )
    assert params["command_frame_id"] == "base_link"  # the file's (config/rover_policy.yaml): the policy node's frame
    mux(**{k: v for k, v in params.items() if k != "use_sim_time"})  # the node takes them
    recorder = nodes[2].kwargs["parameters"][-1]
    assert recorder["output"] == "bags/r1"
    # the camera's camera_info too (before: none, so a policy retrained on the round's bags had its field of view
    # recorded as unknown and policy_node compared no camera with it)
    sensors = ["camera/image_raw", "camera/camera_info", "imu/data"]
    assert recorder["topics"] == [*sensors, "cmd_vel", "base/cmd_vel", "policy/cmd_vel"]
    _, nodes = launch_stubs(path, use_sim_time="true", seed="7", base_topic="/wheels/cmd")
    assert [n.kwargs["parameters"][-1]["use_sim_time"] for n in nodes] == [True, True, True]
    # a robot file's use_sim_time: true holds for the policy node (the file) and the mux and recorder (given it)
    robot = tmp_path / "config" / "robot.yaml"
    robot.parent.mkdir()
    robot.write_text((ROOT / "config" / "rover_policy.yaml").read_text() + "    use_sim_time: true\n")
    _, on_sim_time = launch_stubs(path, params_file=str(robot))
    assert "use_sim_time" not in on_sim_time[0].kwargs["parameters"][-1]
    assert [n.kwargs["parameters"][-1]["use_sim_time"] for n in on_sim_time[1:]] == [True, True]
    assert nodes[1].kwargs["parameters"][-1]["seed"] == 7
    assert nodes[2].kwargs["parameters"][-1]["topics"][4] == "/wheels/cmd"
    # a setting the mux would refuse is refused before any node starts, by name
    with pytest.raises(ValueError, match="operator_share"):
        launch_stubs(path, operator_share="1.5")
    for same in ("cmd_vel", "/cmd_vel", "/policy/cmd_vel"):  # the base on the labels' or the policy's topic
        with pytest.raises(ValueError, match="three different topics"):
            launch_stubs(path, base_topic=same)
    with pytest.raises(ValueError, match="private name") as refused:
        launch_stubs(path, base_topic="~/cmd")
    # named as the launch's user gave it (before: the mux's output_topic alone, no launch argument of that name)
    assert str(refused.value).startswith("base_topic (the mux's output_topic): a private name"), refused.value
    with pytest.raises(ValueError) as refused:
        launch_stubs(path, base_topic="cmd_vel")
    assert (
        "policy/cmd_vel (the mux's policy_topic), the parameter file's command_topic (the mux's operator_topic) and "
        "base_topic (the mux's output_topic): must be three different topics"
    ) in str(refused.value), refused.value
    with pytest.raises(ValueError, match="seed: must be an integer, got 'x'"):
        launch_stubs(path, seed="x")
    with pytest.raises(ValueError, match="operator_share: must be a number"):
        launch_stubs(path, operator_share="half")


def test_an_operator_command_with_nan_names_its_topic(mux):
    """Before: 'operator command with NaN/inf ignored', naming no topic (the policy's said its own)."""
    m = mux(operator_topic="joy/cmd_vel")
    said = []

    class Logger:
        def warning(self, text, **_):
            said.append(text)

    m.node.get_logger = lambda: Logger()
    m.operator(math.nan, 0.0)
    assert said == [
        "operator command with NaN/inf on /joy/cmd_vel ignored: the last finite one holds until operator_timeout_s "
        "runs out"
    ]


def test_another_publisher_on_the_base_topic_is_named_in_a_warning(mux):
    """Before: the mux looked at the base's topic only for subscribers of another type; a second publisher there (a
    nav stack's controller, a policy node publishing to the base itself) went unsaid, though the base takes its
    commands too and neither the deadman's stops nor a takeover hold the base."""
    m = mux()
    said = []

    class Logger:
        def warning(self, text, **_):
            said.append(("warning", text))

        def info(self, text, **_):
            said.append(("info", text))

    m.node.get_logger = lambda: Logger()
    m.node._check_types()
    assert not [text for level, text in said if "other publishers" in text]  # the mux's own publisher is no other
    other = rclpy.create_node("nav_controller", context=m.context)
    try:
        other.create_publisher(TwistStamped, "base/cmd_vel", 10)  # one participant: one type per topic
        deadline = time.monotonic() + 10.0
        while not said and time.monotonic() < deadline:  # until the graph shows it
            m.node._check_types()
            time.sleep(0.02)
        assert said and said[0][0] == "warning", said
        assert (
            "/base/cmd_vel (output_topic) has other publishers: /nav_controller (geometry_msgs/msg/TwistStamped)"
            in said[0][1]
        )
        m.node._check_types()
        assert len(said) == 1  # said when they change, not at every check
    finally:
        other.destroy_node()
    deadline = time.monotonic() + 10.0
    while len(said) < 2 and time.monotonic() < deadline:
        m.node._check_types()
        time.sleep(0.02)
    assert said[1] == ("info", "/base/cmd_vel (output_topic): no other publisher now")


def test_the_operators_command_reaches_the_base_unclipped(mux):
    """By design (docs/real_robot.md section 6): the mux has no command limits; the operator, correcting the policy,
    may need more than the policy node's max_command, and what the base executes is the label recorded."""
    m = mux()
    m.operator(5.0, -9.0)
    out, _ = m.policy(0.5, 0.0)  # far apart: the operator takes over
    assert values(out) == (5.0, -9.0) and m.node.driver == "operator"
    m.operator(-7.5, 12.0)  # while it drives, as sent
    assert values(m.sent[-1]) == (-7.5, 12.0)
