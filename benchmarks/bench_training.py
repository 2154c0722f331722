"""Behaviour-cloning epoch of a policy recipe on the fused (compiled) core path against the per-step graph.

    .venv/bin/python benchmarks/bench_training.py [--config policies/configs/cfc_ncp_rover.yaml]
        [--data RUN/data/round_00 | --episodes 32] [--rounds 4] [--cores 2]

Two copies of the same policy (same initial weights) train on the same episodes, one with
``training.sequence_kernel: fused`` (the default: ``Policy.forward_sequence`` -> the core's sequence kernel,
compiled where the C kernels load) and one with ``stepwise`` (autograd over the per-step graph, how policies
trained before the kernels reached training). Their epochs alternate in this process, so both see the same
machine load; the clock is the process's CPU time, one torch thread. The episodes are a run's saved episodes
(``--data``, e.g. the first round of ``liquid-control train``) or fresh expert episodes of the recipe's world
(``--episodes``). A ``torch.profiler`` pass over a few batches of the fused path follows, to show where a BC
step's time goes (the camera CNN or the core). Which kernel ran is printed (the dispatcher's record). The last
lines are ``name: value``. docs/training.md ("Training speed") has the figures of the rover recipe.
``--length-batches`` adds a third way, the fused path with ``training.batching: length`` (episodes of similar length
share a batch: fewer steps an epoch, less padding computed), timed in the same alternation; the other ways, the
profiler pass and ``--cores`` take random batches whatever the config says.
"""

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import numpy as np

PATHS = ("fused", "stepwise")
ROOT = Path(__file__).resolve().parents[1]


def episodes_of(args, config, fail) -> list:
    """The saved episodes of ``--data``, or ``--episodes`` fresh expert episodes (env seeds 5,000,000 up).
    ``fail``: the parser's usage error (a bad --data: exit 2; before, an EpisodeFileError traceback or exit 1)."""
    from liquid_control.policy import observation_keys
    from liquid_control.training.data import EpisodeFileError, load_episode, rollout
    from liquid_control.training.episodes import make_env

    if args.data:
        if not Path(args.data).is_dir():
            fail(f"--data {args.data}: no such folder")
        files = sorted(Path(args.data).glob("ep_*.npz"))
        if not files:
            fail(f"--data {args.data}: no ep_*.npz episode files")
        try:
            return [load_episode(f) for f in files]
        except EpisodeFileError as exc:
            fail(f"--data {args.data}: {exc}")
    env = make_env(config)
    keys = observation_keys(config)
    return [rollout(env, seed=5_000_000 + i, observation_keys=keys) for i in range(args.episodes)]


def compare_cores(config, episodes, fit, cores: int, rounds: int) -> None:
    """Wall-clock seconds of a fused-path epoch: one thread, ``cores`` intra-op threads, ``cores`` data-parallel
    copies (alternating, so all see the same machine); prints the medians and the per-round speed-ups."""
    import torch

    from liquid_control.policy import Policy
    from liquid_control.training.bc import DataParallel, bc_epoch

    t = config["training"]
    intra, copies_name = f"{cores} intra-op threads", f"{cores} data-parallel copies"
    ways = {"1 thread": (1, 1), intra: (cores, 1), copies_name: (1, cores)}
    state = {}
    for name, (threads, copies) in ways.items():
        torch.manual_seed(0)
        policy = Policy.from_config(config)
        try:
            parallel = DataParallel(policy, copies) if copies > 1 else None
        except ValueError as exc:  # a policy with dropout
            print(f"{name}: skipped ({exc})")
            continue
        optimizer = torch.optim.Adam(policy.parameters(), lr=t["lr"])
        torch.set_num_threads(threads)  # warm-up, untimed (first calls allocate and prepare kernels)
        bc_epoch(policy, optimizer, episodes[: t["batch_size"]], rng=np.random.default_rng(1), parallel=parallel, **fit)
        state[name] = (policy, optimizer, parallel, threads, [])
    try:
        for r in range(rounds):
            for name, (policy, optimizer, parallel, threads, wall) in state.items():
                torch.set_num_threads(threads)
                start = time.perf_counter()
                bc_epoch(policy, optimizer, episodes, rng=np.random.default_rng(r), parallel=parallel, **fit)
                wall.append(time.perf_counter() - start)
                print(f"epoch {r} {name}: {wall[-1]:.2f} s wall", flush=True)
    finally:
        torch.set_num_threads(1)
        for _, _, parallel, _, _ in state.values():
            if parallel is not None:
                parallel.close()
    # The VM's speed drifts between rounds: speed-ups are the median of per-round ratios (same round, same drift).
    base = state["1 thread"][4]
    for name, (*_, wall) in state.items():
        key = name.replace(" ", "_").replace("-", "_")
        ratio = statistics.median(b / w for b, w in zip(base, wall))
        print(
            f"bc_epoch_wall_s_{key}: {statistics.median(wall):.3f}  (speed-up over 1 thread, per round: {ratio:.2f}x)"
        )
    if intra in state and copies_name in state:
        ratios = [c / i for c, i in zip(state[copies_name][4], state[intra][4])]
        print(f"data_parallel_over_intra_op_time_per_round: {', '.join(f'{r:.2f}' for r in ratios)}")
        print(f"data_parallel_over_intra_op_time_median: {statistics.median(ratios):.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(  # the repository's recipe wherever this runs from
        "--config",
        default=str(ROOT / "policies" / "configs" / "cfc_ncp_rover.yaml"),
        help="policy recipe (default: the repository's policies/configs/cfc_ncp_rover.yaml)",
    )
    parser.add_argument("--data", help="folder of saved episodes (ep_*.npz), e.g. RUN/data/round_00")
    parser.add_argument(
        "--episodes", type=int, default=32, help="expert episodes to collect without --data (default %(default)s)"
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="timed epochs per path, alternating (default %(default)s)"
    )
    parser.add_argument(
        "--profile-episodes", type=int, default=32, help="episodes of the profiler pass (0: none; default %(default)s)"
    )
    parser.add_argument(
        "--length-batches",
        action="store_true",
        help="also time the fused path with training.batching: length (batches of episodes of similar length)",
    )
    parser.add_argument(
        "--cores",
        type=int,
        default=0,
        help="also time a fused-path epoch in wall-clock seconds on one thread, on N intra-op threads and on N "
        "data-parallel copies (`liquid-control train --threads N`); run it alone on the machine (default 0: not timed)",
    )
    args = parser.parse_args(argv)
    minimum = {"rounds": 1, "episodes": 0 if args.data else 1, "profile_episodes": 0, "cores": 0}
    for name, least in minimum.items():  # the medians need a round, an epoch needs an episode
        if getattr(args, name) < least:
            parser.error(f"--{name.replace('_', '-')} must be >= {least}, got {getattr(args, name)}")
    from liquid_control.policy import PolicyConfigError, load_config

    try:
        config = load_config(args.config)
    except PolicyConfigError as exc:  # not found, or not a valid recipe
        parser.error(str(exc))
    import torch  # after the options and the config are checked: a wrong one is refused at once, not after torch's

    from liquid_control.cells import kernels
    from liquid_control.policy import Policy
    from liquid_control.training.bc import bc_epoch

    torch.set_num_threads(1)
    episodes = episodes_of(args, config, parser.error)
    t = config["training"]
    fit = dict(batch_size=t["batch_size"], sequence_length=t["sequence_length"], grad_clip=t["grad_clip"])
    updates = sum(len(e) for e in episodes)
    print(f"{config['name']}: {len(episodes)} episodes, {updates} updates, chunks of {t['sequence_length']}")
    ways = {path: (path, "random") for path in PATHS}
    if args.length_batches:
        ways["fused_length"] = ("fused", "length")
    runs, batching = {}, {}
    for way, (path, batches) in ways.items():
        variant = copy.deepcopy(config)
        variant["training"]["sequence_kernel"] = path
        torch.manual_seed(0)
        policy = Policy.from_config(variant)
        optimizer = torch.optim.Adam(policy.parameters(), lr=t["lr"])
        bc_epoch(policy, optimizer, episodes[: t["batch_size"]], rng=np.random.default_rng(1), **fit)  # warm-up
        runs[way], batching[way] = (policy, optimizer, [], set()), batches
    for r in range(args.rounds):
        for path, (policy, optimizer, cpu, ran) in runs.items():
            start = time.process_time()
            with kernels.recording() as calls:
                bc_epoch(policy, optimizer, episodes, rng=np.random.default_rng(r), batching=batching[path], **fit)
            cpu.append(time.process_time() - start)
            ran.update(backend for _, purpose, backend in calls if purpose == "sequence")
            print(f"epoch {r} {path}: {cpu[-1]:.2f} s CPU", flush=True)
    if args.profile_episodes > 0:
        from torch.profiler import ProfilerActivity, profile

        policy, optimizer, _, _ = runs["fused"]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            bc_epoch(policy, optimizer, episodes[: args.profile_episodes], rng=np.random.default_rng(0), **fit)
        table = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in table)
        share = {
            "convolutions (camera CNN)": ("convolution",),
            "core (fused sequence nodes)": ("FusedSequence",),
        }
        print(table.table(sort_by="self_cpu_time_total", row_limit=12))
        for name, needles in share.items():
            part = sum(e.self_cpu_time_total for e in table if any(n in e.key for n in needles))
            print(f"profile share, {name}: {100 * part / total:.0f}%")
    if args.cores > 1:
        compare_cores(config, episodes, fit, args.cores, args.rounds)
    medians = {path: statistics.median(runs[path][2]) for path in runs}
    for path in runs:
        print(f"bc_epoch_cpu_s_{path}: {medians[path]:.3f}  (kernel: {', '.join(sorted(runs[path][3]))})")
    print(f"speedup_fused_over_stepwise: {medians['stepwise'] / medians['fused']:.2f}")
    if "fused_length" in runs:  # the same round's epochs: the ratio of each round, then their median
        ratios = [r / b for r, b in zip(runs["fused"][2], runs["fused_length"][2])]
        print(f"speedup_length_over_random_batches: {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    from liquid_control.processes import exit_status_of

    sys.exit(exit_status_of("bench_training.py", main))
