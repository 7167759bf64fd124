/*
 * What the MQTT drivers share (src/transport/driver.c, gateway_driver.c):
 * the receiving side of a client of some server -- the broadcast models it
 * holds, the inbox messages that wait for the model they name, the
 * server's announcement -- and the last will with its counter. Internal:
 * not part of the public API.
 */
#ifndef EDGEFL_TRANSPORT_INTERNAL_H
#define EDGEFL_TRANSPORT_INTERNAL_H

#include "edgefl/transport.h"

/* Poll interval of the drivers' loops (stop flags, timers). */
#define EF__POLL_S 0.25

/* Longest server announcement "edgefl-server <instance> fresh|resumed". */
#define EF__BIRTH_MAX 96

/* One broadcast model held: its message, version and payload hash. */
typedef struct ef__model_slot {
    ef_buf *buf;
    uint32_t version;
    uint8_t hash[EF_HASH_BYTES];
} ef__model_slot;

/*
 * A client's view of one server: the two newest broadcast models and the
 * inbox messages not yet handled, in order. Topics are not ordered with
 * each other, so a TASK, SA_SETUP or EVAL can arrive before the MODEL it
 * names; it waits here (and what came behind it waits with it) until the
 * model is there, a newer task supersedes it, or the broadcast moves past
 * its version.
 */
typedef struct ef__held {
    uint64_t job;
    size_t n_params;
    const uint8_t *server_pk;   /* broadcast models must carry its signature (NULL: unchecked);
                                 * borrowed */
    char name[48];              /* log prefix, e.g. "client 17" */
    ef__model_slot models[2];
    ef_buf **fifo;
    size_t n_fifo, cap_fifo;
    char instance[EF__BIRTH_MAX]; /* the server announced last ("": none seen) */
    int need_checkin;           /* a check-in is due once a server is known */
    int checked_in;             /* a check-in went out in this run */
} ef__held;

/* An empty view (nothing allocated yet). */
void ef__held_init(ef__held *h, uint64_t job, size_t n_params, const uint8_t *server_pk,
                   const char *name);

/* Drops every model and message and frees the queue. */
void ef__held_free(ef__held *h);

/*
 * A message from the broadcast topic: kept when it is this job's MODEL from
 * the server, of the right size and (with server_pk) signed by the server,
 * replacing the older of the two held; a version already held is ignored.
 * Anything else is logged and ignored. Takes its own reference.
 */
void ef__held_model(ef__held *h, ef_buf *b);

/* Queues an inbox message (takes its own reference). EF_ERR_NOMEM. */
ef_status ef__held_push(ef__held *h, ef_buf *b);

/* Drops the first k queued messages (all: k = h->n_fifo). */
void ef__held_drop(ef__held *h, size_t k);

/* The queue's head, ready to be handled (ef__held_drain). */
typedef struct ef__held_item {
    ef_buf *msg;            /* the message */
    ef_buf *model;          /* the model it names (TASK, SA_SETUP, EVAL), or NULL */
    ef_msg_type type;       /* its type (0 when it does not decode: the receiver refuses it) */
    uint32_t round;         /* its round */
} ef__held_item;

/*
 * Works through the queue in order: every message that can go now goes to
 * handle(user, it) -- after the model it names has arrived; both buffers
 * are borrowed for the call. A head waiting for its model stops the drain,
 * unless a newer task came behind it (the head and what came before that
 * task are dropped) or the broadcast has moved past its version (the head
 * is dropped and checkin(user) called: the server still counts on that
 * task, a check-in tells it to move on); both count in *superseded and
 * are logged. Stops early when *stop (may be NULL) is set, and at the
 * first non-OK status of a callback, which it returns.
 */
ef_status ef__held_drain(ef__held *h, const volatile sig_atomic_t *stop,
                         ef_status (*handle)(void *user, const ef__held_item *it),
                         ef_status (*checkin)(void *user), void *user, uint64_t *superseded);

/*
 * The server's announcement (`b`, "edgefl-server <instance> fresh|resumed",
 * retained on edgefl/<job>/broadcast/online): remembers the instance. A
 * new fresh server knows no client: when one had checked in with the
 * previous server, the queue is dropped (what the old one sent is void) and
 * need_checkin set. A resumed one restored the clients it knew: a check-in
 * now could cancel a task it sends. A malformed one is logged and ignored.
 */
void ef__held_online(ef__held *h, const ef_buf *b);

/* A check-in can go now: one is due and a server has announced itself (one
 * started after the check-in would never see it). */
static inline int ef__held_checkin_due(const ef__held *h) {
    return h->need_checkin && h->instance[0];
}

/*
 * The LEAVE (reason 1: gone without a goodbye) that party `id` of `job`
 * leaves as its last will: counter first_seq + EF_MQTT_WILL_GAP, signed
 * with sk when not NULL. *out holds one reference.
 */
ef_status ef__will_leave(uint64_t job, uint32_t id, uint64_t first_seq, const uint8_t *sk,
                         ef_buf **out);

#endif /* EDGEFL_TRANSPORT_INTERNAL_H */
