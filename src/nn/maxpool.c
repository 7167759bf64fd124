/*
 * 2-D max pooling (NCHW, no padding). The forward pass records the argmax
 * of each window so backward is a scatter without re-reading the input.
 */
#include <float.h>

#include "nn_internal.h"

typedef struct pool_ctx {
    float *out, *dinp;
    int32_t *argmax;
    const float *inp, *dout;
    const int32_t *cargmax;
    int H, W, K, stride, OH, OW;
} pool_ctx;

static void maxpool_fwd_planes(void *c, int64_t b, int64_t e, int thread) {
    EF_UNUSED(thread);
    pool_ctx *p = c;
    int H = p->H, W = p->W, K = p->K, S = p->stride, OH = p->OH, OW = p->OW;
    for (int64_t pl = b; pl < e; pl++) {
        const float *in = p->inp + pl * H * W; // (H, W)
        float *o = p->out + pl * OH * OW;      // (OH, OW)
        int32_t *am = p->argmax + pl * OH * OW;
        if (K == 2 && S == 2) {
            /* the CNN's case: two rows at a time, no inner window loop */
            for (int oh = 0; oh < OH; oh++) {
                const float *r0 = in + (2 * oh) * W, *r1 = r0 + W;
                for (int ow = 0; ow < OW; ow++) {
                    int w0 = 2 * ow;
                    float best = r0[w0];
                    int32_t bi = 2 * oh * W + w0;
                    if (r0[w0 + 1] > best) best = r0[w0 + 1], bi = 2 * oh * W + w0 + 1;
                    if (r1[w0] > best) best = r1[w0], bi = (2 * oh + 1) * W + w0;
                    if (r1[w0 + 1] > best) best = r1[w0 + 1], bi = (2 * oh + 1) * W + w0 + 1;
                    o[oh * OW + ow] = best;
                    am[oh * OW + ow] = bi;
                }
            }
            continue;
        }
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                int h0 = oh * S, w0 = ow * S;
                float best = in[h0 * W + w0];
                int32_t bi = h0 * W + w0;
                for (int kh = 0; kh < K; kh++)
                    for (int kw = 0; kw < K; kw++) {
                        float v = in[(h0 + kh) * W + w0 + kw];
                        if (v > best) best = v, bi = (h0 + kh) * W + w0 + kw;
                    }
                o[oh * OW + ow] = best;
                am[oh * OW + ow] = bi;
            }
    }
}

void ef_maxpool2d_forward(float *out, int32_t *argmax, const float *inp, int N, int C, int H,
                          int W, int K, int stride, ef_pool *pool) {
    // out, argmax (N, C, OH, OW); inp (N, C, H, W)
    pool_ctx p = {.out = out, .argmax = argmax, .inp = inp, .H = H, .W = W, .K = K,
                  .stride = stride, .OH = (H - K) / stride + 1, .OW = (W - K) / stride + 1};
    ef_pool_for(pool, (int64_t)N * C, maxpool_fwd_planes, &p);
}

static void maxpool_bwd_planes(void *c, int64_t b, int64_t e, int thread) {
    EF_UNUSED(thread);
    pool_ctx *p = c;
    int HW = p->H * p->W, OHW = p->OH * p->OW;
    for (int64_t pl = b; pl < e; pl++) {
        float *di = p->dinp + pl * HW;
        const float *d = p->dout + pl * OHW;
        const int32_t *am = p->cargmax + pl * OHW;
        for (int i = 0; i < OHW; i++) di[am[i]] += d[i];
    }
}

void ef_maxpool2d_backward(float *dinp, const float *dout, const int32_t *argmax, int N, int C,
                           int H, int W, int K, int stride, ef_pool *pool) {
    // dinp (N, C, H, W); dout, argmax (N, C, OH, OW)
    pool_ctx p = {.dinp = dinp, .dout = dout, .cargmax = argmax, .H = H, .W = W, .K = K,
                  .stride = stride, .OH = (H - K) / stride + 1, .OW = (W - K) / stride + 1};
    ef_pool_for(pool, (int64_t)N * C, maxpool_bwd_planes, &p);
}

void ef_maxpool2d_forward_ref(float *out, int32_t *argmax, const float *inp, int N, int C,
                              int H, int W, int K, int stride) {
    int OH = (H - K) / stride + 1, OW = (W - K) / stride + 1;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    float best = -FLT_MAX;
                    int32_t bi = -1;
                    for (int kh = 0; kh < K; kh++)
                        for (int kw = 0; kw < K; kw++) {
                            int h = oh * stride + kh, w = ow * stride + kw;
                            float v = inp[(((size_t)n * C + c) * H + h) * W + w];
                            if (bi < 0 || v > best) {
                                best = v;
                                bi = h * W + w;
                            }
                        }
                    size_t o = (((size_t)n * C + c) * OH + oh) * OW + ow;
                    out[o] = best;
                    argmax[o] = bi;
                }
}

void ef_maxpool2d_backward_ref(float *dinp, const float *dout, const int32_t *argmax, int N,
                               int C, int H, int W, int K, int stride) {
    int OH = (H - K) / stride + 1, OW = (W - K) / stride + 1;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < OH * OW; i++) {
                size_t o = ((size_t)n * C + c) * OH * OW + i;
                dinp[((size_t)n * C + c) * H * W + argmax[o]] += dout[o];
            }
}
