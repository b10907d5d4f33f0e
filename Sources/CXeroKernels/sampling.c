// The sampler's window: the tokens a draw at temperature T can pick, and their weights. In C
// because a small model at T 0.7 keeps tens of thousands of its 49k logits within the window,
// and libm's expf one by one, behind Swift's appends, cost ~0.25 ms a draw (6 % of a worker's
// CPU with eight streams).
#include "xero_kernels.h"
#include "vec_math.h"

int xk_sample_window(const float *logits, int n, float inv_t, float window, int32_t *ids, float *weights,
                     float *max_out, float *total_out) {
    // The largest logit; a NaN never compares greater, so it is skipped (as by Swift's max(mx, v)).
    float mx = -INFINITY;
    int i = 0;
    __m256 m8 = _mm256_set1_ps(-INFINITY);
    for (; i + 8 <= n; i += 8) m8 = _mm256_max_ps(_mm256_loadu_ps(logits + i), m8);
    float lanes[8];
    _mm256_storeu_ps(lanes, m8);
    for (int k = 0; k < 8; k++) if (lanes[k] > mx) mx = lanes[k];
    for (; i < n; i++) if (logits[i] > mx) mx = logits[i];
    *max_out = mx;
    *total_out = 0;
    if (!(mx > -INFINITY)) return 0;
    const float floor = mx - window;
    // Lanes outside the window are clamped before the exponential (they are dropped anyway), so
    // exp8 never takes its slow path for them.
    const __m256 vmx = _mm256_set1_ps(mx), vinv = _mm256_set1_ps(inv_t), vfloor = _mm256_set1_ps(floor);
    const __m256 lo = _mm256_set1_ps(-window * inv_t - 1);
    int count = 0;
    float total = 0;
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(logits + i);
        int keep = _mm256_movemask_ps(_mm256_cmp_ps(v, vfloor, _CMP_GE_OQ));
        if (!keep) continue;
        float w[8];
        _mm256_storeu_ps(w, exp8(_mm256_max_ps(_mm256_mul_ps(_mm256_sub_ps(v, vmx), vinv), lo)));
        for (; keep; keep &= keep - 1) {
            const int k = __builtin_ctz(keep);
            ids[count] = i + k;
            weights[count++] = w[k];
            total += w[k];
        }
    }
    for (; i < n; i++) {
        if (!(logits[i] >= floor)) continue;
        float x[8] = {(logits[i] - mx) * inv_t}, w[8];
        _mm256_storeu_ps(w, exp8(_mm256_loadu_ps(x)));
        ids[count] = i;
        weights[count++] = w[0];
        total += w[0];
    }
    *total_out = total;
    return count;
}
