"""CT-RNN: the continuous-time RNN baseline of the liquid-network papers, advanced by the measured dt.

Each unit is a leaky integrator with its own learned time constant ``tau`` (seconds)::

    dh/dt = -h / tau + tanh(W_x x + W_h h + b)

Integrated with ``unfolds`` exponential-Euler sub-steps per update: within a sub-step of ``dt / unfolds``
the drive ``tanh(...)`` is held and the leak is solved exactly, ``h <- e h + (1 - e) tau drive`` with
``e = exp(-dt / (unfolds tau))``. Unlike explicit Euler this is stable for any dt (a 0.25x sensor rate
gives steps of ~0.27 s), and dt = 0 leaves the state unchanged. Unlike LTC, the time constant does not
depend on the input: the comparison isolates the liquid (input-dependent) time constant.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.functional import softplus

from .core import RecurrentCore, positive_float_arg, register_core, size_arg

TAU_MIN = 1e-3  # seconds: softplus(tau) + TAU_MIN keeps every time constant positive


@register_core("ctrnn")
class CTRNNCore(RecurrentCore):
    """Continuous-time RNN with learned per-unit time constants; state = output = ``h`` (B, units)."""

    def __init__(self, input_size: int, units: int, unfolds: int = 6, tau_init: float = 0.1):
        super().__init__()
        self.input_size, self.units, self.unfolds, self.tau_init = (
            size_arg("input_size", input_size),
            size_arg("units", units),
            size_arg("unfolds", unfolds),
            positive_float_arg("tau_init", tau_init, above=TAU_MIN, below=TAU_MIN + 700.0),
        )
        self.state_size = self.output_size = self.units
        self.input_map = nn.Linear(self.input_size, self.units)
        self.recurrent = nn.Linear(self.units, self.units, bias=False)
        nn.init.orthogonal_(self.recurrent.weight)
        # softplus(raw) + TAU_MIN = tau_init at the start
        self.raw_tau = nn.Parameter(torch.full((self.units,), math.log(math.expm1(self.tau_init - TAU_MIN))))

    def config(self) -> dict:
        """Plain-data constructor arguments; ``build_core(config())`` rebuilds the core."""
        return {
            "type": "ctrnn",
            "input_size": self.input_size,
            "units": self.units,
            "unfolds": self.unfolds,
            "tau_init": self.tau_init,
        }

    def tau(self) -> torch.Tensor:
        """Time constants in seconds (units,)."""
        return softplus(self.raw_tau) + TAU_MIN

    def step_context(self):
        """The time constants, computed once per sequence."""
        return self.tau()

    def prepare_inputs(self, x, ctx):
        """The input projection ``W_x x + b``, for all steps at once."""
        return self.input_map(x)

    def step_prepared(self, p, state, dt, ctx):
        """``unfolds`` exponential-Euler sub-steps of ``dt / unfolds``: the drive held, the leak solved exactly."""
        tau = ctx
        decay = torch.exp(-(dt[:, None] / self.unfolds) / tau)  # (B, units)
        h = state
        for _ in range(self.unfolds):
            drive = torch.tanh(p + self.recurrent(h))
            h = decay * h + (1.0 - decay) * tau * drive
        return h
