"""Discrete-time baselines behind the same core interface, for honest comparisons with CfC/LTC.

LSTM and GRU see the elapsed time as one extra input feature (``[x, dt]``); they have no notion of
continuous time otherwise. ``FrameStackMLP`` is a feed-forward network over the last ``frames`` inputs
(each with its dt): its state *is* the frame stack, so it has a fixed, short memory.
"""

from __future__ import annotations

import torch
from torch import nn

from .activations import activation
from .core import RecurrentCore, register_core, size_arg


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
        h, c = self.lstm(
            torch.cat([p, dt[:, None]], dim=1), (state[:, : self.hidden_size], state[:, self.hidden_size :])
        )
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
        return self.gru(torch.cat([p, dt[:, None]], dim=1), state)


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
