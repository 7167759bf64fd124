/*
 * Tests of the transformer kernels: GELU, residual add, embedding,
 * LayerNorm, RMSNorm and causal grouped-query attention. For each op:
 * finite-difference gradient checks (tests/nn/gradcheck.h) of the optimized
 * and the reference kernels on small and odd shapes; optimized against
 * reference forward and backward with no pool and 2- and 3-thread pools;
 * bit-identical repeat runs; plus op-specific properties (embedding range
 * errors, attention causality and row sums). Negative controls at the end
 * show the gradient checker rejects wrong backward passes.
 *
 * Optimized vs reference tolerance: every element within
 * 1e-5 * (|ref| + rms(ref)), i.e. 1e-5 relative, with the buffer's RMS as
 * the floor for elements that are small through cancellation.
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
#include "nn/fastmath_internal.h"
#include "test_util.h"

#define OPT_RTOL 1e-5

static ef_pool *pools[3]; // no pool, 2 threads, 3 threads
#define N_POOLS 3

/* ---- helpers ------------------------------------------------------------ */

static int same_bits(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof(float)) == 0;
}

// a (optimized) against r (reference), (n): every element within
// rtol * (|r| + rms(r)).
static double worst_close = 0; // printed at the end, to show the margin
static void check_close(const char *what, const float *a, const float *r, size_t n,
                        double rtol) {
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += (double)r[i] * r[i];
    double rms = n ? sqrt(ss / (double)n) : 0.0;
    double worst = 0.0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - r[i]) / (fabs(r[i]) + rms + 1e-30);
        if (isnan(e)) e = INFINITY;
        if (e > worst) {
            worst = e;
            wi = i;
        }
    }
    if (worst > worst_close) worst_close = worst;
    CHECK_MSG(worst <= rtol, "%s: element %zu optimized %.9g reference %.9g (error %.3g)", what,
              wi, n ? a[wi] : 0.0, n ? r[wi] : 0.0, worst);
}

static const char *pool_name(int p) {
    static const char *names[N_POOLS] = {"no pool", "2 threads", "3 threads"};
    return names[p];
}

/* ---- fast exp ----------------------------------------------------------- */

static void test_fast_exp(void) {
    double worst = 0.0, worst_x = 0.0;
    for (double x = -87.0; x <= 88.0; x += 1.37e-4) {
        float xf = (float)x;
        double e = fabs(ef__expf(xf) - exp((double)xf)) / exp((double)xf);
        if (e > worst) {
            worst = e;
            worst_x = xf;
        }
    }
    CHECK_MSG(worst < 3e-7, "ef__expf: relative error %.3g at x = %.9g", worst, worst_x);
    CHECK(ef__expf(0.0f) == 1.0f);
    float lo = ef__expf(-1e30f), hi = ef__expf(1e30f), nan_in = ef__expf(NAN);
    CHECK(lo > 0.0f && lo < 1e-37f);
    CHECK(isfinite(hi) && hi > 1e38f);
    CHECK(isfinite(nan_in));
    CHECK(ef__expf(-INFINITY) == lo && ef__expf(INFINITY) == hi);
}

/* ---- GELU --------------------------------------------------------------- */

typedef struct gelu_ctx {
    float *inp, *out, *dinp, *dout;
    size_t n;
    int ref;
} gelu_ctx;

static void gelu_fwd(void *vc) {
    gelu_ctx *c = vc;
    (c->ref ? ef_gelu_forward_ref : ef_gelu_forward)(c->out, c->inp, c->n);
}

static void gelu_bwd(void *vc) {
    gelu_ctx *c = vc;
    (c->ref ? ef_gelu_backward_ref : ef_gelu_backward)(c->dinp, c->dout, c->inp, c->n);
}

static void test_gelu(void) {
    static const size_t sizes[] = {1, 7, 64, 1000};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
        for (int ref = 0; ref < 2; ref++) {
            size_t n = sizes[s];
            gelu_ctx c = {filled(n, 0, 2), falloc(n), falloc(n), falloc(n), n, ref};
            gc_input in[1] = {{"inp", c.inp, c.dinp, n}};
            gc_op op = {ref ? "gelu_ref" : "gelu", &c, gelu_fwd, gelu_bwd, c.out, c.dout, n, in, 1};
            CHECK_MSG(gc_check(&op, NULL, NULL) == 0, "gelu gradcheck n=%zu ref=%d", n, ref);
            free(c.inp);
            free(c.out);
            free(c.dinp);
            free(c.dout);
        }

    // Optimized vs reference, including tails where tanh saturates.
    size_t n = 4099;
    float *x = filled(n, 0, 3);
    static const float special[] = {0.0f,  -0.0f, 1e-6f, -1e-6f, 5.0f,  -5.0f,  10.0f,
                                    -10.0f, 20.0f, -20.0f, 100.0f, -100.0f, 1e4f, -1e4f};
    memcpy(x, special, sizeof special);
    float *dout = filled(n, 0, 1), *g0 = filled(n, 0, 1);
    float *out = falloc(n), *out_r = falloc(n), *din = dup(g0, n), *din_r = dup(g0, n);
    ef_gelu_forward(out, x, n);
    ef_gelu_forward_ref(out_r, x, n);
    check_close("gelu forward", out, out_r, n, OPT_RTOL);
    ef_gelu_backward(din, dout, x, n);
    ef_gelu_backward_ref(din_r, dout, x, n);
    check_close("gelu backward", din, din_r, n, OPT_RTOL);
    int finite = 1;
    for (size_t i = 0; i < n; i++) finite &= isfinite(out[i]) && isfinite(din[i]);
    CHECK(finite);
    // In place gives the same bits as out of place.
    float *y = dup(x, n);
    ef_gelu_forward(y, y, n);
    CHECK(same_bits(y, out, n));
    // Repeat runs are bit-identical.
    float *din2 = dup(g0, n);
    ef_gelu_backward(din2, dout, x, n);
    CHECK(same_bits(din, din2, n));
    ef_gelu_backward(NULL, dout, x, n); // skipped, must not crash
    free(x);
    free(dout);
    free(g0);
    free(out);
    free(out_r);
    free(din);
    free(din_r);
    free(y);
    free(din2);
}

/* ---- residual ----------------------------------------------------------- */

typedef struct res_ctx {
    float *a, *b, *out, *da, *db, *dout;
    size_t n;
    int ref;
} res_ctx;

static void res_fwd(void *vc) {
    res_ctx *c = vc;
    (c->ref ? ef_residual_forward_ref : ef_residual_forward)(c->out, c->a, c->b, c->n);
}

static void res_bwd(void *vc) {
    res_ctx *c = vc;
    (c->ref ? ef_residual_backward_ref : ef_residual_backward)(c->da, c->db, c->dout, c->n);
}

static void test_residual(void) {
    static const size_t sizes[] = {1, 5, 64};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
        for (int ref = 0; ref < 2; ref++) {
            size_t n = sizes[s];
            res_ctx c = {filled(n, 0, 1), filled(n, 0, 1), falloc(n), falloc(n), falloc(n),
                         falloc(n), n, ref};
            gc_input in[2] = {{"a", c.a, c.da, n}, {"b", c.b, c.db, n}};
            gc_op op = {ref ? "residual_ref" : "residual", &c, res_fwd, res_bwd, c.out, c.dout,
                        n, in, 2};
            CHECK_MSG(gc_check(&op, NULL, NULL) == 0, "residual gradcheck n=%zu", n);
            free(c.a);
            free(c.b);
            free(c.out);
            free(c.da);
            free(c.db);
            free(c.dout);
        }

    size_t n = 1031;
    float *a = filled(n, 0, 1), *b = filled(n, 0, 1), *dout = filled(n, 0, 1);
    float *g0 = filled(n, 0, 1);
    float *out = falloc(n), *out_r = falloc(n);
    ef_residual_forward(out, a, b, n);
    ef_residual_forward_ref(out_r, a, b, n);
    CHECK(same_bits(out, out_r, n)); // one rounding either way
    float *aa = dup(a, n);
    ef_residual_forward(aa, aa, b, n); // in place, x = x + f(x)
    CHECK(same_bits(aa, out, n));
    float *da = dup(g0, n), *db = dup(g0, n), *da_r = dup(g0, n), *db_r = dup(g0, n);
    ef_residual_backward(da, db, dout, n);
    ef_residual_backward_ref(da_r, db_r, dout, n);
    CHECK(same_bits(da, da_r, n) && same_bits(db, db_r, n));
    float *da2 = dup(g0, n);
    ef_residual_backward(da2, NULL, dout, n);
    CHECK(same_bits(da2, da, n));
    float *db2 = dup(g0, n);
    ef_residual_backward(NULL, db2, dout, n);
    CHECK(same_bits(db2, db, n));
    free(a);
    free(b);
    free(dout);
    free(g0);
    free(out);
    free(out_r);
    free(aa);
    free(da);
    free(db);
    free(da_r);
    free(db_r);
    free(da2);
    free(db2);
}

/* ---- embedding ------------------------------------------------------------ */

typedef struct emb_ctx {
    float *table, *out, *dtable, *dout;
    int32_t *ids;
    int N, V, C, ref;
} emb_ctx;

static void emb_fwd(void *vc) {
    emb_ctx *c = vc;
    ef_status st = (c->ref ? ef_embedding_forward_ref : ef_embedding_forward)(
        c->out, c->ids, c->table, c->N, c->V, c->C);
    if (st != EF_OK) abort(); // ids are valid here
}

static void emb_bwd(void *vc) {
    emb_ctx *c = vc;
    (c->ref ? ef_embedding_backward_ref : ef_embedding_backward)(c->dtable, c->dout, c->ids,
                                                                 c->N, c->C);
}

static void test_embedding(void) {
    static const int shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {16, 4, 9}, {3, 10, 8}}; // N, V, C
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int ref = 0; ref < 2; ref++) {
            int N = shapes[s][0], V = shapes[s][1], C = shapes[s][2];
            emb_ctx c = {filled((size_t)V * C, 0, 1), falloc((size_t)N * C),
                         falloc((size_t)V * C), falloc((size_t)N * C), NULL, N, V, C, ref};
            c.ids = malloc((size_t)N * sizeof(int32_t));
            // N > V forces repeated ids, so the scatter-add must accumulate.
            for (int i = 0; i < N; i++) c.ids[i] = (int32_t)ef_rng_below(&rng, (uint64_t)V);
            gc_input in[1] = {{"table", c.table, c.dtable, (size_t)V * C}};
            gc_op op = {ref ? "embedding_ref" : "embedding", &c, emb_fwd, emb_bwd, c.out,
                        c.dout, (size_t)N * C, in, 1};
            CHECK_MSG(gc_check(&op, NULL, NULL) == 0, "embedding gradcheck N=%d V=%d C=%d", N,
                      V, C);
            free(c.table);
            free(c.out);
            free(c.dtable);
            free(c.dout);
            free(c.ids);
        }

    int N = 50, V = 13, C = 37;
    float *table = filled((size_t)V * C, 0, 1), *dout = filled((size_t)N * C, 0, 1);
    float *g0 = filled((size_t)V * C, 0, 1);
    int32_t ids[50];
    for (int i = 0; i < N; i++) ids[i] = (int32_t)ef_rng_below(&rng, (uint64_t)V);
    float *out = falloc((size_t)N * C), *out_r = falloc((size_t)N * C);
    CHECK_OK(ef_embedding_forward(out, ids, table, N, V, C));
    CHECK_OK(ef_embedding_forward_ref(out_r, ids, table, N, V, C));
    CHECK(same_bits(out, out_r, (size_t)N * C));
    float *dt = dup(g0, (size_t)V * C), *dt_r = dup(g0, (size_t)V * C);
    ef_embedding_backward(dt, dout, ids, N, C);
    ef_embedding_backward_ref(dt_r, dout, ids, N, C);
    CHECK(same_bits(dt, dt_r, (size_t)V * C));
    ef_embedding_backward(NULL, dout, ids, N, C);

    // Out-of-range ids: EF_ERR_RANGE, a message, and out untouched.
    static const int32_t bad[] = {13, -1, INT32_MAX, INT32_MIN};
    for (size_t j = 0; j < sizeof bad / sizeof *bad; j++)
        for (int ref = 0; ref < 2; ref++) {
            int32_t ids_bad[50];
            memcpy(ids_bad, ids, sizeof ids_bad);
            ids_bad[N / 2] = bad[j];
            float *o = falloc((size_t)N * C);
            for (int i = 0; i < N * C; i++) o[i] = -7.25f;
            float *o0 = dup(o, (size_t)N * C);
            ef_clear_error();
            ef_status st = (ref ? ef_embedding_forward_ref : ef_embedding_forward)(
                o, ids_bad, table, N, V, C);
            CHECK_MSG(st == EF_ERR_RANGE, "id %d ref=%d: status %d", (int)bad[j], ref, (int)st);
            CHECK(same_bits(o, o0, (size_t)N * C));
            CHECK(strlen(ef_last_error()) > 0);
            free(o);
            free(o0);
        }
    free(table);
    free(dout);
    free(g0);
    free(out);
    free(out_r);
    free(dt);
    free(dt_r);
}

/* ---- LayerNorm ------------------------------------------------------------ */

typedef struct ln_ctx {
    float *inp, *weight, *bias, *out, *mean, *rstd;
    float *dinp, *dweight, *dbias, *dout;
    int N, C, ref;
    ef_pool *pool;
    float *scaled_dout; // negative control only: dout * 1.05
} ln_ctx;

static void ln_fwd(void *vc) {
    ln_ctx *c = vc;
    if (c->ref)
        ef_layernorm_forward_ref(c->out, c->mean, c->rstd, c->inp, c->weight, c->bias, c->N,
                                 c->C, 1e-5f);
    else
        ef_layernorm_forward(c->out, c->mean, c->rstd, c->inp, c->weight, c->bias, c->N, c->C,
                             1e-5f, c->pool);
}

static void ln_bwd(void *vc) {
    ln_ctx *c = vc;
    if (c->ref)
        ef_layernorm_backward_ref(c->dinp, c->dweight, c->dbias, c->dout, c->inp, c->weight,
                                  c->mean, c->rstd, c->N, c->C);
    else
        ef_layernorm_backward(c->dinp, c->dweight, c->dbias, c->dout, c->inp, c->weight,
                              c->mean, c->rstd, c->N, c->C, c->pool);
}

static ln_ctx ln_make(int N, int C, int with_bias) {
    size_t nc = (size_t)N * C;
    ln_ctx c = {0};
    c.N = N;
    c.C = C;
    c.inp = filled(nc, 0.5, 1.5);
    c.weight = filled((size_t)C, 1, 0.5);
    c.bias = with_bias ? filled((size_t)C, 0, 0.5) : NULL;
    c.out = falloc(nc);
    c.mean = falloc((size_t)N);
    c.rstd = falloc((size_t)N);
    c.dinp = falloc(nc);
    c.dweight = falloc((size_t)C);
    c.dbias = with_bias ? falloc((size_t)C) : NULL;
    c.dout = falloc(nc);
    return c;
}

static void ln_free(ln_ctx *c) {
    free(c->inp);
    free(c->weight);
    free(c->bias);
    free(c->out);
    free(c->mean);
    free(c->rstd);
    free(c->dinp);
    free(c->dweight);
    free(c->dbias);
    free(c->dout);
    free(c->scaled_dout);
}

static void test_layernorm_grad(void) {
    static const int shapes[][2] = {{1, 1}, {1, 8}, {3, 5}, {4, 17}, {2, 64}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int bias = 0; bias < 2; bias++)
            for (int ref = 0; ref < 2; ref++) {
                int N = shapes[s][0], C = shapes[s][1];
                ln_ctx c = ln_make(N, C, bias);
                c.ref = ref;
                c.pool = pools[1];
                gc_input in[3] = {{"inp", c.inp, c.dinp, (size_t)N * C},
                                  {"weight", c.weight, c.dweight, (size_t)C},
                                  {"bias", c.bias, c.dbias, (size_t)C}};
                gc_op op = {ref ? "layernorm_ref" : "layernorm", &c, ln_fwd, ln_bwd, c.out,
                            c.dout, (size_t)N * C, in, bias ? 3 : 2};
                CHECK_MSG(gc_check(&op, NULL, NULL) == 0, "layernorm gradcheck N=%d C=%d bias=%d",
                          N, C, bias);
                ln_free(&c);
            }
}

static void test_layernorm_vs_ref(void) {
    static const int shapes[][2] = {{1, 1}, {5, 3}, {37, 67}, {64, 256}, {2, 768}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int N = shapes[s][0], C = shapes[s][1];
        size_t nc = (size_t)N * C;
        ln_ctx r = ln_make(N, C, 1);
        fill(r.dout, nc, 0, 1);
        float *g0 = filled(nc, 0, 1), *g0c = filled((size_t)C, 0, 1);
        memcpy(r.dinp, g0, nc * sizeof(float));
        memcpy(r.dweight, g0c, (size_t)C * sizeof(float));
        memcpy(r.dbias, g0c, (size_t)C * sizeof(float));
        ef_layernorm_forward_ref(r.out, r.mean, r.rstd, r.inp, r.weight, r.bias, N, C, 1e-5f);
        ef_layernorm_backward_ref(r.dinp, r.dweight, r.dbias, r.dout, r.inp, r.weight, r.mean,
                                  r.rstd, N, C);
        float *first[5] = {0}; // out, dinp, dweight, dbias of the no-pool run
        for (int p = 0; p < N_POOLS; p++)
            for (int rep = 0; rep < 2; rep++) {
                float *out = falloc(nc), *mean = falloc((size_t)N), *rstd = falloc((size_t)N);
                float *dinp = dup(g0, nc), *dw = dup(g0c, (size_t)C), *db = dup(g0c, (size_t)C);
                ef_layernorm_forward(out, mean, rstd, r.inp, r.weight, r.bias, N, C, 1e-5f,
                                     pools[p]);
                ef_layernorm_backward(dinp, dw, db, r.dout, r.inp, r.weight, mean, rstd, N, C,
                                      pools[p]);
                char what[96];
                snprintf(what, sizeof what, "layernorm %dx%d %s", N, C, pool_name(p));
                if (rep == 0) {
                    check_close(what, out, r.out, nc, OPT_RTOL);
                    check_close(what, mean, r.mean, (size_t)N, OPT_RTOL);
                    check_close(what, rstd, r.rstd, (size_t)N, OPT_RTOL);
                    check_close(what, dinp, r.dinp, nc, OPT_RTOL);
                    check_close(what, dw, r.dweight, (size_t)C, OPT_RTOL);
                    check_close(what, db, r.dbias, (size_t)C, OPT_RTOL);
                }
                if (p == 0 && rep == 0) {
                    first[0] = dup(out, nc);
                    first[1] = dup(dinp, nc);
                    first[2] = dup(dw, (size_t)C);
                    first[3] = dup(db, (size_t)C);
                    first[4] = dup(rstd, (size_t)N);
                } else {
                    // Repeat runs are bit-identical; so are different thread
                    // counts (rows and columns are summed in a fixed order),
                    // which is stronger than the header promises.
                    CHECK_MSG(same_bits(out, first[0], nc) && same_bits(dinp, first[1], nc) &&
                                  same_bits(dw, first[2], (size_t)C) &&
                                  same_bits(db, first[3], (size_t)C) &&
                                  same_bits(rstd, first[4], (size_t)N),
                              "%s run %d not bit-identical", what, rep);
                }
                // NULL gradients are skipped; the others are unchanged.
                if (rep == 1) {
                    float *dinp2 = dup(g0, nc), *dw2 = dup(g0c, (size_t)C);
                    float *db2 = dup(g0c, (size_t)C);
                    ef_layernorm_backward(NULL, dw2, NULL, r.dout, r.inp, r.weight, mean, rstd,
                                          N, C, pools[p]);
                    ef_layernorm_backward(dinp2, NULL, db2, r.dout, r.inp, r.weight, mean, rstd,
                                          N, C, pools[p]);
                    CHECK(same_bits(dinp2, dinp, nc) && same_bits(dw2, dw, (size_t)C) &&
                          same_bits(db2, db, (size_t)C));
                    ef_layernorm_backward(NULL, NULL, NULL, r.dout, r.inp, r.weight, mean, rstd,
                                          N, C, pools[p]);
                    free(dinp2);
                    free(dw2);
                    free(db2);
                }
                free(out);
                free(mean);
                free(rstd);
                free(dinp);
                free(dw);
                free(db);
            }
        // Bias-free forward matches the reference with a zero bias.
        float *o1 = falloc(nc), *o2 = falloc(nc), *m = falloc((size_t)N), *rs = falloc((size_t)N);
        float *zero = falloc((size_t)C);
        ef_layernorm_forward(o1, m, rs, r.inp, r.weight, NULL, N, C, 1e-5f, pools[1]);
        ef_layernorm_forward_ref(o2, m, rs, r.inp, r.weight, zero, N, C, 1e-5f);
        check_close("layernorm without bias", o1, o2, nc, OPT_RTOL);
        free(o1);
        free(o2);
        free(m);
        free(rs);
        free(zero);
        for (int i = 0; i < 5; i++) free(first[i]);
        free(g0);
        free(g0c);
        ln_free(&r);
    }
}

/* ---- RMSNorm -------------------------------------------------------------- */

typedef struct rms_ctx {
    float *inp, *weight, *out, *rstd, *dinp, *dweight, *dout;
    int N, C, ref;
    ef_pool *pool;
} rms_ctx;

static void rms_fwd(void *vc) {
    rms_ctx *c = vc;
    if (c->ref)
        ef_rmsnorm_forward_ref(c->out, c->rstd, c->inp, c->weight, c->N, c->C, 1e-5f);
    else
        ef_rmsnorm_forward(c->out, c->rstd, c->inp, c->weight, c->N, c->C, 1e-5f, c->pool);
}

static void rms_bwd(void *vc) {
    rms_ctx *c = vc;
    if (c->ref)
        ef_rmsnorm_backward_ref(c->dinp, c->dweight, c->dout, c->inp, c->weight, c->rstd, c->N,
                                c->C);
    else
        ef_rmsnorm_backward(c->dinp, c->dweight, c->dout, c->inp, c->weight, c->rstd, c->N, c->C,
                            c->pool);
}

static rms_ctx rms_make(int N, int C) {
    size_t nc = (size_t)N * C;
    rms_ctx c = {filled(nc, 0.3, 1.2), filled((size_t)C, 1, 0.5), falloc(nc), falloc((size_t)N),
                 falloc(nc), falloc((size_t)C), falloc(nc), N, C, 0, NULL};
    return c;
}

static void rms_free(rms_ctx *c) {
    free(c->inp);
    free(c->weight);
    free(c->out);
    free(c->rstd);
    free(c->dinp);
    free(c->dweight);
    free(c->dout);
}

static void test_rmsnorm(void) {
    static const int gshapes[][2] = {{1, 1}, {1, 8}, {3, 5}, {4, 17}, {2, 64}};
    for (size_t s = 0; s < sizeof gshapes / sizeof *gshapes; s++)
        for (int ref = 0; ref < 2; ref++) {
            int N = gshapes[s][0], C = gshapes[s][1];
            rms_ctx c = rms_make(N, C);
            c.ref = ref;
            c.pool = pools[1];
            gc_input in[2] = {{"inp", c.inp, c.dinp, (size_t)N * C},
                              {"weight", c.weight, c.dweight, (size_t)C}};
            gc_op op = {ref ? "rmsnorm_ref" : "rmsnorm", &c, rms_fwd, rms_bwd, c.out, c.dout,
                        (size_t)N * C, in, 2};
            CHECK_MSG(gc_check(&op, NULL, NULL) == 0, "rmsnorm gradcheck N=%d C=%d", N, C);
            rms_free(&c);
        }

    static const int shapes[][2] = {{1, 1}, {5, 3}, {37, 67}, {64, 256}, {2, 768}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int N = shapes[s][0], C = shapes[s][1];
        size_t nc = (size_t)N * C;
        rms_ctx r = rms_make(N, C);
        fill(r.dout, nc, 0, 1);
        float *g0 = filled(nc, 0, 1), *g0c = filled((size_t)C, 0, 1);
        memcpy(r.dinp, g0, nc * sizeof(float));
        memcpy(r.dweight, g0c, (size_t)C * sizeof(float));
        ef_rmsnorm_forward_ref(r.out, r.rstd, r.inp, r.weight, N, C, 1e-5f);
        ef_rmsnorm_backward_ref(r.dinp, r.dweight, r.dout, r.inp, r.weight, r.rstd, N, C);
        float *first[3] = {0};
        for (int p = 0; p < N_POOLS; p++)
            for (int rep = 0; rep < 2; rep++) {
                float *out = falloc(nc), *rstd = falloc((size_t)N);
                float *dinp = dup(g0, nc), *dw = dup(g0c, (size_t)C);
                ef_rmsnorm_forward(out, rstd, r.inp, r.weight, N, C, 1e-5f, pools[p]);
                ef_rmsnorm_backward(dinp, dw, r.dout, r.inp, r.weight, rstd, N, C, pools[p]);
                char what[96];
                snprintf(what, sizeof what, "rmsnorm %dx%d %s", N, C, pool_name(p));
                if (rep == 0) {
                    check_close(what, out, r.out, nc, OPT_RTOL);
                    check_close(what, rstd, r.rstd, (size_t)N, OPT_RTOL);
                    check_close(what, dinp, r.dinp, nc, OPT_RTOL);
                    check_close(what, dw, r.dweight, (size_t)C, OPT_RTOL);
                }
                if (p == 0 && rep == 0) {
                    first[0] = dup(out, nc);
                    first[1] = dup(dinp, nc);
                    first[2] = dup(dw, (size_t)C);
                } else {
                    CHECK_MSG(same_bits(out, first[0], nc) && same_bits(dinp, first[1], nc) &&
                                  same_bits(dw, first[2], (size_t)C),
                              "%s run %d not bit-identical", what, rep);
                }
                if (rep == 1) {
                    float *dinp2 = dup(g0, nc), *dw2 = dup(g0c, (size_t)C);
                    ef_rmsnorm_backward(NULL, dw2, r.dout, r.inp, r.weight, rstd, N, C, pools[p]);
                    ef_rmsnorm_backward(dinp2, NULL, r.dout, r.inp, r.weight, rstd, N, C,
                                        pools[p]);
                    CHECK(same_bits(dinp2, dinp, nc) && same_bits(dw2, dw, (size_t)C));
                    free(dinp2);
                    free(dw2);
                }
                free(out);
                free(rstd);
                free(dinp);
                free(dw);
            }
        for (int i = 0; i < 3; i++) free(first[i]);
        free(g0);
        free(g0c);
        rms_free(&r);
    }
}

/* ---- attention ------------------------------------------------------------ */

typedef struct att_shape {
    int B, T, NH, NKV, HS;
} att_shape;

typedef struct att_ctx {
    float *q, *k, *v, *out, *att, *dq, *dk, *dv, *dout, *work;
    att_shape s;
    int ref;
    ef_pool *pool;
    int wrong; // negative control: perturb one element of dk
} att_ctx;

static size_t att_nq(att_shape s) { return (size_t)s.B * s.T * s.NH * s.HS; }
static size_t att_nkv(att_shape s) { return (size_t)s.B * s.T * s.NKV * s.HS; }
static size_t att_natt(att_shape s) { return (size_t)s.B * s.NH * s.T * s.T; }

// Exactly the advertised workspace, so AddressSanitizer sees any overrun.
static float *att_work(att_shape s, ef_pool *pool) {
    size_t n = ef_attention_workspace(s.B, s.T, s.NH, s.NKV, s.HS, ef_pool_threads(pool));
    float *w = malloc((n ? n : 1) * sizeof(float));
    if (!w) exit(1);
    return w;
}

static void att_fwd(void *vc) {
    att_ctx *c = vc;
    att_shape s = c->s;
    if (c->ref)
        ef_attention_forward_ref(c->out, c->att, c->q, c->k, c->v, s.B, s.T, s.NH, s.NKV, s.HS);
    else
        ef_attention_forward(c->out, c->att, c->q, c->k, c->v, s.B, s.T, s.NH, s.NKV, s.HS,
                             c->pool);
}

static void att_bwd(void *vc) {
    att_ctx *c = vc;
    att_shape s = c->s;
    if (c->ref)
        ef_attention_backward_ref(c->dq, c->dk, c->dv, c->dout, c->att, c->q, c->k, c->v, s.B,
                                  s.T, s.NH, s.NKV, s.HS);
    else
        ef_attention_backward(c->dq, c->dk, c->dv, c->dout, c->att, c->q, c->k, c->v, s.B, s.T,
                              s.NH, s.NKV, s.HS, c->work, c->pool);
    if (c->wrong) c->dk[att_nkv(s) / 2] += 0.05f;
}

static att_ctx att_make(att_shape s, ef_pool *pool) {
    att_ctx c = {0};
    c.s = s;
    c.pool = pool;
    c.q = filled(att_nq(s), 0, 1);
    c.k = filled(att_nkv(s), 0, 1);
    c.v = filled(att_nkv(s), 0, 1);
    c.out = falloc(att_nq(s));
    c.att = falloc(att_natt(s));
    c.dq = falloc(att_nq(s));
    c.dk = falloc(att_nkv(s));
    c.dv = falloc(att_nkv(s));
    c.dout = falloc(att_nq(s));
    c.work = att_work(s, pool);
    return c;
}

static void att_free(att_ctx *c) {
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->out);
    free(c->att);
    free(c->dq);
    free(c->dk);
    free(c->dv);
    free(c->dout);
    free(c->work);
}

static void test_attention_grad(void) {
    static const att_shape shapes[] = {
        {1, 1, 1, 1, 1}, {1, 1, 4, 2, 3}, // T = 1
        {2, 3, 4, 2, 5}, {1, 5, 4, 1, 3}, // GQA: NH=4 with NKV=2 and NKV=1
        {2, 4, 3, 3, 4}, {1, 6, 2, 2, 8}, // NH == NKV
        {2, 5, 6, 3, 2}, {1, 4, 4, 4, 7}, {1, 7, 8, 2, 9},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        for (int variant = 0; variant < 3; variant++) {
            // variant 0: optimized, no pool; 1: optimized, 2 threads; 2: reference
            att_shape s = shapes[i];
            att_ctx c = att_make(s, variant == 1 ? pools[1] : NULL);
            c.ref = variant == 2;
            gc_input in[3] = {{"q", c.q, c.dq, att_nq(s)},
                              {"k", c.k, c.dk, att_nkv(s)},
                              {"v", c.v, c.dv, att_nkv(s)}};
            gc_op op = {c.ref ? "attention_ref" : "attention", &c, att_fwd, att_bwd, c.out,
                        c.dout, att_nq(s), in, 3};
            CHECK_MSG(gc_check(&op, NULL, NULL) == 0,
                      "attention gradcheck B=%d T=%d NH=%d NKV=%d HS=%d variant %d", s.B, s.T,
                      s.NH, s.NKV, s.HS, variant);
            att_free(&c);
        }
}

static void test_attention_vs_ref(void) {
    static const att_shape shapes[] = {{1, 1, 1, 1, 1},  {2, 3, 4, 2, 5},  {1, 5, 4, 1, 3},
                                       {3, 7, 6, 6, 5},  {2, 33, 4, 2, 16}, {1, 64, 8, 1, 8},
                                       {2, 16, 4, 4, 64}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        att_shape s = shapes[i];
        size_t nq = att_nq(s), nkv = att_nkv(s), na = att_natt(s);
        att_ctx r = att_make(s, NULL);
        fill(r.dout, nq, 0, 1);
        float *g0q = filled(nq, 0, 1), *g0k = filled(nkv, 0, 1), *g0v = filled(nkv, 0, 1);
        memcpy(r.dq, g0q, nq * sizeof(float));
        memcpy(r.dk, g0k, nkv * sizeof(float));
        memcpy(r.dv, g0v, nkv * sizeof(float));
        ef_attention_forward_ref(r.out, r.att, r.q, r.k, r.v, s.B, s.T, s.NH, s.NKV, s.HS);
        ef_attention_backward_ref(r.dq, r.dk, r.dv, r.dout, r.att, r.q, r.k, r.v, s.B, s.T, s.NH,
                                  s.NKV, s.HS);
        float *first[5] = {0};
        for (int p = 0; p < N_POOLS; p++)
            for (int rep = 0; rep < 2; rep++) {
                float *out = falloc(nq), *att = falloc(na), *work = att_work(s, pools[p]);
                for (size_t j = 0; j < na; j++) att[j] = 7.0f; // must all be overwritten
                float *dq = dup(g0q, nq), *dk = dup(g0k, nkv), *dv = dup(g0v, nkv);
                ef_attention_forward(out, att, r.q, r.k, r.v, s.B, s.T, s.NH, s.NKV, s.HS,
                                     pools[p]);
                ef_attention_backward(dq, dk, dv, r.dout, att, r.q, r.k, r.v, s.B, s.T, s.NH,
                                      s.NKV, s.HS, work, pools[p]);
                char what[128];
                snprintf(what, sizeof what, "attention B=%d T=%d NH=%d NKV=%d HS=%d %s", s.B,
                         s.T, s.NH, s.NKV, s.HS, pool_name(p));
                if (rep == 0) {
                    check_close(what, out, r.out, nq, OPT_RTOL);
                    check_close(what, att, r.att, na, OPT_RTOL);
                    check_close(what, dq, r.dq, nq, OPT_RTOL);
                    check_close(what, dk, r.dk, nkv, OPT_RTOL);
                    check_close(what, dv, r.dv, nkv, OPT_RTOL);
                }
                if (p == 0 && rep == 0) {
                    first[0] = dup(out, nq);
                    first[1] = dup(att, na);
                    first[2] = dup(dq, nq);
                    first[3] = dup(dk, nkv);
                    first[4] = dup(dv, nkv);
                } else {
                    // Bit-identical on repeat, and across thread counts.
                    CHECK_MSG(same_bits(out, first[0], nq) && same_bits(att, first[1], na) &&
                                  same_bits(dq, first[2], nq) && same_bits(dk, first[3], nkv) &&
                                  same_bits(dv, first[4], nkv),
                              "%s run %d not bit-identical", what, rep);
                }
                if (rep == 1) {
                    // Each gradient alone (the others NULL) gives the same bits.
                    float *dq2 = dup(g0q, nq), *dk2 = dup(g0k, nkv), *dv2 = dup(g0v, nkv);
                    ef_attention_backward(dq2, NULL, NULL, r.dout, att, r.q, r.k, r.v, s.B, s.T,
                                          s.NH, s.NKV, s.HS, work, pools[p]);
                    ef_attention_backward(NULL, dk2, NULL, r.dout, att, r.q, r.k, r.v, s.B, s.T,
                                          s.NH, s.NKV, s.HS, work, pools[p]);
                    ef_attention_backward(NULL, NULL, dv2, r.dout, att, r.q, r.k, r.v, s.B, s.T,
                                          s.NH, s.NKV, s.HS, work, pools[p]);
                    CHECK_MSG(same_bits(dq2, dq, nq) && same_bits(dk2, dk, nkv) &&
                                  same_bits(dv2, dv, nkv),
                              "%s: single-gradient runs differ", what);
                    free(dq2);
                    free(dk2);
                    free(dv2);
                }
                free(out);
                free(att);
                free(work);
                free(dq);
                free(dk);
                free(dv);
            }
        for (int j = 0; j < 5; j++) free(first[j]);
        free(g0q);
        free(g0k);
        free(g0v);
        att_free(&r);
    }
}

// Rows of att sum to 1 with exact zeros above the diagonal; changing k and v
// at time t0 leaves out at earlier times bit-for-bit unchanged.
static void test_attention_causal(void) {
    att_shape s = {2, 9, 4, 2, 6};
    size_t nq = att_nq(s), na = att_natt(s);
    for (int variant = 0; variant < 3; variant++) {
        att_ctx c = att_make(s, variant == 1 ? pools[1] : NULL);
        c.ref = variant == 2;
        for (size_t j = 0; j < na; j++) c.att[j] = 7.0f;
        att_fwd(&c);
        int zeros = 1;
        double worst = 0.0;
        for (size_t row = 0; row < (size_t)s.B * s.NH * s.T; row++) {
            int t = (int)(row % (size_t)s.T);
            double sum = 0.0;
            for (int t2 = 0; t2 < s.T; t2++) {
                float a = c.att[row * s.T + t2];
                if (t2 > t) zeros &= a == 0.0f;
                else sum += a;
            }
            if (fabs(sum - 1.0) > worst) worst = fabs(sum - 1.0);
        }
        CHECK_MSG(zeros, "variant %d: att above the diagonal not 0", variant);
        CHECK_MSG(worst < 1e-5, "variant %d: att row sums off by %.3g", variant, worst);

        float *out0 = dup(c.out, nq);
        int b = 1, t0 = 4;
        for (int h = 0; h < s.NKV; h++)
            for (int i = 0; i < s.HS; i++) {
                size_t off = ((size_t)b * s.T + t0) * s.NKV * s.HS + (size_t)h * s.HS + i;
                c.k[off] += 0.5f;
                c.v[off] -= 0.75f;
            }
        att_fwd(&c);
        size_t row = (size_t)s.NH * s.HS; // floats per time step of out
        CHECK(same_bits(c.out, out0, (size_t)s.T * row));                  // batch 0
        CHECK(same_bits(c.out + (size_t)s.T * row, out0 + (size_t)s.T * row, (size_t)t0 * row));
        CHECK(!same_bits(c.out + ((size_t)s.T + t0) * row, out0 + ((size_t)s.T + t0) * row, row));
        free(out0);
        att_free(&c);
    }
}

/* ---- negative controls for the gradient checker ---------------------------- */

static void ln_bwd_scaled(void *vc) {
    ln_ctx *c = vc;
    // Backward is linear in dout, so this scales every gradient by 1.05.
    for (size_t i = 0; i < (size_t)c->N * c->C; i++) c->scaled_dout[i] = 1.05f * c->dout[i];
    ef_layernorm_backward(c->dinp, c->dweight, c->dbias, c->scaled_dout, c->inp, c->weight,
                          c->mean, c->rstd, c->N, c->C, c->pool);
}

static void ln_bwd_overwrite(void *vc) {
    ln_ctx *c = vc;
    memset(c->dweight, 0, (size_t)c->C * sizeof(float)); // '=' instead of '+='
    ln_bwd(vc);
}

static void res_bwd_drop_db(void *vc) {
    res_ctx *c = vc;
    ef_residual_backward(c->da, NULL, c->dout, c->n);
}

static void gelu_bwd_scribble(void *vc) {
    gelu_ctx *c = vc;
    gelu_bwd(vc);
    c->inp[0] += 1.0f;
}

static int noisy_calls;
static void gelu_fwd_noisy(void *vc) {
    gelu_ctx *c = vc;
    gelu_fwd(vc);
    c->out[0] += (float)(noisy_calls++ % 2) * 1e-3f;
}

static void test_gradcheck_rejects(void) {
    gc_opts quiet = gc_defaults();
    quiet.verbose = -1;
    gc_report rep;

    // The correct backward passes, with margin.
    ln_ctx c = ln_make(4, 17, 1);
    c.scaled_dout = falloc((size_t)4 * 17);
    gc_input in[3] = {{"inp", c.inp, c.dinp, 4 * 17},
                      {"weight", c.weight, c.dweight, 17},
                      {"bias", c.bias, c.dbias, 17}};
    gc_op op = {"layernorm", &c, ln_fwd, ln_bwd, c.out, c.dout, 4 * 17, in, 3};
    CHECK(gc_check(&op, &quiet, &rep) == 0);
    CHECK_MSG(rep.max_ratio < 0.2 && rep.max_rel_l2 < 1e-3,
              "correct layernorm: ratio %.3g rel L2 %.3g", rep.max_ratio, rep.max_rel_l2);

    // Every gradient 5% too large: all three inputs fail, relative L2 ~ 0.05.
    op.backward = ln_bwd_scaled;
    CHECK(gc_check(&op, &quiet, &rep) == 3);
    CHECK_MSG(rep.max_rel_l2 > 0.04 && rep.max_rel_l2 < 0.06, "rel L2 %.3g", rep.max_rel_l2);

    // Assigning instead of accumulating fails (the harness pre-fills dx).
    op.backward = ln_bwd_overwrite;
    CHECK(gc_check(&op, &quiet, NULL) == 1);
    ln_free(&c);

    // One element of dk off by 0.05 fails, and only dk.
    att_shape s = {2, 4, 4, 2, 3};
    att_ctx a = att_make(s, pools[1]);
    a.wrong = 1;
    gc_input ain[3] = {{"q", a.q, a.dq, att_nq(s)},
                       {"k", a.k, a.dk, att_nkv(s)},
                       {"v", a.v, a.dv, att_nkv(s)}};
    gc_op aop = {"attention", &a, att_fwd, att_bwd, a.out, a.dout, att_nq(s), ain, 3};
    CHECK(gc_check(&aop, &quiet, NULL) == 1);
    a.wrong = 0;
    CHECK(gc_check(&aop, &quiet, NULL) == 0);
    att_free(&a);

    // A gradient that is never written fails.
    size_t n = 9;
    res_ctx r = {filled(n, 0, 1), filled(n, 0, 1), falloc(n), falloc(n), falloc(n), falloc(n),
                 n, 0};
    gc_input rin[2] = {{"a", r.a, r.da, n}, {"b", r.b, r.db, n}};
    gc_op rop = {"residual", &r, res_fwd, res_bwd_drop_db, r.out, r.dout, n, rin, 2};
    CHECK(gc_check(&rop, &quiet, NULL) == 1);
    free(r.a);
    free(r.b);
    free(r.out);
    free(r.da);
    free(r.db);
    free(r.dout);

    // A backward that writes its input, and a forward that is not a pure
    // function, are reported.
    gelu_ctx g = {filled(n, 0, 1), falloc(n), falloc(n), falloc(n), n, 0};
    gc_input gin[1] = {{"inp", g.inp, g.dinp, n}};
    gc_op gop = {"gelu", &g, gelu_fwd, gelu_bwd_scribble, g.out, g.dout, n, gin, 1};
    float *x0 = dup(g.inp, n);
    CHECK(gc_check(&gop, &quiet, NULL) >= 1);
    CHECK(same_bits(g.inp, x0, n)); // the harness restored it
    gop.backward = gelu_bwd;
    gop.forward = gelu_fwd_noisy;
    CHECK(gc_check(&gop, &quiet, NULL) >= 1);
    free(x0);
    free(g.inp);
    free(g.out);
    free(g.dinp);
    free(g.dout);
}

int main(void) {
    ef_rng_seed(&rng, 20240607);
    pools[0] = NULL;
    CHECK_OK(ef_pool_new(&pools[1], 2));
    CHECK_OK(ef_pool_new(&pools[2], 3));
    if (!pools[1] || !pools[2]) return tu_finish("nn/test_kernels_transformer");
    CHECK(ef_attention_workspace(2, 9, 4, 2, 6, 1) >= 9);
    CHECK(ef_attention_workspace(2, 9, 4, 2, 6, 3) >= 3 * ef_attention_workspace(2, 9, 4, 2, 6, 1));

    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"fast_exp", test_fast_exp},
        {"gelu", test_gelu},
        {"residual", test_residual},
        {"embedding", test_embedding},
        {"layernorm_grad", test_layernorm_grad},
        {"layernorm_vs_ref", test_layernorm_vs_ref},
        {"rmsnorm", test_rmsnorm},
        {"attention_grad", test_attention_grad},
        {"attention_vs_ref", test_attention_vs_ref},
        {"attention_causal", test_attention_causal},
        {"gradcheck_rejects", test_gradcheck_rejects},
    };
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
        int before = tu_failures;
        double t0 = ef_now();
        tests[i].fn();
        printf("  %-22s %s (%.2f s)\n", tests[i].name, tu_failures == before ? "ok" : "FAILED",
               ef_now() - t0);
    }

    ef_pool_free(pools[1]);
    ef_pool_free(pools[2]);
    printf("  worst optimized-vs-reference error: %.3g (bound %.0e)\n", worst_close, OPT_RTOL);
    return tu_finish("nn/test_kernels_transformer");
}
