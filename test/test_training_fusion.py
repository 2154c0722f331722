"""Training on event streams: a config whose inputs the world lacks is refused at load with the key path;
episodes keep each camera frame once with the update that holds it; DART noise; resampled sequences."""

import gymnasium
import numpy as np
import pytest
import torch
import yaml

import sim_envs  # noqa: F401
from liquid_control import cli
from liquid_control.paths import policies_dir
from liquid_control.policy import Policy, PolicyAgent, PolicyConfigError, env_kwargs, validate_config
from liquid_control.training import run as training_run
from liquid_control.training import trainer
from liquid_control.training.bc import bc_epoch
from liquid_control.training.data import load_episode, resample_episode, rollout, save_episode


def fusion_config(**observation):
    obs = {
        "image": {"height": 16, "width": 16},
        "vectors": {"imu": 6, "wheels": 2},
        "update_on": ["camera", "imu"],
        "timing": ["event", "ages"],
        **observation,
    }
    return {
        "name": "tiny_fusion",
        "world": "LiquidBalanceNav-v0",
        "observation": obs,
        "encoder": {
            "camera": {"channels": [4], "kernel_sizes": [3], "strides": [2], "features": 8},
            "vectors": {"hidden": [8], "features": 8},
        },
        "core": {"type": "cfc", "units": 8},
        "action": {"size": 2, "low": [-1, -1], "high": [1, 1], "kind": "wheel_torques"},
        "training": {
            "demonstrations": 2,
            "dagger_rounds": 1,
            "dagger_episodes": 1,
            "beta": [0.5],
            "epochs_first": 1,
            "epochs_per_round": 1,
            "batch_size": 2,
            "sequence_length": 16,
            "eval_episodes": 1,
            "max_episode_steps": 40,
        },
    }


@pytest.mark.parametrize(
    "observation, message",
    [
        (
            {"vectors": {"imu": 6, "gps": 3}},
            "observation.vectors.gps: world LiquidBalanceNav-v0 has no observation 'gps'",
        ),
        (
            {"update_on": ["camera", "wheels"]},
            "observation.update_on[1]: world LiquidBalanceNav-v0 has no sensor 'wheels' whose messages",
        ),
        (  # before: accepted, and after every demonstration torch's "shape '[9]' is invalid for input of size 8"
            {"vectors": {"imu": 7, "wheels": 2}},
            "observation.vectors.imu: 7, but world LiquidBalanceNav-v0's 'imu' has shape (6,)",
        ),
    ],
)
def test_config_naming_what_the_world_lacks_is_refused_at_load(tmp_path, capsys, observation, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(fusion_config(**observation)))
    with pytest.raises(PolicyConfigError) as err:
        trainer.train(path, tmp_path / "run")
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    assert not (tmp_path / "run").exists()  # nothing written
    assert cli.main(["train", "--config", str(path), "--out", str(tmp_path / "run2")]) == 2
    assert message in capsys.readouterr().err


def test_update_sensor_without_an_encoder_is_refused():
    with pytest.raises(PolicyConfigError, match=r"observation.update_on\[1\]: 'lidar' is not an input"):
        validate_config(fusion_config(update_on=["camera", "lidar"]))


def test_event_episode_stores_each_frame_once_and_trains(tmp_path):
    cfg = validate_config(fusion_config())
    env = trainer.make_env(cfg)
    torch.manual_seed(0)
    policy = Policy(cfg)
    keys = ["image", "imu", "wheels", "event", "ages"]
    ep = rollout(env, PolicyAgent(policy), beta=0.5, seed=3, observation_keys=keys, max_steps=80)
    env.close()
    frames = len(ep.observations["image"])
    assert len(ep) == 80 and 5 <= frames <= 20  # ~30 Hz frames among ~230 Hz updates
    assert np.all(np.diff(ep.image_index) >= 0) and ep.image_index[-1] == frames - 1
    assert set(np.unique(ep.observations["event"])) == {0, 1} and ep.observations["ages"].shape == (80, 2)
    back = load_episode(save_episode(tmp_path / "ep.npz", ep))
    np.testing.assert_array_equal(back.image_index, ep.image_index)
    np.testing.assert_array_equal(back.observations["event"], ep.observations["event"])
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    losses = [
        bc_epoch(
            policy, optimizer, [back], batch_size=1, sequence_length=32, grad_clip=1.0, rng=np.random.default_rng(e)
        )["loss"]
        for e in range(5)
    ]
    assert losses[-1] < losses[0]


def test_dart_noise_perturbs_what_is_executed_not_the_labels():
    cfg = validate_config(fusion_config())
    env = gymnasium.make(cfg["world"], **env_kwargs(cfg))
    clean = rollout(env, seed=1, max_steps=150, observation_keys=["imu"])
    noisy = rollout(env, seed=1, max_steps=150, observation_keys=["imu"], action_noise=(0.2, 0.2))
    again = rollout(env, seed=1, max_steps=150, observation_keys=["imu"], action_noise=(0.2, 0.2))
    env.close()
    np.testing.assert_array_equal(clean.action, clean.expert_action)
    deviation = noisy.action - noisy.expert_action
    assert 0.08 < deviation.std() < 0.3  # the executed actions carry the noise (clipped to the bounds)
    np.testing.assert_array_equal(noisy.action, again.action)  # seeded
    assert np.abs(noisy.observations["imu"] - clean.observations["imu"][: len(noisy)]).max() > 0.01


def agent_actions(agent, episode) -> list:
    """The agent driven through ``episode``'s recorded observations, update by update."""
    actions = []
    for t in range(len(episode)):
        obs = {k: episode.observations[k][t] for k in ("imu", "wheels")}
        obs["image"] = episode.observations["image"][episode.image_index[t]]
        obs["dt"] = episode.dt[t : t + 1]
        actions.append(agent.act(obs))
    return actions


def sequence_inputs(episode) -> dict:
    """``episode``'s observations as one batch row for ``Policy.forward_sequence``."""
    obs = {"image": torch.from_numpy(episode.observations["image"])[None]}
    obs["image_index"] = torch.from_numpy(episode.image_index)[None]
    obs.update({k: torch.from_numpy(episode.observations[k])[None] for k in ("imu", "wheels")})
    return obs


def test_resampled_episode_is_what_the_fixed_rate_agent_sees():
    cfg = validate_config(fusion_config(timing=[], resample_hz=100.0))
    env = trainer.make_env(cfg)
    ep = rollout(env, seed=2, max_steps=60, observation_keys=["image", "imu", "wheels"])
    env.close()
    fixed = resample_episode(ep, 100.0)
    duration = float(np.sum(ep.dt))
    assert len(fixed) == int(duration / 0.01 + 1e-9) + 1 and fixed.dt[0] == 0 and np.all(fixed.dt[1:] == 0.01)
    torch.manual_seed(1)
    policy = Policy(cfg).eval()
    agent = PolicyAgent(policy)
    actions = agent_actions(agent, ep)
    with torch.no_grad():
        want, _ = policy.forward_sequence(sequence_inputs(fixed), torch.from_numpy(fixed.dt)[None])
    np.testing.assert_allclose(actions[-1], want[0, -1].numpy(), atol=1e-5)


def test_training_sequences_reset_where_the_agent_resets_on_a_gap():
    """An update gap over max_gap_s (1 s; a custom shift's stall): the agent resets its state there and
    integrates 0 s, so training cuts the episode there and starts the next piece from a zero state, dt 0
    (before, a training sequence integrated the whole gap that the policy never integrates at run time)."""
    from liquid_control.training.data import split_at_gaps

    cfg = validate_config(fusion_config(timing=[]))
    env = trainer.make_env(cfg)
    ep = rollout(env, seed=2, max_steps=60, observation_keys=["image", "imu", "wheels"])
    env.close()
    ep.dt[[25, 40]] = [2.5, 1.2]  # two stalls
    pieces = split_at_gaps(ep, 1.0)
    assert [len(p) for p in pieces] == [25, 15, len(ep) - 40] and all(p.dt[0] == 0 for p in pieces)
    assert split_at_gaps(ep, 3.0)[0] is ep
    torch.manual_seed(1)
    policy = Policy(cfg).eval()
    agent = PolicyAgent(policy)
    actions = agent_actions(agent, ep)
    assert agent.gap_resets == 2
    want = []
    for piece in pieces:
        with torch.no_grad():
            want.append(policy.forward_sequence(sequence_inputs(piece), torch.from_numpy(piece.dt)[None])[0][0].numpy())
    np.testing.assert_allclose(np.array(actions), np.concatenate(want), atol=1e-5)
    with torch.no_grad():
        integrated, _ = policy.forward_sequence(sequence_inputs(ep), torch.from_numpy(ep.dt)[None])
    assert np.abs(integrated[0, 25:].numpy() - np.concatenate(want)[25:]).max() > 1e-3  # the gap matters


def test_short_training_run_on_the_event_world(tmp_path, monkeypatch):
    """... with a stall of 2.5 s in every collected episode: training cuts there (split_at_gaps), says so, and
    never trains on a dt the agent would not integrate."""
    from liquid_control.policy import load_policy

    collect = training_run.collect_episode

    def stalled(*args, **kwargs):
        episode = collect(*args, **kwargs)
        episode.dt[len(episode) // 2] = 2.5
        return episode

    monkeypatch.setattr(training_run, "collect_episode", stalled)
    logged = []
    result = trainer.train(fusion_config(), tmp_path / "run", progress=False, log=logged.append)
    policy = load_policy(result.policy_path)
    assert policy.config["observation"]["update_on"] == ["camera", "imu"]
    episodes = sorted((tmp_path / "run" / "data").rglob("*.npz"))
    assert len(episodes) == 3 and all("image_index" in np.load(p).files for p in episodes)
    assert all(np.load(p)["dt"].max() == np.float32(2.5) for p in episodes)  # stored whole, cut when trained on
    assert any("update gap(s) over 1 s reset the state: trained as" in m for m in logged), logged
    assert policy.metadata["training_dt_max_s"] < 1.0


def test_an_action_size_the_world_does_not_have_is_refused_naming_the_key(tmp_path):
    cfg = fusion_config()
    cfg["action"] = {"size": 3, "low": [-1] * 3, "high": [1] * 3, "kind": "wheel_torques"}
    with pytest.raises(
        PolicyConfigError, match=r"action.size: 3, but world LiquidBalanceNav-v0's action has shape \(2,\)"
    ):
        trainer.train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "world_config, kind, wanted",
    [
        ("cfc_balance_nav.yaml", "twist", "wheel_torques"),
        ("cfc_balancer.yaml", "twist", "wheel_torques"),
        ("cfc_rover.yaml", "wheel_torques", "twist"),
    ],
)
def test_an_action_kind_the_world_does_not_have_is_refused_before_training(tmp_path, world_config, kind, wanted):
    """A balancer config without ``kind: wheel_torques`` (twist, the default) trained, and its policy node would
    then publish Twist to a robot that takes wheel torques."""
    from liquid_control.policy.config import load_config

    cfg = load_config(policies_dir() / "configs" / world_config)
    cfg["action"]["kind"] = kind
    with pytest.raises(PolicyConfigError, match=rf"action.kind: '{kind}', but world \S+'s action is '{wanted}'"):
        trainer.train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
