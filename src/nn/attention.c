/*
 * Causal multi-head self-attention with grouped-query heads (GQA; NKV == NH
 * is ordinary multi-head attention, NKV == 1 multi-query attention), as used
 * by GPT- and Llama-style models. Inputs are the already projected q, k, v;
 * the projections are linear layers.
 *
 * Forward: every (b, h, t) query row is independent, so rows are split over
 * the pool. The scores go straight into the caller's att row and are turned
 * into probabilities in place, so the forward needs no scratch.
 * Backward: the k and v rows of one key/value head collect gradient from all
 * NH/NKV query heads of its group, so the unit of work is a (b, kv head)
 * pair; one thread owns all of dq, dk and dv for its pairs and adds terms in
 * a fixed order, which keeps results identical for any thread count.
 */
#include <math.h>

#include "fastmath_internal.h"
#include "nn_internal.h"

typedef struct att_ctx {
    float *out, *att;             // forward outputs
    float *dq, *dk, *dv, *work;   // backward outputs (any may be NULL), scratch
    const float *dout, *q, *k, *v, *satt;
    int B, T, NH, NKV, HS;
} att_ctx;

// One query row (b, h, t). att_row (T); out_row, q_row (HS); k, v point at
// time 0 of this batch and kv head, rows kv_stride apart.
static void att_forward_row(float *restrict out_row, float *restrict att_row,
                            const float *restrict q_row, const float *restrict k,
                            const float *restrict v, int t, int T, int HS, size_t kv_stride) {
    const float scale = 1.0f / sqrtf((float)HS);
    float mx = -INFINITY;
    for (int t2 = 0; t2 <= t; t2++) {
        float s = ef__dot(q_row, k + (size_t)t2 * kv_stride, HS) * scale;
        att_row[t2] = s;
        mx = s > mx ? s : mx;
    }
    for (int t2 = 0; t2 <= t; t2++) att_row[t2] = ef__expf(att_row[t2] - mx);
    float inv = 1.0f / ef__sum(att_row, t + 1);
    for (int t2 = 0; t2 <= t; t2++) att_row[t2] *= inv;
    for (int t2 = t + 1; t2 < T; t2++) att_row[t2] = 0.0f;
    for (int i = 0; i < HS; i++) out_row[i] = 0.0f;
    for (int t2 = 0; t2 <= t; t2++)
        ef__axpy(out_row, att_row[t2], v + (size_t)t2 * kv_stride, HS);
}

static void att_forward_rows(void *vctx, int64_t begin, int64_t end, int thread) {
    EF_UNUSED(thread);
    const att_ctx *c = vctx;
    int T = c->T, NH = c->NH, HS = c->HS, group = c->NH / c->NKV;
    size_t q_stride = (size_t)NH * HS, kv_stride = (size_t)c->NKV * HS;
    for (int64_t r = begin; r < end; r++) {
        // r enumerates (b, h, t) with t fastest, the layout of att.
        int t = (int)(r % T), h = (int)((r / T) % NH), b = (int)(r / ((int64_t)T * NH));
        size_t qoff = ((size_t)b * T + t) * q_stride + (size_t)h * HS;
        size_t kvoff = (size_t)b * T * kv_stride + (size_t)(h / group) * HS;
        att_forward_row(c->out + qoff, c->att + (size_t)r * T, c->q + qoff, c->k + kvoff,
                        c->v + kvoff, t, T, HS, kv_stride);
    }
}

void ef_attention_forward(float *out, float *att, const float *q, const float *k,
                          const float *v, int B, int T, int NH, int NKV, int HS, ef_pool *pool) {
    // out, q (B, T, NH*HS); k, v (B, T, NKV*HS); att (B, NH, T, T)
    att_ctx c = {.out = out, .att = att, .q = q, .k = k, .v = v, .B = B, .T = T, .NH = NH,
                 .NKV = NKV, .HS = HS};
    ef_pool_for(pool, (int64_t)B * NH * T, att_forward_rows, &c);
}

size_t ef_attention_workspace(int B, int T, int NH, int NKV, int HS, int n_threads) {
    EF_UNUSED(B);
    EF_UNUSED(NH);
    EF_UNUSED(NKV);
    EF_UNUSED(HS);
    // One row of score gradients (T) per thread.
    return (size_t)(n_threads > 1 ? n_threads : 1) * (size_t)(T > 0 ? T : 0);
}

// All query heads of one (b, kv head) pair. Pointers are at (b, time 0) and
// the first head of the group (q, dq, dout) or the kv head (k, v, dk, dv).
// ds (T) is this thread's scratch.
static void att_backward_group(const att_ctx *c, float *dq, float *dk, float *dv,
                               const float *dout, const float *att, const float *q,
                               const float *k, const float *v, float *restrict ds) {
    int T = c->T, HS = c->HS, group = c->NH / c->NKV;
    size_t q_stride = (size_t)c->NH * HS, kv_stride = (size_t)c->NKV * HS;
    const float scale = 1.0f / sqrtf((float)HS);
    for (int g = 0; g < group; g++) {
        for (int t = 0; t < T; t++) {
            size_t qoff = (size_t)t * q_stride + (size_t)g * HS;
            const float *att_row = att + ((size_t)g * T + t) * T; // (T)
            const float *do_row = dout + qoff;                     // (HS)
            if (!dq && !dk) {
                if (dv)
                    for (int t2 = 0; t2 <= t; t2++)
                        ef__axpy(dv + (size_t)t2 * kv_stride, att_row[t2], do_row, HS);
                continue;
            }
            // Softmax backward: dpre = att (datt - sum(att datt)), with
            // datt[t2] = dout . v[t2]; scaled here so dq and dk need not be.
            // dv shares the pass over v, dq and dk the pass over k.
            float dot = 0.0f;
            for (int t2 = 0; t2 <= t; t2++) {
                const float *v_row = v + (size_t)t2 * kv_stride;
                ds[t2] = ef__dot(do_row, v_row, HS);
                dot += att_row[t2] * ds[t2];
                if (dv) ef__axpy(dv + (size_t)t2 * kv_stride, att_row[t2], do_row, HS);
            }
            for (int t2 = 0; t2 <= t; t2++) {
                float d = att_row[t2] * (ds[t2] - dot) * scale;
                if (dq) ef__axpy(dq + qoff, d, k + (size_t)t2 * kv_stride, HS);
                if (dk) ef__axpy(dk + (size_t)t2 * kv_stride, d, q + qoff, HS);
            }
        }
    }
}

static void att_backward_groups(void *vctx, int64_t begin, int64_t end, int thread) {
    const att_ctx *c = vctx;
    int T = c->T, NH = c->NH, NKV = c->NKV, HS = c->HS, group = NH / NKV;
    size_t q_stride = (size_t)NH * HS, kv_stride = (size_t)NKV * HS;
    float *ds = c->work + (size_t)thread * T;
    for (int64_t r = begin; r < end; r++) {
        int b = (int)(r / NKV), kvh = (int)(r % NKV), h0 = kvh * group;
        size_t qoff = (size_t)b * T * q_stride + (size_t)h0 * HS;
        size_t kvoff = (size_t)b * T * kv_stride + (size_t)kvh * HS;
        const float *att = c->satt + ((size_t)b * NH + h0) * T * T;
        att_backward_group(c, c->dq ? c->dq + qoff : NULL, c->dk ? c->dk + kvoff : NULL,
                           c->dv ? c->dv + kvoff : NULL, c->dout + qoff, att, c->q + qoff,
                           c->k + kvoff, c->v + kvoff, ds);
    }
}

void ef_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *att,
                           const float *q, const float *k, const float *v, int B, int T, int NH,
                           int NKV, int HS, float *work, ef_pool *pool) {
    // dq, dout, q (B, T, NH*HS); dk, dv, k, v (B, T, NKV*HS); att (B, NH, T, T);
    // work (n_threads * T) with n_threads = ef_pool_threads(pool)
    if (!dq && !dk && !dv) return;
    att_ctx c = {.dq = dq, .dk = dk, .dv = dv, .work = work, .dout = dout, .satt = att, .q = q,
                 .k = k, .v = v, .B = B, .T = T, .NH = NH, .NKV = NKV, .HS = HS};
    ef_pool_for(pool, (int64_t)B * NKV, att_backward_groups, &c);
}

void ef_attention_forward_ref(float *out, float *att, const float *q, const float *k,
                              const float *v, int B, int T, int NH, int NKV, int HS) {
    size_t qs = (size_t)NH * HS, kvs = (size_t)NKV * HS;
    double scale = 1.0 / sqrt((double)HS);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            int kvh = h / (NH / NKV);
            for (int t = 0; t < T; t++) {
                const float *qr = q + ((size_t)b * T + t) * qs + (size_t)h * HS;
                float *ar = att + (((size_t)b * NH + h) * T + t) * T;
                // Scores are recomputed in each pass instead of kept in a
                // row, so the reference needs no scratch.
                double mx = -INFINITY;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *kr = k + ((size_t)b * T + t2) * kvs + (size_t)kvh * HS;
                    double s = 0.0;
                    for (int i = 0; i < HS; i++) s += (double)qr[i] * kr[i];
                    if (s * scale > mx) mx = s * scale;
                }
                double sum = 0.0;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *kr = k + ((size_t)b * T + t2) * kvs + (size_t)kvh * HS;
                    double s = 0.0;
                    for (int i = 0; i < HS; i++) s += (double)qr[i] * kr[i];
                    sum += exp(s * scale - mx);
                }
                for (int t2 = 0; t2 < T; t2++) {
                    double p = 0.0;
                    if (t2 <= t) {
                        const float *kr = k + ((size_t)b * T + t2) * kvs + (size_t)kvh * HS;
                        double s = 0.0;
                        for (int j = 0; j < HS; j++) s += (double)qr[j] * kr[j];
                        p = exp(s * scale - mx) / sum;
                    }
                    ar[t2] = (float)p;
                }
                float *outr = out + ((size_t)b * T + t) * qs + (size_t)h * HS;
                const float *vb = v + (size_t)b * T * kvs + (size_t)kvh * HS;
                for (int i = 0; i < HS; i++) {
                    double o = 0.0;
                    for (int t2 = 0; t2 <= t; t2++) o += (double)ar[t2] * vb[(size_t)t2 * kvs + i];
                    outr[i] = (float)o;
                }
            }
        }
}

void ef_attention_backward_ref(float *dq, float *dk, float *dv, const float *dout,
                               const float *att, const float *q, const float *k, const float *v,
                               int B, int T, int NH, int NKV, int HS) {
    size_t qs = (size_t)NH * HS, kvs = (size_t)NKV * HS;
    double scale = 1.0 / sqrt((double)HS);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            int kvh = h / (NH / NKV);
            for (int t = 0; t < T; t++) {
                size_t qo = ((size_t)b * T + t) * qs + (size_t)h * HS;
                const float *ar = att + (((size_t)b * NH + h) * T + t) * T;
                // datt[t2] = dout . v[t2] is recomputed where needed, so the
                // reference needs no scratch.
                double dot = 0.0;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *vr = v + ((size_t)b * T + t2) * kvs + (size_t)kvh * HS;
                    double datt = 0.0;
                    for (int i = 0; i < HS; i++) datt += (double)dout[qo + i] * vr[i];
                    dot += ar[t2] * datt;
                }
                for (int t2 = 0; t2 <= t; t2++) {
                    size_t ko = ((size_t)b * T + t2) * kvs + (size_t)kvh * HS;
                    double datt = 0.0;
                    for (int i = 0; i < HS; i++) datt += (double)dout[qo + i] * v[ko + i];
                    double dpre = ar[t2] * (datt - dot) * scale;
                    for (int i = 0; i < HS; i++) {
                        if (dq) dq[qo + i] += (float)(dpre * k[ko + i]);
                        if (dk) dk[ko + i] += (float)(dpre * q[qo + i]);
                        if (dv) dv[ko + i] += (float)((double)ar[t2] * dout[qo + i]);
                    }
                }
            }
        }
}
