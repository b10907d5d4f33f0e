// Per-element work between the matrix products, vectorised: quantizing activations to 8 bits (what
// every quantized product reads), SwiGLU and the RMS norm. Same operations, element by element, as the Swift
// statements they replace (and as ggml's x86 code), so the bits are unchanged.
#include "xero_kernels.h"
#include "vec_math.h"
#include <math.h>
#include <string.h>

static inline float round_f16(float v) {
    return _cvtsh_ss(_cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT));
}

void xk_quantize_q8(const float *x, int blocks, int8_t *qs, float *d, float *s) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int b = 0; b < blocks; b++) {
        const float *src = x + (size_t)b * 32;
        __m256 v[4];
        __m256 amax = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(src + 8 * k);
            // max(|v|, amax) keeps amax when |v| is NaN: NaN lanes are ignored, as in the Swift statement.
            amax = _mm256_max_ps(_mm256_andnot_ps(sign, v[k]), amax);
        }
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        const float a = _mm_cvtss_f32(m);
        const float dd = a / 127;
        // 127/amax, not 1/d: the x86 kernels' rounding, which llama.cpp's results depend on.
        const __m256 id = _mm256_set1_ps(a != 0 ? 127 / a : 0);
        __m256i sum = _mm256_setzero_si256();
        for (int k = 0; k < 4; k++) {
            const __m256 p = _mm256_mul_ps(v[k], id);
            // Clamp to ±127 in float, before converting (an amax below ~4e-37 makes 127/amax infinite,
            // and the integer conversion of +inf is INT_MIN); NaN becomes 0.
            const __m256 nan = _mm256_cmp_ps(p, p, _CMP_UNORD_Q);
            const __m256 c = _mm256_max_ps(_mm256_min_ps(p, _mm256_set1_ps(127)), _mm256_set1_ps(-127));
            __m256i q = _mm256_cvtps_epi32(_mm256_round_ps(c, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            q = _mm256_andnot_si256(_mm256_castps_si256(nan), q);
            sum = _mm256_add_epi32(sum, q);
            int32_t lanes[8];
            _mm256_storeu_si256((__m256i *)lanes, q);
            for (int l = 0; l < 8; l++) qs[(size_t)b * 32 + 8 * k + l] = (int8_t)lanes[l];
        }
        __m128i t = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        t = _mm_hadd_epi32(t, t);
        t = _mm_hadd_epi32(t, t);
        d[b] = round_f16(dd);
        s[b] = round_f16((float)_mm_cvtsi128_si32(t) * dd);
    }
}

void xk_quantize_q8_K(const float *x, int blocks, int8_t *qs, float *d, int16_t *bsums) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int b = 0; b < blocks; b++) {
        const float *src = x + (size_t)b * 256;
        int8_t *q = qs + (size_t)b * 256;
        int16_t *bsum = bsums + (size_t)b * 16;
        // amax = the largest |x| (NaN never compares greater: ignored), then max = the first element
        // with that magnitude, as ggml's sequential `if (ax > amax)` finds it.
        __m256 am = _mm256_setzero_ps();
        for (int k = 0; k < 32; k++) am = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(src + 8 * k)), am);
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(am), _mm256_extractf128_ps(am, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        const float amax = _mm_cvtss_f32(m);
        if (!amax) {
            memset(q, 0, 256);
            memset(bsum, 0, 32);
            d[b] = 0;
            continue;
        }
        float max = 0;
        for (int j = 0; j < 256; j++)
            if (fabsf(src[j]) == amax) { max = src[j]; break; }
        const float iscale = -127.f / max;
        const __m256 vs = _mm256_set1_ps(iscale);
        for (int k = 0; k < 32; k++) {
            // ggml's nearest_int: the float's low mantissa bits after adding 1.5·2^23 (round-half-even).
            const __m256 v = _mm256_add_ps(_mm256_mul_ps(vs, _mm256_loadu_ps(src + 8 * k)), _mm256_set1_ps(12582912.f));
            __m256i i = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x007fffff)),
                                         _mm256_set1_epi32(0x00400000));
            i = _mm256_min_epi32(i, _mm256_set1_epi32(127));
            int32_t lanes[8];
            _mm256_storeu_si256((__m256i *)lanes, i);
            for (int l = 0; l < 8; l++) q[8 * k + l] = (int8_t)lanes[l];
        }
        for (int j = 0; j < 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += q[16 * j + l];
            bsum[j] = (int16_t)sum;
        }
        d[b] = 1 / iscale;
    }
}

void xk_swiglu(float *g, const float *u, int n) {
    const __m256 one = _mm256_set1_ps(1), zero = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 silu = _mm256_div_ps(x, _mm256_add_ps(one, exp8(_mm256_sub_ps(zero, x))));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) g[i] = g[i] / (1 + xk_exp(0 - g[i])) * u[i];
}

// ggml's rms_norm and the weight multiply, row by row: each row's sum of squares is added in
// double in element order (one chain a row, as ggml), so up to eight rows run their chains side
// by side instead of one after another; the scaling is elementwise, vectorised.
void xk_rms_norm(const float *x, const float *w, int rows, int cols, float eps, float *out) {
    for (int r0 = 0; r0 < rows; r0 += 8) {
        const int m = rows - r0 < 8 ? rows - r0 : 8;
        double sum[8] = { 0 };
        for (int i = 0; i < cols; i++)
            for (int r = 0; r < m; r++) {
                const float v = x[(size_t)(r0 + r) * cols + i];
                sum[r] += (double)(v * v);
            }
        for (int r = 0; r < m; r++) {
            const float scale = 1.0f / sqrtf((float)(sum[r] / (double)cols) + eps);
            const float *xr = x + (size_t)(r0 + r) * cols;
            float *o = out + (size_t)(r0 + r) * cols;
            const __m256 s = _mm256_set1_ps(scale);
            int i = 0;
            for (; i + 8 <= cols; i += 8)
                _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(xr + i), s), _mm256_loadu_ps(w + i)));
            for (; i < cols; i++) o[i] = xr[i] * scale * w[i];
        }
    }
}
