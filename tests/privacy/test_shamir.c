/*
 * Shamir secret sharing over GF(2^61 - 1) (src/privacy/shamir.c): the field
 * arithmetic against a slow shift-and-add reference and known answers; a
 * published example; every t-subset of n = 5, t = 3 and random subsets of
 * n = 50, t = 17 recover random secrets exactly, t - 1 shares do not; t = 1
 * and t = n; the 0x00 / 0xFF edge secrets; a single share of a t = 2
 * sharing looks uniform whatever the secret; zero, repeated, out-of-range
 * and corrupted shares are refused (outputs untouched); share packing
 * round-trips and rejects y >= p; out-of-memory is reported.
 */
#include <string.h>

#include <sodium.h>

#include "privacy/privacy_internal.h"
#include "test_util.h"

#define P EF__GF61_P

static ef__drbg rng; /* test randomness, seeded in main */

/* ---- field arithmetic -------------------------------------------------------- */

/* a * b mod p by shift-and-add: only additions of values < p, so obviously
 * right and independent of the 32-bit splitting in ef__gf61_mul. */
static uint64_t slow_mul(uint64_t a, uint64_t b) {
    uint64_t r = 0;
    for (int i = 60; i >= 0; i--) {
        r = (r + r) % P;
        if (b >> i & 1) r = (r + a) % P;
    }
    return r;
}

/* field-by-field (the struct has padding after x) */
static int share_eq(const ef__ss_share *a, const ef__ss_share *b) {
    return a->x == b->x && memcmp(a->y, b->y, sizeof a->y) == 0;
}

static int shares_eq(const ef__ss_share *a, const ef__ss_share *b, int n) {
    for (int i = 0; i < n; i++)
        if (!share_eq(&a[i], &b[i])) return 0;
    return 1;
}

static uint64_t rand_elem(void) { return ef__drbg_below(&rng, P); }

static void test_field(void) {
    const uint64_t edge[] = {0, 1, 2, 3, P - 1, P - 2, 0xFFFFFFFFu, (uint64_t)1 << 32,
                             (uint64_t)1 << 60, ((uint64_t)1 << 56) - 1, 0x1FFFFFFF00000000u,
                             0x00000000FFFFFFFFu | (uint64_t)1 << 60};
    size_t ne = sizeof edge / sizeof edge[0];
    int bad = 0;
    for (size_t i = 0; i < ne; i++)
        for (size_t j = 0; j < ne; j++) {
            uint64_t a = edge[i], b = edge[j];
            if (ef__gf61_mul(a, b) != slow_mul(a, b)) bad++;
            if (ef__gf61_add(a, b) != (a + b) % P) bad++;
            if (ef__gf61_sub(a, b) != (a + P - b) % P) bad++;
        }
    for (int i = 0; i < 20000; i++) {
        uint64_t a = rand_elem(), b = rand_elem();
        uint64_t m = ef__gf61_mul(a, b);
        if (m != slow_mul(a, b) || m >= P) bad++;
        if (ef__gf61_sub(ef__gf61_add(a, b), b) != a) bad++;
    }
    CHECK_MSG(bad == 0, "%d field results differ from the reference", bad);
    /* known answers computed with Python 3's arbitrary-precision integers:
     * (a * b) % (2**61 - 1) and pow(a, 2**61 - 3, 2**61 - 1) */
    CHECK(ef__gf61_mul(0x1234567890ABCDEFu, 0x0FEDCBA987654321u) == 0x0B46A8954C120470u);
    CHECK(ef__gf61_mul(P - 1, 0x1000000000000000u) == 0x0FFFFFFFFFFFFFFFu);
    CHECK(ef__gf61_mul(P - 1, P - 2) == 2);
    CHECK(ef__gf61_mul(123456789, 987654321) == 0x01B13114FBFF5385u);
    CHECK(ef__gf61_inv(0x1234567890ABCDEFu) == 0x099C73701EF648F5u);
    CHECK(ef__gf61_inv(1234567) == 0x1CCD74760CD597E8u);
    /* by hand: 2 * 2^60 = 2^61 = 1, and 3 * (2^62 - 1) / 3 = 2p + 1 = 1 */
    CHECK(ef__gf61_inv(2) == (uint64_t)1 << 60);
    CHECK(ef__gf61_inv(3) == 0x1555555555555555u);
    CHECK(ef__gf61_inv(1) == 1);
    CHECK(ef__gf61_inv(P - 1) == P - 1);
    CHECK(ef__gf61_inv(0) == 0);
    bad = 0;
    for (int i = 0; i < 500; i++) {
        uint64_t a = rand_elem();
        if (a && ef__gf61_mul(a, ef__gf61_inv(a)) != 1) bad++;
    }
    CHECK_MSG(bad == 0, "%d of 500 inverses wrong", bad);
}

/* ---- helpers ------------------------------------------------------------------ */

static void rand_secret(uint8_t s[EF__SS_SECRET]) { ef__drbg_bytes(&rng, s, EF__SS_SECRET); }

/* Splits s among points 1..n (or xs when given) and returns EF_OK. */
static ef_status split(const uint8_t s[EF__SS_SECRET], int t, int n, const uint32_t *xs,
                       ef__ss_share *out) {
    uint32_t pts[64];
    if (!xs) {
        for (int i = 0; i < n; i++) pts[i] = (uint32_t)i + 1;
        xs = pts;
    }
    return ef__shamir_split(s, t, n, xs, &rng, out);
}

/* combine of shares[idx[0..m)] with threshold t into got; returns the status */
static ef_status combine_sel(const ef__ss_share *shares, const int *idx, int m, int t,
                             uint8_t got[EF__SS_SECRET]) {
    ef__ss_share sel[64];
    for (int i = 0; i < m; i++) sel[i] = shares[idx[i]];
    return ef__shamir_combine(sel, m, t, got);
}

/* ---- a published example ---------------------------------------------------- */

/* Wikipedia, "Shamir's secret sharing", section "Problem of using integer
 * arithmetic" (also the example in the archived revision
 * https://wikiless.lunar.icu/wiki/User:Garo/sandbox): secret 1234, t = 3,
 * f(x) = 1234 + 166 x + 94 x^2, points (1, 1494) (2, 1942) (3, 2578)
 * (4, 3402) (5, 4414) (6, 5614). The values stay far below p, so they are
 * the same in GF(2^61 - 1): as chunk 0 of a secret whose other chunks are
 * shared by zero polynomials, any 3 of them must give bytes D2 04 00 ... */
static void test_published_example(void) {
    static const uint64_t ys[6] = {1494, 1942, 2578, 3402, 4414, 5614};
    ef__ss_share sh[6];
    for (int i = 0; i < 6; i++) {
        uint64_t x = (uint64_t)i + 1;
        CHECK(ys[i] == 1234 + 166 * x + 94 * x * x); /* the transcription */
        memset(&sh[i], 0, sizeof sh[i]);
        sh[i].x = (uint32_t)x;
        sh[i].y[0] = ys[i];
    }
    uint8_t want[EF__SS_SECRET] = {0xD2, 0x04};
    int ok = 0, subsets = 0;
    for (int a = 0; a < 6; a++)
        for (int b = a + 1; b < 6; b++)
            for (int c = b + 1; c < 6; c++) {
                int idx[3] = {c, a, b};
                uint8_t got[EF__SS_SECRET];
                subsets++;
                if (combine_sel(sh, idx, 3, 3, got) == EF_OK && memcmp(got, want, 32) == 0) ok++;
            }
    CHECK_MSG(ok == subsets && subsets == 20, "%d of %d subsets recovered 1234", ok, subsets);
}

/* ---- recovery ------------------------------------------------------------------- */

static void test_all_subsets_5_3(void) {
    enum { N = 5, T = 3 };
    int full = 0, fewer = 0, wrong = 0, nsub = 0;
    for (int rep = 0; rep < 20; rep++) {
        uint8_t s[EF__SS_SECRET], got[EF__SS_SECRET];
        rand_secret(s);
        ef__ss_share sh[N];
        CHECK_OK(split(s, T, N, NULL, sh));
        for (int i = 0; i < N; i++)
            for (int c = 0; c < EF__SS_CHUNKS; c++) CHECK(sh[i].y[c] < P);
        /* every nonempty subset, as a bit mask, in both orders */
        for (unsigned mask = 1; mask < (1u << N); mask++) {
            int idx[N], m = 0;
            for (int i = 0; i < N; i++)
                if (mask >> i & 1) idx[m++] = i;
            for (int order = 0; order < 2; order++) {
                if (order)
                    for (int i = 0; i < m / 2; i++) {
                        int tmp = idx[i];
                        idx[i] = idx[m - 1 - i], idx[m - 1 - i] = tmp;
                    }
                memset(got, 0xA5, sizeof got);
                ef_status st = combine_sel(sh, idx, m, T, got);
                if (m >= T) {
                    nsub++;
                    if (st == EF_OK && memcmp(got, s, sizeof s) == 0) full++;
                } else {
                    /* too few shares: refused, secret untouched */
                    static const uint8_t a5[EF__SS_SECRET] = {
                        0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5,
                        0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5,
                        0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5};
                    if (st == EF_ERR_INVALID && memcmp(got, a5, sizeof got) == 0) fewer++;
                    /* interpolating the t - 1 shares as if the degree were
                     * t - 2 must not give the secret */
                    if (m == T - 1 && combine_sel(sh, idx, 2, 2, got) == EF_OK &&
                        memcmp(got, s, sizeof s) == 0)
                        wrong++;
                }
            }
        }
    }
    /* subsets of size >= 3 of 5: 10 + 5 + 1 = 16, both orders, 20 secrets */
    CHECK_MSG(full == 20 * 2 * 16 && nsub == full, "%d of %d subsets recovered the secret", full,
              nsub);
    CHECK_MSG(fewer == 20 * 2 * 15, "%d of %d too-small subsets refused", fewer, 20 * 2 * 15);
    CHECK_MSG(wrong == 0, "%d pairs of shares gave the secret with t = 2", wrong);
}

static void shuffle(int *a, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)ef__drbg_below(&rng, (uint64_t)i + 1);
        int tmp = a[i];
        a[i] = a[j], a[j] = tmp;
    }
}

static void test_random_subsets_50_17(void) {
    enum { N = 50, T = 17 };
    uint32_t xs[N];
    /* sparse, large points: client ids up to 2^32 - 1 */
    for (int i = 0; i < N; i++) {
        int dup;
        do {
            xs[i] = (uint32_t)ef__drbg_u64(&rng) | 1u;
            dup = 0;
            for (int j = 0; j < i; j++) dup |= xs[j] == xs[i];
        } while (dup);
    }
    xs[0] = UINT32_MAX;
    int ok = 0, trials = 0, refused = 0, lower = 0, lower_ok = 0;
    for (int rep = 0; rep < 10; rep++) {
        uint8_t s[EF__SS_SECRET], got[EF__SS_SECRET];
        rand_secret(s);
        ef__ss_share sh[N];
        CHECK_OK(split(s, T, N, xs, sh));
        for (int k = 0; k < 20; k++) {
            int idx[N];
            for (int i = 0; i < N; i++) idx[i] = i;
            shuffle(idx, N);
            int m = T + (int)ef__drbg_below(&rng, N - T + 1);
            trials++;
            if (combine_sel(sh, idx, m, T, got) == EF_OK && memcmp(got, s, 32) == 0) ok++;
            if (combine_sel(sh, idx, T - 1, T, got) == EF_ERR_INVALID) refused++;
            /* t - 1 shares read as a degree t - 2 polynomial: a random
             * value, almost always too wide for its chunks */
            ef_status st = combine_sel(sh, idx, T - 1, T - 1, got);
            lower++;
            if (st == EF_OK && memcmp(got, s, 32) == 0) lower_ok++;
        }
    }
    CHECK_MSG(ok == trials, "%d of %d random subsets recovered the secret", ok, trials);
    CHECK_MSG(refused == trials, "%d of %d (t-1)-subsets refused", refused, trials);
    CHECK_MSG(lower_ok == 0, "%d of %d (t-1)-subsets gave the secret", lower_ok, lower);
}

static void test_t1_and_tn(void) {
    uint8_t s[EF__SS_SECRET], got[EF__SS_SECRET];
    rand_secret(s);
    /* t = 1: constant polynomials, every share holds the chunks themselves */
    ef__ss_share sh[7];
    CHECK_OK(split(s, 1, 4, NULL, sh));
    uint64_t ch0 = 0;
    for (int i = 6; i >= 0; i--) ch0 = ch0 << 8 | s[i];
    for (int i = 0; i < 4; i++) {
        CHECK(sh[i].y[0] == ch0);
        CHECK_OK(ef__shamir_combine(&sh[i], 1, 1, got));
        CHECK(memcmp(got, s, 32) == 0);
    }
    CHECK(ef__shamir_combine(sh, 0, 1, got) == EF_ERR_INVALID);
    /* t = n = 1 */
    uint32_t x1 = 9;
    CHECK_OK(ef__shamir_split(s, 1, 1, &x1, &rng, sh));
    CHECK_OK(ef__shamir_combine(sh, 1, 1, got));
    CHECK(memcmp(got, s, 32) == 0 && sh[0].x == 9);
    /* t = n = 7: all seven recover, any six do not */
    CHECK_OK(split(s, 7, 7, NULL, sh));
    ef__ss_share rev[7];
    for (int i = 0; i < 7; i++) rev[i] = sh[6 - i];
    memset(got, 0, sizeof got);
    CHECK_OK(ef__shamir_combine(rev, 7, 7, got));
    CHECK(memcmp(got, s, 32) == 0);
    int leaked = 0;
    for (int skip = 0; skip < 7; skip++) {
        ef__ss_share six[6];
        for (int i = 0, k = 0; i < 7; i++)
            if (i != skip) six[k++] = sh[i];
        CHECK(ef__shamir_combine(six, 6, 7, got) == EF_ERR_INVALID);
        if (ef__shamir_combine(six, 6, 6, got) == EF_OK && memcmp(got, s, 32) == 0) leaked++;
    }
    CHECK(leaked == 0);
}

static void test_edge_secrets(void) {
    uint8_t s[EF__SS_SECRET], got[EF__SS_SECRET];
    for (int v = 0; v < 4; v++) {
        /* all 0x00, all 0xFF (every chunk at its largest value), and
         * alternating */
        for (int i = 0; i < 32; i++)
            s[i] = v == 0 ? 0x00 : v == 1 ? 0xFF : (uint8_t)((i & 1) ^ (v == 3) ? 0xFF : 0x00);
        for (int t = 1; t <= 5; t++) {
            ef__ss_share sh[5];
            CHECK_OK(split(s, t, 5, NULL, sh));
            int idx[5] = {4, 2, 0, 3, 1};
            memset(got, 0x5A, sizeof got);
            CHECK_OK(combine_sel(sh, idx, t, t, got));
            CHECK_MSG(memcmp(got, s, 32) == 0, "pattern %d, t = %d", v, t);
        }
    }
}

/* With t = 2 one share is s + a x with a uniform: its value must not depend
 * on the secret. The top bit of y (y >= 2^60) is set with probability
 * (p - 2^60) / p ~ 1/2 whatever s is; over 4000 splits each of the 0x00
 * and the 0xFF secret, the fraction must be within 4 standard errors
 * (4 * 0.5 / sqrt(4000) = 0.032) of 1/2. A constant or biased coefficient
 * fails this. */
static void test_single_share_uniform(void) {
    enum { SPLITS = 4000 };
    for (int v = 0; v < 2; v++) {
        uint8_t s[EF__SS_SECRET];
        memset(s, v ? 0xFF : 0x00, sizeof s);
        int top[EF__SS_CHUNKS] = {0};
        for (int r = 0; r < SPLITS; r++) {
            ef__ss_share sh[2];
            CHECK_OK(split(s, 2, 2, NULL, sh));
            for (int c = 0; c < EF__SS_CHUNKS; c++) top[c] += sh[1].y[c] >= (uint64_t)1 << 60;
        }
        for (int c = 0; c < EF__SS_CHUNKS; c++) {
            double f = (double)top[c] / SPLITS;
            CHECK_MSG(fabs(f - 0.5) < 0.032, "secret 0x%02X chunk %d: top bit set in %.3f",
                      v ? 0xFF : 0, c, f);
        }
    }
}

/* ---- rejections ------------------------------------------------------------------ */

static void test_split_rejects(void) {
    uint8_t s[EF__SS_SECRET];
    rand_secret(s);
    ef__ss_share out[5], before[5];
    memset(out, 0x77, sizeof out);
    memcpy(before, out, sizeof out);
    ef__drbg save = rng;
    uint32_t zero_x[5] = {1, 2, 0, 4, 5}, dup_x[5] = {1, 2, 3, 2, 5}, ok_x[5] = {1, 2, 3, 4, 5};
    CHECK(ef__shamir_split(s, 3, 5, zero_x, &rng, out) == EF_ERR_INVALID);
    CHECK(strstr(ef_last_error(), "x = 0") != NULL);
    CHECK(ef__shamir_split(s, 3, 5, dup_x, &rng, out) == EF_ERR_INVALID);
    CHECK(strstr(ef_last_error(), "both x = 2") != NULL);
    CHECK(ef__shamir_split(s, 0, 5, ok_x, &rng, out) == EF_ERR_INVALID);
    CHECK(ef__shamir_split(s, -1, 5, ok_x, &rng, out) == EF_ERR_INVALID);
    CHECK(ef__shamir_split(s, 6, 5, ok_x, &rng, out) == EF_ERR_INVALID);
    CHECK(ef__shamir_split(s, 1, 0, ok_x, &rng, out) == EF_ERR_INVALID);
    CHECK(ef__shamir_split(NULL, 3, 5, ok_x, &rng, out) == EF_ERR_INVALID);
    CHECK(ef__shamir_split(s, 3, 5, NULL, &rng, out) == EF_ERR_INVALID);
    CHECK(ef__shamir_split(s, 3, 5, ok_x, NULL, out) == EF_ERR_INVALID);
    CHECK(shares_eq(out, before, 5));
    CHECK(memcmp(&save, &rng, sizeof rng) == 0); /* no randomness consumed */
}

static void *fail_malloc(void *user, size_t size) {
    (void)user, (void)size;
    return NULL;
}
static void *pass_realloc(void *user, void *p, size_t size) {
    (void)user;
    return realloc(p, size);
}
static void pass_free(void *user, void *p) {
    (void)user;
    free(p);
}

static void test_split_nomem(void) {
    uint8_t s[EF__SS_SECRET];
    rand_secret(s);
    ef__ss_share out[3], before[3];
    memset(out, 0x33, sizeof out);
    memcpy(before, out, sizeof out);
    uint32_t xs[3] = {1, 2, 3};
    ef_allocator failing = {fail_malloc, pass_realloc, pass_free, NULL};
    ef_set_allocator(&failing);
    ef_status st = ef__shamir_split(s, 2, 3, xs, &rng, out);
    ef_set_allocator(NULL);
    CHECK(st == EF_ERR_NOMEM);
    CHECK(shares_eq(out, before, 3));
}

static void test_combine_rejects(void) {
    uint8_t s[EF__SS_SECRET], got[EF__SS_SECRET], before[EF__SS_SECRET];
    rand_secret(s);
    ef__ss_share sh[5], bad[5];
    CHECK_OK(split(s, 3, 5, NULL, sh));
    memset(got, 0x3C, sizeof got);
    memcpy(before, got, sizeof got);
    /* zero x, repeated x (also beyond the first t), y = p, y = 2^64 - 1 */
    memcpy(bad, sh, sizeof sh);
    bad[1].x = 0;
    CHECK(ef__shamir_combine(bad, 5, 3, got) == EF_ERR_FORMAT);
    memcpy(bad, sh, sizeof sh);
    bad[4].x = bad[0].x;
    CHECK(ef__shamir_combine(bad, 5, 3, got) == EF_ERR_FORMAT);
    CHECK(strstr(ef_last_error(), "both x") != NULL);
    memcpy(bad, sh, sizeof sh);
    bad[2].y[3] = P;
    CHECK(ef__shamir_combine(bad, 3, 3, got) == EF_ERR_FORMAT);
    memcpy(bad, sh, sizeof sh);
    bad[3].y[0] = UINT64_MAX;
    CHECK(ef__shamir_combine(bad, 5, 3, got) == EF_ERR_FORMAT);
    CHECK(ef__shamir_combine(sh, 3, 0, got) == EF_ERR_INVALID);
    CHECK(ef__shamir_combine(NULL, 3, 3, got) == EF_ERR_INVALID);
    CHECK(memcmp(got, before, sizeof got) == 0);

    /* A corrupted value in the 4-byte chunk moves the recovered chunk by a
     * nonzero multiple of a Lagrange coefficient, i.e. to a random field
     * element: it fits 4 bytes with probability 2^-29, so it is refused. */
    int refused4 = 0, refused0 = 0, fooled = 0;
    enum { TRIALS = 300 };
    for (int k = 0; k < TRIALS; k++) {
        memcpy(bad, sh, sizeof sh);
        int j = (int)ef__drbg_below(&rng, 3);
        uint64_t delta = 1 + ef__drbg_below(&rng, P - 1);
        bad[j].y[4] = ef__gf61_add(bad[j].y[4], delta);
        ef_status st = ef__shamir_combine(bad, 3, 3, got);
        refused4 += st == EF_ERR_FORMAT;
        /* in a 7-byte chunk the check catches 31 in 32; a miss yields a
         * different secret, never the original */
        memcpy(bad, sh, sizeof sh);
        bad[j].y[0] = ef__gf61_add(bad[j].y[0], delta);
        uint8_t g2[EF__SS_SECRET];
        st = ef__shamir_combine(bad, 3, 3, g2);
        if (st == EF_ERR_FORMAT)
            refused0++;
        else if (memcmp(g2, s, 32) == 0)
            fooled++;
    }
    CHECK(memcmp(got, before, sizeof got) == 0);
    CHECK_MSG(refused4 == TRIALS, "%d of %d corruptions of the 4-byte chunk refused", refused4,
              TRIALS);
    /* expected 31/32 of 300 = 291; 270 is more than 4 standard deviations
     * (sqrt(300 * 31/32 / 32) = 3.0) below it */
    CHECK_MSG(refused0 >= 270 && fooled == 0, "7-byte chunk: %d of %d refused, %d fooled", refused0,
              TRIALS, fooled);
    printf("corrupted shares refused: 4-byte chunk %d/%d, 7-byte chunk %d/%d\n", refused4, TRIALS,
           refused0, TRIALS);

    /* shares of two different secrets mixed */
    uint8_t s2[EF__SS_SECRET];
    rand_secret(s2);
    ef__ss_share sh2[5];
    CHECK_OK(split(s2, 3, 5, NULL, sh2));
    memcpy(bad, sh, sizeof sh);
    bad[1] = sh2[1];
    CHECK(ef__shamir_combine(bad, 3, 3, got) == EF_ERR_FORMAT);
    CHECK(strstr(ef_last_error(), "do not belong to one secret") != NULL);
}

/* ---- packing ------------------------------------------------------------------- */

static void test_pack(void) {
    uint8_t s[EF__SS_SECRET];
    rand_secret(s);
    uint32_t xs[4] = {1, 0x01020304u, 0x80000000u, UINT32_MAX};
    ef__ss_share sh[4];
    CHECK_OK(ef__shamir_split(s, 4, 4, xs, &rng, sh));
    uint8_t packed[4][EF__SS_SHARE_BYTES];
    for (int i = 0; i < 4; i++) {
        ef__ss_share_pack(packed[i], &sh[i]);
        ef__ss_share back;
        memset(&back, 0, sizeof back);
        CHECK_OK(ef__ss_share_unpack(&back, packed[i]));
        CHECK(share_eq(&back, &sh[i]));
    }
    CHECK(EF__SS_SHARE_BYTES == 44);
    /* layout: x little-endian, then each y little-endian */
    CHECK(packed[1][0] == 0x04 && packed[1][1] == 0x03 && packed[1][2] == 0x02 &&
          packed[1][3] == 0x01);
    for (int c = 0; c < EF__SS_CHUNKS; c++) {
        uint64_t y = 0;
        for (int b = 7; b >= 0; b--) y = y << 8 | packed[2][4 + 8 * c + b];
        CHECK(y == sh[2].y[c]);
    }
    /* the secret survives the trip through bytes */
    ef__ss_share back[4];
    for (int i = 0; i < 4; i++) CHECK_OK(ef__ss_share_unpack(&back[i], packed[i]));
    uint8_t got[EF__SS_SECRET];
    CHECK_OK(ef__shamir_combine(back, 4, 4, got));
    CHECK(memcmp(got, s, 32) == 0);

    /* rejections: y = p, y = 2^64 - 1, x = 0; p - 1 is fine */
    ef__ss_share keep = sh[0], s2 = sh[0];
    uint8_t b[EF__SS_SHARE_BYTES];
    ef__ss_share edge = sh[0];
    edge.y[2] = P - 1;
    ef__ss_share_pack(b, &edge);
    CHECK_OK(ef__ss_share_unpack(&s2, b));
    CHECK(s2.y[2] == P - 1);
    s2 = keep;
    edge.y[2] = P; /* pack does not check: it writes what it is given */
    ef__ss_share_pack(b, &edge);
    CHECK(ef__ss_share_unpack(&s2, b) == EF_ERR_FORMAT);
    CHECK(share_eq(&s2, &keep));
    ef__ss_share_pack(b, &sh[0]);
    memset(b + 4 + 8 * 4, 0xFF, 8);
    CHECK(ef__ss_share_unpack(&s2, b) == EF_ERR_FORMAT);
    ef__ss_share_pack(b, &sh[0]);
    memset(b, 0, 4);
    CHECK(ef__ss_share_unpack(&s2, b) == EF_ERR_FORMAT);
    CHECK(strstr(ef_last_error(), "x = 0") != NULL);
    CHECK(share_eq(&s2, &keep));
    /* every single-bit flip of the top 3 bits of a y is caught (y >= 2^61) */
    int caught = 0;
    for (int c = 0; c < EF__SS_CHUNKS; c++)
        for (int bit = 61; bit < 64; bit++) {
            ef__ss_share_pack(b, &sh[0]);
            b[4 + 8 * c + bit / 8] ^= (uint8_t)(1u << (bit % 8));
            caught += ef__ss_share_unpack(&s2, b) == EF_ERR_FORMAT;
        }
    CHECK(caught == 3 * EF__SS_CHUNKS);
}

static void test_deterministic(void) {
    uint8_t key[32], s[EF__SS_SECRET];
    memset(s, 0x42, sizeof s);
    ef__drbg_key_from_seed(key, 5, "shamir");
    ef__ss_share a[4], b[4], c[4];
    uint32_t xs[4] = {1, 2, 3, 4};
    ef__drbg g;
    ef__drbg_seed(&g, key, 0);
    CHECK_OK(ef__shamir_split(s, 3, 4, xs, &g, a));
    ef__drbg_seed(&g, key, 0);
    CHECK_OK(ef__shamir_split(s, 3, 4, xs, &g, b));
    ef__drbg_seed(&g, key, 1);
    CHECK_OK(ef__shamir_split(s, 3, 4, xs, &g, c));
    CHECK(shares_eq(a, b, 4));
    CHECK(!shares_eq(a, c, 4));
    ef__drbg_wipe(&g);
}

int main(void) {
    CHECK(sodium_init() >= 0);
    uint8_t key[32];
    ef__drbg_key_from_seed(key, 20240611, "test_shamir");
    ef__drbg_seed(&rng, key, 0);
    test_field();
    test_published_example();
    test_all_subsets_5_3();
    test_random_subsets_50_17();
    test_t1_and_tn();
    test_edge_secrets();
    test_single_share_uniform();
    test_split_rejects();
    test_split_nomem();
    test_combine_rejects();
    test_pack();
    test_deterministic();
    ef__drbg_wipe(&rng);
    return tu_finish("test_shamir");
}
