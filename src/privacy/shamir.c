/*
 * Shamir t-of-n secret sharing of 32-byte secrets over GF(2^61 - 1), the
 * building block SecAgg+ uses to let the server recover a dropped client's
 * mask key (or a survivor's self-mask seed) from t of its neighbours.
 *
 * Why this field: 2^61 - 1 is a Mersenne prime, so reduction is a shift and
 * an add, and a 7-byte chunk of the secret fits below it. Why chunks rather
 * than one big field: a 256-bit prime field would need multi-word
 * arithmetic; five independent sharings of 56-bit (and one 32-bit) chunks
 * cost five small polynomials and keep every value in one uint64_t. The
 * unused top bits of each chunk double as a cheap integrity check on
 * recovery (see ef__shamir_combine).
 */
#include <string.h>

#include <sodium.h>

#include "core/core_internal.h"
#include "privacy_internal.h"

#define P EF__GF61_P

/* bytes of secret in chunk c: 7, 7, 7, 7, 4 */
static int chunk_len(int c) { return c < EF__SS_CHUNKS - 1 ? 7 : 4; }

/* Reduces v < 2^64 mod p (2^61 = 1 mod p). The result of one fold is below
 * 2^61 + 8, so a single conditional subtraction makes it canonical. */
static uint64_t reduce64(uint64_t v) {
    uint64_t r = (v & P) + (v >> 61);
    return r >= P ? r - P : r;
}

uint64_t ef__gf61_add(uint64_t a, uint64_t b) {
    uint64_t r = a + b; /* < 2^62: no overflow */
    return r >= P ? r - P : r;
}

uint64_t ef__gf61_sub(uint64_t a, uint64_t b) { return a >= b ? a - b : a + P - b; }

uint64_t ef__gf61_mul(uint64_t a, uint64_t b) {
    /* a = a1 2^32 + a0 with a1 < 2^29, a0 < 2^32 (same for b), so
     * a b = a1 b1 2^64 + (a1 b0 + a0 b1) 2^32 + a0 b0, and mod p:
     *   2^64 = 8, so a1 b1 2^64 = 8 a1 b1 < 2^61;
     *   mid = a1 b0 + a0 b1 < 2^62; mid 2^32 = (mid >> 29) 2^61 + (mid & (2^29-1)) 2^32
     *        = (mid >> 29) + (mid & (2^29-1)) 2^32, the parts < 2^33 and < 2^61;
     *   a0 b0 < 2^64 reduces by one fold to < 2^61 + 8.
     * The four terms add up to less than 2^63, and one more fold finishes. */
    uint64_t a0 = a & 0xFFFFFFFFu, a1 = a >> 32;
    uint64_t b0 = b & 0xFFFFFFFFu, b1 = b >> 32;
    uint64_t hi = (a1 * b1) << 3;
    uint64_t mid = a1 * b0 + a0 * b1;
    uint64_t lo = a0 * b0;
    uint64_t s = hi + (mid >> 29) + ((mid & 0x1FFFFFFFu) << 32) + (lo & P) + (lo >> 61);
    return reduce64(s);
}

uint64_t ef__gf61_inv(uint64_t a) {
    /* a^(p-2) by square-and-multiply; p - 2 = 2^61 - 3 */
    uint64_t e = P - 2, r = 1, b = a;
    while (e) {
        if (e & 1) r = ef__gf61_mul(r, b);
        b = ef__gf61_mul(b, b);
        e >>= 1;
    }
    return r;
}

static uint64_t get_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void put_le(uint8_t *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* The secret's chunks as field elements. */
static void secret_to_chunks(uint64_t ch[EF__SS_CHUNKS], const uint8_t secret[EF__SS_SECRET]) {
    for (int c = 0, off = 0; c < EF__SS_CHUNKS; off += chunk_len(c), c++)
        ch[c] = get_le(secret + off, chunk_len(c));
}

ef_status ef__shamir_split(const uint8_t secret[EF__SS_SECRET], int t, int n, const uint32_t *xs,
                           ef__drbg *rng, ef__ss_share *out) {
    if (!secret || !xs || !rng || !out)
        return ef__fail(EF_ERR_INVALID, "shamir split: NULL argument");
    if (t < 1 || n < t)
        return ef__fail(EF_ERR_INVALID, "shamir split: need 1 <= t <= n, got t = %d, n = %d", t, n);
    for (int i = 0; i < n; i++) {
        if (xs[i] == 0)
            return ef__fail(EF_ERR_INVALID, "shamir split: point %d is x = 0 (the secret)", i);
        for (int j = 0; j < i; j++)
            if (xs[j] == xs[i])
                return ef__fail(EF_ERR_INVALID, "shamir split: points %d and %d are both x = %u", j,
                                i, xs[i]);
    }
    /* coef[c * t + k]: coefficient of x^k of chunk c's polynomial; k = 0 is
     * the chunk itself */
    size_t ncoef = (size_t)t * EF__SS_CHUNKS, bytes;
    if (!ef__mul_size(ncoef, sizeof(uint64_t), &bytes))
        return ef__fail(EF_ERR_RANGE, "shamir split: t = %d is too large", t);
    uint64_t *coef = ef_malloc(bytes);
    if (!coef) return ef__fail(EF_ERR_NOMEM, "shamir split: out of memory for %d coefficients", t);
    uint64_t ch[EF__SS_CHUNKS];
    secret_to_chunks(ch, secret);
    for (int c = 0; c < EF__SS_CHUNKS; c++) {
        coef[(size_t)c * t] = ch[c];
        for (int k = 1; k < t; k++) coef[(size_t)c * t + k] = ef__drbg_below(rng, P);
    }
    for (int i = 0; i < n; i++) {
        uint64_t x = xs[i];
        out[i].x = xs[i];
        for (int c = 0; c < EF__SS_CHUNKS; c++) {
            /* Horner from the top coefficient down */
            const uint64_t *a = coef + (size_t)c * t;
            uint64_t y = a[t - 1];
            for (int k = t - 2; k >= 0; k--) y = ef__gf61_add(ef__gf61_mul(y, x), a[k]);
            out[i].y[c] = y;
        }
    }
    sodium_memzero(coef, bytes);
    ef_free(coef);
    sodium_memzero(ch, sizeof ch);
    return EF_OK;
}

ef_status ef__shamir_combine(const ef__ss_share *shares, int m, int t,
                             uint8_t secret[EF__SS_SECRET]) {
    if (!shares || !secret) return ef__fail(EF_ERR_INVALID, "shamir combine: NULL argument");
    if (t < 1) return ef__fail(EF_ERR_INVALID, "shamir combine: threshold t = %d < 1", t);
    if (m < t)
        return ef__fail(EF_ERR_INVALID, "shamir combine: %d shares, fewer than the threshold %d", m,
                        t);
    for (int i = 0; i < m; i++) {
        if (shares[i].x == 0)
            return ef__fail(EF_ERR_FORMAT, "shamir combine: share %d has x = 0", i);
        for (int c = 0; c < EF__SS_CHUNKS; c++)
            if (shares[i].y[c] >= P)
                return ef__fail(EF_ERR_FORMAT,
                                "shamir combine: share %d (x = %u) has a value >= 2^61 - 1", i,
                                shares[i].x);
        for (int j = 0; j < i; j++)
            if (shares[j].x == shares[i].x)
                return ef__fail(EF_ERR_FORMAT, "shamir combine: shares %d and %d are both x = %u",
                                j, i, shares[i].x);
    }
    /* f(0) = sum_j y_j l_j with l_j = prod_{k != j} x_k / (x_k - x_j); the
     * l_j depend only on the public points, the sums are secret */
    uint64_t acc[EF__SS_CHUNKS] = {0}, term;
    for (int j = 0; j < t; j++) {
        uint64_t num = 1, den = 1, xj = shares[j].x;
        for (int k = 0; k < t; k++) {
            if (k == j) continue;
            uint64_t xk = shares[k].x;
            num = ef__gf61_mul(num, xk);
            den = ef__gf61_mul(den, ef__gf61_sub(xk, xj));
        }
        uint64_t l = ef__gf61_mul(num, ef__gf61_inv(den));
        for (int c = 0; c < EF__SS_CHUNKS; c++) {
            term = ef__gf61_mul(shares[j].y[c], l);
            acc[c] = ef__gf61_add(acc[c], term);
        }
    }
    ef_status st = EF_OK;
    for (int c = 0; c < EF__SS_CHUNKS; c++)
        if (acc[c] >> (8 * chunk_len(c))) {
            st = ef__fail(EF_ERR_FORMAT,
                          "shamir combine: the shares do not belong to one secret (chunk %d "
                          "does not fit in %d bytes)",
                          c, chunk_len(c));
            goto done;
        }
    for (int c = 0, off = 0; c < EF__SS_CHUNKS; off += chunk_len(c), c++)
        put_le(secret + off, acc[c], chunk_len(c));
done:
    sodium_memzero(acc, sizeof acc);
    sodium_memzero(&term, sizeof term);
    return st;
}

void ef__ss_share_pack(uint8_t out[EF__SS_SHARE_BYTES], const ef__ss_share *s) {
    put_le(out, s->x, 4);
    for (int c = 0; c < EF__SS_CHUNKS; c++) put_le(out + 4 + 8 * c, s->y[c], 8);
}

ef_status ef__ss_share_unpack(ef__ss_share *s, const uint8_t in[EF__SS_SHARE_BYTES]) {
    ef__ss_share tmp;
    tmp.x = (uint32_t)get_le(in, 4);
    ef_status st = EF_OK;
    if (tmp.x == 0) {
        st = ef__fail(EF_ERR_FORMAT, "shamir share: x = 0");
        goto done;
    }
    for (int c = 0; c < EF__SS_CHUNKS; c++) {
        tmp.y[c] = get_le(in + 4 + 8 * c, 8);
        if (tmp.y[c] >= P) {
            st =
                ef__fail(EF_ERR_FORMAT, "shamir share (x = %u): value %d is >= 2^61 - 1", tmp.x, c);
            goto done;
        }
    }
    *s = tmp;
done:
    sodium_memzero(&tmp, sizeof tmp);
    return st;
}
