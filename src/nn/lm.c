/*
 * The llama-style language model: parameter layout, initialization, forward
 * and backward passes (see include/edgefl/lm.h for the architecture and the
 * layout of the flat parameter vector).
 *
 * Performance notes (the model spends nearly all its time in matrix
 * products, so the design is about feeding sgemm and touching memory once):
 * - q, k and v come out of ONE product with the stacked [Wq; Wk; Wv] (they
 *   are adjacent in the parameter vector), gate and up out of one with
 *   [Wgate; Wup]; their weight gradients are likewise one product each.
 * - The residual adds are fused into the output projections: the block
 *   output is copied from its input and the product accumulates into it
 *   (beta = 1), and the backward pass keeps ONE residual-gradient buffer
 *   that the norms' backward passes accumulate into.
 * - After the qkv product a single pass applies RoPE and scatters q, k, v
 *   into head-major buffers (B, heads, T, head_dim), so attention works on
 *   contiguous (T, head_dim) blocks with sgemm: scores, probabilities times
 *   v, and in the backward pass the four gradient products, all restricted
 *   to the causal lower triangle in row blocks of ATT_BLOCK queries (the
 *   upper triangle is never computed). Softmax probabilities are kept for
 *   the backward pass.
 * - The loss is fused with the output projection's backward: the forward
 *   keeps the logits and each row's log-sum-exp; the backward turns the
 *   logits in place into their gradient.
 * Threads: matrix products are cut into chunks of MM_CHUNK rows (for weight
 * gradients, of output features), each one single-threaded sgemm; attention
 * into (batch, head) pairs, and its backward into (batch, kv head) pairs, so
 * every gradient element has one writer and a fixed order. Threads claim
 * chunks from a counter (dyn_run), and chunk bounds never depend on the
 * thread count: a step gives the same bits on any number of threads.
 */
#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core_internal.h"
#include "edgefl/arena.h"
#include "edgefl/lm.h"
#include "edgefl/nn.h"
#include "edgefl/rng.h"
#include "fastmath_internal.h"
#include "lm_internal.h"
#include "nn_internal.h"

#define ATT_BLOCK 32

#ifdef EF_LM_PROFILE
double ef__lm_prof[32];
#define PROF_T0 double prof_t = ef_now()
#define PROF(i) do { double n_ = ef_now(); ef__lm_prof[i] += n_ - prof_t; prof_t = n_; } while (0)
#else
#define PROF_T0
#define PROF(i)
#endif

/* Weight pointers of one layer (into the parameter or the gradient vector). */
typedef struct lm_lw {
    float *wqkv;  /* (D + 2 KVD, D): attn_q, attn_k, attn_v stacked */
    float *wo;    /* (D, D) */
    float *wgu;   /* (2F, D): ffn_gate, ffn_up stacked */
    float *wd;    /* (D, F) */
    float *norm1; /* (D) attn_norm */
    float *norm2; /* (D) ffn_norm */
} lm_lw;

/* Saved activations of one layer, for N = B*T tokens. */
typedef struct lm_la {
    float *rstd1; /* (N) */
    float *xn1;   /* (N, D) attn_norm output */
    float *q;     /* (B, NH, T, HS) after RoPE */
    float *k;     /* (B, NKV, T, HS) after RoPE */
    float *v;     /* (B, NKV, T, HS) */
    float *att;   /* (B, NH, T, T) softmax probabilities (causal blocks only) */
    float *ao;    /* (N, D) attention output, heads concatenated */
    float *res1;  /* (N, D) x + attention projection */
    float *rstd2; /* (N) */
    float *xn2;   /* (N, D) ffn_norm output */
    float *gu;    /* (N, 2F) rows [gate | up] */
    float *hh;    /* (N, F) silu(gate) * up */
} lm_la;

struct ef_lm {
    ef_lm_config cfg;
    int max_batch;
    int D, HS, KVD, QKV, F, V, L, NH, NKV;
    ef_pool *pool;
    int n_threads;

    ef_params *params;
    float *grads;
    size_t n_decay;
    float *emb, *wout, *normf;    /* parameters; wout == emb when tied */
    float *demb, *dwout, *dnormf; /* their gradients */
    lm_lw *lw, *lg;               /* per layer: weights, gradients */

    ef_arena act;
    lm_la *la;      /* per layer */
    float **resid;  /* L + 1 residual-stream buffers (N, D): resid[l] is layer l's input */
    float *rope;    /* (max_seq, HS/2, 2) */
    float *rstdf;   /* (N) */
    float *xf;      /* (N, D) final norm output */
    float *logits;  /* (N, V); the backward turns it into dlogits */
    float *lse;     /* (N) log-sum-exp of each logits row */
    float *losses;  /* (N) */
    float *qkv;     /* (N, QKV) forward scratch; the backward's dqkv */
    float *dres;    /* (N, D) gradient of the residual stream */
    float *dxn;     /* (N, D) gradient of a norm's output */
    float *dao;     /* (N, D) */
    float *dgu;     /* (N, 2F) */
    float *dhh;     /* (N, F) */
    float *dq, *dk, *dv; /* head-major like q, k, v */
    float *att_work;     /* (n_threads, max_seq, max_seq) score gradients */
    int32_t *ids, *targets; /* (N) copies of the last forward's inputs */

    int B, T;           /* shape of the last forward */
    int have_targets;   /* the last forward computed losses */
    int backward_ready; /* logits still hold the forward's values */
};

/* ---- configuration ---------------------------------------------------------- */

int ef_lm_default_ffn(int dim) {
    int f = (8 * dim + 2) / 3;
    return (f + 31) / 32 * 32;
}

ef_lm_config ef_lm_config_default(void) {
    ef_lm_config c = {.vocab = 0, .dim = 256, .n_layers = 4, .n_heads = 4, .n_kv_heads = 4,
                      .ffn_dim = ef_lm_default_ffn(256), .max_seq = 256, .norm_eps = 1e-5f,
                      .rope_theta = 10000.0f, .tied = 1};
    return c;
}

ef_status ef_lm_config_check(const ef_lm_config *c) {
    if (!c) return ef__fail(EF_ERR_INVALID, "lm: NULL config");
    if (c->vocab < 2 || c->vocab > (1 << 24))
        return ef__fail(EF_ERR_INVALID, "lm: vocab %d outside 2..%d", c->vocab, 1 << 24);
    if (c->dim < 2 || c->dim > 65536)
        return ef__fail(EF_ERR_INVALID, "lm: dim %d outside 2..65536", c->dim);
    if (c->n_layers < 1 || c->n_layers > 1024)
        return ef__fail(EF_ERR_INVALID, "lm: n_layers %d outside 1..1024", c->n_layers);
    if (c->n_heads < 1 || c->dim % c->n_heads != 0)
        return ef__fail(EF_ERR_INVALID, "lm: dim %d is not a multiple of n_heads %d", c->dim,
                        c->n_heads);
    if ((c->dim / c->n_heads) % 2 != 0)
        return ef__fail(EF_ERR_INVALID, "lm: head_dim %d (dim / n_heads) must be even for RoPE",
                        c->dim / c->n_heads);
    if (c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads != 0)
        return ef__fail(EF_ERR_INVALID, "lm: n_kv_heads %d must divide n_heads %d",
                        c->n_kv_heads, c->n_heads);
    if (c->ffn_dim < 1 || c->ffn_dim > (1 << 20))
        return ef__fail(EF_ERR_INVALID, "lm: ffn_dim %d outside 1..%d", c->ffn_dim, 1 << 20);
    if (c->max_seq < 1 || c->max_seq > (1 << 20))
        return ef__fail(EF_ERR_INVALID, "lm: max_seq %d outside 1..%d", c->max_seq, 1 << 20);
    if (!(c->norm_eps > 0.0f) || !isfinite(c->norm_eps))
        return ef__fail(EF_ERR_INVALID, "lm: norm_eps must be a positive number");
    if (!(c->rope_theta > 1.0f) || !isfinite(c->rope_theta))
        return ef__fail(EF_ERR_INVALID, "lm: rope_theta must be a number > 1");
    return EF_OK;
}

size_t ef_lm_config_numel(const ef_lm_config *c) {
    size_t D = (size_t)c->dim, F = (size_t)c->ffn_dim, V = (size_t)c->vocab;
    size_t KVD = (size_t)c->n_kv_heads * (D / (size_t)c->n_heads);
    size_t per_layer = D * D * 2 + KVD * D * 2 + 3 * F * D + 2 * D;
    return V * D * (c->tied ? 1 : 2) + (size_t)c->n_layers * per_layer + D;
}

/* ---- construction ------------------------------------------------------------ */

static ef_status add2(ef_params *p, const char *name, int64_t rows, int64_t cols) {
    int64_t s[2] = {rows, cols};
    return ef_params_add(p, name, 2, s);
}

static ef_status add1(ef_params *p, const char *name, int64_t n) {
    return ef_params_add(p, name, 1, &n);
}

/* Adds every tensor in the documented order. */
static ef_status build_params(ef_lm *m) {
    char nm[EF_MAX_NAME];
    ef_status st;
    if ((st = add2(m->params, "token_embd.weight", m->V, m->D)) != EF_OK) return st;
    for (int l = 0; l < m->L; l++) {
        static const char *const names[] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                            "ffn_gate", "ffn_up", "ffn_down"};
        int64_t rows[7] = {m->D, m->KVD, m->KVD, m->D, m->F, m->F, m->D};
        int64_t cols[7] = {m->D, m->D, m->D, m->D, m->D, m->D, m->F};
        for (int i = 0; i < 7; i++) {
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, names[i]);
            if ((st = add2(m->params, nm, rows[i], cols[i])) != EF_OK) return st;
        }
    }
    if (!m->cfg.tied && (st = add2(m->params, "output.weight", m->V, m->D)) != EF_OK) return st;
    for (int l = 0; l < m->L; l++) {
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l);
        if ((st = add1(m->params, nm, m->D)) != EF_OK) return st;
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l);
        if ((st = add1(m->params, nm, m->D)) != EF_OK) return st;
    }
    return add1(m->params, "output_norm.weight", m->D);
}

/* Points the weight structs at base (the parameter or the gradient vector). */
static void point_weights(ef_lm *m, float *base, float **emb, float **wout, float **normf,
                          lm_lw *lw) {
    size_t D = (size_t)m->D, F = (size_t)m->F, V = (size_t)m->V, QKV = (size_t)m->QKV;
    float *p = base;
    *emb = p;
    p += V * D;
    for (int l = 0; l < m->L; l++) {
        lw[l].wqkv = p;
        p += QKV * D;
        lw[l].wo = p;
        p += D * D;
        lw[l].wgu = p;
        p += 2 * F * D;
        lw[l].wd = p;
        p += D * F;
    }
    if (m->cfg.tied) {
        *wout = *emb;
    } else {
        *wout = p;
        p += V * D;
    }
    for (int l = 0; l < m->L; l++) {
        lw[l].norm1 = p;
        p += D;
        lw[l].norm2 = p;
        p += D;
    }
    *normf = p;
}

/* Lays out the activations for N tokens (measuring or handing out). */
static void layout_acts(ef_lm *m, ef_arena *a) {
    size_t N = (size_t)m->max_batch * m->cfg.max_seq, T = (size_t)m->cfg.max_seq;
    size_t D = (size_t)m->D, F = (size_t)m->F, KVD = (size_t)m->KVD, V = (size_t)m->V;
    for (int l = 0; l <= m->L; l++) m->resid[l] = ef_arena_floats(a, N * D);
    for (int l = 0; l < m->L; l++) {
        lm_la *x = &m->la[l];
        x->rstd1 = ef_arena_floats(a, N);
        x->xn1 = ef_arena_floats(a, N * D);
        x->q = ef_arena_floats(a, N * D);
        x->k = ef_arena_floats(a, N * KVD);
        x->v = ef_arena_floats(a, N * KVD);
        x->att = ef_arena_floats(a, (size_t)m->max_batch * m->NH * T * T);
        x->ao = ef_arena_floats(a, N * D);
        x->res1 = ef_arena_floats(a, N * D);
        x->rstd2 = ef_arena_floats(a, N);
        x->xn2 = ef_arena_floats(a, N * D);
        x->gu = ef_arena_floats(a, N * 2 * F);
        x->hh = ef_arena_floats(a, N * F);
    }
    m->rope = ef_arena_floats(a, T * (size_t)m->HS);
    m->rstdf = ef_arena_floats(a, N);
    m->xf = ef_arena_floats(a, N * D);
    m->logits = ef_arena_floats(a, N * V);
    m->lse = ef_arena_floats(a, N);
    m->losses = ef_arena_floats(a, N);
    m->qkv = ef_arena_floats(a, N * (size_t)m->QKV);
    m->dres = ef_arena_floats(a, N * D);
    m->dxn = ef_arena_floats(a, N * D);
    m->dao = ef_arena_floats(a, N * D);
    m->dgu = ef_arena_floats(a, N * 2 * F);
    m->dhh = ef_arena_floats(a, N * F);
    m->dq = ef_arena_floats(a, N * D);
    m->dk = ef_arena_floats(a, N * KVD);
    m->dv = ef_arena_floats(a, N * KVD);
    m->att_work = ef_arena_floats(a, (size_t)m->n_threads * T * T);
    m->ids = ef_arena_alloc(a, N * sizeof(int32_t));
    m->targets = ef_arena_alloc(a, N * sizeof(int32_t));
}

/* Floats of activation memory, in double so overflow can be detected. */
static double act_floats(const ef_lm *m) {
    double N = (double)m->max_batch * m->cfg.max_seq, T = m->cfg.max_seq;
    double D = m->D, F = m->F, KVD = m->KVD, V = m->V;
    double per_layer = N * (2 + 6 * D + 2 * KVD + 3 * F) + (double)m->max_batch * m->NH * T * T;
    return (m->L + 1) * N * D + m->L * per_layer + N * (3 + D + V + m->QKV + 3 * D + 3 * F) +
           N * (D + 2 * KVD) + (double)m->n_threads * T * T + 2 * N + T * m->HS;
}

ef_status ef_lm_new(ef_lm **out, const ef_lm_config *cfg, int max_batch, ef_pool *pool) {
    *out = NULL;
    ef_status st = ef_lm_config_check(cfg);
    if (st != EF_OK) return st;
    if (max_batch < 1 || max_batch > (1 << 20))
        return ef__fail(EF_ERR_INVALID, "lm: max_batch %d outside 1..%d", max_batch, 1 << 20);
    ef_lm *m = ef_calloc(1, sizeof *m);
    if (!m) return EF_ERR_NOMEM;
    m->cfg = *cfg;
    m->max_batch = max_batch;
    m->D = cfg->dim;
    m->NH = cfg->n_heads;
    m->NKV = cfg->n_kv_heads;
    m->HS = cfg->dim / cfg->n_heads;
    m->KVD = m->NKV * m->HS;
    m->QKV = m->D + 2 * m->KVD;
    m->F = cfg->ffn_dim;
    m->V = cfg->vocab;
    m->L = cfg->n_layers;
    m->pool = pool;
    m->n_threads = ef_pool_threads(pool);

    // Every buffer is indexed with size_t; sgemm takes int sizes and leading
    // dimensions, so those (N, vocab, T*T per head) must fit an int.
    double N = (double)max_batch * cfg->max_seq;
    if (N * (double)m->QKV > 2147483647.0 || N > 2147483647.0 ||
        (double)cfg->max_seq * cfg->max_seq > 2147483647.0 ||
        act_floats(m) * sizeof(float) > (double)SIZE_MAX / 2 ||
        (double)ef_lm_config_numel(cfg) > (double)SIZE_MAX / 16) {
        ef_free(m);
        return ef__fail(EF_ERR_RANGE, "lm: model or activations too large (max_batch %d, "
                                      "max_seq %d)", max_batch, cfg->max_seq);
    }

    m->lw = ef_calloc((size_t)m->L, sizeof *m->lw);
    m->lg = ef_calloc((size_t)m->L, sizeof *m->lg);
    m->la = ef_calloc((size_t)m->L, sizeof *m->la);
    m->resid = ef_calloc((size_t)m->L + 1, sizeof *m->resid);
    if (!m->lw || !m->lg || !m->la || !m->resid) {
        st = EF_ERR_NOMEM;
        goto fail;
    }
    if ((st = ef_params_new(&m->params)) != EF_OK) goto fail;
    if ((st = build_params(m)) != EF_OK) goto fail;
    if ((st = ef_params_alloc(m->params)) != EF_OK) goto fail;
    size_t n = ef_params_numel(m->params);
    if (!(m->grads = ef_calloc(n, sizeof(float)))) {
        st = EF_ERR_NOMEM;
        goto fail;
    }
    point_weights(m, ef_params_data(m->params), &m->emb, &m->wout, &m->normf, m->lw);
    point_weights(m, m->grads, &m->demb, &m->dwout, &m->dnormf, m->lg);
    m->n_decay = (size_t)(m->lw[0].norm1 - m->emb);

    ef_arena_measure(&m->act);
    layout_acts(m, &m->act);
    if ((st = ef_arena_reserve(&m->act, m->act.used)) != EF_OK) goto fail;
    layout_acts(m, &m->act);
    ef_rope_table(m->rope, cfg->max_seq, m->HS, cfg->rope_theta);
    for (int l = 0; l < m->L; l++) {
        for (int i = 0; i < m->D; i++) m->lw[l].norm1[i] = m->lw[l].norm2[i] = 1.0f;
    }
    for (int i = 0; i < m->D; i++) m->normf[i] = 1.0f;
    *out = m;
    return EF_OK;

fail:
    ef_lm_free(m);
    return st;
}

void ef_lm_free(ef_lm *m) {
    if (!m) return;
    ef_arena_free(&m->act);
    ef_params_free(m->params);
    ef_free(m->grads);
    ef_free(m->lw);
    ef_free(m->lg);
    ef_free(m->la);
    ef_free(m->resid);
    ef_free(m);
}

const ef_lm_config *ef_lm_get_config(const ef_lm *m) { return &m->cfg; }
int ef_lm_max_batch(const ef_lm *m) { return m->max_batch; }
ef_pool *ef_lm_pool(const ef_lm *m) { return m->pool; }
ef_params *ef_lm_params(ef_lm *m) { return m->params; }
float *ef_lm_grads(ef_lm *m) { return m->grads; }
size_t ef_lm_numel(const ef_lm *m) { return ef_params_numel(m->params); }
size_t ef_lm_decay_numel(const ef_lm *m) { return m->n_decay; }
size_t ef_lm_activation_bytes(const ef_lm *m) { return m->act.cap; }
const float *ef_lm_logits(const ef_lm *m) { return m->logits; }
const float *ef_lm_losses(const ef_lm *m) { return m->losses; }

void ef_lm_zero_grad(ef_lm *m) { memset(m->grads, 0, ef_lm_numel(m) * sizeof(float)); }

double ef_lm_train_flops(const ef_lm *m, int B, int T) {
    double N = (double)B * T, D = m->D, F = m->F, V = m->V;
    double mm = 2.0 * N * (D * m->QKV + D * D + 3.0 * D * F) * m->L + 2.0 * N * D * V;
    // causal attention: T(T+1)/2 score and value products per head and sequence
    double att = 2.0 * 2.0 * (double)B * m->NH * (T * (T + 1.0) / 2.0) * m->HS * m->L;
    return 3.0 * (mm + att); // backward ~ twice the forward
}

void ef_lm_init(ef_lm *m, uint64_t seed) {
    ef_rng r;
    ef_rng_seed(&r, seed);
    ef_params *p = m->params;
    double resid_std = 0.02 / sqrt(2.0 * m->L);
    for (size_t i = 0; i < ef_params_count(p); i++) {
        const ef_tensor_info *ti = ef_params_info(p, i);
        float *w = ef_params_tensor(p, i);
        if (ti->ndim == 1) {
            for (size_t j = 0; j < ti->numel; j++) w[j] = 1.0f;
            continue;
        }
        size_t len = strlen(ti->name);
        int resid = (len > 19 && strcmp(ti->name + len - 19, ".attn_output.weight") == 0) ||
                    (len > 16 && strcmp(ti->name + len - 16, ".ffn_down.weight") == 0);
        double sd = resid ? resid_std : 0.02;
        for (size_t j = 0; j < ti->numel; j++) w[j] = (float)(sd * ef_rng_normal(&r));
    }
}

/* ---- work sharing ------------------------------------------------------------------ */

/*
 * Work is cut into chunks whose bounds depend only on the problem (never on
 * the thread count), and threads claim chunks from a shared counter. Each
 * chunk is computed the same way whichever thread takes it, so results are
 * the same bits for any number of threads, and a thread slowed down by
 * another process on its core simply takes fewer chunks (a static split
 * would leave the whole step waiting for it).
 */
typedef struct dyn_ctx {
    atomic_llong next;
    int64_t n;
    void (*chunk)(void *ctx, int64_t k, int thread);
    void *ctx;
} dyn_ctx;

static void dyn_task(void *vctx, int thread, int n_threads) {
    EF_UNUSED(n_threads);
    dyn_ctx *d = vctx;
    for (;;) {
        int64_t k = (int64_t)atomic_fetch_add_explicit(&d->next, 1, memory_order_relaxed);
        if (k >= d->n) break;
        d->chunk(d->ctx, k, thread);
    }
}

/* Runs chunk(ctx, k, thread) for k in [0, n) on the pool's threads. */
static void dyn_run(ef_pool *pool, int64_t n, void (*chunk)(void *, int64_t, int), void *ctx) {
    dyn_ctx d = {.n = n, .chunk = chunk, .ctx = ctx};
    atomic_init(&d.next, 0);
    if (n <= 1) pool = NULL;
    ef_pool_run(pool, dyn_task, &d);
}

/* ---- threaded matrix products -------------------------------------------------- */

/* Rows per chunk: a multiple of 16 (full SIMD panels) with enough work per
 * sgemm call that packing the shared operand stays a small cost. */
#define MM_CHUNK 128

typedef struct mm_ctx {
    int mode;             /* 0: C = A B^T; 1: C = A B; 2: C += A^T B (weight gradient) */
    float *c;
    const float *a, *b;
    int M, N, K;          /* C (M, N) */
    float beta;
} mm_ctx;

static void mm_chunk(void *vctx, int64_t k, int thread) {
    EF_UNUSED(thread);
    const mm_ctx *x = vctx;
    int b = (int)k * MM_CHUNK, e = b + MM_CHUNK < x->M ? b + MM_CHUNK : x->M;
    if (x->mode == 2) // C[b:e] (rows of the weight gradient) += A[:, b:e]^T B, A (K, M)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, e - b, x->N, x->K, 1.0f, x->a + b,
                    x->M, x->b, x->N, 1.0f, x->c + (size_t)b * x->N, x->N);
    else if (x->mode == 0) // C (M, N) = A (M, K) B^T with B (N, K)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, e - b, x->N, x->K, 1.0f,
                    x->a + (size_t)b * x->K, x->K, x->b, x->K, x->beta, x->c + (size_t)b * x->N,
                    x->N);
    else // C (M, N) = A (M, K) B with B (K, N)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, e - b, x->N, x->K, 1.0f,
                    x->a + (size_t)b * x->K, x->K, x->b, x->N, x->beta, x->c + (size_t)b * x->N,
                    x->N);
}

static void mm_run(ef_lm *m, int mode, float *c, const float *a, const float *b, int M, int N,
                   int K, float beta) {
    mm_ctx x = {mode, c, a, b, M, N, K, beta};
    dyn_run((double)M * N * K < 1e5 ? NULL : m->pool, (M + MM_CHUNK - 1) / MM_CHUNK, mm_chunk,
            &x);
}

/* out (n, OC) = beta out + inp (n, IC) @ W^T, W (OC, IC). */
static void lin_fwd(ef_lm *m, float *out, const float *inp, const float *W, int n, int IC,
                    int OC, float beta) {
    mm_run(m, 0, out, inp, W, n, OC, IC, beta);
}

/* dW (OC, IC) += dout^T inp; dinp (n, IC) = beta dinp + dout (n, OC) @ W. */
static void lin_bwd(ef_lm *m, float *dinp, float *dW, const float *dout, const float *inp,
                    const float *W, int n, int IC, int OC, float beta) {
    mm_run(m, 2, dW, dout, inp, OC, IC, n, 1.0f);
    if (dinp) mm_run(m, 1, dinp, dout, W, n, IC, OC, beta);
}

/* ---- RoPE + head-major scatter / gather ----------------------------------------- */

typedef struct qkv_ctx {
    ef_lm *m;
    float *tok;              /* (N, QKV) token-major */
    float *q, *k, *v;        /* head-major */
    int T;
} qkv_ctx;

/* dst[2i], dst[2i+1] = src pair rotated by sign * angle (cs: cos, sin pairs). */
static inline void rot_pairs(float *restrict dst, const float *restrict src,
                             const float *restrict cs, int HS, float sign) {
    for (int i = 0; i < HS; i += 2) {
        float c = cs[i], s = sign * cs[i + 1], x0 = src[i], x1 = src[i + 1];
        dst[i] = c * x0 - s * x1;
        dst[i + 1] = s * x0 + c * x1;
    }
}

static void scatter_rows(void *vctx, int64_t begin, int64_t end, int thread) {
    EF_UNUSED(thread);
    const qkv_ctx *c = vctx;
    const ef_lm *m = c->m;
    int T = c->T, HS = m->HS;
    for (int64_t n = begin; n < end; n++) {
        int b = (int)(n / T), t = (int)(n % T);
        const float *row = c->tok + (size_t)n * m->QKV;
        const float *cs = m->rope + (size_t)t * HS; // (HS/2, 2)
        for (int h = 0; h < m->NH; h++)
            rot_pairs(c->q + (((size_t)b * m->NH + h) * T + t) * HS, row + (size_t)h * HS, cs,
                      HS, 1.0f);
        for (int h = 0; h < m->NKV; h++) {
            size_t o = (((size_t)b * m->NKV + h) * T + t) * HS;
            rot_pairs(c->k + o, row + m->D + (size_t)h * HS, cs, HS, 1.0f);
            memcpy(c->v + o, row + m->D + m->KVD + (size_t)h * HS, (size_t)HS * sizeof(float));
        }
    }
}

static void gather_rows(void *vctx, int64_t begin, int64_t end, int thread) {
    EF_UNUSED(thread);
    const qkv_ctx *c = vctx;
    const ef_lm *m = c->m;
    int T = c->T, HS = m->HS;
    for (int64_t n = begin; n < end; n++) {
        int b = (int)(n / T), t = (int)(n % T);
        float *row = c->tok + (size_t)n * m->QKV;
        const float *cs = m->rope + (size_t)t * HS;
        for (int h = 0; h < m->NH; h++)
            rot_pairs(row + (size_t)h * HS, c->q + (((size_t)b * m->NH + h) * T + t) * HS, cs,
                      HS, -1.0f);
        for (int h = 0; h < m->NKV; h++) {
            size_t o = (((size_t)b * m->NKV + h) * T + t) * HS;
            rot_pairs(row + m->D + (size_t)h * HS, c->k + o, cs, HS, -1.0f);
            memcpy(row + m->D + m->KVD + (size_t)h * HS, c->v + o, (size_t)HS * sizeof(float));
        }
    }
}

/* ---- attention ------------------------------------------------------------------ */

typedef struct att_ctx {
    ef_lm *m;
    const lm_la *x;
    int B, T;
} att_ctx;

/* Softmax of row[0..t] in place; zeroes row(t, end). */
static void causal_softmax_row(float *restrict row, int t, int end) {
    float mx = row[0];
    for (int j = 1; j <= t; j++) mx = row[j] > mx ? row[j] : mx;
    for (int j = 0; j <= t; j++) row[j] = ef__expf(row[j] - mx);
    float inv = 1.0f / ef__sum(row, t + 1);
    for (int j = 0; j <= t; j++) row[j] *= inv;
    for (int j = t + 1; j < end; j++) row[j] = 0.0f;
}

static void att_fwd_head(void *vctx, int64_t r, int thread) {
    EF_UNUSED(thread);
    const att_ctx *c = vctx;
    const ef_lm *m = c->m;
    const lm_la *x = c->x;
    int T = c->T, HS = m->HS, NH = m->NH, D = m->D, group = m->NH / m->NKV;
    float scale = 1.0f / sqrtf((float)HS);
    int b = (int)(r / NH), h = (int)(r % NH), kvh = h / group;
    const float *q = x->q + (size_t)r * T * HS;                         // (T, HS)
    const float *k = x->k + ((size_t)b * m->NKV + kvh) * T * HS;        // (T, HS)
    const float *v = x->v + ((size_t)b * m->NKV + kvh) * T * HS;        // (T, HS)
    float *P = x->att + (size_t)r * T * T;                              // (T, T)
    float *o = x->ao + (size_t)b * T * D + (size_t)h * HS;              // (T, HS), ld D
    for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
        int i1 = i0 + ATT_BLOCK < T ? i0 + ATT_BLOCK : T, rows = i1 - i0;
        // S[i0:i1, 0:i1] = scale q[i0:i1] k[0:i1]^T
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, i1, HS, scale,
                    q + (size_t)i0 * HS, HS, k, HS, 0.0f, P + (size_t)i0 * T, T);
        for (int t = i0; t < i1; t++) causal_softmax_row(P + (size_t)t * T, t, i1);
        // o[i0:i1] = P[i0:i1, 0:i1] v[0:i1]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, HS, i1, 1.0f,
                    P + (size_t)i0 * T, T, v, HS, 0.0f, o + (size_t)i0 * D, D);
    }
}

static void att_bwd_group(void *vctx, int64_t r, int thread) {
    const att_ctx *c = vctx;
    const ef_lm *m = c->m;
    const lm_la *x = c->x;
    int T = c->T, HS = m->HS, NH = m->NH, NKV = m->NKV, D = m->D, group = NH / NKV;
    float scale = 1.0f / sqrtf((float)HS);
    float *ds = m->att_work + (size_t)thread * T * T; // (T, T) in causal blocks
    int b = (int)(r / NKV), kvh = (int)(r % NKV);
    size_t kvo = ((size_t)b * NKV + kvh) * T * HS;
    const float *k = x->k + kvo, *v = x->v + kvo; // (T, HS)
    float *dk = m->dk + kvo, *dv = m->dv + kvo;   // (T, HS)
    memset(dk, 0, (size_t)T * HS * sizeof(float));
    memset(dv, 0, (size_t)T * HS * sizeof(float));
    for (int g = 0; g < group; g++) {
        int h = kvh * group + g;
        size_t qo = ((size_t)b * NH + h) * T * HS;
        const float *q = x->q + qo;                                  // (T, HS)
        float *dq = m->dq + qo;                                      // (T, HS)
        const float *P = x->att + ((size_t)b * NH + h) * T * T;       // (T, T)
        const float *dO = m->dao + (size_t)b * T * D + (size_t)h * HS; // (T, HS), ld D
        for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
            int i1 = i0 + ATT_BLOCK < T ? i0 + ATT_BLOCK : T, rows = i1 - i0;
            const float *Pb = P + (size_t)i0 * T;
            float *dsb = ds + (size_t)i0 * T;
            // dP[i0:i1, 0:i1] = dO[i0:i1] v[0:i1]^T
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, i1, HS, 1.0f,
                        dO + (size_t)i0 * D, D, v, HS, 0.0f, dsb, T);
            // dv[0:i1] += P[i0:i1, 0:i1]^T dO[i0:i1]
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, i1, HS, rows, 1.0f, Pb, T,
                        dO + (size_t)i0 * D, D, 1.0f, dv, HS);
            // dS = P (dP - sum_j P dP) * scale, row by row (zero above the diagonal)
            for (int t = i0; t < i1; t++) {
                const float *pr = P + (size_t)t * T;
                float *dr = ds + (size_t)t * T;
                float dot = ef__dot(pr, dr, t + 1);
                for (int j = 0; j <= t; j++) dr[j] = pr[j] * (dr[j] - dot) * scale;
                for (int j = t + 1; j < i1; j++) dr[j] = 0.0f;
            }
            // dq[i0:i1] = dS[i0:i1, 0:i1] k[0:i1]
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, HS, i1, 1.0f, dsb,
                        T, k, HS, 0.0f, dq + (size_t)i0 * HS, HS);
            // dk[0:i1] += dS[i0:i1, 0:i1]^T q[i0:i1]
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, i1, HS, rows, 1.0f, dsb, T,
                        q + (size_t)i0 * HS, HS, 1.0f, dk, HS);
        }
    }
}

/* ---- loss ------------------------------------------------------------------------- */

typedef struct xent_ctx {
    ef_lm *m;
    const float *dlosses; /* NULL: mean */
    float dmean;
} xent_ctx;

static void xent_fwd_rows(void *vctx, int64_t begin, int64_t end, int thread) {
    EF_UNUSED(thread);
    const xent_ctx *c = vctx;
    ef_lm *m = c->m;
    int V = m->V;
    for (int64_t n = begin; n < end; n++) {
        const float *lg = m->logits + (size_t)n * V;
        float mx = lg[0];
        for (int j = 1; j < V; j++) mx = lg[j] > mx ? lg[j] : mx;
        // Sum of exponentials in 8 partial sums (vectorizes), then in double.
        float acc[8] = {0};
        int j = 0;
        for (; j + 8 <= V; j += 8)
            for (int u = 0; u < 8; u++) acc[u] += ef__expf(lg[j + u] - mx);
        double s = 0.0;
        for (int u = 0; u < 8; u++) s += acc[u];
        for (; j < V; j++) s += ef__expf(lg[j] - mx);
        float lse = mx + (float)log(s);
        m->lse[n] = lse;
        if (m->have_targets) m->losses[n] = lse - lg[m->targets[n]];
    }
}

static void xent_bwd_rows(void *vctx, int64_t begin, int64_t end, int thread) {
    EF_UNUSED(thread);
    const xent_ctx *c = vctx;
    ef_lm *m = c->m;
    int V = m->V;
    for (int64_t n = begin; n < end; n++) {
        float *lg = m->logits + (size_t)n * V;
        float g = c->dlosses ? c->dlosses[n] : c->dmean, lse = m->lse[n];
        int tgt = m->targets[n];
        float p_t = ef__expf(lg[tgt] - lse);
        for (int j = 0; j < V; j++) lg[j] = ef__expf(lg[j] - lse) * g;
        // (p - 1) g for the target rather than p g - g: exact when p is near 1
        lg[tgt] = (p_t - 1.0f) * g;
    }
}

/* ---- forward / backward -------------------------------------------------------------- */

static ef_status check_tokens(const int32_t *t, size_t n, int V, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (t[i] < 0 || t[i] >= V)
            return ef__fail(EF_ERR_RANGE, "lm: %s[%zu] = %d is outside [0, %d)", what, i,
                            (int)t[i], V);
    return EF_OK;
}

ef_status ef_lm_forward(ef_lm *m, const int32_t *ids, const int32_t *targets, int B, int T,
                        float *loss) {
    if (!ids) return ef__fail(EF_ERR_INVALID, "lm: NULL ids");
    if (B < 1 || B > m->max_batch || T < 1 || T > m->cfg.max_seq)
        return ef__fail(EF_ERR_INVALID, "lm: batch %dx%d outside 1..%d x 1..%d", B, T,
                        m->max_batch, m->cfg.max_seq);
    size_t N = (size_t)B * T, D = (size_t)m->D;
    ef_status st = check_tokens(ids, N, m->V, "ids");
    if (st == EF_OK && targets) st = check_tokens(targets, N, m->V, "targets");
    if (st != EF_OK) return st;
    memcpy(m->ids, ids, N * sizeof(int32_t));
    if (targets) memcpy(m->targets, targets, N * sizeof(int32_t));
    m->B = B, m->T = T;
    m->have_targets = targets != NULL;
    m->backward_ready = 0;
    ef__blas_init();
    int n = (int)N, Dn = m->D, F = m->F;

    PROF_T0;
    (void)ef_embedding_forward(m->resid[0], m->ids, m->emb, n, m->V, Dn); // ids checked
    for (int l = 0; l < m->L; l++) {
        const lm_lw *w = &m->lw[l];
        lm_la *x = &m->la[l];
        float *xin = m->resid[l], *xout = m->resid[l + 1];
        // attention block: res1 = xin + o(attn(rope(q), rope(k), v))
        ef_rmsnorm_forward(x->xn1, x->rstd1, xin, w->norm1, n, Dn, m->cfg.norm_eps, m->pool);
        PROF(0);
        lin_fwd(m, m->qkv, x->xn1, w->wqkv, n, Dn, m->QKV, 0.0f);
        PROF(1);
        qkv_ctx qc = {m, m->qkv, x->q, x->k, x->v, T};
        ef_pool_for(m->pool, n, scatter_rows, &qc);
        PROF(2);
        att_ctx ac = {m, x, B, T};
        dyn_run(m->pool, (int64_t)B * m->NH, att_fwd_head, &ac);
        PROF(3);
        memcpy(x->res1, xin, N * D * sizeof(float));
        lin_fwd(m, x->res1, x->ao, w->wo, n, Dn, Dn, 1.0f);
        PROF(4);
        // MLP block: xout = res1 + down(silu(gate) * up)
        ef_rmsnorm_forward(x->xn2, x->rstd2, x->res1, w->norm2, n, Dn, m->cfg.norm_eps, m->pool);
        PROF(0);
        lin_fwd(m, x->gu, x->xn2, w->wgu, n, Dn, 2 * F, 0.0f);
        PROF(5);
        ef_swiglu_forward(x->hh, x->gu, x->gu + F, n, F, 2 * F, m->pool);
        PROF(6);
        memcpy(xout, x->res1, N * D * sizeof(float));
        lin_fwd(m, xout, x->hh, w->wd, n, F, Dn, 1.0f);
        PROF(7);
    }
    ef_rmsnorm_forward(m->xf, m->rstdf, m->resid[m->L], m->normf, n, Dn, m->cfg.norm_eps,
                       m->pool);
    PROF(0);
    lin_fwd(m, m->logits, m->xf, m->wout, n, Dn, m->V, 0.0f);
    PROF(8);
    xent_ctx xc = {m, NULL, 0.0f};
    ef_pool_for(m->pool, n, xent_fwd_rows, &xc);
    PROF(9);
    if (targets) {
        double s = 0.0;
        for (size_t i = 0; i < N; i++) s += m->losses[i];
        if (loss) *loss = (float)(s / (double)N);
        m->backward_ready = 1;
    }
    return EF_OK;
}

ef_status ef_lm_backward(ef_lm *m, const float *dlosses) {
    if (!m->backward_ready)
        return ef__fail(EF_ERR_STATE, "lm: backward needs a forward pass with targets first");
    m->backward_ready = 0;
    int B = m->B, T = m->T, n = B * T, Dn = m->D, F = m->F;
    size_t N = (size_t)n, D = (size_t)Dn;

    // dlogits in place, then the output projection and the final norm.
    PROF_T0;
    xent_ctx xc = {m, dlosses, 1.0f / (float)n};
    ef_pool_for(m->pool, n, xent_bwd_rows, &xc);
    PROF(10);
    lin_bwd(m, m->dxn, m->dwout, m->logits, m->xf, m->wout, n, Dn, m->V, 0.0f);
    PROF(11);
    memset(m->dres, 0, N * D * sizeof(float));
    ef_rmsnorm_backward(m->dres, m->dnormf, m->dxn, m->resid[m->L], m->normf, m->rstdf, n, Dn,
                        m->pool);
    PROF(12);

    for (int l = m->L - 1; l >= 0; l--) {
        const lm_lw *w = &m->lw[l];
        const lm_lw *g = &m->lg[l];
        const lm_la *x = &m->la[l];
        // MLP block; dres is the gradient of its output and, through the
        // residual, of res1.
        lin_bwd(m, m->dhh, g->wd, m->dres, x->hh, w->wd, n, F, Dn, 0.0f);
        PROF(13);
        ef__swiglu_backward_set(m->dgu, m->dgu + F, m->dhh, x->gu, x->gu + F, n, F, 2 * F,
                                m->pool);
        PROF(14);
        lin_bwd(m, m->dxn, g->wgu, m->dgu, x->xn2, w->wgu, n, Dn, 2 * F, 0.0f);
        PROF(15);
        ef_rmsnorm_backward(m->dres, g->norm2, m->dxn, x->res1, w->norm2, x->rstd2, n, Dn,
                            m->pool);
        PROF(12);
        // attention block
        lin_bwd(m, m->dao, g->wo, m->dres, x->ao, w->wo, n, Dn, Dn, 0.0f);
        PROF(16);
        att_ctx ac = {m, x, B, T};
        dyn_run(m->pool, (int64_t)B * m->NKV, att_bwd_group, &ac);
        PROF(17);
        qkv_ctx qc = {m, m->qkv, m->dq, m->dk, m->dv, T};
        ef_pool_for(m->pool, n, gather_rows, &qc);
        PROF(18);
        lin_bwd(m, m->dxn, g->wqkv, m->qkv, x->xn1, w->wqkv, n, Dn, m->QKV, 0.0f);
        PROF(19);
        ef_rmsnorm_backward(m->dres, g->norm1, m->dxn, m->resid[l], w->norm1, x->rstd1, n, Dn,
                            m->pool);
        PROF(12);
    }
    ef_embedding_backward(m->demb, m->dres, m->ids, n, Dn);
    PROF(20);
    return EF_OK;
}

/* ---- files ------------------------------------------------------------------------- */

#define META_INT(key, field) {key, offsetof(ef_lm_config, field), 0}
#define META_FLT(key, field) {key, offsetof(ef_lm_config, field), 1}
static const struct {
    const char *key;
    size_t off;
    int is_float;
} k_meta[] = {
    META_INT("edgefl.lm.vocab", vocab),         META_INT("edgefl.lm.dim", dim),
    META_INT("edgefl.lm.n_layers", n_layers),   META_INT("edgefl.lm.n_heads", n_heads),
    META_INT("edgefl.lm.n_kv_heads", n_kv_heads), META_INT("edgefl.lm.ffn_dim", ffn_dim),
    META_INT("edgefl.lm.max_seq", max_seq),     META_FLT("edgefl.lm.norm_eps", norm_eps),
    META_FLT("edgefl.lm.rope_theta", rope_theta), META_INT("edgefl.lm.tied", tied),
};
#define N_META (sizeof k_meta / sizeof k_meta[0])
_Static_assert(N_META == EF_LM_META_COUNT, "EF_LM_META_COUNT");

/* Fills kv[0..N_META) (values in bufs, 32 bytes each) from cfg; returns N_META. */
size_t ef__lm_config_meta(const ef_lm_config *cfg, ef_st_kv *kv, char (*bufs)[32]) {
    for (size_t i = 0; i < N_META; i++) {
        const char *p = (const char *)cfg + k_meta[i].off;
        if (k_meta[i].is_float) {
            float f;
            memcpy(&f, p, sizeof f);
            snprintf(bufs[i], 32, "%.9g", (double)f);
        } else {
            int v;
            memcpy(&v, p, sizeof v);
            snprintf(bufs[i], 32, "%d", k_meta[i].off == offsetof(ef_lm_config, tied) ? !!v : v);
        }
        kv[i].key = k_meta[i].key;
        kv[i].value = bufs[i];
    }
    return N_META;
}

ef_status ef__lm_config_from_meta(const ef_safetensors *st, const char *path,
                                  ef_lm_config *cfg) {
    ef_lm_config c;
    memset(&c, 0, sizeof c);
    const char *arch = ef_safetensors_meta(st, "edgefl.arch");
    if (!arch || strcmp(arch, "llama") != 0)
        return ef__fail(EF_ERR_FORMAT, "%s: not an edgefl language model (edgefl.arch is %s%s%s)",
                        path, arch ? "'" : "missing", arch ? arch : "", arch ? "'" : "");
    for (size_t i = 0; i < N_META; i++) {
        const char *s = ef_safetensors_meta(st, k_meta[i].key);
        if (!s) return ef__fail(EF_ERR_FORMAT, "%s: metadata %s missing", path, k_meta[i].key);
        char *end;
        char *p = (char *)&c + k_meta[i].off;
        if (k_meta[i].is_float) {
            float f = strtof(s, &end);
            if (end == s || *end) goto bad;
            memcpy(p, &f, sizeof f);
        } else {
            long v = strtol(s, &end, 10);
            if (end == s || *end || v < 0 || v > (1L << 30)) goto bad;
            int iv = (int)v;
            memcpy(p, &iv, sizeof iv);
        }
        continue;
    bad:
        return ef__fail(EF_ERR_FORMAT, "%s: bad metadata %s = '%s'", path, k_meta[i].key, s);
    }
    ef_status rc = ef_lm_config_check(&c);
    if (rc != EF_OK) return ef__fail(EF_ERR_FORMAT, "%s: %s", path, ef_last_error());
    *cfg = c;
    return EF_OK;
}

ef_status ef_lm_save(ef_lm *m, const char *path, const ef_st_kv *extra, size_t n_extra) {
    ef_st_kv kv[N_META + 3 + 32];
    char bufs[N_META][32];
    if (n_extra > 32) return ef__fail(EF_ERR_INVALID, "lm: too many metadata entries");
    size_t k = ef__lm_config_meta(&m->cfg, kv, bufs);
    kv[k++] = (ef_st_kv){"format", "pt"};
    kv[k++] = (ef_st_kv){"edgefl.arch", "llama"};
    kv[k++] = (ef_st_kv){"edgefl.version", EF_VERSION_STRING};
    for (size_t i = 0; i < n_extra; i++) kv[k++] = extra[i];
    return ef_safetensors_save(path, m->params, kv, k);
}

ef_status ef_lm_read_config(const char *path, ef_lm_config *cfg) {
    ef_safetensors *st = NULL;
    ef_status rc = ef_safetensors_open(&st, path);
    if (rc != EF_OK) return rc;
    rc = ef__lm_config_from_meta(st, path, cfg);
    ef_safetensors_close(st);
    return rc;
}

ef_status ef_lm_load(ef_lm **out, const char *path, int max_batch, ef_pool *pool) {
    *out = NULL;
    ef_lm_config cfg;
    ef_status rc = ef_lm_read_config(path, &cfg);
    if (rc != EF_OK) return rc;
    ef_lm *m = NULL;
    if ((rc = ef_lm_new(&m, &cfg, max_batch, pool)) != EF_OK) return rc;
    if ((rc = ef_safetensors_load_params(path, m->params)) != EF_OK) {
        ef_lm_free(m);
        return rc;
    }
    *out = m;
    return EF_OK;
}
