/*
 * SGD and AdamW on flat vectors, following PyTorch's formulas exactly so a
 * run can be checked against torch.optim step by step.
 */
#include <math.h>
#include <string.h>

#include "core/core_internal.h"
#include "edgefl/optim.h"

struct ef_optim {
    ef_optim_config cfg;
    size_t n;
    uint64_t t;
    float *m; /* SGD momentum buffer or Adam first moment */
    float *v; /* Adam second moment */
};

ef_optim_config ef_optim_defaults(ef_optim_kind kind) {
    ef_optim_config c = {.kind = kind, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    if (kind == EF_OPTIM_ADAMW) {
        c.lr = 1e-3f;
        c.weight_decay = 0.01f;
    } else {
        c.lr = 0.01f;
    }
    return c;
}

ef_status ef_optim_kind_parse(const char *name, ef_optim_kind *out) {
    if (strcmp(name, "sgd") == 0) *out = EF_OPTIM_SGD;
    else if (strcmp(name, "adamw") == 0) *out = EF_OPTIM_ADAMW;
    else return ef__fail(EF_ERR_INVALID, "unknown optimizer '%s' (expected sgd or adamw)", name);
    return EF_OK;
}

const char *ef_optim_kind_name(ef_optim_kind kind) {
    return kind == EF_OPTIM_ADAMW ? "adamw" : "sgd";
}

ef_status ef_optim_new(ef_optim **out, const ef_optim_config *cfg, size_t n) {
    *out = NULL;
    if (!(cfg->lr > 0.0f) || !isfinite(cfg->lr))
        return ef__fail(EF_ERR_INVALID, "learning rate must be a positive number");
    if (!(cfg->weight_decay >= 0.0f) || !isfinite(cfg->weight_decay))
        return ef__fail(EF_ERR_INVALID, "weight decay must be >= 0");
    if (cfg->kind == EF_OPTIM_SGD) {
        if (!(cfg->momentum >= 0.0f && cfg->momentum < 1.0f))
            return ef__fail(EF_ERR_INVALID, "momentum must be in [0, 1)");
        if (cfg->nesterov && cfg->momentum == 0.0f)
            return ef__fail(EF_ERR_INVALID, "Nesterov momentum needs momentum > 0");
    } else if (cfg->kind == EF_OPTIM_ADAMW) {
        if (!(cfg->beta1 >= 0.0f && cfg->beta1 < 1.0f) || !(cfg->beta2 >= 0.0f && cfg->beta2 < 1.0f))
            return ef__fail(EF_ERR_INVALID, "Adam betas must be in [0, 1)");
        if (!(cfg->eps > 0.0f)) return ef__fail(EF_ERR_INVALID, "Adam eps must be > 0");
    } else {
        return ef__fail(EF_ERR_INVALID, "unknown optimizer kind %d", (int)cfg->kind);
    }
    ef_optim *o = ef_calloc(1, sizeof *o);
    if (!o) return EF_ERR_NOMEM;
    o->cfg = *cfg;
    o->n = n;
    int need_m = cfg->kind == EF_OPTIM_ADAMW || cfg->momentum > 0.0f;
    if (need_m && !(o->m = ef_calloc(n ? n : 1, sizeof(float)))) goto fail;
    if (cfg->kind == EF_OPTIM_ADAMW && !(o->v = ef_calloc(n ? n : 1, sizeof(float)))) goto fail;
    *out = o;
    return EF_OK;
fail:
    ef_optim_free(o);
    return EF_ERR_NOMEM;
}

void ef_optim_free(ef_optim *o) {
    if (!o) return;
    ef_free(o->m);
    ef_free(o->v);
    ef_free(o);
}

void ef_sgd_update(float *restrict params, float *restrict buf, const float *restrict grads,
                   size_t n, float lr, float momentum, float weight_decay, int nesterov,
                   int first) {
    // params, buf, grads (n)
    if (momentum == 0.0f) {
        for (size_t i = 0; i < n; i++) params[i] -= lr * (grads[i] + weight_decay * params[i]);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float g = grads[i] + weight_decay * params[i];
        float b = first ? g : momentum * buf[i] + g;
        buf[i] = b;
        params[i] -= lr * (nesterov ? g + momentum * b : b);
    }
}

void ef_adamw_update(float *restrict params, float *restrict m, float *restrict v,
                     const float *restrict grads, size_t n, float lr, float beta1, float beta2,
                     float eps, float weight_decay, uint64_t t) {
    // params, m, v, grads (n)
    /* bias corrections in double, as torch.optim.AdamW computes them */
    float bc1 = (float)(1.0 - pow((double)beta1, (double)t));
    float bc2 = (float)(1.0 - pow((double)beta2, (double)t));
    float step = lr / bc1;
    float bc2_sqrt = sqrtf(bc2);
    float decay = 1.0f - lr * weight_decay;
    for (size_t i = 0; i < n; i++) {
        float g = grads[i];
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        params[i] = params[i] * decay - step * mi / (sqrtf(vi) / bc2_sqrt + eps);
    }
}

typedef struct step_ctx {
    ef_optim *o;
    float *params;
    const float *grads;
} step_ctx;

static void step_range(void *c, int64_t b, int64_t e, int thread) {
    EF_UNUSED(thread);
    step_ctx *s = c;
    ef_optim *o = s->o;
    const ef_optim_config *k = &o->cfg;
    size_t n = (size_t)(e - b);
    if (k->kind == EF_OPTIM_SGD)
        ef_sgd_update(s->params + b, o->m ? o->m + b : NULL, s->grads + b, n, k->lr, k->momentum,
                      k->weight_decay, k->nesterov, o->t == 1);
    else
        ef_adamw_update(s->params + b, o->m + b, o->v + b, s->grads + b, n, k->lr, k->beta1,
                        k->beta2, k->eps, k->weight_decay, o->t);
}

void ef_optim_step(ef_optim *o, float *params, const float *grads, ef_pool *pool) {
    o->t++;
    step_ctx s = {o, params, grads};
    if (o->n < 65536) pool = NULL;
    ef_pool_for(pool, (int64_t)o->n, step_range, &s);
}

void ef_optim_set_lr(ef_optim *o, float lr) { o->cfg.lr = lr; }

float ef_optim_get_lr(const ef_optim *o) { return o->cfg.lr; }

void ef_optim_reset(ef_optim *o) {
    o->t = 0;
    if (o->m) memset(o->m, 0, o->n * sizeof(float));
    if (o->v) memset(o->v, 0, o->n * sizeof(float));
}

uint64_t ef_optim_steps(const ef_optim *o) { return o->t; }
