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

from . import native
from .core import RecurrentCore, register_core
from .ltc_sequence import LTCSequence
from .solvers import SemiImplicit, Solver, make_solver
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


class _LTCODE:
    """What every solver asks of the LTC ODE ``C dv/dt = b - a v``, given ``ab0`` and ``synapse_sums(v)``."""

    def conductances(self, v):
        a, b = self.ab0 + self.synapse_sums(v)
        return a, b

    def derivative(self, v):
        a, b = self.conductances(v)
        return (b - a * v) / self.cm


class LTCDynamics(_LTCODE):
    """The LTC ODE for one step: recurrent synapses + this step's sensory/leak terms, on torch tensors.

    ``ab0`` stacks the state-independent parts ``[a0, b0]`` (leak + sensory synapses) and
    ``synapse_sums(v)`` the recurrent ones ``[sum g, sum g E]``, both (2, B, N). ``a`` carries an extra
    ``epsilon`` leak conductance: in the semi-implicit step it is exactly ncps's ``denominator + epsilon``;
    for the other solvers it is a negligible leak that keeps ``a > 0``.
    """

    def __init__(self, ctx: dict, sensory: torch.Tensor, epsilon: float):
        sensory_num, sensory_den = sensory.chunk(2, dim=1)
        self.ctx, self.cm = ctx, ctx["cm"]
        self.ab0 = torch.stack([(ctx["gleak"] + epsilon) + sensory_den, ctx["gleak_vleak"] + sensory_num])
        self.expm1, self.addcmul = torch.expm1, torch.addcmul

    def synapse_sums(self, v):
        c = self.ctx
        act = torch.sigmoid(torch.addcmul(c["neg_sigma_mu"], v.unsqueeze(2), c["sigma"]))  # (B, pre, post)
        return (act.unsqueeze(0) * c["w_stack"]).sum(2)  # (2, B, post)


class NumpyLTCDynamics(_LTCODE):
    """Same ODE on numpy arrays for the no-grad streaming kernel: ``sigmoid(z) = (1 + tanh(z/2)) / 2`` with
    the halves folded into the weights and constants; arrays are laid out (post, pre) so both synapse sums
    are one ``vecdot`` over contiguous memory."""

    def __init__(self, kp: dict, ab0):
        self.kp, self.cm, self.ab0 = kp, kp["cm"], ab0
        self.expm1 = np.expm1

    @staticmethod
    def addcmul(x, y, z, value=1.0):
        if value == 1.0:
            return x + y * z
        return x - y * z if value == -1.0 else x + value * y * z

    def synapse_sums(self, v):
        kp = self.kp
        z = np.multiply(v[:, None, :], kp["half_sigma_t"])  # (B, post, pre)
        np.subtract(z, kp["half_sigma_mu_t"], out=z)
        np.tanh(z, out=z)
        return np.vecdot(z, kp["half_w_stack_t"])  # (2, B, post); the constant halves live in ab0


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
        self.register_buffer(
            "sensory_sparsity_mask", torch.tensor(np.abs(wiring.sensory_adjacency), dtype=torch.float32)
        )
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
        w_erev = w * self.erev
        return {
            "w": w,
            "w_erev": w_erev,
            "w_stack": torch.stack([w, w_erev]).unsqueeze(1),  # (2, 1, pre, post)
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
        """Sensory synapse sums ``[sum w E, sum w]`` (..., 2 * units) for every step at once.

        Rows are processed in chunks of about 64k synapse activations so the (rows, inputs, units)
        temporaries stay in cache (one pass over a whole 64-step batch would stream tens of MB)."""
        lead, x = x.shape[:-1], self.map_inputs(x).reshape(-1, self.input_size)
        neg_shift = -(self.sensory_sigma * self.sensory_mu)
        rows = max(1, 65536 // (self.input_size * self.state_size))
        parts = []
        for chunk in (x,) if x.shape[0] <= rows else x.split(rows):  # no Split op in traced single-step graphs
            act = torch.addcmul(neg_shift, chunk.unsqueeze(-1), self.sensory_sigma).sigmoid_()  # (rows, in, units)
            parts.append(torch.cat([(act * ctx["sensory_w_erev"]).sum(1), (act * ctx["sensory_w"]).sum(1)], dim=-1))
        out = parts[0] if len(parts) == 1 else torch.cat(parts)
        return out.reshape(*lead, 2 * self.state_size)

    def step_prepared(self, p, state, dt, ctx):
        return self.solver.solve(LTCDynamics(ctx, p, self.epsilon), state, dt[:, None])

    def fused_sequence(self, x, state, dt, ctx, keep):
        """The default ``semi_implicit`` solver runs as one fused autograd node (``LTCSequence``)."""
        if type(self.solver) is not SemiImplicit:
            return None
        sensory = self.prepare_inputs(x, ctx)
        need_grad = torch.is_grad_enabled() and (
            any(p.requires_grad for p in self.parameters())
            or sensory.requires_grad
            or state.requires_grad
            or dt.requires_grad
        )
        states = LTCSequence.apply(
            (self.solver.substeps, need_grad),
            sensory,
            state,
            dt,
            keep,
            ctx["sigma"],
            ctx["neg_sigma_mu"],
            ctx["w"],
            ctx["w_erev"],
            ctx["cm"],
            ctx["gleak"] + self.epsilon,
            ctx["gleak_vleak"],
        )
        return states.transpose(0, 1)

    def output(self, state):
        out = state[..., : self.output_size]
        if self.output_w is not None:
            out = out * self.output_w
        if self.output_b is not None:
            out = out + self.output_b
        return out

    # ---- no-grad streaming kernels (compiled, else numpy) ----------------------------------------------
    def _numpy_kernel(self):
        compiled = self._compiled_step_kernel()
        if compiled is not None:
            return compiled
        if not self.solver.supports_numpy:
            return None
        ctx = self.step_context()
        f = self._np
        kp = {
            "cm": f(ctx["cm"]),
            "half_sigma_t": f(0.5 * ctx["sigma"].t()),
            "half_sigma_mu_t": f(-0.5 * ctx["neg_sigma_mu"].t()),
            "half_w_stack_t": f(0.5 * torch.stack([ctx["w"].t(), ctx["w_erev"].t()])[:, None]),
        }
        # constant halves of the sigmoids (recurrent and sensory), the leak and epsilon, added once per step
        ab_const = f(
            torch.stack(
                [
                    ctx["gleak"] + self.epsilon + 0.5 * (ctx["w"].sum(0) + ctx["sensory_w"].sum(0)),
                    ctx["gleak_vleak"] + 0.5 * (ctx["w_erev"].sum(0) + ctx["sensory_w_erev"].sum(0)),
                ]
            )[:, None]
        )  # (2, 1, N)
        # input mapping folded into the sensory sigmoid: sigma (w x + b - mu) / 2 = (sigma w / 2) x - sigma (mu - b) / 2
        in_w = self.input_w if self.input_w is not None else torch.ones(self.input_size)
        in_b = self.input_b if self.input_b is not None else torch.zeros(self.input_size)
        s_scale = f((0.5 * self.sensory_sigma * in_w[:, None]).t())
        s_shift = f((0.5 * self.sensory_sigma * (self.sensory_mu - in_b[:, None])).t())
        s_stack = f(0.5 * torch.stack([ctx["sensory_w"].t(), ctx["sensory_w_erev"].t()])[:, None])
        solver = self.solver

        def kernel(x, state, dt):
            z = np.multiply(x[:, None, :], s_scale)  # (B, post, inputs)
            np.subtract(z, s_shift, out=z)
            np.tanh(z, out=z)
            ode = NumpyLTCDynamics(kp, np.vecdot(z, s_stack) + ab_const)
            return solver.solve(ode, state, dt)

        return kernel

    def _compiled_step_kernel(self):
        """The ``semi_implicit`` step in the compiled kernels (``native/ltc.inc``, input mapping and sensory
        synapses included), on tensors (see ``RecurrentCore.step``). None where they are unavailable."""
        kernels = native.load()
        if type(self.solver) is not SemiImplicit or kernels is None:
            return None
        torch_dtype = torch.float32 if self.__dict__["_kernel_dtype"] == np.float32 else torch.float64
        fn = kernels.function("ltc_step", torch_dtype)
        ctx, f = self.step_context(), self._np
        in_w = self.input_w if self.input_w is not None else torch.ones(self.input_size)
        in_b = self.input_b if self.input_b is not None else torch.zeros(self.input_size)
        constants = [
            torch.from_numpy(f(t))
            for t in (  # copies: the kernel never sees the weights themselves
                in_w,
                in_b,
                self.sensory_sigma,
                -(self.sensory_sigma * self.sensory_mu),
                ctx["sensory_w"],
                ctx["sensory_w_erev"],
                ctx["sigma"],
                ctx["neg_sigma_mu"],
                ctx["w"],
                ctx["w_erev"],
                ctx["cm"],
                ctx["gleak"] + self.epsilon,
                ctx["gleak_vleak"],
            )
        ]
        addresses = [t.data_ptr() for t in constants]
        n, inputs, substeps = self.state_size, self.input_size, self.solver.substeps
        scratch = native.StepScratch()

        def kernel(x, state, dt):
            x, state = x.contiguous(), state.contiguous()
            batch = x.shape[0]
            out = torch.empty(batch, n, dtype=torch_dtype)
            dt = np.ascontiguousarray(dt)  # kept referenced: the kernel reads its memory
            fn(
                batch,
                n,
                inputs,
                substeps,
                x.data_ptr(),
                state.data_ptr(),
                dt.ctypes.data,
                *addresses,
                out.data_ptr(),
                scratch.address(4 * batch * n + 8 * n + inputs, torch_dtype),
            )
            return out

        kernel.on_tensors = True
        kernel.constants = constants  # the addresses above point into these
        return kernel
