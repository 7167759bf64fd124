/*
 * Tests of ggml types and block quantization (src/io/quant.c):
 *   - half precision: hand-checked conversions (ties to even, subnormals,
 *     overflow to inf, NaN), every half round-trips, and a sweep over float
 *     bit patterns against an independent rounding (rint in double) and, where
 *     the compiler has _Float16, against the compiler's conversion;
 *   - Q8_0 / Q4_0 blocks computed by hand (all zero, ties, negative and
 *     positive extremes, clipping, nibble order, a huge value);
 *   - bit-exactness with the reference arithmetic re-derived here with every
 *     float operation rounded on its own (volatile), on random blocks and on
 *     inputs chosen so that a fused multiply-add would change a code;
 *   - dequantization, ef_quantize / ef_dequantize argument checks and the
 *     type table.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgefl/quant.h"
#include "test_util.h"

static uint32_t fbits(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

static float bitsf(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}

/* ---- half precision --------------------------------------------------------- */

static void test_fp16_hand(void) {
    struct {
        float x;
        uint16_t h;
    } k[] = {
        {0.0f, 0x0000},
        {-0.0f, 0x8000},
        {1.0f, 0x3c00},
        {-2.0f, 0xc000},
        {0.1f, 0x2e66},
        {1.0f / 3.0f, 0x3555},
        {65504.0f, 0x7bff},         /* largest half */
        {65519.99f, 0x7bff},        /* just below the halfway point */
        {65520.0f, 0x7c00},         /* halfway to 2^16: ties to even -> inf */
        {1e10f, 0x7c00},
        {-1e10f, 0xfc00},
        {0x1p-14f, 0x0400},         /* smallest normal */
        {0x1p-24f, 0x0001},         /* smallest subnormal */
        {0x1p-25f, 0x0000},         /* tie between 0 and 1 unit: even (0) */
        {0x1.8p-25f, 0x0001},       /* above the tie */
        {0x1.8p-24f, 0x0002},       /* 1.5 units: tie between 1 and 2 -> 2 */
        {0x1.4p-23f, 0x0002},       /* 2.5 units: tie between 2 and 3 -> 2 */
        {0x1.ffcp-15f, 0x0400},     /* 1023.5 units: tie -> 1024, the smallest normal */
        {1.0f + 0x1p-11f, 0x3c00},  /* tie, even mantissa below */
        {1.0f + 0x3p-11f, 0x3c02},  /* tie, odd mantissa below: round up */
        {1.0f + 0x1p-11f + 0x1p-23f, 0x3c01}, /* just above a tie */
        {2047.0f, 0x67ff},
        {2049.0f, 0x6800},          /* tie between 2048 and 2050 -> 2048 */
        {2051.0f, 0x6802},          /* tie between 2050 and 2052 -> 2052 */
        {1e-30f, 0x0000},           /* float normal, far below half range */
        {-1e-45f, 0x8000},          /* float subnormal */
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        uint16_t h = ef_fp32_to_fp16(k[i].x);
        CHECK_MSG(h == k[i].h, "fp16(%a) = 0x%04x, want 0x%04x", (double)k[i].x, h, k[i].h);
    }
    CHECK(ef_fp32_to_fp16(INFINITY) == 0x7c00);
    CHECK(ef_fp32_to_fp16(-INFINITY) == 0xfc00);
    CHECK(ef_fp32_to_fp16(NAN) == 0x7e00);
    CHECK(ef_fp32_to_fp16(-NAN) == 0xfe00);
    CHECK(ef_fp32_to_fp16(bitsf(0x7f800001u)) == 0x7e00); /* signalling NaN -> quiet */
    CHECK(ef_fp32_to_fp16(bitsf(0xffc12345u)) == 0xfe00);

    CHECK(ef_fp16_to_fp32(0x3c00) == 1.0f);
    CHECK(ef_fp16_to_fp32(0x0001) == 0x1p-24f);
    CHECK(ef_fp16_to_fp32(0x03ff) == 0x3ffp-24f);
    CHECK(ef_fp16_to_fp32(0x7bff) == 65504.0f);
    CHECK(isinf(ef_fp16_to_fp32(0x7c00)) && ef_fp16_to_fp32(0x7c00) > 0);
    CHECK(isinf(ef_fp16_to_fp32(0xfc00)) && ef_fp16_to_fp32(0xfc00) < 0);
    CHECK(isnan(ef_fp16_to_fp32(0x7e00)));
    CHECK(fbits(ef_fp16_to_fp32(0x7d01)) == 0x7fa02000u); /* payload kept */
    CHECK(fbits(ef_fp16_to_fp32(0x8000)) == 0x80000000u);
    CHECK(ef_bf16_to_fp32(0x3f80) == 1.0f);
    CHECK(ef_bf16_to_fp32(0xc040) == -3.0f);
}

static void test_fp16_all_halves(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = ef_fp16_to_fp32((uint16_t)h);
        int is_nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (is_nan) {
            bad += !isnan(f);
            continue;
        }
        bad += ef_fp32_to_fp16(f) != h;
    }
    CHECK_MSG(bad == 0, "%d halves do not round-trip", bad);
}

/* Independent reference: the nearest half as a float, by rint() on the value
 * in units of the half's ulp (rint rounds ties to even in the default mode). */
static float ref_round_half(float x) {
    double a = fabs((double)x);
    if (a >= 65520.0) return copysignf(INFINITY, x);
    int e = a > 0 ? (int)floor(log2(a)) : -14;
    /* log2 can be off by one near powers of two: fix the binade exactly */
    if (a > 0 && ldexp(1.0, e) > a) e--;
    if (a > 0 && ldexp(1.0, e + 1) <= a) e++;
    if (e < -14) e = -14;
    double ulp = ldexp(1.0, e - 10);
    double q = rint(a / ulp);
    return copysignf((float)(q * ulp), x);
}

static int check_one_fp16(float x) {
    uint16_t h = ef_fp32_to_fp16(x);
    float got = ef_fp16_to_fp32(h);
    float want = ref_round_half(x);
    if (fbits(got) != fbits(want)) {
        if (tu_failures < 20)
            fprintf(stderr, "fp16(%a): got %a (0x%04x), want %a\n", (double)x, (double)got, h,
                    (double)want);
        tu_failures++;
        return 1;
    }
#ifdef __FLT16_MAX__
    _Float16 c = (_Float16)x;
    uint16_t hc;
    memcpy(&hc, &c, 2);
    if (hc != h) {
        if (tu_failures < 20)
            fprintf(stderr, "fp16(%a): 0x%04x, the compiler's _Float16 gives 0x%04x\n", (double)x,
                    h, hc);
        tu_failures++;
        return 1;
    }
#endif
    return 0;
}

static void test_fp16_sweep(void) {
    int bad = 0;
    long n = 0;
    /* every 251st bit pattern (all exponents, both signs), NaNs skipped */
    for (uint64_t b = 0; b < 0x100000000ull; b += 251) {
        float x = bitsf((uint32_t)b);
        if (isnan(x)) continue;
        bad += check_one_fp16(x);
        n++;
    }
    /* every half boundary: the midpoint between neighbouring halves and the
     * floats one ulp either side of it, where rounding decides */
    for (uint32_t h = 0; h < 0x7c00; h++) {
        double lo = ef_fp16_to_fp32((uint16_t)h);
        double hi = h + 1 < 0x7c00 ? ef_fp16_to_fp32((uint16_t)(h + 1)) : 65536.0;
        float mid = (float)((lo + hi) / 2); /* exact: fits in 12 bits */
        float xs[3] = {mid, nextafterf(mid, 0.0f), nextafterf(mid, INFINITY)};
        for (int k = 0; k < 3; k++) {
            bad += check_one_fp16(xs[k]);
            bad += check_one_fp16(-xs[k]);
            n += 2;
        }
    }
    tu_checks++;
    if (bad) fprintf(stderr, "fp16 sweep: %d of %ld conversions wrong\n", bad, n);
#ifdef __FLT16_MAX__
    printf("fp16 sweep: %ld conversions checked against rint() and _Float16\n", n);
#else
    printf("fp16 sweep: %ld conversions checked against rint() (no _Float16 here)\n", n);
#endif
}

/* ---- reference arithmetic, re-derived with explicit rounding ---------------- */

/* Each intermediate goes through a volatile float so that no FMA contraction
 * can happen here (this file is built with -ffp-contract=fast). */
static void expect_q8_0(const float *x, ef_block_q8_0 *y) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) {
        float a = fabsf(x[j]);
        if (a > amax) amax = a;
    }
    volatile float d = amax / 127.0f;
    volatile float id = d != 0.0f ? 1.0f / d : 0.0f;
    y->d = ef_fp32_to_fp16(d);
    for (int j = 0; j < 32; j++) {
        volatile float v = x[j] * id;
        y->qs[j] = (int8_t)roundf(v);
    }
}

static void expect_q4_0(const float *x, ef_block_q4_0 *y) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    volatile float d = max / -8.0f;
    volatile float id = d != 0.0f ? 1.0f / d : 0.0f;
    y->d = ef_fp32_to_fp16(d);
    for (int j = 0; j < 16; j++) {
        volatile float v0 = x[j] * id, v1 = x[16 + j] * id;
        volatile float s0 = v0 + 8.5f, s1 = v1 + 8.5f;
        int q0 = (int)s0, q1 = (int)s1; /* truncation toward zero */
        if (q0 > 15) q0 = 15;
        if (q1 > 15) q1 = 15;
        y->qs[j] = (uint8_t)(q0 | q1 << 4);
    }
}

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd32(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 11);
}
/* uniform in [-s, s) */
static float rndf(float s) { return ((float)(rnd32() >> 8) / 16777216.0f * 2.0f - 1.0f) * s; }

static void test_random_blocks(void) {
    enum { NB = 4000 };
    float *x = malloc(NB * 32 * sizeof *x);
    ef_block_q8_0 *q8 = malloc(NB * sizeof *q8);
    ef_block_q4_0 *q4 = malloc(NB * sizeof *q4);
    int bad8 = 0, bad4 = 0;
    for (int b = 0; b < NB; b++) {
        /* scales from 1e-6 to 1e3, some blocks with one outlier, some sparse */
        float s = powf(10.0f, (float)(b % 10) - 6.0f);
        for (int j = 0; j < 32; j++) x[b * 32 + j] = rndf(s);
        if (b % 7 == 0) x[b * 32 + (int)(rnd32() % 32)] *= 50.0f;
        if (b % 11 == 0)
            for (int j = 0; j < 32; j += 2) x[b * 32 + j] = 0.0f;
    }
    ef_quantize_row_q8_0_ref(x, q8, NB * 32);
    ef_quantize_row_q4_0_ref(x, q4, NB * 32);
    for (int b = 0; b < NB; b++) {
        ef_block_q8_0 e8;
        ef_block_q4_0 e4;
        expect_q8_0(x + b * 32, &e8);
        expect_q4_0(x + b * 32, &e4);
        bad8 += memcmp(&e8, &q8[b], sizeof e8) != 0;
        bad4 += memcmp(&e4, &q4[b], sizeof e4) != 0;
    }
    CHECK_MSG(bad8 == 0, "%d of %d Q8_0 blocks differ from the re-derived reference", bad8, NB);
    CHECK_MSG(bad4 == 0, "%d of %d Q4_0 blocks differ from the re-derived reference", bad4, NB);
    free(x);
    free(q8);
    free(q4);
}

/* Builds inputs where fusing x*id + 8.5f into one FMA would truncate to a
 * different Q4_0 code, and checks that the library does not fuse. The
 * product x*id must round up to exactly h = -7.5 or -6.5 while its exact
 * value lies just below: unfused, h + 8.5 is an integer; fused, the sum is
 * a hair below it (representable there, the spacing being finer near 1 and
 * 2 than near 7), so truncation gives one less. */
static void test_no_fma_contraction(void) {
    int found = 0, bad = 0;
    for (int tries = 0; tries < 100000 && found < 40; tries++) {
        float x[32];
        for (int j = 0; j < 32; j++) x[j] = rndf(0.5f);
        float max = (rnd32() & 1 ? 1.0f : -1.0f) * (0.6f + (float)(rnd32() % 1000) / 2500.0f);
        x[7] = max;
        volatile float d = max / -8.0f;
        volatile float id = 1.0f / d;
        float h = tries % 2 ? -7.5f : -6.5f;
        float xv = h / id;
        for (int step = -20; step <= 20; step++) {
            float c = xv;
            for (int k = 0; k < (step < 0 ? -step : step); k++)
                c = nextafterf(c, step < 0 ? -INFINITY : INFINITY);
            volatile float p = c * id;
            volatile float unfused = p + 8.5f;
            float fused = fmaf(c, id, 8.5f);
            if (p == h && (int)fused != (int)unfused) {
                x[(int)(rnd32() % 7)] = c; /* |c| < |max|: max stays the extreme */
                ef_block_q4_0 got, want;
                ef_quantize_row_q4_0_ref(x, &got, 32);
                expect_q4_0(x, &want);
                bad += memcmp(&got, &want, sizeof got) != 0;
                found++;
                break;
            }
        }
    }
    CHECK_MSG(found >= 10, "only %d FMA-sensitive inputs found", found);
    CHECK_MSG(bad == 0, "%d of %d FMA-sensitive blocks quantized with a fused multiply-add", bad,
              found);
}

/* ---- hand-computed blocks --------------------------------------------------- */

static void test_q8_0_hand(void) {
    float x[32] = {0};
    ef_block_q8_0 y;
    memset(&y, 0xaa, sizeof y);
    ef_quantize_row_q8_0_ref(x, &y, 32);
    CHECK(y.d == 0);
    int nz = 0;
    for (int j = 0; j < 32; j++) nz += y.qs[j] != 0;
    CHECK(nz == 0);

    /* max |x| = 127: d = 1, id = 1; roundf sends halves away from zero */
    const float halves[] = {127.0f, 2.5f, -2.5f, 0.5f, -0.5f, 1.5f, -126.5f, 0.49999997f};
    const int8_t want_h[] = {127, 3, -3, 1, -1, 2, -127, 0};
    memset(x, 0, sizeof x);
    for (int j = 0; j < 8; j++) x[j] = halves[j];
    ef_quantize_row_q8_0_ref(x, &y, 32);
    CHECK(y.d == 0x3c00); /* 1.0 */
    for (int j = 0; j < 8; j++)
        CHECK_MSG(y.qs[j] == want_h[j], "q8_0 of %g: %d, want %d", (double)halves[j], y.qs[j],
                  want_h[j]);

    /* x = j - 16: amax 16, d = 16/127 (f16 0x3008), 1/d = 7.9375 exactly in float */
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16);
    ef_quantize_row_q8_0_ref(x, &y, 32);
    CHECK(y.d == 0x3008);
    /* q = round((j - 16) * 7.9375) */
    const int8_t want_r[32] = {-127, -119, -111, -103, -95, -87, -79, -71, -64, -56, -48,
                               -40,  -32,  -24,  -16,  -8,  0,   8,   16,  24,  32,  40,
                               48,   56,   64,   71,   79,  87,  95,  103, 111, 119};
    for (int j = 0; j < 32; j++)
        CHECK_MSG(y.qs[j] == want_r[j], "q8_0 ramp %d: %d, want %d", j, y.qs[j], want_r[j]);

    /* one huge value among small ones: everything else rounds to 0 */
    for (int j = 0; j < 32; j++) x[j] = 0.001f * (float)(j + 1);
    x[9] = -60000.0f;
    ef_quantize_row_q8_0_ref(x, &y, 32);
    CHECK(y.qs[9] == -127);
    for (int j = 0; j < 32; j++)
        if (j != 9) CHECK(y.qs[j] == 0);
    CHECK(y.d == ef_fp32_to_fp16(60000.0f / 127.0f));

    /* dequantize: q * d */
    float back[32];
    ef_dequantize_row_q8_0(&y, back, 32);
    CHECK(back[9] == -127.0f * ef_fp16_to_fp32(y.d));
    CHECK(back[0] == 0.0f);
}

static void test_q4_0_hand(void) {
    float x[32] = {0};
    ef_block_q4_0 y;
    memset(&y, 0xaa, sizeof y);
    ef_quantize_row_q4_0_ref(x, &y, 32);
    /* all zero: d = 0 / -8 = -0 (f16 0x8000, as ggml writes it), id = 0,
     * every code trunc(8.5) = 8 (the value 0) */
    CHECK(y.d == 0x8000);
    for (int j = 0; j < 16; j++) CHECK(y.qs[j] == 0x88);

    /* negative extreme -8: d = -8 / -8 = 1, id = 1, code = trunc(x + 8.5) */
    const float xs[16] = {-8.0f, 1.0f, 2.0f, -0.5f, 0.49f, 0.5f, -7.6f, 6.5f,
                          7.0f,  -3.0f, 0.0f, -1.5f, 3.4f, -6.51f, 4.0f, 5.2f};
    const int want[16] = {0, 9, 10, 8, 8, 9, 0, 15, 15, 5, 8, 7, 11, 1, 12, 13};
    for (int j = 0; j < 16; j++) {
        x[j] = xs[j];            /* low nibbles: elements 0..15 */
        x[16 + j] = xs[15 - j];  /* high nibbles: elements 16..31 */
    }
    ef_quantize_row_q4_0_ref(x, &y, 32);
    CHECK(y.d == 0x3c00);
    for (int j = 0; j < 16; j++) {
        CHECK_MSG((y.qs[j] & 15) == want[j], "q4_0 low %d: %d, want %d", j, y.qs[j] & 15, want[j]);
        CHECK_MSG((y.qs[j] >> 4) == want[15 - j], "q4_0 high %d: %d, want %d", j, y.qs[j] >> 4,
                  want[15 - j]);
    }
    /* the extreme comes back exactly; values dequantize to (q - 8) * d */
    float back[32];
    ef_dequantize_row_q4_0(&y, back, 32);
    CHECK(back[0] == -8.0f);
    CHECK(back[1] == 1.0f);
    CHECK(back[7] == 7.0f); /* 6.5 -> code 15 -> 7 */
    CHECK(back[16 + 15] == -8.0f);

    /* positive extreme +8: d = -1, id = -1; -8 would need code 16: clipped to 15 (-7) */
    memset(x, 0, sizeof x);
    x[0] = 8.0f;
    x[1] = -8.0f;
    x[2] = 3.0f;
    x[17] = -7.2f;
    ef_quantize_row_q4_0_ref(x, &y, 32);
    CHECK(y.d == 0xbc00); /* -1.0 */
    CHECK((y.qs[0] & 15) == 0);  /* (0 - 8) * -1 = 8 */
    CHECK((y.qs[1] & 15) == 15); /* clipped: (15 - 8) * -1 = -7 */
    CHECK((y.qs[2] & 15) == 5);  /* trunc(-3 + 8.5) = 5 -> 3 */
    CHECK((y.qs[1] >> 4) == 15); /* element 17: trunc(7.2 + 8.5) = 15 -> -7 */
    CHECK((y.qs[3] & 15) == 8);
    ef_dequantize_row_q4_0(&y, back, 32);
    CHECK(back[0] == 8.0f && back[1] == -7.0f && back[2] == 3.0f && back[17] == -7.0f);

    /* negative max picked by magnitude: -5 beats 4.9 */
    memset(x, 0, sizeof x);
    x[3] = 4.9f;
    x[20] = -5.0f;
    ef_quantize_row_q4_0_ref(x, &y, 32);
    CHECK(y.d == ef_fp32_to_fp16(0.625f));
    CHECK((y.qs[4] >> 4) == 0); /* element 20 is the extreme */
    /* equal magnitudes: the first one wins (strict <) */
    memset(x, 0, sizeof x);
    x[2] = 2.0f;
    x[30] = -2.0f;
    ef_quantize_row_q4_0_ref(x, &y, 32);
    CHECK(y.d == 0xb400); /* 2 / -8 = -0.25 */
}

static void test_checked_api(void) {
    float x[64];
    for (int i = 0; i < 64; i++) x[i] = (float)i / 7.0f - 3.0f;
    unsigned char buf[256];
    size_t n = 0;
    CHECK_OK(ef_quantize(EF_GGML_Q8_0, x, buf, 2, 32, &n));
    CHECK(n == 68);
    ef_block_q8_0 ref[2];
    ef_quantize_row_q8_0_ref(x, ref, 64);
    CHECK(memcmp(buf, ref, 68) == 0);
    float back[64];
    CHECK_OK(ef_dequantize(EF_GGML_Q8_0, buf + 0, back, 64));
    for (int i = 0; i < 64; i++) CHECK_NEAR(back[i], x[i], 0.03);
    /* unaligned source for the generic dequantizer */
    unsigned char ubuf[257];
    memcpy(ubuf + 1, buf, 68);
    float back2[64];
    CHECK_OK(ef_dequantize(EF_GGML_Q8_0, ubuf + 1, back2, 64));
    CHECK(memcmp(back, back2, sizeof back) == 0);

    CHECK_OK(ef_quantize(EF_GGML_Q4_0, x, buf, 1, 64, &n));
    CHECK(n == 36);
    CHECK_OK(ef_dequantize(EF_GGML_Q4_0, buf, back, 64));
    for (int i = 0; i < 64; i++) CHECK_NEAR(back[i], x[i], 0.45);

    CHECK_OK(ef_quantize(EF_GGML_F16, x, buf, 4, 16, &n));
    CHECK(n == 128);
    CHECK(buf[0] == (ef_fp32_to_fp16(x[0]) & 0xff) && buf[1] == ef_fp32_to_fp16(x[0]) >> 8);
    CHECK_OK(ef_dequantize(EF_GGML_F16, buf, back, 64));
    for (int i = 0; i < 64; i++) CHECK(back[i] == ef_fp16_to_fp32(ef_fp32_to_fp16(x[i])));
    /* F16: the largest finite half (65504) and what rounds to it pass; what
     * rounds to infinity, and non-finite values, are refused */
    {
        float big[2] = {65504.0f, -65519.0f};
        CHECK_OK(ef_quantize(EF_GGML_F16, big, buf, 1, 2, &n));
        CHECK(ef_fp16_to_fp32((uint16_t)(buf[0] | buf[1] << 8)) == 65504.0f);
        CHECK(ef_fp16_to_fp32((uint16_t)(buf[2] | buf[3] << 8)) == -65504.0f);
        big[1] = 65520.0f;
        CHECK(ef_quantize(EF_GGML_F16, big, buf, 1, 2, &n) == EF_ERR_RANGE);
        CHECK(strstr(ef_last_error(), "too large for f16") != NULL);
        big[1] = NAN;
        CHECK(ef_quantize(EF_GGML_F16, big, buf, 1, 2, &n) == EF_ERR_INVALID);
        CHECK(strstr(ef_last_error(), "NaN") != NULL);
    }
    CHECK_OK(ef_quantize(EF_GGML_F32, x, buf, 1, 64, &n));
    CHECK(n == 256 && memcmp(buf, x, 256) == 0);

    /* refusals */
    CHECK(ef_quantize(EF_GGML_Q8_0, x, buf, 1, 48, &n) == EF_ERR_INVALID);
    CHECK(strstr(ef_last_error(), "multiple") != NULL);
    CHECK(ef_quantize(EF_GGML_Q4_K, x, buf, 1, 256, &n) == EF_ERR_UNSUPPORTED);
    CHECK(ef_quantize(77, x, buf, 1, 32, &n) == EF_ERR_INVALID);
    CHECK(ef_quantize(EF_GGML_Q8_0, NULL, buf, 1, 32, &n) == EF_ERR_INVALID);
    float bad[64];
    memcpy(bad, x, sizeof bad);
    bad[37] = NAN;
    CHECK(ef_quantize(EF_GGML_Q4_0, bad, buf, 2, 32, &n) == EF_ERR_INVALID);
    CHECK(strstr(ef_last_error(), "row 1, column 5") != NULL);
    CHECK(n == 0);
    bad[37] = -INFINITY;
    CHECK(ef_quantize(EF_GGML_Q8_0, bad, buf, 2, 32, &n) == EF_ERR_INVALID);
    CHECK(strstr(ef_last_error(), "infinite") != NULL);
    /* a finite value whose scale overflows the f16 d */
    memcpy(bad, x, sizeof bad);
    bad[40] = 8e6f;
    CHECK(ef_quantize(EF_GGML_Q8_0, bad, buf, 2, 32, &n) == EF_OK); /* 8e6 / 127 fits */
    bad[40] = 1e8f;
    CHECK(ef_quantize(EF_GGML_Q8_0, bad, buf, 2, 32, &n) == EF_ERR_RANGE);
    CHECK(strstr(ef_last_error(), "row 1") != NULL);
    bad[40] = 600000.0f; /* Q4_0: 600000 / 8 = 75000 > 65504 */
    CHECK(ef_quantize(EF_GGML_Q4_0, bad, buf, 2, 32, &n) == EF_ERR_RANGE);
    CHECK(ef_dequantize(EF_GGML_Q4_K, buf, back, 256) == EF_ERR_UNSUPPORTED);
    CHECK(ef_dequantize(EF_GGML_Q8_0, buf, back, 33) == EF_ERR_INVALID);
    uint16_t bf[2] = {0x3f80, 0xbf00};
    CHECK_OK(ef_dequantize(EF_GGML_BF16, bf, back, 2));
    CHECK(back[0] == 1.0f && back[1] == -0.5f);
}

static void test_type_table(void) {
    CHECK(ef_ggml_type_size(EF_GGML_Q8_0) == 34 && ef_ggml_blck_size(EF_GGML_Q8_0) == 32);
    CHECK(ef_ggml_type_size(EF_GGML_Q4_0) == 18 && ef_ggml_blck_size(EF_GGML_Q4_0) == 32);
    CHECK(ef_ggml_type_size(EF_GGML_F16) == 2 && ef_ggml_blck_size(EF_GGML_F16) == 1);
    CHECK(ef_ggml_type_size(EF_GGML_Q6_K) == 210 && ef_ggml_blck_size(EF_GGML_Q6_K) == 256);
    CHECK(ef_ggml_type_size(EF_GGML_MXFP4) == 17);
    CHECK(ef_ggml_type_size(4) == 0 && ef_ggml_type_name(4) == NULL);   /* removed Q4_2 */
    CHECK(ef_ggml_type_name(31) == NULL && ef_ggml_type_name(-1) == NULL);
    CHECK(ef_ggml_type_name(EF_GGML_TYPE_END) == NULL);
    CHECK(strcmp(ef_ggml_type_name(EF_GGML_Q4_K), "q4_K") == 0);
    CHECK(ef_ggml_type_from_name("Q8_0") == EF_GGML_Q8_0);
    CHECK(ef_ggml_type_from_name("q4_k") == EF_GGML_Q4_K);
    CHECK(ef_ggml_type_from_name("q4") == -1);
    CHECK(ef_ggml_is_quantized(EF_GGML_Q4_0) && !ef_ggml_is_quantized(EF_GGML_BF16));
    size_t rs;
    CHECK_OK(ef_ggml_row_size(EF_GGML_Q4_0, 4096, &rs));
    CHECK(rs == 4096 / 32 * 18);
    CHECK(ef_ggml_row_size(EF_GGML_Q4_0, 4095, &rs) == EF_ERR_INVALID);
    CHECK(ef_ggml_row_size(EF_GGML_F32, INT64_MAX, &rs) == EF_ERR_RANGE);
}

int main(void) {
    test_fp16_hand();
    test_fp16_all_halves();
    test_fp16_sweep();
    test_q8_0_hand();
    test_q4_0_hand();
    test_random_blocks();
    test_no_fma_contraction();
    test_checked_api();
    test_type_table();
    return tu_finish("test_quant");
}
