/*
 * ChaCha20 DRBG: the random source of every privacy mechanism (masks,
 * secret-sharing coefficients, noise, stochastic rounding). See
 * privacy_internal.h for why it is not ef_rng.
 */
#include <string.h>

#include <sodium.h>

#include "core/core_internal.h"
#include "privacy_internal.h"

static void put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

void ef__drbg_seed(ef__drbg *g, const uint8_t key[32], uint64_t stream) {
    memcpy(g->key, key, 32);
    put_le64(g->nonce, stream);
    g->block = 0;
    g->pos = sizeof g->buf; /* empty: the first read refills */
}

ef_status ef__drbg_seed_random(ef__drbg *g) {
    if (sodium_init() < 0) return ef__fail(EF_ERR_INTERNAL, "libsodium failed to initialize");
    uint8_t key[32];
    randombytes_buf(key, sizeof key);
    ef__drbg_seed(g, key, 0);
    sodium_memzero(key, sizeof key);
    return EF_OK;
}

void ef__drbg_key_from_seed(uint8_t key[32], uint64_t seed, const char *label) {
    uint8_t s[8];
    put_le64(s, seed);
    crypto_generichash_state st;
    crypto_generichash_init(&st, (const uint8_t *)"edgefl-drbg-seed", 16, 32);
    crypto_generichash_update(&st, s, sizeof s);
    crypto_generichash_update(&st, (const uint8_t *)label, strlen(label));
    crypto_generichash_final(&st, key, 32);
}

static void refill(ef__drbg *g) {
    memset(g->buf, 0, sizeof g->buf);
    crypto_stream_chacha20_xor_ic(g->buf, g->buf, sizeof g->buf, g->nonce, g->block, g->key);
    g->block += sizeof g->buf / 64;
    g->pos = 0;
}

void ef__drbg_bytes(ef__drbg *g, void *out, size_t n) {
    uint8_t *o = out;
    while (n > 0) {
        if (g->pos == sizeof g->buf) refill(g);
        size_t k = sizeof g->buf - g->pos;
        if (k > n) k = n;
        memcpy(o, g->buf + g->pos, k);
        /* used output never stays behind in the buffer */
        sodium_memzero(g->buf + g->pos, k);
        g->pos += k, o += k, n -= k;
    }
}

uint64_t ef__drbg_u64(ef__drbg *g) {
    uint8_t b[8];
    ef__drbg_bytes(g, b, sizeof b);
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

uint64_t ef__drbg_below(ef__drbg *g, uint64_t n) {
    /* reject the top partial copy of [0, n) so every value is equally likely */
    uint64_t lim = UINT64_MAX - UINT64_MAX % n;
    for (;;) {
        uint64_t v = ef__drbg_u64(g);
        if (v < lim) return v % n;
    }
}

double ef__drbg_uniform(ef__drbg *g) { return (double)(ef__drbg_u64(g) >> 11) * 0x1.0p-53; }

void ef__drbg_wipe(ef__drbg *g) { sodium_memzero(g, sizeof *g); }

void ef__chacha_stream(void *out, size_t n, const uint8_t key[32], uint64_t stream) {
    uint8_t nonce[8];
    put_le64(nonce, stream);
    crypto_stream_chacha20(out, n, nonce, key);
}
