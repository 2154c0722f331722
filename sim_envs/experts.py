"""Privileged experts: they read the true state of the world, for demonstrations and DAgger labels."""
from __future__ import annotations

import numpy as np

# Rover: pure pursuit towards the target, bending the heading around obstacles within a lookahead.
_CANDIDATES = np.deg2rad(np.linspace(-100.0, 100.0, 41))  # headings tried, relative to the target bearing
_LOOKAHEAD = 2.5  # m
_CLEARANCE = 0.24 + 0.22  # rover radius + safety margin (m)


def _wrap(angle):
    return (angle + np.pi) % (2 * np.pi) - np.pi


def rover_expert(position, yaw, target, obstacles, max_angular=1.5) -> np.ndarray:
    """Normalized [linear, angular] action from the true pose, target and obstacle circles (x, y, r).

    Chooses the heading closest to the target bearing whose ray (up to the lookahead, or the target if
    nearer) keeps `_CLEARANCE` from every obstacle, then turns towards it proportionally and drives
    slower the more it has to turn.
    """
    to_target = np.asarray(target, float) - np.asarray(position, float)
    distance = float(np.hypot(*to_target))
    bearing = float(np.arctan2(to_target[1], to_target[0]))
    headings = bearing + _CANDIDATES
    cost = np.abs(_CANDIDATES) + 0.3 * np.abs(_wrap(headings - yaw))
    if len(obstacles):
        rel = np.asarray(obstacles, float)[:, :2] - position  # (n, 2)
        radius = np.asarray(obstacles, float)[:, 2] + _CLEARANCE
        u = np.stack([np.cos(headings), np.sin(headings)], axis=1)  # (k, 2)
        along = u @ rel.T  # (k, n)
        perpendicular = np.abs(u[:, 0:1] * rel[None, :, 1] - u[:, 1:2] * rel[None, :, 0])
        reach = min(_LOOKAHEAD, distance)
        blocked = (along > -0.1) & (along < reach + radius) & (perpendicular < radius)
        # Already inside a clearance circle: only headings pointing away from it are free.
        inside = np.hypot(rel[:, 0], rel[:, 1]) < radius
        blocked |= inside[None, :] & (along > 0)
        cost = cost + 10.0 * blocked.sum(axis=1)
    heading = headings[int(np.argmin(cost))]
    error = _wrap(heading - yaw)
    angular = np.clip(2.5 * error / max_angular, -1.0, 1.0)
    linear = np.clip(np.cos(error), 0.0, 1.0) ** 2 * np.clip(distance / 1.0, 0.3, 1.0)
    return np.array([linear, angular], dtype=np.float32)
