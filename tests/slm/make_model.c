/*
 * slm_make_model: writes a small random llama model as GGUF, with the
 * metadata llama.cpp reads and a small byte-level BPE vocabulary (the 256
 * bytes in GPT-2's byte-to-unicode spelling, a few English merges and
 * "<|endoftext|>"), for the inference tests and the llama.cpp comparison.
 *
 *   slm_make_model OUT.gguf [--type f32|f16|q8_0|q4_0] [--dim D] [--layers L]
 *       [--heads H] [--kv-heads K] [--ffn F] [--ctx C] [--seed S] [--tied 0|1]
 *       [--scale X] [--vocab V]
 *
 * --vocab V (at least 269) adds merges of two single bytes ("a b" -> "ab",
 * in byte order, skipping pairs already merged) until there are V tokens.
 *
 * Weights are Gaussian (embedding std 1, projections std X/sqrt(fan-in)), so
 * attention and logits are far from uniform; quantized types are made with
 * the library's reference quantizers (what `edgefl quantize` writes, except
 * that every matrix, the output one included, gets the same type).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgefl/gguf.h"
#include "edgefl/quant.h"
#include "edgefl/rng.h"

static const char *MERGES[] = {"\xc4\xa0 t", "h e", "\xc4\xa0t he", "i n", "a n", "\xc4\xa0 a",
                               "e r", "o u", "\xc4\xa0 s", "\xc4\xa0 w", "o r", "\xc4\xa0 o"};
#define N_MERGES (sizeof MERGES / sizeof MERGES[0])

/* GPT-2's bytes_to_unicode: the UTF-8 text that stands for byte b. */
static void byte_text(int b, char out[4]) {
    int cp;
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) {
        cp = b;
    } else {
        int n = 0;
        for (int x = 0; x < b; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = 0;
    }
}

typedef struct mat {
    char name[64];
    int64_t ne[2];
    int nd;
    int type;
    void *data;
    size_t bytes;
} mat;

static mat mats[1024];
static int n_mats;

static int add(const char *name, int64_t cols, int64_t rows, int type, const float *v) {
    mat *m = &mats[n_mats++];
    snprintf(m->name, sizeof m->name, "%s", name);
    m->ne[0] = cols;
    m->ne[1] = rows;
    m->nd = rows ? 2 : 1;
    m->type = rows ? type : EF_GGML_F32;
    int64_t r = rows ? rows : 1;
    if (ef_ggml_row_size(m->type, cols, &m->bytes) != EF_OK) return 1;
    m->bytes *= (size_t)r;
    m->data = malloc(m->bytes);
    return ef_quantize(m->type, v, m->data, r, cols, NULL) != EF_OK;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: slm_make_model OUT.gguf [--type T] [--dim D] [--layers L] [--heads H] "
                        "[--kv-heads K] [--ffn F] [--ctx C] [--seed S] [--tied 0|1] [--scale X]\n");
        return 2;
    }
    const char *out = argv[1], *tname = "f32";
    int dim = 64, layers = 2, heads = 4, kvh = 2, ffn = 96, ctx = 128, tied = 0, want_vocab = 0;
    double scale = 1.5;
    uint64_t seed = 1;
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--type")) tname = v;
        else if (!strcmp(k, "--dim")) dim = atoi(v);
        else if (!strcmp(k, "--layers")) layers = atoi(v);
        else if (!strcmp(k, "--heads")) heads = atoi(v);
        else if (!strcmp(k, "--kv-heads")) kvh = atoi(v);
        else if (!strcmp(k, "--ffn")) ffn = atoi(v);
        else if (!strcmp(k, "--ctx")) ctx = atoi(v);
        else if (!strcmp(k, "--seed")) seed = strtoull(v, NULL, 10);
        else if (!strcmp(k, "--tied")) tied = atoi(v);
        else if (!strcmp(k, "--scale")) scale = atof(v);
        else if (!strcmp(k, "--vocab")) want_vocab = atoi(v);
        else {
            fprintf(stderr, "slm_make_model: unknown option %s\n", k);
            return 2;
        }
    }
    int type = ef_ggml_type_from_name(tname);
    if (type < 0) {
        fprintf(stderr, "slm_make_model: unknown type %s\n", tname);
        return 2;
    }
    /* vocabulary: bytes, the fixed merges, byte-pair merges up to --vocab, EOT */
    const int base = 256 + (int)N_MERGES + 1;
    const int vocab = want_vocab > base ? want_vocab : base;
    if (vocab - base > 256 * 200) {
        fprintf(stderr, "slm_make_model: --vocab too large\n");
        return 2;
    }
    char **toks = calloc((size_t)vocab, sizeof(char *));
    char **merges = calloc((size_t)(vocab - 256), sizeof(char *));
    int32_t *types = calloc((size_t)vocab, sizeof(int32_t));
    for (int b = 0; b < 256; b++) {
        toks[b] = malloc(4);
        byte_text(b, toks[b]);
        types[b] = 1;
    }
    int nt = 256, nm = 0;
    for (size_t i = 0; i < N_MERGES; i++) {
        const char *sp = strchr(MERGES[i], ' ');
        size_t a = (size_t)(sp - MERGES[i]);
        toks[nt] = malloc(strlen(MERGES[i]));
        memcpy(toks[nt], MERGES[i], a);
        strcpy(toks[nt] + a, sp + 1);
        types[nt++] = 1;
        merges[nm++] = strdup(MERGES[i]);
    }
    for (int x = 33; nt < vocab - 1; x++)
        for (int y = 33; y < 127 && nt < vocab - 1; y++) {
            char a[4], b[4], joined[8];
            byte_text(x % 256, a);
            byte_text(y, b);
            snprintf(joined, sizeof joined, "%s%s", a, b);
            int dup = 0;
            for (int t = 256; t < nt && !dup; t++) dup = strcmp(toks[t], joined) == 0;
            if (dup) continue;
            toks[nt] = strdup(joined);
            types[nt++] = 1;
            merges[nm] = malloc(strlen(a) + strlen(b) + 2);
            sprintf(merges[nm++], "%s %s", a, b);
        }
    toks[vocab - 1] = strdup("<|endoftext|>");
    types[vocab - 1] = 3;

    ef_rng r;
    ef_rng_seed(&r, seed);
    const int hd = dim / heads, kv = hd * kvh;
    size_t big = (size_t)(vocab > ffn ? vocab : ffn) * (size_t)(dim > ffn ? dim : ffn);
    float *buf = malloc(sizeof(float) * big);
    int err = 0;
#define RANDM(rows, cols, std)                                                         \
    for (size_t i_ = 0; i_ < (size_t)(rows) * (size_t)(cols); i_++) buf[i_] = (float)(ef_rng_normal(&r) * (std));
#define NORMV(n)                                                                       \
    for (int i_ = 0; i_ < (n); i_++) buf[i_] = (float)(1.0 + 0.2 * ef_rng_normal(&r));
    const double sd = scale / sqrt((double)dim), sf = scale / sqrt((double)ffn);
    RANDM(vocab, dim, 1.0)
    err |= add("token_embd.weight", dim, vocab, type, buf);
    for (int l = 0; l < layers; l++) {
        char n[64];
#define ADD(suffix, cols, rows)                                                        \
    snprintf(n, sizeof n, "blk.%d." suffix, l);                                        \
    err |= add(n, cols, rows, type, buf);
        NORMV(dim)
        ADD("attn_norm.weight", dim, 0)
        RANDM(dim, dim, sd)
        ADD("attn_q.weight", dim, dim)
        RANDM(kv, dim, sd)
        ADD("attn_k.weight", dim, kv)
        RANDM(kv, dim, sd)
        ADD("attn_v.weight", dim, kv)
        RANDM(dim, dim, sd)
        ADD("attn_output.weight", dim, dim)
        NORMV(dim)
        ADD("ffn_norm.weight", dim, 0)
        RANDM(ffn, dim, sd)
        ADD("ffn_gate.weight", dim, ffn)
        RANDM(ffn, dim, sd)
        ADD("ffn_up.weight", dim, ffn)
        RANDM(dim, ffn, sf)
        ADD("ffn_down.weight", ffn, dim)
#undef ADD
    }
    NORMV(dim)
    err |= add("output_norm.weight", dim, 0, type, buf);
    if (!tied) {
        RANDM(vocab, dim, sd)
        err |= add("output.weight", dim, vocab, type, buf);
    }
    if (err) {
        fprintf(stderr, "slm_make_model: %s\n", ef_last_error());
        return 1;
    }
    ef_gguf_writer *w;
    if (ef_gguf_writer_new(&w) != EF_OK) return 1;
    uint32_t ftype = type == EF_GGML_F32 ? 0 : type == EF_GGML_F16 ? 1 : type == EF_GGML_Q8_0 ? 7 : 2;
    err |= ef_gguf_set_str(w, "general.architecture", "llama") != EF_OK;
    err |= ef_gguf_set_str(w, "general.name", "edgefl-test-random") != EF_OK;
    err |= ef_gguf_set_u32(w, "general.file_type", ftype) != EF_OK;
    err |= ef_gguf_set_u32(w, "general.quantization_version", 2) != EF_OK;
    err |= ef_gguf_set_u32(w, "llama.context_length", (uint32_t)ctx) != EF_OK;
    err |= ef_gguf_set_u32(w, "llama.embedding_length", (uint32_t)dim) != EF_OK;
    err |= ef_gguf_set_u32(w, "llama.block_count", (uint32_t)layers) != EF_OK;
    err |= ef_gguf_set_u32(w, "llama.feed_forward_length", (uint32_t)ffn) != EF_OK;
    err |= ef_gguf_set_u32(w, "llama.attention.head_count", (uint32_t)heads) != EF_OK;
    err |= ef_gguf_set_u32(w, "llama.attention.head_count_kv", (uint32_t)kvh) != EF_OK;
    err |= ef_gguf_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f) != EF_OK;
    err |= ef_gguf_set_f32(w, "llama.rope.freq_base", 10000.0f) != EF_OK;
    err |= ef_gguf_set_u32(w, "llama.rope.dimension_count", (uint32_t)hd) != EF_OK;
    err |= ef_gguf_set_u32(w, "llama.vocab_size", (uint32_t)vocab) != EF_OK;
    err |= ef_gguf_set_str(w, "tokenizer.ggml.model", "gpt2") != EF_OK;
    err |= ef_gguf_set_str(w, "tokenizer.ggml.pre", "gpt-2") != EF_OK;
    err |= ef_gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, NULL, (size_t)vocab) != EF_OK;
    err |= ef_gguf_set_arr(w, "tokenizer.ggml.token_type", EF_GGUF_INT32, types, (size_t)vocab) != EF_OK;
    err |= ef_gguf_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges, NULL, (size_t)nm) != EF_OK;
    err |= ef_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)(vocab - 1)) != EF_OK;
    err |= ef_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)(vocab - 1)) != EF_OK;
    err |= ef_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", false) != EF_OK;
    for (int i = 0; i < n_mats; i++)
        err |= ef_gguf_add_tensor(w, mats[i].name, mats[i].type, mats[i].nd, mats[i].ne, mats[i].data,
                                  mats[i].bytes) != EF_OK;
    if (err || ef_gguf_writer_write(w, out) != EF_OK) {
        fprintf(stderr, "slm_make_model: %s\n", ef_last_error());
        return 1;
    }
    ef_gguf_writer_free(w);
    for (int i = 0; i < n_mats; i++) free(mats[i].data);
    for (int i = 0; i < vocab; i++) free(toks[i]);
    for (int i = 0; i < nm; i++) free(merges[i]);
    free(toks);
    free(merges);
    free(types);
    free(buf);
    return 0;
}
