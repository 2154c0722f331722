"""Does averaging several behaviour-cloned policies drive better than each alone? A diagnostic for the bag loop.

    python scripts/bc_ensemble.py runs/ens/s0/run/policy.pt runs/ens/s1/run/policy.pt ... [--episodes 50] [--out FILE]
    python scripts/bc_ensemble.py RUN_S0/policy.pt RUN_S1/policy.pt ... --shift dusk --shift winter --ensemble-only

Each policy keeps its own recurrent state and sees every update; the ensemble executes the mean of their
actions. Every member alone and the ensemble drive the same simulated episodes (the evaluation seeds 20,000,000
on, in the training distribution, as `liquid-control eval` and scripts/bag_loop.sh run them), so each member's
count here can be set beside that evaluation's (stepped one episode at a time here, in lockstep lanes there: the
last bits differ and a few episodes flip). Prints a line per policy and the ensemble; --out writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")


class MeanOfAgents:
    """Agents stepped together on one episode; the action is the mean of theirs."""

    def __init__(self, agents):
        self.agents = agents

    def reset(self) -> None:
        for agent in self.agents:
            agent.reset()

    def act(self, obs):
        import numpy as np

        return np.mean([agent.act(obs) for agent in self.agents], axis=0).astype(np.float32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("policies", nargs="+", type=Path, help="policy.pt files of one config (two or more)")
    parser.add_argument("--episodes", type=int, default=50, help="simulated episodes (default 50)")
    parser.add_argument(
        "--episode-seed-base", type=int, default=20_000_000, help="first episode seed (default 20000000)"
    )
    parser.add_argument(
        "--shift", action="append", help="a shift preset, as liquid-control eval's (repeat; default in_distribution)"
    )
    parser.add_argument("--ensemble-only", action="store_true", help="drive the ensemble only, not each member alone")
    parser.add_argument("--out", type=Path, help="JSON summary")
    args = parser.parse_args(argv)
    import torch

    from liquid_control.atomic_file import atomic_write
    from liquid_control.evaluation.agents import make_env
    from liquid_control.evaluation.plan import EvaluationSetupError, build_plan
    from liquid_control.paths import output_file_problem
    from liquid_control.policy import load_policy
    from liquid_control.policy.agent import PolicyAgent
    from liquid_control.stats import wilson_interval
    from liquid_control.training.data import rollout

    problem = args.out and output_file_problem(args.out, "ensemble.json")  # before the episodes
    if problem:
        parser.error(f"--out {args.out}: {problem}")
    torch.set_num_threads(1)
    paths = [p.resolve() for p in args.policies]
    if len(set(paths)) < 2 or len(set(paths)) < len(paths):
        parser.error("give two or more different policy files")
    try:  # the evaluation's own checks: one world and architecture, its settings, distinct training seeds
        from liquid_control.evaluation.agents import inspect_checkpoint

        first_of_seed: dict = {}
        for path in paths:  # said here for this script: build_plan's advice (NAME=CHECKPOINT) is for `eval`
            seed = inspect_checkpoint(str(path))["training_seed"]
            if seed is not None and seed in first_of_seed:
                parser.error(
                    f"{first_of_seed[seed]} and {path} both record training seed {seed}: the members are one "
                    "config's runs of different training seeds (liquid-control train --seed K); give one of them"
                )
            first_of_seed.setdefault(seed, path)
        plan = build_plan(
            ["members=" + ",".join(map(str, paths))],
            args.shift or ["in_distribution"],
            args.episodes,
            args.episode_seed_base,
        )
    except EvaluationSetupError as exc:
        parser.error(str(exc))
    spec = plan.policies[0]
    policies = [load_policy(str(p)) for p in args.policies]
    seeds = range(args.episode_seed_base, args.episode_seed_base + args.episodes)
    drivers = {} if args.ensemble_only else {str(p): PolicyAgent(policy) for p, policy in zip(args.policies, policies)}
    drivers["ensemble"] = MeanOfAgents([PolicyAgent(policy) for policy in policies])
    results = {}
    started = time.monotonic()
    for shift in plan.shifts:
        env = make_env(spec.world, shift, spec.env_kwargs)  # the world liquid-control eval builds
        for name, agent in drivers.items():
            wins = [bool(rollout(env, agent, beta=0.0, seed=s, record=False).success) for s in seeds]
            low, high = wilson_interval(sum(wins), len(wins))
            cell = {"successes": sum(wins), "episodes": len(wins), "ci95": [low, high], "per_episode": wins}
            results.setdefault(shift, {})[name] = cell
            print(f"{shift} {name}: {sum(wins)}/{len(wins)} ({low:.0%}-{high:.0%})", flush=True)
        env.close()
    if len(results) == 1:  # one shift: the summary as before (policy -> cell)
        results = next(iter(results.values()))
    summary = {
        "episode_seeds": [seeds[0], seeds[-1]],
        "shifts": list(plan.shifts),
        "wall_s": round(time.monotonic() - started, 1),
        "results": results,
    }
    if args.out:
        with atomic_write(args.out, "w") as handle:  # whole or not at all, also on Ctrl-C
            handle.write(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    from liquid_control.processes import exit_status_of

    sys.exit(exit_status_of("bc_ensemble.py", main))
