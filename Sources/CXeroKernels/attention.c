// Attention's Float16 dot products over the KV cache, in the accumulation orders of llama.cpp's
// x86 AVX-512 kernels, computed with pairs of 8-lane registers (the per-lane operations are the
// same, so the bits are too, and AVX2 + F16C suffices):
//  - "tiled" (tinyBLAS, a batch of several tokens): one 16-lane accumulator over 16-element steps;
//  - "vec" (ggml_vec_dot_f16, a single token): four 16-lane accumulators over 64-element steps,
//    combined as (s0 + s2) + (s1 + s3).
// Both end with _mm512_reduce_add_ps as GCC expands it: halves, quarters, ((0+2)+(1+3)).
#include "xero_kernels.h"
#include "vec_math.h"

// x (Float16) · y (floats), n a multiple of 16.
static inline float dot_tiled(const uint16_t *x, const float *y, int n) {
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        lo = _mm256_fmadd_ps(load8(x + i), _mm256_loadu_ps(y + i), lo);
        hi = _mm256_fmadd_ps(load8(x + i + 8), _mm256_loadu_ps(y + i + 8), hi);
    }
    return reduce16(lo, hi);
}

// The same, n a multiple of 64, four accumulators.
static inline float dot_vec(const uint16_t *x, const float *y, int n) {
    __m256 s[8];
    for (int k = 0; k < 8; k++) s[k] = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 64)
        for (int k = 0; k < 8; k++) s[k] = _mm256_fmadd_ps(load8(x + i + 8 * k), _mm256_loadu_ps(y + i + 8 * k), s[k]);
    // Accumulator a is the register pair (s[2a], s[2a+1]).
    return reduce16(_mm256_add_ps(_mm256_add_ps(s[0], s[4]), _mm256_add_ps(s[2], s[6])),
                    _mm256_add_ps(_mm256_add_ps(s[1], s[5]), _mm256_add_ps(s[3], s[7])));
}

static void to_floats(const uint16_t *h, int n, float *out) {
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, load8(h + i));
    for (; i < n; i++) out[i] = _cvtsh_ss(h[i]);
}

void xk_attention_scores(const uint16_t *keys, size_t key_stride, int count, const uint16_t *q, int dims,
                         int tiled, float scale, float *scratch, float *scores) {
    to_floats(q, dims, scratch);
    for (int j = 0; j < count; j++) {
        const uint16_t *k = keys + (size_t)j * key_stride;
        scores[j] = (tiled ? dot_tiled(k, scratch, dims) : dot_vec(k, scratch, dims)) * scale;
    }
}

void xk_attention_values(const uint16_t *columns, size_t column_stride, int dims, const uint16_t *probs, int n,
                         int tiled, float *scratch, float *out) {
    to_floats(probs, n, scratch);
    for (int d = 0; d < dims; d++) {
        const uint16_t *col = columns + (size_t)d * column_stride;
        out[d] = tiled ? dot_tiled(col, scratch, n) : dot_vec(col, scratch, n);
    }
}

float xk_exp(float x) {
    float v[8] = {x, x, x, x, x, x, x, x};
    float r[8];
    _mm256_storeu_ps(r, exp8(_mm256_loadu_ps(v)));
    return r[0];
}

void xk_softmax_f16(float *scores, int len, int padded, uint16_t *probs) {
    float mx = -INFINITY;
    for (int j = 0; j < len; j++) mx = scores[j] > mx ? scores[j] : mx;
    // ggml's soft_max: 16 lanes at a time (masked positions are exp(−inf) = 0), each group summed
    // in _mm512_reduce_add_ps order into a double.
    double sum = 0;
    for (int j0 = 0; j0 < len; j0 += 16) {
        float chunk[16];
        for (int l = 0; l < 16; l++) chunk[l] = j0 + l < len ? scores[j0 + l] - mx : -INFINITY;
        const __m256 lo = exp8(_mm256_loadu_ps(chunk)), hi = exp8(_mm256_loadu_ps(chunk + 8));
        _mm256_storeu_ps(chunk, lo);
        _mm256_storeu_ps(chunk + 8, hi);
        for (int l = 0; l < 16 && j0 + l < len; l++) scores[j0 + l] = chunk[l];
        sum += (double)reduce16(lo, hi);
    }
    const float inv = (float)(1 / sum);
    int j = 0;
    for (; j + 8 <= len; j += 8)
        _mm_storeu_si128((__m128i *)(probs + j), _mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(scores + j), _mm256_set1_ps(inv)), _MM_FROUND_TO_NEAREST_INT));
    for (; j < len; j++) probs[j] = _cvtss_sh(scores[j] * inv, _MM_FROUND_TO_NEAREST_INT);
    for (; j < padded; j++) probs[j] = 0;
}

// One position's key and value into a layer's cache, rounded to Float16 (round to nearest even,
// what Swift's Float16(_:) does): the key row contiguous, the value down its column of the
// transposed store.
void xk_store_kv(const float *key, const float *value, int dims, uint16_t *key_row, uint16_t *value_column, size_t column_stride) {
    int i = 0;
    for (; i + 8 <= dims; i += 8) {
        _mm_storeu_si128((__m128i *)(key_row + i), _mm256_cvtps_ph(_mm256_loadu_ps(key + i), _MM_FROUND_TO_NEAREST_INT));
        uint16_t h[8];
        _mm_storeu_si128((__m128i *)h, _mm256_cvtps_ph(_mm256_loadu_ps(value + i), _MM_FROUND_TO_NEAREST_INT));
        for (int j = 0; j < 8; j++) value_column[(size_t)(i + j) * column_stride] = h[j];
    }
    for (; i < dims; i++) {
        key_row[i] = _cvtss_sh(key[i], _MM_FROUND_TO_NEAREST_INT);
        value_column[(size_t)i * column_stride] = _cvtss_sh(value[i], _MM_FROUND_TO_NEAREST_INT);
    }
}
