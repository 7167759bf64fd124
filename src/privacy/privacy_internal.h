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

/* ---- Shamir t-of-n secret sharing over GF(p), p = 2^61 - 1 (shamir.c) ----- */

/* A 32-byte secret (a SecAgg+ self-mask seed or key-agreement secret key) is
 * cut into 5 chunks of 7, 7, 7, 7 and 4 little-endian bytes, each < 2^56 < p,
 * and every chunk is shared with its own random polynomial; a share holds one
 * polynomial value per chunk at the same point x. Shamir, "How to share a
 * secret", CACM 22(11), 1979. All arithmetic is portable 64-bit C (no
 * __int128). It is not constant-time (modular reductions and the final range
 * check branch on values): only someone timing the splitting client or the
 * recovering server could learn from it. */

#define EF__SS_SECRET 32 /* bytes of a shared secret */
#define EF__SS_CHUNKS 5  /* field elements per secret: 7 bytes each (the last 4) */
#define EF__SS_SHARE_BYTES (4 + 8 * EF__SS_CHUNKS) /* x as u32 LE, then y[] as u64 LE */
#define EF__GF61_P ((uint64_t)0x1FFFFFFFFFFFFFFF) /* 2^61 - 1, a Mersenne prime */

typedef struct ef__ss_share {
    uint32_t x;                /* evaluation point: any nonzero u32 (all are < p); never 0 */
    uint64_t y[EF__SS_CHUNKS]; /* one polynomial value per chunk, each < p */
} ef__ss_share;

/* Field arithmetic mod p = 2^61 - 1 on canonical values (< p); results are
 * canonical. ef__gf61_mul splits its operands into 32-bit halves, so it needs
 * only 64-bit integers. ef__gf61_inv(a) is a^(p-2) (Fermat), the inverse of
 * a != 0; ef__gf61_inv(0) returns 0. */
uint64_t ef__gf61_add(uint64_t a, uint64_t b);
uint64_t ef__gf61_sub(uint64_t a, uint64_t b);
uint64_t ef__gf61_mul(uint64_t a, uint64_t b);
uint64_t ef__gf61_inv(uint64_t a);

/* Splits `secret` into n shares, any t of which recover it (1 <= t <= n),
 * evaluating random degree-(t-1) polynomials (coefficients uniform in [0, p),
 * drawn from rng) at the distinct nonzero points xs[0..n). out[0..n)
 * receives the shares (caller-owned; share i is at xs[i]). The coefficients
 * live in one temporary heap block that is wiped before it is freed.
 * Returns EF_OK; EF_ERR_INVALID for NULL pointers, t < 1, n < t, or a zero
 * or repeated x (out and rng untouched); EF_ERR_NOMEM if the coefficient
 * block cannot be allocated. Cost: O(n^2) to check the points plus
 * O(5 n t) field multiplications. */
ef_status ef__shamir_split(const uint8_t secret[EF__SS_SECRET], int t, int n,
                           const uint32_t *xs, ef__drbg *rng, ef__ss_share *out);

/* Recovers the secret from shares[0..m), m >= t, by Lagrange interpolation
 * at 0 through the first t shares. Every one of the m shares is checked
 * first: a bad or duplicated share is an error, not skipped (a caller that
 * wants to drop bad shares filters them before the call). The extra m - t
 * shares are not interpolated. Returns EF_OK and writes `secret`; on error
 * `secret` is untouched: EF_ERR_INVALID for NULL pointers, t < 1 or m < t;
 * EF_ERR_FORMAT for a zero x, a repeated x, a y >= p, or a recovered chunk
 * that does not fit its 7 (last: 4) bytes -- what shares from different
 * secrets, or corrupted ones, give with probability 1 - 2^-5 per 7-byte
 * chunk and 1 - 2^-29 for the last. Intermediates are wiped on every path. */
ef_status ef__shamir_combine(const ef__ss_share *shares, int m, int t,
                             uint8_t secret[EF__SS_SECRET]);

/* Serializes a share: x as u32 little-endian, then y[0..5) as u64
 * little-endian (EF__SS_SHARE_BYTES bytes). */
void ef__ss_share_pack(uint8_t out[EF__SS_SHARE_BYTES], const ef__ss_share *s);

/* Parses a packed share into *s. Returns EF_OK, or EF_ERR_FORMAT (and *s
 * untouched) if x == 0 or any y >= p (a corrupted share). */
ef_status ef__ss_share_unpack(ef__ss_share *s, const uint8_t in[EF__SS_SHARE_BYTES]);

/* ---- masks (mask.c) ------------------------------------------------------- */

/* Words of keystream generated per libsodium call in ef__mask_apply (a
 * multiple of 16, so every chunk starts on a ChaCha20 block boundary). */
#define EF__MASK_CHUNK_WORDS 4096

/* Adds (sign > 0) or subtracts (sign < 0) a pseudorandom mask in place:
 * v[i] = (v[i] + sign * prg[i]) & mod_mask for i < d, where prg is the
 * little-endian uint32 sequence of ef__chacha_stream(key = seed, stream).
 * sign is +1 or -1 (any negative value subtracts, anything else adds).
 * The keystream is generated EF__MASK_CHUNK_WORDS words at a time into a
 * stack buffer that is wiped before returning (no allocation of d words).
 * v[0..d) is caller-owned; d == 0 does nothing. */
void ef__mask_apply(uint32_t *v, size_t d, const uint8_t seed[32], uint64_t stream,
                    int sign, uint32_t mod_mask);

/* mod_mask for a modulus 2^bits, 1 <= bits <= 32: 2^bits - 1. Returns 0 for
 * bits outside 1..32 (callers validate bits first; ef__quant_init does). */
uint32_t ef__mod_mask(int bits);

/* ---- quantizer for masked sums (quant.c) ---------------------------------- */

typedef struct ef__quant {
    double clip;     /* R: every coordinate is clipped to [-R, R] */
    uint32_t levels; /* L: a coordinate maps to an integer in [0, L] */
    int bits;        /* b: sums are taken mod 2^b */
} ef__quant;

/* Largest number of levels ef__quant_init chooses: float32 has a 24-bit
 * significand, so a finer grid than 2R / 2^24 would not be visible in the
 * float coordinates it quantizes. */
#define EF__QUANT_MAX_LEVELS ((uint32_t)1 << 24)

/* Fills *q with clip R = clip, bits b = bits and L = the largest value with
 * max_summands * L <= 2^bits - 1 (so the sum of up to max_summands quantized
 * vectors never wraps mod 2^bits), capped at EF__QUANT_MAX_LEVELS. Returns
 * EF_OK; EF_ERR_INVALID if q is NULL, clip is not finite or <= 0, bits is
 * outside 1..32 or max_summands == 0; EF_ERR_RANGE if L < 1 (more summands
 * than 2^bits - 1). On error *q is untouched. */
ef_status ef__quant_init(ef__quant *q, double clip, int bits, uint32_t max_summands);

/* Quantizes x[0..d) into out[0..d) (both caller-owned, not overlapping): with
 * u = (clamp(scale * x[i], -R, R) + R) / (2R) * L, out[i] = floor(u) + 1 with
 * probability frac(u) and floor(u) otherwise (stochastic rounding), so
 * E[out[i]] = u (to the 2^-31 resolution below), and out[i] is in [0, L]. Infinities clip to the
 * ends of the range; a NaN (also scale * x = 0 * inf) maps to the midpoint
 * u = L / 2, stochastically rounded, i.e. to 0 in expectation after
 * dequantization. Consumes exactly 4 bytes of rng per coordinate, drawn in
 * blocks of 1024 coordinates into a stack buffer that is wiped before
 * returning; 31 of the 32 bits are used (r uniform in [0, 2^31) rounds up
 * iff r < frac(u) * 2^31: a probability bias below 2^-31). q must come from
 * ef__quant_init. */
void ef__quantize(uint32_t *out, const float *x, size_t d, double scale, const ef__quant *q,
                  ef__drbg *rng);

/* The sum of n_summed dequantized vectors from their integer sum (already
 * reduced mod 2^bits and assumed not to have wrapped, n_summed <= the
 * max_summands q was made for): out[i] = sum[i] * 2R / L - n_summed * R,
 * computed in double and rounded once to float. out[0..d) and sum[0..d) are
 * caller-owned and may not overlap. */
void ef__dequantize_sum(float *out, const uint32_t *sum, size_t d, uint32_t n_summed,
                        const ef__quant *q);

#endif /* EDGEFL_PRIVACY_INTERNAL_H */
