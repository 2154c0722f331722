"""Streaming inference by measured dt: the policy state of a ROS node, fed one sensor reading at a time.

Pure Python + numpy (no ROS, no torch import here): the node converts messages to arrays and stamps to
seconds, and this class decides what each reading does to the liquid state.

- Every reading is validated first (known sensor, shape, dtype, finite values, finite stamp, stamp not in
  the future); a rejected reading changes nothing but a counter.
- Accepted readings pass the update timeline (:mod:`.timeline`) shared with the worlds: a reordering buffer
  releases them in stamp order after the policy's ``reorder_lag_s`` (0: on arrival); every released message of
  an ``update_on`` sensor advances the state by ``dt = update stamp - previous update stamp`` (never
  negative: a message stamped before the previous update is *late* and updates with dt = 0, counted as
  ``late.<sensor>``), the other sensors' readings are held (one stamped before the previous update is late too:
  that update went on with the reading before it; counted alike). Each encoder runs only when one of its inputs has
  a new message; its latest features are part of the state (the camera CNN once per frame, not once per IMU
  message). The core also sees which update sensor arrived and how old each one's latest message is, when
  the policy was trained with those time inputs.
- A stamp of exactly 0 while the receiver's clock reads more than ``max_backward_jump_s`` is an unset
  ``header.stamp``, rejected as ``bad_stamp`` (not taken as a clock jump back that resets the state).
- Per sensor, a stamp equal to the previous one is a duplicate and an older one is out of order: both are
  rejected. A stamp more than ``max_backward_jump_s`` older is a clock jump backwards (a simulation reset):
  the state, the held sensor readings and the buffer are reset and the reading starts a new run.
- Setpoints (``SETPOINTS``: the balancer's ``command``, an operator's target velocity) are not a time series
  but a value in force until the next one: no reset forgets them (a clock jump, a gap, a request). After a
  clock jump the latest accepted setpoint is held at once, so updates resume as soon as every *sensor* has
  delivered again; its stamp (of the old timeline) is forgotten. Only a new runner starts without one. A setpoint
  is held on arrival, never buffered by the reordering lag: its stamp is its arrival time on the receiver's clock,
  not a measurement time on the sensors' (the updates computed from then on use it, as a world reads its own
  command when it computes an update). A
  setpoint is never a duplicate, out of order or a clock jump: arrival is its order, the newer value in force (a
  Twist is stamped on arrival with the node clock, which under ``use_sim_time`` can read the same for two
  arrivals, and which an NTP step or a simulation's reset sets back: an operator's stop then was refused as out of
  order for up to ``max_backward_jump_s``, or reset the state though no sensor's stamps went back).
- Large gap policy: RESET. When the update dt exceeds ``max_gap_s`` (a sensor was stale, or the clock
  jumped forward) the old memory describes a world that has moved on, and integrating one huge step is
  outside what the cell was trained on; the state is reset and the update integrates ``first_update_dt``
  like the first update of an episode.
- Stale inputs wait: an update does not happen while any input's (setpoints aside) latest stamp is more than
  ``max_gap_s`` plus its own typical message interval before or after the update stamp (:mod:`.timeline`; the
  interval, so that a 1 Hz sensor is not stale between two of its messages): a sensor silent that long (an IMU
  that died while the camera updates on), or one stamping by another clock (an IMU stamping time since boot beside
  a camera stamping system time) would give the cell an age it never saw, and a command from it. Such updates are
  counted as ``waiting_for_stale.<input>`` and :meth:`stale_inputs` says by how much; the first update once
  every input is fresh again resets the state (``resets.stale_input``, or ``resets.gap`` if its dt is over
  ``max_gap_s``): the memory integrated an input up to ``max_gap_s`` old.
- The backend's output is checked (finite action and state) before the state is committed, so a failing
  or diverging step never corrupts the state (its dt is carried into the next update).
"""

from __future__ import annotations

import math
import numbers
import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from .backends import CAMERA, ObservationSpec
from .timeline import STAMP_TOLERANCE_S, ReorderBuffer, Update, UpdateClock

# Why a reading was rejected (diagnostics keys: ``rejected.<reason>``).
UNKNOWN_SENSOR = "unknown_sensor"
BAD_SHAPE = "bad_shape"
BAD_DTYPE = "bad_dtype"
NON_FINITE = "non_finite"
BAD_STAMP = "bad_stamp"
FUTURE_STAMP = "future_stamp"
DUPLICATE = "duplicate_stamp"
OUT_OF_ORDER = "out_of_order"
INFERENCE_ERROR = "inference_error"

# Why the state was reset besides a request (``resets.<why>``; ``Result.reset``): see the module docstring.
STALE_INPUT = "stale_input"  # updates waited for an input stale by its stamps; it is fresh again
CLOCK_BACKWARDS = "clock_backwards"  # a stamp more than max_backward_jump_s older than the sensor's previous one

# What an accepted reading did (the most consequential of the messages it released, in this order).
UPDATED = "updated"  # the state advanced and a new action is available
WAITING = "waiting"  # an update reading was released before every input had a first value
HELD = "held"  # a held input was replaced
QUEUED = "queued"  # in the reordering buffer, nothing released yet
REJECTED = "rejected"
_RANK = {QUEUED: 0, HELD: 1, WAITING: 2, UPDATED: 3}

# Inputs that are setpoints (an operator's target, held until changed), not a sensor's time series: see the
# module docstring. An update sensor is never one.
SETPOINTS = ("command",)


@dataclass(frozen=True)
class RunnerLimits:
    """Thresholds of the runner: the node's parameters of the same names (config/*_policy.yaml)."""

    max_gap_s: float = 1.0  # an update gap longer than this resets the state
    max_backward_jump_s: float = 0.5  # a stamp this much older than the previous one is a clock reset
    max_future_stamp_s: float = 1.0  # a stamp this far ahead of the receiver's clock is bogus
    first_update_dt: float = 0.0  # dt integrated by the first update after a (re)start
    reorder_lag_s: float | None = None  # lag of the reordering buffer; None: the policy's (observation.reorder_lag_s)

    def __post_init__(self):
        for name in ("max_gap_s", "max_backward_jump_s", "max_future_stamp_s", "first_update_dt", "reorder_lag_s"):
            value = getattr(self, name)
            if (value is not None or name != "reorder_lag_s") and (
                isinstance(value, bool) or not isinstance(value, numbers.Real)
            ):
                raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__} {value!r}")
        for name in ("max_gap_s", "max_backward_jump_s", "max_future_stamp_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number of seconds, got {value!r}")
        if not (math.isfinite(self.first_update_dt) and 0 <= self.first_update_dt <= self.max_gap_s):
            raise ValueError(
                f"first_update_dt must be in [0, max_gap_s={self.max_gap_s}], got {self.first_update_dt!r}"
            )
        lag = self.reorder_lag_s
        if lag is not None and not (math.isfinite(lag) and 0 <= lag < self.max_gap_s):
            raise ValueError(f"reorder_lag_s must be in [0, max_gap_s={self.max_gap_s}), got {lag!r}")


@dataclass(frozen=True)
class Result:
    """What one reading did: ``status`` is updated/waiting/held/queued/rejected; ``reason`` names a rejection;
    ``updates`` counts the state updates it released (more than one only with a reordering lag), ``action``,
    ``dt``, ``stamp`` (update stamp, seconds) and ``tag`` (what was submitted with the message that caused it)
    are those of the last; ``reset`` names a reset it caused; ``detail`` says why an inference failed (the
    model's exception or the bad output), for the log; ``update_stamps``, ``update_resets`` and ``update_tags`` are
    the stamp of every update it released, in order, the reset this reading caused just before it (or None) and the
    tag submitted with the message that caused it (an earlier message's, where the reordering buffer let it go)."""

    status: str
    reason: str = ""
    action: np.ndarray | None = None
    dt: float | None = None
    stamp: float | None = None
    reset: str | None = None
    tag: object = None
    detail: str = ""
    update_stamps: tuple = ()
    update_resets: tuple = ()
    update_tags: tuple = ()

    @property
    def updates(self) -> int:
        """How many state updates the reading released."""
        return len(self.update_stamps)

    @property
    def accepted(self) -> bool:
        """Whether the reading was taken (not rejected)."""
        return self.status != REJECTED


def stale_inputs_text(max_gap_s: float) -> str:
    """What updates wait for while inputs are stale (:meth:`PolicyRunner.stale_inputs`), in words: policy_node
    says it live, training and ``eval --bag`` of a bag (``bags.stream.stale_wait_hint``), one wording for both."""
    return (
        f"inputs stamped more than max_gap_s ({max_gap_s:g} s) apart (a sensor that went silent, or sensors stamping "
        "by different clocks)"
    )


def output_problem(action, new_state, action_size: int) -> str:
    """Why a model's output cannot be used (empty if it can): the wrong number of actions, or a non-finite
    action or state. The runner drops such an update and keeps its state."""
    action = np.asarray(action).reshape(-1)
    if action.shape != (action_size,):
        return f"the model returned {action.size} action values, the policy has {action_size}"
    if not np.all(np.isfinite(action)):
        return "the model returned a non-finite action"
    if not np.all(np.isfinite(new_state)):
        return "the model returned a non-finite state"
    return ""


class PolicyRunner:
    """Holds the liquid state of one policy and advances it by the stamp differences of sensor readings."""

    def __init__(self, backend, limits: RunnerLimits | None = None, window: int = 500, setpoints=SETPOINTS):
        if not all(hasattr(backend, name) for name in ("spec", "initial_state", "step")):
            raise TypeError(
                f"PolicyRunner needs a backend (spec, initial_state(), step()), got {type(backend).__name__}: "
                f"load one with load_backend(path), or wrap a Policy as TorchBackend(policy)"
            )
        if limits is not None and not isinstance(limits, RunnerLimits):
            raise TypeError(f"limits must be a RunnerLimits (e.g. RunnerLimits(**values)), got {type(limits).__name__}")
        self.backend = backend
        self.spec: ObservationSpec = backend.spec
        self.limits = limits or RunnerLimits()
        lag = self.spec.reorder_lag_s if self.limits.reorder_lag_s is None else self.limits.reorder_lag_s
        if self.limits.reorder_lag_s is None and not lag < self.limits.max_gap_s:  # as RunnerLimits checks its own
            raise ValueError(
                f"the policy's reordering lag (observation.reorder_lag_s: {lag:g} s) must be below max_gap_s "
                f"({self.limits.max_gap_s:g} s): every update would wait out a gap that resets the state"
            )
        self.counters: Counter = Counter()
        self._dts: deque = deque(maxlen=window)
        self._latencies: deque = deque(maxlen=window)
        self._ages: deque = deque(maxlen=window)  # per update: each update sensor's age (Update.ages)
        # the policy's setpoint inputs, and the latest accepted value of each (perhaps still in the buffer)
        self.setpoints = frozenset(setpoints).intersection(self.spec.sensors).difference(self.spec.update_on)
        self._buffer = ReorderBuffer(lag, held_first=set(self.spec.sensors).difference(self.spec.update_on))
        self._clock = UpdateClock(
            self.spec.update_on,
            required=self.spec.sensors,
            first_update_dt=self.limits.first_update_dt,
            max_age_s=self.limits.max_gap_s,
            ageless=self.setpoints,
        )
        self._state = backend.initial_state()
        self._held: dict[str, np.ndarray] = {}
        self._last_stamp: dict[str, float] = {}  # per sensor, of the last accepted reading
        self._setpoint_values: dict[str, tuple[float, np.ndarray]] = {}
        self._stale_encoders = set(self.spec.encoders)  # encoders whose inputs changed since they last ran
        self._carried_dt = 0.0  # dt of failed updates, integrated by the next one
        self._waited_on_stale = False  # an update waited for a stale input since the last one: the next resets
        self.last_inference_error = ""  # why the last failed update failed (for the log)

    # ---- state -------------------------------------------------------------------------------------
    @property
    def state(self) -> np.ndarray:
        """A copy of the current liquid state."""
        return self._state.copy()

    @property
    def reorder_lag_s(self) -> float:
        """Lag of the reordering buffer in use (seconds)."""
        return self._buffer.lag_s

    @property
    def buffered(self) -> int:
        """Messages held in the reordering buffer, not yet released."""
        return len(self._buffer)

    def reset(self, reason: str = "request", clear_inputs: bool = False) -> None:
        """Back to the initial state; the next update integrates ``first_update_dt``.

        ``clear_inputs`` also forgets the held sensor readings, per-sensor stamps and buffered messages (a clock
        reset: old stamps belong to another timeline), but not the setpoints: the latest accepted value of each
        is held on (see the module docstring).
        """
        self._reset_state(reason)
        if not clear_inputs:
            self._clock.restart()
            return
        self._held.clear()
        self._last_stamp.clear()
        self._buffer.clear()
        self._clock.restart(forget_inputs=True)
        for sensor, (stamp, value) in self._setpoint_values.items():
            self._held[sensor] = value
            self._clock.release(sensor, stamp)  # delivered (not an update sensor: causes no update)

    def missing_inputs(self) -> tuple[str, ...]:
        """The inputs that updates wait for: not received since the runner started or inputs were cleared."""
        return self._clock.missing

    def setpoint(self, sensor: str) -> np.ndarray | None:
        """The value of the setpoint ``sensor`` in force (its latest accepted reading), or None before one."""
        held = self._setpoint_values.get(sensor)
        return None if held is None else held[1]

    def latest_stamps(self) -> dict[str, float]:
        """Per input, the stamp of its last accepted reading (seconds; since the runner started or inputs were
        cleared)."""
        return dict(self._last_stamp)

    def stale_inputs(self) -> dict[str, float]:
        """The inputs the last update message waited for although they have delivered: input -> the update
        stamp minus its latest stamp (seconds; negative: stamped after it), beyond ``max_gap_s`` plus the input's
        typical message interval either way."""
        return dict(self._clock.stale)

    def _reset_state(self, reason: str) -> None:
        self._state = self.backend.initial_state()
        self._stale_encoders = set(self.spec.encoders)  # the features in the state are zeros again
        self._carried_dt = 0.0
        self._waited_on_stale = False
        self.counters[f"resets.{reason}"] += 1

    # ---- input -------------------------------------------------------------------------------------
    def reject(self, sensor: str, reason: str) -> Result:
        """Count a reading of ``sensor`` that its receiver rejected before :meth:`submit` (a message it cannot
        convert: ``bad_encoding``, ``missing_joint``) as ``submit`` counts its own rejections: received, rejected
        for ``reason`` and rejected for that sensor. The state is not touched."""
        self.counters[f"received.{sensor}"] += 1
        return self._reject(sensor, reason)

    def _reject(self, sensor: str, reason: str) -> Result:
        self.counters[f"rejected.{reason}"] += 1
        self.counters[f"rejected_by_sensor.{sensor}"] += 1
        return Result(REJECTED, reason)

    def _check_value(self, sensor: str, value) -> tuple[np.ndarray | None, str]:
        shape = self.spec.sensors[sensor]
        arr = np.asarray(value)
        if sensor == CAMERA:
            if arr.dtype != np.uint8:
                return None, BAD_DTYPE
        else:
            if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                return None, BAD_DTYPE
            arr = arr.astype(np.float32)
            if not np.all(np.isfinite(arr)):
                return None, NON_FINITE
        if arr.shape != shape:
            return None, BAD_SHAPE
        return arr, ""

    def submit(self, sensor: str, stamp: float, value, now: float | None = None, tag=None) -> Result:
        """Feed one reading (``stamp`` in seconds, e.g. from ``header.stamp``; ``now`` the receiver's clock;
        ``tag`` comes back with the update this reading causes, e.g. the exact ``header.stamp``)."""
        self.counters[f"received.{sensor}"] += 1
        if sensor not in self.spec.sensors:
            return self._reject(sensor, UNKNOWN_SENSOR)
        try:
            stamp = float(stamp)
        except (TypeError, ValueError):
            return self._reject(sensor, BAD_STAMP)
        if not math.isfinite(stamp) or stamp < 0:
            return self._reject(sensor, BAD_STAMP)
        if now is not None and not (isinstance(now, numbers.Real) and math.isfinite(now)):
            # the receiver's clock, not the reading's: a NaN one turned the future-stamp check off silently
            raise ValueError(f"now must be a finite time in seconds (the receiver's clock) or None, got {now!r}")
        if now is not None and stamp > now + self.limits.max_future_stamp_s:
            return self._reject(sensor, FUTURE_STAMP)
        if stamp == 0.0 and now is not None and now > self.limits.max_backward_jump_s:
            # an unset header.stamp (a driver that does not stamp), not a clock restarting at 0 (the receiver's
            # clock would read near 0 too): taken as a clock jump back, one such message reset the liquid state
            return self._reject(sensor, BAD_STAMP)
        arr, reason = self._check_value(sensor, value)
        if arr is None:
            return self._reject(sensor, reason)

        reset = None
        last = None if sensor in self.setpoints else self._last_stamp.get(sensor)
        if last is not None:
            if stamp == last:
                return self._reject(sensor, DUPLICATE)
            if stamp < last - self.limits.max_backward_jump_s - STAMP_TOLERANCE_S:
                self.reset(CLOCK_BACKWARDS, clear_inputs=True)
                reset = CLOCK_BACKWARDS
            elif stamp < last:
                return self._reject(sensor, OUT_OF_ORDER)
        self._last_stamp[sensor] = stamp
        self.counters[f"accepted.{sensor}"] += 1
        if sensor in self.setpoints:
            self._setpoint_values[sensor] = (stamp, arr)
            # held on arrival, not buffered: its stamp is its arrival on the receiver's clock, which orders it among
            # the sensors' stamps only where the two clocks agree (a bag replayed without --clock: a target stamped
            # now among readings of the recording day held the target back until the next one and released every
            # later reading at once, the lag gone; policy_node and eval --bag then differed from the first command)
            released = [(sensor, stamp, (arr, tag))]
        else:
            released = self._buffer.push(sensor, stamp, (arr, tag))
        status, last_update, last_tag, failed = QUEUED, None, None, False
        stamps, resets, tags, pending = [], [], [], reset  # pending: a reset not yet followed by an update
        for released_sensor, released_stamp, (reading, released_tag) in released:
            outcome, update, caused = self._release(released_sensor, released_stamp, reading)
            reset, pending = caused or reset, caused or pending
            if outcome == UPDATED:
                last_update, last_tag = update, released_tag
                stamps.append(self._clock.stamp)
                resets.append(pending)
                tags.append(released_tag)
                pending = None
            failed |= outcome == INFERENCE_ERROR
            if _RANK.get(outcome, -1) > _RANK[status]:
                status = outcome
        self.counters["reorder.forced"] = self._buffer.forced
        if last_update is None:
            if failed:
                return Result(REJECTED, INFERENCE_ERROR, reset=reset, detail=self.last_inference_error)
            return Result(status, reset=reset)
        action, dt = last_update
        return Result(
            UPDATED,
            action=action.copy(),
            dt=dt,
            stamp=stamps[-1],
            reset=reset,
            tag=last_tag,
            update_stamps=tuple(stamps),
            update_resets=tuple(resets),
            update_tags=tuple(tags),
        )

    def _release(self, sensor: str, stamp: float, reading: np.ndarray):
        """A reading leaves the buffer: hold it, and update when it is an update sensor's. Returns the outcome,
        the update's ``(action, dt)`` if any, and the reset it caused (a gap) or None."""
        self._held[sensor] = reading
        self._stale_encoders.add(self.spec.encoder_of(sensor))
        previous_update = self._clock.stamp
        update = self._clock.release(sensor, stamp)
        if sensor not in self.spec.update_on and sensor not in self.setpoints:
            if previous_update is not None and stamp < previous_update:  # the updates since its stamp went on
                self.counters[f"late.{sensor}"] += 1  # an older reading of it: later than the lag allowed
        if update is None:
            if sensor in self.spec.update_on:
                self.counters["waiting_for_inputs"] += 1
                for stale in self._clock.stale:
                    self.counters[f"waiting_for_stale.{stale}"] += 1
                    self._waited_on_stale = True
                return WAITING, None, None
            return HELD, None, None
        if update.late:
            self.counters[f"late.{sensor}"] += 1
        return self._update(update)

    def _update(self, update: Update):
        dt, reset = update.dt + self._carried_dt, None
        gap = dt > self.limits.max_gap_s + STAMP_TOLERANCE_S  # a dt of exactly max_gap_s integrates
        if gap or self._waited_on_stale:
            reset = "gap" if gap else STALE_INPUT
            self._reset_state(reset)
            dt = self.limits.first_update_dt
        obs = {ObservationSpec.obs_key(s): self._held[s] for s in self.spec.sensors}
        if "event" in self.spec.timing:
            obs["event"] = np.int64(update.event)
        if "ages" in self.spec.timing:
            obs["ages"] = np.asarray(update.ages, dtype=np.float32)
        encode = tuple(e for e in self.spec.encoders if e in self._stale_encoders)
        start = time.perf_counter()
        try:
            action, new_state = self.backend.step(obs, self._state, dt, encode=encode)
        except Exception as exc:  # a failing model must not take the node down; the state stays as it was
            return self._failed(dt, reset, f"{type(exc).__name__}: {exc}")
        self._latencies.append(time.perf_counter() - start)
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        problem = output_problem(action, new_state, self.spec.action_size)
        if problem:
            return self._failed(dt, reset, problem)
        self._state = np.asarray(new_state, dtype=self._state.dtype)  # the backend's (float64: a float64 policy)
        self._stale_encoders.clear()
        self._carried_dt = 0.0
        self._dts.append(dt)
        self._ages.append(update.ages)
        self.counters["updates"] += 1
        return UPDATED, (action, dt), reset

    def _failed(self, dt: float, reset: str | None, why: str):  # ``reset`` passes through
        self.counters[f"rejected.{INFERENCE_ERROR}"] += 1
        self.last_inference_error = why
        self._carried_dt = dt
        return INFERENCE_ERROR, None, reset

    # ---- diagnostics -------------------------------------------------------------------------------
    def rejected_total(self) -> int:
        """Number of readings rejected so far, over every reason."""
        return sum(v for k, v in self.counters.items() if k.startswith("rejected."))

    def dt_stats(self) -> dict[str, float]:
        """Mean/std/min/max of the recent update dts (seconds); empty before the first update."""
        if not self._dts:
            return {}
        d = np.asarray(self._dts)
        return {
            "n": float(d.size),
            "mean": float(d.mean()),
            "std": float(d.std()),
            "min": float(d.min()),
            "max": float(d.max()),
        }

    def age_stats(self) -> dict[str, dict[str, float]]:
        """Per update sensor, how old its latest message was at recent updates (seconds): p50, max; empty before
        the first update. With several update sensors this is where a sensor delivered late, or stamping by a
        clock behind the others' by less than ``max_gap_s``, shows its number."""
        if not self._ages:
            return {}
        ages = np.asarray(self._ages)
        return {
            s: {"p50": float(np.percentile(ages[:, i], 50)), "max": float(ages[:, i].max())}
            for i, s in enumerate(self.spec.update_on)
        }

    def latency_stats(self) -> dict[str, float]:
        """Inference latency of recent updates (seconds): p50, p99, max."""
        if not self._latencies:
            return {}
        lat = np.asarray(self._latencies)
        return {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)), "max": float(lat.max())}
