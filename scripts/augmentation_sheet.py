"""What each training augmentation does to a camera frame: one rover frame, one panel per kind.

    python scripts/augmentation_sheet.py                      # writes docs/augmentations.png
    python scripts/augmentation_sheet.py --seed 7 --out /tmp/sheet.png

Each panel is the same frame (the rover world at its training distribution) with one kind of
``training.augmentation`` applied as a training batch would draw it; ``yaw`` is shown turned by -15 and +15
degrees with the turn label it would get (the recorded command here is 0). docs/training.md lists the ranges.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
YAW_EXAMPLE = {"gain": 1.667, "hfov_deg": 100.0, "pitch_deg": 11.3, "max_deg": 15.0, "rate_hz": 1.0, "decay_s": 0.4}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3, help="episode seed of the rover frame (default 3)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "augmentations.png"), help="image to write")
    args = parser.parse_args(argv)
    from liquid_control.paths import output_file_problem

    problem = output_file_problem(args.out, "augmentations.png")  # before the world is built and rendered
    if problem:
        parser.error(f"--out {args.out}: {problem}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    os.environ.setdefault("MUJOCO_GL", "egl")
    import gymnasium as gym
    import torch  # after the options are checked: a wrong one is refused at once, not after torch's import

    import sim_envs  # noqa: F401  (registers the worlds)
    from liquid_control.figures import fit_suptitle, pyplot, save_figure
    from liquid_control.training.augment import AUGMENTATION_RANGES, EpisodeAugmentation, YawRecovery, turn_view

    env = gym.make("LiquidRover-v0", render_size=64)
    env.reset(seed=args.seed)
    frame = env.unwrapped._render_camera().copy()
    env.close()
    images = torch.from_numpy(frame)[None, None]  # (B=1, T=1, H, W, 3)
    panels = [("recorded", frame)]
    for kind in AUGMENTATION_RANGES:
        if kind == "yaw":
            continue
        draws = np.random.default_rng(args.seed)
        aug = EpisodeAugmentation([kind], 1, draws)
        if kind == "mirror":  # show the flip (p = 0.5 per episode)
            aug = next(a for a in (EpisodeAugmentation([kind], 1, draws) for _ in range(20)) if a.mirror[0])
        panels.append((kind, aug.apply(images)[0, 0].numpy()))
    yaw = YawRecovery(YAW_EXAMPLE, 1, np.random.default_rng(0))
    for deg in (-15.0, 15.0):
        error = math.radians(deg)
        turned = turn_view(images.float() / 255.0, [[error]], yaw.hfov, yaw.pitch)[0, 0]
        label = float(yaw.corrected(torch.zeros(1, 1), np.array([[error]]))[0, 0])
        panels.append((f"yaw {deg:+.0f} deg\nturn label {label:+.2f}", (turned.clamp(0, 1) * 255).byte().numpy()))
    cols = 4
    rows = math.ceil(len(panels) / cols)
    fig, axes = pyplot().subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows))
    for ax, (title, image) in zip(axes.flat, panels):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fit_suptitle(  # the panels alone named a kind each, not what the sheet is or where its ranges are
        fig,
        f"training.augmentation: one LiquidRover-v0 camera frame (seed {args.seed}), each kind drawn once as in "
        "training (ranges: docs/training.md)",
        9,
    )
    fig.tight_layout()
    save_figure(fig, args.out, dpi=90)  # the PNG whole or not at all, also on Ctrl-C
    print(f"augmentation sheet -> {args.out}")
    return 0


if __name__ == "__main__":
    from liquid_control.processes import exit_status_of

    raise SystemExit(exit_status_of("augmentation_sheet.py", main))
