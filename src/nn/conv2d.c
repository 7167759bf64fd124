/*
 * 2-D convolution (NCHW, groups = 1). The general path lowers each image to
 * a matrix (im2col) and multiplies with cblas_sgemm; threads take disjoint
 * images, and each keeps its own weight-gradient partial sum in the
 * workspace, reduced in a fixed order afterwards, so results are
 * bit-identical for a given thread count.
 */
#include <cblas.h>
#include <string.h>

#include "conv2d_internal.h"
#include "fastmath_internal.h"
#include "nn_internal.h"

static int g_fast = 1;

void ef__conv2d_set_fast_paths(int enabled) { g_fast = enabled; }

static int use_winograd(const ef_conv2d_desc *d) { return g_fast && ef__conv2d_winograd_ok(d); }
static int use_direct(const ef_conv2d_desc *d) { return g_fast && ef__conv2d_direct_ok(d); }

int ef_conv2d_out_h(const ef_conv2d_desc *d) { return (d->H + 2 * d->pad - d->KH) / d->stride + 1; }
int ef_conv2d_out_w(const ef_conv2d_desc *d) { return (d->W + 2 * d->pad - d->KW) / d->stride + 1; }

/* Per-thread scratch: col (CKK, OHW), dcol (CKK, OHW), dW partial (OC, CKK), dbias partial (OC). */
static size_t thread_floats(const ef_conv2d_desc *d) {
    size_t ckk = (size_t)d->C * d->KH * d->KW;
    size_t ohw = (size_t)ef_conv2d_out_h(d) * ef_conv2d_out_w(d);
    size_t f = 2 * ckk * ohw + (size_t)d->OC * ckk + (size_t)d->OC;
    return (f + 15) & ~(size_t)15; /* keep every thread's block 64-byte aligned */
}

size_t ef_conv2d_workspace(const ef_conv2d_desc *d, int n_threads) {
    if (n_threads < 1) n_threads = 1;
    size_t ws = thread_floats(d) * (size_t)n_threads;
    if (ef__conv2d_winograd_ok(d)) {
        size_t ww = ef__conv2d_winograd_workspace(d, n_threads);
        if (ww > ws) ws = ww;
    }
    if (ef__conv2d_direct_ok(d)) {
        size_t wd = ef__conv2d_direct_workspace(d, n_threads);
        if (wd > ws) ws = wd;
    }
    return ws;
}

static void im2col(float *restrict col, const float *restrict img, const ef_conv2d_desc *d,
                   int OH, int OW) {
    // col (C*KH*KW, OH*OW); img (C, H, W)
    int H = d->H, W = d->W, S = d->stride, P = d->pad;
    for (int c = 0; c < d->C; c++)
        for (int kh = 0; kh < d->KH; kh++)
            for (int kw = 0; kw < d->KW; kw++) {
                float *row = col + ((size_t)(c * d->KH + kh) * d->KW + kw) * OH * OW;
                const float *plane = img + (size_t)c * H * W;
                for (int oh = 0; oh < OH; oh++) {
                    int h = oh * S - P + kh;
                    float *r = row + (size_t)oh * OW;
                    if (h < 0 || h >= H) {
                        memset(r, 0, sizeof(float) * (size_t)OW);
                        continue;
                    }
                    const float *src = plane + (size_t)h * W;
                    if (S == 1) {
                        /* contiguous middle, zero borders */
                        int lo = P - kw, hi = W + P - kw; /* ow range with 0 <= w < W */
                        if (lo < 0) lo = 0;
                        if (hi > OW) hi = OW;
                        for (int ow = 0; ow < lo && ow < OW; ow++) r[ow] = 0.0f;
                        if (hi > lo) memcpy(r + lo, src + lo - P + kw, sizeof(float) * (size_t)(hi - lo));
                        for (int ow = hi > lo ? hi : lo; ow < OW; ow++) r[ow] = 0.0f;
                    } else {
                        for (int ow = 0; ow < OW; ow++) {
                            int w = ow * S - P + kw;
                            r[ow] = (w >= 0 && w < W) ? src[w] : 0.0f;
                        }
                    }
                }
            }
}

static void col2im_add(float *restrict img, const float *restrict col, const ef_conv2d_desc *d,
                       int OH, int OW) {
    // img (C, H, W) += scatter of col (C*KH*KW, OH*OW)
    int H = d->H, W = d->W, S = d->stride, P = d->pad;
    for (int c = 0; c < d->C; c++)
        for (int kh = 0; kh < d->KH; kh++)
            for (int kw = 0; kw < d->KW; kw++) {
                const float *row = col + ((size_t)(c * d->KH + kh) * d->KW + kw) * OH * OW;
                float *plane = img + (size_t)c * H * W;
                for (int oh = 0; oh < OH; oh++) {
                    int h = oh * S - P + kh;
                    if (h < 0 || h >= H) continue;
                    const float *r = row + (size_t)oh * OW;
                    float *dst = plane + (size_t)h * W;
                    if (S == 1) {
                        /* the ow range with 0 <= w < W is contiguous: a
                         * plain (vectorized) add, as im2col's copy */
                        int lo = P - kw, hi = W + P - kw;
                        if (lo < 0) lo = 0;
                        if (hi > OW) hi = OW;
                        int off = kw - P;
                        for (int ow = lo; ow < hi; ow++) dst[ow + off] += r[ow];
                        continue;
                    }
                    for (int ow = 0; ow < OW; ow++) {
                        int w = ow * S - P + kw;
                        if (w >= 0 && w < W) dst[w] += r[ow];
                    }
                }
            }
}

typedef struct conv_ctx {
    float *out, *dinp, *dweight, *dbias, *work;
    const float *inp, *weight, *bias, *dout;
    const ef_conv2d_desc *d;
    int OH, OW;
    int nt; /* threads whose partial sums conv_reduce adds */
} conv_ctx;

static void conv_fwd(void *c, int t, int nt) {
    conv_ctx *x = c;
    const ef_conv2d_desc *d = x->d;
    int64_t b, e;
    ef_split_range(d->N, t, nt, &b, &e);
    int ckk = d->C * d->KH * d->KW, ohw = x->OH * x->OW;
    float *col = x->work + thread_floats(d) * (size_t)t;
    for (int64_t n = b; n < e; n++) {
        const float *img = x->inp + (size_t)n * d->C * d->H * d->W;
        float *o = x->out + (size_t)n * d->OC * ohw; // (OC, OHW)
        const float *B = img;
        if (d->KH == 1 && d->KW == 1 && d->stride == 1 && d->pad == 0) {
            B = img; /* a 1x1 convolution is already a matrix product */
        } else {
            im2col(col, img, d, x->OH, x->OW);
            B = col;
        }
        if (x->bias)
            for (int oc = 0; oc < d->OC; oc++)
                for (int i = 0; i < ohw; i++) o[(size_t)oc * ohw + i] = x->bias[oc];
        // out (OC, OHW) = weight (OC, CKK) @ col (CKK, OHW)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->OC, ohw, ckk, 1.0f, x->weight,
                    ckk, B, ohw, x->bias ? 1.0f : 0.0f, o, ohw);
    }
}

void ef_conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                       const ef_conv2d_desc *d, float *work, ef_pool *pool) {
    // out (N, OC, OH, OW); inp (N, C, H, W); weight (OC, C, KH, KW); bias (OC)
    if (use_winograd(d)) {
        ef__conv2d_winograd_forward(out, inp, weight, bias, d, work, pool);
        return;
    }
    if (use_direct(d)) {
        ef__conv2d_direct_forward(out, inp, weight, bias, d, work, pool);
        return;
    }
    ef__blas_init();
    conv_ctx x = {.out = out, .inp = inp, .weight = weight, .bias = bias, .d = d, .work = work,
                  .OH = ef_conv2d_out_h(d), .OW = ef_conv2d_out_w(d)};
    ef_pool_run(pool, conv_fwd, &x);
}

static void conv_bwd(void *c, int t, int nt) {
    conv_ctx *x = c;
    const ef_conv2d_desc *d = x->d;
    int64_t b, e;
    /* nested calls run with fewer threads than the pool has: record how many */
    if (t == 0) x->nt = nt;
    ef_split_range(d->N, t, nt, &b, &e);
    int ckk = d->C * d->KH * d->KW, ohw = x->OH * x->OW;
    size_t cs = (size_t)ckk * ohw;
    float *col = x->work + thread_floats(d) * (size_t)t; // (CKK, OHW)
    float *dcol = col + cs;                               // (CKK, OHW)
    float *dw = dcol + cs;                                // (OC, CKK)
    float *db = dw + (size_t)d->OC * ckk;                 // (OC)
    memset(dw, 0, sizeof(float) * ((size_t)d->OC * ckk + d->OC));
    int pointwise = d->KH == 1 && d->KW == 1 && d->stride == 1 && d->pad == 0;
    for (int64_t n = b; n < e; n++) {
        const float *img = x->inp + (size_t)n * d->C * d->H * d->W;
        const float *dout = x->dout + (size_t)n * d->OC * ohw; // (OC, OHW)
        const float *B = img;
        if (!pointwise) {
            im2col(col, img, d, x->OH, x->OW);
            B = col;
        }
        // dW (OC, CKK) += dout (OC, OHW) @ col^T (OHW, CKK)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d->OC, ckk, ohw, 1.0f, dout, ohw, B,
                    ohw, 1.0f, dw, ckk);
        for (int oc = 0; oc < d->OC; oc++) db[oc] += ef__sum(dout + (size_t)oc * ohw, ohw);
        if (x->dinp) {
            float *di = x->dinp + (size_t)n * d->C * d->H * d->W;
            // dcol (CKK, OHW) = weight^T (CKK, OC) @ dout (OC, OHW)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ckk, ohw, d->OC, 1.0f,
                        x->weight, ckk, dout, ohw, pointwise ? 1.0f : 0.0f,
                        pointwise ? di : dcol, ohw);
            if (!pointwise) col2im_add(di, dcol, d, x->OH, x->OW);
        }
    }
}

/* Adds the per-thread partial weight and bias gradients in thread order. */
static void conv_reduce(void *c, int64_t b, int64_t e, int thread) {
    EF_UNUSED(thread);
    conv_ctx *x = c;
    const ef_conv2d_desc *d = x->d;
    size_t nw = (size_t)d->OC * d->C * d->KH * d->KW;
    size_t tf = thread_floats(d);
    size_t cs = (size_t)d->C * d->KH * d->KW * ef_conv2d_out_h(d) * ef_conv2d_out_w(d);
    for (int64_t i = b; i < e; i++) {
        float s = 0.0f;
        for (int tt = 0; tt < x->nt; tt++) s += x->work[tf * (size_t)tt + 2 * cs + (size_t)i];
        if ((size_t)i < nw) x->dweight[i] += s;
        else if (x->dbias) x->dbias[(size_t)i - nw] += s;
    }
}

void ef_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const ef_conv2d_desc *d,
                        float *work, ef_pool *pool) {
    // dinp (N, C, H, W); dweight (OC, C, KH, KW); dbias (OC); dout (N, OC, OH, OW)
    if (use_winograd(d)) {
        ef__conv2d_winograd_backward(dinp, dweight, dbias, dout, inp, weight, d, work, pool);
        return;
    }
    if (use_direct(d) && dinp == NULL) {
        ef__conv2d_direct_backward_weights(dweight, dbias, dout, inp, d, work, pool);
        return;
    }
    ef__blas_init();
    conv_ctx x = {.dinp = dinp, .dweight = dweight, .dbias = dbias, .dout = dout, .inp = inp,
                  .weight = weight, .d = d, .work = work, .OH = ef_conv2d_out_h(d),
                  .OW = ef_conv2d_out_w(d)};
    ef_pool_run(pool, conv_bwd, &x);
    int64_t nwb = (int64_t)d->OC * d->C * d->KH * d->KW + d->OC;
    ef_pool_for(pool, nwb, conv_reduce, &x);
}

void ef_conv2d_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                           const ef_conv2d_desc *d) {
    int OH = ef_conv2d_out_h(d), OW = ef_conv2d_out_w(d);
    for (int n = 0; n < d->N; n++)
        for (int oc = 0; oc < d->OC; oc++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    double s = bias ? bias[oc] : 0.0;
                    for (int c = 0; c < d->C; c++)
                        for (int kh = 0; kh < d->KH; kh++)
                            for (int kw = 0; kw < d->KW; kw++) {
                                int h = oh * d->stride - d->pad + kh;
                                int w = ow * d->stride - d->pad + kw;
                                if (h < 0 || h >= d->H || w < 0 || w >= d->W) continue;
                                s += (double)inp[(((size_t)n * d->C + c) * d->H + h) * d->W + w] *
                                     weight[(((size_t)oc * d->C + c) * d->KH + kh) * d->KW + kw];
                            }
                    out[(((size_t)n * d->OC + oc) * OH + oh) * OW + ow] = (float)s;
                }
}

void ef_conv2d_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, const ef_conv2d_desc *d) {
    int OH = ef_conv2d_out_h(d), OW = ef_conv2d_out_w(d);
    for (int n = 0; n < d->N; n++)
        for (int oc = 0; oc < d->OC; oc++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    float g = dout[(((size_t)n * d->OC + oc) * OH + oh) * OW + ow];
                    if (dbias) dbias[oc] += g;
                    for (int c = 0; c < d->C; c++)
                        for (int kh = 0; kh < d->KH; kh++)
                            for (int kw = 0; kw < d->KW; kw++) {
                                int h = oh * d->stride - d->pad + kh;
                                int w = ow * d->stride - d->pad + kw;
                                if (h < 0 || h >= d->H || w < 0 || w >= d->W) continue;
                                size_t ii = (((size_t)n * d->C + c) * d->H + h) * d->W + w;
                                size_t wi = (((size_t)oc * d->C + c) * d->KH + kh) * d->KW + kw;
                                dweight[wi] += g * inp[ii];
                                if (dinp) dinp[ii] += g * weight[wi];
                            }
                }
}
