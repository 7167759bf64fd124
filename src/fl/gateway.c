/*
 * The edge gateway (see include/edgefl/gateway.h): one ordinary client to
 * its upstream server, the server of its local clients. It turns each
 * upstream task into a local round, validates the local updates as the
 * server does, sums them weighted by their example counts in double and
 * sends one weighted mean upstream. Pure state machine: input through the
 * handle/tick functions with the current time, output to the caller's
 * outbox (entries to EF_SERVER_ID go upstream, the others to local
 * clients).
 */
#include <math.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/core_internal.h"
#include "edgefl/gateway.h"
#include "edgefl/rng.h"
#include "fl_internal.h"

typedef enum lstate { L_OFFLINE = 0, L_IDLE, L_TRAINING, L_EVALUATING } lstate;

/* A local client, as the server's client_rec. */
typedef struct local_rec {
    uint32_t id;
    uint32_t n_train, n_eval;
    uint8_t state;
    uint8_t has_pk;         /* on the allow-list */
    uint64_t task_id;       /* seq of the gateway's TASK or EVAL of its current task */
    uint64_t last_seq;      /* authentication: highest message counter seen from it */
    uint8_t pk[EF_PK_BYTES];
} local_rec;

typedef enum gphase { G_IDLE = 0, G_TRAIN, G_EVAL } gphase;

struct ef_gateway {
    ef_gateway_config cfg;
    uint8_t *sk;            /* signing key (secure memory), or NULL */
    uint8_t server_pk[EF_PK_BYTES];
    int check_server;
    uint64_t server_seq;    /* highest counter seen from upstream (MODEL excepted) */
    uint64_t seq;           /* the gateway's message counter, both directions */
    ef_rng rng;
    local_rec *loc;         /* local clients sorted by id */
    size_t n_loc, cap_loc;
    uint32_t *pick;         /* selection scratch (cap_loc indices) */
    /* the upstream model */
    ef_buf *up_model;       /* the server's MODEL message, kept while a task needs it */
    uint32_t up_version;
    uint8_t up_hash[EF_HASH_BYTES];
    ef_buf *loc_model;      /* the same payload sealed and signed by the gateway */
    int model_unused;       /* no task or evaluation has used the held model yet */
    /* the upstream task or evaluation in progress */
    gphase ph;
    uint64_t up_task;       /* its upstream task id */
    uint32_t up_round;      /* its round (envelope) */
    uint32_t version;       /* model version it names */
    ef_task task;           /* the upstream task's settings */
    double last_deadline_s; /* deadline_s of the last upstream task (evaluations) */
    double deadline;        /* local deadline, or INFINITY */
    uint32_t picked, pending;
    uint32_t dropped;       /* local tasks of this round lost to a leave or restart */
    /* the partial of the local round */
    double *acc;            /* (n_params) sum n_i delta_i */
    uint64_t n_ex;          /* sum n_i */
    double loss_sum;        /* sum n_i loss_i */
    uint32_t steps;         /* max steps_i */
    uint32_t n_acc;         /* updates in the partial */
    /* the evaluation */
    uint64_t ev_n, ev_correct;
    double ev_loss;
    uint32_t ev_count;
    /* upstream check-in */
    int checked_in;
    uint64_t ann_train, ann_eval; /* sums last announced */
    int hold_announce;      /* a partial went upstream in this call: no CHECKIN now */
    ef_gateway_stats st;
    char note[256];
};

ef_gateway_config ef_gateway_defaults(void) {
    ef_gateway_config c = {0};
    c.min_local = 1;
    c.deadline_fraction = 0.8;
    c.recheckin_change = 0.5;
    return c;
}

uint64_t ef_gateway_task_seed(uint64_t upstream_seed, uint32_t client_id) {
    uint64_t x = upstream_seed ^ (((uint64_t)client_id + 1) * 0x9E3779B97F4A7C15ull);
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Records the event as the gateway's note and logs it. */
static void note(ef_gateway *g, ef_log_level level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void note(ef_gateway *g, ef_log_level level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->note, sizeof g->note, fmt, ap);
    va_end(ap);
    ef_log(level, "gateway %u: %s", g->cfg.id, g->note);
}

/* ---- local registry ------------------------------------------------------- */

/* Index of the first client with id >= `id`. */
static size_t lower_bound(const ef_gateway *g, uint32_t id) {
    size_t lo = 0, hi = g->n_loc;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (g->loc[mid].id < id) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static local_rec *find_local(ef_gateway *g, uint32_t id) {
    size_t i = lower_bound(g, id);
    return i < g->n_loc && g->loc[i].id == id ? &g->loc[i] : NULL;
}

/* Adds client `id` (offline). Pointers into the registry are invalidated. */
static ef_status add_local(ef_gateway *g, uint32_t id, local_rec **out) {
    if (g->n_loc == g->cap_loc) {
        size_t nc = g->cap_loc ? 2 * g->cap_loc : 16;
        local_rec *nv = ef_realloc(g->loc, nc * sizeof *nv);
        if (!nv) return EF_ERR_NOMEM;
        g->loc = nv;
        uint32_t *np = ef_realloc(g->pick, nc * sizeof *np);
        if (!np) return EF_ERR_NOMEM;
        g->pick = np;
        g->cap_loc = nc;
    }
    size_t i = lower_bound(g, id);
    memmove(&g->loc[i + 1], &g->loc[i], (g->n_loc - i) * sizeof *g->loc);
    memset(&g->loc[i], 0, sizeof *g->loc);
    g->loc[i].id = id;
    g->n_loc++;
    *out = &g->loc[i];
    return EF_OK;
}

size_t ef_gateway_online(const ef_gateway *g) {
    size_t n = 0;
    for (size_t i = 0; i < g->n_loc; i++) n += g->loc[i].state != L_OFFLINE;
    return n;
}

size_t ef_gateway_known(const ef_gateway *g) { return g->n_loc; }

/* Picks up to max_local idle clients with training (or evaluation) data
 * into g->pick: all of them in id order, or a random subset drawn with the
 * seeded RNG from the candidates in id order (reproducible whatever the
 * order in which they checked in). */
static size_t select_local(ef_gateway *g, int for_eval) {
    size_t n = 0;
    for (size_t i = 0; i < g->n_loc; i++) {
        const local_rec *c = &g->loc[i];
        if (c->state == L_IDLE && (for_eval ? c->n_eval : c->n_train) > 0) g->pick[n++] = (uint32_t)i;
    }
    size_t k = g->cfg.max_local && g->cfg.max_local < n ? g->cfg.max_local : n;
    if (k < n) {
        for (size_t i = 0; i < k; i++) { /* partial Fisher-Yates */
            size_t j = i + (size_t)ef_rng_below(&g->rng, n - i);
            uint32_t t = g->pick[i];
            g->pick[i] = g->pick[j];
            g->pick[j] = t;
        }
    }
    return k;
}

/* ---- outgoing messages ---------------------------------------------------- */

/* Seals, signs and queues a small upstream message from the gateway. */
static ef_status send_up(ef_gateway *g, ef_msg_type type, uint32_t round, uint64_t task,
                         const uint8_t *payload, size_t plen, ef_outbox *out) {
    ef_buf *b = ef__msg_copy(type, g->cfg.job, round, g->cfg.id, ++g->seq, task, payload, plen,
                             g->sk);
    if (!b) return EF_ERR_NOMEM;
    ef_status st = ef_outbox_push(out, EF_SERVER_ID, type, b);
    if (st) ef_buf_unref(b);
    return st;
}

/* Sums of n_train and n_eval over the online local clients. */
static void online_sums(const ef_gateway *g, uint64_t *train, uint64_t *eval, size_t *online) {
    *train = *eval = 0;
    *online = 0;
    for (size_t i = 0; i < g->n_loc; i++) {
        if (g->loc[i].state == L_OFFLINE) continue;
        *train += g->loc[i].n_train;
        *eval += g->loc[i].n_eval;
        (*online)++;
    }
}

static ef_status send_checkin(ef_gateway *g, uint64_t train, uint64_t eval, ef_outbox *out) {
    uint8_t p[8];
    ef__wr32(p, train > UINT32_MAX ? UINT32_MAX : (uint32_t)train);
    ef__wr32(p + 4, eval > UINT32_MAX ? UINT32_MAX : (uint32_t)eval);
    ef_status st = send_up(g, EF_MSG_CHECKIN, 0, 0, p, 8, out);
    if (st) return st;
    g->checked_in = 1;
    g->ann_train = train;
    g->ann_eval = eval;
    g->st.checkins_sent++;
    return EF_OK;
}

static int changed_much(const ef_gateway *g, uint64_t now, uint64_t announced) {
    if ((now == 0) != (announced == 0)) return 1;
    double d = fabs((double)now - (double)announced);
    return d > g->cfg.recheckin_change * (double)announced;
}

/* The first CHECKIN once min_local clients are online; later ones when the
 * sums changed much and no upstream task is held (see gateway.h). */
static ef_status maybe_announce(ef_gateway *g, ef_outbox *out) {
    uint64_t train, eval;
    size_t online;
    online_sums(g, &train, &eval, &online);
    if (!g->checked_in) {
        if (online < g->cfg.min_local) return EF_OK;
        return send_checkin(g, train, eval, out);
    }
    if (g->ph != G_IDLE || g->hold_announce) return EF_OK;
    if (!changed_much(g, train, g->ann_train) && !changed_much(g, eval, g->ann_eval)) return EF_OK;
    return send_checkin(g, train, eval, out);
}

/* The gateway's own MODEL message for the upstream model: the same payload,
 * sealed with its counter and signed with its key, built once and shared by
 * every local client. */
static ef_status local_model(ef_gateway *g) {
    if (g->loc_model) return EF_OK;
    ef_msg m;
    ef_status st = ef_wire_decode(g->up_model->data, g->up_model->len, (size_t)-1, &m);
    if (st) return st; /* decoded before: cannot fail */
    ef_buf *b = ef__msg_copy(EF_MSG_MODEL, g->cfg.job, g->up_version, EF_SERVER_ID, ++g->seq, 0,
                             m.payload, m.payload_len, g->sk);
    if (!b) return EF_ERR_NOMEM;
    g->loc_model = b;
    return EF_OK;
}

static void drop_models(ef_gateway *g) {
    g->model_unused = 0;
    ef_buf_unref(g->up_model);
    ef_buf_unref(g->loc_model);
    g->up_model = g->loc_model = NULL;
}

/* A finished round's model is dropped, unless the server already sent the
 * model of its next task (a round can end after that MODEL arrived). */
static void release_model(ef_gateway *g) {
    if (!g->model_unused) drop_models(g);
}

/* Queues the model and then the TASK or EVAL payload `p` for local client
 * c; the message opens c's task (task id = its seq). */
static ef_status send_local_task(ef_gateway *g, local_rec *c, ef_msg_type type,
                                 const uint8_t *p, size_t plen, ef_outbox *out) {
    ef_status st = ef_outbox_push(out, c->id, EF_MSG_MODEL, ef_buf_ref(g->loc_model));
    if (st) {
        ef_buf_unref(g->loc_model);
        return st;
    }
    uint64_t seq = ++g->seq;
    ef_buf *b = ef__msg_copy(type, g->cfg.job, g->up_round, EF_SERVER_ID, seq, seq, p, plen, g->sk);
    if (!b) return EF_ERR_NOMEM;
    if ((st = ef_outbox_push(out, c->id, type, b)) != EF_OK) {
        ef_buf_unref(b);
        return st;
    }
    c->task_id = seq;
    return EF_OK;
}

/* ---- local rounds --------------------------------------------------------- */

/* Ends the local round or evaluation in progress without an answer. */
static void abandon(ef_gateway *g, const char *why, uint64_t new_task) {
    if (g->ph == G_IDLE) return;
    for (size_t i = 0; i < g->n_loc; i++)
        if (g->loc[i].state == L_TRAINING || g->loc[i].state == L_EVALUATING)
            g->loc[i].state = L_IDLE;
    g->st.abandoned++;
    note(g, EF_LOG_WARN, "upstream %s %llu arrived while %s %llu was open: that one ends "
                         "without an answer and its late local answers are refused",
         why, (unsigned long long)new_task, g->ph == G_TRAIN ? "task" : "evaluation",
         (unsigned long long)g->up_task);
    g->ph = G_IDLE;
}

/* The local round is over (all answered or left, or its deadline): one
 * UPDATE upstream with the weighted mean, or nothing without an update. */
static ef_status finish_train(ef_gateway *g, ef_outbox *out) {
    uint32_t late = 0;
    for (size_t i = 0; i < g->n_loc; i++)
        if (g->loc[i].state == L_TRAINING) {
            g->loc[i].state = L_IDLE; /* its update, if it comes, is stale */
            late++;
        }
    g->st.local_late += late;
    g->ph = G_IDLE;
    ef_status st = EF_OK;
    if (g->n_acc == 0) {
        g->st.partials_skipped++;
        note(g, EF_LOG_WARN, "task %llu (round %u): no local update (%u asked, %u late, %u "
                             "left or restarted, %u refused): nothing sent upstream",
             (unsigned long long)g->up_task, g->up_round, g->picked, late, g->dropped,
             g->picked - late - g->dropped);
    } else {
        size_t n = g->cfg.n_params;
        size_t plen = EF_UPDATE_FIXED + n * 4;
        ef_buf *b = ef__msg_new(plen, g->sk != NULL);
        if (!b) return EF_ERR_NOMEM;
        uint8_t *p = b->data + EF_WIRE_HEADER;
        double total = (double)g->n_ex;
        ef__wr32(p, g->version);
        ef__wr32(p + 4, (uint32_t)g->n_ex); /* kept <= UINT32_MAX on accept */
        ef__wrf32(p + 8, (float)(g->loss_sum / total));
        ef__wr32(p + 12, g->steps);
        ef__wr32(p + 16, 0);
        ef__wr32(p + 20, 0);
        ef__wr64(p + 24, n);
        for (size_t j = 0; j < n; j++)
            ef__wrf32(p + EF_UPDATE_FIXED + 4 * j, (float)(g->acc[j] / total));
        ef__msg_seal(b, EF_MSG_UPDATE, g->cfg.job, g->up_round, g->cfg.id, ++g->seq, g->up_task,
                     plen, g->sk);
        if ((st = ef_outbox_push(out, EF_SERVER_ID, EF_MSG_UPDATE, b)) != EF_OK) {
            ef_buf_unref(b);
            return st;
        }
        g->st.partials_sent++;
        g->hold_announce = 1;
        note(g, EF_LOG_INFO, "task %llu (round %u): partial of %u local updates (%llu examples) "
                             "sent upstream; %u late, %u left or restarted",
             (unsigned long long)g->up_task, g->up_round, g->n_acc,
             (unsigned long long)g->n_ex, late, g->dropped);
    }
    release_model(g);
    return st;
}

static ef_status finish_eval(ef_gateway *g, ef_outbox *out) {
    uint32_t late = 0;
    for (size_t i = 0; i < g->n_loc; i++)
        if (g->loc[i].state == L_EVALUATING) {
            g->loc[i].state = L_IDLE;
            late++;
        }
    g->ph = G_IDLE;
    ef_status st = EF_OK;
    if (g->ev_count == 0) {
        note(g, EF_LOG_WARN, "evaluation %llu (round %u): no local result (%u asked, %u late): "
                             "nothing sent upstream",
             (unsigned long long)g->up_task, g->up_round, g->picked, late);
    } else {
        uint8_t p[24] = {0};
        ef__wr32(p, g->version);
        ef__wr32(p + 4, (uint32_t)g->ev_n); /* kept <= UINT32_MAX on accept */
        ef__wrf64(p + 8, g->ev_loss);
        ef__wr32(p + 16, (uint32_t)g->ev_correct);
        if ((st = send_up(g, EF_MSG_EVAL_RESULT, g->up_round, g->up_task, p, 24, out)) != EF_OK)
            return st;
        g->st.eval_results_sent++;
        g->hold_announce = 1;
    }
    release_model(g);
    return st;
}

static ef_status finish(ef_gateway *g, ef_outbox *out) {
    return g->ph == G_TRAIN ? finish_train(g, out) : finish_eval(g, out);
}

/* An upstream TASK for the model held: a local round. */
static ef_status start_train(ef_gateway *g, double now, const ef_msg *m, const ef_task *t,
                             ef_outbox *out) {
    g->st.tasks++;
    g->model_unused = 0;
    g->up_task = m->task;
    g->up_round = m->round;
    g->version = t->version;
    g->task = *t;
    g->last_deadline_s = t->deadline_s;
    size_t k = select_local(g, 0);
    if (k == 0) {
        g->st.partials_skipped++;
        note(g, EF_LOG_WARN, "task %llu (round %u): no local client can train (%zu online): "
                             "nothing sent upstream",
             (unsigned long long)m->task, m->round, ef_gateway_online(g));
        drop_models(g);
        return EF_OK;
    }
    ef_status st = local_model(g);
    if (st) return st;
    double span = t->deadline_s > 0 ? g->cfg.deadline_fraction * t->deadline_s : 0.0;
    g->n_ex = 0;
    g->loss_sum = 0;
    g->steps = 0;
    g->n_acc = 0;
    g->dropped = 0;
    g->picked = g->pending = 0;
    g->ph = G_TRAIN;
    g->deadline = span > 0 ? now + span : INFINITY;
    uint8_t p[EF_TASK_PAYLOAD];
    memset(p, 0, sizeof p);
    ef__wr32(p, t->version);
    memcpy(p + 4, t->hash, EF_HASH_BYTES);
    ef__wrf32(p + 36, (float)span);
    ef__wr16(p + 40, t->epochs);
    ef__wr16(p + 42, t->batch);
    ef__wrf32(p + 44, t->lr);
    ef__wrf32(p + 48, t->momentum);
    ef__wrf32(p + 52, t->prox_mu);
    for (size_t i = 0; i < k; i++) {
        local_rec *c = &g->loc[g->pick[i]];
        ef__wr64(p + 56, ef_gateway_task_seed(t->seed, c->id));
        if ((st = send_local_task(g, c, EF_MSG_TASK, p, sizeof p, out)) != EF_OK) return st;
        c->state = L_TRAINING;
        g->picked++;
        g->pending++;
        g->st.local_tasks++;
    }
    return EF_OK;
}

/* An upstream EVAL for the model held: a local evaluation. */
static ef_status start_eval(ef_gateway *g, double now, const ef_msg *m, const ef_eval_task *e,
                            ef_outbox *out) {
    g->st.evals++;
    g->model_unused = 0;
    g->up_task = m->task;
    g->up_round = m->round;
    g->version = e->version;
    size_t k = select_local(g, 1);
    if (k == 0) {
        note(g, EF_LOG_WARN, "evaluation %llu (round %u): no local client can evaluate (%zu "
                             "online): nothing sent upstream",
             (unsigned long long)m->task, m->round, ef_gateway_online(g));
        drop_models(g);
        return EF_OK;
    }
    ef_status st = local_model(g);
    if (st) return st;
    double span = g->last_deadline_s > 0 ? g->cfg.deadline_fraction * g->last_deadline_s : 0.0;
    g->ev_n = g->ev_correct = 0;
    g->ev_loss = 0;
    g->ev_count = 0;
    g->picked = g->pending = 0;
    g->ph = G_EVAL;
    g->deadline = span > 0 ? now + span : INFINITY;
    uint8_t p[8 + EF_HASH_BYTES];
    ef__wr32(p, e->version);
    ef__wr32(p + 4, 0);
    memcpy(p + 8, e->hash, EF_HASH_BYTES);
    for (size_t i = 0; i < k; i++) {
        local_rec *c = &g->loc[g->pick[i]];
        if ((st = send_local_task(g, c, EF_MSG_EVAL, p, sizeof p, out)) != EF_OK) return st;
        c->state = L_EVALUATING;
        g->picked++;
        g->pending++;
    }
    return EF_OK;
}

/* ---- upstream messages ----------------------------------------------------- */

static ef_status refuse_up(ef_gateway *g, ef_status st) {
    g->st.refused_upstream++;
    return st;
}

/* The model named by a task or evaluation must be the one held (version and
 * hash), as ef_client checks. */
static ef_status need_model(ef_gateway *g, uint32_t version, const uint8_t *hash) {
    if (!g->up_model || g->up_version != version)
        return ef__fail(EF_ERR_STATE, "gateway %u: upstream task for model version %u, which "
                                      "it does not hold", g->cfg.id, version);
    if (sodium_memcmp(hash, g->up_hash, EF_HASH_BYTES) != 0)
        return ef__fail(EF_ERR_FORMAT, "gateway %u: model version %u does not match the "
                                       "task's hash", g->cfg.id, version);
    return EF_OK;
}

ef_status ef_gateway_handle_upstream(ef_gateway *g, double now, ef_buf *buf, ef_outbox *out) {
    g->hold_announce = 0;
    ef_status st;
    /* a local round past its deadline sends its partial before anything new */
    if (g->ph != G_IDLE && now >= g->deadline && (st = finish(g, out)) != EF_OK) return st;
    ef_msg m;
    size_t max_payload = EF_MODEL_FIXED + g->cfg.n_params * 4;
    if (max_payload < EF_SA_SETUP_PAYLOAD) max_payload = EF_SA_SETUP_PAYLOAD;
    if ((st = ef_wire_decode(buf->data, buf->len, max_payload, &m)) != EF_OK)
        return refuse_up(g, st);
    if (m.job != g->cfg.job || m.sender != EF_SERVER_ID)
        return refuse_up(g, ef__fail(EF_ERR_STATE, "gateway %u: upstream message not from this "
                                                   "job's server", g->cfg.id));
    if (g->check_server) {
        if ((st = ef_wire_verify(buf->data, &m, g->server_pk)) != EF_OK) return refuse_up(g, st);
        /* a MODEL may come again (the retained broadcast after a reconnect):
         * it is checked against the task's hash before use */
        if (m.type != EF_MSG_MODEL) {
            if (m.seq <= g->server_seq)
                return refuse_up(g, ef__fail(EF_ERR_AUTH, "gateway %u: upstream %s replayed "
                                                          "(server counter %llu, last seen %llu)",
                                             g->cfg.id, ef_msg_type_name(m.type),
                                             (unsigned long long)m.seq,
                                             (unsigned long long)g->server_seq));
            g->server_seq = m.seq;
        }
    }
    switch (m.type) {
    case EF_MSG_MODEL: {
        ef_model_msg mm;
        if ((st = ef_decode_model(&m, &mm)) != EF_OK) return refuse_up(g, st);
        if (mm.n != g->cfg.n_params)
            return refuse_up(g, ef__fail(EF_ERR_FORMAT, "gateway %u: upstream model of %llu "
                                                        "values, expected %zu", g->cfg.id,
                                         (unsigned long long)mm.n, g->cfg.n_params));
        /* local clients of a round in progress hold their own reference to
         * the local model they were sent: replacing ours is safe */
        drop_models(g);
        g->up_model = ef_buf_ref(buf);
        g->model_unused = 1;
        g->up_version = mm.version;
        ef_hash(g->up_hash, mm.raw, mm.n * 4);
        return EF_OK;
    }
    case EF_MSG_TASK: {
        ef_task t;
        if ((st = ef_decode_task(&m, &t)) != EF_OK) return refuse_up(g, st);
        if (g->ph == G_TRAIN && m.task == g->up_task)
            return refuse_up(g, ef__fail(EF_ERR_STATE, "gateway %u: upstream task %llu is "
                                                       "already in progress (duplicate)",
                                         g->cfg.id, (unsigned long long)m.task));
        if ((st = need_model(g, t.version, t.hash)) != EF_OK) return refuse_up(g, st);
        abandon(g, "task", m.task);
        return start_train(g, now, &m, &t, out);
    }
    case EF_MSG_EVAL: {
        ef_eval_task e;
        if ((st = ef_decode_eval(&m, &e)) != EF_OK) return refuse_up(g, st);
        if (g->ph == G_EVAL && m.task == g->up_task)
            return refuse_up(g, ef__fail(EF_ERR_STATE, "gateway %u: upstream evaluation %llu "
                                                       "is already in progress (duplicate)",
                                         g->cfg.id, (unsigned long long)m.task));
        if ((st = need_model(g, e.version, e.hash)) != EF_OK) return refuse_up(g, st);
        abandon(g, "evaluation", m.task);
        return start_eval(g, now, &m, &e, out);
    }
    case EF_MSG_SA_SETUP:
    case EF_MSG_SA_KEYS:
    case EF_MSG_SA_FORWARD:
    case EF_MSG_SA_UNMASK:
        return refuse_up(g, ef__fail(EF_ERR_UNSUPPORTED, "gateway %u: upstream %s refused: "
                                                         "nested secure aggregation is not "
                                                         "supported (run the upstream server "
                                                         "without secure aggregation)",
                                     g->cfg.id, ef_msg_type_name(m.type)));
    default:
        return refuse_up(g, ef__fail(EF_ERR_STATE, "gateway %u: a gateway does not accept %s "
                                                   "messages from upstream",
                                     g->cfg.id, ef_msg_type_name(m.type)));
    }
}

/* ---- local messages ------------------------------------------------------- */

static ef_status refuse_local(ef_gateway *g, ef_status st) {
    g->st.refused_local++;
    return st;
}

/* Client c lost its task, if any, and is `after` from now on. */
static ef_status lost(ef_gateway *g, local_rec *c, lstate after, ef_outbox *out) {
    lstate was = (lstate)c->state;
    c->state = (uint8_t)after;
    if (was == L_TRAINING && g->ph == G_TRAIN) {
        g->st.local_dropped++;
        g->dropped++;
        if (--g->pending == 0) return finish_train(g, out);
    } else if (was == L_EVALUATING && g->ph == G_EVAL) {
        if (--g->pending == 0) return finish_eval(g, out);
    }
    return EF_OK;
}

/* A local update refused for its content still ends its sender's task (as
 * at the server): the round may be complete now. */
static ef_status spend(ef_gateway *g, local_rec *c, ef_status refusal, ef_outbox *out) {
    refusal = refuse_local(g, refusal);
    c->state = L_IDLE;
    ef_status r = EF_OK;
    if (--g->pending == 0) r = finish_train(g, out);
    return r ? r : refusal;
}

static ef_status on_update(ef_gateway *g, const ef_msg *m, local_rec *c, ef_outbox *out) {
    ef_update u;
    ef_status st = ef_decode_update(m, &u);
    if (st) return refuse_local(g, st);
    if (g->ph != G_TRAIN || c->state != L_TRAINING || m->task != c->task_id ||
        u.version != g->version || m->round != g->up_round)
        return refuse_local(g, ef__fail(EF_ERR_STATE, "gateway %u: update from local client %u "
                                                      "(round %u, task %llu, version %u): no such "
                                                      "task open (stale or duplicate)",
                                        g->cfg.id, c->id, m->round, (unsigned long long)m->task,
                                        u.version));
    size_t n = g->cfg.n_params;
    if (u.n != n)
        return refuse_local(g, ef__fail(EF_ERR_FORMAT, "gateway %u: update from local client %u "
                                                       "has %llu values, the model has %zu",
                                        g->cfg.id, c->id, (unsigned long long)u.n, n));
    /* (ef_decode_update refuses n_examples == 0.) Scan first, so that a
     * refused update leaves no trace in the partial. */
    for (size_t j = 0; j < n; j++) {
        float d = ef__rdf32(u.raw + 4 * j);
        if (!isfinite(d))
            return spend(g, c, ef__fail(EF_ERR_INVALID, "gateway %u: update from local client %u "
                                                        "has a non-finite value (%g) at "
                                                        "parameter %zu",
                                        g->cfg.id, c->id, (double)d, j),
                         out);
    }
    if (g->n_ex + u.n_examples > UINT32_MAX)
        return spend(g, c, ef__fail(EF_ERR_RANGE, "gateway %u: update from local client %u "
                                                  "takes the partial past 2^32 - 1 examples",
                                    g->cfg.id, c->id),
                     out);
    double w = (double)u.n_examples;
    for (size_t j = 0; j < n; j++) {
        double d = (double)ef__rdf32(u.raw + 4 * j);
        g->acc[j] = g->n_acc ? g->acc[j] + w * d : w * d;
    }
    g->n_acc++;
    g->n_ex += u.n_examples;
    g->loss_sum += (double)u.train_loss * w;
    if (u.steps > g->steps) g->steps = u.steps;
    g->st.updates_received++;
    c->state = L_IDLE;
    if (--g->pending == 0) return finish_train(g, out);
    return EF_OK;
}

static ef_status on_eval_result(ef_gateway *g, const ef_msg *m, local_rec *c, ef_outbox *out) {
    ef_eval_result r;
    ef_status st = ef_decode_eval_result(m, &r);
    if (st) return refuse_local(g, st);
    if (g->ph != G_EVAL || c->state != L_EVALUATING || m->task != c->task_id ||
        r.version != g->version || m->round != g->up_round)
        return refuse_local(g, ef__fail(EF_ERR_STATE, "gateway %u: evaluation result from local "
                                                      "client %u (round %u, task %llu) not "
                                                      "expected (stale or duplicate)",
                                        g->cfg.id, c->id, m->round,
                                        (unsigned long long)m->task));
    if (g->ev_n + r.n_examples > UINT32_MAX || g->ev_correct + r.correct > UINT32_MAX) {
        st = refuse_local(g, ef__fail(EF_ERR_RANGE, "gateway %u: evaluation result from local "
                                                    "client %u takes the sums past 2^32 - 1",
                                      g->cfg.id, c->id));
        ef_status r2 = lost(g, c, L_IDLE, out);
        return r2 ? r2 : st;
    }
    g->ev_n += r.n_examples;
    g->ev_correct += r.correct;
    g->ev_loss += r.loss_sum;
    g->ev_count++;
    c->state = L_IDLE;
    if (--g->pending == 0) return finish_eval(g, out);
    return EF_OK;
}

/* A decoded local message m (from buf). */
static ef_status dispatch_local(ef_gateway *g, const uint8_t *buf, const ef_msg *mp,
                                ef_outbox *out) {
    const ef_msg m = *mp;
    ef_status st;
    if (m.job != g->cfg.job)
        return refuse_local(g, ef__fail(EF_ERR_STATE, "gateway %u: message for job %llu, this "
                                                      "gateway runs job %llu", g->cfg.id,
                                        (unsigned long long)m.job,
                                        (unsigned long long)g->cfg.job));
    local_rec *c = find_local(g, m.sender);
    if (g->cfg.authenticate &&
        (st = ef__auth_incoming(buf, &m, c && c->has_pk ? c->pk : NULL,
                                c ? &c->last_seq : NULL)) != EF_OK)
        return refuse_local(g, st);
    if (m.type == EF_MSG_CHECKIN) {
        ef_checkin ci;
        if ((st = ef_decode_checkin(&m, &ci)) != EF_OK) return refuse_local(g, st);
        if (m.sender >= EF_BROADCAST_ID)
            return refuse_local(g, ef__fail(EF_ERR_FORMAT, "gateway %u: checkin with reserved "
                                                           "id %u", g->cfg.id, m.sender));
        if (!c && (st = add_local(g, m.sender, &c)) != EF_OK) return st;
        c->n_train = ci.n_train;
        c->n_eval = ci.n_eval;
        if (c->state == L_TRAINING || c->state == L_EVALUATING) {
            /* it restarted and lost its task */
            if ((st = lost(g, c, L_IDLE, out)) != EF_OK) return st;
        } else {
            c->state = L_IDLE;
        }
        return maybe_announce(g, out);
    }
    if (!c)
        return refuse_local(g, ef__fail(EF_ERR_STATE, "gateway %u: %s from unknown local client "
                                                      "%u", g->cfg.id, ef_msg_type_name(m.type),
                                        m.sender));
    switch (m.type) {
    case EF_MSG_UPDATE: return on_update(g, &m, c, out);
    case EF_MSG_EVAL_RESULT: return on_eval_result(g, &m, c, out);
    case EF_MSG_LEAVE: {
        uint32_t reason;
        if ((st = ef_decode_leave(&m, &reason)) != EF_OK) return refuse_local(g, st);
        if ((st = lost(g, c, L_OFFLINE, out)) != EF_OK) return st;
        return maybe_announce(g, out);
    }
    case EF_MSG_SA_ADVERTISE:
    case EF_MSG_SA_SHARES:
    case EF_MSG_SA_MASKED:
    case EF_MSG_SA_REVEAL:
        return refuse_local(g, ef__fail(EF_ERR_UNSUPPORTED, "gateway %u: %s from local client "
                                                            "%u refused: secure aggregation "
                                                            "between a gateway and its clients "
                                                            "is not supported",
                                        g->cfg.id, ef_msg_type_name(m.type), m.sender));
    default:
        return refuse_local(g, ef__fail(EF_ERR_STATE, "gateway %u: a gateway does not accept %s "
                                                      "messages from local clients",
                                        g->cfg.id, ef_msg_type_name(m.type)));
    }
}

ef_status ef_gateway_handle_local(ef_gateway *g, double now, const uint8_t *buf, size_t len,
                                  ef_outbox *out) {
    g->hold_announce = 0;
    ef_status st;
    /* a message at or after the local deadline finds the round closed, even
     * if the driver has not ticked yet */
    if (g->ph != G_IDLE && now >= g->deadline && (st = finish(g, out)) != EF_OK) return st;
    ef_msg m;
    if ((st = ef_wire_decode(buf, len, g->cfg.max_message, &m)) != EF_OK)
        return refuse_local(g, st);
    uint64_t refused = g->st.refused_local;
    st = dispatch_local(g, buf, &m, out);
    /* every refused message that decodes as an UPDATE, whatever the reason */
    if (m.type == EF_MSG_UPDATE && g->st.refused_local > refused) g->st.updates_rejected++;
    return st;
}

ef_status ef_gateway_tick(ef_gateway *g, double now, ef_outbox *out) {
    g->hold_announce = 0;
    if (g->ph != G_IDLE && now >= g->deadline) return finish(g, out);
    return EF_OK;
}

double ef_gateway_next_timer(const ef_gateway *g) {
    return g->ph != G_IDLE ? g->deadline : INFINITY;
}

ef_status ef_gateway_checkin(ef_gateway *g, ef_outbox *out) {
    uint64_t train, eval;
    size_t online;
    online_sums(g, &train, &eval, &online);
    if (online < g->cfg.min_local)
        return ef__fail(EF_ERR_STATE, "gateway %u: %zu local clients online, %u needed before "
                                      "checking in upstream", g->cfg.id, online,
                        g->cfg.min_local);
    return send_checkin(g, train, eval, out);
}

ef_status ef_gateway_leave(ef_gateway *g, uint32_t reason, ef_outbox *out) {
    if (g->ph != G_IDLE) {
        for (size_t i = 0; i < g->n_loc; i++)
            if (g->loc[i].state == L_TRAINING || g->loc[i].state == L_EVALUATING)
                g->loc[i].state = L_IDLE;
        g->ph = G_IDLE;
    }
    drop_models(g);
    uint8_t p[4];
    ef__wr32(p, reason);
    ef_status st = send_up(g, EF_MSG_LEAVE, 0, 0, p, 4, out);
    if (st == EF_OK) g->checked_in = 0; /* the next check-in announces it again */
    return st;
}

ef_status ef_gateway_set_seq(ef_gateway *g, uint64_t first_seq) {
    if (first_seq < g->seq)
        return ef__fail(EF_ERR_INVALID, "gateway %u: message counter %llu is below the last one "
                                        "used (%llu)", g->cfg.id, (unsigned long long)first_seq,
                        (unsigned long long)g->seq);
    g->seq = first_seq;
    return EF_OK;
}

/* ---- construction --------------------------------------------------------- */

ef_status ef_gateway_new(ef_gateway **out, const ef_gateway_config *cfg) {
    *out = NULL;
    if (cfg->id >= EF_BROADCAST_ID)
        return ef__fail(EF_ERR_INVALID, "gateway: id %u is reserved", cfg->id);
    if (cfg->n_params == 0 || cfg->n_params > (SIZE_MAX - 4096) / 8)
        return ef__fail(EF_ERR_INVALID, "gateway: model size %zu is out of range", cfg->n_params);
    if (!(cfg->deadline_fraction > 0 && cfg->deadline_fraction <= 1))
        return ef__fail(EF_ERR_INVALID, "gateway: deadline fraction must be in (0, 1], got %g",
                        cfg->deadline_fraction);
    if (!(cfg->recheckin_change >= 0) || !isfinite(cfg->recheckin_change))
        return ef__fail(EF_ERR_INVALID, "gateway: re-check-in change must be a finite fraction "
                                        ">= 0, got %g", cfg->recheckin_change);
    if (sodium_init() < 0) return ef__fail(EF_ERR_INTERNAL, "libsodium failed to initialize");
    ef_gateway *g = ef_calloc(1, sizeof *g);
    if (!g) return EF_ERR_NOMEM;
    g->cfg = *cfg;
    g->cfg.sign_key = g->cfg.server_pk = NULL; /* copied below */
    if (g->cfg.min_local == 0) g->cfg.min_local = 1;
    if (g->cfg.max_message == 0) g->cfg.max_message = cfg->n_params * 4 + 1024;
    g->seq = cfg->first_seq;
    g->deadline = INFINITY;
    ef_rng_seed(&g->rng, cfg->seed ^ 0x6A7E3A1ull);
    if (!(g->acc = ef_malloc(cfg->n_params * sizeof *g->acc))) goto nomem;
    if (cfg->sign_key) {
        if (!(g->sk = sodium_malloc(EF_SK_BYTES))) goto nomem;
        memcpy(g->sk, cfg->sign_key, EF_SK_BYTES);
        sodium_mprotect_readonly(g->sk);
    }
    if (cfg->server_pk) {
        memcpy(g->server_pk, cfg->server_pk, EF_PK_BYTES);
        g->check_server = 1;
    }
    *out = g;
    return EF_OK;
nomem:
    ef_gateway_free(g);
    return EF_ERR_NOMEM;
}

void ef_gateway_free(ef_gateway *g) {
    if (!g) return;
    drop_models(g);
    ef_free(g->acc);
    ef_free(g->loc);
    ef_free(g->pick);
    if (g->sk) sodium_free(g->sk);
    ef_free(g);
}

ef_status ef_gateway_allow(ef_gateway *g, uint32_t id, const uint8_t pk[EF_PK_BYTES]) {
    if (id >= EF_BROADCAST_ID)
        return ef__fail(EF_ERR_INVALID, "gateway allow-list: reserved client id %u", id);
    local_rec *c = find_local(g, id);
    if (c && c->has_pk && sodium_memcmp(c->pk, pk, EF_PK_BYTES) != 0)
        return ef__fail(EF_ERR_INVALID, "gateway allow-list: client %u already has another key",
                        id);
    if (!c) {
        ef_status st = add_local(g, id, &c);
        if (st) return st;
    }
    memcpy(c->pk, pk, EF_PK_BYTES);
    c->has_pk = 1;
    return EF_OK;
}

void ef_gateway_get_stats(const ef_gateway *g, ef_gateway_stats *out) { *out = g->st; }

const char *ef_gateway_note(const ef_gateway *g) { return g->note; }
