/*
 * The language model checked against PyTorch: loss, per-token losses and
 * every parameter gradient.
 *
 * How: for each case the test builds a model (random weights, larger than
 * the init's so attention patterns are sharp and RoPE matters), saves it
 * with ef_lm_save and a random batch of ids and targets (plus per-token loss
 * weights in the second case) with ef_safetensors_save_views, and runs
 * tests/nn/lm_torch_ref.py, which builds the same architecture in torch
 * from the file's metadata (its own RMSNorm, adjacent-pair RoPE, GQA by
 * repeat_interleave, SwiGLU, tied or untied output), loads the weights and
 * computes the loss and gradients in float64 (and float32, as a
 * yardstick). The test then runs ef_lm_forward / ef_lm_backward with a
 * 2-thread pool and compares.
 * Cases: tied multi-head attention with T = 48 (two attention row blocks,
 * the second partial), mean loss; untied grouped-query attention
 * (4 query heads on 2 kv heads), T = 40, weighted per-token losses.
 *
 * Tolerances, against the float64 reference b, for edgefl's float32 a:
 *   loss:             |a - b| <= 1e-5 |b|;  per-token losses max_rel <= 1e-5
 *   every gradient:   ||a - b||_2 <= 1e-4 ||b||_2  and  max|a - b| <= 1e-4 max|b|
 * Each line also shows torch's own float32 error for scale. Skips (77)
 * when /usr/bin/python3 cannot import torch and numpy.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgefl/io.h"
#include "edgefl/lm.h"
#include "edgefl/pool.h"
#include "edgefl/rng.h"
#include "test_util.h"

#define PYTHON "/usr/bin/python3"
#define SCRIPT EF_SOURCE_DIR "/tests/nn/lm_torch_ref.py"
#define TOL 1e-4

static char g_dir[256];

typedef struct err2 {
    double rel_l2, max_rel;
} err2;

static err2 compare_f(const float *a, const double *b, size_t n) {
    double d2 = 0, b2 = 0, dmax = 0, bmax = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        d2 += d * d;
        b2 += b[i] * b[i];
        if (d > dmax || isnan(d)) dmax = d;
        if (fabs(b[i]) > bmax) bmax = fabs(b[i]);
    }
    err2 e = {sqrt(d2) / sqrt(b2), dmax / bmax};
    if (b2 == 0) e.rel_l2 = e.max_rel = d2 == 0 ? 0.0 : INFINITY;
    return e;
}

static double *get_f64(ef_safetensors *st, const char *name, size_t n) {
    const ef_st_tensor *t = ef_safetensors_find(st, name);
    CHECK_MSG(t && t->dtype == EF_ST_F64 && t->numel == n, "reference %s missing or wrong", name);
    if (!t || t->dtype != EF_ST_F64 || t->numel != n) return NULL;
    double *d = malloc(n * sizeof *d);
    memcpy(d, t->data, n * sizeof *d);
    return d;
}

static float *get_f32(ef_safetensors *st, const char *name, size_t n) {
    const ef_st_tensor *t = ef_safetensors_find(st, name);
    if (!t || t->numel != n) return NULL;
    float *f = malloc(n * sizeof *f);
    if (ef_st_tensor_to_f32(t, f) != EF_OK) {
        free(f);
        return NULL;
    }
    return f;
}

static void run_case(const char *label, int tied, int nkv, int B, int T, int weighted,
                     ef_pool *pool, ef_rng *rng) {
    ef_lm_config c = ef_lm_config_default();
    c.vocab = 97, c.dim = 64, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = nkv;
    c.ffn_dim = ef_lm_default_ffn(64), c.max_seq = T, c.tied = tied;
    ef_lm *m = NULL;
    CHECK_OK(ef_lm_new(&m, &c, B, pool));
    if (!m) return;
    ef_params *p = ef_lm_params(m);
    for (size_t i = 0; i < ef_params_count(p); i++) {
        const ef_tensor_info *ti = ef_params_info(p, i);
        float *w = ef_params_tensor(p, i);
        for (size_t j = 0; j < ti->numel; j++)
            w[j] = (float)(ti->ndim == 1 ? 1.0 + 0.2 * ef_rng_normal(rng)
                                         : 0.15 * ef_rng_normal(rng));
    }
    size_t N = (size_t)B * T, n = ef_lm_numel(m);
    int32_t *ids = malloc(N * 4), *tg = malloc(N * 4);
    float *fids = malloc(N * 4), *ftg = malloc(N * 4), *dl = malloc(N * 4);
    for (size_t i = 0; i < N; i++) {
        ids[i] = (int32_t)ef_rng_below(rng, (uint64_t)c.vocab);
        tg[i] = (int32_t)ef_rng_below(rng, (uint64_t)c.vocab);
        fids[i] = (float)ids[i], ftg[i] = (float)tg[i];
        dl[i] = (float)(2.0 * ef_rng_uniform(rng) - 0.5) / (float)N;
    }
    char mpath[512], bpath[512], rpath[512], cmd[2048];
    snprintf(mpath, sizeof mpath, "%s/%s.model.safetensors", g_dir, label);
    snprintf(bpath, sizeof bpath, "%s/%s.batch.safetensors", g_dir, label);
    snprintf(rpath, sizeof rpath, "%s/%s.ref.safetensors", g_dir, label);
    CHECK_OK(ef_lm_save(m, mpath, NULL, 0));
    ef_st_view v[3] = {{"ids", 2, {B, T}, fids}, {"targets", 2, {B, T}, ftg},
                       {"dlosses", 1, {(int64_t)N}, dl}};
    CHECK_OK(ef_safetensors_save_views(bpath, v, weighted ? 3 : 2, NULL, 0));
    snprintf(cmd, sizeof cmd, "%s %s '%s' '%s' '%s'", PYTHON, SCRIPT, mpath, bpath, rpath);
    fflush(stdout);
    int rc = system(cmd);
    CHECK_MSG(rc == 0, "%s failed (status %d)", SCRIPT, rc);
    ef_safetensors *ref = NULL;
    if (rc == 0) CHECK_OK(ef_safetensors_open(&ref, rpath));
    if (!ref) goto done;

    float loss;
    CHECK_OK(ef_lm_forward(m, ids, tg, B, T, &loss));
    double *l64 = get_f64(ref, "ref64.loss", 1), *ls64 = get_f64(ref, "ref64.losses", N);
    if (l64 && ls64) {
        double got = 0;
        for (size_t i = 0; i < N; i++) got += (double)ef_lm_losses(m)[i] * (weighted ? dl[i] : 1.0 / N);
        printf("  %s: loss %.9f, torch float64 %.9f (relative error %.2e)\n", label, got, l64[0],
               fabs(got - l64[0]) / fabs(l64[0]));
        CHECK_MSG(fabs(got - l64[0]) <= 1e-5 * fabs(l64[0]), "%s loss %.9g vs %.9g", label, got,
                  l64[0]);
        if (!weighted) CHECK_NEAR(loss, l64[0], 1e-5 * fabs(l64[0]));
        err2 e = compare_f(ef_lm_losses(m), ls64, N);
        CHECK_MSG(e.max_rel <= 1e-5, "%s per-token losses max_rel %.3g", label, e.max_rel);
    }
    free(l64), free(ls64);
    ef_lm_zero_grad(m);
    CHECK_OK(ef_lm_backward(m, weighted ? dl : NULL));
    for (size_t i = 0; i < ef_params_count(p); i++) {
        const ef_tensor_info *ti = ef_params_info(p, i);
        char nm[256];
        snprintf(nm, sizeof nm, "ref64.grad.%s", ti->name);
        double *b = get_f64(ref, nm, ti->numel);
        snprintf(nm, sizeof nm, "ref32.grad.%s", ti->name);
        float *yard = get_f32(ref, nm, ti->numel);
        if (b) {
            err2 e = compare_f(ef_lm_grads(m) + ti->offset, b, ti->numel);
            printf("    %-26s %7zu  rel_l2 %.2e  max_rel %.2e", ti->name, ti->numel, e.rel_l2,
                   e.max_rel);
            if (yard) {
                err2 y = compare_f(yard, b, ti->numel);
                printf("   (torch f32: rel_l2 %.2e  max_rel %.2e)", y.rel_l2, y.max_rel);
            }
            printf("\n");
            CHECK_MSG(e.rel_l2 <= TOL && e.max_rel <= TOL, "%s gradient %s: rel_l2 %.3g max_rel %.3g",
                      label, ti->name, e.rel_l2, e.max_rel);
        }
        free(b), free(yard);
    }
    ef_safetensors_close(ref);
done:
    free(ids), free(tg), free(fids), free(ftg), free(dl);
    ef_lm_free(m);
    (void)n;
}

int main(void) {
    if (system(PYTHON " -c 'import torch, numpy' >/dev/null 2>&1") != 0) {
        printf("SKIPPED: %s cannot import torch and numpy "
               "(apt install python3-torch python3-numpy)\n", PYTHON);
        return TU_SKIP;
    }
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/edgefl-lm-torch-XXXXXX", tmp);
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    ef_pool *pool = NULL;
    CHECK_OK(ef_pool_new(&pool, 2));
    ef_rng rng;
    ef_rng_seed(&rng, 20240614);
    printf("errors against torch float64 (gradient bounds: rel_l2 and max_rel <= %g)\n", TOL);
    run_case("tied-mha", 1, 4, 3, 48, 0, pool, &rng);
    run_case("untied-gqa", 0, 2, 2, 40, 1, pool, &rng);
    ef_pool_free(pool);
    tu_rmtree(g_dir);
    return tu_finish("nn/test_lm_torch");
}
