/*
 * Image-classification models built from the nn kernels: logistic
 * regression, the MLP (784-200-200-10), the CNN of McMahan et al. 2017
 * (conv5x5x32, pool, conv5x5x64, pool, fc512, fc10) and NIID-Bench's small
 * LeNet-5 style CNN (44,426 parameters on 28x28 inputs). A model owns its
 * parameters as one flat vector (ef_params), a gradient vector of the same
 * layout and an arena of activations sized for `max_batch`.
 */
#ifndef EDGEFL_MODEL_H
#define EDGEFL_MODEL_H

#include "edgefl/core.h"
#include "edgefl/params.h"
#include "edgefl/pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ef_model_arch {
    EF_MODEL_LOGREG = 0,
    EF_MODEL_MLP = 1,
    EF_MODEL_CNN = 2,
    EF_MODEL_LENET5 = 3 /* NIID-Bench's "simple CNN" (Li et al. 2022): conv5x5x6, pool,
                         * conv5x5x16, pool (no padding), fc120, fc84, fc10 */
} ef_model_arch;

/* "logreg", "mlp", "cnn", "lenet5". */
EF_API const char *ef_model_arch_name(ef_model_arch arch);
/* Parses an architecture name; EF_ERR_INVALID with a message otherwise. */
EF_API ef_status ef_model_arch_parse(const char *name, ef_model_arch *out);

typedef struct ef_model_config {
    ef_model_arch arch;
    int c, h, w;     /* input image shape; the CNN needs h and w divisible by 4 */
    int n_classes;
    int max_batch;   /* largest batch forward/backward will see */
} ef_model_config;

typedef struct ef_model ef_model;

/*
 * Builds a model with zeroed parameters; call ef_model_init or load
 * parameters next. `pool` (may be NULL) is used by every kernel and must
 * outlive the model. Free with ef_model_free.
 */
EF_API ef_status ef_model_new(ef_model **out, const ef_model_config *cfg, ef_pool *pool);

/* Frees everything the model owns. NULL is a no-op. */
EF_API void ef_model_free(ef_model *m);

/* The configuration the model was built with. */
EF_API const ef_model_config *ef_model_get_config(const ef_model *m);

/*
 * PyTorch's default initialization (weights and biases uniform in
 * +-1/sqrt(fan_in), i.e. kaiming_uniform with a = sqrt(5)), drawn from an
 * ef_rng seeded with `seed`.
 */
EF_API void ef_model_init(ef_model *m, uint64_t seed);

/* The parameters (names, shapes, flat data); owned by the model. */
EF_API ef_params *ef_model_params(ef_model *m);

/* The gradient vector (same layout as the parameters); owned by the model. */
EF_API float *ef_model_grads(ef_model *m);

/* Number of parameters. */
EF_API size_t ef_model_numel(const ef_model *m);

/*
 * Forward pass on x (n, c*h*w), 1 <= n <= max_batch. With labels y (n), sets
 * *loss to the mean cross-entropy (loss may be NULL). x and y must stay
 * valid until the matching ef_model_backward. EF_ERR_INVALID for a bad n or
 * a label out of range.
 */
EF_API ef_status ef_model_forward(ef_model *m, const float *x, const int32_t *y, int n,
                                  float *loss);

/* Logits (n, n_classes) of the last forward pass; owned by the model. */
EF_API const float *ef_model_logits(const ef_model *m);

/*
 * Zeroes the gradients and back-propagates the mean loss of the last
 * forward pass (which must have had labels). EF_ERR_STATE otherwise.
 */
EF_API ef_status ef_model_backward(ef_model *m);

/* Floating-point operations to train on one example (forward and backward,
 * counting a multiply-add as 2; backward taken as twice the forward). Used
 * to turn device speeds into simulated training time. */
EF_API double ef_model_train_flops(const ef_model *m);

/* The pool given to ef_model_new (may be NULL). */
EF_API ef_pool *ef_model_pool(const ef_model *m);

/* Bytes of activation memory (the arena) the model holds. */
EF_API size_t ef_model_activation_bytes(const ef_model *m);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_MODEL_H */
