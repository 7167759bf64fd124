/*
 * Local inference for small llama-style language models: weights in F32,
 * F16, Q8_0 or Q4_0 (ggml's block layouts) used in place (a GGUF file is
 * mapped read-only, quantized weights are never copied), a KV cache,
 * multi-threaded matrix kernels chosen at run time (scalar, AVX2,
 * AVX-512), batched prompt processing, sampling and streaming generation.
 *
 * The architecture is llama.cpp's "llama": token embedding; per layer
 * RMSNorm -> attention (q, k, v, o projections, grouped-query heads, RoPE
 * rotating adjacent pairs) -> residual, RMSNorm -> SwiGLU MLP -> residual;
 * final RMSNorm; output projection (tied to the embedding or not).
 *
 * Objects: an ef_slm_model holds the weights (shared, read-only, usable by
 * many contexts at once); an ef_slm_ctx holds one sequence's KV cache and
 * scratch buffers (one thread at a time); an ef_slm_sampler picks tokens.
 */
#ifndef EDGEFL_SLM_H
#define EDGEFL_SLM_H

#include "edgefl/core.h"
#include "edgefl/pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Tensor element types, numbered as in ggml / GGUF. */
typedef enum ef_slm_type {
    EF_SLM_F32 = 0,
    EF_SLM_F16 = 1,
    EF_SLM_Q4_0 = 2,
    EF_SLM_Q8_0 = 8
} ef_slm_type;

/* Name of a type ("f32", "f16", "q4_0", "q8_0"; "?" otherwise). */
EF_API const char *ef_slm_type_name(ef_slm_type t);

/* Kernel instruction sets. */
typedef enum ef_slm_isa {
    EF_SLM_ISA_AUTO = 0,   /* the best this CPU supports */
    EF_SLM_ISA_SCALAR = 1, /* portable C, always available */
    EF_SLM_ISA_AVX2 = 2,   /* AVX2 + FMA + F16C */
    EF_SLM_ISA_AVX512 = 3  /* AVX-512 F + BW + VL (+ the AVX2 set) */
} ef_slm_isa;

/*
 * Name of the kernel set `isa` resolves to on this CPU ("scalar", "avx2",
 * "avx512"), or NULL when the CPU (or the ef_cpu_limit mask / the
 * EDGEFL_CPU environment variable) does not allow it. Every set computes
 * bit-identical results.
 */
EF_API const char *ef_slm_isa_name(ef_slm_isa isa);

/* Model hyperparameters. */
typedef struct ef_slm_config {
    int vocab;       /* tokens */
    int dim;         /* embedding width */
    int n_layers;
    int n_heads;     /* query heads; head_dim = dim / n_heads (even) */
    int n_kv_heads;  /* key/value heads, dividing n_heads */
    int ffn_dim;     /* SwiGLU hidden width */
    int ctx_len;     /* training context (default context size) */
    float rms_eps;   /* RMSNorm epsilon, e.g. 1e-5 */
    float rope_theta;/* RoPE base, e.g. 10000 */
    int bos_id;      /* beginning-of-sequence token, -1 if none */
    int eos_id;      /* end-of-sequence token, -1 if none */
} ef_slm_config;

/* A weight tensor in memory: its type and its data (row-major W[out][in],
 * rows of `in` elements in `type`'s layout, no padding). */
typedef struct ef_slm_tensor {
    ef_slm_type type;
    const void *data;
} ef_slm_tensor;

/* One layer's weights: norms are vectors of dim; wq (dim x dim), wk and wv
 * (n_kv_heads*head_dim x dim), wo (dim x dim), w_gate and w_up (ffn_dim x
 * dim), w_down (dim x ffn_dim), as [out][in]. */
typedef struct ef_slm_layer_weights {
    ef_slm_tensor attn_norm, wq, wk, wv, wo;
    ef_slm_tensor ffn_norm, w_gate, w_up, w_down;
} ef_slm_layer_weights;

/* All weights. tok_embd is vocab x dim; output is vocab x dim, or data NULL
 * to tie it to tok_embd. `layers` has n_layers entries. */
typedef struct ef_slm_weights {
    ef_slm_tensor tok_embd, output_norm, output;
    const ef_slm_layer_weights *layers;
} ef_slm_weights;

typedef struct ef_slm_model ef_slm_model;

/*
 * Creates a model over weights already in memory. The configuration and
 * types are checked (norm vectors may be F32 or F16; matrices F32, F16,
 * Q8_0 or Q4_0, quantized ones with an input width divisible by 32). The
 * tensor data is NOT copied (norms converted to F32 are): it must stay
 * valid and unchanged until ef_slm_model_free. *out is freed with
 * ef_slm_model_free.
 */
EF_API ef_status ef_slm_model_new(ef_slm_model **out, const ef_slm_config *cfg,
                                  const ef_slm_weights *w);

/*
 * Loads a GGUF file of architecture "llama" (written by edgefl or by
 * llama.cpp's converters), mapped read-only: the weight matrices are used in
 * place, only the norm vectors are copied. Reads llama.embedding_length,
 * block_count, feed_forward_length, attention.head_count,
 * context_length (required), attention.head_count_kv (default head_count),
 * attention.layer_norm_rms_epsilon (1e-5), rope.freq_base (10000),
 * vocab_size (default: the token list's length), tokenizer.ggml.bos/
 * eos_token_id (-1), and the tensors token_embd, output_norm, output
 * (absent: tied), blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output,
 * ffn_norm, ffn_gate, ffn_up, ffn_down}.weight with their shapes checked.
 * Errors name the file and the key or tensor: EF_ERR_FORMAT for a missing
 * or malformed one (and the reader's own checks), EF_ERR_UNSUPPORTED for
 * another architecture, tensor types other than F32/F16/Q8_0/Q4_0 (norms
 * F32/F16), rope scaling or frequency factors, a rotary or key/value size
 * other than the head size, or bias tensors. *out: free with
 * ef_slm_model_free.
 */
EF_API ef_status ef_slm_model_load(ef_slm_model **out, const char *path);

/* The GGUF file a model loaded with ef_slm_model_load maps (for its
 * tokenizer and metadata), valid while the model lives; NULL for a model
 * made with ef_slm_model_new. */
struct ef_gguf;
EF_API const struct ef_gguf *ef_slm_model_gguf(const ef_slm_model *m);

/*
 * The byte-level BPE tokenizer stored in a GGUF file's tokenizer.ggml.*
 * arrays (tokens, token_type, merges), e.g. ef_slm_model_gguf's. Only
 * tokenizer.ggml.model "gpt2" with pre-tokenizer "gpt-2" (or none given) is
 * supported: EF_ERR_NOT_FOUND without a tokenizer, EF_ERR_UNSUPPORTED for
 * another kind, EF_ERR_FORMAT (and ef_tokenizer_from_vocab's checks) for
 * malformed arrays. *out: free with ef_tokenizer_free.
 */
struct ef_tokenizer;
EF_API ef_status ef_slm_tokenizer_from_gguf(const struct ef_gguf *g, struct ef_tokenizer **out);

/* Frees a model (and unmaps its file, for a loaded one). NULL is a no-op.
 * Free every context of the model first. */
EF_API void ef_slm_model_free(ef_slm_model *m);

/* The model's configuration (valid while the model lives). */
EF_API const ef_slm_config *ef_slm_model_config(const ef_slm_model *m);

/* Number of parameters (elements of all weight tensors). */
EF_API int64_t ef_slm_model_numel(const ef_slm_model *m);

/* Bytes of weight data the model reads (its file's tensor data). */
EF_API int64_t ef_slm_model_bytes(const ef_slm_model *m);

/* The type of most weight matrices (the layers' wq), for reports. */
EF_API ef_slm_type ef_slm_model_type(const ef_slm_model *m);

/* Context options; zero fields take defaults. */
typedef struct ef_slm_ctx_opts {
    int n_ctx;          /* KV cache positions (default: the model's ctx_len) */
    int n_batch;        /* tokens per forward pass in ef_slm_eval (default 64) */
    int n_threads;      /* threads when `pool` is NULL (default: online CPUs) */
    ef_pool *pool;      /* threads to use (borrowed); NULL: the context makes one */
    int kv_f32;         /* 1: F32 KV cache; 0 (default): F16, like llama.cpp */
    ef_slm_isa isa;     /* kernels (default AUTO); EF_ERR_UNSUPPORTED if the CPU lacks them */
} ef_slm_ctx_opts;

typedef struct ef_slm_ctx ef_slm_ctx;

/*
 * Creates an inference context (one token sequence) for model m, which must
 * outlive it. opts may be NULL. *out is freed with ef_slm_ctx_free.
 */
EF_API ef_status ef_slm_ctx_new(ef_slm_ctx **out, const ef_slm_model *m,
                                const ef_slm_ctx_opts *opts);

/* Frees a context (and its pool if it made one). NULL is a no-op. */
EF_API void ef_slm_ctx_free(ef_slm_ctx *c);

/* Tokens in the KV cache (the position the next token gets). */
EF_API int ef_slm_ctx_pos(const ef_slm_ctx *c);

/* KV cache size in positions. */
EF_API int ef_slm_ctx_size(const ef_slm_ctx *c);

/* Threads the context's passes run on. */
EF_API int ef_slm_ctx_threads(const ef_slm_ctx *c);

/* Name of the kernel set the context runs ("scalar", "avx2", "avx512"). */
EF_API const char *ef_slm_ctx_isa(const ef_slm_ctx *c);

/* Forgets tokens from position `pos` on (0 clears the sequence). */
EF_API ef_status ef_slm_ctx_rewind(ef_slm_ctx *c, int pos);

/*
 * Runs the model on n tokens appended to the sequence (positions pos ..
 * pos+n-1), in passes of at most n_batch tokens. logits (may be NULL)
 * receives vocab floats: for the last token, or with all_logits != 0 for
 * every token (n * vocab floats, token-major). Errors: EF_ERR_RANGE when
 * the cache has no room for n more tokens, EF_ERR_INVALID for a token id
 * outside [0, vocab); nothing is changed then.
 */
EF_API ef_status ef_slm_eval(ef_slm_ctx *c, const int32_t *tokens, int n, float *logits,
                             int all_logits);

/* Sampling parameters. temperature <= 0 means greedy (argmax, the lowest
 * id among equal maxima). Otherwise logits are divided by temperature, the
 * top_k most likely tokens are kept (0: all), then the smallest set whose
 * probability reaches top_p (>= 1: all), and one is drawn with the seeded
 * generator. The same seed and logits give the same tokens. */
typedef struct ef_slm_sampling {
    float temperature;
    int top_k;
    float top_p;
    uint64_t seed;
} ef_slm_sampling;

typedef struct ef_slm_sampler ef_slm_sampler;

/* Creates a sampler for vocab-sized logits. Checks the parameters (top_p in
 * (0, 1] or >= 1, top_k >= 0, temperature finite). */
EF_API ef_status ef_slm_sampler_new(ef_slm_sampler **out, const ef_slm_sampling *p, int vocab);

/* Frees a sampler. NULL is a no-op. */
EF_API void ef_slm_sampler_free(ef_slm_sampler *s);

/* Picks a token from vocab logits (not modified). */
EF_API int32_t ef_slm_sample(ef_slm_sampler *s, const float *logits);

/* Timings and counts of one ef_slm_generate call. */
typedef struct ef_slm_gen_stats {
    int n_prompt;           /* prompt tokens evaluated */
    int n_gen;              /* tokens generated */
    double prompt_seconds;  /* prompt processing (its logits included) */
    double gen_seconds;     /* from sampling the first generated token to sampling the
                               last: n_gen - 1 single-token passes, so generation
                               tokens/s = (n_gen - 1) / gen_seconds */
    int stopped_eos;        /* generation ended at the EOS token */
    int stopped_ctx;        /* generation ended because the context was full */
} ef_slm_gen_stats;

/* Called with each generated token; return nonzero to stop. */
typedef int (*ef_slm_token_fn)(void *user, int32_t token);

/*
 * Evaluates the prompt (appended to the context's sequence), then samples up
 * to n_gen tokens one at a time, calling on_token (may be NULL) with each
 * and feeding it back. Stops early at the model's EOS token when
 * stop_at_eos (the EOS token is reported and counted), when on_token
 * returns nonzero, or when the context is full. The first generated token
 * comes from the prompt's logits; see ef_slm_gen_stats for the timings.
 * stats may be NULL.
 */
EF_API ef_status ef_slm_generate(ef_slm_ctx *c, ef_slm_sampler *s, const int32_t *prompt,
                                 int n_prompt, int n_gen, int stop_at_eos,
                                 ef_slm_token_fn on_token, void *user, ef_slm_gen_stats *stats);

/*
 * Scores a token sequence: the model reads it in windows of `window` tokens
 * (0: the context size) that overlap by one token, each starting from an
 * empty cache, and every token after the first is predicted from the ones
 * before it in its window. *nll receives the summed negative
 * log-likelihood in nats, *n_scored the number of predicted tokens (n-1).
 * The context's sequence is cleared. Perplexity = exp(nll / n_scored).
 */
EF_API ef_status ef_slm_score(ef_slm_ctx *c, const int32_t *tokens, int64_t n, int window,
                              double *nll, int64_t *n_scored);

/*
 * Incremental UTF-8 for streaming text made of tokens whose bytes may split
 * a character: bytes go in, complete well-formed text comes out, with each
 * invalid byte replaced by U+FFFD.
 */
typedef struct ef_slm_utf8 {
    unsigned char pend[4];
    int n_pend;
} ef_slm_utf8;

/*
 * Feeds n bytes; writes the text that is now complete to out (room for
 * 3*n + 12 bytes) and returns its length. With n == 0 and flush != 0, an
 * incomplete sequence left at the end comes out as U+FFFD.
 */
EF_API size_t ef_slm_utf8_feed(ef_slm_utf8 *u, const void *bytes, size_t n, int flush, char *out);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_SLM_H */
