/*
 * Differential-privacy mechanisms for client-level DP-FedAvg (McMahan,
 * Ramage, Talwar, Zhang 2018, "Learning differentially private recurrent
 * language models"): every client update is clipped to L2 norm C and
 * Gaussian noise of standard deviation z*C is added to the SUM of the
 * clipped updates, either
 *
 *  - by the server on the float sum (central mode): ef__dp_clip_l2 +
 *    ef__dp_gaussian, or
 *  - by every client on its quantized (integer) update before secure-
 *    aggregation masking (distributed mode), with a discrete noise whose
 *    sum over the clients is what the accountant analyses and which
 *    survives arithmetic modulo 2^bits: the distributed discrete Gaussian
 *    (Kairouz, Liu, Steinke 2021, "The distributed discrete Gaussian
 *    mechanism for federated learning with secure aggregation", DDG below)
 *    or the Skellam mechanism (Agarwal, Kairouz, Liu 2021, "The Skellam
 *    mechanism for differentially private federated learning").
 *
 * Also here: calibration of the per-client discrete noise from the central
 * noise multiplier, the L1/L2 sensitivity of a rounded vector, the Renyi-DP
 * of one round of each mechanism, and adaptive clipping (Andrew, Thakkar,
 * McMahan, Ramaswamy 2021, "Differentially private learning with adaptive
 * clipping").
 *
 * Randomness: every sampler draws from an ef__drbg (ChaCha20, see
 * privacy_internal.h), never from rand() or ef_rng. The vector forms read the
 * DRBG in 512-byte blocks and discard what is left of the last block; the
 * scalar forms read it 8 bytes at a time. Either way the same seed gives the
 * same noise. Intermediate random words are wiped (sodium_memzero) before a
 * function returns. No function keeps state between calls except
 * ef__dp_adaptive, and all are safe to call from several threads on
 * distinct DRBGs and vectors.
 *
 * Errors: functions returning ef_status leave every output and the vector
 * untouched on failure and record a message (ef_last_error). The vector
 * samplers return a status although the first design sketch had them void:
 * a NaN or negative sigma is a configuration error the caller must hear of,
 * not a silent no-op.
 */
#ifndef EDGEFL_PRIVACY_DP_INTERNAL_H
#define EDGEFL_PRIVACY_DP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "edgefl/core.h"
#include "privacy_internal.h"

/* Supported parameter ranges of the samplers (see the functions). */
#define EF__DP_DGAUSS_SIGMA_MIN 0x1p-8 /* 1/256 */
#define EF__DP_DGAUSS_SIGMA_MAX 0x1p24 /* 16,777,216 */
#define EF__DP_POISSON_MU_MAX 0x1p50   /* about 1.1e15 */
/* Largest n for ef__dp_ddg_rdp (its tau is a sum of n - 1 terms). */
#define EF__DP_DDG_MAX_CLIENTS (1u << 20)

/* ---- clipping and the Gaussian mechanism on floats ------------------------ */

/* Scales v[0..d) in place so that its L2 norm is at most `clip` (McMahan et
 * al. 2018 flat clipping) and returns the norm it had before.
 *
 * The norm is accumulated in double: squares of floats are below 1.2e77, so
 * the sum cannot overflow for any d that fits in memory, and no element is
 * too large to clip. A vector already within the bound is left bit for bit
 * unchanged. Otherwise it is multiplied by clip/norm shrunk by 2^-22 (so that
 * float rounding cannot push the result over the bound) and its norm is
 * checked again; after clipping the norm is in [clip*(1 - 2^-21), clip]
 * except when clip is so small that the elements become subnormal floats,
 * where the vector may shrink further (and, if nothing else keeps it within
 * the bound, becomes zero). clip = 0 zeroes the vector.
 *
 * Returns: the norm before clipping (>= 0);
 *   NAN if an element is NaN or infinite: the vector is then set to zero
 *       (a zero update is always within the bound, and a poisoned update
 *       must not reach the sum) and the last error says so (EF_ERR_RANGE);
 *   -1.0 if clip is negative, NaN or infinite, or v is NULL with d > 0: the
 *       vector is untouched and the last error is set (EF_ERR_INVALID). */
double ef__dp_clip_l2(float *v, size_t d, double clip);

/* The L2 norm of v[0..d), accumulated in double (NaN/Inf if an element is). */
double ef__dp_l2_norm(const float *v, size_t d);

/* One standard normal N(0, 1) sample: Marsaglia's polar method on two
 * uniforms of 53 bits each (the second variate of the pair is discarded). */
double ef__dp_normal(ef__drbg *g);

/* Adds independent N(0, stddev^2) noise to every v[i] (the Gaussian
 * mechanism; the server calls it on the sum of clipped updates with
 * stddev = z * C). Normals come from the polar method, two per pair of
 * 53-bit uniforms; each sample is computed in double and rounded once when
 * added to the float.
 *
 * Floating-point caveat (Mironov 2012, "On significance of the least
 * significant bits for differential privacy"): a floating-point sampler does
 * not produce every real value, so the set of reachable outputs depends on
 * the input and the DP guarantee of the continuous Gaussian does not hold
 * exactly; the uniforms' 2^-53 grid also truncates the tails near 12 sigma.
 * Where that matters use the distributed mode's discrete noise, whose
 * analysis is over the integers.
 *
 * stddev = 0 leaves v untouched. Returns EF_ERR_INVALID (v untouched) if
 * stddev is negative, NaN or infinite, or v (d > 0) or g is NULL. */
ef_status ef__dp_gaussian(float *v, size_t d, double stddev, ef__drbg *g);

/* ---- exact discrete samplers (Canonne, Kamath, Steinke 2020) ------------- */

/* Bernoulli(exp(-num/den)) (CKS 2020, Algorithm 1), exact: integer
 * arithmetic only (uniform integers below a bound, and random bits compared
 * with the binary expansion of a rational), no floating point.
 * *out = 0 or 1. EF_ERR_INVALID if den == 0 or g/out is NULL. */
ef_status ef__dp_bernoulli_exp(ef__drbg *g, uint64_t num, uint64_t den, int *out);

/* Discrete Laplace with scale t: P(X = x) proportional to exp(-|x|/t) over
 * the integers (CKS 2020, Algorithm 2 with s = 1), exact. t in [1, 2^32).
 * EF_ERR_INVALID for t outside that range or NULL pointers. */
ef_status ef__dp_discrete_laplace(ef__drbg *g, uint64_t t, int64_t *out);

/* Discrete Gaussian N_Z(0, sigma^2): P(X = x) proportional to
 * exp(-x^2 / (2 sigma^2)) over the integers (CKS 2020, Algorithm 3:
 * discrete Laplace proposals with t = floor(sigma) + 1, accepted with
 * probability exp(-(|x| - sigma^2/t)^2 / (2 sigma^2))). Its variance is at
 * most sigma^2: 0.215 for sigma = 0.5, sigma^2 (1 - 2.1e-7) for sigma = 1,
 * and sigma^2 to double precision for sigma >= 1.5.
 *
 * Exactness: all arithmetic is on integers (128-bit where needed). sigma^2
 * is replaced by the nearest multiple of 2^-k, k chosen so the rational has
 * about 41 significant bits: the sampler draws exactly from N_Z(0, s2) with
 * |s2 - sigma^2| <= 2^-41 sigma^2. A proposal so large that its acceptance
 * test would overflow 64 bits (|x| > 2^16 sigma, whose acceptance
 * probability is below exp(-2^31)) is rejected instead; nothing else is
 * approximated.
 *
 * sigma = 0 gives 0. EF_ERR_INVALID for sigma NaN, negative, or outside
 * [EF__DP_DGAUSS_SIGMA_MIN, EF__DP_DGAUSS_SIGMA_MAX], or NULL pointers. */
ef_status ef__dp_discrete_gaussian(ef__drbg *g, double sigma, int64_t *out);

/* ---- Poisson and Skellam --------------------------------------------------- */

/* Poisson(mu) sample. mu < 10: the multiplication method (count uniforms
 * until their product drops below exp(-mu)). mu >= 10: Hormann's PTRS
 * transformed rejection with squeeze (W. Hormann 1993, "The transformed
 * rejection method for generating Poisson random variables", Insurance:
 * Mathematics and Economics 12), about 2.3 uniforms per sample whatever mu
 * (a Skellam coordinate reads 36 bytes of the DRBG; 0.24 s for 1.66M
 * coordinates on the machine above).
 * Both are exact in distribution given real uniforms; with doubles the
 * acceptance test compares log-probabilities to about 1e-13 absolute even
 * for mu = 1e10, because log P(k) is computed as -bd0(k, mu) - stirlerr(k)
 * - log(2 pi k)/2 (the deviance form of Loader 2000, "Fast and accurate
 * computation of binomial probabilities") instead of a difference of
 * numbers near mu log mu.
 *
 * mu in [0, EF__DP_POISSON_MU_MAX]; mu = 0 gives 0. EF_ERR_INVALID
 * otherwise or for NULL pointers. */
ef_status ef__dp_poisson(ef__drbg *g, double mu, uint64_t *out);

/* log P(K = k) for K ~ Poisson(mu), as PTRS's acceptance test computes it:
 * -mu + k log mu - log k! for k < 16, the deviance form
 * -bd0(k, mu) - stirlerr(k) - log(2 pi k)/2 above (absolute error about
 * 1e-14 near the mode even for mu = 1e10). Exposed for the tests and for
 * accounting code. mu in (0, EF__DP_POISSON_MU_MAX], k <= 2^53; NAN
 * otherwise (last error set). */
double ef__dp_poisson_logpmf(uint64_t k, double mu);

/* Symmetric Skellam: Poisson(mu) - Poisson(mu), mean 0, variance 2 mu. Sums
 * of independent Skellams are Skellam (variances add), which is why the
 * distributed Skellam mechanism is analysed exactly. Same ranges and errors
 * as ef__dp_poisson. */
ef_status ef__dp_skellam(ef__drbg *g, double mu, int64_t *out);

/* ---- distributed mode: integer noise modulo 2^bits ------------------------ */

/* q[i] = (q[i] + X_i) mod 2^bits for independent X_i ~ N_Z(0, sigma^2)
 * (ef__dp_discrete_gaussian), where mod_mask = 2^bits - 1 (bits in 1..32;
 * 0xFFFFFFFF for 32 bits). Negative noise wraps around: q = 0 plus -1 gives
 * mod_mask. The result is always masked, so q[i] ends within [0, mod_mask]
 * even if it started above. sigma = 0 leaves q untouched.
 * Speed: about 0.2 us per coordinate on a 2-core x86-64 server whatever
 * sigma (0.32 s for the 1.66M coordinates of the FedAvg CNN; the test prints
 * the time).
 * EF_ERR_INVALID (q untouched) if mod_mask is not 2^bits - 1, sigma is out of
 * range as in ef__dp_discrete_gaussian, or q (d > 0) or g is NULL. */
ef_status ef__dp_add_discrete_gaussian_u32(uint32_t *q, size_t d, double sigma,
                                           uint32_t mod_mask, ef__drbg *g);

/* q[i] = (q[i] + X_i) mod 2^bits for independent X_i ~ Skellam(mu)
 * (Poisson(mu) - Poisson(mu), variance 2 mu). Same conventions and errors as
 * ef__dp_add_discrete_gaussian_u32, with mu in [0, EF__DP_POISSON_MU_MAX]. */
ef_status ef__dp_add_skellam_u32(uint32_t *q, size_t d, double mu, uint32_t mod_mask,
                                 ef__drbg *g);

/* ---- calibration of the distributed noise ---------------------------------
 *
 * Target: the sum of the clients' noise has per-coordinate standard
 * deviation z * C * scale in quantized units, i.e. z * C after dividing by
 * the quantizer's scale (levels per unit of the model, L / (2R)), the noise
 * of the central mechanism with noise multiplier z. Each of n clients adds
 * 1/n of the variance; n is the number of clients whose noise is guaranteed
 * to be in the sum (the secure-aggregation threshold), so the total is at
 * least the target whenever at least n clients survive (more survivors only
 * add noise).
 *
 * Approximation: an RDP accountant fed with z treats the sum as a continuous
 * Gaussian of the same variance with sensitivity C * scale. Three gaps:
 *  - the sum of n discrete Gaussians is not a discrete Gaussian; DDG
 *    (Kairouz et al. 2021, Theorem 1 and Proposition 14) bound its RDP by the
 *    Gaussian one plus terms in tau = 10 sum_{k=1}^{n-1}
 *    exp(-2 pi^2 sigma^2 k/(k+1)), negligible once the per-client sigma is a
 *    few quantized units (each term is at most exp(-pi^2 sigma^2): 5e-5 at
 *    sigma = 1, 7e-18 at sigma = 2); ef__dp_ddg_rdp evaluates the bound;
 *  - a sum of Skellams is exactly Skellam, whose RDP (Agarwal et al. 2021,
 *    Section 3) exceeds the Gaussian one by a term of order 1/variance
 *    relative (ef__dp_skellam_rdp);
 *  - rounding the clipped update to the integer grid grows its norm beyond
 *    C * scale; ef__dp_rounded_l2_bound gives the bound that conditional
 *    randomized rounding enforces, and the accountant should use
 *    z_eff = z * C * scale / that bound, or the bounds above, instead of z.
 */

/* Per-client discrete Gaussian sigma (quantized units):
 * *sigma = z * clip * scale / sqrt(n). z, clip, scale > 0 and finite, n >= 1.
 * EF_ERR_RANGE if the result is below 0.5 (DDG's analysis needs sigma >= 1/2:
 * raise the quantizer scale) or above EF__DP_DGAUSS_SIGMA_MAX;
 * EF_ERR_INVALID for bad arguments. *sigma is written only on success. */
ef_status ef__dp_calibrate_dgauss(double z, double clip, double scale, uint32_t n,
                                  double *sigma);

/* Per-client Skellam mu (quantized units; each client's noise has variance
 * 2 mu): *mu = (z * clip * scale)^2 / (2 n). Same arguments as
 * ef__dp_calibrate_dgauss; EF_ERR_RANGE if mu is 0 (underflow) or above
 * EF__DP_POISSON_MU_MAX. */
ef_status ef__dp_calibrate_skellam(double z, double clip, double scale, uint32_t n,
                                   double *mu);

/* L2 norm bound of a vector of L2 norm <= l2 (already scaled to quantized
 * units) after randomized rounding of each of its d coordinates to a
 * neighbouring integer, as enforced by conditional randomized rounding
 * (re-round until the bound holds, expected < 1/(1 - beta) tries): DDG
 * (Kairouz et al. 2021), Theorem 1 / Proposition 22:
 *   min( l2 + sqrt(d),
 *        sqrt(l2^2 + d/4 + sqrt(2 log(1/beta)) (l2 + sqrt(d)/2)) )
 * (the second term only for beta > 0). l2 >= 0, d >= 1, beta in [0, 1). */
ef_status ef__dp_rounded_l2_bound(double l2, uint64_t d, double beta, double *out);

/* L1 norm bound of an integer vector of dimension d and L2 norm <= l2:
 * min(sqrt(d) l2, l2^2) (|x| <= x^2 on the integers). l2 >= 0, d >= 1. */
ef_status ef__dp_rounded_l1_bound(double l2, uint64_t d, double *out);

/* ---- Renyi DP of one round ----------------------------------------------- */

/* Gaussian mechanism: eps(alpha) = alpha * l2^2 / (2 sigma^2) (Mironov 2017,
 * "Renyi differential privacy", Proposition 7). alpha > 1, l2 >= 0,
 * sigma > 0. */
ef_status ef__dp_gaussian_rdp(double alpha, double l2, double sigma, double *eps);

/* Skellam mechanism on integer vectors with L1/L2 sensitivities l1, l2 and
 * total per-coordinate noise variance `var` (n clients adding Skellam(mu):
 * var = 2 n mu): the RDP bound of the multi-dimensional Skellam mechanism,
 * Agarwal, Kairouz, Liu 2021, Section 3 (Theorem 3.5 of arXiv:2110.04995v2;
 * their mu is the variance; the same expression as _skellam_rdp in
 * google-research/federated distributed_dp/accounting_utils.py):
 *   eps(alpha) = alpha l2^2 / (2 var)
 *              + min( ((2 alpha - 1) l2^2 + 6 l1) / (4 var^2), 3 l1 / (2 var) ).
 * The first term is the Gaussian mechanism's; the second vanishes as var
 * grows. The theorem is for integer alpha > 1: alpha must be an integer >= 2
 * (EF_ERR_INVALID otherwise); l1, l2 >= 0, var > 0. */
ef_status ef__dp_skellam_rdp(double alpha, double l1, double l2, double var, double *eps);

/* Distributed discrete Gaussian: n clients each add N_Z(0, sigma^2) to a
 * d-dimensional integer vector with sensitivities l1, l2. Kairouz et al.
 * 2021, Proposition 14 (with Theorem 1's tau):
 *   tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k+1)),
 *   a = l2 / (sqrt(n) sigma), b = l1 / (sqrt(n) sigma),
 *   eps(alpha) = min( alpha a^2/2 + tau d,
 *                     alpha/2 (a^2 + 2 b tau + tau^2 d),
 *                     alpha/2 (a + sqrt(d) tau)^2 ).
 * alpha > 1, sigma >= 1/2, 1 <= n <= EF__DP_DDG_MAX_CLIENTS, d >= 1. */
ef_status ef__dp_ddg_rdp(double alpha, double l1, double l2, double sigma, uint32_t n,
                         uint64_t d, double *eps);

/* ---- adaptive clipping (Andrew et al. 2021) ------------------------------- */

/* State of the geometric clipping-norm update. Plain values; no resources. */
typedef struct ef__dp_adaptive {
    double clip;    /* current clipping norm C; clients report ||update|| <= C */
    double gamma;   /* target quantile of the update norms, in [0, 1] */
    double eta;     /* learning rate eta_C of the geometric update, > 0 */
    double sigma_b; /* stddev of the Gaussian noise on the count of bits, >= 0 */
} ef__dp_adaptive;

/* Validates and stores the parameters: clip0 > 0 and finite, gamma in
 * [0, 1], eta > 0 and finite, sigma_b >= 0 and finite (0: no privacy for the
 * quantile; the paper suggests sigma_b = m / 20 for m clients per round).
 * EF_ERR_INVALID (a untouched) otherwise. */
ef_status ef__dp_adaptive_init(ef__dp_adaptive *a, double clip0, double gamma, double eta,
                               double sigma_b);

/* Applies one round given the noised fraction b_bar:
 * C <- C * exp(-eta * (b_bar - gamma)). Norms above the quantile (b_bar <
 * gamma) grow C, below shrink it. EF_ERR_INVALID if b_bar is not finite;
 * EF_ERR_RANGE if the new C would not be a positive finite double. On error
 * a->clip is unchanged. */
ef_status ef__dp_adaptive_step(ef__dp_adaptive *a, double b_bar);

/* One round from the clients' bits: `count` of the `m` clients of the round
 * reported ||update|| <= C (the sum of their bits; m is the expected number
 * of clients per round in the paper). Draws N(0, sigma_b^2) from g, sets
 * b_bar = (count + noise) / m, then ef__dp_adaptive_step. *b_bar_out (may be
 * NULL) receives b_bar. EF_ERR_INVALID if m == 0, count > m, or a/g is
 * NULL; errors of ef__dp_adaptive_step pass through. */
ef_status ef__dp_adaptive_update(ef__dp_adaptive *a, uint64_t count, uint64_t m, ef__drbg *g,
                                 double *b_bar_out);

/* Noise multiplier of the update sum when the clipped-bit count takes part
 * of the privacy budget: the two Gaussian queries (updates with multiplier
 * z_delta, bits with sensitivity 1/2 and noise sigma_b, i.e. multiplier
 * 2 sigma_b) compose to multiplier z when
 *   z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)   (Andrew et al. 2021).
 * z > 0 and finite, sigma_b >= 0. EF_ERR_RANGE if 2 sigma_b <= z (the bits
 * alone would use the whole budget: no z_delta exists); EF_ERR_INVALID for
 * bad arguments. */
ef_status ef__dp_adaptive_noise_split(double z, double sigma_b, double *z_delta);

#endif /* EDGEFL_PRIVACY_DP_INTERNAL_H */
