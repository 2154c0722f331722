"""The one dispatcher: which kernel advances a core, chosen by name, core, dtype and purpose.

A *kernel* is one object per core and precision with an explicit interface (``Kernel``): it prepares the
core's weights once (``__init__``), then runs ``step`` (a no-grad streaming update) or ``sequence`` (a whole
sequence as one autograd node per block, whose ``forward`` and ``backward`` it implements). A core lists its
kernel classes by backend name (``RecurrentCore.kernels``); ``select`` walks the backends in a fixed order and
takes the first that supports the core and dtype:

- ``step`` (no grad, small CPU batch): ``compiled`` (``native``), then ``numpy``;
- ``sequence`` (training, ``forward_sequence``): ``compiled``, then ``torch`` (the fused torch loop with a
  hand-written backward).

Where none applies (other solvers, gelu, active dropout, GPU tensors, ONNX tracing, ``torch.func`` transforms,
``fused=False``) the core runs ``stepwise``: its per-step hooks as a plain torch graph, the reference every kernel
is tested against.

``recording()`` collects which backend ran for the cells the calling thread runs inside the block (another
thread's cells are not in it; for tests that must fail when their path did not run, and for the benchmarks'
report); ``KERNEL_ORDER`` is the only place the order lives.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from operator import attrgetter, is_, methodcaller
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from . import native

STEPWISE = "stepwise"
KERNEL_ORDER = {"step": ("compiled", "numpy"), "sequence": ("compiled", "torch")}
KERNEL_DTYPES = (torch.float32, torch.float64)
# Largest batch for which a no-grad step uses a step kernel instead of the torch graph.
STEP_KERNEL_MAX_BATCH = 16

# The active ``recording()`` blocks of every thread, as (thread id, list) pairs. The tuple is replaced whole (under
# ``_recorders_lock``), never changed, so ``if recorders:`` (the step's hot path) and ``note`` read it without a lock.
recorders: tuple[tuple[int, list], ...] = ()
_recorders_lock = threading.Lock()


class Kernel:
    """Interface of a kernel (see the module docstring). ``backend`` names it; ``supports`` says where it runs."""

    backend = "abstract"

    def __init__(self, core, dtype: torch.dtype, purpose: str):
        self.core, self.dtype, self.purpose = core, dtype, purpose

    @classmethod
    def supports(cls, core, dtype: torch.dtype, purpose: str) -> bool:
        """Whether this kernel can run ``core`` in ``dtype`` for ``purpose`` ("step" or "sequence")."""
        return False

    def step(self, x: torch.Tensor, state: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """No-grad update of ``state`` (B, S) by ``dt`` (B,) with input ``x`` (B, I); a new tensor."""
        raise NotImplementedError

    def sequence(self, x: torch.Tensor, state: torch.Tensor, dt: torch.Tensor, keep) -> torch.Tensor:
        """States (B, T, S) over ``x`` (B, T, I), ``dt`` (B, T), ``keep`` (B, T) bool or None, differentiable."""
        raise NotImplementedError


def native_kernels():
    """The compiled library (``native.load()``), or None: the only way kernels reach it."""
    return native.load()


def transformed() -> bool:
    """Whether a ``torch.func`` transform (``vmap``, ``grad``, ``jacrev``...) is running: its tensors are wrappers
    without storage, which the compiled and numpy kernels cannot read and ``FusedSequence`` cannot carry (torch's
    "must override the setup_context staticmethod"), so the stepwise graph runs, which the transforms see through."""
    return torch._C._are_functorch_transforms_active()


def unwrapped(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` itself, or under ``torch.func`` transforms the plain tensor that holds its values (a ``vmap``'s
    batched tensor: every sample's), for the checks that read values (``dt >= 0``, an LTC solver's divergence):
    a transform's own wrapper has no storage and refuses ``.item()`` / ``.tolist()``."""
    if torch.compiler.is_compiling():  # dynamo cannot trace the functorch query (a warning, a graph break)
        return tensor
    while torch._C._functorch.is_functorch_wrapped_tensor(tensor):
        tensor = torch._C._functorch.get_unwrapped(tensor)
    return tensor


def select(core, dtype: torch.dtype, purpose: str) -> type[Kernel] | None:
    """The kernel class that runs ``core`` for ``purpose`` in ``dtype``, or None (``stepwise``)."""
    # ONNX export must record torch ops, and torch.compile trace them (the compiled library is opaque to dynamo)
    if dtype not in KERNEL_DTYPES or torch.jit.is_tracing() or torch.compiler.is_compiling() or transformed():
        return None
    for backend in KERNEL_ORDER[purpose]:
        cls = core.kernels.get(backend)
        if cls is not None and cls.supports(core, dtype, purpose):
            return cls
    return None


def note(core, purpose: str, backend: str) -> None:
    """Record that ``backend`` ran ``core`` for ``purpose`` (a no-op unless ``recording()`` is active)."""
    active = recorders
    if active:
        entry, thread = (core.core_type, purpose, backend), threading.get_ident()
        for owner, recorder in active:
            if owner == thread:
                recorder.append(entry)


@contextmanager
def recording():
    """Collect ``(core_type, purpose, backend)`` of every step / sequence that runs inside the block, in this
    thread (another thread's cells are its own recording's); blocks nest, each seeing what ran inside it."""
    global recorders
    ran: list[tuple[str, str, str]] = []
    with _recorders_lock:
        recorders = (*recorders, (threading.get_ident(), ran))
    try:
        yield ran
    finally:
        with _recorders_lock:  # this block's own list (another one can be equal to it)
            recorders = tuple(pair for pair in recorders if pair[1] is not ran)


def path_of(ran: list) -> str | None:
    """The kernel path of what ``recording()`` saw run (``native.describe``), None where no cell ran (the expert,
    an ONNX model)."""
    if not ran:
        return None
    return native.describe(compiled_ran=any(backend == "compiled" for _, _, backend in ran))


def path_for(core, purpose: str, dtype: torch.dtype = torch.float32) -> str:
    """The kernel path ``core`` takes here for ``purpose`` (``native.describe``): the compiled kernels where they
    load and take this core (the step kernels only up to STEP_KERNEL_MAX_BATCH lanes: a larger batch's steps run the
    torch graph), else torch. What a record of its results says: the arithmetic's last bits follow it."""
    cls = core.kernels.get("compiled") if hasattr(core, "kernels") else None
    return native.describe(compiled_ran=cls is not None and cls.supports(core, dtype, purpose))


def _weight_tables(core) -> tuple[tuple, tuple]:
    """``(dicts, names)`` of every parameter and buffer of ``core`` and its submodules: reading the tensors through
    them each step is ~10x cheaper than ``core.parameters()``, and sees tensors swapped in by name
    (``torch.func.functional_call``)."""
    slots = [
        (table, name)
        for module in core.modules()
        for table in (module._parameters, module._buffers)
        for name, tensor in table.items()
        if tensor is not None
    ]
    return tuple(t for t, _ in slots), tuple(n for _, n in slots)


_VERSION, _DATA_PTR = attrgetter("_version"), methodcaller("data_ptr")

# Steps taken by torch's fused optimizers (``Adam(..., fused=True)``, also AdamW, SGD, Adagrad), counted by a hook:
# they update the weights in place without bumping the tensors' version counters, so a prepared step kernel kept
# the old weights after one (no-grad steps 0.17-0.97 off a fresh copy's); a prepared kernel is checked against
# this count too (any fused step rebuilds it once, whichever model it trained).
fused_optimizer_steps = 0


def _count_fused_optimizer_step(optimizer, args, kwargs) -> None:
    global fused_optimizer_steps
    if any(group.get("fused") for group in optimizer.param_groups):
        fused_optimizer_steps += 1


register_optimizer_step_post_hook(_count_fused_optimizer_step)


def _weights_state(tensors) -> tuple:
    """What a prepared kernel's weights were read from: each tensor's in-place update counter and storage.
    In-place updates bump the counter (torch's fused optimizers do not: ``fused_optimizer_steps``); ``p.data = ...``
    and ``vector_to_parameters`` change the storage. Only an in-place edit through ``p.data`` (which has its own
    counter) goes unseen: ``invalidate_fast_path`` then."""
    return (*map(_VERSION, tensors), *map(_DATA_PTR, tensors))


class StepKernels:
    """The step kernel of a core per dtype, rebuilt when its parameters or buffers changed: other tensors
    (``torch.func.functional_call``), other storage or an in-place update (``_weights_state``), a step of a fused
    optimizer (``fused_optimizer_steps``), or a setting it baked in (``core.step_kernel_settings()``: an LTC's solver
    swapped or its sub-steps or epsilon changed); ``load_state_dict``, ``to()`` and friends call ``clear``."""

    def __init__(self):
        self._cache: dict[Any, tuple] = {}

    def get(self, core, dtype: torch.dtype) -> Kernel | None:
        """The step kernel of ``core`` in ``dtype`` for its current weights (None: the stepwise graph)."""
        # a cached kernel too: a transform would hand it tensors without storage, dynamo cannot trace it; and what
        # ``select`` answers while dynamo traces (None) must not be cached for the eager steps after it
        if transformed() or torch.compiler.is_compiling():
            return None
        cached = self._cache.get(dtype)
        prepared_for = (core.training, fused_optimizer_steps, core.step_kernel_settings())
        if cached is not None and cached[0] == prepared_for:
            _, tables, names, tensors, state, kernel, _ = cached
            current = tuple(map(dict.get, tables, names))
            if all(map(is_, current, tensors)) and _weights_state(current) == state:
                return kernel
        if torch.jit.is_tracing():  # an ONNX export records the stepwise graph; later steps still get kernels
            return None
        core.check_dtype(torch.empty(0, dtype=dtype))  # prepared only in the weights' own dtype
        cls = select(core, dtype, "step")
        with torch.no_grad():
            kernel = cls(core, dtype, "step") if cls is not None else None
        tables, names = _weight_tables(core)
        tensors = tuple(map(dict.get, tables, names))
        # the storages are held, so that no other tensor's can be allocated at a compared address meanwhile
        storages = tuple(t.untyped_storage() for t in tensors)
        self._cache[dtype] = (prepared_for, tables, names, tensors, _weights_state(tensors), kernel, storages)
        return kernel

    def clear(self) -> None:
        """Forget every kernel (the next step prepares the weights again)."""
        self._cache.clear()

    def __deepcopy__(self, memo):
        return StepKernels()  # a copied core prepares its own kernels (prepared weights are not shared)

    def __getstate__(self):
        return {"_cache": {}}


NO_SECOND_DERIVATIVE = (
    "the fused CfC/LTC sequence kernels have first derivatives only, and create_graph=True asks for a gradient "
    "to differentiate again (a gradient penalty, a Hessian): run the stepwise graph, "
    "cell.forward_sequence(x, dt, h0, mask, fused=False)"
)


class FusedSequence(torch.autograd.Function):
    """One autograd node for a whole sequence of one block: ``part.forward`` / ``part.backward`` do the work.

    ``part`` is a kernel's per-block object with ``forward(ctx, *inputs) -> states (T, B, H)`` and
    ``backward(ctx, grad_states) -> gradients of inputs``; ``inputs`` are the tensors (and Nones) whose
    gradients autograd needs."""

    @staticmethod
    def forward(ctx, part, *inputs):
        """Run ``part.forward`` over the whole sequence; ``part`` stays on ``ctx`` for the backward."""
        ctx.part = part
        return part.forward(ctx, *inputs)

    @staticmethod
    def backward(ctx, grad_states):
        """The inputs' gradients from ``part.backward`` (none for ``part`` itself); first order only.

        A backward with ``create_graph=True`` (grad mode on) is refused at once: torch's ``once_differentiable``
        raises only if the gradient is differentiated again along a path autograd can see, and the inputs are
        not on one, so a gradient penalty or a Hessian through a CfC came out zero without a word."""
        if torch.is_grad_enabled():
            raise RuntimeError(NO_SECOND_DERIVATIVE)
        return (None, *ctx.part.backward(ctx, grad_states))


def needs_grad(*tensors) -> bool:
    """Whether autograd will ask for gradients of anything computed from ``tensors``."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
