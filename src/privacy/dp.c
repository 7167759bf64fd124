/*
 * Differential-privacy mechanisms: L2 clipping, the Gaussian mechanism on
 * floats, exact discrete Laplace/Gaussian samplers (Canonne, Kamath, Steinke
 * 2020), Poisson (multiplication method and Hormann's PTRS) and Skellam
 * samplers, their modular vector forms for the distributed mode,
 * calibration, Renyi-DP bounds of one round and adaptive clipping. See
 * dp_internal.h for the interface and the papers.
 */
#include <math.h>
#include <string.h>

#include <sodium.h>

#include "core/core_internal.h"
#include "dp_internal.h"

/* ---- random source ----------------------------------------------------------
 *
 * The samplers consume words, 32-bit halves and single bits. Reading the DRBG
 * 8 bytes at a time costs a memcpy and a wipe per word, so the vector forms
 * read 512 bytes at once. Bits and 32-bit halves are cached so a fair coin
 * costs 1/64 of a word. The whole struct is wiped when the caller is done.
 */

#define RS_WORDS 64

typedef struct rsrc {
    ef__drbg *g;
    int buffered;  /* 0: read g word by word (scalar samplers) */
    size_t pos;    /* next unused word of buf */
    uint64_t bits; /* cached random bits, low first */
    int nbits;
    uint32_t half; /* cached 32-bit half-word */
    int has_half;
    uint64_t buf[RS_WORDS];
} rsrc;

static void rs_init(rsrc *r, ef__drbg *g, int buffered) {
    memset(r, 0, sizeof *r);
    r->g = g;
    r->buffered = buffered;
    r->pos = RS_WORDS;
}

static void rs_wipe(rsrc *r) { sodium_memzero(r, sizeof *r); }

static uint64_t rs_u64(rsrc *r) {
    if (!r->buffered) return ef__drbg_u64(r->g);
    if (r->pos == RS_WORDS) {
        ef__drbg_bytes(r->g, r->buf, sizeof r->buf);
        /* little-endian words, as ef__drbg_u64, so streams match across hosts */
        for (size_t i = 0; i < RS_WORDS; i++) {
            const uint8_t *p = (const uint8_t *)&r->buf[i];
            uint64_t w = 0;
            for (int j = 7; j >= 0; j--) w = w << 8 | p[j];
            r->buf[i] = w;
        }
        r->pos = 0;
    }
    uint64_t w = r->buf[r->pos];
    r->buf[r->pos++] = 0;
    return w;
}

static uint32_t rs_u32(rsrc *r) {
    if (r->has_half) {
        r->has_half = 0;
        return r->half;
    }
    uint64_t w = rs_u64(r);
    r->half = (uint32_t)(w >> 32);
    r->has_half = 1;
    return (uint32_t)w;
}

static int rs_bit(rsrc *r) {
    if (r->nbits == 0) {
        r->bits = rs_u64(r);
        r->nbits = 64;
    }
    int b = (int)(r->bits & 1u);
    r->bits >>= 1;
    r->nbits--;
    return b;
}

/* Uniform integer in [0, n), 0 < n < 2^32, unbiased: Lemire's multiply-shift
 * with rejection of the short first interval. */
static uint32_t rs_below32(rsrc *r, uint32_t n) {
    uint64_t m = (uint64_t)rs_u32(r) * n;
    uint32_t lo = (uint32_t)m;
    if (lo < n) {
        uint32_t thresh = (uint32_t)(-n) % n;
        while (lo < thresh) {
            m = (uint64_t)rs_u32(r) * n;
            lo = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

/* Uniform double in the open interval (0, 1): 53 bits plus half a step, so
 * neither 0 (log(0)) nor 1 can occur. */
static double rs_open01(rsrc *r) { return ((double)(rs_u64(r) >> 11) + 0.5) * 0x1.0p-53; }

/* ---- 128-bit unsigned arithmetic (portable; no __int128 on 32-bit ARM) ---- */

typedef struct u128 {
    uint64_t hi, lo;
} u128;

static u128 u128_from(uint64_t v) { return (u128){0, v}; }

static u128 u128_mul64(uint64_t a, uint64_t b) {
    uint64_t a0 = a & 0xFFFFFFFFu, a1 = a >> 32, b0 = b & 0xFFFFFFFFu, b1 = b >> 32;
    uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    uint64_t mid = (p00 >> 32) + (p01 & 0xFFFFFFFFu) + (p10 & 0xFFFFFFFFu);
    u128 r;
    r.lo = (mid << 32) | (p00 & 0xFFFFFFFFu);
    r.hi = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
    return r;
}

static int u128_ge(u128 a, u128 b) { return a.hi > b.hi || (a.hi == b.hi && a.lo >= b.lo); }

static int u128_is_zero(u128 a) { return (a.hi | a.lo) == 0; }

static u128 u128_sub(u128 a, u128 b) {
    u128 r;
    r.lo = a.lo - b.lo;
    r.hi = a.hi - b.hi - (a.lo < b.lo);
    return r;
}

static u128 u128_shl1(u128 a) { return (u128){a.hi << 1 | a.lo >> 63, a.lo << 1}; }

/* ---- exact Bernoulli trials (CKS 2020, Algorithm 1) ------------------------ */

/* Bernoulli(num/den) for num < den < 2^127: compares a uniform real U, one
 * random bit at a time, with the binary expansion of num/den computed by long
 * division; U < num/den is decided at the first differing bit (2 bits on
 * average). Exact. */
static int bern_frac(rsrc *r, u128 num, u128 den) {
    if (u128_is_zero(num)) return 0;
    if (u128_ge(num, den)) return 1;
    u128 rem = num;
    for (;;) {
        rem = u128_shl1(rem); /* rem < den < 2^127: no overflow */
        int pbit = u128_ge(rem, den);
        if (pbit) rem = u128_sub(rem, den);
        int ubit = rs_bit(r);
        if (ubit != pbit) return pbit; /* U < p iff U has the 0 where p has the 1 */
        /* p's expansion ended: U, a real with infinitely many random bits, is
         * >= p with probability 1 */
        if (u128_is_zero(rem)) return 0;
    }
}

/* Bernoulli(num/den) for den < 2^32: one exact uniform draw below den (the
 * bitwise comparison of bern_frac uses fewer random bits but costs more
 * mispredicted branches than one 32-bit word and a multiply). */
static int bern_frac32(rsrc *r, uint32_t num, uint32_t den) {
    if (num == 0) return 0;
    if (num >= den) return 1;
    return rs_below32(r, den) < num;
}

/* Bernoulli(1/k), k >= 1. */
static int bern_inv(rsrc *r, uint64_t k) {
    if (k == 1) return 1;
    if (k == 2) return rs_bit(r);
    if (k <= UINT32_MAX) return rs_below32(r, (uint32_t)k) == 0;
    return bern_frac(r, u128_from(1), u128_from(k));
}

/* Bernoulli(exp(-1)): Algorithm 1 with gamma = 1. */
static int bern_exp_m1(rsrc *r) {
    uint64_t k = 1;
    while (bern_inv(r, k)) k++;
    return (int)(k & 1u);
}

/* Bernoulli(exp(-num/den)), den > 0, den < 2^127: Algorithm 1. For
 * gamma > 1, exp(-gamma) = exp(-1)^floor(gamma) * exp(-frac(gamma)); for
 * gamma in [0, 1), count K while Bernoulli(gamma/K) succeeds and return
 * whether K is odd. Bernoulli(gamma/K) is drawn as Bernoulli(1/K) and
 * Bernoulli(gamma) together, which avoids the product K * den. */
static int bern_exp(rsrc *r, u128 num, u128 den) {
    while (u128_ge(num, den)) {
        if (!bern_exp_m1(r)) return 0;
        num = u128_sub(num, den);
    }
    uint64_t k = 1;
    while (bern_inv(r, k) && bern_frac(r, num, den)) k++;
    return (int)(k & 1u);
}

/* Bernoulli(exp(-num/den)) for num < den < 2^32: the gamma < 1 half of
 * bern_exp with 32-bit trials. */
static int bern_exp_small(rsrc *r, uint32_t num, uint32_t den) {
    uint64_t k = 1;
    while (bern_inv(r, k) && bern_frac32(r, num, den)) k++;
    return (int)(k & 1u);
}

/* ---- discrete Laplace and discrete Gaussian (CKS 2020, Algorithms 2, 3) -- */

/* Discrete Laplace with integer scale t in [1, 2^32). X = U + t V with U
 * uniform on [0, t) accepted with probability exp(-U/t) and V geometric with
 * P(V >= v) = exp(-v); a random sign, rejecting -0 so 0 is not counted
 * twice. V reaching 2^30 (probability exp(-2^30)) restarts rather than
 * overflowing. */
static int64_t dlap_sample(rsrc *r, uint32_t t) {
    for (;;) {
        uint32_t u = t == 1 ? 0 : rs_below32(r, t);
        if (!bern_exp_small(r, u, t)) continue;
        uint64_t v = 0;
        while (bern_exp_m1(r) && v < (1u << 30)) v++;
        if (v >= (1u << 30)) continue;
        uint64_t x = u + (uint64_t)t * v; /* < 2^32 + 2^62 */
        int neg = rs_bit(r);
        if (neg && x == 0) continue;
        return neg ? -(int64_t)x : (int64_t)x;
    }
}

/* Precomputed rationals of Algorithm 3 for one sigma. sigma^2 = sn / 2^k;
 * the acceptance probability exp(-(|y| - sigma^2/t)^2 / (2 sigma^2)) is
 * exp(-(|y| t 2^k - sn)^2 / (2 sn 2^k t^2)). */
typedef struct dg_params {
    uint32_t t;  /* floor(sigma) + 1 */
    uint64_t sn; /* round(sigma^2 * 2^k) */
    uint64_t tsd; /* t * 2^k */
    u128 den;    /* 2 * sn * 2^k * t^2 */
} dg_params;

static int dg_sigma_ok(double sigma) {
    return sigma == 0.0 || (sigma >= EF__DP_DGAUSS_SIGMA_MIN && sigma <= EF__DP_DGAUSS_SIGMA_MAX);
}

/* sigma in [EF__DP_DGAUSS_SIGMA_MIN, EF__DP_DGAUSS_SIGMA_MAX]. The scale 2^k
 * (k in [0, 56]) puts sn in [2^40, 2^41], or below 2^49 with k = 0 once
 * sigma^2 >= 2^40, so sigma^2 is kept to a relative 2^-41. Bounds that keep
 * the integers in range: t * 2^k < 2^57 and 2^k t^2 < 2^57 (for sigma < 1,
 * t = 1 and 2^k <= 2^56; for sigma >= 1, 2^k t^2 <= 2^(40-e) (2 sigma)^2 <
 * 2^43; for k = 0, t^2 < 2^49), hence den < 2^99, below the 2^127 that
 * bern_frac needs, and |y| t 2^k overflows 64 bits only for |y| > 2^16 sigma
 * (dg_sample). */
static void dg_setup(dg_params *p, double sigma) {
    double s2 = sigma * sigma;
    int e = ilogb(s2); /* 2^e <= s2 < 2^(e+1) */
    int k = 40 - e;
    if (k < 0) k = 0;
    p->t = (uint32_t)floor(sigma) + 1u;
    p->sn = (uint64_t)llround(ldexp(s2, k));
    uint64_t sd = (uint64_t)1 << k;
    p->tsd = (uint64_t)p->t * sd;
    uint64_t sdt2 = p->tsd * p->t;
    p->den = u128_shl1(u128_mul64(p->sn, sdt2));
}

static int64_t dg_sample(rsrc *r, const dg_params *p) {
    for (;;) {
        int64_t y = dlap_sample(r, p->t);
        uint64_t ay = y < 0 ? (uint64_t)0 - (uint64_t)y : (uint64_t)y;
        uint64_t m;
        if (__builtin_mul_overflow(ay, p->tsd, &m)) continue; /* |y| > 2^16 sigma */
        uint64_t w = m >= p->sn ? m - p->sn : p->sn - m;
        if (bern_exp(r, u128_mul64(w, w), p->den)) return y;
    }
}

/* ---- Poisson and Skellam ----------------------------------------------------- */

#define LOG_SQRT_2PI 0.91893853320467274178 /* log(2 pi) / 2 */

/* bd0(k, mu) = k log(k/mu) + mu - k >= 0, without the cancellation of the
 * direct form when k is near mu. With v = (k - mu)/(k + mu),
 * log(k/mu) = 2 (v + v^3/3 + v^5/5 + ...), so
 * bd0 = v (k - mu) + 2 k (v^3/3 + v^5/5 + ...), every term small. */
static double bd0(double k, double mu) {
    double diff = k - mu;
    if (fabs(diff) < 0.1 * (k + mu)) {
        double v = diff / (k + mu), v2 = v * v;
        double s = diff * v, ej = 2.0 * k * v;
        for (int j = 1; j < 64; j++) {
            ej *= v2;
            double s1 = s + ej / (2 * j + 1);
            if (s1 == s) break;
            s = s1;
        }
        return s;
    }
    return k * log(k / mu) + mu - k;
}

/* stirlerr(k) = log(k!) - ((k + 1/2) log k - k + log(2 pi)/2), k >= 16:
 * the Stirling series 1/(12k) - 1/(360k^3) + 1/(1260k^5) - 1/(1680k^7) +
 * 1/(1188k^9), whose next term is below 2e-16 at k = 16. */
static double stirlerr(double k) {
    double r = 1.0 / k, r2 = r * r;
    return r * (1.0 / 12 - r2 * (1.0 / 360 - r2 * (1.0 / 1260 - r2 * (1.0 / 1680 - r2 / 1188))));
}

/* log P(K = k) for K ~ Poisson(mu), k a nonnegative integer in a double. */
static double pois_logpmf(double k, double mu, double log_mu) {
    if (k == 0.0) return -mu;
    if (k < 16.0) {
        double lf = 0.0; /* log(k!), at most 15 terms */
        for (int i = 2; i <= (int)k; i++) lf += log((double)i);
        return -mu + k * log_mu - lf;
    }
    return -bd0(k, mu) - stirlerr(k) - 0.5 * log(k) - LOG_SQRT_2PI;
}

double ef__dp_poisson_logpmf(uint64_t k, double mu) {
    if (!(mu > 0.0 && mu <= EF__DP_POISSON_MU_MAX) || k > ((uint64_t)1 << 53)) {
        ef__fail(EF_ERR_INVALID, "dp poisson_logpmf: k %llu, mu %g", (unsigned long long)k, mu);
        return NAN;
    }
    return pois_logpmf((double)k, mu, log(mu));
}

typedef struct pois_params {
    double mu;
    int ptrs;         /* mu >= 10 */
    double exp_neg_mu; /* multiplication method */
    double a, b, vr, log_inv_alpha, log_mu; /* PTRS */
} pois_params;

static int pois_mu_ok(double mu) { return mu >= 0.0 && mu <= EF__DP_POISSON_MU_MAX; }

/* Constants of PTRS as given by Hormann 1993 (valid for mu >= 10). */
static void pois_setup(pois_params *p, double mu) {
    memset(p, 0, sizeof *p);
    p->mu = mu;
    p->ptrs = mu >= 10.0;
    if (!p->ptrs) {
        p->exp_neg_mu = exp(-mu);
        return;
    }
    double smu = sqrt(mu);
    p->b = 0.931 + 2.53 * smu;
    p->a = -0.059 + 0.02483 * p->b;
    p->vr = 0.9277 - 3.6224 / (p->b - 2.0);
    p->log_inv_alpha = log(1.1239 + 1.1328 / (p->b - 3.4));
    p->log_mu = log(mu);
}

static uint64_t pois_sample(rsrc *r, const pois_params *p) {
    if (p->mu == 0.0) return 0;
    if (!p->ptrs) {
        uint64_t k = 0;
        double prod = rs_open01(r);
        while (prod > p->exp_neg_mu) {
            prod *= rs_open01(r);
            k++;
        }
        return k;
    }
    for (;;) {
        double u = rs_open01(r) - 0.5; /* (-1/2, 1/2) */
        double v = rs_open01(r);       /* (0, 1) */
        double us = 0.5 - fabs(u);     /* > 0 */
        double k = floor((2.0 * p->a / us + p->b) * u + p->mu + 0.43);
        if (k < 0.0) continue;
        if (us >= 0.07 && v <= p->vr) return (uint64_t)k; /* squeeze */
        if (us < 0.013 && v > us) continue;
        /* k far beyond any plausible value (the transformed density's tail
         * as us -> 0) has log P(k) ~ -k: rejecting it changes nothing
         * measurable and keeps the conversion below in range */
        if (k > 0x1p60) continue;
        double lhs = log(v) + p->log_inv_alpha - log(p->a / (us * us) + p->b);
        if (lhs <= pois_logpmf(k, p->mu, p->log_mu)) return (uint64_t)k;
    }
}

static int64_t skellam_sample(rsrc *r, const pois_params *p) {
    uint64_t x = pois_sample(r, p), y = pois_sample(r, p); /* both < 2^61 */
    return (int64_t)x - (int64_t)y;
}

/* ---- clipping and the Gaussian mechanism ------------------------------------ */

double ef__dp_l2_norm(const float *v, size_t d) {
    /* four partial sums: independent dependency chains the compiler can
     * pipeline (strict FP forbids it to reassociate one sum) */
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    size_t i = 0;
    for (; i + 4 <= d; i += 4) {
        s0 += (double)v[i] * v[i];
        s1 += (double)v[i + 1] * v[i + 1];
        s2 += (double)v[i + 2] * v[i + 2];
        s3 += (double)v[i + 3] * v[i + 3];
    }
    for (; i < d; i++) s0 += (double)v[i] * v[i];
    return sqrt((s0 + s1) + (s2 + s3));
}

static void scale_floats(float *v, size_t d, double s) {
    for (size_t i = 0; i < d; i++) v[i] = (float)((double)v[i] * s);
}

double ef__dp_clip_l2(float *v, size_t d, double clip) {
    if (!(clip >= 0.0) || isinf(clip)) {
        ef__fail(EF_ERR_INVALID, "dp clip: clipping norm %g is not a finite number >= 0", clip);
        return -1.0;
    }
    if (d > 0 && !v) {
        ef__fail(EF_ERR_INVALID, "dp clip: NULL vector of %zu elements", d);
        return -1.0;
    }
    double norm = ef__dp_l2_norm(v, d);
    if (!isfinite(norm)) {
        memset(v, 0, d * sizeof *v);
        ef__fail(EF_ERR_RANGE, "dp clip: update has a NaN or infinite element; zeroed");
        return NAN;
    }
    if (norm <= clip) return norm;
    /* x * (clip/norm) rounded to float can exceed x * clip/norm by 2^-24
     * relative; shrinking the factor by 2^-22 more than covers it and the
     * rounding of the norm itself (relative error ~ d * 2^-53) */
    double now = norm;
    for (int pass = 0; pass < 4 && now > clip; pass++) {
        scale_floats(v, d, clip / now * (1.0 - 0x1p-22));
        now = ef__dp_l2_norm(v, d);
    }
    /* only reachable when clip is in the subnormal range of float, where
     * rounding is absolute rather than relative */
    if (now > clip) memset(v, 0, d * sizeof *v);
    return norm;
}

/* Two independent N(0, 1) by Marsaglia's polar method: (u, v) uniform in the
 * unit disk (rejection from the square, acceptance pi/4), then
 * (u, v) * sqrt(-2 log(s) / s) with s = u^2 + v^2. */
static void normal_pair(rsrc *r, double *z0, double *z1) {
    for (;;) {
        double u = (double)(rs_u64(r) >> 11) * 0x1.0p-52 - 1.0; /* [-1, 1) */
        double v = (double)(rs_u64(r) >> 11) * 0x1.0p-52 - 1.0;
        double s = u * u + v * v;
        if (s >= 1.0 || s == 0.0) continue;
        double f = sqrt(-2.0 * log(s) / s);
        *z0 = u * f;
        *z1 = v * f;
        return;
    }
}

double ef__dp_normal(ef__drbg *g) {
    rsrc r;
    rs_init(&r, g, 0);
    double z0, z1;
    normal_pair(&r, &z0, &z1);
    rs_wipe(&r);
    return z0;
}

ef_status ef__dp_gaussian(float *v, size_t d, double stddev, ef__drbg *g) {
    if (!(stddev >= 0.0) || isinf(stddev))
        return ef__fail(EF_ERR_INVALID, "dp gaussian: stddev %g is not a finite number >= 0",
                        stddev);
    if ((d > 0 && !v) || !g) return ef__fail(EF_ERR_INVALID, "dp gaussian: NULL argument");
    if (stddev == 0.0 || d == 0) return EF_OK;
    rsrc r;
    rs_init(&r, g, 1);
    size_t i = 0;
    double z0, z1;
    for (; i + 2 <= d; i += 2) {
        normal_pair(&r, &z0, &z1);
        v[i] = (float)((double)v[i] + stddev * z0);
        v[i + 1] = (float)((double)v[i + 1] + stddev * z1);
    }
    if (i < d) {
        normal_pair(&r, &z0, &z1);
        v[i] = (float)((double)v[i] + stddev * z0);
    }
    rs_wipe(&r);
    return EF_OK;
}

/* ---- scalar samplers --------------------------------------------------------- */

ef_status ef__dp_bernoulli_exp(ef__drbg *g, uint64_t num, uint64_t den, int *out) {
    if (!g || !out) return ef__fail(EF_ERR_INVALID, "dp bernoulli_exp: NULL argument");
    if (den == 0) return ef__fail(EF_ERR_INVALID, "dp bernoulli_exp: zero denominator");
    rsrc r;
    rs_init(&r, g, 0);
    *out = bern_exp(&r, u128_from(num), u128_from(den));
    rs_wipe(&r);
    return EF_OK;
}

ef_status ef__dp_discrete_laplace(ef__drbg *g, uint64_t t, int64_t *out) {
    if (!g || !out) return ef__fail(EF_ERR_INVALID, "dp discrete_laplace: NULL argument");
    if (t == 0 || t > UINT32_MAX)
        return ef__fail(EF_ERR_INVALID, "dp discrete_laplace: scale %llu outside [1, 2^32)",
                        (unsigned long long)t);
    rsrc r;
    rs_init(&r, g, 0);
    *out = dlap_sample(&r, (uint32_t)t);
    rs_wipe(&r);
    return EF_OK;
}

static ef_status check_dg_sigma(const char *who, double sigma) {
    if (!dg_sigma_ok(sigma))
        return ef__fail(EF_ERR_INVALID, "%s: sigma %g is neither 0 nor in [2^-8, 2^24]", who,
                        sigma);
    return EF_OK;
}

static ef_status check_mu(const char *who, double mu) {
    if (!pois_mu_ok(mu))
        return ef__fail(EF_ERR_INVALID, "%s: mu %g is not in [0, 2^50]", who, mu);
    return EF_OK;
}

ef_status ef__dp_discrete_gaussian(ef__drbg *g, double sigma, int64_t *out) {
    if (!g || !out) return ef__fail(EF_ERR_INVALID, "dp discrete_gaussian: NULL argument");
    ef_status st = check_dg_sigma("dp discrete_gaussian", sigma);
    if (st != EF_OK) return st;
    if (sigma == 0.0) {
        *out = 0;
        return EF_OK;
    }
    dg_params p;
    dg_setup(&p, sigma);
    rsrc r;
    rs_init(&r, g, 0);
    *out = dg_sample(&r, &p);
    rs_wipe(&r);
    return EF_OK;
}

ef_status ef__dp_poisson(ef__drbg *g, double mu, uint64_t *out) {
    if (!g || !out) return ef__fail(EF_ERR_INVALID, "dp poisson: NULL argument");
    ef_status st = check_mu("dp poisson", mu);
    if (st != EF_OK) return st;
    pois_params p;
    pois_setup(&p, mu);
    rsrc r;
    rs_init(&r, g, 0);
    *out = pois_sample(&r, &p);
    rs_wipe(&r);
    return EF_OK;
}

ef_status ef__dp_skellam(ef__drbg *g, double mu, int64_t *out) {
    if (!g || !out) return ef__fail(EF_ERR_INVALID, "dp skellam: NULL argument");
    ef_status st = check_mu("dp skellam", mu);
    if (st != EF_OK) return st;
    pois_params p;
    pois_setup(&p, mu);
    rsrc r;
    rs_init(&r, g, 0);
    *out = skellam_sample(&r, &p);
    rs_wipe(&r);
    return EF_OK;
}

/* ---- vector forms modulo 2^bits ---------------------------------------------- */

static ef_status check_vec_u32(const char *who, const uint32_t *q, size_t d, uint32_t mask,
                               const ef__drbg *g) {
    if ((d > 0 && !q) || !g) return ef__fail(EF_ERR_INVALID, "%s: NULL argument", who);
    /* 2^bits - 1 for bits in 1..32: nonzero, all ones from bit 0 up
     * (mask + 1 wraps to 0 for 32 bits) */
    if (mask == 0 || (mask & (uint32_t)(mask + 1u)) != 0)
        return ef__fail(EF_ERR_INVALID, "%s: modulus mask 0x%x is not 2^bits - 1", who,
                        (unsigned)mask);
    return EF_OK;
}

ef_status ef__dp_add_discrete_gaussian_u32(uint32_t *q, size_t d, double sigma,
                                           uint32_t mod_mask, ef__drbg *g) {
    const char *who = "dp add_discrete_gaussian";
    ef_status st = check_vec_u32(who, q, d, mod_mask, g);
    if (st == EF_OK) st = check_dg_sigma(who, sigma);
    if (st != EF_OK) return st;
    if (sigma == 0.0) return EF_OK;
    dg_params p;
    dg_setup(&p, sigma);
    rsrc r;
    rs_init(&r, g, 1);
    /* int64 -> uint32 conversion is reduction modulo 2^32, and 2^bits
     * divides 2^32, so masking after the add gives the sum modulo 2^bits */
    for (size_t i = 0; i < d; i++) q[i] = (q[i] + (uint32_t)dg_sample(&r, &p)) & mod_mask;
    rs_wipe(&r);
    return EF_OK;
}

ef_status ef__dp_add_skellam_u32(uint32_t *q, size_t d, double mu, uint32_t mod_mask,
                                 ef__drbg *g) {
    const char *who = "dp add_skellam";
    ef_status st = check_vec_u32(who, q, d, mod_mask, g);
    if (st == EF_OK) st = check_mu(who, mu);
    if (st != EF_OK) return st;
    if (mu == 0.0) return EF_OK;
    pois_params p;
    pois_setup(&p, mu);
    rsrc r;
    rs_init(&r, g, 1);
    for (size_t i = 0; i < d; i++) q[i] = (q[i] + (uint32_t)skellam_sample(&r, &p)) & mod_mask;
    rs_wipe(&r);
    return EF_OK;
}

/* ---- calibration ------------------------------------------------------------- */

static int pos_finite(double x) { return x > 0.0 && isfinite(x); }

static ef_status check_calib(const char *who, double z, double clip, double scale, uint32_t n,
                             const double *out) {
    if (!out) return ef__fail(EF_ERR_INVALID, "%s: NULL output", who);
    if (!pos_finite(z)) return ef__fail(EF_ERR_INVALID, "%s: noise multiplier %g", who, z);
    if (!pos_finite(clip)) return ef__fail(EF_ERR_INVALID, "%s: clipping norm %g", who, clip);
    if (!pos_finite(scale)) return ef__fail(EF_ERR_INVALID, "%s: quantizer scale %g", who, scale);
    if (n == 0) return ef__fail(EF_ERR_INVALID, "%s: number of clients is 0", who);
    return EF_OK;
}

ef_status ef__dp_calibrate_dgauss(double z, double clip, double scale, uint32_t n,
                                  double *sigma) {
    const char *who = "dp calibrate_dgauss";
    ef_status st = check_calib(who, z, clip, scale, n, sigma);
    if (st != EF_OK) return st;
    double s = z * clip * scale / sqrt((double)n);
    if (!(s >= 0.5))
        return ef__fail(EF_ERR_RANGE,
                        "%s: per-client sigma %g < 0.5 quantized units, where the sum of "
                        "discrete Gaussians is far from Gaussian; raise the quantizer scale",
                        who, s);
    if (!(s <= EF__DP_DGAUSS_SIGMA_MAX))
        return ef__fail(EF_ERR_RANGE, "%s: per-client sigma %g > 2^24 quantized units", who, s);
    *sigma = s;
    return EF_OK;
}

ef_status ef__dp_calibrate_skellam(double z, double clip, double scale, uint32_t n, double *mu) {
    const char *who = "dp calibrate_skellam";
    ef_status st = check_calib(who, z, clip, scale, n, mu);
    if (st != EF_OK) return st;
    double total = z * clip * scale;
    double m = total * total / (2.0 * (double)n);
    if (!(m > 0.0)) return ef__fail(EF_ERR_RANGE, "%s: mu underflows to 0", who);
    if (!(m <= EF__DP_POISSON_MU_MAX))
        return ef__fail(EF_ERR_RANGE, "%s: per-client mu %g > 2^50", who, m);
    *mu = m;
    return EF_OK;
}

ef_status ef__dp_rounded_l2_bound(double l2, uint64_t d, double beta, double *out) {
    if (!out) return ef__fail(EF_ERR_INVALID, "dp rounded_l2_bound: NULL output");
    if (!(l2 >= 0.0) || isinf(l2) || d == 0 || !(beta >= 0.0 && beta < 1.0))
        return ef__fail(EF_ERR_INVALID, "dp rounded_l2_bound: l2 %g, d %llu, beta %g", l2,
                        (unsigned long long)d, beta);
    double sd = sqrt((double)d);
    double b = l2 + sd;
    if (beta > 0.0) {
        double b2 = sqrt(l2 * l2 + 0.25 * (double)d + sqrt(2.0 * log(1.0 / beta)) * (l2 + 0.5 * sd));
        if (b2 < b) b = b2;
    }
    *out = b;
    return EF_OK;
}

ef_status ef__dp_rounded_l1_bound(double l2, uint64_t d, double *out) {
    if (!out) return ef__fail(EF_ERR_INVALID, "dp rounded_l1_bound: NULL output");
    if (!(l2 >= 0.0) || isinf(l2) || d == 0)
        return ef__fail(EF_ERR_INVALID, "dp rounded_l1_bound: l2 %g, d %llu", l2,
                        (unsigned long long)d);
    double a = sqrt((double)d) * l2, b = l2 * l2;
    *out = a < b ? a : b;
    return EF_OK;
}

/* ---- Renyi DP ------------------------------------------------------------------ */

static int nonneg_finite(double x) { return x >= 0.0 && isfinite(x); }

ef_status ef__dp_gaussian_rdp(double alpha, double l2, double sigma, double *eps) {
    if (!eps) return ef__fail(EF_ERR_INVALID, "dp gaussian_rdp: NULL output");
    if (!(alpha > 1.0) || isinf(alpha) || !nonneg_finite(l2) || !pos_finite(sigma))
        return ef__fail(EF_ERR_INVALID, "dp gaussian_rdp: alpha %g, l2 %g, sigma %g", alpha, l2,
                        sigma);
    *eps = alpha * l2 * l2 / (2.0 * sigma * sigma);
    return EF_OK;
}

ef_status ef__dp_skellam_rdp(double alpha, double l1, double l2, double var, double *eps) {
    if (!eps) return ef__fail(EF_ERR_INVALID, "dp skellam_rdp: NULL output");
    if (!(alpha >= 2.0) || isinf(alpha) || alpha != floor(alpha))
        return ef__fail(EF_ERR_INVALID, "dp skellam_rdp: alpha %g is not an integer >= 2", alpha);
    if (!nonneg_finite(l1) || !nonneg_finite(l2) || !pos_finite(var))
        return ef__fail(EF_ERR_INVALID, "dp skellam_rdp: l1 %g, l2 %g, variance %g", l1, l2, var);
    double t1 = ((2.0 * alpha - 1.0) * l2 * l2 + 6.0 * l1) / (4.0 * var * var);
    double t2 = 3.0 * l1 / (2.0 * var);
    *eps = alpha * l2 * l2 / (2.0 * var) + (t1 < t2 ? t1 : t2);
    return EF_OK;
}

ef_status ef__dp_ddg_rdp(double alpha, double l1, double l2, double sigma, uint32_t n,
                         uint64_t d, double *eps) {
    if (!eps) return ef__fail(EF_ERR_INVALID, "dp ddg_rdp: NULL output");
    if (!(alpha > 1.0) || isinf(alpha) || !nonneg_finite(l1) || !nonneg_finite(l2) ||
        !(sigma >= 0.5) || isinf(sigma) || n == 0 || n > EF__DP_DDG_MAX_CLIENTS || d == 0)
        return ef__fail(EF_ERR_INVALID,
                        "dp ddg_rdp: alpha %g, l1 %g, l2 %g, sigma %g (>= 0.5), n %u (1..2^20), "
                        "d %llu",
                        alpha, l1, l2, sigma, (unsigned)n, (unsigned long long)d);
    const double pi = 3.14159265358979323846;
    double c = 2.0 * pi * pi * sigma * sigma, tau = 0.0;
    for (uint32_t k = 1; k < n; k++) tau += exp(-c * (double)k / (double)(k + 1));
    tau *= 10.0;
    double sn = sqrt((double)n) * sigma, a = l2 / sn, b = l1 / sn, dd = (double)d;
    double e1 = alpha * a * a / 2.0 + tau * dd;
    double e2 = alpha / 2.0 * (a * a + 2.0 * b * tau + tau * tau * dd);
    double e3 = alpha / 2.0 * (a + sqrt(dd) * tau) * (a + sqrt(dd) * tau);
    double e = e1 < e2 ? e1 : e2;
    *eps = e < e3 ? e : e3;
    return EF_OK;
}

/* ---- adaptive clipping ------------------------------------------------------- */

ef_status ef__dp_adaptive_init(ef__dp_adaptive *a, double clip0, double gamma, double eta,
                               double sigma_b) {
    if (!a) return ef__fail(EF_ERR_INVALID, "dp adaptive_init: NULL state");
    if (!pos_finite(clip0))
        return ef__fail(EF_ERR_INVALID, "dp adaptive_init: initial clip %g", clip0);
    if (!(gamma >= 0.0 && gamma <= 1.0))
        return ef__fail(EF_ERR_INVALID, "dp adaptive_init: target quantile %g not in [0, 1]",
                        gamma);
    if (!pos_finite(eta))
        return ef__fail(EF_ERR_INVALID, "dp adaptive_init: learning rate %g", eta);
    if (!nonneg_finite(sigma_b))
        return ef__fail(EF_ERR_INVALID, "dp adaptive_init: count noise stddev %g", sigma_b);
    a->clip = clip0;
    a->gamma = gamma;
    a->eta = eta;
    a->sigma_b = sigma_b;
    return EF_OK;
}

ef_status ef__dp_adaptive_step(ef__dp_adaptive *a, double b_bar) {
    if (!a) return ef__fail(EF_ERR_INVALID, "dp adaptive_step: NULL state");
    if (!isfinite(b_bar))
        return ef__fail(EF_ERR_INVALID, "dp adaptive_step: fraction %g is not finite", b_bar);
    double c = a->clip * exp(-a->eta * (b_bar - a->gamma));
    if (!pos_finite(c))
        return ef__fail(EF_ERR_RANGE, "dp adaptive_step: clip %g * exp(-%g * (%g - %g)) = %g",
                        a->clip, a->eta, b_bar, a->gamma, c);
    a->clip = c;
    return EF_OK;
}

ef_status ef__dp_adaptive_update(ef__dp_adaptive *a, uint64_t count, uint64_t m, ef__drbg *g,
                                 double *b_bar_out) {
    if (!a || !g) return ef__fail(EF_ERR_INVALID, "dp adaptive_update: NULL argument");
    if (m == 0 || count > m)
        return ef__fail(EF_ERR_INVALID, "dp adaptive_update: count %llu of %llu clients",
                        (unsigned long long)count, (unsigned long long)m);
    double noise = a->sigma_b > 0.0 ? a->sigma_b * ef__dp_normal(g) : 0.0;
    double b_bar = ((double)count + noise) / (double)m;
    ef_status st = ef__dp_adaptive_step(a, b_bar);
    if (st == EF_OK && b_bar_out) *b_bar_out = b_bar;
    return st;
}

ef_status ef__dp_adaptive_noise_split(double z, double sigma_b, double *z_delta) {
    if (!z_delta) return ef__fail(EF_ERR_INVALID, "dp adaptive_noise_split: NULL output");
    if (!pos_finite(z) || !nonneg_finite(sigma_b))
        return ef__fail(EF_ERR_INVALID, "dp adaptive_noise_split: z %g, sigma_b %g", z, sigma_b);
    if (!(2.0 * sigma_b > z))
        return ef__fail(EF_ERR_RANGE,
                        "dp adaptive_noise_split: 2 sigma_b = %g <= z = %g: the clipped-count "
                        "query alone would use the whole privacy budget",
                        2.0 * sigma_b, z);
    double inv = 1.0 / (z * z) - 1.0 / (4.0 * sigma_b * sigma_b);
    *z_delta = 1.0 / sqrt(inv);
    return EF_OK;
}
