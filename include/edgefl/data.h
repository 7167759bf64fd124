/*
 * Datasets. The IDX reader (the MNIST file format, gzip-compressed or not)
 * and an in-memory image-classification dataset that keeps raw uint8 pixels
 * (a quarter of the memory of floats) and normalizes batches on the fly.
 */
#ifndef EDGEFL_DATA_H
#define EDGEFL_DATA_H

#include "edgefl/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Default location of Debian's dataset-fashion-mnist package. */
#define EF_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* IDX element types (the third byte of the magic number). */
typedef enum ef_idx_type {
    EF_IDX_U8 = 0x08,
    EF_IDX_I8 = 0x09,
    EF_IDX_I16 = 0x0B,
    EF_IDX_I32 = 0x0C,
    EF_IDX_F32 = 0x0D,
    EF_IDX_F64 = 0x0E
} ef_idx_type;

/* A decoded IDX file. Multi-byte elements are converted to host order. */
typedef struct ef_idx {
    ef_idx_type type;
    int ndim;            /* 1..8 */
    uint32_t dims[8];
    size_t count;        /* product of dims */
    uint32_t file_dim0;  /* dims[0] as the file declares it (prefix reads read fewer) */
    size_t elem_size;    /* bytes per element */
    void *data;          /* count * elem_size bytes, owned; free with ef_idx_free */
} ef_idx;

/*
 * Reads an IDX file, gzip-compressed or plain (detected from the content).
 * Fails with EF_ERR_IO (cannot open/read), EF_ERR_FORMAT (bad magic, bad
 * dims, truncated, trailing bytes, corrupt gzip stream), EF_ERR_RANGE (the
 * dims overflow or exceed max_bytes) or EF_ERR_NOMEM; the last error names
 * the file and the problem. `max_bytes` bounds the decoded size (0: 2 GiB).
 * The claimed size is not trusted: memory grows with the data actually read.
 * On failure *out is zeroed.
 */
EF_API ef_status ef_idx_read(const char *path, size_t max_bytes, ef_idx *out);

/*
 * Like ef_idx_read, but reads only the first `max_items` entries along
 * dimension 0 (0: all), so a program that uses part of a large file never
 * holds the rest; dims[0] and count describe what was read. The header and,
 * for uncompressed files, the file size are still checked; data past the
 * prefix (and a gzip stream's CRC) is not read when the prefix is shorter.
 */
EF_API ef_status ef_idx_read_prefix(const char *path, uint32_t max_items, size_t max_bytes,
                                    ef_idx *out);

/* Frees the data of an ef_idx; safe on a zeroed one. */
EF_API void ef_idx_free(ef_idx *idx);

/* An image-classification dataset in memory. */
typedef struct ef_dataset {
    size_t n;          /* examples */
    int c, h, w;       /* image shape (channels, height, width) */
    int n_classes;
    uint8_t *images;   /* (n, c*h*w) raw pixels 0..255, owned */
    uint8_t *labels;   /* (n) in [0, n_classes), owned */
    float mean, std;   /* batch value = (pixel/255 - mean) / std */
} ef_dataset;

/*
 * Loads an image IDX file (u8, dims (n, h, w) or (n, c, h, w)) and a label
 * IDX file (u8, dims (n)) as a dataset with `n_classes` (1..256) classes.
 * Counts must agree and labels must be < n_classes (else EF_ERR_FORMAT).
 * mean/std are set to 0 and 1. On failure *out is zeroed. Free with
 * ef_dataset_free.
 */
EF_API ef_status ef_dataset_load_idx(ef_dataset *out, const char *images_path,
                                     const char *labels_path, int n_classes);

/*
 * Loads a named dataset from `dir` (NULL: its default directory). Known
 * names: "fashion-mnist" (files train-images-idx3-ubyte[.gz] and friends,
 * mean 0.2860, std 0.3530). `train` selects the training (1) or test (0)
 * split. An unknown name, or a file present neither with nor without .gz,
 * gives EF_ERR_NOT_FOUND. Errors name the file and the problem. On failure
 * *out is zeroed.
 */
EF_API ef_status ef_dataset_load(ef_dataset *out, const char *name, const char *dir, int train);

/*
 * ef_dataset_load_idx / ef_dataset_load reading only the first
 * `max_examples` examples of each file (0: all): memory then grows with what
 * a program uses, not with the file. Image and label files must still
 * declare the same count.
 */
EF_API ef_status ef_dataset_load_idx_n(ef_dataset *out, const char *images_path,
                                       const char *labels_path, int n_classes,
                                       uint32_t max_examples);
EF_API ef_status ef_dataset_load_n(ef_dataset *out, const char *name, const char *dir, int train,
                                   uint32_t max_examples);

/* Frees a dataset's arrays; safe on a zeroed one. */
EF_API void ef_dataset_free(ef_dataset *ds);

/* Number of floats in one example (c*h*w). */
EF_API size_t ef_dataset_example_size(const ef_dataset *ds);

/*
 * Gathers examples idx[0..n) into x (n, c*h*w) as normalized floats and
 * y (n) as int32 labels (y may be NULL). Indices must be < ds->n.
 */
EF_API void ef_dataset_batch(const ef_dataset *ds, const uint32_t *idx, size_t n, float *x,
                             int32_t *y);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_DATA_H */
