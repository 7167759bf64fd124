/*
 * SwiGLU, the gated activation of Llama's MLP: out = silu(gate) * up with
 * silu(g) = g * sigmoid(g). gate and up are read through a row stride so a
 * model can compute both with one matrix product into rows [gate | up]
 * (stride 2F) as well as pass two separate (N, F) buffers (stride F).
 * The optimized path uses the branch-free ef__expf so the loops vectorize;
 * the references evaluate in double.
 */
#include <math.h>

#include "fastmath_internal.h"
#include "nn_internal.h"

typedef struct swiglu_ctx {
    float *out, *dgate, *dup;
    const float *gate, *up, *dout;
    int F, ld;
} swiglu_ctx;

static void swiglu_fwd_rows(void *vctx, int64_t begin, int64_t end, int thread) {
    EF_UNUSED(thread);
    const swiglu_ctx *c = vctx;
    int F = c->F;
    for (int64_t r = begin; r < end; r++) {
        const float *restrict g = c->gate + (size_t)r * c->ld;
        const float *restrict u = c->up + (size_t)r * c->ld;
        float *restrict o = c->out + (size_t)r * F;
        for (int i = 0; i < F; i++) o[i] = g[i] / (1.0f + ef__expf(-g[i])) * u[i];
    }
}

void ef_swiglu_forward(float *out, const float *gate, const float *up, int N, int F, int ld,
                       ef_pool *pool) {
    // out (N, F); gate, up (N, F) with rows ld floats apart
    swiglu_ctx c = {.out = out, .gate = gate, .up = up, .F = F, .ld = ld};
    if ((int64_t)N * F < 32768) pool = NULL;
    ef_pool_for(pool, N, swiglu_fwd_rows, &c);
}

static void swiglu_bwd_rows(void *vctx, int64_t begin, int64_t end, int thread) {
    EF_UNUSED(thread);
    const swiglu_ctx *c = vctx;
    int F = c->F;
    for (int64_t r = begin; r < end; r++) {
        const float *restrict g = c->gate + (size_t)r * c->ld;
        const float *restrict u = c->up + (size_t)r * c->ld;
        const float *restrict d = c->dout + (size_t)r * F;
        float *restrict dg = c->dgate ? c->dgate + (size_t)r * c->ld : NULL;
        float *restrict du = c->dup ? c->dup + (size_t)r * c->ld : NULL;
        for (int i = 0; i < F; i++) {
            float e = ef__expf(-g[i]);
            float s = 1.0f / (1.0f + e);
            float silu = g[i] * s;
            // silu'(g) = s (1 + g (1 - s)), with 1 - s written as e s, which
            // does not cancel when s is near 1 (e is clamped finite).
            if (dg) dg[i] += d[i] * u[i] * s * (1.0f + g[i] * (e * s));
            if (du) du[i] += d[i] * silu;
        }
    }
}

void ef_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                        const float *up, int N, int F, int ld, ef_pool *pool) {
    // dgate, dup, gate, up (N, F) with rows ld floats apart; dout (N, F)
    if (!dgate && !dup) return;
    swiglu_ctx c = {.dgate = dgate, .dup = dup, .dout = dout, .gate = gate, .up = up, .F = F,
                    .ld = ld};
    if ((int64_t)N * F < 32768) pool = NULL;
    ef_pool_for(pool, N, swiglu_bwd_rows, &c);
}

void ef_swiglu_forward_ref(float *out, const float *gate, const float *up, int N, int F,
                           int ld) {
    for (int r = 0; r < N; r++)
        for (int i = 0; i < F; i++) {
            double g = gate[(size_t)r * ld + i], u = up[(size_t)r * ld + i];
            out[(size_t)r * F + i] = (float)(g / (1.0 + exp(-g)) * u);
        }
}

void ef_swiglu_backward_ref(float *dgate, float *dup, const float *dout, const float *gate,
                            const float *up, int N, int F, int ld) {
    for (int r = 0; r < N; r++)
        for (int i = 0; i < F; i++) {
            size_t o = (size_t)r * ld + i;
            double g = gate[o], u = up[o], d = dout[(size_t)r * F + i];
            double s = 1.0 / (1.0 + exp(-g));
            if (dgate) dgate[o] += (float)(d * u * (s + g * s * (1.0 - s)));
            if (dup) dup[o] += (float)(d * g * s);
        }
}
