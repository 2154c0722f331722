"""The ROS graph of a closed-loop simulation, described once; used by launch/sim.launch.py and `liquid-control sim`.

``sim_graph(...)`` returns the node list (executable, name, parameter files, parameter overrides,
remappings). ``launch/sim.launch.py`` turns it into ``launch_ros.actions.Node`` actions; ``liquid-control
sim`` (this module's ``run``) starts the same nodes as separate processes (``python -m <module>``, so no
install is needed), listens to the episode status topic and prints each outcome.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from liquid_control.paths import config_dir

PACKAGE = "liquid_control"
# world id -> the policy node's parameter file and the shipped policy used by default
WORLD_POLICIES = {
    "LiquidRover-v0": ("rover_policy.yaml", "cfc_ncp_rover.pt"),
    "LiquidBalance-v0": ("balance_policy.yaml", "cfc_balancer.pt"),
    "LiquidBalanceNav-v0": ("balance_nav_policy.yaml", "cfc_balance_nav.pt"),
}
# world id -> sim_node parameters its shipped policy needs (the camera at the policy's image size)
WORLD_SIM_PARAMETERS = {"LiquidBalanceNav-v0": {"render_size": 32}}
STATUS_TOPIC = "episode_status"


def parameter_argument(key: str, value) -> str:
    """``key:=value`` for ``--ros-args -p`` (the value in YAML, as ROS parses it)."""
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return f"{key}:={text.removesuffix('...').strip()}"


@dataclass(frozen=True)
class NodeDescription:
    """One node of the graph, in the terms of launch_ros.actions.Node."""

    executable: str  # console script (setup.py entry point), installed to lib/liquid_control
    module: str  # python module whose main() the executable runs
    name: str
    parameter_files: tuple[str, ...]  # absolute paths
    parameters: dict = field(default_factory=dict)  # overrides, applied after the files
    remappings: tuple[tuple[str, str], ...] = ()
    lifecycle: bool = False  # a managed node (launch_ros.actions.LifecycleNode)

    def command(self, python: str = sys.executable) -> list[str]:
        """Argv that starts this node as its own process, with the same parameters as the launch file."""
        argv = [python, "-m", self.module, "--ros-args", "-r", f"__node:={self.name}"]
        for path in self.parameter_files:
            argv += ["--params-file", path]
        for key, value in self.parameters.items():
            argv += ["-p", parameter_argument(key, value)]
        for src, dst in self.remappings:
            argv += ["-r", f"{src}:={dst}"]
        return argv


def _policy_parameters(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["policy_node"]["ros__parameters"]


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
) -> list[NodeDescription]:
    """sim_node + policy_node for ``world``; empty/zero arguments keep the parameter files' values.

    ``lockstep`` (implies ``use_sim_time``): the simulation waits for the command after each update, the
    closed loop of training without compute latency."""
    use_sim_time = use_sim_time or lockstep
    if world not in WORLD_POLICIES:
        raise ValueError(f"unknown world {world!r}; choose from {', '.join(WORLD_POLICIES)}")
    policy_file, default_policy = WORLD_POLICIES[world]
    policy_yaml = Path(policy_params_file) if policy_params_file else config_dir() / policy_file
    sim_yaml = Path(sim_params_file) if sim_params_file else config_dir() / "sim.yaml"
    for path in (policy_yaml, sim_yaml):
        if not path.is_file():
            raise FileNotFoundError(f"parameter file {path} not found")
    policy_params = _policy_parameters(policy_yaml)
    common = {"use_sim_time": bool(use_sim_time)}
    policy_overrides = dict(common, autostart=True, policy=policy or policy_params.get("policy") or default_policy)
    if publish_mode:
        policy_overrides["publish_mode"] = publish_mode
    if control_rate_hz:
        policy_overrides["control_rate_hz"] = float(control_rate_hz)
    if backend:
        policy_overrides["backend"] = backend
    sim_overrides = dict(
        common,
        **WORLD_SIM_PARAMETERS.get(world, {}),
        world=world,
        shift=shift,
        seed=int(seed),
        episodes=int(episodes),
        real_time_factor=float(real_time_factor),
        lockstep=bool(lockstep),
        # the sim listens where the policy commands, in the type it publishes
        command_topic=policy_params["command_topic"],
        command_type=policy_params["command_type"],
    )
    return [
        NodeDescription("sim_node", "liquid_control.ros.sim_node", "sim_node", (str(sim_yaml),), sim_overrides),
        NodeDescription(
            "policy_node",
            "liquid_control.ros.policy_node",
            "policy_node",
            (str(policy_yaml),),
            policy_overrides,
            lifecycle=True,
        ),
    ]


def policy_graph(
    params_file: str = "", policy: str = "", use_sim_time: bool = False, autostart: bool = False
) -> list[NodeDescription]:
    """The policy node alone (a robot): its parameter file (default config/rover_policy.yaml) and overrides."""
    path = Path(params_file) if params_file else config_dir() / WORLD_POLICIES["LiquidRover-v0"][0]
    if not path.is_file():
        raise FileNotFoundError(f"parameter file {path} not found")
    overrides = {"use_sim_time": bool(use_sim_time), "autostart": bool(autostart)}
    if policy:
        overrides["policy"] = policy
    return [
        NodeDescription(
            "policy_node", "liquid_control.ros.policy_node", "policy_node", (str(path),), overrides, lifecycle=True
        )
    ]


# ------------------------------------------------------------------------------------------ liquid-control sim
def add_arguments(parser):
    parser.add_argument("--world", default="LiquidRover-v0", choices=sorted(WORLD_POLICIES))
    parser.add_argument("--policy", default="", help="policy file (.pt/.onnx); default: the world's shipped policy")
    parser.add_argument("--shift", default="", help="shift preset or spec, e.g. 'season=winter,lighting=dusk'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--use-sim-time", action="store_true", help="nodes run on /clock published by sim_node")
    parser.add_argument("--real-time-factor", type=float, default=1.0, help="!= 1 implies --use-sim-time")
    parser.add_argument(
        "--lockstep",
        action="store_true",
        help="the sim waits for the command after each update (implies --use-sim-time; as in training)",
    )
    parser.add_argument("--publish-mode", default="", choices=["", "per_update", "fixed_rate"])
    parser.add_argument("--control-rate", type=float, default=0.0, help="command rate in fixed_rate mode (Hz)")
    parser.add_argument("--backend", default="", choices=["", "auto", "torch", "onnx"])
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID for the graph (default: inherited)")
    parser.add_argument(
        "--timeout", type=float, default=0.0, help="wall-clock limit in seconds (0: episodes x (time limit + 30 s))"
    )
    parser.add_argument("--log-dir", default="", help="write each node's output to <dir>/<node>.log")
    parser.add_argument("--quiet", action="store_true", help="only the outcome lines")


def _status_listener(domain_id: int | None):
    """A tiny node of this process that collects the JSON episode statuses (transient local)."""
    import rclpy
    import rclpy.executors
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = rclpy.create_node("liquid_control_sim_monitor", context=context)
    received: list[dict] = []
    node.create_subscription(
        String,
        STATUS_TOPIC,
        lambda msg: received.append(json.loads(msg.data)),
        QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL),
    )
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    return context, executor, node, received


def start_graph(nodes: list[NodeDescription], env: dict, log_dir: str = "", quiet: bool = False):
    """Start every node as a process; returns {name: Popen}."""
    procs = {}
    for node in nodes:
        if log_dir:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            out = open(Path(log_dir) / f"{node.name}.log", "w")
        else:
            out = subprocess.DEVNULL if quiet else None
        procs[node.name] = subprocess.Popen(
            node.command(),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            start_new_session=True,
        )
    return procs


def stop_graph(procs: dict, grace: float = 5.0) -> dict:
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


def run_sim(args) -> tuple[int, list[dict]]:
    use_sim_time = args.use_sim_time or args.real_time_factor != 1.0
    nodes = sim_graph(
        world=args.world,
        policy=args.policy,
        shift=args.shift,
        use_sim_time=use_sim_time,
        real_time_factor=args.real_time_factor,
        seed=args.seed,
        episodes=args.episodes,
        publish_mode=args.publish_mode,
        control_rate_hz=args.control_rate,
        backend=args.backend,
        lockstep=args.lockstep,
    )
    env = dict(os.environ)
    if args.domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(args.domain_id)
    domain = int(env["ROS_DOMAIN_ID"]) if env.get("ROS_DOMAIN_ID") else None
    context, executor, monitor, statuses = _status_listener(domain)
    procs = start_graph(nodes, env, args.log_dir, args.quiet)
    from sim_envs import balance_nav, balancer, rover

    episode_limit = {"LiquidRover-v0": rover, "LiquidBalanceNav-v0": balance_nav}.get(args.world, balancer).TIME_LIMIT
    timeout = args.timeout or max(1, args.episodes) * (episode_limit / args.real_time_factor + 30.0)
    deadline = time.monotonic() + timeout
    printed = 0
    try:
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
            while printed < len(statuses):
                print("episode: " + json.dumps(statuses[printed]), flush=True)
                printed += 1
            if procs["sim_node"].poll() is not None or procs["policy_node"].poll() is not None:
                break
        end = time.monotonic() + 2.0  # the last status may still be on its way
        while printed < max(1, args.episodes) and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.1)
            while printed < len(statuses):
                print("episode: " + json.dumps(statuses[printed]), flush=True)
                printed += 1
    finally:
        codes = stop_graph(procs)
        executor.shutdown()
        monitor.destroy_node()
        context.try_shutdown()
    failed = {n: c for n, c in codes.items() if c not in (0, -signal.SIGINT)}
    if failed:
        print(f"error: node(s) exited abnormally: {failed}", file=sys.stderr)
    if len(statuses) < max(1, args.episodes):
        print(f"error: {len(statuses)} of {args.episodes} episode(s) finished within {timeout:.0f} s", file=sys.stderr)
        return 1, statuses
    return (1 if failed else 0), statuses


def describe(status: dict) -> str:
    """One human line per episode."""
    extra = "".join(f", {k.replace('_', ' ')} {status[k]}" for k in ("distance", "tracking_error") if k in status)
    return (
        f"episode {status['episode']} (seed {status['seed']}): {status['outcome'].upper()} after "
        f"{status['sim_time']:.2f} s sim time ({status['wall_time']:.1f} s wall){extra}; "
        f"{status['commands_received']} commands, messages {status['messages']}"
    )


def run(args) -> int:
    code, statuses = run_sim(args)
    for status in statuses:
        print(describe(status))
    if statuses:
        wins = sum(s["success"] for s in statuses)
        print(f"success_rate: {wins}/{len(statuses)}")
    return code
