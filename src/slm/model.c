/*
 * Inference models over weights in memory: checks the configuration and
 * every tensor's type, converts the norm vectors to F32 (the only copy the
 * engine makes) and keeps pointers to the matrices, which are used in
 * place (for a GGUF file, inside its read-only mapping).
 */
#include <math.h>
#include <stdio.h>

#include "model.h"

static int type_ok(ef_slm_type t) {
    return t == EF_SLM_F32 || t == EF_SLM_F16 || t == EF_SLM_Q8_0 || t == EF_SLM_Q4_0;
}

ef_status ef__slm_check_config(const ef_slm_config *c) {
    if (c->vocab <= 0 || c->dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->ffn_dim <= 0 || c->ctx_len <= 0)
        return ef__fail(EF_ERR_INVALID,
                        "model config: vocab %d, dim %d, layers %d, heads %d, kv heads %d, ffn %d and "
                        "context %d must all be positive",
                        c->vocab, c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->ffn_dim, c->ctx_len);
    if (c->dim % c->n_heads != 0 || (c->dim / c->n_heads) % 2 != 0)
        return ef__fail(EF_ERR_INVALID, "model config: dim %d is not n_heads %d times an even head size",
                        c->dim, c->n_heads);
    if (c->n_heads % c->n_kv_heads != 0)
        return ef__fail(EF_ERR_INVALID, "model config: n_kv_heads %d does not divide n_heads %d",
                        c->n_kv_heads, c->n_heads);
    if (!(c->rms_eps > 0.0f) || !isfinite(c->rms_eps))
        return ef__fail(EF_ERR_INVALID, "model config: rms_eps %g must be positive", (double)c->rms_eps);
    if (!(c->rope_theta > 0.0f) || !isfinite(c->rope_theta))
        return ef__fail(EF_ERR_INVALID, "model config: rope_theta %g must be positive",
                        (double)c->rope_theta);
    if (c->bos_id < -1 || c->bos_id >= c->vocab || c->eos_id < -1 || c->eos_id >= c->vocab)
        return ef__fail(EF_ERR_INVALID, "model config: bos %d / eos %d outside the vocabulary of %d",
                        c->bos_id, c->eos_id, c->vocab);
    /* keep every size computed in int64 far from overflow */
    if (c->dim > (1 << 20) || c->ffn_dim > (1 << 22) || c->vocab > (1 << 24) || c->n_layers > 4096 ||
        c->ctx_len > (1 << 24))
        return ef__fail(EF_ERR_RANGE, "model config: sizes too large");
    return EF_OK;
}

static ef_status set_mat(ef__slm_mat *m, const ef_slm_tensor *t, int64_t rows, int64_t cols,
                         const char *name, int layer) {
    char where[64];
    if (layer >= 0) snprintf(where, sizeof where, "layer %d %s", layer, name);
    else snprintf(where, sizeof where, "%s", name);
    if (!t->data) return ef__fail(EF_ERR_INVALID, "model weights: %s has no data", where);
    if (!type_ok(t->type))
        return ef__fail(EF_ERR_UNSUPPORTED, "model weights: %s has type %d (supported: f32, f16, q8_0, q4_0)",
                        where, (int)t->type);
    size_t rb = ef__slm_row_bytes(t->type, cols);
    if (rb == 0)
        return ef__fail(EF_ERR_INVALID, "model weights: %s is %s with rows of %lld elements, not a multiple of 32",
                        where, ef_slm_type_name(t->type), (long long)cols);
    m->type = t->type;
    m->data = t->data;
    m->rows = rows;
    m->cols = cols;
    m->row_bytes = rb;
    return EF_OK;
}

/* Converts an F32 or F16 norm vector of n elements into dst. */
static ef_status set_norm(float *dst, const ef_slm_tensor *t, int n, const char *name, int layer) {
    if (!t->data || (t->type != EF_SLM_F32 && t->type != EF_SLM_F16)) {
        if (layer >= 0)
            return ef__fail(EF_ERR_INVALID, "model weights: layer %d %s must be f32 or f16 data", layer, name);
        return ef__fail(EF_ERR_INVALID, "model weights: %s must be f32 or f16 data", name);
    }
    ef__slm_dequant_row(t->type, t->data, 0, 0, n, dst);
    for (int i = 0; i < n; i++)
        if (!isfinite(dst[i])) return ef__fail(EF_ERR_FORMAT, "model weights: %s has a non-finite value", name);
    return EF_OK;
}

static int64_t mat_bytes(const ef__slm_mat *m) { return (int64_t)m->row_bytes * m->rows; }

ef_status ef_slm_model_new(ef_slm_model **out, const ef_slm_config *cfg, const ef_slm_weights *w) {
    *out = NULL;
    if (!cfg || !w) return ef__fail(EF_ERR_INVALID, "ef_slm_model_new: NULL argument");
    ef_status st = ef__slm_check_config(cfg);
    if (st != EF_OK) return st;
    if (!w->layers) return ef__fail(EF_ERR_INVALID, "model weights: no layers");
    ef_slm_model *m = ef_calloc(1, sizeof *m);
    if (!m) return EF_ERR_NOMEM;
    m->cfg = *cfg;
    const int64_t D = cfg->dim, F = cfg->ffn_dim, V = cfg->vocab, L = cfg->n_layers;
    m->head_dim = cfg->dim / cfg->n_heads;
    m->kv_dim = m->head_dim * cfg->n_kv_heads;
    const int64_t KV = m->kv_dim;
    m->layers = ef_calloc((size_t)L, sizeof *m->layers);
    m->norms = ef_malloc(sizeof(float) * (size_t)(D * (2 * L + 1)));
    if (!m->layers || !m->norms) {
        st = EF_ERR_NOMEM;
        goto fail;
    }
    if ((st = set_mat(&m->tok_embd, &w->tok_embd, V, D, "token_embd", -1)) != EF_OK) goto fail;
    if (w->output.data) {
        if ((st = set_mat(&m->output, &w->output, V, D, "output", -1)) != EF_OK) goto fail;
    } else {
        m->output = m->tok_embd;
    }
    if ((st = set_norm(m->norms, &w->output_norm, cfg->dim, "output_norm", -1)) != EF_OK) goto fail;
    m->output_norm = m->norms;
    m->numel = V * D + D + (w->output.data ? V * D : 0);
    m->bytes = mat_bytes(&m->tok_embd) + (w->output.data ? mat_bytes(&m->output) : 0);
    for (int l = 0; l < cfg->n_layers; l++) {
        const ef_slm_layer_weights *lw = &w->layers[l];
        ef__slm_layer *ly = &m->layers[l];
        float *an = m->norms + D * (1 + 2 * l), *fn = an + D;
        if ((st = set_norm(an, &lw->attn_norm, cfg->dim, "attn_norm", l)) != EF_OK ||
            (st = set_norm(fn, &lw->ffn_norm, cfg->dim, "ffn_norm", l)) != EF_OK ||
            (st = set_mat(&ly->wq, &lw->wq, D, D, "attn_q", l)) != EF_OK ||
            (st = set_mat(&ly->wk, &lw->wk, KV, D, "attn_k", l)) != EF_OK ||
            (st = set_mat(&ly->wv, &lw->wv, KV, D, "attn_v", l)) != EF_OK ||
            (st = set_mat(&ly->wo, &lw->wo, D, D, "attn_output", l)) != EF_OK ||
            (st = set_mat(&ly->w_gate, &lw->w_gate, F, D, "ffn_gate", l)) != EF_OK ||
            (st = set_mat(&ly->w_up, &lw->w_up, F, D, "ffn_up", l)) != EF_OK ||
            (st = set_mat(&ly->w_down, &lw->w_down, D, F, "ffn_down", l)) != EF_OK)
            goto fail;
        ly->attn_norm = an;
        ly->ffn_norm = fn;
        m->numel += 2 * D + 2 * D * D + 2 * KV * D + 3 * F * D;
        m->bytes += mat_bytes(&ly->wq) + mat_bytes(&ly->wk) + mat_bytes(&ly->wv) + mat_bytes(&ly->wo) +
                    mat_bytes(&ly->w_gate) + mat_bytes(&ly->w_up) + mat_bytes(&ly->w_down) +
                    (int64_t)sizeof(float) * 2 * D;
    }
    m->bytes += (int64_t)sizeof(float) * D;
    *out = m;
    return EF_OK;
fail:
    ef_free(m->layers);
    ef_free(m->norms);
    ef_free(m);
    return st;
}

void ef_slm_model_free(ef_slm_model *m) {
    if (!m) return;
    if (m->owner_free) m->owner_free(m->owner);
    ef_free(m->layers);
    ef_free(m->norms);
    ef_free(m);
}

const ef_slm_config *ef_slm_model_config(const ef_slm_model *m) { return &m->cfg; }

int64_t ef_slm_model_numel(const ef_slm_model *m) { return m->numel; }

int64_t ef_slm_model_bytes(const ef_slm_model *m) { return m->bytes; }

ef_slm_type ef_slm_model_type(const ef_slm_model *m) { return m->layers[0].wq.type; }
