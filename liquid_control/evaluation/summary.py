"""The numbers of a report: success per policy and shift over training seeds, pooled groups, comparisons.

The unit of the statistics is the training seed (`stats`, "training seeds"): a policy's success under a
shift is the mean of its seeds' success rates, with a 95% interval from resampling seeds, then episodes
within each seed (widened to the pooled episodes' Wilson interval where that is wider, as at 0% or 100%);
architectures are compared by the per-seed differences (a paired t-test over seeds), all comparisons of a report
Bonferroni-corrected together, p-values and intervals alike. Episode-level McNemar tests remain for `--paired`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from liquid_control.evaluation.errors import EvaluationSetupError
from liquid_control.evaluation.plan import EXPERT, unique_pairs
from liquid_control.evaluation.shifts import shift_group
from liquid_control.stats import (
    bonferroni_adjust,
    bootstrap_mean_interval,
    paired_seed_test,
    stratified_exact_p,
    success_interval,
)

GROUP_ORDER = ["in-distribution", "visual", "sensor", "dynamics"]
FAMILY_ALPHA = 0.05  # the family-wise error rate of a report's comparisons over training seeds


@dataclass
class CellSummary:
    """All episodes of one policy under one shift, by training seed."""

    policy: str
    shift: str
    n: int
    successes: int
    success_rate: float  # mean over training seeds of the seeds' success rates
    success_ci: tuple[float, float]  # 95%: bootstrap over seeds then episodes, at least the pooled Wilson interval
    return_mean: float
    return_ci: tuple[float, float] | None
    smoothness_mean: float
    smoothness_ci: tuple[float, float] | None
    collision_rate: float
    mean_steps: float
    mean_sim_time_s: float
    per_seed_success: dict[int, float]


def outcomes_by_seed(records: list[dict], policy: str, shifts: list[str]) -> dict[int, list[np.ndarray]]:
    """Training seed -> [0/1 outcomes under each of ``shifts``], for the seeds that have all of them."""
    found: dict[int, dict[str, list[bool]]] = {}
    for r in records:
        if r["policy"] == policy and r["shift"] in shifts:
            found.setdefault(int(r["training_seed"]), {}).setdefault(r["shift"], []).append(bool(r["success"]))
    return {
        seed: [np.asarray(by_shift[s], dtype=np.float64) for s in shifts]
        for seed, by_shift in sorted(found.items())
        if all(s in by_shift for s in shifts)
    }


def check_finite(records: list[dict], fields=("return", "smoothness")) -> None:
    """Refuse a record whose return or smoothness is NaN or infinite, naming its episode: the report's means and
    intervals cannot use it (before: a bare 'values contain NaN or Inf' from the bootstrap, naming nothing)."""
    for r in records:
        for name in fields:
            value = float(r[name])
            if not np.isfinite(value):
                raise EvaluationSetupError(
                    f"the episode of policy {r['policy']!r}, shift {r['shift']!r}, training seed "
                    f"{r['training_seed']}, episode seed {r['episode_seed']} has {name} {value} (not a finite "
                    "number): the report cannot average it (the episode's record stays in the results log)"
                )


def summarize(records: list[dict], policies: list[str], shifts: list[str]) -> list[CellSummary]:
    """One CellSummary per policy and shift that has episodes, statistics over training seeds."""
    groups: dict[tuple[str, str], list[dict]] = OrderedDict(((p, s), []) for p in policies for s in shifts)
    for record in records:
        key = (record["policy"], record["shift"])
        if key in groups:
            groups[key].append(record)
    cells = []
    for (policy, shift), rows in groups.items():
        if not rows:
            continue
        check_finite(rows)
        by_seed = outcomes_by_seed(rows, policy, [shift])
        mean, lo, hi = success_interval(list(by_seed.values()))
        returns = np.array([float(r["return"]) for r in rows])
        smooth = np.array([float(r["smoothness"]) for r in rows])
        cells.append(
            CellSummary(
                policy=policy,
                shift=shift,
                n=len(rows),
                successes=int(sum(bool(r["success"]) for r in rows)),
                success_rate=mean,
                success_ci=(lo, hi),
                return_mean=float(returns.mean()),
                return_ci=bootstrap_mean_interval(returns),
                smoothness_mean=float(smooth.mean()),
                smoothness_ci=bootstrap_mean_interval(smooth),
                collision_rate=float(np.mean([bool(r["collision"]) for r in rows])),
                mean_steps=float(np.mean([r["steps"] for r in rows])),
                mean_sim_time_s=float(np.mean([r["sim_time_s"] for r in rows])),
                per_seed_success={s: float(v[0].mean()) for s, v in by_seed.items()},
            )
        )
    return cells


def shift_groups(shifts: list[str]) -> OrderedDict:
    """Report group -> its shifts (in-distribution, visual, sensor, dynamics, mixes last)."""
    found: dict[str, list[str]] = {}
    for shift in shifts:
        found.setdefault(shift_group(shift), []).append(shift)
    rank = lambda kv: (GROUP_ORDER.index(kv[0]) if kv[0] in GROUP_ORDER else len(GROUP_ORDER), kv[0])  # noqa: E731
    return OrderedDict(sorted(found.items(), key=rank))


@dataclass
class GroupSummary:
    """One policy over the shifts of one group (each shift weighted equally), over training seeds."""

    policy: str
    group: str
    shifts: list[str]
    mean: float
    ci: tuple[float, float]
    seeds: int


def summarize_groups(records: list[dict], policies: list[str], shifts: list[str]) -> list[GroupSummary]:
    """One GroupSummary per shift group and policy, over the seeds that ran every shift of the group."""
    out = []
    for group, members in shift_groups(shifts).items():
        for policy in policies:
            by_seed = outcomes_by_seed(records, policy, members)
            if by_seed:
                mean, lo, hi = success_interval(list(by_seed.values()))
                out.append(GroupSummary(policy, group, members, mean, (lo, hi), len(by_seed)))
    return out


@dataclass
class SeedComparison:
    """Policy A against B over the shifts of a group: differences of the success rates of the training seeds
    both ran (seed s of A against seed s of B). Fewer than two shared seeds: no test (``p_value`` None)."""

    a: str
    b: str
    group: str
    seeds: int  # training seeds paired: the seed numbers both policies ran every shift of the group with
    mean_a: float | None  # over the paired seeds (None: none shared)
    mean_b: float | None
    difference: float | None
    # simultaneous with the report's other intervals: each at 1 - FAMILY_ALPHA / (tests in the report), so it
    # excludes 0 exactly when p_bonferroni < FAMILY_ALPHA; within [-1, 1]; None: no test, or a tie (every seed's
    # difference the same)
    ci: tuple[float, float] | None
    p_value: float | None  # None: fewer than 2 paired seeds, no test
    p_bonferroni: float | None = None  # set by `compare_over_seeds` over the whole family of tests
    seeds_a: int = 0  # A's training seeds with every shift of the group (paired or not)
    seeds_b: int = 0

    @property
    def tested(self) -> bool:
        """Whether the row has a paired test (at least two shared training seeds)."""
        return self.p_value is not None


def compare_over_seeds(
    records: list[dict],
    pairs: list[tuple[str, str]],
    shifts: list[str],
    unrecorded: dict | None = None,
    seedless: frozenset | set | tuple = (EXPERT,),
) -> list[SeedComparison]:
    """Paired t-tests over training seeds for every pair and shift group, Bonferroni-corrected over all of them.

    Seed s of A is paired with seed s of B (the same demonstrations and evaluation episodes), only on the seed
    numbers both policies ran every shift of the group with; the others are left out (pairing them in order
    compared different seeds: identical policies with one seed missing came out -17 points, "significant").
    ``unrecorded``: policy -> seed numbers that stand in for a seed the checkpoint did not record
    (`plan.PolicySpec.unrecorded_seeds`): never paired. With fewer than two paired seeds a row has no test
    (``p_value`` None) and is not in the family. A pair with a ``seedless`` policy (the expert: its records'
    training seed 0 is a placeholder, see `paired_comparison`) has no row: its comparison is episode by episode.
    """
    unrecorded = unrecorded or {}
    rows, differences = [], []
    for group, members in shift_groups(shifts).items():
        for a, b in unique_pairs(pairs):  # a pair given twice (or as B, A) is one test of the family
            if a in seedless or b in seedless:
                continue
            seeds_a, seeds_b = outcomes_by_seed(records, a, members), outcomes_by_seed(records, b, members)
            unknown = set(unrecorded.get(a, ())) | set(unrecorded.get(b, ()))
            shared = sorted((set(seeds_a) & set(seeds_b)) - unknown)
            rate = lambda strata: float(np.mean([x.mean() for x in strata]))  # noqa: E731
            ra = np.array([rate(seeds_a[s]) for s in shared])
            rb = np.array([rate(seeds_b[s]) for s in shared])
            row = SeedComparison(
                a, b, group, len(shared), None, None, None, None, None, None, len(seeds_a), len(seeds_b)
            )
            if shared:
                row.mean_a, row.mean_b = float(ra.mean()), float(rb.mean())
                row.difference = row.mean_a - row.mean_b
            rows.append(row)
            differences.append(ra - rb)
    # Bonferroni, not Holm: its intervals are simultaneous and agree with its decisions (an interval excludes 0
    # exactly when the adjusted p is below FAMILY_ALPHA); Holm's step-down decisions have no such intervals.
    tests = sum(d.size >= 2 for d in differences)
    for row, d in zip(rows, differences):
        if d.size >= 2:
            diff, lo, hi, p = paired_seed_test(d, confidence=1.0 - FAMILY_ALPHA / tests)
            # a tie has no interval; a t interval of 2 or 3 seeds can run past what a difference of two
            # success rates can be (+50 pts [-543, +643] with two seeds): clipped to [-100, +100] pts
            ci = None if lo is None else (max(-1.0, lo), min(1.0, hi))
            row.difference, row.ci, row.p_value = diff, ci, p
    tested = [r for r in rows if r.tested]
    for row, adjusted in zip(tested, bonferroni_adjust([r.p_value for r in tested])):
        row.p_bonferroni = adjusted
    return rows


@dataclass
class PairedRow:
    """Policy A against policy B under one shift, on the same (training seed, episode seed) pairs."""

    shift: str
    pairs: int
    success_a: float
    success_b: float
    only_a: int  # episode seeds where A's success rate over their pairs is the higher (one pair each: only A won)
    only_b: int
    p_value: float  # exact conditional test stratified by episode seed (McNemar's with one pair per episode seed)


def paired_comparison(
    records: list[dict], a: str, b: str, shifts: list[str], seedless: frozenset | set | tuple = (EXPERT,)
) -> list[PairedRow]:
    """Pairs episodes of `a` and `b` by (shift, training seed, episode seed); unpaired episodes are left out.

    ``seedless``: policies without training seeds (the expert, the default: its records carry training seed 0,
    and no checkpoint can take its name). One of
    them is paired on the episode seed alone, with the episode of that seed of every training seed of the
    other (before: with the other's training seed 0 only, while the success table used all its seeds).

    The test's unit is the episode seed, not the pair: the pairs of one episode seed (one per training seed) share
    its layout, and the expert's one outcome, so they are not independent (McNemar's test on all pairs, an expert
    against 5 seeds of a policy as good as it, rejected at p < 0.05 in 22% of runs). The test is exact and
    conditional, stratified by episode seed (:func:`stratified_exact_p`; McNemar's with one pair per episode seed):
    at 2,000 simulated runs of equal policies it rejects in 1-4% at rates 0.5-0.99. ``only_a``/``only_b`` count the
    episode seeds where that side's success rate over the pairs is the higher.
    """
    outcome = {
        (r["policy"], r["shift"], int(r["training_seed"]), int(r["episode_seed"])): bool(r["success"]) for r in records
    }
    by_episode = {(p, shift, episode): v for (p, shift, _, episode), v in outcome.items() if p in seedless}

    def partner(policy, other, key):  # the outcome of `other` paired with `policy`'s episode `key`, or None
        _, shift, seed, episode = key
        if other in seedless:
            return by_episode.get((other, shift, episode))
        return outcome.get((other, shift, seed, episode))

    rows = []
    for shift in shifts:
        if a in seedless and b not in seedless:  # every training seed of b against a's one episode
            keys = [k for k in outcome if k[0] == b and k[1] == shift]
            pairs = [(k[3], partner(b, a, k), outcome[k]) for k in keys]
        else:
            keys = [k for k in outcome if k[0] == a and k[1] == shift]
            pairs = [(k[3], outcome[k], partner(a, b, k)) for k in keys]
        pairs = [(e, x, y) for e, x, y in pairs if x is not None and y is not None]
        if not pairs:
            continue
        sets: dict = {}  # episode seed -> (a's outcomes, b's outcomes) over its pairs: a seedless side's once
        for episode, x, y in pairs:
            outcomes = sets.setdefault(episode, ([], []))
            outcomes[0].append(x)
            outcomes[1].append(y)
        strata = [
            (sum(xs[:1]), 1, sum(ys), len(ys))
            if a in seedless
            else (sum(xs), len(xs), sum(ys[:1]), 1)
            if b in seedless
            else (sum(xs), len(xs), sum(ys), len(ys))
            for xs, ys in sets.values()
        ]
        only_a = sum(1 for sa, na, sb, nb in strata if sa / na > sb / nb)
        only_b = sum(1 for sa, na, sb, nb in strata if sa / na < sb / nb)
        rows.append(
            PairedRow(
                shift,
                len(pairs),
                float(np.mean([x for _, x, _ in pairs])),
                float(np.mean([y for _, _, y in pairs])),
                only_a,
                only_b,
                stratified_exact_p(strata),
            )
        )
    return rows
