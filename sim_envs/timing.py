"""Sensor timing model: when messages are measured (stamped) and when they arrive.

Pure numpy (no MuJoCo) so the ROS simulation node can reuse the same model. A sensor ticks at a nominal
rate; each interval between ticks is drawn uniformly in ``period * (1 +- jitter)``; each tick is lost with
probability ``dropout``; a surviving message carries the tick time as its stamp (like a ROS header stamp)
and is delivered ``latency`` seconds later.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class SensorTiming:
    """Timing of one sensor stream.

    rate_hz: nominal message rate; jitter: fraction of the nominal period by which each interval varies
    (uniform, < 1); dropout: probability that a message is lost; latency: seconds from stamp to delivery.
    """

    rate_hz: float
    jitter: float = 0.0
    dropout: float = 0.0
    latency: float = 0.0

    def __post_init__(self):
        for name in ("rate_hz", "jitter", "dropout", "latency"):  # True was a 1 Hz sensor, "10" a numpy TypeError
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ValueError(f"SensorTiming {name} must be a number, got {value!r} ({type(value).__name__})")
        if not (np.isfinite(self.rate_hz) and self.rate_hz > 0):
            raise ValueError(f"rate_hz must be a positive finite number, got {self.rate_hz!r}")
        if not (0.0 <= self.jitter < 1.0):
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter!r}")
        if not (0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not (np.isfinite(self.latency) and self.latency >= 0):
            raise ValueError(f"latency must be a non-negative finite number of seconds, got {self.latency!r}")

    @property
    def period(self) -> float:
        """Nominal seconds between messages."""
        return 1.0 / self.rate_hz

    def scaled(
        self, rate: float = 1.0, jitter: float = 1.0, dropout: float | None = None, extra_latency: float = 0.0
    ) -> "SensorTiming":
        """This timing with the rate and jitter multiplied, dropout replaced and latency added (a shift)."""
        return replace(
            self,
            rate_hz=self.rate_hz * rate,
            jitter=min(self.jitter * jitter, 0.95),
            dropout=self.dropout if dropout is None else dropout,
            latency=self.latency + extra_latency,
        )

    def intervals(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """N tick-to-tick intervals in seconds."""
        return self.period * (1.0 + self.jitter * rng.uniform(-1.0, 1.0, size=n))

    def interval(self, rng: np.random.Generator) -> float:
        """One tick-to-tick interval: ``intervals(rng, 1)[0]`` (the same draw), without building an array.

        ``2 * rng.random() - 1`` is ``rng.uniform(-1.0, 1.0)`` bit for bit (numpy computes ``-1 + 2 * u`` from the
        same double ``u``, and doubling is exact) at a quarter of the cost of a scalar ``uniform`` call (~1 us);
        a world draws one per sensor message."""
        return self.period * (1.0 + self.jitter * (2.0 * rng.random() - 1.0))

    def message_stamps(self, rng: np.random.Generator, duration: float, t0: float = 0.0):
        """Stamps and arrival times of the messages that survive in [t0, t0 + duration) (arrays)."""
        stream = SensorStream(self, rng, t0)
        stamps = []
        while stream.next_stamp < t0 + duration:
            stamps.append(stream.pop())
        stamps = np.asarray(stamps, dtype=float)
        return stamps, stamps + self.latency


class SensorStream:
    """The seeded sequence of surviving messages of one sensor, consumed in order.

    ``next_stamp`` is the measurement time of the next message that will be delivered,
    ``next_arrival`` its delivery time. The first tick falls at a random phase within one period of t0.
    """

    def __init__(self, timing: SensorTiming, rng: np.random.Generator, t0: float = 0.0):
        self.timing = timing
        self._rng = rng
        self.next_stamp = t0 + timing.period * rng.uniform(0.0, 1.0)  # measurement time of the next survivor
        self.dropped = 0
        self._advance_to_surviving()

    def _advance_to_surviving(self):
        dropout = self.timing.dropout
        while dropout > 0 and self._rng.random() < dropout:  # random() is uniform() bit for bit, cheaper
            self.dropped += 1
            self.next_stamp += self.timing.interval(self._rng)

    @property
    def next_arrival(self) -> float:
        """Delivery time of the next surviving message (its stamp plus the latency)."""
        return self.next_stamp + self.timing.latency

    def pop(self) -> float:
        """Consume the next surviving message; returns its stamp."""
        stamp = self.next_stamp
        self.next_stamp += self.timing.interval(self._rng)
        self._advance_to_surviving()
        return stamp


# Defaults of the worlds (the training distribution).
ROVER_CAMERA = SensorTiming(rate_hz=15.0, jitter=0.2)
ROVER_IMU = SensorTiming(rate_hz=100.0, jitter=0.1)
BALANCER_IMU = SensorTiming(rate_hz=200.0, jitter=0.05)
BALANCER_ENCODERS = SensorTiming(rate_hz=200.0, jitter=0.05)
# LiquidBalanceNav-v0: the camera frame is stamped at exposure and delivered 25 ms later (after the IMU
# messages stamped after it), the IMU and the wheel encoders at the balancer's rates.
NAV_CAMERA = SensorTiming(rate_hz=30.0, jitter=0.2, latency=0.025)
NAV_IMU = SensorTiming(rate_hz=200.0, jitter=0.05)
NAV_ENCODERS = SensorTiming(rate_hz=200.0, jitter=0.05)
