"""When a sensor message advances the liquid state, and by how much: the update timeline.

One implementation, used by the runtime (:class:`~.runner.PolicyRunner`, so the ROS node) and by the worlds
(``sim_envs``), so a policy integrates in deployment exactly the dts it was trained on. Pure Python. The worlds
run :class:`UpdateClock` without ``max_age_s``: the stale rule below (and the runner's reset when a stale input is
fresh again) is the runtime's alone (docs/worlds.md).

Messages come in *arrival* order, which across sensors is not stamp order: a camera frame is stamped at
exposure and delivered tens of milliseconds later, after IMU messages stamped after it. Two pieces:

- :class:`ReorderBuffer` holds messages and releases them in stamp order once a message stamped ``lag_s``
  later has arrived (the cache approach of ROS ``message_filters``); ``lag_s = 0`` releases every message on
  arrival. It holds at most ``capacity`` messages: beyond that the oldest is released early (counted). At an
  equal stamp the ``held_first`` sensors' messages go first (an IMU and the wheel encoders stamped at one instant
  by one microcontroller: with a lag, the update holds the wheels of that instant whichever arrived first, so a
  recorder and the node, two subscribers seeing the two topics in either order, agree; with ``lag_s = 0`` every
  message goes out on arrival), then arrival order.
  The lag is paid in command latency: an IMU message waits ``lag_s`` (plus up to one IMU period) before its
  update.
- :class:`UpdateClock` turns released messages into updates. Every message of an *update sensor* is one
  update, at the update stamp ``u = max(previous u, stamp)``, integrating ``dt = u - previous u >= 0``. A
  message stamped before the previous update (it arrived later than the lag allowed: *late*) therefore updates
  with ``dt = 0``; it is used, never dropped, and counted. Each update carries which sensor caused it
  (``event``, an index into ``update_on``) and ``ages``: ``u`` minus the stamp of each update sensor's latest
  message, so the cell sees how old each input is. Before every ``required`` sensor has delivered once, update
  messages only wait. With ``max_age_s`` they also wait while an input's latest stamp is more than ``max_age_s``
  past its due time before or after the update stamp (*stale*: a sensor silent that long, or stamping by another
  clock), as the cell never saw such an age; the update stamp does not advance meanwhile, so the first update
  once every input is fresh again integrates the whole silence (which a caller's gap rule then resets). An
  input's due time is one typical message interval after its latest stamp (the median of its last
  ``INTERVALS`` stamp differences; none before its second message), so a sensor slower than ``1 / max_age_s``
  (a 1 Hz GPS or odometry beside a 15 Hz camera) is not stale between two of its messages. ``ageless`` inputs (a
  setpoint in force until changed) are never stale.
"""

from __future__ import annotations

import heapq
import statistics
from collections import deque
from dataclasses import dataclass

# Stamp differences per input whose median is its typical message interval (UpdateClock's stale rule).
INTERVALS = 9

# How far past a threshold a stamp difference must be to count as past it (the reordering lag, the stale rule here;
# the runner's gap and clock-jump rules). Stamps of system time (~1.7e9 s) are float seconds 238 ns apart, so a
# difference meant to equal a threshold exactly (an IMU stamped on a 5 ms grid, a lag of one period) came out up
# to 2.4e-7 s either side, and half such messages waited one period more, or reset the state, by rounding.
STAMP_TOLERANCE_S = 1e-6


class ReorderBuffer:
    """Releases messages in stamp order once the newest stamp seen is ``lag_s`` past them (see module doc)."""

    def __init__(self, lag_s: float = 0.0, capacity: int = 256, held_first=()):
        if not (lag_s >= 0.0 and lag_s < float("inf")):
            raise ValueError(f"reorder lag must be a finite number of seconds >= 0, got {lag_s!r}")
        if capacity < 1:
            raise ValueError(f"reorder buffer capacity must be >= 1, got {capacity!r}")
        self.lag_s, self.capacity = float(lag_s), int(capacity)
        self.held_first = frozenset(held_first)  # released before the other sensors' messages of an equal stamp
        self.forced = 0  # messages released before their lag because the buffer was full
        self.clear()

    def clear(self) -> None:
        """Drop every held message and forget the newest stamp (``forced`` keeps counting)."""
        self._heap: list = []
        self._arrivals = 0
        self._newest = float("-inf")

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, sensor: str, stamp: float, payload=None) -> list[tuple[str, float, object]]:
        """Add one message; returns the messages released by it, ``(sensor, stamp, payload)`` in stamp order."""
        heapq.heappush(self._heap, (stamp, sensor not in self.held_first, self._arrivals, sensor, payload))
        self._arrivals += 1
        self._newest = max(self._newest, stamp)
        released = []
        due = self._newest - self.lag_s + STAMP_TOLERANCE_S  # released: stamped up to here
        while self._heap and (self._heap[0][0] <= due or len(self._heap) > self.capacity):
            if self._heap[0][0] > due:
                self.forced += 1
            stamp_, _, _, sensor_, payload_ = heapq.heappop(self._heap)
            released.append((sensor_, stamp_, payload_))
        return released


@dataclass(frozen=True)
class Update:
    """One state update: its stamp, the dt it integrates, the sensor that caused it and the inputs' ages."""

    stamp: float  # u: the update's time (seconds)
    dt: float  # u - previous u (the first update after a start: the clock's first_update_dt)
    event: int  # index into update_on of the sensor whose message caused the update
    ages: tuple[float, ...]  # per update sensor: u - stamp of its latest message
    late: bool  # the message was stamped before the previous update (dt = 0)


class UpdateClock:
    """Turns released messages into updates (see module doc). ``first_update_dt``: dt of the first update."""

    def __init__(self, update_on, required=(), first_update_dt: float = 0.0, max_age_s=None, ageless=()):
        self.update_on = tuple(update_on)
        if not self.update_on or len(set(self.update_on)) != len(self.update_on):
            raise ValueError(f"update sensors must be distinct and at least one, got {list(self.update_on)}")
        self.required = frozenset(required) | frozenset(self.update_on)
        self.first_update_dt = float(first_update_dt)
        self.max_age_s = float("inf") if max_age_s is None else float(max_age_s)
        self.ageless = frozenset(ageless)
        self.stale: dict[str, float] = {}  # at the last update message: stale input -> update stamp - its stamp
        self.late = {s: 0 for s in self.update_on}  # late messages per update sensor
        self.restart(forget_inputs=True)

    def restart(self, forget_inputs: bool = False) -> None:
        """The next update is a first one (integrates ``first_update_dt``); optionally forget which sensors
        delivered."""
        self.stamp: float | None = None
        self.stale = {}
        if forget_inputs:
            self._latest: dict[str, float] = {}
            self._intervals: dict[str, deque] = {}  # per input, its last INTERVALS stamp differences

    @property
    def ready(self) -> bool:
        """Every required sensor has delivered at least once."""
        return self.required.issubset(self._latest)

    @property
    def missing(self) -> tuple[str, ...]:
        """The required sensors that have not delivered yet (sorted): what updates wait for."""
        return tuple(sorted(self.required.difference(self._latest)))

    def release(self, sensor: str, stamp: float) -> Update | None:
        """A message leaves the reorder buffer: note its stamp; the update it causes, or None (held input,
        waiting for the first message of a required sensor, or for a stale input: ``stale`` names it)."""
        previous = self._latest.get(sensor)
        self._latest[sensor] = stamp if previous is None else max(previous, stamp)
        if self.max_age_s < float("inf") and previous is not None and stamp > previous:  # (the worlds: none)
            self._intervals.setdefault(sensor, deque(maxlen=INTERVALS)).append(stamp - previous)
        if sensor not in self.update_on or not self.ready:
            return None
        u = stamp if self.stamp is None else max(self.stamp, stamp)
        if self.max_age_s < float("inf"):
            self.stale = {
                s: u - t
                for s, t in self._latest.items()
                if s in self.required
                and s not in self.ageless
                and abs(u - t) > self.max_age_s  # (the median only for an input that old)
                and abs(u - t) > self.max_age_s + self.interval(s) + STAMP_TOLERANCE_S
            }
            if self.stale:
                return None
        late = self.stamp is not None and stamp < self.stamp
        dt = self.first_update_dt if self.stamp is None else u - self.stamp
        if late:
            self.late[sensor] += 1
        self.stamp = u
        return Update(stamp=u, dt=dt, event=self.update_on.index(sensor), ages=self.ages(u), late=late)

    def interval(self, sensor: str) -> float:
        """The typical interval between ``sensor``'s messages: the median of its last ``INTERVALS`` stamp
        differences (0 before its second message; tracked only with ``max_age_s``)."""
        recent = self._intervals.get(sensor)
        return statistics.median(recent) if recent else 0.0

    def ages(self, at: float) -> tuple[float, ...]:
        """``at`` minus the stamp of each update sensor's latest message (all have delivered: see ``ready``)."""
        return tuple(max(0.0, at - self._latest[s]) for s in self.update_on)
