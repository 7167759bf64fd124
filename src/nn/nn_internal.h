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

#endif /* EDGEFL_NN_INTERNAL_H */
