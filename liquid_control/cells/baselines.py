"""Discrete-time baselines behind the same core interface, for honest comparisons with CfC/LTC.

LSTM and GRU see the elapsed time as one extra input feature (``[x, dt]``); they have no notion of
continuous time otherwise. ``FrameStackMLP`` is a feed-forward network over the last ``frames`` inputs
(each with its dt): its state *is* the frame stack, so it has a fixed, short memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .activations import activation
from .core import RecurrentCore, register_core, size_arg
from .kernels import transformed


@register_core("lstm")
class LSTMCore(RecurrentCore):
    """LSTM with dt appended to the input; the state packs ``[h, c]`` side by side, output is ``h``."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = size_arg("input_size", input_size), size_arg("hidden_size", hidden_size)
        self.state_size, self.output_size = 2 * self.hidden_size, self.hidden_size
        self.lstm = nn.LSTMCell(self.input_size + 1, self.hidden_size)

    def config(self) -> dict:
        """Plain-data constructor arguments; ``build_core(config())`` rebuilds the core."""
        return {"type": "lstm", "input_size": self.input_size, "hidden_size": self.hidden_size}

    def step_prepared(self, p, state, dt, ctx):
        """One LSTM step on ``[p, dt]`` from the packed ``[h, c]``; returns the packed new state."""
        x, h, c = torch.cat([p, dt[:, None]], dim=1), state[:, : self.hidden_size], state[:, self.hidden_size :]
        h, c = _lstm_cell(self.lstm, x, h, c) if transformed() else self.lstm(x, (h, c))
        return torch.cat([h, c], dim=1)

    def output(self, state):
        """The ``h`` half of the packed state."""
        return state[..., : self.hidden_size]


@register_core("gru")
class GRUCore(RecurrentCore):
    """GRU with dt appended to the input; state and output are ``h``."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = size_arg("input_size", input_size), size_arg("hidden_size", hidden_size)
        self.state_size = self.output_size = self.hidden_size
        self.gru = nn.GRUCell(self.input_size + 1, self.hidden_size)

    def config(self) -> dict:
        """Plain-data constructor arguments; ``build_core(config())`` rebuilds the core."""
        return {"type": "gru", "input_size": self.input_size, "hidden_size": self.hidden_size}

    def step_prepared(self, p, state, dt, ctx):
        """One GRU step on ``[p, dt]``."""
        x = torch.cat([p, dt[:, None]], dim=1)
        return _gru_cell(self.gru, x, state) if transformed() else self.gru(x, state)


def _lstm_cell(cell: nn.LSTMCell, x, h, c):
    """``nn.LSTMCell``'s step in plain ops, for ``torch.func`` transforms: ``aten::lstm_cell`` has no vmap batching
    rule (vmap failed: "Batching rule not implemented for aten::lstm_cell")."""
    i, f, g, o = (F.linear(x, cell.weight_ih, cell.bias_ih) + F.linear(h, cell.weight_hh, cell.bias_hh)).chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _gru_cell(cell: nn.GRUCell, x, h):
    """``nn.GRUCell``'s step in plain ops, for ``torch.func`` transforms: vmap of ``aten::gru_cell`` fell back to a
    loop over the batch, with torch's performance warning."""
    x_r, x_z, x_n = F.linear(x, cell.weight_ih, cell.bias_ih).chunk(3, 1)
    h_r, h_z, h_n = F.linear(h, cell.weight_hh, cell.bias_hh).chunk(3, 1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h


@register_core("frame_stack_mlp")
class FrameStackMLP(RecurrentCore):
    """MLP over the last ``frames`` frames ``[x, dt]`` (oldest first); the state is that stack, flattened."""

    def __init__(
        self, input_size: int, hidden_size: int = 64, frames: int = 4, layers: int = 2, activation_name: str = "tanh"
    ):
        super().__init__()
        self.input_size, self.hidden_size = size_arg("input_size", input_size), size_arg("hidden_size", hidden_size)
        self.frames, self.layers = size_arg("frames", frames), size_arg("layers", layers)
        self.activation_name = activation_name
        self.frame_size = self.input_size + 1
        self.state_size, self.output_size = self.frames * self.frame_size, self.hidden_size
        self.act = activation(activation_name).torch_fn
        sizes = [self.state_size] + [self.hidden_size] * self.layers
        self.mlp = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def config(self) -> dict:
        """Plain-data constructor arguments; ``build_core(config())`` rebuilds the core."""
        return {
            "type": "frame_stack_mlp",
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "frames": self.frames,
            "layers": self.layers,
            "activation_name": self.activation_name,
        }

    def step_prepared(self, p, state, dt, ctx):
        """Drop the oldest frame and append ``[p, dt]``."""
        return torch.cat([state[:, self.frame_size :], p, dt[:, None]], dim=1)

    def output(self, state):
        """The MLP over the flattened frame stack."""
        z = state
        for layer in self.mlp:
            z = self.act(layer(z))
        return z
