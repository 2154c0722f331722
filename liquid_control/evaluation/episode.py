"""One evaluation episode -> one flat record of metrics (the unit every backend runs and the log stores)."""

from __future__ import annotations

import time

import numpy as np

from liquid_control.evaluation import agents
from liquid_control.evaluation.plan import EpisodeJob

# Columns of results.csv, in order (a record may carry nothing else).
RECORD_FIELDS = (
    "policy",
    "training_seed",
    "shift",
    "episode_seed",
    "world",
    "checkpoint",
    "success",
    "collision",
    "outcome",
    "return",
    "steps",
    "sim_time_s",
    "mean_dt_s",
    "smoothness",
    "clipped_actions",
    "wall_time_s",
)


def run_episode(job: EpisodeJob, recorder=None) -> dict:
    """Drive one seeded episode to its end; `recorder(obs, action, info)` sees every update (plots)."""
    env = agents.make_env(job.world, job.shift, job.env_kwargs)
    start = time.perf_counter()
    try:
        agent = agents.make_agent(job.checkpoint, job.checkpoint_sha, env)
        obs, info = env.reset(seed=int(job.episode_seed))
        agent.reset()
        tracker = SmoothnessTracker()
        total_return, steps, collision = 0.0, 0, False
        sim_time, start_stamp = 0.0, info.get("stamp")
        while True:
            action = np.asarray(agent.act(obs), dtype=np.float64)
            if not np.all(np.isfinite(action)):
                raise RuntimeError(
                    f"policy {job.policy!r} (seed {job.training_seed}) produced a non-finite "
                    f"action {action} in episode {job.episode_seed} under shift {job.shift!r}"
                )
            tracker.add(action, float(np.asarray(obs["dt"]).reshape(-1)[0]) if steps else None)
            if recorder is not None:
                recorder(obs, action, info)
            obs, reward, terminated, truncated, info = env.step(action.astype(np.float32))
            total_return += float(reward)
            steps += 1
            sim_time += float(np.asarray(obs["dt"]).reshape(-1)[0])
            collision = collision or bool(info.get("collision", False))
            if terminated or truncated:
                break
        if recorder is not None:
            recorder(obs, None, info)
        if start_stamp is not None and info.get("stamp") is not None:
            sim_time = float(info["stamp"]) - float(start_stamp)
        success = bool(info.get("success", False))
        clipped = info.get("clipped_actions", 0)
    finally:
        env.close()
    return {
        "policy": job.policy,
        "training_seed": int(job.training_seed),
        "shift": job.shift,
        "episode_seed": int(job.episode_seed),
        "world": job.world,
        "checkpoint": job.checkpoint or "",
        "success": success,
        "collision": collision,
        "outcome": "success" if success else ("collision" if collision else "timeout"),
        "return": total_return,
        "steps": steps,
        "sim_time_s": sim_time,
        "mean_dt_s": sim_time / steps if steps else 0.0,
        "smoothness": tracker.value,
        "clipped_actions": int(np.sum(clipped)) if clipped is not None else 0,
        "wall_time_s": time.perf_counter() - start,
    }


class SmoothnessTracker:
    """Mean |delta action| per second: sum over updates of mean_i |a_t,i - a_t-1,i|, over the measured time.

    Divided by the total elapsed time rather than averaging per-step rates, so one very short dt (jitter)
    does not dominate; units are normalized action units per second, lower is smoother.
    """

    def __init__(self):
        self._previous = None
        self._total_change = 0.0
        self._total_time = 0.0

    def add(self, action: np.ndarray, dt_since_previous: float | None) -> None:
        if self._previous is not None and dt_since_previous is not None:
            self._total_change += float(np.mean(np.abs(action - self._previous)))
            self._total_time += float(dt_since_previous)
        self._previous = np.array(action, dtype=np.float64)

    @property
    def value(self) -> float:
        return self._total_change / self._total_time if self._total_time > 0 else 0.0
