/*
 * Flat parameter vectors. A model's parameters live in one contiguous float
 * array, described by a table of named tensors (name, shape, offset). The
 * flat array is what federated learning exchanges, what optimizers update
 * and what checkpoints store.
 */
#ifndef EDGEFL_PARAMS_H
#define EDGEFL_PARAMS_H

#include "edgefl/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EF_MAX_DIMS 8
#define EF_MAX_NAME 128

/* One named tensor inside a flat vector. */
typedef struct ef_tensor_info {
    char name[EF_MAX_NAME];
    int ndim;
    int64_t shape[EF_MAX_DIMS];
    size_t offset; /* in floats, from the start of the flat vector */
    size_t numel;
} ef_tensor_info;

typedef struct ef_params ef_params;

/* Creates an empty table. Free with ef_params_free. */
EF_API ef_status ef_params_new(ef_params **out);

/* Frees the table and its data. NULL is a no-op. */
EF_API void ef_params_free(ef_params *p);

/*
 * Appends a tensor (before ef_params_alloc). Names must be unique, shorter
 * than EF_MAX_NAME, dims positive. The tensor's offset is the running total.
 */
EF_API ef_status ef_params_add(ef_params *p, const char *name, int ndim, const int64_t *shape);

/* Allocates the zeroed flat vector once all tensors are added. */
EF_API ef_status ef_params_alloc(ef_params *p);

/* Number of tensors. */
EF_API size_t ef_params_count(const ef_params *p);

/* Total number of floats. */
EF_API size_t ef_params_numel(const ef_params *p);

/* The i-th tensor's description (i < count), else NULL; owned by p and valid
 * until the next ef_params_add (which may move the table) or ef_params_free. */
EF_API const ef_tensor_info *ef_params_info(const ef_params *p, size_t i);

/* Index of the tensor called `name`, or -1. */
EF_API long ef_params_find(const ef_params *p, const char *name);

/* The flat vector (NULL before ef_params_alloc); owned by p. */
EF_API float *ef_params_data(ef_params *p);

/* Pointer to tensor i inside the flat vector. */
EF_API float *ef_params_tensor(ef_params *p, size_t i);

/* True when a and b have the same names, shapes and order. */
EF_API int ef_params_same_layout(const ef_params *a, const ef_params *b);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_PARAMS_H */
