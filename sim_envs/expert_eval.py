"""Measure the privileged experts' success per setting (in-distribution and every shift preset).

    python -m sim_envs.expert_eval --episodes 50 [--worlds rover balancer balance_nav] [--workers 2]

Episode seeds are the same in every setting (same arenas and command sequences), so settings differ
only by the shift. Prints a markdown table. The balancer has no camera: visual and camera presets are skipped there.
A progress bar (episodes done, on stderr) runs meanwhile; ``--no-progress`` turns it off.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

from liquid_control.stats import wilson_interval  # clamped: no '-0%' lower end for 0 successes

WORLDS = {"rover": "LiquidRover-v0", "balancer": "LiquidBalance-v0", "balance_nav": "LiquidBalanceNav-v0"}
FIRST_SEED = 1000


def run_episodes(task):
    """Worker: (world, preset, seeds) -> list of (success, failure, sim seconds, steps)."""
    world, preset, seeds = task
    os.environ.setdefault("MUJOCO_GL", "egl")
    import gymnasium as gym

    import sim_envs

    env = gym.make(WORLDS[world], shift=sim_envs.SHIFT_PRESETS[preset])
    results = []
    for seed in seeds:
        env.reset(seed=seed)
        steps = 0
        while True:
            _, _, terminated, truncated, info = env.step(env.unwrapped.expert_action())
            steps += 1
            if terminated or truncated:
                break
        results.append((bool(info["success"]), bool(info["collision"]), info["stamp"], steps))
    env.close()
    return world, preset, results


def settings_for(world: str) -> list:
    """The shift presets evaluated in ``world``: those acting on its sensors (the balancer has no camera, so no
    visual or camera-timing preset; the worlds refuse such a shift)."""
    import sim_envs
    from sim_envs.shifts import SHIFT_PRESETS

    sensors = sim_envs.world_class(WORLDS[world]).sensor_names
    return [name for name, shift in SHIFT_PRESETS.items() if not shift.idle_settings(sensors)]


def main(argv=None):
    """Command line: run the experts on every setting in worker processes and print one table per world."""
    parser = argparse.ArgumentParser(
        prog="python -m sim_envs.expert_eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--episodes", type=int, default=50, help="episodes per setting (default 50)")
    parser.add_argument(
        "--worlds", nargs="+", choices=sorted(WORLDS), default=["rover", "balancer"], help="(default: rover balancer)"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--chunk", type=int, default=25, help="episodes per task (default 25)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.workers < 1 or args.chunk < 1:
        parser.error("--episodes, --workers and --chunk must be positive")
    from sim_envs.shifts import SHIFT_PRESETS

    seeds = list(range(FIRST_SEED, FIRST_SEED + args.episodes))
    tasks = [
        (world, preset, seeds[i : i + args.chunk])
        for world in args.worlds
        for preset in settings_for(world)
        for i in range(0, len(seeds), args.chunk)
    ]
    from tqdm import tqdm

    results: dict = {}
    start = time.monotonic()
    total = sum(len(task[2]) for task in tasks)
    with (
        mp.get_context("spawn").Pool(args.workers) as pool,
        tqdm(total=total, unit="episode", desc="expert episodes", disable=args.no_progress) as bar,
    ):
        for world, preset, episodes in pool.imap_unordered(run_episodes, tasks):
            results.setdefault((world, preset), []).extend(episodes)
            bar.update(len(episodes))
            bar.set_postfix_str(f"{world} {preset}", refresh=False)
    wall = time.monotonic() - start

    failure_name = {"rover": "collisions", "balancer": "falls", "balance_nav": "falls"}
    for world in args.worlds:
        print(f"\n### {WORLDS[world]} expert, {args.episodes} episodes per setting (seeds {seeds[0]}..{seeds[-1]})\n")
        print(f"| setting | kind | success | 95% lower | {failure_name[world]} | timeouts/untracked | mean episode s |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for preset in settings_for(world):
            episodes = results[(world, preset)]
            n = len(episodes)
            wins = sum(e[0] for e in episodes)
            failures = sum(e[1] for e in episodes)
            other = n - wins - failures
            kind = "/".join(sorted(SHIFT_PRESETS[preset].kinds())) or "-"
            mean_t = sum(e[2] for e in episodes) / n
            print(
                f"| {preset} | {kind} | {100 * wins / n:.0f}% | {100 * wilson_interval(wins, n)[0]:.0f}% | "
                f"{failures} | {other} | {mean_t:.1f} |"
            )
    print(f"\nwall time {wall:.0f} s with {args.workers} workers")


if __name__ == "__main__":
    main()
