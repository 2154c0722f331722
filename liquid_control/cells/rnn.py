"""``LiquidRNN``: run any core over a sequence with ``torch.nn.RNN`` conventions, plus ``CfC``/``LTC`` shortcuts."""

from __future__ import annotations

import torch
from torch import nn

from .core import CORE_TYPES, RecurrentCore, as_tensors, autocast_on, build_core, register_core
from .dt import sequence_dt


@register_core("liquid_rnn")
class LiquidRNN(nn.Module):
    """Sequence wrapper: ``forward(x, dt, h0=None, mask=None) -> (outputs, h_n)``.

    ``x`` is (B, T, input_size) (``batch_first=True``) or (T, B, input_size); ``dt`` elapsed seconds per
    sample and step, (B, T) (or (T, B) when not batch first), (B,) for a per-sample constant step, or a float.
    ``mask`` (B, T) bool (or (T, B) when not batch first, like ``x``) marks real steps: at a False (padding)
    step the state is held and the output is the held state's readout. Returns ``outputs`` (B, T, output_size)
    (time-major when not batch first) and the final state ``h_n`` (B, state_size).

    Unbatched ``x`` (T, input_size), in either layout as for ``torch.nn.RNN`` and ncps, is one sample: ``dt`` a
    float, (T,) or (T, 1), ``h0`` (state_size,), ``mask`` (T,); returns (T, output_size) and (state_size,).

    The time loop is the core's ``forward_sequence`` (fused CfC/LTC paths, input-only work batched over T). Under
    ``torch.autocast`` the model runs with autocast off in its weights' dtype, ``x`` and ``h0`` cast to it
    (``RecurrentCore.cast_for_autocast``): the outputs are those of a run without autocast.
    """

    def __init__(self, cell: RecurrentCore, batch_first: bool = True):
        super().__init__()
        if not isinstance(cell, RecurrentCore):
            raise TypeError(f"LiquidRNN wraps a RecurrentCore, got {type(cell).__name__}")
        if not isinstance(batch_first, bool):  # None or 0 would read as False, silently time-major
            raise TypeError(f"batch_first must be True or False, got {type(batch_first).__name__} {batch_first!r}")
        self.cell, self.batch_first = cell, batch_first

    @property
    def input_size(self) -> int:
        """Features per step of ``x`` (the cell's)."""
        return self.cell.input_size

    @property
    def state_size(self) -> int:
        """Size of the state ``h_n`` (the cell's)."""
        return self.cell.state_size

    @property
    def output_size(self) -> int:
        """Features per step of ``outputs`` (the cell's readout)."""
        return self.cell.output_size

    def config(self) -> dict:
        """Plain-data constructor arguments, the cell's config included; ``build_core(config())`` rebuilds it."""
        return {"type": "liquid_rnn", "cell": self.cell.config(), "batch_first": self.batch_first}

    @classmethod
    def from_config(cls, kwargs: dict):
        """The wrapper for ``config()`` minus its ``type``, the cell rebuilt with ``build_core``."""
        kwargs = dict(kwargs)  # any key but its own (e.g. units at the top) is a TypeError, not ignored
        return cls(build_core(kwargs.pop("cell")), **kwargs)

    def forward(
        self,
        x: torch.Tensor,
        dt=None,
        h0: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *,
        hx: torch.Tensor | None = None,
        timespans=None,
    ):
        """Run the cell over the sequence; see the class docstring for shapes, ``dt`` and ``mask``.

        ``hx`` and ``timespans`` are ncps's names for ``h0`` and ``dt`` (keywords only: ncps's positional order
        is ``(x, hx, timespans)``, this one's ``(x, dt, h0)`` as ``dt`` is what a liquid cell needs)."""
        if isinstance(x, nn.utils.rnn.PackedSequence):  # torch.as_tensor's "Could not infer dtype of NoneType"
            raise TypeError(
                "LiquidRNN takes padded x and a mask (False = padding: the state is held), not a PackedSequence: "
                "x, lengths = torch.nn.utils.rnn.pad_packed_sequence(packed, batch_first=...), then "
                "mask = torch.arange(T) < lengths[:, None] (transposed when batch_first=False); h_n is then each "
                "sample's state after its last step"
            )
        if not isinstance(x, torch.Tensor):  # numpy or a list, like dt and mask
            x = torch.as_tensor(x)
        if autocast_on(x):  # run outside it in the weights' dtype, as the cell's entry points
            x, h0, hx = self.cell.cast_for_autocast(x, h0, hx)
            with torch.autocast(x.device.type, enabled=False):
                return self.forward(x, dt, h0, mask, hx=hx, timespans=timespans)
        if x.dim() not in (2, 3):
            layout = "(B, T" if self.batch_first else "(T, B"
            raise ValueError(
                f"LiquidRNN expects x of shape {layout}, {self.input_size}) or unbatched (T, {self.input_size}), "
                f"got {tuple(x.shape)}"
            )
        if hx is not None:
            if h0 is not None:
                raise TypeError("give the initial state once: h0 or hx (its ncps name), not both")
            h0 = hx
        if timespans is not None:
            if dt is not None:
                raise TypeError("give the time steps once: dt or timespans (its ncps name), not both")
            dt = timespans
        dt = 1.0 if dt is None else dt  # ncps's default: unit steps
        x, h0 = as_tensors(x, h0)  # numpy or a list, like x, dt and mask
        if x.dim() == 2:
            return self._forward_unbatched(x, dt, h0, mask)
        # a valid 2-d dt is (B, T) or (T, B): its second dimension is x's; a state (B, state_size) usually is not
        state_like = isinstance(dt, torch.Tensor) and dt.dim() == 2 and dt.shape[1] == self.state_size
        if state_like and dt.shape[1] != x.shape[1]:
            raise ValueError(
                f"dt has shape {tuple(dt.shape)}, the shape of a state (B, {self.state_size}): LiquidRNN's second "
                f"argument is dt, forward(x, dt, h0); pass the state by keyword (h0= or ncps's hx=)"
            )
        if mask is not None and not isinstance(mask, torch.Tensor):  # numpy or a list, like dt
            mask = torch.as_tensor(mask, device=x.device)
        if mask is not None and tuple(mask.shape) != tuple(x.shape[:2]):  # named in the caller's layout
            layout = "(B, T)" if self.batch_first else "(T, B) (batch_first=False)"
            raise ValueError(f"mask must have shape {tuple(x.shape[:2])}, {layout} like x; got {tuple(mask.shape)}")
        if not self.batch_first:
            if not isinstance(dt, (int, float, torch.Tensor)):  # a numpy array or a list is laid out like a tensor
                dt = torch.as_tensor(dt)
            if isinstance(dt, torch.Tensor) and dt.dim() >= 1:
                steps, batch = x.shape[:2]  # every form named before the transpose, as the caller wrote it
                if tuple(dt.shape) not in ((batch,), (steps, batch), (steps, batch, 1)):
                    raise ValueError(
                        f"dt must be a float, (B,) = ({batch},), (T, B, 1) or (T, B) = ({steps}, {batch}) like x "
                        f"(batch_first=False); got {tuple(dt.shape)}"
                    )
                if dt.dim() >= 2:
                    dt = dt.transpose(0, 1)
            x = x.transpose(0, 1)
            if mask is not None:
                mask = mask.transpose(0, 1)
        outputs, state = self._forward_batch_first(x, dt, h0, mask)
        return (outputs if self.batch_first else outputs.transpose(0, 1)), state

    def _forward_batch_first(self, x, dt, h0, mask):
        """``forward`` on batch-first ``x``, ``dt`` and ``mask``: (outputs (B, T, output_size), h_n)."""
        cell = self.cell
        if x.shape[1] == 0:  # nothing to run, everything checked as for a longer sequence
            cell.check_input(x)
            sequence_dt(dt, x.shape[0], 0, x.dtype, x.device)
            # a copy, as for a longer sequence: h0 itself returned let an in-place change of h_n change the caller's h0
            return x.new_zeros(x.shape[0], 0, cell.output_size), cell.start_state(h0, x).clone()
        states, state = cell.forward_sequence(x, dt, h0, mask)
        return cell.output(states), state

    def _forward_unbatched(self, x, dt, h0, mask):
        """``forward`` on one sample ``x`` (T, input_size): its shapes checked and named as the caller gave them,
        then run as a batch of one."""
        steps, state_shape = x.shape[0], (self.state_size,)
        if not isinstance(dt, (int, float, torch.Tensor)):  # numpy or a list
            dt = torch.as_tensor(dt)
        if isinstance(dt, torch.Tensor) and dt.dim() > 0:
            if tuple(dt.shape) == state_shape and steps != self.state_size:
                raise ValueError(
                    f"dt has shape {tuple(dt.shape)}, the shape of an unbatched state: LiquidRNN's second argument "
                    f"is dt, forward(x, dt, h0); pass the state by keyword (h0= or ncps's hx=)"
                )
            if tuple(dt.shape) not in ((steps,), (steps, 1)):
                raise ValueError(
                    f"dt must be a float, ({steps},) or ({steps}, 1) for unbatched x of {steps} steps; "
                    f"got {tuple(dt.shape)}"
                )
            dt = dt[None]
        if h0 is not None:
            if tuple(h0.shape) != state_shape:
                raise ValueError(f"h0 must have shape {state_shape} for unbatched x, got {tuple(h0.shape)}")
            h0 = h0[None]
        if mask is not None:
            mask = torch.as_tensor(mask, device=x.device)
            if tuple(mask.shape) != (steps,):
                raise ValueError(f"mask must have shape ({steps},) like unbatched x, got {tuple(mask.shape)}")
            mask = mask[None]
        outputs, state = self._forward_batch_first(x[None], dt, h0, mask)
        return outputs[0], state[0]


# ncps's sequence-model options this package does not have, and what to do instead
NCPS_ONLY_OPTIONS = {
    "return_sequences": "the outputs of every step are always returned; take outputs[:, -1] for the last one",
    "mixed_memory": "no LSTM memory cell is mixed into the state here",
    "proj_size": "add a torch.nn.Linear on the outputs",
    "implicit_param_constraints": "w, cm and g_leak are always kept positive by a softplus here (ncps's True)",
}


def _refuse_ncps_only_options(model: str, cell_options: dict) -> None:
    for name in cell_options:
        if name in NCPS_ONLY_OPTIONS:
            raise TypeError(f"{model}: ncps's option {name!r} is not supported: {NCPS_ONLY_OPTIONS[name]}")


def CfC(input_size: int, units, batch_first: bool = True, **cell_options) -> LiquidRNN:
    """A CfC sequence model, like ``ncps.torch.CfC(input_size, units, ...)`` (see ``CfCCell`` for options)."""
    _refuse_ncps_only_options("CfC", cell_options)
    return LiquidRNN(CORE_TYPES["cfc"](input_size, units, **cell_options), batch_first=batch_first)


def LTC(input_size: int, units, batch_first: bool = True, **cell_options) -> LiquidRNN:
    """An LTC sequence model, like ``ncps.torch.LTC(input_size, units, ...)`` (see ``LTCCell`` for options)."""
    _refuse_ncps_only_options("LTC", cell_options)
    return LiquidRNN(CORE_TYPES["ltc"](input_size, units, **cell_options), batch_first=batch_first)
