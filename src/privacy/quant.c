/*
 * The quantizer in front of secure aggregation: masks live in Z_{2^b}, so a
 * float update is clipped to [-R, R], mapped onto the integer grid 0..L with
 * unbiased stochastic rounding, masked and summed as integers, and the
 * server maps the integer sum back. L is chosen so that the sum of the
 * largest number of vectors the round can aggregate stays below 2^b, i.e.
 * the modular sum equals the true integer sum (no wrap-around) and
 * dequantizing it is exact up to the rounding of each coordinate.
 */
#include <math.h>
#include <string.h>

#include <sodium.h>

#include "core/core_internal.h"
#include "privacy_internal.h"

/* coordinates quantized per block of random bytes */
#define QBLOCK 1024

ef_status ef__quant_init(ef__quant *q, double clip, int bits, uint32_t max_summands) {
    if (!q) return ef__fail(EF_ERR_INVALID, "quantizer: NULL argument");
    if (!isfinite(clip) || clip <= 0.0)
        return ef__fail(EF_ERR_INVALID, "quantizer: clip %g is not a finite positive number", clip);
    if (bits < 1 || bits > 32)
        return ef__fail(EF_ERR_INVALID, "quantizer: modulus 2^%d is outside 2^1..2^32", bits);
    if (max_summands == 0) return ef__fail(EF_ERR_INVALID, "quantizer: max_summands is 0");
    uint32_t levels = ef__mod_mask(bits) / max_summands; /* floor((2^b - 1) / n) */
    if (levels > EF__QUANT_MAX_LEVELS) levels = EF__QUANT_MAX_LEVELS;
    if (levels < 1)
        return ef__fail(EF_ERR_RANGE,
                        "quantizer: %u summands do not fit in 2^%d without wrapping (need "
                        "2^bits - 1 >= max_summands)",
                        max_summands, bits);
    q->clip = clip;
    q->levels = levels;
    q->bits = bits;
    return EF_OK;
}

/* Random words as little-endian uint32 whatever the host, so a simulation
 * quantizes identically everywhere. */
static void words_le(uint32_t *w, size_t k) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    (void)w, (void)k; /* already in host order */
#else
    for (size_t i = 0; i < k; i++) {
        uint8_t b[4];
        memcpy(b, &w[i], 4);
        w[i] = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    }
#endif
}

/* One block of ef__quantize: x[0..k) to out[0..k) with random words r[0..k).
 * Branch-free so that it vectorizes: every conversion is between double and
 * int32 (levels <= 2^24), which SSE2 has in packed form, and the rounded
 * value stays a double until the end. */
#if defined(__GNUC__)
/* kept out of line: inlined into ef__quantize, GCC 12 leaves this loop scalar
 * (about 3x slower) */
__attribute__((noinline))
#endif
static void quantize_block(uint32_t *restrict out, const float *restrict x,
                           const uint32_t *restrict rw, size_t k, double scale, double R,
                           double L, double to_grid, double mid) {
    /* (to_grid = L / 2R and mid = L / 2 come from the caller: GCC 12 does
     * not vectorize the loop with the division in this function either) */
    for (size_t i = 0; i < k; i++) {
        double s = scale * (double)x[i];
        double c = s < -R ? -R : s;
        c = c > R ? R : c;
        double u = (c + R) * to_grid;
        /* to_grid is rounded, so the top of the range can land a hair above
         * L; a NaN fails every comparison and is replaced last */
        u = u < L ? u : L;
        u = s == s ? u : mid;
        double fl = (double)(int32_t)u; /* u >= 0: truncation is floor */
        /* 31 random bits r: up iff r < frac 2^31, i.e. with probability frac
         * rounded up to a multiple of 2^-31 */
        double r = (double)(int32_t)(rw[i] >> 1);
        double v = fl + (r < (u - fl) * 2147483648.0 ? 1.0 : 0.0);
        out[i] = (uint32_t)(int32_t)v;
    }
}

void ef__quantize(uint32_t *out, const float *x, size_t d, double scale, const ef__quant *q,
                  ef__drbg *rng) {
    const double R = q->clip, L = (double)q->levels;
    const double to_grid = L / (2.0 * R), mid = 0.5 * L;
    uint32_t rw[QBLOCK];
    for (size_t off = 0; off < d; off += QBLOCK) {
        size_t k = d - off < QBLOCK ? d - off : QBLOCK;
        ef__drbg_bytes(rng, rw, 4 * k);
        words_le(rw, k);
        quantize_block(out + off, x + off, rw, k, scale, R, L, to_grid, mid);
    }
    sodium_memzero(rw, sizeof rw);
}

void ef__dequantize_sum(float *out, const uint32_t *sum, size_t d, uint32_t n_summed,
                        const ef__quant *q) {
    const double step = 2.0 * q->clip / (double)q->levels;
    const double shift = (double)n_summed * q->clip;
    for (size_t i = 0; i < d; i++) out[i] = (float)((double)sum[i] * step - shift);
}
