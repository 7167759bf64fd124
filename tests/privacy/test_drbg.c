/*
 * The ChaCha20 DRBG: same key and stream give the same bytes however they
 * are read (in pieces or at once, and as ef__chacha_stream), different
 * streams and keys differ, integers below n are in range and roughly
 * uniform, and wiping erases the key.
 */
#include <string.h>

#include <sodium.h>

#include "privacy/privacy_internal.h"
#include "test_util.h"

static void test_pieces_and_bulk(void) {
    uint8_t key[32];
    ef__drbg_key_from_seed(key, 7, "test");
    uint8_t a[1000], b[1000], c[1000];
    ef__drbg g;
    ef__drbg_seed(&g, key, 3);
    ef__drbg_bytes(&g, a, sizeof a);
    ef__drbg_seed(&g, key, 3);
    /* odd piece sizes cross the 256-byte buffer at different points */
    size_t off = 0, step = 1;
    while (off < sizeof b) {
        size_t k = step < sizeof b - off ? step : sizeof b - off;
        ef__drbg_bytes(&g, b + off, k);
        off += k, step = step * 3 % 97 + 1;
    }
    ef__chacha_stream(c, sizeof c, key, 3);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) == 0);
    ef__chacha_stream(c, sizeof c, key, 4);
    CHECK(memcmp(a, c, sizeof a) != 0);
    uint8_t key2[32];
    ef__drbg_key_from_seed(key2, 8, "test");
    CHECK(memcmp(key, key2, 32) != 0);
    ef__drbg_key_from_seed(key2, 7, "other");
    CHECK(memcmp(key, key2, 32) != 0);
    ef__drbg_wipe(&g);
    static const uint8_t zero[sizeof g] = {0};
    CHECK(memcmp(&g, zero, sizeof g) == 0);
}

static void test_below_uniform(void) {
    uint8_t key[32];
    ef__drbg_key_from_seed(key, 1, "below");
    ef__drbg g;
    ef__drbg_seed(&g, key, 0);
    enum { N = 7, DRAWS = 70000 };
    long count[N] = {0};
    for (int i = 0; i < DRAWS; i++) {
        uint64_t v = ef__drbg_below(&g, N);
        CHECK(v < N);
        if (v < N) count[v]++;
    }
    /* chi-square with 6 degrees of freedom; 22.46 is its 0.999 quantile */
    double chi = 0.0, e = (double)DRAWS / N;
    for (int i = 0; i < N; i++) chi += (count[i] - e) * (count[i] - e) / e;
    CHECK_MSG(chi < 22.46, "chi-square %.2f", chi);
    double s = 0.0;
    for (int i = 0; i < DRAWS; i++) {
        double u = ef__drbg_uniform(&g);
        CHECK(u >= 0.0 && u < 1.0);
        s += u;
    }
    CHECK_MSG(fabs(s / DRAWS - 0.5) < 0.005, "mean %.4f", s / DRAWS);
    ef__drbg_wipe(&g);
}

static void test_random_seed(void) {
    ef__drbg a, b;
    CHECK(ef__drbg_seed_random(&a) == EF_OK);
    CHECK(ef__drbg_seed_random(&b) == EF_OK);
    CHECK(ef__drbg_u64(&a) != ef__drbg_u64(&b));
    ef__drbg_wipe(&a);
    ef__drbg_wipe(&b);
}

int main(void) {
    test_pieces_and_bulk();
    test_below_uniform();
    test_random_seed();
    return tu_finish("test_drbg");
}
