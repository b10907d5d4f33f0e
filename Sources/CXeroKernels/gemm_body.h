// The quantized matrix product, compiled twice by kernels.c: once for AVX-512 VNNI (XK_VNNI 1)
// and once for plain AVX2 (XK_VNNI 0). Included only from kernels.c. Q4_0, Q4_1, Q8_0 and Q5_0
// weights against Q8_0/Q8_1 activations; the K-quants are in gemm_k_body.h.
//
// Bit-exactness with llama.cpp: for every output, lane k of an eight-float accumulator receives,
// block by block, fma(d_w·d_a, float(Σ_{i=4k}^{4k+3} w_i·a_i), acc) — the integer dot is exact
// however it is computed, so VNNI, maddubs and the offset tricks below all give the same integers,
// and the float operations happen in the same order as ggml's vec_dot. Tiling only changes which
// outputs are computed together, never the order of one output's operations; `tile_scaled`
// forms the products d_w·d_a ahead of its loop instead of inside it (the same roundings).

#define XK_INLINE static inline XK_TARGET __attribute__((always_inline))

#ifndef XK_PREFETCH_AHEAD
// Bytes ahead of the group being read (measured on 1536×576 Q4_1 streaming from DRAM: 1,440 →
// 16.6 GB/s, 4,096 → 21.6 GB/s, 8,192 → no better; none → 9 GB/s on the VNNI path).
#define XK_PREFETCH_AHEAD 4096
#endif

XK_INLINE __m256i XK_NAME(nibbles)(const uint8_t *p) {
    // Elements 0–15 are the low nibbles, 16–31 the high ones (ggml's block_q4 layout).
    const __m128i t = _mm_loadu_si128((const __m128i *)p);
    const __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

#if !XK_VNNI
// Byte e = 0xFF where bit e of m is set, else 0 (ggml's bytes_from_bits_32, for Q5_0's fifth bits).
XK_INLINE __m256i XK_NAME(bits)(uint32_t m) {
    const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL);
    const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)m), shuf);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

// Σ of unsigned u[4k..4k+3] · signed s[4k..4k+3] per int32 lane: what vpdpbusd does, in AVX2.
// Pairs of u8·s8 fit in int16 here (|u| ≤ 128, |s| ≤ 127: 2·128·127 < 32768).
XK_INLINE __m256i XK_NAME(dot_us)(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
#endif

// Bytes of one block of 32 weights of `type` (ggml's block_q8_0, q5_0, q4_1, q4_0).
XK_INLINE int XK_NAME(block_bytes)(int type) {
    return type == XK_Q8_0 ? 34 : type == XK_Q5_0 ? 22 : type == XK_Q4_1 ? 20 : 18;
}

// Where block b of weight row `row` is: its head (d, and m for Q4_1; Q5_0's high bits follow its
// d) and its quantized values. `packed`: Q4_1 or Q8_0 repacked four rows at a time
// (xk_repack_x4): block b of rows 4g … 4g+3 is one record, the four heads (Q4_1's (d, m) pairs,
// Q8_0's d), then the four rows' values. The values and their order are the same either way, so
// every tile gives the same bits on both layouts.
typedef struct { const uint8_t *head, *qs; } XK_NAME(block);
XK_INLINE XK_NAME(block) XK_NAME(block_at)(const int type, const int packed, const uint8_t *w, size_t rb, int row, int b) {
    if (packed) {
        const uint8_t *rec = w + (size_t)(row >> 2) * 4 * rb + (size_t)b * x4_record_bytes(type);
        return (XK_NAME(block)){ rec + x4_head_at(type, row & 3), rec + x4_values_at(type, row & 3) };
    }
    const uint8_t *bp = w + (size_t)row * rb + (size_t)b * XK_NAME(block_bytes)(type);
    return (XK_NAME(block)){ bp, bp + (type == XK_Q4_1 ? 4 : type == XK_Q5_0 ? 6 : 2) };
}

// R weight rows × T activation rows, every output kept in registers for the whole row.
XK_INLINE void XK_NAME(tile)(const int type, const int packed, const int R, const int T,
                             const uint8_t *w, size_t rb, int row0, const int8_t *aq, const float *ad,
                             const float *as, int nb, int cols, float *out, int ldo) {
    const int bs = XK_NAME(block_bytes)(type);
    const __m256i zero = _mm256_setzero_si256();
    __m256 acc[4][4];
    __m128 summ[4];  // Q4_1: lane t = Σ_b m_w·s_a (ggml's `summs`, same order)
    for (int r = 0; r < R; r++) {
        summ[r] = _mm_setzero_ps();
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    }
    for (int b = 0; b < nb; b++) {
        __m256i x[4], xoff[4];
        __m256 dw[4];
        __m128 mw[4];
        for (int r = 0; r < R; r++) {
            const XK_NAME(block) blk = XK_NAME(block_at)(type, packed, w, rb, row0 + r, b);
            const uint8_t *bp = blk.head;
            const __m128 head = xk_head(bp);
            dw[r] = _mm256_broadcastss_ps(head);
            if (type == XK_Q4_1) {
                mw[r] = _mm_permute_ps(head, 0x55);
                x[r] = XK_NAME(nibbles)(blk.qs);
            } else if (type == XK_Q4_0) {
                x[r] = XK_NAME(nibbles)(blk.qs);
#if !XK_VNNI
                x[r] = _mm256_sub_epi8(x[r], _mm256_set1_epi8(8));
#endif
            } else if (type == XK_Q5_0) {
                // Element e = (nibble | bit e of qh << 4) − 16.
                uint32_t qh;
                memcpy(&qh, bp + 2, 4);
                x[r] = XK_NAME(nibbles)(blk.qs);
#if XK_VNNI
                // Unsigned n + 16·bit in [0, 31]; the −16 comes from the activations' sum below.
                x[r] = _mm256_or_si256(x[r], _mm256_maskz_mov_epi8((__mmask32)qh, _mm256_set1_epi8(0x10)));
#else
                // n | 0xF0 where the bit is clear: the signed value n − 16 (ggml's own construction).
                x[r] = _mm256_or_si256(x[r], _mm256_andnot_si256(XK_NAME(bits)(qh), _mm256_set1_epi8((char)0xF0)));
#endif
            } else {
                x[r] = _mm256_loadu_si256((const __m256i *)blk.qs);
#if XK_VNNI
                // Σ w·a = Σ w·(a+128) − 128·Σ w: a+128 is unsigned, as VNNI wants.
                const __m256i sw = _mm256_dpbusd_epi32(zero, _mm256_set1_epi8(1), x[r]);
                xoff[r] = _mm256_sub_epi32(zero, _mm256_slli_epi32(sw, 7));
#endif
            }
#if !XK_VNNI
            if (type != XK_Q4_1) {
                // Signed × signed through maddubs: |w| · (a with w's sign).
                xoff[r] = x[r];
                x[r] = _mm256_sign_epi8(x[r], x[r]);
            }
#endif
        }
        // The next R rows are the next R·row_bytes bytes: sweep them into cache at the pace this
        // group is consumed (R·bs bytes per block), so decoding streams weights at full bandwidth.
        {
            const char *next = (const char *)w + (size_t)(row0 + R) * rb + (size_t)b * R * bs;
            _mm_prefetch(next + XK_PREFETCH_AHEAD, _MM_HINT_T0);
            if (R * bs > 64) _mm_prefetch(next + XK_PREFETCH_AHEAD + 64, _MM_HINT_T0);
        }
        __m128 s4 = _mm_setzero_ps();
        if (type == XK_Q4_1) {
            // Built in registers: a store/reload through memory stalls on store forwarding.
            if (T == 1) s4 = _mm_set1_ps(as[b]);
            else s4 = _mm_setr_ps(as[b], as[(size_t)nb + b], T > 2 ? as[(size_t)2 * nb + b] : 0,
                                  T > 3 ? as[(size_t)3 * nb + b] : 0);
        }
        for (int t = 0; t < T; t++) {
            const __m256i y = _mm256_loadu_si256((const __m256i *)(aq + (size_t)t * cols + (size_t)b * 32));
            const __m256 da = _mm256_broadcast_ss(ad + (size_t)t * nb + b);
#if XK_VNNI
            __m256i yoff = zero, yu = y;
            if (type == XK_Q4_0) {
                // Σ (n−8)·a = Σ n·a − 8·Σ a, with n the raw nibble.
                yoff = _mm256_sub_epi32(zero, _mm256_slli_epi32(_mm256_dpbusd_epi32(zero, _mm256_set1_epi8(1), y), 3));
            } else if (type == XK_Q5_0) {
                // Σ (u−16)·a = Σ u·a − 16·Σ a.
                yoff = _mm256_sub_epi32(zero, _mm256_slli_epi32(_mm256_dpbusd_epi32(zero, _mm256_set1_epi8(1), y), 4));
            } else if (type == XK_Q8_0) {
                yu = _mm256_xor_si256(y, _mm256_set1_epi8((char)0x80));
            }
#endif
            for (int r = 0; r < R; r++) {
                __m256i p;
#if XK_VNNI
                if (type == XK_Q4_1) p = _mm256_dpbusd_epi32(zero, x[r], y);
                else if (type == XK_Q4_0 || type == XK_Q5_0) p = _mm256_dpbusd_epi32(yoff, x[r], y);
                else p = _mm256_dpbusd_epi32(xoff[r], yu, x[r]);
#else
                if (type == XK_Q4_1) p = XK_NAME(dot_us)(x[r], y);
                else p = XK_NAME(dot_us)(x[r], _mm256_sign_epi8(y, xoff[r]));
#endif
                acc[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(dw[r], da), _mm256_cvtepi32_ps(p), acc[r][t]);
            }
        }
        if (type == XK_Q4_1)
            for (int r = 0; r < R; r++) summ[r] = _mm_add_ps(summ[r], _mm_mul_ps(mw[r], s4));
    }
    for (int r = 0; r < R; r++) {
        float sm[4];
        _mm_storeu_ps(sm, summ[r]);
        for (int t = 0; t < T; t++) {
            float v = hsum8(acc[r][t]);
            if (type == XK_Q4_1) v += sm[t];
            out[(size_t)t * ldo + r] = v;
        }
    }
}

#if XK_VNNI
// Largest blocks per row the scaled tile takes (its scale products live on the stack: 64 B a
// block); longer rows use `tile`.
#define XK_SCALED_MAX_BLOCKS 1024

// The scaled tiles' operands of vpdpbusd (unsigned × signed). A weight block: its unsigned values
// (Q4_1's and Q4_0's nibbles, Q5_0's 5-bit values; Q8_0's signed values, the signed operand), and
// for Q8_0 the −128·Σw its dot starts from.
XK_INLINE __m256i XK_NAME(scaled_weights)(const int type, XK_NAME(block) blk, __m256i *xoff) {
    const __m256i zero = _mm256_setzero_si256();
    const uint8_t *bp = blk.head;
    *xoff = zero;
    if (type == XK_Q4_1) return XK_NAME(nibbles)(blk.qs);
    if (type == XK_Q4_0) return XK_NAME(nibbles)(blk.qs);
    if (type == XK_Q5_0) {
        uint32_t qh;
        memcpy(&qh, bp + 2, 4);
        return _mm256_or_si256(XK_NAME(nibbles)(blk.qs), _mm256_maskz_mov_epi8((__mmask32)qh, _mm256_set1_epi8(0x10)));
    }
    const __m256i x = _mm256_loadu_si256((const __m256i *)blk.qs);
    *xoff = _mm256_sub_epi32(zero, _mm256_slli_epi32(_mm256_dpbusd_epi32(zero, _mm256_set1_epi8(1), x), 7));
    return x;
}

// An activation block: Q8_0's shifted to unsigned (a + 128; −128·Σw is the weights' offset), and
// for Q4_0/Q5_0 the −(8|16)·Σa its dot starts from (Σ (u − 8|16)·a = Σ u·a − (8|16)·Σ a).
XK_INLINE __m256i XK_NAME(scaled_acts)(const int type, __m256i y, __m256i *yoff) {
    const __m256i zero = _mm256_setzero_si256();
    *yoff = zero;
    if (type == XK_Q4_0 || type == XK_Q5_0)
        *yoff = _mm256_sub_epi32(zero, _mm256_slli_epi32(_mm256_dpbusd_epi32(zero, _mm256_set1_epi8(1), y), type == XK_Q5_0 ? 4 : 3));
    else if (type == XK_Q8_0)
        y = _mm256_xor_si256(y, _mm256_set1_epi8((char)0x80));
    return y;
}

// The exact integer lanes of one weight block against one activation block.
XK_INLINE __m256i XK_NAME(scaled_dot)(const int type, __m256i x, __m256i xoff, __m256i y, __m256i yoff) {
    return type == XK_Q8_0 ? _mm256_dpbusd_epi32(xoff, y, x) : _mm256_dpbusd_epi32(yoff, x, y);
}

// The 4×4 tile on VNNI with one output per 256-bit register and no multiply in the main loop.
// `tile` (like ggml) forms each block's scale d_w·d_a with a multiply per output and block; on
// this CPU the multiply, the dot and the FMA share two pipes, so that multiply was a third of the
// tile's cost. Here the 16 products of a block come from one 512-bit multiply in a pre-pass over
// the tile's blocks, and the FMA broadcasts its product from memory. Each product is the same
// single rounding of the same two floats as `tile`'s, and each output gets tile's FMA in tile's
// order, so the bits are tile's.
// adT/asT: the four activation rows' scales (and Q4_1 sums) transposed, [4b + t] (built once per
// group of rows by gemm_typed). Q4_1's summs for the 16 outputs accumulate in one register, lane
// 4r + t, each in block order as in `tile`.
XK_INLINE void XK_NAME(tile_scaled)(const int type, const int packed, const uint8_t *w, size_t rb, int row0, const int8_t *aq, const float *adT,
                                    const float *asT, int nb, int cols, float *out, int ldo) {
    const int bs = XK_NAME(block_bytes)(type);
    float prod[16 * nb] __attribute__((aligned(64)));
    const __m512i lane_d = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6);
    const __m512i lane_m = _mm512_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3, 5, 5, 5, 5, 7, 7, 7, 7);
    __m512 summ = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        // The four rows' block heads (d, and m for Q4_1) in one conversion: [d0 m0 d1 m1 …].
        int32_t h[4];
        for (int r = 0; r < 4; r++) memcpy(&h[r], XK_NAME(block_at)(type, packed, w, rb, row0 + r, b).head, 4);
        const __m512 heads = _mm512_castps256_ps512(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h)));
        _mm512_store_ps(prod + 16 * b, _mm512_mul_ps(_mm512_permutexvar_ps(lane_d, heads), _mm512_broadcast_f32x4(_mm_loadu_ps(adT + 4 * b))));
        if (type == XK_Q4_1)
            summ = _mm512_add_ps(summ, _mm512_mul_ps(_mm512_permutexvar_ps(lane_m, heads), _mm512_broadcast_f32x4(_mm_loadu_ps(asT + 4 * b))));
    }
    __m256 acc[4][4];
    for (int r = 0; r < 4; r++)
        for (int t = 0; t < 4; t++) acc[r][t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        {
            const char *next = (const char *)w + (size_t)(row0 + 4) * rb + (size_t)b * 4 * bs;
            _mm_prefetch(next + XK_PREFETCH_AHEAD, _MM_HINT_T0);
            _mm_prefetch(next + XK_PREFETCH_AHEAD + 64, _MM_HINT_T0);
        }
        __m256i y[4], yoff[4];
        for (int t = 0; t < 4; t++)
            y[t] = XK_NAME(scaled_acts)(type, _mm256_loadu_si256((const __m256i *)(aq + (size_t)t * cols + (size_t)b * 32)), &yoff[t]);
        for (int r = 0; r < 4; r++) {
            __m256i xoff;
            const __m256i x = XK_NAME(scaled_weights)(type, XK_NAME(block_at)(type, packed, w, rb, row0 + r, b), &xoff);
            for (int t = 0; t < 4; t++)
                acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(prod[16 * b + 4 * r + t]),
                                            _mm256_cvtepi32_ps(XK_NAME(scaled_dot)(type, x, xoff, y[t], yoff[t])), acc[r][t]);
        }
    }
    float sm[16];
    _mm512_storeu_ps(sm, summ);
    for (int r = 0; r < 4; r++)
        for (int t = 0; t < 4; t++) {
            float v = hsum8(acc[r][t]);
            if (type == XK_Q4_1) v += sm[4 * r + t];
            out[(size_t)t * ldo + r] = v;
        }
}

// The same arithmetic for R (1–3) weight rows × 8 activation rows: each weight block is unpacked
// once for eight activation rows instead of four (+20 % on Q4_1 at 3 × 8 against the 4 × 4 tile;
// 24 accumulators, the most the 32 registers hold with the rows' unpacked blocks).
// adT/asT: the eight activation rows' scales (and Q4_1 sums) transposed, [8b + t].
XK_INLINE void XK_NAME(tile_scaled8)(const int type, const int packed, const int R, const uint8_t *w, size_t rb, int row0, const int8_t *aq,
                                     const float *adT, const float *asT, int nb, int cols, float *out, int ldo) {
    const int bs = XK_NAME(block_bytes)(type);
    float prod[24 * nb] __attribute__((aligned(32)));
    __m256 summ[3];
    for (int r = 0; r < R; r++) summ[r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const __m256 da = _mm256_loadu_ps(adT + 8 * b);
        for (int r = 0; r < R; r++) {
            const __m128 head = xk_head(XK_NAME(block_at)(type, packed, w, rb, row0 + r, b).head);
            _mm256_store_ps(prod + (size_t)(b * R + r) * 8, _mm256_mul_ps(_mm256_broadcastss_ps(head), da));
            if (type == XK_Q4_1)
                summ[r] = _mm256_add_ps(summ[r], _mm256_mul_ps(_mm256_broadcastss_ps(_mm_permute_ps(head, 0x55)), _mm256_loadu_ps(asT + 8 * b)));
        }
    }
    __m256 acc[3][8];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < 8; t++) acc[r][t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        {
            const char *next = (const char *)w + (size_t)(row0 + R) * rb + (size_t)b * R * bs;
            _mm_prefetch(next + XK_PREFETCH_AHEAD, _MM_HINT_T0);
            if (R * bs > 64) _mm_prefetch(next + XK_PREFETCH_AHEAD + 64, _MM_HINT_T0);
        }
        __m256i x[3], xoff[3];
        for (int r = 0; r < R; r++) x[r] = XK_NAME(scaled_weights)(type, XK_NAME(block_at)(type, packed, w, rb, row0 + r, b), &xoff[r]);
        for (int t = 0; t < 8; t++) {
            __m256i yoff;
            const __m256i y = XK_NAME(scaled_acts)(type, _mm256_loadu_si256((const __m256i *)(aq + (size_t)t * cols + (size_t)b * 32)), &yoff);
            for (int r = 0; r < R; r++)
                acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(prod[(size_t)(b * R + r) * 8 + t]),
                                            _mm256_cvtepi32_ps(XK_NAME(scaled_dot)(type, x[r], xoff[r], y, yoff)), acc[r][t]);
        }
    }
    for (int r = 0; r < R; r++) {
        float sm[8];
        _mm256_storeu_ps(sm, summ[r]);
        for (int t = 0; t < 8; t++) {
            float v = hsum8(acc[r][t]);
            if (type == XK_Q4_1) v += sm[t];
            out[(size_t)t * ldo + r] = v;
        }
    }
}

// Activation rows t0 … t0 + g·8 − 1 in groups of `per` (4 or 8): their scales (and sums) transposed,
// out[(group·nb + b)·per + j], as the scaled tiles read them.
XK_INLINE void XK_NAME(transpose_scales)(const float *ad, const float *as, int t0, int groups, int per, int nb,
                                         float *adT, float *asT) {
    for (int g = 0; g < groups; g++)
        for (int b = 0; b < nb; b++)
            for (int j = 0; j < per; j++) {
                const size_t at = (size_t)(t0 + per * g + j) * nb + b;
                adT[(g * nb + b) * per + j] = ad[at];
                asT[(g * nb + b) * per + j] = as ? as[at] : 0;
            }
}
#endif

XK_INLINE void XK_NAME(gemm_typed)(const int type, const int packed, const uint8_t *w, size_t rb, int r0, int r1,
                                   const int8_t *aq, const float *ad, const float *as, int n, int cols,
                                   float *out, int ldo) {
    const int nb = cols / 32;
    // 16 activation rows (≤ 24 KB at 1,536 columns) stay in L1 while the weight rows stream by.
    for (int t0 = 0; t0 < n; t0 += 16) {
        const int t1 = t0 + 16 < n ? t0 + 16 : n;
        int r = r0;
#define XK_TILE(R, T) XK_NAME(tile)(type, packed, R, T, w, rb, r, aq + (size_t)t * cols, ad + (size_t)t * nb, \
                                    as ? as + (size_t)t * nb : 0, nb, cols, out + (size_t)t * ldo + r, ldo)
#if XK_VNNI
        // Eight activation rows at a time first, weight rows in threes (then two, one); the rest
        // of the rows (fewer than eight) below, four weight rows at a time.
        const int scaled = nb <= XK_SCALED_MAX_BLOCKS;
        const int g8 = scaled ? (t1 - t0) / 8 : 0;
        if (g8 > 0) {
            float adT8[16 * nb], asT8[16 * nb];
            XK_NAME(transpose_scales)(ad, as, t0, g8, 8, nb, adT8, asT8);
#define XK_TILE8(R_) for (int g = 0; g < g8; g++) \
            XK_NAME(tile_scaled8)(type, packed, R_, w, rb, r, aq + (size_t)(t0 + 8 * g) * cols, adT8 + (size_t)g * nb * 8, \
                                  asT8 + (size_t)g * nb * 8, nb, cols, out + (size_t)(t0 + 8 * g) * ldo + r, ldo)
            for (; r + 3 <= r1; r += 3) XK_TILE8(3);
            if (r + 2 <= r1) { XK_TILE8(2); r += 2; }
            if (r < r1) { XK_TILE8(1); r += 1; }
#undef XK_TILE8
        }
        const int tb = t0 + 8 * g8;  // the rows left for the loops below
        r = r0;
        const int g4 = scaled ? (t1 - tb) / 4 : 0;  // 0 or 1
        float adT[g4 ? 4 * nb : 1], asT[g4 ? 4 * nb : 1];
        if (g4) XK_NAME(transpose_scales)(ad, as, tb, 1, 4, nb, adT, asT);
#else
        const int tb = t0;
#endif
        for (; r + 4 <= r1; r += 4) {
            int t = tb;
#if XK_VNNI
            if (g4) {
                XK_NAME(tile_scaled)(type, packed, w, rb, r, aq + (size_t)t * cols, adT, asT, nb, cols,
                                     out + (size_t)t * ldo + r, ldo);
                t += 4;
            }
#endif
            for (; t + 4 <= t1; t += 4) XK_TILE(4, 4);
            for (; t < t1; t++) XK_TILE(4, 1);
        }
        for (; r < r1; r++) {
            int t = tb;
            for (; t + 4 <= t1; t += 4) XK_TILE(1, 4);
            for (; t < t1; t++) XK_TILE(1, 1);
        }
#undef XK_TILE
    }
}

static XK_TARGET void XK_NAME(gemm)(int type, const uint8_t *w, size_t rb, int r0, int r1,
                                    const int8_t *aq, const float *ad, const float *as, int n, int cols,
                                    float *out, int ldo) {
    switch (type) {
    case XK_Q4_0: XK_NAME(gemm_typed)(XK_Q4_0, 0, w, rb, r0, r1, aq, ad, as, n, cols, out, ldo); break;
    case XK_Q4_1: XK_NAME(gemm_typed)(XK_Q4_1, 0, w, rb, r0, r1, aq, ad, as, n, cols, out, ldo); break;
    case XK_Q8_0: XK_NAME(gemm_typed)(XK_Q8_0, 0, w, rb, r0, r1, aq, ad, as, n, cols, out, ldo); break;
    case XK_Q5_0: XK_NAME(gemm_typed)(XK_Q5_0, 0, w, rb, r0, r1, aq, ad, as, n, cols, out, ldo); break;
    case XK_Q4_1X4:
#if XK_VNNI
        // Up to three activation rows (decoding): the kernel made for the records (gemv_x4.c;
        // at four rows it equals the 4 × 4 tile).
        if (n <= 3) { xk_gemv_q4_1x4(w, rb, r0, r1, aq, ad, as, n, cols, out, ldo); break; }
#endif
        XK_NAME(gemm_typed)(XK_Q4_1, 1, w, rb, r0, r1, aq, ad, as, n, cols, out, ldo);
        break;
    case XK_Q8_0X4:
#if XK_VNNI
        if (n <= 3) { xk_gemv_q8_0x4(w, rb, r0, r1, aq, ad, n, cols, out, ldo); break; }
#endif
        XK_NAME(gemm_typed)(XK_Q8_0, 1, w, rb, r0, r1, aq, ad, as, n, cols, out, ldo);
        break;
    }
}

#undef XK_INLINE
