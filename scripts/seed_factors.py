"""Why is one training seed better than another? The headline experiment's training seed taken apart.

    python scripts/seed_factors.py [--archs cfc,lstm,gru] [--seeds 0,1,2] [--split-seeds 0,1] [--episodes 30]
                                   [--workers 2] [--out runs/seed_factors]
                                   [--reference docs/ood_report/headline_run/train]

In both five-seed headline runs (docs/ood_report/), training seed 0 was the best of the five for 16 of the 20
policies. A run's training seed decides three things: the **initial weights** (`torch.manual_seed(seed)` before
the policy is built; the camera CNN, built first, starts the same in every architecture), the **order** (each
epoch's batches and the DAgger round's expert/policy mixing draws) and the **data** (`episodes.episode_seed`: the
worlds of the demonstration and DAgger episodes: start, target, obstacles, sensor noise and message timing).
Each run here trains one
architecture at the headline schedule with the three taken from seeds (I, B, D):

- the grid: every model seed M = I = B against every data seed D of `--seeds`;
- the split: every (I, B, D) of `--split-seeds` (a subset of `--seeds`) with I != B (the grid holds the others).

A run with I = B = D is the headline's own run: its weights are compared with those of `--reference` (when that
folder exists), which shows the seeds reach training the way they are meant to where this machine computes as the
one that trained it did: measured so on some machines, not on every one, and not with LIQUID_CONTROL_NATIVE=0
(docs/seed_factors/README.md); a run whose weights differ is another draw, not an error. Every policy then drives
the headline's 8 shifts x `--episodes` paired episodes (the report's evaluation seeds, 20,000,000 on), and success
over all 8 shifts is tabled by seed. A diagnostic: it changes nothing in training.

Writes train/, the `liquid-control eval` reports eval_grid/ and eval_split/, results.json and results.md under
--out (docs/seed_factors/ holds the results and reports of the committed run). Rerunning keeps the finished
runs, continues interrupted ones and keeps an evaluation folder whose results.csv is this request's; after
changing --archs, --seeds or --episodes it trains and evaluates only what is missing. Ctrl-C (or SIGTERM) keeps
what finished: the same command again continues.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")


PROG = "seed_factors.py"


def _name(arch: str, init: int, order: int, data: int) -> str:
    return f"{arch}_i{init}_b{order}_d{data}"


def _train(arch: str, init: int, order: int, data: int, out_dir: str) -> tuple[str, float | None]:
    """One headline-schedule run with seed ``order`` whose initial weights are drawn with seed ``init`` and whose
    episodes' worlds are those seed ``data`` would have collected. Returns (folder, CPU seconds; None: kept)."""
    if os.path.isfile(os.path.join(out_dir, "policy.pt")):
        return out_dir, None
    import torch

    import liquid_control.training.episodes as episodes
    import liquid_control.training.run as training_run
    import liquid_control.training.trainer as trainer
    from liquid_control.evaluation.experiment import FULL_SCHEDULE_MINUTES, config_path, training_overrides
    from liquid_control.processes import keep_freed_memory
    from liquid_control.training import train

    keep_freed_memory()
    original_seed, original_policy = episodes.episode_seed, trainer.Policy

    def data_episode_seed(seed: int, round_index: int, episode: int) -> int:
        return original_seed(data, round_index, episode)

    def policy_drawn_with_init_seed(config):
        # fork_rng puts torch's stream back to where the order seed left it, as if no weights had been drawn;
        # nothing draws from that stream before the first epoch seeds its own (training.run.epoch_torch_seed)
        with torch.random.fork_rng():
            torch.manual_seed(init)
            return original_policy(config)

    # The places that name a world's seed, patched in this process: train() collects the episodes here
    # (workers=1, its default; episode workers of their own would not see the patch).
    episodes.episode_seed = trainer.episode_seed = training_run.episode_seed = data_episode_seed
    if init != order:
        trainer.Policy = training_run.Policy = policy_drawn_with_init_seed
    cpu = time.process_time()
    try:
        train(
            config_path(arch),
            out_dir,
            seed=order,
            resume=os.path.exists(os.path.join(out_dir, "checkpoint.pt"))
            or os.path.isdir(os.path.join(out_dir, "data")),
            overrides=training_overrides(arch, FULL_SCHEDULE_MINUTES, schedule="headline"),
            progress=False,
            threads=1,
            log=lambda line: None,
            command=f"scripts/seed_factors.py ({arch}, initial weights {init}, order {order}, data {data})",
        )
    finally:
        episodes.episode_seed = trainer.episode_seed = training_run.episode_seed = original_seed
        trainer.Policy = training_run.Policy = original_policy
    return out_dir, time.process_time() - cpu


def _same_weights(a: Path, b: Path) -> bool:
    """Whether two policy files hold the same weights bit for bit (their metadata, e.g. the command, differ). Read
    as every policy file is (``load_policy``: tensors and plain values only), so a tampered ``--reference`` runs no
    code: a PolicyLoadError names it."""
    import torch

    from liquid_control.policy.checkpoint import load_policy

    wa, wb = (load_policy(p).state_dict() for p in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _read_wins(results: Path) -> tuple[dict[str, list[bool]], dict[str, set]]:
    """Success per episode of each policy in an evaluation's results.csv, and the checkpoints (sha) it ran."""
    wins: dict[str, list[bool]] = {}
    shas: dict[str, set] = {}
    if results.is_file():
        with open(results, newline="") as f:
            for row in csv.DictReader(f):
                wins.setdefault(row["policy"], []).append(row["success"] == "True")
                shas.setdefault(row["policy"], set()).add(row.get("checkpoint_sha"))
    return wins, shas


def _evaluate(runs: list[tuple], out: Path, episodes: int, workers: int) -> dict[str, list[bool]]:
    """Success per episode of each run's policy on the headline shifts. A folder whose results.csv is this request
    (these policies, 8 x ``episodes`` each) is kept; otherwise ``eval --resume`` runs only the episodes its log
    lacks (a rerun with other --archs, --seeds or --episodes reused the old report before, or died in a KeyError)."""
    from liquid_control.runtime.backends import checkpoint_sha256

    names = {_name(arch, i, b, d): Path(path) / "policy.pt" for arch, i, b, d, path in runs}
    wins, shas = _read_wins(out / "results.csv")
    if set(wins) != set(names) or any(
        len(wins[name]) != 8 * episodes or shas[name] != {checkpoint_sha256(policy)[:12]}
        for name, policy in names.items()
        if name in wins and policy.is_file()
    ):
        from liquid_control import cli
        from liquid_control.processes import Terminated

        command = ["eval", "--shift-set", "headline", "--episodes", str(episodes), "--resume"]
        command += ["--workers", str(workers), "--no-saliency", "--no-example", "--no-progress", "--out", str(out)]
        for arch, i, b, d, path in runs:
            command += ["--policy", f"{_name(arch, i, b, d)}={path}/policy.pt"]
        # in this process, so a Ctrl-C stops the evaluation once, which keeps what finished and says so (a child
        # process was killed 0.25 s after a Ctrl-C by subprocess.run; a failed one was a CalledProcessError traceback)
        status = cli.main(command)
        if status in (130, 143):
            raise Terminated if status == 143 else KeyboardInterrupt
        if status != 0:
            sys.exit(f"{PROG}: the evaluation in {out} did not finish (exit {status}; its lines above say why)")
        wins, _ = _read_wins(out / "results.csv")
    odd = sorted(name for name in names if len(wins.get(name, ())) != 8 * episodes)
    if odd or set(wins) != set(names):
        sys.exit(f"{PROG}: {out / 'results.csv'} does not hold 8 x {episodes} episodes of {', '.join(odd or names)}")
    return wins


def _table(rate: dict, rows: list, cols: list, row_label: str, col_label: str) -> list[str]:
    lines = [f"| {row_label} \\ {col_label} | " + " | ".join(f"{col_label} = {c}" for c in cols) + " | mean |"]
    lines.append("| --- | " + " | ".join("---" for _ in cols) + " | --- |")
    for r in rows:
        cells = [f"{rate[r, c]:.0%}" for c in cols]
        lines.append(
            f"| {row_label} = {r} | " + " | ".join(cells) + f" | {sum(rate[r, c] for c in cols) / len(cols):.0%} |"
        )
    lines.append("| mean | " + " | ".join(f"{sum(rate[r, c] for r in rows) / len(rows):.0%}" for c in cols) + " | |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="cfc,lstm,gru", help="headline architectures (default cfc,lstm,gru)")
    parser.add_argument("--seeds", default="0,1,2", help="the grid's model and data seeds (default 0,1,2)")
    parser.add_argument("--split-seeds", default="0,1", help="the split's seeds (default 0,1; '' for none)")
    parser.add_argument("--episodes", type=int, default=30, help="paired episodes per shift (default 30)")
    parser.add_argument("--workers", type=int, default=2, help="processes for training and evaluation")
    parser.add_argument("--out", default="runs/seed_factors", help="folder for the runs and results")
    parser.add_argument(
        "--reference",
        default=str(ROOT / "docs" / "ood_report" / "headline_run" / "train"),  # the repository's, from any folder
        help="the headline run's train/ folder: its policies must equal the I = B = D runs (skipped if absent)",
    )
    args = parser.parse_args(argv)
    from liquid_control.evaluation.experiment import ARCHITECTURES

    archs = [a for a in args.archs.split(",") if a]
    unknown = [a for a in archs if a not in ARCHITECTURES]
    if unknown or not archs:  # before: a KeyError traceback from a training worker
        parser.error(f"--archs {args.archs}: choose from {', '.join(ARCHITECTURES)}")
    for option in ("episodes", "workers"):  # before: an EvaluationSetupError / ValueError traceback
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be >= 1, got {getattr(args, option)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
        split = [int(s) for s in args.split_seeds.split(",") if s]
    except ValueError:
        parser.error(f"--seeds {args.seeds} / --split-seeds {args.split_seeds}: comma-separated whole numbers")
    if not seeds or min(seeds + split) < 0:
        parser.error(f"--seeds {args.seeds}: one or more seeds >= 0")
    if not set(split) <= set(seeds):
        parser.error(f"--split-seeds {args.split_seeds} must be among --seeds {args.seeds} (the grid holds I = B)")
    out = Path(args.out)
    from liquid_control.processes import Terminated, sigterm_as_interrupt

    try:
        with sigterm_as_interrupt(PROG):  # `kill` stops it as Ctrl-C does (before: -15, its workers training on)
            return _run(args, argv, archs, seeds, split, out)
    except KeyboardInterrupt as exc:
        stopped = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(
            f"{PROG}: {stopped}: the finished training runs and evaluation episodes are kept in {out}; the same "
            "command again continues them",
            file=sys.stderr,
        )
        return 143 if isinstance(exc, Terminated) else 130


def _run(args, argv, archs: list[str], seeds: list[int], split: list[int], out: Path) -> int:
    """Train the grid and split runs (those not finished), evaluate them, write the tables."""
    from liquid_control.atomic_file import atomic_write

    started = time.monotonic()

    def run(arch, i, b, d):
        return (arch, i, b, d, str(out / "train" / arch / f"i{i}_b{b}_d{d}"))

    grid = [run(a, m, m, d) for a in archs for m in seeds for d in seeds]
    cube = [run(a, i, b, d) for a in archs for i in split for b in split for d in split if i != b]
    cpu_s = {}
    jobs = grid + cube
    from liquid_control.evaluation.experiment import init_training_worker
    from liquid_control.processes import collect_results, spawn_pool

    def done(future):
        path, cpu = future.result()
        cpu_s[path] = None if cpu is None else round(cpu, 1)
        print(
            f"{path}: {'kept' if cpu is None else f'trained, {cpu:.0f} CPU-s'} ({len(cpu_s)}/{len(jobs)})", flush=True
        )

    # the experiment's training pool: its workers end at Ctrl-C, at a SIGTERM to this process alone and with it
    with spawn_pool(args.workers, init_training_worker) as pool:
        collect_results(pool, [pool.submit(_train, *job) for job in jobs], done)
    reference = {}
    for a, i, b, d, path in grid:
        ref = Path(args.reference) / a / f"seed_{i}" / "policy.pt"
        if i == b == d and ref.is_file():
            reference[path] = _same_weights(Path(path) / "policy.pt", ref)
    wins = _evaluate(grid, out / "eval_grid", args.episodes, args.workers)
    if cube:
        wins.update(_evaluate(cube, out / "eval_split", args.episodes, args.workers))
    success = {name: sum(v) / len(v) for name, v in wins.items()}
    lines = [f"Success over the 8 headline shifts, {args.episodes * 8} paired episodes per policy.", ""]
    for a in archs:
        lines += [f"**{a}**: model seed M (initial weights and order) against data seed D", ""]
        lines += _table({(m, d): success[_name(a, m, m, d)] for m in seeds for d in seeds}, seeds, seeds, "M", "D")
        lines.append("")
        if split:
            rate = {(f"{i}, {b}", d): success[_name(a, i, b, d)] for i in split for b in split for d in split}
            lines += [f"**{a}**: initial weights' seed I and order seed B against data seed D", ""]
            lines += _table(rate, [f"{i}, {b}" for i in split for b in split], split, "I, B", "D")
            lines.append("")
    results = {
        "provenance": {
            "command": "python scripts/seed_factors.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "wall_s_of_this_call": round(time.monotonic() - started, 1),
            "training_cpu_s": cpu_s,
            "same_weights_as_reference_where_i_b_d_equal": reference,
        },
        "success": success,
        "episodes": {name: len(v) for name, v in wins.items()},
    }
    for name, text in (("results.json", json.dumps(results, indent=1) + "\n"), ("results.md", "\n".join(lines))):
        try:
            with atomic_write(out / name, "w") as handle:  # whole or not at all, also on Ctrl-C or a full disk
                handle.write(text)
        except OSError as exc:
            sys.exit(f"{PROG}: cannot write {exc.filename or out / name}: {exc.strerror or exc}")
    print("\n".join(lines))
    if reference:
        same = sum(reference.values())
        print(
            f"I = B = D runs with the reference's weights: {same} of {len(reference)}"
            + (
                ""
                if same == len(reference)
                else " (where a machine computes otherwise, another draw: docs/seed_factors/)"
            )
        )
    return 0


if __name__ == "__main__":
    from liquid_control.processes import exit_status_of

    sys.exit(exit_status_of(PROG, main))
