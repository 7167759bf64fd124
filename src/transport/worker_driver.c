/*
 * The MQTT driver of a scale-out aggregator worker (see "scale-out
 * aggregator workers" in include/edgefl/transport.h): takes its share of the
 * server inbox through an MQTT 5 shared subscription, watches the client
 * inboxes for the server's TASKs, feeds both to the sans-I/O ef_worker with
 * wall-clock time and publishes the worker's output -- PARTIALs and the
 * messages it passes on -- to the topic the server reads when workers are in
 * use. Runs on the caller's thread; the connection's network thread keeps
 * the broker link alive meanwhile.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core_internal.h"
#include "edgefl/transport.h"

#define POLL_S 0.25
#define GROUP_MAX 64

const char *ef_mqtt_workers_topic(char *buf, size_t n, uint64_t job) {
    snprintf(buf, n, "edgefl/%llu/server/workers", (unsigned long long)job);
    return buf;
}

typedef struct wrk_run {
    ef_mqtt *m;
    ef_worker *w;
    const ef_mqtt_worker_opts *o;
    ef_mqtt_worker_stats st;
    ef_outbox out;
    double t0;
    char inbox[64];         /* edgefl/<job>/server: the topic shared messages carry */
    char clients[64];       /* edgefl/<job>/client/ (prefix of the inboxes) */
    char dest[64];          /* edgefl/<job>/server/workers */
} wrk_run;

static double wrk_now(const wrk_run *r) { return ef_now() - r->t0; }

/* Publishes the outbox to the workers topic (takes its references). */
static ef_status wrk_publish(wrk_run *r) {
    ef_status st = EF_OK;
    for (size_t i = 0; i < r->out.n; i++) {
        ef_out_msg *e = &r->out.v[i];
        if (st == EF_OK) st = ef_mqtt_publish(r->m, r->dest, e->buf->data, e->buf->len, 0);
        if (st == EF_OK) {
            r->st.messages_out++;
            r->st.bytes_out += e->buf->len;
            if (e->type == EF_MSG_PARTIAL) {
                ef_msg h;
                ef_partial pa = {0};
                uint32_t round = 0;
                if (ef_wire_decode(e->buf->data, e->buf->len, (size_t)-1, &h) == EF_OK &&
                    ef_decode_partial(&h, &pa) == EF_OK)
                    round = h.round;
                r->st.worker = ef_worker_get_stats(r->w);
                ef_log(EF_LOG_DEBUG, "worker: partial for round %u: %u updates (%zu bytes)", round,
                       pa.count, e->buf->len);
                if (r->o->on_partial) r->o->on_partial(r->o->user, round, pa.count, &r->st);
            }
        }
        ef_buf_unref(e->buf);
        e->buf = NULL;
    }
    r->out.n = 0;
    if (st != EF_OK) ef_log(EF_LOG_ERROR, "worker: publishing failed: %s", ef_last_error());
    return st;
}

/* A message from the shared server inbox. */
static ef_status wrk_handle(wrk_run *r, const ef_buf *b) {
    ef_msg h;
    int update = ef_wire_decode(b->data, b->len, (size_t)-1, &h) == EF_OK &&
                 h.type == EF_MSG_UPDATE;
    r->st.messages_in++;
    r->st.bytes_in += b->len;
    r->st.updates_in += update;
    size_t before = r->out.n;
    ef_status st = ef_worker_handle(r->w, wrk_now(r), b->data, b->len, &r->out);
    if (st != EF_OK) return st;
    /* the worker queues a message it passes on unchanged with its own type;
     * an UPDATE among them was not batched */
    for (size_t i = before; update && i < r->out.n; i++)
        if (r->out.v[i].type == EF_MSG_UPDATE) {
            r->st.updates_forwarded++;
            ef_log(EF_LOG_INFO, "worker: update from %u for round %u passed on unbatched (no "
                                "task seen for it, or it failed a check: the server decides)",
                   h.sender, h.round);
        }
    return wrk_publish(r);
}

/* A message in client `topic`'s inbox: the server's TASKs teach the worker
 * which updates it may batch. */
static void wrk_observe(wrk_run *r, const char *topic, const ef_buf *b) {
    const char *p = topic + strlen(r->clients);
    char *end = NULL;
    errno = 0;
    unsigned long id = strtoul(p, &end, 10);
    if (*p < '0' || *p > '9' || *end || errno || id >= EF_BROADCAST_ID) {
        ef_log(EF_LOG_DEBUG, "worker: ignoring a message on %s", topic);
        return;
    }
    r->st.observed++;
    if (ef_worker_observe(r->w, (uint32_t)id, b->data, b->len) != EF_OK)
        ef_log(EF_LOG_WARN, "worker: refused a message in client %lu's inbox: %s", id,
               ef_last_error());
}

static int group_ok(const char *g) {
    size_t n = strlen(g);
    return n > 0 && n <= GROUP_MAX && !strpbrk(g, "/+#");
}

ef_status ef_mqtt_run_worker(ef_mqtt *m, ef_worker *w, const ef_mqtt_worker_opts *o,
                             ef_mqtt_worker_stats *stats) {
    wrk_run r;
    memset(&r, 0, sizeof r);
    r.m = m, r.w = w, r.o = o;
    r.t0 = ef_now();
    const char *group = o->group ? o->group : "edgefl";
    ef_mqtt_topic(r.inbox, sizeof r.inbox, o->job, EF_SERVER_ID);
    snprintf(r.clients, sizeof r.clients, "edgefl/%llu/client/", (unsigned long long)o->job);
    ef_mqtt_workers_topic(r.dest, sizeof r.dest, o->job);
    ef_status st = EF_OK;
    char shared[GROUP_MAX + 80], inboxes[80];
    if (!group_ok(group)) {
        st = ef__fail(EF_ERR_INVALID, "worker: group '%s' must be 1 to %d characters without "
                                      "'/', '+' or '#'", group, GROUP_MAX);
    } else {
        snprintf(shared, sizeof shared, "$share/%s/%s", group, r.inbox);
        snprintf(inboxes, sizeof inboxes, "%s+", r.clients);
        st = ef_mqtt_subscribe(m, shared);
        if (st == EF_OK) st = ef_mqtt_subscribe(m, inboxes);
    }
    if (st == EF_OK)
        ef_log(EF_LOG_INFO, "worker: job %llu, reading %s and %s, sending to %s",
               (unsigned long long)o->job, shared, inboxes, r.dest);
    while (st == EF_OK && !(o->stop && *o->stop)) {
        double now = wrk_now(&r), timer = ef_worker_next_timer(w);
        if (timer <= now) {
            if ((st = ef_worker_tick(w, now, 0, &r.out)) == EF_OK) st = wrk_publish(&r);
            continue;
        }
        ef_mqtt_msg msg;
        if ((st = ef_mqtt_next(m, fmin(timer - now, POLL_S), &msg)) != EF_OK) break;
        if (msg.event == EF_MQTT_CONNECTED) {
            if (msg.connection > 1 && !msg.session_present)
                ef_log(EF_LOG_WARN, "worker: the broker lost the session: messages of the shared "
                                    "inbox sent while disconnected went to other workers or are "
                                    "gone");
            else
                ef_log(EF_LOG_INFO, "worker: subscribed (connection %llu)",
                       (unsigned long long)msg.connection);
        } else if (msg.event == EF_MQTT_MESSAGE) {
            if (strcmp(msg.topic, r.inbox) == 0) st = wrk_handle(&r, msg.buf);
            else if (strncmp(msg.topic, r.clients, strlen(r.clients)) == 0)
                wrk_observe(&r, msg.topic, msg.buf);
            else ef_log(EF_LOG_DEBUG, "worker: ignoring a message on %s", msg.topic);
        }
        ef_mqtt_msg_clear(&msg);
    }
    if (st == EF_OK) {
        /* stopping: the open batch goes out now, not with the worker */
        if ((st = ef_worker_tick(w, wrk_now(&r), 1, &r.out)) == EF_OK) st = wrk_publish(&r);
        if (st == EF_OK && ef_mqtt_flush(m, 30) != EF_OK)
            ef_log(EF_LOG_WARN, "worker: %s", ef_last_error());
    }
    ef_outbox_free(&r.out);
    r.st.worker = ef_worker_get_stats(w);
    r.st.wall_s = wrk_now(&r);
    if (stats) *stats = r.st;
    return st;
}
