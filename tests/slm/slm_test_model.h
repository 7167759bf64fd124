/*
 * Shared by the inference tests: a small random llama model in memory (F32
 * master weights, optionally stored as F16, Q8_0 or Q4_0) and a
 * straightforward double-precision reference forward pass written from the
 * architecture's definition (no KV cache: every position recomputed).
 */
#ifndef EDGEFL_TEST_SLM_MODEL_H
#define EDGEFL_TEST_SLM_MODEL_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgefl/rng.h"
#include "edgefl/slm.h"
#include "slm/slm_internal.h"

typedef struct tm_model {
    ef_slm_config cfg;
    int tied;
    /* F32 masters */
    float *embd, *out, *out_norm;
    float **attn_norm, **ffn_norm, **wq, **wk, **wv, **wo, **wg, **wu, **wd;
    /* storage in the chosen type and the engine's view of it */
    void *store[1024];
    int n_store;
    ef_slm_layer_weights *lw;
    ef_slm_weights w;
} tm_model;

static inline float tm_normal(ef_rng *r) { return (float)ef_rng_normal(r); }

static inline float *tm_mat(ef_rng *r, int64_t rows, int64_t cols, float scale) {
    float *m = malloc(sizeof(float) * (size_t)(rows * cols));
    for (int64_t i = 0; i < rows * cols; i++) m[i] = tm_normal(r) * scale;
    return m;
}

static inline float *tm_norm(ef_rng *r, int n) {
    float *v = malloc(sizeof(float) * (size_t)n);
    for (int i = 0; i < n; i++) v[i] = 1.0f + 0.2f * tm_normal(r);
    return v;
}

/* ggml's reference Q4_0 quantizer (quantize_row_q4_0_ref). */
static inline void tm_quant_q4_0(const float *x, void *dst, int64_t n) {
    ef__blk_q4_0 *y = dst;
    for (int64_t b = 0; b < n / 32; b++, x += 32) {
        float amax = 0.0f, mx = 0.0f;
        for (int j = 0; j < 32; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                mx = x[j];
            }
        const float d = mx / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = ef__f32_to_f16(d);
        for (int j = 0; j < 16; j++) {
            int q0 = (int)(x[j] * id + 8.5f), q1 = (int)(x[j + 16] * id + 8.5f);
            q0 = q0 > 15 ? 15 : q0;
            q1 = q1 > 15 ? 15 : q1;
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

/* Stores a (rows, cols) F32 matrix as type t; returns the engine tensor. */
static inline ef_slm_tensor tm_store(tm_model *m, const float *src, int64_t rows, int64_t cols, ef_slm_type t) {
    size_t rb = ef__slm_row_bytes(t, cols);
    void *p = malloc(rb * (size_t)rows);
    for (int64_t r = 0; r < rows; r++) {
        char *d = (char *)p + rb * (size_t)r;
        const float *s = src + r * cols;
        if (t == EF_SLM_F32) memcpy(d, s, rb);
        else if (t == EF_SLM_F16) ef__slm_kernels_scalar.to_f16((uint16_t *)d, s, cols);
        else if (t == EF_SLM_Q8_0) ef__slm_kernels_scalar.quant_q8_0(d, s, cols);
        else tm_quant_q4_0(s, d, cols);
    }
    m->store[m->n_store++] = p;
    ef_slm_tensor tt = {t, p};
    return tt;
}

/* Replaces a master matrix by its stored values (what the engine computes
 * with), so the reference can run on exactly the same weights. */
static inline void tm_dequant_into(float *dst, ef_slm_tensor t, int64_t rows, int64_t cols) {
    size_t rb = ef__slm_row_bytes(t.type, cols);
    for (int64_t r = 0; r < rows; r++) ef__slm_dequant_row(t.type, t.data, rb, r, cols, dst + r * cols);
}

static inline void tm_free(tm_model *m) {
    int L = m->cfg.n_layers;
    float **arrs[9] = {m->attn_norm, m->ffn_norm, m->wq, m->wk, m->wv, m->wo, m->wg, m->wu, m->wd};
    for (int a = 0; a < 9; a++) {
        for (int l = 0; l < L; l++) free(arrs[a][l]);
        free(arrs[a]);
    }
    free(m->embd);
    free(m->out);
    free(m->out_norm);
    for (int i = 0; i < m->n_store; i++) free(m->store[i]);
    free(m->lw);
    memset(m, 0, sizeof *m);
}

/*
 * A random model. Weights are scaled so attention is far from uniform and
 * logits spread over several units (a test with near-uniform logits would
 * pass anything). Matrices are stored as `t` (embedding and output too);
 * with `deq`, the masters are replaced by the stored values.
 */
static inline void tm_make(tm_model *m, const ef_slm_config *cfg, int tied, ef_slm_type t, int deq, uint64_t seed) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->tied = tied;
    ef_rng r;
    ef_rng_seed(&r, seed);
    const int L = cfg->n_layers, D = cfg->dim, F = cfg->ffn_dim, V = cfg->vocab;
    const int KV = cfg->dim / cfg->n_heads * cfg->n_kv_heads;
    float s_in = 1.0f / sqrtf((float)D), s_ff = 1.0f / sqrtf((float)F);
    m->embd = tm_mat(&r, V, D, 1.0f);
    m->out = tied ? NULL : tm_mat(&r, V, D, s_in * 2.0f);
    m->out_norm = tm_norm(&r, D);
    float ***arrs[9] = {&m->attn_norm, &m->ffn_norm, &m->wq, &m->wk, &m->wv, &m->wo, &m->wg, &m->wu, &m->wd};
    for (int a = 0; a < 9; a++) *arrs[a] = calloc((size_t)L, sizeof(float *));
    m->lw = calloc((size_t)L, sizeof *m->lw);
    for (int l = 0; l < L; l++) {
        m->attn_norm[l] = tm_norm(&r, D);
        m->ffn_norm[l] = tm_norm(&r, D);
        m->wq[l] = tm_mat(&r, D, D, 2.0f * s_in);
        m->wk[l] = tm_mat(&r, KV, D, 2.0f * s_in);
        m->wv[l] = tm_mat(&r, KV, D, s_in);
        m->wo[l] = tm_mat(&r, D, D, s_in);
        m->wg[l] = tm_mat(&r, F, D, s_in);
        m->wu[l] = tm_mat(&r, F, D, s_in);
        m->wd[l] = tm_mat(&r, D, F, s_ff);
    }
    /* engine view */
    m->w.tok_embd = tm_store(m, m->embd, V, D, t);
    if (deq) tm_dequant_into(m->embd, m->w.tok_embd, V, D);
    if (!tied) {
        m->w.output = tm_store(m, m->out, V, D, t);
        if (deq) tm_dequant_into(m->out, m->w.output, V, D);
    }
    m->w.output_norm = tm_store(m, m->out_norm, 1, D, EF_SLM_F32);
    for (int l = 0; l < L; l++) {
        ef_slm_layer_weights *lw = &m->lw[l];
        lw->attn_norm = tm_store(m, m->attn_norm[l], 1, D, EF_SLM_F32);
        lw->ffn_norm = tm_store(m, m->ffn_norm[l], 1, D, EF_SLM_F32);
#define ST(field, arr, rows, cols)                                      \
    lw->field = tm_store(m, arr[l], rows, cols, t);                     \
    if (deq) tm_dequant_into(arr[l], lw->field, rows, cols);
        ST(wq, m->wq, D, D)
        ST(wk, m->wk, KV, D)
        ST(wv, m->wv, KV, D)
        ST(wo, m->wo, D, D)
        ST(w_gate, m->wg, F, D)
        ST(w_up, m->wu, F, D)
        ST(w_down, m->wd, D, F)
#undef ST
    }
    m->w.layers = m->lw;
}

static inline void tm_matvec(double *y, const float *w, const double *x, int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int c = 0; c < cols; c++) s += (double)w[(size_t)r * cols + c] * x[c];
        y[r] = s;
    }
}

static inline void tm_rmsnorm(double *y, const double *x, const float *w, int n, double eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double sc = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) y[i] = x[i] * sc * w[i];
}

static inline void tm_rope(double *v, int pos, int hd, double theta) {
    for (int i = 0; i < hd / 2; i++) {
        double a = pos * pow(theta, -2.0 * i / hd), c = cos(a), s = sin(a);
        double x0 = v[2 * i], x1 = v[2 * i + 1];
        v[2 * i] = x0 * c - x1 * s;
        v[2 * i + 1] = x0 * s + x1 * c;
    }
}

/* Reference logits for every position of tokens[0..n): out is (n, vocab). */
static inline void tm_reference(const tm_model *m, const int32_t *tok, int n, double *out) {
    const ef_slm_config *c = &m->cfg;
    const int L = c->n_layers, D = c->dim, F = c->ffn_dim, V = c->vocab, H = c->n_heads;
    const int hd = D / H, HKV = c->n_kv_heads, KV = hd * HKV, grp = H / HKV;
    double *x = malloc(sizeof(double) * (size_t)D), *xn = malloc(sizeof(double) * (size_t)D);
    double *q = malloc(sizeof(double) * (size_t)D), *att = malloc(sizeof(double) * (size_t)D);
    double *tmp = malloc(sizeof(double) * (size_t)(D > F ? D : F));
    double *g = malloc(sizeof(double) * (size_t)F), *u = malloc(sizeof(double) * (size_t)F);
    double *K = malloc(sizeof(double) * (size_t)L * n * KV), *Vv = malloc(sizeof(double) * (size_t)L * n * KV);
    double *sc = malloc(sizeof(double) * (size_t)n);
    for (int t = 0; t < n; t++) {
        for (int i = 0; i < D; i++) x[i] = m->embd[(size_t)tok[t] * D + i];
        for (int l = 0; l < L; l++) {
            tm_rmsnorm(xn, x, m->attn_norm[l], D, c->rms_eps);
            tm_matvec(q, m->wq[l], xn, D, D);
            double *kt = K + ((size_t)l * n + t) * KV, *vt = Vv + ((size_t)l * n + t) * KV;
            tm_matvec(kt, m->wk[l], xn, KV, D);
            tm_matvec(vt, m->wv[l], xn, KV, D);
            for (int h = 0; h < H; h++) tm_rope(q + h * hd, t, hd, c->rope_theta);
            for (int h = 0; h < HKV; h++) tm_rope(kt + h * hd, t, hd, c->rope_theta);
            for (int h = 0; h < H; h++) {
                int gi = h / grp;
                double mx = -INFINITY;
                for (int s = 0; s <= t; s++) {
                    const double *ks = K + ((size_t)l * n + s) * KV + gi * hd;
                    double d = 0;
                    for (int i = 0; i < hd; i++) d += q[h * hd + i] * ks[i];
                    sc[s] = d / sqrt((double)hd);
                    mx = sc[s] > mx ? sc[s] : mx;
                }
                double sum = 0;
                for (int s = 0; s <= t; s++) sum += (sc[s] = exp(sc[s] - mx));
                for (int i = 0; i < hd; i++) {
                    double o = 0;
                    for (int s = 0; s <= t; s++) o += sc[s] * Vv[((size_t)l * n + s) * KV + gi * hd + i];
                    att[h * hd + i] = o / sum;
                }
            }
            tm_matvec(tmp, m->wo[l], att, D, D);
            for (int i = 0; i < D; i++) x[i] += tmp[i];
            tm_rmsnorm(xn, x, m->ffn_norm[l], D, c->rms_eps);
            tm_matvec(g, m->wg[l], xn, F, D);
            tm_matvec(u, m->wu[l], xn, F, D);
            for (int i = 0; i < F; i++) g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
            tm_matvec(tmp, m->wd[l], g, D, F);
            for (int i = 0; i < D; i++) x[i] += tmp[i];
        }
        tm_rmsnorm(xn, x, m->out_norm, D, c->rms_eps);
        for (int v = 0; v < V; v++) {
            const float *w = m->tied ? m->embd + (size_t)v * D : m->out + (size_t)v * D;
            double s = 0;
            for (int i = 0; i < D; i++) s += (double)w[i] * xn[i];
            out[(size_t)t * V + v] = s;
        }
    }
    free(x);
    free(xn);
    free(q);
    free(att);
    free(tmp);
    free(g);
    free(u);
    free(K);
    free(Vv);
    free(sc);
}

#endif /* EDGEFL_TEST_SLM_MODEL_H */
