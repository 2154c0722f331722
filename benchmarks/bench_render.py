"""Would batching the camera renders of lockstep worlds make evaluation cheaper? CPU-ms per 64x64 frame.

    .venv/bin/python benchmarks/bench_render.py [--worlds 16] [--repeats 20]   # ~10 s

Rendering is what a batched evaluation cannot share between its lanes (``bench_eval.py``): every lane renders
its own frame. On a CPU, MuJoCo renders through Mesa's llvmpipe. Two ways, same worlds, same process, alternated:

- **one by one**: what the worlds did until 2026-12-03 (``sim_envs.world.shared_renderer``: one GL context per
  MJCF, each world's full scene rendered into a frame-sized buffer and read back);
- **culled**: what the worlds do now (``FrontCamera._render_camera``): the same, with the geoms wholly outside
  the camera's view left out of the scene (``sim_envs.world.FrustumCull``), checked to give the same pixels;
- **tiled**: every world's scene rendered into its own viewport of one larger buffer, one read-back for all
  (what a batched renderer would do), and the tiles checked against the one-by-one frames.

The clock is the process's CPU time (llvmpipe's threads included). The last lines are ``name: value``.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("LP_NUM_THREADS", "0")  # as sim_envs.world.make_renderer sets it (render in the calling thread)

import gymnasium as gym
import mujoco
import numpy as np

import sim_envs  # noqa: F401
from sim_envs.world import make_renderer

SIZE = 64


class TiledRenderer:
    """Renders the front camera of several worlds of one model into the tiles of one offscreen buffer."""

    def __init__(self, model, count: int):
        self.columns = int(np.ceil(np.sqrt(count)))
        self.rows = int(np.ceil(count / self.columns))
        width, height = self.columns * SIZE, self.rows * SIZE
        saved = model.vis.global_.offwidth, model.vis.global_.offheight
        model.vis.global_.offwidth, model.vis.global_.offheight = width, height
        try:
            self.gl = mujoco.GLContext(width, height)
            self.gl.make_current()
            self.context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        finally:
            model.vis.global_.offwidth, model.vis.global_.offheight = saved
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self.context)
        self.model, self.scene = model, mujoco.MjvScene(model, maxgeom=10000)
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_FOG):
            self.scene.flags[flag] = 0  # as make_renderer
        self.option, self.perturb, self.camera = mujoco.MjvOption(), mujoco.MjvPerturb(), mujoco.MjvCamera()
        self.camera.type, self.camera.fixedcamid = mujoco.mjtCamera.mjCAMERA_FIXED, model.camera("front").id
        self.pixels = np.empty((height, width, 3), np.uint8)

    def render(self, datas) -> list[np.ndarray]:
        """One frame per world (top row first, as ``mujoco.Renderer.render`` returns it)."""
        self.gl.make_current()
        for i, data in enumerate(datas):
            mujoco.mjv_updateScene(
                self.model, data, self.option, self.perturb, self.camera, mujoco.mjtCatBit.mjCAT_ALL, self.scene
            )
            viewport = mujoco.MjrRect((i % self.columns) * SIZE, (i // self.columns) * SIZE, SIZE, SIZE)
            mujoco.mjr_render(viewport, self.scene, self.context)
        full = mujoco.MjrRect(0, 0, self.pixels.shape[1], self.pixels.shape[0])
        mujoco.mjr_readPixels(self.pixels, None, full, self.context)
        tiles = []
        for i in range(len(datas)):
            x, y = (i % self.columns) * SIZE, (i // self.columns) * SIZE
            tiles.append(np.flipud(self.pixels[y : y + SIZE, x : x + SIZE]))  # read-back rows run bottom-up
        return tiles

    def close(self):
        """Free the GL context."""
        self.context.free()
        self.gl.free()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", type=int, default=16, help="lockstep worlds (lanes; default %(default)s)")
    parser.add_argument(
        "--repeats", type=int, default=20, help="timed renders of all worlds, per way and round (default %(default)s)"
    )
    args = parser.parse_args(argv)
    for name in ("worlds", "repeats"):  # the figures divide by both
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    envs = [gym.make("LiquidRover-v0", render_size=SIZE).unwrapped for _ in range(args.worlds)]
    for seed, env in enumerate(envs):
        env.reset(seed=seed)
    model, datas = envs[0].model, [env.data for env in envs]
    single, tiled = make_renderer(model, SIZE, SIZE), TiledRenderer(model, args.worlds)

    def one_by_one():
        frames = []
        for data in datas:
            single.update_scene(data, camera="front")
            frames.append(single.render())
        return frames

    ways = {
        "one_by_one": one_by_one,
        "culled": lambda: [env._render_camera() for env in envs],
        "tiled": lambda: tiled.render(datas),
    }
    reference = one_by_one()
    difference = {
        name: max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(reference, ways[name]()))
        for name in ("culled", "tiled")
    }
    cpu = {name: [] for name in ways}
    for _ in range(3):  # rounds, ways alternated
        for name, render in ways.items():
            render()  # warm-up
            start = time.process_time()
            for _ in range(args.repeats):
                render()
            cpu[name].append((time.process_time() - start) / (args.repeats * args.worlds) * 1e3)
    tiled.close()
    single.close()
    for env in envs:
        env.close()
    best = {name: min(values) for name, values in cpu.items()}
    print(f"{args.worlds} rover worlds, {SIZE}x{SIZE} front camera, CPU-ms per frame (minimum of 3 rounds)")
    for name, value in difference.items():
        print(f"largest pixel difference, {name} vs one by one: {value} (of 255)")
    for name, value in best.items():
        print(f"render_cpu_ms_per_frame_{name}: {value:.3f}")
    for name in ("culled", "tiled"):
        print(f"{name}_over_one_by_one: {best[name] / best['one_by_one']:.2f}")
    return 0


if __name__ == "__main__":
    from liquid_control.processes import exit_status_of

    sys.exit(exit_status_of("bench_render.py", main))
