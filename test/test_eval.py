"""OOD evaluation (`liquid-control eval`): statistics, paired seeds, backends, resume, validation, report."""

import dataclasses
import json
import math
import os
import pathlib
import sys

import numpy as np
import pytest

from liquid_control.evaluation import evaluate as evaluate_module
from liquid_control.evaluation.backends import run_jobs
from liquid_control.evaluation.episode import SmoothnessTracker
from liquid_control.evaluation.evaluate import evaluate
from liquid_control.evaluation.plan import EvaluationSetupError, build_plan
from liquid_control.evaluation.results import LOG_NAME, read_log
from liquid_control.evaluation.summary import paired_comparison
from liquid_control.stats import (
    bonferroni_adjust,
    bootstrap_mean_interval,
    hierarchical_bootstrap_interval,
    mcnemar_exact_p,
    paired_seed_test,
    student_t_quantile,
    student_t_sf,
    wilson_interval,
)

TINY_CONFIG = {
    "name": "tiny_cfc",
    "world": "LiquidRover-v0",
    "observation": {"image": {"height": 32, "width": 32}, "vectors": {"imu": 6}, "update_on": "camera"},
    "encoder": {
        "camera": {"channels": [4, 8], "kernel_sizes": [5, 3], "strides": [2, 2], "features": 8},
        "vectors": {"hidden": [8], "features": 4},
    },
    "core": {"type": "cfc", "units": 8},
    "action": {"size": 2, "low": [-1.0, -1.0], "high": [1.0, 1.0]},
}


def without_wall_time(records):
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in records]


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    """Two untrained tiny CfC policies (two 'training seeds'); the expert supplies the successes."""
    import torch

    from liquid_control.policy import Policy, save_policy

    folder = tmp_path_factory.mktemp("ckpt")
    paths = []
    for seed in (3, 4):
        torch.manual_seed(seed)
        paths.append(str(save_policy(folder / f"tiny_s{seed}.pt", Policy.from_config(TINY_CONFIG), {"seed": seed})))
    return paths


# ------------------------------------------------------------------------------------------ statistics


@pytest.mark.parametrize(
    "k,n,lo,hi",
    [
        # Newcombe (1998), Stat. Med. 17:857, Table I, method 3 (Wilson score without continuity correction)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
    ],
)
def test_wilson_interval_matches_published_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=6e-5)


def test_wilson_interval_rejects_impossible_counts():
    with pytest.raises(ValueError, match="n >= 1"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="outside"):
        wilson_interval(11, 10)


def test_bootstrap_interval_agrees_with_t_interval_on_normal_data():
    from scipy import stats

    x = np.random.default_rng(1).normal(3.0, 2.0, size=400)
    half = stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    lo, hi = bootstrap_mean_interval(x)
    assert lo == pytest.approx(x.mean() - half, abs=0.03)
    assert hi == pytest.approx(x.mean() + half, abs=0.03)
    assert bootstrap_mean_interval([2.0]) is None
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_mean_interval([1.0, float("nan")])


@pytest.mark.parametrize("only_a,only_b", [(0, 0), (3, 0), (7, 2), (10, 10), (1, 12)])
def test_mcnemar_exact_matches_a_binomial_test(only_a, only_b):
    from scipy import stats

    want = 1.0 if only_a + only_b == 0 else stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert mcnemar_exact_p(only_a, only_b) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("t,df", [(0.5, 4), (2.776, 4), (-1.3, 7), (10.0, 2), (0.0, 3), (3.2, 1.5), (40.0, 30)])
def test_student_t_matches_scipy(t, df):
    from scipy import stats

    assert student_t_sf(t, df) == pytest.approx(stats.t.sf(t, df), rel=1e-9, abs=1e-15)
    assert student_t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-7)


def test_paired_seed_test_is_a_paired_t_test_and_bonferroni_controls_the_family():
    from scipy import stats

    d = [0.1, 0.2, -0.05, 0.15, 0.3]
    mean, lo, hi, p = paired_seed_test(d)
    assert p == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, rel=1e-9)
    half = stats.t.ppf(0.975, 4) * np.std(d, ddof=1) / math.sqrt(5)
    assert (mean, lo, hi) == pytest.approx((0.14, 0.14 - half, 0.14 + half), rel=1e-7)
    # equal differences (rates of 30 episodes tie): the t statistic is undefined; the exact sign-flip p-value,
    # the share of the 2**n sign patterns whose |mean| reaches the observed one, never 0
    assert paired_seed_test([-10 / 30] * 2)[3] == 0.5 and paired_seed_test([0.1] * 5)[3] == 0.0625
    assert paired_seed_test([0.325, 0.32500000000000007])[3] == 0.5  # two seeds' rates, pooled in float: t ~ 1e16
    assert paired_seed_test([0.0] * 4)[3] == 1.0
    with pytest.raises(ValueError, match=">= 2 training seeds"):
        paired_seed_test([0.3])
    # Bonferroni: m p, at most 1; input order kept
    assert bonferroni_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert bonferroni_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_seed_level_interval_covers_the_architecture_mean_where_pooled_episodes_do_not():
    """Seeds differ (a beta spread of true rates): the interval over seeds then episodes covers the
    architecture's mean success about 88% of the time with 5 seeds; Wilson on pooled episodes about half."""
    rng = np.random.default_rng(0)
    hierarchical = pooled = 0
    for r in range(200):
        rates = rng.beta(4, 2, size=5)  # mean 2/3
        outcomes = [[rng.random(30) < rate] for rate in rates]
        _, lo, hi = hierarchical_bootstrap_interval(outcomes, resamples=1000, seed=r)
        hierarchical += lo <= 2 / 3 <= hi
        wins = int(sum(o[0].sum() for o in outcomes))
        w_lo, w_hi = wilson_interval(wins, 150)
        pooled += w_lo <= 2 / 3 <= w_hi
    assert hierarchical / 200 >= 0.85 and pooled / 200 <= 0.7
    # strata (several shifts) are averaged with equal weight, per seed
    mean, lo, hi = hierarchical_bootstrap_interval([[[1, 1], [0, 0, 0, 0]], [[1, 0], [0, 0, 0, 1]]])
    assert mean == pytest.approx((0.5 + 0.5 * (0.5 + 0.25)) / 2) and lo <= mean <= hi
    with pytest.raises(ValueError, match="same, non-empty strata"):
        hierarchical_bootstrap_interval([[[1]], [[1], [0]]])


def test_paired_comparison_pairs_by_training_and_episode_seed():
    def rec(policy, seed, episode, success, shift="winter"):
        return {"policy": policy, "shift": shift, "training_seed": seed, "episode_seed": episode, "success": success}

    records = [
        rec("a", 0, 1, True),
        rec("b", 0, 1, False),
        rec("a", 0, 2, True),
        rec("b", 0, 2, True),
        rec("a", 1, 1, False),
        rec("b", 1, 1, True),
        rec("a", 1, 2, True),
        rec("b", 1, 2, False),
        rec("a", 2, 1, True),  # no partner: left out
        rec("a", 0, 1, False, shift="fog"),
        rec("b", 0, 1, False, shift="fog"),
    ]
    rows = paired_comparison(records, "a", "b", ["winter", "fog", "night"])
    # per episode seed, the side that succeeded in more of its pairs: episode 1 one each (a tie), episode 2 a
    assert [(r.shift, r.pairs, r.only_a, r.only_b) for r in rows] == [("winter", 4, 1, 0), ("fog", 1, 0, 0)]
    assert rows[0].success_a == 0.75 and rows[0].success_b == 0.5
    assert rows[0].p_value == pytest.approx(1.0) and rows[1].p_value == 1.0


def test_smoothness_is_total_action_change_over_measured_time():
    tracker = SmoothnessTracker()
    actions = [np.array([0.0, 0.0]), np.array([1.0, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 1.0])]
    for action, dt in zip(actions, [None, 0.5, 0.25, 0.25]):
        tracker.add(action, dt)
    # |delta| averaged over the 2 dims: 0.5, 0, 1  -> 1.5 over 1.0 s
    assert tracker.value == pytest.approx(1.5)


# ------------------------------------------------------------------------------------------ plan checks


def test_a_checkpoint_whose_path_holds_a_glob_character_is_that_checkpoint(tmp_path):
    """Before: `eval --policy "runs/day [1]/policy.pt"` read the path as a glob (`[1]` matching the one character
    '1'), so an existing checkpoint was refused as "no checkpoint matches" (dfbe5767 fixed only --bag)."""
    from liquid_control.evaluation.plan import parse_policy_argument

    for name in ("day [1]", "day [2]"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "policy.pt").write_bytes(b"")
    given = str(tmp_path / "day [1]" / "policy.pt")
    assert parse_policy_argument(f"cfc={given}") == ("cfc", [given])
    both = [str(tmp_path / name / "policy.pt") for name in ("day [1]", "day [2]")]
    assert parse_policy_argument(str(tmp_path / "day *" / "policy.pt")) == (None, both)  # still a glob


def test_a_checkpoint_whose_path_holds_an_equals_sign_is_that_checkpoint(tmp_path, monkeypatch):
    """Before: `eval --policy runs/lr=0.1/policy.pt` (a sweep's run folder) split at the first '=', into the policy
    name 'runs/lr' and the checkpoint '0.1/policy.pt', which does not exist. A name holds no '/'; a whole value
    that names a file is that file, and one that names files read both ways is refused."""
    from liquid_control.evaluation.plan import parse_policy_argument

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "lr=0.1").mkdir(parents=True)
    (tmp_path / "runs" / "lr=0.1" / "policy.pt").write_bytes(b"")
    assert parse_policy_argument("runs/lr=0.1/policy.pt") == (None, ["runs/lr=0.1/policy.pt"])
    absolute = str(tmp_path / "runs" / "lr=0.1" / "policy.pt")
    assert parse_policy_argument(absolute) == (None, [absolute])
    assert parse_policy_argument("cfc=runs/lr=0.1/policy.pt") == ("cfc", ["runs/lr=0.1/policy.pt"])
    assert parse_policy_argument("runs/lr=*/policy.pt") == (None, ["runs/lr=0.1/policy.pt"])  # a glob that matches
    monkeypatch.chdir(tmp_path / "runs")
    assert parse_policy_argument("lr=0.1/policy.pt") == (None, ["lr=0.1/policy.pt"])  # the whole names the file
    assert parse_policy_argument("cfc=lr=0.1/policy.pt") == ("cfc", ["lr=0.1/policy.pt"])
    (tmp_path / "runs" / "0.1").mkdir()
    (tmp_path / "runs" / "0.1" / "policy.pt").write_bytes(b"")  # now 'lr' at 0.1/policy.pt is a file too
    with pytest.raises(EvaluationSetupError, match=r"reads two ways.*\./lr=0\.1/policy\.pt.*lr=\./0\.1/policy\.pt"):
        parse_policy_argument("lr=0.1/policy.pt")
    assert parse_policy_argument("./lr=0.1/policy.pt") == (None, ["./lr=0.1/policy.pt"])
    assert parse_policy_argument("lr=./0.1/policy.pt") == ("lr", ["./0.1/policy.pt"])


def test_unknown_shift_and_bad_checkpoints_are_rejected_before_any_work(tmp_path, tiny_checkpoints):
    from liquid_control.cli import main

    with pytest.raises(EvaluationSetupError, match="season=monsoon"):
        build_plan(["expert"], ["in_distribution", "season=monsoon"], 2)
    with pytest.raises(EvaluationSetupError, match="shiny_new_preset"):
        build_plan(["expert"], ["shiny_new_preset"], 2)
    missing = str(tmp_path / "nowhere.pt")
    with pytest.raises(EvaluationSetupError, match="nowhere.pt.*does not exist"):
        build_plan([f"cfc={missing}"], ["in_distribution"], 2)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(open(tiny_checkpoints[0], "rb").read()[:300])  # a truncated copy
    with pytest.raises(EvaluationSetupError, match="corrupt.pt"):
        build_plan([f"cfc={tiny_checkpoints[0]}", f"bad={corrupt}"], ["in_distribution"], 2)
    import torch

    mismatched = tmp_path / "mismatched.pt"
    payload = torch.load(tiny_checkpoints[0], weights_only=True)
    payload["config"]["core"]["units"] = 12  # a config that does not match the weights
    torch.save(payload, mismatched)
    with pytest.raises(EvaluationSetupError, match="mismatched.pt.*does not match"):
        build_plan([f"cfc={mismatched}"], ["in_distribution"], 2)
    with pytest.raises(EvaluationSetupError, match="no checkpoint matches"):
        build_plan([f"cfc={tmp_path}/run_*/policy.pt"], ["in_distribution"], 2)
    # through the command: exit status 2, a message naming the file, and no report folder started
    out = tmp_path / "report"
    assert main(["eval", "--policy", f"bad={corrupt}", "--out", str(out), "--no-progress"]) == 2
    assert main(["eval", "--policy", "expert", "--shift", "fog=7", "--out", str(out), "--no-progress"]) == 2
    assert not out.exists()


def test_paired_episode_seeds_identical_across_policies_and_training_seeds(tiny_checkpoints):
    plan = build_plan(["expert", "tiny=" + ",".join(tiny_checkpoints)], ["in_distribution", "winter"], 3)
    tiny = plan.policies[1]
    assert tiny.training_seeds == (3, 4)  # read from the checkpoints' metadata
    assert tiny.parameter_count > 0 and 0 < tiny.core_parameter_count < tiny.parameter_count
    seeds = {}
    for job in plan.jobs:
        seeds.setdefault((job.policy, job.training_seed), []).append((job.shift, job.episode_seed))
    assert len(seeds) == 3
    first = next(iter(seeds.values()))
    assert all(sorted(v) == sorted(first) for v in seeds.values())
    assert len(first) == 6 and len(set(first)) == 6

    # and the worlds really are the same: the first camera frame of an episode does not depend on the policy
    from liquid_control.evaluation.agents import make_env

    frames = []
    for job in plan.jobs[:3]:  # expert, tiny seed 3, tiny seed 4 on the same shift and episode seed
        assert (job.shift, job.episode_seed) == (plan.jobs[0].shift, plan.jobs[0].episode_seed)
        env = make_env(job.world, job.shift, job.env_kwargs)
        frames.append(env.reset(seed=job.episode_seed)[0]["image"])
        env.close()
    assert all(np.array_equal(frames[0], im) for im in frames[1:])


# ------------------------------------------------------------------------------------------ running


def keyed(store: dict):
    """A ``run_jobs`` ``on_batch`` that keeps each record in ``store`` by its episode's key."""
    return lambda batch, records: store.update((job.key, record) for job, record in zip(batch, records))


def shortened(jobs, time_limit=12.0):
    """The jobs with a shorter episode time limit: an untrained policy drives until it, the expert arrives first."""
    return [dataclasses.replace(j, env_kwargs={**j.env_kwargs, "time_limit": time_limit}) for j in jobs]


def test_process_pool_gives_the_same_records_as_serial(tmp_path, tiny_checkpoints):
    plan = build_plan(["expert", f"tiny={tiny_checkpoints[0]}"], ["in_distribution", "sensor_rate=2"], 1)
    jobs, serial, pooled = shortened(plan.jobs), {}, {}
    run_jobs(jobs, keyed(serial), backend="serial", progress=False)
    run_jobs(jobs, keyed(pooled), backend="process", workers=2, progress=False)
    assert set(serial) == set(pooled) == {j.key for j in plan.jobs}
    keys = sorted(serial)
    assert without_wall_time([serial[k] for k in keys]) == without_wall_time([pooled[k] for k in keys])
    expert = [serial[k] for k in keys if k[0] == "expert"]
    assert all(r["success"] for r in expert)  # the privileged expert reaches the target
    assert all(r["steps"] > 10 and r["sim_time_s"] > 1.0 and r["smoothness"] > 0 for r in expert)
    rate2 = [r for r in expert if r["shift"] == "sensor_rate=2"]
    nominal = [r for r in expert if r["shift"] == "in_distribution"]
    # twice the camera rate: about half the measured dt between updates
    assert np.mean([r["mean_dt_s"] for r in rate2]) == pytest.approx(
        np.mean([r["mean_dt_s"] for r in nominal]) / 2, rel=0.15
    )


def test_interrupted_evaluation_resumes_without_losing_or_duplicating(tmp_path, monkeypatch):
    plan = build_plan(["expert"], ["in_distribution", "winter"], 3)
    out = str(tmp_path / "run")
    real_run_jobs = evaluate_module.run_jobs

    def interrupted_after_a_batch(jobs, on_batch, **kwargs):  # the first shift's 3 episodes
        def stop(batch, records):
            on_batch(batch, records)
            raise KeyboardInterrupt

        real_run_jobs(jobs, stop, **kwargs)

    monkeypatch.setattr(evaluate_module, "run_jobs", interrupted_after_a_batch)
    with pytest.raises(KeyboardInterrupt):
        evaluate(plan, out, backend="serial", progress=False, example=False)
    log = os.path.join(out, LOG_NAME)
    before = read_log(log)
    assert len(before) == 3
    with open(log, "a") as fh:  # a kill in the middle of writing the fourth line
        fh.write('{"policy": "expert", "trai')

    with pytest.raises(EvaluationSetupError, match="--resume"):
        evaluate(plan, out, backend="serial", progress=False, example=False)

    ran = []

    def counting(jobs, on_batch, **kwargs):
        ran.extend(jobs)
        real_run_jobs(jobs, on_batch, **kwargs)

    monkeypatch.setattr(evaluate_module, "run_jobs", counting)
    result = evaluate(plan, out, backend="serial", resume=True, progress=False, example=False)
    assert len(ran) == 3 and not {j.key for j in ran} & {
        (r["policy"], r["training_seed"], r["shift"], r["episode_seed"]) for r in before
    }
    after = read_log(log)
    assert len(after) == 6 and after[:3] == before
    keys = [(r["shift"], r["episode_seed"]) for r in result["records"]]
    assert len(keys) == len(set(keys)) == 6
    with open(os.path.join(out, "results.json")) as fh:
        assert len(json.load(fh)) == 6

    ran.clear()
    evaluate(plan, out, backend="serial", resume=True, progress=False, example=False)
    assert ran == []  # everything done: nothing reruns


def test_each_episode_says_which_kernels_ran_it_and_a_report_mixing_two_paths_warns(
    tmp_path, monkeypatch, capsys, tiny_checkpoints
):
    """Before: nothing in an evaluation's record said whether the cells ran the compiled or the torch kernels (or
    AVX-512 or AVX2), which change the last bits and so some outcomes (a balancer's 6/8 against 7/8 on one
    machine), and a run resumed on the other path mixed both in one report without a sign of it. Each episode's
    record now says what its cells ran (where it ran: a worker's own), the report and a card's OOD entry say it, and
    a report over two paths warns; the expert, which runs no cell, records none."""
    from liquid_control.cells import native
    from liquid_control.training.model_card import ood_section

    plan = build_plan([f"tiny={tiny_checkpoints[0]}", "expert"], ["in_distribution"], 4)
    out = str(tmp_path / "run")
    real_run_jobs = evaluate_module.run_jobs

    def stopped_after_the_first_batch(jobs, on_batch, **kwargs):
        def stop(batch, records):
            on_batch(batch, records)
            raise KeyboardInterrupt

        real_run_jobs(jobs, stop, **kwargs)

    monkeypatch.setattr(native, "describe", lambda compiled_ran=None: "compiled kernels (x86_64, AVX-512)")
    monkeypatch.setattr(evaluate_module, "run_jobs", stopped_after_the_first_batch)
    with pytest.raises(KeyboardInterrupt):
        evaluate(plan, out, backend="serial", progress=False, example=False, lanes=2)
    monkeypatch.setattr(evaluate_module, "run_jobs", real_run_jobs)
    monkeypatch.setattr(native, "describe", lambda compiled_ran=None: "torch (LIQUID_CONTROL_NATIVE=0)")
    capsys.readouterr()
    evaluate(plan, out, backend="serial", resume=True, progress=False, example=False, lanes=2)
    said = capsys.readouterr().err
    mixed = "compiled kernels (x86_64, AVX-512) (2 episodes) and torch (LIQUID_CONTROL_NATIVE=0) (2 episodes)"
    assert f"warning: tiny's episodes in the report ran on {mixed}" in said, said
    # said as the resumed part's first batch comes in too, not only at the end of a run of hours
    assert (
        "warning: this part runs tiny's episodes on torch (LIQUID_CONTROL_NATIVE=0), the 2 episodes of it in the log "
        "ran on compiled kernels (x86_64, AVX-512)"
    ) in said, said
    with open(os.path.join(out, "results.json")) as fh:
        records = json.load(fh)
    assert (
        sorted(str(r.get("kernels")) for r in records if r["policy"] == "tiny")
        == ["compiled kernels (x86_64, AVX-512)"] * 2 + ["torch (LIQUID_CONTROL_NATIVE=0)"] * 2
    )
    assert all("kernels" not in r for r in records if r["policy"] == "expert")
    with open(os.path.join(out, "provenance.json")) as fh:
        assert json.load(fh)["kernels"] == mixed
    assert f"- The cells' kernels in its episodes: {mixed}" in pathlib.Path(out, "report.md").read_text()
    # a model card's OOD entry filled from these results names both
    assert ood_section(os.path.join(out, "results.json"), "tiny")["kernel_path"] == (
        "compiled kernels (x86_64, AVX-512) and torch (LIQUID_CONTROL_NATIVE=0)"
    )
    # one path: no warning, the path alone
    other = str(tmp_path / "one_path")
    evaluate(plan, other, backend="serial", progress=False, example=False, lanes=2)
    assert "ran on" not in capsys.readouterr().err
    text = pathlib.Path(other, "report.md").read_text()
    assert "- The cells' kernels in its episodes: torch (LIQUID_CONTROL_NATIVE=0)\n" in text


def test_two_policies_on_two_kernel_paths_by_design_are_no_mix(tmp_path, monkeypatch, capsys, tiny_checkpoints):
    """Before: an LSTM (no compiled kernel: torch) beside a CfC (compiled) in one report, the headline experiment's
    usual mix, drew the warning meant for one policy's episodes run on two paths ('rerun into a new --out on one
    path'), which no rerun can satisfy. The report names each policy's path instead, and warns of none."""
    from liquid_control.evaluation import provenance

    records = [
        {"policy": "cfc", "checkpoint_sha": "a", "kernels": "compiled kernels (x86_64, AVX2/FMA, no AVX-512)"},
        {"policy": "lstm", "checkpoint_sha": "b", "kernels": "torch (this core has no compiled kernel)"},
        {"policy": "expert"},
    ] * 2
    by_policy = provenance.policy_kernels(records)
    assert provenance.mixed_paths(by_policy) == {}
    assert provenance.policy_kernels_text(by_policy) == (
        "compiled kernels (x86_64, AVX2/FMA, no AVX-512) for cfc; torch (this core has no compiled kernel) for lstm"
    )
    records.append({"policy": "ltc", "checkpoint_sha": "c", "kernels": records[0]["kernels"]})
    assert provenance.policy_kernels_text(provenance.policy_kernels(records)).startswith(
        "compiled kernels (x86_64, AVX2/FMA, no AVX-512) for cfc, ltc; torch"
    )
    records.pop()
    records.append({"policy": "cfc", "checkpoint_sha": "a", "kernels": "torch (LIQUID_CONTROL_NATIVE=0)"})
    assert provenance.mixed_paths(provenance.policy_kernels(records)) == {
        "cfc": "compiled kernels (x86_64, AVX2/FMA, no AVX-512) (2 episodes) and torch (LIQUID_CONTROL_NATIVE=0) "
        "(1 episode)"
    }
    # through evaluate: the shipped LSTM (no compiled kernel) beside the shipped CfC
    from liquid_control.cells import native
    from liquid_control.paths import policies_dir

    plan = build_plan(
        [f"lstm={policies_dir() / 'lstm_rover.pt'}", f"cfc={policies_dir() / 'cfc_rover.pt'}"], ["in_distribution"], 1
    )
    out = tmp_path / "two"
    capsys.readouterr()
    evaluate(plan, str(out), backend="serial", progress=False, example=False)
    assert "warning" not in capsys.readouterr().err
    line = next(x for x in (out / "report.md").read_text().splitlines() if x.startswith("- The cells' kernels"))
    if native.load() is not None:  # the CfC compiled, the LSTM torch: each named
        assert f"{native.describe(compiled_ran=False)} for lstm; {native.describe()} for cfc" in line, line
    else:  # both on torch, turned off or not built: one path
        assert line.startswith(f"- The cells' kernels in its episodes: {native.describe()}"), line


def test_killed_evaluation_process_keeps_finished_episodes_and_resumes(tmp_path):
    """A real SIGKILL of `liquid-control eval` (process pool) mid-run, then `--resume`."""
    import signal
    import subprocess
    import sys
    import time

    from liquid_control.cli import main

    out = tmp_path / "killed"
    args = [
        "eval",
        "--policy",
        "expert",
        "--shift",
        "in_distribution",
        "--shift",
        "night",
        "--episodes",
        "6",
        "--out",
        str(out),
        "--workers",
        "2",
        "--lanes",
        "1",  # one episode per batch: records arrive one by one, so the kill lands between them
        "--no-progress",
        "--no-example",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "liquid_control.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    log = out / LOG_NAME
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if log.exists() and len(read_log(str(log))) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = read_log(str(log))
    assert 2 <= len(finished) < 12, "the kill should land mid-run"
    assert main(args + ["--resume"]) == 0
    after = read_log(str(log))
    assert after[: len(finished)] == finished  # kept as they were
    keys = [(r["shift"], r["episode_seed"]) for r in after]
    assert len(keys) == len(set(keys)) == 12  # every episode once


def test_ctrl_c_during_the_experiments_training_stops_it_without_training_the_queued_runs(tmp_path):
    """Before: Ctrl-C interrupted the run in progress, then the training pool trained the run already queued to it
    (one per worker and one more) whole before the experiment said what it keeps (23 s here; minutes at the
    headline schedule). A real Ctrl-C: SIGINT to the whole process group, the workers too."""
    import signal
    import subprocess
    import sys
    import threading

    out = tmp_path / "headline"
    args = ["eval", "--experiment", "headline", "--out", str(out), "--workers", "1", "--archs", "cfc,lstm"]
    # 4 demonstrations, not 40: the first line comes after them, and the run still has its 8 epochs, 20 DAgger
    # episodes and 4 epochs to go (16 s of a 2-core machine's time) when the Ctrl-C comes, at once after the line
    args += ["--seeds", "1", "--recipes", "off", "--no-progress", "--train-set", "training.demonstrations=4"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "liquid_control.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background job's SIGINT is ignored
    )
    # the cfc run's first round: it trains on (its second round) while lstm waits; a child that never prints is
    # killed after 300 s (readline then ends), so the suite fails here instead of hanging
    watchdog = threading.Timer(300, os.killpg, (proc.pid, signal.SIGKILL))
    watchdog.start()
    try:
        first = proc.stdout.readline()
        while "warning: encoder.camera:" in first:  # the configs' camera encoders leave a strip unseen (said first)
            first = proc.stdout.readline()
    finally:
        watchdog.cancel()
    assert first.startswith("[cfc seed 0] round 0"), first
    os.killpg(proc.pid, signal.SIGINT)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, rest
    assert f"interrupted: {out} keeps the finished training runs" in rest and "Traceback" not in rest
    assert "[lstm seed 0]" not in rest and not (out / "train" / "lstm" / "seed_0" / "policy.pt").exists()
    assert not (out / "train" / "cfc" / "seed_0" / "policy.pt").exists()


def test_report_folder_with_tables_and_plots(tmp_path):
    import csv

    import matplotlib.image

    plan = build_plan(["expert"], ["in_distribution", "winter", "sensor_rate=0.5", "sensor_rate=2"], 2)
    out = tmp_path / "report"
    # in this process: a pool's start (two interpreters importing torch and MuJoCo) was most of the test, and the
    # report is the same (test_process_pool_gives_the_same_records_as_serial; the headline test reports from a pool)
    result = evaluate(plan, str(out), backend="serial", progress=False, command="liquid-control eval ...")
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and {r["shift"] for r in rows} == set(plan.shifts)
    assert {
        "policy",
        "training_seed",
        "shift",
        "episode_seed",
        "success",
        "return",
        "smoothness",
        "collision",
        "steps",
        "sim_time_s",
    } <= set(rows[0])
    report = (out / "report.md").read_text()
    assert "| winter | 100% [34%, 100%] |" in report  # 2/2 successes: at least Wilson [0.342, 1]
    for png in ("success_by_shift.png", "success_vs_sensor_timing.png", "example_episode.png"):
        assert f"]({png})" in report
        image = matplotlib.image.imread(out / png)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
        assert image[..., :3].std() > 0.05  # not a blank canvas
    assert len(result["records"]) == 8


@pytest.fixture(scope="module")
def local_ray():
    """A throwaway local Ray instance (optional extra) shared by this module's Ray tests."""
    ray = pytest.importorskip("ray", reason="ray is an optional extra (pip install ray==2.60.0)")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "disabled")  # no token file in the user's home
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl"}},
        )
        try:
            yield ray
        finally:
            ray.shutdown()


def test_ray_backend_on_a_local_instance_matches_serial(tiny_checkpoints, local_ray):
    """`--backend ray` (optional extra): same records as serial; checkpoints travel through the object store."""
    plan = build_plan(["expert", f"tiny={tiny_checkpoints[1]}"], ["lighting=dusk"], 1)
    jobs, serial, on_ray = shortened(plan.jobs), {}, {}
    run_jobs(jobs, keyed(serial), backend="serial", progress=False)
    run_jobs(jobs, keyed(on_ray), backend="ray", progress=False)
    assert local_ray.is_initialized()  # an instance the backend did not start is left running
    assert set(on_ray) == set(serial) == {j.key for j in plan.jobs}
    assert all(without_wall_time([on_ray[k]]) == without_wall_time([serial[k]]) for k in serial)
    assert all(on_ray[k]["success"] for k in serial if k[0] == "expert")
    assert {on_ray[k]["checkpoint"] for k in serial if k[0] == "tiny"} == {tiny_checkpoints[1]}


TINY_TRAINING = ("demonstrations=4", "dagger_rounds=0", "epochs_first=1", "eval_episodes=1", "max_episode_steps=30")


def test_headline_training_on_ray_trains_what_the_local_pool_trains(tmp_path, local_ray, monkeypatch):
    """With --backend ray the experiment's training runs go to the cluster too (before, only the episodes did):
    a run trained in a Ray task has the weights and losses the local pool trains (same seed, config, one
    thread); it replaces an interrupted run of the same options in its folder (one with other options is
    refused first, as `train --resume` refuses it); a run that fails leaves the others kept; a resume keeps
    what finished and trains the rest."""
    import torch
    import yaml

    from liquid_control.evaluation import experiment
    from liquid_control.policy import load_policy

    extra = {f"training.{k}": int(v) for k, v in (t.split("=") for t in TINY_TRAINING)}
    overrides = {"cfc": experiment.training_overrides("cfc", 0.1, extra, False, "headline")}
    began = []  # on_work: the experiment's part counts from here (provenance.Sitting)
    (pooled,) = experiment.train_all(
        [("cfc", "cfc")], [0], str(tmp_path / "pool"), overrides, False, 1, "process", lambda: began.append("pool")
    )
    folder = tmp_path / "ray" / "cfc" / "seed_0"
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"an interrupted run")
    (folder / "config.yaml").write_text(yaml.safe_dump(experiment._wanted_config("lstm", {})))

    def on_ray(seeds, resume=True):
        on_work = lambda: began.append(tuple(seeds))  # noqa: E731
        return experiment.train_all(
            [("cfc", "cfc")], seeds, str(tmp_path / "ray"), overrides, resume, 1, "ray", on_work
        )

    with pytest.raises(EvaluationSetupError, match=r"seed_0: .*config.yaml: the run was started with another config"):
        on_ray([0, 1])
    (folder / "config.yaml").write_text(yaml.safe_dump(experiment._wanted_config("cfc", overrides["cfc"])))
    keep = experiment._keep_ray_run

    def seed_1_fails(job, sent):
        if job[2] == 1:
            raise RuntimeError("the node went away")
        return keep(job, sent)

    monkeypatch.setattr(experiment, "_keep_ray_run", seed_1_fails)
    with pytest.raises(EvaluationSetupError, match=r"training cfc \(seed 1\) on Ray: the node went away"):
        on_ray([0, 1])
    monkeypatch.undo()
    assert sorted(os.listdir(folder)) == ["config.yaml", "metrics.csv", "policy.pt"]  # the interrupted run replaced
    assert sorted(os.listdir(folder.parent)) == ["seed_0"]  # seed 1 failed; no staging folder left
    stamp = (folder / "policy.pt").stat().st_mtime_ns
    kept, trained = on_ray([0, 1])
    experiment.train_all([("cfc", "cfc")], [0], str(tmp_path / "pool"), overrides, True, 1, "process", began.clear)
    on_ray([0, 1])  # every run kept: no work begins
    assert began == ["pool", (0, 1), (0, 1)]  # not the refused first call, nor the calls that kept every run
    assert (folder / "policy.pt").stat().st_mtime_ns == stamp and kept["cpu_s"] is None  # kept, not retrained
    assert trained["seed"] == 1 and trained["cpu_s"] > 0 and trained["node"]
    assert trained["metadata"]["seed"] == 1 and "on Ray" in trained["metadata"]["command"]
    here, there = load_policy(pooled["policy"]).state_dict(), load_policy(kept["policy"]).state_dict()
    assert here.keys() == there.keys() and all(torch.equal(here[k], there[k]) for k in here)
    losses = [folder / "metrics.csv", tmp_path / "pool" / "cfc" / "seed_0" / "metrics.csv"]
    losses = [[row.rsplit(",", 1)[0] for row in path.read_text().splitlines()] for path in losses]  # no wall time
    assert losses[0] == losses[1] and len(losses[0]) > 1


def test_the_experiment_with_the_ray_backend_trains_on_ray(tmp_path, local_ray, monkeypatch):
    """`liquid-control eval --experiment ... --backend ray` reaches the Ray training, connected (the wiring the
    test above does not go through)."""
    from liquid_control.cli import main
    from liquid_control.evaluation import experiment

    reached = []

    def stop_at_training(jobs, on_work):
        reached.append((sorted((j[0], j[2]) for j in jobs), local_ray.is_initialized()))
        raise EvaluationSetupError("stopped before training")

    monkeypatch.setattr(experiment, "_train_on_ray", stop_at_training)
    argv = ["eval", "--experiment", "headline", "--archs", "cfc", "--seeds", "1", "--out", str(tmp_path / "x")]
    assert main(argv + ["--backend", "ray", "--no-progress"]) == 2
    assert reached == [([("cfc", 0), ("cfc_robust", 0)], True)]


def test_a_ray_run_of_another_config_or_a_failed_one_is_refused_and_nothing_written(tmp_path):
    """A node with another version of the package trains another config: refused, naming the node, and nothing
    is left in the experiment's folder (a later resume would otherwise misread it); so is a run that failed
    there, or one that sent back too little."""
    import yaml

    from liquid_control.evaluation.experiment import _keep_ray_run, _wanted_config, config_path

    job = ("cfc", "cfc", 0, str(tmp_path / "cfc"), {}, False)
    newer = yaml.safe_dump({**_wanted_config("cfc", {}), "a_key_of_a_newer_version": 1}).encode()
    for config in (pathlib.Path(config_path("lstm")).read_bytes(), newer):
        sent = {"files": {"config.yaml": config, "metrics.csv": b"", "policy.pt": b"x"}, "log": [], "node": "n1"}
        with pytest.raises(EvaluationSetupError, match="Ray node n1 trained another config .*install the same"):
            _keep_ray_run(job, sent)
        assert os.listdir(tmp_path) == []
    with pytest.raises(EvaluationSetupError, match=r"training cfc \(seed 0\) on Ray node n1: out of memory"):
        _keep_ray_run(job, {"error": "out of memory", "log": ["round 0"], "node": "n1"})
    with pytest.raises(EvaluationSetupError, match="on Ray node n1 sent no metrics.csv, policy.pt"):
        _keep_ray_run(job, {"files": {"config.yaml": newer}, "log": [], "node": "n1"})
    assert os.listdir(tmp_path) == []


def test_reduced_training_schedule_scales_counts_and_keeps_the_beta_decay():
    from liquid_control.evaluation.experiment import config_path, schedule_overrides
    from liquid_control.policy import load_config

    config = load_config(config_path("cfc"))
    t = config["training"]
    assert schedule_overrides(config, 20) == {} and schedule_overrides(config, 60) == {}
    half = schedule_overrides(config, 10)
    assert half["training.demonstrations"] == round(t["demonstrations"] / 2)
    assert half["training.dagger_rounds"] == round(t["dagger_rounds"] / 2)
    assert half["training.beta"] == [t["beta"][0], t["beta"][-1]]
    assert half["training.epochs_first"] == round(t["epochs_first"] / 2)
    tiny = schedule_overrides(config, 0.01)
    assert tiny["training.demonstrations"] >= 4 and tiny["training.epochs_first"] == 1
    with pytest.raises(EvaluationSetupError, match="train-minutes"):
        schedule_overrides(config, 0)
    from liquid_control.evaluation.experiment import training_overrides

    both = training_overrides("cfc", 10, {"training.epochs_first": 7, "training.batch_size": 4})
    assert both["training.epochs_first"] == 7 and both["training.batch_size"] == 4  # --train-set wins
    assert both["training.demonstrations"] == half["training.demonstrations"]


def test_headline_experiment_trains_then_evaluates_and_resumes(tmp_path, capfd):
    """The one-command experiment at a toy budget: one architecture, one seed, one shift, one episode; carried
    to another folder by scripts/headline_state.sh, it resumes there without training or running anything."""
    from liquid_control.cli import main

    out = tmp_path / "headline"
    argv = [
        "eval",
        "--experiment",
        "headline",
        "--archs",
        "cfc",
        "--seeds",
        "1",
        "--train-minutes",
        "0.1",
        "--episodes",
        "1",
        "--shift",
        "in_distribution",
        "--out",
        str(out),
        "--workers",
        "1",
        "--no-progress",
        "--no-example",
        "--no-saliency",
    ]
    for tiny in TINY_TRAINING:
        argv += ["--train-set", f"training.{tiny}"]  # every stage of a training run, on little data
    assert main(argv + ["--archs", "transformer"]) == 2 and not out.exists()  # rejected before training
    assert main(argv + ["--train-set", "training.epochs_frist=3"]) == 2 and not out.exists()
    assert main(argv) == 0
    policy = out / "train" / "cfc" / "seed_0" / "policy.pt"
    with open(out / "results.json") as fh:
        records = json.load(fh)
    assert sorted(r["policy"] for r in records) == ["cfc", "cfc_robust", "expert"]
    assert {r["checkpoint"] for r in records if r["policy"] == "cfc"} == {str(policy)}
    from liquid_control.policy import load_policy

    robust = load_policy(out / "train" / "cfc_robust" / "seed_0" / "policy.pt").config
    assert robust["encoder"]["camera"]["normalize"] == "instance" and robust["training"]["sensor_rate_range"]
    assert load_policy(policy).config["training"]["augmentation"] == []  # the plain arm: no recipe
    report = (out / "report.md").read_text()
    assert "**Reduced budget**" in report and "| cfc | `policies/configs/cfc_rover.yaml` | 0 |" in report
    assert "1 training seed per architecture" in report and "1 episode per shift and seed" in report  # not "1 seeds"
    row = next(line for line in report.splitlines() if line.startswith("| cfc_robust | `policies/"))
    assert float(row.split("|")[5]) > 0  # the run's own CPU seconds, beside its wall time
    with open(out / "provenance.json") as fh:
        provenance = json.load(fh)
    assert provenance["cpu_time_s"] >= float(row.split("|")[5])  # the training workers are counted
    assert provenance["budget"].startswith("1 training seed x 2 policies, 1 episode x 1 shift per")
    assert "augmentation `gamma`" in report and "rendered worlds: the training distribution" in report
    assert "## Provenance" in report and "- Commit: `" in report
    assert main(argv) == 2  # the folder holds an experiment: needs --resume
    stamp = policy.stat().st_mtime_ns
    assert main(argv + ["--resume"]) == 0
    assert policy.stat().st_mtime_ns == stamp  # trained policies are kept, not retrained
    with open(out / "provenance.json") as fh:  # nothing ran: the report was rewritten, and provenance says by what
        rewritten = json.load(fh)
    assert rewritten["ran_no_episodes"] and rewritten["command"] == provenance["command"] + " --resume"
    assert rewritten["earlier_parts"][-1]["training_wall_time_s"] == provenance["training_wall_time_s"]
    assert "- This part ran no episodes: it wrote the report for its command" in (out / "report.md").read_text()
    changed = [a if a != "0.1" else "10" for a in argv]  # another training schedule: refused, not mixed in
    assert main(changed + ["--resume"]) == 2
    import subprocess

    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "headline_state.sh")
    state, moved = tmp_path / "state", tmp_path / "moved"
    (out / "train" / "cfc" / "seed_1").mkdir()  # an unfinished run (no policy.pt): not carried
    assert not (out / "provenance.sitting.json").exists()  # the finished report removed its sitting record
    cut = {"command": "eval --cut", "commit": "abc", "started_utc": "2026-12-03 05:16 UTC", "wall_time_s": 123.0}
    (out / "provenance.sitting.json").write_text(json.dumps({"cut_short": [], "current": cut}))  # a part killed
    subprocess.run(["bash", script, "save", str(out), str(state)], check=True, capture_output=True)
    assert sorted(p.name for p in (state / "train").iterdir()) == ["cfc", "cfc_robust"]
    assert not (state / "train" / "cfc" / "seed_1").exists() and (state / "episodes.jsonl.gz").is_file()
    assert (state / "provenance.json").read_text() == (out / "provenance.json").read_text()
    subprocess.run(["bash", script, "restore", str(state), str(moved)], check=True, capture_output=True)
    refused = subprocess.run(["bash", script, "restore", str(state), str(moved)], capture_output=True, text=True)
    assert refused.returncode == 2 and "nothing overwritten" in refused.stderr
    capfd.readouterr()
    assert main([a if a != str(out) else str(moved) for a in argv] + ["--resume"]) == 0
    assert capfd.readouterr().err.count("already trained") == 2  # (logged by the pool's worker processes)
    assert (moved / "episodes.jsonl").read_text() == (out / "episodes.jsonl").read_text()  # no episode ran again
    assert (moved / "results.csv").read_text().count("\n") == (out / "results.csv").read_text().count("\n")
    with open(moved / "provenance.json") as fh:  # the part cut short after the last report is counted
        assert json.load(fh)["earlier_parts"][-1] == cut
    assert not (moved / "provenance.sitting.json").exists()


def test_a_planted_or_swapped_checkpoint_is_refused_by_the_workers(tiny_checkpoints, tmp_path, monkeypatch):
    """Issue 9, item 6: workers evaluate only the bytes whose SHA-256 the plan recorded. Before: a Ray worker
    trusted any file at tmp/liquid_control_ckpt_<sha>.pt (another user could plant one), and every backend
    read whatever the path held by then."""
    import shutil
    import tempfile

    from liquid_control.evaluation import backends
    from liquid_control.evaluation.plan import CheckpointChangedError
    from liquid_control.runtime.backends import checkpoint_sha256

    # a checkpoint replaced after the plan was made: the backends refuse it, naming the file
    swapped = tmp_path / "swapped.pt"
    shutil.copy(tiny_checkpoints[0], swapped)
    (job,) = build_plan([f"tiny={swapped}"], ["in_distribution"], 1).jobs
    shutil.copy(tiny_checkpoints[1], swapped)
    for backend in ("serial", "process"):
        with pytest.raises(CheckpointChangedError, match=r"swapped.pt: SHA-256 .* is not the .* recorded"):
            run_jobs([job], lambda *_: None, backend=backend, progress=False)
    # a Ray worker with a planted file where the old code cached its copy: the plan's bytes are what runs
    monkeypatch.setattr(backends, "_init_worker", lambda: None)  # no per-worker process settings in pytest
    seen = []
    monkeypatch.setattr(
        backends, "run_batch", lambda batch: [seen.append(checkpoint_sha256(j.checkpoint)) or {} for j in batch]
    )
    (job,) = build_plan([f"tiny={tiny_checkpoints[0]}"], ["in_distribution"], 1).jobs
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    planted = tmp_path / f"liquid_control_ckpt_{job.checkpoint_sha}.pt"
    shutil.copy(tiny_checkpoints[1], planted)
    backends._ray_batch([job], open(tiny_checkpoints[0], "rb").read())
    assert seen == [job.checkpoint_sha] and checkpoint_sha256(planted) != job.checkpoint_sha
    with pytest.raises(CheckpointChangedError, match="bytes received from the object store"):
        backends._ray_batch([job], open(tiny_checkpoints[1], "rb").read())


def test_a_shift_of_a_sensor_a_policy_does_not_read_is_warned_of(capsys):
    """Before: `--shift imu_noise=5` for the camera-only rover policies ran the in-distribution episodes under its
    name, bit for bit, and the report showed the row as if it had been tested (found by a probe of the worlds). A
    warning names the policy and its inputs; a camera shift for it, or a shift of every sensor, draws none."""
    from liquid_control.paths import policies_dir

    build_plan([f"cfc={policies_dir() / 'cfc_rover.pt'}", "expert"], ["imu_noise=5", "fog", "sensor_rate=2"], 1)
    err = capsys.readouterr().err
    assert (
        "warning: --shift imu_noise=5: imu_noise changes nothing policy 'cfc' reads, which has no imu input (its "
        "inputs: camera): its row for 'cfc' measures no change there"
    ) in err, err
    assert err.count("warning") == 1, err


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--world", "NoSuchWorld-v0"], "--world 'NoSuchWorld-v0': unknown world 'NoSuchWorld-v0'; known: Liquid"),
        (["--episode-seed-base", "-5"], "--episode-seed-base must be >= 0"),
        (["--episode-seed-base", str(2**32)], "--episode-seed-base must be >= 0 with every seed below 2**32"),
        (["--workers", "0"], "--workers must be >= 1, got 0"),
        (["--workers", "-2"], "--workers must be >= 1, got -2"),
        (["--world", "LiquidBalance-v0", "--experiment", "headline"], "--world LiquidBalance-v0: --experiment trains"),
        (["--shift", "dusk,night"], "shift 'dusk,night': lighting is set twice, by 'dusk' and 'night'"),
        (["--shift", "fog=0.5,fog=0.2"], "fog is set twice"),
        (["--shift", ","], "shift ',': empty item"),
        (
            ["--world", "LiquidBalance-v0", "--shift", "camera_noise=0.3"],
            "shift 'camera_noise=0.3': camera_noise changes nothing in LiquidBalance-v0, which has no camera",
        ),
    ],
)
def test_an_invalid_request_is_refused_before_the_output_folder_exists(tmp_path, capsys, flags, message):
    """Issue 9, item 8: these used to fail with a traceback from the episode, after the folder was created."""
    from liquid_control.cli import main

    out = tmp_path / "report"
    argv = ["eval", "--policy", "expert", "--episodes", "1", "--out", str(out), "--backend", "serial"]
    assert main(argv + flags + ["--no-progress", "--no-example"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_policy_is_evaluated_in_its_own_world_under_shifts_that_act_there(tmp_path, capsys):
    """A --world other than the policy's ran the policy's world under the other's name; a camera shift for a
    world without a camera reported an in-distribution row under the shift's name; a folder given as the
    checkpoint was said not to exist."""
    from liquid_control.cli import main
    from liquid_control.paths import policies_dir

    balancer = str(policies_dir() / "cfc_balancer.pt")
    out = tmp_path / "report"
    argv = ["eval", "--episodes", "1", "--out", str(out), "--no-progress", "--no-example"]
    assert main([*argv, "--policy", balancer, "--world", "LiquidRover-v0"]) == 2
    err = capsys.readouterr().err
    assert "--world LiquidRover-v0: the policies are for LiquidBalance-v0" in err and len(err.splitlines()) == 1
    from liquid_control.evaluation.plan import build_plan

    # gymnasium's module:Id form of the policy's own world is that world (before: "the policies are for ...")
    plan = build_plan([balancer], ["in_distribution"], 1, world="sim_envs:LiquidBalance-v0")
    assert [spec.world for spec in plan.policies] == ["LiquidBalance-v0"]
    for shift in ("camera_noise=0.3", "winter", "imu_noise=0.1,fog=0.2"):
        assert main([*argv, "--policy", balancer, "--shift", shift]) == 2
        assert "changes nothing in LiquidBalance-v0, which has no camera" in capsys.readouterr().err
    plan = build_plan(["expert", balancer], ["imu_noise=0.1", "heavy", "sensor_rate=2"], 1, world="LiquidBalance-v0")
    assert {p.world for p in plan.policies} == {"LiquidBalance-v0"}
    run = tmp_path / "run"
    run.mkdir()
    assert main([*argv, "--policy", str(run)]) == 2
    assert f"checkpoint {str(run)!r} is a folder, not a checkpoint file" in capsys.readouterr().err
    (run / "policy.pt").write_bytes(b"")
    assert main([*argv, "--policy", f"cfc={run}"]) == 2
    assert f"did you mean {run / 'policy.pt'}?" in capsys.readouterr().err
    assert not out.exists()


def test_an_unwritable_output_is_a_clear_error(tmp_path, capsys):
    from liquid_control.cli import main

    a_file = tmp_path / "report.txt"
    a_file.write_text("not a folder")
    argv = ["eval", "--policy", "expert", "--episodes", "1", "--backend", "serial", "--no-progress", "--no-example"]
    for out, message in (
        (a_file, f"--out {a_file}: exists and is not a folder"),
        (a_file / "sub", f"--out {a_file / 'sub'}: {a_file} exists and is not a folder"),
        ("/sys/liquid_control_eval", "--out /sys/liquid_control_eval: cannot write in /sys"),  # even for root
    ):
        assert main(argv + ["--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and "Errno" not in err, err
    assert a_file.read_text() == "not a folder"


def test_a_write_error_during_the_run_is_a_clear_error(tmp_path, capsys, monkeypatch):
    """The folder was writable when checked, then was not (read-only remount, disk full): no raw OSError."""
    from liquid_control.cli import main

    def read_only_now(*args, **kwargs):
        raise OSError(30, "Read-only file system", str(tmp_path / "r" / "results.jsonl"))

    monkeypatch.setattr(evaluate_module, "evaluate", read_only_now)
    argv = ["eval", "--policy", "expert", "--episodes", "1", "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'r' / 'results.jsonl'}: Read-only file system" in err


# ------------------------------------------------------------------------------------------ structure


def evaluation_import_graph() -> dict:
    """Module -> the liquid_control.evaluation modules it imports, at top level or inside functions."""
    import ast

    import liquid_control.evaluation as package

    folder = pathlib.Path(package.__file__).parent
    prefix = "liquid_control.evaluation"
    graph = {}
    for path in sorted(folder.glob("*.py")):
        name = f"{prefix}.{path.stem}"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = node.module if node.level == 0 else f"{prefix}.{node.module}"
                if module == prefix:  # from liquid_control.evaluation import agents
                    edges |= {f"{prefix}.{a.name}" for a in node.names}
                elif module.startswith(prefix + "."):
                    edges.add(module)
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name.startswith(prefix + ".")}
        graph[name] = edges - {name}
    return graph


def test_evaluation_modules_import_without_circles():
    graph = evaluation_import_graph()
    assert "liquid_control.evaluation.agents" in graph["liquid_control.evaluation.plan"]  # the graph is read
    state = {}

    def visit(module, path):
        state[module] = "open"
        for nxt in sorted(graph.get(module, ())):
            assert state.get(nxt) != "open", "import circle: " + " -> ".join(path + [nxt])
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_provenance_of_a_resumed_run_lists_every_part_and_adds_their_wall_times():
    from liquid_control.evaluation import provenance

    first = provenance.collect("liquid-control eval --recipes off", 0.0, 100.0)
    assert first["command"].endswith("--recipes off") and first["wall_time_s"] == 100.0 and first["commit"]
    second = provenance.accumulate(first, provenance.collect("liquid-control eval --resume", 10.0, 50.0))
    third = provenance.accumulate(second, provenance.collect("liquid-control eval --resume", 20.0, 5.0))
    assert third["total_wall_time_s"] == 155.0 and len(third["earlier_parts"]) == 2
    text = "\n".join(provenance.markdown(third))
    assert "Earlier part (continued by `--resume`): `liquid-control eval --recipes off`" in text
    assert "Total wall time of all parts: **155 s" in text
    # before: the CPU line gave the last part's seconds alone, unlabelled beside the total wall time of all parts
    # (a resumed headline run: its CPU time read as the run's), and the earlier parts' CPU time, in provenance.json,
    # was not in report.md
    cpu = [third["cpu_time_s"], *(part["cpu_time_s"] for part in third["earlier_parts"])]
    assert f"- CPU time of this part {cpu[0]:.0f} s" in text
    assert f"wall time 100 s, CPU time {cpu[1]:.0f} s" in text
    assert f"Total wall time of all parts: **155 s (0.04 h)**; CPU time {sum(cpu):.0f} s\n" in text + "\n"
    cut = {"command": "liquid-control eval --resume", "started_utc": "x", "wall_time_s": 60.0, "cut_short": "..."}
    fourth = provenance.markdown(provenance.accumulate(third, provenance.collect("c", 30.0, 1.0), [cut]))
    assert any(line.endswith(" over the 4 of 5 parts that recorded it") for line in fourth)


def test_provenance_states_the_commit_a_run_began_at_and_a_checkout_that_moved_during_it(tmp_path, monkeypatch):
    """Before, the commit was read when the report was written: a run of hours whose checkout moved on claimed
    the end's commit, although its training had imported the start's code."""
    from liquid_control.evaluation import provenance

    now = provenance.code_commit()
    assert provenance.collect("c", 0.0, 1.0, commit_at_start=now)["commit"] == now
    moved = provenance.collect("c", 0.0, 1.0, commit_at_start="0123abc")["commit"]
    assert moved == f"0123abc at the start, {now} at the end (the checkout changed during the run)"
    commits = iter(["started-here", "moved-on"])
    monkeypatch.setattr(provenance, "code_commit", lambda: next(commits))  # evaluate reads it first, at its start
    monkeypatch.setattr(evaluate_module, "run_jobs", lambda *a, **k: None)  # the episodes do not matter here
    plan = build_plan(["expert"], ["in_distribution"], 1)
    evaluate(plan, str(tmp_path), backend="serial", progress=False, example=False, saliency=False)
    with open(tmp_path / "provenance.json") as fh:
        assert json.load(fh)["commit"].startswith("started-here at the start, moved-on at the end")


def test_a_part_killed_before_its_report_is_counted_by_the_resume_that_continues_it(tmp_path, monkeypatch):
    """Before, a sitting cut short (a killed run, a session's end) left no trace in provenance: the report of the
    run that continued it understated the wall time by the whole cut-short part."""
    import signal
    import subprocess
    import time

    from liquid_control.evaluation import provenance

    record = tmp_path / provenance.SITTING_NAME
    child = (
        "import sys, time\n"
        "from liquid_control.evaluation import provenance\n"
        "provenance.HEARTBEAT_S = 0.05\n"
        f"with provenance.Sitting({str(tmp_path)!r}, 'eval --killed', time.time(), 'abc123', resume=False) as s:\n"
        "    s.working()\n"
        "    print('started', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "started\n"
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with open(record) as fh:
        cut = json.load(fh)["current"]
    assert cut["command"] == "eval --killed" and cut["commit"] == "abc123" and 0.3 <= cut["wall_time_s"] < 30
    monkeypatch.setattr(evaluate_module, "run_jobs", lambda *a, **k: None)  # the episodes do not matter here
    plan = build_plan(["expert"], ["in_distribution"], 1)
    kwargs = dict(backend="serial", progress=False, example=False, saliency=False)
    for ending in (EvaluationSetupError("refused"), KeyboardInterrupt()):  # before working(): as found
        with pytest.raises(type(ending)):
            with provenance.Sitting(str(tmp_path), "eval --refused", time.time(), "def", resume=True):
                raise ending
        assert json.loads(record.read_text())["current"] == cut
    assert provenance.Sitting(str(tmp_path), "eval", time.time(), "def", resume=False).cut_short == []  # afresh
    evaluate(plan, str(tmp_path), resume=True, command="eval --resume", **kwargs)
    assert not record.exists()  # counted in provenance.json now
    with open(tmp_path / "provenance.json") as fh:
        prov = json.load(fh)
    (part,) = prov["earlier_parts"]
    assert part["command"] == "eval --killed" and part["wall_time_s"] == cut["wall_time_s"]
    assert prov["total_wall_time_s"] == pytest.approx(prov["wall_time_s"] + cut["wall_time_s"], abs=0.11)
    assert "- Earlier part (cut short before its report" in (tmp_path / "report.md").read_text()
    with provenance.Sitting(str(tmp_path), "eval --failed", time.time(), "def", resume=True) as sitting:
        sitting.working()  # a part that worked, then failed or stopped without a report: kept for the next
    kept = json.loads(record.read_text())
    assert kept["current"]["command"] == "eval --failed" and kept["current"]["wall_time_s"] >= 0
    again = provenance.Sitting(str(tmp_path), "eval", time.time(), "def", resume=True).cut_short
    assert [p["command"] for p in again] == ["eval --failed"]
    with provenance.Sitting(str(tmp_path), "eval --afresh", time.time(), "def", resume=False) as sitting:
        assert json.loads(record.read_text()) == kept  # not yet working: the record as found
        sitting.working()  # a fresh run that works drops the parts of the results it replaces
    assert json.loads(record.read_text())["cut_short"] == []
    kept["current"]["worked"] = False  # a record of the first version (written from a part's start): not counted
    record.write_text(json.dumps(kept))
    assert provenance.Sitting(str(tmp_path), "eval", time.time(), "def", resume=True).cut_short == []
    killed_after_its_report = {k: prov[k] for k in ("command", "started_utc", "wall_time_s")}
    twice = provenance.accumulate(prov, provenance.collect("c", 0.0, 1.0), [killed_after_its_report])
    assert len(twice["earlier_parts"]) == 2  # prov's own part and the killed one, each listed once
    for corrupt in ("{half a record", '{"cut_short": [3], "current": {}}', "[1, 2]"):  # refused by name
        record.write_text(corrupt)
        with pytest.raises(EvaluationSetupError, match=r"provenance.sitting.json: not a sitting record"):
            provenance.Sitting(str(tmp_path), "eval", time.time(), "def", resume=True)


def test_a_wall_clock_step_during_an_experiment_leaves_its_wall_times_true(tmp_path, monkeypatch, tiny_checkpoints):
    """The report's wall time, training's and the sitting record's were time.time() - start: the wall clock stepped
    back an hour during training (NTP or chrony at a network's return, a clock set by hand) made them -3600 s, an
    hour forward made them an hour too long. They are on the monotonic clock now; the start stays the wall time."""
    import time

    from liquid_control.cli import main
    from liquid_control.evaluation import experiment, provenance

    out, sittings, heartbeats, wall = tmp_path / "headline", [], [], time.time

    def trained_while_the_clock_stepped_back(*args, on_work=None, **kwargs):
        on_work()
        monkeypatch.setattr(time, "time", lambda: wall() - 3600.0)
        sittings[0]._write()  # a heartbeat after the step
        heartbeats.append(json.loads((out / provenance.SITTING_NAME).read_text())["current"])
        return [dict(name="cfc", arch="cfc", seed=0, policy=tiny_checkpoints[0], metadata={}, cpu_s=None)]

    monkeypatch.setattr(experiment, "train_all", trained_while_the_clock_stepped_back)
    monkeypatch.setattr(evaluate_module, "run_jobs", lambda *a, **k: None)  # the episodes do not matter here
    monkeypatch.setattr(provenance.Sitting, "working", lambda self: sittings.append(self))  # no heartbeat thread
    argv = ["eval", "--experiment", "headline", "--archs", "cfc", "--seeds", "1", "--episodes", "1", "--recipes"]
    argv += ["off", "--no-expert", "--shift", "in_distribution", "--out", str(out), "--workers", "1", "--no-progress"]
    argv += ["--no-example", "--no-saliency"]  # the report's figures (an example episode) do not matter either
    assert main(argv) == 0
    prov = json.loads((out / "provenance.json").read_text())
    assert 0.0 <= heartbeats[0]["wall_time_s"] <= prov["training_wall_time_s"] <= prov["wall_time_s"] < 600.0


@pytest.fixture(scope="module")
def ten_tiny_checkpoints(tmp_path_factory):
    """Ten untrained tiny CfC policies: two policies' training seeds of the target budget."""
    import torch

    from liquid_control.policy import Policy, save_policy

    folder = tmp_path_factory.mktemp("ckpt10")
    paths = []
    for seed in range(10):
        torch.manual_seed(seed)
        paths.append(str(save_policy(folder / f"tiny_s{seed}.pt", Policy.from_config(TINY_CONFIG), {"seed": seed})))
    return paths


@pytest.mark.parametrize(
    "flags,said,unsaid",
    [
        (  # the probe's: --train-minutes 2 trained on 4 demonstrations, the report said 40
            "--archs cfc,gru --recipes off --seeds 2 --episodes 4 --train-minutes 2 --shift in_distribution "
            "--shift winter --shift sensor_rate=0.5",
            [
                "scaled to 10% (--train-minutes 2) (as each run's config.yaml says): `training.demonstrations=4`",
                "**Reduced budget**: 2 training seeds per architecture (target 5); training below the headline "
                "schedule: `training.demonstrations=4` (target 40), `training.dagger_episodes=2` (target 20), "
                "`training.epochs_first=1` (target 8), `training.epochs_per_round=1` (target 4); 4 episodes per "
                "shift and seed (target 30); 3 of the 8 headline shifts (without `dusk`, `fog`, `sensor_rate=0.25`, "
                "`sensor_rate=2`, `sensor_rate=4`)",
            ],
            ["`training.demonstrations=40`", "Further training overrides"],
        ),
        (  # the target's seeds and episodes, trained on 4 demonstrations by --train-set: reduced, and said where
            "--archs cfc --recipes on --seeds 5 --episodes 30 --train-set training.demonstrations=4 "
            "--train-set training.augmentation=[brightness]",
            [
                "the reduced headline schedule, then `--train-set` (as each run's config.yaml says): "
                "`training.demonstrations=4`, `training.dagger_rounds=1`, `training.dagger_episodes=20`",
                "**Reduced budget**: training below the headline schedule: `training.demonstrations=4` (target 40). "
                "Training: the reduced headline schedule and `--train-set` (see Training).",
                "robustness recipes, as `--train-set` changed them.",
                "- augmentation `brightness`",
                "Further training overrides (`--train-set`, every policy): `training.demonstrations=4`, "
                "`training.augmentation=['brightness']`",
            ],
            ["augmentation `gamma`", "`training.demonstrations=40`"],
        ),
        (  # the target budget, a recipe given to every policy by --train-set: the plain ones saw it too
            "--archs cfc --recipes both --seeds 5 --episodes 30 --train-set training.sensor_rate_range=[0.8,1.25]",
            [
                "the reduced headline schedule (as each run's config.yaml says): `training.demonstrations=40`",
                "policies without the suffix saw the rendered frames with what `--train-set` gave every policy: "
                "timing: sensor rate x [0.8, 1.25]",
                "- timing: sensor rate x [0.8, 1.25]",
            ],
            ["Reduced budget", "then `--train-set`", "at nominal timing", "sensor rate x [0.5, 2]"],
        ),
    ],
)
def test_the_headline_reports_training_schedule_and_reduced_budget_are_what_the_runs_trained(
    flags, said, unsaid, tmp_path, monkeypatch, ten_tiny_checkpoints
):
    """Found by a probe: the Training section printed the unscaled headline schedule (`training.demonstrations=40`)
    beside runs of 4, left --train-set's schedule keys out of its overrides line and described the recipes as if
    --train-set changed none; the Reduced budget note looked only at --seeds, --episodes and --train-minutes, so a
    run of one shift trained on 4 demonstrations by --train-set read as the target budget."""
    from liquid_control.cli import main
    from liquid_control.evaluation import experiment

    out, trained_with = tmp_path / "headline", {}

    def trained(variants, seeds, train_dir, overrides, *args, on_work=None, **kwargs):
        runs = []
        for n, (name, arch) in enumerate(variants):
            trained_with[name] = experiment._wanted_config(arch, overrides[name])  # what its config.yaml holds
            for seed in seeds:
                policy = ten_tiny_checkpoints[5 * n + seed]
                runs.append(dict(name=name, arch=arch, seed=seed, policy=policy, metadata={}))
        return runs

    monkeypatch.setattr(experiment, "train_all", trained)
    monkeypatch.setattr(evaluate_module, "run_jobs", lambda *a, **k: None)  # the episodes do not matter here
    argv = ["eval", "--experiment", "headline", *flags.split(), "--no-expert", "--out", str(out), "--workers", "1"]
    assert main(argv + ["--no-progress", "--no-example", "--no-saliency"]) == 0
    report = " ".join((out / "report.md").read_text().split("\n"))
    training = report[report.index("## Training") :]
    for config in trained_with.values():  # every run's schedule, as it trained
        for key in experiment.HEADLINE_SCHEDULE:  # the keys --schedule and --train-minutes set
            assert f"`{key}={config['training'][key.split('.')[1]]}`" in training.split("Training wall time")[0]
    for text in said:
        assert text in report
    for text in unsaid:
        assert text not in report


def test_an_experiment_that_fails_once_training_began_keeps_its_part_and_a_refused_one_leaves_none(
    tmp_path, monkeypatch
):
    """A run failing hours in (a training run fails: EvaluationSetupError after the others finished) is a part
    that took time; a refusal by the checks before any training is not."""
    from liquid_control.cli import main
    from liquid_control.evaluation import experiment, provenance

    out = tmp_path / "headline"
    argv = ["eval", "--experiment", "headline", "--archs", "cfc", "--seeds", "1", "--episodes", "1"]
    argv += ["--shift", "in_distribution", "--out", str(out), "--workers", "1", "--no-progress"]

    def refused(*args, on_work=None, **kwargs):
        raise EvaluationSetupError("a training folder is refused")

    def failed(*args, on_work=None, **kwargs):
        on_work()
        raise EvaluationSetupError("cfc seed 0: training failed")

    monkeypatch.setattr(experiment, "train_all", refused)
    assert main(argv) == 2 and not (out / provenance.SITTING_NAME).exists()
    monkeypatch.setattr(experiment, "train_all", failed)
    assert main(argv) == 2
    assert json.loads((out / provenance.SITTING_NAME).read_text())["current"]["wall_time_s"] >= 0  # kept


def test_provenance_counts_the_cpu_time_of_finished_worker_processes():
    import subprocess

    from liquid_control.evaluation import provenance

    before = provenance.cpu_seconds()
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5:\n    pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    prov = provenance.collect("liquid-control eval", 0.0, 1.0)
    assert prov["cpu_time_s"] >= before + 0.45  # the finished child's CPU seconds are in
    assert "- CPU time " in "\n".join(provenance.markdown(prov))


def test_a_resume_in_another_world_does_not_report_the_other_worlds_episodes(tmp_path):
    """Before: `--resume --world LiquidBalance-v0 --policy expert` in a folder of a rover evaluation matched the
    rover's expert records (same name, seed, shift, episode seed, no checkpoint) and reported them as the
    balancer's, world column LiquidRover-v0."""
    from liquid_control.evaluation.results import ResultLog

    rover = build_plan(["expert"], ["in_distribution"], 1).jobs[0]
    balance = build_plan(["expert"], ["in_distribution"], 1, world="LiquidBalance-v0").jobs[0]
    assert rover.key == balance.key and rover.world != balance.world
    log = ResultLog(str(tmp_path), resume=False)
    log.append(finished_record(rover))
    log = ResultLog(str(tmp_path), resume=True)
    assert log.pending([rover]) == [] and len(log.records_for([rover])) == 1
    assert log.pending([balance]) == [balance] and log.records_for([balance]) == []


def test_a_resume_runs_the_experts_episodes_again_under_other_world_settings(tmp_path):
    """An audit of the evaluation: the plan gives the expert the trained policy's world settings (its update sensors
    and inputs), but a resume matched expert records on name, seeds and world only, so `--policy expert` then
    `--resume` with a policy updating on the IMU kept the expert's episodes of the default settings (1110 against
    965 steps on LiquidBalanceNav-v0), where plan.json said they ran on the IMU. A record of before the settings
    were stamped is matched by its checkpoint; the expert's, which has none, runs again."""
    from liquid_control.evaluation.results import ResultLog

    alone = build_plan(["expert"], ["in_distribution"], 1, world="LiquidBalanceNav-v0").jobs[0]
    on_imu = dataclasses.replace(alone, env_kwargs={"update_on": ["imu"]})
    log = ResultLog(str(tmp_path), resume=False)
    log.append(finished_record(alone))
    log = ResultLog(str(tmp_path), resume=True)
    assert log.pending([alone]) == [] and log.pending([on_imu]) == [on_imu] and log.records_for([on_imu]) == []

    older = tmp_path / "older"
    trained = dataclasses.replace(on_imu, policy="p", checkpoint="p.pt", checkpoint_sha="ab" * 32)
    log = ResultLog(str(older), resume=False)
    unstamped = [finished_record(job) for job in (alone, trained)]
    for record in unstamped:
        del record["world_settings"]
    log.append(*unstamped)
    log = ResultLog(str(older), resume=True)
    assert log.pending([alone, trained]) == [alone]


@pytest.mark.parametrize("name", ["a/b", "a,b", "a b", "a|b", "-a", ".hidden"])
def test_a_policy_name_that_cannot_name_a_file_or_a_pair_is_refused_before_any_work(name, tiny_checkpoints, tmp_path):
    """Before: `--policy a/b=CKPT` ran every episode, then stopped at `neuron_traces_a/b.png` with no report.md;
    a comma made the name impossible to give to --paired, a bar broke the report's tables."""
    with pytest.raises(EvaluationSetupError, match=f"policy name {name!r}: use letters, digits"):
        build_plan([f"{name}={tiny_checkpoints[0]}"], ["in_distribution"], 1)
    import torch

    from liquid_control.policy import Policy, save_policy

    torch.manual_seed(0)
    named = save_policy(tmp_path / "named.pt", Policy.from_config({**TINY_CONFIG, "name": name}), {"seed": 0})
    with pytest.raises(EvaluationSetupError, match="the config name in .*named.pt; give one with NAME=CHECKPOINT"):
        build_plan([str(named)], ["in_distribution"], 1)
    assert build_plan([f"ok_name-2.b+c={named}"], ["in_distribution"], 1).policies[0].name == "ok_name-2.b+c"


def test_a_policy_trained_under_a_shift_is_told_in_distribution_is_not_its_training_world(
    tiny_checkpoints, tmp_path, capsys
):
    """Before: a policy trained with training.shift (e.g. winter) was evaluated under `in_distribution`, which the
    help and the report call the training distribution, without a word: for it summer is the shift."""
    import torch

    from liquid_control.policy import Policy, save_policy

    build_plan([tiny_checkpoints[0]], ["in_distribution"], 1)
    assert "training.shift" not in capsys.readouterr().err  # trained in the nominal world: nothing to say
    torch.manual_seed(0)
    config = {**TINY_CONFIG, "training": {"shift": "winter"}}
    winter = save_policy(tmp_path / "winter.pt", Policy.from_config(config), {"seed": 0})
    build_plan([f"w={winter}"], ["in_distribution"], 1)
    err = capsys.readouterr().err
    assert f"warning: policy 'w' was trained with training.shift set ({winter} under 'winter')" in err
    assert "--shift winter evaluates it in its own world" in err
    build_plan([f"w={winter}"], ["in_distribution", "winter"], 1)
    assert "; its own world is the 'winter' row" in capsys.readouterr().err
    build_plan([f"w={winter}"], ["winter", "dusk"], 1)  # what the warning advises: no in_distribution row to misread
    assert "training.shift" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--archs", ","], "--archs ',': no architecture given; choose from cfc"),
        (["--archs", "cfc,cfc"], "--archs 'cfc,cfc': cfc given twice"),
        (["--train-minutes", "nan"], "--train-minutes must be a number > 0, got nan"),
        (["--train-minutes", "0"], "liquid-control eval: error: --train-minutes must be a number > 0, got 0.0"),
        (["--seeds", "81"], "--seeds must be <= 80 (training seeds 0..79), got 81"),
        (["--policy", "expert"], "--policy expert: --experiment evaluates the policies it trains; leave --policy out"),
        (["--train-set", "training.demonstrations=1001"], "training.demonstrations: must be <= 1000, got 1001"),
    ],
)
def test_a_bad_experiment_request_is_refused_before_any_training(tmp_path, capsys, flags, message):
    """Before: `--archs ,` trained nothing, then an IndexError traceback; `--archs cfc,cfc` trained cfc into the
    same folders twice; `--train-minutes nan` ran the full schedule; --policy was silently ignored; the
    --train-minutes error was prefixed `--train-set for cfc`."""
    from liquid_control.cli import main

    out = tmp_path / "report"
    argv = ["eval", "--experiment", "headline", "--out", str(out), "--no-progress", "--workers", "1"]
    small = ["--recipes", "off", "--archs", "cfc", "--seeds", "1", "--episodes", "1", "--train-minutes", "0.1"]
    assert main([*argv, *small, *flags]) == 2  # (the flags come last and win: a regression trains little)
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not out.exists()


def test_one_checkpoint_given_twice_is_not_two_training_seeds(tmp_path, monkeypatch):
    """Before: `--policy a=X,X` evaluated one file as two training seeds (and their spread as seed variation)."""
    from liquid_control.paths import policies_dir

    ckpt = str(policies_dir() / "cfc_rover.pt")
    with pytest.raises(EvaluationSetupError, match="is given twice"):
        build_plan([f"a={ckpt},{ckpt}"], ["in_distribution"], 1)
    link = tmp_path / "same.pt"
    link.symlink_to(ckpt)
    with pytest.raises(EvaluationSetupError, match="is given twice"):
        build_plan([f"a={ckpt},{link}"], ["in_distribution"], 1)
    # the docs' name of a shipped file, resolved outside the checkout, is that file too (was: "both record seed 0")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EvaluationSetupError, match="policies/cfc_rover.pt is given twice"):
        build_plan([f"a={ckpt},policies/cfc_rover.pt"], ["in_distribution"], 1)


def test_one_checkpoint_under_two_policy_names_is_refused(tmp_path, capsys):
    """Before: `--policy a=X --policy b=X` (or b a copy of X) ran X twice and reported two policies with the same
    numbers, exit status 0: a table row and a comparison that are one checkpoint against itself."""
    import shutil

    from liquid_control.cli import main
    from liquid_control.paths import policies_dir

    ckpt = str(policies_dir() / "cfc_rover.pt")
    copy = str(tmp_path / "renamed.pt")
    shutil.copyfile(ckpt, copy)
    out = tmp_path / "report"
    for second in (ckpt, copy):
        argv = ["eval", "--policy", f"a={ckpt}", "--policy", f"b={second}", "--episodes", "1", "--out", str(out)]
        assert main([*argv, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"{second} has the same contents as {ckpt}" in err and "policies 'a' and 'b'" in err, err
        assert "Traceback" not in err and not out.exists()
    other = str(policies_dir() / "lstm_rover.pt")  # two different checkpoints are two policies
    assert [p.name for p in build_plan([f"a={ckpt}", f"b={other}"], ["in_distribution"], 1).policies] == ["a", "b"]


def test_experiment_options_without_experiment_are_refused(tmp_path, capsys):
    """Before: `eval --policy expert --seeds 2 --archs cfc` ignored both options and evaluated the expert."""
    from liquid_control.cli import main

    out = tmp_path / "report"
    argv = ["eval", "--policy", "expert", "--episodes", "1", "--out", str(out), "--no-progress"]
    assert main([*argv, "--seeds", "2", "--archs", "cfc"]) == 2
    err = capsys.readouterr().err
    assert "--seeds, --archs: only for --experiment" in err and "Traceback" not in err
    assert not out.exists()


def test_ctrl_c_during_an_evaluation_says_how_to_continue(tmp_path, capsys, monkeypatch):
    """Before: a KeyboardInterrupt traceback (from the process pool's wait)."""
    from liquid_control.cli import main

    out = tmp_path / "report"

    def interrupted(plan, out_dir, **kwargs):  # after its first batch: the log holds it
        open(os.path.join(out_dir, LOG_NAME), "w").close()
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_module, "evaluate", interrupted)
    assert main(["eval", "--policy", "expert", "--episodes", "1", "--out", str(out), "--no-progress"]) == 130
    assert capsys.readouterr().err.strip() == (
        f"liquid-control eval: interrupted: the finished episodes are in {out / LOG_NAME}; add --resume to continue"
    )


def test_sigterm_during_an_evaluation_stops_it_as_ctrl_c_does(tmp_path, capsys, monkeypatch):
    """Before: `kill` (SIGTERM) ended eval at once with exit 143 and not a line said what was kept (train and
    replay said it); a report or log write it cut left its temporary file behind."""
    import signal
    import time

    from liquid_control.cli import main

    out = tmp_path / "report"

    def terminated(plan, out_dir, **kwargs):  # after its first batch: the log holds it
        open(os.path.join(out_dir, LOG_NAME), "w").close()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(2)  # the handler raises here
        raise AssertionError("SIGTERM did not stop the evaluation")

    reached_default = []

    def test_handler(*_):  # the test runner survives a SIGTERM that eval does not catch
        reached_default.append(True)

    previous = signal.signal(signal.SIGTERM, test_handler)
    monkeypatch.setattr(evaluate_module, "evaluate", terminated)
    try:
        status = main(["eval", "--policy", "expert", "--episodes", "1", "--out", str(out), "--no-progress"])
    except AssertionError:
        status = None
    finally:
        handler = signal.signal(signal.SIGTERM, previous)
    assert not reached_default, "SIGTERM reached the handler eval found: it would have killed the evaluation silently"
    assert handler is test_handler  # eval restored the handler it found
    assert status == 143
    assert capsys.readouterr().err.strip() == (
        f"liquid-control eval: terminated: the finished episodes are in {out / LOG_NAME}; add --resume to continue"
    )


def test_ctrl_c_inside_a_ctypes_call_of_a_serial_episode_is_the_interrupt(tmp_path, capsys, monkeypatch):
    """Before: with --backend serial the episodes run in this process, and Ctrl-C landing while ctypes converted a
    call's arguments in Python code (PyOpenGL's converters in MuJoCo's EGL render, every camera frame) ended the
    evaluation with a ``ctypes.ArgumentError: argument 1: KeyboardInterrupt:`` traceback, exit 1 (as train did
    before fc96baa9)."""
    import ctypes
    import signal
    import time

    from liquid_control.cli import main
    from liquid_control.evaluation import backends

    class Signalled:  # an argument converter in Python, as PyOpenGL's: the signal's handler raises inside it
        @classmethod
        def from_param(cls, value):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises in this frame
            raise AssertionError("SIGINT did not stop the evaluation")

    render = ctypes.CDLL(None).labs
    render.argtypes = [Signalled]

    def rendering(batch):
        render(1)
        raise AssertionError("not reached")

    monkeypatch.setattr(backends, "run_verified_batch", rendering)
    out = tmp_path / "report"
    argv = ["eval", "--policy", "expert", "--episodes", "1", "--backend", "serial", "--out", str(out), "--no-progress"]
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job's SIGINT is ignored
    try:
        code = main(argv)
    finally:
        signal.signal(signal.SIGINT, before)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "ArgumentError" not in err, err
    assert code == 130
    assert err.strip().splitlines()[-1].startswith("liquid-control eval: interrupted: "), err


def test_options_of_another_mode_and_a_folder_of_another_report_are_refused(tmp_path, capsys):
    """Before: `eval --bag ... --shift winter` (or --episodes, --paired, --experiment) ran the offline evaluation and
    ignored them; `eval --bag` into a simulated evaluation's folder replaced its report.md and left its episodes
    beside the offline results (and a simulated evaluation replaced an offline report.md the same way)."""
    from liquid_control.cli import main
    from liquid_control.evaluation.results import LOG_NAME, OFFLINE_NAME
    from liquid_control.paths import policies_dir

    shipped = str(policies_dir() / "cfc_ncp_rover.pt")
    out = tmp_path / "report"
    offline = ["eval", "--bag", str(tmp_path / "no_bag"), "--policy", shipped, "--out", str(out), "--no-progress"]
    assert main([*offline, "--shift", "winter", "--episodes", "50"]) == 2
    assert "--shift, --episodes: only for simulated episodes; --bag evaluates recorded bags" in capsys.readouterr().err
    simulated = ["eval", "--policy", "expert", "--episodes", "1", "--out", str(out), "--no-progress"]
    assert main([*simulated, "--node-params", "robot.yaml", "--allow-truncated"]) == 2
    assert "--node-params, --allow-truncated: only for --bag (recorded bags)" in capsys.readouterr().err
    assert not out.exists()
    out.mkdir()
    for name in (LOG_NAME, "report.md"):
        (out / name).write_text("a simulated evaluation's\n")
    assert main(offline) == 2
    assert f"--out {out}: already holds a report ({LOG_NAME}, report.md)" in capsys.readouterr().err
    (out / LOG_NAME).unlink()
    (out / OFFLINE_NAME).write_text("{}")
    assert main(simulated) == 2
    assert f"--out {out}: holds an offline (--bag) report" in capsys.readouterr().err
    assert (out / "report.md").read_text() == "a simulated evaluation's\n" and not (out / LOG_NAME).exists()


def test_a_training_run_folder_as_out_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    """Before: `eval --out runs/x`, runs/x a `train --out` folder, wrote report.md, results.*, plan.json and the
    episodes log among the run's policy.pt, config.yaml and checkpoint.pt (rc 0). Every mode is refused, naming the
    folder and a folder of its own; an earlier evaluation's folder still resumes."""
    from liquid_control.cli import main
    from liquid_control.evaluation import experiment
    from liquid_control.paths import policies_dir
    from liquid_control.training.run_folder import training_run_entries

    shipped = policies_dir() / "cfc_balancer.pt"
    run = tmp_path / "run"
    run.mkdir()
    (run / "policy.pt").write_bytes(shipped.read_bytes())
    (run / "config.yaml").write_text("name: mine\n")
    (run / "command.txt").write_text("liquid-control train --config mine.yaml --out run\n")
    monkeypatch.setattr(experiment, "train_all", lambda *a, **k: pytest.fail("trained"))
    simulated = ["eval", "--policy", "expert", "--episodes", "1", "--backend", "serial", "--no-progress"]
    offline = ["eval", "--bag", str(tmp_path / "no_bag"), "--policy", str(shipped), "--no-progress"]
    headline = ["eval", "--experiment", "headline", "--archs", "cfc", "--seeds", "1", "--no-progress"]
    for argv in (simulated, offline, headline):
        assert main([*argv, "--out", str(run)]) == 2, argv
        err = capsys.readouterr().err
        assert f"--out {run}: is a training run's folder (it holds policy.pt, config.yaml, command.txt)" in err, err
        assert f"--out {run / 'eval'}" in err and "Traceback" not in err, err
        assert sorted(p.name for p in run.iterdir()) == ["command.txt", "config.yaml", "policy.pt"], argv
    (run / "policy.pt").unlink()  # a run stopped before its first checkpoint: what train wrote at its start
    assert main([*simulated, "--out", str(run)]) == 2
    assert f"--out {run}: is a training run's folder (it holds config.yaml, command.txt)" in capsys.readouterr().err
    (run / "command.txt").unlink()  # a project's own config.yaml is no run
    assert training_run_entries(run) == []
    (run / "data.yaml").write_text("train: images/\n")  # another tool's dataset file beside it: no run either
    assert training_run_entries(run) == []
    (run / "started_from.json").write_text("{}")  # a warm start from Python (no command.txt), stopped at once
    assert training_run_entries(run) == ["config.yaml", "started_from.json"]
    (run / "started_from.json").unlink()
    (run / "data.yaml").unlink()
    (run / "config.yaml").unlink()
    (run / "data").mkdir()
    (run / "data" / "round_0.npz").write_bytes(b"collected")  # a run stopped while collecting: no policy yet
    assert main([*simulated, "--out", str(run)]) == 2
    assert f"--out {run}: is a training run's folder (it holds data/)" in capsys.readouterr().err
    report = tmp_path / "report"  # an evaluation's own folder: --resume continues it as before
    assert main([*simulated, "--no-example", "--no-saliency", "--out", str(report)]) == 0
    assert main([*simulated, "--no-example", "--no-saliency", "--out", str(report), "--resume"]) == 0
    assert "1 already in" in capsys.readouterr().err


def test_two_checkpoints_of_one_training_seed_are_refused_naming_both(tmp_path):
    """Before: `--policy a=X,Y` with X and Y both trained with seed 0 numbered them 0 and 1 silently, so the
    comparisons paired Y with other policies' seed 1 (trained on other demonstrations)."""
    import torch

    from liquid_control.evaluation.plan import resolve_policy
    from liquid_control.policy import Policy, save_policy

    paths = []
    for run in ("a", "b"):
        torch.manual_seed(len(paths))
        paths.append(str(save_policy(tmp_path / f"{run}.pt", Policy.from_config(TINY_CONFIG), {"seed": 0})))
    with pytest.raises(EvaluationSetupError, match=r"a.pt and .*b.pt both record training seed 0.*NAME=CHECKPOINT"):
        resolve_policy("tiny", paths, "TinyReach-v0")
    save_policy(tmp_path / "b.pt", Policy.from_config(TINY_CONFIG), {"seed": 1})
    assert resolve_policy("tiny", paths, "TinyReach-v0").training_seeds == (0, 1)
    save_policy(tmp_path / "a.pt", Policy.from_config(TINY_CONFIG), {"seed": 3})
    save_policy(tmp_path / "b.pt", Policy.from_config(TINY_CONFIG), {})  # no seed recorded: the first unused
    assert resolve_policy("tiny", paths, "TinyReach-v0").training_seeds == (3, 0)  # (3 kept; was renumbered 0)


@pytest.mark.parametrize(
    "setting,value,shown",
    [
        ("reorder_lag_s", 0.05, "observation.reorder_lag_s (0.0 vs 0.05)"),
        ("update_on", ["camera", "imu"], "observation.update_on (['camera'] vs ['camera', 'imu'])"),
    ],
)
def test_checkpoints_of_one_policy_in_different_world_settings_are_refused_naming_both(tmp_path, setting, value, shown):
    """Before: all of one policy's checkpoints ran in the first one's world (its env_kwargs), so a checkpoint
    trained with another reordering lag or update sensors (same parameter count) was evaluated in the wrong world."""
    import copy

    import torch

    from liquid_control.evaluation.plan import resolve_policy
    from liquid_control.policy import Policy, save_policy

    other = copy.deepcopy(TINY_CONFIG)
    other["observation"][setting] = value
    torch.manual_seed(0)
    first = str(save_policy(tmp_path / "first.pt", Policy.from_config(TINY_CONFIG), {"seed": 0}))
    second = str(save_policy(tmp_path / "second.pt", Policy.from_config(other), {"seed": 1}))
    with pytest.raises(EvaluationSetupError) as info:
        resolve_policy("tiny", [first, second], "LiquidRover-v0")
    assert f"{first} and {second} differ in {shown}" in str(info.value)
    spec = resolve_policy("tiny", [second], "LiquidRover-v0")  # alone, each runs in its own world
    assert spec.env_kwargs[setting] == value


def finished_record(job, **changes):
    """A record as a finished episode leaves it in the results log (``EpisodeTally.record`` + ``finish_record``)."""
    from liquid_control.evaluation.results import finish_record

    record = {
        "policy": job.policy, "training_seed": job.training_seed, "shift": job.shift, "episode_seed": job.episode_seed,
        "world": job.world, "checkpoint": job.checkpoint or "", "success": True, "collision": False,
        "outcome": "success", "return": 9.5, "steps": 2000, "sim_time_s": 10.0, "mean_dt_s": 0.005,
        "smoothness": 0.5, "clipped_actions": 0, "wall_time_s": 2.5,
    }  # fmt: skip
    return {**finish_record(record, job), **changes}


def test_resume_keeps_a_complete_last_record_without_its_newline_and_drops_only_a_cut_one(tmp_path):
    """Before: a last record complete but for its newline was read as done, then cut from the file (the log had one
    record fewer than results.json, and the next resume ran that episode again)."""
    from liquid_control.evaluation.results import ResultLog

    jobs = build_plan(["expert"], ["in_distribution"], 3).jobs
    log = ResultLog(str(tmp_path), resume=False)
    for job in jobs[:2]:
        log.append(finished_record(job))
    path = tmp_path / LOG_NAME
    two = path.read_bytes()
    path.write_bytes(two[:-1])  # e.g. copied by a tool that drops the final newline
    log = ResultLog(str(tmp_path), resume=True)
    assert log.pending(jobs) == jobs[2:] and len(log.records_for(jobs)) == 2
    assert path.read_bytes() == two  # kept, newline added: the next append starts a line of its own
    log.append(finished_record(jobs[2]))
    three = path.read_bytes()
    assert read_log(str(path)) == [finished_record(job) for job in jobs] and three.count(b"\n") == 3
    path.write_bytes(three + b'{"checkpoint": "", "checkpoint_sha": "", "clipp')  # a kill mid-write
    assert len(read_log(str(path))) == 3
    log = ResultLog(str(tmp_path), resume=True)
    assert log.pending(jobs) == [] and path.read_bytes() == three


@pytest.mark.parametrize(
    "line,problem",
    [
        (b'{"a": 1}', "not an episode record: no 'policy', 'training_seed'"),
        (b"[1, 2]", "a list, not an episode record"),
        (b"\xff\xfe\x00\x01binary", "not UTF-8 text"),
        (b'{"policy": "expert", "trai', "not a JSON record"),  # cut, but not the last line
        ("training_seed", """'training_seed' is "x" (a string), not an integer"""),
        ("success", "not an episode record: no 'success'"),
        ("return", "'return' is NaN (a number), not a finite number"),
        ("outcome", """'outcome' is "won", not one of success, collision, timeout"""),
        ("batch", "'batch' is [1], not a list of episode seeds with the record's own"),
    ],
)
def test_resume_refuses_a_foreign_or_corrupt_log_line_naming_the_file_and_line(tmp_path, capsys, line, problem):
    """Before: `--resume` stopped with a bare KeyError, TypeError, ValueError or UnicodeDecodeError naming no file;
    a record lacking `success` was taken as done, then the report stopped with a KeyError and no report.md."""
    from liquid_control.cli import main
    from liquid_control.evaluation.results import ResultLog

    out = tmp_path / "report"
    jobs = build_plan(["expert"], ["in_distribution"], 2).jobs
    if isinstance(line, str):  # a record of this evaluation with one field changed or removed
        bad = finished_record(
            jobs[1], training_seed="x", success=None, outcome="won", batch=[1], **{"return": math.nan}
        )
        bad = {**finished_record(jobs[1]), line: bad[line]}
        if line == "success":
            del bad["success"]
        line = json.dumps(bad, sort_keys=True).encode()
    path = out / LOG_NAME
    out.mkdir()
    content = (json.dumps(finished_record(jobs[0]), sort_keys=True) + "\n").encode() + line + b"\n"
    path.write_bytes(content)
    with pytest.raises(EvaluationSetupError) as info:
        ResultLog(str(out), resume=True)
    assert str(info.value).startswith(f"{path}: line 2: ") and problem in str(info.value)
    assert str(info.value).endswith("move the file away or fix the line")
    argv = ["eval", "--policy", "expert", "--episodes", "2", "--out", str(out), "--no-progress", "--resume"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{path}: line 2: " in err and problem in err and "Traceback" not in err
    assert path.read_bytes() == content and not (out / "report.md").exists()  # nothing lost, nothing half-made


def test_resume_refuses_a_foreign_last_line_and_drops_only_a_cut_one(tmp_path):
    """A complete JSON last line that is no record (no newline after it) is another file's, not a kill's cut."""
    from liquid_control.evaluation.results import ResultLog

    jobs = build_plan(["expert"], ["in_distribution"], 1).jobs
    path = tmp_path / LOG_NAME
    first = (json.dumps(finished_record(jobs[0]), sort_keys=True) + "\n").encode()
    path.write_bytes(first + b'{"a": 1}')
    with pytest.raises(EvaluationSetupError, match=r"line 2: not an episode record: no 'policy'"):
        ResultLog(str(tmp_path), resume=True)
    assert path.read_bytes() == first + b'{"a": 1}'
    path.write_bytes(first + b"\xff\xfe")  # a cut in the middle of a character
    assert ResultLog(str(tmp_path), resume=True).pending(jobs) == [] and path.read_bytes() == first


def test_a_failed_report_write_keeps_the_previous_file_and_names_it(tmp_path, capsys, monkeypatch):
    """Before: the figures and report.md were rewritten in place, so a write that failed (disk full, `ulimit -f`)
    left a truncated PNG or report.md where a good one was, and the error read 'cannot write: File too large'."""
    import resource

    from liquid_control.cli import main
    from liquid_control.evaluation import report

    out = tmp_path / "r"
    # one episode in this process (a pool's start is most of the time; the report is written here either way), the
    # rover's expert: a balancer's episode runs 10 s of simulation, the rover's ends at the target
    argv = ["eval", "--policy", "expert", "--episodes", "1", "--out", str(out), "--no-progress", "--no-example",
            "--backend", "serial"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(before["success_by_shift.png"]) > 2000 and len(before["report.md"]) > 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    for failing in ("success_by_shift.png", "report.md"):
        if failing == "report.md":  # the figure is kept as it is, so that report.md is the file that fails
            monkeypatch.setattr(report, "plot_success_by_shift", lambda cells, panels, shifts, path: path)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))  # a file may grow to 2000 bytes, no further
        try:
            code = main([*argv, "--resume"])
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        err = capsys.readouterr().err
        assert code == 1 and f"cannot write {out / failing}: File too large" in err, err
        after = {p.name: p.read_bytes() for p in out.iterdir()}
        assert after[failing] == before[failing]  # the previous one, whole
        assert set(before) <= set(after) and not [name for name in after if name.startswith(".")]  # no temp file


def test_a_full_disk_while_logging_an_episode_names_the_log_and_the_resume_drops_the_cut_line(
    tmp_path, capsys, monkeypatch
):
    """Before: an append to episodes.jsonl that failed (disk full, `ulimit -f`) read 'cannot write in <out>: File
    too large', naming neither the log nor what was kept, nor that --resume continues."""
    import resource

    from liquid_control.cli import main
    from liquid_control.evaluation import results

    out = tmp_path / "r"
    log = out / LOG_NAME
    # the rover's expert (the default world): its episodes end at the target, a balancer's run 10 s (2000 steps)
    argv = ["eval", "--policy", "expert", "--episodes", "3", "--lanes", "1",
            "--out", str(out), "--no-progress", "--no-example", "--backend", "serial"]  # fmt: skip
    original, soft, hard = results.ResultLog.append, *resource.getrlimit(resource.RLIMIT_FSIZE)

    def fill_the_disk_at_the_second(self, *records):  # --lanes 1: a batch is one record
        if self.records:  # the second episode's line is cut 50 bytes in
            resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(self.path) + 50, hard))
        original(self, *records)

    monkeypatch.setattr(results.ResultLog, "append", fill_the_disk_at_the_second)
    try:
        assert main(argv) == 1
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    err = capsys.readouterr().err
    assert (
        f"liquid-control eval: error: cannot write {log}: File too large; the finished episodes are in {log}; "
        "make room and add --resume to continue"
    ) in err, err
    assert len(log.read_bytes().split(b"\n")) == 2  # one line, then the cut one
    monkeypatch.setattr(results.ResultLog, "append", original)
    assert main([*argv, "--resume"]) == 0
    assert f"dropping a half-written last line of {log}" in capsys.readouterr().err
    seeds = [r["episode_seed"] for r in read_log(str(log))]
    assert len(seeds) == 3 and len(set(seeds)) == 3  # the first kept, the cut one run again, once


def batches_run(monkeypatch) -> list[list[int]]:
    """The episode seeds of each batch the serial backend runs from now on, in the order they run."""
    from liquid_control.evaluation import backends

    ran, real = [], backends.run_verified_batch
    monkeypatch.setattr(
        backends, "run_verified_batch", lambda batch: ran.append([j.episode_seed for j in batch]) or real(batch)
    )
    return ran


def test_a_batch_whose_log_write_was_cut_short_runs_again_whole_on_resume(tmp_path, monkeypatch):
    """Before: a write cut in the middle of a batch's records (full disk, `ulimit -f`, kill -9) kept the first ones,
    and --resume ran the rest of that batch with the next one (--lanes 3: seeds 1-3, then 4, where one run has 0-2 and
    3-4): a trained policy's episode depends on its batch (float32 sums), so records differed from the uninterrupted
    run's (the probe: steps 265 against 281). Now a batch only partly in the log runs again whole, its new records
    counting (the log is append-only: an episode's latest record is the one that counts)."""
    import resource

    from liquid_control.evaluation import results

    plan = build_plan(["expert"], ["in_distribution"], 5)
    out, seeds = str(tmp_path / "run"), [j.episode_seed for j in plan.jobs]
    quiet = {"backend": "serial", "progress": False, "example": False, "saliency": False, "lanes": 3}
    original, (soft, hard) = results.ResultLog.append, resource.getrlimit(resource.RLIMIT_FSIZE)

    def cut_in_the_second_record(self, *records):
        if not self.records:  # the first batch's write stops 50 bytes into its second record
            first = len(json.dumps(records[0], sort_keys=True)) + 1  # the log is not there yet
            resource.setrlimit(resource.RLIMIT_FSIZE, (first + 50, hard))
        original(self, *records)

    monkeypatch.setattr(results.ResultLog, "append", cut_in_the_second_record)
    try:
        with pytest.raises(OSError, match="File too large") as cut:
            evaluate(plan, out, **quiet)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert cut.value.filename == os.path.join(out, LOG_NAME)
    monkeypatch.setattr(results.ResultLog, "append", original)
    assert [r["episode_seed"] for r in read_log(os.path.join(out, LOG_NAME))] == seeds[:1]  # and a cut line
    ran = batches_run(monkeypatch)
    result = evaluate(plan, out, resume=True, **quiet)
    assert ran == [seeds[:3], seeds[3:]]  # the batches of one run
    logged = read_log(os.path.join(out, LOG_NAME))
    assert [r["episode_seed"] for r in logged] == seeds[:1] + seeds  # appended: the first seed's rerun counts
    assert (
        result["records"] == logged[1:] and [r["batch"] for r in result["records"]] == [seeds[:3]] * 3 + [seeds[3:]] * 2
    )
    ran.clear()
    evaluate(plan, out, resume=True, **quiet)
    assert ran == []  # every batch whole now


def test_a_ctrl_c_while_a_batch_is_logged_comes_once_the_whole_batch_is_written(tmp_path, monkeypatch):
    """Before: each record of a batch was its own write, and a Ctrl-C between them kept part of the batch (the probe:
    4 lines with --lanes 3), which --resume ran with other episodes in another batch. Now the batch is one write and
    an interrupt during it comes after it (held off: without the hold this test keeps one line)."""
    import signal

    plan = build_plan(["expert"], ["in_distribution"], 5)
    out, seeds = str(tmp_path / "run"), [j.episode_seed for j in plan.jobs]
    log, real_write = os.path.join(out, LOG_NAME), os.write

    def ctrl_c_in_the_middle_of_the_write(fd, data):
        # the first write to the log takes its first line only (a write cut short, as on a busy disk) and a Ctrl-C
        # comes then: held off, the rest of the batch is still written before it is raised
        if os.path.exists(log) and os.path.samestat(os.fstat(fd), os.stat(log)) and not os.path.getsize(log):
            first = bytes(data).index(b"\n") + 1
            written = real_write(fd, bytes(data)[:first])
            os.kill(os.getpid(), signal.SIGINT)
            return written
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", ctrl_c_in_the_middle_of_the_write)
    quiet = {"backend": "serial", "progress": False, "example": False, "saliency": False, "lanes": 3}
    with pytest.raises(KeyboardInterrupt):
        evaluate(plan, out, **quiet)
    monkeypatch.setattr(os, "write", real_write)
    assert [r["episode_seed"] for r in read_log(log)] == seeds[:3]
    ran = batches_run(monkeypatch)
    evaluate(plan, out, resume=True, **quiet)
    assert ran == [seeds[3:]]


@pytest.mark.parametrize("mode", ["plan", "experiment"])
def test_a_completely_full_disk_leaves_no_empty_out_folder_the_command_made(mode, tmp_path, capsys):
    """Before: eval on a full disk (`ulimit -f 0` here) failed at its first file (plan.json, or the experiment's
    provenance.sitting.json) and left the --out folder it had made, and its parents, empty (train removes its
    own). Now a failed eval removes the folders it made while they are empty; a folder that was there stays."""
    import resource

    from liquid_control.cli import main

    what = ["--experiment", "headline", "--seeds", "1"] if mode == "experiment" else ["--policy", "expert"]
    first = "provenance.sitting.json" if mode == "experiment" else "plan.json"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    (tmp_path / "there").mkdir()
    for out in (tmp_path / "new" / "r", tmp_path / "there"):
        argv = ["eval", *what, "--episodes", "1", "--out", str(out), "--no-progress", "--no-example"]
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))  # every write fails
        try:
            code = main(argv)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        err = capsys.readouterr().err
        assert code == 1 and f"cannot write {out / first}: File too large" in err, err
        assert "--resume" not in err  # nothing was kept to resume
        assert [p.name for p in tmp_path.iterdir()] == ["there"]  # new/r made and left empty: removed, new too
    assert list((tmp_path / "there").iterdir()) == []  # there before: kept


def test_offline_policy_names_refuse_what_breaks_the_report_and_name_a_run_folder_with_spaces(
    tmp_path, capsys, monkeypatch
):
    """Before: `eval --bag B --policy ../../escaped=P` evaluated and wrote plots/../../escaped__B.png, outside --out.
    Then every name a simulated evaluation refuses was refused here too: `--policy 'runs/Robot Day 1/policy.pt'`
    (a robotics user's run folder) with 'use letters, digits ... (it names report files and is an item of --paired
    A,B)', though --bag has no --paired and links its plots percent-encoded, as it does a bag named 'Fahrt 1';
    `--policy policy.pt` in the run's folder was refused as "policy name ''". Refused now: a '/' or a line break."""
    import shutil

    import numpy as np

    from liquid_control.bags import BagWriter
    from liquid_control.bags.messages import image_message, twist_message
    from liquid_control.cli import main
    from liquid_control.paths import policies_dir

    shipped = policies_dir() / "cfc_ncp_rover.pt"
    run = tmp_path / "runs" / "Robot Day 1"
    run.mkdir(parents=True)
    shutil.copyfile(shipped, run / "policy.pt")
    bag = tmp_path / "bags" / "Fahrt 1"
    with BagWriter(bag) as writer:  # the rover policy's camera at its size, a command after each frame
        for k in range(10):
            t = 100.0 + 0.05 * k
            writer.write("/camera/image_raw", int(t * 1e9), image_message(np.full((64, 64, 3), 20 * k, np.uint8), t))
            writer.write("/cmd_vel", int(t * 1e9) + 1_000_000, twist_message(0.5, 0.1))
    out = tmp_path / "o" / "x"
    argv = ["eval", "--bag", str(bag), "--out", str(out), "--no-progress"]
    assert main([*argv, "--policy", f"../../escaped={shipped}"]) == 2
    err = capsys.readouterr().err
    assert "the policy name '../../escaped' holds a '/' (it names the plot files" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()

    assert main([*argv, "--policy", str(run / "policy.pt")]) == 0, capsys.readouterr().err
    assert [p.name for p in (out / "plots").iterdir()] == ["Robot Day 1__Fahrt 1.png"]
    report = (out / "report.md").read_text()
    assert "| Robot Day 1 | Fahrt 1 | 10 |" in report and "(plots/Robot%20Day%201__Fahrt%201.png)" in report
    monkeypatch.chdir(run)  # the run's own folder names it too
    assert main([*argv[:-3], "--out", str(tmp_path / "here"), "--no-progress", "--policy", "policy.pt"]) == 0
    assert "| Robot Day 1 | Fahrt 1 |" in (tmp_path / "here" / "report.md").read_text()


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--paired", "expert,expert"], "--paired 'expert,expert': a policy against itself"),
        (
            ["--shift", "imu_noise", "--shift", "imu_noise=0.2"],
            "--shift 'imu_noise' and --shift 'imu_noise=0.2' are the same world ('imu_noise=0.2'); give it once",
        ),
        (
            ["--shift-set", "visual", "--shift", "camera_noise=0.1"],
            "--shift 'camera_noise=0.1' and --shift 'camera_noise_0.1' are the same world",
        ),
        (["--shift", "fog=0"], "--shift 'in_distribution' and --shift 'fog=0' are the same world"),
    ],
)
def test_a_policy_paired_with_itself_and_one_world_under_two_shift_labels_are_refused(tmp_path, capsys, flags, message):
    """Before: `--paired expert,expert` was accepted (a comparison of a policy with itself), and two spellings of one
    world (`imu_noise` and `imu_noise=0.2`) ran every episode twice, reported as two shifts."""
    from liquid_control.cli import main

    out = tmp_path / "report"
    argv = ["eval", "--policy", "expert", "--episodes", "1", "--out", str(out), "--no-progress", "--no-example"]
    assert main([*argv, "--shift", "in_distribution", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()
    from liquid_control.evaluation.plan import validate_shifts
    from liquid_control.evaluation.shifts import SHIFT_SETS

    every_set = [shift for shifts in SHIFT_SETS.values() for shift in shifts]  # sets overlap in the same spellings
    assert validate_shifts(every_set) == list(dict.fromkeys(every_set))


def test_a_resume_with_a_smaller_request_says_which_logged_episodes_the_report_leaves_out(tmp_path, capsys):
    """Before: `--resume` with another --shift (or fewer --episodes) rewrote plan.json and report.md for that request
    without a word, while the log's other episodes silently dropped out of the report."""
    from liquid_control.evaluation.results import ResultLog

    out = str(tmp_path / "run")
    both = build_plan(["expert"], ["in_distribution", "winter"], 2)
    log = ResultLog(out, resume=False)
    for job in both.jobs:
        log.append(finished_record(job))
    assert log.count_outside(both.jobs) == 0
    winter = build_plan(["expert"], ["winter"], 2)
    assert log.count_outside(winter.jobs) == 2
    result = evaluate(winter, out, backend="serial", resume=True, progress=False, example=False, saliency=False)
    assert result["ran"] == 0 and {r["shift"] for r in result["records"]} == {"winter"}
    err = capsys.readouterr().err
    assert f"2 episode(s) in {os.path.join(out, LOG_NAME)} are not part of this request" in err
    assert "left out of the report" in err and "plan.json now describes this request" in err
    with open(os.path.join(out, "plan.json")) as fh:
        assert json.load(fh)["shifts"] == ["winter"]
    assert len(read_log(os.path.join(out, LOG_NAME))) == 4  # the log keeps every episode
    evaluate(both, out, backend="serial", resume=True, progress=False, example=False, saliency=False)
    assert "not part of this request" not in capsys.readouterr().err  # the whole request again: nothing to say


def test_a_report_rewritten_for_another_request_gives_the_command_that_wrote_it(tmp_path):
    """Found by a probe: `eval --resume` with fewer policies and pairs over a finished folder rewrote report.md for the
    new request (2 policies, 1 pair) while report.md and provenance.json gave the old command (4 policies, 3 pairs)
    and only added "Report rewritten: by <commit> at <time>". The rewrite is this part of the record now: its command,
    commit and times, marked as having run no episodes, the parts that ran them listed below it as earlier parts.
    And the experiment's training time read "Training wall time s: 26.3"."""
    from liquid_control.evaluation import provenance
    from liquid_control.evaluation.results import ResultLog

    out = str(tmp_path / "run")
    both = build_plan(["expert"], ["in_distribution", "winter"], 2)
    log = ResultLog(out, resume=False)
    for job in both.jobs:
        log.append(finished_record(job))
    old, new = "liquid-control eval --shift in_distribution --shift winter", "liquid-control eval --shift winter"
    options = dict(backend="serial", resume=True, progress=False, example=False, saliency=False)
    evaluate(both, out, command=old, provenance_extra={"training_wall_time_s": 26.3}, **options)
    first = provenance.read_record(os.path.join(out, "provenance.json"))
    assert first["command"] == old and "ran_no_episodes" not in first  # the part that (here: says it) ran them
    assert "- Training wall time: 26.3 s\n" in pathlib.Path(out, "report.md").read_text()
    result = evaluate(build_plan(["expert"], ["winter"], 2), out, command=new, **options)
    assert result["ran"] == 0
    prov = provenance.read_record(os.path.join(out, "provenance.json"))
    assert prov["command"] == new and prov["ran_no_episodes"] is True
    assert [part["command"] for part in prov["earlier_parts"]] == [old]
    assert prov["earlier_parts"][0]["training_wall_time_s"] == 26.3 and prov["earlier_parts"][0]["machine"]
    report = pathlib.Path(out, "report.md").read_text()
    assert f"- Command: `{new}`" in report and f"- Command: `{old}`" not in report
    assert f"- Earlier part (continued by `--resume`): `{old}`" in report and "training wall time 26 s" in report
    assert "- This part ran no episodes: it wrote the report for its command from the episodes already in" in report
    evaluate(both, out, command=old + " --resume", **options)  # rewritten again: each rewrite is a part of its own
    prov = provenance.read_record(os.path.join(out, "provenance.json"))
    assert [part["command"] for part in prov["earlier_parts"]] == [old, new]
    report = pathlib.Path(out, "report.md").read_text()
    assert f"- Earlier part (ran no episodes, rewrote the report) (continued by `--resume`): `{new}`" in report


def test_a_report_removes_the_figures_of_an_earlier_report_it_does_not_show(tmp_path):
    """Before: `--resume` with fewer shifts or policies, or with --no-saliency/--no-example, rewrote report.md but
    left the earlier report's figures beside it (the sensor-rate sweep, saliency, neuron traces of a policy no longer
    evaluated), drawn from episodes the new report leaves out."""
    from liquid_control.evaluation.results import ResultLog

    out = str(tmp_path / "run")
    both = build_plan(["expert"], ["in_distribution", "sensor_rate=2"], 2)
    log = ResultLog(out, resume=False)
    for job in both.jobs:
        log.append(finished_record(job))
    evaluate(both, out, backend="serial", resume=True, progress=False, example=False, saliency=False)
    assert os.path.exists(os.path.join(out, "success_vs_sensor_timing.png"))
    earlier = ["saliency_grid.png", "saliency_episode.gif", "example_episode.png", "neuron_traces_gone.png"]
    for name in earlier + ["my_notes.png"]:  # the last one is no report's: left alone
        pathlib.Path(out, name).write_bytes(b"earlier")
    one = build_plan(["expert"], ["in_distribution"], 2)
    evaluate(one, out, backend="serial", resume=True, progress=False, example=False, saliency=False)
    with open(os.path.join(out, "report.md")) as fh:
        assert "](success_by_shift.png)" in fh.read()
    figures = sorted(n for n in os.listdir(out) if n.endswith((".png", ".gif")))
    assert figures == ["my_notes.png", "success_by_shift.png"]


def test_plan_json_records_each_checkpoints_full_sha256(tmp_path, tiny_checkpoints):
    """Before: the report folder kept only 12 hex digits of a checkpoint's SHA-256 (results.csv); a reader could not
    check a file against the report with `sha256sum`."""
    import hashlib

    from liquid_control.evaluation.results import ResultLog

    out = str(tmp_path / "run")
    plan = build_plan(["expert", "tiny=" + ",".join(tiny_checkpoints)], ["in_distribution"], 1)
    log = ResultLog(out, resume=False)
    for job in plan.jobs:  # every episode logged: the report is written from them, nothing runs
        log.append(finished_record(job))
    evaluate(plan, out, backend="serial", resume=True, progress=False, example=False, saliency=False)
    with open(os.path.join(out, "plan.json")) as fh:
        expert, tiny = json.load(fh)["policies"]
    want = [hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest() for path in tiny_checkpoints]
    assert tiny["checkpoint_sha256"] == want and expert["checkpoint_sha256"] == []
    with open(os.path.join(out, "report.md")) as fh:
        assert "SHA-256, the shifts and the episode seeds: `plan.json`" in fh.read()


def test_no_two_policies_of_a_panel_look_alike_in_the_figures(tmp_path, monkeypatch):
    """Before: bars and lines took the 10 colours of the colour cycle alone, so the 11th policy of a panel was drawn as
    the 1st: in the headline figures `cfc_no_dt` (the dt ablation) in the expert's colour and style."""
    from matplotlib.colors import to_hex
    from matplotlib.container import BarContainer, ErrorbarContainer

    from liquid_control.evaluation.report import plot_success_by_shift, plot_sweeps
    from liquid_control.evaluation.summary import CellSummary
    from liquid_control.figures import pyplot

    plt = pyplot()
    drawn = []
    monkeypatch.setattr(plt, "close", drawn.append)  # keep the figures to look at them
    policies, shifts = [f"p{i}" for i in range(12)], ["in_distribution", "sensor_rate=2"]
    cells = [
        CellSummary(p, s, 4, 2, 0.5, (0.2, 0.8), 0.0, None, 0.0, None, 0.0, 10.0, 1.0, {0: 0.5})
        for p in policies
        for s in shifts
    ]
    plot_success_by_shift(cells, {"": policies}, shifts, str(tmp_path / "bars.png"))
    plot_sweeps(cells, {"": policies}, shifts, str(tmp_path / "sweep.png"))
    bars, sweep = drawn
    looks = [
        (c.get_label(), to_hex(c.patches[0].get_facecolor()), c.patches[0].get_hatch())
        for c in bars.axes[0].containers
        if isinstance(c, BarContainer)
    ]
    assert [label for label, *_ in looks] == policies and len({tuple(look) for _, *look in looks}) == 12
    lines = [c.lines[0] for c in sweep.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert len(lines) == 12
    assert len({(to_hex(line.get_color()), line.get_linestyle(), line.get_marker()) for line in lines}) == 12
    monkeypatch.undo()
    for figure in drawn:
        plt.close(figure)


def test_the_example_episode_states_the_tables_outcome_and_the_replays_where_they_differ(tmp_path):
    """The example episode is replayed alone for its figure; a trained policy's table record ran in a batch of lanes
    and can end otherwise (shipped balancer, perturbed: 14 of 144 outcomes changed between --lanes 1 and 6). Before:
    report.md stated the replay's outcome as the episode's, contradicting results.csv for the same episode."""
    from liquid_control.evaluation.report import pick_example
    from liquid_control.evaluation.results import ResultLog

    out = str(tmp_path / "run")
    plan = build_plan(["expert"], ["in_distribution", "winter"], 1)
    example = pick_example(plan)
    log = ResultLog(out, resume=False)
    for job in plan.jobs:  # the table's record of the example episode: a collision (the expert's replay succeeds)
        changes = {"success": False, "collision": True, "outcome": "collision"} if job == example else {}
        log.append(finished_record(job, **changes))
    evaluate(plan, out, backend="serial", resume=True, progress=False, saliency=False)
    report = pathlib.Path(out, "report.md").read_text()
    assert "| expert | winter | 1 | 0/1 | 100% |" in report
    assert (
        f"`expert` (training seed 0) under `winter`, episode seed {example.episode_seed}: collision in the tables "
        "(`results.csv`); replayed alone for the figure, success" in report
    )


def test_the_sensor_timing_section_claims_how_policies_were_trained_only_when_the_report_trained_them(tmp_path):
    """Before: every report with a rate sweep said 'Policies were trained at the default sensor timing (factor 1x),
    those with the timing recipe on rates and jitters drawn per training episode (see Training)', also for
    checkpoints given by --policy, whose training it does not know, and with no Training section to see."""
    from liquid_control.evaluation.results import ResultLog

    out = str(tmp_path / "run")
    plan = build_plan(["expert"], ["in_distribution", "sensor_rate=2"], 1)
    log = ResultLog(out, resume=False)
    for job in plan.jobs:
        log.append(finished_record(job))
    claim = "Policies were trained at the default sensor timing (factor 1x)"
    evaluate(plan, out, backend="serial", resume=True, progress=False, example=False, saliency=False)
    report = pathlib.Path(out, "report.md").read_text()
    assert "](success_vs_sensor_timing.png)" in report and claim not in report and "(see Training)" not in report
    assert "Factor 1x: the world's default sensor timing (`in_distribution`)" in report
    sections = ["## Training", "", "Every policy trained on the training distribution.", ""]  # the experiment's
    evaluate(plan, out, backend="serial", resume=True, progress=False, example=False, saliency=False, sections=sections)
    assert claim in pathlib.Path(out, "report.md").read_text()


@pytest.mark.parametrize("t", [1e-12, 1e-8, -1e-6, 1e-4, 0.3, -2.5, 40.0])
def test_student_t_near_the_centre_matches_the_closed_forms_of_one_and_two_degrees_of_freedom(t):
    """Before: the tail came from I_x(df/2, 1/2) with x = df / (df + t^2), whose 1 - x (the part a small t adds)
    was a subtraction that kept only its last bits: sf(1e-8, 1) was 0.5 exactly (6e-9 off), 1.6e-7 off at df = 1e6,
    and the quantile at p = 0.5 + 1e-9 three times too large. df = 1 (Cauchy) and df = 2 have closed forms."""
    import math

    assert student_t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, rel=1e-13)
    assert student_t_sf(t, 2) == pytest.approx(0.5 - t / (2.0 * math.sqrt(2.0 + t * t)), rel=1e-13)
    p = 0.5 + 1e-9
    assert student_t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-6)


def test_a_resume_with_other_training_options_is_refused_before_any_run_starts(tmp_path, monkeypatch, capsys):
    """Before: a finished run of the experiment trained with other options (--train-minutes, --schedule,
    --train-set) was refused by the worker that came to keep it, after the pool had started, while the runs not
    begun before (seed 1 here) were already training with the new options in the other workers."""
    import yaml

    from liquid_control.cli import main
    from liquid_control.evaluation import experiment

    out = tmp_path / "headline"
    finished = out / "train" / "cfc" / "seed_0"
    finished.mkdir(parents=True)
    trained_with = experiment._wanted_config("cfc", experiment.training_overrides("cfc", 20.0, schedule="headline"))
    (finished / "config.yaml").write_text(yaml.safe_dump(trained_with))
    (finished / "policy.pt").write_bytes(b"a finished run")
    started = []
    monkeypatch.setattr(experiment, "spawn_pool", lambda *args, **kwargs: started.append(args) or 1 / 0)
    argv = ["eval", "--experiment", "headline", "--archs", "cfc", "--recipes", "off", "--seeds", "2", "--resume",
            "--train-minutes", "0.1", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    said = f"training cfc (seed 0) in {finished}: {finished / 'config.yaml'}: the run was started with another config"
    assert said in err, err  # what `train --resume` says of it: the trainer's comparison
    assert "of its --schedule, --train-minutes and --train-set: resume with those the run was trained with" in err
    assert started == [] and not (finished.parent / "seed_1").exists()
    # the same options as the run's: kept, and the run not begun before goes to the pool
    same = [*argv[:-5], "--train-minutes", "20", "--out", str(out), "--no-progress"]
    with pytest.raises(ZeroDivisionError):
        main(same)
    assert len(started) == 1
    # an older version's config.yaml, before training.sequence_kernel: such a run trained "stepwise", not the
    # config's kernel; kept before as if it were this config (read as a new config is, with today's default)
    assert trained_with["training"]["sequence_kernel"] != "stepwise"
    del trained_with["training"]["sequence_kernel"]
    (finished / "config.yaml").write_text(yaml.safe_dump(trained_with))
    assert main(same) == 2
    assert "keys that differ: training.sequence_kernel" in capsys.readouterr().err
    assert len(started) == 1


def test_a_resume_of_an_interrupted_run_with_other_training_options_is_refused_before_any_run_starts(
    tmp_path, monkeypatch, capsys
):
    """Before: an interrupted run (checkpoint.pt, data/, no policy.pt) resumed with other options (--train-minutes
    here) was refused only by its own train in a worker, after the pool had started, while the run not begun before
    (seed 1) trained with the new options. train_all refuses it first, with train's message (its comparison): with
    its config.yaml, and with its checkpoint's config where config.yaml was lost; what train resumes is still
    resumed (an older version's config.yaml, without a key added since)."""
    import yaml

    from liquid_control.cli import main
    from liquid_control.evaluation import experiment
    from liquid_control.training import TrainingError
    from liquid_control.training import run as training_run

    tiny = [f"training.{t}" for t in TINY_TRAINING]
    extra = {k: int(v) for k, v in (t.split("=") for t in tiny)}
    out = tmp_path / "headline"
    started = out / "train" / "cfc" / "seed_0"
    killed = lambda *args: (_ for _ in ()).throw(KeyboardInterrupt("killed"))  # noqa: E731
    monkeypatch.setattr(training_run.TrainingRun, "evaluate", killed)  # after the first epoch's checkpoint
    trained_with = experiment.training_overrides("cfc", 20.0, extra, schedule="headline")
    with pytest.raises(KeyboardInterrupt):
        experiment._run_training("cfc", "cfc", 0, str(started), trained_with, False, lambda m: None, "")
    monkeypatch.undo()
    assert (started / "checkpoint.pt").is_file() and not (started / "policy.pt").exists()
    other = experiment.training_overrides("cfc", 0.1, extra, schedule="headline")
    pools = []
    monkeypatch.setattr(experiment, "spawn_pool", lambda *args, **kwargs: pools.append(args) or 1 / 0)
    argv = ["eval", "--experiment", "headline", "--archs", "cfc", "--recipes", "off", "--seeds", "2", "--resume",
            "--out", str(out), "--no-progress", *(a for t in tiny for a in ("--train-set", t))]  # fmt: skip
    saved = (started / "config.yaml").read_text()
    for refused_by in ("config.yaml", "checkpoint.pt"):  # checkpoint.pt: config.yaml lost
        with pytest.raises(TrainingError) as in_worker:  # what the run's own train says, in a worker before
            experiment._run_training("cfc", "cfc", 0, str(started), other, True, lambda m: None, "")
        assert f"{started / refused_by}: the run was started with another config" in str(in_worker.value)
        assert main([*argv, "--train-minutes", "0.1"]) == 2
        err = capsys.readouterr().err
        assert f"training cfc (seed 0) in {started}: {in_worker.value}" in err, err
        assert pools == [] and not (started.parent / "seed_1").exists()
        (started / "config.yaml").unlink(missing_ok=True)
    # the run's own options, its config.yaml an older version's (no training.action_noise_tau): resumed in the pool
    older = yaml.safe_load(saved)
    del older["training"]["action_noise_tau"]
    (started / "config.yaml").write_text(yaml.safe_dump(older))
    with pytest.raises(ZeroDivisionError):
        main([*argv, "--train-minutes", "20"])
    assert len(pools) == 1
