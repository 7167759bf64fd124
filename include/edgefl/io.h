/*
 * Files: atomic writes (temp file, fsync, rename, fsync of the directory, so
 * a crash leaves either the old file or the new one, never a partial one)
 * and safetensors checkpoints (https://github.com/huggingface/safetensors:
 * 8-byte little-endian header length, JSON header, raw little-endian data).
 */
#ifndef EDGEFL_IO_H
#define EDGEFL_IO_H

#include "edgefl/core.h"
#include "edgefl/params.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- atomic files ------------------------------------------------------- */

typedef struct ef_atomic_file ef_atomic_file;

/*
 * Starts writing `path` through a temporary file in the same directory
 * ("<path>.tmp.<pid>.<n>"). Nothing at `path` changes until ef_atomic_commit.
 */
EF_API ef_status ef_atomic_open(ef_atomic_file **out, const char *path);
/* The same, creating the file with permission bits `mode` (before the
 * umask), e.g. 0600 for a secret key. */
EF_API ef_status ef_atomic_open_mode(ef_atomic_file **out, const char *path, unsigned mode);

/* Appends bytes to the temporary file. After a failed write the file can
 * only be aborted: ef_atomic_commit refuses it (EF_ERR_STATE). */
EF_API ef_status ef_atomic_write(ef_atomic_file *f, const void *data, size_t len);

/*
 * Flushes, fsyncs and renames the temporary file over `path`, then fsyncs the
 * directory. Frees f whatever the outcome; on failure the temporary file is
 * removed and `path` is unchanged. One exception: if only the final fsync of
 * the directory fails, the new content is already in place (EF_ERR_IO says
 * the rename may not survive a crash).
 */
EF_API ef_status ef_atomic_commit(ef_atomic_file *f);

/* Removes the temporary file and frees f; `path` is unchanged. NULL is a no-op. */
EF_API void ef_atomic_abort(ef_atomic_file *f);

/* Writes a whole buffer to `path` atomically. */
EF_API ef_status ef_write_file_atomic(const char *path, const void *data, size_t len);
/* The same with permission bits `mode` (see ef_atomic_open_mode). */
EF_API ef_status ef_write_file_atomic_mode(const char *path, const void *data, size_t len,
                                           unsigned mode);

/*
 * Reads a whole file into a new buffer (*out, freed with ef_free; NUL-terminated
 * one byte past *len). Fails with EF_ERR_IO, or EF_ERR_RANGE above max_bytes
 * (0: 2 GiB). On failure *out is NULL and *len 0.
 */
EF_API ef_status ef_read_file(const char *path, size_t max_bytes, char **out, size_t *len);

/* ---- safetensors -------------------------------------------------------- */

/* Element types of the safetensors format. */
typedef enum ef_st_dtype {
    EF_ST_F32, EF_ST_F16, EF_ST_BF16, EF_ST_F64,
    EF_ST_I64, EF_ST_I32, EF_ST_I16, EF_ST_I8, EF_ST_U8, EF_ST_BOOL
} ef_st_dtype;

/* One tensor of an open safetensors file. */
typedef struct ef_st_tensor {
    const char *name;
    ef_st_dtype dtype;
    int ndim;
    int64_t shape[EF_MAX_DIMS];
    size_t numel;
    const void *data;  /* little-endian bytes inside the mapped file; not
                          necessarily aligned for the dtype (copy, or use
                          ef_st_tensor_to_f32) */
    size_t nbytes;
} ef_st_tensor;

/* A string key/value pair of the header's "__metadata__" object. */
typedef struct ef_st_kv {
    const char *key;
    const char *value;
} ef_st_kv;

typedef struct ef_safetensors ef_safetensors;

/*
 * Opens and validates a safetensors file, mapped read-only. Checks: header
 * length within the file (and at most 100 MB), UTF-8, valid JSON object,
 * known dtypes, shapes, data offsets inside the data section, consistent
 * with dtype and shape, not overlapping, covering the data section; unique
 * names; string metadata. Errors name the file and the fault (EF_ERR_IO,
 * EF_ERR_FORMAT; EF_ERR_UNSUPPORTED for dtypes of the format this reader
 * does not handle: U16, U32, U64, F8_*). Close with ef_safetensors_close.
 */
EF_API ef_status ef_safetensors_open(ef_safetensors **out, const char *path);

/* Unmaps and frees. NULL is a no-op. */
EF_API void ef_safetensors_close(ef_safetensors *st);

/* Number of tensors (in file order of their data offsets). */
EF_API size_t ef_safetensors_count(const ef_safetensors *st);

/* Tensor i (i < count); valid until close. */
EF_API const ef_st_tensor *ef_safetensors_tensor(const ef_safetensors *st, size_t i);

/* Tensor called `name`, or NULL. */
EF_API const ef_st_tensor *ef_safetensors_find(const ef_safetensors *st, const char *name);

/* Metadata value for `key`, or NULL. */
EF_API const char *ef_safetensors_meta(const ef_safetensors *st, const char *key);

/*
 * Converts tensor `t` to float32 into out (t->numel floats). Supports F32,
 * F16, BF16 and F64; other dtypes give EF_ERR_UNSUPPORTED.
 */
EF_API ef_status ef_st_tensor_to_f32(const ef_st_tensor *t, float *out);

/*
 * Writes every tensor of `p` as F32 with its name and shape, in p's order,
 * plus the given metadata strings, atomically to `path` (data section 8-byte
 * aligned). Fails with EF_ERR_STATE if p is not allocated, EF_ERR_INVALID for
 * NULL or duplicate metadata keys or a tensor called "__metadata__", EF_ERR_IO.
 */
EF_API ef_status ef_safetensors_save(const char *path, ef_params *p, const ef_st_kv *meta,
                                     size_t n_meta);

/* One F32 tensor to write: name, shape and the caller's data (numel floats). */
typedef struct ef_st_view {
    const char *name;
    int ndim;
    int64_t shape[EF_MAX_DIMS];
    const float *data;
} ef_st_view;

/*
 * Writes tensors t[0..n) as F32, back to back in that order, plus the
 * metadata strings, atomically to `path` (data section 8-byte aligned): for
 * tensors that do not live in one ef_params (e.g. a model plus optimizer
 * state). EF_ERR_INVALID for NULL, reserved or duplicate names, bad shapes
 * or duplicate metadata keys; EF_ERR_IO.
 */
EF_API ef_status ef_safetensors_save_views(const char *path, const ef_st_view *t, size_t n,
                                           const ef_st_kv *meta, size_t n_meta);

/*
 * Fills `p` (an allocated layout) from the file: every tensor of p must be
 * present (else EF_ERR_NOT_FOUND) with the same shape (else EF_ERR_FORMAT)
 * and a float dtype (converted to F32; else EF_ERR_UNSUPPORTED); extra
 * tensors in the file are ignored. On error p is unchanged.
 */
EF_API ef_status ef_safetensors_load_params(const char *path, ef_params *p);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_IO_H */
