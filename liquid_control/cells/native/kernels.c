/* Compiled loops of the sequence paths (see __init__.py for how this is built and when it is used).
 * Every kernel is instantiated for float32 (_f32) and float64 (_f64). */
#include "common.h"
#include "gemm.h"
#include "synapses.h"

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)

#define REAL float
#define SUFFIX f32
#define FN(name) CAT(name, SUFFIX)
#define SIGMOID sigmoid_f32
#define EXP exp_f32
#define GEMM gemm_f32
#define MM mm_f32
#include "ltc.inc"
#include "cfc.inc"
#include "checks.inc"
#undef REAL
#undef SUFFIX
#undef SIGMOID
#undef EXP
#undef GEMM
#undef MM

#define REAL double
#define SUFFIX f64
#define SIGMOID sigmoid_f64
#define EXP exp_f64
#define GEMM gemm_f64
#define MM mm_f64
#include "ltc.inc"
#include "cfc.inc"
#include "checks.inc"

/* Scratch elements cfc_forward needs (the same for both precisions). */
LIQUID_API size_t cfc_forward_work_size(int B, int T, int H, int U, int L, int mode) {
    return cfc_forward_work_f32(B, T, H, U, L, mode);
}

/* ABI self-check for the loader: 1 if this library's BLAS computes a known 2x2 product. */
LIQUID_API int liquid_selftest(void) {
    const float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8};
    float c[4] = {0, 0, 0, 0};
    gemm_f32(0, 0, 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
    return c[0] == 19 && c[1] == 22 && c[2] == 43 && c[3] == 50;
}

/* The vector code this build runs: 0 AVX-512, 1 AVX2 + FMA, 2 portable (common.h). */
LIQUID_API int liquid_isa(void) { return LIQUID_ISA; }

/* The x86 features this build may use that the running CPU lacks, as bits: 0 when this CPU can run the
 * library. A library built for another CPU (a cache shared between machines) would otherwise die of SIGILL at its
 * first call. The loader calls this before any other function, so it is compiled for the baseline x86-64, not
 * the target. pretend_absent: bits to treat as missing (the tests' hook). __init__.py reads the names from the
 * CPU_FEATURE lines.
 *
 * Checked: every vector, bit-manipulation and crypto instruction set of the build's target (-march=native's,
 * and the -m flags) that the compiler can test, each only where the target enables it (its macro). Bits 0-20 use
 * names every supported compiler knows; bits 21 and up use names GCC 12 knows (__builtin_cpu_supports refuses an
 * unknown name, and older GCCs and clang do not know all of them), so they are compiled only by GCC 12 or later:
 * another compiler's build does not check F16C, LZCNT/ABM, MOVBE, ADX, AVX512-FP16/BF16, AVX-VNNI, GFNI, VAES,
 * VPCLMULQDQ, AES, PCLMUL, SHA, AMX, SSE4A, FMA4, XOP, TBM, LAHF/SAHF or the Xeon Phi AVX-512 sets; sets
 * newer than GCC 12 (GCC 13's AVX-IFMA, AVX-VNNI-INT8, AVX-NE-CONVERT, CMPCCXADD, AMX-FP16; GCC 14's SHA512,
 * SM3, SM4, AVX10) are not checked by any build (the cache key's /proc/cpuinfo flags still tie a library to
 * CPUs like the one that built it).
 * Not checked: instructions a C compiler emits only for their own intrinsics or builtins, which these sources
 * never call (system and special-purpose ones: RDRND, RDSEED, XSAVE*, FSGSBASE, CLFLUSHOPT, CLWB, CLDEMOTE,
 * MOVDIRI, MOVDIR64B, PKU, RDPID, SERIALIZE, SHSTK, TSXLDTRK, WBNOINVD, PRFCHW, CLZERO, MWAITX, RDPRU, LWP,
 * SGX, PCONFIG, WAITPKG, ENQCMD, UINTR, HRESET, PTWRITE, KL/WIDEKL, RTM, HLE, PREFETCHWT1) and CRC32 (part
 * of SSE4.2, which is checked; GCC 12 has no name for it).
 * test_native_kernels.py holds the same list and checks that every instruction-set macro of the compiler's
 * -march=native is one or the other. */
#if defined(__x86_64__)
#define LIQUID_BASELINE __attribute__((target("arch=x86-64")))
#define CPU_FEATURE(bit, name) \
    if (!__builtin_cpu_supports(name) || (pretend_absent >> (bit) & 1)) missing |= (int64_t)1 << (bit);
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define LIQUID_GCC12_NAMES 1
#else
#define LIQUID_GCC12_NAMES 0
#endif
#else
#define LIQUID_BASELINE
#endif
LIQUID_BASELINE LIQUID_API int64_t liquid_cpu_missing(int64_t pretend_absent) {
    int64_t missing = 0;
#if defined(__x86_64__)
    __builtin_cpu_init();
#ifdef __SSE3__
    CPU_FEATURE(0, "sse3")
#endif
#ifdef __SSSE3__
    CPU_FEATURE(1, "ssse3")
#endif
#ifdef __SSE4_1__
    CPU_FEATURE(2, "sse4.1")
#endif
#ifdef __SSE4_2__
    CPU_FEATURE(3, "sse4.2")
#endif
#ifdef __POPCNT__
    CPU_FEATURE(4, "popcnt")
#endif
#ifdef __AVX__
    CPU_FEATURE(5, "avx")
#endif
#ifdef __AVX2__
    CPU_FEATURE(6, "avx2")
#endif
#ifdef __FMA__
    CPU_FEATURE(7, "fma")
#endif
#ifdef __BMI__
    CPU_FEATURE(8, "bmi")
#endif
#ifdef __BMI2__
    CPU_FEATURE(9, "bmi2")
#endif
#ifdef __AVX512F__
    CPU_FEATURE(10, "avx512f")
#endif
#ifdef __AVX512VL__
    CPU_FEATURE(11, "avx512vl")
#endif
#ifdef __AVX512BW__
    CPU_FEATURE(12, "avx512bw")
#endif
#ifdef __AVX512DQ__
    CPU_FEATURE(13, "avx512dq")
#endif
#ifdef __AVX512CD__
    CPU_FEATURE(14, "avx512cd")
#endif
#ifdef __AVX512VBMI__
    CPU_FEATURE(15, "avx512vbmi")
#endif
#ifdef __AVX512IFMA__
    CPU_FEATURE(16, "avx512ifma")
#endif
#ifdef __AVX512VPOPCNTDQ__
    CPU_FEATURE(17, "avx512vpopcntdq")
#endif
#ifdef __AVX512VBMI2__
    CPU_FEATURE(18, "avx512vbmi2")
#endif
#ifdef __AVX512VNNI__
    CPU_FEATURE(19, "avx512vnni")
#endif
#ifdef __AVX512BITALG__
    CPU_FEATURE(20, "avx512bitalg")
#endif
#if LIQUID_GCC12_NAMES && defined(__F16C__)
    CPU_FEATURE(21, "f16c")
#endif
#if LIQUID_GCC12_NAMES && defined(__LZCNT__)
    CPU_FEATURE(22, "lzcnt")
#endif
#if LIQUID_GCC12_NAMES && defined(__ABM__)
    CPU_FEATURE(23, "abm")
#endif
#if LIQUID_GCC12_NAMES && defined(__MOVBE__)
    CPU_FEATURE(24, "movbe")
#endif
#if LIQUID_GCC12_NAMES && defined(__ADX__)
    CPU_FEATURE(25, "adx")
#endif
#if LIQUID_GCC12_NAMES && defined(__AVX512FP16__)
    CPU_FEATURE(26, "avx512fp16")
#endif
#if LIQUID_GCC12_NAMES && defined(__AVX512BF16__)
    CPU_FEATURE(27, "avx512bf16")
#endif
#if LIQUID_GCC12_NAMES && defined(__AVXVNNI__)
    CPU_FEATURE(28, "avxvnni")
#endif
#if LIQUID_GCC12_NAMES && defined(__GFNI__)
    CPU_FEATURE(29, "gfni")
#endif
#if LIQUID_GCC12_NAMES && defined(__VAES__)
    CPU_FEATURE(30, "vaes")
#endif
#if LIQUID_GCC12_NAMES && defined(__VPCLMULQDQ__)
    CPU_FEATURE(31, "vpclmulqdq")
#endif
#if LIQUID_GCC12_NAMES && defined(__AES__)
    CPU_FEATURE(32, "aes")
#endif
#if LIQUID_GCC12_NAMES && defined(__PCLMUL__)
    CPU_FEATURE(33, "pclmul")
#endif
#if LIQUID_GCC12_NAMES && defined(__SHA__)
    CPU_FEATURE(34, "sha")
#endif
#if LIQUID_GCC12_NAMES && defined(__AMX_TILE__)
    CPU_FEATURE(35, "amx-tile")
#endif
#if LIQUID_GCC12_NAMES && defined(__AMX_INT8__)
    CPU_FEATURE(36, "amx-int8")
#endif
#if LIQUID_GCC12_NAMES && defined(__AMX_BF16__)
    CPU_FEATURE(37, "amx-bf16")
#endif
#if LIQUID_GCC12_NAMES && defined(__SSE4A__)
    CPU_FEATURE(38, "sse4a")
#endif
#if LIQUID_GCC12_NAMES && defined(__FMA4__)
    CPU_FEATURE(39, "fma4")
#endif
#if LIQUID_GCC12_NAMES && defined(__XOP__)
    CPU_FEATURE(40, "xop")
#endif
#if LIQUID_GCC12_NAMES && defined(__TBM__)
    CPU_FEATURE(41, "tbm")
#endif
#if LIQUID_GCC12_NAMES && defined(__AVX512VP2INTERSECT__)
    CPU_FEATURE(42, "avx512vp2intersect")
#endif
#if LIQUID_GCC12_NAMES && defined(__AVX512ER__)
    CPU_FEATURE(43, "avx512er")
#endif
#if LIQUID_GCC12_NAMES && defined(__AVX512PF__)
    CPU_FEATURE(44, "avx512pf")
#endif
#if LIQUID_GCC12_NAMES && defined(__AVX5124VNNIW__)
    CPU_FEATURE(45, "avx5124vnniw")
#endif
#if LIQUID_GCC12_NAMES && defined(__AVX5124FMAPS__)
    CPU_FEATURE(46, "avx5124fmaps")
#endif
#if LIQUID_GCC12_NAMES && defined(__LAHF_SAHF__)
    CPU_FEATURE(47, "lahf_lm")
#endif
#endif
    (void)pretend_absent;
    return missing;
}
