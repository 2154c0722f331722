"""Command shaping between the policy's action and the robot: scale, clip, limit the rate of change.

Pure numpy so it is unit-tested without ROS. Rate limits use the elapsed time between published commands
(the receiver's clock), credited up to ``max_elapsed`` seconds: a clock that steps forward (an NTP step of hours, a
/clock that skips) made the elapsed time hours and let the next command jump to any value; a stop command bypasses
them (a safety stop must not ramp).
"""

from __future__ import annotations

import math

import numpy as np


class CommandLimiter:
    """action (policy units) -> command (robot units): ``clip(action * scale, +-max)``, then at most
    ``max_rate * min(elapsed, max_elapsed)`` away from the previous command, per element."""

    def __init__(self, scale, max_command, max_rate, max_elapsed: float = math.inf):
        self.scale = np.asarray(scale, dtype=np.float64)
        self.max_command = np.asarray(max_command, dtype=np.float64)
        self.max_rate = np.asarray(max_rate, dtype=np.float64)
        n = self.scale.shape
        if self.scale.ndim != 1 or self.max_command.shape != n or self.max_rate.shape != n:
            raise ValueError(
                f"scale, max_command and max_rate need one value per action element, got "
                f"{self.scale.shape}, {self.max_command.shape}, {self.max_rate.shape}"
            )
        if not np.all(np.isfinite(self.scale)):  # a NaN scale made every command NaN, an inf one inf * 0 = NaN
            raise ValueError(f"scale must be finite, got {self.scale.tolist()}")
        if not (np.all(self.max_command > 0) and np.all(self.max_rate > 0)):  # NaN fails these too
            raise ValueError("max_command and max_rate must be > 0 (inf disables a limit)")
        if not max_elapsed > 0:  # NaN fails this too
            raise ValueError(f"max_elapsed must be > 0 seconds (inf: no cap), got {max_elapsed!r}")
        self.max_elapsed = float(max_elapsed)
        self._lowest = -self.max_command
        self._unlimited = np.isinf(self.max_rate)
        self._rate = np.where(self._unlimited, 0.0, self.max_rate)
        self.previous = np.zeros(n)
        self.previous_time: float | None = None

    @property
    def size(self) -> int:
        """Number of command elements."""
        return int(self.scale.shape[0])

    def with_limits(self, max_command, max_rate) -> CommandLimiter:
        """A limiter with new limits (same scale) that goes on from this one: the previous command and its time
        carry over for the rate limit, the command clipped to the new ``±max_command``, so a lowered maximum
        holds from the next command on (the rate limit would otherwise ramp down from above it for
        ``excess / max_rate`` seconds)."""
        limiter = CommandLimiter(self.scale, max_command, max_rate, self.max_elapsed)
        limiter.previous = np.minimum(np.maximum(self.previous, limiter._lowest), limiter.max_command)
        limiter.previous_time = self.previous_time
        return limiter

    def __call__(self, action, now: float) -> np.ndarray:
        """The command for ``action`` at time ``now`` (s): scaled, clipped, rate-limited since the previous call."""
        # minimum(maximum()) is np.clip without its wrappers (this runs on every update of the node)
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.scale.shape:  # (1,) would broadcast over every element silently
            raise ValueError(f"action must have shape {self.scale.shape}, got {action.shape}")
        if not np.isfinite(action).all():  # NaN would pass every clip and stay the previous command for good
            raise ValueError(f"action must be finite, got {action.tolist()}")
        if not math.isfinite(now):  # the rate limit of a NaN elapsed time is NaN: a NaN command
            raise ValueError(f"now must be a finite time in seconds, got {now!r}")
        scaled = action * self.scale
        target = np.minimum(np.maximum(scaled, self._lowest), self.max_command)
        if self.previous_time is not None:
            elapsed = min(max(now - self.previous_time, 0.0), self.max_elapsed)
            step = self._rate * elapsed  # the finite rates; an infinite one (inf * 0 would be NaN) is no limit
            step[self._unlimited] = np.inf
            target = np.minimum(np.maximum(target, self.previous - step), self.previous + step)
        self.previous, self.previous_time = target, now
        return target.copy()

    def stop(self, now: float) -> np.ndarray:
        """The zero command, recorded as the previous one so the next command ramps up from standstill."""
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite time in seconds, got {now!r}")
        self.previous, self.previous_time = np.zeros(self.size), now
        return self.previous.copy()
