"""Speed of the worlds on one core: simulated seconds per wall second with the expert driving, and camera
frames per second (rover: 64x64 camera 15 Hz + IMU 100 Hz; balancer: IMU + encoders 200 Hz).

    .venv/bin/python benchmarks/bench_sim.py [--episodes 10]   # ~5 s

Target: rover >= 20x real time, said met or not in a line beside the measured figure. Wall-clock figures fall
when other processes share the core; the per-CPU-second figures (all threads of this process) do not. The last
lines are `name: value`.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym

import sim_envs  # noqa: F401

TARGET_REALTIME = 20  # rover: simulated seconds per wall second


def drive(env_id: str, episodes: int, **kwargs):
    """Wall seconds, CPU seconds (all threads of this process), simulated seconds, policy updates and camera
    frames over `episodes` expert episodes."""
    env = gym.make(env_id, **kwargs)
    env.reset(seed=0)  # create the renderer outside the timing
    env.step(env.unwrapped.expert_action())
    wall = cpu = sim = 0.0
    updates = frames = 0
    for seed in range(episodes):
        start, start_cpu = time.perf_counter(), time.process_time()
        env.reset(seed=seed)
        while True:
            _, _, terminated, truncated, info = env.step(env.unwrapped.expert_action())
            updates += 1
            if terminated or truncated:
                break
        wall += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        sim += info["sim_time"]
        frames += getattr(env.unwrapped, "frames_rendered", 0)
    env.close()
    return wall, cpu, sim, updates, frames


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=10, help="rover expert episodes, >= 1 (default 10)")
    args = parser.parse_args()
    if args.episodes < 1:  # the rates below divide by the time they took
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    results = {}
    wall, cpu, sim, updates, frames = drive("LiquidRover-v0", args.episodes)
    print(
        f"rover: {args.episodes} episodes, {sim:.1f} sim s in {wall:.2f} wall s ({cpu:.2f} CPU s), "
        f"{updates} updates, {frames} frames"
    )
    results["rover_sim_seconds_per_wall_second"] = sim / wall
    results["rover_sim_seconds_per_cpu_second"] = sim / cpu
    results["rover_camera_frames_per_second"] = frames / wall
    results["rover_camera_frames_per_sim_second"] = frames / sim
    wall, _, sim, updates, _ = drive("LiquidRover-v0", max(1, args.episodes // 2), render_size=128)
    results["rover_128px_sim_seconds_per_wall_second"] = sim / wall
    wall, cpu, sim, updates, _ = drive("LiquidBalance-v0", max(1, args.episodes // 2))
    print(f"balancer: {sim:.1f} sim s in {wall:.2f} wall s ({cpu:.2f} CPU s), {updates} updates")
    results["balancer_sim_seconds_per_wall_second"] = sim / wall
    results["balancer_sim_seconds_per_cpu_second"] = sim / cpu
    results["balancer_updates_per_second"] = updates / wall
    realtime, per_cpu = results["rover_sim_seconds_per_wall_second"], results["rover_sim_seconds_per_cpu_second"]
    print(
        f"target rover >= {TARGET_REALTIME}x real time: {realtime:.1f}x (sim s per wall s; {per_cpu:.1f}x per CPU s): "
        + ("met" if realtime >= TARGET_REALTIME else "NOT met")
    )
    for name, value in results.items():
        print(f"{name}: {value:.1f}")


if __name__ == "__main__":
    from liquid_control.processes import exit_status_of

    status = exit_status_of("bench_sim.py", main)  # None: done (runpy callers get no SystemExit)
    if status:
        sys.exit(status)
