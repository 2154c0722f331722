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
