/*
 * Internal: the inference engine's kernels and the pieces its source files
 * share. Weights keep ggml's block layouts (Q8_0: one fp16 scale and 32
 * int8; Q4_0: one fp16 scale and 16 bytes of nibbles, element j in the low
 * nibble of byte j, element j+16 in the high nibble, value (q - 8) * d).
 *
 * One arithmetic, every instruction set. Each matrix product has a
 * canonical order of operations, and the scalar, AVX2 and AVX-512 kernels
 * all follow it exactly, so a model gives bit-identical logits (and tokens)
 * whichever path runs; the tests compare the paths with memcmp. The order
 * is the one llama.cpp's AVX2 CPU backend uses, so that greedy decoding
 * agrees with it:
 *   - F32/F16 weights, row w and activation x (F16 weights take the
 *     activation rounded to F16, as ggml does): eight lanes, lane l sums
 *     w[i]*x[i] for i = l (mod 8) with fused multiply-adds in increasing i
 *     over the first n - n%8 elements; then
 *     hsum8(a) = ((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7)); then the last
 *     n%8 elements are fused in one at a time.
 *   - Q8_0/Q4_0 weights times an activation row quantized to Q8_0: eight
 *     lanes, per block b: d = d_w(b) * d_x(b) (float), lane l adds
 *     fma(d, (float)isum_l, acc_l) where isum_l is the exact integer dot
 *     product of elements 4l..4l+3 of the block; then hsum8.
 *   - Activation quantization to Q8_0 (ggml's quantize_row_q8_0 on x86):
 *     amax = max |x| over the block, d = amax / 127 (stored as fp16),
 *     id = 127 / amax (0 if amax is 0), q = round-half-even(x * id).
 */
#ifndef EDGEFL_SLM_INTERNAL_H
#define EDGEFL_SLM_INTERNAL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/core_internal.h"
#include "edgefl/slm.h"

#define EF_QK 32 /* elements per Q8_0 / Q4_0 block */

typedef struct ef__blk_q8_0 {
    uint16_t d;        /* fp16 scale */
    int8_t qs[EF_QK];  /* values q * d */
} ef__blk_q8_0;

typedef struct ef__blk_q4_0 {
    uint16_t d;             /* fp16 scale */
    uint8_t qs[EF_QK / 2];  /* element j: low nibble of qs[j]; j+16: high nibble */
} ef__blk_q4_0;

_Static_assert(sizeof(ef__blk_q8_0) == 34, "Q8_0 block is 34 bytes");
_Static_assert(sizeof(ef__blk_q4_0) == 18, "Q4_0 block is 18 bytes");

/* ---- fp16 <-> fp32 (IEEE binary16, round half to even, like F16C) ------ */

static inline float ef__f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
    if (e == 0x1f) { /* inf; NaN comes out quiet, like F16C */
        bits = sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0);
    } else if (e != 0) {
        bits = sign | ((e + 112) << 23) | (m << 13);
    } else if (m == 0) {
        bits = sign;
    } else { /* subnormal: m * 2^-24, exact in float */
        int shift = 0;
        while (!(m & 0x400)) {
            m <<= 1;
            shift++;
        }
        bits = sign | ((uint32_t)(113 - shift) << 23) | ((m & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t ef__f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) { /* inf; NaN stays NaN (quiet, top payload bits kept) */
        if (ax == 0x7f800000u) return (uint16_t)(sign | 0x7c00);
        return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
    }
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds past 65504 */
    if (ax < 0x38800000u) {                                    /* below 2^-14: subnormal half */
        if (ax <= 0x33000000u) return (uint16_t)sign;          /* <= 2^-25 rounds to 0 */
        uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t h = (ax - 0x38000000u) >> 13, rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

/* ---- kernels -------------------------------------------------------------- */

/*
 * y[b*ldy + r] = dot(row r of w, row b of x) for r in [r0, r1), b in [0, nb).
 * w: weight rows of `n` elements, `w_stride` bytes apart; x: activation rows
 * in the weight type's vec-dot format (F32 for F32 weights, F16 for F16,
 * Q8_0 blocks for Q8_0 and Q4_0), `x_stride` bytes apart. Quantized weights
 * need n % 32 == 0.
 */
typedef void (*ef__gemm_fn)(float *y, int64_t ldy, const void *w, size_t w_stride, const void *x,
                            size_t x_stride, int64_t n, int64_t r0, int64_t r1, int64_t nb);

/* Running state of one attention row (see fa_rows). */
typedef struct ef__fa {
    float M; /* maximum score so far (-inf before the first) */
    float S; /* sum of exp(score - M) */
} ef__fa;

typedef struct ef__slm_kernels {
    const char *name; /* "scalar", "avx2", "avx512" */
    /* x (n floats, n % 32 == 0) -> n/32 Q8_0 blocks */
    void (*quant_q8_0)(void *dst, const float *x, int64_t n);
    void (*to_f16)(uint16_t *dst, const float *x, int64_t n);
    void (*from_f16)(float *dst, const uint16_t *x, int64_t n);
    ef__gemm_fn gemm_f32, gemm_f16, gemm_q8_0, gemm_q4_0;
    /* Attention of one query head over np cached positions, llama.cpp's
     * flash-attention loop (ggml's one-chunk CPU kernel): st carries the
     * running maximum and sum and acc the unnormalized output (hd F16 values
     * for an F16 cache, F32 otherwise) across calls, so positions can come
     * in several pieces. For each position p in order:
     *   s = dot(k_p, q) * scale  (F16: ggml_vec_dot_f16's order, below)
     *   if s > M: ms = exp(M - s), M = s, acc *= ms (each rounded to F16)
     *   else vs = exp(s - M)
     *   acc[i] = fma(v_p[i], vs, acc[i]) (each rounded to F16); S = fma(S, ms, vs)
     * q is F16 for an F16 cache (the query rounded, as ggml does), else F32.
     * ggml_vec_dot_f16 order: four 8-lane FMA accumulators over the first
     * n - n%32 elements, reduced (a0+a2)+(a1+a3), then 128-bit halves added
     * and two horizontal adds; the remaining products added in double. */
    void (*fa_rows)(ef__fa *st, void *acc, const void *q, const void *k, const void *v, size_t stride, int np,
                    int hd, float scale, int f16, float *scratch /* 2*np floats */);
    /* out = acc * (1 / S) (0 if S is 0). */
    void (*fa_finish)(float *out, const ef__fa *st, const void *acc, int hd, int f16);
    /* RoPE on n_heads heads of hd values in place: for each adjacent pair,
     * x0' = fma(x0, c, -(x1*s)), x1' = fma(x0, s, x1*c) (llama.cpp's
     * x0*c - x1*s and x0*s + x1*c as its compiler contracts them). */
    void (*rope)(float *v, const float *cs, int n_heads, int hd);
    /* g[i] = silu(g[i]) * u[i]: ggml's vectorized silu (its expf
     * approximation) on groups of eight, x / (1 + expf(-x)) on the rest. */
    void (*swiglu)(float *g, const float *u, int64_t n);
} ef__slm_kernels;

/* Kernel sets; NULL members never occur. The AVX2 and AVX-512 sets exist only
 * on x86-64 builds and must be used only where ef__slm_isa_supported says so. */
extern const ef__slm_kernels ef__slm_kernels_scalar;
#if defined(__x86_64__)
extern const ef__slm_kernels ef__slm_kernels_avx2;
extern const ef__slm_kernels ef__slm_kernels_avx512;
#endif

/* 1 when this CPU (and the ef_cpu_limit / EDGEFL_CPU mask) allows `isa`. */
int ef__slm_isa_supported(ef_slm_isa isa);

/* The kernel set for `isa` (EF_SLM_ISA_AUTO: the best supported), or NULL if
 * the CPU lacks it. */
const ef__slm_kernels *ef__slm_kernels_for(ef_slm_isa isa);

/* Bytes of one row of n elements stored as `type` (0 for an unknown type or
 * a quantized row whose n is not a multiple of 32). */
size_t ef__slm_row_bytes(ef_slm_type type, int64_t n);

/* The vec-dot format activations must have for weights of `type`. */
static inline ef_slm_type ef__slm_vec_type(ef_slm_type t) {
    return t == EF_SLM_Q4_0 ? EF_SLM_Q8_0 : t;
}

/* Converts n floats to the vec-dot format `vt` at dst with kernels k. */
void ef__slm_convert(const ef__slm_kernels *k, ef_slm_type vt, void *dst, const float *x, int64_t n);

/* Row `row` of a weight matrix (n columns) as floats (exact dequantization). */
void ef__slm_dequant_row(ef_slm_type type, const void *w, size_t row_bytes, int64_t row,
                         int64_t n, float *out);

/* The gemm kernel of k for weights of `type`. */
ef__gemm_fn ef__slm_gemm_for(const ef__slm_kernels *k, ef_slm_type type);

/* ggml's vectorized expf (ggml_v_expf, x86) for one lane: exp(x) to about
 * 1.5 ulp through a degree-5 polynomial, with the same operations and
 * roundings, so every kernel set gets the same bits as llama.cpp's. */
static inline float ef__ggml_expf(float x) {
    const float r = 0x1.8p23f;
    const float z = fmaf(x, 0x1.715476p+0f, r);
    const float n = z - r;
    const float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    uint32_t zb, one = 0x3f800000u;
    memcpy(&zb, &z, 4);
    const uint32_t e = zb << 23;
    uint32_t kb = e + one;
    float k;
    memcpy(&k, &kb, 4);
    const float u = b * b;
    const float j = fmaf(fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                         u, 0x1.ffffecp-1f * b);
    if (!(fabsf(n) > 126.0f)) return fmaf(j, k, k);
    const uint32_t g = n <= 0.0f ? 0x82000000u : 0u;
    uint32_t s1b = g + 0x7f000000u, s2b = e - g;
    float s1, s2;
    memcpy(&s1, &s1b, 4);
    memcpy(&s2, &s2b, 4);
    if (fabsf(n) > 192.0f) return s1 * s1;
    return fmaf(s2, j, s2) * s1;
}

/* The canonical final reduction of eight lanes. */
static inline float ef__hsum8(const float a[8]) {
    return ((a[4] + a[0]) + (a[6] + a[2])) + ((a[5] + a[1]) + (a[7] + a[3]));
}

#endif /* EDGEFL_SLM_INTERNAL_H */
