"""training.ema_decay: the average of the weights drives the DAgger rounds, is selected, validated and kept."""

import numpy as np
import pytest
import torch
from test_training import die_in_epoch, tiny_config

from liquid_control.policy import PolicyConfigError, load_policy
from liquid_control.training import run as training_run
from liquid_control.training import trainer
from liquid_control.training.weight_average import WeightAverage


def _parameters(module) -> dict:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def test_the_average_is_the_exponential_average_of_the_weights_after_each_step():
    """Against the closed form in float64: after steps with weights w_1..w_n the average is
    d^(n-1) w_1 + sum_k (1 - d) d^(n-k) w_k (the first step sets it)."""
    module = torch.nn.Linear(3, 2)
    decay, draws = 0.9, []
    average = WeightAverage(module, decay)
    rng = np.random.default_rng(0)
    for _ in range(25):
        draw = {name: rng.normal(size=tuple(p.shape)) for name, p in module.named_parameters()}
        with torch.no_grad():
            for name, p in module.named_parameters():
                p.copy_(torch.as_tensor(draw[name], dtype=p.dtype))
        draws.append({name: p.detach().double().numpy() for name, p in module.named_parameters()})
        average.update()
    n = len(draws)
    for i, name in enumerate(average.names):
        expected = decay ** (n - 1) * draws[0][name] + sum(
            (1 - decay) * decay ** (n - k) * draws[k - 1][name] for k in range(2, n + 1)
        )
        np.testing.assert_allclose(average.average[i].double().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert average.steps == n


def test_swapping_the_average_in_puts_the_trained_weights_back_bit_for_bit_also_after_an_error():
    module = torch.nn.Linear(4, 3)
    average = WeightAverage(module, 0.5)
    with average.swapped_in():  # no step yet: the weights as they are
        assert all(torch.equal(a, b) for a, b in zip(_parameters(module).values(), module.parameters()))
    average.update()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    average.update()
    trained = _parameters(module)
    with pytest.raises(RuntimeError, match="inside"):
        with average.swapped_in():
            for name, p in module.named_parameters():
                assert torch.equal(p, trained[name] - 0.5)  # halfway between the two steps' weights
            raise RuntimeError("inside")
    for name, p in module.named_parameters():
        assert torch.equal(p, trained[name])


def test_a_decay_outside_zero_to_one_is_refused_naming_the_setting():
    with pytest.raises(PolicyConfigError, match="training.ema_decay"):
        trainer.train(tiny_config(ema_decay=1.0), "/nonexistent/never", progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match="training.ema_decay"):
        WeightAverage(torch.nn.Linear(1, 1), 1.0)


def test_the_average_drives_the_dagger_rounds_is_selected_and_is_what_policy_pt_holds(tmp_path, monkeypatch):
    seen = {"run": None, "driving": [], "selected": []}
    collect, collect_episode, measure = (
        training_run.TrainingRun.collect,
        training_run.collect_episode,
        training_run.measure_success,
    )

    def recording_collect(self, env, round_index):
        seen["run"] = self
        return collect(self, env, round_index)

    def recording_episode(env, policy, *args):
        if policy is not None:  # a DAgger round: the policy's weights now against the run's average now
            average = seen["run"].average
            seen["driving"].append(
                (_parameters(policy), {n: a.clone() for n, a in zip(average.names, average.average)})
            )
        return collect_episode(env, policy, *args)

    def recording_measure(policy, *args, **kwargs):
        seen["selected"].append(_parameters(policy))
        return measure(policy, *args, **kwargs)

    monkeypatch.setattr(training_run.TrainingRun, "collect", recording_collect)
    monkeypatch.setattr(training_run, "collect_episode", recording_episode)
    monkeypatch.setattr(training_run, "measure_success", recording_measure)
    config = tiny_config(ema_decay=0.8, dagger_max_steps=5)
    result = trainer.train(config, tmp_path / "run", progress=False, log=lambda m: None)

    assert len(seen["driving"]) == 2 * 3  # rounds 1 and 2, three episodes each
    for driving, average in seen["driving"]:
        for name, value in average.items():
            assert torch.equal(driving[name], value), name
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    average, trained = ck["weight_average"]["average"], ck["policy"]
    assert ck["weight_average"]["steps"] > 0 and ck["weight_average"]["decay"] == 0.8
    assert any(not torch.equal(average[name], trained[name]) for name in average)  # not the weights as trained
    for name, value in average.items():  # the last round's selection measured the average
        assert torch.equal(seen["selected"][-1][name], value), name
    kept = load_policy(result.policy_path).state_dict()
    best = ck["best"]["state_dict"]
    assert all(torch.equal(kept[name], best[name]) for name in kept)
    chosen = seen["selected"][ck["best"]["round"]]  # what the selection measured in the round it kept
    assert all(torch.equal(kept[name], chosen[name]) for name in chosen)
    for name in set(trained) - set(average):  # buffers (input normalisation) as set, not averaged
        assert torch.equal(kept[name], trained[name]), name


def test_a_killed_run_resumes_with_the_same_average(tmp_path, monkeypatch):
    config = tiny_config(ema_decay=0.8)
    reference = trainer.train(config, tmp_path / "whole", progress=False, log=lambda m: None)
    die_in_epoch(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config, tmp_path / "killed", progress=False, log=lambda m: None)
    monkeypatch.undo()
    resumed = trainer.train(None, tmp_path / "killed", resume=True, progress=False, log=lambda m: None)
    a, b = load_policy(resumed.policy_path).state_dict(), load_policy(reference.policy_path).state_dict()
    assert all(torch.equal(a[name], b[name]) for name in b)


@pytest.mark.parametrize(
    "damage, refused",
    [
        (lambda wa: None, "weight average is not one this run wrote"),
        (lambda wa: dict(wa, decay=0.5), "decay 0.5 is not training.ema_decay 0.8"),
        (lambda wa: dict(wa, average={k: v * float("nan") for k, v in wa["average"].items()}), "not finite"),
        (lambda wa: dict(wa, average={k: v[:1] for k, v in wa["average"].items()}), "is not a tensor of"),
    ],
)
def test_a_checkpoint_whose_average_is_damaged_is_refused_naming_the_file(tmp_path, monkeypatch, damage, refused):
    die_in_epoch(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(tiny_config(ema_decay=0.8), tmp_path / "run", progress=False, log=lambda m: None)
    monkeypatch.undo()
    path = tmp_path / "run" / "checkpoint.pt"
    ck = torch.load(path, weights_only=False)
    torch.save(dict(ck, weight_average=damage(ck["weight_average"])), path)
    with pytest.raises(trainer.TrainingError, match=f"{path}: .*{refused}"):
        trainer.train(None, tmp_path / "run", resume=True, progress=False, log=lambda m: None)


def test_a_bag_run_validates_the_average_and_keeps_it(tmp_path, monkeypatch):
    from test_bags import CAMERA_ONLY, _steady_bag

    from liquid_control.training import bag_data

    validated, bc_loss = [], bag_data.bc_loss

    def recording_loss(policy, *args, **kwargs):
        validated.append(_parameters(policy))
        return bc_loss(policy, *args, **kwargs)

    monkeypatch.setattr(bag_data, "bc_loss", recording_loss)
    data = {
        "bags": [_steady_bag(tmp_path / "drive", 0.07, 30)],
        "validation": [_steady_bag(tmp_path / "held", 0.07, 20)],
    }
    overrides = {"training.epochs_first": 3, "training.ema_decay": 0.5}
    lines = []
    result = trainer.train(
        CAMERA_ONLY, tmp_path / "run", data=data, overrides=overrides, progress=False, log=lines.append
    )
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    average = ck["weight_average"]["average"]
    steps = ck["best"]["average_steps"]
    assert f"(its weights' average over {steps} optimizer step(s), training.ema_decay 0.5); wrote" in lines[-1], lines
    assert len(validated) == 3
    assert any(not torch.equal(average[name], ck["policy"][name]) for name in average)
    for name, value in average.items():
        assert torch.equal(validated[-1][name], value), name
    kept = load_policy(result.policy_path).state_dict()  # the epoch selected: the average it validated
    chosen = validated[ck["best"]["epoch"] - 1]
    assert all(torch.equal(kept[name], chosen[name]) for name in chosen)


def test_the_average_folds_in_the_weights_after_every_optimizer_step():
    """bc_epoch's after_step: once per step that moved the weights, after the step (the last call sees the weights
    the epoch ends with)."""
    import gymnasium

    from liquid_control.policy import Policy
    from liquid_control.training.bc import bc_epoch, count_chunks, epoch_batches
    from liquid_control.training.data import rollout

    env = gymnasium.make("TinyReach-v0")
    episodes = [rollout(env, None, seed=s) for s in range(6)]
    torch.manual_seed(0)
    policy = Policy.from_config(tiny_config())
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    seen = []
    stats = bc_epoch(
        policy,
        optimizer,
        episodes,
        batch_size=4,
        sequence_length=8,
        grad_clip=1.0,
        rng=np.random.default_rng(0),
        after_step=lambda: seen.append(_parameters(policy)),
    )
    steps = count_chunks(episodes, 8, epoch_batches([len(ep) for ep in episodes], 4, np.random.default_rng(0)))
    assert len(seen) == stats["chunks"] == steps  # every chunk here is labelled: one step each
    assert all(torch.equal(seen[-1][name], p) for name, p in policy.named_parameters())
    assert any(not torch.equal(seen[0][name], seen[1][name]) for name in seen[0])  # each after its own step


def test_a_run_too_short_for_its_decay_warns_that_it_keeps_about_its_first_weights(tmp_path):
    lines = []
    config = tiny_config(ema_decay=0.998, dagger_rounds=0, epochs_first=2)
    trainer.train(config, tmp_path / "short", progress=False, log=lines.append)
    assert lines[-1].startswith("warning: the kept average still holds 9"), lines[-1]  # 0.998 ** (n - 1), n ~ 8
    assert "training.ema_decay 0.998 halves a step's share in 346 steps" in lines[-1], lines[-1]
    lines.clear()
    trainer.train(tiny_config(ema_decay=0.5, dagger_rounds=0, epochs_first=2), tmp_path / "ok", log=lines.append)
    assert not any(line.startswith("warning: the kept average") for line in lines), lines
