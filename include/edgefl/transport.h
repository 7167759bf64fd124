/*
 * The MQTT transport: a connection to an MQTT 5 broker (libmosquitto) and
 * the drivers that run the protocol core over it -- the server driver (an
 * ef_server), the client driver (an ef_client) and the gateway driver (an
 * ef_gateway, hierarchical aggregation; at the end). The core stays
 * sans-I/O; everything about sockets, threads, time and the broker lives
 * here. See docs/deploy.md, "Running a job over MQTT".
 *
 * Connection (ef_mqtt): MQTT 5 over TCP (mqtt://HOST:PORT) or TLS 1.2+
 * (mqtts://HOST:PORT; the broker's certificate is verified against a CA
 * file and its name against HOST; optional client certificate). Every
 * message is QoS 1. The session is persistent (clean start off, session
 * expiry): a client that comes back within the expiry finds its
 * subscriptions and the QoS 1 messages queued while it was away. A network
 * thread of our own drives libmosquitto (keepalives, acknowledgements,
 * reconnects with exponential backoff and jitter, re-subscription), so a
 * main thread busy training never misses a keepalive; received messages
 * wait in a thread-safe queue read with ef_mqtt_next.
 *
 * Payloads of any size: a message larger than one MQTT packet may carry
 * (the smaller of the configured cap and the broker's maximum packet size
 * from CONNACK) is split into chunks, each with a 44-byte header, and put
 * together again on receipt:
 *
 *   off size field
 *     0    4 magic     "EFC1"
 *     4    1 version   1
 *     5    1 flags     bit 0: retained chunk, published on TOPIC/<index>
 *     6    2 reserved  0
 *     8    8 msg_id    random per sender process, then counting
 *    16    8 total     bytes of the whole message
 *    24    4 index     0..count-1
 *    28    4 count     ceil(total / stride)
 *    32    4 stride    bytes per chunk (the last one carries the rest)
 *    36    4 msg_crc   CRC-32 of the whole message
 *    40    4 crc       CRC-32 of bytes 0..39 and of this chunk's data
 *    44    . data      bytes [index * stride, ...) of the message
 *
 * A retained message (the broadcast model) that needs chunks is retained
 * as TOPIC/0 .. TOPIC/count-1, so a subscription to TOPIC/# receives both
 * forms. Reassembly holds at most max_pending bytes of incomplete messages
 * (the oldest are dropped first), drops a message whose chunks stop coming
 * for chunk_timeout_s, and refuses chunks that disagree with the header
 * checksum, with each other or with the message checksum, logging why.
 * Empty payloads (MQTT's way to delete a retained message) are not
 * delivered.
 *
 * Topics of a job (job id in decimal):
 *   edgefl/<job>/server            the server's inbox (every client publishes here)
 *   edgefl/<job>/client/<id>       one client's inbox
 *   edgefl/<job>/broadcast         the global model, retained (per version);
 *   edgefl/<job>/broadcast/<i>     ... its chunks when it is larger than a packet
 *   edgefl/<job>/broadcast/online  the server's announcement, retained:
 *                                  "edgefl-server <instance> fresh|resumed"
 *   edgefl/<job>/server/workers    with aggregator workers: what they send the
 *                                  server (PARTIALs and the messages they pass
 *                                  on); the server reads it instead of its inbox
 * Clients read edgefl/<job>/broadcast/# and their inbox, and write the
 * server inbox; the server writes the rest. Aggregator workers read the
 * server inbox through a shared subscription ($share/<group>/edgefl/<job>/
 * server) and the client inboxes, and write edgefl/<job>/server/workers
 * (see "scale-out aggregator workers" below).
 *
 * Logging goes through ef_log (stderr by default): connection changes at
 * info, refused chunks and messages at warning. Passwords and key material
 * are never logged.
 */
#ifndef EDGEFL_TRANSPORT_H
#define EDGEFL_TRANSPORT_H

#include <signal.h>

#include "edgefl/client.h"
#include "edgefl/gateway.h"
#include "edgefl/server.h"
#include "edgefl/wire.h"
#include "edgefl/worker.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the connection ------------------------------------------------------- */

#define EF_MQTT_DEFAULT_MAX_PACKET (256u * 1024u)
#define EF_MQTT_CHUNK_HEADER 44

typedef struct ef_mqtt_config {
    const char *url;            /* mqtt://HOST:PORT or mqtts://HOST:PORT (ports default to
                                 * 1883 and 8883; HOST may be [IPv6]) */
    const char *client_id;      /* required: the key of the persistent session */
    const char *username;       /* optional */
    const char *password;       /* optional; never logged */
    const char *tls_ca;         /* mqtts: CA file (PEM); NULL: the system's CAs */
    const char *tls_cert;       /* mqtts: client certificate (PEM), with tls_key */
    const char *tls_key;        /* mqtts: client private key (PEM), with tls_cert */
    int keepalive_s;            /* PINGREQ interval (default 30, >= 5) */
    uint32_t session_expiry_s;  /* how long the broker keeps the session after a
                                 * disconnect (default 600) */
    int clean_start;            /* 1: discard any session the broker holds for this id
                                 * at every connect (default 0: persistent) */
    size_t max_packet;          /* largest MQTT packet sent; larger messages are chunked
                                 * (default EF_MQTT_DEFAULT_MAX_PACKET, >= 1024; lowered to
                                 * the broker's maximum packet size) */
    size_t max_message;         /* largest message reassembled (default 1 GiB) */
    size_t max_pending;         /* bytes of incomplete messages held (default 1 GiB) */
    size_t max_queue;           /* bytes of received messages waiting for ef_mqtt_next
                                 * before the network thread waits for the reader
                                 * (default 2 GiB) */
    double chunk_timeout_s;     /* an incomplete message is dropped after this long
                                 * without a new chunk (default 120) */
    double reconnect_min_s;     /* first reconnect delay (default 0.5) */
    double reconnect_max_s;     /* backoff cap (default 30); each delay is drawn
                                 * uniformly from [d/2, d] ("equal jitter") */
    double connect_timeout_s;   /* no CONNACK within this long: try again (default 30) */
    /* Last will: published by the broker when this connection ends without a
     * DISCONNECT and the session ends or will_delay_s passes, whichever is
     * first. Copied; NULL topic: none. */
    const char *will_topic;
    const uint8_t *will;
    size_t will_len;
    uint32_t will_delay_s;      /* default: the session expiry, so the will fires exactly
                                 * when the broker gives up the session */
    const char *name;           /* prefix of log lines, e.g. "client 17" (default the id) */
} ef_mqtt_config;

/* Defaults for the fields above (url and client_id NULL). */
EF_API ef_mqtt_config ef_mqtt_defaults(void);

typedef struct ef_mqtt ef_mqtt;

/*
 * Checks the configuration, creates the connection and starts its network
 * thread, which connects (and reconnects) in the background: use
 * ef_mqtt_next or ef_mqtt_wait_connected to learn when it is up. Strings
 * and the will are copied. EF_ERR_INVALID for a bad URL or option, with the
 * reason in ef_last_error. Free with ef_mqtt_close.
 */
EF_API ef_status ef_mqtt_new(ef_mqtt **out, const ef_mqtt_config *cfg);

/*
 * Subscribes to `filter` (MQTT wildcards allowed) at QoS 1, now if
 * connected and again on every connection. A connection sends its
 * SUBSCRIBEs before its CONNECTED event is queued, so what the application
 * publishes after that event reaches the broker after them (the broker
 * handles a connection's packets in order). A refused subscription is
 * logged as an error.
 */
EF_API ef_status ef_mqtt_subscribe(ef_mqtt *m, const char *filter);

/*
 * Publishes `len` bytes to `topic` at QoS 1 (copied; returns once queued).
 * Larger than a packet: sent as chunks; with `retain`, chunks are retained
 * as topic/<index> and leftovers of an earlier retained message on the
 * topic (other form or more chunks) are deleted. Messages published while
 * disconnected are sent after the reconnect. EF_ERR_INVALID for a bad
 * topic, EF_ERR_STATE once the connection is closing.
 */
EF_API ef_status ef_mqtt_publish(ef_mqtt *m, const char *topic, const void *data, size_t len,
                                 int retain);

/*
 * Replaces the last will for the next connection (the current one keeps the
 * will it was opened with: MQTT fixes it at CONNECT). Copied. NULL topic:
 * no will.
 */
EF_API ef_status ef_mqtt_set_will(ef_mqtt *m, const char *topic, const void *data, size_t len);

/* Deletes the retained message on `topic` (both forms). */
EF_API ef_status ef_mqtt_clear_retained(ef_mqtt *m, const char *topic);

typedef enum ef_mqtt_event {
    EF_MQTT_NONE = 0,      /* the wait timed out */
    EF_MQTT_MESSAGE = 1,   /* a message arrived */
    EF_MQTT_CONNECTED = 2  /* a connection is up (before any message it brings) */
} ef_mqtt_event;

typedef struct ef_mqtt_msg {
    ef_mqtt_event event;
    char *topic;           /* MESSAGE: its topic (a retained chunked message: without the
                            * /<index>); owned, released by ef_mqtt_msg_clear */
    ef_buf *buf;           /* MESSAGE: the payload, one reference owned by the msg */
    int retained;          /* MESSAGE: delivered from the broker's retained store */
    int session_present;   /* CONNECTED: the broker resumed an earlier session (queued
                            * messages follow); 0: a new session, anything published to
                            * this client while it was away is lost */
    uint64_t connection;   /* CONNECTED: 1 for the first connection, then 2, 3, ... */
} ef_mqtt_msg;

/*
 * Waits up to timeout_s (0: do not wait) for the next event. EF_OK with
 * out->event EF_MQTT_NONE when nothing came. Release out with
 * ef_mqtt_msg_clear. Call from one thread.
 */
EF_API ef_status ef_mqtt_next(ef_mqtt *m, double timeout_s, ef_mqtt_msg *out);

/* Frees a message's topic and drops its buffer; the msg is zeroed. */
EF_API void ef_mqtt_msg_clear(ef_mqtt_msg *msg);

/* Waits until connected (1) or timeout_s passes (0). Does not consume events. */
EF_API int ef_mqtt_wait_connected(ef_mqtt *m, double timeout_s);

/*
 * Waits until every message published so far has been acknowledged by the
 * broker (PUBACK), or timeout_s passes: EF_OK or EF_ERR_STATE (timeout).
 */
EF_API ef_status ef_mqtt_flush(ef_mqtt *m, double timeout_s);

/* Counters of a connection (for logs and tests). */
typedef struct ef_mqtt_stats {
    uint64_t connects;          /* CONNACKs accepted */
    uint64_t messages_in, bytes_in;   /* delivered to the queue (after reassembly) */
    uint64_t messages_out, bytes_out; /* published (before chunking) */
    uint64_t chunks_in, chunks_out;
    uint64_t chunks_rejected;   /* malformed or inconsistent chunks, failed messages */
    uint64_t partial_dropped;   /* incomplete messages given up (timeout, memory) */
    uint64_t publish_refused;   /* PUBACKs with an error reason (e.g. not authorized) */
    size_t max_packet;          /* the packet size limit in force */
} ef_mqtt_stats;

EF_API void ef_mqtt_get_stats(ef_mqtt *m, ef_mqtt_stats *out);

/*
 * Disconnects and frees. With end_session the broker discards the session
 * (session expiry 0 on DISCONNECT); otherwise it keeps it for the expiry.
 * A normal DISCONNECT cancels the last will. Waits up to 2 s for the
 * DISCONNECT to go out; call ef_mqtt_flush first to be sure earlier
 * publishes arrived. NULL is a no-op.
 */
EF_API void ef_mqtt_close(ef_mqtt *m, int end_session);

/* ---- topics --------------------------------------------------------------- */

/*
 * Writes the topic of recipient `to` of job `job` into buf (n bytes, 64 is
 * always enough): EF_SERVER_ID -> edgefl/<job>/server, EF_BROADCAST_ID ->
 * edgefl/<job>/broadcast, a client id -> edgefl/<job>/client/<id>.
 * Returns buf.
 */
EF_API const char *ef_mqtt_topic(char *buf, size_t n, uint64_t job, uint32_t to);

/* edgefl/<job>/broadcast/online, where a server announces itself. */
EF_API const char *ef_mqtt_online_topic(char *buf, size_t n, uint64_t job);

/* ---- drivers -------------------------------------------------------------- */

struct ef_mqtt_server_stats;

typedef struct ef_mqtt_server_opts {
    uint64_t job;
    /* Polled between messages; a non-zero value stops the run (EF_ERR_STATE,
     * "interrupted"). May be NULL. */
    const volatile sig_atomic_t *stop;
    /* Called after a message or timer that finished one or more rounds, once
     * the resulting messages are published (a consistent point for
     * checkpoints), with the counters so far. A non-OK return stops the run
     * with that status. */
    ef_status (*after_round)(void *user, ef_server *s, const struct ef_mqtt_server_stats *st);
    void *user;
    /* Keep the retained model when the run ends (0: delete it). */
    int keep_retained;
    /* This run's token in the server announcement (0: the wall clock in
     * microseconds). */
    uint64_t instance;
    /* The topic the server reads instead of edgefl/<job>/server (no
     * wildcards; it must stay valid during the run). With aggregator workers it is
     * ef_mqtt_workers_topic: the workers take the inbox and pass everything
     * on there, so reading both would deliver every message twice. NULL:
     * the inbox. */
    const char *inbox_topic;
} ef_mqtt_server_opts;

typedef struct ef_mqtt_server_stats {
    uint64_t messages_in;       /* protocol messages handed to the server */
    uint64_t refused;           /* of which the server refused */
    uint64_t updates_received;  /* UPDATE and SA_MASKED messages */
    uint64_t updates_rejected;  /* of which refused */
    uint64_t messages_out;      /* messages published (the broadcast model counts once) */
    uint64_t bytes_out;
    uint64_t bytes_in;
    uint64_t models_broadcast;  /* model versions published to the broadcast topic */
    double wall_s;
    uint64_t partials_received; /* PARTIAL messages from aggregator workers */
} ef_mqtt_server_stats;

/*
 * Runs server `s` over connection `m` until ef_server_done (EF_OK) or stop.
 * Subscribes to the server inbox (or o->inbox_topic) and, once subscribed,
 * announces itself on edgefl/<job>/broadcast/online (retained; "fresh", or "resumed" for a
 * server restored from a checkpoint, which then waits 2 s for the messages
 * queued in its session and ticks once: its clients are online already).
 * Feeds every message with the seconds since the start (monotonic clock),
 * ticks at ef_server_next_timer, and
 * publishes the outbox: a MODEL once per version to the broadcast topic,
 * retained (the core addresses the same buffer to every selected client);
 * everything else to the addressed client's inbox. Every refused message is
 * counted and logged with the reason ("rejected update from 17: ..."); every
 * accepted update is logged at debug level ("accepted update from 17 for
 * round 3").
 * When the broker lost the server's session, the model is published again
 * (its retained copy may be gone). At the end the retained model is deleted
 * (unless keep_retained), so is the announcement, and the publishes
 * flushed; closing the connection
 * is the caller's. Returns EF_ERR_NOMEM (or a failing after_round status) on fatal errors,
 * EF_ERR_INVALID for an inbox_topic with wildcards.
 * `stats` (may be NULL) is filled in either case.
 */
EF_API ef_status ef_mqtt_run_server(ef_mqtt *m, ef_server *s, const ef_mqtt_server_opts *o,
                                    ef_mqtt_server_stats *stats);

/*
 * A client's last will and message counters. With authentication the server
 * refuses a message whose counter is not above the last one it saw from the
 * sender, and a will is sealed when the connection opens, before the
 * messages it must outrank. So a client's will carries the counter
 * first_seq + EF_MQTT_WILL_GAP, above every message of the client's current
 * counter run (2^24 messages), and when a connection comes back on a new
 * session -- the broker may have published the will meanwhile -- the client
 * driver starts a new run above that will (a fresh ef_client with first_seq
 * = will + 1) and arms the next will for later connections. A restarted
 * process starts its counter at the wall clock in microseconds
 * (ef_mqtt_clock_seq): a will fires only after the session expiry, so keep
 * that above 17 s (2^24 microseconds).
 */
#define EF_MQTT_WILL_GAP ((uint64_t)1 << 24)

/* Microseconds since the Unix epoch: a first_seq no earlier run has used. */
EF_API uint64_t ef_mqtt_clock_seq(void);

/*
 * The LEAVE (reason 1) that client `cc` leaves as its last will: counter
 * cc->first_seq + EF_MQTT_WILL_GAP, signed with cc->sign_key when set.
 * *out holds one reference.
 */
EF_API ef_status ef_mqtt_client_will(const ef_client_config *cc, ef_buf **out);

typedef struct ef_mqtt_client_opts {
    /* Polled between messages (and after each task): non-zero ends the run
     * with a LEAVE. May be NULL. */
    const volatile sig_atomic_t *stop;
    /* Optional: stop (with a LEAVE) after this many answered tasks
     * (trainings and evaluations); 0: no limit. */
    uint64_t max_tasks;
    /* Optional: hold every update (UPDATE or SA_MASKED) this many seconds
     * after computing it, before publishing it: a slow device, for tests and
     * demonstrations of stragglers, deadlines and dropouts. Nothing else is
     * read or answered meanwhile (as during training); stop ends the wait
     * and the update is still sent. 0: none. */
    double answer_delay_s;
} ef_mqtt_client_opts;

typedef struct ef_mqtt_client_stats {
    uint64_t checkins;
    uint64_t tasks;             /* training tasks answered */
    uint64_t evals;             /* evaluation tasks answered */
    uint64_t refused;           /* server messages the client refused */
    uint64_t superseded;        /* tasks given up because a newer one or model came */
    uint64_t renewals;          /* new counter runs after a new session */
    uint64_t bytes_out;
    double train_s;             /* seconds spent in the trainer */
} ef_mqtt_client_stats;

/*
 * Runs a client with configuration `cc` and trainer `tr` over connection `m`
 * until stopped. The connection should have been opened with
 * ef_mqtt_client_will(cc) as its will on the server inbox. The driver
 * creates the ef_client (and a new one, with a new counter run, after a
 * reconnect on a new session; see EF_MQTT_WILL_GAP). It subscribes to the
 * client's inbox and to edgefl/<job>/broadcast/#, and checks in once a
 * server has announced itself (a check-in sent before the server subscribed
 * would be lost): after the first connection, after any reconnect that did
 * not resume the session (the broker dropped what was sent meanwhile; a
 * resumed session delivers it, and checking in then would cancel the task
 * the server still counts on), and when a new "fresh" server announces
 * itself (it knows no client; a "resumed" one restored them). Then it
 * answers the server. A TASK, SA_SETUP or EVAL waits until the MODEL it
 * names (version and hash) has arrived on the broadcast topic -- topics are
 * not ordered with each other -- and messages behind it in the inbox wait
 * with it; a newer task supersedes a waiting one, and a task whose model
 * the broadcast has moved past is given up (with a new check-in, so the
 * server moves on). Training runs on the calling thread, so a check-in
 * never overtakes the answer to a task in progress. On stop it publishes a
 * LEAVE, waits for the broker's acknowledgement and returns EF_OK. Server
 * messages the client refuses are counted and logged. Fatal: EF_ERR_NOMEM,
 * a bad configuration, a failing publish.
 */
EF_API ef_status ef_mqtt_run_client(ef_mqtt *m, const ef_client_config *cc, const ef_trainer *tr,
                                    const ef_mqtt_client_opts *o, ef_mqtt_client_stats *stats);

/* ---- gateway driver (hierarchical aggregation) ----------------------------- */

/*
 * An edge gateway (ef_gateway, include/edgefl/gateway.h) over MQTT: the
 * server of its local clients on a local broker and one client of the
 * upstream server. See docs/deploy.md, "Hierarchical aggregation" and
 * "Running a gateway".
 *
 * Topics (job J, gateway id G, upstream prefix P, often "" or "up/"):
 *   local    edgefl/J/server            the gateway's inbox (local clients write it)
 *            edgefl/J/client/<id>       a local client's inbox
 *            edgefl/J/broadcast         the gateway's model, retained, once per version
 *            edgefl/J/broadcast/online  the gateway's announcement, retained:
 *                                       "edgefl-server <instance> fresh"
 *   upstream P edgefl/J/client/G        the gateway's tasks
 *            P edgefl/J/broadcast/#     the upstream model and announcement
 *            P edgefl/J/server          the upstream server's inbox (check-ins,
 *                                       partials, evaluation results, LEAVE)
 * Local clients are ordinary `edgefl client`s pointed at the local broker:
 * to them the gateway is the server (they check in when it announces
 * itself and verify its key). Two ways to reach the upstream server:
 *   (a) a second connection, straight to the upstream broker (prefix "");
 *   (b) the local connection itself with a prefix such as "up/", which the
 *       local broker's bridge maps to the upstream broker's topics
 *       (`topic edgefl/J/server out 1 up/ ""` and the like): pass the same
 *       ef_mqtt as local and upstream. A prefix is required then, or the
 *       two edgefl/J/server topics would be one.
 */

/* What became of one upstream training task (ef_mqtt_gateway_opts.on_task). */
typedef enum ef_mqtt_gateway_outcome {
    EF_MQTT_GATEWAY_SENT = 1,      /* the partial went upstream */
    EF_MQTT_GATEWAY_SKIPPED = 2,   /* no local update: nothing went upstream */
    EF_MQTT_GATEWAY_ABANDONED = 3  /* a newer upstream task or evaluation ended it */
} ef_mqtt_gateway_outcome;

typedef struct ef_mqtt_gateway_report {
    uint32_t round;             /* the upstream task's round */
    uint64_t task;              /* its task id */
    ef_mqtt_gateway_outcome outcome;
    uint32_t asked;             /* local clients sent a task */
    uint32_t answered;          /* local updates accepted into the partial */
    uint32_t rejected;          /* local updates refused */
    uint32_t late;              /* local tasks still open at the local deadline */
    uint32_t dropped;           /* local tasks lost to a LEAVE or a restart */
    uint32_t n_examples;        /* SENT: the partial's example count */
    double seconds;             /* from the task's arrival to its end */
} ef_mqtt_gateway_report;

typedef struct ef_mqtt_gateway_stats {
    uint64_t upstream_in;       /* upstream messages handed to the gateway (models too) */
    uint64_t local_in;          /* local messages handed to the gateway */
    uint64_t refused_upstream;  /* of which refused (logged with the reason) */
    uint64_t refused_local;
    uint64_t checkins;          /* CHECKINs published upstream */
    uint64_t partials;          /* UPDATEs published upstream */
    uint64_t eval_results;      /* EVAL_RESULTs published upstream */
    uint64_t superseded;        /* upstream tasks given up unseen (a newer one came, or the
                                 * broadcast moved past their model) */
    uint64_t renewals;          /* counter runs begun after a new upstream session */
    uint64_t models_broadcast;  /* model versions published on the local broadcast topic */
    uint64_t local_out;         /* messages published to local inboxes */
    uint64_t bytes_up, bytes_local; /* published upstream / locally */
    double wall_s;
} ef_mqtt_gateway_stats;

typedef struct ef_mqtt_gateway_opts {
    /* Polled between messages; non-zero ends the run with a LEAVE upstream.
     * May be NULL. */
    const volatile sig_atomic_t *stop;
    /* Called when an upstream training task ends (partial sent, skipped or
     * abandoned), after the messages that ended it are published. May be
     * NULL. */
    void (*on_task)(void *user, const ef_mqtt_gateway_report *rep,
                    const ef_mqtt_gateway_stats *st);
    void *user;
    /* This run's token in the local announcement (0: the wall clock in
     * microseconds). */
    uint64_t instance;
} ef_mqtt_gateway_opts;

/*
 * The LEAVE (reason 1) gateway `gc` leaves as its last will upstream:
 * counter gc->first_seq + EF_MQTT_WILL_GAP, signed with gc->sign_key when
 * set (the client scheme; see EF_MQTT_WILL_GAP). Open the upstream
 * connection with it as the will on the upstream server inbox (with a
 * prefix, P edgefl/J/server). *out holds one reference.
 */
EF_API ef_status ef_mqtt_gateway_will(const ef_gateway_config *gc, ef_buf **out);

/*
 * Runs gateway `g`, created from configuration `gc` (its job, id, model
 * size, keys and first_seq are read here too), until stop. `upstream` is a
 * second connection (mode a) or the same as `local` (mode b, with a
 * non-empty `upstream_prefix`); NULL counts as `local`. The prefix (NULL:
 * "") goes in front of every upstream topic.
 *
 * Local side: subscribes the gateway's inbox, announces the gateway
 * (retained, "fresh": it restores no local clients) once subscribed and
 * again after a new local session, publishes each model version once,
 * retained, on the local broadcast topic (again after a new local session)
 * and every other local message to its client's inbox.
 *
 * Upstream side, as the client driver (ef_mqtt_run_client): subscribes the
 * gateway's inbox and the upstream broadcast; a TASK or EVAL waits until
 * the MODEL it names has arrived (with gc->server_pk, signed by the
 * server), then goes to the gateway right after that model; a newer task
 * supersedes a waiting one; one whose model the broadcast has moved past
 * is given up with a new check-in. Check-ins go upstream only once the
 * upstream server has announced itself (one sent before it subscribed
 * would be lost): the gateway's first, once enough local clients are
 * online, and a new one after an upstream reconnect on a new session and
 * when a new "fresh" upstream server announces itself. After a new upstream
 * session the gateway continues with a counter run above its will
 * (ef_gateway_set_seq) and arms the next will.
 *
 * Ticks the gateway at ef_gateway_next_timer (local deadlines). Refused
 * messages are counted and logged with the reason. With two connections
 * the loop polls each in turn (a message waits at most 20 ms for the
 * other's turn). On stop: publishes the gateway's LEAVE upstream, deletes
 * the local retained model and announcement, flushes both connections and
 * returns EF_OK; closing them is the caller's. Fatal: EF_ERR_NOMEM, a
 * failing publish, EF_ERR_INVALID for bad arguments. `stats` (may be NULL)
 * is filled in either case.
 */
EF_API ef_status ef_mqtt_run_gateway(ef_mqtt *local, ef_mqtt *upstream,
                                     const char *upstream_prefix, ef_gateway *g,
                                     const ef_gateway_config *gc, const ef_mqtt_gateway_opts *o,
                                     ef_mqtt_gateway_stats *stats);
/* ---- scale-out aggregator workers ------------------------------------------- */

/*
 * Aggregator workers (include/edgefl/worker.h) split the server inbox with
 * an MQTT 5 shared subscription: every worker of a group subscribes to
 * $share/<group>/edgefl/<job>/server and the broker hands each message to
 * one of them. A worker also reads the client inboxes edgefl/<job>/client/+
 * to learn the tasks the server sends (ef_worker_observe), batches the
 * updates that answer them into PARTIAL messages and passes everything else
 * on unchanged. It publishes both to edgefl/<job>/server/workers, which the
 * server then reads instead of its inbox (ef_mqtt_server_opts.inbox_topic).
 *
 * Caveats: a message larger than one packet travels in chunks, and a
 * broker may hand the chunks of one message to different members of the
 * group (mosquitto does), which then cannot put it together: give clients
 * and workers a max_packet above the update size when workers share the
 * inbox. Workers must be subscribed before clients check in (a message to
 * a shared subscription with no member is dropped, unless a member's
 * persistent session holds it).
 */

/* edgefl/<job>/server/workers: where workers send the server their output. */
EF_API const char *ef_mqtt_workers_topic(char *buf, size_t n, uint64_t job);

struct ef_mqtt_worker_stats;

typedef struct ef_mqtt_worker_opts {
    uint64_t job;
    /* The shared-subscription group (share name): 1..64 characters, none of
     * '/', '+', '#'. NULL: "edgefl". */
    const char *group;
    /* Polled between messages; non-zero ends the run (after a flush). May be NULL. */
    const volatile sig_atomic_t *stop;
    /* Called after a PARTIAL of `updates` updates for `round` is published,
     * with the counters so far (progress output). May be NULL. */
    void (*on_partial)(void *user, uint32_t round, uint32_t updates,
                       const struct ef_mqtt_worker_stats *st);
    void *user;
} ef_mqtt_worker_opts;

typedef struct ef_mqtt_worker_stats {
    ef_worker_stats worker;     /* the core's counters (batched, forwarded, partials,
                                 * refused, duplicates) */
    uint64_t messages_in;       /* messages taken from the shared inbox */
    uint64_t bytes_in;
    uint64_t updates_in;        /* of which UPDATEs */
    uint64_t updates_forwarded; /* UPDATEs passed on unbatched: the server decides */
    uint64_t observed;          /* client-inbox messages looked at */
    uint64_t messages_out;      /* messages published to the workers topic */
    uint64_t bytes_out;
    double wall_s;
} ef_mqtt_worker_stats;

/*
 * Runs worker `w` (created for o->job) over connection `m` until stop:
 * subscribes to $share/<group>/edgefl/<job>/server and
 * edgefl/<job>/client/+, feeds inbox messages to ef_worker_handle and
 * client-inbox messages to ef_worker_observe (the id from the topic), ticks
 * at ef_worker_next_timer (seconds since the start, monotonic clock) and
 * publishes the outbox to edgefl/<job>/server/workers. Observed messages
 * the worker refuses are logged as warnings, updates it passes on
 * unbatched at info. On stop the open batch is flushed and the publishes
 * acknowledged (up to 30 s); closing the connection is the caller's (end
 * the session: a session left behind keeps taking a share of the inbox). Returns EF_OK after a stop, EF_ERR_INVALID
 * for a bad group, EF_ERR_NOMEM or a failing publish otherwise. `stats`
 * (may be NULL) is filled in either case.
 */
EF_API ef_status ef_mqtt_run_worker(ef_mqtt *m, ef_worker *w, const ef_mqtt_worker_opts *o,
                                    ef_mqtt_worker_stats *stats);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_TRANSPORT_H */
