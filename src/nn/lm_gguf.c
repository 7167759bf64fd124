/*
 * GGUF export of a language model: the llama architecture as llama.cpp
 * loads it (metadata keys, tensor names, the tokenizer inside the file),
 * F32 tensors, through the generic GGUF writer (include/edgefl/gguf.h).
 *
 * No tensor is permuted: edgefl trains with RoPE on adjacent pairs, which is
 * what llama.cpp applies to architecture "llama" (rope mode NORMAL); HF
 * converters permute q and k only because HF models use the half-split
 * layout. A weight W[out][in] (row-major, y = W x) is written with ggml's
 * dimensions innermost first, ne = [in, out], the same bytes.
 */
#include <stdio.h>
#include <string.h>

#include "core/core_internal.h"
#include "edgefl/gguf.h"
#include "edgefl/lm.h"
#include "edgefl/quant.h"
#include "edgefl/tokenizer.h"

#define TRY(expr)                       \
    do {                                \
        if ((st = (expr)) != EF_OK) goto fail; \
    } while (0)

ef_status ef_lm_export_gguf(ef_lm *m, const ef_tokenizer *tok, const char *path,
                            const char *name) {
    const ef_lm_config *c = ef_lm_get_config(m);
    if (!tok || !path) return ef__fail(EF_ERR_INVALID, "lm gguf: NULL tokenizer or path");
    size_t V = ef_tokenizer_n_tokens(tok), nm = ef_tokenizer_n_merges(tok);
    if (V != (size_t)c->vocab)
        return ef__fail(EF_ERR_INVALID, "lm gguf: the model has %d tokens, the tokenizer %zu",
                        c->vocab, V);
    ef_status st = EF_OK;
    ef_gguf_writer *w = NULL;
    const char **texts = ef_calloc(V, sizeof *texts);
    const char **merges = ef_calloc(nm ? nm : 1, sizeof *merges);
    int32_t *types = ef_calloc(V, sizeof *types);
    if (!texts || !merges || !types) {
        st = EF_ERR_NOMEM;
        goto fail;
    }
    for (size_t i = 0; i < V; i++) {
        texts[i] = ef_tokenizer_token_text(tok, (int32_t)i);
        types[i] = ef_tokenizer_token_type(tok, (int32_t)i);
    }
    for (size_t i = 0; i < nm; i++) merges[i] = ef_tokenizer_merge_text(tok, i);

    TRY(ef_gguf_writer_new(&w));
    TRY(ef_gguf_set_str(w, "general.architecture", "llama"));
    TRY(ef_gguf_set_str(w, "general.name", name && *name ? name : "edgefl-lm"));
    TRY(ef_gguf_set_u32(w, "general.file_type", EF_LLAMA_FTYPE_ALL_F32));
    TRY(ef_gguf_set_u32(w, "llama.vocab_size", (uint32_t)c->vocab));
    TRY(ef_gguf_set_u32(w, "llama.context_length", (uint32_t)c->max_seq));
    TRY(ef_gguf_set_u32(w, "llama.embedding_length", (uint32_t)c->dim));
    TRY(ef_gguf_set_u32(w, "llama.block_count", (uint32_t)c->n_layers));
    TRY(ef_gguf_set_u32(w, "llama.feed_forward_length", (uint32_t)c->ffn_dim));
    TRY(ef_gguf_set_u32(w, "llama.attention.head_count", (uint32_t)c->n_heads));
    TRY(ef_gguf_set_u32(w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads));
    TRY(ef_gguf_set_f32(w, "llama.attention.layer_norm_rms_epsilon", c->norm_eps));
    TRY(ef_gguf_set_f32(w, "llama.rope.freq_base", c->rope_theta));
    TRY(ef_gguf_set_u32(w, "llama.rope.dimension_count", (uint32_t)(c->dim / c->n_heads)));
    TRY(ef_gguf_set_str(w, "tokenizer.ggml.model", EF_TOK_GGUF_MODEL));
    TRY(ef_gguf_set_str(w, "tokenizer.ggml.pre", EF_TOK_GGUF_PRE));
    TRY(ef_gguf_set_arr_str(w, "tokenizer.ggml.tokens", texts, NULL, V));
    TRY(ef_gguf_set_arr(w, "tokenizer.ggml.token_type", EF_GGUF_INT32, types, V));
    TRY(ef_gguf_set_arr_str(w, "tokenizer.ggml.merges", merges, NULL, nm));
    int32_t eot = ef_tokenizer_eot_id(tok);
    if (eot >= 0) {
        // <|endoftext|> begins every training stream and separates texts
        TRY(ef_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)eot));
        TRY(ef_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eot));
        TRY(ef_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", true));
        TRY(ef_gguf_set_bool(w, "tokenizer.ggml.add_eos_token", false));
    }

    // Tensors in the order llama.cpp's converters write them (any order
    // loads); ne innermost first: [in, out] for a W[out][in].
    ef_params *p = ef_lm_params(m);
    static const char *const blk[] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                      "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"};
    int n_names = 1 + 9 * c->n_layers + 1 + !c->tied;
    for (int i = 0; i < n_names; i++) {
        char tn[EF_MAX_NAME];
        if (i == 0) snprintf(tn, sizeof tn, "token_embd.weight");
        else if (i <= 9 * c->n_layers)
            snprintf(tn, sizeof tn, "blk.%d.%s.weight", (i - 1) / 9, blk[(i - 1) % 9]);
        else if (i == 9 * c->n_layers + 1) snprintf(tn, sizeof tn, "output_norm.weight");
        else snprintf(tn, sizeof tn, "output.weight");
        long k = ef_params_find(p, tn);
        if (k < 0) {
            st = ef__fail(EF_ERR_INTERNAL, "lm gguf: no tensor %s", tn);
            goto fail;
        }
        const ef_tensor_info *ti = ef_params_info(p, (size_t)k);
        int64_t ne[2] = {ti->shape[ti->ndim - 1], ti->ndim == 2 ? ti->shape[0] : 1};
        TRY(ef_gguf_add_tensor(w, tn, EF_GGML_F32, ti->ndim, ne, ef_params_tensor(p, (size_t)k),
                               ti->numel * sizeof(float)));
    }
    TRY(ef_gguf_writer_write(w, path));
fail:
    ef_gguf_writer_free(w);
    ef_free(texts);
    ef_free(merges);
    ef_free(types);
    return st;
}

/* An integer hyperparameter: *out in [lo, hi]; EF_ERR_FORMAT otherwise. */
static ef_status get_hp(const ef_gguf *g, const char *path, const char *key, int lo, int hi,
                        int *out) {
    int64_t v;
    ef_status st = ef_gguf_get_int(g, key, &v);
    if (st == EF_ERR_NOT_FOUND) return ef__fail(EF_ERR_FORMAT, "%s: %s missing", path, key);
    if (st != EF_OK) return ef__fail(EF_ERR_FORMAT, "%s: %s", path, ef_last_error());
    if (v < lo || v > hi)
        return ef__fail(EF_ERR_FORMAT, "%s: %s = %lld outside %d..%d", path, key, (long long)v,
                        lo, hi);
    *out = (int)v;
    return EF_OK;
}

static ef_status load_tokenizer(const ef_gguf *g, const char *path, ef_tokenizer **out) {
    ef_status st;
    ef_gguf_type et;
    uint64_t nt = 0, ntt = 0, nm = 0;
    const char *model = NULL;
    const char **toks = NULL, **merges = NULL;
    int64_t *types64 = NULL;
    int32_t *types = NULL;
    if (ef_gguf_get_str(g, "tokenizer.ggml.model", &model, NULL) != EF_OK ||
        strcmp(model, EF_TOK_GGUF_MODEL) != 0)
        return ef__fail(EF_ERR_UNSUPPORTED, "%s: tokenizer.ggml.model is %s%s%s, edgefl reads "
                                            "\"gpt2\" (byte-level BPE) only", path,
                        model ? "\"" : "missing", model ? model : "", model ? "\"" : "");
    if ((st = ef_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &nt)) != EF_OK ||
        (st = ef_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &nm)) != EF_OK)
        return ef__fail(EF_ERR_FORMAT, "%s: %s", path, ef_last_error());
    if (nt == 0 || nt > EF_TOK_MAX_VOCAB || nm > nt)
        return ef__fail(EF_ERR_FORMAT, "%s: %llu tokens, %llu merges", path,
                        (unsigned long long)nt, (unsigned long long)nm);
    toks = ef_calloc((size_t)nt, sizeof *toks);
    merges = ef_calloc((size_t)(nm ? nm : 1), sizeof *merges);
    types = ef_calloc((size_t)nt, sizeof *types);
    types64 = ef_calloc((size_t)nt, sizeof *types64);
    if (!toks || !merges || !types || !types64) {
        st = EF_ERR_NOMEM;
        goto done;
    }
    for (uint64_t i = 0; i < nt; i++)
        if ((st = ef_gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &toks[i], NULL)) != EF_OK)
            goto bad;
    for (uint64_t i = 0; i < nm; i++)
        if ((st = ef_gguf_get_arr_str(g, "tokenizer.ggml.merges", i, &merges[i], NULL)) != EF_OK)
            goto bad;
    if (ef_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &ntt) == EF_OK) {
        if (ntt != nt) {
            st = ef__fail(EF_ERR_FORMAT, "%s: %llu token types for %llu tokens", path,
                          (unsigned long long)ntt, (unsigned long long)nt);
            goto done;
        }
        if ((st = ef_gguf_get_arr_int(g, "tokenizer.ggml.token_type", types64, (size_t)nt)) !=
            EF_OK)
            goto bad;
        for (uint64_t i = 0; i < nt; i++) types[i] = (int32_t)types64[i];
    } else {
        for (uint64_t i = 0; i < nt; i++) types[i] = EF_TOK_NORMAL;
    }
    if ((st = ef_tokenizer_from_vocab(toks, types, (size_t)nt, merges, (size_t)nm, out)) != EF_OK)
        st = ef__fail(st, "%s: %s", path, ef_last_error());
    goto done;
bad:
    st = ef__fail(EF_ERR_FORMAT, "%s: %s", path, ef_last_error());
done:
    ef_free(toks);
    ef_free(merges);
    ef_free(types);
    ef_free(types64);
    return st;
}

ef_status ef_lm_load_gguf(ef_lm **out, ef_tokenizer **tok_out, const char *path, int max_batch,
                          ef_pool *pool) {
    *out = NULL;
    if (tok_out) *tok_out = NULL;
    ef_gguf *g = NULL;
    ef_lm *m = NULL;
    ef_tokenizer *tok = NULL;
    ef_status st = ef_gguf_open(&g, path);
    if (st != EF_OK) return st;
    const char *arch = NULL;
    if (ef_gguf_get_str(g, "general.architecture", &arch, NULL) != EF_OK ||
        strcmp(arch, "llama") != 0) {
        st = ef__fail(EF_ERR_UNSUPPORTED, "%s: general.architecture is %s, not \"llama\"", path,
                      arch ? arch : "missing");
        goto fail;
    }
    ef_lm_config c = ef_lm_config_default();
    int rope_dims = 0;
    TRY(get_hp(g, path, "llama.embedding_length", 2, 65536, &c.dim));
    TRY(get_hp(g, path, "llama.block_count", 1, 1024, &c.n_layers));
    TRY(get_hp(g, path, "llama.feed_forward_length", 1, 1 << 20, &c.ffn_dim));
    TRY(get_hp(g, path, "llama.attention.head_count", 1, 65536, &c.n_heads));
    c.n_kv_heads = c.n_heads; // absent: multi-head attention
    if (ef_gguf_find_key(g, "llama.attention.head_count_kv") >= 0)
        TRY(get_hp(g, path, "llama.attention.head_count_kv", 1, 65536, &c.n_kv_heads));
    TRY(get_hp(g, path, "llama.context_length", 1, 1 << 20, &c.max_seq));
    if (ef_gguf_find_key(g, "llama.attention.layer_norm_rms_epsilon") >= 0 &&
        ef_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &c.norm_eps) != EF_OK)
        goto bad;
    if (ef_gguf_find_key(g, "llama.rope.freq_base") >= 0 &&
        ef_gguf_get_f32(g, "llama.rope.freq_base", &c.rope_theta) != EF_OK)
        goto bad;
    if (ef_gguf_find_key(g, "llama.rope.dimension_count") >= 0) {
        TRY(get_hp(g, path, "llama.rope.dimension_count", 1, 65536, &rope_dims));
        if (rope_dims != c.dim / c.n_heads) {
            st = ef__fail(EF_ERR_UNSUPPORTED, "%s: RoPE on %d of %d head dimensions (partial "
                                              "rotary) is not supported", path, rope_dims,
                          c.dim / c.n_heads);
            goto fail;
        }
    }
    TRY(load_tokenizer(g, path, &tok));
    c.vocab = (int)ef_tokenizer_n_tokens(tok);
    c.tied = ef_gguf_find_tensor(g, "output.weight") == NULL;
    if ((st = ef_lm_config_check(&c)) != EF_OK) {
        st = ef__fail(EF_ERR_FORMAT, "%s: %s", path, ef_last_error());
        goto fail;
    }
    TRY(ef_lm_new(&m, &c, max_batch, pool));
    ef_params *p = ef_lm_params(m);
    for (size_t i = 0; i < ef_params_count(p); i++) {
        const ef_tensor_info *ti = ef_params_info(p, i);
        const ef_gguf_tensor *t = ef_gguf_find_tensor(g, ti->name);
        int64_t want0 = ti->shape[ti->ndim - 1], want1 = ti->ndim == 2 ? ti->shape[0] : 1;
        if (!t) {
            st = ef__fail(EF_ERR_FORMAT, "%s: tensor %s missing", path, ti->name);
            goto fail;
        }
        if (t->ne[0] != want0 || t->ne[1] != want1 || t->ne[2] != 1 || t->ne[3] != 1) {
            st = ef__fail(EF_ERR_FORMAT, "%s: tensor %s has ne [%lld, %lld, %lld, %lld], "
                                         "expected [%lld, %lld]", path, ti->name,
                          (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                          (long long)t->ne[3], (long long)want0, (long long)want1);
            goto fail;
        }
        if ((st = ef_dequantize(t->type, t->data, ef_params_tensor(p, i), t->n_elements)) !=
            EF_OK) {
            st = ef__fail(st, "%s: tensor %s: %s", path, ti->name, ef_last_error());
            goto fail;
        }
    }
    ef_gguf_close(g);
    *out = m;
    if (tok_out) *tok_out = tok;
    else ef_tokenizer_free(tok);
    return EF_OK;
bad:
    st = ef__fail(EF_ERR_FORMAT, "%s: %s", path, ef_last_error());
fail:
    ef_lm_free(m);
    ef_tokenizer_free(tok);
    ef_gguf_close(g);
    return st;
}
