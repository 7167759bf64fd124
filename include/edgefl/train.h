/*
 * The training loop: mini-batch training of an ef_model on (a subset of) an
 * ef_dataset with an ef_optim, progress callbacks, and evaluation. The
 * federated client's built-in trainer runs this same loop on its partition.
 */
#ifndef EDGEFL_TRAIN_H
#define EDGEFL_TRAIN_H

#include "edgefl/core.h"
#include "edgefl/data.h"
#include "edgefl/model.h"
#include "edgefl/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Learning-rate schedules over the whole run (all epochs). */
typedef enum ef_lr_schedule {
    EF_LR_CONSTANT = 0, /* the optimizer's lr throughout */
    EF_LR_COSINE = 1,   /* lr * 0.5 (1 + cos(pi * step / total)), after warm-up */
    EF_LR_LINEAR = 2    /* lr * (1 - step / total), after warm-up */
} ef_lr_schedule;

/* "constant", "cosine", "linear"; EF_ERR_INVALID otherwise. */
EF_API ef_status ef_lr_schedule_parse(const char *name, ef_lr_schedule *out);
EF_API const char *ef_lr_schedule_name(ef_lr_schedule s);

/* Learning rate at `step` (0-based) of `total` steps with `warmup` warm-up
 * steps (linear ramp from lr/warmup), for base rate `lr`. */
EF_API float ef_lr_at(ef_lr_schedule s, float lr, uint64_t step, uint64_t total, uint64_t warmup);

typedef struct ef_train_config {
    int epochs;     /* >= 1 */
    int batch;      /* 1..model max_batch; the last batch of an epoch may be smaller */
    uint64_t seed;  /* shuffling order */
    ef_lr_schedule schedule; /* applied to the optimizer's lr at the start of the call */
    uint64_t warmup_steps;
    /* FedProx (Li et al. 2020): adds mu/2 ||w - prox_center||^2 to the loss,
     * i.e. mu (w - center) to every gradient; 0 or a NULL center disables it */
    float prox_mu;
    const float *prox_center; /* (n_params) */
} ef_train_config;

/* Passed to the progress callback (after each step) and returned at the end. */
typedef struct ef_train_progress {
    int epoch;                /* 1-based */
    int epochs;
    size_t step;              /* 1-based step within the epoch */
    size_t steps_per_epoch;
    size_t samples_done;      /* over all epochs so far */
    size_t samples_total;
    float loss;               /* mean loss over the current epoch so far */
    double elapsed_s;
    double samples_per_s;
    double eta_s;
} ef_train_progress;

/* Called after every step; return nonzero to stop training early. */
typedef int (*ef_train_progress_fn)(void *user, const ef_train_progress *p);

/*
 * Trains `m` on the examples idx[0..n) of `ds` (idx NULL: all examples) for
 * cfg->epochs epochs, reshuffling every epoch from cfg->seed. Calls
 * `progress` (may be NULL) after every step. `final` (may be NULL) receives
 * the last progress record. Returns EF_ERR_INVALID for bad sizes, or the
 * status of a failing step. The optimizer's state carries across calls.
 */
EF_API ef_status ef_train(ef_model *m, ef_optim *opt, const ef_dataset *ds, const uint32_t *idx,
                          size_t n, const ef_train_config *cfg, ef_train_progress_fn progress,
                          void *user, ef_train_progress *final);

/*
 * Evaluates `m` on idx[0..n) of `ds` (idx NULL: all) in batches of up to the
 * model's max_batch: *accuracy in [0, 1] and *loss the mean cross-entropy
 * (either may be NULL).
 */
EF_API ef_status ef_evaluate(ef_model *m, const ef_dataset *ds, const uint32_t *idx, size_t n,
                             double *accuracy, double *loss);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_TRAIN_H */
