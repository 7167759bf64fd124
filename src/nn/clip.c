/*
 * Gradient-norm clipping over one flat gradient vector (so the norm is the
 * global L2 norm over all parameters), with torch.nn.utils.clip_grad_norm_'s
 * rule: scale by max_norm / (norm + 1e-6) when that factor is below 1.
 *
 * The sum of squares is taken in double over a fixed split of the vector
 * into EF_CLIP_CHUNKS chunks (whatever the thread count) added in order, so
 * the norm, and the clipped gradients, are the same bits for any pool.
 */
#include <math.h>

#include "nn_internal.h"

#define EF_CLIP_CHUNKS 64

typedef struct clip_ctx {
    float *g;
    size_t n;
    double part[EF_CLIP_CHUNKS];
    float scale;
} clip_ctx;

static void chunk_range(size_t n, int64_t k, size_t *b, size_t *e) {
    int64_t bb, ee;
    ef_split_range((int64_t)n, (int)k, EF_CLIP_CHUNKS, &bb, &ee);
    *b = (size_t)bb;
    *e = (size_t)ee;
}

static void sumsq_chunks(void *vctx, int64_t begin, int64_t end, int thread) {
    EF_UNUSED(thread);
    clip_ctx *c = vctx;
    for (int64_t k = begin; k < end; k++) {
        size_t b, e;
        chunk_range(c->n, k, &b, &e);
        const float *restrict g = c->g;
        double acc[4] = {0, 0, 0, 0};
        size_t i = b;
        for (; i + 4 <= e; i += 4)
            for (int j = 0; j < 4; j++) acc[j] += (double)g[i + j] * (double)g[i + j];
        double s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
        for (; i < e; i++) s += (double)g[i] * (double)g[i];
        c->part[k] = s;
    }
}

static void scale_chunks(void *vctx, int64_t begin, int64_t end, int thread) {
    EF_UNUSED(thread);
    clip_ctx *c = vctx;
    for (int64_t k = begin; k < end; k++) {
        size_t b, e;
        chunk_range(c->n, k, &b, &e);
        for (size_t i = b; i < e; i++) c->g[i] *= c->scale;
    }
}

double ef_grad_norm(const float *g, size_t n, ef_pool *pool) {
    // g (n)
    clip_ctx c = {.g = (float *)g, .n = n};
    if (n < 65536) pool = NULL;
    ef_pool_for(pool, EF_CLIP_CHUNKS, sumsq_chunks, &c);
    double s = 0.0;
    for (int k = 0; k < EF_CLIP_CHUNKS; k++) s += c.part[k];
    return sqrt(s);
}

double ef_grad_clip(float *g, size_t n, float max_norm, ef_pool *pool) {
    // g (n), scaled in place
    double norm = ef_grad_norm(g, n, pool);
    double coef = (double)max_norm / (norm + 1e-6);
    if (max_norm > 0.0f && coef < 1.0) {
        clip_ctx c = {.g = g, .n = n, .scale = (float)coef};
        if (n < 65536) pool = NULL;
        ef_pool_for(pool, EF_CLIP_CHUNKS, scale_chunks, &c);
    }
    return norm;
}

double ef_grad_clip_ref(float *g, size_t n, float max_norm) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    double norm = sqrt(s);
    double coef = (double)max_norm / (norm + 1e-6);
    if (max_norm > 0.0f && coef < 1.0)
        for (size_t i = 0; i < n; i++) g[i] = (float)(g[i] * (float)coef);
    return norm;
}
