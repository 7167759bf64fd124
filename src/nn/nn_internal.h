/*
 * Internal helpers for the kernels: restrict-qualified aliases and the
 * one-time switch of OpenBLAS to single-threaded mode (edgefl threads its
 * own work through ef_pool; two thread pools fighting over two cores would
 * be slower and non-deterministic).
 */
#ifndef EDGEFL_NN_INTERNAL_H
#define EDGEFL_NN_INTERNAL_H

#include "core/core_internal.h"
#include "edgefl/nn.h"

/* Sets OpenBLAS to one thread the first time it is called. */
void ef__blas_init(void);

/* ef_swiglu_backward that ASSIGNS the gradients instead of accumulating
 * (a model's scratch buffers need no zeroing pass); both must be non-NULL. */
void ef__swiglu_backward_set(float *dgate, float *dup, const float *dout, const float *gate,
                             const float *up, int N, int F, int ld, ef_pool *pool);

#endif /* EDGEFL_NN_INTERNAL_H */
