/*
 * Protocol tests of the server round engine (src/fl/server.c), driven by
 * hand: real ef_client objects with a fake trainer whose deltas, example
 * counts, losses and evaluation counts are known exactly, a server fed
 * messages one at a time at explicit times, and outboxes routed by the test.
 * No simulator and no clock, so every selection, task, aggregation,
 * deadline, refusal and round record can be asserted exactly.
 *
 * The deltas are multiples of 1/4 and the weights small integers (or
 * integers times 1/2), so the strategy's double sums are exact and the
 * expected model is computed here with the same operations: comparisons of
 * models are bitwise.
 */
#include <math.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "edgefl/accountant.h"
#include "edgefl/client.h"
#include "edgefl/io.h"
#include "edgefl/params.h"
#include "edgefl/server.h"
#include "edgefl/strategy.h"
#include "edgefl/wire.h"
#include "edgefl/worker.h"
#include "fl_test_util.h"

#define NP 8      /* model size: small enough that a TASK is larger than a MODEL */
#define MAXC 12   /* clients per test */
#define JOB 42
#define MAXREC 16

/* Client ids are not their slots, so that id/index confusions show. */
#define ID(k) ((uint32_t)(5 + 3 * (k)))
#define SLOT(id) ((int)(((id) - 5) / 3))

#define UPDATE_LEN (EF_WIRE_HEADER + EF_UPDATE_FIXED + 4 * NP)

/* ---- little-endian helpers for crafting messages ------------------------ */

/* The envelope CRC of a message with payload_len bytes of payload. */
static uint32_t crc_of(const uint8_t *b, size_t payload_len) {
    uLong c = crc32(0L, Z_NULL, 0);
    c = crc32(c, b, EF_WIRE_HEADER - 4);
    c = crc32(c, b + EF_WIRE_HEADER, (uInt)payload_len);
    return (uint32_t)c;
}

/* ---- the fake trainer ------------------------------------------------------ */

typedef struct fake {
    uint32_t n_ex[MAXC];      /* n_examples each client reports */
    float loss[MAXC];         /* its training loss */
    uint32_t ev_n[MAXC], ev_correct[MAXC];
    double ev_loss[MAXC];
    int fits[MAXC], evals[MAXC];
    ef_task task[MAXC];       /* the last task each client trained on */
    float global[MAXC][NP];   /* the model it started from */
    int nan_slot;             /* client whose delta holds a NaN, or -1 */
} fake;

static float fake_delta(int slot, size_t i) { return (float)(slot + 1) * 0.5f - (float)i * 0.25f; }

static ef_status fake_fit(void *user, int worker, uint32_t id, const float *global, size_t n,
                          const ef_task *task, float *delta, ef_fit_result *res) {
    fake *f = user;
    (void)worker;
    int k = SLOT(id);
    if (n != NP || k < 0 || k >= MAXC) return EF_ERR_INTERNAL;
    for (size_t i = 0; i < n; i++) delta[i] = fake_delta(k, i);
    if (k == f->nan_slot) delta[3] = NAN;
    memcpy(f->global[k], global, n * sizeof(float));
    f->task[k] = *task;
    f->fits[k]++;
    res->n_examples = f->n_ex[k];
    res->train_loss = f->loss[k];
    res->steps = 3;
    return EF_OK;
}

static ef_status fake_eval(void *user, int worker, uint32_t id, const float *global, size_t n,
                           ef_eval_counts *res) {
    fake *f = user;
    (void)worker;
    (void)global;
    int k = SLOT(id);
    if (n != NP || k < 0 || k >= MAXC) return EF_ERR_INTERNAL;
    f->evals[k]++;
    res->n_examples = f->ev_n[k];
    res->correct = f->ev_correct[k];
    res->loss_sum = f->ev_loss[k];
    return EF_OK;
}

/* ---- the hand-driven network ---------------------------------------------- */

typedef struct net {
    ef_server *s;
    ef_client *c[MAXC];
    int n;
    ef_outbox up[MAXC]; /* each client's messages not yet delivered to the server */
    ef_outbox down;     /* server output not yet delivered to the clients */
    fake fk;
    float init[NP];
    int n_cb;           /* on_round calls */
    ef_round_record cb_rec[MAXREC];
    float cb_model[MAXREC][NP];
    uint64_t bytes_up;   /* UPDATE and EVAL_RESULT bytes the server accepted */
    uint64_t bytes_down; /* bytes routed from the server to clients */
} net;

static void on_round(void *user, ef_round_record *rec, const float *model, size_t n) {
    net *t = user;
    CHECK(n == NP);
    rec->test_accuracy = 0.5 + rec->round / 100.0; /* the annotation must be stored */
    if (t->n_cb < MAXREC) {
        t->cb_rec[t->n_cb] = *rec;
        memcpy(t->cb_model[t->n_cb], model, NP * sizeof(float));
    }
    t->n_cb++;
}

/* Authentication tests: the clients' signing keys and the server key they
 * check (NULL: unsigned, unchecked), and their first message counter. */
static const uint8_t *g_client_sk[MAXC];
static const uint8_t *g_server_pk;
static uint64_t g_client_first_seq;
static void (*g_client_audit)(void *, uint32_t, uint32_t, const uint32_t *, size_t);
static void *g_client_audit_user;

/* n_eval[k] (NULL: all 5) gives each client's evaluation examples. */
static net *net_new(const ef_server_config *cfg, const ef_strategy_config *strat, int n_clients,
                    const uint32_t *n_eval) {
    net *t = calloc(1, sizeof *t);
    t->n = n_clients;
    t->fk.nan_slot = -1;
    for (int k = 0; k < MAXC; k++) {
        t->fk.n_ex[k] = (uint32_t)(k + 1);
        t->fk.loss[k] = 0.25f * (float)(k + 1);
        t->fk.ev_n[k] = (uint32_t)(10 + k);
        t->fk.ev_correct[k] = (uint32_t)(k + 1);
        t->fk.ev_loss[k] = 0.5 * (k + 1);
    }
    ef_params *p = NULL;
    int64_t shape[1] = {NP};
    CHECK_OK(ef_params_new(&p));
    CHECK_OK(ef_params_add(p, "w", 1, shape));
    CHECK_OK(ef_params_alloc(p));
    for (int i = 0; i < NP; i++) t->init[i] = ef_params_data(p)[i] = 1.0f + 0.125f * (float)i;
    CHECK_OK(ef_server_new(&t->s, cfg, strat, p, on_round, t));
    ef_params_free(p); /* the server copied it */
    ef_trainer tr = {fake_fit, fake_eval, &t->fk};
    for (int k = 0; k < n_clients; k++) {
        ef_client_config cc = {.job = cfg->job, .id = ID(k), .n_train = (uint32_t)(100 + k),
                               .n_eval = n_eval ? n_eval[k] : 5, .n_params = NP,
                               .sign_key = g_client_sk[k], .server_pk = g_server_pk,
                               .first_seq = g_client_first_seq, .sa_audit = g_client_audit,
                               .sa_audit_user = g_client_audit_user};
        CHECK_OK(ef_client_new(&t->c[k], &cc, &tr));
    }
    return t;
}

static void net_free(net *t) {
    for (int k = 0; k < t->n; k++) {
        ef_client_free(t->c[k]);
        ef_outbox_free(&t->up[k]);
    }
    ef_outbox_free(&t->down);
    ef_server_free(t->s);
    free(t);
}

/* Feeds raw bytes to the server at `now`; its output goes to t->down. */
static ef_status feed(net *t, double now, const uint8_t *data, size_t len) {
    return ef_server_handle(t->s, now, data, len, &t->down);
}

/* Delivers client k's oldest pending message to the server. */
static ef_status deliver(net *t, int k, double now) {
    ef_msg_type type;
    ef_buf *b = pop(&t->up[k], &type);
    CHECK_MSG(b != NULL, "client %d has nothing to send", k);
    if (!b) return EF_ERR_INTERNAL;
    ef_status st = feed(t, now, b->data, b->len);
    if (st == EF_OK && (type == EF_MSG_UPDATE || type == EF_MSG_EVAL_RESULT))
        t->bytes_up += b->len;
    ef_buf_unref(b);
    return st;
}

/* Delivers client k's newest message at once (a check-in or leave jumps
 * the queue of answers the client computed before). */
static ef_status deliver_last(net *t, int k, double now) {
    ef_outbox *o = &t->up[k];
    CHECK(o->n > 0);
    if (o->n == 0) return EF_ERR_INTERNAL;
    ef_buf *b = o->v[--o->n].buf;
    ef_status st = feed(t, now, b->data, b->len);
    ef_buf_unref(b);
    return st;
}

static void checkin(net *t, int k, double now) {
    CHECK_OK(ef_client_checkin(t->c[k], &t->up[k]));
    CHECK_OK(deliver_last(t, k, now));
}

static void leave(net *t, int k, double now) {
    CHECK_OK(ef_client_leave(t->c[k], 3, &t->up[k]));
    CHECK_OK(deliver_last(t, k, now));
}

/* Delivers every server message to its client (which answers into its up
 * box), then empties t->down. */
static void route(net *t) {
    for (size_t i = 0; i < t->down.n; i++) {
        ef_out_msg *m = &t->down.v[i];
        int k = SLOT(m->to);
        CHECK_MSG(k >= 0 && k < t->n && ID(k) == m->to, "message to unknown client %u", m->to);
        if (k < 0 || k >= t->n) continue;
        t->bytes_down += m->buf->len;
        CHECK_OK(ef_client_handle(t->c[k], m->buf, 0, &t->up[k]));
    }
    ef_outbox_clear(&t->down);
}

static uint64_t outbox_bytes(const ef_outbox *o) {
    uint64_t n = 0;
    for (size_t i = 0; i < o->n; i++) n += o->v[i].buf->len;
    return n;
}

/* What a batch of server output holds, checked for form: every TASK or EVAL
 * comes right after a MODEL to the same client, the MODEL carries the
 * server's current model and version, the TASK/EVAL names that version and
 * the hash of exactly those floats. */
typedef struct sent {
    int n_task, n_eval, n_model, n_other;
    int task_slot[2 * MAXC], eval_slot[2 * MAXC];
    ef_task task[2 * MAXC];
    uint32_t task_round[2 * MAXC];
    ef_eval_task eval[2 * MAXC];
    uint32_t eval_round[2 * MAXC];
} sent;

static void scan(const net *t, sent *o) {
    memset(o, 0, sizeof *o);
    size_t np;
    const float *model = ef_server_model(t->s, &np);
    uint8_t want_hash[EF_HASH_BYTES];
    ef_hash(want_hash, model, NP * sizeof(float)); /* little-endian host */
    for (size_t i = 0; i < t->down.n; i++) {
        const ef_out_msg *m = &t->down.v[i];
        ef_msg msg;
        CHECK_OK(ef_wire_decode(m->buf->data, m->buf->len, (size_t)-1, &msg));
        CHECK(msg.type == m->type);
        CHECK(msg.job == JOB);
        CHECK(msg.sender == EF_SERVER_ID);
        if (m->type == EF_MSG_MODEL) {
            o->n_model++;
            ef_model_msg mm;
            CHECK_OK(ef_decode_model(&msg, &mm));
            CHECK(mm.version == ef_server_version(t->s));
            CHECK(msg.round == ef_server_version(t->s));
            CHECK(mm.n == NP);
            float w[NP];
            ef_wire_floats(w, mm.raw, NP);
            CHECK(memcmp(w, model, sizeof w) == 0);
            CHECK_MSG(i + 1 < t->down.n && t->down.v[i + 1].to == m->to &&
                          (t->down.v[i + 1].type == EF_MSG_TASK ||
                           t->down.v[i + 1].type == EF_MSG_EVAL),
                      "MODEL %zu to %u is not followed by its TASK/EVAL", i, m->to);
            continue;
        }
        CHECK_MSG(i > 0 && t->down.v[i - 1].type == EF_MSG_MODEL && t->down.v[i - 1].to == m->to,
                  "%s %zu to %u without a MODEL before it", ef_msg_type_name(m->type), i, m->to);
        if (m->type == EF_MSG_TASK) {
            int j = o->n_task++;
            o->task_slot[j] = SLOT(m->to);
            o->task_round[j] = msg.round;
            CHECK_OK(ef_decode_task(&msg, &o->task[j]));
            CHECK(o->task[j].version == ef_server_version(t->s));
            CHECK(memcmp(o->task[j].hash, want_hash, EF_HASH_BYTES) == 0);
        } else if (m->type == EF_MSG_EVAL) {
            int j = o->n_eval++;
            o->eval_slot[j] = SLOT(m->to);
            o->eval_round[j] = msg.round;
            CHECK_OK(ef_decode_eval(&msg, &o->eval[j]));
            CHECK(o->eval[j].version == ef_server_version(t->s));
            CHECK(memcmp(o->eval[j].hash, want_hash, EF_HASH_BYTES) == 0);
        } else {
            o->n_other++;
        }
    }
}

static int contains(const int *v, int n, int x) {
    for (int i = 0; i < n; i++)
        if (v[i] == x) return 1;
    return 0;
}

static int distinct(const int *v, int n) {
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (v[i] == v[j]) return 0;
    return 1;
}

/* ---- expected FedAvg arithmetic ------------------------------------------- */

typedef struct agg {
    double acc[NP], w, loss_sum, loss_w;
} agg;

/* Adds client k's fake update with its weight times `scale` (staleness). */
static void agg_add(agg *a, const net *t, int k, double scale) {
    double w = (double)t->fk.n_ex[k] * scale;
    for (int i = 0; i < NP; i++) a->acc[i] += w * fake_delta(k, i);
    a->w += w;
    a->loss_sum += (double)t->fk.loss[k] * t->fk.n_ex[k];
    a->loss_w += t->fk.n_ex[k];
}

/* FedAvg with server_lr 1: w += sum(w_i d_i) / sum(w_i), rounded once. */
static void agg_apply(const agg *a, float *model) {
    for (int i = 0; i < NP; i++) model[i] = (float)((double)model[i] + 1.0 * (a->acc[i] / a->w));
}

static int model_is(const net *t, const float *want) {
    size_t n;
    const float *m = ef_server_model(t->s, &n);
    return n == NP && memcmp(m, want, NP * sizeof(float)) == 0;
}

static const ef_round_record *record(const net *t, size_t i) { return server_record(t->s, i); }

static size_t n_records(const net *t) { return server_n_records(t->s); }

/* ---- synchronous rounds ---------------------------------------------------- */

/* Check-in, selection with over-selection, tasks, FedAvg, late clients and
 * their stale updates, records, the round callback, the end of the run. */
static void test_sync_rounds(void) {
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 2;
    cfg.clients_per_round = 4;
    cfg.overselect = 1.5; /* 6 tasks, the round closes at 4 updates */
    cfg.min_clients = 8;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    net *t = net_new(&cfg, &sc, 10, NULL);

    /* no round before min_clients have checked in */
    for (int k = 0; k < 7; k++) {
        checkin(t, k, (double)k);
        CHECK(t->down.n == 0);
        CHECK(ef_server_clients(t->s) == (size_t)k + 1);
        CHECK(isinf(ef_server_next_timer(t->s)));
    }
    checkin(t, 7, 7.0);
    CHECK(ef_server_clients(t->s) == 8);
    sent s1;
    scan(t, &s1);
    CHECK(s1.n_task == 6 && s1.n_model == 6 && s1.n_eval == 0 && s1.n_other == 0);
    CHECK(t->down.n == 12);
    CHECK(distinct(s1.task_slot, s1.n_task));
    uint8_t h0[EF_HASH_BYTES];
    ef_hash(h0, t->init, sizeof t->init);
    for (int j = 0; j < s1.n_task; j++) {
        const ef_task *tk = &s1.task[j];
        CHECK(s1.task_slot[j] >= 0 && s1.task_slot[j] < 8); /* checked-in clients only */
        CHECK(s1.task_round[j] == 1);
        CHECK(tk->version == 0);
        CHECK(memcmp(tk->hash, h0, EF_HASH_BYTES) == 0);
        CHECK(tk->deadline_s == 0.0f);
        CHECK(tk->epochs == 2 && tk->batch == 16);
        CHECK(tk->lr == 0.125f && tk->momentum == 0.5f && tk->prox_mu == 0.0f);
        for (int i = 0; i < j; i++) CHECK(tk->seed != s1.task[i].seed);
    }
    /* every recipient shares one MODEL buffer */
    for (size_t i = 2; i < t->down.n; i += 2) CHECK(t->down.v[i].buf == t->down.v[0].buf);
    uint64_t down1 = outbox_bytes(&t->down);
    CHECK(down1 == 6 * (uint64_t)(EF_WIRE_HEADER + EF_MODEL_FIXED + 4 * NP) +
                       6 * (uint64_t)(EF_WIRE_HEADER + EF_TASK_PAYLOAD));
    route(t);
    for (int k = 0; k < 10; k++) {
        int sel = contains(s1.task_slot, s1.n_task, k);
        CHECK(t->fk.fits[k] == sel);
        CHECK(t->up[k].n == (size_t)sel);
        if (sel) { /* the trainer saw the broadcast model and its own task */
            CHECK(memcmp(t->fk.global[k], t->init, sizeof t->init) == 0);
            for (int j = 0; j < s1.n_task; j++)
                if (s1.task_slot[j] == k) CHECK(memcmp(&t->fk.task[k], &s1.task[j], sizeof s1.task[j]) == 0);
        }
    }
    /* a client checking in during the round waits */
    checkin(t, 8, 8.0);
    CHECK(t->down.n == 0);

    /* updates 1..3: nothing happens; update 4 closes the round */
    agg a = {0};
    t->bytes_up = 0;
    for (int j = 0; j < 3; j++) {
        CHECK_OK(deliver(t, s1.task_slot[j], 10.0 + j));
        agg_add(&a, t, s1.task_slot[j], 1.0);
        CHECK(t->down.n == 0);
        CHECK(ef_server_version(t->s) == 0);
        CHECK(model_is(t, t->init));
        CHECK(n_records(t) == 0);
    }
    CHECK_OK(deliver(t, s1.task_slot[3], 13.0));
    agg_add(&a, t, s1.task_slot[3], 1.0);
    float want[NP];
    memcpy(want, t->init, sizeof want);
    agg_apply(&a, want);
    CHECK(ef_server_version(t->s) == 1);
    CHECK(model_is(t, want));
    CHECK(n_records(t) == 1);
    const ef_round_record *r = record(t, 0);
    CHECK(r->round == 1);
    CHECK(r->selected == 6 && r->completed == 4 && r->late == 2 && r->dropped == 0);
    CHECK(r->rejected == 0);
    CHECK(r->aggregated == 1);
    CHECK(r->sim_start == 7.0 && r->sim_end == 13.0);
    CHECK(r->train_loss == a.loss_sum / a.loss_w);
    CHECK(r->bytes_down == down1);
    CHECK(r->bytes_up == t->bytes_up && r->bytes_up == 4 * (uint64_t)UPDATE_LEN);
    CHECK(isnan(r->fed_accuracy) && isnan(r->staleness_mean));
    CHECK(r->test_accuracy == 0.5 + 1 / 100.0); /* the callback's annotation is kept */
    CHECK(t->n_cb == 1);
    CHECK(t->cb_rec[0].round == 1 && t->cb_rec[0].completed == 4);
    CHECK(memcmp(t->cb_model[0], want, sizeof want) == 0);

    /* round 2 started at once, from the new model, with fresh seeds */
    sent s2;
    scan(t, &s2);
    CHECK(s2.n_task == 6 && distinct(s2.task_slot, s2.n_task));
    for (int j = 0; j < s2.n_task; j++) {
        CHECK(s2.task[j].version == 1 && s2.task_round[j] == 1 + 1);
        CHECK(s2.task_slot[j] >= 0 && s2.task_slot[j] < 9);
        for (int i = 0; i < s1.n_task; i++)
            if (s1.task_slot[i] == s2.task_slot[j]) CHECK(s1.task[i].seed != s2.task[j].seed);
    }
    uint64_t down2 = outbox_bytes(&t->down);
    route(t);

    /* the late clients' round-1 updates are refused and change nothing */
    uint64_t refused = ef_server_refused(t->s);
    for (int j = 4; j < 6; j++) {
        ef_status st = deliver(t, s1.task_slot[j], 14.0);
        CHECK(st == EF_ERR_STATE);
        CHECK(t->down.n == 0);
        CHECK(model_is(t, want));
        CHECK(ef_server_version(t->s) == 1);
    }
    CHECK(ef_server_refused(t->s) == refused + 2);

    agg a2 = {0};
    t->bytes_up = 0;
    for (int j = 0; j < 4; j++) {
        CHECK_OK(deliver(t, s2.task_slot[j], 20.0 + j));
        agg_add(&a2, t, s2.task_slot[j], 1.0);
        CHECK(memcmp(t->fk.global[s2.task_slot[j]], want, sizeof want) == 0);
    }
    agg_apply(&a2, want);
    CHECK(model_is(t, want));
    CHECK(ef_server_version(t->s) == 2);
    CHECK(ef_server_done(t->s));
    CHECK(t->down.n == 0); /* nothing more is sent */
    CHECK(n_records(t) == 2);
    r = record(t, 1);
    CHECK(r->round == 2 && r->selected == 6 && r->completed == 4 && r->late == 2);
    CHECK(r->rejected == 0); /* round-1 stragglers were counted as late in round 1 */
    CHECK(r->sim_start == 13.0 && r->sim_end == 23.0);
    CHECK(r->bytes_down == down2 && r->bytes_up == t->bytes_up);
    CHECK(r->train_loss == a2.loss_sum / a2.loss_w);
    CHECK(r->test_accuracy == 0.5 + 2 / 100.0);
    CHECK(record(t, 0)->test_accuracy == 0.5 + 1 / 100.0);
    CHECK(t->n_cb == 2);
    CHECK(memcmp(t->cb_model[1], want, sizeof want) == 0);

    /* after the run: late updates refused, check-ins accepted, nothing sent */
    for (int j = 4; j < 6; j++) {
        CHECK(deliver(t, s2.task_slot[j], 30.0) != EF_OK);
        CHECK(t->down.n == 0);
    }
    checkin(t, 9, 31.0);
    checkin(t, 0, 31.0);
    CHECK_OK(ef_server_tick(t->s, 1000.0, &t->down));
    CHECK(t->down.n == 0);
    CHECK(isinf(ef_server_next_timer(t->s)));
    CHECK(model_is(t, want) && n_records(t) == 2 && t->n_cb == 2);
    net_free(t);
}

/* FedProx: FedAvg aggregation, mu travels in every task. */
static void test_fedprox(void) {
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 1;
    cfg.clients_per_round = 2;
    cfg.min_clients = 2;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDPROX);
    sc.proximal_mu = 0.25f;
    net *t = net_new(&cfg, &sc, 2, NULL);
    checkin(t, 0, 0.0);
    CHECK(t->down.n == 0);
    checkin(t, 1, 0.0);
    sent s;
    scan(t, &s);
    CHECK(s.n_task == 2);
    for (int j = 0; j < s.n_task; j++) CHECK(s.task[j].prox_mu == 0.25f);
    route(t);
    CHECK(t->fk.task[0].prox_mu == 0.25f && t->fk.task[1].prox_mu == 0.25f);
    agg a = {0};
    for (int k = 0; k < 2; k++) {
        CHECK_OK(deliver(t, k, 1.0 + k));
        agg_add(&a, t, k, 1.0);
    }
    float want[NP];
    memcpy(want, t->init, sizeof want);
    agg_apply(&a, want);
    CHECK(model_is(t, want));
    CHECK(ef_server_done(t->s));
    net_free(t);
}

/* Deadlines: the timer, closing with >= min_updates (aggregated) and with
 * fewer (model unchanged), and a round every client answered in time. */
static void test_deadline(void) {
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 3;
    cfg.clients_per_round = 3;
    cfg.min_clients = 3;
    cfg.deadline_s = 10.0;
    cfg.min_updates = 2;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    net *t = net_new(&cfg, &sc, 3, NULL);
    checkin(t, 0, 0.0);
    checkin(t, 1, 0.0);
    CHECK(isinf(ef_server_next_timer(t->s)));
    checkin(t, 2, 1.0);
    CHECK(ef_server_next_timer(t->s) == 11.0);
    sent s1, s2, s3;
    scan(t, &s1);
    CHECK(s1.n_task == 3);
    for (int j = 0; j < 3; j++) CHECK(s1.task[j].deadline_s == 10.0f);
    route(t);

    agg a = {0};
    CHECK_OK(deliver(t, s1.task_slot[0], 2.0));
    agg_add(&a, t, s1.task_slot[0], 1.0);
    CHECK_OK(deliver(t, s1.task_slot[1], 3.0));
    agg_add(&a, t, s1.task_slot[1], 1.0);
    CHECK_OK(ef_server_tick(t->s, 10.5, &t->down)); /* not yet */
    CHECK(t->down.n == 0 && ef_server_version(t->s) == 0 && n_records(t) == 0);
    CHECK(ef_server_next_timer(t->s) == 11.0);
    CHECK_OK(ef_server_tick(t->s, 11.0, &t->down));
    float want[NP];
    memcpy(want, t->init, sizeof want);
    agg_apply(&a, want);
    CHECK(model_is(t, want) && ef_server_version(t->s) == 1);
    CHECK(n_records(t) == 1);
    const ef_round_record *r = record(t, 0);
    CHECK(r->completed == 2 && r->late == 1 && r->dropped == 0 && r->selected == 3);
    CHECK(r->aggregated == 1 && r->sim_start == 1.0 && r->sim_end == 11.0);
    CHECK(r->train_loss == a.loss_sum / a.loss_w);
    /* round 2 began at the deadline */
    CHECK(ef_server_next_timer(t->s) == 21.0);
    scan(t, &s2);
    CHECK(s2.n_task == 3);
    route(t);

    /* the late client's round-1 update is stale: refused, nothing changes */
    uint64_t refused = ef_server_refused(t->s);
    CHECK(deliver(t, s1.task_slot[2], 11.5) == EF_ERR_STATE);
    CHECK(ef_server_refused(t->s) == refused + 1);
    CHECK(t->down.n == 0 && model_is(t, want) && ef_server_version(t->s) == 1);

    /* round 2: one update, fewer than min_updates: the deadline closes the
     * round without aggregating */
    agg b = {0};
    CHECK_OK(deliver(t, s2.task_slot[0], 12.0));
    agg_add(&b, t, s2.task_slot[0], 1.0);
    CHECK_OK(ef_server_tick(t->s, 20.999, &t->down));
    CHECK(n_records(t) == 1);
    CHECK_OK(ef_server_tick(t->s, 21.0, &t->down));
    CHECK(n_records(t) == 2);
    r = record(t, 1);
    CHECK(r->round == 2 && r->completed == 1 && r->late == 2 && r->aggregated == 0);
    CHECK(r->rejected == 0);
    CHECK(r->sim_start == 11.0 && r->sim_end == 21.0);
    CHECK(r->train_loss == b.loss_sum / b.loss_w);
    CHECK(model_is(t, want) && ef_server_version(t->s) == 1);
    CHECK(memcmp(t->cb_model[1], want, sizeof want) == 0);

    /* round 3: tasks for the unchanged model (version 1); its stale
     * round-2 updates first */
    scan(t, &s3);
    CHECK(s3.n_task == 3);
    for (int j = 0; j < 3; j++) CHECK(s3.task[j].version == 1 && s3.task_round[j] == 3);
    CHECK(ef_server_next_timer(t->s) == 31.0);
    route(t);
    for (int j = 1; j < 3; j++) CHECK(deliver(t, s2.task_slot[j], 21.5) == EF_ERR_STATE);
    /* every client answers before the deadline: the round closes at once */
    agg c = {0};
    for (int j = 0; j < 3; j++) {
        CHECK_OK(deliver(t, s3.task_slot[j], 22.0 + j));
        agg_add(&c, t, s3.task_slot[j], 1.0);
    }
    agg_apply(&c, want);
    CHECK(model_is(t, want) && ef_server_version(t->s) == 2);
    CHECK(ef_server_done(t->s) && n_records(t) == 3);
    r = record(t, 2);
    CHECK(r->completed == 3 && r->late == 0 && r->aggregated == 1 && r->sim_end == 24.0);
    CHECK(r->rejected == 0);
    CHECK(isinf(ef_server_next_timer(t->s)));
    CHECK(t->down.n == 0);
    net_free(t);
}

/* LEAVE and the start of rounds. min_clients online clients (not merely
 * checked in) are needed before the first round only; every later round
 * starts the moment the previous one closes, among the clients online and
 * idle then (however few), or, when none is, at the next check-in. A
 * selected client that leaves counts as dropped, the round closes once
 * every selected client answered or left, a left client is not selected
 * until it checks in again, and a client that checks in again while holding
 * a task has lost it (dropped) but may be selected in the round its loss
 * opens. */
static void test_leave(void) {
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 4;
    cfg.clients_per_round = 3;
    cfg.min_clients = 3;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    net *t = net_new(&cfg, &sc, 4, NULL);

    /* three clients checked in, but 1 left again: two online, no round */
    checkin(t, 0, 0.0);
    checkin(t, 1, 0.0);
    leave(t, 1, 0.1);
    checkin(t, 2, 0.2);
    CHECK(t->down.n == 0 && ef_server_clients(t->s) == 3);
    CHECK_OK(ef_server_tick(t->s, 0.3, &t->down));
    CHECK(t->down.n == 0 && n_records(t) == 0 && isinf(ef_server_next_timer(t->s)));
    checkin(t, 1, 0.4); /* the third online client: round 1 */
    sent s1, s2, s3, s4;
    scan(t, &s1);
    CHECK(s1.n_task == 3 && s1.n_model == 3 && t->down.n == 6);
    for (int k = 0; k < 3; k++) CHECK(contains(s1.task_slot, s1.n_task, k));
    for (int j = 0; j < s1.n_task; j++) CHECK(s1.task_round[j] == 1 && s1.task[j].version == 0);
    route(t);
    checkin(t, 3, 0.5); /* not selected in round 1 */
    CHECK(t->down.n == 0);

    /* an idle client leaving changes nothing */
    leave(t, 3, 1.0);
    CHECK(t->down.n == 0 && n_records(t) == 0);
    int a = s1.task_slot[0], b = s1.task_slot[1], c = s1.task_slot[2];
    leave(t, a, 2.0);
    CHECK(t->down.n == 0 && n_records(t) == 0);
    agg g = {0};
    CHECK_OK(deliver(t, b, 3.0));
    agg_add(&g, t, b, 1.0);
    CHECK(n_records(t) == 0 && t->down.n == 0);
    CHECK_OK(deliver(t, c, 4.0));
    agg_add(&g, t, c, 1.0);
    float want[NP];
    memcpy(want, t->init, sizeof want);
    agg_apply(&g, want);
    CHECK(n_records(t) == 1 && model_is(t, want) && ef_server_version(t->s) == 1);
    const ef_round_record *r = record(t, 0);
    CHECK(r->selected == 3 && r->completed == 2 && r->dropped == 1 && r->late == 0);
    CHECK(r->sim_start == 0.4 && r->sim_end == 4.0 && r->aggregated == 1);
    CHECK(t->up[a].n == 1); /* a's computed update was never sent */

    /* round 2 started at once among the clients online, b and c: fewer than
     * min_clients and than clients_per_round; a and 3 are away */
    scan(t, &s2);
    CHECK(s2.n_task == 2 && s2.n_model == 2 && t->down.n == 4);
    CHECK(contains(s2.task_slot, s2.n_task, b) && contains(s2.task_slot, s2.n_task, c));
    for (int j = 0; j < s2.n_task; j++) CHECK(s2.task_round[j] == 2 && s2.task[j].version == 1);
    route(t);
    /* a's update from before it left is refused */
    CHECK(deliver(t, a, 5.0) == EF_ERR_STATE);
    CHECK(t->down.n == 0);
    /* every selected client leaves and nobody else is online: the round
     * closes, nothing aggregated, and no round can start */
    leave(t, b, 6.0);
    CHECK(n_records(t) == 1 && t->down.n == 0);
    leave(t, c, 7.0);
    CHECK(n_records(t) == 2 && model_is(t, want) && ef_server_version(t->s) == 1);
    r = record(t, 1);
    CHECK(r->round == 2 && r->selected == 2 && r->completed == 0 && r->dropped == 2);
    CHECK(r->late == 0 && r->aggregated == 0);
    CHECK(isnan(r->train_loss) && r->bytes_up == 0);
    CHECK(r->sim_start == 4.0 && r->sim_end == 7.0);
    CHECK(t->down.n == 0 && isinf(ef_server_next_timer(t->s)) && !ef_server_done(t->s));
    CHECK_OK(ef_server_tick(t->s, 9.0, &t->down));
    CHECK(t->down.n == 0 && n_records(t) == 2);
    /* the round-2 updates b and c computed before leaving arrive: refused */
    CHECK(deliver(t, b, 9.5) == EF_ERR_STATE);
    CHECK(deliver(t, c, 9.5) == EF_ERR_STATE);
    CHECK(t->down.n == 0 && n_records(t) == 2);

    /* a checks in: round 3 starts at once, with a alone */
    checkin(t, a, 10.0);
    scan(t, &s3);
    CHECK(s3.n_task == 1 && s3.task_slot[0] == a && t->down.n == 2);
    CHECK(s3.task_round[0] == 3 && s3.task[0].version == 1);
    route(t);
    checkin(t, 3, 11.0); /* round 3 is running: 3 waits */
    CHECK(t->down.n == 0 && n_records(t) == 2);
    /* a restarts (checks in again while holding its task): dropped, which
     * closes round 3; round 4 starts at once among the idle online clients,
     * a and 3 (b and c stay away) */
    CHECK(t->up[a].n == 1);
    ef_buf_unref(pop(&t->up[a], NULL));
    checkin(t, a, 12.0);
    CHECK(n_records(t) == 3 && model_is(t, want) && ef_server_version(t->s) == 1);
    r = record(t, 2);
    CHECK(r->round == 3 && r->selected == 1 && r->completed == 0 && r->dropped == 1);
    CHECK(r->late == 0 && r->aggregated == 0);
    CHECK(r->sim_start == 10.0 && r->sim_end == 12.0);
    scan(t, &s4);
    CHECK_MSG(s4.n_task == 2 && contains(s4.task_slot, s4.n_task, a) &&
                  contains(s4.task_slot, s4.n_task, 3),
              "round 4: %d tasks, want a (%d) and 3", s4.n_task, a);
    for (int j = 0; j < s4.n_task; j++) CHECK(s4.task_round[j] == 4 && s4.task[j].version == 1);
    route(t);
    agg h = {0};
    CHECK_OK(deliver(t, 3, 13.0));
    agg_add(&h, t, 3, 1.0);
    CHECK(n_records(t) == 3 && t->down.n == 0);
    CHECK_OK(deliver(t, a, 14.0));
    agg_add(&h, t, a, 1.0);
    agg_apply(&h, want);
    CHECK(ef_server_done(t->s) && n_records(t) == 4);
    CHECK(model_is(t, want) && ef_server_version(t->s) == 2);
    r = record(t, 3);
    CHECK(r->round == 4 && r->selected == 2 && r->completed == 2 && r->dropped == 0);
    CHECK(r->late == 0 && r->aggregated == 1);
    CHECK(r->sim_start == 12.0 && r->sim_end == 14.0);
    CHECK(t->down.n == 0);
    /* tasks trained: a in rounds 1, 3 and 4; b and c in rounds 1 and 2 only
     * (they never came back); 3 in round 4 only */
    CHECK(t->fk.fits[a] == 3 && t->fk.fits[b] == 2 && t->fk.fits[c] == 2 && t->fk.fits[3] == 1);
    net_free(t);
}

/* Snapshot of everything a refused message must leave alone. */
typedef struct snap {
    float model[NP];
    uint32_t version;
    size_t n_rec;
    ef_round_record rec[MAXREC];
    uint64_t refused;
    int n_cb;
} snap;

static void take(const net *t, snap *sn) {
    memset(sn, 0, sizeof *sn);
    memcpy(sn->model, ef_server_model(t->s, NULL), sizeof sn->model);
    sn->version = ef_server_version(t->s);
    size_t n;
    const ef_round_record *r = ef_server_records(t->s, &n);
    sn->n_rec = n;
    if (n) memcpy(sn->rec, r, n * sizeof *r); /* r is NULL before the first record */
    sn->refused = ef_server_refused(t->s);
    sn->n_cb = t->n_cb;
}

/* Feeds bytes that must be refused; checks that only the counter moved. */
static void refused_case(net *t, double now, const uint8_t *data, size_t len, ef_status want,
                         const char *what) {
    snap a, b;
    take(t, &a);
    size_t n_down = t->down.n;
    ef_status st = feed(t, now, data, len);
    take(t, &b);
    CHECK_MSG(st != EF_OK, "%s was accepted", what);
    CHECK_MSG(want == EF_OK || st == want, "%s: status %s, wanted %s", what, ef_strerror(st),
              ef_strerror(want));
    CHECK_MSG(t->down.n == n_down, "%s: the server sent something", what);
    CHECK_MSG(memcmp(a.model, b.model, sizeof a.model) == 0 && a.version == b.version,
              "%s changed the model", what);
    CHECK_MSG(a.n_rec == b.n_rec && memcmp(a.rec, b.rec, sizeof a.rec) == 0 &&
                  a.n_cb == b.n_cb,
              "%s changed the records", what);
    CHECK_MSG(b.refused == a.refused + 1, "%s: refused %llu -> %llu", what,
              (unsigned long long)a.refused, (unsigned long long)b.refused);
}

/* An UPDATE of `n` floats built from a valid one (same header, version,
 * counts), resealed. */
static ef_buf *resized_update(const ef_buf *src, size_t n) {
    ef_buf *b = buf_copy(src, EF_WIRE_HEADER + EF_UPDATE_FIXED + 4 * n);
    wr64(b->data + EF_WIRE_HEADER + 24, n);
    reseal(b);
    return b;
}

static void test_refusals(void) {
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 2;
    cfg.clients_per_round = 3;
    cfg.min_clients = 4;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    net *t = net_new(&cfg, &sc, 4, NULL);
    for (int k = 0; k < 4; k++) checkin(t, k, 0.0);
    sent s1, s2;
    scan(t, &s1);
    CHECK(s1.n_task == 3);
    route(t);
    agg g = {0};
    for (int j = 0; j < 3; j++) {
        CHECK_OK(deliver(t, s1.task_slot[j], 1.0 + j));
        agg_add(&g, t, s1.task_slot[j], 1.0);
    }
    float want[NP];
    memcpy(want, t->init, sizeof want);
    agg_apply(&g, want);
    CHECK(n_records(t) == 1 && model_is(t, want));

    /* round 2: X answers normally, Y's update is used for crafted copies,
     * Z's trainer produces a NaN, U was not selected */
    scan(t, &s2);
    CHECK(s2.n_task == 3);
    int x = s2.task_slot[0], y = s2.task_slot[1], z = s2.task_slot[2], u = -1;
    for (int k = 0; k < 4; k++)
        if (!contains(s2.task_slot, 3, k)) u = k;
    CHECK(u >= 0);
    ef_buf *model_msg = ef_buf_ref(t->down.v[0].buf);
    ef_buf *task_msg = ef_buf_ref(t->down.v[1].buf);
    CHECK(t->down.v[0].type == EF_MSG_MODEL && t->down.v[1].type == EF_MSG_TASK);
    t->fk.nan_slot = z;
    route(t);
    uint64_t refused0 = ef_server_refused(t->s);
    double now = 10.0;

    ef_buf *ux = pop(&t->up[x], NULL);
    ef_buf *uy = pop(&t->up[y], NULL);
    CHECK(ux && uy && ux->len == UPDATE_LEN);
    CHECK_OK(feed(t, now, ux->data, ux->len));
    t->bytes_up = ux->len;

    /* duplicate: X again */
    refused_case(t, now, ux->data, ux->len, EF_ERR_STATE, "duplicate update");
    /* wrong job */
    ef_buf *b = with_header(uy, 8, JOB + 1, 8);
    refused_case(t, now, b->data, b->len, EF_ERR_STATE, "update of another job");
    ef_buf_unref(b);
    {
        ef_client *foreign;
        ef_trainer tr = {fake_fit, fake_eval, &t->fk};
        ef_client_config cc = {.job = JOB + 1, .id = ID(u), .n_train = 5, .n_params = NP};
        ef_outbox o = {0};
        CHECK_OK(ef_client_new(&foreign, &cc, &tr));
        CHECK_OK(ef_client_checkin(foreign, &o));
        refused_case(t, now, o.v[0].buf->data, o.v[0].buf->len, EF_ERR_STATE,
                     "checkin of another job");
        ef_outbox_free(&o);
        ef_client_free(foreign);
    }
    /* unknown sender: a client of this job that never checked in, answering
     * a copy of a real task */
    {
        ef_client *stranger;
        ef_trainer tr = {fake_fit, fake_eval, &t->fk};
        ef_client_config cc = {.job = JOB, .id = ID(9), .n_train = 5, .n_params = NP};
        ef_outbox o = {0};
        CHECK_OK(ef_client_new(&stranger, &cc, &tr));
        CHECK_OK(ef_client_handle(stranger, model_msg, 0, &o));
        CHECK_OK(ef_client_handle(stranger, task_msg, 0, &o));
        CHECK(o.n == 1 && o.v[0].type == EF_MSG_UPDATE);
        refused_case(t, now, o.v[0].buf->data, o.v[0].buf->len, EF_ERR_STATE,
                     "update from an unknown client");
        ef_outbox_clear(&o);
        CHECK_OK(ef_client_leave(stranger, 0, &o));
        refused_case(t, now, o.v[0].buf->data, o.v[0].buf->len, EF_ERR_STATE,
                     "leave from an unknown client");
        ef_outbox_free(&o);
        ef_client_free(stranger);
    }
    /* U holds no task */
    b = with_header(uy, 20, ID(u), 4);
    refused_case(t, now, b->data, b->len, EF_ERR_STATE, "update from an unselected client");
    ef_buf_unref(b);
    /* wrong model version (the previous one, and one from the future) */
    b = buf_copy(uy, uy->len);
    wr32(b->data + EF_WIRE_HEADER, 0);
    reseal(b);
    refused_case(t, now, b->data, b->len, EF_ERR_STATE, "update for version 0");
    wr32(b->data + EF_WIRE_HEADER, 7);
    reseal(b);
    refused_case(t, now, b->data, b->len, EF_ERR_STATE, "update for version 7");
    ef_buf_unref(b);
    /* wrong round in the header */
    b = with_header(uy, 16, 1, 4);
    refused_case(t, now, b->data, b->len, EF_ERR_STATE, "update for round 1");
    ef_buf_unref(b);
    /* wrong vector length */
    b = resized_update(uy, NP - 1);
    refused_case(t, now, b->data, b->len, EF_ERR_FORMAT, "update of NP-1 values");
    ef_buf_unref(b);
    b = resized_update(uy, NP + 1);
    refused_case(t, now, b->data, b->len, EF_ERR_FORMAT, "update of NP+1 values");
    ef_buf_unref(b);
    b = resized_update(uy, 0);
    refused_case(t, now, b->data, b->len, EF_ERR_FORMAT, "update of no values");
    ef_buf_unref(b);
    /* the declared count disagrees with the bytes */
    b = buf_copy(uy, uy->len);
    wr64(b->data + EF_WIRE_HEADER + 24, (uint64_t)1 << 62);
    reseal(b);
    refused_case(t, now, b->data, b->len, EF_ERR_FORMAT, "update declaring 2^62 values");
    ef_buf_unref(b);
    /* corrupted bytes: every bit of a few positions in header and payload */
    size_t flips[] = {0, 5, 9, 17, 21, 33, 41, 46, EF_WIRE_HEADER, EF_WIRE_HEADER + 5,
                      UPDATE_LEN - 1};
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        b = buf_copy(uy, uy->len);
        b->data[flips[i]] ^= (uint8_t)(1u << (i % 8));
        refused_case(t, now, b->data, b->len, EF_ERR_FORMAT, "corrupted update");
        ef_buf_unref(b);
    }
    /* truncated */
    size_t cuts[] = {0, 1, EF_WIRE_HEADER - 1, EF_WIRE_HEADER, EF_WIRE_HEADER + 31,
                     UPDATE_LEN - 4, UPDATE_LEN - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
        refused_case(t, now, uy->data, cuts[i], EF_ERR_FORMAT, "truncated update");
    refused_case(t, now, NULL, 0, EF_ERR_FORMAT, "no message");
    /* zero examples, non-finite loss (the decoder's checks) */
    b = buf_copy(uy, uy->len);
    wr32(b->data + EF_WIRE_HEADER + 4, 0);
    reseal(b);
    refused_case(t, now, b->data, b->len, EF_ERR_FORMAT, "update of zero examples");
    wr32(b->data + EF_WIRE_HEADER + 4, 3);
    wrf32(b->data + EF_WIRE_HEADER + 8, INFINITY);
    reseal(b);
    refused_case(t, now, b->data, b->len, EF_ERR_FORMAT, "update with infinite loss");
    ef_buf_unref(b);
    /* messages a server does not take: TASK, MODEL, EVAL from a client */
    b = with_header(task_msg, 20, ID(y), 4);
    refused_case(t, now, b->data, b->len, EF_ERR_STATE, "task sent to the server");
    ef_buf_unref(b);
    b = with_header(model_msg, 20, ID(y), 4);
    refused_case(t, now, b->data, b->len, EF_ERR_STATE, "model sent to the server");
    ef_buf_unref(b);
    refused_case(t, now, task_msg->data, task_msg->len, EF_ERR_STATE,
                 "the server's own task echoed back");
    /* an evaluation result nobody asked for */
    {
        ef_buf *e = ef_buf_new(EF_WIRE_HEADER + 24);
        memset(e->data + EF_WIRE_HEADER, 0, 24);
        wr32(e->data + EF_WIRE_HEADER, 1);
        wr32(e->data + EF_WIRE_HEADER + 4, 4);
        ef_wire_seal(e->data, EF_MSG_EVAL_RESULT, JOB, 2, ID(y), 99, 24);
        refused_case(t, now, e->data, e->len, EF_ERR_STATE, "unexpected evaluation result");
        ef_buf_unref(e);
    }
    /* a check-in with a reserved id */
    {
        ef_buf *e = ef_buf_new(EF_WIRE_HEADER + 8);
        memset(e->data + EF_WIRE_HEADER, 0, 8);
        ef_wire_seal(e->data, EF_MSG_CHECKIN, JOB, 0, EF_SERVER_ID, 1, 8);
        refused_case(t, now, e->data, e->len, EF_ERR_FORMAT, "check-in as the server");
        ef_buf_unref(e);
    }
    CHECK(ef_server_clients(t->s) == 4);

    /* Z's update holds a NaN: refused; its task is spent */
    snap before;
    take(t, &before);
    CHECK(deliver(t, z, now) == EF_ERR_INVALID);
    CHECK(ef_server_refused(t->s) == before.refused + 1);
    CHECK(model_is(t, want) && n_records(t) == 1);
    CHECK(t->down.n == 0);

    /* Y's real update: now every selected client has answered */
    CHECK_OK(feed(t, now + 1, uy->data, uy->len));
    t->bytes_up += uy->len;
    agg h = {0};
    agg_add(&h, t, x, 1.0);
    agg_add(&h, t, y, 1.0);
    agg_apply(&h, want);
    CHECK(ef_server_done(t->s));
    CHECK(n_records(t) == 2 && model_is(t, want));
    const ef_round_record *r = record(t, 1);
    CHECK(r->selected == 3 && r->completed == 2 && r->late == 0 && r->dropped == 0);
    /* every refusal of the round counts, except the update for round 1 (a
     * straggler of a closed round, counted as late there) */
    CHECK(r->rejected == (uint32_t)(ef_server_refused(t->s) - refused0) - 1);
    CHECK(r->bytes_up == t->bytes_up);
    CHECK(r->train_loss == h.loss_sum / h.loss_w);
    ef_buf_unref(ux);
    ef_buf_unref(uy);
    ef_buf_unref(model_msg);
    ef_buf_unref(task_msg);
    net_free(t);
}

/* Delivers the stale answers client k computed for earlier tasks (all but
 * its newest message), each of which must be refused. */
static void flush_stale(net *t, int k, double now) {
    while (t->up[k].n > 1) CHECK(deliver(t, k, now) != EF_OK);
}

/* Federated evaluation: EVAL to clients with held-out data after the
 * round's aggregation, fed_accuracy from the results, the next round at
 * once after the results, a leave, or the deadline. A client that left
 * during an evaluation is offline: neither trains nor evaluates until it
 * checks in again, and the next round does not wait for it. */
static void test_fed_eval(void) {
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 4;
    cfg.clients_per_round = 2;
    cfg.overselect = 1.5; /* 3 tasks: one late client per round */
    cfg.min_clients = 5;
    cfg.deadline_s = 10.0;
    cfg.fed_eval_every = 1;
    cfg.fed_eval_clients = 3;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    const uint32_t n_eval[5] = {5, 6, 7, 8, 0};
    net *t = net_new(&cfg, &sc, 5, n_eval);
    for (int k = 0; k < 5; k++) checkin(t, k, 0.0);
    float want[NP];
    memcpy(want, t->init, sizeof want);
    double now = 0.0;
    int gone = -1; /* the client that left in round 2, until it checks in */
    int fits_gone = 0; /* its tasks and evaluations when it left */
    for (int round = 1; round <= 4; round++) {
        sent st, se;
        double started = now;
        scan(t, &st);
        CHECK(st.n_task == 3 && st.n_eval == 0);
        CHECK(!contains(st.task_slot, 3, gone));
        t->bytes_down = t->bytes_up = 0;
        route(t);
        agg g = {0};
        for (int j = 0; j < 2; j++) {
            flush_stale(t, st.task_slot[j], now);
            CHECK_OK(deliver(t, st.task_slot[j], now += 1.0));
            agg_add(&g, t, st.task_slot[j], 1.0);
        }
        agg_apply(&g, want);
        /* training closed: the model changed, evaluation tasks went out, the
         * round is not final yet */
        CHECK(model_is(t, want) && ef_server_version(t->s) == (uint32_t)round);
        CHECK(n_records(t) == (size_t)round - 1 && t->n_cb == round - 1);
        scan(t, &se);
        CHECK(se.n_task == 0 && se.n_eval == 3 && distinct(se.eval_slot, 3));
        for (int j = 0; j < 3; j++) {
            CHECK(se.eval_slot[j] != 4); /* no held-out data */
            CHECK(se.eval_round[j] == (uint32_t)round);
        }
        if (gone >= 0) /* exactly the three online clients with held-out data */
            for (int k = 0; k < 4; k++) CHECK(contains(se.eval_slot, 3, k) == (k != gone));
        CHECK(ef_server_next_timer(t->s) == now + 10.0);
        int late = st.task_slot[2];
        route(t);
        for (int j = 0; j < 3; j++) CHECK(t->fk.evals[se.eval_slot[j]] >= 1);
        /* the late client's update arrives during the evaluation: refused,
         * not counted again */
        if (round == 1) {
            CHECK(deliver(t, late, now + 0.1) == EF_ERR_STATE);
            /* an evaluation result for the wrong version */
            int k = se.eval_slot[0];
            ef_buf *e = buf_copy(t->up[k].v[t->up[k].n - 1].buf, EF_WIRE_HEADER + 24);
            wr32(e->data + EF_WIRE_HEADER, 0);
            reseal(e);
            refused_case(t, now + 0.2, e->data, e->len, EF_ERR_STATE, "result for version 0");
            ef_buf_unref(e);
        }
        uint64_t n_ev = 0, correct = 0;
        double loss = 0.0;
        double t_start = now;
        if (round == 1 || round == 4) { /* every result arrives */
            for (int j = 0; j < 3; j++) {
                int k = se.eval_slot[j];
                flush_stale(t, k, now);
                CHECK(n_records(t) == (size_t)round - 1);
                CHECK_OK(deliver(t, k, now += 1.0));
                n_ev += t->fk.ev_n[k];
                correct += t->fk.ev_correct[k];
                loss += t->fk.ev_loss[k];
            }
        } else if (round == 2) { /* one leaves, two answer */
            gone = se.eval_slot[0];
            leave(t, gone, now += 1.0);
            fits_gone = t->fk.fits[gone] + t->fk.evals[gone];
            CHECK(n_records(t) == 1 && t->down.n == 0);
            for (int j = 1; j < 3; j++) {
                int k = se.eval_slot[j];
                flush_stale(t, k, now);
                CHECK_OK(deliver(t, k, now += 1.0));
                n_ev += t->fk.ev_n[k];
                correct += t->fk.ev_correct[k];
                loss += t->fk.ev_loss[k];
            }
            /* round 3 started at once among the four clients online, fewer
             * than min_clients (the next iteration checks its tasks) */
            CHECK(n_records(t) == 2 && t->down.n == 6);
            /* what the leaver computed before leaving (its evaluation result,
             * perhaps a late update) arrives now: refused, sends nothing */
            CHECK(t->up[gone].n >= 1);
            while (t->up[gone].n) CHECK(deliver(t, gone, now) == EF_ERR_STATE);
            CHECK(t->down.n == 6);
        } else { /* one answers, the deadline ends the evaluation */
            int k = se.eval_slot[1];
            flush_stale(t, k, now);
            CHECK_OK(deliver(t, k, now += 1.0));
            n_ev += t->fk.ev_n[k];
            correct += t->fk.ev_correct[k];
            loss += t->fk.ev_loss[k];
            /* the leaver checks in during the evaluation: given nothing now,
             * selectable from round 4 */
            CHECK(gone >= 0 && t->fk.fits[gone] + t->fk.evals[gone] == fits_gone);
            checkin(t, gone, now);
            CHECK(t->down.n == 0 && n_records(t) == 2);
            gone = -1;
            CHECK_OK(ef_server_tick(t->s, t_start + 9.5, &t->down));
            CHECK(n_records(t) == 2);
            now = t_start + 10.0;
            CHECK(ef_server_next_timer(t->s) == now);
            CHECK_OK(ef_server_tick(t->s, now, &t->down));
            /* round 4 has begun; the other two results arrive now: refused,
             * and not counted in round 4's record */
            for (int j = 0; j < 3; j += 2) {
                int e = se.eval_slot[j];
                CHECK(t->up[e].n >= 1 && t->up[e].v[t->up[e].n - 1].type == EF_MSG_EVAL_RESULT);
                ef_buf *b = t->up[e].v[--t->up[e].n].buf;
                refused_case(t, now, b->data, b->len, EF_ERR_STATE, "late evaluation result");
                ef_buf_unref(b);
            }
        }
        CHECK(n_records(t) == (size_t)round && t->n_cb == round);
        const ef_round_record *r = record(t, (size_t)round - 1);
        CHECK(r->round == (uint32_t)round);
        CHECK(r->selected == 3 && r->completed == 2 && r->late == 1);
        /* round 1: the result for version 0 (the late update is not counted) */
        CHECK_MSG(r->rejected == (round == 1 ? 1u : 0u), "round %d: rejected %u", round,
                  r->rejected);
        CHECK(r->fed_accuracy == (double)correct / (double)n_ev);
        CHECK(r->fed_loss == loss / (double)n_ev);
        CHECK(r->sim_start == started && r->sim_end == now);
        CHECK(r->bytes_down == t->bytes_down);
        CHECK(r->bytes_up == t->bytes_up);
        CHECK(t->cb_rec[round - 1].fed_accuracy == r->fed_accuracy);
    }
    CHECK(ef_server_done(t->s));
    CHECK(t->down.n == 0);
    for (int k = 0; k < 5; k++) {
        CHECK(t->fk.evals[4] == 0);
        while (t->up[k].n) CHECK(deliver(t, k, now + 1) != EF_OK); /* too late */
    }
    CHECK(t->down.n == 0 && n_records(t) == 4);
    net_free(t);
}

/* The single TASK of an asynchronous refill: its client. */
static int one_task(net *t, uint32_t version, const int *busy, int n_busy) {
    sent s;
    scan(t, &s);
    CHECK_MSG(s.n_task == 1 && s.n_eval == 0, "%d tasks", s.n_task);
    if (s.n_task != 1) return -1;
    CHECK(s.task[0].version == version);
    CHECK(s.task[0].deadline_s == 20.0f);
    CHECK(!contains(busy, n_busy, s.task_slot[0])); /* never a client already training */
    return s.task_slot[0];
}

/* Checks the record of asynchronous round `round`, then resets the byte
 * counters for the next (the caller routes the new round's tasks next). */
static void check_async_record(net *t, uint32_t round, double start, double end,
                               uint32_t selected, double st_mean, uint32_t st_max) {
    CHECK(n_records(t) == round);
    const ef_round_record *r = record(t, round - 1);
    CHECK(r->round == round && r->aggregated == 1 && r->completed == 2);
    CHECK(r->sim_start == start && r->sim_end == end);
    CHECK_MSG(r->selected == selected, "round %u: selected %u, want %u", round, r->selected,
              selected);
    CHECK(r->staleness_mean == st_mean && r->staleness_max == st_max);
    CHECK(r->bytes_down == t->bytes_down && r->bytes_up == t->bytes_up);
    t->bytes_down = t->bytes_up = 0;
}

/* FedBuff: clients_per_round clients always training, aggregation every
 * buffer_k updates, staleness weights, the staleness bound, task timeouts
 * and leaves. */
static void test_async(void) {
    ef_server_config cfg = fl_base_config(JOB);
    cfg.async = 1;
    cfg.rounds = 4;
    cfg.clients_per_round = 2;
    cfg.buffer_k = 2;
    cfg.max_staleness = 1;
    cfg.staleness_exponent = 1.0; /* weight 1/2 at staleness 1: exact */
    cfg.deadline_s = 20.0;
    cfg.min_clients = 4;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    net *t = net_new(&cfg, &sc, 5, NULL);
    CHECK(ef_staleness_weight(1, 1.0) == 0.5);
    for (int k = 0; k < 3; k++) {
        checkin(t, k, (double)k);
        CHECK(t->down.n == 0);
    }
    checkin(t, 3, 3.0);
    sent s;
    scan(t, &s);
    CHECK(s.n_task == 2 && distinct(s.task_slot, 2));
    for (int j = 0; j < 2; j++) CHECK(s.task[j].version == 0 && s.task_round[j] == 1);
    CHECK(ef_server_next_timer(t->s) == 23.0);
    route(t);
    checkin(t, 4, 3.5); /* two are training already: nothing to send */
    CHECK(t->down.n == 0);
    int A = s.task_slot[0], B = s.task_slot[1];
    float want[NP];
    memcpy(want, t->init, sizeof want);

    /* A answers: one buffered update, a new task (version 0) */
    CHECK_OK(deliver(t, A, 4.0));
    int C = one_task(t, 0, &B, 1);
    CHECK(ef_server_version(t->s) == 0 && n_records(t) == 0);
    route(t);
    /* B answers: aggregation 1 */
    CHECK_OK(deliver(t, B, 5.0));
    agg g1 = {0};
    agg_add(&g1, t, A, 1.0);
    agg_add(&g1, t, B, 1.0);
    agg_apply(&g1, want);
    CHECK(model_is(t, want) && ef_server_version(t->s) == 1);
    check_async_record(t, 1, 3.0, 5.0, 3, 0.0, 0);
    int D = one_task(t, 1, &C, 1);
    route(t);
    /* D (staleness 0) and then C (task on version 0: staleness 1) */
    CHECK_OK(deliver(t, D, 6.0));
    int E = one_task(t, 1, &C, 1);
    route(t);
    CHECK_OK(deliver(t, C, 7.0));
    agg g2 = {0};
    agg_add(&g2, t, D, 1.0);
    agg_add(&g2, t, C, ef_staleness_weight(1, cfg.staleness_exponent));
    agg_apply(&g2, want);
    CHECK(model_is(t, want) && ef_server_version(t->s) == 2);
    check_async_record(t, 2, 5.0, 7.0, 2, 0.5, 1);
    int F = one_task(t, 2, &E, 1);
    route(t);
    /* F and G answer: aggregation 3; E's task (version 1) is now 2 stale */
    CHECK_OK(deliver(t, F, 8.0));
    int G = one_task(t, 2, &E, 1);
    route(t);
    CHECK_OK(deliver(t, G, 9.0));
    agg g3 = {0};
    agg_add(&g3, t, F, 1.0);
    agg_add(&g3, t, G, 1.0);
    agg_apply(&g3, want);
    CHECK(model_is(t, want) && ef_server_version(t->s) == 3);
    check_async_record(t, 3, 7.0, 9.0, 2, 0.0, 0);
    int H = one_task(t, 3, &E, 1);
    route(t);

    /* E's update exceeds max_staleness: refused, replaced by a new task */
    uint64_t refused = ef_server_refused(t->s);
    CHECK(deliver(t, E, 10.0) == EF_ERR_STATE);
    CHECK(ef_server_refused(t->s) == refused + 1);
    CHECK(model_is(t, want) && ef_server_version(t->s) == 3 && n_records(t) == 3);
    int I = one_task(t, 3, &H, 1);
    route(t);

    /* H's task times out at 9 + 20 */
    CHECK(ef_server_next_timer(t->s) == 29.0);
    CHECK_OK(ef_server_tick(t->s, 28.5, &t->down));
    CHECK(t->down.n == 0);
    CHECK_OK(ef_server_tick(t->s, 29.0, &t->down));
    int J = one_task(t, 3, &I, 1);
    CHECK(ef_server_next_timer(t->s) == 30.0); /* I's task, then J's at 49 */
    route(t);
    if (J != H) {
        CHECK(deliver(t, H, 29.5) == EF_ERR_STATE); /* it no longer holds a task */
    } else {
        ef_buf_unref(pop(&t->up[H], NULL)); /* its timed-out answer is lost */
    }
    /* I leaves: dropped, replaced */
    leave(t, I, 29.8);
    int K = one_task(t, 3, &J, 1);
    route(t);
    CHECK(ef_server_next_timer(t->s) == 49.0);
    CHECK_OK(deliver(t, J, 31.0));
    CHECK(!ef_server_done(t->s));
    int busy[1] = {K};
    int L = one_task(t, 3, busy, 1);
    route(t);
    CHECK_OK(deliver(t, K, 32.0));
    agg g4 = {0};
    agg_add(&g4, t, J, 1.0);
    agg_add(&g4, t, K, 1.0);
    agg_apply(&g4, want);
    CHECK(model_is(t, want) && ef_server_version(t->s) == 4);
    CHECK(ef_server_done(t->s));
    check_async_record(t, 4, 9.0, 32.0, 5, 0.0, 0);
    const ef_round_record *r = record(t, 3);
    CHECK(r->late == 1 && r->dropped == 1);
    CHECK(r->rejected == (J != H ? 2u : 1u));
    CHECK(t->down.n == 0); /* the run is over: no new task */
    CHECK(isinf(ef_server_next_timer(t->s)));
    CHECK(deliver(t, L, 33.0) != EF_OK);
    CHECK_OK(ef_server_tick(t->s, 100.0, &t->down));
    CHECK(t->down.n == 0 && model_is(t, want) && n_records(t) == 4);
    net_free(t);
}

/* ---- determinism -------------------------------------------------------- */

typedef struct bytes {
    uint8_t *p;
    size_t n, cap;
} bytes;

static void put(bytes *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void log_down(bytes *log, const net *t) {
    for (size_t i = 0; i < t->down.n; i++) {
        const ef_out_msg *m = &t->down.v[i];
        uint32_t hdr[3] = {m->to, (uint32_t)m->type, (uint32_t)m->buf->len};
        put(log, hdr, sizeof hdr);
        put(log, m->buf->data, m->buf->len);
    }
}

/* A scripted run with stragglers, deadlines and federated evaluation in
 * which every input depends only on the server's earlier output. */
static void scripted(uint64_t seed, int async, bytes *log) {
    ef_server_config cfg = fl_base_config(JOB);
    cfg.seed = seed;
    cfg.rounds = 5;
    cfg.clients_per_round = 3;
    cfg.min_clients = 6;
    cfg.deadline_s = 10.0;
    cfg.async = async;
    if (async) {
        cfg.buffer_k = 2;
        cfg.max_staleness = 2;
    } else {
        cfg.overselect = 1.4; /* 5 tasks */
        cfg.min_updates = 2;
        cfg.fed_eval_every = 2;
        cfg.fed_eval_clients = 2;
    }
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    net *t = net_new(&cfg, &sc, 8, NULL);
    double now = 0.0;
    for (int k = 0; k < 8; k++) {
        checkin(t, k, now += 0.25);
        log_down(log, t);
        route(t);
    }
    for (int it = 0; it < 400 && !ef_server_done(t->s); it++) {
        int sent_any = 0;
        for (int k = 0; k < 8; k++) {
            if (t->up[k].n == 0 || (k + it) % 5 == 0) continue; /* a straggler this turn */
            ef_status st = deliver(t, k, now += 0.5);
            put(log, &st, sizeof st);
            log_down(log, t);
            route(t);
            sent_any = 1;
        }
        if (!sent_any) {
            double next = ef_server_next_timer(t->s);
            if (isinf(next)) break;
            if (next > now) now = next;
            CHECK_OK(ef_server_tick(t->s, now, &t->down));
            log_down(log, t);
            route(t);
        }
    }
    CHECK(ef_server_done(t->s));
    put(log, ef_server_model(t->s, NULL), NP * sizeof(float));
    size_t n;
    const ef_round_record *r = ef_server_records(t->s, &n);
    CHECK(n == 5);
    put(log, r, n * sizeof *r);
    net_free(t);
}

static void test_determinism(void) {
    for (int async = 0; async < 2; async++) {
        bytes a = {0}, b = {0}, c = {0};
        scripted(7, async, &a);
        scripted(7, async, &b);
        scripted(8, async, &c);
        CHECK(a.n > 0 && a.n == b.n && memcmp(a.p, b.p, a.n) == 0);
        CHECK(a.n != c.n || memcmp(a.p, c.p, a.n) != 0); /* the seed matters */
        free(a.p);
        free(b.p);
        free(c.p);
    }
}

/* Runs rounds until the server is done: every message delivered at once. */
static void run_all(net *t, double now) {
    for (int guard = 0; guard < 1000 && !ef_server_done(t->s); guard++) {
        route(t);
        int moved = 0;
        for (int k = 0; k < t->n; k++)
            while (t->up[k].n > 0) {
                CHECK_OK(deliver(t, k, now));
                moved++;
            }
        if (!moved && t->down.n == 0) break;
    }
}

/* Central DP: clipped, noised aggregates; epsilon per round from the
 * accountant; a budget reached mid-run stops the run with its reason. */
static void test_dp_budget(void) {
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 10;
    cfg.clients_per_round = 4;
    cfg.min_clients = 10;
    cfg.dp = EF_DP_CENTRAL;
    cfg.dp_noise = 1.0;
    cfg.dp_clip = 0.5;
    cfg.dp_population = 10; /* q = 0.4 */
    cfg.deterministic_noise = 1;
    /* the target: just what two rounds spend */
    double eps2 = NAN;
    ef_accountant *acc;
    CHECK_OK(ef_accountant_new(&acc, NULL, 0));
    CHECK_OK(ef_accountant_step(acc, 0.4, 1.0, 2));
    CHECK_OK(ef_accountant_epsilon(acc, cfg.dp_delta, &eps2, NULL));
    ef_accountant_free(acc);
    cfg.dp_target_epsilon = eps2;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    net *t = net_new(&cfg, &sc, 10, NULL);
    CHECK(ef_server_epsilon(t->s) == 0.0);
    for (int k = 0; k < 10; k++) checkin(t, k, 0.0);
    run_all(t, 1.0);
    CHECK(ef_server_done(t->s));
    CHECK_MSG(n_records(t) == 2, "%zu rounds, expected 2", n_records(t));
    CHECK(strstr(ef_server_stop_reason(t->s), "privacy budget") != NULL);
    CHECK_MSG(ef_server_epsilon(t->s) == eps2, "epsilon %.17g, expected %.17g",
              ef_server_epsilon(t->s), eps2);
    CHECK(record(t, 1)->epsilon == eps2 && record(t, 0)->epsilon < eps2);
    CHECK(record(t, 0)->aggregated && record(t, 1)->aggregated);
    /* the fake updates have norm far above 0.5: the model moved by a clipped,
     * noised mean, not by the plain FedAvg of the updates */
    size_t np;
    const float *m = ef_server_model(t->s, &np);
    double moved = 0;
    for (size_t i = 0; i < np; i++) moved += (m[i] - t->init[i]) * (m[i] - t->init[i]);
    CHECK(moved > 0 && isfinite(moved));
    net_free(t);
    /* without DP: no epsilon */
    cfg.dp = EF_DP_OFF;
    t = net_new(&cfg, &sc, 10, NULL);
    CHECK(isnan(ef_server_epsilon(t->s)));
    net_free(t);
    /* bad settings refused */
    ef_server *s = NULL;
    ef_params *p = NULL;
    int64_t shape[1] = {NP};
    CHECK_OK(ef_params_new(&p));
    CHECK_OK(ef_params_add(p, "w", 1, shape));
    CHECK_OK(ef_params_alloc(p));
    cfg = fl_base_config(JOB);
    cfg.dp = EF_DP_DISTRIBUTED; /* without secure aggregation */
    CHECK(ef_server_new(&s, &cfg, &sc, p, NULL, NULL) == EF_ERR_INVALID);
    cfg.dp = EF_DP_CENTRAL;
    cfg.dp_clip = 1.0;
    cfg.dp_noise = 0;
    CHECK(ef_server_new(&s, &cfg, &sc, p, NULL, NULL) == EF_ERR_INVALID);
    cfg.dp_noise = 1, cfg.dp_delta = 1;
    CHECK(ef_server_new(&s, &cfg, &sc, p, NULL, NULL) == EF_ERR_INVALID);
    cfg.dp_delta = 1e-5, cfg.async = 1;
    CHECK(ef_server_new(&s, &cfg, &sc, p, NULL, NULL) == EF_ERR_UNSUPPORTED);
    CHECK(s == NULL);
    ef_params_free(p);
}

/* ---- authentication ---------------------------------------------------------- */

/* Signed messages from allow-listed clients pass; unsigned ones, unknown
 * senders, bad signatures (a tampered message with a recomputed CRC, a key
 * that is not the registered one), replays and corrupted bytes are refused
 * with EF_ERR_AUTH / EF_ERR_FORMAT and change nothing; clients refuse
 * server messages that the server's key did not sign. */
static void test_authentication(void) {
    static uint8_t cpk[MAXC][EF_PK_BYTES], csk[MAXC][EF_SK_BYTES];
    uint8_t spk[EF_PK_BYTES], ssk[EF_SK_BYTES], xpk[EF_PK_BYTES], xsk[EF_SK_BYTES];
    CHECK(sodium_init() >= 0);
    crypto_sign_keypair(spk, ssk);
    crypto_sign_keypair(xpk, xsk);
    for (int k = 0; k < 4; k++) {
        crypto_sign_keypair(cpk[k], csk[k]);
        g_client_sk[k] = csk[k];
    }
    g_server_pk = spk;
    g_client_first_seq = 1000;
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 1;
    cfg.clients_per_round = 3;
    cfg.min_clients = 3;
    cfg.sign_key = ssk;
    cfg.authenticate = 1;
    cfg.first_seq = 5000;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    net *t = net_new(&cfg, &sc, 4, NULL);
    for (int k = 0; k < 3; k++) CHECK_OK(ef_server_allow(t->s, ID(k), cpk[k]));
    /* the same id with another key is refused; a reserved id too */
    CHECK(ef_server_allow(t->s, ID(0), cpk[1]) == EF_ERR_INVALID);
    CHECK(ef_server_allow(t->s, EF_SERVER_ID, cpk[1]) == EF_ERR_INVALID);
    uint64_t refused = ef_server_refused(t->s);
    /* client 3 is not on the allow-list */
    CHECK_OK(ef_client_checkin(t->c[3], &t->up[3]));
    CHECK(deliver_last(t, 3, 0.0) == EF_ERR_AUTH);
    CHECK(strstr(ef_last_error(), "allow-list") != NULL);
    /* an unsigned check-in under an allowed id */
    ef_buf *u = ef_buf_new(EF_WIRE_HEADER + 8);
    memset(u->data + EF_WIRE_HEADER, 0, 8);
    ef_wire_seal(u->data, EF_MSG_CHECKIN, JOB, 0, ID(0), 2000, 8);
    CHECK(feed(t, 0.0, u->data, u->len) == EF_ERR_AUTH);
    CHECK(strstr(ef_last_error(), "unsigned") != NULL);
    ef_buf_unref(u);
    CHECK(ef_server_refused(t->s) == refused + 2);
    CHECK(t->down.n == 0);
    for (int k = 0; k < 3; k++) checkin(t, k, 0.0);
    /* the round started: every server message is signed by the server */
    CHECK(t->down.n == 6);
    for (size_t i = 0; i < t->down.n; i++) {
        ef_msg m;
        CHECK_OK(ef_wire_decode(t->down.v[i].buf->data, t->down.v[i].buf->len, (size_t)-1, &m));
        CHECK(m.sig != NULL && m.seq > 5000);
        CHECK_OK(ef_wire_verify(t->down.v[i].buf->data, &m, spk));
        if (m.type == EF_MSG_TASK) CHECK(m.task == m.seq);
    }
    /* a client refuses a server message signed by another key, and a
     * tampered one; then takes the genuine ones */
    {
        ef_buf *fake_task = dup_buf(t->down.v[1].buf);
        ef_msg m;
        CHECK_OK(ef_wire_decode(fake_task->data, fake_task->len, (size_t)-1, &m));
        ef_wire_sign(fake_task->data, m.payload_len, xsk);
        int k = SLOT(t->down.v[1].to);
        ef_status st = ef_client_handle(t->c[k], fake_task, 0, &t->up[k]);
        CHECK(st == EF_ERR_AUTH && strstr(ef_last_error(), "bad signature"));
        CHECK(t->up[k].n == 0);
        ef_buf_unref(fake_task);
    }
    route(t);
    for (int k = 0; k < 3; k++) CHECK(t->up[k].n == 1);
    ef_buf *up0 = dup_buf(t->up[0].v[0].buf);
    /* a tampered update with a recomputed CRC: bad signature */
    ef_buf *bad = dup_buf(t->up[1].v[0].buf);
    bad->data[EF_WIRE_HEADER + EF_UPDATE_FIXED] ^= 0x40;
    /* an attacker can recompute the CRC, not the signature */
    wr32(bad->data + 44, crc_of(bad->data, EF_UPDATE_FIXED + 4 * NP));
    CHECK(feed(t, 1.0, bad->data, bad->len) == EF_ERR_AUTH);
    CHECK(strstr(ef_last_error(), "bad signature") != NULL);
    /* corrupted in transit (CRC not fixed): a format error */
    bad->data[EF_WIRE_HEADER + 3] ^= 1;
    CHECK(feed(t, 1.0, bad->data, bad->len) == EF_ERR_FORMAT);
    CHECK(strstr(ef_last_error(), "CRC") != NULL);
    ef_buf_unref(bad);
    /* client 1's update re-signed with client 2's key: bad signature */
    ef_buf *forged = dup_buf(t->up[1].v[0].buf);
    {
        ef_msg m;
        ef_wire_decode(forged->data, forged->len, (size_t)-1, &m);
        ef_wire_sign(forged->data, m.payload_len, csk[2]);
        CHECK(feed(t, 1.0, forged->data, forged->len) == EF_ERR_AUTH);
    }
    ef_buf_unref(forged);
    size_t nmodel;
    float before[NP];
    memcpy(before, ef_server_model(t->s, &nmodel), sizeof before);
    CHECK(ef_server_refused(t->s) == refused + 5);
    CHECK(ef_server_version(t->s) == 0);
    /* the genuine updates; client 0's a second time is a replay */
    CHECK_OK(deliver(t, 0, 1.0));
    CHECK(feed(t, 1.0, up0->data, up0->len) == EF_ERR_AUTH);
    CHECK(strstr(ef_last_error(), "replayed") != NULL);
    ef_buf_unref(up0);
    CHECK_OK(deliver(t, 1, 1.0));
    CHECK_OK(deliver(t, 2, 1.0));
    CHECK(ef_server_done(t->s));
    size_t nr;
    const ef_round_record *r = ef_server_records(t->s, &nr);
    CHECK(nr == 1 && r[0].completed == 3 && r[0].aggregated == 1);
    CHECK(memcmp(before, ef_server_model(t->s, &nmodel), sizeof before) != 0);
    net_free(t);
    for (int k = 0; k < 4; k++) g_client_sk[k] = NULL;
    g_server_pk = NULL;
    g_client_first_seq = 0;
}

/* ---- checkpoints ------------------------------------------------------------- */

/* Delivers everything in flight until nothing moves, checkpointing into
 * `dir` (if not NULL) whenever a round closes. Stops early once `stop_after`
 * rounds are recorded and one more update has been delivered (a crash in
 * the middle of the next round), when stop_after > 0. */
static void pump(net *t, double now, const char *dir, size_t stop_after) {
    size_t seen;
    ef_server_records(t->s, &seen);
    for (int moved = 1; moved;) {
        moved = 0;
        route(t);
        for (int k = 0; k < t->n; k++) {
            while (t->up[k].n > 0) {
                size_t nr;
                ef_server_records(t->s, &nr);
                if (stop_after && nr >= stop_after && nr == seen && moved) return;
                deliver(t, k, now);
                moved = 1;
                ef_server_records(t->s, &nr);
                if (nr != seen) {
                    if (dir) CHECK_OK(ef_server_checkpoint(t->s, dir));
                    seen = nr;
                    moved = 0; /* deliver exactly one update of the next round before a stop */
                    route(t);
                    moved = 1;
                }
            }
        }
    }
}

/* A run killed in the middle of round 3 and restored from its checkpoint
 * ends with the same rounds, records and model, bit for bit, as one that
 * was never interrupted; answers to tasks of the interrupted round are
 * refused (no update aggregated twice); server-optimizer state (FedAvgM
 * momentum) survives; bad checkpoints are refused and change nothing. */
static void test_checkpoint(void) {
    char dir[] = "/tmp/edgefl-ckpt-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 4;
    cfg.clients_per_round = 2;
    cfg.min_clients = 4;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVGM);
    /* A: uninterrupted */
    net *a = net_new(&cfg, &sc, 4, NULL);
    for (int k = 0; k < 4; k++) checkin(a, k, 0.0);
    pump(a, 1.0, NULL, 0);
    CHECK(ef_server_done(a->s));
    /* B: checkpoints every round, dies after one update of round 3 */
    net *b = net_new(&cfg, &sc, 4, NULL);
    for (int k = 0; k < 4; k++) checkin(b, k, 0.0);
    pump(b, 1.0, dir, 2);
    size_t nr;
    ef_server_records(b->s, &nr);
    CHECK(nr == 2);
    int pending = 0;
    for (int k = 0; k < 4; k++) pending += (int)b->up[k].n;
    CHECK(pending >= 1); /* an update of round 3 still in flight */
    ef_server_free(b->s);
    b->s = NULL;
    /* restart: a new server (new message counters) from the checkpoint */
    ef_server_config cfg2 = cfg;
    cfg2.first_seq = 1u << 20;
    ef_params *p = NULL;
    int64_t shape[1] = {NP};
    CHECK_OK(ef_params_new(&p));
    CHECK_OK(ef_params_add(p, "w", 1, shape));
    CHECK_OK(ef_params_alloc(p));
    memcpy(ef_params_data(p), b->init, sizeof b->init);
    CHECK_OK(ef_server_new(&b->s, &cfg2, &sc, p, on_round, b));
    int restored = 0;
    CHECK_OK(ef_server_restore(b->s, dir, &restored));
    CHECK(restored == 1);
    CHECK(ef_server_version(b->s) == 2);
    ef_server_records(b->s, &nr);
    CHECK(nr == 2);
    CHECK(ef_server_restore(b->s, dir, &restored) == EF_ERR_STATE); /* only once, at start */
    uint64_t ref0 = ef_server_refused(b->s);
    /* an answer to an old round-3 task before round 3 starts again: stale,
     * and said so (not "closed round") */
    for (int k = 0, first = 1; k < 4 && first; k++)
        if (b->up[k].n > 0) {
            CHECK(deliver(b, k, 2.0) == EF_ERR_STATE);
            CHECK_MSG(strstr(ef_last_error(), "has not started: a task from before a restart") !=
                          NULL, "%s", ef_last_error());
            first = 0;
        }
    CHECK_OK(ef_server_tick(b->s, 2.0, &b->down)); /* round 3 starts again */
    /* the others after it started: stale task */
    for (int k = 0; k < 4; k++)
        while (b->up[k].n > 0) CHECK(deliver(b, k, 2.0) == EF_ERR_STATE);
    CHECK(ef_server_refused(b->s) > ref0);
    pump(b, 2.0, dir, 0);
    CHECK(ef_server_done(b->s));
    size_t na, nb, n1, n2;
    const ef_round_record *ra = ef_server_records(a->s, &na), *rb = ef_server_records(b->s, &nb);
    CHECK(na == 4 && nb == 4);
    for (size_t i = 0; i < 4 && i < nb; i++) {
        CHECK(rb[i].round == i + 1);
        CHECK(rb[i].completed == ra[i].completed && rb[i].aggregated == ra[i].aggregated);
    }
    const float *ma = ef_server_model(a->s, &n1), *mb = ef_server_model(b->s, &n2);
    CHECK(n1 == NP && n2 == NP && memcmp(ma, mb, NP * sizeof(float)) == 0);
    CHECK(ef_server_version(b->s) == 4);
    /* a finished run restores as done */
    ef_server *d = NULL;
    CHECK_OK(ef_server_new(&d, &cfg, &sc, p, NULL, NULL));
    CHECK_OK(ef_server_restore(d, dir, &restored));
    CHECK(restored && ef_server_done(d));
    ef_server_free(d);
    /* refused: another job, another strategy, a corrupted model file, bad JSON */
    ef_server_config other = cfg;
    other.job = JOB + 1;
    CHECK_OK(ef_server_new(&d, &other, &sc, p, NULL, NULL));
    CHECK(ef_server_restore(d, dir, &restored) == EF_ERR_FORMAT && !restored);
    CHECK(strstr(ef_last_error(), "job") != NULL);
    CHECK(ef_server_version(d) == 0);
    ef_server_free(d);
    ef_strategy_config avg = ef_strategy_defaults(EF_STRAT_FEDAVG);
    CHECK_OK(ef_server_new(&d, &cfg, &avg, p, NULL, NULL));
    CHECK(ef_server_restore(d, dir, &restored) == EF_ERR_FORMAT);
    ef_server_free(d);
    char path[256];
    snprintf(path, sizeof path, "%s/model-4.safetensors", dir);
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    if (f) {
        fseek(f, -3, SEEK_END);
        int ch = fgetc(f);
        fseek(f, -3, SEEK_END);
        fputc(ch ^ 0x20, f);
        fclose(f);
    }
    CHECK_OK(ef_server_new(&d, &cfg, &sc, p, NULL, NULL));
    CHECK(ef_server_restore(d, dir, &restored) == EF_ERR_FORMAT);
    CHECK(strstr(ef_last_error(), "hash") != NULL);
    CHECK(ef_server_version(d) == 0 && !ef_server_done(d));
    ef_server_free(d);
    snprintf(path, sizeof path, "%s/state.json", dir);
    CHECK_OK(ef_write_file_atomic(path, "{\"format\":", 10));
    CHECK_OK(ef_server_new(&d, &cfg, &sc, p, NULL, NULL));
    CHECK(ef_server_restore(d, dir, &restored) == EF_ERR_FORMAT);
    ef_server_free(d);
    /* only one model file is kept */
    snprintf(path, sizeof path, "%s/model-3.safetensors", dir);
    CHECK(access(path, F_OK) != 0);
    ef_params_free(p);
    net_free(a);
    net_free(b);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

/* ---- scale-out workers --------------------------------------------------------- */

/* Routes server output to the clients and lets every worker observe the
 * TASKs (workers read the client inboxes). */
static void route_observed(net *t, ef_worker **w, int nw) {
    for (size_t i = 0; i < t->down.n; i++)
        for (int j = 0; j < nw; j++)
            if (t->down.v[i].type == EF_MSG_TASK)
                CHECK_OK(ef_worker_observe(w[j], t->down.v[i].to, t->down.v[i].buf->data,
                                           t->down.v[i].buf->len));
    route(t);
}

/* Client k's pending messages go to worker k % nw (a shared subscription);
 * the workers' output goes to the server. */
static void through_workers(net *t, ef_worker **w, int nw, double now, int flush) {
    ef_outbox o = {0};
    for (int k = 0; k < t->n; k++)
        while (t->up[k].n > 0) {
            ef_buf *b = pop(&t->up[k], NULL);
            CHECK_OK(ef_worker_handle(w[k % nw], now, b->data, b->len, &o));
            ef_buf_unref(b);
        }
    for (int j = 0; j < nw; j++) CHECK_OK(ef_worker_tick(w[j], now, flush, &o));
    for (size_t i = 0; i < o.n; i++)
        CHECK_MSG(feed(t, now, o.v[i].buf->data, o.v[i].buf->len) == EF_OK, "%s: %s",
                  ef_msg_type_name(o.v[i].type), ef_last_error());
    ef_outbox_free(&o);
}

/* Two workers sharing the inbox give the model a flat run gives (up to the
 * float rounding of each batch mean), every update counted once; duplicates
 * are dropped, updates for tasks a worker did not see go to the server
 * unchanged, a partial with a stale entry or a replayed partial is refused
 * whole, and a worker cannot act as a client. */
static void test_workers(void) {
    static uint8_t cpk[MAXC][EF_PK_BYTES], csk[MAXC][EF_SK_BYTES];
    uint8_t wpk[3][EF_PK_BYTES], wsk[3][EF_SK_BYTES], spk[EF_PK_BYTES], ssk[EF_SK_BYTES];
    CHECK(sodium_init() >= 0);
    crypto_sign_keypair(spk, ssk);
    for (int j = 0; j < 3; j++) crypto_sign_keypair(wpk[j], wsk[j]);
    for (int k = 0; k < 6; k++) {
        crypto_sign_keypair(cpk[k], csk[k]);
        g_client_sk[k] = csk[k];
    }
    g_server_pk = spk;
    g_client_first_seq = 100;
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 2;
    cfg.clients_per_round = 6;
    cfg.min_clients = 6;
    cfg.sign_key = ssk;
    cfg.authenticate = 1;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    /* flat reference */
    net *a = net_new(&cfg, &sc, 6, NULL);
    for (int k = 0; k < 6; k++) CHECK_OK(ef_server_allow(a->s, ID(k), cpk[k]));
    for (int k = 0; k < 6; k++) checkin(a, k, 0.0);
    pump(a, 1.0, NULL, 0);
    CHECK(ef_server_done(a->s));
    /* through two workers */
    net *t = net_new(&cfg, &sc, 6, NULL);
    for (int k = 0; k < 6; k++) CHECK_OK(ef_server_allow(t->s, ID(k), cpk[k]));
    ef_worker *w[2];
    for (int j = 0; j < 2; j++) {
        CHECK_OK(ef_server_add_aggregator(t->s, 900 + j, wpk[j]));
        ef_worker_config wc = {.job = JOB, .id = 900 + (uint32_t)j, .n_params = NP, .max_batch = 2,
                               .flush_s = 0.5, .sign_key = wsk[j], .server_pk = spk,
                               .authenticate = 1, .first_seq = 10};
        CHECK_OK(ef_worker_new(&w[j], &wc));
        for (int k = 0; k < 6; k++) CHECK_OK(ef_worker_allow(w[j], ID(k), cpk[k]));
    }
    CHECK(ef_server_add_aggregator(t->s, 902, NULL) == EF_ERR_INVALID); /* needs a key */
    CHECK_OK(ef_server_add_aggregator(t->s, 902, wpk[2])); /* a faulty worker */
    CHECK(ef_server_add_aggregator(t->s, ID(0), wpk[0]) == EF_ERR_INVALID); /* a client's id */
    /* check-ins pass through the workers unchanged */
    for (int k = 0; k < 6; k++) CHECK_OK(ef_client_checkin(t->c[k], &t->up[k]));
    through_workers(t, w, 2, 0.0, 0);
    CHECK(ef_worker_get_stats(w[0]).forwarded == 3 && ef_worker_get_stats(w[1]).forwarded == 3);
    CHECK(t->down.n == 12); /* round 1: six MODEL + TASK pairs */
    route_observed(t, w, 2);
    /* a redelivered copy of client 0's update: batched once, the copy dropped */
    ef_buf *copy = dup_buf(t->up[0].v[0].buf);
    through_workers(t, w, 2, 1.0, 0);
    ef_outbox o = {0};
    CHECK_OK(ef_worker_handle(w[0], 1.0, copy->data, copy->len, &o));
    CHECK(o.n == 0 && ef_worker_get_stats(w[0]).duplicates == 1);
    ef_buf_unref(copy);
    size_t nr;
    ef_server_records(t->s, &nr);
    /* max_batch 2: each worker sent one partial and holds one update */
    CHECK(nr == 0);
    CHECK(ef_worker_get_stats(w[0]).partials == 1 && ef_worker_get_stats(w[1]).partials == 1);
    CHECK(ef_worker_next_timer(w[0]) == 1.5);
    for (int j = 0; j < 2; j++) CHECK_OK(ef_worker_tick(w[j], 1.4, 0, &o));
    CHECK(o.n == 0);
    for (int j = 0; j < 2; j++) CHECK_OK(ef_worker_tick(w[j], 1.5, 0, &o));
    CHECK(o.n == 2 && isinf(ef_worker_next_timer(w[0])));
    for (size_t i = 0; i < o.n; i++) CHECK_OK(feed(t, 1.5, o.v[i].buf->data, o.v[i].buf->len));
    ef_outbox_free(&o);
    ef_server_records(t->s, &nr);
    CHECK(nr == 1);
    const ef_round_record *rec = ef_server_records(t->s, &nr);
    CHECK(rec[0].completed == 6 && rec[0].aggregated == 1 && rec[0].rejected == 0);
    /* round 2: worker 1 never saw client 1's task, so it forwards that update */
    for (size_t i = 0; i < t->down.n; i++)
        if (t->down.v[i].type == EF_MSG_TASK) {
            CHECK_OK(ef_worker_observe(w[0], t->down.v[i].to, t->down.v[i].buf->data,
                                       t->down.v[i].buf->len));
            if (t->down.v[i].to != ID(1))
                CHECK_OK(ef_worker_observe(w[1], t->down.v[i].to, t->down.v[i].buf->data,
                                           t->down.v[i].buf->len));
        }
    /* a forged TASK is not learnt */
    {
        ef_buf *f = dup_buf(t->down.v[1].buf);
        ef_msg m;
        ef_wire_decode(f->data, f->len, (size_t)-1, &m);
        ef_wire_sign(f->data, m.payload_len, wsk[0]);
        CHECK(ef_worker_observe(w[1], ID(1), f->data, f->len) == EF_ERR_AUTH);
        ef_buf_unref(f);
    }
    route(t);
    /* a partial with a stale entry is refused whole; the model is unchanged */
    {
        ef_buf *u0 = dup_buf(t->up[0].v[0].buf);
        ef_msg m;
        ef_wire_decode(u0->data, u0->len, (size_t)-1, &m);
        size_t plen = EF_PARTIAL_FIXED + EF_PARTIAL_ENTRY + NP * 4;
        ef_buf *p = ef_buf_new(EF_WIRE_HEADER + plen + EF_SIG_BYTES);
        uint8_t *q = p->data + EF_WIRE_HEADER;
        memset(q, 0, plen);
        wr32(q, ef_server_version(t->s));
        wr32(q + 4, 1);
        wr64(q + 8, NP);
        wr32(q + 24, ID(0));
        wr32(q + 28, 5);
        wr64(q + 32, m.task + 1); /* not its task */
        wr64(q + 40, m.seq);
        ef_wire_seal_task(p->data, EF_MSG_PARTIAL, JOB, m.round, 902, 5000, 0, plen);
        ef_wire_sign(p->data, plen, wsk[2]);
        size_t nm;
        float before[NP];
        memcpy(before, ef_server_model(t->s, &nm), sizeof before);
        CHECK(feed(t, 2.0, p->data, p->len) == EF_ERR_STATE);
        CHECK(strstr(ef_last_error(), "no open task") != NULL);
        /* the same partial signed by another worker's key: bad signature */
        ef_wire_sign(p->data, plen, wsk[0]);
        CHECK(feed(t, 2.0, p->data, p->len) == EF_ERR_AUTH);
        CHECK(memcmp(before, ef_server_model(t->s, &nm), sizeof before) == 0);
        ef_buf_unref(p);
        /* a worker's own check-in is refused */
        ef_buf *ci = ef_buf_new(EF_WIRE_HEADER + 8 + EF_SIG_BYTES);
        memset(ci->data + EF_WIRE_HEADER, 0, 8);
        ef_wire_seal(ci->data, EF_MSG_CHECKIN, JOB, 0, 902, 6000, 8);
        ef_wire_sign(ci->data, 8, wsk[2]);
        CHECK(feed(t, 2.0, ci->data, ci->len) == EF_ERR_STATE);
        CHECK(strstr(ef_last_error(), "partial aggregates only") != NULL);
        ef_buf_unref(ci);
        ef_buf_unref(u0);
    }
    uint64_t fw1 = ef_worker_get_stats(w[1]).forwarded;
    through_workers(t, w, 2, 3.0, 1);
    CHECK(ef_worker_get_stats(w[1]).forwarded == fw1 + 1); /* client 1's update */
    CHECK(ef_server_done(t->s));
    size_t na, nb;
    const ef_round_record *ra = ef_server_records(a->s, &na), *rb = ef_server_records(t->s, &nb);
    CHECK(na == 2 && nb == 2 && rb[1].completed == 6 && rb[1].rejected == 3);
    CHECK(fabs(ra[1].train_loss - rb[1].train_loss) < 1e-12);
    const float *ma = ef_server_model(a->s, &na), *mb = ef_server_model(t->s, &nb);
    for (int i = 0; i < NP; i++)
        CHECK_MSG(fabsf(ma[i] - mb[i]) <= 1e-6f * fabsf(ma[i]) + 1e-7f, "w[%d] %g vs %g", i,
                  (double)ma[i], (double)mb[i]);
    for (int j = 0; j < 2; j++) ef_worker_free(w[j]);
    net_free(a);
    net_free(t);
    for (int k = 0; k < 6; k++) g_client_sk[k] = NULL;
    g_server_pk = NULL;
    g_client_first_seq = 0;
}

/* ---- secure-aggregation audit hooks ------------------------------------------ */

typedef struct audit {
    uint32_t words[MAXC][NP];
    int seen[MAXC];
    uint32_t sum[NP];
    uint32_t ids[MAXC];
    size_t n_ids;
    int bits, calls;
} audit;

static void client_audit(void *user, uint32_t client, uint32_t round, const uint32_t *w, size_t n) {
    audit *a = user;
    (void)round;
    CHECK(n == NP);
    memcpy(a->words[SLOT(client)], w, NP * sizeof *w);
    a->seen[SLOT(client)] = 1;
}

static void server_audit(void *user, uint32_t round, const uint32_t *sum, size_t n, int bits,
                         const uint32_t *ids, size_t n_ids) {
    audit *a = user;
    (void)round;
    CHECK(n == NP && n_ids <= MAXC);
    memcpy(a->sum, sum, NP * sizeof *sum);
    memcpy(a->ids, ids, n_ids * sizeof *ids);
    a->n_ids = n_ids;
    a->bits = bits;
    a->calls++;
}

/* The server's unmasked SecAgg+ sum is exactly the sum (mod 2^bits) of the
 * inputs the included clients saw before masking; a client that left
 * before sending its masked update is not among them. */
static void test_secagg_audit(void) {
    static audit a;
    memset(&a, 0, sizeof a);
    g_client_audit = client_audit;
    g_client_audit_user = &a;
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 1;
    cfg.clients_per_round = 6;
    cfg.min_clients = 6;
    cfg.secagg = EF_SECAGG_PLUS;
    cfg.secagg_bits = 20;
    cfg.secagg_clip = 8.0;
    cfg.secagg_threshold = 2;
    cfg.sa_audit = server_audit;
    cfg.sa_audit_user = &a;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    net *t = net_new(&cfg, &sc, 6, NULL);
    for (int k = 0; k < 6; k++) checkin(t, k, 0.0);
    leave(t, 4, 0.0); /* gone before it could send anything */
    for (int i = 0; i < 8 && !ef_server_done(t->s); i++) pump(t, 1.0, NULL, 0);
    CHECK(ef_server_done(t->s));
    CHECK(a.calls == 1 && a.n_ids == 5 && a.bits == 20);
    uint32_t mask = (1u << 20) - 1, want[NP] = {0};
    for (size_t i = 0; i < a.n_ids; i++) {
        int k = SLOT(a.ids[i]);
        CHECK(k != 4 && a.seen[k]);
        for (int j = 0; j < NP; j++) want[j] = (want[j] + a.words[k][j]) & mask;
    }
    CHECK(memcmp(want, a.sum, sizeof want) == 0);
    size_t nr;
    const ef_round_record *r = ef_server_records(t->s, &nr);
    CHECK(nr == 1 && r[0].aggregated == 1 && r[0].completed == 5);
    net_free(t);
    g_client_audit = NULL;
    g_client_audit_user = NULL;
}

int main(void) {
    test_sync_rounds();
    test_dp_budget();
    test_fedprox();
    test_deadline();
    test_leave();
    test_refusals();
    test_fed_eval();
    test_async();
    test_determinism();
    test_authentication();
    test_checkpoint();
    test_workers();
    test_secagg_audit();
    return tu_finish("fl/test_server");
}
