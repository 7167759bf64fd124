/*
 * The RDP accountant (include/edgefl/accountant.h):
 *   1. published values: per-order RDP and epsilons from TensorFlow
 *      Privacy's and Opacus's tests and examples (each cited below);
 *   2. closed forms: q = 1 (a / (2 sigma^2)), q = 0, and the exact A_2 and
 *      A_3 from the moments of the likelihood ratio, down to q = 1e-8 and up
 *      to sigma = 100, where computing A_a itself loses the digits;
 *   3. properties: monotone in steps, q, sigma and the order, fractional
 *      orders continuous with integer ones, no result above a / (2 sigma^2);
 *   4. max steps is the exact inverse of the forward computation, for the
 *      pure function and for an accountant that has already spent some;
 *   5. the streaming accountant: composition by adding, would_exceed equal
 *      bit for bit to step + epsilon, the 2^53 step limit;
 *   6. JSON save/load bit for bit (also under a comma-decimal locale), and
 *      malformed or inconsistent JSON refused with the accountant unchanged;
 *   7. bad arguments refused with EF_ERR_INVALID, outputs untouched, and
 *      every allocation failing in turn gives EF_ERR_NOMEM without a leak;
 *   8. every value of tests/privacy/rdp_ref.py, an independent numerical
 *      integration of the definition in Python (standard library only; run
 *      when /usr/bin/python3 exists, EDGEFL_PYTHON selects another).
 */
#include <locale.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "edgefl/accountant.h"
#include "test_util.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* |got - want| <= rtol |want| */
#define CHECK_REL(got, want, rtol)                                                         \
    do {                                                                                   \
        double g_ = (got), w_ = (want);                                                    \
        CHECK_MSG(fabs(g_ - w_) <= (rtol) * fabs(w_), "%s = %.12g, want %.12g (rtol %g)", \
                  #got, g_, w_, (double)(rtol));                                           \
    } while (0)

/* epsilon of `steps` steps of (q, sigma) at delta over the given orders */
static double eps_of(double q, double sigma, uint64_t steps, double delta, const double *orders,
                     size_t n, double *order) {
    double rdp[2048], eps = NAN;
    CHECK(n <= N_OF(rdp));
    CHECK_OK(ef_rdp_compute(q, sigma, steps, orders, n, rdp));
    CHECK_OK(ef_rdp_epsilon(orders, rdp, n, delta, &eps, order));
    return eps;
}

/* TensorFlow Privacy compute_dp_sgd_privacy_lib.compute_dp_sgd_privacy's
 * orders. */
static size_t tf_orders(double *o) {
    static const double head[] = {1.25, 1.5, 1.75, 2., 2.25, 2.5, 3., 3.5, 4., 4.5};
    size_t n = 0;
    for (size_t k = 0; k < N_OF(head); k++) o[n++] = head[k];
    for (int x = 5; x < 64; x++) o[n++] = x;
    o[n++] = 128;
    o[n++] = 256;
    o[n++] = 512;
    return n;
}

/* dp_accounting's RdpAccountant DEFAULT_RDP_ORDERS (google/differential-privacy,
 * python/dp_accounting/rdp/rdp_privacy_accountant.py), which
 * compute_dp_sgd_privacy_lib's newer functions use. */
static size_t dp_accounting_orders(double *o) {
    size_t n = 0;
    for (int x = 1; x < 100; x++) o[n++] = 1 + x / 10.0;
    for (int x = 11; x < 64; x++) o[n++] = x;
    o[n++] = 128;
    o[n++] = 256;
    o[n++] = 512;
    o[n++] = 1024;
    return n;
}

/* ---- 1. published values ----------------------------------------------- */

static void test_published_rdp(void) {
    double r[8];
    /* tensorflow/privacy tensorflow_privacy/privacy/analysis/rdp_accountant_test.py,
     * test_compute_rdp_scalar: compute_rdp(0.1, 2, 10, 5) = 0.07737 (5 places) */
    double o5[] = {5};
    CHECK_OK(ef_rdp_compute(0.1, 2.0, 10, o5, 1, r));
    CHECK_NEAR(r[0], 0.07737, 5e-6);
    /* same file, test_compute_rdp_sequence, and rdp_privacy_accountant_test.py
     * test_compute_rdp_poisson_sampled_gaussian (rtol 1e-4): q = 0.01,
     * sigma = 2.5, 50 steps */
    double o[] = {1.5, 2.5, 5, 50, 100};
    double want[] = {6.5007e-04, 1.0854e-03, 2.1808e-03, 2.3846e-02, 1.6742e+02};
    CHECK_OK(ef_rdp_compute(0.01, 2.5, 50, o, N_OF(o), r));
    for (size_t k = 0; k < N_OF(o); k++) CHECK_REL(r[k], want[k], 1e-4);
    printf("  TF Privacy q=0.01 sigma=2.5 x50: rdp(1.5) %.6g, rdp(100) %.6g\n", r[0], r[4]);
    /* rdp_accountant_test.py test_compute_rdp_no_data / _no_sampling:
     * compute_rdp(0, 10, 1, 20) == 0 and compute_rdp(1, 10, 1, 20) == 0.1 */
    double o20[] = {20};
    CHECK_OK(ef_rdp_compute(0.0, 10.0, 1, o20, 1, r));
    CHECK(r[0] == 0.0);
    CHECK_OK(ef_rdp_compute(1.0, 10.0, 1, o20, 1, r));
    CHECK(r[0] == 20.0 / 200.0);
    /* rdp_privacy_accountant_test.py test_compute_rdp_gaussian: q = 1 at
     * order 3.14159, sigma 2.71828 gives alpha / (2 sigma^2) */
    double opi[] = {3.14159};
    CHECK_OK(ef_rdp_compute(1.0, 2.71828, 1, opi, 1, r));
    CHECK_REL(r[0], 3.14159 / (2 * 2.71828 * 2.71828), 1e-15);
}

static void test_published_epsilon(void) {
    double o[2048], order = 0;
    size_t n = tf_orders(o);
    /* tensorflow/privacy compute_dp_sgd_privacy_test.py test_compute_dp_sgd_privacy
     * (n, batch, noise, epochs, delta) -> (eps, order), with
     * q = batch / n and steps = ceil(epochs n / batch): */
    struct {
        double n, batch, sigma, epochs, delta, eps, order;
    } tf[] = {
        {60000, 150, 1.3, 15, 1e-5, 0.7242234026109595, 19.0},
        {100000, 100, 1.0, 30, 1e-7, 1.4154988495444842, 13.0},
        {100000000, 1024, 0.1, 10, 1e-7, 5907982.3113978775, 1.25},
    };
    for (size_t k = 0; k < N_OF(tf); k++) {
        uint64_t steps = (uint64_t)ceil(tf[k].epochs * tf[k].n / tf[k].batch);
        double e = eps_of(tf[k].batch / tf[k].n, tf[k].sigma, steps, tf[k].delta, o, n, &order);
        CHECK_REL(e, tf[k].eps, 1e-6);
        CHECK_MSG(order == tf[k].order, "best order %g, want %g", order, tf[k].order);
        printf("  TF Privacy DP-SGD %g/%g sigma %g: epsilon %.10g (published %.10g), order %g\n",
               tf[k].batch, tf[k].n, tf[k].sigma, e, tf[k].eps, order);
    }

    /* pytorch/opacus opacus/tests/accountants_test.py test_rdp_accountant:
     * sigma 1.5, q 0.04, int(90 / 0.04) = 2250 steps, delta 1e-5, Opacus's
     * DEFAULT_ALPHAS -> 7.32911117143 (7 places) */
    ef_accountant *acc = NULL;
    CHECK_OK(ef_accountant_new(&acc, NULL, 0));
    CHECK_OK(ef_accountant_step(acc, 0.04, 1.5, 2250));
    double e = 0;
    CHECK_OK(ef_accountant_epsilon(acc, 1e-5, &e, &order));
    CHECK_NEAR(e, 7.32911117143, 1e-7);
    printf("  Opacus sigma 1.5 q 0.04 x2250: epsilon %.11g (published 7.32911117143)\n", e);
    ef_accountant_free(acc);

    /* opacus/accountants/analysis/rdp.py module docstring: (q, sigma, steps)
     * = (1e-5, 1.0, 10) and (1e-4, 3.0, 4), orders 2..32, delta 1e-5 ->
     * (0.336, 23) */
    double o32[31];
    for (int k = 0; k < 31; k++) o32[k] = k + 2;
    CHECK_OK(ef_accountant_new(&acc, o32, 31));
    CHECK_OK(ef_accountant_step(acc, 1e-5, 1.0, 10));
    CHECK_OK(ef_accountant_step(acc, 1e-4, 3.0, 4));
    CHECK_OK(ef_accountant_epsilon(acc, 1e-5, &e, &order));
    CHECK_NEAR(e, 0.336, 0.0005);
    CHECK(order == 23);
    ef_accountant_free(acc);

    /* compute_dp_sgd_privacy_test.py test_compute_dp_sgd_example_privacy:
     * 1.2 epochs, noise 0.7, delta 1e-5; microbatching halves sigma; with
     * Poisson sampling q = 0.01 for ceil(1.2 / 0.01) = 120 steps, without it
     * q = 1 for ceil(1.2) = 2 steps; dp_accounting's default orders. The
     * microbatched subsampled value is 0.12% above ours: our RDP at its
     * optimal order 1.6 agrees with rdp_ref.py's integration of the
     * definition (section 8) and with a 40-digit mpmath quadrature (checked
     * once by hand: 0.0431082945039896) to 12 digits; TF's fractional
     * series is less accurate there. */
    n = dp_accounting_orders(o);
    struct {
        double q, sigma;
        uint64_t steps;
        double eps;
    } ex[] = {
        {1.0, 0.7, 2, 10.8602036},
        {1.0, 0.35, 2, 26.2880374},
        {0.01, 0.7, 120, 3.2392676},
        {0.01, 0.35, 120, 22.6248601},
    };
    for (size_t k = 0; k < N_OF(ex); k++) {
        e = eps_of(ex[k].q, ex[k].sigma, ex[k].steps, 1e-5, o, n, &order);
        CHECK_REL(e, ex[k].eps, 0.01);
        printf("  TF Privacy example privacy q %g sigma %g x%llu: epsilon %.9g (published %.9g)\n",
               ex[k].q, ex[k].sigma, (unsigned long long)ex[k].steps, e, ex[k].eps);
    }
    /* same file, DP_SGD_STATEMENT_KWARGS (10000 examples, batch 64, 5
     * epochs, noise 2.0 halved by microbatching, delta 1e-6): "Epsilon
     * assuming Poisson sampling (*): 1.616", ceil(5 / 0.0064) = 782 steps */
    e = eps_of(64 / 10000.0, 1.0, 782, 1e-6, o, n, &order);
    CHECK_NEAR(e, 1.616, 0.0005);

    /* rdp_accountant_test.py test_get_privacy_spent_check_target_delta:
     * a constant RDP of 1.1 at orders 2..32 (pure DP) -> epsilon
     * 1.32783806176 at delta 1e-5, at the largest order */
    double c[31];
    for (int k = 0; k < 31; k++) c[k] = 1.1;
    CHECK_OK(ef_rdp_epsilon(o32, c, 31, 1e-5, &e, &order));
    CHECK_NEAR(e, 1.32783806176, 1e-10);
    CHECK(order == 32);
    /* same test: the Gaussian mechanism (q = 1) with sigma 4.530877117 is
     * exactly (1, 1e-6)-DP over the orders 0.001 i (here from i = 1001: the
     * order 1 itself is outside the domain) */
    static double fine[98999], rfine[98999];
    for (int i = 1001; i < 100000; i++) fine[i - 1001] = 0.001 * i;
    CHECK_OK(ef_rdp_compute(1.0, 4.530877117, 1, fine, N_OF(fine), rfine));
    CHECK_OK(ef_rdp_epsilon(fine, rfine, N_OF(fine), 1e-6, &e, &order));
    CHECK_NEAR(e, 1.0, 1e-7);
}

/* ---- 2. closed forms ------------------------------------------------------ */

/* A_2 and A_3 exactly: with L = e^((2z-1)/(2 sigma^2)), z ~ N(0, sigma^2),
 * E[L^k] = e^(k(k-1)/(2 sigma^2)), and A_a = E[(1 + q (L - 1))^a], so
 *   A_2 = 1 + q^2 (e^(1/s^2) - 1),
 *   A_3 = 1 + 3 q^2 (e^(1/s^2) - 1) + q^3 (e^(3/s^2) - 3 e^(1/s^2) + 2). */
static void test_closed_forms(void) {
    double qs[] = {1e-8, 1e-5, 1e-3, 0.01, 0.2, 0.7, 0.999};
    double ss[] = {0.3, 0.8, 1.0, 3.0, 10.0, 100.0};
    double o[] = {2, 3}, r[2];
    double worst = 0;
    for (size_t a = 0; a < N_OF(qs); a++)
        for (size_t b = 0; b < N_OF(ss); b++) {
            double q = qs[a], s = ss[b], x = 1.0 / (s * s);
            CHECK_OK(ef_rdp_compute(q, s, 1, o, 2, r));
            double a2 = log1p(q * q * expm1(x));
            double a3 = log1p(3 * q * q * expm1(x) + q * q * q * (expm1(3 * x) - 3 * expm1(x))) / 2;
            CHECK_REL(r[0], a2, 1e-12);
            CHECK_REL(r[1], a3, 1e-9);
            worst = fmax(worst, fabs(r[0] - a2) / a2);
        }
    printf("  A_2 closed form: worst relative error %.2g (q down to 1e-8, sigma up to 100)\n",
           worst);

    /* q = 1: a / (2 sigma^2) at any order; q just below 1 approaches it */
    size_t n;
    const double *def = ef_rdp_default_orders(&n);
    double full[EF_RDP_N_DEFAULT_ORDERS], near1[EF_RDP_N_DEFAULT_ORDERS];
    CHECK_OK(ef_rdp_compute(1.0, 1.7, 3, def, n, full));
    CHECK_OK(ef_rdp_compute(1.0 - 1e-9, 1.7, 3, def, n, near1));
    for (size_t k = 0; k < n; k++) {
        CHECK(full[k] == 3 * (def[k] / (2 * 1.7 * 1.7)));
        CHECK_REL(near1[k], full[k], 1e-6);
        CHECK(near1[k] <= full[k]);
    }
    /* q = 0 spends nothing, also with sigma = 0; sigma = 0 with q > 0 is
     * infinite, but zero steps of it are not */
    CHECK_OK(ef_rdp_compute(0.0, 0.0, 100, def, n, full));
    for (size_t k = 0; k < n; k++) CHECK(full[k] == 0.0);
    CHECK_OK(ef_rdp_compute(0.5, 0.0, 1, def, n, full));
    for (size_t k = 0; k < n; k++) CHECK(full[k] == INFINITY);
    CHECK_OK(ef_rdp_compute(0.5, 0.0, 0, def, n, full));
    for (size_t k = 0; k < n; k++) CHECK(full[k] == 0.0);
    /* sigma so small that a / (2 sigma^2) overflows: infinite, not NaN */
    CHECK_OK(ef_rdp_compute(0.5, 1e-160, 1, def, n, near1));
    for (size_t k = 0; k < n; k++) CHECK(near1[k] == INFINITY);
    double e = 0, order = 0;
    CHECK_OK(ef_rdp_epsilon(def, full, n, 1e-5, &e, &order));
    CHECK(e == 0.0);
    CHECK_OK(ef_rdp_compute(0.5, 0.0, 1, def, n, full));
    CHECK_OK(ef_rdp_epsilon(def, full, n, 1e-5, &e, &order));
    CHECK(e == INFINITY && isnan(order));

    /* default orders: Opacus's DEFAULT_ALPHAS */
    CHECK(n == 151 && def[0] == 1 + 1 / 10.0 && def[98] == 1 + 99 / 10.0);
    CHECK(def[99] == 12 && def[150] == 63);
}

/* ---- 3. properties -------------------------------------------------------- */

static void test_monotone(void) {
    size_t n;
    const double *o = ef_rdp_default_orders(&n);
    double d = 1e-5, prev = 0;
    /* more steps spend more */
    for (uint64_t t = 1; t <= 100000; t *= 10) {
        double e = eps_of(0.01, 1.1, t, d, o, n, NULL);
        CHECK_MSG(e > prev, "%llu steps: epsilon %g after %g", (unsigned long long)t, e, prev);
        prev = e;
    }
    /* more noise spends less */
    prev = INFINITY;
    double sigmas[] = {0.3, 0.5, 0.8, 1.0, 2.0, 5.0, 20.0, 100.0};
    for (size_t k = 0; k < N_OF(sigmas); k++) {
        double e = eps_of(0.02, sigmas[k], 1000, d, o, n, NULL);
        CHECK_MSG(e < prev, "sigma %g: epsilon %g after %g", sigmas[k], e, prev);
        prev = e;
    }
    /* a larger sampling rate spends more */
    prev = 0;
    double qs[] = {1e-4, 1e-3, 0.01, 0.1, 0.5, 1.0};
    for (size_t k = 0; k < N_OF(qs); k++) {
        double e = eps_of(qs[k], 1.0, 100, d, o, n, NULL);
        CHECK_MSG(e > prev, "q %g: epsilon %g after %g", qs[k], e, prev);
        prev = e;
    }
    /* a smaller delta costs more epsilon */
    CHECK(eps_of(0.01, 1.0, 1000, 1e-7, o, n, NULL) > eps_of(0.01, 1.0, 1000, 1e-5, o, n, NULL));

    /* RDP is non-decreasing in the order, fractional orders continuous with
     * integer ones, nothing above the unsampled a / (2 sigma^2) */
    double big[] = {1.01, 1.5, 2, 2.5, 7.3, 63, 100.5, 256, 256.1, 512, 512.5};
    double cq[] = {1e-6, 1e-3, 0.05, 0.5, 0.95};
    double cs[] = {0.3, 0.7, 1.0, 4.0, 30.0, 100.0};
    for (size_t a = 0; a < N_OF(cq); a++)
        for (size_t b = 0; b < N_OF(cs); b++) {
            double r[EF_RDP_N_DEFAULT_ORDERS], rb[N_OF(big)];
            CHECK_OK(ef_rdp_compute(cq[a], cs[b], 1, o, n, r));
            CHECK_OK(ef_rdp_compute(cq[a], cs[b], 1, big, N_OF(big), rb));
            for (size_t k = 1; k < n; k++)
                CHECK_MSG(r[k] >= r[k - 1] * (1 - 1e-9), "q %g sigma %g order %g", cq[a], cs[b],
                          o[k]);
            for (size_t k = 0; k < N_OF(big); k++) {
                CHECK(rb[k] <= big[k] / (2 * cs[b] * cs[b]));
                if (k) CHECK_MSG(rb[k] >= rb[k - 1] * (1 - 1e-9), "q %g sigma %g order %g",
                                 cq[a], cs[b], big[k]);
            }
            double ints[] = {2, 3, 17}, nb[3];
            CHECK_OK(ef_rdp_compute(cq[a], cs[b], 1, ints, 3, r));
            for (int k = 0; k < 3; k++) nb[k] = ints[k] + 1e-9;
            CHECK_OK(ef_rdp_compute(cq[a], cs[b], 1, nb, 3, rb));
            for (int k = 0; k < 3; k++)
                CHECK_MSG(fabs(rb[k] - r[k]) <= 1e-6 * r[k], "order %g: %.12g vs %.12g at %g",
                          ints[k], r[k], rb[k], nb[k]);
        }

    /* beyond double precision's reach (sigma 1e7) the fractional orders fall
     * back on the chord bound: still an upper bound on the true value,
     * a q^2 (e^(1/sigma^2) - 1) / 2 to leading order, and below a/(2 sigma^2) */
    double fo[] = {1.5, 2.5, 10.5};
    double r3[3];
    CHECK_OK(ef_rdp_compute(0.01, 1e7, 1, fo, 3, r3));
    for (int k = 0; k < 3; k++) {
        double lead = fo[k] * 1e-4 * expm1(1e-14) / 2;
        CHECK_MSG(r3[k] >= lead * (1 - 1e-6) && r3[k] <= fo[k] / 2e14, "order %g: %g (lead %g)",
                  fo[k], r3[k], lead);
    }
}

/* ---- 4. max steps ------------------------------------------------------- */

static void test_max_steps(void) {
    size_t n;
    const double *o = ef_rdp_default_orders(&n);
    struct {
        double q, sigma, delta, target;
    } cs[] = {
        {0.0025, 1.3, 1e-5, 1.0}, {0.01, 1.0, 1e-5, 8.0}, {0.1, 5.0, 1e-6, 2.0},
        {1.0, 10.0, 1e-5, 3.0},   {0.001, 0.8, 1e-7, 2.0}, {0.04, 1.5, 1e-5, 7.32911117143},
    };
    for (size_t k = 0; k < N_OF(cs); k++) {
        uint64_t t = 0;
        CHECK_OK(ef_rdp_max_steps(cs[k].q, cs[k].sigma, NULL, 0, cs[k].delta, cs[k].target,
                                  UINT64_MAX, &t));
        double e0 = eps_of(cs[k].q, cs[k].sigma, t, cs[k].delta, o, n, NULL);
        double e1 = eps_of(cs[k].q, cs[k].sigma, t + 1, cs[k].delta, o, n, NULL);
        CHECK_MSG(t > 0 && e0 <= cs[k].target && e1 > cs[k].target,
                  "q %g sigma %g: %llu steps give %.12g, one more %.12g (target %g)", cs[k].q,
                  cs[k].sigma, (unsigned long long)t, e0, e1, cs[k].target);
        printf("  max steps q %g sigma %g delta %g eps %g: %llu (epsilon %.6f, then %.6f)\n",
               cs[k].q, cs[k].sigma, cs[k].delta, cs[k].target, (unsigned long long)t, e0, e1);
    }
    /* Opacus's test value spends exactly its epsilon at 2250 steps */
    uint64_t t = 0;
    CHECK_OK(ef_rdp_max_steps(0.04, 1.5, NULL, 0, 1e-5, 7.3291, UINT64_MAX, &t));
    CHECK_MSG(t == 2249, "%llu", (unsigned long long)t);
    /* the limit caps the answer; q = 0 fits any number; sigma = 0 none */
    CHECK_OK(ef_rdp_max_steps(0.01, 1.0, NULL, 0, 1e-5, 8.0, 1000, &t));
    CHECK(t == 1000);
    CHECK_OK(ef_rdp_max_steps(0.0, 1.0, NULL, 0, 1e-5, 1.0, UINT64_MAX, &t));
    CHECK(t == UINT64_MAX);
    CHECK_OK(ef_rdp_max_steps(0.5, 0.0, NULL, 0, 1e-5, 100.0, UINT64_MAX, &t));
    CHECK(t == 0);
    CHECK_OK(ef_rdp_max_steps(0.01, 1.0, NULL, 0, 1e-5, 0.0, UINT64_MAX, &t));
    CHECK(t == 0);

    /* an accountant that has spent some: max further steps, consistent with
     * would_exceed, and recording them keeps epsilon within the target */
    ef_accountant *acc = NULL;
    CHECK_OK(ef_accountant_new(&acc, NULL, 0));
    CHECK_OK(ef_accountant_step(acc, 0.02, 0.9, 300));
    CHECK_OK(ef_accountant_step(acc, 0.01, 1.2, 500));
    double spent = 0;
    CHECK_OK(ef_accountant_epsilon(acc, 1e-5, &spent, NULL));
    uint64_t more = 0;
    CHECK_OK(ef_accountant_max_steps(acc, 0.01, 1.2, 1e-5, 4.0, UINT64_MAX, &more));
    int ex = -1;
    double after = 0;
    CHECK_OK(ef_accountant_would_exceed(acc, 0.01, 1.2, more, 1e-5, 4.0, &ex, &after));
    CHECK(ex == 0 && after <= 4.0);
    CHECK_OK(ef_accountant_would_exceed(acc, 0.01, 1.2, more + 1, 1e-5, 4.0, &ex, &after));
    CHECK(ex == 1 && after > 4.0);
    printf("  accountant at epsilon %.4f: %llu more steps fit in 4.0\n", spent,
           (unsigned long long)more);
    CHECK_OK(ef_accountant_step(acc, 0.01, 1.2, more));
    double now = 0;
    CHECK_OK(ef_accountant_epsilon(acc, 1e-5, &now, NULL));
    CHECK(now <= 4.0 && now > spent);
    CHECK_OK(ef_accountant_max_steps(acc, 0.01, 1.2, 1e-5, 4.0, UINT64_MAX, &more));
    CHECK(more == 0);
    /* already above the target: nothing fits */
    CHECK_OK(ef_accountant_max_steps(acc, 0.01, 1.2, 1e-5, 1.0, UINT64_MAX, &more));
    CHECK(more == 0);
    ef_accountant_free(acc);
}

/* ---- 5. the streaming accountant ----------------------------------------- */

static void test_accountant(void) {
    double o[] = {1.5, 2, 3.25, 8, 32, 64.5};
    size_t n = N_OF(o);
    ef_accountant *acc = NULL;
    CHECK_OK(ef_accountant_new(&acc, o, n));
    CHECK(ef_accountant_n_orders(acc) == n && ef_accountant_steps(acc) == 0);
    CHECK(memcmp(ef_accountant_orders(acc), o, sizeof o) == 0);
    double e = -1, order = 0;
    CHECK_OK(ef_accountant_epsilon(acc, 1e-5, &e, &order));
    CHECK(e == 0.0); /* nothing spent */

    /* composition: the accountant's RDP is the sum of the parts */
    double r1[N_OF(o)], r2[N_OF(o)];
    CHECK_OK(ef_rdp_compute(0.03, 1.1, 40, o, n, r1));
    CHECK_OK(ef_rdp_compute(0.5, 4.0, 7, o, n, r2));
    CHECK_OK(ef_accountant_step(acc, 0.03, 1.1, 40));
    CHECK_OK(ef_accountant_step(acc, 0.5, 4.0, 7));
    CHECK_OK(ef_accountant_step(acc, 0.0, 0.0, 1000)); /* nobody sampled: free */
    CHECK(ef_accountant_steps(acc) == 1047);
    const double *rdp = ef_accountant_rdp(acc);
    for (size_t k = 0; k < n; k++) CHECK(rdp[k] == r1[k] + r2[k]);
    /* the one-step cache: alternating parameters give the same sums */
    ef_accountant *alt = NULL;
    CHECK_OK(ef_accountant_new(&alt, o, n));
    double r3[N_OF(o)];
    CHECK_OK(ef_rdp_compute(0.03, 1.1, 5, o, n, r3));
    CHECK_OK(ef_accountant_step(alt, 0.03, 1.1, 40));
    CHECK_OK(ef_accountant_step(alt, 0.5, 4.0, 7));
    CHECK_OK(ef_accountant_step(alt, 0.03, 1.1, 5));
    CHECK_OK(ef_accountant_step(alt, 0.03, 1.1, 0));
    for (size_t k = 0; k < n; k++) CHECK(ef_accountant_rdp(alt)[k] == (r1[k] + r2[k]) + r3[k]);
    ef_accountant_free(alt);
    /* TF Privacy rdp_accountant_test.py test_compute_heterogeneous_rdp_
     * different_sampling_probabilities: q = [0, 1], sigma 10, one step each,
     * order 20 -> 0.1 */
    ef_accountant *h = NULL;
    double o20[] = {20};
    CHECK_OK(ef_accountant_new(&h, o20, 1));
    CHECK_OK(ef_accountant_step(h, 0.0, 10.0, 1));
    CHECK_OK(ef_accountant_step(h, 1.0, 10.0, 1));
    CHECK(ef_accountant_rdp(h)[0] == 0.1);
    ef_accountant_free(h);

    /* would_exceed: the same epsilon, bit for bit, as stepping; changes nothing */
    double sum[N_OF(o)];
    memcpy(sum, rdp, sizeof sum);
    double eb = 0, after = 0;
    int ex = -1;
    CHECK_OK(ef_accountant_epsilon(acc, 1e-6, &eb, NULL));
    CHECK_OK(ef_accountant_would_exceed(acc, 0.03, 1.1, 77, 1e-6, eb, &ex, &after));
    CHECK(ex == 1 && after > eb);
    CHECK(memcmp(sum, ef_accountant_rdp(acc), sizeof sum) == 0 && ef_accountant_steps(acc) == 1047);
    CHECK_OK(ef_accountant_would_exceed(acc, 0.03, 1.1, 0, 1e-6, eb, &ex, NULL));
    CHECK(ex == 0);
    CHECK_OK(ef_accountant_step(acc, 0.03, 1.1, 77));
    double stepped = 0;
    CHECK_OK(ef_accountant_epsilon(acc, 1e-6, &stepped, NULL));
    CHECK(memcmp(&stepped, &after, sizeof after) == 0);

    /* the step count stops at 2^53 (exact in JSON); a refused step changes nothing */
    memcpy(sum, ef_accountant_rdp(acc), sizeof sum);
    uint64_t before = ef_accountant_steps(acc);
    CHECK(ef_accountant_step(acc, 0.01, 1.0, (UINT64_C(1) << 53) - before + 1) == EF_ERR_RANGE);
    CHECK(strstr(ef_last_error(), "2^53") != NULL);
    CHECK(ef_accountant_steps(acc) == before);
    CHECK(memcmp(sum, ef_accountant_rdp(acc), sizeof sum) == 0);
    CHECK_OK(ef_accountant_step(acc, 0.01, 1.0, (UINT64_C(1) << 53) - before));
    CHECK(ef_accountant_steps(acc) == UINT64_C(1) << 53);
    ef_accountant_free(acc);
    ef_accountant_free(NULL);
}

/* ---- 6. JSON -------------------------------------------------------------- */

/* the start of a well-formed state */
#define HDR "{\"format\":\"edgefl-rdp-accountant\",\"version\":1,"

static int same_state(const ef_accountant *a, const ef_accountant *b) {
    size_t n = ef_accountant_n_orders(a);
    return n == ef_accountant_n_orders(b) && ef_accountant_steps(a) == ef_accountant_steps(b) &&
           memcmp(ef_accountant_orders(a), ef_accountant_orders(b), n * sizeof(double)) == 0 &&
           memcmp(ef_accountant_rdp(a), ef_accountant_rdp(b), n * sizeof(double)) == 0;
}

static void test_json(void) {
    /* awkward doubles: 17 significant digits needed, tiny and huge values */
    double o[] = {1.0000000000000002, 1 + 1 / 3.0, 2, 7.1, 99999.75};
    ef_accountant *a = NULL, *b = NULL;
    CHECK_OK(ef_accountant_new(&a, o, N_OF(o)));
    CHECK_OK(ef_accountant_step(a, 1e-7, 0.9, 3));
    CHECK_OK(ef_accountant_step(a, 0.37, 2.9, 1234));
    char *s1 = NULL, *s2 = NULL;
    CHECK_OK(ef_accountant_to_json(a, &s1));
    CHECK_OK(ef_accountant_new(&b, NULL, 0)); /* other orders: replaced by the load */
    CHECK_OK(ef_accountant_step(b, 0.37, 2.9, 1)); /* and a cache for other orders */
    CHECK_OK(ef_accountant_load_json(b, s1, strlen(s1)));
    CHECK(same_state(a, b));
    CHECK_OK(ef_accountant_step(a, 0.37, 2.9, 10));
    CHECK_OK(ef_accountant_step(b, 0.37, 2.9, 10));
    CHECK(same_state(a, b));
    ef_free(s1);
    CHECK_OK(ef_accountant_to_json(a, &s1));
    CHECK_OK(ef_accountant_to_json(b, &s2));
    CHECK(s1 && s2 && strcmp(s1, s2) == 0);
    if (s1) printf("  JSON: %.100s...\n", s1);
    ef_free(s2);
    s2 = NULL;

    /* an infinite RDP (sigma = 0) survives as "inf"; whitespace around is fine */
    CHECK_OK(ef_accountant_step(a, 0.5, 0.0, 1));
    ef_free(s1);
    CHECK_OK(ef_accountant_to_json(a, &s1));
    CHECK(s1 && strstr(s1, "\"inf\"") != NULL);
    char padded[4096];
    snprintf(padded, sizeof padded, " \n%s\t\n", s1);
    CHECK_OK(ef_accountant_load_json(b, padded, strlen(padded)));
    CHECK(same_state(a, b));
    double e = 0;
    CHECK_OK(ef_accountant_epsilon(b, 1e-5, &e, NULL));
    CHECK(e == INFINITY);

    /* numbers are written with '.' whatever the program's locale */
    const char *locs[] = {"de_DE.UTF-8", "fr_FR.UTF-8", "de_DE", "C.UTF-8"};
    const char *used = NULL;
    for (size_t k = 0; k < N_OF(locs) && !used; k++)
        if (setlocale(LC_NUMERIC, locs[k]) && localeconv()->decimal_point[0] == ',') used = locs[k];
    if (used) {
        CHECK_OK(ef_accountant_to_json(a, &s2));
        CHECK(s2 && strcmp(s1, s2) == 0);
        CHECK_OK(ef_accountant_load_json(b, s1, strlen(s1)));
        CHECK(same_state(a, b));
        ef_free(s2);
        s2 = NULL;
        setlocale(LC_NUMERIC, "C");
    } else {
        printf("  (no comma-decimal locale installed: locale check skipped)\n");
    }
    ef_free(s1);

    /* malformed or inconsistent: EF_ERR_FORMAT, a message, b unchanged */
    CHECK_OK(ef_accountant_to_json(b, &s1));
    static const char *bad[] = {
        "",
        "{",
        "[]",
        "null",
        "{}",
        HDR "\"steps\":0,\"orders\":[2],\"rdp\":[0]} x",
        "{\"format\":\"other\",\"version\":1,\"steps\":0,\"orders\":[2],\"rdp\":[0]}",
        "{\"format\":\"edgefl-rdp-accountant\",\"version\":2,\"steps\":0,\"orders\":[2],"
        "\"rdp\":[0]}",
        HDR "\"orders\":[2],\"rdp\":[0]}",
        HDR "\"steps\":0,\"orders\":[2],\"rdp\":[0],\"x\":1}",
        HDR "\"steps\":0,\"steps\":0,\"orders\":[2],\"rdp\":[0]}",
        HDR "\"steps\":0,\"orders\":2,\"rdp\":[0]}",
        HDR "\"steps\":0,\"orders\":[2,3],\"rdp\":[0]}",
        HDR "\"steps\":0,\"orders\":[],\"rdp\":[]}",
        HDR "\"steps\":0,\"orders\":[1],\"rdp\":[0]}",
        HDR "\"steps\":0,\"orders\":[1e9],\"rdp\":[0]}",
        HDR "\"steps\":0,\"orders\":[\"inf\"],\"rdp\":[0]}",
        HDR "\"steps\":0,\"orders\":[2],\"rdp\":[-1]}",
        HDR "\"steps\":0,\"orders\":[2],\"rdp\":[\"nan\"]}",
        HDR "\"steps\":0,\"orders\":[2],\"rdp\":[null]}",
        HDR "\"steps\":-1,\"orders\":[2],\"rdp\":[0]}",
        HDR "\"steps\":1.5,\"orders\":[2],\"rdp\":[0]}",
        HDR "\"steps\":9007199254740994,\"orders\":[2],\"rdp\":[0]}",
        HDR "\"steps\":\"3\",\"orders\":[2],\"rdp\":[0]}",
    };
    for (size_t k = 0; k < N_OF(bad); k++) {
        ef_clear_error();
        ef_status st = ef_accountant_load_json(b, bad[k], strlen(bad[k]));
        CHECK_MSG(st == EF_ERR_FORMAT && ef_last_error()[0], "case %zu: %s (%s)", k,
                  ef_strerror(st), bad[k]);
        CHECK_OK(ef_accountant_to_json(b, &s2));
        CHECK_MSG(s1 && s2 && strcmp(s1, s2) == 0, "case %zu changed the accountant", k);
        ef_free(s2);
        s2 = NULL;
    }
    /* a NUL byte inside, a truncated text */
    const char nul[] = "{\"format\":\"edgefl-rdp-accountant\"\0}";
    CHECK(ef_accountant_load_json(b, nul, sizeof nul - 1) == EF_ERR_FORMAT);
    CHECK(ef_accountant_load_json(b, s1, strlen(s1) / 2) == EF_ERR_FORMAT);
    /* the largest exact step count loads */
    const char *max =
        HDR "\"steps\":9007199254740992,"
        "\"orders\":[2],\"rdp\":[0.5]}";
    CHECK_OK(ef_accountant_load_json(b, max, strlen(max)));
    CHECK(ef_accountant_steps(b) == UINT64_C(1) << 53 && ef_accountant_rdp(b)[0] == 0.5);
    CHECK(ef_accountant_load_json(b, NULL, 0) == EF_ERR_INVALID);
    CHECK(ef_accountant_load_json(NULL, max, strlen(max)) == EF_ERR_INVALID);
    ef_free(s1);
    ef_accountant_free(a);
    ef_accountant_free(b);
}

/* ---- 7. bad arguments ----------------------------------------------------- */

static void expect_invalid(ef_status st, const char *what, const char *word) {
    CHECK_MSG(st == EF_ERR_INVALID, "%s: %s", what, ef_strerror(st));
    CHECK_MSG(strstr(ef_last_error(), word) != NULL, "%s: message '%s' lacks '%s'", what,
              ef_last_error(), word);
}

static void test_bad_args(void) {
    double o[] = {2, 4}, r[2] = {-7, -7};
    double bad_q[] = {-0.1, 1.1, NAN, INFINITY};
    for (size_t k = 0; k < N_OF(bad_q); k++)
        expect_invalid(ef_rdp_compute(bad_q[k], 1, 1, o, 2, r), "q", "q =");
    double bad_s[] = {-1, NAN, INFINITY, 1e101};
    for (size_t k = 0; k < N_OF(bad_s); k++)
        expect_invalid(ef_rdp_compute(0.1, bad_s[k], 1, o, 2, r), "sigma", "sigma");
    double bad_o[][2] = {{1.0, 2}, {2, 0.5}, {2, NAN}, {INFINITY, 2}, {2, 1e6}};
    for (size_t k = 0; k < N_OF(bad_o); k++)
        expect_invalid(ef_rdp_compute(0.1, 1, 1, bad_o[k], 2, r), "order", "order");
    expect_invalid(ef_rdp_compute(0.1, 1, 1, NULL, 2, r), "NULL orders", "no RDP orders");
    expect_invalid(ef_rdp_compute(0.1, 1, 1, o, 0, r), "no orders", "no RDP orders");
    expect_invalid(ef_rdp_compute(0.1, 1, 1, o, 2, NULL), "NULL out", "NULL");
    CHECK(r[0] == -7 && r[1] == -7); /* outputs untouched */

    double rdp[] = {0.1, 0.2}, e = -7, order = -7;
    double bad_d[] = {0, 1, -1e-5, NAN, 2};
    for (size_t k = 0; k < N_OF(bad_d); k++)
        expect_invalid(ef_rdp_epsilon(o, rdp, 2, bad_d[k], &e, &order), "delta", "delta");
    double bad_r[][2] = {{-0.1, 0.2}, {0.1, NAN}};
    for (size_t k = 0; k < N_OF(bad_r); k++)
        expect_invalid(ef_rdp_epsilon(o, bad_r[k], 2, 1e-5, &e, &order), "rdp", "RDP value");
    expect_invalid(ef_rdp_epsilon(o, rdp, 0, 1e-5, &e, &order), "no orders", "no RDP orders");
    expect_invalid(ef_rdp_epsilon(bad_o[0], rdp, 2, 1e-5, &e, &order), "order", "order");
    expect_invalid(ef_rdp_epsilon(o, rdp, 2, 1e-5, NULL, &order), "NULL eps", "NULL");
    CHECK(e == -7 && order == -7);

    uint64_t t = 12345;
    double bad_t[] = {-1, NAN, INFINITY};
    for (size_t k = 0; k < N_OF(bad_t); k++)
        expect_invalid(ef_rdp_max_steps(0.1, 1, NULL, 0, 1e-5, bad_t[k], 10, &t), "target",
                       "target epsilon");
    expect_invalid(ef_rdp_max_steps(2, 1, NULL, 0, 1e-5, 1, 10, &t), "q", "q =");
    expect_invalid(ef_rdp_max_steps(0.1, 1, NULL, 0, 0, 1, 10, &t), "delta", "delta");
    expect_invalid(ef_rdp_max_steps(0.1, 1, o, 0, 1e-5, 1, 10, &t), "no orders", "no RDP orders");
    expect_invalid(ef_rdp_max_steps(0.1, 1, NULL, 0, 1e-5, 1, 10, NULL), "NULL out", "NULL");
    CHECK(t == 12345);

    ef_accountant *acc = (ef_accountant *)&t; /* must stay untouched */
    expect_invalid(ef_accountant_new(&acc, bad_o[1], 2), "new order", "order");
    expect_invalid(ef_accountant_new(&acc, o, 0), "new no orders", "no RDP orders");
    expect_invalid(ef_accountant_new(&acc, NULL, 3), "new NULL orders", "no RDP orders");
    expect_invalid(ef_accountant_new(NULL, o, 2), "new NULL out", "NULL");
    CHECK(acc == (ef_accountant *)&t);
    CHECK_OK(ef_accountant_new(&acc, o, 2));
    CHECK_OK(ef_accountant_step(acc, 0.1, 1.0, 5));
    double keep[2];
    memcpy(keep, ef_accountant_rdp(acc), sizeof keep);
    expect_invalid(ef_accountant_step(acc, NAN, 1, 1), "step q", "q =");
    expect_invalid(ef_accountant_step(acc, 0.1, -2, 1), "step sigma", "sigma");
    expect_invalid(ef_accountant_step(NULL, 0.1, 1, 1), "step NULL", "NULL");
    CHECK(memcmp(keep, ef_accountant_rdp(acc), sizeof keep) == 0 && ef_accountant_steps(acc) == 5);
    expect_invalid(ef_accountant_epsilon(acc, 1.5, &e, NULL), "epsilon delta", "delta");
    expect_invalid(ef_accountant_epsilon(acc, 1e-5, NULL, NULL), "epsilon NULL", "NULL");
    int ex = -7;
    expect_invalid(ef_accountant_would_exceed(acc, 0.1, 1, 1, 1e-5, -1, &ex, &e), "would target",
                   "target epsilon");
    expect_invalid(ef_accountant_would_exceed(acc, -1, 1, 1, 1e-5, 1, &ex, &e), "would q", "q =");
    expect_invalid(ef_accountant_max_steps(acc, 0.1, 1, 0, 1, 10, &t), "max delta", "delta");
    CHECK(ex == -7 && e == -7 && t == 12345);
    char *json = (char *)&t;
    expect_invalid(ef_accountant_to_json(NULL, &json), "to_json NULL", "NULL");
    CHECK(json == (char *)&t);
    ef_accountant_free(acc);
}

/* ---- 7b. out of memory ----------------------------------------------------- */

static long g_budget = -1; /* allocations left before failing; -1: unlimited */
static long g_live = 0;

static void *oom_malloc(void *user, size_t size) {
    (void)user;
    if (g_budget == 0) return NULL;
    if (g_budget > 0) g_budget--;
    void *p = malloc(size);
    if (p) g_live++;
    return p;
}
static void *oom_realloc(void *user, void *ptr, size_t size) {
    (void)user;
    if (g_budget == 0) return NULL;
    if (g_budget > 0) g_budget--;
    void *p = realloc(ptr, size);
    if (p && !ptr) g_live++;
    return p;
}
static void oom_free(void *user, void *ptr) {
    (void)user;
    if (ptr) g_live--;
    free(ptr);
}

/* Every allocation failing in turn: EF_ERR_NOMEM, nothing changed, no leak. */
static void test_oom(void) {
    static const ef_allocator counting = {oom_malloc, oom_realloc, oom_free, NULL};
    ef_set_allocator(&counting);
    ef_accountant *a = NULL;
    CHECK_OK(ef_accountant_new(&a, NULL, 0));
    CHECK_OK(ef_accountant_step(a, 0.01, 1.0, 100));
    char *text = NULL;
    CHECK_OK(ef_accountant_to_json(a, &text));
    long base = g_live;
    int failures = 0;
    for (long k = 0; k < 4; k++) {
        ef_accountant *b = (ef_accountant *)&g_budget;
        g_budget = k;
        ef_status st = ef_accountant_new(&b, NULL, 0);
        g_budget = -1;
        if (st == EF_OK) {
            ef_accountant_free(b);
        } else {
            failures++;
            CHECK(st == EF_ERR_NOMEM && b == (ef_accountant *)&g_budget);
        }
        CHECK(g_live == base);

        char *t2 = (char *)&g_budget;
        g_budget = k;
        st = ef_accountant_to_json(a, &t2);
        g_budget = -1;
        if (st == EF_OK) ef_free(t2);
        else CHECK(st == EF_ERR_NOMEM && t2 == (char *)&g_budget);
        CHECK(g_live == base);

        uint64_t t = 77;
        g_budget = k;
        st = ef_rdp_max_steps(0.01, 1.0, NULL, 0, 1e-5, 2.0, UINT64_MAX, &t);
        g_budget = -1;
        CHECK(st == EF_OK ? t > 0 : st == EF_ERR_NOMEM && t == 77);
        CHECK(g_live == base);

        ef_accountant *c = NULL;
        double o[] = {2, 3};
        CHECK_OK(ef_accountant_new(&c, o, 2));
        g_budget = k;
        st = ef_accountant_load_json(c, text, strlen(text));
        g_budget = -1;
        if (st == EF_OK) CHECK(same_state(a, c));
        else CHECK(st == EF_ERR_NOMEM && ef_accountant_n_orders(c) == 2);
        ef_accountant_free(c);
        CHECK(g_live == base);
    }
    CHECK(failures == 2); /* the handle and its arrays */
    ef_free(text);
    ef_accountant_free(a);
    CHECK(g_live == 0);
    ef_set_allocator(NULL);
}

/* ---- 8. the Python reference ------------------------------------------- */

static void test_reference(void) {
    const char *py = getenv("EDGEFL_PYTHON");
    if (!py || !*py) py = "/usr/bin/python3";
    if (access(py, X_OK) != 0) {
        printf("  Python comparison skipped: %s not found\n", py);
        return;
    }
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' '%s/tests/privacy/rdp_ref.py'", py, EF_SOURCE_DIR);
    FILE *f = popen(cmd, "r");
    if (!f) {
        printf("  Python comparison skipped: cannot run %s\n", py);
        return;
    }
    char line[512];
    int cases = 0, bad_lines = 0;
    double worst = 0, worst_at[3] = {0};
    while (fgets(line, sizeof line, f)) {
        double q, s, a, want, got;
        char *p = line;
        if (strncmp(p, "rdp ", 4) != 0) {
            bad_lines++;
            continue;
        }
        p += 4;
        q = strtod(p, &p);
        s = strtod(p, &p);
        a = strtod(p, &p);
        want = strtod(p, &p);
        if (ef_rdp_compute(q, s, 1, &a, 1, &got) != EF_OK) {
            bad_lines++;
            continue;
        }
        double rel = fabs(got - want) / want;
        CHECK_MSG(rel <= 1e-8, "q %g sigma %g order %g: %.15g, reference %.15g", q, s, a, got,
                  want);
        if (!(rel <= worst)) {
            worst = rel;
            worst_at[0] = q, worst_at[1] = s, worst_at[2] = a;
        }
        cases++;
    }
    int rc = pclose(f);
    int code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    if (code == 127 && cases == 0) {
        printf("  Python comparison skipped: %s cannot run the script\n", py);
        return;
    }
    CHECK_MSG(code == 0 && bad_lines == 0, "rdp_ref.py exit code %d, %d bad lines", code,
              bad_lines);
    CHECK_MSG(cases == 428, "%d cases compared", cases);
    printf("  Python reference (numerical integration): %d cases, worst relative difference "
           "%.2g (q %g, sigma %g, order %g)\n",
           cases, worst, worst_at[0], worst_at[1], worst_at[2]);
}

int main(void) {
    test_published_rdp();
    test_published_epsilon();
    test_closed_forms();
    test_monotone();
    test_max_steps();
    test_accountant();
    test_json();
    test_bad_args();
    test_oom();
    test_reference();
    return tu_finish("test_rdp");
}
