"""The compiled kernels (``liquid_control/cells/native``): exp and matrix product, bindings read from the C
prototypes, the private build cache (planted and swapped libraries refused), the compiler timeout, and the
fallback to torch.

Their numerics inside the cells are checked in test_cells.py (fused paths vs autograd, compiled and torch);
the portable code under qemu-aarch64 in test_native_kernels_aarch64.py."""

import errno
import hashlib
import json
import os
import platform
import shlex
import shutil
import signal
import stat
import subprocess
import threading
import time
import warnings

import kernel_variants
import numpy as np
import pytest
import torch

from liquid_control.cells import LTC, kernels, native
from liquid_control.cells.native import bindings
from liquid_control.cells.native import cache as native_cache

needs_compiler = pytest.mark.skipif(not kernel_variants.has_compiler(), reason="no C compiler")


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A fresh cache directory for this test, and no remembered library or warning; the umask Ubuntu gives its
    users (002: new files group-writable), whatever the one of the run, so what the cache writes is private
    because the cache makes it so (the suite passed under 022 only: its seeded records were refused under 002)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LIQUID_CONTROL_CACHE", str(cache))
    monkeypatch.delenv("LIQUID_CONTROL_NATIVE", raising=False)
    monkeypatch.setattr(native, "_state", {})
    umask = os.umask(0o002)
    yield cache / "native"
    os.umask(umask)


@pytest.mark.parametrize("variant", ["native", "no_avx512", "portable"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vectorised_exp_is_within_two_ulp_of_numpy_and_propagates_nan(dtype, variant):
    exp = kernel_variants.library(variant).function("liquid_exp", dtype)
    lo, hi = (-87.0, 88.0) if dtype == torch.float32 else (-708.0, 708.0)
    x = torch.cat([torch.linspace(lo, hi, 200_001, dtype=dtype), torch.tensor([0.0, 1e-30, -1e-30], dtype=dtype)])
    y = torch.empty_like(x)
    exp(n=x.numel(), x=x, y=y)
    ref = np.exp(x.numpy().astype(np.float64))
    ulp = np.abs(y.numpy() - ref) / ref / torch.finfo(dtype).eps
    assert ulp.max() <= 2.0
    special = torch.tensor([float("nan"), 1e4, -1e4], dtype=dtype)
    out = torch.empty_like(special)
    exp(n=3, x=special, y=out)
    assert torch.isnan(out[0]) and torch.isfinite(out[1:]).all() and out[1] > 1e37 and 0 <= out[2] < 1e-37


@pytest.mark.parametrize("variant", ["native", "no_avx512", "portable"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("shape", [(32, 256, 128), (3, 5, 7), (9, 33, 2), (17, 100, 64), (1, 1, 1)])
def test_matrix_kernel_equals_torch_including_tails_and_accumulation(dtype, trans_a, shape, variant):
    """The register-tiled products (AVX-512, AVX2 or portable tiles with tails) used by the CfC loops and
    weight gradients; in float64 the BLAS."""
    M, N, K = shape
    g = torch.Generator().manual_seed(M * 1000 + N)
    a = torch.randn((K, M) if trans_a else (M, K), generator=g, dtype=dtype)
    b_wide = torch.randn(K, N + 3, generator=g, dtype=dtype)  # a leading dimension wider than N
    c0 = torch.randn(M, N, generator=g, dtype=dtype)
    op_a = a.t() if trans_a else a
    mm = kernel_variants.library(variant).function("liquid_mm", dtype)
    for accumulate in (0, 1):
        c = c0.clone()
        mm(trans_a=trans_a, M=M, N=N, K=K, A=a, lda=a.shape[1], B=b_wide, ldb=N + 3, accumulate=accumulate, C=c, ldc=N)
        expected = op_a @ b_wide[:, :N] + (c0 if accumulate else 0)
        tol = 1e-4 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(c, expected, atol=tol * max(K, 1) ** 0.5, rtol=tol)


def test_each_variant_runs_the_vector_code_it_was_built_for():
    isa = kernel_variants.library("native").isa
    assert isa in ("avx512", "avx2", "portable")
    if kernel_variants.X86:
        assert kernel_variants.library("portable").isa == "portable"
        cpu = open("/proc/cpuinfo").read()
        assert isa == ("avx512" if " avx512f" in cpu else "avx2" if " avx2" in cpu and " fma" in cpu else "portable")


# ---- the CPU the library was built for -----------------------------------------------------------------
def _feature_names(mask):
    return [name for bit, name in sorted(native.cpu_features().items()) if mask >> bit & 1]


@pytest.mark.skipif(not kernel_variants.X86, reason="the check covers x86 features")
def test_each_variant_checks_exactly_the_features_it_was_compiled_for():
    for variant in ("native", "no_avx512", "portable"):
        missing = kernel_variants.library(variant).function("liquid_cpu_missing")
        assert missing(pretend_absent=0) == 0  # this CPU runs what was built for it
        compiled_for = _feature_names(missing(pretend_absent=-1))
        assert ("avx512f" in compiled_for) == (kernel_variants.library(variant).isa == "avx512")
        if variant == "portable":
            assert not {"avx", "avx2", "fma"} & set(compiled_for) and "sse3" in compiled_for


# Instruction-set macros of a target that liquid_cpu_missing does not check, and why (kernels.c says the same):
# instructions a C compiler emits only for their own intrinsics or builtins, which the sources never call.
NOT_CHECKED = {
    "RDRND", "RDSEED", "XSAVE", "XSAVEC", "XSAVEOPT", "XSAVES", "FSGSBASE", "CLFLUSHOPT", "CLWB", "CLDEMOTE",
    "MOVDIRI", "MOVDIR64B", "PKU", "RDPID", "SERIALIZE", "SHSTK", "TSXLDTRK", "WBNOINVD", "PRFCHW", "CLZERO",
    "MWAITX", "RDPRU", "LWP", "SGX", "PCONFIG", "WAITPKG", "ENQCMD", "UINTR", "HRESET", "PTWRITE", "KL", "WIDEKL",
    "RTM", "HLE", "PREFETCHWT1",
    "CRC32",  # part of SSE4.2, which is checked (GCC 12 has no name for it)
}  # fmt: skip


@needs_compiler
@pytest.mark.skipif(not kernel_variants.X86, reason="the check covers x86 features")
def test_every_instruction_set_of_the_native_target_is_checked_or_listed_as_not_checked():
    """Before: 21 features were checked while -march=native here also enabled F16C, LZCNT, MOVBE, ADX,
    AVX512-FP16/BF16, AVX-VNNI, GFNI, VAES, VPCLMULQDQ and AMX; a library using one of them would pass the check
    on a CPU without it. Every ``__NAME__ 1`` macro that -march=native adds to the compiler's defaults names an
    instruction set: it is checked (by the native build, where the compiler knows its name) or in NOT_CHECKED."""
    import re

    cc = native_cache.compiler()
    macros = lambda text: set(re.findall(r"^#define __([A-Z0-9_]+)__ 1$", text, re.M))  # noqa: E731
    default = native_cache.run_compiler([*cc, "-E", "-dM", "-x", "c", os.devnull], 60).stdout
    target = macros(native_cache.native_target(cc, 60)) - macros(default)
    source = (native_cache.SOURCE_DIR / "kernels.c").read_text()
    guarded = re.findall(
        r"#(?:ifdef __(\w+)__|if (\w+ && )?defined\(__(\w+)__\))\n\s*CPU_FEATURE\(\d+, \"([\w.-]+)\"\)", source
    )
    feature = {a or c: (bool(gcc12), name) for a, gcc12, c, name in guarded}
    assert len(feature) == len(native.cpu_features()) == len(guarded)  # every CPU_FEATURE line read here
    gcc12 = "__clang__" not in default and int(re.search(r"__GNUC__ (\d+)", default).group(1)) >= 12
    checked = set(_feature_names(kernel_variants.library("native").function("liquid_cpu_missing")(pretend_absent=-1)))
    unaccounted = sorted(target - NOT_CHECKED - set(feature))
    major = None if "__clang__" in default else int(re.search(r"__GNUC__ (\d+)", default).group(1))
    if unaccounted and major != 12:  # the lists are GCC 12's (Debian 12's compiler): a newer one names newer sets
        pytest.skip(f"GCC {major or '(clang)'} enables sets the GCC 12 lists do not name: {unaccounted}")
    assert not unaccounted, f"instruction sets of -march=native neither checked nor in NOT_CHECKED: {unaccounted}"
    for macro in sorted(target - NOT_CHECKED):
        needs_gcc12, name = feature[macro]
        assert name in checked or (needs_gcc12 and not gcc12), f"{macro}: {name} not checked by the native build"
    assert not NOT_CHECKED & set(feature)
    comment = source[source.index("Not checked:") : source.index("test_native_kernels.py holds")]
    assert [m for m in NOT_CHECKED if m not in comment and not m.startswith("XSAVE")] == []  # kernels.c names them


@needs_compiler
@pytest.mark.skipif(not kernel_variants.X86, reason="the check covers x86 features")
def test_a_library_compiled_for_features_this_cpu_lacks_is_refused_and_torch_runs(
    suite_build, private_cache, monkeypatch
):
    """Before: nothing checked the CPU at run time: an AVX-512 library on an AVX2 CPU (a cache shared between
    machines whose key matched) died of SIGILL at its first call. Here the CPU pretends to lack every feature."""
    lacks = "avx512f" if kernel_variants.library("native").isa == "avx512" else "sse3"
    path, _ = _seed_cache(private_cache, suite_build)
    monkeypatch.setattr(native, "PRETEND_CPU_LACKS", -1)
    with pytest.warns(UserWarning, match=f"unavailable.*refused {path}: it was compiled for a CPU with .*{lacks}"):
        assert native.load() is None
    with kernels.recording() as ran, torch.no_grad():
        LTC(3, 4).cell.eval().step(torch.randn(1, 3), None, 0.1)
    assert ran == [("ltc", "step", "numpy")]


DRIVER = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    void *library = dlopen(argv[1], RTLD_NOW);
    if (!library) { printf("dlopen: %s\n", dlerror()); return 2; }
    long long (*missing)(long long) = (long long (*)(long long))dlsym(library, "liquid_cpu_missing");
    if (!missing) { printf("no liquid_cpu_missing\n"); return 2; }
    printf("%lld\n", missing(0));
    fflush(stdout);
    if (argc > 2 && !strcmp(argv[2], "run")) {  /* what the loader no longer does on such a CPU */
        typedef void (*exp_f32)(int, const float *, float *);
        exp_f32 exp = (exp_f32)dlsym(library, "liquid_exp_f32");
        float x[64] = {0}, y[64];
        exp(64, x, y);
    }
    return 0;
}
"""


@needs_compiler
@pytest.mark.skipif(not kernel_variants.X86 or shutil.which("qemu-x86_64") is None, reason="needs qemu-x86_64")
def test_on_an_emulated_older_cpu_the_check_names_the_missing_features_where_a_kernel_dies_of_sigill(tmp_path):
    """The real check (__builtin_cpu_supports, compiled for the baseline x86-64) on a CPU without the library's
    vector instructions: qemu-x86_64 -cpu Haswell (no AVX-512) for an AVX-512 build, Nehalem (no AVX) else."""
    library = kernel_variants.library("native")
    cpu, lacks = {"avx512": ("Haswell", "avx512f"), "avx2": ("Nehalem", "avx2")}.get(library.isa, (None, None))
    if cpu is None:
        pytest.skip("this CPU's build has no AVX2")
    (tmp_path / "stub.c").write_text("void sgemm_(void) {}\nvoid dgemm_(void) {}\n")  # torch's BLAS, for dlopen
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-o", str(tmp_path / "libtorch_cpu.so"), str(tmp_path / "stub.c")], check=True
    )
    (tmp_path / "driver.c").write_text(DRIVER)
    subprocess.run(["cc", "-o", str(tmp_path / "driver"), str(tmp_path / "driver.c"), "-ldl"], check=True)
    env = dict(os.environ, LD_LIBRARY_PATH=str(tmp_path))  # the stub instead of libtorch_cpu (RUNPATH yields)
    for mode, returncode in (("check", 0), ("run", -signal.SIGILL)):
        args = ["qemu-x86_64", "-cpu", cpu, str(tmp_path / "driver"), str(library.path), mode]
        out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == returncode, out.stdout + out.stderr
        assert lacks in _feature_names(int(out.stdout.split()[0]))


@needs_compiler
def test_without_proc_cpuinfo_the_key_follows_what_the_compiler_makes_of_march_native(monkeypatch):
    """Before: without a readable /proc/cpuinfo the key held platform.processor() (often '' or 'x86_64'): AVX-512
    and AVX2 machines sharing a cache shared one library."""
    import pathlib

    read_text = pathlib.Path.read_text

    def no_cpuinfo(self, *args, **kwargs):
        if str(self) == "/proc/cpuinfo":
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", no_cpuinfo)
    assert native_cache._cpu_identity() is None
    cc = native_cache.compiler()
    base = native_cache.library_base((), cc, 60)
    assert native_cache.library_base((), cc, 60) == base
    if kernel_variants.X86:  # a compiler whose -march=native lacks AVX2: another target, another library
        assert native_cache.library_base((), [*cc, "-mno-avx2"], 60) != base
    with pytest.raises(RuntimeError, match="no C compiler found, and no /proc/cpuinfo"):
        native_cache.library_base()


# ---- bindings read from the C prototypes ----------------------------------------------------------------
@needs_compiler
@pytest.mark.skipif(shutil.which("nm") is None, reason="needs nm (binutils) to list the library's symbols")
def test_bindings_are_exactly_the_exported_functions_of_the_library(tmp_path):
    """Every LIQUID_API prototype is exported and nothing else is (-fvisibility=hidden): the parsed
    declarations are the library's whole interface."""
    lib = kernel_variants.library("native")
    declared = {proto.symbol for proto in native.prototypes().values()}
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib.path)], capture_output=True, text=True, check=True)
    exported = {line.split()[-1] for line in out.stdout.splitlines() if line.split()[-2:-1] == ["T"]}
    assert exported == declared
    assert {"cfc_forward_f32", "cfc_backward_f64", "ltc_step_f32", "liquid_selftest"} <= declared


def test_prototype_parser_reads_types_and_refuses_what_it_cannot_express(tmp_path):
    source = tmp_path / "k.inc"
    source.write_text(
        "LIQUID_API void FN(f)(int n, REAL k, const REAL *restrict x, REAL *const *ys, const uint8_t *m) {}\n"
        "/* LIQUID_API void FN(commented_out)(int n) {} */\n"
        "LIQUID_API size_t g(void) { return 0; }\n"
    )
    found = bindings.parse_prototypes([source])
    assert set(found) == {("f", "f32"), ("f", "f64"), ("g", None)}
    f32 = found[("f", "f32")]
    assert [(p.name, p.kind) for p in f32.parameters] == [
        ("n", "scalar"),
        ("k", "scalar"),
        ("x", "pointer"),
        ("ys", "pointers"),
        ("m", "pointer"),
    ]
    assert f32.parameters[1].ctype.__name__ == "c_float" and found[("f", "f64")].parameters[1].ctype.__name__ == (
        "c_double"
    )
    assert f32.parameters[2].element == torch.float32 and f32.parameters[4].element == torch.uint8
    source.write_text("LIQUID_API void h(struct thing *t) {}\n")
    with pytest.raises(bindings.BindingError, match="unsupported pointer type"):
        bindings.parse_prototypes([source])


@needs_compiler
def test_named_calls_are_checked_against_the_prototype():
    exp = kernel_variants.library("native").function("liquid_exp", torch.float32)
    x, y = torch.zeros(4), torch.empty(4)
    with pytest.raises(TypeError, match="missing argument.*y"):
        exp(n=4, x=x)
    with pytest.raises(TypeError, match="unknown argument.*z"):
        exp(n=4, x=x, y=y, z=y)
    with pytest.raises(TypeError, match="y must be torch.float32, got torch.float64"):
        exp(n=4, x=x, y=torch.empty(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="contiguous"):
        exp(n=4, x=torch.zeros(4, 2)[:, 0], y=y)
    bound = exp.bind(n=4, x=x)
    bound(y=y)
    assert torch.equal(y, torch.ones(4))
    with pytest.raises(TypeError, match="missing argument.*y"):
        bound()


# ---- the build cache: private, verified, never a planted library ----------------------------------------
PLANTED = r"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen("%s", "w");
    if (f) { fputs("planted code ran\n", f); fclose(f); }
}
int liquid_selftest(void) { return 1; }
"""


def _plant_library(path, marker, cc="cc"):
    mode = path.stat().st_mode if path.exists() else 0o700  # the linker's output takes the umask: kept as it was
    source = path.parent / "planted.c"
    source.write_text(PLANTED % marker)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(path), str(source)], check=True)
    path.chmod(stat.S_IMODE(mode))
    source.unlink()


def _expected_names(directory):
    base = native_cache.library_base()
    return directory / f"{base}.json", base


@needs_compiler
def test_build_is_cached_verified_and_leaves_no_temporary_files(private_cache):
    path, data = native.build()
    stamp = path.stat().st_mtime_ns
    assert native.build() == (path, data) and path.stat().st_mtime_ns == stamp  # reused, not rebuilt
    record, base = _expected_names(private_cache)
    assert sorted(p.name for p in private_cache.iterdir()) == sorted([path.name, record.name])
    assert stat.S_IMODE(private_cache.stat().st_mode) == 0o700
    entry = json.loads(record.read_text())
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    cc = native_cache.compiler()
    assert entry["compiler"] == native_cache.compiler_identity(cc, 60) and os.path.realpath(cc[0]) in entry["compiler"]
    assert native.open_library().function("liquid_selftest")() == 1


@needs_compiler
@pytest.mark.parametrize("owner", ["us", "another_user"])
def test_planted_library_in_a_world_writable_fallback_dir_is_refused(tmp_path, monkeypatch, owner):
    """Issue 9: another local user pre-creates the predictable /tmp fallback (mode 777) with a library of the
    expected name whose constructor runs on dlopen. It must never be loaded: warning, torch path."""
    if owner == "another_user" and os.geteuid() != 0:
        pytest.skip("making a directory owned by another user needs root")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory should be")  # the home cache cannot be created
    monkeypatch.setenv("LIQUID_CONTROL_CACHE", str(blocker))
    monkeypatch.setattr(native_cache.tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.delenv("LIQUID_CONTROL_NATIVE", raising=False)
    monkeypatch.setattr(native, "_state", {})
    fallback = native_cache.fallback_dir()
    fallback.mkdir(parents=True)
    os.chmod(fallback, 0o777)
    (tmp_path / "tmp").chmod(0o1777)  # like /tmp: world-writable and sticky
    marker = tmp_path / "planted-code-ran"
    record, base = _expected_names(fallback)
    fake = fallback / f"{base}-{'0' * 16}.so"
    _plant_library(fake, marker)
    record.write_text(json.dumps({"sha256": "0" * 64, "compiler": ""}))  # a matching-looking record too
    if owner == "another_user":
        for p in (fallback.parent, fallback, fake, record):
            os.chown(p, 65534, 65534)
    with pytest.warns(UserWarning, match=r"REFUSED.*(owned by uid 65534|writable by group or others)"):
        assert native.load() is None
    assert not marker.exists()
    torch.manual_seed(0)
    with kernels.recording() as ran:
        out, _ = LTC(3, 4)(torch.randn(2, 5, 3), 0.1)
    assert ran == [("ltc", "sequence", "torch")] and torch.isfinite(out).all()
    assert not marker.exists()


@pytest.fixture(scope="module")
def suite_build():
    """The library of the suite's own cache (built once; module scope: before any test moves the cache)."""
    return native.build()


def _seed_cache(directory, suite_build):
    """Put the suite's verified build (library + record) into ``directory``, as if built there (no compile)."""
    path, data = suite_build
    native_cache.private_dir(directory)
    record, base = _expected_names(path.parent)
    for name, content in ((path.name, data), (record.name, record.read_bytes())):
        (directory / name).write_bytes(content)
        (directory / name).chmod(0o600)  # as the build leaves them, whatever the umask
    return directory / path.name, data


@needs_compiler
def test_library_swapped_after_our_build_is_refused(suite_build, private_cache, tmp_path):
    path, _ = _seed_cache(private_cache, suite_build)
    assert native.build()[0] == path  # found and verified, not rebuilt
    marker = tmp_path / "planted-code-ran"
    _plant_library(path, marker)  # same name, same owner and mode: only the digest tells
    native._state.clear()
    with pytest.warns(UserWarning, match=r"REFUSED.*SHA-256.*not the one recorded"):
        assert native.load() is None
    assert not marker.exists()
    with kernels.recording() as ran, torch.no_grad():
        LTC(3, 4).cell.eval().step(torch.randn(1, 3), None, 0.1)
    assert ran == [("ltc", "step", "numpy")]
    assert not marker.exists()


@needs_compiler
@pytest.mark.parametrize("text", ["{not json", "[" * 100_000 + "]" * 100_000], ids=["damaged", "nested_too_deeply"])
def test_a_kernel_record_nested_too_deeply_is_refused_as_a_damaged_one(suite_build, private_cache, text):
    """Before: the kernel library's record read with json.loads, which raises RecursionError (no ValueError) for
    JSON nested past the recursion limit: native.load() caught it as any failure to build and warned "compiled
    kernels unavailable (maximum recursion depth exceeded ...)", the cells ran on torch, and the warning did not say
    the record was damaged. Read with json_text.load_json: refused as a damaged record, as one of bad JSON is, and
    the warning says so."""
    path, _ = _seed_cache(private_cache, suite_build)
    record, _ = _expected_names(private_cache)
    record.write_text(text)
    with pytest.warns(UserWarning, match=r"REFUSED.*not a record of a kernel build") as warned:
        assert native.load() is None
    said = [str(w.message) for w in warned]
    assert not any("recursion" in m or "compiled kernels unavailable" in m for m in said), said
    with kernels.recording() as ran, torch.no_grad():
        LTC(3, 4).cell.eval().step(torch.randn(1, 3), None, 0.1)
    assert ran == [("ltc", "step", "numpy")]


@pytest.mark.parametrize("text", ["{not json", "[" * 100_000 + "]" * 100_000], ids=["damaged", "nested_too_deeply"])
def test_a_record_of_an_unanswered_compiler_nested_too_deeply_is_asked_again_as_a_damaged_one(tmp_path, text):
    """The record of a compiler that did not answer, damaged or nested past the recursion limit, or with a timeout
    of 400 digits: not ours in a readable form, so the compiler is asked again (before: RecursionError, and
    OverflowError from float(), out of the kernel loading)."""
    record = tmp_path / "cc-unanswered-0123456789abcdef.json"
    record.write_text(text)
    record.chmod(0o600)
    assert native_cache._earlier_failure(record, 1.0) is None
    record.write_text(json.dumps({"compiler": "cc", "timeout": 10**400, "error": "did not finish within 1 s"}))
    assert native_cache._earlier_failure(record, 1.0) is None  # a timeout past a float's range (OverflowError before)
    record.write_text(json.dumps({"compiler": "cc", "timeout": 1.0, "error": "did not finish within 1 s"}))
    assert native_cache._earlier_failure(record, 1.0) == "did not finish within 1 s"  # a readable one is kept


@needs_compiler
def test_what_is_loaded_is_the_verified_bytes_not_the_file_swapped_after_the_check(
    suite_build, private_cache, tmp_path
):
    path, data = _seed_cache(private_cache, suite_build)
    marker = tmp_path / "planted-code-ran"
    _plant_library(tmp_path / "evil.so", marker)
    evil = (tmp_path / "evil.so").read_bytes()
    path.write_bytes(evil)  # swapped between verification and dlopen
    library = native_cache.open_verified(path, data)  # the bytes we verified
    assert library.liquid_selftest() == 1 and not marker.exists()


@needs_compiler
def test_symlinked_or_group_writable_cache_dirs_are_refused(tmp_path, monkeypatch):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "cache").mkdir()
    os.symlink(real, tmp_path / "cache" / "native")
    monkeypatch.setenv("LIQUID_CONTROL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(native.UnsafeCacheError, match="not a directory"):
        native_cache.private_dir(native_cache.cache_dir())
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o770)
    with pytest.raises(native.UnsafeCacheError, match="writable by group or others"):
        native_cache.private_dir(shared)
    open_parent = tmp_path / "open"
    open_parent.mkdir()
    os.chmod(open_parent, 0o777)  # others could rename our directory away (no sticky bit)
    with pytest.raises(native.UnsafeCacheError, match="above the kernel cache that others control"):
        native_cache.private_dir(open_parent / "native")


# ---- the compiler: bounded in time, killed with its children, no leftovers ------------------------------
HANGING_CC = """#!/bin/sh
sleep 600 &
echo $! > "{pids}"
echo $$ >> "{pids}"
wait
"""


def _hanging_compiler(tmp_path):
    cc = tmp_path / "hanging-cc"
    pids = tmp_path / "pids"
    cc.write_text(HANGING_CC.format(pids=pids))
    cc.chmod(0o755)
    return cc, pids


def _all_dead(pids_file, within_s: float = 10.0) -> bool:
    """Whether every process named in ``pids_file`` is gone (or a zombie) within ``within_s``: a SIGKILLed
    process ends when it is next scheduled, which on a loaded machine is not at once (a CI run saw one alive)."""
    deadline = time.monotonic() + within_s
    while True:
        alive = []
        for pid in map(int, pids_file.read_text().split()):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            state = open(f"/proc/{pid}/stat").read().split()[2] if os.path.exists(f"/proc/{pid}/stat") else "X"
            if state != "Z":
                alive.append(pid)
        if not alive or time.monotonic() > deadline:
            return not alive
        time.sleep(0.05)


def _no_leftovers(cache):
    """No file in ``cache`` but the record of a compiler that did not answer (kept on purpose)."""
    if not cache.exists():
        return True
    return [p.name for p in cache.iterdir() if not p.name.startswith("cc-unanswered-")] == []


def test_a_hanging_compiler_times_out_is_killed_with_its_children_and_leaves_nothing(
    private_cache, tmp_path, monkeypatch
):
    cc, pids = _hanging_compiler(tmp_path)
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv("LIQUID_CONTROL_CC_TIMEOUT", "1.5")
    start = time.monotonic()
    with pytest.warns(UserWarning, match=r"did not finish within 1.5 s.*LIQUID_CONTROL_CC_TIMEOUT"):
        assert native.load() is None
    assert time.monotonic() - start < 20  # one attempt, not one per -march variant
    assert _all_dead(pids)
    assert _no_leftovers(private_cache)


def test_an_interrupted_build_kills_the_compiler_and_removes_its_files(private_cache, tmp_path, monkeypatch):
    """Ctrl-C (or a signal handler raising, as a node does on SIGTERM) during the build."""
    cc, pids = _hanging_compiler(tmp_path)
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv("LIQUID_CONTROL_CC_TIMEOUT", "60")
    previous = signal.getsignal(signal.SIGALRM)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, interrupt)
    try:
        threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGALRM)).start()
        with pytest.raises(KeyboardInterrupt):
            native.build()
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert _all_dead(pids)
    assert _no_leftovers(private_cache)


def test_a_bad_timeout_setting_is_a_clear_error(monkeypatch):
    for bad in ("0", "-1", "soon", "inf"):
        monkeypatch.setenv("LIQUID_CONTROL_CC_TIMEOUT", bad)
        with pytest.raises(ValueError, match="LIQUID_CONTROL_CC_TIMEOUT must be a positive number"):
            native.compile_timeout()


FAILING_CC = """#!/bin/sh
echo "$@" >> "{log}"
echo "fake-cc: error: this compiler builds nothing" >&2
exit 1
"""


def _failing_compiler(tmp_path, name="fake-cc"):
    """A compiler that logs its arguments (one line per run) and fails."""
    cc, log = tmp_path / name, tmp_path / "cc.log"
    cc.write_text(FAILING_CC.format(log=log))
    cc.chmod(0o755)
    return cc, log


def test_cc_with_arguments_is_split_like_a_shell_would_and_an_empty_cc_is_unset(private_cache, tmp_path, monkeypatch):
    """Before: CC="gcc -m64" or "ccache gcc" was looked up as one program name and an empty CC as the program "",
    both 'no C compiler found (set CC)'."""
    cc, log = _failing_compiler(tmp_path, "my cc")  # a space in its path: quoted in CC
    monkeypatch.setenv("CC", f"'{cc}' -m64 --extra")
    assert native_cache.compiler() == [str(cc), "-m64", "--extra"]
    with pytest.raises(RuntimeError, match="fake-cc: error: this compiler builds nothing"):
        native.build()
    assert any(line.startswith("-m64 --extra -O3 ") for line in log.read_text().splitlines())
    monkeypatch.setenv("CC", "no-such-cc -O2")
    with pytest.raises(RuntimeError, match=r"no C compiler found: CC='no-such-cc -O2' names no program on PATH"):
        native_cache.compiler()
    monkeypatch.setenv("CC", " ")
    if shutil.which("cc") is not None:
        assert native_cache.compiler() == [shutil.which("cc")]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match=r"no C compiler found: 'cc' \(CC is not set\)"):
        native_cache.compiler()


COPYING_CC = """#!/bin/sh
case " $* " in *" --version "*) echo "fakecc (Fake) {version}"; exit 0;; esac
echo "$@" >> "{log}"
case " $* " in {fail_when}) printf '%s\\n' {error} >&2; exit 1;; esac
while [ $# -gt 0 ] && [ "$1" != "-o" ]; do shift; done
cp "{library}" "$2"
"""


def _copying_compiler(tmp_path, suite_build, version="1.0", fail_when="*never*", error=()):
    """A compiler that "builds" the suite's library (a copy: no compile) and logs each build's arguments, one
    line; its ``--version`` says ``version``; a build whose arguments (" $* ") match the shell pattern
    ``fail_when`` fails with the ``error`` lines. Called again, it rewrites itself in place."""
    cc, log = tmp_path / "copying-cc", tmp_path / "builds.log"
    error = " ".join(shlex.quote(line) for line in error)
    cc.write_text(COPYING_CC.format(version=version, log=log, library=suite_build[0], fail_when=fail_when, error=error))
    cc.chmod(0o755)
    return cc, log


def _builds(log):
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_a_compiler_upgraded_behind_the_same_path_rebuilds(suite_build, private_cache, tmp_path, monkeypatch):
    """Before: the key named the compiler by its path only, so a compiler upgraded in place kept the old build."""
    cc, log = _copying_compiler(tmp_path, suite_build, version="12.2.0")
    monkeypatch.setenv("CC", str(cc))
    path, data = native.build()
    assert native.build() == (path, data) and _builds(log) == 1  # reused
    _copying_compiler(tmp_path, suite_build, version="13.1.0")  # same path, another compiler
    assert native.build()[1] == data and _builds(log) == 2
    record, _ = _expected_names(private_cache)
    assert "fakecc (Fake) 13.1.0" in json.loads(record.read_text())["compiler"]


def test_a_cached_library_is_used_without_a_compiler_and_with_a_bad_timeout_setting(
    suite_build, private_cache, tmp_path, monkeypatch
):
    """Before: a verified library in the cache was not used once the compiler was gone (a runtime image without
    gcc), nor with an invalid LIQUID_CONTROL_CC_TIMEOUT, which is only needed to compile. Nor does asking the
    compiler what it is need a temporary directory (here there is none)."""
    path, _ = _seed_cache(private_cache, suite_build)
    monkeypatch.setattr(native_cache.tempfile, "tempdir", "/proc/no-temporary-directory")
    monkeypatch.setenv("LIQUID_CONTROL_CC_TIMEOUT", "soon")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.load().path == path
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.delenv("LIQUID_CONTROL_CC_TIMEOUT")
    native._state.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.load().path == path
    for name in os.listdir(private_cache):  # nothing cached: now the compiler and the setting are needed
        os.unlink(private_cache / name)
    with pytest.raises(RuntimeError, match="no C compiler found"):
        native.build()
    monkeypatch.delenv("CC")
    monkeypatch.setenv("LIQUID_CONTROL_CC_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="LIQUID_CONTROL_CC_TIMEOUT must be a positive number of seconds, got 'soon'"):
        native.build()


def test_a_library_built_in_the_fallback_is_built_into_the_cache_once_the_cache_can_be_used(
    suite_build, private_cache, tmp_path, monkeypatch
):
    """A probe of the kernel cache: once /tmp's fallback held a library (the cache read-only then), every later
    process loaded it from there, without a word, though the cache was fixed or a fresh LIQUID_CONTROL_CACHE set as
    the warning said: nothing ever went into the cache, and the system may empty /tmp. Now it is built into the
    cache; without a compiler the fallback's is loaded with the warning saying why."""
    monkeypatch.setattr(native_cache.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp").chmod(0o1777)
    monkeypatch.setattr(native_cache, "_warned", set())
    kept, _ = _seed_cache(native_cache.fallback_dir(), suite_build)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.warns(UserWarning, match=rf"kept in {kept.parent}, which the system may empty .*because none is in "):
        assert native.build()[0] == kept
    cc, log = _copying_compiler(tmp_path, suite_build)
    monkeypatch.setenv("CC", str(cc))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path, data = native.build()
    assert path.parent == private_cache and data == suite_build[1] and _builds(log) == 1
    assert native.build()[0] == path and _builds(log) == 1  # from the cache now


def test_one_compiler_reached_under_two_names_is_one_compiler_and_does_not_rebuild(
    suite_build, private_cache, tmp_path, monkeypatch
):
    """Before: the record held ``--version`` as printed, and GCC's first line starts with the name it was invoked
    by (``cc (Debian 12.2.0-14) 12.2.0``, ``gcc (Debian ...``), clang's ``InstalledDir:`` with its directory:
    switching between CC=gcc and an unset CC (cc) rebuilt the library at every switch (5-6 s each)."""
    cc, log = _copying_compiler(tmp_path, suite_build)
    answers = 'echo "$(basename "$0") (Fake) 1.0"; echo "InstalledDir: $(dirname "$0")"'
    cc.write_text(cc.read_text().replace('echo "fakecc (Fake) 1.0"', answers))
    names = [tmp_path / "a" / "cc", tmp_path / "b" / "gcc"]
    for name in names:
        name.parent.mkdir()
        name.symlink_to(cc)
    monkeypatch.setenv("CC", str(names[0]))
    path, data = native.build()
    monkeypatch.setenv("CC", str(names[1]))
    assert native.build() == (path, data) and _builds(log) == 1  # the library of the first name, not rebuilt
    identity = native_cache.compiler_identity([str(names[1])], 60)
    assert "1.0" in identity and "gcc" not in identity and "InstalledDir" not in identity
    # clang names itself whatever it is reached as ("clang version 17.0.6"): the first word is not the invoked name
    clang = tmp_path / "fake-clang"
    clang.write_text('#!/bin/sh\necho "clang version 17.0.6"\necho "InstalledDir: $(dirname "$0")"\n')
    clang.chmod(0o755)
    (tmp_path / "c").mkdir()
    for name in ("clang", "cc"):
        (tmp_path / "c" / name).symlink_to(clang)
    as_clang, as_cc = (native_cache.compiler_identity([str(tmp_path / "c" / n)], 60) for n in ("clang", "cc"))
    assert as_clang == as_cc and "clang version 17.0.6" in as_cc
    real = [shutil.which(name) for name in ("cc", "gcc")]
    if None not in real and len({os.path.realpath(p) for p in real}) == 1:  # this machine's cc is its gcc
        assert native_cache.compiler_identity([real[0]], 60) == native_cache.compiler_identity([real[1]], 60)


MUTE_CC = """#!/bin/sh
case " $* " in *" --version "*) exec sleep 60;; esac
exec cc "$@"
"""


def test_a_compiler_that_does_not_answer_version_is_absent_for_the_lookup_and_an_error_for_a_compile(
    suite_build, private_cache, tmp_path, monkeypatch
):
    """Before: the compiler was asked ``--version`` before the cache was looked up, and its timeout was the load's
    failure: a verified cached library was not loaded (torch ran) where with no compiler at all it was."""
    path, _ = _seed_cache(private_cache, suite_build)
    cc = tmp_path / "mute-cc"
    cc.write_text(MUTE_CC)
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv("LIQUID_CONTROL_CC_TIMEOUT", "1")
    start = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.load().path == path
    assert time.monotonic() - start < 15
    for name in os.listdir(private_cache):  # nothing cached: a compile is needed, and the compiler fails it
        os.unlink(private_cache / name)
    with pytest.raises(RuntimeError, match=r"mute-cc could not be asked what it is: .*did not finish within 1 s"):
        native.build()
    assert _no_leftovers(private_cache)


PROBED_CC = """#!/bin/sh
case " $* " in *" --version "*) echo asked >> "{log}"; {answer};; esac
while [ $# -gt 0 ] && [ "$1" != "-o" ]; do shift; done
cp "{library}" "$2"
"""
HANG = "exec sleep 60"


def _probed_compiler(tmp_path, suite_build, answer=HANG):
    """A compiler that logs each ``--version`` it is asked (one line) and then runs ``answer`` (by default it
    hangs); its builds copy the suite's library. Called again, it rewrites itself in place (another size)."""
    cc, log = tmp_path / "probed-cc", tmp_path / "asked.log"
    cc.write_text(PROBED_CC.format(log=log, answer=answer, library=suite_build[0]))
    cc.chmod(0o755)
    return cc, log


def _unanswered_records(cache):
    return sorted(p.name for p in cache.iterdir() if p.name.startswith("cc-unanswered-"))


def test_a_compiler_that_does_not_answer_is_asked_once_not_at_every_process_start(
    suite_build, private_cache, tmp_path, monkeypatch
):
    """Before: every process start (every command, every worker process) asked it ``--version`` again and waited
    the whole LIQUID_CONTROL_CC_TIMEOUT before the cached library loaded. Now its failure is remembered in the
    cache, keyed by the compiler's real path, size and mtime: asked again once it changes or with a longer limit."""
    path, _ = _seed_cache(private_cache, suite_build)
    cc, log = _probed_compiler(tmp_path, suite_build)
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv("LIQUID_CONTROL_CC_TIMEOUT", "1")

    def start(expected=path):
        """A new process: nothing remembered in memory; the cached library loads, without a warning."""
        native._state.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert native.load().path == expected

    def asked():
        return len(log.read_text().splitlines()) if log.exists() else 0

    for _ in range(3):
        start()
    assert asked() == 1 and len(_unanswered_records(private_cache)) == 1
    record = json.loads((private_cache / _unanswered_records(private_cache)[0]).read_text())
    assert record["timeout"] == 1.0 and "did not finish within 1 s" in record["error"]
    # a compile is needed: the remembered failure is the error, naming where it is kept; the compiler not asked
    kept = [p for p in private_cache.iterdir() if p.name.startswith("liquid_kernels-")]
    for name in kept:
        os.rename(name, tmp_path / name.name)
    with pytest.raises(RuntimeError, match=r"probed-cc could not be asked what it is: .*1 s .*when asked before"):
        native.build()
    assert asked() == 1
    for name in kept:
        os.rename(tmp_path / name.name, name)
    monkeypatch.setenv("LIQUID_CONTROL_CC_TIMEOUT", "1.5")  # a longer limit than the one it failed: asked again
    start()
    start()
    assert asked() == 2
    _probed_compiler(tmp_path, suite_build, answer="exec sleep 61")  # changed in place (a fix that failed): asked again
    start()
    start()
    assert asked() == 3 and len(_unanswered_records(private_cache)) == 2  # one per compiler binary
    _probed_compiler(tmp_path, suite_build, answer='echo "probedcc (Fake) 2.0"; exit 0')  # it answers now
    path, _ = native.build()  # another compiler than the library's: built again (a copy here)
    start(path)
    assert asked() == 5 and len(_unanswered_records(private_cache)) == 2  # an answering one is asked every time
    # one that fails at once (cannot run: its interpreter is missing, an OSError, no wait) is not remembered:
    # fixing what it needs changes nothing of the compiler's own file, and asking it again costs nothing
    script = cc.read_text()
    cc.write_text(script.replace("#!/bin/sh", "#!/nonexistent/sh", 1))
    start(path)
    assert len(_unanswered_records(private_cache)) == 2


def test_a_compiler_that_answers_again_is_used_though_its_old_record_cannot_be_removed(tmp_path, monkeypatch):
    """A compiler that timed out under a shorter limit answers under a longer one; its record could not be deleted
    (a read-only cache: EROFS) and the OSError made the lookup treat the answering compiler as absent."""
    cc = tmp_path / "answering-cc"
    cc.write_text('#!/bin/sh\necho "answeringcc (Fake) 1.0"\n')
    cc.chmod(0o755)
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    record = native_cache._unanswered_path(cache, [str(cc)])
    entry = {"compiler": str(cc), "timeout": 1.0, "error": "the C compiler did not finish within 1 s"}
    record.write_text(json.dumps(entry))
    record.chmod(0o600)

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(native_cache.os, "unlink", read_only)
    identity, cpu = native_cache._ask_compiler([str(cc)], 5.0, "cpu", [cache])
    assert "answeringcc (Fake) 1.0" in identity and cpu == "cpu"


def test_a_timed_out_compilers_pipes_are_closed(monkeypatch):
    """Before: the group was killed and waited for, but its stdout and stderr pipes were left open (a
    ResourceWarning, two descriptors per timeout)."""
    started = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(native_cache.subprocess, "Popen", Recorded)
    with pytest.raises(RuntimeError, match="did not finish within 0.5 s"):
        native_cache.run_compiler(["sleep", "30"], 0.5)
    (proc,) = started
    assert proc.stdout.closed and proc.stderr.closed and proc.returncode is not None


NATIVE = '*" -march=native "*'


def test_a_failed_native_build_is_an_error_naming_the_compilers_first_error_not_a_cached_portable_build(
    suite_build, private_cache, tmp_path, monkeypatch
):
    """Before: any failure of the -march=native compile (here cc1 killed, as by the OOM killer) built a portable
    library instead, cached it under the native key for good and said nothing; a failure's warning showed only
    the compiler's last line ('compilation terminated.')."""
    killed = ["gcc: fatal error: Killed signal terminated program cc1", "compilation terminated."]
    cc, log = _copying_compiler(tmp_path, suite_build, fail_when=NATIVE, error=killed)
    monkeypatch.setenv("CC", str(cc))
    with pytest.warns(UserWarning, match=r"unavailable.*\(-march=native\) gcc: fatal error: Killed signal terminated"):
        assert native.load() is None
    assert _builds(log) == 1 and [p for p in private_cache.iterdir() if not p.name.startswith(".")] == []
    _copying_compiler(tmp_path, suite_build)  # the next process: the compile works
    native._state.clear()
    assert native.load() is not None
    assert _builds(log) == 2 and "-march=native" in log.read_text().splitlines()[-1]


@pytest.mark.parametrize(
    "refused",
    [
        "cc1: error: bad value 'native' for '-march=' switch",  # gcc for a target without it
        "cc1: error: unrecognized -march target: native",  # gcc for 32-bit arm
        "clang: error: the clang compiler does not support '-march=native'",
    ],
)
def test_a_compiler_that_refuses_march_native_builds_without_it(
    refused, suite_build, private_cache, tmp_path, monkeypatch
):
    refused = [refused]
    cc, log = _copying_compiler(tmp_path, suite_build, fail_when=NATIVE, error=refused)
    monkeypatch.setenv("CC", str(cc))
    path, data = native.build()
    assert native.build() == (path, data)  # cached: this compiler's build
    assert [("-march=native" in line) for line in log.read_text().splitlines()] == [True, False]


def test_a_failed_build_names_the_first_error_and_the_last_lines(private_cache, tmp_path, monkeypatch, suite_build):
    said = ["kernels.c:3:10: fatal error: stddef.h: No such file or directory"] + [f"note {i}" for i in range(5)]
    cc, _ = _copying_compiler(tmp_path, suite_build, fail_when="*", error=said + ["compilation terminated."])
    monkeypatch.setenv("CC", str(cc))
    with pytest.raises(
        RuntimeError,
        match="failed: \\(-march=native\\) kernels.c:3:10: fatal error: stddef.h: No such "
        "file or directory \\| note 3 \\| note 4 \\| compilation terminated.$",
    ):
        native.build()


@pytest.mark.parametrize(
    "variant, simd", [("native", None), ("no_avx512", "AVX2/FMA, no AVX-512"), ("portable", "no AVX2")]
)
def test_the_model_card_names_the_vector_code_of_the_loaded_library(variant, simd, monkeypatch):
    """Before: the card read /proc/cpuinfo, so a portable library on an AVX-512 CPU was reported as AVX-512."""
    kernels = kernel_variants.use(variant, monkeypatch)
    simd = simd or {"avx512": "AVX-512", "avx2": "AVX2/FMA, no AVX-512", "portable": "no AVX2"}[kernels.isa]
    assert native.describe() == f"compiled kernels ({platform.machine()}, {simd})"


# ---- without the library -----------------------------------------------------------------------------
def test_without_a_compiler_the_cells_warn_once_and_use_the_torch_paths(private_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.warns(UserWarning, match="compiled kernels unavailable.*no C compiler"):
        assert native.load() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.load() is None  # the answer is remembered: no second warning
    torch.manual_seed(0)
    model = LTC(3, 4).double()
    x, dt = torch.randn(2, 5, 3, dtype=torch.float64), torch.full((2, 5), 0.1, dtype=torch.float64)
    with kernels.recording() as ran:
        out, h_n = model(x, dt)
    assert ran == [("ltc", "sequence", "torch")]
    out.sum().backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_the_model_card_tells_turned_off_from_failed_to_load(private_cache, tmp_path, monkeypatch):
    """Before: the card said 'torch (LIQUID_CONTROL_NATIVE=0)' for every load failure (here: no compiler)."""
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.warns(UserWarning, match="no C compiler found"):
        path = native.describe()
    missing = f"CC='{tmp_path}/no-such-compiler' names no program on PATH"
    assert path == f"torch (compiled kernels failed to load: no C compiler found: {missing})"
    assert native.load_error().startswith("no C compiler found")
    monkeypatch.setenv("LIQUID_CONTROL_NATIVE", "0")
    native._state.clear()
    assert native.describe() == "torch (LIQUID_CONTROL_NATIVE=0)" and native.load_error() is None


def test_turned_off_by_environment(monkeypatch):
    monkeypatch.setenv("LIQUID_CONTROL_NATIVE", "0")
    monkeypatch.setattr(native, "_state", {})
    assert native.load() is None


@pytest.mark.parametrize("value, off", [("0", True), ("Off", True), ("no", True), ("1", False), ("", False)])
def test_the_switch_reads_the_usual_words_quietly(monkeypatch, value, off):
    monkeypatch.setenv("LIQUID_CONTROL_NATIVE", value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.turned_off() is off


@pytest.mark.parametrize("value", ["disable", "none", "2"])
def test_an_unknown_switch_value_keeps_the_kernels_on_with_a_warning_naming_it(monkeypatch, value):
    """Before: "disable" or "none" kept the compiled kernels on without a word."""
    monkeypatch.setenv("LIQUID_CONTROL_NATIVE", value)
    with pytest.warns(UserWarning, match=f"LIQUID_CONTROL_NATIVE='{value}' is none of 0/false/no/off"):
        assert native.turned_off() is False


@needs_compiler
def test_unwritable_cache_falls_back_to_a_private_temporary_directory(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("LIQUID_CONTROL_CACHE", str(blocker))
    monkeypatch.setattr(native_cache.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp").chmod(0o1777)
    path, data = native.build()
    assert path.parent == native_cache.fallback_dir() and blocker not in path.parents
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert native_cache.open_verified(path, data).liquid_selftest() == 1


@pytest.mark.parametrize("where", ["compiler", "python"])
def test_a_full_cache_file_system_falls_back_to_the_next_directory(
    where, suite_build, private_cache, tmp_path, monkeypatch
):
    """Before: a cache directory that exists but whose file system is full ended the build ('ld: final link
    failed: No space left on device') without trying the writable fallback directory."""
    monkeypatch.setattr(native_cache.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp").chmod(0o1777)
    error = ["/usr/bin/ld: final link failed: No space left on device"]
    full = f'*" -o {private_cache}/"*' if where == "compiler" else "*never*"
    cc, log = _copying_compiler(tmp_path, suite_build, fail_when=full, error=error)
    monkeypatch.setenv("CC", str(cc))
    full_dirs = [private_cache] if where == "python" else []
    write = native_cache._write_atomically

    def write_unless_full(directory, target, data):
        if directory in full_dirs:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        return write(directory, target, data)

    monkeypatch.setattr(native_cache, "_write_atomically", write_unless_full)
    path, data = native.build()
    assert path.parent == native_cache.fallback_dir() and data == suite_build[1]
    assert [p.name for p in private_cache.iterdir()] == []  # nothing left behind in the full one
    for name in os.listdir(path.parent):
        os.unlink(path.parent / name)
    _copying_compiler(tmp_path, suite_build, fail_when='*" -o "*' if where == "compiler" else "*never*", error=error)
    full_dirs.append(path.parent)  # both full: the error says why, for each
    with pytest.raises(RuntimeError, match=r"no writable directory.*native: No space left on device.*; .*/native: No"):
        native.build()


def test_a_library_that_cannot_be_loaded_under_ulimit_f_is_named_in_the_warning(tmp_path, monkeypatch):
    """Before: under `ulimit -f` (EFBIG) a library found in the cache could not be copied into the memfd it is
    loaded from, and the warning read 'compiled kernels unavailable, using the torch paths ([Errno 27] File too
    large)', naming no file. Now it names the library, and the memfd is not kept open."""
    import resource

    library = tmp_path / "cache" / "native" / "liquid_kernels-0123-4567.so"
    monkeypatch.setattr(native, "build", lambda extra_flags=(): (library, b"\0" * 8192))
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.delenv("LIQUID_CONTROL_NATIVE", raising=False)
    kept = list(native_cache._memfds)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.warns(UserWarning) as caught:
            assert native.load() is None
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    (message,) = [str(w.message) for w in caught]
    assert message == (
        f"liquid_control: compiled kernels unavailable, using the torch paths ({library}: cannot load it: "
        "copying its verified bytes into memory failed: File too large)"
    )
    assert native.load_error() == message[message.index("(") + 1 : -1]
    assert native_cache._memfds == kept


def test_a_group_writable_cache_parent_sends_the_build_to_the_fallback_with_a_warning_saying_why(
    suite_build, tmp_path, monkeypatch
):
    """Before: with ~/.cache group-writable (a umask of 002, Ubuntu's default) the cache was refused and the
    per-boot /tmp fallback used without a word: a rebuild after every reboot, and nobody told why."""
    home_cache = tmp_path / "home" / ".cache"
    home_cache.mkdir(parents=True)
    home_cache.parent.chmod(0o755)  # the home itself private whatever the run's umask: only .cache is not
    home_cache.chmod(0o775)
    monkeypatch.setenv("XDG_CACHE_HOME", str(home_cache))
    monkeypatch.delenv("LIQUID_CONTROL_CACHE", raising=False)
    monkeypatch.setattr(native_cache.tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setattr(native_cache, "_warned", set())
    path, _ = _seed_cache(native_cache.fallback_dir(), suite_build)
    with pytest.warns(UserWarning) as caught:
        assert native.build()[0] == path
    (message,) = [str(w.message) for w in caught]
    assert f"kept in {path.parent}, which the system may empty" in message
    assert f"refused {home_cache}: a directory above the kernel cache that others control" in message
    assert f"`chmod go-w {home_cache}` makes it private" in message and "LIQUID_CONTROL_CACHE" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.build()[0] == path  # warned once
    home_cache.chmod(0o755)  # the fix: the cache is used again (built there)
    assert native_cache.cache_dir() in native_cache._usable_dirs()[0]


def test_no_home_or_a_relative_xdg_cache_home_never_puts_the_cache_in_the_working_directory(tmp_path, monkeypatch):
    """Before: with HOME unset and no passwd entry (a container run with --user N) the cache was './~/.cache/...'
    in whatever the working directory was, and a relative XDG_CACHE_HOME was taken from there too."""
    import pwd

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for name in ("HOME", "LIQUID_CONTROL_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.setattr(native_cache.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir(mode=0o700)
    assert native_cache.cache_dir() is None
    dirs, problems = native_cache._usable_dirs()
    assert dirs == [native_cache.fallback_dir()] and "no home directory" in problems[0]
    assert list(work.iterdir()) == []
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", "relcache")  # ignored (XDG spec)
    assert native_cache.cache_dir() == tmp_path / "home" / ".cache" / "liquid_control" / "native"
    monkeypatch.setenv("LIQUID_CONTROL_CACHE", "mycache")  # our own setting: taken from the working directory
    assert native_cache.cache_dir() == work / "mycache" / "native"


def test_source_list_covers_every_file_the_build_reads():
    """The cache key hashes SOURCES: a source missing from it would let a stale library survive an edit."""
    on_disk = {p.name for p in native_cache.SOURCE_DIR.iterdir() if p.suffix in (".c", ".h", ".inc")}
    assert on_disk == set(native_cache.SOURCES)


# ---- which kernel ran: kernels.recording() ---------------------------------------------------------------
def test_nested_recordings_each_keep_their_own_list():
    """Before: the inner block's exit removed the outer (equal) list, the outer's exit raised ValueError and the
    closed inner list kept growing."""
    cell = LTC(3, 4).cell.eval()
    x = torch.randn(1, 3)
    with torch.no_grad(), kernels.recording() as outer:
        with kernels.recording() as inner:
            cell.step(x, None, 0.1)
        cell.step(x, None, 0.1)
    with torch.no_grad():
        cell.step(x, None, 0.1)
    assert len(outer) == 2 and len(inner) == 1 and outer[0] == inner[0]
    assert kernels.recorders == ()


def test_a_recording_sees_only_its_own_threads_cells():
    """Before: the recorders were one list for all threads, so a recording also collected what another thread's
    cell ran at the same time (and an exit could remove the other thread's list)."""
    from liquid_control.cells import CfCCell, LTCCell

    cells = {"cfc": CfCCell(3, 4).eval(), "ltc": LTCCell(3, 4).eval()}
    barrier, records, errors = threading.Barrier(2, timeout=30), {}, []

    def run(name):
        try:
            with kernels.recording() as ran:
                barrier.wait()  # both recordings open
                with torch.no_grad():
                    cells[name].step(torch.randn(1, 3), None, 0.1)
                barrier.wait()  # both cells stepped
            records[name] = sorted({core for core, _, _ in ran})
        except Exception as exc:  # reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(name,)) for name in cells]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and records == {"cfc": ["cfc"], "ltc": ["ltc"]}
    assert kernels.recorders == ()
