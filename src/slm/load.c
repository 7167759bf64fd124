/*
 * Loads a llama-architecture GGUF file into an inference model: reads the
 * hyperparameters llama.cpp reads (with its defaults), finds every tensor by
 * its llama.cpp name, checks each shape and type, and keeps the file mapped
 * read-only: the matrices are used in place. What the engine does not
 * implement (rope scaling, biases, other architectures, K-quants) is refused
 * by name rather than computed differently from llama.cpp.
 */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "edgefl/gguf.h"
#include "edgefl/tokenizer.h"
#include "model.h"

typedef struct loader {
    const ef_gguf *g;
    const char *path;
} loader;

/* An integer key: required, or `def` when absent (def >= INT64_MIN + 1 means optional). */
static ef_status get_int(const loader *ld, const char *key, int required, int64_t def, int64_t lo, int64_t hi,
                         int *out) {
    int64_t v;
    ef_status st = ef_gguf_get_int(ld->g, key, &v);
    if (st == EF_ERR_NOT_FOUND) {
        if (required) return ef__fail(EF_ERR_FORMAT, "%s: missing key %s", ld->path, key);
        v = def;
    } else if (st != EF_OK) {
        return ef__fail(EF_ERR_FORMAT, "%s: key %s: %s", ld->path, key, ef_last_error());
    }
    if (v < lo || v > hi)
        return ef__fail(EF_ERR_FORMAT, "%s: %s = %lld is outside %lld..%lld", ld->path, key, (long long)v,
                        (long long)lo, (long long)hi);
    *out = (int)v;
    return EF_OK;
}

static ef_status get_float(const loader *ld, const char *key, float def, float *out) {
    ef_status st = ef_gguf_get_f32(ld->g, key, out);
    if (st == EF_ERR_NOT_FOUND) {
        *out = def;
        return EF_OK;
    }
    if (st != EF_OK) return ef__fail(EF_ERR_FORMAT, "%s: key %s: %s", ld->path, key, ef_last_error());
    return EF_OK;
}

/* Tensor `name` with shape (cols, rows) innermost first (rows 0: a vector of
 * cols); into *t. */
static ef_status get_tensor(const loader *ld, const char *name, int64_t cols, int64_t rows, int required,
                            ef_slm_tensor *t) {
    const ef_gguf_tensor *gt = ef_gguf_find_tensor(ld->g, name);
    t->data = NULL;
    t->type = EF_SLM_F32;
    if (!gt) {
        if (required) return ef__fail(EF_ERR_FORMAT, "%s: missing tensor %s", ld->path, name);
        return EF_OK;
    }
    int dims_ok = rows == 0 ? (gt->n_dims == 1 && gt->ne[0] == cols)
                            : (gt->n_dims == 2 && gt->ne[0] == cols && gt->ne[1] == rows);
    if (!dims_ok) {
        if (rows == 0)
            return ef__fail(EF_ERR_FORMAT, "%s: tensor %s has %d dims [%lld, %lld], expected [%lld]", ld->path, name,
                            gt->n_dims, (long long)gt->ne[0], (long long)gt->ne[1], (long long)cols);
        return ef__fail(EF_ERR_FORMAT, "%s: tensor %s has %d dims [%lld, %lld], expected [%lld, %lld]", ld->path,
                        name, gt->n_dims, (long long)gt->ne[0], (long long)gt->ne[1], (long long)cols,
                        (long long)rows);
    }
    if (gt->type != EF_SLM_F32 && gt->type != EF_SLM_F16 && gt->type != EF_SLM_Q8_0 && gt->type != EF_SLM_Q4_0) {
        const char *tn = ef_ggml_type_name(gt->type);
        return ef__fail(EF_ERR_UNSUPPORTED, "%s: tensor %s has type %s (supported: f32, f16, q8_0, q4_0)", ld->path,
                        name, tn ? tn : "?");
    }
    t->type = (ef_slm_type)gt->type;
    t->data = gt->data;
    return EF_OK;
}

static void close_gguf(void *g) { ef_gguf_close(g); }

/* Maps the tensor data's pages now (as llama.cpp's MAP_POPULATE does) so the
 * first forward pass does not take a page fault every 4 KiB. Best effort:
 * MADV_POPULATE_READ where the kernel has it, else one read per page. */
static void prefault(const ef_gguf *g) {
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (size_t i = 0; i < ef_gguf_tensor_count(g); i++) {
        const ef_gguf_tensor *t = ef_gguf_tensor_at(g, i);
        if (!t->nbytes) continue;
        uintptr_t a = (uintptr_t)t->data, b = a + t->nbytes;
        lo = a < lo ? a : lo;
        hi = b > hi ? b : hi;
    }
    if (lo >= hi) return;
    long ps = sysconf(_SC_PAGESIZE);
    uintptr_t page = ps > 0 ? (uintptr_t)ps : 4096;
    lo &= ~(page - 1);
#if defined(MADV_POPULATE_READ)
    if (madvise((void *)lo, hi - lo, MADV_POPULATE_READ) == 0) return;
#endif
    volatile unsigned char sink = 0;
    for (uintptr_t p = lo; p < hi; p += page) sink ^= *(const volatile unsigned char *)p;
    (void)sink;
}

ef_status ef_slm_model_load(ef_slm_model **out, const char *path) {
    *out = NULL;
    ef_gguf *g = NULL;
    ef_status st = ef_gguf_open(&g, path);
    if (st != EF_OK) return st;
    loader ld = {g, path};
    ef_slm_layer_weights *lw = NULL;
    ef_slm_model *m = NULL;
    const char *arch = NULL;
    if ((st = ef_gguf_get_str(g, "general.architecture", &arch, NULL)) != EF_OK) {
        st = ef__fail(EF_ERR_FORMAT, "%s: no general.architecture string", path);
        goto fail;
    }
    if (strcmp(arch, "llama") != 0) {
        st = ef__fail(EF_ERR_UNSUPPORTED, "%s: architecture '%s' (only 'llama' is supported)", path, arch);
        goto fail;
    }
    ef_slm_config c;
    memset(&c, 0, sizeof c);
    const int BIG = 1 << 24;
    if ((st = get_int(&ld, "llama.embedding_length", 1, 0, 1, 1 << 20, &c.dim)) != EF_OK ||
        (st = get_int(&ld, "llama.block_count", 1, 0, 1, 4096, &c.n_layers)) != EF_OK ||
        (st = get_int(&ld, "llama.feed_forward_length", 1, 0, 1, 1 << 22, &c.ffn_dim)) != EF_OK ||
        (st = get_int(&ld, "llama.attention.head_count", 1, 0, 1, 1 << 16, &c.n_heads)) != EF_OK ||
        (st = get_int(&ld, "llama.attention.head_count_kv", 0, c.n_heads, 1, 1 << 16, &c.n_kv_heads)) != EF_OK ||
        (st = get_int(&ld, "llama.context_length", 1, 0, 1, BIG, &c.ctx_len)) != EF_OK ||
        (st = get_float(&ld, "llama.attention.layer_norm_rms_epsilon", 1e-5f, &c.rms_eps)) != EF_OK ||
        (st = get_float(&ld, "llama.rope.freq_base", 10000.0f, &c.rope_theta)) != EF_OK ||
        (st = get_int(&ld, "tokenizer.ggml.bos_token_id", 0, -1, -1, BIG, &c.bos_id)) != EF_OK ||
        (st = get_int(&ld, "tokenizer.ggml.eos_token_id", 0, -1, -1, BIG, &c.eos_id)) != EF_OK)
        goto fail;
    /* vocabulary: llama.vocab_size, else the token list, else the embedding */
    const ef_gguf_tensor *emb = ef_gguf_find_tensor(g, "token_embd.weight");
    uint64_t ntok = 0;
    ef_gguf_type et;
    int64_t vocab = emb && emb->n_dims == 2 ? emb->ne[1] : 0;
    if (ef_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &ntok) == EF_OK) vocab = (int64_t)ntok;
    if ((st = get_int(&ld, "llama.vocab_size", 0, vocab, 1, BIG, &c.vocab)) != EF_OK) goto fail;
    if ((st = ef__slm_check_config(&c)) != EF_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", ef_last_error());
        st = ef__fail(st, "%s: %s", path, msg);
        goto fail;
    }
    /* head sizes and rotary dimensions other than dim / n_heads, and rope scaling, are not implemented */
    const int hd = c.dim / c.n_heads;
    const char *same_as_head[3] = {"llama.rope.dimension_count", "llama.attention.key_length",
                                   "llama.attention.value_length"};
    for (int i = 0; i < 3; i++) {
        int v;
        if ((st = get_int(&ld, same_as_head[i], 0, hd, 1, 1 << 20, &v)) != EF_OK) goto fail;
        if (v != hd) {
            st = ef__fail(EF_ERR_UNSUPPORTED, "%s: %s = %d differs from the head size %d", path, same_as_head[i], v, hd);
            goto fail;
        }
    }
    const char *scaling = NULL;
    float factor = 0.0f;
    if (ef_gguf_get_str(g, "llama.rope.scaling.type", &scaling, NULL) != EF_OK) scaling = NULL;
    if ((st = get_float(&ld, "llama.rope.scaling.factor", 0.0f, &factor)) != EF_OK) goto fail;
    if ((scaling && strcmp(scaling, "none") != 0 && strcmp(scaling, "linear") != 0) ||
        (factor != 0.0f && factor != 1.0f)) {
        st = ef__fail(EF_ERR_UNSUPPORTED, "%s: rope scaling (%s, factor %g) is not supported", path,
                      scaling ? scaling : "linear", (double)factor);
        goto fail;
    }
    if (ef_gguf_find_tensor(g, "rope_freqs.weight")) {
        st = ef__fail(EF_ERR_UNSUPPORTED, "%s: rope frequency factors (rope_freqs.weight) are not supported", path);
        goto fail;
    }
    const int64_t D = c.dim, F = c.ffn_dim, KV = (int64_t)hd * c.n_kv_heads, V = c.vocab;
    lw = ef_calloc((size_t)c.n_layers, sizeof *lw);
    if (!lw) {
        st = EF_ERR_NOMEM;
        goto fail;
    }
    ef_slm_weights w;
    memset(&w, 0, sizeof w);
    if ((st = get_tensor(&ld, "token_embd.weight", D, V, 1, &w.tok_embd)) != EF_OK ||
        (st = get_tensor(&ld, "output_norm.weight", D, 0, 1, &w.output_norm)) != EF_OK ||
        (st = get_tensor(&ld, "output.weight", D, V, 0, &w.output)) != EF_OK)
        goto fail;
    for (int l = 0; l < c.n_layers; l++) {
        char name[64];
        static const char *biases[] = {"attn_q.bias", "attn_k.bias", "attn_v.bias", "attn_output.bias",
                                       "ffn_gate.bias", "ffn_up.bias", "ffn_down.bias"};
        for (size_t b = 0; b < sizeof biases / sizeof biases[0]; b++) {
            snprintf(name, sizeof name, "blk.%d.%s", l, biases[b]);
            if (ef_gguf_find_tensor(g, name)) {
                st = ef__fail(EF_ERR_UNSUPPORTED, "%s: bias tensor %s is not supported", path, name);
                goto fail;
            }
        }
#define T(field, suffix, cols, rows)                                                   \
    snprintf(name, sizeof name, "blk.%d." suffix, l);                                  \
    if ((st = get_tensor(&ld, name, cols, rows, 1, &lw[l].field)) != EF_OK) goto fail;
        T(attn_norm, "attn_norm.weight", D, 0)
        T(ffn_norm, "ffn_norm.weight", D, 0)
        T(wq, "attn_q.weight", D, D)
        T(wk, "attn_k.weight", D, KV)
        T(wv, "attn_v.weight", D, KV)
        T(wo, "attn_output.weight", D, D)
        T(w_gate, "ffn_gate.weight", D, F)
        T(w_up, "ffn_up.weight", D, F)
        T(w_down, "ffn_down.weight", F, D)
#undef T
    }
    w.layers = lw;
    if ((st = ef_slm_model_new(&m, &c, &w)) != EF_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", ef_last_error());
        st = ef__fail(st, "%s: %s", path, msg);
        goto fail;
    }
    m->owner = g;
    m->owner_free = close_gguf;
    prefault(g);
    ef_free(lw);
    *out = m;
    return EF_OK;
fail:
    ef_free(lw);
    ef_gguf_close(g);
    return st;
}

const struct ef_gguf *ef_slm_model_gguf(const ef_slm_model *m) {
    return m->owner_free == close_gguf ? m->owner : NULL;
}

ef_status ef_slm_tokenizer_from_gguf(const struct ef_gguf *g, ef_tokenizer **out) {
    *out = NULL;
    const char *model = NULL, *pre = NULL;
    if (ef_gguf_get_str(g, "tokenizer.ggml.model", &model, NULL) != EF_OK)
        return ef__fail(EF_ERR_NOT_FOUND, "the file has no tokenizer (tokenizer.ggml.model)");
    if (strcmp(model, EF_TOK_GGUF_MODEL) != 0)
        return ef__fail(EF_ERR_UNSUPPORTED, "tokenizer model '%s' (only '%s', byte-level BPE, is supported)", model,
                        EF_TOK_GGUF_MODEL);
    if (ef_gguf_get_str(g, "tokenizer.ggml.pre", &pre, NULL) == EF_OK && strcmp(pre, EF_TOK_GGUF_PRE) != 0)
        return ef__fail(EF_ERR_UNSUPPORTED, "pre-tokenizer '%s' (only '%s' is supported)", pre, EF_TOK_GGUF_PRE);
    ef_gguf_type et;
    uint64_t nt = 0, nm = 0, ntt = 0;
    if (ef_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &nt) != EF_OK || et != EF_GGUF_STRING || nt == 0 ||
        nt > EF_TOK_MAX_VOCAB)
        return ef__fail(EF_ERR_FORMAT, "tokenizer.ggml.tokens: missing, empty, too long or not strings");
    if (ef_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &nm) != EF_OK) nm = 0;
    else if (et != EF_GGUF_STRING) return ef__fail(EF_ERR_FORMAT, "tokenizer.ggml.merges: not strings");
    const char **toks = ef_calloc((size_t)nt, sizeof *toks);
    const char **merges = ef_calloc((size_t)nm + 1, sizeof *merges);
    int32_t *types = NULL;
    int64_t *t64 = NULL;
    ef_status st = EF_OK;
    if (!toks || !merges) {
        st = EF_ERR_NOMEM;
        goto done;
    }
    for (uint64_t i = 0; i < nt; i++) {
        size_t len;
        if ((st = ef_gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &toks[i], &len)) != EF_OK) goto done;
        if (strlen(toks[i]) != len) {
            st = ef__fail(EF_ERR_FORMAT, "tokenizer.ggml.tokens[%llu] contains a NUL byte", (unsigned long long)i);
            goto done;
        }
    }
    for (uint64_t i = 0; i < nm; i++) {
        size_t len;
        if ((st = ef_gguf_get_arr_str(g, "tokenizer.ggml.merges", i, &merges[i], &len)) != EF_OK) goto done;
    }
    if (ef_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &ntt) == EF_OK) {
        if (ntt != nt) {
            st = ef__fail(EF_ERR_FORMAT, "tokenizer.ggml.token_type has %llu entries for %llu tokens",
                          (unsigned long long)ntt, (unsigned long long)nt);
            goto done;
        }
        types = ef_malloc(sizeof *types * (size_t)nt);
        t64 = ef_malloc(sizeof *t64 * (size_t)nt);
        if (!types || !t64) {
            st = EF_ERR_NOMEM;
            goto done;
        }
        if ((st = ef_gguf_get_arr_int(g, "tokenizer.ggml.token_type", t64, (size_t)nt)) != EF_OK) goto done;
        for (uint64_t i = 0; i < nt; i++) types[i] = t64[i] < INT32_MIN || t64[i] > INT32_MAX ? 0 : (int32_t)t64[i];
    }
    st = ef_tokenizer_from_vocab(toks, types, (size_t)nt, merges, (size_t)nm, out);
done:
    ef_free(toks);
    ef_free(merges);
    ef_free(types);
    ef_free(t64);
    return st;
}
