"""Where episodes run: in this process (serial), a local process pool (default), or a Ray cluster.

The jobs are cut into batches (`batched.make_batches`: one policy, training seed and shift, up to `lanes`
episodes stepped in lockstep) and every backend runs the same function (`batched.run_batch`) on the same
batches, one CPU thread per batch, handing each batch's records to `on_batch` in the parent as the batch
finishes, so the results log has a single writer and an interrupted run keeps the batches that finished (whole:
`results.ResultLog.append`). The warnings a worker gives come back with its batch and are shown once in the run by
this process (`processes.WarningsOnce`).

What the records do and do not depend on: every batch is deterministic, so for the same batches the records are
the same whatever the backend, the number of workers or the order in which the batches run. The batches are not
always the same: `--lanes` sets their size, and a `--resume` cuts only the pending episodes into batches (the
same batches as one run for the same request: a batch only partly in the log is pending whole). A
trained policy's episode depends on the batch it ran in (its lanes share one batched policy call per update,
whose float32 sums round differently with another set of live lanes), and a closed loop is chaotic: return,
steps and smoothness can differ, and an outcome can flip, between `--lanes` values, between a resumed and an
uninterrupted run, and against the same episode run alone (`episode.run_episode`, as the report's example and
saliency replays are). The world never differs: each episode's world, shift and seed are fixed by its job, so
the paired design (every policy on the same episode seeds) holds under any batching; see `batched`.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from liquid_control.atomic_file import atomic_write
from liquid_control.evaluation.batched import make_batches, run_batch
from liquid_control.evaluation.errors import RunFailedError
from liquid_control.evaluation.plan import (
    BACKENDS,
    DEFAULT_LANES,
    CheckpointChangedError,
    EpisodeJob,
    EvaluationSetupError,
    verify_checkpoint,
)
from liquid_control.processes import (  # available_cpus: part of this module's API (experiment)
    WarningsOnce,
    WorkerPoolError,
    available_cpus,
    collect_results,
    die_with_parent,
    interrupt_in_ctypes,
    keep_freed_memory,
    more_workers_than_cpus,
    quiet_ctrl_c_in_worker,
    run_keeping_warnings,
    spawn_pool,
)


def _init_worker() -> None:
    """One thread per worker: the parallelism is across batches, and results match the serial backend. Also a Ray
    task's setup, whose process is no WorkerProcess: Ctrl-C a quiet exit, the batch system's warnings ignored."""
    quiet_ctrl_c_in_worker()
    die_with_parent()
    keep_freed_memory()
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    import torch

    torch.set_num_threads(1)


def run_jobs(
    jobs: list[EpisodeJob],
    on_batch,
    backend: str = "process",
    workers: int | None = None,
    ray_address: str | None = None,
    progress: bool = True,
    lanes: int = DEFAULT_LANES,
) -> None:
    """Run every job; `on_batch(batch, records)` is called in this process once for each finished batch, its jobs
    and their records in the same order (the results log keeps a batch whole: an episode's record depends on it)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if not jobs:
        return
    batches = make_batches(jobs, lanes)
    bar = _progress(len(jobs), progress)

    def finished(batch, records) -> None:
        on_batch(batch, records)
        bar.update(len(batch))

    try:
        if backend == "serial":
            _run_serial(batches, finished)
        elif backend == "process":
            _run_process_pool(batches, finished, workers or available_cpus())
        else:
            _run_ray(batches, finished, ray_address, workers)
    finally:
        bar.close()


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="episode", desc="eval", disable=not enabled, dynamic_ncols=True)


def run_verified_batch(batch: list[EpisodeJob]) -> list[dict]:
    """`run_batch`, after checking that the checkpoint still has the SHA-256 the plan recorded."""
    for checkpoint, sha in {(job.checkpoint, job.checkpoint_sha) for job in batch if job.checkpoint is not None}:
        verify_checkpoint(checkpoint, sha)
    return run_batch(batch)


WORKER_DIED = (
    "a worker process died while running episodes (killed by a signal, or by the kernel when memory ran out; "
    "its error, if it printed one, is above); which of the running episodes it held is not known"
)


def describe_batch(batch: list[EpisodeJob]) -> str:
    """The episodes of a batch as an error names them: policy, training seed, shift and episode seeds."""
    job, seeds = batch[0], ", ".join(str(j.episode_seed) for j in batch)
    plural = "s" if len(batch) > 1 else ""
    return f"policy {job.policy} (training seed {job.training_seed}), shift {job.shift}, episode seed{plural} {seeds}"


def _failure(exc: BaseException) -> str:
    """'TYPE: MESSAGE (at FILE:LINE in FUNCTION)' of an episode's exception, where it was raised: also in a pool's
    worker process (whose traceback comes back as the text of the exception's ``__cause__``, a
    ``_RemoteTraceback``) or a Ray task (a ``RayTaskError``: the task's own exception is its ``cause``, its text
    holds the remote traceback); no place when it is not known."""
    import re
    import traceback

    remote = None
    if type(exc.__cause__).__name__ == "_RemoteTraceback":
        remote = str(exc.__cause__)
    elif type(exc).__name__.startswith("RayTaskError") and isinstance(getattr(exc, "cause", None), BaseException):
        remote, exc = str(exc), exc.cause
    if remote is not None:
        found = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', remote)
        where = " (at {}:{} in {})".format(*found[-1]) if found else ""
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" (at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _records(batch: list[EpisodeJob], get, *args):
    """``get(*args)``: what running the batch returned (the serial backend's records; the process and Ray backends'
    ``(records, warnings)`` of :func:`run_keeping_warnings`); its failure raised as an :class:`RunFailedError` naming
    the batch."""
    try:
        return get(*args)
    except CheckpointChangedError:  # names the checkpoint already
        raise
    except BrokenProcessPool as exc:
        raise RunFailedError(WORKER_DIED) from exc
    except Exception as exc:
        if interrupt_in_ctypes(exc) is not None:  # Ctrl-C inside MuJoCo's render: the command handles it
            raise
        raise RunFailedError(f"{describe_batch(batch)}: failed: {_failure(exc)}") from exc


def _run_serial(batches, finished) -> None:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for batch in batches:
            finished(batch, _records(batch, run_verified_batch, batch))
    finally:
        torch.set_num_threads(threads)


def _run_process_pool(batches, finished, workers: int) -> None:
    workers = max(1, min(workers, len(batches)))
    too_many = more_workers_than_cpus(
        workers, available_cpus(), "its own worlds (one per lane) and torch (~300 MB or more)"
    )
    if too_many:  # allowed (the same records); before, up to one process per batch started without a word
        print(f"liquid-control eval: {too_many}", file=sys.stderr, flush=True)
    try:
        pool = spawn_pool(workers, _init_worker)
    except WorkerPoolError as exc:
        raise RunFailedError(f"--backend process: {exc}; or use --backend serial") from None
    shown = WarningsOnce()  # a worker's warnings: once in the run, not once per worker

    def done(future) -> None:
        records, caught = _records(batch_of[future], future.result)
        shown.show(caught)
        finished(batch_of[future], records)

    with pool:
        batch_of = {pool.submit(run_keeping_warnings, run_verified_batch, batch): batch for batch in batches}
        # a failed batch stops the evaluation here, once the batches running beside it are in the log
        collect_results(pool, batch_of, done)


def import_ray():
    """The ray module, or the refusal naming the optional dependency (the package's ``ray`` extra)."""
    try:
        import ray
    except ImportError:
        raise EvaluationSetupError(
            "--backend ray needs the optional dependency ray (the extra liquid_control[ray]): pip install 'ray==2.60.0'"
        ) from None
    return ray


@contextmanager
def ray_connection(address: str | None, workers: int | None = None):
    """Connect to Ray (`address`, else RAY_ADDRESS, else a local instance of `workers` CPUs, default all) unless this
    process already is, and disconnect at the end only if connected here: the headline experiment's training and
    evaluation share one."""
    ray = import_ray()

    started_here = not ray.is_initialized()
    if started_here:
        # the renderer's and the kernels' settings (LIQUID_CONTROL_NATIVE=0 reaches every node's workers; each
        # episode's record says what its cells ran there)
        forwarded = ("MUJOCO_GL", "PYOPENGL_PLATFORM", "LIQUID_CONTROL_NATIVE")
        env_vars = {k: os.environ[k] for k in forwarded if k in os.environ}
        try:
            ray.init(
                address=address,
                num_cpus=workers,  # a cluster's own: Ray refuses it there (the command refuses it before)
                runtime_env={"env_vars": env_vars} if env_vars else None,
                include_dashboard=False,
                log_to_driver=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = address or os.environ.get("RAY_ADDRESS") or "a new local instance"
            raise EvaluationSetupError(f"--backend ray: cannot connect to Ray at {where}: {exc}") from None
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def _run_ray(batches, finished, address: str | None, workers: int | None = None) -> None:
    """Same batches as Ray tasks (1 CPU each; a local instance started here has `workers` CPUs). Checkpoints
    travel through the object store, so the cluster's nodes need the package installed but not the checkpoint
    files."""
    with ray_connection(address, workers) as ray:
        blobs = {}
        for batch in batches:
            job = batch[0]
            if job.checkpoint and job.checkpoint_sha not in blobs:
                with open(job.checkpoint, "rb") as fh:
                    blobs[job.checkpoint_sha] = ray.put(fh.read())
        remote = ray.remote(num_cpus=1)(_ray_task)
        pending = {remote.remote(batch, blobs.get(batch[0].checkpoint_sha)): batch for batch in batches}
        shown = WarningsOnce()  # a Ray worker's output is not forwarded (log_to_driver=False): its warnings come here
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    batch = pending.pop(ref)
                    records, caught = _records(batch, ray.get, ref)
                    shown.show(caught)
                    finished(batch, records)
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise


def _ray_task(batch: list[EpisodeJob], checkpoint_bytes: bytes | None):
    """A Ray task: `_ray_batch`'s records and the warnings it gave, which the driver shows."""
    return run_keeping_warnings(_ray_batch, batch, checkpoint_bytes)


def _ray_batch(batch: list[EpisodeJob], checkpoint_bytes: bytes | None) -> list[dict]:
    """Runs on a Ray worker: the checkpoint comes from the object store, checked against the plan's SHA-256."""
    import dataclasses

    _init_worker()
    job = batch[0]
    if job.checkpoint is None:
        return run_batch(batch)
    path = _private_checkpoint_copy(job.checkpoint, job.checkpoint_sha, checkpoint_bytes)
    records = run_verified_batch([dataclasses.replace(j, checkpoint=path) for j in batch])
    for record in records:
        record["checkpoint"] = job.checkpoint  # the driver's path, not the worker's copy
    return records


_PRIVATE_COPIES: dict[str, str] = {}  # per worker process: sha256 -> its private copy


def _private_checkpoint_copy(name: str, sha256: str, data: bytes | None) -> str:
    """Write the checkpoint bytes once per worker process into a directory only this process created (mode
    0700, removed at exit), after checking them against the plan's SHA-256. A file another user planted under a
    predictable name in a shared TMPDIR is never read; the copy is hashed again before each batch."""
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
