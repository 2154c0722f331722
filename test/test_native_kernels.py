"""The compiled kernels (``liquid_control/cells/native``): their exp, the build cache, and the torch fallback.

Their numerics inside the cells are checked in test_cells.py (fused paths vs autograd, compiled and torch)."""

import ctypes
import os
import platform
import shutil
import warnings

import numpy as np
import pytest
import torch

from liquid_control.cells import LTC, native

needs_compiler = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vectorised_exp_is_within_two_ulp_of_numpy_and_propagates_nan(dtype):
    kernels = native.load()
    assert kernels is not None
    lo, hi = (-87.0, 88.0) if dtype == torch.float32 else (-708.0, 708.0)
    x = torch.cat([torch.linspace(lo, hi, 200_001, dtype=dtype), torch.tensor([0.0, 1e-30, -1e-30], dtype=dtype)])
    y = torch.empty_like(x)
    kernels.call("liquid_exp", dtype, x.numel(), x, y)
    ref = np.exp(x.numpy().astype(np.float64))
    ulp = np.abs(y.numpy() - ref) / ref / torch.finfo(dtype).eps
    assert ulp.max() <= 2.0
    special = torch.tensor([float("nan"), 1e4, -1e4], dtype=dtype)
    out = torch.empty_like(special)
    kernels.call("liquid_exp", dtype, 3, special, out)
    assert torch.isnan(out[0]) and torch.isfinite(out[1:]).all() and out[1] > 1e37 and 0 <= out[2] < 1e-37


@needs_compiler
def test_build_is_cached_and_atomic(tmp_path, monkeypatch):
    monkeypatch.setenv("LIQUID_CONTROL_CACHE", str(tmp_path))
    first = native.build()
    stamp = first.stat().st_mtime_ns
    assert native.build() == first and first.stat().st_mtime_ns == stamp  # second call reuses the library
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary files left behind
    assert ctypes.CDLL(str(first)).liquid_selftest() == 1


def test_without_a_compiler_the_cells_warn_once_and_use_the_torch_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("LIQUID_CONTROL_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(native, "_state", {})
    with pytest.warns(UserWarning, match="compiled kernels unavailable.*no C compiler"):
        assert native.load() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.load() is None  # the answer is remembered: no second warning
    torch.manual_seed(0)
    model = LTC(3, 4).double()
    x, dt = torch.randn(2, 5, 3, dtype=torch.float64), torch.full((2, 5), 0.1, dtype=torch.float64)
    out, h_n = model(x, dt)
    out.sum().backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_turned_off_by_environment(monkeypatch):
    monkeypatch.setenv("LIQUID_CONTROL_NATIVE", "0")
    monkeypatch.setattr(native, "_state", {})
    assert native.load() is None


@needs_compiler
def test_rejects_non_contiguous_tensors():
    kernels = native.load()
    x = torch.zeros(4, 2)[:, 0]
    with pytest.raises(ValueError, match="contiguous"):
        kernels.call("liquid_exp", torch.float32, 4, x, torch.empty(4))


@needs_compiler
@pytest.mark.parametrize("build", [(), ("-mno-avx512f",)], ids=["native", "without_avx512"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("shape", [(32, 256, 128), (3, 5, 7), (9, 33, 2), (17, 100, 64), (1, 1, 1)])
def test_matrix_kernel_equals_torch_including_tails_and_accumulation(dtype, trans_a, shape, build):
    """The register-tiled product (8 x 32 tiles, masked tails) used by the CfC loops and weight gradients, and
    the BLAS that replaces it without AVX-512."""
    if build and platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("-mno-avx512f is an x86 flag")
    M, N, K = shape
    g = torch.Generator().manual_seed(M * 1000 + N)
    a = torch.randn((K, M) if trans_a else (M, K), generator=g, dtype=dtype)
    b = torch.randn(K, N + 3, generator=g, dtype=dtype)[:, :N]  # a leading dimension wider than N
    c0 = torch.randn(M, N, generator=g, dtype=dtype)
    op_a = a.t() if trans_a else a
    fn = native.open_library(native.build(build)).function("liquid_mm", dtype)
    for accumulate in (0, 1):
        c = c0.clone()
        fn(trans_a, M, N, K, a.data_ptr(), a.shape[1], b.data_ptr(), b.stride(0), accumulate, c.data_ptr(), N)
        expected = op_a @ b + (c0 if accumulate else 0)
        tol = 1e-4 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(c, expected, atol=tol * K**0.5, rtol=tol)


@needs_compiler
def test_unwritable_cache_falls_back_to_the_temporary_directory(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("LIQUID_CONTROL_CACHE", str(blocker))
    path = native.build()
    assert path.exists() and blocker not in path.parents
    assert ctypes.CDLL(str(path)).liquid_selftest() == 1
