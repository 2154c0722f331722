"""policy_node: a managed (lifecycle) ROS 2 node that runs a liquid policy on camera/IMU messages.

- configure: read + validate the parameters (config/*.yaml), load the policy (``backend: auto``: the ONNX
  export next to the checkpoint when it was exported from it, else torch; ``runtime.backends.load_backend``),
  create the subscriptions, the command publisher, the ~/reset service, /diagnostics and the timers (stopped).
- activate: start commanding (fresh liquid state, fresh sensor readings) and the timers. deactivate: publish a stop
  command and hold, the timers stopped. A setpoint (``target_velocity``) received in any state while configured is
  the one in force.
  cleanup / shutdown: free the model and every ROS entity.

The node subscribes to every sensor its policy names; each accepted message of one of the policy's
``update_on`` sensors advances the state by the difference of ``header.stamp`` s (see
:class:`liquid_control.runtime.PolicyRunner` for the reordering across sensors, rejection and reset rules).
The watchdog stops the robot when any input goes silent for ``watchdog_timeout_s`` of the node clock (sim
time with ``use_sim_time``), naming that input, and when no state update came for that long although every
input is fresh (the runner waits for an input after a reset, or updates fail), naming what it waits for; a jump
back of the node clock (a /clock restart) restarts the times it measures from. Per-update commands
carry the stamp of the update that produced them (TwistStamped), fixed-rate and stop commands the node clock.

Run: ``ros2 run liquid_control policy_node --ros-args --params-file config/rover_policy.yaml``.
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m: as the policy_node executable, whose checks run before rclpy loads
    from liquid_control.ros.entry import run

    raise SystemExit(run("policy_node"))

import contextlib
import functools
import gc
import importlib
import signal
import sys
import threading
import time
from collections import Counter, deque

import numpy as np
import rclpy
import rclpy.executors
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist, TwistStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, Image, Imu, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from liquid_control.conventions import stamps, training_record
from liquid_control.conventions.camera_info import camera_info_problems, world_camera_fovy_deg
from liquid_control.conventions.commands import twist_vector
from liquid_control.conventions.image_conversion import GREY_ENCODINGS, ImageConversionError, image_to_numpy
from liquid_control.conventions.imu import NOT_PROVIDED, GravityCheck, ImuFieldNotProvided, imu_reading
from liquid_control.conventions.joints import MISSING_JOINT, velocities_by_name
from liquid_control.conventions.message_types import (
    endpoint_name,
    gid_text,
    message_type_name,
    node_path,
    other_publishers,
)
from liquid_control.conventions.params import (
    POLICY_NODE_PARAMETERS,
    ParameterError,
    PolicyNodeSettings,
    autostart_problem,
    camera_info_topic,
    declare_node_parameters,
    joint_names_problem,
    parameter_value,
    policy_node_parameter_problems,
    same_parameter_value,
    validate_policy_node_parameters,
)
from liquid_control.paths import resolve_policy_file
from liquid_control.processes import end_process_now
from liquid_control.ros.delivery import deliver_stop
from liquid_control.ros.executable import WithMessageInfo, named_counts
from liquid_control.runtime import runner as R
from liquid_control.runtime.backends import CAMERA, BackendError, backend_modules, load_backend
from liquid_control.runtime.command import CommandLimiter
from liquid_control.runtime.timeline import STAMP_TOLERANCE_S
from liquid_control.shown import shown

BAD_ENCODING = "bad_encoding"  # rejection reason of images that cannot be converted (beside the runner's)
LIVE_PARAMETERS = ("max_command", "max_command_rate")  # applied at once when set on a configured node
PROCESS_START_PARAMETERS = ("autostart",)  # read by main() when the process starts, never again
# rclpy's parameters that the node's clock follows: changed while configured, they move the watchdog, the timers
# and the stamp checks to another clock mid-run (to sim time without a /clock: no watchdog stop ever again)
CLOCK_PARAMETERS = ("use_sim_time",)


# Inputs that are setpoints, not sensors: held until changed (across liquid-state resets, see the runner), so
# their silence is not a fault for the watchdog.
SETPOINTS = R.SETPOINTS
# command_type (conventions.params.COMMAND_TYPES) -> the message the commands go out in (sim_node subscribes with it)
COMMAND_MESSAGES = {"twist": Twist, "twist_stamped": TwistStamped, "float64_multi_array": Float64MultiArray}

# sensor -> (message type, topic parameter, reading extractor); the camera's extractor is the image conversion,
# the wheels' PolicyNode._wheel_velocities (by joint name)
SENSORS = {
    CAMERA: (Image, "camera_topic", None),
    "imu": (Imu, "imu_topic", imu_reading),  # ImuFieldNotProvided: rejected (not_provided)
    "wheels": (JointState, "wheels_topic", None),  # read by joint name: PolicyNode._wheel_velocities
    "command": (Twist, "target_topic", twist_vector),
}


# counters of input faults that leave the node commanding: /diagnostics is WARN while one of them grows
INPUT_FAULT_COUNTERS = (
    "publishers_interleaved.",
    "rate_mismatch.",
    "camera_info.",
    "imu.gravity_mismatch",
    "stamps_behind.",
)
# a message taken with a stamp this much older than the node clock (seconds): stamped by another clock, or late
STAMPS_BEHIND_S = 1.0
# rejections of a message for a setting of the sensor or the node that does not match the policy (another image size
# or encoding, an IMU without a gyro, other joint names): every message of it is rejected until a person acts, so a
# stale input rejected for one is ERROR in /diagnostics, not WARN
SETTING_REJECTIONS = (R.BAD_SHAPE, BAD_ENCODING, NOT_PROVIDED, MISSING_JOINT)


class StopRequested(BaseException):
    """SIGINT/SIGTERM during a blocking configure (a kernel build, a slow load): abandon it and exit.

    A BaseException, so that no ``except Exception`` on the way (rclpy's lifecycle swallows those) keeps the
    node from stopping."""


def stop_on_signal(node, signum: int) -> None:
    """What a SIGINT/SIGTERM does to ``node`` (the executable's handler): remember it, and abandon a configure in
    progress at once (StopRequested), except while the configure imports its backend's modules: raised inside torch's
    or onnxruntime's C++ import code, the exception cannot cross it and the process ended in SIGABRT ("terminate
    called after throwing ... StopRequested", ~1 in 15 stops during configure in a soak run), its DDS participant left
    to its peers for 20 s. The configure acts on it once the import is done."""
    node.stop_signal = signum
    if node.configuring and not node.importing:
        raise StopRequested(signum)


_ACTIVE_NODES: set[int] = set()  # ids of the active PolicyNodes of this process (see _hold_heap)
_HEAP_LOCK = threading.Lock()


def _hold_heap(node, active: bool) -> None:
    """Keep CPython's full garbage collections small while a policy node commands.

    A full collection traverses every tracked object: ~200k once torch and a policy are loaded, 100-130 ms on
    a 2-core VM, a stall of the control loop at a moment CPython picks. While any policy node of the process is
    active, everything alive at its activation is frozen out of collections (``gc.freeze``, as real-time Python
    loops do; ``on_activate`` collects the loading garbage first); the freeze is process-wide, so it is lifted
    when the last active node stops commanding. Under a MultiThreadedExecutor two nodes' transitions run at once:
    one lock, or a node activated between another's "none left" and its unfreeze commanded unfrozen.
    """
    with _HEAP_LOCK:
        if active:
            _ACTIVE_NODES.add(id(node))
            gc.freeze()
        elif id(node) in _ACTIVE_NODES:
            _ACTIVE_NODES.discard(id(node))
            if not _ACTIVE_NODES:
                gc.unfreeze()


@contextlib.contextmanager
def _naming(what: str):
    """Re-raise an error from creating a ROS entity as a ParameterError naming the parameter(s) behind it."""
    try:
        yield
    except Exception as exc:
        raise ParameterError(f"{what}: {type(exc).__name__}: {exc}") from exc


def _one_at_a_time(callback):
    """A callback rclpy runs (message, timer, service, parameter change), run under the node's lock
    (``PolicyNode._lock``): never beside a transition or another of its callbacks in another thread."""

    @functools.wraps(callback)
    def locked(self, *args, **kwargs):
        with self._lock:
            return callback(self, *args, **kwargs)

    return locked


class _DestroyedStateMachine:
    """Stands for a destroyed node's lifecycle state machine: any use is a clear error, not a read of freed memory."""

    def __init__(self, node_name: str):
        self._node_name = node_name

    def __getattr__(self, name):
        if name.startswith("__"):  # copy, pickle and hasattr probes: no such attribute, as on any object
            raise AttributeError(name)
        raise RuntimeError(f"{self._node_name} was destroyed (destroy_node): it has no lifecycle state left ({name})")


class PolicyNode(LifecycleNode):
    """The liquid policy as a managed node (see the module docstring)."""

    # how long destroy_node waits for a transition running in another thread (a configure that builds the kernels
    # takes ~1 s, a shutdown up to its stop's acknowledgement wait) before it frees the node all the same
    TRANSITION_WAIT_S = 10.0

    def __init__(self, name: str = "policy_node", *, argv=None, **kwargs):
        """``argv``: the arguments rclpy was initialised with (default: the process's), whose parameter files' shared
        sections may hold other nodes' parameters (:func:`declare_node_parameters`)."""
        # Every transition (through the lifecycle services or a trigger_* call from any thread), every callback and
        # destroy_node hold it: a deactivate called from another thread than the executor's (a MultiThreadedExecutor
        # beside it) let an update in flight publish its command after the deactivate's stop (the robot moved on,
        # measured 2-9 in 200 cycles), or read the model and settings a cleanup was freeing. Reentrant: destroy_node
        # shuts down through a transition. Per callback one uncontended acquire (~1 us on a loaded 2-core VM).
        self._lock = threading.RLock()
        self._transitions_running = 0  # transitions under way (_LifecycleNodeMixin__change_state), any thread
        self._free_after_transition: str | None = None  # destroy_node came during one: the node's name, freed after
        self._free_lock = threading.Lock()  # the two above, read and set together by a transition and destroy_node
        self._destroy_called = False
        super().__init__(name, **kwargs)
        declare_node_parameters(self, POLICY_NODE_PARAMETERS, argv=argv)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.settings = None
        self.runner: R.PolicyRunner | None = None
        self._subscriptions_by_sensor = {}
        self._input_topics = {}  # sensor -> resolved topic name (at configure)
        self._joint_names = ()  # joint_names (at configure): the wheel velocities' order
        self._command_pub = self._command_msg = None
        self._diag_pub = None
        self._reset_srv = None
        # watchdog, diagnostics[, control]: see _create_activity_timers (not `_timers`: rclpy's Node list of them)
        self._activity_timers = []
        self._active = False
        self._finalized = False  # shut down: no transition leaves it, no parameter is used again
        # the stop that ended commanding (deactivate, shutdown, error) is not known to have reached the subscribers:
        # _release waits for its acknowledgement before destroying the publisher (see ros.delivery)
        self._stop_unconfirmed = False
        self.configuring = False  # inside on_configure (a signal then abandons it, see main)
        self.importing = False  # configure imports its backend's modules: a signal waits (stop_on_signal)
        self.stop_signal: int | None = None  # SIGINT/SIGTERM received (set by main's handler)
        self.failure: str | None = None  # why the last configure/activate failed
        self._commands_published = self._stops_published = 0
        self._warned_at: dict[str, float] = {}  # throttled warning -> when it was last logged (monotonic s)
        self._training: dict = {}  # the policy file's training record (the backend's, conventions.training_record)
        self._trained_rates: dict = {}
        # kept across activations, as the counters are (an activation does not make an earlier fault recent)
        self._fault_counts: dict[str, int] = {}  # INPUT_FAULT_COUNTERS at the previous diagnostics message
        self._fault_grown_at: dict[str, float] = {}  # counter -> steady time it last grew (_recent_input_faults)
        self._reset_bookkeeping()

    def _reset_bookkeeping(self):
        self._last_arrival: dict[str, float] = {}
        # per input, the reasons of the messages rejected since its last accepted one: an input whose messages all
        # arrive rejected (a camera of another size) is not silent, and the watchdog's warning says so
        self._rejected_since_accepted: dict[str, Counter] = {}
        self._activated_at = None
        self._stale: list[str] = []
        self._stale_said = False  # the watchdog's warning of the current stale inputs was logged (not throttled)
        self._stops_unsaid = 0  # watchdog stops since its last warning that were not logged (throttled)
        self._jumps_unsaid = 0  # node clock jumps back since the last one logged (throttled)
        self._last_update_at = None  # node clock of the last state update
        self._watchdog_seen = None  # node clock at the previous watchdog check (a jump back resets the times)
        self._clock_before_jump = None  # the node clock before its last jump back (_restart_watch_times)
        self._inference_errors_at_update = 0  # the runner's inference_error count at the last update
        self._starved = ""  # what the node waits for, when no update came for longer than watchdog_timeout_s
        self._starved_stop = False  # and it published a stop for it (repeated while it lasts)
        self._starved_reason = None  # what it waits for, without the numbers (see _waiting_for)
        self._starved_unsaid = False  # a reason not logged yet (throttled; said once the throttle allows)
        self._moving = False  # the last command published is not all zeros
        self._pending_action = None
        self._command_ages = deque(maxlen=500)  # node clock at publish - stamp of the triggering message
        self._rate_window = (None, {})  # (time, received counters) at the previous diagnostics message
        # (time, {sensor: (received count, missed count, last arrival)}) at the start of the trained-rate check's window
        self._rate_check = (None, {})
        self._publications: dict[str, tuple] = {}  # sensor -> (publisher gid, sequence number) of its last message
        # sensor -> {publisher heard on its topic: the sequence number of its last message} (_note_publication)
        self._heard_publishers: dict[str, dict] = {}
        self._interleaving: dict[str, set] = {}  # sensor -> publishers that took turns since it was last said
        self._other_commanders: tuple[str, ...] = ()  # other publishers on the command topic (_check_other_commanders)

    # ------------------------------------------------------------------------------------------- lifecycle
    def _LifecycleNodeMixin__change_state(self, transition_id: int) -> TransitionCallbackReturn:
        """Every transition, whole (the state machine's change, the callback, the resulting state), under the node's
        lock (see ``_lock`` in ``__init__``): rclpy's one way into them, from its services and each ``trigger_*``."""
        with self._lock:
            counted = False
            try:
                with self._free_lock:
                    self._transitions_running += 1
                    counted = True
                return super()._LifecycleNodeMixin__change_state(transition_id)
            finally:
                if counted:
                    with self._free_lock:
                        self._transitions_running -= 1
                        if not self._transitions_running and self._free_after_transition is not None:
                            self._free_state_machine(self._free_after_transition)

    @property
    def destroyed(self) -> bool:
        """Whether destroy_node has been called (its lifecycle state machine freed, or to be once a transition
        ends)."""
        return self._destroy_called

    def _free_state_machine(self, name: str):
        """Free rclpy's lifecycle state machine, which holds the node (see destroy_node): the guard goes in first,
        so a thread reading it meanwhile (a lifecycle service on a MultiThreadedExecutor) meets the guard's error,
        not freed memory (a segfault)."""
        self._free_after_transition = None
        if isinstance(self._state_machine, _DestroyedStateMachine):
            return
        machine, self._state_machine = self._state_machine, _DestroyedStateMachine(name)
        machine.destroy_when_not_in_use()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate, load, create the entities; any failure is logged with its cause and leaves nothing behind."""
        self.failure = None
        self.configuring = True  # SIGINT/SIGTERM now abandon the configure (see main)
        if self.stop_signal is not None:  # one landed just before: do not start a configure that may take long
            self.configuring = False
            raise StopRequested(self.stop_signal)
        try:
            self._configure()
        except Exception as exc:
            expected = isinstance(exc, (ParameterError, BackendError, ValueError, OSError))
            self._fail("configure", exc if expected else f"{type(exc).__name__}: {exc}")
            self._release(summary=False)
            return TransitionCallbackReturn.FAILURE
        finally:
            self.configuring = False
        return super().on_configure(state)

    def _import_backend_modules(self, names: list[str]):
        """Import what the backend will load (torch, onnxruntime) where a stop signal cannot interrupt it (see
        :func:`stop_on_signal`); one that came meanwhile abandons the configure right after."""
        self.importing = True
        try:
            for name in names:
                importlib.import_module(name)
        finally:
            self.importing = False
        if self.stop_signal is not None:
            raise StopRequested(self.stop_signal)

    def _configure(self):
        # a list parameter set over the parameter service is an array.array: one form, a list
        values = {n: parameter_value(self.get_parameter(n).value) for n in POLICY_NODE_PARAMETERS}
        validate_policy_node_parameters(values)  # before loading anything: a missing policy name etc.
        policy_path = resolve_policy_file(values["policy"])
        self._import_backend_modules(backend_modules(policy_path, values["backend"]))
        try:
            backend = load_backend(policy_path, values["backend"], warn=False)  # its note: logged below
        except (BackendError, OSError):
            raise
        except Exception as exc:  # anything else a hostile or broken file raises: name the file
            raise BackendError(f"{policy_path}: cannot be loaded ({type(exc).__name__}: {exc})") from exc
        if backend.name == "torch":  # the ONNX backend is single-threaded already
            # one sample per step: intra-op threads only add latency (and steal cores from the sim); set on the thread
            # of each step, the only one torch's setting surely reaches (an executor thread that ran torch before,
            # other nodes' work in a composed process, kept its count when it was set once here)
            backend.threads = 1
        spec = backend.spec
        try:
            self.settings = validate_policy_node_parameters(values, spec.action_size, spec.action_kind)
            s = self.settings
            missing = [sensor for sensor in spec.sensors if sensor not in SENSORS]
            if missing:
                raise ParameterError(
                    f"the policy needs inputs {missing} that this node has no topic for (known: {', '.join(SENSORS)})"
                )
            if "wheels" in spec.sensors and joint_names_problem(s.joint_names, spec.sensors["wheels"][0]):
                raise ParameterError(joint_names_problem(s.joint_names, spec.sensors["wheels"][0]))
            self._joint_names = tuple(s.joint_names)
            # since configure, like the runner's counters (an activation does not restart them)
            self._commands_published = self._stops_published = 0
            self._warned_at: dict[str, float] = {}
            self.runner = R.PolicyRunner(
                backend,
                R.RunnerLimits(
                    max_gap_s=s.max_gap_s,
                    max_backward_jump_s=s.max_backward_jump_s,
                    max_future_stamp_s=s.max_future_stamp_s,
                    first_update_dt=s.first_update_dt,
                    reorder_lag_s=None if s.reorder_lag_s < 0 else float(s.reorder_lag_s),
                ),
            )
        except BaseException:
            backend.close()  # the runner owns it from here on (closed by _release)
            raise
        # the rate limit credits at most the watchdog timeout between two commands, or two of fixed_rate's periods
        # where longer (a late tick keeps its due ramp): longer still, and the node clock stepped forward (or no command
        # was due: the robot held the previous one, which the next ramps from)
        longest = max(s.watchdog_timeout_s, 2.0 / s.control_rate_hz if s.publish_mode == "fixed_rate" else 0.0)
        self.limiter = CommandLimiter(s.action_scale, s.max_command, s.max_command_rate, longest)
        # what the policy file (or the export of it that runs) records of its training sensors, on either backend
        self._training = backend.training_record
        # sensor -> (median, slowest, fastest) trained rate (Hz) of the file's record: checked over RATE_WINDOW_S
        self._trained_rates = {
            k: v for k, v in training_record.trained_rates(self._training).items() if k in spec.sensors
        }
        self._create_entities(spec)
        self._input_topics = {k: self.resolve_topic_name(self.get_parameter(SENSORS[k][1]).value) for k in spec.sensors}
        inputs = ", ".join(f"{k}<-{topic}" for k, topic in self._input_topics.items())
        running = policy_path
        if backend.name == "onnx" and policy_path.suffix == ".pt":  # the export beside it runs: named
            gone = "" if policy_path.exists() else ", which is not here"
            running = f"{backend.path} (the export of {policy_path.name}{gone})"
        self.get_logger().info(
            f"configured: policy {running} ({backend.name}, {backend.config['name']}), inputs {inputs}"
            f", updates on {', '.join(spec.update_on)} (reordering lag {self.runner.reorder_lag_s * 1e3:g} ms)"
            f", {s.command_type} -> {self.resolve_topic_name(s.command_topic)} "
            f"({s.publish_mode})"
        )
        if getattr(backend, "note", None):
            self.get_logger().warning(backend.note)
        if s.command_type == "float64_multi_array" and spec.action_kind == "twist":  # e.g. the rover's on a balancer
            self.get_logger().warning(
                f"command_type: float64_multi_array publishes this policy's twist actions [linear, angular] "
                f"({training_record.describe_source(self._training, backend.config.get('world'))}) as a plain array on "
                f"{self.resolve_topic_name(s.command_topic)}: a base taking wheel commands would read them as "
                f"such; for a differential-drive base use command_type twist or twist_stamped"
            )
        problem = training_record.action_scale_problem(self._training, s.action_scale)
        if problem:  # e.g. the rover's shipped parameter file for the policy of a faster robot, trained from its bags
            source = training_record.describe_source(self._training, backend.config.get("world"))
            self.get_logger().warning(f"{problem} ({source})")
        # the limits, joint names and input topics it read its bags with: another parameter file's (its -1 lag: the
        # config's where training read the robot file's; another camera's topic) feed the network other data, unsaid
        node = {key: getattr(s, key) for key in training_record.DATA_LIMITS} | {"joint_names": s.joint_names}
        node["topics"] = dict(self._input_topics)  # as subscribed: namespace and remappings applied
        node["namespace"] = self.get_namespace()  # the topics are compared without it (another robot's bags)
        problem = training_record.data_settings_problem(self._training, node, spec.reorder_lag_s)
        if problem:
            source = training_record.describe_source(self._training, backend.config.get("world"))
            self.get_logger().warning(f"{problem} ({source})")

    def _fail(self, transition: str, reason) -> None:
        """Log why a transition failed (and keep it for autostart's message)."""
        self.failure = f"{transition} failed: {reason}"
        self.get_logger().error(self.failure)

    def _create_entities(self, spec):
        s = self.settings
        reliability = (
            ReliabilityPolicy.BEST_EFFORT if s.sensor_qos_reliability == "best_effort" else ReliabilityPolicy.RELIABLE
        )
        # new subscriptions count missed.<sensor> from their first message: what was sent while the node had none
        # (unconfigured, between a cleanup and this configure) is no message it missed
        self._publications, self._heard_publishers, self._interleaving = {}, {}, {}
        for sensor in spec.sensors:
            msg_type, topic_param, _ = SENSORS[sensor]
            depth_param = "camera_qos_depth" if sensor == CAMERA else "imu_qos_depth"
            topic = self.get_parameter(topic_param).value
            # with the MessageInfo: its publication sequence numbers count the messages that never reached the node
            callback = WithMessageInfo(
                self._on_image if sensor == CAMERA else functools.partial(self._on_vector, sensor)
            )
            with _naming(f"{topic_param} ({topic!r}) / {depth_param}"):
                qos = QoSProfile(
                    history=HistoryPolicy.KEEP_LAST, depth=getattr(s, depth_param), reliability=reliability
                )
                self._subscriptions_by_sensor[sensor] = self.create_subscription(msg_type, topic, callback, qos)
        self._gravity = GravityCheck()  # the IMU's axes and units against the worlds' (gravity +9.81 on z)
        self._grey_camera_said = False  # a grey camera for a policy whose worlds render colour: said once
        if CAMERA in spec.sensors:  # camera_info beside the image (image_transport's convention), where published:
            # beside the topic the image subscription resolved to, so that remapping the image moves it along
            info_topic = camera_info_topic(self._subscriptions_by_sensor[CAMERA].topic_name)
            info_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=reliability)  # the camera's
            world = self.runner.backend.config.get("world")
            # the field of view the policy file records it was trained with; an older file: the world's of today
            recorded, fovy = training_record.trained_fovy_deg(self._training)
            fovx = training_record.trained_fovx_deg(self._training) if recorded else None  # bags: pixels of any shape
            trained = (spec.sensors[CAMERA], world, fovy if recorded else world_camera_fovy_deg(world), recorded, fovx)
            self._subscriptions_by_sensor["camera_info"] = self.create_subscription(
                CameraInfo, info_topic, lambda msg: self._on_camera_info(msg, *trained), info_qos
            )
        with _naming(f"command_topic ({s.command_topic!r}) / command_qos_depth"):
            self._command_pub = self.create_lifecycle_publisher(
                COMMAND_MESSAGES[s.command_type],
                s.command_topic,
                QoSProfile(
                    history=HistoryPolicy.KEEP_LAST, depth=s.command_qos_depth, reliability=ReliabilityPolicy.RELIABLE
                ),
            )
        # one message, refilled for every command: publish() serialises it at once, and building a TwistStamped
        # (Header, Time, Twist, two Vector3) costs more than the policy's IMU update
        self._command_msg = COMMAND_MESSAGES[s.command_type]()
        if s.command_type == "twist_stamped":
            self._command_msg.header.frame_id = s.command_frame_id
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._reset_srv = self.create_service(Trigger, "~/reset", self._on_reset)
        self._create_activity_timers()

    def _create_activity_timers(self):
        """The timers that run only while active, created stopped: each activation restarts them (``reset``: the
        watchdog's clock starts there), each deactivation cancels them, cleanup destroys them (a new configure
        makes new ones with its periods).

        Created once per configure, not at each activation: rclpy keeps a weak reference to every timer a node
        ever created in its callback group, dead ones too (rclpy issue 1356), so creating and destroying them
        at each activation grew the node by ~175 bytes per timer a cycle, without bound for a node paused and
        resumed for months."""
        s = self.settings
        timers = [
            ("watchdog_timeout_s", s.watchdog_timeout_s / 4.0, self._on_watchdog),
        ]
        if s.publish_mode == "fixed_rate":
            timers.append(("control_rate_hz", 1.0 / s.control_rate_hz, self._on_control_timer))
        # without use_sim_time on the steady clock: a timer on the node clock (system time) waits out a step of the
        # system clock back (NTP or chrony at boot or a network's return), the watchdog's checks and fixed_rate's
        # commands stopped for as long as the step (ros2/ros2#1080); the checks still measure by the node clock
        use_sim_time = bool(self.get_parameter("use_sim_time").value)
        clock = None if use_sim_time else Clock(clock_type=ClockType.STEADY_TIME)
        for parameter, period, callback in timers:
            with _naming(parameter):
                timer = self.create_timer(period, callback, clock=clock)
            # not autostart=False, which Humble's rclpy lacks; a callback run in between finds the node inactive
            timer.cancel()
            self._activity_timers.append(timer)
        # diagnostics in every configured state, on the steady clock: an inactive node, or one under use_sim_time
        # waiting for /clock, still says so at a steady rate (it published nothing then: the aggregator showed it
        # STALE, like a dead node); the last of the list, destroyed at cleanup with the others (_release)
        with _naming("diagnostics_period_s"):
            timer = self.create_timer(
                s.diagnostics_period_s, self._on_diagnostics_timer, clock=Clock(clock_type=ClockType.STEADY_TIME)
            )
        self._activity_timers.append(timer)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start commanding from a fresh state; a failure is logged and leaves the node inactive."""
        self.failure = None
        gc.collect()  # the garbage of loading, before the watchdog's clock starts (see _hold_heap)
        try:
            # sensor readings held from before a deactivate are stale; the setpoint stays (the latest received)
            self._reset_bookkeeping()
            self._activated_at = self._start_from_rest("activate")
            for timer in self._activity_timers[:-1]:  # not the diagnostics' (running since configure)
                timer.reset()  # its first call one period from now
            ret = super().on_activate(state)
        except Exception as exc:
            self._cancel_activity_timers()
            self._fail("activate", exc if isinstance(exc, ParameterError) else f"{type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        _hold_heap(self, True)
        self._active = True
        self._stop_unconfirmed = False
        self.get_logger().info("active: commanding")
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop commanding: publish a stop command and hold (timers stopped; model and subscriptions kept)."""
        with self._logging_failure("deactivate"):
            _hold_heap(self, False)
            self._stop_if_active("deactivated")
            self._cancel_activity_timers()
            self.get_logger().info("inactive: stop command published, holding")
            return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the model and the entities created at configure."""
        with self._logging_failure("cleanup"):
            self._release()
            return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Publish a stop command if active, then free everything; said in the log (it said nothing, or only the
        summary, of a node that no transition can start again)."""
        with self._logging_failure("shutdown"):
            stopped = self._active
            self._stop_if_active("shutdown")
            self._release()
            self._finalized = True
            self.get_logger().info(
                "finalized (shut down)"
                + (": stop command published" if stopped else "")
                + "; restart the node to command again"
            )
            return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised (logged by ``_logging_failure``): publish a stop command if the node was still
        commanding (the robot would keep the last one), then free everything; SUCCESS returns the node to
        unconfigured."""
        try:
            self._stop_if_active("error")
        except Exception as exc:  # the publisher may be what failed: free the rest anyway
            self.get_logger().error(
                f"error processing: no stop command could be published: {type(exc).__name__}: {exc}"
            )
        self._release()
        self.get_logger().error("error processing: model and entities freed, unconfigured (configure to start again)")
        return TransitionCallbackReturn.SUCCESS

    @contextlib.contextmanager
    def _logging_failure(self, transition: str):
        """Log an exception of a transition before rclpy turns it into ERROR without a word (then on_error runs)."""
        try:
            yield
        except Exception as exc:
            self._fail(transition, f"{type(exc).__name__}: {exc}")
            raise

    def _stop_if_active(self, why: str) -> None:
        """End commanding; a node that was commanding publishes a stop command."""
        if self._active:
            self._active = False
            self._publish_stop(why)
            self._stop_unconfirmed = self._command_pub is not None

    def _cancel_activity_timers(self):
        for timer in self._activity_timers[:-1]:  # not the diagnostics' (running until cleanup)
            timer.cancel()

    def _release(self, summary: bool = True):
        """Free the model and every entity created at configure (logging a summary of the run)."""
        _hold_heap(self, False)  # shutdown and error come here from active without a deactivate
        if self.runner is not None and summary:
            # by the diagnostics' names and values ("received.imu 61"), not a Python dict ({'received.imu': 61})
            counters = named_counts(
                {k: v for k, v in sorted(self.runner.counters.items()) if not k.startswith("accepted.")}
            )
            self.get_logger().info(
                f"summary: {self._commands_published} commands ({self._stops_published} stops); {counters}"
            )
        # no loop variable keeps the last one alive past _forget_destroyed_entities
        while self._activity_timers:
            self.destroy_timer(self._activity_timers.pop())
        while self._subscriptions_by_sensor:
            self.destroy_subscription(self._subscriptions_by_sensor.popitem()[1])
        if self._command_pub is not None:
            if self._stop_unconfirmed and self.context.ok():  # a stop lost at the writer's end: the robot moves on
                try:
                    deliver_stop(self._command_pub, self.get_logger(), "the stop command", self)
                except Exception as exc:  # free the rest anyway
                    self.get_logger().error(f"the stop command's delivery: {type(exc).__name__}: {exc}")
            self.destroy_lifecycle_publisher(self._command_pub)
        self._stop_unconfirmed = False
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
        if self._reset_srv is not None:
            self.destroy_service(self._reset_srv)
        self._command_pub = self._diag_pub = self._reset_srv = None
        if self.runner is not None:
            self.runner.backend.close()
        self.runner = self.settings = None
        _forget_destroyed_entities(self)

    def destroy_node(self):
        """Destroy the node; a configured one is shut down first, as rclcpp's lifecycle nodes are at destruction.

        A node composed into the user's own process and destroyed while active (``node.destroy_node()`` after the
        spin, rclpy's usual ending) published no stop command: the robot kept its last one. It also kept the heap
        frozen for the rest of the process (``_hold_heap``) and its model loaded. With the context shut down
        already (``rclpy.shutdown()``, rclpy's own SIGINT handler) nothing can be published any more: that is
        logged as an error, and the node is freed all the same.

        A transition running in another thread (a deactivate called from it) ends first, up to ``TRANSITION_WAIT_S``:
        the node was freed under it, and neither that transition nor the shutdown published a stop. Where the
        shutdown transition cannot run (destroy_node called inside a transition of this thread, a configure a signal
        abandoned, one of another thread still running), the node publishes its stop if it was commanding and is
        freed without it, logged."""
        with self._free_lock:  # once, also when called again from inside its own shutdown or from two threads
            if self._destroy_called:
                return
            self._destroy_called = True
        name = self.get_fully_qualified_name()
        waited = self._lock.acquire(timeout=self.TRANSITION_WAIT_S)
        try:
            if self.runner is not None:
                self._shut_down_at_destroy(waited)
        finally:
            if waited:
                self._lock.release()
        try:
            super().destroy_node()
        finally:
            # rclpy's LifecycleNode leaves its state machine, which holds the node: the node, its context and its
            # DDS participant outlived destroy_node until garbage collection, which the executable's quick exit
            # skips (docs/ros.md, Stopping). A transition under way (this one's caller, or another thread's past
            # TRANSITION_WAIT_S) still ends through it: freed when it has.
            with self._free_lock:
                if self._transitions_running:
                    self._free_after_transition = name
                else:
                    self._free_state_machine(name)

    def _shut_down_at_destroy(self, waited: bool):
        """destroy_node's shutdown of a configured node (``waited``: it holds the node's lock)."""
        state = self._state_machine.current_state[1]
        if not self.context.ok():
            if self._active:
                self._fail(
                    "shutdown at destroy_node",
                    "the ROS context was shut down while the node was commanding: no stop command could be "
                    "published, the robot keeps its last command (shut the node down before rclpy.shutdown())",
                )
        elif waited and state in ("unconfigured", "inactive", "active"):
            try:
                self.trigger_shutdown()  # a stop command if active, then frees everything (finalized)
            except Exception as exc:  # refused: stopped and freed below
                self._fail("shutdown at destroy_node", f"{type(exc).__name__}: {exc}")
        else:
            commanding = self._active
            try:
                self._stop_if_active("destroy_node")
            except Exception as exc:  # the publisher may be what failed: free the rest anyway
                self.get_logger().error(
                    f"destroy_node: no stop command could be published: {type(exc).__name__}: {exc}"
                )
                commanding = False
            where = (
                "of this thread, or one left unfinished"
                if waited
                else f"of another thread, still running after {self.TRANSITION_WAIT_S:g} s"
            )
            self._fail(
                "shutdown at destroy_node",
                f"called during the {state!r} transition ({where}): "
                + ("stop command published, " if commanding else "")
                + "model and entities freed without the shutdown transition",
            )
        if self.runner is not None:
            self._active = False
            self._release()

    # ------------------------------------------------------------------------------------------- parameters
    @_one_at_a_time
    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """A change at run time (``ros2 param set``): a value that configure would refuse is refused with the
        same reason; while configured (inactive or active) only max_command and max_command_rate apply, at the
        next command; every other change is refused, as it takes effect only at configure, and so is use_sim_time
        (the clock the watchdog runs on) — rclpy would switch it at once. autostart is read
        when the process starts: a change is refused in every state. Values are compared and checked as plain
        Python (``params.parameter_value``: the service's ``array('d', ...)`` is a list; 5 is 5.0)."""
        clock = sorted(
            p.name
            for p in parameters
            if p.name in CLOCK_PARAMETERS and not same_parameter_value(p.value, self.get_parameter(p.name).value)
        )
        if clock and self.settings is not None:  # unconfigured: rclpy switches the clock, nothing runs on it yet
            state = "active" if self._active else "inactive"
            return SetParametersResult(
                successful=False,
                reason=(
                    f"{', '.join(clock)}: the node is configured ({state}) and its watchdog, timers and stamp checks "
                    f"run on its clock; cleanup, change it, then configure again"
                ),
            )
        changes = {p.name: parameter_value(p.value) for p in parameters if p.name in POLICY_NODE_PARAMETERS}
        if not changes:  # rclpy's other parameters
            return SetParametersResult(successful=True)
        if self._finalized:  # settings None as unconfigured, but no configure can follow: a value set was ignored
            return SetParametersResult(
                successful=False,
                reason=f"{', '.join(sorted(changes))}: the node is shut down (finalized) and uses no parameter any "
                "more; restart it with the new value",
            )
        values = {n: parameter_value(self.get_parameter(n).value) for n in POLICY_NODE_PARAMETERS}
        changed = sorted(n for n, v in changes.items() if not same_parameter_value(v, values[n]))
        values.update(changes)
        spec = self.runner.spec if self.runner is not None else None
        expanded = {}
        problems = [
            p
            for p in policy_node_parameter_problems(
                values, spec and spec.action_size, spec and spec.action_kind, expanded
            )
            if changes.keys() & set(p.split(":", 1)[0].split(", "))  # the problems of what this call sets
        ]
        if problems:
            return SetParametersResult(successful=False, reason="; ".join(problems))
        at_start = [n for n in changed if n in PROCESS_START_PARAMETERS]
        if at_start:
            return SetParametersResult(
                successful=False,
                reason=(
                    f"{', '.join(at_start)}: read at process start (the node configures and activates itself "
                    f"only then); restart the node with the new value, or use the lifecycle transitions"
                ),
            )
        if self.settings is None or not changed:  # unconfigured: used at the next configure
            return SetParametersResult(successful=True)
        later = [n for n in changed if n not in LIVE_PARAMETERS]
        if later:
            state = "active" if self._active else "inactive"
            return SetParametersResult(
                successful=False,
                reason=(
                    f"{', '.join(later)}: the node is configured ({state}); this takes effect at configure: "
                    f"cleanup, then configure again (only {' and '.join(LIVE_PARAMETERS)} apply at once)"
                ),
            )
        s = self.settings
        live = {n: expanded[n] for n in LIVE_PARAMETERS}
        # the previous command goes on for the rate limit, clipped to a lowered max_command: it holds at once
        limiter = self.limiter.with_limits(live["max_command"], live["max_command_rate"])
        self.limiter, self.settings = limiter, PolicyNodeSettings({**s.values, **live})
        self.get_logger().info(
            "command limits changed: " + ", ".join(f"{n} {live[n]}" for n in changed) + " (from the next command)"
        )
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------------------------------- input
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _may_log(self, key: str) -> bool:
        """Whether the repeated message ``key`` may be logged now (once per ``log_throttle_s``). Checked before the
        message is built or the logger is called: rclpy's own ``throttle_duration_sec`` costs ~0.3 ms a call even
        when it logs nothing, which a sensor failing validation at 200 Hz pays on every message."""
        now = time.monotonic()
        last = self._warned_at.get(key)
        if last is not None and now - last < self.settings.log_throttle_s:
            return False
        self._warned_at[key] = now
        return True

    def _note_publication(self, sensor: str, info) -> bool:
        """Read the publisher of ``sensor``'s message from its MessageInfo. Messages of its publisher that never
        reached this callback, a gap in that publisher's publication sequence numbers (dropped as the node fell
        behind, past its QoS depth, or lost on the network), are counted as ``missed.<sensor>``: what tells a node
        falling behind from a slow sensor (_check_trained_rates). Each publisher's numbers are its own: where two
        take turns, each one's gap is counted from its own last message (compared with the other's, none was, and
        their losses went uncounted); a new publisher (a driver restarted) starts its count anew. Returns whether
        publishers take turns on the topic: this message's publisher is another than the last message's and was
        heard before (a second driver, a bag playing beside the sensor; a restarted driver's old publisher is not
        heard again), which :meth:`_on_reading` says where their stamps go back. Per message two fields read and
        one pair kept, a dict looked up on a change of publisher (~0.3 us with the call); no count where the
        middleware gives no sequence number (None), no turns where it gives no gid."""
        gid = info.get("publisher_gid")
        publisher = None if gid is None else gid["data"]
        number = info.get("publication_sequence_number")  # None: not given (the middleware, a distro without it)
        last = self._publications.get(sensor)
        self._publications[sensor] = (publisher, number)
        if last is None:
            return False
        turn, previous = False, last[1]
        if last[0] != publisher:
            heard = self._heard_publishers.setdefault(sensor, {})  # publisher -> the number of its last message
            turn = publisher in heard
            if turn:
                self._interleaving.setdefault(sensor, set()).update((publisher, last[0]))
            elif len(heard) >= 64:  # a driver restarted again and again: each restart a new gid, none heard again
                heard.clear()
            heard[last[0]] = last[1]
            previous = heard.get(publisher)  # its own last message's (None: a publisher not heard before)
        if number is not None and previous is not None and number > previous + 1 and self.runner is not None:
            self.runner.counters[f"missed.{sensor}"] += number - previous - 1
        return turn

    @_one_at_a_time
    def _on_image(self, msg: Image, info=None):
        turn = info is not None and self._note_publication(CAMERA, info)  # (a test feeding messages has no info)
        if not self._active:
            return
        expected = self.runner.spec.sensors[CAMERA]
        if (msg.height, msg.width) != tuple(expected[:2]):  # refused unread: a valid 100 MB frame of another size
            self._reject(CAMERA, R.BAD_SHAPE)  # took 0.7 s and 230 MB to convert before the runner refused it
            self._warn_rejected(
                CAMERA,
                R.BAD_SHAPE,
                _camera_size_detail((msg.height, msg.width, *expected[2:]), expected),
                stamps.seconds(msg.header.stamp),
            )
            return
        try:
            value = image_to_numpy(msg, "rgb8")
        except ImageConversionError as exc:
            self._reject(CAMERA, BAD_ENCODING)
            if self._may_log("bad_encoding"):
                self.get_logger().warning(f"camera image on {self._input_topics[CAMERA]} rejected: {exc}")
            return
        if msg.encoding in GREY_ENCODINGS and not self._grey_camera_said:
            self._grey_camera_said = True
            self.get_logger().warning(
                f"camera on {self._input_topics[CAMERA]} publishes {msg.encoding}: the policy gets its grey in all "
                "three colour channels, while the worlds render colour (a policy trained in one sees another "
                "picture; one trained on this camera's own recordings: ignore this); a colour camera: publish "
                "rgb8 or bgr8"
            )
        self._on_reading(CAMERA, msg.header.stamp, value, turn)

    @_one_at_a_time
    def _on_camera_info(
        self,
        msg: CameraInfo,
        expected_shape: tuple,
        world: str | None,
        fovy_deg: float | None,
        recorded: bool,
        fovx_deg: float | None = None,
    ):
        """The camera's resolution must be the policy's input size, its pixels square and its field of view the
        training camera's (the policy file's record; an older file: the world's of today; conventions.camera_info):
        each problem counted (``camera_info.<problem>``) and said once per throttle period, as a warning: images of
        a wrong size are rejected, and said so, as they come (bad_shape); a camera_info of another size beside
        images of the right one (resized on the way, camera_info not) rejects nothing; the others are taken but
        show another picture than training did."""
        if self.runner is None:
            return
        for problem, text in camera_info_problems(msg, expected_shape, world, fovy_deg, recorded, fovx_deg).items():
            self.runner.counters[f"camera_info.{problem}"] += 1
            if self._may_log(f"camera_info.{problem}"):
                self.get_logger().warning(f"{self._subscriptions_by_sensor['camera_info'].topic_name}: {text}")

    @_one_at_a_time
    def _on_vector(self, sensor: str, msg, info=None):
        turn = info is not None and self._note_publication(sensor, info)
        if not self._active and not (sensor in SETPOINTS and self.runner is not None):
            return  # inactive: sensor messages are ignored, a setpoint is kept (the latest one in any state)
        try:
            value = self._wheel_velocities(msg) if sensor == "wheels" else SENSORS[sensor][2](msg)
        except ImuFieldNotProvided as exc:  # an IMU without a gyro: its zeros are no reading
            self._reject(sensor, NOT_PROVIDED)
            if self._may_log(NOT_PROVIDED):
                self.get_logger().warning(
                    f"{sensor} message on {self._input_topics[sensor]} rejected ({NOT_PROVIDED}): {exc}"
                )
            return
        if value is None:
            return
        if sensor == "imu":
            problem = self._gravity.add(value)
            if problem:
                self.runner.counters["imu.gravity_mismatch"] += 1
                if self._may_log("imu.gravity_mismatch"):
                    self.get_logger().warning(f"{self._input_topics[sensor]}: {problem}")
        self._on_reading(sensor, msg.header.stamp if hasattr(msg, "header") else None, value, turn)

    def _wheel_velocities(self, msg: JointState):
        """The velocities of ``joint_names`` in that order (conventions.joints); None (rejected, counted, logged)
        when a needed joint has no name or no velocity in the message."""
        value, lacking = velocities_by_name(msg.name, msg.velocity, self._joint_names)
        if value is None:
            self._reject("wheels", MISSING_JOINT)
            if self._may_log("missing_joint"):
                self.get_logger().warning(
                    f"wheels message rejected ({MISSING_JOINT}): no velocity for {', '.join(map(repr, lacking))} "
                    f"(joint_names); it names {_some(msg.name)} with {len(msg.velocity)} velocities"
                )
        return value

    def _reject(self, sensor: str, reason: str):
        """A message the node rejects before the runner (one it cannot read): counted as the runner counts its own
        rejections, and for the watchdog, which names an input whose every message is rejected with the reasons
        (a yuv422 camera was called `camera silent`)."""
        self.runner.reject(sensor, reason)
        self._rejected_since_accepted.setdefault(sensor, Counter())[reason] += 1

    def _warn_rejected(self, sensor: str, reason: str, detail: str, stamp: float, key: str = ""):
        """Say (throttled per sensor and reason, and ``key``: one sensor's fault hides no other's, nor a harmless
        case of a reason its faults) that a message was rejected."""
        if self._may_log(f"rejected.{sensor}.{reason}{'.' + key if key else ''}"):
            self.get_logger().warning(
                f"{sensor} message on {self._input_topics[sensor]} rejected ({reason}{detail}, stamp {stamp:.6f})"
            )

    def _on_reading(self, sensor: str, stamp_msg, value, turn: bool = False):
        """``turn``: publishers take turns on the sensor's topic and this message's follows another's
        (:meth:`_note_publication`)."""
        now = self._now()
        if self._activated_at == 0.0:  # activated before the first /clock: before an update's command ramps
            self._watch_from_first_clock(now)
        stamp = now if stamp_msg is None else stamps.seconds(stamp_msg)  # Twist has no header: arrival time
        invalid = "" if stamp_msg is None else stamps.invalid(stamp_msg)
        if invalid:  # nanosec >= 10^9: no Time; read as seconds it was a stamp up to 4.3 s later, echoed in commands
            self._reject(sensor, R.BAD_STAMP)
            self._warn_rejected(sensor, R.BAD_STAMP, f": {invalid}", stamp)
            return
        # a stamp on arrival (a Twist) says nothing of its publisher's clock: two publishers' targets at one /clock
        # reading are equal; an equal header stamp is a duplicate_stamp, counted as such, not a stamp that went back.
        # Publishers taking turns on a setpoint's topic show as its value in force changing at a turn instead
        setpoint = sensor in SETPOINTS
        previous = self.runner.latest_stamps().get(sensor) if turn and stamp_msg is not None and not setpoint else None
        in_force = self.runner.setpoint(sensor) if turn and setpoint else None
        result = self.runner.submit(sensor, stamp, value, now=now, tag=stamp_msg)
        if previous is not None and stamp < previous:  # publishers take turns, and the stamps went back
            if result.reset == R.CLOCK_BACKWARDS:
                what = "the liquid state is reset (clock_backwards)"
            else:
                what = f"rejected ({result.reason})" if not result.accepted else "taken"
            self._say_interleaved(
                sensor,
                f"their stamps go back where one follows another: {sensor} stamp {stamp:.3f}, "
                f"{previous - stamp:.3f} s before the last one taken, {what}",
                "a second driver, or a bag playing,",
            )
        elif in_force is not None and result.accepted and not np.array_equal(in_force, value):
            self._say_interleaved(
                sensor,
                f"the {sensor} setpoint in force changes where one follows another: to {_vector(value)} from "
                f"{_vector(in_force)}",
                "a second node publishing it (a teleop beside a planner, a bag playing)",
            )
        if result.reason == R.INFERENCE_ERROR:  # the reading was taken, the update it released failed: the
            self._last_arrival[sensor] = now  # input is not silent (the waiting stop names the failing inference)
        if not result.accepted:
            self._rejected_since_accepted.setdefault(sensor, Counter())[result.reason] += 1
            detail = f": {result.detail}" if result.detail else ""
            if result.reason == R.BAD_SHAPE:  # which size it was, and which the policy takes
                expected = self.runner.spec.sensors[sensor]
                detail = (
                    _camera_size_detail(np.shape(value), expected)
                    if sensor == CAMERA
                    else f": shape {np.shape(value)}, the policy takes {expected}"
                )
            elif result.reason == R.FUTURE_STAMP:  # by how much: a driver stamping by another clock
                detail = (
                    f": {stamp - now:.3f} s ahead of the node clock, more than max_future_stamp_s "
                    f"{self.settings.max_future_stamp_s:g} s"
                )
                before = self._clock_before_jump_back(now)
                if before is not None and stamp <= before + self.settings.max_future_stamp_s:
                    detail += (
                        f", which went back from {before:.3f} s or later just before (a bag played with --loop and "
                        "--clock starting over, a /clock restarted): a message from before the jump, still on its way "
                        "then; the next message of the new timeline restarts the liquid state"
                    )
                    self._warn_rejected(sensor, result.reason, detail, stamp, key="before_clock_jump")
                    return
            self._warn_rejected(sensor, result.reason, detail, stamp)
            return
        self._last_arrival[sensor] = now
        self._rejected_since_accepted.pop(sensor, None)
        if stamp_msg is not None and now - stamp > STAMPS_BEHIND_S:
            self._say_stamps_behind(sensor, now - stamp)
        # throttled per kind: a gap reset's line hid the clock_backwards one of a bag's loop just after it
        if result.reset is not None and self._may_log(f"reset.{result.reset}"):
            self.get_logger().info(f"liquid state reset ({result.reset}) at {sensor} stamp {stamp:.3f}")
        if result.status != R.UPDATED or not self._active:
            return
        self._last_update_at = now
        self._inference_errors_at_update = self.runner.counters[f"rejected.{R.INFERENCE_ERROR}"]
        if self._starved:
            self.get_logger().info(f"updating again after waiting for {self._starved}")
            self._starved, self._starved_stop, self._starved_reason, self._starved_unsaid = "", False, None, False
            self._publish_diagnostics()
        if self._stale and self._stale_inputs(now):  # this message may have been the last stale input's
            return
        if self._stale:  # every input is fresh again: command from this update on, not from the next check
            self._commanding_again()
        if self.settings.publish_mode == "per_update":  # the latest of the updates this message released
            # stamped as the message that caused the update (exactly: the header stamp travels as the tag)
            self._publish_command(self.limiter(result.action, now), result.tag)
            self._command_ages.append(self._now() - result.stamp)
        else:
            self._pending_action = result.action

    def _say_stamps_behind(self, sensor: str, behind: float):
        """A message taken whose stamp is ``behind`` seconds older than the node clock: counted
        (``stamps_behind.<sensor>``) and said once per throttle period. The state advances by the stamps' dt all
        the same, but stamped commands (twist_stamped) carry those stamps: a base that drops commands older than its
        timeout (diff_drive_controller's cmd_vel_timeout) stands still while the node says it is commanding."""
        self.runner.counters[f"stamps_behind.{sensor}"] += 1
        if self._may_log(f"stamps_behind.{sensor}"):
            harm = (
                "the commands carry these stamps, which a base checking their age drops"
                if self.settings.command_type == "twist_stamped"
                else "the commands carry no stamp, but sensors stamping by different clocks make updates wait"
            )
            self.get_logger().warning(
                f"{sensor} stamps are {behind:.3f} s behind the node clock (more than {STAMPS_BEHIND_S:g} s): its "
                "driver stamps by another clock (time since boot, the device's own counter), or its messages arrive "
                f"late (a publisher behind real time, a bag played without --clock and use_sim_time); {harm}; stamp "
                "with the ROS clock (the driver's time-source setting)"
            )

    def _say_interleaved(self, sensor: str, symptom: str, check: str):
        """Messages of several publishers take turns on ``sensor``'s topic, and this one's shows it (``symptom``): its
        stamp went back from the last one taken (a second driver started by mistake, two launch files both bringing
        it up, a bag played beside the live sensor), or, for a setpoint, whose stamp is its arrival, it changed the
        value in force (a teleop beside a planner: the target flips between theirs). The rejections
        (out_of_order) or resets (clock_backwards) a sensor's causes at almost every message said nothing of the
        cause, nor did anything the flipping target. Counted as ``publishers_interleaved.<sensor>``, said at most once
        per ``log_throttle_s`` naming the publishers (their gids, as ``ros2 topic info -v`` shows them, and nodes) and
        what to ``check`` for."""
        self.runner.counters[f"publishers_interleaved.{sensor}"] += 1
        if not self._may_log(f"publishers_interleaved.{sensor}"):
            return
        topic, publishers = self._input_topics[sensor], self._interleaving.pop(sensor, set()) - {None}
        try:  # the nodes behind the gids (a graph query, at most once per log_throttle_s)
            infos = self.get_publishers_info_by_topic(topic)
            nodes = {bytes(info.endpoint_gid): path for info in infos if (path := node_path(info))}  # known nodes
        except Exception:  # the gids alone say it
            nodes = {}
        named = [
            gid_text(gid) + (f" ({nodes[gid]})" if gid in nodes else "")
            for gid in sorted(publishers, key=lambda g: (nodes.get(g, ""), g))
        ]
        self.get_logger().warning(
            f"{topic}: messages from {len(publishers)} publishers interleave (gids {', '.join(named[:4])}"
            f"{', ...' if len(named) > 4 else ''}); {symptom} "
            f"({self.runner.counters[f'publishers_interleaved.{sensor}']} such messages, "
            f"publishers_interleaved.{sensor}): check for {check} on {topic}"
        )

    @_one_at_a_time
    def _on_control_timer(self):
        if self._active and not self._stale and self._pending_action is not None:
            self._publish_command(self.limiter(self._pending_action, self._now()), None)

    # ------------------------------------------------------------------------------------------- output
    def _publish_command(self, command: np.ndarray, stamp_msg):
        kind, msg = self.settings.command_type, self._command_msg
        if kind == "float64_multi_array":
            msg.data = [float(c) for c in command]
        else:
            twist = msg if kind == "twist" else msg.twist
            twist.linear.x, twist.angular.z = float(command[0]), float(command[1])
            if kind == "twist_stamped":
                msg.header.stamp = stamp_msg if stamp_msg is not None else self.get_clock().now().to_msg()
        self._command_pub.publish(msg)
        self._commands_published += 1
        self._moving = bool(np.any(command != 0))

    def _publish_stop(self, why: str):
        if self._command_pub is None or self.settings is None:
            return
        self._publish_command(self.limiter.stop(self._now()), None)
        self._stops_published += 1
        self._pending_action = None

    @_one_at_a_time
    def _on_watchdog(self):
        if not self._active:
            return
        now, timeout = self._now(), self.settings.watchdog_timeout_s
        self._watch_from_first_clock(now)
        if self._watchdog_seen is not None and now < self._watchdog_seen:
            self._restart_watch_times(now, self._watchdog_seen - now)
        self._watchdog_seen = now
        stale = self._stale_inputs(now)
        if stale:
            self._publish_stop("watchdog")  # first (nothing below may keep it back); repeated while stale
            if not self._stale:  # a new stop
                self.runner.counters["watchdog.stops"] += 1
                self._stops_unsaid += 1
            if not self._stale_said:  # at its start, or (throttled then) once the throttle allows while it lasts
                self._say_watchdog_stop(stale, now, timeout)
        elif self._stale:
            self._commanding_again()
        was_stale, self._stale = self._stale, stale
        if stale != was_stale:
            self._publish_diagnostics()
        if not stale:
            self._check_starved(now, timeout)

    def _say_watchdog_stop(self, stale: list[str], now: float, timeout: float):
        """The current watchdog stop (published and counted as ``watchdog.stops`` already), said in a warning at most
        once per ``log_throttle_s``: a stop not said at its start is said once the throttle allows while it lasts
        (the log's last word is not "fresh again" while the robot stands stopped); the warning says how many stops
        before it went unsaid, and an unsaid stop's "fresh again" is not said either. A sensor slower than
        ``1 / watchdog_timeout_s`` (a camera at 2 fps in the dark) stopped the robot and was fresh again at every
        message: two lines a message for as long as it lasted."""
        if not self._may_log("watchdog"):
            return
        self._stale_said = True
        ages = ", ".join(self._silence(k, now) for k in stale)
        earlier = self._stops_unsaid - 1  # this stop is one of them
        unsaid = (
            f" ({earlier} more watchdog stops since its last warning, not logged: watchdog.stops)" if earlier else ""
        )
        self._stops_unsaid = 0
        self.get_logger().warning(
            f"watchdog: {ages} (> {timeout} s): stop command{self._unmatched_publishers(stale)}{unsaid}"
        )

    def _silence(self, sensor: str, now: float) -> str:
        """``camera silent 0.52 s``, or, when its messages arrive but are all rejected, ``camera: no usable
        message for 0.52 s (12 rejected: bad_shape 12)`` (it said "silent", a driver that publishes every frame)."""
        since = now - self._last_arrival.get(sensor, self._activated_at)
        rejected = self._rejected_since_accepted.get(sensor)
        if not rejected:
            return f"{sensor} silent {since:.2f} s"
        reasons = ", ".join(f"{reason} {n}" for reason, n in rejected.most_common())
        return f"{sensor}: no usable message for {since:.2f} s ({sum(rejected.values())} rejected: {reasons})"

    def _unmatched_publishers(self, sensors) -> str:
        """Publishers on the silent inputs' topics that DDS never matches with the node's subscription, in words
        (empty if none): of another message type, or offering best effort to a reliable subscription
        (``sensor_qos_reliability: reliable`` beside a camera driver's sensor-data QoS). The input reads as silent;
        rclpy says the QoS is incompatible once, when it discovers the publisher, which may be long before."""
        found = []
        reliable = self.settings.sensor_qos_reliability == "reliable"
        for sensor in sensors:
            topic, wanted = self._input_topics[sensor], message_type_name(SENSORS[sensor][0])
            try:
                publishers = self.get_publishers_info_by_topic(topic)
            except Exception as exc:  # only words for the warning: a failing graph query must not end the watchdog
                found.append(f"the publishers on {topic} could not be looked up ({exc!r})")
                continue
            other = sorted({i.topic_type for i in publishers} - {wanted})
            if other:
                found.append(f"{topic} has publishers of type {', '.join(other)}, the {sensor} input takes {wanted}")
            best_effort = [
                endpoint_name(i)
                for i in publishers
                if i.topic_type == wanted and i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
            ]
            if reliable and best_effort:
                found.append(
                    f"{topic} has publishers offering best effort ({', '.join(sorted(set(best_effort)))}), which a "
                    f"reliable subscription never receives (sensor_qos_reliability: reliable): set it to best_effort"
                )
        return "; " + "; ".join(found) if found else ""

    def _stale_inputs(self, now: float) -> list[str]:
        """The inputs (setpoints aside) silent for longer than ``watchdog_timeout_s`` at ``now`` (node clock), since
        their last accepted message or since activation: by more than ``STAMP_TOLERANCE_S``, as the runtime's stamp
        rules count (clock readings are float seconds, 238 ns apart at system time: a silence of exactly the timeout
        on a grid clock was stale or not by their rounding)."""
        timeout = self.settings.watchdog_timeout_s + STAMP_TOLERANCE_S
        return [
            sensor
            for sensor in self.runner.spec.sensors
            if sensor not in SETPOINTS and now - self._last_arrival.get(sensor, self._activated_at) > timeout
        ]

    def _commanding_again(self):
        """Every stale input is fresh again (a message of the last one arrived, or the watchdog's check found so);
        said when its stop was (see _say_watchdog_stop)."""
        if self._stale_said:
            self.get_logger().info("watchdog: all inputs fresh again, commanding")
        self._stale, self._stale_said = [], False
        self._publish_diagnostics()

    def _watch_from_first_clock(self, now: float):
        """Activated with use_sim_time before any /clock (the node clock reads 0, ROS time not started: a node
        autostarted before ``replay --clock`` or the simulator): the watchdog's times count from the first /clock,
        not from 0, which made every input "silent 1700000000.00 s" at once (a stop and a false warning), and
        so does the rate limit's ramp from the activation stop (checked on every reading too: an update before
        the watchdog's next check ramped from 0, a jump to the full command). Messages before it are rejected
        (future_stamp)."""
        if self._activated_at != 0.0 or now <= 0.0 or not self._active:
            return
        self._activated_at = now
        if self.limiter.previous_time == 0.0:
            self.limiter.previous_time = now
        self.get_logger().info(f"node clock started (first /clock, {now:.3f} s) after activation: watching from here")

    def _clock_before_jump_back(self, now: float) -> float | None:
        """Where the node clock was before it went back, while it has not caught up with that yet: at a loop of a bag
        played with ``--clock`` (or a /clock restarted) messages of the bag's end still on their way arrive after the
        clock went back, stamped ahead of it (future_stamp), harmless. Known from the watchdog's check that saw the
        jump, or before that check from the node clock at the inputs' last messages (after the clock's reading now);
        None: the clock did not go back. Read at a future_stamp rejection only."""
        arrivals = [t for t in self._last_arrival.values() if t is not None and t > now]
        if self._clock_before_jump is not None and self._clock_before_jump > now:
            arrivals.append(self._clock_before_jump)
        return max(arrivals, default=None)

    def _restart_watch_times(self, now: float, back: float):
        """The node clock went back (with use_sim_time: /clock restarted, as sim_node's does each episode): the
        times the watchdog and the rate limit measure from are of the old timeline, and ``now - since`` would stay
        negative (no stop, however long an input is silent or no update comes) until the clock caught up. Those
        move back with the clock, so every silence keeps the age it had (a stale input stays stale)."""

        def moved(t):  # a time after now is of the old timeline; one at or before it may be the new one's already
            return t - back if t is not None and t > now else t

        self._clock_before_jump = max([now + back, *(t for t in self._last_arrival.values() if t is not None)])
        self._activated_at = moved(self._activated_at)
        self._last_arrival = {sensor: moved(t) for sensor, t in self._last_arrival.items()}
        self._last_update_at = moved(self._last_update_at)
        self.limiter.previous_time = moved(self.limiter.previous_time)
        # counted, and said at most once per log_throttle_s: two /clock publishers (a bag played with --clock beside
        # the simulator) took the clock back at every watchdog check, a line each (8 a second for ever)
        self.runner.counters["node_clock.jumps_back"] += 1
        self._jumps_unsaid += 1
        if self._may_log("node_clock.jump_back"):
            unsaid, self._jumps_unsaid = self._jumps_unsaid - 1, 0
            more = f" ({unsaid} more jumps back since the last such line, not logged: node_clock.jumps_back)"
            self.get_logger().info(
                f"node clock jumped back {back:.3f} s (to {now:.3f}): the watchdog's times move back with it"
                + (more if unsaid else "")
            )

    def _check_starved(self, now: float, timeout: float):
        """Every input is fresh but no update came for longer than the watchdog timeout (the runner waits for an
        input after a reset, or for messages in its reordering buffer): the last command must not stay on the
        robot. Stop (repeated while it lasts, like the watchdog's) once a command that moves was published."""
        since = self._activated_at if self._last_update_at is None else self._last_update_at
        if now - since <= timeout + STAMP_TOLERANCE_S:  # as _stale_inputs counts
            return
        # again at each check: what updates wait for changes as messages come (said when it changes, not its numbers)
        first, (why, reason) = not self._starved, self._waiting_for()
        self._starved = why
        if reason != self._starved_reason:
            self._starved_reason = reason
            self._publish_diagnostics()
            # said below when it starts with a stop; else here (nothing to stop, or a new reason), throttled
            self._starved_unsaid = not (first and (self._moving or self._starved_stop))
        # a new reason within log_throttle_s of the last is said once the throttle allows while it lasts: the log
        # named only a passing first reason (the next update message's, as messages began) for as long as it lasted
        if self._starved_unsaid and self._may_log("starved"):
            self._starved_unsaid = False
            self.get_logger().warning(
                f"no state update for {now - since:.2f} s (> watchdog_timeout_s {timeout} s) with fresh "
                f"inputs: waiting for {why}"
            )
        if self._moving or self._starved_stop:
            if not self._starved_stop:
                self.get_logger().warning(
                    f"no state update for {now - since:.2f} s (> watchdog_timeout_s {timeout} s) with fresh "
                    f"inputs: waiting for {self._starved}: stop command"
                )
            self._starved_stop = True
            self._publish_stop("waiting")

    def _waiting_for(self) -> tuple[str, tuple]:
        """What updates wait for, in words, and the same without numbers (to tell when it changes): the inputs
        not received since the last reset, with their topics (and publishers there DDS never matches with the
        subscription: a setpoint is never stale for the watchdog, which names them for sensors); inputs stamped
        more than max_gap_s apart (the runner's stale inputs), with each input's latest stamp against the node
        clock, which tells a silent sensor from one stamping by another clock; an inference that succeeds, when
        updates failed since the last one (naming the last error); else the messages in the reordering buffer, or
        with none there the next message of an update sensor (every input arrived after the last one's message)."""
        runner = self.runner
        failed = runner.counters[f"rejected.{R.INFERENCE_ERROR}"] - self._inference_errors_at_update
        failing = (
            f"a successful inference ({failed} failed since the last update, the last with "
            f"{runner.last_inference_error})"
            if failed > 0
            else ""
        )
        missing = [f"{k} ({self._input_topics[k]})" for k in runner.missing_inputs()]
        # a setpoint is never stale for the watchdog: publishers of another type on its topic are named here
        unmatched = self._unmatched_publishers(runner.missing_inputs()) if missing else ""
        if runner.stale_inputs():  # delivered, but stamped too far apart: a sensor silent that long, or 2 clocks
            now = self._now()
            clocks = ", ".join(
                f"{k} {t - now:+.3f} s" for k, t in sorted(runner.latest_stamps().items()) if k not in SETPOINTS
            )
            stale = R.stale_inputs_text(runner.limits.max_gap_s)
            missing.append(f"{stale}; latest stamps minus the node clock: {clocks}")
        held = runner.buffered
        # stale: whether, not which (the last update message's: two update sensors on two clocks flipped it at each
        # message, a line each log_throttle_s saying the same); the words name every input's clock either way
        reason = (runner.missing_inputs(), bool(runner.stale_inputs()), bool(failing), unmatched, held > 0)
        if missing:
            return ", ".join(missing + ([failing] if failing else [])) + unmatched, reason
        if failing:
            return failing, reason
        if held:
            return f"messages in the reordering buffer ({held} held, reorder lag {runner.reorder_lag_s:g} s)", reason
        # every input arrived after the last update message, which waited for them: the next one updates (or finds
        # its inputs stale); said "the reordering buffer" with none in it, reorder lag 0
        sensors = " or ".join(runner.spec.update_on)
        return f"the next {sensors} message (every input has arrived since the last one, which waited for them)", reason

    def _start_from_rest(self, why: str) -> float:
        """A fresh start of the liquid state and of the command, at an activation and at ``~/reset`` alike: the
        state and the held readings and stamps reset (setpoints kept), no action of the discarded state left for the
        control timer, and the rate limit ramping from a stop now (the reset left it at the last command: a new
        simulated episode's first command, and its first recorded label, began where the last episode's ended).
        Publishes nothing (the robot keeps its last command until the first update, or the watchdog's stop).
        Returns the node clock now."""
        self.runner.reset(why, clear_inputs=True)
        now = self._now()
        self._pending_action = None
        self._inference_errors_at_update = self.runner.counters[f"rejected.{R.INFERENCE_ERROR}"]
        self.limiter.stop(now)
        return now

    @_one_at_a_time
    def _on_reset(self, request, response):
        if self.runner is None:
            response.success, response.message = False, "not configured"
            return response
        # the inputs too (setpoints are kept): what the sim graph calls before each episode, whose messages must
        # not meet the previous episode's readings and stamps (with sim time its stamps start again near 0)
        self._start_from_rest("service")
        response.success, response.message = True, "liquid state reset; waiting for one message of each input"
        self.get_logger().info("liquid state reset (~/reset); waiting for one message of each input")
        return response

    # ------------------------------------------------------------------------------------------- diagnostics
    def diagnostic_status(self) -> DiagnosticStatus:
        """The node's health: input rates, dt and inference-time statistics, counters, a level saying what is wrong."""
        runner, now = self.runner, self._now()
        # named by the namespace too: nodes of one name in two namespaces (two robots) are two statuses to the
        # aggregator, not one flickering between them; in the root namespace "policy_node: liquid policy"
        fqn = self.get_fully_qualified_name()
        status = DiagnosticStatus(name=f"{fqn.lstrip('/')}: liquid policy", hardware_id=fqn)
        counters = dict(runner.counters)
        values = {"state": "active" if self._active else "inactive"}
        previous_time, previous_counts = self._rate_window
        for sensor in runner.spec.sensors:
            key = f"received.{sensor}"
            if previous_time is not None and now > previous_time:
                rate = (counters.get(key, 0) - previous_counts.get(key, 0)) / (now - previous_time)
                values[f"rate_hz.{sensor}"] = f"{rate:.1f}"
        self._rate_window = (now, {k: v for k, v in counters.items() if k.startswith("received.")})
        for k, v in runner.dt_stats().items():  # seconds, unit in the key as the others' (n: how many updates)
            values["dt_samples" if k == "n" else f"dt_s.{k}"] = f"{v:.6g}"
        for k, v in runner.latency_stats().items():
            values[f"inference_ms.{k}"] = f"{v * 1e3:.3f}"
        if len(runner.spec.update_on) > 1:  # how old each update sensor's input is at the updates (ms)
            for sensor, stats in runner.age_stats().items():
                for k, v in stats.items():
                    values[f"age_ms.{sensor}.{k}"] = f"{v * 1e3:.3f}"
        if self._command_ages:
            ages = np.asarray(self._command_ages) * 1e3
            values["command_age_ms.p50"] = f"{np.percentile(ages, 50):.3f}"
            values["command_age_ms.p99"] = f"{np.percentile(ages, 99):.3f}"
        for k, v in sorted(counters.items()):
            values[k] = str(v)
        values["rejected_total"] = str(runner.rejected_total())
        values["commands_published"] = str(self._commands_published)
        values["stop_commands"] = str(self._stops_published)
        values["stale_inputs"] = ",".join(self._stale)
        values["waiting_for"] = self._starved
        values["other_command_publishers"] = ", ".join(self._other_commanders)
        faults = self._recent_input_faults(counters)  # at every message, whatever the level: its record is current
        if not self._active:  # first: what the watchdog found before a deactivate is no longer so
            status.level, status.message = DiagnosticStatus.OK, "inactive"
        elif self._stale and self._unusable(self._stale):
            # every message of an input rejected for a setting: nothing moves the robot until a person acts
            unusable = self._unusable(self._stale)
            others = [sensor for sensor in self._stale if sensor not in unusable]
            status.level = DiagnosticStatus.ERROR
            status.message = (
                f"unusable input(s), rejected for a setting that does not match the policy: "
                f"{', '.join(self._silence(sensor, now) for sensor in unusable)}: stopped until the sensor or the "
                f"node's parameters are fixed" + (f"; stale input(s): {', '.join(others)}" if others else "")
            )
        elif self._stale:
            status.level, status.message = DiagnosticStatus.WARN, f"stale input(s): {', '.join(self._stale)}: stopped"
        elif self._starved:
            status.level = DiagnosticStatus.WARN
            status.message = f"no command: waiting for {self._starved}" + (": stopped" if self._starved_stop else "")
        elif runner.counters["updates"] == 0:
            status.level, status.message = DiagnosticStatus.WARN, "waiting for sensor data"
        elif self._other_commanders:
            status.level = DiagnosticStatus.WARN
            status.message = (
                f"commanding beside other publishers on the command topic: {', '.join(self._other_commanders)}"
            )
        elif faults:
            status.level, status.message = DiagnosticStatus.WARN, f"commanding, with input faults: {', '.join(faults)}"
        else:
            status.level, status.message = DiagnosticStatus.OK, "commanding"
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        return status

    def _unusable(self, sensors) -> list[str]:
        """Those of ``sensors`` (stale ones) whose messages since their last accepted one (or the activation) arrive
        but were rejected, at least one for a setting that does not match the policy (``SETTING_REJECTIONS``): an
        input that cannot come back by itself, unlike a silent or restarting sensor."""
        return [
            sensor
            for sensor in sensors
            if any(reason in SETTING_REJECTIONS for reason in self._rejected_since_accepted.get(sensor, ()))
        ]

    def _recent_input_faults(self, counters: dict) -> list[str]:
        """The INPUT_FAULT_COUNTERS that grew within the last RATE_WINDOW_S plus two diagnostics periods (the rate
        check counts once a window): faults that leave the node commanding, so the level is WARN while they last
        and OK again by itself once they end. Before, only the counters and throttled log lines said them, and an
        operator watching the level (rqt_robot_monitor) saw OK. On the steady clock, as the diagnostics timer."""
        now = time.monotonic()
        for key, count in counters.items():
            if key.startswith(INPUT_FAULT_COUNTERS):
                if count != self._fault_counts.get(key, 0):  # grown (or counting anew after a configure)
                    self._fault_grown_at[key] = now
                self._fault_counts[key] = count
        hold = training_record.RATE_WINDOW_S + 2.0 * self.settings.diagnostics_period_s
        return sorted(key for key, grown_at in self._fault_grown_at.items() if now - grown_at < hold)

    @_one_at_a_time
    def _on_diagnostics_timer(self):
        if self._active:
            self._check_other_commanders()
            self._check_trained_rates()
        self._publish_diagnostics()

    def _check_trained_rates(self):
        """Each sensor's message rate over the last ``RATE_WINDOW_S`` (node clock, from the runner's received
        counters and the watchdog's last arrivals: the check does nothing per message) against the rates its policy
        file records it was trained at (conventions.training_record): outside 0.25x the slowest .. 4x the fastest, a
        warning naming the topic, the measured and the trained rate (throttled per sensor) and a
        ``rate_mismatch.<sensor>`` count.
        Too slow while the sensor's publisher sent within the range (the received and the ``missed.<sensor>``
        messages, :meth:`_note_publication`), the warning says the node missed them, not that the sensor is slow.
        The rate is measured from the sensor's last message before the window to its last in it, so a sensor that
        started or stopped within the window (a driver that came up after activation) is measured while it ran, not
        taken for a slow one; one without a message before the window is measured from the next. A silent sensor
        is the watchdog's; a file without the record (older policies) checks nothing."""
        if not self._trained_rates or not self._active:
            return
        now, counters = self._now(), self.runner.counters
        since, marks = self._rate_check
        if since is not None and now >= since:
            if now - since < training_record.RATE_WINDOW_S:
                return
            for sensor, trained in self._trained_rates.items():
                count, missed, first = marks[sensor]
                received, last = counters[f"received.{sensor}"] - count, self._last_arrival.get(sensor)
                if not received or first is None or last is None or last <= first:
                    continue
                missed = counters[f"missed.{sensor}"] - missed  # sent by the sensor, never received (_note_publication)
                depth = "camera_qos_depth" if sensor == CAMERA else "imu_qos_depth"
                problem = training_record.rate_problem(
                    received / (last - first),
                    trained,
                    last - first,
                    sent_hz=(received + missed) / (last - first) if missed else None,
                    queue=f"{depth} {getattr(self.settings, depth)}",
                )
                if problem:
                    counters[f"rate_mismatch.{sensor}"] += 1
                    if self._may_log(f"rate_mismatch.{sensor}"):
                        self.get_logger().warning(f"{sensor} on {self._input_topics[sensor]}: {problem}")
        # the next window (the first, or the clock went back): each sensor's count and last arrival at its start
        self._rate_check = (
            now,
            {
                k: (counters[f"received.{k}"], counters[f"missed.{k}"], self._last_arrival.get(k))
                for k in self._trained_rates
            },
        )

    def _check_other_commanders(self):
        """Other publishers on the command topic (a teleop, a second policy node, of any type): the robot takes their
        commands too, and this node's stop commands (watchdog, deactivate) do not hold it still. Said when they
        change (a warning naming them; info when none is left) and in the diagnostics (WARN) while they last."""
        if self._command_pub is None:
            return
        topic, me = self._command_pub.topic_name, (self.get_namespace(), self.get_name())
        try:
            publishers = self.get_publishers_info_by_topic(topic)
        except Exception:  # words for a warning only: a failing graph query must not end the diagnostics
            return
        others = other_publishers(publishers, me, message_type_name(COMMAND_MESSAGES[self.settings.command_type]))
        if others == self._other_commanders:
            return
        self._other_commanders = others
        if others:
            self.get_logger().warning(
                f"command topic {topic} has other publishers: {', '.join(others)}: the robot takes their commands "
                f"too, and this node's stop commands (watchdog, deactivate) do not hold it still"
            )
        else:
            self.get_logger().info(f"command topic {topic}: no other publisher now")

    def _publish_diagnostics(self):
        if self._diag_pub is None or self.runner is None:
            return
        msg = DiagnosticArray(status=[self.diagnostic_status()])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


def _forget_destroyed_entities(node) -> None:
    """Drop the dead weak references rclpy leaves in ``node``'s callback group for every entity it destroyed
    (rclpy issue 1356): each configure/cleanup cycle left 16 behind (subscriptions, timers, the service and the
    publishers' and subscriptions' QoS event handlers), without bound for a node reconfigured again and again.
    The group keeps its live entities; a membership test is all rclpy does with the set."""
    entities = node.default_callback_group.entities
    for ref in [ref for ref in entities if ref() is None]:
        entities.discard(ref)


def _some(names, count: int = 8, chars: int = 64) -> str:
    """A message's ``names`` for a log line: at most ``count`` of them, each cut to ``chars`` characters (a
    JointState naming 10^6 joints made an 11 MB line, once per log_throttle_s)."""
    some = [shown(n, chars) for n in names[:count]]
    if len(names) <= count:
        return f"[{', '.join(some)}]"
    return f"{len(names)} joints [{', '.join(some)}, ...]"


def _vector(value) -> str:
    """A setpoint's value for a log line: ``[0.5, 0]``."""
    return "[" + ", ".join(f"{float(v):g}" for v in np.ravel(value)) + "]"


def _camera_size_detail(shape, expected) -> str:
    """A bad_shape rejection's sizes of an image of numpy ``shape`` (height, width, channels) as width x height,
    camera_info's order: its line beside this one named a camera that is not square the other way round."""
    shape, expected = tuple(int(n) for n in shape), tuple(int(n) for n in expected)
    if len(shape) == 3 and shape[2:] == expected[2:]:
        return f": a {shape[1]}x{shape[0]} image (width x height), the policy takes {expected[1]}x{expected[0]}"
    return f": shape {shape} (height, width, channels), the policy takes {expected}"


def make_executor():
    """The EventsExecutor (lowest callback latency in rclpy); the MultiThreadedExecutor is far slower.

    Drive it with :func:`spin`: in this rclpy build ``EventsExecutor.spin()`` never runs a callback, while
    ``spin_once`` does.
    """
    try:
        from rclpy.experimental import EventsExecutor

        return EventsExecutor()
    except ImportError:  # pragma: no cover - older rclpy
        return rclpy.executors.SingleThreadedExecutor()


def spin(executor, stop=lambda: False, context=None):
    """Run callbacks until ``stop()`` or the context shuts down."""
    ok = (context or rclpy.get_default_context()).ok
    while ok() and not stop():
        executor.spin_once(timeout_sec=0.05)


def main(args=None) -> int:
    """Entry point of the ``policy_node`` executable.

    SIGINT/SIGTERM end the loop between callbacks, then the node shuts down through its lifecycle (publishing
    a stop command) before the context goes away; a second one (0.5 s or more after the first) ends the wait for
    the stop's acknowledgement.
    During a configure (which may build the compiled kernels or load a large file) they abandon it at once: the
    node stays stoppable whatever it is waiting for.
    Exit status: 0 after a requested stop, 1 when autostart is not a boolean or autostart's configure or activate
    failed (cause logged), 2 when rcl cannot read a --params-file.
    Ends the process (``processes.end_process_now``) once the node is shut down.
    """
    from liquid_control.ros.executable import init_ros, stop_on_signals, warn_sections_for_another_namespace

    stop = threading.Event()
    if not init_ros("policy_node", args=args, signal_handler_options=SignalHandlerOptions.NO):
        return 2  # a --params-file rcl cannot read: said on one line
    node = None

    def tell_node(signum):
        if node is not None:
            stop_on_signal(node, signum)

    stop_on_signals(stop, tell_node)
    node = PolicyNode(argv=sys.argv if args is None else args)
    warn_sections_for_another_namespace(node, sys.argv if args is None else args)
    executor = make_executor()
    executor.add_node(node)
    code, abandoned = 0, False
    try:
        autostart = node.get_parameter("autostart").value
        if autostart_problem(autostart):  # a string 'false' is true to Python: it started the robot
            node.get_logger().fatal(f"{autostart_problem(autostart)}: not starting")
            code = 1
        elif autostart and not stop.is_set():
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal(f"autostart: {node.failure or 'configure failed'}")
                code = 1
            elif not stop.is_set() and node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal(f"autostart: {node.failure or 'activate failed'}")
                code = 1
        elif not autostart:  # a lifecycle node waits for its manager: said once, so a silent node is not taken for hung
            name = node.get_fully_qualified_name()
            node.get_logger().info(
                f"unconfigured: waiting for its lifecycle transitions (ros2 lifecycle set {name} configure, then "
                "activate, or a launch file's lifecycle events); -p autostart:=true configures and activates at start"
            )
        if code == 0:
            spin(executor, stop.is_set)
    except StopRequested as interrupt:
        name = signal.Signals(interrupt.args[0]).name
        node.get_logger().warning(f"{name} during configure: abandoned it, shutting down")
        abandoned = True  # the lifecycle is stuck in "configuring": no transition is possible, nothing commands
    finally:
        if node.runner is not None and not abandoned:
            node.trigger_shutdown()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    # Everything that matters is done (stop command published, every ROS entity destroyed). Skip the interpreter
    # teardown: garbage-collecting torch's modules takes seconds on a loaded CPU, long enough for a launch system
    # (or `liquid-control sim`) to give up and SIGKILL the node.
    end_process_now(code)
