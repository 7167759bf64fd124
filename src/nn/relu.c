/*
 * ReLU forward and backward. Simple enough that the optimized kernel is the
 * reference loop written so the compiler vectorizes it (no branches).
 */
#include "nn_internal.h"

void ef_relu_forward(float *out, const float *inp, size_t n) {
    // out, inp (n); may alias, so no restrict here
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void ef_relu_backward(float *restrict dinp, const float *restrict dout,
                      const float *restrict out, size_t n) {
    // dinp, dout, out (n)
    for (size_t i = 0; i < n; i++) dinp[i] += out[i] > 0.0f ? dout[i] : 0.0f;
}

void ef_relu_forward_ref(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (inp[i] > 0.0f) out[i] = inp[i];
        else out[i] = 0.0f;
    }
}

void ef_relu_backward_ref(float *dinp, const float *dout, const float *out, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (out[i] > 0.0f) dinp[i] += dout[i];
}
