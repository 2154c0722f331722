/* Shared pieces of the compiled sequence kernels: the BLAS that torch itself uses, and an exp that the
 * compiler can vectorise (libm's expf/exp are opaque calls, which would stop the loops from vectorising).
 *
 * Row-major matrices throughout; the Fortran BLAS is column-major, so C = A B is computed as C^T = B^T A^T. */
#ifndef LIQUID_COMMON_H
#define LIQUID_COMMON_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The functions Python calls: exported (the library is built with -fvisibility=hidden) and read by
 * bindings.py, which parses every "LIQUID_API result name(parameters) {" definition for its ctypes types. */
#define LIQUID_API __attribute__((visibility("default")))

/* Which vector code this build has (gemm.h, synapses.h): AVX-512, AVX2 + FMA, or portable C that the compiler
 * vectorises for the target (SSE2 on x86-64, NEON on aarch64, ...). */
#if defined(__AVX512F__)
#define LIQUID_ISA 0
#elif defined(__AVX2__) && defined(__FMA__)
#define LIQUID_ISA 1
#else
#define LIQUID_ISA 2
#endif

/* Fortran BLAS exported by torch's libtorch_cpu (MKL in the x86 wheels); LP64 integers. */
void sgemm_(const char *ta, const char *tb, const int *m, const int *n, const int *k, const float *alpha,
            const float *a, const int *lda, const float *b, const int *ldb, const float *beta, float *c,
            const int *ldc);
void dgemm_(const char *ta, const char *tb, const int *m, const int *n, const int *k, const double *alpha,
            const double *a, const int *lda, const double *b, const int *ldb, const double *beta, double *c,
            const int *ldc);

/* C (M x N) = alpha op(A) op(B) + beta C, row-major; op(X) = X^T when the flag is set. */
static inline void gemm_f32(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                            const float *B, int ldb, float beta, float *C, int ldc) {
    sgemm_(tb ? "T" : "N", ta ? "T" : "N", &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc);
}
static inline void gemm_f64(int ta, int tb, int M, int N, int K, double alpha, const double *A, int lda,
                            const double *B, int ldb, double beta, double *C, int ldc) {
    dgemm_(tb ? "T" : "N", ta ? "T" : "N", &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc);
}

/* exp(x): Cody-Waite range reduction x = n ln2 + r and a polynomial (float) or Pade form (double) in r
 * (the Cephes coefficients), then 2^n built from its bits. Inputs are clamped to the finite range (sigmoid
 * saturates long before), NaN propagates. Accuracy ~1-2 ulp; `test_native_kernels.py` checks it. */
static inline float exp_f32(float x) {
    x = x > 88.0f ? 88.0f : x;
    x = x < -87.0f ? -87.0f : x;
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer held in the low bits */
    float t = x * 1.44269504088896341f + shifter;
    float n = t - shifter;
    int32_t bits;
    memcpy(&bits, &t, 4);
    int32_t e = (bits - 0x4B400000) + 127;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float r2 = r * r;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * r2 + r + 1.0f;
    int32_t sbits = e << 23;
    float scale;
    memcpy(&scale, &sbits, 4);
    return p * scale;
}

static inline double exp_f64(double x) {
    x = x > 708.0 ? 708.0 : x;
    x = x < -708.0 ? -708.0 : x;
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52 */
    double t = x * 1.4426950408889634073599 + shifter;
    double n = t - shifter;
    int64_t bits;
    memcpy(&bits, &t, 8);
    int64_t e = (bits - 0x4338000000000000LL) + 1023;
    double r = x - n * 6.93145751953125E-1;
    r = r - n * 1.42860682030941723212E-6;
    double r2 = r * r;
    double px = r * ((1.26177193074810590878E-4 * r2 + 3.02994407707441961300E-2) * r2 + 9.99999999999999999910E-1);
    double qx = ((3.00198505138664455042E-6 * r2 + 2.52448340349684104192E-3) * r2 + 2.27265548208155028766E-1) * r2
                + 2.00000000000000000009E0;
    double p = 1.0 + 2.0 * px / (qx - px);
    int64_t sbits = e << 52;
    double scale;
    memcpy(&scale, &sbits, 8);
    return p * scale;
}

static inline float sigmoid_f32(float x) { return 1.0f / (1.0f + exp_f32(-x)); }
static inline double sigmoid_f64(double x) { return 1.0 / (1.0 + exp_f64(-x)); }

#endif
