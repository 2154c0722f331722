"""Keep the best of several training seeds, chosen on in-distribution validation episodes: what does it buy
under shift? A check on the headline experiment's five seeds per policy.

    python scripts/seed_selection.py [--train DIR] [--report CSV] [--episodes 50] [--episode-seed-base 30000000]
                                     [--workers 2] [--check-without-seed 0] [--out runs/seed_selection]

A training run's outcome is a draw (docs/seed_factors/), and a user training a policy for a robot can afford
several. This drives every trained policy under --train on `--episodes` validation episodes of the training
distribution only (`in_distribution`; episode seeds from `--episode-seed-base`, checked to lie apart from the
report's and from every training episode's), keeps per policy the seed that reaches the target most often (a tie:
the tied seeds share the choice equally), and reads that seed's success on the report's test episodes (every
shift of the report, none of which the choice saw) against the mean of the seeds (one seed drawn at random) and
the best seed on the test episodes themselves (an oracle, for scale). The same choice without one seed
(`--check-without-seed`, default 0: the seed every architecture shares a lead with) shows how much of the gain
is that seed's. Writes validation/ (the `liquid-control eval` report of the validation episodes), results.json
and results.md under --out; a validation/ already there is reused if it holds exactly these episodes, of the
checkpoints under --train (else continued by `eval --resume`, which keeps those checkpoints' episodes). Ctrl-C (or
SIGTERM) keeps the validation episodes finished so far: the same command again continues them.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


PROG = "seed_selection.py"


def _fail(message: str) -> None:
    sys.exit(f"{PROG}: {message}")


def _interrupted(exc: KeyboardInterrupt, validation_dir: Path) -> int:
    """Ctrl-C's or SIGTERM's one line: what is kept and how to go on; 130, or 143 for SIGTERM."""
    from liquid_control.processes import Terminated

    if (validation_dir / "results.csv").is_file():
        kept = f"the validation episodes are complete in {validation_dir}; the same command again writes the tables"
    else:
        kept = f"the finished validation episodes are kept in {validation_dir}; the same command again continues them"
    print(f"{PROG}: {'terminated' if isinstance(exc, Terminated) else 'interrupted'}: {kept}", file=sys.stderr)
    return 143 if isinstance(exc, Terminated) else 130


def _success(path: Path, fail=_fail) -> tuple[dict, set]:
    """{(policy, training seed, shift): [success per episode]} and the episode seeds, of a report's results.csv;
    ``fail``: how an unreadable one ends (a --report given: a usage error, exit 2)."""
    wins: dict = defaultdict(list)
    episode_seeds = set()
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row["policy"] != "expert":
                    wins[row["policy"], int(row["training_seed"]), row["shift"]].append(row["success"] == "True")
                    episode_seeds.add(int(row["episode_seed"]))
    except (OSError, KeyError, ValueError) as exc:
        fail(f"{path}: not a liquid-control eval results.csv ({exc})")
    return wins, episode_seeds


def _made_by_other_checkpoints(validation_dir: Path, train: Path) -> bool:
    """Whether a kept validation results.csv holds episodes of another checkpoint than the one now under ``train``
    at ``<policy>/seed_<k>/policy.pt`` (its ``checkpoint_sha``): a --train of other policies under the same names
    chose and scored seeds on the old ones' validation. A row without the column, or a policy not there, is not
    checked."""
    from liquid_control.runtime.backends import checkpoint_sha256

    current: dict = {}
    with open(validation_dir / "results.csv", newline="") as f:
        for row in csv.DictReader(f):
            policy = train / row.get("policy", "") / f"seed_{row.get('training_seed')}" / "policy.pt"
            if row.get("checkpoint_sha") and row.get("policy") != "expert" and policy.is_file():
                if policy not in current:
                    current[policy] = checkpoint_sha256(policy)[:12]
                if row["checkpoint_sha"] != current[policy]:
                    return True
    return False


def _rates_by_group(wins: dict) -> tuple[dict, list]:
    """{(policy, seed, group)}: success pooled as the report pools it (``summary.shift_groups``, each shift of a
    group weighing the same, the seeds that ran every shift of it), plus "all" over every shift; and the groups."""
    from liquid_control.evaluation.summary import outcomes_by_seed, shift_groups

    records = [
        {"policy": policy, "training_seed": seed, "shift": shift, "success": won}
        for (policy, seed, shift), outcomes in wins.items()
        for won in outcomes
    ]
    shifts = sorted({shift for _, _, shift in wins})
    groups = {**shift_groups(shifts), "all": shifts}
    rates = {}
    for policy in sorted({policy for policy, _, _ in wins}):
        for group, members in groups.items():
            for seed, outcomes in outcomes_by_seed(records, policy, members).items():
                rates[policy, seed, group] = float(sum(o.mean() for o in outcomes) / len(outcomes))
    return rates, list(groups)


def _choose(validation: dict, test: dict, policies: list, groups: list, without: int | None = None) -> dict:
    """Per policy: the seeds kept on validation success and their test success against the mean and best seed."""
    rows = {}
    for policy in policies:
        seeds = sorted(s for p, s in validation if p == policy and s != without)
        if not seeds:
            continue
        best = max(validation[policy, s] for s in seeds)
        kept = [s for s in seeds if validation[policy, s] == best]
        row = {"validation": {s: validation[policy, s] for s in seeds}, "kept": kept}
        for group in groups:
            rates = [test[policy, s, group] for s in seeds]
            row[group] = {
                "kept": sum(test[policy, s, group] for s in kept) / len(kept),
                "mean_of_seeds": sum(rates) / len(rates),
                "best_seed_on_test": max(rates),
            }
        rows[policy] = row
    return rows


def _summary(rows: dict, groups: list) -> dict:
    from liquid_control.evaluation.report import FLOAT_NOISE
    from liquid_control.stats import mcnemar_exact_p  # the exact two-sided binomial (sign) test

    summary = {}
    for group in groups if rows else []:  # no rows: a policy with one seed has nothing to choose without it
        gains = [r[group]["kept"] - r[group]["mean_of_seeds"] for r in rows.values()]
        # a kept seed as good as the mean is neither (before: 0.1 against (0.1 + 0.1 + 0.1) / 3, -1.4e-17, lost)
        gaining, losing = sum(g > FLOAT_NOISE for g in gains), sum(g < -FLOAT_NOISE for g in gains)
        summary[group] = {
            "mean_gain_points": 100 * sum(gains) / len(gains),
            "policies_gaining": gaining,
            "policies_losing": losing,
            "sign_test_p": mcnemar_exact_p(gaining, losing),
            "kept_is_best_on_test": sum(r[group]["kept"] == r[group]["best_seed_on_test"] for r in rows.values()),
        }
    return summary


def _correlation(validation: dict, wins: dict, policies: list) -> dict:
    """How well a seed's validation success predicts its success under the shifts (each shift weighing the same),
    across the seeds of a policy."""
    shifted: dict = defaultdict(list)
    for (policy, seed, shift), outcomes in wins.items():
        if shift != "in_distribution":
            shifted[policy, seed].append(sum(outcomes) / len(outcomes))
    within = []
    for policy in policies:
        seeds = sorted(s for p, s in validation if p == policy)
        x = [validation[policy, s] for s in seeds]
        y = [statistics.mean(shifted[policy, s]) for s in seeds]
        if len(seeds) > 2 and len(set(x)) > 1 and len(set(y)) > 1:
            within.append(statistics.correlation(x, y))
    return {"median_within_policies": statistics.median(within), "range": [min(within), max(within)]} if within else {}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_train, default_report = ROOT / "docs/ood_report/headline_run/train", ROOT / "docs/ood_report/results.csv"
    parser.add_argument("--train", type=Path, default=default_train, help=f"trained policies (default {default_train})")
    parser.add_argument(
        "--report", type=Path, default=default_report, help=f"their test episodes (default {default_report})"
    )
    parser.add_argument("--episodes", type=int, default=50, help="validation episodes per seed (default 50)")
    parser.add_argument(
        "--episode-seed-base", type=int, default=30_000_000, help="first validation seed (default 30000000)"
    )
    parser.add_argument("--workers", type=int, default=2, help="evaluation processes (default 2)")
    parser.add_argument("--check-without-seed", type=int, default=0, help="the choice again without it (default 0)")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/seed_selection"), help="output (default runs/seed_selection)"
    )
    args = parser.parse_args(argv)
    from liquid_control.training.episodes import SELECTION_SEED_BASE

    # usage errors, all before the episodes: exit 2 as argparse's own (before: exit 1; --workers 0 failed in the
    # evaluation, and a --check-without-seed no policy has printed the full table again as the check)
    wins, test_seeds = _success(args.report, parser.error)
    wanted = set(range(args.episode_seed_base, args.episode_seed_base + args.episodes))
    for option in ("episodes", "workers"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be >= 1, got {getattr(args, option)}")
    if args.episode_seed_base < SELECTION_SEED_BASE:
        parser.error(
            f"--episode-seed-base {args.episode_seed_base}: the validation episodes must start at "
            f"{SELECTION_SEED_BASE:,} or above (training episodes lie below)"
        )
    if wanted & test_seeds:
        parser.error(
            f"--episode-seed-base {args.episode_seed_base} with --episodes {args.episodes}: the validation episodes "
            f"must avoid the report's episode seeds ({min(test_seeds):,}-{max(test_seeds):,})"
        )
    seeds = sorted({seed for _, seed, _ in wins})
    if args.check_without_seed not in seeds:
        parser.error(
            f"--check-without-seed {args.check_without_seed}: no policy of {args.report} has that training seed "
            f"(its seeds: {', '.join(map(str, seeds)) or 'none'})"
        )
    from liquid_control.paths import output_file_problem
    from liquid_control.processes import sigterm_as_interrupt

    problem = output_file_problem(args.out / "results.json", "results.json")  # before the episodes
    if problem:
        parser.error(f"--out {args.out}: {problem}")
    validation_dir = args.out / "validation"
    if not (validation_dir / "results.csv").is_file() and not any(args.train.glob("*/seed_*")):
        parser.error(f"--train {args.train}: no trained policies there (<policy>/seed_<k>/policy.pt)")
    try:
        with sigterm_as_interrupt(PROG):  # `kill` stops it as Ctrl-C does
            return _select(args, argv, wins, wanted, validation_dir)
    except KeyboardInterrupt as exc:
        return _interrupted(exc, validation_dir)


def _select(args, argv, wins: dict, wanted: set, validation_dir: Path) -> int:
    """The validation episodes (run where validation_dir lacks them, or where its episodes were run by other
    checkpoints than those under --train: ``eval --resume`` keeps the logged episodes of these very checkpoints, by
    SHA-256, and runs the rest), the choice, and the tables written."""
    from liquid_control.atomic_file import atomic_write
    from liquid_control.processes import EXIT_BROKEN_PIPE, Terminated

    started = time.monotonic()
    if not (validation_dir / "results.csv").is_file() or _made_by_other_checkpoints(validation_dir, args.train):
        policies = sorted(p.name for p in args.train.iterdir() if p.is_dir())  # some there: main checked
        from liquid_control import cli

        command = ["eval", "--shift", "in_distribution"]
        command += ["--episodes", str(args.episodes), "--episode-seed-base", str(args.episode_seed_base)]
        command += ["--workers", str(args.workers), "--no-saliency", "--no-example", "--no-progress", "--resume"]
        command += ["--out", str(validation_dir)]
        for name in policies:
            command += ["--policy", f"{name}={args.train / name}/seed_*/policy.pt"]
        # in this process, so a Ctrl-C or SIGTERM stops the evaluation once, which keeps what finished and says so
        # (a child process was killed 0.25 s after a Ctrl-C by subprocess.run, and went on alone after a SIGTERM)
        status = cli.main(command)
        if status == EXIT_BROKEN_PIPE:  # the reader of stdout went away (`| head`): so does this script, quietly
            return status
        if status in (130, 143):
            raise Terminated if status == 143 else KeyboardInterrupt
        if status != 0:
            _fail(f"the validation episodes did not finish (rerun to continue them in {validation_dir})")
    val_wins, val_seeds = _success(validation_dir / "results.csv")
    if val_seeds != wanted or {shift for _, _, shift in val_wins} != {"in_distribution"}:
        _fail(f"{validation_dir} holds other episodes than --episodes/--episode-seed-base ask for; remove it first")
    validation = {(p, s): sum(v) / len(v) for (p, s, _), v in val_wins.items()}
    test, groups = _rates_by_group(wins)
    missing = sorted({(p, s) for p, s in validation} - {(p, s) for p, s, _ in test})
    if missing:
        _fail(f"{args.report} has no test episodes of {', '.join(f'{p} seed {s}' for p, s in missing)}")
    policies = sorted({p for p, _ in validation})
    rows = _choose(validation, test, policies, groups)
    check = _choose(validation, test, policies, groups, without=args.check_without_seed)
    provenance = json.loads((validation_dir / "provenance.json").read_text())
    results = {
        "provenance": {
            "command": " ".join(["python scripts/seed_selection.py", *(argv if argv is not None else sys.argv[1:])]),
            "validation_episode_seeds": [min(wanted), max(wanted)],
            "validation_wall_time_s": provenance.get("wall_time_s"),
            "validation_cpu_time_s": provenance.get("cpu_time_s"),
            "this_call_wall_s": round(time.monotonic() - started, 1),
        },
        "policies": rows,
        "summary": _summary(rows, groups),
        f"summary_without_seed_{args.check_without_seed}": _summary(check, groups),
        "validation_against_shifted_success": _correlation(validation, wins, policies),
    }
    lines = [
        "| policy | validation success per seed | kept | "
        + " | ".join(f"{g}: kept / mean / best" for g in groups)
        + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in groups) + " |",
    ]
    for policy, row in rows.items():
        cells = [
            " / ".join(f"{100 * row[g][x]:.0f}" for x in ("kept", "mean_of_seeds", "best_seed_on_test")) for g in groups
        ]
        per_seed = ", ".join(f"{s}: {100 * v:.0f}" for s, v in row["validation"].items())
        kept = ", ".join(str(s) for s in row["kept"])
        lines.append(f"| {policy} | {per_seed} | {kept} | " + " | ".join(cells) + " |")
    for title, key in (
        ("every seed", "summary"),
        (f"without seed {args.check_without_seed}", f"summary_without_seed_{args.check_without_seed}"),
    ):
        if not results[key]:
            continue
        lines += [
            "",
            f"Kept seed against the mean of seeds, {title}:",
            "",
            "| shifts | mean gain | policies gaining / losing (sign test) | kept seed = best on the test |",
            "| --- | ---: | --- | ---: |",
        ]
        for group, s in results[key].items():
            lines.append(
                f"| {group} | {s['mean_gain_points']:+.1f} pts | {s['policies_gaining']} / {s['policies_losing']} "
                f"(p = {s['sign_test_p']:.2g}) | {s['kept_is_best_on_test']} of {len(rows)} |"
            )
    corr = results["validation_against_shifted_success"]
    if corr:
        lines += [
            "",
            "Validation success against success over the shifts, across the seeds of a policy: correlation "
            f"{corr['median_within_policies']:.2f} (median over policies; "
            f"{corr['range'][0]:.2f} to {corr['range'][1]:.2f}).",
        ]
    for name, text in (("results.json", json.dumps(results, indent=1)), ("results.md", "\n".join(lines))):
        try:
            with atomic_write(args.out / name, "w") as handle:  # whole or not at all, also on Ctrl-C or a full disk
                handle.write(text + "\n")
        except OSError as exc:
            _fail(f"cannot write {exc.filename or args.out / name}: {exc.strerror or exc}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    from liquid_control.processes import exit_status_of

    sys.exit(exit_status_of(PROG, main))
