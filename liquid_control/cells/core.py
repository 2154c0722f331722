"""The recurrent-core contract shared by every cell (docs/ARCHITECTURE.md, "Cells").

A core advances one state tensor by a measured, per-sample time step. Subclasses implement these hooks so
the sequence loop can hoist work out of the time loop:

- ``step_context()``: parameter transforms that do not change during a sequence (masked weights,
  softplus'd conductances...), computed once per sequence;
- ``prepare_inputs(x, ctx)``: everything that depends only on the input, for all steps in one batched op;
- ``step_prepared(p, state, dt, ctx)``: the recurrent part of one step;
- optionally ``fused_sequence(...)``: a whole sequence as one autograd node (CfC, LTC semi-implicit).

``step(x, state, dt)`` (streaming) and ``forward_sequence(x, dt, h0, mask)`` (training) are the public
APIs built from those hooks. Cores that have a numpy kernel (``_numpy_kernel``) use it in ``step`` for small
no-grad CPU batches, where framework overhead dominates; the kernel is rebuilt whenever a parameter changes
(optimizer step, ``load_state_dict``).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .dt import sequence_dt, step_dt

# Largest batch for which step() under no_grad uses a numpy kernel instead of torch ops.
FAST_PATH_MAX_BATCH = 16

CORE_TYPES: dict[str, Callable[..., nn.Module]] = {}


def register_core(name: str):
    """Class decorator: make a core rebuildable from ``config()`` by ``build_core``."""

    def wrap(cls):
        cls.core_type = name
        CORE_TYPES[name] = cls
        return cls

    return wrap


def build_core(config: dict) -> nn.Module:
    """Rebuild a core (fresh weights) from the dict its ``config()`` returned."""
    if not isinstance(config, dict) or "type" not in config:
        raise ValueError(f"core config must be a dict with a 'type' key, got {config!r}")
    kind = config["type"]
    if kind not in CORE_TYPES:
        raise ValueError(f"unknown core type {kind!r}; known: {', '.join(sorted(CORE_TYPES))}")
    kwargs = {k: v for k, v in config.items() if k != "type"}
    try:
        return CORE_TYPES[kind].from_config(kwargs)
    except TypeError as exc:  # unknown or missing constructor arguments
        raise ValueError(f"bad config for core type {kind!r}: {exc}") from exc


class RecurrentCore(nn.Module):
    """Base class of every core: sizes, ``initial_state``, ``step``, ``output``, ``config``."""

    core_type = "abstract"
    input_size: int
    state_size: int
    output_size: int

    # ---- hooks for subclasses -------------------------------------------------------------------------
    def step_context(self) -> Any:
        return None

    def prepare_inputs(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        return x

    def step_prepared(self, p: torch.Tensor, state: torch.Tensor, dt: torch.Tensor, ctx: Any) -> torch.Tensor:
        raise NotImplementedError

    def fused_sequence(self, x, state, dt, ctx, keep):
        """Optional fused loop over a whole sequence: states (B, T, state_size), or None for the generic loop.

        ``x`` (B, T, input_size), ``state`` (B, state_size), ``dt`` (B, T), ``keep`` (B, T) bool or None.
        """
        return None

    def output(self, state: torch.Tensor) -> torch.Tensor:
        """Readout of a state (works on any leading dims)."""
        return state

    def config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, kwargs: dict):
        return cls(**kwargs)

    def _numpy_kernel(self):
        """Return a callable (x, state, dt) -> state on float numpy arrays, or None if there is none."""
        return None

    # ---- public API ---------------------------------------------------------------------------------
    def initial_state(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        ref = next(self.parameters(), None)
        device = device if device is not None else (ref.device if ref is not None else None)
        dtype = dtype if dtype is not None else (ref.dtype if ref is not None else torch.get_default_dtype())
        return torch.zeros(batch, self.state_size, device=device, dtype=dtype)

    def check_input(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__} expects {self.input_size} input features, got {x.shape[-1]}")

    def step(self, x: torch.Tensor, state: torch.Tensor | None, dt) -> torch.Tensor:
        """Advance ``state`` (B, state_size) by ``dt`` seconds per sample with input ``x`` (B, input_size).

        ``dt``: a float, (B,) or (B, 1); validated here (``cells.dt``), then ``advance`` runs."""
        if x.dim() != 2:
            raise ValueError(f"step expects x of shape (B, {self.input_size}), got {tuple(x.shape)}")
        return self.advance(x, state, step_dt(dt, x.shape[0], x.dtype, x.device))

    def advance(self, x: torch.Tensor, state: torch.Tensor | None, dt: torch.Tensor) -> torch.Tensor:
        """``step`` with a dt that is already validated: (B,) of ``x``'s dtype and device (``cells.dt``)."""
        if (
            state is not None
            and not torch.is_grad_enabled()
            and x.dtype in _NUMPY_DTYPES
            and x.dim() == 2
            and x.shape[0] <= FAST_PATH_MAX_BATCH
            and x.device.type == "cpu"
            and state.dtype == x.dtype
            and state.device.type == "cpu"
            and not torch.jit.is_tracing()  # ONNX export / tracing must record torch ops
        ):
            kernel = self._cached_numpy_kernel(x.dtype)
            if kernel is not None:
                batch = x.shape[0]
                if x.shape[1] != self.input_size or state.shape != (batch, self.state_size):
                    self._check_step_shapes(x, state)
                dt_np = (dt.detach() if dt.requires_grad else dt).numpy().reshape(batch, 1)
                if getattr(kernel, "on_tensors", False):  # compiled kernels read the tensors' memory directly
                    return kernel(x, state, dt_np)
                x_np = (x.detach() if x.requires_grad else x).numpy()
                state_np = (state.detach() if state.requires_grad else state).numpy()
                return torch.from_numpy(kernel(x_np, state_np, dt_np))
        if state is None and x.dim() == 2:
            state = self.initial_state(x.shape[0], device=x.device, dtype=x.dtype)
        self._check_step_shapes(x, state)
        ctx = self.step_context()
        return self.step_prepared(self.prepare_inputs(x, ctx), state, dt, ctx)

    def forward_sequence(
        self,
        x: torch.Tensor,
        dt,
        h0: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        fused: bool = True,
    ):
        """Run over a batch-first sequence: ``x`` (B, T, input_size), ``dt`` (B, T) | (B,) | float, optional
        ``h0`` (B, state_size) and ``mask`` (B, T) bool (False = padding: the state is held).
        Returns ``(states (B, T, state_size), h_n (B, state_size))``; ``output(states)`` gives the readouts.

        Uses the core's fused path where it has one (CfC, LTC ``semi_implicit``: one autograd node per
        sequence), else the per-step hooks with the input-only work done for all T steps at once.
        ``fused=False`` forces the per-step hooks (autograd on the step-by-step graph; the path policies were
        trained with before the fused paths reached training, see docs/training.md).
        """
        if x.dim() != 3:
            raise ValueError(f"expected x of shape (B, T, {self.input_size}), got {tuple(x.shape)}")
        if x.shape[1] == 0:
            raise ValueError("forward_sequence needs at least one step")
        dt = sequence_dt(dt, x.shape[0], x.shape[1], x.dtype, x.device)
        return self.advance_sequence(x, dt, h0, mask, fused=fused)

    def advance_sequence(
        self,
        x: torch.Tensor,
        dt: torch.Tensor,
        h0: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        fused: bool = True,
        readout: bool = False,
    ):
        """``forward_sequence`` with a dt that is already validated: (B, T) of ``x``'s dtype (``cells.dt``).

        ``readout=True`` returns ``(output(states), h_n)``; on the per-step path each step's output is formed
        inside the loop, which keeps autograd's summation order (and so every bit of the gradients) that of the
        policy training loop before the fused paths reached it (``training.sequence_kernel: stepwise``)."""
        self.check_input(x)
        batch, steps = x.shape[0], x.shape[1]
        if steps == 0:
            raise ValueError("forward_sequence needs at least one step")
        if h0 is None:
            state = self.initial_state(batch, device=x.device, dtype=x.dtype)
        elif h0.shape != (batch, self.state_size):
            raise ValueError(f"h0 must have shape ({batch}, {self.state_size}), got {tuple(h0.shape)}")
        else:
            state = h0
        if mask is not None and mask.shape != (batch, steps):
            raise ValueError(f"mask must have shape ({batch}, {steps}), got {tuple(mask.shape)}")
        keep = mask.to(torch.bool) if mask is not None else None
        ctx = self.step_context()
        states = self.fused_sequence(x, state, dt, ctx, keep) if fused else None
        if states is None:
            # unbind once: indexing [:, t] in the loop would make autograd zero-fill a full-size gradient per step
            prepared, dts = self.prepare_inputs(x, ctx).unbind(1), dt.unbind(1)
            keeps = keep.unsqueeze(-1).unbind(1) if keep is not None else None
            history = []
            for t in range(steps):
                new = self.step_prepared(prepared[t], state, dts[t], ctx)
                state = new if keeps is None else torch.where(keeps[t], new, state)
                history.append(self.output(state) if readout else state)
            return torch.stack(history, dim=1), state
        return (self.output(states) if readout else states), states[:, -1]

    def _check_step_shapes(self, x: torch.Tensor, state: torch.Tensor) -> None:
        if x.dim() != 2:
            raise ValueError(f"step expects x of shape (B, {self.input_size}), got {tuple(x.shape)}")
        self.check_input(x)
        if state.shape != (x.shape[0], self.state_size):
            raise ValueError(f"state must have shape ({x.shape[0]}, {self.state_size}), got {tuple(state.shape)}")

    def _cached_numpy_kernel(self, dtype: torch.dtype):
        """The numpy kernel for the current weights; rebuilt when a parameter changed (in-place updates bump
        its version counter; ``load_state_dict``, ``to()`` and friends drop the cache)."""
        cache = self.__dict__.get("_numpy_kernel_cache")
        if cache is not None and cache[0] is dtype and cache[1] == self.training:
            params, versions = cache[2], cache[3]
            for p, version in zip(params, versions):
                if p._version != version:
                    break
            else:
                return cache[4]
        params = tuple(self.parameters())
        self.__dict__["_kernel_dtype"] = _NUMPY_DTYPES[dtype]
        with torch.no_grad():
            kernel = self._numpy_kernel()
        self.__dict__["_numpy_kernel_cache"] = (dtype, self.training, params, [p._version for p in params], kernel)
        return kernel

    def invalidate_fast_path(self) -> None:
        """Forget the numpy kernel (needed only after replacing parameter objects by hand)."""
        self.__dict__.pop("_numpy_kernel_cache", None)

    def _apply(self, fn, *args, **kwargs):
        self.invalidate_fast_path()
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self.invalidate_fast_path()
        return super()._load_from_state_dict(*args, **kwargs)

    def _np(self, tensor: torch.Tensor) -> np.ndarray:
        """A parameter-derived tensor as a contiguous numpy COPY of the kernel's dtype (never aliases a weight)."""
        return np.array(tensor.detach().cpu().numpy(), dtype=self.__dict__["_kernel_dtype"], order="C", copy=True)


_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def lecun_tanh(x: torch.Tensor) -> torch.Tensor:
    """1.7159 * tanh(0.666 x), the LeCun-scaled tanh that ncps's CfC uses by default."""
    return 1.7159 * torch.tanh(0.666 * x)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "lecun_tanh": lecun_tanh,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "silu": nn.functional.silu,
    "gelu": nn.functional.gelu,
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def xavier_uniform_(weight: torch.Tensor, fan_in: int, fan_out: int) -> None:
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        weight.uniform_(-bound, bound)
