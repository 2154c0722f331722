"""One evaluation episode -> one flat record of metrics (the unit the log stores and the report reads).

`EpisodeTally` is the one place an episode's metrics are accumulated and its record is built: the batched
evaluation (`batched.run_batch`, many episodes in lockstep) and the one-episode loop `run_episode` (used to
replay an episode for the figures, and by the benchmark as the reference) both feed it.
"""

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


def _dt(obs) -> float:
    return float(np.asarray(obs["dt"]).reshape(-1)[0])


class EpisodeTally:
    """Metrics of one running episode: call ``before_step`` with each action, ``after_step`` with each result."""

    def __init__(self, job: EpisodeJob, info: dict):
        self.job = job
        self.tracker = SmoothnessTracker()
        self.total_return, self.steps, self.collision, self.sim_time = 0.0, 0, False, 0.0
        self.start_stamp = info.get("stamp")
        self.started = time.perf_counter()

    def before_step(self, action: np.ndarray, obs: dict) -> np.ndarray:
        """Check the policy's action (a non-finite one stops the evaluation, naming the episode) and track it."""
        action = np.asarray(action, dtype=np.float64)
        if not np.isfinite(action).all():
            job = self.job
            raise RuntimeError(
                f"policy {job.policy!r} (seed {job.training_seed}) produced a non-finite "
                f"action {action} in episode {job.episode_seed} under shift {job.shift!r}"
            )
        self.tracker.add(action, _dt(obs) if self.steps else None)
        return action

    def after_step(self, obs: dict, reward: float, info: dict) -> None:
        """Count one step's reward, dt and collision."""
        self.total_return += float(reward)
        self.steps += 1
        self.sim_time += _dt(obs)
        self.collision = self.collision or bool(info.get("collision", False))

    def record(self, info: dict) -> dict:
        """The finished episode's record (``info``: the last step's)."""
        job, sim_time = self.job, self.sim_time
        if self.start_stamp is not None and info.get("stamp") is not None:
            sim_time = float(info["stamp"]) - float(self.start_stamp)
        success = bool(info.get("success", False))
        clipped = info.get("clipped_actions", 0)
        return {
            "policy": job.policy,
            "training_seed": int(job.training_seed),
            "shift": job.shift,
            "episode_seed": int(job.episode_seed),
            "world": job.world,
            "checkpoint": job.checkpoint or "",
            "success": success,
            "collision": self.collision,
            "outcome": "success" if success else ("collision" if self.collision else "timeout"),
            "return": self.total_return,
            "steps": self.steps,
            "sim_time_s": sim_time,
            "mean_dt_s": sim_time / self.steps if self.steps else 0.0,
            "smoothness": self.tracker.value,
            "clipped_actions": int(np.sum(clipped)) if clipped is not None else 0,
            "wall_time_s": time.perf_counter() - self.started,
        }


def run_episode(job: EpisodeJob, recorder=None) -> dict:
    """Drive one seeded episode to its end in a world of its own, one policy call per update.

    ``recorder(obs, action, info, state)`` sees every update (figures; the last call has ``action=None``):
    ``state`` is the policy's recurrent state (1, S) after the update, None for the expert.
    """
    env = agents.make_env(job.world, job.shift, job.env_kwargs)
    try:
        agent = agents.make_agent(job.checkpoint, job.checkpoint_sha, env)
        obs, info = env.reset(seed=int(job.episode_seed))
        agent.reset()
        tally = EpisodeTally(job, info)
        while True:
            action = tally.before_step(agent.act(obs), obs)
            if recorder is not None:
                recorder(obs, action, info, getattr(agent, "state", None))
            obs, reward, terminated, truncated, info = env.step(action.astype(np.float32))
            tally.after_step(obs, reward, info)
            if terminated or truncated:
                break
        if recorder is not None:
            recorder(obs, None, info, getattr(agent, "state", None))
        record = tally.record(info)
        if job.checkpoint is not None:  # as run_batch's records say it
            record["kernels"] = agents.kernel_path(agent.policy)
        return record
    finally:
        env.close()


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
        """Add ``action``; its change from the previous one counts over ``dt_since_previous`` (None: first action)."""
        if self._previous is not None and dt_since_previous is not None:
            self._total_change += float(np.abs(action - self._previous).mean())
            self._total_time += float(dt_since_previous)
        self._previous = np.array(action, dtype=np.float64)

    @property
    def value(self) -> float:
        """Mean |delta action| per second so far (0 before any measured time)."""
        return self._total_change / self._total_time if self._total_time > 0 else 0.0
