"""The worlds as gymnasium's own tools see them: ``render()`` in ``rgb_array`` mode (what RecordVideo and
HumanRendering show), and composing shifts."""

import gymnasium as gym
import numpy as np
import pytest

import sim_envs
from sim_envs.shifts import Shift, parse_shift


def _without(model, geoms, render):
    """``render()`` with ``geoms`` (a boolean mask) left out of the scene (alpha 0), the model restored after."""
    alpha = model.geom_rgba[geoms, 3].copy()
    model.geom_rgba[geoms, 3] = 0.0
    try:
        return render()
    finally:
        model.geom_rgba[geoms, 3] = alpha


@pytest.mark.parametrize("world", list(sim_envs.WORLDS))
def test_render_shows_the_robot(world):
    """The robot fills a visible part of the middle of every ``render()`` frame, whatever its start heading.

    Before: the rover's and balance-nav's ``chase`` camera was a ``trackcom`` camera of the world body, so it followed
    the centre of mass of the whole world, the trees' included: it hung ~20 m up, looking at the horizon, and no
    frame (no RecordVideo video) showed the robot at all."""
    env = gym.make(world, render_mode="rgb_array", time_limit=2.0)
    model = env.unwrapped.model
    robot = model.body_rootid[model.geom_bodyid] == model.body_rootid[model.jnt_bodyid[0]]  # the free body's geoms
    for seed in (0, 1, 2):
        env.reset(seed=seed)
        for step in range(30):
            if step % 10 == 0:
                frame = env.render()
                assert frame.shape == (240, 320, 3)
                drawn = np.any(frame != _without(model, robot, env.render), axis=2)
                assert drawn.mean() > 0.01, f"seed {seed} step {step}: the robot covers {drawn.mean():.2%} of the frame"
                assert abs(np.nonzero(drawn)[1].mean() - 160) < 60, f"seed {seed} step {step}: robot off centre"
            env.step(env.unwrapped.expert_action())
    env.close()


@pytest.mark.parametrize("world", ["LiquidRover-v0", "LiquidBalanceNav-v0"])
def test_render_looks_from_behind_the_robot_towards_its_target(world):
    """The target starts within +-35 deg of the robot's heading: a view from behind the robot shows it, whichever way
    the robot faces (a camera fixed in world orientation showed it only for headings near the world's +x)."""
    env = gym.make(world, render_mode="rgb_array")
    model = env.unwrapped.model
    target = model.geom_bodyid == model.body("target").id
    for seed in range(6):
        env.reset(seed=seed)
        drawn = np.any(env.render() != _without(model, target, env.render), axis=2)
        assert drawn.mean() > 0.001, f"seed {seed}: the target covers {drawn.mean():.3%} of the frame"
    env.close()


@pytest.mark.parametrize("world", list(sim_envs.WORLDS))
def test_render_before_reset_says_to_reset(world):
    """``render()`` of an unwrapped world before its first ``reset()`` raises, as its other episode methods do
    (gymnasium.make's OrderEnforcing raises ResetNeeded there). Before: a frame of no episode, the physics state
    never computed (the balancer's all black, the rover's and balance-nav's sky alone, the robot nowhere)."""
    env = sim_envs.world_class(world)(render_mode="rgb_array")
    with pytest.raises(RuntimeError, match=rf"^{world}: call reset\(\) before render\(\)$"):
        env.render()
    env.reset(seed=0)
    assert env.render().shape == (240, 320, 3)
    env.close()


@pytest.mark.parametrize("other", ["fog=0.5", {"fog": 0.5}, None])
def test_a_shift_adds_only_a_shift(other):
    """``a + b`` composes two Shifts; anything else is Python's TypeError naming both types (before: an
    AttributeError, "'str' object has no attribute 'changed'")."""
    with pytest.raises(TypeError, match=r"unsupported operand type\(s\) for \+: 'Shift' and"):
        Shift(season="winter") + other
    assert Shift(season="winter") + parse_shift(other) == Shift(season="winter", fog=0.5 if other else 0.0)


@pytest.mark.parametrize("world", list(sim_envs.WORLDS))
def test_render_without_a_render_mode_warns(world):
    """``render()`` of a world made without ``render_mode`` returns None and says so, as gymnasium's own envs do
    (before: None in silence, so a loop collecting frames for a video collected Nones)."""
    env = gym.make(world)
    env.reset(seed=0)
    for _ in range(2):  # the first through gymnasium's passive render check
        with pytest.warns(UserWarning, match=rf"{world}: render\(\) returns None without a render mode.*render_mode="):
            assert env.render() is None
    env.close()
