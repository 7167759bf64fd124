/*
 * ggml tensor types and reference block quantization (see edgefl/quant.h).
 *
 * The quantizers must produce the same bytes as ggml's reference ones, so
 * that a file quantized here is the file llama-quantize would write and
 * greedy decoding can match llama.cpp. Two details matter for that:
 *   - every float operation is rounded on its own: this file is compiled
 *     with -ffp-contract=off (CMakeLists.txt), because fusing x*id + 8.5f
 *     into one FMA changes the truncated Q4_0 code for some inputs;
 *   - float -> int8 conversions follow what ggml's C casts do on x86-64
 *     (cvttss2si, then the low byte): in range they truncate toward zero;
 *     out of range or NaN (only reachable with non-finite or subnormal
 *     blocks, where C leaves the cast undefined) they give 0.
 */
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "core/core_internal.h"
#include "edgefl/quant.h"

_Static_assert(sizeof(ef_block_q8_0) == 34, "Q8_0 block must be 34 bytes");
_Static_assert(sizeof(ef_block_q4_0) == 18, "Q4_0 block must be 18 bytes");

/* ---- type traits ----------------------------------------------------------- */

typedef struct type_traits {
    const char *name;
    int64_t blck;
    size_t size;
    int quantized;
} type_traits;

/* Indexed by ef_ggml_type; a NULL name marks a removed or unknown number.
 * Block sizes and byte sizes are those of ggml's block structs. */
static const type_traits k_traits[EF_GGML_TYPE_END] = {
    [EF_GGML_F32] = {"f32", 1, 4, 0},
    [EF_GGML_F16] = {"f16", 1, 2, 0},
    [EF_GGML_Q4_0] = {"q4_0", 32, 18, 1},
    [EF_GGML_Q4_1] = {"q4_1", 32, 20, 1},
    [EF_GGML_Q5_0] = {"q5_0", 32, 22, 1},
    [EF_GGML_Q5_1] = {"q5_1", 32, 24, 1},
    [EF_GGML_Q8_0] = {"q8_0", 32, 34, 1},
    [EF_GGML_Q8_1] = {"q8_1", 32, 36, 1},
    [EF_GGML_Q2_K] = {"q2_K", 256, 84, 1},
    [EF_GGML_Q3_K] = {"q3_K", 256, 110, 1},
    [EF_GGML_Q4_K] = {"q4_K", 256, 144, 1},
    [EF_GGML_Q5_K] = {"q5_K", 256, 176, 1},
    [EF_GGML_Q6_K] = {"q6_K", 256, 210, 1},
    [EF_GGML_Q8_K] = {"q8_K", 256, 292, 1},
    [EF_GGML_IQ2_XXS] = {"iq2_xxs", 256, 66, 1},
    [EF_GGML_IQ2_XS] = {"iq2_xs", 256, 74, 1},
    [EF_GGML_IQ3_XXS] = {"iq3_xxs", 256, 98, 1},
    [EF_GGML_IQ1_S] = {"iq1_s", 256, 50, 1},
    [EF_GGML_IQ4_NL] = {"iq4_nl", 32, 18, 1},
    [EF_GGML_IQ3_S] = {"iq3_s", 256, 110, 1},
    [EF_GGML_IQ2_S] = {"iq2_s", 256, 82, 1},
    [EF_GGML_IQ4_XS] = {"iq4_xs", 256, 136, 1},
    [EF_GGML_I8] = {"i8", 1, 1, 0},
    [EF_GGML_I16] = {"i16", 1, 2, 0},
    [EF_GGML_I32] = {"i32", 1, 4, 0},
    [EF_GGML_I64] = {"i64", 1, 8, 0},
    [EF_GGML_F64] = {"f64", 1, 8, 0},
    [EF_GGML_IQ1_M] = {"iq1_m", 256, 56, 1},
    [EF_GGML_BF16] = {"bf16", 1, 2, 0},
    [EF_GGML_TQ1_0] = {"tq1_0", 256, 54, 1},
    [EF_GGML_TQ2_0] = {"tq2_0", 256, 66, 1},
    [EF_GGML_MXFP4] = {"mxfp4", 32, 17, 1},
};

static const type_traits *traits(int type) {
    if (type < 0 || type >= EF_GGML_TYPE_END || !k_traits[type].name) return NULL;
    return &k_traits[type];
}

const char *ef_ggml_type_name(int type) {
    const type_traits *t = traits(type);
    return t ? t->name : NULL;
}

int ef_ggml_type_from_name(const char *name) {
    if (!name) return -1;
    for (int i = 0; i < EF_GGML_TYPE_END; i++) {
        const char *n = k_traits[i].name;
        if (!n) continue;
        size_t k = 0;
        while (n[k] && name[k] && tolower((unsigned char)n[k]) == tolower((unsigned char)name[k]))
            k++;
        if (!n[k] && !name[k]) return i;
    }
    return -1;
}

int64_t ef_ggml_blck_size(int type) {
    const type_traits *t = traits(type);
    return t ? t->blck : 0;
}

size_t ef_ggml_type_size(int type) {
    const type_traits *t = traits(type);
    return t ? t->size : 0;
}

int ef_ggml_is_quantized(int type) {
    const type_traits *t = traits(type);
    return t ? t->quantized : 0;
}

ef_status ef_ggml_row_size(int type, int64_t n, size_t *out) {
    const type_traits *t = traits(type);
    if (out) *out = 0;
    if (!out) return ef__fail(EF_ERR_INVALID, "ef_ggml_row_size: NULL argument");
    if (!t) return ef__fail(EF_ERR_INVALID, "unknown ggml type %d", type);
    if (n < 0 || n % t->blck != 0)
        return ef__fail(EF_ERR_INVALID, "%lld elements of %s: not a multiple of the block size %lld",
                        (long long)n, t->name, (long long)t->blck);
    uint64_t blocks = (uint64_t)(n / t->blck);
#if SIZE_MAX < UINT64_MAX
    if (blocks > SIZE_MAX) return ef__fail(EF_ERR_RANGE, "row of %lld %s elements is too large",
                                           (long long)n, t->name);
#endif
    if (!ef__mul_size((size_t)blocks, t->size, out))
        return ef__fail(EF_ERR_RANGE, "row of %lld %s elements is too large", (long long)n, t->name);
    return EF_OK;
}

/* ---- half precision -------------------------------------------------------- */

static uint32_t f32_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

static float f32_from(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}

uint16_t ef_fp32_to_fp16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return sign | 0x7e00u; /* NaN */
    /* 65520 = 0x477ff000 is halfway between the largest half (65504, odd
     * mantissa) and 2^16; ties go to even, so from there on the result is inf. */
    if (ax >= 0x477ff000u) return sign | 0x7c00u;
    uint32_t e = ax >> 23;
    if (ax >= 0x38800000u) { /* >= 2^-14: a normal half */
        uint32_t h = (e - 112u) << 10 | (ax & 0x7fffffu) >> 13;
        uint32_t rem = ax & 0x1fffu;
        /* a carry out of the mantissa correctly bumps the exponent */
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    /* A subnormal half counts units of 2^-24. 2^-25 itself is a tie between
     * 0 and one unit and goes to 0 (even); anything smaller is 0 too. */
    if (ax <= 0x33000000u) return sign;
    uint32_t m = (ax & 0x7fffffu) | 0x800000u; /* value = m * 2^(e-150) */
    uint32_t shift = 126u - e;                  /* 14..24 */
    uint32_t h = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (h & 1u))) h++; /* 0x400 is the smallest normal: right */
    return (uint16_t)(sign | h);
}

float ef_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24 is exact in float */
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) return f32_from(sign | 0x7f800000u | mant << 13);
    return f32_from(sign | (exp + 112u) << 23 | mant << 13);
}

void ef_fp32_to_fp16_row(const float *x, uint16_t *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = ef_fp32_to_fp16(x[i]);
}

void ef_fp16_to_fp32_row(const uint16_t *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = ef_fp16_to_fp32(x[i]);
}

float ef_bf16_to_fp32(uint16_t h) { return f32_from((uint32_t)h << 16); }

/* ---- reference block quantization ------------------------------------------ */

/* (int8_t)v as ggml's C code compiles on x86-64: truncation toward zero,
 * then the low byte of the 32-bit result; 0 where the conversion is
 * undefined in C (NaN, |v| >= 2^31: cvttss2si's 0x80000000). */
static int8_t f32_to_i8_trunc(float v) {
    if (!(v > -2147483904.0f && v < 2147483648.0f)) return 0;
    int32_t i = (int32_t)v;
    return (int8_t)(uint8_t)((uint32_t)i & 0xffu);
}

void ef_quantize_row_q8_0_ref(const float *x, ef_block_q8_0 *y, size_t k) {
    size_t nb = k / EF_QK8_0;
    for (size_t b = 0; b < nb; b++) {
        const float *xb = x + b * EF_QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < EF_QK8_0; j++) {
            float a = fabsf(xb[j]);
            amax = amax > a ? amax : a;
        }
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = ef_fp32_to_fp16(d);
        for (int j = 0; j < EF_QK8_0; j++) {
            const float v = xb[j] * id;
            y[b].qs[j] = f32_to_i8_trunc(roundf(v)); /* roundf: halves away from zero */
        }
    }
}

void ef_quantize_row_q4_0_ref(const float *x, ef_block_q4_0 *y, size_t k) {
    size_t nb = k / EF_QK4_0;
    for (size_t b = 0; b < nb; b++) {
        const float *xb = x + b * EF_QK4_0;
        float amax = 0.0f, max = 0.0f; /* largest magnitude, and that value with its sign */
        for (int j = 0; j < EF_QK4_0; j++) {
            float a = fabsf(xb[j]);
            if (amax < a) {
                amax = a;
                max = xb[j];
            }
        }
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = ef_fp32_to_fp16(d);
        for (int j = 0; j < EF_QK4_0 / 2; j++) {
            const float v0 = xb[j] * id;
            const float v1 = xb[EF_QK4_0 / 2 + j] * id;
            int q0 = f32_to_i8_trunc(v0 + 8.5f);
            int q1 = f32_to_i8_trunc(v1 + 8.5f);
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            /* as ggml stores them: a uint8_t of the int, the high nibble shifted in */
            y[b].qs[j] = (uint8_t)((uint8_t)q0 | (uint8_t)((uint8_t)q1 << 4));
        }
    }
}

void ef_dequantize_row_q8_0(const ef_block_q8_0 *x, float *y, size_t k) {
    size_t nb = k / EF_QK8_0;
    for (size_t b = 0; b < nb; b++) {
        const float d = ef_fp16_to_fp32(x[b].d);
        for (int j = 0; j < EF_QK8_0; j++) y[b * EF_QK8_0 + j] = (float)x[b].qs[j] * d;
    }
}

void ef_dequantize_row_q4_0(const ef_block_q4_0 *x, float *y, size_t k) {
    size_t nb = k / EF_QK4_0;
    for (size_t b = 0; b < nb; b++) {
        const float d = ef_fp16_to_fp32(x[b].d);
        for (int j = 0; j < EF_QK4_0 / 2; j++) {
            const int q0 = (x[b].qs[j] & 0x0f) - 8;
            const int q1 = (x[b].qs[j] >> 4) - 8;
            y[b * EF_QK4_0 + j] = (float)q0 * d;
            y[b * EF_QK4_0 + EF_QK4_0 / 2 + j] = (float)q1 * d;
        }
    }
}

/* ---- checked whole-matrix conversions -------------------------------------- */

ef_status ef_quantize(int type, const float *src, void *dst, int64_t n_rows, int64_t n_per_row,
                      size_t *out_bytes) {
    if (out_bytes) *out_bytes = 0;
    if (!src || !dst) return ef__fail(EF_ERR_INVALID, "ef_quantize: NULL argument");
    const type_traits *t = traits(type);
    if (!t) return ef__fail(EF_ERR_INVALID, "ef_quantize: unknown ggml type %d", type);
    if (type != EF_GGML_F32 && type != EF_GGML_F16 && type != EF_GGML_Q8_0 &&
        type != EF_GGML_Q4_0)
        return ef__fail(EF_ERR_UNSUPPORTED, "ef_quantize: cannot write type %s (F32, F16, Q8_0 "
                        "and Q4_0 are supported)", t->name);
    if (n_rows < 0) return ef__fail(EF_ERR_INVALID, "ef_quantize: negative row count");
    size_t row_bytes, total;
    ef_status st = ef_ggml_row_size(type, n_per_row, &row_bytes);
    if (st != EF_OK) return st;
    if ((uint64_t)n_rows > SIZE_MAX || !ef__mul_size(row_bytes, (size_t)n_rows, &total))
        return ef__fail(EF_ERR_RANGE, "ef_quantize: %lld rows of %lld are too large",
                        (long long)n_rows, (long long)n_per_row);
    if (t->quantized || type == EF_GGML_F16) {
        /* A non-finite weight has no block encoding; llama.cpp's validation
         * refuses such blocks too. F16 could hold it, but a model with one is
         * broken: refuse it too, and a finite value that F16 would round to
         * infinity (|x| >= 65520). Check before writing anything. */
        for (int64_t r = 0; r < n_rows; r++)
            for (int64_t c = 0; c < n_per_row; c++) {
                float x = src[r * n_per_row + c];
                if (!isfinite(x))
                    return ef__fail(EF_ERR_INVALID,
                                    "value at row %lld, column %lld is %s: cannot quantize "
                                    "to %s", (long long)r, (long long)c,
                                    isnan(x) ? "NaN" : "infinite", t->name);
                if (type == EF_GGML_F16 && fabsf(x) >= 65520.0f)
                    return ef__fail(EF_ERR_RANGE,
                                    "value at row %lld, column %lld (%g) is too large for f16",
                                    (long long)r, (long long)c, (double)x);
            }
    }
    size_t n = (size_t)n_rows * (size_t)n_per_row;
    unsigned char *out = dst;
    switch (type) {
    case EF_GGML_F32:
        if (n) memcpy(dst, src, n * sizeof(float));
        break;
    case EF_GGML_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = ef_fp32_to_fp16(src[i]);
            out[2 * i] = (unsigned char)(h & 0xff);
            out[2 * i + 1] = (unsigned char)(h >> 8);
        }
        break;
    case EF_GGML_Q8_0:
        for (int64_t r = 0; r < n_rows; r++)
            ef_quantize_row_q8_0_ref(src + r * n_per_row,
                                     (ef_block_q8_0 *)(void *)(out + (size_t)r * row_bytes),
                                     (size_t)n_per_row);
        break;
    case EF_GGML_Q4_0:
        for (int64_t r = 0; r < n_rows; r++)
            ef_quantize_row_q4_0_ref(src + r * n_per_row,
                                     (ef_block_q4_0 *)(void *)(out + (size_t)r * row_bytes),
                                     (size_t)n_per_row);
        break;
    }
    if (t->quantized) {
        /* d is an f16: a block whose scale overflows it (max |x| above
         * 127 * 65504 for Q8_0, 8 * 65504 for Q4_0) would decode to inf/NaN */
        size_t bsz = t->size, per_row = (size_t)(n_per_row / t->blck);
        for (int64_t r = 0; r < n_rows; r++)
            for (size_t b = 0; b < per_row; b++) {
                const unsigned char *blk = out + (size_t)r * row_bytes + b * bsz;
                if ((blk[1] & 0x7c) == 0x7c)
                    return ef__fail(EF_ERR_RANGE,
                                    "block at row %lld, columns %zu..%zu: values too large for "
                                    "%s (its f16 scale overflows)", (long long)r,
                                    b * (size_t)t->blck, (b + 1) * (size_t)t->blck - 1, t->name);
            }
    }
    if (out_bytes) *out_bytes = total;
    return EF_OK;
}

static uint16_t load16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

ef_status ef_dequantize(int type, const void *src, float *dst, int64_t n) {
    if (!src || !dst) return ef__fail(EF_ERR_INVALID, "ef_dequantize: NULL argument");
    const type_traits *t = traits(type);
    if (!t) return ef__fail(EF_ERR_INVALID, "ef_dequantize: unknown ggml type %d", type);
    if (n < 0 || n % t->blck != 0)
        return ef__fail(EF_ERR_INVALID, "ef_dequantize: %lld elements of %s: not a multiple of "
                        "the block size %lld", (long long)n, t->name, (long long)t->blck);
    const unsigned char *p = src;
    size_t count = (size_t)n;
    switch (type) {
    case EF_GGML_F32:
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (count) memcpy(dst, p, count * 4);
        return EF_OK;
#endif
        for (size_t i = 0; i < count; i++) {
            uint32_t b = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                         (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
            dst[i] = f32_from(b);
        }
        return EF_OK;
    case EF_GGML_F16:
        for (size_t i = 0; i < count; i++) dst[i] = ef_fp16_to_fp32(load16(p + 2 * i));
        return EF_OK;
    case EF_GGML_BF16:
        for (size_t i = 0; i < count; i++) dst[i] = ef_bf16_to_fp32(load16(p + 2 * i));
        return EF_OK;
    case EF_GGML_Q8_0:
        for (size_t b = 0; b < count / EF_QK8_0; b++) {
            const unsigned char *blk = p + b * sizeof(ef_block_q8_0);
            const float d = ef_fp16_to_fp32(load16(blk));
            for (int j = 0; j < EF_QK8_0; j++)
                dst[b * EF_QK8_0 + j] = (float)(int8_t)blk[2 + j] * d;
        }
        return EF_OK;
    case EF_GGML_Q4_0:
        for (size_t b = 0; b < count / EF_QK4_0; b++) {
            const unsigned char *blk = p + b * sizeof(ef_block_q4_0);
            const float d = ef_fp16_to_fp32(load16(blk));
            for (int j = 0; j < EF_QK4_0 / 2; j++) {
                dst[b * EF_QK4_0 + j] = (float)((blk[2 + j] & 0x0f) - 8) * d;
                dst[b * EF_QK4_0 + EF_QK4_0 / 2 + j] = (float)((blk[2 + j] >> 4) - 8) * d;
            }
        }
        return EF_OK;
    default:
        return ef__fail(EF_ERR_UNSUPPORTED, "cannot convert %s tensors to float (F32, F16, BF16, "
                        "Q8_0 and Q4_0 are supported)", t->name);
    }
}
