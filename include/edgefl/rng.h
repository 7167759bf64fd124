/*
 * Seeded, reproducible random numbers: xoshiro256** seeded through
 * splitmix64. The same seed gives the same stream on every platform.
 * Independent streams (per thread, per client) come from ef_rng_fork.
 */
#ifndef EDGEFL_RNG_H
#define EDGEFL_RNG_H

#include "edgefl/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Generator state; a plain value type (copy it to snapshot a stream). */
typedef struct ef_rng {
    uint64_t s[4];
} ef_rng;

/* Seeds the generator; every seed (including 0) gives a valid stream. */
EF_API void ef_rng_seed(ef_rng *r, uint64_t seed);

/* Derives an independent generator for `stream` from `parent`'s seed state
 * without advancing `parent`. */
EF_API void ef_rng_fork(const ef_rng *parent, uint64_t stream, ef_rng *child);

/* Next 64 random bits. */
EF_API uint64_t ef_rng_u64(ef_rng *r);

/* Uniform integer in [0, n), unbiased; n must be > 0. */
EF_API uint64_t ef_rng_below(ef_rng *r, uint64_t n);

/* Uniform float in [0, 1) with 24 random bits. */
EF_API float ef_rng_uniform(ef_rng *r);

/* Uniform double in [0, 1) with 53 random bits. */
EF_API double ef_rng_uniform_double(ef_rng *r);

/* Standard normal sample (Box-Muller, double precision). */
EF_API double ef_rng_normal(ef_rng *r);

/* Fisher-Yates shuffle of idx[0..n). */
EF_API void ef_rng_shuffle_u32(ef_rng *r, uint32_t *idx, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_RNG_H */
