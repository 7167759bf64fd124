/*
 * The edge gateway of hierarchical federated learning as a pure state
 * machine: no sockets, no threads, no clock of its own (like ef_server).
 *
 * A gateway sits between one upstream server and a group of local clients
 * (a factory with 50 cameras, a home hub). To the upstream server it is ONE
 * ordinary client: id cfg.id, signing with its own key, announcing the sum
 * of its online local clients' examples. To its local clients it is the
 * server: they check in with it, take its models and tasks (sender
 * EF_SERVER_ID, signed with the gateway's key) and send it their updates.
 * Each upstream task becomes one local round whose weighted mean goes
 * upstream as a single UPDATE, so with FedAvg a two-level run gives the
 * model a flat run over the same clients gives (up to the float rounding of
 * the gateway's mean; see docs/deploy.md, "Hierarchical aggregation").
 *
 * Messages in both directions go through ONE outbox: an entry whose `to` is
 * EF_SERVER_ID goes upstream (the upstream server's inbox), any other `to`
 * is a local client id. (Client ids are below EF_BROADCAST_ID, so the two
 * never mix.)
 *
 * Upstream (ef_gateway_handle_upstream): MODEL (kept until the task that
 * names it is over), TASK (checked against the model's version and hash as
 * ef_client does, then forwarded), EVAL (forwarded; the counts are summed
 * and answered once). SA_SETUP and the other secure-aggregation messages
 * are refused with EF_ERR_UNSUPPORTED: nested secure aggregation is not
 * supported (the gateway would have to see its clients' updates in the
 * clear to form its partial sum; SecAgg+ between a gateway and its clients
 * is future work).
 *
 * A local round: on an upstream TASK the gateway picks its idle online
 * local clients with training data (all of them, or max_local chosen at
 * random with the seeded RNG, candidates in id order), sends each the model
 * and a task of its own (its own message counter and task id; the upstream
 * task's training settings; a per-client seed from ef_gateway_task_seed;
 * deadline_s = deadline_fraction x the upstream task's deadline, 0: none).
 * It validates each local UPDATE as the server does (open task id, model
 * version, round, size, finite values, n_examples > 0) and accumulates
 * sum n_i delta_i and sum n_i in double. When every picked client has
 * answered or left, or at the local deadline, it sends ONE UPDATE upstream
 * for the upstream task (envelope task = the upstream task id):
 *   n_examples = sum n_i, delta = (float)(sum n_i delta_i / sum n_i),
 *   train_loss = example-weighted mean of the local losses,
 *   steps = the largest local step count (the local clients train in
 *           parallel: the longest is the task's critical path).
 * With no accepted local update it sends nothing: the upstream server sees
 * this gateway drop out, ef_gateway_note says why and it is logged at
 * warning level. A new upstream TASK or EVAL while a local round is open
 * ends that round without an answer (the server has moved on).
 *
 * Evaluation: an upstream EVAL goes to the idle online local clients with
 * evaluation data (max_local applies); their EVAL_RESULT counts are summed
 * and sent upstream once, when all answered or left or at the local
 * deadline (deadline_fraction x the deadline of the last upstream task:
 * the server gives evaluations its round deadline). Nothing is sent when no
 * local client answered.
 *
 * Check-in upstream: once min_local local clients are online the gateway
 * sends a CHECKIN with the sums of their n_train and n_eval (saturated at
 * 2^32 - 1). It announces again when a sum moves by more than
 * recheckin_change of the announced value, or to or from zero, but only
 * while it holds no upstream task or evaluation: the server takes a CHECKIN
 * from a client with a task as a restart and would cancel the task. (A
 * CHECKIN can still cross a TASK the server has just sent: the gateway then
 * sits that round out. Hence announcements only on large changes.)
 *
 * Local clients are tracked as the server tracks its clients: with
 * cfg.authenticate every local message must be signed by its sender's key
 * on the allow-list (ef_gateway_allow) with a message counter above the
 * last one seen; a CHECKIN from a client with an open task is a restart
 * (the task is lost); LEAVE takes it offline. Refused messages change
 * nothing and return a status with the reason in ef_last_error.
 *
 * Upstream messages are verified when cfg.server_pk is set, as ef_client
 * does: signed by that key and, MODEL excepted, a counter above the last.
 */
#ifndef EDGEFL_GATEWAY_H
#define EDGEFL_GATEWAY_H

#include "edgefl/wire.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ef_gateway_config {
    uint64_t job;               /* job id, upstream and local */
    uint32_t id;                /* the gateway's client id upstream (< EF_BROADCAST_ID) */
    size_t n_params;            /* model size (> 0) */
    uint32_t min_local;         /* local clients online before the first upstream
                                 * check-in (0 counts as 1) */
    uint32_t max_local;         /* local clients per task or evaluation (0: every
                                 * eligible one) */
    double deadline_fraction;   /* local deadline = this x the upstream deadline,
                                 * in (0, 1] (default 0.8): the partial must reach
                                 * the server before its own deadline */
    double recheckin_change;    /* announce again when a sum changes by more than this
                                 * fraction of the announced value (default 0.5, >= 0) */
    uint64_t seed;              /* selection among the local clients */
    size_t max_message;         /* largest local payload accepted (0: model + 1 KiB) */
    /* Authentication (deployments; see docs/deploy.md). sign_key: the
     * gateway's Ed25519 secret key (EF_SK_BYTES, copied into locked
     * memory): every message it sends, upstream and local, is signed.
     * server_pk: the upstream server's public key (NULL: unchecked).
     * authenticate: local messages must be signed by an allow-listed key
     * with a fresh counter. */
    const uint8_t *sign_key;
    const uint8_t *server_pk;
    int authenticate;
    /* First value of the gateway's message counter, one counter for both
     * directions (task ids are its seqs). A restarted gateway must not
     * reuse counters: deployments pass a time-based value. */
    uint64_t first_seq;
} ef_gateway_config;

/* Defaults: min_local 1, max_local 0 (all), deadline_fraction 0.8,
 * recheckin_change 0.5, no authentication. job, id and n_params are 0 and
 * must be set. */
EF_API ef_gateway_config ef_gateway_defaults(void);

/* What the gateway has done since creation (for logs and tests). */
typedef struct ef_gateway_stats {
    uint64_t checkins_sent;     /* CHECKINs sent upstream */
    uint64_t tasks;             /* upstream tasks taken on */
    uint64_t local_tasks;       /* TASKs sent to local clients */
    uint64_t updates_received;  /* local updates accepted into a partial */
    uint64_t updates_rejected;  /* local UPDATE messages refused */
    uint64_t local_late;        /* local tasks still open at a local deadline */
    uint64_t local_dropped;     /* local tasks lost to a LEAVE or a restart */
    uint64_t partials_sent;     /* UPDATEs sent upstream */
    uint64_t partials_skipped;  /* upstream tasks that ended with nothing to send */
    uint64_t evals;             /* upstream evaluations taken on */
    uint64_t eval_results_sent; /* EVAL_RESULTs sent upstream */
    uint64_t abandoned;         /* local rounds cut short by a newer upstream task */
    uint64_t refused_local;     /* local messages refused (any type) */
    uint64_t refused_upstream;  /* upstream messages refused */
} ef_gateway_stats;

typedef struct ef_gateway ef_gateway;

/* Creates a gateway (no message sent yet). Validates the configuration:
 * EF_ERR_INVALID with the reason. Free with ef_gateway_free. */
EF_API ef_status ef_gateway_new(ef_gateway **out, const ef_gateway_config *cfg);

/* Frees the gateway and any model it holds. NULL is a no-op. */
EF_API void ef_gateway_free(ef_gateway *g);

/* Puts local client `id` with Ed25519 public key pk on the allow-list (used
 * when cfg.authenticate is set); it is offline until it checks in.
 * EF_ERR_INVALID for a reserved id or an id that already has another key. */
EF_API ef_status ef_gateway_allow(ef_gateway *g, uint32_t id, const uint8_t pk[EF_PK_BYTES]);

/*
 * Handles one message from the upstream server at time `now` (seconds,
 * non-decreasing, the same clock as ef_gateway_handle_local). The gateway
 * takes a reference to `msg` when it keeps it (a MODEL); the caller keeps
 * its own. Output (local tasks) goes to `out`. A malformed, foreign,
 * unsigned, replayed or unexpected message is refused with a status and
 * changes nothing; SA_SETUP and the other secure-aggregation messages give
 * EF_ERR_UNSUPPORTED. An upstream task that no local client can take is
 * not an error: nothing is sent and ef_gateway_note says why.
 */
EF_API ef_status ef_gateway_handle_upstream(ef_gateway *g, double now, ef_buf *msg,
                                            ef_outbox *out);

/*
 * Handles one message (`len` bytes) from a local client at time `now`:
 * CHECKIN, UPDATE, EVAL_RESULT, LEAVE. Output (a partial or evaluation
 * result upstream, a CHECKIN upstream) goes to `out`. A malformed, foreign,
 * unauthenticated, stale or duplicate message is refused: the status says
 * why (ef_last_error has the detail) and the partial does not change. A
 * refused update that ends its sender's task (non-finite values, no
 * examples) can still complete the local round, so drivers send `out`
 * whatever the status. Fails on valid input only with EF_ERR_NOMEM.
 */
EF_API ef_status ef_gateway_handle_local(ef_gateway *g, double now, const uint8_t *msg,
                                         size_t len, ef_outbox *out);

/* Runs what is due at `now`: closes a local round or evaluation at its
 * deadline (sending the partial, if any). Call it whenever now reaches
 * ef_gateway_next_timer. */
EF_API ef_status ef_gateway_tick(ef_gateway *g, double now, ef_outbox *out);

/* Time of the next local deadline, or INFINITY. */
EF_API double ef_gateway_next_timer(const ef_gateway *g);

/* Queues a CHECKIN upstream with the current sums (e.g. after the upstream
 * connection lost its session). EF_ERR_STATE (nothing queued) while fewer
 * than min_local local clients are online. */
EF_API ef_status ef_gateway_checkin(ef_gateway *g, ef_outbox *out);

/* Queues a LEAVE upstream (the gateway going away; over MQTT, its last
 * will). Any local round in progress ends without an answer. */
EF_API ef_status ef_gateway_leave(ef_gateway *g, uint32_t reason, ef_outbox *out);

/* Continues the gateway's message counter at first_seq: the next message
 * it sends carries first_seq + 1. For a driver whose last will, sealed
 * with a counter above the current run, may have been published (see
 * EF_MQTT_WILL_GAP in transport.h): the messages after it must outrank it,
 * upstream and local. Counters never go back: EF_ERR_INVALID (nothing
 * changes) when first_seq is below the last counter used. */
EF_API ef_status ef_gateway_set_seq(ef_gateway *g, uint64_t first_seq);

/* The training seed a local client gets for an upstream task seed:
 * a splitmix64 finalizer of upstream_seed ^ (client_id + 1) x 2^64/phi,
 * so that local clients of one task draw different batches and the same
 * task and client always give the same seed. */
EF_API uint64_t ef_gateway_task_seed(uint64_t upstream_seed, uint32_t client_id);

/* The counts so far. */
EF_API void ef_gateway_get_stats(const ef_gateway *g, ef_gateway_stats *out);

/* Local clients online (checked in, not left) and known (ever seen or
 * allow-listed). */
EF_API size_t ef_gateway_online(const ef_gateway *g);
EF_API size_t ef_gateway_known(const ef_gateway *g);

/* The last notable event as a sentence (e.g. why nothing went upstream for a
 * task), owned by the gateway; "" when there was none. */
EF_API const char *ef_gateway_note(const ef_gateway *g);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_GATEWAY_H */
