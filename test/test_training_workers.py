"""Episode workers (`liquid-control train --workers N`): the same episodes and the same policy as one process,
and a failing episode named, with the finished ones kept."""

import copy
import csv

import numpy as np
import pytest
import torch

import sim_envs  # noqa: F401
from liquid_control.policy import Policy, observation_keys, validate_config
from liquid_control.training import trainer
from liquid_control.training.bc import DataParallel, bc_epoch
from liquid_control.training.data import load_episode, rollout
from liquid_control.training.episodes import (
    EpisodeWorkerError,
    EpisodeWorkers,
    collect_episode,
    episode_success,
    make_env,
)


def camera_imu_config(**training):
    """A tiny camera + IMU policy on the balancing robot, with every random part of collection switched on
    (DAgger's coin flips, DART noise on the expert, a sensor rate and jitter drawn per episode)."""
    return {
        "name": "tiny_workers",
        "world": "LiquidBalanceNav-v0",
        "observation": {
            "image": {"height": 16, "width": 16},
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
        "training": {
            "demonstrations": 3,
            "dagger_rounds": 1,
            "dagger_episodes": 3,
            "beta": [0.5],
            "epochs_first": 1,
            "epochs_per_round": 1,
            "batch_size": 2,
            "sequence_length": 16,
            "eval_episodes": 3,
            "max_episode_steps": 40,
            "action_noise": 0.2,
            "sensor_rate_range": [0.5, 2.0],
            **training,
        },
    }


def _same_episode(a, b):
    assert a.seed == b.seed and a.success == b.success
    assert sorted(a.observations) == sorted(b.observations)
    for key in a.observations:
        np.testing.assert_array_equal(a.observations[key], b.observations[key])
    for field in ("dt", "stamp", "expert_action", "action", "image_index"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_workers_collect_and_select_exactly_what_one_process_does():
    config = validate_config(camera_imu_config())
    torch.manual_seed(3)
    policy = Policy(config)
    env = make_env(config)
    workers = EpisodeWorkers(config, 2)
    try:
        for round_index in (0, 1):  # the expert alone, then DAgger's mixture with the policy driving
            here = [collect_episode(env, policy, config, 5, round_index, i) for i in range(3)]
            there = dict(workers.collect(policy, 5, round_index, range(3)))
            assert sorted(there) == [0, 1, 2]
            for i in range(3):
                _same_episode(here[i], there[i])
        assert not np.array_equal(there[0].action, there[0].expert_action)  # the policy drove part of it there
        seeds = [11, 12, 13]
        alone = [episode_success(env, policy, s, 60) for s in seeds]
        assert workers.success(policy, seeds, 60) == alone
    finally:
        workers.close()
        env.close()


def test_a_run_with_workers_and_bc_copies_trains_from_the_same_demonstrations(tmp_path):
    config = camera_imu_config()
    one = trainer.train(config, tmp_path / "one", progress=False, log=lambda m: None)
    two = trainer.train(config, tmp_path / "two", progress=False, log=lambda m: None, workers=2, threads=2)
    for i in range(3):  # round 0: the expert's episodes, whichever process collected them
        name = f"data/round_00/ep_{i:04d}.npz"
        _same_episode(load_episode(tmp_path / "one" / name), load_episode(tmp_path / "two" / name))
    rows = list(csv.DictReader((tmp_path / "two" / "metrics.csv").open()))
    assert [r["kind"] for r in rows] == [r["kind"] for r in csv.DictReader((tmp_path / "one" / "metrics.csv").open())]
    assert len(list((tmp_path / "two" / "data" / "round_01").glob("ep_*.npz"))) == 3
    assert two.success is not None and two.policy_path.is_file() and one.epochs == two.epochs == 2
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        trainer.train(config, tmp_path / "bad", workers=0)


def test_data_parallel_bc_step_is_the_whole_batch_gradient():
    config = validate_config(camera_imu_config())
    env = make_env(config)
    keys = observation_keys(config)
    episodes = [rollout(env, seed=s, max_steps=n, observation_keys=keys) for s, n in ((1, 50), (2, 37), (3, 20))]
    env.close()
    torch.manual_seed(0)
    policy = Policy(config)
    twin = copy.deepcopy(policy)
    parallel = DataParallel(twin, 2)
    try:
        for model, par in ((policy, None), (twin, parallel)):
            optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # zero steps: the gradients stay to compare
            stats = bc_epoch(
                model,
                optimizer,
                episodes,
                batch_size=3,
                sequence_length=16,
                grad_clip=0.0,
                rng=np.random.default_rng(0),
                parallel=par,
            )
            model.stats = stats
    finally:
        parallel.close()
    assert policy.stats["updates"] == twin.stats["updates"] == 107 and policy.stats["chunks"] == twin.stats["chunks"]
    assert twin.stats["loss"] == pytest.approx(policy.stats["loss"], rel=1e-5)
    for (name, a), b in zip(policy.named_parameters(), twin.parameters()):  # the last chunk's gradients
        if a.grad is None:
            assert b.grad is None, name
            continue
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-7, msg=name)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in twin.camera.parameters())
    with pytest.raises(ValueError, match="count >= 2"):
        DataParallel(policy, 1)


def _fails_on_two(index):
    if index == 2:
        raise RuntimeError("the world exploded")
    return index * 10


def test_a_failing_episode_is_named_and_the_finished_ones_come_back_first():
    workers = EpisodeWorkers(validate_config(camera_imu_config()), 2)
    finished = []
    try:
        with pytest.raises(
            EpisodeWorkerError, match="episode 2 of round 1 failed in a worker: RuntimeError: the world"
        ):
            for key, value in workers._run(
                _fails_on_two, {i: (i,) for i in range(3)}, lambda i: f"episode {i} of round 1"
            ):
                finished.append((key, value))
    finally:
        workers.close()
    assert set(finished) <= {(0, 0), (1, 10)} and finished  # what finished came back before the error
    with pytest.raises(ValueError, match="count must be >= 1"):
        EpisodeWorkers(camera_imu_config(), 0)
