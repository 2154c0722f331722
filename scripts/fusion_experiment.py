"""The camera + IMU experiment of LiquidBalanceNav-v0 (issue 12), one command per stage.

    python scripts/fusion_experiment.py train              # every variant x seed (resumes finished runs)
    python scripts/fusion_experiment.py table              # in-distribution, same 100 episodes for all
    python scripts/fusion_experiment.py sweep              # success vs camera rate and vs IMU rate
    python scripts/fusion_experiment.py copycat            # the copycat remedy, with and without
    python scripts/fusion_experiment.py speed              # a BC epoch at the event rate: fused vs stepwise

Variants (policies/configs/): the liquid policy (CfC updating on every camera frame and IMU message, with
time inputs), the same CfC on one trigger sensor with the other inputs held (today's design: on the IMU, or
on the camera as the rover policies do), a discrete LSTM fed the
same events without dt, the same LSTM resampled to 100 Hz, and the camera-only and IMU-only ablations. Every
run trains with the same schedule; evaluation uses the same episode seeds for every policy (paired) and
seeds no training run uses. On a shared machine run one stage at a time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = {  # name in the reports -> config
    "liquid": "cfc_balance_nav",
    "held_imu": "cfc_balance_nav_held",
    "held_camera": "cfc_balance_nav_held_camera",
    "lstm_events": "lstm_balance_nav_events",
    "lstm_100hz": "lstm_balance_nav_resampled",
    "camera_only": "cfc_balance_nav_camera_only",
    "imu_only": "cfc_balance_nav_imu_only",
}
SWEPT = ["liquid", "held_imu", "lstm_events", "lstm_100hz"]  # the ablations fail in distribution already
RATES = [0.25, 0.5, 2.0, 4.0]
# the copycat measurement: the liquid policy trained without the remedies, on as many episodes and epochs:
# plain behaviour cloning of clean expert demonstrations (no DAgger rounds, no DART noise), and DAgger alone
COPYCAT = {
    "liquid_bc": (
        "cfc_balance_nav",
        {
            "training.demonstrations": 120,
            "training.dagger_rounds": 0,
            "training.epochs_first": 22,
            "training.action_noise": 0.0,
        },
    ),
    "liquid_no_dart": ("cfc_balance_nav", {"training.action_noise": 0.0}),
}


def run_dir(out: Path, name: str, seed: int) -> Path:
    return out / f"{name}_s{seed}"


def train_all(args, variants: dict) -> None:
    import fcntl

    from liquid_control.policy import PolicyConfigError
    from liquid_control.training import TrainingError
    from liquid_control.training.trainer import check_resume, train

    for name, (config, overrides) in variants.items():
        for seed in range(args.seeds):
            folder = run_dir(Path(args.out), name, seed)
            if (folder / "policy.pt").is_file():
                # a run finished with another config or overrides than its variant's now (a config edited since)
                # was kept as the variant and reported in the fusion tables: refused as train --resume refuses it
                try:
                    check_resume(ROOT / "policies" / "configs" / f"{config}.yaml", folder, overrides, seed)
                except (TrainingError, PolicyConfigError) as exc:
                    raise SystemExit(
                        f"fusion_experiment.py: error: {folder} is not a run of variant {name} as it is now ({exc}); "
                        "remove it or give another --out"
                    ) from None
                print(f"{folder}: done", flush=True)
                continue
            folder.parent.mkdir(parents=True, exist_ok=True)
            lock = open(folder.parent / f"{folder.name}.lock", "w")  # two chains of this script never share a run
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"{folder}: being trained by another process, skipped", flush=True)
                continue
            start = time.monotonic()
            result = train(
                ROOT / "policies" / "configs" / f"{config}.yaml",
                folder,
                seed=seed,
                resume=(folder / "checkpoint.pt").exists() or (folder / "data").exists(),
                overrides=overrides,
                progress=False,
                command=f"scripts/fusion_experiment.py train ({name}, seed {seed})",
            )
            print(
                f"{name} seed {seed}: selection success {result.success}, training {result.wall_s:.0f} s "
                f"(this call {time.monotonic() - start:.0f} s)",
                flush=True,
            )


def evaluate(args, names: list[str], shifts: list[str], episodes: int, report: str) -> int:
    from liquid_control import cli

    argv = ["eval", "--out", str(Path(args.report) / report), "--episodes", str(episodes), "--resume"]
    argv += ["--workers", str(args.workers), "--no-progress", "--no-saliency"]  # saliency: CPU this run lacks
    trained = {}
    for name in names:  # the seeds trained so far (a variant with fewer seeds than --seeds is said so)
        found = [run_dir(Path(args.out), name, s) / "policy.pt" for s in range(args.seeds)]
        trained[name] = [str(f) for f in found if f.is_file()]
        if len(trained[name]) < args.seeds:
            print(f"{name}: {len(trained[name])} of {args.seeds} training seeds trained", flush=True)
    names = [n for n in names if trained[n]]
    if not names:
        print("nothing trained to evaluate", file=sys.stderr)
        return 1
    for name in names:
        argv += ["--policy", f"{name}={','.join(trained[name])}"]
    for shift in shifts:
        argv += ["--shift", shift]
    for other in names[1:]:
        argv += ["--paired", f"{names[0]},{other}"]
    print("liquid-control " + " ".join(argv), flush=True)
    return cli.main(argv)


def speed(args) -> int:
    """One BC epoch on the liquid run's first episodes, the core on its fused kernels vs step by step."""
    import numpy as np
    import torch

    from liquid_control.policy import Policy, load_config, validate_config
    from liquid_control.training.bc import bc_epoch
    from liquid_control.training.data import load_episode

    torch.set_num_threads(1)
    run = run_dir(Path(args.out), "liquid", 0)
    if not (run / "config.yaml").is_file():
        print(f"fusion_experiment speed: no liquid run in {run}; run the train stage first", file=sys.stderr)
        return 2
    files = sorted((run / "data").rglob("ep_*.npz"))[: args.speed_episodes]
    episodes = [load_episode(f) for f in files]
    config = load_config(run / "config.yaml")
    t = config["training"]
    times = {}
    for kernel in ("fused", "stepwise", "fused", "stepwise"):  # twice, alternating: the machine is shared
        torch.manual_seed(0)
        policy = Policy(validate_config(dict(config, training=dict(t, sequence_kernel=kernel))))
        optimizer = torch.optim.Adam(policy.parameters(), lr=t["lr"])
        start = time.process_time()  # CPU time: the machine is shared, one torch thread
        stats = bc_epoch(
            policy,
            optimizer,
            episodes,
            batch_size=t["batch_size"],
            sequence_length=t["sequence_length"],
            grad_clip=t["grad_clip"],
            rng=np.random.default_rng(0),
            batching=t["batching"],
        )
        times.setdefault(kernel, []).append(time.process_time() - start)
    updates = stats["updates"]
    for kernel, seconds in times.items():
        best = min(seconds)
        print(
            f"{kernel}: {best:.2f} CPU s per epoch of {len(episodes)} episodes ({updates} updates), "
            f"{updates / best:.0f} updates/s"
        )
    print(f"fused_speedup: {min(times['stepwise']) / min(times['fused']):.2f}x")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("stage", choices=["train", "table", "sweep", "copycat", "speed"])
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per variant (default 3)")
    parser.add_argument("--out", default="runs/fusion", help="training runs (default runs/fusion)")
    parser.add_argument("--report", default="reports/fusion", help="evaluation reports (default reports/fusion)")
    parser.add_argument("--episodes", type=int, default=100, help="episodes per seed in the table (default 100)")
    parser.add_argument("--sweep-episodes", type=int, default=20, help="episodes per seed and rate (default 20)")
    parser.add_argument("--workers", type=int, default=2, help="evaluation processes (default 2)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of the variants")
    parser.add_argument("--copycat", default="", help="copycat: subset of " + ", ".join(COPYCAT) + " (default all)")
    parser.add_argument("--no-eval", action="store_true", help="copycat: train only")
    parser.add_argument("--speed-episodes", type=int, default=20, help="speed: episodes of the epoch (default 20)")
    args = parser.parse_args(argv)
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS and (args.stage != "table" or n not in COPYCAT)]
    if unknown:
        parser.error(
            f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)} (table: also {', '.join(COPYCAT)})"
        )
    for option in ("seeds", "episodes", "sweep_episodes", "workers", "speed_episodes"):  # a stage of no runs
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, got {getattr(args, option)}")
    copycat_names = [n for n in args.copycat.split(",") if n] or list(COPYCAT)
    if set(copycat_names) - set(COPYCAT):
        parser.error(f"--copycat {args.copycat}: choose from {', '.join(COPYCAT)}")
    if args.stage == "speed":
        return speed(args)
    if args.stage == "train":
        train_all(args, {n: (VARIANTS[n], {}) for n in names})
        return 0
    if args.stage == "table":
        return evaluate(args, names, ["in_distribution"], args.episodes, "table")
    if args.stage == "sweep":
        shifts = ["in_distribution"] + [f"{key}={r:g}" for key in ("camera_rate", "imu_rate") for r in RATES]
        return evaluate(args, [n for n in names if n in SWEPT], shifts, args.sweep_episodes, "sweep")
    copycat = {n: COPYCAT[n] for n in copycat_names}
    train_all(args, copycat)
    if args.no_eval:
        return 0
    return evaluate(args, ["liquid", *copycat], ["in_distribution"], args.episodes, "copycat")


if __name__ == "__main__":
    from liquid_control.processes import exit_status_of

    sys.exit(exit_status_of("fusion_experiment.py", main))
