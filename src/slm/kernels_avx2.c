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
#define TILE_Q8(RM, RN, ...) tile_q(RM, RN, 0, __VA_ARGS__)
#define TILE_Q4(RM, RN, ...) tile_q(RM, RN, 1, __VA_ARGS__)

#define GEMM_ARGS                                                                              \
    float *y, int64_t ldy, const void *w, size_t w_stride, const void *x, size_t x_stride, int64_t n, \
        int64_t r0, int64_t r1, int64_t nb
#define TILE_ARGS y, ldy, (const char *)w, w_stride, (const char *)x, x_stride, n

TGT static void gemm_f32_avx2(GEMM_ARGS) { GEMM_DRIVER(TILE_F32, TILE_ARGS); }
TGT static void gemm_f16_avx2(GEMM_ARGS) { GEMM_DRIVER(TILE_F16, TILE_ARGS); }
TGT static void gemm_q8_0_avx2(GEMM_ARGS) { GEMM_DRIVER(TILE_Q8, TILE_ARGS); }
TGT static void gemm_q4_0_avx2(GEMM_ARGS) { GEMM_DRIVER(TILE_Q4, TILE_ARGS); }

TGT static void quant_q8_0_avx2(void *dst, const float *x, int64_t n) { x86_quant_q8_0(dst, x, n); }
TGT static void to_f16_avx2(uint16_t *dst, const float *x, int64_t n) { x86_to_f16(dst, x, n); }
TGT static void from_f16_avx2(float *dst, const uint16_t *x, int64_t n) { x86_from_f16(dst, x, n); }
TGT static float dot_f32_avx2(const float *a, const float *b, int64_t n) { return x86_dot_f32(a, b, n); }
TGT static float dot_f16_avx2(const uint16_t *a, const uint16_t *b, int64_t n) { return x86_dot_f16(a, b, n); }
TGT static void axpy_f32_avx2(float *y, float a, const float *x, int64_t n) { x86_axpy_f32(y, a, x, n); }
TGT static void axpy_f16_avx2(float *y, float a, const uint16_t *x, int64_t n) { x86_axpy_f16(y, a, x, n); }

const ef__slm_kernels ef__slm_kernels_avx2 = {
    "avx2",        quant_q8_0_avx2, to_f16_avx2,    from_f16_avx2,
    gemm_f32_avx2, gemm_f16_avx2,   gemm_q8_0_avx2, gemm_q4_0_avx2,
    dot_f32_avx2,  dot_f16_avx2,    axpy_f32_avx2,  axpy_f16_avx2,
};

#endif /* __x86_64__ */
