/*
 * Internal entry points of the Winograd convolution path, chosen by
 * ef_conv2d_forward/backward when ef__conv2d_winograd_ok() holds.
 */
#ifndef EDGEFL_CONV2D_INTERNAL_H
#define EDGEFL_CONV2D_INTERNAL_H

#include "edgefl/nn.h"

/* True for 5x5 kernels, stride 1, pad <= 4 and at least 8 channels in and out. */
int ef__conv2d_winograd_ok(const ef_conv2d_desc *d);
/* Scratch floats for the Winograd path with n_threads threads. */
size_t ef__conv2d_winograd_workspace(const ef_conv2d_desc *d, int n_threads);
void ef__conv2d_winograd_forward(float *out, const float *inp, const float *weight,
                                 const float *bias, const ef_conv2d_desc *d, float *work,
                                 ef_pool *pool);
void ef__conv2d_winograd_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                  const float *inp, const float *weight,
                                  const ef_conv2d_desc *d, float *work, ef_pool *pool);

/* Direct path for few input channels (C < 8), stride 1, square kernels up to 7. */
int ef__conv2d_direct_ok(const ef_conv2d_desc *d);
size_t ef__conv2d_direct_workspace(const ef_conv2d_desc *d, int n_threads);
void ef__conv2d_direct_forward(float *out, const float *inp, const float *weight,
                               const float *bias, const ef_conv2d_desc *d, float *work,
                               ef_pool *pool);
/* Weight and bias gradients only (dinp goes through im2col). */
void ef__conv2d_direct_backward_weights(float *dweight, float *dbias, const float *dout,
                                        const float *inp, const ef_conv2d_desc *d, float *work,
                                        ef_pool *pool);

/* Enables (1) or disables (0) the Winograd and direct fast paths, leaving
 * im2col for everything (tests compare the paths); process-wide. */
void ef__conv2d_set_fast_paths(int enabled);

#endif /* EDGEFL_CONV2D_INTERNAL_H */
