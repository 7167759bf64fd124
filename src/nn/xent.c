/*
 * Fused softmax + cross-entropy: the loss of classification heads. Fusing
 * keeps the backward pass to one subtraction (probs - onehot) and avoids
 * computing log-softmax twice.
 */
#include <math.h>

#include "nn_internal.h"

typedef struct xent_ctx {
    float *losses, *probs, *dlogits;
    const float *logits, *dlosses, *cprobs;
    const int32_t *targets;
    int V;
} xent_ctx;

static void xent_fwd_rows(void *c, int64_t b, int64_t e, int thread) {
    EF_UNUSED(thread);
    xent_ctx *x = c;
    int V = x->V;
    for (int64_t i = b; i < e; i++) {
        const float *lg = x->logits + i * V; // (V)
        float *p = x->probs + i * V;         // (V)
        float maxv = lg[0];
        for (int j = 1; j < V; j++) maxv = lg[j] > maxv ? lg[j] : maxv;
        double sum = 0.0;
        for (int j = 0; j < V; j++) {
            p[j] = expf(lg[j] - maxv);
            sum += p[j];
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < V; j++) p[j] *= inv;
        /* log-sum-exp form: exact even when the target's probability underflows */
        x->losses[i] = (float)(log(sum) - (double)(lg[x->targets[i]] - maxv));
    }
}

void ef_softmax_xent_forward(float *losses, float *probs, const float *logits,
                             const int32_t *targets, int N, int V, ef_pool *pool) {
    // losses (N); probs, logits (N, V); targets (N)
    xent_ctx x = {.losses = losses, .probs = probs, .logits = logits, .targets = targets, .V = V};
    if ((int64_t)N * V < 65536) pool = NULL; /* not worth waking threads */
    ef_pool_for(pool, N, xent_fwd_rows, &x);
}

static void xent_bwd_rows(void *c, int64_t b, int64_t e, int thread) {
    EF_UNUSED(thread);
    xent_ctx *x = c;
    int V = x->V;
    for (int64_t i = b; i < e; i++) {
        float *dl = x->dlogits + i * V;
        const float *p = x->cprobs + i * V;
        float g = x->dlosses[i];
        int t = x->targets[i];
        float keep = dl[t];
        for (int j = 0; j < V; j++) dl[j] += p[j] * g;
        /* (p - 1) g for the target rather than p g - g: accurate when p is near 1 */
        dl[t] = keep + (p[t] - 1.0f) * g;
    }
}

void ef_softmax_xent_backward(float *dlogits, const float *dlosses, const float *probs,
                              const int32_t *targets, int N, int V, ef_pool *pool) {
    // dlogits, probs (N, V); dlosses, targets (N)
    xent_ctx x = {.dlogits = dlogits, .dlosses = dlosses, .cprobs = probs, .targets = targets,
                  .V = V};
    if ((int64_t)N * V < 65536) pool = NULL;
    ef_pool_for(pool, N, xent_bwd_rows, &x);
}

void ef_softmax_xent_forward_ref(float *losses, float *probs, const float *logits,
                                 const int32_t *targets, int N, int V) {
    for (int i = 0; i < N; i++) {
        const float *lg = logits + (size_t)i * V;
        double maxv = lg[0];
        for (int j = 1; j < V; j++)
            if (lg[j] > maxv) maxv = lg[j];
        double sum = 0.0;
        for (int j = 0; j < V; j++) sum += exp(lg[j] - maxv);
        for (int j = 0; j < V; j++) probs[(size_t)i * V + j] = (float)(exp(lg[j] - maxv) / sum);
        losses[i] = (float)(log(sum) + maxv - lg[targets[i]]);
    }
}

void ef_softmax_xent_backward_ref(float *dlogits, const float *dlosses, const float *probs,
                                  const int32_t *targets, int N, int V) {
    for (int i = 0; i < N; i++)
        for (int j = 0; j < V; j++) {
            float indicator = j == targets[i] ? 1.0f : 0.0f;
            dlogits[(size_t)i * V + j] += (probs[(size_t)i * V + j] - indicator) * dlosses[i];
        }
}
