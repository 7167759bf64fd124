/*
 * Renyi-DP accountant for the Poisson-subsampled Gaussian mechanism (see
 * include/edgefl/accountant.h for the definitions and the papers).
 *
 * Numerics. RDP at order a is log(A_a) / (a - 1), and for small q or large
 * sigma A_a is 1 plus something tiny (about C(a,2) q^2 (e^(1/sigma^2) - 1)),
 * so computing A_a and then its logarithm, as TensorFlow Privacy and Opacus
 * do, keeps about two correct digits at q = 1e-5, sigma = 100, a = 2 (RDP
 * 1e-14, A_a one ulp-sized step away from 1). This file computes A_a - 1
 * instead, as a sum of terms held in log space, and log(A_a) =
 * log1p(A_a - 1):
 *
 *  - integer a: A_a = sum_i C(a,i) q^i (1-q)^(a-i) e^(i(i-1)/(2 sigma^2)),
 *    and since the binomial weights sum to 1,
 *    A_a - 1 = sum_{i>=2} C(a,i) q^i (1-q)^(a-i) expm1(i(i-1)/(2 sigma^2)):
 *    every term is positive, no cancellation at all.
 *  - fractional a: the two series of Mironov, Talwar, Zhang 2019, Section
 *    3.3, split at z0 = sigma^2 log(1/q - 1) + 1/2 where the two mixture
 *    components cross:
 *      A_a = sum_{i>=0} C(a,i) (1-q)^(a-i) q^i e^((i^2-i)/(2 sigma^2)) Phi((z0-i)/sigma)
 *          + sum_{i>=0} C(a,i) (1-q)^i q^(a-i) e^((j^2-j)/(2 sigma^2)) Phi((j-z0)/sigma),
 *    j = a - i. The first two terms of the first series are nearly
 *    (1-q)^a + a q (1-q)^(a-1), whose difference from 1 is computed
 *    directly (by its power series when a q is small); what remains are
 *    terms of both signs, added into a positive and a negative log-space
 *    sum that are subtracted once at the end.
 *
 * The tail of the fractional series. Multiplying out, the i-th term of
 * either series is |C(a,i)| (1-q)^a e^(-z0^2/(2 sigma^2)) R(x_i) / sqrt(2 pi),
 * with R the Mills ratio and x_i = (i - z0)/sigma or (i - a + z0)/sigma.
 * For i > a, |C(a,i)| is a Beta integral (a moment sequence in i) and
 * R(x_i) = int_0^inf e^(-x_i t - t^2/2) dt is one too, so from there on the
 * terms form an alternating series whose magnitudes are a moment sequence.
 * Summed directly it converges only like a power of i (q = 0.5,
 * sigma = 100, a = 1.1 needs millions of terms for 10 digits; the reference
 * code stops at terms below e^-30 instead); the acceleration of Cohen,
 * Rodriguez Villegas and Zagier gets 24 digits from 32 terms.
 *
 * Accuracy. The logarithm of each term is a sum of parts that can be large
 * (i log q, i^2 / (2 sigma^2), ...), so each term carries a rounding error
 * of about DBL_EPSILON times their magnitude; the fractional sum tracks a
 * bound on the total. Where the positive and negative parts cancel so far
 * that fewer than 20 good bits would be left (sigma above about 1e5, or
 * orders within about 1e-3 of 1 at large sigma), the result is replaced by
 * a rigorous upper bound: log(A_a) is convex in a, so the chord between
 * the neighbouring integer orders (computed without cancellation) lies
 * above it. No result exceeds a / (2 sigma^2), the RDP without sampling.
 * Against numerical integration of the definition (tests/privacy/
 * rdp_ref.py) the series agree to 1e-10 relative.
 */
#include <cjson/cJSON.h>
#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core_internal.h"
#include "edgefl/accountant.h"

#define LOG_SQRT_PI 0.57236494292470008707 /* log(sqrt(pi)) */
#define SQRT2 1.41421356237309504880
#define MAX_SIGMA 1e100      /* 2 sigma^2 stays finite */
#define MAX_STEPS (UINT64_C(1) << 53) /* the largest count a JSON number holds exactly */

/* ---- log-space arithmetic ---------------------------------------------- */

/* A sum of positive numbers s * e^m, so that terms of any magnitude add
 * without overflow: one exp per term, plain summation error otherwise. */
typedef struct lsum {
    double m, s;
} lsum;

static const lsum LSUM_ZERO = {-INFINITY, 0.0};

static void lsum_add(lsum *a, double log_term) {
    if (log_term == -INFINITY) return;
    if (log_term > a->m) {
        a->s = a->s * exp(a->m - log_term) + 1.0;
        a->m = log_term;
    } else {
        a->s += exp(log_term - a->m);
    }
}

static double lsum_log(const lsum *a) { return a->s > 0 ? a->m + log(a->s) : -INFINITY; }

/* log(e^lp - e^ln) for lp > ln. */
static double log_sub(double lp, double ln) {
    if (ln == -INFINITY) return lp;
    return lp + log1p(-exp(ln - lp));
}

/* log(1 + e^l). */
static double log1p_exp(double l) { return l > 0 ? l + log1p(exp(-l)) : log1p(exp(l)); }

/* log(e^x - 1) for x >= 0. */
static double log_expm1(double x) { return x > 40 ? x + log1p(-exp(-x)) : log(expm1(x)); }

/* log(Phi_c(x)) = log(P(N(0,1) > x)), accurate over the whole line: the
 * complement near 1, erfc in the middle, and beyond x = 26 sqrt(2) (where
 * erfc heads for underflow) its asymptotic series
 * erfc(y) = e^(-y^2) / (y sqrt(pi)) (1 - 1/(2y^2) + 3/(2y^2)^2 - ...),
 * whose sixth term is below 1e-15 there. */
static double log_normal_upper(double x) {
    if (x < -1.0) return log1p(-0.5 * erfc(-x / SQRT2));
    double y = x / SQRT2;
    if (y < 26.0) return log(0.5 * erfc(y));
    double r = 1.0 / (2.0 * y * y);
    double series = 1.0 - r * (1.0 - 3.0 * r * (1.0 - 5.0 * r * (1.0 - 7.0 * r * (1.0 - 9.0 * r))));
    return -y * y - log(y) - LOG_SQRT_PI + log(series) - M_LN2;
}

/* log |C(a, i)| and its sign for i = 0, 1, 2, ... in turn, from
 * C(a, i+1) = C(a, i) (a - i) / (i + 1), the logarithms added with Kahan's
 * compensated summation: a few units in the last place for every i, where
 * differences of lgamma values lose digits to cancellation at large a (and
 * lgamma's sign is not thread-safe). */
typedef struct binom_iter {
    double a, i, lc, comp;
    int sign;
} binom_iter;

static void binom_start(binom_iter *b, double a) {
    b->a = a;
    b->i = 0.0;
    b->lc = b->comp = 0.0;
    b->sign = 1;
}

/* From i to i + 1. */
static void binom_next(binom_iter *b) {
    double f = b->a - b->i;
    b->i += 1.0;
    if (f < 0) b->sign = -b->sign;
    double y = (log(fabs(f)) - log(b->i)) - b->comp;
    double t = b->lc + y;
    b->comp = (t - b->lc) - y;
    b->lc = t;
}

/* ---- A_a - 1 ------------------------------------------------------------- */

/* log(A_a - 1) for integer a >= 2, 0 < q < 1, sigma > 0. */
static double log_am1_int(double q, double sigma, double a) {
    double lq = log(q), l1q = log1p(-q), s2 = 2.0 * sigma * sigma;
    lsum acc = LSUM_ZERO;
    binom_iter b;
    binom_start(&b, a);
    binom_next(&b);
    binom_next(&b);
    for (;;) {
        double i = b.i;
        lsum_add(&acc, b.lc + i * lq + (a - i) * l1q + log_expm1(i * (i - 1.0) / s2));
        if (i >= a) break;
        binom_next(&b);
    }
    return lsum_log(&acc);
}

/* log(A_a) for integer a >= 1. */
static double log_a_int(double q, double sigma, double a) {
    return a == 1.0 ? 0.0 : log1p_exp(log_am1_int(q, sigma, a));
}

/* log((1-q)^(a-1) (1 + (a-1) q)), *err its absolute rounding error, without
 * the cancellation of its two parts: the logarithm is
 * sum_{k>=2} q^k/k ((-1)^(k+1) r^k - r) with r = a - 1 (the k = 1 terms
 * cancel exactly), summed directly while r q and q are small. */
static double log_head(double q, double a, double *err) {
    double r = a - 1.0;
    if (r * q <= 0.125 && q <= 0.125) {
        double l = 0.0, qk = q, rk = r; /* q^k, (-1)^(k+1) r^k */
        for (int k = 2; k < 80; k++) {
            qk *= q;
            rk *= -r;
            double t = qk / k * (rk - r);
            l += t;
            if (fabs(t) <= 1e-18 * fabs(l)) break;
        }
        *err = 4.0 * DBL_EPSILON * fabs(l);
        return l;
    }
    double p1 = r * log1p(-q), p2 = log1p(r * q);
    *err = DBL_EPSILON * (fabs(p1) + fabs(p2));
    return p1 + p2;
}

/* The signed sum of the fractional series: positive and negative parts,
 * and a bound on the rounding error of the terms added so far (each term's
 * logarithm is a sum of parts; its error is about DBL_EPSILON times the sum
 * of their magnitudes, which can be far larger than the term). */
typedef struct signed_sum {
    lsum pos, neg, err;
    double n_terms;
} signed_sum;

/* Adds sign * e^l with an absolute error of about e^l_err. */
static void ssum_add_err(signed_sum *s, int sign, double l, double l_err) {
    lsum_add(sign > 0 ? &s->pos : &s->neg, l);
    lsum_add(&s->err, l_err);
    s->n_terms += 1.0;
}

/* Adds sign * e^l, whose logarithm was computed from parts of total
 * magnitude `mag`. */
static void ssum_add(signed_sum *s, int sign, double l, double mag) {
    ssum_add_err(s, sign, l, l + log(DBL_EPSILON * (mag + 1.0)));
}

/* The fractional-order series at one (q, sigma, a). */
typedef struct frac_series {
    double a, sigma, lq, l1q, s2, z0;
} frac_series;

/* log |i-th term| of the first series (l0) and of the second (l1), given
 * lc = log |C(a, i)|; m0 and m1 receive the magnitudes of their parts. */
static void series_terms(const frac_series *f, double i, double lc, double *l0, double *l1,
                         double *m0, double *m1) {
    double j = f->a - i;
    double p0[5] = {lc, j * f->l1q, i * f->lq, i * (i - 1.0) / f->s2,
                    log_normal_upper((i - f->z0) / f->sigma)};
    double p1[5] = {lc, i * f->l1q, j * f->lq, j * (j - 1.0) / f->s2,
                    log_normal_upper((f->z0 - j) / f->sigma)};
    *l0 = *l1 = *m0 = *m1 = 0.0;
    for (int k = 0; k < 5; k++) {
        *l0 += p0[k];
        *l1 += p1[k];
        *m0 += fabs(p0[k]);
        *m1 += fabs(p1[k]);
    }
}

/* Bits the fractional series must keep after the cancellation of its
 * positive and negative parts; below, the result is not trusted. */
#define MIN_GOOD_BITS 20.0

/* log(A_a - 1) for fractional a > 1, 0 < q < 1, 0 < sigma; NaN when the
 * positive and negative parts cancel so far that fewer than MIN_GOOD_BITS
 * bits of the difference are left (sigma of about 1e5 and more, where
 * A_a - 1 is about A_a / sigma^2, or large orders at moderate q). */
static double log_am1_frac(double q, double sigma, double a) {
    double lq = log(q), l1q = log1p(-q), s2 = 2.0 * sigma * sigma;
    double z0 = sigma * sigma * (l1q - lq) + 0.5;
    frac_series ser = {a, sigma, lq, l1q, s2, z0};
    signed_sum sum = {LSUM_ZERO, LSUM_ZERO, LSUM_ZERO, 0.0};

    /* i = 0 and 1 of the first series: t_i Phi((z0 - i)/sigma) with
     * t_0 = (1-q)^a, t_1 = a q (1-q)^(a-1). Where Phi is above 1/2 write it
     * as t_i - t_i Phi_c and gather the t_i with the -1 of A_a - 1. */
    double log_t[2] = {a * l1q, log(a) + lq + (a - 1.0) * l1q};
    double mag_t[2] = {fabs(a * l1q), fabs(log(a)) + fabs(lq) + fabs((a - 1.0) * l1q)};
    int use_compl[2] = {z0 >= 0.0, z0 >= 1.0};

    /* head = t_0 + t_1 - 1, t_0 - 1 or -1 as e^x - 1, x with error ex */
    double x = 0.0, ex = 0.0;
    if (use_compl[0] && use_compl[1]) {
        x = log_head(q, a, &ex);
    } else if (use_compl[0]) {
        x = a * l1q;
        ex = DBL_EPSILON * fabs(x);
    } else {
        x = -INFINITY;
    }
    double head = expm1(x);
    if (head != 0.0)
        ssum_add_err(&sum, head > 0 ? 1 : -1, log(fabs(head)),
                     log(exp(x) * ex + DBL_EPSILON * fabs(head)));
    for (int i = 0; i < 2; i++) {
        double ln_i = log_normal_upper((use_compl[i] ? z0 - i : i - z0) / sigma);
        ssum_add(&sum, use_compl[i] ? -1 : 1, log_t[i] + ln_i, mag_t[i] + fabs(ln_i));
    }

    /* terms before the alternating tail, one by one */
    double i_alt = ceil(a) + 1.0;
    binom_iter bi;
    binom_start(&bi, a);
    for (; bi.i < i_alt; binom_next(&bi)) {
        double l0, l1, m0, m1;
        series_terms(&ser, bi.i, bi.lc, &l0, &l1, &m0, &m1);
        ssum_add(&sum, bi.sign, l1, m1);
        if (bi.i >= 2) ssum_add(&sum, bi.sign, l0, m0);
    }
    /* the tail: both series together, sum_k (-1)^k t_k with t_k = |terms
     * at i_alt + k| a moment sequence (the file comment), accelerated by
     * Cohen, Rodriguez Villegas, Zagier 2000, "Convergence acceleration of
     * alternating series", Algorithm 1: error below 2 t_0 / 5.83^n. */
    enum { N_TAIL = 32 };
    int sign0 = bi.sign;
    double log_t0 = 0.0, mag_tail = 0.0;
    double d = pow(3.0 + sqrt(8.0), N_TAIL);
    d = (d + 1.0 / d) / 2.0;
    double b = -1.0, c = -d, tail = 0.0;
    for (int k = 0; k < N_TAIL; k++, binom_next(&bi)) {
        double l0, l1, m0, m1;
        series_terms(&ser, bi.i, bi.lc, &l0, &l1, &m0, &m1);
        double lt = l0 > l1 ? l0 + log1p(exp(l1 - l0)) : l1 + log1p(exp(l0 - l1));
        if (k == 0) log_t0 = lt;
        /* the error of the larger of the two terms; N_TAIL for the sum */
        mag_tail = fmax(mag_tail, (l0 > l1 ? m0 : m1) + N_TAIL);
        c = b - c;
        tail += c * exp(lt - log_t0);
        b = (k + N_TAIL) * (k - N_TAIL) * b / ((k + 0.5) * (k + 1.0));
    }
    tail /= d;
    if (tail > 0.0) ssum_add(&sum, sign0, log_t0 + log(tail), mag_tail);

    double lp = lsum_log(&sum.pos), ln = lsum_log(&sum.neg);
    double l = lp > ln ? log_sub(lp, ln) : -INFINITY;
    /* rounding of the terms, and of adding them up */
    double l_err = lsum_log(&sum.err);
    double l_add = fmax(lp, ln) + log(DBL_EPSILON * sum.n_terms);
    l_err = fmax(l_err, l_add) + M_LN2;
    return l >= l_err + MIN_GOOD_BITS * M_LN2 ? l : NAN;
}

/* RDP of one step at order a; arguments already validated. */
static double rdp_one(double q, double sigma, double a) {
    if (q == 0.0) return 0.0;
    if (sigma == 0.0) return INFINITY;
    double unsampled = a / (2.0 * sigma * sigma);
    /* beyond double range (sigma below 1e-154): the sampled value is too */
    if (q == 1.0 || unsampled == INFINITY) return unsampled;
    double log_a;
    if (a == floor(a)) {
        log_a = log_a_int(q, sigma, a);
    } else {
        double l = log_am1_frac(q, sigma, a);
        if (!isnan(l)) {
            log_a = log1p_exp(l);
        } else {
            /* log A_a is convex in a (a cumulant generating function), so
             * the chord between the neighbouring integer orders, computed
             * without cancellation, bounds it from above */
            double lo = floor(a), t = a - lo;
            log_a = (1.0 - t) * log_a_int(q, sigma, lo) + t * log_a_int(q, sigma, lo + 1.0);
        }
    }
    /* sampling never costs privacy: the unsampled Gaussian mechanism's
     * a / (2 sigma^2) bounds the result (and any rounding above it) */
    return fmin(log_a / (a - 1.0), unsampled);
}

/* ---- argument checks ------------------------------------------------------ */

static ef_status check_q_sigma(const char *fn, double q, double sigma) {
    if (!(q >= 0.0 && q <= 1.0))
        return ef__fail(EF_ERR_INVALID, "%s: sampling rate q = %g is outside [0, 1]", fn, q);
    if (!(sigma >= 0.0 && sigma <= MAX_SIGMA))
        return ef__fail(EF_ERR_INVALID,
                        "%s: noise multiplier sigma = %g must be finite and >= 0 (at most %g)", fn,
                        sigma, MAX_SIGMA);
    return EF_OK;
}

static ef_status check_orders(const char *fn, const double *orders, size_t n) {
    if (!orders || n == 0) return ef__fail(EF_ERR_INVALID, "%s: no RDP orders given", fn);
    if (n > EF_RDP_MAX_ORDERS)
        return ef__fail(EF_ERR_INVALID, "%s: %zu orders, at most %d allowed", fn, n,
                        EF_RDP_MAX_ORDERS);
    for (size_t k = 0; k < n; k++)
        if (!(orders[k] > 1.0 && orders[k] <= EF_RDP_MAX_ORDER))
            return ef__fail(EF_ERR_INVALID, "%s: order %g (index %zu) is outside (1, %g]", fn,
                            orders[k], k, EF_RDP_MAX_ORDER);
    return EF_OK;
}

static ef_status check_delta(const char *fn, double delta) {
    if (!(delta > 0.0 && delta < 1.0))
        return ef__fail(EF_ERR_INVALID, "%s: delta = %g is outside (0, 1)", fn, delta);
    return EF_OK;
}

static ef_status check_target(const char *fn, double eps_target) {
    if (!(eps_target >= 0.0 && eps_target < INFINITY))
        return ef__fail(EF_ERR_INVALID, "%s: target epsilon %g must be finite and >= 0", fn,
                        eps_target);
    return EF_OK;
}

/* ---- pure functions ------------------------------------------------------- */

/* Opacus's DEFAULT_ALPHAS, with the same rounding (1 + x / 10.0 in double,
 * folded by the compiler as it would be at run time). */
#define O(x) (1.0 + (x) / 10.0)
static const double DEFAULT_ORDERS[EF_RDP_N_DEFAULT_ORDERS] = {
    O(1), O(2), O(3), O(4), O(5), O(6), O(7), O(8), O(9), O(10), O(11), O(12),
    O(13), O(14), O(15), O(16), O(17), O(18), O(19), O(20), O(21), O(22), O(23), O(24),
    O(25), O(26), O(27), O(28), O(29), O(30), O(31), O(32), O(33), O(34), O(35), O(36),
    O(37), O(38), O(39), O(40), O(41), O(42), O(43), O(44), O(45), O(46), O(47), O(48),
    O(49), O(50), O(51), O(52), O(53), O(54), O(55), O(56), O(57), O(58), O(59), O(60),
    O(61), O(62), O(63), O(64), O(65), O(66), O(67), O(68), O(69), O(70), O(71), O(72),
    O(73), O(74), O(75), O(76), O(77), O(78), O(79), O(80), O(81), O(82), O(83), O(84),
    O(85), O(86), O(87), O(88), O(89), O(90), O(91), O(92), O(93), O(94), O(95), O(96),
    O(97), O(98), O(99), 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0, 19.0, 20.0,
    21.0, 22.0, 23.0, 24.0, 25.0, 26.0, 27.0, 28.0, 29.0, 30.0, 31.0, 32.0,
    33.0, 34.0, 35.0, 36.0, 37.0, 38.0, 39.0, 40.0, 41.0, 42.0, 43.0, 44.0,
    45.0, 46.0, 47.0, 48.0, 49.0, 50.0, 51.0, 52.0, 53.0, 54.0, 55.0, 56.0,
    57.0, 58.0, 59.0, 60.0, 61.0, 62.0, 63.0};
#undef O

static const double *default_orders(void) { return DEFAULT_ORDERS; }

const double *ef_rdp_default_orders(size_t *n) {
    if (n) *n = EF_RDP_N_DEFAULT_ORDERS;
    return default_orders();
}

/* One-step RDP at every order into out[0..n); arguments validated. */
static void rdp_one_all(double q, double sigma, const double *orders, size_t n, double *out) {
    for (size_t k = 0; k < n; k++) out[k] = rdp_one(q, sigma, orders[k]);
}

/* steps * r, with 0 steps spending nothing even where r is infinite. Not
 * inlined: the build contracts a * b + c into fused multiply-adds
 * (-ffp-contract=fast), and rdp + steps * r must round the same way in
 * ef_accountant_step and in the epsilon forecasts that promise its result. */
__attribute__((noinline)) static double times_steps(uint64_t steps, double r) {
    return steps ? (double)steps * r : 0.0;
}

ef_status ef_rdp_compute(double q, double sigma, uint64_t steps, const double *orders,
                         size_t n_orders, double *rdp_out) {
    static const char *fn = "ef_rdp_compute";
    ef_status st = check_q_sigma(fn, q, sigma);
    if (st == EF_OK) st = check_orders(fn, orders, n_orders);
    if (st != EF_OK) return st;
    if (!rdp_out) return ef__fail(EF_ERR_INVALID, "%s: rdp_out is NULL", fn);
    for (size_t k = 0; k < n_orders; k++)
        rdp_out[k] = times_steps(steps, rdp_one(q, sigma, orders[k]));
    return EF_OK;
}

/* Epsilon from the RDP value r at order a (see the header): the Balle et al.
 * bound, 0 where the KL bound already gives delta, clamped at 0. */
static double eps_from_rdp(double a, double r, double delta, double log_delta) {
    if (r == INFINITY) return INFINITY;
    if (delta * delta + expm1(-r) > 0.0) return 0.0;
    double e = r + log1p(-1.0 / a) - (log_delta + log(a)) / (a - 1.0);
    return e > 0.0 ? e : 0.0;
}

/* Minimum over orders of the epsilon of base[k] + steps * r1[k] (base may be
 * NULL: zeros). Arguments validated. */
static void eps_min(const double *orders, size_t n, const double *base, const double *r1,
                    uint64_t steps, double delta, double *eps, double *order) {
    double log_delta = log(delta), best = INFINITY, best_order = NAN;
    for (size_t k = 0; k < n; k++) {
        double r = times_steps(steps, r1[k]);
        if (base) r = base[k] + r;
        double e = eps_from_rdp(orders[k], r, delta, log_delta);
        if (e < best) {
            best = e;
            best_order = orders[k];
        }
    }
    *eps = best;
    if (order) *order = best_order;
}

ef_status ef_rdp_epsilon(const double *orders, const double *rdp, size_t n, double delta,
                         double *eps, double *best_order) {
    static const char *fn = "ef_rdp_epsilon";
    ef_status st = check_orders(fn, orders, n);
    if (st == EF_OK) st = check_delta(fn, delta);
    if (st != EF_OK) return st;
    if (!rdp || !eps) return ef__fail(EF_ERR_INVALID, "%s: NULL argument", fn);
    for (size_t k = 0; k < n; k++)
        if (!(rdp[k] >= 0.0))
            return ef__fail(EF_ERR_INVALID, "%s: RDP value %g at order %g is negative or NaN", fn,
                            rdp[k], orders[k]);
    eps_min(orders, n, NULL, rdp, 1, delta, eps, best_order);
    return EF_OK;
}

/* Largest T in [0, limit] with eps(base + T r1) <= target. epsilon is
 * non-decreasing in T also in floating point (every operation on the way is
 * monotone), so bisection finds the exact boundary. */
static uint64_t max_steps_search(const double *orders, size_t n, const double *base,
                                 const double *r1, double delta, double target, uint64_t limit) {
    double e;
    eps_min(orders, n, base, r1, limit, delta, &e, NULL);
    if (e <= target) return limit;
    eps_min(orders, n, base, r1, 0, delta, &e, NULL);
    if (e > target) return 0;
    uint64_t lo = 0, hi = limit; /* eps(lo) <= target < eps(hi) */
    while (hi - lo > 1) {
        uint64_t mid = lo + (hi - lo) / 2;
        eps_min(orders, n, base, r1, mid, delta, &e, NULL);
        if (e <= target) lo = mid;
        else hi = mid;
    }
    return lo;
}

ef_status ef_rdp_max_steps(double q, double sigma, const double *orders, size_t n_orders,
                           double delta, double eps_target, uint64_t limit, uint64_t *steps_out) {
    static const char *fn = "ef_rdp_max_steps";
    if (!orders && n_orders == 0) {
        orders = default_orders();
        n_orders = EF_RDP_N_DEFAULT_ORDERS;
    }
    ef_status st = check_q_sigma(fn, q, sigma);
    if (st == EF_OK) st = check_orders(fn, orders, n_orders);
    if (st == EF_OK) st = check_delta(fn, delta);
    if (st == EF_OK) st = check_target(fn, eps_target);
    if (st != EF_OK) return st;
    if (!steps_out) return ef__fail(EF_ERR_INVALID, "%s: steps_out is NULL", fn);
    double *r1 = ef_malloc(n_orders * sizeof *r1);
    if (!r1) return EF_ERR_NOMEM;
    rdp_one_all(q, sigma, orders, n_orders, r1);
    *steps_out = max_steps_search(orders, n_orders, NULL, r1, delta, eps_target, limit);
    ef_free(r1);
    return EF_OK;
}

/* ---- the streaming accountant --------------------------------------------- */

struct ef_accountant {
    size_t n;
    uint64_t steps;
    double *buf;    /* 3n doubles: orders, rdp, cache */
    double *orders; /* buf */
    double *rdp;    /* buf + n */
    /* the one-step RDP of the last (q, sigma) asked for: a server asks for
     * the same pair every round. Not part of the accountant's value (the
     * functions taking a const accountant update it too). */
    double *cache; /* buf + 2n */
    double cache_q, cache_sigma;
    int cache_ok;
};

/* Points the accountant at a block of 3n doubles (orders first). */
static void acc_set_buf(ef_accountant *acc, double *buf, size_t n) {
    acc->n = n;
    acc->buf = acc->orders = buf;
    acc->rdp = buf + n;
    acc->cache = buf + 2 * n;
    acc->cache_ok = 0;
}

static ef_status check_acc(const char *fn, const ef_accountant *acc) {
    if (!acc) return ef__fail(EF_ERR_INVALID, "%s: accountant is NULL", fn);
    return EF_OK;
}

ef_status ef_accountant_new(ef_accountant **out, const double *orders, size_t n_orders) {
    static const char *fn = "ef_accountant_new";
    if (!out) return ef__fail(EF_ERR_INVALID, "%s: out is NULL", fn);
    if (!orders && n_orders == 0) {
        orders = default_orders();
        n_orders = EF_RDP_N_DEFAULT_ORDERS;
    }
    ef_status st = check_orders(fn, orders, n_orders);
    if (st != EF_OK) return st;
    ef_accountant *acc = ef_calloc(1, sizeof *acc);
    double *buf = ef_calloc(3 * n_orders, sizeof *buf);
    if (!acc || !buf) {
        ef_free(acc);
        ef_free(buf);
        return EF_ERR_NOMEM;
    }
    acc_set_buf(acc, buf, n_orders);
    memcpy(acc->orders, orders, n_orders * sizeof *orders);
    *out = acc;
    return EF_OK;
}

void ef_accountant_free(ef_accountant *acc) {
    if (!acc) return;
    ef_free(acc->buf);
    ef_free(acc);
}

/* The one-step RDP of (q, sigma) at the accountant's orders, computed once
 * per pair; checks the arguments. */
static ef_status acc_one_step(const char *fn, const ef_accountant *acc, double q, double sigma,
                              const double **out) {
    ef_status st = check_acc(fn, acc);
    if (st == EF_OK) st = check_q_sigma(fn, q, sigma);
    if (st != EF_OK) return st;
    ef_accountant *mut = (ef_accountant *)acc; /* the cache only */
    if (!mut->cache_ok || mut->cache_q != q || mut->cache_sigma != sigma) {
        rdp_one_all(q, sigma, mut->orders, mut->n, mut->cache);
        mut->cache_q = q;
        mut->cache_sigma = sigma;
        mut->cache_ok = 1;
    }
    *out = mut->cache;
    return EF_OK;
}

ef_status ef_accountant_step(ef_accountant *acc, double q, double sigma, uint64_t steps) {
    static const char *fn = "ef_accountant_step";
    const double *r1 = NULL;
    ef_status st = acc_one_step(fn, acc, q, sigma, &r1);
    if (st != EF_OK) return st;
    if (steps > MAX_STEPS - acc->steps) /* acc->steps <= MAX_STEPS always */
        return ef__fail(EF_ERR_RANGE, "%s: %llu + %llu steps would pass 2^53", fn,
                        (unsigned long long)acc->steps, (unsigned long long)steps);
    /* the values ef_rdp_compute(q, sigma, steps) gives, added */
    for (size_t k = 0; k < acc->n; k++) acc->rdp[k] += times_steps(steps, r1[k]);
    acc->steps += steps;
    return EF_OK;
}

ef_status ef_accountant_epsilon(const ef_accountant *acc, double delta, double *eps,
                                double *order) {
    static const char *fn = "ef_accountant_epsilon";
    ef_status st = check_acc(fn, acc);
    if (st == EF_OK) st = check_delta(fn, delta);
    if (st != EF_OK) return st;
    if (!eps) return ef__fail(EF_ERR_INVALID, "%s: eps is NULL", fn);
    eps_min(acc->orders, acc->n, NULL, acc->rdp, 1, delta, eps, order);
    return EF_OK;
}

ef_status ef_accountant_would_exceed(const ef_accountant *acc, double q, double sigma,
                                     uint64_t steps, double delta, double eps_target,
                                     int *exceeds, double *eps_after) {
    static const char *fn = "ef_accountant_would_exceed";
    ef_status st = check_acc(fn, acc);
    if (st == EF_OK) st = check_delta(fn, delta);
    if (st == EF_OK) st = check_target(fn, eps_target);
    const double *r1 = NULL;
    if (st == EF_OK) st = acc_one_step(fn, acc, q, sigma, &r1);
    if (st != EF_OK) return st;
    /* eps_min forms rdp[k] + steps * r1[k]: the sums ef_accountant_step stores */
    double e;
    eps_min(acc->orders, acc->n, acc->rdp, r1, steps, delta, &e, NULL);
    if (exceeds) *exceeds = e > eps_target;
    if (eps_after) *eps_after = e;
    return EF_OK;
}

ef_status ef_accountant_max_steps(const ef_accountant *acc, double q, double sigma, double delta,
                                  double eps_target, uint64_t limit, uint64_t *steps_out) {
    static const char *fn = "ef_accountant_max_steps";
    ef_status st = check_acc(fn, acc);
    if (st == EF_OK) st = check_delta(fn, delta);
    if (st == EF_OK) st = check_target(fn, eps_target);
    if (st == EF_OK && !steps_out) st = ef__fail(EF_ERR_INVALID, "%s: steps_out is NULL", fn);
    const double *r1 = NULL;
    if (st == EF_OK) st = acc_one_step(fn, acc, q, sigma, &r1);
    if (st != EF_OK) return st;
    *steps_out = max_steps_search(acc->orders, acc->n, acc->rdp, r1, delta, eps_target, limit);
    return EF_OK;
}

size_t ef_accountant_n_orders(const ef_accountant *acc) { return acc ? acc->n : 0; }
const double *ef_accountant_orders(const ef_accountant *acc) { return acc ? acc->orders : NULL; }
const double *ef_accountant_rdp(const ef_accountant *acc) { return acc ? acc->rdp : NULL; }
uint64_t ef_accountant_steps(const ef_accountant *acc) { return acc ? acc->steps : 0; }

/* ---- JSON ----------------------------------------------------------------- */

#define JSON_FORMAT "edgefl-rdp-accountant"
#define JSON_VERSION 1

/* Shortest of %.15g..%.17g that reads back as the same double (numbers are
 * printed under the "C" locale, see acc_to_json). */
static int fmt_exact(char *out, size_t cap, double v) {
    int len = 0;
    for (int prec = 15; prec <= 17; prec++) {
        len = snprintf(out, cap, "%.*g", prec, v);
        if (strtod(out, NULL) == v) break;
    }
    return len;
}

static ef_status acc_to_json(const ef_accountant *acc, char **json) {
    /* per number at most 24 characters and a comma */
    size_t cap = 160 + 2 * 26 * acc->n, len = 0;
    char *s = ef_malloc(cap);
    if (!s) return EF_ERR_NOMEM;
    len += (size_t)snprintf(s + len, cap - len,
                            "{\"format\":\"" JSON_FORMAT "\",\"version\":%d,\"steps\":%llu,"
                            "\"orders\":[",
                            JSON_VERSION, (unsigned long long)acc->steps);
    for (size_t k = 0; k < acc->n; k++) {
        if (k) s[len++] = ',';
        len += (size_t)fmt_exact(s + len, cap - len, acc->orders[k]);
    }
    len += (size_t)snprintf(s + len, cap - len, "],\"rdp\":[");
    for (size_t k = 0; k < acc->n; k++) {
        if (k) s[len++] = ',';
        if (acc->rdp[k] == INFINITY) len += (size_t)snprintf(s + len, cap - len, "\"inf\"");
        else len += (size_t)fmt_exact(s + len, cap - len, acc->rdp[k]);
    }
    snprintf(s + len, cap - len, "]}");
    *json = s;
    return EF_OK;
}

ef_status ef_accountant_to_json(const ef_accountant *acc, char **json) {
    static const char *fn = "ef_accountant_to_json";
    ef_status st = check_acc(fn, acc);
    if (st != EF_OK) return st;
    if (!json) return ef__fail(EF_ERR_INVALID, "%s: json is NULL", fn);
    /* "%g" follows LC_NUMERIC; JSON wants a '.' whatever the program's locale */
    locale_t c = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (!c) return ef__fail(EF_ERR_NOMEM, "%s: cannot create the C locale", fn);
    locale_t old = uselocale(c);
    st = acc_to_json(acc, json);
    uselocale(old);
    freelocale(c);
    return st;
}

/* Reads one number array of the JSON state; "inf" strings only where
 * allow_inf. Returns 0 and sets the error on a bad element. */
static int json_doubles(const cJSON *arr, const char *key, double *out, size_t n, int allow_inf) {
    size_t k = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        double v;
        if (cJSON_IsNumber(it)) {
            v = it->valuedouble;
        } else if (allow_inf && cJSON_IsString(it) && strcmp(it->valuestring, "inf") == 0) {
            v = INFINITY;
        } else {
            ef__fail(EF_ERR_FORMAT, "accountant JSON: \"%s\"[%zu] is not a number%s", key, k,
                     allow_inf ? " or \"inf\"" : "");
            return 0;
        }
        if (k < n) out[k] = v;
        k++;
    }
    return 1;
}

ef_status ef_accountant_load_json(ef_accountant *acc, const char *json, size_t len) {
    static const char *fn = "ef_accountant_load_json";
    ef_status st = check_acc(fn, acc);
    if (st != EF_OK) return st;
    if (!json) return ef__fail(EF_ERR_INVALID, "%s: json is NULL", fn);
    if (memchr(json, '\0', len))
        return ef__fail(EF_ERR_FORMAT, "accountant JSON: NUL byte inside the text");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    double *buf = NULL;
    if (!root) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        st = ef__fail(EF_ERR_FORMAT, "accountant JSON: parse error at byte %zu", at);
        goto done;
    }
    for (const char *p = end; p < json + len; p++)
        if (!strchr(" \t\r\n", *p)) {
            st = ef__fail(EF_ERR_FORMAT, "accountant JSON: text after the object at byte %zu",
                          (size_t)(p - json));
            goto done;
        }
    if (!cJSON_IsObject(root)) {
        st = ef__fail(EF_ERR_FORMAT, "accountant JSON: not an object");
        goto done;
    }
    static const char *keys[] = {"format", "version", "steps", "orders", "rdp"};
    const cJSON *item[5] = {0};
    for (const cJSON *it = root->child; it; it = it->next) {
        int found = -1;
        for (int k = 0; k < 5; k++)
            if (it->string && strcmp(it->string, keys[k]) == 0) found = k;
        if (found < 0 || item[found]) {
            st = ef__fail(EF_ERR_FORMAT, "accountant JSON: %s key \"%s\"",
                          found < 0 ? "unknown" : "repeated", it->string ? it->string : "");
            goto done;
        }
        item[found] = it;
    }
    for (int k = 0; k < 5; k++)
        if (!item[k]) {
            st = ef__fail(EF_ERR_FORMAT, "accountant JSON: missing \"%s\"", keys[k]);
            goto done;
        }
    if (!cJSON_IsString(item[0]) || strcmp(item[0]->valuestring, JSON_FORMAT) != 0) {
        st = ef__fail(EF_ERR_FORMAT, "accountant JSON: \"format\" is not \"" JSON_FORMAT "\"");
        goto done;
    }
    if (!cJSON_IsNumber(item[1]) || item[1]->valuedouble != JSON_VERSION) {
        st = ef__fail(EF_ERR_FORMAT, "accountant JSON: unsupported \"version\" (this is %d)",
                      JSON_VERSION);
        goto done;
    }
    double steps = cJSON_IsNumber(item[2]) ? item[2]->valuedouble : -1.0;
    if (!(steps >= 0.0 && steps <= (double)MAX_STEPS && steps == floor(steps))) {
        st = ef__fail(EF_ERR_FORMAT,
                      "accountant JSON: \"steps\" is not an integer in [0, 2^53]");
        goto done;
    }
    if (!cJSON_IsArray(item[3]) || !cJSON_IsArray(item[4])) {
        st = ef__fail(EF_ERR_FORMAT, "accountant JSON: \"orders\" and \"rdp\" must be arrays");
        goto done;
    }
    int n_o = cJSON_GetArraySize(item[3]), n_r = cJSON_GetArraySize(item[4]);
    if (n_o < 1 || n_o > EF_RDP_MAX_ORDERS || n_o != n_r) {
        st = ef__fail(EF_ERR_FORMAT,
                      "accountant JSON: %d orders and %d RDP values (need the same number, "
                      "1 to %d)", n_o, n_r, EF_RDP_MAX_ORDERS);
        goto done;
    }
    size_t n = (size_t)n_o;
    buf = ef_malloc(3 * n * sizeof *buf);
    if (!buf) {
        st = EF_ERR_NOMEM;
        goto done;
    }
    if (!json_doubles(item[3], "orders", buf, n, 0) ||
        !json_doubles(item[4], "rdp", buf + n, n, 1)) {
        st = EF_ERR_FORMAT;
        goto done;
    }
    for (size_t k = 0; k < n; k++) {
        if (!(buf[k] > 1.0 && buf[k] <= EF_RDP_MAX_ORDER)) {
            st = ef__fail(EF_ERR_FORMAT, "accountant JSON: order %g is outside (1, %g]", buf[k],
                          EF_RDP_MAX_ORDER);
            goto done;
        }
        if (!(buf[n + k] >= 0.0)) {
            st = ef__fail(EF_ERR_FORMAT, "accountant JSON: RDP value %g is negative",
                          buf[n + k]);
            goto done;
        }
    }
    ef_free(acc->buf);
    acc_set_buf(acc, buf, n);
    acc->steps = (uint64_t)steps;
    buf = NULL;
    st = EF_OK;
done:
    ef_free(buf);
    cJSON_Delete(root);
    return st;
}
