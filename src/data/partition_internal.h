/*
 * Internals of the partitioners exposed for the tests: the Gamma(alpha, 1)
 * sampler behind the Dirichlet draws.
 */
#ifndef EDGEFL_PARTITION_INTERNAL_H
#define EDGEFL_PARTITION_INTERNAL_H

#include "edgefl/rng.h"

/*
 * One Gamma(alpha, 1) variate (shape alpha > 0, scale 1) from `r`:
 * Marsaglia and Tsang (2000) for alpha >= 1; for alpha < 1 the boost
 * Gamma(alpha) = Gamma(alpha + 1) * U^(1/alpha) with U uniform on (0, 1].
 * Deterministic given the state of `r`. For very small alpha the result
 * underflows to 0; use ef__log_gamma when only ratios matter.
 */
double ef__gamma(ef_rng *r, double alpha);

/*
 * log of a Gamma(alpha, 1) variate, consuming exactly the random numbers
 * ef__gamma would (so exp(ef__log_gamma(r)) == ef__gamma(r) up to rounding
 * for the same state) but computed in log space: it stays finite where the
 * variate itself underflows (alpha << 1), except that it may be -inf when
 * alpha is so small that log(U)/alpha overflows.
 */
double ef__log_gamma(ef_rng *r, double alpha);

#endif /* EDGEFL_PARTITION_INTERNAL_H */
