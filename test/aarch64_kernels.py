"""The compiled kernels cross-compiled for aarch64 and run under qemu-aarch64, behind the cells' own interface.

torch does not run under user-mode emulation, so the kernels' C sources are built into a small static aarch64
program (``driver.c``, generated here from the same ``LIQUID_API`` prototypes the ctypes bindings use) that
serves calls over a pipe: each argument in prototype order, every writable buffer sent back after the call.
``QemuKernels`` answers ``function(name, dtype)`` like ``native.NativeKernels``, so the cells run their compiled
paths on it unchanged while torch computes the references on the host. The driver brings its own reference
BLAS (column-major ``sgemm_`` / ``dgemm_``, double accumulation) for the products that use the BLAS.

Needs ``aarch64-linux-gnu-gcc`` and ``qemu-aarch64`` (Debian: gcc-aarch64-linux-gnu, qemu-user;
``scripts/bootstrap.sh test`` installs them as root).
"""

from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import torch

from liquid_control.cells import native
from liquid_control.cells.native import bindings
from liquid_control.cells.native.cache import OPT_FLAGS, SOURCE_DIR

CROSS_CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"

_RUNTIME = r"""
#include <stdio.h>
#include <stdlib.h>

static void die(const char *what) { fprintf(stderr, "driver: %s\n", what); exit(2); }
static void rd(void *p, size_t n) { if (n && fread(p, 1, n, stdin) != n) exit(0); }
static void wr(const void *p, size_t n) { if (n && fwrite(p, 1, n, stdout) != n) die("write"); }
static int rd_i32(void) { int v; rd(&v, 4); return v; }
static long long rd_i64(void) { long long v; rd(&v, 8); return v; }
static float rd_f32(void) { float v; rd(&v, 4); return v; }
static double rd_f64(void) { double v; rd(&v, 8); return v; }
typedef struct { void *p; long long n; } buf;
static buf rd_buf(size_t elem) {
    buf b; rd(&b.n, 8);
    b.p = NULL;
    if (b.n >= 0) { b.p = malloc(b.n * elem + 64); if (!b.p) die("malloc"); rd(b.p, b.n * elem); }
    return b;
}
typedef struct { void **ps; buf *bs; int n; } bufs;
static bufs rd_bufs(size_t elem) {
    bufs a; a.n = rd_i32(); a.ps = NULL; a.bs = NULL;
    if (a.n >= 0) {
        a.bs = malloc((a.n + 1) * sizeof(buf)); a.ps = malloc((a.n + 1) * sizeof(void *));
        for (int i = 0; i < a.n; i++) { a.bs[i] = rd_buf(elem); a.ps[i] = a.bs[i].p; }
    }
    return a;
}
static void wr_buf(buf b, size_t elem) { if (b.n > 0) wr(b.p, b.n * elem); free(b.p); }
static void wr_bufs(bufs a, size_t elem) {
    for (int i = 0; i < a.n; i++) wr_buf(a.bs[i], elem);
    free(a.bs); free(a.ps);
}
static void free_buf(buf b) { free(b.p); }
static void free_bufs(bufs a) { for (int i = 0; i < a.n; i++) free(a.bs[i].p); free(a.bs); free(a.ps); }
static void wr_result(long long v) { wr(&v, 8); fflush(stdout); }

/* Reference Fortran BLAS: C = alpha op(A) op(B) + beta C, column-major. */
#define REF_GEMM(name, T)                                                                                   \
    void name(const char *ta, const char *tb, const int *m, const int *n, const int *k, const T *alpha,      \
              const T *a, const int *lda, const T *b, const int *ldb, const T *beta, T *c, const int *ldc) {  \
        for (int j = 0; j < *n; j++)                                                                        \
            for (int i = 0; i < *m; i++) {                                                                  \
                double acc = 0;                                                                             \
                for (int l = 0; l < *k; l++) {                                                              \
                    double av = *ta == 'N' ? a[i + (size_t)l * *lda] : a[l + (size_t)i * *lda];             \
                    double bv = *tb == 'N' ? b[l + (size_t)j * *ldb] : b[j + (size_t)l * *ldb];             \
                    acc += av * bv;                                                                         \
                }                                                                                           \
                T *cij = c + i + (size_t)j * *ldc;                                                          \
                *cij = (T)(*alpha * acc + (*beta == 0 ? 0 : *beta * *cij));                                 \
            }                                                                                               \
    }
REF_GEMM(sgemm_, float)
REF_GEMM(dgemm_, double)
"""

_CTYPE_C = {
    ctypes.c_int: ("int", "rd_i32()"),
    ctypes.c_int64: ("int64_t", "rd_i64()"),
    ctypes.c_float: ("float", "rd_f32()"),
    ctypes.c_double: ("double", "rd_f64()"),
}
_ELEMENT_SIZE = {torch.float32: 4, torch.float64: 8, torch.uint8: 1, torch.int32: 4}


def driver_source() -> str:
    """C source of the driver: the kernels plus one dispatch case per ``LIQUID_API`` function."""
    cases = []
    for proto in native.prototypes().values():
        lines, args, after = [f'    if (!strcmp(name, "{proto.symbol}")) {{'], [], []
        for p in proto.parameters:
            if p.kind == "scalar":
                ctype, reader = _CTYPE_C[p.ctype]
                lines.append(f"        {ctype} {p.name} = {reader};")
                args.append(p.name)
            elif p.kind == "pointer":
                size = _ELEMENT_SIZE[p.element]
                lines.append(f"        buf {p.name} = rd_buf({size});")
                args.append(f"(void *){p.name}.p")
                after.append(f"wr_buf({p.name}, {size});" if p.writable else f"free_buf({p.name});")
            else:
                size = _ELEMENT_SIZE[p.element]
                lines.append(f"        bufs {p.name} = rd_bufs({size});")
                args.append(f"(void *){p.name}.ps")
                after.append(f"wr_bufs({p.name}, {size});" if p.writable else f"free_bufs({p.name});")
        call = f"{proto.symbol}({', '.join(args)})"
        if proto.result is None:
            lines += [f"        {call};"] + [f"        {a}" for a in after] + ["        wr_result(0);"]
        else:
            lines += [f"        long long result = (long long){call};"] + [f"        {a}" for a in after]
            lines += ["        wr_result(result);"]
        cases.append("\n".join(lines + ["        continue;", "    }"]))
    main = (
        "int main(void) {\n    char name[128];\n    for (;;) {\n    unsigned len; rd(&len, 4);\n"
        '    if (len >= sizeof name) die("name");\n    rd(name, len); name[len] = 0;\n'
        + "\n".join(cases)
        + "\n    die(name);\n    }\n}\n"
    )
    return '#include "kernels.c"\n#include <string.h>\n' + _RUNTIME + main


def tools_available() -> bool:
    return shutil.which(CROSS_CC) is not None and shutil.which(QEMU) is not None


def build_driver(directory: Path) -> Path:
    """Cross-compile the driver (static, so qemu needs no aarch64 sysroot) with the library's own flags."""
    source = directory / "driver.c"
    source.write_text(driver_source())
    flags = [f for f in OPT_FLAGS if f not in ("-shared", "-fPIC", "-fvisibility=hidden")]
    out = directory / "driver"
    cmd = [CROSS_CC, *flags, "-static", "-I", str(SOURCE_DIR), str(source), "-o", str(out), "-lm"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


class QemuKernels:
    """``native.NativeKernels``'s interface, executed by the aarch64 driver under qemu."""

    def __init__(self, driver: Path):
        self.path = driver
        self._proc = subprocess.Popen([QEMU, str(driver)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._functions = {key: QemuFunction(proto, self) for key, proto in native.prototypes().items()}
        if self.function("liquid_selftest")() != 1:
            raise RuntimeError("the aarch64 driver's BLAS self-test failed")
        self.isa = ("avx512", "avx2", "portable")[self.function("liquid_isa")()]

    def function(self, name: str, dtype: torch.dtype | None = None):
        return self._functions[(name, bindings.SUFFIX.get(dtype) if dtype is not None else None)]

    def supports(self, *tensors: torch.Tensor) -> bool:
        dtype = tensors[0].dtype
        return dtype in bindings.SUFFIX and all(t.device.type == "cpu" and t.dtype == dtype for t in tensors)

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait(timeout=10)
        self._proc.stdout.close()

    def exchange(self, request: bytes, reply_sizes: list[int]) -> tuple[list[bytes], int]:
        self._proc.stdin.write(request)
        self._proc.stdin.flush()
        replies = [self._read(n) for n in reply_sizes]
        return replies, struct.unpack("<q", self._read(8))[0]

    def _read(self, n: int) -> bytes:
        data = self._proc.stdout.read(n) if n else b""
        if len(data) != n:
            raise RuntimeError(f"the aarch64 driver stopped (exit code {self._proc.poll()})")
        return data


class _QemuBound:
    """``bindings.BoundCall``'s interface; ``unchecked`` is checked too (the tensors cross a pipe anyway)."""

    def __init__(self, function, fixed):
        self.function, self.fixed = function, fixed

    def __call__(self, **rest):
        return self.function(**self.fixed, **rest)

    unchecked = __call__


class QemuFunction:
    """One kernel called by name through the driver (same argument checks as ``bindings.CFunction``)."""

    def __init__(self, proto: bindings.Prototype, owner: QemuKernels):
        self.proto, self.owner = proto, owner
        self.names = tuple(p.name for p in proto.parameters)

    def bind(self, **fixed):
        return _QemuBound(self, fixed)

    def __call__(self, **arguments):
        missing = [n for n in self.names if n not in arguments]
        unknown = sorted(set(arguments) - set(self.names))
        if missing or unknown:
            raise TypeError(f"{self.proto.symbol}: missing {missing}, unknown {unknown}")
        name = self.proto.symbol.encode()
        parts, writes = [struct.pack("<I", len(name)), name], []
        for p in self.proto.parameters:
            value = arguments[p.name]
            if p.kind == "scalar":
                fmt = {ctypes.c_int: "<i", ctypes.c_int64: "<q", ctypes.c_float: "<f", ctypes.c_double: "<d"}[p.ctype]
                parts.append(struct.pack(fmt, value))
            elif p.kind == "pointer":
                parts.append(self._tensor(p, value, writes))
            elif value is None:
                parts.append(struct.pack("<i", -1))
            else:
                parts.append(struct.pack("<i", len(value)))
                parts.extend(self._tensor(p, t, writes) for t in value)
        replies, result = self.owner.exchange(b"".join(parts), [t.numel() * t.element_size() for t in writes])
        for tensor, data in zip(writes, replies):
            tensor.detach().view(-1).copy_(torch.from_numpy(np.frombuffer(data, dtype=tensor.numpy().dtype).copy()))
        return result

    def _tensor(self, p: bindings.Parameter, value, writes: list) -> bytes:
        if value is None:
            return struct.pack("<q", -1)
        if value.dtype != p.element or not value.is_contiguous():
            raise TypeError(f"{self.proto.symbol}: {p.name} must be a contiguous {p.element} tensor")
        if p.writable and value.numel():
            writes.append(value)
        return struct.pack("<q", value.numel()) + value.detach().numpy().tobytes()
