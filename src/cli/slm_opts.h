/*
 * Shared by `edgefl generate` and `edgefl perplexity`: loading a GGUF model
 * with its tokenizer, the context options (--threads, --ctx, --batch,
 * --kv, --kernels), the BOS rule, and parsing token id lists.
 */
#ifndef EDGEFL_CLI_SLM_OPTS_H
#define EDGEFL_CLI_SLM_OPTS_H

#include "cli.h"
#include "edgefl/gguf.h"
#include "edgefl/slm.h"
#include "edgefl/tokenizer.h"

typedef struct slm_run {
    ef_slm_model *model;
    ef_tokenizer *tok; /* NULL when the file has none (and none was required) */
    ef_slm_ctx *ctx;
} slm_run;

/* Option values as parsed. */
typedef struct slm_run_opts {
    const char *model;
    int threads, n_ctx, n_batch;
    const char *kv;      /* "f16" | "f32" */
    const char *kernels; /* "auto" | "scalar" | "avx2" | "avx512" */
} slm_run_opts;

/* Loads model and tokenizer (required: fail without one) and makes the
 * context. Prints the error and returns CLI_EXIT_FAIL on failure (r holds
 * whatever was made; free it with slm_run_free either way). */
int slm_run_open(const char *cmd, const slm_run_opts *o, int need_tokenizer, slm_run *r);
void slm_run_free(slm_run *r);

/* Whether to start with the BOS token: "yes", "no", or "auto" (the file's
 * tokenizer.ggml.add_bos_token, false when absent, as llama.cpp does). */
int slm_want_bos(const slm_run *r, const char *mode);

/* Parses "1,2,3" into *ids (ef_malloc'd) / *n. Returns 0, or prints a usage
 * error and returns CLI_EXIT_USAGE. */
int slm_parse_ids(const char *cmd, const char *text, int32_t **ids, int *n);

#endif /* EDGEFL_CLI_SLM_OPTS_H */
