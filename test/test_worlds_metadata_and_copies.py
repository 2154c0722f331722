"""What gymnasium's tools read from a world besides its steps: ``render_fps`` (the video wrappers play one frame per
step at it), the methods of an episode called before reset, and copies of a world (pickle, copy.deepcopy)."""

import copy
import pickle
import re

import gymnasium as gym
import numpy as np
import pytest

import sim_envs
from sim_envs import world as world_module


@pytest.mark.parametrize(
    "world, kwargs, fps",
    [
        ("LiquidRover-v0", {}, 15),  # camera 15 Hz
        ("LiquidBalance-v0", {}, 200),  # IMU 200 Hz
        ("LiquidBalanceNav-v0", {}, 230),  # camera 30 Hz + IMU 200 Hz
        ("LiquidRover-v0", {"update_on": ("camera", "imu")}, 115),
        ("LiquidBalance-v0", {"shift": "imu_rate=0.5,dropout=0.2"}, 80),  # 200 * 0.5 * (1 - 0.2)
        ("LiquidBalanceNav-v0", {"update_on": "camera"}, 30),
        ("LiquidBalanceNav-v0", {"shift": "camera_rate=0.5,dropout=0.1"}, 193.5),  # (15 + 200) * 0.9
    ],
)
def test_render_fps_is_the_mean_step_rate(world, kwargs, fps):
    """Before: 50 for the balancer (200 steps per simulated second), 30 for balance-nav (230), whatever the shift or
    update_on: a RecordVideo of them played 4-8x slow."""
    env = gym.make(world, time_limit=10.0, **kwargs)
    assert env.metadata["render_fps"] == fps  # what the wrappers read, through gymnasium.make's wrappers
    if not kwargs:
        assert type(env.unwrapped).metadata["render_fps"] == fps  # the class's: its defaults'
    _, info = env.reset(seed=0)
    first, steps = info["stamp"], 0
    while True:
        # the balancers' expert stays up; the rover stands still (its expert arrives before the time limit)
        action = np.zeros(2) if world == "LiquidRover-v0" else env.unwrapped.expert_action()
        _, _, terminated, truncated, info = env.step(action)
        steps += 1
        if terminated or truncated:
            break
    simulated = info["stamp"] - first
    assert simulated > 3.0, "the episode ended too early to measure a rate"
    assert steps / simulated == pytest.approx(fps, rel=0.05)
    env.close()


def test_render_fps_is_an_int_when_whole():
    """gymnasium.utils.play takes an int only; a rate like 1.5 Hz (camera_rate=0.1) stays exact, not 2 or 0."""
    assert type(gym.make("LiquidBalance-v0").metadata["render_fps"]) is int
    assert gym.make("LiquidRover-v0", shift="camera_rate=0.1").metadata["render_fps"] == pytest.approx(1.5)
    # whole up to float error (200 Hz x (1 - 0.9) is 19.999999999999996): was a float, which play refuses
    for world, shift, fps in (
        ("LiquidBalance-v0", "dropout=0.9", 20),
        ("LiquidRover-v0", "dropout=0.9,sensor_rate=2", 3),
    ):
        rate = gym.make(world, shift=shift).metadata["render_fps"]
        assert type(rate) is int and rate == fps, rate


EPISODE_METHODS = {
    "LiquidRover-v0": {"expert_action()": "expert_action", "pose()": "pose"},
    "LiquidBalance-v0": {"expert_action()": "expert_action", "state()": "state", "command": None},
    "LiquidBalanceNav-v0": {"expert_action()": "expert_action", "state()": "state", "pose()": "pose"},
}


@pytest.mark.parametrize("world", sorted(sim_envs.WORLDS))
def test_episode_methods_before_reset_say_to_reset(world):
    """Before: AttributeError ('target', '_position_error', '_commands', '_previous_distance'), KeyError ('camera')
    from end_without_update, and balance-nav's expert_action/state/pose answered for no episode."""
    env = gym.make(world).unwrapped
    methods = {**EPISODE_METHODS[world], "outcome()": "outcome", "end_without_update()": "end_without_update"}
    for what, method in methods.items():
        with pytest.raises(RuntimeError, match=f"^{re.escape(f'{world}: call reset() before {what}')}$"):
            getattr(env, method)() if method else env.command
    env.reset(seed=0)
    assert np.isfinite(env.expert_action()).all()
    assert env.end_without_update() is None and env.outcome()[0] is False
    env.close()


def _steps_match(original, copies, steps):
    for _ in range(steps):
        action = original.expert_action()
        reference = original.step(action)
        for copied in copies:
            assert np.array_equal(copied.expert_action(), action)
            out = copied.step(action)
            assert all(np.array_equal(reference[0][key], out[0][key]) for key in reference[0])
            assert out[1:4] == reference[1:4]
            assert (out[4]["stamp"], out[4]["sim_time"]) == (reference[4]["stamp"], reference[4]["sim_time"])
        if reference[2] or reference[3]:
            break


@pytest.mark.parametrize("world", sorted(sim_envs.WORLDS))
def test_a_copy_continues_the_episode_bit_for_bit(world):
    """Before: pickle failed for every world (cannot pickle MjOption), deepcopy for the camera worlds (the shared
    renderer's ctypes), and the balancer's deep copy ran another episode: its option view was detached from its model,
    so its shortened physics steps were not shortened (pitch -0.34 rad against the original's -0.11 after 200 steps)."""
    holds_before = {key: entry[1] for key, entry in world_module._SHARED_RENDERERS.items()}  # other tests' worlds
    env = gym.make(world, render_mode="rgb_array").unwrapped
    env.reset(seed=3)
    for _ in range(20):
        env.step(env.expert_action())
    env.render()  # the chase view's renderer made, and the shared camera renderer in use
    copies = [copy.deepcopy(env), pickle.loads(pickle.dumps(env))]
    _steps_match(env, copies, 120)
    assert all(np.array_equal(env.render(), copied.render()) for copied in copies)
    for copied in copies:
        copied.close()  # gives back the copy's own hold on the shared camera renderer, not the original's
    _steps_match(env, [], 20)  # the original still renders its camera
    env.close()
    assert {key: entry[1] for key, entry in world_module._SHARED_RENDERERS.items()} == holds_before  # all given back


@pytest.mark.parametrize("world", sorted(sim_envs.WORLDS))
def test_a_made_world_pickles_before_reset(world):
    """gymnasium.make's wrappers and a world not yet reset: the copy's episodes are the original's."""
    env = gym.make(world)
    copied = pickle.loads(pickle.dumps(env))
    first, again = env.reset(seed=5)[0], copied.reset(seed=5)[0]
    assert all(np.array_equal(first[key], again[key]) for key in first)
    _steps_match(env.unwrapped, [copied.unwrapped], 30)
    env.close()
    copied.close()
