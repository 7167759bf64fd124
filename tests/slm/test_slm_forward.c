/*
 * Tests of the inference forward pass (src/slm/forward.c, model.c) on small
 * random models in memory:
 *   - F32 weights against the independent double-precision reference of
 *     slm_test_model.h, for MHA with untied output and GQA with tied output,
 *     with an F32 KV cache (tight) and the default F16 cache (looser);
 *   - F16, Q8_0 and Q4_0 weights against the reference run on exactly the
 *     weights the engine sees (dequantized), which leaves the activation
 *     rounding (F16, or Q8_0 blocks) as the only difference; and against the
 *     F32 model's logits (RMS of the difference over RMS of the logits):
 *     F16 within 0.5% (0.1% measured), Q8_0 within 6% (3%), Q4_0 within 60%
 *     (35%: these random models have sharp attention and no training to make
 *     them robust to 4-bit weights; the perplexity of trained models is
 *     checked in docs/slm.md);
 *   - bit-identical logits however the work is cut: all tokens in one pass,
 *     passes of 5, one token at a time (for F32 weights, single-token passes
 *     among themselves: they take ggml_vec_dot's order, as in llama.cpp);
 *     1, 2 and 3 threads; every kernel set this CPU runs;
 *   - refusals that change nothing: bad configs and tensor types, tokens
 *     outside the vocabulary, a full context; rewind.
 *
 * Tolerances are on max |engine - reference| over all logits divided by the
 * RMS of the reference logits (which spread over several units):
 *   F32 weights, F32 cache: 1e-4 (float rounding through two layers, ~1e-6
 *   measured); F16 cache: 2e-2 (queries, keys and values rounded to 11
 *   bits: ~3e-3 measured); F16 weights (activations rounded to F16):
 *   2e-2; Q8_0 / Q4_0 weights (activations quantized to 8 bits per block,
 *   which flips some roundings at every layer): RMS error 4e-2 (1.8e-2
 *   measured), max 0.25 (0.12). A wrong head, position or rotation is off by
 *   O(1).
 */
#include <stdio.h>

#include "slm_test_model.h"
#include "test_util.h"

static const ef_slm_config CFG_MHA = {97, 64, 2, 4, 4, 96, 40, 1e-5f, 10000.0f, -1, -1};
static const ef_slm_config CFG_GQA = {120, 64, 2, 4, 2, 128, 40, 1e-5f, 500.0f, 0, 1};

static double rms(const double *a, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * a[i];
    return sqrt(s / (double)n);
}

static double max_rel(const float *got, const double *ref, size_t n) {
    double mx = 0, r = rms(ref, n);
    for (size_t i = 0; i < n; i++) {
        double d = fabs(got[i] - ref[i]);
        mx = d > mx ? d : mx;
    }
    return mx / r;
}

static void random_tokens(int32_t *tok, int n, int vocab, uint64_t seed) {
    ef_rng r;
    ef_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) tok[i] = (int32_t)ef_rng_below(&r, (uint64_t)vocab);
}

/* Engine logits for every position with the given options. */
static ef_status run(const ef_slm_model *m, const int32_t *tok, int n, float *out, int kv_f32, int n_batch,
                     int threads, ef_slm_isa isa, int one_by_one) {
    ef_slm_ctx_opts o = {0};
    o.n_ctx = 64;
    o.n_batch = n_batch;
    o.n_threads = threads;
    o.kv_f32 = kv_f32;
    o.isa = isa;
    ef_slm_ctx *c;
    ef_status st = ef_slm_ctx_new(&c, m, &o);
    if (st != EF_OK) return st;
    int V = ef_slm_model_config(m)->vocab;
    if (one_by_one) {
        for (int i = 0; i < n && st == EF_OK; i++) st = ef_slm_eval(c, tok + i, 1, out + (size_t)i * V, 0);
    } else {
        st = ef_slm_eval(c, tok, n, out, 1);
    }
    if (st == EF_OK && ef_slm_ctx_pos(c) != n) st = EF_ERR_INTERNAL;
    ef_slm_ctx_free(c);
    return st;
}

static void check_against_reference(const ef_slm_config *cfg, int tied, const char *name) {
    const int n = 24, V = cfg->vocab;
    int32_t tok[24];
    random_tokens(tok, n, V, 42);
    tm_model tm;
    tm_make(&tm, cfg, tied, EF_SLM_F32, 0, 7);
    ef_slm_model *m;
    CHECK_OK(ef_slm_model_new(&m, &tm.cfg, &tm.w));
    double *ref = malloc(sizeof(double) * (size_t)n * V);
    tm_reference(&tm, tok, n, ref);
    float *got = malloc(sizeof(float) * (size_t)n * V);
    printf("%s: reference logits RMS %.3f\n", name, rms(ref, (size_t)n * V));
    CHECK(rms(ref, (size_t)n * V) > 1.0);

    CHECK_OK(run(m, tok, n, got, 1, 0, 1, EF_SLM_ISA_SCALAR, 0));
    double e = max_rel(got, ref, (size_t)n * V);
    printf("%s: f32 weights, f32 cache: max error %.2e of RMS\n", name, e);
    CHECK_MSG(e <= 1e-4, "%s f32/f32 error %.3g", name, e);

    CHECK_OK(run(m, tok, n, got, 0, 0, 1, EF_SLM_ISA_SCALAR, 0));
    e = max_rel(got, ref, (size_t)n * V);
    printf("%s: f32 weights, f16 cache: max error %.2e of RMS\n", name, e);
    CHECK_MSG(e <= 2e-2, "%s f32/f16-cache error %.3g", name, e);

    /* bit-identical across kernel sets and threads; across the ways of
     * cutting the tokens into passes too, except that with F32 weights a
     * pass of one token takes ggml_vec_dot's order rather than tinyBLAS's
     * (as llama.cpp does): those agree with each other bit for bit and with
     * the batched logits to float rounding */
    float *alt = malloc(sizeof(float) * (size_t)n * V), *one = malloc(sizeof(float) * (size_t)n * V);
    const ef_slm_isa isas[3] = {EF_SLM_ISA_SCALAR, EF_SLM_ISA_AVX2, EF_SLM_ISA_AVX512};
    for (int kvf = 0; kvf < 2; kvf++) {
        CHECK_OK(run(m, tok, n, got, kvf, 0, 1, EF_SLM_ISA_SCALAR, 0));
        CHECK_OK(run(m, tok, n, one, kvf, 1, 1, EF_SLM_ISA_SCALAR, 0));
        double d = 0;
        for (int i = 0; i < n * V; i++) d = fmax(d, fabs(one[i] - got[i]));
        /* an F16 cache turns a float rounding into an F16 one now and then */
        CHECK_MSG(d <= (kvf ? 1e-5 : 3e-3) * rms(ref, (size_t)n * V), "%s: single-token passes differ by %.3g",
                  name, d);
        for (int i = 0; i < 3; i++) {
            if (!ef_slm_isa_name(isas[i])) continue;
            for (int th = 1; th <= 3; th++) {
                const int batches[3] = {0, 5, 1};
                for (int bi = 0; bi < 3; bi++) {
                    CHECK_OK(run(m, tok, n, alt, kvf, batches[bi], th, isas[i], 0));
                    CHECK_MSG(memcmp(alt, batches[bi] == 1 ? one : got, sizeof(float) * (size_t)n * V) == 0,
                              "%s: %s, %d threads, batch %d, %s cache: logits differ from the scalar ones",
                              name, ef_slm_isa_name(isas[i]), th, batches[bi], kvf ? "f32" : "f16");
                }
                CHECK_OK(run(m, tok, n, alt, kvf, 0, th, isas[i], 1));
                CHECK_MSG(memcmp(alt, one, sizeof(float) * (size_t)n * V) == 0,
                          "%s: %s, %d threads, one token per call: logits differ", name, ef_slm_isa_name(isas[i]), th);
            }
        }
    }
    free(alt);
    free(one);
    free(ref);
    free(got);
    ef_slm_model_free(m);
    tm_free(&tm);
}

static void check_types(const ef_slm_config *cfg, int tied, const char *name) {
    const int n = 20, V = cfg->vocab;
    int32_t tok[20];
    random_tokens(tok, n, V, 5);
    /* F32 engine logits of the master model */
    tm_model tf;
    tm_make(&tf, cfg, tied, EF_SLM_F32, 0, 11);
    ef_slm_model *mf;
    CHECK_OK(ef_slm_model_new(&mf, &tf.cfg, &tf.w));
    float *lf = malloc(sizeof(float) * (size_t)n * V), *lq = malloc(sizeof(float) * (size_t)n * V);
    double *ref = malloc(sizeof(double) * (size_t)n * V), *lfd = malloc(sizeof(double) * (size_t)n * V);
    CHECK_OK(run(mf, tok, n, lf, 1, 0, 2, EF_SLM_ISA_AUTO, 0));
    for (int i = 0; i < n * V; i++) lfd[i] = lf[i];
    const ef_slm_type types[3] = {EF_SLM_F16, EF_SLM_Q8_0, EF_SLM_Q4_0};
    const double vs_f32[3] = {5e-3, 6e-2, 0.6}; /* RMS of the difference / RMS of the F32 logits */
    for (int ti = 0; ti < 3; ti++) {
        tm_model tq;
        tm_make(&tq, cfg, tied, types[ti], 1, 11);
        ef_slm_model *mq;
        CHECK_OK(ef_slm_model_new(&mq, &tq.cfg, &tq.w));
        CHECK(ef_slm_model_type(mq) == types[ti]);
        tm_reference(&tq, tok, n, ref);
        CHECK_OK(run(mq, tok, n, lq, 1, 0, 2, EF_SLM_ISA_AUTO, 0));
        double e = max_rel(lq, ref, (size_t)n * V), er = 0;
        for (int i = 0; i < n * V; i++) er += (lq[i] - ref[i]) * (lq[i] - ref[i]);
        er = sqrt(er / (n * V)) / rms(ref, (size_t)n * V);
        double d = 0;
        for (int i = 0; i < n * V; i++) d += (lq[i] - lfd[i]) * (lq[i] - lfd[i]);
        d = sqrt(d / (n * V)) / rms(lfd, (size_t)n * V);
        int agree = 0;
        for (int t = 0; t < n; t++) {
            int a = 0, b = 0;
            for (int v = 1; v < V; v++) {
                if (lq[t * V + v] > lq[t * V + a]) a = v;
                if (lf[t * V + v] > lf[t * V + b]) b = v;
            }
            agree += a == b;
        }
        printf("%s %s: against the reference on its own weights: max error %.2e, RMS error %.2e (of RMS); "
               "RMS difference from f32 %.2e; argmax agrees at %d/%d positions\n",
               name, ef_slm_type_name(types[ti]), e, er, d, agree, n);
        if (types[ti] == EF_SLM_F16) {
            CHECK_MSG(e <= 2e-2, "%s f16 error %.3g", name, e);
        } else {
            CHECK_MSG(er <= 4e-2 && e <= 0.25, "%s %s error: RMS %.3g, max %.3g", name,
                      ef_slm_type_name(types[ti]), er, e);
        }
        CHECK_MSG(d <= vs_f32[ti], "%s %s vs f32 %.3g", name, ef_slm_type_name(types[ti]), d);
        /* kernel sets agree bit for bit on quantized weights too */
        float *alt = malloc(sizeof(float) * (size_t)n * V);
        CHECK_OK(run(mq, tok, n, alt, 1, 0, 2, EF_SLM_ISA_SCALAR, 0));
        CHECK_MSG(memcmp(alt, lq, sizeof(float) * (size_t)n * V) == 0, "%s %s: scalar differs from %s", name,
                  ef_slm_type_name(types[ti]), ef_slm_isa_name(EF_SLM_ISA_AUTO));
        CHECK_OK(run(mq, tok, n, alt, 1, 3, 3, EF_SLM_ISA_AUTO, 1));
        if (types[ti] == EF_SLM_F16) /* single-token passes: ggml_vec_dot's order (see above) */
            CHECK_OK(run(mq, tok, n, lq, 1, 1, 1, EF_SLM_ISA_SCALAR, 0));
        CHECK_MSG(memcmp(alt, lq, sizeof(float) * (size_t)n * V) == 0, "%s %s: one-by-one differs", name,
                  ef_slm_type_name(types[ti]));
        free(alt);
        ef_slm_model_free(mq);
        tm_free(&tq);
    }
    free(lf);
    free(lq);
    free(ref);
    free(lfd);
    ef_slm_model_free(mf);
    tm_free(&tf);
}

static void check_errors(void) {
    tm_model tm;
    tm_make(&tm, &CFG_GQA, 1, EF_SLM_Q8_0, 0, 3);
    ef_slm_model *m = NULL;
    ef_slm_config bad = CFG_GQA;
    bad.n_kv_heads = 3;
    CHECK(ef_slm_model_new(&m, &bad, &tm.w) == EF_ERR_INVALID && m == NULL);
    bad = CFG_GQA;
    bad.dim = 60; /* head size 15: odd */
    CHECK(ef_slm_model_new(&m, &bad, &tm.w) == EF_ERR_INVALID);
    bad = CFG_GQA;
    bad.eos_id = bad.vocab;
    CHECK(ef_slm_model_new(&m, &bad, &tm.w) == EF_ERR_INVALID);
    bad = CFG_GQA;
    bad.rms_eps = 0;
    CHECK(ef_slm_model_new(&m, &bad, &tm.w) == EF_ERR_INVALID);
    ef_slm_layer_weights keep = tm.lw[1];
    tm.lw[1].w_up.type = (ef_slm_type)12; /* Q4_K: not supported */
    CHECK(ef_slm_model_new(&m, &CFG_GQA, &tm.w) == EF_ERR_UNSUPPORTED);
    CHECK(strstr(ef_last_error(), "layer 1 ffn_up") != NULL);
    tm.lw[1] = keep;
    tm.lw[0].attn_norm.type = EF_SLM_Q8_0;
    CHECK(ef_slm_model_new(&m, &CFG_GQA, &tm.w) == EF_ERR_INVALID);
    tm.lw[0].attn_norm.type = EF_SLM_F32;
    CHECK_OK(ef_slm_model_new(&m, &CFG_GQA, &tm.w));
    CHECK(ef_slm_model_numel(m) == 120 * 64 + 64 + 2 * (2 * 64 + 2 * 64 * 64 + 2 * 32 * 64 + 3 * 128 * 64));

    ef_slm_ctx_opts o = {0};
    o.n_ctx = 8;
    o.n_threads = 2;
    ef_slm_ctx *c;
    CHECK_OK(ef_slm_ctx_new(&c, m, &o));
    CHECK(ef_slm_ctx_size(c) == 8 && ef_slm_ctx_pos(c) == 0);
    int32_t tok[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    float *lg = malloc(sizeof(float) * 120 * 9), *lg2 = malloc(sizeof(float) * 120);
    CHECK_OK(ef_slm_eval(c, tok, 3, lg, 0));
    int32_t oob[2] = {4, 120};
    CHECK(ef_slm_eval(c, oob, 2, lg, 0) == EF_ERR_INVALID && ef_slm_ctx_pos(c) == 3);
    oob[1] = -1;
    CHECK(ef_slm_eval(c, oob, 2, lg, 0) == EF_ERR_INVALID && ef_slm_ctx_pos(c) == 3);
    CHECK(ef_slm_eval(c, tok, 6, lg, 0) == EF_ERR_RANGE && ef_slm_ctx_pos(c) == 3);
    CHECK_OK(ef_slm_eval(c, tok + 3, 5, lg, 0));
    CHECK(ef_slm_ctx_pos(c) == 8);
    CHECK(ef_slm_eval(c, tok, 1, lg, 0) == EF_ERR_RANGE);
    /* rewind and recompute: the same logits */
    CHECK(ef_slm_ctx_rewind(c, 9) == EF_ERR_RANGE);
    CHECK_OK(ef_slm_ctx_rewind(c, 7));
    CHECK_OK(ef_slm_eval(c, tok + 7, 1, lg2, 0));
    CHECK(memcmp(lg, lg2, sizeof(float) * 120) == 0);
    ef_slm_ctx_free(c);
    o.n_ctx = -1;
    CHECK(ef_slm_ctx_new(&c, m, &o) == EF_ERR_INVALID);
    free(lg);
    free(lg2);
    ef_slm_model_free(m);
    tm_free(&tm);
}

int main(void) {
    check_against_reference(&CFG_MHA, 0, "mha-untied");
    check_against_reference(&CFG_GQA, 1, "gqa-tied");
    check_types(&CFG_MHA, 0, "mha-untied");
    check_types(&CFG_GQA, 1, "gqa-tied");
    check_errors();
    return tu_finish("test_slm_forward");
}
