"""Evaluation throughput: episodes per CPU-second of the batched evaluation against the one-episode loop.

    .venv/bin/python benchmarks/bench_eval.py [--episodes 16] [--lanes 32]   # ~5 CPU-minutes; --episodes 1: ~15 s

The same plan (three shipped rover policies x two shifts x N paired episodes) runs three ways in this process,
one torch thread, cell by cell in alternating order so all three see the same machine load:

- **one-episode loop** (what `liquid-control eval` ran before the batched evaluation): every episode builds
  its own world (and GL context), one policy call per update (`evaluation.episode.run_episode`);
- **one lane**: the batched runner with one lane, worlds kept (what reusing worlds alone gives);
- **batched**: the batched runner, all episodes of a cell in lockstep lanes, one policy call per update for
  all of them (`evaluation.batched.run_batch`), worlds kept and their renderer shared, as a worker does.

The clock is the process's CPU time (all threads), because other jobs share the machine. Closed loops are
chaotic, so a batched episode can end differently from its one-episode twin (last-bit float differences);
updates per CPU-second are printed beside episodes per CPU-second for that reason. Target: batched >= 3x
the one-episode loop in episodes per CPU-second. The last lines are `name: value`.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from liquid_control.evaluation.errors import EvaluationSetupError
from liquid_control.evaluation.plan import DEFAULT_LANES, build_plan
from liquid_control.paths import policies_dir

POLICIES = ("cfc_ncp_rover", "lstm_rover", "ltc_ncp_rover")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--episodes", type=int, default=16, help="paired episodes per policy and shift (default %(default)s)"
    )
    parser.add_argument("--shifts", default="in_distribution,dusk", help="comma-separated shifts (default %(default)s)")
    parser.add_argument(
        "--lanes", type=int, default=DEFAULT_LANES, help="lanes of the batched runner (default %(default)s)"
    )
    args = parser.parse_args(argv)
    for name in ("episodes", "lanes"):  # the rates divide by the episodes run; a batch needs a lane
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    import torch  # after the options are checked: a wrong one is refused at once, not after torch's import

    from liquid_control.evaluation.batched import WorldPool, make_batches, run_batch
    from liquid_control.evaluation.episode import run_episode

    torch.set_num_threads(1)
    policies = [f"{name}={policies_dir() / (name + '.pt')}" for name in POLICIES]
    try:
        plan = build_plan(policies, args.shifts.split(","), args.episodes)
    except EvaluationSetupError as exc:  # e.g. an unknown shift: the message names the valid ones
        parser.error(str(exc))
    cells = make_batches(plan.jobs, lanes=len(plan.jobs))  # one cell per policy and shift
    ways = {
        "one-episode loop": lambda jobs, pool: [run_episode(job) for job in jobs],
        "one lane, worlds kept": lambda jobs, pool: run_batch(jobs, lanes=1, pool=pool),
        "batched": lambda jobs, pool: [r for b in make_batches(jobs, args.lanes) for r in run_batch(b, pool=pool)],
    }
    pools = {name: WorldPool() for name in ways}
    cpu = dict.fromkeys(ways, 0.0)
    episodes = dict.fromkeys(ways, 0)
    updates = dict.fromkeys(ways, 0)
    successes = dict.fromkeys(ways, 0)
    order = list(ways)
    print(f"{len(plan.jobs)} episodes per way ({len(cells)} cells: {len(POLICIES)} policies x {args.shifts})")
    for i, cell in enumerate(cells):
        for name in order[i % 3 :] + order[: i % 3]:  # rotate which way goes first
            start = time.process_time()
            records = ways[name](cell, pools[name])
            cpu[name] += time.process_time() - start
            episodes[name] += len(records)
            updates[name] += sum(r["steps"] for r in records)
            successes[name] += sum(bool(r["success"]) for r in records)
        print(f"cell {i + 1}/{len(cells)} ({cell[0].policy}, {cell[0].shift}) done", file=sys.stderr, flush=True)
    start = time.process_time()
    for pool in pools.values():
        pool.close()
    cpu["batched"] += time.process_time() - start  # closing the kept worlds is part of the batched cost
    base = episodes["one-episode loop"] / cpu["one-episode loop"]
    print(f"{'way':<24} {'CPU s':>8} {'episodes/CPU s':>15} {'updates/CPU s':>14} {'success':>8} {'vs loop':>8}")
    for name in ways:
        rate = episodes[name] / cpu[name]
        print(
            f"{name:<24} {cpu[name]:8.1f} {rate:15.3f} {updates[name] / cpu[name]:14.1f} "
            f"{successes[name] / episodes[name]:8.0%} {rate / base:7.2f}x"
        )
    speedup = (episodes["batched"] / cpu["batched"]) / base
    update_speedup = (updates["batched"] / cpu["batched"]) / (updates["one-episode loop"] / cpu["one-episode loop"])
    print(f"target >= 3x episodes per CPU-second: {'met' if speedup >= 3 else 'NOT met'}")
    print(f"episodes_per_cpu_second_loop: {base:.3f}")
    print(f"episodes_per_cpu_second_batched: {episodes['batched'] / cpu['batched']:.3f}")
    print(f"batched_speedup_episodes: {speedup:.2f}")
    print(f"batched_speedup_updates: {update_speedup:.2f}")
    return 0


if __name__ == "__main__":
    from liquid_control.processes import exit_status_of

    sys.exit(exit_status_of("bench_eval.py", main))
