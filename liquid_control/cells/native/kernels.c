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

/* The x86 features this build may use (its target: -march=native's, LIQUID_ISA's vector code and what the
 * compiler vectorises with) that the running CPU lacks, as bits: 0 when this CPU can run the library. A library
 * built for another CPU (a cache shared between machines) would otherwise die of SIGILL at its first call. The
 * loader calls this before any other function, so it is compiled for the baseline x86-64, not the target.
 * pretend_absent: bits to treat as missing (the tests' hook). __init__.py reads the names from the
 * CPU_FEATURE lines; only features the target enables are checked (a compiler that defines the macro knows the
 * name). */
#if defined(__x86_64__)
#define LIQUID_BASELINE __attribute__((target("arch=x86-64")))
#define CPU_FEATURE(bit, name) \
    if (!__builtin_cpu_supports(name) || (pretend_absent >> (bit) & 1)) missing |= 1 << (bit);
#else
#define LIQUID_BASELINE
#endif
LIQUID_BASELINE LIQUID_API int liquid_cpu_missing(int pretend_absent) {
    int missing = 0;
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
#endif
    (void)pretend_absent;
    return missing;
}
