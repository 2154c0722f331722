/* Small row-major matrix products for the sequence loops: C = op(A) B (+ C), alpha = 1.
 *
 * Why not the BLAS: torch's MKL takes its AVX2 code path on AMD CPUs (~100 GFLOP/s on one core of an AVX-512
 * machine, whose units reach ~270), and on small products (one step: 32 x 128 x 256) its call overhead
 * dominates. The per-step products' right-hand matrices are weights that stay in cache for the whole sequence,
 * so a plain register-tiled kernel runs them at a good fraction of the peak: with AVX-512, 8 rows x 32 columns
 * of C in 16 zmm accumulators (intrinsics, masked tails); otherwise 6 x 2 vectors on vec.h (AVX2 + FMA, or
 * the portable vectors the compiler maps to NEON/SSE). In double precision the BLAS does the work. */
#ifndef LIQUID_GEMM_H
#define LIQUID_GEMM_H
#include "common.h"

#if defined(__AVX512F__) && !defined(LIQUID_MM_BLAS)
#include <immintrin.h>

static inline __attribute__((always_inline)) void mm_tile_f32(const int R, int K, const float *A, size_t a_si,
                                                              size_t a_sk, const float *B, int ldb, float *C,
                                                              int ldc, __mmask16 m0, __mmask16 m1, int accumulate) {
    __m512 c0[8], c1[8];
    for (int r = 0; r < R; r++) {
        c0[r] = accumulate ? _mm512_maskz_loadu_ps(m0, C + (size_t)r * ldc) : _mm512_setzero_ps();
        c1[r] = accumulate ? _mm512_maskz_loadu_ps(m1, C + (size_t)r * ldc + 16) : _mm512_setzero_ps();
    }
    for (int k = 0; k < K; k++) {
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, B + (size_t)k * ldb);
        const __m512 b1 = _mm512_maskz_loadu_ps(m1, B + (size_t)k * ldb + 16);
        for (int r = 0; r < R; r++) {
            const __m512 a = _mm512_set1_ps(A[r * a_si + k * a_sk]);
            c0[r] = _mm512_fmadd_ps(a, b0, c0[r]);
            c1[r] = _mm512_fmadd_ps(a, b1, c1[r]);
        }
    }
    for (int r = 0; r < R; r++) {
        _mm512_mask_storeu_ps(C + (size_t)r * ldc, m0, c0[r]);
        _mm512_mask_storeu_ps(C + (size_t)r * ldc + 16, m1, c1[r]);
    }
}

static inline __mmask16 mm_mask(int n) { return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

/* C (M x N) = op(A) B (K x N) + (accumulate ? C : 0); op(A) = A (M x K) or, trans_a, A^T with A (K x M).
 * Long products (the weight gradients: K = B*T rows) go in chunks of MM_KC rows so a chunk of B stays in the
 * L2 cache while every tile of C passes over it (without, B was re-read from L3 by every row block). */
#define MM_KC 256
static void mm_block_f32(int M, int N, int K, const float *A, size_t a_si, size_t a_sk, const float *B, int ldb,
                         int accumulate, float *C, int ldc);

static void mm_f32(int trans_a, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                   int accumulate, float *C, int ldc) {
    const size_t a_si = trans_a ? 1 : (size_t)lda, a_sk = trans_a ? (size_t)lda : 1;
    if (K == 0) { /* an empty sum */
        mm_block_f32(M, N, 0, A, a_si, a_sk, B, ldb, accumulate, C, ldc);
        return;
    }
    for (int k0 = 0; k0 < K; k0 += MM_KC) {
        const int kc = K - k0 < MM_KC ? K - k0 : MM_KC;
        mm_block_f32(M, N, kc, A + (size_t)k0 * a_sk, a_si, a_sk, B + (size_t)k0 * ldb, ldb, accumulate || k0 > 0, C,
                     ldc);
    }
}

static void mm_block_f32(int M, int N, int K, const float *A, size_t a_si, size_t a_sk, const float *B, int ldb,
                         int accumulate, float *C, int ldc) {
    for (int i = 0; i < M; i += 8) {
        const float *a = A + (size_t)i * a_si;
        for (int j = 0; j < N; j += 32) {
            const __mmask16 m0 = mm_mask(N - j), m1 = mm_mask(N - j - 16);
            float *c = C + (size_t)i * ldc + j;
            switch (M - i >= 8 ? 8 : M - i) {
            case 8: mm_tile_f32(8, K, a, a_si, a_sk, B + j, ldb, c, ldc, m0, m1, accumulate); break;
            case 7: mm_tile_f32(7, K, a, a_si, a_sk, B + j, ldb, c, ldc, m0, m1, accumulate); break;
            case 6: mm_tile_f32(6, K, a, a_si, a_sk, B + j, ldb, c, ldc, m0, m1, accumulate); break;
            case 5: mm_tile_f32(5, K, a, a_si, a_sk, B + j, ldb, c, ldc, m0, m1, accumulate); break;
            case 4: mm_tile_f32(4, K, a, a_si, a_sk, B + j, ldb, c, ldc, m0, m1, accumulate); break;
            case 3: mm_tile_f32(3, K, a, a_si, a_sk, B + j, ldb, c, ldc, m0, m1, accumulate); break;
            case 2: mm_tile_f32(2, K, a, a_si, a_sk, B + j, ldb, c, ldc, m0, m1, accumulate); break;
            default: mm_tile_f32(1, K, a, a_si, a_sk, B + j, ldb, c, ldc, m0, m1, accumulate); break;
            }
        }
    }
}
#elif !defined(LIQUID_MM_BLAS)
/* Without AVX-512: the same register tiling on vec.h's vectors (AVX2 + FMA on x86-64, NEON on aarch64, ...):
 * MM_R rows x 2 vectors of C in 2 MM_R accumulators (AVX2: 6 x 16 in 12 of the 16 ymm registers). A tail of
 * fewer than 2 VW columns goes through partial loads and stores. */
#include "vec.h"
#define MM_R 6
#define MM_KC 256

static inline __attribute__((always_inline)) void mm_tile_v(const int R, int K, const float *A, size_t a_si,
                                                            size_t a_sk, const float *B, int ldb, float *C, int ldc,
                                                            int accumulate) {
    vf c0[MM_R], c1[MM_R];
    for (int r = 0; r < R; r++) {
        c0[r] = accumulate ? vload(C + (size_t)r * ldc) : vsplat(0.0f);
        c1[r] = accumulate ? vload(C + (size_t)r * ldc + VW) : vsplat(0.0f);
    }
    for (int k = 0; k < K; k++) {
        const vf b0 = vload(B + (size_t)k * ldb), b1 = vload(B + (size_t)k * ldb + VW);
        for (int r = 0; r < R; r++) {
            const vf a = vsplat(A[r * a_si + k * a_sk]);
            c0[r] += a * b0;
            c1[r] += a * b1;
        }
    }
    for (int r = 0; r < R; r++) {
        vstore(C + (size_t)r * ldc, c0[r]);
        vstore(C + (size_t)r * ldc + VW, c1[r]);
    }
}

/* the last n < 2 VW columns */
static void mm_tile_tail(int R, int n, int K, const float *A, size_t a_si, size_t a_sk, const float *B, int ldb,
                         float *C, int ldc, int accumulate) {
    const int n0 = n < VW ? n : VW, n1 = n - n0;
    vf c0[MM_R], c1[MM_R];
    for (int r = 0; r < R; r++) {
        c0[r] = accumulate ? vload_n(C + (size_t)r * ldc, n0) : vsplat(0.0f);
        c1[r] = accumulate && n1 > 0 ? vload_n(C + (size_t)r * ldc + VW, n1) : vsplat(0.0f);
    }
    for (int k = 0; k < K; k++) {
        const vf b0 = vload_n(B + (size_t)k * ldb, n0);
        const vf b1 = n1 > 0 ? vload_n(B + (size_t)k * ldb + VW, n1) : vsplat(0.0f);
        for (int r = 0; r < R; r++) {
            const vf a = vsplat(A[r * a_si + k * a_sk]);
            c0[r] += a * b0;
            c1[r] += a * b1;
        }
    }
    for (int r = 0; r < R; r++) {
        vstore_n(C + (size_t)r * ldc, c0[r], n0);
        if (n1 > 0) vstore_n(C + (size_t)r * ldc + VW, c1[r], n1);
    }
}

/* C[:, j:j+2VW] for all rows, B's 2VW columns read from `panel` (row stride `ps`) */
static void mm_column_tile(int M, int K, const float *A, size_t a_si, size_t a_sk, const float *panel, int ps,
                           int accumulate, float *C, int ldc) {
    for (int i = 0; i < M; i += MM_R) {
        const float *a = A + (size_t)i * a_si;
        float *c = C + (size_t)i * ldc;
        switch (M - i >= MM_R ? MM_R : M - i) {
        case 6: mm_tile_v(6, K, a, a_si, a_sk, panel, ps, c, ldc, accumulate); break;
        case 5: mm_tile_v(5, K, a, a_si, a_sk, panel, ps, c, ldc, accumulate); break;
        case 4: mm_tile_v(4, K, a, a_si, a_sk, panel, ps, c, ldc, accumulate); break;
        case 3: mm_tile_v(3, K, a, a_si, a_sk, panel, ps, c, ldc, accumulate); break;
        case 2: mm_tile_v(2, K, a, a_si, a_sk, panel, ps, c, ldc, accumulate); break;
        default: mm_tile_v(1, K, a, a_si, a_sk, panel, ps, c, ldc, accumulate); break;
        }
    }
}

/* Column tiles outer: with more than one row block, each tile's 2VW columns of B are first packed into a
 * contiguous panel (one cache line per k instead of a strided walk), then every row block runs over it. */
/* One or two rows (a streaming step's batch): R rows x V vectors, R V = 8 independent accumulators, enough
 * to hide the multiply-add latency that two accumulators per row would wait on. */
static inline __attribute__((always_inline)) void mm_rows_wide(const int R, const int V, int K, const float *A,
                                                               size_t a_si, size_t a_sk, const float *B, int ldb,
                                                               float *C, int ldc, int accumulate) {
    vf c[2][8];
    for (int r = 0; r < R; r++)
        for (int q = 0; q < V; q++) c[r][q] = accumulate ? vload(C + (size_t)r * ldc + q * VW) : vsplat(0.0f);
    for (int k = 0; k < K; k++) {
        const float *b = B + (size_t)k * ldb;
        for (int r = 0; r < R; r++) {
            const vf a = vsplat(A[r * a_si + k * a_sk]);
            for (int q = 0; q < V; q++) c[r][q] += a * vload(b + q * VW);
        }
    }
    for (int r = 0; r < R; r++)
        for (int q = 0; q < V; q++) vstore(C + (size_t)r * ldc + q * VW, c[r][q]);
}

/* Column tiles outer: with more than one row block, each tile's 2VW columns of B are first packed into a
 * contiguous panel (one cache line per k instead of a strided walk), then every row block runs over it. */
static void mm_block_f32(int M, int N, int K, const float *A, size_t a_si, size_t a_sk, const float *B, int ldb,
                         int accumulate, float *C, int ldc) {
    float panel[MM_KC * 2 * VW] __attribute__((aligned(64)));
    int j = 0;
    if (M == 1)
        for (; j + 8 * VW <= N; j += 8 * VW) mm_rows_wide(1, 8, K, A, a_si, a_sk, B + j, ldb, C + j, ldc, accumulate);
    if (M == 2)
        for (; j + 4 * VW <= N; j += 4 * VW) mm_rows_wide(2, 4, K, A, a_si, a_sk, B + j, ldb, C + j, ldc, accumulate);
    for (; j + 2 * VW <= N; j += 2 * VW) {
        if (M > MM_R) {
            for (int k = 0; k < K; k++) {
                vstore(panel + (size_t)k * 2 * VW, vload(B + (size_t)k * ldb + j));
                vstore(panel + (size_t)k * 2 * VW + VW, vload(B + (size_t)k * ldb + j + VW));
            }
            mm_column_tile(M, K, A, a_si, a_sk, panel, 2 * VW, accumulate, C + j, ldc);
        } else {
            mm_column_tile(M, K, A, a_si, a_sk, B + j, ldb, accumulate, C + j, ldc);
        }
    }
    if (j < N)
        for (int i = 0; i < M; i += MM_R)
            mm_tile_tail(M - i >= MM_R ? MM_R : M - i, N - j, K, A + (size_t)i * a_si, a_si, a_sk, B + j, ldb,
                         C + (size_t)i * ldc + j, ldc, accumulate);
}

static void mm_f32(int trans_a, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                   int accumulate, float *C, int ldc) {
    const size_t a_si = trans_a ? 1 : (size_t)lda, a_sk = trans_a ? (size_t)lda : 1;
    if (K == 0) { /* an empty sum */
        mm_block_f32(M, N, 0, A, a_si, a_sk, B, ldb, accumulate, C, ldc);
        return;
    }
    for (int k0 = 0; k0 < K; k0 += MM_KC) {
        const int kc = K - k0 < MM_KC ? K - k0 : MM_KC;
        mm_block_f32(M, N, kc, A + (size_t)k0 * a_sk, a_si, a_sk, B + (size_t)k0 * ldb, ldb, accumulate || k0 > 0, C,
                     ldc);
    }
}
#else
static void mm_f32(int trans_a, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                   int accumulate, float *C, int ldc) {
    gemm_f32(trans_a, 0, M, N, K, 1.0f, A, lda, B, ldb, accumulate ? 1.0f : 0.0f, C, ldc);
}
#endif

static void mm_f64(int trans_a, int M, int N, int K, const double *A, int lda, const double *B, int ldb,
                   int accumulate, double *C, int ldc) {
    gemm_f64(trans_a, 0, M, N, K, 1.0, A, lda, B, ldb, accumulate ? 1.0 : 0.0, C, ldc);
}

#endif
