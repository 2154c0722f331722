"""LTC: liquid time-constant cell (Hasani et al. 2021), numerically matching ncps's PyTorch ``LTCCell``.

Each neuron is a leaky membrane with capacitance ``cm``, leak conductance ``g_leak`` towards ``v_leak``,
and chemical synapses from other neurons and from the (affinely mapped) inputs::

    cm dv/dt = g_leak (v_leak - v) + sum_j w_j sigmoid(sigma_j (v_j - mu_j)) (E_j - v)

``w``, ``cm`` and ``g_leak`` are kept positive by a softplus (ncps's ``implicit_param_constraints=True``,
the default of its ``LTC``); reversal potentials ``E`` start at the wiring's polarities. The wiring's
synapse masks zero out absent synapses. Output: the motor neurons (ids ``0..output_size-1``), affinely
mapped.

The integration itself is delegated to a solver from ``solvers.py`` (default ``semi_implicit`` with 6
sub-steps = ncps's ``ode_unfolds=6``). Sensory synapses depend only on the input, so they are computed once
per step -- for a whole sequence in one batched op (``prepare_inputs``) -- not once per sub-step.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.functional import softplus

from .core import RecurrentCore, register_core
from .solvers import Solver, make_solver
from .wiring import FullyConnected, Wiring, as_wiring

MAPPINGS = ("affine", "linear", "none")

# ncps's initialisation ranges (uniform)
_INIT = {
    "gleak": (0.001, 1.0),
    "vleak": (-0.2, 0.2),
    "cm": (0.4, 0.6),
    "w": (0.001, 1.0),
    "sigma": (3.0, 8.0),
    "mu": (0.3, 0.8),
    "sensory_w": (0.001, 1.0),
    "sensory_sigma": (3.0, 8.0),
    "sensory_mu": (0.3, 0.8),
}


class LTCDynamics:
    """The LTC ODE for one step: recurrent synapses + this step's sensory/leak terms, on torch tensors."""

    def __init__(self, ctx: dict, sensory: torch.Tensor, epsilon: float):
        n = ctx["cm"].shape[0]
        self.ctx, self.cm, self.epsilon = ctx, ctx["cm"], epsilon
        self.a0 = ctx["gleak"] + sensory[:, n:]
        self.b0 = ctx["gleak_vleak"] + sensory[:, :n]
        self.expm1 = torch.expm1

    def conductances(self, v):
        c = self.ctx
        act = torch.sigmoid(torch.addcmul(c["neg_sigma_mu"], v.unsqueeze(2), c["sigma"]))  # (B, pre, post)
        return self.a0 + (act * c["w"]).sum(1), self.b0 + (act * c["w_erev"]).sum(1)

    def derivative(self, v):
        a, b = self.conductances(v)
        return (b - a * v) / self.cm


class NumpyLTCDynamics:
    """Same ODE on numpy arrays for the no-grad streaming kernel (sigmoid via tanh, both sums in one einsum)."""

    def __init__(self, kp: dict, sensory_num, sensory_den, epsilon: float):
        self.kp, self.cm, self.epsilon = kp, kp["cm"], epsilon
        self.a0 = kp["a0"] + sensory_den
        self.b0 = kp["b0"] + sensory_num
        self.expm1 = np.expm1

    def conductances(self, v):
        kp = self.kp
        half = np.tanh(v[:, :, None] * kp["half_sigma"] - kp["half_sigma_mu"])  # 2 sigmoid - 1
        den_num = np.einsum("bij,kij->kbj", half, kp["half_w_stack"])
        return self.a0 + den_num[0], self.b0 + den_num[1]

    def derivative(self, v):
        a, b = self.conductances(v)
        return (b - a * v) / self.cm


@register_core("ltc")
class LTCCell(RecurrentCore):
    """LTC core, fully connected (``units`` int) or wired (``Wiring`` or its dict); solver chosen by name."""

    def __init__(
        self,
        input_size: int,
        units: int | Wiring | dict,
        solver: str | dict | Solver = "semi_implicit",
        substeps: int | None = None,
        input_mapping: str = "affine",
        output_mapping: str = "affine",
        epsilon: float = 1e-8,
        **solver_options,
    ):
        super().__init__()
        self.input_size = int(input_size)
        wiring = as_wiring(units, self.input_size)
        if wiring is None:
            if int(units) < 1:
                raise ValueError(f"units must be >= 1, got {units}")
            wiring = FullyConnected(int(units)).build(self.input_size)
        self.wiring = wiring
        if isinstance(solver, str) and substeps is None and solver == "semi_implicit":
            substeps = 6  # ncps's ode_unfolds
        if substeps is not None:
            solver_options["substeps"] = substeps
        self.solver = make_solver(solver, **solver_options)
        for name, mapping in (("input_mapping", input_mapping), ("output_mapping", output_mapping)):
            if mapping not in MAPPINGS:
                raise ValueError(f"{name} must be one of {', '.join(MAPPINGS)}, got {mapping!r}")
        self.input_mapping, self.output_mapping, self.epsilon = input_mapping, output_mapping, float(epsilon)
        self.state_size, self.output_size = wiring.units, wiring.output_size
        n, i = self.state_size, self.input_size

        def init(name, shape):
            lo, hi = _INIT[name]
            return nn.Parameter(torch.rand(*shape) * (hi - lo) + lo)

        self.gleak, self.vleak, self.cm = init("gleak", (n,)), init("vleak", (n,)), init("cm", (n,))
        self.sigma, self.mu, self.w = init("sigma", (n, n)), init("mu", (n, n)), init("w", (n, n))
        self.erev = nn.Parameter(torch.tensor(wiring.adjacency, dtype=torch.float32))
        self.sensory_sigma, self.sensory_mu = init("sensory_sigma", (i, n)), init("sensory_mu", (i, n))
        self.sensory_w = init("sensory_w", (i, n))
        self.sensory_erev = nn.Parameter(torch.tensor(wiring.sensory_adjacency, dtype=torch.float32))
        self.register_buffer("sparsity_mask", torch.tensor(np.abs(wiring.adjacency), dtype=torch.float32))
        self.register_buffer("sensory_sparsity_mask", torch.tensor(np.abs(wiring.sensory_adjacency), dtype=torch.float32))
        self.input_w = nn.Parameter(torch.ones(i)) if input_mapping != "none" else None
        self.input_b = nn.Parameter(torch.zeros(i)) if input_mapping == "affine" else None
        self.output_w = nn.Parameter(torch.ones(self.output_size)) if output_mapping != "none" else None
        self.output_b = nn.Parameter(torch.zeros(self.output_size)) if output_mapping == "affine" else None

    def config(self) -> dict:
        return {
            "type": "ltc",
            "input_size": self.input_size,
            "units": self.wiring.to_dict(),
            "solver": self.solver.config(),
            "input_mapping": self.input_mapping,
            "output_mapping": self.output_mapping,
            "epsilon": self.epsilon,
        }

    # ---- hooks ---------------------------------------------------------------------------------------
    def step_context(self) -> dict:
        w = softplus(self.w) * self.sparsity_mask
        sensory_w = softplus(self.sensory_w) * self.sensory_sparsity_mask
        gleak = softplus(self.gleak)
        return {
            "w": w,
            "w_erev": w * self.erev,
            "sigma": self.sigma,
            "neg_sigma_mu": -(self.sigma * self.mu),
            "sensory_w": sensory_w,
            "sensory_w_erev": sensory_w * self.sensory_erev,
            "cm": softplus(self.cm),
            "gleak": gleak,
            "gleak_vleak": gleak * self.vleak,
        }

    def map_inputs(self, x):
        if self.input_w is not None:
            x = x * self.input_w
        if self.input_b is not None:
            x = x + self.input_b
        return x

    def prepare_inputs(self, x, ctx):
        """Sensory synapse sums ``[sum w E, sum w]`` (..., 2 * units) for every step at once."""
        x = self.map_inputs(x)
        act = torch.sigmoid((x.unsqueeze(-1) - self.sensory_mu) * self.sensory_sigma)  # (..., inputs, units)
        return torch.cat([(act * ctx["sensory_w_erev"]).sum(-2), (act * ctx["sensory_w"]).sum(-2)], dim=-1)

    def step_prepared(self, p, state, dt, ctx):
        return self.solver.solve(LTCDynamics(ctx, p, self.epsilon), state, dt[:, None])

    def output(self, state):
        out = state[..., : self.output_size]
        if self.output_w is not None:
            out = out * self.output_w
        if self.output_b is not None:
            out = out + self.output_b
        return out

    # ---- numpy kernel --------------------------------------------------------------------------------
    def _numpy_kernel(self):
        if not self.solver.supports_numpy:
            return None
        ctx = self.step_context()
        f = self._np
        # sigmoid(z) = (1 + tanh(z / 2)) / 2: the 1/2 goes into sigma, the constant half into a0/b0
        kp = {
            "cm": f(ctx["cm"]),
            "half_sigma": f(0.5 * ctx["sigma"]),
            "half_sigma_mu": f(-0.5 * ctx["neg_sigma_mu"]),
            "half_w_stack": f(0.5 * torch.stack([ctx["w"], ctx["w_erev"]])),
            "a0": f(ctx["gleak"] + 0.5 * ctx["w"].sum(0)),
            "b0": f(ctx["gleak_vleak"] + 0.5 * ctx["w_erev"].sum(0)),
        }
        s_half_sigma = f(0.5 * self.sensory_sigma)
        s_half_sigma_mu = f(0.5 * self.sensory_sigma * self.sensory_mu)
        s_stack = f(0.5 * torch.stack([ctx["sensory_w"], ctx["sensory_w_erev"]]))
        s_const = f(0.5 * torch.stack([ctx["sensory_w"].sum(0), ctx["sensory_w_erev"].sum(0)]))
        in_w = None if self.input_w is None else f(self.input_w)
        in_b = None if self.input_b is None else f(self.input_b)
        solver, eps = self.solver, self.epsilon

        def kernel(x, state, dt):
            if in_w is not None:
                x = x * in_w
            if in_b is not None:
                x = x + in_b
            half = np.tanh(x[:, :, None] * s_half_sigma - s_half_sigma_mu)
            den_num = np.einsum("bij,kij->kbj", half, s_stack)
            ode = NumpyLTCDynamics(kp, den_num[1] + s_const[1], den_num[0] + s_const[0], eps)
            return solver.solve(ode, state, dt)

        return kernel
