/*
 * Optimizers over flat parameter vectors: SGD (momentum, weight decay,
 * Nesterov) and AdamW, with PyTorch's update rules (torch.optim.SGD and
 * torch.optim.AdamW), so runs can be compared step for step.
 */
#ifndef EDGEFL_OPTIM_H
#define EDGEFL_OPTIM_H

#include "edgefl/core.h"
#include "edgefl/pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ef_optim_kind { EF_OPTIM_SGD = 0, EF_OPTIM_ADAMW = 1 } ef_optim_kind;

typedef struct ef_optim_config {
    ef_optim_kind kind;
    float lr;
    float weight_decay; /* SGD: L2 added to the gradient; AdamW: decoupled */
    float momentum;     /* SGD only; 0 disables the momentum buffer */
    int nesterov;       /* SGD only; requires momentum > 0 */
    float beta1, beta2, eps; /* AdamW only */
} ef_optim_config;

/* PyTorch's defaults: SGD lr 0.01 momentum 0; AdamW lr 1e-3, betas (0.9,
 * 0.999), eps 1e-8, weight decay 0.01. */
EF_API ef_optim_config ef_optim_defaults(ef_optim_kind kind);

/* "sgd" / "adamw"; EF_ERR_INVALID otherwise. */
EF_API ef_status ef_optim_kind_parse(const char *name, ef_optim_kind *out);
EF_API const char *ef_optim_kind_name(ef_optim_kind kind);

typedef struct ef_optim ef_optim;

/*
 * Creates an optimizer for `n` parameters with its state (momentum or Adam
 * moments) zeroed. Validates the config (lr > 0 and finite, betas in [0,1),
 * eps > 0, nesterov needs momentum). Free with ef_optim_free.
 */
EF_API ef_status ef_optim_new(ef_optim **out, const ef_optim_config *cfg, size_t n);

/* Frees the optimizer and its state. NULL is a no-op. */
EF_API void ef_optim_free(ef_optim *o);

/* One update of params (n) from grads (n). */
EF_API void ef_optim_step(ef_optim *o, float *params, const float *grads, ef_pool *pool);

/* Changes the learning rate (schedules). */
EF_API void ef_optim_set_lr(ef_optim *o, float lr);

/* The current learning rate. */
EF_API float ef_optim_get_lr(const ef_optim *o);

/* Zeroes the state and the step count (e.g. at the start of a federated round). */
EF_API void ef_optim_reset(ef_optim *o);

/* Steps taken since creation or reset. */
EF_API uint64_t ef_optim_steps(const ef_optim *o);

/* Single-range update kernels (what ef_optim_step runs per thread chunk).
 * buf (n) is the momentum buffer; `first` is nonzero on the first step (the
 * buffer is then set to the gradient, as PyTorch does). */
EF_API void ef_sgd_update(float *params, float *buf, const float *grads, size_t n, float lr,
                          float momentum, float weight_decay, int nesterov, int first);
/* m, v (n): Adam moments; t: the 1-based step number. */
EF_API void ef_adamw_update(float *params, float *m, float *v, const float *grads, size_t n,
                            float lr, float beta1, float beta2, float eps, float weight_decay,
                            uint64_t t);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_OPTIM_H */
