/*
 * slm_logits: the last token's logits of a prompt, as raw little-endian
 * float32 on stdout, for comparing with llama.cpp bit for bit
 * (tests/slm/test_llamacpp_generate.sh).
 *
 *   slm_logits MODEL.gguf IDS     (IDS: comma-separated token ids)
 *
 * One thread, default kernels, the prompt in passes of 32 tokens like the
 * llama.cpp side (for F32/F16 weights a pass of a single token takes another
 * summation order, in both programs).
 */
#include <stdio.h>
#include <stdlib.h>

#include "edgefl/slm.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: slm_logits MODEL.gguf IDS\n");
        return 2;
    }
    int n = 0, cap = 16;
    int32_t *ids = malloc(sizeof *ids * (size_t)cap);
    for (char *p = argv[2]; *p;) {
        if (n == cap) ids = realloc(ids, sizeof *ids * (size_t)(cap *= 2));
        ids[n++] = (int32_t)strtol(p, &p, 10);
        if (*p == ',') p++;
    }
    ef_slm_model *m;
    if (ef_slm_model_load(&m, argv[1]) != EF_OK) {
        fprintf(stderr, "slm_logits: %s\n", ef_last_error());
        return 1;
    }
    ef_slm_ctx_opts o = {0};
    o.n_threads = 1;
    o.n_batch = 32;
    o.n_ctx = n + 1 > 64 ? n + 1 : 64;
    ef_slm_ctx *c;
    int vocab = ef_slm_model_config(m)->vocab;
    float *lg = malloc(sizeof(float) * (size_t)vocab);
    if (ef_slm_ctx_new(&c, m, &o) != EF_OK || ef_slm_eval(c, ids, n, lg, 0) != EF_OK) {
        fprintf(stderr, "slm_logits: %s\n", ef_last_error());
        return 1;
    }
    fwrite(lg, sizeof(float), (size_t)vocab, stdout);
    ef_slm_ctx_free(c);
    ef_slm_model_free(m);
    free(lg);
    free(ids);
    return 0;
}
