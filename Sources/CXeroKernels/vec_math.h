// Small vector helpers shared by the C kernels (included, not compiled alone).
#ifndef XERO_VEC_MATH_H
#define XERO_VEC_MATH_H
#include <immintrin.h>
#include <math.h>

static inline __m256 load8(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

// ggml's hsum_float_8 of the eight lanes [lo, hi]: ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)). Every
// kernel that reproduces one of ggml's dot products ends in this order.
static inline float hsum4(__m128 r) {
    // (a0+a2) + (a1+a3)
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

static inline float hsum_halves(__m128 lo, __m128 hi) {
    return hsum4(_mm_add_ps(lo, hi));
}

static inline float hsum8(__m256 v) {
    return hsum_halves(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
}

// Sixteen lanes, added pairwise first (ggml's reduction of two accumulators).
static inline float reduce16(__m256 lo, __m256 hi) {
    return hsum8(_mm256_add_ps(lo, hi));
}

// e^x for eight lanes by the algorithm ggml's CPU backend uses for SiLU and softmax (Arm's
// optimized-routines expf: x = n·ln2 + b, |b| ≤ ln2/2, a degree-5 polynomial for e^b, scaled by
// 2^n, max error ≈ 1.5 ulp), in the form of its AVX-512 build (j·2^n rounded once, as scalef).
// Using llama.cpp's function rather than libm's expf keeps greedy decoding on the same tokens: a
// 1-ulp difference in a SiLU output can flip an 8-bit activation rounding and, dozens of layers
// later, a near-tie. Lanes whose 2^n leaves the normal range take the correctly rounded ldexpf.
// The tests' scalar statement (ScalarStatement.exp) is held to the same bits.
static inline __m256 exp8(__m256 x) {
    const __m256 shift = _mm256_set1_ps(0x1.8p23f);
    const __m256 n = _mm256_sub_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), shift), shift);
    __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x);
    b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f), b);
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 p1 = _mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f));
    const __m256 p2 = _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f));
    const __m256 p3 = _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), b, _mm256_set1_ps(1.0f));
    const __m256 j = _mm256_fmadd_ps(_mm256_fmadd_ps(p1, u, p2), u, p3);
    const __m256i ni = _mm256_cvtps_epi32(n);
    // 2^n as float bits, exact while −126 ≤ n ≤ 127.
    __m256 r = _mm256_mul_ps(j, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(ni, _mm256_set1_epi32(127)), 23)));
    const __m256i outside = _mm256_or_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(-126), ni), _mm256_cmpgt_epi32(ni, _mm256_set1_epi32(127)));
    if (!_mm256_testz_si256(outside, outside)) {
        // Rare lanes (results subnormal, zero or infinite; NaN input), one by one on the float n:
        // the integer conversion of ±inf or NaN is INT_MIN whatever the sign.
        float rs[8], js[8], xs[8], nf[8];
        _mm256_storeu_ps(xs, x);
        _mm256_storeu_ps(rs, r);
        _mm256_storeu_ps(js, j);
        _mm256_storeu_ps(nf, n);
        for (int k = 0; k < 8; k++) {
            if (nf[k] >= -126 && nf[k] <= 127) continue;
            rs[k] = isnan(xs[k]) ? NAN : nf[k] > 192 ? INFINITY : nf[k] < -192 ? 0.0f : ldexpf(js[k], (int)nf[k]);
        }
        r = _mm256_loadu_ps(rs);
    }
    return r;
}

#endif
