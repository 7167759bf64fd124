/*
 * Internal pieces of the privacy subsystem (src/privacy), shared by the
 * SecAgg+ state machines, the differential-privacy mechanisms and their
 * tests: a ChaCha20 deterministic random bit generator (DRBG) for every
 * random choice a privacy mechanism makes, Shamir secret sharing, the
 * pairwise/self mask expansion and the quantizer for masked sums.
 *
 * Why a DRBG and not ef_rng: ef_rng (xoshiro256**) is fast and
 * reproducible but predictable from its output; noise and masks must not
 * be. The DRBG is ChaCha20 (libsodium) keyed by 32 secret bytes: seeded
 * from randombytes_buf in a deployment, or from a simulation seed where
 * reproducibility matters more than secrecy (the simulator, tests).
 */
#ifndef EDGEFL_PRIVACY_INTERNAL_H
#define EDGEFL_PRIVACY_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "edgefl/core.h"

/* ---- DRBG (drbg.c) -------------------------------------------------------- */

/* ChaCha20 keystream generator: key = 32 secret bytes, nonce = stream id,
 * output consumed in order. A plain value type; wipe it with
 * ef__drbg_wipe when done (it holds the key). */
typedef struct ef__drbg {
    uint8_t key[32];
    uint8_t nonce[8];
    uint64_t block; /* next 64-byte ChaCha20 block */
    uint8_t buf[256];
    size_t pos; /* bytes of buf already used */
} ef__drbg;

/* Seeds from 32 key bytes and a 64-bit stream id (distinct streams of one
 * key are independent). */
void ef__drbg_seed(ef__drbg *g, const uint8_t key[32], uint64_t stream);
/* Seeds from the operating system's randomness (randombytes_buf). Returns
 * EF_ERR_INTERNAL if libsodium cannot initialize. */
ef_status ef__drbg_seed_random(ef__drbg *g);
/* Derives a 32-byte key from a 64-bit simulation seed and a label (BLAKE2b);
 * for simulations and tests only: anyone who knows the seed knows the key. */
void ef__drbg_key_from_seed(uint8_t key[32], uint64_t seed, const char *label);
/* Next n random bytes. */
void ef__drbg_bytes(ef__drbg *g, void *out, size_t n);
/* Next 64 random bits. */
uint64_t ef__drbg_u64(ef__drbg *g);
/* Uniform integer in [0, n), unbiased (rejection); n > 0. */
uint64_t ef__drbg_below(ef__drbg *g, uint64_t n);
/* Uniform double in [0, 1) with 53 random bits. */
double ef__drbg_uniform(ef__drbg *g);
/* Erases key and buffered output (sodium_memzero). */
void ef__drbg_wipe(ef__drbg *g);

/* Fills out[0..n) with the ChaCha20 keystream of (key, stream) from its
 * start: the bulk form of a fresh DRBG's output, used to expand masks. */
void ef__chacha_stream(void *out, size_t n, const uint8_t key[32], uint64_t stream);

#endif /* EDGEFL_PRIVACY_INTERNAL_H */
