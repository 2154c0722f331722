"""PolicyRunner: stamp-difference updates, held inputs, rejection of bad readings, resets; several update
sensors, messages out of stamp order across sensors (the reordering buffer and late messages)."""

import re

import numpy as np
import pytest

from liquid_control.runtime import runner as R
from liquid_control.runtime.backends import BackendError, ObservationSpec
from liquid_control.runtime.timeline import ReorderBuffer, UpdateClock

CONFIG = {
    "observation": {"image": {"height": 4, "width": 5}, "vectors": {"imu": 6}, "update_on": "camera"},
    "action": {"size": 2, "low": [-1, -1], "high": [1, 1], "kind": "twist"},
}


class LeakyBackend:
    """Oracle backend: state' = state + dt * (input - state) with input = mean(image)/255 + sum(imu);
    records every call so tests can check which dt and inputs each update used."""

    name = "oracle"

    def __init__(self, config=CONFIG):
        self.spec = ObservationSpec.from_config(config)
        self.calls = []
        self.encoded = []
        self.fail_next = False

    def initial_state(self):
        return np.zeros(1, dtype=np.float32)

    def step(self, obs, state, dt, encode=None):
        self.calls.append((dt, {k: v.copy() for k, v in obs.items()}))
        self.encoded.append(encode)
        if self.fail_next:
            mode, self.fail_next = self.fail_next, False
            if mode == "raise":
                raise RuntimeError("weights corrupted")
            return np.array([np.nan, 0.0]), state + 1
        drive = obs["image"].mean() / 255.0 + obs["imu"].sum()
        new = (state + dt * (drive - state)).astype(np.float32)
        return np.array([new[0], -new[0]]), new


def image(value=10):
    return np.full((4, 5, 3), value, dtype=np.uint8)


def imu(value=0.0):
    return np.full(6, value, dtype=np.float32)


@pytest.fixture
def runner():
    return R.PolicyRunner(LeakyBackend(), R.RunnerLimits(max_gap_s=0.5, max_backward_jump_s=0.3, first_update_dt=0.05))


def test_updates_integrate_stamp_differences_with_held_inputs(runner):
    backend = runner.backend
    assert runner.submit("camera", 1.00, image()).status == R.WAITING  # no IMU yet
    assert runner.submit("imu", 1.001, imu(0.1)).status == R.HELD
    first = runner.submit("camera", 1.07, image())
    assert first.status == R.UPDATED and first.dt == pytest.approx(0.05)  # first update: first_update_dt
    # irregular IMU between frames: only the latest is held
    for t, v in [(1.08, 0.2), (1.081, 0.3), (1.13, 0.4)]:
        assert runner.submit("imu", t, imu(v)).status == R.HELD
    second = runner.submit("camera", 1.19, image())  # 120 ms after the previous frame
    third = runner.submit("camera", 1.223, image())  # 33 ms
    assert [c[0] for c in backend.calls] == pytest.approx([0.05, 0.12, 0.033])
    assert second.dt == pytest.approx(0.12) and third.dt == pytest.approx(0.033)
    np.testing.assert_allclose(backend.calls[1][1]["imu"], imu(0.4))  # the latest IMU reading was held
    # the state equals the oracle integrated with those dts
    drive0, drive1 = 10 / 255 + 0.6, 10 / 255 + 2.4
    s = 0.05 * drive0
    s = s + 0.12 * (drive1 - s)
    s = s + 0.033 * (drive1 - s)
    assert runner.state[0] == pytest.approx(s, rel=1e-5)
    assert runner.counters["updates"] == 3


@pytest.mark.parametrize(
    "sensor,value,reason",
    [
        ("imu", np.array([0, 0, np.nan, 0, 0, 0], np.float32), R.NON_FINITE),
        ("imu", np.array([0, 0, np.inf, 0, 0, 0]), R.NON_FINITE),
        ("imu", np.zeros(5, np.float32), R.BAD_SHAPE),
        ("camera", np.zeros((4, 5, 4), np.uint8), R.BAD_SHAPE),
        ("camera", np.zeros((4, 5, 3), np.float32), R.BAD_DTYPE),
        ("imu", np.array(["a"] * 6), R.BAD_DTYPE),
        ("lidar", np.zeros(3), R.UNKNOWN_SENSOR),
    ],
)
def test_bad_values_are_rejected_without_touching_the_state(runner, sensor, value, reason):
    runner.submit("imu", 1.0, imu(0.1))
    runner.submit("camera", 1.0, image())
    runner.submit("camera", 1.1, image())
    before, calls = runner.state, len(runner.backend.calls)
    result = runner.submit(sensor, 1.2, value)
    assert result.status == R.REJECTED and result.reason == reason
    assert runner.counters[f"rejected.{reason}"] == 1
    np.testing.assert_array_equal(runner.state, before)
    assert len(runner.backend.calls) == calls
    # the next good frame integrates from the last good update (1.1), with the last good IMU
    assert runner.submit("camera", 1.25, image()).dt == pytest.approx(0.15)
    np.testing.assert_allclose(runner.backend.calls[-1][1]["imu"], imu(0.1))


def test_duplicate_out_of_order_and_bad_stamps_are_rejected(runner):
    runner.submit("imu", 2.0, imu())
    runner.submit("camera", 2.0, image())
    runner.submit("camera", 2.1, image())
    state = runner.state
    assert runner.submit("camera", 2.1, image()).reason == R.DUPLICATE
    assert runner.submit("camera", 2.05, image()).reason == R.OUT_OF_ORDER
    assert runner.submit("imu", 2.0, imu()).reason == R.DUPLICATE
    assert runner.submit("camera", float("nan"), image()).reason == R.BAD_STAMP
    assert runner.submit("camera", -1.0, image()).reason == R.BAD_STAMP
    assert runner.submit("camera", 9.0, image(), now=2.2).reason == R.FUTURE_STAMP
    np.testing.assert_array_equal(runner.state, state)
    assert runner.rejected_total() == 6
    assert runner.submit("camera", 2.2, image(), now=2.2).dt == pytest.approx(0.1)


def test_backwards_clock_jump_resets_instead_of_integrating_negative_dt(runner):
    runner.submit("imu", 50.0, imu(1.0))
    runner.submit("camera", 50.0, image())
    runner.submit("camera", 50.1, image())
    assert runner.state[0] != 0
    # simulation reset: the clock restarts near zero
    res = runner.submit("imu", 0.01, imu(0.0))
    assert res.status == R.HELD and res.reset == "clock_backwards"
    np.testing.assert_array_equal(runner.state, np.zeros(1))
    assert runner.counters["resets.clock_backwards"] == 1
    first = runner.submit("camera", 0.02, image())
    assert first.status == R.UPDATED and first.dt == pytest.approx(0.05)  # starts a new run
    assert all(c[0] >= 0 for c in runner.backend.calls)


BALANCER = {
    "observation": {"vectors": {"imu": 6, "wheels": 2, "command": 2}, "update_on": "imu"},
    "action": {"size": 2, "low": [-1, -1], "high": [1, 1], "kind": "wheel_torques"},
}


class EchoBackend:
    """Oracle backend for the balancer's inputs: the action is the held setpoint (``command``)."""

    name = "echo"

    def __init__(self):
        self.spec = ObservationSpec.from_config(BALANCER)

    def initial_state(self):
        return np.zeros(1, dtype=np.float32)

    def step(self, obs, state, dt, encode=None):
        return np.asarray(obs["command"], dtype=np.float64), state + dt


@pytest.mark.parametrize("lag", [None, 0.05])
def test_a_setpoint_survives_a_clock_jump_the_sensor_readings_do_not(lag):
    """A clock jump cleared the operator's target with the sensors' readings: updates then waited for a new
    target (the node published nothing). The latest accepted target is held on, also one still in the buffer."""
    runner = R.PolicyRunner(EchoBackend(), R.RunnerLimits(max_backward_jump_s=0.3, reorder_lag_s=lag))
    runner.submit("command", 10.0, np.array([0.5, 0.0]))
    for k in range(12):
        runner.submit("wheels", 10.0 + 0.01 * k, np.zeros(2))
        runner.submit("imu", 10.0 + 0.01 * k, imu())
    assert runner.counters["updates"] > 0
    res = runner.submit("command", 10.12, np.array([0.4, 0.1]))  # the last message before the jump
    np.testing.assert_allclose(runner._held["command"], [0.4, 0.1])  # held on arrival, with a lag too
    res = runner.submit("imu", 1.0, imu())  # the sensors' clock jumps back
    assert res.reset == "clock_backwards" and res.status != R.UPDATED
    missing = runner.missing_inputs() if hasattr(runner, "missing_inputs") else None
    runner.submit("wheels", 1.0, np.zeros(2))
    results = [runner.submit("imu", 1.0 + 0.01 * k, imu()) for k in range(1, 12)]
    updated = [r for r in results if r.status == R.UPDATED]
    assert updated and np.allclose(updated[-1].action, [0.4, 0.1])  # the latest target, not the first
    assert "command" not in missing and "wheels" in missing  # what updates waited for after the jump
    assert runner.setpoints == {"command"}
    # the setpoint's own timeline was forgotten: a target stamped before the old one is a new target, no reset
    res = runner.submit("command", 2.0, np.array([0.0, 0.0]))
    assert res.accepted and res.reset is None and runner.counters["resets.clock_backwards"] == 1
    runner.submit("wheels", 2.0, np.zeros(2))
    runner.reset("service", clear_inputs=True)  # a request (~/reset): the state and the inputs, not the setpoint
    assert set(runner.missing_inputs()) == {"wheels", "imu"} and runner.setpoints == {"command"}
    results = [
        runner.submit(s, 2.0 + 0.01 * k, v) for k in range(1, 12) for s, v in (("wheels", np.zeros(2)), ("imu", imu()))
    ]
    updated = [r for r in results if r.status == R.UPDATED]
    assert updated and updated[0].dt == 0.0  # the first update after the reset (first_update_dt)
    assert all(np.allclose(r.action, [0.0, 0.0]) for r in updated)  # the target of 2.0, held across the request
    assert runner.counters["resets.service"] == 1


def test_with_a_reordering_lag_a_setpoint_is_held_on_arrival_whatever_clock_stamped_it():
    """policy_node stamps a target (a Twist: no header) on arrival with its clock; eval --bag and train --bag with the
    bag's log time. With a reordering lag the target went into the buffer by that stamp: replayed without --clock (the
    node clock now, the bag's readings stamped on the recording day) a target stamped now stayed there until the next
    one and released every later reading on arrival (the lag gone), so the node's commands differed from eval --bag's
    from the first one (a balancer with reorder_lag_s 0.02: by up to 0.16 N m). Held on arrival, the updates are the
    same whichever clock stamped it, and the lag still holds the readings."""
    period, lag = 1 / 64, 4 / 64  # exact in binary: no rounding decides a release

    def run(target_clock: float):
        runner = R.PolicyRunner(EchoBackend(), R.RunnerLimits(reorder_lag_s=lag))
        updates = []  # (stamp of the reading released, the reading that released it, the action)
        for k in range(40):
            t = 10.0 + k * period
            if k in (0, 15, 30):  # the operator's new target, stamped by the receiver's clock on arrival
                runner.submit("command", target_clock + t, np.array([0.1 * k, -0.1]))
            for sensor, value in (("wheels", np.zeros(2)), ("imu", imu())):
                result = runner.submit(sensor, t, value)
                if result.status == R.UPDATED:
                    updates += [(stamp, t, tuple(result.action)) for stamp in result.update_stamps]
        return updates

    same_clock, other_clock = run(0.0), run(1.7e9)  # the readings' clock; a wall clock of today
    assert same_clock == other_clock  # was: the target stamped 1.7e9 never held, every reading released at once
    assert len(same_clock) == 36 and all(t == stamp + lag for stamp, t, _ in same_clock)  # the last 4 still held back
    # the target in force from its arrival: the updates released from then on use it (each a single update here,
    # so its action is the one the release returns)
    released = [action for stamp, _, action in same_clock if stamp in (10.0 + 10 * period, 10.0 + 11 * period)]
    np.testing.assert_allclose(released, [(0.0, -0.1), (1.5, -0.1)], rtol=1e-6)  # k 10 before it came, 11 after


@pytest.mark.parametrize("lag", [None, 0.05])
def test_a_setpoint_with_the_stamp_of_the_one_before_is_the_new_target_not_a_duplicate(lag):
    """Before: a second target stamped as the first was rejected as duplicate_stamp and the first stayed in force.
    policy_node stamps a Twist on arrival with its clock, which under use_sim_time reads the same for two arrivals
    between /clock messages (sim_node, real time: 7 of 6,523 targets dropped). A sensor's duplicate is still one."""
    runner = R.PolicyRunner(EchoBackend(), R.RunnerLimits(reorder_lag_s=lag))
    runner.submit("command", 10.0, np.array([0.5, 0.0]))
    res = runner.submit("command", 10.0, np.array([0.2, 0.1]))
    assert res.accepted and runner.counters[f"rejected.{R.DUPLICATE}"] == 0
    results = []
    for k in range(12):
        results.append(runner.submit("wheels", 10.0 + 0.01 * k, np.zeros(2)))  # with a lag, releases updates
        results.append(runner.submit("imu", 10.0 + 0.01 * k, imu()))
    updated = [r for r in results if r.status == R.UPDATED]
    assert updated and all(np.allclose(r.action, [0.2, 0.1]) for r in updated)  # the newer target
    assert runner.submit("imu", 10.11, imu()).reason == R.DUPLICATE


@pytest.mark.parametrize("step_back_s", [0.2, 0.6])  # within, then past max_backward_jump_s (0.3)
def test_a_target_after_the_node_clock_stepped_back_is_in_force_at_once_and_resets_nothing(step_back_s):
    """policy_node stamps a target (a Twist) on arrival with its clock, which an NTP step sets back while the IMU
    and wheels stamp by their own: an operator's stop sent then was rejected as out_of_order for up to
    max_backward_jump_s, the old target driving on; past it, the stop reset the state and cleared every reading
    (clock_backwards) though no sensor's stamps went back. Arrival is a target's order."""
    runner = R.PolicyRunner(EchoBackend(), R.RunnerLimits(max_backward_jump_s=0.3))
    node_clock = 1_700_000_000.0
    runner.submit("command", node_clock, np.array([0.5, 0.0]))
    for k in range(5):
        runner.submit("wheels", 500.0 + 0.01 * k, np.zeros(2))
        assert runner.submit("imu", 500.0 + 0.01 * k, imu()).status == R.UPDATED
    stop = runner.submit("command", node_clock - step_back_s, np.zeros(2))
    assert stop.accepted and stop.reset is None
    runner.submit("wheels", 500.05, np.zeros(2))
    after = runner.submit("imu", 500.05, imu())
    assert after.status == R.UPDATED and np.allclose(after.action, [0.0, 0.0])  # the stop, at the next update
    assert after.dt == pytest.approx(0.01) and runner.counters["resets.clock_backwards"] == 0
    assert runner.counters[f"rejected.{R.OUT_OF_ORDER}"] == 0


def test_equal_stamps_of_an_update_and_a_held_sensor_update_with_that_instants_reading_whatever_arrived_first():
    """An IMU (updates) and wheel encoders (held) stamped at one instant by one microcontroller, within the
    reordering lag: the update held the previous wheel reading when the IMU arrived first and the same instant's
    when the wheels did, so a recorder and the node (two subscribers, either order) disagreed. At an equal stamp
    the held sensor's message is released first."""

    class Seen(EchoBackend):
        def __init__(self):
            super().__init__()
            self.seen = []  # per update: (imu reading, wheels reading) it integrated

        def step(self, obs, state, dt, encode=None):
            self.seen.append((float(obs["imu"][0]), float(obs["wheels"][0])))
            return super().step(obs, state, dt, encode)

    def run(wheels_first: bool):
        backend = Seen()
        runner = R.PolicyRunner(backend, R.RunnerLimits(reorder_lag_s=0.03))
        runner.submit("command", 0.0, np.zeros(2))
        for k in range(1, 30):
            pair = [("imu", imu(k)), ("wheels", np.full(2, float(k)))]
            for sensor, value in reversed(pair) if wheels_first else pair:
                runner.submit(sensor, 10.0 + 0.005 * k, value)
        return backend.seen

    imu_first, wheels_first = run(False), run(True)
    assert len(imu_first) > 20 and imu_first == wheels_first
    assert all(i == w for i, w in imu_first)  # each update with its own instant's wheels (was k - 1: IMU first)


def test_a_reading_its_receiver_rejects_is_counted_as_the_runner_counts_its_own(runner):
    """The node and the bag reader counted the readings they reject themselves by hand, differently: a bad image
    encoding was not counted for the camera (rejected_by_sensor), a JointState without a joint was."""
    before = runner.state
    result = runner.reject("camera", "bad_encoding")
    assert result.status == R.REJECTED and result.reason == "bad_encoding" and not result.accepted
    assert runner.submit("camera", 5.0, image(), now=0.0).reason == R.FUTURE_STAMP  # the runner's own
    counters = runner.counters
    assert counters["received.camera"] == 2 and counters["rejected_by_sensor.camera"] == 2
    assert counters["rejected.bad_encoding"] == 1 and counters["rejected.future_stamp"] == 1
    assert runner.rejected_total() == 2 and "accepted.camera" not in counters
    np.testing.assert_array_equal(runner.state, before)


def test_large_gap_resets_the_state(runner):
    runner.submit("imu", 1.0, imu(1.0))
    runner.submit("camera", 1.0, image())
    runner.submit("camera", 1.1, image())
    runner.submit("imu", 2.99, imu(1.0))  # the held IMU fresh (an input 1.9 s old holds the update: see below)
    res = runner.submit("camera", 3.0, image())  # camera stale for 1.9 s > max_gap_s
    assert res.status == R.UPDATED and res.reset == "gap" and res.dt == pytest.approx(0.05)
    drive = 10 / 255 + 6.0
    assert runner.state[0] == pytest.approx(0.05 * drive, rel=1e-5)  # one first_update_dt step from zero


def test_failing_inference_keeps_the_previous_state(runner):
    runner.submit("imu", 1.0, imu(1.0))
    runner.submit("camera", 1.0, image())
    before = runner.state
    runner.backend.fail_next = True
    res = runner.submit("camera", 1.1, image())
    assert res.status == R.REJECTED and res.reason == R.INFERENCE_ERROR
    assert res.detail == "the model returned a non-finite action"  # the cause, for the node's log
    np.testing.assert_array_equal(runner.state, before)
    assert runner.submit("camera", 1.2, image()).dt == pytest.approx(0.2)
    runner.backend.fail_next = "raise"
    res = runner.submit("camera", 1.3, image())
    assert res.reason == R.INFERENCE_ERROR and res.detail == "RuntimeError: weights corrupted"
    assert runner.counters[f"rejected.{R.INFERENCE_ERROR}"] == 2


def test_reset_request_and_stats(runner):
    runner.submit("imu", 1.0, imu(1.0))
    for t in (1.0, 1.05, 1.15):
        runner.submit("camera", t, image())
    stats = runner.dt_stats()
    assert stats["n"] == 3 and stats["max"] == pytest.approx(0.1) and stats["min"] == pytest.approx(0.05)
    assert set(runner.latency_stats()) == {"p50", "p99", "max"}
    runner.reset()
    np.testing.assert_array_equal(runner.state, np.zeros(1))
    assert runner.submit("camera", 1.2, image()).dt == pytest.approx(0.05)
    assert runner.counters["resets.request"] == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_gap_s": 0},
        {"max_backward_jump_s": float("nan")},
        {"first_update_dt": -0.1},
        {"first_update_dt": 5.0},
        {"reorder_lag_s": -0.01},
        {"reorder_lag_s": 2.0},
    ],
)
def test_limits_are_validated(kwargs):
    with pytest.raises(ValueError):
        R.RunnerLimits(**kwargs)


# ----------------------------------------------------------------------------------- several update sensors
FUSION = {
    "observation": {
        "image": {"height": 4, "width": 5},
        "vectors": {"imu": 6, "wheels": 2},
        "update_on": ["camera", "imu"],
        "timing": ["event", "ages"],
    },
    "action": {"size": 2, "low": [-1, -1], "high": [1, 1], "kind": "wheel_torques"},
}


def fusion_runner(lag=None, **limits):
    limits = {"max_gap_s": 0.5, "first_update_dt": 0.0, **limits}
    return R.PolicyRunner(LeakyBackend(FUSION), R.RunnerLimits(reorder_lag_s=lag, **limits))


def wheels():
    return np.zeros(2, np.float32)


def reading(sensor):
    return {"camera": image, "imu": imu, "wheels": wheels}[sensor]()


def test_every_update_sensor_advances_the_state_by_the_stamp_difference():
    runner = fusion_runner()
    backend = runner.backend
    assert runner.submit("wheels", 0.999, wheels()).status == R.HELD
    assert runner.submit("imu", 1.000, imu(0.1)).status == R.WAITING  # no camera frame yet
    first = runner.submit("camera", 1.002, image(20))
    assert first.status == R.UPDATED and first.dt == 0.0 and first.stamp == pytest.approx(1.002)
    stamps = [1.007, 1.012, 1.017, 1.035, 1.040]  # IMU, IMU, IMU, camera, IMU
    sensors = ["imu", "imu", "imu", "camera", "imu"]
    for sensor, stamp in zip(sensors, stamps):
        value = image(30) if sensor == "camera" else imu(0.2)
        assert runner.submit(sensor, stamp, value).status == R.UPDATED
    dts = [c[0] for c in backend.calls]
    np.testing.assert_allclose(dts, np.diff([1.002] + stamps, prepend=1.002), atol=1e-12)
    events = [int(c[1]["event"]) for c in backend.calls]
    assert events == [0, 1, 1, 1, 0, 1]  # index into update_on: camera, imu
    # ages of [camera, imu] at each update: the stamp difference to each sensor's latest message
    np.testing.assert_allclose(backend.calls[3][1]["ages"], [1.017 - 1.002, 0.0], atol=1e-6)
    np.testing.assert_allclose(backend.calls[5][1]["ages"], [1.040 - 1.035, 0.0], atol=1e-6)
    # the CNN runs only on camera updates; the vector MLP when the IMU (or the wheels) changed
    assert backend.encoded == [
        ("camera", "vectors"),
        ("vectors",),
        ("vectors",),
        ("vectors",),
        ("camera",),
        ("vectors",),
    ]
    assert runner.counters["updates"] == 6 and not any(k.startswith("late.") for k in runner.counters)


def test_late_camera_frame_updates_with_zero_dt_and_is_counted():
    """Lag 0: a frame stamped at exposure arrives after IMU messages stamped after it. It is used (never a
    negative dt, never dropped silently): dt 0, its age tells the cell how old it is, ``late.camera`` counts it."""
    runner = fusion_runner(lag=0.0)
    runner.submit("wheels", 0.9, wheels())
    runner.submit("camera", 0.95, image())
    runner.submit("imu", 1.000, imu())
    runner.submit("imu", 1.005, imu())
    runner.submit("imu", 1.010, imu())
    late = runner.submit("camera", 0.985, image(40))  # exposed at 0.985, delivered after the 1.010 IMU
    assert late.status == R.UPDATED and late.dt == 0.0 and late.stamp == pytest.approx(1.010)
    assert runner.counters["late.camera"] == 1
    np.testing.assert_allclose(runner.backend.calls[-1][1]["ages"], [1.010 - 0.985, 0.0], atol=1e-6)
    assert runner.submit("imu", 1.015, imu()).dt == pytest.approx(0.005)
    assert all(c[0] >= 0 for c in runner.backend.calls)


def test_a_held_input_stamped_before_the_previous_update_is_counted_late():
    """A held input (the balancer's wheels beside its IMU updates) delivered later than the lag allowed: the
    update at its stamp went on with its reading before, and nothing said so (only update sensors counted
    ``late.<sensor>``), so a reorder_lag_s too short for it was invisible in the diagnostics (seen with two
    policy nodes under rclpy's MultiThreadedExecutor: wheel messages handled after the next IMU's update)."""
    runner = fusion_runner(lag=0.0)
    runner.submit("wheels", 0.990, wheels())
    runner.submit("camera", 0.995, image())
    assert runner.submit("imu", 1.000, imu()).status == R.UPDATED
    assert runner.submit("wheels", 1.000, wheels()).status == R.HELD  # the update's own stamp: not late
    assert runner.submit("imu", 1.010, imu()).status == R.UPDATED
    assert runner.submit("wheels", 1.005, wheels()).status == R.HELD  # the 1.010 update went on without it
    assert runner.counters["late.wheels"] == 1
    assert runner.submit("wheels", 1.012, wheels()).status == R.HELD
    assert runner.counters["late.wheels"] == 1 and "late.camera" not in runner.counters


def test_reordering_buffer_releases_in_stamp_order_after_the_lag():
    """Lag 30 ms: a frame stamped 0.935 that arrives after the 0.950 IMU message is released in stamp order,
    not late; every message waits until one stamped 30 ms after it has arrived (the lag's latency cost)."""
    runner = fusion_runner(lag=0.03)
    arrivals = [("wheels", 0.900), ("imu", 0.900), ("camera", 0.909)]
    assert [runner.submit(s, t, reading(s)).status for s, t in arrivals] == [R.QUEUED] * 3
    first = runner.submit("imu", 0.940, imu())  # releases everything stamped <= 0.910
    assert first.status == R.UPDATED and first.updates == 1 and first.stamp == pytest.approx(0.909)
    arrivals = [("imu", 0.945), ("imu", 0.950), ("camera", 0.935), ("imu", 0.955), ("imu", 0.960)]
    assert [runner.submit(s, t, reading(s)).status for s, t in arrivals] == [R.QUEUED] * 5
    assert runner.submit("imu", 0.971, imu()).updates == 2  # camera 0.935, imu 0.940
    assert runner.submit("imu", 1.0015, imu()).updates == 5  # imu 0.945 ... 0.960, 0.971
    dts = [c[0] for c in runner.backend.calls]
    events = [int(c[1]["event"]) for c in runner.backend.calls]
    assert events == [0, 0, 1, 1, 1, 1, 1, 1]
    np.testing.assert_allclose(dts, [0.0, 0.026, 0.005, 0.005, 0.005, 0.005, 0.005, 0.011], atol=1e-9)
    assert "late.camera" not in runner.counters and runner.reorder_lag_s == 0.03


def test_updates_released_together_each_carry_their_stamp_and_reset():
    """One message can release several updates; each comes back with its own stamp and the reset before it
    (bag capture labels each update by these)."""
    runner = fusion_runner(lag=0.03, first_update_dt=0.05)
    for sensor, t in [("wheels", 0.90), ("imu", 0.90), ("camera", 0.91)]:
        assert runner.submit(sensor, t, reading(sensor)).status == R.QUEUED
    first = runner.submit("imu", 1.60, imu())  # after 0.7 s of silence: releases 0.90-0.91
    assert first.update_stamps == pytest.approx((0.91,)) and first.update_resets == (None,)
    for sensor, t in [("wheels", 1.605), ("camera", 1.608), ("imu", 1.61), ("imu", 1.62)]:
        assert runner.submit(sensor, t, reading(sensor)).status == R.QUEUED
    result = runner.submit("imu", 1.70, imu())  # releases 1.60 (waits: the frame is 0.69 s old), 1.605 ... 1.62
    assert result.update_stamps == pytest.approx((1.608, 1.61, 1.62))
    assert result.update_resets == ("gap", None, None) and result.reset == "gap"  # 1.608 - 0.91 > max_gap_s
    assert result.updates == 3 and result.stamp == pytest.approx(1.62)
    assert [c[0] for c in runner.backend.calls] == pytest.approx([0.05, 0.05, 0.002, 0.01])


def test_reordering_buffer_is_bounded_and_counts_early_releases():
    buffer = ReorderBuffer(lag_s=10.0, capacity=3)
    assert buffer.push("imu", 1.0) == [] and buffer.push("imu", 1.1) == [] and buffer.push("imu", 1.2) == []
    assert buffer.push("camera", 0.5) == [("camera", 0.5, None)]  # full: the oldest leaves early
    assert buffer.forced == 1 and len(buffer) == 3
    with pytest.raises(ValueError):
        ReorderBuffer(lag_s=-1.0)


def test_update_clock_never_integrates_a_negative_dt():
    clock = UpdateClock(["camera", "imu"], required=["camera", "imu", "wheels"], first_update_dt=0.0)
    assert clock.release("imu", 1.0) is None  # waiting for the camera and the wheels
    assert clock.release("wheels", 1.0) is None
    first = clock.release("camera", 0.99)
    assert first.dt == 0.0 and first.stamp == 0.99 and first.event == 0
    rng = np.random.default_rng(0)
    previous = first.stamp
    for _ in range(200):
        sensor = "camera" if rng.random() < 0.2 else "imu"
        update = clock.release(sensor, previous + rng.uniform(-0.05, 0.01))
        assert update.dt >= 0 and update.stamp == pytest.approx(previous + update.dt)
        assert min(update.ages) >= 0
        previous = update.stamp
    assert clock.late["camera"] + clock.late["imu"] > 0


def test_config_update_sensor_must_be_an_input():
    spec = dict(FUSION, observation=dict(FUSION["observation"], update_on=["camera", "gps"]))
    with pytest.raises(BackendError, match=r"update_on\[1\] 'gps'"):
        ObservationSpec.from_config(spec)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"timing": 5}, "observation.timing must list distinct time inputs"),
        ({"timing": ["event", "event"]}, "observation.timing must list distinct time inputs"),
        ({"reorder_lag_s": 1e9}, "observation.reorder_lag_s must be seconds in [0, 1]"),
        ({"resample_hz": 100.0}, "a resampling baseline steps on a fixed-rate clock"),
    ],
)
def test_time_keys_of_an_untrusted_config_are_checked(change, message):
    """ONNX metadata and bag training read these keys without liquid_control.policy's validation: a bad value is
    a BackendError naming the key, and a resampled baseline is refused instead of being stepped on events."""
    config = {**CONFIG, "observation": {**CONFIG["observation"], **change}}
    with pytest.raises(BackendError, match=re.escape(message)):
        ObservationSpec.from_config(config)


def test_bag_data_spec_takes_the_nodes_reorder_lag(tmp_path):
    """Training from bags and `eval --bag` use the lag of the node's parameter file, as policy_node does."""
    from liquid_control.bags.stream import data_spec

    params = tmp_path / "node.yaml"
    params.write_text("policy_node:\n  ros__parameters:\n    reorder_lag_s: 0.05\n")
    config = {
        **CONFIG,
        "world": "LiquidRover-v0",
        "observation": {**CONFIG["observation"], "update_on": ["camera", "imu"]},
    }
    spec = data_spec(config, node_params=params)
    assert spec.limits.reorder_lag_s == 0.05 and spec.describe()["limits"]["reorder_lag_s"] == 0.05
    assert R.PolicyRunner(LeakyBackend(config), spec.limits).reorder_lag_s == 0.05
    assert data_spec(config).limits.reorder_lag_s is None  # the default (-1): the policy's own


def test_a_policy_or_a_dict_of_limits_given_to_the_runner_is_a_type_error_saying_what_it_takes():
    """Before: PolicyRunner(policy) raised "AttributeError: 'Policy' object has no attribute 'spec'" and
    PolicyRunner(backend, {"max_gap_s": 1}) "'dict' object has no attribute 'reorder_lag_s'"."""

    class PolicyLike:  # what a Policy offers: step and initial_state, no spec
        def step(self, *args, **kwargs): ...

        def initial_state(self, batch): ...

    with pytest.raises(TypeError, match=r"needs a backend .* got PolicyLike: .*TorchBackend\(policy\)"):
        R.PolicyRunner(PolicyLike())
    with pytest.raises(TypeError, match="limits must be a RunnerLimits .* got dict"):
        R.PolicyRunner(LeakyBackend(), {"max_gap_s": 1.0})


@pytest.mark.parametrize("name", ["max_gap_s", "max_backward_jump_s", "max_future_stamp_s", "first_update_dt"])
@pytest.mark.parametrize("value", ["0.5", None, True])
def test_a_limit_that_is_not_a_number_is_a_type_error_naming_it(name, value):
    """Before: float's bare "must be real number, not str" (or a bool taken as 1 s)."""
    with pytest.raises(TypeError, match=rf"{name} must be a number of seconds, got"):
        R.RunnerLimits(**{name: value})


def test_limits_of_any_real_type_still_work():
    limits = R.RunnerLimits(max_gap_s=np.float32(2.0), max_backward_jump_s=1, first_update_dt=0, reorder_lag_s=None)
    assert limits.max_gap_s == 2.0 and R.RunnerLimits(reorder_lag_s=0.1).reorder_lag_s == 0.1
    with pytest.raises(TypeError, match="reorder_lag_s must be a number of seconds, got str"):
        R.RunnerLimits(reorder_lag_s="0.1")


@pytest.mark.parametrize("now", [float("nan"), float("inf"), "12.0"])
def test_a_receiver_clock_that_is_not_a_finite_time_is_a_value_error(runner, now):
    """Before: now=NaN turned the future-stamp check off silently (every comparison with NaN is false), and a
    string was a bare "can only concatenate str (not "float") to str"."""
    with pytest.raises(ValueError, match="now must be a finite time in seconds"):
        runner.submit("imu", 0.01, imu(), now=now)
    assert runner.counters["accepted.imu"] == 0
    assert runner.submit("imu", 0.01, imu(), now=np.float32(0.0)).accepted  # any real type
    assert runner.submit("camera", 5.0, image(), now=0.0).reason == R.FUTURE_STAMP


def test_a_policys_reordering_lag_must_be_below_the_gap_that_resets_the_state():
    """RunnerLimits refused its own reorder_lag_s >= max_gap_s, but a policy's observation.reorder_lag_s (up to
    1 s) was taken unchecked: every update then waited out a gap that resets the state."""
    config = {**FUSION, "observation": {**FUSION["observation"], "reorder_lag_s": 0.6}}
    with pytest.raises(ValueError, match=r"observation.reorder_lag_s: 0.6 s\) must be below max_gap_s \(0.5 s\)"):
        R.PolicyRunner(LeakyBackend(config), R.RunnerLimits(max_gap_s=0.5))
    runner = R.PolicyRunner(LeakyBackend(config), R.RunnerLimits(max_gap_s=1.0))
    assert runner.reorder_lag_s == 0.6
    # a lag the node's limits give explicitly is RunnerLimits' to check (and overrides the policy's)
    assert R.PolicyRunner(LeakyBackend(config), R.RunnerLimits(max_gap_s=0.5, reorder_lag_s=0.1)).reorder_lag_s == 0.1


# ----------------------------------------------------------------------------------- inputs stale by their stamps
@pytest.mark.parametrize("lag", [0.0, 0.03])
def test_an_imu_stamping_by_another_clock_holds_every_update_and_says_by_how_much(lag):
    """A camera driver stamping system time beside an IMU stamping time since boot: every IMU message was late
    (dt 0) and the cell saw an IMU age of 1.7e9 s; a command came from every message. Updates now wait, and
    ``stale_inputs`` names the IMU (and the wheels, on the same clock) with the offset."""
    runner = fusion_runner(lag=lag)
    system, boot = 1.7e9, 1000.0
    results = []
    for k in range(40):  # 200 ms: IMU and wheels at 200 Hz, camera at 30 Hz (stamped by another clock)
        results.append(runner.submit("imu", boot + k * 0.005, imu(0.1), now=system + k * 0.005))
        results.append(runner.submit("wheels", boot + k * 0.005, wheels(), now=system + k * 0.005))
        if k % 6 == 0:
            results.append(runner.submit("camera", system + k * 0.005, image(), now=system + k * 0.005))
    assert all(r.accepted and r.status != R.UPDATED for r in results)
    assert runner.backend.calls == [] and runner.counters["updates"] == 0
    stale = runner.stale_inputs()
    assert set(stale) in ({"imu", "wheels"}, {"camera"})  # which one is "stale" depends on which released last
    assert all(abs(abs(age) - (system - boot)) < 1.0 for age in stale.values())
    assert runner.counters["waiting_for_stale.imu"] > 0 and runner.counters["waiting_for_stale.camera"] > 0


def test_an_imu_that_dies_holds_updates_once_older_than_max_gap_and_its_return_resets_the_state():
    """The IMU stops for 2 s while the camera goes on: the camera frames updated the state with the last IMU
    reading aged up to 2 s (max_gap_s 0.5), and when the IMU came back the state went on from that memory. Now
    no update sees an input older than max_gap_s, and the first update after the return starts afresh."""
    runner = fusion_runner(first_update_dt=0.01)
    backend = runner.backend
    runner.submit("wheels", 0.999, wheels())
    t, results = 1.0, []
    while t < 4.0:
        if not 1.5 < t < 3.5:  # the IMU (and the wheels beside it) silent from 1.5 s to 3.5 s
            runner.submit("wheels", t - 1e-4, wheels())
            results.append(("imu", t, runner.submit("imu", t, imu(0.1))))
        if round(t * 200) % 6 == 0:
            results.append(("camera", t, runner.submit("camera", t + 2e-4, image())))
        t = round(t + 0.005, 6)
    ages = np.array([c[1]["ages"] for c in backend.calls])
    assert ages.max() <= 0.5 + 1e-9  # the cell never saw an input older than max_gap_s
    waited = [(s, t) for s, t, r in results if r.status == R.WAITING and t > 1.5]
    assert waited and min(t for _, t in waited) == pytest.approx(2.0, abs=0.04)  # camera frames, once stale
    back = next(r for s, t, r in results if s == "imu" and t >= 3.5)
    assert back.status == R.UPDATED and back.reset == "gap" and back.dt == 0.01  # 3.5 - 2.0 > max_gap_s
    assert runner.counters["waiting_for_stale.imu"] > 0 and runner.counters["resets.gap"] == 1
    assert runner.stale_inputs() == {}


def test_a_camera_silent_just_over_max_gap_resets_the_state_when_it_returns():
    """The camera stops for 0.8 s (max_gap_s 0.5) while the IMU goes on: IMU updates run while the frame is
    under 0.5 s old, then wait; the return's dt (0.3 s) is below max_gap_s, but the memory integrated a frame up
    to 0.5 s old: the return resets it (``stale_input``) instead of integrating on."""
    runner = fusion_runner(first_update_dt=0.01)
    runner.submit("wheels", 0.999, wheels())
    runner.submit("camera", 1.0, image())
    for k in range(1, 200):  # IMU at 200 Hz from 1.005 s to 1.995 s, with the wheels
        t = 1.0 + k * 0.005
        runner.submit("wheels", t - 1e-4, wheels())
        result = runner.submit("imu", t, imu())
        assert result.status == (R.UPDATED if t <= 1.5 + 1e-9 else R.WAITING), t
    assert runner.stale_inputs() == {"camera": pytest.approx(1.995 - 1.0)}
    back = runner.submit("camera", 1.8, image(40))  # the camera again, stamped 1.8 s (0.3 s after the last update)
    assert back.status == R.UPDATED and back.reset == R.STALE_INPUT and back.dt == 0.01
    assert runner.counters["resets.stale_input"] == 1


def test_age_stats_give_each_update_sensors_age_at_the_updates():
    """An IMU stamping by a clock 0.3 s behind the camera's (under max_gap_s): every IMU message is late (dt 0),
    which the diagnostics counted (late.imu) without saying by how much; ``age_stats`` says it."""
    runner = fusion_runner()
    assert runner.age_stats() == {}
    runner.submit("wheels", 0.7, wheels())
    for k in range(60):
        t = 1.0 + k * 0.005
        runner.submit("imu", t - 0.3, imu())
        if k % 6 == 0:
            runner.submit("camera", t, image())
    stats = runner.age_stats()
    assert set(stats) == {"camera", "imu"} and runner.counters["late.imu"] > 0
    assert stats["imu"]["p50"] == pytest.approx(0.3, abs=0.03) and stats["imu"]["max"] == pytest.approx(0.3, abs=0.01)
    assert stats["camera"]["max"] == pytest.approx(0.0)  # the camera's stamps set the update stamps


def test_a_held_sensor_slower_than_max_gap_is_not_stale_between_its_messages():
    """Wheels at 1.5 Hz beside a 30 Hz camera and a 200 Hz IMU (max_gap_s 0.5): the wheels' latest stamp is up to
    0.67 s old between two of their messages. That held every update for the rest of each period and reset the
    state each time the next one came (every 0.67 s); an input is stale only past its own message interval, so
    after the wheels' second message every update comes and nothing resets. Silent for longer, they still hold."""
    runner = fusion_runner(first_update_dt=0.01)
    results = []
    for k in range(400):  # 2 s
        t = 1.0 + k * 0.005
        if k % 133 == 0 and k < 300:  # 1.0, 1.665, 2.33 (then the wheels die, below)
            runner.submit("wheels", t - 1e-4, wheels())
        if k % 6 == 0:
            runner.submit("camera", t + 2e-4, image())
        results.append((t, runner.submit("imu", t, imu())))
    after_second = [r for t, r in results if t >= 1.665]
    assert all(r.status == R.UPDATED for r in after_second)
    # once, before the second message (its interval was not known yet): it waited from 1.5 s and reset at 1.665 s
    assert [r.reset for r in after_second if r.reset] == [R.STALE_INPUT] and after_second[0].reset
    assert runner.counters["resets.stale_input"] == 1 and runner.counters["resets.gap"] == 0
    # the wheels die: updates wait once their latest stamp (2.3299 s) is 0.5 s past the next one's due time
    for k in range(400, 600):
        t = 1.0 + k * 0.005
        result = runner.submit("imu", t, imu())
        assert result.status == (R.UPDATED if t - 2.3299 <= 0.665 + 0.5 else R.WAITING), t
    assert set(runner.stale_inputs()) >= {"wheels"}


def _grid_seconds(ns: int) -> float:
    """A stamp of ``ns`` nanoseconds as policy_node reads a header.stamp (``stamps.seconds``)."""
    from types import SimpleNamespace

    from liquid_control.conventions import stamps

    return stamps.seconds(SimpleNamespace(sec=ns // 10**9, nanosec=ns % 10**9))


@pytest.mark.parametrize("base_s", [5, 1_700_000_000])
def test_thresholds_met_exactly_by_a_grid_of_stamps_decide_the_same_at_system_time(base_s):
    """A probe of the stamp rules: float stamps of system time are 238 ns apart, so a difference meant to equal a
    threshold came out up to 2.4e-7 s either side. An IMU stamped on a 5 ms grid with a 5 ms reordering lag was held
    one period more on 383 of 400 messages; a camera stamped exactly max_gap_s apart reset the state at 40% of its
    frames (at base 5 s too); a stamp exactly max_backward_jump_s back reset it as a clock jump on some. Each rule
    now allows ``STAMP_TOLERANCE_S``: exactly at the threshold is within it, at every base."""
    base = base_s * 10**9 + 123_456_000
    buffer = ReorderBuffer(lag_s=0.005)
    released = [buffer.push("imu", _grid_seconds(base + k * 5_000_000), k) for k in range(400)]
    assert [[payload for _, _, payload in r] for r in released] == [[]] + [[k - 1] for k in range(1, 400)]

    gap = R.PolicyRunner(LeakyBackend(), R.RunnerLimits(max_gap_s=0.1, max_backward_jump_s=0.05))
    for k in range(200):
        gap.submit("imu", _grid_seconds(base + k * 100_000_000), imu())
        gap.submit("camera", _grid_seconds(base + k * 100_000_000), image())
    assert gap.counters["resets.gap"] == 0 and gap.counters["updates"] == 200

    jumps = R.PolicyRunner(LeakyBackend(), R.RunnerLimits(max_gap_s=1.0, max_backward_jump_s=0.05))
    for k in range(100):  # each camera frame followed by one stamped exactly max_backward_jump_s before it
        stamp = base + 10**9 + k * 200_000_000
        jumps.submit("imu", _grid_seconds(stamp), imu())
        jumps.submit("camera", _grid_seconds(stamp), image())
        back = jumps.submit("camera", _grid_seconds(stamp - 50_000_000), image())
        assert back.reason == R.OUT_OF_ORDER
    assert jumps.counters["resets.clock_backwards"] == 0


@pytest.mark.parametrize("base_s", [5, 1_700_000_000])
def test_an_input_exactly_its_allowance_old_is_not_stale_at_any_stamp_base(base_s):
    """The review: the stale rule's threshold (max_gap_s plus the input's typical interval) had no test of its
    tolerance. An IMU on a 5 ms grid stops; a camera frame exactly max_gap_s + 5 ms after its last reading is within
    the allowance and updates (at base 5 s it waited, by the rounding of the median interval), the next one waits."""
    base = base_s * 10**9 + 123_456_000
    runner = R.PolicyRunner(LeakyBackend(), R.RunnerLimits(max_gap_s=0.2))
    for k in range(41):  # IMU readings 0..200 ms
        runner.submit("imu", _grid_seconds(base + k * 5_000_000), imu())
    for ms in (50, 100, 150, 200, 250, 300, 350, 400):
        assert runner.submit("camera", _grid_seconds(base + ms * 1_000_000), image()).status == R.UPDATED, ms
    assert runner.submit("camera", _grid_seconds(base + 405_000_000), image()).status == R.UPDATED
    assert runner.submit("camera", _grid_seconds(base + 410_000_000), image()).status == R.WAITING
