/*
 * GGUF export and import of the language model (src/nn/lm_gguf.c): the
 * file read back with the generic GGUF reader has llama.cpp's keys with the
 * model's values, the tokenizer arrays, every tensor under its llama.cpp
 * name with ne = [in, out] and the model's bytes (no permutation); loading
 * it back gives the same parameters, tokenizer and logits, for a tied
 * multi-head and an untied grouped-query model. Refusals: a tokenizer of
 * another size, another architecture, a missing tensor, a wrong shape,
 * partial RoPE. (llama.cpp itself decoding an exported model is
 * tests/cli/test_lm_gguf.sh.)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgefl/gguf.h"
#include "edgefl/lm.h"
#include "edgefl/quant.h"
#include "edgefl/rng.h"
#include "edgefl/tokenizer.h"
#include "test_util.h"

static char g_dir[256];

static const char *tpath(const char *name) {
    static char buf[4][512];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static const char *TEXT =
    "In the beginning God created the heaven and the earth. And the earth was without form, "
    "and void; and darkness was upon the face of the deep. And the Spirit of God moved upon the "
    "face of the waters. And God said, Let there be light: and there was light.\n";

static uint32_t get_u32(const ef_gguf *g, const char *key) {
    uint32_t v = 0xffffffffu;
    CHECK_MSG(ef_gguf_get_u32(g, key, &v) == EF_OK, "%s: %s", key, ef_last_error());
    return v;
}

/* A file like `src` written by the export, with a change applied by `edit`. */
typedef void (*edit_fn)(ef_gguf_writer *w, const ef_gguf *src);

static void copy_with(const char *from, const char *to, edit_fn edit, const char *skip_tensor,
                      int transpose_tensor0) {
    ef_gguf *g = NULL;
    ef_gguf_writer *w = NULL;
    CHECK_OK(ef_gguf_open(&g, from));
    CHECK_OK(ef_gguf_writer_new(&w));
    if (!g || !w) return;
    for (size_t i = 0; i < ef_gguf_kv_count(g); i++) CHECK_OK(ef_gguf_copy_kv(w, g, i));
    if (edit) edit(w, g);
    for (size_t i = 0; i < ef_gguf_tensor_count(g); i++) {
        const ef_gguf_tensor *t = ef_gguf_tensor_at(g, i);
        if (skip_tensor && strcmp(t->name, skip_tensor) == 0) continue;
        int64_t ne[4] = {t->ne[0], t->ne[1], t->ne[2], t->ne[3]};
        if (transpose_tensor0 && i == 0) ne[0] = t->ne[1], ne[1] = t->ne[0];
        CHECK_OK(ef_gguf_add_tensor(w, t->name, t->type, t->n_dims, ne, t->data, t->nbytes));
    }
    CHECK_OK(ef_gguf_writer_write(w, to));
    ef_gguf_writer_free(w);
    ef_gguf_close(g);
}

static void set_gpt2(ef_gguf_writer *w, const ef_gguf *src) {
    (void)src;
    CHECK_OK(ef_gguf_set_str(w, "general.architecture", "gpt2"));
}
static void set_partial_rope(ef_gguf_writer *w, const ef_gguf *src) {
    (void)src;
    CHECK_OK(ef_gguf_set_u32(w, "llama.rope.dimension_count", 4));
}

static void run_case(int tied, int nkv, const ef_tokenizer *tok) {
    ef_lm_config c = ef_lm_config_default();
    c.vocab = (int)ef_tokenizer_n_tokens(tok);
    c.dim = 64, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = nkv, c.ffn_dim = 96;
    c.max_seq = 40, c.tied = tied, c.rope_theta = 5000.0f, c.norm_eps = 1e-6f;
    ef_lm *m = NULL, *back = NULL;
    CHECK_OK(ef_lm_new(&m, &c, 2, NULL));
    if (!m) return;
    ef_lm_init(m, 17);
    char path[512]; // tpath's buffers are reused
    snprintf(path, sizeof path, "%s", tpath(tied ? "tied.gguf" : "untied.gguf"));
    CHECK_OK(ef_lm_export_gguf(m, tok, path, "test-model"));

    ef_gguf *g = NULL;
    CHECK_OK(ef_gguf_open(&g, path));
    if (!g) goto done;
    const char *s = NULL;
    CHECK(ef_gguf_get_str(g, "general.architecture", &s, NULL) == EF_OK && strcmp(s, "llama") == 0);
    CHECK(ef_gguf_get_str(g, "general.name", &s, NULL) == EF_OK && strcmp(s, "test-model") == 0);
    CHECK(get_u32(g, "general.file_type") == 0);
    CHECK(get_u32(g, "llama.vocab_size") == (uint32_t)c.vocab);
    CHECK(get_u32(g, "llama.context_length") == 40);
    CHECK(get_u32(g, "llama.embedding_length") == 64);
    CHECK(get_u32(g, "llama.block_count") == 2);
    CHECK(get_u32(g, "llama.feed_forward_length") == 96);
    CHECK(get_u32(g, "llama.attention.head_count") == 4);
    CHECK(get_u32(g, "llama.attention.head_count_kv") == (uint32_t)nkv);
    CHECK(get_u32(g, "llama.rope.dimension_count") == 16);
    float f = 0;
    CHECK(ef_gguf_get_f32(g, "llama.rope.freq_base", &f) == EF_OK && f == 5000.0f);
    CHECK(ef_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f) == EF_OK && f == 1e-6f);
    CHECK(ef_gguf_get_str(g, "tokenizer.ggml.model", &s, NULL) == EF_OK && strcmp(s, "gpt2") == 0);
    CHECK(get_u32(g, "tokenizer.ggml.bos_token_id") == (uint32_t)ef_tokenizer_eot_id(tok));
    CHECK(get_u32(g, "tokenizer.ggml.eos_token_id") == (uint32_t)ef_tokenizer_eot_id(tok));
    ef_gguf_type et;
    uint64_t n = 0;
    CHECK(ef_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n) == EF_OK && et == EF_GGUF_STRING &&
          n == (uint64_t)c.vocab);
    CHECK(ef_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 32, &s, NULL) == EF_OK &&
          strcmp(s, "\xc4\xa0") == 0); // the space byte is "Ġ"
    CHECK(ef_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &n) == EF_OK &&
          n == ef_tokenizer_n_merges(tok));
    size_t want_tensors = 1 + 9 * 2 + 1 + !tied;
    CHECK(ef_gguf_tensor_count(g) == want_tensors);
    CHECK((ef_gguf_find_tensor(g, "output.weight") != NULL) == !tied);
    ef_params *p = ef_lm_params(m);
    for (size_t i = 0; i < ef_params_count(p); i++) {
        const ef_tensor_info *ti = ef_params_info(p, i);
        const ef_gguf_tensor *t = ef_gguf_find_tensor(g, ti->name);
        CHECK_MSG(t != NULL, "%s missing", ti->name);
        if (!t) continue;
        CHECK(t->type == EF_GGML_F32 && t->n_dims == ti->ndim);
        // ne innermost first: W[out][in] has ne = [in, out]
        CHECK_MSG(t->ne[0] == ti->shape[ti->ndim - 1] && (ti->ndim == 1 || t->ne[1] == ti->shape[0]),
                  "%s: ne [%lld, %lld]", ti->name, (long long)t->ne[0], (long long)t->ne[1]);
        CHECK_MSG(t->nbytes == ti->numel * 4 &&
                      memcmp(t->data, ef_params_tensor(p, i), t->nbytes) == 0,
                  "%s: bytes differ", ti->name);
    }
    const ef_gguf_tensor *k = ef_gguf_find_tensor(g, "blk.1.attn_k.weight");
    CHECK(k && k->ne[0] == 64 && k->ne[1] == nkv * 16);
    ef_gguf_close(g);

    // back into a model: same parameters, tokenizer and logits
    ef_tokenizer *tok2 = NULL;
    CHECK_OK(ef_lm_load_gguf(&back, &tok2, path, 2, NULL));
    if (!back) goto done;
    const ef_lm_config *bc = ef_lm_get_config(back);
    CHECK(memcmp(bc, &c, sizeof c) == 0);
    CHECK(memcmp(ef_params_data(ef_lm_params(back)), ef_params_data(p),
                 ef_lm_numel(m) * sizeof(float)) == 0);
    char *a = NULL, *b = NULL;
    size_t al, bl;
    CHECK_OK(ef_tokenizer_serialize(tok, &a, &al));
    CHECK_OK(ef_tokenizer_serialize(tok2, &b, &bl));
    CHECK(a && b && al == bl && memcmp(a, b, al) == 0);
    ef_free(a);
    ef_free(b);
    ef_tokenizer_free(tok2);
    int32_t ids[20];
    for (int i = 0; i < 20; i++) ids[i] = (i * 7) % c.vocab;
    CHECK_OK(ef_lm_forward(m, ids, NULL, 1, 20, NULL));
    float *l1 = malloc(20 * (size_t)c.vocab * 4);
    memcpy(l1, ef_lm_logits(m), 20 * (size_t)c.vocab * 4);
    CHECK_OK(ef_lm_forward(back, ids, NULL, 1, 20, NULL));
    CHECK(memcmp(l1, ef_lm_logits(back), 20 * (size_t)c.vocab * 4) == 0);
    free(l1);

    // Q8_0 tensors are read too (dequantized): a copy with one matrix in Q8_0
    {
        ef_gguf *src = NULL;
        ef_gguf_writer *w = NULL;
        CHECK_OK(ef_gguf_open(&src, path));
        CHECK_OK(ef_gguf_writer_new(&w));
        for (size_t i = 0; src && i < ef_gguf_kv_count(src); i++) ef_gguf_copy_kv(w, src, i);
        void *q = NULL;
        for (size_t i = 0; src && i < ef_gguf_tensor_count(src); i++) {
            const ef_gguf_tensor *t = ef_gguf_tensor_at(src, i);
            if (strcmp(t->name, "blk.0.ffn_up.weight") == 0) {
                size_t qb = (size_t)t->n_elements / 32 * 34;
                q = malloc(qb);
                CHECK_OK(ef_quantize(EF_GGML_Q8_0, (const float *)t->data, q, t->ne[1], t->ne[0], NULL));
                CHECK_OK(ef_gguf_add_tensor(w, t->name, EF_GGML_Q8_0, 2, t->ne, q, qb));
            } else {
                CHECK_OK(ef_gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data,
                                            t->nbytes));
            }
        }
        CHECK_OK(ef_gguf_writer_write(w, tpath("q8.gguf")));
        ef_gguf_writer_free(w);
        ef_gguf_close(src);
        free(q);
        ef_lm *qm = NULL;
        CHECK_OK(ef_lm_load_gguf(&qm, NULL, tpath("q8.gguf"), 1, NULL));
        if (qm) {
            ef_params *qp = ef_lm_params(qm);
            long up = ef_params_find(qp, "blk.0.ffn_up.weight");
            const float *x = ef_params_tensor(p, (size_t)up), *y = ef_params_tensor(qp, (size_t)up);
            double worst = 0, mx = 0;
            for (size_t i = 0; i < ef_params_info(qp, (size_t)up)->numel; i++) {
                if (fabs(x[i] - y[i]) > worst) worst = fabs(x[i] - y[i]);
                if (fabs(x[i]) > mx) mx = fabs(x[i]);
            }
            CHECK_MSG(worst > 0 && worst <= mx / 127.0, "q8_0 error %.3g (max %.3g)", worst, mx);
        }
        ef_lm_free(qm);
    }

    // refusals
    ef_lm *bad = NULL;
    copy_with(path, tpath("gpt2.gguf"), set_gpt2, NULL, 0);
    CHECK(ef_lm_load_gguf(&bad, NULL, tpath("gpt2.gguf"), 1, NULL) == EF_ERR_UNSUPPORTED && !bad);
    copy_with(path, tpath("rope.gguf"), set_partial_rope, NULL, 0);
    CHECK(ef_lm_load_gguf(&bad, NULL, tpath("rope.gguf"), 1, NULL) == EF_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(ef_last_error(), "partial") != NULL, "%s", ef_last_error());
    copy_with(path, tpath("missing.gguf"), NULL, "blk.1.ffn_down.weight", 0);
    CHECK_MSG(ef_lm_load_gguf(&bad, NULL, tpath("missing.gguf"), 1, NULL) == EF_ERR_FORMAT, "%s", ef_last_error());
    CHECK(strstr(ef_last_error(), "blk.1.ffn_down.weight") != NULL);
    copy_with(path, tpath("shape.gguf"), NULL, NULL, 1); // token_embd with ne swapped
    CHECK(ef_lm_load_gguf(&bad, NULL, tpath("shape.gguf"), 1, NULL) == EF_ERR_FORMAT);
    CHECK(strstr(ef_last_error(), "token_embd.weight") != NULL);
done:
    ef_lm_free(back);
    ef_lm_free(m);
}

int main(void) {
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/edgefl-lm-gguf-XXXXXX", tmp);
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    ef_tokenizer *tok = NULL;
    CHECK_OK(ef_bpe_train(TEXT, strlen(TEXT), 300, NULL, &tok));
    if (tok) {
        run_case(1, 4, tok);
        run_case(0, 2, tok);
        // a tokenizer of another size is refused
        ef_lm_config c = ef_lm_config_default();
        c.vocab = (int)ef_tokenizer_n_tokens(tok) + 1;
        c.dim = 16, c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 2, c.ffn_dim = 32;
        c.max_seq = 8;
        ef_lm *m = NULL;
        CHECK_OK(ef_lm_new(&m, &c, 1, NULL));
        if (m) CHECK(ef_lm_export_gguf(m, tok, tpath("x.gguf"), NULL) == EF_ERR_INVALID);
        ef_lm_free(m);
    }
    ef_tokenizer_free(tok);
    tu_rmtree(g_dir);
    return tu_finish("nn/test_lm_gguf");
}
