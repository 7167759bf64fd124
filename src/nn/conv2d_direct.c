/*
 * Direct convolution for layers with few input channels (an image's first
 * layer: 1 or 3 channels), stride 1, kernels up to 7x7. im2col would turn
 * such a layer into products with K = C*KH*KW of 25 or 75, where a GEMM
 * spends more time packing than multiplying; here each output row is
 * accumulated in vector registers straight from a zero-padded copy of the
 * input planes. Forward and the weight/bias gradients are covered; a layer
 * that needs its input gradient uses the im2col path.
 *
 * Threads take disjoint images; weight-gradient partial sums are per thread
 * and reduced in thread order (bit-identical for a given thread count).
 */
#include "conv2d_internal.h"
#include "nn_internal.h"
#include "fastmath_internal.h"
#include "simd.h"

#define MAX_K 7
#define MAX_ROW 2048 /* widest padded row handled (stack buffer) */

/* Padded planes: (C, PH, RS) with RS = W + 2 pad rounded up to 32 plus
 * slack for the kernel width, and MAX_RB - 1 spare plane rows at the end
 * (a forward block of MAX_RB rows reads up to MAX_RB - 1 rows past the
 * last output row). */
#define MAX_RB 8
static int row_stride(const ef_conv2d_desc *d) {
    return ((d->W + 2 * d->pad + 31) & ~31) + 8;
}
static size_t planes_floats(const ef_conv2d_desc *d) {
    return ((size_t)d->C * (size_t)(d->H + 2 * d->pad) + MAX_RB - 1) * (size_t)row_stride(d);
}
int ef__conv2d_direct_ok(const ef_conv2d_desc *d) {
    return d->C < 8 && d->stride == 1 && d->KH == d->KW && d->KH <= MAX_K && d->pad >= 0 &&
           d->pad < d->KH && ef_conv2d_out_h(d) >= 1 && ef_conv2d_out_w(d) >= 1 &&
           row_stride(d) <= MAX_ROW;
}

/* dY plane with rows padded to a multiple of 8 (zeros past OW). */
static int dy_stride(const ef_conv2d_desc *d) { return (ef_conv2d_out_w(d) + 7) & ~7; }

static size_t thread_floats(const ef_conv2d_desc *d) {
    size_t f = planes_floats(d) + (size_t)ef_conv2d_out_h(d) * dy_stride(d) +
               (size_t)d->OC * d->C * d->KH * d->KW + (size_t)d->OC;
    return (f + 15) & ~(size_t)15;
}

size_t ef__conv2d_direct_workspace(const ef_conv2d_desc *d, int n_threads) {
    return thread_floats(d) * (size_t)(n_threads < 1 ? 1 : n_threads);
}

INLINE void pad_image(float *restrict P, const float *restrict img, const ef_conv2d_desc *d) {
    int rs = row_stride(d), ph = d->H + 2 * d->pad;
    memset(P, 0, sizeof(float) * planes_floats(d));
    for (int c = 0; c < d->C; c++)
        for (int h = 0; h < d->H; h++)
            memcpy(P + ((size_t)c * ph + h + d->pad) * rs + d->pad,
                   img + ((size_t)c * d->H + h) * d->W, sizeof(float) * (size_t)d->W);
}

/*
 * out (OC, OH, OW) of one image from its padded planes P. A block of R
 * output rows x V vectors (R * V = 8) is accumulated at once: eight
 * independent FMA chains keep both FMA units busy (one chain would wait on
 * each FMA's latency). Wide outputs take 2 rows x 4 vectors; narrow ones
 * (OW <= 16, the later layers of small CNNs) take more rows of fewer
 * vectors, so few lanes are spent past the row's end.
 */
INLINE void fwd_image_kv(int K, int V, float *restrict out, const float *restrict P,
                         const float *restrict weight, const float *restrict bias,
                         const ef_conv2d_desc *d) {
    enum { LANES = 8 };
    int R = LANES / V, bw = 8 * V;
    int OH = ef_conv2d_out_h(d), OW = ef_conv2d_out_w(d);
    int rs = row_stride(d), ph = d->H + 2 * d->pad;
    int rl = (OW + bw - 1) / bw * bw; /* a block row's width, <= rs */
    float row[2 * MAX_ROW];           /* R rows of rl floats: R * rl <= 2 * MAX_ROW */
    for (int oc = 0; oc < d->OC; oc++) {
        float b = bias ? bias[oc] : 0.0f;
        for (int y = 0; y < OH; y += R) {
            int nr = OH - y < R ? OH - y : R;
            for (int x0 = 0; x0 < OW; x0 += bw) {
                v8 acc[LANES];
                for (int i = 0; i < LANES; i++) acc[i] = zero8() + b;
                for (int c = 0; c < d->C; c++) {
                    const float *w = weight + ((size_t)oc * d->C + c) * K * K;
                    /* rows past OH read padding or the spare rows below; unused */
                    const float *p = P + ((size_t)c * ph + y) * rs + x0;
                    for (int kh = 0; kh < K; kh++)
                        for (int kw = 0; kw < K; kw++) {
                            float wv = w[kh * K + kw];
                            const float *q = p + (size_t)kh * rs + kw;
                            for (int r = 0; r < R; r++)
                                for (int j = 0; j < V; j++)
                                    acc[r * V + j] += wv * ld8(q + (size_t)r * rs + 8 * j);
                        }
                }
                for (int r = 0; r < R; r++)
                    for (int j = 0; j < V; j++) st8(row + (size_t)r * rl + x0 + 8 * j, acc[r * V + j]);
            }
            for (int r = 0; r < nr; r++)
                memcpy(out + ((size_t)oc * OH + y + r) * OW, row + (size_t)r * rl,
                       sizeof(float) * (size_t)OW);
        }
    }
}

INLINE void fwd_image_k(int K, float *restrict out, const float *restrict P,
                        const float *restrict weight, const float *restrict bias,
                        const ef_conv2d_desc *d) {
    int OW = ef_conv2d_out_w(d);
    if (OW <= 8) fwd_image_kv(K, 1, out, P, weight, bias, d);
    else if (OW <= 16) fwd_image_kv(K, 2, out, P, weight, bias, d);
    else fwd_image_kv(K, 4, out, P, weight, bias, d);
}

/* dW (OC, C, K, K) += and db (OC) += for one image. */
INLINE void wgrad_image_k(int K, float *restrict dw, float *restrict db,
                          const float *restrict dout, const float *restrict P,
                          float *restrict dyp, const ef_conv2d_desc *d) {
    int OH = ef_conv2d_out_h(d), OW = ef_conv2d_out_w(d);
    int rs = row_stride(d), ph = d->H + 2 * d->pad, ds = dy_stride(d);
    for (int oc = 0; oc < d->OC; oc++) {
        const float *dy = dout + (size_t)oc * OH * OW;
        for (int y = 0; y < OH; y++) {
            float *r = dyp + (size_t)y * ds;
            memcpy(r, dy + (size_t)y * OW, sizeof(float) * (size_t)OW);
            for (int x = OW; x < ds; x++) r[x] = 0.0f;
        }
        /* eight partial sums: a single running sum would be one long
         * dependency chain of additions */
        db[oc] += ef__sum(dyp, OH * ds);
        for (int c = 0; c < d->C; c++)
            /* two kernel rows at a time: 2K independent FMA chains */
            for (int kh = 0; kh < K; kh += 2) {
                int nk = K - kh < 2 ? 1 : 2;
                v8 acc[2][MAX_K];
                for (int r = 0; r < 2; r++)
                    for (int kw = 0; kw < K; kw++) acc[r][kw] = zero8();
                for (int y = 0; y < OH; y++) {
                    /* with nk == 1 the second row reads a valid padded row; unused */
                    const float *p0 = P + ((size_t)c * ph + y + kh) * rs;
                    const float *p1 = p0 + rs;
                    const float *g = dyp + (size_t)y * ds;
                    for (int x0 = 0; x0 < OW; x0 += 8) {
                        v8 gv = ld8(g + x0);
                        for (int kw = 0; kw < K; kw++) {
                            acc[0][kw] += gv * ld8(p0 + x0 + kw);
                            acc[1][kw] += gv * ld8(p1 + x0 + kw);
                        }
                    }
                }
                for (int r = 0; r < nk; r++) {
                    float *w = dw + (((size_t)oc * d->C + c) * K + kh + r) * K;
                    for (int kw = 0; kw < K; kw++) w[kw] += hsum8(acc[r][kw]);
                }
            }
    }
}

/*
 * The kernel size is passed as a constant for the common sizes so the
 * compiler unrolls the kw loops and keeps the accumulators in registers
 * (indexed by a run-time K they would live on the stack).
 */
INLINE void fwd_image(float *restrict out, const float *restrict P, const float *restrict weight,
                      const float *restrict bias, const ef_conv2d_desc *d) {
    switch (d->KH) {
    case 3: fwd_image_k(3, out, P, weight, bias, d); break;
    case 5: fwd_image_k(5, out, P, weight, bias, d); break;
    default: fwd_image_k(d->KH, out, P, weight, bias, d); break;
    }
}

INLINE void wgrad_image(float *restrict dw, float *restrict db, const float *restrict dout,
                        const float *restrict P, float *restrict dyp, const ef_conv2d_desc *d) {
    switch (d->KH) {
    case 3: wgrad_image_k(3, dw, db, dout, P, dyp, d); break;
    case 5: wgrad_image_k(5, dw, db, dout, P, dyp, d); break;
    default: wgrad_image_k(d->KH, dw, db, dout, P, dyp, d); break;
    }
}

typedef void (*fwd_fn)(float *, const float *, const float *, const float *,
                       const ef_conv2d_desc *);
typedef void (*wgrad_fn)(float *, float *, const float *, const float *, float *,
                         const ef_conv2d_desc *);
typedef void (*pad_fn)(float *, const float *, const ef_conv2d_desc *);

#if EF_HAVE_AVX2_PATH
EF_TARGET_AVX2 static void fwd_avx2(float *o, const float *P, const float *w, const float *b,
                                    const ef_conv2d_desc *d) {
    fwd_image(o, P, w, b, d);
}
EF_TARGET_AVX2 static void wgrad_avx2(float *dw, float *db, const float *dy, const float *P,
                                      float *dyp, const ef_conv2d_desc *d) {
    wgrad_image(dw, db, dy, P, dyp, d);
}
EF_TARGET_AVX2 static void pad_avx2(float *P, const float *img, const ef_conv2d_desc *d) {
    pad_image(P, img, d);
}
#endif
static void fwd_base(float *o, const float *P, const float *w, const float *b,
                     const ef_conv2d_desc *d) {
    fwd_image(o, P, w, b, d);
}
static void wgrad_base(float *dw, float *db, const float *dy, const float *P, float *dyp,
                       const ef_conv2d_desc *d) {
    wgrad_image(dw, db, dy, P, dyp, d);
}
static void pad_base(float *P, const float *img, const ef_conv2d_desc *d) { pad_image(P, img, d); }

typedef struct dctx {
    const ef_conv2d_desc *d;
    float *out, *work, *dweight, *dbias;
    const float *inp, *weight, *bias, *dout;
    fwd_fn fwd;
    wgrad_fn wgrad;
    pad_fn pad;
    int nt;
} dctx;

static void pick(dctx *x) {
#if EF_HAVE_AVX2_PATH
    if (ef_cpu_features() & EF_CPU_AVX2) {
        x->fwd = fwd_avx2, x->wgrad = wgrad_avx2, x->pad = pad_avx2;
        return;
    }
#endif
    x->fwd = fwd_base, x->wgrad = wgrad_base, x->pad = pad_base;
}

static void fwd_images(void *c, int t, int nt) {
    dctx *x = c;
    const ef_conv2d_desc *d = x->d;
    int64_t b, e;
    ef_split_range(d->N, t, nt, &b, &e);
    float *P = x->work + thread_floats(d) * (size_t)t;
    size_t in_sz = (size_t)d->C * d->H * d->W;
    size_t out_sz = (size_t)d->OC * ef_conv2d_out_h(d) * ef_conv2d_out_w(d);
    for (int64_t n = b; n < e; n++) {
        x->pad(P, x->inp + (size_t)n * in_sz, d);
        x->fwd(x->out + (size_t)n * out_sz, P, x->weight, x->bias, d);
    }
}

void ef__conv2d_direct_forward(float *out, const float *inp, const float *weight,
                               const float *bias, const ef_conv2d_desc *d, float *work,
                               ef_pool *pool) {
    // out (N, OC, OH, OW); inp (N, C, H, W); weight (OC, C, K, K); bias (OC)
    dctx x = {.d = d, .out = out, .work = work, .inp = inp, .weight = weight, .bias = bias};
    pick(&x);
    ef_pool_run(pool, fwd_images, &x);
}

static void wgrad_images(void *c, int t, int nt) {
    dctx *x = c;
    const ef_conv2d_desc *d = x->d;
    if (t == 0) x->nt = nt;
    int64_t b, e;
    ef_split_range(d->N, t, nt, &b, &e);
    float *P = x->work + thread_floats(d) * (size_t)t;
    float *dyp = P + planes_floats(d);
    float *dw = dyp + (size_t)ef_conv2d_out_h(d) * dy_stride(d);
    size_t nw = (size_t)d->OC * d->C * d->KH * d->KW;
    float *db = dw + nw;
    memset(dw, 0, sizeof(float) * (nw + (size_t)d->OC));
    size_t in_sz = (size_t)d->C * d->H * d->W;
    size_t out_sz = (size_t)d->OC * ef_conv2d_out_h(d) * ef_conv2d_out_w(d);
    for (int64_t n = b; n < e; n++) {
        x->pad(P, x->inp + (size_t)n * in_sz, d);
        x->wgrad(dw, db, x->dout + (size_t)n * out_sz, P, dyp, d);
    }
}

static void wgrad_reduce(void *c, int64_t b, int64_t e, int thread) {
    EF_UNUSED(thread);
    dctx *x = c;
    const ef_conv2d_desc *d = x->d;
    size_t tf = thread_floats(d);
    size_t off = planes_floats(d) + (size_t)ef_conv2d_out_h(d) * dy_stride(d);
    size_t nw = (size_t)d->OC * d->C * d->KH * d->KW;
    for (int64_t i = b; i < e; i++) {
        float s = 0.0f;
        for (int tt = 0; tt < x->nt; tt++) s += x->work[tf * (size_t)tt + off + (size_t)i];
        if ((size_t)i < nw) x->dweight[i] += s;
        else if (x->dbias) x->dbias[(size_t)i - nw] += s;
    }
}

void ef__conv2d_direct_backward_weights(float *dweight, float *dbias, const float *dout,
                                        const float *inp, const ef_conv2d_desc *d, float *work,
                                        ef_pool *pool) {
    // dweight (OC, C, K, K); dbias (OC); dout (N, OC, OH, OW); inp (N, C, H, W)
    dctx x = {.d = d, .work = work, .inp = inp, .dout = dout, .dweight = dweight,
              .dbias = dbias};
    pick(&x);
    ef_pool_run(pool, wgrad_images, &x);
    ef_pool_for(pool, (int64_t)d->OC * d->C * d->KH * d->KW + d->OC, wgrad_reduce, &x);
}

