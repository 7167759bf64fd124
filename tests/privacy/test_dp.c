/*
 * Differential-privacy mechanisms (src/privacy/dp.c): clipping (exact bound,
 * untouched below it, overflow-free norm, NaN/Inf and bad arguments), the
 * Gaussian mechanism (mean, variance, Kolmogorov-Smirnov), the exact
 * Bernoulli(exp(-gamma)), discrete Laplace and discrete Gaussian samplers
 * (frequencies, symmetry, variance against the exact pmf's, chi-square), the
 * Poisson sampler on both of its methods (mean, variance, chi-square) and
 * Skellam (variance 2 mu), the modular vector forms (wrap-around near 0 and
 * 2^bits, determinism), calibration (arithmetic and an end-to-end sum of
 * n clients' noise), the rounding norm bounds (against real randomized
 * rounding), the RDP bounds (Skellam -> Gaussian as the scale grows, DDG ->
 * Gaussian as sigma grows) and adaptive clipping (exact step, convergence to
 * the target quantile, the noise-multiplier split).
 *
 * Every statistical check uses a fixed DRBG seed, so a run is reproducible;
 * each threshold is stated with the probability that a correct sampler fails
 * it on a fresh seed: "5 SE" (five standard errors, two-sided normal
 * approximation) fails with probability 5.7e-7; the chi-square and
 * Kolmogorov-Smirnov thresholds are upper 1e-4 quantiles.
 *
 * Also prints the time to noise a 1.66M-coordinate update (the FedAvg CNN)
 * with each discrete mechanism.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "core/core_internal.h"
#include "privacy/dp_internal.h"
#include "test_util.h"

#define Z5 5.0              /* "5 SE": two-sided false-failure 5.7e-7 */
#define Z_1E4 3.719016485   /* upper 1e-4 quantile of N(0, 1) */
#define CNN_PARAMS 1663370u /* the FedAvg CNN of McMahan et al. 2017 */

static int quick; /* EDGEFL_TEST_QUICK: smaller samples (sanitizer builds) */

static void seed(ef__drbg *g, uint64_t s, const char *label) {
    uint8_t key[32];
    ef__drbg_key_from_seed(key, s, label);
    ef__drbg_seed(g, key, 0);
    sodium_memzero(key, sizeof key);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

/* Approximate upper 1e-4 quantile of chi-square with k degrees of freedom
 * (Wilson-Hilferty 1931 cube-root normal approximation). It errs on the safe
 * side: the exact tail probability above it is 6.5e-5 at k = 2, 7.4e-5 at
 * k = 4, 9.2e-5 at k = 24, 9.96e-5 at k = 637. */
static double chi2_crit(int k) {
    double h = 2.0 / (9.0 * k), c = 1.0 - h + Z_1E4 * sqrt(h);
    return k * c * c * c;
}

/* A value modulo 2^bits lifted to the centered range [-2^(bits-1), 2^(bits-1)). */
static int64_t lift(uint32_t u, int bits) {
    uint64_t m = (uint64_t)1 << bits;
    return u >= m / 2 ? (int64_t)u - (int64_t)m : (int64_t)u;
}

static void moments(const int64_t *x, size_t n, double *mean, double *var) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)x[i];
    double m = s / (double)n, ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += ((double)x[i] - m) * ((double)x[i] - m);
    *mean = m;
    *var = ss / (double)(n - 1);
}

typedef double (*pmf_fn)(int64_t k, const void *ctx);

/* Pearson chi-square of samples x[0..n) against pmf over [lo, hi] (samples
 * outside are counted in the edge bins; the range must hold all but a
 * negligible mass), merging neighbouring bins until each expects >= 5.
 * Returns the statistic, sets *df. */
static double chi_square(const int64_t *x, size_t n, int64_t lo, int64_t hi, pmf_fn pmf,
                         const void *ctx, int *df) {
    size_t nb = (size_t)(hi - lo + 1);
    double *cnt = calloc(nb, sizeof *cnt), *ex = calloc(nb, sizeof *ex);
    if (!cnt || !ex) exit(1);
    for (size_t i = 0; i < n; i++) {
        int64_t k = x[i] < lo ? lo : x[i] > hi ? hi : x[i];
        cnt[k - lo] += 1.0;
    }
    for (size_t b = 0; b < nb; b++) ex[b] = (double)n * pmf(lo + (int64_t)b, ctx);
    /* groups of consecutive bins, closed once they expect >= 5; a short
     * remainder joins the last group */
    double *gc = calloc(nb, sizeof *gc), *ge = calloc(nb, sizeof *ge);
    if (!gc || !ge) exit(1);
    size_t ng = 0;
    double c = 0.0, e = 0.0;
    for (size_t b = 0; b < nb; b++) {
        c += cnt[b], e += ex[b];
        if (e >= 5.0) gc[ng] = c, ge[ng] = e, ng++, c = e = 0.0;
    }
    if (e > 0.0 || c > 0.0) {
        if (ng == 0) ng = 1;
        gc[ng - 1] += c, ge[ng - 1] += e;
    }
    double chi = 0.0;
    for (size_t j = 0; j < ng; j++) chi += (gc[j] - ge[j]) * (gc[j] - ge[j]) / ge[j];
    int bins = (int)ng;
    free(gc);
    free(ge);
    free(cnt);
    free(ex);
    *df = bins - 1;
    return chi;
}

#define CHECK_REJECT(expr, code)                                                       \
    do {                                                                               \
        ef_clear_error();                                                              \
        ef_status s_ = (expr);                                                         \
        CHECK_MSG(s_ == (code) && ef_last_error()[0] != '\0', "%s -> %s (%s)", #expr,  \
                  ef_strerror(s_), ef_last_error());                                   \
    } while (0)

/* ---- clipping ------------------------------------------------------------------ */

static double norm_ref(const float *v, size_t d) {
    long double s = 0.0L;
    for (size_t i = 0; i < d; i++) s += (long double)v[i] * v[i];
    return (double)sqrtl(s);
}

static void test_clip(void) {
    ef__drbg g;
    seed(&g, 1, "clip");
    enum { D = 1000 };
    float v[D], w[D], orig[D];
    for (int i = 0; i < D; i++) orig[i] = (float)(3.0 * ef__dp_normal(&g));
    double n0 = norm_ref(orig, D);

    /* above the bound: scaled down to it, direction kept */
    memcpy(v, orig, sizeof v);
    double c = n0 / 2.0;
    double ret = ef__dp_clip_l2(v, D, c);
    CHECK_NEAR(ret, n0, 1e-12 * n0);
    double n1 = norm_ref(v, D);
    CHECK_MSG(n1 <= c && n1 >= c * (1.0 - 0x1p-21), "norm after %.17g, clip %.17g", n1, c);
    double f = n1 / n0, worst = 0.0;
    for (int i = 0; i < D; i++)
        if (orig[i] != 0.0f) {
            double r = fabs(v[i] / (orig[i] * f) - 1.0);
            if (r > worst) worst = r;
        }
    CHECK_MSG(worst < 0x1p-23, "element ratio off by %g", worst);

    /* below and at the bound: untouched, bit for bit */
    memcpy(v, orig, sizeof v);
    ret = ef__dp_clip_l2(v, D, 2.0 * n0);
    CHECK_NEAR(ret, n0, 1e-12 * n0);
    CHECK(memcmp(v, orig, sizeof v) == 0);
    double at = ef__dp_l2_norm(orig, D);
    ret = ef__dp_clip_l2(v, D, at);
    CHECK(ret == at && memcmp(v, orig, sizeof v) == 0);

    /* elements near FLT_MAX: the float sum of squares would overflow */
    for (int i = 0; i < 64; i++) w[i] = (i & 1) ? -FLT_MAX : FLT_MAX;
    ret = ef__dp_clip_l2(w, 64, 1.0);
    CHECK_NEAR(ret / (8.0 * FLT_MAX), 1.0, 1e-15);
    n1 = norm_ref(w, 64);
    CHECK_MSG(n1 <= 1.0 && n1 >= 1.0 - 0x1p-21, "huge vector clipped to %.17g", n1);

    /* clip = 0 zeroes; d = 0 is fine */
    memcpy(v, orig, sizeof v);
    CHECK_NEAR(ef__dp_clip_l2(v, D, 0.0), n0, 1e-12 * n0);
    CHECK(norm_ref(v, D) == 0.0);
    CHECK(ef__dp_clip_l2(NULL, 0, 1.0) == 0.0);

    /* a clip in float's subnormal range still bounds the norm */
    memcpy(v, orig, sizeof v);
    ef__dp_clip_l2(v, D, 1e-42);
    CHECK_MSG(norm_ref(v, D) <= 1e-42, "norm %g after clip 1e-42", norm_ref(v, D));

    /* NaN or Inf anywhere: zeroed, NAN returned, error recorded */
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    for (int b = 0; b < 3; b++) {
        memcpy(v, orig, sizeof v);
        v[500] = bad[b];
        ef_clear_error();
        ret = ef__dp_clip_l2(v, D, c);
        CHECK(isnan(ret));
        CHECK(norm_ref(v, D) == 0.0);
        CHECK(strstr(ef_last_error(), "NaN or infinite") != NULL);
    }

    /* bad clip or NULL: -1, untouched, error recorded */
    const double badc[3] = {-1.0, NAN, INFINITY};
    for (int b = 0; b < 3; b++) {
        memcpy(v, orig, sizeof v);
        ef_clear_error();
        CHECK(ef__dp_clip_l2(v, D, badc[b]) == -1.0);
        CHECK(memcmp(v, orig, sizeof v) == 0);
        CHECK(ef_last_error()[0] != '\0');
    }
    CHECK(ef__dp_clip_l2(NULL, 3, 1.0) == -1.0);
    ef__drbg_wipe(&g);
}

/* ---- Gaussian mechanism ------------------------------------------------------ */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void test_gaussian(void) {
    ef__drbg g;
    seed(&g, 2, "gauss");
    size_t n = quick ? 50000 : 200000;
    const double sd = 2.5, base = 1.0;
    float *v = xmalloc(n * sizeof *v), *w = xmalloc(n * sizeof *w);
    for (size_t i = 0; i < n; i++) v[i] = (float)base;
    double t0 = now_s();
    CHECK_OK(ef__dp_gaussian(v, n, sd, &g));
    double t1 = now_s();
    double *z = xmalloc(n * sizeof *z), s = 0.0, ss = 0.0;
    for (size_t i = 0; i < n; i++) z[i] = ((double)v[i] - base) / sd, s += z[i];
    double m = s / (double)n;
    for (size_t i = 0; i < n; i++) ss += (z[i] - m) * (z[i] - m);
    double var = ss / (double)(n - 1);
    CHECK_MSG(fabs(m) < Z5 / sqrt((double)n), "gaussian mean %g (in sd units)", m);
    CHECK_MSG(fabs(var - 1.0) < Z5 * sqrt(2.0 / (double)n), "gaussian variance %g", var);
    /* Kolmogorov-Smirnov against Phi; P(sqrt(n) D > x) ~ 2 exp(-2 x^2) */
    qsort(z, n, sizeof *z, cmp_double);
    double dmax = 0.0;
    for (size_t i = 0; i < n; i++) {
        double F = 0.5 * erfc(-z[i] / sqrt(2.0));
        double d1 = fabs(F - (double)i / (double)n), d2 = fabs(F - (double)(i + 1) / (double)n);
        if (d1 > dmax) dmax = d1;
        if (d2 > dmax) dmax = d2;
    }
    double ks = sqrt((double)n) * dmax, ks_crit = sqrt(log(2.0 / 1e-4) / 2.0);
    CHECK_MSG(ks < ks_crit, "KS %g >= %g", ks, ks_crit);
    printf("gaussian: n %zu mean %.5f var %.5f KS %.3f (crit %.3f), %.1f ns/coord\n", n, m, var,
           ks, ks_crit, 1e9 * (t1 - t0) / (double)n);

    /* the same seed gives the same noise; another stream differs */
    for (size_t i = 0; i < n; i++) w[i] = (float)base;
    seed(&g, 2, "gauss");
    CHECK_OK(ef__dp_gaussian(w, n, sd, &g));
    CHECK(memcmp(v, w, n * sizeof *v) == 0);
    seed(&g, 3, "gauss");
    CHECK_OK(ef__dp_gaussian(w, 3, sd, &g)); /* odd length: last one of a pair */
    CHECK(memcmp(v, w, 3 * sizeof *v) != 0);

    /* scalar normals */
    size_t ns = 20000;
    s = ss = 0.0;
    for (size_t i = 0; i < ns; i++) {
        double x = ef__dp_normal(&g);
        s += x, ss += x * x;
    }
    m = s / (double)ns;
    var = ss / (double)ns - m * m;
    CHECK_MSG(fabs(m) < Z5 / sqrt((double)ns), "normal mean %g", m);
    CHECK_MSG(fabs(var - 1.0) < Z5 * sqrt(2.0 / (double)ns), "normal variance %g", var);

    /* stddev 0 and bad arguments leave v as it was */
    memcpy(w, v, 16 * sizeof *v);
    CHECK_OK(ef__dp_gaussian(w, 16, 0.0, &g));
    CHECK_REJECT(ef__dp_gaussian(w, 16, -1.0, &g), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_gaussian(w, 16, NAN, &g), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_gaussian(w, 16, INFINITY, &g), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_gaussian(w, 16, 1.0, NULL), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_gaussian(NULL, 16, 1.0, &g), EF_ERR_INVALID);
    CHECK(memcmp(w, v, 16 * sizeof *v) == 0);
    ef__drbg_wipe(&g);
    free(v);
    free(w);
    free(z);
}

/* ---- Bernoulli(exp(-gamma)) and discrete Laplace --------------------------- */

static void test_bernoulli_exp(void) {
    ef__drbg g;
    seed(&g, 4, "bexp");
    const uint64_t num[] = {0, 3, 1, 5, 7, 40, 1000000};
    const uint64_t den[] = {1, 10, 1, 2, 3, 1, 999999};
    int n = quick ? 20000 : 100000;
    for (size_t c = 0; c < sizeof num / sizeof num[0]; c++) {
        double p = exp(-(double)num[c] / (double)den[c]);
        long hits = 0;
        for (int i = 0; i < n; i++) {
            int b = -1;
            CHECK_OK(ef__dp_bernoulli_exp(&g, num[c], den[c], &b));
            CHECK(b == 0 || b == 1);
            hits += b;
        }
        double sd = sqrt(n * p * (1 - p));
        CHECK_MSG(fabs(hits - n * p) <= Z5 * sd + 1e-9, "Bernoulli(exp(-%llu/%llu)): %ld of %d",
                  (unsigned long long)num[c], (unsigned long long)den[c], hits, n);
    }
    int b = 7;
    CHECK_REJECT(ef__dp_bernoulli_exp(&g, 1, 0, &b), EF_ERR_INVALID);
    CHECK(b == 7);
    ef__drbg_wipe(&g);
}

static double dlap_pmf(int64_t k, const void *ctx) {
    double t = *(const double *)ctx, q = exp(-1.0 / t);
    return (1.0 - q) / (1.0 + q) * exp(-fabs((double)k) / t);
}

static void test_discrete_laplace(void) {
    ef__drbg g;
    seed(&g, 5, "dlap");
    size_t n = quick ? 20000 : 100000;
    int64_t *x = xmalloc(n * sizeof *x);
    const uint64_t ts[] = {1, 5};
    for (int c = 0; c < 2; c++) {
        for (size_t i = 0; i < n; i++) CHECK_OK(ef__dp_discrete_laplace(&g, ts[c], &x[i]));
        double t = (double)ts[c], mean, var, q = exp(-1.0 / t);
        moments(x, n, &mean, &var);
        double var_exact = 2.0 * q / ((1.0 - q) * (1.0 - q));
        int df;
        int64_t r = (int64_t)(30.0 * t);
        double chi = chi_square(x, n, -r, r, dlap_pmf, &t, &df);
        CHECK_MSG(chi < chi2_crit(df), "discrete Laplace t=%g: chi-square %.1f, df %d", t, chi,
                  df);
        printf("discrete laplace t=%g: var %.4f (exact %.4f), chi-square %.1f df %d (crit %.1f)\n",
               t, var, var_exact, chi, df, chi2_crit(df));
    }
    int64_t o = 7;
    CHECK_REJECT(ef__dp_discrete_laplace(&g, 0, &o), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_discrete_laplace(&g, (uint64_t)1 << 32, &o), EF_ERR_INVALID);
    CHECK(o == 7);
    free(x);
    ef__drbg_wipe(&g);
}

/* ---- discrete Gaussian ------------------------------------------------------- */

typedef struct dg_ref {
    double sigma, z; /* z: normalizing constant */
} dg_ref;

static dg_ref dg_ref_make(double sigma) {
    dg_ref r = {sigma, 0.0};
    int64_t kmax = (int64_t)(40.0 * sigma) + 40;
    for (int64_t k = -kmax; k <= kmax; k++) r.z += exp(-(double)k * k / (2.0 * sigma * sigma));
    return r;
}

static double dg_pmf(int64_t k, const void *ctx) {
    const dg_ref *r = ctx;
    return exp(-(double)k * k / (2.0 * r->sigma * r->sigma)) / r->z;
}

/* Second and fourth moments of N_Z(0, sigma^2): summed exactly for
 * sigma <= 100; above, those of N(0, sigma^2), which differ by a relative
 * O(sigma^2 exp(-2 pi^2 sigma^2)) (Poisson summation; CKS 2020, Section 2.4). */
static void dg_exact_moments(double sigma, double *m2, double *m4) {
    if (sigma > 100.0) {
        *m2 = sigma * sigma, *m4 = 3.0 * sigma * sigma * sigma * sigma;
        return;
    }
    dg_ref r = dg_ref_make(sigma);
    int64_t kmax = (int64_t)(40.0 * sigma) + 40;
    double a = 0.0, b = 0.0;
    for (int64_t k = -kmax; k <= kmax; k++) {
        double p = dg_pmf(k, &r), k2 = (double)k * k;
        a += k2 * p, b += k2 * k2 * p;
    }
    *m2 = a, *m4 = b;
}

static void test_discrete_gaussian(void) {
    ef__drbg g;
    seed(&g, 6, "dgauss");
    size_t n = quick ? 50000 : 200000;
    uint32_t *q = xmalloc(n * sizeof *q);
    int64_t *x = xmalloc(n * sizeof *x);
    const double sigmas[] = {0.5, 3.0, 100.0, 4e6}; /* 4e6: sigma^2 > 2^40, k = 0 */
    for (int c = 0; c < 4; c++) {
        double sigma = sigmas[c];
        size_t m = sigma > 1e5 ? n / 10 : n;
        memset(q, 0, m * sizeof *q);
        CHECK_OK(ef__dp_add_discrete_gaussian_u32(q, m, sigma, 0xFFFFFFFFu, &g));
        long pos = 0, neg = 0;
        for (size_t i = 0; i < m; i++) {
            x[i] = lift(q[i], 32);
            pos += x[i] > 0, neg += x[i] < 0;
        }
        double mean, var, m2, m4;
        moments(x, m, &mean, &var);
        dg_exact_moments(sigma, &m2, &m4);
        CHECK_MSG(fabs(mean) < Z5 * sqrt(m2 / (double)m), "sigma %g: mean %g", sigma, mean);
        CHECK_MSG(fabs(var - m2) < Z5 * sqrt((m4 - m2 * m2) / (double)m),
                  "sigma %g: variance %g, exact %g", sigma, var, m2);
        /* symmetry: given X != 0, the sign is a fair coin */
        CHECK_MSG(labs(pos - neg) < Z5 * sqrt((double)(pos + neg)), "sigma %g: %ld > 0, %ld < 0",
                  sigma, pos, neg);
        /* the exact variance is sigma^2 up to a tiny term once sigma >~ 1 */
        if (sigma >= 3.0 && sigma <= 100.0) CHECK_NEAR(m2 / (sigma * sigma), 1.0, 1e-12);
        printf("discrete gaussian sigma=%g: mean %.4f var %.6g (exact %.6g, sigma^2 %.6g), "
               "%ld > 0, %ld < 0\n",
               sigma, mean, var, m2, sigma * sigma, pos, neg);
        if (sigma == 3.0) {
            dg_ref r = dg_ref_make(sigma);
            int df;
            double chi = chi_square(x, m, -40, 40, dg_pmf, &r, &df);
            CHECK_MSG(chi < chi2_crit(df), "sigma 3: chi-square %.1f, df %d", chi, df);
            printf("discrete gaussian sigma=3: chi-square %.1f df %d (crit %.1f)\n", chi, df,
                   chi2_crit(df));
        }
        if (sigma == 0.5) {
            dg_ref r = dg_ref_make(sigma);
            int df;
            double chi = chi_square(x, m, -5, 5, dg_pmf, &r, &df);
            CHECK_MSG(chi < chi2_crit(df), "sigma 0.5: chi-square %.1f, df %d", chi, df);
            printf("discrete gaussian sigma=0.5: chi-square %.1f df %d (crit %.1f)\n", chi, df,
                   chi2_crit(df));
        }
    }

    /* scalar form, the smallest sigma (practically always 0) and bad sigmas */
    int64_t o = 0;
    long nz = 0;
    for (int i = 0; i < 1000; i++) {
        CHECK_OK(ef__dp_discrete_gaussian(&g, EF__DP_DGAUSS_SIGMA_MIN, &o));
        nz += o != 0;
    }
    CHECK(nz == 0);
    double s = 0.0, ss = 0.0;
    int ns = 20000;
    for (int i = 0; i < ns; i++) {
        CHECK_OK(ef__dp_discrete_gaussian(&g, 7.0, &o));
        s += (double)o, ss += (double)o * o;
    }
    double var = ss / ns - (s / ns) * (s / ns);
    CHECK_MSG(fabs(var / 49.0 - 1.0) < Z5 * sqrt(2.0 / ns), "scalar sigma 7: variance %g", var);
    /* the largest sigma (128-bit acceptance test at its widest) */
    s = ss = 0.0;
    ns = 4000;
    for (int i = 0; i < ns; i++) {
        CHECK_OK(ef__dp_discrete_gaussian(&g, EF__DP_DGAUSS_SIGMA_MAX, &o));
        s += (double)o, ss += (double)o * o;
    }
    var = ss / ns - (s / ns) * (s / ns);
    CHECK_MSG(fabs(var / (0x1p24 * 0x1p24) - 1.0) < Z5 * sqrt(2.0 / ns),
              "sigma 2^24: variance %g", var);
    CHECK_OK(ef__dp_discrete_gaussian(&g, 0.0, &o));
    CHECK(o == 0);
    const double bad[] = {-1.0, NAN, INFINITY, 1e-3, 0x1p25};
    for (int i = 0; i < 5; i++) {
        o = 7;
        CHECK_REJECT(ef__dp_discrete_gaussian(&g, bad[i], &o), EF_ERR_INVALID);
        CHECK(o == 7);
    }
    free(q);
    free(x);
    ef__drbg_wipe(&g);
}

/* ---- Poisson and Skellam ----------------------------------------------------- */

static double pois_pmf(int64_t k, const void *ctx) {
    double mu = *(const double *)ctx;
    if (k < 0) return 0.0;
    return exp(-mu + (double)k * log(mu) - lgamma((double)k + 1.0));
}

static void test_poisson(void) {
    ef__drbg g;
    seed(&g, 7, "poisson");
    size_t n = quick ? 20000 : 100000;
    int64_t *x = xmalloc(n * sizeof *x);
    const double mus[] = {0.5, 10.0, 30.0, 1e4, 1e8, 1e10};
    for (int c = 0; c < 6; c++) {
        double mu = mus[c];
        size_t m = mu >= 1e10 ? n / 5 : n;
        for (size_t i = 0; i < m; i++) {
            uint64_t k = 0;
            CHECK_OK(ef__dp_poisson(&g, mu, &k));
            x[i] = (int64_t)k;
        }
        double mean, var;
        moments(x, m, &mean, &var);
        /* Var of the sample variance: (mu4 - mu^2)/m with mu4 = mu + 3 mu^2 */
        CHECK_MSG(fabs(mean - mu) < Z5 * sqrt(mu / (double)m), "mu %g: mean %.6g", mu, mean);
        CHECK_MSG(fabs(var - mu) < Z5 * sqrt((mu + 2.0 * mu * mu) / (double)m),
                  "mu %g: variance %.6g", mu, var);
        printf("poisson mu=%g: mean %.8g var %.8g", mu, mean, var);
        if (mu <= 1e4) {
            double sd = sqrt(mu);
            int64_t lo = (int64_t)floor(mu - 9.0 * sd - 5.0), hi = (int64_t)ceil(mu + 9.0 * sd + 10.0);
            if (lo < 0) lo = 0;
            int df;
            double chi = chi_square(x, m, lo, hi, pois_pmf, &mu, &df);
            CHECK_MSG(chi < chi2_crit(df), "mu %g: chi-square %.1f, df %d", mu, chi, df);
            printf(", chi-square %.1f df %d (crit %.1f)", chi, df, chi2_crit(df));
        }
        printf("\n");
    }
    uint64_t k = 7;
    CHECK_OK(ef__dp_poisson(&g, 0.0, &k));
    CHECK(k == 0);
    const double bad[] = {-1.0, NAN, INFINITY, 0x1p51};
    for (int i = 0; i < 4; i++) {
        k = 7;
        CHECK_REJECT(ef__dp_poisson(&g, bad[i], &k), EF_ERR_INVALID);
        CHECK(k == 7);
    }
    free(x);
    ef__drbg_wipe(&g);
}

/* The log pmf behind PTRS's acceptance test: consecutive values differ by
 * exactly log(mu / (k + 1)) (checked to 1e-12 relative, which the textbook
 * -mu + k log mu - lgamma(k + 1) misses by 1e-5 at mu = 1e10), across the
 * switch from the direct sum (k < 16) to the Stirling form and across
 * bd0's series/direct switch at |k - mu| = 0.1 (k + mu); and the pmf sums to
 * 1. Together these pin down the Poisson distribution. */
static void test_poisson_logpmf(void) {
    const double mus[] = {0.5, 10.0, 30.0, 1e4, 1e8, 1e10, 0x1p50};
    for (int c = 0; c < 7; c++) {
        double mu = mus[c], sd = sqrt(mu);
        double lo = floor(mu - 14.0 * sd), hi = ceil(mu + 14.0 * sd + 40.0);
        if (lo < 0.0) lo = 0.0;
        uint64_t step = (uint64_t)((hi - lo) / 20000.0) + 1;
        double worst = 0.0, sum = 0.0;
        for (uint64_t k = (uint64_t)lo; (double)k <= hi; k += step) {
            double a = ef__dp_poisson_logpmf(k, mu), b = ef__dp_poisson_logpmf(k + 1, mu);
            double ref = log1p((mu - (double)k - 1.0) / ((double)k + 1.0));
            double err = fabs((b - a) - ref) / fmax(1.0, fabs(b));
            if (err > worst) worst = err;
            if (step == 1) sum += exp(a);
        }
        CHECK_MSG(worst < 1e-12, "mu %g: log pmf recurrence off by %g", mu, worst);
        printf("poisson log pmf mu=%g: recurrence error %.2g", mu, worst);
        if (step == 1) printf(", sum %.17g", sum);
        printf("\n");
        if (step == 1) CHECK_MSG(fabs(sum - 1.0) < 1e-12, "mu %g: pmf sums to %.17g", mu, sum);
    }
    /* bd0's switch from series to direct form, at mu = 1e4 */
    double worst = 0.0;
    for (uint64_t k = 8000; k < 14000; k++) {
        double a = ef__dp_poisson_logpmf(k, 1e4), b = ef__dp_poisson_logpmf(k + 1, 1e4);
        double ref = log1p((1e4 - (double)k - 1.0) / ((double)k + 1.0));
        double err = fabs((b - a) - ref) / fmax(1.0, fabs(b));
        if (err > worst) worst = err;
    }
    CHECK_MSG(worst < 1e-12, "mu 1e4: recurrence off by %g around the bd0 switch", worst);
    CHECK(ef__dp_poisson_logpmf(0, 3.0) == -3.0);
    CHECK(isnan(ef__dp_poisson_logpmf(1, 0.0)));
    CHECK(isnan(ef__dp_poisson_logpmf(1, NAN)));
}

static void test_skellam(void) {
    ef__drbg g;
    seed(&g, 8, "skellam");
    /* scalar, small and moderate mu (both Poisson methods) */
    const double mus[] = {0.3, 50.0};
    int ns = quick ? 20000 : 100000;
    for (int c = 0; c < 2; c++) {
        double s = 0.0, ss = 0.0, v = 2.0 * mus[c];
        for (int i = 0; i < ns; i++) {
            int64_t o;
            CHECK_OK(ef__dp_skellam(&g, mus[c], &o));
            s += (double)o, ss += (double)o * o;
        }
        double mean = s / ns, var = ss / ns - mean * mean;
        /* Skellam kurtosis: mu4 = 3 v^2 + v */
        CHECK_MSG(fabs(mean) < Z5 * sqrt(v / ns), "skellam mu %g: mean %g", mus[c], mean);
        CHECK_MSG(fabs(var - v) < Z5 * sqrt((2.0 * v * v + v) / ns), "skellam mu %g: var %g",
                  mus[c], var);
        printf("skellam mu=%g: mean %.4f var %.4f (2 mu = %g)\n", mus[c], mean, var, v);
    }
    int64_t o = 7;
    CHECK_REJECT(ef__dp_skellam(&g, -2.0, &o), EF_ERR_INVALID);
    CHECK(o == 7);
    ef__drbg_wipe(&g);
}

/* A whole CNN update noised by each discrete mechanism: time and variance. */
static void test_cnn_size(void) {
    ef__drbg g;
    seed(&g, 9, "cnn");
    size_t d = quick ? CNN_PARAMS / 8 : CNN_PARAMS;
    uint32_t *q = xmalloc(d * sizeof *q);
    int64_t *x = xmalloc(d * sizeof *x);
    struct {
        int skellam;
        double p; /* sigma or mu */
    } cases[] = {{0, 100.0}, {0, 1e5}, {1, 1e4}, {1, 1e10}};
    for (int c = 0; c < 4; c++) {
        memset(q, 0, d * sizeof *q);
        double t0 = now_s();
        if (cases[c].skellam)
            CHECK_OK(ef__dp_add_skellam_u32(q, d, cases[c].p, 0xFFFFFFFFu, &g));
        else
            CHECK_OK(ef__dp_add_discrete_gaussian_u32(q, d, cases[c].p, 0xFFFFFFFFu, &g));
        double dt = now_s() - t0;
        for (size_t i = 0; i < d; i++) x[i] = lift(q[i], 32);
        double mean, var;
        moments(x, d, &mean, &var);
        double v = cases[c].skellam ? 2.0 * cases[c].p : cases[c].p * cases[c].p;
        /* excess kurtosis of Skellam is 1/v, of the discrete Gaussian ~0 */
        double se = sqrt((2.0 * v * v + v) / (double)d);
        CHECK_MSG(fabs(var - v) < Z5 * se, "%s %g: variance %.6g, expected %.6g",
                  cases[c].skellam ? "skellam mu" : "dgauss sigma", cases[c].p, var, v);
        CHECK_MSG(fabs(mean) < Z5 * sqrt(v / (double)d), "mean %g", mean);
        printf("%zu coordinates, %s %g: %.3f s (%.0f ns/coord), variance/expected %.5f\n", d,
               cases[c].skellam ? "skellam mu" : "discrete gaussian sigma", cases[c].p, dt,
               1e9 * dt / (double)d, var / v);
    }
    free(q);
    free(x);
    ef__drbg_wipe(&g);
}

/* ---- modular arithmetic -------------------------------------------------------- */

static void test_modular(void) {
    enum { D = 10000 };
    static uint32_t a[D], b[D], q0[D];
    const int bitss[] = {16, 32, 1};
    for (int bi = 0; bi < 3; bi++) {
        int bits = bitss[bi];
        uint32_t mask = bits == 32 ? 0xFFFFFFFFu : ((uint32_t)1 << bits) - 1u;
        for (int mech = 0; mech < 2; mech++) {
            for (int i = 0; i < D; i++) {
                const uint32_t pick[5] = {0, 1, mask, mask - 1u, mask / 2 + 1u};
                q0[i] = pick[i % 5] & mask;
                a[i] = 0;
                b[i] = q0[i];
            }
            ef__drbg g;
            double sigma = 5.0, mu = 12.5; /* both variance 25 */
            seed(&g, 10, "modular");
            if (mech == 0) CHECK_OK(ef__dp_add_discrete_gaussian_u32(a, D, sigma, mask, &g));
            else CHECK_OK(ef__dp_add_skellam_u32(a, D, mu, mask, &g));
            seed(&g, 10, "modular");
            if (mech == 0) CHECK_OK(ef__dp_add_discrete_gaussian_u32(b, D, sigma, mask, &g));
            else CHECK_OK(ef__dp_add_skellam_u32(b, D, mu, mask, &g));
            long mismatch = 0, above = 0, wrap_down = 0, wrap_up = 0;
            double ss = 0.0;
            for (int i = 0; i < D; i++) {
                mismatch += b[i] != ((q0[i] + a[i]) & mask);
                above += a[i] > mask || b[i] > mask;
                if (bits > 1) {
                    int64_t noise = lift(a[i], bits);
                    ss += (double)noise * noise;
                    /* 0 plus negative noise lands just below 2^bits */
                    wrap_down += q0[i] == 0 && noise < 0 &&
                                 b[i] == (uint32_t)((uint64_t)mask + 1u + (uint64_t)noise);
                    /* 2^bits - 1 plus positive noise lands just above 0 */
                    wrap_up += q0[i] == mask && noise > 0 && b[i] == (uint32_t)(noise - 1);
                }
            }
            CHECK_MSG(mismatch == 0, "bits %d mech %d: %ld sums differ", bits, mech, mismatch);
            CHECK(above == 0);
            if (bits > 1) {
                /* about 2000 * 0.46 of each */
                CHECK_MSG(wrap_down > 500 && wrap_up > 500, "bits %d: wraps %ld down, %ld up",
                          bits, wrap_down, wrap_up);
                double var = ss / D;
                CHECK_MSG(fabs(var / 25.0 - 1.0) < Z5 * sqrt(2.0 / D) + 0.01,
                          "bits %d mech %d: noise variance %g", bits, mech, var);
            }
            ef__drbg_wipe(&g);
        }
    }

    /* values above the mask come back reduced */
    ef__drbg g;
    seed(&g, 11, "modular");
    uint32_t big[4] = {0xFFFFFFFFu, 0x12345u, 0x10000u, 0xFFFFu};
    CHECK_OK(ef__dp_add_skellam_u32(big, 4, 3.0, 0xFFFFu, &g));
    for (int i = 0; i < 4; i++) CHECK(big[i] <= 0xFFFFu);

    /* bad masks and parameters leave q untouched */
    uint32_t keep[4] = {1, 2, 3, 4}, t[4];
    memcpy(t, keep, sizeof t);
    const uint32_t bad_masks[] = {0, 0x0FF0u, 0x80000000u, 0xFFFFFFFEu, 0x7FFFFFFEu};
    for (int i = 0; i < 5; i++) {
        CHECK_REJECT(ef__dp_add_discrete_gaussian_u32(t, 4, 2.0, bad_masks[i], &g),
                     EF_ERR_INVALID);
        CHECK_REJECT(ef__dp_add_skellam_u32(t, 4, 2.0, bad_masks[i], &g), EF_ERR_INVALID);
    }
    CHECK_REJECT(ef__dp_add_discrete_gaussian_u32(t, 4, -2.0, 0xFFFFu, &g), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_add_discrete_gaussian_u32(t, 4, NAN, 0xFFFFu, &g), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_add_skellam_u32(t, 4, NAN, 0xFFFFu, &g), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_add_skellam_u32(t, 4, 1.0, 0xFFFFu, NULL), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_add_skellam_u32(NULL, 4, 1.0, 0xFFFFu, &g), EF_ERR_INVALID);
    CHECK_OK(ef__dp_add_discrete_gaussian_u32(t, 4, 0.0, 0xFFFFu, &g));
    CHECK_OK(ef__dp_add_skellam_u32(t, 4, 0.0, 0xFFFFu, &g));
    CHECK_OK(ef__dp_add_skellam_u32(NULL, 0, 1.0, 0xFFFFu, &g));
    CHECK(memcmp(t, keep, sizeof t) == 0);
    ef__drbg_wipe(&g);
}

/* ---- calibration and rounding bounds ----------------------------------------- */

static void test_calibration(void) {
    double z = 1.1, clip = 0.75, scale = 256.0, sigma = -1.0, mu = -1.0;
    uint32_t n = 20;
    double total = z * clip * scale;
    CHECK_OK(ef__dp_calibrate_dgauss(z, clip, scale, n, &sigma));
    CHECK_OK(ef__dp_calibrate_skellam(z, clip, scale, n, &mu));
    CHECK_NEAR(n * sigma * sigma / (total * total), 1.0, 1e-14);
    CHECK_NEAR(2.0 * n * mu / (total * total), 1.0, 1e-14);

    double keep = 123.0, o = keep;
    CHECK_REJECT(ef__dp_calibrate_dgauss(0.0, clip, scale, n, &o), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_calibrate_dgauss(NAN, clip, scale, n, &o), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_calibrate_dgauss(z, -1.0, scale, n, &o), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_calibrate_skellam(z, clip, INFINITY, n, &o), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_calibrate_skellam(z, clip, scale, 0, &o), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_calibrate_dgauss(0.1, 1.0, 1.0, 100, &o), EF_ERR_RANGE); /* 0.01 */
    CHECK_REJECT(ef__dp_calibrate_dgauss(1e9, 1e9, 1.0, 1, &o), EF_ERR_RANGE);
    CHECK_REJECT(ef__dp_calibrate_skellam(1e9, 1e9, 1.0, 1, &o), EF_ERR_RANGE);
    CHECK(o == keep);

    /* end to end: n clients each noise a zero update; the sum modulo 2^20,
     * lifted and divided by the scale, has stddev z * clip */
    enum { D = 20000, BITS = 20 };
    const uint32_t mask = (1u << BITS) - 1u;
    static uint32_t sum[D], one[D];
    for (int mech = 0; mech < 2; mech++) {
        memset(sum, 0, sizeof sum);
        for (uint32_t c = 0; c < n; c++) {
            ef__drbg g;
            uint8_t key[32];
            ef__drbg_key_from_seed(key, 100 + c, "client noise");
            ef__drbg_seed(&g, key, (uint64_t)mech);
            memset(one, 0, sizeof one);
            if (mech == 0) CHECK_OK(ef__dp_add_discrete_gaussian_u32(one, D, sigma, mask, &g));
            else CHECK_OK(ef__dp_add_skellam_u32(one, D, mu, mask, &g));
            for (int i = 0; i < D; i++) sum[i] = (sum[i] + one[i]) & mask;
            ef__drbg_wipe(&g);
        }
        double ss = 0.0;
        for (int i = 0; i < D; i++) {
            double x = (double)lift(sum[i], BITS) / scale;
            ss += x * x;
        }
        double var = ss / D, target = z * clip * z * clip;
        CHECK_MSG(fabs(var / target - 1.0) < Z5 * sqrt(2.0 / D), "%s sum: variance %g, target %g",
                  mech ? "skellam" : "dgauss", var, target);
        printf("%u clients' %s noise summed mod 2^%d: stddev %.5f in model units (z*C = %.5f)\n",
               n, mech ? "skellam" : "discrete gaussian", BITS, sqrt(var), z * clip);
    }

    /* rounding bounds: formula cases and real randomized rounding */
    double b;
    CHECK_OK(ef__dp_rounded_l2_bound(50.0, 10000, 0.0, &b));
    CHECK(b == 150.0); /* l2 + sqrt(d) */
    CHECK_OK(ef__dp_rounded_l2_bound(50.0, 10000, exp(-2.0), &b));
    CHECK_NEAR(b, sqrt(2500.0 + 2500.0 + 2.0 * (50.0 + 50.0)), 1e-12); /* sqrt(2 log e^2) = 2 */
    CHECK_OK(ef__dp_rounded_l1_bound(50.0, 10000, &b));
    CHECK(b == 2500.0);
    CHECK_OK(ef__dp_rounded_l1_bound(50.0, 100, &b));
    CHECK(b == 500.0);
    CHECK_REJECT(ef__dp_rounded_l2_bound(50.0, 0, 0.1, &b), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_rounded_l2_bound(50.0, 10, 1.0, &b), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_rounded_l2_bound(-1.0, 10, 0.1, &b), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_rounded_l1_bound(NAN, 10, &b), EF_ERR_INVALID);
    {
        /* 200 unbiased randomized roundings of a vector of norm 50 in 10,000
         * dimensions; bound at beta = 1e-9: P(any exceeds) <= 2e-7 */
        ef__drbg g;
        seed(&g, 12, "rounding");
        enum { DR = 10000, TRIALS = 200 };
        static double xv[DR];
        for (int i = 0; i < DR; i++) xv[i] = ef__dp_normal(&g);
        double nx = 0.0;
        for (int i = 0; i < DR; i++) nx += xv[i] * xv[i];
        for (int i = 0; i < DR; i++) xv[i] *= 50.0 / sqrt(nx);
        double bound, worst = 0.0, mean2 = 0.0;
        CHECK_OK(ef__dp_rounded_l2_bound(50.0, DR, 1e-9, &bound));
        int trials = quick ? 40 : TRIALS;
        for (int t = 0; t < trials; t++) {
            double s2 = 0.0;
            for (int i = 0; i < DR; i++) {
                double f = floor(xv[i]);
                double r = f + (ef__drbg_uniform(&g) < xv[i] - f ? 1.0 : 0.0);
                s2 += r * r;
            }
            if (sqrt(s2) > worst) worst = sqrt(s2);
            mean2 += s2 / trials;
        }
        CHECK_MSG(worst <= bound, "rounded norm %g > bound %g", worst, bound);
        printf("randomized rounding: norm 50 -> at most %.2f (rms %.2f), bound %.2f\n", worst,
               sqrt(mean2), bound);
        ef__drbg_wipe(&g);
    }
}

/* ---- Renyi DP ----------------------------------------------------------------- */

static void test_rdp(void) {
    double e;
    CHECK_OK(ef__dp_gaussian_rdp(8.0, 1.0, 2.0, &e));
    CHECK(e == 1.0);
    /* Skellam, hand-evaluated: alpha 2, l1 = l2 = var = 1:
     * 2/2 + min((3 + 6)/4, 3/2) = 2.5 */
    CHECK_OK(ef__dp_skellam_rdp(2.0, 1.0, 1.0, 1.0, &e));
    CHECK(e == 2.5);

    /* fixed noise multiplier z = l2 / sqrt(var), growing quantizer scale:
     * Skellam's RDP is above the Gaussian's and tends to it */
    const double z = 0.8, alpha = 10.0, clip = 1.0;
    const uint64_t d = 1000000;
    double gauss, prev = INFINITY;
    CHECK_OK(ef__dp_gaussian_rdp(alpha, 1.0, z, &gauss));
    for (double s = 1.0; s <= 1e6; s *= 10.0) {
        double l2 = clip * s, var = (z * l2) * (z * l2), l1, sk;
        CHECK_OK(ef__dp_rounded_l1_bound(l2, d, &l1));
        CHECK_OK(ef__dp_skellam_rdp(alpha, l1, l2, var, &sk));
        double ratio = sk / gauss;
        /* strictly decreasing until it is 1 to double precision */
        CHECK_MSG(ratio >= 1.0 && (ratio < prev || ratio - 1.0 < 1e-13),
                  "scale %g: skellam/gauss %.17g (previous %.17g)", s, ratio, prev);
        printf("skellam rdp alpha=%g z=%g scale=%g: %.9g (gaussian %.9g)\n", alpha, z, s, sk,
               gauss);
        prev = ratio;
    }
    CHECK_MSG(prev - 1.0 < 1e-6, "skellam/gauss at scale 1e6: %.9g", prev);

    /* DDG: per-client sigma large -> tau ~ 0 -> the Gaussian RDP of the sum;
     * small sigma -> larger */
    double ddg, gsum;
    CHECK_OK(ef__dp_ddg_rdp(alpha, 100.0 * sqrt(1e4), 100.0, 10.0, 10, 10000, &ddg));
    CHECK_OK(ef__dp_gaussian_rdp(alpha, 100.0, 10.0 * sqrt(10.0), &gsum));
    CHECK_NEAR(ddg / gsum, 1.0, 1e-12);
    CHECK_OK(ef__dp_ddg_rdp(alpha, 50.0 * sqrt(1e4), 50.0, 0.5, 100, 10000, &ddg));
    CHECK_OK(ef__dp_gaussian_rdp(alpha, 50.0, 0.5 * 10.0, &gsum));
    CHECK_MSG(ddg > 1.01 * gsum, "ddg sigma 0.5: %g vs gaussian %g", ddg, gsum);
    printf("ddg rdp sigma=0.5 n=100: %.6g (gaussian of the sum %.6g)\n", ddg, gsum);

    double keep = 5.0;
    e = keep;
    CHECK_REJECT(ef__dp_skellam_rdp(2.5, 1.0, 1.0, 1.0, &e), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_skellam_rdp(1.0, 1.0, 1.0, 1.0, &e), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_skellam_rdp(2.0, 1.0, 1.0, 0.0, &e), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_gaussian_rdp(1.0, 1.0, 1.0, &e), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_gaussian_rdp(2.0, 1.0, 0.0, &e), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_ddg_rdp(2.0, 1.0, 1.0, 0.4, 10, 10, &e), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_ddg_rdp(2.0, 1.0, 1.0, 1.0, 0, 10, &e), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_ddg_rdp(2.0, 1.0, 1.0, 1.0, EF__DP_DDG_MAX_CLIENTS + 1, 10, &e),
                 EF_ERR_INVALID);
    CHECK(e == keep);
}

/* ---- adaptive clipping ------------------------------------------------------- */

/* Runs `rounds` rounds of m clients with update norms uniform on [0, 10];
 * returns the mean clip over the second half; *last = the final clip. */
static double run_adaptive(double gamma, int rounds, uint64_t m, double *last) {
    ef__dp_adaptive a;
    CHECK_OK(ef__dp_adaptive_init(&a, 0.1, gamma, 0.2, (double)m / 20.0));
    ef__drbg norms, noise;
    seed(&norms, 13, "norms");
    seed(&noise, 14, "count noise");
    double acc = 0.0;
    for (int r = 0; r < rounds; r++) {
        uint64_t count = 0;
        for (uint64_t i = 0; i < m; i++) count += 10.0 * ef__drbg_uniform(&norms) <= a.clip;
        CHECK_OK(ef__dp_adaptive_update(&a, count, m, &noise, NULL));
        if (r >= rounds / 2) acc += log(a.clip);
    }
    ef__drbg_wipe(&norms);
    ef__drbg_wipe(&noise);
    *last = a.clip;
    return exp(acc / (rounds - rounds / 2));
}

static void test_adaptive(void) {
    ef__dp_adaptive a, keep;
    CHECK_OK(ef__dp_adaptive_init(&a, 1.0, 0.5, 0.2, 0.0));
    keep = a;
    CHECK_REJECT(ef__dp_adaptive_init(&a, 0.0, 0.5, 0.2, 1.0), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_adaptive_init(&a, INFINITY, 0.5, 0.2, 1.0), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_adaptive_init(&a, 1.0, 1.5, 0.2, 1.0), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_adaptive_init(&a, 1.0, NAN, 0.2, 1.0), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_adaptive_init(&a, 1.0, 0.5, 0.0, 1.0), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_adaptive_init(&a, 1.0, 0.5, 0.2, -1.0), EF_ERR_INVALID);
    CHECK(memcmp(&a, &keep, sizeof a) == 0);

    /* one exact step without noise: 30 of 100 under the clip, gamma 0.5 */
    ef__drbg g;
    seed(&g, 15, "adaptive");
    double bb = -1.0;
    CHECK_OK(ef__dp_adaptive_update(&a, 30, 100, &g, &bb));
    CHECK(bb == 0.3);
    CHECK_NEAR(a.clip, exp(0.2 * 0.2), 1e-15);
    keep = a;
    CHECK_REJECT(ef__dp_adaptive_update(&a, 101, 100, &g, &bb), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_adaptive_update(&a, 0, 0, &g, &bb), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_adaptive_step(&a, NAN), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_adaptive_step(&a, -1e300), EF_ERR_RANGE); /* exp overflows */
    CHECK(memcmp(&a, &keep, sizeof a) == 0);

    /* noised count: b_bar = (count + N(0, sigma_b^2)) / m */
    CHECK_OK(ef__dp_adaptive_init(&a, 1.0, 0.5, 0.2, 5.0));
    int nb = 20000;
    double s = 0.0, ss = 0.0;
    for (int i = 0; i < nb; i++) {
        a.clip = 1.0;
        CHECK_OK(ef__dp_adaptive_update(&a, 50, 100, &g, &bb));
        s += bb, ss += bb * bb;
    }
    double mb = s / nb, vb = ss / nb - mb * mb;
    CHECK_MSG(fabs(mb - 0.5) < Z5 * 0.05 / sqrt(nb), "b_bar mean %g", mb);
    CHECK_MSG(fabs(vb / 0.0025 - 1.0) < Z5 * sqrt(2.0 / nb), "b_bar variance %g", vb);

    /* convergence to the quantile of U[0, 10]: gamma 0.5 -> 5, 0.9 -> 9. The
     * log-clip is an AR(1) around log(10 gamma) with stationary sd ~0.03, so
     * the thresholds are > 5 sd away. */
    double last, mean = run_adaptive(0.5, 400, 100, &last);
    CHECK_MSG(fabs(mean - 5.0) < 0.25 && fabs(last - 5.0) < 1.0,
              "gamma 0.5: mean clip %g, last %g", mean, last);
    printf("adaptive clipping gamma=0.5: mean clip %.4f over rounds 200..399, last %.4f\n", mean,
           last);
    mean = run_adaptive(0.9, 400, 100, &last);
    CHECK_MSG(fabs(mean - 9.0) < 0.45 && fabs(last - 9.0) < 1.8,
              "gamma 0.9: mean clip %g, last %g", mean, last);
    printf("adaptive clipping gamma=0.9: mean clip %.4f, last %.4f\n", mean, last);

    /* noise multiplier split */
    double zd = -1.0;
    CHECK_OK(ef__dp_adaptive_noise_split(1.0, 5.0, &zd));
    CHECK_NEAR(1.0 / (zd * zd) + 1.0 / (4.0 * 25.0), 1.0, 1e-14);
    CHECK_NEAR(zd, 1.0 / sqrt(0.99), 1e-14);
    double o = 3.0;
    CHECK_REJECT(ef__dp_adaptive_noise_split(1.0, 0.5, &o), EF_ERR_RANGE); /* 2 sigma_b == z */
    CHECK_REJECT(ef__dp_adaptive_noise_split(1.0, 0.0, &o), EF_ERR_RANGE);
    CHECK_REJECT(ef__dp_adaptive_noise_split(0.0, 1.0, &o), EF_ERR_INVALID);
    CHECK_REJECT(ef__dp_adaptive_noise_split(1.0, NAN, &o), EF_ERR_INVALID);
    CHECK(o == 3.0);
    ef__drbg_wipe(&g);
}

int main(void) {
    quick = getenv("EDGEFL_TEST_QUICK") != NULL;
    double t0 = now_s();
    test_clip();
    test_gaussian();
    test_bernoulli_exp();
    test_discrete_laplace();
    test_discrete_gaussian();
    test_poisson();
    test_poisson_logpmf();
    test_skellam();
    test_cnn_size();
    test_modular();
    test_calibration();
    test_rdp();
    test_adaptive();
    printf("test_dp: %.2f s\n", now_s() - t0);
    return tu_finish("test_dp");
}
