// Quantized matrix products for the built-in GGUF engine, in C because they need instructions
// Swift SIMD cannot express (vpdpbusd, vpmaddubsw, vpsignb). See gemm_body.h (blocks of 32) and
// gemm_k_body.h (K-quants) for the arithmetic.
#include "xero_kernels.h"
#include "vec_math.h"
#include "x4_layout.h"
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

// The block's first two halves (d, and m for Q4_1) as floats in lanes 0 and 1. A 32-bit vmovd
// load: a 16-bit one compiles to vpinsrw into a live register, a false dependency that chains
// every block's loads together and starves the memory pipeline.
static inline __m128 xk_head(const uint8_t *p) {
    return _mm_cvtph_ps(_mm_loadu_si32(p));
}

#define XK_VNNI 1
#define XK_TARGET __attribute__((target("avx512f,avx512vl,avx512bw,avx512vnni")))
#define XK_NAME(x) x##_vnni
#include "gemm_body.h"
#include "gemm_k_body.h"
#undef XK_VNNI
#undef XK_TARGET
#undef XK_NAME

#define XK_VNNI 0
#define XK_TARGET
#define XK_NAME(x) x##_avx2
#include "gemm_body.h"
#include "gemm_k_body.h"

// -1: not yet decided; 0: AVX2; 1: VNNI. Deciding twice from two threads is harmless.
static int vnni_path = -1;

static int cpu_has_vnni(void) {
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl");
}

int xk_uses_vnni(void) {
    if (vnni_path < 0) {
        // XERO_KERNELS=avx2 forces the AVX2 path (to compare the two on one machine).
        const char *forced = getenv("XERO_KERNELS");
        const int allowed = !(forced && strcmp(forced, "avx2") == 0);
        vnni_path = allowed && cpu_has_vnni();
    }
    return vnni_path;
}

int xk_cpu_supported(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

int xk_set_vnni(int enabled) {
    const int previous = xk_uses_vnni();
    vnni_path = enabled && cpu_has_vnni();
    return previous;
}

void xk_gemm(int type, const void *w, size_t row_bytes, int r0, int r1,
             const int8_t *aq, const float *ad, const float *as, int n, int cols,
             float *out, int ldo) {
    const uint8_t *wb = (const uint8_t *)w;
    if (xk_uses_vnni()) gemm_vnni(type, wb, row_bytes, r0, r1, aq, ad, as, n, cols, out, ldo);
    else gemm_avx2(type, wb, row_bytes, r0, r1, aq, ad, as, n, cols, out, ldo);
}

void xk_gemm_k(int type, const void *w, size_t row_bytes, int r0, int r1,
               const int8_t *aq, const float *ad, const int16_t *bsums, int n, int cols,
               float *out, int ldo) {
    const uint8_t *wb = (const uint8_t *)w;
    if (xk_uses_vnni()) gemm_k_vnni(type, wb, row_bytes, r0, r1, aq, ad, bsums, n, cols, out, ldo);
    else gemm_k_avx2(type, wb, row_bytes, r0, r1, aq, ad, bsums, n, cols, out, ldo);
}
