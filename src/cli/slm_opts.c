/*
 * Model, tokenizer and context setup shared by the language-model commands.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "slm_opts.h"

int slm_run_open(const char *cmd, const slm_run_opts *o, int need_tokenizer, slm_run *r) {
    memset(r, 0, sizeof *r);
    if (ef_slm_model_load(&r->model, o->model) != EF_OK) {
        cli_error(cmd, "%s", ef_last_error());
        return CLI_EXIT_FAIL;
    }
    ef_status st = ef_slm_tokenizer_from_gguf(ef_slm_model_gguf(r->model), &r->tok);
    if (st != EF_OK && (need_tokenizer || st != EF_ERR_NOT_FOUND)) {
        cli_error(cmd, "%s: %s", o->model, ef_last_error());
        return CLI_EXIT_FAIL;
    }
    if (r->tok && (int)ef_tokenizer_n_tokens(r->tok) != ef_slm_model_config(r->model)->vocab) {
        cli_error(cmd, "%s: the tokenizer has %zu tokens, the model %d", o->model, ef_tokenizer_n_tokens(r->tok),
                  ef_slm_model_config(r->model)->vocab);
        return CLI_EXIT_FAIL;
    }
    ef_slm_ctx_opts co = {0};
    co.n_threads = o->threads;
    co.n_ctx = o->n_ctx;
    co.n_batch = o->n_batch;
    co.kv_f32 = o->kv && strcmp(o->kv, "f32") == 0;
    co.isa = !o->kernels || !strcmp(o->kernels, "auto") ? EF_SLM_ISA_AUTO
             : !strcmp(o->kernels, "scalar")            ? EF_SLM_ISA_SCALAR
             : !strcmp(o->kernels, "avx2")              ? EF_SLM_ISA_AVX2
                                                        : EF_SLM_ISA_AVX512;
    if (ef_slm_ctx_new(&r->ctx, r->model, &co) != EF_OK) {
        cli_error(cmd, "%s", ef_last_error());
        return CLI_EXIT_FAIL;
    }
    return 0;
}

void slm_run_free(slm_run *r) {
    ef_slm_ctx_free(r->ctx);
    ef_tokenizer_free(r->tok);
    ef_slm_model_free(r->model);
    memset(r, 0, sizeof *r);
}

int slm_want_bos(const slm_run *r, const char *mode) {
    if (ef_slm_model_config(r->model)->bos_id < 0) return 0;
    if (!strcmp(mode, "yes")) return 1;
    if (!strcmp(mode, "no")) return 0;
    bool b = false;
    return ef_gguf_get_bool(ef_slm_model_gguf(r->model), "tokenizer.ggml.add_bos_token", &b) == EF_OK && b;
}

int slm_parse_ids(const char *cmd, const char *text, int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    size_t cap = 1;
    for (const char *p = text; *p; p++) cap += *p == ',';
    int32_t *v = ef_malloc(sizeof *v * cap);
    if (!v) {
        cli_error(cmd, "out of memory");
        return CLI_EXIT_FAIL;
    }
    const char *p = text;
    int k = 0;
    for (;;) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX || (*end != ',' && *end != '\0')) {
            fprintf(stderr, "edgefl %s: --prompt-ids: '%s' is not a comma-separated list of token ids\n", cmd, text);
            ef_free(v);
            return CLI_EXIT_USAGE;
        }
        v[k++] = (int32_t)x;
        if (*end == '\0') break;
        p = end + 1;
    }
    *ids = v;
    *n = k;
    return 0;
}
