/*
 * Scale-out aggregator workers: a pure state machine that takes a share of
 * the server inbox (over MQTT, an MQTT 5 shared subscription
 * $share/<group>/edgefl/<job>/server) and turns the clients' updates it
 * receives into PARTIAL messages for the server, so that decoding, signature
 * checks and summing of large updates spread over several processes.
 *
 * A worker learns each client's open task from the server's TASK messages
 * (it also reads the client inboxes, ef_worker_observe). A client's UPDATE
 * that answers the task the worker saw, decodes, has the model's size,
 * finite values and (with authentication) a valid signature from an
 * allow-listed key and a fresh counter, joins the current batch; everything
 * else (check-ins, leaves, evaluation results, secure-aggregation messages,
 * updates for tasks the worker has not seen or that fail a check) is
 * forwarded unchanged to the server, which decides and logs. A batch holds
 * the updates of one round and model version; it is sent as one PARTIAL
 * (signed with the worker's key) when it reaches max_batch updates, flush_s
 * seconds after its first update, or when an update of another round
 * arrives. The server checks every entry again (ef_server_add_aggregator).
 */
#ifndef EDGEFL_WORKER_H
#define EDGEFL_WORKER_H

#include "edgefl/wire.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ef_worker_config {
    uint64_t job;
    uint32_t id;              /* the worker's id (registered at the server) */
    size_t n_params;          /* model size */
    uint32_t max_batch;       /* updates per PARTIAL (default 32) */
    double flush_s;           /* send a batch this long after its first update (default 0.2) */
    const uint8_t *sign_key;  /* the worker's Ed25519 secret key; NULL: unsigned */
    const uint8_t *server_pk; /* verify observed server messages; NULL: not checked */
    int authenticate;         /* batch only updates signed by allow-listed clients */
    uint64_t first_seq;       /* first message counter (time-based in deployments) */
} ef_worker_config;

typedef struct ef_worker_stats {
    uint64_t batched;    /* updates added to partials */
    uint64_t forwarded;  /* messages passed on to the server unchanged */
    uint64_t partials;   /* PARTIAL messages sent */
    uint64_t refused;    /* observed server messages that did not verify, or malformed input */
    uint64_t duplicates; /* copies of updates already batched, dropped */
} ef_worker_stats;

typedef struct ef_worker ef_worker;

/* Creates a worker (validates the config; zero fields take the defaults). */
EF_API ef_status ef_worker_new(ef_worker **out, const ef_worker_config *cfg);
/* Frees it (any open batch is dropped: flush first). NULL is a no-op. */
EF_API void ef_worker_free(ef_worker *w);

/* Allow-lists client `id` with Ed25519 key pk (cfg.authenticate). */
EF_API ef_status ef_worker_allow(ef_worker *w, uint32_t id, const uint8_t pk[EF_PK_BYTES]);

/* A server message addressed to client `to` (read from its inbox): a TASK
 * records the client's open task; other types are ignored. A message that
 * is malformed, of another job or not signed by server_pk is refused. */
EF_API ef_status ef_worker_observe(ef_worker *w, uint32_t to, const uint8_t *msg, size_t len);

/*
 * A message from the shared server inbox at time `now`: batched, or queued
 * in `out` (to EF_SERVER_ID) unchanged. A full batch or one of another round
 * is flushed into `out` as a PARTIAL. Fails only with EF_ERR_NOMEM.
 */
EF_API ef_status ef_worker_handle(ef_worker *w, double now, const uint8_t *msg, size_t len,
                                  ef_outbox *out);

/* Sends the open batch if it is due at `now` (or at once with force). */
EF_API ef_status ef_worker_tick(ef_worker *w, double now, int force, ef_outbox *out);

/* When the open batch is due, or INFINITY. */
EF_API double ef_worker_next_timer(const ef_worker *w);

/* Counters since creation. */
EF_API ef_worker_stats ef_worker_get_stats(const ef_worker *w);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_WORKER_H */
