/*
 * Token sampling: greedy, or temperature + top-k + top-p with a seeded
 * generator. Reproducible: the same seed and logits give the same tokens on
 * every machine (deterministic selection, ties broken by token id, one
 * uniform draw per token).
 */
#include <math.h>

#include "core/core_internal.h"
#include "edgefl/rng.h"
#include "edgefl/slm.h"

struct ef_slm_sampler {
    ef_slm_sampling p;
    int vocab;
    ef_rng rng;
    float *prob;   /* (vocab) */
    int32_t *idx;  /* (vocab) candidate ids */
};

ef_status ef_slm_sampler_new(ef_slm_sampler **out, const ef_slm_sampling *p, int vocab) {
    *out = NULL;
    if (!p || vocab <= 0) return ef__fail(EF_ERR_INVALID, "sampler: no parameters or empty vocabulary");
    if (!isfinite(p->temperature))
        return ef__fail(EF_ERR_INVALID, "sampler: temperature %g is not finite", (double)p->temperature);
    if (p->top_k < 0) return ef__fail(EF_ERR_INVALID, "sampler: top-k %d is negative", p->top_k);
    if (!(p->top_p > 0.0f) || isnan(p->top_p))
        return ef__fail(EF_ERR_INVALID, "sampler: top-p %g must be in (0, 1]", (double)p->top_p);
    ef_slm_sampler *s = ef_calloc(1, sizeof *s);
    if (!s) return EF_ERR_NOMEM;
    s->p = *p;
    s->vocab = vocab;
    ef_rng_seed(&s->rng, p->seed);
    s->prob = ef_malloc(sizeof(float) * (size_t)vocab);
    s->idx = ef_malloc(sizeof(int32_t) * (size_t)vocab);
    if (!s->prob || !s->idx) {
        ef_slm_sampler_free(s);
        return EF_ERR_NOMEM;
    }
    *out = s;
    return EF_OK;
}

void ef_slm_sampler_free(ef_slm_sampler *s) {
    if (!s) return;
    ef_free(s->prob);
    ef_free(s->idx);
    ef_free(s);
}

/* Candidate a ranks before b: higher probability, then lower id. */
static inline int before(const float *pr, int32_t a, int32_t b) {
    return pr[a] > pr[b] || (pr[a] == pr[b] && a < b);
}

/* Moves the m best of idx[0..n) to idx[0..m) (in no order): quickselect. */
static void select_top(const float *pr, int32_t *idx, int n, int m) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        /* median of three as the pivot keeps it linear on sorted input */
        int mid = lo + (hi - lo) / 2;
        int32_t a = idx[lo], b = idx[mid], c = idx[hi], piv;
        if (before(pr, a, b)) piv = before(pr, b, c) ? b : (before(pr, a, c) ? c : a);
        else piv = before(pr, a, c) ? a : (before(pr, b, c) ? c : b);
        int i = lo, j = hi;
        while (i <= j) {
            while (before(pr, idx[i], piv)) i++;
            while (before(pr, piv, idx[j])) j--;
            if (i <= j) {
                int32_t t = idx[i];
                idx[i] = idx[j];
                idx[j] = t;
                i++;
                j--;
            }
        }
        if (m - 1 <= j) hi = j;
        else if (m - 1 >= i) lo = i;
        else break;
    }
}

/* Sorts idx[0..n) best first: insertion sort for the usual short prefix,
 * heapsort (worst case n log n) for long ones. */
static void sort_top(const float *pr, int32_t *idx, int n) {
    if (n <= 64) {
        for (int i = 1; i < n; i++) {
            int32_t v = idx[i];
            int j = i - 1;
            while (j >= 0 && before(pr, v, idx[j])) {
                idx[j + 1] = idx[j];
                j--;
            }
            idx[j + 1] = v;
        }
        return;
    }
    /* a heap whose root is the worst candidate; popping it to the end leaves
     * the best first */
    for (int start = n / 2 - 1, end = n;; ) {
        int root;
        if (start >= 0) {
            root = start--;
        } else {
            if (--end <= 0) break;
            int32_t t = idx[0];
            idx[0] = idx[end];
            idx[end] = t;
            root = 0;
        }
        for (;;) {
            int child = 2 * root + 1;
            if (child >= end) break;
            if (child + 1 < end && before(pr, idx[child], idx[child + 1])) child++; /* the worse child */
            if (!before(pr, idx[root], idx[child])) break;
            int32_t t = idx[root];
            idx[root] = idx[child];
            idx[child] = t;
            root = child;
        }
    }
}

int32_t ef_slm_sample(ef_slm_sampler *s, const float *logits) {
    const int V = s->vocab;
    int32_t best = 0;
    float bv = -INFINITY;
    for (int i = 0; i < V; i++)
        if (logits[i] > bv) { /* NaN never wins; the first of equal maxima does */
            bv = logits[i];
            best = i;
        }
    if (s->p.temperature <= 0.0f || !isfinite(bv)) return best;
    /* probabilities up to a constant: exp((l - max) / T) */
    const float inv_t = 1.0f / s->p.temperature;
    int n = 0;
    for (int i = 0; i < V; i++) {
        float l = logits[i];
        if (!(l >= -INFINITY)) continue; /* NaN */
        float p = expf((l - bv) * inv_t);
        s->prob[i] = p;
        if (p > 0.0f) s->idx[n++] = i;
    }
    const float *pr = s->prob;
    int32_t *idx = s->idx;
    if (s->p.top_k > 0 && s->p.top_k < n) {
        select_top(pr, idx, n, s->p.top_k);
        n = s->p.top_k;
    }
    if (s->p.top_p < 1.0f) {
        double total = 0.0;
        for (int i = 0; i < n; i++) total += pr[idx[i]];
        /* sort a prefix big enough to reach top_p of the mass, growing it as needed */
        int m = n < 32 ? n : 32;
        for (;;) {
            if (m < n) select_top(pr, idx, n, m);
            sort_top(pr, idx, m);
            double cum = 0.0;
            int keep = m;
            for (int i = 0; i < m; i++) {
                cum += pr[idx[i]];
                if (cum >= (double)s->p.top_p * total) {
                    keep = i + 1;
                    break;
                }
            }
            if (cum >= (double)s->p.top_p * total || m == n) {
                n = keep;
                break;
            }
            m = m * 4 < n ? m * 4 : n;
        }
    } else {
        /* a fixed order for the draw (the candidates' order after selection
         * is deterministic but not meaningful; ids are) */
        if (s->p.top_k > 0 && n == s->p.top_k) sort_top(pr, idx, n);
    }
    double total = 0.0;
    for (int i = 0; i < n; i++) total += pr[idx[i]];
    double u = ef_rng_uniform_double(&s->rng) * total, cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += pr[idx[i]];
        if (u < cum) return idx[i];
    }
    return idx[n - 1];
}
