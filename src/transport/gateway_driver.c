/*
 * The MQTT driver of the edge gateway (see include/edgefl/transport.h,
 * "gateway driver"): feeds an ef_gateway what its local clients send and
 * what the upstream server sends it, with wall-clock time, ticks it at its
 * local deadlines and publishes its one outbox to both sides (entries to
 * EF_SERVER_ID go upstream, the rest to local clients). The upstream side
 * receives as the client driver does (transport_internal.h: held models
 * and the messages waiting for them, the server announcement, the will);
 * the local side publishes as the server driver does (one retained model
 * per version, the announcement). Runs on the caller's thread.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/core_internal.h"
#include "edgefl/transport.h"
#include "transport_internal.h"

/* With two connections: how long one waits while the other may have a
 * message (ef_mqtt_next waits on one connection at a time). */
#define SLICE_S 0.02
#define TOPIC_MAX 192

typedef struct gw_task {
    int open;               /* an upstream training task is in progress */
    uint32_t round;
    uint64_t task;
    double t0;
    ef_gateway_stats s0;    /* the gateway's counters when it began */
} gw_task;

typedef struct gw_run {
    ef_mqtt *local, *up;
    ef_gateway *g;
    const ef_gateway_config *gc;
    const ef_mqtt_gateway_opts *o;
    ef_mqtt_gateway_stats st;
    ef_outbox out;
    double t0;
    uint32_t id;
    char l_inbox[64], l_bcast[64], l_online[80];
    char u_inbox[TOPIC_MAX], u_bcast[TOPIC_MAX], u_online[TOPIC_MAX], u_server[TOPIC_MAX];
    char birth[EF__BIRTH_MAX];  /* the local announcement */
    int born;                   /* the local announcement is out */
    ef_buf *model;              /* the MODEL last published on the local broadcast */
    ef__held held;              /* the upstream server's models, announcement, messages */
    uint64_t run_seq;           /* first_seq of the current counter run */
    int turn;                   /* two connections: which one is polled first */
    gw_task cur;
} gw_run;

static double gw_now(const gw_run *r) { return ef_now() - r->t0; }

/* The payload of a sealed message (the MODEL's version, size and values). */
static int payload_of(const ef_buf *b, const uint8_t **p, size_t *n) {
    ef_msg m;
    if (ef_wire_decode(b->data, b->len, (size_t)-1, &m) != EF_OK) return 0;
    *p = m.payload;
    *n = m.payload_len;
    return 1;
}

/* The gateway builds a new local MODEL whenever it is handed the upstream
 * model again (before every task and evaluation): the same payload under a
 * new counter. Local clients hold it already; publish a version once. */
static int same_model(const ef_buf *a, const ef_buf *b) {
    const uint8_t *pa, *pb;
    size_t na, nb;
    if (!a || !payload_of(a, &pa, &na) || !payload_of(b, &pb, &nb)) return 0;
    return na == nb && memcmp(pa, pb, na) == 0;
}

/* Publishes one outbox entry: upstream, to the local broadcast, or to a
 * local client's inbox. */
static ef_status gw_publish_one(gw_run *r, const ef_out_msg *e) {
    ef_status st = EF_OK;
    if (e->to == EF_SERVER_ID) {
        if (e->type == EF_MSG_CHECKIN && !r->held.instance[0]) {
            /* nobody may be subscribed upstream yet: sent once the upstream
             * server has announced itself */
            ef_log(EF_LOG_DEBUG, "gateway %u: check-in held until the upstream server is "
                                 "online", r->id);
            r->held.need_checkin = 1;
            return EF_OK;
        }
        if ((st = ef_mqtt_publish(r->up, r->u_server, e->buf->data, e->buf->len, 0)) != EF_OK)
            return st;
        r->st.bytes_up += e->buf->len;
        if (e->type == EF_MSG_CHECKIN) {
            r->st.checkins++;
            r->held.need_checkin = 0;
            r->held.checked_in = 1;
            ef_log(EF_LOG_INFO, "gateway %u: checked in upstream (%zu local clients online)",
                   r->id, ef_gateway_online(r->g));
        } else if (e->type == EF_MSG_UPDATE) {
            r->st.partials++;
        } else if (e->type == EF_MSG_EVAL_RESULT) {
            r->st.eval_results++;
            ef_log(EF_LOG_INFO, "gateway %u: evaluation result sent upstream", r->id);
        }
        return EF_OK;
    }
    if (e->type == EF_MSG_MODEL) {
        /* the same buffer goes to every picked client: one retained
         * broadcast per version instead of a copy per client */
        if (e->buf == r->model || same_model(r->model, e->buf)) return EF_OK;
        if ((st = ef_mqtt_publish(r->local, r->l_bcast, e->buf->data, e->buf->len, 1)) != EF_OK)
            return st;
        ef_buf_unref(r->model);
        r->model = ef_buf_ref(e->buf);
        r->st.models_broadcast++;
        r->st.bytes_local += e->buf->len;
        return EF_OK;
    }
    char topic[64];
    st = ef_mqtt_publish(r->local, ef_mqtt_topic(topic, sizeof topic, r->gc->job, e->to),
                         e->buf->data, e->buf->len, 0);
    if (st == EF_OK) {
        r->st.local_out++;
        r->st.bytes_local += e->buf->len;
    }
    return st;
}

/* Publishes the outbox (takes its references). */
static ef_status gw_publish(gw_run *r) {
    ef_status st = EF_OK;
    for (size_t i = 0; i < r->out.n; i++) {
        if (st == EF_OK) st = gw_publish_one(r, &r->out.v[i]);
        ef_buf_unref(r->out.v[i].buf);
        r->out.v[i].buf = NULL;
    }
    r->out.n = 0;
    if (st != EF_OK)
        ef_log(EF_LOG_ERROR, "gateway %u: publishing failed: %s", r->id, ef_last_error());
    return st;
}

/* ---- reports ----------------------------------------------------------------- */

static uint32_t d32(uint64_t a, uint64_t b) { return (uint32_t)(a - b); }

/* The open task ended with `outcome`; `now_st` are the counters at its end. */
static void gw_report(gw_run *r, ef_mqtt_gateway_outcome outcome, const ef_gateway_stats *now_st,
                      uint32_t n_examples) {
    if (!r->cur.open) return;
    r->cur.open = 0;
    const ef_gateway_stats *a = now_st, *b = &r->cur.s0;
    ef_mqtt_gateway_report rep = {.round = r->cur.round, .task = r->cur.task,
                                  .outcome = outcome,
                                  .asked = d32(a->local_tasks, b->local_tasks),
                                  .answered = d32(a->updates_received, b->updates_received),
                                  .rejected = d32(a->updates_rejected, b->updates_rejected),
                                  .late = d32(a->local_late, b->local_late),
                                  .dropped = d32(a->local_dropped, b->local_dropped),
                                  .n_examples = n_examples,
                                  .seconds = gw_now(r) - r->cur.t0};
    r->st.wall_s = gw_now(r);
    if (r->o->on_task) r->o->on_task(r->o->user, &rep, &r->st);
}

/* The example count of the partial in the outbox. */
static uint32_t partial_examples(const gw_run *r) {
    for (size_t i = 0; i < r->out.n; i++) {
        const ef_out_msg *e = &r->out.v[i];
        ef_msg m;
        ef_update u;
        if (e->to == EF_SERVER_ID && e->type == EF_MSG_UPDATE &&
            ef_wire_decode(e->buf->data, e->buf->len, (size_t)-1, &m) == EF_OK &&
            ef_decode_update(&m, &u) == EF_OK)
            return u.n_examples;
    }
    return 0;
}

/* After a gateway call that began with counters *before: did the open
 * task end? Publishes the outbox first, so a report follows its partial. */
static ef_status gw_settle(gw_run *r, const ef_gateway_stats *before) {
    ef_gateway_stats a;
    ef_gateway_get_stats(r->g, &a);
    uint32_t n_ex = partial_examples(r);
    ef_status st = gw_publish(r);
    if (a.partials_sent > before->partials_sent) gw_report(r, EF_MQTT_GATEWAY_SENT, &a, n_ex);
    else if (a.partials_skipped > before->partials_skipped)
        gw_report(r, EF_MQTT_GATEWAY_SKIPPED, &a, 0);
    return st;
}

/* ---- local side ---------------------------------------------------------------- */

static ef_status gw_tick(gw_run *r) {
    ef_gateway_stats b;
    ef_gateway_get_stats(r->g, &b);
    ef_status st = ef_gateway_tick(r->g, gw_now(r), &r->out);
    if (st != EF_OK) return st;
    return gw_settle(r, &b);
}

static ef_status gw_local(gw_run *r, const ef_buf *b) {
    ef_gateway_stats before;
    ef_gateway_get_stats(r->g, &before);
    ef_msg h;
    int known = ef_wire_decode(b->data, b->len, (size_t)-1, &h) == EF_OK;
    r->st.local_in++;
    ef_status hs = ef_gateway_handle_local(r->g, gw_now(r), b->data, b->len, &r->out);
    if (hs == EF_ERR_NOMEM) return hs;
    if (hs != EF_OK) {
        r->st.refused_local++;
        if (known)
            ef_log(EF_LOG_WARN, "gateway %u: refused %s from local client %u: %s", r->id,
                   ef_msg_type_name(h.type), h.sender, ef_last_error());
        else
            ef_log(EF_LOG_WARN, "gateway %u: refused a local message of %zu bytes: %s", r->id,
                   b->len, ef_last_error());
    } else if (h.type == EF_MSG_CHECKIN) {
        ef_log(EF_LOG_INFO, "gateway %u: local client %u checked in (%zu online)", r->id,
               h.sender, ef_gateway_online(r->g));
    } else if (h.type == EF_MSG_LEAVE) {
        ef_log(EF_LOG_INFO, "gateway %u: local client %u left (%zu online)", r->id, h.sender,
               ef_gateway_online(r->g));
    }
    /* a refusal can still end the local round: publish whatever came out */
    return gw_settle(r, &before);
}

static ef_status gw_local_connected(gw_run *r, const ef_mqtt_msg *msg) {
    ef_status st = EF_OK;
    if (msg->connection > 1 && !msg->session_present) {
        ef_log(EF_LOG_WARN, "gateway %u: the local broker lost the session: local updates sent "
                            "while disconnected are gone", r->id);
        if (r->model) /* the retained model may be gone with it */
            st = ef_mqtt_publish(r->local, r->l_bcast, r->model->data, r->model->len, 1);
    }
    /* subscribed: announce the gateway (local clients check in when they
     * see it); again after a new session, whose retained copy may be gone */
    if (st == EF_OK && (!r->born || !msg->session_present)) {
        st = ef_mqtt_publish(r->local, r->l_online, r->birth, strlen(r->birth), 1);
        if (st == EF_OK && !r->born) {
            r->born = 1;
            ef_log(EF_LOG_INFO, "gateway %u: online for local clients (%s)", r->id, r->birth);
        }
    }
    return st;
}

/* ---- upstream side -------------------------------------------------------------- */

/* Hands an upstream message (after the model it names, if any) to the
 * gateway. */
static ef_status gw_upstream(gw_run *r, ef_buf *model, ef_buf *b, ef_msg_type type,
                             uint32_t round) {
    /* a local round past its deadline ends (and is reported) on its own
     * before anything new */
    ef_status st = gw_tick(r);
    if (st != EF_OK) return st;
    ef_gateway_stats before, after;
    ef_gateway_get_stats(r->g, &before);
    double now = gw_now(r);
    ef_msg h;
    uint64_t task = ef_wire_decode(b->data, b->len, (size_t)-1, &h) == EF_OK ? h.task : 0;
    ef_buf *v[2] = {model, b};
    for (int i = 0; i < 2; i++) {
        if (!v[i]) continue;
        r->st.upstream_in++;
        ef_status hs = ef_gateway_handle_upstream(r->g, now, v[i], &r->out);
        if (hs == EF_ERR_NOMEM) return hs;
        if (hs != EF_OK) {
            r->st.refused_upstream++;
            ef_log(EF_LOG_WARN, "gateway %u: refused upstream %s for round %u: %s", r->id,
                   ef_msg_type_name(i == 0 ? EF_MSG_MODEL : type), round, ef_last_error());
        }
    }
    ef_gateway_get_stats(r->g, &after);
    if (after.tasks > before.tasks || after.evals > before.evals) {
        /* a new task or evaluation ends the one in progress */
        if (after.abandoned > before.abandoned) gw_report(r, EF_MQTT_GATEWAY_ABANDONED, &before, 0);
        r->cur.open = 0;
        if (after.tasks > before.tasks) {
            ef_log(EF_LOG_INFO, "gateway %u: task received: round %u, %llu local tasks sent",
                   r->id, round, (unsigned long long)(after.local_tasks - before.local_tasks));
            r->cur = (gw_task){.open = 1, .round = round, .task = task, .t0 = now, .s0 = before};
        } else {
            ef_log(EF_LOG_INFO, "gateway %u: evaluation received: round %u", r->id, round);
        }
    }
    /* a task no local client can take is skipped at once */
    return gw_settle(r, &before);
}

/* Queues a check-in upstream when one is due and possible. */
static ef_status gw_checkin(gw_run *r) {
    if (!ef__held_checkin_due(&r->held)) return EF_OK;
    ef_status st = ef_gateway_checkin(r->g, &r->out);
    /* too few local clients online: the gateway checks in by itself once
     * enough are (and the publish clears need_checkin) */
    if (st == EF_ERR_STATE) return EF_OK;
    if (st != EF_OK) return st;
    return gw_publish(r);
}

static ef_status gw_upstream_held(void *user, const ef__held_item *it) {
    return gw_upstream(user, it->model, it->msg, it->type, it->round);
}

/* An upstream task given up: the server still counts on it, a check-in
 * tells it to move on. */
static ef_status gw_checkin_held(void *user) {
    gw_run *r = user;
    r->held.need_checkin = 1;
    return gw_checkin(r);
}

/* Works through the upstream messages that can go now. */
static ef_status gw_drain(gw_run *r) {
    return ef__held_drain(&r->held, r->o->stop, gw_upstream_held, gw_checkin_held, r,
                          &r->st.superseded);
}

/* A reconnect on a new upstream session: the broker may have published the
 * will, so continue with a counter run above it and arm the next will. */
static ef_status gw_renew(gw_run *r) {
    uint64_t next = r->run_seq + EF_MQTT_WILL_GAP + 1;
    ef_gateway_config gc = *r->gc;
    gc.first_seq = next;
    ef_buf *will = NULL;
    ef_status st = ef_gateway_set_seq(r->g, next);
    if (st == EF_OK) st = ef_mqtt_gateway_will(&gc, &will);
    if (st == EF_OK) st = ef_mqtt_set_will(r->up, r->u_server, will->data, will->len);
    ef_buf_unref(will);
    if (st != EF_OK) return st;
    r->run_seq = next;
    r->st.renewals++;
    return EF_OK;
}

static ef_status gw_up_connected(gw_run *r, const ef_mqtt_msg *msg) {
    /* a new session lost what was sent meanwhile; a resumed one delivers
     * it, and a check-in then would cancel a task the server counts on */
    if (msg->connection > 1 && msg->session_present) return EF_OK;
    ef__held_drop(&r->held, r->held.n_fifo);
    r->held.need_checkin = 1;
    if (msg->connection == 1) return EF_OK;
    ef_log(EF_LOG_WARN, "gateway %u: the upstream broker started a new session: checking in "
                        "again", r->id);
    return gw_renew(r);
}

/* ---- the run --------------------------------------------------------------------- */

ef_status ef_mqtt_gateway_will(const ef_gateway_config *gc, ef_buf **out) {
    return ef__will_leave(gc->job, gc->id, gc->first_seq, gc->sign_key, out);
}

/* Handles one event of connection `from`. */
static ef_status gw_event(gw_run *r, ef_mqtt *from, const ef_mqtt_msg *msg) {
    ef_status st = EF_OK;
    if (msg->event == EF_MQTT_CONNECTED) {
        /* with one connection an event is both sides' */
        if (from == r->local) st = gw_local_connected(r, msg);
        if (st == EF_OK && from == r->up) st = gw_up_connected(r, msg);
        return st;
    }
    if (msg->event != EF_MQTT_MESSAGE) return EF_OK;
    if (from == r->local && strcmp(msg->topic, r->l_inbox) == 0) return gw_local(r, msg->buf);
    if (from == r->up) {
        if (strcmp(msg->topic, r->u_online) == 0) {
            ef__held_online(&r->held, msg->buf);
            return EF_OK;
        }
        if (strcmp(msg->topic, r->u_bcast) == 0) {
            ef__held_model(&r->held, msg->buf);
            return EF_OK;
        }
        if (strcmp(msg->topic, r->u_inbox) == 0) return ef__held_push(&r->held, msg->buf);
    }
    ef_log(EF_LOG_DEBUG, "gateway %u: ignoring a message on %s", r->id, msg->topic);
    return EF_OK;
}

/* The next event of either connection, waiting up to wait_s. */
static ef_status gw_next(gw_run *r, double wait_s, ef_mqtt **from, ef_mqtt_msg *msg) {
    if (r->up == r->local) {
        *from = r->local;
        return ef_mqtt_next(r->local, wait_s, msg);
    }
    ef_mqtt *a = r->turn ? r->up : r->local, *b = r->turn ? r->local : r->up;
    r->turn ^= 1; /* neither side can starve the other */
    *from = a;
    ef_status st = ef_mqtt_next(a, 0, msg);
    if (st != EF_OK || msg->event != EF_MQTT_NONE) return st;
    *from = b;
    return ef_mqtt_next(b, fmin(wait_s, SLICE_S), msg);
}

ef_status ef_mqtt_run_gateway(ef_mqtt *local, ef_mqtt *upstream, const char *upstream_prefix,
                              ef_gateway *g, const ef_gateway_config *gc,
                              const ef_mqtt_gateway_opts *o, ef_mqtt_gateway_stats *stats) {
    if (stats) memset(stats, 0, sizeof *stats);
    const char *prefix = upstream_prefix ? upstream_prefix : "";
    if (!local || !g || !gc || !o)
        return ef__fail(EF_ERR_INVALID, "gateway driver: a connection, gateway, configuration "
                                        "and options are required");
    if (!upstream) upstream = local;
    if (upstream == local && !prefix[0])
        return ef__fail(EF_ERR_INVALID, "gateway driver: with one connection for both sides the "
                                        "upstream topics need a prefix (e.g. \"up/\"), or the "
                                        "local and upstream server inboxes would be one topic");
    if (strlen(prefix) > TOPIC_MAX - 80 || strpbrk(prefix, "+#"))
        return ef__fail(EF_ERR_INVALID, "gateway driver: upstream prefix '%s' is too long or "
                                        "holds a wildcard", prefix);
    gw_run r;
    memset(&r, 0, sizeof r);
    r.local = local, r.up = upstream, r.g = g, r.gc = gc, r.o = o;
    r.id = gc->id;
    r.t0 = ef_now();
    r.run_seq = gc->first_seq;
    uint64_t job = gc->job;
    char t[64], name[48];
    ef_mqtt_topic(r.l_inbox, sizeof r.l_inbox, job, EF_SERVER_ID);
    ef_mqtt_topic(r.l_bcast, sizeof r.l_bcast, job, EF_BROADCAST_ID);
    ef_mqtt_online_topic(r.l_online, sizeof r.l_online, job);
    snprintf(r.u_inbox, TOPIC_MAX, "%s%s", prefix, ef_mqtt_topic(t, sizeof t, job, gc->id));
    snprintf(r.u_bcast, TOPIC_MAX, "%s%s", prefix, r.l_bcast);
    snprintf(r.u_online, TOPIC_MAX, "%s%s", prefix, r.l_online);
    snprintf(r.u_server, TOPIC_MAX, "%s%s", prefix, r.l_inbox);
    snprintf(r.birth, sizeof r.birth, "edgefl-server %llu fresh",
             (unsigned long long)(o->instance ? o->instance : ef_mqtt_clock_seq()));
    snprintf(name, sizeof name, "gateway %u (upstream)", r.id);
    ef__held_init(&r.held, job, gc->n_params, gc->server_pk, name);
    char bfilter[TOPIC_MAX + 2];
    snprintf(bfilter, sizeof bfilter, "%s/#", r.u_bcast); /* model, chunks, announcement */
    ef_status st = ef_mqtt_subscribe(local, r.l_inbox);
    if (st == EF_OK) st = ef_mqtt_subscribe(upstream, r.u_inbox);
    if (st == EF_OK) st = ef_mqtt_subscribe(upstream, bfilter);
    if (st == EF_OK)
        ef_log(EF_LOG_INFO, "gateway %u: job %llu, local inbox %s, upstream inbox %s%s", r.id,
               (unsigned long long)job, r.l_inbox, r.u_inbox,
               upstream == local ? " (one connection)" : "");
    while (st == EF_OK) {
        if (o->stop && *o->stop) break;
        double now = gw_now(&r), timer = ef_gateway_next_timer(g);
        if (timer <= now) {
            st = gw_tick(&r);
            continue;
        }
        ef_mqtt *from = NULL;
        ef_mqtt_msg msg;
        if ((st = gw_next(&r, fmin(timer - now, EF__POLL_S), &from, &msg)) != EF_OK) break;
        st = gw_event(&r, from, &msg);
        ef_mqtt_msg_clear(&msg);
        if (st == EF_OK) st = gw_checkin(&r);
        if (st == EF_OK) st = gw_drain(&r);
    }
    if (st == EF_OK) {
        /* leaving: tell the upstream server (a normal disconnect cancels
         * the will) and take the gateway off the local topics */
        st = ef_gateway_leave(g, 0, &r.out);
        if (st == EF_OK) st = gw_publish(&r);
        if (st == EF_OK) {
            ef_log(EF_LOG_INFO, "gateway %u: leaving", r.id);
            ef_mqtt_clear_retained(local, r.l_bcast);
            ef_mqtt_clear_retained(local, r.l_online);
            if (ef_mqtt_flush(local, 10) != EF_OK ||
                (upstream != local && ef_mqtt_flush(upstream, 10) != EF_OK))
                ef_log(EF_LOG_WARN, "gateway %u: %s", r.id, ef_last_error());
        }
    }
    ef__held_free(&r.held);
    ef_outbox_free(&r.out);
    ef_buf_unref(r.model);
    r.st.wall_s = gw_now(&r);
    if (stats) *stats = r.st;
    return st;
}
