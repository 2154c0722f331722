"""LiquidBalanceNav-v0: camera and IMU updates on one timeline, the same the policy node computes; shifts of
each sensor's rate; the expert reaches the target without falling."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from liquid_control.runtime import runner as R
from liquid_control.runtime.backends import ObservationSpec
from sim_envs.balance_nav import LiquidBalanceNavEnv


def run(env, seed, steps=None, record=None):
    obs, info = env.reset(seed=seed)
    observations, infos = [obs], [info]
    while steps is None or len(observations) < steps:
        obs, _, terminated, truncated, info = env.step(env.unwrapped.expert_action())
        observations.append(obs)
        infos.append(info)
        if terminated or truncated:
            break
    return observations, infos


def test_check_env_and_spaces():
    env = gym.make("LiquidBalanceNav-v0", render_mode="rgb_array", render_size=16)
    check_env(env.unwrapped, skip_render_check=False)
    obs, info = env.reset(seed=0)
    assert set(obs) == {"image", "imu", "wheels", "dt", "event", "ages"} and obs["image"].shape == (16, 16, 3)
    assert env.unwrapped.update_on == ("camera", "imu") and obs["ages"].shape == (2,)
    assert env.observation_space.contains(obs)
    env.close()


def test_every_camera_and_imu_message_is_an_update():
    env = gym.make("LiquidBalanceNav-v0", render_size=16)
    observations, infos = run(env, seed=3, steps=400)
    events = np.array([o["event"] for o in observations])
    dts = np.array([o["dt"][0] for o in observations])
    stamps = np.array([i["stamp"] for i in infos])
    assert dts.min() >= 0 and dts[0] == 0
    np.testing.assert_allclose(dts[1:], np.diff(stamps), atol=1e-6)
    duration = stamps[-1] - stamps[0]
    assert (events == 0).sum() / duration == pytest.approx(30, rel=0.15)  # camera frames
    assert (events == 1).sum() / duration == pytest.approx(200, rel=0.05)  # IMU messages
    # with no reordering lag, a frame delivered 25 ms after exposure comes after IMU messages stamped
    # after it: late, dt 0, its age the time since exposure; counted, never dropped
    camera = events == 0
    assert np.all(dts[1:][camera[1:]] == 0)
    ages = np.array([o["ages"][0] for o in observations])[camera]
    assert np.all((ages[1:] > 0.015) & (ages[1:] < 0.035))
    assert infos[-1]["late_messages"]["camera"] == camera[1:].sum()
    # a reordering lag longer than the camera latency releases them in stamp order instead
    env = gym.make("LiquidBalanceNav-v0", render_size=16, reorder_lag_s=0.035)
    observations, infos = run(env, seed=3, steps=400)
    assert infos[-1]["late_messages"] == {"camera": 0, "imu": 0}
    dts = np.array([o["dt"][0] for o in observations[1:]])
    assert dts.min() >= 0 and np.mean(dts > 0) > 0.9
    env.close()


class RecordingNav(LiquidBalanceNavEnv):
    """Records every delivery, as the policy node would receive it."""

    def next_delivery(self, until=None):
        delivery = super().next_delivery(until)
        if delivery is not None:
            self.deliveries.append(delivery)
        return delivery


@pytest.mark.parametrize("lag", [0.0, 0.03])
def test_the_world_updates_exactly_as_the_policy_runner(lag):
    """The deliveries of an episode fed to a PolicyRunner give the env's updates: same dts, events, ages."""
    env = RecordingNav(render_size=8, reorder_lag_s=lag)
    env.deliveries = []
    observations, _ = run(env, seed=5, steps=300)
    config = {
        "observation": {
            "image": {"height": 8, "width": 8},
            "vectors": {"imu": 6, "wheels": 2},
            "update_on": ["camera", "imu"],
            "timing": ["event", "ages"],
            "reorder_lag_s": lag,
        },
        "action": {"size": 2, "low": [-1, -1], "high": [1, 1]},
    }

    class Recorder:
        spec = ObservationSpec.from_config(config)
        calls = []

        def initial_state(self):
            return np.zeros(1, np.float32)

        def step(self, obs, state, dt, encode=None):
            self.calls.append((dt, int(obs["event"]), obs["ages"].copy(), obs["imu"].copy()))
            return np.zeros(2), state

    backend = Recorder()
    runner = R.PolicyRunner(backend)
    for sensor, stamp, reading in env.deliveries:
        runner.submit({"encoders": "wheels"}.get(sensor, sensor), stamp, reading)
    n = min(len(observations), len(backend.calls))
    assert n >= len(observations) - 1  # the env's last update may still sit in the runner's buffer
    for obs, (dt, event, ages, imu) in zip(observations[:n], backend.calls[:n]):
        assert dt == pytest.approx(float(obs["dt"][0]), abs=1e-6) and event == obs["event"]
        np.testing.assert_allclose(ages, obs["ages"], atol=1e-6)
        np.testing.assert_array_equal(imu, obs["imu"])
    env.close()


@pytest.mark.parametrize(
    "shift,camera_hz,imu_hz", [("camera_rate=2", 60, 200), ("imu_rate=0.5", 30, 100), ("sensor_rate=0.5", 15, 100)]
)
def test_each_sensor_rate_shifts_separately(shift, camera_hz, imu_hz):
    env = gym.make("LiquidBalanceNav-v0", render_size=8, shift=shift)
    observations, infos = run(env, seed=1, steps=300)
    events = np.array([o["event"] for o in observations])
    duration = infos[-1]["stamp"] - infos[0]["stamp"]
    assert (events == 0).sum() / duration == pytest.approx(camera_hz, rel=0.2)
    assert (events == 1).sum() / duration == pytest.approx(imu_hz, rel=0.1)
    env.close()


def test_update_sensors_are_chosen_and_checked():
    env = gym.make("LiquidBalanceNav-v0", render_size=8, update_on="imu")
    observations, infos = run(env, seed=0, steps=50)
    assert {i["event"] for i in infos} == {"imu"} and observations[0]["ages"].shape == (1,)
    env.close()
    with pytest.raises(ValueError, match="update_on"):
        gym.make("LiquidBalanceNav-v0", update_on=("camera", "lidar"))


def test_visual_and_imu_shifts_change_their_sensor():
    def first(shift):
        env = gym.make("LiquidBalanceNav-v0", render_size=16, shift=shift)
        obs, _ = env.reset(seed=2)
        env.close()
        return obs

    base, winter, noisy = first(""), first("season=winter,lighting=dusk"), first("imu_noise=0.5")
    assert np.abs(base["image"].astype(int) - winter["image"]).mean() > 10
    np.testing.assert_array_equal(base["image"], noisy["image"])
    assert np.abs(base["imu"] - noisy["imu"]).max() > 0.05


@pytest.mark.parametrize("seed", [0, 1])
def test_expert_reaches_the_target_without_falling(seed):
    env = gym.make("LiquidBalanceNav-v0", render_size=16)
    _, infos = run(env, seed=seed)
    assert infos[-1]["success"] and not infos[-1]["fallen"] and infos[-1]["distance"] < 0.4
    env.close()
