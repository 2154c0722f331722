"""Vectorised evaluation: lockstep lanes give the one-episode loop's episodes; worlds and renderers are shared."""

import numpy as np
import pytest
import torch

from liquid_control.evaluation.batched import BatchedPolicy, WorldPool, make_batches, run_batch
from liquid_control.evaluation.episode import run_episode
from liquid_control.evaluation.plan import EpisodeJob, build_plan

TINY = {
    "name": "tiny_cfc",
    "world": "LiquidRover-v0",
    "observation": {"image": {"height": 32, "width": 32}, "vectors": {"imu": 6}, "update_on": "camera"},
    "encoder": {"camera": {"channels": [4, 8], "kernel_sizes": [5, 3], "strides": [2, 2], "features": 8}},
    "core": {"type": "cfc", "units": 8},
    "action": {"size": 2, "low": [-1.0, -1.0], "high": [1.0, 1.0]},
}


def without_wall_time(records):
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in records]


def expert_jobs(shift, seeds, env_kwargs=None):
    return [
        EpisodeJob("expert", 0, shift, s, "LiquidRover-v0", None, None, dict(env_kwargs or {"render_size": 32}))
        for s in seeds
    ]


def test_lockstep_lanes_run_the_same_episodes_as_the_one_episode_loop():
    jobs = expert_jobs("jitter=2", [20000000, 20000001, 20000002])
    pool = WorldPool()
    try:
        together = run_batch(jobs, pool=pool)  # three lanes
        one_lane = run_batch(jobs, lanes=1, pool=pool)  # one reused world, episode after episode
        again = run_batch(jobs[::-1], pool=pool)[::-1]  # reused worlds, other lanes
    finally:
        pool.close()
    alone = [run_episode(job) for job in jobs]  # a fresh world per episode
    assert without_wall_time(together) == without_wall_time(alone)
    assert without_wall_time(one_lane) == without_wall_time(alone) == without_wall_time(again)
    assert all(r["success"] for r in alone) and len({r["steps"] for r in alone}) == 3


def test_batched_policy_acts_like_one_agent_per_episode():
    from liquid_control.policy import Policy, PolicyAgent

    torch.manual_seed(0)
    policy = Policy.from_config(TINY)
    rng = np.random.default_rng(0)
    lanes, steps = 5, 12
    obs = [
        [
            {
                "image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                "imu": rng.normal(size=6).astype(np.float32),
                "dt": np.array([0.0 if t == 0 else rng.uniform(0.03, 0.1)], np.float32),
            }
            for t in range(steps)
        ]
        for _ in range(lanes)
    ]
    obs[1][6]["dt"][0] = 2.5  # a gap over max_gap_s (1 s): both reset the lane's state and integrate 0 s
    obs[4][0]["dt"][0] = 2.5  # on a lane's first update it is no gap: integrated as given
    want, agents = [], []
    for lane in range(lanes):
        agents.append(PolicyAgent(policy))
        want.append([agents[-1].act(o) for o in obs[lane]])
    assert [a.gap_resets for a in agents] == [0, 1, 0, 0, 0]
    fresh = PolicyAgent(policy)
    np.testing.assert_array_equal(want[1][6], fresh.act({**obs[1][6], "dt": np.zeros(1, np.float32)}))
    batched = BatchedPolicy(policy, lanes)
    got = [[None] * steps for _ in range(lanes)]
    for t in range(steps):
        active = [lane for lane in range(lanes) if not (lane == 3 and t < 4)]  # lane 3 starts late ...
        step = [t - 4 if lane == 3 else t for lane in active]
        if t == 4:
            batched.reset_lane(3)
        actions = batched.act(active, [obs[lane][k] for lane, k in zip(active, step)])
        for lane, k, action in zip(active, step, actions):
            got[lane][k] = action
    for lane in range(lanes):
        n = steps - 4 if lane == 3 else steps
        np.testing.assert_allclose(np.array(got[lane][:n]), np.array(want[lane][:n]), atol=2e-5)
    assert batched.gap_resets == 1


def test_batches_keep_one_policy_seed_and_shift_each():
    plan = build_plan(["expert"], ["in_distribution", "winter"], 5)
    batches = make_batches(plan.jobs, lanes=3)
    assert [len(b) for b in batches] == [3, 2, 3, 2]
    assert all(len({(j.shift, j.policy) for j in b}) == 1 for b in batches)
    assert sorted(j.key for b in batches for j in b) == sorted(j.key for j in plan.jobs)
    with pytest.raises(ValueError, match="one policy"):
        run_batch(plan.jobs[:2])  # two shifts: not one batch
    with pytest.raises(ValueError, match="lanes"):
        make_batches(plan.jobs, lanes=0)


def test_worlds_of_one_shift_share_one_renderer_with_the_same_pixels():
    import gymnasium

    import sim_envs  # noqa: F401
    from sim_envs import world as world_module
    from sim_envs.world import make_renderer

    # a size no other test renders at: worlds kept alive by an earlier test's pool share no context with these
    envs = [gymnasium.make("LiquidRover-v0", shift="dusk", render_size=28) for _ in range(2)]
    other = gymnasium.make("LiquidRover-v0", shift="winter", render_size=28)
    try:
        frames = [env.reset(seed=5 + i)[0]["image"] for i, env in enumerate(envs)]
        other.reset(seed=5)
        a, b = (env.unwrapped for env in envs)
        assert a._renderer is b._renderer and other.unwrapped._renderer is not a._renderer
        assert world_module._SHARED_RENDERERS[a._renderer_key][1] == 2
        for env in (a, b):  # the shared context draws each world's own state
            private = make_renderer(env.model, 28, 28)
            private.update_scene(env.data, camera="front")
            assert np.array_equal(private.render(), env._render_camera())
            private.close()
        assert not np.array_equal(frames[0], frames[1])
        envs[0].close()
        assert world_module._SHARED_RENDERERS[b._renderer_key][1] == 1
        key = b._renderer_key
        envs[1].close()
        assert key not in world_module._SHARED_RENDERERS  # the last world closed the context
    finally:
        for env in envs + [other]:
            env.close()


def test_non_finite_actions_stop_the_batch_naming_the_episode(tmp_path, monkeypatch):
    from liquid_control.evaluation import batched
    from liquid_control.policy import Policy, save_policy

    path = str(save_policy(tmp_path / "tiny.pt", Policy.from_config(TINY), {"seed": 0}))
    monkeypatch.setattr(batched.BatchedPolicy, "act", lambda self, lanes, obs: np.full((len(lanes), 2), np.nan))
    jobs = [EpisodeJob("tiny", 0, "fog", s, "LiquidRover-v0", path, "x", {"render_size": 32}) for s in (7, 8)]
    with pytest.raises(RuntimeError, match="non-finite action .* episode 7 under shift 'fog'"):
        run_batch(jobs, pool=WorldPool())


def test_world_pool_reuses_worlds_and_closes_the_least_recent_shift():
    pool = WorldPool(max_worlds=3)
    kwargs = {"update_on": ["camera"], "render_size": [16, 16]}  # list values, as a policy's env_kwargs carry them
    try:
        dusk = pool.get("LiquidRover-v0", "dusk", kwargs, 2)
        assert pool.get("LiquidRover-v0", "dusk", dict(kwargs), 1) == dusk[:1]  # the same objects
        fog = pool.get("LiquidRover-v0", "fog", kwargs, 2)  # 4 worlds > 3: dusk's are closed
        assert [key[1] for key in pool._worlds] == ["fog"] and pool.get("LiquidRover-v0", "fog", {}, 2) != fog
    finally:
        pool.close()


def test_world_pool_takes_env_kwargs_as_the_plan_carries_them():
    """The plan carries a policy's env kwargs JSON-ready (update_on, render_size as lists): pooled by value."""
    from liquid_control.evaluation.agents import default_env_kwargs
    from liquid_control.policy import validate_config

    kwargs = default_env_kwargs(validate_config(TINY))
    assert isinstance(kwargs["update_on"], list) and isinstance(kwargs["render_size"], list)
    pool = WorldPool()
    try:
        first = pool.get("LiquidRover-v0", "", kwargs, 2)
        again = pool.get("LiquidRover-v0", "", dict(kwargs, update_on=list(kwargs["update_on"])), 1)
    finally:
        pool.close()
    assert again[0] is first[0] and first[0].unwrapped.update_on == ("camera",)


@pytest.mark.parametrize("observation", [{}, {"timing": [], "resample_hz": 100.0}], ids=["events", "resampled"])
def test_lockstep_lanes_of_a_camera_imu_policy_match_the_one_episode_loop(tmp_path, observation):
    """Several update sensors (a list in the world's kwargs), time inputs and per-lane resampling, batched."""
    from test_training_fusion import fusion_config

    from liquid_control.evaluation.agents import default_env_kwargs
    from liquid_control.policy import Policy, save_policy

    torch.manual_seed(0)
    policy = Policy.from_config(fusion_config(**observation))
    path = str(save_policy(tmp_path / "fusion.pt", policy, {"seed": 0}))
    kwargs = default_env_kwargs(policy.config)  # as the plan carries them: JSON types
    assert isinstance(kwargs.get("update_on"), list)
    jobs = [EpisodeJob("fusion", 0, "in_distribution", s, "LiquidBalanceNav-v0", path, "x", kwargs) for s in (3, 4)]
    pool = WorldPool()
    try:
        together = run_batch(jobs, pool=pool)
    finally:
        pool.close()
    alone = [run_episode(job) for job in jobs]
    # batched matmuls differ from one lane's in the last bits, and the closed loop carries that on: the outcome
    # and every count stay exact, the accumulated figures within 1e-4 (torch's path, LIQUID_CONTROL_NATIVE=0:
    # smoothness 2.7e-5 apart on this machine, 2026-12-03, also before that day's changes)
    for got, want in zip(without_wall_time(together), without_wall_time(alone)):
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert got[key] == (pytest.approx(value, rel=1e-4) if isinstance(value, float) else value), key
    assert all(r["steps"] > 10 for r in alone)
