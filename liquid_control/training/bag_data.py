"""Behaviour cloning from recorded bags: ``liquid-control train --bag DIR...`` or a ``data:`` section.

Each bag is played once through the runtime's ``PolicyRunner`` (:func:`liquid_control.bags.stream_updates`,
the node's event semantics: the same held inputs, dt, rejections and resets as ``policy_node``) and what the
network would have been given at each update is written, with its label, to a cache under the run's
``data/bags/`` folder: raw arrays per segment, memory-mapped when training, so a recording of any length
streams from disk and is never loaded whole. A segment runs from a state reset (start of the bag, an update
gap over ``max_gap_s``, a clock jump, a stale input fresh again) to the next one and is cut into training
windows of ``window`` updates, which are shuffled and batched independently, like episodes, so each starts from
the initial state.
The node never resets inside a gap-free segment; the first update of a window that continues one (not after a
reset) is therefore given the dt the node gives the first update after a reset (``first_update_dt``, 0 by
default) instead of its recorded dt: an initial state with a recorded dt never happens at run time, an initial
state with ``first_update_dt`` does (after every reset). The state is not carried from one window to the next
(a window may be trained before the one it continues, in another batch), so ``window`` is the longest stretch of
recording the network is trained to run through without a reset: 512 updates are 2.2 s of a fusion policy at
~230 updates/s (camera 30 Hz + IMU 200 Hz), 17 s of a 30 Hz camera-only one. Each bag is converted atomically
(segment files flushed and fsynced, then ``index.json``, then the temporary folder renamed) and reused by
``--resume`` while the bag and the data settings are unchanged. A cache that fails its check when reused (an
unreadable ``index.json``, a segment file missing or of the wrong size: a crash, a full disk, a hand edit) is
rebuilt from its bag, with a warning naming the file: it is a cache, the bag is the data. A bag is refused
(before training starts) when one of its input topics kept publishing for longer than the node's ``max_gap_s``
without a message accepted, each rejected as the node would reject it (a driver that does not stamp, an image
encoding the node cannot convert, NaN readings): the policy would hold one reading meanwhile. The error names the
bag, the topic, the stretch, the rejections by reason and their likely causes
(:func:`liquid_control.bags.stream.check_inputs`); rejections that hold nothing for long pass.

Training: ``training.epochs_first`` epochs of the usual BC (truncated BPTT over the windows, masked where an
update has no label), no DAgger (a bag cannot answer "what would the expert do here"); after every epoch the
loss on the held-out validation bags selects the policy (lowest wins; without validation bags the last
epoch). Checkpoints are atomic after every epoch, as for simulated runs.

The ``data:`` section (YAML; every key optional except ``bags``; command-line options win, key by key within
``label`` and ``topics``; ``--set data.window=256`` sets one key, checked as the file's)::

    data:
      bags: [recordings/day1/*]          # rosbag2 folders (globs), relative to the working directory
      validation: [recordings/heldout]   # held-out bags: model selection and the reported offline error
      node_params: config/rover_policy.yaml   # the robot's policy_node parameters: topics, action_scale, dt limits
      topics: {camera: /front/image_raw} # override a topic per sensor
      command_topic: /teleop/cmd_vel     # labels (default: the node's command_topic)
      label: {mode: next, offset_s: 0.0, max_wait_s: 0.5}
      allow_truncated: false             # use what a killed recorder left (default: refuse such bags)
      window: 512                        # updates per training window
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import yaml

from liquid_control.atomic_file import atomic_write
from liquid_control.bags import BagError, BagReader, data_spec, stream_updates
from liquid_control.bags.io import bag_given_twice, bag_sha256, expand_bags, recorded_files, warn_unlisted_files
from liquid_control.bags.stream import (
    RECORD_INFO,
    LabelRule,
    StreamStats,
    capture_runner,
    check_inputs,
    default_node_parameters_file,
    input_hints,
    label_hints,
    label_refusal,
    stale_wait_hint,
    unreleased_hint,
)
from liquid_control.cells import SolverDivergedError
from liquid_control.conventions.commands import COMMAND_ELEMENTS
from liquid_control.conventions.imu import GravityCheck
from liquid_control.conventions.training_record import bag_label
from liquid_control.json_text import load_json
from liquid_control.paths import user_path
from liquid_control.policy import PolicyConfigError, validate_config
from liquid_control.policy.config import (
    BAG_RUN_CONFIG_NOTE,
    BAG_RUN_METADATA,
    SIMULATED_TRAINING_KEYS,
    without_simulated_settings,
)
from liquid_control.shown import did_you_mean, shown
from liquid_control.yaml_numbers import load_yaml

from .bc import bc_loss
from .data import Episode
from .run import TrainingError, TrainingRun, differing_keys, progress_bar
from .sensor_record import bag_camera_calibration, interval_histograms

DATA_KEYS = {  # key -> (the types it takes, the same in a refusal's words)
    "bags": (list, "a list of bag folders"),
    "validation": (list, "a list of bag folders"),
    "node_params": ((str, type(None)), "a parameter file's path or null"),
    "topics": (dict, "a mapping"),
    "command_topic": ((str, type(None)), "a topic name or null"),
    "label": (dict, "a mapping"),
    "allow_truncated": (bool, "true or false"),
    "window": (int, "an integer"),
}
DATA_DEFAULTS = {
    "bags": [],
    "validation": [],
    "node_params": None,
    "topics": {},
    "command_topic": None,
    "label": {},
    "allow_truncated": False,
    "window": 512,
}
# 6: labels in integer nanoseconds (a command exactly at an update's due time), and held inputs released before an
# update of an equal stamp (the runner's reorder buffer): caches of before would hold what conversion no longer gives
# 7: stamp differences past the reordering lag, max_gap_s, the stale rule or max_backward_jump_s only 1 us beyond them
# (timeline.STAMP_TOLERANCE_S): a bag of grid stamps at system time converts to other releases, resets and waits
CACHE_FORMAT = "liquid_control.bag_cache/7"
# 3: continuation windows start at first_update_dt; 4: a step back of the recorder's clock kept where it happened,
# and a bag whose input is held at one reading while its sensor publishes is refused before it is cached; 5: a
# clock step in a bag with a topic logged behind the others is one step, each side sorted (was one per lagged message)
# With a reordering lag, updates were labelled from the log time of the message that let them go (each one a later
# message, several at once the same command) before each was from its own message's: such caches are converted again,
# those of runs without a lag (the labels unchanged) stay valid.
LAGGED_LABELS = "labels of lagged updates from their own messages"
# The cache index's finding of the IMU gravity check (a sentence, or None): said at each run that reads the cache
GRAVITY_KEY = "imu_gravity"
# How the index's "sha256" was taken: 2, bag_sha256 of the storage files metadata.yaml lists (since 961d716). An index
# without it holds one of every storage file (961d716 left out a stray one, another recording copied in) or, before
# 8f0c3a0, of every file but metadata.yaml: taken again where the folder holds such a file (_older_hash_differs)
SHA256_SCHEME_KEY, SHA256_SCHEME = "sha256_scheme", 2


# ------------------------------------------------------------------------------------------------ settings
def _recording_copies(bags: list[str], others: list[str]) -> list[tuple[str, str]]:
    """(bag of ``others``, training bag) pairs holding the same recorded bytes: a copy of a training bag put among
    the held-out ones (or a link to it); with ``others`` the training bags themselves, the pairs of copies among
    them (the later one first). Only files of equal sizes are read, and only up to a first difference."""
    import filecmp

    def sizes(bag):
        return [f.stat().st_size for f in recorded_files(bag)]

    by_sizes: dict = {}
    for bag in bags:
        by_sizes.setdefault(tuple(sizes(bag)), []).append(bag)
    copies = []
    for held_out in others:
        key = tuple(sizes(held_out))
        if not key:  # a folder without (the listed) files: refused by its reader
            continue
        same = by_sizes[key] if others is bags else by_sizes.get(key, [])
        for bag in same[: same.index(held_out)] if others is bags else same:
            pairs = zip(recorded_files(held_out), recorded_files(bag))
            if all(filecmp.cmp(a, b, shallow=False) for a, b in pairs):
                copies.append((held_out, bag))
    return copies


def check_data_values(section) -> dict:
    """A ``data:`` section's keys and their types, and the label rule's values (ValueError naming the key, e.g.
    ``data.label.offset_s``), the defaults filled in: the checks of
    :func:`validate_data` that read no bag, also those of a run's ``data.yaml`` (:func:`read_data_file`)."""
    if not isinstance(section, dict):
        raise ValueError(f"data: expected a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - set(DATA_KEYS), key=str)
    if unknown:
        raise ValueError(
            f"data: unknown key(s) {', '.join(map(repr, unknown))}{did_you_mean(unknown, DATA_KEYS)}; valid keys: "
            f"{', '.join(DATA_KEYS)}"
        )
    out = {**DATA_DEFAULTS}
    for key, value in section.items():
        kind, words = DATA_KEYS[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"data.{key}: expected {words}, got {type(value).__name__} {shown(value)}")
        out[key] = value
    for key in ("bags", "validation"):  # paths and globs: any other single value names the folder str() gives
        nested = [bag for bag in out[key] if isinstance(bag, (dict, list))]  # (a date-named folder: YAML's date)
        if nested:
            raise ValueError(
                f"data.{key}: expected a list of bag folders, got an entry {type(nested[0]).__name__} "
                f"{shown(nested[0])}"
            )
    for key in ("topics", "label"):  # names to single values: a topic, the label's mode and times
        for name, value in out[key].items():
            if isinstance(value, (dict, list)):
                raise ValueError(
                    f"data.{key}.{name}: expected a single value, got {type(value).__name__} {shown(value)}"
                )
    out = copy.deepcopy(out)  # checked first: a value nested hundreds deep is refused, not copied
    if not out["bags"]:
        raise ValueError("data.bags: no training bags given (--bag DIR, or data: bags: [...])")
    label_keys = [f.name for f in dataclasses.fields(LabelRule)]
    unknown = sorted(set(out["label"]) - set(label_keys), key=str)
    if unknown:  # else a TypeError traceback from LabelRule
        raise ValueError(
            f"data.label: unknown key(s) {', '.join(map(repr, unknown))}{did_you_mean(unknown, label_keys)}; valid "
            f"keys: {', '.join(label_keys)}"
        )
    for name, value in out["label"].items():  # the rule's check, named as the key (it said 'data: label offset_s')
        refusal = label_refusal(name, value)
        if refusal:
            raise ValueError(f"data.label.{name}: {refusal}, got {shown(value)}")
    if out["window"] < 2:
        raise ValueError(f"data.window: must be >= 2 updates, got {out['window']}")
    return out


def validate_data(section: dict, options=()) -> dict:
    """Check a ``data:`` section (unknown keys and wrong types name the key: ValueError) and expand the bag globs
    (a bag not there or named twice: BagError); ``options``: the keys the command line set (``bags``: --bag,
    ``validation``: --val-bag), named so in a bag's error."""
    out = check_data_values(section)
    given = {  # how the user named each list: the option, or the config key
        key: option if key in (options or ()) else f"data.{key}"
        for key, option in (("bags", "--bag"), ("validation", "--val-bag"))
    }
    for key in given:  # each checked before any is converted
        out[key] = [str(Path(bag).resolve()) for bag in expand_bags(out[key], given[key])]
    overlap = sorted(set(out["bags"]) & set(out["validation"]))
    if not overlap:  # a folder on one side and one of its files on the other (a split recording's file held out)
        shared = bag_given_twice([(bag, "") for bag in out["bags"]] + [(bag, "") for bag in out["validation"]])
        overlap = [f"{shared[0]} (as its folder and as one of its files)"] if shared else []
    if overlap:
        raise ValueError(
            f"{given['bags']}, {given['validation']}: bag(s) {overlap} are both training and validation bags"
        )
    copies = _recording_copies(out["bags"], out["bags"])
    if copies:  # byte for byte the same recording twice (a copy made to keep it): its updates would count twice
        again, bag = copies[0]
        raise ValueError(
            f"{given['bags']}: {again} holds the same recording as {bag} (a copy): its updates would count twice; "
            "give each recording once"
        )
    copies = _recording_copies(out["bags"], out["validation"])
    if copies:  # its loss would select the epoch that best fits training data
        held_out, bag = copies[0]
        raise ValueError(
            f"{given['validation']}: {held_out} holds the same recording as the training bag {bag} (a copy): held-out "
            "bags must not be trained on; remove it from one of the two"
        )
    if out["node_params"] is not None:
        out["node_params"] = str(Path(user_path(out["node_params"])).resolve())
    return out


def split_overrides(overrides: dict | None) -> tuple[dict, dict]:
    """``--set`` overrides as (those of the policy config, those of its ``data:`` section: ``data.window``...)."""
    data = {k: v for k, v in (overrides or {}).items() if k == "data" or k.startswith("data.")}
    return {k: v for k, v in (overrides or {}).items() if k not in data}, data


def _flat_keys(section: dict) -> list[str]:
    """The dotted keys a data section sets, one level into its mappings (``data.label.mode``)."""
    return [
        f"data.{key}.{sub}" if isinstance(value, dict) and value else f"data.{key}"
        for key, value in section.items()
        for sub in (value if isinstance(value, dict) and value else [None])
    ]


def read_data_file(path: Path) -> dict:
    """A bag run's ``data.yaml`` (``{"data": its data settings, "spec": ...}``); TrainingError naming the file where
    it cannot be read (a hand edit, a disk that filled up before atomic writes)."""
    try:
        content = load_yaml(path.read_text(encoding="utf-8"))  # safe, and refuses aliases of aliases
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        why = str(exc).replace("\n", " ")
        raise TrainingError(
            f"{path}: not a readable data.yaml ({type(exc).__name__}: {why}); restore it, or train into a new folder"
        ) from None
    if not isinstance(content, dict) or not isinstance(content.get("data"), dict):
        raise TrainingError(
            f"{path}: not a run's data.yaml (no 'data:' mapping of the bags and data settings); restore it, or train "
            "into a new folder"
        )
    problem = _recorded_data_problem(content)
    if problem:
        raise TrainingError(f"{path}: {problem} (not as a run writes it); restore it, or train into a new folder")
    return content


def _recorded_data_problem(content: dict) -> str | None:
    """What is wrong in a bag run's ``data.yaml`` as a run writes it (a hand edit, a damaged or foreign file), naming
    the key; None where nothing is. Every version wrote all of ``DATA_KEYS`` (validated, the defaults filled in) and
    ``spec``; keys added to ``spec`` since are ``DATA_KEYS_ADDED``, compared by :meth:`BagRun._check_data_file`.
    The values are checked (:func:`check_data_values`, the label rule's) before they are copied or compared (a value
    nested hundreds deep would not be)."""
    data = content["data"]
    for key in [*DATA_KEYS, "spec"]:
        if key not in (content if key == "spec" else data):
            return f"{'' if key == 'spec' else 'data.'}{key}: missing"
    if not isinstance(content["spec"], dict):
        return f"spec: expected a mapping, got {type(content['spec']).__name__} {shown(content['spec'])}"
    for key in ("bags", "validation"):  # the resolved paths a run writes, each a string
        if isinstance(data[key], list) and not all(isinstance(bag, str) for bag in data[key]):
            return f"data.{key}: expected a list of bag folders, got {shown(data[key])}"
    try:
        check_data_values(data)  # the keys and their values, the label rule's among them
    except ValueError as exc:
        return str(exc)
    return None


def bag_run_sign(out_dir: Path) -> str | None:
    """What shows that ``out_dir`` holds a run from recorded bags, in words (its converted bags, ``data/bags/``,
    which every version wrote; its ``config.yaml``'s first line, since 2026-12-05); None where nothing does."""
    if (out_dir / "data" / "bags").is_dir():
        return f"it holds {out_dir / 'data' / 'bags'}"
    try:
        with open(out_dir / "config.yaml", encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
    except OSError:
        return None
    return f"{out_dir / 'config.yaml'} says so" if first == BAG_RUN_CONFIG_NOTE.splitlines(keepends=True)[0] else None


def resolve(config, data: dict | None, out_dir: Path, sets: dict | None = None, resume: bool = False):
    """Split a ``data:`` section off a policy config (path or dict), apply the ``--set data.KEY=VALUE`` overrides
    ``sets`` to it and merge ``data`` (the command line's own options) over it, key by key into ``label`` and
    ``topics`` (``--label-offset-s`` keeps the file's label mode).

    Returns ``(config, data)``: the policy config alone (a dict when it had a data section), and the validated
    data settings, or None for a simulated run. Without a config, a resumed bag run's ``data.yaml`` is the section
    (``--resume --set data.window=...`` changes it; the run refuses a change once it has trained an epoch); so it is
    where a ``resume`` gives a config without a data section and no data options (its config.yaml, say). A bag run
    whose data.yaml is missing is refused there, not trained as a simulated run (:func:`bag_run_sign`).
    """
    section = source = None  # source: the config file the data: section comes from, named in its refusals
    if isinstance(config, (str, Path)):
        from liquid_control.policy.config import read_config_yaml

        path = Path(config)
        raw = read_config_yaml(path)  # errors name the file (missing, not YAML, a key given twice)
        if isinstance(raw, dict) and "data" in raw:
            section, source = raw.pop("data"), path
            try:
                config = validate_config(raw)
            except PolicyConfigError as exc:
                raise PolicyConfigError(f"{path}: {exc}") from None
    elif isinstance(config, dict) and "data" in config:
        config = dict(config)
        section = config.pop("data")
    saved = out_dir / "data.yaml"
    if section is None and config is None and saved.is_file():  # resume of a bag run: its settings are the base
        section = read_data_file(saved)["data"]
        if not data and not sets:
            return None, section
    elif section is None and not data and (config is None or (resume and not sets)):
        if saved.is_file():  # resumed with a config of no data section: the run's own settings, as without one
            return config, read_data_file(saved)["data"]
        sign = bag_run_sign(out_dir)  # else a simulated run would train in a bag run's folder
        if sign is not None:
            raise TrainingError(
                f"{saved}: missing, and {out_dir} is a run from recorded bags ({sign}): that file holds its bags and "
                "data settings; restore it, or train into a new folder"
            )
    if section is None and not data and not sets:
        return config, None
    from liquid_control.policy.config import refusal_source, set_dotted

    data = data or {}
    given = _flat_keys(data)
    for dotted in sets or {}:  # one setting given twice on the command line: which one is meant?
        both = [k for k in given if k == dotted or k.startswith(dotted + ".") or dotted.startswith(k + ".")]
        if both:
            raise TrainingError(f"--set {dotted} and the option setting {both[0]}: give one")
    wrapped = {"data": copy.deepcopy(section or {})}
    if isinstance(wrapped["data"], dict):
        wrapped["data"] = {"label": {}, "topics": {}, **wrapped["data"]}  # sections --set can name
    for dotted, value in (sets or {}).items():
        set_dotted(wrapped, dotted, value)
    merged = wrapped["data"]
    if not isinstance(merged, dict):
        raise TrainingError(f"data: expected a mapping, got {type(merged).__name__}")
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    try:
        return config, validate_data(merged, options=data)
    except (ValueError, BagError) as exc:  # a wrong key, or a bag not there (expand_bags)
        in_file = str(exc).startswith("data")  # a key of the section (the file's unless set by --set or an option)
        raise TrainingError(
            refusal_source(str(exc), source, [*(sets or {}), *given]) if in_file else str(exc)
        ) from None


def bag_data_spec(cfg: dict, data: dict):
    """Where a policy's inputs and labels are in the bags (topics, scale, limits: the node's parameter file);
    TrainingError when the data settings or the parameter file are wrong (checked before a run writes anything)."""
    try:
        return data_spec(cfg, data["node_params"], data["topics"], data["command_topic"], data["label"] or None)
    except ValueError as exc:
        raise TrainingError(f"data: {exc}") from None


def node_params_source(cfg: dict, data: dict) -> str:
    """The node's parameter file a run reads its bags with, in words (``--node-params``, or the one shipped for its
    world where none is given)."""
    source = data.get("node_params")
    if source is not None:
        return str(source)
    shipped = default_node_parameters_file(cfg["world"])
    return (
        f"none given: {shipped}, the one shipped for world {cfg['world']}"
        if shipped
        else "none given: the node's defaults"
    )


# data.yaml keys added since bag runs began (2026-11-30), each with the value that does what the code did before it
# (a run's data.yaml of then lacks them): the node's reorder_lag_s (1b658c52) was not read, so the runner took the
# policy's own lag, as None does
DATA_KEYS_ADDED = {("spec", "limits", "reorder_lag_s"): None}

SIMULATED_ONLY = {  # training keys that act on simulated episodes only, what each does there
    "shift": "the world the episodes are collected in",
    "sensor_rate_range": "sensor rates drawn per collected episode",
    "jitter_range": "sensor jitter drawn per collected episode",
    "action_noise": "noise in the expert's executed command while collecting (DART)",
}


def bag_run_config(cfg: dict, explicit=()) -> dict:
    """A run from bags' config: behaviour cloning only, so the training settings of simulated episodes
    (``policy.config.SIMULATED_TRAINING_KEYS``: the DAgger schedule, the selection episodes, what the episodes vary)
    do not apply. The run's files leave them out (config.yaml, checkpoint.pt, policy.pt and its export:
    ``without_simulated_settings``), and here they take their defaults, as validate_config gives them reading those
    files back, so each reads back as this config; a config file's (a shipped balancer config's DART noise) are
    dropped so. Also how a config read back from a bag run's folder is compared (``as_run``): one written by an
    older version, which recorded them, reads as this one. Kept as given, for trainer.check_world_settings to refuse:
    a ``SIMULATED_ONLY`` key in ``explicit`` (the dotted keys set on the command line, ``--set``), and a
    ``sun_elevation_range`` set anywhere."""
    training = cfg["training"]
    # the dotted keys set: a section given whole (--set "training={dagger_rounds: 3}") sets each key it names
    section = explicit.get("training") if isinstance(explicit, dict) else None
    explicit = set(explicit) | {f"training.{key}" for key in (section if isinstance(section, dict) else ())}
    schedule = [k for k in SIMULATED_TRAINING_KEYS if k not in SIMULATED_ONLY and k != "sun_elevation_range"]
    for key in schedule:  # asked for with --set: refused, as SIMULATED_ONLY's are (below), not dropped unsaid
        if f"training.{key}" in explicit and training[key]:
            raise TrainingError(
                f"training.{key}: a setting of the simulated episodes (demonstrations, DAgger rounds, selection); a "
                "run from bags is behaviour cloning on the recorded commands, for training.epochs_first epochs: leave "
                "it out (DAgger from bags: record --shadow, then train --init-from; docs/real_robot.md)"
            )
    kept = {key: training[key] for key in SIMULATED_ONLY if f"training.{key}" in explicit}
    if training.get("sun_elevation_range") is not None:
        kept["sun_elevation_range"] = training["sun_elevation_range"]
    cfg = validate_config(without_simulated_settings(cfg), strict=False)
    cfg["training"].update(kept)
    return cfg


# ------------------------------------------------------------------------------------------------ the cache
def _fingerprint(bag: str, spec_description: dict, observation: dict) -> str:
    """Changes when the bag's files or what is extracted from it change."""
    path = Path(bag)
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    extracted = [spec_description, observation, CACHE_FORMAT]
    lag = spec_description["limits"]["reorder_lag_s"]
    if (observation.get("reorder_lag_s", 0.0) if lag is None else lag) > 0:  # labelled otherwise before (LAGGED_LABELS)
        extracted.append(LAGGED_LABELS)
    h.update(json.dumps(extracted, sort_keys=True).encode())
    return h.hexdigest()


class _SegmentFiles:
    """Appends the updates of one segment to raw array files (one per key)."""

    def __init__(self, folder: Path, index: int, continues: bool = False):
        self.prefix = folder / f"seg_{index:05d}"
        self.continues = continues  # cut from the segment before it at ``window`` updates, not at a reset
        self.handles: dict = {}
        self.layout: dict = {}
        self.length = 0

    def append(self, arrays: dict) -> None:
        for key, value in arrays.items():
            value = np.asarray(value)  # tobytes() writes C order; 0-d stays 0-d
            if key not in self.handles:
                self.handles[key] = open(f"{self.prefix}.{key}.bin", "wb")
                self.layout[key] = {"dtype": value.dtype.str, "shape": list(value.shape)}
            self.handles[key].write(value.tobytes())
        self.length += 1

    def close(self, sync: bool = True) -> dict:
        """Close the files (flushed and fsynced first with ``sync``: on disk before index.json names them).
        Without ``sync`` (an abandoned conversion) every file is closed and nothing raised: on a full disk the
        flush of each file's buffered bytes fails again."""
        try:
            for handle in self.handles.values():
                if sync:
                    handle.flush()
                    os.fsync(handle.fileno())
                handle.close()
        except OSError:
            for handle in self.handles.values():
                try:
                    handle.close()
                except OSError:
                    pass
            if sync:
                raise
        return {"name": self.prefix.name, "length": self.length, "layout": self.layout, "continues": self.continues}


class CacheError(TrainingError):
    """A bag's cache folder that fails its check; the message names the file and what is wrong with it."""


def _fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (created, renamed files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class NoCommandBag(BagError):
    """The bag's command topic is there but carries no command: nothing to learn from it, and not a broken bag
    (a deploy-round recording where the operator never had to take over, ``record --expert --policy``)."""


def convert_bag(
    bag: str,
    policy_config: dict,
    spec,
    folder: Path,
    window: int,
    allow_truncated: bool,
    log,
    fingerprint: str = "",
    progress=None,
) -> dict:
    """Play ``bag`` through a capture runner and write its segments under ``folder`` (atomically). ``progress``:
    called with the share (0 to 1) of the bag's messages of the read topics done so far, a thousand times at most."""
    runner = capture_runner(policy_config, spec)
    tmp = folder.parent / f".{folder.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    stats = StreamStats()
    segments, current = [], None
    gravity, gravity_problem = GravityCheck(), None  # the IMU's axes and units, as policy_node checks them
    try:
        with BagReader(bag, allow_truncated=allow_truncated, sha256=True) as reader:
            if reader.salvaged:
                log(f"warning: {reader.salvage_note}")
            on_message = None
            if progress is not None:
                read_topics = {*spec.topics.values(), spec.command_topic}
                total = sum(info.count for topic, info in reader.topics.items() if topic in read_topics)
                every, done = max(1, -(-total // 1000)), [0]  # rounded up: a thousand calls at most

                def on_message():
                    done[0] += 1
                    if done[0] % every == 0:
                        progress(min(1.0, done[0] / total))

            for update in stream_updates(reader, runner, spec, stats, on_message):
                if "imu" in update.obs and gravity_problem is None:
                    gravity_problem = gravity.add(update.obs["imu"])
                dt, continues = update.dt, False
                if current is not None and (update.reset is not None or current.length >= window):
                    segments.append(current.close())
                    current = None
                    # a window that continues a gap-free segment starts from the initial state like one after a
                    # reset, so it is given what the node gives the update after a reset (module docstring)
                    continues = update.reset is None
                    dt = spec.limits.first_update_dt if continues else dt
                if current is None:
                    current = _SegmentFiles(tmp, len(segments), continues)
                label = update.label if update.label is not None else np.zeros(len(spec.action_scale))
                arrays = {f"obs.{key}": value for key, value in update.obs.items()}  # all the network is given
                arrays.update(
                    dt=np.float32(dt),
                    stamp=np.float64(update.stamp),
                    time=np.float64(update.time),
                    label=np.asarray(label, np.float32),
                    labelled=np.bool_(update.label is not None),
                )
                current.append(arrays)
            sha256 = reader.recorded_sha256()  # from the chunks read above (what they left out read now)
        if current is not None:
            segments.append(current.close())
            current = None
    except BaseException as exc:
        if current is not None:
            current.close(sync=False)
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk: the room it took is given back
        if isinstance(exc, OSError) and exc.filename is None:  # a write into a segment file names none
            raise OSError(exc.errno, exc.strerror, str(folder)) from None
        raise
    summary = stats.summary()
    try:
        if not summary.get("labelled"):
            if summary.get("updates") and not summary.get("commands") and not summary.get("commands_rejected"):
                raise NoCommandBag(f"{bag}: {summary['updates']} updates but no command on {spec.command_topic}")
            hint = _diagnose(stats, spec, policy_config, runner.spec.sensors)
            raise BagError(f"{bag}: no labelled update ({summary}): {hint}")
        # labelled updates, but an input held at one reading while its sensor published (a driver that does not stamp)
        check_inputs(bag, stats, spec, runner.spec.sensors)
    except BagError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    index = {
        "format": CACHE_FORMAT,
        "bag": bag,
        "fingerprint": fingerprint,
        "sha256": sha256,
        SHA256_SCHEME_KEY: SHA256_SCHEME,
        "segments": segments,
        "stats": summary,
        "note": stats.salvage_note,
        GRAVITY_KEY: gravity_problem,  # kept with the cache: a resumed run says it again (BagRun._say_gravity)
    }
    with atomic_write(tmp / "index.json", "w") as handle:  # last: the segments it names are on disk
        json.dump(index, handle, indent=1)
    _fsync_dir(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    _fsync_dir(folder.parent)
    return index


def _recorded_bytes(bag: str) -> int:
    """The bytes of ``bag``'s recorded files, what converting it reads (its share of the progress bar); 1 where
    they cannot be listed: the conversion says why."""
    try:
        return max(1, sum(f.stat().st_size for f in recorded_files(bag)))
    except (OSError, BagError):
        return 1


def cached_gravity_problem(folder: Path, index: dict) -> str | None:
    """The IMU gravity check (``GravityCheck``, as ``convert_bag`` runs it) over the IMU readings of a cache's
    segments, in order: for a cache converted before its index kept the finding (GRAVITY_KEY)."""
    gravity = GravityCheck()
    for seg in index["segments"]:
        if "obs.imu" not in (seg.get("layout") or {}):
            continue
        for reading in _segment_arrays(folder, seg)["obs.imu"]:
            problem = gravity.add(reading)
            if problem is not None:
                return problem
    return None


def _older_hash_differs(bag: str) -> bool:
    """Whether an index's SHA-256 taken before SHA256_SCHEME may differ from ``bag_sha256``: the older ones hashed,
    by name, files of the folder beside those it hashes now (``recorded_files``), so they agree where it holds no
    other file but metadata.yaml (the fingerprint says the folder is as it was converted), and the bag, possibly
    gigabytes, is not read again for nothing."""
    path = Path(bag)
    if not path.is_dir():  # a storage file given alone: that file, then as now
        return False
    others = {f.name for f in path.iterdir() if f.is_file() and f.name != "metadata.yaml"}
    return others != {f.name for f in recorded_files(path)}


def _diagnose(stats: StreamStats, spec, policy_config: dict, expected=None) -> str:
    """The likely reason a bag gave no training data: its inputs (no message at all, readings rejected, by topic
    and reason with their causes; ``expected``: sensor -> the shape the policy reads) and its commands."""
    hints = input_hints(stats, spec, expected)
    if stats.messages == 0:
        return f"{hints[0]} {RECORD_INFO}"
    counters = stats.counters
    hints += label_hints(stats, spec, policy_config["action"]["size"])
    if not counters.get("updates") and not hints:
        hints.append(f"no state update from {spec.topics}")
    return "; ".join(hints) + f" {RECORD_INFO}"


def read_cache(folder: Path, fingerprint: str, window: int) -> dict | None:
    """The index of the cached conversion in ``folder`` when it is of ``fingerprint`` (this bag, these settings)
    and cut at ``window`` updates; None when there is none or it is of another bag, settings or window;
    :class:`CacheError` naming the file when ``index.json`` cannot be read or is not a cache index."""
    path = folder / "index.json"
    if not path.is_file():
        return None
    try:
        index = load_json(path.read_text())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError, JSONDecodeError and JsonTooDeepError
        raise CacheError(f"{path}: unreadable cache index ({type(exc).__name__}: {exc})") from None
    if not isinstance(index, dict):
        raise CacheError(f"{path}: not a cache index (a JSON {type(index).__name__}, not an object)")
    if index.get("fingerprint") != fingerprint:
        return None
    kinds = {"format": str, "bag": str, "segments": list, "stats": dict}
    bad = [key for key, kind in kinds.items() if not isinstance(index.get(key), kind)]
    if bad or index["format"] != CACHE_FORMAT:
        raise CacheError(f"{path}: not a {CACHE_FORMAT} index ({', '.join(bad) or 'format'} missing or wrong)")
    # the window is not in the fingerprint (caches made before would all be converted again): the cut is read from
    # the pieces, none longer than the window and each that continues a segment after one of exactly the window.
    # A run stopped before its first epoch and resumed with --set data.window=N trained on the old cut.
    pieces = [(seg.get("length"), seg.get("continues")) for seg in index["segments"] if isinstance(seg, dict)]
    if any(not isinstance(length, int) or length > window for length, _ in pieces) or any(
        continues and before != window for (before, _), (_, continues) in zip(pieces, pieces[1:])
    ):
        return None
    return index


def _segment_arrays(folder: Path, seg) -> dict:
    """The memory-mapped arrays of one cached segment, each file checked against its size in the index first."""
    if not isinstance(seg, dict) or not isinstance(seg.get("name"), str) or not isinstance(seg.get("layout"), dict):
        raise CacheError(f"{folder / 'index.json'}: a segment entry without name or layout ({shown(seg, 80)})")
    arrays = {}
    for key in [*seg["layout"], *(k for k in ("dt", "stamp", "label", "labelled") if k not in seg["layout"])]:
        path = folder / f"{seg['name']}.{key}.bin"
        try:
            layout = seg["layout"][key]
            dtype, shape, length = np.dtype(layout["dtype"]), tuple(int(n) for n in layout["shape"]), int(seg["length"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CacheError(f"{folder / 'index.json'}: no valid layout for {path.name} ({exc!r})") from None
        expected = length * dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise CacheError(f"{path}: cache segment file missing ({exc.strerror})") from None
        if length < 1 or size != expected:
            raise CacheError(
                f"{path}: cache segment file of {size} bytes; index.json says {length} updates of "
                f"{dtype.str}{list(shape)}, {expected} bytes (cut short or overwritten)"
            )
        try:
            arrays[key] = np.memmap(path, dtype=dtype, mode="r", shape=(length, *shape))
        except (OSError, ValueError) as exc:
            raise CacheError(f"{path}: cannot map the cache segment file ({exc})") from None
    return arrays


def load_segments(folder: Path, index: dict) -> list[Episode]:
    """The cached segments of one bag as memory-mapped :class:`Episode` objects; :class:`CacheError` naming
    the file when one is missing or not of the size the index gives."""
    episodes = []
    for seg in index["segments"]:
        arrays = _segment_arrays(folder, seg)
        obs = {k.removeprefix("obs."): v for k, v in arrays.items() if k.startswith("obs.")}
        episodes.append(
            Episode(
                observations=obs,
                dt=arrays["dt"],
                stamp=arrays["stamp"],
                expert_action=arrays["label"],
                action=arrays["label"],
                info={"bag": index["bag"], "segment": seg["name"], "continues": bool(seg.get("continues"))},
                label_mask=arrays["labelled"],
            )
        )
    return episodes


# ------------------------------------------------------------------------------------------------ the run
class BagRun(TrainingRun):
    """A training run whose data are recorded bags (module docstring); shares checkpoints and BC with TrainingRun."""

    from_bags = True
    as_run = staticmethod(bag_run_config)

    def camera_fovs(self) -> dict:
        """``{bag label: (horizontal, vertical) field of view}`` of the training bags that recorded a CameraInfo beside
        the image topic (policy.pt records it, ``sensor_record.camera_entry``; the label: the bag's name and hash,
        ``training_record.bag_label``), or why it gives none (uncalibrated); a bag that cannot be read again is left
        out."""
        topic = self.spec.topics.get("camera")
        found = {}
        for bag in self.used_bags() if topic else ():
            try:
                with BagReader(bag, allow_truncated=self.data["allow_truncated"]) as reader:
                    fov = bag_camera_calibration(reader, topic)
            except (BagError, OSError):
                continue
            if fov is not None:  # by name and hash: two robots' 'run1' are two bags
                found[bag_label(Path(bag).name, self.bag_hashes.get(bag))] = fov
        return found

    def source_entry(self) -> dict:
        """The training bags the policy learned from (the skipped ones left out), each by its folder's name and the
        SHA-256 of its recorded files (``bag_sha256``), no path (conventions.training_record)."""
        return {"bags": [{"name": Path(b).name, "sha256": self.bag_hashes.get(b)} for b in self.used_bags()]}

    def used_bags(self) -> list[str]:
        """The training bags it learned from: all but those skipped (no command on the command topic)."""
        return [b for b in self.data["bags"] if "skipped" not in self.bag_stats.get(b, {})]

    def __init__(self, config, out_dir, seed, progress, command, log, data: dict, bc_copies: int = 1, spec=None):
        super().__init__(config, out_dir, seed, progress, command, log, bc_copies=bc_copies)
        self.data = data
        self.rounds, self.round_epochs = 1, [config["training"]["epochs_first"]]
        self.total_epochs = self.round_epochs[0]
        self.spec = spec if spec is not None else bag_data_spec(config, data)
        self.bag_stats: dict = {}
        self.bag_hashes: dict = {}  # bag -> bag_sha256 (its cache index keeps it, computed when converted)

    def _check_data_file(self) -> None:
        """data.yaml holds the run's data settings; they may change only before the first epoch."""
        path = self.out / "data.yaml"
        content = {"data": self.data, "spec": self.spec.describe()}
        if self.epoch_done > 0 and not path.is_file():  # the settings it trained on cannot be compared
            raise TrainingError(
                f"{path}: missing (the run has trained on its bags); restore it, or train into a new folder"
            )
        if path.is_file() and self.epoch_done > 0:  # before the first epoch: rewritten, whatever it held
            recorded = read_data_file(path)
            for keys, value in DATA_KEYS_ADDED.items():  # a data.yaml of an older version: what it did then
                inner = recorded
                for key in keys[:-1]:
                    inner = inner.get(key) if isinstance(inner, dict) else None
                if isinstance(inner, dict):
                    inner.setdefault(keys[-1], value)
            if recorded != content:
                changed = differing_keys(recorded, content)
                raise TrainingError(
                    f"{path}: the run was trained on other bags or data settings (keys that differ: "
                    f"{', '.join(changed)}); resume with the same ones, or train into a new folder"
                )
        with atomic_write(path, "w", encoding="utf-8") as handle:  # each bag's path as written, on one line
            yaml.safe_dump(content, handle, sort_keys=False, allow_unicode=True, width=math.inf)

    def prepare(self, bags: list[str], kind: str) -> list[Episode]:
        """Segments of ``bags`` (converted once, cached in data/bags/<kind>/), cut into training windows."""
        episodes = []
        root = self.out / "data" / "bags" / kind
        # in bytes of the bags' files, advanced as each bag's messages are read: one bag of hours read for minutes
        # showed 0/1 bags until it was done
        sizes = [_recorded_bytes(bag) for bag in bags]
        bar = progress_bar(sum(sizes), f"{kind} bags", self.progress, unit="B", unit_scale=True, unit_divisor=1024)
        for i, bag in enumerate(bags):
            shown, size = [0], sizes[i]

            def advance(share: float, shown=shown, size=size) -> None:  # to ``share`` of this bag's bytes
                if int(size * share) > shown[0]:
                    bar.update(int(size * share) - shown[0])
                    shown[0] = int(size * share)

            folder = root / f"{i:04d}_{Path(bag).name}"
            fingerprint = _fingerprint(bag, self.spec.describe(), self.config["observation"])
            try:
                index = read_cache(folder, fingerprint, self.data["window"])
                segments = None if index is None else load_segments(folder, index)
            except CacheError as exc:  # a cache: rebuilt from the bag (which the fingerprint says is unchanged)
                self.log(f"warning: {kind} bag {Path(bag).name}: damaged cache, converting the bag again: {exc}")
                index = None
            if index is not None and index.get("note") and not self.data["allow_truncated"]:
                index = None  # salvaged with --allow-truncated, now read without it: converted again, so refused
            if index is not None:  # the bag is not opened: what its reader said of a file it does not read, again
                warn_unlisted_files(bag)
                if index.get("note"):  # the salvage of a truncated bag, said again as at its conversion
                    self.log(f"warning: {index['note']}")
                s, cache = index.get("stats", {}), folder.relative_to(self.out)
                self.log(  # a resumed run: which bags it did not convert again
                    f"{kind} bag {Path(bag).name}: taken from its cache, {cache} (converted by an earlier start: "
                    f"{s.get('updates', 0)} updates, {s.get('labelled', 0)} labelled)"
                )
            if index is None:
                self._refuse_changed_recording(bag, folder, kind)
                try:
                    index = convert_bag(
                        bag,
                        self.config,
                        self.spec,
                        folder,
                        self.data["window"],
                        self.data["allow_truncated"],
                        self.log,
                        fingerprint,
                        advance,
                    )
                except NoCommandBag as exc:  # skipped, said; a run with no labelled bag at all is refused below
                    self.log(f"{kind} bag {Path(bag).name}: skipped, nothing to learn ({exc})")
                    self.bag_stats[bag] = {"skipped": str(exc)}
                    advance(1.0)
                    continue
                except BagError as exc:
                    raise TrainingError(f"{kind} bag {i + 1}/{len(bags)}: {exc}") from None
                s = index["stats"]
                events = ", ".join(f"{k} {v}" for k, v in s.items() if k.startswith(("rejected.", "resets.")))
                # a stretch with no update (a sensor silent, or stamping by another clock) said as the node says it
                events = "; ".join(filter(None, (events, stale_wait_hint(s, self.spec), unreleased_hint(s))))
                windows = len(index["segments"])  # the cached pieces: segments (reset to reset) cut at ``window``
                runs = sum(not piece.get("continues") for piece in index["segments"])
                cut = f" ({windows} windows of at most {self.data['window']} updates)" if windows != runs else ""
                self.log(
                    f"{kind} bag {Path(bag).name}: {s.get('updates', 0)} updates ({s.get('labelled', 0)} labelled) "
                    f"in {runs} segment(s){cut} over {s['duration_s']:.1f} s" + (f"; {events}" if events else "")
                )
                segments = load_segments(folder, index)
            self.bag_stats[bag] = index["stats"]
            # an index converted before it kept these: each read once, kept there (the fingerprint: the same bag)
            older_hash = index.get(SHA256_SCHEME_KEY) != SHA256_SCHEME
            older = not index.get("sha256") or older_hash or GRAVITY_KEY not in index
            if not index.get("sha256") or (older_hash and _older_hash_differs(bag)):
                index["sha256"] = bag_sha256(bag)
            index[SHA256_SCHEME_KEY] = SHA256_SCHEME
            if GRAVITY_KEY not in index:  # from the cached IMU readings, the ones the conversion checked
                index[GRAVITY_KEY] = cached_gravity_problem(folder, index)
            if older:
                with atomic_write(folder / "index.json", "w") as handle:
                    json.dump(index, handle, indent=1)
            self.bag_hashes[bag] = index["sha256"]
            self._say_gravity(bag, index[GRAVITY_KEY])
            episodes += segments
            advance(1.0)
        bar.close()
        skipped = [Path(b).name for b in bags if "skipped" in self.bag_stats.get(b, {})]
        if skipped and episodes:
            self.log(
                f"{kind} bags: {len(skipped)} of {len(bags)} skipped, no command on {self.spec.command_topic} "
                f"({', '.join(skipped)}); expected only for takeover rounds where the operator never took over"
            )
        if bags and not episodes:
            raise TrainingError(
                f"no {kind} bag has a command to learn from on {self.spec.command_topic} (all {len(bags)} skipped; "
                "set --command-topic if the commands are on another topic)"
            )
        return episodes

    def _refuse_changed_recording(self, bag: str, folder: Path, kind: str) -> None:
        """A run that has trained refuses a bag whose recording is not the one it trained on (another recording put
        at the same path: its cache missed, and the run went on on it, its record naming only the new one). Its
        cache's SHA-256 against the bag's, read only where the cache missed after training began (a bag touched,
        or a cache of an older format, is converted again, the same recording)."""
        if self.epoch_done == 0:
            return
        try:
            previous = json.loads((folder / "index.json").read_text())
        except (OSError, ValueError):
            return
        if not isinstance(previous, dict) or previous.get(SHA256_SCHEME_KEY) != SHA256_SCHEME:
            return
        trained, now = previous.get("sha256"), bag_sha256(bag)
        if trained and trained != now:
            raise TrainingError(
                f"{kind} bag {bag}: not the recording the run trained on (SHA-256 {now[:12]}..., trained on "
                f"{trained[:12]}...); resume with the bags it trained on, or train into a new folder"
            )

    def _say_gravity(self, bag: str, problem: str | None) -> None:
        """Warn of the IMU gravity check's finding on ``bag`` (``convert_bag``), at every run that reads it: a resumed
        run's log says it as the first run's did."""
        if problem is not None:  # trained on as recorded; policy_node would warn of it at every run
            self.log(
                f"warning: {Path(bag).name}: {self.spec.topics['imu']} (imu, as the policy's updates hold it): "
                f"{problem}; the policy learns the IMU as recorded, and policy_node warns of it on the robot "
                "(imu.gravity_mismatch): fix the axes, then record again (docs/real_robot.md, 'The IMU's axes')"
            )

    def validate(self, validation: list[Episode]) -> None:
        """Validation loss on the held-out bags; keep the best epoch (the last without them) and save a checkpoint."""
        with self.averaged():  # the weights validated are the ones kept
            self._validate(validation)
        self.rounds_evaluated = 0
        self.save_checkpoint()

    def _validate(self, validation: list[Episode]) -> None:
        t = self.config["training"]
        loss = None
        if validation:
            bags = ", ".join(Path(b).name for b in self.data["validation"])
            try:
                result = bc_loss(
                    self.policy, validation, batch_size=t["batch_size"], sequence_length=t["sequence_length"]
                )
            except SolverDivergedError as exc:  # a longer dt than training's (the solver held there): say which
                longest = max(float(ep.dt.max()) for ep in validation if len(ep))
                raise TrainingError(
                    f"epoch {self.epoch_done}: validation on the held-out bags ({bags}): {exc} (core.solver, "
                    f"core.unfolds, core.max_step; the validation bags' longest dt is {longest:.3g} s, the training "
                    f"bags' {self.longest_dt:.3g} s); {self.kept()}, not validated, and --resume validates it "
                    "again: train into a new folder"
                ) from None
            loss = result["loss"]
            if not np.isfinite(loss):  # it would select no epoch, or keep the first (NaN <= x is False)
                raise TrainingError(
                    f"epoch {self.epoch_done}: validation loss {loss} on the held-out bags ({bags}) with finite "
                    f"weights: the policy's actions are not finite there; {self.kept()}, not validated"
                )
            said = f"validation loss {loss:.5f} ({result['updates']} updates)"
            if not self.say_epoch(said):  # bars on (or an epoch trained before a resume): a line of its own
                self.log(f"epoch {self.epoch_done}: {said}")
        else:
            self.say_epoch()
        self._row(epoch=self.epoch_done, round=0, kind="validate", loss="" if loss is None else round(loss, 6))
        best_loss = None if self.best is None else self.best.get("validation_loss")
        if self.best is None or loss is None or best_loss is None or loss <= best_loss:
            self.best = {
                "success": -1.0,  # not measured: no simulator in the loop
                "round": 0,
                "epoch": self.epoch_done,
                "validation_loss": loss,
                "state_dict": {k: v.clone() for k, v in self.policy.state_dict().items()},
                "average_steps": None if self.average is None else self.average.steps,
            }

    def _validated(self, epoch: int) -> bool:
        return any(r["kind"] == "validate" and int(r["epoch"]) == epoch for r in self.rows)

    def run(self):
        """Train epoch by epoch on the bags, validating after each (continuing a resumed run); its TrainResult."""
        try:
            self._check_data_file()  # other bags or data settings are refused, for a finished run too
            if not self.resumed_finished:  # else nothing to train: its policy.pt is kept, the bags not read again
                self._train()
        finally:
            self.close()
        return self.finish()

    def _train(self) -> None:
        """The epochs still to run, each validated on the held-out bags."""
        episodes = self.prepare(self.data["bags"], "train")
        validation = self.prepare(self.data["validation"], "validation")
        self.note_dts(episodes)
        self.interval_counts = {"bags": interval_histograms(episodes, self.config["observation"]["update_on"])}
        self._note_clipped_labels(episodes)
        self._note_constant_labels(episodes)
        if not validation:
            self.log("no validation bags: the last epoch is kept (pass --val-bag to select on held-out data)")
        if self.epoch_done == 0:
            self.fit_normalization(episodes)
        if self.epoch_done > 0 and not self._validated(self.epoch_done):
            self.validate(validation)  # killed between an epoch and its validation
        for epoch in range(self.epoch_done, self.total_epochs):
            self.train_epoch(episodes, epoch, 0)
            self.validate(validation)

    def _note_clipped_labels(self, episodes: list[Episode]) -> None:
        """Warn of an action element whose training labels go beyond the action bounds times the node's
        ``action_scale`` (a robot faster than the scale says, e.g. the rover's parameter file on a 1.5 m/s base): the
        loss clips them there, so the policy can never command more, and nothing else says so."""
        low, high = (np.asarray(self.config["action"][k], np.float64) for k in ("low", "high"))
        scale = np.asarray(self.spec.action_scale, np.float64)
        labels = [
            np.asarray(ep.expert_action if ep.label_mask is None else ep.expert_action[np.asarray(ep.label_mask)])
            for ep in episodes
        ]
        labels = np.concatenate([a.reshape(-1, len(low)) for a in labels]) if labels else np.zeros((0, len(low)))
        if not len(labels):
            return
        tolerance = 1e-6 * np.maximum(1.0, np.maximum(np.abs(low), np.abs(high)))
        beyond = (labels < low - tolerance) | (labels > high + tolerance)
        elements = COMMAND_ELEMENTS.get(self.config["action"].get("kind"), ())
        source = node_params_source(self.config, self.data)
        for i in np.flatnonzero(beyond.any(axis=0)):
            name, unit = elements[i] if i < len(elements) else (f"action[{i}]", "robot units")
            bounds = f"{low[i] * scale[i]:g}..{high[i] * scale[i]:g} {unit}"
            recorded = f"{labels[:, i].min() * scale[i]:g}..{labels[:, i].max() * scale[i]:g} {unit}"
            self.log(
                f"warning: {int(beyond[:, i].sum())} of {len(labels)} labelled updates command {name} beyond "
                f"action.low..high x action_scale {scale[i]:g} = {bounds} (recorded {recorded}): the loss clips them, "
                f"so the policy never commands more; for a robot whose limits are wider, set action_scale (and "
                f"max_command) to them in the node's parameter file ({source}; --node-params)"
            )

    def _note_constant_labels(self, episodes: list[Episode]) -> None:
        """Warn of an action element whose every training label is the same (within the action bounds, where the
        loss clips them): a recording that only drove straight teaches a policy that cannot steer."""
        low, high = (np.asarray(self.config["action"][k], np.float64) for k in ("low", "high"))
        least, most, count = np.full(len(low), np.inf), np.full(len(low), -np.inf), 0
        for ep in episodes:
            labels = ep.expert_action if ep.label_mask is None else ep.expert_action[np.asarray(ep.label_mask)]
            if len(labels):
                labels = np.clip(np.asarray(labels, np.float64), low, high)
                least, most = np.minimum(least, labels.min(axis=0)), np.maximum(most, labels.max(axis=0))
                count += len(labels)
        for i in np.flatnonzero(least == most) if count else []:
            self.log(
                f"warning: every training label of action[{i}] is {least[i]:g} (all {count} labelled updates, "
                f"within action.low..high): the policy can only learn to output that; record commands that vary it"
            )

    def selection_note(self) -> str:
        """The selected epoch and its validation loss, with the epochs whose loss was the same to the 6 digits
        metrics.csv keeps (an earlier one: equal or higher, of equal losses the later wins; a later one: higher
        beyond them, else it would have been selected) or that no validation bag selected it."""
        epoch, loss = self.best["epoch"], self.best.get("validation_loss")
        if loss is None:
            return f"selected the last epoch ({epoch}): no validation bags"
        losses = {int(r["epoch"]): float(r["loss"]) for r in self.rows if r["kind"] == "validate" and r["loss"] != ""}
        same = [e for e, value in sorted(losses.items()) if e != epoch and value == round(loss, 6)]
        earlier, later = (", ".join(str(e) for e in same if (e > epoch) == after) for after in (False, True))
        note = f"selected epoch {epoch}: validation loss {loss:.5f}, the lowest of {len(losses)} epoch(s)"
        if earlier:
            note += f" (epoch(s) {earlier}: the same to 6 digits; of equal losses the later is kept)"
        if later:
            note += f" (epoch(s) {later}: the same to 6 digits, higher beyond them)"
        return note

    def schedule_metadata(self) -> dict:
        """No DAgger round, selection episode or simulated episode (a simulated run's entries): a bag run records
        its bags and the epoch its validation loss selected (``extra_metadata``)."""
        return {}

    def extra_metadata(self) -> dict:
        """What policy.pt records of the bag data: bags (their paths, as data.yaml names them: two days' bags may
        share a name), labelled updates, seconds, validation loss, data spec."""
        labelled = sum(s.get("labelled", 0) for b, s in self.bag_stats.items() if b in self.data["bags"])
        used = self.used_bags()
        return {
            BAG_RUN_METADATA[0]: BAG_RUN_METADATA[1],  # training_data: bags (save_policy records the config so)
            "training_bags": list(used),
            "skipped_bags": [b for b in self.data["bags"] if b not in used],  # no command to learn from
            "validation_bags": list(self.data["validation"]),
            "training_updates": labelled,
            "recorded_seconds": round(
                sum(s.get("duration_s", 0.0) for b, s in self.bag_stats.items() if b in self.data["bags"]), 2
            ),
            "validation_loss": self.best.get("validation_loss") if self.best else None,
            "data_spec": self.spec.describe(),
        }
