/*
 * The inference forward pass: KV cache, batched prompt processing and
 * single-token decoding, multi-threaded.
 *
 * Threading. One ef_pool_run per pass: every thread walks the whole layer
 * stack and the threads meet at spin barriers, five or six per layer (after
 * the q/k/v products, after RoPE for batches, after attention, after each
 * residual product). Matrix products split output rows into contiguous
 * ranges (multiples of 8, the kernels' tile). What every thread needs whole
 * (the normalized input of a product and its conversion to the weights'
 * vec-dot format) each thread computes itself into private buffers: a few
 * thousand elements of redundant work costs less than one more barrier.
 * For a single token, RoPE of the new key and the cache write happen inside
 * the attention step: a thread uses its own rotated copy of the current
 * position's key and value, and the thread owning the group's first head
 * writes them to the cache, which nobody reads at that position during the
 * pass.
 *
 * Arithmetic. llama.cpp's CPU backend's, so that logits are bit-identical
 * to its own (docs/slm.md, "Matching llama.cpp"): RMSNorm sums squares in
 * double and multiplies (x * scale) * w; RoPE angles are pos *
 * theta^(-2i/head_dim) built by repeated multiplication in float; attention
 * is its flash-attention loop (query rounded to F16 with the default cache);
 * the last layer's MLP runs on the rows whose logits are wanted. Every
 * kernel set computes bit-identical results, and so does any number of
 * threads or split into passes (for F32/F16 weights, passes of one token
 * among themselves: see slm_internal.h).
 */
#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#include "model.h"

typedef struct thr_buf {
    float *xn;       /* (B, max(D, F)) normalized rows */
    uint16_t *xh;    /* F16 copy of the current activation rows */
    void *xq;        /* Q8_0 copy */
    float *kr;       /* (2, head_dim) this thread's rotated key of the current position, its query */
    void *acc;       /* (head_dim) attention accumulator, F16 or F32 */
    float *sc;       /* (2, n_ctx) attention scratch */
    void *kc, *vc;   /* the current key (rotated) and value in the cache's type */
    void *qc;        /* (head_dim) query in the cache's type */
    int kr_g;        /* group kr/kc/vc hold, -1 if none */
} thr_buf;

/* What the conversions of one activation produced so far (per thread). */
typedef struct act {
    const float *src; /* (T, width) rows */
    int64_t width;
    int T;
    unsigned have;    /* bit 0: F16, bit 1: Q8_0 */
} act;

struct ef_slm_ctx {
    const ef_slm_model *m;
    const ef__slm_kernels *k;
    ef_pool *pool;
    int own_pool;
    int n_ctx, n_batch, pos, kv_f32;
    size_t kv_elem;
    char *kcache, *vcache; /* (L, n_ctx, kv_dim) */
    float *x, *q, *kn, *vn, *att, *tmp, *g, *u, *cs;
    thr_buf *tb;
    int n_tb;
    void *tb_mem;
    _Alignas(64) atomic_int bar_count;
    _Alignas(64) atomic_int bar_gen;
    /* the current pass */
    const int32_t *tok;
    int T, pos0, all;
    float *out;
};

/* ---- small pieces ------------------------------------------------------ */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void barrier(ef_slm_ctx *c, int nth) {
    if (nth <= 1) return;
    int g = atomic_load_explicit(&c->bar_gen, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&c->bar_count, 1, memory_order_acq_rel) == nth - 1) {
        atomic_store_explicit(&c->bar_count, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&c->bar_gen, 1, memory_order_release);
        return;
    }
    for (unsigned i = 1; atomic_load_explicit(&c->bar_gen, memory_order_acquire) == g; i++) {
        cpu_relax();
        if ((i & 1023) == 0) sched_yield(); /* a peer may have lost its CPU */
    }
}

/* Part `tid` of [0, n) in whole multiples of `align` (the last part takes the rest). */
static void split(int64_t n, int tid, int nth, int64_t align, int64_t *b, int64_t *e) {
    int64_t chunks = (n + align - 1) / align;
    int64_t cb = chunks * tid / nth, ce = chunks * (tid + 1) / nth;
    *b = cb * align < n ? cb * align : n;
    *e = ce * align < n ? ce * align : n;
}

static void rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(x[i] * x[i]);
    float mean = (float)(sum / (double)n);
    float scale = 1.0f / sqrtf(mean + eps);
    for (int64_t i = 0; i < n; i++) y[i] = (x[i] * scale) * w[i];
}

/* cos/sin of the RoPE angles of position pos: cs[2i] = cos, cs[2i+1] = sin. */
static void rope_table(float *cs, int pos, int hd, float theta_base) {
    const float theta_scale = powf(theta_base, -2.0f / (float)hd);
    float theta = (float)pos;
    for (int i = 0; i < hd / 2; i++) {
        cs[2 * i] = cosf(theta);
        cs[2 * i + 1] = sinf(theta);
        theta *= theta_scale;
    }
}

/* The activation rows in vec-dot type vt, converted by this thread on first use. */
static const void *act_get(const ef_slm_ctx *c, thr_buf *tb, act *a, ef_slm_type vt, size_t *stride) {
    if (vt == EF_SLM_F32) {
        *stride = (size_t)a->width * sizeof(float);
        return a->src;
    }
    if (vt == EF_SLM_F16) {
        *stride = (size_t)a->width * 2;
        if (!(a->have & 1)) {
            for (int t = 0; t < a->T; t++) c->k->to_f16(tb->xh + (size_t)t * a->width, a->src + t * a->width, a->width);
            a->have |= 1;
        }
        return tb->xh;
    }
    *stride = ef__slm_row_bytes(EF_SLM_Q8_0, a->width);
    if (!(a->have & 2)) {
        for (int t = 0; t < a->T; t++)
            c->k->quant_q8_0((char *)tb->xq + (size_t)t * *stride, a->src + t * a->width, a->width);
        a->have |= 2;
    }
    return tb->xq;
}

/* y[t][r] = mat row r . activation row t, for r in [r0, r1). */
static void mat_rows(const ef_slm_ctx *c, thr_buf *tb, act *a, const ef__slm_mat *mt, float *y, int64_t ldy,
                     int64_t r0, int64_t r1) {
    if (r0 >= r1) return;
    size_t xs;
    const void *xp = act_get(c, tb, a, ef__slm_vec_type(mt->type), &xs);
    ef__slm_gemm_for(c->k, mt->type)(y, ldy, mt->data, mt->row_bytes, xp, xs, mt->cols, r0, r1, a->T);
}

/* The part of rows [b, e) of a stacked product that falls on matrix mt, whose
 * rows start at `base` in the stack; its outputs are rows of width mt->rows. */
static void mat_seg(const ef_slm_ctx *c, thr_buf *tb, act *a, const ef__slm_mat *mt, float *y, int64_t b,
                    int64_t e, int64_t base) {
    int64_t lo = b > base ? b - base : 0, hi = e - base < mt->rows ? e - base : mt->rows;
    mat_rows(c, tb, a, mt, y, mt->rows, lo, hi);
}

static inline void *cache_at(const ef_slm_ctx *c, char *base, int l, int p, int g) {
    const ef_slm_model *m = c->m;
    return base + (((size_t)l * c->n_ctx + p) * m->kv_dim + (size_t)g * m->head_dim) * c->kv_elem;
}

/* Converts hd floats to the cache's type at dst. */
static void to_cache(const ef_slm_ctx *c, void *dst, const float *src, int hd) {
    if (c->kv_f32) memcpy(dst, src, sizeof(float) * (size_t)hd);
    else c->k->to_f16(dst, src, hd);
}

/* Attention of token t (position pos0 + t), query head h, layer l. */
static void attend(ef_slm_ctx *c, thr_buf *tb, int l, int t, int h) {
    const ef_slm_model *m = c->m;
    const int hd = m->head_dim, group = m->cfg.n_heads / m->cfg.n_kv_heads, g = h / group;
    const int pos = c->pos0 + t;
    const float scale = 1.0f / sqrtf((float)hd);
    float *qv = c->q + (size_t)t * m->cfg.dim + (size_t)h * hd;
    const void *kcur = NULL, *vcur = NULL;
    if (c->T == 1) {
        /* rotate the query privately; rotate this group's new key once */
        float *qr = tb->kr + hd;
        memcpy(qr, qv, sizeof(float) * (size_t)hd);
        c->k->rope(qr, c->cs, 1, hd);
        qv = qr;
        if (tb->kr_g != g) {
            memcpy(tb->kr, c->kn + (size_t)g * hd, sizeof(float) * (size_t)hd);
            c->k->rope(tb->kr, c->cs, 1, hd);
            to_cache(c, tb->kc, tb->kr, hd);
            to_cache(c, tb->vc, c->vn + (size_t)g * hd, hd);
            tb->kr_g = g;
            if (h % group == 0) { /* the group's first head owns the cache write */
                memcpy(cache_at(c, c->kcache, l, pos, g), tb->kc, (size_t)hd * c->kv_elem);
                memcpy(cache_at(c, c->vcache, l, pos, g), tb->vc, (size_t)hd * c->kv_elem);
            }
        }
        kcur = tb->kc;
        vcur = tb->vc;
    }
    /* the cached positions, then (single token) the current one */
    const size_t stride = (size_t)m->kv_dim * c->kv_elem;
    const void *qk = qv;
    if (!c->kv_f32) {
        c->k->to_f16(tb->qc, qv, hd);
        qk = tb->qc;
    }
    const int f16 = !c->kv_f32, np = kcur ? pos : pos + 1;
    ef__fa st = {-INFINITY, 0.0f};
    memset(tb->acc, 0, (size_t)hd * c->kv_elem);
    c->k->fa_rows(&st, tb->acc, qk, cache_at(c, c->kcache, l, 0, g), cache_at(c, c->vcache, l, 0, g), stride, np,
                  hd, scale, f16, tb->sc);
    if (kcur) c->k->fa_rows(&st, tb->acc, qk, kcur, vcur, stride, 1, hd, scale, f16, tb->sc);
    c->k->fa_finish(c->att + (size_t)t * m->cfg.dim + (size_t)h * hd, &st, tb->acc, hd, f16);
}

/* ---- the pass -------------------------------------------------------------- */

static void forward_thread(void *arg, int tid, int nth) {
    ef_slm_ctx *c = arg;
    const ef_slm_model *m = c->m;
    const ef_slm_config *cf = &m->cfg;
    thr_buf *tb = &c->tb[tid];
    const int T = c->T, hd = m->head_dim, H = cf->n_heads, HKV = cf->n_kv_heads;
    const int64_t D = cf->dim, F = cf->ffn_dim, KV = m->kv_dim;
    int64_t b, e;
    tb->kr_g = -1;

    /* embeddings and RoPE angles, split over tokens */
    split(T, tid, nth, 1, &b, &e);
    for (int64_t t = b; t < e; t++) {
        ef__slm_dequant_row(m->tok_embd.type, m->tok_embd.data, m->tok_embd.row_bytes, c->tok[t], D,
                            c->x + t * D);
        rope_table(c->cs + t * hd, c->pos0 + (int)t, hd, cf->rope_theta);
    }
    barrier(c, nth);

    for (int l = 0; l < cf->n_layers; l++) {
        const ef__slm_layer *ly = &m->layers[l];
        /* attention: q, k, v for all tokens; rows split over q|k|v */
        for (int t = 0; t < T; t++) rmsnorm(tb->xn + t * D, c->x + t * D, ly->attn_norm, D, cf->rms_eps);
        act a = {tb->xn, D, T, 0};
        split(D + 2 * KV, tid, nth, 8, &b, &e);
        mat_seg(c, tb, &a, &ly->wq, c->q, b, e, 0);
        mat_seg(c, tb, &a, &ly->wk, c->kn, b, e, D);
        mat_seg(c, tb, &a, &ly->wv, c->vn, b, e, D + KV);
        barrier(c, nth);
        if (T > 1) {
            /* RoPE in place and the cache writes, per (token, head) */
            int64_t items = (int64_t)T * (H + HKV);
            split(items, tid, nth, 1, &b, &e);
            for (int64_t it = b; it < e; it++) {
                if (it < (int64_t)T * H) {
                    int t = (int)(it / H), h = (int)(it % H);
                    c->k->rope(c->q + t * D + (int64_t)h * hd, c->cs + t * hd, 1, hd);
                } else {
                    int64_t j = it - (int64_t)T * H;
                    int t = (int)(j / HKV), g = (int)(j % HKV);
                    float *kv = c->kn + t * KV + (int64_t)g * hd;
                    c->k->rope(kv, c->cs + t * hd, 1, hd);
                    to_cache(c, cache_at(c, c->kcache, l, c->pos0 + t, g), kv, hd);
                    to_cache(c, cache_at(c, c->vcache, l, c->pos0 + t, g), c->vn + t * KV + (int64_t)g * hd, hd);
                }
            }
            barrier(c, nth);
        }
        split((int64_t)T * H, tid, nth, 1, &b, &e);
        tb->kr_g = -1;
        for (int64_t it = b; it < e; it++) attend(c, tb, l, (int)(it / H), (int)(it % H));
        barrier(c, nth);
        /* output projection and residual */
        act ao = {c->att, D, T, 0};
        split(D, tid, nth, 8, &b, &e);
        mat_rows(c, tb, &ao, &ly->wo, c->tmp, D, b, e);
        for (int t = 0; t < T; t++)
            for (int64_t r = b; r < e; r++) c->x[t * D + r] += c->tmp[t * D + r];
        barrier(c, nth);
        /* SwiGLU MLP. In the last layer only the rows whose logits are wanted
         * go on, as llama.cpp selects them there (inp_out_ids): none without
         * logits, the last token's alone unless all are asked for. That also
         * gives those rows llama.cpp's single-row product order. */
        int f0 = 0, fn = T;
        if (l == cf->n_layers - 1) {
            if (!c->out) return;
            if (!c->all) f0 = T - 1, fn = 1;
        }
        for (int t = 0; t < fn; t++) rmsnorm(tb->xn + t * D, c->x + (f0 + t) * D, ly->ffn_norm, D, cf->rms_eps);
        act af = {tb->xn, D, fn, 0};
        split(F, tid, nth, 8, &b, &e);
        mat_rows(c, tb, &af, &ly->w_gate, c->g, F, b, e);
        mat_rows(c, tb, &af, &ly->w_up, c->u, F, b, e);
        /* b is a multiple of 8, so the groups of eight start where llama.cpp's do */
        for (int t = 0; t < fn && b < e; t++) c->k->swiglu(c->g + t * F + b, c->u + t * F + b, e - b);
        barrier(c, nth);
        act ad = {c->g, F, fn, 0};
        split(D, tid, nth, 8, &b, &e);
        mat_rows(c, tb, &ad, &ly->w_down, c->tmp, D, b, e);
        for (int t = 0; t < fn; t++)
            for (int64_t r = b; r < e; r++) c->x[(f0 + t) * D + r] += c->tmp[t * D + r];
        barrier(c, nth);
    }
    int t0 = c->all ? 0 : T - 1, nt = c->all ? T : 1;
    for (int t = 0; t < nt; t++) rmsnorm(tb->xn + t * D, c->x + (t0 + t) * D, m->output_norm, D, cf->rms_eps);
    act ax = {tb->xn, D, nt, 0};
    split(cf->vocab, tid, nth, 8, &b, &e);
    mat_rows(c, tb, &ax, &m->output, c->out, cf->vocab, b, e);
}

/* ---- context --------------------------------------------------------------- */

ef_status ef_slm_ctx_new(ef_slm_ctx **out, const ef_slm_model *m, const ef_slm_ctx_opts *opts) {
    *out = NULL;
    ef_slm_ctx_opts o = {0};
    if (opts) o = *opts;
    if (!m) return ef__fail(EF_ERR_INVALID, "ef_slm_ctx_new: no model");
    if (o.n_ctx < 0 || o.n_batch < 0 || o.n_threads < 0)
        return ef__fail(EF_ERR_INVALID, "ef_slm_ctx_new: negative n_ctx, n_batch or n_threads");
    if (o.n_ctx == 0) o.n_ctx = m->cfg.ctx_len;
    if (o.n_batch == 0) o.n_batch = 64;
    if (o.n_batch > o.n_ctx) o.n_batch = o.n_ctx;
    if (o.n_ctx > (1 << 24) || o.n_batch > 65536)
        return ef__fail(EF_ERR_RANGE, "ef_slm_ctx_new: n_ctx %d / n_batch %d too large", o.n_ctx, o.n_batch);
    const ef__slm_kernels *k = ef__slm_kernels_for(o.isa);
    if (!k)
        return ef__fail(EF_ERR_UNSUPPORTED, "the %s kernels need CPU features this machine lacks (or EDGEFL_CPU forbids)",
                        o.isa == EF_SLM_ISA_AVX512 ? "AVX-512" : "AVX2");
    ef_slm_ctx *c = ef_calloc(1, sizeof *c);
    if (!c) return EF_ERR_NOMEM;
    c->m = m;
    c->k = k;
    c->n_ctx = o.n_ctx;
    c->n_batch = o.n_batch;
    c->kv_f32 = o.kv_f32 != 0;
    c->kv_elem = c->kv_f32 ? 4 : 2;
    atomic_init(&c->bar_count, 0);
    atomic_init(&c->bar_gen, 0);
    ef_status st = EF_OK;
    if (o.pool) {
        c->pool = o.pool;
    } else {
        if ((st = ef_pool_new(&c->pool, o.n_threads)) != EF_OK) goto fail;
        c->own_pool = 1;
    }
    const int64_t B = o.n_batch, D = m->cfg.dim, F = m->cfg.ffn_dim, KV = m->kv_dim, hd = m->head_dim;
    const int64_t L = m->cfg.n_layers, W = D > F ? D : F;
    size_t cache_bytes = (size_t)L * (size_t)o.n_ctx * (size_t)KV * c->kv_elem;
    c->kcache = ef_calloc(1, cache_bytes);
    c->vcache = ef_calloc(1, cache_bytes);
    c->x = ef_malloc(sizeof(float) * (size_t)(B * (4 * D + 2 * KV + 2 * F + hd)));
    if (!c->kcache || !c->vcache || !c->x) goto nomem;
    c->q = c->x + B * D;
    c->att = c->q + B * D;
    c->tmp = c->att + B * D;
    c->kn = c->tmp + B * D;
    c->vn = c->kn + B * KV;
    c->g = c->vn + B * KV;
    c->u = c->g + B * F;
    c->cs = c->u + B * F;
    /* per-thread buffers, each on its own cache lines */
    c->n_tb = ef_pool_threads(c->pool);
    size_t q8 = W % EF_QK == 0 ? ef__slm_row_bytes(EF_SLM_Q8_0, W) : 0;
    size_t per = sizeof(float) * (size_t)(B * W) + 2 * (size_t)(B * W) + (size_t)B * q8 +
                 sizeof(float) * (size_t)(2 * hd) + sizeof(float) * (size_t)(2 * o.n_ctx) + 4 * (size_t)(4 * hd);
    per = (per + 63) & ~(size_t)63;
    c->tb = ef_calloc((size_t)c->n_tb, sizeof *c->tb);
    c->tb_mem = ef_malloc(per * (size_t)c->n_tb + 64);
    if (!c->tb || !c->tb_mem) goto nomem;
    char *p = (char *)(((uintptr_t)c->tb_mem + 63) & ~(uintptr_t)63);
    for (int i = 0; i < c->n_tb; i++, p += per) {
        thr_buf *t = &c->tb[i];
        char *q = p;
        t->xn = (float *)q, q += sizeof(float) * (size_t)(B * W);
        t->kr = (float *)q, q += sizeof(float) * (size_t)(2 * hd);
        t->sc = (float *)q, q += sizeof(float) * (size_t)(2 * o.n_ctx);
        t->kc = q, q += 4 * (size_t)hd;
        t->vc = q, q += 4 * (size_t)hd;
        t->qc = q, q += 4 * (size_t)hd;
        t->acc = q, q += 4 * (size_t)hd;
        t->xh = (uint16_t *)q, q += 2 * (size_t)(B * W);
        t->xq = q;
    }
    /* Touch every buffer now, as llama.cpp clears its KV buffer at context
     * creation: page faults belong to setup, not to the first tokens. */
    memset(c->kcache, 0, cache_bytes);
    memset(c->vcache, 0, cache_bytes);
    memset(c->x, 0, sizeof(float) * (size_t)(B * (4 * D + 2 * KV + 2 * F + hd)));
    memset(c->tb_mem, 0, per * (size_t)c->n_tb + 64);
    *out = c;
    return EF_OK;
nomem:
    st = ef__fail(EF_ERR_NOMEM, "no memory for a %d-position context", o.n_ctx);
fail:
    ef_slm_ctx_free(c);
    return st;
}

void ef_slm_ctx_free(ef_slm_ctx *c) {
    if (!c) return;
    if (c->own_pool) ef_pool_free(c->pool);
    ef_free(c->kcache);
    ef_free(c->vcache);
    ef_free(c->x);
    ef_free(c->tb);
    ef_free(c->tb_mem);
    ef_free(c);
}

int ef_slm_ctx_pos(const ef_slm_ctx *c) { return c->pos; }

const ef_slm_model *ef__slm_ctx_model(const ef_slm_ctx *c) { return c->m; }

int ef__slm_ctx_batch(const ef_slm_ctx *c) { return c->n_batch; }

int ef_slm_ctx_size(const ef_slm_ctx *c) { return c->n_ctx; }

const char *ef_slm_ctx_isa(const ef_slm_ctx *c) { return c->k->name; }

int ef_slm_ctx_threads(const ef_slm_ctx *c) { return ef_pool_threads(c->pool); }

ef_status ef_slm_ctx_rewind(ef_slm_ctx *c, int pos) {
    if (pos < 0 || pos > c->pos)
        return ef__fail(EF_ERR_RANGE, "cannot rewind to position %d of a sequence of %d", pos, c->pos);
    c->pos = pos;
    return EF_OK;
}

ef_status ef_slm_eval(ef_slm_ctx *c, const int32_t *tokens, int n, float *logits, int all_logits) {
    const ef_slm_config *cf = &c->m->cfg;
    if (n < 0 || (n > 0 && !tokens)) return ef__fail(EF_ERR_INVALID, "ef_slm_eval: bad token array");
    if (n > c->n_ctx - c->pos)
        return ef__fail(EF_ERR_RANGE, "%d more tokens do not fit the context (%d of %d positions used)", n,
                        c->pos, c->n_ctx);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= cf->vocab)
            return ef__fail(EF_ERR_INVALID, "token %d at index %d is outside the vocabulary of %d", (int)tokens[i],
                            i, cf->vocab);
    for (int i = 0; i < n; i += c->n_batch) {
        int T = n - i < c->n_batch ? n - i : c->n_batch;
        c->tok = tokens + i;
        c->T = T;
        c->pos0 = c->pos;
        c->all = all_logits != 0;
        c->out = NULL;
        if (logits && all_logits) c->out = logits + (size_t)i * cf->vocab;
        else if (logits && i + T == n) c->out = logits;
        ef_pool_run(c->pool, forward_thread, c);
        c->pos += T;
    }
    return EF_OK;
}
