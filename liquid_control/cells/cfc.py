"""CfC: closed-form continuous-time cell (Hasani et al. 2022), numerically matching ncps's PyTorch code.

One CfC block maps ``[x, h]`` through an optional backbone MLP to heads ``ff1, ff2, t_a, t_b`` and returns

- ``default``: ``h' = ff1 * (1 - s) + s * ff2`` with ``s = sigmoid(t_a * t + t_b)``, ``ff1/ff2 = tanh(.)``
- ``no_gate``: ``h' = ff1 + s * ff2``
- ``pure``:    ``h' = A - A * exp(-t * (|w_tau| + |ff1|)) * ff1`` (direct solution, one head, no tanh)

**Sign of the time term.** ncps's PyTorch code (and this module) uses ``+ t_a * t``; the CfC paper and
ncps's Keras code write ``- t_a * t``. The two are the same family (``t_a`` is a free linear head, so a
trained model just learns the opposite sign); we follow ncps/PyTorch, so ncps's CfC weights give ncps's outputs
here. They do not load with ``load_state_dict``: a block's four heads are one fused ``head_weight``/``head_bias``
(rows ff1, ff2, time_a, time_b; ``pure``: ff1 alone) where ncps has four ``Linear`` layers, so they are copied by
hand (``_copy_cfc_block`` in ``test/test_cells_parity.py``, which compares the outputs). ncps's LTC weights do load
unchanged: ``LTCCell.load_state_dict(ncps_model.rnn_cell.state_dict())`` for a core of the same wiring.

With a wiring (e.g. ``AutoNCP``) the cell is ncps's ``WiredCfCCell``: one backbone-free CfC block per wiring
layer (inter -> command -> motor), layer ``l`` fed by layer ``l-1``'s new state, ``ff1``/``ff2`` weights
masked by the wiring's synapses (the time heads stay dense, as in ncps). The state is the layers' states
concatenated in layer order; the output is the motor neurons.

This module holds the parameters and the stepwise reference graph (``CfCBlock.recur``: ncps's formulas); the
kernels that run it fast -- compiled, fused torch, numpy -- are in ``cfc_kernels.py``, chosen by
``kernels.py``. In the reference graph the four heads are one fused matrix (one matmul instead of four), the
input part of the first linear map is computed for a whole sequence in one matmul before the time loop
(``prepare_inputs``), masked weights are formed once per sequence (``step_context``). Dropout
(``backbone_dropout``) follows every backbone layer (ncps skips it after the first).
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch
from torch import nn

from . import activations
from .activations import activation
from .cfc_kernels import CompiledCfC, NumpyCfC, TorchCfC
from .core import RecurrentCore, register_core, size_arg, xavier_uniform_
from .wiring import Wiring, as_wiring

MODES = ("default", "no_gate", "pure")


def dropout_arg(value) -> float:
    """``backbone_dropout`` as a float in [0, 1): TypeError unless a number ("0.1" was taken as 0.1, True as 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"backbone_dropout must be a number, got {type(value).__name__} {value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"backbone_dropout must be in [0, 1), got {value}")
    return float(value)


def head_mask(input_mask: np.ndarray, hidden: int, n_heads: int, device=None) -> torch.Tensor:
    """(n_heads * hidden, inputs + hidden) mask of a wired block's fused heads: the (inputs, hidden) synapse mask
    plus dense recurrence inside the layer on ff1/ff2, the time heads dense."""
    block = torch.cat(
        [torch.as_tensor(input_mask, dtype=torch.float32, device=device), torch.ones(hidden, hidden, device=device)], 0
    ).t()
    mask = torch.ones(n_heads * hidden, block.shape[1], device=device)
    mask[: min(2, n_heads) * hidden] = block.repeat(min(2, n_heads), 1)
    return mask


class CfCBlock(nn.Module):
    """One CfC layer: ``[input, h] -> backbone -> fused heads -> closed-form update``."""

    def __init__(
        self,
        in_features: int,
        hidden: int,
        mode: str = "default",
        backbone_units: int = 128,
        backbone_layers: int = 1,
        backbone_dropout: float = 0.0,
        activation_name: str = "lecun_tanh",
        input_mask: np.ndarray | None = None,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown CfC mode {mode!r}; choose from {', '.join(MODES)}")
        if backbone_layers < 0 or (backbone_layers > 0 and backbone_units < 1):
            raise ValueError(f"invalid backbone: {backbone_layers} layers of {backbone_units} units")
        backbone_dropout = dropout_arg(backbone_dropout)
        self.in_features, self.hidden, self.mode = in_features, hidden, mode
        self.activation_name = activation_name
        self.act = activation(activation_name).torch_fn
        cat = in_features + hidden
        self.backbone = nn.ModuleList(
            nn.Linear(cat if i == 0 else backbone_units, backbone_units) for i in range(backbone_layers)
        )
        self.dropout = nn.Dropout(backbone_dropout) if backbone_dropout > 0 else None
        head_in = backbone_units if backbone_layers else cat
        self.n_heads = 1 if mode == "pure" else 4
        # rows: [ff1 | ff2 | time_a | time_b] (or only ff1 for "pure")
        self.head_weight = nn.Parameter(torch.empty(self.n_heads * hidden, head_in))
        self.head_bias = nn.Parameter(torch.empty(self.n_heads * hidden))
        if mode == "pure":
            self.w_tau = nn.Parameter(torch.zeros(hidden))
            self.A = nn.Parameter(torch.ones(hidden))
        if input_mask is not None:
            self.register_buffer("head_mask", head_mask(input_mask, hidden, self.n_heads))
        else:
            self.head_mask = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights (each head as its own matrix) and nn.Linear-style uniform head biases."""
        for layer in self.backbone:
            xavier_uniform_(layer.weight, layer.in_features, layer.out_features)
        fan_in = self.head_weight.shape[1]
        for k in range(self.n_heads):  # each head initialised like its own (hidden x fan_in) matrix
            xavier_uniform_(self.head_weight[k * self.hidden : (k + 1) * self.hidden], fan_in, self.hidden)
        with torch.no_grad():
            self.head_bias.uniform_(-(fan_in**-0.5), fan_in**-0.5)

    # ---- once per sequence ---------------------------------------------------------------------------
    def context(self) -> dict:
        """Weights formed once per sequence: the masked heads, the input and state parts of the first map, its bias."""
        heads = self.head_weight if self.head_mask is None else self.head_weight * self.head_mask
        if self.backbone:
            first_w, first_b = self.backbone[0].weight, self.backbone[0].bias
        else:
            first_w, first_b = heads, self.head_bias
        return {
            "heads": heads,
            "w_x": first_w[:, : self.in_features],
            "w_hT": first_w[:, self.in_features :].t(),
            "b": first_b,
        }

    def project_input(self, x: torch.Tensor, ctx: dict) -> torch.Tensor:
        """Input part of the first linear map (bias included), for any leading dims."""
        return nn.functional.linear(x, ctx["w_x"], ctx["b"])

    # ---- once per step -------------------------------------------------------------------------------
    def recur(self, px: torch.Tensor, h: torch.Tensor, ts: torch.Tensor, ctx: dict) -> torch.Tensor:
        """New hidden state from the projected input ``px``, the old state and ``ts`` (B, 1)."""
        z = torch.addmm(px, h, ctx["w_hT"])
        if self.backbone:
            z = self.act(z)
            if self.dropout is not None:
                z = self.dropout(z)
            for layer in self.backbone[1:]:
                z = self.act(layer(z))
                if self.dropout is not None:
                    z = self.dropout(z)
            z = nn.functional.linear(z, ctx["heads"], self.head_bias)
        H = self.hidden
        if self.mode == "pure":
            return self.A - self.A * torch.exp(-ts * (self.w_tau.abs() + z.abs())) * z
        ff, t_a, t_b = z.split([2 * H, H, H], dim=1)  # split, not slicing: one cheap backward node
        ff1, ff2 = torch.tanh(ff).chunk(2, dim=1)
        gate = torch.sigmoid(torch.addcmul(t_b, t_a, ts))
        if self.mode == "no_gate":
            return torch.addcmul(ff1, gate, ff2)
        return torch.lerp(ff1, ff2, gate)


@register_core("cfc")
class CfCCell(RecurrentCore):
    """CfC core, fully connected (with a backbone MLP) or wired (one block per wiring layer).

    ``units`` is a unit count or a ``Wiring`` (or its ``to_dict()``); ``state_size`` is the number of units,
    ``output_size`` the unit count (fully connected) or the wiring's motor neurons. Its kernels
    (``cfc_kernels.py``) run the blocks one after another, each over a whole sequence.
    """

    kernels = {"compiled": CompiledCfC, "torch": TorchCfC, "numpy": NumpyCfC}

    def __init__(
        self,
        input_size: int,
        units: int | Wiring | dict,
        mode: str = "default",
        backbone_units: int | None = None,
        backbone_layers: int | None = None,
        backbone_dropout: float | None = None,
        activation: str = "lecun_tanh",
    ):
        super().__init__()
        self.input_size = size_arg("input_size", input_size)
        self.mode = mode
        self.wiring = as_wiring(units, self.input_size)
        activations.activation(activation)  # an unknown name: ValueError naming the choices
        if activation != "lecun_tanh" and (self.wiring is not None or backbone_layers == 0):
            # only the backbone's layers have this activation (the heads' are tanh and sigmoid): without one it was
            # ignored silently (outputs the default's, "gelu" running the slower stepwise path for the same numbers).
            # A warning, not a refusal: a checkpoint saved with it must still load
            warnings.warn(
                f"activation={activation!r} has no effect on a CfC without a backbone "
                f"({'a wired CfC' if self.wiring is not None else 'backbone_layers=0'}): the activation is the "
                "backbone layers' only, so outputs are the default's (a checkpoint saved with it acts as it did); "
                "leave activation unset or give the CfC a backbone (backbone_layers >= 1, no wiring)",
                stacklevel=2,
            )
        if self.wiring is None:
            units = size_arg("units", units)
            self.backbone_units = 128 if backbone_units is None else size_arg("backbone_units", backbone_units, 0)
            self.backbone_layers = 1 if backbone_layers is None else size_arg("backbone_layers", backbone_layers, 0)
            self.backbone_dropout = 0.0 if backbone_dropout is None else dropout_arg(backbone_dropout)
            self.activation = activation
            self.state_size = self.output_size = int(units)
            self.blocks = nn.ModuleList(
                [
                    CfCBlock(
                        self.input_size,
                        self.state_size,
                        mode,
                        self.backbone_units,
                        self.backbone_layers,
                        self.backbone_dropout,
                        activation,
                    )
                ]
            )
            self._output_slice = slice(0, self.state_size)
        else:
            if any(v not in (None, 0) for v in (backbone_units, backbone_layers, backbone_dropout)):
                raise ValueError("a wired CfC has no backbone: leave backbone_units/layers/dropout unset")
            self.backbone_units, self.backbone_layers, self.backbone_dropout = 0, 0, 0.0
            self.activation = activation
            w = self.wiring
            self.state_size, self.output_size = w.units, w.output_size
            sizes = [len(layer) for layer in w.layers]
            self.blocks = nn.ModuleList(
                CfCBlock(
                    self.input_size if l == 0 else sizes[l - 1],
                    sizes[l],
                    mode,
                    0,
                    0,
                    0.0,
                    activation,
                    input_mask=w.layer_input_mask(l),
                )
                for l in range(w.num_layers)
            )
            # state layout = layers concatenated; the motor neurons (ids 0..output_size-1) must be contiguous
            order = [n for layer in w.layers for n in layer]
            start = order.index(0)
            if order[start : start + self.output_size] != list(range(self.output_size)):
                raise ValueError("wiring's motor neurons (ids 0..output_size-1) must be contiguous in one layer")
            self._output_slice = slice(start, start + self.output_size)
        self.layer_sizes = [b.hidden for b in self.blocks]

    def config(self) -> dict:
        """Plain-data constructor arguments (a wiring as its dict); ``build_core(config())`` rebuilds the core."""
        return {
            "type": "cfc",
            "input_size": self.input_size,
            "units": self.state_size if self.wiring is None else self.wiring.to_dict(),
            "mode": self.mode,
            "backbone_units": self.backbone_units if self.wiring is None else None,
            "backbone_layers": self.backbone_layers if self.wiring is None else None,
            "backbone_dropout": self.backbone_dropout if self.wiring is None else None,
            "activation": self.activation,
        }

    def wiring_masks(self) -> dict:
        """Each wired block's head mask (the wiring's synapses into its layer), on the CPU; none without a wiring."""
        if self.wiring is None:
            return {}
        return {
            f"blocks.{l}.head_mask": head_mask(self.wiring.layer_input_mask(l), b.hidden, b.n_heads, device="cpu")
            for l, b in enumerate(self.blocks)
        }

    def step_context(self):
        """Each block's ``context()`` (masked weights and first-map parts), formed once per sequence."""
        return [block.context() for block in self.blocks]

    def prepare_inputs(self, x, ctx):
        """The first block's input projection, for all steps at once."""
        return self.blocks[0].project_input(x, ctx[0])

    def step_prepared(self, p, state, dt, ctx):
        """One update of every block in layer order, each block fed the previous block's new state."""
        ts = dt[:, None]
        if len(self.blocks) == 1:
            return self.blocks[0].recur(p, state, ts, ctx[0])
        hs = torch.split(state, self.layer_sizes, dim=1)
        new = [self.blocks[0].recur(p, hs[0], ts, ctx[0])]
        for block, h, c in zip(self.blocks[1:], hs[1:], ctx[1:]):
            new.append(block.recur(block.project_input(new[-1], c), h, ts, c))
        return torch.cat(new, dim=1)

    def output(self, state):
        """The motor neurons' states (the whole state without a wiring)."""
        return state[..., self._output_slice]
