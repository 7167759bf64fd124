/*
 * Neural-network kernels. Each op has `ef_<op>_forward` / `ef_<op>_backward`
 * (optimized: BLAS, SIMD chosen at run time, thread pool) and a naive
 * reference `ef_<op>_forward_ref` / `ef_<op>_backward_ref` (plain loops, one
 * thread) that the tests hold the optimized path to.
 *
 * Conventions (from llm.c):
 * - outputs first, then inputs, then sizes; gradients carry a `d` prefix;
 * - every buffer's shape is given in a comment, row-major, e.g. (N, C);
 * - backward kernels ACCUMULATE (+=) into gradient buffers, so callers zero
 *   the gradients before a backward pass; a NULL gradient pointer skips that
 *   gradient (e.g. dinp of the first layer, dbias of a bias-free layer);
 * - `pool` may be NULL (single thread); results are identical for a given
 *   thread count;
 * - `work` is caller-owned scratch of the size the matching *_workspace
 *   function returns (in floats), so kernels never allocate.
 */
#ifndef EDGEFL_NN_H
#define EDGEFL_NN_H

#include "edgefl/core.h"
#include "edgefl/pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- linear: out = inp @ weight^T + bias ------------------------------- */

/* out (N, OC); inp (N, IC); weight (OC, IC); bias (OC) or NULL. Uses cblas_sgemm. */
EF_API void ef_linear_forward(float *out, const float *inp, const float *weight,
                              const float *bias, int N, int IC, int OC, ef_pool *pool);
/* dinp (N, IC) or NULL; dweight (OC, IC); dbias (OC) or NULL; dout (N, OC). */
EF_API void ef_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, int N, int IC, int OC,
                               ef_pool *pool);
EF_API void ef_linear_forward_ref(float *out, const float *inp, const float *weight,
                                  const float *bias, int N, int IC, int OC);
EF_API void ef_linear_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
                                   const float *inp, const float *weight, int N, int IC, int OC);

/* ---- conv2d (NCHW, square stride and zero padding, groups = 1) ---------- */

typedef struct ef_conv2d_desc {
    int N, C, H, W; /* input (N, C, H, W) */
    int OC, KH, KW; /* weight (OC, C, KH, KW) */
    int stride, pad;
} ef_conv2d_desc;

/* Output height and width: (H + 2*pad - KH) / stride + 1, likewise W. */
EF_API int ef_conv2d_out_h(const ef_conv2d_desc *d);
EF_API int ef_conv2d_out_w(const ef_conv2d_desc *d);

/* Scratch floats that ef_conv2d_forward/backward need with `n_threads`. */
EF_API size_t ef_conv2d_workspace(const ef_conv2d_desc *d, int n_threads);

/* out (N, OC, OH, OW); inp (N, C, H, W); weight (OC, C, KH, KW); bias (OC) or NULL. */
EF_API void ef_conv2d_forward(float *out, const float *inp, const float *weight,
                              const float *bias, const ef_conv2d_desc *d, float *work,
                              ef_pool *pool);
/* dinp (N, C, H, W) or NULL; dweight (OC, C, KH, KW); dbias (OC) or NULL; dout (N, OC, OH, OW). */
EF_API void ef_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, const ef_conv2d_desc *d,
                               float *work, ef_pool *pool);
EF_API void ef_conv2d_forward_ref(float *out, const float *inp, const float *weight,
                                  const float *bias, const ef_conv2d_desc *d);
EF_API void ef_conv2d_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
                                   const float *inp, const float *weight,
                                   const ef_conv2d_desc *d);

/* ---- max-pool 2-D (NCHW, no padding) ------------------------------------ */

/* out (N, C, OH, OW) with OH = (H - K) / stride + 1; argmax (N, C, OH, OW):
 * index within the input plane (h * W + w) of each maximum (first on ties). */
EF_API void ef_maxpool2d_forward(float *out, int32_t *argmax, const float *inp, int N, int C,
                                 int H, int W, int K, int stride, ef_pool *pool);
/* dinp (N, C, H, W); dout and argmax (N, C, OH, OW). */
EF_API void ef_maxpool2d_backward(float *dinp, const float *dout, const int32_t *argmax, int N,
                                  int C, int H, int W, int K, int stride, ef_pool *pool);
EF_API void ef_maxpool2d_forward_ref(float *out, int32_t *argmax, const float *inp, int N,
                                     int C, int H, int W, int K, int stride);
EF_API void ef_maxpool2d_backward_ref(float *dinp, const float *dout, const int32_t *argmax,
                                      int N, int C, int H, int W, int K, int stride);

/* ---- element-wise activations ------------------------------------------ */

/* out (n) = max(inp, 0); may run in place (out == inp). */
EF_API void ef_relu_forward(float *out, const float *inp, size_t n);
/* dinp (n) += dout * (out > 0); `out` is the forward output. */
EF_API void ef_relu_backward(float *dinp, const float *dout, const float *out, size_t n);
EF_API void ef_relu_forward_ref(float *out, const float *inp, size_t n);
EF_API void ef_relu_backward_ref(float *dinp, const float *dout, const float *out, size_t n);

/* GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
EF_API void ef_gelu_forward(float *out, const float *inp, size_t n);
/* dinp (n) += dout * gelu'(inp). */
EF_API void ef_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n);
EF_API void ef_gelu_forward_ref(float *out, const float *inp, size_t n);
EF_API void ef_gelu_backward_ref(float *dinp, const float *dout, const float *inp, size_t n);

/* ---- residual add ------------------------------------------------------- */

/* out (n) = a + b. */
EF_API void ef_residual_forward(float *out, const float *a, const float *b, size_t n);
/* da (n) += dout; db (n) += dout. */
EF_API void ef_residual_backward(float *da, float *db, const float *dout, size_t n);
EF_API void ef_residual_forward_ref(float *out, const float *a, const float *b, size_t n);
EF_API void ef_residual_backward_ref(float *da, float *db, const float *dout, size_t n);

/* ---- softmax cross-entropy (fused) -------------------------------------- */

/* losses (N) = -log softmax(logits)[target]; probs (N, V) = softmax(logits);
 * logits (N, V); targets (N) in [0, V). Numerically stable (max-subtracted). */
EF_API void ef_softmax_xent_forward(float *losses, float *probs, const float *logits,
                                    const int32_t *targets, int N, int V, ef_pool *pool);
/* dlogits (N, V) += (probs - onehot(target)) * dlosses[i]; dlosses (N). */
EF_API void ef_softmax_xent_backward(float *dlogits, const float *dlosses, const float *probs,
                                     const int32_t *targets, int N, int V, ef_pool *pool);
EF_API void ef_softmax_xent_forward_ref(float *losses, float *probs, const float *logits,
                                        const int32_t *targets, int N, int V);
EF_API void ef_softmax_xent_backward_ref(float *dlogits, const float *dlosses,
                                         const float *probs, const int32_t *targets, int N,
                                         int V);

/* ---- embedding lookup ---------------------------------------------------- */

/* out (N, C) = table[ids[i]]; ids (N); table (V, C). Returns EF_ERR_RANGE
 * (out untouched) if any id is outside [0, V). */
EF_API ef_status ef_embedding_forward(float *out, const int32_t *ids, const float *table, int N,
                                      int V, int C);
/* dtable (V, C) += scatter of dout (N, C) rows by ids (ids already checked). */
EF_API void ef_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N,
                                  int C);
EF_API ef_status ef_embedding_forward_ref(float *out, const int32_t *ids, const float *table,
                                          int N, int V, int C);
EF_API void ef_embedding_backward_ref(float *dtable, const float *dout, const int32_t *ids,
                                      int N, int C);

/* ---- LayerNorm over the last dimension ---------------------------------- */

/* out (N, C); mean (N) and rstd (N) saved for backward; inp (N, C);
 * weight (C); bias (C) or NULL; eps e.g. 1e-5. */
EF_API void ef_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                                 const float *weight, const float *bias, int N, int C, float eps,
                                 ef_pool *pool);
/* dinp (N, C); dweight (C); dbias (C) or NULL; dout (N, C). */
EF_API void ef_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                  const float *inp, const float *weight, const float *mean,
                                  const float *rstd, int N, int C, ef_pool *pool);
EF_API void ef_layernorm_forward_ref(float *out, float *mean, float *rstd, const float *inp,
                                     const float *weight, const float *bias, int N, int C,
                                     float eps);
EF_API void ef_layernorm_backward_ref(float *dinp, float *dweight, float *dbias,
                                      const float *dout, const float *inp, const float *weight,
                                      const float *mean, const float *rstd, int N, int C);

/* ---- RMSNorm over the last dimension ------------------------------------ */

/* out (N, C) = inp * rstd * weight; rstd (N) = 1/sqrt(mean(inp^2) + eps). */
EF_API void ef_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight,
                               int N, int C, float eps, ef_pool *pool);
/* dinp (N, C); dweight (C); dout (N, C). */
EF_API void ef_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                                const float *weight, const float *rstd, int N, int C,
                                ef_pool *pool);
EF_API void ef_rmsnorm_forward_ref(float *out, float *rstd, const float *inp,
                                   const float *weight, int N, int C, float eps);
EF_API void ef_rmsnorm_backward_ref(float *dinp, float *dweight, const float *dout,
                                    const float *inp, const float *weight, const float *rstd,
                                    int N, int C);

/* ---- causal multi-head self-attention (with grouped-query heads) -------- */

/*
 * q (B, T, NH*HS), k and v (B, T, NKV*HS), NH a multiple of NKV (query head h
 * uses key/value head h / (NH/NKV)). att (B, NH, T, T) receives the softmax
 * probabilities (entries above the diagonal are 0) for backward.
 * out (B, T, NH*HS) = softmax(q k^T / sqrt(HS), causal) v.
 */
EF_API void ef_attention_forward(float *out, float *att, const float *q, const float *k,
                                 const float *v, int B, int T, int NH, int NKV, int HS,
                                 ef_pool *pool);
/* Scratch floats ef_attention_backward needs with `n_threads`. */
EF_API size_t ef_attention_workspace(int B, int T, int NH, int NKV, int HS, int n_threads);
/* dq (B, T, NH*HS), dk and dv (B, T, NKV*HS) accumulate; dout (B, T, NH*HS);
 * att from the forward pass. */
EF_API void ef_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                                  const float *att, const float *q, const float *k,
                                  const float *v, int B, int T, int NH, int NKV, int HS,
                                  float *work, ef_pool *pool);
EF_API void ef_attention_forward_ref(float *out, float *att, const float *q, const float *k,
                                     const float *v, int B, int T, int NH, int NKV, int HS);
EF_API void ef_attention_backward_ref(float *dq, float *dk, float *dv, const float *dout,
                                      const float *att, const float *q, const float *k,
                                      const float *v, int B, int T, int NH, int NKV, int HS);

/* ---- rotary position embedding (RoPE), llama.cpp's "llama" layout ------- */

/*
 * Within each head of size HS (even), the adjacent pair (x[2i], x[2i+1]) at
 * position t is rotated by the angle t * theta^(-2i/HS) (GGML rope mode
 * NORMAL, as llama.cpp applies it to architecture "llama"); positions are
 * 0..T-1 within each sequence.
 * cs (T, HS/2, 2) receives cos and sin of every angle (computed in double).
 */
EF_API void ef_rope_table(float *cs, int T, int HS, float theta);
/* out, inp (B, T, NH*HS), may be the same buffer; cs from ef_rope_table. */
EF_API void ef_rope_forward(float *out, const float *inp, const float *cs, int B, int T, int NH,
                            int HS, ef_pool *pool);
/* dinp (B, T, NH*HS) += rotation of dout (B, T, NH*HS) by the opposite angles. */
EF_API void ef_rope_backward(float *dinp, const float *dout, const float *cs, int B, int T,
                             int NH, int HS, ef_pool *pool);
/* References: angles computed in double from theta, no table. */
EF_API void ef_rope_forward_ref(float *out, const float *inp, int B, int T, int NH, int HS,
                                float theta);
EF_API void ef_rope_backward_ref(float *dinp, const float *dout, int B, int T, int NH, int HS,
                                 float theta);

/* ---- SwiGLU: out = silu(gate) * up, silu(g) = g sigmoid(g) --------------- */

/* out (N, F); gate and up (N, F) with rows `ld` floats apart (ld = F for
 * separate buffers, ld = 2F with up = gate + F for rows [gate | up]). */
EF_API void ef_swiglu_forward(float *out, const float *gate, const float *up, int N, int F,
                              int ld, ef_pool *pool);
/* dgate, dup (N, F) with stride ld accumulate (either may be NULL); dout (N, F). */
EF_API void ef_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                               const float *up, int N, int F, int ld, ef_pool *pool);
EF_API void ef_swiglu_forward_ref(float *out, const float *gate, const float *up, int N, int F,
                                  int ld);
EF_API void ef_swiglu_backward_ref(float *dgate, float *dup, const float *dout,
                                   const float *gate, const float *up, int N, int F, int ld);

/* ---- gradient-norm clipping (global L2 over one flat vector) ------------- */

/* ||g||_2 of g (n), summed in double in a fixed order: the same bits for
 * every thread count. */
EF_API double ef_grad_norm(const float *g, size_t n, ef_pool *pool);
/*
 * Returns ||g||_2 before clipping and, when max_norm > 0 and
 * max_norm / (norm + 1e-6) < 1, scales g by that factor in place
 * (torch.nn.utils.clip_grad_norm_). A NaN or infinite norm is returned and
 * g is left unchanged: the caller decides (skip the step, stop).
 */
EF_API double ef_grad_clip(float *g, size_t n, float max_norm, ef_pool *pool);
EF_API double ef_grad_clip_ref(float *g, size_t n, float max_norm);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_NN_H */
