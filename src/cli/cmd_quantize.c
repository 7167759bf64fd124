/*
 * `edgefl quantize IN.gguf OUT.gguf {q8_0,q4_0,f16}`: writes a copy of a GGUF
 * model with its weight matrices quantized to ggml's Q8_0 or Q4_0 blocks (or
 * converted to F16), the way llama-quantize does for these types:
 *   - quantized: tensors whose name ends in "weight" with 2 or more
 *     dimensions, except norms and the few small tensors llama.cpp keeps
 *     (expert gates, position and token-type embeddings, ...);
 *   - Q4_0: the output projection (output.weight, or token_embd.weight when
 *     the embedding is tied) gets Q8_0. llama.cpp gives it Q6_K, a K-quant
 *     edgefl does not implement; Q8_0 is llama.cpp's own fallback for it.
 *     --pure quantizes it to Q4_0 like everything else (llama-quantize --pure);
 *   - a matrix whose rows are not a multiple of 32 stays as it is (llama.cpp
 *     refuses such a model for Q4_0 / Q8_0); F16 takes any row length;
 *   - metadata copied, general.file_type set to llama.cpp's ftype (Q8_0: 7,
 *     Q4_0: 2, F16: 1), general.quantization_version to 2.
 * Sources may be F32, F16 or BF16; a tensor already of the target type is
 * copied; other quantized types are refused (no requantization, as
 * llama-quantize by default). Weights are quantized while the output is
 * written, one tensor in memory at a time; any failure (NaN weights, a scale
 * that overflows f16, a write error) leaves OUT untouched.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "edgefl/gguf.h"

static const char *USAGE =
    "edgefl quantize IN.gguf OUT.gguf {q8_0,q4_0,f16} [--pure] [--json] [--quiet]";
static const char *DESC =
    "Quantizes the weight matrices of a GGUF model (F32, F16 or BF16) to ggml's Q8_0 or\n"
    "Q4_0 blocks, bit-exact with llama.cpp's reference quantizers, or converts them to\n"
    "F16 (round to nearest even), and writes OUT atomically. Norms and other 1-D tensors\n"
    "stay F32. With q4_0 the output projection (output.weight, or token_embd.weight\n"
    "when tied) is written as Q8_0 unless --pure.\n"
    "Progress goes to stderr; the summary (sizes, ratio) to stdout.";

typedef struct plan {
    const ef_gguf_tensor *src;
    int type;          /* type written */
    const char *why;   /* why a matrix is kept as it is (NULL otherwise) */
} plan;

typedef struct job {
    plan *p;
    size_t n, done;
    float *buf;
    size_t buf_cap;
    cli_progress prog;
    char err[1024]; /* why a fill failed, with the tensor's name */
} job;

typedef struct fill_ctx {
    job *j;
    size_t i;
} fill_ctx;

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* llama-quantize's rule for which tensors are quantized at all. */
static int quantizable(const ef_gguf_tensor *t) {
    static const char *const keep[] = {
        "_norm.weight", "ffn_gate_inp.weight", "ssm_conv1d.weight", "attn_rel_b.weight",
        "altup", "laurel", "per_layer_model_proj", "shortconv.conv.weight",
        "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
        "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight",
        "time_mix_v2.weight", "time_mix_a0.weight", "time_mix_a1.weight",
        "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight",
        "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
    };
    if (!ends_with(t->name, "weight") || t->n_dims < 2) return 0;
    for (size_t i = 0; i < sizeof keep / sizeof *keep; i++)
        if (strstr(t->name, keep[i])) return 0;
    if (strcmp(t->name, "position_embd.weight") == 0 || strcmp(t->name, "token_types.weight") == 0)
        return 0;
    return 1;
}

static ef_status fill_tensor(void *user, void *dst, size_t nbytes) {
    fill_ctx *c = user;
    job *j = c->j;
    plan *p = &j->p[c->i];
    const ef_gguf_tensor *t = p->src;
    cli_progress_show(&j->prog, 0, "quantizing [%zu/%zu] %s -> %s", c->i + 1, j->n, t->name,
                      ef_ggml_type_name(p->type));
    if (p->type == t->type) {
        memcpy(dst, t->data, nbytes);
        return EF_OK;
    }
    size_t n = (size_t)t->n_elements;
    if (n > j->buf_cap) {
        float *nb = realloc(j->buf, n * sizeof *nb);
        if (!nb) {
            snprintf(j->err, sizeof j->err, "tensor '%s': out of memory", t->name);
            return EF_ERR_NOMEM;
        }
        j->buf = nb;
        j->buf_cap = n;
    }
    ef_status st = ef_dequantize(t->type, t->data, j->buf, t->n_elements);
    if (st != EF_OK) {
        snprintf(j->err, sizeof j->err, "tensor '%s': %s", t->name, ef_last_error());
        return st;
    }
    int64_t rows = t->n_elements / (t->ne[0] ? t->ne[0] : 1);
    size_t written = 0;
    st = ef_quantize(p->type, j->buf, dst, t->ne[0] ? rows : 0, t->ne[0], &written);
    if (st != EF_OK) {
        snprintf(j->err, sizeof j->err, "tensor '%s': %s", t->name, ef_last_error());
        return st;
    }
    if (written != nbytes) return EF_ERR_INTERNAL;
    j->done++;
    return EF_OK;
}

int cmd_quantize(int argc, char **argv) {
    int pure = 0, json = 0, quiet = 0;
    cli_opt opts[] = {
        {"pure", CLI_FLAG, &pure, NULL, "q4_0: quantize the output projection to Q4_0 too", 0, 0, NULL, 0},
        {"json", CLI_FLAG, &json, NULL, "print one JSON object with the summary on stdout", 0, 0, NULL, 0},
        {"quiet", CLI_FLAG, &quiet, NULL, "no progress output", 0, 0, NULL, 0},
        {0},
    };
    const char *pos[3];
    int n_pos = 0;
    argc = cli_take_positionals(argc, argv, 2, opts, pos, 3, &n_pos);
    int help;
    int rc = cli_parse("quantize", argc, argv, 2, opts, &help, USAGE, DESC);
    if (rc || help) return rc;
    if (n_pos != 3) {
        cli_error("quantize", "expected IN.gguf OUT.gguf TYPE, got %d argument%s", n_pos,
                  n_pos == 1 ? "" : "s");
        fprintf(stderr, "Usage: %s\n", USAGE);
        return CLI_EXIT_USAGE;
    }
    const char *in = pos[0], *out = pos[1];
    int target = ef_ggml_type_from_name(pos[2]);
    uint32_t ftype;
    if (target == EF_GGML_Q8_0) {
        ftype = EF_LLAMA_FTYPE_MOSTLY_Q8_0;
    } else if (target == EF_GGML_Q4_0) {
        ftype = EF_LLAMA_FTYPE_MOSTLY_Q4_0;
    } else if (target == EF_GGML_F16) {
        ftype = EF_LLAMA_FTYPE_MOSTLY_F16;
    } else {
        cli_error("quantize", "type '%s' is not one of q8_0, q4_0, f16", pos[2]);
        return CLI_EXIT_USAGE;
    }
    if (pure && target != EF_GGML_Q4_0) {
        cli_error("quantize", "--pure applies to q4_0 only (q8_0 quantizes every matrix alike)");
        return CLI_EXIT_USAGE;
    }

    int status = CLI_EXIT_FAIL;
    double t0 = ef_now();
    ef_gguf *g = NULL;
    ef_gguf_writer *w = NULL;
    job j = {0};
    fill_ctx *ctx = NULL;
    cli_progress_init(&j.prog, quiet);
    if (ef_gguf_open(&g, in) != EF_OK) {
        cli_error("quantize", "%s", ef_last_error());
        goto done;
    }
    j.n = ef_gguf_tensor_count(g);
    j.p = calloc(j.n ? j.n : 1, sizeof *j.p);
    ctx = calloc(j.n ? j.n : 1, sizeof *ctx);
    if (!j.p || !ctx) {
        cli_error("quantize", "out of memory");
        goto done;
    }
    int has_output = ef_gguf_find_tensor(g, "output.weight") != NULL;
    size_t n_quant = 0, n_output_q8 = 0, n_kept_rows = 0, n_copied_same = 0;
    for (size_t i = 0; i < j.n; i++) {
        const ef_gguf_tensor *t = ef_gguf_tensor_at(g, i);
        plan *p = &j.p[i];
        p->src = t;
        p->type = t->type;
        if (!quantizable(t)) continue;
        int want = target;
        int is_output = strcmp(t->name, "output.weight") == 0 ||
                        (!has_output && strcmp(t->name, "token_embd.weight") == 0);
        if (target == EF_GGML_Q4_0 && is_output && !pure) want = EF_GGML_Q8_0;
        if (t->ne[0] % ef_ggml_blck_size(want) != 0) { /* never for F16 (blocks of 1) */
            p->why = "row length not a multiple of 32";
            n_kept_rows++;
            continue;
        }
        if (t->type == want) {
            n_copied_same++;
            continue;
        }
        if (t->type != EF_GGML_F32 && t->type != EF_GGML_F16 && t->type != EF_GGML_BF16) {
            cli_error("quantize", "%s: tensor '%s' is %s: requantizing from a quantized type is "
                      "not supported (quantize from the F32, F16 or BF16 model)", in, t->name,
                      ef_ggml_type_name(t->type));
            goto done;
        }
        p->type = want;
        n_quant++;
        if (want != target) n_output_q8++;
    }

    if (ef_gguf_writer_new(&w) != EF_OK) {
        cli_error("quantize", "%s", ef_last_error());
        goto done;
    }
    for (size_t k = 0; k < ef_gguf_kv_count(g); k++)
        if (ef_gguf_copy_kv(w, g, k) != EF_OK) {
            cli_error("quantize", "%s", ef_last_error());
            goto done;
        }
    if (ef_gguf_set_u32(w, "general.quantization_version", EF_GGML_QNT_VERSION) != EF_OK ||
        ef_gguf_set_u32(w, "general.file_type", ftype) != EF_OK) {
        cli_error("quantize", "%s", ef_last_error());
        goto done;
    }
    uint64_t in_tensor_bytes = 0, out_tensor_bytes = 0;
    for (size_t i = 0; i < j.n; i++) {
        const plan *p = &j.p[i];
        const ef_gguf_tensor *t = p->src;
        ef_status st;
        in_tensor_bytes += t->nbytes;
        if (p->type == t->type) {
            st = ef_gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes);
            out_tensor_bytes += t->nbytes;
        } else {
            size_t nbytes = 0;
            st = ef_ggml_row_size(p->type, t->ne[0], &nbytes);
            for (int d = 1; st == EF_OK && d < t->n_dims; d++) nbytes *= (size_t)t->ne[d];
            ctx[i].j = &j;
            ctx[i].i = i;
            if (st == EF_OK)
                st = ef_gguf_add_tensor_fn(w, t->name, p->type, t->n_dims, t->ne, nbytes,
                                           fill_tensor, &ctx[i]);
            out_tensor_bytes += nbytes;
        }
        if (st != EF_OK) {
            cli_error("quantize", "%s", ef_last_error());
            goto done;
        }
    }
    ef_status wst = ef_gguf_writer_write(w, out);
    cli_progress_done(&j.prog);
    if (wst != EF_OK) {
        cli_error("quantize", "%s", j.err[0] ? j.err : ef_last_error());
        fprintf(stderr, "edgefl quantize: nothing written to %s\n", out);
        goto done;
    }
    uint64_t out_size = 0;
    ef_gguf_writer_size(w, &out_size);
    uint64_t in_size = ef_gguf_file_size(g);
    double ratio = out_size ? (double)in_size / (double)out_size : 0.0;
    double wall = ef_now() - t0;
    const char *tn = ef_ggml_type_name(target);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "command", "quantize");
        cJSON_AddStringToObject(o, "input", in);
        cJSON_AddStringToObject(o, "output", out);
        cJSON_AddStringToObject(o, "type", tn);
        cJSON_AddNumberToObject(o, "file_type", ftype);
        cJSON_AddBoolToObject(o, "pure", pure);
        cJSON_AddNumberToObject(o, "tensors", (double)j.n);
        cJSON_AddNumberToObject(o, "quantized", (double)n_quant);
        cJSON_AddNumberToObject(o, "output_as_q8_0", (double)n_output_q8);
        cJSON_AddNumberToObject(o, "already_target_type", (double)n_copied_same);
        cJSON_AddNumberToObject(o, "kept_row_length", (double)n_kept_rows);
        cJSON_AddNumberToObject(o, "kept", (double)(j.n - n_quant));
        cJSON_AddNumberToObject(o, "input_bytes", (double)in_size);
        cJSON_AddNumberToObject(o, "output_bytes", (double)out_size);
        cJSON_AddNumberToObject(o, "input_tensor_bytes", (double)in_tensor_bytes);
        cJSON_AddNumberToObject(o, "output_tensor_bytes", (double)out_tensor_bytes);
        cJSON_AddNumberToObject(o, "ratio", ratio);
        cJSON_AddNumberToObject(o, "wall_s", wall);
        if (cli_print_json("quantize", o) != 0) goto done;
    } else {
        printf("%s -> %s: %s (llama.cpp file type %" PRIu32 ")\n", in, out, tn, ftype);
        printf("tensors: %zu, quantized %zu", j.n, n_quant);
        if (n_output_q8) printf(" (%zu of them as q8_0: the output projection)", n_output_q8);
        printf(", kept %zu\n", j.n - n_quant);
        for (size_t i = 0; i < j.n; i++)
            if (j.p[i].why)
                printf("  kept %s (%s): %s\n", j.p[i].src->name,
                       ef_ggml_type_name(j.p[i].src->type), j.p[i].why);
        printf("size: %.3f MiB -> %.3f MiB (%.2fx smaller), tensors %.3f MiB -> %.3f MiB, %.2f s\n",
               (double)in_size / 1048576.0, (double)out_size / 1048576.0, ratio,
               (double)in_tensor_bytes / 1048576.0, (double)out_tensor_bytes / 1048576.0, wall);
    }
    status = 0;
done:
    ef_gguf_writer_free(w);
    ef_gguf_close(g);
    free(j.p);
    free(j.buf);
    free(ctx);
    return status;
}
