/*
 * Mask expansion (src/privacy/mask.c): the mask is exactly the little-endian
 * uint32 keystream of ef__chacha_stream across chunk boundaries; +1 then -1
 * restores v for several moduli and lengths that are not a multiple of the
 * chunk; pairwise masks with opposite signs (and self masks removed by the
 * server) cancel in a sum mod 2^b; the masked bytes of a highly structured
 * vector pass a chi-square uniformity test (and the unmasked ones fail it);
 * ef__mod_mask. Prints the throughput at d = 1.66M (the FedAvg CNN) next to
 * libsodium's bare ChaCha20 on the same bytes; no timing is asserted.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "privacy/privacy_internal.h"
#include "test_util.h"

static ef__drbg rng;

static uint32_t *alloc_words(size_t d) {
    uint32_t *v = malloc(d * sizeof *v + 1); /* +1: d = 0 still gives a block */
    if (!v) abort();
    return v;
}

static void rand_words(uint32_t *v, size_t d, uint32_t mod_mask) {
    ef__drbg_bytes(&rng, v, d * sizeof *v);
    for (size_t i = 0; i < d; i++) v[i] &= mod_mask;
}

static void test_mod_mask(void) {
    CHECK(ef__mod_mask(1) == 1u);
    CHECK(ef__mod_mask(8) == 0xFFu);
    CHECK(ef__mod_mask(16) == 0xFFFFu);
    CHECK(ef__mod_mask(31) == 0x7FFFFFFFu);
    CHECK(ef__mod_mask(32) == 0xFFFFFFFFu);
    CHECK(ef__mod_mask(0) == 0u);
    CHECK(ef__mod_mask(33) == 0u);
    CHECK(ef__mod_mask(-1) == 0u);
}

/* The mask is the keystream: from v = 0 with modulus 2^32, +1 gives the
 * keystream words and -1 their negation, read in one piece by
 * ef__chacha_stream. */
static void test_matches_keystream(void) {
    const size_t d = 3 * EF__MASK_CHUNK_WORDS + 17;
    uint8_t seed[32];
    ef__drbg_bytes(&rng, seed, sizeof seed);
    uint8_t *ks = malloc(4 * d);
    uint32_t *v = alloc_words(d), *w = alloc_words(d);
    if (!ks) abort();
    ef__chacha_stream(ks, 4 * d, seed, 0xDEADBEEF01ull);
    memset(v, 0, d * 4);
    memset(w, 0, d * 4);
    ef__mask_apply(v, d, seed, 0xDEADBEEF01ull, +1, ef__mod_mask(32));
    ef__mask_apply(w, d, seed, 0xDEADBEEF01ull, -1, ef__mod_mask(32));
    size_t bad = 0;
    for (size_t i = 0; i < d; i++) {
        uint32_t k = (uint32_t)ks[4 * i] | (uint32_t)ks[4 * i + 1] << 8 |
                     (uint32_t)ks[4 * i + 2] << 16 | (uint32_t)ks[4 * i + 3] << 24;
        bad += v[i] != k;
        bad += w[i] != 0u - k;
    }
    CHECK_MSG(bad == 0, "%zu words differ from the keystream", bad);
    /* a prefix is the prefix: masks of different lengths agree */
    uint32_t *u = alloc_words(d);
    memset(u, 0, d * 4);
    ef__mask_apply(u, EF__MASK_CHUNK_WORDS + 1, seed, 0xDEADBEEF01ull, +1, ef__mod_mask(32));
    CHECK(memcmp(u, v, (EF__MASK_CHUNK_WORDS + 1) * 4) == 0);
    CHECK(u[EF__MASK_CHUNK_WORDS + 1] == 0);
    /* another stream or seed is another mask */
    memset(u, 0, d * 4);
    ef__mask_apply(u, d, seed, 0xDEADBEEF02ull, +1, ef__mod_mask(32));
    size_t same = 0;
    for (size_t i = 0; i < d; i++) same += u[i] == v[i];
    seed[0] ^= 1;
    memset(w, 0, d * 4);
    ef__mask_apply(w, d, seed, 0xDEADBEEF01ull, +1, ef__mod_mask(32));
    for (size_t i = 0; i < d; i++) same += w[i] == v[i];
    CHECK_MSG(same < 3, "%zu equal words between different masks", same);
    /* d = 0 touches nothing */
    u[0] = 12345;
    ef__mask_apply(u, 0, seed, 1, +1, ef__mod_mask(32));
    CHECK(u[0] == 12345);
    free(ks), free(v), free(w), free(u);
}

static void test_roundtrip(void) {
    const int bits[] = {1, 8, 16, 31, 32};
    const size_t lens[] = {1, 15, EF__MASK_CHUNK_WORDS - 1, EF__MASK_CHUNK_WORDS,
                           2 * EF__MASK_CHUNK_WORDS + 5};
    for (size_t bi = 0; bi < sizeof bits / sizeof bits[0]; bi++)
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            size_t d = lens[li];
            uint32_t mm = ef__mod_mask(bits[bi]);
            uint32_t *v = alloc_words(d), *orig = alloc_words(d);
            rand_words(v, d, mm);
            memcpy(orig, v, d * 4);
            uint8_t seed[32];
            ef__drbg_bytes(&rng, seed, sizeof seed);
            ef__mask_apply(v, d, seed, 7, +1, mm);
            size_t out_of_range = 0, changed = 0;
            for (size_t i = 0; i < d; i++)
                out_of_range += (v[i] & ~mm) != 0, changed += v[i] != orig[i];
            ef__mask_apply(v, d, seed, 7, -1, mm);
            CHECK_MSG(memcmp(v, orig, d * 4) == 0, "bits %d, d %zu: not restored", bits[bi], d);
            CHECK_MSG(out_of_range == 0, "bits %d: %zu values >= 2^bits", bits[bi], out_of_range);
            /* a mask changes a value with probability 1 - 2^-bits; for
             * bits = 1 and d = 1 it may legitimately change nothing */
            if (d >= 15)
                CHECK_MSG(changed > 0, "bits %d, d %zu: mask changed nothing", bits[bi], d);
            /* subtracting first and adding after restores too */
            ef__mask_apply(v, d, seed, 8, -1, mm);
            ef__mask_apply(v, d, seed, 8, +1, mm);
            CHECK(memcmp(v, orig, d * 4) == 0);
            free(v), free(orig);
        }
}

/* SecAgg-style sum: client u adds +PRG(s_uv) for every neighbour v > u and
 * -PRG(s_uv) for v < u, plus its own self mask PRG(b_u); the server removes
 * the self masks. The sum mod 2^b must equal the plain sum. */
static void test_pairwise_cancel(void) {
    enum { NC = 4 };
    const size_t d = EF__MASK_CHUNK_WORDS + 333;
    const int bits[] = {1, 8, 16, 31, 32};
    for (size_t bi = 0; bi < sizeof bits / sizeof bits[0]; bi++) {
        uint32_t mm = ef__mod_mask(bits[bi]);
        uint8_t pair[NC][NC][32], self[NC][32];
        for (int u = 0; u < NC; u++) {
            ef__drbg_bytes(&rng, self[u], 32);
            for (int v = u + 1; v < NC; v++) {
                ef__drbg_bytes(&rng, pair[u][v], 32);
                memcpy(pair[v][u], pair[u][v], 32);
            }
        }
        uint32_t *x[NC], *sum = alloc_words(d), *plain = alloc_words(d);
        memset(sum, 0, d * 4);
        memset(plain, 0, d * 4);
        size_t hidden = 0;
        for (int u = 0; u < NC; u++) {
            x[u] = alloc_words(d);
            rand_words(x[u], d, mm);
            for (size_t i = 0; i < d; i++) plain[i] = (plain[i] + x[u][i]) & mm;
            uint32_t *orig = alloc_words(d);
            memcpy(orig, x[u], d * 4);
            for (int v = 0; v < NC; v++)
                if (v != u) ef__mask_apply(x[u], d, pair[u][v], 0, v > u ? +1 : -1, mm);
            ef__mask_apply(x[u], d, self[u], 1, +1, mm);
            for (size_t i = 0; i < d; i++) hidden += x[u][i] != orig[i];
            free(orig);
            for (size_t i = 0; i < d; i++) sum[i] = (sum[i] + x[u][i]) & mm;
        }
        /* before the self masks are removed the sum is still masked */
        size_t differ = 0;
        for (size_t i = 0; i < d; i++) differ += sum[i] != plain[i];
        for (int u = 0; u < NC; u++) ef__mask_apply(sum, d, self[u], 1, -1, mm);
        CHECK_MSG(memcmp(sum, plain, d * 4) == 0, "bits %d: masks did not cancel", bits[bi]);
        if (bits[bi] >= 8) {
            CHECK_MSG(differ > d * 9 / 10, "bits %d: only %zu of %zu masked sums differ", bits[bi],
                      differ, d);
            CHECK_MSG(hidden > NC * d * 9 / 10, "bits %d: only %zu masked values changed", bits[bi],
                      hidden);
        }
        for (int u = 0; u < NC; u++) free(x[u]);
        free(sum), free(plain);
    }
}

/* Chi-square statistic of the byte values at positions lane, lane + 4, ...
 * of v (lane < 4), or of all bytes (lane = -1): 256 bins. */
static double chi_square_bytes(const uint32_t *v, size_t d, int lane) {
    long count[256] = {0};
    size_t n = 0;
    for (size_t i = 0; i < d; i++)
        for (int b = 0; b < 4; b++)
            if (lane < 0 || b == lane) count[v[i] >> (8 * b) & 0xFF]++, n++;
    double e = (double)n / 256, chi = 0.0;
    for (int k = 0; k < 256; k++) chi += (count[k] - e) * (count[k] - e) / e;
    return chi;
}

/* The masked vector's bytes must look uniform even when v is far from it.
 * v[i] = i (low bytes cycle, high bytes are almost constant) is masked with
 * bits = 32 and d = 100,000. Each of the 4 byte lanes (100,000 bytes,
 * 390.6 expected per value) and all 400,000 bytes together are tested with
 * 255 degrees of freedom against 330.52, the 0.999 quantile of chi-square(255)
 * (computed from the regularized incomplete gamma function; the
 * Wilson-Hilferty approximation gives 330.5): a uniform source exceeds it
 * once in 1000 tests, and the seed is fixed, so the test is deterministic.
 * A mask that left a byte lane alone (or used only part of each word) would
 * leave that lane's statistic in the tens of thousands -- the unmasked v
 * shows it. */
static void test_chi_square(void) {
    const size_t d = 100000;
    const double limit = 330.52;
    uint32_t *v = alloc_words(d);
    for (size_t i = 0; i < d; i++) v[i] = (uint32_t)i;
    double raw = chi_square_bytes(v, d, 3);
    CHECK_MSG(raw > 10 * limit, "the unmasked ramp's top byte has chi-square %.1f", raw);
    uint8_t seed[32];
    ef__drbg_bytes(&rng, seed, sizeof seed);
    ef__mask_apply(v, d, seed, 3, +1, ef__mod_mask(32));
    printf("chi-square(255) of masked bytes (limit %.2f):", limit);
    for (int lane = -1; lane < 4; lane++) {
        double chi = chi_square_bytes(v, d, lane);
        static const char *name[] = {"all", "lane0", "lane1", "lane2", "lane3"};
        printf(" %s %.1f", name[lane + 1], chi);
        CHECK_MSG(chi < limit, "byte lane %d: chi-square %.1f >= %.2f", lane, chi, limit);
    }
    printf("\n");
    free(v);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Throughput at the FedAvg CNN's size (1,663,370 parameters), best of 5,
 * against libsodium's ChaCha20 writing the same number of bytes. Printed,
 * not asserted. */
static void test_speed(void) {
    const size_t d = 1663370;
    const int reps = getenv("EDGEFL_TEST_QUICK") ? 1 : 5;
    uint32_t *v = alloc_words(d);
    uint8_t *ks = malloc(4 * d);
    if (!ks) abort();
    memset(v, 0, 4 * d);
    uint8_t seed[32];
    ef__drbg_bytes(&rng, seed, sizeof seed);
    double best_mask = 1e9, best_raw = 1e9;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        ef__mask_apply(v, d, seed, (uint64_t)r, +1, ef__mod_mask(32));
        double t1 = now_s();
        ef__chacha_stream(ks, 4 * d, seed, (uint64_t)r);
        double t2 = now_s();
        if (t1 - t0 < best_mask) best_mask = t1 - t0;
        if (t2 - t1 < best_raw) best_raw = t2 - t1;
    }
    double mb = 4.0 * (double)d / 1e6;
    printf("ef__mask_apply d = %zu: %.2f ms, %.0f MB/s (libsodium ChaCha20 alone: %.2f ms, "
           "%.0f MB/s)\n",
           d, 1e3 * best_mask, mb / best_mask, 1e3 * best_raw, mb / best_raw);
    CHECK(v[0] != 0 || v[1] != 0); /* the work happened */
    free(v), free(ks);
}

int main(void) {
    CHECK(sodium_init() >= 0);
    uint8_t key[32];
    ef__drbg_key_from_seed(key, 424242, "test_mask");
    ef__drbg_seed(&rng, key, 0);
    test_mod_mask();
    test_matches_keystream();
    test_roundtrip();
    test_pairwise_cancel();
    test_chi_square();
    test_speed();
    ef__drbg_wipe(&rng);
    return tu_finish("test_mask");
}
