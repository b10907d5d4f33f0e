// Cross-check of CXeroKernels' matrix products (Q4_K, Q5_K, Q6_K, Q5_0, Q4_1, Q8_0) and Q8_K
// quantizer against llama.cpp's own compiled vec_dot / quantize_row functions (libggml-cpu built
// with GGML_NATIVE on this machine), bit for bit, on both ISA paths. Build and run (README.md):
//   L=<llama.cpp>/build/bin K=Sources/CXeroKernels
//   clang -O2 -mavx2 -mfma -mf16c -ffp-contract=off -I$K/include scripts/llamacpp/kernel-crosscheck.c \
//     $K/kernels.c $K/activations.c $K/pool.c $K/attention.c -L$L -lggml-cpu -lggml-base \
//     -Wl,-rpath,$L -lpthread -lm -o /tmp/kernel-crosscheck && /tmp/kernel-crosscheck
#include "xero_kernels.h"
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } block_q8_K;
typedef struct { uint16_t d; int8_t qs[32]; } block_q8_0;
typedef struct { uint16_t d, s; int8_t qs[32]; } block_q8_1;
void ggml_cpu_init(void);
void quantize_row_q8_K(const float *x, void *y, int64_t k);
void quantize_row_q8_0(const float *x, void *y, int64_t k);
void quantize_row_q8_1(const float *x, void *y, int64_t k);
void ggml_vec_dot_q4_K_q8_K(int n, float *s, size_t bs, const void *vx, size_t bx, const void *vy, size_t by, int nrc);
void ggml_vec_dot_q5_K_q8_K(int n, float *s, size_t bs, const void *vx, size_t bx, const void *vy, size_t by, int nrc);
void ggml_vec_dot_q6_K_q8_K(int n, float *s, size_t bs, const void *vx, size_t bx, const void *vy, size_t by, int nrc);
void ggml_vec_dot_q5_0_q8_0(int n, float *s, size_t bs, const void *vx, size_t bx, const void *vy, size_t by, int nrc);
void ggml_vec_dot_q4_1_q8_1(int n, float *s, size_t bs, const void *vx, size_t bx, const void *vy, size_t by, int nrc);
void ggml_vec_dot_q8_0_q8_0(int n, float *s, size_t bs, const void *vx, size_t bx, const void *vy, size_t by, int nrc);

static uint64_t st = 88172645463325252ull;
static uint64_t rnd(void) { st ^= st << 13; st ^= st >> 7; st ^= st << 17; return st; }
static uint16_t f16(float f) { return _cvtss_sh(f, 0); }
static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

static uint8_t *weights(int type, int rows, int cols, size_t *rb) {
    int per = type >= XK_Q4_K ? 256 : 32;
    int bytes = type == XK_Q4_K ? 144 : type == XK_Q5_K ? 176 : type == XK_Q6_K ? 210 : type == XK_Q5_0 ? 22 : type == XK_Q4_1 ? 20 : 34;
    *rb = (size_t)cols / per * bytes;
    uint8_t *w = malloc(*rb * rows);
    for (size_t i = 0; i < *rb * rows; i++) w[i] = (uint8_t)rnd();
    for (size_t b = 0; b < *rb * rows / bytes; b++) {
        uint8_t *p = w + b * bytes;
        uint16_t d = f16((float)(rnd() % 1000 + 1) / 20000);
        if (type == XK_Q6_K) put16(p + 208, d); else put16(p, d);
        if (type == XK_Q4_K || type == XK_Q5_K) put16(p + 2, f16((float)(rnd() % 1000) / 20000));
        if (type == XK_Q4_1) put16(p + 2, f16(-(float)(rnd() % 1000) / 1000));
    }
    return w;
}

int main(void) {
    ggml_cpu_init();
    int fails = 0, checked = 0;
    const int types[] = {XK_Q4_K, XK_Q5_K, XK_Q6_K, XK_Q5_0, XK_Q4_1, XK_Q8_0};
    const char *names[] = {"q4_K", "q5_K", "q6_K", "q5_0", "q4_1", "q8_0"};
    for (int ti = 0; ti < 6; ti++) {
        const int type = types[ti], rows = 37, cols = 1536, n = 21;
        size_t rb;
        uint8_t *w = weights(type, rows, cols, &rb);
        float *x = malloc(sizeof(float) * n * cols);
        for (int i = 0; i < n * cols; i++) x[i] = (float)((double)(rnd() % 2000001) / 100000 - 10) * (i / cols == 3 ? 1e-3f : 1);
        if (type >= XK_Q4_K) for (int i = 0; i < 256; i++) x[5 * cols + i] = 0;  // a zero superblock
        int mismatch = 0;
        float *ref = malloc(sizeof(float) * n * rows), *out = malloc(sizeof(float) * n * rows);
        if (type >= XK_Q4_K) {
            const int nb = cols / 256;
            block_q8_K *y = malloc(sizeof(block_q8_K) * nb * n);
            int8_t *qs = malloc(n * cols); float *d = malloc(sizeof(float) * n * nb); int16_t *bs = malloc(2 * 16 * n * nb);
            for (int t = 0; t < n; t++) quantize_row_q8_K(x + (size_t)t * cols, y + t * nb, cols);
            xk_quantize_q8_K(x, n * nb, qs, d, bs);
            for (int b = 0; b < n * nb; b++) {
                if (memcmp(&y[b].d, &d[b], 4) || memcmp(y[b].qs, qs + b * 256, 256) || (y[b].d != 0 && memcmp(y[b].bsums, bs + b * 16, 32))) {
                    if (!mismatch++) printf("%s: Q8_K block %d differs (d %g vs %g)\n", names[ti], b, y[b].d, d[b]);
                }
            }
            for (int t = 0; t < n; t++) for (int r = 0; r < rows; r++) {
                float s;
                void (*f)(int, float *, size_t, const void *, size_t, const void *, size_t, int) =
                    type == XK_Q4_K ? ggml_vec_dot_q4_K_q8_K : type == XK_Q5_K ? ggml_vec_dot_q5_K_q8_K : ggml_vec_dot_q6_K_q8_K;
                f(cols, &s, 0, w + r * rb, 0, y + t * nb, 0, 1);
                ref[t * rows + r] = s;
            }
            for (int v = 1; v >= 0; v--) {
                xk_set_vnni(v);
                memset(out, 0xff, sizeof(float) * n * rows);
                xk_gemm_k(type, w, rb, 0, rows, qs, d, bs, n, cols, out, rows);
                for (int i = 0; i < n * rows; i++, checked++)
                    if (memcmp(&out[i], &ref[i], 4)) { if (!mismatch++) printf("%s vnni=%d: out %d = %.9g, llama.cpp %.9g\n", names[ti], v, i, out[i], ref[i]); }
            }
        } else {
            const int nb = cols / 32;
            block_q8_1 *y1 = malloc(sizeof(block_q8_1) * nb * n);
            block_q8_0 *y0 = malloc(sizeof(block_q8_0) * nb * n);
            int8_t *qs = malloc(n * cols); float *d = malloc(sizeof(float) * n * nb), *s = malloc(sizeof(float) * n * nb);
            xk_quantize_q8(x, n * nb, qs, d, s);
            for (int t = 0; t < n; t++) {
                if (type == XK_Q4_1) quantize_row_q8_1(x + (size_t)t * cols, y1 + t * nb, cols);
                else quantize_row_q8_0(x + (size_t)t * cols, y0 + t * nb, cols);
            }
            for (int t = 0; t < n; t++) for (int r = 0; r < rows; r++) {
                float v;
                if (type == XK_Q4_1) ggml_vec_dot_q4_1_q8_1(cols, &v, 0, w + r * rb, 0, y1 + t * nb, 0, 1);
                else if (type == XK_Q5_0) ggml_vec_dot_q5_0_q8_0(cols, &v, 0, w + r * rb, 0, y0 + t * nb, 0, 1);
                else ggml_vec_dot_q8_0_q8_0(cols, &v, 0, w + r * rb, 0, y0 + t * nb, 0, 1);
                ref[t * rows + r] = v;
            }
            for (int v = 1; v >= 0; v--) {
                xk_set_vnni(v);
                memset(out, 0xff, sizeof(float) * n * rows);
                xk_gemm(type, w, rb, 0, rows, qs, d, s, n, cols, out, rows);
                for (int i = 0; i < n * rows; i++, checked++)
                    if (memcmp(&out[i], &ref[i], 4)) { if (!mismatch++) printf("%s vnni=%d: out %d = %.9g, llama.cpp %.9g\n", names[ti], v, i, out[i], ref[i]); }
            }
        }
        printf("%s: %s (%d mismatches)\n", names[ti], mismatch ? "DIFFERS" : "identical", mismatch);
        fails += mismatch != 0;
    }
    printf("%d outputs checked, %d types differ\n", checked, fails);
    return fails != 0;
}
