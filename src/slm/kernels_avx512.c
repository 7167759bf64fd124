/*
 * The inference kernels for AVX-512 (F, BW, VL on top of AVX2 + FMA + F16C),
 * compiled with target attributes and chosen at run time. Bit-identical to
 * the scalar set: each 512-bit register holds the eight canonical lanes of
 * TWO weight rows (row a in the low half, row b in the high half) against
 * the same activation block broadcast to both halves, so every row keeps
 * exactly the arithmetic of slm_internal.h while the instruction count per
 * row halves. Conversions, dot products and leftover single rows use the
 * 256-bit code shared with the AVX2 set.
 *
 * Built a second time by the tests with EF_SLM_SIMDE defined, against
 * SIMDe's portable implementations of the intrinsics, so the code is
 * exercised on CPUs without AVX-512 too (that copy is named
 * ef__slm_kernels_avx512_emu and is not part of the library).
 */
#if defined(EF_SLM_SIMDE)
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <simde/x86/f16c.h>
#include <simde/x86/fma.h>
/* SIMDe 0.7 aliases these two wrongly or not at all */
#undef _mm512_madd_epi16
#define _mm512_madd_epi16(a, b) simde_mm512_madd_epi16(a, b)
#define __mmask64 simde__mmask64
#define TGT
#define INL static inline
#define KSET ef__slm_kernels_avx512_emu
#define KNAME "avx512-emu"
#elif defined(__x86_64__)
#include <immintrin.h>
#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define KSET ef__slm_kernels_avx512
#define KNAME "avx512"
#endif

#if defined(KSET)

#include "slm_internal.h"

#include "kernels_x86_inl.h"

#if defined(EF_SLM_SIMDE)
extern const ef__slm_kernels ef__slm_kernels_avx512_emu;
/* SIMDe 0.7 lacks the 512-bit int32 -> float conversion. */
INL __m512 cvt_i32_ps(__m512i v) {
    __m256 lo = _mm256_cvtepi32_ps(_mm512_castsi512_si256(v));
    __m256 hi = _mm256_cvtepi32_ps(_mm512_extracti64x4_epi64(v, 1));
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(lo)),
                                               _mm256_castps_pd(hi), 1));
}
#else
INL __m512 cvt_i32_ps(__m512i v) { return _mm512_cvtepi32_ps(v); }
#endif

INL __m512i pair_si(__m256i lo, __m256i hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

INL __m512 pair_ps(__m256 lo, __m256 hi) {
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(lo)),
                                               _mm256_castps_pd(hi), 1));
}

INL __m256 hi_ps(__m512 v) { return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)); }

INL __m512i dot_u8s8_512(__m512i a, __m512i b) {
    return _mm512_madd_epi16(_mm512_maddubs_epi16(a, b), _mm512_set1_epi16(1));
}

/* Quantized tile: RP row pairs (rows r .. r+2RP-1) x RN activation rows. */
INL void tile_q512(int RP, int RN, int Q4, float *y, int64_t ldy, const char *w, size_t ws,
                   const char *x, size_t xs, int64_t n, int64_t r, int64_t b) {
    __m512 acc[4][3];
    for (int p = 0; p < RP; p++)
        for (int j = 0; j < RN; j++) acc[p][j] = _mm512_setzero_ps();
    const char *wr[8];
    const ef__blk_q8_0 *xr[3];
    for (int i = 0; i < 2 * RP; i++) wr[i] = w + (size_t)(r + i) * ws;
    for (int j = 0; j < RN; j++) xr[j] = (const ef__blk_q8_0 *)(x + (size_t)(b + j) * xs);
    const int64_t nblk = n / EF_QK;
    const __m512i eight = _mm512_set1_epi8(8), zero = _mm512_setzero_si512();
    for (int64_t k = 0; k < nblk; k++) {
        __m512i yq[3], ys8[3] = {zero, zero, zero};
        __m512 dy[3];
        for (int j = 0; j < RN; j++) {
            __m256i t = _mm256_loadu_si256((const __m256i *)xr[j][k].qs);
            yq[j] = pair_si(t, t);
            dy[j] = _mm512_set1_ps(h2f(xr[j][k].d));
            if (Q4) ys8[j] = dot_u8s8_512(eight, yq[j]);
        }
        for (int p = 0; p < RP; p++) {
            __m512 dw;
            if (Q4) {
                const ef__blk_q4_0 *ba = (const ef__blk_q4_0 *)wr[2 * p] + k;
                const ef__blk_q4_0 *bb = (const ef__blk_q4_0 *)wr[2 * p + 1] + k;
                __m512i q = pair_si(q4_bytes(ba->qs), q4_bytes(bb->qs));
                dw = _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(h2f(ba->d)), _mm512_set1_ps(h2f(bb->d)));
                for (int j = 0; j < RN; j++) {
                    __m512i s = _mm512_sub_epi32(dot_u8s8_512(q, yq[j]), ys8[j]);
                    acc[p][j] = _mm512_fmadd_ps(_mm512_mul_ps(dw, dy[j]), cvt_i32_ps(s), acc[p][j]);
                }
            } else {
                const ef__blk_q8_0 *ba = (const ef__blk_q8_0 *)wr[2 * p] + k;
                const ef__blk_q8_0 *bb = (const ef__blk_q8_0 *)wr[2 * p + 1] + k;
                __m512i q = pair_si(_mm256_loadu_si256((const __m256i *)ba->qs),
                                    _mm256_loadu_si256((const __m256i *)bb->qs));
                __m512i aq = _mm512_abs_epi8(q);
                __mmask64 neg = _mm512_movepi8_mask(q);
                dw = _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(h2f(ba->d)), _mm512_set1_ps(h2f(bb->d)));
                for (int j = 0; j < RN; j++) {
                    /* y with the weights' signs: what _mm256_sign_epi8 does in the AVX2 set
                     * (where a weight is 0 the product is 0 either way) */
                    __m512i ys = _mm512_mask_sub_epi8(yq[j], neg, zero, yq[j]);
                    __m512i s = dot_u8s8_512(aq, ys);
                    acc[p][j] = _mm512_fmadd_ps(_mm512_mul_ps(dw, dy[j]), cvt_i32_ps(s), acc[p][j]);
                }
            }
        }
    }
    for (int p = 0; p < RP; p++)
        for (int j = 0; j < RN; j++) {
            y[(b + j) * ldy + r + 2 * p] = hsum_ps(_mm512_castps512_ps256(acc[p][j]));
            y[(b + j) * ldy + r + 2 * p + 1] = hsum_ps(hi_ps(acc[p][j]));
        }
}

/* F32 / F16 tile: RP row pairs x RN activation rows, eight elements per row
 * per step. */
INL void tile_f512(int RP, int RN, int F16, float *y, int64_t ldy, const char *w, size_t ws,
                   const char *x, size_t xs, int64_t n, int64_t r, int64_t b) {
    __m512 acc[4][3];
    for (int p = 0; p < RP; p++)
        for (int j = 0; j < RN; j++) acc[p][j] = _mm512_setzero_ps();
    const char *wr[8], *xr[3];
    for (int i = 0; i < 2 * RP; i++) wr[i] = w + (size_t)(r + i) * ws;
    for (int j = 0; j < RN; j++) xr[j] = x + (size_t)(b + j) * xs;
    int64_t n8 = n - n % 8, k = 0;
    for (; k < n8; k += 8) {
        __m512 xv[3];
        for (int j = 0; j < RN; j++) {
            __m256 t = F16 ? ld_h8((const uint16_t *)xr[j] + k) : _mm256_loadu_ps((const float *)xr[j] + k);
            xv[j] = pair_ps(t, t);
        }
        for (int p = 0; p < RP; p++) {
            __m256 a = F16 ? ld_h8((const uint16_t *)wr[2 * p] + k) : _mm256_loadu_ps((const float *)wr[2 * p] + k);
            __m256 c = F16 ? ld_h8((const uint16_t *)wr[2 * p + 1] + k)
                           : _mm256_loadu_ps((const float *)wr[2 * p + 1] + k);
            __m512 wv = pair_ps(a, c);
            for (int j = 0; j < RN; j++) acc[p][j] = _mm512_fmadd_ps(wv, xv[j], acc[p][j]);
        }
    }
    for (int p = 0; p < RP; p++)
        for (int j = 0; j < RN; j++)
            for (int h = 0; h < 2; h++) {
                const char *wrow = wr[2 * p + h];
                float s = hsum_ps(h ? hi_ps(acc[p][j]) : _mm512_castps512_ps256(acc[p][j]));
                for (int64_t kk = n8; kk < n; kk++) {
                    float wv = F16 ? h2f(((const uint16_t *)wrow)[kk]) : ((const float *)wrow)[kk];
                    float xv = F16 ? h2f(((const uint16_t *)xr[j])[kk]) : ((const float *)xr[j])[kk];
                    s = fmaf(wv, xv, s);
                }
                y[(b + j) * ldy + r + 2 * p + h] = s;
            }
}

/* Tiles of 8 rows (4 pairs) for one activation row, 4 rows x 3 (or fewer)
 * activation rows otherwise; a row left over goes to the 256-bit tile. */
#define GEMM_DRIVER512(T512, T256, ...)                                                \
    do {                                                                               \
        if (nb == 1) {                                                                 \
            int64_t r = r0;                                                            \
            for (; r + 8 <= r1; r += 8) T512(4, 1, __VA_ARGS__, r, 0);                 \
            for (; r + 2 <= r1; r += 2) T512(1, 1, __VA_ARGS__, r, 0);                 \
            for (; r < r1; r++) T256(1, 1, __VA_ARGS__, r, 0);                         \
            return;                                                                    \
        }                                                                              \
        int64_t b = 0;                                                                 \
        for (; b + 3 <= nb; b += 3) {                                                  \
            int64_t r = r0;                                                            \
            for (; r + 4 <= r1; r += 4) T512(2, 3, __VA_ARGS__, r, b);                 \
            for (; r < r1; r++) T256(1, 3, __VA_ARGS__, r, b);                         \
        }                                                                              \
        if (nb - b == 2) {                                                             \
            int64_t r = r0;                                                            \
            for (; r + 4 <= r1; r += 4) T512(2, 2, __VA_ARGS__, r, b);                 \
            for (; r < r1; r++) T256(1, 2, __VA_ARGS__, r, b);                         \
        } else if (nb - b == 1) {                                                      \
            int64_t r = r0;                                                            \
            for (; r + 4 <= r1; r += 4) T512(2, 1, __VA_ARGS__, r, b);                 \
            for (; r < r1; r++) T256(1, 1, __VA_ARGS__, r, b);                         \
        }                                                                              \
    } while (0)

#define T512_F32(RP, RN, ...) tile_f512(RP, RN, 0, __VA_ARGS__)
#define T512_F16(RP, RN, ...) tile_f512(RP, RN, 1, __VA_ARGS__)
#define T512_Q8(RP, RN, ...) tile_q512(RP, RN, 0, __VA_ARGS__)
#define T512_Q4(RP, RN, ...) tile_q512(RP, RN, 1, __VA_ARGS__)
#define T256_F32(RM, RN, ...) tile_f(RM, RN, 0, __VA_ARGS__)
#define T256_F16(RM, RN, ...) tile_f(RM, RN, 1, __VA_ARGS__)
#define T256_Q8(RM, RN, ...) tile_q(RM, RN, 0, __VA_ARGS__)
#define T256_Q4(RM, RN, ...) tile_q(RM, RN, 1, __VA_ARGS__)

#define GEMM_ARGS                                                                              \
    float *y, int64_t ldy, const void *w, size_t w_stride, const void *x, size_t x_stride, int64_t n, \
        int64_t r0, int64_t r1, int64_t nb
#define TILE_ARGS y, ldy, (const char *)w, w_stride, (const char *)x, x_stride, n

TGT static void gemm_f32_512(GEMM_ARGS) { GEMM_DRIVER512(T512_F32, T256_F32, TILE_ARGS); }
TGT static void gemm_f16_512(GEMM_ARGS) { GEMM_DRIVER512(T512_F16, T256_F16, TILE_ARGS); }
TGT static void gemm_q8_0_512(GEMM_ARGS) { GEMM_DRIVER512(T512_Q8, T256_Q8, TILE_ARGS); }
TGT static void gemm_q4_0_512(GEMM_ARGS) { GEMM_DRIVER512(T512_Q4, T256_Q4, TILE_ARGS); }

TGT static void quant_q8_0_512(void *dst, const float *x, int64_t n) { x86_quant_q8_0(dst, x, n); }
TGT static void to_f16_512(uint16_t *dst, const float *x, int64_t n) { x86_to_f16(dst, x, n); }
TGT static void from_f16_512(float *dst, const uint16_t *x, int64_t n) { x86_from_f16(dst, x, n); }
TGT static void fa_rows_512(ef__fa *st, void *acc, const void *q, const void *k, const void *v, size_t stride,
                          int np, int hd, float scale, int f16, float *scratch) {
    x86_fa_rows(st, acc, q, k, v, stride, np, hd, scale, f16, scratch);
}
TGT static void fa_finish_512(float *out, const ef__fa *st, const void *acc, int hd, int f16) {
    x86_fa_finish(out, st, acc, hd, f16);
}
TGT static void rope_512(float *v, const float *cs, int n_heads, int hd) { x86_rope(v, cs, n_heads, hd); }
TGT static void swiglu_512(float *g, const float *u, int64_t n) { x86_swiglu(g, u, n); }

const ef__slm_kernels KSET = {
    KNAME,        quant_q8_0_512, to_f16_512,    from_f16_512,
    gemm_f32_512, gemm_f16_512,   gemm_q8_0_512, gemm_q4_0_512,
    fa_rows_512, fa_finish_512, rope_512, swiglu_512,
};

#endif /* KSET */
