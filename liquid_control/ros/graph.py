"""The ROS graph of a closed-loop simulation, described once; used by launch/sim.launch.py and `liquid-control sim`.

``sim_graph(...)`` returns the node list (executable, name, parameter files, parameter overrides,
remappings). ``launch/sim.launch.py`` turns it into ``launch_ros.actions.Node`` actions; ``liquid-control
sim`` (this module's ``run``) starts the same nodes as separate processes (``python -m
liquid_control.ros.entry <executable>``, so no install is needed), listens to the episode status topic and
prints each outcome.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from liquid_control.conventions.params import (
    EPISODE_SEED_LIMIT,
    POLICY_NODE_PARAMETERS,
    WORLD_POLICIES,
    discovery_problem,
    domain_id_problem,
)
from liquid_control.json_text import load_json
from liquid_control.paths import config_dir, output_folder_problem, resolve_policy_file, user_path
from liquid_control.processes import parent_death_signal
from liquid_control.ros.entry import NODE_MODULES, unwritable_log_dir
from liquid_control.ros.executable import named_counts
from liquid_control.shown import shown

PACKAGE = "liquid_control"
# world id -> sim_node parameters its shipped policy needs (the camera at the policy's image size)
WORLD_SIM_PARAMETERS = {"LiquidBalanceNav-v0": {"render_size": 32, "render_width": 0}}
STATUS_TOPIC = "episode_status"

# Exit status of `liquid-control sim` (and `./run.sh`); also in docs/ros.md and `liquid-control sim --help`.
EXIT_OK = 0  # every episode ran to its end (whatever its outcome: the summary says how many succeeded)
EXIT_NODE_FAILED = 1  # a node failed or was killed; the episode it interrupted is reported as failed, with why
EXIT_USAGE = 2  # invalid arguments (argparse, an unknown world, a bad parameter or policy file), before any node starts
EXIT_TIMEOUT = 3  # the wall-clock --timeout expired before every episode ended
EXIT_DOMAIN_SHARED = 4  # another graph with nodes of the same names runs on the ROS domain: both would mix messages
EXIT_SIGNAL_BASE = 128  # + signal number: stopped by SIGINT (130) or SIGTERM (143); every node stopped first
EXIT_STATUS_HELP = (
    f"exit status: {EXIT_OK} every episode ran to its end (success or not); {EXIT_NODE_FAILED} a node failed or "
    f"was killed (the episode it interrupted is reported as failed, with the cause); {EXIT_USAGE} invalid "
    f"arguments; {EXIT_TIMEOUT} --timeout expired first; {EXIT_DOMAIN_SHARED} another graph runs on the same "
    f"ROS domain as this run starts (stopped: their messages would mix; use --domain-id); "
    f"{EXIT_SIGNAL_BASE + signal.SIGINT} / {EXIT_SIGNAL_BASE + signal.SIGTERM} interrupted by SIGINT / SIGTERM "
    "(all nodes stopped, summary printed)"
)
STOP_GRACE_S = 3.0  # a node still running this long after SIGINT is killed
MONITOR_NODE = "liquid_control_sim_monitor"  # the status listener of `liquid-control sim`
GRAPH_CHECK_PERIOD_S = 0.5  # how often `liquid-control sim` looks for another graph on its domain
NEWCOMER_WINDOW_S = 5.0  # another graph found this soon after our listener started: we are the newcomer, and stop


def parameter_argument(key: str, value) -> str:
    """``key:=value`` for ``--ros-args -p`` (the value in YAML, as ROS parses it)."""
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return f"{key}:={text.removesuffix('...').strip()}"


@dataclass(frozen=True)
class NodeDescription:
    """One node of the graph, in the terms of launch_ros.actions.Node."""

    executable: str  # console script (setup.py entry point), installed to lib/liquid_control
    name: str
    parameter_files: tuple[str, ...]  # absolute paths
    parameters: dict = field(default_factory=dict)  # overrides, applied after the files
    remappings: tuple[tuple[str, str], ...] = ()
    lifecycle: bool = False  # a managed node (launch_ros.actions.LifecycleNode)

    @property
    def module(self) -> str:
        """The python module whose ``main()`` the executable runs (``entry.NODE_MODULES``)."""
        return NODE_MODULES[self.executable]

    def command(self, python: str = sys.executable) -> list[str]:
        """Argv that starts this node as its own process, with the same parameters as the launch file."""
        argv = [python, "-m", "liquid_control.ros.entry", self.executable, "--ros-args", "-r", f"__node:={self.name}"]
        for path in self.parameter_files:
            argv += ["--params-file", path]
        for key, value in self.parameters.items():
            argv += ["-p", parameter_argument(key, value)]
        for src, dst in self.remappings:
            argv += ["-r", f"{src}:={dst}"]
        return argv


def _file_parameters(path: Path, node: str) -> dict:
    """The parameters ``path`` gives the node ``/<node>`` (``bags.stream.node_file_parameters``: the sections
    ROS 2 gives it, a later one overriding an earlier one), or a ValueError naming the file."""
    from liquid_control.bags.stream import node_file_parameters

    return node_file_parameters(path, node, "liquid-control sim")


def _policy_parameters(path: Path) -> dict:
    """policy_node's parameters from ``path`` over the node's defaults."""
    return {name: default for name, (default, _) in POLICY_NODE_PARAMETERS.items()} | _file_parameters(
        path, "policy_node"
    )


def taken_episode_bags(folder: str, seed: int, episodes: int) -> list[str]:
    """The bags ``episode_<seed + k>`` (k < episodes; any k >= 0 with ``episodes`` 0, until stopped) that already
    exist in ``folder`` (sim_node's ``record_bag``; a bag is never overwritten), in episode order."""
    from liquid_control.bags.recording import episode_bag_name, existing_episode_seeds

    taken = [n for n in existing_episode_seeds(folder) if seed <= n and (episodes == 0 or n < seed + episodes)]
    return [episode_bag_name(n) for n in sorted(taken)]


def sim_graph(
    world: str = "LiquidRover-v0",
    policy: str = "",
    shift: str = "",
    use_sim_time: bool = False,
    real_time_factor: float = 1.0,
    seed: int = 0,
    episodes: int = 1,
    publish_mode: str = "",
    control_rate_hz: float = 0.0,
    backend: str = "",
    policy_params_file: str = "",
    sim_params_file: str = "",
    lockstep: bool = False,
    record_bag: str = "",
) -> list[NodeDescription]:
    """sim_node + policy_node for ``world``; empty/zero arguments keep the parameter files' values.

    ``lockstep`` (implies ``use_sim_time``): the simulation waits for the command after each update, the
    closed loop of training without compute latency. A ``real_time_factor`` other than 1 implies ``use_sim_time``
    too (stamps in wall time would not match the sim's pace; sim_node refuses it)."""
    use_sim_time = use_sim_time or lockstep or real_time_factor != 1.0
    if world not in WORLD_POLICIES:
        raise ValueError(f"unknown world {world!r}; choose from {', '.join(WORLD_POLICIES)}")
    policy_file, default_policy = WORLD_POLICIES[world]
    # ~ expanded: no shell expands it in a launch argument (params_file:=~/robot.yaml)
    policy_yaml = Path(user_path(policy_params_file)) if policy_params_file else config_dir() / policy_file
    sim_yaml = Path(user_path(sim_params_file)) if sim_params_file else config_dir() / "sim.yaml"
    for path in (policy_yaml, sim_yaml):
        if not path.is_file():
            raise FileNotFoundError(f"parameter file {path} not found")
    _file_parameters(sim_yaml, "sim_node")  # or a ValueError naming it, before any node starts
    policy_params = _policy_parameters(policy_yaml)
    common = {"use_sim_time": bool(use_sim_time)}
    # checked here, before any node starts: a missing policy file or a bad shift is a usage error (exit 2)
    policy = policy or policy_params.get("policy") or default_policy
    # FileNotFoundError naming where it looked (policy_node resolves it the same way)
    policy_path = resolve_policy_file(policy)
    # a file that is no policy (README.md, a parameter file) is refused here, naming why, as the node would fail
    policy_world_settings = policy_world_parameters(policy_path, refuse=True)
    if shift:
        from sim_envs import world_class
        from sim_envs.shifts import shift_for_world

        parsed = shift_for_world(shift, world, world_class(world).sensor_names)  # or a ValueError naming it
        inputs = policy_world_settings.get("policy_inputs")
        unread = parsed.unread_problem(Path(policy_path).name, inputs.split(",")) if inputs else None
        if unread and not record_bag:  # the run would be an in-distribution one under the shift's name
            raise ValueError(f"--shift {shift}: {unread}")
        if unread:  # recording it still records the shifted sensor (data for a policy that reads it)
            print(f"warning: --shift {shift}: {unread}; the bags record it", file=sys.stderr, flush=True)
    policy_publish_mode = publish_mode or policy_params.get("publish_mode", "per_update")
    mode_source = "--publish-mode" if publish_mode else f"publish_mode in {policy_yaml}"
    check_policy_options(policy_path, world, backend, control_rate_hz, policy_publish_mode, lockstep, mode_source)
    policy_overrides = dict(common, autostart=True, policy=policy)
    if publish_mode:
        policy_overrides["publish_mode"] = publish_mode
    if control_rate_hz:
        policy_overrides["control_rate_hz"] = float(control_rate_hz)
    if backend:
        policy_overrides["backend"] = backend
    sim_overrides = dict(
        common,
        # the world as evaluation makes it for the policy (policy.config.env_kwargs); the world's own
        # parameters where the policy gives none (render_size of a policy without a camera)
        **{**WORLD_SIM_PARAMETERS.get(world, {}), **policy_world_settings},
        world=world,
        shift=shift,
        seed=int(seed),
        episodes=int(episodes),
        real_time_factor=float(real_time_factor),
        lockstep=bool(lockstep),
        **({"record_bag": str(record_bag)} if record_bag else {}),
        # the sim listens where the policy commands, in the type it publishes
        command_topic=policy_params["command_topic"],
        command_type=policy_params["command_type"],
    )
    return [
        NodeDescription("sim_node", "sim_node", (str(sim_yaml),), sim_overrides),
        NodeDescription("policy_node", "policy_node", (str(policy_yaml),), policy_overrides, lifecycle=True),
    ]


def check_policy_options(
    policy: Path,
    world: str,
    backend: str,
    control_rate_hz: float,
    publish_mode: str,
    lockstep: bool = False,
    publish_mode_source: str = "--publish-mode",
) -> None:
    """The policy's world, backend and command rate against the graph's options (``liquid-control sim``'s and
    the launch file's names), or a ValueError saying what to change: the policy node would fail on them, or
    run a policy of another world in this one, or never read the rate, or (lockstep with fixed-rate commands)
    hold the world ``lockstep_timeout_s`` at many updates. ``publish_mode_source`` names where the
    publish mode came from (the option, or the policy parameter file)."""
    if lockstep and publish_mode == "fixed_rate":
        raise ValueError(
            f"--lockstep holds the world after each update until a command arrives, and {publish_mode_source} is "
            "fixed_rate: the policy node then commands on a timer of the sim clock, which in lockstep moves only "
            "after a command, so every update after which the timer does not fire waits sim_node's "
            "lockstep_timeout_s (2 s; the balancer at 200 Hz ran 6 s of sim time in 40 s); use --publish-mode "
            "per_update or leave out --lockstep (sim.launch.py: publish_mode:=per_update, lockstep:=false)"
        )
    if control_rate_hz and publish_mode != "fixed_rate":
        raise ValueError(
            f"--control-rate {control_rate_hz:g} is the command rate of --publish-mode fixed_rate, and the policy "
            f"node publishes {publish_mode} (one command per update): add --publish-mode fixed_rate (sim.launch.py: "
            "control_rate_hz:=, publish_mode:=fixed_rate)"
        )
    if backend == "torch" and policy.suffix == ".onnx":
        raise ValueError(
            f"--backend torch runs a .pt checkpoint; --policy {policy} is an ONNX model (--backend onnx; "
            "sim.launch.py: backend:=onnx)"
        )
    if backend == "onnx" and policy.suffix != ".onnx" and not policy.with_suffix(".onnx").is_file():
        raise ValueError(
            f"--backend onnx: there is no exported {policy.with_suffix('.onnx').name} next to --policy {policy} "
            f"(write one with `liquid-control export {shlex.quote(str(policy))}`; sim.launch.py: backend:=, policy:=)"
        )
    if backend == "onnx" and policy.suffix != ".onnx":  # the export the node runs, checked as it will be (an export
        from liquid_control.runtime.backends import BackendError, load_backend  # of older code or of another .pt)

        try:
            load_backend(policy, "onnx", warn=False).close()
        except BackendError as exc:
            raise ValueError(f"--backend onnx: {exc}") from None
    trained_for = policy_world(policy)
    if trained_for is not None and trained_for not in WORLD_POLICIES:  # a world of the user's own (module:Id)
        raise ValueError(
            f"--policy {policy}: trained for {trained_for}, and sim_node runs the package's worlds only "
            f"({', '.join(WORLD_POLICIES)}); evaluate it in its world with liquid-control eval (docs/worlds.md, "
            "'A world of your own')"
        )
    if trained_for is not None and trained_for != world:
        raise ValueError(
            f"--policy {policy}: trained for {trained_for}, but --world is {world} "
            f"(add --world {trained_for}, or give a policy of {world}; sim.launch.py: world:=, policy:=)"
        )


def policy_world_parameters(policy_file: Path, refuse: bool = False) -> dict:
    """sim_node's parameters that make its world the one evaluation runs the policy in (``env_kwargs`` of
    liquid_control.policy.config): ``policy_inputs`` (``camera,imu``: the world's first update waits for a message
    of each, as the policy node does), ``policy_update_on`` (the sensors whose messages update the policy: in
    lockstep the world waits for a command after those only), ``policy_reorder_lag_s`` and, for a camera policy,
    ``render_size`` and ``render_width`` (its image height, and its width where not square, else 0). Read
    from the policy file's config (an .onnx's metadata, without torch); {} when the file cannot be read (the
    policy node then says why), or with ``refuse`` a ValueError naming the file and why (not a policy file)."""
    from liquid_control.runtime.backends import (
        CAMERA,
        ONNX_CONFIG_KEY,
        ObservationSpec,
        OnnxBackend,
        metadata_json,
        missing_export_text,
        read_onnx_metadata,
    )

    try:
        if policy_file.suffix != ".onnx":
            try:
                from liquid_control.policy.checkpoint import read_config
            except ImportError:  # a robot without torch runs the .onnx export beside the .pt, as the node does
                if refuse and not policy_file.with_suffix(".onnx").is_file():  # the node's words
                    raise ValueError(missing_export_text(policy_file, "torch is not installed")) from None
                policy_file = policy_file.with_suffix(".onnx")
            else:  # only the export copied to the robot: the node runs it (backend auto or onnx)
                if not policy_file.is_file() and policy_file.with_suffix(".onnx").is_file():
                    policy_file = policy_file.with_suffix(".onnx")
        if policy_file.suffix == ".onnx":
            config = metadata_json(policy_file, read_onnx_metadata(policy_file), ONNX_CONFIG_KEY)
            if refuse:  # the node's own checks (an export of older code, another format): before, the graph started
                OnnxBackend(policy_file).close()  # and the node's refusal came three times, exit 1
        else:
            config = read_config(policy_file)
        spec = ObservationSpec.from_config(config)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:  # PolicyLoadError: a RuntimeError
        if refuse:
            why = str(exc)
            raise ValueError(why if str(policy_file) in why else f"{policy_file}: {why}") from None
        return {}
    parameters = {
        "policy_inputs": ",".join(spec.sensors),
        "policy_update_on": ",".join(spec.update_on),
        "policy_reorder_lag_s": float(spec.reorder_lag_s),
    }
    if CAMERA in spec.sensors:
        height, width, _ = spec.sensors[CAMERA]
        parameters["render_size"] = int(height)
        parameters["render_width"] = 0 if width == height else int(width)  # 0: square (a parameter file's width unset)
    return parameters


def policy_inputs(policy_file: Path) -> str:
    """The inputs the policy node waits for before its first update (``ObservationSpec.sensors``), as sim_node's
    ``policy_inputs`` (``camera,imu``); empty when the file cannot be read."""
    return policy_world_parameters(policy_file).get("policy_inputs", "")


def policy_graph(
    params_file: str = "", policy: str = "", use_sim_time: bool | None = None, autostart: bool | None = None
) -> list[NodeDescription]:
    """The policy node alone (a robot): its parameter file (default config/rover_policy.yaml) and overrides.
    ``use_sim_time``, ``autostart`` None: the file's (the node's default, false, where it sets none); an override
    always won, so a robot file's ``autostart: true`` left the deployed node waiting for a lifecycle manager."""
    path = Path(user_path(params_file)) if params_file else config_dir() / WORLD_POLICIES["LiquidRover-v0"][0]
    if not path.is_file():
        raise FileNotFoundError(f"parameter file {path} not found")
    given = {"use_sim_time": use_sim_time, "autostart": autostart}
    overrides = {key: bool(value) for key, value in given.items() if value is not None}
    if policy:
        overrides["policy"] = policy
    return [NodeDescription("policy_node", "policy_node", (str(path),), overrides, lifecycle=True)]


def launch_argument(arg: dict, name: str, kind, optional: bool = False):
    """Launch argument ``name`` (its text in ``arg``) as an int, a finite float or a bool (true/false in any case,
    or 1/0, as ROS launch conditions read them), or a ValueError naming it: every launch file's arguments.
    ``optional``: an empty text is None (not given: the parameter file's value holds)."""
    text = arg[name]
    if optional and text == "":
        return None
    if kind is bool:
        if text.lower() in ("true", "1", "false", "0"):
            return text.lower() in ("true", "1")
        raise ValueError(f"{name}: must be true or false, got {shown(text)}")
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{name}: must be {'an integer' if kind is int else 'a number'}, got {shown(text)}") from None
    if kind is int and not -(2**63) <= value < 2**63:  # else an OverflowError, or rcl's own refusal at the node
        raise ValueError(f"{name}: must be an integer in a ROS parameter's 64-bit range, got {shown(text)}")
    if kind is float and not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {shown(text)}")
    return value


def launch_actions(graph: list[NodeDescription]) -> list:
    """The launch files' launch_ros actions for a graph's nodes: a LifecycleNode for a managed node, else a Node,
    with the parameter files, then the overrides, and the remappings (launch_ros is imported here, at launch)."""
    from launch_ros.actions import LifecycleNode, Node

    return [
        (LifecycleNode if node.lifecycle else Node)(
            package=PACKAGE,
            executable=node.executable,
            name=node.name,
            namespace="",
            output="screen",
            parameters=[*node.parameter_files, node.parameters],
            remappings=list(node.remappings),
        )
        for node in graph
    ]


def launch_description(arguments: dict, nodes):
    """A launch file's LaunchDescription: its ``arguments`` ({name: (default, description)}) declared, and the
    nodes ``nodes(context)`` makes from their values once the launch has them."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchDescription

    declared = [
        DeclareLaunchArgument(name, default_value=default, description=text)
        for name, (default, text) in arguments.items()
    ]
    return LaunchDescription(declared + [OpaqueFunction(function=nodes)])


# ------------------------------------------------------------------------------------------ liquid-control sim
def add_arguments(parser):
    """The options of ``liquid-control sim``."""
    parser.add_argument(
        "--world", default="LiquidRover-v0", choices=sorted(WORLD_POLICIES), help="the simulated world sim_node runs"
    )
    parser.add_argument(
        "--policy", default="", type=user_path, help="policy file (.pt/.onnx); default: the world's shipped policy"
    )
    parser.add_argument("--shift", default="", help="shift preset or spec, e.g. 'season=winter,lighting=dusk'")
    parser.add_argument("--seed", type=int, default=0, help="episode k runs the world reset with seed + k")
    parser.add_argument("--episodes", type=int, default=1, help="episodes to run (0: until stopped)")
    parser.add_argument("--use-sim-time", action="store_true", help="nodes run on /clock published by sim_node")
    parser.add_argument("--real-time-factor", type=float, default=1.0, help="!= 1 implies --use-sim-time")
    parser.add_argument(
        "--lockstep",
        action="store_true",
        help="the sim waits for the command after each update (implies --use-sim-time; as in training)",
    )
    parser.add_argument(
        "--record-bag",
        default="",
        type=user_path,
        metavar="DIR",
        help="sim_node records each episode into DIR/episode_<seed> (rosbag2 MCAP: what it publishes and the "
        "commands it receives)",
    )
    parser.add_argument(
        "--publish-mode",
        default="",
        choices=["", "per_update", "fixed_rate"],
        help="the policy node's publish_mode: one command per update, or at --control-rate (default: the parameter "
        "file's)",
    )
    parser.add_argument(
        "--control-rate",
        type=float,
        default=0.0,
        help="command rate in fixed_rate mode (Hz; 0: the parameter file's control_rate_hz)",
    )
    parser.add_argument(
        "--backend",
        default="",
        choices=["", "auto", "torch", "onnx"],
        help="the policy node's backend (default: the parameter file's; auto: the .onnx next to the .pt if "
        "exported from it, else torch)",
    )
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID for the graph (default: inherited)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        help="wall-clock limit in seconds (0: the sim's wait for the policy node + episodes x (time limit / "
        "--real-time-factor + 30 s); "
        "none with --episodes 0)",
    )
    parser.add_argument("--log-dir", default="", type=user_path, help="write each node's output to <dir>/<node>.log")
    parser.add_argument(
        "--quiet", action="store_true", help="only the outcome lines (and why a node failed, if one does)"
    )
    prog = parser.prog  # liquid-control sim, or main (its options are these)
    parser.epilog = (
        "examples:\n"
        f"  {prog} --episodes 5 --shift sensor_rate=2\n"
        f"  {prog} --world LiquidBalanceNav-v0 --lockstep        # on a loaded machine\n"
        f"  {prog} --policy runs/cfc_ncp_rover/policy.pt --episodes 10 --record-bag bags/sim --domain-id 42\n"
        f"  {prog} --episodes 0 --quiet                           # until Ctrl-C\n\n" + EXIT_STATUS_HELP
    )


# what an episode status must hold to be shown (describe): another publisher's dict without them raised KeyError
STATUS_KEYS = frozenset({"episode", "seed", "outcome", "sim_time", "wall_time", "commands_received", "messages"})


def _status_listener(domain_id: int | None, world: str, run_id: str | None = None):
    """A tiny node of this process that collects the JSON episode statuses (transient local) of a sim_node of
    ``world``, with ``run_id`` the one whose statuses carry it (sim_node's ``run_id``: another graph's sim sharing
    the domain published its episodes to this run's listener too, and a run stopped by the graph check counted the
    other's finished episode as its own, "1 of 1 episode(s) succeeded ... exit status 4"); anything else on the
    topic (another graph, a replayed bag) is counted in ``ignored`` and otherwise left alone."""
    import rclpy
    import rclpy.executors
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = rclpy.create_node(MONITOR_NODE, context=context)
    received: list[dict] = []
    ignored = [0]

    def on_status(msg):
        try:
            status = load_json(msg.data)
        except ValueError:  # JsonTooDeepError too: any publisher on the domain can send a hostile string
            status = None
        ours = isinstance(status, dict) and (run_id is None or status.get("run_id") == run_id)
        if ours and status.get("world") == world and STATUS_KEYS <= set(status):
            received.append(status)  # the line shows it as sim_node published it, run_id included
        else:
            ignored[0] += 1

    node.create_subscription(
        String,
        STATUS_TOPIC,
        on_status,
        QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL),
    )
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    return context, executor, node, received, ignored


class NodeOutput:
    """Reads one node's output (stdout + stderr) in a thread: forwards it (to its log file, else to our stderr
    unless quiet) and keeps the last lines, so that a node's failure can be explained even with --quiet."""

    def __init__(self, proc: subprocess.Popen, log_path: Path | None, quiet: bool):
        self.lines: deque[str] = deque(maxlen=200)
        self._log = open(log_path, "w") if log_path else None
        self._echo = self._log is None and not quiet
        self._thread = threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _pump(self, stream):
        for line in iter(stream.readline, ""):
            self.lines.append(line.rstrip("\n"))
            if self._log is not None:
                self._log.write(line)
                self._log.flush()
            elif self._echo:
                sys.stderr.write(line)
                sys.stderr.flush()
        stream.close()
        if self._log is not None:
            self._log.close()

    def showed(self, text: str) -> bool:
        """Whether a line of the node's output holding ``text`` was forwarded to our stderr (among its last lines)."""
        return self._echo and any(text in line for line in self.lines)

    def join(self, timeout: float = 1.0) -> None:
        """Wait up to ``timeout`` seconds for the reader thread to finish."""
        self._thread.join(timeout)

    def cause(self) -> str:
        """The node's last FATAL, else ERROR, log message (else its last output line): why it stopped. A message
        of several lines (its indented lines: e.g. every invalid parameter, one per line) is joined with "; "."""
        lines = list(self.lines)
        for level in ("[FATAL]", "[ERROR]"):
            for i in range(len(lines) - 1, -1, -1):
                if lines[i].startswith(level):
                    message = [lines[i].split("]: ", 1)[-1]]
                    for more in lines[i + 1 :]:
                        if not more[:1].isspace() or not more.strip():  # the next record, or a traceback
                            break
                        message.append(more.strip())
                    return "; ".join(m.rstrip(":") if k < len(message) - 1 else m for k, m in enumerate(message))
        rest = [line for line in self.lines if line.strip()]
        return rest[-1].strip() if rest else "no output"


def start_graph(nodes: list[NodeDescription], env: dict, log_dir: str = "", quiet: bool = False):
    """Start every node as a process (its own session, so a terminal's Ctrl-C reaches only us and we stop the
    graph in order); returns ({name: Popen}, {name: NodeOutput}). Every process is forked before any thread of
    ours starts (the output readers come after), so nothing runs between fork and exec but the prctl call."""
    procs, outputs = {}, {}
    die_with_parent = parent_death_signal()
    for node in nodes:
        procs[node.name] = subprocess.Popen(
            node.command(),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    for name, proc in procs.items():
        log_path = None
        if log_dir:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            log_path = Path(log_dir) / f"{name}.log"
        outputs[name] = NodeOutput(proc, log_path, quiet)
    return procs, outputs


def stop_graph(procs: dict, grace: float = STOP_GRACE_S) -> dict:
    """SIGINT every node still running (a clean ROS shutdown), then SIGKILL after ``grace``; returns exit codes."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {name: proc.returncode for name, proc in procs.items()}


def describe_exit(code: int | None) -> str:
    """A process exit code in words (None: still running; negative: the signal that killed it)."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class SimRun:
    """What `liquid-control sim` saw: the episode statuses (a failed one added by us), and how it ended."""

    statuses: list[dict]
    code: int
    elapsed_s: float
    errors: list[str] = field(default_factory=list)
    interrupted: str = ""  # where SIGINT/SIGTERM stopped it, what finished and how to run the rest; not an error


class _Signals:
    """SIGINT/SIGTERM while the graph runs: remembered, so the loop stops the nodes and still reports."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum, _frame):
        if self.received is None:
            self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def check_arguments(args) -> None:
    """``liquid-control sim``'s numbers and paths, checked before any node starts (ValueError naming the option):
    the nodes would refuse most of them too, but as a failed episode, not as a usage error."""
    import math

    if not (math.isfinite(args.real_time_factor) and args.real_time_factor > 0):
        raise ValueError(f"--real-time-factor must be a positive number, got {args.real_time_factor}")
    if args.episodes < 0:
        raise ValueError(f"--episodes must be >= 0 (0: until stopped), got {args.episodes}")
    if not 0 <= args.seed <= EPISODE_SEED_LIMIT - max(1, args.episodes):
        raise ValueError(
            f"--seed must be >= 0 with every episode's seed (seed + k) below 2**32 (as eval's; "
            f"conventions.params.EPISODE_SEED_LIMIT), got {args.seed}"
        )
    if not (math.isfinite(args.timeout) and args.timeout >= 0):
        raise ValueError(f"--timeout must be >= 0 seconds (0: from the episodes' time limits), got {args.timeout}")
    if args.control_rate < 0 or not math.isfinite(args.control_rate):
        raise ValueError(
            f"--control-rate must be a positive number of Hz (0: the parameter file's), got {args.control_rate}"
        )
    problem = domain_id_problem(args.domain_id) or discovery_problem() or unwritable_log_dir()
    if problem:
        raise ValueError(problem)
    for option, folder in (("--log-dir", args.log_dir), ("--record-bag", args.record_bag)):
        problem = output_folder_problem(folder) if folder else None  # a file there, under a file, not writable
        if problem:
            raise ValueError(f"{option} {folder}: {problem}")
    if args.record_bag:
        taken = taken_episode_bags(args.record_bag, args.seed, args.episodes)
        if taken:  # sim_node refuses them too; here before any process starts
            raise ValueError(
                f"--record-bag {args.record_bag}: already holds {', '.join(taken)}; a bag is never overwritten, "
                "choose another folder or --seed"
            )


def policy_world(path: Path) -> str | None:
    """The world a policy file was trained for (its config's ``world``; from its ONNX export when that is the
    export of this very file, which needs no torch, and whose metadata is read without the onnx package), or
    None when it cannot be read here (policy_node says why); a ValueError for a config without a world."""
    try:
        from liquid_control.runtime.backends import (
            ONNX_CONFIG_KEY,
            ONNX_SOURCE_KEY,
            checkpoint_sha256,
            metadata_json,
            read_onnx_metadata,
        )

        onnx_path = path if path.suffix == ".onnx" else path.with_suffix(".onnx")
        meta = {}
        if onnx_path.is_file():
            try:
                meta = read_onnx_metadata(onnx_path)
            except ValueError:  # corrupt, or no onnxruntime: backend auto runs a .pt with torch, so judge the .pt
                if onnx_path == path:
                    return None
        if onnx_path == path or not path.is_file() or meta.get(ONNX_SOURCE_KEY) == checkpoint_sha256(path):
            config = metadata_json(onnx_path, meta, ONNX_CONFIG_KEY)
        else:  # no export, or a stale one from another checkpoint
            from liquid_control.cells.checkpoint import read_plain_torch_file

            config = read_plain_torch_file(path)["config"]
        world = config["world"]
    except Exception:  # unreadable or not a policy file: policy_node reports it with the details
        return None
    if world is None and "world" in config:  # a robot's policy trained from bags alone
        raise ValueError(
            f"--policy {path}: its config names no world (world: null: trained from recorded bags alone), so there is "
            "no simulated world to run it in; on the robot: policy_node (docs/real_robot.md)"
        )
    return world if isinstance(world, str) else None


def shared_domain(node_names: list[tuple[str, str]], ours: list[str]) -> str:
    """Which of ``ours`` (node names in the root namespace, with the status listener's) run more than once among
    ``node_names`` (the domain's graph, ``get_node_names_and_namespaces()``), as "2 nodes named /sim_node"; empty
    when none does. Another graph of the same nodes (a second `liquid-control sim`, a launch, a robot) publishes on
    the same topics: each policy would get both sims' frames and each sim both policies' commands."""
    counts = _root_counts(node_names, ours)
    return ", ".join(f"{k} nodes named /{name}" for name, k in counts.items() if k > 1)


def _root_counts(node_names: list[tuple[str, str]], ours: list[str]) -> dict[str, int]:
    """How many nodes of each of ``ours`` (and the status listener's name) the graph lists in the root namespace."""
    return {name: sum(1 for n, ns in node_names if n == name and ns == "/") for name in [*ours, MONITOR_NODE]}


def shared_domain_origins(monitor, node_names: list[tuple[str, str]], ours: list[str], own_pids: list[int]) -> str:
    """Where the other graph's nodes that :func:`shared_domain` found run ("the other /policy_node: process 1234
    (...)"), so the user can tell which process to stop; empty where the DDS does not say."""
    from liquid_control.ros.participants import other_node_processes

    counts = _root_counts(node_names, ours)
    try:
        return other_node_processes(monitor, {name: k for name, k in counts.items() if k > 1}, own_pids)
    except Exception:  # a diagnostic only (rclpy's RCLError, odd GUID data): the verdict stands without it
        return ""


def unanswered_updates(statuses: list[dict], update_on: str, real_time_factor: float) -> str:
    """A warning when the policy node answered fewer than 9 in 10 of an episode's updates (one command per update,
    ``publish_mode`` per_update, in real time: lockstep waits for every command): it could not keep up with the
    sim (a --real-time-factor beyond the machine), so the episode's outcome does not measure the policy; empty
    otherwise. The updates are sim_node's count (``updates``); a status without it, the update sensors' messages,
    which also counts those before the first update (waiting for every input)."""
    sensors = [s for s in update_on.split(",") if s]
    lagging = []
    for status in statuses:
        updates = status.get("updates", sum(status.get("messages", {}).get(s, 0) for s in sensors))
        answered = status.get("commands_received", 0)
        if status.get("outcome") != "failed" and sensors and answered < 0.9 * updates:
            lagging.append((status, answered, updates))
    if not lagging:
        return ""
    status, answered, updates = lagging[0]
    achieved = status["sim_time"] / status["wall_time"] if status.get("wall_time") else math.inf
    others = f" (and in {len(lagging) - 1} more of the {len(statuses)} episodes)" if len(lagging) > 1 else ""
    return (
        f"warning: in episode {status['episode']}{others} the policy node answered {answered} of {updates} "
        f"{'/'.join(sensors)} updates: it did not keep up with the sim (--real-time-factor "
        f"{real_time_factor:g}, {achieved:.1f}x real time reached), so the outcome does not measure the "
        "policy; lower --real-time-factor, or use --lockstep (as fast as the policy answers)"
    )


def default_timeout(episodes: int, episode_limit: float, real_time_factor: float, graph_wait: float) -> float:
    """The wall-clock limit of a run without --timeout: the sim's wait for the policy node plus, per episode, its
    time limit at the real-time factor and 30 s; none (inf) with ``episodes`` 0, which runs until stopped."""
    if episodes == 0:
        return math.inf
    return graph_wait + episodes * (episode_limit / real_time_factor + 30.0)


def run_sim(args, announce=None, prog: str = "liquid-control sim") -> SimRun:
    """Start the graph's nodes, print each episode's status as it arrives, stop every node; what happened.
    ``announce``: called once the arguments are checked, before any node starts; ``prog`` begins each warning line
    (``liquid-control sim: warning: ...``), as every command names its lines."""
    check_arguments(args)
    nodes = sim_graph(
        world=args.world,
        policy=args.policy,
        shift=args.shift,
        use_sim_time=args.use_sim_time,
        real_time_factor=args.real_time_factor,
        seed=args.seed,
        episodes=args.episodes,
        publish_mode=args.publish_mode,
        control_rate_hz=args.control_rate,
        backend=args.backend,
        lockstep=args.lockstep,
        record_bag=args.record_bag,
    )
    # the statuses reach this process's listener before sim_node exits, however late discovery matched it (a
    # launch file has no listener: sim_node's default half second there)
    nodes[0].parameters["status_wait_s"] = 10.0
    nodes[0].parameters["status_listener"] = MONITOR_NODE  # its subscription, not another's (a viewer's) on the domain
    run_id = uuid.uuid4().hex  # this run's episode statuses carry it: another graph's on the domain are told apart
    nodes[0].parameters["run_id"] = run_id
    from sim_envs import balance_nav, balancer, rover  # before the announcement: a missing simulator is said alone

    if announce is not None:
        announce()
    env = dict(os.environ)
    if args.domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(args.domain_id)
    domain = int(env["ROS_DOMAIN_ID"]) if env.get("ROS_DOMAIN_ID") else None

    episodes = max(1, args.episodes)
    episode_limit = {"LiquidRover-v0": rover, "LiquidBalanceNav-v0": balance_nav}.get(args.world, balancer).TIME_LIMIT
    sim = nodes[0]  # its graph wait (wait_for_subscribers_s) comes once, before the first episode
    sim_params = _file_parameters(Path(sim.parameter_files[0]), "sim_node")
    policy_file_parameters = _policy_parameters(Path(nodes[1].parameter_files[0]))
    graph_wait = float(sim.parameters.get("wait_for_subscribers_s", sim_params.get("wait_for_subscribers_s", 30.0)))
    timeout = args.timeout or default_timeout(args.episodes, episode_limit, args.real_time_factor, graph_wait)
    start = time.monotonic()
    deadline = start + timeout
    printed = 0

    def show_new():
        nonlocal printed
        while printed < len(statuses):
            print("episode: " + json.dumps(statuses[printed]), flush=True)
            printed += 1

    with _Signals() as signals:
        procs, outputs = start_graph(nodes, env, args.log_dir, args.quiet)  # before rclpy starts its threads
        context, executor, monitor, statuses, ignored = _status_listener(domain, args.world, run_id)
        ended = None  # name of the first node that exited on its own
        shared = ""  # another graph of the same nodes on the domain, found while this run was starting: it stops
        origins = ""  # where that graph's nodes run (shared_domain_origins)
        joined = ""  # another graph that appeared later: this run was there first, it warns and goes on
        newcomer_until = time.monotonic() + NEWCOMER_WINDOW_S
        next_graph_check = start
        try:
            while time.monotonic() < deadline and signals.received is None:
                executor.spin_once(timeout_sec=0.1)
                show_new()
                ended = next((name for name, proc in procs.items() if proc.poll() is not None), None)
                if ended:
                    break
                if time.monotonic() >= next_graph_check:
                    next_graph_check = time.monotonic() + GRAPH_CHECK_PERIOD_S
                    names, ours = monitor.get_node_names_and_namespaces(), [n.name for n in nodes]
                    found = shared_domain(names, ours)
                    if found and found != joined:
                        origins = shared_domain_origins(
                            monitor, names, ours, [os.getpid(), *(p.pid for p in procs.values())]
                        )
                        if time.monotonic() <= newcomer_until:
                            shared = found
                            break
                        # the newcomer stops itself; its messages may reach this episode
                        print(
                            f"{prog}: warning: another graph joined ROS_DOMAIN_ID "
                            f"{domain if domain is not None else 0} {time.monotonic() - start:.1f} s into this run "
                            f"({found}{'; ' + origins if origins else ''}): while both run, their sims and "
                            "policies exchange messages, so episode "
                            f"{len(statuses)} may not measure the policy alone (a liquid-control sim started there "
                            "stops itself; give each graph its own --domain-id)",
                            file=sys.stderr,
                            flush=True,
                        )
                    joined = found
            if ended == "sim_node" and procs["sim_node"].returncode == 0:
                end = time.monotonic() + 2.0  # the sim finished: its last status may still be on its way
                while len(statuses) < episodes and time.monotonic() < end and signals.received is None:
                    executor.spin_once(timeout_sec=0.1)
                    show_new()
        finally:
            first_codes = {name: proc.poll() for name, proc in procs.items()}
            codes = stop_graph(procs)
            for output in outputs.values():
                output.join()
            executor.shutdown()
            monitor.destroy_node()
            context.try_shutdown()
    elapsed = time.monotonic() - start
    if ignored[0]:
        print(
            f"{prog}: warning: ignored {ignored[0]} message(s) on {STATUS_TOPIC} that are not this graph's episodes "
            f"(another graph or a bag replay on ROS_DOMAIN_ID {domain if domain is not None else 0}?)",
            file=sys.stderr,
            flush=True,
        )
    per_update = (nodes[1].parameters.get("publish_mode") or policy_file_parameters.get("publish_mode")) != "fixed_rate"
    lagging = (
        per_update
        and not args.lockstep
        and unanswered_updates(statuses, sim.parameters.get("policy_update_on", ""), args.real_time_factor)
    )
    if lagging:
        print(f"{prog}: {lagging}", file=sys.stderr, flush=True)
    from liquid_control.bags.recording import cut_short_message, episode_bag_name

    cut_seed = int(args.seed) + len(statuses)
    cut_bag = Path(args.record_bag) / episode_bag_name(cut_seed) if args.record_bag else None
    if cut_bag is not None and (args.episodes == 0 or len(statuses) < args.episodes) and cut_bag.exists():
        cut = cut_short_message(cut_bag, len(statuses), cut_seed)
        # sim_node closes the bag of the episode it was in when stopped and says so in its log
        # (SimNode.finish_recording): said here only where that line was not shown (--quiet, --log-dir, a node
        # that died)
        if not outputs["sim_node"].showed(cut):
            print(f"{prog}: warning: --record-bag: {cut}", file=sys.stderr, flush=True)
    run = SimRun(statuses=list(statuses), code=EXIT_OK, elapsed_s=elapsed)
    # A node that ended on its own before the run was over failed (the sim ends itself after the last episode).
    failed = {
        name: code
        for name, code in first_codes.items()
        if code is not None and not (name == "sim_node" and code == 0 and len(statuses) >= episodes)
    }
    if shared:
        run.code = EXIT_DOMAIN_SHARED
        run.errors.append(
            f"another graph runs on ROS_DOMAIN_ID {domain if domain is not None else 0} ({shared}: another "
            f"liquid-control sim, a launch or a robot{'; ' + origins if origins else ''}): its sim and policy would "
            "exchange camera frames, commands and "
            f"episode statuses with this run's, so every node was stopped after {elapsed:.1f} s (the graph that was "
            "there first goes on); give each graph its own --domain-id"
        )
    elif failed:
        why = "; ".join(
            f"{name} {describe_exit(code)}" + (f": {outputs[name].cause()}" if code > 0 else "")
            for name, code in failed.items()
        )
        run.code = EXIT_NODE_FAILED
        run.errors.append(f"{why} ({elapsed:.1f} s into the run)")
        if len(statuses) < episodes:
            index = len(statuses)
            run.statuses.append(
                {
                    "episode": index,
                    "seed": int(args.seed) + index,
                    "world": args.world,
                    "shift": args.shift,
                    "outcome": "failed",
                    "success": False,
                    "reason": why,
                    "wall_time": round(elapsed, 3),
                }
            )
            print("episode: " + json.dumps(run.statuses[-1]), flush=True)
    elif signals.received is not None:
        run.code = EXIT_SIGNAL_BASE + signals.received
        name = signal.Signals(signals.received).name
        run.interrupted = f"interrupted by {name} after {elapsed:.1f} s; every node stopped"
        if args.episodes and len(statuses) < args.episodes:  # not --episodes 0: a signal is how that one ends
            finished = sum(1 for s in run.statuses if s.get("outcome") != "failed")
            # a bag is never overwritten, so the cut-short episode's is in the way of its rerun
            remove = f" once {cut_bag} (the cut-short episode's bag) is removed" if cut_bag and cut_bag.exists() else ""
            run.interrupted += (
                f"; {finished} of {args.episodes} episode(s) finished: run the rest with --seed {cut_seed} "
                f"--episodes {args.episodes - len(statuses)} and the other options as before{remove}"
            )
    elif len(statuses) < episodes or (args.episodes == 0 and ended is None):  # until stopped: --timeout stopped it
        run.code = EXIT_TIMEOUT
        cut = "" if args.episodes else f" (--episodes 0: episode {len(statuses)} was cut short)"
        run.errors.append(f"--timeout: {timeout:.0f} s passed before every episode ended{cut}")
    crashed_on_stop = {n: c for n, c in codes.items() if n not in failed and c not in (0, -signal.SIGINT, None)}
    if crashed_on_stop:
        run.errors.append(
            "node(s) did not stop cleanly: " + ", ".join(f"{n} {describe_exit(c)}" for n, c in crashed_on_stop.items())
        )
    finished = sum(1 for s in run.statuses if s.get("outcome") != "failed")
    if finished < episodes and not run.interrupted:
        run.errors.append(f"{finished} of {episodes} episode(s) finished after {elapsed:.1f} s")
    return run


def describe(status: dict) -> str:
    """One human line per episode."""
    if status.get("outcome") == "failed":
        return (
            f"episode {status['episode']} (seed {status['seed']}): FAILED after {status['wall_time']:.1f} s wall: "
            f"{status['reason']}"
        )
    extra = "".join(f", {k.replace('_', ' ')} {status[k]}" for k in ("distance", "tracking_error") if k in status)
    return (
        f"episode {status['episode']} (seed {status['seed']}): {status['outcome'].upper()} after "
        f"{status['sim_time']:.2f} s sim time ({status['wall_time']:.1f} s wall){extra}; "
        f"{status['commands_received']} commands, messages {named_counts(status['messages'])}"
    )


def run(args, prog: str = "liquid-control sim", announce=None) -> int:
    """`liquid-control sim`: run the graph, print each episode and a summary; the exit status is documented in
    :data:`EXIT_STATUS_HELP`. ``prog`` names the command in error and warning lines, ``announce`` (see
    ``run_sim``)."""
    try:
        result = run_sim(args, announce, prog)
    except (ValueError, FileNotFoundError, IsADirectoryError) as exc:  # unknown world, missing file, a folder
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if result.interrupted:  # named as every command names its lines (liquid-control eval: interrupted: ...)
        print(f"{prog}: {result.interrupted}", file=sys.stderr, flush=True)
    for error in result.errors:
        print(f"{prog}: error: {error}", file=sys.stderr, flush=True)
    for status in result.statuses:
        print(describe(status))
    wins, ran = sum(s["success"] for s in result.statuses), len(result.statuses)
    print(
        f"summary: {wins} of {ran} episode(s) succeeded "
        f"({f'{args.episodes} requested' if args.episodes else 'until stopped'}) in "
        f"{result.elapsed_s:.1f} s; exit status {result.code}"
    )
    if ran:
        print(f"success_rate: {wins}/{ran}")
    return result.code
