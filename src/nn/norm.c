/*
 * LayerNorm and RMSNorm over the last dimension, forward and backward.
 * Rows are independent, so the forward and the dinp part of the backward
 * split rows over the pool. dweight and dbias sum over rows, so that part
 * splits columns instead: each thread owns a range of columns and adds the
 * rows in order 0..N-1, which needs no scratch, never has two threads write
 * one element, and gives the same bits for any thread count.
 * Variance is the biased one (divide by C), as in PyTorch.
 */
#include <math.h>

#include "fastmath_internal.h"
#include "nn_internal.h"

/* ---- LayerNorm -------------------------------------------------------------- */

typedef struct ln_ctx {
    float *out, *mean, *rstd;          // forward outputs
    float *dinp, *dweight, *dbias;     // backward outputs (any may be NULL)
    const float *dout, *inp, *weight, *bias;
    const float *smean, *srstd;        // saved by the forward, read by backward
    int N, C;
    float eps;
} ln_ctx;

// out, x, w, b (C); b may be NULL
static void ln_forward_row(float *restrict out, float *mean_out, float *rstd_out,
                           const float *restrict x, const float *restrict w,
                           const float *restrict b, int C, float eps) {
    float m = ef__sum(x, C) / (float)C;
    // Two passes (mean, then squared deviations) rather than E[x^2] - m^2,
    // which cancels when |mean| >> std.
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= C; i += 8)
        for (int j = 0; j < 8; j++) {
            float d = x[i + j] - m;
            acc[j] += d * d;
        }
    float ss = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < C; i++) ss += (x[i] - m) * (x[i] - m);
    float r = 1.0f / sqrtf(ss / (float)C + eps);
    if (b)
        for (i = 0; i < C; i++) out[i] = (x[i] - m) * r * w[i] + b[i];
    else
        for (i = 0; i < C; i++) out[i] = (x[i] - m) * r * w[i];
    *mean_out = m;
    *rstd_out = r;
}

static void ln_forward_rows(void *vctx, int64_t begin, int64_t end, int thread) {
    EF_UNUSED(thread);
    const ln_ctx *c = vctx;
    for (int64_t n = begin; n < end; n++) {
        size_t off = (size_t)n * (size_t)c->C;
        ln_forward_row(c->out + off, c->mean + n, c->rstd + n, c->inp + off, c->weight, c->bias,
                       c->C, c->eps);
    }
}

void ef_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int N, int C, float eps,
                          ef_pool *pool) {
    // out, inp (N, C); mean, rstd (N); weight, bias (C)
    ln_ctx c = {.out = out, .mean = mean, .rstd = rstd, .inp = inp, .weight = weight,
                .bias = bias, .N = N, .C = C, .eps = eps};
    ef_pool_for(pool, N, ln_forward_rows, &c);
}

// dx, g (dout), x, w (C): dx += rstd (dn - mean(dn) - norm mean(dn norm)),
// with norm = (x - mean) rstd and dn = w g.
static void ln_backward_row(float *restrict dx, const float *restrict g,
                            const float *restrict x, const float *restrict w, float m, float r,
                            int C) {
    float a1[8] = {0}, a2[8] = {0};
    int i = 0;
    for (; i + 8 <= C; i += 8)
        for (int j = 0; j < 8; j++) {
            float dn = w[i + j] * g[i + j];
            a1[j] += dn;
            a2[j] += dn * ((x[i + j] - m) * r);
        }
    float s1 = ((a1[0] + a1[4]) + (a1[1] + a1[5])) + ((a1[2] + a1[6]) + (a1[3] + a1[7]));
    float s2 = ((a2[0] + a2[4]) + (a2[1] + a2[5])) + ((a2[2] + a2[6]) + (a2[3] + a2[7]));
    for (; i < C; i++) {
        float dn = w[i] * g[i];
        s1 += dn;
        s2 += dn * ((x[i] - m) * r);
    }
    float dmean = s1 / (float)C, dnorm_mean = s2 / (float)C;
    for (i = 0; i < C; i++) {
        float norm = (x[i] - m) * r;
        dx[i] += r * (w[i] * g[i] - dmean - norm * dnorm_mean);
    }
}

// dweight, dbias: columns [c0, c1) of (C); g, x (N, C) rows
static void ln_backward_cols(float *restrict dw, float *restrict db, const float *restrict g,
                             const float *restrict x, const float *restrict mean,
                             const float *restrict rstd, int N, int C, int c0, int c1) {
    for (int n = 0; n < N; n++) {
        const float *gn = g + (size_t)n * C, *xn = x + (size_t)n * C;
        float m = mean[n], r = rstd[n];
        if (dw)
            for (int i = c0; i < c1; i++) dw[i] += (xn[i] - m) * r * gn[i];
        if (db)
            for (int i = c0; i < c1; i++) db[i] += gn[i];
    }
}

static void ln_backward_task(void *vctx, int thread, int n_threads) {
    const ln_ctx *c = vctx;
    int64_t b, e;
    if (c->dinp) {
        ef_split_range(c->N, thread, n_threads, &b, &e);
        for (int64_t n = b; n < e; n++) {
            size_t off = (size_t)n * (size_t)c->C;
            ln_backward_row(c->dinp + off, c->dout + off, c->inp + off, c->weight, c->smean[n],
                            c->srstd[n], c->C);
        }
    }
    if (c->dweight || c->dbias) {
        ef_split_range(c->C, thread, n_threads, &b, &e);
        if (b < e)
            ln_backward_cols(c->dweight, c->dbias, c->dout, c->inp, c->smean, c->srstd, c->N,
                             c->C, (int)b, (int)e);
    }
}

void ef_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int N, int C, ef_pool *pool) {
    // dinp, dout, inp (N, C); dweight, dbias, weight (C); mean, rstd (N)
    if (N <= 0 || C <= 0 || (!dinp && !dweight && !dbias)) return;
    ln_ctx c = {.dinp = dinp, .dweight = dweight, .dbias = dbias, .dout = dout, .inp = inp,
                .weight = weight, .smean = mean, .srstd = rstd, .N = N, .C = C};
    ef_pool_run(pool, ln_backward_task, &c);
}

void ef_layernorm_forward_ref(float *out, float *mean, float *rstd, const float *inp,
                              const float *weight, const float *bias, int N, int C,
                              float eps) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        double m = 0.0, v = 0.0;
        for (int i = 0; i < C; i++) m += x[i];
        m /= C;
        for (int i = 0; i < C; i++) v += (x[i] - m) * (x[i] - m);
        v /= C;
        double r = 1.0 / sqrt(v + (double)eps);
        for (int i = 0; i < C; i++) {
            double y = (x[i] - m) * r * weight[i] + (bias ? bias[i] : 0.0f);
            out[(size_t)n * C + i] = (float)y;
        }
        mean[n] = (float)m;
        rstd[n] = (float)r;
    }
}

void ef_layernorm_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, const float *mean,
                               const float *rstd, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *g = dout + (size_t)n * C;
        double m = mean[n], r = rstd[n];
        double dmean = 0.0, dnorm_mean = 0.0;
        for (int i = 0; i < C; i++) {
            double norm = (x[i] - m) * r;
            double dn = (double)weight[i] * g[i];
            dmean += dn;
            dnorm_mean += dn * norm;
        }
        dmean /= C;
        dnorm_mean /= C;
        for (int i = 0; i < C; i++) {
            double norm = (x[i] - m) * r;
            double dn = (double)weight[i] * g[i];
            if (dinp) dinp[(size_t)n * C + i] += (float)(r * (dn - dmean - norm * dnorm_mean));
            if (dweight) dweight[i] += (float)(norm * g[i]);
            if (dbias) dbias[i] += g[i];
        }
    }
}

/* ---- RMSNorm ---------------------------------------------------------------- */

typedef struct rms_ctx {
    float *out, *rstd;
    float *dinp, *dweight;
    const float *dout, *inp, *weight, *srstd;
    int N, C;
    float eps;
} rms_ctx;

static void rms_forward_rows(void *vctx, int64_t begin, int64_t end, int thread) {
    EF_UNUSED(thread);
    const rms_ctx *c = vctx;
    int C = c->C;
    for (int64_t n = begin; n < end; n++) {
        size_t off = (size_t)n * (size_t)C;
        const float *restrict x = c->inp + off;
        const float *restrict w = c->weight;
        float *restrict out = c->out + off;
        float r = 1.0f / sqrtf(ef__dot(x, x, C) / (float)C + c->eps);
        for (int i = 0; i < C; i++) out[i] = x[i] * r * w[i];
        c->rstd[n] = r;
    }
}

void ef_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N,
                        int C, float eps, ef_pool *pool) {
    // out, inp (N, C); rstd (N); weight (C)
    rms_ctx c = {.out = out, .rstd = rstd, .inp = inp, .weight = weight, .N = N, .C = C,
                 .eps = eps};
    ef_pool_for(pool, N, rms_forward_rows, &c);
}

// dx, g, x, w (C): dx += rstd (dn - norm mean(dn norm)), norm = x rstd, dn = w g.
static void rms_backward_row(float *restrict dx, const float *restrict g,
                             const float *restrict x, const float *restrict w, float r, int C) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= C; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += w[i + j] * g[i + j] * (x[i + j] * r);
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < C; i++) s += w[i] * g[i] * (x[i] * r);
    float dnorm_mean = s / (float)C;
    for (i = 0; i < C; i++) dx[i] += r * (w[i] * g[i] - (x[i] * r) * dnorm_mean);
}

// dweight: columns [c0, c1) of (C); g, x (N, C)
static void rms_backward_cols(float *restrict dw, const float *restrict g,
                              const float *restrict x, const float *restrict rstd, int N, int C,
                              int c0, int c1) {
    for (int n = 0; n < N; n++) {
        const float *gn = g + (size_t)n * C, *xn = x + (size_t)n * C;
        float r = rstd[n];
        for (int i = c0; i < c1; i++) dw[i] += xn[i] * r * gn[i];
    }
}

static void rms_backward_task(void *vctx, int thread, int n_threads) {
    const rms_ctx *c = vctx;
    int64_t b, e;
    if (c->dinp) {
        ef_split_range(c->N, thread, n_threads, &b, &e);
        for (int64_t n = b; n < e; n++) {
            size_t off = (size_t)n * (size_t)c->C;
            rms_backward_row(c->dinp + off, c->dout + off, c->inp + off, c->weight, c->srstd[n],
                             c->C);
        }
    }
    if (c->dweight) {
        ef_split_range(c->C, thread, n_threads, &b, &e);
        if (b < e)
            rms_backward_cols(c->dweight, c->dout, c->inp, c->srstd, c->N, c->C, (int)b, (int)e);
    }
}

void ef_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                         const float *weight, const float *rstd, int N, int C, ef_pool *pool) {
    // dinp, dout, inp (N, C); dweight, weight (C); rstd (N)
    if (N <= 0 || C <= 0 || (!dinp && !dweight)) return;
    rms_ctx c = {.dinp = dinp, .dweight = dweight, .dout = dout, .inp = inp, .weight = weight,
                 .srstd = rstd, .N = N, .C = C};
    ef_pool_run(pool, rms_backward_task, &c);
}

void ef_rmsnorm_forward_ref(float *out, float *rstd, const float *inp, const float *weight,
                            int N, int C, float eps) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        double ss = 0.0;
        for (int i = 0; i < C; i++) ss += (double)x[i] * x[i];
        double r = 1.0 / sqrt(ss / C + (double)eps);
        for (int i = 0; i < C; i++) out[(size_t)n * C + i] = (float)(x[i] * r * weight[i]);
        rstd[n] = (float)r;
    }
}

void ef_rmsnorm_backward_ref(float *dinp, float *dweight, const float *dout, const float *inp,
                             const float *weight, const float *rstd, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *g = dout + (size_t)n * C;
        double r = rstd[n];
        double dnorm_mean = 0.0;
        for (int i = 0; i < C; i++) dnorm_mean += (double)weight[i] * g[i] * (x[i] * r);
        dnorm_mean /= C;
        for (int i = 0; i < C; i++) {
            double norm = x[i] * r;
            if (dinp)
                dinp[(size_t)n * C + i] +=
                    (float)(r * ((double)weight[i] * g[i] - norm * dnorm_mean));
            if (dweight) dweight[i] += (float)(norm * g[i]);
        }
    }
}
