"""An evaluation whose episodes fail (an exception in a world or policy, a worker process that dies) or that is
stopped while its workers run: it ends at once, names what failed and keeps every finished episode."""

import dataclasses
import multiprocessing
import os
import pathlib
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import pytest

from liquid_control.evaluation.results import LOG_NAME, read_log
from liquid_control.processes import Terminated, collect_results


def test_an_episode_that_raises_is_named_and_the_finished_ones_are_kept_for_resume(tmp_path, capsys, monkeypatch):
    """Before: an exception inside a world or policy ended `liquid-control eval` with a traceback (from a worker:
    the remote one and the pool's), exit 1, naming neither the episode nor that the finished ones are kept."""
    from liquid_control.cli import main
    from liquid_control.evaluation import backends

    out = tmp_path / "r"
    log = out / LOG_NAME
    # the rover's expert (the default world): its episodes end at the target, a balancer's run 10 s (2000 steps)
    argv = ["eval", "--policy", "expert", "--episodes", "3", "--lanes", "1",
            "--out", str(out), "--no-progress", "--no-example", "--backend", "serial"]  # fmt: skip
    original = backends.run_batch

    def unstable_second(batch):
        if batch[0].episode_seed == 20000001:
            raise RuntimeError("the simulation became unstable")
        return original(batch)

    monkeypatch.setattr(backends, "run_batch", unstable_second)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(
        "liquid-control eval: error: policy expert (training seed 0), shift in_distribution, episode seed 20000001: "
        "failed: RuntimeError: the simulation became unstable (at "
    ), err
    assert "in unstable_second)" in line and line.endswith(
        f"; the finished episodes are in {log}; add --resume to continue"
    ), line
    assert [r["episode_seed"] for r in read_log(str(log))] == [20000000]
    monkeypatch.setattr(backends, "run_batch", original)
    assert main([*argv, "--resume"]) == 0
    assert sorted(r["episode_seed"] for r in read_log(str(log))) == [20000000, 20000001, 20000002]


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def test_after_a_failed_task_the_running_ones_are_handed_over_and_the_queued_ones_cancelled():
    """Before: the first failed task raised at once; the pool's shutdown then waited for the tasks running beside
    it and dropped their results (eval: the episodes of those batches were run, then not logged)."""
    handed = []
    with _pool(2) as pool:
        running = pool.submit(time.sleep, 1.5)
        failing = pool.submit(int, "not a number")
        queued = [pool.submit(time.sleep, 1.5) for _ in range(6)]
        with pytest.raises(ValueError, match="not a number"):
            collect_results(pool, [running, failing, *queued], lambda future: handed.append(future) or future.result())
    assert running in handed and handed[-1] is failing  # the running one kept, the failure raised last
    assert any(future.cancelled() for future in queued)
    assert all(future in handed for future in queued if not future.cancelled())  # none that ran is dropped


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, Terminated])
def test_an_interrupt_ends_the_running_tasks_at_once(interrupt):
    """Before: Ctrl-C or SIGTERM to the evaluation process alone (`kill`, a batch system's time limit) waited for
    every batch running in the workers (minutes with 32 lanes), past a grace period, then dropped their records."""

    def interrupted(future):
        raise interrupt

    _assert_the_running_task_ends_at_once(interrupted, interrupt)


def test_a_result_that_cannot_be_kept_ends_the_running_tasks_at_once():
    """Before: an exception of ``on_done`` itself (eval: a full disk as a batch's records were appended) waited
    for every batch running in the workers (minutes with 32 lanes) before it was said, then dropped their
    records: they could not be written either."""

    def full_disk(future):
        raise OSError(28, "No space left on device")

    _assert_the_running_task_ends_at_once(full_disk, OSError)


def _assert_the_running_task_ends_at_once(on_done, raised) -> None:
    with _pool(2) as pool:
        quick, running = pool.submit(time.sleep, 0), pool.submit(time.sleep, 20)
        workers = list(pool._processes)  # spawned by submit (one, or two); the shutdown forgets them
        assert workers
        with pytest.raises(raised):
            collect_results(pool, [quick, running], on_done)
    assert isinstance(running.exception(), BrokenProcessPool)  # ended, not finished
    assert all(not _alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class PoolStarted(Exception):
    """Raised instead of starting a worker pool: the note about the workers comes before the pool starts."""


def _no_pool(workers, initializer):
    raise PoolStarted(workers)


def test_more_workers_than_cpus_are_said(monkeypatch, capsys):
    """Before: `eval --workers 64` on a 2-CPU machine started one process per batch, up to 64, without a word
    (train says it: test_training_out)."""
    from liquid_control.evaluation import backends
    from liquid_control.evaluation.plan import build_plan

    monkeypatch.setattr(backends, "available_cpus", lambda: 2)
    monkeypatch.setattr(backends, "spawn_pool", _no_pool)
    jobs = build_plan(["expert"], ["in_distribution"], 5, world="LiquidBalance-v0").jobs
    for workers in (2, 64):
        with pytest.raises(PoolStarted, match=str(min(workers, 5))):  # one process per batch at most
            backends.run_jobs(jobs, lambda *_: None, workers=workers, progress=False, lanes=1)
    assert capsys.readouterr().err.strip().splitlines() == [
        "liquid-control eval: workers (--workers) 5: more than the 2 CPUs this process may use: the same episodes, "
        "no sooner than with --workers 2, and each worker process holds its own worlds (one per lane) and torch "
        "(~300 MB or more)"
    ]


def test_more_training_workers_than_cpus_in_an_experiment_are_said(tmp_path, monkeypatch, capsys):
    """Before: `eval --experiment --workers 64` on a 2-CPU machine started one training process per run, up to
    64, without a word, where eval's episode pool and train say it."""
    from liquid_control.evaluation import experiment

    monkeypatch.setattr(experiment, "available_cpus", lambda: 2)
    monkeypatch.setattr(experiment, "spawn_pool", _no_pool)
    for workers in (2, 64):
        with pytest.raises(PoolStarted, match=str(min(workers, 3))):  # one process per run at most
            experiment.train_all([("cfc", "cfc")], [0, 1, 2], str(tmp_path / "train"), {"cfc": {}}, False, workers)
    assert capsys.readouterr().err.strip().splitlines() == [
        "liquid-control eval: workers (--workers) 3: more than the 2 CPUs this process may use: the same episodes, "
        "no sooner than with --workers 2, and each worker process holds a training run's world and torch "
        "(~300 MB or more)"
    ]


def test_a_pool_that_cannot_start_names_dev_shm_not_the_output_folder(tmp_path, capsys, monkeypatch):
    """Before: with /dev/shm missing, read-only or full, the pool's semaphores failed with an OSError naming no file
    and eval said 'cannot write in <--out>: Read-only file system' (train: 'cannot write <--out>: ...'), blaming a
    folder that was fine (seen with `unshare -m` and a read-only tmpfs on /dev/shm)."""
    import _multiprocessing
    import multiprocessing.synchronize  # noqa: F401  (reads SemLock.SEM_VALUE_MAX on import: before the patch)

    from liquid_control.cli import main
    from liquid_control.training import episodes

    def no_shm(*args, **kwargs):  # sem_open in a read-only /dev/shm
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(_multiprocessing, "SemLock", no_shm)  # what multiprocessing.synchronize makes its locks with
    out = tmp_path / "r"
    argv = ["eval", "--policy", "expert", "--world", "LiquidBalance-v0", "--episodes", "2", "--lanes", "1",
            "--out", str(out), "--no-progress", "--no-example", "--workers", "2"]  # fmt: skip
    assert main(argv) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "liquid-control eval: error: --backend process: cannot start 2 worker process(es): Read-only file system "
        "(the pool's semaphores live in /dev/shm, which must exist, be writable and have room); or use --backend "
        "serial"
    )
    workers = episodes.EpisodeWorkers({"world": "LiquidBalance-v0"}, 2)
    with pytest.raises(episodes.EpisodeWorkerError, match=r"^the batch: --workers 2: cannot start 2 worker .*/dev/shm"):
        list(workers._run(int, {0: ("1",)}, str, "the batch"))


def test_an_episode_that_raises_on_ray_is_named_by_its_own_exception_and_place():
    """Before: a Ray task's exception read 'RayTaskError(RuntimeError): ray::_ray_batch() ...' followed by the whole
    remote traceback, then '(at .../ray/_private/worker.py:... in get_objects)', the driver's place, not the
    episode's. (A stand-in of Ray's class: ray is an optional extra.)"""
    from liquid_control.evaluation import backends
    from liquid_control.evaluation.errors import RunFailedError
    from liquid_control.evaluation.plan import build_plan

    cause = RuntimeError("the simulation became unstable")
    remote_text = (
        "ray::_ray_batch() (pid=1, ip=192.0.2.2)\n"
        '  File "/site/liquid_control/evaluation/backends.py", line 238, in _ray_batch\n'
        '  File "/site/liquid_control/worlds/balance.py", line 77, in step\n'
        "RuntimeError: the simulation became unstable"
    )
    task_error = type("RayTaskError(RuntimeError)", (RuntimeError,), {"cause": cause})(remote_text)

    def get(ref):
        raise task_error

    batch = build_plan(["expert"], ["in_distribution"], 2, world="LiquidBalance-v0").jobs
    with pytest.raises(RunFailedError) as failed:
        backends._records(batch, get, "ref")
    assert str(failed.value) == (
        "policy expert (training seed 0), shift in_distribution, episode seeds 20000000, 20000001: failed: "
        "RuntimeError: the simulation became unstable (at /site/liquid_control/worlds/balance.py:77 in step)"
    )


@pytest.mark.parametrize(
    "failure,message",
    [
        (BrokenProcessPool("gone"), "a training worker process died (killed by a signal, or by the kernel when memory"),
        (KeyError("core"), "training cfc (seed 1) in {train}/cfc/seed_1 failed: KeyError: 'core'"),
    ],
)
def test_a_training_run_of_the_experiment_that_fails_is_named(tmp_path, monkeypatch, failure, message):
    """Before: a headline training worker killed (the OOM killer) or an error in the code ended `eval --experiment`
    with a BrokenProcessPool or KeyError traceback, naming no run and not that the finished runs are kept."""
    from concurrent.futures import ThreadPoolExecutor

    from liquid_control.evaluation import experiment
    from liquid_control.evaluation.errors import RunFailedError

    def train_one(name, arch, seed, out_dir, overrides, resume):
        if seed == 1:
            raise failure
        return {"name": name, "seed": seed, "cpu_s": 1.0, "metadata": {}}

    monkeypatch.setattr(experiment, "spawn_pool", lambda workers, initializer: ThreadPoolExecutor(1))
    monkeypatch.setattr(experiment, "_train_one", train_one)
    train = tmp_path / "train"
    with pytest.raises(RunFailedError) as failed:
        experiment.train_all([("cfc", "cfc")], [0, 1], str(train), {"cfc": {}}, False, 1)
    assert str(failed.value).startswith(message.format(train=train))


def test_backend_ray_without_ray_is_refused_naming_the_extra_before_out_is_made(tmp_path, capsys, monkeypatch):
    """Before: `eval --backend ray` without ray said so only after writing plan.json and provenance.sitting.json
    into --out (a refused request makes no report folder), and did not name the package's extra."""
    import sys

    from liquid_control.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is not installed
    out = tmp_path / "r"
    argv = ["eval", "--policy", "expert", "--world", "LiquidBalance-v0", "--episodes", "1", "--backend", "ray",
            "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "liquid-control eval: error: --backend ray needs the optional dependency ray (the extra "
        "liquid_control[ray]): pip install 'ray==2.60.0'"
    )
    assert not out.exists()


@pytest.mark.parametrize("backend", ["process", "ray"])
def test_a_workers_warning_reaches_the_user_once_whatever_the_workers(backend, monkeypatch, capfd):
    """Before: a warning given in the workers (here the compiled kernels' about LIQUID_CONTROL_NATIVE=maybe, which
    each CfC policy's worker gives) was printed by every worker process that ran a batch (the same lines N times
    for --workers N), and by none on Ray (a Ray worker's output is not forwarded). It comes back with the batch and
    the evaluation process shows it once."""
    import warnings
    from pathlib import Path

    from liquid_control.evaluation import backends
    from liquid_control.evaluation.plan import build_plan

    if backend == "ray":
        ray = pytest.importorskip("ray", reason="ray is an optional extra (pip install ray==2.60.0)")
        if ray.is_initialized():
            pytest.skip("needs a Ray instance of its own, started with this environment")
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # no token file in the user's home
    monkeypatch.setenv("LIQUID_CONTROL_NATIVE", "maybe")  # the workers' environment (spawned, or Ray's raylet)
    checkpoint = Path(__file__).resolve().parents[1] / "policies" / "cfc_rover.pt"
    jobs = build_plan([f"cfc={checkpoint}"], ["in_distribution", "winter"], 2).jobs
    jobs = [dataclasses.replace(j, env_kwargs={**j.env_kwargs, "time_limit": 1.0}) for j in jobs]
    records = []
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")  # this process's filter: every warning it is given is shown
        backends.run_jobs(jobs, lambda _, rs: records.extend(rs), backend=backend, workers=2, progress=False, lanes=1)
    assert len(records) == 4
    said = [str(w.message) for w in shown if "LIQUID_CONTROL_NATIVE='maybe'" in str(w.message)]
    assert len(said) == 1, [str(w.message) for w in shown]
    assert "LIQUID_CONTROL_NATIVE" not in capfd.readouterr().err  # no worker printed it itself


@pytest.mark.parametrize(
    "flags,environment,message",
    [
        (["--backend", "serial", "--workers", "3"], {}, "--workers 3: --backend serial runs every episode in this "),
        (
            ["--backend", "ray", "--ray-address", "192.0.2.7:6379", "--workers", "2"],
            {},
            "the cluster at 192.0.2.7:6379",
        ),
        (["--backend", "ray", "--workers", "2"], {"RAY_ADDRESS": "192.0.2.8:6379"}, "the cluster at 192.0.2.8:6379"),
    ],
)
def test_workers_that_the_backend_would_ignore_are_refused(flags, environment, message, tmp_path, capsys, monkeypatch):
    """Before: --workers was read by the process pool alone: `--backend serial --workers 3` ran one episode at a
    time and `--backend ray --workers 2` one task per CPU of the cluster, without a word."""
    from liquid_control.cli import main

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "r"
    argv = ["eval", "--policy", "expert", "--world", "LiquidBalance-v0", "--episodes", "1", "--out", str(out),
            "--no-progress", *flags]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("liquid-control eval: error: --workers ") and message in err, err
    assert not out.exists()


def test_workers_size_the_local_ray_instance_the_evaluation_starts(monkeypatch):
    """Before: `--backend ray --workers 1` started a local Ray instance of every CPU of the machine (a shared one
    included): --workers was read by the process pool alone."""
    ray = pytest.importorskip("ray", reason="ray is an optional extra (pip install ray==2.60.0)")
    from liquid_control.evaluation import backends
    from liquid_control.evaluation.plan import build_plan

    if ray.is_initialized():
        pytest.skip("needs a Ray instance of its own")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # no token file in the user's home
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # the kernels' setting goes to the Ray workers (before: only the renderer's, so a cluster's nodes ran the
    # compiled kernels whatever LIQUID_CONTROL_NATIVE the command was given), and each record says what ran there
    monkeypatch.setenv("LIQUID_CONTROL_NATIVE", "0")
    real_init, given = ray.init, []
    monkeypatch.setattr(ray, "init", lambda **kwargs: given.append(kwargs) or real_init(**kwargs))
    balancer = f"bal={pathlib.Path(__file__).resolve().parent.parent / 'policies' / 'cfc_balancer.pt'}"
    jobs = build_plan([balancer], ["in_distribution"], 2, world="LiquidBalance-v0").jobs
    jobs = [dataclasses.replace(j, env_kwargs={**j.env_kwargs, "time_limit": 1.0}) for j in jobs]
    cpus, records = [], []

    def keep(_, batch_records):
        cpus.append(ray.cluster_resources()["CPU"])
        records.extend(batch_records)

    backends.run_jobs(jobs, keep, backend="ray", workers=1, progress=False)
    assert cpus == [1.0]  # one batch of the two episodes
    assert [r.get("kernels") for r in records] == ["torch (LIQUID_CONTROL_NATIVE=0)"] * 2, records
    assert given[0]["runtime_env"]["env_vars"]["LIQUID_CONTROL_NATIVE"] == "0", given
    assert not ray.is_initialized()  # the instance started here is gone


def test_a_warning_of_the_experiments_training_runs_is_shown_once(tmp_path, monkeypatch):
    """Before: a warning given in the headline experiment's training workers (the compiled kernels' about
    LIQUID_CONTROL_NATIVE, a world's) was printed by every worker process that trained a run. It comes back with the
    run and the experiment shows it once (here the pool is one thread of this process, the runs one after the other)."""
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from liquid_control.evaluation import experiment

    def train_one(name, arch, seed, out_dir, overrides, resume):
        warnings.warn("a world's warning", UserWarning, stacklevel=1)
        return {"name": name, "seed": seed, "cpu_s": 1.0, "metadata": {}}

    monkeypatch.setattr(experiment, "spawn_pool", lambda workers, initializer: ThreadPoolExecutor(1))
    monkeypatch.setattr(experiment, "_train_one", train_one)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")  # this process's filter: every warning it is given is shown
        results = experiment.train_all([("cfc", "cfc")], [0, 1, 2], str(tmp_path / "train"), {"cfc": {}}, False, 1)
    assert [r["seed"] for r in results] == [0, 1, 2]
    assert [str(w.message) for w in shown] == ["a world's warning"]


RESUMED_ARGV = ["eval", "--policy", "expert", "--episodes", "1", "--lanes", "1", "--no-progress", "--no-example",
                "--backend", "serial"]  # fmt: skip


@pytest.fixture(scope="module")
def finished_evaluation(tmp_path_factory):
    """A finished one-episode evaluation (the rover's expert), run once for the module: each test resumes a copy."""
    from liquid_control.cli import main

    out = tmp_path_factory.mktemp("finished") / "r"
    assert main([*RESUMED_ARGV, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "Expecting property name"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply to read"),
        ("[1, 2]", "a JSON list, not an object"),
        ('{"command": "x"}', "'commit' is not a string"),
        (
            '{"command": "x", "commit": "c", "machine": "m", "software": "s", "started_utc": "t", "wall_time_s": "1"}',
            "'wall_time_s' is not a number",
        ),  # fmt: skip
    ],
)
def test_a_resume_refuses_a_damaged_provenance_record_before_running_an_episode(
    tmp_path, capsys, monkeypatch, content, problem, finished_evaluation
):
    """A folder's provenance.json that is damaged or not ours (a downloaded evaluation). Before: it was read only
    after the resumed episodes had run, when the report was written: a JSONDecodeError, RecursionError or
    AttributeError traceback, no report, the episodes' time lost."""
    import shutil

    from liquid_control.cli import main
    from liquid_control.evaluation import backends

    out = tmp_path / "r"
    shutil.copytree(finished_evaluation, out)
    argv = [*RESUMED_ARGV, "--out", str(out)]
    (out / "provenance.json").write_text(content)
    ran = []
    original = backends.run_batch

    def counted(batch):
        ran.append(batch)
        return original(batch)

    monkeypatch.setattr(backends, "run_batch", counted)
    argv[argv.index("--episodes") + 1] = "2"
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'provenance.json'}: not a provenance record (" in err and problem in err, err[-2000:]
    assert "Traceback" not in err and not ran
    assert (out / "provenance.json").read_text() == content


def test_a_sitting_record_nested_past_the_recursion_limit_is_refused_naming_it(tmp_path):
    """Before: a RecursionError traceback (no ValueError), where a damaged sitting record is refused by name."""
    from liquid_control.evaluation import provenance
    from liquid_control.evaluation.errors import EvaluationSetupError

    (tmp_path / provenance.SITTING_NAME).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(EvaluationSetupError, match=r"provenance.sitting.json: not a sitting record"):
        provenance.Sitting(str(tmp_path), "eval", time.time(), "def", resume=True)
