"""The headline experiment as one command: train every architecture on the training distribution, then
evaluate all of them (plus the privileged expert) on the same shifts and the same episode seeds.

    liquid-control eval --experiment headline --out reports/headline              # full budget
    liquid-control eval --experiment headline --out reports/headline_reduced \
        --seeds 1 --train-minutes 4 --episodes 10                                  # a reduced run

Architectures are the shipped configs in policies/configs/ (one shared camera CNN + IMU MLP encoder, only
the recurrent core differs; data augmentation off), so the comparison measures the core. `cfc_no_dt` is the
ablation of the continuous-time claim: the same CfC trained and run with dt ignored (constant 1).

Training budget: `--train-minutes M` sizes the training schedule, not a wall-clock cut-off — every
architecture gets the same episodes and epochs (a wall-clock cut would give slow cores less data).
M >= FULL_SCHEDULE_MINUTES runs the shipped schedule; a smaller M scales demonstrations, DAgger episodes and
epochs by M / FULL_SCHEDULE_MINUTES. The measured training wall time of every run is in the report.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from liquid_control.evaluation.plan import EXPERT, EvaluationSetupError, parse_pairs
from liquid_control.evaluation.shifts import SHIFT_SETS

# policy name in the report -> shipped config (policies/configs/)
ARCHITECTURES = {
    "cfc": "cfc_rover.yaml",
    "cfc_ncp": "cfc_ncp_rover.yaml",
    "ltc_ncp": "ltc_ncp_rover.yaml",
    "lstm": "lstm_rover.yaml",
    "gru": "gru_rover.yaml",
    "mlp": "mlp_rover.yaml",
    "cfc_no_dt": "cfc_rover_no_dt.yaml",
}
# paired comparisons in the report: the continuous-time ablation, and the NCP cells against the LSTM
ABLATION_PAIRS = [("cfc", "cfc_no_dt"), ("cfc_ncp", "lstm"), ("ltc_ncp", "lstm")]
FULL_SCHEDULE_MINUTES = 20.0  # the shipped schedule (the target: CfC >= 90% in 20 min on 2 cores)

EXPERIMENTS = {
    "headline": "train CfC, CfC-NCP, LTC-NCP, LSTM, GRU, MLP and CfC-without-dt; evaluate on the headline shifts"
}


def config_path(arch: str) -> str:
    from liquid_control.paths import policies_dir

    return str(policies_dir() / "configs" / ARCHITECTURES[arch])


def schedule_overrides(config: dict, minutes: float) -> dict:
    """Training overrides (dotted keys) that size the config's schedule for `minutes` (see module doc)."""
    if minutes <= 0:
        raise EvaluationSetupError(f"--train-minutes must be > 0, got {minutes}")
    fraction = min(1.0, minutes / FULL_SCHEDULE_MINUTES)
    if fraction >= 1.0:
        return {}
    t = config["training"]
    rounds = max(1, round(t["dagger_rounds"] * fraction)) if t["dagger_rounds"] else 0
    betas = t["beta"]
    if rounds and betas:  # keep the decay from the first to the last beta over fewer rounds
        betas = [betas[round(i * (len(betas) - 1) / max(rounds - 1, 1))] for i in range(rounds)]
    return {
        "training.demonstrations": max(4, round(t["demonstrations"] * fraction)),
        "training.dagger_rounds": rounds,
        "training.dagger_episodes": max(2, round(t["dagger_episodes"] * fraction)),
        "training.beta": betas,
        "training.epochs_first": max(1, round(t["epochs_first"] * fraction)),
        "training.epochs_per_round": max(1, round(t["epochs_per_round"] * fraction)),
        "training.eval_episodes": max(5, round(t["eval_episodes"] * fraction)),
    }


def describe_schedule(minutes: float) -> str:
    """How the report names the training budget of `--train-minutes`."""
    fraction = min(1.0, minutes / FULL_SCHEDULE_MINUTES)
    if fraction >= 1.0:
        return "the shipped training schedule of each config"
    return f"the shipped training schedule scaled to {fraction:.0%} (--train-minutes {minutes:g})"


def _log_with_prefix(prefix: str, message: str) -> None:
    print(f"[{prefix}] {message}", file=sys.stderr, flush=True)


def _train_one(arch: str, seed: int, out_dir: str, overrides: dict, resume: bool) -> dict:
    """One training run in a worker process: returns where the policy is and what training measured."""
    from liquid_control.policy import read_metadata
    from liquid_control.training import TrainingError, train

    policy_path = os.path.join(out_dir, "policy.pt")
    if resume and os.path.isfile(policy_path):
        from liquid_control.policy import apply_overrides, load_config

        wanted = load_config(config_path(arch))
        wanted = apply_overrides(wanted, overrides) if overrides else wanted
        if load_config(os.path.join(out_dir, "config.yaml")) != wanted:
            raise EvaluationSetupError(
                f"{out_dir} was trained with another config or schedule (--train-minutes); "
                "resume with the same options, or choose another --out"
            )
        _log_with_prefix(f"{arch} seed {seed}", f"already trained: {policy_path}")
    else:
        started = os.path.exists(os.path.join(out_dir, "checkpoint.pt")) or os.path.isdir(os.path.join(out_dir, "data"))
        try:
            train(
                config_path(arch),
                out_dir,
                seed=seed,
                resume=resume and started,
                overrides=overrides or None,
                progress=False,
                threads=1,
                log=functools.partial(_log_with_prefix, f"{arch} seed {seed}"),
                command=f"liquid-control eval --experiment headline (training {arch}, seed {seed})",
            )
        except TrainingError as exc:  # e.g. --resume with another --train-minutes: a clear error, not a trace
            raise EvaluationSetupError(f"training {arch} (seed {seed}) in {out_dir}: {exc}") from None
    metadata = read_metadata(policy_path)
    return {"arch": arch, "seed": seed, "policy": policy_path, "metadata": metadata}


def training_overrides(arch: str, minutes: float, extra: dict | None = None) -> dict:
    """The overrides one architecture trains with: its schedule for `minutes`, then `--train-set` (validated)."""
    from liquid_control.policy import PolicyConfigError, apply_overrides, load_config

    config = load_config(config_path(arch))
    overrides = {**schedule_overrides(config, minutes), **(extra or {})}
    try:
        apply_overrides(config, overrides)
    except (PolicyConfigError, ValueError, KeyError) as exc:
        raise EvaluationSetupError(f"--train-set for {arch} ({config_path(arch)}): {exc}") from None
    return overrides


def train_all(
    archs: list[str], seeds: list[int], train_dir: str, overrides_by_arch: dict, resume: bool, workers: int
) -> list[dict]:
    """Train every (architecture, seed) in parallel (one CPU thread each); finished runs are kept."""
    jobs = []
    for arch in archs:
        overrides = overrides_by_arch[arch]
        for seed in seeds:
            out_dir = os.path.join(train_dir, arch, f"seed_{seed}")
            if not resume and os.path.exists(out_dir):
                raise EvaluationSetupError(
                    f"{out_dir} already holds a training run: pass --resume to continue "
                    "the experiment, or choose another --out"
                )
            jobs.append((arch, seed, out_dir, overrides, resume))
    context = multiprocessing.get_context("spawn")
    results = []
    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(jobs))), mp_context=context) as pool:
        pending = {pool.submit(_train_one, *job) for job in jobs}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()
                    meta = result["metadata"]
                    _log_with_prefix(
                        f"{result['arch']} seed {result['seed']}",
                        f"trained in {meta.get('training_wall_s', '?')} s, selection success "
                        f"{meta.get('selection_success')}",
                    )
                    results.append(result)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    order = {(a, s): i for i, (a, s, *_ignored) in enumerate(jobs)}
    return sorted(results, key=lambda r: order[(r["arch"], r["seed"])])


def _training_notes(trained: list[dict], minutes: float, overrides_by_arch: dict) -> list[str]:
    lines = [
        "## Training",
        "",
        f"Every policy trained on the training distribution (`in_distribution`: summer, noon, nominal "
        f"sensors) with {describe_schedule(minutes)}, data augmentation off. Training wall time: wall-clock "
        "seconds on a shared machine (other jobs ran beside it). Selection success: the training run's own "
        "held-out episodes (model selection), not the evaluation episodes below.",
        "",
        "| policy | config | training seed | training wall time (s) | training episodes | selection success |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in trained:
        m = r["metadata"]
        sel = m.get("selection_success")
        lines.append(
            f"| {r['arch']} | `policies/configs/{ARCHITECTURES[r['arch']]}` | {r['seed']} | "
            f"{m.get('training_wall_s', 'n/a')} | {m.get('training_episodes', 'n/a')} | "
            f"{'n/a' if sel is None else f'{100 * sel:.0f}%'} |"
        )
    changed = {a: o for a, o in overrides_by_arch.items() if o}
    if changed:
        first = next(iter(changed.values()))
        same = all(o == first for o in changed.values())
        lines += [
            "",
            "Training overrides"
            + (" for every policy" if same else "")
            + ": "
            + ", ".join(f"`{k}={v}`" for k, v in first.items())
            + ("" if same else " (first policy)"),
        ]
    lines.append("")
    return lines


def run_experiment(args, command: str = "") -> dict:
    """`liquid-control eval --experiment headline`: train, then evaluate, into args.out."""
    from liquid_control.evaluation.backends import available_cpus
    from liquid_control.evaluation.evaluate import evaluate
    from liquid_control.evaluation.plan import build_plan

    if args.experiment not in EXPERIMENTS:
        raise EvaluationSetupError(f"unknown experiment {args.experiment!r}; choose from {', '.join(EXPERIMENTS)}")
    archs = list(ARCHITECTURES) if not args.archs else [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = [a for a in archs if a not in ARCHITECTURES]
    if unknown:
        raise EvaluationSetupError(f"unknown architecture(s) {unknown}; choose from {', '.join(ARCHITECTURES)}")
    if args.seeds < 1:
        raise EvaluationSetupError(f"--seeds must be >= 1, got {args.seeds}")
    shifts = list(args.shift) + [s for name in args.shift_set for s in SHIFT_SETS[name]]
    shifts = shifts or SHIFT_SETS["headline"]
    # validate the shifts (and the evaluation options) before hours of training
    build_plan([EXPERT], shifts, args.episodes, episode_seed_base=args.episode_seed_base)
    cli_pairs = parse_pairs(args.paired, ([] if args.no_expert else [EXPERT]) + archs)
    from liquid_control.training.cli import parse_overrides

    try:
        extra = parse_overrides(args.train_set)
    except ValueError as exc:
        raise EvaluationSetupError(str(exc).replace("--set", "--train-set")) from None
    overrides_by_arch = {a: training_overrides(a, args.train_minutes, extra) for a in archs}

    from liquid_control.evaluation.results import LOG_NAME

    if not args.resume and os.path.exists(os.path.join(args.out, LOG_NAME)):
        raise EvaluationSetupError(
            f"{args.out} already holds an evaluation: pass --resume to continue it, or choose another --out"
        )
    os.makedirs(args.out, exist_ok=True)
    trained = train_all(
        archs,
        list(range(args.seeds)),
        os.path.join(args.out, "train"),
        overrides_by_arch,
        args.resume,
        args.workers or available_cpus(),
    )
    policies = [] if args.no_expert else [EXPERT]
    for arch in archs:
        paths = [r["policy"] for r in trained if r["arch"] == arch]
        policies.append(f"{arch}=" + ",".join(paths))
    plan = build_plan(policies, shifts, args.episodes, episode_seed_base=args.episode_seed_base)
    reduced = args.train_minutes < FULL_SCHEDULE_MINUTES or args.seeds < 3 or args.episodes < 20
    notes = []
    if reduced:
        notes += [
            f"**Reduced budget**: {args.seeds} training seed(s) per architecture, "
            f"{describe_schedule(args.train_minutes)}, {args.episodes} episodes per shift and seed. The "
            "full experiment is `liquid-control eval --experiment headline --out reports/headline` "
            "(3 seeds, the shipped schedules, 20 episodes). Small samples: read the confidence intervals.",
            "",
        ]
    notes += [
        "Policies: "
        + ", ".join(f"`{a}` = `policies/configs/{ARCHITECTURES[a]}`" for a in archs)
        + (
            ". `expert` is the privileged expert (sees the true state), a reference, not a competitor."
            if not args.no_expert
            else "."
        ),
        "",
    ]
    sections = _training_notes(trained, args.train_minutes, overrides_by_arch)
    return evaluate(
        plan,
        args.out,
        backend=args.backend,
        workers=args.workers,
        resume=args.resume,
        ray_address=args.ray_address,
        progress=not args.no_progress,
        command=command,
        title="Headline experiment: liquid and baseline cores under distribution shift",
        notes=notes,
        sections=sections,
        example=not args.no_example,
        lanes=args.lanes,
        paired=[(a, b) for a, b in ABLATION_PAIRS if a in archs and b in archs] + cli_pairs,
    )
