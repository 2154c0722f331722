"""What `training.sun_elevation_range` shows the policy: one rover frame lit from suns of several directions.

    python scripts/sun_sheet.py                      # writes docs/sun_randomisation/suns.png
    python scripts/sun_sheet.py --seed 7 --low 30 --out /tmp/suns.png

Rows: sun elevations from ``--low`` to 90 degrees (the recipe draws them uniformly); columns: four azimuths (it
draws any). Every frame is the training world (noon's light colour, ambient and sky) with only the sun's direction
moved, as `EpisodeSun` does. The last row, for comparison and never rendered in training: the world's own noon sun
and the `dusk` test shift (its sun 13 degrees up, red light, dim ambient, dusk sky).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
AZIMUTHS = (0, 90, 180, 270)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3, help="episode seed of the rover frame (default 3)")
    parser.add_argument("--low", type=float, default=30.0, help="lowest sun elevation shown, degrees (default 30)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "sun_randomisation" / "suns.png"), help="image to write")
    args = parser.parse_args(argv)
    if not 0 <= args.low < 90:
        parser.error(f"--low must be in [0, 90) degrees, got {args.low:g}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    from liquid_control.paths import output_file_problem

    problem = output_file_problem(args.out, "suns.png")  # before the worlds are built and rendered
    if problem:
        parser.error(f"--out {args.out}: {problem}")
    os.environ.setdefault("MUJOCO_GL", "egl")

    from liquid_control.figures import pyplot, save_figure
    from liquid_control.paths import policies_dir
    from liquid_control.policy import load_config
    from liquid_control.training.augment import EpisodeSun
    from liquid_control.training.episodes import make_env

    config = load_config(policies_dir() / "configs" / "cfc_ncp_rover_robust.yaml")
    elevations = np.linspace(90.0, args.low, 4)

    def frame(env) -> np.ndarray:
        env.reset(seed=args.seed)
        return env.unwrapped._render_camera().copy()

    env = make_env(config)
    try:
        world = env.unwrapped
        light = EpisodeSun.light_id(world)
        own = world.model.light_dir[light].copy()
        rows = []
        for elevation in elevations:
            row = []
            for azimuth in AZIMUTHS:
                sun = EpisodeSun([elevation, elevation], np.random.default_rng(0))
                sun.azimuth = np.radians(azimuth)
                world.model.light_dir[light] = sun.direction
                row.append(frame(env))
            rows.append(row)
        world.model.light_dir[light] = own
        noon = frame(env)
    finally:
        env.close()
    dusk_env = make_env(config, "dusk")
    try:
        dusk = frame(dusk_env)
    finally:
        dusk_env.close()

    fig, axes = pyplot().subplots(len(elevations) + 1, len(AZIMUTHS), figsize=(2.2 * len(AZIMUTHS), 2.3 * 5))
    for r, (elevation, row) in enumerate(zip(elevations, rows)):
        for c, (azimuth, image) in enumerate(zip(AZIMUTHS, row)):
            axes[r, c].imshow(image)
            axes[r, c].set_title(f"sun {elevation:.0f} deg up, azimuth {azimuth}", fontsize=8)
    for c, (title, image) in enumerate([("world's own sun (noon, 70 deg up)", noon), ("dusk: test shift", dusk)]):
        axes[-1, c].imshow(image)
        axes[-1, c].set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.set_visible(False)
    fig.suptitle(f"training.sun_elevation_range: [{args.low:g}, 90] (rows 1-4); last row not in training", fontsize=10)
    fig.tight_layout()
    save_figure(fig, args.out, dpi=110)  # the PNG whole or not at all, also on Ctrl-C
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    from liquid_control.processes import exit_status_of

    raise SystemExit(exit_status_of("sun_sheet.py", main))
