"""The policy node's parameters: one table (name -> default, description) and their validation.

Pure Python (no rclpy) so the checks are unit-tested directly; ``policy_node`` declares every entry of
``POLICY_NODE_PARAMETERS`` and calls :func:`validate_policy_node_parameters` at ``configure``, which reports
every problem at once, naming the parameter, the value and what is allowed; a change at run time
(``ros2 param set``) is checked by the same rules (:func:`policy_node_parameter_problems`).
"""

from __future__ import annotations

import array
import math
import numbers
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from liquid_control.shown import shown

# world id -> the policy node's parameter file (config/) and the shipped policy (policies/) it runs by default
WORLD_POLICIES = {
    "LiquidRover-v0": ("rover_policy.yaml", "cfc_ncp_rover.pt"),
    "LiquidBalance-v0": ("balance_policy.yaml", "cfc_balancer.pt"),
    "LiquidBalanceNav-v0": ("balance_nav_policy.yaml", "cfc_balance_nav.pt"),
}

# The wheel joints in the order of the worlds' encoders (sim_node's JointState names): the order policies read
WHEEL_JOINT_NAMES = ("wheel_left", "wheel_right")

# Episode seeds (episode k of a run: seed + k) are below this in every tool: the worlds take any integer >= 0
# (gymnasium seeds a numpy SeedSequence), and `liquid-control eval --episode-seed-base` takes seeds below 2**32, so
# an episode of sim_node or `liquid-control sim` is one eval can run again
EPISODE_SEED_LIMIT = 2**32

COMMAND_TYPES = ("twist", "twist_stamped", "float64_multi_array")
PUBLISH_MODES = ("per_update", "fixed_rate")
BACKENDS = ("auto", "torch", "onnx")
RELIABILITIES = ("best_effort", "reliable")

POLICY_NODE_PARAMETERS: dict[str, tuple[object, str]] = {
    "policy": (
        "",
        "policy file (.pt checkpoint or exported .onnx); relative paths are looked up in share/liquid_control/policies",
    ),
    "backend": ("auto", "auto | torch | onnx (auto: the .onnx next to the .pt if exported from it, else torch)"),
    "autostart": (False, "configure and activate on start (without a lifecycle manager)"),
    "camera_topic": ("camera/image_raw", "sensor_msgs/Image input (when the policy has a camera)"),
    "imu_topic": ("imu/data", "sensor_msgs/Imu input: [gyro xyz, accel xyz]"),
    "wheels_topic": ("joint_states", "sensor_msgs/JointState input: wheel velocities (balancer)"),
    "joint_names": (
        list(WHEEL_JOINT_NAMES),
        "JointState names of the wheel velocities, in the order the policy reads them (the simulated world's); "
        "a message with names is read by name (one missing a needed name is rejected), one without by position",
    ),
    "target_topic": ("target_velocity", "geometry_msgs/Twist input: commanded [linear.x, angular.z] (balancer)"),
    "command_topic": ("cmd_vel", "output topic"),
    "command_type": ("twist", "twist | twist_stamped | float64_multi_array (e.g. wheel torques)"),
    "command_frame_id": ("base_link", "frame_id of twist_stamped commands"),
    "publish_mode": (
        "per_update",
        "per_update: one command per message that updates the state (where one releases several updates from the "
        "reordering buffer, reorder_lag_s > 0, the latest's); fixed_rate: at control_rate_hz",
    ),
    "control_rate_hz": (30.0, "command rate in fixed_rate mode"),
    "action_scale": ([1.0], "command = action * action_scale (one value per action element, or one for all)"),
    "max_command": ([1.0], "|command| limit per element (or one for all), robot units"),
    "max_command_rate": (
        [math.inf],  # no limit unless asked: a finite one, 1e9 too, holds the command at one clock reading
        "limit on the change of each command element per second (or one for all; .inf, the default: no limit)",
    ),
    "watchdog_timeout_s": (0.5, "a sensor silent for longer than this (node clock) => stop command + warning"),
    "max_gap_s": (1.0, "update gap beyond which the liquid state is reset"),
    "max_backward_jump_s": (0.5, "a stamp this much older than the previous one is a clock reset (state reset)"),
    "max_future_stamp_s": (1.0, "stamps further ahead of the node clock are rejected"),
    "first_update_dt": (0.0, "dt of the first update after a (re)start (the worlds use 0)"),
    "reorder_lag_s": (
        -1.0,
        "lag of the buffer that releases messages in stamp order across sensors; negative: the policy's "
        "(observation.reorder_lag_s, what it was trained with)",
    ),
    "camera_qos_depth": (1, "camera subscription depth (latest frame wins)"),
    "imu_qos_depth": (200, "IMU subscription depth (deep enough for 200 Hz bursts)"),
    "sensor_qos_reliability": ("best_effort", "best_effort (sensor data QoS) | reliable"),
    "command_qos_depth": (10, "command publisher depth (reliable)"),
    "diagnostics_period_s": (1.0, "period of /diagnostics messages"),
    "log_throttle_s": (2.0, "minimum seconds between repeated warnings of one kind"),
}


# Upper bounds: a value beyond them is a typo or an attack, and fails later where nothing names the parameter
# (a timer of 1e300 s overflows rclpy's nanoseconds at activate; a queue depth of 1e11 fails in the middleware).
MAX_SECONDS = 86400.0  # durations and periods: one day
MAX_RATE_HZ = 10000.0
MAX_QOS_DEPTH = 100000
# Fast DDS keeps at most this many samples a reader whatever depth it is asked for (its default resource limits,
# max_samples): a subscription of depth 10000 took 5000 of 6000 published before it took any
DDS_READER_SAMPLES = 5000


def qos_depth_problem(depth) -> str | None:
    """Why ``depth`` is no queue depth a subscription or publisher can take (the nodes' ``*_qos_depth``, the
    recorder's ``qos_depth``, replay's ``--qos-depth``), or None."""
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_QOS_DEPTH:
        return f"must be an integer in [1, {MAX_QOS_DEPTH}], got {shown(depth)}"
    return None


def kept_by_dds(depth: int, environ=None) -> int:
    """What a keep-last subscription of ``depth`` keeps: with Fast DDS (ROS's default middleware) and its default
    resource limits at most DDS_READER_SAMPLES; another middleware's (``RMW_IMPLEMENTATION``) all of it."""
    rmw = (os.environ if environ is None else environ).get("RMW_IMPLEMENTATION", "")
    fast_dds = rmw in ("", "rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")
    return min(int(depth), DDS_READER_SAMPLES) if fast_dds else int(depth)


MAX_THROTTLE_S = 3600.0
SECONDS_PARAMETERS = (
    "watchdog_timeout_s",
    "max_gap_s",
    "max_backward_jump_s",
    "max_future_stamp_s",
    "diagnostics_period_s",
)
# Lower bounds of the periods the node runs timers at (the watchdog checks every quarter of its timeout)
MIN_TIMER_S = 0.01
TIMER_PARAMETERS = ("watchdog_timeout_s", "diagnostics_period_s")
TOPIC_PARAMETERS = ("camera_topic", "imu_topic", "wheels_topic", "target_topic", "command_topic")
# A ROS 2 topic name (before expansion): tokens of letters, digits and underscores (not starting with a digit)
# or {substitutions}, separated by single slashes; optionally absolute ('/') or private ('~' or '~/').
_TOKEN = r"(?:[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\})+"
_TOPIC = re.compile(rf"(?:~|~/{_TOKEN}(?:/{_TOKEN})*|/?{_TOKEN}(?:/{_TOKEN})*)")


# The parameter names of every node of this package, by executable. Each table lives with its node (policy_node's
# above, SIM_NODE_PARAMETERS, RECORDER_PARAMETERS, MUX_PARAMETERS in liquid_control/ros; a test keeps these in step):
# a parameter file's section shared by every node (``/**:``) may hold any of them, which no node warns of.
PACKAGE_PARAMETER_NAMES: dict[str, tuple[str, ...]] = {
    "policy_node": tuple(POLICY_NODE_PARAMETERS),
    "sim_node": (
        *("world", "shift", "seed", "episodes", "exit_when_done", "status_wait_s", "status_listener"),
        *("real_time_factor", "lockstep", "lockstep_timeout_s", "render_size", "render_width", "policy_inputs"),
        *("policy_update_on", "policy_reorder_lag_s", "time_limit", "camera_topic", "imu_topic", "wheels_topic"),
        *("target_topic", "target_rate_hz", "command_topic", "command_type", "command_timeout_s", "odom_topic"),
        *("odom_rate_hz", "status_topic", "run_id", "wait_for_subscribers_s", "policy_reset_service"),
        *("frame_prefix", "camera_info_topic", "robot_description_topic", "publish_tf", "record_bag"),
    ),
    "bag_recorder": (
        *("output", "topics", "duration_s", "discovery_period_s", "qos_depth", "compression", "max_bag_size"),
        *("max_bag_duration", "repeat_latched"),
    ),
    "takeover_mux": (
        *("policy_topic", "operator_topic", "output_topic", "command_type", "operator_command_type"),
        *("command_frame_id", "action_scale", "takeover_threshold", "takeover_hold_s", "operator_share", "seed"),
        *("operator_timeout_s", "policy_timeout_s", "watch_period_s"),
    ),
}


def declare_node_parameters(node, table: dict, dynamic_typing: bool = True, argv=None) -> None:
    """Declare ``table``'s parameters (name -> (default, description)) on ``node`` and warn about overrides (a
    ``-p`` on the command line, a parameter file) that name none of them: ROS ignores those silently, so a
    typo would leave the default in force without a word. Not warned: another node's parameter of this package
    that only a section shared by every node (``/**:``) of a ``--params-file`` of ``argv`` (the process's
    arguments, rclpy's default) gives it: such a section is for all of them by design."""
    from rcl_interfaces.msg import ParameterDescriptor

    for name, (default, description) in table.items():
        node.declare_parameter(
            name, default, ParameterDescriptor(description=description, dynamic_typing=dynamic_typing)
        )
    overrides = getattr(node, "_parameter_overrides", {})  # rclpy keeps them there; no public accessor
    unknown = sorted(n for n in overrides if not node.has_parameter(n) and not n.startswith("qos_overrides."))
    if not unknown:
        return
    owners = {n: [node_name for node_name, names in PACKAGE_PARAMETER_NAMES.items() if n in names] for n in unknown}
    shared = shared_section_parameters(node.get_fully_qualified_name(), sys.argv if argv is None else argv)
    unknown = [n for n in unknown if not (owners[n] and n in shared)]
    if unknown:
        named = [f"{n} ({' and '.join(owners[n])}'s)" if owners[n] else n for n in unknown]
        node.get_logger().warning(
            f"ignoring unknown parameter(s) {', '.join(named)}: {node.get_name()}'s are {', '.join(table)}"
        )


def shared_section_parameters(node: str, argv) -> set[str]:
    """The parameter names the ``--params-file`` files of ``argv`` give ``node`` (fully qualified) only in sections
    shared by every node (a wildcard last name: ``/**``, ``/*``) of a file that also names a node (a fleet's file),
    neither in one naming the node nor by ``-p``. A file of wildcard sections only is the node's own: launch_ros
    writes a ``Node(parameters=[{...}])`` dict as one ``/**:`` section, where another node's name is a slip."""
    from liquid_control.yaml_numbers import load_yaml

    files, given = ros_parameter_arguments(argv)
    shared, own = set(), set()
    for path in files:
        try:
            raw = load_yaml(Path(path).read_text(encoding="utf-8"))
        except Exception:  # rcl read it already, or refused it with its own message
            continue
        sections = [(s, p, "*" in last_name(s)) for s, p in parameter_sections(raw)]
        fleet = not all(wildcard for _, _, wildcard in sections)
        for section, parameters, wildcard in sections:
            if section_applies(section, node):
                (shared if wildcard and fleet else own).update(_flat_names(parameters))
    return shared - own - given


def ros_parameter_arguments(argv) -> tuple[list[str], set[str]]:
    """The ``--params-file`` paths and the names set by ``-p``/``--param`` among the ROS arguments of ``argv``
    (those after ``--ros-args``, up to ``--``)."""
    files, names, in_ros, argv = [], set(), False, list(argv or ())
    for arg, value in zip(argv, [*argv[1:], None]):
        if arg in ("--ros-args", "--"):
            in_ros = arg == "--ros-args"
        elif in_ros and arg == "--params-file" and value is not None:
            files.append(value)
        elif in_ros and arg in ("-p", "--param") and value and ":=" in value:
            names.add(value.split(":=", 1)[0])
    return files, names


def parameter_sections(raw, prefix: str = "") -> list[tuple[str, object]]:
    """(node name, its ``ros__parameters``) of each section of a parameter file: top-level keys, and ROS's nested
    namespace form (``robot1: policy_node: ros__parameters:`` is ``robot1/policy_node``)."""
    sections = []
    for key, value in (raw if isinstance(raw, dict) else {}).items():
        if isinstance(value, dict):
            name = f"{prefix}/{key}" if prefix else str(key)
            if "ros__parameters" in value:
                sections.append((name, value["ros__parameters"]))
            else:
                sections += parameter_sections(value, name)
    return sections


def last_name(section: str) -> str:
    """The node name a parameter file's section ends in (``/**/policy_node`` -> ``policy_node``, ``/**`` -> ``**``)."""
    return section.strip("/").rsplit("/", 1)[-1]


def _flat_names(parameters, prefix: str = "") -> list[str]:
    """The parameter names of a ``ros__parameters`` mapping, nested ones joined by '.' (as ROS names them; none of
    a section whose parameters are no mapping, which rcl refuses)."""
    if not isinstance(parameters, dict):
        return []
    names = []
    for key, value in parameters.items():
        name = f"{prefix}{key}"
        names += _flat_names(value, f"{name}.") if isinstance(value, dict) else [name]
    return names


def topic_name_problem(name) -> str | None:
    """Why ``name`` is not a valid ROS 2 topic name (None when it is)."""
    if not isinstance(name, str) or not name:
        return f"must be a non-empty topic name, got {shown(name)}"
    if _TOPIC.fullmatch(name) is None:
        return (
            f"{shown(name, 200)} is not a valid ROS topic name (letters, digits, underscores and single '/' between "
            f"tokens; no spaces, no token starting with a digit, no trailing '/')"
        )
    return None


_FRAME_PREFIX = re.compile(r"[A-Za-z0-9_]+(?:/[A-Za-z0-9_]+)*/?")


def frame_prefix_problem(prefix) -> str | None:
    """Why ``prefix`` does not make valid TF frame ids when put before a frame name (None when it does; "" is none)."""
    if not isinstance(prefix, str) or (prefix and _FRAME_PREFIX.fullmatch(prefix) is None):
        return (
            f"{prefix!r} does not make valid TF frame ids (letters, digits and underscores, single '/' between "
            f"them, e.g. 'robot1/' or 'robot1_'; no spaces, no leading '/')"
        )
    return None


def section_applies(section: str, node: str) -> bool:
    """Whether ROS 2 gives a parameter file's section ``section`` to the node ``node`` (fully qualified, e.g.
    ``/policy_node``): ``/**`` stands for any number of namespace tokens, ``/*`` for exactly one, a name without a
    leading slash is absolute."""
    pattern = ""
    for token in section.strip("/").split("/"):
        pattern += {"**": r"(?:/[^/]+)*", "*": r"/[^/]+"}.get(token, "/" + re.escape(token))
    return re.fullmatch(pattern, node) is not None


def frame_id_problem(frame_id) -> str | None:
    """Why ``frame_id`` is no frame id a message may carry (None when it is): tf2 refuses a leading '/', and a
    space or control character is a typo (a trailing newline from a file). Empty is one: the bases that take
    stamped commands read no frame from them (diff_drive_controller, twist_mux; teleop's stamped default)."""
    if not isinstance(frame_id, str):
        return f"must be a TF frame id (a string, e.g. 'base_link'), got {shown(frame_id)}"
    if frame_id.startswith("/") or any(c.isspace() or not c.isprintable() for c in frame_id):
        return f"{shown(frame_id, 200)} is not a valid TF frame id (no leading '/', no spaces or control characters)"
    return None


class ParameterError(ValueError):
    """Invalid node parameters; the message lists every problem."""


@dataclass(frozen=True)
class PolicyNodeSettings:
    """The policy node's validated parameters, read as attributes (``settings.command_topic``)."""

    values: dict

    def __getattr__(self, name):
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


def domain_id_problem(domain_id: int | None, environ=None) -> str | None:
    """What is wrong with the DDS domain a command joins (``--domain-id``, else the inherited ROS_DOMAIN_ID), or
    None: outside 0..232 rclpy raises a bare ValueError or Fast-DDS kills the process."""
    if domain_id is not None:
        if not 0 <= domain_id <= 232:
            return f"--domain-id must be between 0 and 232 (0-101 on Linux by default), got {domain_id}"
        return None
    inherited = (os.environ if environ is None else environ).get("ROS_DOMAIN_ID") or "0"
    if not (inherited.isdigit() and int(inherited) <= 232):
        return f"ROS_DOMAIN_ID must be a number between 0 and 232, got {shown(inherited)} (or give --domain-id)"
    return None


def discovery_problem(environ=None) -> str | None:
    """What stops nodes of different processes from finding each other in the discovery settings a shell carries
    (ROS 2's ``ROS_AUTOMATIC_DISCOVERY_RANGE``), or None. With ``OFF`` no node discovers another, even on this
    machine (rcl ignores ROS_STATIC_PEERS then): `liquid-control sim` waited out the sim's 30 s for a policy node
    and its timeout, and said only that the time ran out; `record` of topics, `view` and `replay` saw none of the
    graph's nodes and said nothing of why. rcl reads the value as written: ``off`` is not OFF (it means
    LOCALHOST)."""
    value = (os.environ if environ is None else environ).get("ROS_AUTOMATIC_DISCOVERY_RANGE", "")
    if value == "OFF":
        return (
            "ROS_AUTOMATIC_DISCOVERY_RANGE=OFF (from the environment): nodes of different processes cannot discover "
            "each other, even on this machine; unset it or set it to LOCALHOST for this command"
        )
    return None


def parameter_value(value):
    """A parameter value as plain Python: a list for every array. rclpy gives the arrays of a set_parameters
    call (``ros2 param set``, the parameter service) as ``array.array`` (``array('d', [0.5])``), those of a
    parameter file or an in-process ``Parameter`` as lists; the nodes read and check one form."""
    if isinstance(value, (list, tuple, array.array)):
        return [parameter_value(v) for v in value]
    return value


def same_parameter_value(a, b) -> bool:
    """Whether setting ``a`` where ``b`` is held changes nothing, the nodes' one rule: arrays compare as lists
    (:func:`parameter_value`), numbers by value (``5`` is ``5.0``), a boolean only to a boolean (``1`` is not
    ``true``), anything else by type and value."""
    a, b = parameter_value(a), parameter_value(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_parameter_value(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, numbers.Real) and isinstance(b, numbers.Real):
        return a == b
    return type(a) is type(b) and a == b


def refuse_startup_parameter_changes(node, parameters, advice: str):
    """A node's answer to a set_parameters call (``ros2 param set``) when it reads its parameters at startup: a
    ``SetParametersResult`` refusing every value that would change (:func:`same_parameter_value`), named, with
    ``advice`` (how to apply it); setting the value in use is fine. A value accepted and ignored would tell the
    robot's user something that is not so."""
    from rcl_interfaces.msg import SetParametersResult

    changed = [
        f"{q.name}={parameter_value(q.value)!r}"
        for q in parameters
        if node.has_parameter(q.name) and not same_parameter_value(q.value, node.get_parameter(q.name).value)
    ]
    if not changed:
        return SetParametersResult(successful=True)
    return SetParametersResult(successful=False, reason=f"{', '.join(changed)}: read at startup; {advice}")


def autostart_problem(value) -> str | None:
    """Why ``autostart`` is not usable (None when it is): a boolean only; a string such as ``'false'`` (from
    ``-p "autostart:='false'"``) is true to Python and started the robot."""
    if isinstance(value, bool):
        return None
    return f"autostart: must be true or false (a boolean), got {shown(value)}"


def per_element(name, value, size, problems, positive: bool, unlimited: bool = False):
    """One value per action (a single one for all), finite and > 0 (``positive``) or non-zero (action_scale: a
    zero would pin that command to 0 whatever the policy says; training from bags refuses it too); with
    ``unlimited`` also inf (``.inf`` in a parameter file: no limit). Without the action ``size`` (None) only the
    values are checked."""
    items = parameter_value(value) if isinstance(value, (list, tuple, array.array)) else [value]
    if (size is None and not items) or any(
        isinstance(v, (bool, str)) or not isinstance(v, (int, float)) for v in items
    ):
        problems.append(f"{name}: must be a number or a list of numbers, got {shown(value)}")
        return None
    values = [float(v) for v in items]
    if size is None:
        size = len(values)
    if len(values) == 1:
        values = values * size
    if len(values) != size:
        problems.append(f"{name}: needs 1 or {size} values (the policy's action size), got {len(values)}")
        return None
    if any(not (math.isfinite(v) or (unlimited and v == math.inf)) for v in values) or any(
        v <= 0 if positive else v == 0 for v in values
    ):
        allowed = "> 0 (.inf: no limit)" if unlimited else f"finite and {'> 0' if positive else 'non-zero'}"
        problems.append(f"{name}: values must be {allowed}, got {values}")
        return None
    return values


def joint_names_problem(names, wheels: int | None = None) -> str | None:
    """Why ``names`` cannot be ``joint_names`` (``wheels``: how many velocities the policy reads), or None."""
    if (
        not isinstance(names, (list, tuple))
        or not names
        or not all(isinstance(n, str) and n for n in names)
        or len(set(names)) != len(names)
    ):
        return f"joint_names: must be a list of distinct, non-empty joint names, got {shown(names)}"
    if wheels is not None and len(names) != wheels:
        return f"joint_names: the policy reads {wheels} wheel velocities, {list(names)} names {len(names)} joints"
    return None


def validate_policy_node_parameters(
    values: dict, action_size: int | None = None, action_kind: str | None = None
) -> PolicyNodeSettings:
    """Check the parameter values; with the policy's action size/kind also check the command settings (and
    expand the per-element ones to the action size)."""
    values = {k: parameter_value(v) for k, v in values.items()}  # a set_parameters call's arrays: lists
    out = dict(values)
    problems = policy_node_parameter_problems(values, action_size, action_kind, out)
    if problems:
        raise ParameterError("invalid parameters:\n  - " + "\n  - ".join(problems))
    return PolicyNodeSettings(out)


def policy_node_parameter_problems(
    values: dict, action_size: int | None = None, action_kind: str | None = None, out: dict | None = None
) -> list[str]:
    """Every problem of the parameter values, one line each starting with the parameter's name and a colon
    (the names, comma-separated, for values that must agree; see :func:`validate_policy_node_parameters`);
    ``out`` receives the per-element values expanded to ``action_size``."""
    problems = []
    out = {} if out is None else out
    values = {k: parameter_value(v) for k, v in values.items()}  # array('d', ...) from ros2 param set: a list

    def choice(name, choices):
        if values[name] not in choices:
            problems.append(f"{name}: {shown(values[name])} is not one of {', '.join(choices)}")

    def positive(name, allow_zero=False, upper=None):
        v = values[name]
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or v < 0 or (v == 0 and not allow_zero):
            problems.append(
                f"{name}: must be a {'non-negative' if allow_zero else 'positive'} finite number, got {shown(v)}"
            )
        elif upper is not None and v > upper:
            problems.append(f"{name}: must be at most {upper:g}, got {shown(v)}")

    if not isinstance(values["policy"], str):
        problems.append(f"policy: must be a file path (a string), got {shown(values['policy'])}")
    elif not values["policy"]:
        problems.append("policy: no policy file given (set the 'policy' parameter)")
    if autostart_problem(values["autostart"]):
        problems.append(autostart_problem(values["autostart"]))
    choice("backend", BACKENDS)
    choice("command_type", COMMAND_TYPES)
    choice("publish_mode", PUBLISH_MODES)
    choice("sensor_qos_reliability", RELIABILITIES)
    positive("control_rate_hz", upper=MAX_RATE_HZ)
    if isinstance(values["control_rate_hz"], (int, float)) and 0 < values["control_rate_hz"] < 1 / MAX_SECONDS:
        problems.append(f"control_rate_hz: must be at least {1 / MAX_SECONDS:.3g} (one per day)")
    for name in SECONDS_PARAMETERS:
        positive(name, upper=MAX_SECONDS)
    for name in TIMER_PARAMETERS:  # a timer of a microsecond spun the node at full CPU, stops flooding the base
        v = values[name]
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < MIN_TIMER_S:
            problems.append(
                f"{name}: must be at least {MIN_TIMER_S:g} s (a timer that short busies the node; a watchdog that "
                f"short stops the robot between any sensor's messages), got {shown(v)}"
            )
    positive("first_update_dt", allow_zero=True, upper=MAX_SECONDS)
    positive("log_throttle_s", allow_zero=True, upper=MAX_THROTTLE_S)
    lag = values["reorder_lag_s"]
    if isinstance(lag, bool) or not isinstance(lag, (int, float)) or not math.isfinite(lag) or lag > MAX_SECONDS:
        problems.append(
            f"reorder_lag_s: must be a finite number of seconds up to {MAX_SECONDS:g} (negative: the policy's), "
            f"got {shown(lag)}"
        )
    problems += _related_seconds_problems(values)
    for name in ("camera_qos_depth", "imu_qos_depth", "command_qos_depth"):
        if problem := qos_depth_problem(values[name]):
            problems.append(f"{name}: {problem}")
    for name in TOPIC_PARAMETERS:
        problem = topic_name_problem(values[name])
        if problem:
            problems.append(f"{name}: {problem}")
    problem = joint_names_problem(values["joint_names"])
    if problem:
        problems.append(problem)
    problem = frame_id_problem(values["command_frame_id"])
    if problem:
        problems.append(f"command_frame_id: {problem}")
    for name in ("action_scale", "max_command", "max_command_rate"):  # their values, also before the policy loads
        # a rate limit may be off (inf, the default): any finite rate, 1e9 too, holds a command whose node-clock time
        # is the one before's (use_sim_time: two updates handled between two /clock messages), so none is "off"
        unlimited = name == "max_command_rate"
        expanded = per_element(name, values[name], action_size, problems, name != "action_scale", unlimited)
        if action_size is not None:
            out[name] = expanded
    if action_size is not None:
        problem = command_type_problem(values["command_type"], action_size, action_kind)
        if problem:
            problems.append(problem)
    return problems


def _related_seconds_problems(values: dict) -> list[str]:
    """The limits that must agree with ``max_gap_s`` (each valid alone): a problem line starts with both names.
    RunnerLimits refused them only at configure, after the policy had loaded, and ``ros2 param set`` took them."""

    def seconds(name):
        v = values[name]
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None

    gap, lag, first = seconds("max_gap_s"), seconds("reorder_lag_s"), seconds("first_update_dt")
    if gap is None or gap <= 0:
        return []
    problems = []
    if lag is not None and lag >= gap:  # a negative lag is the policy's: checked when it loads (PolicyRunner)
        problems.append(
            f"reorder_lag_s, max_gap_s: reorder_lag_s ({lag:g} s) must be below max_gap_s ({gap:g} s): every "
            "update would wait out a gap that resets the state"
        )
    if first is not None and first > gap:
        problems.append(
            f"first_update_dt, max_gap_s: first_update_dt ({first:g} s) must be at most max_gap_s ({gap:g} s), "
            "the longest dt an update integrates"
        )
    return problems


def command_type_problem(command_type: str, action_size: int, action_kind: str | None) -> str | None:
    """Why policy_node cannot publish a policy of ``action_size`` actions of ``action_kind`` as ``command_type``
    (a Twist carries 2 [linear, angular] commands only), else None."""
    if command_type in ("twist", "twist_stamped") and (action_size != 2 or action_kind not in (None, "twist")):
        return (
            f"command_type: {command_type!r} needs a twist policy with 2 actions [linear, angular], this policy has "
            f"{action_size} {action_kind!r} actions; use float64_multi_array"
        )
    return None


def camera_info_topic(camera_topic: str) -> str:
    """The CameraInfo topic beside an image topic (image_transport's convention: ``<ns>/camera_info`` next to
    ``<ns>/image_raw``), the one name sim_node publishes and policy_node subscribes to. Given the image topic as its
    publisher or subscription resolved it (remappings applied), so that remapping the image moves the camera_info
    with it, as image_transport does."""
    return f"{camera_topic.rsplit('/', 1)[0]}/camera_info" if "/" in camera_topic else "camera_info"
