/*
 * Mask expansion for secure aggregation: a 32-byte seed (a pairwise key
 * agreed with a neighbour, or a client's own self-mask seed) is stretched
 * with ChaCha20 into one pseudorandom word per coordinate and added to or
 * subtracted from the quantized update mod 2^bits. Pairwise masks enter with
 * opposite signs at the two ends of a pair and cancel in the server's sum;
 * self masks are removed by the server once it has recovered their seeds.
 *
 * This runs a few times per client per round over the whole model (1.66M
 * coordinates for the FedAvg CNN), so it streams: keystream is generated a
 * chunk at a time straight from libsodium (whose ChaCha20 has SIMD paths)
 * and folded into v while it is still in cache.
 */
#include <string.h>

#include <sodium.h>

#include "privacy_internal.h"

#define CHUNK_BYTES (EF__MASK_CHUNK_WORDS * 4)

/* XORing zeros yields the raw keystream; libsodium has no "keystream from
 * block counter ic" call other than the _xor_ic form. */
static const uint8_t zeros[CHUNK_BYTES];

uint32_t ef__mod_mask(int bits) {
    if (bits < 1 || bits > 32) return 0;
    return bits == 32 ? UINT32_MAX : ((uint32_t)1 << bits) - 1;
}

/* Little-endian word i of b, independent of the host's byte order (compilers
 * turn this into a plain load on little-endian machines). */
static inline uint32_t le32(const uint8_t *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

void ef__mask_apply(uint32_t *v, size_t d, const uint8_t seed[32], uint64_t stream, int sign,
                    uint32_t mod_mask) {
    if (d == 0) return;
    /* sodium_init selects the SIMD ChaCha20 (several times faster than the
     * portable one libsodium uses before); it is idempotent and cheap once
     * done. The keystream is the same either way, so a failure (which leaves
     * the portable code in place) costs only speed and is not an error. */
    if (sodium_init() < 0) {
        /* portable ChaCha20: same output */
    }
    uint8_t nonce[8];
    for (int i = 0; i < 8; i++) nonce[i] = (uint8_t)(stream >> (8 * i));
    uint8_t buf[CHUNK_BYTES];
    uint64_t block = 0; /* ChaCha20 block counter of buf[0] */
    for (size_t off = 0; off < d; off += EF__MASK_CHUNK_WORDS) {
        size_t k = d - off < EF__MASK_CHUNK_WORDS ? d - off : EF__MASK_CHUNK_WORDS;
        crypto_stream_chacha20_xor_ic(buf, zeros, 4 * k, nonce, block, seed);
        block += CHUNK_BYTES / 64;
        uint32_t *w = v + off;
        if (sign < 0)
            for (size_t i = 0; i < k; i++) w[i] = (w[i] - le32(buf + 4 * i)) & mod_mask;
        else
            for (size_t i = 0; i < k; i++) w[i] = (w[i] + le32(buf + 4 * i)) & mod_mask;
    }
    sodium_memzero(buf, sizeof buf);
}
