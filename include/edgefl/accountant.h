/*
 * Privacy accounting: how much (epsilon, delta)-differential privacy a run of
 * the Poisson-subsampled Gaussian mechanism has spent, by Renyi differential
 * privacy (RDP), the computation of TensorFlow Privacy's rdp_accountant and
 * Opacus's analysis/rdp.py.
 *
 * The mechanism: each step every participant (client, or example) is
 * included independently with probability q, the included contributions are
 * clipped to L2 norm C and summed, and Gaussian noise of standard deviation
 * sigma * C is added (sigma is the noise multiplier). Its RDP at order alpha
 * (Mironov, Talwar, Zhang 2019, "Renyi Differential Privacy of the Sampled
 * Gaussian Mechanism") is log(A_alpha) / (alpha - 1) with
 *
 *   A_alpha = E_{z ~ N(0, sigma^2)} [ (1 - q + q exp((2z - 1) / (2 sigma^2)))^alpha ],
 *
 * evaluated by the binomial expansion for integer alpha and by the two-sided
 * series of the paper's Section 3.3 for fractional alpha, in log space.
 * Special cases: q == 0 gives 0, sigma == 0 (with q > 0) gives +infinity,
 * q == 1 gives alpha / (2 sigma^2). T steps compose by adding: T times the
 * one-step RDP; steps with different q or sigma add their RDP order by order.
 *
 * RDP converts to (epsilon, delta)-DP by the bound of Balle et al. 2020
 * ("Hypothesis testing interpretations and Renyi differential privacy",
 * Theorem 21), minimised over the orders:
 *
 *   epsilon = min over alpha of
 *             rdp(alpha) + log((alpha - 1) / alpha) - (log(delta) + log(alpha)) / (alpha - 1),
 *
 * clamped at 0, and 0 where rdp(alpha) <= -log(1 - delta^2) (the
 * Bretagnolle-Huber bound on the KL divergence, as TensorFlow Privacy's
 * RdpAccountant). In particular zero steps, or q == 0, spend epsilon 0.
 *
 * Orders are real numbers in (1, EF_RDP_MAX_ORDER]. The default set is
 * Opacus's DEFAULT_ALPHAS: 1 + x/10 for x = 1..99, then 12..63 (151 orders).
 *
 * Every function checks its arguments: q outside [0, 1], sigma < 0, delta
 * outside (0, 1), an empty order list, an order <= 1 and any NaN or infinite
 * input give EF_ERR_INVALID with a message in ef_last_error(), and change
 * no output and no accountant. The pure functions are thread-safe; an
 * accountant handle must not be used by two threads at once (not even
 * through the functions taking a const pointer: they update a cache).
 */
#ifndef EDGEFL_ACCOUNTANT_H
#define EDGEFL_ACCOUNTANT_H

#include "edgefl/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest RDP order accepted (the integer expansion has alpha + 1 terms). */
#define EF_RDP_MAX_ORDER 100000.0
/* Most orders one computation or accountant takes. */
#define EF_RDP_MAX_ORDERS 100000
/* Number of default orders (Opacus's DEFAULT_ALPHAS). */
#define EF_RDP_N_DEFAULT_ORDERS 151

/*
 * The default orders: 1.1, 1.2, ..., 10.9 (as 1 + x/10.0), then 12, 13,
 * ..., 63. Returns a pointer to a static array of EF_RDP_N_DEFAULT_ORDERS
 * doubles (never NULL, not to be freed); *n (if n is not NULL) receives its
 * length.
 */
EF_API const double *ef_rdp_default_orders(size_t *n);

/*
 * RDP of `steps` compositions of the Poisson-subsampled Gaussian mechanism
 * with sampling rate q in [0, 1] and noise multiplier sigma >= 0, at each of
 * orders[0..n_orders): rdp_out[k] = steps * rdp_one_step(orders[k]) (0 when
 * steps == 0; +INFINITY when sigma == 0 and q > 0 and steps > 0).
 * orders: n_orders >= 1 finite values in (1, EF_RDP_MAX_ORDER]; rdp_out:
 * caller-owned array of n_orders doubles, written only on success.
 * Returns EF_OK or EF_ERR_INVALID.
 */
EF_API ef_status ef_rdp_compute(double q, double sigma, uint64_t steps, const double *orders,
                                size_t n_orders, double *rdp_out);

/*
 * Converts RDP values rdp[k] at orders[k] (k < n) into the smallest epsilon
 * such that the mechanism is (epsilon, delta)-DP, by the bound in the header
 * comment. rdp values must be >= 0 or +INFINITY (no NaN). On success *eps
 * receives epsilon (+INFINITY when every order's RDP is infinite) and
 * *best_order (may be NULL) the order attaining it (the first one on ties;
 * NaN when epsilon is infinite). Returns EF_OK or EF_ERR_INVALID.
 */
EF_API ef_status ef_rdp_epsilon(const double *orders, const double *rdp, size_t n, double delta,
                                double *eps, double *best_order);

/*
 * The largest number of steps T in [0, limit] such that T steps of the
 * mechanism (q, sigma) spend at most eps_target (>= 0) at `delta`, as
 * computed by ef_rdp_compute followed by ef_rdp_epsilon: that pair gives
 * epsilon <= eps_target at T and (when T < limit) > eps_target at T + 1.
 * Found by bisection on T with the one-step RDP computed once. orders ==
 * NULL with n_orders == 0 selects the default orders. *steps_out receives T
 * (limit when even `limit` steps fit, e.g. q == 0). Returns EF_OK,
 * EF_ERR_INVALID or EF_ERR_NOMEM.
 */
EF_API ef_status ef_rdp_max_steps(double q, double sigma, const double *orders, size_t n_orders,
                                  double delta, double eps_target, uint64_t limit,
                                  uint64_t *steps_out);

/*
 * Streaming accountant: the running RDP sum of every step taken so far at a
 * fixed set of orders, for a server that releases one noisy aggregate per
 * round. Opaque; create with ef_accountant_new, release with
 * ef_accountant_free.
 */
typedef struct ef_accountant ef_accountant;

/*
 * Creates an accountant with nothing spent. orders: n_orders values in
 * (1, EF_RDP_MAX_ORDER] (copied), or NULL with n_orders == 0 for the default
 * orders. *out receives the handle, owned by the caller (ef_accountant_free).
 * Returns EF_OK, EF_ERR_INVALID or EF_ERR_NOMEM (*out is then untouched).
 */
EF_API ef_status ef_accountant_new(ef_accountant **out, const double *orders, size_t n_orders);

/* Releases an accountant; NULL is a no-op. */
EF_API void ef_accountant_free(ef_accountant *acc);

/*
 * Records `steps` steps of the mechanism with sampling rate q and noise
 * multiplier sigma: adds their RDP to the running sum at every order. Steps
 * with different parameters compose by adding. The one-step RDP of the last
 * (q, sigma) is kept, so a step with the same parameters as the previous
 * call costs O(orders). Returns EF_OK, EF_ERR_INVALID (bad q or sigma) or
 * EF_ERR_RANGE (the step count would pass 2^53, the largest a JSON number
 * holds exactly); on error the accountant is unchanged.
 */
EF_API ef_status ef_accountant_step(ef_accountant *acc, double q, double sigma, uint64_t steps);

/*
 * Epsilon spent so far at `delta` (see ef_rdp_epsilon): *eps receives it,
 * *order (may be NULL) the best order (NaN when epsilon is infinite).
 * An accountant with nothing spent reports 0. Returns EF_OK or EF_ERR_INVALID.
 */
EF_API ef_status ef_accountant_epsilon(const ef_accountant *acc, double delta, double *eps,
                                       double *order);

/*
 * Whether `steps` more steps of (q, sigma) would take epsilon at `delta`
 * above eps_target (>= 0), without recording them: *exceeds (may be NULL)
 * receives 1 if so and 0 if not, *eps_after (may be NULL) the epsilon the
 * accountant would then report, bit for bit the value that
 * ef_accountant_step followed by ef_accountant_epsilon would give. Returns
 * EF_OK or EF_ERR_INVALID.
 */
EF_API ef_status ef_accountant_would_exceed(const ef_accountant *acc, double q, double sigma,
                                            uint64_t steps, double delta, double eps_target,
                                            int *exceeds, double *eps_after);

/*
 * The largest number of further steps T in [0, limit] of (q, sigma) after
 * which epsilon at `delta` stays <= eps_target (0 when even one more step,
 * or what is already spent, exceeds it). Consistent with
 * ef_accountant_would_exceed: T steps do not exceed and, when T < limit,
 * T + 1 do. Returns EF_OK or EF_ERR_INVALID.
 */
EF_API ef_status ef_accountant_max_steps(const ef_accountant *acc, double q, double sigma,
                                         double delta, double eps_target, uint64_t limit,
                                         uint64_t *steps_out);

/* Number of orders (>= 1). */
EF_API size_t ef_accountant_n_orders(const ef_accountant *acc);
/* The orders, ef_accountant_n_orders() of them; owned by the accountant,
 * valid until it is freed or loaded from JSON. */
EF_API const double *ef_accountant_orders(const ef_accountant *acc);
/* The RDP spent so far at each order (same length and lifetime). */
EF_API const double *ef_accountant_rdp(const ef_accountant *acc);
/* Total number of steps recorded. */
EF_API uint64_t ef_accountant_steps(const ef_accountant *acc);

/*
 * Serializes the accountant to one line of JSON:
 *   {"format":"edgefl-rdp-accountant","version":1,"steps":N,
 *    "orders":[...],"rdp":[...]}
 * Numbers are written so that they read back as the same doubles; an
 * infinite RDP value is written as the string "inf". *json receives a
 * NUL-terminated string owned by the caller (free with ef_free). Returns
 * EF_OK or EF_ERR_NOMEM.
 */
EF_API ef_status ef_accountant_to_json(const ef_accountant *acc, char **json);

/*
 * Replaces the accountant's orders, RDP values and step count with those in
 * json[0..len) (as written by ef_accountant_to_json; a NUL byte inside the
 * text is refused), bit for bit. Malformed text, unknown or missing keys,
 * a wrong format or version, orders outside (1, EF_RDP_MAX_ORDER], negative
 * or NaN RDP values, arrays of different or zero length, or a step count
 * that is not an integer in [0, 2^53] give EF_ERR_FORMAT with a message and
 * leave the accountant unchanged. Returns EF_OK, EF_ERR_INVALID (NULL
 * arguments), EF_ERR_FORMAT or EF_ERR_NOMEM.
 */
EF_API ef_status ef_accountant_load_json(ef_accountant *acc, const char *json, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_ACCOUNTANT_H */
