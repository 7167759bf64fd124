/*
 * xoshiro256** (Blackman and Vigna) seeded with splitmix64: small, fast and
 * bit-reproducible, which is what deterministic training and simulation need.
 */
#include <math.h>

#include "core_internal.h"
#include "edgefl/rng.h"

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void ef_rng_seed(ef_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

void ef_rng_fork(const ef_rng *parent, uint64_t stream, ef_rng *child) {
    /* Hash the parent's state with the stream id; distinct streams give
     * unrelated splitmix64 sequences. */
    uint64_t x = parent->s[0] ^ rotl(parent->s[1], 17) ^ rotl(parent->s[2], 31) ^
                 rotl(parent->s[3], 47);
    x ^= splitmix64(&stream);
    ef_rng_seed(child, x);
}

uint64_t ef_rng_u64(ef_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t ef_rng_below(ef_rng *r, uint64_t n) {
    /* Lemire's multiply-shift with rejection: unbiased. */
    unsigned __int128 m = (unsigned __int128)ef_rng_u64(r) * n;
    uint64_t lo = (uint64_t)m;
    if (lo < n) {
        uint64_t thresh = -n % n;
        while (lo < thresh) {
            m = (unsigned __int128)ef_rng_u64(r) * n;
            lo = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

float ef_rng_uniform(ef_rng *r) { return (float)(ef_rng_u64(r) >> 40) * 0x1.0p-24f; }

double ef_rng_uniform_double(ef_rng *r) { return (double)(ef_rng_u64(r) >> 11) * 0x1.0p-53; }

double ef_rng_normal(ef_rng *r) {
    double u1 = ef_rng_uniform_double(r);
    double u2 = ef_rng_uniform_double(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void ef_rng_shuffle_u32(ef_rng *r, uint32_t *idx, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)ef_rng_below(r, i);
        uint32_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}
