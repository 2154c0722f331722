/* The LTC synapse passes: activations sigmoid(sigma_ji v_j + nsm_ji) of a (pre j, post i) grid, reduced
 * over the pre-synaptic neurons (forward) or differentiated (backward), without storing the grid.
 *
 * Why by hand in float32: these loops are the whole LTC cost, and compiled from plain C the division in the
 * sigmoid is a long-latency instruction every result waits on. With AVX-512 (intrinsics), 1/d is rcp14 plus
 * one Newton step (relative error < 1e-7, below float32's rounding), the sums stay in registers across the
 * pre-synaptic rows, and tails are masked lanes. Without AVX-512 the same structure on vec.h's vectors (AVX2:
 * rcp + one Newton step; NEON/SSE: a division). float64 uses the plain loops. */
#ifndef LIQUID_SYNAPSES_H
#define LIQUID_SYNAPSES_H
#include "common.h"

/* den_i = sum_j w_ji s_ji, num_i = sum_j we_ji s_ji over `rows` pre-synaptic inputs v_j, N posts. */
#define LIQUID_SUMS_PLAIN(name, T, SIG)                                                                      \
    static void name(int rows, int N, const T *v, const T *sigma, const T *nsm, const T *w, const T *we,      \
                     T *den, T *num) {                                                                       \
        for (int i = 0; i < N; i++) den[i] = num[i] = 0;                                                     \
        for (int j = 0; j < rows; j++) {                                                                     \
            const T vj = v[j], *sg = sigma + (size_t)j * N, *sh = nsm + (size_t)j * N;                        \
            const T *wj = w + (size_t)j * N, *ej = we + (size_t)j * N;                                        \
            for (int i = 0; i < N; i++) {                                                                    \
                const T s = SIG(sg[i] * vj + sh[i]);                                                         \
                den[i] += s * wj[i];                                                                         \
                num[i] += s * ej[i];                                                                         \
            }                                                                                                \
        }                                                                                                    \
    }

/* Backward of one sub-step for one sample: given d_den, d_num (N) and v (N), accumulate the parameter
 * gradients aw += s d_den, ae += s d_num, an += dz, as += dz v_j with dz = (d_den w + d_num we) s (1 - s),
 * and g_new_j = sum_i dz_ji sigma_ji + r_cm_j. */
#define LIQUID_GRADS_PLAIN(name, T, SIG)                                                                     \
    static void name(int N, const T *v, const T *sigma, const T *nsm, const T *w, const T *we,                \
                     const T *d_den, const T *d_num, const T *r_cm, T *aw, T *ae, T *an, T *as, T *g_new) {   \
        for (int j = 0; j < N; j++) {                                                                        \
            const T vj = v[j], *sg = sigma + (size_t)j * N, *sh = nsm + (size_t)j * N;                        \
            const T *wj = w + (size_t)j * N, *ej = we + (size_t)j * N;                                        \
            T *awj = aw + (size_t)j * N, *aej = ae + (size_t)j * N, *anj = an + (size_t)j * N;                \
            T *asj = as + (size_t)j * N;                                                                     \
            T acc = 0;                                                                                       \
            _Pragma("omp simd reduction(+ : acc)") for (int i = 0; i < N; i++) {                             \
                const T s = SIG(sg[i] * vj + sh[i]);                                                         \
                awj[i] += s * d_den[i];                                                                      \
                aej[i] += s * d_num[i];                                                                      \
                const T dz = (d_den[i] * wj[i] + d_num[i] * ej[i]) * (s - s * s);                            \
                anj[i] += dz;                                                                                \
                asj[i] += dz * vj;                                                                           \
                acc += dz * sg[i];                                                                           \
            }                                                                                                \
            g_new[j] = acc + r_cm[j];                                                                        \
        }                                                                                                    \
    }

/* The same for two samples at once (the AVX-512 version shares each accumulator's load and store). */
#define LIQUID_GRADS2_PLAIN(name, single, T)                                                                 \
    static void name(int N, const T *v0, const T *v1, const T *sigma, const T *nsm, const T *w, const T *we,  \
                     const T *dd0, const T *dn0, const T *rc0, const T *dd1, const T *dn1, const T *rc1, T *aw,  \
                     T *ae, T *an, T *as, T *g0, T *g1) {                                                     \
        single(N, v0, sigma, nsm, w, we, dd0, dn0, rc0, aw, ae, an, as, g0);                                  \
        single(N, v1, sigma, nsm, w, we, dd1, dn1, rc1, aw, ae, an, as, g1);                                  \
    }

LIQUID_SUMS_PLAIN(synapse_sums_f64, double, sigmoid_f64)
LIQUID_GRADS_PLAIN(synapse_grads_f64, double, sigmoid_f64)
LIQUID_GRADS2_PLAIN(synapse_grads2_f64, synapse_grads_f64, double)

#if defined(__AVX512F__)
#include <immintrin.h>

static inline __m512 sigmoid16(__m512 x) {
    /* exp(-x) as exp_f32 in common.h, 16 lanes; max/min keep a NaN (they return their second operand) */
    __m512 y = _mm512_sub_ps(_mm512_setzero_ps(), x);
    y = _mm512_min_ps(_mm512_set1_ps(88.0f), y);
    y = _mm512_max_ps(_mm512_set1_ps(-87.0f), y);
    const __m512 shifter = _mm512_set1_ps(12582912.0f);
    const __m512 t = _mm512_fmadd_ps(y, _mm512_set1_ps(1.44269504088896341f), shifter);
    const __m512 n = _mm512_sub_ps(t, shifter);
    const __m512i e = _mm512_add_epi32(_mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(0x4B400000)),
                                       _mm512_set1_epi32(127));
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), y);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    const __m512 r2 = _mm512_mul_ps(r, r);
    __m512 p = _mm512_set1_ps(1.9875691500E-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0f));
    const __m512 ex = _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32(e, 23)));
    /* 1 / (1 + e): rcp14 and one Newton step */
    const __m512 d = _mm512_add_ps(ex, _mm512_set1_ps(1.0f));
    const __m512 q = _mm512_rcp14_ps(d);
    return _mm512_mul_ps(q, _mm512_fnmadd_ps(d, q, _mm512_set1_ps(2.0f)));
}

static inline __mmask16 lane_mask(int n) { return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

static void synapse_sums_f32(int rows, int N, const float *v, const float *sigma, const float *nsm, const float *w,
                             const float *we, float *den, float *num) {
    for (int i0 = 0; i0 < N; i0 += 64) { /* 64 posts: 4 + 4 accumulators in registers over all rows */
        __mmask16 m[4];
        __m512 d[4], n[4];
        for (int q = 0; q < 4; q++) {
            m[q] = lane_mask(N - i0 - 16 * q);
            d[q] = n[q] = _mm512_setzero_ps();
        }
        for (int j = 0; j < rows; j++) {
            const __m512 vj = _mm512_set1_ps(v[j]);
            const size_t row = (size_t)j * N + i0;
            for (int q = 0; q < 4; q++) {
                const size_t at = row + 16 * q;
                const __m512 z = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m[q], sigma + at), vj,
                                                 _mm512_maskz_loadu_ps(m[q], nsm + at));
                const __m512 s = sigmoid16(z);
                d[q] = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m[q], w + at), d[q]);
                n[q] = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m[q], we + at), n[q]);
            }
        }
        for (int q = 0; q < 4; q++) {
            _mm512_mask_storeu_ps(den + i0 + 16 * q, m[q], d[q]);
            _mm512_mask_storeu_ps(num + i0 + 16 * q, m[q], n[q]);
        }
    }
}

static void synapse_grads_f32(int N, const float *v, const float *sigma, const float *nsm, const float *w,
                              const float *we, const float *d_den, const float *d_num, const float *r_cm, float *aw,
                              float *ae, float *an, float *as, float *g_new) {
    for (int j = 0; j < N; j++) {
        const __m512 vj = _mm512_set1_ps(v[j]);
        __m512 acc = _mm512_setzero_ps();
        const size_t row = (size_t)j * N;
        for (int i = 0; i < N; i += 16) {
            const __mmask16 m = lane_mask(N - i);
            const size_t at = row + i;
            const __m512 sg = _mm512_maskz_loadu_ps(m, sigma + at);
            const __m512 s = sigmoid16(_mm512_fmadd_ps(sg, vj, _mm512_maskz_loadu_ps(m, nsm + at)));
            const __m512 dd = _mm512_maskz_loadu_ps(m, d_den + i), dn = _mm512_maskz_loadu_ps(m, d_num + i);
            _mm512_mask_storeu_ps(aw + at, m, _mm512_fmadd_ps(s, dd, _mm512_maskz_loadu_ps(m, aw + at)));
            _mm512_mask_storeu_ps(ae + at, m, _mm512_fmadd_ps(s, dn, _mm512_maskz_loadu_ps(m, ae + at)));
            const __m512 slope = _mm512_fnmadd_ps(s, s, s);
            const __m512 dz = _mm512_mul_ps(
                _mm512_fmadd_ps(dd, _mm512_maskz_loadu_ps(m, w + at), _mm512_mul_ps(dn, _mm512_maskz_loadu_ps(m, we + at))),
                slope);
            _mm512_mask_storeu_ps(an + at, m, _mm512_add_ps(dz, _mm512_maskz_loadu_ps(m, an + at)));
            _mm512_mask_storeu_ps(as + at, m, _mm512_fmadd_ps(dz, vj, _mm512_maskz_loadu_ps(m, as + at)));
            acc = _mm512_fmadd_ps(dz, sg, acc);
        }
        g_new[j] = _mm512_reduce_add_ps(acc) + r_cm[j];
    }
}

static void synapse_grads2_f32(int N, const float *v0, const float *v1, const float *sigma, const float *nsm,
                               const float *w, const float *we, const float *dd0, const float *dn0, const float *rc0,
                               const float *dd1, const float *dn1, const float *rc1, float *aw, float *ae, float *an,
                               float *as, float *g0, float *g1) {
    for (int j = 0; j < N; j++) {
        const __m512 vj0 = _mm512_set1_ps(v0[j]), vj1 = _mm512_set1_ps(v1[j]);
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        const size_t row = (size_t)j * N;
        for (int i = 0; i < N; i += 16) {
            const __mmask16 m = lane_mask(N - i);
            const size_t at = row + i;
            const __m512 sg = _mm512_maskz_loadu_ps(m, sigma + at), sh = _mm512_maskz_loadu_ps(m, nsm + at);
            const __m512 wv = _mm512_maskz_loadu_ps(m, w + at), ev = _mm512_maskz_loadu_ps(m, we + at);
            const __m512 s0 = sigmoid16(_mm512_fmadd_ps(sg, vj0, sh)), s1 = sigmoid16(_mm512_fmadd_ps(sg, vj1, sh));
            const __m512 a0 = _mm512_maskz_loadu_ps(m, dd0 + i), b0 = _mm512_maskz_loadu_ps(m, dn0 + i);
            const __m512 a1 = _mm512_maskz_loadu_ps(m, dd1 + i), b1 = _mm512_maskz_loadu_ps(m, dn1 + i);
            const __m512 w_acc = _mm512_fmadd_ps(s1, a1, _mm512_fmadd_ps(s0, a0, _mm512_maskz_loadu_ps(m, aw + at)));
            _mm512_mask_storeu_ps(aw + at, m, w_acc);
            const __m512 e_acc = _mm512_fmadd_ps(s1, b1, _mm512_fmadd_ps(s0, b0, _mm512_maskz_loadu_ps(m, ae + at)));
            _mm512_mask_storeu_ps(ae + at, m, e_acc);
            const __m512 dz0 = _mm512_mul_ps(_mm512_fmadd_ps(a0, wv, _mm512_mul_ps(b0, ev)), _mm512_fnmadd_ps(s0, s0, s0));
            const __m512 dz1 = _mm512_mul_ps(_mm512_fmadd_ps(a1, wv, _mm512_mul_ps(b1, ev)), _mm512_fnmadd_ps(s1, s1, s1));
            _mm512_mask_storeu_ps(an + at, m, _mm512_add_ps(_mm512_add_ps(dz0, dz1), _mm512_maskz_loadu_ps(m, an + at)));
            const __m512 s_acc = _mm512_fmadd_ps(dz1, vj1, _mm512_fmadd_ps(dz0, vj0, _mm512_maskz_loadu_ps(m, as + at)));
            _mm512_mask_storeu_ps(as + at, m, s_acc);
            acc0 = _mm512_fmadd_ps(dz0, sg, acc0);
            acc1 = _mm512_fmadd_ps(dz1, sg, acc1);
        }
        g0[j] = _mm512_reduce_add_ps(acc0) + rc0[j];
        g1[j] = _mm512_reduce_add_ps(acc1) + rc1[j];
    }
}
#else
/* Without AVX-512: the same passes on vec.h's vectors (AVX2 + FMA, or NEON/SSE). The sums keep 2 vectors of
 * posts in registers over all pre-synaptic rows; tails are partial loads and stores. */
#include "vec.h"

static void synapse_sums_f32(int rows, int N, const float *v, const float *sigma, const float *nsm, const float *w,
                             const float *we, float *den, float *num) {
    for (int i0 = 0; i0 < N; i0 += 2 * VW) {
        const int n0 = N - i0 < VW ? N - i0 : VW, n1 = N - i0 - VW < VW ? N - i0 - VW : VW;
        vf d0 = vsplat(0.0f), d1 = vsplat(0.0f), m0 = vsplat(0.0f), m1 = vsplat(0.0f);
        for (int j = 0; j < rows; j++) {
            const vf vj = vsplat(v[j]);
            const size_t at = (size_t)j * N + i0;
            const vf s0 = vsigmoid(vload_n(sigma + at, n0) * vj + vload_n(nsm + at, n0));
            d0 += s0 * vload_n(w + at, n0);
            m0 += s0 * vload_n(we + at, n0);
            if (n1 > 0) {
                const vf s1 = vsigmoid(vload_n(sigma + at + VW, n1) * vj + vload_n(nsm + at + VW, n1));
                d1 += s1 * vload_n(w + at + VW, n1);
                m1 += s1 * vload_n(we + at + VW, n1);
            }
        }
        vstore_n(den + i0, d0, n0);
        vstore_n(num + i0, m0, n0);
        if (n1 > 0) {
            vstore_n(den + i0 + VW, d1, n1);
            vstore_n(num + i0 + VW, m1, n1);
        }
    }
}

/* dz = (d_den w + d_num we) s (1 - s) for one sample and VW posts at row offset `at`; accumulates the four
 * parameter gradients there and returns dz * sigma for g_new. */
static inline __attribute__((always_inline)) vf synapse_grad_lanes(int n, size_t at, vf vj, vf sg, const float *nsm,
                                                                   const float *w, const float *we, vf dd, vf dn,
                                                                   float *aw, float *ae, float *an, float *as) {
    const vf s = vsigmoid(sg * vj + vload_n(nsm + at, n));
    vstore_n(aw + at, vload_n(aw + at, n) + s * dd, n);
    vstore_n(ae + at, vload_n(ae + at, n) + s * dn, n);
    const vf dz = (dd * vload_n(w + at, n) + dn * vload_n(we + at, n)) * (s - s * s);
    vstore_n(an + at, vload_n(an + at, n) + dz, n);
    vstore_n(as + at, vload_n(as + at, n) + dz * vj, n);
    return dz * sg;
}

static void synapse_grads_f32(int N, const float *v, const float *sigma, const float *nsm, const float *w,
                              const float *we, const float *d_den, const float *d_num, const float *r_cm, float *aw,
                              float *ae, float *an, float *as, float *g_new) {
    for (int j = 0; j < N; j++) {
        const vf vj = vsplat(v[j]);
        vf acc = vsplat(0.0f);
        for (int i = 0; i < N; i += VW) {
            const int n = N - i < VW ? N - i : VW;
            const size_t at = (size_t)j * N + i;
            acc += synapse_grad_lanes(n, at, vj, vload_n(sigma + at, n), nsm, w, we, vload_n(d_den + i, n),
                                      vload_n(d_num + i, n), aw, ae, an, as);
        }
        g_new[j] = vsum(acc) + r_cm[j];
    }
}

/* Two samples in lock-step: each accumulator element is read and written once for both. */
static void synapse_grads2_f32(int N, const float *v0, const float *v1, const float *sigma, const float *nsm,
                               const float *w, const float *we, const float *dd0, const float *dn0, const float *rc0,
                               const float *dd1, const float *dn1, const float *rc1, float *aw, float *ae, float *an,
                               float *as, float *g0, float *g1) {
    for (int j = 0; j < N; j++) {
        const vf vj0 = vsplat(v0[j]), vj1 = vsplat(v1[j]);
        vf acc0 = vsplat(0.0f), acc1 = vsplat(0.0f);
        for (int i = 0; i < N; i += VW) {
            const int n = N - i < VW ? N - i : VW;
            const size_t at = (size_t)j * N + i;
            const vf sg = vload_n(sigma + at, n), sh = vload_n(nsm + at, n);
            const vf wv = vload_n(w + at, n), ev = vload_n(we + at, n);
            const vf s0 = vsigmoid(sg * vj0 + sh), s1 = vsigmoid(sg * vj1 + sh);
            const vf a0 = vload_n(dd0 + i, n), b0 = vload_n(dn0 + i, n);
            const vf a1 = vload_n(dd1 + i, n), b1 = vload_n(dn1 + i, n);
            vstore_n(aw + at, vload_n(aw + at, n) + s0 * a0 + s1 * a1, n);
            vstore_n(ae + at, vload_n(ae + at, n) + s0 * b0 + s1 * b1, n);
            const vf dz0 = (a0 * wv + b0 * ev) * (s0 - s0 * s0), dz1 = (a1 * wv + b1 * ev) * (s1 - s1 * s1);
            vstore_n(an + at, vload_n(an + at, n) + dz0 + dz1, n);
            vstore_n(as + at, vload_n(as + at, n) + dz0 * vj0 + dz1 * vj1, n);
            acc0 += dz0 * sg;
            acc1 += dz1 * sg;
        }
        g0[j] = vsum(acc0) + rc0[j];
        g1[j] = vsum(acc1) + rc1[j];
    }
}
#endif
#endif
