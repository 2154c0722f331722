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
per step -- for a whole sequence in one batched op (``prepare_inputs``) -- not once per sub-step. This is the
stepwise reference graph; the kernels (compiled, fused torch, numpy) are in ``ltc_kernels.py``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import nn
from torch.nn.functional import softplus

from .activations import np_sigmoid
from .core import RecurrentCore, register_core, size_arg
from .kernels import unwrapped
from .ltc_kernels import CompiledLTC, NumpyLTC, TorchLTC
from .solvers import Solver, SolverDivergedError, make_solver
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
    """The LTC ODE ``C dv/dt = b - a v`` of one step, for the solvers, on torch tensors or numpy arrays.

    ``ab0`` stacks the state-independent parts ``[a0, b0]`` (leak + sensory synapses), (2, B, N);
    ``synapse_sums(v)`` the recurrent ones ``[sum g, sum g E]``, also (2, B, N). ``a`` carries an extra
    ``epsilon`` leak conductance: in the semi-implicit step it is exactly ncps's ``denominator + epsilon``;
    for the other solvers it is a negligible leak that keeps ``a > 0``. ``ctx`` holds ``sigma``,
    ``neg_sigma_mu`` (pre, post) and ``w_stack`` (2, 1, pre, post) for torch; their (post, pre) transposes for
    numpy (``ltc_kernels.NumpyLTC``), where each sum is then one ``vecdot`` over contiguous memory.
    """

    def __init__(self, ctx: dict, ab0, cm):
        self.ctx, self.ab0, self.cm = ctx, ab0, cm
        self.numpy = isinstance(ab0, np.ndarray)
        self.expm1 = np.expm1 if self.numpy else torch.expm1

    def addcmul(self, x, y, z, value=1.0):
        """``x + value * y * z`` (torch.addcmul's meaning, for either array type)."""
        if not self.numpy:
            return torch.addcmul(x, y, z, value=value)
        if value == 1.0:
            return x + y * z
        return x - y * z if value == -1.0 else x + value * y * z

    def synapse_sums(self, v):
        """Recurrent synapse sums ``[sum g, sum g E]`` at ``v``, (2, B, N)."""
        p = self.ctx
        if self.numpy:
            z = np.multiply(v[:, None, :], p["sigma"])  # (B, post, pre)
            z += p["neg_sigma_mu"]
            return np.vecdot(np_sigmoid(z, out=z), p["w_stack"])  # sigmoid, then [sum g, sum g E]
        act = torch.sigmoid(torch.addcmul(p["neg_sigma_mu"], v.unsqueeze(2), p["sigma"]))  # (B, pre, post)
        return (act.unsqueeze(0) * p["w_stack"]).sum(2)  # (2, B, post)

    def conductances(self, v):
        """``(a, b)`` at ``v``: the state-independent parts plus the recurrent synapse sums."""
        a, b = self.ab0 + self.synapse_sums(v)
        return a, b

    def derivative(self, v):
        """``dv/dt = (b - a v) / cm`` at ``v``."""
        a, b = self.conductances(v)
        return (b - a * v) / self.cm


@register_core("ltc")
class LTCCell(RecurrentCore):
    """LTC core, fully connected (``units`` int) or wired (``Wiring`` or its dict); solver chosen by name.

    Its kernels (``ltc_kernels.py``) run the ``semi_implicit`` solver (compiled, torch) and, for the no-grad
    step without the compiled library, every fixed-step solver in numpy."""

    kernels = {"compiled": CompiledLTC, "torch": TorchLTC, "numpy": NumpyLTC}

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
        self.input_size = size_arg("input_size", input_size)
        wiring = as_wiring(units, self.input_size)
        if wiring is None:
            wiring = FullyConnected(size_arg("units", units)).build(self.input_size)
        self.wiring = wiring
        if "ode_unfolds" in solver_options:  # ncps's name for the sub-steps
            if substeps is not None:
                raise TypeError("give the sub-steps once: substeps or ode_unfolds (its ncps name), not both")
            substeps = solver_options.pop("ode_unfolds")
        if isinstance(solver, str) and substeps is None and solver == "semi_implicit":
            substeps = 6  # ncps's ode_unfolds
        if substeps is not None:
            solver_options["substeps"] = substeps
        self.solver = make_solver(solver, **solver_options)
        for name, mapping in (("input_mapping", input_mapping), ("output_mapping", output_mapping)):
            if mapping not in MAPPINGS:
                raise ValueError(f"{name} must be one of {', '.join(MAPPINGS)}, got {mapping!r}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not 0.0 <= epsilon < float("inf"):
            # the leak added to the denominator: NaN made every output NaN, a negative one can cancel the leak
            raise ValueError(f"epsilon must be a finite number >= 0 (ncps's default 1e-8), got {epsilon!r}")
        self.input_mapping, self.output_mapping, self.epsilon = input_mapping, output_mapping, float(epsilon)
        self.state_size, self.output_size = wiring.units, wiring.output_size
        n, i = self.state_size, self.input_size

        def init(name, shape):
            lo, hi = _INIT[name]
            return nn.Parameter(torch.rand(*shape) * (hi - lo) + lo)

        self.gleak, self.vleak, self.cm = init("gleak", (n,)), init("vleak", (n,)), init("cm", (n,))
        self.sigma, self.mu, self.w = init("sigma", (n, n)), init("mu", (n, n)), init("w", (n, n))
        # in the default dtype, as the weights drawn above (float32 here beside float64 weights kept the kernels off)
        real = torch.get_default_dtype()
        self.erev = nn.Parameter(torch.tensor(wiring.adjacency, dtype=real))
        self.sensory_sigma, self.sensory_mu = init("sensory_sigma", (i, n)), init("sensory_mu", (i, n))
        self.sensory_w = init("sensory_w", (i, n))
        self.sensory_erev = nn.Parameter(torch.tensor(wiring.sensory_adjacency, dtype=real))
        for name, mask in self.wiring_masks().items():
            self.register_buffer(name, mask.to(torch.get_default_device(), real))
        self.input_w = nn.Parameter(torch.ones(i)) if input_mapping != "none" else None
        self.input_b = nn.Parameter(torch.zeros(i)) if input_mapping == "affine" else None
        self.output_w = nn.Parameter(torch.ones(self.output_size)) if output_mapping != "none" else None
        self.output_b = nn.Parameter(torch.zeros(self.output_size)) if output_mapping == "affine" else None

    def config(self) -> dict:
        """Plain-data constructor arguments (wiring and solver as dicts); ``build_core(config())`` rebuilds the core."""
        return {
            "type": "ltc",
            "input_size": self.input_size,
            "units": self.wiring.to_dict(),
            "solver": self.solver.config(),
            "input_mapping": self.input_mapping,
            "output_mapping": self.output_mapping,
            "epsilon": self.epsilon,
        }

    def wiring_masks(self) -> dict:
        """The synapse masks of the wiring (between neurons, from the inputs), on the CPU."""
        return {
            "sparsity_mask": torch.tensor(np.abs(self.wiring.adjacency), dtype=torch.float32, device="cpu"),
            "sensory_sparsity_mask": torch.tensor(
                np.abs(self.wiring.sensory_adjacency), dtype=torch.float32, device="cpu"
            ),
        }

    # ---- hooks ---------------------------------------------------------------------------------------
    def step_kernel_settings(self) -> tuple:
        """The solver object, its sub-steps and epsilon, which the step kernels fix when they are prepared."""
        return (self.solver, self.solver.substeps, self.epsilon)

    def step_context(self) -> dict:
        """Positive (softplus) weights, capacitances and leaks, masked by the wiring, formed once per sequence."""
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
        """The inputs after the input mapping (affine, linear or none)."""
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

    def dynamics(self, p, ctx) -> LTCDynamics:
        """The ODE of one step from its prepared sensory sums ``p`` (B, 2N) (what the solvers integrate)."""
        sensory_num, sensory_den = p.chunk(2, dim=1)
        ab0 = torch.stack([(ctx["gleak"] + self.epsilon) + sensory_den, ctx["gleak_vleak"] + sensory_num])
        return LTCDynamics(ctx, ab0, ctx["cm"])

    def step_prepared(self, p, state, dt, ctx):
        """Integrate the step's ODE over ``dt`` with the cell's solver."""
        return self.solver.solve(self.dynamics(p, ctx), state, dt[:, None])

    def output(self, state):
        """The motor neurons' states after the output mapping."""
        out = state[..., : self.output_size]
        if self.output_w is not None:
            out = out * self.output_w
        if self.output_b is not None:
            out = out + self.output_b
        return out

    # ---- explicit solvers past their stability limit --------------------------------------------------
    def advance(self, x, state, dt):
        """``RecurrentCore.advance``, then the divergence check of an explicit solver (``_check_bounded``); traced
        for an export, the same bound as graph operations (``_diverged_as_nan``)."""
        new = super().advance(x, state, dt)
        if not self.solver.stable_for_any_dt:
            if torch.jit.is_tracing():
                return self._diverged_as_nan(new, state)
            self._check_bounded(new, state, x, dt)
        return new

    def _reach(self) -> torch.Tensor:
        """The largest of the leak and reversal potentials (``R`` of ``_check_bounded``'s bound)."""
        reach = [unwrapped(self.vleak).abs().max(), unwrapped(self.erev).abs().max()]
        if self.sensory_erev.numel():
            reach.append(unwrapped(self.sensory_erev).abs().max())
        return torch.stack(reach).max()

    def _diverged_as_nan(self, new, start):
        """``new`` with each sample past ``_check_bounded``'s bound made NaN, as operations an ONNX export holds: the
        export traced no check, so the node on an exported euler/rk4 LTC drove on diverged states (|state| 2e3 after a
        0.9 s gap) where torch refused the step; a NaN state is refused by the runner as the step torch refused."""
        begun = start.abs().amax(dim=-1, keepdim=True) if start is not None else torch.zeros_like(new[..., :1])
        bounded = new.abs().amax(dim=-1, keepdim=True) <= begun + 10.0 * self._reach() + 1.0  # False for NaN too
        return torch.where(bounded, new, torch.full_like(new, float("nan")))

    def advance_sequence(self, x, dt, h0=None, mask=None, fused=True, readout=False):
        """``RecurrentCore.advance_sequence``, then the divergence check of an explicit solver."""
        out, h_n = super().advance_sequence(x, dt, h0, mask, fused=fused, readout=readout)
        if not self.solver.stable_for_any_dt and not torch.jit.is_tracing():
            self._check_bounded(h_n, h0, x, dt)
        return out, h_n

    def _check_bounded(self, state, start, x, dt) -> None:
        """SolverDivergedError where an explicit solver (euler, midpoint, rk4) has diverged, which otherwise went on
        silently as NaN or 1e30 states (dt = 1 s, the default where none is given, is past the limit of one rk4
        step for typical time constants).

        The ODE's exact solution moves towards the leak and reversal potentials (``R``: the largest of them) and
        never away from them, so ``|state| <= max(R, |start|)``; a stable explicit step may overshoot by ~2R. The
        bound ``|start| + 10 R + 1`` adds to the start rather than scaling it: a streaming step's start is the
        previous step's state, and a bound of 10x that let a solver growing less than 10x a step run on for
        hundreds of steps of huge states until they overflowed. Non-finite inputs, start or weights (a diverged
        optimizer's) are not the solver's doing: their NaN states go on as with the other solvers."""
        # under a torch.func transform, the tensors holding the values (its wrappers refuse float())
        state, start, x, dt = (None if t is None else unwrapped(t) for t in (state, start, x, dt))
        if state.is_meta:  # no values to check
            return
        with torch.no_grad():
            begun = float(start.detach().abs().max()) if start is not None and start.numel() else 0.0
            largest = float(state.detach().abs().max()) if state.numel() else 0.0
            if largest <= begun + 1.0:  # within the bound whatever the potentials (the usual step: no more work)
                return
            if largest <= begun + 10.0 * float(self._reach()) + 1.0:  # False for NaN too
                return
            given = [x, dt, *map(unwrapped, self.parameters())] + ([start] if start is not None else [])
            if not all(bool(torch.isfinite(t).all()) for t in given):
                return
        raise SolverDivergedError(
            f"LTC solver {self.solver.name!r} diverged: |state| reached "
            f"{f'{largest:.3g}' if math.isfinite(largest) else 'a non-finite value'}, beyond the start's "
            f"{begun:.3g} by more than 10x the leak and reversal potentials, which the exact solution moves "
            f"towards; an explicit solver is stable only for sub-steps below ~2 "
            f"time constants (largest dt here {float(dt.max()):.3g} s in {self.solver.substeps} sub-step(s)). "
            "Give smaller dt or more substeps, or solver='semi_implicit' or 'exponential' (stable for any dt)"
        )
