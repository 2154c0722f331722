"""policy_node on a simulated clock, driven in-process without DDS (its callbacks called directly): what a clock
that steps forward (an NTP step, a /clock that skips) does to the commands, and what a long run's repeated events
(a sensor slower than the watchdog, a clock going back again and again) write to the log."""

import re

import numpy as np
import pytest
import rclpy
import torch
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Twist
from rclpy.clock import ClockType
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.time import Time as RosTime
from sensor_msgs.msg import Imu, JointState
from test_ros_lifecycle import CONFIG, params  # the tiny balancer policy, its node parameters

from liquid_control.policy import Policy, save_policy
from liquid_control.ros.policy_node import PolicyNode
from liquid_control.ros.testing import isolated_ros_env


@pytest.fixture
def node(tmp_path, request):
    torch.manual_seed(0)
    policy = save_policy(tmp_path / "tiny_balancer.pt", Policy.from_config(CONFIG))
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(isolated_ros_env()["ROS_DOMAIN_ID"]))
    settings = dict(action_scale=[1.0], max_command=[1.0], max_command_rate=[0.1], watchdog_timeout_s=0.5)
    overrides = params(policy, use_sim_time=True, **{**settings, **getattr(request, "param", {})})
    node = PolicyNode(context=context, parameter_overrides=overrides)
    yield node
    node.trigger_shutdown()
    node.destroy_node()
    context.try_shutdown()


START = 1_700_000_000 * 10**9  # ns of the node clock at activation


def _activated(node):
    """Activate ``node`` at START of its simulated clock, its velocity target given; returns ``at(ns)``
    (sets the clock, returns the stamp), the list of published commands, and an IMU and a wheels message."""
    clock, published = node.get_clock(), []

    def at(ns):
        clock.set_ros_time_override(RosTime(nanoseconds=ns, clock_type=ClockType.ROS_TIME))
        return Time(sec=ns // 10**9, nanosec=ns % 10**9)

    at(START)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    publish = node._publish_command
    node._publish_command = lambda command, stamp: (published.append(command.copy()), publish(command, stamp))
    imu, target = Imu(), Twist()
    imu.linear_acceleration.z, imu.angular_velocity.x, target.linear.x = 9.8, 0.3, 0.2
    wheels = JointState(name=list(node._joint_names), velocity=[1.0, 1.0])
    node._on_vector("command", target)
    return at, published, imu, wheels


def test_the_first_command_after_the_clock_steps_forward_an_hour_is_still_rate_limited(node):
    """Node clock and stamps step forward an hour between two IMU messages (the message comes before the
    watchdog's next check): the rate limit credited the whole hour, so that command went from the ramp's ~0.01
    straight to the policy's action (~0.4 here, any value up to ±max_command with a trained one); it now moves at
    most max_command_rate * watchdog_timeout_s (0.05)."""
    at, published, imu, wheels = _activated(node)
    for k, ns in enumerate([START + i * 5_000_000 for i in range(20)] + [START + 3600 * 10**9]):
        imu.header.stamp = wheels.header.stamp = at(ns)
        node._on_vector("wheels", wheels)
        node._on_vector("imu", imu)
        assert len(published) == k + 1
    before, after = published[-2], published[-1]
    assert np.abs(before).max() <= 0.1 * 0.1  # ramped from the activation's stop at 0.1 per second
    assert node.runner.counters["resets.gap"] == 1  # the hour's gap reset the state: another action
    assert np.abs(after - before).max() <= 0.1 * 0.5 + 1e-9  # was ~0.39
    assert np.abs(after - before).max() > 0.01  # the cap allows a step (the policy's action is beyond it)


@pytest.mark.parametrize(
    "node", [dict(max_command_rate=[1e9]), dict(max_command_rate=[float("inf")])], indirect=True, ids=["1e9", "inf"]
)
def test_two_updates_at_one_clock_reading_each_command_their_action_only_without_a_rate_limit(node):
    """Two IMU messages handled at one reading of the node clock (use_sim_time: no /clock message came between them,
    as for a camera frame and an IMU message replayed with `replay --clock`): any finite max_command_rate, the
    default 1e9 ("no limit") too, allows no change in no time, so the second update's command was the first's (26 of
    1,057 commands of a camera + IMU policy replayed so). Before, the limit could not be turned off: .inf (which
    CommandLimiter takes as no limit) was refused at configure ("values must be finite and > 0"); now it is taken
    and each update commands its own action."""
    actions = []
    at, published, imu, wheels = _activated(node)
    submit = node.runner.submit

    def submitted(*args, **kwargs):
        result = submit(*args, **kwargs)
        if result.action is not None:
            actions.append(np.clip(result.action, -1.0, 1.0))  # action_scale 1, max_command 1
        return result

    node.runner.submit = submitted
    clock = START + 10**9  # a second after activation: the ramp from the activation's stop allows anything
    for k in range(4):
        imu.angular_velocity.x = 0.3 * (-1) ** k  # the actions differ from update to update
        wheels.header.stamp = imu.header.stamp = at(clock + k * 5_000_000)
        node._on_vector("wheels", wheels)
        at(clock)  # every update handled at one clock reading, its stamp moving on
        node._on_vector("imu", imu)
    assert len(published) == len(actions) == 4 and np.abs(actions[1] - actions[0]).max() > 1e-3
    if np.isinf(node.settings.max_command_rate[0]):
        np.testing.assert_allclose(np.array(published), np.array(actions), rtol=0, atol=1e-12)
    else:  # the first after a second of ramp; the others held at it
        np.testing.assert_allclose(np.array(published), np.array([actions[0]] * 4), rtol=0, atol=1e-12)


@pytest.mark.parametrize("node", [dict(publish_mode="fixed_rate", control_rate_hz=1.0)], indirect=True)
def test_fixed_rate_commands_further_apart_than_the_watchdog_timeout_ramp_at_the_configured_rate(node):
    """fixed_rate at 1 Hz with watchdog_timeout_s 0.5 (a combination the parameters allow): the cap on elapsed time
    against clock steps (the watchdog timeout) made each command move at most 0.1 * 0.5, half the configured
    max_command_rate of 0.1 per second; the cap is now the longer of the timeout and two control periods, so a tick
    half a period late (at 3.5 s) keeps its due ramp too."""
    at, published, imu, wheels = _activated(node)
    for tick in (1.0, 2.0, 3.5):
        for i in range(5):  # fresh readings just before each tick of the control timer
            imu.header.stamp = wheels.header.stamp = at(START + int(tick * 10**9) - (4 - i) * 5_000_000)
            node._on_vector("wheels", wheels)
            node._on_vector("imu", imu)
        node._on_control_timer()
    steps = np.abs(np.diff(np.array(published), axis=0)).max(axis=1)
    assert len(published) == 3 and np.abs(published[0]).max() > 0.05 + 1e-9, published  # was 0.05 a second
    assert 0.05 + 1e-9 < steps[0] <= 0.1 + 1e-9, steps
    assert 0.1 + 1e-9 < steps[1] <= 0.15 + 1e-9, steps  # the late tick: 1.5 s of ramp


class _Lines:
    """Stands in for the node's logger: keeps ``(level, message)`` of every call."""

    def __init__(self):
        self.lines = []

    def __getattr__(self, level):
        return lambda message, **kwargs: self.lines.append((level, message))

    def said(self, level, start):
        return [m for lv, m in self.lines if lv == level and m.startswith(start)]


@pytest.fixture
def wall(monkeypatch):
    """The node's throttle clock (time.monotonic in policy_node), set by the test: ``wall[0]`` seconds."""
    import types

    from liquid_control.ros import policy_node

    now = [0.0]
    monkeypatch.setattr(policy_node, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    return now


def test_a_sensor_slower_than_the_watchdog_timeout_is_not_logged_at_every_message(node, wall):
    """Wheels at 0.7 s a message under watchdog_timeout_s 0.5 (a sensor slowing down: a camera at 2 fps in the dark)
    for 60 s of node clock and throttle clock alike: each message ended a watchdog stop, and the node wrote a
    warning and an info line for every one (170 lines a minute, for as long as it lasted). Every stop is still
    published and counted (watchdog.stops); the warning comes at most once per log_throttle_s (2 s) and says how
    many stops went unsaid, each with its "fresh again" line."""
    at, published, imu, wheels = _activated(node)
    log = _Lines()
    node.get_logger = lambda: log
    for i in range(60 * 200):  # IMU at 200 Hz, the watchdog's check every 0.125 s
        ns = START + i * 5_000_000
        wall[0] = i * 0.005
        imu.header.stamp = wheels.header.stamp = at(ns)
        if i % 140 == 0:
            node._on_vector("wheels", wheels)
        node._on_vector("imu", imu)
        if i % 25 == 0:
            node._on_watchdog()
    warnings, fresh = log.said("warning", "watchdog: wheels silent"), log.said("info", "watchdog: all inputs fresh")
    assert 25 <= len(warnings) <= 31, len(warnings)  # was 85, and 85 "fresh again"
    assert len(fresh) == len(warnings)
    stops = node.runner.counters["watchdog.stops"]
    assert stops == 85, stops  # one per wheels message but the first: each came 0.2 s after its timeout
    assert node._stops_published >= stops
    unsaid = [int(re.search(r"\((\d+) more watchdog stops", w).group(1)) for w in warnings[1:]]
    assert all(n > 0 for n in unsaid)
    assert 0 <= stops - len(warnings) - sum(unsaid) <= 4  # every stop said or counted (but the last 2 s)


def test_a_clock_going_back_at_every_watchdog_check_is_counted_not_logged_each_time(node, wall):
    """Two /clock publishers (a bag played with --clock beside the simulator, one 30 s behind): the node clock went
    back at every other watchdog check for 60 s, and each jump wrote `node clock jumped back ...` (240 lines a
    minute, for as long as both ran). The first jump is said at once, later ones at most once per log_throttle_s
    (2 s) with how many went unsaid; every one is counted (node_clock.jumps_back)."""
    at, _, _, _ = _activated(node)
    log = _Lines()
    node.get_logger = lambda: log
    for k in range(480):  # a watchdog check every 0.125 s of node clock and throttle clock
        wall[0] = k * 0.125
        at(START + k * 125_000_000 - (30 * 10**9 if k % 2 else 0))
        node._on_watchdog()
    said = log.said("info", "node clock jumped back")
    assert said and said[0].startswith("node clock jumped back 29.875 s"), said[:1]
    assert 25 <= len(said) <= 31, len(said)  # was 240
    jumps = node.runner.counters["node_clock.jumps_back"]
    assert jumps == 240
    unsaid = [int(re.search(r"\((\d+) more jumps back", line).group(1)) for line in said[1:]]
    assert all(n > 0 for n in unsaid) and 0 <= jumps - len(said) - sum(unsaid) <= 8


def test_a_reset_of_one_kind_does_not_hide_the_next_of_another(node, wall):
    """A bag played with --loop whose recording ends after a 2 s silence: the gap reset was logged, and the loop's
    clock_backwards reset 0.5 s later was not (the resets shared one throttle: a log showed no sign that the
    stamps went back). Each kind of reset is throttled on its own, as rejections are per sensor and reason."""
    at, _, imu, wheels = _activated(node)
    log = _Lines()
    node.get_logger = lambda: log
    t = START
    for gap in (0, 2 * 10**9, -60 * 10**9):  # streaming, the silence, the loop back to the bag's start
        t += gap
        for _ in range(100):
            t += 5_000_000
            wall[0] = (t - START) / 1e9 if gap >= 0 else wall[0] + 0.005
            imu.header.stamp = wheels.header.stamp = at(t)
            node._on_vector("wheels", wheels)
            node._on_vector("imu", imu)
    assert node.runner.counters["resets.gap"] == 1 and node.runner.counters["resets.clock_backwards"] == 1
    said = log.said("info", "liquid state reset")
    assert [line.split(")")[0] for line in said] == ["liquid state reset (gap", "liquid state reset (clock_backwards"]


def test_a_stop_that_lasts_is_logged_though_it_came_within_the_throttle_of_the_last(node, wall):
    """Before: wheels went silent for good 1.2 s after a logged stop and its "fresh again" (a flaky driver that then
    died): the stop came within log_throttle_s (2 s) of the last warning, so it was not logged, nor ever after, and
    the log's last watchdog line said "all inputs fresh again, commanding" while the robot stood stopped. A stop
    not logged is logged once the throttle allows while it lasts."""
    at, published, imu, wheels = _activated(node)
    log = _Lines()
    node.get_logger = lambda: log
    for i in range(10 * 200):  # IMU at 200 Hz, the watchdog's check every 0.125 s; wheels at 0 and 0.7 s only
        ns = START + i * 5_000_000
        wall[0] = i * 0.005
        imu.header.stamp = wheels.header.stamp = at(ns)
        if i in (0, 140):
            node._on_vector("wheels", wheels)
        node._on_vector("imu", imu)
        if i % 25 == 0:
            node._on_watchdog()
    said = [(level, m) for level, m in log.lines if m.startswith("watchdog:")]
    assert node.runner.counters["watchdog.stops"] == 2 and node._stale == ["wheels"]
    assert [level for level, _ in said] == ["warning", "info", "warning"], said  # was: warning, info
    assert "(1 more watchdog stops since its last warning" not in said[-1][1]  # this stop is the one said


@pytest.mark.parametrize("watchdog_first", [False, True])
def test_a_bags_loop_with_clock_says_its_late_messages_are_from_before_the_jump(node, wall, watchdog_first):
    """`ros2 bag play --loop --clock`: at each loop point /clock goes back to the bag's start while messages of its
    end are still on their way; they arrive stamped ahead of the node clock and are rejected (future_stamp), warned
    as a stamp 'ahead of the node clock' (what a driver stamping by another clock gets: seen over DDS, one such
    warning at every loop). The warning now says the clock went back just before and the message is from before
    it, whether the watchdog's check saw the jump first or not; the next message of the new timeline restarts the
    state and commands again at once, and a driver stamping ahead of the clock is still warned as before."""
    at, published, imu, wheels = _activated(node)
    log = _Lines()
    node.get_logger = lambda: log
    end = START + 3 * 10**9
    for t in range(START, end, 5_000_000):  # the bag, 3 s of it
        imu.header.stamp = wheels.header.stamp = at(t)
        node._on_vector("wheels", wheels)
        node._on_vector("imu", imu)
    if watchdog_first:
        node._on_watchdog()
    at(START)  # the loop point: the clock goes back to the bag's start
    if watchdog_first:  # its next check sees the jump (the watchdog's times move back)
        node._on_watchdog()
    assert node.runner.counters["node_clock.jumps_back"] == watchdog_first
    wall[0] = 0.5
    for t in (end, end + 5_000_000):  # the bag's last messages, still queued
        imu.header.stamp = Time(sec=t // 10**9, nanosec=t % 10**9)
        node._on_vector("imu", imu)
    assert node.runner.counters["rejected.future_stamp"] == 2
    (said,) = [m for m in log.said("warning", "imu message on /imu/data rejected (future_stamp") if "ahead" in m]
    assert said.startswith("imu message on /imu/data rejected (future_stamp: 3.000 s ahead of the node clock, more ")
    assert f"which went back from {(end - 5_000_000) / 1e9:.3f} s or later just before" in said, said
    assert "a message from before the jump" in said
    commands = len(published)
    imu.header.stamp = wheels.header.stamp = at(START + 5_000_000)  # the bag again
    node._on_vector("wheels", wheels)
    node._on_vector("imu", imu)
    assert len(published) == commands + 1 and node.runner.counters["resets.clock_backwards"] == 1
    imu.header.stamp = Time(sec=(START + 5 * 10**9) // 10**9)  # a driver 5 s ahead: no jump to blame
    wall[0] = 1.0
    node._on_vector("imu", imu)
    ahead = [m for m in log.said("warning", "imu message on /imu/data rejected (future_stamp") if "went back" not in m]
    assert len(ahead) == 1 and ahead[0].startswith("imu message on /imu/data rejected (future_stamp: 4.99")


@pytest.mark.parametrize("node", [dict(max_command_rate=[1.0])], indirect=True)
@pytest.mark.parametrize("clock", ["goes_on", "goes_back"])
def test_a_reset_starts_the_command_from_rest_as_an_activation_does(node, clock):
    """~/reset (what the sim graph calls before each episode) reset the liquid state but not the command limiter:
    the next episode's first command was limited against the last episode's last command (~0.4 here), so it began
    where that one ended (its /clock back at the episode's start: exactly that command, elapsed 0), and so did the
    first label of each episode recorded with `liquid-control sim --record-bag`; in fixed_rate mode the control
    timer went on publishing the discarded state's last action. A reset starts the command from rest, as an
    activation does: the first command is at most max_command_rate * the time since the reset from 0."""
    at, published, imu, wheels = _activated(node)
    t = START
    for _ in range(400):  # 2 s of updates: the command ramps up to the policy's action
        t += 5_000_000
        imu.header.stamp = wheels.header.stamp = at(t)
        node._on_vector("wheels", wheels)
        node._on_vector("imu", imu)
    last = published[-1]
    assert np.abs(last).max() > 0.1, last  # the episode ended moving
    node._pending_action = last  # as fixed_rate mode holds it for the control timer
    response = node._on_reset(None, type("Response", (), {})())
    assert response.success and node.runner.counters["resets.service"] == 1
    node._on_control_timer()  # no update since the reset: nothing to command (was: the old state's action)
    assert len(published) == 400
    t = t + 5_000_000 if clock == "goes_on" else START - 10 * 10**9  # a new episode: /clock back at its start
    imu.header.stamp = wheels.header.stamp = at(t)
    node._on_vector("wheels", wheels)
    node._on_vector("imu", imu)
    assert len(published) == 401
    assert np.abs(published[-1]).max() <= 1.0 * 0.005 + 1e-6, (published[-1], last)  # was within 0.005 of last


@pytest.mark.parametrize("name", ["balance_policy.yaml", "balance_nav_policy.yaml"])
def test_the_shipped_balancer_files_let_each_episodes_first_torque_through_under_sim_time(name):
    """Before: the balancers' parameter files set max_command_rate 1000 N m/s ('torques may change at every update'),
    but any finite rate allows no change at one reading of the node clock, and under sim time (`sim --lockstep`,
    `--use-sim-time`) the first update after ~/reset comes at the reset's /clock reading: every episode's first
    torque was 0 (the policy's was -0.52 N m of 0.6 on balance-nav), in the closed loop and as the label of every
    bag `sim --record-bag` wrote (found by a probe of the balancer worlds). The files now say .inf; the node's
    default is no limit too."""
    import yaml

    from liquid_control.conventions.params import POLICY_NODE_PARAMETERS
    from liquid_control.paths import config_dir
    from liquid_control.runtime.command import CommandLimiter

    values = yaml.safe_load((config_dir() / name).read_text())["/**/policy_node"]["ros__parameters"]
    for rate in (values["max_command_rate"], POLICY_NODE_PARAMETERS["max_command_rate"][0] * 2):
        limiter = CommandLimiter(values["action_scale"], values["max_command"], rate)
        limiter.stop(12.5)  # ~/reset at the episode's start, the /clock at that reading until the first command
        np.testing.assert_allclose(limiter(np.array([-0.87, 0.4]), 12.5), [-0.522, 0.24])


def test_publishers_taking_turns_are_told_by_stamps_that_go_back_and_their_lost_messages_counted(node):
    """The two-publisher check (publishers_interleaved.<sensor>) took an equal stamp for one that went back: two
    targets at one /clock reading (a Twist is stamped on arrival) from two publishers, or a second IMU driver
    publishing the same stamps (each copy a duplicate_stamp, counted as such), were warned as publishers whose
    stamps go back, the diagnostics' level WARN. And while two publishers took turns, missed.<sensor> counted none
    of their lost messages: each message's sequence number was compared with the other publisher's. Now only a
    stamp that goes back at a turn counts, and each publisher's gaps are counted from its own last message."""
    at, published, imu, wheels = _activated(node)
    counters, numbers = node.runner.counters, {}

    def info(gid: int, skipped: int = 0):  # a publisher's MessageInfo (its gid, its next sequence number)
        numbers[gid] = numbers.get(gid, 0) + 1 + skipped
        return {"publisher_gid": {"data": bytes([gid] * 16)}, "publication_sequence_number": numbers[gid]}

    t = START
    for k in range(6):  # targets of one publisher, then of two, two at each /clock reading
        t += 5_000_000
        imu.header.stamp = wheels.header.stamp = at(t)
        node._on_vector("wheels", wheels, info(1))
        node._on_vector("imu", imu, info(2))
        for gid in (4, 4) if k < 3 else (4, 5):
            node._on_vector("command", Twist(), info(gid))
    assert counters["accepted.command"] == 13 and counters["publishers_interleaved.command"] == 0  # was 2
    for _ in range(6):  # a second IMU driver publishing the same stamps
        t += 5_000_000
        imu.header.stamp = wheels.header.stamp = at(t)
        node._on_vector("wheels", wheels, info(1))
        node._on_vector("imu", imu, info(2))
        node._on_vector("imu", imu, info(3))
    assert counters["rejected.duplicate_stamp"] == 6 and counters["publishers_interleaved.imu"] == 0  # was 5
    assert counters["missed.imu"] == 0
    for _ in range(6):  # the second now stamps 0.1 s behind; the first loses 2 messages before each, it 1
        t += 5_000_000
        imu.header.stamp = wheels.header.stamp = at(t)
        node._on_vector("wheels", wheels, info(1))
        node._on_vector("imu", imu, info(2, skipped=2))
        imu.header.stamp = at(t - 100_000_000)
        at(t)
        node._on_vector("imu", imu, info(3, skipped=1))
    assert counters["publishers_interleaved.imu"] == 6 and counters["rejected.out_of_order"] == 6
    assert counters["missed.imu"] == 6 * 2 + 6 * 1  # was 0
    values = {kv.key: kv.value for kv in node.diagnostic_status().values}
    assert values["missed.imu"] == "18" and values["publishers_interleaved.imu"] == "6"
    assert counters["missed.wheels"] == counters["missed.command"] == 0


def test_the_summary_names_each_counter_as_the_diagnostics_do(node, wall):
    """Before: the summary at cleanup ended in a Python dict ({'received.imu': 1, 'reorder.forced': 0, ...})."""
    at, published, imu, wheels = _activated(node)
    imu.header.stamp = wheels.header.stamp = at(START + 5_000_000)
    node._on_vector("wheels", wheels)
    node._on_vector("imu", imu)
    log = _Lines()
    node.get_logger = lambda: log
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    (summary,) = log.said("info", "summary: ")
    counters = dict(part.rsplit(" ", 1) for part in summary.split("; ", 1)[1].split(", "))
    assert counters["received.imu"] == "1" and counters["received.wheels"] == "1", summary
    assert "{" not in summary and "'" not in summary, summary


def test_every_diagnostics_value_is_named_in_docs_ros_md(node, wall):
    """docs/ros.md lists the diagnostics' values: before, reorder.forced, waiting_for_inputs and rejected_total were
    published (and in the summary line) but not listed."""
    from pathlib import Path

    at, _, imu, wheels = _activated(node)
    for i in range(1, 4):
        imu.header.stamp = wheels.header.stamp = at(START + i * 5_000_000)
        node._on_vector("wheels", wheels)
        node._on_vector("imu", imu)
    keys = [value.key for value in node.diagnostic_status().values]
    assert "reorder.forced" in keys and "received.imu" in keys, keys
    text = (Path(__file__).resolve().parents[1] / "docs" / "ros.md").read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks: their fences would pair other backticks
    names = {name.strip() for span in re.findall(r"`([^`]+)`", text) for name in span.split(" / ")}
    # by its name, or its family's (`received.*`, `rate_hz.<sensor>`, `dt_s.{mean,std,min,max}`)
    missing = [k for k in keys if k not in names and not any(n.startswith(k.split(".")[0] + ".") for n in names)]
    assert not missing, missing


def test_an_input_silent_for_exactly_the_watchdog_timeout_is_not_stale_at_any_clock_base(node):
    """The watchdog compares node-clock seconds (floats, 238 ns apart at ~1.7e9 s) with watchdog_timeout_s: an input
    silent exactly the timeout on a grid clock (sim time ticking in whole milliseconds) was stale or fresh by the
    rounding of the two readings, so the same silence stopped the robot at some instants and not at others (the
    runtime's stamp rules count a difference as past its threshold only STAMP_TOLERANCE_S beyond it; the
    watchdog now too). 2 us past the timeout is a stop at every instant."""
    at, published, imu, wheels = _activated(node)
    stale_at_timeout, stale_past = [], []
    for k in range(40):
        last = START + 10**9 + k * 37_000_000  # whole milliseconds, as a grid /clock gives
        imu.header.stamp = wheels.header.stamp = at(last)
        node._on_vector("wheels", wheels)
        node._on_vector("imu", imu)
        at(last + 500_000_000)  # watchdog_timeout_s 0.5 after both
        stale_at_timeout.append(bool(node._stale_inputs(node._now())))
        at(last + 500_002_000)
        stale_past.append(node._stale_inputs(node._now()) == ["imu", "wheels"])
    assert not any(stale_at_timeout), stale_at_timeout
    assert all(stale_past)


def test_no_update_for_exactly_the_watchdog_timeout_is_not_starved_at_any_clock_base(node):
    """The starved check (every input fresh, no state update for longer than watchdog_timeout_s) counts as the
    watchdog does: exactly the timeout on a grid clock is not starved at any instant, 2 us past it is."""
    at, published, imu, wheels = _activated(node)
    starved_at_timeout, starved_past = [], []
    for k in range(40):
        last = START + 10**9 + k * 37_000_000
        at(last)
        node._last_update_at = node._now()  # the last state update then
        node._starved = ""
        at(last + 500_000_000)
        node._check_starved(node._now(), node.settings.watchdog_timeout_s)
        starved_at_timeout.append(bool(node._starved))
        node._starved = ""
        at(last + 500_002_000)
        node._check_starved(node._now(), node.settings.watchdog_timeout_s)
        starved_past.append(bool(node._starved))
    assert not any(starved_at_timeout), starved_at_timeout
    assert all(starved_past)
