"""Privileged experts: they read the true state of the world, for demonstrations and DAgger labels."""

from __future__ import annotations

import functools

import numpy as np

# Rover: pure pursuit towards the target, bending the heading around obstacles within a lookahead.
_CANDIDATES = np.deg2rad(np.linspace(-100.0, 100.0, 41))  # headings tried, relative to the target bearing
_LOOKAHEAD = 2.5  # m
SAFETY_MARGIN = 0.22  # m kept beyond the rover's radius from every obstacle (the training expert's)


def checked_margin(margin) -> float:
    """The expert's clearance beyond the rover's radius (m) as a float; ``None`` is the training expert's, a
    negative or non-finite value is refused (the one check, at the callers' boundary)."""
    if margin is None:
        return SAFETY_MARGIN
    if not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"the expert's margin must be a finite number >= 0 m, got {margin}")
    return float(margin)


def _wrap(angle):
    return (angle + np.pi) % (2 * np.pi) - np.pi


def rover_expert(position, yaw, target, obstacles, rover_radius, margin=SAFETY_MARGIN, max_angular=1.5) -> np.ndarray:
    """Normalized [linear, angular] action from the true pose, target and obstacle circles (x, y, r).

    Chooses the heading closest to the target bearing whose ray (up to the lookahead, or the target if
    nearer) keeps ``rover_radius + margin`` (m) from every obstacle, then turns towards it proportionally
    and drives slower the more it has to turn.
    """
    to_target = np.asarray(target, float) - np.asarray(position, float)
    distance = float(np.hypot(*to_target))
    bearing = float(np.arctan2(to_target[1], to_target[0]))
    headings = bearing + _CANDIDATES
    cost = np.abs(_CANDIDATES) + 0.3 * np.abs(_wrap(headings - yaw))
    if len(obstacles):
        rel = np.asarray(obstacles, float)[:, :2] - position  # (n, 2)
        radius = np.asarray(obstacles, float)[:, 2] + (rover_radius + margin)  # summed first: the old constant's bits
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


# Balancer: LQR on the linearized wheeled inverted pendulum, yaw by a proportional loop on the yaw rate.
def _expm(M: np.ndarray) -> np.ndarray:
    """Matrix exponential (scaling and squaring of a Taylor series); enough for small, well-scaled systems."""
    squarings = max(0, int(np.ceil(np.log2(max(np.abs(M).sum(axis=1).max(), 1e-12)))) + 1)
    A = M / 2.0**squarings
    result, term = np.eye(len(M)), np.eye(len(M))
    for k in range(1, 20):
        term = term @ A / k
        result = result + term
    for _ in range(squarings):
        result = result @ result
    return result


def discretize(A: np.ndarray, B: np.ndarray, dt: float):
    """Zero-order-hold discretization of x' = A x + B u."""
    n, m = B.shape
    M = np.zeros((n + m, n + m))
    M[:n, :n], M[:n, n:] = A, B
    E = _expm(M * dt)
    return E[:n, :n], E[:n, n:]


def dlqr(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray, iterations: int = 10000, tol: float = 1e-10):
    """Gain K of u = -K x minimizing sum x'Qx + u'Ru, by iterating the discrete Riccati equation."""
    P = Q.copy()
    for _ in range(iterations):
        BtP = B.T @ P
        K = np.linalg.solve(R + BtP @ B, BtP @ A)
        P_next = Q + A.T @ P @ (A - B @ K)
        P_next = 0.5 * (P_next + P_next.T)
        if np.max(np.abs(P_next - P)) < tol * max(1.0, np.max(np.abs(P))):
            P = P_next
            break
        P = P_next
    else:
        raise ValueError("the discrete Riccati iteration did not converge (is the system stabilizable?)")
    BtP = B.T @ P
    return np.linalg.solve(R + BtP @ B, BtP @ A)


def wheeled_pendulum(plant: dict):
    """Continuous linear model around upright of state [x, pitch, x', pitch'] with input total wheel torque.

    Body (mass M, centre of mass l above the axle, pitch inertia I) on two wheels (mass m, axial inertia J,
    radius r); the motor torque tau drives the wheels and reacts on the body:
    (M + 2m + 2J/r^2) x'' + M l pitch'' = tau / r;  M l x'' + (I + M l^2) pitch'' - M g l pitch = -tau.
    """
    M, l, I = plant["body_mass"], plant["com_height"], plant["body_pitch_inertia"]
    m, J, r, g = plant["wheel_mass"], plant["wheel_inertia"], plant["wheel_radius"], plant["gravity"]
    mass = np.array([[M + 2 * m + 2 * J / r**2, M * l], [M * l, I + M * l**2]])
    stiffness = np.array([[0.0, 0.0], [0.0, M * g * l]])
    torque = np.array([[1.0 / r], [-1.0]])
    A = np.zeros((4, 4))
    A[:2, 2:] = np.eye(2)
    A[2:, :2] = np.linalg.solve(mass, stiffness)
    B = np.zeros((4, 1))
    B[2:] = np.linalg.solve(mass, torque)
    return A, B


@functools.lru_cache(maxsize=8)
def _balancer_gain(plant_items: tuple, control_period: float) -> np.ndarray:
    """The LQR gain of a plant (read-only): the Riccati iteration costs ~0.3 s and every world of a process
    designs its expert on the same nominal plant, so it runs once per plant and period."""
    A, B = discretize(*wheeled_pendulum(dict(plant_items)), control_period)
    Q = np.diag([5.0, 20.0, 20.0, 0.5])  # position error, pitch, velocity error, pitch rate
    R = np.array([[1.0]])
    gain = dlqr(A, B, Q, R)[0]
    gain.flags.writeable = False
    return gain


class BalancerExpert:
    """LQR expert for LiquidBalance-v0, designed once on the nominal plant at the IMU control period."""

    def __init__(self, plant: dict, control_period: float, yaw_gain: float = 0.15):
        self.gain = _balancer_gain(tuple(sorted(plant.items())), float(control_period))
        self.max_torque = plant["max_torque"]
        self.yaw_gain = yaw_gain

    def __call__(self, state: dict, command) -> np.ndarray:
        """Wheel torques as fractions of max torque, in [-1, 1]: LQR on the tracking error plus a yaw-rate term."""
        error = np.array([state["position_error"], state["pitch"], state["velocity"] - command[0], state["pitch_rate"]])
        total = -float(self.gain @ error)
        turn = self.yaw_gain * (command[1] - state["yaw_rate"])
        action = np.array([total / 2 - turn, total / 2 + turn]) / self.max_torque
        return np.clip(action, -1.0, 1.0).astype(np.float32)
