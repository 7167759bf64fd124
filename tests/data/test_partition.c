/*
 * Tests of the partitioners: the Gamma sampler against its known moments
 * (mean, variance, E[log X] = digamma, Var[log X] = trigamma); spec parsing
 * and formatting; property tests of every kind on synthetic labels and on
 * the real Fashion-MNIST training labels (every index exactly once, sizes,
 * label skew growing as alpha shrinks, the shard label bound, quantity skew
 * with iid labels, determinism, 10,000 clients); the min-size fix-up of the
 * Dirichlet partition; natural groups; the held-out split; argument errors;
 * and out-of-memory injection at every allocation. The real-data part is
 * skipped (with a note) when Debian's dataset-fashion-mnist is missing.
 *
 * Statistical checks use fixed seeds, so they are deterministic, with
 * tolerances of about 6 standard errors, so any seed would pass too.
 * EDGEFL_TEST_QUICK=1 (the sanitizer build) shrinks the sample sizes.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/partition_internal.h"
#include "edgefl/data.h"
#include "edgefl/partition.h"
#include "edgefl/rng.h"
#include "test_util.h"

static int quick;

/* ---- counting, failing allocator (as in tests/core/test_core.c) ------------ */

static long live_blocks; /* allocated and not yet freed */
static long alloc_calls; /* since arm() */
static long fail_at;     /* 1-based call that fails; 0: none */
static int fail_after;   /* nonzero: every call from fail_at on fails */

static int should_fail(void) {
    long k = ++alloc_calls;
    if (fail_at <= 0) return 0;
    return fail_after ? k >= fail_at : k == fail_at;
}
static void *count_malloc(void *user, size_t size) {
    (void)user;
    if (should_fail()) return NULL;
    void *p = malloc(size);
    if (p) live_blocks++;
    return p;
}
static void *count_realloc(void *user, void *ptr, size_t size) {
    (void)user;
    if (should_fail()) return NULL;
    void *p = realloc(ptr, size);
    if (p && !ptr) live_blocks++;
    return p;
}
static void count_free(void *user, void *ptr) {
    (void)user;
    if (ptr) live_blocks--;
    free(ptr);
}
static const ef_allocator counting = {count_malloc, count_realloc, count_free, NULL};

static void arm(long k, int persistent) {
    alloc_calls = 0;
    fail_after = persistent;
    fail_at = k;
}
static void disarm(void) { fail_at = 0; }

/* ---- helpers ----------------------------------------------------------------- */

static int part_is_zero(const ef_partition *p) {
    return p->n_clients == 0 && p->offsets == NULL && p->indices == NULL;
}

static int same_partition(const ef_partition *a, const ef_partition *b) {
    if (a->n_clients != b->n_clients) return 0;
    if (memcmp(a->offsets, b->offsets, (a->n_clients + 1) * sizeof *a->offsets) != 0) return 0;
    return memcmp(a->indices, b->indices, a->offsets[a->n_clients] * sizeof *a->indices) == 0;
}

/* Offsets start at 0, never decrease, end at n; every index < n occurs once. */
static int exact_cover(const ef_partition *p, size_t n) {
    if (!p->offsets || p->offsets[0] != 0 || p->offsets[p->n_clients] != n) return 0;
    for (size_t c = 0; c < p->n_clients; c++)
        if (p->offsets[c + 1] < p->offsets[c]) return 0;
    unsigned char *seen = calloc(n ? n : 1, 1);
    int ok = 1;
    for (size_t j = 0; j < n && ok; j++) {
        uint32_t i = p->indices[j];
        if (i >= n || seen[i]++) ok = 0;
    }
    free(seen);
    return ok;
}

static size_t min_size(const ef_partition *p) {
    size_t m = SIZE_MAX;
    for (size_t c = 0; c < p->n_clients; c++)
        if (ef_partition_size(p, c) < m) m = ef_partition_size(p, c);
    return m;
}

static size_t max_size(const ef_partition *p) {
    size_t m = 0;
    for (size_t c = 0; c < p->n_clients; c++)
        if (ef_partition_size(p, c) > m) m = ef_partition_size(p, c);
    return m;
}

/* Coefficient of variation of the client sizes. */
static double size_cv(const ef_partition *p) {
    double s = 0, s2 = 0, m = (double)p->n_clients;
    for (size_t c = 0; c < p->n_clients; c++) {
        double v = (double)ef_partition_size(p, c);
        s += v;
        s2 += v * v;
    }
    double mean = s / m;
    return sqrt(fmax(s2 / m - mean * mean, 0.0)) / mean;
}

/* Label statistics of a partition. */
typedef struct label_stats {
    double mean_max_frac; /* mean over non-empty clients of the largest class fraction */
    double chi2_ratio;    /* sum of per-client chi-square vs the global mix / (clients * (K-1)) */
    int max_distinct;     /* most distinct labels held by one client */
    double frac_max_distinct; /* fraction of clients holding max_distinct labels */
} label_stats;

static label_stats label_stats_of(const ef_partition *p, const uint8_t *labels, int n_classes) {
    label_stats ls = {0, 0, 0, 0};
    size_t n = p->offsets[p->n_clients];
    double g[256] = {0};
    for (size_t i = 0; i < n; i++) g[labels[i]] += 1.0 / (double)n;
    int k_present = 0;
    for (int k = 0; k < n_classes; k++) k_present += g[k] > 0;
    size_t nonempty = 0, at_max = 0;
    double chi2 = 0;
    for (size_t c = 0; c < p->n_clients; c++) {
        size_t s = ef_partition_size(p, c);
        if (!s) continue;
        nonempty++;
        size_t h[256] = {0}, hmax = 0;
        int distinct = 0;
        for (size_t j = p->offsets[c]; j < p->offsets[c + 1]; j++) h[labels[p->indices[j]]]++;
        for (int k = 0; k < n_classes; k++) {
            if (h[k] > hmax) hmax = h[k];
            distinct += h[k] > 0;
            if (g[k] > 0) {
                double e = (double)s * g[k];
                chi2 += ((double)h[k] - e) * ((double)h[k] - e) / e;
            }
        }
        ls.mean_max_frac += (double)hmax / (double)s;
        if (distinct > ls.max_distinct) {
            ls.max_distinct = distinct;
            at_max = 0;
        }
        if (distinct == ls.max_distinct) at_max++;
    }
    ls.mean_max_frac /= (double)nonempty;
    ls.chi2_ratio = chi2 / ((double)nonempty * (k_present - 1));
    ls.frac_max_distinct = (double)at_max / (double)nonempty;
    return ls;
}

/* Parses `text` and makes the partition; CHECKs success. */
static ef_status make(ef_partition *p, const char *text, const uint8_t *labels, size_t n,
                      int n_classes, size_t n_clients, size_t min, uint64_t seed) {
    ef_partition_spec spec;
    ef_status st = ef_partition_spec_parse(text, &spec);
    CHECK_MSG(st == EF_OK, "parse %s: %s", text, ef_last_error());
    if (st != EF_OK) {
        memset(p, 0, sizeof *p);
        return st;
    }
    st = ef_partition_make(p, &spec, labels, n, n_classes, n_clients, min, seed);
    CHECK_MSG(st == EF_OK, "make %s (n=%zu, clients=%zu, min=%zu): %s", text, n, n_clients, min,
              ef_last_error());
    return st;
}

/* Balanced labels 0..K-1 in a seeded random order. */
static uint8_t *balanced_labels(size_t n, int n_classes, uint64_t seed) {
    uint8_t *l = malloc(n);
    uint32_t *perm = malloc(n * sizeof *perm);
    ef_rng r;
    ef_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
    ef_rng_shuffle_u32(&r, perm, n);
    for (size_t i = 0; i < n; i++) l[perm[i]] = (uint8_t)(i % (size_t)n_classes);
    free(perm);
    return l;
}

/* ---- Gamma sampler ------------------------------------------------------------- */

static void test_gamma(void) {
    /* digamma and trigamma at alpha (mpmath, 20 digits). */
    static const struct {
        double alpha, digamma, trigamma;
    } cases[] = {
        {0.1, -10.423754940411076, 101.43329915079275},
        {0.5, -1.9635100260214235, 4.934802200544679},
        {1.0, -0.5772156649015329, 1.6449340668482264},
        {5.0, 1.5061176684318005, 0.22132295573711533},
    };
    const size_t N = quick ? 20000 : 100000;
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const double a = cases[t].alpha;
        ef_rng r;
        ef_rng_seed(&r, 1000 + t);
        double s = 0, s2 = 0, l = 0, l2 = 0;
        int bad = 0;
        for (size_t i = 0; i < N; i++) {
            double x = ef__gamma(&r, a);
            if (!(x > 0.0) || !isfinite(x)) {
                bad++;
                continue;
            }
            s += x;
            s2 += x * x;
            l += log(x);
            l2 += log(x) * log(x);
        }
        CHECK_MSG(bad == 0, "alpha %g: %d draws not positive and finite", a, bad);
        double mean = s / N, var = (s2 - N * mean * mean) / (N - 1);
        double lmean = l / N, lvar = (l2 - N * lmean * lmean) / (N - 1);
        /* Standard errors: mean sqrt(a/N); variance sqrt(a^2 (2 + 6/a) / N)
         * (gamma excess kurtosis 6/a); mean of log sqrt(trigamma/N); for the
         * variance of log, sqrt(8/N) * trigamma bounds the exponential-tailed
         * small-alpha case and is loose for large alpha. */
        double se_mean = sqrt(a / N), se_var = a * sqrt((2.0 + 6.0 / a) / N);
        double se_lmean = sqrt(cases[t].trigamma / N), se_lvar = sqrt(8.0 / N) * cases[t].trigamma;
        printf("  gamma(%g): mean %.5f var %.5f E[log] %.4f Var[log] %.4f over %zu draws\n", a,
               mean, var, lmean, lvar, N);
        CHECK_NEAR(mean, a, 6 * se_mean);
        CHECK_NEAR(var, a, 6 * se_var);
        CHECK_NEAR(lmean, cases[t].digamma, 6 * se_lmean);
        CHECK_NEAR(lvar, cases[t].trigamma, 6 * se_lvar);
    }

    /* Deterministic from the state; log version consumes the same numbers
     * and agrees with log of the variate. */
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        ef_rng r1, r2;
        ef_rng_seed(&r1, 77);
        ef_rng_seed(&r2, 77);
        int same = 1;
        for (int i = 0; i < 1000; i++) {
            double x = ef__gamma(&r1, cases[t].alpha), lx = ef__log_gamma(&r2, cases[t].alpha);
            if (fabs(log(x) - lx) > 1e-9 * fmax(1.0, fabs(lx))) same = 0;
        }
        CHECK_MSG(same && memcmp(&r1, &r2, sizeof r1) == 0, "alpha %g: log_gamma diverges",
                  cases[t].alpha);
    }
    /* Tiny alpha: the variate underflows, its log stays finite and very negative. */
    ef_rng r;
    ef_rng_seed(&r, 5);
    int finite = 1, zeros = 0;
    for (int i = 0; i < 1000; i++) {
        double lx = ef__log_gamma(&r, 1e-3);
        if (!isfinite(lx)) finite = 0;
    }
    ef_rng_seed(&r, 5);
    for (int i = 0; i < 1000; i++) zeros += ef__gamma(&r, 1e-3) == 0.0;
    CHECK(finite);
    CHECK(zeros > 100); /* why the Dirichlet draws work in log space */
}

/* ---- spec parsing --------------------------------------------------------------- */

static void test_spec(void) {
    static const struct {
        const char *text;
        ef_partition_kind kind;
        double alpha;
        int shards;
        const char *formatted;
    } good[] = {
        {"iid", EF_PART_IID, 0, 0, "iid"},
        {"dirichlet:0.5", EF_PART_DIRICHLET, 0.5, 0, "dirichlet:0.5"},
        {"dirichlet:.1", EF_PART_DIRICHLET, 0.1, 0, "dirichlet:0.1"},
        {"dirichlet:100", EF_PART_DIRICHLET, 100, 0, "dirichlet:100"},
        {"dirichlet:1e-3", EF_PART_DIRICHLET, 1e-3, 0, "dirichlet:0.001"},
        {"dirichlet:0.333333333333", EF_PART_DIRICHLET, 0.333333333333, 0,
         "dirichlet:0.333333333333"},
        {"shards:2", EF_PART_SHARDS, 0, 2, "shards:2"},
        {"shards:10", EF_PART_SHARDS, 0, 10, "shards:10"},
        {"shards:2147483647", EF_PART_SHARDS, 0, 2147483647, "shards:2147483647"},
        {"quantity:1.0", EF_PART_QUANTITY, 1.0, 0, "quantity:1"},
        {"quantity:2.5e1", EF_PART_QUANTITY, 25, 0, "quantity:25"},
    };
    char buf[64];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        ef_partition_spec s;
        memset(&s, 0xab, sizeof s);
        CHECK_OK(ef_partition_spec_parse(good[i].text, &s));
        CHECK_MSG(s.kind == good[i].kind && s.alpha == good[i].alpha && s.shards == good[i].shards,
                  "%s", good[i].text);
        CHECK_MSG(strcmp(ef_partition_spec_format(&s, buf, sizeof buf), good[i].formatted) == 0,
                  "%s formats as %s", good[i].text, buf);
        ef_partition_spec back;
        CHECK_OK(ef_partition_spec_parse(buf, &back));
        CHECK(back.kind == s.kind && back.alpha == s.alpha && back.shards == s.shards);
    }
    /* Round trip is exact even where %g's 6 digits are not enough. */
    ef_partition_spec third = {EF_PART_QUANTITY, 1.0 / 3.0, 0}, back;
    ef_partition_spec_format(&third, buf, sizeof buf);
    CHECK_OK(ef_partition_spec_parse(buf, &back));
    CHECK_MSG(back.alpha == third.alpha, "%s", buf);
    ef_partition_spec nat = {EF_PART_NATURAL, 0, 0};
    CHECK(strcmp(ef_partition_spec_format(&nat, buf, sizeof buf), "natural") == 0);
    char tiny[4];
    ef_partition_spec d = {EF_PART_DIRICHLET, 0.5, 0};
    CHECK(strcmp(ef_partition_spec_format(&d, tiny, sizeof tiny), "dir") == 0); /* truncated */

    static const char *bad[] = {
        "dirichlet",     "dirichlet:",      "dirichlet:-1",      "dirichlet:abc",
        "dirichlet:0",   "dirichlet:0.5x",  "dirichlet: 0.5",    "dirichlet:0.5 ",
        "dirichlet:inf", "dirichlet:nan",   "dirichlet:1e999",   "dirichlet:0x1p-1",
        "dirichlet:+1",  "dirichlet:1e-400", "dirichlet:0.5:1",  "Dirichlet:0.5",
        "shards:0",      "shards:1.5",      "shards:",           "shards",
        "shards:-2",     "shards:+2",       "shards:2x",         "shards:99999999999",
        "quantity",      "quantity:0",      "quantity:-0.5",     "iid:1",
        "iid:",          "iidx",            "IID",               "",
        "natural",       "foo",             "foo:1",             " iid",
        "iid ",          ":",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ef_partition_spec s;
        memset(&s, 0xab, sizeof s);
        ef_status st = ef_partition_spec_parse(bad[i], &s);
        const char *msg = ef_last_error();
        char quoted[80];
        snprintf(quoted, sizeof quoted, "'%s'", bad[i]);
        CHECK_MSG(st == EF_ERR_INVALID, "'%s' accepted", bad[i]);
        CHECK_MSG(strstr(msg, quoted) && strstr(msg, "dirichlet:ALPHA") && strstr(msg, "shards:K"),
                  "'%s': message %s", bad[i], msg);
        ef_partition_spec zero;
        memset(&zero, 0, sizeof zero);
        CHECK_MSG(memcmp(&s, &zero, sizeof s) == 0, "'%s': *out not zeroed", bad[i]);
        if (getenv("EF_TEST_VERBOSE")) printf("  %s\n", msg);
    }
    ef_partition_spec s;
    CHECK(ef_partition_spec_parse(NULL, &s) == EF_ERR_INVALID);
    CHECK(ef_partition_spec_parse("iid", NULL) == EF_ERR_INVALID);
}

/* ---- properties shared by the synthetic and the real labels --------------------- */

/* Determinism: same seed -> identical arrays, other seed -> different. */
static void check_determinism(const char *text, const uint8_t *labels, size_t n, int K,
                              size_t m) {
    ef_partition a, b, c;
    make(&a, text, labels, n, K, m, 1, 42);
    make(&b, text, labels, n, K, m, 1, 42);
    make(&c, text, labels, n, K, m, 1, 43);
    if (a.indices && b.indices && c.indices) {
        CHECK_MSG(same_partition(&a, &b), "%s: same seed, different partition", text);
        CHECK_MSG(memcmp(a.indices, c.indices, n * sizeof *a.indices) != 0,
                  "%s: different seeds, same indices", text);
    }
    ef_partition_free(&a);
    ef_partition_free(&b);
    ef_partition_free(&c);
}

/*
 * The property tests of every kind on one label set (n examples, K classes,
 * balanced or nearly). `tag` names the set in messages. `shard_exact`: class
 * counts are multiples of n / (100 * 2), so shards:2 over 100 clients gives
 * every client at most 2 labels.
 */
static void check_kinds(const char *tag, const uint8_t *labels, size_t n, int K,
                        int shard_exact) {
    const size_t m = 100;
    size_t class_n[256] = {0}, max_class = 0;
    for (size_t i = 0; i < n; i++) class_n[labels[i]]++;
    for (int k = 0; k < K; k++)
        if (class_n[k] > max_class) max_class = class_n[k];
    ef_partition p;
    double t0;

    /* iid: sizes differ by <= 1, label histograms multinomial around the mix. */
    t0 = ef_now();
    make(&p, "iid", labels, n, K, m, 1, 1);
    label_stats iid = label_stats_of(&p, labels, K);
    CHECK_MSG(exact_cover(&p, n), "%s iid", tag);
    CHECK_MSG(max_size(&p) - min_size(&p) <= 1, "%s iid: sizes %zu..%zu", tag, min_size(&p),
              max_size(&p));
    CHECK_MSG(iid.chi2_ratio > 0.75 && iid.chi2_ratio < 1.25, "%s iid: chi2 ratio %.3f", tag,
              iid.chi2_ratio);
    printf("  %s iid: max-class %.3f chi2 %.3f (%.1f ms)\n", tag, iid.mean_max_frac,
           iid.chi2_ratio, 1e3 * (ef_now() - t0));
    ef_partition_free(&p);

    /* dirichlet: skew grows as alpha shrinks; alpha=100 is close to iid. */
    static const char *dir[] = {"dirichlet:0.1", "dirichlet:0.5", "dirichlet:1",
                                "dirichlet:100"};
    label_stats ds[4];
    for (int i = 0; i < 4; i++) {
        t0 = ef_now();
        make(&p, dir[i], labels, n, K, m, 1, 7);
        ds[i] = label_stats_of(&p, labels, K);
        CHECK_MSG(exact_cover(&p, n), "%s %s", tag, dir[i]);
        CHECK_MSG(min_size(&p) >= 1, "%s %s", tag, dir[i]);
        /* NIID-Bench's cap: a client takes a class only while it holds fewer
         * than n/m, so it ends below n/m + the largest class. */
        CHECK_MSG(max_size(&p) < n / m + 1 + max_class, "%s %s: max size %zu", tag, dir[i],
                  max_size(&p));
        printf("  %s %s: max-class %.3f chi2 %.2f sizes %zu..%zu (%.1f ms)\n", tag, dir[i],
               ds[i].mean_max_frac, ds[i].chi2_ratio, min_size(&p), max_size(&p),
               1e3 * (ef_now() - t0));
        ef_partition_free(&p);
    }
    CHECK_MSG(ds[0].mean_max_frac > 0.5, "%s: alpha 0.1 max-class %.3f", tag, ds[0].mean_max_frac);
    CHECK_MSG(ds[0].mean_max_frac > ds[1].mean_max_frac + 0.05 &&
                  ds[1].mean_max_frac > ds[2].mean_max_frac + 0.05 &&
                  ds[2].mean_max_frac > ds[3].mean_max_frac + 0.1,
              "%s: skew not decreasing in alpha", tag);
    CHECK_MSG(ds[0].mean_max_frac > 2.5 * ds[3].mean_max_frac, "%s: alpha 0.1 vs 100", tag);
    CHECK_MSG(fabs(ds[3].mean_max_frac - iid.mean_max_frac) < 0.03,
              "%s: alpha 100 max-class %.3f vs iid %.3f", tag, ds[3].mean_max_frac,
              iid.mean_max_frac);
    CHECK_MSG(ds[3].chi2_ratio < 2.0, "%s: alpha 100 chi2 ratio %.2f", tag, ds[3].chi2_ratio);
    CHECK_MSG(ds[0].chi2_ratio > 20.0, "%s: alpha 0.1 chi2 ratio %.2f", tag, ds[0].chi2_ratio);

    /* shards:2 over 100 clients. A shard is a contiguous run of the
     * label-sorted examples: when class sizes are multiples of the shard size
     * each shard holds one label, so a client holds at most K = 2 labels;
     * otherwise a shard no longer than the smallest class spans at most two
     * labels, so a client holds at most 2K = 4. Sizes differ by at most 1. */
    t0 = ef_now();
    make(&p, "shards:2", labels, n, K, m, 1, 3);
    label_stats sh = label_stats_of(&p, labels, K);
    CHECK_MSG(exact_cover(&p, n), "%s shards", tag);
    CHECK_MSG(max_size(&p) - min_size(&p) <= 1, "%s shards: sizes %zu..%zu", tag, min_size(&p),
              max_size(&p));
    CHECK_MSG(sh.max_distinct <= (shard_exact ? 2 : 4), "%s shards: a client has %d labels", tag,
              sh.max_distinct);
    printf("  %s shards:2: max labels %d (%.0f%% of clients), max-class %.3f (%.1f ms)\n", tag,
           sh.max_distinct, 100 * sh.frac_max_distinct, sh.mean_max_frac, 1e3 * (ef_now() - t0));
    ef_partition_free(&p);

    /* quantity: unequal sizes, labels still iid. */
    t0 = ef_now();
    make(&p, "quantity:0.5", labels, n, K, m, 10, 5);
    label_stats qs = label_stats_of(&p, labels, K);
    CHECK_MSG(exact_cover(&p, n), "%s quantity", tag);
    CHECK_MSG(min_size(&p) >= 10, "%s quantity: min %zu", tag, min_size(&p));
    CHECK_MSG(size_cv(&p) > 0.8 && max_size(&p) > 10 * min_size(&p),
              "%s quantity:0.5: cv %.2f sizes %zu..%zu", tag, size_cv(&p), min_size(&p),
              max_size(&p));
    CHECK_MSG(qs.chi2_ratio > 0.75 && qs.chi2_ratio < 1.25, "%s quantity: chi2 %.3f", tag,
              qs.chi2_ratio);
    printf("  %s quantity:0.5: sizes %zu..%zu cv %.2f chi2 %.3f (%.1f ms)\n", tag, min_size(&p),
           max_size(&p), size_cv(&p), qs.chi2_ratio, 1e3 * (ef_now() - t0));
    ef_partition_free(&p);
    make(&p, "quantity:1000", labels, n, K, m, 1, 5);
    CHECK_MSG(size_cv(&p) < 0.1, "%s quantity:1000: cv %.3f", tag, size_cv(&p));
    ef_partition_free(&p);

    static const char *all[] = {"iid", "dirichlet:0.5", "shards:2", "quantity:1"};
    for (int i = 0; i < 4; i++) check_determinism(all[i], labels, n, K, m);
}

/*
 * 10,000 clients on 60,000 examples, every kind, min 1; n == clients * min
 * (every client exactly min); and optionally 100,000 clients on 600,000.
 */
static void check_scale(const char *tag, const uint8_t *labels, size_t n, int K, size_t m) {
    static const char *kinds[] = {"iid", "dirichlet:0.1", "dirichlet:100", "shards:2",
                                  "quantity:0.5"};
    for (int i = 0; i < 5; i++) {
        ef_partition p;
        double t0 = ef_now();
        make(&p, kinds[i], labels, n, K, m, 1, 11);
        double dt = ef_now() - t0;
        CHECK_MSG(p.n_clients == m && exact_cover(&p, n) && min_size(&p) >= 1, "%s %s x %zu",
                  tag, kinds[i], m);
        printf("  %s %s, %zu clients: sizes %zu..%zu in %.1f ms\n", tag, kinds[i], m,
               min_size(&p), max_size(&p), 1e3 * dt);
        CHECK_MSG(dt < (quick ? 20.0 : 2.0), "%s %s x %zu took %.2f s", tag, kinds[i], m, dt);
        ef_partition_free(&p);
        /* the tightest minimum: everyone gets exactly n / m */
        if (n % m == 0 && strncmp(kinds[i], "shards", 6) != 0) {
            size_t min = n / m;
            make(&p, kinds[i], labels, n, K, m, min, 12);
            CHECK_MSG(exact_cover(&p, n) && min_size(&p) == min && max_size(&p) == min,
                      "%s %s x %zu min %zu", tag, kinds[i], m, min);
            ef_partition_free(&p);
        }
    }
}

/* ---- the Dirichlet min-size fix-up -------------------------------------------- */

static void test_fixup(const uint8_t *labels, size_t n, int K) {
    const size_t m = 500; /* n / m = 24 on 12,000 examples: many short clients at alpha 0.05 */
    ef_partition p1, p2;
    make(&p1, "dirichlet:0.05", labels, n, K, m, 1, 9);
    size_t short1 = 0;
    for (size_t c = 0; c < m; c++) short1 += ef_partition_size(&p1, c) < 20;
    CHECK_MSG(short1 > 50, "only %zu clients below 20: the fix-up is barely exercised", short1);

    /* A min every client already meets changes nothing. */
    size_t s1 = min_size(&p1);
    make(&p2, "dirichlet:0.05", labels, n, K, m, s1, 9);
    CHECK_MSG(same_partition(&p1, &p2), "min %zu already met, yet the partition changed", s1);
    ef_partition_free(&p2);

    /* min 20: short clients get exactly 20; donors are levelled down to one
     * threshold T (ending at T or T+1); everyone else keeps its slice. */
    const size_t min = 20;
    make(&p2, "dirichlet:0.05", labels, n, K, m, min, 9);
    CHECK(exact_cover(&p2, n));
    CHECK(min_size(&p2) == min);
    size_t lo_loser = SIZE_MAX, hi_loser = 0, hi_kept = 0, bad_short = 0, changed_kept = 0;
    for (size_t c = 0; c < m; c++) {
        size_t a = ef_partition_size(&p1, c), b = ef_partition_size(&p2, c);
        if (a < min) {
            bad_short += b != min;
        } else if (b < a) {
            if (b < lo_loser) lo_loser = b;
            if (b > hi_loser) hi_loser = b;
        } else {
            bad_short += b != a; /* nobody at or above min gains */
            if (a > hi_kept) hi_kept = a;
            changed_kept += memcmp(p1.indices + p1.offsets[c], p2.indices + p2.offsets[c],
                                   a * sizeof *p1.indices) != 0;
        }
    }
    CHECK_MSG(bad_short == 0, "%zu clients with wrong sizes after the fix-up", bad_short);
    CHECK_MSG(lo_loser != SIZE_MAX && hi_loser <= lo_loser + 1,
              "donors end between %zu and %zu", lo_loser, hi_loser);
    CHECK_MSG(hi_kept <= lo_loser + 1, "untouched client of %zu above the threshold %zu",
              hi_kept, lo_loser);
    CHECK_MSG(changed_kept == 0, "%zu untouched clients have different slices", changed_kept);
    printf("  fix-up: %zu of %zu clients below %zu, donors levelled to %zu..%zu\n", short1, m,
           min, lo_loser, hi_loser);
    ef_partition_free(&p1);
    ef_partition_free(&p2);

    /* Tiny alpha: every class goes (almost) whole to one client; still valid. */
    make(&p1, "dirichlet:0.001", labels, n, K, 50, 100, 2);
    label_stats ls = label_stats_of(&p1, labels, K);
    CHECK(exact_cover(&p1, n) && min_size(&p1) >= 100);
    printf("  dirichlet:0.001, 50 clients, min 100: sizes %zu..%zu max-class %.3f\n",
           min_size(&p1), max_size(&p1), ls.mean_max_frac);
    ef_partition_free(&p1);
}

/* ---- synthetic labels ------------------------------------------------------------ */

static void test_synthetic(void) {
    const size_t n = 12000;
    const int K = 10;
    uint8_t *bal = balanced_labels(n, K, 1);
    printf("synthetic balanced, %zu examples, %d classes:\n", n, K);
    check_kinds("synthetic", bal, n, K, 1);

    /* Imbalanced classes (class k has weight k + 1) and a shard size that
     * divides nothing: 70 clients x 2 shards of 85 or 86. */
    uint8_t *imb = malloc(n);
    size_t o = 0;
    for (int k = 0; k < K; k++)
        for (size_t j = 0; j < n * (size_t)(k + 1) / 55 && o < n; j++) imb[o++] = (uint8_t)k;
    while (o < n) imb[o++] = (uint8_t)(K - 1);
    ef_rng r;
    ef_rng_seed(&r, 3);
    for (size_t i = n; i > 1; i--) { /* shuffle the labels */
        size_t j = (size_t)ef_rng_below(&r, i);
        uint8_t t = imb[i - 1];
        imb[i - 1] = imb[j];
        imb[j] = t;
    }
    ef_partition p;
    make(&p, "shards:2", imb, n, K, 70, 1, 4);
    label_stats sh = label_stats_of(&p, imb, K);
    CHECK(exact_cover(&p, n));
    CHECK_MSG(min_size(&p) == 171 && max_size(&p) == 172, "sizes %zu..%zu", min_size(&p),
              max_size(&p));
    CHECK_MSG(sh.max_distinct <= 4, "imbalanced shards: %d labels", sh.max_distinct);
    printf("  imbalanced shards:2 over 70: max labels %d\n", sh.max_distinct);
    ef_partition_free(&p);
    /* shards:K bound for K = 3, exact case: 40 clients x 3 shards of 100. */
    make(&p, "shards:3", bal, n, K, 40, 1, 4);
    sh = label_stats_of(&p, bal, K);
    CHECK(exact_cover(&p, n) && min_size(&p) == 300 && max_size(&p) == 300);
    CHECK_MSG(sh.max_distinct <= 3, "shards:3: %d labels", sh.max_distinct);
    ef_partition_free(&p);
    /* The remainder of shards: 7 clients x 2 shards on 100 examples = 14
     * shards of 7 or 8 (2 long ones); sizes 14 or 15, all examples used. */
    make(&p, "shards:2", bal, 100, K, 7, 14, 4);
    CHECK(exact_cover(&p, 100) && min_size(&p) == 14 && max_size(&p) == 15);
    ef_partition_free(&p);
    /* Shards can hold one example each: n == clients * K. */
    make(&p, "shards:2", bal, 200, K, 100, 2, 4);
    CHECK(exact_cover(&p, 200) && min_size(&p) == 2 && max_size(&p) == 2);
    ef_partition_free(&p);

    /* Labels may be NULL for the kinds that ignore them. */
    ef_partition_spec spec = {EF_PART_IID, 0, 0};
    CHECK_OK(ef_partition_make(&p, &spec, NULL, 1000, 0, 7, 1, 1));
    CHECK(exact_cover(&p, 1000));
    ef_partition_free(&p);
    spec = (ef_partition_spec){EF_PART_QUANTITY, 2.0, 0};
    CHECK_OK(ef_partition_make(&p, &spec, NULL, 1000, 0, 7, 1, 1));
    CHECK(exact_cover(&p, 1000));
    ef_partition_free(&p);
    /* One client gets everything; one example per client. */
    static const char *kinds[] = {"iid", "dirichlet:0.5", "shards:1", "quantity:0.5"};
    for (int i = 0; i < 4; i++) {
        make(&p, kinds[i], bal, n, K, 1, 1, 1);
        CHECK_MSG(exact_cover(&p, n) && p.n_clients == 1, "%s, 1 client", kinds[i]);
        ef_partition_free(&p);
        make(&p, kinds[i], bal, 500, K, 500, 1, 1);
        CHECK_MSG(exact_cover(&p, 500) && min_size(&p) == 1 && max_size(&p) == 1,
                  "%s, 1 example each", kinds[i]);
        ef_partition_free(&p);
    }
    /* A class with no examples at all (class 9 of 10 absent). */
    uint8_t *nine = malloc(n);
    for (size_t i = 0; i < n; i++) nine[i] = (uint8_t)(bal[i] % 9);
    make(&p, "dirichlet:0.3", nine, n, K, 100, 5, 1);
    CHECK(exact_cover(&p, n) && min_size(&p) >= 5);
    ef_partition_free(&p);
    free(nine);

    test_fixup(bal, n, K);

    const size_t big_n = 60000;
    uint8_t *big = balanced_labels(big_n, K, 2);
    check_scale("synthetic", big, big_n, K, 10000);
    ef_partition q;
    make(&q, "iid", big, big_n, K, 10000, 6, 1);
    CHECK(exact_cover(&q, big_n) && min_size(&q) == 6 && max_size(&q) == 6);
    ef_partition_free(&q);
    free(big);
    if (!quick) {
        /* 100,000 clients (on 600,000 examples: each needs one). */
        const size_t huge_n = 600000;
        uint8_t *huge = balanced_labels(huge_n, K, 3);
        check_scale("synthetic-600k", huge, huge_n, K, 100000);
        free(huge);
    }
    free(bal);
    free(imb);
}

/*
 * Known answers for the integer-only kinds (no libm in the path, so they
 * hold on every platform): changing how a seed maps to a partition breaks
 * the reproducibility of published runs and must be deliberate. The hashes
 * come from an independent Python implementation, tests/data/partition_ref.py
 * (which agrees with this code), and a failure prints the new value.
 */
static uint64_t fnv1a(const ef_partition *p) {
    uint64_t h = 1469598103934665603ull;
    const uint32_t *arrays[2] = {p->offsets, p->indices};
    size_t counts[2] = {p->n_clients + 1, p->offsets[p->n_clients]};
    for (int a = 0; a < 2; a++)
        for (size_t i = 0; i < counts[a]; i++) {
            h ^= arrays[a][i];
            h *= 1099511628211ull;
        }
    return h;
}

static void test_known_answers(void) {
    uint8_t *labels = balanced_labels(1000, 10, 1);
    static const struct {
        const char *spec;
        uint64_t hash;
    } kat[] = {
        {"iid", 0x7ecc33ddaf34f225ull},
        {"shards:2", 0x983415f4d6bfcc61ull},
    };
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        ef_partition p;
        make(&p, kat[i].spec, labels, 1000, 10, 30, 1, 2024);
        if (!p.indices) continue;
        uint64_t h = fnv1a(&p);
        CHECK_MSG(h == kat[i].hash, "%s: hash 0x%016llxull", kat[i].spec, (unsigned long long)h);
        ef_partition_free(&p);
    }
    free(labels);
}

/* ---- natural groups ----------------------------------------------------------------- */

static void test_natural(void) {
    /* groups 0..7 with 1 and 4 empty; example i in group g[i]. */
    static const uint32_t g[] = {3, 0, 3, 7, 2, 0, 5, 6, 7, 3, 2, 0, 5, 7, 3};
    const size_t n = sizeof g / sizeof g[0];
    ef_partition p;
    memset(&p, 0xab, sizeof p);
    CHECK_OK(ef_partition_natural(&p, g, n, 8));
    CHECK(p.n_clients == 6);
    CHECK(exact_cover(&p, n));
    static const uint32_t want_off[] = {0, 3, 5, 9, 11, 12, 15};
    static const uint32_t want_idx[] = {1, 5, 11, 4, 10, 0, 2, 9, 14, 6, 12, 7, 3, 8, 13};
    CHECK(p.offsets && memcmp(p.offsets, want_off, sizeof want_off) == 0);
    CHECK(p.indices && memcmp(p.indices, want_idx, sizeof want_idx) == 0);
    ef_partition_free(&p);
    CHECK(part_is_zero(&p));
    ef_partition_free(&p); /* safe twice */
    ef_partition_free(NULL);

    /* A single group; trailing empty groups. */
    static const uint32_t one[] = {0, 0, 0};
    CHECK_OK(ef_partition_natural(&p, one, 3, 1000));
    CHECK(p.n_clients == 1 && ef_partition_size(&p, 0) == 3 && p.indices[2] == 2);
    ef_partition_free(&p);

    /* Errors: group out of range (named with its index), no groups, no examples. */
    static const uint32_t badg[] = {0, 1, 2, 9, 1};
    memset(&p, 0xab, sizeof p);
    CHECK(ef_partition_natural(&p, badg, 5, 9) == EF_ERR_INVALID);
    CHECK_MSG(strstr(ef_last_error(), "group 9 at index 3"), "%s", ef_last_error());
    CHECK(part_is_zero(&p));
    memset(&p, 0xab, sizeof p);
    CHECK(ef_partition_natural(&p, badg, 5, 0) == EF_ERR_INVALID && part_is_zero(&p));
    memset(&p, 0xab, sizeof p);
    CHECK(ef_partition_natural(&p, badg, 0, 10) == EF_ERR_INVALID && part_is_zero(&p));
    memset(&p, 0xab, sizeof p);
    CHECK(ef_partition_natural(&p, NULL, 5, 10) == EF_ERR_INVALID && part_is_zero(&p));
    CHECK(ef_partition_natural(NULL, badg, 5, 10) == EF_ERR_INVALID);
    memset(&p, 0xab, sizeof p);
    CHECK(ef_partition_natural(&p, badg, (size_t)UINT32_MAX + 1, 10) == EF_ERR_RANGE &&
          part_is_zero(&p));
}

/* ---- holdout ---------------------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Per client: train and heldout are disjoint, their union is the client's
 * slice, heldout has `want(c)` examples. */
static int check_holdout(const ef_partition *p, const ef_partition *tr, const ef_partition *ho,
                         const size_t *want) {
    if (tr->n_clients != p->n_clients || ho->n_clients != p->n_clients) return 0;
    size_t max = max_size(p);
    uint32_t *a = malloc((max ? max : 1) * sizeof *a), *b = malloc((max ? max : 1) * sizeof *b);
    int ok = 1;
    for (size_t c = 0; c < p->n_clients && ok; c++) {
        size_t s = ef_partition_size(p, c), st = ef_partition_size(tr, c),
               sh = ef_partition_size(ho, c);
        if (st + sh != s || sh != want[c] || (s > 0 && st < 1)) {
            ok = 0;
            break;
        }
        memcpy(a, p->indices + p->offsets[c], s * sizeof *a);
        memcpy(b, tr->indices + tr->offsets[c], st * sizeof *b);
        memcpy(b + st, ho->indices + ho->offsets[c], sh * sizeof *b);
        qsort(a, s, sizeof *a, cmp_u32);
        qsort(b, s, sizeof *b, cmp_u32);
        /* equal sorted multisets of distinct indices: disjoint, same union */
        if (memcmp(a, b, s * sizeof *a) != 0) ok = 0;
        for (size_t j = 1; j < s && ok; j++)
            if (b[j] == b[j - 1]) ok = 0;
    }
    free(a);
    free(b);
    return ok;
}

static void test_holdout(void) {
    /* Natural groups of sizes 1, 2, 3, 10, 30, 100, 7. */
    static const size_t sizes[] = {1, 2, 3, 10, 30, 100, 7};
    const size_t m = sizeof sizes / sizeof sizes[0];
    size_t n = 0;
    for (size_t c = 0; c < m; c++) n += sizes[c];
    uint32_t *g = malloc(n * sizeof *g);
    size_t o = 0;
    for (size_t c = 0; c < m; c++)
        for (size_t j = 0; j < sizes[c]; j++) g[o++] = (uint32_t)c;
    ef_rng r;
    ef_rng_seed(&r, 8);
    for (size_t i = n; i > 1; i--) { /* interleave the groups */
        size_t j = (size_t)ef_rng_below(&r, i);
        uint32_t t = g[i - 1];
        g[i - 1] = g[j];
        g[j] = t;
    }
    ef_partition p, tr, ho, tr2, ho2;
    CHECK_OK(ef_partition_natural(&p, g, n, m));
    free(g);

    static const struct {
        double frac;
        size_t held[7];
    } cases[] = {
        {0.0, {0, 0, 0, 0, 0, 0, 0}},
        {0.1, {0, 1, 1, 1, 3, 10, 1}}, /* 0.1 * 30 = 3 exactly, not 4 */
        {0.2, {0, 1, 1, 2, 6, 20, 2}},
        {0.5, {0, 1, 2, 5, 15, 50, 4}},
        {0.99, {0, 1, 2, 9, 29, 99, 6}},
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        CHECK_OK(ef_partition_holdout(&p, cases[t].frac, 5, &tr, &ho));
        CHECK_MSG(check_holdout(&p, &tr, &ho, cases[t].held), "holdout %g", cases[t].frac);
        CHECK_OK(ef_partition_holdout(&p, cases[t].frac, 5, &tr2, &ho2));
        CHECK(same_partition(&tr, &tr2) && same_partition(&ho, &ho2));
        ef_partition_free(&tr2);
        ef_partition_free(&ho2);
        if (cases[t].frac > 0) {
            CHECK_OK(ef_partition_holdout(&p, cases[t].frac, 6, &tr2, &ho2));
            CHECK_MSG(!same_partition(&ho, &ho2), "holdout %g: seed ignored", cases[t].frac);
            ef_partition_free(&tr2);
            ef_partition_free(&ho2);
        }
        ef_partition_free(&tr);
        ef_partition_free(&ho);
    }

    /* A made partition of Dirichlet-skewed sizes, 20% held out. */
    const size_t bn = 12000;
    uint8_t *labels = balanced_labels(bn, 10, 4);
    ef_partition d;
    make(&d, "dirichlet:0.3", labels, bn, 10, 300, 1, 3);
    size_t *want = malloc(d.n_clients * sizeof *want);
    for (size_t c = 0; c < d.n_clients; c++) {
        size_t s = ef_partition_size(&d, c);
        size_t h = (size_t)ceil(0.2 * (double)s - 1e-9);
        want[c] = s <= 1 ? 0 : (h > s - 1 ? s - 1 : h);
    }
    CHECK_OK(ef_partition_holdout(&d, 0.2, 1, &tr, &ho));
    CHECK(check_holdout(&d, &tr, &ho, want));
    ef_partition_free(&tr);
    ef_partition_free(&ho);
    free(want);
    free(labels);

    /* Errors leave the outputs zeroed. */
    static const double bad[] = {1.0, -0.1, 1.5, NAN, INFINITY};
    for (size_t t = 0; t < sizeof bad / sizeof bad[0]; t++) {
        memset(&tr, 0xab, sizeof tr);
        memset(&ho, 0xab, sizeof ho);
        CHECK_MSG(ef_partition_holdout(&p, bad[t], 1, &tr, &ho) == EF_ERR_INVALID, "frac %g",
                  bad[t]);
        CHECK(part_is_zero(&tr) && part_is_zero(&ho));
    }
    memset(&tr, 0xab, sizeof tr);
    CHECK(ef_partition_holdout(&p, 0.1, 1, &tr, NULL) == EF_ERR_INVALID && part_is_zero(&tr));
    memset(&ho, 0xab, sizeof ho);
    CHECK(ef_partition_holdout(NULL, 0.1, 1, &tr, &ho) == EF_ERR_INVALID && part_is_zero(&ho));
    /* Aliasing is refused and touches nothing. */
    CHECK(ef_partition_holdout(&p, 0.1, 1, &tr, &tr) == EF_ERR_INVALID);
    CHECK(ef_partition_holdout(&p, 0.1, 1, &p, &ho) == EF_ERR_INVALID);
    CHECK(p.n_clients == m && exact_cover(&p, n));
    ef_partition zero;
    memset(&zero, 0, sizeof zero);
    CHECK(ef_partition_holdout(&zero, 0.1, 1, &tr, &ho) == EF_ERR_INVALID);
    ef_partition_free(&d);
    ef_partition_free(&p);
}

/* ---- argument errors ----------------------------------------------------------------- */

static void expect_make_fail(const char *what, const ef_partition_spec *spec,
                             const uint8_t *labels, size_t n, int K, size_t m, size_t min,
                             ef_status want, const char *needle) {
    ef_partition p;
    memset(&p, 0xab, sizeof p);
    ef_status st = ef_partition_make(&p, spec, labels, n, K, m, min, 1);
    const char *msg = ef_last_error();
    if (getenv("EF_TEST_VERBOSE")) printf("  %s: %s\n", what, msg);
    CHECK_MSG(st == want, "%s: got %s, want %s (%s)", what, ef_strerror(st), ef_strerror(want),
              msg);
    CHECK_MSG(!needle || strstr(msg, needle), "%s: message lacks '%s': %s", what, needle, msg);
    if (st == EF_OK)
        ef_partition_free(&p);
    else
        CHECK_MSG(part_is_zero(&p), "%s: *out not zeroed", what);
}

static void test_errors(void) {
    uint8_t labels[100];
    for (int i = 0; i < 100; i++) labels[i] = (uint8_t)(i % 10);
    ef_partition_spec iid = {EF_PART_IID, 0, 0}, dir = {EF_PART_DIRICHLET, 0.5, 0},
                      sh = {EF_PART_SHARDS, 0, 2}, qty = {EF_PART_QUANTITY, 1.0, 0};
    const ef_partition_spec *all[] = {&iid, &dir, &sh, &qty};
    for (int i = 0; i < 4; i++) {
        char what[64];
        ef_partition_spec_format(all[i], what, sizeof what);
        /* min_per_client too large: 11 clients x 10 > 100 */
        expect_make_fail(what, all[i], labels, 100, 10, 11, 10, EF_ERR_INVALID,
                         "n_clients 11 x min_per_client 10 exceeds the 100 examples");
        expect_make_fail(what, all[i], labels, 100, 10, 101, 0, EF_ERR_INVALID, "n_clients 101");
        expect_make_fail(what, all[i], labels, 100, 10, 2, SIZE_MAX, EF_ERR_INVALID, NULL);
        expect_make_fail(what, all[i], labels, 100, 10, 0, 1, EF_ERR_INVALID, "n_clients");
        expect_make_fail(what, all[i], labels, 0, 10, 1, 1, EF_ERR_INVALID, NULL);
        expect_make_fail(what, all[i], labels, 100, 0, 5, 1, EF_ERR_INVALID, "n_classes");
        expect_make_fail(what, all[i], labels, 100, 257, 5, 1, EF_ERR_INVALID, "n_classes");
        /* a label out of range, named with its index */
        labels[57] = 10;
        expect_make_fail(what, all[i], labels, 100, 10, 5, 1, EF_ERR_INVALID,
                         "label 10 at index 57");
        labels[57] = 7;
        expect_make_fail(what, all[i], labels, 100, 7, 5, 1, EF_ERR_INVALID, "label 7 at index 7");
        /* more examples than 32-bit indices reach (checked before touching labels) */
        expect_make_fail(what, all[i], labels, (size_t)UINT32_MAX + 1, 10, 5, 1, EF_ERR_RANGE,
                         "32-bit");
        expect_make_fail(what, all[i], labels, 100, 10, 5, 1, EF_OK, NULL);
    }
    expect_make_fail("labels NULL", &dir, NULL, 100, 10, 5, 1, EF_ERR_INVALID, "labels");
    expect_make_fail("labels NULL", &sh, NULL, 100, 10, 5, 1, EF_ERR_INVALID, "labels");
    expect_make_fail("spec NULL", NULL, labels, 100, 10, 5, 1, EF_ERR_INVALID, NULL);
    CHECK(ef_partition_make(NULL, &iid, labels, 100, 10, 5, 1, 1) == EF_ERR_INVALID);
    ef_partition_spec s = {EF_PART_NATURAL, 0, 0};
    expect_make_fail("natural", &s, labels, 100, 10, 5, 1, EF_ERR_INVALID, "ef_partition_natural");
    s = (ef_partition_spec){(ef_partition_kind)42, 0, 0};
    expect_make_fail("kind 42", &s, labels, 100, 10, 5, 1, EF_ERR_INVALID, "kind 42");
    static const double bad_alpha[] = {0.0, -1.0, NAN, INFINITY};
    for (int i = 0; i < 4; i++) {
        s = (ef_partition_spec){EF_PART_DIRICHLET, bad_alpha[i], 0};
        expect_make_fail("dirichlet alpha", &s, labels, 100, 10, 5, 1, EF_ERR_INVALID, "alpha");
        s.kind = EF_PART_QUANTITY;
        expect_make_fail("quantity alpha", &s, labels, 100, 10, 5, 1, EF_ERR_INVALID, "alpha");
    }
    s = (ef_partition_spec){EF_PART_SHARDS, 0, 0};
    expect_make_fail("shards:0", &s, labels, 100, 10, 5, 1, EF_ERR_INVALID, "shards");
    s.shards = 21; /* 5 x 21 shards > 100 examples */
    expect_make_fail("shards:21", &s, labels, 100, 10, 5, 1, EF_ERR_INVALID,
                     "one example per shard");
    s.shards = 20;
    expect_make_fail("shards:20", &s, labels, 100, 10, 5, 1, EF_OK, NULL);
    s.shards = 2147483647;
    expect_make_fail("shards:INT_MAX", &s, labels, 100, 10, 5, 1, EF_ERR_INVALID, NULL);
}

/* ---- out of memory ------------------------------------------------------------------ */

typedef struct oom_ctx {
    const char *spec; /* NULL: natural; "holdout": holdout of `in` */
    const uint8_t *labels;
    const uint32_t *groups;
    size_t n, m, min;
    const ef_partition *in;
} oom_ctx;

static ef_status oom_build(const oom_ctx *c, ef_partition *a, ef_partition *b) {
    if (!c->spec) return ef_partition_natural(a, c->groups, c->n, c->m);
    if (strcmp(c->spec, "holdout") == 0) return ef_partition_holdout(c->in, 0.25, 3, a, b);
    ef_partition_spec spec;
    ef_status st = ef_partition_spec_parse(c->spec, &spec);
    if (st != EF_OK) return st;
    return ef_partition_make(a, &spec, c->labels, c->n, 10, c->m, c->min, 17);
}

/* Fails allocation k = 1, 2, ... (once, then from k on) until the call
 * succeeds; each failure must be EF_ERR_NOMEM with the outputs zeroed and
 * nothing leaked, and the final success must equal an unfailed reference. */
static void oom_loop(const char *name, const oom_ctx *c) {
    ef_partition ref_a, ref_b;
    memset(&ref_a, 0, sizeof ref_a);
    memset(&ref_b, 0, sizeof ref_b);
    CHECK_OK(oom_build(c, &ref_a, &ref_b));
    for (int persistent = 0; persistent < 2; persistent++) {
        long k;
        for (k = 1; k < 1000; k++) {
            ef_partition a, b;
            memset(&a, 0xab, sizeof a);
            memset(&b, 0xab, sizeof b);
            long live0 = live_blocks;
            arm(k, persistent);
            ef_status st = oom_build(c, &a, &b);
            long calls = alloc_calls;
            disarm();
            if (st == EF_OK) {
                CHECK_MSG(calls < k, "%s: succeeded although allocation %ld failed", name, k);
                CHECK_MSG(same_partition(&a, &ref_a), "%s: result differs after OOM retries",
                          name);
                if (ref_b.offsets)
                    CHECK_MSG(same_partition(&b, &ref_b), "%s: second result differs", name);
                ef_partition_free(&a);
                if (ref_b.offsets) ef_partition_free(&b);
                CHECK_MSG(live_blocks == live0, "%s: leak after success", name);
                break;
            }
            CHECK_MSG(st == EF_ERR_NOMEM, "%s: allocation %ld failed: %s (%s)", name, k,
                      ef_strerror(st), ef_last_error());
            CHECK_MSG(part_is_zero(&a), "%s: output not zeroed (k=%ld)", name, k);
            if (ref_b.offsets) CHECK_MSG(part_is_zero(&b), "%s: heldout not zeroed", name);
            CHECK_MSG(live_blocks == live0, "%s: %ld blocks leaked when allocation %ld failed",
                      name, live_blocks - live0, k);
        }
        CHECK_MSG(k > 1 && k < 1000, "%s: %ld allocation points", name, k - 1);
        if (persistent == 0) printf("  %s: %ld allocation points\n", name, k - 1);
    }
    ef_partition_free(&ref_a);
    ef_partition_free(&ref_b);
}

static void test_oom(void) {
    ef_set_allocator(&counting);
    const size_t n = 3000;
    uint8_t *labels = balanced_labels(n, 10, 6);
    uint32_t groups[50];
    for (int i = 0; i < 50; i++) groups[i] = (uint32_t)(i % 7) * 2;
    static const char *kinds[] = {"iid", "dirichlet:0.1", "shards:2", "quantity:0.5"};
    for (int i = 0; i < 4; i++) {
        /* min 12 of n / m = 15 forces the Dirichlet fix-up at alpha 0.1 */
        oom_ctx c = {kinds[i], labels, NULL, n, 200, 12, NULL};
        oom_loop(kinds[i], &c);
    }
    oom_ctx nat = {NULL, NULL, groups, 50, 14, 0, NULL};
    oom_loop("natural", &nat);
    ef_partition in;
    ef_partition_spec spec = {EF_PART_DIRICHLET, 0.5, 0};
    CHECK_OK(ef_partition_make(&in, &spec, labels, n, 10, 40, 1, 1));
    oom_ctx ho = {"holdout", NULL, NULL, 0, 0, 0, &in};
    oom_loop("holdout", &ho);
    ef_partition_free(&in);
    free(labels);
    CHECK_MSG(live_blocks == 0, "%ld blocks live at the end", live_blocks);
    ef_set_allocator(NULL);
}

/* ---- real Fashion-MNIST ------------------------------------------------------------- */

static int test_real(void) {
    if (access(EF_FASHION_MNIST_DIR "/train-labels-idx1-ubyte.gz", R_OK) != 0 &&
        access(EF_FASHION_MNIST_DIR "/train-labels-idx1-ubyte", R_OK) != 0) {
        printf("Fashion-MNIST not found in %s (Debian package dataset-fashion-mnist): "
               "skipping the real-data checks\n",
               EF_FASHION_MNIST_DIR);
        return 0;
    }
    ef_dataset ds;
    double t0 = ef_now();
    CHECK_OK(ef_dataset_load_n(&ds, "fashion-mnist", NULL, 1, 0));
    if (ds.n != 60000) {
        ef_dataset_free(&ds);
        return 0;
    }
    printf("Fashion-MNIST train labels (loaded in %.2f s):\n", ef_now() - t0);
    /* 6,000 per class: with 100 clients x 2 shards of 300 every shard holds one label. */
    check_kinds("fmnist", ds.labels, ds.n, 10, 1);
    check_scale("fmnist", ds.labels, ds.n, 10, 10000);
    /* shards:2 at 10,000 clients: shards of 3, 2,000 per class: still <= 2 labels. */
    ef_partition p;
    make(&p, "shards:2", ds.labels, ds.n, 10, 10000, 1, 1);
    label_stats sh = label_stats_of(&p, ds.labels, 10);
    CHECK_MSG(sh.max_distinct <= 2, "fmnist shards:2 x 10000: %d labels", sh.max_distinct);
    ef_partition_free(&p);
    /* holdout on the real partition: 10% per client */
    make(&p, "dirichlet:0.5", ds.labels, ds.n, 10, 100, 10, 1);
    ef_partition tr, ho;
    CHECK_OK(ef_partition_holdout(&p, 0.1, 2, &tr, &ho));
    size_t *want = malloc(p.n_clients * sizeof *want);
    for (size_t c = 0; c < p.n_clients; c++) {
        size_t s = ef_partition_size(&p, c), h = (size_t)ceil(0.1 * (double)s - 1e-9);
        want[c] = h > s - 1 ? s - 1 : h;
    }
    CHECK(check_holdout(&p, &tr, &ho, want));
    free(want);
    ef_partition_free(&tr);
    ef_partition_free(&ho);
    ef_partition_free(&p);
    ef_dataset_free(&ds);
    return 1;
}

int main(void) {
    quick = getenv("EDGEFL_TEST_QUICK") != NULL;
    double t0 = ef_now();
#define RUN(f)                                                                   \
    do {                                                                         \
        double t_ = ef_now();                                                    \
        f;                                                                       \
        printf("%-22s %.2f s\n", #f, ef_now() - t_);                             \
    } while (0)
    RUN(test_gamma());
    RUN(test_spec());
    RUN(test_synthetic());
    RUN(test_known_answers());
    RUN(test_natural());
    RUN(test_holdout());
    RUN(test_errors());
    RUN(test_oom());
    RUN(test_real());
    printf("total %.2f s\n", ef_now() - t0);
    return tu_finish("data/test_partition");
}
