/*
 * The built-in client trainer: trains an edgefl model on a client's slice of
 * a partitioned dataset. One model instance per driver worker, each
 * single-threaded, so clients train side by side on the worker threads and
 * a client's result never depends on which worker ran it.
 */
#include <math.h>
#include <string.h>

#include "core/core_internal.h"
#include "edgefl/client.h"
#include "edgefl/train.h"

struct ef_nn_trainer {
    ef_model_config mc;
    const ef_dataset *data;
    const ef_partition *train, *eval;
    int workers;
    ef_model **models; /* (workers) */
    double flops;
};

ef_status ef_nn_trainer_new(ef_nn_trainer **out, const ef_model_config *model,
                            const ef_dataset *data, const ef_partition *train_part,
                            const ef_partition *eval_part, int workers) {
    *out = NULL;
    if (workers < 1 || workers > 1024)
        return ef__fail(EF_ERR_INVALID, "trainer: %d workers (1..1024)", workers);
    if (eval_part && eval_part->n_clients != train_part->n_clients)
        return ef__fail(EF_ERR_INVALID, "trainer: train and eval partitions differ in clients");
    ef_nn_trainer *t = ef_calloc(1, sizeof *t);
    if (!t) return EF_ERR_NOMEM;
    t->mc = *model;
    t->data = data;
    t->train = train_part;
    t->eval = eval_part;
    t->workers = workers;
    ef_status st = EF_OK;
    t->models = ef_calloc((size_t)workers, sizeof *t->models);
    if (!t->models) {
        st = EF_ERR_NOMEM;
        goto fail;
    }
    for (int w = 0; w < workers; w++)
        if ((st = ef_model_new(&t->models[w], model, NULL)) != EF_OK) goto fail;
    t->flops = ef_model_train_flops(t->models[0]);
    *out = t;
    return EF_OK;
fail:
    ef_nn_trainer_free(t);
    return st;
}

void ef_nn_trainer_free(ef_nn_trainer *t) {
    if (!t) return;
    if (t->models)
        for (int w = 0; w < t->workers; w++) ef_model_free(t->models[w]);
    ef_free(t->models);
    ef_free(t);
}

double ef_nn_trainer_flops_per_example(const ef_nn_trainer *t) { return t->flops; }

static ef_status nn_fit(void *user, int worker, uint32_t client, const float *global, size_t n,
                        const ef_task *task, float *delta, ef_fit_result *res) {
    ef_nn_trainer *t = user;
    if (worker < 0 || worker >= t->workers || client >= t->train->n_clients)
        return ef__fail(EF_ERR_INVALID, "trainer: worker %d / client %u out of range", worker,
                        client);
    ef_model *m = t->models[worker];
    if (n != ef_model_numel(m))
        return ef__fail(EF_ERR_INVALID, "trainer: model of %zu values, expected %zu", n,
                        ef_model_numel(m));
    if (task->batch > t->mc.max_batch)
        return ef__fail(EF_ERR_INVALID, "trainer: batch %u exceeds the model's %d", task->batch,
                        t->mc.max_batch);
    size_t size = ef_partition_size(t->train, client);
    if (size == 0) return ef__fail(EF_ERR_STATE, "trainer: client %u has no data", client);
    float *w = ef_params_data(ef_model_params(m));
    memcpy(w, global, n * sizeof(float));
    ef_optim_config oc = ef_optim_defaults(EF_OPTIM_SGD);
    oc.lr = task->lr;
    oc.momentum = task->momentum;
    ef_optim *opt = NULL;
    ef_status st = ef_optim_new(&opt, &oc, n);
    if (st) return st;
    ef_train_config tc = {.epochs = task->epochs, .batch = task->batch, .seed = task->seed,
                          .schedule = EF_LR_CONSTANT, .prox_mu = task->prox_mu,
                          .prox_center = global};
    ef_train_progress p;
    st = ef_train(m, opt, t->data, t->train->indices + t->train->offsets[client], size, &tc,
                  NULL, NULL, &p);
    ef_optim_free(opt);
    if (st) return st;
    for (size_t i = 0; i < n; i++) delta[i] = w[i] - global[i];
    res->n_examples = (uint32_t)size;
    res->train_loss = p.loss;
    res->steps = (uint32_t)(p.steps_per_epoch * (size_t)task->epochs);
    return EF_OK;
}

static ef_status nn_eval(void *user, int worker, uint32_t client, const float *global, size_t n,
                         ef_eval_counts *res) {
    ef_nn_trainer *t = user;
    if (!t->eval) return ef__fail(EF_ERR_UNSUPPORTED, "trainer: no held-out data");
    if (worker < 0 || worker >= t->workers || client >= t->eval->n_clients)
        return ef__fail(EF_ERR_INVALID, "trainer: worker %d / client %u out of range", worker,
                        client);
    ef_model *m = t->models[worker];
    if (n != ef_model_numel(m)) return ef__fail(EF_ERR_INVALID, "trainer: model size mismatch");
    size_t size = ef_partition_size(t->eval, client);
    memset(res, 0, sizeof *res);
    if (size == 0) return EF_OK;
    memcpy(ef_params_data(ef_model_params(m)), global, n * sizeof(float));
    double acc = 0, loss = 0;
    ef_status st = ef_evaluate(m, t->data, t->eval->indices + t->eval->offsets[client], size,
                               &acc, &loss);
    if (st) return st;
    res->n_examples = (uint32_t)size;
    res->correct = (uint32_t)llround(acc * (double)size);
    res->loss_sum = loss * (double)size;
    return EF_OK;
}

ef_trainer ef_nn_trainer_callbacks(ef_nn_trainer *t) {
    ef_trainer tr = {nn_fit, nn_eval, t};
    return tr;
}
