/*
 * Internal: the 256-bit building blocks of the x86 kernel sets, included by
 * kernels_avx2.c and kernels_avx512.c (which use them for everything that
 * does not gain from 512-bit vectors, and for leftover rows). The includer
 * defines INL: static inline, always inlined, with its target attribute.
 * Only intrinsics that SIMDe also provides are used, so the AVX-512 file
 * can be compiled against SIMDe and tested on a CPU without AVX-512.
 */
#ifndef EDGEFL_SLM_KERNELS_X86_INL_H
#define EDGEFL_SLM_KERNELS_X86_INL_H

INL float hsum_ps(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

INL float h2f(uint16_t h) { return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h))); }

INL uint16_t f2h(float f) {
    return (uint16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT), 0);
}

/* ---- activation conversion ----------------------------------------------- */

INL void x86_quant_q8_0(void *dst, const float *x, int64_t n) {
    ef__blk_q8_0 *y = dst;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t b = 0; b < n / EF_QK; b++, x += EF_QK) {
        __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
        __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
        __m256 m = _mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1));
        m = _mm256_max_ps(m, _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        y[b].d = f2h(amax / 127.0f);
        __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
        __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, id), _MM_FROUND_TO_NEAREST_INT));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, id), _MM_FROUND_TO_NEAREST_INT));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, id), _MM_FROUND_TO_NEAREST_INT));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, id), _MM_FROUND_TO_NEAREST_INT));
        /* the packs work per 128-bit half; the permute restores element order */
        i0 = _mm256_packs_epi32(i0, i1);
        i2 = _mm256_packs_epi32(i2, i3);
        i0 = _mm256_packs_epi16(i0, i2);
        _mm256_storeu_si256((__m256i *)y[b].qs, _mm256_permutevar8x32_epi32(i0, perm));
    }
}

INL void x86_to_f16(uint16_t *dst, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = f2h(x[i]);
}

INL void x86_from_f16(float *dst, const uint16_t *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    for (; i < n; i++) dst[i] = h2f(x[i]);
}

/* ---- dot products and axpy ------------------------------------------------- */

INL float x86_dot_f32(const float *a, const float *b, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0, n8 = n - n % 8;
    for (; i < n8; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    float s = hsum_ps(acc);
    for (; i < n; i++) s = fmaf(a[i], b[i], s);
    return s;
}

INL __m256 ld_h8(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

INL float x86_dot_f16(const uint16_t *a, const uint16_t *b, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0, n8 = n - n % 8;
    for (; i < n8; i += 8) acc = _mm256_fmadd_ps(ld_h8(a + i), ld_h8(b + i), acc);
    float s = hsum_ps(acc);
    for (; i < n; i++) s = fmaf(h2f(a[i]), h2f(b[i]), s);
    return s;
}

/* ggml_vec_dot_f16 / _f32 as ggml's AVX2 build computes them (see fa_rows). */
INL float x86_ggml_dot(const void *x, const void *y, int n, int f16) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    const int n32 = n - n % 32;
#define LD8(p, i) (f16 ? ld_h8((const uint16_t *)(p) + (i)) : _mm256_loadu_ps((const float *)(p) + (i)))
    for (int i = 0; i < n32; i += 32) {
        s0 = _mm256_fmadd_ps(LD8(x, i), LD8(y, i), s0);
        s1 = _mm256_fmadd_ps(LD8(x, i + 8), LD8(y, i + 8), s1);
        s2 = _mm256_fmadd_ps(LD8(x, i + 16), LD8(y, i + 16), s2);
        s3 = _mm256_fmadd_ps(LD8(x, i + 24), LD8(y, i + 24), s3);
    }
#undef LD8
    s0 = _mm256_add_ps(_mm256_add_ps(s0, s2), _mm256_add_ps(s1, s3));
    const __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
    const __m128 t1 = _mm_hadd_ps(t0, t0);
    const float r = _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
    if (!f16) {
        float s = r;
        for (int i = n32; i < n; i++) s = fmaf(((const float *)x)[i], ((const float *)y)[i], s);
        return s;
    }
    double sum = (double)r;
    for (int i = n32; i < n; i++) {
        float p = h2f(((const uint16_t *)x)[i]) * h2f(((const uint16_t *)y)[i]);
        sum += (double)p;
    }
    return (float)sum;
}

/* One activation row through F32/F16 weights: ggml_vec_dot's order per row. */
INL void x86_mv_f(int F16, float *y, const char *w, size_t ws, const void *x, int64_t n, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) y[r] = x86_ggml_dot(w + (size_t)r * ws, x, (int)n, F16);
}

/* F16 cache, head size HD (a constant multiple of 32, at most 64), in three
 * passes with the same arithmetic as one position at a time: all scores
 * (independent dot products), then the exponentials (their arguments follow
 * from the running maximum alone, so the expf calls no longer wait for each
 * other), then the accumulator, kept in registers as floats that hold F16
 * values (rounded after every update, exactly as storing it would). */
INL void x86_fa_rows_f16_hd(int HD, ef__fa *st, uint16_t *acc, const uint16_t *q16, const void *k, const void *v,
                            size_t stride, int np, float scale, float *sc) {
    float *ex = sc + np;
    float qf[64];
    for (int i = 0; i < HD; i += 8) _mm256_storeu_ps(qf + i, ld_h8(q16 + i));
    for (int p = 0; p < np; p++) {
        const uint16_t *kp = (const uint16_t *)((const char *)k + (size_t)p * stride);
        /* ggml_vec_dot_f16 for n = HD (a multiple of 32: no leftovers) */
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        for (int i = 0; i < HD; i += 32) {
            s0 = _mm256_fmadd_ps(ld_h8(kp + i), _mm256_loadu_ps(qf + i), s0);
            s1 = _mm256_fmadd_ps(ld_h8(kp + i + 8), _mm256_loadu_ps(qf + i + 8), s1);
            s2 = _mm256_fmadd_ps(ld_h8(kp + i + 16), _mm256_loadu_ps(qf + i + 16), s2);
            s3 = _mm256_fmadd_ps(ld_h8(kp + i + 24), _mm256_loadu_ps(qf + i + 24), s3);
        }
        s0 = _mm256_add_ps(_mm256_add_ps(s0, s2), _mm256_add_ps(s1, s3));
        const __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
        const __m128 t1 = _mm_hadd_ps(t0, t0);
        sc[p] = _mm_cvtss_f32(_mm_hadd_ps(t1, t1)) * scale;
    }
    float M = st->M;
    for (int p = 0; p < np; p++) {
        if (sc[p] > M) {
            ex[p] = M - sc[p];
            M = sc[p];
        } else {
            ex[p] = sc[p] - M;
        }
    }
    for (int p = 0; p < np; p++) ex[p] = expf(ex[p]);
    __m256 a[8];
    for (int i = 0; i < HD; i += 8) a[i / 8] = ld_h8(acc + i);
    float S = st->S;
    M = st->M;
    for (int p = 0; p < np; p++) {
        const uint16_t *vp = (const uint16_t *)((const char *)v + (size_t)p * stride);
        float ms = 1.0f, vs = 1.0f;
        if (sc[p] > M) {
            ms = ex[p];
            M = sc[p];
            const __m256 m8 = _mm256_set1_ps(ms);
            for (int i = 0; i < HD / 8; i++)
                a[i] = _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_mul_ps(a[i], m8), _MM_FROUND_TO_NEAREST_INT));
        } else {
            vs = ex[p];
        }
        const __m256 v8 = _mm256_set1_ps(vs);
        for (int i = 0; i < HD / 8; i++)
            a[i] = _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_fmadd_ps(ld_h8(vp + 8 * i), v8, a[i]), _MM_FROUND_TO_NEAREST_INT));
        S = ef__mul_add_unfused(S, ms, vs);
    }
    for (int i = 0; i < HD; i += 8)
        _mm_storeu_si128((__m128i *)(acc + i), _mm256_cvtps_ph(a[i / 8], _MM_FROUND_TO_NEAREST_INT));
    st->M = M;
    st->S = S;
}

INL void x86_fa_rows(ef__fa *st, void *acc, const void *q, const void *k, const void *v, size_t stride, int np,
                     int hd, float scale, int f16, float *scratch) {
    if (f16 && hd == 64) {
        x86_fa_rows_f16_hd(64, st, acc, q, k, v, stride, np, scale, scratch);
        return;
    }
    if (f16 && hd == 32) {
        x86_fa_rows_f16_hd(32, st, acc, q, k, v, stride, np, scale, scratch);
        return;
    }
    const int h8 = hd - hd % 8;
    for (int p = 0; p < np; p++) {
        const char *kp = (const char *)k + (size_t)p * stride, *vp = (const char *)v + (size_t)p * stride;
        float s = x86_ggml_dot(kp, q, hd, f16) * scale, ms = 1.0f, vs = 1.0f;
        if (s > st->M) {
            ms = expf(st->M - s);
            st->M = s;
            const __m256 m8 = _mm256_set1_ps(ms);
            int i = 0;
            if (f16) {
                uint16_t *a = acc;
                for (; i < h8; i += 8)
                    _mm_storeu_si128((__m128i *)(a + i), _mm256_cvtps_ph(_mm256_mul_ps(ld_h8(a + i), m8), _MM_FROUND_TO_NEAREST_INT));
                for (; i < hd; i++) a[i] = f2h(h2f(a[i]) * ms);
            } else {
                float *a = acc;
                for (; i < h8; i += 8) _mm256_storeu_ps(a + i, _mm256_mul_ps(_mm256_loadu_ps(a + i), m8));
                for (; i < hd; i++) a[i] *= ms;
            }
        } else {
            vs = expf(s - st->M);
        }
        const __m256 v8 = _mm256_set1_ps(vs);
        int i = 0;
        if (f16) {
            uint16_t *a = acc;
            const uint16_t *vv = (const uint16_t *)vp;
            for (; i < h8; i += 8)
                _mm_storeu_si128((__m128i *)(a + i),
                                 _mm256_cvtps_ph(_mm256_fmadd_ps(ld_h8(vv + i), v8, ld_h8(a + i)), _MM_FROUND_TO_NEAREST_INT));
            for (; i < hd; i++) a[i] = f2h(fmaf(h2f(vv[i]), vs, h2f(a[i])));
        } else {
            float *a = acc;
            const float *vv = (const float *)vp;
            for (; i < h8; i += 8)
                _mm256_storeu_ps(a + i, _mm256_fmadd_ps(_mm256_loadu_ps(vv + i), v8, _mm256_loadu_ps(a + i)));
            for (; i < hd; i++) a[i] = fmaf(vv[i], vs, a[i]);
        }
        st->S = ef__mul_add_unfused(st->S, ms, vs);
    }
}

INL void x86_fa_finish(float *out, const ef__fa *st, const void *acc, int hd, int f16) {
    const float inv = st->S == 0.0f ? 0.0f : 1.0f / st->S;
    const __m256 i8 = _mm256_set1_ps(inv);
    int i = 0;
    for (; i + 8 <= hd; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(f16 ? ld_h8((const uint16_t *)acc + i)
                                                     : _mm256_loadu_ps((const float *)acc + i), i8));
    for (; i < hd; i++) out[i] = (f16 ? h2f(((const uint16_t *)acc)[i]) : ((const float *)acc)[i]) * inv;
}

INL void x86_rope(float *v, const float *cs, int n_heads, int hd) {
    const __m256 neg_even = _mm256_castsi256_ps(_mm256_setr_epi32((int)0x80000000u, 0, (int)0x80000000u, 0,
                                                                  (int)0x80000000u, 0, (int)0x80000000u, 0));
    const int h8 = hd - hd % 8;
    for (int h = 0; h < n_heads; h++, v += hd) {
        int i = 0;
        for (; i < h8; i += 8) {
            const __m256 x = _mm256_loadu_ps(v + i), c = _mm256_loadu_ps(cs + i);
            const __m256 x0 = _mm256_moveldup_ps(x), x1 = _mm256_movehdup_ps(x);
            /* (-s, c) per pair, times x1: -(x1*s) and x1*c exactly as the scalar form */
            const __m256 t = _mm256_mul_ps(x1, _mm256_xor_ps(_mm256_permute_ps(c, 0xb1), neg_even));
            _mm256_storeu_ps(v + i, _mm256_fmadd_ps(x0, c, t));
        }
        for (; i < hd; i += 2) {
            const float x0 = v[i], x1 = v[i + 1], c = cs[i], s = cs[i + 1];
            v[i] = fmaf(x0, c, -(x1 * s));
            v[i + 1] = fmaf(x0, s, x1 * c);
        }
    }
}

/* ggml_v_expf and ggml_v_silu (ggml-cpu vec.h, x86 AVX2 + FMA). */
INL __m256 x86_ggml_expf8(__m256 x) {
    const __m256 r = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r);
    const __m256 n = _mm256_sub_ps(z, r);
    const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                      _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
    const __m256 k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1))));
    const __m256i c = _mm256_castps_si256(
        _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.f), n), _mm256_set1_ps(126), _CMP_GT_OQ));
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
                        _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
        u, _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), b));
    if (!_mm256_movemask_ps(_mm256_castsi256_ps(c))) return _mm256_fmadd_ps(j, k, k);
    const __m256i g = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
                                       _mm256_set1_epi32((int)0x82000000u));
    const __m256 s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f000000)));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    const __m256i d = _mm256_castps_si256(
        _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.f), n), _mm256_set1_ps(192), _CMP_GT_OQ));
    return _mm256_or_ps(
        _mm256_and_ps(_mm256_castsi256_ps(d), _mm256_mul_ps(s1, s1)),
        _mm256_andnot_ps(_mm256_castsi256_ps(d),
                         _mm256_or_ps(_mm256_and_ps(_mm256_castsi256_ps(c), _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1)),
                                      _mm256_andnot_ps(_mm256_castsi256_ps(c), _mm256_fmadd_ps(k, j, k)))));
}

INL void x86_swiglu(float *g, const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 e = x86_ggml_expf8(_mm256_sub_ps(_mm256_setzero_ps(), x));
        const __m256 silu = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1), e));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* ---- F32 / F16 matrix products ------------------------------------------- */

/* One tile: RM weight rows from r, RN activation rows from b. F16 selects
 * half-precision weights and activations. RM, RN and F16 are constants at
 * every call site, so the loops unroll and the accumulators stay in
 * registers. */
INL void tile_f(int RM, int RN, int F16, float *y, int64_t ldy, const char *w, size_t ws,
                const char *x, size_t xs, int64_t n, int64_t r, int64_t b) {
    __m256 acc[8][3];
    for (int i = 0; i < RM; i++)
        for (int j = 0; j < RN; j++) acc[i][j] = _mm256_setzero_ps();
    const char *wr[8], *xr[3];
    for (int i = 0; i < RM; i++) wr[i] = w + (size_t)(r + i) * ws;
    for (int j = 0; j < RN; j++) xr[j] = x + (size_t)(b + j) * xs;
    int64_t n8 = n - n % 8, k = 0;
    for (; k < n8; k += 8) {
        __m256 xv[3];
        for (int j = 0; j < RN; j++)
            xv[j] = F16 ? ld_h8((const uint16_t *)xr[j] + k) : _mm256_loadu_ps((const float *)xr[j] + k);
        for (int i = 0; i < RM; i++) {
            __m256 wv = F16 ? ld_h8((const uint16_t *)wr[i] + k) : _mm256_loadu_ps((const float *)wr[i] + k);
            for (int j = 0; j < RN; j++) acc[i][j] = _mm256_fmadd_ps(wv, xv[j], acc[i][j]);
        }
    }
    for (int i = 0; i < RM; i++)
        for (int j = 0; j < RN; j++) {
            float s = hsum_ps(acc[i][j]);
            for (int64_t kk = n8; kk < n; kk++) {
                float wv = F16 ? h2f(((const uint16_t *)wr[i])[kk]) : ((const float *)wr[i])[kk];
                float xv = F16 ? h2f(((const uint16_t *)xr[j])[kk]) : ((const float *)xr[j])[kk];
                s = fmaf(wv, xv, s);
            }
            y[(b + j) * ldy + r + i] = s;
        }
}

/* ---- quantized matrix products --------------------------------------------- */

/* Eight int32 lanes, lane l = sum of a[4l+j] * b[4l+j] for a unsigned bytes
 * (at most 255... here at most 128) and b signed bytes. */
INL __m256i dot_u8s8(__m256i a, __m256i b) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1));
}

/* Q4_0 block -> its 32 nibbles as bytes 0..15 in element order: the 16
 * bytes in both halves, the upper half shifted right by 4, then masked. */
INL __m256i q4_bytes(const uint8_t *qs) {
    __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    v = _mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4));
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
}

/* Q8_0 or Q4_0 (Q4 != 0) weight tile against Q8_0 activations. For Q4_0,
 * sum (q - 8) y = sum q y - 8 sum y, with 8 sum y per lane computed once per
 * activation block. */
INL void tile_q(int RM, int RN, int Q4, float *y, int64_t ldy, const char *w, size_t ws,
                const char *x, size_t xs, int64_t n, int64_t r, int64_t b) {
    __m256 acc[8][3];
    for (int i = 0; i < RM; i++)
        for (int j = 0; j < RN; j++) acc[i][j] = _mm256_setzero_ps();
    const char *wr[8];
    const ef__blk_q8_0 *xr[3];
    for (int i = 0; i < RM; i++) wr[i] = w + (size_t)(r + i) * ws;
    for (int j = 0; j < RN; j++) xr[j] = (const ef__blk_q8_0 *)(x + (size_t)(b + j) * xs);
    const int64_t nblk = n / EF_QK;
    const __m256i eight = _mm256_set1_epi8(8);
    for (int64_t k = 0; k < nblk; k++) {
        __m256i yq[3], ys8[3] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
        __m256 dy[3];
        for (int j = 0; j < RN; j++) {
            yq[j] = _mm256_loadu_si256((const __m256i *)xr[j][k].qs);
            dy[j] = _mm256_set1_ps(h2f(xr[j][k].d));
            if (Q4) ys8[j] = dot_u8s8(eight, yq[j]);
        }
        for (int i = 0; i < RM; i++) {
            __m256 dw;
            if (Q4) {
                const ef__blk_q4_0 *blk = (const ef__blk_q4_0 *)wr[i] + k;
                __m256i q = q4_bytes(blk->qs);
                dw = _mm256_set1_ps(h2f(blk->d));
                for (int j = 0; j < RN; j++) {
                    __m256i s = _mm256_sub_epi32(dot_u8s8(q, yq[j]), ys8[j]);
                    acc[i][j] = _mm256_fmadd_ps(_mm256_mul_ps(dw, dy[j]), _mm256_cvtepi32_ps(s), acc[i][j]);
                }
            } else {
                const ef__blk_q8_0 *blk = (const ef__blk_q8_0 *)wr[i] + k;
                __m256i q = _mm256_loadu_si256((const __m256i *)blk->qs);
                __m256i aq = _mm256_sign_epi8(q, q);
                dw = _mm256_set1_ps(h2f(blk->d));
                for (int j = 0; j < RN; j++) {
                    __m256i s = dot_u8s8(aq, _mm256_sign_epi8(yq[j], q));
                    acc[i][j] = _mm256_fmadd_ps(_mm256_mul_ps(dw, dy[j]), _mm256_cvtepi32_ps(s), acc[i][j]);
                }
            }
        }
    }
    for (int i = 0; i < RM; i++)
        for (int j = 0; j < RN; j++) y[(b + j) * ldy + r + i] = hsum_ps(acc[i][j]);
}

/* Matrix-vector product (one activation row) over four weight rows, Q8_0 or
 * Q4_0: the decoding hot path, written out so the four accumulators and
 * everything per block stay in registers. The four rows' scales are
 * converted and multiplied by the activation's scale in one vector. */
INL void mv_q4rows(int Q4, float *y, const char *w, size_t ws, const ef__blk_q8_0 *x, int64_t n, int64_t r) {
    const char *w0 = w + (size_t)r * ws, *w1 = w0 + ws, *w2 = w1 + ws, *w3 = w2 + ws;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const int64_t nblk = n / EF_QK;
    const size_t bs = Q4 ? sizeof(ef__blk_q4_0) : sizeof(ef__blk_q8_0);
    const __m256i eight = _mm256_set1_epi8(8);
    for (int64_t k = 0; k < nblk; k++) {
        const size_t o = (size_t)k * bs;
        __m256i yq = _mm256_loadu_si256((const __m256i *)x[k].qs);
        uint16_t h0, h1, h2, h3;
        memcpy(&h0, w0 + o, 2);
        memcpy(&h1, w1 + o, 2);
        memcpy(&h2, w2 + o, 2);
        memcpy(&h3, w3 + o, 2);
        /* the four scales packed in a general register, then one conversion */
        const uint64_t hs = (uint64_t)h0 | (uint64_t)h1 << 16 | (uint64_t)h2 << 32 | (uint64_t)h3 << 48;
        __m128 da = _mm_cvtph_ps(_mm_cvtsi64_si128((long long)hs));
        __m128 dd = _mm_mul_ps(da, _mm_set1_ps(h2f(x[k].d)));
        __m256 d2 = _mm256_insertf128_ps(_mm256_castps128_ps256(dd), dd, 1);
        __m256i s0, s1, s2, s3;
        if (Q4) {
            __m256i ys8 = dot_u8s8(eight, yq);
            s0 = _mm256_sub_epi32(dot_u8s8(q4_bytes((const uint8_t *)w0 + o + 2), yq), ys8);
            s1 = _mm256_sub_epi32(dot_u8s8(q4_bytes((const uint8_t *)w1 + o + 2), yq), ys8);
            s2 = _mm256_sub_epi32(dot_u8s8(q4_bytes((const uint8_t *)w2 + o + 2), yq), ys8);
            s3 = _mm256_sub_epi32(dot_u8s8(q4_bytes((const uint8_t *)w3 + o + 2), yq), ys8);
        } else {
            __m256i q0 = _mm256_loadu_si256((const __m256i *)(w0 + o + 2));
            __m256i q1 = _mm256_loadu_si256((const __m256i *)(w1 + o + 2));
            __m256i q2 = _mm256_loadu_si256((const __m256i *)(w2 + o + 2));
            __m256i q3 = _mm256_loadu_si256((const __m256i *)(w3 + o + 2));
            s0 = dot_u8s8(_mm256_sign_epi8(q0, q0), _mm256_sign_epi8(yq, q0));
            s1 = dot_u8s8(_mm256_sign_epi8(q1, q1), _mm256_sign_epi8(yq, q1));
            s2 = dot_u8s8(_mm256_sign_epi8(q2, q2), _mm256_sign_epi8(yq, q2));
            s3 = dot_u8s8(_mm256_sign_epi8(q3, q3), _mm256_sign_epi8(yq, q3));
        }
        a0 = _mm256_fmadd_ps(_mm256_shuffle_ps(d2, d2, 0x00), _mm256_cvtepi32_ps(s0), a0);
        a1 = _mm256_fmadd_ps(_mm256_shuffle_ps(d2, d2, 0x55), _mm256_cvtepi32_ps(s1), a1);
        a2 = _mm256_fmadd_ps(_mm256_shuffle_ps(d2, d2, 0xaa), _mm256_cvtepi32_ps(s2), a2);
        a3 = _mm256_fmadd_ps(_mm256_shuffle_ps(d2, d2, 0xff), _mm256_cvtepi32_ps(s3), a3);
    }
    y[r] = hsum_ps(a0);
    y[r + 1] = hsum_ps(a1);
    y[r + 2] = hsum_ps(a2);
    y[r + 3] = hsum_ps(a3);
}

/* The same for two activation rows (prompt batches): eight accumulators,
 * each weight block loaded once for both, the four rows' scales converted
 * together and multiplied by each activation row's scale. */
INL void mm_q4x2(int Q4, float *y, int64_t ldy, const char *w, size_t ws, const ef__blk_q8_0 *x0,
                 const ef__blk_q8_0 *x1, int64_t n, int64_t r) {
    const char *w0 = w + (size_t)r * ws, *w1 = w0 + ws, *w2 = w1 + ws, *w3 = w2 + ws;
    __m256 a00 = _mm256_setzero_ps(), a10 = a00, a20 = a00, a30 = a00;
    __m256 a01 = a00, a11 = a00, a21 = a00, a31 = a00;
    const int64_t nblk = n / EF_QK;
    const size_t bs = Q4 ? sizeof(ef__blk_q4_0) : sizeof(ef__blk_q8_0);
    const __m256i eight = _mm256_set1_epi8(8);
    for (int64_t k = 0; k < nblk; k++) {
        const size_t o = (size_t)k * bs;
        const __m256i y0 = _mm256_loadu_si256((const __m256i *)x0[k].qs);
        const __m256i y1 = _mm256_loadu_si256((const __m256i *)x1[k].qs);
        uint16_t h0, h1, h2, h3;
        memcpy(&h0, w0 + o, 2);
        memcpy(&h1, w1 + o, 2);
        memcpy(&h2, w2 + o, 2);
        memcpy(&h3, w3 + o, 2);
        const uint64_t hs = (uint64_t)h0 | (uint64_t)h1 << 16 | (uint64_t)h2 << 32 | (uint64_t)h3 << 48;
        const __m128 da = _mm_cvtph_ps(_mm_cvtsi64_si128((long long)hs));
        const __m128 d0 = _mm_mul_ps(da, _mm_set1_ps(h2f(x0[k].d))), d1 = _mm_mul_ps(da, _mm_set1_ps(h2f(x1[k].d)));
        const __m256 e0 = _mm256_insertf128_ps(_mm256_castps128_ps256(d0), d0, 1);
        const __m256 e1 = _mm256_insertf128_ps(_mm256_castps128_ps256(d1), d1, 1);
#define ROW(W, I, A0, A1, SH)                                                                              \
    do {                                                                                                   \
        __m256i s0, s1;                                                                                    \
        if (Q4) {                                                                                          \
            const __m256i q = q4_bytes((const uint8_t *)(W) + o + 2);                                      \
            s0 = _mm256_sub_epi32(dot_u8s8(q, y0), dot_u8s8(eight, y0));                                   \
            s1 = _mm256_sub_epi32(dot_u8s8(q, y1), dot_u8s8(eight, y1));                                   \
        } else {                                                                                           \
            const __m256i q = _mm256_loadu_si256((const __m256i *)((W) + o + 2));                          \
            const __m256i aq = _mm256_sign_epi8(q, q);                                                     \
            s0 = dot_u8s8(aq, _mm256_sign_epi8(y0, q));                                                    \
            s1 = dot_u8s8(aq, _mm256_sign_epi8(y1, q));                                                    \
        }                                                                                                  \
        A0 = _mm256_fmadd_ps(_mm256_shuffle_ps(e0, e0, SH), _mm256_cvtepi32_ps(s0), A0);                   \
        A1 = _mm256_fmadd_ps(_mm256_shuffle_ps(e1, e1, SH), _mm256_cvtepi32_ps(s1), A1);                   \
    } while (0)
        ROW(w0, 0, a00, a01, 0x00);
        ROW(w1, 1, a10, a11, 0x55);
        ROW(w2, 2, a20, a21, 0xaa);
        ROW(w3, 3, a30, a31, 0xff);
#undef ROW
    }
    y[r] = hsum_ps(a00);
    y[r + 1] = hsum_ps(a10);
    y[r + 2] = hsum_ps(a20);
    y[r + 3] = hsum_ps(a30);
    y[ldy + r] = hsum_ps(a01);
    y[ldy + r + 1] = hsum_ps(a11);
    y[ldy + r + 2] = hsum_ps(a21);
    y[ldy + r + 3] = hsum_ps(a31);
}

#endif /* EDGEFL_SLM_KERNELS_X86_INL_H */
