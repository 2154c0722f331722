"""Training: demonstrations keep real irregular dt, BC learns, DAgger labels with the expert, runs resume exactly."""

import csv

import gymnasium
import numpy as np
import pytest
import torch

from liquid_control.policy import Policy, PolicyConfigError, load_policy
from liquid_control.training import cli as train_cli
from liquid_control.training import run as training_run
from liquid_control.training import trainer
from liquid_control.training.bc import bc_epoch
from liquid_control.training.data import Episode, EpisodeFileError, load_episode, rollout, save_episode


class TinyReach(gymnasium.Env):
    """A point that must reach the origin, observed at irregular intervals: a seconds-fast stand-in world.

    Same interface as the sim_envs worlds: ``shift`` kwarg, dict observation with ``dt``, ``info["stamp"]``,
    ``info["success"]`` and ``unwrapped.expert_action()``.
    """

    def __init__(self, shift=""):
        self.observation_space = gymnasium.spaces.Dict(
            {
                "pos": gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32),
                "dt": gymnasium.spaces.Box(0, np.inf, (1,), np.float32),
            }
        )
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def _obs(self, dt):
        return {"pos": self.pos.astype(np.float32), "dt": np.array([dt], np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t, self.n = self.np_random.uniform(-2, 2, size=2), 0.0, 0
        return self._obs(0.0), {"stamp": 0.0, "success": False}

    def expert_action(self):
        return np.clip(-1.5 * self.pos, -1, 1).astype(np.float32)

    def step(self, action):
        dt = float(self.np_random.uniform(0.05, 0.15))  # irregular sensor period
        self.pos = self.pos + dt * np.asarray(action, float)
        self.t, self.n = self.t + dt, self.n + 1
        success = bool(np.linalg.norm(self.pos) < 0.2)
        return self._obs(dt), 0.0, success, self.n >= 40, {"stamp": self.t, "success": success}


if "TinyReach-v0" not in gymnasium.registry:
    gymnasium.register(id="TinyReach-v0", entry_point=TinyReach)


def tiny_config(**training):
    return {
        "name": "tiny_reach",
        "world": "TinyReach-v0",
        "observation": {"vectors": {"pos": 2}, "update_on": "pos"},
        "encoder": {"vectors": {"hidden": [8], "features": 8}},
        "core": {"type": "cfc", "units": 8, "backbone_units": 8},
        "action": {"size": 2, "low": [-1, -1], "high": [1, 1]},
        "training": {
            "demonstrations": 6,
            "dagger_rounds": 2,
            "dagger_episodes": 3,
            "beta": [0.5, 0.0],
            "epochs_first": 3,
            "epochs_per_round": 2,
            "batch_size": 4,
            "sequence_length": 8,
            "eval_episodes": 2,
            **training,
        },
    }


class TinyCamera(gymnasium.Env):
    """A gymnasium world with a camera that is no TimedMujocoWorld: it takes ``shift`` and ``render_size`` (pixels,
    or a (height, width) pair) and nothing else, as a world of the user's own may."""

    def __init__(self, shift="", render_size=16):
        height, width = (render_size, render_size) if isinstance(render_size, int) else render_size
        self.shape = (int(height), int(width), 3)
        self.observation_space = gymnasium.spaces.Dict(
            {"image": gymnasium.spaces.Box(0, 255, self.shape, np.uint8), "dt": gymnasium.spaces.Box(0, 1, (1,))}
        )
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)


if "TinyCamera-v0" not in gymnasium.registry:
    gymnasium.register(id="TinyCamera-v0", entry_point=TinyCamera)


@pytest.mark.parametrize("height, width", [(24, 32), (24, 24)])
def test_a_camera_world_that_is_no_timed_world_gets_the_policys_camera_size_in_training_and_evaluation(height, width):
    """Before: training gave such a world render_size=height, so a 24x32 (height x width) policy got 24x24 frames
    ('camera encoder: expected images (N, 24, 32, 3), got (32, 24, 24, 3)' after the demonstrations), and
    evaluation gave it the TimedMujocoWorld's keywords (update_on, policy_inputs, reorder_lag_s): a TypeError for
    any camera size. Both give it the camera size alone now, an int where square (what such a world takes)."""
    from liquid_control.evaluation.agents import default_env_kwargs
    from liquid_control.policy.config import validate_config
    from liquid_control.training.episodes import make_env

    config = validate_config(
        {
            "name": "tiny_camera",
            "world": "TinyCamera-v0",
            "observation": {"image": {"height": height, "width": width}, "vectors": {}, "update_on": "camera"},
            "encoder": {"camera": {"channels": [4], "kernel_sizes": [3], "strides": [2], "features": 4}},
            "core": {"type": "cfc", "units": 8, "backbone_units": 8},
            "action": {"size": 2, "low": [-1, -1], "high": [1, 1]},
        }
    )
    env = make_env(config)
    assert env.unwrapped.shape == (height, width, 3)
    env.close()
    kwargs = default_env_kwargs(config)
    assert kwargs == {"render_size": height if height == width else [height, width]}
    env = gymnasium.make("TinyCamera-v0", **kwargs)
    assert env.unwrapped.shape == (height, width, 3)
    env.close()


def test_rover_demonstrations_keep_real_irregular_dt(tmp_path):
    import sim_envs  # noqa: F401

    env = gymnasium.make("LiquidRover-v0", render_size=16)
    try:
        episode = rollout(env, None, beta=1.0, seed=3, max_steps=25)
    finally:
        env.close()
    path = save_episode(tmp_path / "ep.npz", episode)
    loaded = load_episode(path)
    assert len(loaded) == 25
    assert loaded.observations["image"].dtype == np.uint8 and loaded.observations["image"].shape == (25, 16, 16, 3)
    assert loaded.dt[0] == 0.0  # reset: no previous update
    np.testing.assert_allclose(loaded.dt[1:], np.diff(loaded.stamp), atol=1e-5)  # dt = stamp differences
    assert np.all((loaded.dt[1:] > 1 / 15 * 0.7) & (loaded.dt[1:] < 1 / 15 * 1.3))  # 15 Hz +- 20 % camera
    assert np.std(loaded.dt[1:]) > 1e-3  # really irregular, not a fixed period
    np.testing.assert_array_equal(loaded.expert_action, loaded.action)  # beta = 1: the expert drove


def test_dagger_rollout_mixes_drivers_and_labels_with_the_expert():
    env = gymnasium.make("TinyReach-v0")
    torch.manual_seed(0)
    from liquid_control.policy import PolicyAgent

    agent = PolicyAgent(Policy.from_config(tiny_config()))
    episode = rollout(env, agent, beta=0.5, rng=np.random.default_rng(0), seed=1)
    driven_by_expert = np.all(np.isclose(episode.action, episode.expert_action), axis=1)
    assert 0 < driven_by_expert.sum() < len(episode)  # both drivers acted
    # the labels are the expert's action in the visited state: -1.5 * pos, clipped
    np.testing.assert_allclose(episode.expert_action, np.clip(-1.5 * episode.observations["pos"], -1, 1), atol=1e-6)
    with pytest.raises(ValueError, match="beta < 1 needs an agent"):
        rollout(env, None, beta=0.5, seed=1)


@pytest.mark.parametrize("batching", ["random", "length"])
def test_behaviour_cloning_loss_decreases(batching):
    env = gymnasium.make("TinyReach-v0")
    episodes = [rollout(env, None, seed=s) for s in range(8)]
    torch.manual_seed(0)
    policy = Policy.from_config(tiny_config())
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    run = dict(batch_size=4, sequence_length=8, grad_clip=1.0, rng=np.random.default_rng(0), batching=batching)
    stats = [bc_epoch(policy, optimizer, episodes, **run) for _ in range(8)]
    assert stats[-1]["loss"] < 0.3 * stats[0]["loss"], stats
    assert all(s["updates"] == sum(len(ep) for ep in episodes) for s in stats)  # every update, once an epoch


def test_an_epoch_stops_at_the_first_step_whose_loss_is_not_finite():
    """Before: weights gone NaN in an epoch's third step trained on to the epoch's end (every later step NaN: an
    epoch over hours of recordings ran for hours), then the run stopped. Now the pass ends at the step whose loss
    is NaN, before its optimizer step, and says which; a finite epoch has no such entry."""
    env = gymnasium.make("TinyReach-v0")
    episodes = [rollout(env, None, seed=s) for s in range(8)]  # 2 batches: 6 steps
    torch.manual_seed(0)
    policy = Policy.from_config(tiny_config())
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    steps = []

    def poison_after_the_third(loss):
        steps.append(loss)
        if len(steps) == 3:
            with torch.no_grad():
                policy.head.weight.view(-1)[0] = float("nan")

    run = dict(batch_size=4, sequence_length=8, grad_clip=1.0, progress=poison_after_the_third)
    stats = bc_epoch(policy, optimizer, episodes, rng=np.random.default_rng(0), **run)
    assert len(steps) == 3 and np.isnan(stats["loss"]) and stats["diverged_at"] == 4, (steps, stats)
    assert all(np.isfinite(steps)) and not policy.training
    torch.manual_seed(0)
    fresh = Policy.from_config(tiny_config())
    optimizer = torch.optim.Adam(fresh.parameters(), lr=1e-2)
    stats = bc_epoch(
        fresh, optimizer, episodes, batch_size=4, sequence_length=8, grad_clip=1.0, rng=np.random.default_rng(0)
    )
    assert stats["chunks"] == 6 and "diverged_at" not in stats and np.isfinite(stats["loss"])


def test_a_step_without_a_labelled_update_reports_no_loss_not_zero_and_leaves_the_weights():
    """Before: a step over updates without a label (a takeover bag's stretch the policy drove) reported loss 0.0,
    which the progress bar showed as the loss; it reports None now (the bar keeps the last loss). And it stepped
    the optimizer on zero gradients: Adam's momentum moved the weights along the last labelled gradient again
    (an audit: 0.0067, 0.0052, 0.0042 after a step of 0.010), at every stretch of a takeover bag the policy drove."""
    import dataclasses

    env = gymnasium.make("TinyReach-v0")
    driven = rollout(env, None, seed=1)
    unlabelled = dataclasses.replace(driven, label_mask=np.zeros(len(driven), bool))
    torch.manual_seed(0)
    policy = Policy.from_config(tiny_config())
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    reported = []
    run = dict(batch_size=1, sequence_length=len(driven), grad_clip=1.0, progress=reported.append)
    stats = bc_epoch(policy, optimizer, [driven, unlabelled], rng=np.random.default_rng(0), **run)
    assert stats["chunks"] == 2 and stats["updates"] == len(driven)
    assert reported.count(None) == 1, reported  # the unlabelled episode's step (was 0.0)
    assert [x for x in reported if x is not None] == [pytest.approx(stats["loss"])]
    weights = {k: v.clone() for k, v in policy.state_dict().items()}
    bc_epoch(policy, optimizer, [unlabelled], rng=np.random.default_rng(1), **run)
    for k, v in policy.state_dict().items():
        torch.testing.assert_close(v, weights[k], rtol=0, atol=0, msg=k)


def test_training_run_writes_policy_metrics_and_is_deterministic(tmp_path):
    a = trainer.train(tiny_config(dagger_max_steps=5), tmp_path / "a", progress=False, log=lambda m: None)
    b = trainer.train(tiny_config(dagger_max_steps=5), tmp_path / "b", progress=False, log=lambda m: None)
    assert a.epochs == 3 + 2 * 2
    pa, pb = load_policy(a.policy_path), load_policy(b.policy_path)
    for k, v in pa.state_dict().items():
        torch.testing.assert_close(v, pb.state_dict()[k], rtol=0, atol=0)
    rows = list(csv.DictReader(open(tmp_path / "a" / "metrics.csv")))
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [int(r["epoch"]) for r in train_rows] == list(range(1, 8))
    assert len([r for r in rows if r["kind"] == "eval"]) == 3
    assert pa.metadata["seed"] == 0 and pa.metadata["selection_episodes"] == 2
    # the cells' kernel path it trained on: the compiled and torch paths give other weights in the last bits
    from liquid_control.cells import native

    assert pa.metadata["kernels"] == native.describe() and pa.metadata["kernels"].startswith(("compiled", "torch"))
    assert len(list((tmp_path / "a" / "data").glob("round_*/ep_*.npz"))) == 6 + 2 * 3
    demo_lengths = [len(load_episode(p)) for p in (tmp_path / "a" / "data").glob("round_00/ep_*.npz")]
    dagger_lengths = [len(load_episode(p)) for p in (tmp_path / "a" / "data").glob("round_0[12]/ep_*.npz")]
    assert max(demo_lengths) > 5 and max(dagger_lengths) <= 5  # dagger_max_steps caps DAgger episodes only
    # the longest dt trained on is recorded, for choosing core.max_step
    dts = [float(load_episode(p).dt.max()) for p in (tmp_path / "a" / "data").glob("round_*/ep_*.npz")]
    assert pa.metadata["training_dt_max_s"] == pytest.approx(max(dts), abs=1e-6) and max(dts) > 0.03
    # killed after its last epoch: a resumed run does not load every round's episodes again, so the value comes
    # from checkpoint.pt (set to a marker here to see where it came from)
    ck = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    assert ck["longest_dt"] == pytest.approx(max(dts))
    torch.save(dict(ck, longest_dt=0.5), tmp_path / "a" / "checkpoint.pt")
    (tmp_path / "a" / "policy.pt").unlink()
    again = trainer.train(None, tmp_path / "a", resume=True, progress=False, log=lambda m: None)
    assert load_policy(again.policy_path).metadata["training_dt_max_s"] == 0.5
    with pytest.raises(trainer.TrainingError, match="already holds a training run"):
        trainer.train(tiny_config(dagger_max_steps=5), tmp_path / "a", progress=False, log=lambda m: None)


def test_the_max_step_line_says_where_the_sixteen_sub_step_cap_binds(tmp_path):
    """Before: core.max_step below the longest dt / 16 (the most sub-steps a dt is split into) logged 'a longer dt is
    integrated in sub-steps of at most that (in training too)', though every such dt took 16 longer sub-steps: runs at
    0.001, 0.002 and 0.0001 s trained bit-identical policies (found by a probe of the config surface)."""
    said = {}
    for step in (0.0001, 0.01):
        config = tiny_config(dagger_rounds=0, epochs_first=1, eval_episodes=0)
        config["core"]["max_step"] = step
        lines = []
        trainer.train(config, tmp_path / str(step), progress=False, log=lines.append)
        said[step] = next(line for line in lines if line.startswith("longest dt trained on"))
    longest = float(said[0.01].split(": ")[1].split(" s")[0])
    assert longest > 16 * 0.0001, said
    assert "core.max_step 0.0001 s: below the longest dt / 16" in said[0.0001], said
    assert f"in 16 sub-steps of {longest / 16:.2g} s, longer than it" in said[0.0001], said
    assert "core.max_step 0.01 s: a longer dt is integrated in sub-steps of at most that" in said[0.01], said


def die_in_epoch(monkeypatch, epoch: int) -> None:
    """Training dies as a killed process does (KeyboardInterrupt) when epoch ``epoch`` begins: the run's
    checkpoint.pt holds the epochs before it."""
    original = training_run.TrainingRun.train_epoch

    def dying_epoch(self, episodes, at_epoch, round_index):
        if at_epoch == epoch:
            raise KeyboardInterrupt("killed")
        return original(self, episodes, at_epoch, round_index)

    monkeypatch.setattr(training_run.TrainingRun, "train_epoch", dying_epoch)


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory):
    """tiny_config()'s run, never killed: what each killed and resumed run must reproduce (read, never changed)."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    return trainer.train(tiny_config(), out, progress=False, log=lambda m: None)


# 2: in the last epoch of round 0; 3: in the first epoch of round 1, before that round's "collect" row reached a
# checkpoint (issue 9 item 7)
@pytest.mark.parametrize("kill_after_epochs", [2, 3])
def test_resume_continues_a_killed_run_without_losing_epochs(
    tmp_path, monkeypatch, kill_after_epochs, uninterrupted_run
):
    reference = uninterrupted_run
    original = training_run.TrainingRun.train_epoch
    calls = []

    def dying_epoch(self, episodes, epoch, round_index):
        if epoch == kill_after_epochs:
            raise KeyboardInterrupt("killed")  # the process dies before this epoch finishes
        calls.append(epoch)
        return original(self, episodes, epoch, round_index)

    monkeypatch.setattr(training_run.TrainingRun, "train_epoch", dying_epoch)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(tiny_config(), tmp_path / "run", progress=False, log=lambda m: None)
    data_before = {p: p.stat().st_mtime_ns for p in (tmp_path / "run" / "data").glob("round_*/ep_*.npz")}
    assert not (tmp_path / "run" / "policy.pt").exists()

    calls.clear()
    monkeypatch.setattr(training_run.TrainingRun, "train_epoch", original)
    resumed_epochs = []
    monkeypatch.setattr(
        training_run.TrainingRun,
        "train_epoch",
        lambda self, eps, epoch, r: (resumed_epochs.append(epoch), original(self, eps, epoch, r)),
    )
    result = trainer.train(None, tmp_path / "run", resume=True, progress=False, log=lambda m: None)
    assert resumed_epochs == list(range(kill_after_epochs, 7))  # finished epochs are not redone
    for p, mtime in data_before.items():
        assert p.stat().st_mtime_ns == mtime  # finished episodes are reused, not recollected
    resumed, ref = load_policy(result.policy_path), load_policy(reference.policy_path)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)  # as if never killed

    def rows(run):
        with open(run / "metrics.csv") as f:
            return [(r["epoch"], r["kind"], r["loss"], r["success"]) for r in csv.DictReader(f)]

    assert rows(tmp_path / "run") == rows(reference.policy_path.parent)


# 0: while collecting the demonstrations, before the first checkpoint; 2: in the second epoch, after it
@pytest.mark.parametrize("kill_in_epoch", [0, 2])
def test_a_resumed_run_names_its_first_command_and_a_finished_one_keeps_its_policy_file(
    tmp_path, monkeypatch, kill_in_epoch
):
    """Before: every --resume rewrote policy.pt with `liquid-control train --out RUN --resume` as its command (the
    model card lost the config and every --set), and resuming a finished run rewrote the file, changing the
    SHA-256 its ONNX export records; a run killed before its first checkpoint still did (helper-80)."""
    import hashlib

    run = tmp_path / "run"

    def dying_save(path, episode):
        if path.name == "ep_0002.npz":
            raise KeyboardInterrupt("killed")
        saved_episode(path, episode)

    die_in_epoch(monkeypatch, kill_in_epoch)
    saved_episode = training_run.save_episode
    if kill_in_epoch == 0:
        monkeypatch.setattr(training_run, "save_episode", dying_save)
    first = "liquid-control train --config tiny.yaml --set training.lr=0.004"
    with pytest.raises(KeyboardInterrupt):
        trainer.train(tiny_config(), run, progress=False, log=lambda m: None, command=first)
    assert (run / "checkpoint.pt").exists() == (kill_in_epoch > 0)
    monkeypatch.undo()
    again = "liquid-control train --out run --resume"
    result = trainer.train(None, run, resume=True, progress=False, log=lambda m: None, command=again)
    assert load_policy(result.policy_path).metadata["command"] == first
    digest = hashlib.sha256(result.policy_path.read_bytes()).hexdigest()
    logged = []
    kept = trainer.train(None, run, resume=True, progress=False, log=logged.append, command=again)
    assert hashlib.sha256(kept.policy_path.read_bytes()).hexdigest() == digest
    assert any("the run had finished" in m for m in logged)
    assert (kept.epochs, kept.selected_round, kept.success) == (result.epochs, result.selected_round, result.success)
    kept.policy_path.unlink()  # killed between its last checkpoint and policy.pt: the file is written
    assert load_policy(trainer.train(None, run, resume=True, progress=False, log=logged.append).policy_path)


def test_a_run_begun_before_a_config_check_still_resumes_and_a_new_one_is_refused(tmp_path, monkeypatch):
    """A setting without effect (here LTC's ``solver`` on a CfC) is refused for a new run, but a run that began
    before that check existed continues: refusing its resume would lose the run, as load_policy loads its file."""
    cfg = tiny_config(dagger_rounds=0)
    cfg["core"]["solver"] = "rk4"
    with pytest.raises(PolicyConfigError, match=r"core.solver: 'rk4' would be ignored"):
        trainer.train(cfg, tmp_path / "new", progress=False, log=lambda m: None)
    assert not (tmp_path / "new").exists()

    strict_validate = trainer.validate_config  # the run begins as it would have before the check
    monkeypatch.setattr(trainer, "validate_config", lambda raw, strict=True: strict_validate(raw, strict=False))
    die_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(cfg, tmp_path / "run", progress=False, log=lambda m: None)
    monkeypatch.undo()
    result = trainer.train(None, tmp_path / "run", resume=True, progress=False, log=lambda m: None)
    assert result.epochs == 3 and load_policy(result.policy_path).config["core"]["solver"] == "rk4"


def test_resume_refuses_a_changed_config(tmp_path):
    trainer.train(tiny_config(dagger_rounds=0), tmp_path / "run", progress=False, log=lambda m: None)
    with pytest.raises(trainer.TrainingError, match=r"another config \(keys that differ: training\.lr\)"):
        trainer.train(
            tiny_config(dagger_rounds=0, lr=0.1), tmp_path / "run", resume=True, progress=False, log=lambda m: None
        )
    assert training_run.differing_keys({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1, "c": 5}, "e": 3}) == [
        "a.c",
        "d",
        "e",
    ]
    many = {"a": {str(i): i for i in range(5)}, "b": {str(i): i for i in range(5)}}
    assert training_run.differing_keys(many, {"a": {}, "b": {}}) == ["a.0", "a.1", "a.2", "a.3", "a.4", "b.0", "..."]


def test_a_key_one_side_lacks_differs_from_null_on_the_other(tmp_path):
    """differing_keys read a key one side lacks as None: two configs that differed only there (a data.yaml without a
    key the run now has as null) were refused as 'keys that differ: )', naming nothing, and a real difference hid.
    A run's data.yaml without one of its keys is refused naming that key (342ee85), before any comparison."""
    from types import SimpleNamespace

    import yaml

    from liquid_control.training.bag_data import DATA_DEFAULTS, BagRun

    assert training_run.differing_keys({"a": {"b": None}}, {"a": {}}) == ["a.b"]
    assert training_run.differing_keys({}, {"c": None, "d": 1}) == ["c", "d"]
    assert training_run.differing_keys({"a": {"b": None}, "c": [None]}, {"a": {"b": None}, "c": [None]}) == []
    data = {**DATA_DEFAULTS, "bags": ["drive"]}
    spec = {"limits": {"max_gap_s": 0.5, "reorder_lag_s": None}}
    run = SimpleNamespace(out=tmp_path, data=data, spec=SimpleNamespace(describe=lambda: spec), epoch_done=1)
    for recorded, refused in (
        ({**data, "window": 16}, r"other bags or data settings \(keys that differ: data\.window\)"),
        ({k: v for k, v in data.items() if k != "node_params"}, r"data\.yaml: data\.node_params: missing"),
    ):
        (tmp_path / "data.yaml").write_text(yaml.safe_dump({"data": recorded, "spec": spec}))
        with pytest.raises(trainer.TrainingError, match=refused):
            BagRun._check_data_file(run)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted tiny run (one DAgger round): what every resumed run must reproduce bit for bit."""
    out = tmp_path_factory.mktemp("reference") / "run"
    trainer.train(tiny_config(dagger_rounds=1, beta=[0.5]), out, progress=False, log=lambda m: None)
    return out


def _same_policy(a, b):
    pa, pb = load_policy(a / "policy.pt"), load_policy(b / "policy.pt")
    return all(torch.equal(v, pb.state_dict()[k]) for k, v in pa.state_dict().items())


def _killed_during_collection(out, monkeypatch, episodes_saved):
    """Start a tiny run and kill it after ``episodes_saved`` demonstrations: no checkpoint exists yet."""
    saved = []
    original = training_run.save_episode

    def dying_save(path, episode):
        if len(saved) == episodes_saved:
            raise KeyboardInterrupt("killed")
        saved.append(path)
        return original(path, episode)

    monkeypatch.setattr(training_run, "save_episode", dying_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(tiny_config(dagger_rounds=1, beta=[0.5]), out, progress=False, log=lambda m: None)
    monkeypatch.setattr(training_run, "save_episode", original)
    assert not (out / "checkpoint.pt").exists()
    return saved


def test_a_refused_resume_changes_nothing_and_the_run_can_still_be_resumed(tmp_path, reference_run):
    """Before: config.yaml was written before the checkpoint was checked, so a refused resume left the run
    holding the wrong config (every later --resume refused)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    (run / "policy.pt").unlink()
    (run / "config.yaml").unlink()  # lost (or never written): the checkpoint still knows the config
    changed = tiny_config(dagger_rounds=1, beta=[0.5], lr=0.1)
    with pytest.raises(trainer.TrainingError, match="another config or seed"):
        trainer.train(changed, run, resume=True, progress=False, log=lambda m: None)
    assert not (run / "config.yaml").exists()
    with pytest.raises(trainer.TrainingError, match=r"another config or seed \(seed 0\)"):
        trainer.train(None, run, resume=True, seed=5, progress=False, log=lambda m: None)
    trainer.train(None, run, resume=True, progress=False, log=lambda m: None)
    assert _same_policy(run, reference_run)
    assert (run / "config.yaml").is_file()


def test_a_seed_change_before_the_first_checkpoint_is_refused(tmp_path, monkeypatch):
    """Before: accepted, and the run mixed the episode seeds of two training seeds in one data folder."""
    run = tmp_path / "run"
    saved = _killed_during_collection(run, monkeypatch, episodes_saved=2)
    with pytest.raises(
        trainer.TrainingError, match=r"ep_0000.npz: collected with episode seed 1000000, .* another --seed"
    ):
        trainer.train(None, run, resume=True, seed=1, progress=False, log=lambda m: None)
    assert sorted(p.name for p in (run / "data" / "round_00").iterdir()) == [p.name for p in saved]


def test_corrupt_episode_files_are_named_and_collected_again(tmp_path, monkeypatch, reference_run):
    run = tmp_path / "run"
    saved = _killed_during_collection(run, monkeypatch, episodes_saved=4)
    data = saved[1].read_bytes()
    saved[1].write_bytes(data[: len(data) // 2])  # truncated
    flipped = bytearray(saved[2].read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF
    saved[2].write_bytes(bytes(flipped))  # flipped bytes
    saved[3].write_bytes(b"")  # empty
    for path in saved[1:]:
        with pytest.raises(ValueError, match=f"{path.name}: not a readable demonstration episode"):
            load_episode(path)
    messages = []
    trainer.train(None, run, resume=True, progress=False, log=messages.append)
    for path in saved[1:]:
        assert any(f"{path.name}: not a readable" in m and "collecting the episode again" in m for m in messages)
        assert path.with_name(path.name + ".corrupt").is_file()  # kept aside for a look
    assert _same_policy(run, reference_run)  # the same episodes again: the run as if never damaged
    # once the run has trained on an episode, it cannot be collected again identically: say what to do
    (run / "policy.pt").unlink()
    saved[0].write_bytes(b"")
    with pytest.raises(trainer.TrainingError, match=r"ep_0000.npz: not a readable .* new folder"):
        trainer.train(None, run, resume=True, progress=False, log=lambda m: None)


def test_cli_help_and_bad_overrides(capsys, tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    help_text = parser.format_help()
    for flag in ("--config", "--out", "--resume", "--seed", "--set", "--augment"):
        assert flag in help_text
    args = parser.parse_args(
        ["--config", "policies/configs/cfc_ncp_rover.yaml", "--out", str(tmp_path / "x"), "--set", "core.typ=cfc"]
    )
    assert train_cli.run(args) == 2
    assert "core: unknown key(s) 'typ'" in capsys.readouterr().err
    args = parser.parse_args(["--out", str(tmp_path / "y")])
    assert train_cli.run(args) == 2
    assert "--config is required" in capsys.readouterr().err


def test_episode_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz: not a readable demonstration episode"):
        load_episode(bad)
    ep = Episode(
        observations={"pos": np.zeros((2, 2), np.float32)},
        dt=np.zeros(2, np.float32),
        stamp=np.zeros(2),
        expert_action=np.zeros((2, 2), np.float32),
        action=np.zeros((2, 2), np.float32),
    )
    assert len(load_episode(save_episode(tmp_path / "ok.npz", ep))) == 2
    frames = {"image": np.zeros((2, 4, 4, 3), np.uint8), "imu": np.zeros((3, 6), np.float32)}  # 2 frames, 3 updates
    held = Episode(frames, np.zeros(3, np.float32), np.zeros(3), np.zeros((3, 2)), np.zeros((3, 2)))
    held.image_index = np.array([0, 0, 1])
    assert len(load_episode(save_episode(tmp_path / "held.npz", held))) == 3  # a frame stored once, held twice
    held.image_index = np.array([0, 1, 2])
    with pytest.raises(ValueError, match="bad_index.npz: image_index must be non-decreasing frame numbers below 2"):
        load_episode(save_episode(tmp_path / "bad_index.npz", held))


def _npz_of(path, name: str, header: dict, chunks, zip_size: int | None = None):
    """An .npz (a deflated zip, as np.savez_compressed writes) of one member ``name``: an npy header of ``header``
    and the data ``chunks``, written as given (a crafted file); ``zip_size``: the member's size as the zip's
    directory gives it instead of the true one."""
    import zipfile

    from numpy.lib import format as npy

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open(name, "w") as member:
            npy.write_array_header_1_0(member, header)
            for chunk in chunks:
                member.write(chunk)
    if zip_size is not None:  # the central directory entry's uncompressed size, 24 bytes after its signature
        data = bytearray(path.read_bytes())
        at = data.rindex(b"PK\x01\x02") + 24
        data[at : at + 4] = zip_size.to_bytes(4, "little")
        path.write_bytes(bytes(data))
    return path


def test_an_episode_file_that_would_unpack_beyond_what_an_episode_holds_is_refused_from_its_headers(
    tmp_path, monkeypatch
):
    """A downloaded run's data/*.npz is a deflated zip whose npy headers declare the arrays numpy allocates and
    fills: deflate packs zeros ~1000:1, so a file of a few MB unpacks to GBs. Before: load_episode (every resume) let
    np.load allocate and unpack whatever a file declared (the 64 MiB member below; 40 GiB where the memory allows)
    and failed only afterwards, if at all. Now each member's header is read first: a file past
    max_episode_file_bytes() (the machine's memory), or a member whose size in the zip's directory disagrees
    with its header, is refused naming the file and the member, before numpy allocates anything. Real episodes load
    bit for bit as saved."""
    import tracemalloc
    import zipfile

    from liquid_control.training import data as episode_data
    from liquid_control.training.data import EpisodeFileError, EpisodeTooLargeError

    zeros = np.zeros(1 << 20, np.uint8)
    u1 = {"descr": "|u1", "fortran_order": False}
    huge = _npz_of(tmp_path / "huge.npz", "image.npy", {**u1, "shape": (40 << 30,)}, [zeros[:1000]])
    bomb = _npz_of(tmp_path / "bomb.npz", "dt.npy", {**u1, "shape": (64 << 20,)}, [zeros] * 64)
    assert huge.stat().st_size < 2000 and bomb.stat().st_size < 200_000  # 64 MiB of zeros, deflated
    pages_of_4_gib = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 1 << 20}
    monkeypatch.setattr(episode_data.os, "sysconf", pages_of_4_gib.__getitem__)  # a 4 GiB machine
    monkeypatch.setattr(episode_data, "_CGROUP_MEMORY_LIMITS", ())  # outside any container
    for path, member, declared, cap in ((huge, "image.npy", 40 << 30, 4 << 30), (bomb, "dt.npy", 64 << 20, 32 << 20)):
        if path is bomb:  # scaled down for the bomb
            monkeypatch.setattr(episode_data, "max_episode_file_bytes", lambda cap=cap: cap)
        tracemalloc.start()
        try:
            with pytest.raises(EpisodeTooLargeError) as refused:
                load_episode(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        said = str(refused.value)
        assert said.startswith(f"{path}: member {member} declares uint8 ({declared},) ({declared} bytes)"), said
        assert f"past the {cap} bytes of memory this machine gives the process: it cannot be loaded here" in said
        assert peak < 4 << 20  # nothing of the array was allocated (each header read is a few hundred bytes)
    monkeypatch.undo()
    lying = _npz_of(tmp_path / "lying.npz", "dt.npy", {**u1, "shape": (10,)}, [zeros[:10]], zip_size=64 << 20)
    with pytest.raises(EpisodeFileError, match=r"lying\.npz: member dt\.npy: its npy header declares uint8 \(10,\) "):
        load_episode(lying)
    not_npy = tmp_path / "not_npy.npz"
    with zipfile.ZipFile(not_npy, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("dt.npy", bytes(1 << 20))
    with pytest.raises(EpisodeFileError, match=r"not_npy\.npz: member dt\.npy: not a numpy array"):
        load_episode(not_npy)
    rng = np.random.default_rng(0)
    episode = Episode(
        {"image": rng.integers(0, 255, (3, 8, 8, 3), dtype=np.uint8), "imu": rng.normal(size=(5, 6)).astype("f4")},
        dt=rng.random(5).astype(np.float32),
        stamp=rng.random(5),
        expert_action=rng.normal(size=(5, 2)).astype(np.float32),
        action=rng.normal(size=(5, 2)).astype(np.float32),
        success=True,
        seed=7,
        beta=0.25,
        image_index=np.array([0, 0, 1, 2, 2]),
    )
    back = load_episode(save_episode(tmp_path / "real.npz", episode))
    for name in ("dt", "stamp", "expert_action", "action", "image_index"):
        assert np.array_equal(getattr(back, name), getattr(episode, name)), name
    for key, value in episode.observations.items():
        assert back.observations[key].dtype == value.dtype and np.array_equal(back.observations[key], value), key
    assert (back.success, back.seed, back.beta) == (True, 7, 0.25)


def test_the_episode_size_bound_is_this_machines_memory_and_a_larger_episode_is_kept_not_collected_again(
    tmp_path, monkeypatch
):
    """The bound was a fixed 2 GiB, below what save_episode legitimately writes for configs the checks allow (the
    rover at training.sensor_rate_range [1, 2] with a 1024x1024 camera: 750 frames, 2.36 GB): such an episode was set
    aside as corrupt on every --resume and collected again forever. The bound is the memory the process may use (the
    physical memory, or the container's limit where lower; 2 GiB where neither can be read): on a 64 GiB machine that
    episode's headers pass (declared in headers only: nothing is allocated); in a 2 GiB container they are refused as
    too large for this machine, and a resume is refused naming the file, which is kept, not set aside."""
    import io
    import math
    from types import SimpleNamespace

    from numpy.lib import format as npy

    from liquid_control.training import data as episode_data
    from liquid_control.training.data import EpisodeTooLargeError
    from liquid_control.training.run import TrainingRun

    def machine_of(gib: int, container: str | None = None):
        pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": gib << 18}
        monkeypatch.setattr(episode_data.os, "sysconf", pages.__getitem__)
        limits = []
        if container is not None:
            (tmp_path / "memory.max").write_text(container + "\n")
            limits.append(str(tmp_path / "memory.max"))
        monkeypatch.setattr(episode_data, "_CGROUP_MEMORY_LIMITS", (str(tmp_path / "no_such_file"), *limits))

    shape = (750, 1024, 1024, 3)
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    header_bytes = io.BytesIO()
    npy.write_array_header_1_0(header_bytes, header)
    declared = math.prod(shape)
    rover = _npz_of(tmp_path / "rover.npz", "image.npy", header, [b""], zip_size=header_bytes.tell() + declared)
    assert declared > 2 << 30 and rover.stat().st_size < 1000
    machine_of(64)
    assert episode_data.max_episode_file_bytes() == 64 << 30
    episode_data._check_unpacked_sizes(rover)  # not refused: the size check passes
    machine_of(64, container="max")  # a container without a memory limit
    assert episode_data.max_episode_file_bytes() == 64 << 30
    machine_of(64, container=str(2 << 30))
    assert episode_data.max_episode_file_bytes() == 2 << 30
    with pytest.raises(EpisodeTooLargeError, match=rf"past the {2 << 30} bytes of memory this machine gives"):
        episode_data._check_unpacked_sizes(rover)
    said = []
    run = SimpleNamespace(log=said.append, config=None)
    for trained_on in (False, True):  # not set aside and collected again: the same file would come back
        with pytest.raises(trainer.TrainingError, match=r"rover\.npz: .*resume the run on a machine with more memory"):
            TrainingRun._stored_episode(run, rover, seed=0, trained_on=trained_on)
    assert rover.is_file() and not list(tmp_path.glob("*.corrupt")) and said == []

    def no_such_name(name):
        raise ValueError(f"unrecognized configuration name {name}")

    monkeypatch.setattr(episode_data.os, "sysconf", no_such_name)
    monkeypatch.setattr(episode_data, "_CGROUP_MEMORY_LIMITS", ())
    assert episode_data.max_episode_file_bytes() == 2 << 30
    monkeypatch.delattr(episode_data.os, "sysconf")  # Windows
    assert episode_data.max_episode_file_bytes() == 2 << 30


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """tiny_config(dagger_rounds=0) killed as its third (last) epoch begins: checkpoint.pt holds two (read, never
    changed: each test damages a copy)."""
    out = tmp_path_factory.mktemp("killed") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        die_in_epoch(monkeypatch, 2)
        with pytest.raises(KeyboardInterrupt):
            trainer.train(tiny_config(dagger_rounds=0), out, progress=False, log=lambda m: None)
    return out


def _set_nan(tensor):
    tensor.view(-1)[0] = float("nan")


@pytest.mark.parametrize(
    "damage, refused",
    [
        (
            lambda c: c["policy"].__setitem__("head.weight", torch.zeros(3, 2)),
            r"shape mismatch .*head\.weight \(3, 2\) vs",
        ),
        (lambda c: _set_nan(c["policy"]["head.bias"]), r"its policy weights: non-finite weights in head\.bias"),
        (
            lambda c: _set_nan(c["optimizer"]["state"][0]["exp_avg_sq"]),
            r"optimizer state's exp_avg_sq of \S+ is not finite",
        ),
        (lambda c: c.__setitem__("epoch_done", 10**18), r"epoch_done 1000000000000000000 is not .* plan \(0\.\.3\)"),
        (lambda c: c.__setitem__("epoch_done", -5), r"epoch_done -5 is not a number of epochs"),
        (lambda c: c.__setitem__("epoch_done", 1), r"epoch_done 1 disagrees with its rows, .* \[1, 2\]"),
    ],
)
def test_a_damaged_or_edited_checkpoint_is_refused_naming_it_and_what_is_wrong(tmp_path, killed_run, damage, refused):
    """Before: a wrong-shaped tensor ended --resume in load_state_dict's traceback; NaN weights or optimizer moments
    resumed and stopped as 'training diverged ... lower training.lr', the wrong advice; epoch_done 10**18 wrote
    policy.pt untrained, -5 trained the whole plan again. Now one line names checkpoint.pt and what is wrong, and
    nothing is written."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(killed_run, run)
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=False)
    damage(checkpoint)
    torch.save(checkpoint, run / "checkpoint.pt")
    before = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(trainer.TrainingError, match=r"checkpoint\.pt: .*" + refused + r".*damaged or changed"):
        trainer.train(None, run, resume=True, progress=False, log=lambda m: None)
    assert (run / "checkpoint.pt").read_bytes() == before and not (run / "policy.pt").exists()


def test_a_killed_runs_checkpoint_still_resumes(tmp_path, killed_run):
    """The checks above refuse nothing a run writes: its killed checkpoint resumes to the last epoch."""
    import shutil

    shutil.copytree(killed_run, tmp_path / "run")
    assert trainer.train(None, tmp_path / "run", resume=True, progress=False, log=lambda m: None).epochs == 3


def _episode_file(path, **changes):
    """An episode file as save_episode writes one for _camera_config (uint8 8x8 frames, 2 actions), with ``changes``."""
    arrays = dict(
        image=np.zeros((2, 8, 8, 3), np.uint8),
        image_index=np.array([0, 0, 1, 1], np.int32),
        dt=np.array([0.0, 0.1, 0.1, 0.1], np.float32),
        stamp=np.arange(4, dtype=np.float64),
        expert_action=np.zeros((4, 2), np.float32),
        action=np.zeros((4, 2), np.float32),
        success=np.array(True),
        seed=np.array(0, np.int64),
        beta=np.array(1.0),
    )
    arrays.update(changes)
    np.savez_compressed(path, **arrays)
    return path


def _camera_config():
    from liquid_control.policy.config import validate_config

    return validate_config(
        {
            "name": "tiny_camera",
            "world": "TinyCamera-v0",
            "observation": {"image": {"height": 8, "width": 8}, "vectors": {}, "update_on": "camera"},
            "encoder": {"camera": {"channels": [4], "kernel_sizes": [3], "strides": [2], "features": 4}},
            "core": {"type": "cfc", "units": 8, "backbone_units": 8},
            "action": {"size": 2, "low": [-1, -1], "high": [1, 1]},
        }
    )


@pytest.mark.parametrize(
    "changes, refused",
    [
        (
            dict(expert_action=np.array([[0, 0], [np.nan, 0], [0, 0], [0, 0]], np.float32)),
            r"expert_action holds 1 non-finite value\(s\), e\.g\. nan at update 1",
        ),
        (dict(action=np.full((4, 2), np.inf, np.float32)), r"action holds 8 non-finite"),
        (dict(image=np.full((2, 8, 8, 3), np.inf)), r"image must be uint8 frames .* got float64"),
        (
            dict(image=np.zeros((2, 4, 4, 3), np.uint8)),
            r"image has frames of height, width, channels \(4, 4, 3\), the policy's config \(8, 8, 3\)",
        ),
        (
            dict(expert_action=np.zeros((4, 5), np.float32)),
            r"expert_action has shape \(4, 5\), the policy's config \(4, 2\)",
        ),
        (
            dict(dt=np.array([0, np.nan, 0.1, 0.1], np.float32)),
            r"dt holds 1 non-finite value\(s\), e\.g\. nan at update 1",
        ),
        (dict(dt=np.array([0, 0.1, -0.1, 0.1], np.float32)), r"dt must be >= 0 .* got -0\.1 at update 2"),
        (dict(image_index=np.array([0, 0, 1, 1], np.float32)), r"image_index must be integer frame numbers"),
    ],
)
def test_an_episode_file_of_other_dtypes_shapes_or_non_finite_values_is_refused_naming_it(tmp_path, changes, refused):
    """Before: load_episode checked sizes and lengths only: a NaN label trained as an epoch that 'diverged' (advising
    a lower lr), frames or labels of another shape failed in a batch as 'could not broadcast ...', a NaN or negative
    dt as 'dt must be finite' without the file, float frames holding inf trained silently. Now each is an
    EpisodeFileError naming the file when it is loaded (the shapes: against the run's config)."""
    config = _camera_config()
    assert len(load_episode(_episode_file(tmp_path / "ok.npz"), config)) == 4
    path = _episode_file(tmp_path / "bad.npz", **changes)
    with pytest.raises(EpisodeFileError, match=r"bad\.npz: " + refused):
        load_episode(path, config)


def test_a_damaged_episode_the_run_trained_on_is_refused_naming_it_not_as_a_divergence(tmp_path, killed_run):
    """The probe's case: a NaN label in a round the run had trained on stopped the resumed run as 'training diverged
    ... lower training.lr'; now the resume names the file before any epoch."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(killed_run, run)
    path = run / "data" / "round_00" / "ep_0001.npz"
    arrays = dict(np.load(path))
    arrays["expert_action"][3, 1] = np.nan
    np.savez_compressed(path, **arrays)
    with pytest.raises(trainer.TrainingError, match=r"ep_0001\.npz: expert_action holds 1 non-finite .*trained on it"):
        trainer.train(None, run, resume=True, progress=False, log=lambda m: None)


def test_model_card_refresh_states_both_kernel_paths_and_keeps_the_rest(tmp_path, monkeypatch):
    """--refresh rewrites the in-distribution and check sections from both paths' outcomes, nothing else."""
    import shutil

    from liquid_control.paths import policies_dir
    from liquid_control.training import model_card

    shutil.copy(policies_dir() / "cfc_rover.md", tmp_path / "cfc_rover.md")
    shutil.copy(policies_dir() / "cfc_rover.pt", tmp_path / "cfc_rover.pt")
    compiled = [True] * 70 + [False] * 30
    torch_path = list(compiled)
    torch_path[0], torch_path[75] = False, True  # two episodes flip between the paths
    measured = {
        "compiled": {"kernel_path": "compiled kernels (x86_64, AVX2/FMA, no AVX-512)", "outcomes": compiled},
        "torch": {"kernel_path": "torch (LIQUID_CONTROL_NATIVE=0)", "outcomes": torch_path},
    }
    monkeypatch.setattr(model_card, "measure_both_paths", lambda *a, **k: measured)
    before = model_card.read_card(tmp_path / "cfc_rover.md")
    path = model_card.refresh_card("cfc_rover", 100, 12, tmp_path / "out", source_dir=tmp_path)
    card = model_card.read_card(path)
    ind = card["in_distribution"]
    assert ind["success"] == 0.7 and ind["kernel_path"].startswith("compiled kernels")
    assert ind["other_kernel_path"]["success"] == 0.7 and ind["other_kernel_path"]["seeds_that_differ"] == [0, 75]
    assert card["check"]["successes"] == {"compiled": 12, "torch": 11}
    assert card["check"]["min_successes"] == model_card.min_check_successes(12, card["check"]["reference_success"])
    assert card["ood"] == before["ood"] and card["training"] == before["training"]
    text = path.read_text()
    assert text.count("- **In-distribution success**") == 1 and text.count("- **Check**") == 1
    assert "2 of 100 episodes change outcome between the two kernel paths" in text
    assert "- **OOD** (20 episodes per shift" in text


def test_timing_recipe_on_a_world_without_sensor_timings_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(trainer.TrainingError, match="world 'TinyReach-v0' has no sensor timings to vary"):
        trainer.train(tiny_config(sensor_rate_range=[0.5, 2.0]), tmp_path / "run", progress=False, log=lambda m: None)
    assert not (tmp_path / "run").exists()


def test_a_timing_recipe_the_world_cannot_vary_is_the_files_only_when_the_file_asks_for_it(tmp_path):
    """Before: the refusal began 'training.sensor_rate_range / jitter_range:', no key of the config, so one given with
    --set (overrides) was blamed on the config file, which does not say it."""
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))
    quiet = dict(progress=False, log=lambda m: None)
    with pytest.raises(trainer.TrainingError) as raised:
        trainer.train(path, tmp_path / "a", overrides={"training.jitter_range": [0.5, 2.0]}, **quiet)
    assert str(raised.value).startswith("training.jitter_range: world 'TinyReach-v0' has no sensor timings to vary")
    path.write_text(yaml.safe_dump(tiny_config(sensor_rate_range=[0.5, 2.0])))
    with pytest.raises(trainer.TrainingError, match=f"^{path}: training.sensor_rate_range: world 'TinyReach-v0'"):
        trainer.train(path, tmp_path / "b", **quiet)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_shipping_a_run_writes_the_policy_its_onnx_export_and_its_card(tmp_path, monkeypatch):
    """--run copies the run's policy.pt and exports it next to it: the ROS node's default backend runs the export
    only when it was made from that very file."""
    import shutil

    from liquid_control.paths import policies_dir
    from liquid_control.runtime.backends import OnnxBackend, checkpoint_sha256, load_backend
    from liquid_control.training import model_card

    (tmp_path / "run").mkdir()
    shutil.copy(policies_dir() / "cfc_balancer.pt", tmp_path / "run" / "policy.pt")
    measured = {path: {"kernel_path": path, "outcomes": [True] * 8 + [False] * 2} for path in ("compiled", "torch")}
    monkeypatch.setattr(model_card, "measure_both_paths", lambda *a, **k: measured)
    card = model_card.write_card("shipped", tmp_path / "run", 10, 4, tmp_path / "out", "a test machine")
    pt, onnx = tmp_path / "out" / "shipped.pt", tmp_path / "out" / "shipped.onnx"
    assert card.is_file() and pt.is_file() and onnx.is_file()
    assert OnnxBackend(onnx).source_sha256 == checkpoint_sha256(pt)
    assert isinstance(load_backend(pt), OnnxBackend)


def test_a_card_says_what_the_robustness_recipes_showed_the_policy(tmp_path, monkeypatch):
    """The card's data line named the augmentation only: neither the input normalisation nor timing or sun draws
    (describe_recipes said model cards print them, and none did)."""
    import yaml

    from liquid_control.paths import policies_dir
    from liquid_control.policy import load_policy, save_policy
    from liquid_control.training import model_card

    robust = load_policy(policies_dir() / "cfc_ncp_rover_robust.pt")
    config = dict(robust.config, training=dict(robust.config["training"], sun_elevation_range=[30.0, 90.0]))
    (tmp_path / "run").mkdir()
    save_policy(tmp_path / "run" / "policy.pt", type(robust).from_config(config), robust.metadata)
    measured = {path: {"kernel_path": path, "outcomes": [True] * 8 + [False] * 2} for path in ("compiled", "torch")}
    monkeypatch.setattr(model_card, "measure_both_paths", lambda *a, **k: measured)
    path = model_card.write_card("robust", tmp_path / "run", 10, 4, tmp_path / "out", "a test machine")
    card = yaml.safe_load(path.read_text().split("---")[1])
    said = "\n".join(card["training"]["recipes"])
    for words in ("augmentation `brightness`", "camera input normalisation `instance`", "sun's elevation U(30, 90)"):
        assert words in said
        assert words in path.read_text().split("---", 2)[2]


def _ship_run(tmp_path, core=None):
    """A run folder holding a copy of the shipped cfc_balancer (with another ``core``), and an out folder holding
    an earlier x.pt / x.onnx / x.md."""
    from liquid_control.paths import policies_dir
    from liquid_control.policy import Policy, load_policy, save_policy

    (tmp_path / "run").mkdir()
    shipped = load_policy(policies_dir() / "cfc_balancer.pt")
    policy = shipped if core is None else Policy.from_config(dict(shipped.config, core=core))
    save_policy(tmp_path / "run" / "policy.pt", policy, shipped.metadata)
    (tmp_path / "out").mkdir()
    for ext in (".pt", ".onnx", ".md"):
        (tmp_path / "out" / f"x{ext}").write_text("earlier")


@pytest.mark.parametrize("case", ["parity", "gru_ode"])
def test_shipping_a_policy_it_cannot_export_faithfully_ships_it_without_onnx(tmp_path, monkeypatch, capsys, case):
    """Once model_card exported without the parity check (an LTC dopri5 shipped an export 0.07 off torch, which
    `backend: auto` then ran), and a gru_ode run (aten::expm1) ended in a traceback after the measurement with the
    new x.pt beside the old x.onnx and x.md. Now the export is checked before measuring; the policy ships
    without one, the card says why, the stale export is gone and the node runs the checkpoint with torch.
    (gru_ode exports now: the operator the exporter lacks is its expm1 without the ONNX form the export gives it.)"""

    from liquid_control.runtime import export
    from liquid_control.runtime.backends import TorchBackend, load_backend
    from liquid_control.training import model_card

    _ship_run(tmp_path, core={"type": "gru_ode", "units": 8} if case == "gru_ode" else None)
    if case == "gru_ode":
        monkeypatch.setattr(torch.onnx, "register_custom_op_symbolic", lambda *args: None)
    if case == "parity":
        monkeypatch.setattr(export, "parity", lambda policy, path: 0.0735)
    seen = []

    def measure(*args, **kwargs):
        seen.append(capsys.readouterr().err)  # the export was tried before the measurement
        return {path: {"kernel_path": path, "outcomes": [True] * 8 + [False] * 2} for path in ("compiled", "torch")}

    monkeypatch.setattr(model_card, "measure_both_paths", measure)
    argv = ["--run", str(tmp_path / "run"), "--name", "x", "--episodes", "10", "--check-episodes", "4"]
    assert model_card.main([*argv, "--out", str(tmp_path / "out")]) == 0
    reason = "differs from torch by 0.0735" if case == "parity" else "UnsupportedOperatorError"
    assert len(seen) == 1 and reason in seen[0] and "x.pt ships without an ONNX export" in seen[0], seen
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["x.md", "x.pt"]
    card = model_card.read_card(out / "x.md")
    assert card["onnx"]["file"] is None and reason in card["onnx"]["not_exported"]
    assert f"- **ONNX export**: none: {card['onnx']['not_exported']}" in (out / "x.md").read_text()
    assert isinstance(load_backend(out / "x.pt"), TorchBackend)


def test_shipping_onto_a_full_disk_names_the_shipped_file_and_leaves_the_folder_as_it_was(
    tmp_path, monkeypatch, capsys
):
    """Before: a full disk (or `ulimit -f`) as the card's files were staged ended in an OSError traceback naming
    the temporary copy ('.x.1a2b3c/.x.onnx.unchecked'), after minutes of measuring."""
    import resource

    from liquid_control.training import model_card

    _ship_run(tmp_path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    def measure_then_fill_the_disk(*args, **kwargs):
        resource.setrlimit(resource.RLIMIT_FSIZE, (4000, hard))  # x.pt (~23 kB) cannot be written
        return {path: {"kernel_path": path, "outcomes": [True] * 8 + [False] * 2} for path in ("compiled", "torch")}

    monkeypatch.setattr(model_card, "measure_both_paths", measure_then_fill_the_disk)
    argv = ["--run", str(tmp_path / "run"), "--name", "x", "--episodes", "10", "--check-episodes", "4"]
    try:
        with pytest.raises(SystemExit) as stop:
            model_card.main([*argv, "--out", str(tmp_path / "out")])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert stop.value.code == 1
    out = tmp_path / "out"
    err = capsys.readouterr().err
    assert f"error: cannot write {out / 'x.pt'}: File too large; the files there are as they were" in err, err
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["x.md", "x.onnx", "x.pt"]  # no staging folder left
    assert all(p.read_text() == "earlier" for p in out.iterdir())


def test_model_card_with_fewer_episodes_than_the_default_check_checks_them_all(tmp_path, monkeypatch):
    """A card measured on fewer episodes than the 12 check episodes (docs/training.md's command with a smaller
    --episodes, as for a quick look) was refused: '--check-episodes must be 1..--episodes (4), got 12', an option
    the user never gave. Without --check-episodes the check now replays every measured episode up to 12."""
    from liquid_control.training import model_card

    _ship_run(tmp_path)
    measured = []

    def measure(policy, episodes, *args, **kwargs):
        measured.append(episodes)
        return {path: {"kernel_path": path, "outcomes": [True] * episodes} for path in ("compiled", "torch")}

    monkeypatch.setattr(model_card, "measure_both_paths", measure)
    argv = ["--run", str(tmp_path / "run"), "--name", "x", "--out", str(tmp_path / "out")]
    assert model_card.main([*argv, "--episodes", "4"]) == 0
    assert measured == [4] and model_card.read_card(tmp_path / "out" / "x.md")["check"]["seeds"] == [0, 1, 2, 3]
    assert model_card.main([*argv, "--episodes", "20"]) == 0
    assert model_card.read_card(tmp_path / "out" / "x.md")["check"]["seeds"] == list(range(12))


def _bad_card(tmp_path, front):
    from liquid_control.paths import policies_dir

    (tmp_path / "pol").mkdir()
    (tmp_path / "pol" / "c.pt").write_bytes((policies_dir() / "cfc_balancer.pt").read_bytes())
    body = (policies_dir() / "cfc_balancer.md").read_text().split("\n---\n", 1)[1]
    (tmp_path / "pol" / "c.md").write_text(front + body)


@pytest.mark.parametrize(
    "case,argv,message",
    [
        ("", ["--run", "RUN", "--name", "x", "--out", "FILE"], "--out FILE: exists and is not a folder"),
        ("", ["--run", "RUN", "--name", "x", "--cache", "FILE"], "--cache FILE: exists and is not a folder"),
        ("", ["--run", "RUN", "--name", "x", "--out", "/sys/lc_card"], "--out /sys/lc_card: cannot write in /sys"),
        ("notjson", ["--run", "RUN", "--name", "x", "--ood-results", "RES"], "RES: not the results.json"),
        ("other", ["--run", "RUN", "--name", "x", "--ood-results", "RES"], "RES: no episodes of policy 'x'"),
        ("corrupt_run", ["--run", "RUN", "--name", "x"], "policy.pt: not a readable policy file"),
        ("cache", ["--run", "RUN", "--name", "x", "--cache", "CACHE"], "policy.torch.10.json: not a cached"),
        ("unclosed", ["--refresh", "c"], "c.md: the YAML front matter is not closed by '---'"),
        ("empty", ["--refresh", "c"], "c.md: the YAML front matter is empty"),
        ("list", ["--refresh", "c"], "c.md: the YAML front matter is a list, not a mapping"),
        ("yaml", ["--refresh", "c"], "c.md: the front matter is not valid YAML"),
        ("bullets", ["--refresh", "c"], "c.md: no '- **In-distribution success**' bullet to rewrite"),
    ],
)
def test_model_card_refuses_a_corrupt_input_in_a_line_naming_it_before_measuring(
    tmp_path, capsys, monkeypatch, case, argv, message
):
    """Once tracebacks, most after the measurement: FileExistsError (--out a file), JSONDecodeError (--ood-results
    or a --cache entry; an --ood-results without the policy after x.pt/.onnx/.md were written), PolicyLoadError,
    yaml errors or a TypeError (list) for a --refresh card, an empty front matter called "not closed", a card
    without the bullets refreshed silently without them. Now exit 2, one line naming the file, nothing written."""
    import json

    from liquid_control.paths import policies_dir
    from liquid_control.training import model_card

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "policy.pt").write_bytes((policies_dir() / "cfc_balancer.pt").read_bytes())
    (tmp_path / "file").write_text("")
    results = tmp_path / "results.json"
    results.write_text("{oops" if case == "notjson" else json.dumps([dict.fromkeys(model_card.RESULT_KEYS, 0)]))
    if case == "corrupt_run":
        (tmp_path / "run" / "policy.pt").write_bytes(b"x" * 100)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "policy.torch.10.json").write_text("{")
    front = {
        "unclosed": "---\nname: c\n",
        "empty": "---\n---\n",
        "list": "---\n- 1\n- 2\n---\n",
        "yaml": "---\nname: [c\n---\n",
        "bullets": "---\nname: c\n---\n\n# c\n",
    }
    if case in front:
        _bad_card(tmp_path, front[case])
        monkeypatch.setattr(model_card, "policies_dir", lambda: tmp_path / "pol")
        if case == "bullets":
            (tmp_path / "pol" / "c.md").write_text(front[case])
    monkeypatch.setattr(model_card, "measure_both_paths", lambda *a, **k: pytest.fail("measured"))
    names = {"RUN": tmp_path / "run", "FILE": tmp_path / "file", "RES": results, "CACHE": tmp_path / "cache"}
    argv = [str(names.get(a, a)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as exit_:
        model_card.main([*argv, "--episodes", "10", "--check-episodes", "4"])
    err = capsys.readouterr().err
    for key, value in names.items():
        message = message.replace(key, str(value))
    assert exit_.value.code == 2 and message in err and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].count(message) == 1, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--run", "RUN", "--name", "x", "--episodes", "0"], "--episodes must be >= 1, got 0"),
        (["--run", "RUN", "--name", "x", "--episodes", "-2"], "--episodes must be >= 1, got -2"),
        (
            ["--run", "RUN", "--name", "x", "--episodes", "5", "--check-episodes", "12"],
            "--check-episodes must be 1..--episodes (5), got 12",
        ),
        (["--run", "RUN", "--name", "../elsewhere"], "--name '../elsewhere': a file name"),
        (["--run", "NOWHERE", "--name", "x"], "holds no policy.pt"),
        (["--refresh", "no_such_policy"], "--refresh no_such_policy: no shipped"),
        (["--run", "RUN", "--name", "x", "--append", "NOWHERE/a.md"], "a.md: no such file"),
    ],
)
def test_model_card_refuses_a_bad_request_before_measuring(tmp_path, capsys, monkeypatch, argv, message):
    """Before: --episodes 0 a ZeroDivisionError after the measurement, --episodes -2 a card of no episodes, a
    missing run or shipped card a traceback, --name ../x a card written outside --out."""
    import shutil

    from liquid_control.paths import policies_dir
    from liquid_control.training import model_card

    (tmp_path / "run").mkdir()
    shutil.copy(policies_dir() / "cfc_balancer.pt", tmp_path / "run" / "policy.pt")
    monkeypatch.setattr(model_card, "measure_both_paths", lambda *a, **k: pytest.fail("measured"))
    argv = [a.replace("RUN", str(tmp_path / "run")).replace("NOWHERE", str(tmp_path / "nowhere")) for a in argv]
    with pytest.raises(SystemExit) as exit_:
        model_card.main([*argv, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_explicit_ltc_solver_diverging_in_training_ends_the_run_saying_what_it_keeps(tmp_path, monkeypatch, capsys):
    """An LTC with an explicit solver past its stability limit at the data's dt (cells.SolverDivergedError) ends
    `liquid-control train` in one line naming the epoch, the setting to change and what the checkpoint keeps."""
    import yaml

    from liquid_control import cli
    from liquid_control.cells import SolverDivergedError

    real, calls = training_run.bc_epoch, []

    def diverging_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise SolverDivergedError("LTC solver 'euler' diverged: |state| reached 1e+30")
        return real(*args, **kwargs)

    monkeypatch.setattr(training_run, "bc_epoch", diverging_in_epoch_2)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(dagger_rounds=0, epochs_first=3)))
    out = tmp_path / "run"
    code = cli.main(["train", "--config", str(config), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert (
        f"epoch 2: LTC solver 'euler' diverged: |state| reached 1e+30 (core.solver, core.unfolds); "
        f"{out / 'checkpoint.pt'} keeps epoch 1"
    ) in err
    assert training_run.read_training_checkpoint(out / "checkpoint.pt")["epoch_done"] == 1


def test_a_card_names_the_code_that_trained_its_policy(tmp_path, monkeypatch):
    """The run records the commit of the code that trained it (metadata 'code'); the card left it out, so a card
    named no code a reader could check out."""
    from liquid_control.paths import policies_dir
    from liquid_control.policy import load_policy, save_policy
    from liquid_control.training import model_card

    shipped = load_policy(policies_dir() / "cfc_balancer.pt")
    (tmp_path / "run").mkdir()
    commit = "0123456789abcdef0123456789abcdef01234567"
    save_policy(tmp_path / "run" / "policy.pt", shipped, dict(shipped.metadata, code=commit))
    measured = {path: {"kernel_path": path, "outcomes": [True] * 8 + [False] * 2} for path in ("compiled", "torch")}
    monkeypatch.setattr(model_card, "measure_both_paths", lambda *a, **k: measured)
    path = model_card.write_card("x", tmp_path / "run", 10, 4, tmp_path / "out", "a test machine")
    assert model_card.read_card(path)["training"]["code"] == commit
    assert f"code: {commit}." in model_card.split_card(path)[1]
    # the shipped file records the run's file it was saved from (an evaluation of that file fills its OOD entry)
    from liquid_control.runtime.backends import checkpoint_sha256

    source_sha = load_policy(tmp_path / "out" / "x.pt").metadata[model_card.SHIPPED_FROM]
    assert source_sha == checkpoint_sha256(tmp_path / "run" / "policy.pt")
    # a run resumed on the other kernel path records both parts' paths (a list, as its code); the card kept neither
    parts = ["compiled kernels (x86_64)", "torch (LIQUID_CONTROL_NATIVE=0)"]
    save_policy(tmp_path / "run" / "policy.pt", shipped, dict(shipped.metadata, code=commit, kernels=parts))
    path = model_card.write_card("y", tmp_path / "run", 10, 4, tmp_path / "out", "a test machine")
    assert model_card.read_card(path)["training"]["kernels"] == parts
    assert "cells on compiled kernels (x86_64), then torch (LIQUID_CONTROL_NATIVE=0)" in model_card.split_card(path)[1]


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped by whoever adopted it, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_card_process_stopped_while_measuring_leaves_no_measurement_running(tmp_path, how):
    """Before: SIGTERM (or SIGKILL) to the model card's process ended it without a word and left both measuring
    processes running their episodes to the end (hours for a camera policy's 100), writing nowhere."""
    import os
    import signal
    import subprocess
    import sys
    import time

    _ship_run(tmp_path)
    argv = [sys.executable, "-m", "liquid_control.training.model_card", "--run", str(tmp_path / "run"), "--name", "x",
            "--out", str(tmp_path / "out"), "--episodes", "100000", "--check-episodes", "1"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    children = []
    try:
        deadline = time.monotonic() + 120
        while len(children) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            children = [  # of any of its threads
                int(pid)
                for task in os.listdir(f"/proc/{proc.pid}/task")
                for pid in open(f"/proc/{proc.pid}/task/{task}/children").read().split()
            ]
        assert len(children) == 2, "the two measuring processes did not start"
        proc.send_signal(getattr(signal, how))
        err = proc.communicate(timeout=60)[1]
        if how == "SIGTERM":
            assert proc.returncode == 143
            assert err.replace("\r", "\n").splitlines()[-1] == "model_card.py: terminated: no card written", err[-500:]
        deadline = time.monotonic() + 30
        while any(map(_running, children)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(_running, children)), "a measuring process outlived the card's"
    finally:
        for pid in [proc.pid, *children]:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.md", "x.onnx", "x.pt"]  # the earlier ones


@pytest.mark.parametrize("batching", ["random", "length"])
def test_an_epochs_progress_bar_counts_the_steps_the_epoch_takes(tmp_path, monkeypatch, batching):
    """An audit: the bar's total counted the chunks of the episodes in file order, while the epoch batches them in
    its shuffled order (episodes of other lengths together): a bar of 15 for an epoch of 17 steps. The same with
    batches of episodes of similar length (``training.batching: length``)."""
    from liquid_control.training import run as run_module

    bars = []

    class Bar:
        def __init__(self, total, desc, enabled):
            self.total, self.desc, self.n = total, desc, 0
            bars.append(self)

        def update(self, n):
            self.n += n

        def set_postfix(self, **kwargs):
            pass

        def close(self):
            pass

    monkeypatch.setattr(run_module, "progress_bar", Bar)
    config = tiny_config(batch_size=3, dagger_max_steps=5, batching=batching)
    trainer.train(config, tmp_path / "run", progress=False, log=lambda m: None)
    epochs = [bar for bar in bars if bar.desc.startswith("epoch ")]
    assert len(epochs) == 3 + 2 * 2 and all(bar.n == bar.total for bar in epochs), [(b.n, b.total) for b in epochs]
