"""The headline experiment as one command: train every architecture on the training distribution, with and
without the robustness recipes, then evaluate all of them (plus the privileged expert) on the same shifts and
the same episode seeds, with statistics over training seeds.

    liquid-control eval --experiment headline --out reports/headline             # 5 seeds, 30 episodes
    liquid-control eval --experiment headline --out reports/small --seeds 2 --episodes 5 --recipes off

Architectures are the shipped configs in policies/configs/ (one camera CNN, only the recurrent core differs):
the cores of the liquid drone-navigation paper (CfC, CfC-NCP, LTC, LTC-NCP, CT-RNN, GRU-ODE, LSTM, GRU, a
temporal convolution) and `cfc_no_dt`, the ablation of the continuous-time claim (the same CfC trained and
run with dt ignored). `mlp` (a frame stack) can be added with `--archs`.

Recipes (`--recipes both`, the default): every architecture is trained twice, as configured (augmentation
off: the comparison measures the core) and with `RECIPES` (photometric augmentation, per-channel input
normalisation, timing augmentation; named `<arch>_robust`). The worlds render only the training distribution
in both: the recipes change the rendered frames in image space and the sensor timing, never the season,
lighting or fog.

Training budget: `--schedule headline` (default) is a reduced recipe (`HEADLINE_SCHEDULE`) sized so that
100 training runs fit the machine budget; `--schedule shipped` is each config's own. `--train-minutes M` then
scales the schedule's episodes and epochs by M / FULL_SCHEDULE_MINUTES (M >= that: unchanged): every
architecture gets the same episodes and epochs (a wall-clock cut would give slow cores less data). The
measured training wall time of every run is in the report.

Where: training runs in a local process pool of `--workers` (one CPU thread each), or with `--backend ray` as
Ray tasks on the cluster the evaluation then uses too (`_train_on_ray`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from itertools import combinations

from liquid_control import folder_lock
from liquid_control.evaluation.errors import RunFailedError
from liquid_control.evaluation.plan import EXPERT, EvaluationSetupError, parse_pairs, unique_pairs
from liquid_control.evaluation.shifts import SHIFT_SETS
from liquid_control.processes import (
    WarningsOnce,
    available_cpus,
    collect_results,
    more_workers_than_cpus,
    run_keeping_warnings,
    spawn_pool,
)
from liquid_control.shown import counted

# architecture name in the report -> shipped config (policies/configs/)
ARCHITECTURES = {
    "cfc": "cfc_rover.yaml",
    "cfc_ncp": "cfc_ncp_rover.yaml",
    "ltc": "ltc_rover.yaml",
    "ltc_ncp": "ltc_ncp_rover.yaml",
    "ctrnn": "ctrnn_rover.yaml",
    "gru_ode": "gru_ode_rover.yaml",
    "lstm": "lstm_rover.yaml",
    "gru": "gru_rover.yaml",
    "tcn": "tcn_rover.yaml",
    "cfc_no_dt": "cfc_rover_no_dt.yaml",
    "mlp": "mlp_rover.yaml",
}
DEFAULT_ARCHS = [a for a in ARCHITECTURES if a != "mlp"]  # the drone paper's list plus the no-dt ablation
ROBUST_SUFFIX = "_robust"
# The robustness recipes (docs/training.md): all three switches. policies/configs/cfc_ncp_rover_robust.yaml (the
# shipped robust policy) turns on the first two only (docs/robustness.md, "Which recipe costs what").
RECIPES = {
    "training.augmentation": ["brightness", "contrast", "gamma", "colour", "noise", "blur"],
    "encoder.camera.normalize": "instance",
    "training.sensor_rate_range": [0.5, 2.0],
    "training.jitter_range": [0.5, 2.0],
}
RECIPE_ARMS = {"off": (False,), "on": (True,), "both": (False, True)}
# The reduced training recipe of the headline (see docs/ood.md): one DAgger round, no model selection
# episodes (the last round is kept), fewer epochs. CfC-NCP measured 56 CPU-s per run without the recipes and
# 160 with them on the 2-core development machine; the other cores within ~20% (docs/ood.md, "What the target
# budget costs").
HEADLINE_SCHEDULE = {
    "training.demonstrations": 40,
    "training.dagger_rounds": 1,
    "training.dagger_episodes": 20,
    "training.beta": [0.3],
    "training.epochs_first": 8,
    "training.epochs_per_round": 4,
    "training.eval_episodes": 0,
}
SCHEDULES = {"headline": HEADLINE_SCHEDULE, "shipped": {}}
SCHEDULE_KEYS = tuple(HEADLINE_SCHEDULE)  # what a schedule and its --train-minutes scaling set
FULL_SCHEDULE_MINUTES = 20.0  # --train-minutes at which a schedule runs unscaled
DEFAULT_EPISODES = 30
TARGET_SEEDS = 5  # training seeds per architecture of the target budget (with DEFAULT_EPISODES, the headline
# schedule unscaled and the headline shifts); a report short of any says so
EXPERIMENTS = {
    "headline": "train CfC, CfC-NCP, LTC, LTC-NCP, CT-RNN, GRU-ODE, LSTM, GRU, TCN and CfC-without-dt, with and "
    "without the robustness recipes; evaluate on the headline shifts"
}


def config_path(arch: str) -> str:
    """The shipped config file of architecture ``arch``."""
    from liquid_control.paths import policies_dir

    return str(policies_dir() / "configs" / ARCHITECTURES[arch])


def variant_name(arch: str, robust: bool) -> str:
    """The policy name of ``arch``, with ``ROBUST_SUFFIX`` when trained with the recipes."""
    return arch + (ROBUST_SUFFIX if robust else "")


def schedule_overrides(config: dict, minutes: float) -> dict:
    """Training overrides (dotted keys) that size the config's schedule for `minutes` (see module doc)."""
    if minutes <= 0:
        raise EvaluationSetupError(f"--train-minutes must be > 0, got {minutes}")
    fraction = min(1.0, minutes / FULL_SCHEDULE_MINUTES)
    if fraction >= 1.0:
        return {}
    t = config["training"]
    rounds = max(1, round(t["dagger_rounds"] * fraction)) if t["dagger_rounds"] else 0
    betas = t["beta"]
    if rounds and betas:  # keep the decay from the first to the last beta over fewer rounds
        betas = [betas[round(i * (len(betas) - 1) / max(rounds - 1, 1))] for i in range(rounds)]
    return {
        "training.demonstrations": max(4, round(t["demonstrations"] * fraction)),
        "training.dagger_rounds": rounds,
        "training.dagger_episodes": max(2, round(t["dagger_episodes"] * fraction)),
        "training.beta": betas,
        "training.epochs_first": max(1, round(t["epochs_first"] * fraction)),
        "training.epochs_per_round": max(1, round(t["epochs_per_round"] * fraction)),
        "training.eval_episodes": min(t["eval_episodes"], max(5, round(t["eval_episodes"] * fraction))),
    }


def describe_schedule(schedule: str, minutes: float) -> str:
    """How the report names the training budget."""
    fraction = min(1.0, minutes / FULL_SCHEDULE_MINUTES)
    base = "each config's shipped schedule" if schedule == "shipped" else "the reduced headline schedule"
    return base if fraction >= 1.0 else f"{base} scaled to {fraction:.0%} (--train-minutes {minutes:g})"


def _log_with_prefix(prefix: str, message: str) -> None:
    print(f"[{prefix}] {message}", file=sys.stderr, flush=True)


def _wanted_config(arch: str, overrides: dict) -> dict:
    """The complete config a run of ``arch`` with ``overrides`` trains (what its config.yaml holds)."""
    from liquid_control.policy import apply_overrides, load_config

    wanted = load_config(config_path(arch))
    return apply_overrides(wanted, overrides) if overrides else wanted


def _is_started(out_dir: str) -> bool:
    """Whether ``out_dir`` holds an interrupted training run (what `train --resume` continues)."""
    return os.path.exists(os.path.join(out_dir, "checkpoint.pt")) or os.path.isdir(os.path.join(out_dir, "data"))


def _is_finished(out_dir: str, resume: bool) -> bool:
    """Whether ``out_dir`` holds a finished run that a resume keeps."""
    return resume and os.path.isfile(os.path.join(out_dir, "policy.pt"))


def _run_training(name: str, arch: str, seed: int, out_dir: str, overrides: dict, resume: bool, log, where: str):
    """The one ``train`` call of the experiment (local pool or Ray task)."""
    from liquid_control.training import train

    train(
        config_path(arch),
        out_dir,
        seed=seed,
        resume=resume,
        overrides=overrides or None,
        progress=False,
        epoch_lines=False,  # ~100 runs in one log: each says its rounds and its end, not its every epoch
        threads=1,
        log=log,
        command=f"liquid-control eval --experiment headline (training {name}, seed {seed}{where})",
    )


def init_training_worker() -> None:
    """A training worker (the experiment's, scripts/seed_factors.py's) stops at Ctrl-C and with its parent, as an
    evaluation worker does. Before, Ctrl-C only interrupted the runs in progress: the pool then trained the runs
    already queued to it (one per worker and one more), whole, before the experiment could say what it keeps;
    checkpoints are written whole, so --resume continues a run stopped mid-epoch from its last one.

    tqdm's lock is a thread lock here: its default, made by the run's first (hidden) bar, is a multiprocessing lock,
    a semaphore registered with the pool's resource tracker, which a worker ended at Ctrl-C or SIGTERM never
    unregisters ('resource_tracker: There appear to be 1 leaked semaphore objects' after the stop's line); a spawned
    worker shares it with no other process anyway."""
    import threading

    from tqdm import tqdm

    from liquid_control.processes import die_with_parent, quiet_ctrl_c_in_worker

    quiet_ctrl_c_in_worker()  # a Ray task's process is no WorkerProcess (a pool's does it as it starts)
    die_with_parent()
    tqdm.set_lock(threading.RLock())


def _refused(name: str, seed: int, out_dir: str, exc: Exception) -> EvaluationSetupError:
    """A training run's refusal (``train``'s TrainingError), naming the run."""
    return EvaluationSetupError(f"training {name} (seed {seed}) in {out_dir}: {exc}")


def _check_kept_run(name: str, arch: str, seed: int, out_dir: str, overrides: dict) -> None:
    """Refuse to keep the finished run in ``out_dir``, or continue the interrupted one, with other options than its
    own, as its ``train --resume`` would refuse it (``check_resume``: the trainer's own comparison; an older
    version's config.yaml read as the run reads it)."""
    from liquid_control.policy import PolicyConfigError
    from liquid_control.training import TrainingError
    from liquid_control.training.trainer import check_resume

    try:
        check_resume(config_path(arch), out_dir, overrides or None, seed)
    except (TrainingError, PolicyConfigError) as exc:  # train's words; what the experiment's user can change:
        raise EvaluationSetupError(
            f"{_refused(name, seed, out_dir, exc)}. The experiment's runs train with the config of its --schedule, "
            "--train-minutes and --train-set: resume with those the run was trained with, or choose another --out"
        ) from None


def _train_one(name: str, arch: str, seed: int, out_dir: str, overrides: dict, resume: bool) -> dict:
    """One training run in a worker process: returns where the policy is and what training measured."""
    from liquid_control.policy import read_metadata
    from liquid_control.processes import keep_freed_memory
    from liquid_control.training import TrainingError

    keep_freed_memory()
    policy_path = os.path.join(out_dir, "policy.pt")
    cpu_started = time.process_time()  # this worker runs one training at a time: its CPU time is this run's
    trained_here = False
    if _is_finished(out_dir, resume):
        _check_kept_run(name, arch, seed, out_dir, overrides)
        _log_with_prefix(f"{name} seed {seed}", f"already trained: {policy_path}")
    else:
        log = functools.partial(_log_with_prefix, f"{name} seed {seed}")
        try:
            _run_training(name, arch, seed, out_dir, overrides, resume and _is_started(out_dir), log, "")
        except TrainingError as exc:  # e.g. --resume with another schedule: a clear error, not a trace
            raise _refused(name, seed, out_dir, exc) from None
        trained_here = True
    metadata = read_metadata(policy_path)
    cpu_s = round(time.process_time() - cpu_started, 1) if trained_here else None
    return {"name": name, "arch": arch, "seed": seed, "policy": policy_path, "metadata": metadata, "cpu_s": cpu_s}


def training_overrides(
    arch: str, minutes: float, extra: dict | None = None, robust: bool = False, schedule: str = "shipped"
) -> dict:
    """The overrides one variant trains with: schedule, its --train-minutes scaling, recipes, then --train-set."""
    from liquid_control.policy import PolicyConfigError, apply_overrides, load_config

    if schedule not in SCHEDULES:
        raise EvaluationSetupError(f"unknown schedule {schedule!r}; choose from {', '.join(SCHEDULES)}")
    config = load_config(config_path(arch))
    base = dict(SCHEDULES[schedule])
    try:
        scheduled = apply_overrides(config, base) if base else config
        overrides = {**base, **schedule_overrides(scheduled, minutes), **(RECIPES if robust else {}), **(extra or {})}
        from liquid_control.training.trainer import check_episode_seeds

        check_episode_seeds(apply_overrides(config, overrides), 0, simulated=True)  # here, not in a worker later
    except (PolicyConfigError, ValueError, KeyError) as exc:
        raise EvaluationSetupError(f"--train-set for {arch} ({config_path(arch)}): {exc}") from None
    return overrides


def train_all(
    variants: list[tuple[str, str]],
    seeds: list[int],
    train_dir: str,
    overrides: dict,
    resume: bool,
    workers: int,
    backend: str = "process",
    on_work=None,
):
    """Train every (variant, seed) in parallel (one CPU thread each); finished runs are kept.

    ``variants``: [(name, arch)]; ``overrides``: name -> training overrides. ``backend`` "ray" trains on the
    Ray cluster this process is connected to (``_train_on_ray``), any other in a local process pool of
    ``workers``. ``on_work()`` is called once the folders are checked, before the first run trains (never
    when every run is kept): the part of the experiment that does work begins (``provenance.Sitting``).
    """
    jobs = []
    for name, arch in variants:
        for seed in seeds:
            out_dir = os.path.join(train_dir, name, f"seed_{seed}")
            if not resume and os.path.exists(out_dir):
                raise EvaluationSetupError(
                    f"{out_dir} already holds a training run: pass --resume to continue "
                    "the experiment, or choose another --out"
                )
            # here, before any run starts (a worker checks again where it keeps the run: a Ray node's folder).
            # Found in a worker, a pool had started and runs not begun before were training with the other
            # options when the refusal came. On Ray an interrupted run trains afresh (_check_ray_start)
            if _is_finished(out_dir, resume) or (resume and _is_started(out_dir) and backend != "ray"):
                _check_kept_run(name, arch, seed, out_dir, overrides[name])
            jobs.append((name, arch, seed, out_dir, overrides[name], resume))
    if backend == "ray":
        return _train_on_ray(jobs, on_work)
    if on_work is not None and not all(_is_finished(job[3], resume) for job in jobs):
        on_work()
    results = []
    workers = max(1, min(workers, len(jobs)))
    too_many = more_workers_than_cpus(workers, available_cpus(), "a training run's world and torch (~300 MB or more)")
    if too_many:  # allowed (the same runs), as eval's and train's pools say it
        print(f"liquid-control eval: {too_many}", file=sys.stderr, flush=True)
    shown = WarningsOnce()  # a worker's warnings: once in the experiment (at the end of its run), not once per worker
    with spawn_pool(workers, init_training_worker) as pool:
        job_of = {pool.submit(run_keeping_warnings, _train_one, *job): job for job in jobs}

        def done(future):
            try:
                result, caught = future.result()
                shown.show(caught)
                results.append(result)
            except BrokenProcessPool as exc:  # killed, or by the kernel's OOM killer: a traceback before
                raise RunFailedError(
                    "a training worker process died (killed by a signal, or by the kernel when memory ran out; its "
                    "error, if it printed one, is above); which of the running trainings it held is not known"
                ) from exc
            except EvaluationSetupError:  # names the run already
                raise
            except Exception as exc:  # an error in the code: a traceback naming no run before
                name, _, seed, out_dir = job_of[future][:4]
                raise RunFailedError(
                    f"training {name} (seed {seed}) in {out_dir} failed: {type(exc).__name__}: {exc}"
                ) from exc
            _log_done(results[-1], len(results), len(jobs))

        collect_results(pool, job_of, done)
    return _in_job_order(results, jobs)


def _in_job_order(results: list[dict], jobs: list[tuple]) -> list[dict]:
    order = {(j[0], j[2]): i for i, j in enumerate(jobs)}
    return sorted(results, key=lambda r: order[(r["name"], r["seed"])])


def _log_done(result: dict, count: int, total: int) -> None:
    wall = result["metadata"].get("training_wall_s", "?")
    if result["cpu_s"] is None:
        message = f"kept, trained earlier in {wall} s wall"
    else:
        where = f" on Ray ({result['node']})" if "node" in result else ""
        message = f"trained{where} in {wall} s wall, {result['cpu_s']} s CPU"
    _log_with_prefix(f"{result['name']} seed {result['seed']}", f"{message} ({count}/{total})")


RAY_RUN_FILES = ("config.yaml", "metrics.csv", "policy.pt")  # what a Ray task sends back


def _train_on_ray(jobs: list[tuple], on_work=None) -> list[dict]:
    """Training runs as Ray tasks (1 CPU each, a fresh worker process per run, no silent retry) on the cluster
    this process is connected to. Every folder is checked before anything is sent: a finished run is kept as
    the pool keeps it, an interrupted one must be of the same options (as `train --resume` requires). Every
    other run trains from its start in a private folder on a node and sends back the files the evaluation
    needs, which replace the run's folder here in one rename (an interrupted run there is superseded, not
    continued). A run that fails does not stop the others: they are kept, then the first error is raised."""
    import ray

    results, errors, todo = [], [], []
    for job in jobs:
        if _is_finished(job[3], job[5]):
            results.append(_train_one(*job))  # checks the kept run's config, as the pool does
            _log_done(results[-1], len(results), len(jobs))
        else:
            _check_ray_start(job)
            todo.append(job)
    if todo and on_work is not None:
        on_work()
    remote = ray.remote(num_cpus=1, max_calls=1, max_retries=0)(_train_in_ray_task)
    pending = {}
    try:
        for job in todo:
            pending[remote.remote(job[0], job[1], job[2], job[4], _package_version())] = job
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                try:
                    results.append(_keep_ray_run(job, ray.get(ref)))
                except Exception as exc:  # a worker crash, a refused run: the others go on
                    if not isinstance(exc, EvaluationSetupError):
                        exc = EvaluationSetupError(f"training {job[0]} (seed {job[2]}) on Ray: {exc}")
                    _log_with_prefix(f"{job[0]} seed {job[2]}", f"failed: {exc}")
                    errors.append(exc)
                    continue
                _log_done(results[-1], len(results), len(jobs))
    except BaseException:  # interrupted: the runs not back yet are cancelled
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    if errors:
        raise errors[0]
    return _in_job_order(results, jobs)


def _check_ray_start(job: tuple) -> None:
    """The checks `train` makes of a run's folder before it writes anything, made here: the run trains on a
    node, and its folder here is replaced when it comes back."""
    from pathlib import Path

    from liquid_control.training import TrainingError
    from liquid_control.training.trainer import check_out_dir, check_saved_config

    name, arch, seed, out_dir, overrides, resume = job
    wanted, saved = _wanted_config(arch, overrides), Path(out_dir) / "config.yaml"
    try:
        if check_out_dir(Path(out_dir), resume and _is_started(out_dir), wanted) and saved.is_file():
            check_saved_config(saved, wanted)
    except TrainingError as exc:
        raise EvaluationSetupError(f"training {name} (seed {seed}) in {out_dir}: {exc}") from None
    if resume and _is_started(out_dir):
        _log_with_prefix(f"{name} seed {seed}", f"the interrupted run in {out_dir} trains again on Ray")


def _package_version() -> str:
    import liquid_control

    return liquid_control.__version__


def _train_in_ray_task(name: str, arch: str, seed: int, overrides: dict, version: str) -> dict:
    """Runs on a Ray worker: one training run in a private temporary folder; returns its files and its log
    (an error returns with the log so far)."""
    import platform
    import tempfile
    import traceback
    from pathlib import Path

    from liquid_control.evaluation.backends import _init_worker
    from liquid_control.training import TrainingError

    _init_worker()
    lines, node = [], platform.node()
    if _package_version() != version:
        return {
            "error": f"liquid_control {_package_version()} here, {version} on the driver",
            "log": lines,
            "node": node,
        }
    cpu_started = time.process_time()
    with tempfile.TemporaryDirectory(prefix="liquid_control_train_") as tmp:
        try:
            _run_training(name, arch, seed, tmp, overrides, False, lines.append, ", on Ray")
        except TrainingError as exc:
            return {"error": str(exc), "log": lines, "node": node}
        except Exception:
            return {"error": traceback.format_exc(), "log": lines, "node": node}
        files = {f: (Path(tmp) / f).read_bytes() for f in RAY_RUN_FILES if (Path(tmp) / f).is_file()}
    return {"files": files, "log": lines, "node": node, "cpu_s": round(time.process_time() - cpu_started, 1)}


def _keep_ray_run(job: tuple, sent: dict) -> dict:
    """Make a Ray task's run the run in its folder here, once its config is the one this process asked for
    (compared as written, defaults and all: a node with another version of the package trains another one)
    and its policy file is one this version reads."""
    import shutil

    import yaml

    from liquid_control.atomic_file import atomic_write
    from liquid_control.policy import read_metadata

    name, arch, seed, out_dir, overrides, _ = job
    for line in sent["log"]:
        _log_with_prefix(f"{name} seed {seed}", line)
    where = f"training {name} (seed {seed}) on Ray node {sent['node']}"
    if "error" in sent:
        raise EvaluationSetupError(f"{where}: {sent['error']}")
    missing = [f for f in RAY_RUN_FILES if f not in sent["files"]]
    if missing:
        raise EvaluationSetupError(f"{where} sent no {', '.join(missing)}")
    # hidden, beside the folder (one rename puts the run in place), and no seed_* that a glob would take
    parent, folder = os.path.split(out_dir.rstrip(os.sep))
    staging = os.path.join(parent, f".{folder}.from_ray")
    shutil.rmtree(staging, ignore_errors=True)  # what a driver killed while staging left
    for filename in RAY_RUN_FILES:
        with atomic_write(os.path.join(staging, filename)) as fh:
            fh.write(sent["files"][filename])
    try:
        try:
            same = yaml.safe_load(sent["files"]["config.yaml"]) == _wanted_config(arch, overrides)
        except yaml.YAMLError:
            same = False
        if not same:
            raise EvaluationSetupError(
                f"{where} trained another config than {config_path(arch)} with these options here; install the "
                "same liquid_control on every node"
            )
        try:
            metadata = read_metadata(os.path.join(staging, "policy.pt"))
        except Exception as exc:
            raise EvaluationSetupError(f"{where} sent a policy file this version cannot read: {exc}") from None
    except EvaluationSetupError:
        shutil.rmtree(staging)
        raise
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)  # checked before the run was sent: empty, a start of these options, or its run
    os.replace(staging, out_dir)
    return {
        "name": name,
        "arch": arch,
        "seed": seed,
        "policy": os.path.join(out_dir, "policy.pt"),
        "metadata": metadata,
        "cpu_s": sent["cpu_s"],
        "node": sent["node"],
    }


def _schedule_values(config: dict) -> dict:
    """The schedule keys (``SCHEDULE_KEYS``) of a complete config: what a run's config.yaml says it trained with."""
    return {key: config["training"][key.split(".", 1)[1]] for key in SCHEDULE_KEYS}


def _shown_values(values: dict) -> str:
    return ", ".join(f"`{k}={v}`" for k, v in values.items())


def _recipes_of(config: dict) -> list[str]:
    """The robustness recipes a complete config trains with, one line each, without the rendered worlds' line."""
    from liquid_control.training.augment import describe_recipes

    return describe_recipes(config["training"], config["encoder"]["camera"])[:-1]


def _trained_configs(trained: list[dict], overrides: dict) -> dict:
    """Each variant trained: its name -> (arch, the complete config its runs trained, what their config.yaml
    holds), in ``overrides``' order."""
    arch = {r["name"]: r["arch"] for r in trained}
    return {name: (arch[name], _wanted_config(arch[name], overrides[name])) for name in overrides if name in arch}


def _training_notes(
    trained: list[dict],
    schedule: str,
    minutes: float,
    overrides: dict,
    arms,
    backend: str = "process",
    extra: dict | None = None,
) -> list[str]:
    """The report's Training section, its schedule and recipes read from the configs the runs trained
    (``overrides``: name -> its overrides, ``extra``: the --train-set among them). Before, it printed the unscaled
    schedule (``training.demonstrations=40`` beside runs of 4) and the recipes as if --train-set changed none."""
    from liquid_control.training.augment import describe_recipes

    extra = extra or {}
    configs = _trained_configs(trained, overrides)
    # as --schedule and --train-minutes alone set them: what --train-set changed is said
    unset = {
        name: _wanted_config(arch, training_overrides(arch, minutes, None, name.endswith(ROBUST_SUFFIX), schedule))
        for name, (arch, _) in configs.items()
    }
    by_values: dict[str, list[str]] = {}  # the schedule as trained -> the policies trained with it
    for name, (_, config) in configs.items():
        by_values.setdefault(_shown_values(_schedule_values(config)), []).append(name)
    if len(by_values) == 1:
        scheduled = next(iter(by_values))
    else:  # each config's own schedule (--schedule shipped), where they differ
        scheduled = "; ".join(f"{', '.join(f'`{n}`' for n in names)}: {v}" for v, names in by_values.items())
    by_extra = any(_schedule_values(config) != _schedule_values(unset[name]) for name, (_, config) in configs.items())
    walls = [float(r["metadata"]["training_wall_s"]) for r in trained if r["metadata"].get("training_wall_s")]
    cpus = [r["cpu_s"] for r in trained if r.get("cpu_s") is not None]
    lines = [
        "## Training",
        "",
        f"Every policy trained on the training distribution (`in_distribution`: summer, noon, clear air, nominal "
        f"sensors) with {describe_schedule(schedule, minutes)}"
        + (", then `--train-set`" if by_extra else "")
        + f" (as each run's config.yaml says): {scheduled}. Training wall time: wall-clock seconds of one run on one "
        "CPU thread, as many runs side by side as "
        + ("the Ray cluster's CPUs" if backend == "ray" else "workers")
        + " (on a shared machine it includes the other jobs' share); training CPU: the run's own CPU "
        "seconds (n/a: trained by an earlier part of a resumed run)"
        + (f"; total {sum(walls):.0f} s wall over {counted(len(walls), 'run')}" if walls else "")
        + (f", {sum(cpus):.0f} CPU s over {counted(len(cpus), 'run')}" if cpus else "")
        + ".",
        "",
    ]
    robust = [name for name in configs if name.endswith(ROBUST_SUFFIX)]
    if True in arms and robust:
        recipe_cfg = configs[robust[0]][1]  # the recipes as trained: --train-set may have changed one
        plain = [config for name, (_, config) in configs.items() if not name.endswith(ROBUST_SUFFIX)]
        archs = "`, `".join(a for a in ARCHITECTURES if a in {arch for arch, _ in configs.values()})
        if plain:  # in this report (--recipes both): what they saw, --train-set's recipes included
            plain_saw = _recipes_of(plain[0])
            plain_said = f"; the `{archs}` policies without the suffix saw " + (
                "the rendered frames with what `--train-set` gave every policy: " + "; ".join(plain_saw)
                if plain_saw
                else "only the rendered frames at nominal timing"
            )
        lines += [
            f"`*{ROBUST_SUFFIX}` policies: the same configs trained with the robustness recipes"
            + (", as `--train-set` changed them" if _recipes_of(recipe_cfg) != _recipes_of(unset[robust[0]]) else "")
            + f". What they saw (and nothing else{plain_said if plain else ''}):",
            "",
        ]
        lines += [f"- {line}" for line in describe_recipes(recipe_cfg["training"], recipe_cfg["encoder"]["camera"])]
        lines.append("")
    lines += [
        "| policy | config | training seed | training wall time (s) | training CPU (s) | training episodes "
        "| selected round |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in trained:
        m = r["metadata"]
        lines.append(
            f"| {r['name']} | `policies/configs/{ARCHITECTURES[r['arch']]}` | {r['seed']} | "
            f"{m.get('training_wall_s', 'n/a')} | {r['cpu_s'] if r.get('cpu_s') is not None else 'n/a'} | "
            f"{m.get('training_episodes', 'n/a')} | "
            f"{m.get('selected_round', 'n/a')} |"
        )
    if extra:  # every --train-set, the schedule's keys and the recipes' too (before: only the others)
        lines += ["", "Further training overrides (`--train-set`, every policy): " + _shown_values(extra)]
    lines.append("")
    return lines


def reduced_budget(seeds: int, episodes: int, shifts: list[str], configs: dict) -> list[str]:
    """What falls short of the target budget (``liquid-control eval --experiment headline``), one phrase each (none:
    the target). ``configs``: name -> (arch, the complete config its runs trained). Before, only --seeds,
    --episodes and --train-minutes were looked at: a run of one shift trained on 4 demonstrations by --train-set
    read as the target."""
    from liquid_control.evaluation.shifts import shift_changes
    from liquid_control.policy import apply_overrides, load_config

    short = []
    if seeds < TARGET_SEEDS:
        short.append(f"{counted(seeds, 'training seed')} per architecture (target {TARGET_SEEDS})")
    below = {}  # key -> (trained value, the headline schedule's), the fewest trained where policies differ
    for arch, config in configs.values():
        target = _schedule_values(apply_overrides(load_config(config_path(arch)), HEADLINE_SCHEDULE))
        for key, value in _schedule_values(config).items():
            if isinstance(value, (int, float)) and value < target[key] and value < below.get(key, (math.inf,))[0]:
                below[key] = (value, target[key])
    if below:
        short.append(
            "training below the headline schedule: "
            + ", ".join(f"`{k}={v}` (target {t})" for k, (v, t) in below.items())
        )
    if episodes < DEFAULT_EPISODES:
        short.append(f"{counted(episodes, 'episode')} per shift and seed (target {DEFAULT_EPISODES})")
    asked = [shift_changes(s) for s in shifts]
    missing = [s for s in SHIFT_SETS["headline"] if shift_changes(s) not in asked]
    if missing:
        headline = len(SHIFT_SETS["headline"])
        short.append(
            f"{headline - len(missing)} of the {headline} headline shifts (without `" + "`, `".join(missing) + "`)"
        )
    return short


def comparison_pairs(archs: list[str], arms) -> list[tuple[str, str]]:
    """The comparisons over seeds: every pair of architectures within each recipe arm, and each recipe's effect."""
    pairs = []
    for robust in arms:
        pairs += [(variant_name(a, robust), variant_name(b, robust)) for a, b in combinations(archs, 2)]
    if len(arms) == 2:
        pairs += [(variant_name(a, True), variant_name(a, False)) for a in archs]
    return pairs


def run_experiment(args, command: str = "") -> dict:
    """`liquid-control eval --experiment headline`: train, then evaluate, into args.out."""
    from liquid_control.evaluation.backends import ray_connection
    from liquid_control.evaluation.evaluate import evaluate, option_arguments
    from liquid_control.evaluation.plan import build_plan, refuse_training_run_folder
    from liquid_control.evaluation.provenance import Sitting, code_commit
    from liquid_control.training.episodes import MAX_TRAIN_SEED

    started, commit = time.time(), code_commit()
    if args.experiment not in EXPERIMENTS:
        raise EvaluationSetupError(f"unknown experiment {args.experiment!r}; choose from {', '.join(EXPERIMENTS)}")
    archs = list(DEFAULT_ARCHS) if args.archs is None else [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = [a for a in archs if a not in ARCHITECTURES]
    if unknown:
        raise EvaluationSetupError(f"unknown architecture(s) {unknown}; choose from {', '.join(ARCHITECTURES)}")
    if not archs:
        raise EvaluationSetupError(
            f"--archs {args.archs!r}: no architecture given; choose from {', '.join(ARCHITECTURES)}"
        )
    repeated = sorted({a for a in archs if archs.count(a) > 1})
    if repeated:  # two runs of one architecture would train into the same folders
        raise EvaluationSetupError(f"--archs {args.archs!r}: {', '.join(repeated)} given twice; name each once")
    if args.seeds < 1:
        raise EvaluationSetupError(f"--seeds must be >= 1, got {args.seeds}")
    if args.seeds > MAX_TRAIN_SEED + 1:
        raise EvaluationSetupError(
            f"--seeds must be <= {MAX_TRAIN_SEED + 1} (training seeds 0..{MAX_TRAIN_SEED}), got {args.seeds}"
        )
    if not args.train_minutes > 0 or not math.isfinite(args.train_minutes):
        raise EvaluationSetupError(f"--train-minutes must be a number > 0, got {args.train_minutes}")
    if args.policy:  # the experiment evaluates the policies it trains (and the expert)
        raise EvaluationSetupError(
            f"--policy {args.policy[0]}: --experiment evaluates the policies it trains; leave --policy out "
            "(or evaluate your own policies without --experiment)"
        )
    arms = RECIPE_ARMS[args.recipes]
    variants = [(variant_name(a, robust), a) for robust in arms for a in archs]
    episodes = DEFAULT_EPISODES if args.episodes is None else args.episodes
    shifts = list(args.shift) + [s for name in args.shift_set for s in SHIFT_SETS[name]]
    shifts = shifts or SHIFT_SETS["headline"]
    # validate the shifts (and the evaluation options) before hours of training
    build_plan([EXPERT], shifts, episodes, episode_seed_base=args.episode_seed_base)
    names = [n for n, _ in variants]
    cli_pairs = parse_pairs(args.paired, ([] if args.no_expert else [EXPERT]) + names)
    from liquid_control.training.cli import parse_overrides

    try:
        extra = parse_overrides(args.train_set)
    except ValueError as exc:
        raise EvaluationSetupError(str(exc).replace("--set", "--train-set")) from None
    overrides = {
        variant_name(a, robust): training_overrides(a, args.train_minutes, extra, robust, args.schedule)
        for robust in arms
        for a in archs
    }

    from liquid_control.evaluation.results import LOG_NAME

    folder_lock.check_free(args.out, "evaluate into another --out", EvaluationSetupError)  # who, not what it wrote
    refuse_training_run_folder(args.out)  # before hours of training
    if not args.resume and os.path.exists(os.path.join(args.out, LOG_NAME)):
        raise EvaluationSetupError(
            f"{args.out} already holds an evaluation: pass --resume to continue it, or choose another --out"
        )
    with contextlib.ExitStack() as connection:  # with --backend ray, training and evaluation share one
        if args.backend == "ray":
            # before --out is made: a refusal makes none
            connection.enter_context(ray_connection(args.ray_address, args.workers))
        os.makedirs(args.out, exist_ok=True)
        # one experiment at a time in a folder: a second one trained the same runs beside the first (each run
        # refused where the other trained it) and evaluated into the same log; its evaluation holds it too
        connection.enter_context(folder_lock.hold(args.out, "evaluate into another --out", EvaluationSetupError))
        sitting = connection.enter_context(Sitting(args.out, command, started, commit, args.resume))
        trained = train_all(
            variants,
            list(range(args.seeds)),
            os.path.join(args.out, "train"),
            overrides,
            args.resume,
            args.workers or available_cpus(),
            args.backend,
            on_work=sitting.working,
        )
        training_wall = sitting.elapsed()  # monotonic: a wall clock step during training leaves it true
        policies = [] if args.no_expert else [EXPERT]
        for name in names:
            policies.append(f"{name}=" + ",".join(r["policy"] for r in trained if r["name"] == name))
        plan = build_plan(policies, shifts, episodes, episode_seed_base=args.episode_seed_base)
        short = reduced_budget(args.seeds, episodes, shifts, _trained_configs(trained, overrides))
        notes = []
        if short:
            notes += [
                "**Reduced budget**: "
                + "; ".join(short)
                + f". Training: {describe_schedule(args.schedule, args.train_minutes)}"
                + (" and `--train-set` (see Training)" if extra else "")
                + ". The target budget is `liquid-control eval --experiment headline --out reports/headline` "
                f"({TARGET_SEEDS} seeds, {DEFAULT_EPISODES} episodes, the headline schedule and shifts). Small "
                "samples: read the intervals.",
                "",
            ]
        notes += [
            "Policies: "
            + ", ".join(f"`{a}` = `policies/configs/{ARCHITECTURES[a]}`" for a in archs)
            + (
                f"; `<name>{ROBUST_SUFFIX}`: the same config trained with the robustness recipes"
                if True in arms
                else ""
            )
            + (
                ". `expert` is the privileged expert (sees the true state), a reference, not a competitor."
                if not args.no_expert
                else "."
            ),
            "",
        ]
        sections = _training_notes(trained, args.schedule, args.train_minutes, overrides, arms, args.backend, extra)
        panels = {}
        for robust in arms:
            title = "with the robustness recipes" if robust else "as configured (no recipes)"
            panels[title] = ([] if args.no_expert or robust else [EXPERT]) + [variant_name(a, robust) for a in archs]
        return evaluate(
            plan,
            args.out,
            title="Headline experiment: liquid and baseline cores under distribution shift",
            notes=notes,
            sections=sections,
            paired=cli_pairs,
            comparisons=unique_pairs(comparison_pairs(archs, arms) + cli_pairs),  # --paired cfc,lstm: once
            panels=panels,
            started=started,
            commit=commit,
            sitting=sitting,
            provenance_extra={
                "training_wall_time_s": round(training_wall, 1),
                "budget": f"{counted(args.seeds, 'training seed')} x {counted(len(names), 'policy', 'policies')}, "
                f"{counted(episodes, 'episode')} x {counted(len(shifts), 'shift')} per policy and seed",
            },
            **option_arguments(args, command),
        )
