"""Streaming inference by measured dt: the policy state of a ROS node, fed one sensor reading at a time.

Pure Python + numpy (no ROS, no torch import here): the node converts messages to arrays and stamps to
seconds, and this class decides what each reading does to the liquid state.

- Every reading is validated first (known sensor, shape, dtype, finite values, finite stamp, stamp not in
  the future); a rejected reading changes nothing but a counter.
- Readings of held sensors (e.g. the IMU of the rover) only replace the held input. A reading of the
  ``update_on`` sensor advances the state by ``dt = stamp - stamp of the previous update`` with the inputs
  held at that moment, exactly as the sim_envs worlds do during training.
- Per sensor, a stamp equal to the previous one is a duplicate and an older one is out of order: both are
  rejected. A stamp more than ``max_backward_s`` older is a clock jump backwards (a simulation reset):
  the state and the held inputs are reset and the reading starts a new run.
- Large gap policy: RESET. When the update dt exceeds ``max_gap_s`` (a sensor was stale, or the clock
  jumped forward) the old memory describes a world that has moved on, and integrating one huge step is
  outside what the cell was trained on; the state is reset and the update integrates ``first_dt`` like
  the first update of an episode.
- The backend's output is checked (finite action and state) before the state is committed, so a failing
  or diverging step never corrupts the state.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from .backends import CAMERA, ObservationSpec

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

# What an accepted reading did.
UPDATED = "updated"  # the state advanced and a new action is available
HELD = "held"  # a held input was replaced
WAITING = "waiting"  # an update reading arrived before every input had a first value
REJECTED = "rejected"


@dataclass(frozen=True)
class RunnerLimits:
    """Thresholds of the runner (the ``dt`` limits of the node's parameter file)."""

    max_gap_s: float = 1.0  # an update gap longer than this resets the state
    max_backward_s: float = 0.5  # a stamp this much older than the previous one is a clock reset
    max_future_s: float = 1.0  # a stamp this far ahead of the receiver's clock is bogus
    first_dt: float = 0.0  # dt integrated by the first update after a (re)start

    def __post_init__(self):
        for name in ("max_gap_s", "max_backward_s", "max_future_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number of seconds, got {value!r}")
        if not (math.isfinite(self.first_dt) and 0 <= self.first_dt <= self.max_gap_s):
            raise ValueError(f"first_dt must be in [0, max_gap_s={self.max_gap_s}], got {self.first_dt!r}")


@dataclass(frozen=True)
class Result:
    """What one reading did: ``status`` is updated/held/waiting/rejected; ``reason`` names a rejection;
    ``action`` is set when the state advanced; ``reset`` names a reset this reading caused."""

    status: str
    reason: str = ""
    action: np.ndarray | None = None
    dt: float | None = None
    reset: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status != REJECTED


class PolicyRunner:
    """Holds the liquid state of one policy and advances it by the stamp differences of sensor readings."""

    def __init__(self, backend, limits: RunnerLimits | None = None, window: int = 500):
        self.backend = backend
        self.spec: ObservationSpec = backend.spec
        self.limits = limits or RunnerLimits()
        self.counters: Counter = Counter()
        self._dts: deque = deque(maxlen=window)
        self._latencies: deque = deque(maxlen=window)
        self._state = backend.initial_state()
        self._held: dict[str, np.ndarray] = {}
        self._last_stamp: dict[str, float] = {}
        self._last_update_stamp: float | None = None
        self.last_action: np.ndarray | None = None

    # ---- state -------------------------------------------------------------------------------------
    @property
    def state(self) -> np.ndarray:
        return self._state.copy()

    @property
    def last_update_stamp(self) -> float | None:
        return self._last_update_stamp

    def reset(self, reason: str = "request", clear_inputs: bool = False) -> None:
        """Back to the initial state; the next update integrates ``first_dt``.

        ``clear_inputs`` also forgets held inputs and per-sensor stamps (a clock reset: old stamps belong to
        another timeline).
        """
        self._state = self.backend.initial_state()
        self._last_update_stamp = None
        self.last_action = None
        if clear_inputs:
            self._held.clear()
            self._last_stamp.clear()
        self.counters[f"resets.{reason}"] += 1

    # ---- input -------------------------------------------------------------------------------------
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

    def submit(self, sensor: str, stamp: float, value, now: float | None = None) -> Result:
        """Feed one reading (``stamp`` in seconds, e.g. from ``header.stamp``; ``now`` the receiver's clock)."""
        self.counters[f"received.{sensor}"] += 1
        if sensor not in self.spec.sensors:
            return self._reject(sensor, UNKNOWN_SENSOR)
        try:
            stamp = float(stamp)
        except (TypeError, ValueError):
            return self._reject(sensor, BAD_STAMP)
        if not math.isfinite(stamp) or stamp < 0:
            return self._reject(sensor, BAD_STAMP)
        if now is not None and stamp > now + self.limits.max_future_s:
            return self._reject(sensor, FUTURE_STAMP)
        arr, reason = self._check_value(sensor, value)
        if arr is None:
            return self._reject(sensor, reason)

        reset = None
        last = self._last_stamp.get(sensor)
        if last is not None:
            if stamp == last:
                return self._reject(sensor, DUPLICATE)
            if stamp < last - self.limits.max_backward_s:
                self.reset("clock_backwards", clear_inputs=True)
                reset = "clock_backwards"
            elif stamp < last:
                return self._reject(sensor, OUT_OF_ORDER)
        self._held[sensor] = arr
        self._last_stamp[sensor] = stamp
        self.counters[f"accepted.{sensor}"] += 1
        if sensor != self.spec.update_on:
            return Result(HELD, reset=reset)
        if len(self._held) < len(self.spec.sensors):
            self.counters["waiting_for_inputs"] += 1
            return Result(WAITING, reset=reset)
        return self._update(stamp, reset)

    def _update(self, stamp: float, reset: str | None) -> Result:
        dt = None if self._last_update_stamp is None else stamp - self._last_update_stamp
        if dt is not None and dt > self.limits.max_gap_s:
            self.reset("gap")
            reset, dt = "gap", None
        if dt is None:
            dt = self.limits.first_dt
        obs = {ObservationSpec.obs_key(s): self._held[s] for s in self.spec.sensors}
        start = time.perf_counter()
        try:
            action, new_state = self.backend.step(obs, self._state, dt)
        except Exception:  # a failing model must not take the node down; the state stays as it was
            self.counters[f"rejected.{INFERENCE_ERROR}"] += 1
            return Result(REJECTED, INFERENCE_ERROR, dt=dt, reset=reset)
        self._latencies.append(time.perf_counter() - start)
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (self.spec.action_size,) or not (
            np.all(np.isfinite(action)) and np.all(np.isfinite(new_state))
        ):
            self.counters[f"rejected.{INFERENCE_ERROR}"] += 1
            return Result(REJECTED, INFERENCE_ERROR, dt=dt, reset=reset)
        self._state = np.asarray(new_state, dtype=np.float32)
        self._last_update_stamp = stamp
        self.last_action = action
        self._dts.append(dt)
        self.counters["updates"] += 1
        return Result(UPDATED, action=action.copy(), dt=dt, reset=reset)

    # ---- diagnostics -------------------------------------------------------------------------------
    def held_stamp(self, sensor: str) -> float | None:
        return self._last_stamp.get(sensor)

    def rejected_total(self) -> int:
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

    def latency_stats(self) -> dict[str, float]:
        """Inference latency of recent updates (seconds): p50, p99, max."""
        if not self._latencies:
            return {}
        lat = np.asarray(self._latencies)
        return {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)), "max": float(lat.max())}
