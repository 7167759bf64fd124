/*
 * ggml tensor types and block quantization: the type numbers, block sizes
 * and byte sizes GGUF files use, IEEE half-precision conversion, and the
 * reference quantizers for Q8_0 and Q4_0 (bit-exact with ggml's
 * quantize_row_q8_0_ref / quantize_row_q4_0_ref, which llama-quantize uses
 * to write model files) and their dequantizers.
 *
 * Block layouts (32 weights per block, little-endian, packed):
 *   Q8_0: f16 d, int8 qs[32]          value[j] = qs[j] * d             34 bytes
 *   Q4_0: f16 d, uint8 qs[16]         value[j]    = ((qs[j] & 15) - 8) * d
 *                                     value[j+16] = ((qs[j] >> 4) - 8) * d   18 bytes
 * Q8_0: d = max|x| / 127, q = round(x / d) (halves away from zero).
 * Q4_0: d = m / -8 where m is the value of largest magnitude (its sign
 * kept, so the extreme maps to q = 0, i.e. -8 * d), q = min(15, trunc(x / d + 8.5)).
 * Both multiply by the float reciprocal 1/d (not the rounded f16 d), as ggml does.
 */
#ifndef EDGEFL_QUANT_H
#define EDGEFL_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "edgefl/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ggml's tensor type numbers, as stored in GGUF tensor infos. Numbers left
 * out (4, 5, 31-33, 36-38) were removed from ggml and are invalid in files. */
typedef enum ef_ggml_type {
    EF_GGML_F32 = 0,
    EF_GGML_F16 = 1,
    EF_GGML_Q4_0 = 2,
    EF_GGML_Q4_1 = 3,
    EF_GGML_Q5_0 = 6,
    EF_GGML_Q5_1 = 7,
    EF_GGML_Q8_0 = 8,
    EF_GGML_Q8_1 = 9,
    EF_GGML_Q2_K = 10,
    EF_GGML_Q3_K = 11,
    EF_GGML_Q4_K = 12,
    EF_GGML_Q5_K = 13,
    EF_GGML_Q6_K = 14,
    EF_GGML_Q8_K = 15,
    EF_GGML_IQ2_XXS = 16,
    EF_GGML_IQ2_XS = 17,
    EF_GGML_IQ3_XXS = 18,
    EF_GGML_IQ1_S = 19,
    EF_GGML_IQ4_NL = 20,
    EF_GGML_IQ3_S = 21,
    EF_GGML_IQ2_S = 22,
    EF_GGML_IQ4_XS = 23,
    EF_GGML_I8 = 24,
    EF_GGML_I16 = 25,
    EF_GGML_I32 = 26,
    EF_GGML_I64 = 27,
    EF_GGML_F64 = 28,
    EF_GGML_IQ1_M = 29,
    EF_GGML_BF16 = 30,
    EF_GGML_TQ1_0 = 34,
    EF_GGML_TQ2_0 = 35,
    EF_GGML_MXFP4 = 39,
    EF_GGML_TYPE_END = 40 /* one past the largest number this build knows */
} ef_ggml_type;

/* llama.cpp's general.file_type values (enum llama_ftype) for the types edgefl writes. */
enum {
    EF_LLAMA_FTYPE_ALL_F32 = 0,
    EF_LLAMA_FTYPE_MOSTLY_F16 = 1,
    EF_LLAMA_FTYPE_MOSTLY_Q4_0 = 2,
    EF_LLAMA_FTYPE_MOSTLY_Q8_0 = 7
};

/* ggml's quantization format version (general.quantization_version). */
#define EF_GGML_QNT_VERSION 2

#define EF_QK8_0 32
#define EF_QK4_0 32

/* One Q8_0 block (34 bytes, 2-byte aligned). d is an IEEE half (its bits). */
typedef struct ef_block_q8_0 {
    uint16_t d;
    int8_t qs[EF_QK8_0];
} ef_block_q8_0;

/* One Q4_0 block (18 bytes, 2-byte aligned). */
typedef struct ef_block_q4_0 {
    uint16_t d;
    uint8_t qs[EF_QK4_0 / 2];
} ef_block_q4_0;

/* ---- type traits ----------------------------------------------------------- */

/* ggml's name of `type` ("f32", "q8_0", "q4_K", ...), or NULL if unknown. */
EF_API const char *ef_ggml_type_name(int type);

/* The type called `name` (case-insensitive, e.g. "Q4_0"), or -1. */
EF_API int ef_ggml_type_from_name(const char *name);

/* Elements per block (1 for plain types, 32 or 256 for quantized ones), or 0
 * if `type` is unknown. */
EF_API int64_t ef_ggml_blck_size(int type);

/* Bytes per block, or 0 if `type` is unknown. */
EF_API size_t ef_ggml_type_size(int type);

/* 1 if `type` is a block-quantized type (neither a float nor an integer type). */
EF_API int ef_ggml_is_quantized(int type);

/*
 * Bytes of `n` consecutive elements of `type` into *out. EF_ERR_INVALID if
 * the type is unknown or n is negative or not a multiple of the block size;
 * EF_ERR_RANGE if the size overflows size_t.
 */
EF_API ef_status ef_ggml_row_size(int type, int64_t n, size_t *out);

/* ---- half precision -------------------------------------------------------- */

/* float -> IEEE binary16 bits, rounding to nearest, ties to even; values from
 * 65520 up become infinity, subnormal halves are produced exactly, NaN
 * becomes the quiet NaN 0x7e00 with the sign kept (as ggml's reference). */
EF_API uint16_t ef_fp32_to_fp16(float f);

/* IEEE binary16 bits -> float (exact; NaN payloads kept). */
EF_API float ef_fp16_to_fp32(uint16_t h);

/* Row conversions of n values. */
EF_API void ef_fp32_to_fp16_row(const float *x, uint16_t *y, size_t n);
EF_API void ef_fp16_to_fp32_row(const uint16_t *x, float *y, size_t n);

/* bfloat16 bits -> float (exact). */
EF_API float ef_bf16_to_fp32(uint16_t h);

/* ---- reference block quantization ------------------------------------------ */

/*
 * Quantizes k floats (k a multiple of 32; a remainder is ignored) into k/32
 * blocks. Bit-exact with ggml's reference for every finite input. Non-finite
 * inputs give unspecified (but memory-safe) blocks; ef_quantize refuses them.
 */
EF_API void ef_quantize_row_q8_0_ref(const float *x, ef_block_q8_0 *y, size_t k);
EF_API void ef_quantize_row_q4_0_ref(const float *x, ef_block_q4_0 *y, size_t k);

/* Expands k/32 blocks into k floats (k a multiple of 32). */
EF_API void ef_dequantize_row_q8_0(const ef_block_q8_0 *x, float *y, size_t k);
EF_API void ef_dequantize_row_q4_0(const ef_block_q4_0 *x, float *y, size_t k);

/*
 * Converts a (n_rows, n_per_row) float matrix to `type` (F32, F16, Q8_0 or
 * Q4_0) into dst, which must hold ef_ggml_row_size(type, n_per_row) * n_rows
 * bytes; the byte count goes to *out_bytes (may be NULL). Fails with
 * EF_ERR_INVALID for another type, a row length that is not a multiple of
 * the block size, or (quantized types and F16) a NaN or infinite input
 * value, named by row and column; EF_ERR_RANGE for a block whose f16 scale
 * would overflow (max |x| above 127 * 65504 for Q8_0, 8 * 65504 for Q4_0)
 * or, for F16, a value that rounds to infinity (|x| >= 65520);
 * EF_ERR_UNSUPPORTED for a known type not written here.
 * On failure dst may be partly written.
 */
EF_API ef_status ef_quantize(int type, const float *src, void *dst, int64_t n_rows,
                             int64_t n_per_row, size_t *out_bytes);

/*
 * Expands n elements of `type` (F32, F16, BF16, Q8_0 or Q4_0; n a multiple
 * of the block size) from src (little-endian bytes, any alignment) into dst.
 * EF_ERR_UNSUPPORTED for other types, EF_ERR_INVALID for a bad n.
 */
EF_API ef_status ef_dequantize(int type, const void *src, float *dst, int64_t n);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_QUANT_H */
