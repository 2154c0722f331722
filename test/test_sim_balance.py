"""LiquidBalance-v0: gymnasium API, IMU-triggered updates, the LQR expert, and its Riccati solver."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim_envs
from sim_envs import experts


@pytest.fixture(scope="module")
def balancer():
    env = gym.make("LiquidBalance-v0")
    yield env
    env.close()


def test_check_env():
    env = gym.make("LiquidBalance-v0", render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium's checker only warns about most problems
        check_env(env.unwrapped)
    env.close()


def test_observation_and_imu_rate(balancer):
    obs, info = balancer.reset(seed=0)
    assert set(obs) == {"imu", "wheels", "command", "dt", "event", "ages"} and info["event"] == "imu"
    stamps, dts = [info["stamp"]], [obs["dt"][0]]
    for _ in range(200):
        obs, _, terminated, _, info = balancer.step(balancer.unwrapped.expert_action())
        assert not terminated
        stamps.append(info["stamp"])
        dts.append(obs["dt"][0])
    np.testing.assert_allclose(dts[1:], np.diff(stamps), atol=1e-6)
    assert np.mean(dts[1:]) == pytest.approx(1 / 200, rel=0.02)
    assert balancer.observation_space.contains(obs)


def test_same_seed_same_episode(balancer):
    def run(seed):
        obs, _ = balancer.reset(seed=seed)
        trace = [obs["imu"]]
        for _ in range(50):
            obs, *_ = balancer.step(balancer.unwrapped.expert_action())
            trace.append(np.concatenate([obs["imu"], obs["wheels"], obs["dt"]]))
        return trace

    a, b, c = run(3), run(3), run(4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1])


def test_without_control_it_falls(balancer):
    balancer.reset(seed=1)
    for _ in range(400):
        _, _, terminated, _, info = balancer.step(np.zeros(2))
        if terminated:
            break
    assert terminated and info["fallen"] and not info["success"]


@pytest.mark.parametrize("seed", [20, 21])
def test_lqr_expert_balances_and_tracks(balancer, seed):
    balancer.reset(seed=seed)
    commands = set()
    while True:
        _, _, terminated, truncated, info = balancer.step(balancer.unwrapped.expert_action())
        commands.add(tuple(info["command"]))
        if terminated or truncated:
            break
    assert truncated and not info["fallen"] and info["success"]
    assert len(commands) >= 3 and info["tracking_error"] < 0.2


def test_dlqr_matches_scipy_riccati():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    A, B = experts.wheeled_pendulum(sim_envs.balancer.nominal_plant())
    Ad, Bd = experts.discretize(A, B, 0.005)
    Ad_ref = scipy_linalg.expm(A * 0.005)
    np.testing.assert_allclose(Ad, Ad_ref, rtol=1e-9, atol=1e-12)
    Q, R = np.diag([5.0, 20.0, 20.0, 0.5]), np.array([[1.0]])
    P = scipy_linalg.solve_discrete_are(Ad, Bd, Q, R)
    K_ref = np.linalg.solve(R + Bd.T @ P @ Bd, Bd.T @ P @ Ad)
    np.testing.assert_allclose(experts.dlqr(Ad, Bd, Q, R), K_ref, rtol=1e-5)
    assert np.all(np.abs(np.linalg.eigvals(Ad - Bd @ K_ref)) < 1)


def test_nan_torque_rejected(balancer):
    balancer.reset(seed=0)
    with pytest.raises(ValueError):
        balancer.step(np.array([np.nan, 0.0]))


def test_held_readings_are_fresh_arrays():
    """With encoders at a tenth of the IMU rate their reading is held over several updates; each observation
    must still own its arrays, so a caller modifying one cannot corrupt the next."""
    env = gym.make("LiquidBalance-v0", shift="sensor_rate=0.5")
    env.unwrapped.timings["encoders"] = sim_envs.SensorTiming(rate_hz=10.0)
    first, info = env.reset(seed=0)
    while not first["wheels"].any():  # until the first encoder message
        first, _, _, _, info = env.step(env.unwrapped.expert_action())
    stamp = info["stamps"]["encoders"]
    kept = first["wheels"].copy()
    first["wheels"][:] = 1e3
    second, _, _, _, info = env.step(env.unwrapped.expert_action())
    assert info["stamps"]["encoders"] == stamp  # the same encoder message is still held
    np.testing.assert_array_equal(second["wheels"], kept)  # and unaffected by the caller's edit
    env.close()


WORLD_DEFAULT_LIMITS = {"LiquidRover-v0": 25.0, "LiquidBalance-v0": 10.0, "LiquidBalanceNav-v0": 10.0}


@pytest.mark.parametrize("world", list(WORLD_DEFAULT_LIMITS))
@pytest.mark.parametrize("time_limit", [float("inf"), float("nan"), 0.0, -1.0, 1e12, True, "10", [10.0]])
def test_a_bad_time_limit_is_refused_naming_it(world, time_limit):
    """inf hung the balancer's reset (its commands are laid out up to the limit; 1e12 as well) and made rover
    episodes endless; nan failed in gymnasium's Box without naming time_limit; 0 and -1 truncated after a step."""
    with pytest.raises(ValueError, match=r"time_limit must be a finite number of seconds > 0") as err:
        gym.make(world, time_limit=time_limit)
    assert repr(time_limit) in str(err.value)


@pytest.mark.parametrize("world", list(WORLD_DEFAULT_LIMITS))
def test_time_limit_none_is_the_worlds_own_and_numbers_pass(world):
    assert gym.make(world, time_limit=None).unwrapped.time_limit == WORLD_DEFAULT_LIMITS[world]
    assert gym.make(world).unwrapped.time_limit == WORLD_DEFAULT_LIMITS[world]
    assert gym.make(world, time_limit=np.float32(2.5)).unwrapped.time_limit == 2.5
    assert gym.make(world, time_limit=3).unwrapped.time_limit == 3.0
