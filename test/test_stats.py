"""The OOD report's statistics on synthetic episode records: comparisons over training seeds, paired episodes,
the seed-then-episode bootstrap (fast: no world runs)."""

import numpy as np
import pytest
from test_eval import TINY_CONFIG  # the evaluation tests' tiny camera policy

from liquid_control.evaluation.report import _comparison_table
from liquid_control.evaluation.summary import compare_over_seeds
from liquid_control.stats import binomial_cdf, mcnemar_exact_p, paired_seed_test


def episodes(policy, successes_by_seed, shift="in_distribution", n=30):
    """Records of ``policy``: training seed s succeeds in its first ``successes_by_seed[s]`` of ``n`` episodes."""
    return [
        {
            "policy": policy,
            "shift": shift,
            "training_seed": s,
            "episode_seed": e,
            "success": e < k,
            "collision": False,
            "return": 1.0,
            "smoothness": 0.1,
            "steps": 10,
            "sim_time_s": 1.0,
        }
        for s, k in successes_by_seed.items()
        for e in range(n)
    ]


K = {0: 3, 1: 9, 2: 14, 3: 21, 4: 26, 5: 29}  # successes of 30 per training seed: the same for A and B below


# ------------------------------------------------------------------------ comparisons over training seeds


def test_seeds_are_paired_by_number_on_the_seeds_both_policies_ran():
    """Before: B lacked seed 0, so A0-B1, A1-B2, ... were paired in order: identical policies -17 pts, p=0.0014."""
    records = episodes("A", K) + episodes("B", {s: k for s, k in K.items() if s != 0})
    (row,) = compare_over_seeds(records, [("A", "B")], ["in_distribution"])
    assert (row.seeds, row.seeds_a, row.seeds_b) == (5, 6, 5)
    assert row.difference == 0.0 and row.p_value == 1.0 and row.p_bonferroni == 1.0
    assert row.mean_a == row.mean_b == pytest.approx(np.mean([K[s] / 30 for s in range(1, 6)]))
    table = _comparison_table([row])
    assert "| A | B | in-distribution | 5 (of A: 6, B: 5) | 66% | 66% | +0 pts" in table[2]
    assert "seeds paired" in table[0]


def test_a_seed_dropped_for_one_group_is_left_out_of_that_group_only():
    """Before: B's seed 0 without a winter cell dropped it from the visual group, and the rest paired in order."""
    records = episodes("A", K) + episodes("B", K) + episodes("A", K, "winter") + episodes("B", K, "winter")
    records = [r for r in records if not (r["policy"] == "B" and r["training_seed"] == 0 and r["shift"] == "winter")]
    rows = {r.group: r for r in compare_over_seeds(records, [("A", "B")], ["in_distribution", "winter"])}
    assert rows["in-distribution"].seeds == 6 and rows["visual"].seeds == 5
    assert rows["visual"].difference == 0.0 and rows["visual"].p_value == 1.0


def test_fewer_than_two_shared_seeds_is_a_row_without_a_test_outside_the_family():
    records = episodes("A", {0: 20, 1: 25, 2: 22}) + episodes("B", {2: 10, 3: 12, 4: 11})  # share seed 2 only
    records += episodes("C", {0: 20, 1: 25, 2: 22}) + episodes("D", {0: 10, 1: 12, 2: 11})
    records += episodes("E", {5: 20, 6: 25}) + episodes("F", {7: 10, 8: 12})  # share none
    rows = compare_over_seeds(records, [("A", "B"), ("C", "D"), ("E", "F")], ["in_distribution"])
    ab, cd, ef = rows
    assert (ab.seeds, ab.p_value, ab.p_bonferroni, ab.ci) == (1, None, None, None)
    assert ab.difference == pytest.approx((22 - 10) / 30) and ab.mean_a == pytest.approx(22 / 30)
    assert (ef.seeds, ef.difference, ef.mean_a, ef.p_value) == (0, None, None, None)
    assert cd.p_bonferroni == cd.p_value  # a family of one test: the untested rows are not counted
    assert cd.ci == pytest.approx(paired_seed_test([10 / 30, 13 / 30, 11 / 30])[1:3])  # so at 95%
    table = _comparison_table(rows)
    assert (
        "| A | B | in-distribution | 1 (of A: 3, B: 3) | 73% | 33% | +40 pts, n/a: fewer than 2 shared seeds | — | — |"
        in table
    )
    assert "| E | F | in-distribution | 0 (of E: 2, F: 2) | — | — | n/a: fewer than 2 shared seeds | — | — |" in table


def test_seed_numbers_a_checkpoint_did_not_record_are_never_paired():
    records = episodes("A", {0: 20, 1: 25, 2: 22}) + episodes("B", {0: 10, 1: 12, 2: 11})
    (row,) = compare_over_seeds(records, [("A", "B")], ["in_distribution"], unrecorded={"B": (0,)})
    assert (row.seeds, row.seeds_a, row.seeds_b) == (2, 3, 3)
    (row,) = compare_over_seeds(records, [("A", "B")], ["in_distribution"], unrecorded={"A": (0, 1)})
    assert row.seeds == 1 and row.p_value is None


def test_a_zero_difference_is_printed_as_zero_not_as_float_noise_below_it():
    """Seed differences -1/6, +4/6, -3/6 sum to exactly 0, their float mean is -1.9e-17: the table printed
    "-0 pts" (A below B) where the episodes say A and B tie; p = 1 already treated it as zero."""
    records = episodes("A", {0: 2, 1: 4, 2: 1}, n=6) + episodes("B", {0: 3, 1: 0, 2: 4}, n=6)
    (row,) = compare_over_seeds(records, [("A", "B")], ["in_distribution"])
    assert row.p_value == 1.0
    (line,) = _comparison_table([row])[2:]
    assert "| 39% | 39% | +0 pts [" in line and "-0" not in line
    untested = compare_over_seeds(records, [("A", "B")], ["in_distribution"], unrecorded={"A": (0, 1)})
    row = untested[0]
    row.mean_a, row.mean_b, row.difference = 0.3, 0.1 + 0.2, 0.3 - (0.1 + 0.2)  # -5.6e-17: float noise, a tie
    assert "| +0 pts, n/a: fewer than 2 shared seeds |" in _comparison_table([row])[2]


@pytest.fixture(scope="module")
def seed_checkpoints(tmp_path_factory):
    """Tiny untrained policies: training seeds 0..3 recorded, and one without a recorded seed; ``[seed, name]``: the
    same seed's weights as another policy's own file (one file under two policy names is refused)."""
    import torch

    from liquid_control.policy import Policy, save_policy

    folder = tmp_path_factory.mktemp("seeds")
    paths = {}
    for seed in (0, 1, 2, 3, None):
        torch.manual_seed(0 if seed is None else seed)
        metadata = {} if seed is None else {"seed": seed}
        policy = Policy.from_config(TINY_CONFIG)
        paths[seed] = str(save_policy(folder / f"s{seed}.pt", policy, metadata))
        for name in ("B", "C", "lstm"):
            paths[seed, name] = str(save_policy(folder / f"{name}_s{seed}.pt", policy, {**metadata, "policy": name}))
    return paths


def test_report_pairs_the_seeds_of_a_plan_by_number(seed_checkpoints, tmp_path):
    """`eval --policy A=s0,s1,s2 --policy B=s1,s2,s3`: before, A0-B1, A1-B2, A2-B3 were compared; and a
    checkpoint without a recorded seed (given the first unused number) was paired with another's real seed."""
    from liquid_control.evaluation.plan import build_plan
    from liquid_control.evaluation.report import write_report

    p = seed_checkpoints
    plan = build_plan(
        [f"A={p[0]},{p[1]},{p[2]}", f"B={p[1, 'B']},{p[2, 'B']},{p[3, 'B']}", f"C={p[None]},{p[1, 'C']}"],
        ["in_distribution"],
        30,
    )
    specs = {s.name: s for s in plan.policies}
    assert specs["C"].training_seeds == (0, 1) and specs["C"].unrecorded_seeds == (0,)
    assert specs["A"].unrecorded_seeds == ()
    k = {0: 5, 1: 15, 2: 25, 3: 29}  # the same checkpoint succeeds the same in A, B and C
    records = [
        r
        for j in plan.jobs
        for r in episodes(j.policy, {j.training_seed: k[j.training_seed]}, j.shift, n=30)
        if r["episode_seed"] == j.episode_seed - plan.episode_seeds[0]
    ]
    report = write_report(
        plan, records, str(tmp_path), "", example=False, saliency=False, comparisons=[("A", "B"), ("A", "C")]
    )
    text = open(report).read()
    assert "| A | B | in-distribution | 2 (of A: 3, B: 3) | 67% | 67% | +0 pts, n/a" not in text
    assert "| A | B | in-distribution | 2 (of A: 3, B: 3) | 67% | 67% | +0 pts [n/a] | 1 | 1 |" in text  # a tie
    assert (
        "| A | C | in-distribution | 1 (of A: 3, C: 2) | 50% | 50% | +0 pts, n/a: fewer than 2 shared seeds |" in text
    )
    assert (
        "1 comparisons (pairs x kinds of shift), Bonferroni-corrected together: each interval at 95%, all 1 "
        "together at 95%; bold: p (Bonferroni) < 0.05, where the interval excludes 0 (a tie has none). 1 without a test"
    ) in " ".join(text.split())
    assert "| C | 0 (not recorded), 1 |" in text


def test_the_pooled_table_names_a_seed_it_leaves_out_for_a_missing_shift(seed_checkpoints, tmp_path):
    """Before (the misc probe): results without seed 2's winter episodes (an interrupted run reported, results
    combined by hand) pooled 'visual' over seeds 0 and 1 alone (35%) under a table that said nothing of it; now the
    cell says 2 of 3 seeds and the note under the table names the seed and the shift it lacks."""
    from liquid_control.evaluation.plan import build_plan
    from liquid_control.evaluation.report import write_report

    p = seed_checkpoints
    plan = build_plan([f"A={p[0]},{p[1]},{p[2]}", f"B={p[0, 'B']}"], ["in_distribution", "fog", "winter"], 10)
    k = {0: 2, 1: 5, 2: 9}
    records = [
        r
        for j in plan.jobs
        for r in episodes(j.policy, {j.training_seed: k[j.training_seed]}, j.shift, n=10)
        if r["episode_seed"] == j.episode_seed - plan.episode_seeds[0]
    ]

    def pooled(records, out):
        text = open(write_report(plan, records, str(out), "", example=False, saliency=False)).read()
        return text[text.index("### Pooled by kind of shift") : text.index("## Return")]

    whole = pooled(records, tmp_path / "whole")
    assert "| A | 53% [20%, 90%] | 53% [" in whole and "seeds)" not in whole and "Left out" not in whole
    cut = [r for r in records if not (r["policy"] == "A" and r["training_seed"] == 2 and r["shift"] == "winter")]
    lines = pooled(cut, tmp_path / "cut").splitlines()
    assert "| A | 53% [20%, 90%] | 35% [12%, 60%] (2 of 3 seeds) |" in lines, lines
    (b_row,) = [line for line in lines if line.startswith("| B |")]
    assert b_row.count("20% [") == 2 and "seeds)" not in b_row  # B: nothing left out
    text = " ".join(lines)
    assert (
        "Left out of the pooled rates, with no episodes of a shift of the kind in these results (an interrupted "
        "run, or results combined or edited): `A` in visual: training seed 2 has no winter."
    ) in text, text


# ----------------------------------------------------------------------- a comparison given more than once


def test_a_pair_given_twice_or_reversed_is_one_comparison_of_the_family():
    """Before: comparison_pairs + --paired cfc,lstm (or --paired a,b --paired b,a) tested the pair twice, and
    the correction counted both: every adjusted p-value of the report was computed with a larger family."""
    from liquid_control.evaluation import plan

    assert plan.parse_pairs(["cfc,lstm", "lstm,cfc", " cfc , lstm", "gru,cfc"], ["cfc", "lstm", "gru"]) == [
        ("cfc", "lstm"),
        ("gru", "cfc"),
    ]
    assert plan.unique_pairs([("a", "b"), ("b", "a"), ("a", "c"), ("a", "b")]) == [("a", "b"), ("a", "c")]
    rates = {"cfc": {0: 20, 1: 21, 2: 22}, "lstm": {0: 10, 1: 12, 2: 11}, "gru": {0: 15, 1: 17, 2: 14}}
    records = [r for p, k in rates.items() for r in episodes(p, k)]
    family = [("cfc", "lstm"), ("cfc", "gru"), ("lstm", "gru"), ("cfc", "lstm"), ("gru", "cfc")]
    rows = compare_over_seeds(records, family, ["in_distribution"])
    assert [(r.a, r.b) for r in rows] == [("cfc", "lstm"), ("cfc", "gru"), ("lstm", "gru")]
    assert [r.p_bonferroni for r in rows] == pytest.approx([min(1, 3 * r.p_value) for r in rows])


def test_the_experiment_compares_a_pair_it_already_makes_once(seed_checkpoints, tmp_path, monkeypatch):
    """`--experiment headline --paired cfc,lstm`: the comparisons handed to the report hold cfc-lstm once."""
    import argparse

    from liquid_control.evaluation import cli, experiment

    def fake_train_all(variants, seeds, *args, **kwargs):
        return [
            {
                "name": name,
                "arch": arch,
                "seed": s,
                "policy": seed_checkpoints[s] if name == "cfc" else seed_checkpoints[s, name],
                "metadata": {},
                "cpu_s": None,
            }
            for name, arch in variants
            for s in seeds
        ]

    handed = {}
    monkeypatch.setattr(experiment, "train_all", fake_train_all)
    monkeypatch.setattr("liquid_control.evaluation.evaluate.evaluate", lambda plan, out, **kw: handed.update(kw))
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        ["--experiment", "headline", "--archs", "cfc,lstm", "--recipes", "off", "--seeds", "2", "--episodes", "1"]
        + ["--shift", "in_distribution", "--out", str(tmp_path / "run"), "--paired", "lstm,cfc"]
        + ["--paired", "cfc,lstm", "--paired", "expert,cfc"]
    )
    experiment.run_experiment(args)
    assert handed["comparisons"] == [("cfc", "lstm"), ("expert", "cfc")]
    assert handed["paired"] == [("lstm", "cfc"), ("expert", "cfc")]


def test_the_report_prints_a_pair_given_twice_once(seed_checkpoints, tmp_path):
    from liquid_control.evaluation.plan import build_plan
    from liquid_control.evaluation.report import write_report

    p = seed_checkpoints
    plan = build_plan([f"A={p[0]},{p[1]}", f"B={p[0, 'B']},{p[1, 'B']}"], ["in_distribution"], 4)
    records = [
        r
        for j in plan.jobs
        for r in episodes(j.policy, {j.training_seed: 2}, j.shift, n=4)
        if r["episode_seed"] == j.episode_seed - plan.episode_seeds[0]
    ]
    for r in records:
        r["episode_seed"] += plan.episode_seeds[0]
    paired = [("A", "B"), ("A", "B"), ("B", "A")]
    text = open(write_report(plan, records, str(tmp_path), "", example=False, saliency=False, paired=paired)).read()
    assert text.count("### Paired episodes") == 1 and text.count("| A | B | in-distribution |") == 1
    assert "| B | A |" not in text


# ---------------------------------------------------------------------------------- paired episodes


def test_the_expert_is_paired_on_the_episode_seed_with_every_training_seed_of_the_other():
    """Before: the expert's episodes carry training seed 0, so `--paired expert,cfc` compared cfc's seed 0 only
    (30 of 150 episodes: cfc at 17% in the paired table, 70% in the success table of the same report)."""
    from liquid_control.evaluation.summary import paired_comparison, summarize

    records = episodes("expert", {0: 30}, "winter") + episodes("cfc", {0: 5, 1: 25, 2: 25, 3: 25, 4: 25}, "winter")
    (row,) = paired_comparison(records, "expert", "cfc", ["winter"])  # the expert: seedless by default
    (cell,) = summarize(records, ["cfc"], ["winter"])
    # the test counts episode seeds (episodes 5-29: the expert succeeded in more of their pairs), not the 45 pairs
    # where only the expert succeeded: its one outcome entered once per training seed
    assert (row.pairs, row.success_a, row.only_a, row.only_b) == (150, 1.0, 25, 0)
    assert row.success_b == pytest.approx(cell.success_rate) == pytest.approx(105 / 150)
    (back,) = paired_comparison(records, "cfc", "expert", ["winter"], seedless={"expert"})
    assert (back.pairs, back.success_a, back.success_b, back.only_a, back.only_b) == (150, row.success_b, 1.0, 0, 25)
    assert back.p_value == row.p_value
    # two policies with training seeds: still paired by training seed and episode seed
    (same,) = paired_comparison(records + episodes("gru", {0: 30, 7: 30}, "winter"), "gru", "cfc", ["winter"])
    assert (same.pairs, same.only_a) == (30, 25)


def _episodes_of(policy, seeds, episodes, rate, rng):
    return [
        {"policy": policy, "shift": "w", "training_seed": s, "episode_seed": e, "success": bool(rng.random() < rate)}
        for s in seeds
        for e in range(episodes)
    ]


@pytest.mark.parametrize("rate", [0.5, 0.8, 0.95])
def test_the_paired_test_of_the_expert_against_several_training_seeds_holds_its_level(rate):
    """An audit: with the expert and each of 5 training seeds of a policy succeeding at 0.5 on every episode,
    independently, the McNemar test on all 150 pairs rejected at p < 0.05 in 22% of 2,000 runs (the expert's one
    outcome counted 5 times); a sign test on which side won each episode seed (a first fix, found by a review)
    rejected in 86% at 0.8. The exact test stratified by episode seed holds its level at every rate."""
    from liquid_control.evaluation.summary import paired_comparison

    rng = np.random.default_rng(0)
    rejected = 0
    for _ in range(300):
        records = _episodes_of("expert", [0], 40, rate, rng) + _episodes_of("a", range(5), 40, rate, rng)
        (row,) = paired_comparison(records, "expert", "a", ["w"])
        rejected += row.p_value < 0.05
    assert rejected / 300 <= 0.07, rejected  # counting the pairs: ~0.22; the per-episode sign test at 0.8: ~0.86


def test_the_stratified_exact_test_is_mcnemars_with_one_pair_per_set_and_refuses_impossible_counts():
    from liquid_control.stats import mcnemar_exact_p, stratified_exact_p

    for only_a in range(12):
        for only_b in range(12):
            strata = [(1, 1, 0, 1)] * only_a + [(0, 1, 1, 1)] * only_b + [(1, 1, 1, 1), (0, 1, 0, 1)]
            assert stratified_exact_p(strata) == pytest.approx(mcnemar_exact_p(only_a, only_b), rel=1e-9, abs=1e-15)
    # one set of 1 against 5 (the expert's success, 2 of 5 seeds): P(A's success | 3 successes of 6) = 3/6, a
    # two-sided p of 1; four such sets: A's count is Binomial(4, 1/2), all four its way p = 2/16
    assert stratified_exact_p([(1, 1, 2, 5)]) == pytest.approx(1.0)
    assert stratified_exact_p([(1, 1, 2, 5)] * 4) == pytest.approx(0.125)
    assert stratified_exact_p([(1, 1, 5, 5), (0, 1, 0, 5)]) == 1.0  # no set with information
    with pytest.raises(ValueError, match="successes outside their trials"):
        stratified_exact_p([(2, 1, 0, 5)])


def test_the_report_pairs_the_expert_with_every_training_seed(seed_checkpoints, tmp_path):
    from liquid_control.evaluation.plan import build_plan
    from liquid_control.evaluation.report import write_report

    p = seed_checkpoints
    plan = build_plan(["expert", f"cfc={p[0]},{p[1]}"], ["in_distribution"], 4)
    assert {j.training_seed for j in plan.jobs if j.policy == "expert"} == {0}
    base = plan.episode_seeds[0]
    k = {("expert", 0): 4, ("cfc", 0): 1, ("cfc", 1): 3}
    records = [
        dict(r, episode_seed=j.episode_seed)
        for j in plan.jobs
        for r in episodes(j.policy, {j.training_seed: k[(j.policy, j.training_seed)]}, j.shift, n=4)
        if r["episode_seed"] == j.episode_seed - base
    ]
    text = open(
        write_report(plan, records, str(tmp_path), "", example=False, saliency=False, paired=[("expert", "cfc")])
    ).read()
    assert "| in_distribution | 8 | 100% | 50% | 3 | 0 |" in text  # episode seeds 1-3 (0: a tie of 2 and 2)
    assert "`expert` has no training seeds, so each of its episodes is paired with that episode of every" in text
    assert "## Comparisons over training seeds" not in text  # the expert's seed 0 is no seed to pair with


def test_the_expert_has_no_comparison_over_training_seeds():
    """The expert's records carry a placeholder training seed 0: paired with cfc's seed 0 it printed
    `| expert | cfc | visual | 1 (of expert: 1, cfc: 5) | 100% | 17% | +83 pts` (cfc at 70% over its seeds)."""
    records = episodes("expert", {0: 30}, "winter") + episodes("cfc", {0: 5, 1: 25, 2: 25, 3: 25, 4: 25}, "winter")
    records += episodes("gru", {0: 10, 1: 10}, "winter")
    rows = compare_over_seeds(records, [("expert", "cfc"), ("cfc", "gru"), ("gru", "expert")], ["winter"])
    assert [(r.a, r.b, r.seeds) for r in rows] == [("cfc", "gru", 2)]
    assert compare_over_seeds(records, [("expert", "cfc")], ["winter"], seedless=()) != []  # what the rule drops


# ------------------------------------------------------------------------------- intervals of a difference


def test_an_interval_excludes_zero_exactly_where_the_row_is_bold():
    """Before: per-comparison 95% t intervals beside Holm-adjusted bold marks: of 8 comparisons, +15 pts
    [+7, +24] (p 0.0077) printed without bold (Holm p 0.054), an interval excluding 0 for a difference the
    correction does not find. Now every interval is at 1 - 0.05/m (all m together at 95%) and the p-values are
    Bonferroni's: an interval excludes 0 exactly where p (Bonferroni) < 0.05, the row's bold."""
    rng = np.random.default_rng(3)
    records = episodes("A", {s: 15 + d for s, d in enumerate([5, 2, 7, 3, 6])}) + episodes(
        "B", dict.fromkeys(range(5), 15)
    )
    records += episodes("S", {s: 15 + d for s, d in enumerate([5, 4, 7, 5, 4])}) + episodes(
        "T", dict.fromkeys(range(5), 15)
    )
    pairs = [("A", "B"), ("S", "T")]
    for i in range(6):  # no difference: each seed's rate drawn alike
        records += episodes(f"C{i}", dict(enumerate(rng.integers(10, 20, 5)))) + episodes(
            f"D{i}", dict(enumerate(rng.integers(10, 20, 5)))
        )
        pairs.append((f"C{i}", f"D{i}"))
    rows = compare_over_seeds(records, pairs, ["in_distribution"])
    moderate, strong = rows[:2]
    assert moderate.p_value == pytest.approx(0.0077, abs=5e-5) and moderate.p_bonferroni == pytest.approx(
        8 * moderate.p_value
    )
    assert moderate.ci[0] < 0 < moderate.ci[1]  # simultaneous: the 8 intervals together at 95%
    assert paired_seed_test(np.array([5, 2, 7, 3, 6]) / 30)[1] > 0  # its 95% interval alone excludes 0
    assert strong.p_bonferroni < 0.05 and strong.ci[0] > 0
    table = _comparison_table(rows)[2:]
    for row, line in zip(rows, table):
        assert (row.ci[0] > 0 or row.ci[1] < 0) == (row.p_bonferroni < 0.05) == ("**" in line), line
    # at random: differences from nothing to large, families of 1 to 40 tests
    for trial in range(40):
        m = int(rng.integers(1, 41))
        family = [rng.normal(rng.uniform(0, 0.3), rng.uniform(0.02, 0.2), int(rng.integers(2, 8))) for _ in range(m)]
        p = [paired_seed_test(d)[3] for d in family]
        for d, p_one in zip(family, p):
            _, lo, hi, _ = paired_seed_test(d, confidence=1 - 0.05 / m)
            assert (lo > 0 or hi < 0) == (min(1, m * p_one) < 0.05), (trial, d, m * p_one)


def test_a_tie_has_no_interval_and_a_difference_interval_stays_within_100_points():
    """Before: a tie printed the zero-width '[+33, +33]' (the report says such a row has no interval), and two
    seeds' t interval ran to [-543, +643] points."""
    assert paired_seed_test([10 / 30] * 5) == (pytest.approx(1 / 3), None, None, 0.0625)
    records = episodes("A", {0: 20, 1: 25, 2: 12, 3: 18, 4: 22}) + episodes("B", {0: 10, 1: 15, 2: 2, 3: 8, 4: 12})
    records += episodes("E", {0: 29, 1: 1}) + episodes("F", {0: 0, 1: 0})
    records += episodes("G", {0: 20, 1: 25, 2: 12}) + episodes("H", {0: 10, 1: 14, 2: 3})
    tie, wide, narrow = compare_over_seeds(records, [("A", "B"), ("E", "F"), ("G", "H")], ["in_distribution"])
    assert tie.ci is None and tie.p_value == 0.0625 and tie.difference == pytest.approx(1 / 3)
    assert wide.ci == (-1.0, 1.0) and wide.difference == pytest.approx(0.5)
    lo, hi = paired_seed_test([10 / 30, 11 / 30, 9 / 30], confidence=1 - 0.05 / 3)[1:3]  # one of 3 tests
    assert narrow.ci == pytest.approx((lo, hi)) and -1 < lo < hi < 1  # inside the bounds: as computed
    table = _comparison_table([tie, wide])
    assert "| +33 pts [n/a] | 0.0625 |" in table[2] and "| +50 pts [-100, +100] | 0.478 |" in table[3]


def test_the_near_tie_example_of_the_docs_is_possible_and_its_p_value_is_the_tests():
    """Before: docs/ood.md gave two seeds at -29 and -30 points 't-test p 0.009': -29 points is no rate of 30
    episodes, and the test gives 0.0108 for them."""
    import pathlib
    import re

    text = " ".join((pathlib.Path(__file__).parents[1] / "docs" / "ood.md").read_text().split())
    found = re.search(r"two seeds at (-\d+) and (-\d+) points[^:]*: t-test p ([\d.]+)", text)
    assert found, "the near-tie example of 'Reading the report' is gone"
    points, p = [int(x) for x in found.group(1, 2)], float(found.group(3))
    counts = [round(-x * 30 / 100) for x in points]  # successes of 30 episodes the differences stand for
    assert [round(-100 * k / 30) for k in counts] == points, f"{points} points: not differences of rates of 30"
    assert f"{paired_seed_test([-k / 30 for k in counts])[3]:.2g}" == f"{p:.2g}"


# ----------------------------------------------------------------------------------- a non-finite value


@pytest.mark.parametrize("field,value", [("return", float("nan")), ("smoothness", float("inf"))])
def test_a_non_finite_return_names_its_episode(field, value):
    """Before: one NaN return stopped the whole report with 'bootstrap_mean_interval: values contain NaN or
    Inf', naming no policy, shift or episode."""
    from liquid_control.evaluation.errors import EvaluationSetupError
    from liquid_control.evaluation.summary import summarize

    records = episodes("cfc", {0: 3, 4: 2}, "fog", n=5)
    records[7][field] = value
    with pytest.raises(EvaluationSetupError) as caught:
        summarize(records, ["cfc"], ["fog"])
    message = str(caught.value)
    assert f"policy 'cfc', shift 'fog', training seed 4, episode seed 2 has {field} {value}" in message


# ------------------------------------------------------------------------ the seed-then-episode bootstrap


def reference_two_stage(outcomes, resamples, seed, confidence=0.95):
    """The two-stage bootstrap written out (Davison & Hinkley 1997, 3.8): seeds with replacement, then the
    episodes of each drawn seed, each draw on its own."""
    rng = np.random.default_rng(seed)
    seeds = [[np.asarray(x, dtype=float) for x in strata] for strata in outcomes]
    stats = []
    for _ in range(resamples):
        slots = rng.integers(0, len(seeds), len(seeds))
        stats.append(np.mean([np.mean([x[rng.integers(0, x.size, x.size)].mean() for x in seeds[s]]) for s in slots]))
    alpha = (1 - confidence) / 2
    return tuple(np.quantile(stats, [alpha, 1 - alpha]))


def test_a_seed_drawn_twice_resamples_its_episodes_twice():
    """Five seeds, each 5 of 10 episodes: no seed-to-seed spread, the spread is the episodes'. Each of the 5
    slots of a replicate averages 10 fresh draws: sd sqrt(0.25 / 50) = 0.071, a 95% interval ~0.28 wide.
    Before: a seed drawn twice copied one resample into both slots, sd 0.095 and ~0.36 wide."""
    from liquid_control.stats import hierarchical_bootstrap_interval

    outcomes = [[[1] * 5 + [0] * 5] for _ in range(5)]
    mean, lo, hi = hierarchical_bootstrap_interval(outcomes, resamples=20000)
    assert mean == 0.5 and hi - lo == pytest.approx(2 * 1.96 * np.sqrt(0.25 / 50), abs=0.025)
    assert hierarchical_bootstrap_interval(outcomes) == hierarchical_bootstrap_interval(outcomes)  # fixed seed
    # seeds of unequal episode counts and several strata: the written-out method's interval
    rng = np.random.default_rng(4)
    uneven = [[rng.random(n) < p, rng.random(m) < p / 2] for n, m, p in [(30, 10, 0.5), (12, 25, 0.7), (20, 20, 0.3)]]
    mean, lo, hi = hierarchical_bootstrap_interval(uneven, resamples=8000, seed=1)
    assert mean == pytest.approx(np.mean([np.mean([np.mean(x) for x in strata]) for strata in uneven]))
    assert (lo, hi) == pytest.approx(reference_two_stage(uneven, 8000, seed=2), abs=0.015)


def _report_sized_outcomes():
    """10 training seeds: 500 episodes each (one stratum), and 450-495 plus 30-39 episodes (two strata)."""
    rng = np.random.default_rng(25)
    equal = [[rng.random(500) < p] for p in rng.uniform(0.2, 0.9, 10)]
    rates = rng.uniform(0.2, 0.9, 10)
    uneven = [[rng.random(450 + 5 * s) < p, rng.random(30 + s) < p / 2] for s, p in enumerate(rates)]
    return equal, uneven


# the intervals the bootstrap gave when it drew all replicates at once (before it drew them in blocks): the
# committed reports' numbers depend on these being reproduced to the last bit
ONE_DRAW_EQUAL = ("0x1.a7ef9db22d0e6p-2", "0x1.2b33daf8df7a5p-2", "0x1.1ba8826aa8eb4p-1")
ONE_DRAW_UNEVEN = ("0x1.8dc98ca5c1832p-2", "0x1.271bdfe5ec057p-2", "0x1.fe785a609957fp-2")


@pytest.mark.parametrize("block_elements", [None, 1, 4999, 1 << 40])
def test_the_bootstrap_drawn_in_blocks_is_the_one_draw_bootstrap_to_the_last_bit(block_elements, monkeypatch):
    """Drawing the episodes a block of replicates at a time keeps the generator's order: the same numbers as one
    draw for all replicates, whatever the block (one replicate, a block that does not divide 1999, all)."""
    from liquid_control import stats

    if block_elements is not None:
        monkeypatch.setattr(stats, "BOOTSTRAP_BLOCK_ELEMENTS", block_elements)
    equal, uneven = _report_sized_outcomes()
    assert [v.hex() for v in stats.hierarchical_bootstrap_interval(equal, seed=0)] == list(ONE_DRAW_EQUAL)
    got = stats.hierarchical_bootstrap_interval(uneven, resamples=1999, seed=3)
    assert [v.hex() for v in got] == list(ONE_DRAW_UNEVEN)


def test_the_bootstrap_at_10_seeds_of_500_episodes_holds_a_few_mb_not_150():
    """Before: index and value arrays of shape (2000 replicates, 10 seeds, 500 episodes) at once, a peak of
    153 MiB (161 MiB with unequal episode counts); now a block of replicates at a time, ~5 MiB."""
    import tracemalloc

    from liquid_control.stats import hierarchical_bootstrap_interval

    for outcomes in _report_sized_outcomes():
        tracemalloc.start()
        try:
            hierarchical_bootstrap_interval(outcomes)
            peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
        finally:
            tracemalloc.stop()
        assert peak_mib < 16


@pytest.mark.parametrize("only_a,only_b", [(600, 600), (500, 700), (20, 1500)])
def test_mcnemar_exact_p_of_over_a_thousand_discordant_pairs(only_a, only_b):
    # 2.0**n overflowed past 1023 pairs (OverflowError in the report, after every episode had run)
    from scipy.stats import binom

    want = min(1.0, 2.0 * binom.cdf(min(only_a, only_b), only_a + only_b, 0.5))
    assert mcnemar_exact_p(only_a, only_b) == pytest.approx(want, rel=1e-9, abs=1e-300)


def test_mcnemar_exact_p_is_the_exact_dyadic_value_as_the_seed_comparisons_sign_flip_p():
    """Before: summed in log space, 6 discordant pairs all one way gave 0.031250000000000014, printed 0.0313 in the
    same report where the seed comparisons' exact sign-flip p of 6 seeds, 2/2^6, printed 0.0312 (found by a probe
    of the report statistics). Every p of up to 60 pairs is now the exact binomial tail, correctly rounded."""
    from fractions import Fraction
    from math import comb

    from liquid_control.stats import format_p, paired_seed_test

    assert mcnemar_exact_p(6, 0) == 0.03125 == paired_seed_test([0.5] * 6)[3]
    assert format_p(mcnemar_exact_p(0, 6)) == "0.0312"
    for n in range(1, 61):
        for a in range(n + 1):
            exact = min(Fraction(1), Fraction(2 * sum(comb(n, i) for i in range(min(a, n - a) + 1)), 2**n))
            assert mcnemar_exact_p(a, n - a) == float(exact), (a, n - a)


@pytest.mark.parametrize("k,n,p", [(5, 12, 0.636), (500, 1200, 0.3), (380, 1200, 0.3), (0, 2000, 0.001), (3, 8, 0.0)])
def test_binomial_cdf_is_the_one_in_stats_and_holds_for_thousands_of_trials(k, n, p):
    # the model card's check threshold and McNemar's test sum the same binomial tail: one implementation
    from scipy.stats import binom

    from liquid_control.training import model_card

    assert model_card.binomial_cdf is binomial_cdf
    assert binomial_cdf(k, n, p) == pytest.approx(binom.cdf(k, n, p), rel=1e-9, abs=1e-15)


def test_binomial_cdf_refuses_a_probability_outside_0_1():
    with pytest.raises(ValueError, match="binomial_cdf: p must be in"):
        binomial_cdf(1, 4, 1.5)


def test_an_interval_holds_its_own_estimate_at_0_and_n_and_rates_print_as_neither_unless_they_are():
    """An audit: Wilson's upper end at 30/30 was 0.9999999999999999 (the interval left its own estimate, as scipy's
    does not), and a report printed 449 of 450 as 100% (beside 99% [96%, 100%] for one of its cells) and 1/450 as 0%."""
    from liquid_control.evaluation.report import _pct
    from liquid_control.stats import wilson_interval

    for n in range(1, 400):
        assert wilson_interval(n, n)[1] == 1.0 and wilson_interval(0, n)[0] == 0.0
    assert [_pct(x) for x in (0.0, 1.0, 0.5, 149 / 150, 0.995, 449 / 450, 1 / 450)] == [
        "0%",
        "100%",
        "50%",
        "99%",
        "99.5%",
        "99.8%",
        "0.2%",
    ]
