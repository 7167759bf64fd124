/*
 * The quantizer for masked sums (src/privacy/quant.c): the number of levels
 * at and around the no-wrap boundary (and a sum that does wrap one summand
 * past it), bad arguments refused, grid values kept exactly, stochastic
 * rounding unbiased within a few standard errors and only ever to the two
 * neighbouring levels, clipping of large values, infinities and NaN, exactly
 * 4 random bytes per coordinate, and the whole path -- quantize, mask
 * pairwise, sum mod 2^b, unmask, dequantize -- within n * 2R / L of the true
 * sum of the clipped vectors. Prints ef__quantize's throughput at d = 1.66M;
 * no timing is asserted.
 */
#include <float.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "privacy/privacy_internal.h"
#include "test_util.h"

static ef__drbg rng;

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) abort();
    return p;
}

/* ---- levels ---------------------------------------------------------------------- */

static void test_levels(void) {
    const int bits[] = {1, 2, 8, 16, 20, 24, 25, 31, 32};
    const uint32_t ns[] = {1, 2, 3, 5, 10, 100, 255, 256, 1000, 65535, 1u << 20};
    int checked = 0, bad = 0;
    for (size_t bi = 0; bi < sizeof bits / sizeof bits[0]; bi++)
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
            uint64_t top = ((uint64_t)1 << bits[bi]) - 1, n = ns[ni];
            ef__quant q;
            ef_status st = ef__quant_init(&q, 1.0, bits[bi], ns[ni]);
            if (n > top) {
                /* not even one level fits */
                bad += st != EF_ERR_RANGE;
                continue;
            }
            checked++;
            if (st != EF_OK) {
                bad++;
                continue;
            }
            uint64_t L = q.levels;
            /* n L fits, and either one more level would not, or L is at the
             * float32 cap */
            bad += !(L >= 1 && n * L <= top);
            bad += !(L == EF__QUANT_MAX_LEVELS || n * (L + 1) > top);
            bad += L > EF__QUANT_MAX_LEVELS;
            bad += q.bits != bits[bi] || q.clip != 1.0;
        }
    CHECK_MSG(bad == 0 && checked > 50, "%d wrong of %d", bad, checked);
    /* by hand: (2^16 - 1) / 3 = 21845; (2^32 - 1) / 256 = 2^24 - 1 (just under
     * the cap); (2^32 - 1) / 255 = 16843009 is capped to 2^24; (2^8 - 1) / 255 = 1 */
    ef__quant q;
    CHECK_OK(ef__quant_init(&q, 1.0, 16, 3));
    CHECK(q.levels == 21845);
    CHECK_OK(ef__quant_init(&q, 1.0, 32, 256));
    CHECK(q.levels == (1u << 24) - 1);
    CHECK_OK(ef__quant_init(&q, 1.0, 32, 255));
    CHECK(q.levels == 1u << 24);
    CHECK_OK(ef__quant_init(&q, 1.0, 8, 255));
    CHECK(q.levels == 1);
    CHECK_OK(ef__quant_init(&q, 1.0, 1, 1));
    CHECK(q.levels == 1);
}

static void test_init_rejects(void) {
    ef__quant q = {0.25, 77, 9}, keep = q;
    CHECK(ef__quant_init(&q, NAN, 16, 4) == EF_ERR_INVALID);
    CHECK(ef__quant_init(&q, INFINITY, 16, 4) == EF_ERR_INVALID);
    CHECK(ef__quant_init(&q, -INFINITY, 16, 4) == EF_ERR_INVALID);
    CHECK(ef__quant_init(&q, 0.0, 16, 4) == EF_ERR_INVALID);
    CHECK(ef__quant_init(&q, -1.0, 16, 4) == EF_ERR_INVALID);
    CHECK(strstr(ef_last_error(), "clip") != NULL);
    CHECK(ef__quant_init(&q, 1.0, 0, 4) == EF_ERR_INVALID);
    CHECK(ef__quant_init(&q, 1.0, 33, 4) == EF_ERR_INVALID);
    CHECK(ef__quant_init(&q, 1.0, -3, 4) == EF_ERR_INVALID);
    CHECK(ef__quant_init(&q, 1.0, 16, 0) == EF_ERR_INVALID);
    CHECK(ef__quant_init(&q, 1.0, 8, 256) == EF_ERR_RANGE); /* L would be 0 */
    CHECK(ef__quant_init(&q, 1.0, 1, 2) == EF_ERR_RANGE);
    CHECK(ef__quant_init(NULL, 1.0, 16, 4) == EF_ERR_INVALID);
    CHECK(q.clip == keep.clip && q.levels == keep.levels && q.bits == keep.bits);
}

/* n summands at the top of the range sum to exactly n L <= 2^b - 1; one
 * more wraps around -- which is why L is chosen as it is. */
static void test_no_wrap_boundary(void) {
    const int bits[] = {8, 12, 32};
    for (size_t bi = 0; bi < sizeof bits / sizeof bits[0]; bi++) {
        const uint32_t n = bits[bi] == 32 ? 300 : 5, mm = ef__mod_mask(bits[bi]);
        ef__quant q;
        CHECK_OK(ef__quant_init(&q, 0.5, bits[bi], n));
        const size_t d = 64;
        float x[64];
        uint32_t one[64], sum_hi[64] = {0}, sum_lo[64] = {0};
        for (uint32_t c = 0; c <= n; c++) {
            for (size_t i = 0; i < d; i++) x[i] = i % 2 ? 0.5f : 7.0f; /* at or past +R */
            ef__quantize(one, x, d, 1.0, &q, &rng);
            for (size_t i = 0; i < d; i++) {
                CHECK(one[i] == q.levels);
                sum_hi[i] = (sum_hi[i] + one[i]) & mm;
            }
            for (size_t i = 0; i < d; i++) x[i] = i % 2 ? -0.5f : -7.0f;
            ef__quantize(one, x, d, 1.0, &q, &rng);
            for (size_t i = 0; i < d; i++) sum_lo[i] = (sum_lo[i] + one[i]) & mm;
            float out[64];
            if (c == n - 1) { /* n summands */
                CHECK((uint64_t)sum_hi[0] == (uint64_t)n * q.levels);
                ef__dequantize_sum(out, sum_hi, d, n, &q);
                for (size_t i = 0; i < d; i++) CHECK_NEAR(out[i], 0.5 * n, 1e-6 * n);
                ef__dequantize_sum(out, sum_lo, d, n, &q);
                for (size_t i = 0; i < d; i++) CHECK_NEAR(out[i], -0.5 * n, 1e-6 * n);
            }
            if (c == n) { /* n + 1 summands: the sum wraps */
                /* (n + 1) L > 2^b - 1 unless L were not the largest choice */
                CHECK((uint64_t)(n + 1) * q.levels > mm);
                ef__dequantize_sum(out, sum_hi, d, n + 1, &q);
                CHECK_MSG(fabs(out[0] - 0.5 * (n + 1)) > 0.5, "bits %d: a wrapped sum gave %g",
                          bits[bi], out[0]);
            }
        }
    }
}

/* ---- rounding ------------------------------------------------------------------- */

/* Values on the grid come back exactly, whatever the random bits. Two grids
 * that are exact in float: R = 1 with L = 2^24 (bits 32, one summand; step
 * 2^-23) and R = L / 2 with L = 21845 (bits 16, three summands; step 1). */
static void test_grid_exact(void) {
    const size_t d = 20000;
    float *x = xmalloc(d * sizeof *x);
    uint32_t *k = xmalloc(d * 4), *out = xmalloc(d * 4);
    ef__quant q;
    size_t bad = 0;
    CHECK_OK(ef__quant_init(&q, 1.0, 32, 1));
    CHECK(q.levels == 1u << 24);
    for (int rep = 0; rep < 3; rep++) {
        for (size_t i = 0; i < d; i++) {
            k[i] = i < 2 ? (uint32_t)i * q.levels : (uint32_t)ef__drbg_below(&rng, q.levels + 1);
            x[i] = (float)(((double)k[i] - 8388608.0) * 0x1p-23);
        }
        ef__quantize(out, x, d, 1.0, &q, &rng);
        for (size_t i = 0; i < d; i++) bad += out[i] != k[i];
    }
    CHECK_OK(ef__quant_init(&q, 21845 / 2.0, 16, 3));
    CHECK(q.levels == 21845);
    for (int rep = 0; rep < 3; rep++) {
        for (size_t i = 0; i < d; i++) {
            k[i] = (uint32_t)ef__drbg_below(&rng, q.levels + 1);
            /* halved and scaled back up by 2: still exact */
            x[i] = (float)(((double)k[i] - q.clip) * (rep == 2 ? 0.5 : 1.0));
        }
        ef__quantize(out, x, d, rep == 2 ? 2.0 : 1.0, &q, &rng);
        for (size_t i = 0; i < d; i++) bad += out[i] != k[i];
    }
    CHECK_MSG(bad == 0, "%zu grid values moved", bad);
    free(x), free(k), free(out);
}

/* The real-valued level of x as the quantizer computes it (in double). */
static double level_of(double x, double scale, const ef__quant *q) {
    double s = scale * x, R = q->clip;
    double c = s < -R ? -R : s > R ? R : s;
    return (c + R) / (2 * R) * q->levels;
}

/* Off-grid values round to one of their two neighbouring levels, up with
 * probability frac(u): over N = 200,000 copies the mean must be within 4.5
 * standard errors sqrt(f (1 - f) / N) of u. */
static void test_unbiased(void) {
    const size_t N = 200000;
    float *x = xmalloc(N * sizeof *x);
    uint32_t *out = xmalloc(N * 4);
    ef__quant q;
    CHECK_OK(ef__quant_init(&q, 1.0, 16, 1)); /* L = 65535 */
    const double fr[] = {0.001, 0.25, 0.5, 0.9, 0.999};
    for (size_t fi = 0; fi < sizeof fr / sizeof fr[0]; fi++) {
        double target = 12345 + fr[fi];
        float xv = (float)(target * 2.0 / q.levels - 1.0);
        double u = level_of(xv, 1.0, &q), f = u - floor(u);
        for (size_t i = 0; i < N; i++) x[i] = xv;
        ef__quantize(out, x, N, 1.0, &q, &rng);
        double s = 0;
        size_t outside = 0;
        for (size_t i = 0; i < N; i++) {
            s += out[i];
            outside += out[i] != (uint32_t)floor(u) && out[i] != (uint32_t)floor(u) + 1;
        }
        double mean = s / (double)N, se = sqrt(f * (1 - f) / (double)N);
        CHECK_MSG(outside == 0, "frac %.3f: %zu values off the two neighbours", f, outside);
        CHECK_MSG(fabs(mean - u) < 4.5 * se, "frac %.4f: mean %.6f, want %.6f (se %.2g)", f, mean,
                  u, se);
        printf("frac %.4f: mean level - u = %+.2e (%.2f standard errors)\n", f, mean - u,
               (mean - u) / se);
    }
    /* random values in range: the mean error of dequantized coordinates is
     * within 4.5 standard errors (each error has variance <= step^2 / 4) */
    const double step = 2.0 / q.levels;
    for (size_t i = 0; i < N; i++) x[i] = (float)(2.0 * ef__drbg_uniform(&rng) - 1.0);
    ef__quantize(out, x, N, 1.0, &q, &rng);
    double err = 0;
    for (size_t i = 0; i < N; i++) err += (out[i] * step - 1.0) - (double)x[i];
    err /= (double)N;
    CHECK_MSG(fabs(err) < 4.5 * step / 2 / sqrt((double)N), "mean error %.3g, step %.3g", err,
              step);
    free(x), free(out);
}

static void test_clip_and_nan(void) {
    ef__quant q;
    CHECK_OK(ef__quant_init(&q, 0.5, 16, 2)); /* L = 32767, odd */
    const float xs[] = {1e6f, -1e6f, INFINITY, -INFINITY, 0.5f, -0.5f, 0.7f, -3.0f, FLT_MAX};
    const uint32_t want[] = {q.levels, 0, q.levels, 0, q.levels, 0, q.levels, 0, q.levels};
    uint32_t out[9];
    ef__quantize(out, xs, 9, 1.0, &q, &rng);
    for (int i = 0; i < 9; i++) CHECK_MSG(out[i] == want[i], "x = %g -> %u", xs[i], out[i]);
    /* scale applies before clipping: 0.3 * 2 = 0.6 > R, -0.2 * 2 = -0.4 inside */
    const float ys[] = {0.3f, -0.3f};
    ef__quantize(out, ys, 2, 2.0, &q, &rng);
    CHECK(out[0] == q.levels && out[1] == 0);
    ef__quantize(out, ys, 2, -2.0, &q, &rng);
    CHECK(out[0] == 0 && out[1] == q.levels);
    /* NaN (and 0 * inf) -> the midpoint L / 2 = 16383.5, rounded either way
     * with probability 1/2: zero in expectation after dequantization */
    enum { NN = 20000 };
    float *nan_x = xmalloc(NN * sizeof *nan_x);
    uint32_t *o = xmalloc(NN * 4);
    for (int i = 0; i < NN; i++) nan_x[i] = i % 2 ? NAN : INFINITY;
    ef__quantize(o, nan_x, NN, 0.0, &q, &rng); /* 0 * NaN, 0 * inf */
    double s = 0;
    int outside = 0;
    for (int i = 0; i < NN; i++) {
        s += o[i];
        outside += o[i] != q.levels / 2 && o[i] != q.levels / 2 + 1;
    }
    CHECK(outside == 0);
    CHECK_MSG(fabs(s / NN - q.levels / 2.0) < 4.5 * 0.5 / sqrt((double)NN), "NaN mean %.4f",
              s / NN);
    /* even L: the midpoint is a level, exactly */
    CHECK_OK(ef__quant_init(&q, 0.5, 32, 1)); /* L = 2^24 */
    for (int i = 0; i < NN; i++) nan_x[i] = NAN;
    ef__quantize(o, nan_x, NN, 1.0, &q, &rng);
    outside = 0;
    for (int i = 0; i < NN; i++) outside += o[i] != q.levels / 2;
    CHECK(outside == 0);
    free(nan_x), free(o);
}

/* 4 bytes of rng per coordinate, whatever the values, so the stream stays
 * aligned between runs that quantize the same d. */
static void test_rng_use(void) {
    uint8_t key[32];
    ef__drbg_key_from_seed(key, 99, "quant-rng");
    ef__quant q;
    CHECK_OK(ef__quant_init(&q, 1.0, 20, 7));
    const size_t d = 3001;
    float *x = xmalloc(d * sizeof *x);
    uint32_t *a = xmalloc(d * 4), *b = xmalloc(d * 4);
    for (size_t i = 0; i < d; i++) x[i] = (float)(ef__drbg_uniform(&rng) * 3 - 1.5);
    ef__drbg g, h;
    ef__drbg_seed(&g, key, 0);
    ef__quantize(a, x, d, 1.0, &q, &g);
    uint64_t after = ef__drbg_u64(&g);
    ef__drbg_seed(&h, key, 0);
    uint8_t *skip = xmalloc(4 * d);
    ef__drbg_bytes(&h, skip, 4 * d);
    CHECK(ef__drbg_u64(&h) == after);
    ef__drbg_seed(&g, key, 0);
    ef__quantize(b, x, d, 1.0, &q, &g);
    CHECK(memcmp(a, b, d * 4) == 0);
    ef__drbg_wipe(&g), ef__drbg_wipe(&h);
    free(x), free(a), free(b), free(skip);
}

/* ---- the whole path ----------------------------------------------------------- */

/* n clients quantize random vectors (partly beyond the clip), mask them
 * pairwise and with self masks mod 2^b; the server sums, removes the self
 * masks and dequantizes. Every coordinate must be within n * 2R / L of the
 * true sum of the clipped values (each client's rounding moves it by less
 * than one step 2R / L), plus float32 rounding of the result. */
static void test_sum_pipeline(void) {
    enum { NC = 10 };
    const size_t d = 20000;
    const int bits[] = {16, 20, 32};
    for (size_t bi = 0; bi < sizeof bits / sizeof bits[0]; bi++) {
        ef__quant q;
        const double R = 0.75;
        CHECK_OK(ef__quant_init(&q, R, bits[bi], NC));
        const uint32_t mm = ef__mod_mask(bits[bi]);
        double *truth = xmalloc(d * sizeof *truth);
        float *x = xmalloc(d * sizeof *x), *out = xmalloc(d * sizeof *out);
        uint32_t *sum = xmalloc(d * 4), *qv = xmalloc(d * 4);
        memset(sum, 0, d * 4);
        for (size_t i = 0; i < d; i++) truth[i] = 0;
        uint8_t pair[NC][NC][32], self[NC][32];
        for (int u = 0; u < NC; u++) {
            ef__drbg_bytes(&rng, self[u], 32);
            for (int v = u + 1; v < NC; v++) {
                ef__drbg_bytes(&rng, pair[u][v], 32);
                memcpy(pair[v][u], pair[u][v], 32);
            }
        }
        for (int u = 0; u < NC; u++) {
            for (size_t i = 0; i < d; i++) {
                x[i] = (float)((2 * ef__drbg_uniform(&rng) - 1) * 1.2 * R);
                double c = x[i] < -R ? -R : x[i] > R ? R : x[i];
                truth[i] += c;
            }
            ef__quantize(qv, x, d, 1.0, &q, &rng);
            for (int v = 0; v < NC; v++)
                if (v != u) ef__mask_apply(qv, d, pair[u][v], 5, v > u ? +1 : -1, mm);
            ef__mask_apply(qv, d, self[u], 6, +1, mm);
            for (size_t i = 0; i < d; i++) sum[i] = (sum[i] + qv[i]) & mm;
        }
        for (int u = 0; u < NC; u++) ef__mask_apply(sum, d, self[u], 6, -1, mm);
        ef__dequantize_sum(out, sum, d, NC, &q);
        const double bound = NC * 2 * R / q.levels;
        double worst = 0, sq = 0;
        size_t over = 0;
        for (size_t i = 0; i < d; i++) {
            double e = fabs((double)out[i] - truth[i]);
            /* float32 rounding of an output of magnitude <= n R */
            if (e > bound + NC * R * FLT_EPSILON) over++;
            if (e > worst) worst = e;
            sq += e * e;
        }
        CHECK_MSG(over == 0, "bits %d: %zu sums beyond n 2R/L = %.3g (worst %.3g)", bits[bi], over,
                  bound, worst);
        printf("bits %2d, L %8u, n %d: worst |sum error| %.3g = %.3f of the bound n 2R/L, rms "
               "%.3g\n",
               bits[bi], q.levels, NC, worst, worst / bound, sqrt(sq / (double)d));
        free(truth), free(x), free(out), free(sum), free(qv);
    }
    /* dequantize_sum alone: the ends and the middle */
    ef__quant q;
    CHECK_OK(ef__quant_init(&q, 2.0, 16, 4)); /* L = 16383 */
    uint32_t s3[3] = {0, 4 * 16383, 2 * 16383};
    float o3[3];
    ef__dequantize_sum(o3, s3, 3, 4, &q);
    CHECK_NEAR(o3[0], -8.0, 0);
    CHECK_NEAR(o3[1], 8.0, 1e-6);
    CHECK_NEAR(o3[2], 0.0, 1e-6);
}

/* ---- speed ---------------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void test_speed(void) {
    const size_t d = 1663370; /* the FedAvg CNN */
    const int reps = getenv("EDGEFL_TEST_QUICK") ? 1 : 5;
    float *x = xmalloc(d * sizeof *x);
    uint32_t *out = xmalloc(d * 4);
    for (size_t i = 0; i < d; i++) x[i] = (float)(ef__drbg_uniform(&rng) * 0.02 - 0.01);
    ef__quant q;
    CHECK_OK(ef__quant_init(&q, 0.01, 32, 1000));
    double best = 1e9, best_dq = 1e9;
    float *back = xmalloc(d * sizeof *back);
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        ef__quantize(out, x, d, 1.0, &q, &rng);
        double t1 = now_s();
        ef__dequantize_sum(back, out, d, 1, &q);
        double t2 = now_s();
        if (t1 - t0 < best) best = t1 - t0;
        if (t2 - t1 < best_dq) best_dq = t2 - t1;
    }
    printf("ef__quantize d = %zu: %.2f ms, %.0f MB/s of floats; ef__dequantize_sum %.2f ms\n", d,
           1e3 * best, 4e-6 * (double)d / best, 1e3 * best_dq);
    size_t bad = 0;
    /* one summand: within one step of x, plus float rounding of back */
    for (size_t i = 0; i < d; i++)
        bad += fabs(back[i] - x[i]) > 2 * q.clip / q.levels + q.clip * FLT_EPSILON;
    CHECK(bad == 0);
    free(x), free(out), free(back);
}

int main(void) {
    CHECK(sodium_init() >= 0);
    uint8_t key[32];
    ef__drbg_key_from_seed(key, 777, "test_quant");
    ef__drbg_seed(&rng, key, 0);
    test_levels();
    test_init_rejects();
    test_no_wrap_boundary();
    test_grid_exact();
    test_unbiased();
    test_clip_and_nan();
    test_rng_use();
    test_sum_pipeline();
    test_speed();
    ef__drbg_wipe(&rng);
    return tu_finish("test_quant");
}
