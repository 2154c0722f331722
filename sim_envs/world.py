"""Event-driven MuJoCo world: physics runs continuously, sensors emit stamped messages, one env step per
update: per message of an update sensor (``update_on``).

Each sensor has a ``SensorTiming``. A message is *measured* at its stamp (the reading is taken from the
physics state then) and *delivered* ``latency`` later. Delivered messages pass the runtime's update timeline
(``liquid_control.runtime.timeline``: a reordering buffer with ``reorder_lag_s``, then the update clock), the
same code the ROS policy node runs, so the env's updates, dts and time inputs are exactly those the node
computes from the same messages. The env advances physics (exact to the event times, by shortening the last
physics step) until the next update and returns the latest reading of every sensor, plus ``dt`` (difference
of update stamps, never negative), ``event`` (which update sensor caused the update) and ``ages`` (update
stamp minus the stamp of each update sensor's latest reading). The action is held until the next update.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
from collections import deque

import gymnasium as gym
import mujoco
import numpy as np

from liquid_control.runtime.timeline import ReorderBuffer, Update, UpdateClock

from .shifts import Shift, fog_end_m
from .timing import SensorStream

_MIN_STEP = 1e-7  # physics steps shorter than this are skipped (stamps are not quantized to physics steps)
_MAX_QUEUED_UPDATES = 4096  # updates released but not yet returned (drivers of next_delivery never take them)
# Longest episode time limit (s, one simulated day): the balancer lays out its commands up to the limit at
# reset, so a huge finite limit hung there as an infinite one did.
MAX_TIME_LIMIT = 86400.0


def _seconds(value) -> float:
    """A keyword's value in seconds as a float; NaN for anything that is no real number (a bool, a string), which
    every range check below then refuses."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return math.nan
    return float(value)


def checked_time_limit(time_limit, default: float) -> float:
    """``time_limit`` in seconds as a float (None: ``default``, the world's own); ValueError naming
    ``time_limit`` and the value unless a finite number > 0 and <= ``MAX_TIME_LIMIT`` (bool refused)."""
    if time_limit is None:
        return float(default)
    if not 0.0 < _seconds(time_limit) <= MAX_TIME_LIMIT:  # NaN fails this too
        raise ValueError(
            f"time_limit must be a finite number of seconds > 0 and <= {MAX_TIME_LIMIT:g} (None: the world's "
            f"{float(default):g}), got {time_limit!r}"
        )
    return float(time_limit)


def checked_reorder_lag(reorder_lag_s) -> float:
    """``reorder_lag_s`` in seconds as a float; ValueError naming ``reorder_lag_s`` and the value unless a finite
    number >= 0 (a bool or a string refused: ``"0.1"`` failed deep in the reorder buffer, naming no keyword)."""
    if not 0.0 <= _seconds(reorder_lag_s) < math.inf:  # NaN fails this too
        raise ValueError(f"reorder_lag_s must be a finite number of seconds >= 0, got {reorder_lag_s!r}")
    return float(reorder_lag_s)


def sensor_names_keyword(keyword: str, value) -> tuple:
    """``value`` of the keyword ``keyword`` (``update_on``, ``policy_inputs``), a name or a sequence of names, as a
    tuple of names; ValueError naming the keyword otherwise (``update_on=5`` raised "'int' object is not
    iterable" from gymnasium.make)."""
    if isinstance(value, str):
        return (value,)
    try:
        names = tuple(value)
    except TypeError:
        names = None
    if names is None or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{keyword} must be a name or a list of names, got {value!r}")
    return names


def update_rate_hz(timings: dict, update_on) -> float | int:
    """Mean env steps per simulated second: one per surviving message of an update sensor. Jitter is symmetric
    about the nominal period, so a sensor's mean rate is its nominal rate times (1 - dropout). An int when whole
    (``gymnasium.utils.play`` takes no float)."""
    rate = sum(timings[sensor].rate_hz * (1.0 - timings[sensor].dropout) for sensor in update_on)
    whole = round(rate)  # 200 * (1 - 0.9) is 19.999999999999996: whole up to float error
    return int(whole) if abs(rate - whole) <= 1e-9 * max(1.0, abs(rate)) else rate


def jointvel_qpos(model, sensor_names) -> list[int]:
    """The qpos addresses of the joints that MuJoCo ``jointvel`` sensors ``sensor_names`` measure, in that order."""
    ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SENSOR, name) for name in sensor_names]
    return [int(model.jnt_qposadr[model.sensor_objid[i]]) for i in ids]


def _world_id(cls) -> str:
    """The gymnasium id a world class is registered under (its class name if none), for error messages."""
    from . import WORLDS  # the package registry; imported here because the package imports this module

    return next((id_ for id_, entry in WORLDS.items() if entry == f"{cls.__module__}:{cls.__name__}"), cls.__name__)


class TimedMujocoWorld(gym.Env):
    """Base class of the worlds. Subclasses define the model, the sensors' readings and the task.

    Class attributes a subclass sets: ``sensor_names`` (its sensors, in the order of its timings),
    ``observation_keys`` (its observation inputs besides the time entries), ``default_update_on``,
    ``input_sensors`` (each input a policy can read, named as the policy names it: ``camera`` for the image, else
    the observation key, -> the world sensor whose messages deliver it, None for an input no sensor delivers, such
    as the balancer's ``command``, there from the start), ``wait_for_all_sensors`` (what the first update waits
    for in a world made without ``policy_inputs``, e.g. the expert's alone: True, every sensor's first message; False,
    the first update message), ``action_kind`` (what its action commands, as a policy config's ``action.kind``
    names it: ``twist`` = [linear, angular], ``wheel_torques`` = [left, right]), ``action_names`` (what plots and
    reports call each action element; empty: the ``action_kind``'s names) and ``default_time_limit`` (seconds,
    what ``time_limit=None`` means).

    ``policy_inputs`` (``liquid_control.policy.env_kwargs`` passes the policy's): the first update waits until
    every sensor delivering one of them (and every update sensor) has delivered once, as the policy node's
    ``PolicyRunner`` waits for every input of its policy; so a policy's first update in the world is the one the
    node makes from the same messages (``first_update_sensors``: those sensors, in the world's order).

    ``horizon`` (``2 * time_limit + 10`` s) bounds the stamps of the updates ``step`` returns, hence the
    observation's ``dt``: when no update can come by then (rare sensors, heavy dropout), ``step`` ends the
    episode at the time limit instead (see ``step``). Reset's first update is not cut (there is no episode yet
    to end; its ``dt`` is 0): it waits for every update sensor's first message, however late, so with several
    update sensors the ``ages`` space has no bound but float32's (``_time_spaces``).
    """

    # render_fps: each world's steps per simulated second, set per instance from its sensor timings (update_rate_hz);
    # the class's value is that of its defaults. RecordVideo and HumanRendering play one frame per step at it.
    metadata = {"render_modes": ["rgb_array"]}
    sensor_names: tuple = ()
    observation_keys: tuple = ()
    default_update_on: tuple = ()
    input_sensors: dict = {}
    wait_for_all_sensors: bool = False
    action_kind: str = ""
    action_names: tuple = ()
    # sensor -> qpos addresses of the joints whose velocities it measures (jointvel_qpos): their true positions at
    # each measurement go with its messages to the drivers of next_delivery (sim_node's JointState), not into the
    # reading, the observation or the noise
    _joint_qpos: dict = {}
    # True: next_delivery keeps those positions (delivered_positions), set before reset by a driver that publishes
    # them (sim_node, record --expert); False (training, evaluation): no copy of them per measurement, None given
    deliver_joint_positions: bool = False
    default_time_limit: float = 10.0

    def __init__(
        self,
        xml: str,
        timings: dict,
        shift: Shift,
        time_limit: float,
        render_mode=None,
        update_on=None,
        reorder_lag_s: float = 0.0,
        policy_inputs=None,
    ):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        problem = shift.idle_problem(_world_id(type(self)), self.sensor_names)
        if problem:  # e.g. fog for a world without a camera: the episode would be the in-distribution one
            raise ValueError(f"shift {shift}: {problem}")
        self.shift = shift
        self.time_limit = checked_time_limit(time_limit, self.default_time_limit)
        self.horizon = 2.0 * self.time_limit + 10.0
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.model_digest = hashlib.sha256(xml.encode()).hexdigest()  # worlds with equal digests look the same
        self.data = mujoco.MjData(self.model)
        self.physics_dt = float(self.model.opt.timestep)
        self._physics_options = self.model.opt  # the model's own options (written by _advance_physics)
        if tuple(timings) != tuple(self.sensor_names):
            raise ValueError(f"timings {tuple(timings)} do not match the world's sensors {self.sensor_names}")
        update_on = self.default_update_on if update_on is None else update_on
        self.update_on = sensor_names_keyword("update_on", update_on)
        unknown = [s for s in self.update_on if s not in self.sensor_names]
        if unknown or not self.update_on or len(set(self.update_on)) != len(self.update_on):
            raise ValueError(
                f"update_on {list(self.update_on)}: name distinct sensors of this world "
                f"({', '.join(self.sensor_names)})"
            )
        self.first_update_sensors = self._first_update_sensors(policy_inputs)
        self.reorder_lag_s = checked_reorder_lag(reorder_lag_s)
        # The shift's sensor settings: every sensor's, then each sensor's own factors.
        self.timings = {}
        for name, t in timings.items():
            rate, jitter = shift.sensor_factors(name)
            self.timings[name] = t.scaled(
                rate=shift.sensor_rate * rate,
                jitter=shift.jitter * jitter,
                dropout=shift.dropout if shift.dropout > 0 else None,
                extra_latency=shift.latency,
            )
        self.metadata = {**self.metadata, "render_fps": update_rate_hz(self.timings, self.update_on)}
        self.clipped_actions = 0
        self._streams: dict = {}

    def _first_update_sensors(self, policy_inputs) -> tuple:
        """The sensors the first update waits for besides the update sensors (see the class docstring): those
        delivering ``policy_inputs``, or without them the world's default; ValueError for an unknown input."""
        if policy_inputs is None:
            return tuple(self.sensor_names) if self.wait_for_all_sensors else ()
        inputs = sensor_names_keyword("policy_inputs", policy_inputs)
        unknown = [name for name in inputs if name not in self.input_sensors]
        if unknown:
            raise ValueError(
                f"policy_inputs {list(inputs)}: {', '.join(map(repr, unknown))} not an input of this world "
                f"(inputs: {', '.join(self.input_sensors)})"
            )
        wanted = {self.input_sensors[name] for name in inputs}
        return tuple(s for s in self.sensor_names if s in wanted)

    # ----- to be defined by the worlds -----
    def _reset_world(self, rng: np.random.Generator) -> None:
        """Lay out the episode (positions, commands) and set the physics state at t = 0."""
        raise NotImplementedError

    def _apply_action(self, action: np.ndarray) -> None:
        raise NotImplementedError

    def _measure(self, sensor: str) -> np.ndarray:
        """The reading of `sensor` now (noise included)."""
        raise NotImplementedError

    def _joint_positions(self, sensor: str) -> np.ndarray | None:
        """The true positions now (qpos) of the joints whose velocities ``sensor`` measures (``_joint_qpos``)."""
        addresses = self._joint_qpos.get(sensor)
        return None if addresses is None else self.data.qpos[addresses]  # a copy (indexed by a list)

    def _after_physics_step(self) -> None:
        """Per physics step bookkeeping (contacts, references)."""

    def _outcome(self) -> tuple:
        """(reward, terminated, info) at an update."""
        raise NotImplementedError

    def _observation(self) -> dict:
        raise NotImplementedError

    def expert_action(self) -> np.ndarray:
        """The privileged expert's action for the current true state; each world implements it."""
        raise NotImplementedError

    # Attributes a copy (pickle, copy.deepcopy) leaves out and __setstate__ rebuilds: this process's MuJoCo views
    # and GL contexts. MjOption cannot be pickled, and a deep copy's was detached from the copy's model, so the copy
    # wrote the shortened last step's timestep nowhere and ran past every event time (another episode, silently).
    _process_local: tuple = ("_physics_options", "_scene_renderer")

    def __getstate__(self) -> dict:
        """The world's whole state but ``_process_local``: model, data, generators, sensor streams and the messages
        in flight, so a copy (pickle, ``copy.deepcopy``) continues the episode as the original does, bit for bit."""
        state = self.__dict__.copy()
        for name in self._process_local:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        """A copy's renderers are made at its first frame, like a new world's; its option view is its model's."""
        self.__dict__.update(state)
        for name in self._process_local:
            setattr(self, name, None)
        self._rebuild_process_local()

    def _rebuild_process_local(self) -> None:
        self._physics_options = self.model.opt

    def render(self):
        """A 320x240 RGB frame in ``rgb_array`` mode, else None: for a world of one's own without a camera, MuJoCo's
        default free camera looking at the centre of mass of what moves (:class:`FrontCamera`'s ``render`` is a
        chase view; the balancer's a side view). Before, such a world took ``render_mode="rgb_array"`` and its
        render() raised gymnasium's bare NotImplementedError."""
        if self._without_render_mode():
            return None
        self._require_reset("render()")
        if getattr(self, "_scene_renderer", None) is None:
            self._scene_renderer = make_renderer(self.model, 240, 320)
        self._forward_now()
        camera = mujoco.MjvCamera()
        mujoco.mjv_defaultFreeCamera(self.model, camera)
        mass = self.model.body_mass * (self.model.body_weldid != 0)  # the bodies that move: a heavy wall is left out
        if mass.sum() > 0:  # (its default: the centre as built, which a moving robot leaves)
            camera.lookat[:] = mass @ self.data.xipos / mass.sum()
        self._scene_renderer.update_scene(self.data, camera=camera)
        return self._scene_renderer.render()

    def close(self):
        """Close the renderer of ``render()``, if one was made."""
        if getattr(self, "_scene_renderer", None) is not None:
            self._scene_renderer.close()
        self._scene_renderer = None

    def _forward_now(self) -> None:
        """Sensors and poses of the state now, once per time. mj_step computes them before it integrates: after it,
        sensordata, geom_xpos and the cameras are still those of the step's start (a reading up to one physics step
        before its stamp: the rover's gyro 0.034 rad/s rms off). mj_forward changes no state: the trajectory is the
        same."""
        if self.data.time != getattr(self, "_forward_time", None):  # (a copy pickled by an older version has none)
            mujoco.mj_forward(self.model, self.data)
            self._forward_time = self.data.time

    def _without_render_mode(self) -> bool:
        """True, with gymnasium's warning, when the world was made without ``render_mode="rgb_array"``: its
        ``render()`` then returns None (silently, a loop collecting frames collected Nones)."""
        if self.render_mode == "rgb_array":
            return False
        world = _world_id(type(self))
        gym.logger.warn(
            f"{world}: render() returns None without a render mode; make the world with "
            f'gymnasium.make("{world}", render_mode="rgb_array")'
        )
        return True

    def _require_reset(self, what: str) -> None:
        """RuntimeError naming the world and ``what`` (a method of the episode) before the first reset, which lays
        out the episode's state; without it the method failed deep inside (AttributeError, KeyError)."""
        if not self._streams:  # set by reset
            raise RuntimeError(f"{_world_id(type(self))}: call reset() before {what}")

    # ----- the event loop -----
    def _rngs(self, seed):
        """Independent generators for layout, each sensor's timing and the noise of one episode.

        Drawn from the env's np_random so `reset(seed=s)` fixes the episode and later resets continue the
        sequence; the layout generator does not depend on the shift, so every shift sees the same arenas.
        """
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(0, 2**63 - 1))
        children = np.random.SeedSequence(episode_seed).spawn(2 + len(self.sensor_names))
        layout = np.random.default_rng(children[0])
        noise = np.random.default_rng(children[1])
        timing = {n: np.random.default_rng(c) for n, c in zip(self.sensor_names, children[2:])}
        return layout, noise, timing

    def reset(self, *, seed=None, options=None):
        """Start an episode from ``seed`` (layout, sensor timings, noise) and run to its first update.

        The worlds take no reset ``options`` (None or empty): a shift, time limit or sensor setting is a keyword of
        ``gymnasium.make``; ValueError naming the options otherwise, since ignoring them (``options={"shift":
        "winter"}``) would run an in-distribution episode under another name."""
        if options:
            raise ValueError(
                f"{_world_id(type(self))}.reset takes no options, got {options!r}; a shift, time limit or sensor "
                "setting is a keyword of gymnasium.make (e.g. gymnasium.make(id, shift='winter'))"
            )
        layout_rng, self._noise_rng, timing_rngs = self._rngs(seed)
        mujoco.mj_resetData(self.model, self.data)
        self._reset_world(layout_rng)
        mujoco.mj_forward(self.model, self.data)
        self._forward_time = self.data.time  # sensors and poses computed for this time (next_delivery)
        self._streams = {n: SensorStream(self.timings[n], timing_rngs[n]) for n in self.sensor_names}
        self._pending = {n: deque() for n in self.sensor_names}  # measured, not yet delivered
        # what next_delivery looks at per event, in name order (its tie-break), looked up once per episode
        self._event_sources = [
            (n, self._streams[n], self._pending[n], self.timings[n].latency) for n in sorted(self.sensor_names)
        ]
        self._latest = {n: None for n in self.sensor_names}  # (stamp, reading) last released by the buffer
        self.delivered_positions = None  # the joint positions measured with the message next_delivery returned
        self._reorder = ReorderBuffer(self.reorder_lag_s, held_first=set(self.sensor_names).difference(self.update_on))
        self._held_update_messages = 0  # messages of update sensors the reorder buffer holds
        self._clock = UpdateClock(self.update_on, required=self.first_update_sensors)
        self._updates = deque(maxlen=_MAX_QUEUED_UPDATES)  # (Update, readings then) released, not yet returned
        self._update_stamp = None
        self._update = None
        self._observed = self._latest
        self.clipped_actions = 0
        self.updates = 0
        self.released_updates = 0  # updates the timeline released (next_delivery's drivers count on it)
        self._apply_action(np.zeros(self.action_space.shape, dtype=np.float64))
        # what reset delivered, up to and including the message of the first update: a driver of
        # next_delivery (sim_node, the expert recorder) publishes these first, so no message is lost
        self.reset_delivery_positions = []  # each one's joint positions (delivered_positions), in the same order
        self.reset_deliveries = self._run_until_update(positions=self.reset_delivery_positions)
        _, _, info = self._outcome()
        return self._observation(), self._info(info)

    def step(self, action):
        """Hold ``action`` and run physics and sensors to the next update (truncated at ``time_limit``).

        When no update can be stamped by ``horizon`` (the next messages of the update sensors all lie beyond
        it), the episode ends at the time limit instead: physics runs to ``max(time_limit, previous update)``
        and the step returns, truncated, the latest readings there with ``dt`` and ``ages`` measured to it
        (``event`` repeats the previous one's). An update that lies so far out would otherwise give a ``dt``
        outside the observation space and an episode far longer than its limit.
        """
        self._require_reset("step()")
        self.apply_action(action)
        if self._run_until_update(within=self.horizon) is None:
            self._end_at_time_limit()
        reward, terminated, info = self._outcome()
        truncated = (not terminated) and self._update_stamp >= self.time_limit
        return self._observation(), float(reward), bool(terminated), bool(truncated), self._info(info)

    def apply_action(self, action) -> None:
        """Validate ``action``, clip it to the action space (counted in ``clipped_actions``) and hold it."""
        try:
            action = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):  # strings, None in a list, ragged lists: numpy's message names no action
            raise ValueError(f"action must be {self.action_space.shape} numbers, got {action!r}") from None
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {action.shape}")
        if not np.isfinite(action).all():  # the methods: np.all / np.any cost twice as much on 2 numbers
            raise ValueError(f"action must be finite, got {action.tolist()} (physics not stepped)")
        low, high = self.action_space.low, self.action_space.high
        if (action < low).any() or (action > high).any():
            self.clipped_actions += 1
            action = np.clip(action, low, high)
        self._apply_action(action)

    def outcome(self) -> tuple[bool, dict]:
        """(terminated, info with success/collision/...) now, for drivers using next_delivery (time limit:
        theirs to check against ``time_limit``)."""
        self._require_reset("outcome()")
        _, terminated, info = self._outcome()
        info.update(sim_time=float(self.data.time), clipped_actions=self.clipped_actions)
        return bool(terminated), info

    def _info(self, info: dict) -> dict:
        info.update(
            stamp=float(self._update_stamp),
            sim_time=float(self.data.time),
            event=self.update_on[self._update.event],
            late=self._update.late,
            stamps={n: (None if r is None else float(r[0])) for n, r in self._observed.items()},
            late_messages=dict(self._clock.late),
            clipped_actions=self.clipped_actions,
        )
        return info

    def _advance_physics(self, t_target: float) -> None:
        """Step physics to exactly t_target (the last step shortened).

        The timestep is written only around a shortened step (``_after_physics_step`` still sees its length):
        a MuJoCo attribute write costs about as much as the rest of this loop's Python, run ~17 times an update."""
        model, data, opt, full = self.model, self.data, self._physics_options, self.physics_dt
        remaining = t_target - data.time
        while remaining > _MIN_STEP:
            if remaining < full:
                opt.timestep = remaining
                mujoco.mj_step(model, data)
                self._after_physics_step()
                opt.timestep = full
            else:
                mujoco.mj_step(model, data)
                self._after_physics_step()
            remaining = t_target - data.time

    def next_delivery(self, until: float | None = None):
        """Advance physics to the next sensor delivery and return ``(sensor, stamp, reading)``.

        Measurements on the way are taken at their stamps. With ``until``, stop at that time instead when
        nothing is delivered before it, and return None. ``delivered_positions``: the true positions of the joints
        whose velocities the returned reading measures, at its stamp (None for other sensors, and for all unless
        ``deliver_joint_positions``). The env's step is
        this loop up to the next update the delivery releases; the ROS sim node calls it directly to publish every
        message in real time.
        """
        self._require_reset("next_delivery()")
        with_positions = self.deliver_joint_positions
        while True:
            # Next event: a measurement or a delivery, the earliest (t, kind, name) with kind 0 for a
            # measurement and 1 for a delivery: measurements first on ties, then sensors by name.
            t, measurement, name, stream, pending = None, False, None, None, None
            for sensor, sensor_stream, sensor_pending, latency in self._event_sources:  # by name
                stamp = sensor_stream.next_stamp
                if t is None or stamp < t or (stamp == t and not measurement):
                    t, measurement, name, stream, pending = stamp, True, sensor, sensor_stream, sensor_pending
                if sensor_pending:
                    arrival = sensor_pending[0][0] + latency
                    if arrival < t:
                        t, measurement, name, stream, pending = arrival, False, sensor, sensor_stream, sensor_pending
            if until is not None and t > until:
                self._advance_physics(until)
                return None
            self._advance_physics(t)
            if measurement:
                stamp = stream.pop()
                self._forward_now()
                pending.append((stamp, self._measure(name), self._joint_positions(name) if with_positions else None))
                continue
            *delivered, self.delivered_positions = pending.popleft()
            if name in self.update_on:
                self._held_update_messages += 1
            for sensor, stamp, reading in self._reorder.push(name, *delivered):
                if sensor in self.update_on:
                    self._held_update_messages -= 1
                self._latest[sensor] = (stamp, reading)
                update = self._clock.release(sensor, stamp)
                if update is not None:  # what outcome() refers to
                    self._update_stamp = update.stamp
                    self._updates.append((update, dict(self._latest)))
                    self.released_updates += 1
            return (name, *delivered)

    def _run_until_update(self, within: float | None = None, positions: list | None = None) -> list[tuple] | None:
        """Process sensor measurements and deliveries in time order up to the next update; the deliveries
        ``(sensor, stamp, reading)`` on the way, in order (and their ``delivered_positions`` appended to
        ``positions``). With ``within``: None, and no update taken, when the next update is stamped after it."""
        if within is not None and self._no_update_by(within):
            return None
        deliveries = []
        while not self._updates:
            deliveries.append(self.next_delivery())
            if positions is not None:
                positions.append(self.delivered_positions)
        if within is not None and self._updates[0][0].stamp > within:
            return None
        self._update, self._observed = self._updates.popleft()
        self._update_stamp = self._update.stamp
        self.updates += 1
        return deliveries

    def _no_update_by(self, t: float) -> bool:
        """No update stamped at or before ``t`` can come any more: no message of an update sensor stamped by
        then is left to measure, to deliver or in the reorder buffer (or the last update is past ``t``)."""
        if self._updates:
            return False  # the next update is known already
        if self._update_stamp is not None and self._update_stamp > t:
            return True
        return self._no_update_message_by(t)

    def _no_update_message_by(self, t: float) -> bool:
        """No message of an update sensor stamped at or before ``t`` is left to measure or deliver, and none is held
        in the reorder buffer (whatever its stamp: conservative, with ``reorder_lag_s`` > 0 the end may come later)."""
        return (
            all(self._streams[s].next_stamp > t for s in self.update_on)
            and self._held_update_messages == 0
            and not any(self._pending[s] and self._pending[s][0][0] <= t for s in self.update_on)
        )

    def end_without_update(self) -> float | None:
        """For drivers of ``next_delivery`` (sim_node, the expert recorder), the rule ``step`` follows: None
        while a message of an update sensor stamped within ``horizon`` can still come (the episode ends at the
        first update at or past ``time_limit``), else the sim time the episode ends at instead,
        ``max(time_limit, last update)``: deliver up to it (``next_delivery(until=...)``), then end there."""
        self._require_reset("end_without_update()")
        if not self._no_update_message_by(self.horizon):
            return None
        return max(self.time_limit, self._update_stamp if self._update_stamp is not None else 0.0)

    def _end_at_time_limit(self) -> None:
        """End the episode without an update (see ``step``): physics to the time limit (not back from past it),
        the latest readings, ``dt`` and ``ages`` measured to that time, the previous update's ``event``."""
        previous = self._update
        end = max(self.time_limit, previous.stamp)
        while self.next_delivery(until=end) is not None:  # held sensors' messages on the way
            pass
        self._update = Update(
            stamp=end, dt=end - previous.stamp, event=previous.event, ages=self._clock.ages(end), late=False
        )
        self._update_stamp = end
        self._observed = dict(self._latest)

    def _reading(self, name: str, size) -> np.ndarray:
        """Latest reading of a sensor at this update (zeros before its first message); a copy, since a held
        reading is returned again at later updates and callers may keep or modify what they get."""
        latest = self._observed[name]
        return np.zeros(size, dtype=np.float32) if latest is None else latest[1].copy()

    @property
    def _dt(self) -> float:
        """Dt of the current update (what the cell integrates)."""
        return 0.0 if self._update is None else self._update.dt

    def _time_observation(self) -> dict:
        return {
            "dt": np.array([self._update.dt], dtype=np.float32),
            "event": np.int64(self._update.event),
            "ages": np.asarray(self._update.ages, dtype=np.float32),
        }

    def _time_spaces(self) -> dict:
        """Dt and ages never exceed the stamp of the update, which ``step`` keeps within ``horizon``, and reset's
        dt is 0. Reset's ages are 0 with one update sensor, but with several the first one's age is however long
        the last one's first message takes (unbounded: heavy dropout), so their space is every finite float32
        (as CartPole bounds its velocities; np.inf would make gymnasium's check_env warn). Nothing reads the
        bound: the policy scales ages by fixed constants."""
        horizon = self.horizon
        ages_high = horizon if len(self.update_on) == 1 else float(np.finfo(np.float32).max)
        return {
            "dt": gym.spaces.Box(0.0, horizon, shape=(1,), dtype=np.float32),
            "event": gym.spaces.Discrete(len(self.update_on)),
            "ages": gym.spaces.Box(0.0, ages_high, shape=(len(self.update_on),), dtype=np.float32),
        }


# IMU measurement ranges (a typical MEMS IMU: +-2000 deg/s, +-16 g); readings saturate there.
GYRO_RANGE = 35.0
ACCEL_RANGE = 160.0


def imu_space() -> gym.spaces.Box:
    """Space of one IMU reading: gyro (rad/s) then accelerometer (m/s^2), bounded at the measurement range."""
    high = np.array([GYRO_RANGE] * 3 + [ACCEL_RANGE] * 3, dtype=np.float32)
    return gym.spaces.Box(-high, high, dtype=np.float32)


_IMU_HIGH = np.array([GYRO_RANGE] * 3 + [ACCEL_RANGE] * 3)
_IMU_LOW = -_IMU_HIGH


def saturate_imu(reading: np.ndarray) -> np.ndarray:
    """The reading clipped to the IMU's measurement range, as a real IMU saturates (float32).

    ``np.clip``'s values (NaN kept) from the two ufuncs it runs, without its dispatch: a third of the cost on
    6 numbers, and a world saturates one reading per IMU message."""
    return np.minimum(np.maximum(reading, _IMU_LOW), _IMU_HIGH).astype(np.float32)


def make_renderer(model, height: int, width: int, fog: bool = False) -> mujoco.Renderer:
    """An offscreen renderer set up for a CPU: no shadows, no reflections (fog only when asked).

    On Mesa's llvmpipe, rendering in the calling thread (``LP_NUM_THREADS=0``) is fastest for small frames (as fast
    as one render thread, the same pixels) and leaves the other cores to other envs; it is also what lets a process
    forked after its first frame (``AsyncVectorEnv``'s default start method) render: with render threads, the
    child's first renderer waited forever on a thread fork had not copied. LP_NUM_THREADS only takes effect if set
    before the process's first GL context. The offscreen
    buffer is made the size of the frame (the model's ``offwidth``/``offheight`` are read only when a context is
    created, and restored after): llvmpipe clears and resolves the whole buffer on every render, so a 64x64
    camera in a 320x240 buffer took 1.7x as long, for the same pixels.
    """
    os.environ.setdefault("LP_NUM_THREADS", "0")
    size = model.vis.global_.offwidth, model.vis.global_.offheight
    model.vis.global_.offwidth, model.vis.global_.offheight = width, height
    try:
        renderer = mujoco.Renderer(model, height=height, width=width)
    finally:
        model.vis.global_.offwidth, model.vis.global_.offheight = size
    flags = renderer.scene.flags
    flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    flags[mujoco.mjtRndFlag.mjRND_FOG] = int(fog)
    return renderer


# (MJCF digest, height, width, fog) -> [renderer, number of worlds using it]
_SHARED_RENDERERS: dict[tuple, list] = {}


def shared_renderer(
    world: TimedMujocoWorld, height: int, width: int, fog: float = 0.0
) -> tuple[tuple, mujoco.Renderer]:
    """(key, renderer) for ``world``'s camera, shared by every world of this process built from the same MJCF and
    the same ``fog`` (the shift's setting, 0: off; the GL context keeps the model's fog distance from its making, and
    a world of one's own has one MJCF for every fog).

    Creating a GL context costs ~0.5 s of CPU on a software renderer, rendering a 64x64 frame ~1.5 ms: the
    worlds of a vectorised evaluation (one shift, many episodes in one process) share one context instead of
    holding one each. Each render draws the calling world's own state; ``render()`` returns a new array.
    Give the key back with ``release_renderer`` (the last world to do so closes the context).
    """
    key = (world.model_digest, int(height), int(width), float(fog))
    entry = _SHARED_RENDERERS.get(key)
    if entry is None:
        entry = _SHARED_RENDERERS[key] = [make_renderer(world.model, height, width, fog=fog > 0), 0]
    entry[1] += 1
    return key, entry[0]


def release_renderer(key: tuple) -> None:
    """One world stops using the shared renderer ``key``; the context closes when no world uses it."""
    entry = _SHARED_RENDERERS.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        del _SHARED_RENDERERS[key]
        entry[0].close()


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def camera_image_shape(render_size) -> tuple[int, int, int]:
    """(height, width, 3) of the front camera from ``render_size``: pixels (an int), or a (height, width) pair of
    ints, each between 8 and 1024; ValueError naming ``render_size`` otherwise (a float, a bool, a string, a
    sequence of another length; 64.7 was cut to 64 silently)."""
    if _is_int(render_size):
        height = width = render_size
    elif (
        isinstance(render_size, (tuple, list, np.ndarray)) and len(render_size) == 2 and all(map(_is_int, render_size))
    ):
        height, width = render_size
    else:
        raise ValueError(
            f"render_size must be an int (pixels, square) or a (height, width) pair of ints, got {render_size!r}"
        )
    if not (8 <= height <= 1024 and 8 <= width <= 1024):
        raise ValueError(f"render_size must be between 8 and 1024 pixels, got {render_size!r}")
    return int(height), int(width), 3


class FrustumCull:
    """Which geoms lie wholly outside a model camera's view: left out of its scene, they cost the CPU renderer
    (~20 us of llvmpipe's time per geom drawn) and change no pixel. About two thirds of the rover's geoms at any
    time (trees behind or beside it), ~20% of a 64x64 frame's render. Conservative: a geom's bounding sphere
    (``geom_rbound``, 5% wider) must be past one of the six planes of the perspective frustum MuJoCo draws with
    (``fovy`` vertical, the image's aspect, ``znear``/``zfar``); planes (rbound 0) are always kept."""

    MARGIN = 1.05

    def __init__(self, model: mujoco.MjModel, camera: str, aspect: float):
        self.camera = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if (
            model.cam_sensorsize[self.camera].any()
            or model.cam_projection[self.camera] != mujoco.mjtProjection.mjPROJ_PERSPECTIVE
        ):
            raise ValueError(f"camera {camera!r}: only a perspective camera given by fovy is culled")
        self.tan_y = float(np.tan(np.radians(model.cam_fovy[self.camera]) / 2))
        self.tan_x = self.tan_y * float(aspect)
        self.near = float(model.vis.map.znear * model.stat.extent)
        self.far = float(model.vis.map.zfar * model.stat.extent)
        self.radius = model.geom_rbound * self.MARGIN + 1e-4
        self.cullable = model.geom_rbound > 0
        self.reach_x = self.radius * np.sqrt(1 + self.tan_x**2)  # distance to a side plane, along its normal
        self.reach_y = self.radius * np.sqrt(1 + self.tan_y**2)

    def outside(self, data: mujoco.MjData) -> np.ndarray:
        """Boolean mask over the model's geoms: wholly outside the camera's view now."""
        # camera frame: x right, y up, looking along -z; depth = -z
        x, y, z = ((data.geom_xpos - data.cam_xpos[self.camera]) @ data.cam_xmat[self.camera].reshape(3, 3)).T
        depth = -z
        out = (depth + self.radius < self.near) | (depth - self.radius > self.far)
        out |= np.abs(x) - self.tan_x * depth > self.reach_x
        out |= np.abs(y) - self.tan_y * depth > self.reach_y
        return out & self.cullable


class FrontCamera:
    """The camera sensor of a world with a ``front`` camera (its renderer shared with same-looking worlds of this
    process, see ``shared_renderer``), the camera-noise shift, and the chase view of ``render()``; mixed into
    a :class:`TimedMujocoWorld` that sets ``image_shape`` and ``chase_view`` and calls ``_init_camera()`` after
    building its model.

    ``chase_view``: (robot body, distance m, elevation deg) of ``render()``'s camera, which looks at the body's
    centre of mass from behind it along its heading (yaw only, so the view does not pitch with a balancer). A
    ``trackcom`` camera of the world body followed the whole world's centre of mass, the trees' included: it hung
    ~20 m up and showed no robot."""

    chase_view: tuple  # set by each world
    _process_local = TimedMujocoWorld._process_local + (
        "_renderer",
        "_renderer_key",
        "_chase_renderer",
        "_scene_option",
        "_front_camera",
        "_chase_camera",
    )

    def _init_camera(self) -> None:
        if self.shift.fog > 0:  # the fog shift's distance in every world (a world of one's own kept its MJCF's)
            # MuJoCo scales vis.map's fog by the model's extent (1 in the package's worlds, set in their MJCF)
            end = fog_end_m(self.shift.fog) / self.model.stat.extent
            self.model.vis.map.fogstart, self.model.vis.map.fogend = 0.0, end
        self._renderer = None  # the camera's, shared with same-looking worlds of this process (shared_renderer)
        self._renderer_key = None
        self._chase_renderer = None
        self._front_view = FrustumCull(self.model, "front", aspect=self.image_shape[1] / self.image_shape[0])
        self._chase_body = self.model.body(self.chase_view[0]).id
        self._init_views()

    def _init_views(self) -> None:
        """MuJoCo's scene option, the front camera and the chase camera (none can be pickled: a copy makes its
        own)."""
        self._scene_option = mujoco.MjvOption()
        self._front_camera = mujoco.MjvCamera()
        self._front_camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._front_camera.fixedcamid = self._front_view.camera
        self._chase_camera = mujoco.MjvCamera()
        self._chase_camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        _, self._chase_camera.distance, self._chase_camera.elevation = self.chase_view

    def _rebuild_process_local(self) -> None:
        super()._rebuild_process_local()
        self._init_views()

    def _render_camera(self) -> np.ndarray:
        if self._renderer is None:
            h, w, _ = self.image_shape
            self._renderer_key, self._renderer = shared_renderer(self, h, w, fog=self.shift.fog)
        alpha = self.model.geom_rgba[:, 3]
        hidden = self._front_view.outside(self.data)
        held = alpha[hidden]
        alpha[hidden] = 0.0  # mjv_updateScene leaves geoms of alpha 0 out of the scene
        try:  # this world's model (the shared renderer's update_scene would read the first world's)
            mujoco.mjv_updateScene(
                self.model,
                self.data,
                self._scene_option,
                None,
                self._front_camera,
                mujoco.mjtCatBit.mjCAT_ALL,
                self._renderer.scene,
            )
        finally:
            alpha[hidden] = held
        self.frames_rendered += 1
        return self._renderer.render()

    def _camera_measurement(self, rng) -> np.ndarray:
        """A rendered frame with the shift's camera noise (variance ``camera_noise`` on [0, 1] intensities)."""
        image = self._render_camera()
        if self.shift.camera_noise > 0:
            noisy = image / 255.0 + rng.normal(0.0, np.sqrt(self.shift.camera_noise), size=image.shape)
            image = (np.clip(noisy, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return image

    def render(self):
        """A 320x240 RGB frame from behind the robot (``chase_view``) in ``rgb_array`` mode, else None."""
        if self._without_render_mode():
            return None
        self._require_reset("render()")  # before it, no episode: a frame of the never-computed state (sky alone)
        if self._chase_renderer is None:
            self._chase_renderer = make_renderer(self.model, 240, 320, fog=self.shift.fog > 0)
        self._forward_now()
        body, camera = self._chase_body, self._chase_camera
        rotation = self.data.xmat[body]  # row-major: the body's x axis is (rotation[0], rotation[3], rotation[6])
        camera.lookat[:] = self.data.subtree_com[body]
        camera.azimuth = math.degrees(math.atan2(rotation[3], rotation[0]))
        self._chase_renderer.update_scene(self.data, camera=camera, scene_option=self._scene_option)
        return self._chase_renderer.render()

    def close(self):
        """Release the shared camera renderer and close the chase renderer."""
        if self._renderer is not None:
            release_renderer(self._renderer_key)
        if self._chase_renderer is not None:
            self._chase_renderer.close()
        self._renderer = self._chase_renderer = None
