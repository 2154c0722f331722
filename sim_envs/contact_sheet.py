"""Contact sheet of the visual shifts: one rover camera view (same seed, same pose) per season x lighting,
plus fog and camera noise, labelled.

    python -m sim_envs.contact_sheet --out docs/shifts.png
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from liquid_control.atomic_file import atomic_path
from liquid_control.paths import output_file_problem

from .shifts import LIGHTINGS, SEASONS, Shift


def rover_view(shift: Shift, seed: int, steps: int, size) -> np.ndarray:
    """The camera image after `steps` expert updates from the episode of `seed` (``size``: pixels, or (height,
    width))."""
    import gymnasium as gym

    env = gym.make("LiquidRover-v0", shift=shift, render_size=size)
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        obs, *_ = env.step(env.unwrapped.expert_action())
    env.close()
    return obs["image"]


def out_problem(out: str) -> str | None:
    """Why the picture could not be written to ``out`` (None: it can)."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(out)
    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix and path.suffix.lower()[1:] not in formats:
        return f"matplotlib writes no {path.suffix!r} pictures; end the name in one of {', '.join(sorted(formats))}"
    return output_file_problem(path, "shifts.png")


def main(argv=None):
    """Command line: render the contact sheet to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/shifts.png")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="expert updates before the snapshot")
    parser.add_argument("--size", type=int, default=96, help="rendered pixels, the height if --width (env default 64)")
    parser.add_argument(
        "--width", type=int, default=0, help="rendered width of a camera that is not square (0: --size)"
    )
    args = parser.parse_args(argv)
    if not 8 <= args.size <= 1024:  # the camera's own limits (sim_envs.world.camera_image_shape)
        parser.error(f"--size must be between 8 and 1024 pixels, got {args.size}")
    if not (args.width == 0 or 8 <= args.width <= 1024):
        parser.error(f"--width must be 0 (square) or between 8 and 1024 pixels, got {args.width}")
    width = args.width or args.size
    size = args.size if width == args.size else (args.size, width)
    if args.steps < 0:
        parser.error(f"--steps must be >= 0, got {args.steps}")
    problem = out_problem(args.out)
    if problem:  # before the 20 renders, not a traceback after them
        parser.error(f"--out {args.out}: {problem}")
    os.environ.setdefault("MUJOCO_GL", "egl")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import sim_envs  # noqa: F401

    columns = [(lighting, Shift(lighting=lighting)) for lighting in LIGHTINGS]
    columns += [("fog=0.5", Shift(fog=0.5)), ("camera_noise=0.1", Shift(camera_noise=0.1))]
    fig, axes = plt.subplots(
        len(SEASONS), len(columns), figsize=(1.45 * len(columns), 1.55 * len(SEASONS)), dpi=100, squeeze=False
    )
    for row, season in enumerate(SEASONS):
        for col, (label, column_shift) in enumerate(columns):
            shift = Shift(season=season) + column_shift
            ax = axes[row][col]
            ax.imshow(rover_view(shift, args.seed, args.steps, size), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(label, fontsize=8)
            if col == 0:
                ax.set_ylabel(season, fontsize=8)
    fig.suptitle(f"LiquidRover-v0 camera, seed {args.seed}, {width}x{args.size} (width x height)", fontsize=8)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 0.95))
    try:  # whole or not at all: savefig straight into --out left half a picture (a full disk, Ctrl-C) over a good one
        with atomic_path(args.out) as tmp:
            fig.savefig(tmp, format=Path(args.out).suffix[1:].lower() or "png")
    except OSError as error:  # a folder that refused the file after the checks (a full disk, a read-only mount)
        parser.exit(1, f"{parser.prog}: error: --out {args.out}: cannot write the picture: {error}\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
