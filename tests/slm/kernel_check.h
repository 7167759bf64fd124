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
        /* attention kernels: odd head sizes and position counts, rows with padding */
        {
            int hd = 2 + 2 * (int)ef_rng_below(&rng, 40), np = 1 + (int)ef_rng_below(&rng, 30);
            size_t stride = (size_t)(hd + 6) * 4;
            float *kv = malloc(stride * (size_t)np), *q = malloc(sizeof(float) * (size_t)hd);
            uint16_t *kvh = malloc(stride * (size_t)np), *qh = malloc(2 * (size_t)hd);
            for (size_t i = 0; i < stride * (size_t)np / 4; i++) kv[i] = kc_randf(&rng);
            for (size_t i = 0; i < stride * (size_t)np / 2; i++) kvh[i] = ef__f32_to_f16(kc_randf(&rng));
            for (int i = 0; i < hd; i++) q[i] = kc_randf(&rng), qh[i] = ef__f32_to_f16(q[i]);
            float *s1 = malloc(sizeof(float) * (size_t)np), *s2 = malloc(sizeof(float) * (size_t)np);
            float *o0 = malloc(sizeof(float) * (size_t)hd), *os = malloc(sizeof(float) * (size_t)hd),
                  *oa = malloc(sizeof(float) * (size_t)hd);
            for (int i = 0; i < hd; i++) o0[i] = kc_randf(&rng);
            for (int f16 = 0; f16 < 2; f16++) {
                const void *kk = f16 ? (const void *)kvh : (const void *)kv, *qq = f16 ? (const void *)qh : (const void *)q;
                ef__slm_kernels_scalar.attn_scores(s1, qq, kk, stride, np, hd, 0.125f, f16);
                k->attn_scores(s2, qq, kk, stride, np, hd, 0.125f, f16);
                CHECK_MSG(memcmp(s1, s2, sizeof(float) * (size_t)np) == 0, "%s attn_scores hd=%d np=%d f16=%d",
                          k->name, hd, np, f16);
                double mag, ref = kc_ref_dot(f16 ? EF_SLM_F16 : EF_SLM_F32, kk, qq, hd, &mag);
                CHECK_MSG(fabs(s1[0] - 0.125 * ref) <= 1e-5 * mag, "scalar attn_scores against the reference");
                memcpy(os, o0, sizeof(float) * (size_t)hd);
                memcpy(oa, o0, sizeof(float) * (size_t)hd);
                ef__slm_kernels_scalar.attn_values(os, s1, kk, stride, np, hd, f16);
                k->attn_values(oa, s1, kk, stride, np, hd, f16);
                CHECK_MSG(memcmp(oa, os, sizeof(float) * (size_t)hd) == 0, "%s attn_values hd=%d np=%d f16=%d",
                          k->name, hd, np, f16);
                double r0 = o0[0], mg = fabs(o0[0]);
                for (int p = 0; p < np; p++) {
                    double vv = f16 ? ef__f16_to_f32(kvh[(size_t)p * stride / 2]) : kv[(size_t)p * stride / 4];
                    r0 += s1[p] * vv;
                    mg += fabs(s1[p] * vv);
                }
                CHECK_MSG(fabs(os[0] - r0) <= 1e-5 * mg, "scalar attn_values against the reference");
            }
            free(kv);
            free(q);
            free(kvh);
            free(qh);
            free(s1);
            free(s2);
            free(o0);
            free(os);
            free(oa);
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
