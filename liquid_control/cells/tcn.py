"""Temporal convolution baseline: a causal, dilated 1-d convolution stack over the last updates.

The state is the window of the last ``frames`` inputs, each with its dt appended (``[x, dt]``, oldest first),
like ``FrameStackMLP``; the output is a stack of kernel-2 causal convolutions with dilations 1, 2, 4, ...
whose receptive field is exactly the window (``frames`` = 2**layers). So the network sees a fixed history of
``frames`` updates and no further: the feed-forward sequence model the liquid-network papers compare against.
"""

from __future__ import annotations

import torch
from torch import nn

from .core import RecurrentCore, register_core, size_arg


@register_core("tcn")
class TemporalConvCore(RecurrentCore):
    """Causal dilated convolutions over a window of ``frames`` updates ``[x, dt]``; output (…, hidden_size)."""

    def __init__(self, input_size: int, hidden_size: int = 32, frames: int = 16):
        super().__init__()
        frames = size_arg("frames", frames, 2)
        layers = frames.bit_length() - 1
        if frames != 2**layers:
            raise ValueError(f"TemporalConvCore needs frames = a power of two >= 2, got {frames}")
        self.input_size, self.hidden_size, self.frames = (
            size_arg("input_size", input_size),
            size_arg("hidden_size", hidden_size),
            frames,
        )
        self.frame_size = self.input_size + 1
        self.state_size, self.output_size = self.frames * self.frame_size, self.hidden_size
        channels = [self.frame_size] + [self.hidden_size] * layers
        self.convs = nn.ModuleList(
            nn.Conv1d(channels[i], channels[i + 1], kernel_size=2, dilation=2**i) for i in range(layers)
        )

    def config(self) -> dict:
        """Plain-data constructor arguments; ``build_core(config())`` rebuilds the core."""
        return {"type": "tcn", "input_size": self.input_size, "hidden_size": self.hidden_size, "frames": self.frames}

    def step_prepared(self, p, state, dt, ctx):
        """Drop the oldest frame of the window and append ``[p, dt]``."""
        return torch.cat([state[:, self.frame_size :], p, dt[:, None]], dim=1)

    def output(self, state):
        """The causal convolutions over the window, read at its newest frame."""
        lead = state.shape[:-1]
        z = state.reshape(-1, self.frames, self.frame_size).transpose(1, 2)  # (N, channels, frames)
        for conv in self.convs:  # each layer shortens the window by its dilation: frames -> 1
            z = torch.tanh(conv(z))
        return z[:, :, -1].reshape(*lead, self.hidden_size)
