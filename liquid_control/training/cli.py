"""`liquid-control train`: expert demonstrations, DAgger rounds and behaviour cloning for one policy config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from liquid_control.paths import output_folder_problem, resolve_config_file, user_path
from liquid_control.processes import Terminated, keep_freed_memory, sigterm_as_interrupt

EPILOG = """\
examples:
  liquid-control train --config policies/configs/cfc_ncp_rover.yaml --out runs/cfc_ncp_rover
  liquid-control train --out runs/cfc_ncp_rover --resume          # continue a killed run
  liquid-control train --config policies/configs/lstm_rover.yaml --out runs/lstm_s1 --seed 1 \\
      --set training.dagger_rounds=2 --set training.eval_episodes=20
  liquid-control train --config policies/configs/cfc_ncp_rover.yaml --out runs/from_bags \\
      --bag recordings/day1/* --val-bag recordings/heldout --node-params config/rover_policy.yaml

The output folder gets config.yaml, data/ (one .npz per episode, images uint8, real stamps and dt),
checkpoint.pt (after every epoch), metrics.csv, curves.png and policy.pt (the selected policy). See docs/training.md.
With --bag (or a data: section in the config) the data are recorded rosbag2 bags instead of simulated
episodes: behaviour cloning on the recorded commands, selected on --val-bag. See docs/real_robot.md.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``liquid-control train``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "--config",
        type=user_path,
        help="policy YAML (e.g. policies/configs/cfc_ncp_rover.yaml); optional with "
        "--resume, which then reuses the run's config.yaml",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=user_path,
        help="output folder of the run: new or empty (a folder holding other files is refused), or with --resume "
        "the folder of a run",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="training seed, 0..79 (0..2**64-1 with --bag): weights, data episodes, shuffling (default 0)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last finished epoch and its saved episodes (a new or empty --out: "
        "start it; a folder that holds no run is refused)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value by dotted key, value in YAML syntax, e.g. "
        "training.epochs_first=5, core.units=24 or data.window=256 (repeatable)",
    )
    parser.add_argument(
        "--augment",
        action="store_true",
        help="shorthand for --set training.augmentation=[brightness,contrast,gamma,colour,noise,blur] (the "
        "photometric recipe; off by default so OOD comparisons measure the architecture)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="cores for behaviour cloning (default 1: polite on a shared machine; with --resume the run's own); "
        "N > 1 trains N data-parallel copies of the policy, one thread each (the same policy up to float rounding)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes that run the episodes (collection and model selection) in parallel; the episodes and the "
        "trained policy are the same for any number (default 1; on an otherwise idle machine: its cores)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (log lines only: a line per epoch)"
    )
    parser.add_argument(
        "--init-from",
        metavar="POLICY",
        type=user_path,
        help="start from the weights of this trained policy (.pt) of the same network instead of random ones: "
        "fine-tune the deployed policy on the next round's bags (DAgger's rounds continue training)",
    )
    from liquid_control.bags.stream import add_data_arguments

    parser.add_argument(
        "--bag",
        action="append",
        default=[],
        metavar="DIR",
        help="train from this rosbag2 recording (folder or glob; repeatable) instead of the simulator",
    )
    parser.add_argument(
        "--val-bag", action="append", default=[], metavar="DIR", help="held-out recording for model selection"
    )
    add_data_arguments(parser)


def parse_overrides(items) -> dict:
    """``--set KEY=VALUE`` items as {dotted key: YAML-parsed value}; ValueError for a malformed item."""
    from liquid_control.policy.config import repeated_key, yaml_problem
    from liquid_control.shown import shown
    from liquid_control.yaml_numbers import load_yaml

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {shown(item, 1000)}")
        try:
            overrides.pop(key.strip(), None)  # a key given again goes where it was given last: applied in that order
            overrides[key.strip()] = load_yaml(value)
            repeated = repeated_key(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {shown(item, 1000)}: the value is not valid YAML: {yaml_problem(exc)}") from None
        if repeated:
            raise ValueError(f"--set {shown(item, 1000)}: {repeated.split(' (')[0]}: key given twice; keep one")
    return overrides


def _kept(out: Path) -> str | None:
    """What a stopped or failed run keeps in ``out`` for --resume (None: nothing): its finished epochs and the
    episodes it collected, or for a run on bags (its data.yaml) the bags it converted."""
    from .run_folder import holds_run

    if not holds_run(out):
        return None
    data = "converted bags" if (out / "data.yaml").is_file() else "episodes"
    if not (out / "checkpoint.pt").is_file():  # stopped before its first epoch was saved
        return f"{out} keeps the {data}"
    return f"{out} keeps the finished epochs and {data}"


def _check_new_run_config(config: str, out: str, overrides: dict) -> None:
    """A new simulated run's config file and ``--set`` values, checked as ``train`` checks them first (the same calls,
    the same order), before the trainer's import loads torch and the worlds (3 s): a mistyped key is refused at once.
    Where ``train`` says something else first (a folder another process holds, a config's ``data:`` section), it is
    left to ``train``, which checks them all again."""
    from liquid_control import folder_lock
    from liquid_control.policy.config import apply_overrides, load_config, read_config_yaml

    if folder_lock.in_use_elsewhere(out):  # train refuses naming the process that holds it
        return
    raw = read_config_yaml(config)
    if isinstance(raw, dict) and "data" in raw:  # a run on bags: train checks its data section first
        return
    cfg = load_config(config)
    if overrides:
        apply_overrides(cfg, overrides)


def _checked_request(args) -> tuple[dict, dict]:
    """The command line's ``--set`` overrides and data options, checked (ValueError, PolicyConfigError, BagError)
    without torch; ``args.config`` becomes the config file it names."""
    from liquid_control.bags.stream import data_overrides

    data = data_overrides(args)
    if args.bag:
        data["bags"] = list(args.bag)
    if args.val_bag:
        data["validation"] = list(args.val_bag)
    overrides = parse_overrides(args.overrides)
    if args.augment:
        from .augment import PHOTOMETRIC

        section = overrides.get("training")
        given = "training.augmentation" in overrides or (isinstance(section, dict) and "augmentation" in section)
        if given:  # --augment replaced the list without a word
            raise ValueError(
                f"--augment and --set training.augmentation=...: give one (--augment is "
                f"training.augmentation=[{', '.join(PHOTOMETRIC)}]; list those with yours in --set)"
            )
        overrides["training.augmentation"] = list(PHOTOMETRIC)
    if args.config is None and not args.resume:
        raise ValueError("--config is required (except with --resume)")
    if args.config is not None:  # a shipped config by the docs' name (policies/configs/...), also when installed
        try:
            args.config = str(resolve_config_file(args.config))
        except FileNotFoundError as exc:
            raise ValueError(f"--config: {exc}") from None
    problem = output_folder_problem(args.out)
    if problem:
        raise ValueError(f"--out {args.out}: {problem}")
    on_bags = data or any(key == "data" or key.startswith("data.") for key in overrides)  # as bag_data splits them
    if args.config is not None and not args.resume and not on_bags:
        _check_new_run_config(args.config, args.out, overrides)
    return overrides, data


def _answer(args, exc: BaseException, refused: tuple) -> int:
    """The exit code of a run that ``exc`` ended, and its line on stderr: a request refused (an exception of
    ``refused``: 2), Ctrl-C or SIGTERM (130, 143), a failed write (an OSError: 1)."""
    if isinstance(exc, refused):
        said = str(exc)
        if args.augment and said.startswith("training.augmentation: "):  # the list --augment set, not the file's
            said = f"--augment (training.augmentation): {said.removeprefix('training.augmentation: ')}"
            said = said.replace("; leave it []", "; leave --augment out")
        print(f"liquid-control train: error: {said}", file=sys.stderr)
        return 2
    if isinstance(exc, KeyboardInterrupt):  # Ctrl-C or SIGTERM: finished epochs and episodes are on disk; no traceback
        kept = _kept(Path(args.out))
        kept = (
            f"{kept}; add --resume to continue" if kept else "nothing was collected or trained yet, and nothing is kept"
        )
        stopped = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"liquid-control train: {stopped}: {kept}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    # an OSError: the disk filled up, or the folder is read-only: every write is atomic, nothing is torn
    where = exc.filename or args.out
    kept = _kept(Path(args.out))
    kept = f"{kept}; make room and add --resume to continue" if kept else "nothing was collected or trained yet"
    print(f"liquid-control train: error: cannot write {where}: {exc.strerror or exc}; {kept}", file=sys.stderr)
    return 1


def run(args) -> int:
    """Train one policy from the parsed options; exit code 2 with the reason for a refused request."""
    from liquid_control.bags import BagError
    from liquid_control.policy import PolicyConfigError

    keep_freed_memory()
    refused = (PolicyConfigError, BagError, ValueError)
    try:  # the checks that need neither torch nor the worlds
        overrides, data = _checked_request(args)
    except (*refused, KeyboardInterrupt, OSError) as exc:
        return _answer(args, exc, refused)
    from .trainer import TrainingError, train  # torch and the worlds (3 s): after the checks above

    refused += (TrainingError,)
    try:
        command = getattr(args, "command_line", None)  # set by liquid_control.cli; None for run(args) from Python
        with sigterm_as_interrupt("liquid-control train"):
            result = train(
                args.config,
                args.out,
                seed=args.seed,
                resume=args.resume,
                overrides=overrides or None,
                progress=not args.no_progress,
                threads=args.threads,
                workers=args.workers,
                command=command,
                data=data or None,
                init_from=args.init_from,
            )
    except (*refused, KeyboardInterrupt, OSError) as exc:
        return _answer(args, exc, refused)
    success = "not measured" if result.success is None else f"{result.success:.0%}"
    if result.success is None and (data or (Path(args.out) / "data.yaml").is_file()):  # --bag or a data: section
        success = "not measured: trained from bags"
    print(f"{result.policy_path}  (selection success {success}, {result.epochs} epochs, {result.wall_s:.0f} s)")
    return 0
