"""A recorded bag played through the runtime's :class:`~liquid_control.runtime.runner.PolicyRunner`, exactly as
``policy_node`` would have lived it, with each update labelled by the recorded command.

The event semantics are not re-implemented here: every sensor message of the bag goes, in log-time order
(the order the recorder, and so a node, received them: ``BagReader.messages``), through ``PolicyRunner.submit(sensor,
header.stamp, reading, now=log time)``. The runner decides what the node would have decided: duplicates and
out-of-order stamps rejected, held inputs, the update dt from stamp differences, resets after a gap or a clock
jump. The backend sees every update the node's network would see; :class:`CaptureBackend` runs no network
and only keeps the held observation and dt of each update (training data), any other backend (the torch or
ONNX policy) gives the node's actions (offline evaluation).

Labels. A policy update happens when its message is received (log time ``t``; the node computes and
publishes its command right then; with a reordering lag later, when a later message lets it go, one message letting
several go at once, but ``t`` stays the log time of the update's own message, so each has its own label, the same
whatever the lag). Its label is a recorded command (``command_topic``), by one rule:

- ``next`` (default): the first command received at or after ``t + offset_s`` (for ``offset_s = 0``: after
  the update's message in the bag). What the driver (expert, teleoperator or policy) commanded in response to
  what the update saw; a policy node's own compute latency is absorbed by the wait.
- ``held``: the command in force at ``t + offset_s``: the latest received before the update's message
  (``offset_s = 0``), or at or before ``t + offset_s``.

``offset_s > 0`` shifts the label later in time, e.g. by a teleoperator's reaction time. No command within
``max_wait_s`` of ``t + offset_s`` leaves the update unlabelled: it still advances the state in training,
but is not in the loss. Commands (robot units) become actions by dividing by the node's ``action_scale``.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from liquid_control.conventions import stamps
from liquid_control.conventions.image_conversion import ENCODINGS, ImageConversionError
from liquid_control.conventions.imu import NOT_PROVIDED, ImuFieldNotProvided
from liquid_control.conventions.joints import MISSING_JOINT, velocities_by_name
from liquid_control.conventions.params import (
    POLICY_NODE_PARAMETERS,
    WHEEL_JOINT_NAMES,
    WORLD_POLICIES,
    joint_names_problem,
    section_applies,
)
from liquid_control.paths import config_dir, user_path
from liquid_control.runtime import runner as R
from liquid_control.runtime.backends import CAMERA, ObservationSpec
from liquid_control.shown import closest, shown
from liquid_control.yaml_numbers import load_yaml

from .io import BagError, BagReader
from .messages import (
    COMMAND_TYPES,
    COMPRESSED_IMAGE,
    IMAGE,
    SENSOR_TYPES,
    command_vector,
    sensor_reading,
    stamp_seconds,
)

LABEL_MODES = ("next", "held")
BAD_ENCODING = "bad_encoding"  # an Image the node cannot convert (runner.reject: rejected.bad_encoding)


# ------------------------------------------------------------------------------------------------ the spec
@dataclass(frozen=True)
class LabelRule:
    """How a recorded command labels an update (module docstring)."""

    mode: str = "next"
    offset_s: float = 0.0
    max_wait_s: float = 0.5

    def __post_init__(self):
        for name in ("mode", "offset_s", "max_wait_s"):
            refusal = label_refusal(name, getattr(self, name))
            if refusal:
                raise ValueError(f"label {name} {refusal}, got {shown(getattr(self, name))}")


def label_refusal(name: str, value) -> str:
    """What the label rule's ``name`` (mode, offset_s, max_wait_s) must be, where ``value`` is not that ('' where it
    is): the one check of LabelRule, of a data: section's label (``data.label.offset_s``) and of the --label-*
    options, each naming its own."""
    if name == "mode":
        return "" if value in LABEL_MODES else f"must be one of {', '.join(LABEL_MODES)}"
    finite = isinstance(value, (int, float)) and not _past_float_range(value) and math.isfinite(value)
    return "" if finite and value >= 0 else "must be a finite number of seconds >= 0"


def label_seconds(text: str) -> float:
    """``--label-offset-s``, ``--label-max-wait-s``: seconds, checked as the rule checks them (``label_refusal``), so
    that a bad one is refused as the option (it was 'label offset_s must be ...', the rule's words)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    refusal = label_refusal("offset_s", value)
    if refusal:
        raise argparse.ArgumentTypeError(f"{refusal}, got {shown(text)}")
    return value


@dataclass(frozen=True)
class BagDataSpec:
    """Where the policy's inputs and labels are in a bag, and the runtime limits of the node that will run it.

    ``topics``: sensor name -> topic; ``command_topic``: the labels; ``action_scale``: robot units per action
    unit (the node's ``action_scale``); ``limits``: the node's dt limits; ``label``: the :class:`LabelRule`.
    """

    topics: dict
    command_topic: str
    action_scale: tuple
    limits: R.RunnerLimits = field(default_factory=R.RunnerLimits)
    label: LabelRule = field(default_factory=LabelRule)
    joint_names: tuple = WHEEL_JOINT_NAMES  # the wheel velocities' order (the node's joint_names)

    def describe(self) -> dict:
        """Plain dict (for run folders, model cards and reports)."""
        return {
            "topics": dict(self.topics),
            "command_topic": self.command_topic,
            "action_scale": list(self.action_scale),
            "limits": {
                "max_gap_s": self.limits.max_gap_s,
                "max_backward_jump_s": self.limits.max_backward_jump_s,
                "max_future_stamp_s": self.limits.max_future_stamp_s,
                "first_update_dt": self.limits.first_update_dt,
                "reorder_lag_s": self.limits.reorder_lag_s,
            },
            "label": {"mode": self.label.mode, "offset_s": self.label.offset_s, "max_wait_s": self.label.max_wait_s},
        } | (  # only where it is read and not the default: specs (and bag runs) from before it existed stay equal
            {"joint_names": list(self.joint_names)}
            if "wheels" in self.topics and tuple(self.joint_names) != WHEEL_JOINT_NAMES
            else {}
        )


def absolute_topic(name: str) -> str:
    """Topic names in a bag are absolute; the node's parameters are relative to its (root) namespace."""
    return name if name.startswith("/") else "/" + name


POLICY_NODE = "policy_node"


def node_sections(path: str | Path, node: str, reader: str, namespaced_advice: str = "") -> list[tuple[str, dict]]:
    """The sections of the parameter file ``path`` that ROS 2 gives the node ``/<node>`` (root namespace), as
    (section name, its ``ros__parameters``) in file order: ``<node>:``, ``/**:``, ``/**/<node>:`` ...
    (:func:`section_applies`). A ValueError naming the file (``reader``: who reads it, for the message): it cannot
    be read, is not a mapping, has no section for the node (another node's parameters, or ROS's nested
    ``robot1: <node>:`` form), a section's ``ros__parameters`` is not a mapping, or it has sections for a node of
    that name in a namespace (``/robot1/<node>``), which the node ``/<node>`` would not get
    (``namespaced_advice`` then says what to give instead)."""
    path = Path(path)
    try:
        raw = load_yaml(path.read_text())  # YAML 1.2 numbers, as ROS reads the file (2e0 is 2.0)
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the {node} parameter file: {exc}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping ({node}: ros__parameters: ...), got {type(raw).__name__} {raw!r}")
    raw = raw or {}
    nodes = {k: v for k, v in raw.items() if isinstance(v, dict) and "ros__parameters" in v}
    if not nodes:
        nested = [k for k, v in raw.items() if isinstance(v, dict) and any(isinstance(x, dict) for x in v.values())]
        hint = f"; {', '.join(map(str, nested))}: a nested namespace; {reader} reads a top-level {node}: section"
        raise ValueError(
            f"{path}: no 'ros__parameters' section (expected {node}: ros__parameters: ...){hint if nested else ''}"
        )
    qualified = f"/{node}"
    sections = [name for name in nodes if section_applies(str(name), qualified)]
    elsewhere = [str(n) for n in nodes if n not in sections and str(n).strip("/").rsplit("/", 1)[-1] == node]
    if elsewhere:
        raise ValueError(
            f"{path}: {', '.join(elsewhere)}: parameters for a namespaced {node}; {reader} "
            + (namespaced_advice or f"starts the node {qualified}, which does not get them: give a {node}: section")
        )
    if not sections:
        raise ValueError(
            f"{path}: no section for {qualified} ({node}:, /**:, /**/{node}: ...); it has "
            f"{', '.join(map(str, nodes))}, whose parameters a node named {qualified} would not get"
        )
    for name in sections:
        given = nodes[name]["ros__parameters"]
        if not isinstance(given, dict):
            raise ValueError(
                f"{path}: {name}.ros__parameters: expected a mapping, got {type(given).__name__} {given!r}"
            )
    return [(str(name), nodes[name]["ros__parameters"]) for name in sections]


def node_file_parameters(path: str | Path, node: str, reader: str) -> dict:
    """The parameters the file ``path`` gives the node ``/<node>`` (:func:`node_sections`, a later section
    overriding an earlier one), or a ValueError naming the file."""
    values = {}
    for _, given in node_sections(path, node, reader):
        values.update(given)
    return values


def load_node_parameters(path: str | Path | None) -> dict:
    """The policy_node parameters of a parameter file over the node's defaults, as ROS 2 gives them to the node
    ``/policy_node`` (:func:`node_sections`): every section whose name matches it (``policy_node``, ``/**``,
    ``/**/policy_node``), in file order (a later one overrides an earlier one); ``None``: the defaults alone.
    Refused: a file with no such section (another node's parameters reach no policy), and sections for a
    namespaced policy node (``/robot1/policy_node``: its relative topics would resolve in a namespace training does
    not know)."""
    values = {name: default for name, (default, _) in POLICY_NODE_PARAMETERS.items()}
    if path is None:
        return values
    path = Path(path)
    sections = node_sections(
        path,
        POLICY_NODE,
        "training",
        f"reads them as the node /{POLICY_NODE} gets them (relative topics resolved from /): give a file with a "
        "/**/policy_node: section (the node gets it in any namespace) and the topics as that robot's node "
        "subscribes to them (e.g. /robot1/camera/image_raw)",
    )
    for name, given in sections:
        for key, value in given.items():
            problem = _parameter_type_problem(key, value)
            if problem:
                raise ValueError(f"{path}: {name}.ros__parameters.{key}: {problem}")
        if name.strip("/").rsplit("/", 1)[-1] == POLICY_NODE:  # a wildcard section (/**) holds others' too
            unknown = [k for k in given if k not in POLICY_NODE_PARAMETERS and not _ros_own_parameter(k)]
            if unknown:  # the node warns and runs on the default; training would label with it unseen
                close = {k: closest(k, POLICY_NODE_PARAMETERS, cutoff=0.6) for k in unknown}
                named = ", ".join(k + (f" (did you mean {close[k]}?)" if close[k] else "") for k in unknown)
                raise ValueError(f"{path}: {name}.ros__parameters: not a policy_node parameter: {named}")
        values.update(given)
    return values


def _ros_own_parameter(name: str) -> bool:
    """A parameter every rclpy node has or reads (``use_sim_time``, QoS overrides), not the policy node's own."""
    return name in ("use_sim_time", "start_type_description_service") or name.startswith("qos_overrides.")


def _parameter_type_problem(name, value) -> str | None:
    """Why ``value`` cannot be the node parameter ``name`` (the type of its default), or None. The node's own
    checks (liquid_control.conventions.params) come later on the robot; here a wrong type would fail far from the
    file."""
    if name not in POLICY_NODE_PARAMETERS:
        return None  # another node's parameter, or one this version does not read
    default = POLICY_NODE_PARAMETERS[name][0]

    def number(v):  # an integer past a float's range is none: float() of it raises OverflowError
        return isinstance(v, (int, float)) and not isinstance(v, bool) and not _past_float_range(v)

    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, str):
        ok, want = isinstance(value, str), "a string"
    elif isinstance(default, list) and all(isinstance(v, str) for v in default):  # joint_names
        ok, want = isinstance(value, list) and all(isinstance(v, str) for v in value), "a list of strings"
    elif isinstance(default, list):
        ok = number(value) or (isinstance(value, list) and bool(value) and all(number(v) for v in value))
        want = "a number or a list of numbers"
    else:
        ok, want = number(value), "a number"
    if ok:
        return None
    past = any(_past_float_range(v) for v in (value if isinstance(value, list) else [value]))
    return f"expected {want}, got {shown(value)}" + (" (an integer past a float's range)" if past else "")


def _past_float_range(value) -> bool:
    """Whether ``value`` is an integer no float can hold (a YAML integer of 400 digits: float() raises
    OverflowError)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    try:
        float(value)
    except OverflowError:
        return True
    return False


def default_node_parameters_file(world: str) -> Path | None:
    """The parameter file the package ships for the policy node of ``world`` (config/rover_policy.yaml...)."""
    if world not in WORLD_POLICIES:
        return None
    return config_dir() / WORLD_POLICIES[world][0]


TRAINED_SPEC = "the data spec the policy recorded (its training run's topics, labels, action_scale and limits)"


def trained_node_parameters(record, spec: ObservationSpec) -> dict:
    """The node parameters of the ``data_spec`` a run from bags recorded in its policy (``BagDataSpec.describe``), as
    :func:`load_node_parameters` gives them (its label rule: :func:`trained_label`); ValueError where malformed."""
    values = load_node_parameters(None)
    try:
        for sensor in (s for s in spec.sensors if s in SENSOR_TYPES):  # another: refused by data_spec, named
            values[SENSOR_TYPES[sensor][1]] = str(record["topics"][sensor])
        values["command_topic"] = str(record["command_topic"])
        values["action_scale"] = [float(v) for v in record["action_scale"]]
        for key in ("max_gap_s", "max_backward_jump_s", "max_future_stamp_s", "first_update_dt"):
            values[key] = float(record["limits"][key])
        # absent from a spec recorded before the node's reorder_lag_s was read (1b658c52, 2026-11-30): the runner
        # took the policy's own lag then, as None does (training.bag_data.DATA_KEYS_ADDED reads data.yaml so)
        lag = record["limits"].get("reorder_lag_s")
        values["reorder_lag_s"] = -1.0 if lag is None else float(lag)  # None: the policy's, as the node's -1
        if "joint_names" in record:
            values["joint_names"] = [str(name) for name in record["joint_names"]]
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:  # Overflow: an int past floats
        raise ValueError(f"{TRAINED_SPEC} is malformed ({type(exc).__name__}: {exc}); give --node-params") from None
    return values


def trained_label(record) -> dict:
    """The label rule (``mode``, ``offset_s``, ``max_wait_s``) of the ``data_spec`` a run from bags recorded: not a
    setting of the node's parameter file, so a ``--node-params`` given leaves it in force; ValueError where it is
    malformed."""
    try:
        return {key: record["label"][key] for key in ("mode", "offset_s", "max_wait_s")}
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"{TRAINED_SPEC} is malformed ({type(exc).__name__}: {exc}); give the label options (--label, "
            "--label-offset-s, --label-max-wait-s)"
        ) from None


def data_spec(
    policy_config: dict,
    node_params: str | Path | None = None,
    topics: dict | None = None,
    command_topic: str | None = None,
    label: dict | None = None,
    trained: dict | None = None,
) -> BagDataSpec:
    """The spec of a policy: topics, scale and limits from the node's parameter file (default: ``trained``, the
    ``data_spec`` a policy trained from bags recorded, where given; else the one shipped for the policy's world),
    overridden by ``topics`` (sensor -> topic), ``command_topic`` and ``label`` (key by key); the label rule is
    ``trained``'s where given, with a ``node_params`` file too (which holds none), overridden by ``label``."""
    spec = ObservationSpec.from_config(policy_config)
    if trained is not None and not {"mode", "offset_s", "max_wait_s"} <= set(label or {}):
        # the label rule it trained with, also beside a --node-params given (a parameter file holds none): each key
        # the options set overrides it (before, --node-params went back to the default rule, unsaid)
        label = {**trained_label(trained), **(label or {})}
    if node_params is None and trained is not None:
        values = trained_node_parameters(trained, spec)
        node_params = TRAINED_SPEC  # what a refusal below names
    else:
        if node_params is None and policy_config["world"] is None:  # no world: no shipped file to fall back on
            raise ValueError(
                "the policy's config names no world (world: null), so there is no shipped policy_node parameter file "
                "to read the bags with: give the robot's, --node-params (or data.node_params)"
            )
        if node_params is None:
            node_params = default_node_parameters_file(policy_config["world"])
        values = load_node_parameters(node_params)
    mapping = {}
    for sensor in spec.sensors:
        if sensor not in SENSOR_TYPES:
            raise ValueError(
                f"the policy reads {sensor!r}, which has no message type (known: {', '.join(SENSOR_TYPES)})"
            )
        mapping[sensor] = absolute_topic(str(values[SENSOR_TYPES[sensor][1]]))
    for sensor, topic in (topics or {}).items():
        if sensor not in spec.sensors:
            raise ValueError(
                f"topic given for {sensor!r}, which the policy does not read (it reads {list(spec.sensors)})"
            )
        mapping[sensor] = absolute_topic(str(topic))
    given = values["action_scale"]  # numbers a float holds (load_node_parameters)
    scale = [float(s) for s in (given if isinstance(given, (list, tuple)) else [given])]
    if len(scale) == 1:
        scale = scale * spec.action_size
    if len(scale) != spec.action_size or any(not math.isfinite(s) or s == 0 for s in scale):
        raise ValueError(
            f"{node_params}: action_scale {shown(given)}: needs 1 or {spec.action_size} finite non-zero values "
            f"(the policy's action size)"
        )
    if "wheels" in spec.sensors:  # as the node checks them at configure
        problem = joint_names_problem(values["joint_names"], spec.sensors["wheels"][0])
        if problem:
            raise ValueError(f"{node_params}: {problem}")
    limits = R.RunnerLimits(
        max_gap_s=float(values["max_gap_s"]),
        max_backward_jump_s=float(values["max_backward_jump_s"]),
        max_future_stamp_s=float(values["max_future_stamp_s"]),
        first_update_dt=float(values["first_update_dt"]),
        reorder_lag_s=None if float(values["reorder_lag_s"]) < 0 else float(values["reorder_lag_s"]),  # as the node
    )
    return BagDataSpec(
        topics=mapping,
        joint_names=tuple(values["joint_names"]),
        command_topic=absolute_topic(command_topic or str(values["command_topic"])),
        action_scale=tuple(scale),
        limits=limits,
        label=LabelRule(**(label or {})),
    )


# ------------------------------------------------------------------------------------------------ CLI options
def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``train --bag``, ``eval --bag``: where the inputs and labels are in the bags."""
    group = parser.add_argument_group("bags (rosbag2 MCAP recordings)")
    group.add_argument(
        "--node-params",
        default=None,
        metavar="YAML",
        type=user_path,
        help="policy_node parameter file of the robot: topic names, action_scale, dt limits (default: eval --bag of "
        "a policy trained from bags: the ones it trained with, which it records; else the one shipped for the "
        "policy's world, e.g. config/rover_policy.yaml)",
    )
    group.add_argument(
        "--topic",
        dest="topics",
        action="append",
        default=[],
        metavar="SENSOR=TOPIC",
        help="topic of a policy input in the bags, e.g. camera=/front/image_raw (repeatable)",
    )
    group.add_argument("--command-topic", default=None, help="recorded commands = labels (default: the node's)")
    group.add_argument(
        "--label", default=None, choices=LABEL_MODES, help="label rule (default next; docs/real_robot.md)"
    )
    group.add_argument(
        "--label-offset-s", type=label_seconds, default=None, help="shift labels later by this (s; default 0)"
    )
    group.add_argument(
        "--label-max-wait-s",
        type=label_seconds,
        default=None,
        help="no command within this => unlabelled (s; default 0.5)",
    )
    group.add_argument(
        "--allow-truncated",
        action="store_true",
        help="use the messages before the break of bags whose recorder was killed (default: refuse them)",
    )


def data_overrides(args) -> dict:
    """The ``data:`` keys set on the command line (see training.bag_data for the section)."""
    out: dict = {}
    if getattr(args, "node_params", None):
        out["node_params"] = args.node_params
    topics = {}
    for item in getattr(args, "topics", []) or []:
        sensor, sep, topic = item.partition("=")
        if not sep or not sensor or not topic:
            raise ValueError(f"--topic expects SENSOR=TOPIC, got {shown(item, 1000)}")
        topics[sensor.strip()] = topic.strip()
    if topics:
        out["topics"] = topics
    if getattr(args, "command_topic", None):
        out["command_topic"] = args.command_topic
    label = {}
    for key, attr in (("mode", "label"), ("offset_s", "label_offset_s"), ("max_wait_s", "label_max_wait_s")):
        if getattr(args, attr, None) is not None:
            label[key] = getattr(args, attr)
    if label:
        out["label"] = label
    if getattr(args, "allow_truncated", False):
        out["allow_truncated"] = True
    return out


# ------------------------------------------------------------------------------------------------ backends
class CaptureBackend:
    """A runtime backend that runs no network: it keeps what the network would have been given.

    ``steps`` lists ``(obs, dt, action)`` of every step since it was last cleared: the held input of every
    sensor (and the time inputs), the dt, as decided by the :class:`PolicyRunner` that calls it. The action is
    zeros (training only needs the inputs). One message can release several steps (the reordering buffer).
    """

    name = "capture"

    def __init__(self, policy_config: dict):
        self.config = policy_config
        self.spec = ObservationSpec.from_config(policy_config)
        self.steps = []

    def initial_state(self) -> np.ndarray:
        """A one-element dummy state (there is no network)."""
        return np.zeros(1, dtype=np.float32)

    def step(self, obs, state, dt, encode=None):
        """Record the step's inputs and return a zero action; the state is passed through."""
        action = np.zeros(self.spec.action_size)
        self.steps.append((obs, float(dt), action))
        return action, state

    def close(self):
        """Nothing to release."""
        pass


class TapBackend:
    """Wraps a real backend and keeps the input and action of every step (``steps``), like
    :class:`CaptureBackend`."""

    def __init__(self, backend):
        self.inner = backend
        self.name = backend.name
        self.config = backend.config
        self.spec = backend.spec
        self.steps = []

    def initial_state(self):
        """The wrapped backend's initial state."""
        return self.inner.initial_state()

    def step(self, obs, state, dt, encode=None):
        """Step the wrapped backend and record the inputs and its action (not an output the runner drops)."""
        action, new_state = self.inner.step(obs, state, dt, encode=encode)
        if not R.output_problem(action, new_state, self.spec.action_size):
            self.steps.append((obs, float(dt), np.asarray(action, dtype=np.float64).reshape(-1)))
        return action, new_state

    def close(self):
        """Close the wrapped backend."""
        self.inner.close()


# ------------------------------------------------------------------------------------------------ the stream
@dataclass
class Update:
    """One state update of the runner over the bag, with its label."""

    time: float  # log time of the message that caused it (s): when the node computed it
    stamp: float  # the update's stamp (s): the latest update-sensor stamp taken (a late message's keeps it, dt 0)
    message_stamp: float  # header stamp of that message (s): what policy_node stamps this update's command with
    dt: float  # what the cell integrated
    reset: str | None  # a reset since the previous update ("gap", "clock_backwards", "stale_input"), or None
    obs: dict  # the inputs given to the backend (held readings)
    action: np.ndarray  # the backend's action (zeros for CaptureBackend)
    label: np.ndarray | None = None  # recorded command in action units, or None (unlabelled)
    label_time: float | None = None  # log time of that command


@dataclass
class StreamStats:
    """Counters of one pass over a bag: the runner's (received/accepted/rejected/resets/updates) and the labels'.

    For the diagnosis of a bad bag (:func:`check_inputs`, :func:`input_hints`; not in :meth:`summary`):
    ``rejections`` sensor -> Counter of the reasons its readings were rejected, ``bad_images`` Counter of
    ``(encoding, why)`` of the images that could not be converted, ``wrong_shapes`` sensor -> the shape of its
    first reading rejected for its size, ``messages`` the number of messages in the whole bag (every topic),
    ``log_times_zero`` whether every message read was logged at 0 (its recorder's clock never started),
    ``holds`` sensor -> ``(seconds, log time it starts)`` of its longest hold: the longest stretch during which
    its messages kept arriving and none was accepted, from the last accepted reading (or the topic's first
    message if none was) to a later rejected message, in seconds driven (:meth:`accepted`, :meth:`held`); a
    silence of the sensor (no message of its own, accepted or rejected, for longer than max_gap_s) ends a
    stretch: the next one starts at the first message after it (the sensor did not keep publishing; a silence with
    no message after it was never refused either: what is refused is a sensor talking while nothing it says is
    taken)."""

    counters: Counter = field(default_factory=Counter)
    duration_s: float = 0.0
    salvage_note: str = ""
    rejections: dict = field(default_factory=dict)
    bad_images: Counter = field(default_factory=Counter)
    wrong_shapes: dict = field(default_factory=dict)
    messages: int | None = None
    holds: dict = field(default_factory=dict)
    log_times_zero: bool = False  # every message read logged at 0: recorded on sim time with no /clock
    _held_from: dict = field(default_factory=dict, repr=False)  # sensor -> (driven s, log time) of the hold's start
    _last_seen: dict = field(default_factory=dict, repr=False)  # sensor -> driven s of its last message

    def accepted(self, sensor: str, driven: float, t: float) -> None:
        """A reading of ``sensor`` was accepted at log time ``t`` (``driven`` seconds into the bag, steps of the
        recorder's clock added up): the policy holds it from there."""
        self._held_from[sensor] = (driven, t)
        self._last_seen[sensor] = driven

    def held(self, sensor: str, driven: float, t: float, max_gap_s: float) -> None:
        """A message of ``sensor`` at log time ``t`` was rejected: the policy still holds the last accepted
        reading (or none); the stretch since then is a candidate for the longest hold (``holds``). The stretch
        restarts at this message when it is the topic's first or comes after a silence of the sensor longer than
        ``max_gap_s`` (no message of its own, accepted or rejected, in between): a silence is not publishing."""
        last = self._last_seen.get(sensor)
        self._last_seen[sensor] = driven
        if last is None or driven - last > max_gap_s:
            self._held_from[sensor] = (driven, t)
        since, start = self._held_from[sensor]
        if sensor not in self.holds or driven - since > self.holds[sensor][0]:
            self.holds[sensor] = (driven - since, start)

    def reject(self, sensor: str, reason: str, value=None, shape: tuple | None = None) -> None:
        """Note one reading of ``sensor`` rejected for ``reason`` (its shape, from ``value`` or ``shape`` for an
        image refused unread, when it is of the wrong size)."""
        self.rejections.setdefault(sensor, Counter())[reason] += 1
        if reason == R.BAD_SHAPE and sensor not in self.wrong_shapes:
            self.wrong_shapes[sensor] = tuple(np.shape(value)) if shape is None else tuple(shape)

    def summary(self) -> dict:
        """The duration and the counters, sorted by name, as a plain dict (for reports)."""
        return {"duration_s": round(self.duration_s, 3), **dict(sorted(self.counters.items()))}


class _Command:
    """An accepted command (log time in ns, action), a link of the chain of them in the order they were received."""

    __slots__ = ("time", "action", "next")

    def __init__(self, time: int | float, action: np.ndarray | None):
        self.time, self.action, self.next = time, action, None


class _Commands:
    """The commands of one stretch of the recorder's clock (a step back starts another), as a chain: a sensor
    message keeps the link of the latest command before it (:class:`_Arrival`), whose later links are the commands
    after it; links no message keeps any more are dropped (nothing else refers to them)."""

    def __init__(self):
        self.last = _Command(-math.inf, None)  # before the first command: no command
        self.closed = False  # no command comes any more (the bag ended, or the clock stepped back)

    def append(self, t: int, action: np.ndarray) -> None:
        self.last.next = _Command(t, action)
        self.last = self.last.next


@dataclass(frozen=True)
class _Arrival:
    """A sensor message received at log time ``time`` (ns) after the command ``before`` of ``commands``."""

    time: int
    before: _Command
    commands: _Commands


class _Labeller:
    """Pairs updates with recorded commands by the :class:`LabelRule`, each from the log time of its own message
    (:class:`_Arrival`, in the tag it went through the runner with): with a reordering lag the node computes an update
    when a later message lets it go, one message letting several go at once, and each is still labelled by the
    commands around the reception of the message it updates with. Hands out updates in order. Times are log
    times in integer nanoseconds, and so are the rule's offset and wait: a command exactly at an update's due time
    labels it (in float seconds, 2.0 + 0.05 < 2.0500000000000003 s dropped or shifted 13 of 100 such labels)."""

    def __init__(self, rule: LabelRule, scale: np.ndarray):
        self.rule, self.scale = rule, scale
        self.offset_ns = round(rule.offset_s * 1e9)
        self.max_wait_ns = round(rule.max_wait_s * 1e9) if math.isfinite(rule.max_wait_s) else math.inf
        self.pending: deque = deque()  # (update, arrival) not handed out yet, in update order
        self.commands = _Commands()
        self.now = -math.inf  # log time of the message being processed

    def arrival(self, t: int) -> _Arrival:
        """A sensor message is received at log time ``t`` (ns): its place among the commands."""
        return _Arrival(t, self.commands.last, self.commands)

    def _label(self, arrival: _Arrival) -> tuple[bool, _Command | None]:
        """(whether the label of an update of ``arrival`` is decided, the command that labels it or None)."""
        rule, due = self.rule, arrival.time + self.offset_ns
        done = arrival.commands.closed
        if rule.mode == "next":  # the first command at or after the due time (after the message with offset 0)
            command = arrival.before.next
            while command is not None and command.time < due:
                command = command.next
            # none yet: a command after the message being processed would be too late for max_wait_s
            return done or command is not None or self.now > due + self.max_wait_ns, command
        if self.offset_ns == 0:  # held: the latest before the message
            return True, arrival.before
        command = arrival.before  # held: the latest at or before the due time, known once a message after it came
        while command.next is not None and command.next.time <= due:
            command = command.next
        return done or command.next is not None or self.now > due, command

    def _ready(self) -> list:
        out = []
        while self.pending:
            update, arrival = self.pending[0]
            decided, command = self._label(arrival)
            if not decided:
                break
            self.pending.popleft()
            if command is not None and command.action is not None:
                if abs(command.time - (arrival.time + self.offset_ns)) <= self.max_wait_ns:
                    update.label, update.label_time = command.action, command.time * 1e-9
            out.append(update)
        return out

    def on_time(self, t: int):
        """A message at log time ``t`` (ns) is about to be processed: updates whose label is decided go out."""
        self.now = t
        return self._ready()

    def on_command(self, t: int, command: np.ndarray):
        if command.shape != self.scale.shape or not np.all(np.isfinite(command)):
            return [], False
        self.commands.append(t, command / self.scale)
        return self._ready(), True

    def on_update(self, update: Update, arrival: _Arrival):
        """An update released by the runner, of the message received at ``arrival``."""
        self.pending.append((update, arrival))
        return self._ready()

    def flush(self):
        """No later command can label what came before (the bag ended, or the recorder's clock stepped back):
        every pending update goes out, and later commands are timed against later messages only."""
        self.commands.closed = True
        out = self._ready()
        self.commands = _Commands()
        return out


def _require(reader: BagReader, topic: str, msgtypes: tuple, what: str, option: str):
    """``reader.require``; where the topic is missing but the bag has its type under another name (a camera
    driver's /front/image_raw), the error says which option reads ``what`` from there; where the camera was
    recorded only compressed (image_transport's ``.../compressed``), that policy_node reads raw images."""
    try:
        return reader.require(topic, msgtypes)
    except BagError as exc:
        others = [t for t, info in sorted(reader.topics.items()) if set(info.msgtypes).intersection(msgtypes)]
        if topic in reader.topics or not others:
            compressed = [t for t, info in sorted(reader.topics.items()) if COMPRESSED_IMAGE in info.msgtypes]
            if IMAGE in msgtypes and compressed:
                raise BagError(
                    f"{exc}; {', '.join(compressed)}: compressed images, which policy_node does not subscribe to "
                    f"(it reads raw {IMAGE}, no image_transport): record the raw image topic, at the policy's "
                    f"resolution"
                ) from None
            raise
        raise BagError(f"{exc}; to read {what} from {others[0]}, give {option}{others[0]}") from None


def stream_updates(
    reader: BagReader,
    runner: R.PolicyRunner,
    spec: BagDataSpec,
    stats: StreamStats | None = None,
    on_message=None,
):
    """Feed the bag through ``runner`` (whose backend must be a Capture/TapBackend) and yield each labelled
    :class:`Update` in order. ``stats`` collects the runner's counters and the label counts; ``on_message()`` is
    called at each message read of ``spec``'s topics (a conversion's progress: updates come at one sensor's rate)."""
    stats = stats if stats is not None else StreamStats()
    backend = runner.backend
    if not hasattr(backend, "steps"):
        raise TypeError("stream_updates needs a CaptureBackend or a TapBackend around the policy backend")
    by_topic = {topic: sensor for sensor, topic in spec.topics.items()}
    problems, commands = [], {}  # every topic the bag lacks said at once (before: one run per missing topic)
    for topic, sensor in by_topic.items():
        try:
            _require(reader, topic, (SENSOR_TYPES[sensor][0],), f"the {sensor}", f"--topic {sensor}=")
        except BagError as exc:
            problems.append(str(exc))
    labels = "the labels (the operator's commands)"
    try:
        commands = _require(reader, spec.command_topic, COMMAND_TYPES, labels, "--command-topic ").msgtypes
    except BagError as exc:
        problems.append(str(exc))
    if problems:
        raise BagError("; and ".join(problems))
    command_types = [t for t in commands if t in COMMAND_TYPES]
    if len(command_types) > 1:  # the base subscribes with one of them: which commands drove the robot is unknown
        held = ", ".join(f"{t} ({n})" for t, n in commands.items())
        raise BagError(
            f"{reader.path}: the command topic {spec.command_topic} was recorded with more than one command type: "
            f"{held}; a subscriber (the robot's base) receives only the messages of its one type, so which "
            "commands drove the robot is not in the bag: record the commands of one type"
        )
    command_type = command_types[0]
    # a topic recorded with several types (publishers of two types on one name): what the node subscribes to (one
    # type) gets only the messages of its own; the others never reach it
    wanted_types = {topic: SENSOR_TYPES[sensor][0] for topic, sensor in by_topic.items()}
    wanted_types[spec.command_topic] = command_type
    scale = np.asarray(spec.action_scale, dtype=np.float64)
    labeller = _Labeller(spec.label, scale)
    counters = stats.counters
    first = last = None
    reset = None  # a reset of the state since the last update (e.g. a clock jump on a held sensor's message)
    stats.messages = reader.message_count

    def emit(updates):
        for update in updates:
            counters["labelled" if update.label is not None else "unlabelled"] += 1
            yield update

    span = 0.0  # seconds recorded before the last step back of the recorder's clock
    wanted_joints = set(spec.joint_names)
    max_gap_s = spec.limits.max_gap_s  # a silence of a sensor longer than this ends its hold (StreamStats.held)
    for msg in reader.messages(list(by_topic) + [spec.command_topic]):
        if on_message is not None:
            on_message()
        if msg.msgtype != wanted_types[msg.topic]:
            counters[f"other_type.{by_topic.get(msg.topic, 'command')}"] += 1
            continue
        t = msg.log_time_ns * 1e-9
        if last is not None and t < last:  # the recorder's clock stepped back (BagReader keeps the written order)
            yield from emit(labeller.flush())  # a command after the step cannot be timed against an update before it
            span, first = span + last - first, t
            counters["log_time_steps_back"] += 1
        first = t if first is None else first
        last = t
        driven = span + t - first  # seconds into the bag (the holds' clock: log time less the steps back)
        yield from emit(labeller.on_time(msg.log_time_ns))
        try:
            decoded = msg.decode()
        except Exception as exc:  # a corrupt message body
            raise BagError(
                f"{reader.path}: message on {msg.topic} at log time {t:.6f} s cannot be decoded: {exc}"
            ) from None
        if msg.topic == spec.command_topic:
            ready, ok = labeller.on_command(msg.log_time_ns, command_vector(decoded, command_type))
            counters["commands" if ok else "commands_rejected"] += 1
            yield from emit(ready)
            continue
        sensor = by_topic[msg.topic]
        stamp = stamp_seconds(decoded)
        if sensor == CAMERA and _wrong_image_size(decoded, runner, stats):  # as the node, before its pixels
            stats.held(sensor, driven, t, max_gap_s)
            continue
        try:
            if sensor == "wheels":  # by name in joint_names' order, as the node takes them
                value, _ = velocities_by_name(decoded.name, decoded.velocity, spec.joint_names)
                if value is None:  # the node rejects it the same way (runner.reject: its counters)
                    runner.reject(sensor, MISSING_JOINT)
                    stats.reject(sensor, MISSING_JOINT)
                    # one naming none of joint_names is another publisher's (a head's joints beside the wheels'
                    # on a shared /joint_states): it neither holds the wheel speeds nor frees them, nor is it the
                    # wheels publishing (it does not bridge a silence of the wheel base's publisher)
                    if wanted_joints.intersection(decoded.name):
                        stats.held(sensor, driven, t, max_gap_s)
                    continue
            else:
                value = sensor_reading(sensor, decoded)
        except ImuFieldNotProvided:  # the node rejects it the same way (runner.reject: its counters)
            runner.reject(sensor, NOT_PROVIDED)
            stats.reject(sensor, NOT_PROVIDED)
            stats.held(sensor, driven, t, max_gap_s)
            continue
        except ImageConversionError as exc:  # the node rejects it the same way (runner.reject: its counters)
            runner.reject(sensor, BAD_ENCODING)
            stats.reject(sensor, BAD_ENCODING)
            stats.held(sensor, driven, t, max_gap_s)
            stats.bad_images[(str(getattr(decoded, "encoding", "?")), str(exc))] += 1
            continue
        if stamp is not None and stamps.invalid(decoded.header.stamp):  # the node rejects it the same way
            runner.reject(sensor, R.BAD_STAMP)
            stats.reject(sensor, R.BAD_STAMP)
            stats.held(sensor, driven, t, max_gap_s)
            continue
        backend.steps.clear()
        stamp = t if stamp is None else stamp
        result = runner.submit(sensor, stamp, value, now=t, tag=(labeller.arrival(msg.log_time_ns), stamp))
        if result.status == R.REJECTED and result.reason != R.INFERENCE_ERROR:  # the reading's fault, not the model's
            stats.reject(sensor, result.reason, value)
            stats.held(sensor, driven, t, max_gap_s)
        else:  # taken (and held) by the runner; a failed inference is the model's fault
            stats.accepted(sensor, driven, t)
        if result.status != R.UPDATED:
            reset = result.reset or reset  # the next update's
            continue
        # the updates this message released (several when the reordering buffer lets older messages go), each
        # with its own stamp, the reset just before it and the arrival and stamp of its own message (its label's
        # time; its command's stamp in the node)
        released = zip(backend.steps, result.update_stamps, result.update_resets, result.update_tags, strict=True)
        for (obs, dt, action), update_stamp, update_reset, (arrival, message_stamp) in released:
            update = Update(
                time=t,
                stamp=update_stamp,
                message_stamp=message_stamp,
                dt=dt,
                reset=update_reset or reset,
                obs=obs,
                action=action,
            )
            reset = None
            yield from emit(labeller.on_update(update, arrival))
    yield from emit(labeller.flush())
    counters.update({k: v for k, v in runner.counters.items() if not k.startswith("accepted.")})
    if runner.buffered:  # within the reordering lag of the last message: no later one released them
        counters["unreleased_at_end"] = runner.buffered
    stats.duration_s = 0.0 if first is None else span + last - first
    stats.log_times_zero = first == last == 0.0 and not counters["log_time_steps_back"]
    stats.salvage_note = reader.salvage_note


def _wrong_image_size(image, runner: R.PolicyRunner, stats: StreamStats) -> bool:
    """Whether an Image's (height, width) is not the policy's: then rejected as bad_shape, as policy_node's
    _on_image rejects it unread (a header claiming 100000x100000 over 12 kB of pixels was bad_encoding here, and a
    valid 100-megapixel frame was converted in full before the runner refused it)."""
    expected = tuple(runner.spec.sensors[CAMERA])
    size = (image.height, image.width)
    if size == expected[:2]:
        return False
    runner.reject(CAMERA, R.BAD_SHAPE)
    stats.reject(CAMERA, R.BAD_SHAPE, shape=(*size, *expected[2:]))
    return True


def capture_runner(policy_config: dict, spec: BagDataSpec) -> R.PolicyRunner:
    """A PolicyRunner over a :class:`CaptureBackend` with the node's limits (training data)."""
    return R.PolicyRunner(CaptureBackend(policy_config), spec.limits)


def policy_runner(backend, spec: BagDataSpec) -> R.PolicyRunner:
    """A PolicyRunner over a real backend (tapped) with the node's limits (offline evaluation)."""
    return R.PolicyRunner(TapBackend(backend), spec.limits)


def with_label(spec: BagDataSpec, **label) -> BagDataSpec:
    """``spec`` with the given fields of its label rule replaced."""
    return replace(spec, label=replace(spec.label, **label))


# ------------------------------------------------------------------------------------------------ diagnosis
# A bag is refused when, on one of its input topics, messages kept arriving for longer than the node's max_gap_s
# without one being accepted (each rejected as the node would reject it: a driver that does not stamp, an encoding
# the node cannot convert, NaN readings): the policy would hold one reading (or have none) while the sensor kept
# talking. The stretch runs in log time from the last accepted reading (or the topic's first message if none was)
# to a later rejected message, over the sensor's own messages with no silence longer than max_gap_s between two of
# them (StreamStats.holds): a sensor silent for longer (a USB reconnect) did not keep publishing, and a duplicate or
# stale message when it comes back starts a new stretch. Rejections that hold nothing for long pass, however many: an
# out-of-order message, a duplicate, a driver republishing each sample under its stamp; so do JointState messages
# that name none of joint_names (another publisher's on a shared /joint_states: they neither hold nor free, nor
# bridge a silence of the wheels' publisher).
RECORD_INFO = "(see `liquid-control record --info` for what the bag holds)"

READING_FIELDS = {  # what policy_node reads of each sensor's message (liquid_control.bags.messages.sensor_reading)
    "camera": "the rgb8 image",
    "imu": "angular_velocity and linear_acceleration",
    "wheels": "velocity",
}


def _size_text(sensor: str, shape: tuple | None, order: bool = False) -> str:
    """``order``: say the order of an image's size, once per message (width x height, as CameraInfo gives it)."""
    if shape is None:
        return "of another size"
    if sensor == "camera" and len(shape) >= 2:
        return f"{shape[1]}x{shape[0]} images" + (" (width x height)" if order else "")
    return f"{shape[0]} values" if len(shape) == 1 else f"values of shape {list(shape)}"


def wrong_size_hint(sensor: str, found: tuple | None, expected: tuple, spec: BagDataSpec) -> str:
    """The hint for one input whose readings are not of the size the policy reads: topic, field, both sizes."""
    topic = spec.topics.get(sensor, "?")
    msgtype = SENSOR_TYPES.get(sensor, ("?",))[0]
    where = f"{topic} ({sensor}: {READING_FIELDS.get(sensor, 'its reading')} of {msgtype})"
    if sensor == "camera":
        return (
            f"{where} has {_size_text(sensor, found, order=True)}, the policy reads "
            f"{_size_text(sensor, expected, order=found is None)} "
            f"(observation.image): record the topic policy_node will subscribe to, resized"
        )
    declared = expected[0] if len(expected) == 1 else list(expected)
    return (
        f"{where} has {_size_text(sensor, found)} per reading, the policy reads {_size_text(sensor, expected)} "
        f"(observation.vectors.{sensor}: {declared}): record what policy_node will read there, or give the "
        f"policy the size the robot publishes"
    )


def _encoding_hint(stats: StreamStats) -> str:
    unsupported = sorted({enc for enc, _ in stats.bad_images if enc not in ENCODINGS})
    hints = []
    if unsupported:
        hints.append(
            f"image encoding {', '.join(map(repr, unsupported))}, which policy_node does not convert (supported: "
            f"{', '.join(ENCODINGS)}): set the camera driver's output encoding to one of them"
        )
    problems = sorted({why for enc, why in stats.bad_images if enc in ENCODINGS})
    if problems:  # a supported encoding whose sizes do not add up (step, data length)
        hints.append("images that cannot be converted: " + "; ".join(problems[:3]))
    return "; ".join(hints) or "images that cannot be converted"


def rejection_hint(sensor: str, reason: str, stats: StreamStats, spec: BagDataSpec, expected=None) -> str:
    """The likely cause of readings of ``sensor`` rejected for ``reason`` (a runner reason or bad_encoding);
    ``expected``: sensor -> the shape the policy reads (for readings of the wrong size)."""
    if reason == R.DUPLICATE:
        return (
            "header.stamp does not advance: the driver stamps its readings alike (a constant or coarse stamp), "
            "or publishes a reading again under the same stamp"
        )
    if reason == R.OUT_OF_ORDER:
        return "header.stamp runs backwards (less than max_backward_jump_s): messages stamped out of order"
    if reason == BAD_ENCODING:
        return _encoding_hint(stats)
    if reason == R.NON_FINITE:
        return f"NaN/inf in the message ({READING_FIELDS.get(sensor, 'its reading')}): a reading must be finite"
    if reason == R.BAD_SHAPE:
        if expected and sensor in expected:
            return wrong_size_hint(sensor, stats.wrong_shapes.get(sensor), tuple(expected[sensor]), spec)
        return "readings of the wrong size"
    if reason == R.BAD_DTYPE:
        return "readings of the wrong data type (images must be 8-bit)"
    if reason == R.BAD_STAMP:  # 0: the runner's rule for an unset stamp (liquid_control.runtime.runner)
        return (
            "header.stamp 0 (not set: the driver does not stamp its messages), negative or not finite, or its "
            "nanosec 10^9 or more (no builtin_interfaces/Time)"
        )
    if reason == R.FUTURE_STAMP:
        if stats.log_times_zero:  # the recorder's clock read 0 throughout: sim time that never started
            return (
                "stamps ahead of the recorder's clock, whose log times are all 0: recorded with --use-sim-time "
                "(ros2 bag record --use-sim-time) while nothing published /clock; record without it, or with the "
                "simulator publishing /clock"
            )
        return (
            "stamps ahead of the recorder's clock (unsynchronised clocks, or sim-time stamps recorded "
            "without --use-sim-time)"
        )
    if reason == NOT_PROVIDED:
        return (
            "the driver marks angular_velocity or linear_acceleration as not provided (covariance[0] = -1, "
            "sensor_msgs/Imu): an IMU without a gyroscope or accelerometer; the policy reads both"
        )
    if reason == MISSING_JOINT:
        return (
            f"JointState messages name no {' or '.join(spec.joint_names)} (joint_names: wheel velocities are read "
            "by name; set joint_names in --node-params to the bag's wheel joints, in the order the policy reads them)"
        )
    return reason


def topic_rejections(sensor: str, stats: StreamStats, spec: BagDataSpec, expected=None, held: str = "") -> str:
    """``TOPIC (SENSOR): R of N messages rejected, REASON COUNT: cause; REASON COUNT: cause`` for one input
    (``held``: a text put after ``TOPIC (SENSOR): ``)."""
    counters = stats.counters
    rejected, received = counters.get(f"rejected_by_sensor.{sensor}", 0), counters.get(f"received.{sensor}", 0)
    reasons = stats.rejections.get(sensor, Counter())
    causes = "; ".join(
        f"{reason} {n}: {rejection_hint(sensor, reason, stats, spec, expected)}" for reason, n in reasons.most_common()
    )
    return f"{spec.topics.get(sensor, '?')} ({sensor}): {held}{rejected} of {received} messages rejected, {causes}"


def input_problems(stats: StreamStats, spec: BagDataSpec, expected=None) -> list[str]:
    """One line per input topic whose longest hold (:attr:`StreamStats.holds`) exceeds the node's max_gap_s:
    the hold's length and start, then the topic's rejections by reason with their causes."""
    limit = spec.limits.max_gap_s
    problems = []
    for sensor in spec.topics:
        length, start = stats.holds.get(sensor, (0.0, 0.0))
        if length > limit:
            held = f"kept publishing for {length:.3f} s from log time {start:.3f} s, none accepted "
            held += f"(max_gap_s {limit:g} s); "
            problems.append(topic_rejections(sensor, stats, spec, expected, held))
    return problems


def check_inputs(bag, stats: StreamStats, spec: BagDataSpec, expected=None) -> None:
    """A :class:`BagError` naming the bag, the topic, the longest stretch of its messages rejected (length, log
    time it starts), the rejections by reason and their causes, and the limit, when an input's sensor kept
    publishing for longer than the node's max_gap_s without one message accepted (the policy would hold one
    reading meanwhile: :func:`input_problems`); nothing otherwise."""
    problems = input_problems(stats, spec, expected)
    if problems:
        raise BagError(
            f"{bag}: refused, an input held at one reading for longer than max_gap_s while its sensor kept "
            f"publishing (the node would reject those messages too): {' | '.join(problems)} {RECORD_INFO}"
        )


def label_hints(stats: StreamStats, spec: BagDataSpec, action_size: int) -> list[str]:
    """Why no update of a bag got a label, from its commands: none on the command topic, every one rejected, or
    none within the label rule's ``max_wait_s`` of an update; empty when some update was labelled."""
    counters, topic, rule = stats.counters, spec.command_topic, spec.label
    if counters.get("labelled"):
        return []
    if not counters.get("commands") and counters.get("commands_rejected"):
        return [
            f"all {counters['commands_rejected']} commands on {topic} were rejected: a label must be {action_size} "
            "finite numbers (the policy's action size), not NaN/inf or an array of another length"
        ]
    if not counters.get("commands"):
        return [f"no command on {topic} (set --command-topic)"]
    if counters.get("updates"):
        return [
            f"none of the {counters['commands']} commands on {topic} came within max_wait_s ({rule.max_wait_s:g} s) "
            f"of an update's log time + offset_s ({rule.offset_s:g} s) by the label rule {rule.mode!r} "
            "(--label, --label-offset-s, --label-max-wait-s)"
        ]
    return []


def stale_wait_hint(counters: dict, spec: BagDataSpec) -> str:
    """Where update messages of a bag made no update, waiting for inputs stamped too far apart (the runner's
    ``waiting_for_stale.<input>``: per such message, each input it waited for), in policy_node's words for it, with
    how many waited for each input; "" where none did. From the counters alone: a cached conversion's too."""
    waits = {k.split(".", 1)[1]: n for k, n in sorted(counters.items()) if k.startswith("waiting_for_stale.") and n}
    if not waits:
        return ""
    each = ", ".join(f"{n} for {spec.topics.get(sensor, '?')} ({sensor})" for sensor, n in waits.items())
    return f"update messages that made no update, waiting for {R.stale_inputs_text(spec.limits.max_gap_s)}: {each}"


def unreleased_hint(counters: dict) -> str:
    """The messages a bag's end left in the reordering buffer (``unreleased_at_end``: within ``reorder_lag_s`` of the
    last message, so no later one released them; the node would, with the messages after), which are neither
    updates nor waits nor rejections; "" where none were."""
    count = counters.get("unreleased_at_end", 0)
    if not count:
        return ""
    return f"{count} messages still held by the reordering lag (reorder_lag_s) at the bag's end, never released"


def rejection_lines(stats: StreamStats, spec: BagDataSpec, expected=None) -> list[str]:
    """The readings rejected as the node rejects them, a line per topic with their causes (``topic_rejections``):
    what training's log and ``eval --bag`` say of a bag."""
    return [topic_rejections(s, stats, spec, expected) for s in spec.topics if stats.rejections.get(s)]


def input_hints(stats: StreamStats, spec: BagDataSpec, expected=None) -> list[str]:
    """Why a bag gave no update, from its inputs: no message at all, rejected readings (by topic, with their
    causes), an input with no message (updates wait for every input), inputs stamped too far apart
    (:func:`stale_wait_hint`); empty when the inputs look fine."""
    if stats.messages == 0:
        return ["the bag holds no messages (its topics are there, without a message)"]
    counters = stats.counters
    hints = rejection_lines(stats, spec, expected)
    silent = [f"{topic} ({sensor})" for sensor, topic in spec.topics.items() if not counters.get(f"received.{sensor}")]
    if silent:
        hints.append(f"no message on {', '.join(silent)} (an update waits for every input of the policy)")
    if counters.get(f"rejected.{R.INFERENCE_ERROR}"):
        hints.append(f"{counters[f'rejected.{R.INFERENCE_ERROR}']} updates failed in the policy's backend")
    stale = stale_wait_hint(counters, spec)
    if stale:
        hints.append(stale)
    return hints
