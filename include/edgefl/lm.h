/*
 * Llama-style decoder-only transformer language models: the model (forward
 * and backward in C on the nn kernels), and its training (AdamW, cosine
 * schedule with warm-up, global gradient clipping, evaluation in bits per
 * byte, checkpoints with exact resume).
 *
 * Architecture (llama): token embedding; per layer x += attn(rmsnorm(x))
 * with q, k, v, o projections (no biases), grouped-query heads and RoPE in
 * llama.cpp's adjacent-pair layout (see ef_rope_table in nn.h), then
 * x += down(silu(gate(h)) * up(h)) with h = rmsnorm(x); a final RMSNorm and
 * the output projection, tied to the embedding or not. Causal attention
 * with scale 1/sqrt(head_dim); loss: mean cross-entropy of next tokens.
 *
 * Parameters live in one flat float vector (an ef_params table of named
 * views, tensor names as llama.cpp's GGUF files use them), in this order:
 *   token_embd.weight                          (vocab, dim)
 *   for each layer N:
 *     blk.N.attn_q.weight                      (dim, dim)
 *     blk.N.attn_k.weight                      (kv_dim, dim)
 *     blk.N.attn_v.weight                      (kv_dim, dim)
 *     blk.N.attn_output.weight                 (dim, dim)
 *     blk.N.ffn_gate.weight                    (ffn_dim, dim)
 *     blk.N.ffn_up.weight                      (ffn_dim, dim)
 *     blk.N.ffn_down.weight                    (dim, ffn_dim)
 *   output.weight (untied models only)         (vocab, dim)
 *   for each layer N: blk.N.attn_norm.weight, blk.N.ffn_norm.weight  (dim)
 *   output_norm.weight                         (dim)
 * with kv_dim = n_kv_heads * dim / n_heads and matrices row-major
 * W[out][in] (y = W x). q, k, v are adjacent so one matrix product computes
 * all three, as are gate and up; the matrices come first and the RMSNorm
 * gains last, so weight decay applies to exactly the first
 * ef_lm_decay_numel() floats.
 */
#ifndef EDGEFL_LM_H
#define EDGEFL_LM_H

#include "edgefl/core.h"
#include "edgefl/io.h"
#include "edgefl/params.h"
#include "edgefl/pool.h"
#include "edgefl/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ef_lm_config {
    int vocab;        /* tokens, 2 .. 2^24 */
    int dim;          /* model width, a multiple of n_heads */
    int n_layers;     /* >= 1 */
    int n_heads;      /* head_dim = dim / n_heads must be even (RoPE pairs) */
    int n_kv_heads;   /* divides n_heads; n_heads: multi-head attention */
    int ffn_dim;      /* SwiGLU hidden width */
    int max_seq;      /* context length: the longest sequence the model sees */
    float norm_eps;   /* RMSNorm epsilon (1e-5) */
    float rope_theta; /* RoPE base (10000) */
    int tied;         /* nonzero: the output projection is token_embd.weight */
} ef_lm_config;

/* A small default: dim 256, 4 layers, 4 heads (and kv heads), ffn
 * ef_lm_default_ffn(256), max_seq 256, eps 1e-5, theta 10000, tied; vocab 0
 * (the caller sets it). */
EF_API ef_lm_config ef_lm_config_default(void);

/* Llama's SwiGLU width rule: 8/3 dim rounded up to a multiple of 32. */
EF_API int ef_lm_default_ffn(int dim);

/* Checks every field (ranges above); EF_ERR_INVALID naming the field. */
EF_API ef_status ef_lm_config_check(const ef_lm_config *cfg);

/* Number of parameters of a (valid) config. */
EF_API size_t ef_lm_config_numel(const ef_lm_config *cfg);

typedef struct ef_lm ef_lm;

/*
 * Builds a model with zeroed parameters (call ef_lm_init or load weights)
 * and activations for up to max_batch sequences of cfg->max_seq tokens,
 * allocated once. `pool` (may be NULL) runs every kernel and must outlive
 * the model. EF_ERR_INVALID for a bad config, EF_ERR_RANGE when the sizes
 * overflow, EF_ERR_NOMEM. Free with ef_lm_free.
 */
EF_API ef_status ef_lm_new(ef_lm **out, const ef_lm_config *cfg, int max_batch, ef_pool *pool);

/* Frees the model. NULL is a no-op. */
EF_API void ef_lm_free(ef_lm *m);

/* The configuration the model was built with. */
EF_API const ef_lm_config *ef_lm_get_config(const ef_lm *m);

/* The largest batch the activations were sized for. */
EF_API int ef_lm_max_batch(const ef_lm *m);

/* The pool given to ef_lm_new (may be NULL). */
EF_API ef_pool *ef_lm_pool(const ef_lm *m);

/*
 * Initialization from an ef_rng seeded with `seed`: every matrix normal
 * with std 0.02, except attn_output and ffn_down (the projections into the
 * residual stream) with std 0.02 / sqrt(2 n_layers) (GPT-2's scaling); RMSNorm
 * gains 1. The same seed gives the same bits.
 */
EF_API void ef_lm_init(ef_lm *m, uint64_t seed);

/* The parameters (named views into the flat vector); owned by the model. */
EF_API ef_params *ef_lm_params(ef_lm *m);

/* The gradient vector, same layout; owned by the model. */
EF_API float *ef_lm_grads(ef_lm *m);

/* Number of parameters. */
EF_API size_t ef_lm_numel(const ef_lm *m);

/* Number of leading parameters that are matrices (embedding, projections),
 * i.e. those weight decay applies to; the RMSNorm gains follow. */
EF_API size_t ef_lm_decay_numel(const ef_lm *m);

/* Bytes of activation memory the model holds. */
EF_API size_t ef_lm_activation_bytes(const ef_lm *m);

/* Floating-point operations of one training step on B sequences of T tokens
 * (matrix products and attention, forward + backward; a multiply-add counts
 * as 2). For throughput reports. */
EF_API double ef_lm_train_flops(const ef_lm *m, int B, int T);

/* Zeroes the gradient vector. */
EF_API void ef_lm_zero_grad(ef_lm *m);

/*
 * Forward pass on ids (B, T), 1 <= B <= max_batch, 1 <= T <= max_seq. With
 * targets (B, T) (the next token of every position) also computes the
 * per-token losses and sets *loss (may be NULL) to their mean; targets NULL
 * computes only the logits. ids and targets are copied. EF_ERR_INVALID for
 * bad B or T, EF_ERR_RANGE for a token outside [0, vocab) (nothing run).
 */
EF_API ef_status ef_lm_forward(ef_lm *m, const int32_t *ids, const int32_t *targets, int B,
                               int T, float *loss);

/* Logits (B*T, vocab) of the last forward pass; owned by the model, valid
 * until the next forward or backward (backward reuses the buffer). */
EF_API const float *ef_lm_logits(const ef_lm *m);

/* Per-token losses (B*T) in nats of the last forward pass with targets. */
EF_API const float *ef_lm_losses(const ef_lm *m);

/*
 * Back-propagates sum_i dlosses[i] * loss_i of the last forward pass into
 * the gradient vector, ACCUMULATING (zero it first with ef_lm_zero_grad).
 * dlosses (B*T) or NULL for the mean loss (1/(B*T) each). Needs a forward
 * with targets since the last backward, else EF_ERR_STATE. Overwrites the
 * logits.
 */
EF_API ef_status ef_lm_backward(ef_lm *m, const float *dlosses);

/*
 * Saves the parameters as safetensors (atomically), with the config in the
 * metadata (keys "edgefl.arch" = "llama" and "edgefl.lm.<field>") plus
 * `extra` pairs. Loadable by numpy and PyTorch.
 */
EF_API ef_status ef_lm_save(ef_lm *m, const char *path, const ef_st_kv *extra, size_t n_extra);

/* Reads the config of a file written by ef_lm_save (or a training
 * checkpoint). EF_ERR_FORMAT when the metadata is missing or bad. */
EF_API ef_status ef_lm_read_config(const char *path, ef_lm_config *cfg);

/* A new model from such a file: config from the metadata, parameters
 * loaded; activations for max_batch sequences. */
EF_API ef_status ef_lm_load(ef_lm **out, const char *path, int max_batch, ef_pool *pool);

/*
 * Writes the model as a GGUF file loadable by llama.cpp, atomically:
 * architecture "llama" with the llama.* hyperparameters llama.cpp reads
 * (context_length = max_seq, rope.dimension_count = head_dim, ...), the
 * tokenizer (tokenizer.ggml.model "gpt2" with its tokens, token types and
 * merges; <|endoftext|> as BOS and EOS, add_bos_token true), general.name
 * `name` (NULL: "edgefl-lm"), file type ALL_F32 and every tensor as F32
 * under its llama.cpp name (output.weight absent when tied). q and k are
 * not permuted: the model's RoPE already is llama.cpp's. `tok` must have
 * exactly the model's vocabulary size (EF_ERR_INVALID).
 */
EF_API ef_status ef_lm_export_gguf(ef_lm *m, const ef_tokenizer *tok, const char *path,
                                   const char *name);

/*
 * Reads a llama GGUF file (edgefl's export, or another llama-architecture
 * file with a "gpt2" byte-level BPE tokenizer) into a new model with
 * activations for max_batch sequences of llama.context_length tokens:
 * hyperparameters from the llama.* keys, tied when output.weight is absent,
 * tensors of type F32, F16, BF16, Q8_0 or Q4_0 expanded to F32. *tok (may
 * be NULL) receives the file's tokenizer. EF_ERR_FORMAT / EF_ERR_UNSUPPORTED
 * name the key or tensor at fault (partial RoPE, another tokenizer model).
 */
EF_API ef_status ef_lm_load_gguf(ef_lm **out, ef_tokenizer **tok, const char *path,
                                 int max_batch, ef_pool *pool);

/* ---- training -------------------------------------------------------------- */

/* Hyperparameters of a training run. */
typedef struct ef_lm_train_config {
    int batch;          /* sequences per step, <= the model's max_batch */
    int seq;            /* tokens per sequence, <= max_seq */
    uint64_t steps;     /* total steps of the run (the cosine schedule's length) */
    uint64_t warmup;    /* linear warm-up steps */
    float lr;           /* peak learning rate */
    float min_lr;       /* the cosine decays from lr to min_lr */
    float weight_decay; /* decoupled (AdamW), matrices only */
    float beta1, beta2, eps;
    float clip;         /* global gradient-norm clip; 0 disables */
    uint64_t seed;      /* data order */
} ef_lm_train_config;

/* batch 16, seq 256, steps 1000, warmup 100, lr 1e-3, min_lr 1e-4,
 * weight decay 0.1, betas (0.9, 0.95), eps 1e-8, clip 1.0, seed 1. */
EF_API ef_lm_train_config ef_lm_train_defaults(void);

typedef struct ef_lm_trainer ef_lm_trainer;

/*
 * A trainer for `m` on the token stream tokens[0..n) (borrowed: must
 * outlive the trainer). Batches: the stream is cut into windows of seq + 1
 * tokens (inputs and shifted targets) starting at a per-epoch offset in
 * [0, seq) and visited in a per-epoch random order, both drawn from the
 * seed and the epoch number, so (epoch, position) is the whole data state.
 * AdamW moments are zeroed. EF_ERR_INVALID for bad hyperparameters, a
 * batch or seq the model cannot take, or a stream shorter than
 * seq + 1 tokens, or a token outside the vocabulary.
 */
EF_API ef_status ef_lm_trainer_new(ef_lm_trainer **out, ef_lm *m, const ef_lm_train_config *cfg,
                                   const int32_t *tokens, size_t n);

/* Frees the trainer (not the model). NULL is a no-op. */
EF_API void ef_lm_trainer_free(ef_lm_trainer *t);

/* The configuration (after a resume: the checkpoint's). */
EF_API const ef_lm_train_config *ef_lm_trainer_config(const ef_lm_trainer *t);

/* What one step did. */
typedef struct ef_lm_step_info {
    uint64_t step;    /* 1-based number of the step just taken */
    float loss;       /* mean training loss of its batch (nats/token) */
    float lr;         /* learning rate it used */
    double grad_norm; /* global gradient norm before clipping */
    uint64_t epoch;   /* 0-based epoch of the batch's last window */
} ef_lm_step_info;

/*
 * One training step: next batch, forward, backward, clip, AdamW with the
 * scheduled rate. EF_ERR_STATE once cfg.steps are done; EF_ERR_RANGE (and
 * no update) when the loss or gradient norm is not finite.
 */
EF_API ef_status ef_lm_trainer_step(ef_lm_trainer *t, ef_lm_step_info *info);

/* Steps taken so far (including those restored by a resume). */
EF_API uint64_t ef_lm_trainer_steps_done(const ef_lm_trainer *t);

/*
 * Writes a checkpoint atomically: one safetensors file with the model's
 * tensors, the AdamW moments ("optim.m", "optim.v", flat) and in the
 * metadata the model config, the training config, the step and the data
 * position (epoch, window), plus `extra` pairs. Enough to continue the run
 * bit for bit (same thread count).
 */
EF_API ef_status ef_lm_trainer_save(ef_lm_trainer *t, const char *path, const ef_st_kv *extra,
                                    size_t n_extra);

/*
 * Restores a checkpoint into the trainer and its model: parameters, AdamW
 * moments, step, data position and training config. The model config must
 * match the file's and the token stream must be the one trained on (its
 * length and a hash are recorded and compared), else EF_ERR_INVALID; on any
 * error nothing changes.
 */
EF_API ef_status ef_lm_trainer_resume(ef_lm_trainer *t, const char *path);

/*
 * Reads the training config and step of a checkpoint without loading it.
 * Either output may be NULL.
 */
EF_API ef_status ef_lm_checkpoint_info(const char *path, ef_lm_train_config *cfg,
                                       uint64_t *steps_done);

/*
 * Evaluates next-token loss on tokens[0..n): every token from index 1 on is
 * predicted once, in windows of up to T tokens of context (non-overlapping;
 * batches of up to B windows). *loss (nats per predicted token) and, with
 * token_bytes (vocab; the UTF-8 length of each token's text, 0 for special
 * tokens), *bpb = sum of NLL / ln 2 / bytes of the predicted tokens. Any
 * output may be NULL. EF_ERR_INVALID for n < 2 or B, T out of range.
 */
EF_API ef_status ef_lm_evaluate(ef_lm *m, const int32_t *tokens, size_t n, int B, int T,
                                const uint32_t *token_bytes, double *loss, double *bpb,
                                uint64_t *n_bytes);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_LM_H */
