#ifndef XERO_KERNELS_H
#define XERO_KERNELS_H
#include <stddef.h>
#include <stdint.h>

/// Weight types the quantized matrix product handles (ggml's numbering is not used on purpose:
/// Swift maps its own enum to these).
/// XK_Q4_1X4, XK_Q8_0X4: Q4_1 / Q8_0 rows repacked four at a time by xk_repack_x4 (row counts a
/// multiple of 4).
enum xk_type { XK_Q4_0 = 0, XK_Q4_1 = 1, XK_Q8_0 = 2, XK_Q5_0 = 3, XK_Q4_K = 4, XK_Q5_K = 5, XK_Q6_K = 6,
               XK_Q4_1X4 = 7, XK_Q8_0X4 = 8 };

/// out[t * ldo + r] = W[r] · a[t] for rows r0 ..< r1 of W and activation rows 0 ..< n.
///
/// W: rows of `row_bytes` bytes in ggml's block layout for `type` (XK_Q4_0, XK_Q4_1, XK_Q8_0 or
///    XK_Q5_0: blocks of 32), or XK_Q4_1X4's / XK_Q8_0X4's repacked records (r0, r1 multiples of 4).
/// a: n rows of `cols` int8 values (`aq`), with per-block scales `ad[t * nb + b]` and, for Q4_1,
///    per-block sums `as[t * nb + b]` (ggml's Q8_0 / Q8_1 activations, nb = cols / 32).
///
/// Every output is computed with exactly the arithmetic of llama.cpp's x86 vec_dot kernels
/// (eight float lanes, one FMA per block, the same horizontal sum), whatever the tiling.
void xk_gemm(int type, const void *w, size_t row_bytes, int r0, int r1,
             const int8_t *aq, const float *ad, const float *as, int n, int cols,
             float *out, int ldo);

/// Rows repacked four at a time (gemv_x4.c): `rows` (a multiple of 4) rows of `row_bytes` of
/// XK_Q4_1 or XK_Q8_0 in ggml's layout → the same bytes, block b of rows 4g … 4g+3 one record: the
/// four heads (Q4_1's (d, m) pairs, Q8_0's d), then the four rows' values (Q4_1: 80 bytes a
/// record, Q8_0: 136). `dst` holds rows · row_bytes. Read as XK_Q4_1X4 / XK_Q8_0X4.
void xk_repack_x4(int type, const void *src, size_t row_bytes, int rows, void *dst);

/// out[t * ldo + r] = W[r] · a[t] for rows r0 ..< r1 (multiples of 4) of repacked Q4_1 weights
/// and n (1–3) Q8_1 activation rows: the bits of xk_gemm on the unpacked rows. VNNI CPUs only;
/// xk_gemm with XK_Q4_1X4 calls it for up to three activation rows on the VNNI path.
void xk_gemv_q4_1x4(const void *w, size_t row_bytes, int r0, int r1,
                    const int8_t *aq, const float *ad, const float *as, int n, int cols,
                    float *out, int ldo);

/// The same for repacked Q8_0 weights and n (1–3) Q8_0 activation rows.
void xk_gemv_q8_0x4(const void *w, size_t row_bytes, int r0, int r1,
                    const int8_t *aq, const float *ad, int n, int cols, float *out, int ldo);

/// 1 when this CPU has what every kernel here assumes (AVX2, FMA, F16C), else 0.
int xk_cpu_supported(void);

/// The K-quant product: out[t * ldo + r] = W[r] · a[t] for rows r0 ..< r1 and activation rows 0 ..< n.
///
/// W: rows of `row_bytes` bytes of XK_Q4_K, XK_Q5_K or XK_Q6_K superblocks (256 elements).
/// a: ggml's Q8_K activations: n rows of `cols` int8 values (`aq`), per-superblock scales
///    `ad[t * nb + b]` and sums of 16 `bsums[(t * nb + b) * 16 + j]` (nb = cols / 256, cols a
///    multiple of 256), as xk_quantize_q8_K makes them.
///
/// Every output is computed with the arithmetic of llama.cpp's AVX2 ggml_vec_dot_q*_K_q8_K (eight
/// exact int32 lanes per superblock, one FMA per superblock, the same extras for the mins).
void xk_gemm_k(int type, const void *w, size_t row_bytes, int r0, int r1,
               const int8_t *aq, const float *ad, const int16_t *bsums, int n, int cols,
               float *out, int ldo);

/// Quantizes `blocks` blocks of 256 floats as ggml's quantize_row_q8_K_ref: iscale = -127/max
/// (max the first element of largest |x|), q = min(127, round-half-even(iscale·x)), d = 1/iscale,
/// bsums[b * 16 + j] = Σ of q[16j ..< 16j+16]. An all-zero block gives d = 0 and zeros.
void xk_quantize_q8_K(const float *x, int blocks, int8_t *qs, float *d, int16_t *bsums);

/// 1 when the VNNI (AVX-512 VL) path is in use, 0 for plain AVX2.
int xk_uses_vnni(void);

/// Chooses the path (VNNI only where the CPU has it); returns the previous one. For tests that
/// check both paths give the same bits.
int xk_set_vnni(int enabled);

/// Attention scores of one query head over `count` cached keys (Float16, `key_stride` apart):
/// scores[j] = (k_j · q) · scale, in the accumulation order llama.cpp uses for a batch of several
/// tokens (`tiled` = 1, dims a multiple of 16) or a single token (`tiled` = 0, dims a multiple of
/// 64). `scratch` holds `dims` floats.
void xk_attention_scores(const uint16_t *keys, size_t key_stride, int count, const uint16_t *q, int dims,
                         int tiled, float scale, float *scratch, float *scores);

/// The weighted sum of values for one head: out[d] = column_d · probs over `n` positions, the
/// value cache being stored transposed (one column of `column_stride` per dimension). n a
/// multiple of 16 (tiled) or 64 (single token). `scratch` holds `n` floats.
void xk_attention_values(const uint16_t *columns, size_t column_stride, int dims, const uint16_t *probs, int n,
                         int tiled, float *scratch, float *out);

/// Softmax of scores[0 ..< len] in place (as exponentials) and the weights rounded to Float16 in
/// probs[0 ..< len], zeros up to `padded`: ggml's soft_max arithmetic (16-lane groups, double sum).
void xk_softmax_f16(float *scores, int len, int padded, uint16_t *probs);

/// The exponential xk_softmax_f16 and xk_swiglu use, for one value (tests hold it to ScalarStatement.exp).
float xk_exp(float x);

/// Quantizes `blocks` blocks of 32 floats to 8 bits as ggml does for Q8_0/Q8_1 activations:
/// d = amax/127 and s = d·Σq, both rounded through Float16; q = round-half-even(x·127/amax).
void xk_quantize_q8(const float *x, int blocks, int8_t *qs, float *d, float *s);

/// ggml's rms_norm times the weights, for `rows` rows of `cols` floats: per row the sum of squares
/// in double, element order; out = (x · (1 / sqrt(float(sum / cols) + eps))) · w.
void xk_rms_norm(const float *x, const float *w, int rows, int cols, float eps, float *out);

/// One position's key (into `key_row`) and value (down `value_column`, `column_stride` apart)
/// rounded to Float16, round to nearest even.
void xk_store_kv(const float *key, const float *value, int dims, uint16_t *key_row, uint16_t *value_column, size_t column_stride);

/// g[i] = silu(g[i]) · u[i] with xk_exp (ggml's swiglu).
void xk_swiglu(float *g, const float *u, int n);

/// The sampler's window: of `n` logits, every one within `window` of the largest, in id order —
/// its id and weight e^((v − max)·inv_t) by ggml's exponential (exp8) — and how many. Writes the
/// largest logit (−inf when there is none: then nothing is kept) and the weights' sum, added in
/// id order. ids and weights hold `n` entries.
int xk_sample_window(const float *logits, int n, float inv_t, float window, int32_t *ids, float *weights,
                     float *max_out, float *total_out);

/// A task of a parallel loop: `index` in 0 ..< tasks.
typedef void (*xk_task_fn)(void *ctx, int index);

/// Runs fn(ctx, 0 ..< tasks) over the pool's threads (the caller is one of them) and returns when
/// all are done. Concurrent or nested calls run inline on the calling thread.
void xk_parallel(int tasks, xk_task_fn fn, void *ctx);

/// Threads in the pool, counting the caller (one per online core).
int xk_threads(void);

// Keeps freed blocks under 16 MB in the heap and up to 64 MB of free heap unreturned (glibc
// mallopt), so a forward pass's scratch is reused rather than faulted in afresh each step
// (ScratchMemory.swift says why and what it costs). No-op off glibc.
void xk_retain_scratch_memory(void);

#endif
