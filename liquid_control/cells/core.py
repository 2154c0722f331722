"""The recurrent-core contract shared by every cell (docs/ARCHITECTURE.md, "Cells").

A core advances one state tensor by a measured, per-sample time step. Subclasses implement these hooks, the
*stepwise* reference graph, written so the sequence loop can hoist work out of the time loop:

- ``step_context()``: parameter transforms that do not change during a sequence (masked weights,
  softplus'd conductances...), computed once per sequence;
- ``prepare_inputs(x, ctx)``: everything that depends only on the input, for all steps in one batched op;
- ``step_prepared(p, state, dt, ctx)``: the recurrent part of one step;

and list their faster kernels by backend name in ``kernels`` (CfC, LTC: ``compiled``, ``torch``, ``numpy``;
see ``kernels.py``, the dispatcher that chooses among them).

Public API: ``step(x, state, dt)`` (streaming) and ``forward_sequence(x, dt, h0, mask)`` (training) validate
``dt`` (``dt.py``) and call ``advance`` / ``advance_sequence``, which trust it and dispatch: a no-grad step of
a small CPU batch runs a step kernel (rebuilt whenever a parameter changes: optimizer step,
``load_state_dict``), a sequence a fused sequence kernel, anything else the stepwise graph.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import torch
from torch import nn

from . import kernels as dispatch
from .dt import sequence_dt, step_dt
from .wiring import int_arg

CORE_TYPES: dict[str, Callable[..., nn.Module]] = {}


def register_core(name: str):
    """Class decorator: make a core rebuildable from ``config()`` by ``build_core``. A name the package's cores or a
    class of another name hold is refused: a user's ``@register_core("cfc")`` replaced the package's CfC for every
    policy file loaded after it, without a word. The same class defined again (a module reloaded, a notebook cell
    run twice, a script imported under its own name beside ``__main__``) takes its place."""

    def wrap(cls):
        taken = CORE_TYPES.get(name)
        # another class: one of the package's cores, or a class of another name; the same class reached again (a
        # reload, a notebook cell, a script's module imported under its own name beside __main__, a spawned worker)
        # keeps its qualified name and takes the place
        package = taken is not None and taken.__module__.startswith("liquid_control.")
        if taken is not None and (package or taken.__qualname__ != cls.__qualname__) and taken is not cls:
            raise ValueError(
                f"register_core({name!r}): the core type {name!r} is {taken.__module__}.{taken.__qualname__}'s; "
                f"register {cls.__name__} under another name (taken: {', '.join(sorted(CORE_TYPES))})"
            )
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
        raise ValueError(
            f"unknown core type {kind!r}; known: {', '.join(sorted(CORE_TYPES))}; a core of your own: decorate its "
            "class with liquid_control.cells.register_core(name) and import its module before building or loading "
            "it (docs/ARCHITECTURE.md, 'Cells')"
        )
    kwargs = {k: v for k, v in config.items() if k != "type"}
    try:
        return CORE_TYPES[kind].from_config(kwargs)
    except TypeError as exc:  # unknown or missing constructor arguments
        raise ValueError(f"bad config for core type {kind!r}: {exc}") from exc


def positive_float_arg(name: str, value, above: float = 0.0, below: float = math.inf) -> float:
    """``value`` as a positive, finite float argument of a core (a time constant, a rate): TypeError unless a
    real number (not a bool: True would be 1.0 silently), ValueError unless finite and in (``above``, ``below``)
    (a bound of what the core's initialisation can represent, e.g. ``log(expm1(x))`` overflows past ~709)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and above < value < below):
        bounds = f"> {above:g}" if below == math.inf else f"in ({above:g}, {below:g})"
        raise ValueError(f"{name} must be finite and {bounds}, got {value}")
    return float(value)


def size_arg(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int size of a core (``input_size``, ``units``...): TypeError unless it is an integer
    (a bool or a float such as 3.5 would be truncated silently), ValueError below ``minimum`` (the wirings' check)."""
    return int_arg(name, value, minimum)


def autocast_on(x: torch.Tensor) -> bool:
    """Whether ``torch.autocast`` is on for ``x``'s device type (one it can be on for: not ``meta``)."""
    if not torch._C._is_any_autocast_enabled():  # the usual answer, in 0.1 us (the device's question takes 0.6)
        return False
    kind = x.device.type
    return torch.amp.is_autocast_available(kind) and torch.is_autocast_enabled(kind)


def as_tensors(x, state):
    """``x`` and ``state`` (or ``h0``; None stays None) as tensors, a numpy array or a list converted as ``dt`` is, the
    state onto ``x``'s device: given as arrays they failed with "'numpy.ndarray' object has no attribute 'dim'" or a
    refusal that contradicted itself ("must have x's dtype torch.float32, got float32")."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if state is not None and not isinstance(state, torch.Tensor):
        state = torch.as_tensor(state, device=x.device)
    return x, state


class RecurrentCore(nn.Module):
    """Base class of every core: sizes, ``initial_state``, ``step``, ``output``, ``config``."""

    core_type = "abstract"
    input_size: int
    state_size: int
    output_size: int
    # backend name -> kernel class (``kernels.Kernel``); empty: the stepwise graph only
    kernels: dict[str, type] = {}

    def __init__(self):
        super().__init__()
        self.step_kernels = dispatch.StepKernels()  # this core's prepared step kernels, per dtype

    # ---- hooks for subclasses -------------------------------------------------------------------------
    def step_context(self) -> Any:
        """Parameter transforms computed once per sequence (or step)."""
        return None

    def step_kernel_settings(self) -> tuple:
        """What a prepared step kernel bakes in besides the weights (an LTC's solver, its sub-steps, epsilon): a
        change of any of them prepares the kernel again. Called at every no-grad step, so kept cheap."""
        return ()

    def prepare_inputs(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        """The input-only part of a step, for any leading dims (all steps of a sequence at once)."""
        return x

    def step_prepared(self, p: torch.Tensor, state: torch.Tensor, dt: torch.Tensor, ctx: Any) -> torch.Tensor:
        """The recurrent part of one step: prepared input ``p``, ``state`` (B, S), ``dt`` (B,)."""
        raise NotImplementedError

    def output(self, state: torch.Tensor) -> torch.Tensor:
        """Readout of a state (works on any leading dims)."""
        return state

    def config(self) -> dict:
        """Plain-data constructor arguments; ``build_core(config())`` rebuilds the core."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, kwargs: dict):
        """The core for ``config()`` minus its ``type``."""
        return cls(**kwargs)

    # ---- public API ---------------------------------------------------------------------------------
    def initial_state(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        """Zeros (B, state_size) on the parameters' device and dtype unless given."""
        ref = next(self.parameters(), None)
        device = device if device is not None else (ref.device if ref is not None else None)
        dtype = dtype if dtype is not None else (ref.dtype if ref is not None else torch.get_default_dtype())
        return torch.zeros(batch, self.state_size, device=device, dtype=dtype)

    def check_input(self, x: torch.Tensor) -> None:
        """ValueError unless the last dimension of ``x`` is ``input_size`` and ``x`` has the weights' dtype."""
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__} expects {self.input_size} input features, got {x.shape[-1]}")
        self.check_dtype(x)

    def check_dtype(self, x: torch.Tensor) -> None:
        """ValueError unless ``x`` has the weights' dtype (else torch's "mat1 and mat2 must have the same dtype",
        or an LTC silently computing in x's dtype)."""
        weight = next(self.parameters(), None)
        if weight is not None and x.dtype != weight.dtype:
            if not x.is_floating_point():  # weights cannot be integers: only x can be converted
                raise ValueError(
                    f"{type(self).__name__}'s weights are {weight.dtype}, x is {x.dtype}: x must be floating "
                    f"point (x.to({weight.dtype}))"
                )
            raise ValueError(
                f"{type(self).__name__}'s weights are {weight.dtype}, x is {x.dtype}: convert one "
                f"(x.to({weight.dtype}) or the module's .to({x.dtype}))"
            )

    def cast_for_autocast(self, *tensors):
        """``tensors`` for a run outside ``torch.autocast``: the floating ones in the weights' dtype (as autocast casts
        an op's inputs: an autocast ``Linear`` before the cell gives bfloat16), the others (None, a mask) as given.

        The cells run in their weights' dtype with autocast off (``step``, ``forward_sequence``, ``LiquidRNN``):
        inside it the stepwise graph mixed bfloat16 matmuls with float32 gates (torch's "expected dtype" errors),
        the fused torch kernel failed likewise and the compiled one ran float32, so one model's answer depended on
        the backend; now every backend gives the numbers it gives without autocast."""
        weight = next(self.parameters(), None)
        if weight is None:
            return tensors
        return tuple(
            t.to(weight.dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in tensors
        )

    def forward(self, x: torch.Tensor, hx: torch.Tensor | None, dt) -> tuple[torch.Tensor, torch.Tensor]:
        """``cell(x, hx, dt) -> (output, state)``: one step called as a module, as ncps's cells are
        (``cell(input, hx, ts)``); ``step`` returns the state alone, ``output(state)`` its readout."""
        state = self.step(x, hx, dt)
        return self.output(state), state

    def step(self, x: torch.Tensor, state: torch.Tensor | None, dt) -> torch.Tensor:
        """Advance ``state`` (B, state_size) by ``dt`` seconds per sample with input ``x`` (B, input_size).

        ``dt``: a float, (B,) or (B, 1); validated here (``cells.dt``), then ``advance`` runs. Under ``torch.autocast``
        it runs with autocast off in the weights' dtype (``cast_for_autocast``). ``x`` and ``state`` may be numpy
        arrays or lists, as ``dt``."""
        if type(x) is not torch.Tensor or (state is not None and type(state) is not torch.Tensor):
            x, state = as_tensors(x, state)
        if autocast_on(x):
            x, state = self.cast_for_autocast(x, state)
            with torch.autocast(x.device.type, enabled=False):
                return self.step(x, state, dt)
        if x.dim() != 2:
            raise ValueError(f"step expects x of shape (B, {self.input_size}), got {tuple(x.shape)}")
        if not x.is_floating_point():  # before dt takes x's dtype: a complex one failed dt's check ("'<='")
            self.check_dtype(x)
        return self.advance(x, state, step_dt(dt, x.shape[0], x.dtype, None if x.is_cpu else x.device))

    def advance(self, x: torch.Tensor, state: torch.Tensor | None, dt: torch.Tensor) -> torch.Tensor:
        """``step`` with a dt that is already validated: (B,) of ``x``'s dtype and device (``cells.dt``).

        A no-grad step of a small CPU batch runs the step kernel the dispatcher chose; else the stepwise graph."""
        if state is None:
            if x.dim() != 2:
                raise ValueError(f"step expects x of shape (B, {self.input_size}), got {tuple(x.shape)}")
            state = self.initial_state(x.shape[0], device=x.device, dtype=x.dtype)
        shape = x.shape
        if (
            len(shape) != 2
            or shape[1] != self.input_size
            or state.shape != (shape[0], self.state_size)
            or dt.shape != shape[:1]
            or state.dtype != x.dtype
        ):
            self._check_step_shapes(x, state, dt)
        dtype = x.dtype
        if (
            shape[0] <= dispatch.STEP_KERNEL_MAX_BATCH
            and not torch.is_grad_enabled()
            and x.is_cpu
            and state.is_cpu
            and state.dtype == dtype
            and dt.dtype == dtype
        ):
            kernel = self.step_kernels.get(self, dtype)
            if kernel is not None:
                if dispatch.recorders:
                    dispatch.note(self, "step", kernel.backend)
                return kernel.step(x, state, dt)
        self.check_dtype(x)
        dispatch.note(self, "step", dispatch.STEPWISE)
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

        Runs the sequence kernel the dispatcher chose (CfC, LTC ``semi_implicit``: one autograd node per
        sequence and block, compiled where possible), else the stepwise graph with the input-only work done for
        all T steps at once. ``fused=False`` forces the stepwise graph (how policies were trained before the
        sequence kernels reached training, see docs/training.md). Under ``torch.autocast`` it runs with autocast off
        in the weights' dtype (``cast_for_autocast``). ``x`` and ``h0`` may be numpy arrays or lists, as ``dt``.
        """
        if type(x) is not torch.Tensor or (h0 is not None and type(h0) is not torch.Tensor):  # as step's check
            x, h0 = as_tensors(x, h0)
        if autocast_on(x):
            x, h0 = self.cast_for_autocast(x, h0)
            with torch.autocast(x.device.type, enabled=False):
                return self.forward_sequence(x, dt, h0, mask, fused)
        if x.dim() != 3:
            raise ValueError(f"expected x of shape (B, T, {self.input_size}), got {tuple(x.shape)}")
        if x.shape[1] == 0:
            raise ValueError("forward_sequence needs at least one step")
        if not x.is_floating_point():  # before dt takes x's dtype: a complex one failed dt's check ("'<='")
            self.check_dtype(x)
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

        ``readout=True`` returns ``(output(states), h_n)``; on the stepwise graph each step's output is formed
        inside the loop, which keeps autograd's summation order (and so every bit of the gradients) that of the
        policy training loop before the sequence kernels reached it (``training.sequence_kernel: stepwise``)."""
        self.check_input(x)
        batch, steps = x.shape[0], x.shape[1]
        if steps == 0:
            raise ValueError("forward_sequence needs at least one step")
        state = self.start_state(h0, x)
        if dt.shape != (batch, steps):
            raise ValueError(
                f"dt must have shape ({batch}, {steps}) here (validated by cells.dt), got {tuple(dt.shape)}"
            )
        if mask is not None and mask.shape != (batch, steps):
            raise ValueError(f"mask must have shape ({batch}, {steps}), got {tuple(mask.shape)}")
        if mask is not None and mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
            # a float mask of weights (0.3) read as True
            raise ValueError(f"mask must be bool (False = padding, the state held) or 0/1, got {mask.dtype} values")
        keep = mask.to(torch.bool) if mask is not None else None
        if keep is not None:  # (no test of keep.all(): a data-dependent branch that torch.compile cannot trace)
            # a padded step's inputs reach no result: its state is held, but its update was still formed from them
            # and backward multiplied a zero gradient by their local derivative, so NaN padding (0 x NaN) made every
            # weight's gradient NaN with a finite loss; the values of a padded step are zeros on every path now
            x = torch.where(keep.unsqueeze(-1), x, x.new_zeros(()))
            dt = torch.where(keep, dt, dt.new_zeros(()))
        # an empty batch has nothing for a kernel to do (and some would trip over zero-size buffers)
        kernel = dispatch.select(self, x.dtype, "sequence") if fused and batch and x.is_cpu else None
        if kernel is not None:
            dispatch.note(self, "sequence", kernel.backend)
            states = kernel(self, x.dtype, "sequence").sequence(x, state, dt, keep)
            # h_n a tensor of its own, as the stepwise graph's and torch.nn.GRU's: states[:, -1] was a view of the
            # outputs' storage, so an RL reset `h[done] = 0` changed y[:, -1] and h.detach_() (truncated BPTT) raised
            return (self.output(states) if readout else states), states[:, -1].clone()
        dispatch.note(self, "sequence", dispatch.STEPWISE)
        ctx = self.step_context()
        # unbind once: indexing [:, t] in the loop would make autograd zero-fill a full-size gradient per step
        prepared, dts = self.prepare_inputs(x, ctx).unbind(1), dt.unbind(1)
        keeps = keep.unsqueeze(-1).unbind(1) if keep is not None else None
        history = []
        for t in range(steps):
            new = self.step_prepared(prepared[t], state, dts[t], ctx)
            state = new if keeps is None else torch.where(keeps[t], new, state)
            history.append(self.output(state) if readout else state)
        return torch.stack(history, dim=1), state

    def start_state(self, h0: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """``h0`` checked against a sequence ``x`` (B, T, input_size): (B, state_size), x's dtype and device;
        zeros when None."""
        batch = x.shape[0]
        if h0 is None:
            return self.initial_state(batch, device=x.device, dtype=x.dtype)
        if h0.shape != (batch, self.state_size):
            raise ValueError(f"h0 must have shape ({batch}, {self.state_size}), got {tuple(h0.shape)}")
        if h0.dtype != x.dtype or h0.device != x.device:
            raise ValueError(f"h0 must have x's dtype and device ({x.dtype}, {x.device}), got {h0.dtype}, {h0.device}")
        return h0

    def _check_step_shapes(self, x: torch.Tensor, state: torch.Tensor, dt: torch.Tensor) -> None:
        """ValueError naming what does not fit: a compiled kernel would read past a short ``dt`` (finite garbage),
        and a state of another dtype than ``x`` either failed inside a kernel or silently changed the dtype."""
        if x.dim() != 2:
            raise ValueError(f"step expects x of shape (B, {self.input_size}), got {tuple(x.shape)}")
        self.check_input(x)
        if state.shape != (x.shape[0], self.state_size):
            raise ValueError(f"state must have shape ({x.shape[0]}, {self.state_size}), got {tuple(state.shape)}")
        if dt.shape != x.shape[:1]:
            raise ValueError(f"dt must have shape ({x.shape[0]},) here (validated by cells.dt), got {tuple(dt.shape)}")
        if state.dtype != x.dtype:
            raise ValueError(f"state must have x's dtype {x.dtype}, got {state.dtype}")

    def __prepare_scriptable__(self):
        """``torch.jit.script`` calls this first (on a ``LiquidRNN``'s cell too): refused here, naming what works,
        where TorchScript failed on the first Python construct it met ("Unknown type annotation: 'int'")."""
        raise TypeError(
            f"torch.jit.script cannot compile {type(self).__name__}: its kernels are chosen and dt checked in Python; "
            "use torch.jit.trace (records the stepwise graph, for the traced sequence length), torch.compile or the "
            "ONNX export"
        )

    def invalidate_fast_path(self) -> None:
        """Forget the step kernels (needed only after editing a parameter in place through ``.data``, which
        bypasses its update counter; other changes of the weights are seen, see ``kernels.StepKernels``)."""
        self.step_kernels.clear()

    def _apply(self, fn, *args, **kwargs):
        self.invalidate_fast_path()
        return super()._apply(fn, *args, **kwargs)

    def wiring_masks(self) -> dict[str, torch.Tensor]:
        """The masks this core's ``wiring`` defines for the buffers that hold its synapses (state_dict name -> CPU
        0/1 float tensor), drawn from the wiring, not read from the buffers."""
        return {}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, error_msgs):
        """As torch's, but refuses synapse masks of another wiring: loaded, they replaced this core's masks while its
        ``wiring`` (and ``config()``, a saved checkpoint's config, an export's metadata) still described the old
        synapses, e.g. weights of ``AutoNCP(19, 2, seed=22222)`` in a core built with ``seed=7``. The masks are
        compared with the wiring's, not with the buffers: a core built on the meta device (or ``to_empty()``) has
        none to compare with, and loads as torch's modules do."""
        self.invalidate_fast_path()
        other = [
            prefix + name
            for name, mask in self.wiring_masks().items()
            if torch.is_tensor(given := state_dict.get(prefix + name))
            and not given.is_meta  # a meta state dict (assign=True) holds shapes only
            and given.shape == mask.shape
            and not torch.equal(given.detach().to("cpu", mask.dtype), mask)
        ]
        if other:
            seed = self.wiring.params.get("seed")
            error_msgs.append(
                f"{', '.join(other)}: synapse masks of another wiring than this core's ({self.wiring.kind}"
                f"{'' if seed is None else f' seed {seed}'}, {self.wiring.synapse_count} synapses): the weights were "
                "trained with other synapses; build the core from their own config (load_model, load_policy, "
                "build_core) instead"
            )
        return super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing, unexpected, error_msgs
        )


def xavier_uniform_(weight: torch.Tensor, fan_in: int, fan_out: int) -> None:
    """Glorot-uniform initialisation with explicit fans (a slice of a fused matrix is its own layer)."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        weight.uniform_(-bound, bound)
