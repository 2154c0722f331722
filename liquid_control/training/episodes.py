"""The episodes of a training run (collection and model selection), here or in worker processes.

An episode is a pure function of the config, the policy's weights, the run seed, the round and its index:
its world, noise and DAgger coin flips are seeded from them (``episode_seed`` and ``numpy.random
.default_rng([seed, round, index])``), never from a process's history. So :class:`EpisodeWorkers` (``liquid-control
train --workers N``) computes in N processes exactly what the training process computes alone (one torch thread,
the same kernels): the episode files and the trained policy are bit for bit the same for any number of workers
(``test/test_training_workers.py``). Episodes are half of a camera policy's training time (MuJoCo physics and
rendering), and they are independent, so they use the cores that one behaviour-cloning process leaves idle.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import torch

from liquid_control.policy import Policy, PolicyAgent, PolicyConfigError, check_world, env_kwargs, observation_keys
from liquid_control.processes import (
    WarningsOnce,
    WorkerPoolError,
    die_with_parent,
    keep_freed_memory,
    run_keeping_warnings,
    spawn_pool,
    terminate_workers,
)

from .augment import EpisodeSun, EpisodeTiming
from .data import Episode, rollout

# Episode seeds: training data and model-selection episodes come from ranges no evaluation uses by default.
TRAIN_SEED_BASE = 1_000_000
SELECTION_SEED_BASE = 9_000_000
# episode_seed keeps every run's episodes apart, and below the selection episodes' SELECTION_SEED_BASE (and the
# evaluation's default 20,000,000), only for episode indices < MAX_ROUND_EPISODES, rounds <= MAX_DAGGER_ROUNDS and
# seeds 0..MAX_TRAIN_SEED (seed 80 would collect the selection episodes, seed 190 the evaluation's): train checks.
MAX_ROUND_EPISODES = 1_000
MAX_DAGGER_ROUNDS = 99
MAX_TRAIN_SEED = (SELECTION_SEED_BASE - TRAIN_SEED_BASE) // 100_000 - 1


class EpisodeWorkerError(RuntimeError):
    """An episode failed in a worker process (its exception, or the worker died)."""


def episode_seed(seed: int, round_index: int, episode: int) -> int:
    """Seed of one training-data episode: ``TRAIN_SEED_BASE + 100000 seed + 1000 round_index + episode``."""
    return TRAIN_SEED_BASE + seed * 100_000 + round_index * 1_000 + episode


def selection_seeds(count: int) -> list[int]:
    """The model-selection episode seeds, the same for every run (from ``SELECTION_SEED_BASE``)."""
    return [SELECTION_SEED_BASE + i for i in range(count)]


def world_class(config: dict):
    """The env class of the config's world, after checking that a sim_envs world (one that declares its
    ``sensor_names``) has every input the config names (PolicyConfigError naming the key otherwise)."""
    import sim_envs

    try:
        world = sim_envs.world_class(config["world"])
    except KeyError as exc:  # it names the known worlds and how to register one
        raise PolicyConfigError(f"world: {exc.args[0]}") from None
    if getattr(world, "sensor_names", ()):
        check_world(config, world.sensor_names, world.observation_keys)
    return world


def make_env(config: dict, shift: str | None = None):
    """The policy's world as the policy sees it, in the training distribution unless ``shift``.

    A sim_envs world gets the policy's camera size, update sensors and reordering lag
    (``liquid_control.policy.env_kwargs``); another gymnasium world gets the shift and the camera size only.
    """
    import gymnasium

    world = world_class(config)
    kwargs = {"shift": shift if shift is not None else (config["training"]["shift"] or "")}
    kwargs.update(env_kwargs(config, timed=bool(getattr(world, "sensor_names", ()))))
    env = gymnasium.make(config["world"], **kwargs)
    try:
        check_sizes(config, env)
    except PolicyConfigError:
        env.close()
        raise
    return env


def check_sizes(config: dict, env) -> None:
    """PolicyConfigError naming the key when a vector input or the action of the config has another size than
    the world's (``observation.vectors.imu: 7`` for a 6-value IMU would otherwise fail only when the first
    demonstrations are fitted, with torch's "shape '[11]' is invalid for input of size 10"), or the action
    another kind (a balancer config without ``kind: wheel_torques`` trained, and its node published Twist)."""
    spaces = getattr(env.observation_space, "spaces", {})
    for key, size in config["observation"]["vectors"].items():
        shape = getattr(spaces.get(key), "shape", None)
        if shape is not None and tuple(shape) != (size,):
            raise PolicyConfigError(
                f"observation.vectors.{key}: {size}, but world {config['world']}'s {key!r} has shape {tuple(shape)}"
            )
    shape = getattr(env.action_space, "shape", None)
    if shape is not None and tuple(shape) != (config["action"]["size"],):
        raise PolicyConfigError(
            f"action.size: {config['action']['size']}, but world {config['world']}'s action has shape {tuple(shape)}"
        )
    kind = getattr(env.unwrapped, "action_kind", "")
    if kind and config["action"]["kind"] != kind:  # it would train, then the node would publish the wrong message
        raise PolicyConfigError(
            f"action.kind: {config['action']['kind']!r}, but world {config['world']}'s action is {kind!r} "
            f"(set action.kind: {kind})"
        )


def round_beta(config: dict, round_index: int) -> float:
    """DAgger's beta of a round: 1 (the expert drives) for the demonstrations, then ``training.beta``."""
    t = config["training"]
    return 1.0 if round_index == 0 else t["beta"][min(round_index - 1, len(t["beta"]) - 1)]


def _min_cap(*caps):
    caps = [c for c in caps if c is not None]
    return min(caps) if caps else None


def sensor_timings(env, config: dict) -> dict:
    """The world's nominal sensor timings, what the timing recipe varies (a sim_envs world reads ``timings`` at
    every reset); ValueError for a world without them."""
    timings = getattr(env.unwrapped, "timings", None)
    if not isinstance(timings, dict):
        raise ValueError(
            f"training.sensor_rate_range / jitter_range: world {config['world']!r} has no sensor timings to vary"
        )
    return dict(timings)


@contextlib.contextmanager
def one_torch_thread():
    """Run the enclosed episode on one torch thread, as every episode runs (here or in a worker), whatever the
    process uses for behaviour cloning: one sample per step gains nothing from more, and the arithmetic, hence
    the closed loop, is then the same in every process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def collect_episode(env, policy: Policy | None, config: dict, seed: int, round_index: int, index: int) -> Episode:
    """Episode ``index`` of round ``round_index`` of the run with ``seed``: the expert's labels, driven by the
    mixture of the expert and ``policy`` at the round's beta (``policy`` None: the expert alone, round 0)."""
    with one_torch_thread():
        return _collect_episode(env, policy, config, seed, round_index, index)


def _collect_episode(env, policy, config, seed, round_index, index) -> Episode:
    t = config["training"]
    beta = round_beta(config, round_index)
    rng = np.random.default_rng([seed, round_index, index])
    cap = t["max_episode_steps"] if round_index == 0 else _min_cap(t["max_episode_steps"], t["dagger_max_steps"])
    timed = t["sensor_rate_range"] is not None or t["jitter_range"] is not None
    sun = t["sun_elevation_range"] is not None
    # each recipe's draw is undone however the episode ends, even when a later one fails to apply (a world
    # without a 'sun' kept the drawn timing for every later episode, the selection episodes among them)
    with contextlib.ExitStack() as undo:
        if timed:  # the timing recipe: this episode's own sensor rate and jitter
            world, nominal = env.unwrapped, sensor_timings(env, config)
            draw = np.random.default_rng([seed, round_index, index, 1])
            EpisodeTiming(t["sensor_rate_range"], t["jitter_range"], draw).apply(world, nominal)
            undo.callback(EpisodeTiming.restore, world, nominal)
        if sun:  # the lighting recipe: this episode's own sun direction
            draw = np.random.default_rng([seed, round_index, index, 2])
            own_sun = EpisodeSun(t["sun_elevation_range"], draw).apply(env.unwrapped)
            undo.callback(EpisodeSun.restore, env.unwrapped, own_sun)
        return rollout(
            env,
            PolicyAgent(policy) if beta < 1.0 else None,
            beta=beta,
            rng=rng,
            seed=episode_seed(seed, round_index, index),
            observation_keys=observation_keys(config),
            max_steps=cap,
            action_noise=(t["action_noise"], t["action_noise_tau"]),
        )


def episode_outcome(env, policy: Policy, seed: int, max_steps: int | None) -> tuple[bool, int]:
    """(success, updates) of ``policy`` driving the episode ``seed`` alone (a model-selection episode)."""
    with one_torch_thread():
        episode = rollout(env, PolicyAgent(policy), beta=0.0, seed=seed, record=False, max_steps=max_steps)
    return episode.success, int(episode.info["steps"])


def measure_success(policy: Policy, seeds, env=None, shift: str | None = None, max_steps: int | None = None) -> float:
    """Fraction of the episodes ``seeds`` the policy alone brings to success (here, one after the other)."""
    own_env = env is None
    env = make_env(policy.config, shift) if own_env else env
    try:
        wins = [episode_outcome(env, policy, s, max_steps)[0] for s in seeds]
    finally:
        if own_env:
            env.close()
    return float(np.mean(wins)) if wins else float("nan")


# ----------------------------------------------------------------------------------------------- workers
_WORKER: dict = {}  # in a worker process: its config, world and policy


def _init_worker(config: dict) -> None:
    die_with_parent()  # a training process killed with SIGTERM or SIGKILL left its workers running, for good
    keep_freed_memory()
    torch.set_num_threads(1)  # one sample per step; as the training process runs its episodes
    torch.use_deterministic_algorithms(True)
    _WORKER.update(config=config, env=None, policy=Policy(config))


def _worker_env():
    if _WORKER["env"] is None:
        _WORKER["env"] = make_env(_WORKER["config"])
    return _WORKER["env"]


def _worker_policy(weights) -> Policy | None:
    if weights is None:
        return None
    policy = _WORKER["policy"]
    policy.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    return policy


def _collect_task(weights, seed: int, round_index: int, index: int) -> Episode:
    return collect_episode(_worker_env(), _worker_policy(weights), _WORKER["config"], seed, round_index, index)


def _outcome_task(weights, seed: int, max_steps: int | None) -> tuple[bool, int]:
    return episode_outcome(_worker_env(), _worker_policy(weights), seed, max_steps)


def policy_weights(policy: Policy) -> dict:
    """The policy's state as numpy arrays (what a worker loads: exact float copies, cheap to pickle)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in policy.state_dict().items()}


class EpisodeWorkers:
    """``count`` worker processes, each with its own world, that run a round's episodes in parallel.

    Started on the first use (spawned: a clean interpreter each, with its own GL context), closed with
    :meth:`close`. Results come back as each episode finishes, so the caller saves finished episodes even when
    a later one fails; after a failure the episodes not yet started are cancelled, those already running are
    waited for and returned, then :class:`EpisodeWorkerError` names the failed episode (or, when a worker process
    died or could not start, the batch: which of its episodes was running there is not known). A warning the
    workers give comes back with the episode and is shown once by this process (not once per worker process).
    """

    def __init__(self, config: dict, count: int):
        if int(count) < 1:
            raise ValueError(f"episode workers: count must be >= 1, got {count!r}")
        self.config, self.count = config, int(count)
        self._pool: ProcessPoolExecutor | None = None
        self._warnings = WarningsOnce()

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = spawn_pool(self.count, _init_worker, (self.config,))
        return self._pool

    def _run(self, fn, tasks: dict, name, batch: str):
        """Yield ``(key, result)`` for ``tasks`` ({int key: args}) as each finishes; ``name(key)`` names an
        episode, ``batch`` all of them (for a worker that died)."""
        died = f"{batch}: a worker process died or could not start (its error, if it printed one, is above)"
        try:
            pool = self._executor()
            futures = {pool.submit(run_keeping_warnings, fn, *args): key for key, args in tasks.items()}
        except BrokenProcessPool as exc:
            self.close()  # a broken pool serves nothing: the next call starts a new one
            raise EpisodeWorkerError(died) from exc
        except WorkerPoolError as exc:
            raise EpisodeWorkerError(f"{batch}: --workers {self.count}: {exc}; or leave --workers out") from None
        pending, failed = set(futures), None
        while pending and failed is None:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=futures.get):
                if future.exception() is None:
                    yield futures[future], self._result(future)
                elif failed is None:
                    failed = future
        if failed is None:
            return
        exc = failed.exception()
        if isinstance(exc, BrokenProcessPool):
            self.close()
            raise EpisodeWorkerError(died) from exc
        # The pool's own thread cancels what has not started (cancelling it from here raced with that thread
        # marking it failed when the workers then ended, as on Ctrl-C or SIGTERM: Python 3.11 printed an
        # InvalidStateError traceback); the episodes running finish and come back. The next call starts a new pool.
        pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None
        for future in sorted(pending, key=futures.get):
            if not future.cancelled() and future.exception() is None:
                yield futures[future], self._result(future)
        raise EpisodeWorkerError(f"{name(futures[failed])} failed in a worker: {type(exc).__name__}: {exc}") from exc

    def _result(self, future):
        """A task's result, its warnings (:func:`run_keeping_warnings`) shown if not shown before."""
        result, caught = future.result()
        self._warnings.show(caught)
        return result

    def collect(self, policy: Policy | None, seed: int, round_index: int, indices):
        """Yield ``(index, Episode)`` of round ``round_index``'s episodes ``indices`` as they finish."""
        weights = None if policy is None or round_beta(self.config, round_index) >= 1.0 else policy_weights(policy)
        tasks = {i: (weights, seed, round_index, i) for i in indices}
        name = f"round {round_index}'s episodes"
        yield from self._run(_collect_task, tasks, lambda i: f"episode {i} of round {round_index}", name)

    def outcomes(self, policy: Policy, seeds, max_steps: int | None) -> list[tuple[bool, int]]:
        """(success, updates) of ``policy`` alone on the episodes ``seeds``, in the order of ``seeds``."""
        weights = policy_weights(policy)
        tasks = {n: (weights, s, max_steps) for n, s in enumerate(seeds)}
        name = "the selection episodes"
        results = dict(self._run(_outcome_task, tasks, lambda n: f"selection episode {seeds[n]}", name))
        return [results[n] for n in range(len(seeds))]

    def close(self, abort: bool = False) -> None:
        """Stop the worker processes: those running an episode are waited for, or with ``abort`` (an interrupted
        run, whose finished episodes are saved) terminated at once: a SIGTERM to the training process alone
        waited for every running episode, past a batch system's grace period."""
        if self._pool is None:
            return
        if abort:
            terminate_workers(self._pool)
        self._pool.shutdown(wait=not abort, cancel_futures=True)
        self._pool = None
