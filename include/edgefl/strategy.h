/*
 * Aggregation strategies of the federated server. A strategy receives the
 * clients' updates of one round (delta = w_local - w_global, with a weight,
 * normally the client's number of training examples) and turns them into a
 * new global model:
 *
 *   FedAvg        example-weighted mean of the deltas, w += server_lr * mean
 *   FedProx       FedAvg aggregation; the proximal term mu is applied by the
 *                 clients (it travels in their tasks)
 *   FedAvgM       server momentum: v = beta v + mean; w += server_lr * v
 *   FedAdam,      server optimizers of Reddi et al. 2021 ("Adaptive
 *   FedYogi,      Federated Optimization") on the mean delta, with
 *   FedAdagrad    server_lr (eta), beta1, beta2 and tau
 *   FedMedian     coordinate-wise median of the deltas (weights ignored)
 *   FedTrimmedAvg coordinate-wise mean after dropping the trim_beta fraction
 *                 of largest and smallest values (weights ignored)
 *   Krum          the delta with the smallest sum of squared distances to
 *                 its n - f - 2 nearest neighbours (Blanchard et al. 2017)
 *   Multi-Krum    the mean of the m deltas with the smallest Krum scores
 *
 * Streaming strategies (FedAvg, FedProx, FedAvgM, FedAdam, FedYogi,
 * FedAdagrad) keep one running sum: memory is O(model). The robust ones keep
 * every update of the round: O(model x updates).
 *
 * Server-optimizer state (FedAvgM's v, the adaptive strategies' m and v)
 * starts at 0 and persists across rounds. Zero is Flower's initialisation;
 * Reddi et al. write v_{-1} >= tau^2, which only changes the first rounds
 * slightly. FedAdagrad has no first-moment decay (m = mean delta, as
 * Flower's beta_1 = 0), and no strategy applies a bias correction (as the
 * paper). The averaging and robust strategies also scale their aggregate by
 * server_lr: w += server_lr * aggregate.
 *
 * Asynchronous buffered aggregation (FedBuff, Nguyen et al. 2022) uses the
 * same streaming strategies: add each arriving update with its weight
 * multiplied by ef_staleness_weight(), and apply every K updates.
 */
#ifndef EDGEFL_STRATEGY_H
#define EDGEFL_STRATEGY_H

#include "edgefl/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ef_strategy_kind {
    EF_STRAT_FEDAVG = 0,
    EF_STRAT_FEDPROX,
    EF_STRAT_FEDAVGM,
    EF_STRAT_FEDADAM,
    EF_STRAT_FEDYOGI,
    EF_STRAT_FEDADAGRAD,
    EF_STRAT_FEDMEDIAN,
    EF_STRAT_FEDTRIMMEDAVG,
    EF_STRAT_KRUM,
    EF_STRAT_MULTIKRUM
} ef_strategy_kind;

typedef struct ef_strategy_config {
    ef_strategy_kind kind;
    float server_lr;       /* 1.0 for the averaging strategies; eta for FedAdam/Yogi/Adagrad (default 0.01) */
    float server_momentum; /* FedAvgM beta (default 0.9) */
    float beta1, beta2;    /* FedAdam/FedYogi: 0.9, 0.99; FedAdagrad uses neither */
    float tau;             /* adaptivity (epsilon) of FedAdam/Yogi/Adagrad, default 1e-3 */
    float proximal_mu;     /* FedProx mu (default 0.01); carried to clients */
    float trim_beta;       /* FedTrimmedAvg: fraction cut at each end, [0, 0.5), default 0.1 */
    int krum_f;            /* Krum/Multi-Krum: number of Byzantine clients tolerated (default 1) */
    int multikrum_m;       /* Multi-Krum: updates averaged (0: n - f) */
} ef_strategy_config;

/* Defaults for `kind` (values above). */
EF_API ef_strategy_config ef_strategy_defaults(ef_strategy_kind kind);

/* Names: "fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad",
 * "fedmedian", "fedtrimmedavg", "krum", "multikrum". */
EF_API const char *ef_strategy_name(ef_strategy_kind kind);
/* Parses a name (case-sensitive); EF_ERR_INVALID with a message listing the names. */
EF_API ef_status ef_strategy_parse(const char *name, ef_strategy_kind *out);

/* True for strategies that keep every update of a round (median, trimmed, Krum). */
EF_API int ef_strategy_keeps_updates(ef_strategy_kind kind);

typedef struct ef_strategy ef_strategy;

/*
 * Creates a strategy for models of `n_params` floats that will see at most
 * `max_updates` updates per round (only the robust strategies allocate for
 * them). Validates the config (finite positive rates, betas in [0,1), trim
 * in [0,0.5), krum_f >= 0). Free with ef_strategy_free.
 */
EF_API ef_status ef_strategy_new(ef_strategy **out, const ef_strategy_config *cfg,
                                 size_t n_params, size_t max_updates);

/* Frees the strategy and its state. NULL is a no-op. */
EF_API void ef_strategy_free(ef_strategy *s);

/* The configuration the strategy was built with. */
EF_API const ef_strategy_config *ef_strategy_get_config(const ef_strategy *s);

/* Starts a round: forgets the updates of the previous one (server optimizer
 * state such as momentum or Adam moments is kept). A successful
 * ef_strategy_apply also ends the round, so calling this before the first
 * add of the next round is only needed to drop a partial round. */
EF_API void ef_strategy_begin(ef_strategy *s);

/*
 * Adds one client's update: delta (n_params) = w_local - w_global, weight > 0.
 * Refuses (EF_ERR_INVALID, nothing added) non-finite values in delta or a bad
 * weight, and EF_ERR_RANGE past max_updates or when the round's total weight
 * would overflow. The robust strategies copy delta (the caller keeps it);
 * they validate the weight but ignore it.
 */
EF_API ef_status ef_strategy_add(ef_strategy *s, const float *delta, double weight);

/*
 * Server-optimizer state that persists across rounds, for checkpoints:
 * vector i (i < ef_strategy_state_count: 0 for FedAvg, 1 for FedAvgM and
 * FedAdagrad, 2 for FedAdam and FedYogi) has n_params floats, named
 * "m" (momentum / first moment) or "v" (second moment). The pointer is
 * writable: restoring a checkpoint copies the saved vector into it.
 */
EF_API size_t ef_strategy_state_count(const ef_strategy *s);
EF_API float *ef_strategy_state(ef_strategy *s, size_t i, const char **name);

/* Updates added since ef_strategy_begin. */
EF_API size_t ef_strategy_count(const ef_strategy *s);

/*
 * Aggregates the round's updates and applies the result to `global`
 * (n_params) in place. EF_ERR_STATE with no updates (global unchanged);
 * Krum needs n > 2f + 2 updates (EF_ERR_STATE otherwise, global unchanged),
 * Multi-Krum also m <= n; FedTrimmedAvg refuses (EF_ERR_STATE) when the cut
 * would drop every value. The cut is floor(trim_beta * n), computed with a
 * relative slack of 1e-6 so that the float trim_beta acts as the decimal it
 * was written as (0.35f * 20 cuts 7, not 6). EF_ERR_RANGE when the new
 * global or optimizer state would not be finite in float (nothing changed).
 * On success the round ends (ef_strategy_count() is 0 again) and the
 * optimizer state has advanced by one step; on failure the round's updates
 * are kept.
 */
EF_API ef_status ef_strategy_apply(ef_strategy *s, float *global);

/*
 * Staleness discount of asynchronous aggregation (FedBuff): the weight
 * (1 + staleness)^(-exponent) by which to multiply the weight of an update
 * computed on a global model `staleness` versions old. exponent 0.5 is
 * FedBuff's polynomial 1 / sqrt(1 + s); 0 disables the discount. Returns a
 * value in (0, 1] for a finite exponent >= 0, and NaN otherwise (which
 * ef_strategy_add refuses as a weight).
 */
EF_API double ef_staleness_weight(uint32_t staleness, double exponent);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_STRATEGY_H */
