"""`liquid-control eval`: policies x shifts x episodes x training seeds -> a report folder.

liquid-control eval --policy expert --policy cfc=runs/cfc_s*/policy.pt \
        --shift in_distribution --shift season=winter --episodes 20 --out reports/winter
liquid-control eval --experiment headline --out reports/headline   # trains, then evaluates
"""

from __future__ import annotations

import argparse
import os
import sys

from liquid_control.evaluation.errors import RunFailedError
from liquid_control.evaluation.plan import (
    BACKENDS,
    DEFAULT_EPISODE_SEED_BASE,
    DEFAULT_LANES,
    DEFAULT_SHIFT,
    CheckpointChangedError,
    EvaluationSetupError,
    parse_pairs,
    validate_output_folder,
)
from liquid_control.evaluation.shifts import SHIFT_SETS
from liquid_control.paths import first_missing_folder, remove_made_folder, user_path
from liquid_control.processes import Terminated, WorkerPoolError, interrupt_in_ctypes, sigterm_as_interrupt
from liquid_control.shown import counted

DEFAULT_EPISODES = 20


EPILOG = """\
examples:
  liquid-control eval --policy expert --shift-set visual --episodes 10 --out reports/expert
  liquid-control eval --policy expert --policy cfc_ncp=runs/cfc_ncp_rover/policy.pt --shift-set headline \\
      --out reports/mine
  liquid-control eval --policy cfc_ncp=runs/cfc_ncp_rover/policy.pt --shift season=winter,lighting=dusk \\
      --episodes 20 --out reports/winter_dusk
  liquid-control eval --experiment headline --out reports/headline              # train and evaluate every core
  liquid-control eval --bag 'bags/heldout/*' --policy runs/robot/policy.pt --out reports/offline  # recorded bags

The report folder holds report.md, results.csv/json and episodes.jsonl; --resume continues a stopped run.
See docs/ood.md.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``liquid-control eval``."""
    from liquid_control.evaluation import experiment

    parser.epilog = EPILOG

    what = parser.add_argument_group("what to evaluate")
    what.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="SPEC",
        help="`expert` (privileged reference) or [NAME=]CKPT[,CKPT...] (globs allowed), one "
        "checkpoint per training seed; repeat for several policies. The text before the first '=' is a NAME "
        "where it holds no '/' and the whole value names no file (runs/lr=0.1/policy.pt is a path); where both "
        "readings name files it is refused (./ before the value: a path)",
    )
    what.add_argument(
        "--shift",
        action="append",
        default=[],
        metavar="SHIFT",
        help="a shift preset or string (e.g. winter, season=winter,lighting=dusk; `in_distribution` = "
        "the training distribution, the default); repeat for several",
    )
    what.add_argument(
        "--shift-set",
        choices=sorted(SHIFT_SETS),
        action="append",
        default=[],
        help="a named list of shifts (added to --shift): "
        + "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(SHIFT_SETS.items())),
    )
    what.add_argument(
        "--bag",
        action="append",
        default=[],
        metavar="DIR",
        help="offline evaluation: the policies' command error on these recorded rosbag2 bags (globs; "
        "repeatable) instead of simulated episodes; see docs/real_robot.md",
    )
    what.add_argument(
        "--world",
        default=None,
        help="world for an expert-only evaluation (default LiquidRover-v0); with policies it must be theirs",
    )
    what.add_argument(
        "--episodes",
        type=int,
        default=None,
        help=f"episodes per policy, shift and training seed (default {DEFAULT_EPISODES}; "
        f"{experiment.DEFAULT_EPISODES} for --experiment)",
    )
    what.add_argument(
        "--episode-seed-base",
        type=int,
        default=DEFAULT_EPISODE_SEED_BASE,
        help="episode i uses seed BASE+i for every policy (paired comparison)",
    )
    what.add_argument(
        "--paired",
        action="append",
        default=[],
        metavar="A,B",
        help="add a paired comparison of policies A and B (same seeds) with McNemar p-values",
    )
    how = parser.add_argument_group("how to run")
    how.add_argument("--out", default="reports/eval", type=user_path, help="report folder (results, report.md, plots)")
    how.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted evaluation in --out: run only the episodes it lacks",
    )
    how.add_argument(
        "--backend",
        choices=BACKENDS,
        default="process",
        help="process: local process pool (default); serial: this process; ray: a Ray cluster (with --experiment, "
        "the training runs too)",
    )
    how.add_argument(
        "--workers",
        type=int,
        default=None,
        help="process-pool size (default: the CPUs it may use, a container's CPU quota counted); with --backend ray "
        "the CPUs of the local Ray instance it starts (default: all; refused with a cluster's address)",
    )
    how.add_argument(
        "--lanes",
        type=int,
        default=DEFAULT_LANES,
        help="episodes of one policy and shift stepped in lockstep by a worker, one batched policy call per "
        "update (1: one episode at a time)",
    )
    how.add_argument(
        "--ray-address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray instance)"
    )
    how.add_argument(
        "--no-progress", action="store_true", help="no progress bar (a line at each tenth of the episodes instead)"
    )
    how.add_argument("--no-example", action="store_true", help="skip the example-episode figure")
    how.add_argument(
        "--no-saliency",
        action="store_true",
        help="skip the attention figures (saliency grid, animated episode, NCP neuron traces)",
    )
    from liquid_control.bags.stream import add_data_arguments

    add_data_arguments(parser)
    exp = parser.add_argument_group("the headline experiment (trains, then evaluates)")
    exp.add_argument(
        "--experiment",
        choices=sorted(experiment.EXPERIMENTS),
        default=None,
        help="run a whole experiment: train every architecture, then evaluate on its shifts",
    )
    exp.add_argument("--seeds", type=int, default=5, help="training seeds per architecture")
    exp.add_argument(
        "--recipes",
        choices=sorted(experiment.RECIPE_ARMS),
        default="both",
        help="train each architecture as configured (off), with the robustness recipes (on) or both",
    )
    exp.add_argument(
        "--schedule",
        choices=sorted(experiment.SCHEDULES),
        default="headline",
        help="training schedule: the reduced headline recipe, or each config's shipped one",
    )
    exp.add_argument(
        "--train-minutes",
        type=float,
        default=experiment.FULL_SCHEDULE_MINUTES,
        help=f"scale the schedule's episodes and epochs by MINUTES/{experiment.FULL_SCHEDULE_MINUTES:g} (up to 1)",
    )
    exp.add_argument(
        "--train-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="training override applied to every architecture (as `liquid-control train --set`), "
        "e.g. training.demonstrations=100; after the --train-minutes scaling",
    )
    exp.add_argument(
        "--archs",
        default=None,
        help="comma-separated architectures (default: all but mlp): " + ", ".join(experiment.ARCHITECTURES),
    )
    exp.add_argument("--no-expert", action="store_true", help="leave the expert reference row out")
    # what the mode-specific options default to: one given in another mode is refused, not ignored
    parser.set_defaults(
        option_defaults={
            dest: parser.get_default(dest) for dest in EXPERIMENT_OPTIONS + SIMULATED_OPTIONS + BAG_OPTIONS
        }
    )


EXPERIMENT_OPTIONS = ("seeds", "recipes", "schedule", "train_minutes", "train_set", "archs", "no_expert")
# what simulated episodes (a plan or --experiment) read, and what only --bag reads
SIMULATED_OPTIONS = (
    "experiment",
    "shift",
    "shift_set",
    "episodes",
    "episode_seed_base",
    "paired",
    "resume",
    "backend",
    "workers",
    "lanes",
    "ray_address",
    "no_saliency",
)
BAG_OPTIONS = (
    "node_params",
    "topics",
    "command_topic",
    "label",
    "label_offset_s",
    "label_max_wait_s",
    "allow_truncated",
)


def _workers_problem(args) -> str | None:
    """Why ``--workers`` cannot be honoured with this ``--backend`` (it was ignored without a word), else None."""
    if args.workers is None or args.bag:
        return None
    if args.backend == "serial" and args.workers > 1 and not args.experiment:  # --experiment: its training pool
        return (
            f"--workers {args.workers}: --backend serial runs every episode in this process, one at a time; "
            "leave --workers out, or use --backend process (the default) for a pool of workers"
        )
    cluster = args.ray_address or os.environ.get("RAY_ADDRESS")
    if args.backend == "ray" and cluster:
        return (
            f"--workers {args.workers}: with --backend ray it sizes only a local Ray instance this command starts; "
            f"the cluster at {cluster} runs one task per CPU it has: leave --workers out"
        )
    return None


def _given(args, options) -> str:
    """The options among ``options`` set to other than their defaults, as the command line spells them."""
    defaults = getattr(args, "option_defaults", {})
    return ", ".join("--" + k.replace("_", "-") for k in options if k in defaults and getattr(args, k) != defaults[k])


def _kept(args) -> str | None:
    """What a stopped evaluation keeps for ``--resume``: the results log (or the experiment's folder), or None."""
    from liquid_control.evaluation.results import LOG_NAME

    log = os.path.join(args.out, LOG_NAME)
    if args.experiment and not args.bag and os.path.isdir(args.out) and os.listdir(args.out):
        return f"{args.out} keeps the finished training runs and episodes; add --resume to continue"
    if os.path.isfile(log) and not args.bag:
        return f"the finished episodes are in {log}; add --resume to continue"
    return None


def _interrupted(args, exc: KeyboardInterrupt) -> int:
    """Ctrl-C's or SIGTERM's line: what finished is in the results log (or the experiment's folder); exit status
    130, or 143 for SIGTERM (:class:`Terminated`)."""
    kept = _kept(args) or "nothing kept"
    stopped = "terminated" if isinstance(exc, Terminated) else "interrupted"
    print(f"liquid-control eval: {stopped}: {kept}", file=sys.stderr)
    return 143 if isinstance(exc, Terminated) else 130


def run(args: argparse.Namespace) -> int:
    """Run the evaluation (offline on bags, an experiment, or a plan) and report; 2 for a refused request.

    A run that fails (or is stopped) removes the --out folder it made when nothing was written there (a full
    disk: the first file failed), so a rerun meets no empty folder of a run that never was."""
    made = first_missing_folder(args.out)
    code = None
    try:
        code = _run(args)
    finally:
        if code != 0:
            remove_made_folder(args.out, made)
    return code


def _run(args: argparse.Namespace) -> int:
    from liquid_control.evaluation import experiment
    from liquid_control.evaluation.evaluate import evaluate, option_arguments
    from liquid_control.evaluation.plan import build_plan

    command = getattr(args, "command_line", "")  # set by liquid_control.cli; "" for run(args) from Python
    try:
        # `kill` stops an evaluation as Ctrl-C does: its line, exit 143
        with sigterm_as_interrupt("liquid-control eval"):
            if args.workers is not None and args.workers < 1:
                raise EvaluationSetupError(f"--workers must be >= 1, got {args.workers}")
            workers = _workers_problem(args)
            if workers:
                raise EvaluationSetupError(workers)
            if args.world is not None and (args.bag or args.experiment):  # it would be ignored
                mode = "--bag evaluates recorded bags" if args.bag else "--experiment trains its architectures' world"
                raise EvaluationSetupError(f"--world {args.world}: {mode}; leave --world out")
            given = _given(args, EXPERIMENT_OPTIONS)
            if given and not args.experiment:
                raise EvaluationSetupError(f"{given}: only for --experiment (they would be ignored here)")
            given = _given(args, SIMULATED_OPTIONS) if args.bag else _given(args, BAG_OPTIONS)
            if given:
                only = "simulated episodes; --bag evaluates recorded bags" if args.bag else "--bag (recorded bags)"
                raise EvaluationSetupError(f"{given}: only for {only} (they would be ignored here)")
            if args.bag:
                from liquid_control.evaluation.offline import run_offline

                return run_offline(args, command)
            from liquid_control.evaluation.results import OFFLINE_NAME

            if os.path.exists(os.path.join(args.out, OFFLINE_NAME)):  # its report.md would be replaced
                raise EvaluationSetupError(f"--out {args.out}: holds an offline (--bag) report; choose another --out")
            if args.lanes < 1:
                raise EvaluationSetupError(f"--lanes must be >= 1, got {args.lanes}")
            if args.experiment:
                result = experiment.run_experiment(args, command=command)
            else:
                shifts = list(args.shift) + [s for name in args.shift_set for s in SHIFT_SETS[name]]
                plan = build_plan(
                    args.policy,
                    shifts or [DEFAULT_SHIFT],
                    DEFAULT_EPISODES if args.episodes is None else args.episodes,
                    episode_seed_base=args.episode_seed_base,
                    world=args.world,
                )
                paired = parse_pairs(args.paired, [p.name for p in plan.policies])
                if args.backend == "ray":  # before --out: plan.json was written, then Ray found missing
                    from liquid_control.evaluation.backends import import_ray

                    import_ray()
                validate_output_folder(args.out)  # after every other check: a refused request creates nothing
                result = evaluate(plan, args.out, paired=paired, **option_arguments(args, command))
    except EvaluationSetupError as exc:
        print(f"liquid-control eval: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: what finished is in the results log; no traceback
        return _interrupted(args, exc)
    except (RunFailedError, CheckpointChangedError, WorkerPoolError) as exc:  # what finished beside it is kept
        kept = _kept(args)
        print(f"liquid-control eval: error: {exc}" + (f"; {kept}" if kept else ""), file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the disk filled up or the folder became read-only during the run
        where = f" {exc.filename}" if exc.filename else f" in {args.out}"  # at least the folder
        kept = _kept(args)  # a full disk: room made, the run continues where it stopped
        kept = f"; {kept.replace('add --resume', 'make room and add --resume')}" if kept else ""
        print(f"liquid-control eval: error: cannot write{where}: {exc.strerror or exc}{kept}", file=sys.stderr)
        return 1
    except Exception as exc:  # Ctrl-C inside MuJoCo's render (--backend serial): a ctypes error standing for it
        interrupt = interrupt_in_ctypes(exc)
        if interrupt is None:
            raise
        return _interrupted(args, interrupt)
    print(f"liquid-control eval: {counted(len(result['records']), 'episode')} -> {result['report']}")
    return 0
