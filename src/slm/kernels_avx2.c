/*
 * The inference kernels for AVX2 + FMA + F16C, compiled with target
 * attributes (the rest of the library stays baseline x86-64) and chosen at
 * run time by ef__slm_kernels_for. Results are bit-identical to the scalar
 * set: integer block dot products are exact, and the float operations
 * follow the canonical order of slm_internal.h (eight lanes, fused
 * multiply-add, the same final reduction).
 *
 * Matrix products run in tiles of up to 4 weight rows x 3 activation rows
 * (8 x 1 for a single activation row, the decoding case), so each loaded
 * weight block serves several activation rows and several independent FMA
 * chains hide the FMA latency.
 */
#if defined(__x86_64__)

#include <immintrin.h>

#include "slm_internal.h"

#define TGT __attribute__((target("avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline, target("avx2,fma,f16c")))

#include "kernels_x86_inl.h"

/* Runs TILE over rows [r0, r1) x activation rows [0, nb) in the largest
 * tiles that fit (all arguments constant at each use). */
#define GEMM_DRIVER(TILE, ...)                                                         \
    do {                                                                               \
        int64_t b = 0;                                                                 \
        if (nb == 1) {                                                                 \
            int64_t r = r0;                                                            \
            for (; r + 8 <= r1; r += 8) TILE(8, 1, __VA_ARGS__, r, 0);                 \
            for (; r + 4 <= r1; r += 4) TILE(4, 1, __VA_ARGS__, r, 0);                 \
            for (; r < r1; r++) TILE(1, 1, __VA_ARGS__, r, 0);                         \
            return;                                                                    \
        }                                                                              \
        for (; b + 3 <= nb; b += 3) {                                                  \
            int64_t r = r0;                                                            \
            for (; r + 4 <= r1; r += 4) TILE(4, 3, __VA_ARGS__, r, b);                 \
            for (; r < r1; r++) TILE(1, 3, __VA_ARGS__, r, b);                         \
        }                                                                              \
        if (nb - b == 2) {                                                             \
            int64_t r = r0;                                                            \
            for (; r + 4 <= r1; r += 4) TILE(4, 2, __VA_ARGS__, r, b);                 \
            for (; r < r1; r++) TILE(1, 2, __VA_ARGS__, r, b);                         \
        } else if (nb - b == 1) {                                                      \
            int64_t r = r0;                                                            \
            for (; r + 4 <= r1; r += 4) TILE(4, 1, __VA_ARGS__, r, b);                 \
            for (; r < r1; r++) TILE(1, 1, __VA_ARGS__, r, b);                         \
        }                                                                              \
    } while (0)

#define TILE_F32(RM, RN, ...) tile_f(RM, RN, 0, __VA_ARGS__)
#define TILE_F16(RM, RN, ...) tile_f(RM, RN, 1, __VA_ARGS__)
/* one activation row: four weight rows at a time through mv_q4rows */
#define TILE_Q8(RM, RN, ...)                                                                              \
    ((RM) == 4 && (RN) == 1   ? mv_tile(0, __VA_ARGS__)                                                     \
     : (RM) == 4 && (RN) == 2 ? mm_tile(0, __VA_ARGS__)                                                     \
                              : tile_q(RM, RN, 0, __VA_ARGS__))
#define TILE_Q4(RM, RN, ...)                                                                              \
    ((RM) == 4 && (RN) == 1   ? mv_tile(1, __VA_ARGS__)                                                     \
     : (RM) == 4 && (RN) == 2 ? mm_tile(1, __VA_ARGS__)                                                     \
                              : tile_q(RM, RN, 1, __VA_ARGS__))

INL void mm_tile(int Q4, float *y, int64_t ldy, const char *w, size_t ws, const char *x, size_t xs, int64_t n,
                 int64_t r, int64_t b) {
    mm_q4x2(Q4, y + b * ldy, ldy, w, ws, (const ef__blk_q8_0 *)(x + (size_t)b * xs),
            (const ef__blk_q8_0 *)(x + (size_t)(b + 1) * xs), n, r);
}

INL void mv_tile(int Q4, float *y, int64_t ldy, const char *w, size_t ws, const char *x, size_t xs, int64_t n,
                 int64_t r, int64_t b) {
    mv_q4rows(Q4, y + b * ldy, w, ws, (const ef__blk_q8_0 *)(x + (size_t)b * xs), n, r);
}

#define GEMM_ARGS                                                                              \
    float *y, int64_t ldy, const void *w, size_t w_stride, const void *x, size_t x_stride, int64_t n, \
        int64_t r0, int64_t r1, int64_t nb
#define TILE_ARGS y, ldy, (const char *)w, w_stride, (const char *)x, x_stride, n

/* one activation row: ggml_vec_dot_f32 / _f16's order (see kernels.c) */
TGT static void gemm_f32_avx2(GEMM_ARGS) {
    if (nb == 1) x86_mv_f(0, y, w, w_stride, x, n, r0, r1);
    else GEMM_DRIVER(TILE_F32, TILE_ARGS);
}
TGT static void gemm_f16_avx2(GEMM_ARGS) {
    if (nb == 1) x86_mv_f(1, y, w, w_stride, x, n, r0, r1);
    else GEMM_DRIVER(TILE_F16, TILE_ARGS);
}
/* As GEMM_DRIVER without the 8-row tiles (their accumulators do not fit the
 * sixteen registers next to the quantized operands). */
#define GEMM_DRIVER_Q(TILE, ...)                                                       \
    do {                                                                               \
        int64_t b = 0;                                                                 \
        for (; b + 2 <= nb; b += 2) {                                                  \
            int64_t r = r0;                                                            \
            for (; r + 4 <= r1; r += 4) TILE(4, 2, __VA_ARGS__, r, b);                 \
            for (; r < r1; r++) TILE(1, 2, __VA_ARGS__, r, b);                         \
        }                                                                              \
        if (b < nb) {                                                                  \
            int64_t r = r0;                                                            \
            for (; r + 4 <= r1; r += 4) TILE(4, 1, __VA_ARGS__, r, b);                 \
            for (; r < r1; r++) TILE(1, 1, __VA_ARGS__, r, b);                         \
        }                                                                              \
    } while (0)

TGT static void gemm_q8_0_avx2(GEMM_ARGS) { GEMM_DRIVER_Q(TILE_Q8, TILE_ARGS); }
TGT static void gemm_q4_0_avx2(GEMM_ARGS) { GEMM_DRIVER_Q(TILE_Q4, TILE_ARGS); }

TGT static void quant_q8_0_avx2(void *dst, const float *x, int64_t n) { x86_quant_q8_0(dst, x, n); }
TGT static void to_f16_avx2(uint16_t *dst, const float *x, int64_t n) { x86_to_f16(dst, x, n); }
TGT static void from_f16_avx2(float *dst, const uint16_t *x, int64_t n) { x86_from_f16(dst, x, n); }
TGT static void fa_rows_avx2(ef__fa *st, void *acc, const void *q, const void *k, const void *v, size_t stride,
                          int np, int hd, float scale, int f16, float *scratch) {
    x86_fa_rows(st, acc, q, k, v, stride, np, hd, scale, f16, scratch);
}
TGT static void fa_finish_avx2(float *out, const ef__fa *st, const void *acc, int hd, int f16) {
    x86_fa_finish(out, st, acc, hd, f16);
}
TGT static void rope_avx2(float *v, const float *cs, int n_heads, int hd) { x86_rope(v, cs, n_heads, hd); }
TGT static void swiglu_avx2(float *g, const float *u, int64_t n) { x86_swiglu(g, u, n); }

const ef__slm_kernels ef__slm_kernels_avx2 = {
    "avx2",        quant_q8_0_avx2, to_f16_avx2,    from_f16_avx2,
    gemm_f32_avx2, gemm_f16_avx2,   gemm_q8_0_avx2, gemm_q4_0_avx2,
    fa_rows_avx2, fa_finish_avx2, rope_avx2, swiglu_avx2,
};

#endif /* __x86_64__ */
