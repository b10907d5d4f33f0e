// The K-quant matrix product (Q4_K, Q5_K, Q6_K weights × Q8_K activations), compiled twice by
// kernels.c after gemm_body.h: once for AVX-512 VNNI (XK_VNNI 1) and once for plain AVX2.
//
// Bit-exactness with llama.cpp: its AVX2 ggml_vec_dot_q{4,5,6}_K_q8_K (llama.cpp has no AVX-512
// K-quant dot; built with -march=native it compiles these). Per 256-element superblock, eight
// exact int32 lanes: lane k = Σ over the eight 32-element chunks c of scale(c) · Σ_{e=4k}^{4k+3}
// q[32c+e]·a[32c+e] (Q6_K: one scale per 16 elements, and −32·(bsums[2k]·sc[2k] + bsums[2k+1]·sc[2k+1])),
// then acc = fma(a.d·w.d, float(lane), acc); at the end hsum_float_8(acc) plus the mins term:
// Q4_K a 4-lane acc_m = fma(−a.d·w.dmin, float(prod_m), acc_m) reduced (m0+m2)+(m1+m3), Q5_K a
// scalar summs = fma(−a.d·w.dmin, float(Σ prod_m), summs). The integers are exact however they
// are formed (maddubs never saturates: |q| ≤ 63, |a| ≤ 127), so the VNNI path's vpdpwssd and the
// AVX2 path's vpmaddwd + vpaddd give the same lanes, and tiling never reorders one output's floats.

#define XK_KINLINE static inline XK_TARGET __attribute__((always_inline))

// Q4_K/Q5_K's twelve scale bytes → eight 6-bit scales (bytes 0–7) and eight 6-bit mins (8–15):
// ggml's get_scale_min_k4, done four bytes at a time as its AVX2 kernels do.
XK_KINLINE __m128i XK_NAME(scale_min_k4)(const uint8_t *q) {
    uint32_t u[3];
    memcpy(u, q, 12);
    const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
    const uint32_t sc0 = u[0] & m6, sc1 = (u[2] & m4) | (((u[0] >> 6) & m2) << 4);
    const uint32_t mn0 = u[1] & m6, mn1 = ((u[2] >> 4) & m4) | (((u[1] >> 6) & m2) << 4);
    return _mm_setr_epi32((int)sc0, (int)sc1, (int)mn0, (int)mn1);
}

// Chunk c (32 elements) of superblock b for the R × T tile: decode each row's chunk once, then
// every activation row's products into its int32 lanes.
XK_KINLINE void XK_NAME(kchunk)(const int type, const int R, const int T, const int c, const uint8_t *w, size_t rb,
                                int b, int bs, const int8_t *aq, int cols, const __m256i *scl, const __m128i *sc6,
                                __m256i sumi[4][4]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256i x[4], s16[4];
    // int16 lane pair (2c, 2c+1) as a byte shuffle: chunk c's scale in every int16 lane.
    const __m256i pick16 = _mm256_set1_epi16((short)(0x0100 + 0x0202 * c));
    // Q6_K: scales 2c (elements 0–15) and 2c+1 (16–31) picked into the halves of 16 bytes.
    const __m128i pick8 = _mm_or_si128(_mm_set1_epi8((char)(2 * c)),
                                       _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
    // Chunk-dependent shift counts, once for all rows (constants where the chunk loop is unrolled).
    const int q6j = c >> 2, q6l = c & 3;
    const __m128i nib = _mm_cvtsi32_si128(type == XK_Q6_K ? (q6l >> 1) * 4 : (c & 1) * 4);
    const __m128i q6h = _mm_cvtsi32_si128(2 * q6l);
    for (int r = 0; r < R; r++) {
        const uint8_t *bp = w + (size_t)r * rb + (size_t)b * bs;
        if (type == XK_Q6_K) {
            // Chunk c = 4j + l: low (l < 2) or high nibbles of ql[64j + 32(l&1) ...], and
            // bits 2l, 2l+1 of qh[32j ...] as bits 4, 5.
            const __m256i ql = _mm256_loadu_si256((const __m256i *)(bp + 64 * q6j + 32 * (q6l & 1)));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(bp + 128 + 32 * q6j));
            const __m256i lo = _mm256_and_si256(_mm256_srl_epi16(ql, nib), m4);
            const __m256i hb = _mm256_and_si256(_mm256_srl_epi16(qh, q6h), _mm256_set1_epi8(3));
            x[r] = _mm256_or_si256(lo, _mm256_slli_epi16(hb, 4));
            s16[r] = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc6[r], pick8));
        } else {
            const __m256i qs = _mm256_loadu_si256((const __m256i *)(bp + (type == XK_Q4_K ? 16 : 48) + 32 * (c >> 1)));
            x[r] = _mm256_and_si256(_mm256_srl_epi16(qs, nib), m4);
            if (type == XK_Q5_K) {
                // Fifth bit: bit c of qh[e].
                const __m256i mask = _mm256_set1_epi8((char)(1 << c));
                const __m256i qh = _mm256_loadu_si256((const __m256i *)(bp + 16));
                const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, mask), mask);
                x[r] = _mm256_or_si256(x[r], _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
            }
            s16[r] = _mm256_shuffle_epi8(scl[r], pick16);
        }
    }
    for (int t = 0; t < T; t++) {
        const __m256i y = _mm256_loadu_si256((const __m256i *)(aq + (size_t)t * cols + (size_t)b * 256 + 32 * c));
        for (int r = 0; r < R; r++) {
            const __m256i p = _mm256_maddubs_epi16(x[r], y);
#if XK_VNNI
            sumi[r][t] = _mm256_dpwssd_epi32(sumi[r][t], p, s16[r]);
#else
            sumi[r][t] = _mm256_add_epi32(sumi[r][t], _mm256_madd_epi16(p, s16[r]));
#endif
        }
    }
}

// R weight rows × T activation rows (R, T ≤ 4): every output's int32 lanes stay in registers
// through a superblock (VNNI: 16 tiles, 4 weight chunks, 4 scale vectors in its 32 registers).
XK_KINLINE void XK_NAME(ktile)(const int type, const int R, const int T,
                               const uint8_t *w, size_t rb, const int8_t *aq, const float *ad,
                               const int16_t *bsums, int nb, int cols, float *out, int ldo) {
    const int bs = type == XK_Q4_K ? 144 : type == XK_Q5_K ? 176 : 210;
    __m256 acc[4][4];
    __m128 accm[4][4];  // Q4_K
    float summs[4][4];  // Q5_K
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            acc[r][t] = _mm256_setzero_ps();
            accm[r][t] = _mm_setzero_ps();
            summs[r][t] = 0;
        }
    for (int b = 0; b < nb; b++) {
        __m128i sc6[4];   // Q6_K: the sixteen int8 scales
        __m256i scl[4];   // Q4_K/Q5_K: the eight scales as int16, in both 128-bit halves
        __m128i mins[4];  // Q4_K/Q5_K: the eight mins as int16
        float dw[4], dmw[4];
        for (int r = 0; r < R; r++) {
            const uint8_t *bp = w + (size_t)r * rb + (size_t)b * bs;
            if (type == XK_Q6_K) {
                // d is the block's last two bytes: a 16-bit load (a 32-bit one would read past the tensor).
                uint16_t h;
                memcpy(&h, bp + 208, 2);
                dw[r] = _cvtsh_ss(h);
                sc6[r] = _mm_loadu_si128((const __m128i *)(bp + 192));
            } else {
                const __m128 head = xk_head(bp);
                dw[r] = _mm_cvtss_f32(head);
                dmw[r] = _mm_cvtss_f32(_mm_movehdup_ps(head));
                const __m256i sm = _mm256_cvtepu8_epi16(XK_NAME(scale_min_k4)(bp + 4));
                scl[r] = _mm256_permute2x128_si256(sm, sm, 0x00);
                mins[r] = _mm256_extracti128_si256(sm, 1);
            }
        }
        {
            // As in gemm_body.h: sweep the next R rows into cache at the pace this group is read.
            const char *next = (const char *)w + (size_t)R * rb + (size_t)b * R * bs;
            for (int o = 0; o < R * bs; o += 64) _mm_prefetch(next + XK_PREFETCH_AHEAD + o, _MM_HINT_T0);
        }
        __m256i sumi[4][4];
        for (int r = 0; r < R; r++)
            for (int t = 0; t < T; t++) sumi[r][t] = _mm256_setzero_si256();
        // Unrolled for one activation row (its constants fold; few registers live); a loop for
        // four (unrolled, the compiler hoists every chunk's scales and spills).
        if (T == 1) {
#pragma clang loop unroll(full)
            for (int c = 0; c < 8; c++) XK_NAME(kchunk)(type, R, T, c, w, rb, b, bs, aq, cols, scl, sc6, sumi);
        } else {
#pragma clang loop unroll(disable)
            for (int c = 0; c < 8; c++) XK_NAME(kchunk)(type, R, T, c, w, rb, b, bs, aq, cols, scl, sc6, sumi);
        }
        for (int t = 0; t < T; t++) {
            const float da = ad[(size_t)t * nb + b];
            const int16_t *bsp = bsums + ((size_t)t * nb + b) * 16;
            const __m256i q8sums = _mm256_loadu_si256((const __m256i *)bsp);
            // Q4_K/Q5_K: pairs of sums of 16 (bsums[2i] + bsums[2i+1], i = 0..7), ggml's _mm_hadd_epi16.
            const __m128i q8s = _mm_hadd_epi16(_mm256_castsi256_si128(q8sums), _mm256_extracti128_si256(q8sums, 1));
            for (int r = 0; r < R; r++) {
                __m256i s = sumi[r][t];
                if (type == XK_Q6_K)
                    s = _mm256_sub_epi32(s, _mm256_slli_epi32(_mm256_madd_epi16(q8sums, _mm256_cvtepi8_epi16(sc6[r])), 5));
                acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(da * dw[r]), _mm256_cvtepi32_ps(s), acc[r][t]);
                if (type != XK_Q6_K) {
                    const float dmin = -da * dmw[r];
                    const __m128i prod = _mm_madd_epi16(mins[r], q8s);
                    if (type == XK_Q4_K) {
                        accm[r][t] = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), accm[r][t]);
                    } else {
                        const __m128i h = _mm_hadd_epi32(_mm_hadd_epi32(prod, _mm_setzero_si128()), _mm_setzero_si128());
                        summs[r][t] = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(dmin), _mm_set_ss((float)_mm_cvtsi128_si32(h)),
                                                                 _mm_set_ss(summs[r][t])));
                    }
                }
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            float v = hsum8(acc[r][t]);
            if (type == XK_Q4_K) {
                v += hsum4(accm[r][t]);
            } else if (type == XK_Q5_K) {
                v += summs[r][t];
            }
            out[(size_t)t * ldo + r] = v;
        }
}

XK_KINLINE void XK_NAME(gemm_k_typed)(const int type, const uint8_t *w, size_t rb, int r0, int r1,
                                      const int8_t *aq, const float *ad, const int16_t *bsums, int n, int cols,
                                      float *out, int ldo) {
    const int nb = cols / 256;
    // 16 activation rows stay in L1/L2 while the weight rows stream by (as in gemm_body.h).
    for (int t0 = 0; t0 < n; t0 += 16) {
        const int t1 = t0 + 16 < n ? t0 + 16 : n;
        int r = r0;
#define XK_KTILE(R, T) XK_NAME(ktile)(type, R, T, w + (size_t)r * rb, rb, aq + (size_t)t * cols, ad + (size_t)t * nb, \
                                      bsums + (size_t)t * nb * 16, nb, cols, out + (size_t)t * ldo + r, ldo)
        if (XK_VNNI || t1 - t0 < 4) {
            for (; r + 4 <= r1; r += 4) {
                int t = t0;
                for (; t + 4 <= t1; t += 4) XK_KTILE(4, 4);
                for (; t < t1; t++) XK_KTILE(4, 1);
            }
        } else {
            // AVX2 has 16 vector registers: 2 weight rows × 4 activation rows keeps its 8 int32
            // tiles in them (4 × 4 spills); the VNNI build's 32 hold 4 × 4.
            for (; r + 2 <= r1; r += 2) {
                int t = t0;
                for (; t + 4 <= t1; t += 4) XK_KTILE(2, 4);
                for (; t < t1; t++) XK_KTILE(2, 1);
            }
        }
        for (; r < r1; r++) {
            int t = t0;
            for (; t + 4 <= t1; t += 4) XK_KTILE(1, 4);
            for (; t < t1; t++) XK_KTILE(1, 1);
        }
#undef XK_KTILE
    }
}

static XK_TARGET void XK_NAME(gemm_k)(int type, const uint8_t *w, size_t rb, int r0, int r1,
                                      const int8_t *aq, const float *ad, const int16_t *bsums, int n, int cols,
                                      float *out, int ldo) {
    switch (type) {
    case XK_Q4_K: XK_NAME(gemm_k_typed)(XK_Q4_K, w, rb, r0, r1, aq, ad, bsums, n, cols, out, ldo); break;
    case XK_Q5_K: XK_NAME(gemm_k_typed)(XK_Q5_K, w, rb, r0, r1, aq, ad, bsums, n, cols, out, ldo); break;
    case XK_Q6_K: XK_NAME(gemm_k_typed)(XK_Q6_K, w, rb, r0, r1, aq, ad, bsums, n, cols, out, ldo); break;
    }
}

#undef XK_KINLINE
