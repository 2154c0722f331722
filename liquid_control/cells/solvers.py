"""ODE solvers for the LTC cell, chosen by name (``make_solver("rk4", substeps=4)``).

The LTC ODE in conductance form, per neuron::

    cm * dv/dt = b(v) - a(v) * v,   a = g_leak + sum_j g_j(v),   b = g_leak * v_leak + sum_j g_j(v) * E_j

where ``g_j(v) = w_j * sigmoid(sigma_j * (v_pre_j - mu_j))`` are synaptic conductances (sensory ones included).
A solver only sees a *dynamics* object offering ``conductances(v) -> (a, b)`` (``a`` includes a tiny
``epsilon`` leak, ncps's guard against dividing by zero), their state-independent part ``ab0`` and
state-dependent part ``synapse_sums(v)`` stacked as (2, B, N), ``derivative(v)``, ``cm``, and the array ops
``expm1``/``addcmul``; it never knows about synapse parameters or wirings. The fixed-step solvers use only array
arithmetic, so they run unchanged on torch tensors (training) and numpy arrays (the no-grad streaming kernel).

Each solver advances by ``dt`` (shape (B, 1), per sample) in ``substeps`` equal sub-steps ``h = dt/substeps``:

- ``semi_implicit``: the LTC paper's fused step (ncps's solver; ``substeps`` = ncps's ``ode_unfolds``):
  ``v' = (cm/h v + b) / (cm/h + a)``, written as ``v + h (b - a v) / (cm + h a)`` so dt = 0 gives v.
- ``euler``, ``midpoint``, ``rk4``: explicit Runge-Kutta (stable only for h/tau below ~2-2.8).
- ``exponential``: hold a, b over the sub-step and solve the then-linear ODE exactly,
  ``v' = v_inf + (v - v_inf) exp(-a h / cm)``; unconditionally stable for any dt.
- ``dopri5``: adaptive Dormand-Prince 4(5) with per-sample step sizes, ``rtol``/``atol``, a cap on the
  number of attempted steps (``max_steps``, RuntimeError beyond it); ``substeps`` sets the first step guess.

A solver of your own: subclass :class:`Solver` (a ``name``, ``advance(dyn, v, h)``) and add the class to
:data:`SOLVERS` under its name (``SOLVERS[Heun.name] = Heun``), as torchdiffeq's registry: ``LTC(...,
solver="heun")`` then builds it, and a saved model loads back where the class is registered (the compiled
kernels cover the solvers above; the LTC runs yours on its torch path).
"""

from __future__ import annotations

import torch

from .wiring import int_arg


class SolverDivergedError(ValueError):
    """An explicit solver stepped past its stability limit (the dt given is too long for it): a ValueError, as
    the choice of solver, sub-steps or dt is what has to change."""


class Solver:
    """Fixed-step solver base: ``solve`` splits dt into ``substeps`` and calls ``advance`` on each."""

    name = "abstract"
    supports_numpy = True
    stable_for_any_dt = False  # explicit Runge-Kutta: the LTC cell checks its states for divergence

    def __init__(self, substeps: int = 1):
        try:
            self.substeps = int_arg("substeps", substeps, 1)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.name}: {exc}") from None

    def solve(self, ode, v, dt):
        """Advance ``v`` by ``dt`` (B, 1) in ``substeps`` equal calls of ``advance``."""
        h = dt / self.substeps if self.substeps > 1 else dt
        for _ in range(self.substeps):
            v = self.advance(ode, v, h)
        return v

    def advance(self, ode, v, h):
        """One sub-step of length ``h`` from ``v``; each fixed-step solver defines it."""
        raise NotImplementedError

    def config(self) -> dict:
        """Plain-data options; ``make_solver(config())`` rebuilds the solver."""
        return {"name": self.name, "substeps": self.substeps}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "name")
        return f"{self.name}({args})"


class SemiImplicit(Solver):
    """The LTC paper's fused semi-implicit step (ncps's solver); stable for any dt, dt = 0 keeps the state."""

    name = "semi_implicit"
    stable_for_any_dt = True

    def solve(self, ode, v, dt):
        """Advance ``v`` by ``dt`` in ``substeps`` fused steps, written as increments so dt = 0 gives exactly ``v``."""
        # the step as an increment v + (h b - h a v) / (cm + h a): exact for h = 0 and differentiable everywhere
        # (also in dt at dt = 0); the same formula as the sequence kernels (ltc_kernels.py, native/ltc.inc)
        h = dt / self.substeps if self.substeps > 1 else dt
        cm = ode.cm
        h_ab0 = h * ode.ab0
        for _ in range(self.substeps):
            h_a, h_b = ode.addcmul(h_ab0, h, ode.synapse_sums(v))
            v = v + ode.addcmul(h_b, h_a, v, value=-1.0) / (cm + h_a)
        return v


class Euler(Solver):
    """Explicit Euler: one derivative per sub-step (stable only for small h/tau)."""

    name = "euler"

    def advance(self, ode, v, h):
        """One explicit Euler sub-step."""
        return v + h * ode.derivative(v)


class Midpoint(Solver):
    """Explicit midpoint (second-order Runge-Kutta)."""

    name = "midpoint"

    def advance(self, ode, v, h):
        """One midpoint sub-step: the derivative at the half step."""
        return v + h * ode.derivative(v + 0.5 * h * ode.derivative(v))


class RK4(Solver):
    """Classic fourth-order Runge-Kutta."""

    name = "rk4"

    def advance(self, ode, v, h):
        """One RK4 sub-step (four derivatives)."""
        k1 = ode.derivative(v)
        k2 = ode.derivative(v + 0.5 * h * k1)
        k3 = ode.derivative(v + 0.5 * h * k2)
        k4 = ode.derivative(v + h * k3)
        return v + (h / 6.0) * (k1 + 2.0 * (k2 + k3) + k4)


class Exponential(Solver):
    """Exponential integrator: a, b held over a sub-step, the then-linear ODE solved exactly; stable for any dt."""

    name = "exponential"
    stable_for_any_dt = True

    def advance(self, ode, v, h):
        """One exponential sub-step towards ``b / a`` with rate ``a / cm`` (expm1: exact for small steps and h = 0)."""
        a, b = ode.conductances(v)
        # v' = v + (b/a - v) * (1 - exp(-a h / cm)); expm1 keeps it exact for small a h / cm and h = 0
        return v - (b / a - v) * ode.expm1(-(a / ode.cm) * h)


# Dormand-Prince 4(5) tableau (FSAL): nodes c, stage weights a, 5th-order weights b5, error weights b5 - b4.
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


class Dopri5(Solver):
    """Adaptive Dormand-Prince 4(5) with per-sample step sizes, error-controlled by ``rtol``/``atol``."""

    name = "dopri5"
    stable_for_any_dt = True  # adaptive: error control shrinks the steps (RuntimeError past max_steps)
    supports_numpy = False

    def __init__(self, substeps: int = 1, rtol: float = 1e-5, atol: float = 1e-6, max_steps: int = 1000):
        super().__init__(substeps)
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"dopri5: rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
        try:
            max_steps = int_arg("max_steps", max_steps, 1)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"dopri5: {exc}") from None
        self.rtol, self.atol, self.max_steps = float(rtol), float(atol), max_steps

    def config(self) -> dict:
        """Plain-data options, tolerances and step cap included; ``make_solver(config())`` rebuilds the solver."""
        return {**super().config(), "rtol": self.rtol, "atol": self.atol, "max_steps": self.max_steps}

    def solve(self, ode, v, dt):
        """Each sample integrates [0, dt_b] with its own step size; finished samples take zero steps."""
        t = torch.zeros_like(dt)
        h = dt / self.substeps
        k1 = ode.derivative(v)
        for _ in range(self.max_steps):
            remaining = dt - t
            if not bool((remaining > 0).any()):
                return v
            last = h >= remaining
            h = torch.where(last, remaining, h)
            ks = [k1]
            for row in _DP_A[1:]:
                ks.append(ode.derivative(v + h * sum(c * k for c, k in zip(row, ks) if c)))
            y5 = v + h * sum(c * k for c, k in zip(_DP_A[6], ks) if c)
            ks.append(ode.derivative(y5))
            err = h * sum(c * k for c, k in zip(_DP_E, ks) if c)
            # The step-size control is differentiated too, so gradients are exact for the computed solution.
            scale = self.atol + self.rtol * torch.maximum(v.abs(), y5.abs())
            err_sq = (err / scale).pow(2).mean(dim=1, keepdim=True)  # squared RMS error norm, per sample
            accept = (err_sq <= 1.0) & (remaining > 0)
            factor = (0.9 * err_sq.clamp_min(1e-20).pow(-0.1)).clamp(0.2, 10.0)
            v = torch.where(accept, y5, v)
            k1 = torch.where(accept, ks[-1], k1)
            t = torch.where(accept, torch.where(last, dt, t + h), t)
            h = h * factor
        if bool((dt - t > 0).any()):
            raise RuntimeError(
                f"dopri5 needed more than max_steps={self.max_steps} steps (rtol={self.rtol}, atol={self.atol}); "
                "raise max_steps or loosen the tolerances"
            )
        return v


SOLVERS: dict[str, type[Solver]] = {cls.name: cls for cls in (SemiImplicit, Euler, Midpoint, RK4, Exponential, Dopri5)}


def make_solver(spec: "str | dict | Solver", **options) -> Solver:
    """A solver from a name (plus options), a ``config()`` dict, or a solver instance (returned as is)."""
    if isinstance(spec, Solver):
        return spec
    if isinstance(spec, dict):
        options = {**{k: v for k, v in spec.items() if k != "name"}, **options}
        spec = spec.get("name")
    if spec not in SOLVERS:
        raise ValueError(
            f"unknown ODE solver {spec!r}; choose from {', '.join(SOLVERS)} (a solver of your own: add its class to "
            "liquid_control.cells.solvers.SOLVERS under its name)"
        )
    try:
        return SOLVERS[spec](**options)
    except TypeError as exc:
        raise ValueError(f"bad options for solver {spec!r}: {exc}") from exc
