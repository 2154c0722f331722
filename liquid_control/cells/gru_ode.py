"""GRU-ODE (De Brouwer et al. 2019): the GRU's update written as an ODE and advanced by the measured dt.

    dh/dt = rate (1 - z) (g - h),   z = sigmoid(W_z x + U_z h + b_z),   r = sigmoid(W_r x + U_r h + b_r),
                                    g = tanh(W_g x + U_g (r h) + b_g)

``rate`` (per unit, learned, 1/s) sets the time scale: in the original the rate is 1 per time unit, which
with dt in seconds at 15 Hz would let the state move only ~7% per update. Integrated with ``unfolds``
exponential sub-steps: with ``z``, ``g`` held within a sub-step the linear ODE is solved exactly,
``h <- g + (h - g) exp(-rate (1 - z) dt / unfolds)``: stable for any dt, and dt = 0 keeps the state.
The input enters continuously (held between updates), as for the other continuous-time cores here.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.functional import softplus

from .core import RecurrentCore, positive_float_arg, register_core, size_arg


@register_core("gru_ode")
class GRUODECore(RecurrentCore):
    """GRU-ODE with a learned per-unit rate; state = output = ``h`` (B, hidden_size)."""

    def __init__(self, input_size: int, hidden_size: int, unfolds: int = 4, rate_init: float = 10.0):
        super().__init__()
        self.input_size, self.hidden_size = size_arg("input_size", input_size), size_arg("hidden_size", hidden_size)
        self.unfolds, self.rate_init = (
            size_arg("unfolds", unfolds),
            positive_float_arg("rate_init", rate_init, below=700.0),
        )
        self.state_size = self.output_size = self.hidden_size
        n = self.hidden_size
        self.input_map = nn.Linear(self.input_size, 3 * n)  # z, r, g
        self.recurrent_zr = nn.Linear(n, 2 * n, bias=False)
        self.recurrent_g = nn.Linear(n, n, bias=False)
        self.raw_rate = nn.Parameter(torch.full((n,), math.log(math.expm1(self.rate_init))))

    def config(self) -> dict:
        """Plain-data constructor arguments; ``build_core(config())`` rebuilds the core."""
        return {
            "type": "gru_ode",
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "unfolds": self.unfolds,
            "rate_init": self.rate_init,
        }

    def rate(self) -> torch.Tensor:
        """Rates in 1/s (hidden_size,)."""
        return softplus(self.raw_rate)

    def step_context(self):
        """The per-unit rates (1/s), computed once per sequence."""
        return self.rate()

    def prepare_inputs(self, x, ctx):
        """The input projections of z, r and g, for all steps at once."""
        return self.input_map(x)

    def step_prepared(self, p, state, dt, ctx):
        """``unfolds`` exponential sub-steps of ``dt / unfolds``: z, g held, the linear ODE solved exactly."""
        n = self.hidden_size
        pz, pr, pg = p[:, :n], p[:, n : 2 * n], p[:, 2 * n :]
        sub_dt = (dt[:, None] / self.unfolds) * ctx  # (B, n): rate * dt per sub-step
        h = state
        for _ in range(self.unfolds):
            zr = self.recurrent_zr(h)
            z = torch.sigmoid(pz + zr[:, :n])
            r = torch.sigmoid(pr + zr[:, n:])
            g = torch.tanh(pg + self.recurrent_g(r * h))
            h = h - (g - h) * torch.expm1(-(1.0 - z) * sub_dt)  # = g + (h - g) e^-x; exactly h at dt = 0
        return h
