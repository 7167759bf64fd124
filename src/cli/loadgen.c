/*
 * The light clients of `edgefl loadgen` (see loadgen.h). The client logic
 * follows the MQTT client driver (src/transport/driver.c) message for
 * message -- check-in after a server announcement, tasks waiting for their
 * model, superseded tasks, a new counter run after a new session -- with
 * the model shared by the process and the work spread over a few worker
 * threads that poll their clients' connections without blocking.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loadgen.h"

#define BIRTH_MAX 96
#define EVENTS_PER_PASS 16
#define INBOX_MAX_PAYLOAD 65536 /* tasks and evaluations are small */
#define LOG_REFUSALS 10         /* refusals logged one by one; the rest are counted */
#define CLOSERS 16              /* threads closing connections at the end */

/* An inbox message waiting for its model (TASK or EVAL, decoded). */
typedef struct pmsg {
    ef_msg_type type;
    uint32_t round;
    uint64_t task;             /* the server's task id */
    ef_task t;                 /* TASK: the task; EVAL: version and hash in t */
    double arrived;
} pmsg;

typedef struct lc {
    uint32_t id;
    ef_mqtt *m;
    const uint8_t *sk;
    uint64_t first_seq, seq;   /* counter run and last counter used */
    uint64_t server_seq;       /* highest counter seen from the server */
    char inbox[64];
    pmsg *fifo;
    size_t n_fifo, cap_fifo;
    pmsg job;                  /* the task being worked on */
    int has_job;
    double ready_at;           /* when the emulated device is done with it */
    int inflight;              /* holds an upload slot until the broker acknowledged */
    int need_checkin, checked_in, done, ever_up;
    char instance[BIRTH_MAX];  /* the server instance last seen announced */
    uint64_t ann_gen;          /* shared mode: announcement generation seen */
    uint64_t wait_gen;         /* model store generation when the head last waited */
    size_t wait_n;
    uint64_t answered;
} lc;

typedef struct model_slot {
    ef_buf *buf;               /* the MODEL message */
    uint32_t version;
    uint8_t hash[EF_HASH_BYTES];
    const float *w;            /* its floats (inside buf, or `copy`) */
    float *copy;
} model_slot;

typedef struct round_rec {
    lg_round r;
    float *lat;
    size_t n_lat, cap_lat;
} round_rec;

typedef struct worker {
    lg *g;
    int index;
    pthread_t thread;
    ef_buf *upd;               /* UPDATE being built (reused: publishing copies it) */
} worker;

struct lg {
    lg_config cfg;
    lc *c;
    char server_topic[64], bcast[64], online[80];
    ef_mqtt *bm;               /* shared broadcast connection (NULL with full_fanout) */
    pthread_t reader;
    int reader_ok;
    worker *w;
    int n_workers;
    atomic_int stop;
    int stopped;
    double t0;
    /* the model, held once */
    pthread_mutex_t store_mu;
    model_slot slot[2];
    atomic_uint_fast64_t store_gen;
    /* the server's announcement (shared mode) */
    pthread_mutex_t ann_mu;
    char ann[BIRTH_MAX];
    atomic_uint_fast64_t ann_gen;
    /* counters */
    atomic_uint_fast64_t checkins, tasks, updates, evals, refused, superseded, renewals,
        leaves, bytes_out, models, model_dups, logged;
    atomic_uint ever_connected, done, window_used, last_round;
    atomic_int warned_secagg, warned_announce;
    _Atomic double all_connected_s;
    /* rounds */
    pthread_mutex_t round_mu;
    round_rec *rounds;         /* index: round number */
    size_t cap_rounds;
    /* fatal */
    pthread_mutex_t fail_mu;
    ef_status fatal;
    char fatal_msg[256];
    lg_stats final;            /* connection totals, filled by lg_stop */
};

/* ---- small helpers ---------------------------------------------------------- */

static void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void wr64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void wrf32(uint8_t *p, float f) {
    uint32_t v;
    memcpy(&v, &f, 4);
    wr32(p, v);
}
static void wrf64(uint8_t *p, double f) {
    uint64_t v;
    memcpy(&v, &f, 8);
    wr64(p, v);
}

static double now_s(const lg *g) { return ef_now() - g->t0; }

static void sleep_ms(double ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(fmod(ms, 1000.0) * 1e6)};
    nanosleep(&ts, NULL);
}

static void fail(lg *g, ef_status st, const char *what) {
    pthread_mutex_lock(&g->fail_mu);
    if (g->fatal == EF_OK) {
        g->fatal = st;
        snprintf(g->fatal_msg, sizeof g->fatal_msg, "%s: %s", what,
                 st == EF_ERR_NOMEM ? "out of memory" : ef_last_error());
    }
    pthread_mutex_unlock(&g->fail_mu);
    atomic_store(&g->stop, 1);
}

/* A refused server message: counted, the first few logged. */
static void refuse(lg *g, const lc *c, const char *why) {
    atomic_fetch_add(&g->refused, 1);
    uint64_t k = atomic_fetch_add(&g->logged, 1);
    if (k < LOG_REFUSALS)
        ef_log(EF_LOG_WARN, "loadgen: client %u refused a server message: %s", c->id, why);
    else if (k == LOG_REFUSALS)
        ef_log(EF_LOG_WARN, "loadgen: further refusals are counted, not logged");
}

static round_rec *round_of(lg *g, uint32_t round) {
    if (round >= g->cap_rounds) {
        size_t nc = g->cap_rounds ? g->cap_rounds : 64;
        while (nc <= round) nc *= 2;
        round_rec *nv = ef_realloc(g->rounds, nc * sizeof *nv);
        if (!nv) return NULL;
        memset(nv + g->cap_rounds, 0, (nc - g->cap_rounds) * sizeof *nv);
        g->rounds = nv;
        g->cap_rounds = nc;
    }
    round_rec *r = &g->rounds[round];
    if (r->r.round == 0) {
        r->r.round = round;
        r->r.first_task = r->r.first_update = INFINITY;
        r->r.last_task = r->r.last_update = -INFINITY;
    }
    return r;
}

static void note_task(lg *g, uint32_t round, double t) {
    pthread_mutex_lock(&g->round_mu);
    round_rec *r = round_of(g, round);
    if (r) {
        r->r.tasks++;
        if (t < r->r.first_task) r->r.first_task = t;
        if (t > r->r.last_task) r->r.last_task = t;
    }
    pthread_mutex_unlock(&g->round_mu);
    unsigned cur = atomic_load(&g->last_round);
    while (round > cur && !atomic_compare_exchange_weak(&g->last_round, &cur, round)) {
    }
}

static void note_answer(lg *g, uint32_t round, int update, double t, double latency) {
    pthread_mutex_lock(&g->round_mu);
    round_rec *r = round_of(g, round);
    if (r) {
        if (update) r->r.updates++;
        else r->r.evals++;
        if (t < r->r.first_update) r->r.first_update = t;
        if (t > r->r.last_update) r->r.last_update = t;
        if (r->n_lat == r->cap_lat) {
            size_t nc = r->cap_lat ? 2 * r->cap_lat : 256;
            float *nv = ef_realloc(r->lat, nc * sizeof *nv);
            if (nv) r->lat = nv, r->cap_lat = nc;
        }
        if (r->n_lat < r->cap_lat) r->lat[r->n_lat++] = (float)latency;
    }
    pthread_mutex_unlock(&g->round_mu);
}

/* ---- the model store ---------------------------------------------------------- */

/* Takes in a MODEL from the broadcast topic (any connection): checked,
 * hashed once, kept as one of the newest two versions. Copies that are
 * byte for byte a held model are dropped at the cost of a memcmp. */
static void store_offer(lg *g, ef_buf *b) {
    ef_buf *held[2] = {NULL, NULL};
    pthread_mutex_lock(&g->store_mu);
    for (int i = 0; i < 2; i++)
        if (g->slot[i].buf && g->slot[i].buf->len == b->len) held[i] = ef_buf_ref(g->slot[i].buf);
    pthread_mutex_unlock(&g->store_mu);
    int dup = 0;
    for (int i = 0; i < 2; i++) {
        if (held[i] && (held[i] == b || memcmp(held[i]->data, b->data, b->len) == 0)) dup = 1;
        ef_buf_unref(held[i]);
    }
    if (dup) {
        atomic_fetch_add(&g->model_dups, 1);
        return;
    }
    ef_msg h;
    ef_model_msg mm;
    if (ef_wire_decode(b->data, b->len, (size_t)-1, &h) != EF_OK || h.type != EF_MSG_MODEL ||
        h.job != g->cfg.job || h.sender != EF_SERVER_ID || ef_decode_model(&h, &mm) != EF_OK) {
        ef_log(EF_LOG_WARN, "loadgen: ignoring a broadcast that is not this job's model");
        return;
    }
    if (g->cfg.server_pk && ef_wire_verify(b->data, &h, g->cfg.server_pk) != EF_OK) {
        ef_log(EF_LOG_WARN, "loadgen: ignoring a model not signed by the server: %s",
               ef_last_error());
        return;
    }
    if (mm.n != g->cfg.n_params) {
        ef_log(EF_LOG_WARN, "loadgen: ignoring a model of %llu values (expected %zu)",
               (unsigned long long)mm.n, g->cfg.n_params);
        return;
    }
    uint8_t hash[EF_HASH_BYTES];
    ef_hash(hash, mm.raw, mm.n * 4);
    float *copy = NULL;
    const float *w = (const float *)(const void *)mm.raw;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (((uintptr_t)mm.raw & 3) != 0)
#endif
    {
        if (!(copy = ef_malloc((mm.n ? mm.n : 1) * sizeof *copy))) {
            fail(g, EF_ERR_NOMEM, "keeping the model");
            return;
        }
        ef_wire_floats(copy, mm.raw, mm.n);
        w = copy;
    }
    pthread_mutex_lock(&g->store_mu);
    int known = 0;
    for (int i = 0; i < 2; i++)
        if (g->slot[i].buf && g->slot[i].version == mm.version &&
            memcmp(g->slot[i].hash, hash, EF_HASH_BYTES) == 0)
            known = 1;
    if (!known) {
        int s = !g->slot[0].buf ? 0 : !g->slot[1].buf ? 1
                : g->slot[0].version <= g->slot[1].version ? 0 : 1;
        ef_buf_unref(g->slot[s].buf);
        ef_free(g->slot[s].copy);
        g->slot[s] = (model_slot){ef_buf_ref(b), mm.version, {0}, w, copy};
        memcpy(g->slot[s].hash, hash, EF_HASH_BYTES);
        copy = NULL;
        atomic_fetch_add(&g->store_gen, 1);
        atomic_fetch_add(&g->models, 1);
    }
    pthread_mutex_unlock(&g->store_mu);
    ef_free(copy);
    if (known) atomic_fetch_add(&g->model_dups, 1);
    else ef_log(EF_LOG_INFO, "loadgen: model version %u received (%zu bytes)", mm.version, b->len);
}

/* 1: the store holds (version, hash); *newest: the newest version held. */
static int store_has(lg *g, uint32_t version, const uint8_t *hash, uint32_t *newest) {
    int has = 0;
    *newest = 0;
    pthread_mutex_lock(&g->store_mu);
    for (int i = 0; i < 2; i++) {
        if (!g->slot[i].buf) continue;
        if (g->slot[i].version > *newest) *newest = g->slot[i].version;
        if (g->slot[i].version == version && memcmp(g->slot[i].hash, hash, EF_HASH_BYTES) == 0)
            has = 1;
    }
    pthread_mutex_unlock(&g->store_mu);
    return has;
}

/* A reference to the model (version, hash) and its floats, or NULL. */
static ef_buf *store_get(lg *g, uint32_t version, const uint8_t *hash, const float **w) {
    ef_buf *b = NULL;
    pthread_mutex_lock(&g->store_mu);
    for (int i = 0; i < 2; i++)
        if (g->slot[i].buf && g->slot[i].version == version &&
            memcmp(g->slot[i].hash, hash, EF_HASH_BYTES) == 0) {
            b = ef_buf_ref(g->slot[i].buf);
            *w = g->slot[i].w;
        }
    pthread_mutex_unlock(&g->store_mu);
    return b;
}

/* ---- the server's announcement ----------------------------------------------- */

/* "edgefl-server <instance> fresh|resumed" on edgefl/<job>/broadcast/online,
 * handled as the client driver does: a new fresh server knows no client,
 * so a client that had checked in checks in again (what it held for the
 * old one is void); a resumed one restored its clients. */
static void lc_online(lg *g, lc *c, const char *text) {
    char inst[BIRTH_MAX], mode[16];
    if (sscanf(text, "edgefl-server %63s %15s", inst, mode) != 2 ||
        (strcmp(mode, "fresh") != 0 && strcmp(mode, "resumed") != 0)) {
        if (atomic_exchange(&g->warned_announce, 1) == 0)
            ef_log(EF_LOG_WARN, "loadgen: ignoring a malformed server announcement");
        return;
    }
    if (strcmp(inst, c->instance) == 0) return;
    int first = c->instance[0] == '\0';
    snprintf(c->instance, sizeof c->instance, "%s", inst);
    if (g->cfg.full_fanout) { /* for lg_get_stats (the reader keeps it otherwise) */
        pthread_mutex_lock(&g->ann_mu);
        if (strcmp(g->ann, text) != 0) snprintf(g->ann, sizeof g->ann, "%s", text);
        pthread_mutex_unlock(&g->ann_mu);
    }
    if (!first && c->checked_in && strcmp(mode, "fresh") == 0) {
        c->n_fifo = 0;
        c->has_job = 0;
        c->need_checkin = 1;
    }
}

static void text_of(const ef_buf *b, char *out, size_t n) {
    size_t k = b->len < n - 1 ? b->len : n - 1;
    memcpy(out, b->data, k);
    out[k] = '\0';
}

/* ---- messages to the server ---------------------------------------------------- */

/* Seals (and signs) a small message and publishes it to the server inbox. */
static ef_status lc_send_small(lg *g, lc *c, ef_msg_type type, uint32_t round, uint64_t task,
                               const uint8_t *payload, size_t plen) {
    uint8_t buf[EF_WIRE_HEADER + 32 + EF_SIG_BYTES];
    memcpy(buf + EF_WIRE_HEADER, payload, plen);
    ef_wire_seal_task(buf, type, g->cfg.job, round, c->id, ++c->seq, task, plen);
    if (c->sk) ef_wire_sign(buf, plen, c->sk);
    size_t len = EF_WIRE_HEADER + plen + (c->sk ? EF_SIG_BYTES : 0);
    ef_status st = ef_mqtt_publish(c->m, g->server_topic, buf, len, 0);
    if (st == EF_OK) atomic_fetch_add(&g->bytes_out, len);
    return st;
}

static ef_status lc_checkin(lg *g, lc *c) {
    uint8_t p[8];
    wr32(p, g->cfg.n_train[c->id - g->cfg.first_id]);
    wr32(p + 4, g->cfg.n_eval);
    ef_status st = lc_send_small(g, c, EF_MSG_CHECKIN, 0, 0, p, sizeof p);
    if (st == EF_OK) {
        c->need_checkin = 0;
        c->checked_in = 1;
        atomic_fetch_add(&g->checkins, 1);
    }
    return st;
}

static ef_status lc_leave(lg *g, lc *c) {
    uint8_t p[4];
    wr32(p, 0);
    ef_status st = lc_send_small(g, c, EF_MSG_LEAVE, 0, 0, p, sizeof p);
    if (st == EF_OK) atomic_fetch_add(&g->leaves, 1);
    return st;
}

/* The will of counter run c->first_seq (see EF_MQTT_WILL_GAP). */
static ef_status lc_will(lg *g, const lc *c, ef_buf **will) {
    ef_client_config cc = {.job = g->cfg.job, .id = c->id, .first_seq = c->first_seq,
                           .sign_key = c->sk};
    return ef_mqtt_client_will(&cc, will);
}

/* A new session: the broker may have published the will, so continue above
 * it and arm the next one (the client driver's cli_renew). */
static ef_status lc_renew(lg *g, lc *c) {
    lc next = *c;
    next.first_seq = c->first_seq + EF_MQTT_WILL_GAP + 1;
    ef_buf *will = NULL;
    ef_status st = lc_will(g, &next, &will);
    if (st == EF_OK) st = ef_mqtt_set_will(c->m, g->server_topic, will->data, will->len);
    ef_buf_unref(will);
    if (st != EF_OK) return st;
    c->first_seq = next.first_seq;
    c->seq = c->first_seq;
    atomic_fetch_add(&g->renewals, 1);
    return EF_OK;
}

/* ---- inbox ----------------------------------------------------------------------- */

/* An inbox message: checked (envelope, job, sender, signature and counter)
 * and queued for its model; refused otherwise. */
static ef_status lc_accept(lg *g, lc *c, const ef_buf *b) {
    ef_msg h;
    char why[160];
    if (ef_wire_decode(b->data, b->len, INBOX_MAX_PAYLOAD, &h) != EF_OK) {
        snprintf(why, sizeof why, "%s", ef_last_error());
        refuse(g, c, why);
        return EF_OK;
    }
    if (h.job != g->cfg.job || h.sender != EF_SERVER_ID) {
        refuse(g, c, "not from this job's server");
        return EF_OK;
    }
    if (g->cfg.server_pk) {
        if (ef_wire_verify(b->data, &h, g->cfg.server_pk) != EF_OK) {
            snprintf(why, sizeof why, "%s", ef_last_error());
            refuse(g, c, why);
            return EF_OK;
        }
        if (h.seq <= c->server_seq) {
            snprintf(why, sizeof why, "%s replayed (server counter %llu, last seen %llu)",
                     ef_msg_type_name(h.type), (unsigned long long)h.seq,
                     (unsigned long long)c->server_seq);
            refuse(g, c, why);
            return EF_OK;
        }
        c->server_seq = h.seq;
    }
    pmsg p = {.type = h.type, .round = h.round, .task = h.task, .arrived = now_s(g)};
    if (h.type == EF_MSG_TASK) {
        if (ef_decode_task(&h, &p.t) != EF_OK) {
            refuse(g, c, "malformed task");
            return EF_OK;
        }
        note_task(g, h.round, p.arrived);
        atomic_fetch_add(&g->tasks, 1);
    } else if (h.type == EF_MSG_EVAL) {
        ef_eval_task e;
        if (ef_decode_eval(&h, &e) != EF_OK) {
            refuse(g, c, "malformed evaluation task");
            return EF_OK;
        }
        p.t.version = e.version;
        memcpy(p.t.hash, e.hash, EF_HASH_BYTES);
    } else if (h.type >= EF_MSG_SA_SETUP && h.type <= EF_MSG_SA_REVEAL) {
        if (atomic_exchange(&g->warned_secagg, 1) == 0)
            ef_log(EF_LOG_WARN, "loadgen: secure aggregation is not supported by the light "
                                "clients: run the job with --secagg off");
        refuse(g, c, "secure aggregation");
        return EF_OK;
    } else {
        snprintf(why, sizeof why, "a client does not accept %s messages",
                 ef_msg_type_name(h.type));
        refuse(g, c, why);
        return EF_OK;
    }
    if (c->n_fifo == c->cap_fifo) {
        size_t nc = c->cap_fifo ? 2 * c->cap_fifo : 4;
        pmsg *nv = ef_realloc(c->fifo, nc * sizeof *nv);
        if (!nv) return EF_ERR_NOMEM;
        c->fifo = nv;
        c->cap_fifo = nc;
    }
    c->fifo[c->n_fifo++] = p;
    return EF_OK;
}

static void fifo_drop(lc *c, size_t k) {
    memmove(c->fifo, c->fifo + k, (c->n_fifo - k) * sizeof *c->fifo);
    c->n_fifo -= k;
}

/* Starts the oldest inbox task whose model is here (the driver's cli_drain):
 * a task behind a newer one is superseded; one whose model the broadcast
 * has moved past is given up with a new check-in, so the server moves on. */
static ef_status lc_drain(lg *g, lc *c) {
    while (c->n_fifo > 0 && !c->has_job) {
        uint64_t gen = atomic_load(&g->store_gen);
        if (c->wait_gen == gen && c->wait_n == c->n_fifo) return EF_OK; /* nothing new */
        pmsg *h = &c->fifo[0];
        uint32_t newest;
        if (store_has(g, h->t.version, h->t.hash, &newest)) {
            c->job = *h;
            c->has_job = 1;
            c->ready_at = now_s(g) + g->cfg.compute_s;
            fifo_drop(c, 1);
            c->wait_gen = 0, c->wait_n = 0;
            return EF_OK;
        }
        if (c->n_fifo > 1) {
            atomic_fetch_add(&g->superseded, 1);
            fifo_drop(c, 1);
            continue;
        }
        if (newest > h->t.version) {
            atomic_fetch_add(&g->superseded, 1);
            fifo_drop(c, 1);
            ef_status st = lc_checkin(g, c);
            if (st != EF_OK) return st;
            continue;
        }
        c->wait_gen = gen, c->wait_n = c->n_fifo;
    }
    return EF_OK;
}

/* ---- work ------------------------------------------------------------------------ */

static int slot_take(lg *g) {
    if (!g->cfg.upload_window) return 1;
    unsigned cur = atomic_load(&g->window_used);
    while (cur < g->cfg.upload_window)
        if (atomic_compare_exchange_weak(&g->window_used, &cur, cur + 1)) return 1;
    return 0;
}

static void slot_give(lg *g) {
    if (g->cfg.upload_window) atomic_fetch_sub(&g->window_used, 1);
}

/* The task's update: trained (synthetically) from the shared model straight
 * into the outgoing message, sealed, signed, published. 0 when it must wait
 * for an upload slot. */
static int lc_update(lg *g, worker *w, lc *c, ef_status *st) {
    if (!slot_take(g)) return 0;
    const float *global = NULL;
    ef_buf *model = store_get(g, c->job.t.version, c->job.t.hash, &global);
    c->has_job = 0;
    if (!model) { /* two newer versions came meanwhile */
        slot_give(g);
        atomic_fetch_add(&g->superseded, 1);
        *st = lc_checkin(g, c);
        return 1;
    }
    size_t n = g->cfg.n_params, plen = EF_UPDATE_FIXED + n * 4;
    if (!w->upd && !(w->upd = ef_buf_new(EF_WIRE_HEADER + plen + EF_SIG_BYTES))) {
        ef_buf_unref(model);
        slot_give(g);
        *st = EF_ERR_NOMEM;
        return 1;
    }
    uint8_t *p = w->upd->data + EF_WIRE_HEADER;
    float *delta = (float *)(void *)(p + EF_UPDATE_FIXED); /* buffer + 80: aligned */
    ef_fit_result r = {0};
    *st = g->cfg.trainer.fit(g->cfg.trainer.user, w->index, c->id, global, n, &c->job.t, delta, &r);
    ef_buf_unref(model);
    if (*st != EF_OK) {
        slot_give(g);
        return 1;
    }
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    for (size_t i = 0; i < n; i++) wrf32(p + EF_UPDATE_FIXED + 4 * i, delta[i]);
#endif
    wr32(p, c->job.t.version);
    wr32(p + 4, r.n_examples);
    wrf32(p + 8, r.train_loss);
    wr32(p + 12, r.steps);
    wr32(p + 16, 0);
    wr32(p + 20, 0);
    wr64(p + 24, n);
    ef_wire_seal_task(w->upd->data, EF_MSG_UPDATE, g->cfg.job, c->job.round, c->id, ++c->seq,
                      c->job.task, plen);
    if (c->sk) ef_wire_sign(w->upd->data, plen, c->sk);
    size_t len = EF_WIRE_HEADER + plen + (c->sk ? EF_SIG_BYTES : 0);
    *st = ef_mqtt_publish(c->m, g->server_topic, w->upd->data, len, 0);
    if (*st != EF_OK) {
        slot_give(g);
        return 1;
    }
    c->inflight = g->cfg.upload_window != 0;
    atomic_fetch_add(&g->updates, 1);
    atomic_fetch_add(&g->bytes_out, len);
    double t = now_s(g);
    note_answer(g, c->job.round, 1, t, t - c->job.arrived);
    c->answered++;
    return 1;
}

static ef_status lc_eval(lg *g, worker *w, lc *c) {
    const float *global = NULL;
    ef_buf *model = store_get(g, c->job.t.version, c->job.t.hash, &global);
    c->has_job = 0;
    if (!model) {
        atomic_fetch_add(&g->superseded, 1);
        return lc_checkin(g, c);
    }
    ef_eval_counts r = {0};
    ef_status st = EF_ERR_UNSUPPORTED;
    if (g->cfg.trainer.evaluate)
        st = g->cfg.trainer.evaluate(g->cfg.trainer.user, w->index, c->id, global,
                                     g->cfg.n_params, &r);
    ef_buf_unref(model);
    if (st != EF_OK) {
        refuse(g, c, "the trainer cannot evaluate");
        return EF_OK;
    }
    uint8_t p[24] = {0};
    wr32(p, c->job.t.version);
    wr32(p + 4, r.n_examples);
    wrf64(p + 8, r.loss_sum);
    wr32(p + 16, r.correct);
    st = lc_send_small(g, c, EF_MSG_EVAL_RESULT, c->job.round, c->job.task, p, sizeof p);
    if (st == EF_OK) {
        atomic_fetch_add(&g->evals, 1);
        double t = now_s(g);
        note_answer(g, c->job.round, 0, t, t - c->job.arrived);
        c->answered++;
    }
    return st;
}

/* One event of a client's connection. */
static ef_status lc_event(lg *g, lc *c, const ef_mqtt_msg *msg) {
    if (msg->event == EF_MQTT_CONNECTED) {
        if (!c->ever_up) {
            c->ever_up = 1;
            if (atomic_fetch_add(&g->ever_connected, 1) + 1 == g->cfg.n_clients)
                atomic_store(&g->all_connected_s, now_s(g));
        }
        /* a new session lost what was sent meanwhile; a resumed one
         * delivers it, and checking in then would cancel a task the server
         * still counts on */
        if (msg->connection == 1 || !msg->session_present) {
            c->n_fifo = 0;
            c->has_job = 0;
            if (msg->connection > 1) {
                ef_status st = lc_renew(g, c);
                if (st != EF_OK) return st;
            }
            c->need_checkin = 1;
        }
        return EF_OK;
    }
    if (msg->event != EF_MQTT_MESSAGE || c->done) return EF_OK;
    if (strcmp(msg->topic, c->inbox) == 0) return lc_accept(g, c, msg->buf);
    if (!g->cfg.full_fanout) return EF_OK;
    if (strcmp(msg->topic, g->online) == 0) {
        char text[BIRTH_MAX];
        text_of(msg->buf, text, sizeof text);
        lc_online(g, c, text);
    } else if (strcmp(msg->topic, g->bcast) == 0) {
        store_offer(g, msg->buf);
    }
    return EF_OK;
}

/* One look at a client: its events, check-in, upload slot, next task.
 * Returns 1 if anything happened. */
static int lc_pass(lg *g, worker *w, lc *c) {
    int act = 0;
    ef_status st = EF_OK;
    for (int k = 0; k < EVENTS_PER_PASS && st == EF_OK; k++) {
        ef_mqtt_msg msg;
        ef_mqtt_next(c->m, 0, &msg);
        if (msg.event == EF_MQTT_NONE) break;
        act = 1;
        st = lc_event(g, c, &msg);
        ef_mqtt_msg_clear(&msg);
    }
    if (c->inflight && ef_mqtt_flush(c->m, 0) == EF_OK) {
        c->inflight = 0;
        slot_give(g);
        act = 1;
    }
    if (c->done || st != EF_OK) goto out;
    if (!g->cfg.full_fanout) {
        uint64_t gen = atomic_load(&g->ann_gen);
        if (gen != c->ann_gen) {
            char text[BIRTH_MAX];
            pthread_mutex_lock(&g->ann_mu);
            memcpy(text, g->ann, sizeof text);
            pthread_mutex_unlock(&g->ann_mu);
            c->ann_gen = gen;
            lc_online(g, c, text);
        }
    }
    /* check in only with a server there: one that starts later never sees
     * a check-in sent before it subscribed */
    if (c->need_checkin && c->instance[0]) {
        act = 1;
        if ((st = lc_checkin(g, c)) != EF_OK) goto out;
    }
    if (!c->has_job && (st = lc_drain(g, c)) != EF_OK) goto out;
    if (c->has_job && now_s(g) >= c->ready_at) {
        if (c->job.type == EF_MSG_TASK) act |= lc_update(g, w, c, &st);
        else act = 1, st = lc_eval(g, w, c);
        if (st == EF_OK && g->cfg.max_tasks && c->answered >= g->cfg.max_tasks) {
            st = lc_leave(g, c);
            c->done = 1;
            c->n_fifo = 0;
            atomic_fetch_add(&g->done, 1);
        }
    }
out:
    if (st != EF_OK) {
        char what[64];
        snprintf(what, sizeof what, "client %u", c->id);
        fail(g, st, what);
    }
    return act;
}

static void *worker_main(void *arg) {
    worker *w = arg;
    lg *g = w->g;
    double idle_ms = 1;
    while (!atomic_load(&g->stop)) {
        int act = 0;
        for (uint32_t i = (uint32_t)w->index; i < g->cfg.n_clients; i += (uint32_t)g->n_workers)
            act |= lc_pass(g, w, &g->c[i]);
        /* idle: back off from 1 to 8 ms (a 1000-client sweep costs ~50 us) */
        if (act) idle_ms = 1;
        else sleep_ms(idle_ms), idle_ms = fmin(8, idle_ms * 2);
    }
    return NULL;
}

static void *reader_main(void *arg) {
    lg *g = arg;
    while (!atomic_load(&g->stop)) {
        ef_mqtt_msg msg;
        ef_mqtt_next(g->bm, 0.2, &msg);
        if (msg.event == EF_MQTT_MESSAGE) {
            if (strcmp(msg.topic, g->online) == 0) {
                pthread_mutex_lock(&g->ann_mu);
                text_of(msg.buf, g->ann, sizeof g->ann);
                pthread_mutex_unlock(&g->ann_mu);
                atomic_fetch_add(&g->ann_gen, 1);
            } else if (strcmp(msg.topic, g->bcast) == 0) {
                store_offer(g, msg.buf);
            }
        }
        ef_mqtt_msg_clear(&msg);
    }
    return NULL;
}

/* ---- life cycle ------------------------------------------------------------------- */

ef_status lg_new(lg **out, const lg_config *cfg) {
    *out = NULL;
    if (cfg->n_clients == 0 || cfg->threads < 1 || !cfg->trainer.fit || !cfg->n_train ||
        (uint64_t)cfg->first_id + cfg->n_clients > EF_BROADCAST_ID) {
        ef_log(EF_LOG_ERROR, "loadgen: bad configuration");
        return EF_ERR_INVALID;
    }
    lg *g = ef_calloc(1, sizeof *g);
    if (!g) return EF_ERR_NOMEM;
    g->cfg = *cfg;
    pthread_mutex_init(&g->store_mu, NULL);
    pthread_mutex_init(&g->ann_mu, NULL);
    pthread_mutex_init(&g->round_mu, NULL);
    pthread_mutex_init(&g->fail_mu, NULL);
    atomic_store(&g->all_connected_s, -1.0);
    g->stopped = 1; /* nothing to stop until lg_start */
    g->t0 = ef_now();
    ef_mqtt_topic(g->server_topic, sizeof g->server_topic, cfg->job, EF_SERVER_ID);
    ef_mqtt_topic(g->bcast, sizeof g->bcast, cfg->job, EF_BROADCAST_ID);
    ef_mqtt_online_topic(g->online, sizeof g->online, cfg->job);
    char bfilter[80];
    snprintf(bfilter, sizeof bfilter, "%s/#", g->bcast); /* the model, its chunks, online */
    ef_status st = EF_OK;
    ef_buf *will = NULL;
    if (!(g->c = ef_calloc(cfg->n_clients, sizeof *g->c))) {
        st = EF_ERR_NOMEM;
        goto fail;
    }
    uint64_t seq0 = ef_mqtt_clock_seq(); /* never below what an earlier run used */
    if (!cfg->full_fanout) {
        char id[96];
        snprintf(id, sizeof id, "edgefl-%llu-loadgen-%u-broadcast", (unsigned long long)cfg->job,
                 cfg->first_id);
        ef_mqtt_config mc = cfg->mqtt;
        mc.client_id = id;
        mc.name = "loadgen broadcast";
        mc.will_topic = NULL;
        if ((st = ef_mqtt_new(&g->bm, &mc)) != EF_OK) goto fail;
        if ((st = ef_mqtt_subscribe(g->bm, bfilter)) != EF_OK) goto fail;
    }
    for (uint32_t i = 0; i < cfg->n_clients; i++) {
        lc *c = &g->c[i];
        c->id = cfg->first_id + i;
        c->sk = cfg->keys ? cfg->keys[i] : NULL;
        c->first_seq = c->seq = seq0;
        ef_mqtt_topic(c->inbox, sizeof c->inbox, cfg->job, c->id);
        if ((st = lc_will(g, c, &will)) != EF_OK) goto fail;
        char id[64], name[32];
        snprintf(id, sizeof id, "edgefl-%llu-client-%u", (unsigned long long)cfg->job, c->id);
        snprintf(name, sizeof name, "client %u", c->id);
        ef_mqtt_config mc = cfg->mqtt;
        mc.client_id = id;
        mc.name = name;
        mc.will_topic = g->server_topic;
        mc.will = will->data;
        mc.will_len = will->len;
        st = ef_mqtt_new(&c->m, &mc);
        ef_buf_unref(will);
        will = NULL;
        if (st != EF_OK) goto fail;
        if ((st = ef_mqtt_subscribe(c->m, c->inbox)) != EF_OK) goto fail;
        if (cfg->full_fanout && (st = ef_mqtt_subscribe(c->m, bfilter)) != EF_OK) goto fail;
    }
    *out = g;
    return EF_OK;
fail:
    ef_buf_unref(will);
    lg_free(g);
    return st;
}

ef_status lg_start(lg *g) {
    g->n_workers = g->cfg.threads < (int)g->cfg.n_clients ? g->cfg.threads : (int)g->cfg.n_clients;
    if (!(g->w = ef_calloc((size_t)g->n_workers, sizeof *g->w))) return EF_ERR_NOMEM;
    g->stopped = 0;
    if (g->bm) {
        if (pthread_create(&g->reader, NULL, reader_main, g) != 0) {
            g->n_workers = 0;
            return EF_ERR_INTERNAL;
        }
        g->reader_ok = 1;
    }
    for (int i = 0; i < g->n_workers; i++) {
        g->w[i].g = g;
        g->w[i].index = i;
        if (pthread_create(&g->w[i].thread, NULL, worker_main, &g->w[i]) != 0) {
            g->n_workers = i;
            atomic_store(&g->stop, 1);
            return EF_ERR_INTERNAL;
        }
    }
    return EF_OK;
}

int lg_finished(lg *g) { return atomic_load(&g->done) == g->cfg.n_clients; }

ef_status lg_failed(lg *g, char *msg, size_t n) {
    pthread_mutex_lock(&g->fail_mu);
    ef_status st = g->fatal;
    if (msg && n) snprintf(msg, n, "%s", g->fatal_msg);
    pthread_mutex_unlock(&g->fail_mu);
    return st;
}

void lg_get_stats(lg *g, lg_stats *s) {
    *s = g->final;
    s->clients = g->cfg.n_clients;
    s->connected = 0;
    for (uint32_t i = 0; i < g->cfg.n_clients; i++)
        if (g->c[i].m) s->connected += (uint32_t)ef_mqtt_wait_connected(g->c[i].m, 0);
    s->ever_connected = atomic_load(&g->ever_connected);
    s->all_connected_s = atomic_load(&g->all_connected_s);
    s->done = atomic_load(&g->done);
    s->checkins = atomic_load(&g->checkins);
    s->tasks = atomic_load(&g->tasks);
    s->updates = atomic_load(&g->updates);
    s->evals = atomic_load(&g->evals);
    s->refused = atomic_load(&g->refused);
    s->superseded = atomic_load(&g->superseded);
    s->renewals = atomic_load(&g->renewals);
    s->leaves = atomic_load(&g->leaves);
    s->bytes_out = atomic_load(&g->bytes_out);
    s->models = atomic_load(&g->models);
    s->model_dups = atomic_load(&g->model_dups);
    s->window_used = atomic_load(&g->window_used);
    s->round = atomic_load(&g->last_round);
    pthread_mutex_lock(&g->ann_mu);
    snprintf(s->server, sizeof s->server, "%s", g->ann);
    pthread_mutex_unlock(&g->ann_mu);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

size_t lg_rounds(lg *g, lg_round *out, size_t cap) {
    size_t k = 0;
    pthread_mutex_lock(&g->round_mu);
    for (size_t i = 0; i < g->cap_rounds; i++) {
        round_rec *r = &g->rounds[i];
        if (r->r.round == 0) continue;
        if (k < cap) {
            out[k] = r->r;
            if (r->n_lat) {
                qsort(r->lat, r->n_lat, sizeof *r->lat, cmp_float);
                out[k].lat_p50 = r->lat[(r->n_lat - 1) / 2];
                out[k].lat_max = r->lat[r->n_lat - 1];
            } else {
                out[k].lat_p50 = out[k].lat_max = NAN;
            }
        }
        k++;
    }
    pthread_mutex_unlock(&g->round_mu);
    return k;
}

typedef struct closer {
    lg *g;
    uint32_t from, step;
    pthread_t thread;
} closer;

static void *closer_main(void *arg) {
    closer *k = arg;
    for (uint32_t i = k->from; i < k->g->cfg.n_clients; i += k->step) {
        ef_mqtt_close(k->g->c[i].m, 1);
        k->g->c[i].m = NULL;
    }
    return NULL;
}

void lg_stop(lg *g, double timeout_s) {
    if (g->stopped) return;
    atomic_store(&g->stop, 1);
    for (int i = 0; i < g->n_workers; i++) pthread_join(g->w[i].thread, NULL);
    if (g->reader_ok) pthread_join(g->reader, NULL);
    g->reader_ok = 0;
    g->stopped = 1;
    /* the clients still in say goodbye (a normal disconnect cancels the will) */
    for (uint32_t i = 0; i < g->cfg.n_clients; i++) {
        lc *c = &g->c[i];
        if (c->m && !c->done && c->ever_up) lc_leave(g, c);
    }
    double deadline = ef_now() + timeout_s;
    lg_stats *f = &g->final;
    for (uint32_t i = 0; i < g->cfg.n_clients; i++) {
        lc *c = &g->c[i];
        if (!c->m) continue;
        double left = deadline - ef_now();
        if (ef_mqtt_flush(c->m, left > 0 ? left : 0) != EF_OK && left > 0)
            ef_log(EF_LOG_WARN, "loadgen: client %u: %s", c->id, ef_last_error());
        ef_mqtt_stats ms;
        ef_mqtt_get_stats(c->m, &ms);
        f->mqtt_connects += ms.connects;
        f->mqtt_messages_in += ms.messages_in;
        f->mqtt_bytes_in += ms.bytes_in;
        f->mqtt_chunks_out += ms.chunks_out;
        f->mqtt_publish_refused += ms.publish_refused;
        f->mqtt_chunks_rejected += ms.chunks_rejected;
        f->mqtt_partial_dropped += ms.partial_dropped;
    }
    if (g->bm) {
        ef_mqtt_stats ms;
        ef_mqtt_get_stats(g->bm, &ms);
        f->mqtt_messages_in += ms.messages_in;
        f->mqtt_bytes_in += ms.bytes_in;
        f->mqtt_chunks_rejected += ms.chunks_rejected;
        f->mqtt_partial_dropped += ms.partial_dropped;
    }
    /* closing waits for each DISCONNECT to go out: many at a time */
    uint32_t nk = g->cfg.n_clients < CLOSERS ? g->cfg.n_clients : CLOSERS;
    closer k[CLOSERS];
    uint32_t started = 0;
    for (uint32_t i = 0; i < nk; i++) {
        k[i] = (closer){g, i, nk, 0};
        if (pthread_create(&k[i].thread, NULL, closer_main, &k[i]) != 0) break;
        started++;
    }
    for (uint32_t i = 0; i < started; i++) pthread_join(k[i].thread, NULL);
    if (started < nk) { /* no threads: close the rest here */
        closer rest = {g, 0, 1, 0};
        closer_main(&rest);
    }
    ef_mqtt_close(g->bm, 1);
    g->bm = NULL;
}

void lg_free(lg *g) {
    if (!g) return;
    lg_stop(g, 10);
    for (uint32_t i = 0; g->c && i < g->cfg.n_clients; i++) {
        ef_mqtt_close(g->c[i].m, 0);
        ef_free(g->c[i].fifo);
    }
    ef_free(g->c);
    ef_mqtt_close(g->bm, 0);
    for (int i = 0; g->w && i < g->n_workers; i++) ef_buf_unref(g->w[i].upd);
    ef_free(g->w);
    for (int i = 0; i < 2; i++) {
        ef_buf_unref(g->slot[i].buf);
        ef_free(g->slot[i].copy);
    }
    for (size_t i = 0; i < g->cap_rounds; i++) ef_free(g->rounds[i].lat);
    ef_free(g->rounds);
    pthread_mutex_destroy(&g->store_mu);
    pthread_mutex_destroy(&g->ann_mu);
    pthread_mutex_destroy(&g->round_mu);
    pthread_mutex_destroy(&g->fail_mu);
    ef_free(g);
}
