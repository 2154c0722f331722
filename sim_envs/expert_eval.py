"""Measure the privileged experts' success per setting (in-distribution and every shift preset).

    python -m sim_envs.expert_eval --episodes 50 [--worlds rover balancer balance_nav] [--workers 2]

Episode seeds are the same in every setting (same arenas and command sequences), so settings differ
only by the shift. Prints a markdown table. The balancer has no camera: visual and camera presets are skipped there.
A progress bar (episodes done, on stderr) runs meanwhile; ``--no-progress`` turns it off. Ctrl-C prints the
settings finished so far (each row with its episode count) and exits with 130.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from liquid_control.stats import wilson_interval  # clamped: no '-0%' lower end for 0 successes

WORLDS = {"rover": "LiquidRover-v0", "balancer": "LiquidBalance-v0", "balance_nav": "LiquidBalanceNav-v0"}
FIRST_SEED = 1000
PROG = "python -m sim_envs.expert_eval"


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
        prog=PROG,
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
    seeds = list(range(FIRST_SEED, FIRST_SEED + args.episodes))
    tasks = [
        (world, preset, seeds[i : i + args.chunk])
        for world in args.worlds
        for preset in settings_for(world)
        for i in range(0, len(seeds), args.chunk)
    ]
    from tqdm import tqdm

    from liquid_control.processes import collect_results, spawn_pool

    results: dict = {}
    start = time.monotonic()
    total = sum(len(task[2]) for task in tasks)
    interrupted = False
    with tqdm(total=total, unit="episode", desc="expert episodes", disable=args.no_progress) as bar:

        def keep(future) -> None:
            world, preset, episodes = future.result()
            results.setdefault((world, preset), []).extend(episodes)
            bar.update(len(episodes))
            bar.set_postfix_str(f"{world} {preset}", refresh=False)

        try:
            with spawn_pool(args.workers, _init_worker) as pool:
                collect_results(pool, [pool.submit(run_episodes, task) for task in tasks], keep)
        except KeyboardInterrupt:  # the settings done so far are still printed: an hour's run is not lost
            interrupted = True
    wall = time.monotonic() - start
    print_tables(args.worlds, results, seeds, interrupted)
    print(f"\nwall time {wall:.0f} s with {args.workers} workers")
    if interrupted:
        print(
            "python -m sim_envs.expert_eval: interrupted; the tables hold the episodes that finished", file=sys.stderr
        )
        return 130
    return 0


def _init_worker() -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")


def print_tables(worlds: list, results: dict, seeds: list, interrupted: bool) -> None:
    """One markdown table per world (the form docs/worlds.md shows); after an interruption only the settings with
    finished episodes, each row with its own episode count."""
    from sim_envs.shifts import SHIFT_PRESETS

    failure_name = {"rover": "collisions", "balancer": "falls", "balance_nav": "falls"}
    for world in worlds:
        rows = [preset for preset in settings_for(world) if results.get((world, preset))]
        if interrupted:
            if not rows:
                continue
            heading = (
                f"interrupted: {len(rows)} of {len(settings_for(world))} settings, up to {len(seeds)} episodes each"
            )
            seeds_text = f"seeds from {seeds[0]}"
        else:
            heading, seeds_text = f"{len(seeds)} episodes per setting", f"seeds {seeds[0]}..{seeds[-1]}"
        count = " episodes |" if interrupted else ""
        print(f"\n### {WORLDS[world]} expert, {heading} ({seeds_text})\n")
        fails = failure_name[world]
        print(f"| setting | kind |{count} success | 95% lower | {fails} | timeouts/untracked | mean episode s |")
        print("| --- | --- |" + (" ---: |" if interrupted else "") + " ---: | ---: | ---: | ---: | ---: |")
        for preset in rows:
            episodes = results[(world, preset)]
            n = len(episodes)
            wins = sum(e[0] for e in episodes)
            failures = sum(e[1] for e in episodes)
            other = n - wins - failures
            kind = "/".join(sorted(SHIFT_PRESETS[preset].kinds())) or "-"
            mean_t = sum(e[2] for e in episodes) / n
            episodes_cell = f" {n} |" if interrupted else ""
            print(
                f"| {preset} | {kind} |{episodes_cell} {100 * wins / n:.0f}% | "
                f"{100 * wilson_interval(wins, n)[0]:.0f}% | {failures} | {other} | {mean_t:.1f} |"
            )


if __name__ == "__main__":
    from liquid_control.processes import exit_status_of

    sys.exit(exit_status_of(PROG, main))
