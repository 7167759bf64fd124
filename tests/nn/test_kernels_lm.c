/*
 * Tests of the kernels the llama-style language model adds: RoPE (rotary
 * position embedding in llama.cpp's adjacent-pair layout), SwiGLU and
 * global gradient-norm clipping. For each: finite-difference gradient
 * checks (tests/nn/gradcheck.h) of the optimized and the reference kernels;
 * optimized against reference with no pool and 2- and 3-thread pools;
 * bit-identical results for every thread count; plus known answers (RoPE
 * angles and pair layout, the relative-position property; clipping against
 * torch's rule).
 *
 * Optimized vs reference tolerance: every element within
 * 1e-5 * (|ref| + rms(ref)).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgefl/nn.h"
#include "edgefl/pool.h"
#include "edgefl/rng.h"
#include "gradcheck.h"
#include "kernel_util.h"
#include "test_util.h"

#define OPT_RTOL 1e-5
#define N_POOLS 3
static ef_pool *pools[N_POOLS]; // no pool, 2 threads, 3 threads

static int same_bits(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof(float)) == 0;
}

// a (optimized) against r (reference), (n): every element within rtol * (|r| + rms(r)).
static void check_close(const char *what, const float *a, const float *r, size_t n,
                        double rtol) {
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += (double)r[i] * r[i];
    double rms = n ? sqrt(ss / (double)n) : 0.0, worst = 0.0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - r[i]) / (fabs(r[i]) + rms + 1e-30);
        if (isnan(e)) e = INFINITY;
        if (e > worst) worst = e, wi = i;
    }
    CHECK_MSG(worst <= rtol, "%s: element %zu optimized %.9g reference %.9g (error %.3g)", what,
              wi, n ? a[wi] : 0.0, n ? r[wi] : 0.0, worst);
}

/* ---- RoPE --------------------------------------------------------------- */

typedef struct rope_ctx {
    float *inp, *out, *dinp, *dout, *cs;
    int B, T, NH, HS, ref;
    float theta;
    ef_pool *pool;
} rope_ctx;

static void rope_fwd(void *vc) {
    rope_ctx *c = vc;
    if (c->ref) ef_rope_forward_ref(c->out, c->inp, c->B, c->T, c->NH, c->HS, c->theta);
    else ef_rope_forward(c->out, c->inp, c->cs, c->B, c->T, c->NH, c->HS, c->pool);
}

static void rope_bwd(void *vc) {
    rope_ctx *c = vc;
    if (c->ref) ef_rope_backward_ref(c->dinp, c->dout, c->B, c->T, c->NH, c->HS, c->theta);
    else ef_rope_backward(c->dinp, c->dout, c->cs, c->B, c->T, c->NH, c->HS, c->pool);
}

static void test_rope_grad(void) {
    static const int shapes[][4] = {{1, 1, 1, 2}, {2, 5, 3, 4}, {1, 17, 2, 8}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int ref = 0; ref < 2; ref++) {
            int B = shapes[s][0], T = shapes[s][1], NH = shapes[s][2], HS = shapes[s][3];
            size_t n = (size_t)B * T * NH * HS;
            rope_ctx c = {filled(n, 0, 1), falloc(n), falloc(n), falloc(n),
                          falloc((size_t)T * HS), B, T, NH, HS, ref, 10000.0f, pools[1]};
            ef_rope_table(c.cs, T, HS, c.theta);
            gc_input in[1] = {{"inp", c.inp, c.dinp, n}};
            gc_op op = {ref ? "rope_ref" : "rope", &c, rope_fwd, rope_bwd, c.out, c.dout, n, in, 1};
            CHECK_MSG(gc_check(&op, NULL, NULL) == 0, "rope gradcheck shape %zu ref %d", s, ref);
            free(c.inp), free(c.out), free(c.dinp), free(c.dout), free(c.cs);
        }
}

static void test_rope_vs_ref(void) {
    int B = 3, T = 67, NH = 5, HS = 32;
    float theta = 10000.0f;
    size_t n = (size_t)B * T * NH * HS;
    float *x = filled(n, 0, 1), *dout = filled(n, 0, 1), *g0 = filled(n, 0, 1);
    float *cs = falloc((size_t)T * HS), *ref = falloc(n), *dref = dup(g0, n);
    ef_rope_table(cs, T, HS, theta);
    ef_rope_forward_ref(ref, x, B, T, NH, HS, theta);
    ef_rope_backward_ref(dref, dout, B, T, NH, HS, theta);
    float *first = NULL, *dfirst = NULL;
    for (int p = 0; p < N_POOLS; p++) {
        float *out = falloc(n), *din = dup(g0, n);
        ef_rope_forward(out, x, cs, B, T, NH, HS, pools[p]);
        ef_rope_backward(din, dout, cs, B, T, NH, HS, pools[p]);
        check_close("rope forward", out, ref, n, OPT_RTOL);
        check_close("rope backward", din, dref, n, OPT_RTOL);
        if (!first) {
            first = out, dfirst = din;
            continue;
        }
        CHECK_MSG(same_bits(out, first, n) && same_bits(din, dfirst, n),
                  "rope: pool %d differs from no pool", p);
        free(out), free(din);
    }
    // In place gives the same bits.
    float *y = dup(x, n);
    ef_rope_forward(y, y, cs, B, T, NH, HS, pools[1]);
    CHECK(same_bits(y, first, n));
    // Forward then backward from zero is the identity (rotation is orthogonal).
    float *back = falloc(n);
    ef_rope_backward(back, first, cs, B, T, NH, HS, pools[2]);
    check_close("rope inverse", back, x, n, 1e-6);
    ef_rope_backward(NULL, dout, cs, B, T, NH, HS, NULL); // skipped
    free(x), free(dout), free(g0), free(cs), free(ref), free(dref), free(first), free(dfirst);
    free(y), free(back);
}

static void test_rope_known(void) {
    // HS = 4, theta 100: pair 0 turns by t rad, pair 1 by t * 100^(-1/2) = t / 10.
    int T = 3, HS = 4;
    float cs[3 * 4];
    ef_rope_table(cs, T, HS, 100.0f);
    float x[3 * 4], y[3 * 4];
    for (int t = 0; t < T; t++) {
        float *r = x + t * 4;
        r[0] = 1, r[1] = 0, r[2] = 0, r[3] = 2;
    }
    ef_rope_forward(y, x, cs, 1, T, 1, HS, NULL);
    for (int t = 0; t < T; t++) {
        const float *r = y + t * 4;
        // Adjacent pairs (0,1) and (2,3), not halves (0,2) and (1,3).
        CHECK_NEAR(r[0], cos((double)t), 1e-6);
        CHECK_NEAR(r[1], sin((double)t), 1e-6);
        CHECK_NEAR(r[2], -2.0 * sin(t / 10.0), 1e-6);
        CHECK_NEAR(r[3], 2.0 * cos(t / 10.0), 1e-6);
    }
    // Position 0 is the identity.
    CHECK(y[0] == 1.0f && y[1] == 0.0f && y[2] == 0.0f && y[3] == 2.0f);

    // q(t1) . k(t2) depends only on t1 - t2: the property attention relies on.
    int T2 = 40, H2 = 16;
    float *cs2 = falloc((size_t)T2 * H2);
    ef_rope_table(cs2, T2, H2, 10000.0f);
    float *q = falloc((size_t)T2 * H2), *k = falloc((size_t)T2 * H2);
    float qv[16], kv[16];
    fill(qv, 16, 0, 1);
    fill(kv, 16, 0, 1);
    for (int t = 0; t < T2; t++) {
        memcpy(q + t * H2, qv, sizeof qv);
        memcpy(k + t * H2, kv, sizeof kv);
    }
    ef_rope_forward(q, q, cs2, 1, T2, 1, H2, NULL);
    ef_rope_forward(k, k, cs2, 1, T2, 1, H2, NULL);
    for (int d = 0; d < 5; d++) {
        double ref = 0.0;
        for (int i = 0; i < H2; i++) ref += (double)q[(d)*H2 + i] * k[i];
        for (int t = d; t < T2; t += 7) {
            double dot = 0.0;
            for (int i = 0; i < H2; i++) dot += (double)q[t * H2 + i] * k[(t - d) * H2 + i];
            CHECK_MSG(fabs(dot - ref) < 1e-4 * (1 + fabs(ref)),
                      "rope relative position: t %d d %d dot %.7g vs %.7g", t, d, dot, ref);
        }
    }
    free(cs2), free(q), free(k);
}

/* ---- SwiGLU ------------------------------------------------------------- */

typedef struct sw_ctx {
    float *gu, *out, *dgu, *dout; // gu (N, ld): gate at column 0, up at column `up_off`
    int N, F, ld, up_off, ref;
    ef_pool *pool;
} sw_ctx;

static void sw_fwd(void *vc) {
    sw_ctx *c = vc;
    if (c->ref) ef_swiglu_forward_ref(c->out, c->gu, c->gu + c->up_off, c->N, c->F, c->ld);
    else ef_swiglu_forward(c->out, c->gu, c->gu + c->up_off, c->N, c->F, c->ld, c->pool);
}

static void sw_bwd(void *vc) {
    sw_ctx *c = vc;
    if (c->ref)
        ef_swiglu_backward_ref(c->dgu, c->dgu + c->up_off, c->dout, c->gu, c->gu + c->up_off,
                               c->N, c->F, c->ld);
    else
        ef_swiglu_backward(c->dgu, c->dgu + c->up_off, c->dout, c->gu, c->gu + c->up_off, c->N,
                           c->F, c->ld, c->pool);
}

static void test_swiglu_grad(void) {
    static const int shapes[][2] = {{1, 1}, {3, 7}, {5, 16}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int ref = 0; ref < 2; ref++) {
            int N = shapes[s][0], F = shapes[s][1];
            size_t n = (size_t)N * 2 * F;
            sw_ctx c = {filled(n, 0, 2), falloc((size_t)N * F), falloc(n), falloc((size_t)N * F),
                        N, F, 2 * F, F, ref, pools[2]};
            gc_input in[1] = {{"gate|up", c.gu, c.dgu, n}};
            gc_op op = {ref ? "swiglu_ref" : "swiglu", &c, sw_fwd, sw_bwd, c.out, c.dout,
                        (size_t)N * F, in, 1};
            CHECK_MSG(gc_check(&op, NULL, NULL) == 0, "swiglu gradcheck %dx%d ref %d", N, F, ref);
            free(c.gu), free(c.out), free(c.dgu), free(c.dout);
        }
}

static void test_swiglu_vs_ref(void) {
    int N = 37, F = 301;
    size_t n = (size_t)N * 2 * F, no = (size_t)N * F;
    float *gu = filled(n, 0, 3);
    static const float special[] = {0.0f, -0.0f, 1e-6f, -1e-6f, 20.0f, -20.0f,
                                    90.0f, -90.0f, 1e4f, -1e4f, 1e30f, -1e30f};
    memcpy(gu, special, sizeof special);
    float *dout = filled(no, 0, 1), *g0 = filled(n, 0, 1);
    float *ref = falloc(no), *dref = dup(g0, n);
    ef_swiglu_forward_ref(ref, gu, gu + F, N, F, 2 * F);
    ef_swiglu_backward_ref(dref, dref + F, dout, gu, gu + F, N, F, 2 * F);
    float *first = NULL, *dfirst = NULL;
    for (int p = 0; p < N_POOLS; p++) {
        float *out = falloc(no), *din = dup(g0, n);
        ef_swiglu_forward(out, gu, gu + F, N, F, 2 * F, pools[p]);
        ef_swiglu_backward(din, din + F, dout, gu, gu + F, N, F, 2 * F, pools[p]);
        // Elements with |gate| = 1e30 overflow gate*up in float (the
        // reference computes in double); leave those to the finiteness check.
        check_close("swiglu forward", out + 2 * F, ref + 2 * F, no - 2 * F, OPT_RTOL);
        check_close("swiglu backward", din + 4 * F, dref + 4 * F, n - 4 * F, OPT_RTOL);
        for (int i = 0; i < 10; i++) {
            CHECK_MSG(fabsf(out[i] - ref[i]) <= 1e-5f * (fabsf(ref[i]) + 1), "swiglu special %d",
                      i);
            CHECK_MSG(fabsf(din[i] - dref[i]) <= 1e-5f * (fabsf(dref[i]) + 1),
                      "swiglu special grad %d: %g vs %g", i, din[i], dref[i]);
        }
        if (!first) {
            first = out, dfirst = din;
            continue;
        }
        CHECK_MSG(same_bits(out, first, no) && same_bits(din, dfirst, n),
                  "swiglu: pool %d differs from no pool", p);
        free(out), free(din);
    }
    // Separate buffers (ld = F) give the same bits as the fused layout.
    float *g = falloc(no), *u = falloc(no), *out2 = falloc(no);
    for (int r = 0; r < N; r++) {
        memcpy(g + (size_t)r * F, gu + (size_t)r * 2 * F, F * sizeof(float));
        memcpy(u + (size_t)r * F, gu + (size_t)r * 2 * F + F, F * sizeof(float));
    }
    ef_swiglu_forward(out2, g, u, N, F, F, NULL);
    CHECK(same_bits(out2, first, no));
    float *dg = falloc(no);
    ef_swiglu_backward(dg, NULL, dout, g, u, N, F, F, NULL); // dup skipped
    // (the fused path may contract g0 + a into one FMA: equal up to rounding)
    int ok = 1;
    for (int r = 0; r < N; r++)
        for (int i = 0; i < F; i++) {
            float want = dfirst[(size_t)r * 2 * F + i];
            ok &= fabsf(dg[(size_t)r * F + i] + g0[(size_t)r * 2 * F + i] - want) <=
                  1e-6f * (fabsf(want) + 1.0f);
        }
    CHECK(ok);
    ef_swiglu_backward(NULL, NULL, dout, g, u, N, F, F, NULL);
    int finite = 1;
    for (size_t i = 0; i < n; i++) finite &= isfinite(dfirst[i]);
    CHECK(finite);
    // A gate of 0 gives 0 whatever the up value; silu(g) ~ g for large g.
    float z[2] = {0.0f, 123.0f}, zo[1];
    ef_swiglu_forward(zo, z, z + 1, 1, 1, 2, NULL);
    CHECK(zo[0] == 0.0f);
    free(gu), free(dout), free(g0), free(ref), free(dref), free(first), free(dfirst);
    free(g), free(u), free(out2), free(dg);
}

/* ---- gradient clipping --------------------------------------------------- */

static void test_clip(void) {
    size_t n = 300001;
    float *g = filled(n, 0, 1e-2);
    double want = 0.0;
    for (size_t i = 0; i < n; i++) want += (double)g[i] * g[i];
    want = sqrt(want);
    // Norms agree with a plain double sum and are the same bits for every pool.
    double first = 0.0;
    for (int p = 0; p < N_POOLS; p++) {
        double nrm = ef_grad_norm(g, n, pools[p]);
        CHECK_MSG(fabs(nrm - want) <= 1e-12 * want, "grad norm %.17g vs %.17g", nrm, want);
        if (p == 0) first = nrm;
        else CHECK(nrm == first);
    }
    // Below the threshold: untouched.
    float *c = dup(g, n);
    double nrm = ef_grad_clip(c, n, (float)(want * 1.01), pools[1]);
    CHECK(nrm == first && same_bits(c, g, n));
    // max_norm <= 0 disables clipping.
    CHECK(ef_grad_clip(c, n, 0.0f, pools[1]) == first && same_bits(c, g, n));
    // Above: scaled by max / (norm + 1e-6) (torch's rule), new norm ~ max.
    float *r = dup(g, n);
    double nr = ef_grad_clip_ref(r, n, 0.5f);
    CHECK_NEAR(nr, want, 1e-9 * want);
    float *prev = NULL;
    for (int p = 0; p < N_POOLS; p++) {
        float *cc = dup(g, n);
        ef_grad_clip(cc, n, 0.5f, pools[p]);
        check_close("clip", cc, r, n, 1e-6);
        if (prev) {
            CHECK(same_bits(cc, prev, n));
            free(prev);
        }
        prev = cc;
    }
    CHECK_NEAR(ef_grad_norm(prev, n, NULL), 0.5 * want / (want + 1e-6), 1e-6);
    // A non-finite gradient gives a non-finite norm and no scaling.
    c[17] = NAN;
    float *c0 = dup(c, n);
    CHECK(isnan(ef_grad_clip(c, n, 0.5f, pools[2])));
    CHECK(memcmp(c, c0, n * sizeof(float)) == 0);
    c[17] = INFINITY;
    CHECK(isinf(ef_grad_norm(c, n, pools[2])));
    // Tiny vectors (fewer elements than chunks), and empty ones.
    float t3[3] = {3, 4, 0};
    CHECK_NEAR(ef_grad_clip(t3, 3, 1.0f, pools[2]), 5.0, 1e-12);
    CHECK_NEAR(t3[0], 0.6, 1e-6);
    CHECK_NEAR(t3[1], 0.8, 1e-6);
    CHECK(ef_grad_norm(t3, 0, NULL) == 0.0);
    free(g), free(c), free(c0), free(r), free(prev);
}

int main(void) {
    ef_rng_seed(&rng, 20240612);
    pools[0] = NULL;
    CHECK_OK(ef_pool_new(&pools[1], 2));
    CHECK_OK(ef_pool_new(&pools[2], 3));
    if (!pools[1] || !pools[2]) return tu_finish("nn/test_kernels_lm");
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"rope_grad", test_rope_grad},     {"rope_vs_ref", test_rope_vs_ref},
        {"rope_known", test_rope_known},   {"swiglu_grad", test_swiglu_grad},
        {"swiglu_vs_ref", test_swiglu_vs_ref}, {"clip", test_clip},
    };
    // Every test on the kernels this CPU picks, then on the portable scalar path.
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) ef_cpu_limit(0);
        for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
            int before = tu_failures;
            tests[i].fn();
            printf("  %-16s %-6s %s\n", tests[i].name, pass ? "scalar" : "native",
                   tu_failures == before ? "ok" : "FAILED");
        }
    }
    ef_pool_free(pools[1]);
    ef_pool_free(pools[2]);
    return tu_finish("nn/test_kernels_lm");
}
