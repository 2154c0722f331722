"""The IMU's axes and units against the worlds' (conventions.imu.GravityCheck): gravity +9.81 m/s^2 on z at rest."""

import numpy as np
import pytest

from liquid_control.conventions.imu import GRAVITY_WINDOW, GravityCheck


def verdicts(accels):
    check = GravityCheck()
    return [v for v in (check.add(np.r_[0.0, 0.0, 0.0, a]) for a in accels) if v is not None]


def test_the_rover_worlds_imu_at_rest_and_driving_passes():
    """The world's own readings (what the policy trained on), standing and then driving a curve."""
    import gymnasium as gym

    import sim_envs  # noqa: F401  (registers the worlds)

    env = gym.make("LiquidRover-v0").unwrapped
    try:
        env.reset(seed=0)
        readings = [env.step(np.array([0.0, 0.0], np.float32))[0]["imu"] for _ in range(GRAVITY_WINDOW)]
        readings += [env.step(np.array([1.0, 0.8], np.float32))[0]["imu"] for _ in range(GRAVITY_WINDOW)]
    finally:
        env.close()
    check = GravityCheck()
    assert [check.add(r) for r in readings] == [None] * len(readings)


@pytest.mark.parametrize(
    "accel, words",
    [
        ((0.0, 0.0, -9.81), "north-east-down: -9.81 on z"),  # NED axes, or mounted upside down
        ((9.81, 0.0, 0.0), "gravity does not point along +z"),  # mounted with x up
        ((0.0, 0.0, 1.0), "a driver publishing in g reads about 1.0"),  # in g, not m/s^2
    ],
)
def test_an_imu_in_other_axes_or_units_is_named_once_per_window(accel, words):
    """Said after a full window, naming the mean acceleration; nothing before it."""
    rng = np.random.default_rng(0)
    accels = np.asarray(accel) + rng.normal(0.0, 0.5, size=(2 * GRAVITY_WINDOW, 3))
    check = GravityCheck()
    results = [check.add(np.r_[0.0, 0.0, 0.0, a]) for a in accels]
    assert results[: GRAVITY_WINDOW - 1] == [None] * (GRAVITY_WINDOW - 1)
    said = [r for r in results if r is not None]
    assert len(said) == 2 and words in said[0] and "linear_acceleration averages (" in said[0]


def test_a_tilted_robot_and_non_finite_readings_pass():
    """30 degrees of tilt (a balancer leaning, a ramp) is gravity up; NaN readings (rejected later) are skipped."""
    tilt = np.radians(30.0)
    assert verdicts([(9.81 * np.sin(tilt), 0.0, 9.81 * np.cos(tilt))] * GRAVITY_WINDOW) == []
    assert verdicts([(np.nan, 0.0, 9.81)] * GRAVITY_WINDOW) == []
