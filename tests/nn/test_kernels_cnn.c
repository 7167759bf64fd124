/*
 * Tests of the CNN kernels: linear, conv2d (im2col + BLAS, Winograd
 * F(2x2, 5x5), direct), max-pool, ReLU and softmax cross-entropy. For each:
 *   - finite-difference gradient checks (tests/nn/gradcheck.h) of the
 *     optimized and reference kernels on small and odd shapes, with and
 *     without the optional gradients (dinp, bias);
 *   - optimized against reference forward and backward with no pool and
 *     1-, 2- and 3-thread pools, with the portable builds of the SIMD kernels
 *     (ef_cpu_limit(0)) and with AVX2 allowed, and for conv2d with the fast
 *     paths on and off (ef__conv2d_set_fast_paths(0) leaves im2col for all);
 *   - bit-identical repeat runs for a given configuration;
 *   - accumulate semantics: backward into gradient buffers pre-filled with
 *     random g0 equals g0 + (backward into zeroed buffers), per path;
 *   - the CNN's real layer shapes (conv1 1->32 5x5 on 28x28, conv2 32->64
 *     5x5 on 14x14, linear 3136->512, batch 32) against the reference on
 *     the first few images.
 * Conv workspaces are malloc'ed at exactly ef_conv2d_workspace() floats and
 * filled with NaN before every call: AddressSanitizer catches overruns, and
 * a kernel whose result depends on scratch it did not write shows NaN.
 *
 * Tolerances, optimized (a) against reference (r), per element with the
 * buffer's RMS as a floor for elements small through cancellation:
 *   plain paths (BLAS, direct, im2col, pooling, softmax):
 *       |a - r| <= 1e-5 (|r| + rms(r))
 *   Winograd: an exact rewrite of the direct sum, but the transforms
 *   (points 0, +-1, +-2, inf; G has entries 1/6, 1/24, 2/3 that float does
 *   not represent) scale intermediate values by up to ~10^2 before they
 *   cancel. Measured: relative L2 error ~1.5e-6 (worst 2.2e-6), with a heavy
 *   tail: the worst single element reaches ~1.7e-5 of |r| + rms(r) on the
 *   CNN's conv2 (printed at the end as a fraction of the bound). Bounds:
 *       |a - r| <= 5e-5 (|r| + rms(r))   and   ||a - r|| <= 5e-6 ||r||;
 *   a wrong coefficient, tile or channel is off by O(1).
 * The references accumulate backward sums in float (forward in double); at
 * the sizes used here their own error stays well under these bounds.
 * Accumulate check: |acc - (g0 + zero)| <= 4e-6 (|g0| + |zero| + rms(zero)),
 * a few float roundings (im2col adds up to KH*KW contributions in turn, so
 * the association differs); an overwrite (=) or a double add is off by
 * |g0| or |zero|, orders of magnitude more.
 * Max-pool and ReLU have no arithmetic to reorder: they must match the
 * reference bit for bit (including argmax, first maximum on ties).
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
#include "nn/conv2d_internal.h"
#include "test_util.h"

#define OPT_RTOL 1e-5
#define WINO_RTOL 5e-5
#define WINO_L2 5e-6
#define ACC_RTOL 4e-6

static int quick; // EDGEFL_TEST_QUICK: fewer configurations, smaller batches
#define N_POOLS 4
static ef_pool *pools[N_POOLS]; // no pool, 1, 2, 3 threads

/* ---- helpers ------------------------------------------------------------ */

static int same_bits(const void *a, const void *b, size_t bytes) {
    return memcmp(a, b, bytes) == 0;
}

static double rms(const float *x, size_t n) {
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    return n ? sqrt(ss / (double)n) : 0.0;
}

// Worst figures seen, printed at the end to show the margins.
static double worst_plain = 0, worst_wino = 0, worst_wino_l2 = 0, worst_acc = 0;

// Error of a (optimized) against r (reference), (n): the worst element's
// |a - r| / (|r| + rms(r)) (index in *wi) and ||a - r|| / ||r||.
static double close_error(const float *a, const float *r, size_t n, size_t *wi, double *rel_l2) {
    double rm = rms(r, n), worst = 0.0, e2 = 0.0, r2 = 0.0;
    *wi = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - r[i]);
        double e = d / (fabs(r[i]) + rm + 1e-30);
        if (isnan(e)) e = INFINITY;
        if (e > worst) worst = e, *wi = i;
        e2 += d * d;
        r2 += (double)r[i] * r[i];
    }
    *rel_l2 = sqrt(e2) / (sqrt(r2) + 1e-30);
    if (isnan(*rel_l2)) *rel_l2 = INFINITY;
    return worst;
}

// Checks a against r: every element within rtol * (|r| + rms(r)); with
// l2 > 0 also ||a - r|| <= l2 ||r||.
static int check_close(const char *what, const float *a, const float *r, size_t n, double rtol,
                       double l2) {
    size_t wi;
    double rel_l2, worst = close_error(a, r, n, &wi, &rel_l2);
    double *w = rtol > OPT_RTOL ? &worst_wino : &worst_plain;
    if (worst / rtol > *w) *w = worst / rtol;
    if (getenv("EDGEFL_TEST_VERBOSE"))
        printf("    %s: %zu elements, worst %.3g, rel L2 %.3g\n", what, n, worst, rel_l2);
    int ok = worst <= rtol;
    CHECK_MSG(ok, "%s: element %zu optimized %.9g reference %.9g (error %.3g > %.1g)", what, wi,
              n ? a[wi] : 0.0, n ? r[wi] : 0.0, worst, rtol);
    if (l2 > 0) {
        if (rel_l2 / l2 > worst_wino_l2) worst_wino_l2 = rel_l2 / l2;
        CHECK_MSG(rel_l2 <= l2, "%s: relative L2 error %.3g > %.1g", what, rel_l2, l2);
        ok &= rel_l2 <= l2;
    }
    return ok;
}

// Accumulate semantics: acc = backward into g0, zero = backward into 0.
static void check_accumulate(const char *what, const float *acc, const float *g0,
                             const float *zero, size_t n) {
    double rz = rms(zero, n), worst = 0.0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double want = (double)g0[i] + zero[i];
        double e = fabs(acc[i] - want) / (fabs(g0[i]) + fabs(zero[i]) + rz + 1e-30);
        if (isnan(e)) e = INFINITY;
        if (e > worst) worst = e, wi = i;
    }
    if (worst / ACC_RTOL > worst_acc) worst_acc = worst / ACC_RTOL;
    CHECK_MSG(worst <= ACC_RTOL,
              "%s: element %zu accumulated %.9g, g0 %.9g + gradient %.9g (error %.3g)", what, wi,
              n ? acc[wi] : 0.0, n ? g0[wi] : 0.0, n ? zero[wi] : 0.0, worst);
}

static const char *pool_name(int p) {
    static const char *names[N_POOLS] = {"no pool", "1 thread", "2 threads", "3 threads"};
    return names[p];
}

/* One run configuration: ISA, conv fast paths, pool. */
typedef struct config {
    int avx2, fast, pool;
} config;

static void apply(config c) {
    ef_cpu_limit(c.avx2 ? ~0u : 0u);
    ef__conv2d_set_fast_paths(c.fast);
}

static void restore(void) {
    ef_cpu_limit(~0u);
    ef__conv2d_set_fast_paths(1);
}

static void config_name(char *buf, size_t n, config c) {
    snprintf(buf, n, "%s, %s, %s", c.avx2 ? "avx2" : "portable", c.fast ? "fast" : "im2col",
             pool_name(c.pool));
}

/* ---- linear --------------------------------------------------------------- */

typedef struct lin_ctx {
    float *inp, *w, *b, *out, *dinp, *dw, *db, *dout;
    int N, IC, OC, ref;
    ef_pool *pool;
} lin_ctx;

static void lin_fwd(void *vc) {
    lin_ctx *c = vc;
    if (c->ref) ef_linear_forward_ref(c->out, c->inp, c->w, c->b, c->N, c->IC, c->OC);
    else ef_linear_forward(c->out, c->inp, c->w, c->b, c->N, c->IC, c->OC, c->pool);
}

static void lin_bwd(void *vc) {
    lin_ctx *c = vc;
    if (c->ref)
        ef_linear_backward_ref(c->dinp, c->dw, c->db, c->dout, c->inp, c->w, c->N, c->IC, c->OC);
    else
        ef_linear_backward(c->dinp, c->dw, c->db, c->dout, c->inp, c->w, c->N, c->IC, c->OC,
                           c->pool);
}

static lin_ctx lin_make(int N, int IC, int OC) {
    lin_ctx c = {0};
    c.N = N, c.IC = IC, c.OC = OC;
    size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
    c.inp = filled(ni, 0, 1);
    c.w = filled(nw, 0, 1.0 / sqrt(IC));
    c.b = filled((size_t)OC, 0, 0.5);
    c.out = falloc(no);
    c.dinp = falloc(ni);
    c.dw = falloc(nw);
    c.db = falloc((size_t)OC);
    c.dout = filled(no, 0, 1);
    return c;
}

static void lin_free(lin_ctx *c) {
    free(c->inp), free(c->w), free(c->b), free(c->out);
    free(c->dinp), free(c->dw), free(c->db), free(c->dout);
}

static void test_linear_grad(void) {
    static const int shapes[][3] = {{1, 1, 1}, {3, 5, 4}, {4, 17, 9}, {2, 33, 20}, {5, 8, 16}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int v = 0; v < 8; v++) {
            int ref = v & 1, bias = (v >> 1) & 1, din = (v >> 2) & 1;
            lin_ctx c = lin_make(shapes[s][0], shapes[s][1], shapes[s][2]);
            c.ref = ref;
            c.pool = pools[2];
            float *b = c.b, *db = c.db, *dinp = c.dinp;
            if (!bias) c.b = c.db = NULL;
            if (!din) c.dinp = NULL;
            gc_input in[3] = {{"inp", c.inp, c.dinp, (size_t)c.N * c.IC},
                              {"weight", c.w, c.dw, (size_t)c.OC * c.IC},
                              {"bias", c.b, c.db, (size_t)c.OC}};
            gc_op op = {ref ? "linear_ref" : "linear", &c, lin_fwd, lin_bwd, c.out, c.dout,
                        (size_t)c.N * c.OC, in, bias ? 3 : 2};
            CHECK_MSG(gc_check(&op, NULL, NULL) == 0,
                      "linear gradcheck N=%d IC=%d OC=%d ref=%d bias=%d dinp=%d", c.N, c.IC, c.OC,
                      ref, bias, din);
            c.b = b, c.db = db, c.dinp = dinp;
            lin_free(&c);
        }
}

// Optimized linear against the reference for every pool; returns nothing,
// records failures. nref: rows of the batch the reference covers (the rest
// of dout is zero, so the reference's weight gradients are the batch's).
static void linear_vs_ref(int N, int IC, int OC, int nref, const char *label) {
    lin_ctx r = lin_make(N, IC, OC);
    size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
    size_t ri = (size_t)nref * IC, ro = (size_t)nref * OC;
    for (size_t i = ro; i < no; i++) r.dout[i] = 0.0f;
    ef_linear_forward_ref(r.out, r.inp, r.w, r.b, nref, IC, OC);
    ef_linear_backward_ref(r.dinp, r.dw, r.db, r.dout, r.inp, r.w, nref, IC, OC);
    float *g0i = filled(ni, 0, 1), *g0w = filled(nw, 0, 1), *g0b = filled((size_t)OC, 0, 1);
    for (int p = 0; p < N_POOLS; p++) {
        if (quick && p == 1) continue;
        char what[160];
        snprintf(what, sizeof what, "%s N=%d IC=%d OC=%d %s", label, N, IC, OC, pool_name(p));
        float *out = falloc(no), *out2 = falloc(no), *outnb = falloc(no);
        ef_linear_forward(out, r.inp, r.w, r.b, N, IC, OC, pools[p]);
        ef_linear_forward(out2, r.inp, r.w, r.b, N, IC, OC, pools[p]);
        CHECK_MSG(same_bits(out, out2, no * 4), "%s: forward not repeatable", what);
        check_close(what, out, r.out, ro, OPT_RTOL, 0);
        // without bias: the same minus the bias
        ef_linear_forward(outnb, r.inp, r.w, NULL, N, IC, OC, pools[p]);
        for (size_t i = 0; i < ro; i++) out2[i] = r.out[i] - r.b[i % (size_t)OC];
        check_close(what, outnb, out2, ro, OPT_RTOL, 0);

        float *di = falloc(ni), *dw = falloc(nw), *db = falloc((size_t)OC);
        ef_linear_backward(di, dw, db, r.dout, r.inp, r.w, N, IC, OC, pools[p]);
        check_close(what, di, r.dinp, ri, OPT_RTOL, 0);
        check_close(what, dw, r.dw, nw, OPT_RTOL, 0);
        check_close(what, db, r.db, (size_t)OC, OPT_RTOL, 0);
        // repeat: bit-identical
        float *di2 = falloc(ni), *dw2 = falloc(nw), *db2 = falloc((size_t)OC);
        ef_linear_backward(di2, dw2, db2, r.dout, r.inp, r.w, N, IC, OC, pools[p]);
        CHECK_MSG(same_bits(di, di2, ni * 4) && same_bits(dw, dw2, nw * 4) &&
                      same_bits(db, db2, (size_t)OC * 4),
                  "%s: backward not repeatable", what);
        // accumulate, and the optional gradients skipped
        float *ai = dup(g0i, ni), *aw = dup(g0w, nw), *ab = dup(g0b, (size_t)OC);
        ef_linear_backward(ai, aw, ab, r.dout, r.inp, r.w, N, IC, OC, pools[p]);
        check_accumulate(what, ai, g0i, di, ni);
        check_accumulate(what, aw, g0w, dw, nw);
        check_accumulate(what, ab, g0b, db, (size_t)OC);
        memcpy(aw, g0w, nw * 4);
        ef_linear_backward(NULL, aw, NULL, r.dout, r.inp, r.w, N, IC, OC, pools[p]);
        check_accumulate(what, aw, g0w, dw, nw);
        free(out), free(out2), free(outnb), free(di), free(dw), free(db);
        free(di2), free(dw2), free(db2), free(ai), free(aw), free(ab);
    }
    free(g0i), free(g0w), free(g0b);
    lin_free(&r);
}

static void test_linear_vs_ref(void) {
    static const int shapes[][3] = {{1, 1, 1},      {7, 13, 5},    {3, 64, 48},
                                    {8, 300, 100},  {5, 1000, 33}, {16, 784, 200}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        linear_vs_ref(shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][0], "linear");
}

/* ---- conv2d ------------------------------------------------------------------- */

typedef struct conv_ctx {
    ef_conv2d_desc d;
    float *inp, *w, *b, *out, *dinp, *dw, *db, *dout, *work;
    size_t work_n;
    int ref;
    ef_pool *pool;
} conv_ctx;

static size_t c_in(const ef_conv2d_desc *d) { return (size_t)d->N * d->C * d->H * d->W; }
static size_t c_w(const ef_conv2d_desc *d) { return (size_t)d->OC * d->C * d->KH * d->KW; }
static size_t c_out(const ef_conv2d_desc *d) {
    return (size_t)d->N * d->OC * ef_conv2d_out_h(d) * ef_conv2d_out_w(d);
}

// Exactly the advertised workspace, NaN-filled before each use.
static float *conv_work(const ef_conv2d_desc *d, ef_pool *pool, size_t *n) {
    *n = ef_conv2d_workspace(d, ef_pool_threads(pool));
    float *w = malloc((*n ? *n : 1) * sizeof(float));
    if (!w) exit(1);
    return w;
}

static void poison(float *w, size_t n) {
    for (size_t i = 0; i < n; i++) w[i] = NAN;
}

static void conv_fwd(void *vc) {
    conv_ctx *c = vc;
    if (c->ref) {
        ef_conv2d_forward_ref(c->out, c->inp, c->w, c->b, &c->d);
    } else {
        poison(c->work, c->work_n);
        ef_conv2d_forward(c->out, c->inp, c->w, c->b, &c->d, c->work, c->pool);
    }
}

static void conv_bwd(void *vc) {
    conv_ctx *c = vc;
    if (c->ref) {
        ef_conv2d_backward_ref(c->dinp, c->dw, c->db, c->dout, c->inp, c->w, &c->d);
    } else {
        poison(c->work, c->work_n);
        ef_conv2d_backward(c->dinp, c->dw, c->db, c->dout, c->inp, c->w, &c->d, c->work, c->pool);
    }
}

static conv_ctx conv_make(ef_conv2d_desc d, ef_pool *pool) {
    conv_ctx c = {0};
    c.d = d;
    c.pool = pool;
    c.inp = filled(c_in(&d), 0, 1);
    c.w = filled(c_w(&d), 0, 1.0 / sqrt((double)d.C * d.KH * d.KW));
    c.b = filled((size_t)d.OC, 0, 0.5);
    c.out = falloc(c_out(&d));
    c.dinp = falloc(c_in(&d));
    c.dw = falloc(c_w(&d));
    c.db = falloc((size_t)d.OC);
    c.dout = filled(c_out(&d), 0, 1);
    c.work = conv_work(&d, pool, &c.work_n);
    return c;
}

static void conv_free(conv_ctx *c) {
    free(c->inp), free(c->w), free(c->b), free(c->out), free(c->dinp);
    free(c->dw), free(c->db), free(c->dout), free(c->work);
}

/* Which implementation runs a pass with the current settings. */
typedef enum { P_IM2COL, P_DIRECT, P_WINOGRAD } conv_path;
static const char *path_names[3] = {"im2col", "direct", "winograd"};

static conv_path fwd_path(const ef_conv2d_desc *d, int fast) {
    if (fast && ef__conv2d_winograd_ok(d)) return P_WINOGRAD;
    if (fast && ef__conv2d_direct_ok(d)) return P_DIRECT;
    return P_IM2COL;
}

static conv_path bwd_path(const ef_conv2d_desc *d, int fast, int with_dinp) {
    if (fast && ef__conv2d_winograd_ok(d)) return P_WINOGRAD;
    if (fast && !with_dinp && ef__conv2d_direct_ok(d)) return P_DIRECT;
    return P_IM2COL;
}

static int path_seen[3][2]; // [path][0 forward, 1 backward]: every path must run

static void desc_name(char *buf, size_t n, const ef_conv2d_desc *d) {
    snprintf(buf, n, "N=%d C=%d H=%d W=%d OC=%d K=%dx%d s=%d p=%d", d->N, d->C, d->H, d->W, d->OC,
             d->KH, d->KW, d->stride, d->pad);
}

static void test_conv_grad(void) {
    static const ef_conv2d_desc shapes[] = {
        {1, 1, 5, 5, 1, 3, 3, 1, 1},   // direct, C = 1
        {2, 3, 6, 7, 4, 3, 3, 1, 0},   // direct
        {1, 2, 6, 6, 3, 3, 3, 1, 2},   // direct, pad 2
        {1, 1, 6, 6, 2, 7, 7, 1, 3},   // direct, 7x7
        {1, 3, 4, 4, 5, 1, 1, 1, 0},   // direct, 1x1
        {2, 3, 7, 6, 4, 3, 3, 2, 1},   // im2col, stride 2
        {1, 2, 9, 8, 3, 5, 5, 2, 2},   // im2col, 5x5 stride 2
        {1, 10, 8, 8, 12, 5, 5, 2, 2}, // im2col, 5x5 stride 2, C >= 8
        {2, 8, 4, 5, 6, 1, 1, 1, 0},   // im2col, pointwise (plain GEMM)
        {1, 4, 5, 6, 3, 1, 1, 2, 1},   // im2col, 1x1 stride 2 pad 1
        {1, 8, 6, 6, 8, 3, 3, 1, 2},   // im2col, 3x3 pad 2, C >= 8
        {1, 2, 5, 6, 3, 3, 1, 1, 0},   // im2col, 3x1 kernel
        {2, 8, 6, 7, 8, 5, 5, 1, 2},   // Winograd
        {1, 9, 5, 5, 10, 5, 5, 1, 0},  // Winograd, 1x1 output
        {1, 8, 7, 5, 9, 5, 5, 1, 4},   // Winograd, pad 4, H != W
        {1, 8, 9, 9, 8, 5, 5, 1, 3},   // Winograd, odd output
    };
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int v = 0; v < 8; v++) {
            int ref = v & 1, bias = (v >> 1) & 1, din = (v >> 2) & 1;
            // the reference's optional gradients are plain `if`s: once is enough
            if (ref && !(bias && din)) continue;
            if (quick && bias != din) continue;
            conv_ctx c = conv_make(shapes[s], pools[2]);
            c.ref = ref;
            float *b = c.b, *db = c.db, *dinp = c.dinp;
            if (!bias) c.b = c.db = NULL;
            if (!din) c.dinp = NULL;
            if (!ref) {
                path_seen[fwd_path(&c.d, 1)][0] = 1;
                path_seen[bwd_path(&c.d, 1, din)][1] = 1;
            }
            gc_input in[3] = {{"inp", c.inp, c.dinp, c_in(&c.d)},
                              {"weight", c.w, c.dw, c_w(&c.d)},
                              {"bias", c.b, c.db, (size_t)c.d.OC}};
            gc_op op = {ref ? "conv2d_ref" : "conv2d", &c, conv_fwd, conv_bwd, c.out, c.dout,
                        c_out(&c.d), in, bias ? 3 : 2};
            char name[128];
            desc_name(name, sizeof name, &c.d);
            double t0 = ef_now();
            gc_opts o = gc_defaults();
            if (quick) o.max_samples = 64;
            CHECK_MSG(gc_check(&op, &o, NULL) == 0, "conv2d gradcheck %s ref=%d bias=%d dinp=%d",
                      name, ref, bias, din);
            if (getenv("EDGEFL_TEST_VERBOSE"))
                printf("    gradcheck %s ref=%d bias=%d dinp=%d: %.3f s\n", name, ref, bias, din,
                       ef_now() - t0);
            c.b = b, c.db = db, c.dinp = dinp;
            conv_free(&c);
        }
}

/*
 * Optimized conv against the reference in every configuration. The
 * reference covers the first nref images; the remaining images (if any)
 * get dout = 0, so the weight and bias gradients are the reference's and
 * their input gradients must stay exactly zero.
 */
static void conv_vs_ref(ef_conv2d_desc d, int nref, const config *cfgs, int ncfg) {
    char dname[128];
    desc_name(dname, sizeof dname, &d);
    ef_conv2d_desc dr = d;
    dr.N = nref;
    size_t ni = c_in(&d), nw = c_w(&d), no = c_out(&d), nb = (size_t)d.OC;
    size_t ri = c_in(&dr), ro = c_out(&dr);
    float *inp = filled(ni, 0, 1), *w = filled(nw, 0, 1.0 / sqrt((double)d.C * d.KH * d.KW));
    float *b = filled(nb, 0, 0.5), *dout = filled(no, 0, 1);
    for (size_t i = ro; i < no; i++) dout[i] = 0.0f;
    float *r_out = falloc(ro), *r_outnb = falloc(ro), *r_di = falloc(ri), *r_dw = falloc(nw),
          *r_db = falloc(nb);
    double t0 = ef_now();
    ef_conv2d_forward_ref(r_out, inp, w, b, &dr);
    ef_conv2d_forward_ref(r_outnb, inp, w, NULL, &dr);
    ef_conv2d_backward_ref(r_di, r_dw, r_db, dout, inp, w, &dr);
    if (getenv("EDGEFL_TEST_VERBOSE")) printf("    reference %s: %.3f s\n", dname, ef_now() - t0);
    float *g0i = filled(ni, 0, 1), *g0w = filled(nw, 0, 1), *g0b = filled(nb, 0, 1);

    for (int k = 0; k < ncfg; k++) {
        config c = cfgs[k];
        double tc = ef_now();
        apply(c);
        ef_pool *pool = pools[c.pool];
        size_t wn;
        float *work = conv_work(&d, pool, &wn);
        char what[300], cn[64];
        config_name(cn, sizeof cn, c);
        conv_path fp = fwd_path(&d, c.fast), bp = bwd_path(&d, c.fast, 1),
                  bpw = bwd_path(&d, c.fast, 0);
        path_seen[fp][0] = path_seen[bp][1] = path_seen[bpw][1] = 1;
        double ft = fp == P_WINOGRAD ? WINO_RTOL : OPT_RTOL, fl2 = fp == P_WINOGRAD ? WINO_L2 : 0;
        double bt = bp == P_WINOGRAD ? WINO_RTOL : OPT_RTOL, bl2 = bp == P_WINOGRAD ? WINO_L2 : 0;
        double wt = bpw == P_WINOGRAD ? WINO_RTOL : OPT_RTOL,
               wl2 = bpw == P_WINOGRAD ? WINO_L2 : 0;

        // forward, with and without bias, repeatable
        float *out = falloc(no), *out2 = falloc(no);
        poison(work, wn);
        ef_conv2d_forward(out, inp, w, b, &d, work, pool);
        poison(work, wn);
        ef_conv2d_forward(out2, inp, w, b, &d, work, pool);
        snprintf(what, sizeof what, "conv2d forward %s [%s] (%s)", dname, path_names[fp], cn);
        CHECK_MSG(same_bits(out, out2, no * 4), "%s: not repeatable", what);
        check_close(what, out, r_out, ro, ft, fl2);
        poison(work, wn);
        ef_conv2d_forward(out2, inp, w, NULL, &d, work, pool);
        check_close(what, out2, r_outnb, ro, ft, fl2);

        // backward with every gradient, into zeros; repeatable
        float *di = falloc(ni), *dw = falloc(nw), *db = falloc(nb);
        float *di2 = falloc(ni), *dw2 = falloc(nw), *db2 = falloc(nb);
        poison(work, wn);
        ef_conv2d_backward(di, dw, db, dout, inp, w, &d, work, pool);
        poison(work, wn);
        ef_conv2d_backward(di2, dw2, db2, dout, inp, w, &d, work, pool);
        snprintf(what, sizeof what, "conv2d backward %s [%s] (%s)", dname, path_names[bp], cn);
        CHECK_MSG(same_bits(di, di2, ni * 4) && same_bits(dw, dw2, nw * 4) &&
                      same_bits(db, db2, nb * 4),
                  "%s: not repeatable", what);
        check_close(what, di, r_di, ri, bt, bl2);
        check_close(what, dw, r_dw, nw, bt, bl2);
        check_close(what, db, r_db, nb, bt, bl2);
        int zero_rest = 1;
        for (size_t i = ri; i < ni; i++) zero_rest &= di[i] == 0.0f;
        CHECK_MSG(zero_rest, "%s: input gradient of images with dout = 0 not zero", what);
        // accumulate into g0
        float *ai = dup(g0i, ni), *aw = dup(g0w, nw), *ab = dup(g0b, nb);
        poison(work, wn);
        ef_conv2d_backward(ai, aw, ab, dout, inp, w, &d, work, pool);
        check_accumulate(what, ai, g0i, di, ni);
        check_accumulate(what, aw, g0w, dw, nw);
        check_accumulate(what, ab, g0b, db, nb);

        // without a bias gradient: the same input and weight gradients
        memset(di2, 0, ni * 4);
        memset(dw2, 0, nw * 4);
        poison(work, wn);
        ef_conv2d_backward(di2, dw2, NULL, dout, inp, w, &d, work, pool);
        CHECK_MSG(same_bits(di, di2, ni * 4) && same_bits(dw, dw2, nw * 4),
                  "%s: dbias NULL changes the other gradients", what);

        // no input gradient (the first layer's case; the direct path runs it)
        snprintf(what, sizeof what, "conv2d backward (no dinp) %s [%s] (%s)", dname,
                 path_names[bpw], cn);
        memset(dw2, 0, nw * 4);
        memset(db2, 0, nb * 4);
        poison(work, wn);
        ef_conv2d_backward(NULL, dw2, db2, dout, inp, w, &d, work, pool);
        check_close(what, dw2, r_dw, nw, wt, wl2);
        check_close(what, db2, r_db, nb, wt, wl2);
        float *dwo = falloc(nw);
        poison(work, wn);
        ef_conv2d_backward(NULL, dwo, NULL, dout, inp, w, &d, work, pool);
        CHECK_MSG(same_bits(dwo, dw2, nw * 4), "%s: dbias NULL changes dweight", what);
        memcpy(aw, g0w, nw * 4);
        memcpy(ab, g0b, nb * 4);
        poison(work, wn);
        ef_conv2d_backward(NULL, aw, ab, dout, inp, w, &d, work, pool);
        check_accumulate(what, aw, g0w, dw2, nw);
        check_accumulate(what, ab, g0b, db2, nb);
        free(out), free(out2), free(di), free(dw), free(db), free(di2), free(dw2), free(db2);
        free(ai), free(aw), free(ab), free(dwo), free(work);
        if (getenv("EDGEFL_TEST_VERBOSE")) printf("    %s (%s): %.3f s\n", dname, cn, ef_now() - tc);
    }
    restore();
    free(inp), free(w), free(b), free(dout), free(r_out), free(r_outnb), free(r_di), free(r_dw),
        free(r_db), free(g0i), free(g0w), free(g0b);
}

static int all_configs(config *cfgs) {
    int n = 0;
    for (int avx2 = 0; avx2 < 2; avx2++)
        for (int fast = 0; fast < 2; fast++)
            for (int p = 0; p < N_POOLS; p++) {
                if (quick && p == 1) continue;
                cfgs[n++] = (config){avx2, fast, p};
            }
    return n;
}

static void test_conv_vs_ref(void) {
    static const ef_conv2d_desc shapes[] = {
        // Winograd: odd and unequal sizes, every pad, channel counts off the
        // small-GEMM blocks, several groups per thread, one-tile outputs
        {3, 8, 9, 7, 8, 5, 5, 1, 0},
        {3, 8, 9, 7, 8, 5, 5, 1, 1},
        {3, 8, 9, 7, 8, 5, 5, 1, 2},
        {3, 8, 9, 7, 8, 5, 5, 1, 3},
        {3, 8, 9, 7, 8, 5, 5, 1, 4},
        {2, 13, 11, 14, 9, 5, 5, 1, 2},
        {20, 8, 8, 8, 8, 5, 5, 1, 2},
        {1, 16, 40, 36, 17, 5, 5, 1, 2},
        {2, 11, 5, 5, 10, 5, 5, 1, 0},
        {2, 9, 6, 5, 11, 5, 5, 1, 4},
        {1, 8, 30, 70, 8, 5, 5, 1, 1},
        // direct: C < 8, widths past one 32-column block, K up to 7
        {3, 1, 28, 28, 8, 5, 5, 1, 2},
        {2, 3, 13, 45, 5, 3, 3, 1, 1},
        {2, 7, 9, 10, 6, 7, 7, 1, 6},
        {1, 2, 5, 70, 3, 1, 1, 1, 0},
        {2, 4, 8, 33, 4, 5, 5, 1, 0},
        {1, 5, 6, 6, 7, 3, 3, 1, 2},
        // direct, narrow outputs (blocks of 4 rows x 2 vectors, 8 rows x 1):
        // LeNet-5's second layer, heights off the block, a 1x1 output
        {2, 6, 12, 12, 16, 5, 5, 1, 0},
        {2, 3, 11, 9, 5, 3, 3, 1, 1},
        {1, 2, 13, 5, 3, 5, 5, 1, 2},
        {3, 7, 3, 3, 4, 3, 3, 1, 0},
        {1, 1, 17, 16, 2, 1, 1, 1, 0},
        // im2col
        {2, 3, 9, 11, 4, 3, 3, 2, 1},
        {3, 8, 10, 9, 6, 3, 3, 1, 1},
        {2, 8, 7, 7, 5, 1, 1, 1, 0},
        {2, 4, 12, 10, 6, 5, 5, 2, 2},
        {2, 16, 10, 10, 8, 5, 5, 3, 1},
        {1, 2, 6, 7, 3, 3, 2, 1, 1},
        {2, 8, 9, 9, 4, 5, 5, 1, 2},
    };
    config cfgs[16];
    int ncfg = all_configs(cfgs);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        conv_vs_ref(shapes[s], shapes[s].N, cfgs, ncfg);
}

/* ---- the CNN's layers at their real sizes --------------------------------------- */

static void test_cnn_shapes(void) {
    // Every path at these sizes, but not every combination (the portable
    // Winograd build is slow, and smaller shapes cover the rest); the batch
    // is 32 as in training, 8 in quick mode.
    int nref = quick ? 2 : 4, batch = quick ? 8 : 32;
    static const config full[] = {{1, 1, 0}, {1, 1, 2}, {1, 0, 2}, {0, 1, 2}, {0, 0, 0}};
    static const config fast[] = {{1, 1, 2}, {0, 1, 0}, {1, 0, 2}};
    const config *cfgs = quick ? fast : full;
    int ncfg = quick ? 3 : 5;
    ef_conv2d_desc conv1 = {batch, 1, 28, 28, 32, 5, 5, 1, 2};
    ef_conv2d_desc conv2 = {batch, 32, 14, 14, 64, 5, 5, 1, 2};
    CHECK(ef__conv2d_direct_ok(&conv1) && ef__conv2d_winograd_ok(&conv2));
    double t0 = ef_now();
    conv_vs_ref(conv1, nref, cfgs, ncfg);
    double t1 = ef_now();
    conv_vs_ref(conv2, nref, cfgs, ncfg);
    double t2 = ef_now();
    linear_vs_ref(batch, 3136, 512, nref, "cnn fc1");
    linear_vs_ref(batch, 512, 10, nref, "cnn fc2");
    printf("    conv1 %.2f s, conv2 %.2f s, fc %.2f s (%d configurations)\n", t1 - t0, t2 - t1,
           ef_now() - t2, ncfg);
}

/* ---- max-pool ------------------------------------------------------------------ */

typedef struct mp_ctx {
    float *inp, *out, *dinp, *dout;
    int32_t *argmax;
    int N, C, H, W, K, S, ref;
    ef_pool *pool;
} mp_ctx;

static int mp_oh(const mp_ctx *c) { return (c->H - c->K) / c->S + 1; }
static int mp_ow(const mp_ctx *c) { return (c->W - c->K) / c->S + 1; }
static size_t mp_nin(const mp_ctx *c) { return (size_t)c->N * c->C * c->H * c->W; }
static size_t mp_nout(const mp_ctx *c) { return (size_t)c->N * c->C * mp_oh(c) * mp_ow(c); }

static void mp_fwd(void *vc) {
    mp_ctx *c = vc;
    if (c->ref)
        ef_maxpool2d_forward_ref(c->out, c->argmax, c->inp, c->N, c->C, c->H, c->W, c->K, c->S);
    else
        ef_maxpool2d_forward(c->out, c->argmax, c->inp, c->N, c->C, c->H, c->W, c->K, c->S,
                             c->pool);
}

static void mp_bwd(void *vc) {
    mp_ctx *c = vc;
    if (c->ref)
        ef_maxpool2d_backward_ref(c->dinp, c->dout, c->argmax, c->N, c->C, c->H, c->W, c->K, c->S);
    else
        ef_maxpool2d_backward(c->dinp, c->dout, c->argmax, c->N, c->C, c->H, c->W, c->K, c->S,
                              c->pool);
}

// Distinct values 0.05 apart in random order: a +-eps (1e-2) perturbation
// of one input never changes which element of a window is the maximum.
static void fill_distinct(float *x, size_t n) {
    uint32_t *perm = malloc(n * sizeof *perm);
    for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
    ef_rng_shuffle_u32(&rng, perm, n);
    for (size_t i = 0; i < n; i++) x[i] = (float)(((double)perm[i] - n / 2.0) * 0.05);
    free(perm);
}

static mp_ctx mp_make(int N, int C, int H, int W, int K, int S) {
    mp_ctx c = {0};
    c.N = N, c.C = C, c.H = H, c.W = W, c.K = K, c.S = S;
    c.inp = falloc(mp_nin(&c));
    c.dinp = falloc(mp_nin(&c));
    c.out = falloc(mp_nout(&c));
    c.dout = filled(mp_nout(&c), 0, 1);
    c.argmax = malloc(mp_nout(&c) * sizeof(int32_t));
    return c;
}

static void mp_free(mp_ctx *c) {
    free(c->inp), free(c->dinp), free(c->out), free(c->dout), free(c->argmax);
}

static void test_maxpool(void) {
    static const int shapes[][6] = {// N, C, H, W, K, stride
                                    {1, 1, 2, 2, 2, 2}, {2, 3, 6, 8, 2, 2}, {2, 2, 7, 5, 2, 2},
                                    {1, 2, 7, 7, 3, 2}, {2, 1, 5, 6, 3, 1}, {1, 3, 4, 4, 1, 1},
                                    {2, 2, 9, 9, 3, 3}, {1, 2, 8, 8, 4, 2}};
    const size_t ns = sizeof shapes / sizeof *shapes;
    for (size_t s = 0; s < ns; s++)
        for (int ref = 0; ref < 2; ref++) {
            const int *sh = shapes[s];
            mp_ctx c = mp_make(sh[0], sh[1], sh[2], sh[3], sh[4], sh[5]);
            c.ref = ref;
            c.pool = pools[2];
            fill_distinct(c.inp, mp_nin(&c));
            gc_input in[1] = {{"inp", c.inp, c.dinp, mp_nin(&c)}};
            gc_op op = {ref ? "maxpool_ref" : "maxpool", &c, mp_fwd, mp_bwd, c.out, c.dout,
                        mp_nout(&c), in, 1};
            CHECK_MSG(gc_check(&op, NULL, NULL) == 0, "maxpool gradcheck %dx%dx%dx%d K=%d S=%d ref=%d",
                      sh[0], sh[1], sh[2], sh[3], sh[4], sh[5], ref);
            mp_free(&c);
        }

    // Optimized vs reference: bit-identical outputs, argmax and gradients,
    // on ties (small integers), negative and infinite values.
    static const int big[][6] = {{4, 16, 28, 28, 2, 2}, {3, 5, 13, 11, 3, 2}, {2, 3, 7, 7, 2, 2},
                                 {2, 4, 10, 10, 3, 1},  {1, 2, 9, 9, 1, 1},   {2, 64, 14, 14, 2, 2}};
    for (size_t s = 0; s < sizeof big / sizeof *big; s++)
        for (int kind = 0; kind < 3; kind++) {
            const int *sh = big[s];
            mp_ctx r = mp_make(sh[0], sh[1], sh[2], sh[3], sh[4], sh[5]);
            size_t nin = mp_nin(&r), nout = mp_nout(&r);
            for (size_t i = 0; i < nin; i++) {
                if (kind == 0) r.inp[i] = (float)ef_rng_normal(&rng);
                else if (kind == 1) r.inp[i] = (float)ef_rng_below(&rng, 3); // many ties
                else r.inp[i] = ef_rng_below(&rng, 4) == 0 ? -INFINITY : -1e30f * ef_rng_uniform(&rng);
            }
            float *g0 = filled(nin, 0, 1);
            memcpy(r.dinp, g0, nin * 4);
            ef_maxpool2d_forward_ref(r.out, r.argmax, r.inp, r.N, r.C, r.H, r.W, r.K, r.S);
            ef_maxpool2d_backward_ref(r.dinp, r.dout, r.argmax, r.N, r.C, r.H, r.W, r.K, r.S);
            for (int p = 0; p < N_POOLS; p++) {
                float *out = falloc(nout), *di = dup(g0, nin);
                int32_t *am = malloc(nout * sizeof *am);
                ef_maxpool2d_forward(out, am, r.inp, r.N, r.C, r.H, r.W, r.K, r.S, pools[p]);
                ef_maxpool2d_backward(di, r.dout, am, r.N, r.C, r.H, r.W, r.K, r.S, pools[p]);
                CHECK_MSG(same_bits(out, r.out, nout * 4) && same_bits(am, r.argmax, nout * 4) &&
                              same_bits(di, r.dinp, nin * 4),
                          "maxpool %dx%dx%dx%d K=%d S=%d inputs %d %s differs from reference",
                          sh[0], sh[1], sh[2], sh[3], sh[4], sh[5], kind, pool_name(p));
                free(out), free(di), free(am);
            }
            free(g0);
            mp_free(&r);
        }

    // The documented argmax: index h*W+w in the plane, first maximum on ties.
    float x[2 * 4] = {1, 3, 0, 5, 3, 2, 5, 5};
    float out[2];
    int32_t am[2];
    ef_maxpool2d_forward(out, am, x, 1, 1, 2, 4, 2, 2, NULL);
    CHECK(out[0] == 3 && am[0] == 1 && out[1] == 5 && am[1] == 3);
    float flat[4] = {2, 2, 2, 2};
    ef_maxpool2d_forward(out, am, flat, 1, 1, 2, 2, 2, 2, NULL);
    CHECK(am[0] == 0);
}

/* ---- ReLU ---------------------------------------------------------------------- */

typedef struct relu_ctx {
    float *inp, *out, *dinp, *dout;
    size_t n;
    int ref;
} relu_ctx;

static void relu_fwd(void *vc) {
    relu_ctx *c = vc;
    (c->ref ? ef_relu_forward_ref : ef_relu_forward)(c->out, c->inp, c->n);
}

static void relu_bwd(void *vc) {
    relu_ctx *c = vc;
    (c->ref ? ef_relu_backward_ref : ef_relu_backward)(c->dinp, c->dout, c->out, c->n);
}

static void test_relu(void) {
    static const size_t sizes[] = {1, 7, 64, 1000};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
        for (int ref = 0; ref < 2; ref++) {
            size_t n = sizes[s];
            relu_ctx c = {falloc(n), falloc(n), falloc(n), falloc(n), n, ref};
            // |x| >= 0.05 > 2 eps: central differences never straddle the kink
            for (size_t i = 0; i < n; i++) {
                double m = 0.05 + fabs(ef_rng_normal(&rng));
                c.inp[i] = (float)(ef_rng_below(&rng, 2) ? m : -m);
            }
            gc_input in[1] = {{"inp", c.inp, c.dinp, n}};
            gc_op op = {ref ? "relu_ref" : "relu", &c, relu_fwd, relu_bwd, c.out, c.dout, n, in, 1};
            CHECK_MSG(gc_check(&op, NULL, NULL) == 0, "relu gradcheck n=%zu ref=%d", n, ref);
            free(c.inp), free(c.out), free(c.dinp), free(c.dout);
        }

    size_t n = 4103;
    float *x = filled(n, 0, 1);
    static const float special[] = {0.0f, -0.0f, 1e-40f, -1e-40f, INFINITY, -INFINITY, NAN, 1e38f};
    memcpy(x, special, sizeof special);
    float *out = falloc(n), *out_r = falloc(n), *dout = filled(n, 0, 1), *g0 = filled(n, 0, 1);
    ef_relu_forward(out, x, n);
    ef_relu_forward_ref(out_r, x, n);
    CHECK(same_bits(out, out_r, n * 4));
    CHECK(out[0] == 0.0f && !signbit(out[1]) && out[2] == 1e-40f && out[3] == 0.0f &&
          out[4] == INFINITY && out[5] == 0.0f && out[6] == 0.0f);
    float *y = dup(x, n);
    ef_relu_forward(y, y, n); // in place
    CHECK(same_bits(y, out, n * 4));
    float *di = dup(g0, n), *di_r = dup(g0, n);
    ef_relu_backward(di, dout, out, n);
    ef_relu_backward_ref(di_r, dout, out, n);
    CHECK(same_bits(di, di_r, n * 4));
    int acc = 1;
    for (size_t i = 0; i < n; i++)
        acc &= out[i] > 0.0f ? di[i] == g0[i] + dout[i] : di[i] == g0[i];
    CHECK(acc);
    free(x), free(out), free(out_r), free(dout), free(g0), free(y), free(di), free(di_r);
}

/* ---- softmax cross-entropy --------------------------------------------------------- */

typedef struct xent_ctx {
    float *logits, *losses, *probs, *dlogits, *dlosses;
    int32_t *targets;
    int N, V, ref;
    ef_pool *pool;
} xent_ctx;

static void xent_fwd(void *vc) {
    xent_ctx *c = vc;
    if (c->ref)
        ef_softmax_xent_forward_ref(c->losses, c->probs, c->logits, c->targets, c->N, c->V);
    else
        ef_softmax_xent_forward(c->losses, c->probs, c->logits, c->targets, c->N, c->V, c->pool);
}

static void xent_bwd(void *vc) {
    xent_ctx *c = vc;
    if (c->ref)
        ef_softmax_xent_backward_ref(c->dlogits, c->dlosses, c->probs, c->targets, c->N, c->V);
    else
        ef_softmax_xent_backward(c->dlogits, c->dlosses, c->probs, c->targets, c->N, c->V,
                                 c->pool);
}

static xent_ctx xent_make(int N, int V, double scale) {
    xent_ctx c = {0};
    c.N = N, c.V = V;
    size_t nv = (size_t)N * V;
    c.logits = filled(nv, 0, scale);
    c.losses = falloc((size_t)N);
    c.probs = falloc(nv);
    c.dlogits = falloc(nv);
    c.dlosses = filled((size_t)N, 0, 1);
    c.targets = malloc((size_t)N * sizeof(int32_t));
    for (int i = 0; i < N; i++) c.targets[i] = (int32_t)ef_rng_below(&rng, (uint64_t)V);
    return c;
}

static void xent_free(xent_ctx *c) {
    free(c->logits), free(c->losses), free(c->probs), free(c->dlogits), free(c->dlosses);
    free(c->targets);
}

static void test_xent(void) {
    static const int shapes[][2] = {{1, 2}, {3, 5}, {4, 10}, {2, 37}, {5, 3}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int ref = 0; ref < 2; ref++) {
            xent_ctx c = xent_make(shapes[s][0], shapes[s][1], 2.0);
            c.ref = ref;
            c.pool = pools[2];
            gc_input in[1] = {{"logits", c.logits, c.dlogits, (size_t)c.N * c.V}};
            gc_op op = {ref ? "softmax_xent_ref" : "softmax_xent", &c, xent_fwd, xent_bwd,
                        c.losses, c.dlosses, (size_t)c.N, in, 1};
            CHECK_MSG(gc_check(&op, NULL, NULL) == 0, "softmax_xent gradcheck N=%d V=%d ref=%d",
                      c.N, c.V, ref);
            xent_free(&c);
        }

    // Optimized vs reference; the big shapes are split over threads.
    static const int big[][2] = {{1, 2}, {7, 10}, {3, 1}, {64, 1100}, {300, 257}};
    for (size_t s = 0; s < sizeof big / sizeof *big; s++)
        for (int scale = 0; scale < 2; scale++) {
            int N = big[s][0], V = big[s][1];
            size_t nv = (size_t)N * V;
            xent_ctx r = xent_make(N, V, scale ? 30.0 : 3.0);
            if (scale) // a few rows with a logit far above or below the rest
                for (int i = 0; i < N; i += 3) r.logits[(size_t)i * V + r.targets[i]] += i % 2 ? 1e3f : -1e3f;
            ef_softmax_xent_forward_ref(r.losses, r.probs, r.logits, r.targets, N, V);
            ef_softmax_xent_backward_ref(r.dlogits, r.dlosses, r.probs, r.targets, N, V);
            float *g0 = filled(nv, 0, 1);
            for (int p = 0; p < N_POOLS; p++) {
                char what[128];
                snprintf(what, sizeof what, "softmax_xent N=%d V=%d scale %d %s", N, V, scale,
                         pool_name(p));
                float *loss = falloc((size_t)N), *prob = falloc(nv), *dl = falloc(nv);
                ef_softmax_xent_forward(loss, prob, r.logits, r.targets, N, V, pools[p]);
                check_close(what, loss, r.losses, (size_t)N, OPT_RTOL, 0);
                check_close(what, prob, r.probs, nv, OPT_RTOL, 0);
                int finite = 1;
                for (int i = 0; i < N; i++) {
                    double sum = 0.0;
                    for (int j = 0; j < V; j++) sum += prob[(size_t)i * V + j];
                    finite &= isfinite(loss[i]) && loss[i] >= 0.0f && fabs(sum - 1.0) < 1e-5;
                }
                CHECK_MSG(finite, "%s: losses finite and >= 0, probabilities sum to 1", what);
                // backward from the reference's probabilities, so only the
                // backward kernel is compared
                ef_softmax_xent_backward(dl, r.dlosses, r.probs, r.targets, N, V, pools[p]);
                // per row: the row's gradient is (p - onehot) * dloss
                check_close(what, dl, r.dlogits, nv, OPT_RTOL, 0);
                float *acc = dup(g0, nv);
                ef_softmax_xent_backward(acc, r.dlosses, r.probs, r.targets, N, V, pools[p]);
                check_accumulate(what, acc, g0, dl, nv);
                free(loss), free(prob), free(dl), free(acc);
            }
            free(g0);
            xent_free(&r);
        }
}

/* ---- negative controls --------------------------------------------------------------- */

static void conv_bwd_overwrite(void *vc) {
    conv_ctx *c = vc;
    memset(c->dw, 0, c_w(&c->d) * sizeof(float)); // '=' instead of '+='
    conv_bwd(vc);
}

static void test_controls(void) {
    // The gradient checker rejects a conv backward that overwrites, and the
    // comparisons reject a Winograd result off by 1e-4 in one element.
    ef_conv2d_desc d = {2, 8, 6, 7, 8, 5, 5, 1, 2};
    conv_ctx c = conv_make(d, NULL);
    gc_opts quiet = gc_defaults();
    quiet.verbose = -1;
    gc_input in[3] = {{"inp", c.inp, c.dinp, c_in(&d)},
                      {"weight", c.w, c.dw, c_w(&d)},
                      {"bias", c.b, c.db, (size_t)d.OC}};
    gc_op op = {"conv2d", &c, conv_fwd, conv_bwd, c.out, c.dout, c_out(&d), in, 3};
    gc_report rep;
    CHECK(gc_check(&op, &quiet, &rep) == 0);
    printf("    Winograd gradcheck: max ratio %.3g, rel L2 %.3g\n", rep.max_ratio, rep.max_rel_l2);
    op.backward = conv_bwd_overwrite;
    CHECK(gc_check(&op, &quiet, NULL) == 1);
    conv_fwd(&c);
    float *r = falloc(c_out(&d));
    ef_conv2d_forward_ref(r, c.inp, c.w, c.b, &d);
    size_t wi;
    double l2, e = close_error(c.out, r, c_out(&d), &wi, &l2);
    CHECK(e <= WINO_RTOL && l2 <= WINO_L2); // the real output passes...
    c.out[17] += 1e-4f * (float)(fabs(r[17]) + rms(r, c_out(&d)));
    e = close_error(c.out, r, c_out(&d), &wi, &l2);
    CHECK(e > WINO_RTOL && wi == 17); // ...and one element off by 1e-4 does not
    free(r);
    conv_free(&c);
}

int main(void) {
    quick = getenv("EDGEFL_TEST_QUICK") != NULL;
    ef_rng_seed(&rng, 20240611);
    pools[0] = NULL;
    CHECK_OK(ef_pool_new(&pools[1], 1));
    CHECK_OK(ef_pool_new(&pools[2], 2));
    CHECK_OK(ef_pool_new(&pools[3], 3));
    if (!pools[1] || !pools[2] || !pools[3]) return tu_finish("nn/test_kernels_cnn");
    printf("  CPU: AVX2+FMA %s\n", (ef_cpu_features() & EF_CPU_AVX2)
                                       ? "available (portable and AVX2 builds run)"
                                       : "not available (portable builds only)");

    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"linear_grad", test_linear_grad}, {"linear_vs_ref", test_linear_vs_ref},
        {"conv_grad", test_conv_grad},     {"conv_vs_ref", test_conv_vs_ref},
        {"cnn_shapes", test_cnn_shapes},   {"maxpool", test_maxpool},
        {"relu", test_relu},               {"softmax_xent", test_xent},
        {"controls", test_controls},
    };
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
        int before = tu_failures;
        double t0 = ef_now();
        tests[i].fn();
        restore();
        printf("  %-14s %s (%.2f s)\n", tests[i].name, tu_failures == before ? "ok" : "FAILED",
               ef_now() - t0);
    }
    for (int p = 0; p < 3; p++)
        CHECK_MSG(path_seen[p][0] && path_seen[p][1], "conv path %s not exercised (fwd %d bwd %d)",
                  path_names[p], path_seen[p][0], path_seen[p][1]);

    for (int p = 1; p < N_POOLS; p++) ef_pool_free(pools[p]);
    printf("  worst error / bound: plain %.3g, Winograd %.3g (L2 %.3g), accumulate %.3g\n",
           worst_plain, worst_wino, worst_wino_l2, worst_acc);
    return tu_finish("nn/test_kernels_cnn");
}
