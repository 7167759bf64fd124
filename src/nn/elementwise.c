/*
 * Element-wise kernels of the transformer block: GELU (tanh approximation,
 * as in GPT-2) and the residual add. The optimized GELU rewrites
 * 0.5 (1 + tanh u) as sigmoid(2u) and uses the branch-free ef__expf, so the
 * loop vectorizes; the references evaluate the textbook formula in double.
 */
#include <math.h>

#include "fastmath_internal.h"
#include "nn_internal.h"

#define GELU_K 0.7978845608028654 /* sqrt(2 / pi) */
#define GELU_C 0.044715

/* ---- GELU ----------------------------------------------------------------- */

void ef_gelu_forward(float *out, const float *inp, size_t n) {
    // out, inp (n); no restrict: a caller may run it in place
    const float k = (float)GELU_K, c = (float)GELU_C;
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = k * (x + c * x * x * x);
        // 0.5 x (1 + tanh u) == x sigmoid(2u); unlike 1 + tanh u this does not
        // cancel for large negative x, and needs one exp.
        out[i] = x / (1.0f + ef__expf(-2.0f * u));
    }
}

void ef_gelu_backward(float *restrict dinp, const float *restrict dout,
                      const float *restrict inp, size_t n) {
    // dinp, dout, inp (n)
    if (!dinp) return;
    const float k = (float)GELU_K, c = (float)GELU_C;
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = k * (x + c * x * x * x);
        float e = ef__expf(-2.0f * u);
        float s = 1.0f / (1.0f + e); // sigmoid(2u) = 0.5 (1 + tanh u)
        // 0.5 (1 - tanh^2 u) = 2 s (1 - s) = 2 s (s e): written with e rather
        // than 1 - s, which cancels when s is near 1. e is clamped finite, so
        // s e cannot be 0 * inf.
        float local = s + 2.0f * x * (s * e) * s * k * (1.0f + 3.0f * c * x * x);
        dinp[i] += dout[i] * local;
    }
}

void ef_gelu_forward_ref(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double x = inp[i];
        double u = GELU_K * (x + GELU_C * x * x * x);
        out[i] = (float)(0.5 * x * (1.0 + tanh(u)));
    }
}

void ef_gelu_backward_ref(float *dinp, const float *dout, const float *inp, size_t n) {
    if (!dinp) return;
    for (size_t i = 0; i < n; i++) {
        double x = inp[i];
        double u = GELU_K * (x + GELU_C * x * x * x);
        double t = tanh(u);
        double du = GELU_K * (1.0 + 3.0 * GELU_C * x * x);
        double local = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du;
        dinp[i] = (float)(dinp[i] + dout[i] * local);
    }
}

/* ---- residual add ----------------------------------------------------------- */

void ef_residual_forward(float *out, const float *a, const float *b, size_t n) {
    // out, a, b (n); out may be a or b (x = x + f(x)), so no restrict
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void ef_residual_backward(float *restrict da, float *restrict db, const float *restrict dout,
                          size_t n) {
    // da, db, dout (n)
    if (da)
        for (size_t i = 0; i < n; i++) da[i] += dout[i];
    if (db)
        for (size_t i = 0; i < n; i++) db[i] += dout[i];
}

void ef_residual_forward_ref(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void ef_residual_backward_ref(float *da, float *db, const float *dout, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (da) da[i] += dout[i];
        if (db) db[i] += dout[i];
    }
}
