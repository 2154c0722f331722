"""The recurrent-core contract shared by every cell (docs/ARCHITECTURE.md, "Cells").

A core advances one state tensor by a measured, per-sample time step. Subclasses implement three hooks so
the sequence wrapper can hoist work out of the time loop:

- ``step_context()``: parameter transforms that do not change during a sequence (masked weights,
  softplus'd conductances...), computed once per sequence;
- ``prepare_inputs(x, ctx)``: everything that depends only on the input, for all steps in one batched op;
- ``step_prepared(p, state, dt, ctx)``: the recurrent part of one step.

``step(x, state, dt)`` is the public streaming API built from those hooks. Cores that have a numpy kernel
(``_numpy_kernel``) use it for small no-grad CPU batches, where framework overhead dominates; the kernel is
rebuilt whenever a parameter changes (optimizer step, ``load_state_dict``).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

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
    return CORE_TYPES[kind].from_config(kwargs)


def _raise_bad_dt(dt: torch.Tensor) -> None:
    bad = dt[~(torch.isfinite(dt) & (dt >= 0))]
    raise ValueError(
        f"dt must be finite and >= 0 (elapsed seconds per sample); got {bad.numel()} bad value(s), "
        f"e.g. {bad.flatten()[0].item()}"
    )


def check_dt(dt: torch.Tensor) -> torch.Tensor:
    """Raise ValueError unless every entry of ``dt`` is finite and non-negative."""
    if dt.numel() and not bool((dt >= 0).logical_and_(torch.isfinite(dt)).all()):
        _raise_bad_dt(dt)
    return dt


def step_dt(dt: Any, batch: int, like: torch.Tensor) -> torch.Tensor:
    """Validated per-sample step ``dt`` of shape (B,) from a float, a 0-d, (B,) or (B, 1) tensor."""
    dt = torch.as_tensor(dt, dtype=like.dtype, device=like.device)
    if dt.dim() == 2 and dt.shape[1] == 1:
        dt = dt[:, 0]
    if dt.dim() == 0:
        dt = dt.expand(batch)
    if dt.shape != (batch,):
        raise ValueError(f"dt must be a float or have shape ({batch},) for a batch of {batch}; got {tuple(dt.shape)}")
    return check_dt(dt)


def sequence_dt(dt: Any, batch: int, steps: int, like: torch.Tensor) -> torch.Tensor:
    """Validated ``dt`` of shape (B, T) from a float, (B,) (same dt every step), (B, T) or (B, T, 1)."""
    dt = torch.as_tensor(dt, dtype=like.dtype, device=like.device)
    if dt.dim() == 3 and dt.shape[2] == 1:
        dt = dt[..., 0]
    if dt.dim() == 0:
        dt = dt.expand(batch, steps)
    elif dt.dim() == 1 and dt.shape[0] == batch:
        dt = dt[:, None].expand(batch, steps)
    if dt.shape != (batch, steps):
        raise ValueError(
            f"dt must be a float, ({batch},) or ({batch}, {steps}) for input of batch {batch} and {steps} steps; "
            f"got {tuple(dt.shape)}"
        )
    return check_dt(dt)


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
        """Advance ``state`` (B, state_size) by ``dt`` seconds per sample with input ``x`` (B, input_size)."""
        if x.dim() != 2:
            raise ValueError(f"step expects x of shape (B, {self.input_size}), got {tuple(x.shape)}")
        self.check_input(x)
        batch = x.shape[0]
        if state is None:
            state = self.initial_state(batch, device=x.device, dtype=x.dtype)
        elif state.shape != (batch, self.state_size):
            raise ValueError(f"state must have shape ({batch}, {self.state_size}), got {tuple(state.shape)}")
        if (
            batch <= FAST_PATH_MAX_BATCH
            and not torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64)
        ):
            kernel = self._cached_numpy_kernel(x.dtype)
            if kernel is not None:
                dt_np = _numpy_step_dt(dt, batch, x.dtype)
                out = kernel(x.detach().numpy(), state.detach().numpy(), dt_np)
                return torch.from_numpy(out)
        dt = step_dt(dt, batch, x)
        ctx = self.step_context()
        return self.step_prepared(self.prepare_inputs(x, ctx), state, dt, ctx)

    def _cached_numpy_kernel(self, dtype: torch.dtype):
        key = (dtype, self.training) + tuple((p.data_ptr(), p._version) for p in self.parameters())
        cache = self.__dict__.get("_numpy_kernel_cache")
        if cache is None or cache[0] != key:
            with torch.no_grad():
                kernel = self._numpy_kernel_for(dtype)
            cache = (key, kernel)
            self.__dict__["_numpy_kernel_cache"] = cache
        return cache[1]

    def _numpy_kernel_for(self, dtype: torch.dtype):
        self.__dict__["_kernel_dtype"] = np.float32 if dtype == torch.float32 else np.float64
        return self._numpy_kernel()

    def _np(self, tensor: torch.Tensor) -> np.ndarray:
        """A parameter-derived tensor as a contiguous numpy array of the kernel's dtype."""
        return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=self.__dict__["_kernel_dtype"])


def _numpy_step_dt(dt: Any, batch: int, dtype: torch.dtype) -> np.ndarray:
    """Validated (B, 1) numpy dt for the numpy kernels (same rules as ``step_dt``)."""
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    if isinstance(dt, torch.Tensor):
        arr = dt.detach().cpu().numpy().astype(np_dtype, copy=False)
    else:
        arr = np.asarray(dt, dtype=np_dtype)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 0:
        arr = np.full(batch, arr, dtype=np_dtype)
    if arr.shape != (batch,):
        raise ValueError(f"dt must be a float or have shape ({batch},) for a batch of {batch}; got {arr.shape}")
    if not (np.isfinite(arr).all() and (arr >= 0).all()):
        _raise_bad_dt(torch.from_numpy(np.array(arr)))
    return arr[:, None]


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
