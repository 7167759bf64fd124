/*
 * `edgefl perplexity`: how well a GGUF language model predicts a text file.
 * The file is tokenized with the model's tokenizer (special-token text is
 * read as plain bytes), a BOS token is put in front when the model has one
 * (so the first token is predicted too), and the tokens are scored in
 * windows of --ctx tokens overlapping by one (ef_slm_score): every token
 * after the first is predicted exactly once. Reports perplexity per token
 * and bits per byte = total negative log-likelihood / ln 2 / bytes of the
 * predicted tokens (the whole file when a BOS token starts it).
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "slm_opts.h"

static const char *USAGE = "edgefl perplexity --model M.gguf --text FILE [--ctx N] [--threads T] [--json]";
static const char *DESC =
    "Scores a text file with a llama-architecture GGUF model: perplexity per token and bits\n"
    "per byte. The text is read in windows of --ctx tokens (default: the model's\n"
    "context_length) overlapping by one token, each from an empty cache.";

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = (n + 65536 + 1) * 2;
            char *p = ef_realloc(buf, cap);
            if (!p) {
                ef_free(buf);
                fclose(f);
                return NULL;
            }
            buf = p;
        }
        size_t k = fread(buf + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        ef_free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

int cmd_perplexity(int argc, char **argv) {
    slm_run_opts ro = {NULL, 0, 0, 0, "f16", "auto"};
    const char *text_path = NULL, *bos = "auto";
    int json = 0, quiet = 0;
    cli_opt opts[] = {
        {"model", CLI_STR, &ro.model, "M.gguf", "GGUF model (llama architecture; required)", 0, 0, NULL, 0},
        {"text", CLI_STR, &text_path, "FILE", "text to score (required)", 0, 0, NULL, 0},
        {"ctx", CLI_INT, &ro.n_ctx, "N", "window size in tokens (default: the model's context_length)", 2, 1 << 24,
         NULL, 0},
        {"threads", CLI_INT, &ro.threads, "T", "threads (default: all CPUs)", 1, 1024, NULL, 0},
        {"batch", CLI_INT, &ro.n_batch, "B", "tokens per forward pass (default: the window, at most 512)", 1, 65536,
         NULL, 0},
        {"kv", CLI_CHOICE, &ro.kv, NULL, "KV cache type: f16 (default) or f32", 0, 0, "f16|f32", 0},
        {"kernels", CLI_CHOICE, &ro.kernels, NULL, "kernel set (default auto)", 0, 0, "auto|scalar|avx2|avx512", 0},
        {"bos", CLI_CHOICE, &bos, NULL, "put the BOS token first: auto (yes when the model has one), yes, no", 0, 0,
         "auto|yes|no", 0},
        {"json", CLI_FLAG, &json, NULL, "print one JSON object on stdout", 0, 0, NULL, 0},
        {"quiet", CLI_FLAG, &quiet, NULL, "no progress on stderr", 0, 0, NULL, 0},
        {0},
    };
    int help, rc = cli_parse("perplexity", argc, argv, 2, opts, &help, USAGE, DESC);
    if (rc || help) return rc;
    if (!ro.model || !text_path) {
        fprintf(stderr, "edgefl perplexity: --model and --text are required\nTry 'edgefl perplexity --help'.\n");
        return CLI_EXIT_USAGE;
    }
    int status = CLI_EXIT_FAIL;
    slm_run r;
    memset(&r, 0, sizeof r);
    char *text = NULL;
    int32_t *ids = NULL, *toks = NULL;
    size_t len = 0, n_ids = 0;
    double t0 = ef_now();
    text = read_file(text_path, &len);
    if (!text) {
        cli_error("perplexity", "%s: cannot read", text_path);
        goto done;
    }
    if (!ro.n_batch) ro.n_batch = 512; /* capped at the window by the context */
    if (slm_run_open("perplexity", &ro, 1, &r) != 0) goto done;
    if (ef_tokenizer_encode(r.tok, text, len, 0, &ids, &n_ids) != EF_OK) {
        cli_error("perplexity", "%s", ef_last_error());
        goto done;
    }
    const ef_slm_config *cf = ef_slm_model_config(r.model);
    int add_bos = cf->bos_id >= 0 && (strcmp(bos, "auto") == 0 || strcmp(bos, "yes") == 0);
    if (strcmp(bos, "yes") == 0 && cf->bos_id < 0) {
        cli_error("perplexity", "--bos yes: the model has no BOS token");
        goto done;
    }
    int64_t n = (int64_t)n_ids + add_bos;
    if (n < 2) {
        cli_error("perplexity", "%s: too little text to score (%zu tokens)", text_path, n_ids);
        goto done;
    }
    toks = ef_malloc(sizeof(int32_t) * (size_t)n);
    if (!toks) {
        cli_error("perplexity", "out of memory");
        goto done;
    }
    if (add_bos) toks[0] = cf->bos_id;
    memcpy(toks + add_bos, ids, sizeof(int32_t) * n_ids);
    /* bytes of the predicted tokens: all of the text unless its first token
     * is not predicted (no BOS) */
    size_t first_len = 0;
    if (!add_bos) ef_tokenizer_token_bytes(r.tok, ids[0], &first_len);
    size_t bytes = len - first_len;
    int window = ef_slm_ctx_size(r.ctx);
    int64_t windows = (n - 1 + window - 2) / (window - 1);
    if (!quiet)
        fprintf(stderr, "edgefl perplexity: %s: %zu bytes, %zu tokens, %lld windows of %d tokens, %s kernels, %d threads\n",
                text_path, len, n_ids, (long long)windows, window, ef_slm_ctx_isa(r.ctx), ef_slm_ctx_threads(r.ctx));
    double nll = 0, t1 = ef_now();
    int64_t scored = 0;
    if (ef_slm_score(r.ctx, toks, n, window, &nll, &scored) != EF_OK) {
        cli_error("perplexity", "%s", ef_last_error());
        goto done;
    }
    double secs = ef_now() - t1;
    double ppl = exp(nll / (double)scored), bpb = nll / log(2.0) / (double)bytes;
    double bpt = nll / log(2.0) / (double)scored, tps = secs > 0 ? (double)n / secs : 0;
    if (!quiet)
        fprintf(stderr, "edgefl perplexity: %.1f s, %.0f tokens/s, peak RSS %.1f MB\n", secs, tps, ef_peak_rss_mb());
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "command", "perplexity");
        cJSON_AddStringToObject(j, "model", ro.model);
        cJSON_AddStringToObject(j, "weights", ef_slm_type_name(ef_slm_model_type(r.model)));
        cJSON_AddStringToObject(j, "text", text_path);
        cJSON_AddNumberToObject(j, "perplexity", ppl);
        cJSON_AddNumberToObject(j, "bits_per_byte", bpb);
        cJSON_AddNumberToObject(j, "bits_per_token", bpt);
        cJSON_AddNumberToObject(j, "nll", nll);
        cJSON_AddNumberToObject(j, "tokens", (double)scored);
        cJSON_AddNumberToObject(j, "bytes", (double)bytes);
        cJSON_AddBoolToObject(j, "bos", add_bos);
        cJSON_AddNumberToObject(j, "ctx", window);
        cJSON_AddNumberToObject(j, "windows", (double)windows);
        cJSON_AddNumberToObject(j, "seconds", secs);
        cJSON_AddNumberToObject(j, "tokens_per_s", tps);
        cJSON_AddNumberToObject(j, "threads", ef_slm_ctx_threads(r.ctx));
        cJSON_AddStringToObject(j, "kernels", ef_slm_ctx_isa(r.ctx));
        cJSON_AddNumberToObject(j, "peak_rss_mb", ef_peak_rss_mb());
        cJSON_AddNumberToObject(j, "wall_s", ef_now() - t0);
        if (cli_print_json("perplexity", j) != 0) goto done;
    } else {
        printf("perplexity %.4f, %.4f bits per byte, %.4f bits per token (%lld tokens, %zu bytes)\n", ppl, bpb, bpt,
               (long long)scored, bytes);
    }
    status = 0;
done:
    ef_free(text);
    ef_free(ids);
    ef_free(toks);
    slm_run_free(&r);
    return status;
}
