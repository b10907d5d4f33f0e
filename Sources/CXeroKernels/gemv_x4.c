// Decoding (one to three activation rows) over Q4_1 and Q8_0 weights repacked four rows at a time
// (VNNI).
//
// In ggml's layout each row is its own run of 20-byte blocks (d, m, 16 bytes of nibbles), so a
// four-row tile converts four scattered heads per block and unpacks each row's nibbles on its own.
// Repacked (x4_layout.h), block b of rows 4g … 4g+3 is one 80-byte record: the four (d, m)
// pairs, then the four rows' 16 nibble bytes. One conversion gives all eight halves; one multiply
// forms the four rows' d_w·d_a (and one the four m_w·s_a); a 256-bit load carries two rows'
// nibbles, whose low nibbles meet the activations' first 16 values and high nibbles the last 16.
//
// The bits are ggml's: every output's lane k still receives, block by block,
// fma(d_w·d_a, float(Σ_{i=4k}^{4k+3} w_i·a_i), acc) — the accumulators hold lanes 0–3 and 4–7 of
// two rows in one register instead of one row's eight, and are put back in ggml's order before
// its horizontal sum; the products and the m·s sums are the same single roundings in block order.
#include "xero_kernels.h"
#include "vec_math.h"
#include "x4_layout.h"
#include <immintrin.h>
#include <string.h>

#define XK_X4_TARGET __attribute__((target("avx512f,avx512vl,avx512bw,avx512vnni")))
#ifndef XK_X4_AHEAD
#define XK_X4_AHEAD 4096
#endif

void xk_repack_x4(int type, const void *src, size_t row_bytes, int rows, void *dst) {
    const int hs = x4_head_bytes(type), vs = x4_value_bytes(type), bs = hs + vs;
    const int nb = (int)(row_bytes / (size_t)bs);
    const uint8_t *s = src;
    uint8_t *d = dst;
    for (int g = 0; g + 4 <= rows; g += 4)
        for (int b = 0; b < nb; b++) {
            uint8_t *rec = d + (size_t)g * row_bytes + (size_t)b * x4_record_bytes(type);
            for (int r = 0; r < 4; r++) {
                const uint8_t *blk = s + (size_t)(g + r) * row_bytes + (size_t)b * bs;
                memcpy(rec + x4_head_at(type, r), blk, (size_t)hs);
                memcpy(rec + x4_values_at(type, r), blk + hs, (size_t)vs);
            }
        }
}

// T activation rows (1–3) against rows r0 ..< r1: each record's scales and nibbles are unpacked
// once for all T. Per activation row: four accumulators (lanes 0–3 and 4–7 of rows 0/1 and 2/3).
static inline XK_X4_TARGET __attribute__((always_inline))
void gemv_t(const int T, const uint8_t *w, size_t row_bytes, int r0, int r1,
            const int8_t *aq, const float *ad, const float *as, int cols, float *out, int ldo) {
    const int nb = cols / 32;
    const __m256i low = _mm256_set1_epi8(0x0F), zero = _mm256_setzero_si256();
    const __m256i rows01 = _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2), rows23 = _mm256_setr_epi32(4, 4, 4, 4, 6, 6, 6, 6);
    for (int g = r0; g + 4 <= r1; g += 4) {
        const uint8_t *rec = w + (size_t)g * row_bytes;
        __m256 lo01[3], hi01[3], lo23[3], hi23[3], summ[3];
        for (int t = 0; t < T; t++)
            lo01[t] = hi01[t] = lo23[t] = hi23[t] = summ[t] = _mm256_setzero_ps();
        for (int b = 0; b < nb; b++, rec += XK_X4_Q4_1_RECORD) {
            _mm_prefetch((const char *)rec + XK_X4_AHEAD, _MM_HINT_T0);
            _mm_prefetch((const char *)rec + XK_X4_AHEAD + 64, _MM_HINT_T0);
            // [d0 m0 d1 m1 d2 m2 d3 m3]: even lanes become d_w·d_a, odd lanes add m_w·s_a.
            const __m256 heads = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)rec));
            const __m256i q01 = _mm256_loadu_si256((const __m256i *)(rec + 4 * XK_X4_Q4_1_HEAD));  // rows 0, 1
            const __m256i q23 = _mm256_loadu_si256((const __m256i *)(rec + 4 * XK_X4_Q4_1_HEAD + 2 * XK_X4_Q4_1_VALUES));  // rows 2, 3
            const __m256i l01 = _mm256_and_si256(q01, low), h01 = _mm256_and_si256(_mm256_srli_epi16(q01, 4), low);
            const __m256i l23 = _mm256_and_si256(q23, low), h23 = _mm256_and_si256(_mm256_srli_epi16(q23, 4), low);
            for (int t = 0; t < T; t++) {
                const size_t at = (size_t)t * nb + b;
                const __m256 scale = _mm256_mul_ps(heads, _mm256_set1_ps(ad[at]));
                summ[t] = _mm256_add_ps(summ[t], _mm256_mul_ps(heads, _mm256_set1_ps(as[at])));
                const int8_t *y = aq + (size_t)t * cols + (size_t)b * 32;
                const __m256i ya = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)y));
                const __m256i yb = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(y + 16)));
                const __m256 s01 = _mm256_permutexvar_ps(rows01, scale), s23 = _mm256_permutexvar_ps(rows23, scale);
                lo01[t] = _mm256_fmadd_ps(s01, _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(zero, l01, ya)), lo01[t]);
                hi01[t] = _mm256_fmadd_ps(s01, _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(zero, h01, yb)), hi01[t]);
                lo23[t] = _mm256_fmadd_ps(s23, _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(zero, l23, ya)), lo23[t]);
                hi23[t] = _mm256_fmadd_ps(s23, _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(zero, h23, yb)), hi23[t]);
            }
        }
        for (int t = 0; t < T; t++) {
            float sm[8];
            _mm256_storeu_ps(sm, summ[t]);
            float *o = out + (size_t)t * ldo + g;
            o[0] = hsum_halves(_mm256_castps256_ps128(lo01[t]), _mm256_castps256_ps128(hi01[t])) + sm[1];
            o[1] = hsum_halves(_mm256_extractf128_ps(lo01[t], 1), _mm256_extractf128_ps(hi01[t], 1)) + sm[3];
            o[2] = hsum_halves(_mm256_castps256_ps128(lo23[t]), _mm256_castps256_ps128(hi23[t])) + sm[5];
            o[3] = hsum_halves(_mm256_extractf128_ps(lo23[t], 1), _mm256_extractf128_ps(hi23[t], 1)) + sm[7];
        }
    }
}

XK_X4_TARGET void xk_gemv_q4_1x4(const void *w, size_t row_bytes, int r0, int r1,
                                 const int8_t *aq, const float *ad, const float *as, int n, int cols,
                                 float *out, int ldo) {
    const uint8_t *wb = w;
    switch (n) {
    case 1: gemv_t(1, wb, row_bytes, r0, r1, aq, ad, as, cols, out, ldo); break;
    case 2: gemv_t(2, wb, row_bytes, r0, r1, aq, ad, as, cols, out, ldo); break;
    case 3: gemv_t(3, wb, row_bytes, r0, r1, aq, ad, as, cols, out, ldo); break;
    }
}

// Q8_0 records: the four rows' d (8 bytes), then their 32 signed values each. Σ w·a is formed as
// Σ (w + 128)·a − 128·Σ a (vpdpbusd wants one unsigned operand): the activation's −128·Σ a is
// made once per block and activation row for all four weight rows, where the 4 × 1 tile made the
// weights' −128·Σ w for every row. Exact integers either way; one product d_w·d_a per output and
// block, fma'd into the same eight lanes as ggml's.
static inline XK_X4_TARGET __attribute__((always_inline))
void gemv_q8_t(const int T, const uint8_t *w, size_t row_bytes, int r0, int r1,
               const int8_t *aq, const float *ad, int cols, float *out, int ldo) {
    const int nb = cols / 32;
    const __m256i zero = _mm256_setzero_si256(), ones = _mm256_set1_epi8(1), flip = _mm256_set1_epi8((char)0x80);
    for (int g = r0; g + 4 <= r1; g += 4) {
        const uint8_t *rec = w + (size_t)g * row_bytes;
        __m256 acc[3][4];
        for (int t = 0; t < T; t++)
            for (int r = 0; r < 4; r++) acc[t][r] = _mm256_setzero_ps();
        for (int b = 0; b < nb; b++, rec += XK_X4_Q8_0_RECORD) {
            _mm_prefetch((const char *)rec + XK_X4_AHEAD, _MM_HINT_T0);
            _mm_prefetch((const char *)rec + XK_X4_AHEAD + 64, _MM_HINT_T0);
            _mm_prefetch((const char *)rec + XK_X4_AHEAD + 128, _MM_HINT_T0);
            const __m128 d = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)rec));
            __m256i x[4];
            for (int r = 0; r < 4; r++) x[r] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(rec + 4 * XK_X4_Q8_0_HEAD + XK_X4_Q8_0_VALUES * r)), flip);
            for (int t = 0; t < T; t++) {
                const __m256i y = _mm256_loadu_si256((const __m256i *)(aq + (size_t)t * cols + (size_t)b * 32));
                const __m256i yoff = _mm256_sub_epi32(zero, _mm256_slli_epi32(_mm256_dpbusd_epi32(zero, ones, y), 7));
                const __m256 scale = _mm256_castps128_ps256(_mm_mul_ps(d, _mm_set1_ps(ad[(size_t)t * nb + b])));
                for (int r = 0; r < 4; r++)
                    acc[t][r] = _mm256_fmadd_ps(_mm256_permutexvar_ps(_mm256_set1_epi32(r), scale),
                                                _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(yoff, x[r], y)), acc[t][r]);
            }
        }
        for (int t = 0; t < T; t++)
            for (int r = 0; r < 4; r++)
                out[(size_t)t * ldo + g + r] = hsum8(acc[t][r]);
    }
}

XK_X4_TARGET void xk_gemv_q8_0x4(const void *w, size_t row_bytes, int r0, int r1,
                                 const int8_t *aq, const float *ad, int n, int cols, float *out, int ldo) {
    const uint8_t *wb = w;
    switch (n) {
    case 1: gemv_q8_t(1, wb, row_bytes, r0, r1, aq, ad, cols, out, ldo); break;
    case 2: gemv_q8_t(2, wb, row_bytes, r0, r1, aq, ad, cols, out, ldo); break;
    case 3: gemv_q8_t(3, wb, row_bytes, r0, r1, aq, ad, cols, out, ldo); break;
    }
}
