#ifndef XERO_GELU_H
#define XERO_GELU_H

/// ggml's GELU for one value (the tanh approximation, with the one fused multiply-add GCC forms in
/// ggml's C: 1 + (0.044715·x)·x). What the table below is made of.
float xk_gelu(float x);

/// g[i] = gelu(g[i]) · u[i], through ggml's Float16 table (GGML_GELU_FP16): x ≤ −10 gives 0,
/// x ≥ 10 gives x·u, otherwise table[f16(x)] · u. ggml's geglu, which Gemma's feed-forward uses.
void xk_geglu(float *g, const float *u, int n);

#endif
