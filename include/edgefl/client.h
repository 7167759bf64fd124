/*
 * The federated client runtime as a pure state machine. It checks in,
 * receives a model and a task, trains through the caller's trainer
 * callbacks, and answers with its update (w_local - w_global) or its
 * evaluation counts. Any C code can be the trainer; ef_nn_trainer (below)
 * is the built-in one that trains edgefl's models on a data partition.
 *
 * The runtime keeps a received model only while a task uses it.
 */
#ifndef EDGEFL_CLIENT_H
#define EDGEFL_CLIENT_H

#include "edgefl/data.h"
#include "edgefl/model.h"
#include "edgefl/partition.h"
#include "edgefl/wire.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ef_fit_result {
    uint32_t n_examples; /* examples trained on (the aggregation weight) */
    float train_loss;    /* mean training loss of the last local epoch */
    uint32_t steps;      /* optimizer steps taken */
} ef_fit_result;

typedef struct ef_eval_counts {
    uint32_t n_examples;
    double loss_sum;     /* sum of per-example losses */
    uint32_t correct;
} ef_eval_counts;

/*
 * Trainer callbacks. `worker` is the index the driver passed to
 * ef_client_handle (lets a driver give each thread its own model);
 * `global` (n floats) is the model to start from. fit writes
 * delta = w_local - w_global into `delta` (n floats).
 */
typedef struct ef_trainer {
    ef_status (*fit)(void *user, int worker, uint32_t client, const float *global, size_t n,
                     const ef_task *task, float *delta, ef_fit_result *res);
    ef_status (*evaluate)(void *user, int worker, uint32_t client, const float *global,
                          size_t n, ef_eval_counts *res);
    void *user;
} ef_trainer;

typedef struct ef_client_config {
    uint64_t job;
    uint32_t id;          /* below EF_BROADCAST_ID */
    uint32_t n_train, n_eval;
    size_t n_params;      /* model size the client expects */
    /* Simulation only: derive the secure-aggregation keys, masks and
     * rounding noise from the task's seed, so runs repeat exactly. Anyone who
     * knows the seed knows the secrets: never in a deployment (0: the
     * operating system's randomness). */
    int deterministic_secrets;
    /* Authentication (deployments). sign_key: this client's Ed25519 secret
     * key (EF_SK_BYTES, copied into locked memory): every message it sends is
     * signed. server_pk: the server's public key: messages not signed by it,
     * and non-MODEL messages whose counter is not above the last one seen,
     * are refused (EF_ERR_AUTH). NULL: unsigned / unchecked (simulation). */
    const uint8_t *sign_key;
    const uint8_t *server_pk;
    /* First value of the message counter. A restarted client must not reuse
     * counters (the server would refuse its messages as replays): deployments
     * pass a time-based value, e.g. microseconds since the epoch. */
    uint64_t first_seq;
    /* Audit hook (tests, audits): sees this client's secure-aggregation
     * input -- its quantized update plus its share of distributed noise,
     * n words mod 2^bits -- just before masking. The sum of the included
     * clients' inputs is what the server's sa_audit receives. NULL: none. */
    void (*sa_audit)(void *user, uint32_t client, uint32_t round, const uint32_t *words,
                     size_t n);
    void *sa_audit_user;
} ef_client_config;

typedef struct ef_client ef_client;

/* Creates a client (no message sent yet). The trainer is copied. */
EF_API ef_status ef_client_new(ef_client **out, const ef_client_config *cfg,
                               const ef_trainer *trainer);

/* Frees the client (and drops any model it holds). NULL is a no-op. */
EF_API void ef_client_free(ef_client *c);

/* Queues a CHECKIN for the server. */
EF_API ef_status ef_client_checkin(ef_client *c, ef_outbox *out);

/* Queues a LEAVE for the server (what an MQTT last will carries). */
EF_API ef_status ef_client_leave(ef_client *c, uint32_t reason, ef_outbox *out);

/*
 * Handles one message from the server: MODEL (kept, refcounted, until a task
 * uses it), TASK (verifies the model's version and hash, calls fit, queues
 * the UPDATE), EVAL (calls evaluate, queues EVAL_RESULT). A malformed or
 * unexpected message is refused with a status and changes nothing.
 */
EF_API ef_status ef_client_handle(ef_client *c, ef_buf *msg, int worker, ef_outbox *out);

/* Drops any model the client holds, as a crash would. */
EF_API void ef_client_forget(ef_client *c);

/* The client's id. */
EF_API uint32_t ef_client_id(const ef_client *c);

/* ---- the built-in trainer: edgefl models on a data partition ------------- */

typedef struct ef_nn_trainer ef_nn_trainer;

/*
 * A trainer for clients 0..n_clients-1 of `train_part` over `data` (client c
 * trains on its slice; evaluates on `eval_part`'s slice, which may be NULL),
 * with `workers` independent model instances (one per driver thread; each
 * runs single-threaded). Local training: SGD with the task's lr, momentum,
 * epochs, batch and seed, a fresh optimizer per task, constant learning
 * rate, plus the FedProx proximal term when the task's prox_mu > 0. The data
 * and partitions must outlive the trainer.
 */
EF_API ef_status ef_nn_trainer_new(ef_nn_trainer **out, const ef_model_config *model,
                                   const ef_dataset *data, const ef_partition *train_part,
                                   const ef_partition *eval_part, int workers);
EF_API void ef_nn_trainer_free(ef_nn_trainer *t);

/* The callbacks for ef_client_new (user = t). */
EF_API ef_trainer ef_nn_trainer_callbacks(ef_nn_trainer *t);

/* Training FLOPs per example of the trainer's model (for simulated time). */
EF_API double ef_nn_trainer_flops_per_example(const ef_nn_trainer *t);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_CLIENT_H */
