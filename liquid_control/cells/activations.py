"""The one activation table of the cells: each activation as a torch function and in the kernels' fused form.

The fused form writes an activation as ``act(u) = alpha * g(k * u) + beta`` with ``g`` from a small family
(``sigmoid``, ``relu``, ``silu``) that every kernel implements (C, torch, numpy): ``tanh(u) = 2 sigmoid(2u) - 1``
and LeCun's ``1.7159 tanh(0.666 u)`` are sigmoids in disguise. An activation without a fused form (``gelu``)
runs on the torch reference graph only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn


def lecun_tanh(x: torch.Tensor) -> torch.Tensor:
    """1.7159 * tanh(0.666 x), the LeCun-scaled tanh that ncps's CfC uses by default."""
    return 1.7159 * torch.tanh(0.666 * x)


@dataclass(frozen=True)
class Activation:
    """An activation: ``torch_fn`` for the reference graph; ``alpha * family(k * u) + beta`` for the kernels."""

    name: str
    torch_fn: Callable[[torch.Tensor], torch.Tensor]
    family: str | None  # None: no fused form
    k: float = 1.0
    alpha: float = 1.0
    beta: float = 0.0


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("lecun_tanh", lecun_tanh, "sigmoid", 2 * 0.666, 2 * 1.7159, -1.7159),
        Activation("tanh", torch.tanh, "sigmoid", 2.0, 2.0, -1.0),
        Activation("relu", torch.relu, "relu"),
        Activation("silu", nn.functional.silu, "silu"),
        Activation("gelu", nn.functional.gelu, None),
    )
}

# how the compiled kernels (native/cfc.inc) number the families
FAMILY_CODES = {"sigmoid": 0, "relu": 1, "silu": 2}

# The largest exponent the compiled kernels' exp takes (native/common.h clamps its input there): numpy's exp past it
# overflows to inf with "RuntimeWarning: overflow encountered in exp", for a sigmoid that only saturates. 0-d
# arrays of the dtype: a Python float costs the ufunc a conversion per call (~1 us more on a streaming step's arrays).
_EXP_MAX = {np.dtype(t): np.array(m, dtype=t) for t, m in ((np.float32, 88.0), (np.float64, 708.0))}


def np_sigmoid(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The numpy kernels' sigmoid ``1 / (1 + exp(-z))`` into ``out`` (a new array, or ``z`` itself for in place), as
    ``sigmoid_f32`` / ``sigmoid_f64`` in native/common.h: ``-z`` clamped where their exp clamps it, so a saturated
    sigmoid (an LTC's input of -20, a CfC's gap of 1000 s) gives their value without numpy's overflow warning."""
    out = np.negative(z, out=out)
    np.minimum(out, _EXP_MAX[out.dtype], out=out)
    np.exp(out, out=out)
    out += 1.0
    return np.reciprocal(out, out=out)


def activation(name: str) -> Activation:
    """The activation called ``name``; ValueError naming the choices otherwise."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]
