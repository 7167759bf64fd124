/*
 * The engine of `edgefl loadgen`: N light federated clients in one
 * process, each with its own MQTT connection (its own client id,
 * persistent session, inbox subscription and last will), so the broker and
 * the server see N real clients. A light client speaks the client side of
 * the plain protocol on the wire exactly as `edgefl client` does (CHECKIN
 * once a server has announced itself, UPDATE for a TASK, EVAL_RESULT for an
 * EVAL, LEAVE when it goes, its LEAVE as its will, message counters and
 * Ed25519 signatures, a new counter run after a new broker session), but
 * trains with a caller's trainer (the synthetic one: no data, no model) and
 * checks a task's model against a hash computed once per process instead
 * of once per client. Secure aggregation tasks are refused (counted).
 *
 * The global model is held once per process, the newest two versions.
 * Default: one extra connection subscribes to edgefl/<job>/broadcast/# for
 * the whole process (the clients' own connections carry their inboxes and
 * updates). full_fanout: every client subscribes to the broadcast itself,
 * as real devices do -- the broker then sends the model N times and each
 * connection reassembles its own copy before the process drops the
 * duplicates: N models in flight at once.
 *
 * Threads: each connection has its network thread (src/transport/mqtt.c);
 * `threads` workers poll a share of the clients each, run their tasks and
 * publish; a reader thread serves the shared broadcast connection. A task
 * runs `compute_s` after it arrived (without blocking other clients), then
 * waits for one of `upload_window` upload slots: at most that many clients
 * have updates the broker has not yet acknowledged, which bounds the memory
 * libmosquitto holds for outgoing updates (window x update size).
 */
#ifndef EDGEFL_CLI_LOADGEN_H
#define EDGEFL_CLI_LOADGEN_H

#include "edgefl/transport.h"

typedef struct lg_config {
    ef_mqtt_config mqtt;        /* broker, TLS, credentials, tuning; the client id, log
                                 * name and will are set per client */
    uint64_t job;
    uint32_t first_id, n_clients; /* client ids first_id .. first_id + n_clients - 1 */
    size_t n_params;            /* model size the clients expect */
    int full_fanout;
    int threads;                /* worker threads, >= 1 */
    double compute_s;           /* emulated device time per task */
    uint32_t upload_window;     /* 0: no limit */
    uint64_t max_tasks;         /* per client: leave after this many answers; 0: run */
    ef_trainer trainer;         /* fit and evaluate (called from the workers) */
    const uint32_t *n_train;    /* per client (index id - first_id): reported examples */
    uint32_t n_eval;            /* held-out examples reported by every client */
    const uint8_t *const *keys; /* per client: Ed25519 secret key (EF_SK_BYTES), or NULL */
    const uint8_t *server_pk;   /* accept only messages signed by this key; NULL: unchecked */
} lg_config;

typedef struct lg lg;

/* One round as the light clients saw it (times in seconds since lg_new). */
typedef struct lg_round {
    uint32_t round;
    uint32_t tasks, updates, evals;  /* tasks received, updates and results sent */
    double first_task, last_task;    /* arrivals of its tasks */
    double first_update, last_update; /* publishes of its updates */
    double lat_p50, lat_max;         /* task arrival -> update published, per client */
} lg_round;

typedef struct lg_stats {
    uint32_t clients;
    uint32_t connected;         /* connections up now */
    uint32_t ever_connected;    /* clients connected at least once */
    double all_connected_s;     /* seconds from lg_new until every client had connected
                                 * (-1: not yet) */
    uint32_t done;              /* clients that left after max_tasks */
    uint64_t checkins, tasks, updates, evals, refused, superseded, renewals, leaves;
    uint64_t bytes_out;         /* protocol messages published by the clients */
    uint64_t models, model_dups; /* model versions taken in; copies dropped as duplicates */
    uint32_t window_used;
    uint32_t round;             /* newest round a task arrived for */
    char server[96];            /* the server's announcement ("" until one came) */
    /* summed over the clients' connections (lg_stop fills them; 0 before) */
    uint64_t mqtt_connects, mqtt_messages_in, mqtt_bytes_in, mqtt_chunks_out,
        mqtt_publish_refused, mqtt_chunks_rejected, mqtt_partial_dropped;
} lg_stats;

/*
 * Opens the connections (they connect in the background) and, without
 * full_fanout, the shared broadcast connection. Client ids on the broker:
 * edgefl-<job>-client-<id> (as `edgefl client`), the shared one
 * edgefl-<job>-loadgen-<first_id>-broadcast. The config's arrays must
 * outlive g. EF_ERR_INVALID (with ef_last_error) for a bad config.
 */
ef_status lg_new(lg **out, const lg_config *cfg);

/* Starts the worker and reader threads. */
ef_status lg_start(lg *g);

/* 1 once every client has left after max_tasks answers. */
int lg_finished(lg *g);

/* A fatal error in a worker (out of memory, a failing publish): its status,
 * message in `msg` (n bytes); EF_OK while none. */
ef_status lg_failed(lg *g, char *msg, size_t n);

/* Current counters (cheap enough to call every second). */
void lg_get_stats(lg *g, lg_stats *out);

/* The rounds seen so far, in order: copies up to `cap` into out, returns how
 * many there are. */
size_t lg_rounds(lg *g, lg_round *out, size_t cap);

/*
 * Stops the workers; every client still in sends LEAVE; waits up to
 * timeout_s for the broker to acknowledge what the clients published; fills
 * the connection totals of lg_get_stats; closes every connection (ending
 * its session: the clients are gone for good), many at a time.
 */
void lg_stop(lg *g, double timeout_s);

/* Frees g (calls lg_stop if needed). NULL is a no-op. */
void lg_free(lg *g);

#endif /* EDGEFL_CLI_LOADGEN_H */
