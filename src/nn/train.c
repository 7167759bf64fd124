/*
 * Mini-batch training and evaluation loops over an in-memory dataset.
 * Batches are gathered from uint8 pixels into one float buffer per call, so
 * the dataset never exists as floats.
 */
#include <math.h>
#include <string.h>

#include "core/core_internal.h"
#include "edgefl/rng.h"
#include "edgefl/train.h"

ef_status ef_lr_schedule_parse(const char *name, ef_lr_schedule *out) {
    for (int i = EF_LR_CONSTANT; i <= EF_LR_LINEAR; i++)
        if (strcmp(name, ef_lr_schedule_name((ef_lr_schedule)i)) == 0) {
            *out = (ef_lr_schedule)i;
            return EF_OK;
        }
    return ef__fail(EF_ERR_INVALID, "unknown schedule '%s' (expected constant, cosine or linear)",
                    name);
}

const char *ef_lr_schedule_name(ef_lr_schedule s) {
    switch (s) {
    case EF_LR_CONSTANT: return "constant";
    case EF_LR_COSINE: return "cosine";
    case EF_LR_LINEAR: return "linear";
    }
    return "unknown";
}

float ef_lr_at(ef_lr_schedule s, float lr, uint64_t step, uint64_t total, uint64_t warmup) {
    if (warmup > 0 && step < warmup) return lr * (float)(step + 1) / (float)warmup;
    if (s == EF_LR_CONSTANT || total <= warmup) return lr;
    double f = (double)(step - warmup) / (double)(total - warmup);
    if (f > 1.0) f = 1.0;
    if (s == EF_LR_COSINE) return (float)(lr * 0.5 * (1.0 + cos(3.141592653589793 * f)));
    return (float)(lr * (1.0 - f));
}

ef_status ef_train(ef_model *m, ef_optim *opt, const ef_dataset *ds, const uint32_t *idx,
                   size_t n, const ef_train_config *cfg, ef_train_progress_fn progress,
                   void *user, ef_train_progress *final) {
    const ef_model_config *mc = ef_model_get_config(m);
    if (cfg->epochs < 1) return ef__fail(EF_ERR_INVALID, "train: epochs must be >= 1");
    if (cfg->batch < 1 || cfg->batch > mc->max_batch)
        return ef__fail(EF_ERR_INVALID, "train: batch %d outside 1..%d", cfg->batch,
                        mc->max_batch);
    if (n == 0 || (idx == NULL && n > ds->n) || n > UINT32_MAX)
        return ef__fail(EF_ERR_INVALID, "train: %zu examples requested, dataset has %zu", n,
                        ds->n);
    if ((size_t)mc->c * mc->h * mc->w != ef_dataset_example_size(ds))
        return ef__fail(EF_ERR_INVALID, "train: model input %dx%dx%d does not match the data",
                        mc->c, mc->h, mc->w);
    size_t ex = ef_dataset_example_size(ds);
    const float base_lr = ef_optim_get_lr(opt);
    ef_status st = EF_OK;
    uint32_t *order = ef_malloc(n * sizeof *order);
    float *x = ef_malloc((size_t)cfg->batch * ex * sizeof(float));
    int32_t *y = ef_malloc((size_t)cfg->batch * sizeof(int32_t));
    if (!order || !x || !y) {
        st = EF_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        order[i] = idx ? idx[i] : (uint32_t)i;
        if (order[i] >= ds->n) {
            st = ef__fail(EF_ERR_INVALID, "train: index %u out of range", order[i]);
            goto done;
        }
    }
    ef_rng rng;
    ef_rng_seed(&rng, cfg->seed);
    ef_train_progress p = {.epochs = cfg->epochs,
                           .steps_per_epoch = (n + (size_t)cfg->batch - 1) / (size_t)cfg->batch,
                           .samples_total = n * (size_t)cfg->epochs};
    uint64_t total_steps = (uint64_t)p.steps_per_epoch * (uint64_t)cfg->epochs, step_no = 0;
    float *params = ef_params_data(ef_model_params(m));
    float *grads = ef_model_grads(m);
    double t0 = ef_now();
    for (int ep = 1; ep <= cfg->epochs; ep++) {
        ef_rng_shuffle_u32(&rng, order, n);
        double loss_sum = 0.0;
        size_t seen = 0;
        p.epoch = ep;
        for (size_t s = 0; s < p.steps_per_epoch; s++) {
            size_t b0 = s * (size_t)cfg->batch;
            int bn = (int)(n - b0 < (size_t)cfg->batch ? n - b0 : (size_t)cfg->batch);
            ef_dataset_batch(ds, order + b0, (size_t)bn, x, y);
            float loss = 0.0f;
            if ((st = ef_model_forward(m, x, y, bn, &loss)) != EF_OK) goto done;
            if ((st = ef_model_backward(m)) != EF_OK) goto done;
            if (cfg->prox_mu > 0 && cfg->prox_center) {
                size_t np = ef_model_numel(m);
                for (size_t i = 0; i < np; i++)
                    grads[i] += cfg->prox_mu * (params[i] - cfg->prox_center[i]);
            }
            ef_optim_set_lr(opt, ef_lr_at(cfg->schedule, base_lr, step_no++, total_steps,
                                          cfg->warmup_steps));
            ef_optim_step(opt, params, grads, ef_model_pool(m));
            loss_sum += (double)loss * bn;
            seen += (size_t)bn;
            p.step = s + 1;
            p.samples_done += (size_t)bn;
            p.loss = (float)(loss_sum / (double)seen);
            p.elapsed_s = ef_now() - t0;
            p.samples_per_s = p.elapsed_s > 0 ? (double)p.samples_done / p.elapsed_s : 0.0;
            p.eta_s = p.samples_per_s > 0
                          ? (double)(p.samples_total - p.samples_done) / p.samples_per_s
                          : 0.0;
            if (progress && progress(user, &p)) goto done;
        }
    }
done:
    ef_optim_set_lr(opt, base_lr); /* the schedule is this call's; the base rate stays */
    if (final && st == EF_OK) *final = p;
    ef_free(order);
    ef_free(x);
    ef_free(y);
    return st;
}

ef_status ef_evaluate(ef_model *m, const ef_dataset *ds, const uint32_t *idx, size_t n,
                      double *accuracy, double *loss) {
    const ef_model_config *mc = ef_model_get_config(m);
    if (idx == NULL && n > ds->n) n = ds->n;
    if (n == 0) return ef__fail(EF_ERR_INVALID, "evaluate: no examples");
    if ((size_t)mc->c * mc->h * mc->w != ef_dataset_example_size(ds))
        return ef__fail(EF_ERR_INVALID, "evaluate: model input %dx%dx%d does not match the data",
                        mc->c, mc->h, mc->w);
    size_t ex = ef_dataset_example_size(ds);
    int B = mc->max_batch;
    int K = mc->n_classes;
    ef_status st = EF_OK;
    uint32_t *ids = ef_malloc((size_t)B * sizeof *ids);
    float *x = ef_malloc((size_t)B * ex * sizeof(float));
    int32_t *y = ef_malloc((size_t)B * sizeof(int32_t));
    if (!ids || !x || !y) {
        st = EF_ERR_NOMEM;
        goto done;
    }
    size_t correct = 0;
    double loss_sum = 0.0;
    for (size_t b0 = 0; b0 < n; b0 += (size_t)B) {
        int bn = (int)(n - b0 < (size_t)B ? n - b0 : (size_t)B);
        for (int i = 0; i < bn; i++) {
            ids[i] = idx ? idx[b0 + (size_t)i] : (uint32_t)(b0 + (size_t)i);
            if (ids[i] >= ds->n) {
                st = ef__fail(EF_ERR_INVALID, "evaluate: index %u out of range", ids[i]);
                goto done;
            }
        }
        ef_dataset_batch(ds, ids, (size_t)bn, x, y);
        float l = 0.0f;
        if ((st = ef_model_forward(m, x, y, bn, &l)) != EF_OK) goto done;
        loss_sum += (double)l * bn;
        const float *lg = ef_model_logits(m);
        for (int i = 0; i < bn; i++) {
            int best = 0;
            for (int k = 1; k < K; k++)
                if (lg[(size_t)i * K + k] > lg[(size_t)i * K + best]) best = k;
            correct += best == y[i];
        }
    }
    if (accuracy) *accuracy = (double)correct / (double)n;
    if (loss) *loss = loss_sum / (double)n;
done:
    ef_free(ids);
    ef_free(x);
    ef_free(y);
    return st;
}
