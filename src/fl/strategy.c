/*
 * Aggregation strategies of the federated server (include/edgefl/strategy.h):
 * FedAvg/FedProx, FedAvgM, the adaptive server optimizers of Reddi et al.
 * 2021 (FedAdam, FedYogi, FedAdagrad), and the robust aggregators
 * (coordinate-wise median, trimmed mean, Krum, Multi-Krum).
 *
 * Numerics. The streaming strategies accumulate sum(w_i * d_i) and sum(w_i)
 * in double; the robust ones compute their aggregate in double too. The
 * server-optimizer state (FedAvgM's v, Adam's m and v) is stored in float
 * (O(model), like the model) and every per-coordinate update is evaluated in
 * double and rounded once. The state starts at 0, as Flower initialises it
 * (Reddi et al. write v_{-1} >= tau^2); there is no bias correction, as in
 * the paper. FedAdagrad takes m = mean delta (Flower's beta_1 = 0).
 *
 * Layout of the robust strategies' updates: update-major (slot i holds the
 * n_params floats of update i contiguously). Adding an update is then one
 * memcpy, and Krum's pairwise distances read whole rows. Median and trimmed
 * mean need a coordinate's n values together, which are strided in this
 * layout, so they work on blocks of B coordinates (B * n <= 8192 floats
 * when n <= 1024, in L1/L2): each row's B floats are copied contiguously
 * into a scratch, and
 *   - n <= NET_MAX: the n scratch rows are sorted lane by lane with a
 *     sorting network (Batcher's odd-even merge sort) whose
 *     compare-exchanges are branch-free min/max over the B lanes, which the
 *     compiler vectorizes; O(n log^2 n) per coordinate but several times
 *     faster than a branchy selection at the sizes of a federated round;
 *   - larger n: the block is transposed so that each coordinate's column is
 *     contiguous, and an O(n) introselect (quickselect with a
 *     median-of-three pivot and Hoare partition, falling back to heapsort
 *     when the partitions stay unbalanced, so crafted updates cannot make it
 *     quadratic) finds the middle or the cut points.
 * The coordinate-major layout would make each add a scatter with stride
 * max_updates and Krum's rows strided.
 *
 * Every apply first checks that the new global (and optimizer state) is
 * finite in float without writing anything, then writes: a refused apply
 * leaves the global, the state and the round untouched.
 */
#include <math.h>
#include <string.h>

#include "core/core_internal.h"
#include "edgefl/strategy.h"
#include "fl/strategy_internal.h"

#define N_KINDS 10
#define NET_MAX EF__STRATEGY_NET_MAX /* sorting network up to this many updates */
#define BLOCK_FLOATS 8192   /* scratch of the median/trimmed blocks: 32 KiB or more */
#define KRUM_BLOCK 1024     /* coordinates per block of the distance computation */

struct ef_strategy {
    ef_strategy_config cfg;
    size_t n_params;
    size_t max_updates;
    size_t count;   /* updates added in this round */
    double wsum;    /* streaming: sum of weights of this round */
    double *acc;    /* (n_params) streaming: sum w_i d_i; robust: the aggregate at apply */
    float *m;       /* (n_params) FedAvgM velocity, FedAdam/FedYogi first moment */
    float *v;       /* (n_params) FedAdam/FedYogi/FedAdagrad second moment */
    float *slots;   /* (max_updates, n_params) robust: this round's updates */
    float *col;     /* (col_cap) median/trimmed: one block of coordinates of every update */
    size_t col_cap; /* floats in col */
    double *dist;   /* (max_updates, max_updates) Krum: squared distances */
    double *score;  /* (max_updates) Krum scores */
    double *near;   /* (max_updates) Krum: one row's distances, for selection */
    size_t *order;  /* (max_updates) Krum: updates by score */
};

static const char *const kind_names[N_KINDS] = {
    "fedavg",  "fedprox",    "fedavgm",   "fedadam",       "fedyogi",
    "fedadagrad", "fedmedian", "fedtrimmedavg", "krum", "multikrum"};

static int is_adaptive(ef_strategy_kind k) {
    return k == EF_STRAT_FEDADAM || k == EF_STRAT_FEDYOGI || k == EF_STRAT_FEDADAGRAD;
}

static int is_krum(ef_strategy_kind k) { return k == EF_STRAT_KRUM || k == EF_STRAT_MULTIKRUM; }

ef_strategy_config ef_strategy_defaults(ef_strategy_kind kind) {
    ef_strategy_config c = {
        .kind = kind,
        .server_lr = is_adaptive(kind) ? 0.01f : 1.0f,
        .server_momentum = 0.9f,
        .beta1 = 0.9f,
        .beta2 = 0.99f,
        .tau = 1e-3f,
        .proximal_mu = 0.01f,
        .trim_beta = 0.1f,
        .krum_f = 1,
        .multikrum_m = 0,
    };
    return c;
}

const char *ef_strategy_name(ef_strategy_kind kind) {
    if ((unsigned)kind >= N_KINDS) return "unknown";
    return kind_names[kind];
}

ef_status ef_strategy_parse(const char *name, ef_strategy_kind *out) {
    if (name)
        for (int k = 0; k < N_KINDS; k++)
            if (strcmp(name, kind_names[k]) == 0) {
                *out = (ef_strategy_kind)k;
                return EF_OK;
            }
    return ef__fail(EF_ERR_INVALID,
                    "unknown strategy '%s' (expected fedavg, fedprox, fedavgm, fedadam, fedyogi, "
                    "fedadagrad, fedmedian, fedtrimmedavg, krum or multikrum)",
                    name ? name : "(null)");
}

int ef_strategy_keeps_updates(ef_strategy_kind kind) {
    return kind == EF_STRAT_FEDMEDIAN || kind == EF_STRAT_FEDTRIMMEDAVG || is_krum(kind);
}

double ef_staleness_weight(uint32_t staleness, double exponent) {
    if (!(exponent >= 0.0) || !isfinite(exponent)) return NAN;
    return pow(1.0 + (double)staleness, -exponent);
}

/* ---- construction ---------------------------------------------------------- */

static int in_unit(float x) { return x >= 0.0f && x < 1.0f; } /* false for NaN */

static ef_status validate(const ef_strategy_config *c, size_t n_params, size_t max_updates) {
    if ((unsigned)c->kind >= N_KINDS)
        return ef__fail(EF_ERR_INVALID, "unknown strategy kind %d", (int)c->kind);
    const char *name = kind_names[c->kind];
    if (n_params == 0) return ef__fail(EF_ERR_INVALID, "%s: n_params must be > 0", name);
    if (max_updates == 0) return ef__fail(EF_ERR_INVALID, "%s: max_updates must be > 0", name);
    if (!(c->server_lr > 0.0f) || !isfinite(c->server_lr))
        return ef__fail(EF_ERR_INVALID, "%s: server_lr must be a finite number > 0 (got %g)", name,
                        (double)c->server_lr);
    switch (c->kind) {
    case EF_STRAT_FEDPROX:
        if (!(c->proximal_mu >= 0.0f) || !isfinite(c->proximal_mu))
            return ef__fail(EF_ERR_INVALID, "fedprox: proximal_mu must be finite and >= 0 (got %g)",
                            (double)c->proximal_mu);
        break;
    case EF_STRAT_FEDAVGM:
        if (!in_unit(c->server_momentum))
            return ef__fail(EF_ERR_INVALID, "fedavgm: server_momentum must be in [0, 1) (got %g)",
                            (double)c->server_momentum);
        break;
    case EF_STRAT_FEDADAM:
    case EF_STRAT_FEDYOGI:
        if (!in_unit(c->beta1))
            return ef__fail(EF_ERR_INVALID, "%s: beta1 must be in [0, 1) (got %g)", name,
                            (double)c->beta1);
        if (!in_unit(c->beta2))
            return ef__fail(EF_ERR_INVALID, "%s: beta2 must be in [0, 1) (got %g)", name,
                            (double)c->beta2);
        /* fall through */
    case EF_STRAT_FEDADAGRAD:
        if (!(c->tau > 0.0f) || !isfinite(c->tau))
            return ef__fail(EF_ERR_INVALID, "%s: tau must be a finite number > 0 (got %g)", name,
                            (double)c->tau);
        break;
    case EF_STRAT_FEDTRIMMEDAVG:
        if (!(c->trim_beta >= 0.0f && c->trim_beta < 0.5f))
            return ef__fail(EF_ERR_INVALID, "fedtrimmedavg: trim_beta must be in [0, 0.5) (got %g)",
                            (double)c->trim_beta);
        break;
    case EF_STRAT_KRUM:
    case EF_STRAT_MULTIKRUM: {
        if (c->krum_f < 0)
            return ef__fail(EF_ERR_INVALID, "%s: krum_f must be >= 0 (got %d)", name, c->krum_f);
        /* n > 2f + 2 must be reachable, or every round would be refused */
        size_t need = 2 * (size_t)c->krum_f + 3;
        if (max_updates < need)
            return ef__fail(EF_ERR_INVALID,
                            "%s: krum_f = %d needs at least %zu updates per round, but "
                            "max_updates is %zu",
                            name, c->krum_f, need, max_updates);
        if (c->kind == EF_STRAT_MULTIKRUM) {
            if (c->multikrum_m < 0)
                return ef__fail(EF_ERR_INVALID, "multikrum: multikrum_m must be >= 0 (got %d)",
                                c->multikrum_m);
            if ((size_t)c->multikrum_m > max_updates)
                return ef__fail(EF_ERR_INVALID,
                                "multikrum: multikrum_m = %d exceeds max_updates = %zu",
                                c->multikrum_m, max_updates);
        }
        break;
    }
    default:
        break;
    }
    return EF_OK;
}

// Allocates n x size bytes (overflow-checked), uninitialized.
static void *alloc_array(size_t n, size_t size) {
    size_t total;
    if (!ef__mul_size(n, size, &total)) {
        ef__fail(EF_ERR_NOMEM, "allocation of %zu x %zu bytes overflows", n, size);
        return NULL;
    }
    return ef_malloc(total);
}

ef_status ef_strategy_new(ef_strategy **out, const ef_strategy_config *cfg, size_t n_params,
                          size_t max_updates) {
    *out = NULL;
    if (!cfg) return ef__fail(EF_ERR_INVALID, "strategy config is NULL");
    ef_status st = validate(cfg, n_params, max_updates);
    if (st != EF_OK) return st;
    ef_strategy_kind k = cfg->kind;
    ef_strategy *s = ef_calloc(1, sizeof *s);
    if (!s) return EF_ERR_NOMEM;
    s->cfg = *cfg;
    s->n_params = n_params;
    s->max_updates = max_updates;
    /* acc is written before it is read (first add or the robust aggregate) */
    if (!(s->acc = alloc_array(n_params, sizeof(double)))) goto fail;
    int has_m = k == EF_STRAT_FEDAVGM || k == EF_STRAT_FEDADAM || k == EF_STRAT_FEDYOGI;
    if (has_m && !(s->m = ef_calloc(n_params, sizeof(float)))) goto fail;
    if (is_adaptive(k) && !(s->v = ef_calloc(n_params, sizeof(float)))) goto fail;
    if (ef_strategy_keeps_updates(k)) {
        size_t total;
        if (!ef__mul_size(n_params, max_updates, &total)) {
            ef__fail(EF_ERR_NOMEM, "%zu updates of %zu parameters overflow the address space",
                     max_updates, n_params);
            goto fail;
        }
        if (!(s->slots = alloc_array(total, sizeof(float)))) goto fail;
    }
    if (k == EF_STRAT_FEDMEDIAN || k == EF_STRAT_FEDTRIMMEDAVG) {
        // room for blocks of at least 8 coordinates of max_updates updates
        size_t cap = max_updates > BLOCK_FLOATS / 8 ? max_updates : BLOCK_FLOATS / 8;
        s->col_cap = cap * 8;
        if (!(s->col = alloc_array(cap, 8 * sizeof(float)))) goto fail;
    }
    if (is_krum(k)) {
        size_t sq;
        if (!ef__mul_size(max_updates, max_updates, &sq)) {
            ef__fail(EF_ERR_NOMEM, "Krum distance matrix of %zu updates overflows", max_updates);
            goto fail;
        }
        if (!(s->dist = alloc_array(sq, sizeof(double)))) goto fail;
        if (!(s->score = alloc_array(max_updates, sizeof(double)))) goto fail;
        if (!(s->near = alloc_array(max_updates, sizeof(double)))) goto fail;
        if (!(s->order = alloc_array(max_updates, sizeof(size_t)))) goto fail;
    }
    *out = s;
    return EF_OK;
fail:
    ef_strategy_free(s);
    return EF_ERR_NOMEM;
}

void ef_strategy_free(ef_strategy *s) {
    if (!s) return;
    ef_free(s->acc);
    ef_free(s->m);
    ef_free(s->v);
    ef_free(s->slots);
    ef_free(s->col);
    ef_free(s->dist);
    ef_free(s->score);
    ef_free(s->near);
    ef_free(s->order);
    ef_free(s);
}

const ef_strategy_config *ef_strategy_get_config(const ef_strategy *s) { return &s->cfg; }

void ef_strategy_begin(ef_strategy *s) {
    s->count = 0;
    s->wsum = 0.0;
}

size_t ef_strategy_count(const ef_strategy *s) { return s->count; }

/* ---- adding updates --------------------------------------------------------- */

ef_status ef_strategy_add(ef_strategy *s, const float *delta, double weight) {
    const char *name = kind_names[s->cfg.kind];
    if (!delta) return ef__fail(EF_ERR_INVALID, "%s: delta is NULL", name);
    if (!(weight > 0.0) || !isfinite(weight))
        return ef__fail(EF_ERR_INVALID, "%s: update weight must be a finite number > 0 (got %g)",
                        name, weight);
    if (s->count >= s->max_updates)
        return ef__fail(EF_ERR_RANGE, "%s: round already has max_updates = %zu updates", name,
                        s->max_updates);
    size_t n = s->n_params;
    // Scan first so that a rejected update leaves no trace.
    for (size_t j = 0; j < n; j++)
        if (!isfinite(delta[j]))
            return ef__fail(EF_ERR_INVALID, "%s: update has a non-finite value (%g) at parameter %zu",
                            name, (double)delta[j], j);
    if (ef_strategy_keeps_updates(s->cfg.kind)) {
        memcpy(s->slots + s->count * n, delta, n * sizeof(float));
    } else {
        double wsum = s->wsum + weight;
        if (!isfinite(wsum))
            return ef__fail(EF_ERR_RANGE, "%s: the round's total weight overflows", name);
        double *acc = s->acc;
        if (s->count == 0) // the first update initialises the sum: no zeroing pass
            for (size_t j = 0; j < n; j++) acc[j] = weight * delta[j];
        else
            for (size_t j = 0; j < n; j++) acc[j] += weight * delta[j];
        s->wsum = wsum;
    }
    s->count++;
    return EF_OK;
}

/* ---- selection ---------------------------------------------------------------- */

static inline void swapf(float *a, float *b) {
    float t = *a;
    *a = *b;
    *b = t;
}

static void insertion_sort(float *a, size_t n) {
    for (size_t i = 1; i < n; i++) {
        float x = a[i];
        size_t j = i;
        while (j > 0 && a[j - 1] > x) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

static void sift_down(float *a, size_t root, size_t n) {
    for (;;) {
        size_t c = 2 * root + 1;
        if (c >= n) return;
        if (c + 1 < n && a[c + 1] > a[c]) c++;
        if (!(a[c] > a[root])) return;
        swapf(&a[c], &a[root]);
        root = c;
    }
}

static void heap_sort(float *a, size_t n) {
    for (size_t i = n / 2; i-- > 0;) sift_down(a, i, n);
    for (size_t end = n; end-- > 1;) {
        swapf(&a[0], &a[end]);
        sift_down(a, 0, end);
    }
}

/*
 * Introselect: Hoare partitions around a median-of-three pivot while the
 * budget lasts, then heapsort of what is left, bounding the worst case at
 * O(n log n) whatever the input.
 */
void ef__select_kth(float *a, size_t n, size_t k, int budget) {
    if (budget < 0) {
        budget = 8;
        for (size_t m = n; m > 1; m >>= 1) budget += 2;
    }
    size_t lo = 0, hi = n; // [lo, hi) holds rank k
    while (hi - lo > 16) {
        if (budget-- == 0) {
            heap_sort(a + lo, hi - lo);
            return;
        }
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < a[lo]) swapf(&a[mid], &a[lo]);
        if (a[hi - 1] < a[lo]) swapf(&a[hi - 1], &a[lo]);
        if (a[hi - 1] < a[mid]) swapf(&a[hi - 1], &a[mid]);
        float p = a[mid];
        // a[lo] <= p <= a[hi - 1] act as sentinels for the scans.
        size_t i = lo, j = hi - 1;
        for (;;) {
            while (a[i] < p) i++;
            while (a[j] > p) j--;
            if (i >= j) break;
            swapf(&a[i], &a[j]);
            i++;
            j--;
        }
        // Now a[lo..j] <= p <= a[j+1..hi), both parts non-empty.
        if (k <= j) hi = j + 1;
        else lo = j + 1;
    }
    insertion_sort(a + lo, hi - lo);
}

// Median of a[0..n) (reordered), the mean of the two middle values for even n.
double ef__median_select(float *a, size_t n) {
    size_t k = n / 2;
    ef__select_kth(a, n, k, -1);
    if (n & 1) return a[k];
    float lo = a[0]; // the lower middle is the largest of a[0..k)
    for (size_t i = 1; i < k; i++)
        if (a[i] > lo) lo = a[i];
    return 0.5 * ((double)lo + (double)a[k]);
}

// Mean of a[0..n) (reordered) without its cut smallest and cut largest values.
double ef__trimmed_select(float *a, size_t n, size_t cut) {
    if (cut) {
        ef__select_kth(a, n, cut - 1, -1);                  // a[0..cut) are the smallest
        ef__select_kth(a + cut, n - cut, n - 2 * cut, -1); // a[n-cut..n) are the largest
    }
    double sum = 0.0;
    for (size_t i = cut; i < n - cut; i++) sum += a[i];
    return sum / (double)(n - cut * 2);
}

/* 16-byte vectors: SSE on every x86-64, NEON on aarch64 (wider generic
 * vectors are split into scalars, not halves, without AVX). */
typedef float vf4 __attribute__((vector_size(16)));
typedef int32_t vi4 __attribute__((vector_size(16)));

static inline void cmpx_rows(float *restrict lo, float *restrict hi, size_t B) {
    size_t x = 0;
    // GCC does not if-convert a float `u < v ? u : v` (it could trap), so
    // the select is spelled out on vectors: compare mask, and/andnot/or.
    for (; x + 4 <= B; x += 4) {
        vf4 u, v;
        memcpy(&u, lo + x, sizeof u);
        memcpy(&v, hi + x, sizeof v);
        vi4 m = u < v, ui = (vi4)u, vj = (vi4)v;
        vi4 mn = (ui & m) | (vj & ~m), mx = (vj & m) | (ui & ~m);
        memcpy(lo + x, &mn, sizeof mn);
        memcpy(hi + x, &mx, sizeof mx);
    }
    for (; x < B; x++) {
        float u = lo[x], v = hi[x];
        if (v < u) lo[x] = v, hi[x] = u;
    }
}

/*
 * Batcher's odd-even merge sort of the rows, generated for any n (as if
 * padded with +inf; checked exhaustively for n <= 26 with the 0-1
 * principle): O(n log^2 n) compare-exchanges, each a branch-free min/max
 * over B lanes. Per-coordinate selection is O(n) but its comparisons
 * mispredict about half the time on random data; measured on one x86-64
 * core with SSE, the network is 3-5x faster for n <= 200, 2x at n = 400,
 * and even with the selection around n = 1000, hence NET_MAX = 512.
 */
void ef__sort_rows(float *r, size_t n, size_t B) {
    for (size_t p = 1; p < n; p += p)
        for (size_t k = p; k > 0; k /= 2)
            for (size_t j = k % p; j + k < n; j += k + k)
                for (size_t i = 0; i < k && i + j + k < n; i++)
                    if ((i + j) / (p + p) == (i + j + k) / (p + p))
                        cmpx_rows(r + (i + j) * B, r + (i + j + k) * B, B);
}

/* ---- aggregation ----------------------------------------------------------------- */

// Median or trimmed mean of every coordinate into s->acc, one block of
// coordinates at a time (see the file comment).
static void coordinatewise(ef_strategy *s, size_t n, size_t cut) {
    const size_t np = s->n_params;
    const int median = s->cfg.kind == EF_STRAT_FEDMEDIAN;
    float *col = s->col;
    // Coordinates per block: as many as fit the scratch for this round's n
    // (up to 256), whole vectors of the network's lanes.
    size_t block = s->col_cap / n;
    if (block > 256) block = 256;
    if (block > 4) block &= ~(size_t)3;
    for (size_t j0 = 0; j0 < np; j0 += block) {
        size_t B = np - j0 < block ? np - j0 : block;
        double *out = s->acc + j0;
        if (n <= NET_MAX) {
            // (n, B): row i holds update i's B coordinates, sorted lane-wise
            for (size_t i = 0; i < n; i++) memcpy(col + i * B, s->slots + i * np + j0, B * sizeof(float));
            ef__sort_rows(col, n, B);
            const float *mid = col + (n / 2) * B;
            if (median && (n & 1)) {
                for (size_t b = 0; b < B; b++) out[b] = mid[b];
            } else if (median) {
                for (size_t b = 0; b < B; b++) out[b] = 0.5 * ((double)mid[b - B] + (double)mid[b]);
            } else {
                for (size_t b = 0; b < B; b++) out[b] = col[cut * B + b];
                for (size_t i = cut + 1; i < n - cut; i++)
                    for (size_t b = 0; b < B; b++) out[b] += col[i * B + b];
                for (size_t b = 0; b < B; b++) out[b] /= (double)(n - 2 * cut);
            }
        } else {
            // (B, n): column b holds coordinate j0 + b of every update
            for (size_t i = 0; i < n; i++) {
                const float *row = s->slots + i * np + j0;
                for (size_t b = 0; b < B; b++) col[b * n + i] = row[b];
            }
            for (size_t b = 0; b < B; b++)
                out[b] = median ? ef__median_select(col + b * n, n)
                                : ef__trimmed_select(col + b * n, n, cut);
        }
    }
}

// Krum scores into s->score and the updates ordered by (score, index) into s->order.
static void krum_scores(ef_strategy *s, size_t n, size_t f) {
    const size_t np = s->n_params;
    double *d = s->dist; // (n, n), the upper triangle accumulated
    for (size_t i = 0; i < n * n; i++) d[i] = 0.0;
    // Coordinate blocks keep the n row pieces in cache while all pairs use
    // them; each pair's sum still runs over the coordinates in order.
    for (size_t j0 = 0; j0 < np; j0 += KRUM_BLOCK) {
        size_t B = np - j0 < KRUM_BLOCK ? np - j0 : KRUM_BLOCK;
        for (size_t a = 0; a < n; a++) {
            const float *ra = s->slots + a * np + j0;
            for (size_t b = a + 1; b < n; b++) {
                const float *rb = s->slots + b * np + j0;
                double sum = d[a * n + b];
                for (size_t j = 0; j < B; j++) {
                    double t = (double)ra[j] - (double)rb[j];
                    sum += t * t;
                }
                d[a * n + b] = sum;
            }
        }
    }
    size_t keep = n - f - 2; // nearest neighbours scored
    for (size_t i = 0; i < n; i++) {
        size_t m = 0;
        for (size_t o = 0; o < n; o++)
            if (o != i) s->near[m++] = i < o ? d[i * n + o] : d[o * n + i];
        // partial selection sort: the keep smallest of n - 1 (n is small)
        double sc = 0.0;
        for (size_t t = 0; t < keep; t++) {
            size_t best = t;
            for (size_t u = t + 1; u < m; u++)
                if (s->near[u] < s->near[best]) best = u;
            double x = s->near[best];
            s->near[best] = s->near[t];
            s->near[t] = x;
            sc += x;
        }
        s->score[i] = sc;
    }
    // Stable insertion sort by score: ties keep the lowest index first.
    for (size_t i = 0; i < n; i++) {
        size_t x = s->order[i] = i, j = i;
        while (j > 0 && s->score[s->order[j - 1]] > s->score[x]) {
            s->order[j] = s->order[j - 1];
            j--;
        }
        s->order[j] = x;
    }
}

// Number of values cut at each end by FedTrimmedAvg for n updates.
static size_t trim_cut(float beta, size_t n) {
    // The slack (> float's relative rounding 6e-8) makes 0.35f * 20 give 7.
    return (size_t)floor((double)beta * (double)n * (1.0 + 1e-6));
}

/*
 * One step of the server update at coordinate j given the aggregate a:
 * new global, and new state in *m_out / *v_out (when the kind has them).
 * Evaluated in double; the caller rounds.
 */
static inline double step_coord(const ef_strategy *s, size_t j, double g, double a, double *m_out,
                                 double *v_out) {
    const ef_strategy_config *c = &s->cfg;
    switch (c->kind) {
    case EF_STRAT_FEDAVGM: {
        double v = (double)c->server_momentum * s->m[j] + a;
        *m_out = v;
        return g + (double)c->server_lr * v;
    }
    case EF_STRAT_FEDADAM:
    case EF_STRAT_FEDYOGI:
    case EF_STRAT_FEDADAGRAD: {
        // FedAdagrad keeps no first moment: m = a (beta1 = 0, as Flower).
        double b1 = c->beta1, b2 = c->beta2;
        double m = s->m ? b1 * s->m[j] + (1.0 - b1) * a : a;
        double v = s->v[j], a2 = a * a;
        if (c->kind == EF_STRAT_FEDADAM) v = b2 * v + (1.0 - b2) * a2;
        else if (c->kind == EF_STRAT_FEDYOGI) v = v - (1.0 - b2) * a2 * (double)((v > a2) - (v < a2));
        else v = v + a2;
        *m_out = m;
        *v_out = v;
        return g + (double)c->server_lr * m / (sqrt(v) + (double)c->tau);
    }
    default:
        return g + (double)c->server_lr * a;
    }
}

static int finite_f(double x) { return isfinite((float)x); }

/*
 * Applies the aggregate (s->acc, divided by `div`) to global. With write = 0
 * only checks that every new value is finite in float; returns the first
 * coordinate that is not, or n_params when all are.
 */
static size_t update_pass(ef_strategy *s, float *global, double div, int write) {
    const size_t np = s->n_params;
    for (size_t j = 0; j < np; j++) {
        double m = 0.0, v = 0.0;
        double g = step_coord(s, j, global[j], s->acc[j] / div, &m, &v);
        if (!write) {
            if (!finite_f(g) || (s->m && !finite_f(m)) || (s->v && !finite_f(v))) return j;
            continue;
        }
        global[j] = (float)g;
        if (s->m) s->m[j] = (float)m;
        if (s->v) s->v[j] = (float)v;
    }
    return np;
}

ef_status ef_strategy_apply(ef_strategy *s, float *global) {
    const ef_strategy_config *c = &s->cfg;
    const char *name = kind_names[c->kind];
    size_t n = s->count;
    if (!global) return ef__fail(EF_ERR_INVALID, "%s: global is NULL", name);
    if (n == 0) return ef__fail(EF_ERR_STATE, "%s: no updates in this round", name);
    double div = 1.0;
    switch (c->kind) {
    case EF_STRAT_FEDMEDIAN:
        coordinatewise(s, n, 0);
        break;
    case EF_STRAT_FEDTRIMMEDAVG: {
        size_t cut = trim_cut(c->trim_beta, n);
        if (2 * cut >= n)
            return ef__fail(EF_ERR_STATE,
                            "fedtrimmedavg: trim_beta = %g cuts %zu of %zu updates at each end, "
                            "leaving none",
                            (double)c->trim_beta, cut, n);
        coordinatewise(s, n, cut);
        break;
    }
    case EF_STRAT_KRUM:
    case EF_STRAT_MULTIKRUM: {
        size_t f = (size_t)c->krum_f;
        if (n <= 2 * f + 2)
            return ef__fail(EF_ERR_STATE, "%s: needs more than 2f + 2 = %zu updates, got %zu",
                            name, 2 * f + 2, n);
        size_t m = c->kind == EF_STRAT_KRUM ? 1 : c->multikrum_m ? (size_t)c->multikrum_m : n - f;
        if (m > n)
            return ef__fail(EF_ERR_STATE, "multikrum: multikrum_m = %zu exceeds the %zu updates",
                            m, n);
        krum_scores(s, n, f);
        const size_t np = s->n_params;
        const float *r0 = s->slots + s->order[0] * np;
        for (size_t j = 0; j < np; j++) s->acc[j] = r0[j];
        for (size_t t = 1; t < m; t++) {
            const float *r = s->slots + s->order[t] * np;
            for (size_t j = 0; j < np; j++) s->acc[j] += r[j];
        }
        div = (double)m;
        break;
    }
    default: // streaming: acc holds sum(w_i d_i)
        div = s->wsum;
        break;
    }
    size_t bad = update_pass(s, global, div, 0);
    if (bad < s->n_params)
        return ef__fail(EF_ERR_RANGE,
                        "%s: the update would make parameter %zu (now %g) or its optimizer state "
                        "non-finite in float",
                        name, bad, (double)global[bad]);
    update_pass(s, global, div, 1);
    ef_strategy_begin(s);
    return EF_OK;
}

size_t ef_strategy_state_count(const ef_strategy *s) { return (s->m != NULL) + (s->v != NULL); }

float *ef_strategy_state(ef_strategy *s, size_t i, const char **name) {
    if (i == 0 && s->m) {
        if (name) *name = "m";
        return s->m;
    }
    if (i == (s->m != NULL) && s->v) {
        if (name) *name = "v";
        return s->v;
    }
    return NULL;
}
