/*
 * Fully connected layer: out = inp @ weight^T + bias, through OpenBLAS
 * cblas_sgemm. Threads split the output features (forward, dweight) or the
 * input features (dinp), so every output element is written by exactly one
 * thread and each single-threaded GEMM sees a fixed shape: bit-identical
 * results for a given thread count.
 */
#include <cblas.h>
#include <string.h>

#include "nn_internal.h"

void ef__blas_init(void) {
    static int done = 0;
    if (!done) {
        openblas_set_num_threads(1);
        done = 1;
    }
}

typedef struct lin_ctx {
    float *out, *dinp, *dweight, *dbias;
    const float *inp, *weight, *bias, *dout;
    int N, IC, OC;
} lin_ctx;

/* Columns are split in multiples of 16 so SIMD kernels get full panels. */
static void split16(int n, int t, int nt, int *b, int *e) {
    int64_t blocks = (n + 15) / 16, bb, be;
    ef_split_range(blocks, t, nt, &bb, &be);
    *b = (int)(bb * 16);
    *e = (int)(be * 16 < n ? be * 16 : n);
    if (*b > n) *b = n;
}

static void lin_fwd(void *c, int t, int nt) {
    lin_ctx *x = c;
    int b, e;
    split16(x->OC, t, nt, &b, &e);
    if (b >= e) return;
    int n = e - b;
    // out[:, b:e] (N, n) = inp (N, IC) @ weight[b:e]^T (IC, n)
    if (x->bias) {
        for (int i = 0; i < x->N; i++) memcpy(x->out + (size_t)i * x->OC + b, x->bias + b,
                                              sizeof(float) * (size_t)n);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, x->N, n, x->IC, 1.0f, x->inp, x->IC,
                x->weight + (size_t)b * x->IC, x->IC, x->bias ? 1.0f : 0.0f, x->out + b, x->OC);
}

void ef_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int IC, int OC, ef_pool *pool) {
    // out (N, OC); inp (N, IC); weight (OC, IC); bias (OC)
    ef__blas_init();
    lin_ctx x = {.out = out, .inp = inp, .weight = weight, .bias = bias, .N = N, .IC = IC,
                 .OC = OC};
    if ((int64_t)N * IC * OC < 200000) pool = NULL; /* too small to split */
    ef_pool_run(pool, lin_fwd, &x);
}

static void lin_bwd(void *c, int t, int nt) {
    lin_ctx *x = c;
    int b, e;
    if (x->dinp) {
        // dinp[:, b:e] (N, n) += dout (N, OC) @ weight[:, b:e] (OC, n)
        split16(x->IC, t, nt, &b, &e);
        if (b < e)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, x->N, e - b, x->OC, 1.0f,
                        x->dout, x->OC, x->weight + b, x->IC, 1.0f, x->dinp + b, x->IC);
    }
    split16(x->OC, t, nt, &b, &e);
    if (b >= e) return;
    // dweight[b:e] (n, IC) += dout[:, b:e]^T (n, N) @ inp (N, IC)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, e - b, x->IC, x->N, 1.0f, x->dout + b,
                x->OC, x->inp, x->IC, 1.0f, x->dweight + (size_t)b * x->IC, x->IC);
    if (x->dbias) {
        for (int i = 0; i < x->N; i++) {
            const float *d = x->dout + (size_t)i * x->OC;
            for (int o = b; o < e; o++) x->dbias[o] += d[o];
        }
    }
}

void ef_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int IC, int OC,
                        ef_pool *pool) {
    // dinp (N, IC); dweight (OC, IC); dbias (OC); dout (N, OC)
    ef__blas_init();
    lin_ctx x = {.dinp = dinp, .dweight = dweight, .dbias = dbias, .dout = dout, .inp = inp,
                 .weight = weight, .N = N, .IC = IC, .OC = OC};
    if ((int64_t)N * IC * OC < 200000) pool = NULL;
    ef_pool_run(pool, lin_bwd, &x);
}

void ef_linear_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                           int N, int IC, int OC) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int i = 0; i < IC; i++)
                s += (double)inp[(size_t)n * IC + i] * weight[(size_t)o * IC + i];
            out[(size_t)n * OC + o] = (float)s;
        }
}

void ef_linear_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int N, int IC, int OC) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            float d = dout[(size_t)n * OC + o];
            if (dbias) dbias[o] += d;
            for (int i = 0; i < IC; i++) {
                dweight[(size_t)o * IC + i] += d * inp[(size_t)n * IC + i];
                if (dinp) dinp[(size_t)n * IC + i] += d * weight[(size_t)o * IC + i];
            }
        }
}
