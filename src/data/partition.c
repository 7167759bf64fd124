/*
 * Partitioners: how a centralized dataset is split among simulated federated
 * clients (iid, Dirichlet label skew, McMahan shards, quantity skew, natural
 * groups) plus per-client train/held-out splits. Every result is one index
 * array cut into per-client slices, so memory is O(n + n_clients) whatever
 * the client count, and every step is O(n + n_clients * n_classes) time:
 * 10,000 or 100,000 clients cost no more than their offsets.
 *
 * Determinism: everything derives from the caller's seed through ef_rng, with
 * one forked stream per purpose (example shuffles, Dirichlet draws, the
 * min-size fix-up, shard order, final slice shuffles), so a change in how
 * much one step draws never shifts the randomness of another.
 */
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core_internal.h"
#include "data/partition_internal.h"
#include "edgefl/partition.h"
#include "edgefl/rng.h"

/* Stream ids for ef_rng_fork (see the file comment). */
enum {
    STREAM_SHUFFLE = 1, /* iid order, per-class order */
    STREAM_PROPS = 2,   /* Dirichlet proportions */
    STREAM_FIXUP = 3,   /* which examples the min-size fix-up moves */
    STREAM_SHARDS = 4,  /* shard-to-client assignment */
    STREAM_SLICES = 5   /* final shuffle of each client's slice */
};

#define SPEC_FORMS "iid, dirichlet:ALPHA, shards:K, quantity:ALPHA (ALPHA > 0, K >= 1 an integer)"

/* ---- Gamma and Dirichlet sampling ---------------------------------------- */

/* Marsaglia and Tsang, "A simple method for generating gamma variables"
 * (ACM TOMS 2000), valid for a >= 1: a squeeze test on x^4 accepts almost
 * every draw without a log; the exact test catches the rest. */
static double gamma_ge1(ef_rng *r, double a) {
    const double d = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = ef_rng_normal(r);
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        double u = ef_rng_uniform_double(r), x2 = x * x;
        if (u < 1.0 - 0.0331 * x2 * x2) return d * v;
        if (log(u) < 0.5 * x2 + d * (1.0 - v + log(v))) return d * v;
    }
}

double ef__gamma(ef_rng *r, double alpha) {
    if (alpha >= 1.0) return gamma_ge1(r, alpha);
    /* Gamma(a) = Gamma(a + 1) * U^(1/a) (Marsaglia and Tsang, section 6);
     * U on (0, 1] so that U^(1/a) is never 0 by construction. */
    double g = gamma_ge1(r, alpha + 1.0);
    double u = 1.0 - ef_rng_uniform_double(r);
    return g * pow(u, 1.0 / alpha);
}

double ef__log_gamma(ef_rng *r, double alpha) {
    if (alpha >= 1.0) return log(gamma_ge1(r, alpha));
    double g = gamma_ge1(r, alpha + 1.0);
    double u = 1.0 - ef_rng_uniform_double(r);
    return log(g) + log(u) / alpha;
}

/*
 * Dirichlet(alpha) weights over m entries, unnormalized: w[c] = G_c / max G
 * over the entries with keep[c] != 0 (the others get 0), computed from
 * log-Gamma draws so that small alpha (where most G_c underflow in double)
 * still yields proportions. Draws for all m entries whatever `keep` says, so
 * the stream does not depend on it. Returns the sum (>= 1: the largest kept
 * weight is exactly 1) and the index of the last positive weight in *last;
 * returns 0 if nothing is kept. `keep` NULL keeps everything.
 */
static double dirichlet_weights(ef_rng *r, double alpha, size_t m, const unsigned char *keep,
                                double *w, size_t *last) {
    double maxl = -DBL_MAX;
    int any = 0;
    for (size_t c = 0; c < m; c++) {
        double l = ef__log_gamma(r, alpha);
        if (!(l >= -DBL_MAX)) l = -DBL_MAX; /* -inf for absurdly small alpha */
        w[c] = l;
        if ((!keep || keep[c]) && l >= maxl) {
            maxl = l;
            any = 1;
        }
    }
    if (!any) return 0.0;
    double sum = 0.0;
    for (size_t c = 0; c < m; c++) {
        w[c] = (!keep || keep[c]) ? exp(w[c] - maxl) : 0.0;
        if (w[c] > 0.0) *last = c;
        sum += w[c];
    }
    return sum;
}

/*
 * Splits `total` items by the cumulative proportions w / sum, as NIID-Bench
 * does (boundaries floor(cumsum(p) * total)): counts[c] is the number for
 * entry c, the entry `last` (the last positive weight) takes the rest, so
 * zero weights always get zero and the counts sum to `total`.
 */
static void split_by_weights(const double *w, double sum, size_t last, size_t m, uint32_t total,
                             uint32_t *counts) {
    double cum = 0.0;
    uint32_t prev = 0;
    for (size_t c = 0; c < m; c++) {
        uint32_t end;
        if (c >= last) {
            end = total;
        } else {
            cum += w[c];
            double x = cum / sum * (double)total;
            end = x >= (double)total ? total : (uint32_t)x;
            if (end < prev) end = prev;
        }
        counts[c] = end - prev;
        prev = end;
    }
}

/* ---- helpers --------------------------------------------------------------- */

/* offsets[c+1] holds client c's size; turns them into offsets. */
static void sizes_to_offsets(uint32_t *offsets, size_t m) {
    offsets[0] = 0;
    for (size_t c = 0; c < m; c++) offsets[c + 1] += offsets[c];
}

/* Stable counting sort of 0..n-1 by label: sorted (n) lists class 0's
 * indices increasing, then class 1's, ...; start (n_classes + 1). */
static void sort_by_label(const uint8_t *labels, uint32_t n, int n_classes, uint32_t *start,
                          uint32_t *sorted) {
    memset(start, 0, ((size_t)n_classes + 1) * sizeof *start);
    for (uint32_t i = 0; i < n; i++) start[labels[i] + 1]++;
    for (int k = 0; k < n_classes; k++) start[k + 1] += start[k];
    /* start[k] doubles as class k's cursor and ends as class k+1's start;
     * shift back afterwards. */
    for (uint32_t i = 0; i < n; i++) sorted[start[labels[i]]++] = i;
    for (int k = n_classes; k > 0; k--) start[k] = start[k - 1];
    start[0] = 0;
}

/* Shuffles every client's slice in place with its own forked stream, so a
 * slice's order never leaks the construction (class-sorted runs). */
static void shuffle_slices(const ef_rng *base, ef_partition *p) {
    ef_rng s, rc;
    ef_rng_fork(base, STREAM_SLICES, &s);
    for (size_t c = 0; c < p->n_clients; c++) {
        ef_rng_fork(&s, c, &rc);
        ef_rng_shuffle_u32(&rc, p->indices + p->offsets[c], ef_partition_size(p, c));
    }
}

/* ef_malloc of count uint32 values, overflow-checked (NULL with the error set). */
static uint32_t *alloc_u32(size_t count) {
    size_t bytes;
    if (!ef__mul_size(count, sizeof(uint32_t), &bytes)) {
        ef__fail(EF_ERR_NOMEM, "allocation of %zu indices overflows", count);
        return NULL;
    }
    return ef_malloc(bytes);
}

static void iota_u32(uint32_t *a, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) a[i] = i;
}

/* ---- the partitioners ----------------------------------------------------------
 * Each fills out->offsets (n_clients + 1) and out->indices (n), allocated by
 * the caller, and owns (and frees) only its scratch. */

static ef_status part_iid(ef_partition *out, uint32_t n, const ef_rng *base) {
    ef_rng r;
    ef_rng_fork(base, STREAM_SHUFFLE, &r);
    iota_u32(out->indices, n);
    ef_rng_shuffle_u32(&r, out->indices, n);
    size_t m = out->n_clients, q = n / m, rem = n % m;
    /* The first n % m clients get one more. */
    for (size_t c = 0; c <= m; c++) out->offsets[c] = (uint32_t)(c * q + (c < rem ? c : rem));
    return EF_OK;
}

/*
 * Quantity skew: every client first gets min examples, the remaining
 * n - m*min are split by Dirichlet(alpha) proportions (floor of the
 * cumulative share, so sizes sum to n exactly), then an iid shuffle is cut
 * by those sizes. NIID-Bench instead resamples the proportions until the
 * smallest share reaches its minimum; the guaranteed floor is the
 * deterministic equivalent and never loops.
 */
static ef_status part_quantity(ef_partition *out, uint32_t n, uint32_t min, double alpha,
                               const ef_rng *base) {
    size_t m = out->n_clients;
    double *w = ef_calloc(m, sizeof *w);
    if (!w) return EF_ERR_NOMEM;
    ef_rng r;
    ef_rng_fork(base, STREAM_PROPS, &r);
    size_t last = 0;
    double sum = dirichlet_weights(&r, alpha, m, NULL, w, &last);
    uint32_t rest = n - (uint32_t)(m * min);
    split_by_weights(w, sum, last, m, rest, out->offsets + 1);
    ef_free(w);
    for (size_t c = 0; c < m; c++) out->offsets[c + 1] += min;
    sizes_to_offsets(out->offsets, m);
    ef_rng_fork(base, STREAM_SHUFFLE, &r);
    iota_u32(out->indices, n);
    ef_rng_shuffle_u32(&r, out->indices, n);
    return EF_OK;
}

/* sum over c of max(0, sizes[c] - t): what the clients above t could give. */
static uint64_t excess_above(const uint32_t *sizes, size_t m, uint32_t t) {
    uint64_t s = 0;
    for (size_t c = 0; c < m; c++)
        if (sizes[c] > t) s += sizes[c] - t;
    return s;
}

/* Places perm[0..n) into out->indices grouped by client_of[example], keeping
 * perm's order inside each client (stable counting sort); out->offsets must
 * be final. cursor (m) is scratch. */
static void place_by_client(ef_partition *out, const uint32_t *perm, const uint32_t *client_of,
                            uint32_t n, uint32_t *cursor) {
    memcpy(cursor, out->offsets, out->n_clients * sizeof *cursor);
    for (uint32_t j = 0; j < n; j++) {
        uint32_t ex = perm[j];
        out->indices[cursor[client_of[ex]]++] = ex;
    }
}

/*
 * Label skew as in NIID-Bench (Li, Diao, Chen, He, ICDE 2022,
 * partition_data "noniid-labeldir"): for each class k in order, shuffle its
 * examples, draw p ~ Dir(alpha) over clients, zero the share of every client
 * already holding >= n / n_clients examples, renormalize, and cut the class
 * at floor(cumsum(p) * n_k).
 *
 * NIID-Bench then redraws everything until every client has >= 10 examples,
 * which never terminates for thousands of clients. Instead a deterministic
 * fix-up guarantees `min`: with D the total shortfall of the clients below
 * min, the largest clients are levelled down to a threshold T (the largest T
 * such that the examples above T number >= D, found by bisection; T >= min
 * always holds because n >= n_clients * min), the surplus over D staying
 * with the lowest-indexed donors at T + 1. Each donor gives a uniformly
 * random subset of its examples (so its label mix is kept in expectation),
 * handed to the short clients in index order. Clients between min and T are
 * untouched, and the fix-up does nothing when every client already has min.
 *
 * Memory: three index arrays of n (class order, owner, output) and O(m)
 * per-client scratch; time O(n + m * n_classes + m log n).
 */
static ef_status part_dirichlet(ef_partition *out, const uint8_t *labels, uint32_t n,
                                int n_classes, uint32_t min, double alpha, const ef_rng *base) {
    ef_status st = EF_ERR_NOMEM;
    size_t m = out->n_clients;
    uint32_t *start = alloc_u32((size_t)n_classes + 1);
    uint32_t *perm = alloc_u32(n);
    uint32_t *client_of = alloc_u32(n);
    uint32_t *sizes = ef_calloc(m, sizeof *sizes);
    uint32_t *move = alloc_u32(m);
    uint32_t *counts = alloc_u32(m);
    unsigned char *keep = ef_malloc(m);
    double *w = ef_calloc(m, sizeof *w);
    if (!start || !perm || !client_of || !sizes || !move || !counts || !keep || !w) goto fail;

    ef_rng rs, rp, rf;
    ef_rng_fork(base, STREAM_SHUFFLE, &rs);
    ef_rng_fork(base, STREAM_PROPS, &rp);
    ef_rng_fork(base, STREAM_FIXUP, &rf);

    /* perm: the classes in order, each shuffled: the order NIID-Bench
     * appends examples to its clients, kept inside every client below. */
    sort_by_label(labels, n, n_classes, start, perm);
    for (int k = 0; k < n_classes; k++) {
        uint32_t nk = start[k + 1] - start[k];
        if (nk == 0) continue;
        ef_rng_shuffle_u32(&rs, perm + start[k], nk);
        for (size_t c = 0; c < m; c++) keep[c] = (uint64_t)sizes[c] * m < n;
        size_t last = 0;
        double sum = dirichlet_weights(&rp, alpha, m, keep, w, &last);
        /* Some client is below n / m whenever examples remain (else the
         * clients would already hold n), so sum > 0. */
        if (!(sum > 0.0)) {
            st = ef__fail(EF_ERR_INTERNAL, "dirichlet partition: no eligible client for class %d",
                          k);
            goto fail;
        }
        split_by_weights(w, sum, last, m, nk, counts);
        uint32_t j = start[k];
        for (size_t c = 0; c < m; c++) {
            for (uint32_t e = 0; e < counts[c]; e++) client_of[perm[j++]] = (uint32_t)c;
            sizes[c] += counts[c];
        }
    }

    /* The min-size fix-up (see above). move[c] is the need of a client below
     * min, or what a donor above T gives; the two sets are disjoint. */
    uint64_t deficit = 0;
    uint32_t maxsize = 0;
    for (size_t c = 0; c < m; c++) {
        move[c] = sizes[c] < min ? min - sizes[c] : 0;
        deficit += move[c];
        if (sizes[c] > maxsize) maxsize = sizes[c];
    }
    for (size_t c = 0; c < m; c++) out->offsets[c + 1] = sizes[c];
    sizes_to_offsets(out->offsets, m);
    place_by_client(out, perm, client_of, n, counts);
    if (deficit > 0) {
        /* Some client is above min whenever one is below (n >= m * min). */
        if (maxsize <= min) {
            st = ef__fail(EF_ERR_INTERNAL, "dirichlet partition: nobody to take examples from");
            goto fail;
        }
        uint32_t lo = min, hi = maxsize; /* excess(lo) >= deficit > excess(hi) = 0 */
        while (hi - lo > 1) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (excess_above(sizes, m, mid) >= deficit)
                lo = mid;
            else
                hi = mid;
        }
        const uint32_t t = lo;
        uint64_t spare = excess_above(sizes, m, t) - deficit; /* < number of donors */
        size_t rcp = 0;
        for (size_t c = 0; c < m; c++) {
            if (sizes[c] <= t) continue;
            uint32_t give = sizes[c] - t;
            if (spare > 0) {
                give--;
                spare--;
            }
            uint32_t *s = out->indices + out->offsets[c], len = sizes[c];
            for (uint32_t g = 0; g < give; g++) {
                /* partial Fisher-Yates: s[g] becomes a uniform pick among the rest */
                uint32_t pick = g + (uint32_t)ef_rng_below(&rf, len - g);
                uint32_t ex = s[pick];
                s[pick] = s[g];
                s[g] = ex;
                while (rcp < m && !(sizes[rcp] < min && move[rcp] > 0)) rcp++;
                if (rcp == m) {
                    st = ef__fail(EF_ERR_INTERNAL, "dirichlet partition: fix-up overran");
                    goto fail;
                }
                client_of[ex] = (uint32_t)rcp;
                move[rcp]--;
            }
        }
        memset(sizes, 0, m * sizeof *sizes);
        for (uint32_t i = 0; i < n; i++) sizes[client_of[i]]++;
        for (size_t c = 0; c < m; c++) out->offsets[c + 1] = sizes[c];
        sizes_to_offsets(out->offsets, m);
        place_by_client(out, perm, client_of, n, counts);
    }
    shuffle_slices(base, out);
    st = EF_OK;
fail:
    ef_free(start);
    ef_free(perm);
    ef_free(client_of);
    ef_free(sizes);
    ef_free(move);
    ef_free(counts);
    ef_free(keep);
    ef_free(w);
    return st;
}

/*
 * McMahan et al. (2017) shards: sort by label (stable, ties by index), cut
 * into S = m*K contiguous shards, assign K random shards to each client.
 * S rarely divides n: q = n / S and the r = n % S extra examples make r
 * shards one longer. Which shards are long is decided per *slot* (client c's
 * k-th shard, slot number k*m + c, is long iff k*m + c < r), so the long
 * shards are dealt round-robin over the clients: every client gets K*q plus
 * floor(r/m) or ceil(r/m) examples, i.e. sizes differ by at most 1 and are
 * >= floor(n/m) >= min. A random permutation then maps slots to positions in
 * the sorted array; the positions' lengths follow from it.
 */
static ef_status part_shards(ef_partition *out, const uint8_t *labels, uint32_t n, int n_classes,
                             size_t k_per, const ef_rng *base) {
    ef_status st = EF_ERR_NOMEM;
    size_t m = out->n_clients, s_total = m * k_per; /* <= n, checked by the caller */
    uint32_t *start = alloc_u32((size_t)n_classes + 1);
    uint32_t *sorted = alloc_u32(n);
    uint32_t *pos = alloc_u32(s_total);
    uint32_t *pstart = alloc_u32(s_total + 1);
    if (!start || !sorted || !pos || !pstart) goto fail;

    sort_by_label(labels, n, n_classes, start, sorted);
    ef_rng r;
    ef_rng_fork(base, STREAM_SHARDS, &r);
    iota_u32(pos, (uint32_t)s_total);
    ef_rng_shuffle_u32(&r, pos, s_total);
    uint32_t q = (uint32_t)(n / s_total);
    size_t rem = n % s_total;
    for (size_t t = 0; t < s_total; t++) {
        size_t c = t / k_per, k = t % k_per;
        pstart[pos[t]] = q + (k * m + c < rem ? 1u : 0u);
    }
    uint32_t acc = 0;
    for (size_t p = 0; p < s_total; p++) {
        uint32_t len = pstart[p];
        pstart[p] = acc;
        acc += len;
    }
    pstart[s_total] = acc;
    uint32_t o = 0;
    for (size_t c = 0; c < m; c++) {
        out->offsets[c] = o;
        for (size_t k = 0; k < k_per; k++) {
            uint32_t p = pos[c * k_per + k], len = pstart[p + 1] - pstart[p];
            memcpy(out->indices + o, sorted + pstart[p], (size_t)len * sizeof *sorted);
            o += len;
        }
    }
    out->offsets[m] = o;
    shuffle_slices(base, out);
    st = EF_OK;
fail:
    ef_free(start);
    ef_free(sorted);
    ef_free(pos);
    ef_free(pstart);
    return st;
}

/* ---- public API --------------------------------------------------------------- */

static int is_decimal_char(char ch) {
    return (ch >= '0' && ch <= '9') || ch == '.' || ch == 'e' || ch == 'E' || ch == '+' ||
           ch == '-';
}

/* A positive finite decimal number and nothing else: no sign, no leading
 * space, no hex, inf or nan (strtod would take them all). */
static int parse_alpha(const char *s, double *out) {
    if (!((*s >= '0' && *s <= '9') || *s == '.')) return 0;
    for (const char *p = s; *p; p++)
        if (!is_decimal_char(*p)) return 0;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE || !isfinite(v) || !(v > 0.0)) return 0;
    *out = v;
    return 1;
}

/* Digits only, value in 1..INT_MAX. */
static int parse_shards(const char *s, int *out) {
    if (!*s) return 0;
    long long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return 0;
        v = v * 10 + (*p - '0');
        if (v > INT_MAX) return 0;
    }
    if (v < 1) return 0;
    *out = (int)v;
    return 1;
}

ef_status ef_partition_spec_parse(const char *text, ef_partition_spec *out) {
    if (out) memset(out, 0, sizeof *out);
    if (!text || !out) return ef__fail(EF_ERR_INVALID, "ef_partition_spec_parse: NULL argument");
    ef_partition_spec spec = {EF_PART_IID, 0.0, 0};
    const char *colon = strchr(text, ':');
    size_t name_len = colon ? (size_t)(colon - text) : strlen(text);
    const char *arg = colon ? colon + 1 : NULL;
#define NAME_IS(lit) (name_len == sizeof(lit) - 1 && memcmp(text, lit, name_len) == 0)
    if (NAME_IS("iid")) {
        if (arg)
            return ef__fail(EF_ERR_INVALID,
                            "partition spec '%s': iid takes no parameter (accepted forms: %s)",
                            text, SPEC_FORMS);
        spec.kind = EF_PART_IID;
    } else if (NAME_IS("dirichlet") || NAME_IS("quantity")) {
        const char *name = NAME_IS("dirichlet") ? "dirichlet" : "quantity";
        if (!arg || !parse_alpha(arg, &spec.alpha))
            return ef__fail(EF_ERR_INVALID,
                            "partition spec '%s': %s needs a positive number, as in %s:0.5 "
                            "(accepted forms: %s)",
                            text, name, name, SPEC_FORMS);
        spec.kind = NAME_IS("dirichlet") ? EF_PART_DIRICHLET : EF_PART_QUANTITY;
    } else if (NAME_IS("shards")) {
        if (!arg || !parse_shards(arg, &spec.shards))
            return ef__fail(EF_ERR_INVALID,
                            "partition spec '%s': shards needs an integer from 1 to %d shards "
                            "per client, as in shards:2 (accepted forms: %s)",
                            text, INT_MAX, SPEC_FORMS);
        spec.kind = EF_PART_SHARDS;
    } else if (NAME_IS("natural")) {
        return ef__fail(EF_ERR_INVALID,
                        "partition spec '%s': natural partitions need group keys and are made "
                        "with ef_partition_natural (accepted forms: %s)",
                        text, SPEC_FORMS);
    } else {
        return ef__fail(EF_ERR_INVALID,
                        "partition spec '%s': unknown partition (accepted forms: %s)", text,
                        SPEC_FORMS);
    }
#undef NAME_IS
    *out = spec;
    return EF_OK;
}

/* "name:%g" at the shortest precision that reads back exactly. */
static void format_alpha(char *buf, size_t n, const char *name, double alpha) {
    char tmp[64];
    size_t name_len = strlen(name) + 1;
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%s:%.*g", name, prec, alpha);
        if (strtod(tmp + name_len, NULL) == alpha) break;
    }
    snprintf(buf, n, "%s", tmp);
}

const char *ef_partition_spec_format(const ef_partition_spec *spec, char *buf, size_t n) {
    if (!buf || n == 0) return buf;
    if (!spec) {
        snprintf(buf, n, "(null)");
        return buf;
    }
    switch (spec->kind) {
    case EF_PART_IID: snprintf(buf, n, "iid"); break;
    case EF_PART_DIRICHLET: format_alpha(buf, n, "dirichlet", spec->alpha); break;
    case EF_PART_SHARDS: snprintf(buf, n, "shards:%d", spec->shards); break;
    case EF_PART_QUANTITY: format_alpha(buf, n, "quantity", spec->alpha); break;
    case EF_PART_NATURAL: snprintf(buf, n, "natural"); break;
    default: snprintf(buf, n, "unknown(%d)", (int)spec->kind); break;
    }
    return buf;
}

/*
 * Notes beyond the header: labels may be NULL for iid and quantity (they do
 * not look at labels); when given they are validated for every kind.
 * Each client's slice is in random order for every kind.
 */
ef_status ef_partition_make(ef_partition *out, const ef_partition_spec *spec,
                            const uint8_t *labels, size_t n, int n_classes, size_t n_clients,
                            size_t min_per_client, uint64_t seed) {
    if (out) memset(out, 0, sizeof *out);
    if (!out || !spec) return ef__fail(EF_ERR_INVALID, "ef_partition_make: NULL argument");
    char name[64];
    ef_partition_spec_format(spec, name, sizeof name);
    const ef_partition_kind kind = spec->kind;
    if (kind == EF_PART_NATURAL)
        return ef__fail(EF_ERR_INVALID,
                        "ef_partition_make: natural partitions need group keys: use "
                        "ef_partition_natural");
    if (kind != EF_PART_IID && kind != EF_PART_DIRICHLET && kind != EF_PART_SHARDS &&
        kind != EF_PART_QUANTITY)
        return ef__fail(EF_ERR_INVALID, "ef_partition_make: unknown partition kind %d",
                        (int)kind);
    if ((kind == EF_PART_DIRICHLET || kind == EF_PART_QUANTITY) &&
        !(spec->alpha > 0.0 && isfinite(spec->alpha)))
        return ef__fail(EF_ERR_INVALID, "partition %s: alpha %g is not a positive finite number",
                        name, spec->alpha);
    if (kind == EF_PART_SHARDS && spec->shards < 1)
        return ef__fail(EF_ERR_INVALID, "partition %s: shards per client must be >= 1", name);
    if (n_clients < 1) return ef__fail(EF_ERR_INVALID, "partition %s: n_clients is 0", name);
    if (n > UINT32_MAX)
        return ef__fail(EF_ERR_RANGE, "partition %s: %zu examples exceed the 32-bit index limit",
                        name, n);
    size_t min = min_per_client ? min_per_client : 1, need;
    if (!ef__mul_size(n_clients, min, &need) || need > n)
        return ef__fail(EF_ERR_INVALID,
                        "partition %s: n_clients %zu x min_per_client %zu exceeds the %zu "
                        "examples",
                        name, n_clients, min, n);
    const int needs_labels = kind == EF_PART_DIRICHLET || kind == EF_PART_SHARDS;
    if (needs_labels && !labels)
        return ef__fail(EF_ERR_INVALID, "partition %s: labels are required", name);
    if (labels) {
        if (n_classes < 1 || n_classes > 256)
            return ef__fail(EF_ERR_INVALID, "partition %s: n_classes %d not in 1..256", name,
                            n_classes);
        for (size_t i = 0; i < n; i++)
            if (labels[i] >= n_classes)
                return ef__fail(EF_ERR_INVALID,
                                "partition %s: label %u at index %zu is not below n_classes %d",
                                name, labels[i], i, n_classes);
    }
    size_t n_shards = 0;
    if (kind == EF_PART_SHARDS &&
        (!ef__mul_size(n_clients, (size_t)spec->shards, &n_shards) || n_shards > n))
        return ef__fail(EF_ERR_INVALID,
                        "partition %s: %zu clients x %d shards need at least one example per "
                        "shard, but there are only %zu examples",
                        name, n_clients, spec->shards, n);

    ef_status st;
    out->n_clients = n_clients;
    out->offsets = alloc_u32(n_clients + 1);
    out->indices = alloc_u32(n);
    if (!out->offsets || !out->indices) {
        st = EF_ERR_NOMEM;
        goto fail;
    }
    ef_rng base;
    ef_rng_seed(&base, seed);
    switch (kind) {
    case EF_PART_IID: st = part_iid(out, (uint32_t)n, &base); break;
    case EF_PART_QUANTITY:
        st = part_quantity(out, (uint32_t)n, (uint32_t)min, spec->alpha, &base);
        break;
    case EF_PART_DIRICHLET:
        st = part_dirichlet(out, labels, (uint32_t)n, n_classes, (uint32_t)min, spec->alpha,
                            &base);
        break;
    case EF_PART_SHARDS:
    default: st = part_shards(out, labels, (uint32_t)n, n_classes, (size_t)spec->shards, &base);
    }
    if (st != EF_OK) goto fail;
    return EF_OK;
fail:
    ef_partition_free(out);
    return st;
}

ef_status ef_partition_natural(ef_partition *out, const uint32_t *group_of, size_t n,
                               size_t n_groups) {
    if (out) memset(out, 0, sizeof *out);
    if (!out || !group_of) return ef__fail(EF_ERR_INVALID, "ef_partition_natural: NULL argument");
    if (n == 0) return ef__fail(EF_ERR_INVALID, "ef_partition_natural: no examples");
    if (n > UINT32_MAX)
        return ef__fail(EF_ERR_RANGE,
                        "ef_partition_natural: %zu examples exceed the 32-bit index limit", n);
    if (n_groups == 0) return ef__fail(EF_ERR_INVALID, "ef_partition_natural: n_groups is 0");
    for (size_t i = 0; i < n; i++)
        if (group_of[i] >= n_groups)
            return ef__fail(EF_ERR_INVALID,
                            "ef_partition_natural: group %u at index %zu is not below n_groups %zu",
                            group_of[i], i, n_groups);

    ef_status st = EF_ERR_NOMEM;
    /* Memory O(n + n_groups): one cursor per group. */
    uint32_t *cursor = ef_calloc(n_groups, sizeof *cursor); /* overflow-checked */
    if (!cursor) goto fail;
    for (size_t i = 0; i < n; i++) cursor[group_of[i]]++;
    size_t m = 0;
    for (size_t g = 0; g < n_groups; g++) m += cursor[g] > 0;
    out->n_clients = m;
    out->offsets = alloc_u32(m + 1);
    out->indices = alloc_u32(n);
    if (!out->offsets || !out->indices) goto fail;
    uint32_t o = 0;
    size_t c = 0;
    for (size_t g = 0; g < n_groups; g++) {
        uint32_t count = cursor[g];
        if (!count) continue;
        out->offsets[c++] = o;
        cursor[g] = o;
        o += count;
    }
    out->offsets[m] = o;
    /* Ascending i keeps each client's indices increasing. */
    for (size_t i = 0; i < n; i++) out->indices[cursor[group_of[i]]++] = (uint32_t)i;
    ef_free(cursor);
    return EF_OK;
fail:
    ef_free(cursor);
    ef_partition_free(out);
    return st;
}

/* Held-out count of a client of size s: ceil(frac * s), at most s - 1. The
 * product is shrunk by a relative 1e-12 first so that a fraction written in
 * decimal rounds as written: 0.1 * 30 is 3.0000000000000004 in double, and
 * must hold out 3, not 4. */
static uint32_t holdout_count(double frac, uint32_t s) {
    if (s <= 1) return 0;
    double x = frac * (double)s;
    double h = ceil(x - x * 1e-12);
    return h >= (double)(s - 1) ? s - 1 : (uint32_t)h;
}

ef_status ef_partition_holdout(const ef_partition *p, double frac, uint64_t seed,
                               ef_partition *train, ef_partition *heldout) {
    if (!p || !train || !heldout) {
        if (train && (const ef_partition *)train != p) memset(train, 0, sizeof *train);
        if (heldout && (const ef_partition *)heldout != p) memset(heldout, 0, sizeof *heldout);
        return ef__fail(EF_ERR_INVALID, "ef_partition_holdout: NULL argument");
    }
    /* Aliased outputs are left alone: zeroing one would clobber the other
     * or the input. */
    if (train == heldout || (const ef_partition *)train == p ||
        (const ef_partition *)heldout == p)
        return ef__fail(EF_ERR_INVALID,
                        "ef_partition_holdout: input, train and heldout must be distinct");
    memset(train, 0, sizeof *train);
    memset(heldout, 0, sizeof *heldout);
    if (!(frac >= 0.0 && frac < 1.0))
        return ef__fail(EF_ERR_INVALID, "ef_partition_holdout: fraction %g not in [0, 1)", frac);
    const size_t m = p->n_clients;
    if (!p->offsets || p->offsets[0] != 0)
        return ef__fail(EF_ERR_INVALID, "ef_partition_holdout: partition has no offsets");
    for (size_t c = 0; c < m; c++)
        if (p->offsets[c + 1] < p->offsets[c])
            return ef__fail(EF_ERR_INVALID,
                            "ef_partition_holdout: offsets decrease at client %zu", c);
    if (p->offsets[m] > 0 && !p->indices)
        return ef__fail(EF_ERR_INVALID, "ef_partition_holdout: partition has no indices");

    ef_status st = EF_ERR_NOMEM;
    size_t n_held = 0, max_size = 0;
    for (size_t c = 0; c < m; c++) {
        uint32_t s = (uint32_t)ef_partition_size(p, c);
        n_held += holdout_count(frac, s);
        if (s > max_size) max_size = s;
    }
    const size_t total = p->offsets[m];
    uint32_t *tmp = alloc_u32(max_size);
    train->n_clients = heldout->n_clients = m;
    train->offsets = alloc_u32(m + 1);
    train->indices = alloc_u32(total - n_held);
    heldout->offsets = alloc_u32(m + 1);
    heldout->indices = alloc_u32(n_held);
    if (!tmp || !train->offsets || !train->indices || !heldout->offsets || !heldout->indices)
        goto fail;

    ef_rng base, rc;
    ef_rng_seed(&base, seed);
    uint32_t ot = 0, oh = 0;
    for (size_t c = 0; c < m; c++) {
        uint32_t s = (uint32_t)ef_partition_size(p, c), h = holdout_count(frac, s);
        /* One stream per client: a client's split does not depend on the others. */
        ef_rng_fork(&base, c, &rc);
        memcpy(tmp, p->indices + p->offsets[c], (size_t)s * sizeof *tmp);
        ef_rng_shuffle_u32(&rc, tmp, s);
        train->offsets[c] = ot;
        heldout->offsets[c] = oh;
        memcpy(train->indices + ot, tmp, (size_t)(s - h) * sizeof *tmp);
        memcpy(heldout->indices + oh, tmp + (s - h), (size_t)h * sizeof *tmp);
        ot += s - h;
        oh += h;
    }
    train->offsets[m] = ot;
    heldout->offsets[m] = oh;
    ef_free(tmp);
    return EF_OK;
fail:
    ef_free(tmp);
    ef_partition_free(train);
    ef_partition_free(heldout);
    return st;
}

void ef_partition_free(ef_partition *p) {
    if (!p) return;
    ef_free(p->offsets);
    ef_free(p->indices);
    memset(p, 0, sizeof *p);
}
