"""Compiled loops of the sequence paths (CfC, LTC semi-implicit), built on first use.

Why: on a CPU, training these cells in torch is dominated by per-op overhead in a Python loop over time steps
(CfC: ~15 small ops per step) or by passes over (B, N, N) temporaries (LTC). A small C library runs those
loops (``cfc.inc``, ``ltc.inc``), its own AVX-512 matrix kernel (``gemm.h``; torch's MKL takes a slower
path on AMD CPUs) or else torch's BLAS, and hand-vectorised synapse passes (``synapses.h``).
``benchmarks/README.md`` has the measurements behind each of these.

It is compiled with the system C compiler (``$CC`` or ``cc``, about a second) into a per-user cache the first
time a cell needs it, and checked once after loading. With no compiler, a failed build or a failed check,
``load()`` returns None (one warning says why) and the cells use their torch paths: the same numbers, slower.
``LIQUID_CONTROL_NATIVE=0`` turns it off; ``LIQUID_CONTROL_CACHE`` moves the cache.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

SOURCE_DIR = Path(__file__).resolve().parent
SOURCES = ("kernels.c", "common.h", "gemm.h", "synapses.h", "ltc.inc", "cfc.inc")
OPT_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-fPIC", "-shared", "-std=c11"]
SUFFIX = {torch.float32: "f32", torch.float64: "f64"}

# name -> argument kinds: "i" C int, "r" a real of the kernel's precision, "p" pointer (a tensor's data, or None
# for NULL), "a" array of pointers (a list of tensors, or None for NULL)
SIGNATURES = {
    "ltc_forward": "iiii" + "p" * 14,
    "ltc_backward": "iiii" + "p" * 24,
    "cfc_forward": "iiiiiiii" + "rrr" + "ppppppp" + "aa" + "ppppp" + "a" + "pp" + "a" + "p",
    "cfc_backward": "iiiiiii" + "ppppp" + "a" + "ppp" + "aa" + "p" + "a" + "ppppp" + "aa" + "pppp",
    "ltc_step": "iiii" + "p" * 18,
    "cfc_step": "iiiiiii" + "rrr" + "p" * 14,
    "liquid_exp": "ipp",
    "liquid_mm": "iiiipipiipi",
}
_REAL = {"f32": ctypes.c_float, "f64": ctypes.c_double}


_lock = threading.Lock()
_state: dict = {}


class NativeKernels:
    """The loaded library: ``kernels.call("ltc_forward", dtype, *args)`` with ints and tensors (or None)."""

    def __init__(self, lib: ctypes.CDLL):
        self._functions = {}
        for name, kinds in SIGNATURES.items():
            for suffix in SUFFIX.values():
                fn = getattr(lib, f"{name}_{suffix}")
                kind_types = {"i": ctypes.c_int, "r": _REAL[suffix], "p": ctypes.c_void_p, "a": ctypes.c_void_p}
                fn.argtypes = [kind_types[k] for k in kinds]
                fn.restype = None
                self._functions[(name, suffix)] = fn
        self._cfc_work = lib.cfc_forward_work_size
        self._cfc_work.argtypes, self._cfc_work.restype = [ctypes.c_int] * 6, ctypes.c_size_t

    def cfc_work(self, batch: int, steps: int, hidden: int, units: int, layers: int, mode: int) -> int:
        """Scratch elements ``cfc_forward`` needs."""
        return self._cfc_work(batch, steps, hidden, units, layers, mode)

    def supports(self, *tensors: torch.Tensor) -> bool:
        """True when every tensor is on the CPU with one dtype this library has kernels for."""
        dtype = tensors[0].dtype
        return dtype in SUFFIX and all(t.device.type == "cpu" and t.dtype == dtype for t in tensors)

    def function(self, name: str, dtype: torch.dtype):
        """The raw ctypes function (ints and data addresses only), for per-step calls where every us counts."""
        return self._functions[(name, SUFFIX[dtype])]

    def call(self, name: str, dtype: torch.dtype, *args) -> None:
        fn = self._functions[(name, SUFFIX[dtype])]
        fn(*(_c_argument(name, arg) for arg in args))  # ctypes releases the GIL for the call


class StepScratch(threading.local):
    """Per-thread scratch memory for the streaming step kernels (a ROS executor may step from several threads)."""

    def address(self, numel: int, dtype: torch.dtype) -> int:
        buffer = getattr(self, "buffer", None)
        if buffer is None or buffer.numel() < numel or buffer.dtype != dtype:
            self.buffer = buffer = torch.empty(max(numel, 1024), dtype=dtype)
        return buffer.data_ptr()


def _pointer(name: str, tensor: torch.Tensor) -> int:
    if not tensor.is_contiguous():
        raise ValueError(f"{name}: tensor arguments must be contiguous")
    return tensor.data_ptr()


def _c_argument(name: str, arg):
    if isinstance(arg, torch.Tensor):
        return _pointer(name, arg)
    if isinstance(arg, (list, tuple)):
        return ctypes.cast((ctypes.c_void_p * max(1, len(arg)))(*(_pointer(name, t) for t in arg)), ctypes.c_void_p)
    return arg


def load() -> NativeKernels | None:
    """The compiled kernels, or None when they are turned off or cannot be built here (warned once)."""
    with _lock:
        if "kernels" not in _state:
            _state["kernels"] = _load()
        return _state["kernels"]


def open_library(path: Path) -> NativeKernels:
    """Load a built library and check it (its BLAS must compute a known product)."""
    lib = ctypes.CDLL(str(path))
    if lib.liquid_selftest() != 1:
        raise RuntimeError("the BLAS self-test failed (unexpected BLAS ABI)")
    return NativeKernels(lib)


def _load() -> NativeKernels | None:
    if os.environ.get("LIQUID_CONTROL_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        return open_library(build())
    except Exception as exc:
        warnings.warn(f"liquid_control: compiled kernels unavailable, using the torch paths ({exc})", stacklevel=3)
        return None


def _torch_blas() -> Path:
    lib_dir = Path(torch.__file__).resolve().parent / "lib"
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib"):
        if (lib_dir / name).exists():
            return lib_dir / name
    raise RuntimeError(f"no libtorch_cpu in {lib_dir}")


def cache_dir() -> Path:
    root = os.environ.get("LIQUID_CONTROL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "liquid_control"
    )
    return Path(root) / "native"


def _cpu_identity() -> str:
    """What -march=native compiles for: the CPU's model and feature flags (a shared home may span machines)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    seen = {}
    for line in lines:
        key = line.split(":", 1)[0].strip()
        wanted = key in ("vendor_id", "cpu family", "model", "model name", "flags", "Features", "CPU part")
        if wanted and key not in seen:
            seen[key] = line
    return "\n".join(seen.values())


def build(extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile the library into the cache (once per source, torch, CPU and flags) and return its path.
    ``extra_flags`` go after the defaults (the tests build a variant without AVX-512 this way)."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise RuntimeError("no C compiler found (set CC)")
    blas = _torch_blas()
    key = hashlib.sha256()
    for name in SOURCES:
        key.update((SOURCE_DIR / name).read_bytes())
    identity = [compiler, torch.__version__, str(blas), platform.machine(), _cpu_identity()] + OPT_FLAGS
    identity += list(extra_flags)
    key.update(" ".join(identity).encode())
    name = f"liquid_kernels-{key.hexdigest()[:16]}.so"
    for out_dir in (cache_dir(), Path(tempfile.gettempdir()) / f"liquid_control-{os.getuid()}" / "native"):
        if (out_dir / name).exists():
            return out_dir / name
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            if os.access(out_dir, os.W_OK):
                break
        except OSError:
            continue  # e.g. a read-only home on a robot: build under the temporary directory
    else:
        raise RuntimeError(f"no writable directory for the compiled kernels (tried {cache_dir()})")
    target = out_dir / name
    link = [f"-L{blas.parent}", "-l" + blas.name[3:].split(".")[0], f"-Wl,-rpath,{blas.parent}"]
    errors = []
    for arch in (["-march=native"], []):  # -march=native is not known to every compiler
        fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".so.tmp")
        os.close(fd)
        cmd = [
            compiler,
            *OPT_FLAGS,
            *arch,
            *extra_flags,
            "-I",
            str(SOURCE_DIR),
            str(SOURCE_DIR / "kernels.c"),
            "-o",
            tmp,
            *link,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode == 0:
            os.replace(tmp, target)  # atomic: a concurrent build or reader never sees a partial library
            return target
        os.unlink(tmp)
        errors.append(result.stderr.strip().splitlines()[-1:] or ["(no output)"])
    raise RuntimeError(f"compiling {SOURCE_DIR / 'kernels.c'} failed: {errors[-1][0]}")
