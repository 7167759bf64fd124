/*
 * SwiGLU, the gated activation of Llama's MLP: out = silu(gate) * up with
 * silu(g) = g * sigmoid(g). gate and up are read through a row stride so a
 * model can compute both with one matrix product into rows [gate | up]
 * (stride 2F) as well as pass two separate (N, F) buffers (stride F).
 * The optimized path uses the branch-free ef__expf so the loops vectorize;
 * each row body is compiled for the baseline ISA and for AVX2+FMA, chosen at
 * run time. The references evaluate in double.
 */
#include <math.h>

#include "fastmath_internal.h"
#include "nn_internal.h"
#include "simd.h"

INLINE void fwd_row(float *restrict o, const float *restrict g, const float *restrict u, int F) {
    for (int i = 0; i < F; i++) o[i] = g[i] / (1.0f + ef__expf(-g[i])) * u[i];
}

/* acc: 1 accumulates (+=), 0 assigns; a compile-time constant once inlined. */
INLINE void bwd_row(float *restrict dg, float *restrict du, const float *restrict d,
                    const float *restrict g, const float *restrict u, int F, int acc) {
    for (int i = 0; i < F; i++) {
        float e = ef__expf(-g[i]);
        float s = 1.0f / (1.0f + e);
        // silu'(g) = s (1 + g (1 - s)), with 1 - s written as e s, which
        // does not cancel when s is near 1 (e is clamped finite).
        float a = d[i] * u[i] * s * (1.0f + g[i] * (e * s));
        float b = d[i] * (g[i] * s);
        dg[i] = acc ? dg[i] + a : a;
        du[i] = acc ? du[i] + b : b;
    }
}

static void fwd_row_base(float *o, const float *g, const float *u, int F) { fwd_row(o, g, u, F); }
static void bwd_acc_base(float *dg, float *du, const float *d, const float *g, const float *u,
                         int F) {
    bwd_row(dg, du, d, g, u, F, 1);
}
static void bwd_set_base(float *dg, float *du, const float *d, const float *g, const float *u,
                         int F) {
    bwd_row(dg, du, d, g, u, F, 0);
}
#if EF_HAVE_AVX2_PATH
EF_TARGET_AVX2 static void fwd_row_avx2(float *o, const float *g, const float *u, int F) {
    fwd_row(o, g, u, F);
}
EF_TARGET_AVX2 static void bwd_acc_avx2(float *dg, float *du, const float *d, const float *g,
                                        const float *u, int F) {
    bwd_row(dg, du, d, g, u, F, 1);
}
EF_TARGET_AVX2 static void bwd_set_avx2(float *dg, float *du, const float *d, const float *g,
                                        const float *u, int F) {
    bwd_row(dg, du, d, g, u, F, 0);
}
#endif

typedef void (*bwd_fn)(float *, float *, const float *, const float *, const float *, int);

typedef struct swiglu_ctx {
    float *out, *dgate, *dup;
    const float *gate, *up, *dout;
    int F, ld, ld_d;
    void (*fwd)(float *, const float *, const float *, int);
    bwd_fn bwd;
} swiglu_ctx;

static void swiglu_fwd_rows(void *vctx, int64_t begin, int64_t end, int thread) {
    EF_UNUSED(thread);
    const swiglu_ctx *c = vctx;
    for (int64_t r = begin; r < end; r++)
        c->fwd(c->out + (size_t)r * c->F, c->gate + (size_t)r * c->ld, c->up + (size_t)r * c->ld,
               c->F);
}

void ef_swiglu_forward(float *out, const float *gate, const float *up, int N, int F, int ld,
                       ef_pool *pool) {
    // out (N, F); gate, up (N, F) with rows ld floats apart
    swiglu_ctx c = {.out = out, .gate = gate, .up = up, .F = F, .ld = ld, .fwd = fwd_row_base};
#if EF_HAVE_AVX2_PATH
    if (ef_cpu_features() & EF_CPU_AVX2) c.fwd = fwd_row_avx2;
#endif
    if ((int64_t)N * F < 32768) pool = NULL;
    ef_pool_for(pool, N, swiglu_fwd_rows, &c);
}

static void swiglu_bwd_rows(void *vctx, int64_t begin, int64_t end, int thread) {
    EF_UNUSED(thread);
    const swiglu_ctx *c = vctx;
    for (int64_t r = begin; r < end; r++) {
        size_t o = (size_t)r * c->ld;
        c->bwd(c->dgate + (size_t)r * c->ld_d, c->dup + (size_t)r * c->ld_d,
               c->dout + (size_t)r * c->F, c->gate + o, c->up + o, c->F);
    }
}

// One gradient skipped: the plain loop (rare; not worth two more variants).
static void swiglu_bwd_rows_one(void *vctx, int64_t begin, int64_t end, int thread) {
    EF_UNUSED(thread);
    const swiglu_ctx *c = vctx;
    int F = c->F;
    for (int64_t r = begin; r < end; r++) {
        const float *g = c->gate + (size_t)r * c->ld, *u = c->up + (size_t)r * c->ld;
        const float *d = c->dout + (size_t)r * F;
        float *dg = c->dgate ? c->dgate + (size_t)r * c->ld_d : NULL;
        float *du = c->dup ? c->dup + (size_t)r * c->ld_d : NULL;
        for (int i = 0; i < F; i++) {
            float e = ef__expf(-g[i]), s = 1.0f / (1.0f + e);
            if (dg) dg[i] += d[i] * u[i] * s * (1.0f + g[i] * (e * s));
            if (du) du[i] += d[i] * (g[i] * s);
        }
    }
}

static void swiglu_bwd(float *dgate, float *dup, const float *dout, const float *gate,
                       const float *up, int N, int F, int ld, int ld_d, int acc, ef_pool *pool) {
    swiglu_ctx c = {.dgate = dgate, .dup = dup, .dout = dout, .gate = gate, .up = up, .F = F,
                    .ld = ld, .ld_d = ld_d, .bwd = acc ? bwd_acc_base : bwd_set_base};
#if EF_HAVE_AVX2_PATH
    if (ef_cpu_features() & EF_CPU_AVX2) c.bwd = acc ? bwd_acc_avx2 : bwd_set_avx2;
#endif
    if ((int64_t)N * F < 32768) pool = NULL;
    ef_pool_for(pool, N, dgate && dup ? swiglu_bwd_rows : swiglu_bwd_rows_one, &c);
}

void ef_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                        const float *up, int N, int F, int ld, ef_pool *pool) {
    // dgate, dup, gate, up (N, F) with rows ld floats apart; dout (N, F)
    if (!dgate && !dup) return;
    swiglu_bwd(dgate, dup, dout, gate, up, N, F, ld, ld, 1, pool);
}

void ef__swiglu_backward_set(float *dgate, float *dup, const float *dout, const float *gate,
                             const float *up, int N, int F, int ld, ef_pool *pool) {
    swiglu_bwd(dgate, dup, dout, gate, up, N, F, ld, ld, 0, pool);
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
