/*
 * GGUF files (ggml's model format, read by llama.cpp): a generic reader and
 * writer with no knowledge of any model.
 *
 * Layout (little-endian): "GGUF", u32 version (2 or 3), u64 tensor count,
 * u64 key/value count; the key/value pairs (string key, i32 value type,
 * value; an array is an element type, a u64 count and the elements; a
 * string is a u64 byte length and the bytes, no NUL); the tensor infos
 * (string name, u32 n_dims, n_dims u64 sizes innermost first, i32 ggml type,
 * u64 offset into the data section); zero padding to the alignment; the data
 * section. The alignment is the u32 "general.alignment" if present, else 32;
 * every tensor offset is a multiple of it.
 *
 * The reader maps the file read-only and checks everything before handing
 * out pointers into it (see ef_gguf_open); the writer builds metadata and a
 * tensor list in memory and writes the file atomically.
 */
#ifndef EDGEFL_GGUF_H
#define EDGEFL_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgefl/core.h"
#include "edgefl/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EF_GGUF_MAX_DIMS 4
/* Tensor names are at most 63 bytes (ggml's GGML_MAX_NAME is 64 with the NUL). */
#define EF_GGUF_MAX_NAME 63
#define EF_GGUF_DEFAULT_ALIGNMENT 32
#define EF_GGUF_VERSION 3

/* Metadata value types (the numbers are the format's). */
typedef enum ef_gguf_type {
    EF_GGUF_UINT8 = 0,
    EF_GGUF_INT8 = 1,
    EF_GGUF_UINT16 = 2,
    EF_GGUF_INT16 = 3,
    EF_GGUF_UINT32 = 4,
    EF_GGUF_INT32 = 5,
    EF_GGUF_FLOAT32 = 6,
    EF_GGUF_BOOL = 7,
    EF_GGUF_STRING = 8,
    EF_GGUF_ARRAY = 9,
    EF_GGUF_UINT64 = 10,
    EF_GGUF_INT64 = 11,
    EF_GGUF_FLOAT64 = 12
} ef_gguf_type;

/* Name of a value type ("u32", "string", "array", ...), or NULL if unknown. */
EF_API const char *ef_gguf_type_name(int type);

/* ---- reader ---------------------------------------------------------------- */

typedef struct ef_gguf ef_gguf;

/* One metadata entry of an open file. A scalar is an entry with n == 1 and
 * type == elem_type; an array has type EF_GGUF_ARRAY. */
typedef struct ef_gguf_kv {
    const char *key;        /* NUL-terminated, no embedded NUL */
    ef_gguf_type type;      /* the value's type; EF_GGUF_ARRAY for arrays */
    ef_gguf_type elem_type; /* element type (== type for scalars); never ARRAY */
    uint64_t n;             /* number of elements (1 for scalars) */
} ef_gguf_kv;

/* One tensor of an open file. */
typedef struct ef_gguf_tensor {
    const char *name;              /* NUL-terminated, 1..63 bytes */
    int type;                      /* ef_ggml_type */
    int n_dims;                    /* 1..4, as stored */
    int64_t ne[EF_GGUF_MAX_DIMS];  /* sizes, innermost (row length) first; 1 past n_dims */
    int64_t n_elements;
    uint64_t offset;               /* within the data section */
    const void *data;              /* inside the read-only mapping (ef_gguf_open: aligned
                                      in memory to the file's alignment; quantized blocks
                                      can be read in place) */
    size_t nbytes;
} ef_gguf_tensor;

/*
 * Opens and validates a GGUF file, mapped read-only. Checks: magic; version
 * 2 or 3 (1 and big-endian files are refused as unsupported); counts that
 * can fit in the file; every string length and array length against the
 * bytes left; known value types (nested arrays unsupported); bools 0 or 1;
 * keys non-empty without NUL bytes; no duplicate keys; general.alignment a
 * u32 power of two; tensor names 1..63 bytes, unique; 1..4 dimensions, each
 * >= 0, products and byte sizes that do not overflow; known ggml types with
 * a row length that is a multiple of the block size; offsets that are
 * multiples of the alignment with the data inside the file and no two
 * tensors overlapping. A failure returns EF_ERR_FORMAT (EF_ERR_UNSUPPORTED,
 * EF_ERR_IO) with a message naming the file, the entry and the byte offset.
 * Close with ef_gguf_close.
 */
EF_API ef_status ef_gguf_open(ef_gguf **out, const char *path);

/*
 * The same over `size` bytes in memory (borrowed: they must stay valid and
 * unchanged until ef_gguf_close). `name` (may be NULL) is used in messages.
 */
EF_API ef_status ef_gguf_open_memory(ef_gguf **out, const void *data, size_t size,
                                     const char *name);

/* Unmaps and frees; every pointer obtained from g becomes invalid. NULL is a no-op. */
EF_API void ef_gguf_close(ef_gguf *g);

/* Format version (2 or 3). */
EF_API uint32_t ef_gguf_version(const ef_gguf *g);
/* Alignment of the data section and tensor offsets. */
EF_API size_t ef_gguf_alignment(const ef_gguf *g);
/* Byte offset of the data section in the file (a multiple of the alignment). */
EF_API uint64_t ef_gguf_data_offset(const ef_gguf *g);
/* Size of the file in bytes. */
EF_API uint64_t ef_gguf_file_size(const ef_gguf *g);

/* Number of metadata entries, and entry i in file order (NULL if i is out of range). */
EF_API size_t ef_gguf_kv_count(const ef_gguf *g);
EF_API const ef_gguf_kv *ef_gguf_kv_at(const ef_gguf *g, size_t i);

/* Index of `key`, or -1. */
EF_API int64_t ef_gguf_find_key(const ef_gguf *g, const char *key);

/*
 * Element `i` of entry `kv` (index i < n; 0 for a scalar), read as the
 * requested kind:
 *   _int    any integer type (u8..i64); EF_ERR_RANGE for a u64 above INT64_MAX
 *   _uint   any integer type; EF_ERR_RANGE for a negative value
 *   _float  f32 or f64
 *   _bool   bool
 *   _str    string: a NUL-terminated copy owned by g and its length in bytes
 *           (a value may itself contain NUL bytes; *len is the truth)
 * Other element types give EF_ERR_FORMAT ("is u8, expected string"), a bad
 * index EF_ERR_INVALID.
 */
EF_API ef_status ef_gguf_kv_int(const ef_gguf *g, size_t kv, uint64_t i, int64_t *out);
EF_API ef_status ef_gguf_kv_uint(const ef_gguf *g, size_t kv, uint64_t i, uint64_t *out);
EF_API ef_status ef_gguf_kv_float(const ef_gguf *g, size_t kv, uint64_t i, double *out);
EF_API ef_status ef_gguf_kv_bool(const ef_gguf *g, size_t kv, uint64_t i, bool *out);
EF_API ef_status ef_gguf_kv_str(const ef_gguf *g, size_t kv, uint64_t i, const char **out,
                                size_t *len);

/*
 * Typed look-ups by key. A missing key gives EF_ERR_NOT_FOUND; a value of
 * another type (or an array where a scalar is asked for) EF_ERR_FORMAT with
 * a message naming the key and both types. The exact-type getters (u32, i32,
 * f32, bool, u64, str) require that value type; ef_gguf_get_int accepts any
 * integer scalar that fits an int64_t.
 */
EF_API ef_status ef_gguf_get_u32(const ef_gguf *g, const char *key, uint32_t *out);
EF_API ef_status ef_gguf_get_i32(const ef_gguf *g, const char *key, int32_t *out);
EF_API ef_status ef_gguf_get_u64(const ef_gguf *g, const char *key, uint64_t *out);
EF_API ef_status ef_gguf_get_f32(const ef_gguf *g, const char *key, float *out);
EF_API ef_status ef_gguf_get_bool(const ef_gguf *g, const char *key, bool *out);
EF_API ef_status ef_gguf_get_int(const ef_gguf *g, const char *key, int64_t *out);
/* *len may be NULL. */
EF_API ef_status ef_gguf_get_str(const ef_gguf *g, const char *key, const char **out,
                                 size_t *len);

/*
 * Arrays by key. ef_gguf_get_arr gives the element type and count (an entry
 * that is not an array: EF_ERR_FORMAT). ef_gguf_get_arr_str gives element i
 * of an array of strings. ef_gguf_get_arr_int copies an array of any
 * integer type into out[0..n) converted to int64_t; n must equal the array's
 * length (EF_ERR_RANGE otherwise, or for a u64 above INT64_MAX).
 */
EF_API ef_status ef_gguf_get_arr(const ef_gguf *g, const char *key, ef_gguf_type *elem_type,
                                 uint64_t *n);
EF_API ef_status ef_gguf_get_arr_str(const ef_gguf *g, const char *key, uint64_t i,
                                     const char **out, size_t *len);
EF_API ef_status ef_gguf_get_arr_int(const ef_gguf *g, const char *key, int64_t *out, size_t n);

/* Number of tensors, and tensor i in file order (NULL if out of range). */
EF_API size_t ef_gguf_tensor_count(const ef_gguf *g);
EF_API const ef_gguf_tensor *ef_gguf_tensor_at(const ef_gguf *g, size_t i);

/* Tensor called `name`, or NULL. */
EF_API const ef_gguf_tensor *ef_gguf_find_tensor(const ef_gguf *g, const char *name);

/* ---- writer ---------------------------------------------------------------- */

typedef struct ef_gguf_writer ef_gguf_writer;

/*
 * Fills dst with a tensor's `nbytes` bytes at write time (ef_gguf_add_tensor_fn).
 * Returns EF_OK, or a status (with ef__fail-style last error) that aborts the write.
 */
typedef ef_status (*ef_gguf_fill_fn)(void *user, void *dst, size_t nbytes);

/* A new, empty writer (version 3, alignment 32). Free with ef_gguf_writer_free. */
EF_API ef_status ef_gguf_writer_new(ef_gguf_writer **out);

/* Frees the writer and its copies of metadata. NULL is a no-op. */
EF_API void ef_gguf_writer_free(ef_gguf_writer *w);

/*
 * Metadata setters. Keys are copied, must be non-empty and at most 65535
 * bytes. Setting an existing key replaces its value in place (the file keeps
 * the first-set order). "general.alignment" may only be set as a u32 power
 * of two; it becomes the alignment of the written file. EF_ERR_INVALID for a
 * bad key or value, EF_ERR_NOMEM.
 */
EF_API ef_status ef_gguf_set_u8(ef_gguf_writer *w, const char *key, uint8_t v);
EF_API ef_status ef_gguf_set_i8(ef_gguf_writer *w, const char *key, int8_t v);
EF_API ef_status ef_gguf_set_u16(ef_gguf_writer *w, const char *key, uint16_t v);
EF_API ef_status ef_gguf_set_i16(ef_gguf_writer *w, const char *key, int16_t v);
EF_API ef_status ef_gguf_set_u32(ef_gguf_writer *w, const char *key, uint32_t v);
EF_API ef_status ef_gguf_set_i32(ef_gguf_writer *w, const char *key, int32_t v);
EF_API ef_status ef_gguf_set_f32(ef_gguf_writer *w, const char *key, float v);
EF_API ef_status ef_gguf_set_bool(ef_gguf_writer *w, const char *key, bool v);
EF_API ef_status ef_gguf_set_u64(ef_gguf_writer *w, const char *key, uint64_t v);
EF_API ef_status ef_gguf_set_i64(ef_gguf_writer *w, const char *key, int64_t v);
EF_API ef_status ef_gguf_set_f64(ef_gguf_writer *w, const char *key, double v);
/* A NUL-terminated string (copied). */
EF_API ef_status ef_gguf_set_str(ef_gguf_writer *w, const char *key, const char *v);

/*
 * An array of n elements of a fixed-size type (not STRING or ARRAY), given
 * as the C type in host order: uint8_t .. int64_t, float, double, and bool
 * (one byte each, any nonzero written as 1). Copied.
 */
EF_API ef_status ef_gguf_set_arr(ef_gguf_writer *w, const char *key, ef_gguf_type elem_type,
                                 const void *data, size_t n);

/* An array of n strings (copied). lens may be NULL (each strs[i] is
 * NUL-terminated); otherwise strs[i] has lens[i] bytes and may hold NUL. */
EF_API ef_status ef_gguf_set_arr_str(ef_gguf_writer *w, const char *key,
                                     const char *const *strs, const size_t *lens, size_t n);

/* Copies entry `kv` of an open file (any type) into the writer, under its key. */
EF_API ef_status ef_gguf_copy_kv(ef_gguf_writer *w, const ef_gguf *src, size_t kv);

/* Removes `key` if present (no error if absent). */
EF_API void ef_gguf_remove_key(ef_gguf_writer *w, const char *key);

/*
 * Adds a tensor: name 1..63 bytes, unique; a known ggml type; 1..4 sizes
 * ne[0..n_dims) (innermost first, each >= 0, ne[0] a multiple of the
 * type's block size); `nbytes` must equal the size those imply. `data` is
 * borrowed: it must stay valid until the write. Tensors are written in the
 * order added, each at the next multiple of the alignment.
 * EF_ERR_INVALID for a bad argument, EF_ERR_NOMEM.
 */
EF_API ef_status ef_gguf_add_tensor(ef_gguf_writer *w, const char *name, int type, int n_dims,
                                    const int64_t *ne, const void *data, size_t nbytes);

/* The same, with the bytes produced by fill(user, dst, nbytes) during the
 * write (one tensor's buffer at a time), e.g. to quantize on the fly. */
EF_API ef_status ef_gguf_add_tensor_fn(ef_gguf_writer *w, const char *name, int type,
                                       int n_dims, const int64_t *ne, size_t nbytes,
                                       ef_gguf_fill_fn fill, void *user);

/* Number of tensors added so far. */
EF_API size_t ef_gguf_writer_tensor_count(const ef_gguf_writer *w);

/*
 * Size in bytes of the file the writer would produce now (header, metadata,
 * tensor infos, padding and data), into *out. EF_ERR_RANGE on overflow.
 */
EF_API ef_status ef_gguf_writer_size(const ef_gguf_writer *w, uint64_t *out);

/*
 * Writes the file atomically (temporary file, fsync, rename: see
 * ef_atomic_open): header, metadata, tensor infos, zero padding to the
 * alignment, then each tensor's bytes followed by zero padding to the
 * alignment, as ggml's gguf writer lays it out. On any failure (EF_ERR_IO,
 * EF_ERR_NOMEM, or a fill callback's status) `path` is unchanged. The writer
 * stays usable.
 */
EF_API ef_status ef_gguf_writer_write(const ef_gguf_writer *w, const char *path);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_GGUF_H */
