/*
 * Tests of loading GGUF models for inference (src/slm/load.c):
 *   - random models written by slm_make_model (F32 untied, F32 tied with
 *     GQA, F16, Q8_0, Q4_0) load, and their logits match the double-precision
 *     reference of slm_test_model.h run on the file's tensors read back
 *     through the GGUF reader by name (so a swapped, transposed or misnamed
 *     tensor shows); the tolerances are those of test_slm_forward;
 *   - a loaded model and the same weights given to ef_slm_model_new produce
 *     bit-identical logits; metadata defaults (head_count_kv, epsilon, rope
 *     base) apply when keys are missing;
 *   - broken files are refused with a message naming the key or tensor:
 *     another architecture, a missing key or tensor, a wrong shape, an
 *     unsupported tensor type, rope scaling, a bias tensor, a rotary size
 *     other than the head size, a bad configuration.
 */
#include <stdio.h>
#include <unistd.h>

#include "edgefl/gguf.h"
#include "edgefl/quant.h"
#include "slm_test_model.h"
#include "test_util.h"

static char dir[256];

static void make(const char *name, const char *args) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/tests/slm_make_model %s/%s %s", EF_BINARY_DIR, dir, name, args);
    CHECK_MSG(system(cmd) == 0, "%s", cmd);
}

static const char *path(const char *name) {
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

/* The F32 masters of a GGUF model, read by name through the GGUF reader. */
static float *read_tensor(const ef_gguf *g, const char *name, int64_t n) {
    const ef_gguf_tensor *t = ef_gguf_find_tensor(g, name);
    if (!t || t->n_elements != n) return NULL;
    float *f = malloc(sizeof(float) * (size_t)n);
    if (ef_dequantize(t->type, t->data, f, n) != EF_OK) {
        free(f);
        return NULL;
    }
    return f;
}

static int fill_from_gguf(tm_model *m, const ef_gguf *g, const ef_slm_config *c) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    const int L = c->n_layers, D = c->dim, F = c->ffn_dim, V = c->vocab, KV = D / c->n_heads * c->n_kv_heads;
    m->embd = read_tensor(g, "token_embd.weight", (int64_t)V * D);
    m->tied = ef_gguf_find_tensor(g, "output.weight") == NULL;
    m->out = m->tied ? NULL : read_tensor(g, "output.weight", (int64_t)V * D);
    m->out_norm = read_tensor(g, "output_norm.weight", D);
    float ***arrs[9] = {&m->attn_norm, &m->ffn_norm, &m->wq, &m->wk, &m->wv, &m->wo, &m->wg, &m->wu, &m->wd};
    const char *names[9] = {"attn_norm", "ffn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                            "ffn_gate", "ffn_up", "ffn_down"};
    const int64_t sizes[9] = {D, D, (int64_t)D * D, (int64_t)KV * D, (int64_t)KV * D, (int64_t)D * D,
                              (int64_t)F * D, (int64_t)F * D, (int64_t)D * F};
    int ok = m->embd && m->out_norm && (m->tied || m->out);
    for (int a = 0; a < 9; a++) {
        *arrs[a] = calloc((size_t)L, sizeof(float *));
        for (int l = 0; l < L; l++) {
            char n[64];
            snprintf(n, sizeof n, "blk.%d.%s.weight", l, names[a]);
            (*arrs[a])[l] = read_tensor(g, n, sizes[a]);
            ok &= (*arrs[a])[l] != NULL;
        }
    }
    return ok;
}

static void check_model(const char *name, const char *args, double tol_max) {
    make(name, args);
    ef_slm_model *m = NULL;
    CHECK_OK(ef_slm_model_load(&m, path(name)));
    if (!m) return;
    const ef_slm_config *c = ef_slm_model_config(m);
    CHECK(c->vocab == 269 && c->bos_id == 268 && c->eos_id == 268);
    CHECK(ef_slm_model_gguf(m) != NULL);
    tm_model tm;
    CHECK(fill_from_gguf(&tm, ef_slm_model_gguf(m), c));
    const int n = 20, V = c->vocab;
    int32_t tok[20];
    for (int i = 0; i < n; i++) tok[i] = (int32_t)((i * 53 + 7) % V);
    double *ref = malloc(sizeof(double) * (size_t)n * V);
    float *got = malloc(sizeof(float) * (size_t)n * V);
    tm_reference(&tm, tok, n, ref);
    ef_slm_ctx_opts o = {0};
    o.kv_f32 = 1;
    o.n_threads = 2;
    ef_slm_ctx *cx;
    CHECK_OK(ef_slm_ctx_new(&cx, m, &o));
    CHECK_OK(ef_slm_eval(cx, tok, n, got, 1));
    double mx = 0, rr = 0, er = 0;
    for (int i = 0; i < n * V; i++) {
        double d = fabs(got[i] - ref[i]);
        mx = d > mx ? d : mx;
        rr += ref[i] * ref[i];
        er += d * d;
    }
    rr = sqrt(rr / (n * V));
    er = sqrt(er / (n * V));
    printf("%s: logits RMS %.3f, max error %.2e, RMS error %.2e (of RMS)\n", name, rr, mx / rr, er / rr);
    CHECK(rr > 1.0);
    CHECK_MSG(mx / rr <= tol_max, "%s: max error %.3g", name, mx / rr);

    /* the same weights through ef_slm_model_new: identical logits */
    ef_slm_layer_weights *lw = calloc((size_t)c->n_layers, sizeof *lw);
    const ef_gguf *g = ef_slm_model_gguf(m);
    const char *names[9] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                            "ffn_gate", "ffn_up", "ffn_down"};
    for (int l = 0; l < c->n_layers; l++) {
        ef_slm_tensor *f[9] = {&lw[l].attn_norm, &lw[l].wq, &lw[l].wk, &lw[l].wv, &lw[l].wo,
                               &lw[l].ffn_norm, &lw[l].w_gate, &lw[l].w_up, &lw[l].w_down};
        for (int k = 0; k < 9; k++) {
            char nm[64];
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, names[k]);
            const ef_gguf_tensor *t = ef_gguf_find_tensor(g, nm);
            f[k]->type = (ef_slm_type)t->type;
            f[k]->data = t->data;
        }
    }
    ef_slm_weights w = {{0}, {0}, {0}, lw};
    const ef_gguf_tensor *te = ef_gguf_find_tensor(g, "token_embd.weight"), *tn = ef_gguf_find_tensor(g, "output_norm.weight"),
                         *to = ef_gguf_find_tensor(g, "output.weight");
    w.tok_embd = (ef_slm_tensor){(ef_slm_type)te->type, te->data};
    w.output_norm = (ef_slm_tensor){(ef_slm_type)tn->type, tn->data};
    if (to) w.output = (ef_slm_tensor){(ef_slm_type)to->type, to->data};
    ef_slm_model *m2;
    CHECK_OK(ef_slm_model_new(&m2, c, &w));
    ef_slm_ctx *c2;
    float *got2 = malloc(sizeof(float) * (size_t)n * V);
    CHECK_OK(ef_slm_ctx_new(&c2, m2, &o));
    CHECK_OK(ef_slm_eval(c2, tok, n, got2, 1));
    CHECK(memcmp(got, got2, sizeof(float) * (size_t)n * V) == 0);
    CHECK(ef_slm_model_gguf(m2) == NULL);
    CHECK(ef_slm_model_numel(m2) == ef_slm_model_numel(m));
    ef_slm_ctx_free(c2);
    ef_slm_model_free(m2);
    free(lw);
    free(got2);
    ef_slm_ctx_free(cx);
    free(ref);
    free(got);
    tm.lw = NULL;
    tm_free(&tm);
    ef_slm_model_free(m);
}

/* ---- broken files: a copy of a good file with one change ---------------- */

typedef struct change {
    const char *drop_key;     /* metadata key left out */
    const char *set_key;      /* ... or replaced / added: */
    int set_kind;             /* 0 string, 1 u32, 2 f32 */
    const char *set_str;
    uint32_t set_u32;
    float set_f32;
    const char *drop_tensor;  /* tensor left out */
    const char *add_tensor;   /* an extra F32 vector of 64 */
    const char *shape_tensor; /* this tensor's rows halved (first half of its data) */
    const char *bf16_tensor;  /* this tensor rewritten as BF16 */
} change;

static ef_status rewrite_and_load(const char *src, const char *dst, const change *ch) {
    ef_gguf *g;
    if (ef_gguf_open(&g, src) != EF_OK) return EF_ERR_INTERNAL;
    ef_gguf_writer *w;
    ef_gguf_writer_new(&w);
    for (size_t i = 0; i < ef_gguf_kv_count(g); i++) {
        const ef_gguf_kv *kv = ef_gguf_kv_at(g, i);
        if (ch->drop_key && !strcmp(kv->key, ch->drop_key)) continue;
        ef_gguf_copy_kv(w, g, i);
    }
    if (ch->set_key) {
        if (ch->set_kind == 0) ef_gguf_set_str(w, ch->set_key, ch->set_str);
        else if (ch->set_kind == 1) ef_gguf_set_u32(w, ch->set_key, ch->set_u32);
        else ef_gguf_set_f32(w, ch->set_key, ch->set_f32);
    }
    void *keep[4] = {0};
    int nk = 0;
    for (size_t i = 0; i < ef_gguf_tensor_count(g); i++) {
        const ef_gguf_tensor *t = ef_gguf_tensor_at(g, i);
        if (ch->drop_tensor && !strcmp(t->name, ch->drop_tensor)) continue;
        int64_t ne[4] = {t->ne[0], t->ne[1], t->ne[2], t->ne[3]};
        if (ch->shape_tensor && !strcmp(t->name, ch->shape_tensor)) {
            ne[1] /= 2;
            ef_gguf_add_tensor(w, t->name, t->type, t->n_dims, ne, t->data, t->nbytes / 2);
        } else if (ch->bf16_tensor && !strcmp(t->name, ch->bf16_tensor)) {
            uint16_t *b = malloc((size_t)t->n_elements * 2);
            for (int64_t k = 0; k < t->n_elements; k++) {
                uint32_t u;
                memcpy(&u, (const float *)t->data + k, 4);
                b[k] = (uint16_t)(u >> 16);
            }
            keep[nk++] = b;
            ef_gguf_add_tensor(w, t->name, EF_GGML_BF16, t->n_dims, ne, b, (size_t)t->n_elements * 2);
        } else {
            ef_gguf_add_tensor(w, t->name, t->type, t->n_dims, ne, t->data, t->nbytes);
        }
    }
    if (ch->add_tensor) {
        static float z[64];
        int64_t ne[1] = {64};
        ef_gguf_add_tensor(w, ch->add_tensor, EF_GGML_F32, 1, ne, z, sizeof z);
    }
    ef_status st = ef_gguf_writer_write(w, dst);
    ef_gguf_writer_free(w);
    ef_gguf_close(g);
    for (int i = 0; i < nk; i++) free(keep[i]);
    if (st != EF_OK) return EF_ERR_INTERNAL;
    ef_slm_model *m = NULL;
    st = ef_slm_model_load(&m, dst);
    ef_slm_model_free(m);
    return st;
}

static void check_broken(void) {
    make("good.gguf", "--type f32 --dim 64 --heads 4 --kv-heads 2 --ffn 96 --layers 2");
    const char *src = path("good.gguf"), *dst = path("bad.gguf");
    struct {
        change ch;
        ef_status want;
        const char *msg;
    } cases[] = {
        {{.set_key = "general.architecture", .set_kind = 0, .set_str = "gpt2"}, EF_ERR_UNSUPPORTED, "'gpt2'"},
        {{.drop_key = "general.architecture"}, EF_ERR_FORMAT, "general.architecture"},
        {{.drop_key = "llama.block_count"}, EF_ERR_FORMAT, "llama.block_count"},
        {{.set_key = "llama.embedding_length", .set_kind = 0, .set_str = "64"}, EF_ERR_FORMAT, "llama.embedding_length"},
        {{.set_key = "llama.attention.head_count_kv", .set_kind = 1, .set_u32 = 3}, EF_ERR_INVALID, "n_kv_heads 3"},
        {{.set_key = "llama.rope.scaling.type", .set_kind = 0, .set_str = "yarn"}, EF_ERR_UNSUPPORTED, "rope scaling"},
        {{.set_key = "llama.rope.scaling.factor", .set_kind = 2, .set_f32 = 4.0f}, EF_ERR_UNSUPPORTED, "rope scaling"},
        {{.set_key = "llama.rope.dimension_count", .set_kind = 1, .set_u32 = 8}, EF_ERR_UNSUPPORTED, "dimension_count"},
        {{.drop_tensor = "blk.1.ffn_up.weight"}, EF_ERR_FORMAT, "blk.1.ffn_up.weight"},
        {{.drop_tensor = "output_norm.weight"}, EF_ERR_FORMAT, "output_norm.weight"},
        {{.shape_tensor = "blk.0.attn_k.weight"}, EF_ERR_FORMAT, "blk.0.attn_k.weight"},
        {{.bf16_tensor = "blk.1.attn_q.weight"}, EF_ERR_UNSUPPORTED, "bf16"},
        {{.add_tensor = "blk.0.attn_q.bias"}, EF_ERR_UNSUPPORTED, "blk.0.attn_q.bias"},
        {{.add_tensor = "rope_freqs.weight"}, EF_ERR_UNSUPPORTED, "rope_freqs"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ef_status st = rewrite_and_load(src, dst, &cases[i].ch);
        CHECK_MSG(st == cases[i].want && strstr(ef_last_error(), cases[i].msg) && strstr(ef_last_error(), "bad.gguf"),
                  "case %zu: got %s: %s (want %s mentioning %s)", i, ef_strerror(st), ef_last_error(),
                  ef_strerror(cases[i].want), cases[i].msg);
    }
    /* defaults: no head_count_kv (= head_count), epsilon, rope base or vocab_size */
    change defaults = {.drop_key = "llama.attention.head_count_kv"};
    make("mha.gguf", "--type f32 --dim 64 --heads 4 --kv-heads 4 --ffn 96 --layers 1");
    CHECK_OK(rewrite_and_load(path("mha.gguf"), dst, &defaults));
    change noeps = {.drop_key = "llama.attention.layer_norm_rms_epsilon"};
    CHECK_OK(rewrite_and_load(src, dst, &noeps));
    change nobase = {.drop_key = "llama.rope.freq_base"};
    CHECK_OK(rewrite_and_load(src, dst, &nobase));
    change novocab = {.drop_key = "llama.vocab_size"};
    CHECK_OK(rewrite_and_load(src, dst, &novocab));
    ef_slm_model *m = NULL;
    CHECK(ef_slm_model_load(&m, path("missing.gguf")) == EF_ERR_NOT_FOUND && m == NULL);
}

int main(void) {
    snprintf(dir, sizeof dir, "%s/slm-gguf-XXXXXX", EF_BINARY_DIR);
    if (!mkdtemp(dir)) return 1;
    check_model("f32.gguf", "--type f32", 1e-4);
    check_model("f32-gqa-tied.gguf", "--type f32 --heads 4 --kv-heads 1 --tied 1 --seed 3", 1e-4);
    check_model("f16.gguf", "--type f16 --seed 4", 2e-2);
    check_model("q8_0.gguf", "--type q8_0 --seed 5", 0.25);
    check_model("q4_0.gguf", "--type q4_0 --seed 6 --tied 1", 0.25);
    check_broken();
    tu_rmtree(dir);
    return tu_finish("test_slm_gguf");
}
