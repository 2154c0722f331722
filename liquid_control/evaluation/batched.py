"""Vectorised evaluation: the episodes of one policy under one shift stepped in lockstep, one world per lane,
one batched policy call per update.

A batch is a list of `EpisodeJob`s that share policy, training seed, shift and world (`make_batches` cuts a
plan into them). Each lane holds one world and runs one episode at a time; when its episode ends the lane
resets its world with the next episode seed of the batch, so a batch of 30 episodes on 30 lanes does 30
episodes in one pass and long episodes do not hold up a pass. Per update the active lanes' observations are
stacked and the policy steps all of them at once (its recurrent state is one (lanes, S) tensor).

The worlds live in the worker process (`WorldPool`) and are reused by the next batch of the same shift; worlds
of one shift also share one offscreen renderer (`sim_envs.world.shared_renderer`). `reset(seed=...)` fixes an
episode completely, so a reused world runs the same episode as a fresh one. A batch is deterministic; the
records of an episode can differ in the last bits of the policy's arithmetic with the batch it shares
(float32 sums in another order), which a chaotic closed loop can amplify into another outcome, never into a
different world: the paired design holds for any batching.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque

import numpy as np
import torch

from liquid_control.cells.dt import DT_TOLERANCE_S
from liquid_control.evaluation import agents
from liquid_control.evaluation.episode import EpisodeTally
from liquid_control.evaluation.plan import DEFAULT_LANES, EpisodeJob
from liquid_control.policy import PolicyAgent, observation_keys
from liquid_control.policy.agent import DEFAULT_MAX_GAP_S

MAX_POOLED_WORLDS = 96  # worlds a process keeps for later batches (a few shifts' worth)


def batch_key(job: EpisodeJob) -> tuple:
    """What the episodes of one batch share (one policy call steps them all)."""
    return (job.policy, job.training_seed, job.shift, job.world, job.checkpoint, job.checkpoint_sha)


def make_batches(jobs: list[EpisodeJob], lanes: int = DEFAULT_LANES) -> list[list[EpisodeJob]]:
    """Group jobs by policy, training seed and shift (in order of first appearance), cut into <= `lanes`."""
    if lanes < 1:
        raise ValueError(f"lanes must be >= 1, got {lanes}")
    groups: OrderedDict[tuple, list[EpisodeJob]] = OrderedDict()
    for job in jobs:
        groups.setdefault(batch_key(job), []).append(job)
    return [group[i : i + lanes] for group in groups.values() for i in range(0, len(group), lanes)]


class WorldPool:
    """This process's worlds, by (world, shift, env kwargs); least recently used shifts are closed first."""

    def __init__(self, max_worlds: int = MAX_POOLED_WORLDS):
        self.max_worlds = max_worlds
        self._worlds: OrderedDict[tuple, list] = OrderedDict()

    def get(self, world: str, shift: str, env_kwargs: dict, count: int) -> list:
        """``count`` worlds for the key, built as needed; other keys' worlds closed beyond ``max_worlds``."""
        key = (world, shift, json.dumps(env_kwargs, sort_keys=True))  # values may be lists (update_on)
        envs = self._worlds.pop(key, [])
        while len(envs) < count:
            envs.append(agents.make_env(world, shift, env_kwargs))
        self._worlds[key] = envs  # most recently used last: never the one evicted below
        while len(self._worlds) > 1 and sum(len(v) for v in self._worlds.values()) > self.max_worlds:
            for env in self._worlds.pop(next(iter(self._worlds))):
                env.close()
        return envs[:count]

    def close(self) -> None:
        """Close every pooled world."""
        for envs in self._worlds.values():
            for env in envs:
                env.close()
        self._worlds.clear()


_POOL = WorldPool()


class BatchedPolicy:
    """A policy driving `lanes` episodes at once: one (lanes, S) recurrent state, one call per update.

    A lane's dt over ``max_gap_s`` resets its state and is integrated as 0, PolicyAgent's rule (``gap_resets``).
    """

    def __init__(self, policy, lanes: int, max_gap_s: float = DEFAULT_MAX_GAP_S):
        self.policy = policy.eval()
        self.keys = observation_keys(policy.config)  # the sensors and the time inputs (event, ages)
        self.state = policy.initial_state(lanes)
        self._initial = policy.initial_state(1)[0]
        self.max_gap_s = float(max_gap_s)
        self._started = [False] * lanes  # a lane's first update is not a gap
        self.gap_resets = 0

    def reset_lane(self, lane: int) -> None:
        """Put ``lane`` back to the policy's initial state (a new episode starts there)."""
        self.state[lane] = self._initial
        self._started[lane] = False

    @torch.no_grad()
    def act(self, lanes: list[int], observations: list[dict]) -> np.ndarray:
        """Actions (len(lanes), A) for the lanes' current observations; advances their states by their dt.

        The gap rule runs on Python floats: a few dozen lanes, where each torch operation costs microseconds."""
        batch = {}
        for key in self.keys:
            lacking = next((obs for obs in observations if key not in obs), None)
            if lacking is not None:
                raise ValueError(f"observation lacks {key!r} (has {', '.join(sorted(lacking))})")
            batch[key] = torch.from_numpy(np.stack([obs[key] for obs in observations]))
        dt = np.array([float(np.asarray(o["dt"]).reshape(-1)[0]) for o in observations], np.float32)
        gaps = [  # the float32 dts compared in float64, as PolicyAgent compares
            i
            for i, (lane, lane_dt) in enumerate(zip(lanes, dt.tolist()))
            if self._started[lane] and lane_dt > self.max_gap_s + DT_TOLERANCE_S
        ]
        for i in gaps:
            self.state[lanes[i]] = self._initial
            dt[i] = 0.0
        self.gap_resets += len(gaps)
        for lane in lanes:
            self._started[lane] = True
        if len(lanes) == len(self.state) and all(i == lane for i, lane in enumerate(lanes)):
            # every lane in order: the state itself, no gather and scatter (updated in place, as the scatter did)
            action, state = self.policy.step(batch, self.state, torch.from_numpy(dt))
            self.state.copy_(state)
            return action.numpy()
        index = torch.as_tensor(lanes)
        action, state = self.policy.step(batch, self.state[index], torch.from_numpy(dt))
        self.state[index] = state
        return action.numpy()


class _AgentLanes:
    """One `PolicyAgent` per lane, for policies whose updates are not the env's (``observation.resample_hz``:
    they step on their own fixed-rate clock, which differs from lane to lane)."""

    def __init__(self, policy, lanes: int):
        self.agents = [PolicyAgent(policy) for _ in range(lanes)]

    def reset_lane(self, lane: int) -> None:
        self.agents[lane].reset()

    def act(self, lanes: list[int], observations: list[dict]) -> np.ndarray:
        return np.stack([self.agents[lane].act(obs) for lane, obs in zip(lanes, observations)])


class _ExpertDriver:
    """The privileged expert behind the same interface (it needs no batching: no network)."""

    def __init__(self, envs):
        self.envs = envs

    def reset_lane(self, lane: int) -> None:
        pass

    def act(self, lanes: list[int], observations: list[dict]) -> np.ndarray:
        return np.stack([np.asarray(self.envs[lane].unwrapped.expert_action(), np.float64) for lane in lanes])


def run_batch(jobs: list[EpisodeJob], lanes: int | None = None, pool: WorldPool | None = None) -> list[dict]:
    """Run the episodes `jobs` (one batch: same policy, training seed, shift) in lockstep; records in job order.

    ``lanes``: episodes stepped together (default: all of them); a lane whose episode ends takes the next one.
    """
    if not jobs:
        return []
    key = batch_key(jobs[0])
    odd = [j for j in jobs if batch_key(j) != key or j.env_kwargs != jobs[0].env_kwargs]
    if odd:
        raise ValueError(f"a batch holds one policy, training seed and shift; got {batch_key(odd[0])} besides {key}")
    pool = _POOL if pool is None else pool
    first = jobs[0]
    lanes = len(jobs) if lanes is None else max(1, min(int(lanes), len(jobs)))
    envs = pool.get(first.world, first.shift, first.env_kwargs, lanes)
    if first.checkpoint is None:
        driver = _ExpertDriver(envs)
    else:
        policy = agents.load_cached_policy(first.checkpoint, first.checkpoint_sha)
        resampled = policy.config["observation"].get("resample_hz") is not None
        driver = (_AgentLanes if resampled else BatchedPolicy)(policy, lanes)
    queue = deque(enumerate(jobs))
    running: dict[int, list] = {}  # lane -> [index in jobs, tally, obs]
    records: list[dict | None] = [None] * len(jobs)

    def start(lane: int) -> None:
        index, job = queue.popleft()
        obs, info = envs[lane].reset(seed=int(job.episode_seed))
        driver.reset_lane(lane)
        running[lane] = [index, EpisodeTally(job, info), obs]

    for lane in range(lanes):
        start(lane)
    while running:
        active = sorted(running)
        actions = driver.act(active, [running[lane][2] for lane in active])
        for lane, action in zip(active, actions):
            index, tally, obs = running[lane]
            action = tally.before_step(action, obs)
            obs, reward, terminated, truncated, info = envs[lane].step(action.astype(np.float32))
            tally.after_step(obs, reward, info)
            running[lane][2] = obs
            if terminated or truncated:
                records[index] = tally.record(info)
                del running[lane]
                if queue:
                    start(lane)
    if first.checkpoint is not None:  # the kernels its cells take here (this worker's: its CPU, its settings)
        path = agents.kernel_path(policy)
        for record in records:
            record["kernels"] = path
    return records
