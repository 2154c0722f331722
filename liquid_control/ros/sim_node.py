"""sim_node: a sim_envs MuJoCo world as a ROS 2 robot, in real time (or faster, with /clock).

Every sensor message the world's timing model produces (irregular intervals, dropouts, latency) is published
when it is delivered, stamped with its measurement time: sim time with ``use_sim_time`` (then /clock is
published and ``real_time_factor`` may differ from 1), else the node clock (the system clock) at the episode's
start + sim time, moved with that clock where it steps (NTP/chrony at boot, a clock set by hand), as a driver's
stamps are: the pacing runs on the monotonic clock, which does not step.
The latest command (Twist in m/s, rad/s for the rover; Float64MultiArray of wheel torques in N m for the
balancer) drives the world until the next one; no command for ``command_timeout_s`` means zero (as a base
controller's timeout). Odometry is the true pose; each episode's outcome goes to the status topic
(std_msgs/String, JSON, transient local). Every parameter is checked at startup (exit 2 naming each bad one) and
read then: a change at run time (``ros2 param set``) is refused with that reason, not accepted and ignored.

As a ROS robot it also provides what RViz, Foxglove and the navigation stack expect: the robot's URDF on
``robot_description`` (generated from the world's MuJoCo model, transient local), ``odom -> base_link`` and
the wheel joints on ``/tf`` with every odometry message (REP 105), the sensor mounts on ``/tf_static``, a
``sensor_msgs/CameraInfo`` with each image (same stamp and frame, intrinsics from the camera's field of view)
and IMU messages by REP 145 (the ``imu`` frame, noise covariances, orientation marked unknown).

Run: ``ros2 run liquid_control sim_node --ros-args --params-file config/sim.yaml``.
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m: as the sim_node executable, whose checks run before rclpy loads
    from liquid_control.ros.entry import run

    raise SystemExit(run("sim_node"))

import json
import math
import os
import signal
import sys
import threading
import time

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering (before mujoco is imported)
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import gymnasium
import mujoco
import numpy as np
import rclpy
import rclpy.executors
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TransformStamped, Twist, Vector3
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy._rclpy_pybind11 import RCLError
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, Imu, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

import sim_envs
from liquid_control.conventions import stamps
from liquid_control.conventions.camera_info import pinhole_intrinsics
from liquid_control.conventions.commands import command_vector
from liquid_control.conventions.image_conversion import numpy_to_image
from liquid_control.conventions.message_types import message_type_name, node_path
from liquid_control.conventions.params import (
    COMMAND_TYPES,
    EPISODE_SEED_LIMIT,
    MAX_RATE_HZ,
    MAX_SECONDS,
    WHEEL_JOINT_NAMES,
    camera_info_topic,
    declare_node_parameters,
    frame_prefix_problem,
    refuse_startup_parameter_changes,
    topic_name_problem,
)
from liquid_control.conventions.sim_worlds import WORLDS  # each world's sensors, command and IMU noise
from liquid_control.paths import user_path
from liquid_control.processes import end_process_now
from liquid_control.ros import robot_description
from liquid_control.ros.delivery import acknowledged
from liquid_control.ros.graph import taken_episode_bags
from liquid_control.ros.policy_node import COMMAND_MESSAGES  # the messages policy_node publishes, by command_type
from liquid_control.shown import shown

try:  # a ROS installation's tf2_msgs, or the one scripts/build_interfaces.sh builds into the venv
    from tf2_msgs.msg import TFMessage
except ImportError:  # pragma: no cover - reported by the node
    TFMessage = None


SIM_NODE_PARAMETERS: dict[str, tuple[object, str]] = {
    "world": ("LiquidRover-v0", f"world id: {', '.join(WORLDS)}"),
    "shift": ("", "shift preset or spec for sim_envs.parse_shift (empty: the training distribution)"),
    "seed": (0, "episode k runs the world reset with seed + k (every one below 2**32, as eval takes them)"),
    "episodes": (1, "episodes to run (0: forever)"),
    "exit_when_done": (True, "shut the node down after the last episode"),
    "status_wait_s": (
        0.5,
        "after the last episode (exit_when_done), wait up to this long (wall seconds) for a subscriber of "
        "status_topic to acknowledge every status (liquid-control sim's listener may be discovered late)",
    ),
    "status_listener": (
        "",
        "the node whose subscription to status_topic the status_wait_s wait is for (its name; liquid-control sim "
        "sets its listener's); empty: any subscriber's",
    ),
    "real_time_factor": (1.0, "sim seconds per wall second (!= 1 needs use_sim_time)"),
    "lockstep": (
        False,
        "after each trigger message wait for the policy's command (needs use_sim_time; the "
        "closed loop of training: no compute latency, as fast as the policy)",
    ),
    "lockstep_timeout_s": (2.0, "lockstep: wall seconds to wait for a command before going on"),
    "render_size": (
        64,
        "camera image height (pixels), and its width unless render_width: the driving policy's (liquid-control sim "
        "fills both from the policy file)",
    ),
    "render_width": (0, "camera image width (pixels) of a camera that is not square; 0: render_size (square)"),
    "policy_inputs": (
        "",
        "the driving policy's inputs, comma-separated (camera, imu, wheels, command; liquid-control sim fills it "
        "from the policy file): the world's first update waits for a message of each, as the policy node does "
        "(empty: the world's own rule)",
    ),
    "policy_update_on": (
        "",
        "the sensors whose messages update the driving policy, comma-separated (e.g. imu; liquid-control sim fills "
        "it from the policy file): in lockstep the world waits for a command after those only (empty: the world's "
        "own)",
    ),
    "policy_reorder_lag_s": (
        0.0,
        "the driving policy's reordering lag in seconds (observation.reorder_lag_s; liquid-control sim fills it "
        "from the policy file): an update is released that long after its message, as the policy node does",
    ),
    "time_limit": (0.0, "episode time limit in sim seconds (0: the world's)"),
    "camera_topic": ("camera/image_raw", "sensor_msgs/Image (rgb8)"),
    "imu_topic": ("imu/data", "sensor_msgs/Imu"),
    "wheels_topic": ("joint_states", "sensor_msgs/JointState wheel velocities and angles (balancer)"),
    "target_topic": (
        "target_velocity",
        "geometry_msgs/Twist commanded velocity (balancer; reliable, transient local: the latest one); each "
        "episode's before its first sensor messages, which wait until every reliable subscriber has it",
    ),
    "target_rate_hz": (20.0, "rate of the target_velocity messages (balancer)"),
    "command_topic": ("cmd_vel", "command input"),
    "command_type": ("", "twist | twist_stamped | float64_multi_array (empty: the world's)"),
    "command_timeout_s": (0.5, "no command for this long (sim time) => zero command (finite: there is no 'off')"),
    "odom_topic": ("odom", "nav_msgs/Odometry (true pose)"),
    "odom_rate_hz": (50.0, "odometry rate (sim time)"),
    "status_topic": ("episode_status", "std_msgs/String JSON outcome of each episode"),
    "run_id": (
        "",
        "echoed as run_id in every episode status (liquid-control sim keeps its own run's statuses by it, another "
        "graph's sharing the domain ignored); empty: not sent",
    ),
    "wait_for_subscribers_s": (
        30.0,
        "before the first episode, wait up to this long for the sensor subscribers and the command publisher"
        " (it ends as soon as they are there)",
    ),
    "policy_reset_service": (
        "",
        "std_srvs/Trigger called before each episode (e.g. policy_node/reset: the policy node of this namespace)",
    ),
    "frame_prefix": ("", "prefix of the frame ids (odom, base_link, imu, camera, camera_optical, wheels)"),
    "camera_info_topic": (
        "",
        "sensor_msgs/CameraInfo with each image (empty: camera_info beside camera_topic as remapped)",
    ),
    "robot_description_topic": ("robot_description", "std_msgs/String URDF of the robot (transient local)"),
    "publish_tf": (True, "odom -> base_link and the wheels on /tf with the odometry, sensor mounts on /tf_static"),
    "record_bag": (
        "",
        "folder: record each episode into <folder>/episode_<seed> (rosbag2 MCAP: what this node publishes "
        "and the commands it receives, logged at sim time in the stamps' clock); empty: no recording",
    ),
}


# a frame_prefix: tokens of letters, digits and underscores, single '/' between them (and after the last)


_TARGET_ACK_TIMEOUT_S = 1.0  # wall seconds an episode's target may take to reach every reliable subscriber
_TICK_TOLERANCE = 1e-6  # physics stops within this of a requested time (world._advance_physics)
# the node clock (without use_sim_time: the system clock) minus the monotonic one changes only where the system
# clock steps (NTP slews both alike); a change larger than this moves the stamps with it (read noise: microseconds)
_CLOCK_STEP_TOLERANCE_S = 0.05


def _input_names(text: str) -> tuple[str, ...]:
    """``policy_inputs``'s names: ``"camera, imu"`` -> ("camera", "imu")."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _next_tick(tick: float, period: float, now: float) -> float:
    """The first tick of the grid ``tick + k * period`` after ``now``: a rate that holds on average although
    the loop reaches the ticks late (skipped ticks are not caught up)."""
    return tick + (math.floor((now - tick) / period) + 1) * period


class StopRequested(Exception):
    """SIGINT/SIGTERM: leave the episode where it is (not reported); main() closes the bag, the world and the node."""


class SimNode(Node):
    """A sim_envs world as a ROS 2 robot: publishes its sensors as they are delivered, applies the commands."""

    def __init__(self, stop: threading.Event | None = None, **kwargs):
        super().__init__("sim_node", **kwargs)
        self.stop = stop if stop is not None else threading.Event()  # set by main's signal handlers
        declare_node_parameters(self, SIM_NODE_PARAMETERS)
        p = {name: self.get_parameter(name).value for name in SIM_NODE_PARAMETERS}
        if isinstance(p["record_bag"], str):  # ~ as a shell expands it: none did in a launch argument or YAML file
            p["record_bag"] = user_path(p["record_bag"])
        self.use_sim_time = bool(self.get_parameter("use_sim_time").value)
        self.p = p
        self._validate()
        self.add_on_set_parameters_callback(self._on_set_parameters)  # after the declarations: they call it too
        io = WORLDS[p["world"]]
        self.command_type = p["command_type"] or io["command"]
        self.command_scale = io["command_scale"]()
        kwargs = dict(shift=p["shift"] or None)
        if "camera" in io["sensors"]:
            height, width = int(p["render_size"]), int(p["render_width"])
            kwargs["render_size"] = (height, width) if width else height
        if p["time_limit"] > 0:
            kwargs["time_limit"] = float(p["time_limit"])
        if p["policy_inputs"]:
            kwargs["policy_inputs"] = _input_names(p["policy_inputs"])
        if p["policy_update_on"]:
            kwargs["update_on"] = _input_names(p["policy_update_on"])
        kwargs["reorder_lag_s"] = float(p["policy_reorder_lag_s"])
        self.world = gymnasium.make(p["world"], **kwargs).unwrapped
        self.world.deliver_joint_positions = True  # the wheel angles of its JointState messages
        self.frame = lambda name: f"{p['frame_prefix']}{name}"
        spec = robot_description.robot_spec(p["world"], self.world.model)
        self.robot = robot_description.describe(self.world.model, spec)
        self._moving_joints = self.robot.moving_joints()
        self._imu_noise = io["imu_noise"]() if "imu_noise" in io else None  # None: covariance unknown (zeros)

        sensor_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.publishers_by_sensor = {}
        for sensor, topic_param in io["sensors"].items():
            msg_type = {"camera": Image, "imu": Imu, "encoders": JointState}[sensor]
            self.publishers_by_sensor[sensor] = self.create_publisher(msg_type, p[topic_param], sensor_qos)
        # a setpoint, not a stream: the latest one is what counts, and a late-joining subscriber gets it
        target_qos = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.target_pub = self.create_publisher(Twist, p["target_topic"], target_qos) if io["target"] else None
        self._published_target = None  # the last target published (a change goes out before the next message)
        self.odom_pub = self.create_publisher(Odometry, p["odom_topic"], 10)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.description_pub = self.create_publisher(String, p["robot_description_topic"], latched)
        self._description = String(
            data=robot_description.to_urdf(self.robot, p["frame_prefix"], source=f"the MJCF of {p['world']}")
        )
        self.description_pub.publish(self._description)
        self.tf_pub = self.tf_static_pub = self._static_transforms = None
        if p["publish_tf"] and TFMessage is None:
            self.get_logger().warning(
                "tf2_msgs is not importable: no /tf, /tf_static (a ROS installation has it; without one, "
                "scripts/build_interfaces.sh builds it into the venv)"
            )
        elif p["publish_tf"]:
            # tf2_ros's QoS: /tf reliable depth 100, /tf_static reliable transient local
            self.tf_pub = self.create_publisher(
                TFMessage, "/tf", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
            )
            self.tf_static_pub = self.create_publisher(TFMessage, "/tf_static", latched)
            self._publish_static_transforms()
        self.camera_info_pub, self._camera_info = None, None
        if "camera" in self.publishers_by_sensor and spec.camera is not None:
            # beside the topic the image publisher resolved to (a remapped image takes its camera_info along)
            info_topic = p["camera_info_topic"] or camera_info_topic(self.publishers_by_sensor["camera"].topic_name)
            self.camera_info_pub = self.create_publisher(CameraInfo, info_topic, sensor_qos)
            self._camera_info = self._camera_info_template(robot_description.camera_fovy_deg(self.world.model, spec))
        self.clock_pub = self.create_publisher(Clock, "/clock", 10) if self.use_sim_time else None
        self.status_pub = self.create_publisher(
            String,
            p["status_topic"],
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL),
        )
        command_sub = self.create_subscription(
            COMMAND_MESSAGES[self.command_type],
            p["command_topic"],
            self._on_command,
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
        )
        self.command_topic_name = command_sub.topic_name
        self.recorder = self._make_recorder(p["record_bag"]) if p["record_bag"] else None
        self.reset_client = (
            self.create_client(Trigger, p["policy_reset_service"]) if p["policy_reset_service"] else None
        )
        self._lock = threading.Lock()
        self._command = None  # (action in world units, arrival sim time)
        self._sim_now = 0.0
        self._delivered_at = None  # sim time a message being published was delivered at (its bag log time)
        self.commands_received = 0
        m = self.world.model
        root = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "root")
        self._qpos_adr, self._qvel_adr = int(m.jnt_qposadr[root]), int(m.jnt_dofadr[root])

    def _log_stamp(self):
        """A recorded message's log time: when the world delivered the one being published, else the sim time now.
        In lockstep the world runs on to the next update before a batch goes out, and every IMU message between two
        camera frames was logged at the next frame's time (up to a period late), not when it was delivered."""
        delivered = self._delivered_at
        return self._stamp(float(self.world.data.time) if delivered is None else delivered)

    def _make_recorder(self, folder: str):
        """Wrap the publishers so what they publish also goes into the episode's bag (liquid_control.bags)."""
        from liquid_control.bags.recording import EpisodeRecorder

        recorder = EpisodeRecorder(folder, self._log_stamp, {"source": "sim_node"})
        self.publishers_by_sensor = {s: recorder.wrap(pub) for s, pub in self.publishers_by_sensor.items()}
        self.odom_pub, self.status_pub = recorder.wrap(self.odom_pub), recorder.wrap(self.status_pub)
        if self.target_pub is not None:
            self.target_pub = recorder.wrap(self.target_pub)
        if self.camera_info_pub is not None:
            self.camera_info_pub = recorder.wrap(self.camera_info_pub)
        if self.tf_pub is not None:
            self.tf_pub = recorder.wrap(self.tf_pub)
        recorder.add_latched(self.description_pub, self._description)  # published once: in every episode's bag
        if self.tf_static_pub is not None:
            recorder.add_latched(self.tf_static_pub, self._static_transforms)
        return recorder  # the command topic, published by the policy, is added at each episode with its QoS

    def _validate(self):
        """Every parameter checked before anything runs: a ValueError listing each bad one with its value (main:
        exit 2), not an error in the middle of an episode or a value silently replaced by a default."""
        p, problems = self.p, []

        def number(name, low=0.0, high=math.inf, allow_low=False, what="number", note=""):
            """A finite number in (low, high] ([low, high] with ``allow_low``): the value, or None (a problem)."""
            v = p[name]
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
            if ok and (low < v or (allow_low and v == low)) and v <= high:
                return float(v)
            limits = f">= {low:g}" if allow_low else f"> {low:g}"
            if high < math.inf:
                limits += f" and <= {high:g}"
            problems.append(f"{name}: must be a finite {what} {note or limits}, got {shown(v)}")
            return None

        def integer(name, low, high=None):
            v = p[name]
            if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
                limits = f">= {low}" if high is None else f"in [{low}, {high}]"
                problems.append(f"{name}: must be an integer {limits}, got {shown(v)}")
                return False
            return True

        if p["world"] not in WORLDS:
            problems.append(f"world: {shown(p['world'])} is not one of {', '.join(WORLDS)}")
        if p["command_type"] not in ("", *COMMAND_TYPES):
            problems.append(f"command_type: {shown(p['command_type'])} is not {', '.join(COMMAND_TYPES)} (or empty)")
        for name in ("run_id", "status_listener"):
            if not isinstance(p[name], str):
                problems.append(f"{name}: must be a string, got {shown(p[name])}")
        if not isinstance(p["shift"], str):
            problems.append(f"shift: must be a shift preset or spec (a string), got {shown(p['shift'])}")
        elif p["shift"]:
            try:
                sim_envs.parse_shift(p["shift"])
            except ValueError as exc:  # names the bad part
                problems.append(f"shift: {exc}")
        for name in ("exit_when_done", "lockstep", "publish_tf"):
            if not isinstance(p[name], bool):
                problems.append(f"{name}: must be true or false, got {shown(p[name])}")
        rtf = number("real_time_factor")
        if rtf is not None and rtf != 1.0 and not self.use_sim_time:
            problems.append(f"real_time_factor: {rtf} != 1 needs use_sim_time:=true (stamps would not be wall time)")
        if p["lockstep"] is True and not self.use_sim_time:
            problems.append("lockstep: needs use_sim_time:=true (sim time no longer follows the wall clock)")
        # inf is no timeout (the robot would drive its last command forever), as policy_node's watchdog_timeout_s
        number("command_timeout_s", high=MAX_SECONDS, what="number of seconds")
        number("lockstep_timeout_s", high=MAX_SECONDS, what="number of seconds")
        number("wait_for_subscribers_s", high=MAX_SECONDS, allow_low=True, what="number of seconds")
        number("status_wait_s", high=MAX_SECONDS, allow_low=True, what="number of seconds")
        # NaN or negative: refused, not silently the world's limit
        number("time_limit", allow_low=True, what="number of sim seconds", note=">= 0 (0: the world's limit)")
        rates = f"in Hz from 1/{MAX_SECONDS:g} (one a day) to {MAX_RATE_HZ:g}"
        for name in ("odom_rate_hz", "target_rate_hz"):  # a period of 0 (inf Hz) or inf never reaches the next tick
            number(name, 1 / MAX_SECONDS, MAX_RATE_HZ, allow_low=True, what="rate", note=rates)
        if not isinstance(p["policy_inputs"], str):
            problems.append(f"policy_inputs: must be comma-separated input names, got {shown(p['policy_inputs'])}")
        elif p["policy_inputs"] and p["world"] in WORLDS:
            known = sim_envs.world_class(p["world"]).input_sensors
            unknown = [n for n in _input_names(p["policy_inputs"]) if n not in known]
            if unknown:
                problems.append(
                    f"policy_inputs: {', '.join(unknown)} not an input of {p['world']} (inputs: {', '.join(known)})"
                )
        if not isinstance(p["policy_update_on"], str):
            problems.append(
                f"policy_update_on: must be comma-separated sensor names, got {shown(p['policy_update_on'])}"
            )
        elif p["policy_update_on"] and p["world"] in WORLDS:
            sensors = sim_envs.world_class(p["world"]).sensor_names
            names = _input_names(p["policy_update_on"])
            unknown = [n for n in names if n not in sensors]
            if unknown:
                listed = ", ".join(sensors)
                problems.append(
                    f"policy_update_on: {', '.join(unknown)} not a sensor of {p['world']} (sensors: {listed})"
                )
            elif len(set(names)) != len(names):
                problems.append(f"policy_update_on: names a sensor twice, got {shown(p['policy_update_on'])}")
        number("policy_reorder_lag_s", high=MAX_SECONDS, allow_low=True, what="number of seconds")
        # the world's reset refuses a negative seed, mid-run; episode seeds (seed + k) stay below 2**32, as eval's
        episodes_ok = integer("episodes", 0)
        seed_ok = integer("seed", 0, EPISODE_SEED_LIMIT - 1)
        if seed_ok and episodes_ok and p["seed"] + p["episodes"] > EPISODE_SEED_LIMIT:
            problems.append(
                f"seed: every episode's seed (seed + k, k < episodes {p['episodes']}) must be below 2**32, got "
                f"{p['seed']}"
            )
            seed_ok = False
        integer("render_size", 8, 1024)  # the camera's range (sim_envs.world.camera_image_shape)
        width = p["render_width"]
        if isinstance(width, bool) or not isinstance(width, int) or not (width == 0 or 8 <= width <= 1024):
            problems.append(
                f"render_width: must be 0 (square: render_size) or an integer in [8, 1024], got {shown(width)}"
            )
        for name in SIM_NODE_PARAMETERS:
            if name.endswith("_topic") or name == "policy_reset_service":
                if name in ("camera_info_topic", "policy_reset_service") and p[name] == "":
                    continue  # empty: beside the camera topic / no reset service
                problem = topic_name_problem(p[name])
                if problem is None:  # what the regular expression lets through, rclpy may still refuse
                    try:
                        service = name == "policy_reset_service"
                        (self.resolve_service_name if service else self.resolve_topic_name)(p[name])
                    except Exception as exc:
                        problem = f"{shown(p[name])} is not a valid name ({str(exc).splitlines()[0]})"
                if problem:
                    problems.append(f"{name}: {problem}")
        problem = frame_prefix_problem(p["frame_prefix"])
        if problem:
            problems.append(f"frame_prefix: {problem}")
        if not isinstance(p["record_bag"], str):
            problems.append(f"record_bag: must be a folder (a string), got {shown(p['record_bag'])}")
        if episodes_ok and seed_ok and p["record_bag"] and isinstance(p["record_bag"], str):
            taken = taken_episode_bags(p["record_bag"], p["seed"], p["episodes"])
            if taken:  # refused now, not when the robot reaches that episode
                problems.append(f"record_bag: {p['record_bag']} already holds {', '.join(taken)} (never overwritten)")
        if problems:
            raise ValueError("invalid parameters:\n  - " + "\n  - ".join(problems))

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """Run-time changes (``ros2 param set``, a set_parameters call) are refused with the reason: the node reads
        its parameters at startup (its world, publishers and rates are made from them); a value that would be
        accepted and ignored tells the robot's user something that is not so. Setting the value in use is fine."""
        return refuse_startup_parameter_changes(
            self, parameters, "restart the node with the new value (sim_node applies no change at run time)"
        )

    # ------------------------------------------------------------------------------------------- command
    def _on_command(self, msg):
        value = command_vector(msg, message_type_name(msg))
        if value.shape != self.command_scale.shape or not np.all(np.isfinite(value)):
            self.get_logger().warning(
                f"ignoring a command on {self.command_topic_name} ({value.size} values: {value.tolist()[:6]}"
                f"{' ...' if value.size > 6 else ''}): needs {self.command_scale.size} finite values",
                throttle_duration_sec=2.0,
            )
            return
        if self.recorder is not None:  # before it counts: lockstep resumes the world on the count
            # at sim time now, not a message's delivery time (the sim thread may be publishing a batch meanwhile)
            self.recorder.record(
                self.resolve_topic_name(self.p["command_topic"]), msg, self._stamp(float(self.world.data.time))
            )
        with self._lock:
            self._command = (value / self.command_scale, self._sim_now)
            self.commands_received += 1

    def _current_action(self, sim_t: float) -> np.ndarray:
        with self._lock:
            command = self._command
        if command is None or sim_t - command[1] > self.p["command_timeout_s"]:
            return np.zeros(self.command_scale.shape)
        return command[0]

    # ------------------------------------------------------------------------------------------- messages
    def _node_clock_offset(self) -> float:
        """The node clock's seconds minus ``time.monotonic()``'s, read between two monotonic readings a moment
        apart (a thread preempted between the reads would make it off by as long as the pause)."""
        for _ in range(5):
            before = time.monotonic()
            node_s = self.get_clock().now().nanoseconds * 1e-9
            after = time.monotonic()
            if after - before < _CLOCK_STEP_TOLERANCE_S / 10:
                break
        return node_s - (before + after) / 2

    def _anchor_stamps(self, sim0: float) -> None:
        """Without use_sim_time, stamps are the node clock now + (sim time - ``sim0``) from here on."""
        if self.use_sim_time:  # stamps are sim time; the node clock is /clock
            self._wall_epoch = 0.0
            return
        self._clock_offset = self._node_clock_offset()
        self._wall_epoch = time.monotonic() + self._clock_offset - sim0

    def _follow_clock_steps(self) -> None:
        """Without use_sim_time: where the node clock stepped against the monotonic one (on which the episode is
        paced) since the stamps were anchored, the stamps move by the step, as a driver stamping with the node
        clock does; a policy node comparing them with its clock (the same system clock) would otherwise reject
        every message as from the future after a step back, or as too old after one forward, until the next
        episode. Nothing changes while the clock does not step: stamp differences stay sim time differences."""
        if self.use_sim_time:
            return
        offset = self._node_clock_offset()
        step = offset - self._clock_offset
        if abs(step) > _CLOCK_STEP_TOLERANCE_S:
            self._clock_offset = offset
            self._wall_epoch += step
            self.get_logger().warning(
                f"the node clock (system clock) stepped {step:+.3f} s against the monotonic clock: the stamps "
                "follow it from here on (the episode's pacing does not change)"
            )

    def _stamp(self, sim_t: float):
        seconds = sim_t if self.use_sim_time else self._wall_epoch + sim_t
        sec, nanosec = stamps.sec_nanosec(seconds)
        return Time(sec=sec, nanosec=nanosec)

    def _publish_reading(self, sensor: str, stamp: float, reading: np.ndarray, positions=None):
        """A sensor message of ``reading`` measured at sim time ``stamp``; ``positions``: the wheel joints' angles
        then (the world's ``delivered_positions``), beside the encoders' velocities."""
        header_stamp = self._stamp(stamp)
        if sensor == "camera":
            msg = numpy_to_image(np.asarray(reading, dtype=np.uint8), "rgb8")
            msg.header.frame_id, msg.header.stamp = self.frame("camera_optical"), header_stamp
            if self.camera_info_pub is not None:
                self._publish_camera_info(msg)
        elif sensor == "imu":  # REP 145: in the imu frame, accelerometer including gravity
            msg = Imu()
            msg.header.frame_id = self.frame("imu")
            r = [float(v) for v in reading]
            msg.angular_velocity.x, msg.angular_velocity.y, msg.angular_velocity.z = r[:3]
            msg.linear_acceleration.x, msg.linear_acceleration.y, msg.linear_acceleration.z = r[3:6]
            msg.orientation_covariance[0] = -1.0  # no orientation estimate (sensor_msgs/Imu: -1 in element 0)
            if self._imu_noise is not None:  # else all zeros: "covariance unknown" (sensor_msgs/Imu)
                gyro_std, accel_std = self._imu_noise
                for i in (0, 4, 8):  # independent axes: the nominal white-noise variances on the diagonal
                    msg.angular_velocity_covariance[i] = gyro_std**2
                    msg.linear_acceleration_covariance[i] = accel_std**2
        else:  # wheel encoders: the velocities measured (noisy) and the joints' true angles (rad) at the stamp
            msg = JointState(name=list(WHEEL_JOINT_NAMES), velocity=[float(v) for v in reading])
            if positions is not None:
                msg.position = [float(q) for q in positions]
        msg.header.stamp = header_stamp
        self.publishers_by_sensor[sensor].publish(msg)

    def _camera_info_template(self, fovy_deg: float) -> CameraInfo:
        """Pinhole intrinsics of the rendered camera: MuJoCo's fovy is vertical, pixels are square, no distortion."""
        height, width, _ = self.world.image_shape
        info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
        info.d = [0.0] * 5
        info.k, info.p = pinhole_intrinsics(width, height, fovy_deg)
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        return info

    def _publish_camera_info(self, image: Image):
        info = self._camera_info
        info.header.stamp, info.header.frame_id = image.header.stamp, image.header.frame_id
        self.camera_info_pub.publish(info)

    def _transform(self, stamp, parent: str, child: str, xyz, quat_wxyz) -> TransformStamped:
        t = TransformStamped()
        t.header.stamp, t.header.frame_id, t.child_frame_id = stamp, self.frame(parent), self.frame(child)
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = (float(x) for x in xyz)
        r = t.transform.rotation
        r.w, r.x, r.y, r.z = (float(x) for x in quat_wxyz)
        return t

    def _publish_static_transforms(self):
        stamp = self.get_clock().now().to_msg()
        transforms = [
            self._transform(stamp, j.parent, j.child, j.xyz, robot_description.matrix_to_quat(j.rotation))
            for j in self.robot.fixed_joints()
        ]
        self._static_transforms = TFMessage(transforms=transforms)
        self.tf_static_pub.publish(self._static_transforms)

    def _publish_odometry(self, sim_t: float):
        d = self.world.data
        q, v = d.qpos[self._qpos_adr : self._qpos_adr + 7], d.qvel[self._qvel_adr : self._qvel_adr + 6]
        stamp = self._stamp(sim_t)
        if self.tf_pub is not None:  # the same pose as the odometry, and the wheels at their joint angles
            transforms = [self._transform(stamp, "odom", "base_link", q[:3], q[3:7])]
            for joint in self._moving_joints:
                transforms.append(
                    self._transform(stamp, joint.parent, joint.child, *robot_description.joint_transform(joint, d.qpos))
                )
            self.tf_pub.publish(TFMessage(transforms=transforms))
        msg = Odometry()
        msg.header.stamp = stamp
        msg.header.frame_id, msg.child_frame_id = self.frame("odom"), self.frame("base_link")
        pose = msg.pose.pose
        pose.position.x, pose.position.y, pose.position.z = (float(x) for x in q[:3])
        pose.orientation.w, pose.orientation.x, pose.orientation.y, pose.orientation.z = (float(x) for x in q[3:7])
        # free joint: linear velocity in world, angular in body frame
        linear_body = robot_description.quat_to_matrix(q[3:7]).T @ v[:3]
        msg.twist.twist.linear.x, msg.twist.twist.linear.y, msg.twist.twist.linear.z = (float(x) for x in linear_body)
        msg.twist.twist.angular.x, msg.twist.twist.angular.y, msg.twist.twist.angular.z = (float(x) for x in v[3:6])
        self.odom_pub.publish(msg)

    # ------------------------------------------------------------------------------------------- episodes
    def _published(self) -> dict:
        """Topic name -> our publisher, for everything a commander may subscribe to (sensors, odometry, ...)."""
        pubs = list(self.publishers_by_sensor.values()) + [self.odom_pub, self.target_pub, self.camera_info_pub]
        return {pub.topic_name: pub for pub in pubs if pub is not None}

    def commander_topics(self) -> set[str] | None:
        """Our topics that the node(s) publishing our command topic subscribe to (None: no commander seen), or
        where a commander reads none of them, those of the nodes publishing what it reads (one step upstream: a
        takeover_mux between the policy node and the base, which read our sensors only through the policy node;
        sim_node waited out wait_for_subscribers_s behind it, warning that no policy node was seen)."""
        commanders = self.get_publishers_info_by_topic(self.command_topic_name)
        if not commanders:
            return None
        ours = self._published()
        wanted, upstream = set(), set()
        for info in commanders:
            for name in self._subscribed_by(info):
                (wanted if name in ours else upstream).add(name)
        if wanted:
            return wanted
        for topic in upstream - {self.command_topic_name}:
            for info in self.get_publishers_info_by_topic(topic):
                wanted |= {name for name in self._subscribed_by(info) if name in ours}
        return wanted

    def _subscribed_by(self, info) -> list[str]:
        """The topics the node of ``info`` (a publisher's graph entry) subscribes to; none where the graph does not
        know its node yet (matched before the graph knew its node: the next poll asks again) or it left."""
        if node_path(info) is None:
            return []
        try:
            return [
                name for name, _ in self.get_subscriber_names_and_types_by_node(info.node_name, info.node_namespace)
            ]
        except Exception:  # the node left the graph between the two calls
            return []

    def wait_for_graph(self):
        """Wait (bounded) until a policy commands us and every topic of ours it subscribes to (its sensors, and
        odometry where it reads it) has a subscriber here, so the first messages are not lost. Sensors it does
        not use (the rover policy's IMU) are not waited for."""
        deadline = time.monotonic() + float(self.p["wait_for_subscribers_s"])
        ours = self._published()
        wanted, matched = None, set()
        while time.monotonic() < deadline and self.running():
            wanted = self.commander_topics()
            if wanted:  # a commander with subscriptions to us (still discovering them: empty)
                matched = {t for t in wanted if ours[t].get_subscription_count() > 0}
                if matched == wanted:
                    self.get_logger().info(f"the policy node subscribes to {', '.join(sorted(wanted))}: starting")
                    return True
            time.sleep(0.05)
        self.check_stop()
        if float(self.p["wait_for_subscribers_s"]) <= 0:
            self.get_logger().info("wait_for_subscribers_s is 0: starting without waiting for a policy node")
            return False
        if wanted is None:
            seen = f"nothing publishes {self.command_topic_name}"
        elif not wanted:
            seen = f"a node publishes {self.command_topic_name}, but none of its subscriptions to our topics is known"
        else:
            missing = ", ".join(sorted(wanted - matched))
            seen = f"the policy node's subscriptions to {missing} not matched here yet"
        self.get_logger().warning(
            f"no policy node seen on the sensor/command topics after {self.p['wait_for_subscribers_s']} s"
            f" ({seen}); starting anyway"
        )
        return False

    def wait_for_status_delivery(self, limit_s: float) -> bool:
        """Before exiting: wait (up to ``limit_s``) until a subscriber of the status topic (``status_listener``'s,
        where named) has acknowledged every status (transient local: one discovered only now still gets them), so
        that a listener that was discovered late, as ``liquid-control sim``'s can be when episodes are short, is
        not left without the outcome. Any subscriber would do before: another one on the domain (``liquid-control
        view``) ended the wait, and `sim` said 'sim_node exited with code 0' as a failure, its listener not yet
        matched."""
        deadline = time.monotonic() + limit_s
        while not self._status_listener_matched() and time.monotonic() < deadline and self.running():
            time.sleep(0.02)
        remaining = deadline - time.monotonic()
        if not self._status_listener_matched() or remaining <= 0:
            return False
        return self._acked(self.status_pub, remaining)

    def _status_listener_matched(self) -> bool:
        """A subscriber of the status topic is matched (``status_listener``'s, where named: in the graph, and every
        subscription the graph shows matched, so the acknowledgement waited for includes its)."""
        matched = self.status_pub.get_subscription_count()
        listener = self.p["status_listener"]
        if not listener:
            return matched > 0
        subscriptions = self.get_subscriptions_info_by_topic(self.status_pub.topic_name)
        return any(info.node_name == listener for info in subscriptions) and matched >= len(subscriptions)

    def running(self) -> bool:
        """Neither a signal nor a shutdown of the node's context (the default one, or that it was made on) has asked
        this node to stop."""
        return self.context.ok() and not self.stop.is_set()

    def check_stop(self) -> None:
        """Raise :class:`StopRequested` where a loop waits or steps, so that a signal ends it at once."""
        if not self.running():
            raise StopRequested

    def _reset_policy(self):
        if self.reset_client is None:
            return
        deadline = time.monotonic() + 5.0
        while not self.reset_client.wait_for_service(timeout_sec=0.1):
            self.check_stop()
            if time.monotonic() > deadline:
                service = self.resolve_service_name(self.p["policy_reset_service"])  # under a namespace: its full name
                self.get_logger().warning(
                    f"{service} (policy_reset_service) not available after 5 s: this episode "
                    "starts with the policy's liquid state of the last one (is a policy node running and configured?)"
                )
                return
        future = self.reset_client.call_async(Trigger.Request())
        deadline = time.monotonic() + 5.0
        while not future.done() and time.monotonic() < deadline:
            self.check_stop()
            time.sleep(0.005)

    def _publish_target(self, command=None) -> None:
        """The world's velocity target (``target_topic``): ``command``, default the one in force now."""
        cmd = self.world.command if command is None else command
        self.target_pub.publish(Twist(linear=Vector3(x=float(cmd[0])), angular=Vector3(z=float(cmd[1]))))
        self._published_target = tuple(float(c) for c in cmd)

    def _publish_changed_target(self, command) -> None:
        """The world's target changed before the message about to go out: published now and acknowledged
        (bounded) first, so the policy's first update after the change holds it as the world's observation does,
        not up to one ``target_rate_hz`` tick and one update later."""
        self._publish_target(command)
        self._await_target_ack("the changed target")

    def _publish_episode_target(self) -> None:
        """The episode's target, after the policy's reset and before the episode's first sensor messages, which
        wait (bounded) until every reliable subscriber has acknowledged it: DDS does not order messages across
        topics, and a policy taking those first would run its first update with the previous episode's target
        (~/reset keeps setpoints). Not before the reset: policy_node stamps a Twist at arrival with its clock, then
        still the previous episode's last /clock, and rejects it as a duplicate when the previous episode's last
        target went out at that time."""
        self._publish_target()
        self._await_target_ack("the episode's target")

    def _acked(self, publisher, limit_s: float) -> bool:
        """``publisher``'s messages acknowledged by every reliable subscriber within ``limit_s`` (a signal ends the
        wait), waited for in short slices: one long ``wait_for_all_acked`` holds the GIL (the command thread and the
        signal flag wait with it)."""
        return acknowledged(publisher, limit_s, self.running)

    def _await_target_ack(self, what: str) -> None:
        if not self._acked(self.target_pub, _TARGET_ACK_TIMEOUT_S) and self.running():  # (a stop is no failure)
            self.get_logger().warning(
                f"{self.target_pub.topic_name}: {what} not acknowledged by every reliable subscriber "
                f"within {_TARGET_ACK_TIMEOUT_S} s; going on anyway",
                throttle_duration_sec=10.0,
            )

    def run_episode(self, index: int, seed) -> dict:
        """Run one episode from ``seed``, publishing every delivery; its status (also published on the status topic)."""
        world, rtf, physics_dt = self.world, float(self.p["real_time_factor"]), self.world.physics_dt
        _, reset_info = world.reset(seed=seed)
        self._sim_now = float(world.data.time)  # commands answering what reset delivered are stamped in this episode
        with self._lock:
            self._command = None
        self._reset_policy()
        sim0 = float(world.data.time)
        self._anchor_stamps(sim0)  # the target's log time in the bag (set again below)
        if self.recorder is not None:
            # the command topic is published by the policy, not by us: its bag entry carries the QoS its
            # publishers offer now (ros2 bag record's metadata), not none
            commanders = self.get_publishers_info_by_topic(self.command_topic_name)
            self.recorder.add_topic(
                self.command_topic_name, COMMAND_MESSAGES[self.command_type], [i.qos_profile for i in commanders]
            )
            self.recorder.start(seed, world=self.p["world"], shift=self.p["shift"])
            self._recording = (index, seed)
        if self.clock_pub is not None:
            # at the first update's stamp, not at the time reset ended (a reordering lag later): policy_node stamps
            # the episode's target on arrival with this clock, and a policy's reordering buffer, releasing in stamp
            # order, held it back past the first updates, which then waited for it (lockstep: 2 s each)
            self.clock_pub.publish(Clock(clock=self._stamp(float(reset_info["stamp"]))))
        if self.target_pub is not None:  # the episode's target before its first messages: the world has it from reset
            self._publish_episode_target()
        wall0 = time.monotonic()  # the episode's wall clock starts once its target is there
        self._anchor_stamps(sim0)
        odom_period, target_period = 1.0 / self.p["odom_rate_hz"], 1.0 / self.p["target_rate_hz"]
        next_odom = next_target = sim0
        last_odom = -math.inf
        counts = {s: 0 for s in self.publishers_by_sensor}
        commands_before = self.commands_received
        lockstep = bool(self.p["lockstep"])
        info, terminated, update_stamp = {}, False, -math.inf
        # the messages the world delivered inside reset (up to its first update) go out first: the policy's
        # first update is the world's, and in lockstep the world waits for its command
        waited_for = self.commands_received
        if self.target_pub is not None:  # published above
            next_target = _next_tick(next_target, target_period, sim0)
        stamps = [stamp for _, stamp, _ in world.reset_deliveries]
        if stamps and min(stamps) < sim0 - _TICK_TOLERANCE:
            # the pose from the episode's first message on, so every message stamped inside reset has a transform
            # (a tf2 filter dropped the first camera frame, stamped before the first tick): the pose at the first
            # update, stamped at the first message (the rover has not moved meanwhile, 1.5e-5 m; a balancer ~1 mm)
            self._publish_odometry(min(stamps))
        try:
            for (sensor, stamp, reading), positions in zip(world.reset_deliveries, world.reset_delivery_positions):
                self._delivered_at = stamp + world.timings[sensor].latency  # delivered inside reset: when
                self._publish_reading(sensor, stamp, reading, positions)
                counts[sensor] += 1
        finally:
            self._delivered_at = None
        if lockstep:
            self._wait_for_command(waited_for)
        while True:
            self.check_stop()
            if lockstep:
                target = None  # one trigger message at a time, then wait for its command
            else:
                # Sim time allowed by the wall clock, rounded down to whole physics steps.
                target = sim0 + math.floor((time.monotonic() - wall0) * rtf / physics_dt) * physics_dt
                if target <= world.data.time:
                    time.sleep(min(physics_dt / rtf, 0.002))
                    continue
                if next_odom > world.data.time + _TICK_TOLERANCE:  # stop at the odometry tick: 50 Hz, on time
                    target = min(target, next_odom)
            deliveries, released, at_end = [], world.released_updates, False
            while True:
                self._sim_now = float(world.data.time)
                world.apply_action(self._current_action(self._sim_now))
                end = world.end_without_update()  # no update within the horizon: the episode ends there, as step
                until = target if end is None or (target is not None and target < end) else end
                delivery = world.next_delivery(until=until)
                if delivery is None:
                    at_end = end is not None and until == end
                    break
                command = world.command.copy() if self.target_pub is not None else None
                deliveries.append((*delivery, world.delivered_positions, command, float(world.data.time)))
                if delivery[0] in world.update_on:
                    update_stamp = delivery[1]
                    terminated, info = world.outcome()
                    if terminated or update_stamp >= world.time_limit:
                        break
                if lockstep and world.released_updates > released:  # one update at a time, then its command
                    break
            triggered = world.released_updates > released
            now = float(world.data.time)
            self._follow_clock_steps()  # before this batch's stamps: they all take one offset
            if self.clock_pub is not None:
                self.clock_pub.publish(Clock(clock=self._stamp(now)))
            waited_for = self.commands_received
            try:
                for sensor, stamp, reading, positions, command, self._delivered_at in deliveries:
                    if command is not None and tuple(float(c) for c in command) != self._published_target:
                        self._publish_changed_target(command)
                    self._publish_reading(sensor, stamp, reading, positions)
                    counts[sensor] += 1
            finally:
                self._delivered_at = None
            if now >= next_odom - _TICK_TOLERANCE:
                self._publish_odometry(now)
                last_odom = now
                next_odom = _next_tick(next_odom, odom_period, now + _TICK_TOLERANCE)
            if self.target_pub is not None and now >= next_target:
                self._publish_target()
                next_target = _next_tick(next_target, target_period, now)
            if terminated or update_stamp >= world.time_limit or at_end:  # truncated as the env: first update
                if last_odom < now - _TICK_TOLERANCE:  # the pose at the episode's last messages, between two ticks
                    self._publish_odometry(now)
                break  # past the limit, or the limit when none comes within the horizon
            if lockstep and triggered:
                self._wait_for_command(waited_for)
        terminated, info = world.outcome()
        success = bool(info.get("success"))
        if success:
            outcome = "success"
        elif info.get("fallen"):
            outcome = "fallen"
        elif info.get("collision"):
            outcome = "collision"
        else:
            outcome = "timeout"
        status = {
            "episode": index,
            "seed": seed,
            "world": self.p["world"],
            "shift": self.p["shift"],
            "outcome": outcome,
            "success": success,
            "sim_time": round(float(world.data.time), 4),
            "wall_time": round(time.monotonic() - wall0, 3),
            "messages": counts,
            "updates": int(world.released_updates),  # the policy's updates (its first waits for every input)
            "commands_received": self.commands_received - commands_before,
        }
        for key in ("distance", "tracking_error"):
            if key in info:
                status[key] = round(float(info[key]), 4)
        if self.p["run_id"]:
            status["run_id"] = self.p["run_id"]
        self.status_pub.publish(String(data=json.dumps(status)))
        if self.recorder is not None:
            status["bag"] = str(self.recorder.stop())
        self.get_logger().info(f"episode {index}: {outcome} at t={status['sim_time']:.2f} s {json.dumps(status)}")
        return status

    def _wait_for_command(self, count_before: int):
        """Lockstep: hold the simulation until a command newer than ``count_before`` arrives (bounded)."""
        deadline = time.monotonic() + float(self.p["lockstep_timeout_s"])
        while self.commands_received <= count_before and time.monotonic() < deadline and self.running():
            time.sleep(0.0002)
        self.check_stop()
        if self.commands_received <= count_before:
            self.get_logger().warning(
                "lockstep: no command after the update; continuing with the held one", throttle_duration_sec=2.0
            )

    def finish_recording(self) -> None:
        """Close the bag of the episode being recorded when the node stops (a complete bag); one that a stop cut
        short (it has no episode_status message) is said in the log, naming it."""
        if self.recorder is None:
            return
        cut = self.recorder.stop()
        if cut is not None:
            from liquid_control.bags.recording import cut_short_message

            self.get_logger().warning(f"record_bag: {cut_short_message(cut, *self._recording)}")

    def run(self) -> list[dict]:
        """Wait for the policy node, then run the episodes (seeds ``seed + k``); their statuses."""
        self.wait_for_graph()
        results = []
        episode = 0
        while self.running() and (self.p["episodes"] == 0 or episode < self.p["episodes"]):
            seed = int(self.p["seed"]) + episode  # episode k = the world reset with seed + k, as in evaluation
            results.append(self.run_episode(episode, seed))
            episode += 1
        return results


def spin_commands(executor, done: threading.Event) -> None:
    """Run the command callbacks until ``done`` (or until the context is shut down)."""
    while rclpy.ok() and not done.is_set():
        try:
            executor.spin_once(timeout_sec=0.05)
        except rclpy.executors.ExternalShutdownException:
            break
        except RCLError:
            if rclpy.ok():
                raise
            break  # the context was shut down between the check and the wait


def main(args=None) -> int:
    """Entry point of ``ros2 run liquid_control sim_node``; exit code 2 for invalid parameters.

    SIGINT/SIGTERM only set a flag (a second one too, as from a terminal and a launch system at once); the node's
    loops check it, leave the episode unreported, and the node closes its bag, its world and its context here.
    rclpy's own handler would raise KeyboardInterrupt wherever the main thread is, e.g. inside ctypes' argument
    conversion of MuJoCo's EGL render, which turns it into a ``ctypes.ArgumentError`` traceback.
    Ends the process (``processes.end_process_now``) once the node is shut down, as policy_node does.
    """
    from liquid_control.ros.executable import init_ros, warn_sections_for_another_namespace

    stop = threading.Event()
    if not init_ros("sim_node", args=args, signal_handler_options=SignalHandlerOptions.NO):
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    try:
        node = SimNode(stop=stop)
    except ValueError as exc:
        print(f"sim_node: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    warn_sections_for_another_namespace(node, sys.argv if args is None else args)
    executor = rclpy.executors.SingleThreadedExecutor()  # command callbacks; the world runs in this thread
    executor.add_node(node)
    done = threading.Event()

    spinner = threading.Thread(target=spin_commands, args=(executor, done), daemon=True)
    spinner.start()
    try:
        node.run()
        if not node.p["exit_when_done"]:
            while node.running():
                time.sleep(0.1)
        elif node.running():
            node.wait_for_status_delivery(float(node.p["status_wait_s"]))
    except (StopRequested, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        done.set()
        spinner.join()  # no callback may run while the node and the world go away
        node.finish_recording()  # an interrupted episode still gets a complete bag
        node.world.close()
        node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
    # The bag is closed, the world and every ROS entity gone: skip the interpreter's exit (collecting MuJoCo's,
    # torch's, rclpy's modules: ~0.5 s, more on a loaded CPU), which ran into `liquid-control sim`'s 3 s grace after
    # its SIGINT and got the node SIGKILLed.
    end_process_now(0)
