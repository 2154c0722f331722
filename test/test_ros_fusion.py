"""policy_node with a camera + IMU policy over real DDS: it subscribes to every sensor the policy names, updates
on every camera and IMU message exactly as the runtime oracle does, and stops when one sensor goes silent."""

import math
import re
import time

import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, Imu, JointState
from std_msgs.msg import Float64MultiArray

from liquid_control.conventions.image_conversion import numpy_to_image
from liquid_control.policy import Policy, save_policy
from liquid_control.ros.testing import Probe, isolated_ros_env, start_node_process, stop_process
from liquid_control.runtime.backends import TorchBackend
from liquid_control.runtime.runner import PolicyRunner, RunnerLimits

H = W = 8
CONFIG = {
    "name": "tiny_fusion",
    "world": "LiquidBalanceNav-v0",
    "observation": {
        "image": {"height": H, "width": W},
        "vectors": {"imu": 6, "wheels": 2},
        "update_on": ["camera", "imu"],
        "timing": ["event", "ages"],
    },
    "encoder": {
        "camera": {"channels": [4], "kernel_sizes": [3], "strides": [2], "features": 8},
        "vectors": {"hidden": [8], "features": 8},
    },
    "core": {"type": "cfc", "units": 8},
    "action": {"size": 2, "low": [-1, -1], "high": [1, 1], "kind": "wheel_torques"},
}
RELIABLE = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory):
    torch.manual_seed(5)
    policy = Policy.from_config(CONFIG)
    with torch.no_grad():
        for p in policy.parameters():
            p.mul_(2.0)
    return save_policy(tmp_path_factory.mktemp("policy") / "tiny_fusion.pt", policy)


def stamp_msg(seconds):
    from builtin_interfaces.msg import Time

    ns = int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def message(sensor, stamp, value):
    if sensor == "camera":
        msg = numpy_to_image(value, "rgb8")
    elif sensor == "imu":
        msg = Imu()
        a, b = msg.angular_velocity, msg.linear_acceleration
        a.x, a.y, a.z, b.x, b.y, b.z = (float(v) for v in value)
    else:
        msg = JointState(name=["wheel_left", "wheel_right"], velocity=[float(v) for v in value])
    msg.header.stamp = stamp_msg(stamp)
    return msg


def start(policy_file, env, tmp_path, **overrides):
    params = dict(
        policy=str(policy_file),
        autostart=True,
        command_topic="wheel_torques",
        command_type="float64_multi_array",
        publish_mode="per_update",
        action_scale=[1.0, 1.0],
        max_command=[10.0, 10.0],
        max_command_rate=[1e9, 1e9],
        watchdog_timeout_s=30.0,
        diagnostics_period_s=0.2,
        max_gap_s=1.0,
        sensor_qos_reliability="reliable",
        camera_qos_depth=50,
    )
    params.update(overrides)
    return start_node_process(
        "liquid_control.ros.policy_node", "policy_node", params, env, log_path=tmp_path / "policy_node.log"
    )


def connect(probe, log):
    pubs = {
        "camera": probe.publisher(Image, "camera/image_raw", RELIABLE),
        "imu": probe.publisher(Imu, "imu/data", RELIABLE),
        "wheels": probe.publisher(JointState, "joint_states", RELIABLE),
    }
    torques = probe.record("wheel_torques", Float64MultiArray, RELIABLE)
    probe.record("/diagnostics", DiagnosticArray)
    ready = probe.wait_for(  # matched endpoints, not just graph entries: nothing published before is lost
        lambda: all(p.get_subscription_count() for p in pubs.values()) and torques.get_publisher_count(), 30.0
    )
    assert ready, f"policy_node did not subscribe to camera, IMU and wheels:\n{log.read_text() if log.exists() else ''}"
    time.sleep(0.3)  # the node's side of the match may trail the probe's
    return pubs


def test_every_camera_and_imu_message_updates_as_the_runtime_does(policy_file, tmp_path):
    env = isolated_ros_env()
    proc = start(policy_file, env, tmp_path)
    probe = Probe(env)
    try:
        pubs = connect(probe, tmp_path / "policy_node.log")
        rng = np.random.default_rng(0)
        t0 = time.time() - 5.0
        # arrival order of a real robot: the frame exposed at 0.020 arrives 25 ms later, after IMU messages
        script = [("wheels", 0.000), ("imu", 0.001), ("camera", 0.002), ("imu", 0.006), ("wheels", 0.007)]
        script += [("imu", 0.011), ("imu", 0.016), ("imu", 0.021), ("imu", 0.026), ("wheels", 0.027)]
        script += [("imu", 0.031), ("imu", 0.036), ("imu", 0.041), ("camera", 0.020), ("imu", 0.046)]
        oracle = PolicyRunner(TorchBackend(Policy.from_config(CONFIG)), RunnerLimits(max_gap_s=1.0))
        oracle.backend.policy.load_state_dict(torch.load(policy_file, weights_only=True)["state_dict"])
        expected = []
        for sensor, offset in script:
            shape = {"camera": (H, W, 3), "imu": (6,), "wheels": (2,)}[sensor]
            value = rng.integers(0, 256, shape, dtype=np.uint8) if sensor == "camera" else rng.normal(size=shape)
            n_before = len(probe.messages("wheel_torques"))
            pubs[sensor].publish(message(sensor, t0 + offset, value))
            result = oracle.submit(sensor, t0 + offset, value)
            if result.status == "updated":
                expected.append(result.action)
                assert probe.wait_for(lambda n=n_before: len(probe.messages("wheel_torques")) > n, 30.0), (
                    f"no command for {sensor} at {offset}"
                )
            else:
                time.sleep(0.05)
        got = np.array([m.data for _, m in probe.messages("wheel_torques")])
        assert len(expected) == 11 and got.shape == (11, 2)  # both frames, every IMU message after the first frame
        np.testing.assert_allclose(got, np.array(expected), atol=1e-5)
        assert oracle.counters["late.camera"] == 1
        assert probe.wait_for(lambda: _diagnostics(probe)[1].get("late.camera") == "1", 30.0)
        values = _diagnostics(probe)[1]
        for sensor, stats in oracle.age_stats().items():  # how old each input was at the updates, in ms
            assert float(values[f"age_ms.{sensor}.max"]) == pytest.approx(stats["max"] * 1e3, abs=1e-3), values
    finally:
        probe.close()
        code = stop_process(proc)
    assert code == 0, (tmp_path / "policy_node.log").read_text()


def _diagnostics(probe):
    msgs = probe.messages("/diagnostics")
    if not msgs:
        return None, {}
    status = msgs[-1][1].status[0]
    return status, {kv.key: kv.value for kv in status.values}


def test_a_silent_imu_triggers_the_watchdog_for_the_imu(policy_file, tmp_path):
    timeout = 0.3
    env = isolated_ros_env()
    proc = start(policy_file, env, tmp_path, watchdog_timeout_s=timeout)
    probe = Probe(env)
    try:
        pubs = connect(probe, tmp_path / "policy_node.log")
        image = np.full((H, W, 3), 100, np.uint8)
        next_at = {"camera": 0.0, "imu": 0.0, "wheels": 0.0}
        period = {"camera": 1 / 30, "imu": 1 / 100, "wheels": 1 / 100}
        value = {"camera": image, "imu": [0, 0, 0.1, 0, 0, 9.8], "wheels": [0.5, 0.5]}

        def publish_for(seconds, until, silent=()):
            """``seconds`` at least, and on until ``until()`` holds (a loaded machine's node takes messages late),
            30 s at most."""
            start = time.monotonic()
            while time.monotonic() - start < seconds or (not until() and time.monotonic() - start < 30.0):
                now = time.monotonic()
                for sensor in next_at:
                    if sensor not in silent and now >= next_at[sensor]:
                        pubs[sensor].publish(message(sensor, time.time(), value[sensor]))
                        next_at[sensor] = now + period[sensor]
                time.sleep(0.002)

        def moving():
            commands = [m for _, m in probe.messages("wheel_torques")]
            return len(commands) >= 30 and any(abs(v) > 1e-4 for m in commands for v in m.data)

        def standing_stop():
            """When the stop after the last command that moved (since the IMU fell silent) was heard, or None. An
            IMU message published before the silence and taken late by a loaded node (after the watchdog's stop)
            is fresh input and may move the robot once more; camera updates alone must not."""
            after = [(t, any(m.data)) for t, m in probe.messages("wheel_torques") if t > silent_since]
            last_move = max((t for t, moved in after if moved), default=-math.inf)
            return next((t for t, moved in after if not moved and t > last_move), None)

        def stopped_and_named():
            """A stop standing for 0.5 s or more (the camera and the wheels went on since, at 30 and 100 Hz: had
            their updates restarted the commands, no stop would stand that long), and a WARN diagnostic naming the
            IMU alone."""
            stop = standing_stop()
            warn = [m.status[0] for t, m in probe.messages("/diagnostics") if t > silent_since]
            named = [w.message for w in warn if w.level == DiagnosticStatus.WARN and "imu" in w.message]
            return any("camera" not in m for m in named) and stop is not None and time.monotonic() - stop >= 0.5

        publish_for(1.0, until=moving)
        assert moving(), [list(m.data) for _, m in probe.messages("wheel_torques")]
        silent_since = time.monotonic()
        publish_for(1.2, until=stopped_and_named, silent=("imu",))  # the camera and the wheels go on
        after = [(t, m) for t, m in probe.messages("wheel_torques") if t > silent_since]
        assert any(not any(m.data) for _, m in after), "no stop command after the IMU went silent"
        # camera updates do not restart the commands: a stop stands for 0.5 s or more, and the robot moved again
        # after a stop once at most (a late IMU message; the camera's updates would restart it at every frame)
        stop, moved = standing_stop(), [any(m.data) for _, m in after]
        restarts = sum(1 for before, now in zip(moved, moved[1:]) if now and not before)
        timeline = [(round(t - silent_since, 3), list(m.data)) for t, m in after]
        assert stop is not None and time.monotonic() - stop >= 0.5 and restarts <= 1, timeline
        warn = [
            m.status[0]
            for t, m in probe.messages("/diagnostics")
            if t > silent_since and m.status[0].level == DiagnosticStatus.WARN
        ]
        # the silent sensor is named, the others not (any warning: should this process pause for longer than the
        # timeout, the camera too falls silent for a moment, rightly named in that moment's warning)
        assert any("imu" in w.message and "camera" not in w.message for w in warn), [w.message for w in warn]
    finally:
        probe.close()
        code = stop_process(proc)
    assert code == 0, (tmp_path / "policy_node.log").read_text()


STALE_MIX_LINE = r"no state update for .* waiting for .*imu -100\d\.\d{3} s"


def test_an_imu_stamping_by_another_clock_gets_no_command_and_is_named_with_its_offset(policy_file, tmp_path):
    """The camera stamps system time, the IMU (and the wheel encoders) a hardware clock 1000 s behind: every IMU
    message was late (dt 0) with an age of 1000 s, and the node commanded from each of them, its diagnostics OK.
    Now no update comes, the diagnostics and the log say what updates wait for, with every input's stamps
    against the node clock. The sensors publish until the log names the stale mix (on a loaded machine the first
    messages reached the node 0.9 s after activation, the log named the passing first reason, the next update
    message's, and the throttle kept the stale mix's line back until the run ended), and 0.6 s more: said once, not
    again at each log_throttle_s as the last update message was a camera's or an IMU's (four lines in 0.8 s)."""
    env = isolated_ros_env()
    log = tmp_path / "policy_node.log"
    proc = start(policy_file, env, tmp_path, watchdog_timeout_s=0.3, log_throttle_s=0.2)
    probe = Probe(env)
    try:
        pubs = connect(probe, log)
        image = np.full((H, W, 3), 100, np.uint8)
        value = {"camera": image, "imu": [0, 0, 0.1, 0, 0, 9.8], "wheels": [0.5, 0.5]}
        offset = {"camera": 0.0, "imu": -1000.0, "wheels": -1000.0}
        period = {"camera": 1 / 30, "imu": 1 / 100, "wheels": 1 / 100}
        next_at = dict.fromkeys(period, 0.0)
        start_at, named_at = time.monotonic(), None
        # 1.5 s at least, and 0.6 s of watchdog checks with fresh inputs after the log named the mix, 30 s at most
        while time.monotonic() - max(start_at + 0.9, named_at or start_at + 30.0) < 0.6:
            now = time.monotonic()
            if named_at is None and re.search(STALE_MIX_LINE, log.read_text()):
                named_at = now
            for sensor in period:
                if now >= next_at[sensor]:
                    pubs[sensor].publish(message(sensor, time.time() + offset[sensor], value[sensor]))
                    next_at[sensor] = now + period[sensor]
            time.sleep(0.002)
        assert probe.wait_for(lambda: "waiting_for_stale" in str(_diagnostics(probe)[1]), 30.0), _diagnostics(probe)
        status, values = _diagnostics(probe)
        assert not [m for _, m in probe.messages("wheel_torques") if any(m.data)]  # no command from that mix
        assert status.level == DiagnosticStatus.WARN and "updates" not in values  # not one update
        assert status.message.startswith("no command: waiting for "), status.message
        assert re.search(
            r"latest stamps minus the node clock: camera [+-]0\.\d{3} s, imu -100\d\.\d{3} s", status.message
        )
    finally:
        probe.close()
        code = stop_process(proc)
    text = log.read_text()
    assert code == 0, text
    assert len(re.findall(STALE_MIX_LINE, text)) == 1, text
