/*
 * The MQTT drivers (see include/edgefl/transport.h): the second driver of
 * the sans-I/O core after the simulator (src/sim/sim.c). The server driver
 * feeds an ef_server the messages of its inbox with wall-clock time, ticks
 * it at its timers and publishes its outbox; the client driver feeds an
 * ef_client what the server sends it and publishes its answers. Both run on
 * the caller's thread; the connection's network thread keeps the broker
 * link alive meanwhile.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/core_internal.h"
#include "edgefl/transport.h"
#include "transport_internal.h"

/* A resumed server waits this long for the messages queued in its session
 * (check-ins of clients that came while it was down) before its first round. */
#define RESUME_GRACE_S 2.0

const char *ef_mqtt_online_topic(char *buf, size_t n, uint64_t job) {
    snprintf(buf, n, "edgefl/%llu/broadcast/online", (unsigned long long)job);
    return buf;
}

/* ---- server ------------------------------------------------------------------ */

typedef struct srv_run {
    ef_mqtt *m;
    ef_server *s;
    const ef_mqtt_server_opts *o;
    ef_mqtt_server_stats st;
    ef_outbox out;
    double t0;
    char own_inbox[64], bcast[64], online[80];
    const char *inbox;      /* the topic read: own_inbox or o->inbox_topic */
    char birth[EF__BIRTH_MAX];  /* "edgefl-server <instance> fresh|resumed" */
    int born;               /* the birth message is out */
    int started;            /* the first tick happened */
    double start_at;
    ef_buf *model;          /* the MODEL last published to the broadcast topic */
    size_t n_records;
} srv_run;

static double srv_now(const srv_run *r) { return ef_now() - r->t0; }

/* Publishes the outbox (takes its references). */
static ef_status srv_publish(srv_run *r) {
    ef_status st = EF_OK;
    char topic[64];
    for (size_t i = 0; i < r->out.n; i++) {
        ef_out_msg *e = &r->out.v[i];
        if (st == EF_OK && e->type == EF_MSG_MODEL) {
            /* the same buffer goes to every selected client: one retained
             * broadcast per version instead of a copy per client */
            if (e->buf != r->model) {
                st = ef_mqtt_publish(r->m, r->bcast, e->buf->data, e->buf->len, 1);
                if (st == EF_OK) {
                    ef_buf_unref(r->model);
                    r->model = ef_buf_ref(e->buf);
                    r->st.models_broadcast++;
                    r->st.messages_out++;
                    r->st.bytes_out += e->buf->len;
                    ef_log(EF_LOG_DEBUG, "server: model version %u broadcast (%zu bytes)",
                           ef_server_version(r->s), e->buf->len);
                }
            }
        } else if (st == EF_OK) {
            st = ef_mqtt_publish(r->m, ef_mqtt_topic(topic, sizeof topic, r->o->job, e->to),
                                 e->buf->data, e->buf->len, 0);
            if (st == EF_OK) {
                r->st.messages_out++;
                r->st.bytes_out += e->buf->len;
            }
        }
        ef_buf_unref(e->buf);
        e->buf = NULL;
    }
    r->out.n = 0;
    if (st != EF_OK) ef_log(EF_LOG_ERROR, "server: publishing failed: %s", ef_last_error());
    return st;
}

/* After a message or tick: publish, then the after-round hook if rounds ended. */
static ef_status srv_settle(srv_run *r) {
    ef_status st = srv_publish(r);
    if (st != EF_OK) return st;
    size_t n;
    ef_server_records(r->s, &n);
    if (n != r->n_records) {
        r->n_records = n;
        r->st.wall_s = srv_now(r);
        if (r->o->after_round && (st = r->o->after_round(r->o->user, r->s, &r->st)) != EF_OK)
            return st;
    }
    return EF_OK;
}

/* Hands one message to the server. */
static ef_status srv_feed(srv_run *r, ef_buf *b) {
    ef_msg h;
    int known = ef_wire_decode(b->data, b->len, (size_t)-1, &h) == EF_OK;
    int is_update = known && (h.type == EF_MSG_UPDATE || h.type == EF_MSG_SA_MASKED);
    r->st.messages_in++;
    r->st.bytes_in += b->len;
    r->st.updates_received += is_update;
    r->st.partials_received += known && h.type == EF_MSG_PARTIAL;
    ef_status hs = ef_server_handle(r->s, srv_now(r), b->data, b->len, &r->out);
    if (hs == EF_ERR_NOMEM) return hs;
    if (hs == EF_OK && known && h.type == EF_MSG_CHECKIN)
        ef_log(EF_LOG_INFO, "server: client %u checked in", h.sender);
    if (hs == EF_OK && is_update)
        ef_log(EF_LOG_DEBUG, "server: accepted %s from %u for round %u",
               ef_msg_type_name(h.type), h.sender, h.round);
    if (hs != EF_OK) {
        r->st.refused++;
        r->st.updates_rejected += is_update;
        if (known)
            ef_log(EF_LOG_WARN, "server: rejected %s from %u: %s", ef_msg_type_name(h.type),
                   h.sender, ef_last_error());
        else
            ef_log(EF_LOG_WARN, "server: rejected a message of %zu bytes: %s", b->len,
                   ef_last_error());
    }
    /* a refusal can still move the protocol on: publish whatever came out */
    return srv_settle(r);
}

ef_status ef_mqtt_run_server(ef_mqtt *m, ef_server *s, const ef_mqtt_server_opts *o,
                             ef_mqtt_server_stats *stats) {
    srv_run r;
    memset(&r, 0, sizeof r);
    r.m = m, r.s = s, r.o = o;
    r.t0 = ef_now();
    ef_server_records(s, &r.n_records);
    r.inbox = o->inbox_topic ? o->inbox_topic
                             : ef_mqtt_topic(r.own_inbox, sizeof r.own_inbox, o->job, EF_SERVER_ID);
    ef_mqtt_topic(r.bcast, sizeof r.bcast, o->job, EF_BROADCAST_ID);
    ef_mqtt_online_topic(r.online, sizeof r.online, o->job);
    int resumed = r.n_records > 0 || ef_server_version(s) > 0;
    snprintf(r.birth, sizeof r.birth, "edgefl-server %llu %s",
             (unsigned long long)(o->instance ? o->instance : ef_mqtt_clock_seq()),
             resumed ? "resumed" : "fresh");
    ef_status st = strpbrk(r.inbox, "+#") || !r.inbox[0]
                       ? ef__fail(EF_ERR_INVALID, "server: inbox topic '%s' is not a topic name",
                                  r.inbox)
                       : ef_mqtt_subscribe(m, r.inbox);
    if (st == EF_OK)
        ef_log(EF_LOG_INFO, "server: job %llu, inbox %s, model on %s",
               (unsigned long long)o->job, r.inbox, r.bcast);
    while (st == EF_OK && !ef_server_done(s)) {
        if (o->stop && *o->stop) {
            st = ef__fail(EF_ERR_STATE, "server: interrupted");
            break;
        }
        double now = srv_now(&r), timer = ef_server_next_timer(s);
        if (r.born && !r.started && now >= r.start_at) {
            /* a resumed server has clients online already: it may start a
             * round without waiting for a check-in */
            r.started = 1;
            if ((st = ef_server_tick(s, now, &r.out)) == EF_OK) st = srv_settle(&r);
            continue;
        }
        if (timer <= now) {
            if ((st = ef_server_tick(s, now, &r.out)) == EF_OK) st = srv_settle(&r);
            continue;
        }
        ef_mqtt_msg msg;
        if ((st = ef_mqtt_next(m, fmin(timer - now, EF__POLL_S), &msg)) != EF_OK) break;
        if (msg.event == EF_MQTT_CONNECTED) {
            if (msg.connection > 1 && !msg.session_present) {
                ef_log(EF_LOG_WARN, "server: the broker lost the session: updates sent while "
                                    "disconnected are gone (their rounds close at the deadline)");
                /* the retained model may be gone with it */
                if (r.model)
                    st = ef_mqtt_publish(m, r.bcast, r.model->data, r.model->len, 1);
            }
            /* subscribed: announce this server (clients check in when they
             * see it); again after a new session, whose retained copy may
             * be gone */
            if (st == EF_OK && (!r.born || !msg.session_present)) {
                st = ef_mqtt_publish(m, r.online, r.birth, strlen(r.birth), 1);
                if (st == EF_OK && !r.born) {
                    r.born = 1;
                    r.start_at = srv_now(&r) + (resumed ? RESUME_GRACE_S : 0.0);
                    ef_log(EF_LOG_INFO, "server: online (%s)", r.birth);
                }
            }
        } else if (msg.event == EF_MQTT_MESSAGE) {
            if (strcmp(msg.topic, r.inbox) == 0) st = srv_feed(&r, msg.buf);
            else ef_log(EF_LOG_DEBUG, "server: ignoring a message on %s", msg.topic);
        }
        ef_mqtt_msg_clear(&msg);
    }
    ef_status fatal = st;
    if (ef_server_done(s)) {
        if (!o->keep_retained) ef_mqtt_clear_retained(m, r.bcast);
        ef_mqtt_clear_retained(m, r.online); /* this server is gone */
        if (ef_mqtt_flush(m, 30) != EF_OK)
            ef_log(EF_LOG_WARN, "server: %s", ef_last_error());
    }
    ef_outbox_free(&r.out);
    ef_buf_unref(r.model);
    r.st.wall_s = srv_now(&r);
    if (stats) *stats = r.st;
    return fatal;
}

/* ---- client ------------------------------------------------------------------ */

typedef struct cli_run {
    ef_mqtt *m;
    ef_client *c;
    ef_client_config cc;    /* of the current counter run */
    const ef_trainer *tr;
    uint32_t id;
    uint64_t job;
    const ef_mqtt_client_opts *o;
    ef_mqtt_client_stats st;
    char inbox[64], bcast[64], server[64], online[80];
    ef__held held;            /* the server's models, announcement, inbox messages waiting */
    ef_outbox out;
} cli_run;

static ef_status cli_publish(cli_run *r) {
    ef_status st = EF_OK;
    for (size_t i = 0; i < r->out.n; i++) {
        ef_buf *b = r->out.v[i].buf;
        if (st == EF_OK) st = ef_mqtt_publish(r->m, r->server, b->data, b->len, 0);
        if (st == EF_OK) r->st.bytes_out += b->len;
        ef_buf_unref(b);
        r->out.v[i].buf = NULL;
    }
    r->out.n = 0;
    return st;
}

static ef_status cli_checkin(cli_run *r) {
    ef_status st = ef_client_checkin(r->c, &r->out);
    if (st == EF_OK) st = cli_publish(r);
    if (st == EF_OK) {
        r->st.checkins++;
        ef_log(EF_LOG_INFO, "client %u: checked in", r->id);
    }
    return st;
}

uint64_t ef_mqtt_clock_seq(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

ef_status ef_mqtt_client_will(const ef_client_config *cc, ef_buf **out) {
    return ef__will_leave(cc->job, cc->id, cc->first_seq, cc->sign_key, out);
}

/* A reconnect on a new session: the broker may have published the will, so
 * continue with a counter run above it and arm the next will. */
static ef_status cli_renew(cli_run *r) {
    ef_client_config cc = r->cc;
    cc.first_seq = r->cc.first_seq + EF_MQTT_WILL_GAP + 1;
    ef_client *c = NULL;
    ef_buf *will = NULL;
    ef_status st = ef_client_new(&c, &cc, r->tr);
    if (st == EF_OK) st = ef_mqtt_client_will(&cc, &will);
    if (st == EF_OK) st = ef_mqtt_set_will(r->m, r->server, will->data, will->len);
    ef_buf_unref(will);
    if (st != EF_OK) {
        ef_client_free(c);
        return st;
    }
    ef_client_free(r->c);
    r->c = c;
    r->cc = cc;
    r->st.renewals++;
    return EF_OK;
}

/* The answer_delay_s option: a slow device holds the update it just
 * computed (and reads nothing else) before sending it. */
static void cli_hold(cli_run *r, uint32_t round) {
    double delay = r->o->answer_delay_s;
    int update = 0;
    for (size_t i = 0; i < r->out.n; i++)
        update |= r->out.v[i].type == EF_MSG_UPDATE || r->out.v[i].type == EF_MSG_SA_MASKED;
    if (!(delay > 0) || !update) return;
    ef_log(EF_LOG_INFO, "client %u: holding the update of round %u for %.1f s", r->id, round,
           delay);
    for (double end = ef_now() + delay; ef_now() < end;) {
        if (r->o->stop && *r->o->stop) break;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* Hands message b (with the model it needs, if any) to the client and
 * publishes the answer. */
static ef_status cli_handle(cli_run *r, ef_buf *model, ef_buf *b, ef_msg_type type,
                            uint32_t round) {
    ef_status st;
    if (type == EF_MSG_TASK || type == EF_MSG_SA_SETUP)
        ef_log(EF_LOG_INFO, "client %u: task received: round %u", r->id, round);
    else if (type == EF_MSG_EVAL)
        ef_log(EF_LOG_INFO, "client %u: evaluation received: round %u", r->id, round);
    double t0 = ef_now();
    if (model && (st = ef_client_handle(r->c, model, 0, &r->out)) != EF_OK) goto refused;
    if ((st = ef_client_handle(r->c, b, 0, &r->out)) != EF_OK) goto refused;
    double dt = ef_now() - t0;
    cli_hold(r, round);
    for (size_t i = 0; i < r->out.n; i++) {
        const ef_out_msg *e = &r->out.v[i];
        ef_msg h;
        ef_update u;
        ef_sa_masked sm;
        if (ef_wire_decode(e->buf->data, e->buf->len, (size_t)-1, &h) != EF_OK) continue;
        if (e->type == EF_MSG_UPDATE && ef_decode_update(&h, &u) == EF_OK) {
            r->st.tasks++;
            r->st.train_s += dt;
            ef_log(EF_LOG_INFO, "client %u: update sent: round %u, %u examples, loss %.4f, "
                                "%.1f s, %zu bytes", r->id, h.round, u.n_examples,
                   (double)u.train_loss, dt, e->buf->len);
        } else if (e->type == EF_MSG_SA_MASKED && ef_decode_sa_masked(&h, &sm) == EF_OK) {
            r->st.tasks++;
            r->st.train_s += dt;
            ef_log(EF_LOG_INFO, "client %u: masked update sent: round %u, %u examples, loss "
                                "%.4f, %.1f s, %zu bytes", r->id, h.round, sm.n_examples,
                   (double)sm.train_loss, dt, e->buf->len);
        } else if (e->type == EF_MSG_EVAL_RESULT) {
            r->st.evals++;
            ef_log(EF_LOG_INFO, "client %u: evaluation sent: round %u", r->id, h.round);
        }
    }
    return cli_publish(r);
refused:
    if (st == EF_ERR_NOMEM) return st;
    r->st.refused++;
    ef_log(EF_LOG_WARN, "client %u: refused %s for round %u: %s", r->id,
           ef_msg_type_name(type), round, ef_last_error());
    return cli_publish(r);
}

static ef_status cli_handle_held(void *user, const ef__held_item *it) {
    return cli_handle(user, it->model, it->msg, it->type, it->round);
}

static ef_status cli_checkin_held(void *user) { return cli_checkin(user); }

/* Works through the inbox messages that can go now. */
static ef_status cli_drain(cli_run *r) {
    return ef__held_drain(&r->held, r->o->stop, cli_handle_held, cli_checkin_held, r,
                          &r->st.superseded);
}

ef_status ef_mqtt_run_client(ef_mqtt *m, const ef_client_config *cc, const ef_trainer *tr,
                             const ef_mqtt_client_opts *o, ef_mqtt_client_stats *stats) {
    cli_run r;
    memset(&r, 0, sizeof r);
    r.m = m, r.cc = *cc, r.tr = tr, r.o = o;
    r.id = cc->id, r.job = cc->job;
    char name[32];
    snprintf(name, sizeof name, "client %u", r.id);
    ef__held_init(&r.held, r.job, cc->n_params, cc->server_pk, name);
    ef_mqtt_topic(r.inbox, sizeof r.inbox, r.job, r.id);
    ef_mqtt_topic(r.bcast, sizeof r.bcast, r.job, EF_BROADCAST_ID);
    ef_mqtt_topic(r.server, sizeof r.server, r.job, EF_SERVER_ID);
    ef_mqtt_online_topic(r.online, sizeof r.online, r.job);
    char bfilter[80];
    snprintf(bfilter, sizeof bfilter, "%s/#", r.bcast); /* the topic and its chunk topics */
    ef_status st = ef_client_new(&r.c, &r.cc, tr);
    if (st == EF_OK) st = ef_mqtt_subscribe(m, r.inbox);
    if (st == EF_OK) st = ef_mqtt_subscribe(m, bfilter);
    while (st == EF_OK) {
        if (o->stop && *o->stop) break;
        if (o->max_tasks && r.st.tasks + r.st.evals >= o->max_tasks) break;
        ef_mqtt_msg msg;
        if ((st = ef_mqtt_next(m, EF__POLL_S, &msg)) != EF_OK) break;
        if (msg.event == EF_MQTT_CONNECTED) {
            /* a new session lost what was sent meanwhile; a resumed one
             * delivers it, and checking in then would cancel a task the
             * server still counts on. Training happens on this thread, so a
             * check-in never overtakes the answer to a task in progress. */
            if (msg.connection == 1 || !msg.session_present) {
                ef__held_drop(&r.held, r.held.n_fifo);
                if (msg.connection > 1) {
                    ef_log(EF_LOG_WARN, "client %u: the broker started a new session: checking "
                                        "in again", r.id);
                    st = cli_renew(&r);
                }
                r.held.need_checkin = 1;
            }
        } else if (msg.event == EF_MQTT_MESSAGE) {
            if (strcmp(msg.topic, r.online) == 0) ef__held_online(&r.held, msg.buf);
            else if (strcmp(msg.topic, r.bcast) == 0) ef__held_model(&r.held, msg.buf);
            else if (strcmp(msg.topic, r.inbox) == 0) st = ef__held_push(&r.held, msg.buf);
        }
        ef_mqtt_msg_clear(&msg);
        /* check in only to a server that is there: one started after this
         * client would never see a check-in sent before it subscribed */
        if (st == EF_OK && ef__held_checkin_due(&r.held)) {
            r.held.need_checkin = 0;
            r.held.checked_in = 1;
            st = cli_checkin(&r);
        }
        if (st == EF_OK) st = cli_drain(&r);
    }
    if (st == EF_OK) {
        /* leaving: tell the server (a normal disconnect cancels the will) */
        st = ef_client_leave(r.c, 0, &r.out);
        if (st == EF_OK) st = cli_publish(&r);
        if (st == EF_OK) {
            ef_log(EF_LOG_INFO, "client %u: leaving", r.id);
            if (ef_mqtt_flush(m, 10) != EF_OK) ef_log(EF_LOG_WARN, "client %u: %s", r.id,
                                                       ef_last_error());
        }
    }
    ef__held_free(&r.held);
    ef_outbox_free(&r.out);
    ef_client_free(r.c);
    if (stats) *stats = r.st;
    return st;
}
