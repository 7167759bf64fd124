/*
 * Internal: the inference model object shared by model.c (construction,
 * checks) and forward.c (the forward pass).
 */
#ifndef EDGEFL_SLM_MODEL_H
#define EDGEFL_SLM_MODEL_H

#include "slm_internal.h"

/* A weight matrix: rows of `cols` elements, `row_bytes` apart. */
typedef struct ef__slm_mat {
    ef_slm_type type;
    const void *data;
    int64_t rows, cols;
    size_t row_bytes;
} ef__slm_mat;

typedef struct ef__slm_layer {
    const float *attn_norm, *ffn_norm; /* dim floats each (F32 copies) */
    ef__slm_mat wq, wk, wv, wo, w_gate, w_up, w_down;
} ef__slm_layer;

struct ef_slm_model {
    ef_slm_config cfg;
    int head_dim, kv_dim;
    ef__slm_mat tok_embd, output; /* output aliases tok_embd when tied */
    const float *output_norm;
    ef__slm_layer *layers;
    float *norms;     /* one block holding every norm vector */
    int64_t numel;    /* parameters */
    int64_t bytes;    /* weight bytes read per token (tensor data) */
    void *owner;      /* what keeps the tensor data alive (a GGUF file), or NULL */
    void (*owner_free)(void *owner);
};

/* Checks a configuration as ef_slm_model_new does (message without a prefix). */
ef_status ef__slm_check_config(const ef_slm_config *c);

/* The model and the tokens-per-pass of a context. */
const ef_slm_model *ef__slm_ctx_model(const ef_slm_ctx *c);
int ef__slm_ctx_batch(const ef_slm_ctx *c);

#endif /* EDGEFL_SLM_MODEL_H */
