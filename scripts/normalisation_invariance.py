"""How much of a visual shift does each camera input normalisation leave? A test-time diagnostic, no policy.

    python scripts/normalisation_invariance.py [--episodes 3] [--out docs/normalisation_invariance]

The expert drives the same episodes (same seeds, so the same layouts, motion and frame times) in the training
world and in each visual shift; every frame pair shows the same state under two lightings, seasons or fog. For
each ``encoder.camera.normalize`` mode (the model's own ``CameraEncoder.scale``) it prints

    shift / state = mean squared difference between a frame and the same state under the shift
                    / mean squared difference between two random states of the training world

0 would be a representation the shift does not touch; 1 one where the shift moves frames as far apart as
different places in the world. A ratio says nothing about what a network learns, only how far apart the CNN's
inputs are, and a mode that makes a shift vanish may also remove what the task needs (``chromaticity`` makes
night and noon alike and dark tree trunks invisible; docs/training.md has the trained policies). Nothing here
is trained: the shifts are rendered only to measure. Writes results.json and results.md under --out (by default
the repository's docs/normalisation_invariance, whatever the current folder).
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

# presets of sim_envs.shifts, and shift strings: camera noise (std 0.1 of the pixel range) alone and at night,
# since noise on dark pixels is what the log modes amplify most
SHIFTS = ("dusk", "night", "overcast", "autumn", "winter", "fog", "camera_noise_0.1", "night,camera_noise=0.1")
FIRST_SEED = 40_000_000  # outside the training and evaluation seed ranges (liquid_control.evaluation.plan)


def expert_frames(shift, seed: int, steps: int):
    """The camera frames of one expert-driven episode (uint8 (T, H, W, 3))."""
    import gymnasium as gym
    import numpy as np

    env = gym.make("LiquidRover-v0", shift=shift).unwrapped
    obs, _ = env.reset(seed=seed)
    frames = [obs["image"]]
    for _ in range(steps):
        obs, _, terminated, truncated, _ = env.step(env.expert_action())
        frames.append(obs["image"])
        if terminated or truncated:
            break
    env.close()
    return np.array(frames)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=3, help="expert episodes per shift (default 3)")
    parser.add_argument("--steps", type=int, default=150, help="updates per episode at most (default 150)")
    parser.add_argument(
        "--out",
        default=str(ROOT / "docs" / "normalisation_invariance"),  # the repository's, from any folder
        help="folder for results.json and results.md (default: docs/normalisation_invariance of the repository)",
    )
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.steps < 1:
        parser.error("--episodes and --steps must be at least 1")
    from liquid_control.paths import output_file_problem

    problem = output_file_problem(Path(args.out) / "results.json", "results.json")  # before the episodes
    if problem:
        parser.error(f"--out {args.out}: {problem}")
    import numpy as np
    import torch

    import sim_envs  # noqa: F401  (registers the worlds)
    from liquid_control.atomic_file import atomic_write
    from liquid_control.policy.config import CAMERA_NORMALIZATIONS
    from liquid_control.policy.encoders import CameraEncoder
    from sim_envs.shifts import parse_shift

    started = time.monotonic()
    seeds = range(FIRST_SEED, FIRST_SEED + args.episodes)
    clean = {seed: expert_frames(None, seed, args.steps) for seed in seeds}
    ratios: dict[str, dict[str, float]] = {}
    for name in SHIFTS:
        pairs = []
        for seed in seeds:
            shifted = expert_frames(parse_shift(name), seed, args.steps)
            n = min(len(shifted), len(clean[seed]))
            pairs.append((clean[seed][:n], shifted[:n]))
        a = torch.from_numpy(np.concatenate([p[0] for p in pairs]))
        b = torch.from_numpy(np.concatenate([p[1] for p in pairs]))
        other = torch.from_numpy(np.random.default_rng(0).permutation(len(a)))
        ratios[name] = {}
        for mode in CAMERA_NORMALIZATIONS:
            height, width = a.shape[1:3]
            scale = CameraEncoder(height, width, [4], [3], [1], 4, normalize=mode).double().scale
            fa, fb = scale(a), scale(b)
            spread = ((fa - fa[other]) ** 2).mean()
            if not spread > 0:  # before: the ratio infinite (or NaN), written into results.json as Infinity
                parser.error(
                    f"--episodes {args.episodes} --steps {args.steps}: {len(a)} frames of the training world, whose "
                    f"random pairs do not differ under `{mode}`: nothing to measure a shift against; give more"
                )
            ratios[name][mode] = round(float(((fa - fb) ** 2).mean() / spread), 4)
        print(name, ratios[name], flush=True)
    out = Path(args.out)
    provenance = {
        "command": "python scripts/normalisation_invariance.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "expert_episode_seeds": [seeds[0], seeds[-1]],
        "frames_per_shift": int(len(a)),
        "wall_s": round(time.monotonic() - started, 1),
    }
    with atomic_write(out / "results.json", "w") as handle:  # whole or not at all, also on Ctrl-C
        handle.write(json.dumps({"provenance": provenance, "shift_over_state": ratios}, indent=1))
    modes = list(CAMERA_NORMALIZATIONS)
    lines = ["| shift | " + " | ".join(f"`{m}`" for m in modes) + " |", "| --- |" + " ---: |" * len(modes)]
    lines += [f"| {name} | " + " | ".join(f"{ratios[name][m]:.3f}" for m in modes) + " |" for name in SHIFTS]
    with atomic_write(out / "results.md", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    from liquid_control.processes import exit_status_of

    sys.exit(exit_status_of("normalisation_invariance.py", main))
