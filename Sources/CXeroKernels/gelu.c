// GELU as ggml's CPU backend computes it: a 65,536-entry Float16 table of the tanh approximation,
// looked up by the input rounded to Float16. Reproducing the table (not a more accurate GELU) is
// what keeps Gemma's greedy tokens on llama.cpp's.
#include "xero_gelu.h"
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>

float xk_gelu(float x) {
    // GCC (-O3, -ffp-contract=fast, FMA) turns ggml's 1.0f + GELU_COEF_A*x*x into one fma; this
    // target compiles with -ffp-contract=off, so the fma is written out. Checked against GCC's
    // build of ggml_gelu_f32 for every Float16 input.
    const float a = 0.044715f * x;
    const float inner = 0.79788456080286535587989211986876f * x * fmaf(a, x, 1.0f);
    return 0.5f * x * (1.0f + tanhf(inner));
}

static uint16_t table[1 << 16];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void make_table(void) {
    for (int i = 0; i < (1 << 16); i++) {
        const float f = _cvtsh_ss((uint16_t)i);
        table[i] = _cvtss_sh(xk_gelu(f), _MM_FROUND_TO_NEAREST_INT);
    }
}

void xk_geglu(float *g, const float *u, int n) {
    pthread_once(&table_once, make_table);
    for (int i = 0; i < n; i++) {
        const float x = g[i];
        if (x <= -10.0f) g[i] = 0.0f;
        else if (x >= 10.0f) g[i] = x * u[i];
        else g[i] = _cvtsh_ss(table[_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT)]) * u[i];
    }
}
