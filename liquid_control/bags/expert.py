"""Expert demonstrations straight into bags: a world sim_node runs (the rover by default, ``LiquidBalance-v0``,
``LiquidBalanceNav-v0``) driven by its privileged expert, written as the messages ``sim_node`` publishes for it (no
DDS, no real-time pacing; one bag per episode).

This is the teleoperation session of a real robot, simulated: the world runs its sensor timing model
exactly as in ``sim_node`` (the rover: camera 15 Hz +- 20%, IMU 100 Hz; stamped at measurement, logged at
delivery), and at each update (a message of the world's update sensors: the rover's camera frames, the balancer's
IMU messages) the expert (the "operator") commands on the topic the world's policy node commands on (its shipped
parameter file's ``command_topic``: the rover a Twist on ``/cmd_vel``, the balancers their wheel torques in N m on
``/wheel_torques``; log time = the message's delivery: no reaction time). The wheel encoders go on
``/joint_states`` (their velocities and the wheels' true angles at the stamp, as sim_node's), ``LiquidBalance-v0``'s
velocity target (a Twist) on ``/target_velocity`` before the episode's first message and before the message it
changes at. The rover only: with ``noise_std > 0`` the base executes the operator's command plus noise (DART-style
noise injection, recorded on ``/base/cmd_vel``) while ``/cmd_vel`` keeps the operator's clean command, so the
recording holds recovery situations labelled by the expert, without DAgger.

With a ``driver`` (a trained policy) the roles turn: the policy drives, fed every delivered message through
the runtime's ``PolicyRunner`` as ``policy_node`` would be, and the expert supervises it as a safety operator
(HG-DAgger, Kelly et al. 2019). The updates are then the policy's, as ``liquid-control sim`` makes the world for
it: every message of its ``observation.update_on`` sensors (a camera+IMU policy's frames and IMU messages) from
its first update on, each update's command executed until the next. At each, the operator takes over where the
policy's command departs from its own (``Takeover``),
and only its commands while it holds control are recorded on ``/cmd_vel``, the labels; the base's command
(policy or operator) goes to ``/base/cmd_vel``. The deploy-record-retrain round of docs/real_robot.md.
In shadow mode (``Takeover.shadow``) the operator commands along at every update, driving or not, and every
update gets its label (DAgger's labels, Ross et al. 2011, with a safety driver); who drives stays the rule's,
and with ``Takeover.operator_share`` the operator also drives a random share of the updates (DAgger's mixture).

Stamps are sim time of the episode (from 0), as ``sim_node`` with ``use_sim_time``. Topics and QoS are
``sim_node``'s: sensors reliable depth 10 (the camera's ``camera_info`` beside each image), commands reliable
depth 10 (the target reliable, transient local), the JSON outcome on ``/episode_status`` (transient local) at the
end. Not written (sim_node's bags have them): the robot model, ``/tf``, ``/tf_static`` and ``/odom``, so a 3D view
has no robot or frames, nor the target's repeats at ``target_rate_hz`` (the same setpoint again changes nothing).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liquid_control import folder_lock
from liquid_control.conventions.camera_info import world_camera_fovy_deg
from liquid_control.conventions.params import camera_info_topic
from liquid_control.conventions.sim_worlds import WORLDS
from liquid_control.paths import first_missing_folder, remove_made_folder

from .io import BagError, BagWriter
from .messages import (
    CAMERA_INFO,
    FLOAT64_ARRAY,
    IMAGE,
    IMU,
    JOINT_STATE,
    STRING,
    TWIST,
    camera_info_message,
    float64_array_message,
    image_message,
    imu_message,
    joint_state_message,
    string_message,
    twist_message,
)
from .recording import episode_bag_name, existing_episode_seeds, unfinished_bag

SENSOR_QOS = {"history": "keep_last", "depth": 10, "reliability": "reliable", "durability": "volatile"}
STATUS_QOS = {"history": "keep_last", "depth": 10, "reliability": "reliable", "durability": "transient_local"}
TARGET_QOS = {"history": "keep_last", "depth": 1, "reliability": "reliable", "durability": "transient_local"}
TOPICS = {  # sim_node's (its topic parameters' defaults, resolved in the root namespace)
    "camera": "/camera/image_raw",
    "camera_info": camera_info_topic("/camera/image_raw"),
    "imu": "/imu/data",
    "encoders": "/joint_states",
    "target": "/target_velocity",
    "command": "/cmd_vel",  # the rover's: each world's is its policy node's (command_topic)
    "executed": "/base/cmd_vel",
    "status": "/episode_status",
}
COMMAND_MESSAGES = {"twist": TWIST, "float64_multi_array": FLOAT64_ARRAY}  # the worlds' command kinds
ROVER = "LiquidRover-v0"  # the only world a policy drives under the expert's supervision, and with noise injected
ROVER_ONLY = "noise injection (--noise-std, --burst-rate), --expert-margin and a driving policy (--policy)"


def command_topic(world: str) -> str:
    """Where the operator of ``world`` commands: the ``command_topic`` of the world's shipped policy_node parameter
    file (where the policy will command, and where ``liquid-control sim`` has sim_node listen), absolute."""
    from .stream import absolute_topic, default_node_parameters_file, load_node_parameters

    return absolute_topic(str(load_node_parameters(default_node_parameters_file(world))["command_topic"]))


@dataclass(frozen=True)
class ExpertNoise:
    """What the base executes instead of the operator's command (action units).

    ``std``/``correlation``: Gaussian noise per update and dimension, correlated over updates (0: white; 0.9:
    drifts lasting ~10 updates), as DART. ``burst_rate``: swerves per second of driving, each replacing the
    angular command by a random one in [-1, 1] for ``burst_s`` seconds (the operator's deliberate deviations
    that a recovery demonstration starts from); the operator's label stays the expert's throughout.
    """

    std: float = 0.0
    correlation: float = 0.0
    burst_rate: float = 0.0
    burst_s: float = 0.6

    def __post_init__(self):
        if not (self.std >= 0 and 0 <= self.correlation < 1):
            raise ValueError(f"noise std must be >= 0 and correlation in [0, 1), got {self.std}, {self.correlation}")
        if not (self.burst_rate >= 0 and self.burst_s > 0):
            raise ValueError(f"burst rate must be >= 0 and duration > 0, got {self.burst_rate}, {self.burst_s}")

    @property
    def active(self) -> bool:
        """Whether any noise or swerve is applied (else the base executes the operator's command)."""
        return self.std > 0 or self.burst_rate > 0

    def describe(self) -> dict:
        """The settings as a plain dict (stored in the bag's metadata)."""
        return {
            "std": self.std,
            "correlation": self.correlation,
            "burst_rate": self.burst_rate,
            "burst_s": self.burst_s,
        }


NOISE_WITH_DRIVER = (
    "noise injection (--noise-std, --burst-rate) perturbs the operator's driving; with a driving policy (--policy) "
    "there is none"
)


@dataclass(frozen=True)
class Takeover:
    """When the supervising operator takes over from a driving policy, and when it hands back.

    It takes over at an update where the policy's command differs from its own by more than ``threshold``
    (action units, the largest element), keeps control for at least ``hold_s`` seconds and hands back at the
    first update after that where the two agree within ``threshold / 2`` (hysteresis: no flicker at the edge).
    ``shadow``: the operator's command is recorded as the label at every update, not only where it drives.
    ``operator_share``: besides, the operator drives each update with this probability, drawn at random per
    update (DAgger's mixture policy, its beta; Ross et al. 2011): the policy still meets the states its own errors
    lead to, while the operator's share keeps it from running far off. 0 (default): only the rule decides.
    """

    threshold: float = 0.5
    hold_s: float = 1.0
    shadow: bool = False
    operator_share: float = 0.0

    def __post_init__(self):
        for name in ("threshold", "hold_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                flag = "--takeover-" + name.replace("_", "-")
                raise ValueError(f"takeover {name} ({flag}) must be a finite number > 0, got {value!r}")
        if not isinstance(self.shadow, bool):
            raise ValueError(f"takeover shadow (--shadow) must be true or false, got {self.shadow!r}")
        share = self.operator_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise ValueError(f"operator share (--operator-share) must be a number in [0, 1], got {share!r}")

    def describe(self) -> dict:
        """The settings as a plain dict (stored in the bag's metadata)."""
        return {
            "threshold": self.threshold,
            "hold_s": self.hold_s,
            "shadow": self.shadow,
            "operator_share": self.operator_share,
        }


class Operator:
    """The supervising operator's state over one episode (see :class:`Takeover`): the simulated recording's and
    the robot's (``liquid_control.ros.takeover_mux``)."""

    def __init__(self, rule: Takeover, seed: int = 0):
        self.rule = rule
        self.until = None  # None: the policy drives; else the earliest stamp to hand back at
        self.takeovers = 0
        self.rng = np.random.default_rng([int(seed), 11])  # the operator's share: the same draws for the seed

    def in_control(self, stamp: float, policy: np.ndarray | None, expert: np.ndarray) -> bool:
        """Whether the operator drives at this update (``policy`` None: the policy gave no command yet, its
        first update or a reordering lag; the operator drives that update without taking over)."""
        drawn = self.rule.operator_share > 0 and self.rng.random() < self.rule.operator_share  # every update
        if policy is None:
            return True
        deviation = float(np.max(np.abs(policy - expert)))
        if self.until is None:
            if deviation > self.rule.threshold:
                self.until = stamp + self.rule.hold_s
                self.takeovers += 1
        elif stamp >= self.until and deviation <= 0.5 * self.rule.threshold:
            self.until = None
        return self.until is not None or drawn


def load_driver(path: str | Path, image_size: tuple[int, int] | None):
    """The backend of a policy that is to drive the rover from its camera at the recorded (height, width) (None: the
    policy's own); ValueError naming the file otherwise (a policy of another world, or of another image size: the
    node would refuse it)."""
    from liquid_control.runtime.backends import BackendError, load_backend

    try:
        backend = load_backend(path, "auto")
    except BackendError as exc:
        raise ValueError(str(exc)) from None
    config = backend.config
    image = config["observation"].get("image") or {}
    problem = None
    if config.get("world") != "LiquidRover-v0" or config["action"].get("kind") != "twist":
        problem = f"it is a policy for {config.get('world')!r} with {config['action'].get('kind')!r} actions"
    elif image_size is not None and (image.get("height"), image.get("width")) != tuple(image_size):
        problem = (
            f"it reads {image.get('width')}x{image.get('height')} images (width x height), the recording renders "
            f"{image_size[1]}x{image_size[0]} (--render-width, --render-size)"
        )
    if problem:
        backend.close()
        raise ValueError(f"{path}: cannot drive the recorded rover (LiquidRover-v0, twist, camera): {problem}")
    return backend


def driving_scale_problem(driver, world: str) -> str | None:
    """Where a driving policy learnt its commands at another ``action_scale`` than ``world`` executes them with (a
    policy trained from a robot's bags, its labels divided by that robot file's scale): what each command then is,
    as policy_node warns of it with the world's parameter file; else None."""
    from liquid_control.conventions.training_record import action_scale_problem

    if world not in WORLDS:
        return None
    return action_scale_problem(
        driver.training_record,
        WORLDS[world]["command_scale"](),
        f"{world}'s command scale",
        " (record --expert runs the world's scale, as policy_node with the world's parameter file does)",
    )


def checked_options(
    world: str, driving: bool, noise: ExpertNoise, margin: float | None, said: str = ""
) -> float | None:
    """The operator's ``margin`` checked (None for a balancer, whose expert keeps no clearance); ValueError for the
    rover's options (noise injection, a margin, a driving policy) given for another ``world`` (``said``: how the
    message names where it came from), and for noise injected under a driving policy."""
    from sim_envs.experts import checked_margin

    if world != ROVER and (driving or noise.active or margin is not None):
        raise ValueError(f"{ROVER_ONLY}: only for {ROVER}, not {world}{said}")
    margin = checked_margin(margin) if world == ROVER else None
    if driving and noise.active:
        raise ValueError(NOISE_WITH_DRIVER)
    return margin


def make_world(
    world: str = ROVER,
    render_size: int | tuple[int, int] | None = None,
    shift: str = "",
    time_limit: float = 0.0,
    driver=None,
):
    """The unwrapped world as sim_node builds it (``render_size``: pixels, or (height, width) where not square; None:
    the world's own camera size); with a ``driver`` (a policy backend) updating on the policy's update sensors and
    waiting for its inputs before the first update, as ``liquid-control sim`` has sim_node build it for the policy
    (a camera+IMU policy's updates are its camera frames and IMU messages, not the world's default frames alone);
    ValueError for a world sim_node does not run, one without a privileged expert, or a ``render_size`` for a world
    without a camera."""
    if world not in WORLDS:
        raise ValueError(
            f"--world {world}: record --expert writes the messages sim_node publishes, which runs {', '.join(WORLDS)}"
        )
    if render_size is not None and "camera" not in WORLDS[world]["sensors"]:
        raise ValueError(f"--render-size: {world} has no camera")
    os.environ.setdefault("MUJOCO_GL", "egl")
    import gymnasium

    import sim_envs  # (registers the worlds)
    from sim_envs.world import TimedMujocoWorld

    if sim_envs.world_class(world).expert_action is TimedMujocoWorld.expert_action:
        raise ValueError(f"--world {world}: the world has no privileged expert to drive it")
    kwargs = {"shift": shift or None}
    if render_size is not None:
        kwargs["render_size"] = render_size  # the world checks it (sim_envs.world.camera_image_shape)
    if time_limit > 0:
        kwargs["time_limit"] = float(time_limit)
    if driver is not None:  # sim_node's policy_update_on and policy_inputs (ros.graph.policy_world_parameters)
        kwargs["update_on"], kwargs["policy_inputs"] = tuple(driver.spec.update_on), tuple(driver.spec.sensors)
    env = gymnasium.make(world, **kwargs).unwrapped
    env.deliver_joint_positions = True  # the wheel angles of the JointState messages, as sim_node publishes them
    return env


def record_expert_episode(
    world,
    seed: int,
    path: str | Path,
    noise: ExpertNoise = ExpertNoise(),
    margin: float | None = None,
    stop: threading.Event | None = None,
    driver=None,
    takeover: Takeover = Takeover(),
    driver_path: str = "",
) -> dict:
    """Run one expert episode of ``world`` (seeded) and write it to the bag ``path``; returns its outcome.

    Like sim_node: every delivered message is published (logged at its delivery time), those ``reset(seed)``
    delivered first; the command is applied until the next update, and the episode ends at success, collision,
    a fall or the first update past the time limit. ``margin`` (the rover): the clearance (m) the operator keeps
    from obstacles beyond the rover's radius (None: the training expert's); a wider berth than the policy needs
    leaves room for the learned policy's errors. ``stop`` set: KeyboardInterrupt between two messages (the bag
    is left unfinished). ``driver`` (the rover): a policy backend (``runtime.backends``) that drives instead, the
    expert supervising it by the ``takeover`` rule (module docstring).
    """
    from liquid_control.runtime.runner import UPDATED, PolicyRunner, RunnerLimits

    name = world.spec.id
    io = WORLDS[name]
    margin = checked_options(name, driver is not None, noise, margin)
    runner = None if driver is None else PolicyRunner(driver, RunnerLimits())
    operator = Operator(takeover, seed)
    policy_command, operator_updates, updates = None, 0, 0

    scale = io["command_scale"]()  # robot units per action unit, as sim_node executes the command
    imu_noise = io["imu_noise"]()  # the covariances sim_node publishes (REP 145)
    commands, command_type = command_topic(name), COMMAND_MESSAGES[io["command"]]

    def command_message(action):
        values = np.asarray(action, dtype=np.float64) * scale
        return twist_message(*values) if command_type == TWIST else float64_array_message(values)

    # camera_info beside each image, as sim_node: train --bag records the camera's field of view from it
    fovy = world_camera_fovy_deg(name) if "camera" in io["sensors"] else None
    rng = np.random.default_rng([int(seed), 7])
    world.reset(seed=int(seed))
    custom = {
        "liquid_control.source": "expert",
        "liquid_control.world": name,
        "liquid_control.seed": str(seed),
        "liquid_control.noise": json.dumps(noise.describe()),
        "liquid_control.expert_margin": str(margin),
    }
    if driver is not None:
        custom["liquid_control.source"] = (
            "policy, expert takeover"
            + (" and shadow labels" if takeover.shadow else "")
            + (f", operator share {takeover.operator_share:g}" if takeover.operator_share else "")
        )
        custom["liquid_control.driver"] = str(driver_path)
        custom["liquid_control.takeover"] = json.dumps(takeover.describe())
    counts = {sensor: 0 for sensor in io["sensors"]}
    drift = np.zeros(2)
    executed = np.zeros(world.action_space.shape)
    info, terminated = {}, False
    with BagWriter(path, custom_data=custom) as bag:
        if "camera" in io["sensors"]:
            bag.add_topic(TOPICS["camera"], IMAGE, [SENSOR_QOS])
            bag.add_topic(TOPICS["camera_info"], CAMERA_INFO, [SENSOR_QOS])
        bag.add_topic(TOPICS["imu"], IMU, [SENSOR_QOS])
        if "encoders" in io["sensors"]:
            bag.add_topic(TOPICS["encoders"], JOINT_STATE, [SENSOR_QOS])
        if io["target"]:
            bag.add_topic(TOPICS["target"], TWIST, [TARGET_QOS])
        bag.add_topic(commands, command_type, [SENSOR_QOS])
        if noise.active or driver is not None:
            bag.add_topic(TOPICS["executed"], command_type, [SENSOR_QOS])
        bag.add_topic(TOPICS["status"], STRING, [STATUS_QOS])
        update_stamp = -np.inf
        previous_stamp, burst_until, burst_angular = 0.0, -np.inf, 0.0
        target = None  # the velocity target last written (LiquidBalance-v0)
        # reset delivered the messages up to the first update (each at its stamp + latency); then the live loop
        # (sensor, stamp, reading, the wheel angles measured with it, the target then)
        pending = [
            (*delivery, positions, world.command.copy() if io["target"] else None)
            for delivery, positions in zip(world.reset_deliveries, world.reset_delivery_positions, strict=True)
        ]
        while True:
            if stop is not None and stop.is_set():  # here, not from a signal handler inside MuJoCo's ctypes calls
                raise KeyboardInterrupt
            if pending:
                sensor, stamp, reading, positions, command = pending.pop(0)
                delivered = stamp + world.timings[sensor].latency
                # reset ran to the world's first update, which its last message released: a driving policy's
                # earlier messages (of its update sensors too, before every input has delivered) make no update
                before_first_update = driver is not None and bool(pending)
            else:
                world.apply_action(executed)
                delivery = world.next_delivery(until=world.end_without_update())
                if delivery is None:  # no update within the world's horizon: it ends at its time limit, as step
                    terminated, info = world.outcome()
                    break
                sensor, stamp, reading = delivery
                positions = world.delivered_positions
                delivered = float(world.data.time)
                command = world.command.copy() if io["target"] else None
                before_first_update = False
            now_ns = int(round(delivered * 1e9))  # delivered (and logged) then
            if command is not None and (target is None or not np.array_equal(command, target)):
                # the episode's target before its first message, a changed one before the message it changed at
                bag.write(TOPICS["target"], now_ns, twist_message(*command))
                target = command
            if sensor == "camera":
                image = image_message(reading, stamp)
                bag.write(TOPICS["camera"], now_ns, image)
                bag.write(TOPICS["camera_info"], now_ns, camera_info_message(image, fovy))
            elif sensor == "imu":
                bag.write(TOPICS["imu"], now_ns, imu_message(reading, stamp, noise=imu_noise))
            else:
                bag.write(TOPICS["encoders"], now_ns, joint_state_message(reading, stamp, positions))
            counts[sensor] += 1
            if runner is not None:  # the policy node receives every message, as delivered
                result = runner.submit(sensor, stamp, reading, now=delivered)
                if result.status == UPDATED:
                    policy_command = np.asarray(result.action, dtype=np.float64)
            if sensor not in world.update_on or before_first_update:  # an update: a message of an update sensor
                continue
            update_stamp = stamp
            terminated, info = world.outcome()
            if terminated or update_stamp >= world.time_limit:
                break
            expert = np.asarray(world.expert_action(margin) if name == ROVER else world.expert_action(), np.float64)
            updates += 1
            if driver is not None:
                driving = operator.in_control(stamp, policy_command, expert)
                if driving or takeover.shadow:
                    bag.write(commands, now_ns, command_message(expert))
                if driving:
                    operator_updates += 1
                    executed = expert
                else:
                    executed = np.clip(policy_command, -1.0, 1.0)
                bag.write(TOPICS["executed"], now_ns, command_message(executed))
                continue
            bag.write(commands, now_ns, command_message(expert))
            executed = expert
            if noise.active:
                rho = noise.correlation
                drift = rho * drift + np.sqrt(1 - rho * rho) * rng.normal(0.0, noise.std, size=2)
                executed = np.clip(expert + drift, -1.0, 1.0)
                if burst_until <= stamp and rng.random() < noise.burst_rate * max(stamp - previous_stamp, 0.0):
                    burst_until, burst_angular = stamp + noise.burst_s, rng.uniform(-1.0, 1.0)
                if stamp < burst_until:
                    executed = np.array([executed[0], burst_angular])
                bag.write(TOPICS["executed"], now_ns, command_message(executed))
            previous_stamp = stamp
        success = bool(info.get("success"))
        outcome = "success" if success else next((k for k in ("fallen", "collision") if info.get(k)), "timeout")
        status = {
            "seed": int(seed),
            "outcome": outcome,
            "success": success,
            "sim_time": round(float(world.data.time), 4),
            "messages": counts,
            "noise": noise.describe(),
            "expert_margin": margin,
        }
        if driver is not None:
            status.update(updates=updates, operator_updates=operator_updates, takeovers=operator.takeovers)
        bag.write(TOPICS["status"], int(round(float(world.data.time) * 1e9)), string_message(json.dumps(status)))
    return status


def the_rest(out, seed: int, episodes: int) -> str:
    """How to record the ``episodes`` from ``seed`` on that a stopped ``record --expert`` into ``out`` left: a rerun
    as it was refuses the seeds whose bags it recorded."""
    folder = shlex.quote(str(out))  # pasted into a shell: a folder with a space is one word
    return f"record the rest with --seed {seed} --episodes {episodes} -o {folder} and the other options as before"


def record_expert_episodes(
    out_dir: str | Path,
    seeds,
    *,
    world: str = ROVER,
    render_size: int | tuple[int, int] | None = None,
    shift: str = "",
    time_limit: float = 0.0,
    noise: ExpertNoise = ExpertNoise(),
    margin: float | None = None,
    progress: bool = False,
    stop: threading.Event | None = None,
    policy: str | Path | None = None,
    takeover: Takeover = Takeover(),
    log=None,
) -> list[dict]:
    """One bag per seed under ``out_dir`` (``episode_<seed>``) of ``world`` (:func:`make_world`); returns the outcomes
    (with ``bag``). ``policy``/``takeover`` (the rover): that policy drives, the expert supervising (see
    :func:`record_expert_episode`).
    ``log``: called with a line per recorded episode (where no bar shows progress: a CI log, a job's file).

    ``stop`` set (a signal handler's flag): KeyboardInterrupt, with the episode being recorded removed.
    """
    from tqdm import tqdm

    margin = checked_options(world, policy is not None, noise, margin, " (--world)")  # before any folder is made
    seeds = list(seeds)
    if not seeds:
        raise ValueError("no episodes to record: --episodes must be >= 1")
    if not (0 <= time_limit < float("inf")):  # NaN and inf too (an endless episode); 0 is the world's own limit
        raise ValueError(f"--time-limit must be a finite number >= 0 s (0: the world's own), got {time_limit}")

    out = Path(out_dir)
    instead = "record into another -o"
    folder_lock.check_free(out, instead, BagError)  # another record --expert there: named, before anything loads

    def refuse_taken() -> None:
        """Refused before the first episode (it used to record the bags before the first taken one). A bag a killed
        recording left unfinished is named as such (before, 'already holds episode_103' of a 0-byte bag), and
        where the taken ones are the first seeds, how to record the rest."""
        existing = existing_episode_seeds(out)
        taken = [int(seed) for seed in seeds if int(seed) in existing]
        if not taken:
            return
        names = [episode_bag_name(seed) for seed in taken]
        message = f"{out}: already holds {', '.join(names)}; a bag is never overwritten, choose other seeds or -o"
        cut = [name for name in names if unfinished_bag(out / name)]
        if cut:
            is_it = ("is", "it") if len(cut) == 1 else ("are", "them")
            message += (
                f"; {', '.join(cut)} {is_it[0]} unfinished (no metadata.yaml: the recording was killed): delete "
                f"{is_it[1]} to record {is_it[1]} again"
            )
        finished = [seed for seed, name in zip(taken, names) if name not in cut]
        rest = [int(seed) for seed in seeds[len(finished) :]]
        prefix = finished and finished == [int(seed) for seed in seeds[: len(finished)]]
        if prefix and rest and rest == list(range(rest[0], rest[0] + len(rest))):  # as --seed/--episodes give them
            message += f"; {the_rest(out, rest[0], len(rest))}"
        raise BagError(message)

    refuse_taken()
    driver = None
    if policy is not None:  # refused before the folder too; without render_size, its own camera size is rendered
        from sim_envs.world import camera_image_shape

        driver = load_driver(policy, None if render_size is None else camera_image_shape(render_size)[:2])
        scale_problem = driving_scale_problem(driver, world)
        if scale_problem:  # as policy_node says it at configure with the world's parameter file
            print(f"liquid-control record: warning: {policy}: {scale_problem}", file=sys.stderr, flush=True)
    try:
        if driver is not None and render_size is None:  # as liquid-control sim renders a policy's camera
            image = driver.config["observation"]["image"]
            render_size = (image["height"], image["width"])
        env = make_world(world, render_size, shift, time_limit, driver)  # a bad world, shift or size: before the folder
    except BaseException:
        if driver is not None:
            driver.close()
        raise
    results = []
    made = first_missing_folder(out)  # a failure before the first bag leaves no empty -o folder of ours
    lock = contextlib.ExitStack()
    try:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"-o {out}: cannot create the folder ({exc.strerror or exc})") from None
        # one recording at a time in a folder: two at once recorded the same episodes, and the second's failure
        # to create an episode's bag (the first's) removed that bag while the first wrote it; both failed
        lock.enter_context(folder_lock.hold(out, instead, BagError))
        refuse_taken()  # the bags of a recording that ended since the check above
        for done, seed in enumerate(tqdm(seeds, desc="expert episodes", disable=not progress, leave=False)):
            started = time.monotonic()
            path = out / episode_bag_name(seed)
            existed = path.exists()  # appeared since the check above (another recorder): never ours to remove
            try:
                status = record_expert_episode(
                    env, int(seed), path, noise, margin, stop, driver, takeover, str(policy or "")
                )
            except BaseException as exc:  # Ctrl-C or a failure: no half episode (a truncated bag) among the finished
                if not existed:
                    shutil.rmtree(path, ignore_errors=True)
                if isinstance(exc, (BagError, OSError)):  # a full disk: what is kept, and how to record the rest
                    kept = f"{out} keeps the {done} recorded before it" if done else "none was recorded before it"
                    raise BagError(
                        f"{exc}; {path.name} was discarded and {kept}; {the_rest(out, seed, len(seeds) - done)}"
                    ) from None
                raise
            status["bag"] = str(path)
            results.append(status)
            if log is not None:
                took = (
                    f", the operator drove {status['operator_updates']} of {status['updates']} updates"
                    if driver
                    else ""
                )
                log(
                    f"episode {done + 1}/{len(seeds)}: {path.name}, {status['outcome']} after "
                    f"{status['sim_time']:.1f} s of driving{took}, {time.monotonic() - started:.1f} s"
                )
    except BaseException:
        remove_made_folder(out, made)  # not where refused: another recording's folder
        raise
    finally:
        lock.close()
        env.close()
        if driver is not None:
            driver.close()
    return results
