"""``builtin_interfaces/Time`` <-> seconds and nanoseconds: one rule for the node (live) and the bags (offline).

``policy_node`` integrates the dt between two ``header.stamp`` values and training from a bag must take the same
dt to the last bit, so both read stamps here. Works on rclpy's and rosbags' ``Time`` alike (``sec``, ``nanosec``).
"""

from __future__ import annotations

import math

NANOSECONDS_PER_SECOND = 1_000_000_000


def invalid(stamp) -> str:
    """Why a ``builtin_interfaces/Time`` is none (its ``nanosec`` is 10^9 or more), or "" when it is one."""
    if stamp.nanosec >= NANOSECONDS_PER_SECOND:
        return f"nanosec {stamp.nanosec} is not below 10^9 (builtin_interfaces/Time)"
    return ""


def seconds(stamp) -> float:
    """A ``builtin_interfaces/Time`` in seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def nanoseconds(stamp) -> int:
    """A ``builtin_interfaces/Time`` (or an int of nanoseconds, passed through) in nanoseconds."""
    if isinstance(stamp, int):
        return stamp
    return int(stamp.sec) * NANOSECONDS_PER_SECOND + int(stamp.nanosec)


def sec_nanosec(time_s: float) -> tuple[int, int]:
    """``(sec, nanosec)`` of a time in seconds, rounded to the nanosecond; a fraction that rounds up to a whole
    second stays at 999,999,999 ns, so ``nanosec`` is always valid for ``Time``."""
    sec = int(math.floor(time_s))
    return sec, min(int(round((time_s - sec) * 1e9)), NANOSECONDS_PER_SECOND - 1)


def split_nanoseconds(ns: int) -> tuple[int, int]:
    """``(sec, nanosec)`` of a time in nanoseconds (a bag's log time)."""
    return ns // NANOSECONDS_PER_SECOND, ns % NANOSECONDS_PER_SECOND
