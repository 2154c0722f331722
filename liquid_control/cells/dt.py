"""Where time enters the cells: the one validation of ``dt`` (elapsed seconds per sample and step).

The public entry points (``RecurrentCore.step`` / ``forward_sequence``, ``LiquidRNN``, ``Policy.step`` /
``forward_sequence``) turn whatever ``dt`` they were given into a tensor of the documented shape with these
functions, once; everything behind them (``RecurrentCore.advance`` / ``advance_sequence``, the kernels)
trusts it. A negative, NaN or infinite dt is a ``ValueError`` here and nowhere else.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .kernels import unwrapped

# Up to this many values, checking them as Python floats is cheaper than three torch ops (streaming steps).
_SMALL = 32


def _raise_bad_dt(dt: torch.Tensor) -> None:
    bad = dt[~(torch.isfinite(dt) & (dt >= 0))]
    raise ValueError(
        f"dt must be finite and >= 0 (elapsed seconds per sample); got {bad.numel()} bad value(s), "
        f"e.g. {bad.flatten()[0].item()}"
    )


def check_dt(dt: torch.Tensor) -> torch.Tensor:
    """Raise ValueError unless every entry of ``dt`` is finite and non-negative; returns ``dt`` (the values a
    ``torch.func`` transform's wrapper holds are checked: ``kernels.unwrapped``). A dt on the meta device has no
    values: it passes, so a model on meta gives its outputs' shapes, as torch's modules do."""
    if torch.compiler.is_compiling():  # values unread while dynamo traces: checked in the graph, at run time
        torch._assert_async(((dt >= 0) & torch.isfinite(dt)).all(), "dt must be finite and >= 0 (elapsed seconds)")
        return dt
    dt, given = unwrapped(dt), dt
    n = dt.numel()
    if n == 0 or dt.is_meta:
        return given
    if n <= _SMALL and dt.is_cpu:
        values = dt.tolist() if dt.dim() == 1 else dt.reshape(-1).tolist()
        ok = all(0.0 <= v < math.inf for v in values)  # NaN fails the comparison
    else:
        ok = bool((dt >= 0).logical_and_(torch.isfinite(dt)).all())
    if not ok:
        _raise_bad_dt(dt.detach())
    return given


def _not_seconds(dt: Any, reason: str = "") -> TypeError:
    shown = repr(dt) if len(repr(dt)) <= 60 else repr(dt)[:57] + "..."
    return TypeError(f"dt must be real seconds (a float or a float tensor), got {type(dt).__name__} {shown}{reason}")


def _as_seconds(dt: Any, dtype: torch.dtype, device) -> torch.Tensor:
    """``dt`` as a tensor of ``dtype``; TypeError naming dt for a bool, complex or text dt (True read as 1 s; the
    imaginary part dropped with only torch's warning; '0.1' failed in torch as "new(): invalid data type 'str'")."""
    if isinstance(dt, (str, bytes)):
        raise _not_seconds(dt, ": a number, not text (float(dt))")
    try:
        probe = torch.as_tensor(dt) if isinstance(dt, (list, tuple)) else dt  # [True] was 1 s
    except (TypeError, ValueError) as exc:  # ['0.1']: "too many dimensions 'str'"
        raise _not_seconds(dt, f": {exc}") from exc
    kind = getattr(probe, "dtype", None)  # a torch or numpy dtype
    if (
        isinstance(dt, (bool, complex))
        or kind == torch.bool
        or (isinstance(kind, torch.dtype) and kind.is_complex)
        or getattr(kind, "kind", "") in ("b", "c", "U", "S", "O")  # numpy bool, complex, text or objects
    ):
        raise _not_seconds(dt)
    try:
        return torch.as_tensor(dt, dtype=dtype, device=device)
    except TypeError as exc:  # None, a dict: "must be real number, not NoneType"
        raise _not_seconds(dt, f": {exc}") from exc


def step_dt(dt: Any, batch: int | None, dtype: torch.dtype, device=None) -> torch.Tensor:
    """Validated per-sample step ``dt`` of shape (B,) from a float, a 0-d, (B,) or (B, 1) tensor.

    ``batch=None`` takes the batch from ``dt`` itself (a float is then one sample)."""
    if (  # the streaming case, kept cheap: already a (B,) tensor of the right dtype on the CPU
        type(dt) is torch.Tensor
        and dt.dtype == dtype
        and dt.dim() == 1
        and (batch is None or dt.shape[0] == batch)
        and device is None
        and dt.is_cpu
    ):
        return check_dt(dt)
    dt = given = _as_seconds(dt, dtype, device)  # given: named as the caller gave it, (B, 1) too
    if dt.dim() == 2 and dt.shape[1] == 1:
        dt = dt[:, 0]
    if batch is None:
        dt = dt.reshape(-1)
    elif dt.dim() == 0:
        dt = dt.expand(batch)
    if batch is not None and dt.shape != (batch,):
        raise ValueError(
            f"dt must be a float or have shape ({batch},) for a batch of {batch}; got {tuple(given.shape)}"
        )
    return check_dt(dt)


def sequence_dt(dt: Any, batch: int, steps: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    """Validated ``dt`` of shape (B, T) from a float, (B,) (same dt every step), (B, T) or (B, T, 1)."""
    # checked before expanding: also for 0 steps; given: named as the caller gave it, (B, T, 1) too
    dt = given = check_dt(_as_seconds(dt, dtype, device))
    if dt.dim() == 3 and dt.shape[2] == 1:
        dt = dt[..., 0]
    if dt.dim() == 0:
        dt = dt.expand(batch, steps)
    elif dt.dim() == 1 and dt.shape[0] == batch:
        dt = dt[:, None].expand(batch, steps)
    if dt.shape != (batch, steps):
        raise ValueError(
            f"dt must be a float, ({batch},), ({batch}, {steps}) or ({batch}, {steps}, 1) for input of batch {batch} "
            f"and {steps} steps; got {tuple(given.shape)}"
        )
    return dt


# The most sub-steps one update is split into (``substep_counts``): a gap longer than this many ``max_step`` is
# integrated in this many longer steps, so a stalled sensor cannot make one update arbitrarily expensive.
MAX_SUBSTEPS = 16

# A dt this far past a threshold does not count as past it: a multiple of ``max_step`` (``substep_counts`` takes the
# smaller count), and ``max_gap_s`` in the gap rules of the simulated paths (PolicyAgent, the batched evaluation,
# training's split_at_gaps), as the runtime's torch-free timeline counts its own (``STAMP_TOLERANCE_S``, equal: a
# test keeps them so). Stamps of system time (~1.7e9 s) are float64 seconds 238 ns apart, so a sensor stamped exactly
# ``max_step`` apart (a triggered camera at 10 Hz, max_step 0.1) measures dts up to 1.4e-7 s either side of it:
# without the tolerance half its updates took two sub-steps and half one, and the rover's commands differed by up to
# 0.57 from those of the same stamps near 0.
DT_TOLERANCE_S = 1e-6


def substep_counts(dt: torch.Tensor, max_step: float) -> torch.Tensor:
    """How many equal sub-steps each sample's ``dt`` is integrated in so that none is longer than ``max_step``
    seconds (give or take ``DT_TOLERANCE_S``): ``ceil((dt - DT_TOLERANCE_S) / max_step)`` clamped to
    [1, MAX_SUBSTEPS], in ``dt``'s dtype (a dt of 0 is one step).

    A cell integrates only the step lengths it was trained on with some accuracy: a CfC's closed form, for
    one, jumps to its fixed point over a gap several times its training steps, and the policy stalls. Split
    into sub-steps with the input held (zero-order hold), the gap is integrated as the cell was trained to.
    The ONNX export computes the same counts with the same float32 ops (``runtime.export``)."""
    return torch.ceil((dt - DT_TOLERANCE_S) / max_step).clamp_(1.0, float(MAX_SUBSTEPS))
