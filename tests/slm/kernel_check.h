/*
 * Shared by test_slm_kernels.c and avx512_emu.c: checks one kernel set
 * against the scalar set, bit for bit, on random data of many shapes (odd
 * sizes, row sub-ranges, batches of 1..7, tails that are not multiples of
 * the tile sizes), and the scalar set against a double-precision naive
 * reference with a tolerance.
 *
 * Tolerance of the scalar set against the reference: the kernels sum n
 * float products (or n/32 block products of exact integers) in float, so
 * |got - ref| <= 1e-5 * sum |w_i x_i| + 1e-30 holds with a wide margin
 * (float epsilon 6e-8 times at most log2(n) + n/8 additions per lane).
 */
#ifndef EDGEFL_TEST_SLM_KERNEL_CHECK_H
#define EDGEFL_TEST_SLM_KERNEL_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgefl/rng.h"
#include "slm/slm_internal.h"
#include "test_util.h"

static float kc_randf(ef_rng *r) { return 2.0f * ef_rng_uniform(r) - 1.0f; }

/* Random activations with a spread of magnitudes, some exact zeros and a
 * few values that land exactly on .5 after quantization scaling. */
static void kc_fill_act(ef_rng *r, float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float v = kc_randf(r) * (ef_rng_below(r, 4) == 0 ? 10.0f : 1.0f);
        if (ef_rng_below(r, 16) == 0) v = 0.0f;
        x[i] = v;
    }
    /* an all-zero block if there is room: d = 0, id = 0 */
    if (n >= 64 && ef_rng_below(r, 2)) memset(x + 32, 0, 32 * sizeof(float));
}

static void kc_fill_weights(ef_rng *r, ef_slm_type t, void *w, int64_t rows, int64_t n) {
    size_t rb = ef__slm_row_bytes(t, n);
    for (int64_t i = 0; i < rows; i++) {
        char *p = (char *)w + (size_t)i * rb;
        switch (t) {
        case EF_SLM_F32:
            for (int64_t j = 0; j < n; j++) ((float *)p)[j] = kc_randf(r);
            break;
        case EF_SLM_F16:
            for (int64_t j = 0; j < n; j++) ((uint16_t *)p)[j] = ef__f32_to_f16(kc_randf(r));
            break;
        case EF_SLM_Q8_0:
            for (int64_t k = 0; k < n / 32; k++) {
                ef__blk_q8_0 *b = (ef__blk_q8_0 *)p + k;
                b->d = ef__f32_to_f16(0.001f + 0.05f * ef_rng_uniform(r));
                /* -128 is not produced by ggml's quantizer but is a valid byte */
                for (int j = 0; j < 32; j++) b->qs[j] = (int8_t)((int)ef_rng_below(r, 256) - 128);
            }
            break;
        case EF_SLM_Q4_0:
            for (int64_t k = 0; k < n / 32; k++) {
                ef__blk_q4_0 *b = (ef__blk_q4_0 *)p + k;
                b->d = ef__f32_to_f16(0.001f + 0.05f * ef_rng_uniform(r));
                for (int j = 0; j < 16; j++) b->qs[j] = (uint8_t)ef_rng_below(r, 256);
            }
            break;
        }
    }
}

/* Naive reference: dequantize both sides exactly, sum in double; *mag gets
 * sum |w_i x_i|. */
static double kc_ref_dot(ef_slm_type t, const void *wrow, const void *xrow, int64_t n, double *mag) {
    float *wf = malloc((size_t)n * sizeof(float)), *xf = malloc((size_t)n * sizeof(float));
    ef__slm_dequant_row(t, wrow, 0, 0, n, wf);
    ef__slm_dequant_row(ef__slm_vec_type(t), xrow, 0, 0, n, xf);
    double s = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        s += (double)wf[i] * xf[i];
        m += fabs((double)wf[i] * xf[i]);
    }
    free(wf);
    free(xf);
    *mag = m;
    return s;
}

/* Checks gemm of set k (and the scalar set against the reference) for one
 * shape. Returns the number of mismatching outputs. */
static int kc_check_gemm(const ef__slm_kernels *k, ef_slm_type t, int64_t rows, int64_t n, int64_t nb,
                         int64_t r0, int64_t r1, ef_rng *rng) {
    ef_slm_type vt = ef__slm_vec_type(t);
    size_t wb = ef__slm_row_bytes(t, n), xb = ef__slm_row_bytes(vt, n);
    char *w = malloc(wb * (size_t)rows + 1);
    char *xq = malloc(xb * (size_t)nb + 1);
    float *xf = malloc(sizeof(float) * (size_t)(n * nb + 1));
    /* ldy > rows with a guard value, to catch writes outside [r0, r1) */
    int64_t ldy = rows + 3;
    float *ys = malloc(sizeof(float) * (size_t)(ldy * nb)), *yk = malloc(sizeof(float) * (size_t)(ldy * nb));
    kc_fill_weights(rng, t, w, rows, n);
    for (int64_t b = 0; b < nb; b++) {
        kc_fill_act(rng, xf + b * n, n);
        ef__slm_convert(&ef__slm_kernels_scalar, vt, xq + (size_t)b * xb, xf + b * n, n);
    }
    for (int64_t i = 0; i < ldy * nb; i++) ys[i] = yk[i] = -12345.0f;
    ef__slm_gemm_for(&ef__slm_kernels_scalar, t)(ys, ldy, w, wb, xq, xb, n, r0, r1, nb);
    ef__slm_gemm_for(k, t)(yk, ldy, w, wb, xq, xb, n, r0, r1, nb);
    int bad = 0;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t r = 0; r < ldy; r++) {
            float s = ys[b * ldy + r], g = yk[b * ldy + r];
            int inside = r >= r0 && r < r1;
            if (memcmp(&s, &g, sizeof s) != 0 || (!inside && s != -12345.0f)) {
                if (bad++ < 3)
                    fprintf(stderr, "  %s %s rows=%lld n=%lld nb=%lld [%lld,%lld): y[%lld][%lld] %s=%.9g scalar=%.9g\n",
                            k->name, ef_slm_type_name(t), (long long)rows, (long long)n, (long long)nb,
                            (long long)r0, (long long)r1, (long long)b, (long long)r, k->name, g, s);
            }
            if (inside) {
                double mag, ref = kc_ref_dot(t, w + (size_t)r * wb, xq + (size_t)b * xb, n, &mag);
                if (!(fabs(s - ref) <= 1e-5 * mag + 1e-30)) {
                    if (bad++ < 3)
                        fprintf(stderr, "  scalar %s n=%lld: y=%.9g ref=%.9g (mag %.3g)\n", ef_slm_type_name(t),
                                (long long)n, s, ref, mag);
                }
            }
        }
    free(w);
    free(xq);
    free(xf);
    free(ys);
    free(yk);
    return bad;
}

/* Everything about set k against the scalar set. */
static void kc_check_set(const ef__slm_kernels *k, uint64_t seed) {
    ef_rng rng;
    ef_rng_seed(&rng, seed);
    const ef_slm_type types[4] = {EF_SLM_F32, EF_SLM_F16, EF_SLM_Q8_0, EF_SLM_Q4_0};
    const int64_t qn[] = {32, 64, 96, 384, 1056};
    const int64_t fn[] = {1, 7, 8, 9, 31, 33, 100, 384};
    const int64_t rowsv[] = {1, 2, 3, 5, 7, 8, 9, 13, 16, 17, 67};
    const int64_t nbv[] = {1, 2, 3, 4, 5, 7};
    for (int ti = 0; ti < 4; ti++) {
        ef_slm_type t = types[ti];
        int quant = t == EF_SLM_Q8_0 || t == EF_SLM_Q4_0;
        const int64_t *nv = quant ? qn : fn;
        int nn = quant ? 5 : 8;
        int bad = 0, cases = 0;
        for (int a = 0; a < nn; a++)
            for (size_t ri = 0; ri < sizeof rowsv / sizeof rowsv[0]; ri++)
                for (size_t bi = 0; bi < sizeof nbv / sizeof nbv[0]; bi++) {
                    int64_t rows = rowsv[ri], nb = nbv[bi];
                    int64_t r0 = 0, r1 = rows;
                    if (rows > 4 && (a + (int)bi) % 2) { /* a sub-range, as a thread gets */
                        r0 = (int64_t)ef_rng_below(&rng, (uint64_t)rows / 2);
                        r1 = r0 + 1 + (int64_t)ef_rng_below(&rng, (uint64_t)(rows - r0));
                    }
                    bad += kc_check_gemm(k, t, rows, nv[a], nb, r0, r1, &rng);
                    cases++;
                }
        CHECK_MSG(bad == 0, "%s gemm %s: %d mismatches in %d shapes", k->name, ef_slm_type_name(t), bad, cases);
    }

    /* activation conversions */
    for (int rep = 0; rep < 50; rep++) {
        int64_t n = 32 * (1 + (int64_t)ef_rng_below(&rng, 40));
        float *x = malloc(sizeof(float) * (size_t)n);
        kc_fill_act(&rng, x, n);
        if (rep == 0) /* exact halves after scaling: x*id = k + 0.5 must round to even */
            for (int j = 0; j < 32; j++) x[j] = j == 0 ? 127.0f : (float)(j % 7) + 0.5f;
        size_t qb = ef__slm_row_bytes(EF_SLM_Q8_0, n);
        void *qa = malloc(qb), *qs = malloc(qb);
        ef__slm_kernels_scalar.quant_q8_0(qs, x, n);
        k->quant_q8_0(qa, x, n);
        CHECK_MSG(memcmp(qa, qs, qb) == 0, "%s quant_q8_0 n=%lld differs from scalar", k->name, (long long)n);
        if (rep == 0) {
            const ef__blk_q8_0 *b = qs;
            /* amax 127: id = 1, so q = round-half-even(x) */
            CHECK(b->qs[0] == 127 && b->qs[1] == 2 && b->qs[2] == 2 && b->qs[3] == 4 && b->qs[4] == 4);
            CHECK(ef__f16_to_f32(b->d) == 1.0f);
        }
        uint16_t *ha = malloc(2 * (size_t)n + 2), *hs = malloc(2 * (size_t)n + 2);
        ef__slm_kernels_scalar.to_f16(hs, x, n - 3);
        k->to_f16(ha, x, n - 3);
        CHECK_MSG(memcmp(ha, hs, 2 * (size_t)(n - 3)) == 0, "%s to_f16 differs", k->name);
        float *fa = malloc(sizeof(float) * (size_t)n), *fs = malloc(sizeof(float) * (size_t)n);
        ef__slm_kernels_scalar.from_f16(fs, hs, n - 3);
        k->from_f16(fa, hs, n - 3);
        CHECK_MSG(memcmp(fa, fs, sizeof(float) * (size_t)(n - 3)) == 0, "%s from_f16 differs", k->name);
        /* attention (several pieces of positions), odd head sizes, padded rows */
        {
            int hd = 2 + 2 * (int)ef_rng_below(&rng, 40), np = 1 + (int)ef_rng_below(&rng, 30);
            if (rep % 3 == 0) hd = 64; /* the SIMD dot path of ggml (n >= 32) */
            size_t stride32 = (size_t)(hd + 6) * 4, stride16 = (size_t)(hd + 6) * 2;
            float *k32 = malloc(stride32 * (size_t)np), *v32 = malloc(stride32 * (size_t)np), *q = malloc(4 * (size_t)hd);
            uint16_t *k16 = malloc(stride16 * (size_t)np), *v16 = malloc(stride16 * (size_t)np), *q16 = malloc(2 * (size_t)hd);
            for (size_t i = 0; i < stride32 * (size_t)np / 4; i++) k32[i] = 2 * kc_randf(&rng), v32[i] = kc_randf(&rng);
            for (size_t i = 0; i < stride16 * (size_t)np / 2; i++) k16[i] = ef__f32_to_f16(k32[i]), v16[i] = ef__f32_to_f16(v32[i]);
            for (int i = 0; i < hd; i++) q[i] = kc_randf(&rng), q16[i] = ef__f32_to_f16(q[i]);
            float *o1 = malloc(4 * (size_t)hd), *o2 = malloc(4 * (size_t)hd);
            uint32_t acc1[128], acc2[128];
            for (int f16 = 0; f16 < 2; f16++) {
                const void *kk = f16 ? (const void *)k16 : (const void *)k32, *vv = f16 ? (const void *)v16 : (const void *)v32;
                const void *qq = f16 ? (const void *)q16 : (const void *)q;
                size_t st = f16 ? stride16 : stride32;
                ef__fa s1 = {-INFINITY, 0}, s2 = {-INFINITY, 0};
                memset(acc1, 0, sizeof acc1);
                memset(acc2, 0, sizeof acc2);
                float scr[64];
                ef__slm_kernels_scalar.fa_rows(&s1, acc1, qq, kk, vv, st, np, hd, 0.3f, f16, scr);
                ef__slm_kernels_scalar.fa_finish(o1, &s1, acc1, hd, f16);
                int cut = np / 2; /* the same positions in two calls */
                k->fa_rows(&s2, acc2, qq, kk, vv, st, cut, hd, 0.3f, f16, scr);
                k->fa_rows(&s2, acc2, qq, (const char *)kk + st * (size_t)cut, (const char *)vv + st * (size_t)cut, st,
                           np - cut, hd, 0.3f, f16, scr);
                k->fa_finish(o2, &s2, acc2, hd, f16);
                CHECK_MSG(memcmp(o1, o2, 4 * (size_t)hd) == 0 && s1.S == s2.S && s1.M == s2.M,
                          "%s attention hd=%d np=%d f16=%d differs from scalar", k->name, hd, np, f16);
                /* against softmax attention in double on the same (rounded) inputs */
                double sc[32], mx = -1e300, sum = 0, err = 0, mag = 0;
                for (int p = 0; p < np; p++) {
                    double d = 0;
                    for (int i = 0; i < hd; i++)
                        d += (f16 ? ef__f16_to_f32(k16[p * (hd + 6) + i]) : k32[p * (hd + 6) + i]) *
                             (double)(f16 ? ef__f16_to_f32(q16[i]) : q[i]);
                    sc[p] = d * 0.3;
                    mx = sc[p] > mx ? sc[p] : mx;
                }
                for (int p = 0; p < np; p++) sum += sc[p] = exp(sc[p] - mx);
                for (int i = 0; i < hd; i++) {
                    double r = 0;
                    for (int p = 0; p < np; p++) r += sc[p] * (f16 ? ef__f16_to_f32(v16[p * (hd + 6) + i]) : v32[p * (hd + 6) + i]);
                    r /= sum;
                    err = fmax(err, fabs(o1[i] - r));
                    mag = fmax(mag, fabs(r));
                }
                /* F16 accumulation rounds at every position: ~2^-11 relative each */
                CHECK_MSG(err <= (f16 ? 4e-3 : 1e-5) * (mag + 1e-3) * (f16 ? sqrt((double)np) : 1.0),
                          "scalar attention hd=%d np=%d f16=%d: error %.3g of %.3g", hd, np, f16, err, mag);
            }
            free(k32);
            free(v32);
            free(q);
            free(k16);
            free(v16);
            free(q16);
            free(o1);
            free(o2);
        }
        /* RoPE and SwiGLU */
        {
            int hd = 2 + 2 * (int)ef_rng_below(&rng, 40), nh = 1 + (int)ef_rng_below(&rng, 3);
            float *v1 = malloc(4 * (size_t)(hd * nh)), *v2 = malloc(4 * (size_t)(hd * nh)), *cs = malloc(4 * (size_t)hd);
            for (int i = 0; i < hd * nh; i++) v1[i] = v2[i] = 3 * kc_randf(&rng);
            for (int i = 0; i < hd / 2; i++) {
                double a = (double)ef_rng_below(&rng, 500) * pow(10000.0, -2.0 * i / hd);
                cs[2 * i] = (float)cos(a), cs[2 * i + 1] = (float)sin(a);
            }
            float x0 = v1[0], x1 = v1[1];
            ef__slm_kernels_scalar.rope(v1, cs, nh, hd);
            k->rope(v2, cs, nh, hd);
            CHECK_MSG(memcmp(v1, v2, 4 * (size_t)(hd * nh)) == 0, "%s rope hd=%d heads=%d", k->name, hd, nh);
            CHECK(fabs(v1[0] - ((double)x0 * cs[0] - (double)x1 * cs[1])) <= 1e-6 * (fabs(x0) + fabs(x1)));
            CHECK(fabs(v1[1] - ((double)x0 * cs[1] + (double)x1 * cs[0])) <= 1e-6 * (fabs(x0) + fabs(x1)));
            int64_t m = 1 + (int64_t)ef_rng_below(&rng, 100);
            float *g1 = malloc(4 * (size_t)m), *g2 = malloc(4 * (size_t)m), *u = malloc(4 * (size_t)m);
            for (int64_t i = 0; i < m; i++) g1[i] = g2[i] = 12 * kc_randf(&rng), u[i] = kc_randf(&rng);
            if (m > 3) g1[1] = g2[1] = 100.0f, g1[2] = g2[2] = -100.0f, g1[3] = g2[3] = 0.0f;
            float g0[100];
            memcpy(g0, g1, 4 * (size_t)m);
            ef__slm_kernels_scalar.swiglu(g1, u, m);
            k->swiglu(g2, u, m);
            CHECK_MSG(memcmp(g1, g2, 4 * (size_t)m) == 0, "%s swiglu n=%lld", k->name, (long long)m);
            double worst = 0;
            for (int64_t i = 0; i < m; i++) {
                double xv = g0[i], r = xv / (1 + exp(-xv)) * u[i];
                worst = fmax(worst, fabs(g1[i] - r) / (fabs(r) + 1e-30));
            }
            CHECK_MSG(worst <= 1e-6, "scalar swiglu relative error %.3g", worst);
            free(v1);
            free(v2);
            free(cs);
            free(g1);
            free(g2);
            free(u);
        }
        free(x);
        free(qa);
        free(qs);
        free(ha);
        free(hs);
        free(fa);
        free(fs);
    }

    /* fp16 conversion: every half to float, and floats of every exponent
     * (incl. subnormal, overflow, inf, NaN bit patterns) to half */
    uint16_t *h = malloc(65536 * 2);
    float *fk = malloc(65536 * 4), *fsc = malloc(65536 * 4);
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    ef__slm_kernels_scalar.from_f16(fsc, h, 65536);
    k->from_f16(fk, h, 65536);
    CHECK_MSG(memcmp(fk, fsc, 65536 * 4) == 0, "%s from_f16 over all halves", k->name);
    uint32_t *bits = malloc(65536 * 4);
    float *bf = malloc(65536 * 4);
    uint16_t *hk = malloc(65536 * 2), *hsc = malloc(65536 * 2);
    for (int rep = 0; rep < 64; rep++) {
        for (int i = 0; i < 65536; i++) {
            uint32_t e = (uint32_t)ef_rng_below(&rng, 256), m = (uint32_t)ef_rng_u64(&rng) & 0x7fffff;
            if (i % 5 == 0) m &= ~0x1fffu, m |= (uint32_t)ef_rng_below(&rng, 3) << 12; /* ties */
            bits[i] = ((uint32_t)(i & 1) << 31) | (e << 23) | m;
        }
        memcpy(bf, bits, 65536 * 4);
        ef__slm_kernels_scalar.to_f16(hsc, bf, 65536);
        k->to_f16(hk, bf, 65536);
        CHECK_MSG(memcmp(hk, hsc, 65536 * 2) == 0, "%s to_f16 on random bit patterns", k->name);
    }
    free(h);
    free(fk);
    free(fsc);
    free(bits);
    free(bf);
    free(hk);
    free(hsc);
}

#endif /* EDGEFL_TEST_SLM_KERNEL_CHECK_H */
