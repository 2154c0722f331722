"""Deploying a policy as a ROS 2 user would (audit): an unstamped message, the sizes of a rejected image, input
topics with publishers of another type, the simulated robots' IMU covariances."""

import numpy as np
import pytest

from liquid_control.runtime import runner as R
from liquid_control.runtime.backends import ObservationSpec

CONFIG = {
    "observation": {"image": {"height": 4, "width": 4}, "vectors": {"imu": 6}, "update_on": ["camera", "imu"]},
    "action": {"size": 2, "low": [-1, -1], "high": [1, 1], "kind": "wheel_torques"},
}


class CountingBackend:
    """state' = state + dt (the time integrated since the last reset), action = [state, 0]."""

    name = "counting"

    def __init__(self):
        self.spec = ObservationSpec.from_config(CONFIG)

    def initial_state(self):
        return np.zeros(1, dtype=np.float32)

    def step(self, obs, state, dt, encode=None):
        new = (state + dt).astype(np.float32)
        return np.array([new[0], 0.0]), new


def test_an_unstamped_message_is_rejected_and_does_not_reset_the_state():
    """A driver that leaves header.stamp unset (0) in one IMU message of a stamped stream: before, the stamp 0
    was a clock jump back (1.8e9 s back): the liquid state and every held reading were reset, and the node waited
    for a message of each input before commanding again (a balancing robot falls)."""
    runner = R.PolicyRunner(CountingBackend(), R.RunnerLimits(max_backward_jump_s=0.5))
    t0 = 1.8e9
    assert runner.submit("camera", t0, np.zeros((4, 4, 3), np.uint8), now=t0).status == R.WAITING
    for k in range(1, 11):
        assert runner.submit("imu", t0 + 0.005 * k, np.zeros(6), now=t0 + 0.005 * k).status == R.UPDATED
    before = runner.state[0]
    assert before == pytest.approx(0.045, abs=1e-6)  # 9 updates of 5 ms after the first (dt 0)
    unset = runner.submit("imu", 0.0, np.zeros(6), now=t0 + 0.052)
    assert (unset.status, unset.reason) == (R.REJECTED, R.BAD_STAMP)
    assert runner.counters["resets.clock_backwards"] == 0 and runner.missing_inputs() == ()
    after = runner.submit("imu", t0 + 0.055, np.zeros(6), now=t0 + 0.055)
    assert after.status == R.UPDATED and runner.state[0] == pytest.approx(0.050, abs=1e-6)  # the state went on


def test_a_zero_stamp_at_the_start_of_a_simulated_clock_is_a_stamp():
    """With use_sim_time the node clock starts at 0 too: a message stamped 0 then is a real one."""
    runner = R.PolicyRunner(CountingBackend(), R.RunnerLimits(max_backward_jump_s=0.5))
    assert runner.submit("imu", 0.0, np.zeros(6), now=0.0).accepted
    assert runner.submit("camera", 0.0, np.zeros((4, 4, 3), np.uint8), now=0.01).accepted
    assert runner.submit("imu", 0.0, np.zeros(6)).reason == R.DUPLICATE  # without a clock: the stamp rules alone


def test_every_simulated_imu_reports_its_worlds_nominal_noise_as_covariance():
    """docs/ros.md: IMU messages carry the nominal noise covariances (the square of the world's GYRO_NOISE,
    ACCEL_NOISE). LiquidBalanceNav-v0 published zeros ("covariance unknown")."""
    import importlib

    import gymnasium as gym

    import sim_envs  # noqa: F401  (registers the worlds)
    from liquid_control.ros.sim_node import WORLDS

    for world, io in WORLDS.items():
        if "imu" not in io["sensors"]:
            continue
        module = importlib.import_module(gym.spec(world).entry_point.split(":")[0])
        assert "imu_noise" in io, f"{world}: sim_node publishes its IMU without covariances"
        assert io["imu_noise"]() == (module.GYRO_NOISE, module.ACCEL_NOISE), world
