"""The kernel variants that tests depending on the compiled kernels run, so results hold on every CPU.

- ``native``: the library built for this CPU (``-march=native``: AVX-512 or AVX2 code on x86-64);
- ``no_avx512``: built with ``-mno-avx512f`` (the AVX2 code an x86-64 CPU without AVX-512 runs); the same build
  as ``native`` on a CPU without AVX-512, so skipped there as a duplicate;
- ``portable``: built without AVX-512, AVX2, FMA and AVX (the 4-lane vector-extension code that aarch64 and
  other CPUs run, here as SSE; ``test_native_kernels_aarch64.py`` runs it as NEON under qemu-aarch64);
- ``without``: no compiled library (``native.load()`` returns None, as with ``LIQUID_CONTROL_NATIVE=0``).

The compiled variants are built explicitly (``native.open_library``), also when ``LIQUID_CONTROL_NATIVE=0``
turns them off for the rest of the suite; only a missing C compiler skips them.
"""

import platform

import pytest

from liquid_control.cells import native
from liquid_control.cells.native import cache

VARIANTS = ("native", "no_avx512", "portable", "without")
FLAGS = {
    "native": (),
    "no_avx512": ("-mno-avx512f",),
    "portable": ("-mno-avx512f", "-mno-avx2", "-mno-fma", "-mno-avx"),
}
X86 = platform.machine() in ("x86_64", "AMD64")
_libraries: dict = {}


def has_compiler() -> bool:
    """Whether the kernels' build finds a compiler (``$CC`` read as the build reads it: ``ccache gcc`` too)."""
    try:
        cache.compiler()
    except RuntimeError:
        return False
    return True


def library(variant: str):
    """The loaded library of a compiled variant (built once per session); skips where it cannot exist."""
    if not has_compiler():
        pytest.skip("no C compiler: the compiled kernels cannot be built here")
    if variant != "native" and not X86:
        pytest.skip(f"the {variant!r} build uses x86 flags; this is {platform.machine()}")
    if variant not in _libraries:
        _libraries[variant] = native.open_library(FLAGS[variant])
    kernels = _libraries[variant]
    if variant == "no_avx512" and library("native").isa != "avx512":
        pytest.skip("this CPU has no AVX-512: the native build already is the no-AVX-512 build")
    return kernels


def use(variant: str, monkeypatch):
    """Make the cells use ``variant`` (monkeypatches ``native.load``); returns the library or None."""
    kernels = None if variant == "without" else library(variant)
    monkeypatch.setattr(native, "load", lambda: kernels)
    return kernels
