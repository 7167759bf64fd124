/*
 * Sequential image classifiers (logistic regression, MLP, the FedAvg CNN)
 * assembled from the nn kernels. Layers are described once; the same layout
 * code runs twice over the activation arena (measure, then hand out), so the
 * activations for `max_batch` live in one block. ReLU runs in place on the
 * previous layer's output and its backward masks the gradient in place,
 * which halves activation memory for the CNN.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/core_internal.h"
#include "edgefl/arena.h"
#include "edgefl/model.h"
#include "edgefl/nn.h"
#include "edgefl/rng.h"

typedef enum layer_kind { L_LINEAR, L_CONV, L_RELU, L_MAXPOOL } layer_kind;

typedef struct layer {
    layer_kind kind;
    int in_c, in_h, in_w;    /* per-example input shape (flattened for linear) */
    int out_c, out_h, out_w; /* per-example output shape */
    int k, stride, pad;
    long wt, bt;             /* parameter tensor indices, -1 if none */
    float *out;              /* (max_batch, out_size); aliases the input for ReLU */
    float *dout;             /* gradient of out */
    int32_t *argmax;         /* maxpool only */
} layer;

#define MAX_LAYERS 16

struct ef_model {
    ef_model_config cfg;
    ef_pool *pool;
    ef_params *params;
    float *grads;
    int n_layers;
    layer L[MAX_LAYERS];
    ef_arena act;
    float *work;       /* conv scratch, the largest any layer needs */
    size_t work_floats;
    float *probs;      /* (max_batch, n_classes) */
    float *losses;     /* (max_batch) */
    float *dlosses;    /* (max_batch) */
    const float *x;    /* input of the last forward */
    const int32_t *y;  /* labels of the last forward */
    int n;             /* batch size of the last forward */
};

const char *ef_model_arch_name(ef_model_arch arch) {
    switch (arch) {
    case EF_MODEL_LOGREG: return "logreg";
    case EF_MODEL_MLP: return "mlp";
    case EF_MODEL_CNN: return "cnn";
    case EF_MODEL_LENET5: return "lenet5";
    }
    return "unknown";
}

ef_status ef_model_arch_parse(const char *name, ef_model_arch *out) {
    for (int a = EF_MODEL_LOGREG; a <= EF_MODEL_LENET5; a++)
        if (strcmp(name, ef_model_arch_name((ef_model_arch)a)) == 0) {
            *out = (ef_model_arch)a;
            return EF_OK;
        }
    return ef__fail(EF_ERR_INVALID, "unknown model '%s' (expected logreg, mlp, cnn or lenet5)",
                    name);
}

static size_t layer_out_size(const layer *l) { return (size_t)l->out_c * l->out_h * l->out_w; }
static size_t layer_in_size(const layer *l) { return (size_t)l->in_c * l->in_h * l->in_w; }

/* Appends a layer whose input is the previous layer's output. */
static layer *push(ef_model *m, layer_kind kind, int c, int h, int w) {
    layer *l = &m->L[m->n_layers++];
    memset(l, 0, sizeof *l);
    l->kind = kind;
    l->wt = l->bt = -1;
    if (m->n_layers == 1) {
        l->in_c = c, l->in_h = h, l->in_w = w;
    } else {
        const layer *p = &m->L[m->n_layers - 2];
        l->in_c = p->out_c, l->in_h = p->out_h, l->in_w = p->out_w;
    }
    return l;
}

static ef_status add_linear(ef_model *m, const char *name, int out) {
    const ef_model_config *c = &m->cfg;
    layer *l = push(m, L_LINEAR, c->c, c->h, c->w);
    /* a linear layer sees its input flattened (NCHW is already contiguous) */
    l->in_c = (int)layer_in_size(l), l->in_h = 1, l->in_w = 1;
    l->out_c = out, l->out_h = 1, l->out_w = 1;
    char nm[EF_MAX_NAME];
    int64_t ws[2] = {out, l->in_c}, bs[1] = {out};
    ef_status st;
    snprintf(nm, sizeof nm, "%s.weight", name);
    if ((st = ef_params_add(m->params, nm, 2, ws)) != EF_OK) return st;
    l->wt = (long)ef_params_count(m->params) - 1;
    snprintf(nm, sizeof nm, "%s.bias", name);
    if ((st = ef_params_add(m->params, nm, 1, bs)) != EF_OK) return st;
    l->bt = l->wt + 1;
    return EF_OK;
}

static ef_status add_conv(ef_model *m, const char *name, int oc, int k, int pad) {
    const ef_model_config *c = &m->cfg;
    layer *l = push(m, L_CONV, c->c, c->h, c->w);
    l->k = k, l->stride = 1, l->pad = pad;
    l->out_c = oc;
    l->out_h = l->in_h + 2 * pad - k + 1;
    l->out_w = l->in_w + 2 * pad - k + 1;
    char nm[EF_MAX_NAME];
    int64_t ws[4] = {oc, l->in_c, k, k}, bs[1] = {oc};
    ef_status st;
    snprintf(nm, sizeof nm, "%s.weight", name);
    if ((st = ef_params_add(m->params, nm, 4, ws)) != EF_OK) return st;
    l->wt = (long)ef_params_count(m->params) - 1;
    snprintf(nm, sizeof nm, "%s.bias", name);
    if ((st = ef_params_add(m->params, nm, 1, bs)) != EF_OK) return st;
    l->bt = l->wt + 1;
    return EF_OK;
}

static void add_relu(ef_model *m) {
    const ef_model_config *c = &m->cfg;
    layer *l = push(m, L_RELU, c->c, c->h, c->w);
    l->out_c = l->in_c, l->out_h = l->in_h, l->out_w = l->in_w;
}

static void add_maxpool(ef_model *m, int k) {
    const ef_model_config *c = &m->cfg;
    layer *l = push(m, L_MAXPOOL, c->c, c->h, c->w);
    l->k = k, l->stride = k;
    l->out_c = l->in_c, l->out_h = (l->in_h - k) / k + 1, l->out_w = (l->in_w - k) / k + 1;
}

static ef_conv2d_desc conv_desc(const layer *l, int n) {
    ef_conv2d_desc d = {.N = n, .C = l->in_c, .H = l->in_h, .W = l->in_w, .OC = l->out_c,
                        .KH = l->k, .KW = l->k, .stride = l->stride, .pad = l->pad};
    return d;
}

/* Lays out activations; run once measuring, once for real. */
static void layout(ef_model *m) {
    ef_arena *a = &m->act;
    size_t B = (size_t)m->cfg.max_batch;
    for (int i = 0; i < m->n_layers; i++) {
        layer *l = &m->L[i];
        if (l->kind == L_RELU) {
            l->out = i > 0 ? m->L[i - 1].out : NULL;
            l->dout = i > 0 ? m->L[i - 1].dout : NULL;
            continue;
        }
        l->out = ef_arena_floats(a, B * layer_out_size(l));
        l->dout = ef_arena_floats(a, B * layer_out_size(l));
        if (l->kind == L_MAXPOOL)
            l->argmax = ef_arena_alloc(a, B * layer_out_size(l) * sizeof(int32_t));
    }
    m->work = ef_arena_floats(a, m->work_floats);
    int K = m->cfg.n_classes;
    m->probs = ef_arena_floats(a, B * (size_t)K);
    m->losses = ef_arena_floats(a, B);
    m->dlosses = ef_arena_floats(a, B);
}

ef_status ef_model_new(ef_model **out, const ef_model_config *cfg, ef_pool *pool) {
    *out = NULL;
    if (cfg->c <= 0 || cfg->h <= 0 || cfg->w <= 0 || cfg->c > 4096 || cfg->h > 4096 ||
        cfg->w > 4096)
        return ef__fail(EF_ERR_INVALID, "model: bad input shape %dx%dx%d", cfg->c, cfg->h,
                        cfg->w);
    if (cfg->n_classes < 2 || cfg->n_classes > 1000000)
        return ef__fail(EF_ERR_INVALID, "model: n_classes %d out of range", cfg->n_classes);
    if (cfg->max_batch < 1 || cfg->max_batch > 1 << 20)
        return ef__fail(EF_ERR_INVALID, "model: max_batch %d out of range", cfg->max_batch);
    if (cfg->arch == EF_MODEL_CNN && (cfg->h % 4 || cfg->w % 4))
        return ef__fail(EF_ERR_INVALID, "model: the CNN needs height and width divisible by 4");
    ef_status st;
    ef_model *m = ef_calloc(1, sizeof *m);
    if (!m) return EF_ERR_NOMEM;
    m->cfg = *cfg;
    m->pool = pool;
    if ((st = ef_params_new(&m->params)) != EF_OK) goto fail;
    switch (cfg->arch) {
    case EF_MODEL_LOGREG:
        if ((st = add_linear(m, "fc", cfg->n_classes)) != EF_OK) goto fail;
        break;
    case EF_MODEL_MLP:
        if ((st = add_linear(m, "fc1", 200)) != EF_OK) goto fail;
        add_relu(m);
        if ((st = add_linear(m, "fc2", 200)) != EF_OK) goto fail;
        add_relu(m);
        if ((st = add_linear(m, "fc3", cfg->n_classes)) != EF_OK) goto fail;
        break;
    case EF_MODEL_CNN:
        if ((st = add_conv(m, "conv1", 32, 5, 2)) != EF_OK) goto fail;
        add_relu(m);
        add_maxpool(m, 2);
        if ((st = add_conv(m, "conv2", 64, 5, 2)) != EF_OK) goto fail;
        add_relu(m);
        add_maxpool(m, 2);
        if ((st = add_linear(m, "fc1", 512)) != EF_OK) goto fail;
        add_relu(m);
        if ((st = add_linear(m, "fc2", cfg->n_classes)) != EF_OK) goto fail;
        break;
    case EF_MODEL_LENET5:
        if ((st = add_conv(m, "conv1", 6, 5, 0)) != EF_OK) goto fail;
        add_relu(m);
        add_maxpool(m, 2);
        if ((st = add_conv(m, "conv2", 16, 5, 0)) != EF_OK) goto fail;
        add_relu(m);
        add_maxpool(m, 2);
        if (m->L[m->n_layers - 1].out_h < 1 || m->L[m->n_layers - 1].out_w < 1) {
            st = ef__fail(EF_ERR_INVALID, "model: lenet5 needs inputs of at least 16x16");
            goto fail;
        }
        if ((st = add_linear(m, "fc1", 120)) != EF_OK) goto fail;
        add_relu(m);
        if ((st = add_linear(m, "fc2", 84)) != EF_OK) goto fail;
        add_relu(m);
        if ((st = add_linear(m, "fc3", cfg->n_classes)) != EF_OK) goto fail;
        break;
    default:
        st = ef__fail(EF_ERR_INVALID, "model: unknown architecture %d", (int)cfg->arch);
        goto fail;
    }
    if ((st = ef_params_alloc(m->params)) != EF_OK) goto fail;
    m->grads = ef_calloc(ef_params_numel(m->params), sizeof(float));
    if (!m->grads) {
        st = EF_ERR_NOMEM;
        goto fail;
    }
    int nt = ef_pool_threads(pool);
    for (int i = 0; i < m->n_layers; i++)
        if (m->L[i].kind == L_CONV) {
            ef_conv2d_desc d = conv_desc(&m->L[i], cfg->max_batch);
            size_t w = ef_conv2d_workspace(&d, nt);
            if (w > m->work_floats) m->work_floats = w;
        }
    ef_arena_measure(&m->act);
    layout(m);
    if ((st = ef_arena_reserve(&m->act, m->act.used)) != EF_OK) goto fail;
    layout(m);
    *out = m;
    return EF_OK;
fail:
    ef_model_free(m);
    return st;
}

void ef_model_free(ef_model *m) {
    if (!m) return;
    ef_params_free(m->params);
    ef_free(m->grads);
    ef_arena_free(&m->act);
    ef_free(m);
}

const ef_model_config *ef_model_get_config(const ef_model *m) { return &m->cfg; }
ef_params *ef_model_params(ef_model *m) { return m->params; }
float *ef_model_grads(ef_model *m) { return m->grads; }
size_t ef_model_numel(const ef_model *m) { return ef_params_numel(m->params); }
ef_pool *ef_model_pool(const ef_model *m) { return m->pool; }

double ef_model_train_flops(const ef_model *m) {
    double macs = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const layer *l = &m->L[i];
        if (l->kind == L_LINEAR) macs += (double)l->in_c * l->out_c;
        else if (l->kind == L_CONV)
            macs += (double)l->out_c * l->out_h * l->out_w * l->in_c * l->k * l->k;
    }
    return 3.0 * 2.0 * macs;
}
size_t ef_model_activation_bytes(const ef_model *m) { return m->act.cap; }

void ef_model_init(ef_model *m, uint64_t seed) {
    ef_rng rng;
    ef_rng_seed(&rng, seed);
    for (int i = 0; i < m->n_layers; i++) {
        const layer *l = &m->L[i];
        if (l->wt < 0) continue;
        const ef_tensor_info *wi = ef_params_info(m->params, (size_t)l->wt);
        size_t fan_in = wi->numel / (size_t)wi->shape[0];
        float bound = 1.0f / sqrtf((float)fan_in);
        float *w = ef_params_tensor(m->params, (size_t)l->wt);
        for (size_t j = 0; j < wi->numel; j++) w[j] = (2.0f * ef_rng_uniform(&rng) - 1.0f) * bound;
        if (l->bt >= 0) {
            const ef_tensor_info *bi = ef_params_info(m->params, (size_t)l->bt);
            float *b = ef_params_tensor(m->params, (size_t)l->bt);
            for (size_t j = 0; j < bi->numel; j++)
                b[j] = (2.0f * ef_rng_uniform(&rng) - 1.0f) * bound;
        }
    }
}

/* Element-wise jobs split across the pool (large buffers only: waking the
 * workers costs a few microseconds). */
typedef enum ew_kind { EW_ZERO, EW_RELU, EW_RELU_MASK } ew_kind;

typedef struct ew_ctx {
    ew_kind kind;
    float *a;       /* buffer written */
    const float *b; /* ReLU output for the mask */
} ew_ctx;

static void ew_range(void *c, int64_t b, int64_t e, int thread) {
    EF_UNUSED(thread);
    ew_ctx *x = c;
    float *restrict a = x->a;
    switch (x->kind) {
    case EW_ZERO:
        memset(a + b, 0, sizeof(float) * (size_t)(e - b));
        break;
    case EW_RELU:
        ef_relu_forward(a + b, a + b, (size_t)(e - b));
        break;
    case EW_RELU_MASK: {
        /* in-place ReLU backward: the gradient buffer is shared with the layer below */
        const float *restrict o = x->b;
        for (int64_t i = b; i < e; i++) a[i] = o[i] > 0.0f ? a[i] : 0.0f;
        break;
    }
    }
}

static void elementwise(ef_pool *pool, ew_kind kind, float *a, const float *b, size_t n) {
    ew_ctx x = {kind, a, b};
    ef_pool_for(n >= 65536 ? pool : NULL, (int64_t)n, ew_range, &x);
}

static const float *layer_input(const ef_model *m, int i) {
    return i == 0 ? m->x : m->L[i - 1].out;
}

ef_status ef_model_forward(ef_model *m, const float *x, const int32_t *y, int n, float *loss) {
    if (n < 1 || n > m->cfg.max_batch)
        return ef__fail(EF_ERR_INVALID, "model: batch of %d outside 1..%d", n, m->cfg.max_batch);
    int K = m->cfg.n_classes;
    if (y)
        for (int i = 0; i < n; i++)
            if (y[i] < 0 || y[i] >= K)
                return ef__fail(EF_ERR_INVALID, "model: label %d out of range 0..%d", (int)y[i],
                                K - 1);
    m->x = x;
    m->y = NULL;
    m->n = n;
    float *P = m->params ? ef_params_data(m->params) : NULL;
    for (int i = 0; i < m->n_layers; i++) {
        layer *l = &m->L[i];
        const float *in = layer_input(m, i);
        const float *w = l->wt >= 0 ? P + ef_params_info(m->params, (size_t)l->wt)->offset : NULL;
        const float *b = l->bt >= 0 ? P + ef_params_info(m->params, (size_t)l->bt)->offset : NULL;
        switch (l->kind) {
        case L_LINEAR:
            ef_linear_forward(l->out, in, w, b, n, l->in_c, l->out_c, m->pool);
            break;
        case L_CONV: {
            ef_conv2d_desc d = conv_desc(l, n);
            ef_conv2d_forward(l->out, in, w, b, &d, m->work, m->pool);
            break;
        }
        case L_RELU:
            elementwise(m->pool, EW_RELU, l->out, NULL, (size_t)n * layer_out_size(l));
            break;
        case L_MAXPOOL:
            ef_maxpool2d_forward(l->out, l->argmax, in, n, l->in_c, l->in_h, l->in_w, l->k,
                                 l->stride, m->pool);
            break;
        }
    }
    if (y) {
        const float *logits = m->L[m->n_layers - 1].out;
        ef_softmax_xent_forward(m->losses, m->probs, logits, y, n, K, m->pool);
        double s = 0.0;
        for (int i = 0; i < n; i++) s += m->losses[i];
        if (loss) *loss = (float)(s / n);
        m->y = y;
    }
    return EF_OK;
}

const float *ef_model_logits(const ef_model *m) { return m->L[m->n_layers - 1].out; }

ef_status ef_model_backward(ef_model *m) {
    if (!m->y) return ef__fail(EF_ERR_STATE, "model: backward without a labelled forward pass");
    int n = m->n, K = m->cfg.n_classes;
    elementwise(m->pool, EW_ZERO, m->grads, NULL, ef_params_numel(m->params));
    for (int i = 0; i < n; i++) m->dlosses[i] = 1.0f / (float)n;
    layer *last = &m->L[m->n_layers - 1];
    memset(last->dout, 0, sizeof(float) * (size_t)n * K);
    ef_softmax_xent_backward(last->dout, m->dlosses, m->probs, m->y, n, K, m->pool);
    float *P = ef_params_data(m->params);
    for (int i = m->n_layers - 1; i >= 0; i--) {
        layer *l = &m->L[i];
        const float *in = layer_input(m, i);
        /* The first layer needs no input gradient; other layers accumulate
         * into their input's gradient buffer, zeroed here. */
        float *din = NULL;
        if (i > 0 && l->kind != L_RELU) {
            din = m->L[i - 1].dout;
            elementwise(m->pool, EW_ZERO, din, NULL, (size_t)n * layer_in_size(l));
        }
        size_t wo = l->wt >= 0 ? ef_params_info(m->params, (size_t)l->wt)->offset : 0;
        size_t bo = l->bt >= 0 ? ef_params_info(m->params, (size_t)l->bt)->offset : 0;
        switch (l->kind) {
        case L_LINEAR:
            ef_linear_backward(din, m->grads + wo, m->grads + bo, l->dout, in, P + wo, n, l->in_c,
                               l->out_c, m->pool);
            break;
        case L_CONV: {
            ef_conv2d_desc d = conv_desc(l, n);
            ef_conv2d_backward(din, m->grads + wo, m->grads + bo, l->dout, in, P + wo, &d,
                               m->work, m->pool);
            break;
        }
        case L_RELU:
            elementwise(m->pool, EW_RELU_MASK, l->dout, l->out, (size_t)n * layer_out_size(l));
            break;
        case L_MAXPOOL:
            ef_maxpool2d_backward(din, l->dout, l->argmax, n, l->in_c, l->in_h, l->in_w, l->k,
                                  l->stride, m->pool);
            break;
        }
    }
    return EF_OK;
}
