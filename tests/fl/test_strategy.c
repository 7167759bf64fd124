/*
 * Tests of the aggregation strategies (ef_strategy):
 *   1. every strategy against tests/fl/strategy_ref.py, an independent numpy
 *      implementation of the formulas, for three consecutive rounds per case
 *      (server-optimizer state carried across rounds), on inputs the script
 *      draws from a seeded RNG and hands over as raw float32 (run when
 *      /usr/bin/python3 can import numpy; EDGEFL_PYTHON selects another
 *      interpreter);
 *   2. C-only checks: FedAvg weighting, hand-worked medians, trimmed means,
 *      FedAvgM and FedAdam rounds, weights ignored by the robust strategies,
 *      Krum rejecting an outlier and breaking ties by index, a Byzantine
 *      scenario (20% sign-flipped x10 updates: median, trimmed mean and Krum
 *      hold, FedAvg is dragged away), median and trimmed mean against a
 *      qsort-based naive kernel for n = 1..70 on random, duplicate-heavy,
 *      sorted and constant columns, the kernels themselves (the lane-wise
 *      sorting network for n up to 512, introselect with and without its
 *      heapsort fallback up to n = 2049, and the public API above the
 *      network's limit), error paths (no updates, non-finite
 *      deltas, bad weights, max_updates, too few updates for Krum, a trim
 *      that drops everything, float overflow) with the global left
 *      unchanged, begin/apply round semantics, names, config validation,
 *      the FedBuff staleness weight, out-of-memory injection into every
 *      constructor (nothing leaks), and the speed of the median on
 *      1.66M parameters x 20 updates (EDGEFL_TEST_QUICK=1: 166k).
 *
 * Tolerance against the reference: |edgefl - expected| <= 1e-6 * max(1,
 * |expected|). Both sides compute the aggregate in double and keep the global
 * model in float; they differ by the order of double sums (numpy sums
 * pairwise) and by edgefl keeping the optimizer state (m, v) in float, i.e. a
 * few float roundings (~1.2e-7 relative each) over three rounds. The
 * script refuses inputs with near-ties (Yogi's sign(v - delta^2), Krum
 * scores) where a rounding could flip a discrete choice.
 */
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "edgefl/strategy.h"
#include "fl/strategy_internal.h"
#include "test_util.h"

#define TOL 1e-6

static int quick; // EDGEFL_TEST_QUICK: smaller sizes under the sanitizers
static double worst_ratio = 0.0;

/* ---- counting, failing allocator (installed for the whole run) ------------ */

static atomic_long live_blocks;
static atomic_long alloc_calls;
static atomic_long fail_at;   // 1-based call that fails; 0: none
static atomic_int fail_after; // nonzero: every call from fail_at on fails

static int should_fail(void) {
    long n = atomic_fetch_add(&alloc_calls, 1) + 1;
    long k = atomic_load(&fail_at);
    if (k <= 0) return 0;
    return atomic_load(&fail_after) ? n >= k : n == k;
}
static void *count_malloc(void *user, size_t size) {
    (void)user;
    if (should_fail()) return NULL;
    void *p = malloc(size);
    if (p) atomic_fetch_add(&live_blocks, 1);
    return p;
}
static void *count_realloc(void *user, void *ptr, size_t size) {
    (void)user;
    if (should_fail()) return NULL;
    void *p = realloc(ptr, size);
    if (p && !ptr) atomic_fetch_add(&live_blocks, 1);
    return p;
}
static void count_free(void *user, void *ptr) {
    (void)user;
    if (ptr) atomic_fetch_sub(&live_blocks, 1);
    free(ptr);
}
static const ef_allocator counting = {count_malloc, count_realloc, count_free, NULL};

/* ---- helpers ------------------------------------------------------------------ */

static const ef_strategy_kind ALL[] = {
    EF_STRAT_FEDAVG,    EF_STRAT_FEDPROX,   EF_STRAT_FEDAVGM,       EF_STRAT_FEDADAM,
    EF_STRAT_FEDYOGI,   EF_STRAT_FEDADAGRAD, EF_STRAT_FEDMEDIAN,    EF_STRAT_FEDTRIMMEDAVG,
    EF_STRAT_KRUM,      EF_STRAT_MULTIKRUM};
#define N_ALL (sizeof ALL / sizeof *ALL)

static ef_strategy *make(const ef_strategy_config *c, size_t np, size_t maxu) {
    ef_strategy *s = NULL;
    CHECK_OK(ef_strategy_new(&s, c, np, maxu));
    return s;
}

static ef_strategy *make_kind(ef_strategy_kind k, size_t np, size_t maxu) {
    ef_strategy_config c = ef_strategy_defaults(k);
    return make(&c, np, maxu);
}

static uint64_t splitmix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// A deterministic value in [-1, 1) for (stream, index).
static float urand(uint64_t stream, uint64_t i) {
    return (float)((double)(splitmix(stream * 0x100000001B3ull + i) >> 11) * 0x1p-52 - 1.0);
}

// Standard normal-ish (sum of 4 uniforms, scaled) for (stream, index).
static float nrand(uint64_t stream, uint64_t i) {
    float s = 0;
    for (int k = 0; k < 4; k++) s += urand(stream * 4 + (uint64_t)k, i);
    return s * 0.8660254f; // var(U[-1,1)) = 1/3
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

// Naive kernels: sort, then take the middle / the mean of the middle.
static double naive_median(float *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_float);
    return n & 1 ? (double)v[n / 2] : 0.5 * ((double)v[n / 2 - 1] + (double)v[n / 2]);
}
static double naive_trimmed(float *v, size_t n, size_t cut) {
    qsort(v, n, sizeof *v, cmp_float);
    double s = 0;
    for (size_t i = cut; i < n - cut; i++) s += v[i];
    return s / (double)(n - 2 * cut);
}

static void check_close(const char *what, const float *a, const double *b, size_t n, double tol) {
    double worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double r = fabs((double)a[i] - b[i]) / (tol * fmax(1.0, fabs(b[i])));
        if (isnan(r)) r = INFINITY;
        if (r > worst) worst = r, wi = i;
    }
    CHECK_MSG(worst <= 1.0, "%s: element %zu edgefl %.9g expected %.9g", what, wi, (double)a[wi],
              b[wi]);
}

/* ---- names, defaults, validation, staleness ------------------------------------- */

static void test_names(void) {
    static const char *names[] = {"fedavg",     "fedprox",   "fedavgm",       "fedadam",
                                  "fedyogi",    "fedadagrad", "fedmedian",    "fedtrimmedavg",
                                  "krum",       "multikrum"};
    for (size_t i = 0; i < N_ALL; i++) {
        CHECK(strcmp(ef_strategy_name(ALL[i]), names[i]) == 0);
        ef_strategy_kind k = (ef_strategy_kind)99;
        CHECK_OK(ef_strategy_parse(ef_strategy_name(ALL[i]), &k));
        CHECK(k == ALL[i]);
        CHECK(ef_strategy_keeps_updates(ALL[i]) == (i >= 6));
    }
    static const char *bad[] = {"FedAvg", "", "median", "fedavg ", "krum2", "trimmed"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ef_strategy_kind k = EF_STRAT_KRUM;
        ef_clear_error();
        CHECK(ef_strategy_parse(bad[i], &k) == EF_ERR_INVALID);
        CHECK(k == EF_STRAT_KRUM);
        CHECK(strstr(ef_last_error(), "fedtrimmedavg") != NULL); // lists the names
    }
    ef_strategy_kind k;
    CHECK(ef_strategy_parse(NULL, &k) == EF_ERR_INVALID);
    CHECK(strcmp(ef_strategy_name((ef_strategy_kind)42), "unknown") == 0);
    CHECK(!ef_strategy_keeps_updates((ef_strategy_kind)42));
}

static void expect_invalid(const ef_strategy_config *c, size_t np, size_t maxu, const char *why) {
    ef_strategy *s = (ef_strategy *)&s; // must be reset to NULL
    ef_clear_error();
    ef_status st = ef_strategy_new(&s, c, np, maxu);
    CHECK_MSG(st == EF_ERR_INVALID && s == NULL, "%s: status %s", why, ef_strerror(st));
    CHECK_MSG(ef_last_error()[0] != '\0', "%s: no message", why);
    if (st == EF_OK) ef_strategy_free(s);
}

static void expect_valid(const ef_strategy_config *c, size_t np, size_t maxu, const char *why) {
    ef_strategy *s = NULL;
    ef_status st = ef_strategy_new(&s, c, np, maxu);
    CHECK_MSG(st == EF_OK && s, "%s: status %s: %s", why, ef_strerror(st), ef_last_error());
    if (s) CHECK(memcmp(ef_strategy_get_config(s), c, sizeof *c) == 0);
    ef_strategy_free(s);
}

static void test_validation(void) {
    for (size_t i = 0; i < N_ALL; i++) {
        ef_strategy_config d = ef_strategy_defaults(ALL[i]);
        int adaptive = ALL[i] >= EF_STRAT_FEDADAM && ALL[i] <= EF_STRAT_FEDADAGRAD;
        CHECK(d.kind == ALL[i] && d.server_lr == (adaptive ? 0.01f : 1.0f));
        CHECK(d.server_momentum == 0.9f && d.beta1 == 0.9f && d.beta2 == 0.99f && d.tau == 1e-3f &&
              d.proximal_mu == 0.01f && d.trim_beta == 0.1f && d.krum_f == 1 &&
              d.multikrum_m == 0);
        expect_valid(&d, 10, 5, "defaults");
        static const float bad_lr[] = {0.0f, -0.1f, NAN, INFINITY};
        for (size_t j = 0; j < 4; j++) {
            ef_strategy_config c = d;
            c.server_lr = bad_lr[j];
            expect_invalid(&c, 10, 5, "server_lr");
        }
        expect_invalid(&d, 0, 5, "n_params 0");
        expect_invalid(&d, 10, 0, "max_updates 0");
    }
    ef_strategy_config c = ef_strategy_defaults(EF_STRAT_FEDAVG);
    c.kind = (ef_strategy_kind)10;
    expect_invalid(&c, 10, 5, "kind 10");
    c.kind = (ef_strategy_kind)-1;
    expect_invalid(&c, 10, 5, "kind -1");
    ef_strategy *s = (ef_strategy *)&s;
    CHECK(ef_strategy_new(&s, NULL, 10, 5) == EF_ERR_INVALID && s == NULL);

    static const float bad_unit[] = {1.0f, 1.5f, -0.1f, NAN};
    static const float bad_pos[] = {0.0f, -1e-3f, NAN, INFINITY};
    for (size_t j = 0; j < 4; j++) {
        c = ef_strategy_defaults(EF_STRAT_FEDAVGM);
        c.server_momentum = bad_unit[j];
        expect_invalid(&c, 10, 5, "momentum");
        for (int k = EF_STRAT_FEDADAM; k <= EF_STRAT_FEDYOGI; k++) {
            c = ef_strategy_defaults((ef_strategy_kind)k);
            c.beta1 = bad_unit[j];
            expect_invalid(&c, 10, 5, "beta1");
            c = ef_strategy_defaults((ef_strategy_kind)k);
            c.beta2 = bad_unit[j];
            expect_invalid(&c, 10, 5, "beta2");
        }
        for (int k = EF_STRAT_FEDADAM; k <= EF_STRAT_FEDADAGRAD; k++) {
            c = ef_strategy_defaults((ef_strategy_kind)k);
            c.tau = bad_pos[j];
            expect_invalid(&c, 10, 5, "tau");
        }
        c = ef_strategy_defaults(EF_STRAT_FEDPROX);
        c.proximal_mu = j == 0 ? -1.0f : bad_pos[j];
        expect_invalid(&c, 10, 5, "mu");
        c = ef_strategy_defaults(EF_STRAT_FEDTRIMMEDAVG);
        c.trim_beta = j == 0 ? 0.5f : bad_unit[j];
        expect_invalid(&c, 10, 5, "trim_beta");
    }
    for (int k = EF_STRAT_KRUM; k <= EF_STRAT_MULTIKRUM; k++) {
        c = ef_strategy_defaults((ef_strategy_kind)k);
        c.krum_f = -1;
        expect_invalid(&c, 10, 5, "krum_f < 0");
        c.krum_f = 1;
        expect_invalid(&c, 10, 4, "max_updates < 2f + 3");
        expect_valid(&c, 10, 5, "max_updates = 2f + 3");
        c.krum_f = 0;
        expect_valid(&c, 10, 3, "f = 0, 3 updates");
    }
    c = ef_strategy_defaults(EF_STRAT_MULTIKRUM);
    c.multikrum_m = -1;
    expect_invalid(&c, 10, 8, "multikrum_m < 0");
    c.multikrum_m = 9;
    expect_invalid(&c, 10, 8, "multikrum_m > max_updates");
    c.multikrum_m = 8;
    expect_valid(&c, 10, 8, "multikrum_m = max_updates");

    // Edge values that are valid, and fields a kind does not use are not checked.
    c = ef_strategy_defaults(EF_STRAT_FEDAVGM);
    c.server_momentum = 0.0f;
    expect_valid(&c, 1, 1, "momentum 0");
    c = ef_strategy_defaults(EF_STRAT_FEDADAM);
    c.beta1 = c.beta2 = 0.0f;
    expect_valid(&c, 1, 1, "betas 0");
    c = ef_strategy_defaults(EF_STRAT_FEDTRIMMEDAVG);
    c.trim_beta = 0.0f;
    expect_valid(&c, 1, 1, "trim 0");
    c.trim_beta = 0.49999997f;
    expect_valid(&c, 1, 1, "trim just below 0.5");
    c = ef_strategy_defaults(EF_STRAT_FEDADAGRAD);
    c.beta1 = c.beta2 = NAN; // unused by Adagrad
    c.server_momentum = -5.0f;
    expect_valid(&c, 1, 1, "adagrad ignores betas");
    c = ef_strategy_defaults(EF_STRAT_FEDAVG);
    c.tau = c.trim_beta = NAN;
    c.krum_f = -3;
    expect_valid(&c, 1, 1, "fedavg ignores the others' fields");

    // Sizes whose products overflow fail cleanly.
    c = ef_strategy_defaults(EF_STRAT_FEDMEDIAN);
    s = (ef_strategy *)&s;
    CHECK(ef_strategy_new(&s, &c, SIZE_MAX / 4, 8) == EF_ERR_NOMEM && s == NULL);
    c = ef_strategy_defaults(EF_STRAT_KRUM);
    CHECK(ef_strategy_new(&s, &c, 4, SIZE_MAX / 2) == EF_ERR_NOMEM && s == NULL);
    ef_strategy_free(NULL);
}

static void test_staleness(void) {
    CHECK(ef_staleness_weight(0, 0.5) == 1.0);
    CHECK(ef_staleness_weight(3, 0.5) == 0.5);
    CHECK(ef_staleness_weight(1, 1.0) == 0.5);
    CHECK(ef_staleness_weight(7, 0.0) == 1.0);
    CHECK(ef_staleness_weight(UINT32_MAX, 0.5) == 0x1p-16);
    CHECK_NEAR(ef_staleness_weight(8, 0.5), 1.0 / 3.0, 1e-15);
    CHECK_NEAR(ef_staleness_weight(9, 2.0), 0.01, 1e-15);
    double w = ef_staleness_weight(1000, 0.5);
    CHECK(w > 0.0 && w < 1.0);
    CHECK(isnan(ef_staleness_weight(3, -0.5)));
    CHECK(isnan(ef_staleness_weight(3, NAN)));
    CHECK(isnan(ef_staleness_weight(3, INFINITY)));
    // ... which ef_strategy_add refuses as a weight.
    ef_strategy *s = make_kind(EF_STRAT_FEDAVG, 1, 2);
    float d = 1.0f;
    CHECK(ef_strategy_add(s, &d, ef_staleness_weight(3, NAN)) == EF_ERR_INVALID);
    CHECK_OK(ef_strategy_add(s, &d, 10.0 * ef_staleness_weight(3, 0.5)));
    ef_strategy_free(s);
}

/* ---- hand-worked and C-only behaviour -------------------------------------------- */

static void test_fedavg_weighting(void) {
    enum { P = 257 };
    float d1[P], d2[P], ga[P], gb[P];
    double want[P];
    for (int j = 0; j < P; j++) {
        d1[j] = nrand(1, (uint64_t)j);
        d2[j] = 3.0f * nrand(2, (uint64_t)j);
        ga[j] = gb[j] = urand(3, (uint64_t)j);
        want[j] = (float)((double)ga[j] + (3.0 * d1[j] + d2[j]) / 4.0);
    }
    for (int k = 0; k < 2; k++) { // FedAvg and FedProx aggregate alike
        ef_strategy_kind kind = k ? EF_STRAT_FEDPROX : EF_STRAT_FEDAVG;
        ef_strategy *a = make_kind(kind, P, 4), *b = make_kind(kind, P, 4);
        memcpy(ga, gb, sizeof ga);
        CHECK_OK(ef_strategy_add(a, d1, 3.0));
        CHECK_OK(ef_strategy_add(a, d2, 1.0));
        for (int i = 0; i < 3; i++) CHECK_OK(ef_strategy_add(b, d1, 1.0));
        CHECK_OK(ef_strategy_add(b, d2, 1.0));
        CHECK(ef_strategy_count(a) == 2 && ef_strategy_count(b) == 4);
        float g0[P];
        memcpy(g0, gb, sizeof g0);
        CHECK_OK(ef_strategy_apply(a, ga));
        CHECK_OK(ef_strategy_apply(b, gb));
        CHECK(memcmp(ga, gb, sizeof ga) == 0); // weight 3 == three clients of weight 1
        check_close("fedavg weighted mean", ga, want, P, 1e-7);
        memcpy(gb, g0, sizeof gb);
        ef_strategy_free(a);
        ef_strategy_free(b);
    }
    // Scaling every weight changes nothing; server_lr scales the step.
    ef_strategy_config c = ef_strategy_defaults(EF_STRAT_FEDAVG);
    c.server_lr = 0.25f;
    ef_strategy *s = make(&c, 1, 2);
    float x1 = 1.0f, x2 = 5.0f, g = 10.0f;
    CHECK_OK(ef_strategy_add(s, &x1, 1e-3));
    CHECK_OK(ef_strategy_add(s, &x2, 3e-3));
    CHECK_OK(ef_strategy_apply(s, &g));
    CHECK(g == 10.0f + 0.25f * 4.0f);
    ef_strategy_free(s);
}

// Runs one round of `kind` on rows (n, P) with unit weights, from global g.
static void one_round(ef_strategy *s, const float *rows, size_t n, size_t P, float *g) {
    ef_strategy_begin(s);
    for (size_t i = 0; i < n; i++) CHECK_OK(ef_strategy_add(s, rows + i * P, 1.0));
    CHECK_OK(ef_strategy_apply(s, g));
}

static void test_by_hand(void) {
    // Median, odd and even n, per column; column 1 has ties.
    {
        float rows3[3 * 2] = {3, 5, 1, 5, 2, -1};
        float g[2] = {0, 0};
        ef_strategy *s = make_kind(EF_STRAT_FEDMEDIAN, 2, 4);
        one_round(s, rows3, 3, 2, g);
        CHECK(g[0] == 2.0f && g[1] == 5.0f);
        float rows4[4 * 2] = {4, 7, 1, 7, 3, 7, 2, -7};
        g[0] = g[1] = 1.0f;
        one_round(s, rows4, 4, 2, g);
        CHECK(g[0] == 3.5f && g[1] == 8.0f); // 1 + 2.5, 1 + 7
        float one[2] = {-0.5f, 0.25f};
        g[0] = g[1] = 0.0f;
        one_round(s, one, 1, 2, g);
        CHECK(g[0] == -0.5f && g[1] == 0.25f);
        ef_strategy_free(s);
    }
    // Trimmed mean: 0.35 x 20 cuts 7 (not 6, which the float 0.35f alone would give).
    {
        ef_strategy_config c = ef_strategy_defaults(EF_STRAT_FEDTRIMMEDAVG);
        c.trim_beta = 0.35f;
        ef_strategy *s = make(&c, 1, 20);
        float rows[20], g = 0.0f;
        for (int i = 0; i < 20; i++) rows[i] = (float)((19 - i) * (19 - i) + 2 * (19 - i) + 1);
        one_round(s, rows, 20, 1, &g); // (i+1)^2 for i = 0..19, reversed
        CHECK_NEAR(g, 679.0 / 6.0, 1e-5);
        ef_strategy_free(s);
        c.trim_beta = 0.25f; // n = 4 cuts 1: mean of the middle two
        s = make(&c, 1, 4);
        float r4[4] = {10, -3, 4, 100};
        g = 0.0f;
        one_round(s, r4, 4, 1, &g);
        CHECK(g == 7.0f);
        g = 0.0f;
        one_round(s, r4, 3, 1, &g); // 0.25 x 3 cuts 0: the mean
        CHECK(g == 11.0f / 3.0f);
        ef_strategy_free(s);
        c.trim_beta = 0.1f; // n = 1: cut 0
        s = make(&c, 1, 4);
        g = 1.0f;
        one_round(s, r4, 1, 1, &g);
        CHECK(g == 11.0f);
        ef_strategy_free(s);
    }
    // FedAvgM: v1 = d, w1 = w0 + lr d; v2 = beta d + d; begin keeps v.
    {
        ef_strategy_config c = ef_strategy_defaults(EF_STRAT_FEDAVGM);
        c.server_lr = 0.5f;
        c.server_momentum = 0.5f;
        ef_strategy *s = make(&c, 2, 3);
        float d[2] = {2.0f, -4.0f}, junk[2] = {1000.0f, 1000.0f}, g[2] = {0, 0};
        one_round(s, d, 1, 2, g);
        CHECK(g[0] == 1.0f && g[1] == -2.0f);
        CHECK_OK(ef_strategy_add(s, junk, 5.0)); // dropped by begin
        ef_strategy_begin(s);
        CHECK(ef_strategy_count(s) == 0);
        CHECK_OK(ef_strategy_add(s, d, 1.0));
        CHECK_OK(ef_strategy_apply(s, g)); // v = 0.5 d + d = 1.5 d
        CHECK(g[0] == 1.0f + 0.5f * 3.0f && g[1] == -2.0f - 0.5f * 6.0f);
        ef_strategy_free(s);
    }
    // FedAdam / FedYogi / FedAdagrad over 3 rounds with begin in between,
    // against the formulas in double (state starts at 0).
    for (int k = EF_STRAT_FEDADAM; k <= EF_STRAT_FEDADAGRAD; k++) {
        enum { P = 5 };
        ef_strategy_config c = ef_strategy_defaults((ef_strategy_kind)k);
        c.server_lr = 0.1f;
        ef_strategy *s = make(&c, P, 3);
        float g[P] = {0.5f, -1, 2, 0, 3};
        double rg[P], m[P] = {0}, v[P] = {0};
        for (int j = 0; j < P; j++) rg[j] = g[j];
        double b1 = c.beta1, b2 = c.beta2, tau = c.tau, eta = c.server_lr;
        for (int r = 0; r < 3; r++) {
            float d1[P], d2[P];
            for (int j = 0; j < P; j++) {
                d1[j] = (float)(0.3 * sin(1.1 * j + r) * (j == 3 ? 0.0 : 1.0));
                d2[j] = (float)(0.2 * cos(0.7 * j - r) * (j == 3 ? 0.0 : 1.0));
            }
            ef_strategy_begin(s);
            CHECK_OK(ef_strategy_add(s, d1, 2.0));
            CHECK_OK(ef_strategy_add(s, d2, 6.0));
            CHECK_OK(ef_strategy_apply(s, g));
            for (int j = 0; j < P; j++) {
                double a = (2.0 * d1[j] + 6.0 * d2[j]) / 8.0, a2 = a * a;
                if (k == EF_STRAT_FEDADAGRAD) {
                    m[j] = a;
                    v[j] += a2;
                } else {
                    m[j] = b1 * m[j] + (1 - b1) * a;
                    if (k == EF_STRAT_FEDADAM) v[j] = b2 * v[j] + (1 - b2) * a2;
                    else v[j] -= (1 - b2) * a2 * (v[j] > a2 ? 1.0 : v[j] < a2 ? -1.0 : 0.0);
                }
                rg[j] = (float)(rg[j] + eta * m[j] / (sqrt(v[j]) + tau));
            }
            check_close(ef_strategy_name((ef_strategy_kind)k), g, rg, P, TOL);
        }
        CHECK(g[3] == 0.0f); // a zero delta never moves a parameter
        ef_strategy_free(s);
    }
}

// Robust strategies ignore the weights: bit-identical results.
static void test_unweighted(void) {
    enum { P = 300, N = 9 };
    static float rows[N * P];
    for (size_t i = 0; i < N * P; i++) rows[i] = nrand(7, i) * (i % P < 10 ? 100.0f : 1.0f);
    for (size_t k = 6; k < N_ALL; k++) {
        ef_strategy *a = make_kind(ALL[k], P, N), *b = make_kind(ALL[k], P, N);
        float ga[P] = {0}, gb[P] = {0};
        for (int i = 0; i < N; i++) {
            CHECK_OK(ef_strategy_add(a, rows + i * P, 1.0));
            CHECK_OK(ef_strategy_add(b, rows + i * P, 1.0 + 1000.0 * i));
        }
        CHECK_OK(ef_strategy_apply(a, ga));
        CHECK_OK(ef_strategy_apply(b, gb));
        CHECK_MSG(memcmp(ga, gb, sizeof ga) == 0, "%s depends on weights",
                  ef_strategy_name(ALL[k]));
        ef_strategy_free(a);
        ef_strategy_free(b);
    }
}

static void test_krum(void) {
    enum { P = 50, N = 7 };
    float rows[N * P], g[P];
    // six honest updates near 1, one far outlier (index 3)
    for (int i = 0; i < N; i++)
        for (int j = 0; j < P; j++)
            rows[i * P + j] = i == 3 ? 1000.0f : 1.0f + 0.01f * urand((uint64_t)i, (uint64_t)j);
    ef_strategy *s = make_kind(EF_STRAT_KRUM, P, N);
    memset(g, 0, sizeof g);
    one_round(s, rows, N, P, g);
    int match = -1;
    for (int i = 0; i < N; i++)
        if (memcmp(g, rows + i * P, sizeof g) == 0) match = i;
    CHECK_MSG(match >= 0 && match != 3, "krum picked update %d", match);
    ef_strategy_free(s);
    // Multi-Krum, m = n - f = 6: the mean of the honest ones.
    s = make_kind(EF_STRAT_MULTIKRUM, P, N);
    memset(g, 0, sizeof g);
    one_round(s, rows, N, P, g);
    double want[P];
    for (int j = 0; j < P; j++) {
        double t = 0;
        for (int i = 0; i < N; i++)
            if (i != 3) t += rows[i * P + j];
        want[j] = t / 6.0;
    }
    check_close("multikrum honest mean", g, want, P, 1e-7);
    ef_strategy_free(s);

    // Ties: 1-D points {0, 1, 10, 11, 100}, f = 1 (2 neighbours): 1 and 10
    // both score 82; the lower index wins.
    float pts_a[5] = {0, 1, 10, 11, 100}, pts_b[5] = {0, 10, 1, 11, 100}, x;
    s = make_kind(EF_STRAT_KRUM, 1, 5);
    x = 0.0f;
    one_round(s, pts_a, 5, 1, &x);
    CHECK(x == 1.0f);
    x = 0.0f;
    one_round(s, pts_b, 5, 1, &x);
    CHECK(x == 10.0f);
    ef_strategy_free(s);
    // Identical updates: any pick is the same value.
    float same[5] = {2, 2, 2, 2, 2};
    s = make_kind(EF_STRAT_MULTIKRUM, 1, 5);
    x = 1.0f;
    one_round(s, same, 5, 1, &x);
    CHECK(x == 3.0f);
    ef_strategy_free(s);
}

// 20% of the clients send -10x their (honest) update.
static void test_byzantine(void) {
    enum { P = 2000, N = 20, BAD = 4 };
    static float rows[N * P];
    float truth[P];
    for (int j = 0; j < P; j++) truth[j] = nrand(100, (uint64_t)j);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < P; j++) {
            float h = truth[j] + 0.1f * nrand(200 + (uint64_t)i, (uint64_t)j);
            rows[i * P + j] = i % 5 == 2 ? -10.0f * h : h; // clients 2, 7, 12, 17
        }
    double tn = 0;
    for (int j = 0; j < P; j++) tn += (double)truth[j] * truth[j];
    tn = sqrt(tn);
    struct {
        ef_strategy_kind kind;
        float trim;
        int f;
        double lo, hi; // relative error bounds ||agg - truth|| / ||truth||
    } cases[] = {
        {EF_STRAT_FEDAVG, 0, 0, 1.5, 1e9},      // dragged to about -1.2 truth
        {EF_STRAT_FEDMEDIAN, 0, 0, 0, 0.15},
        {EF_STRAT_FEDTRIMMEDAVG, 0.2f, 0, 0, 0.15},
        {EF_STRAT_KRUM, 0, BAD, 0, 0.15},
        {EF_STRAT_MULTIKRUM, 0, BAD, 0, 0.05},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        ef_strategy_config c = ef_strategy_defaults(cases[k].kind);
        if (cases[k].trim > 0) c.trim_beta = cases[k].trim;
        c.krum_f = cases[k].f;
        ef_strategy *s = make(&c, P, N);
        float g[P] = {0};
        one_round(s, rows, N, P, g);
        double e = 0;
        for (int j = 0; j < P; j++) e += ((double)g[j] - truth[j]) * ((double)g[j] - truth[j]);
        e = sqrt(e) / tn;
        CHECK_MSG(e >= cases[k].lo && e <= cases[k].hi, "%s: relative error %.3f",
                  ef_strategy_name(cases[k].kind), e);
        if (getenv("EDGEFL_TEST_VERBOSE"))
            printf("    byzantine %s: relative error %.4f\n", ef_strategy_name(cases[k].kind), e);
        ef_strategy_free(s);
    }
}

// Median and trimmed mean against the qsort-based naive kernels, n = 1..70
// (both the insertion-sort and the introselect paths, across block edges).
static void test_selection(void) {
    enum { P = 300, NMAX = 70 };
    float *rows = malloc((size_t)NMAX * P * sizeof *rows);
    float col[NMAX], g[P];
    double want[P];
    ef_strategy_config cm = ef_strategy_defaults(EF_STRAT_FEDMEDIAN);
    ef_strategy_config ct = ef_strategy_defaults(EF_STRAT_FEDTRIMMEDAVG);
    ct.trim_beta = 0.2f;
    ef_strategy *med = make(&cm, P, NMAX), *trim = make(&ct, P, NMAX);
    int step = quick ? 3 : 1;
    for (int pattern = 0; pattern < 5; pattern++) {
        for (int n = 1; n <= NMAX; n += step) {
            for (int i = 0; i < n; i++)
                for (int j = 0; j < P; j++) {
                    float x = 0;
                    switch (pattern) {
                    case 0: x = nrand((uint64_t)(n * 100 + i), (uint64_t)j); break;
                    case 1: x = (float)(splitmix((uint64_t)(n * 1000 + i * P + j)) % 4); break;
                    case 2: x = (float)i + 0.001f * (float)j; break;       // ascending
                    case 3: x = (float)(n - i) - 0.5f * (float)(j % 3); break; // descending
                    default: x = 0.75f; break;                            // constant
                    }
                    rows[i * P + j] = x;
                }
            for (int k = 0; k < 2; k++) {
                ef_strategy *s = k ? trim : med;
                size_t cut = (size_t)floor(0.2 * n + 1e-9);
                for (int j = 0; j < P; j++) {
                    for (int i = 0; i < n; i++) col[i] = rows[i * P + j];
                    // the global is float: the median rounds once, exactly like this
                    want[j] = k ? naive_trimmed(col, (size_t)n, cut)
                                : (float)naive_median(col, (size_t)n);
                }
                memset(g, 0, sizeof g);
                one_round(s, rows, (size_t)n, P, g);
                char what[64];
                snprintf(what, sizeof what, "%s n=%d pattern %d", k ? "trimmed" : "median", n,
                         pattern);
                check_close(what, g, want, P, k ? 1e-7 : 1e-300); // median: exact
            }
        }
    }
    ef_strategy_free(med);
    ef_strategy_free(trim);
    free(rows);
}

// Fills a[0..n) with one of several patterns, some hostile to quickselect.
static void fill_pattern(float *a, size_t n, int pattern, uint64_t seed) {
    for (size_t i = 0; i < n; i++) {
        switch (pattern) {
        case 0: a[i] = nrand(seed, i); break;
        case 1: a[i] = (float)(splitmix(seed * 7919 + i) % 4); break;        // few values
        case 2: a[i] = (float)i; break;                                       // ascending
        case 3: a[i] = (float)(n - i); break;                                 // descending
        case 4: a[i] = -2.5f; break;                                          // constant
        case 5: a[i] = (float)(i < n / 2 ? i : n - i); break;                 // organ pipe
        case 6: a[i] = (float)(i % 7) + (i & 1 ? 1e-3f : 0.0f); break;        // sawtooth
        default: a[i] = i & 1 ? 1e30f : -1e-30f * (float)i; break;            // wide range
        }
    }
}
#define N_PATTERNS 8

static void test_kernels(void) {
    // ef__sort_rows: every lane sorted, and the same values as its input.
    static const size_t ns[] = {1, 2, 3, 5, 8, 13, 20, 31, 32, 33, 64, 100, 129, 257, 512};
    static const size_t Bs[] = {1, 3, 4, 7, 8, 13, 16};
    for (size_t a = 0; a < sizeof ns / sizeof *ns; a++)
        for (size_t b = 0; b < sizeof Bs / sizeof *Bs; b++) {
            size_t n = ns[a], B = Bs[b];
            if (quick && n * B > 2000) continue;
            float *r = malloc(n * B * sizeof *r), *col = malloc(n * sizeof *col);
            int pattern = (int)((a + b) % N_PATTERNS), bad = 0;
            for (size_t x = 0; x < B; x++) { // lane x gets its own column
                fill_pattern(col, n, (pattern + (int)x) % N_PATTERNS, 31 * a + x);
                for (size_t i = 0; i < n; i++) r[i * B + x] = col[i];
            }
            ef__sort_rows(r, n, B);
            for (size_t x = 0; x < B; x++) {
                fill_pattern(col, n, (pattern + (int)x) % N_PATTERNS, 31 * a + x);
                qsort(col, n, sizeof *col, cmp_float);
                for (size_t i = 0; i < n; i++) bad += r[i * B + x] != col[i];
            }
            CHECK_MSG(bad == 0, "sort_rows n=%zu B=%zu: %d values out of place", n, B, bad);
            free(r);
            free(col);
        }

    // Selection, median and trimmed mean against sorting, budgets that
    // force the heapsort fallback included.
    static const size_t sn[] = {1, 2, 3, 4, 16, 17, 18, 31, 64, 100, 257, 1000, 2049};
    size_t nmax = 2049;
    float *a = malloc(nmax * sizeof *a), *sorted = malloc(nmax * sizeof *sorted);
    for (size_t t = 0; t < sizeof sn / sizeof *sn; t++) {
        size_t n = sn[t];
        for (int pattern = 0; pattern < N_PATTERNS; pattern++) {
            fill_pattern(sorted, n, pattern, 1000 + t);
            qsort(sorted, n, sizeof *sorted, cmp_float);
            static const int budgets[] = {-1, 0, 1, 3};
            size_t ks[4] = {0, n / 2, n - 1, (size_t)splitmix(t * 8 + (size_t)pattern) % n};
            for (int bi = 0; bi < 4; bi++)
                for (int ki = 0; ki < 4; ki++) {
                    size_t k = ks[ki];
                    fill_pattern(a, n, pattern, 1000 + t);
                    ef__select_kth(a, n, k, budgets[bi]);
                    int ok = a[k] == sorted[k];
                    for (size_t i = 0; i < n; i++)
                        if (i < k ? a[i] > a[k] : a[i] < a[k]) ok = 0;
                    qsort(a, n, sizeof *a, cmp_float); // still a permutation
                    ok = ok && memcmp(a, sorted, n * sizeof *a) == 0;
                    CHECK_MSG(ok, "select n=%zu pattern %d k=%zu budget %d", n, pattern, k,
                              budgets[bi]);
                }
            fill_pattern(a, n, pattern, 1000 + t);
            double want = naive_median(sorted, n); // sorted stays sorted
            CHECK_MSG(ef__median_select(a, n) == want, "median n=%zu pattern %d", n, pattern);
            size_t cuts[3] = {0, n / 4, (n - 1) / 2};
            for (int ci = 0; ci < 3; ci++) {
                fill_pattern(a, n, pattern, 1000 + t);
                double got = ef__trimmed_select(a, n, cuts[ci]);
                want = naive_trimmed(sorted, n, cuts[ci]);
                CHECK_MSG(fabs(got - want) <= 1e-12 * fmax(1.0, fabs(want)) ||
                              (pattern == 7 && fabs(got - want) <= 1e-12 * 1e30),
                          "trimmed n=%zu pattern %d cut %zu: %.17g vs %.17g", n, pattern,
                          cuts[ci], got, want);
            }
        }
    }
    free(a);
    free(sorted);

    // Through the public API above the network's limit (the selection path).
    const size_t P = 37;
    size_t big_n[] = {EF__STRATEGY_NET_MAX + 1, 777};
    for (int t = 0; t < 2; t++) {
        size_t n = big_n[t];
        float *rows = malloc(n * P * sizeof *rows), *col = malloc(n * sizeof *col);
        float g[37];
        double want[37];
        for (size_t i = 0; i < n * P; i++) rows[i] = nrand(77 + (uint64_t)t, i);
        for (int k = 0; k < 2; k++) {
            ef_strategy_config c = ef_strategy_defaults(k ? EF_STRAT_FEDTRIMMEDAVG : EF_STRAT_FEDMEDIAN);
            ef_strategy *s = make(&c, P, n);
            size_t cut = (size_t)floor(0.1 * (double)n + 1e-9);
            for (size_t j = 0; j < P; j++) {
                for (size_t i = 0; i < n; i++) col[i] = rows[i * P + j];
                want[j] = k ? naive_trimmed(col, n, cut) : (float)naive_median(col, n);
            }
            memset(g, 0, sizeof g);
            one_round(s, rows, n, P, g);
            check_close(k ? "trimmed above NET_MAX" : "median above NET_MAX", g, want, P,
                        k ? 1e-7 : 1e-300);
            ef_strategy_free(s);
        }
        free(rows);
        free(col);
    }
}

static void test_errors(void) {
    enum { P = 64 };
    float d[P], bad[P], g[P], g0[P];
    for (int j = 0; j < P; j++) {
        d[j] = urand(11, (uint64_t)j);
        g0[j] = urand(12, (uint64_t)j);
    }
    for (size_t k = 0; k < N_ALL; k++) {
        const char *name = ef_strategy_name(ALL[k]);
        ef_strategy *s = make_kind(ALL[k], P, 6), *ref = make_kind(ALL[k], P, 6);
        memcpy(g, g0, sizeof g);
        // No updates: refused, global unchanged.
        CHECK(ef_strategy_apply(s, g) == EF_ERR_STATE);
        CHECK(memcmp(g, g0, sizeof g) == 0);
        // Non-finite values anywhere (last element too) and bad weights: nothing added.
        CHECK_OK(ef_strategy_add(s, d, 2.0));
        static const float nonfinite[3] = {NAN, INFINITY, -INFINITY};
        for (int t = 0; t < 3; t++)
            for (int pos = 0; pos < P; pos += P - 1) {
                for (int j = 0; j < P; j++) bad[j] = d[j] * 5.0f;
                bad[pos] = nonfinite[t];
                ef_clear_error();
                CHECK_MSG(ef_strategy_add(s, bad, 1.0) == EF_ERR_INVALID, "%s", name);
                CHECK(ef_last_error()[0] != '\0');
            }
        static const double bad_w[] = {0.0, -0.0, -1.0, NAN, INFINITY, -INFINITY};
        for (size_t t = 0; t < sizeof bad_w / sizeof *bad_w; t++)
            CHECK(ef_strategy_add(s, d, bad_w[t]) == EF_ERR_INVALID);
        CHECK(ef_strategy_add(s, NULL, 1.0) == EF_ERR_INVALID);
        CHECK(ef_strategy_count(s) == 1);
        // Fill up to max_updates = 6; the 7th is refused.
        // ref gets only the accepted updates.
        CHECK_OK(ef_strategy_add(ref, d, 2.0));
        for (int i = 1; i < 6; i++) {
            for (int j = 0; j < P; j++) bad[j] = d[j] * (float)(i + 1) * ((i & 1) ? -1.0f : 1.0f);
            CHECK_OK(ef_strategy_add(s, bad, 2.0 + i));
            CHECK_OK(ef_strategy_add(ref, bad, 2.0 + i));
        }
        CHECK(ef_strategy_count(s) == 6);
        CHECK(ef_strategy_add(s, d, 1.0) == EF_ERR_RANGE);
        CHECK(ef_strategy_count(s) == 6);
        // The rejected updates left no trace: same result as ref.
        float gr[P];
        memcpy(gr, g0, sizeof gr);
        CHECK_OK(ef_strategy_apply(s, g));
        CHECK_OK(ef_strategy_apply(ref, gr));
        CHECK_MSG(memcmp(g, gr, sizeof g) == 0, "%s: rejected updates changed the result", name);
        CHECK(memcmp(g, g0, sizeof g) != 0);
        // apply ends the round: count 0, a second apply is refused.
        CHECK(ef_strategy_count(s) == 0);
        memcpy(gr, g, sizeof gr);
        CHECK(ef_strategy_apply(s, g) == EF_ERR_STATE);
        CHECK(memcmp(g, gr, sizeof g) == 0);
        CHECK(ef_strategy_apply(s, NULL) == EF_ERR_INVALID);
        ef_strategy_free(s);
        ef_strategy_free(ref);
    }
    // The round's total weight must stay finite.
    ef_strategy *s = make_kind(EF_STRAT_FEDAVG, P, 4);
    CHECK_OK(ef_strategy_add(s, d, DBL_MAX));
    CHECK(ef_strategy_add(s, d, DBL_MAX) == EF_ERR_RANGE);
    CHECK(ef_strategy_count(s) == 1);
    ef_strategy_free(s);

    // Krum: n <= 2f + 2 refused, global unchanged; one more update and it works.
    s = make_kind(EF_STRAT_KRUM, P, 8);
    memcpy(g, g0, sizeof g);
    for (int i = 0; i < 4; i++) {
        CHECK_OK(ef_strategy_add(s, d, 1.0));
        CHECK(ef_strategy_apply(s, g) == EF_ERR_STATE);
        CHECK(memcmp(g, g0, sizeof g) == 0);
    }
    CHECK(ef_strategy_count(s) == 4);
    CHECK_OK(ef_strategy_add(s, d, 1.0));
    CHECK_OK(ef_strategy_apply(s, g));
    ef_strategy_free(s);
    // Multi-Krum: m > n refused.
    ef_strategy_config c = ef_strategy_defaults(EF_STRAT_MULTIKRUM);
    c.multikrum_m = 6;
    s = make(&c, P, 8);
    memcpy(g, g0, sizeof g);
    for (int i = 0; i < 5; i++) CHECK_OK(ef_strategy_add(s, d, 1.0));
    CHECK(ef_strategy_apply(s, g) == EF_ERR_STATE);
    CHECK(memcmp(g, g0, sizeof g) == 0);
    CHECK_OK(ef_strategy_add(s, d, 1.0));
    CHECK_OK(ef_strategy_apply(s, g));
    ef_strategy_free(s);
    // Trimmed mean that would drop everything: 0.49999997 x 2 cuts 1 at each end.
    c = ef_strategy_defaults(EF_STRAT_FEDTRIMMEDAVG);
    c.trim_beta = 0.49999997f;
    s = make(&c, P, 3);
    memcpy(g, g0, sizeof g);
    CHECK_OK(ef_strategy_add(s, d, 1.0));
    CHECK_OK(ef_strategy_add(s, d, 1.0));
    CHECK(ef_strategy_apply(s, g) == EF_ERR_STATE);
    CHECK(memcmp(g, g0, sizeof g) == 0);
    CHECK_OK(ef_strategy_add(s, bad, 1.0)); // n = 3 cuts 1 each: the median
    CHECK_OK(ef_strategy_apply(s, g));
    ef_strategy_free(s);

    // Float overflow: refused with everything unchanged, then a sane round works.
    float big[2] = {3e38f, 1.0f}, gbig[2] = {3e38f, 0.0f}, gsave[2];
    for (int k = 0; k < 3; k++) {
        ef_strategy_kind kind = k == 0 ? EF_STRAT_FEDAVG : k == 1 ? EF_STRAT_FEDMEDIAN : EF_STRAT_FEDAVGM;
        s = make_kind(kind, 2, 3);
        memcpy(gsave, gbig, sizeof gsave);
        CHECK_OK(ef_strategy_add(s, big, 1.0));
        CHECK(ef_strategy_apply(s, gbig) == EF_ERR_RANGE);
        CHECK(memcmp(gsave, gbig, sizeof gsave) == 0 && ef_strategy_count(s) == 1);
        ef_strategy_begin(s);
        float small[2] = {-1e38f, 1.0f};
        CHECK_OK(ef_strategy_add(s, small, 1.0));
        CHECK_OK(ef_strategy_apply(s, gbig));
        CHECK_NEAR(gbig[0] / 1e38, 2.0, 1e-6); // FedAvgM: v was still 0
        CHECK(gbig[1] == 1.0f);
        memcpy(gbig, gsave, sizeof gbig);
        ef_strategy_free(s);
    }
    // Adam's v = (1 - beta2) delta^2 would overflow float: refused, state untouched.
    s = make_kind(EF_STRAT_FEDADAM, 2, 2);
    float huge[2] = {1e30f, 1.0f}, ga[2] = {0, 0};
    CHECK_OK(ef_strategy_add(s, huge, 1.0));
    CHECK(ef_strategy_apply(s, ga) == EF_ERR_RANGE);
    CHECK(ga[0] == 0.0f && ga[1] == 0.0f);
    ef_strategy_begin(s);
    float unit[2] = {1.0f, 1.0f};
    CHECK_OK(ef_strategy_add(s, unit, 1.0));
    CHECK_OK(ef_strategy_apply(s, ga)); // first step from zero state: m = 0.1, v = 0.01
    CHECK_NEAR(ga[0], 0.01 * 0.1 / (0.1 + 1e-3), 1e-8);
    CHECK(ga[0] == ga[1]);
    ef_strategy_free(s);
}

/* ---- out of memory --------------------------------------------------------------- */

static void arm(long k, int persistent) {
    atomic_store(&alloc_calls, 0);
    atomic_store(&fail_after, persistent);
    atomic_store(&fail_at, k);
}
static void disarm(void) { atomic_store(&fail_at, 0); }

static void test_oom(void) {
    for (size_t kk = 0; kk < N_ALL; kk++) {
        ef_strategy_config c = ef_strategy_defaults(ALL[kk]);
        for (int persistent = 0; persistent < 2; persistent++) {
            long k;
            int injected = 0;
            for (k = 1; k < 1000; k++) {
                long live0 = atomic_load(&live_blocks);
                ef_clear_error();
                ef_strategy *s = (ef_strategy *)&s;
                arm(k, persistent);
                ef_status st = ef_strategy_new(&s, &c, 100, 8);
                long calls = atomic_load(&alloc_calls);
                disarm();
                if (st == EF_OK) {
                    CHECK(calls < k);
                    ef_strategy_free(s);
                    CHECK(atomic_load(&live_blocks) == live0);
                    break;
                }
                injected++;
                CHECK_MSG(st == EF_ERR_NOMEM && s == NULL, "%s: allocation %ld: %s",
                          ef_strategy_name(ALL[kk]), k, ef_strerror(st));
                CHECK(ef_last_error()[0] != '\0');
                CHECK_MSG(atomic_load(&live_blocks) == live0, "%s: leak when allocation %ld failed",
                          ef_strategy_name(ALL[kk]), k);
            }
            CHECK(k < 1000 && injected == k - 1 && injected >= 2);
        }
    }
    // add and apply never allocate.
    for (size_t kk = 0; kk < N_ALL; kk++) {
        ef_strategy *s = make_kind(ALL[kk], 16, 6);
        float d[16], g[16] = {0};
        arm(1, 1);
        for (int i = 0; i < 6; i++) {
            for (int j = 0; j < 16; j++) d[j] = urand((uint64_t)i, (uint64_t)j);
            CHECK_OK(ef_strategy_add(s, d, 1.0));
        }
        CHECK_OK(ef_strategy_apply(s, g));
        CHECK(atomic_load(&alloc_calls) == 0);
        disarm();
        ef_strategy_free(s);
    }
}

/* ---- the numpy reference ------------------------------------------------------------ */

static int parse_doubles(char *s, double *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char *end;
        out[i] = strtod(s, &end);
        if (end == s) return 0;
        s = end;
    }
    return 1;
}

// Returns 1 when the comparison ran, 0 when skipped.
static int test_reference(void) {
    const char *py = getenv("EDGEFL_PYTHON");
    if (!py || !*py) py = "/usr/bin/python3";
    if (access(py, X_OK) != 0) {
        printf("  numpy comparison skipped: %s not found\n", py);
        return 0;
    }
    char dir[] = "/tmp/edgefl_strategy_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK_MSG(0, "mkdtemp failed");
        return 0;
    }
    char bin[256], cmd[1024];
    snprintf(bin, sizeof bin, "%s/inputs.f32", dir);
    snprintf(cmd, sizeof cmd, "'%s' '%s/tests/fl/strategy_ref.py' '%s'", py, EF_SOURCE_DIR, bin);
    FILE *f = popen(cmd, "r");
    if (!f) {
        printf("  numpy comparison skipped: cannot run %s\n", py);
        tu_rmtree(dir);
        return 0;
    }
    char *line = NULL;
    size_t cap = 0;
    FILE *in = NULL;
    int cases = 0, rounds = 0, bad_format = 0;
    char name[64] = "";
    ef_strategy *s = NULL;
    size_t P = 0, n = 0;
    float *g = NULL, *d = NULL;
    double *w = NULL, *want = NULL;
    while (getline(&line, &cap, f) > 0) {
        if (!in && !(in = fopen(bin, "rb"))) {
            bad_format++;
            break;
        }
        if (strncmp(line, "case ", 5) == 0) {
            char kind[32], h[6][48];
            size_t maxu;
            int kf, km;
            if (sscanf(line, "case %63s %31s %zu %zu %47s %47s %47s %47s %47s %47s %d %d", name,
                       kind, &P, &maxu, h[0], h[1], h[2], h[3], h[4], h[5], &kf, &km) != 12 ||
                P == 0 || P > 100000 || maxu == 0 || maxu > 5000) {
                bad_format++;
                break;
            }
            ef_strategy_config c = ef_strategy_defaults(EF_STRAT_FEDAVG);
            CHECK_OK(ef_strategy_parse(kind, &c.kind));
            c.server_lr = strtof(h[0], NULL);
            c.server_momentum = strtof(h[1], NULL);
            c.beta1 = strtof(h[2], NULL);
            c.beta2 = strtof(h[3], NULL);
            c.tau = strtof(h[4], NULL);
            c.trim_beta = strtof(h[5], NULL);
            c.krum_f = kf;
            c.multikrum_m = km;
            ef_strategy_free(s);
            free(g), free(d), free(w), free(want);
            s = make(&c, P, maxu);
            g = malloc(P * sizeof *g);
            d = malloc(P * sizeof *d);
            w = malloc(maxu * sizeof *w);
            want = malloc(P * sizeof *want);
            if (!s || fread(g, sizeof *g, P, in) != P) bad_format++;
            n = maxu;
        } else if (strncmp(line, "round ", 6) == 0 && s) {
            char *p = line + 6;
            strtol(p, &p, 10);
            size_t cnt = (size_t)strtoul(p, &p, 10);
            if (cnt == 0 || cnt > n || !parse_doubles(p, w, cnt)) {
                bad_format++;
                break;
            }
            ef_strategy_begin(s);
            for (size_t i = 0; i < cnt; i++) {
                if (fread(d, sizeof *d, P, in) != P) bad_format++;
                CHECK_OK(ef_strategy_add(s, d, w[i]));
            }
            CHECK_OK(ef_strategy_apply(s, g));
        } else if (strncmp(line, "expect ", 7) == 0 && s) {
            char *p = line + 7;
            int r = (int)strtol(p, &p, 10);
            if (!parse_doubles(p, want, P)) {
                bad_format++;
                break;
            }
            char what[96];
            snprintf(what, sizeof what, "%s round %d", name, r);
            double worst = 0;
            for (size_t j = 0; j < P; j++) {
                double q = fabs((double)g[j] - want[j]) / (TOL * fmax(1.0, fabs(want[j])));
                if (!(q <= worst)) worst = isnan(q) ? INFINITY : q;
            }
            if (worst > worst_ratio) worst_ratio = worst;
            check_close(what, g, want, P, TOL);
            rounds++;
        } else if (strncmp(line, "end", 3) == 0 && s) {
            cases++;
            ef_strategy_free(s);
            s = NULL;
        }
    }
    ef_strategy_free(s);
    free(g), free(d), free(w), free(want);
    free(line);
    int extra = in ? fgetc(in) : EOF; // every input consumed
    if (in) fclose(in);
    int rc = pclose(f);
    int code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    tu_rmtree(dir);
    if (code == 77 || (code == 127 && cases == 0)) {
        printf("  numpy comparison skipped: %s %s\n", py,
               code == 77 ? "cannot import numpy" : "cannot run the script");
        return 0;
    }
    CHECK_MSG(code == 0 && bad_format == 0 && extra == EOF,
              "strategy_ref.py exit code %d, %d malformed records", code, bad_format);
    CHECK_MSG(cases == 26 && rounds == 3 * 26, "%d cases, %d rounds compared", cases, rounds);
    printf("  numpy comparison: %d cases, %d rounds, worst error / tolerance %.3g\n", cases, rounds,
           worst_ratio);
    return 1;
}

/* ---- speed: median of 20 updates of 1.66M parameters ---------------------------------- */

static void test_big(void) {
    const size_t P = quick ? 166000 : 1660000, N = 20;
    float *d = malloc(P * sizeof *d), *g = calloc(P, sizeof *g);
    ef_strategy_kind kinds[2] = {EF_STRAT_FEDMEDIAN, EF_STRAT_FEDTRIMMEDAVG};
    for (int k = 0; k < 2; k++) {
        ef_strategy *s = make_kind(kinds[k], P, N);
        if (!s || !d || !g) break;
        double t_add = 0, t0;
        for (size_t i = 0; i < N; i++) {
            for (size_t j = 0; j < P; j++) d[j] = urand(1000 + i, j);
            t0 = ef_now();
            CHECK_OK(ef_strategy_add(s, d, 1.0));
            t_add += ef_now() - t0;
        }
        memset(g, 0, P * sizeof *g);
        t0 = ef_now();
        CHECK_OK(ef_strategy_apply(s, g));
        double t_apply = ef_now() - t0;
        printf("  %s of %zu x %zu params: add %.3f s, apply %.3f s\n", ef_strategy_name(kinds[k]), N,
               P, t_add, t_apply);
        if (!quick) CHECK_MSG(t_apply < 3.0, "apply took %.2f s", t_apply);
        // Spot-check coordinates against the naive kernels.
        float col[20];
        size_t bad = 0;
        for (size_t j = 0; j < P; j += 997) {
            for (size_t i = 0; i < N; i++) col[i] = urand(1000 + i, j);
            double want = k ? naive_trimmed(col, N, 2) : naive_median(col, N);
            if (fabs((double)g[j] - want) > 1e-7) bad++;
        }
        CHECK_MSG(bad == 0, "%zu spot checks differ", bad);
        ef_strategy_free(s);
    }
    free(d);
    free(g);
}

int main(void) {
    const char *q = getenv("EDGEFL_TEST_QUICK");
    quick = q && *q && strcmp(q, "0") != 0;
    ef_set_allocator(&counting);
    test_names();
    test_validation();
    test_staleness();
    test_fedavg_weighting();
    test_by_hand();
    test_unweighted();
    test_krum();
    test_byzantine();
    test_selection();
    test_kernels();
    test_errors();
    test_oom();
    test_reference();
    test_big();
    CHECK_MSG(atomic_load(&live_blocks) == 0, "%ld blocks leaked", atomic_load(&live_blocks));
    ef_set_allocator(NULL);
    return tu_finish("fl/test_strategy");
}
