"""The statistics a report cites, against independent oracles (scipy.stats, Bonferroni by hand) and at their edges:
one training seed, NaN input, extreme confidence, 100% success, float-noise ties (fast: no world runs)."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest
from scipy import stats as scipy_stats

from liquid_control import stats

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("n", [1, 2, 5, 30, 1000])
def test_wilson_interval_is_scipys_at_every_count_including_0_and_n(n):
    for k in sorted({0, 1, n // 2, n - 1, n}):
        want = scipy_stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert stats.wilson_interval(k, n) == pytest.approx((want.low, want.high), abs=1e-12)


def test_the_paired_seed_test_is_scipys_paired_t_test():
    rng = np.random.default_rng(7)
    for n in (2, 3, 5, 10):
        a, b = rng.integers(0, 31, n) / 30, rng.integers(0, 31, n) / 30
        mean, lo, hi, p = stats.paired_seed_test(a - b)
        want = scipy_stats.ttest_rel(a, b)
        ci = want.confidence_interval(0.95)
        assert (mean, lo, hi, p) == pytest.approx((np.mean(a - b), ci.low, ci.high, want.pvalue), rel=1e-9)


def test_bonferroni_by_hand():
    assert stats.bonferroni_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert stats.bonferroni_adjust([0.02, 0.02]) == pytest.approx([0.04, 0.04])  # ties
    assert stats.bonferroni_adjust([0.3, 0.6, 0.9]) == pytest.approx([0.9, 1.0, 1.0])  # capped at 1
    assert stats.bonferroni_adjust([]) == []
    for bad in ([0.1, float("nan")], [1.5], [-0.1]):
        with pytest.raises(ValueError, match="bonferroni_adjust: p-values must be in"):
            stats.bonferroni_adjust(bad)


@pytest.mark.parametrize("df", [1, 2, 4])
@pytest.mark.parametrize("confidence", [0.95, 0.9999, 0.999999])
def test_a_t_quantile_beyond_1000_is_the_quantile_not_1000(df, confidence):
    """Before: the bisection searched [-1000, 1000] only, so two seeds' 99.99% interval used t = 1000 for 6366."""
    want = scipy_stats.t.ppf(0.5 + confidence / 2, df)
    assert stats.student_t_quantile(0.5 + confidence / 2, df) == pytest.approx(want, rel=1e-9)
    _, lo, hi, _ = stats.paired_seed_test([0.1, 0.2, 0.4, 0.3, 0.5][: df + 1], confidence=confidence)
    se = np.std([0.1, 0.2, 0.4, 0.3, 0.5][: df + 1], ddof=1) / np.sqrt(df + 1)
    assert (hi - lo) / 2 == pytest.approx(want * se, rel=1e-9)


def test_a_nan_difference_or_outcome_is_refused_not_a_nan_or_p_of_1():
    """Before: paired_seed_test([nan, 0.1, 0.2]) gave (nan, nan, nan, p = 1), 'no difference'; the bootstrap gave
    a NaN interval for a NaN outcome and [33%, 150%] for an outcome of 2."""
    with pytest.raises(ValueError, match="paired_seed_test: the differences contain NaN"):
        stats.paired_seed_test([float("nan"), 0.1, 0.2])
    with pytest.raises(ValueError, match="student_t_sf: t is NaN"):
        stats.student_t_sf(float("nan"), 3)
    for bad in (float("nan"), 2):
        with pytest.raises(ValueError, match="training seed 0 .*stratum 0 has an outcome that is not a number in"):
            stats.hierarchical_bootstrap_interval([[[1, 0, bad]], [[1, 1, 0]]])


def test_the_bag_loop_rounds_interval_at_100_percent_is_not_a_point(tmp_path):
    """Before: scripts/bag_loop.py rounds used the seed-then-episode bootstrap alone: three seeds at 50/50 printed
    '100% (100%-100%)', a certainty no 150 episodes give; now at least the pooled Wilson interval, as the report."""
    bag_loop = _script("bag_loop")
    outs = []
    for seed in range(3):
        folder = tmp_path / f"seed{seed}" / "sim"
        folder.mkdir(parents=True)
        rows = [{"policy": "bags", "shift": "in_distribution", "episode_seed": e, "success": True} for e in range(50)]
        (folder / "results.json").write_text(json.dumps(rows))
        outs.append(str(tmp_path / f"seed{seed}"))
    low = stats.wilson_interval(150, 150)[0]
    assert f"| 0 | 50/50 | 50/50 | 50/50 | 100% ({low:.0%}-100%) |" in bag_loop.rounds(outs)
    assert f"| 0 | 50/50 | 100% ({stats.wilson_interval(50, 50)[0]:.0%}-100%) |" in bag_loop.rounds(outs[:1])


def test_a_kept_seed_as_good_as_the_mean_is_neither_gaining_nor_losing_in_the_sign_test():
    """Before: scripts/seed_selection.py counted 0.1 against (0.1 + 0.1 + 0.1) / 3 = 0.10000000000000002 as a
    loss (and docs/seed_selection's visual row without seed 0 counted such a float-noise tie as a gain)."""
    selection = _script("seed_selection")
    validation = {("p", 0): 0.6, ("p", 1): 0.4, ("p", 2): 0.2, ("q", 0): 0.5, ("q", 1): 0.1, ("q", 2): 0.1}
    test = {("p", s, "all"): 0.1 for s in range(3)} | {("q", s, "all"): r for s, r in enumerate([0.9, 0.5, 0.2])}
    summary = selection._summary(selection._choose(validation, test, ["p", "q"], ["all"]), ["all"])["all"]
    assert (summary["policies_gaining"], summary["policies_losing"]) == (1, 0)
    assert summary["sign_test_p"] == 1.0  # one discordant policy: exact two-sided sign test


def test_the_report_says_what_its_success_interval_includes_for_the_seeds_it_has(tmp_path):
    """Before: a report of one training seed per policy (the shipped policies') said its interval 'includes the
    seed-to-seed spread of training', which one seed cannot show."""
    import torch
    from test_eval import TINY_CONFIG  # the evaluation tests' tiny camera policy

    from liquid_control.evaluation.plan import build_plan
    from liquid_control.evaluation.report import write_report
    from liquid_control.policy import Policy, save_policy

    torch.manual_seed(0)
    policy = Policy.from_config(TINY_CONFIG)
    paths = [str(save_policy(tmp_path / f"s{s}.pt", policy, {"seed": s, "policy": "A"})) for s in (0, 1)]

    def text(specs):
        plan = build_plan(specs, ["in_distribution"], 4)
        records = [
            {
                "policy": j.policy,
                "shift": j.shift,
                "training_seed": j.training_seed,
                "episode_seed": j.episode_seed,
                "success": j.episode_seed % 2 == 0,
                "collision": False,
                "return": 1.0,
                "smoothness": 0.1,
                "steps": 10,
                "sim_time_s": 1.0,
            }
            for j in plan.jobs
        ]
        out = tmp_path / str(len(specs[0]))
        out.mkdir()
        return " ".join(open(write_report(plan, records, str(out), "", example=False, saliency=False)).read().split())

    one = text([f"A={paths[0]}"])
    assert "includes the seed-to-seed spread" not in one
    assert "With one training seed per policy the interval is over its episodes alone: it does not include" in one
    two = text([f"A={paths[0]},{paths[1]}"])
    assert "It includes the seed-to-seed spread of training" in two and "does not include" not in two


@pytest.mark.parametrize("only_a,only_b", [(30000, 30600), (30600, 30000), (499000, 501000), (10, 3000), (3000, 10)])
def test_mcnemar_is_scipys_binomial_test_at_large_n_in_either_direction(only_a, only_b):
    """Before: an exact integer binomial coefficient per term, cubic in n (6,500 pairs: 64 s; these: hours)."""
    want = scipy_stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert stats.mcnemar_exact_p(only_a, only_b) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("p", [1e-6, 0.01, 0.3, 0.5, 0.7, 0.999])
def test_the_binomial_tail_is_scipys_below_and_above_the_mode(p):
    for n in (1, 7, 40, 2000, 100000):
        for k in sorted({-1, 0, 1, int(n * p) - 50, int(n * p) - 1, int(n * p), int(n * p) + 50, n - 1, n, n + 1}):
            want = scipy_stats.binom.cdf(k, n, p)
            assert stats.binomial_cdf(k, n, p) == pytest.approx(want, rel=1e-11, abs=1e-290), (k, n, p)


def test_mcnemar_is_the_exact_binomial_sum_and_rounds_only_below_the_smallest_float():
    """Against the exact rational sum of binomial coefficients; at 1,075 discordant pairs all one way p is
    2^-1074, the smallest float (before: 0.0, since 2 * P(X <= 0) rounded P = 2^-1075 to 0 first); from 1,076 it
    is below every float: 0.0 as scipy's, and the report prints it as below 1e-300, not as 0."""
    from fractions import Fraction
    from math import comb

    for n in [*range(1, 60), 200, 1000, 1074]:
        for k in range(0, n // 2 + 1) if n < 60 else (0, 1, 2, n // 3, n // 2 - 1, n // 2):
            want = float(min(1, Fraction(2 * sum(comb(n, i) for i in range(k + 1)), 2**n)))
            assert stats.mcnemar_exact_p(k, n - k) == pytest.approx(want, rel=1e-11, abs=1e-300), (k, n)
    assert stats.mcnemar_exact_p(0, 1075) == stats.mcnemar_exact_p(1075, 0) == 2.0**-1074
    assert stats.mcnemar_exact_p(0, 1076) == scipy_stats.binomtest(0, 1076).pvalue == 0.0
    assert [stats.format_p(p) for p in (0.0, 2.0**-1074, 0.0123456)] == ["< 1e-300", "< 1e-300", "0.0123"]


def test_counts_of_discordant_pairs_are_whole_numbers():
    """Before: 1.5 pairs raised a TypeError from range(), True counted as 1."""
    for bad, name in ((1.5, "only_a"), (True, "only_a"), (-1, "only_a"), (3.0, "only_a")):
        with pytest.raises(ValueError, match=f"mcnemar_exact_p: {name} must be"):
            stats.mcnemar_exact_p(bad, 4)
    with pytest.raises(ValueError, match="mcnemar_exact_p: only_b must be"):
        stats.mcnemar_exact_p(4, np.float64(2))
    assert stats.mcnemar_exact_p(np.int64(1), np.int32(12)) == stats.mcnemar_exact_p(1, 12)


def test_the_sign_flip_p_value_of_many_tied_seeds_is_a_number():
    """Before: 2.0 / 2.0**n raised OverflowError from 1,024 seeds whose differences all tie."""
    assert stats.paired_seed_test([0.1] * 1024)[3] == 2.0**-1023
    assert stats.paired_seed_test([0.1] * 1100)[3] == 0.0 and stats.paired_seed_test([0.1] * 5)[3] == 0.0625


def test_wilson_interval_takes_whole_counts_and_names_the_one_that_is_not():
    """Before: 1.5 successes gave an interval, True counted as 1 success, z = -1.96 an interval inside out."""
    for successes, n, message in [
        (1.5, 3, r"successes must be an integer count, got 1\.5 \(float\)"),
        (3.0, 3, r"successes must be an integer count, got 3\.0"),
        (True, 3, r"successes must be an integer count, got True \(bool\)"),
        (np.bool_(True), 3, "successes must be an integer count"),
        (1, 2.0, r"n must be an integer count, got 2\.0"),
        (-1, 3, "successes must be >= 0, got -1"),
        (1, -3, "n must be >= 0, got -3"),
        (4, 3, r"successes=4 is outside \[0, n=3\]"),
        (0, 0, "needs n >= 1 trials"),
    ]:
        with pytest.raises(ValueError, match="wilson_interval.*" + message):
            stats.wilson_interval(successes, n)
    for z in (-1.96, 0.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="wilson_interval: z must be a positive normal quantile"):
            stats.wilson_interval(1, 3, z=z)
    want = scipy_stats.binomtest(7, 30).proportion_ci(0.95, method="wilson")
    for successes, n in ((7, 30), (np.int64(7), np.int32(30)), (np.uint8(7), 30)):
        assert stats.wilson_interval(successes, n) == pytest.approx((want.low, want.high), abs=1e-12)


@pytest.mark.parametrize("df", [1, 2, 4, 9, 50])
def test_t_quantiles_far_in_either_tail_are_scipys(df):
    """Before: the bisection compared 1 - sf with p, which near p = 1 (or 1 - p near 0 for p below 1/2) keeps only
    the last bits of the tail: 5% off scipy at a tail of 1e-15, 2e-6 at 2.5e-11 (a Bonferroni level of 1e9 tests)."""
    for tail in (0.4, 1e-3, 2.5e-8, 2.5e-11, 1e-15):
        for p in (tail, 1 - tail):
            assert stats.student_t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-12), p


@pytest.mark.parametrize("confidence", [0.5, 0.95, 1 - 1e-6, 1 - 1e-10, 1 - 1e-14])
def test_the_success_intervals_normal_quantile_is_scipys_at_any_level(confidence):
    """Before: Newton's method on erf(z / sqrt 2) = confidence, where erf near 1 keeps only the last bits of
    1 - confidence: z 1e-8 off at 1 - 1e-10, 4e-7 at 1 - 1e-14 (the Wilson side of `success_interval`)."""
    z = -scipy_stats.norm.ppf((1 - confidence) / 2)
    every_episode = [[np.ones(30)], [np.ones(30)]]  # the bootstrap is a point at 100%: the Wilson bound shows
    low = stats.success_interval(every_episode, confidence=confidence)[1]
    assert low == pytest.approx(stats.wilson_interval(60, 60, z=z)[0], rel=1e-13)


def test_a_bootstrap_of_no_resamples_is_refused_naming_the_argument():
    """Before: resamples=0 raised 'IndexError: index -1 is out of bounds', -5 numpy's 'negative dimensions'."""
    for function, values in (
        (stats.bootstrap_mean_interval, [1.0, 2.0, 3.0]),
        (stats.hierarchical_bootstrap_interval, [[[1, 0, 1]], [[0, 0, 1]]]),
    ):
        for bad, message in (
            (0, "resamples must be >= 1, got 0"),
            (-5, "resamples must be >= 0"),
            (1.5, "resamples must be an integer"),
        ):
            with pytest.raises(ValueError, match=f"{function.__name__}: {message}"):
                function(values, resamples=bad)
        assert function(values, resamples=np.int64(1)) is not None
