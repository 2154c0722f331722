"""Compiled loops of the cells (CfC, LTC semi-implicit), built on first use: ``load()`` -> ``NativeKernels``.

Why: on a CPU, training these cells in torch is dominated by per-op overhead in a Python loop over time steps
(CfC: ~15 small ops per step) or by passes over (B, N, N) temporaries (LTC), and a streaming step by
framework overhead. A small C library runs those loops (``cfc.inc``, ``ltc.inc``) with its own matrix kernel
(``gemm.h``: AVX-512 intrinsics, else GCC vector extensions, ``vec.h``, which compile to AVX2 + FMA on x86-64
and NEON on aarch64) and vectorised synapse passes (``synapses.h``). ``benchmarks/README.md`` has the measurements.

It is compiled with the system C compiler (``$CC``, split like a shell command, or ``cc``; about a second) into
a private per-user cache the first time a cell needs it (``cache.py``: private directories, a SHA-256 recorded
at build time and checked before loading, a compiler timeout), and checked once after loading: first that this
CPU has every feature of the library's target that GCC 12 can test (``liquid_cpu_missing``, whose comment
in kernels.c lists what is not checked: a library built for another machine is refused, not run into SIGILL),
then the BLAS. With no compiler (and no cached library), a failed or refused build or a failed check,
``load()`` returns None (one warning says why, ``load_error()`` keeps it) and the cells use their torch/numpy
kernels: the same numbers up to float rounding, slower.
``LIQUID_CONTROL_NATIVE=0`` turns it off; ``LIQUID_CONTROL_CACHE`` moves the cache; ``LIQUID_CONTROL_CC_TIMEOUT``
bounds the compiler.

The ctypes bindings are read from the C prototypes (``bindings.py``); every call names its arguments.
"""

from __future__ import annotations

import os
import re
import threading
import warnings

import torch

from .bindings import SUFFIX, BindingError, BoundCall, CFunction, parse_prototypes
from .cache import SOURCE_DIR, SOURCES, UnsafeCacheError, build, cache_dir, compile_timeout, open_verified

__all__ = [
    "BindingError",
    "BoundCall",
    "CFunction",
    "NativeKernels",
    "StepScratch",
    "UnsafeCacheError",
    "build",
    "cache_dir",
    "compile_timeout",
    "describe",
    "load",
    "load_error",
    "open_library",
]

_lock = threading.Lock()
_state: dict = {}
PRETEND_CPU_LACKS = 0  # the tests' hook: bits of CPU features (kernels.c) to treat as missing from this CPU


def cpu_features() -> dict[int, str]:
    """The bits of ``liquid_cpu_missing``'s result and the features they name (read from kernels.c)."""
    if "cpu_features" not in _state:
        text = (SOURCE_DIR / "kernels.c").read_text()
        _state["cpu_features"] = {
            int(bit): name for bit, name in re.findall(r'CPU_FEATURE\((\d+), "([\w.-]+)"\)', text)
        }
    return _state["cpu_features"]


def prototypes():
    """The ``LIQUID_API`` prototypes of the sources (parsed once)."""
    if "prototypes" not in _state:
        _state["prototypes"] = parse_prototypes([SOURCE_DIR / name for name in SOURCES])
    return _state["prototypes"]


class NativeKernels:
    """A loaded, checked library: ``function(name, dtype)`` gives its named-argument wrapper (``bindings``)."""

    def __init__(self, library, path=None):
        self.path = path
        self._library = library
        self._functions = {key: CFunction(proto, library) for key, proto in prototypes().items()}
        missing = self.function("liquid_cpu_missing")(pretend_absent=PRETEND_CPU_LACKS)  # before any other call
        if missing:
            lacks = ", ".join(name for bit, name in sorted(cpu_features().items()) if missing >> bit & 1)
            raise RuntimeError(
                f"refused {path}: it was compiled for a CPU with {lacks}, which this CPU lacks "
                "(a cache shared with another machine?); delete it to build for this one"
            )
        if self.function("liquid_selftest")() != 1:
            raise RuntimeError("the BLAS self-test failed (unexpected BLAS ABI)")
        self.isa = ("avx512", "avx2", "portable")[self.function("liquid_isa")()]

    def function(self, name: str, dtype: torch.dtype | None = None) -> CFunction:
        """The C function ``name`` (of ``dtype``'s precision where it is precision-generic)."""
        key = (name, SUFFIX.get(dtype) if dtype is not None else None)
        if key not in self._functions:
            raise KeyError(f"no compiled kernel {name!r} for {dtype}")
        return self._functions[key]

    def supports(self, *tensors: torch.Tensor) -> bool:
        """True when every tensor is on the CPU with one dtype this library has kernels for."""
        dtype = tensors[0].dtype
        return dtype in SUFFIX and all(t.device.type == "cpu" and t.dtype == dtype for t in tensors)


class StepScratch(threading.local):
    """Per-thread scratch memory for the streaming step kernels (a ROS executor may step from several threads)."""

    def get(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        """This thread's buffer of ``numel``+ elements, reallocated when too small or of another dtype."""
        buffer = getattr(self, "buffer", None)
        if buffer is None or buffer.numel() < numel or buffer.dtype != dtype:
            self.buffer = buffer = torch.empty(max(numel, 1024), dtype=dtype)
        return buffer


def turned_off() -> bool:
    """``LIQUID_CONTROL_NATIVE=0`` (or false/no/off); 1/true/yes/on or unset: on. Any other value keeps them on
    with a warning naming it ("disable" or "none" read as on silently)."""
    value = os.environ.get("LIQUID_CONTROL_NATIVE", "1").strip().lower()
    if value in ("0", "false", "no", "off"):
        return True
    if value not in ("", "1", "true", "yes", "on"):
        warnings.warn(
            f"liquid_control: LIQUID_CONTROL_NATIVE={value!r} is none of 0/false/no/off (compiled kernels off) or "
            "1/true/yes/on: the compiled kernels stay on",
            stacklevel=1,  # from here in every process, as _load's: a worker's copy is shown once (WarningsOnce)
        )
    return False


def load() -> NativeKernels | None:
    """The compiled kernels, or None when they are turned off or cannot be built here (warned once)."""
    with _lock:
        if "kernels" not in _state:
            _state["kernels"], _state["error"] = _load()
        return _state["kernels"]


def load_error() -> str | None:
    """Why ``load()`` found no compiled kernels (its warning's reason); None when they loaded or are turned off."""
    return _state.get("error")


def describe(compiled_ran: bool | None = None) -> str:
    """Which kernels the cells run, as reports, policy files and cards record it: the compiled and the torch paths,
    and the compiled ones on CPUs with and without AVX-512, round differently in the last bits, which a chaotic
    closed loop can turn into another outcome (docs/ood.md), so a figure says which it came from.
    ``compiled_ran``: False where the cells that ran have no compiled kernel (an LSTM): torch whatever loads here;
    None: this process's path for the cells that have one. ``kernels.path_of`` says it of what a block ran."""
    import platform

    kernels = load()
    if kernels is None:
        error = load_error()
        return f"torch (compiled kernels failed to load: {error[:200]})" if error else "torch (LIQUID_CONTROL_NATIVE=0)"
    if compiled_ran is False:
        return "torch (this core has no compiled kernel; LIQUID_CONTROL_NATIVE changes nothing)"
    simd = {"avx512": "AVX-512", "avx2": "AVX2/FMA, no AVX-512"}.get(kernels.isa, "no AVX2")  # what the library runs
    return f"compiled kernels ({platform.machine()}, {simd})"


def open_library(extra_flags: tuple[str, ...] = ()) -> NativeKernels:
    """Build (or find in the cache) the library for ``extra_flags``, verify it and load it (no fallback)."""
    path, data = build(extra_flags)
    return NativeKernels(open_verified(path, data), path)


def _load() -> tuple[NativeKernels | None, str | None]:
    # warned from here (stacklevel 1), not from whichever caller loaded first: the same place in every process, so
    # the training process shows its workers' copy of its own warning once (processes.WarningsOnce)
    if turned_off():
        return None, None
    try:
        return open_library(), None
    except UnsafeCacheError as exc:
        warnings.warn(f"liquid_control: REFUSED to load compiled kernels, using the torch paths: {exc}", stacklevel=1)
        return None, f"refused: {exc}"
    except Exception as exc:
        warnings.warn(f"liquid_control: compiled kernels unavailable, using the torch paths ({exc})", stacklevel=1)
        return None, str(exc)
