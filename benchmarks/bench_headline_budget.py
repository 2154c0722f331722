"""What the target headline experiment costs: per-architecture compute, then a projection from measured runs.

    .venv/bin/python benchmarks/bench_headline_budget.py [--slice runs/slice] [--cores 2 --cores 64]   # ~30 CPU-s

The target (issue 11): every architecture of `liquid-control eval --experiment headline` trained with 5 seeds,
with and without the robustness recipes (100 training runs), then 30 paired episodes per shift of the
`headline` shift set for each trained policy and the expert. Two kinds of figures go into the projection:

1. **Measured here, in one process, one torch thread, CPU time** (ratios are what transfers between
   machines): per architecture and recipe arm, one behaviour-cloning chunk (forward, backward, optimizer
   step: batch x sequence length of the config, the arm's augmentation and camera normalisation included) and
   one batched policy step for 32 evaluation lanes.
2. **Measured by a real run** (``--slice DIR``, the report folder of
   ``liquid-control eval --experiment headline --archs cfc_ncp --seeds 1 --episodes 30 --out DIR``): the CPU
   seconds of training CfC-NCP with and without the recipes at the headline schedule (the report's training
   table) and the evaluation's CPU seconds (provenance ``cpu_time_s`` minus training), split over its
   policy updates.

Projection: a training run of architecture A costs the slice's CfC-NCP run of the same arm with its epoch
share scaled by A's chunk cost relative to CfC-NCP's (simulation and rendering do not depend on the core);
an evaluated episode costs the slice's CPU per update, plus A's batched policy step relative to CfC-NCP's,
times the slice's updates per episode of each shift. Wall time on N cores = CPU / N (training runs and
evaluation batches are independent one-thread jobs: the process pool or Ray schedules them). With --slice the
last lines are `name: value` (without it, only the table of the measured costs).
"""

import argparse
import csv
import json
import math
import os
import sys
import time

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import numpy as np

from liquid_control.evaluation.experiment import (
    ARCHITECTURES,
    DEFAULT_ARCHS,
    HEADLINE_SCHEDULE,
    RECIPES,
    config_path,
)

LANES = 32
TARGET_SEEDS = 5
TARGET_EPISODES = 30


def _cpu(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, compiled kernels)
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats


def measure(arch: str, robust: bool, repeats: int, rng: np.random.Generator) -> dict:
    """CPU seconds of one BC chunk and of one batched evaluation step (LANES lanes) of one architecture."""
    import torch

    from liquid_control.policy import apply_overrides, load_config
    from liquid_control.policy.model import Policy
    from liquid_control.training.augment import EpisodeAugmentation
    from liquid_control.training.bc import action_loss

    cfg = apply_overrides(load_config(config_path(arch)), {**HEADLINE_SCHEDULE, **(RECIPES if robust else {})})
    torch.manual_seed(0)
    policy = Policy(cfg)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    t = cfg["training"]
    batch, steps = t["batch_size"], t["sequence_length"]
    cam = cfg["observation"]["image"]
    frames = torch.from_numpy(rng.integers(0, 256, (batch, steps, cam["height"], cam["width"], 3), dtype=np.uint8))
    rate = np.exp(rng.uniform(math.log(0.5), math.log(2.0), size=(batch, 1))) if robust else np.ones((batch, 1))
    dt = torch.as_tensor(0.066 / rate * np.ones((1, steps)), dtype=torch.float32)
    mask = torch.ones(batch, steps, dtype=torch.bool)
    labels = torch.zeros(batch, steps, policy.action_size)
    kinds = t["augmentation"]

    def chunk():
        images = EpisodeAugmentation(kinds, batch, rng).apply(frames) if kinds else frames
        actions, _ = policy.forward_sequence({"image": images}, dt, mask=mask)
        loss = action_loss(policy, actions, labels, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    policy.eval()
    lane_obs = {"image": frames.reshape(-1, *frames.shape[2:])[:LANES]}
    lane_dt = torch.full((LANES,), 0.066)
    state = [None]

    @torch.no_grad()
    def step():
        _, state[0] = policy.step(lane_obs, state[0], lane_dt)

    eval_s = _cpu(step, repeats * 4)
    policy.train()
    train_s = _cpu(chunk, repeats)
    return {"chunk_s": train_s, "step_s": eval_s}


def read_slice(folder: str) -> dict:
    """The calibration run's measured CPU seconds (see the module doc)."""
    with open(os.path.join(folder, "provenance.json"), encoding="utf-8") as fh:
        prov = json.load(fh)
    report = open(os.path.join(folder, "report.md"), encoding="utf-8").read().splitlines()
    train_cpu = {}
    for line in report:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 7 and cells[0] in ("cfc_ncp", "cfc_ncp_robust") and cells[4] not in ("n/a", ""):
            train_cpu[cells[0]] = float(cells[4])
    if set(train_cpu) != {"cfc_ncp", "cfc_ncp_robust"}:
        sys.exit(f"{folder}/report.md: no training CPU seconds of cfc_ncp and cfc_ncp_robust (run it as the doc says)")
    updates, episodes = {}, {}
    with open(os.path.join(folder, "results.csv"), newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            key = (row["policy"], row["shift"])
            updates[key] = updates.get(key, 0) + int(row["steps"])
            episodes[key] = episodes.get(key, 0) + 1
    eval_cpu = prov["cpu_time_s"] - sum(train_cpu.values())
    return {
        "train_cpu": train_cpu,
        "eval_cpu": eval_cpu,
        "updates": updates,
        "episodes": episodes,
        "wall": prov.get("total_wall_time_s", prov["wall_time_s"]),
        "cpu": prov["cpu_time_s"],
        "shifts": sorted({s for _, s in updates}),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--archs", default=",".join(DEFAULT_ARCHS), help="architectures of the headline (default %(default)s)"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed chunks per architecture and arm (default %(default)s)"
    )
    parser.add_argument("--slice", help="report folder of the one-architecture calibration run (module doc)")
    parser.add_argument("--cores", type=int, action="append", help="project the wall time on this many cores")
    parser.add_argument(
        "--train-share",
        type=float,
        default=None,
        help="fraction of a CfC-NCP training run spent in BC epochs (default: from the slice's metrics.csv)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:  # the costs are means over the repeats
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.train_share is not None and not 0 <= args.train_share <= 1:
        parser.error(f"--train-share is a fraction of a training run, 0 to 1, got {args.train_share}")
    if args.cores and min(args.cores) < 1:
        parser.error(f"--cores must be >= 1, got {min(args.cores)}")
    if not args.slice and (args.cores or args.train_share is not None):
        parser.error("--cores and --train-share are for the projection: give --slice DIR too")
    if args.slice:  # every file the projection reads, before the architectures are measured
        needed = ["provenance.json", "report.md", "results.csv"]
        if args.train_share is None:  # the epoch share comes from the training runs' metrics
            needed += [os.path.join("train", name, "seed_0", "metrics.csv") for name in ("cfc_ncp", "cfc_ncp_robust")]
        missing = [name for name in needed if not os.path.isfile(os.path.join(args.slice, name))]
        if missing:
            parser.error(
                f"--slice {args.slice}: no {', '.join(missing)} there; make the slice first: liquid-control eval "
                f"--experiment headline --archs cfc_ncp --seeds 1 --episodes 30 --out {args.slice}"
                + (" (a slice without its train/ folder: give --train-share)" if missing[0].startswith("train") else "")
            )
    import torch  # after the checks: a wrong option or slice is refused at once, not after torch's import

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    archs = [a for a in args.archs.split(",") if a]
    unknown = sorted(set(archs) - set(ARCHITECTURES))
    if unknown:
        parser.error(f"unknown architecture(s) {unknown}")
    costs = {}
    print(f"{'architecture':<18} {'BC chunk ms':>12} {'+recipes ms':>12} {'eval step/lane ms':>18}")
    for arch in archs:
        off = measure(arch, False, args.repeats, rng)
        on = measure(arch, True, args.repeats, rng)
        costs[arch] = {"off": off, "on": on}
        print(
            f"{arch:<18} {off['chunk_s'] * 1e3:12.1f} {on['chunk_s'] * 1e3:12.1f} {off['step_s'] / LANES * 1e3:18.3f}"
        )
    if not args.slice:
        return 0
    s = read_slice(args.slice)
    ref = costs.get("cfc_ncp") or {"off": measure("cfc_ncp", False, args.repeats, rng)}
    ref.setdefault("on", measure("cfc_ncp", True, args.repeats, rng))
    share = args.train_share
    if share is None:
        share = {}
        for arm, name in (("off", "cfc_ncp"), ("on", "cfc_ncp_robust")):
            with open(os.path.join(args.slice, "train", name, "seed_0", "metrics.csv"), encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            spent, last = 0.0, 0.0
            for row in rows:  # wall seconds of the epochs (collect and eval rows are the rest)
                wall = float(row["wall_s"])
                if row["kind"] == "train":
                    spent += wall - last
                last = wall
            share[arm] = spent / max(last, 1e-9)
    else:
        share = {"off": share, "on": share}
    train_total, longest = 0.0, 0.0
    lines = []
    for arch in archs:
        for arm, name in (("off", "cfc_ncp"), ("on", "cfc_ncp_robust")):
            ratio = costs[arch][arm]["chunk_s"] / ref[arm]["chunk_s"]
            run = s["train_cpu"][name] * ((1 - share[arm]) + share[arm] * ratio)
            train_total += TARGET_SEEDS * run
            longest = max(longest, run)
            lines.append(f"{arch + ('_robust' if arm == 'on' else ''):<22} {run:10.0f}")
    # evaluation: CPU per update of the slice (expert and CfC-NCP episodes alike), scaled per architecture by
    # the policy step's share; updates per episode from the slice's learned policies, per shift
    total_updates = sum(s["updates"].values())
    per_update = s["eval_cpu"] / total_updates
    ref_step = ref["off"]["step_s"] / LANES
    learned = [p for p in ("cfc_ncp", "cfc_ncp_robust") if any(k[0] == p for k in s["updates"])]
    mean_updates = {
        shift: sum(s["updates"][(p, shift)] for p in learned) / sum(s["episodes"][(p, shift)] for p in learned)
        for shift in s["shifts"]
    }
    expert_updates = sum(v for (p, _), v in s["updates"].items() if p == "expert")
    expert_episodes = sum(v for (p, _), v in s["episodes"].items() if p == "expert")
    eval_total = expert_updates / max(expert_episodes, 1) * TARGET_EPISODES * len(s["shifts"]) * per_update
    for arch in archs:
        step = costs[arch]["off"]["step_s"] / LANES
        cost = per_update + (step - ref_step)
        eval_total += 2 * TARGET_SEEDS * TARGET_EPISODES * sum(mean_updates.values()) * cost
    print()
    print(f"slice {args.slice}: {s['cpu']:.0f} CPU s, {s['wall']:.0f} s wall; training CPU s {s['train_cpu']}")
    print(f"epoch share of a training run: off {share['off']:.0%}, recipes {share['on']:.0%}")
    print(f"evaluation: {per_update * 1e3:.2f} CPU ms per update; updates per episode (learned policies):")
    for shift, n in mean_updates.items():
        print(f"  {shift:<20} {n:8.0f}")
    print("projected CPU s of one training run:")
    for line in lines:
        print("  " + line)
    total = train_total + eval_total
    print(
        f"target: {len(archs)} architectures x 2 arms x {TARGET_SEEDS} seeds, {TARGET_EPISODES} episodes x "
        f"{len(s['shifts'])} shifts"
    )
    print(f"projected_training_cpu_h: {train_total / 3600:.2f}")
    print(f"projected_evaluation_cpu_h: {eval_total / 3600:.2f}")
    print(f"projected_total_cpu_h: {total / 3600:.2f}")
    print(f"longest_training_run_cpu_s: {longest:.0f}")
    for cores in args.cores or [2]:  # training runs are whole one-thread jobs: the longest bounds that phase
        wall = max(train_total / cores, longest) + eval_total / cores
        print(f"projected_wall_h_on_{cores}_cores: {wall / 3600:.2f}")
    return 0


if __name__ == "__main__":
    from liquid_control.processes import exit_status_of

    sys.exit(exit_status_of("bench_headline_budget.py", main))
