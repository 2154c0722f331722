"""Where episodes run: in this process (serial), a local process pool (default), or a Ray cluster.

Every backend runs the same function (`episode.run_episode`) on the same jobs, one CPU thread per episode,
and hands each record to `on_result` as soon as it finishes, in the parent, so the results log has a single
writer and an interrupted run keeps what finished. Results do not depend on the backend or the order.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from liquid_control.atomic_file import atomic_write
from liquid_control.evaluation.episode import run_episode
from liquid_control.evaluation.plan import CheckpointChangedError, EpisodeJob, verify_checkpoint

BACKENDS = ("process", "serial", "ray")


def available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _init_worker() -> None:
    """One thread per episode: the parallelism is across episodes, and results match the serial backend."""
    _die_with_parent()
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    import torch

    torch.set_num_threads(1)


def _die_with_parent() -> None:
    """Linux: a pool worker gets SIGTERM when the evaluation process dies (killed), instead of lingering."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # no glibc: workers then end when they next find their queue closed
        pass


def run_jobs(
    jobs: list[EpisodeJob],
    on_result,
    backend: str = "process",
    workers: int | None = None,
    ray_address: str | None = None,
    progress: bool = True,
) -> None:
    """Run every job; `on_result(job, record)` is called in this process as each episode finishes."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if not jobs:
        return
    bar = _progress(len(jobs), progress)
    try:
        if backend == "serial":
            _run_serial(jobs, on_result, bar)
        elif backend == "process":
            _run_process_pool(jobs, on_result, workers or available_cpus(), bar)
        else:
            _run_ray(jobs, on_result, ray_address, bar)
    finally:
        bar.close()


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="episode", desc="eval", disable=not enabled, dynamic_ncols=True)


def run_verified_episode(job: EpisodeJob) -> dict:
    """`run_episode`, after checking that the checkpoint still has the SHA-256 the plan recorded."""
    if job.checkpoint is not None:
        verify_checkpoint(job.checkpoint, job.checkpoint_sha)
    return run_episode(job)


def _run_serial(jobs, on_result, bar) -> None:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for job in jobs:
            on_result(job, run_verified_episode(job))
            bar.update(1)
    finally:
        torch.set_num_threads(threads)


def _run_process_pool(jobs, on_result, workers: int, bar) -> None:
    # spawn, not fork: a forked MuJoCo/EGL or torch state is not safe to reuse in a child
    context = multiprocessing.get_context("spawn")
    workers = max(1, min(workers, len(jobs)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
        pending = {pool.submit(run_verified_episode, job): job for job in jobs}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    job = pending.pop(future)
                    on_result(job, future.result())  # an episode's exception stops the evaluation here
                    bar.update(1)
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _run_ray(jobs, on_result, address: str | None, bar) -> None:
    """Same jobs as Ray tasks (1 CPU each). Checkpoints travel through the object store, so the cluster's
    nodes need the package installed but not the checkpoint files."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("--backend ray needs the optional dependency ray: pip install 'ray==2.60.0'") from exc

    started_here = not ray.is_initialized()
    if started_here:
        env_vars = {k: os.environ[k] for k in ("MUJOCO_GL", "PYOPENGL_PLATFORM") if k in os.environ}
        ray.init(
            address=address,
            runtime_env={"env_vars": env_vars} if env_vars else None,
            include_dashboard=False,
            log_to_driver=False,
        )
    try:
        blobs = {}
        for job in jobs:
            if job.checkpoint and job.checkpoint_sha not in blobs:
                with open(job.checkpoint, "rb") as fh:
                    blobs[job.checkpoint_sha] = ray.put(fh.read())
        remote = ray.remote(num_cpus=1)(_ray_episode)
        pending = {remote.remote(job, blobs.get(job.checkpoint_sha)): job for job in jobs}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    job = pending.pop(ref)
                    on_result(job, ray.get(ref))
                    bar.update(1)
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise
    finally:
        if started_here:
            ray.shutdown()


def _ray_episode(job: EpisodeJob, checkpoint_bytes: bytes | None) -> dict:
    """Runs on a Ray worker: the checkpoint comes from the object store, checked against the plan's SHA-256."""
    import dataclasses

    _init_worker()
    if job.checkpoint is None:
        return run_episode(job)
    path = _private_checkpoint_copy(job.checkpoint, job.checkpoint_sha, checkpoint_bytes)
    record = run_verified_episode(dataclasses.replace(job, checkpoint=path))
    record["checkpoint"] = job.checkpoint  # the driver's path, not the worker's copy
    return record


_PRIVATE_COPIES: dict[str, str] = {}  # per worker process: sha256 -> its private copy


def _private_checkpoint_copy(name: str, sha256: str, data: bytes | None) -> str:
    """Write the checkpoint bytes once per worker process into a directory only this process created (mode
    0700, removed at exit), after checking them against the plan's SHA-256. A file another user planted under a
    predictable name in a shared TMPDIR is never read; the copy is hashed again before each episode."""
    import atexit
    import hashlib
    import shutil
    import tempfile

    if data is None or hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointChangedError(
            f"checkpoint {name}: the bytes received from the object store do not have the SHA-256 {sha256[:16]}... "
            "recorded when the evaluation was planned; refusing to evaluate them"
        )
    if sha256 not in _PRIVATE_COPIES:
        if not _PRIVATE_COPIES:
            folder = tempfile.mkdtemp(prefix="liquid_control_ckpt_")
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
        else:
            folder = os.path.dirname(next(iter(_PRIVATE_COPIES.values())))
        path = os.path.join(folder, f"{sha256}.pt")
        with atomic_write(path) as fh:
            fh.write(data)
        _PRIVATE_COPIES[sha256] = path
    return _PRIVATE_COPIES[sha256]
