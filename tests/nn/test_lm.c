/*
 * Tests of the llama-style language model (src/nn/lm.c):
 * - config validation and the documented parameter layout (names, shapes,
 *   order, decay split, count);
 * - forward and backward against a naive model assembled in this file from
 *   the reference kernels (separate q/k/v and gate/up products, token-major
 *   RoPE and attention): loss, logits and every gradient, for a tied MHA and
 *   an untied grouped-query model, with sequence lengths that cross the
 *   attention's row blocks;
 * - a finite-difference check of the gradients of a whole small model
 *   (tests/nn/gradcheck.h), with per-token loss weights;
 * - thread counts (no pool, 2 and 3 threads) agree, repeat runs are
 *   bit-identical, gradients accumulate, save/load round trip, bad input.
 * The PyTorch comparison is tests/nn/test_lm_torch.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgefl/lm.h"
#include "edgefl/nn.h"
#include "edgefl/pool.h"
#include "edgefl/rng.h"
#include "gradcheck.h"
#include "kernel_util.h"
#include "test_util.h"

static ef_pool *pools[3];

static float *T_(ef_lm *m, const char *name) {
    ef_params *p = ef_lm_params(m);
    long i = ef_params_find(p, name);
    if (i < 0) {
        fprintf(stderr, "no tensor %s\n", name);
        exit(1);
    }
    return ef_params_tensor(p, (size_t)i);
}

/* Random weights larger than the init's (gradients of order 0.1-1 make the
 * finite differences meaningful); norm gains around 1. */
static void randomize(ef_lm *m, double sd) {
    ef_params *p = ef_lm_params(m);
    for (size_t i = 0; i < ef_params_count(p); i++) {
        const ef_tensor_info *ti = ef_params_info(p, i);
        float *w = ef_params_tensor(p, i);
        if (ti->ndim == 1) fill(w, ti->numel, 1.0, 0.2);
        else fill(w, ti->numel, 0.0, sd);
    }
}

static void rand_tokens(int32_t *t, size_t n, int V) {
    for (size_t i = 0; i < n; i++) t[i] = (int32_t)ef_rng_below(&rng, (uint64_t)V);
}

/* ---- the naive reference model ---------------------------------------------- */

typedef struct ref_out {
    float *losses;  /* (N) */
    float *logits;  /* (N, V) */
    float *grads;   /* same layout as the model's params */
} ref_out;

/* Forward and backward of the loss sum_i w_i loss_i (w NULL: mean) with
 * the reference kernels only; grads land in r->grads (zeroed here). */
static void ref_model(ef_lm *m, const int32_t *ids, const int32_t *tg, int B, int T,
                      const float *w, ref_out *r) {
    const ef_lm_config *c = ef_lm_get_config(m);
    int D = c->dim, V = c->vocab, L = c->n_layers, NH = c->n_heads, NKV = c->n_kv_heads;
    int HS = D / NH, KVD = NKV * HS, F = c->ffn_dim, N = B * T;
    float eps = c->norm_eps;
    size_t nD = (size_t)N * D, nK = (size_t)N * KVD, nF = (size_t)N * F;
    ef_params *P = ef_lm_params(m);
    memset(r->grads, 0, ef_lm_numel(m) * sizeof(float));
#define GR(name) (r->grads + ef_params_info(P, (size_t)ef_params_find(P, name))->offset)
    char nm[64];
    // saved activations, per layer
    float **x = calloc((size_t)L + 1, sizeof *x), **xn1 = calloc((size_t)L, sizeof *x);
    float **q = calloc((size_t)L, sizeof *x), **k = calloc((size_t)L, sizeof *x);
    float **v = calloc((size_t)L, sizeof *x), **att = calloc((size_t)L, sizeof *x);
    float **ao = calloc((size_t)L, sizeof *x), **res1 = calloc((size_t)L, sizeof *x);
    float **xn2 = calloc((size_t)L, sizeof *x), **gt = calloc((size_t)L, sizeof *x);
    float **up = calloc((size_t)L, sizeof *x), **hh = calloc((size_t)L, sizeof *x);
    float **r1 = calloc((size_t)L, sizeof *x), **r2 = calloc((size_t)L, sizeof *x);
    x[0] = falloc(nD);
    ef_embedding_forward_ref(x[0], ids, T_(m, "token_embd.weight"), N, V, D);
    for (int l = 0; l < L; l++) {
#define W(s) (snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, s), T_(m, nm))
        xn1[l] = falloc(nD), r1[l] = falloc((size_t)N);
        ef_rmsnorm_forward_ref(xn1[l], r1[l], x[l], W("attn_norm"), N, D, eps);
        q[l] = falloc(nD), k[l] = falloc(nK), v[l] = falloc(nK);
        ef_linear_forward_ref(q[l], xn1[l], W("attn_q"), NULL, N, D, D);
        ef_linear_forward_ref(k[l], xn1[l], W("attn_k"), NULL, N, D, KVD);
        ef_linear_forward_ref(v[l], xn1[l], W("attn_v"), NULL, N, D, KVD);
        ef_rope_forward_ref(q[l], q[l], B, T, NH, HS, c->rope_theta);
        ef_rope_forward_ref(k[l], k[l], B, T, NKV, HS, c->rope_theta);
        att[l] = falloc((size_t)B * NH * T * T), ao[l] = falloc(nD);
        ef_attention_forward_ref(ao[l], att[l], q[l], k[l], v[l], B, T, NH, NKV, HS);
        float *proj = falloc(nD);
        ef_linear_forward_ref(proj, ao[l], W("attn_output"), NULL, N, D, D);
        res1[l] = falloc(nD);
        ef_residual_forward_ref(res1[l], x[l], proj, nD);
        xn2[l] = falloc(nD), r2[l] = falloc((size_t)N);
        ef_rmsnorm_forward_ref(xn2[l], r2[l], res1[l], W("ffn_norm"), N, D, eps);
        gt[l] = falloc(nF), up[l] = falloc(nF), hh[l] = falloc(nF);
        ef_linear_forward_ref(gt[l], xn2[l], W("ffn_gate"), NULL, N, D, F);
        ef_linear_forward_ref(up[l], xn2[l], W("ffn_up"), NULL, N, D, F);
        ef_swiglu_forward_ref(hh[l], gt[l], up[l], N, F, F);
        ef_linear_forward_ref(proj, hh[l], W("ffn_down"), NULL, N, F, D);
        x[l + 1] = falloc(nD);
        ef_residual_forward_ref(x[l + 1], res1[l], proj, nD);
        free(proj);
    }
    const char *outname = c->tied ? "token_embd.weight" : "output.weight";
    float *xf = falloc(nD), *rf = falloc((size_t)N), *probs = falloc((size_t)N * V);
    ef_rmsnorm_forward_ref(xf, rf, x[L], T_(m, "output_norm.weight"), N, D, eps);
    ef_linear_forward_ref(r->logits, xf, T_(m, outname), NULL, N, D, V);
    ef_softmax_xent_forward_ref(r->losses, probs, r->logits, tg, N, V);

    // backward
    float *dl = falloc((size_t)N), *dlog = falloc((size_t)N * V);
    for (int i = 0; i < N; i++) dl[i] = w ? w[i] : 1.0f / (float)N;
    ef_softmax_xent_backward_ref(dlog, dl, probs, tg, N, V);
    float *dxf = falloc(nD), *dx = falloc(nD);
    ef_linear_backward_ref(dxf, GR(outname), NULL, dlog, xf, T_(m, outname), N, D, V);
    ef_rmsnorm_backward_ref(dx, GR("output_norm.weight"), dxf, x[L],
                            T_(m, "output_norm.weight"), rf, N, D);
    for (int l = L - 1; l >= 0; l--) {
#define GW(s) (snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, s), GR(nm))
        // x[l+1] = res1 + down(h): dres1 = dx (+ norm path), dh
        float *dres1 = dup(dx, nD), *dh = falloc(nF), *dgt = falloc(nF), *dup_ = falloc(nF);
        ef_linear_backward_ref(dh, GW("ffn_down"), NULL, dx, hh[l], W("ffn_down"), N, F, D);
        ef_swiglu_backward_ref(dgt, dup_, dh, gt[l], up[l], N, F, F);
        float *dxn = falloc(nD);
        ef_linear_backward_ref(dxn, GW("ffn_gate"), NULL, dgt, xn2[l], W("ffn_gate"), N, D, F);
        ef_linear_backward_ref(dxn, GW("ffn_up"), NULL, dup_, xn2[l], W("ffn_up"), N, D, F);
        ef_rmsnorm_backward_ref(dres1, GW("ffn_norm"), dxn, res1[l], W("ffn_norm"), r2[l], N, D);
        // res1 = x + o(ao)
        float *dxl = dup(dres1, nD), *dao = falloc(nD);
        ef_linear_backward_ref(dao, GW("attn_output"), NULL, dres1, ao[l], W("attn_output"), N,
                               D, D);
        float *dq = falloc(nD), *dk = falloc(nK), *dv = falloc(nK);
        ef_attention_backward_ref(dq, dk, dv, dao, att[l], q[l], k[l], v[l], B, T, NH, NKV, HS);
        float *dq0 = falloc(nD), *dk0 = falloc(nK);
        ef_rope_backward_ref(dq0, dq, B, T, NH, HS, c->rope_theta);
        ef_rope_backward_ref(dk0, dk, B, T, NKV, HS, c->rope_theta);
        memset(dxn, 0, nD * sizeof(float));
        ef_linear_backward_ref(dxn, GW("attn_q"), NULL, dq0, xn1[l], W("attn_q"), N, D, D);
        ef_linear_backward_ref(dxn, GW("attn_k"), NULL, dk0, xn1[l], W("attn_k"), N, D, KVD);
        ef_linear_backward_ref(dxn, GW("attn_v"), NULL, dv, xn1[l], W("attn_v"), N, D, KVD);
        ef_rmsnorm_backward_ref(dxl, GW("attn_norm"), dxn, x[l], W("attn_norm"), r1[l], N, D);
        memcpy(dx, dxl, nD * sizeof(float));
        free(dres1), free(dh), free(dgt), free(dup_), free(dxn), free(dxl), free(dao);
        free(dq), free(dk), free(dv), free(dq0), free(dk0);
    }
    ef_embedding_backward_ref(GR("token_embd.weight"), dx, ids, N, D);
    for (int l = 0; l < L; l++) {
        free(xn1[l]), free(q[l]), free(k[l]), free(v[l]), free(att[l]), free(ao[l]);
        free(res1[l]), free(xn2[l]), free(gt[l]), free(up[l]), free(hh[l]), free(r1[l]);
        free(r2[l]);
    }
    for (int l = 0; l <= L; l++) free(x[l]);
    free(x), free(xn1), free(q), free(k), free(v), free(att), free(ao), free(res1), free(xn2);
    free(gt), free(up), free(hh), free(r1), free(r2);
    free(xf), free(rf), free(probs), free(dl), free(dlog), free(dxf), free(dx);
#undef W
#undef GW
#undef GR
}

/* max |a - b| / (max |b| + tiny): the error relative to the tensor's scale. */
static double rel_err(const float *a, const float *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (e > d || isnan(e)) d = isnan(e) ? INFINITY : e;
        if (fabs(b[i]) > s) s = fabs(b[i]);
    }
    return d / (s + 1e-30);
}

static ef_lm_config small_cfg(int tied, int nkv) {
    ef_lm_config c = ef_lm_config_default();
    c.vocab = 23;
    c.dim = 16;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = nkv;
    c.ffn_dim = 24;
    c.max_seq = 70;
    c.tied = tied;
    return c;
}

static void test_config(void) {
    ef_lm_config c = small_cfg(1, 2);
    CHECK_OK(ef_lm_config_check(&c));
    ef_lm_config b = c;
    b.vocab = 1;
    CHECK(ef_lm_config_check(&b) == EF_ERR_INVALID);
    b = c, b.dim = 18; // not a multiple of 4 heads
    CHECK(ef_lm_config_check(&b) == EF_ERR_INVALID);
    b = c, b.dim = 12, b.n_heads = 4; // head_dim 3: odd
    CHECK(ef_lm_config_check(&b) == EF_ERR_INVALID);
    CHECK(strstr(ef_last_error(), "even") != NULL);
    b = c, b.n_kv_heads = 3;
    CHECK(ef_lm_config_check(&b) == EF_ERR_INVALID);
    b = c, b.norm_eps = 0;
    CHECK(ef_lm_config_check(&b) == EF_ERR_INVALID);
    b = c, b.rope_theta = NAN;
    CHECK(ef_lm_config_check(&b) == EF_ERR_INVALID);
    b = c, b.max_seq = 0;
    CHECK(ef_lm_config_check(&b) == EF_ERR_INVALID);
    ef_lm *m = NULL;
    CHECK(ef_lm_new(&m, &b, 2, NULL) == EF_ERR_INVALID && m == NULL);
    CHECK(ef_lm_new(&m, &c, 0, NULL) == EF_ERR_INVALID && m == NULL);
    b = c, b.max_seq = 1 << 20;
    CHECK(ef_lm_new(&m, &b, 1 << 20, NULL) == EF_ERR_RANGE && m == NULL);
    CHECK(ef_lm_default_ffn(256) == 704 && ef_lm_default_ffn(384) == 1024);
}

static void test_layout(void) {
    for (int tied = 0; tied < 2; tied++) {
        ef_lm_config c = small_cfg(tied, 2);
        ef_lm *m = NULL;
        CHECK_OK(ef_lm_new(&m, &c, 2, NULL));
        if (!m) return;
        ef_params *p = ef_lm_params(m);
        CHECK(ef_lm_numel(m) == ef_lm_config_numel(&c));
        size_t want_count = 1 + 9 * 2 + 1 + (tied ? 0 : 1);
        CHECK(ef_params_count(p) == want_count);
        const char *order[] = {"token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight",
                               "blk.0.attn_v.weight", "blk.0.attn_output.weight",
                               "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight",
                               "blk.0.ffn_down.weight", "blk.1.attn_q.weight"};
        for (size_t i = 0; i < sizeof order / sizeof *order; i++)
            CHECK_MSG(strcmp(ef_params_info(p, i)->name, order[i]) == 0, "tensor %zu is %s", i,
                      ef_params_info(p, i)->name);
        const ef_tensor_info *k = ef_params_info(p, (size_t)ef_params_find(p, "blk.1.attn_k.weight"));
        CHECK(k->ndim == 2 && k->shape[0] == 8 && k->shape[1] == 16); // kv_dim 2*4
        const ef_tensor_info *d = ef_params_info(p, (size_t)ef_params_find(p, "blk.0.ffn_down.weight"));
        CHECK(d->shape[0] == 16 && d->shape[1] == 24);
        CHECK((ef_params_find(p, "output.weight") >= 0) == !tied);
        // decay covers exactly the 2-D tensors, which come first
        size_t first_norm = ef_params_info(p, (size_t)ef_params_find(p, "blk.0.attn_norm.weight"))->offset;
        CHECK(ef_lm_decay_numel(m) == first_norm);
        for (size_t i = 0; i < ef_params_count(p); i++) {
            const ef_tensor_info *ti = ef_params_info(p, i);
            CHECK((ti->ndim == 2) == (ti->offset < first_norm));
        }
        CHECK(strcmp(ef_params_info(p, want_count - 1)->name, "output_norm.weight") == 0);
        // norms start at 1 before init; init is seeded
        CHECK(T_(m, "output_norm.weight")[3] == 1.0f);
        ef_lm_init(m, 7);
        float *copy = dup(ef_params_data(p), ef_lm_numel(m));
        ef_lm_init(m, 7);
        CHECK(memcmp(copy, ef_params_data(p), ef_lm_numel(m) * sizeof(float)) == 0);
        ef_lm_init(m, 8);
        CHECK(memcmp(copy, ef_params_data(p), ef_lm_numel(m) * sizeof(float)) != 0);
        free(copy);
        CHECK(T_(m, "blk.1.ffn_norm.weight")[0] == 1.0f);
        ef_lm_free(m);
    }
    // init statistics on a bigger model: std 0.02, residual projections scaled
    ef_lm_config c = small_cfg(1, 4);
    c.dim = 128, c.ffn_dim = 256, c.n_layers = 8, c.vocab = 300;
    ef_lm *m = NULL;
    CHECK_OK(ef_lm_new(&m, &c, 1, NULL));
    if (!m) return;
    ef_lm_init(m, 3);
    double s1 = 0, s2 = 0;
    float *e = T_(m, "token_embd.weight"), *o = T_(m, "blk.5.attn_output.weight");
    for (int i = 0; i < 300 * 128; i++) s1 += (double)e[i] * e[i];
    for (int i = 0; i < 128 * 128; i++) s2 += (double)o[i] * o[i];
    CHECK_NEAR(sqrt(s1 / (300 * 128)), 0.02, 0.0005);
    CHECK_NEAR(sqrt(s2 / (128 * 128)), 0.02 / 4.0, 0.0002);
    ef_lm_free(m);
}

/* The model against the naive reference: losses, logits and all gradients. */
static void check_vs_ref(int tied, int nkv, int B, int T, int use_w) {
    ef_lm_config c = small_cfg(tied, nkv);
    ef_lm *m = NULL;
    CHECK_OK(ef_lm_new(&m, &c, B, pools[1]));
    if (!m) return;
    randomize(m, 0.3);
    size_t N = (size_t)B * T, n = ef_lm_numel(m);
    int32_t *ids = malloc(N * 4), *tg = malloc(N * 4);
    rand_tokens(ids, N, c.vocab);
    rand_tokens(tg, N, c.vocab);
    float *w = use_w ? filled(N, 0, 1) : NULL;
    ref_out r = {falloc(N), falloc(N * (size_t)c.vocab), falloc(n)};
    ref_model(m, ids, tg, B, T, w, &r);
    float loss;
    CHECK_OK(ef_lm_forward(m, ids, tg, B, T, &loss));
    double mean = 0;
    for (size_t i = 0; i < N; i++) mean += r.losses[i];
    mean /= (double)N;
    CHECK_NEAR(loss, mean, 1e-5 * fabs(mean));
    double el = rel_err(ef_lm_losses(m), r.losses, N);
    double eg = rel_err(ef_lm_logits(m), r.logits, N * (size_t)c.vocab);
    CHECK_MSG(el < 1e-5 && eg < 1e-5, "tied %d nkv %d T %d: losses %.3g logits %.3g", tied, nkv,
              T, el, eg);
    ef_lm_zero_grad(m);
    CHECK_OK(ef_lm_backward(m, w));
    ef_params *p = ef_lm_params(m);
    double worst = 0;
    for (size_t i = 0; i < ef_params_count(p); i++) {
        const ef_tensor_info *ti = ef_params_info(p, i);
        double e = rel_err(ef_lm_grads(m) + ti->offset, r.grads + ti->offset, ti->numel);
        if (e > worst) worst = e;
        CHECK_MSG(e < 1e-4, "tied %d nkv %d B %d T %d: gradient of %s off by %.3g", tied, nkv, B,
                  T, ti->name, e);
    }
    printf("    vs reference: tied %d kv %d B %d T %2d%s: loss %.6f, worst gradient error %.2e\n",
           tied, nkv, B, T, use_w ? " weighted" : "", loss, worst);
    // A second backward without a new forward is refused.
    CHECK(ef_lm_backward(m, NULL) == EF_ERR_STATE);
    free(ids), free(tg), free(w), free(r.losses), free(r.logits), free(r.grads);
    ef_lm_free(m);
}

static void test_vs_ref(void) {
    check_vs_ref(1, 4, 2, 37, 0); // tied MHA, two attention row blocks
    check_vs_ref(0, 2, 3, 70, 1); // untied GQA, three blocks, weighted losses
    check_vs_ref(0, 1, 1, 1, 0);  // multi-query, one token
    check_vs_ref(1, 2, 2, 32, 1); // exactly one block
}

/* ---- finite differences ------------------------------------------------------ */

typedef struct fd_ctx {
    ef_lm *m;
    int32_t *ids, *tg;
    int B, T;
    float *losses_out; /* (N) copy of the losses */
    float *w;          /* dL/dloss_i, filled by the harness */
    float *wrong;      /* negative control: gradient scaled after backward */
    size_t wrong_n;
} fd_ctx;

static void fd_fwd(void *vc) {
    fd_ctx *c = vc;
    if (ef_lm_forward(c->m, c->ids, c->tg, c->B, c->T, NULL) != EF_OK) exit(1);
    memcpy(c->losses_out, ef_lm_losses(c->m), (size_t)c->B * c->T * sizeof(float));
}

static void fd_bwd(void *vc) {
    fd_ctx *c = vc;
    // With `wrong` set, the new contribution to that gradient is made 5% too
    // large (the harness pre-fills gradients, so scale only the difference).
    float *before = c->wrong ? dup(c->wrong, c->wrong_n) : NULL;
    if (ef_lm_backward(c->m, c->w) != EF_OK) exit(1);
    if (before)
        for (size_t i = 0; i < c->wrong_n; i++)
            c->wrong[i] = before[i] + 1.05f * (c->wrong[i] - before[i]);
    free(before);
}

static void test_finite_differences(void) {
    for (int tied = 0; tied < 2; tied++) {
        ef_lm_config c = small_cfg(tied, tied ? 4 : 2);
        c.vocab = 11, c.dim = 8, c.n_heads = 2, c.n_kv_heads = tied ? 2 : 1, c.ffn_dim = 12;
        c.max_seq = 36;
        int B = 2, T = 36; // two attention blocks
        ef_lm *m = NULL;
        CHECK_OK(ef_lm_new(&m, &c, B, pools[2]));
        if (!m) return;
        randomize(m, 0.4);
        size_t N = (size_t)B * T;
        fd_ctx x = {m, malloc(N * 4), malloc(N * 4), B, T, falloc(N), falloc(N), NULL, 0};
        rand_tokens(x.ids, N, c.vocab);
        rand_tokens(x.tg, N, c.vocab);
        ef_params *p = ef_lm_params(m);
        size_t nt = ef_params_count(p);
        gc_input *in = calloc(nt, sizeof *in);
        for (size_t i = 0; i < nt; i++) {
            const ef_tensor_info *ti = ef_params_info(p, i);
            in[i] = (gc_input){ti->name, ef_params_tensor(p, i), ef_lm_grads(m) + ti->offset,
                               ti->numel};
        }
        gc_op op = {tied ? "lm tied" : "lm untied gqa", &x, fd_fwd, fd_bwd, x.losses_out, x.w, N,
                    in, (int)nt};
        gc_opts o = gc_defaults();
        o.max_samples = 40;
        // Float32 forward passes: below ~1e-3 rounding noise dominates the
        // central difference, above ~1e-2 its truncation error does.
        o.eps = 3e-3f;
        gc_report rep;
        int bad = gc_check(&op, &o, &rep);
        CHECK_MSG(bad == 0, "lm finite differences (tied %d): %d inputs failed", tied, bad);
        printf("    finite differences, tied %d: %zu elements, max |err| %.2e, max rel L2 %.2e, "
               "worst ratio to tolerance %.2f\n",
               tied, rep.checked, rep.max_abs_err, rep.max_rel_l2, rep.max_ratio);
        // Negative control: the same check rejects one gradient 5% off.
        x.wrong = ef_lm_grads(m) + ef_params_info(p, (size_t)ef_params_find(p, "blk.1.ffn_up.weight"))->offset;
        x.wrong_n = ef_params_info(p, (size_t)ef_params_find(p, "blk.1.ffn_up.weight"))->numel;
        o.verbose = -1;
        CHECK_MSG(gc_check(&op, &o, NULL) == 1, "a 5%% error in one gradient went unnoticed");
        free(in), free(x.ids), free(x.tg), free(x.losses_out), free(x.w);
        ef_lm_free(m);
    }
}

/* ---- threads, accumulation, files, errors --------------------------------------- */

static void test_threads_and_accumulation(void) {
    ef_lm_config c = small_cfg(0, 2);
    c.dim = 64, c.ffn_dim = 160, c.vocab = 300, c.max_seq = 70;
    int B = 4, T = 70; // 280 tokens: matrix products in several chunks
    size_t N = (size_t)B * T;
    int32_t *ids = malloc(N * 4), *tg = malloc(N * 4);
    rand_tokens(ids, N, c.vocab);
    rand_tokens(tg, N, c.vocab);
    float *g_first = NULL, loss_first = 0;
    size_t n = 0;
    for (int pi = 0; pi < 3; pi++) {
        ef_lm *m = NULL;
        CHECK_OK(ef_lm_new(&m, &c, B, pools[pi]));
        if (!m) break;
        ef_lm_init(m, 11);
        n = ef_lm_numel(m);
        float loss, loss2;
        CHECK_OK(ef_lm_forward(m, ids, tg, B, T, &loss));
        ef_lm_zero_grad(m);
        CHECK_OK(ef_lm_backward(m, NULL));
        float *g = dup(ef_lm_grads(m), n);
        // repeat: same bits; a second backward accumulates (twice the gradient)
        CHECK_OK(ef_lm_forward(m, ids, tg, B, T, &loss2));
        CHECK(loss2 == loss);
        CHECK_OK(ef_lm_backward(m, NULL));
        // (sgemm adds its product into the old values block by block, so
        // the sum is 2g up to rounding, not exactly)
        float *g2 = dup(g, n);
        for (size_t i = 0; i < n; i++) g2[i] *= 2.0f;
        CHECK_MSG(rel_err(ef_lm_grads(m), g2, n) < 1e-6, "pool %d: gradients do not accumulate",
                  pi);
        free(g2);
        if (!g_first) {
            g_first = g, loss_first = loss;
        } else {
            // work is cut into chunks that do not depend on the thread count
            CHECK_MSG(loss == loss_first, "pool %d: loss %.9g vs %.9g", pi, loss, loss_first);
            CHECK_MSG(memcmp(g, g_first, n * sizeof(float)) == 0,
                      "pool %d: gradients differ from no pool (%.3g)", pi, rel_err(g, g_first, n));
            free(g);
        }
        ef_lm_free(m);
    }
    free(g_first), free(ids), free(tg);
}

static void test_files_and_errors(void) {
    char dir[] = "/tmp/edgefl-test-lm-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[128];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    ef_lm_config c = small_cfg(0, 2);
    ef_lm *m = NULL, *m2 = NULL;
    CHECK_OK(ef_lm_new(&m, &c, 2, NULL));
    if (!m) return;
    ef_lm_init(m, 5);
    ef_st_kv extra[1] = {{"edgefl.tokenizer", "bytes"}};
    CHECK_OK(ef_lm_save(m, path, extra, 1));
    ef_lm_config rc;
    CHECK_OK(ef_lm_read_config(path, &rc));
    CHECK(memcmp(&rc, &c, sizeof c) == 0);
    CHECK_OK(ef_lm_load(&m2, path, 1, pools[1]));
    if (m2) {
        CHECK(memcmp(ef_params_data(ef_lm_params(m)), ef_params_data(ef_lm_params(m2)),
                     ef_lm_numel(m) * sizeof(float)) == 0);
        CHECK(ef_lm_max_batch(m2) == 1);
    }
    ef_lm_free(m2);
    // a plain safetensors file without the metadata is refused clearly
    char other[128];
    snprintf(other, sizeof other, "%s/other.safetensors", dir);
    CHECK_OK(ef_safetensors_save(other, ef_lm_params(m), NULL, 0));
    CHECK(ef_lm_read_config(other, &rc) == EF_ERR_FORMAT);
    CHECK(strstr(ef_last_error(), "not an edgefl language model") != NULL);
    m2 = NULL;
    CHECK(ef_lm_load(&m2, other, 1, NULL) == EF_ERR_FORMAT && m2 == NULL);

    // bad shapes and tokens: refused, nothing run
    int32_t ids[4] = {1, 2, 3, 4}, bad[4] = {1, 2, 23, 0};
    CHECK(ef_lm_forward(m, ids, NULL, 3, 1, NULL) == EF_ERR_INVALID); // batch > max 2
    CHECK(ef_lm_forward(m, ids, NULL, 1, 71, NULL) == EF_ERR_INVALID); // > max_seq
    CHECK(ef_lm_forward(m, bad, NULL, 1, 4, NULL) == EF_ERR_RANGE);
    CHECK(strstr(ef_last_error(), "ids[2] = 23") != NULL);
    CHECK(ef_lm_forward(m, ids, bad, 1, 4, NULL) == EF_ERR_RANGE);
    CHECK(ef_lm_backward(m, NULL) == EF_ERR_STATE);
    // logits without targets: no backward possible
    CHECK_OK(ef_lm_forward(m, ids, NULL, 2, 2, NULL));
    CHECK(ef_lm_backward(m, NULL) == EF_ERR_STATE);
    ef_lm_free(m);
    tu_rmtree(dir);
}

int main(void) {
    ef_rng_seed(&rng, 20240613);
    pools[0] = NULL;
    CHECK_OK(ef_pool_new(&pools[1], 2));
    CHECK_OK(ef_pool_new(&pools[2], 3));
    if (!pools[1] || !pools[2]) return tu_finish("nn/test_lm");
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"config", test_config},
        {"layout", test_layout},
        {"vs_reference", test_vs_ref},
        {"finite_differences", test_finite_differences},
        {"threads", test_threads_and_accumulation},
        {"files_errors", test_files_and_errors},
    };
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
        int before = tu_failures;
        tests[i].fn();
        printf("  %-20s %s\n", tests[i].name, tu_failures == before ? "ok" : "FAILED");
    }
    ef_pool_free(pools[1]);
    ef_pool_free(pools[2]);
    return tu_finish("nn/test_lm");
}
