"""Starting and resuming a training run (``train``, what ``liquid-control train`` calls).

Every check comes before anything is written: the config and its overrides, the seed's episode seeds, the output
folder (new, empty, or a run to continue with ``resume``), a warm start (``init_from``), the thread count a resumed
run trained with. Then a :class:`.run.TrainingRun` (episodes in the simulator) or a :class:`.bag_data.BagRun`
(recorded bags) does the work; a start that fails before collecting, converting or training anything leaves no
half-made run behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
from pathlib import Path

import torch
import yaml

from liquid_control import folder_lock
from liquid_control.atomic_file import atomic_write
from liquid_control.conventions import training_record
from liquid_control.json_text import load_json
from liquid_control.paths import (
    first_missing_folder,
    output_folder_problem,
    remove_made_folder,
    resolve_config_file,
    shipped_policy_for,
)
from liquid_control.policy import (
    Policy,
    PolicyConfigError,
    apply_overrides,
    load_config,
    validate_config,
)
from liquid_control.policy.config import (
    BAG_RUN_CONFIG_NOTE,
    refusal_source,
    validate_recorded_config,
    without_simulated_settings,
)
from liquid_control.processes import available_cpus, interrupt_in_ctypes, more_workers_than_cpus
from liquid_control.yaml_numbers import load_yaml

from . import bag_data
from .augment import EpisodeSun
from .bc import has_dropout
from .episodes import (
    MAX_DAGGER_ROUNDS,
    MAX_ROUND_EPISODES,
    MAX_TRAIN_SEED,
    SELECTION_SEED_BASE,
    episode_seed,
    make_env,
    world_class,
)
from .run import TrainingError, TrainingRun, TrainResult, differing_keys, read_training_checkpoint
from .run_folder import COMMAND_FILE, START_FILE, holds_run

NETWORK_SECTIONS = ("world", "observation", "encoder", "core", "action")  # what a warm start shares (init_from)


def warm_start(path: Path, cfg: dict) -> tuple[dict, dict, dict]:
    """The weights a run starts from (``init_from``), their record {path, sha256} and the policy's metadata;
    TrainingError naming the file for a file that is no policy, or a policy of another network than ``cfg``'s."""
    from liquid_control.policy.checkpoint import PolicyLoadError
    from liquid_control.runtime.backends import CheckpointReplacedError, load_hashed_policy

    try:  # the SHA-256 of the bytes loaded: a file a training run replaced meanwhile is refused, not misrecorded
        source, sha256 = load_hashed_policy(path)
    except PolicyLoadError as exc:
        raise TrainingError(f"--init-from {exc}") from None
    except CheckpointReplacedError as exc:
        raise TrainingError(f"--init-from {path}: {exc}; start again once it is written") from None
    differing = differing_keys(*({k: c.get(k) for k in NETWORK_SECTIONS} for c in (source.config, cfg)))
    if differing:
        # with the values: a policy written before a key existed (core.max_step, 2026-12-01) holds its default
        theirs = {key: _at(source.config, key) for key in differing if key != "..."}
        values = [f"{key} = {theirs[key]} in the policy, {_at(cfg, key)} in the config" for key in theirs]
        sets = " ".join(f"--set {shlex.quote(f'{key}={value}')}" for key, value in theirs.items())  # a shell's words
        keep = "" if "..." in differing or "absent" in theirs.values() else f", or to fine-tune it as it is: {sets}"
        raise TrainingError(
            f"--init-from {path}: a policy of another network (keys that differ from the config: "
            f"{'; '.join(values)}{'; ...' if '...' in differing else ''}); start from a policy with the same world, "
            f"observation, encoder, core and action{keep}"
        )
    # absolute: a path relative to the working directory of the run's start says nothing read elsewhere
    return source.state_dict(), {"path": str(path.absolute()), "sha256": sha256}, source.metadata


def start_scale_note(start: tuple, spec, cfg: dict, data: dict) -> str | None:
    """Where the policy a bag run starts from (``warm_start``) records another ``action_scale`` than the run's
    parameter file gives (``spec``): a warning, the fine-tuning's labels in other units than its outputs; else None.
    Warned, not refused: fine-tuning a policy for a robot of other limits is a choice; by mistake it is another file."""
    found = training_record.trained_scale_ratios(start[2], spec.action_scale)
    if found is None:
        return None
    trained, ratios = found
    return (
        f"warning: --init-from {start[1]['path']} was trained with action_scale {[round(v, 6) for v in trained]}, this "
        f"run divides its labels by {[round(float(v), 6) for v in spec.action_scale]} (--node-params: "
        f"{bag_data.node_params_source(cfg, data)}): the outputs of the policy it starts from, read with this "
        f"run's, command {', '.join(f'{r:.3g}x' for r in ratios)} what it learnt to command, which fine-tuning must "
        "undo; to fine-tune it for the robot it learnt on, give the --node-params it trained with"
    )


def yaw_field_of_view_note(cfg: dict) -> str | None:
    """A warning where ``training.yaw_recovery.hfov_deg`` is not the horizontal field of view of the config's
    simulated camera at its image's aspect (the rover's 100 degrees holds for a square image only): 'yaw' would turn
    the frames as seen through another lens. None where it is, or where that camera is unknown (no world)."""
    from liquid_control.conventions.camera_info import trained_field_of_view_deg, world_camera_fovy_deg

    t, image = cfg["training"], cfg["observation"].get("image")
    if "yaw" not in t["augmentation"] or not image or not t["yaw_recovery"] or cfg["world"] is None:
        return None
    fovy = world_camera_fovy_deg(cfg["world"])
    if fovy is None:
        return None
    wide, _ = trained_field_of_view_deg(image["height"], image["width"], fovy)
    given = float(t["yaw_recovery"]["hfov_deg"])
    if abs(given - wide) <= 0.5:
        return None
    return (
        f"warning: training.yaw_recovery.hfov_deg is {given:g}, but {cfg['world']}'s camera at "
        f"{image['width']}x{image['height']} (width x height) sees {wide:.1f} degrees wide ({fovy:g} vertically): "
        f"'yaw' would turn the frames as through another lens; set hfov_deg: {wide:.1f} (the recorded bags' own "
        "camera where they come from a robot)"
    )


def camera_blind_strip_note(cfg: dict) -> str | None:
    """A warning where the camera encoder's unpadded convolutions never see the last rows or columns of the frame
    (``policy.config.unseen_margins``): the policy is blind there, and lopsided (a target at the right edge is
    invisible, one at the left is not). None where every pixel reaches the features."""
    from liquid_control.policy.config import unseen_margins

    image, camera = cfg["observation"].get("image"), (cfg.get("encoder") or {}).get("camera")
    if not image or not camera:
        return None
    height, width = image["height"], image["width"]
    kernels, strides = list(camera["kernel_sizes"]), list(camera["strides"])
    rows, cols = unseen_margins(height, width, kernels, strides)
    gaps = any(k < s for k, s in zip(kernels, strides))  # windows that skip pixels between them
    if not rows and not cols and not gaps:
        return None
    rule = (
        "choose sizes where each kernel is at least its stride and (input - kernel) is a multiple of the stride at "
        "every layer (docs/training.md, the camera encoder; on the rover, seeing every pixel lowered success under "
        "winter, dusk, night and autumn: docs/full_view/)"
    )
    where = f"its convolutions (kernel_sizes {kernels}, strides {strides})"
    normalized = camera.get("normalize", "none") != "none"
    through = " (with encoder.camera.normalize, only through the frame's statistics)" if normalized else ""
    if not rows and not cols:
        return f"warning: encoder.camera: {where} skip pixels between their windows (a kernel below its stride): {rule}"
    share = 1 - (height - rows) * (width - cols) / (height * width)
    return (
        f"warning: encoder.camera: {where} never see the last {rows} rows and {cols} columns of the {width}x{height} "
        f"frame ({share:.0%} of its pixels, at its bottom and right edges){through}: {rule}"
    )


def _at(config: dict, key: str) -> str:
    """The value of the dotted ``key`` in ``config`` as --set takes it (JSON is YAML), or 'absent'."""
    value = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return "absent"
        value = value[part]
    return json.dumps(value)


def shipped_by_docs_name(config, init_from, log) -> tuple:
    """``config`` and ``init_from`` as given, or, where the working directory has no such file, the shipped files
    the docs' names give (``policies/configs/cfc_ncp_rover.yaml``, ``policies/cfc_ncp_rover.pt``), as eval and
    export take them from any folder (and an installed package); a policy taken so is logged, a file of the
    working directory wins. PolicyConfigError naming where it looked for a config that is nowhere."""
    if isinstance(config, (str, Path)):
        try:
            config = resolve_config_file(str(config))
        except FileNotFoundError as exc:
            raise PolicyConfigError(str(exc)) from None
    shipped = None if init_from is None else shipped_policy_for(str(init_from))
    if shipped is not None:
        log(f"init_from {init_from} is not in {os.getcwd()}: the shipped {shipped}")
        init_from = shipped
    return config, init_from


def recorded_start(out: Path, checkpoint: dict | None) -> dict | None:
    """What a run in ``out`` started from ({path, sha256}, None: random weights): its checkpoint's record, or
    before its first checkpoint the one written at its start."""
    if checkpoint is not None:
        return checkpoint.get("started_from")
    path = out / START_FILE
    if not path.is_file():
        return None
    try:
        record = load_json(path.read_text())
        if not (isinstance(record, dict) and isinstance(record.get("path"), str) and "sha256" in record):
            raise ValueError("not a {path, sha256} object")
    except ValueError as exc:
        raise TrainingError(f"{path}: not a readable record of the run's start ({exc}); restore it") from None
    return record


def check_same_start(recorded: dict | None, init_from: Path, out: Path) -> None:
    """A resumed run keeps its start: refused where ``--init-from`` names another than the one it started from."""
    from liquid_control.runtime.backends import checkpoint_sha256

    if recorded is None:
        raise TrainingError(f"--init-from {init_from}: the run in {out} started from random weights; resume it without")
    if not init_from.is_file():
        raise TrainingError(f"--init-from {init_from}: policy file not found")
    if checkpoint_sha256(init_from) != recorded["sha256"]:
        raise TrainingError(
            f"--init-from {init_from}: the run in {out} started from {recorded['path']} (SHA-256 "
            f"{recorded['sha256'][:12]}), not this file; resume it with that one or without --init-from"
        )


WORKING_DIRECTORY_LINE = "# working directory "  # command.txt's line before the seed's: where the command ran


def recorded_command(out: Path, seed: int) -> tuple[str | None, str | None]:
    """The first command of the run in ``out`` and the working directory it ran in (its ``command.txt``, for a resume
    before its first checkpoint holds them; None: not recorded); TrainingError where it records another seed than
    ``seed``: the episodes on disk record theirs, but a run killed before its first one had nothing else to say which
    seed its command trained."""
    path = out / COMMAND_FILE
    if not path.is_file():
        return None, None
    # a quoted --set value may hold a newline: the seed's line is the last, the working directory's before it
    lines = path.read_text(encoding="utf-8").strip().split("\n")
    recorded = lines.pop().split()[-1] if len(lines) > 1 and lines[-1].startswith("# seed ") else None
    if recorded is not None and recorded != str(seed):
        raise TrainingError(
            f"{path}: the run in {out} was started with seed (--seed) {recorded}, this resume gives {seed}; resume "
            "with that seed, or train into a new folder"
        )
    folder = lines.pop().removeprefix(WORKING_DIRECTORY_LINE) if lines[-1].startswith(WORKING_DIRECTORY_LINE) else None
    return "\n".join(lines).strip() or None, folder


# What a run writes before it has collected, converted or trained anything: a folder holding only these (and
# no checkpoint.pt, no file under data/) holds no run, so a failed start never blocks the next one.
STARTED_ENTRIES = ("config.yaml", "data.yaml", "data", "tensorboard", START_FILE, COMMAND_FILE)


def _listing(out: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def check_out_dir(out: Path, resume: bool, cfg: dict, as_run=None) -> bool:
    """Refuse an output folder the run would overwrite or misread; True when it holds a run to continue.

    Without ``resume`` the folder must be new, empty, or what a start that trained nothing left (its config.yaml,
    if any, this config, read as the run reads its own: ``as_run``, see ``check_saved_config``); with ``resume`` a
    new or empty folder starts the run, and a folder must otherwise hold one (checkpoint.pt, data/ or config.yaml):
    files of something else are never taken for a run."""
    problem = output_folder_problem(out)
    if problem:
        raise TrainingError(f"{out}: {problem}")
    if not out.is_dir() or not any(out.iterdir()):
        return False
    run = holds_run(out)
    if not resume and run:
        raise TrainingError(
            f"{out} already holds a training run: pass --resume to continue it (train(resume=True) from Python), "
            f"or choose another output folder"
        )
    if resume and (run or (out / "config.yaml").is_file()):
        return True
    leftovers = all(p.name in STARTED_ENTRIES for p in out.iterdir())
    saved, other = out / "config.yaml", ""
    if leftovers and saved.is_file():  # not resume: a start that trained nothing, of this config or another?
        try:
            previous = validate_config(load_yaml(saved.read_text()))
            leftovers = (previous if as_run is None else as_run(previous)) == cfg
        except Exception:
            leftovers = False
        other = "" if leftovers else "; its config.yaml is not this config"
    if leftovers:
        return False
    if resume:
        raise TrainingError(
            f"{out}: holds no training run to resume (no checkpoint.pt, config.yaml or data/; it holds "
            f"{_listing(out)}); pass the folder of a run, or a new or empty folder to start one"
        )
    raise TrainingError(
        f"{out}: not empty and not a training run (it holds {_listing(out)}{other}); the output folder must be new "
        f"or empty (or a run, with resume)"
    )


def check_saved_config(saved: Path, cfg: dict, as_run=None) -> None:
    """Refuse to continue a run whose config.yaml (``saved``) is not ``cfg``; ``as_run``: how the run reads a config
    it recorded (a run from bags: ``bag_data.bag_run_config``, which also reads an older version's config.yaml, with
    the settings of simulated episodes it recorded, as the run's)."""
    try:
        previous = validate_recorded_config(load_yaml(saved.read_text()))  # load_yaml: a YAML bomb refused
        previous = previous if as_run is None else as_run(previous)
    except Exception as exc:
        raise TrainingError(f"{saved}: not a readable config ({exc}); restore it or delete it") from None
    if previous != cfg:
        raise TrainingError(
            f"{saved}: the run was started with another config (keys that differ: "
            f"{', '.join(differing_keys(previous, cfg))}); resume with the same one"
        )


def _undo_start(out: Path, created: Path | None, before: set) -> None:
    """Remove what a start that failed before collecting, converting or training anything wrote into ``out``."""
    import shutil

    if holds_run(out):
        return
    if created is not None:  # this start made ``out`` (and maybe parents): remove it, then those parents while empty
        shutil.rmtree(out, ignore_errors=True)
        remove_made_folder(out, created)  # rmdir only: a sibling run (the headline's seeds, in parallel) may live there
        return
    for path in list(out.iterdir()) if out.is_dir() else []:
        if path.name not in before:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def check_episode_seeds(cfg: dict, seed, simulated: bool) -> None:
    """Refuse a seed or schedule whose episode seeds (``episodes.episode_seed``) would overlap another round's, another
    run's, the selection episodes' or the evaluation's: the same worlds would be trained on twice, or evaluated on."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TrainingError(f"seed (--seed) must be an integer >= 0, got {seed!r}")
    if not simulated:  # a bag run's seed draws weights and batches only (torch.manual_seed takes [0, 2**64))
        if seed >= 2**64:
            raise TrainingError(f"seed (--seed) must be below 2**64 for a run on bags, got {seed}")
        return
    if seed > MAX_TRAIN_SEED:
        raise TrainingError(
            f"seed (--seed) must be 0..{MAX_TRAIN_SEED}, got {seed}: the episode seeds of seed {seed} "
            f"({episode_seed(seed, 0, 0):,} up) reach the selection episodes' ({SELECTION_SEED_BASE:,} up) or the "
            "evaluation's (20,000,000 up)"
        )
    t = cfg["training"]
    for key, value, bound in (
        ("demonstrations", t["demonstrations"], MAX_ROUND_EPISODES),
        ("dagger_episodes", t["dagger_episodes"], MAX_ROUND_EPISODES),
        ("dagger_rounds", t["dagger_rounds"], MAX_DAGGER_ROUNDS),
    ):
        if value > bound:
            raise PolicyConfigError(
                f"training.{key}: must be <= {bound}, got {value} (the episode seeds of a run keep "
                f"{MAX_ROUND_EPISODES} per round and {MAX_DAGGER_ROUNDS} DAgger rounds apart)"
            )


def check_world_settings(cfg: dict, data: dict | None) -> None:
    """Refuse what a validated config asks of its world that the world cannot give, before anything is written
    (PolicyConfigError or TrainingError naming the key): inputs it lacks, a shift it does not have, input and action
    sizes, a sun to move, sensor timings to vary; ``data`` (a run from bags): the settings bags cannot honour. A run
    from bags of a config without a world (``world: null``: a robot without a simulator) has no world to check."""
    if cfg["world"] is None and data is None:
        raise PolicyConfigError(
            "world: null (no simulated world) trains from recorded bags alone: give --bag (or a data: section), or "
            "name the world to train in"
        )
    world = None if cfg["world"] is None else world_class(cfg)
    shift = cfg["training"]["shift"]
    if shift and data is None:  # checked here, named: the world would refuse it unnamed, later
        from sim_envs.shifts import shift_for_world

        try:  # a world that declares no sensors (another gymnasium env) gets the parse check only
            shift_for_world(shift, cfg["world"], getattr(world, "sensor_names", None) or None)
        except ValueError as exc:
            raise PolicyConfigError(f"training.shift: {exc}") from None
    sun = cfg["training"]["sun_elevation_range"] is not None
    if sun and data is not None:
        raise TrainingError(
            "training.sun_elevation_range: a run from bags renders nothing (its frames are recorded); leave it null"
        )
    if data is not None:  # what only a simulated episode does, asked with --set: refused, not ignored
        for key, does in bag_data.SIMULATED_ONLY.items():  # (a config file's are off: bag_data.bag_run_config)
            if cfg["training"][key]:
                raise TrainingError(
                    f"training.{key}: {does}; a run from bags simulates no episode (its data are recorded): leave it "
                    f"{'0' if key == 'action_noise' else 'null'}"
                )
    if data is None:  # input and action sizes the world does not have: refused now, not after the demonstrations
        env = make_env(cfg)
        try:
            if sun:
                EpisodeSun.light_id(env.unwrapped)
        except ValueError as exc:
            raise TrainingError(f"{exc} (world {cfg['world']!r})") from None
        finally:
            env.close()
    timing = [k for k in ("sensor_rate_range", "jitter_range") if cfg["training"][k] is not None]
    if timing and data is None and not getattr(world, "sensor_names", ()):  # the key first: refusal_source reads it
        raise TrainingError(f"training.{timing[0]}: world {cfg['world']!r} has no sensor timings to vary")


def _run_config(
    config: str | Path | dict, overrides: dict | None, data: dict | None, strict: bool, recorded: bool = False
) -> dict:
    """The run's validated config: the file or dict, then the overrides (``strict``: see ``validate_config``;
    ``recorded``: the run's own, read as ``validate_recorded_config`` reads it)."""
    if isinstance(config, (str, Path)):
        cfg = load_config(config, strict, recorded)
    else:
        cfg = (validate_recorded_config if recorded else validate_config)(config, strict)
    if overrides:
        cfg = apply_overrides(cfg, overrides, strict)
    return cfg if data is None else bag_data.bag_run_config(cfg, explicit=overrides or {})


def _settings(config, overrides: dict | None, data: dict | None, out: Path, resume: bool):
    """The run's settings as ``train`` reads them: ``(config, overrides, data, cfg, own_config)``: the config given
    (None with ``resume``: the run's own, its config.yaml, else its checkpoint's), the overrides without the data
    section's, the bag data settings (None: a simulated run) and the validated config of the run."""
    overrides, data_sets = bag_data.split_overrides(overrides)  # --set data.window=...: the data section's
    config, data = bag_data.resolve(config, data, out, data_sets, resume)
    saved, checkpoint = out / "config.yaml", out / "checkpoint.pt"
    own_config = config is None  # the run's own config (config.yaml, else its checkpoint's)
    if config is None:
        if saved.is_file():
            config = saved
        elif checkpoint.is_file():  # config.yaml lost: the checkpoint holds the run's config
            config = read_training_checkpoint(checkpoint)["config"]
        else:
            raise TrainingError(f"no config given and no {saved} to resume from")
    # A run being resumed may have started before a check of settings without effect existed (load_policy's
    # reason for strict=False): it continues as it began; the comparison with its own (_check_same_run) still holds.
    return config, overrides, data, _run_config(config, overrides, data, not resume, own_config), own_config


def _check_same_run(out: Path, cfg: dict, seed: int, as_run) -> tuple[dict | None, str | None, str | None]:
    """Refuse to continue the run in ``out`` with another config or seed than its own (its config.yaml, its
    checkpoint's, else its command.txt's seed); returns its checkpoint (None: none yet) and, without one, its first
    command and that command's working directory (``recorded_command``)."""
    saved, checkpoint = out / "config.yaml", out / "checkpoint.pt"
    if saved.is_file():
        check_saved_config(saved, cfg, as_run)
    ck = read_training_checkpoint(checkpoint, cfg, seed, as_run) if checkpoint.exists() else None
    return (ck, None, None) if ck is not None else (None, *recorded_command(out, seed))


def check_resume(config: str | Path | dict, out_dir: str | Path, overrides: dict | None = None, seed: int = 0) -> None:
    """Refuse (TrainingError, PolicyConfigError) a resume of the run in ``out_dir`` with another config, overrides or
    seed than its own, as ``train(config, out_dir, resume=True, overrides=..., seed=...)`` refuses it (the same
    comparison), without training: reads, writes nothing, sets no torch threads. For a caller that starts many
    runs at once (the experiment's ``train_all``): a refusal found by one run's ``train`` came after the others had
    started with the other options."""
    out = Path(out_dir)
    folder_lock.check_free(out, "train into another --out", TrainingError)
    config, _ = shipped_by_docs_name(config, None, _log)  # as train() takes it
    _, _, data, cfg, _ = _settings(config, overrides, None, out, resume=True)
    as_run = None if data is None else bag_data.bag_run_config
    if check_out_dir(out, True, cfg, as_run):
        _check_same_run(out, cfg, seed, as_run)


def config_text(cfg: dict, from_bags: bool) -> str:
    """A run's config.yaml: the complete config; a run from bags' without the settings that did not apply to it,
    under a line that says so."""
    if not from_bags:
        return yaml.safe_dump(cfg, sort_keys=False)
    return BAG_RUN_CONFIG_NOTE + yaml.safe_dump(without_simulated_settings(cfg), sort_keys=False)


def _log(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def threads_of_command(command) -> int | None:
    """The ``--threads`` of a recorded ``liquid-control train`` command line: its value, or 1 without it (the
    option's default since training began); None for no command (a run through the Python API) or another one.
    A checkpoint of before the count was recorded, resumed with ``--threads 2``, mixed the counts without a word
    (its first epochs ran on one) and then recorded 2 for the whole run, refusing the true count."""
    try:
        words = shlex.split(command) if isinstance(command, str) else []
    except ValueError:
        return None
    if len(words) < 2 or words[1] != "train" or not words[0].endswith("liquid-control"):
        return None
    for i, word in enumerate(words[2:], 2):
        name, equals, value = word.partition("=")
        if len(name) >= 4 and "--threads".startswith(name):  # argparse takes --th, --thr, ... too
            value = value if equals else (words[i + 1] if i + 1 < len(words) else "")
            return int(value) if value.isdigit() and int(value) >= 1 else None
    return 1


def train(
    config: str | Path | dict | None,
    out_dir: str | Path,
    *,
    seed: int = 0,
    resume: bool = False,
    overrides: dict | None = None,
    progress: bool = True,
    threads: int | None = None,
    workers: int = 1,
    command: str | None = None,
    log=_log,
    data: dict | None = None,
    init_from: str | Path | None = None,
    epoch_lines: bool | None = None,
) -> TrainResult:
    """Train the policy described by ``config`` (YAML path or dict) into ``out_dir``; returns the result.

    ``resume=True`` continues the run in ``out_dir`` (config may then be None: the run's own config.yaml is
    used). ``overrides`` are dotted keys, e.g. ``{"training.dagger_rounds": 2}``; ``data.*`` ones set the bag data
    (``data.window``), validated as the ``data:`` section. ``threads`` sets torch's
    intra-op threads (1: deterministic and polite on a shared CPU; None: 1, or a resumed run's own, which its
    checkpoint records: another count trains another policy, so it is refused); ``threads`` > 1
    instead trains on that many data-parallel copies of the policy, one thread each (:class:`.bc.DataParallel`:
    a little faster than intra-op threads here; the same policy up to float rounding), unless the
    policy has dropout (then intra-op threads). ``workers``
    > 1 runs the episodes (collection and model selection) in that many processes: the same episodes (every
    episode runs on one torch thread, here or there) and the same policy, sooner (:mod:`.episodes`).
    ``data`` (or a ``data:`` section in the config) trains from recorded bags instead (training.bag_data).
    ``init_from``: a trained policy of the same network whose weights the run starts from (a resumed run's
    checkpoint already holds them: it must then be the file the run started from).
    ``epoch_lines``: a line through ``log`` per finished epoch (epoch, loss, a bag run's validation loss, seconds;
    None: where ``progress`` is off, so a log of a long run says how far it is; metrics.csv holds every epoch).
    """
    out = Path(out_dir)
    # a folder another train (or eval) is writing in: refused naming that process, before its files (config.yaml,
    # data.yaml, checkpoint.pt, maybe half written) are read, and not by what it wrote so far
    folder_lock.check_free(out, "train into another --out", TrainingError)
    config, init_from = shipped_by_docs_name(config, init_from, log)
    if config is None and not resume:  # first: a bag run's folder without its data.yaml is refused for this too
        raise TrainingError("no config given (a config is optional only with resume)")
    config, overrides, data, cfg, own_config = _settings(config, overrides, data, out, resume)
    saved, checkpoint = out / "config.yaml", out / "checkpoint.pt"
    strict = not resume
    try:  # what the config asks of its world (and the episode seeds of its schedule), before anything is written
        check_world_settings(cfg, data)
        check_episode_seeds(cfg, 0, simulated=data is None)  # the schedule's bounds alone: the file's to answer for
    except (PolicyConfigError, TrainingError) as exc:  # named with the file, as load_config names its own
        in_file = config if isinstance(config, (str, Path)) else None
        raise type(exc)(refusal_source(str(exc), in_file, overrides)) from None
    check_episode_seeds(cfg, seed, simulated=data is None)  # with --seed: refused naming it, not the file
    as_run = None if data is None else bag_data.bag_run_config  # how the run reads a config it recorded
    resume = check_out_dir(out, resume, cfg, as_run)  # False: nothing to continue, the run starts afresh
    if not resume and not strict:  # resume of a new or empty folder starts a run: it gets a new run's checks
        cfg = _run_config(config, overrides, data, strict=True, recorded=own_config)
    # Every check of a resume comes before anything is written, so a refused resume changes nothing.
    ck, first_command, first_folder = _check_same_run(out, cfg, seed, as_run) if resume else (None, None, None)
    # where the command ran: its relative paths (--config, --bag, --out) mean nothing without it
    working_directory = os.getcwd() if command else None
    start = None  # (weights, record) of a warm start, checked before anything is written
    if resume:
        recorded = recorded_start(out, ck)
        if init_from is not None:
            check_same_start(recorded, Path(init_from), out)
        if ck is None and recorded is not None:  # killed before its first checkpoint: the same start again
            start = warm_start(Path(recorded["path"]), cfg)
            if start[1]["sha256"] != recorded["sha256"]:
                raise TrainingError(
                    f"{out / START_FILE}: the run started from {recorded['path']}, which has changed since (SHA-256 "
                    f"{recorded['sha256'][:12]} then); restore that file or train into a new folder"
                )
    elif init_from is not None:
        start = warm_start(Path(init_from), cfg)
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers (--workers) must be an integer >= 1, got {workers!r}")
    if threads is not None and (isinstance(threads, bool) or not (isinstance(threads, int) and threads >= 1)):
        raise ValueError(f"threads (--threads) must be an integer >= 1, got {threads!r}")
    trained_with = None if ck is None else ck.get("threads")  # None: a checkpoint of before it was recorded
    if ck is not None and trained_with is None:  # such a run's command line says it (a Python API run's: none)
        trained_with = threads_of_command(ck.get("command"))
    recorded_threads = threads  # what the run's checkpoints record (None: not known)
    if threads is None:
        threads = recorded_threads = 1 if trained_with is None else int(trained_with)
        if ck is not None and trained_with is None:
            # the count stays unrecorded: a checkpoint saying 1 refused the resume with --threads N advised here
            recorded_threads = None
            log(
                f"{checkpoint} does not say how many threads (--threads) the run trained with (a checkpoint of "
                "before they were recorded): continuing on 1; if the run was started with --threads N, stop and "
                "resume with --threads N (another count trains another policy)"
            )
    elif trained_with is not None and threads != trained_with:
        raise TrainingError(
            f"{checkpoint}: the run trained with threads (--threads) {trained_with}; resume it with --threads "
            f"{trained_with} or without --threads (another count trains another policy, up to float rounding, which "
            "the run's command would not reproduce)"
        )
    cpus = available_cpus()
    too_many = more_workers_than_cpus(workers, cpus, "its own world and torch (~300 MB)")
    if data is None and too_many:  # allowed (the same episodes), but no sooner, and each worker holds ~300 MB
        log(too_many)
    if threads > cpus:
        log(
            f"threads (--threads) {threads}: more than the {cpus} CPUs this process may use: the copies of the policy "
            f"wait for each other (--threads {cpus} is faster)"
        )
    bc_copies = threads if threads > 1 and not has_dropout(Policy(cfg)) else 1
    torch.set_num_threads(1 if bc_copies > 1 else threads)
    spec = None if data is None else bag_data.bag_data_spec(cfg, data)  # a bad --node-params: before any write
    note = None if start is None or spec is None else start_scale_note(start, spec, cfg, data)
    for line in (note, yaw_field_of_view_note(cfg), camera_blind_strip_note(cfg)):
        if line:
            log(line)
    torch.use_deterministic_algorithms(True)
    created = first_missing_folder(out)
    before = set(os.listdir(out)) if created is None else set()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainingError(f"{out}: cannot create the output folder: {exc.strerror or exc}") from None
    lock = contextlib.ExitStack()  # before anything is written (and before the undo below could remove anything)
    lock.enter_context(folder_lock.hold(out, "train into another --out", TrainingError))
    try:
        if start is not None and not resume:  # before config.yaml: a run folder never lacks the record of its start
            with atomic_write(out / START_FILE, "w") as handle:
                handle.write(json.dumps(start[1]))
        if not resume or not saved.is_file() or data is not None:  # a resumed bag run's: what applied (an older
            with atomic_write(saved, "w") as handle:  # version's recorded the settings of simulated episodes too)
                handle.write(config_text(cfg, data is not None))
        if not resume and data is None:  # a failed bag start's data.yaml would make a later resume a bag run
            (out / "data.yaml").unlink(missing_ok=True)
        if not resume and start is None:  # a failed warm start's record would make a later resume a warm one
            (out / START_FILE).unlink(missing_ok=True)
        if not resume:  # policy.pt names the first command, also after a kill before the first checkpoint
            (out / COMMAND_FILE).unlink(missing_ok=True)
            if command:  # the seed on a line of its own: a resume before any episode is on disk checks it there
                with atomic_write(out / COMMAND_FILE, "w", encoding="utf-8") as handle:
                    handle.write(f"{command}\n{WORKING_DIRECTORY_LINE}{working_directory}\n# seed {seed}\n")
        elif ck is None and first_command:
            command, working_directory = first_command, first_folder
        if data is not None and workers > 1:
            log(f"workers={workers}: no effect when training from bags (there are no episodes to run)")
        run = (
            TrainingRun(cfg, out, seed, progress, command, log, workers=workers, bc_copies=bc_copies)
            if data is None
            else bag_data.BagRun(cfg, out, seed, progress, command, log, data, bc_copies=bc_copies, spec=spec)
        )
        run.threads = recorded_threads
        run.working_directory = working_directory
        run.epoch_lines = not progress if epoch_lines is None else epoch_lines
        if ck is not None:
            run.load_checkpoint()
            log(f"resuming {out}: {run.epoch_done}/{run.total_epochs} epochs finished")
        elif start is not None:
            run.start_from(*start[:2])
        return run.run()
    except BaseException as exc:
        _undo_start(out, created, before)  # nothing collected, converted or trained: leave no half-made run
        interrupt = interrupt_in_ctypes(exc)  # Ctrl-C inside MuJoCo's render: the interrupt, not a ctypes error
        if interrupt is not None:
            raise interrupt from None
        raise
    finally:
        lock.close()
