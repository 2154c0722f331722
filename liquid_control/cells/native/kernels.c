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

/* Scratch sizes, for the Python side. */
size_t cfc_forward_work_size(int B, int T, int H, int U, int L, int mode) {
    return cfc_forward_work_f32(B, T, H, U, L, mode);
}

/* ABI self-check for the loader: 1 if this library's BLAS computes a known 2x2 product. */
int liquid_selftest(void) {
    const float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8};
    float c[4] = {0, 0, 0, 0};
    gemm_f32(0, 0, 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
    return c[0] == 19 && c[1] == 22 && c[2] == 43 && c[3] == 50;
}

/* The kernels' exp, elementwise, for the accuracy test. */
void liquid_exp_f32(int n, const float *x, float *y) {
    for (int i = 0; i < n; i++) y[i] = exp_f32(x[i]);
}
void liquid_exp_f64(int n, const double *x, double *y) {
    for (int i = 0; i < n; i++) y[i] = exp_f64(x[i]);
}

/* The kernels' matrix product, for the tests: C = op(A) B (+ C). */
void liquid_mm_f32(int trans_a, int M, int N, int K, const float *A, int lda, const float *B, int ldb, int accumulate,
                   float *C, int ldc) {
    mm_f32(trans_a, M, N, K, A, lda, B, ldb, accumulate, C, ldc);
}
void liquid_mm_f64(int trans_a, int M, int N, int K, const double *A, int lda, const double *B, int ldb,
                   int accumulate, double *C, int ldc) {
    mm_f64(trans_a, M, N, K, A, lda, B, ldb, accumulate, C, ldc);
}
