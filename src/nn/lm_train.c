/*
 * Training of the language model: batches from a token stream, AdamW with
 * decoupled weight decay on the matrices only, a cosine learning-rate
 * schedule with linear warm-up, global gradient-norm clipping, evaluation
 * in bits per byte, and checkpoints that resume a run bit for bit.
 *
 * Determinism: the data order is a pure function of (seed, epoch), every
 * kernel splits its work statically, and the optimizer is element-wise, so
 * a run with the same thread count gives the same bits, and a resumed run
 * the same bits as one that was never interrupted (tests/nn/test_lm_train).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core_internal.h"
#include "edgefl/lm.h"
#include "edgefl/nn.h"
#include "edgefl/optim.h"
#include "edgefl/rng.h"
#include "edgefl/train.h"
#include "lm_internal.h"

struct ef_lm_trainer {
    ef_lm *m;
    ef_lm_train_config cfg;
    const int32_t *tokens;
    size_t n;
    uint64_t data_hash;
    size_t np;            /* parameters */
    float *mom, *vel;     /* AdamW moments (np) */
    uint64_t step;        /* steps done */
    uint64_t epoch;       /* data position: window `cursor` of epoch `epoch`'s order */
    size_t cursor;
    uint64_t built_epoch; /* the epoch `order` and `offset` describe */
    size_t offset;        /* first window's start in the stream */
    size_t n_windows;
    uint32_t *order;      /* (n_windows) visiting order of the windows */
    int32_t *bx, *by;     /* (batch, seq) inputs and targets */
};

ef_lm_train_config ef_lm_train_defaults(void) {
    ef_lm_train_config c = {.batch = 16, .seq = 256, .steps = 1000, .warmup = 100, .lr = 1e-3f,
                            .min_lr = 1e-4f, .weight_decay = 0.1f, .beta1 = 0.9f,
                            .beta2 = 0.95f, .eps = 1e-8f, .clip = 1.0f, .seed = 1};
    return c;
}

static ef_status check_train_config(const ef_lm_train_config *c, const ef_lm *m) {
    const ef_lm_config *mc = ef_lm_get_config(m);
    if (c->batch < 1 || c->batch > ef_lm_max_batch(m))
        return ef__fail(EF_ERR_INVALID, "lm train: batch %d outside 1..%d (the model's max_batch)",
                        c->batch, ef_lm_max_batch(m));
    if (c->seq < 1 || c->seq > mc->max_seq)
        return ef__fail(EF_ERR_INVALID, "lm train: seq %d outside 1..%d (the model's max_seq)",
                        c->seq, mc->max_seq);
    if (c->steps < 1) return ef__fail(EF_ERR_INVALID, "lm train: steps must be >= 1");
    if (!(c->lr > 0.0f) || !isfinite(c->lr))
        return ef__fail(EF_ERR_INVALID, "lm train: learning rate must be a positive number");
    if (!(c->min_lr >= 0.0f && c->min_lr <= c->lr))
        return ef__fail(EF_ERR_INVALID, "lm train: min_lr must be in [0, lr]");
    if (!(c->weight_decay >= 0.0f) || !isfinite(c->weight_decay))
        return ef__fail(EF_ERR_INVALID, "lm train: weight decay must be >= 0");
    if (!(c->beta1 >= 0.0f && c->beta1 < 1.0f) || !(c->beta2 >= 0.0f && c->beta2 < 1.0f))
        return ef__fail(EF_ERR_INVALID, "lm train: Adam betas must be in [0, 1)");
    if (!(c->eps > 0.0f) || !isfinite(c->eps))
        return ef__fail(EF_ERR_INVALID, "lm train: Adam eps must be > 0");
    if (!(c->clip >= 0.0f) || !isfinite(c->clip))
        return ef__fail(EF_ERR_INVALID, "lm train: clip must be >= 0 (0 disables)");
    return EF_OK;
}

/* FNV-1a 64 over the stream's ids (little-endian 4 bytes each). */
static uint64_t hash_tokens(const int32_t *t, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)t[i];
        for (int b = 0; b < 4; b++) {
            h ^= (v >> (8 * b)) & 0xffu;
            h *= 0x100000001b3ull;
        }
    }
    return h;
}

/* Windows of epoch e: start offset in [0, min(seq, n - seq)) and a random
 * order, both from the generator of stream e forked off the seed. */
static void build_epoch(ef_lm_trainer *t, uint64_t e) {
    ef_rng base, r;
    ef_rng_seed(&base, t->cfg.seed);
    ef_rng_fork(&base, e, &r);
    size_t T = (size_t)t->cfg.seq;
    size_t span = t->n - T < T ? t->n - T : T; // >= 1: n >= T + 1
    t->offset = (size_t)ef_rng_below(&r, span);
    t->n_windows = (t->n - 1 - t->offset) / T;
    for (size_t k = 0; k < t->n_windows; k++) t->order[k] = (uint32_t)k;
    ef_rng_shuffle_u32(&r, t->order, t->n_windows);
    t->built_epoch = e;
}

ef_status ef_lm_trainer_new(ef_lm_trainer **out, ef_lm *m, const ef_lm_train_config *cfg,
                            const int32_t *tokens, size_t n) {
    *out = NULL;
    ef_status st = check_train_config(cfg, m);
    if (st != EF_OK) return st;
    if (!tokens || n < (size_t)cfg->seq + 1)
        return ef__fail(EF_ERR_INVALID, "lm train: the training text has %zu tokens; a "
                                        "sequence of %d needs at least %d", n, cfg->seq,
                        cfg->seq + 1);
    if (n > UINT32_MAX)
        return ef__fail(EF_ERR_RANGE, "lm train: %zu tokens is too many (at most %u)", n,
                        UINT32_MAX);
    int V = ef_lm_get_config(m)->vocab;
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return ef__fail(EF_ERR_INVALID, "lm train: token %zu is %d, outside the model's "
                                            "vocabulary [0, %d)", i, (int)tokens[i], V);
    ef_lm_trainer *t = ef_calloc(1, sizeof *t);
    if (!t) return EF_ERR_NOMEM;
    t->m = m;
    t->cfg = *cfg;
    t->tokens = tokens;
    t->n = n;
    t->data_hash = hash_tokens(tokens, n);
    t->np = ef_lm_numel(m);
    size_t bt = (size_t)cfg->batch * cfg->seq;
    t->mom = ef_calloc(t->np, sizeof(float));
    t->vel = ef_calloc(t->np, sizeof(float));
    t->order = ef_calloc((n - 1) / (size_t)cfg->seq + 1, sizeof(uint32_t));
    t->bx = ef_calloc(bt, sizeof(int32_t));
    t->by = ef_calloc(bt, sizeof(int32_t));
    if (!t->mom || !t->vel || !t->order || !t->bx || !t->by) {
        ef_lm_trainer_free(t);
        return EF_ERR_NOMEM;
    }
    build_epoch(t, 0);
    *out = t;
    return EF_OK;
}

void ef_lm_trainer_free(ef_lm_trainer *t) {
    if (!t) return;
    ef_free(t->mom);
    ef_free(t->vel);
    ef_free(t->order);
    ef_free(t->bx);
    ef_free(t->by);
    ef_free(t);
}

const ef_lm_train_config *ef_lm_trainer_config(const ef_lm_trainer *t) { return &t->cfg; }
uint64_t ef_lm_trainer_steps_done(const ef_lm_trainer *t) { return t->step; }

/* Fills bx, by with the next `batch` windows, advancing the data position. */
static void next_batch(ef_lm_trainer *t) {
    size_t T = (size_t)t->cfg.seq;
    for (int b = 0; b < t->cfg.batch; b++) {
        if (t->cursor >= t->n_windows) {
            t->epoch++;
            t->cursor = 0;
        }
        if (t->built_epoch != t->epoch) build_epoch(t, t->epoch);
        size_t start = t->offset + (size_t)t->order[t->cursor++] * T;
        memcpy(t->bx + (size_t)b * T, t->tokens + start, T * sizeof(int32_t));
        memcpy(t->by + (size_t)b * T, t->tokens + start + 1, T * sizeof(int32_t));
    }
}

/* Learning rate of 0-based step s: linear warm-up to lr, then a cosine from
 * lr down to min_lr at the last step. */
static float lr_at(const ef_lm_train_config *c, uint64_t s) {
    if (s < c->warmup) return ef_lr_at(EF_LR_COSINE, c->lr, s, c->steps, c->warmup);
    return c->min_lr + ef_lr_at(EF_LR_COSINE, c->lr - c->min_lr, s, c->steps, c->warmup);
}

typedef struct adamw_ctx {
    ef_lm_trainer *t;
    float *p;
    const float *g;
    size_t n_decay;
    float lr;
    uint64_t step;
} adamw_ctx;

static void adamw_range(void *vctx, int64_t begin, int64_t end, int thread) {
    EF_UNUSED(thread);
    const adamw_ctx *c = vctx;
    const ef_lm_train_config *k = &c->t->cfg;
    size_t b = (size_t)begin, e = (size_t)end, mid = c->n_decay;
    // the matrices [0, n_decay) decay; the norm gains after them do not
    if (b < mid) {
        size_t e1 = e < mid ? e : mid;
        ef_adamw_update(c->p + b, c->t->mom + b, c->t->vel + b, c->g + b, e1 - b, c->lr,
                        k->beta1, k->beta2, k->eps, k->weight_decay, c->step);
        b = e1;
    }
    if (b < e)
        ef_adamw_update(c->p + b, c->t->mom + b, c->t->vel + b, c->g + b, e - b, c->lr, k->beta1,
                        k->beta2, k->eps, 0.0f, c->step);
}

ef_status ef_lm_trainer_step(ef_lm_trainer *t, ef_lm_step_info *info) {
    if (t->step >= t->cfg.steps)
        return ef__fail(EF_ERR_STATE, "lm train: all %llu steps are done",
                        (unsigned long long)t->cfg.steps);
    uint64_t epoch0 = t->epoch;
    size_t cursor0 = t->cursor;
    next_batch(t);
    ef_lm *m = t->m;
    float loss = 0.0f;
    ef_status st = ef_lm_forward(m, t->bx, t->by, t->cfg.batch, t->cfg.seq, &loss);
    double norm = 0.0;
    if (st == EF_OK) {
        ef_lm_zero_grad(m);
        st = ef_lm_backward(m, NULL);
    }
    if (st == EF_OK) {
        norm = ef_grad_clip(ef_lm_grads(m), t->np, t->cfg.clip, ef_lm_pool(m));
        if (!isfinite(loss) || !isfinite(norm))
            st = ef__fail(EF_ERR_RANGE, "lm train: step %llu: loss %g, gradient norm %g: the "
                                        "run diverged (try a lower --lr or a --clip)",
                          (unsigned long long)t->step + 1, (double)loss, norm);
    }
    if (st != EF_OK) {
        // no update: the data position goes back to where it was
        t->epoch = epoch0;
        t->cursor = cursor0;
        if (t->built_epoch != epoch0) build_epoch(t, epoch0);
        return st;
    }
    float lr = lr_at(&t->cfg, t->step);
    adamw_ctx c = {t, ef_params_data(ef_lm_params(m)), ef_lm_grads(m), ef_lm_decay_numel(m), lr,
                   t->step + 1};
    ef_pool *pool = t->np < 65536 ? NULL : ef_lm_pool(m);
    ef_pool_for(pool, (int64_t)t->np, adamw_range, &c);
    t->step++;
    if (info) {
        info->step = t->step;
        info->loss = loss;
        info->lr = lr;
        info->grad_norm = norm;
        info->epoch = t->epoch;
    }
    return EF_OK;
}

/* ---- checkpoints ------------------------------------------------------------------- */

#define TRAIN_META 19

/* Formats the training state into kv (values in bufs). Returns the count. */
static size_t train_meta(const ef_lm_trainer *t, ef_st_kv *kv, char (*bufs)[32]) {
    const ef_lm_train_config *c = &t->cfg;
    size_t k = 0;
#define PUT(name, ...) (snprintf(bufs[k], 32, __VA_ARGS__), kv[k].key = name, kv[k].value = bufs[k], k++)
    PUT("edgefl.train.batch", "%d", c->batch);
    PUT("edgefl.train.seq", "%d", c->seq);
    PUT("edgefl.train.steps", "%llu", (unsigned long long)c->steps);
    PUT("edgefl.train.warmup", "%llu", (unsigned long long)c->warmup);
    PUT("edgefl.train.lr", "%.9g", (double)c->lr);
    PUT("edgefl.train.min_lr", "%.9g", (double)c->min_lr);
    PUT("edgefl.train.weight_decay", "%.9g", (double)c->weight_decay);
    PUT("edgefl.train.beta1", "%.9g", (double)c->beta1);
    PUT("edgefl.train.beta2", "%.9g", (double)c->beta2);
    PUT("edgefl.train.eps", "%.9g", (double)c->eps);
    PUT("edgefl.train.clip", "%.9g", (double)c->clip);
    PUT("edgefl.train.seed", "%llu", (unsigned long long)c->seed);
    PUT("edgefl.train.step", "%llu", (unsigned long long)t->step);
    PUT("edgefl.train.epoch", "%llu", (unsigned long long)t->epoch);
    PUT("edgefl.train.cursor", "%zu", t->cursor);
    PUT("edgefl.train.data_tokens", "%zu", t->n);
    PUT("edgefl.train.data_hash", "%016llx", (unsigned long long)t->data_hash);
    PUT("edgefl.train.threads", "%d", ef_pool_threads(ef_lm_pool(t->m)));
    PUT("edgefl.train.params", "%zu", t->np);
#undef PUT
    return k;
}

ef_status ef_lm_trainer_save(ef_lm_trainer *t, const char *path, const ef_st_kv *extra,
                             size_t n_extra) {
    if (n_extra > 32) return ef__fail(EF_ERR_INVALID, "lm train: too many metadata entries");
    ef_params *p = ef_lm_params(t->m);
    size_t nt = ef_params_count(p);
    ef_st_view *v = ef_calloc(nt + 2, sizeof *v);
    if (!v) return EF_ERR_NOMEM;
    for (size_t i = 0; i < nt; i++) {
        const ef_tensor_info *ti = ef_params_info(p, i);
        v[i].name = ti->name;
        v[i].ndim = ti->ndim;
        memcpy(v[i].shape, ti->shape, sizeof v[i].shape);
        v[i].data = ef_params_tensor(p, i);
    }
    v[nt] = (ef_st_view){"optim.m", 1, {(int64_t)t->np}, t->mom};
    v[nt + 1] = (ef_st_view){"optim.v", 1, {(int64_t)t->np}, t->vel};
    ef_st_kv kv[EF_LM_META_COUNT + TRAIN_META + 4 + 32];
    char mbufs[EF_LM_META_COUNT][32], tbufs[TRAIN_META][32];
    size_t k = ef__lm_config_meta(ef_lm_get_config(t->m), kv, mbufs);
    k += train_meta(t, kv + k, tbufs);
    kv[k++] = (ef_st_kv){"format", "pt"};
    kv[k++] = (ef_st_kv){"edgefl.arch", "llama"};
    kv[k++] = (ef_st_kv){"edgefl.kind", "lm-checkpoint"};
    kv[k++] = (ef_st_kv){"edgefl.version", EF_VERSION_STRING};
    for (size_t i = 0; i < n_extra; i++) kv[k++] = extra[i];
    ef_status st = ef_safetensors_save_views(path, v, nt + 2, kv, k);
    ef_free(v);
    return st;
}

static int meta_u64(const ef_safetensors *s, const char *key, uint64_t *out, int hex) {
    const char *v = ef_safetensors_meta(s, key);
    if (!v || !*v) return 0;
    char *end;
    unsigned long long x = strtoull(v, &end, hex ? 16 : 10);
    if (*end || v[0] == '-') return 0;
    *out = x;
    return 1;
}

static int meta_f32(const ef_safetensors *s, const char *key, float *out) {
    const char *v = ef_safetensors_meta(s, key);
    if (!v || !*v) return 0;
    char *end;
    float x = strtof(v, &end);
    if (*end) return 0;
    *out = x;
    return 1;
}

typedef struct ckpt_state {
    ef_lm_train_config cfg;
    uint64_t step, epoch, cursor, data_tokens, data_hash;
} ckpt_state;

static ef_status read_state(const ef_safetensors *s, const char *path, ckpt_state *o) {
    uint64_t b, q, seed;
    const char *kind = ef_safetensors_meta(s, "edgefl.kind");
    if (!kind || strcmp(kind, "lm-checkpoint") != 0)
        return ef__fail(EF_ERR_FORMAT, "%s: not a training checkpoint (edgefl.kind is not "
                                       "lm-checkpoint; a model file cannot be resumed)", path);
    memset(o, 0, sizeof *o);
    ef_lm_train_config *c = &o->cfg;
    int ok = meta_u64(s, "edgefl.train.batch", &b, 0) && meta_u64(s, "edgefl.train.seq", &q, 0) &&
             meta_u64(s, "edgefl.train.steps", &c->steps, 0) &&
             meta_u64(s, "edgefl.train.warmup", &c->warmup, 0) &&
             meta_f32(s, "edgefl.train.lr", &c->lr) &&
             meta_f32(s, "edgefl.train.min_lr", &c->min_lr) &&
             meta_f32(s, "edgefl.train.weight_decay", &c->weight_decay) &&
             meta_f32(s, "edgefl.train.beta1", &c->beta1) &&
             meta_f32(s, "edgefl.train.beta2", &c->beta2) &&
             meta_f32(s, "edgefl.train.eps", &c->eps) &&
             meta_f32(s, "edgefl.train.clip", &c->clip) &&
             meta_u64(s, "edgefl.train.seed", &seed, 0) &&
             meta_u64(s, "edgefl.train.step", &o->step, 0) &&
             meta_u64(s, "edgefl.train.epoch", &o->epoch, 0) &&
             meta_u64(s, "edgefl.train.cursor", &o->cursor, 0) &&
             meta_u64(s, "edgefl.train.data_tokens", &o->data_tokens, 0) &&
             meta_u64(s, "edgefl.train.data_hash", &o->data_hash, 1) && b <= (1 << 20) &&
             q <= (1 << 20) && o->step <= c->steps;
    if (!ok)
        return ef__fail(EF_ERR_FORMAT, "%s: missing or bad edgefl.train.* metadata", path);
    c->batch = (int)b;
    c->seq = (int)q;
    c->seed = seed;
    return EF_OK;
}

ef_status ef_lm_checkpoint_info(const char *path, ef_lm_train_config *cfg, uint64_t *steps_done) {
    ef_safetensors *s = NULL;
    ef_status st = ef_safetensors_open(&s, path);
    if (st != EF_OK) return st;
    ckpt_state cs;
    st = read_state(s, path, &cs);
    ef_safetensors_close(s);
    if (st != EF_OK) return st;
    if (cfg) *cfg = cs.cfg;
    if (steps_done) *steps_done = cs.step;
    return EF_OK;
}

/* Converts the F32-compatible tensor `name` of n floats into dst. */
static ef_status load_tensor(const ef_safetensors *s, const char *path, const char *name,
                             const int64_t *shape, int ndim, size_t n, float *dst) {
    const ef_st_tensor *t = ef_safetensors_find(s, name);
    if (!t) return ef__fail(EF_ERR_FORMAT, "%s: tensor '%s' missing", path, name);
    int same = t->ndim == ndim && t->numel == n;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (!same) return ef__fail(EF_ERR_FORMAT, "%s: tensor '%s' has the wrong shape", path, name);
    ef_status st = ef_st_tensor_to_f32(t, dst);
    if (st != EF_OK) return ef__fail(st, "%s: tensor '%s': %s", path, name, ef_last_error());
    return EF_OK;
}

ef_status ef_lm_trainer_resume(ef_lm_trainer *t, const char *path) {
    ef_safetensors *s = NULL;
    float *tmp = NULL;
    ef_status st = ef_safetensors_open(&s, path);
    if (st != EF_OK) return st;
    ckpt_state cs;
    ef_lm_config mc;
    if ((st = read_state(s, path, &cs)) != EF_OK) goto done;
    if ((st = ef__lm_config_from_meta(s, path, &mc)) != EF_OK) goto done;
    const ef_lm_config *have = ef_lm_get_config(t->m);
    if (mc.vocab != have->vocab || mc.dim != have->dim || mc.n_layers != have->n_layers ||
        mc.n_heads != have->n_heads || mc.n_kv_heads != have->n_kv_heads ||
        mc.ffn_dim != have->ffn_dim || mc.max_seq != have->max_seq ||
        mc.norm_eps != have->norm_eps || mc.rope_theta != have->rope_theta ||
        !mc.tied != !have->tied) {
        st = ef__fail(EF_ERR_INVALID, "%s: the checkpoint's model (dim %d, %d layers, %d heads, "
                                      "vocab %d, seq %d) differs from this one (dim %d, %d "
                                      "layers, %d heads, vocab %d, seq %d)",
                      path, mc.dim, mc.n_layers, mc.n_heads, mc.vocab, mc.max_seq, have->dim,
                      have->n_layers, have->n_heads, have->vocab, have->max_seq);
        goto done;
    }
    if (cs.data_tokens != t->n || cs.data_hash != t->data_hash) {
        st = ef__fail(EF_ERR_INVALID, "%s: the checkpoint was trained on a different text "
                                      "(%llu tokens, hash %016llx; this one: %zu tokens, hash "
                                      "%016llx)",
                      path, (unsigned long long)cs.data_tokens,
                      (unsigned long long)cs.data_hash, t->n, (unsigned long long)t->data_hash);
        goto done;
    }
    if ((st = check_train_config(&cs.cfg, t->m)) != EF_OK) {
        st = ef__fail(EF_ERR_FORMAT, "%s: %s", path, ef_last_error());
        goto done;
    }
    size_t K = (t->n - 1) / (size_t)cs.cfg.seq + 1;
    if (cs.cursor > K) {
        st = ef__fail(EF_ERR_FORMAT, "%s: data position %llu is past the epoch's %zu windows",
                      path, (unsigned long long)cs.cursor, K);
        goto done;
    }
    // Everything is converted into a scratch copy first, so a bad tensor
    // leaves the model and the trainer untouched.
    size_t np = t->np;
    if (!(tmp = ef_calloc(3 * np, sizeof(float)))) {
        st = EF_ERR_NOMEM;
        goto done;
    }
    ef_params *p = ef_lm_params(t->m);
    for (size_t i = 0; i < ef_params_count(p) && st == EF_OK; i++) {
        const ef_tensor_info *ti = ef_params_info(p, i);
        st = load_tensor(s, path, ti->name, ti->shape, ti->ndim, ti->numel, tmp + ti->offset);
    }
    int64_t shp[1] = {(int64_t)np};
    if (st == EF_OK) st = load_tensor(s, path, "optim.m", shp, 1, np, tmp + np);
    if (st == EF_OK) st = load_tensor(s, path, "optim.v", shp, 1, np, tmp + 2 * np);
    if (st != EF_OK) goto done;
    // A batch larger than the old one would need a new bx/by; the sizes
    // depend only on batch and seq, which must then match what was allocated.
    if ((size_t)cs.cfg.batch * cs.cfg.seq > (size_t)t->cfg.batch * t->cfg.seq ||
        cs.cfg.seq < t->cfg.seq) {
        st = ef__fail(EF_ERR_INVALID, "%s: the checkpoint's batch %dx%d does not fit this "
                                      "trainer's %dx%d (create it with the checkpoint's config)",
                      path, cs.cfg.batch, cs.cfg.seq, t->cfg.batch, t->cfg.seq);
        goto done;
    }
    memcpy(ef_params_data(p), tmp, np * sizeof(float));
    memcpy(t->mom, tmp + np, np * sizeof(float));
    memcpy(t->vel, tmp + 2 * np, np * sizeof(float));
    t->cfg = cs.cfg;
    t->step = cs.step;
    t->epoch = cs.epoch;
    t->cursor = (size_t)cs.cursor;
    build_epoch(t, t->epoch);
done:
    ef_free(tmp);
    ef_safetensors_close(s);
    return st;
}

/* ---- evaluation ---------------------------------------------------------------------- */

ef_status ef_lm_evaluate(ef_lm *m, const int32_t *tokens, size_t n, int B, int T,
                         const uint32_t *token_bytes, double *loss, double *bpb,
                         uint64_t *n_bytes) {
    const ef_lm_config *mc = ef_lm_get_config(m);
    if (!tokens || n < 2) return ef__fail(EF_ERR_INVALID, "lm eval: need at least 2 tokens");
    if (B < 1 || B > ef_lm_max_batch(m) || T < 1 || T > mc->max_seq)
        return ef__fail(EF_ERR_INVALID, "lm eval: batch %dx%d outside 1..%d x 1..%d", B, T,
                        ef_lm_max_batch(m), mc->max_seq);
    int32_t *x = ef_malloc((size_t)B * T * sizeof(int32_t));
    int32_t *y = ef_malloc((size_t)B * T * sizeof(int32_t));
    if (!x || !y) {
        ef_free(x);
        ef_free(y);
        return EF_ERR_NOMEM;
    }
    ef_status st = EF_OK;
    double nll = 0.0;
    uint64_t bytes = 0, count = 0;
    size_t pos = 0; // next window starts at tokens[pos]
    while (pos + 1 < n && st == EF_OK) {
        // full windows of T predictions, B at a time; then the short tail alone
        int bb = 0, len = T;
        if (n - 1 - pos < (size_t)T) {
            len = (int)(n - 1 - pos);
            memcpy(x, tokens + pos, (size_t)len * sizeof(int32_t));
            memcpy(y, tokens + pos + 1, (size_t)len * sizeof(int32_t));
            bb = 1;
            pos += (size_t)len;
        } else {
            while (bb < B && n - 1 - pos >= (size_t)T) {
                memcpy(x + (size_t)bb * T, tokens + pos, (size_t)T * sizeof(int32_t));
                memcpy(y + (size_t)bb * T, tokens + pos + 1, (size_t)T * sizeof(int32_t));
                bb++;
                pos += (size_t)T;
            }
        }
        st = ef_lm_forward(m, x, y, bb, len, NULL);
        if (st != EF_OK) break;
        const float *ls = ef_lm_losses(m);
        size_t cnt = (size_t)bb * len;
        for (size_t i = 0; i < cnt; i++) {
            nll += ls[i];
            if (token_bytes) bytes += token_bytes[y[i]];
        }
        count += cnt;
    }
    ef_free(x);
    ef_free(y);
    if (st != EF_OK) return st;
    if (loss) *loss = nll / (double)count;
    if (bpb) *bpb = bytes ? nll / log(2.0) / (double)bytes : NAN;
    if (n_bytes) *n_bytes = bytes;
    return EF_OK;
}
