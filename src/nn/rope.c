/*
 * Rotary position embedding (RoPE) in the layout llama.cpp uses for the
 * "llama" architecture (GGML rope mode NORMAL): within each head of size HS,
 * the ADJACENT pair (x[2i], x[2i+1]) at position t is rotated by the angle
 * t * theta^(-2i/HS). Because edgefl trains with this layout, exported q/k
 * weights need no permutation (HF checkpoints use the half-split layout and
 * are permuted by their converters).
 *
 * The optimized kernels read cos/sin from a table made once per sequence
 * length (ef_rope_table, angles in double); the references compute every
 * angle in double on the spot. The rotation is orthogonal, so the backward
 * pass is the rotation by the opposite angle.
 */
#include <math.h>

#include "nn_internal.h"

void ef_rope_table(float *cs, int T, int HS, float theta) {
    // cs (T, HS/2, 2): cos, sin of t * theta^(-2i/HS)
    int half = HS / 2;
    for (int i = 0; i < half; i++) {
        double freq = pow((double)theta, -2.0 * i / (double)HS);
        for (int t = 0; t < T; t++) {
            double a = (double)t * freq;
            cs[((size_t)t * half + i) * 2] = (float)cos(a);
            cs[((size_t)t * half + i) * 2 + 1] = (float)sin(a);
        }
    }
}

typedef struct rope_ctx {
    float *out;
    const float *inp, *cs;
    int T, NH, HS;
    float sign; // +1 forward, -1 backward (rotation by the opposite angle)
    int accumulate;
} rope_ctx;

static void rope_rows(void *vctx, int64_t begin, int64_t end, int thread) {
    EF_UNUSED(thread);
    const rope_ctx *c = vctx;
    int half = c->HS / 2, C = c->NH * c->HS;
    for (int64_t r = begin; r < end; r++) {
        // r enumerates (b, t); every head of the row uses the same angles.
        const float *cs = c->cs + (size_t)(r % c->T) * half * 2; // (HS/2, 2)
        const float *x = c->inp + (size_t)r * C;
        float *y = c->out + (size_t)r * C;
        for (int h = 0; h < c->NH; h++) {
            const float *xh = x + (size_t)h * c->HS;
            float *yh = y + (size_t)h * c->HS;
            for (int i = 0; i < half; i++) {
                float co = cs[2 * i], si = c->sign * cs[2 * i + 1];
                float x0 = xh[2 * i], x1 = xh[2 * i + 1];
                float y0 = co * x0 - si * x1, y1 = si * x0 + co * x1;
                if (c->accumulate) {
                    yh[2 * i] += y0;
                    yh[2 * i + 1] += y1;
                } else {
                    yh[2 * i] = y0;
                    yh[2 * i + 1] = y1;
                }
            }
        }
    }
}

void ef_rope_forward(float *out, const float *inp, const float *cs, int B, int T, int NH, int HS,
                     ef_pool *pool) {
    // out, inp (B, T, NH*HS), may alias; cs (T, HS/2, 2)
    rope_ctx c = {.out = out, .inp = inp, .cs = cs, .T = T, .NH = NH, .HS = HS, .sign = 1.0f};
    if ((int64_t)B * T * NH * HS < 32768) pool = NULL;
    ef_pool_for(pool, (int64_t)B * T, rope_rows, &c);
}

void ef_rope_backward(float *dinp, const float *dout, const float *cs, int B, int T, int NH,
                      int HS, ef_pool *pool) {
    // dinp, dout (B, T, NH*HS); cs (T, HS/2, 2)
    if (!dinp) return;
    rope_ctx c = {.out = dinp, .inp = dout, .cs = cs, .T = T, .NH = NH, .HS = HS, .sign = -1.0f,
                  .accumulate = 1};
    if ((int64_t)B * T * NH * HS < 32768) pool = NULL;
    ef_pool_for(pool, (int64_t)B * T, rope_rows, &c);
}

// One pass of the reference: sign +1 rotates forward (and assigns), -1
// rotates back (and accumulates).
static void rope_ref(float *out, const float *inp, int B, int T, int NH, int HS, float theta,
                     int sign) {
    int half = HS / 2, C = NH * HS;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH; h++)
                for (int i = 0; i < half; i++) {
                    double a = (double)t * pow((double)theta, -2.0 * i / (double)HS);
                    double co = cos(a), si = sign * sin(a);
                    size_t o = ((size_t)b * T + t) * C + (size_t)h * HS + 2 * (size_t)i;
                    double x0 = inp[o], x1 = inp[o + 1];
                    double y0 = co * x0 - si * x1, y1 = si * x0 + co * x1;
                    if (sign > 0) {
                        out[o] = (float)y0;
                        out[o + 1] = (float)y1;
                    } else {
                        out[o] += (float)y0;
                        out[o + 1] += (float)y1;
                    }
                }
}

void ef_rope_forward_ref(float *out, const float *inp, int B, int T, int NH, int HS,
                         float theta) {
    rope_ref(out, inp, B, T, NH, HS, theta, 1);
}

void ef_rope_backward_ref(float *dinp, const float *dout, int B, int T, int NH, int HS,
                          float theta) {
    if (dinp) rope_ref(dinp, dout, B, T, NH, HS, theta, -1);
}
