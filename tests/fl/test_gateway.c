/*
 * Protocol tests of the edge gateway (src/fl/gateway.c), driven by hand as
 * in test_server.c: a real upstream ef_server, real ef_gateway objects and
 * real ef_client objects with a fake trainer whose deltas, example counts,
 * losses and evaluation counts are known exactly. Messages are routed one
 * hop at a time at explicit times (server <-> gateways <-> local clients,
 * or server <-> clients for the flat reference run), so every task, partial,
 * refusal and round record can be asserted exactly.
 *
 * FedAvg equivalence. A flat run (server <- 7 clients) and a two-level run
 * (server <- 2 gateways <- 3 + 4 clients) must give the same model. With
 * deltas that are multiples of 1/4 and example counts whose per-gateway sums
 * are powers of two (4 and 8), each gateway's weighted mean is a multiple of
 * 1/16 and exact in float, every double sum is exact, and the server
 * computes the same double expression in both runs: the models are compared
 * bit for bit over three rounds. With arbitrary counts and deltas the only
 * difference is the gateway's rounding of its mean to float (relative
 * error <= 2^-24), so the server's mean differs by at most
 * 2^-24 max_g |mean_g| per coordinate, and the model by that plus one ulp
 * (the final rounding to float may fall the other way): that is the stated
 * tolerance of the second comparison.
 */
#include <math.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgefl/client.h"
#include "edgefl/gateway.h"
#include "edgefl/params.h"
#include "edgefl/server.h"
#include "edgefl/strategy.h"
#include "edgefl/wire.h"
#include "fl_test_util.h"

#define NP 8        /* model size */
#define JOB 42
#define NLEAF 7     /* local clients (leaves) at most */
#define MAXG 2      /* gateways at most */
#define MAXREC 8

/* Ids that are not indices, so that id/index confusions show. */
#define GW_ID(g) (100u + 100u * (uint32_t)(g))
#define LEAF_ID(k) (11u + 2u * (uint32_t)(k))

#define UPDATE_LEN (EF_WIRE_HEADER + EF_UPDATE_FIXED + 4 * NP)

/* ---- little-endian helpers for crafting messages ------------------------ */

/* ---- the fake trainer ------------------------------------------------------ */

typedef struct fake {
    uint32_t n_ex[NLEAF];
    float loss[NLEAF];
    uint32_t steps[NLEAF];
    float delta[NLEAF][NP];
    uint32_t ev_n[NLEAF], ev_correct[NLEAF];
    double ev_loss[NLEAF];
    int fits[NLEAF], evals[NLEAF];
    ef_task task[NLEAF];  /* the last task each leaf trained on */
    int nan_leaf;         /* leaf whose delta holds a NaN, or -1 */
} fake;

static int leaf_of(uint32_t id) {
    if (id < 11 || (id - 11) % 2 || (id - 11) / 2 >= NLEAF) return -1;
    return (int)((id - 11) / 2);
}

static ef_status fake_fit(void *user, int worker, uint32_t id, const float *global, size_t n,
                          const ef_task *task, float *delta, ef_fit_result *res) {
    fake *f = user;
    (void)worker;
    (void)global;
    int k = leaf_of(id);
    if (n != NP || k < 0) return EF_ERR_INTERNAL;
    memcpy(delta, f->delta[k], NP * sizeof(float));
    if (k == f->nan_leaf) delta[3] = NAN;
    f->task[k] = *task;
    f->fits[k]++;
    res->n_examples = f->n_ex[k];
    res->train_loss = f->loss[k];
    res->steps = f->steps[k];
    return EF_OK;
}

static ef_status fake_eval(void *user, int worker, uint32_t id, const float *global, size_t n,
                           ef_eval_counts *res) {
    fake *f = user;
    (void)worker;
    (void)global;
    int k = leaf_of(id);
    if (n != NP || k < 0) return EF_ERR_INTERNAL;
    f->evals[k]++;
    res->n_examples = f->ev_n[k];
    res->correct = f->ev_correct[k];
    res->loss_sum = f->ev_loss[k];
    return EF_OK;
}

/* Exact (dyadic) settings: per-gateway example sums 4 and 8. */
static void fake_exact(fake *f) {
    static const uint32_t n_ex[NLEAF] = {1, 1, 2, 1, 2, 2, 3};
    memset(f, 0, sizeof *f);
    f->nan_leaf = -1;
    for (int k = 0; k < NLEAF; k++) {
        f->n_ex[k] = n_ex[k];
        f->loss[k] = 0.25f * (float)(k + 1);
        f->steps[k] = (uint32_t)(2 + k % 3);
        for (int j = 0; j < NP; j++) f->delta[k][j] = (float)(k + 1) * 0.5f - (float)j * 0.25f;
        f->ev_n[k] = (uint32_t)(10 + k);
        f->ev_correct[k] = (uint32_t)(k + 1);
        f->ev_loss[k] = 0.5 * (k + 1);
    }
}

/* ---- the hand-driven network ---------------------------------------------- */

typedef struct partial {
    int n;                 /* UPDATEs the gateway sent upstream */
    uint32_t n_examples, steps, round;
    float train_loss;
    float delta[NP];
    uint64_t task;
} partial;

typedef struct world {
    ef_server *s;
    ef_outbox down;             /* server output not yet routed */
    int n_gw;
    ef_gateway *g[MAXG];
    ef_outbox gout[MAXG];       /* gateway output not yet routed */
    ef_task up_task[MAXG];      /* the last upstream TASK routed to each gateway */
    uint64_t up_task_id[MAXG];
    partial part[MAXG];         /* the last partial each gateway sent */
    uint32_t checkin_train[MAXG], checkin_eval[MAXG]; /* its last upstream CHECKIN */
    int n_checkin[MAXG];
    int n_leaf;
    ef_client *c[NLEAF];
    int home[NLEAF];            /* gateway of leaf k, or -1: a client of the server */
    ef_outbox up[NLEAF];        /* leaf output not yet routed */
    int hold[NLEAF];            /* 1: pump leaves leaf k's messages where they are */
    int strict;                 /* routing checks every delivery succeeds */
    fake fk;
    float init[NP];
    ef_round_record cb_rec[MAXREC];
    int n_cb;
} world;

static void on_round(void *user, ef_round_record *rec, const float *model, size_t n) {
    world *w = user;
    (void)model;
    CHECK(n == NP);
    if (w->n_cb < MAXREC) w->cb_rec[w->n_cb] = *rec;
    w->n_cb++;
}

/* Keys for the authentication test (NULL: unsigned, unchecked). */
static const uint8_t *g_server_pk;
static const uint8_t *g_gw_sk[MAXG], *g_gw_pk[MAXG];
static const uint8_t *g_leaf_sk[NLEAF];

/*
 * A server, n_gw gateways (configured from *gcfg, ids GW_ID(g), each with
 * min_local[g]) and n_leaf leaves whose home gateway is home[k] (-1: a
 * client of the server). Nothing is sent yet.
 */
static world *world_new(const ef_server_config *scfg, const ef_strategy_config *strat,
                        int n_gw, const ef_gateway_config *gcfg, const uint32_t *min_local,
                        int n_leaf, const int *home, const uint32_t *n_eval) {
    world *w = calloc(1, sizeof *w);
    w->n_gw = n_gw;
    w->n_leaf = n_leaf;
    w->strict = 1;
    fake_exact(&w->fk);
    ef_params *p = NULL;
    int64_t shape[1] = {NP};
    CHECK_OK(ef_params_new(&p));
    CHECK_OK(ef_params_add(p, "w", 1, shape));
    CHECK_OK(ef_params_alloc(p));
    for (int i = 0; i < NP; i++) w->init[i] = ef_params_data(p)[i] = 1.0f + 0.125f * (float)i;
    CHECK_OK(ef_server_new(&w->s, scfg, strat, p, on_round, w));
    ef_params_free(p);
    for (int g = 0; g < n_gw; g++) {
        ef_gateway_config gc = *gcfg;
        gc.job = scfg->job;
        gc.id = GW_ID(g);
        gc.n_params = NP;
        gc.min_local = min_local ? min_local[g] : 1;
        gc.sign_key = g_gw_sk[g];
        gc.server_pk = g_server_pk;
        CHECK_OK(ef_gateway_new(&w->g[g], &gc));
    }
    ef_trainer tr = {fake_fit, fake_eval, &w->fk};
    for (int k = 0; k < n_leaf; k++) {
        w->home[k] = home ? home[k] : -1;
        ef_client_config cc = {.job = scfg->job, .id = LEAF_ID(k), .n_train = (uint32_t)(100 + k),
                               .n_eval = n_eval ? n_eval[k] : 5, .n_params = NP,
                               .sign_key = g_leaf_sk[k],
                               .server_pk = w->home[k] >= 0 ? g_gw_pk[w->home[k]] : g_server_pk};
        CHECK_OK(ef_client_new(&w->c[k], &cc, &tr));
    }
    return w;
}

static void world_free(world *w) {
    for (int k = 0; k < w->n_leaf; k++) {
        ef_client_free(w->c[k]);
        ef_outbox_free(&w->up[k]);
    }
    for (int g = 0; g < w->n_gw; g++) {
        ef_gateway_free(w->g[g]);
        ef_outbox_free(&w->gout[g]);
    }
    ef_outbox_free(&w->down);
    ef_server_free(w->s);
    free(w);
}

static int gw_of(uint32_t id) {
    for (int g = 0; g < MAXG; g++)
        if (id == GW_ID(g)) return g;
    return -1;
}

/* Routes the server's output: to gateways, or to its own clients. */
static int route_down(world *w, double now) {
    int moved = (int)w->down.n;
    for (size_t i = 0; i < w->down.n; i++) {
        ef_out_msg *m = &w->down.v[i];
        int g = gw_of(m->to);
        if (g >= 0 && g < w->n_gw) {
            if (m->type == EF_MSG_TASK) {
                ef_msg msg;
                CHECK_OK(ef_wire_decode(m->buf->data, m->buf->len, (size_t)-1, &msg));
                CHECK_OK(ef_decode_task(&msg, &w->up_task[g]));
                w->up_task_id[g] = msg.task;
            }
            ef_status st = ef_gateway_handle_upstream(w->g[g], now, m->buf, &w->gout[g]);
            if (w->strict) CHECK_MSG(st == EF_OK, "gateway %d refused %s: %s", g,
                                     ef_msg_type_name(m->type), ef_last_error());
            continue;
        }
        int k = leaf_of(m->to);
        CHECK_MSG(k >= 0 && k < w->n_leaf && w->home[k] < 0, "server message to %u", m->to);
        if (k < 0 || k >= w->n_leaf) continue;
        ef_status st = ef_client_handle(w->c[k], m->buf, 0, &w->up[k]);
        if (w->strict) CHECK_MSG(st == EF_OK, "client %d refused %s: %s", k,
                                 ef_msg_type_name(m->type), ef_last_error());
    }
    ef_outbox_clear(&w->down);
    return moved;
}

/* Notes what gateway g sends upstream (partials, check-ins). */
static void observe_up(world *w, int g, const ef_buf *b) {
    ef_msg m;
    CHECK_OK(ef_wire_decode(b->data, b->len, (size_t)-1, &m));
    CHECK(m.sender == GW_ID(g) && m.job == JOB);
    if (m.type == EF_MSG_UPDATE) {
        ef_update u;
        CHECK_OK(ef_decode_update(&m, &u));
        partial *p = &w->part[g];
        p->n++;
        p->n_examples = u.n_examples;
        p->steps = u.steps;
        p->train_loss = u.train_loss;
        p->round = m.round;
        p->task = m.task;
        CHECK(u.n == NP);
        if (u.n == NP) ef_wire_floats(p->delta, u.raw, NP);
    } else if (m.type == EF_MSG_CHECKIN) {
        ef_checkin ci;
        CHECK_OK(ef_decode_checkin(&m, &ci));
        w->checkin_train[g] = ci.n_train;
        w->checkin_eval[g] = ci.n_eval;
        w->n_checkin[g]++;
    }
}

/* Routes gateway g's output: upstream to the server, the rest to its leaves. */
static int route_gw(world *w, int g, double now) {
    int moved = (int)w->gout[g].n;
    for (size_t i = 0; i < w->gout[g].n; i++) {
        ef_out_msg *m = &w->gout[g].v[i];
        if (m->to == EF_SERVER_ID) {
            observe_up(w, g, m->buf);
            ef_status st = ef_server_handle(w->s, now, m->buf->data, m->buf->len, &w->down);
            if (w->strict) CHECK_MSG(st == EF_OK, "server refused gateway %d's %s: %s", g,
                                     ef_msg_type_name(m->type), ef_last_error());
            continue;
        }
        int k = leaf_of(m->to);
        CHECK_MSG(k >= 0 && k < w->n_leaf && w->home[k] == g, "gateway %d message to %u", g, m->to);
        if (k < 0 || k >= w->n_leaf) continue;
        ef_status st = ef_client_handle(w->c[k], m->buf, 0, &w->up[k]);
        if (w->strict) CHECK_MSG(st == EF_OK, "leaf %d refused %s: %s", k,
                                 ef_msg_type_name(m->type), ef_last_error());
    }
    ef_outbox_clear(&w->gout[g]);
    return moved;
}

/* Feeds bytes from a leaf to its home (gateway or server). */
static ef_status to_home(world *w, int k, double now, const uint8_t *data, size_t len) {
    int g = w->home[k];
    if (g >= 0) return ef_gateway_handle_local(w->g[g], now, data, len, &w->gout[g]);
    return ef_server_handle(w->s, now, data, len, &w->down);
}

/* Delivers leaf k's oldest message. */
static ef_status deliver(world *w, int k, double now) {
    ef_buf *b = pop(&w->up[k], NULL);
    CHECK_MSG(b != NULL, "leaf %d has nothing to send", k);
    if (!b) return EF_ERR_INTERNAL;
    ef_status st = to_home(w, k, now, b->data, b->len);
    ef_buf_unref(b);
    return st;
}

/* Routes everything in flight (except held leaves' messages) until nothing
 * moves. */
static void pump(world *w, double now) {
    for (int moved = 1; moved;) {
        moved = route_down(w, now);
        for (int g = 0; g < w->n_gw; g++) moved += route_gw(w, g, now);
        for (int k = 0; k < w->n_leaf; k++) {
            if (w->hold[k]) continue;
            while (w->up[k].n) {
                ef_status st = deliver(w, k, now);
                if (w->strict) CHECK_MSG(st == EF_OK, "leaf %d's message refused: %s", k,
                                         ef_last_error());
                moved++;
            }
        }
    }
}

static void checkin(world *w, int k, double now) {
    CHECK_OK(ef_client_checkin(w->c[k], &w->up[k]));
    ef_outbox *o = &w->up[k];
    ef_buf *b = o->v[--o->n].buf; /* jumps the queue */
    CHECK_OK(to_home(w, k, now, b->data, b->len));
    ef_buf_unref(b);
}

static void leave(world *w, int k, double now) {
    CHECK_OK(ef_client_leave(w->c[k], 3, &w->up[k]));
    ef_outbox *o = &w->up[k];
    ef_buf *b = o->v[--o->n].buf;
    CHECK_OK(to_home(w, k, now, b->data, b->len));
    ef_buf_unref(b);
}

static void tick_all(world *w, double now) {
    CHECK_OK(ef_server_tick(w->s, now, &w->down));
    for (int g = 0; g < w->n_gw; g++) CHECK_OK(ef_gateway_tick(w->g[g], now, &w->gout[g]));
}

static const ef_round_record *record(const world *w, size_t i) { return server_record(w->s, i); }

static size_t n_records(const world *w) { return server_n_records(w->s); }

static const float *model_of(const world *w) {
    size_t n;
    const float *m = ef_server_model(w->s, &n);
    CHECK(n == NP);
    return m;
}

static ef_gateway_stats stats(const world *w, int g) {
    ef_gateway_stats s;
    ef_gateway_get_stats(w->g[g], &s);
    return s;
}

/* The weighted mean of leaves lo..hi-1's fake deltas (in double), their
 * example sum and example-weighted loss; `skip` (or -1) left out. */
typedef struct mean {
    double d[NP];
    double n, loss;
} mean;

static mean mean_of(const fake *f, int lo, int hi, int skip) {
    mean m = {{0}, 0, 0};
    for (int k = lo; k < hi; k++) {
        if (k == skip) continue;
        for (int j = 0; j < NP; j++) m.d[j] += (double)f->n_ex[k] * f->delta[k][j];
        m.n += f->n_ex[k];
        m.loss += (double)f->n_ex[k] * f->loss[k];
    }
    for (int j = 0; j < NP; j++) m.d[j] /= m.n;
    m.loss /= m.n;
    return m;
}

/* The partial gateway g sent is exactly the float rounding of `m`. */
static void check_partial(const world *w, int g, const mean *m) {
    const partial *p = &w->part[g];
    CHECK(p->n_examples == (uint32_t)m->n);
    CHECK(p->train_loss == (float)m->loss);
    for (int j = 0; j < NP; j++)
        CHECK_MSG(p->delta[j] == (float)m->d[j], "gateway %d partial[%d] = %.9g, want %.9g", g,
                  j, (double)p->delta[j], m->d[j]);
}

/* Gateway 0 holds leaves 0-2, gateway 1 leaves 3-6. */
static const int HOME2[NLEAF] = {0, 0, 0, 1, 1, 1, 1};
static const int FLAT[NLEAF] = {-1, -1, -1, -1, -1, -1, -1};

/* ---- FedAvg equivalence -------------------------------------------------------- */

/* A flat run: the server and its seven clients, `rounds` rounds. */
static world *run_flat(const fake *f, uint32_t rounds, int fed_eval) {
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = rounds;
    cfg.clients_per_round = NLEAF;
    cfg.min_clients = NLEAF;
    if (fed_eval) {
        cfg.fed_eval_every = 1;
        cfg.fed_eval_clients = NLEAF;
    }
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    ef_gateway_config gc = ef_gateway_defaults();
    world *w = world_new(&cfg, &sc, 0, &gc, NULL, NLEAF, FLAT, NULL);
    w->fk = *f;
    for (int k = 0; k < NLEAF; k++) checkin(w, k, 0.0);
    pump(w, 1.0);
    CHECK(ef_server_done(w->s));
    return w;
}

/* The same clients behind two gateways. */
static world *run_two_level(const fake *f, uint32_t rounds, int fed_eval) {
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = rounds;
    cfg.clients_per_round = 2;
    cfg.min_clients = 2;
    if (fed_eval) {
        cfg.fed_eval_every = 1;
        cfg.fed_eval_clients = 2;
    }
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    ef_gateway_config gc = ef_gateway_defaults();
    const uint32_t min_local[2] = {3, 4};
    world *w = world_new(&cfg, &sc, 2, &gc, min_local, NLEAF, HOME2, NULL);
    w->fk = *f;
    for (int k = 0; k < NLEAF; k++) {
        checkin(w, k, 0.0);
        /* a gateway checks in upstream once its min_local clients are online */
        CHECK(stats(w, 0).checkins_sent == (k >= 2));
        CHECK(stats(w, 1).checkins_sent == (k >= 6));
    }
    CHECK(w->gout[0].n == 1 && w->gout[1].n == 1);
    pump(w, 1.0);
    CHECK(ef_server_done(w->s));
    /* the upstream check-ins announced the sums of the local clients' data */
    CHECK(w->n_checkin[0] == 1 && w->checkin_train[0] == 100 + 101 + 102);
    CHECK(w->checkin_eval[0] == 15 && w->checkin_train[1] == 103 + 104 + 105 + 106);
    return w;
}

static void test_equivalence_exact(void) {
    fake f;
    fake_exact(&f);
    world *flat = run_flat(&f, 3, 0);
    world *two = run_two_level(&f, 3, 0);
    CHECK(memcmp(model_of(flat), model_of(two), NP * sizeof(float)) == 0);
    CHECK(ef_server_version(flat->s) == 3 && ef_server_version(two->s) == 3);
    /* and the model is the FedAvg of the seven updates, applied three times */
    mean all = mean_of(&f, 0, NLEAF, -1);
    float want[NP];
    memcpy(want, flat->init, sizeof want);
    for (int r = 0; r < 3; r++)
        for (int j = 0; j < NP; j++) want[j] = (float)((double)want[j] + all.d[j]);
    CHECK(memcmp(model_of(two), want, sizeof want) == 0);
    for (size_t r = 0; r < 3; r++) {
        const ef_round_record *a = record(flat, r), *b = record(two, r);
        CHECK(a->completed == 7 && b->completed == 2 && b->selected == 2);
        CHECK(a->aggregated && b->aggregated);
        CHECK_MSG(a->train_loss == b->train_loss, "round %zu: loss %.17g vs %.17g", r,
                  a->train_loss, b->train_loss);
        CHECK(a->train_loss == all.loss);
    }
    for (int k = 0; k < NLEAF; k++) CHECK(two->fk.fits[k] == 3 && flat->fk.fits[k] == 3);
    /* each partial: exactly the gateway's weighted mean; steps the largest */
    mean m0 = mean_of(&f, 0, 3, -1), m1 = mean_of(&f, 3, NLEAF, -1);
    check_partial(two, 0, &m0);
    check_partial(two, 1, &m1);
    CHECK(m0.n == 4 && m1.n == 8);
    CHECK(two->part[0].n == 3 && two->part[1].n == 3);
    CHECK(two->part[0].steps == 4 && two->part[1].steps == 4);
    /* the partial answers the upstream task: envelope task = its id */
    for (int g = 0; g < 2; g++) CHECK(two->part[g].task == two->up_task_id[g]);
    /* local tasks: the upstream settings, a per-client seed */
    for (int k = 0; k < NLEAF; k++) {
        const ef_task *t = &two->fk.task[k], *u = &two->up_task[HOME2[k]];
        CHECK(t->epochs == 2 && t->batch == 16 && t->lr == 0.125f && t->momentum == 0.5f);
        CHECK(t->deadline_s == 0.0f && t->version == 2);
        CHECK(t->seed == ef_gateway_task_seed(u->seed, LEAF_ID(k)));
        for (int j = 0; j < k; j++) CHECK(t->seed != two->fk.task[j].seed);
    }
    ef_gateway_stats s0 = stats(two, 0);
    CHECK(s0.tasks == 3 && s0.local_tasks == 9 && s0.updates_received == 9);
    CHECK(s0.partials_sent == 3 && s0.partials_skipped == 0 && s0.refused_local == 0);
    CHECK(s0.refused_upstream == 0 && s0.local_late == 0);
    world_free(flat);
    world_free(two);
}

static float ulp_of(float x) { return nextafterf(fabsf(x), INFINITY) - fabsf(x); }

static void test_equivalence_rounding(void) {
    static const uint32_t n_ex[NLEAF] = {3, 5, 7, 1, 2, 4, 9};
    fake f;
    fake_exact(&f);
    for (int k = 0; k < NLEAF; k++) {
        f.n_ex[k] = n_ex[k];
        f.loss[k] = 0.1f * (float)(k + 1);
        for (int j = 0; j < NP; j++) f.delta[k][j] = 0.1f * (float)(k + 1) - 0.037f * (float)j;
    }
    world *flat = run_flat(&f, 1, 0);
    world *two = run_two_level(&f, 1, 0);
    mean m0 = mean_of(&f, 0, 3, -1), m1 = mean_of(&f, 3, NLEAF, -1);
    check_partial(two, 0, &m0);
    check_partial(two, 1, &m1);
    const float *a = model_of(flat), *b = model_of(two);
    double worst = 0;
    for (int j = 0; j < NP; j++) {
        double big = fabs(m0.d[j]) > fabs(m1.d[j]) ? fabs(m0.d[j]) : fabs(m1.d[j]);
        double tol = ldexp(big, -24) + ulp_of(a[j]);
        CHECK_NEAR(b[j], a[j], tol);
        if (fabs((double)b[j] - a[j]) > worst) worst = fabs((double)b[j] - a[j]);
    }
    printf("rounding case: largest model difference two-level vs flat %.3g\n", worst);
    CHECK_NEAR(record(two, 0)->train_loss, record(flat, 0)->train_loss,
               ldexp(record(flat, 0)->train_loss, -23));
    world_free(flat);
    world_free(two);
}

/* Federated evaluation through gateways: the server's record equals the
 * flat run's (integer counts, exact loss sums). */
static void test_eval(void) {
    fake f;
    fake_exact(&f);
    world *flat = run_flat(&f, 2, 1);
    world *two = run_two_level(&f, 2, 1);
    uint64_t n = 0, correct = 0;
    double loss = 0;
    for (int k = 0; k < NLEAF; k++) {
        n += f.ev_n[k];
        correct += f.ev_correct[k];
        loss += f.ev_loss[k];
        CHECK(two->fk.evals[k] == 2);
    }
    for (size_t r = 0; r < 2; r++) {
        const ef_round_record *a = record(flat, r), *b = record(two, r);
        CHECK(a->fed_accuracy == (double)correct / (double)n);
        CHECK(b->fed_accuracy == a->fed_accuracy);
        CHECK(b->fed_loss == a->fed_loss && a->fed_loss == loss / (double)n);
    }
    CHECK(memcmp(model_of(flat), model_of(two), NP * sizeof(float)) == 0);
    CHECK(stats(two, 0).evals == 2 && stats(two, 0).eval_results_sent == 2);
    world_free(flat);
    world_free(two);

    /* a leaf without held-out data is not asked; one that leaves during the
     * evaluation is not waited for; the deadline closes a silent one */
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 1;
    cfg.clients_per_round = 1;
    cfg.min_clients = 1;
    cfg.deadline_s = 10;
    cfg.fed_eval_every = 1;
    cfg.fed_eval_clients = 1;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    ef_gateway_config gc = ef_gateway_defaults();
    const int home[4] = {0, 0, 0, 0};
    const uint32_t n_eval[4] = {5, 0, 6, 7};
    const uint32_t min_local[1] = {4};
    world *w = world_new(&cfg, &sc, 1, &gc, min_local, 4, home, n_eval);
    for (int k = 0; k < 4; k++) checkin(w, k, 0.0);
    CHECK(w->gout[0].n == 1);
    for (int k = 0; k < 4; k++) w->hold[k] = 1;
    pump(w, 1.0);
    for (int k = 0; k < 4; k++) CHECK_OK(deliver(w, k, 1.0)); /* training: all four answer */
    pump(w, 1.0);
    CHECK(w->part[0].n == 1 && ef_server_version(w->s) == 1 && n_records(w) == 0);
    /* the EVAL went to the gateway and on to leaves 0, 2, 3 */
    CHECK(w->fk.evals[0] == 1 && w->fk.evals[1] == 0 && w->fk.evals[2] == 1 && w->fk.evals[3] == 1);
    CHECK(ef_gateway_next_timer(w->g[0]) == 1.0 + 8.0);
    leave(w, 2, 2.0);
    CHECK_OK(deliver(w, 0, 3.0)); /* leaf 0 answers, leaf 3 stays silent */
    CHECK(w->gout[0].n == 0);
    CHECK_OK(ef_gateway_tick(w->g[0], 8.9, &w->gout[0]));
    CHECK(w->gout[0].n == 0);
    CHECK_OK(ef_gateway_tick(w->g[0], 9.0, &w->gout[0]));
    CHECK(w->gout[0].n == 1 && w->gout[0].v[0].type == EF_MSG_EVAL_RESULT);
    {
        ef_msg m;
        ef_eval_result r;
        CHECK_OK(ef_wire_decode(w->gout[0].v[0].buf->data, w->gout[0].v[0].buf->len, (size_t)-1, &m));
        CHECK_OK(ef_decode_eval_result(&m, &r));
        CHECK(r.n_examples == 10 && r.correct == 1 && r.loss_sum == 0.5 && r.version == 1);
        CHECK(m.sender == GW_ID(0));
    }
    pump(w, 9.0);
    CHECK(ef_server_done(w->s));
    CHECK(record(w, 0)->fed_accuracy == 1.0 / 10.0);
    /* leaf 3's result after the deadline: refused, nothing sent */
    CHECK(deliver(w, 3, 9.5) == EF_ERR_STATE);
    CHECK(strstr(ef_last_error(), "not expected") != NULL);
    CHECK(w->gout[0].n == 0);
    world_free(w);
}

/* ---- deadlines -------------------------------------------------------------- */

/* A straggler past the local deadline is left out, the partial still goes
 * upstream in time; a gateway with no local update sends nothing. */
static void test_deadlines(void) {
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 2;
    cfg.clients_per_round = 2;
    cfg.min_clients = 2;
    cfg.deadline_s = 10;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    ef_gateway_config gc = ef_gateway_defaults();
    const uint32_t min_local[2] = {3, 4};
    world *w = world_new(&cfg, &sc, 2, &gc, min_local, NLEAF, HOME2, NULL);
    for (int k = 0; k < NLEAF; k++) checkin(w, k, 0.0);
    w->hold[2] = 1; /* leaf 2 (gateway 0) is a straggler */
    pump(w, 1.0);
    /* local tasks carry 0.8 of the upstream deadline */
    CHECK(w->fk.task[0].deadline_s == 8.0f && w->fk.task[3].deadline_s == 8.0f);
    CHECK(w->part[1].n == 1 && w->part[0].n == 0);
    CHECK(ef_gateway_next_timer(w->g[0]) == 9.0);
    CHECK(ef_gateway_next_timer(w->g[1]) == INFINITY);
    CHECK(n_records(w) == 0);
    tick_all(w, 8.5);
    CHECK(w->gout[0].n == 0);
    tick_all(w, 9.0);
    CHECK(w->gout[0].n == 1);
    w->hold[0] = w->hold[1] = 1;
    pump(w, 9.0);
    /* the partial of leaves 0 and 1 reached the server before its deadline (11) */
    mean m0 = mean_of(&w->fk, 0, 3, 2), m1 = mean_of(&w->fk, 3, NLEAF, -1);
    CHECK(w->part[0].n == 1);
    check_partial(w, 0, &m0);
    CHECK(n_records(w) == 1);
    const ef_round_record *r = record(w, 0);
    CHECK(r->completed == 2 && r->late == 0 && r->aggregated);
    float want[NP];
    for (int j = 0; j < NP; j++) {
        double acc = m0.n * (double)(float)m0.d[j] + m1.n * (double)(float)m1.d[j];
        want[j] = (float)((double)w->init[j] + acc / (m0.n + m1.n));
    }
    CHECK(memcmp(model_of(w), want, sizeof want) == 0);
    ef_gateway_stats s = stats(w, 0);
    CHECK(s.local_late == 1 && s.partials_sent == 1 && s.updates_received == 2);
    CHECK(strstr(ef_gateway_note(w->g[0]), "1 late") != NULL);
    /* round 2 has started (tasks at 9.0): gateway 1 answered, none of
     * gateway 0's leaves does */
    CHECK(w->part[1].n == 2 && w->part[0].n == 1);
    CHECK(ef_gateway_next_timer(w->g[0]) == 17.0);
    /* the straggler's round-1 update arrives now: refused */
    CHECK(w->fk.fits[2] == 2 && w->up[2].n == 2);
    ef_buf *late_update = ef_buf_ref(w->up[2].v[0].buf);
    CHECK(deliver(w, 2, 9.5) == EF_ERR_STATE);
    CHECK(strstr(ef_last_error(), "no such task open") != NULL);
    CHECK(stats(w, 0).updates_rejected == 1 && stats(w, 0).refused_local == 1);
    tick_all(w, 17.0);
    CHECK(w->gout[0].n == 0); /* nothing to send */
    s = stats(w, 0);
    CHECK(s.partials_skipped == 1 && s.local_late == 4 && s.partials_sent == 1);
    CHECK(strstr(ef_gateway_note(w->g[0]), "no local update") != NULL);
    CHECK(strstr(ef_gateway_note(w->g[0]), "nothing sent upstream") != NULL);
    CHECK(ef_gateway_next_timer(w->g[0]) == INFINITY);
    /* the server sees a dropout at its deadline: the round closes with gateway 1 */
    CHECK(n_records(w) == 1);
    tick_all(w, 19.0);
    CHECK(ef_server_done(w->s) && n_records(w) == 2);
    r = record(w, 1);
    CHECK(r->completed == 1 && r->late == 1 && r->aggregated);
    /* the round-1 straggler's update, replayed much later: still refused */
    CHECK(ef_gateway_handle_local(w->g[0], 20.0, late_update->data, late_update->len,
                                  &w->gout[0]) == EF_ERR_STATE);
    ef_buf_unref(late_update);
    CHECK(w->gout[0].n == 0);
    world_free(w);
}

/* Local clients leaving or restarting during a task; an upstream task with
 * no local client able to train; a newer upstream task cutting a local
 * round short. */
static void test_membership(void) {
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 3;
    cfg.clients_per_round = 1;
    cfg.min_clients = 1;
    cfg.deadline_s = 10;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    ef_gateway_config gc = ef_gateway_defaults();
    gc.deadline_fraction = 1.0;
    const int home[3] = {0, 0, 0};
    const uint32_t min_local[1] = {3};
    world *w = world_new(&cfg, &sc, 1, &gc, min_local, 3, home, NULL);
    for (int k = 0; k < 3; k++) checkin(w, k, 0.0);
    w->hold[0] = w->hold[1] = w->hold[2] = 1;
    pump(w, 1.0);
    CHECK(w->fk.fits[0] == 1 && w->fk.fits[1] == 1 && w->fk.fits[2] == 1);
    /* leaf 1 restarts (check-in with a task open): its task is lost; leaf 2
     * leaves; leaf 0's update is then the last answer: the partial goes */
    checkin(w, 1, 2.0);
    leave(w, 2, 2.5);
    CHECK(w->gout[0].n == 0);
    CHECK_OK(deliver(w, 0, 3.0));
    CHECK(w->gout[0].n == 1 && w->gout[0].v[0].type == EF_MSG_UPDATE);
    ef_gateway_stats s = stats(w, 0);
    CHECK(s.local_dropped == 2 && s.partials_sent == 1 && s.updates_received == 1);
    /* the local population changed (3 online -> 2) while a task was held:
     * not announced (the server would take the CHECKIN for a restart) */
    CHECK(s.checkins_sent == 1);
    mean m0 = mean_of(&w->fk, 0, 1, -1);
    pump(w, 3.0);
    check_partial(w, 0, &m0);
    CHECK(n_records(w) == 1);
    /* round 2 started: leaves 0 and 1 got tasks (leaf 2 is offline) */
    CHECK(w->fk.fits[0] == 2 && w->fk.fits[1] == 2 && w->fk.fits[2] == 1);
    /* both leave: the local round ends with no update, nothing goes up */
    leave(w, 0, 4.0);
    leave(w, 1, 4.0);
    s = stats(w, 0);
    CHECK(s.partials_skipped == 1 && s.local_dropped == 4);
    /* nobody online: announced upstream at once (the gateway holds no task) */
    CHECK(s.checkins_sent == 2 && w->gout[0].n == 1 && w->gout[0].v[0].type == EF_MSG_CHECKIN);
    /* the server takes it as a restart: the gateway's task is lost, round 2
     * closes at once without an update, and round 3 waits: the gateway has
     * no training data */
    route_gw(w, 0, 4.0);
    CHECK(w->checkin_train[0] == 0);
    CHECK(n_records(w) == 2 && w->down.n == 0);
    CHECK(record(w, 1)->dropped == 1 && !record(w, 1)->aggregated);
    tick_all(w, 11.0);
    CHECK(n_records(w) == 2 && w->down.n == 0);
    /* leaf 2 comes back (what it computed before leaving is lost) */
    while (w->up[2].n) ef_buf_unref(pop(&w->up[2], NULL));
    w->hold[2] = 0;
    checkin(w, 2, 12.0);
    CHECK(w->gout[0].n == 1 && w->gout[0].v[0].type == EF_MSG_CHECKIN);
    pump(w, 12.0);
    CHECK(w->checkin_train[0] == 102 && w->fk.fits[2] == 2);
    CHECK(ef_server_done(w->s) && n_records(w) == 3 && record(w, 2)->completed == 1);
    world_free(w);

    /* an upstream task no local client can train: nothing sent, no timer */
    cfg.rounds = 1;
    w = world_new(&cfg, &sc, 1, &gc, NULL, 1, home, NULL);
    checkin(w, 0, 0.0);
    CHECK(w->gout[0].n == 1);
    route_gw(w, 0, 0.0);
    CHECK(w->down.n == 2); /* MODEL, TASK for the gateway */
    leave(w, 0, 0.5);      /* the only leaf is gone before the task arrives */
    CHECK(w->gout[0].n == 1 && w->gout[0].v[0].type == EF_MSG_CHECKIN);
    ef_outbox_clear(&w->gout[0]); /* lost in transit */
    route_down(w, 1.0);
    CHECK(w->gout[0].n == 0);
    CHECK(stats(w, 0).partials_skipped == 1 && stats(w, 0).tasks == 1);
    CHECK(strstr(ef_gateway_note(w->g[0]), "no local client can train") != NULL);
    CHECK(ef_gateway_next_timer(w->g[0]) == INFINITY);
    /* the gateway leaves upstream: the server's round closes at once */
    CHECK_OK(ef_gateway_leave(w->g[0], 1, &w->gout[0]));
    CHECK(w->gout[0].n == 1 && w->gout[0].v[0].type == EF_MSG_LEAVE);
    route_gw(w, 0, 1.5);
    CHECK(ef_server_done(w->s) && record(w, 0)->dropped == 1);
    world_free(w);
}

/* A newer upstream task arriving while a local round is open ends that
 * round without an answer; the local answers to it are refused. */
static void test_abandon(void) {
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 2;
    cfg.clients_per_round = 1;
    cfg.min_clients = 1;
    cfg.deadline_s = 10;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    ef_gateway_config gc = ef_gateway_defaults();
    gc.deadline_fraction = 1.0;
    const int home[2] = {0, 0};
    const uint32_t min_local[1] = {2};
    world *w = world_new(&cfg, &sc, 1, &gc, min_local, 2, home, NULL);
    for (int k = 0; k < 2; k++) checkin(w, k, 0.0);
    route_gw(w, 0, 0.0);
    CHECK(w->down.n == 2);
    /* the task reaches the gateway late (t = 3): its local deadline is 13,
     * after the server's (10) */
    route_down(w, 3.0);
    CHECK(ef_gateway_next_timer(w->g[0]) == 13.0);
    route_gw(w, 0, 3.0);
    CHECK(w->up[0].n == 1 && w->up[1].n == 1);
    ef_buf *old0 = pop(&w->up[0], NULL);
    ef_buf *old1 = pop(&w->up[1], NULL);
    CHECK_OK(to_home(w, 0, 4.0, old0->data, old0->len)); /* one of two answers */
    CHECK(w->gout[0].n == 0);
    /* the server gives up on round 1 and sends round 2's task */
    tick_all(w, 10.0);
    CHECK(n_records(w) == 1 && record(w, 0)->late == 1 && w->down.n == 2);
    route_down(w, 10.5);
    ef_gateway_stats s = stats(w, 0);
    CHECK(s.abandoned == 1 && s.tasks == 2 && s.partials_sent == 0);
    CHECK(strstr(ef_gateway_note(w->g[0]), "ends without an answer") != NULL);
    CHECK(ef_gateway_next_timer(w->g[0]) == 20.5);
    /* leaf 1's answer to the old task: refused; the round-2 tasks go on */
    CHECK(to_home(w, 1, 11.0, old1->data, old1->len) == EF_ERR_STATE);
    pump(w, 11.0);
    CHECK(ef_server_done(w->s) && record(w, 1)->completed == 1);
    mean m = mean_of(&w->fk, 0, 2, -1);
    check_partial(w, 0, &m);
    ef_buf_unref(old0);
    ef_buf_unref(old1);
    world_free(w);
}

/* The MODEL of the server's next task arrives, then the open local round
 * completes, then the TASK: the new model must still be held. */
static void test_model_before_finish(void) {
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 2;
    cfg.clients_per_round = 1;
    cfg.min_clients = 1;
    cfg.deadline_s = 10;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    ef_gateway_config gc = ef_gateway_defaults();
    gc.deadline_fraction = 1.0;
    const int home[2] = {0, 0};
    const uint32_t min_local[1] = {2};
    world *w = world_new(&cfg, &sc, 1, &gc, min_local, 2, home, NULL);
    for (int k = 0; k < 2; k++) checkin(w, k, 0.0);
    route_gw(w, 0, 0.0);
    route_down(w, 3.0); /* local deadline 13, after the server's 10 */
    route_gw(w, 0, 3.0);
    ef_buf *old1 = pop(&w->up[1], NULL);
    CHECK_OK(deliver(w, 0, 4.0));
    tick_all(w, 10.0); /* the server moves on to round 2 */
    CHECK(w->down.n == 2 && w->down.v[0].type == EF_MSG_MODEL);
    CHECK_OK(ef_gateway_handle_upstream(w->g[0], 10.5, w->down.v[0].buf, &w->gout[0]));
    /* leaf 1's answer completes the old local round: its partial goes up
     * (too late for the server, which refuses it) */
    CHECK_OK(to_home(w, 1, 10.6, old1->data, old1->len));
    ef_buf_unref(old1);
    CHECK(w->gout[0].n == 1 && stats(w, 0).partials_sent == 1);
    CHECK(ef_server_handle(w->s, 10.7, w->gout[0].v[0].buf->data, w->gout[0].v[0].buf->len,
                           &w->down) == EF_ERR_STATE);
    ef_outbox_clear(&w->gout[0]);
    /* the TASK names the model that came before: still held */
    CHECK_OK(ef_gateway_handle_upstream(w->g[0], 10.8, w->down.v[1].buf, &w->gout[0]));
    CHECK(stats(w, 0).tasks == 2 && stats(w, 0).abandoned == 0);
    ef_outbox_clear(&w->down);
    pump(w, 11.0);
    CHECK(ef_server_done(w->s) && record(w, 1)->completed == 1 && record(w, 1)->aggregated);
    world_free(w);
}

/* ---- refusals --------------------------------------------------------------- */

/* Feeds local bytes that must be refused: only the refusal counters move and
 * nothing is sent. */
static void refused_local(world *w, int g, double now, const uint8_t *data, size_t len,
                          ef_status want, const char *reason, const char *what) {
    ef_gateway_stats a = stats(w, g);
    size_t n_out = w->gout[g].n;
    ef_status st = ef_gateway_handle_local(w->g[g], now, data, len, &w->gout[g]);
    ef_gateway_stats b = stats(w, g);
    CHECK_MSG(st != EF_OK, "%s was accepted", what);
    CHECK_MSG(st == want, "%s: status %s, wanted %s (%s)", what, ef_strerror(st),
              ef_strerror(want), ef_last_error());
    CHECK_MSG(!reason || strstr(ef_last_error(), reason), "%s: reason '%s' lacks '%s'", what,
              ef_last_error(), reason);
    CHECK_MSG(w->gout[g].n == n_out, "%s: the gateway sent something", what);
    CHECK_MSG(b.refused_local == a.refused_local + 1, "%s: refused_local not counted", what);
    CHECK_MSG(b.updates_received == a.updates_received && b.partials_sent == a.partials_sent,
              "%s changed the partial", what);
}

static void refused_up(world *w, int g, double now, ef_buf *b, ef_status want,
                       const char *reason, const char *what) {
    ef_gateway_stats a = stats(w, g);
    size_t n_out = w->gout[g].n;
    ef_status st = ef_gateway_handle_upstream(w->g[g], now, b, &w->gout[g]);
    ef_gateway_stats s = stats(w, g);
    CHECK_MSG(st == want, "%s: status %s, wanted %s (%s)", what, ef_strerror(st),
              ef_strerror(want), ef_last_error());
    CHECK_MSG(!reason || strstr(ef_last_error(), reason), "%s: reason '%s' lacks '%s'", what,
              ef_last_error(), reason);
    CHECK_MSG(w->gout[g].n == n_out, "%s: the gateway sent something", what);
    CHECK_MSG(s.refused_upstream == a.refused_upstream + 1 && s.tasks == a.tasks &&
                  s.evals == a.evals && s.abandoned == a.abandoned,
              "%s changed the gateway", what);
}

static void test_refusals(void) {
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 1;
    cfg.clients_per_round = 1;
    cfg.min_clients = 1;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    ef_gateway_config gc = ef_gateway_defaults();
    const int home[4] = {0, 0, 0, -1};
    const uint32_t min_local[1] = {3};
    world *w = world_new(&cfg, &sc, 1, &gc, min_local, 4, home, NULL);
    w->home[3] = 0; /* leaf 3: a stranger that never checks in with the gateway */
    for (int k = 0; k < 3; k++) checkin(w, k, 0.0);
    route_gw(w, 0, 0.0);
    CHECK(w->down.n == 2);
    ef_buf *up_model = ef_buf_ref(w->down.v[0].buf), *up_task = ef_buf_ref(w->down.v[1].buf);
    w->fk.nan_leaf = 1;
    w->fk.n_ex[2] = 3;
    route_down(w, 1.0);
    CHECK(w->gout[0].n == 6);
    /* keep a local MODEL and TASK to build the stranger's answer from */
    ef_buf *loc_model = ef_buf_ref(w->gout[0].v[0].buf), *loc_task = ef_buf_ref(w->gout[0].v[1].buf);
    route_gw(w, 0, 1.0);
    for (int k = 0; k < 3; k++) CHECK(w->up[k].n == 1);
    ef_buf *u0 = pop(&w->up[0], NULL), *u1 = pop(&w->up[1], NULL), *u2 = pop(&w->up[2], NULL);
    double now = 2.0;

    /* local messages */
    CHECK_OK(ef_gateway_handle_local(w->g[0], now, u0->data, u0->len, &w->gout[0]));
    refused_local(w, 0, now, u0->data, u0->len, EF_ERR_STATE, "stale or duplicate", "duplicate");
    ef_buf *b = with_header(u2, 8, JOB + 1, 8);
    refused_local(w, 0, now, b->data, b->len, EF_ERR_STATE, "job", "another job");
    ef_buf_unref(b);
    b = with_header(u2, 32, rd64(u2->data + 32) + 1, 8);
    refused_local(w, 0, now, b->data, b->len, EF_ERR_STATE, "no such task", "wrong task id");
    ef_buf_unref(b);
    b = with_header(u2, 16, rd32(u2->data + 16) + 1, 4);
    refused_local(w, 0, now, b->data, b->len, EF_ERR_STATE, "no such task", "wrong round");
    ef_buf_unref(b);
    b = buf_copy(u2, u2->len);
    wr32(b->data + EF_WIRE_HEADER, 5);
    reseal(b);
    refused_local(w, 0, now, b->data, b->len, EF_ERR_STATE, "no such task", "wrong version");
    ef_buf_unref(b);
    b = buf_copy(u2, EF_WIRE_HEADER + EF_UPDATE_FIXED + 4 * (NP - 1));
    wr64(b->data + EF_WIRE_HEADER + 24, NP - 1);
    reseal(b);
    refused_local(w, 0, now, b->data, b->len, EF_ERR_FORMAT, "has 7 values", "short update");
    ef_buf_unref(b);
    b = buf_copy(u2, u2->len);
    b->data[EF_WIRE_HEADER + 40] ^= 4;
    refused_local(w, 0, now, b->data, b->len, EF_ERR_FORMAT, "CRC", "corrupted update");
    ef_buf_unref(b);
    refused_local(w, 0, now, u2->data, UPDATE_LEN - 1, EF_ERR_FORMAT, NULL, "truncated update");
    refused_local(w, 0, now, u2->data, 10, EF_ERR_FORMAT, NULL, "10 bytes");
    b = buf_copy(u2, u2->len);
    wr32(b->data + EF_WIRE_HEADER + 4, 0);
    reseal(b);
    refused_local(w, 0, now, b->data, b->len, EF_ERR_FORMAT, NULL, "zero examples");
    ef_buf_unref(b);
    b = buf_copy(u2, u2->len);
    b->data[5] = EF_MSG_SA_ADVERTISE;
    reseal(b);
    refused_local(w, 0, now, b->data, b->len, EF_ERR_UNSUPPORTED, "secure aggregation",
                  "SA_ADVERTISE from a local client");
    ef_buf_unref(b);
    refused_local(w, 0, now, loc_task->data, loc_task->len, EF_ERR_STATE,
                  "unknown local client", "the gateway's own task echoed back");
    b = with_header(loc_task, 20, LEAF_ID(0), 4);
    refused_local(w, 0, now, b->data, b->len, EF_ERR_STATE, "does not accept",
                  "a task sent to the gateway");
    ef_buf_unref(b);
    {
        /* a stranger with a copy of the task: unknown sender */
        ef_outbox o = {0};
        CHECK_OK(ef_client_handle(w->c[3], loc_model, 0, &o));
        CHECK_OK(ef_client_handle(w->c[3], loc_task, 0, &o));
        CHECK(o.n == 1);
        refused_local(w, 0, now, o.v[0].buf->data, o.v[0].buf->len, EF_ERR_STATE,
                      "unknown local client", "update from an unknown client");
        ef_outbox_free(&o);
        /* a check-in claiming the server's id */
        ef_buf *e = ef_buf_new(EF_WIRE_HEADER + 8);
        memset(e->data + EF_WIRE_HEADER, 0, 8);
        ef_wire_seal(e->data, EF_MSG_CHECKIN, JOB, 0, EF_SERVER_ID, 1, 8);
        refused_local(w, 0, now, e->data, e->len, EF_ERR_FORMAT, "reserved", "checkin as server");
        ef_buf_unref(e);
        /* an evaluation result nobody asked for */
        e = ef_buf_new(EF_WIRE_HEADER + 24);
        memset(e->data + EF_WIRE_HEADER, 0, 24);
        wr32(e->data + EF_WIRE_HEADER + 4, 4);
        ef_wire_seal(e->data, EF_MSG_EVAL_RESULT, JOB, 1, LEAF_ID(2), 99, 24);
        refused_local(w, 0, now, e->data, e->len, EF_ERR_STATE, "not expected", "eval result");
        ef_buf_unref(e);
    }
    /* every refusal of a message that decodes as an UPDATE: duplicate, job,
     * task, round, version, size, zero examples, unknown sender */
    CHECK(stats(w, 0).updates_rejected == 8);
    CHECK(stats(w, 0).refused_local == 16);

    /* upstream messages */
    b = with_header(up_task, 8, JOB + 1, 8);
    refused_up(w, 0, now, b, EF_ERR_STATE, "not from this job", "task of another job");
    ef_buf_unref(b);
    b = with_header(up_task, 20, 5, 4);
    refused_up(w, 0, now, b, EF_ERR_STATE, "not from this job", "task from a client");
    ef_buf_unref(b);
    refused_up(w, 0, now, up_task, EF_ERR_STATE, "already in progress", "duplicate task");
    b = buf_copy(up_task, up_task->len);
    wr32(b->data + EF_WIRE_HEADER, 9);
    wr64(b->data + 32, 77777);
    reseal(b);
    refused_up(w, 0, now, b, EF_ERR_STATE, "does not hold", "task for a model not held");
    ef_buf_unref(b);
    b = buf_copy(up_task, up_task->len);
    b->data[EF_WIRE_HEADER + 4] ^= 1; /* the hash */
    wr64(b->data + 32, 77777);
    reseal(b);
    refused_up(w, 0, now, b, EF_ERR_FORMAT, "hash", "task with another hash");
    ef_buf_unref(b);
    b = buf_copy(up_model, EF_WIRE_HEADER + EF_MODEL_FIXED + 4 * (NP - 1));
    wr64(b->data + EF_WIRE_HEADER + 8, NP - 1);
    reseal(b);
    refused_up(w, 0, now, b, EF_ERR_FORMAT, "7 values", "model of 7 values");
    ef_buf_unref(b);
    {
        ef_buf *e = ef_buf_new(EF_WIRE_HEADER + EF_SA_SETUP_PAYLOAD);
        memset(e->data + EF_WIRE_HEADER, 0, EF_SA_SETUP_PAYLOAD);
        ef_wire_seal_task(e->data, EF_MSG_SA_SETUP, JOB, 1, EF_SERVER_ID, 500, 500,
                          EF_SA_SETUP_PAYLOAD);
        refused_up(w, 0, now, e, EF_ERR_UNSUPPORTED, "nested secure aggregation", "SA_SETUP");
        ef_buf_unref(e);
        e = ef_buf_new(EF_WIRE_HEADER + 8);
        memset(e->data + EF_WIRE_HEADER, 0, 8);
        ef_wire_seal(e->data, EF_MSG_CHECKIN, JOB, 0, EF_SERVER_ID, 501, 8);
        refused_up(w, 0, now, e, EF_ERR_STATE, "does not accept", "checkin from upstream");
        ef_buf_unref(e);
    }
    CHECK(w->gout[0].n == 0 && stats(w, 0).partials_sent == 0);

    /* leaf 1's update holds a NaN: refused, its task is spent; leaf 2's is
     * then the last answer: the partial is leaves 0 and 2 only */
    CHECK(ef_gateway_handle_local(w->g[0], now, u1->data, u1->len, &w->gout[0]) == EF_ERR_INVALID);
    CHECK(strstr(ef_last_error(), "non-finite") != NULL);
    CHECK(w->gout[0].n == 0);
    CHECK_OK(ef_gateway_handle_local(w->g[0], now, u2->data, u2->len, &w->gout[0]));
    CHECK(w->gout[0].n == 1);
    pump(w, now);
    fake f = w->fk;
    f.n_ex[1] = 0;
    mean m = mean_of(&f, 0, 3, 1);
    check_partial(w, 0, &m);
    CHECK(m.n == 4);
    CHECK(ef_server_done(w->s) && record(w, 0)->completed == 1);
    ef_gateway_stats s = stats(w, 0);
    CHECK(s.updates_received == 2 && s.updates_rejected == 9 && s.partials_sent == 1);
    CHECK(s.refused_local == 17 && s.refused_upstream == 8);
    /* after the round: the answers again are stale */
    refused_local(w, 0, now, u2->data, u2->len, EF_ERR_STATE, "no such task", "late duplicate");
    ef_buf_unref(u0);
    ef_buf_unref(u1);
    ef_buf_unref(u2);
    ef_buf_unref(up_model);
    ef_buf_unref(up_task);
    ef_buf_unref(loc_model);
    ef_buf_unref(loc_task);
    world_free(w);
}

/* ---- authentication -------------------------------------------------------- */

/* Every message in o is signed by pk; local ones come as the server. */
static void all_signed(const ef_outbox *o, const uint8_t *pk, uint32_t upstream_sender) {
    for (size_t i = 0; i < o->n; i++) {
        ef_msg m;
        CHECK_OK(ef_wire_decode(o->v[i].buf->data, o->v[i].buf->len, (size_t)-1, &m));
        CHECK(m.sig != NULL);
        CHECK_OK(ef_wire_verify(o->v[i].buf->data, &m, pk));
        CHECK(m.sender == (o->v[i].to == EF_SERVER_ID ? upstream_sender : EF_SERVER_ID));
        if (m.type == EF_MSG_TASK) CHECK(m.task == m.seq);
    }
}

static void test_authentication(void) {
    static uint8_t lpk[NLEAF][EF_PK_BYTES], lsk[NLEAF][EF_SK_BYTES];
    static uint8_t gpk[MAXG][EF_PK_BYTES], gsk[MAXG][EF_SK_BYTES];
    uint8_t spk[EF_PK_BYTES], ssk[EF_SK_BYTES], xpk[EF_PK_BYTES], xsk[EF_SK_BYTES];
    CHECK(sodium_init() >= 0);
    crypto_sign_keypair(spk, ssk);
    crypto_sign_keypair(xpk, xsk);
    for (int g = 0; g < MAXG; g++) {
        crypto_sign_keypair(gpk[g], gsk[g]);
        g_gw_sk[g] = gsk[g];
        g_gw_pk[g] = gpk[g];
    }
    for (int k = 0; k < NLEAF; k++) {
        crypto_sign_keypair(lpk[k], lsk[k]);
        g_leaf_sk[k] = lsk[k];
    }
    g_server_pk = spk;
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 2;
    cfg.clients_per_round = 2;
    cfg.min_clients = 2;
    cfg.sign_key = ssk;
    cfg.authenticate = 1;
    cfg.first_seq = 5000;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    ef_gateway_config gc = ef_gateway_defaults();
    gc.authenticate = 1;
    gc.first_seq = 9000;
    const uint32_t min_local[2] = {3, 4};
    world *w = world_new(&cfg, &sc, 2, &gc, min_local, NLEAF, HOME2, NULL);
    for (int g = 0; g < 2; g++) CHECK_OK(ef_server_allow(w->s, GW_ID(g), gpk[g]));
    for (int k = 0; k < NLEAF; k++)
        if (k != 2) CHECK_OK(ef_gateway_allow(w->g[HOME2[k]], LEAF_ID(k), lpk[k]));
    CHECK(ef_gateway_allow(w->g[0], LEAF_ID(0), lpk[1]) == EF_ERR_INVALID);
    CHECK(ef_gateway_allow(w->g[0], EF_SERVER_ID, lpk[1]) == EF_ERR_INVALID);
    CHECK(ef_gateway_known(w->g[0]) == 2 && ef_gateway_online(w->g[0]) == 0);
    /* leaf 2 is not on gateway 0's allow-list yet */
    CHECK_OK(ef_client_checkin(w->c[2], &w->up[2]));
    ef_buf *c2 = pop(&w->up[2], NULL);
    refused_local(w, 0, 0.0, c2->data, c2->len, EF_ERR_AUTH, "allow-list", "not allow-listed");
    /* an unsigned check-in under an allowed id */
    ef_buf *u = ef_buf_new(EF_WIRE_HEADER + 8);
    memset(u->data + EF_WIRE_HEADER, 0, 8);
    ef_wire_seal(u->data, EF_MSG_CHECKIN, JOB, 0, LEAF_ID(0), 1, 8);
    refused_local(w, 0, 0.0, u->data, u->len, EF_ERR_AUTH, "unsigned", "unsigned checkin");
    ef_buf_unref(u);
    /* leaf 2's check-in signed with leaf 0's key */
    ef_buf *forged = dup_buf(c2);
    {
        ef_msg m;
        CHECK_OK(ef_wire_decode(forged->data, forged->len, (size_t)-1, &m));
        ef_wire_sign(forged->data, m.payload_len, lsk[0]);
    }
    CHECK_OK(ef_gateway_allow(w->g[0], LEAF_ID(2), lpk[2]));
    refused_local(w, 0, 0.0, forged->data, forged->len, EF_ERR_AUTH, "bad signature",
                  "checkin signed by another leaf");
    ef_buf_unref(forged);
    CHECK_OK(ef_gateway_handle_local(w->g[0], 0.0, c2->data, c2->len, &w->gout[0]));
    refused_local(w, 0, 0.0, c2->data, c2->len, EF_ERR_AUTH, "replayed", "replayed checkin");
    ef_buf_unref(c2);
    for (int k = 0; k < NLEAF; k++)
        if (k != 2) checkin(w, k, 0.0);
    for (int g = 0; g < 2; g++) {
        CHECK(w->gout[g].n == 1);
        all_signed(&w->gout[g], gpk[g], GW_ID(g));
    }
    /* the server refuses a gateway check-in signed by another gateway's key */
    {
        ef_buf *x = dup_buf(w->gout[1].v[0].buf);
        ef_msg m;
        CHECK_OK(ef_wire_decode(x->data, x->len, (size_t)-1, &m));
        ef_wire_sign(x->data, m.payload_len, gsk[0]);
        CHECK(ef_server_handle(w->s, 0.0, x->data, x->len, &w->down) == EF_ERR_AUTH);
        ef_buf_unref(x);
    }
    route_gw(w, 0, 0.0);
    route_gw(w, 1, 0.0);
    CHECK(w->down.n == 4); /* MODEL + TASK to each gateway, signed by the server */
    /* a gateway refuses an upstream task signed by another key, and a replay */
    {
        ef_buf *x = dup_buf(w->down.v[1].buf);
        ef_msg m;
        CHECK_OK(ef_wire_decode(x->data, x->len, (size_t)-1, &m));
        ef_wire_sign(x->data, m.payload_len, xsk);
        int g = gw_of(w->down.v[1].to);
        refused_up(w, g, 1.0, x, EF_ERR_AUTH, "bad signature", "task signed by a stranger");
        ef_buf_unref(x);
        /* the server's task routed straight to a leaf: the leaf wants the
         * gateway's signature */
        int k = g == 0 ? 0 : 3;
        CHECK(ef_client_handle(w->c[k], w->down.v[1].buf, 0, &w->up[k]) == EF_ERR_AUTH);
        CHECK(w->up[k].n == 0);
    }
    ef_buf *task0 = NULL;
    for (size_t i = 0; i < w->down.n; i++)
        if (w->down.v[i].to == GW_ID(0) && w->down.v[i].type == EF_MSG_TASK)
            task0 = ef_buf_ref(w->down.v[i].buf);
    route_down(w, 1.0);
    refused_up(w, 0, 1.0, task0, EF_ERR_AUTH, "replayed", "replayed upstream task");
    ef_buf_unref(task0);
    for (int g = 0; g < 2; g++) {
        CHECK(w->gout[g].n == 2u * (g == 0 ? 3 : 4));
        all_signed(&w->gout[g], gpk[g], GW_ID(g));
    }
    route_gw(w, 0, 1.0);
    route_gw(w, 1, 1.0);
    /* local updates: a tampered one, one re-signed by another leaf, a replay */
    ef_buf *up0 = dup_buf(w->up[0].v[0].buf);
    ef_buf *bad = dup_buf(w->up[1].v[0].buf);
    bad->data[EF_WIRE_HEADER + EF_UPDATE_FIXED] ^= 0x40;
    {
        /* an attacker can recompute the CRC (reseal), not the signature */
        ef_msg m;
        CHECK_OK(ef_wire_decode(w->up[1].v[0].buf->data, w->up[1].v[0].buf->len, (size_t)-1, &m));
        uint8_t sig[EF_SIG_BYTES];
        memcpy(sig, m.sig, EF_SIG_BYTES);
        ef_wire_seal_task(bad->data, EF_MSG_UPDATE, JOB, m.round, m.sender, m.seq, m.task,
                          m.payload_len);
        ef_wire_sign(bad->data, m.payload_len, lsk[1]); /* sets the flag and CRC ... */
        memcpy(bad->data + EF_WIRE_HEADER + m.payload_len, sig, EF_SIG_BYTES); /* ... old sig */
    }
    refused_local(w, 0, 1.5, bad->data, bad->len, EF_ERR_AUTH, "bad signature", "tampered update");
    ef_buf_unref(bad);
    pump(w, 2.0);
    refused_local(w, 0, 2.0, up0->data, up0->len, EF_ERR_AUTH, "replayed", "replayed update");
    ef_buf_unref(up0);
    CHECK(n_records(w) == 2 && ef_server_done(w->s));
    CHECK(record(w, 0)->completed == 2 && record(w, 1)->completed == 2);
    CHECK(ef_server_refused(w->s) == 1);
    mean all = mean_of(&w->fk, 0, NLEAF, -1);
    float want[NP];
    memcpy(want, w->init, sizeof want);
    for (int r = 0; r < 2; r++)
        for (int j = 0; j < NP; j++) want[j] = (float)((double)want[j] + all.d[j]);
    CHECK(memcmp(model_of(w), want, sizeof want) == 0);
    world_free(w);
    for (int g = 0; g < MAXG; g++) g_gw_sk[g] = g_gw_pk[g] = NULL;
    for (int k = 0; k < NLEAF; k++) g_leaf_sk[k] = NULL;
    g_server_pk = NULL;
}

/* ---- counter renewal ---------------------------------------------------------- */

/* A driver's last will carries the counter first_seq + 2^24; once the
 * broker may have published it, the gateway's later messages must outrank
 * it (the server refuses the rest as replays): ef_gateway_set_seq moves the
 * counter past the will and never back. */
static void test_set_seq(void) {
    static uint8_t gpk[EF_PK_BYTES], gsk[EF_SK_BYTES];
    crypto_sign_keypair(gpk, gsk);
    g_gw_sk[0] = gsk;
    g_gw_pk[0] = gpk;
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 1;
    cfg.clients_per_round = 1;
    cfg.min_clients = 1;
    cfg.authenticate = 1;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    ef_gateway_config gc = ef_gateway_defaults();
    const uint64_t first = 7000, will_seq = first + ((uint64_t)1 << 24);
    gc.first_seq = first;
    const int home[1] = {0};
    world *w = world_new(&cfg, &sc, 1, &gc, NULL, 1, home, NULL);
    CHECK_OK(ef_server_allow(w->s, GW_ID(0), gpk));
    checkin(w, 0, 0.0);
    ef_buf *ci = pop(&w->gout[0], NULL);
    CHECK(ci != NULL);
    if (!ci) goto done;
    ef_msg m;
    CHECK_OK(ef_wire_decode(ci->data, ci->len, (size_t)-1, &m));
    CHECK(m.type == EF_MSG_CHECKIN && m.seq == first + 1);
    CHECK_OK(ef_server_handle(w->s, 0.0, ci->data, ci->len, &w->down));
    ef_buf_unref(ci);
    ef_outbox_clear(&w->down); /* the round's task: not routed here */
    /* the will, published by the broker */
    ef_buf *will = ef_buf_new(EF_WIRE_HEADER + 4 + EF_SIG_BYTES);
    memset(will->data + EF_WIRE_HEADER, 0, 4);
    will->data[EF_WIRE_HEADER] = 1;
    ef_wire_seal_task(will->data, EF_MSG_LEAVE, JOB, 0, GW_ID(0), will_seq, 0, 4);
    ef_wire_sign(will->data, 4, gsk);
    CHECK_OK(ef_server_handle(w->s, 1.0, will->data, will->len, &w->down));
    ef_buf_unref(will);
    /* the old counter run is now below the server's last counter */
    CHECK_OK(ef_gateway_checkin(w->g[0], &w->gout[0]));
    ci = pop(&w->gout[0], NULL);
    CHECK(ef_server_handle(w->s, 1.0, ci->data, ci->len, &w->down) == EF_ERR_AUTH);
    CHECK(strstr(ef_last_error(), "replay") != NULL);
    ef_buf_unref(ci);
    /* counters never go back; nothing changes */
    CHECK(ef_gateway_set_seq(w->g[0], first) == EF_ERR_INVALID);
    CHECK(strstr(ef_last_error(), "below") != NULL);
    CHECK_OK(ef_gateway_set_seq(w->g[0], will_seq + 1));
    CHECK_OK(ef_gateway_checkin(w->g[0], &w->gout[0]));
    ci = pop(&w->gout[0], NULL);
    CHECK_OK(ef_wire_decode(ci->data, ci->len, (size_t)-1, &m));
    CHECK(m.seq == will_seq + 2);
    CHECK_OK(ef_server_handle(w->s, 2.0, ci->data, ci->len, &w->down));
    ef_buf_unref(ci);
done:
    world_free(w);
    g_gw_sk[0] = g_gw_pk[0] = NULL;
}

/* ---- check-ins and selection ------------------------------------------------ */

static void test_checkin_and_selection(void) {
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 2;
    cfg.clients_per_round = 1;
    cfg.min_clients = 1;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    ef_gateway_config gc = ef_gateway_defaults();
    gc.max_local = 2;
    gc.seed = 3;
    const int home[5] = {0, 0, 0, 0, 0};
    const uint32_t n_eval[5] = {5, 5, 5, 5, 5};
    const uint32_t min_local[1] = {2};
    world *w = world_new(&cfg, &sc, 1, &gc, min_local, 5, home, n_eval);
    CHECK(ef_gateway_checkin(w->g[0], &w->gout[0]) == EF_ERR_STATE);
    CHECK(w->gout[0].n == 0);
    checkin(w, 0, 0.0);
    CHECK(w->gout[0].n == 0);
    checkin(w, 1, 0.0);
    CHECK(w->gout[0].n == 1);
    observe_up(w, 0, w->gout[0].v[0].buf);
    ef_outbox_clear(&w->gout[0]);
    CHECK(w->checkin_train[0] == 201 && w->checkin_eval[0] == 10);
    /* 201 -> 303 examples: a change of 51% > 50%: announced again */
    checkin(w, 2, 0.0);
    CHECK(w->gout[0].n == 1);
    observe_up(w, 0, w->gout[0].v[0].buf);
    ef_outbox_clear(&w->gout[0]);
    CHECK(w->checkin_train[0] == 303);
    /* 303 -> 406: 34%, not announced */
    checkin(w, 3, 0.0);
    CHECK(w->gout[0].n == 0);
    /* an explicit check-in announces the current sums */
    CHECK_OK(ef_gateway_checkin(w->g[0], &w->gout[0]));
    CHECK(w->gout[0].n == 1);
    route_gw(w, 0, 0.0); /* the server starts round 1 */
    CHECK(w->checkin_train[0] == 406 && stats(w, 0).checkins_sent == 3);
    route_down(w, 1.0);
    /* max_local = 2: two tasks to two different leaves */
    CHECK(w->gout[0].n == 4);
    int picked[2], n = 0;
    for (size_t i = 0; i < w->gout[0].n; i++)
        if (w->gout[0].v[i].type == EF_MSG_TASK) picked[n++] = leaf_of(w->gout[0].v[i].to);
    CHECK(n == 2 && picked[0] != picked[1] && picked[0] >= 0 && picked[1] >= 0);
    /* leaf 4 arrives during the task: 406 -> 510 (26%), and a task is held:
     * no check-in either way */
    checkin(w, 4, 1.5);
    CHECK(w->gout[0].n == 4);
    pump(w, 2.0);
    CHECK(n_records(w) == 2 && ef_server_done(w->s));
    CHECK(stats(w, 0).local_tasks == 4 && stats(w, 0).checkins_sent == 3);
    int fits = 0;
    for (int k = 0; k < 5; k++) fits += w->fk.fits[k];
    CHECK(fits == 4);
    /* the same seed and leaves pick the same: a second gateway, same config */
    {
        ef_gateway *g2;
        ef_gateway_config c2 = gc;
        c2.job = JOB;
        c2.id = 300;
        c2.n_params = NP;
        c2.min_local = 2;
        CHECK_OK(ef_gateway_new(&g2, &c2));
        ef_outbox o = {0};
        for (int k = 0; k < 4; k++) { /* the same check-ins, in another order */
            ef_outbox co = {0};
            CHECK_OK(ef_client_checkin(w->c[3 - k], &co));
            CHECK_OK(ef_gateway_handle_local(g2, 0.0, co.v[0].buf->data, co.v[0].buf->len, &o));
            ef_outbox_free(&co);
        }
        ef_outbox_clear(&o);
        /* a fresh server with the same model gives it its first task */
        ef_params *p = NULL;
        int64_t shape[1] = {NP};
        CHECK_OK(ef_params_new(&p));
        CHECK_OK(ef_params_add(p, "w", 1, shape));
        CHECK_OK(ef_params_alloc(p));
        memcpy(ef_params_data(p), w->init, sizeof w->init);
        ef_server *s2;
        ef_server_config sc2 = cfg;
        sc2.rounds = 1;
        CHECK_OK(ef_server_new(&s2, &sc2, &sc, p, NULL, NULL));
        ef_params_free(p);
        ef_outbox so = {0};
        CHECK_OK(ef_gateway_checkin(g2, &o));
        CHECK_OK(ef_server_handle(s2, 0.0, o.v[0].buf->data, o.v[0].buf->len, &so));
        ef_outbox_clear(&o);
        CHECK(so.n == 2);
        for (size_t i = 0; i < so.n; i++) CHECK_OK(ef_gateway_handle_upstream(g2, 1.0, so.v[i].buf, &o));
        int picked2[2], n2 = 0;
        for (size_t i = 0; i < o.n; i++)
            if (o.v[i].type == EF_MSG_TASK) picked2[n2++] = leaf_of(o.v[i].to);
        CHECK(n2 == 2 && picked2[0] == picked[0] && picked2[1] == picked[1]);
        ef_outbox_free(&o);
        ef_outbox_free(&so);
        ef_server_free(s2);
        ef_gateway_free(g2);
    }
    world_free(w);

    /* max_local = 2 of 4 over 40 rounds: each leaf is picked about half the
     * time (not always the first two by id) */
    cfg.rounds = 40;
    const uint32_t min4[1] = {4};
    w = world_new(&cfg, &sc, 1, &gc, min4, 4, home, n_eval);
    for (int k = 0; k < 4; k++) checkin(w, k, 0.0);
    pump(w, 1.0);
    CHECK(ef_server_done(w->s));
    for (int k = 0; k < 4; k++)
        CHECK_MSG(w->fk.fits[k] >= 10 && w->fk.fits[k] <= 30, "leaf %d picked %d of 40 times",
                  k, w->fk.fits[k]);
    CHECK(w->fk.fits[0] + w->fk.fits[1] + w->fk.fits[2] + w->fk.fits[3] == 80);
    world_free(w);
}

/* ---- out of memory ------------------------------------------------------------ */

/* Fails the g_fail_at-th allocation (counting from 1) while armed. */
static long g_allocs, g_fail_at;
static int g_failed;

static void *fail_malloc(void *user, size_t size) {
    (void)user;
    if (g_fail_at && ++g_allocs == g_fail_at) {
        g_failed = 1;
        return NULL;
    }
    return malloc(size ? size : 1);
}
static void *fail_realloc(void *user, void *p, size_t size) {
    (void)user;
    if (g_fail_at && ++g_allocs == g_fail_at) {
        g_failed = 1;
        return NULL;
    }
    return realloc(p, size ? size : 1);
}
static void fail_free(void *user, void *p) {
    (void)user;
    free(p);
}

typedef struct input {
    int upstream;  /* 1: from the server, 0: from a local client */
    double now;
    ef_buf *buf;
} input;

/* Replays a recorded exchange into a fresh gateway, failing allocation k
 * (0: none). Every call returns OK, NOMEM or a refusal caused by an earlier
 * NOMEM; nothing leaks or crashes (the sanitizer build checks). Returns the
 * UPDATEs sent upstream. */
static int replay(const ef_gateway_config *gc, const input *in, int n_in, long k) {
    g_allocs = 0;
    g_failed = 0;
    g_fail_at = k;
    ef_gateway *g = NULL;
    ef_outbox out = {0};
    int partials = 0;
    ef_status st = ef_gateway_new(&g, gc);
    if (st == EF_OK) {
        for (int i = 0; i < n_in; i++) {
            st = in[i].upstream ? ef_gateway_handle_upstream(g, in[i].now, in[i].buf, &out)
                                : ef_gateway_handle_local(g, in[i].now, in[i].buf->data,
                                                          in[i].buf->len, &out);
            CHECK_MSG(st == EF_OK || g_failed, "input %d failed without an allocation failure: %s",
                      i, ef_last_error());
            for (size_t j = 0; j < out.n; j++) partials += out.v[j].type == EF_MSG_UPDATE;
            ef_outbox_clear(&out);
        }
    } else {
        CHECK(st == EF_ERR_NOMEM && g == NULL);
    }
    ef_outbox_free(&out);
    ef_gateway_free(g);
    g_fail_at = 0;
    return partials;
}

static void test_out_of_memory(void) {
    ef_server_config cfg = fl_base_config(JOB);
    cfg.rounds = 1;
    cfg.clients_per_round = 1;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    ef_gateway_config gc = ef_gateway_defaults();
    const int home[2] = {0, 0};
    const uint32_t min_local[1] = {2};
    world *w = world_new(&cfg, &sc, 1, &gc, min_local, 2, home, NULL);
    /* record what reaches the gateway, in order */
    input in[16];
    int n_in = 0;
    for (int k = 0; k < 2; k++) {
        CHECK_OK(ef_client_checkin(w->c[k], &w->up[k]));
        in[n_in++] = (input){0, 0.0, ef_buf_ref(w->up[k].v[0].buf)};
        CHECK_OK(deliver(w, k, 0.0));
    }
    route_gw(w, 0, 0.0);
    for (size_t i = 0; i < w->down.n; i++) in[n_in++] = (input){1, 1.0, ef_buf_ref(w->down.v[i].buf)};
    route_down(w, 1.0);
    route_gw(w, 0, 1.0);
    for (int k = 0; k < 2; k++) in[n_in++] = (input){0, 2.0, ef_buf_ref(w->up[k].v[0].buf)};
    CHECK(n_in == 6);
    ef_gateway_config rc = gc;
    rc.job = JOB;
    rc.id = GW_ID(0);
    rc.n_params = NP;
    rc.min_local = 2;
    CHECK(replay(&rc, in, n_in, 0) == 1);
    ef_set_allocator(&(ef_allocator){fail_malloc, fail_realloc, fail_free, NULL});
    long k = 1;
    for (; k < 1000; k++) {
        replay(&rc, in, n_in, k);
        if (!g_failed) break; /* allocation k was never reached: all covered */
    }
    ef_set_allocator(NULL);
    CHECK(k > 5 && k < 1000);
    printf("out of memory: %ld allocation sites of a gateway round failed in turn\n", k - 1);
    for (int i = 0; i < n_in; i++) ef_buf_unref(in[i].buf);
    world_free(w);
}

/* ---- configuration ----------------------------------------------------------- */

static void test_config(void) {
    ef_gateway *g = NULL;
    ef_gateway_config c = ef_gateway_defaults();
    CHECK(c.deadline_fraction == 0.8 && c.min_local == 1 && c.max_local == 0);
    c.job = JOB;
    c.id = 7;
    c.n_params = 0;
    CHECK(ef_gateway_new(&g, &c) == EF_ERR_INVALID && g == NULL);
    c.n_params = NP;
    c.deadline_fraction = 0;
    CHECK(ef_gateway_new(&g, &c) == EF_ERR_INVALID);
    c.deadline_fraction = 1.5;
    CHECK(ef_gateway_new(&g, &c) == EF_ERR_INVALID);
    c.deadline_fraction = NAN;
    CHECK(ef_gateway_new(&g, &c) == EF_ERR_INVALID);
    c.deadline_fraction = 0.8;
    c.recheckin_change = -1;
    CHECK(ef_gateway_new(&g, &c) == EF_ERR_INVALID);
    c.recheckin_change = 0.5;
    c.id = EF_SERVER_ID;
    CHECK(ef_gateway_new(&g, &c) == EF_ERR_INVALID);
    CHECK(strstr(ef_last_error(), "reserved") != NULL);
    c.id = 7;
    CHECK_OK(ef_gateway_new(&g, &c));
    CHECK(ef_gateway_next_timer(g) == INFINITY && ef_gateway_online(g) == 0);
    CHECK(strcmp(ef_gateway_note(g), "") == 0);
    ef_gateway_free(g);
    ef_gateway_free(NULL);
    /* seeds: deterministic, different per client and per upstream seed */
    CHECK(ef_gateway_task_seed(1, 2) == ef_gateway_task_seed(1, 2));
    CHECK(ef_gateway_task_seed(1, 2) != ef_gateway_task_seed(1, 3));
    CHECK(ef_gateway_task_seed(1, 2) != ef_gateway_task_seed(2, 2));
}

int main(void) {
    ef_log_set(NULL, NULL, EF_LOG_ERROR); /* the notes are checked, not printed */
    test_config();
    test_equivalence_exact();
    test_equivalence_rounding();
    test_eval();
    test_deadlines();
    test_membership();
    test_abandon();
    test_model_before_finish();
    test_refusals();
    test_authentication();
    test_set_seq();
    test_checkin_and_selection();
    test_out_of_memory();
    return tu_finish("test_gateway");
}
