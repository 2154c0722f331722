/* float32 vectors for the kernels without AVX-512: GCC vector extensions, which the compiler lowers to the
 * target's SIMD (AVX2 + FMA ymm registers on x86-64 with -march=native, SSE2 otherwise, NEON on aarch64).
 * One source for every such CPU; gemm.h and synapses.h build their tiles and synapse passes from it.
 *
 * VW lanes: 8 with AVX (32-byte vectors), else 4. Loads and stores are unaligned; vload_n / vstore_n move the
 * first n < VW lanes of a tail (the other lanes are zero). vexp is exp_f32 of common.h lane by lane (the same
 * Cephes polynomial, NaN kept), vsigmoid is 1 / (1 + exp(-x)), with AVX2 the division is a reciprocal estimate
 * plus one Newton step (relative error ~1e-7, below float32 rounding: test_cells.py compares with torch). */
#ifndef LIQUID_VEC_H
#define LIQUID_VEC_H
#include "common.h"

#if defined(__AVX__)
#define LIQUID_VBYTES 32
#include <immintrin.h>
#else
#define LIQUID_VBYTES 16
#endif
#define VW (LIQUID_VBYTES / 4)

typedef float vf __attribute__((vector_size(LIQUID_VBYTES)));
typedef float vf_u __attribute__((vector_size(LIQUID_VBYTES), aligned(4), may_alias));
typedef int32_t vi __attribute__((vector_size(LIQUID_VBYTES)));

static inline vf vload(const float *p) { return *(const vf_u *)p; }
static inline void vstore(float *p, vf v) { *(vf_u *)p = v; }
#if LIQUID_VBYTES == 32
static inline vf vsplat(float x) { return (vf){x, x, x, x, x, x, x, x}; }
#else
static inline vf vsplat(float x) { return (vf){x, x, x, x}; } /* not 0 + x: an add per broadcast */
#endif
static inline vf vload_n(const float *p, int n) {
    if (n >= VW) return vload(p);
    vf v = {0};
    for (int k = 0; k < n; k++) v[k] = p[k];
    return v;
}
static inline void vstore_n(float *p, vf v, int n) {
    if (n >= VW) {
        vstore(p, v);
        return;
    }
    for (int k = 0; k < n; k++) p[k] = v[k];
}
/* lane-wise select: mask lanes (-1) take a, the others b */
static inline vf vselect(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }

/* min(x, hi) and max(x, lo) that keep a NaN x */
static inline vf vclamp(vf x, float lo, float hi) {
#if defined(__AVX__) && LIQUID_VBYTES == 32
    /* minps/maxps return their second operand when either is NaN */
    return (vf)_mm256_max_ps(_mm256_set1_ps(lo), _mm256_min_ps(_mm256_set1_ps(hi), (__m256)x));
#else
    x = vselect(x > hi, vsplat(hi), x); /* comparisons are false for NaN: it passes through */
    return vselect(x < lo, vsplat(lo), x);
#endif
}

static inline vf vexp(vf x) {
    x = vclamp(x, -87.0f, 88.0f);
    const vf shifter = vsplat(12582912.0f);
    const vf t = x * 1.44269504088896341f + shifter;
    const vf n = t - shifter;
    const vi e = ((vi)t - 0x4B400000) + 127;
    vf r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    const vf r2 = r * r;
    vf p = vsplat(1.9875691500E-4f);
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * r2 + r + 1.0f;
    return p * (vf)(e << 23);
}

static inline vf vrecip(vf d) {
#if defined(__AVX__) && LIQUID_VBYTES == 32
    const vf q = (vf)_mm256_rcp_ps((__m256)d);
    return q * (2.0f - d * q);
#else
    return 1.0f / d;
#endif
}

static inline vf vsigmoid(vf x) { return vrecip(1.0f + vexp(-x)); }

static inline float vsum(vf v) {
    float s = 0;
    for (int k = 0; k < VW; k++) s += v[k];
    return s;
}
#endif
