/*
 * The simulator driver (see include/edgefl/sim.h): a discrete-event loop on
 * a simulated clock that carries the server's and the clients' messages over
 * modelled links, decides availability and dropouts, and runs client
 * training in parallel.
 *
 * Why batches of client events can run in parallel: a client's answer
 * depends only on the messages it receives, and is delivered at its own
 * (later) time, so consecutive client deliveries at the head of the event
 * queue -- those before the next server event or deadline -- are handled
 * together on the worker threads and their answers queued in event order.
 * Every random decision is drawn on the driver thread in event order, so a
 * run is reproducible whatever the thread count.
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "core/core_internal.h"
#include "edgefl/rng.h"
#include "edgefl/sim.h"
#include "edgefl/train.h"

typedef enum ev_kind { EV_SERVER = 0, EV_CLIENT, EV_REJOIN } ev_kind;

typedef struct event {
    double t;
    uint64_t seq;      /* ties broken in scheduling order */
    uint32_t client;
    uint8_t kind;
    double sent;       /* when the server sent it (client events) */
    ef_buf *buf;
} event;

/* What happens to one client event of a batch. */
typedef enum fate { F_HANDLE = 0, F_SKIP, F_LEAVE } fate;

typedef struct work {
    event ev;
    fate f;
    double reply_at;   /* when the client's answer leaves the device */
    double leave_at;   /* F_LEAVE */
    ef_outbox out;
    ef_status st;
} work;

struct ef_sim {
    ef_sim_config cfg;
    const ef_dataset *train, *test;
    ef_partition part, part_train, part_eval;
    ef_pool *pool;
    int threads;
    ef_nn_trainer *trainer;
    ef_trainer honest;
    ef_client **clients;
    uint8_t *malicious;
    uint32_t n_malicious;
    double *down_free, *up_free;
    uint8_t *sa_drop;    /* secure aggregation: stage 1-4 at which a client drops, 0 none */
    double *sa_when;     /* ... and how far into its training (stage 3) */
    ef_task sa_task;     /* the current secure-aggregation round's training settings */
    ef_server *server;
    ef_model *eval_model;
    event *heap;
    size_t n_ev, cap_ev;
    uint64_t seq;
    double now;
    ef_rng rng;
    ef_outbox out;
    work *batch;
    size_t cap_batch, n_batch;
    uint32_t *items;     /* batch positions that start a client's run of events */
    _Atomic size_t next_item;
    size_t n_items;
    double flops_pe;
    uint32_t *round_ids;  /* clients whose updates were accepted this round */
    size_t n_round_ids, cap_round_ids;
    ef_sim_round_fn cb;
    void *cb_user;
    double t0, t_last;
    ef_status cb_status;
};

ef_sim_config ef_sim_defaults(void) {
    ef_sim_config c;
    memset(&c, 0, sizeof c);
    c.server = ef_server_defaults();
    c.strategy = ef_strategy_defaults(EF_STRAT_FEDAVG);
    c.model.arch = EF_MODEL_MLP;
    c.model.max_batch = 32;
    c.n_clients = 100;
    c.partition.kind = EF_PART_IID;
    c.min_per_client = 1;
    ef_device_profile_builtin("ideal", &c.profile);
    c.seed = 1;
    c.attack_scale = 1.0f;
    return c;
}

/* ---- event queue (binary heap on (t, seq)) ------------------------------ */

static int ev_less(const event *a, const event *b) {
    return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static ef_status push_event(ef_sim *s, event e) {
    if (s->n_ev == s->cap_ev) {
        size_t nc = s->cap_ev ? s->cap_ev * 2 : 1024;
        event *nv = ef_realloc(s->heap, nc * sizeof *nv);
        if (!nv) return EF_ERR_NOMEM;
        s->heap = nv;
        s->cap_ev = nc;
    }
    e.seq = s->seq++;
    size_t i = s->n_ev++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ev_less(&e, &s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = e;
    return EF_OK;
}

static event pop_event(ef_sim *s) {
    event top = s->heap[0];
    event last = s->heap[--s->n_ev];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const event *best = &last;
        if (l < s->n_ev && ev_less(&s->heap[l], best)) m = l, best = &s->heap[l];
        if (r < s->n_ev && ev_less(&s->heap[r], best)) m = r;
        if (m == i) break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (s->n_ev > 0) s->heap[i] = last;
    return top;
}

/* ---- links ---------------------------------------------------------------- */

/* Server -> client: the downlink carries one message at a time. */
static ef_status send_down(ef_sim *s, double now, uint32_t c, ef_buf *buf) {
    ef_device d = ef_device_draw(&s->cfg.profile, s->cfg.seed, c);
    double start = now > s->down_free[c] ? now : s->down_free[c];
    double done = start + (double)buf->len / d.down_bps;
    s->down_free[c] = done;
    event e = {.t = done + d.latency_s, .client = c, .kind = EV_CLIENT, .sent = now, .buf = buf};
    return push_event(s, e);
}

/* Client -> server over the client's uplink. */
static ef_status send_up(ef_sim *s, double now, uint32_t c, ef_buf *buf) {
    ef_device d = ef_device_draw(&s->cfg.profile, s->cfg.seed, c);
    double start = now > s->up_free[c] ? now : s->up_free[c];
    double done = start + (double)buf->len / d.up_bps;
    s->up_free[c] = done;
    event e = {.t = done + d.latency_s, .client = c, .kind = EV_SERVER, .buf = buf};
    return push_event(s, e);
}

/* Queues the server's outbox on the clients' downlinks (takes its references). */
static ef_status route_server_out(ef_sim *s, double now) {
    ef_status st = EF_OK;
    for (size_t i = 0; i < s->out.n; i++) {
        ef_out_msg *m = &s->out.v[i];
        if (st == EF_OK && m->to < s->cfg.n_clients) {
            st = send_down(s, now, m->to, m->buf);
            if (st == EF_OK) m->buf = NULL; /* now owned by the event */
        }
        ef_buf_unref(m->buf);
    }
    s->out.n = 0;
    return st;
}

/* ---- the trainer, with attackers ------------------------------------------ */

static ef_status sim_fit(void *user, int worker, uint32_t client, const float *global, size_t n,
                         const ef_task *task, float *delta, ef_fit_result *res) {
    ef_sim *s = user;
    ef_status st = s->honest.fit(s->honest.user, worker, client, global, n, task, delta, res);
    if (st == EF_OK && s->malicious[client]) {
        /* sign-flipping, scaled: the update pushes the model the other way */
        float k = -s->cfg.attack_scale;
        for (size_t i = 0; i < n; i++) delta[i] *= k;
    }
    return st;
}

static ef_status sim_eval(void *user, int worker, uint32_t client, const float *global, size_t n,
                          ef_eval_counts *res) {
    ef_sim *s = user;
    return s->honest.evaluate(s->honest.user, worker, client, global, n, res);
}

/* ---- rounds: centralized evaluation and progress -------------------------- */

static void on_round(void *user, ef_round_record *rec, const float *model, size_t n) {
    ef_sim *s = user;
    double wall = ef_now();
    rec->wall_s = wall - s->t_last;
    s->t_last = wall;
    uint32_t every = s->cfg.eval_every;
    int last = rec->round == s->cfg.server.rounds;
    if (s->test && (last || (every && rec->round % every == 0))) {
        memcpy(ef_params_data(ef_model_params(s->eval_model)), model, n * sizeof(float));
        double acc, loss;
        ef_status st = ef_evaluate(s->eval_model, s->test, NULL,
                                   s->cfg.eval_limit ? s->cfg.eval_limit : s->test->n, &acc, &loss);
        if (st == EF_OK) {
            rec->test_accuracy = acc;
            rec->test_loss = loss;
        } else if (s->cb_status == EF_OK) {
            s->cb_status = st;
        }
    }
    if (s->cb) {
        double elapsed = wall - s->t0;
        ef_sim_progress p = {.rec = rec, .rounds = s->cfg.server.rounds, .wall_s = elapsed,
                             .clients = s->round_ids, .n_clients = s->n_round_ids};
        p.eta_s = elapsed / rec->round * (double)(s->cfg.server.rounds - rec->round);
        s->cb(s->cb_user, &p);
    }
    s->n_round_ids = 0;
}

/* ---- construction --------------------------------------------------------- */

ef_status ef_sim_new(ef_sim **out, const ef_sim_config *cfg, const ef_dataset *train,
                     const ef_dataset *test) {
    *out = NULL;
    if (cfg->n_clients == 0 || cfg->n_clients >= EF_BROADCAST_ID)
        return ef__fail(EF_ERR_INVALID, "simulate: client count %u out of range", cfg->n_clients);
    if (!(cfg->holdout >= 0 && cfg->holdout < 1))
        return ef__fail(EF_ERR_INVALID, "simulate: holdout fraction must be in [0, 1)");
    if (!(cfg->malicious >= 0 && cfg->malicious <= 1) || !(cfg->attack_scale >= 0))
        return ef__fail(EF_ERR_INVALID, "simulate: malicious fraction must be in [0, 1]");
    const ef_device_profile *pr = &cfg->profile;
    if (!(pr->availability > 0 && pr->availability <= 1) || !(pr->dropout >= 0 && pr->dropout < 1) ||
        !(pr->offline_s >= 0))
        return ef__fail(EF_ERR_INVALID, "simulate: availability must be in (0, 1], dropout in "
                                        "[0, 1)");
    if (cfg->server.fed_eval_every && cfg->holdout <= 0)
        return ef__fail(EF_ERR_INVALID, "simulate: federated evaluation needs a holdout fraction");
    ef_sim *s = ef_calloc(1, sizeof *s);
    if (!s) return EF_ERR_NOMEM;
    s->cfg = *cfg;
    s->train = train;
    s->test = test;
    ef_status st;
    ef_rng_seed(&s->rng, cfg->seed ^ 0x51AB1E5EEDull);

    st = ef_partition_make(&s->part, &cfg->partition, train->labels, train->n, train->n_classes,
                           cfg->n_clients, cfg->min_per_client ? cfg->min_per_client : 1,
                           cfg->seed);
    if (st) goto fail;
    if ((st = ef_partition_holdout(&s->part, cfg->holdout, cfg->seed + 1, &s->part_train,
                                   &s->part_eval)) != EF_OK)
        goto fail;

    if ((st = ef_pool_new(&s->pool, cfg->threads)) != EF_OK) goto fail;
    s->threads = ef_pool_threads(s->pool);
    ef_model_config mc = cfg->model;
    mc.c = train->c, mc.h = train->h, mc.w = train->w, mc.n_classes = train->n_classes;
    if (mc.max_batch < cfg->server.batch) mc.max_batch = cfg->server.batch;
    if ((st = ef_nn_trainer_new(&s->trainer, &mc, train, &s->part_train,
                                cfg->holdout > 0 ? &s->part_eval : NULL, s->threads)) != EF_OK)
        goto fail;
    s->honest = ef_nn_trainer_callbacks(s->trainer);
    s->flops_pe = ef_nn_trainer_flops_per_example(s->trainer);
    if ((st = ef_model_new(&s->eval_model, &mc, s->pool)) != EF_OK) goto fail;
    ef_model_init(s->eval_model, cfg->seed);

    size_t N = cfg->n_clients;
    s->clients = ef_calloc(N, sizeof *s->clients);
    s->malicious = ef_calloc(N, 1);
    s->down_free = ef_calloc(N, sizeof(double));
    s->up_free = ef_calloc(N, sizeof(double));
    s->sa_drop = ef_calloc(N, 1);
    s->sa_when = ef_calloc(N, sizeof(double));
    if (!s->clients || !s->malicious || !s->down_free || !s->up_free || !s->sa_drop ||
        !s->sa_when) {
        st = EF_ERR_NOMEM;
        goto fail;
    }
    /* exactly round(malicious * N) attackers, chosen at random */
    s->n_malicious = (uint32_t)llround(cfg->malicious * (double)N);
    {
        ef_rng r;
        ef_rng_seed(&r, cfg->seed ^ 0xBADC0FFEEull);
        for (uint32_t k = 0; k < s->n_malicious;) {
            uint32_t c = (uint32_t)ef_rng_below(&r, N);
            if (!s->malicious[c]) s->malicious[c] = 1, k++;
        }
    }
    ef_trainer tr = {sim_fit, sim_eval, s};
    for (size_t c = 0; c < N; c++) {
        ef_client_config cc = {.job = cfg->server.job, .id = (uint32_t)c,
                               .n_train = (uint32_t)ef_partition_size(&s->part_train, c),
                               .n_eval = (uint32_t)ef_partition_size(&s->part_eval, c),
                               .n_params = ef_model_numel(s->eval_model),
                               .deterministic_secrets = 1};
        if ((st = ef_client_new(&s->clients[c], &cc, &tr)) != EF_OK) goto fail;
    }
    ef_server_config sc = cfg->server;
    if (sc.min_clients == 0) sc.min_clients = (uint32_t)N;
    if ((st = ef_server_new(&s->server, &sc, &cfg->strategy, ef_model_params(s->eval_model),
                            on_round, s)) != EF_OK)
        goto fail;
    *out = s;
    return EF_OK;
fail:
    ef_sim_free(s);
    return st;
}

void ef_sim_free(ef_sim *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n_ev; i++) ef_buf_unref(s->heap[i].buf);
    ef_free(s->heap);
    ef_free(s->round_ids);
    ef_outbox_free(&s->out);
    for (size_t i = 0; i < s->cap_batch; i++) ef_outbox_free(&s->batch[i].out);
    ef_free(s->batch);
    ef_free(s->items);
    if (s->clients)
        for (size_t c = 0; c < s->cfg.n_clients; c++) ef_client_free(s->clients[c]);
    ef_free(s->clients);
    ef_free(s->malicious);
    ef_free(s->down_free);
    ef_free(s->up_free);
    ef_free(s->sa_drop);
    ef_free(s->sa_when);
    ef_server_free(s->server);
    ef_model_free(s->eval_model);
    ef_nn_trainer_free(s->trainer);
    ef_pool_free(s->pool);
    ef_partition_free(&s->part);
    ef_partition_free(&s->part_train);
    ef_partition_free(&s->part_eval);
    ef_free(s);
}

/* ---- client batches ------------------------------------------------------- */

/* Seconds client c's device takes for a training task. */
static double train_seconds(const ef_sim *s, uint32_t c, const ef_task *t, const ef_device *d) {
    return (double)ef_partition_size(&s->part_train, c) * t->epochs * s->flops_pe / d->flops;
}

/* Marks an answer that would reach the server after the task's deadline as
 * not computed: the server counts the client as late either way. */
static void skip_if_late(ef_sim *s, work *w, const ef_device *d, double deadline_s, size_t upd) {
    if (deadline_s <= 0) return;
    uint32_t c = w->ev.client;
    double start = w->reply_at > s->up_free[c] ? w->reply_at : s->up_free[c];
    double arrive = start + (double)upd / d->up_bps + d->latency_s;
    if (arrive > w->ev.sent + deadline_s) w->f = F_SKIP;
}

/*
 * Secure aggregation: a client that drops out (the profile's dropout
 * probability) does so at a stage drawn uniformly from the four -- on
 * receiving its setup, its neighbours' keys, the forwarded shares (part-way
 * through training) or the unmask request -- so every recovery path runs.
 */
static void decide_secagg(ef_sim *s, work *w, uint8_t type, double u_avail, double u_drop,
                          double u_when) {
    uint32_t c = w->ev.client;
    const ef_device_profile *pr = &s->cfg.profile;
    static const int stage_of[EF_MSG_LAST + 1] = {[EF_MSG_SA_SETUP] = 1, [EF_MSG_SA_KEYS] = 2,
                                     [EF_MSG_SA_FORWARD] = 3, [EF_MSG_SA_UNMASK] = 4};
    if (type == EF_MSG_SA_SETUP) {
        s->sa_drop[c] = 0;
        if (u_avail >= pr->availability) {
            w->f = F_LEAVE;
            w->leave_at = w->ev.t;
            return;
        }
        if (u_drop < pr->dropout) {
            /* u_drop / dropout is uniform on [0, 1): it picks the stage */
            s->sa_drop[c] = (uint8_t)(1 + (int)(4.0 * u_drop / pr->dropout));
            if (s->sa_drop[c] > 4) s->sa_drop[c] = 4;
            s->sa_when[c] = u_when;
        }
    }
    if (s->sa_drop[c] == stage_of[type]) {
        w->f = F_LEAVE;
        w->leave_at = w->ev.t;
        if (type == EF_MSG_SA_FORWARD) {
            ef_device d = ef_device_draw(pr, s->cfg.seed, c);
            w->leave_at += s->sa_when[c] * train_seconds(s, c, &s->sa_task, &d);
        }
        return;
    }
    if (type == EF_MSG_SA_FORWARD) {
        ef_device d = ef_device_draw(pr, s->cfg.seed, c);
        w->reply_at = w->ev.t + train_seconds(s, c, &s->sa_task, &d);
        skip_if_late(s, w, &d, s->sa_task.deadline_s,
                     EF_WIRE_HEADER + EF_SA_MASKED_FIXED + 4 * ef_model_numel(s->eval_model));
    }
}

/* Decides, on the driver thread, what becomes of a client event. */
static void decide(ef_sim *s, work *w) {
    w->f = F_HANDLE;
    w->reply_at = w->ev.t;
    uint8_t type = w->ev.buf->data[5];
    uint32_t c = w->ev.client;
    const ef_device_profile *pr = &s->cfg.profile;
    if (type == EF_MSG_SA_KEYS || type == EF_MSG_SA_FORWARD || type == EF_MSG_SA_UNMASK) {
        decide_secagg(s, w, type, 0.0, 1.0, 0.0);
        return;
    }
    if (type != EF_MSG_TASK && type != EF_MSG_EVAL && type != EF_MSG_SA_SETUP)
        return; /* a model: just kept */
    ef_device d = ef_device_draw(pr, s->cfg.seed, c);
    /* the draws happen in every case so later events see the same stream */
    double u_avail = ef_rng_uniform_double(&s->rng);
    double u_drop = ef_rng_uniform_double(&s->rng);
    double u_when = ef_rng_uniform_double(&s->rng);
    double work_s;
    ef_msg m;
    ef_task t = {0};
    if (type == EF_MSG_SA_SETUP) {
        ef_sa_setup set;
        ef_wire_decode(w->ev.buf->data, w->ev.buf->len, (size_t)-1, &m);
        ef_decode_sa_setup(&m, &s->sa_task, &set);
        decide_secagg(s, w, type, u_avail, u_drop, u_when);
        return;
    }
    if (type == EF_MSG_TASK) {
        ef_wire_decode(w->ev.buf->data, w->ev.buf->len, (size_t)-1, &m);
        ef_decode_task(&m, &t);
        work_s = train_seconds(s, c, &t, &d);
    } else {
        work_s = (double)ef_partition_size(&s->part_eval, c) * (s->flops_pe / 3.0) / d.flops;
    }
    if (u_avail >= pr->availability) {
        w->f = F_LEAVE;
        w->leave_at = w->ev.t;
        return;
    }
    if (u_drop < pr->dropout) {
        w->f = F_LEAVE;
        w->leave_at = w->ev.t + u_when * work_s;
        return;
    }
    w->reply_at = w->ev.t + work_s;
    if (type == EF_MSG_TASK)
        skip_if_late(s, w, &d, t.deadline_s,
                     EF_WIRE_HEADER + EF_UPDATE_FIXED + 4 * ef_model_numel(s->eval_model));
}

static void run_items(void *ctx, int t, int nt) {
    EF_UNUSED(nt);
    ef_sim *s = ctx;
    for (;;) {
        size_t k = atomic_fetch_add_explicit(&s->next_item, 1, memory_order_relaxed);
        if (k >= s->n_items) break;
        size_t end = k + 1 < s->n_items ? s->items[k + 1] : s->n_batch;
        /* a client's consecutive events of this batch, in order */
        for (size_t i = s->items[k]; i < end; i++) {
            work *w = &s->batch[i];
            ef_client *cl = s->clients[w->ev.client];
            if (w->f == F_HANDLE) {
                w->st = ef_client_handle(cl, w->ev.buf, t, &w->out);
            } else if (w->f == F_SKIP) {
                ef_client_forget(cl);
            } else {
                w->st = ef_client_leave(cl, 1, &w->out);
            }
        }
    }
}

/* Pops consecutive client events before `limit` and handles them. */
static ef_status client_batch(ef_sim *s, double limit) {
    size_t n = 0;
    size_t cap = 64 * (size_t)s->threads;
    while (s->n_ev > 0 && s->heap[0].kind == EV_CLIENT && s->heap[0].t < limit && n < cap) {
        if (n == s->cap_batch) {
            size_t nc = s->cap_batch ? s->cap_batch * 2 : 64;
            work *nv = ef_realloc(s->batch, nc * sizeof *nv);
            if (!nv) return EF_ERR_NOMEM;
            memset(nv + s->cap_batch, 0, (nc - s->cap_batch) * sizeof *nv);
            uint32_t *ni = ef_realloc(s->items, nc * sizeof *ni);
            if (!ni) {
                s->batch = nv;
                return EF_ERR_NOMEM;
            }
            s->batch = nv;
            s->items = ni;
            s->cap_batch = nc;
        }
        work *w = &s->batch[n++];
        w->ev = pop_event(s);
        w->st = EF_OK;
        decide(s, w);
    }
    /* sort by client, stably, so each client's events form one run */
    for (size_t i = 1; i < n; i++) {
        work w = s->batch[i];
        size_t j = i;
        while (j > 0 && s->batch[j - 1].ev.client > w.ev.client) {
            s->batch[j] = s->batch[j - 1];
            j--;
        }
        s->batch[j] = w;
    }
    s->n_batch = n;
    s->n_items = 0;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || s->batch[i].ev.client != s->batch[i - 1].ev.client)
            s->items[s->n_items++] = (uint32_t)i;
    atomic_store(&s->next_item, 0);
    ef_pool_run(s->n_items > 1 ? s->pool : NULL, run_items, s);
    /* route answers in (time, sequence) order of the events that caused them */
    ef_status st = EF_OK;
    for (;;) {
        work *best = NULL;
        for (size_t i = 0; i < n; i++) {
            work *w = &s->batch[i];
            if (!w->ev.buf) continue;
            if (!best || ev_less(&w->ev, &best->ev)) best = w;
        }
        if (!best) break;
        uint32_t c = best->ev.client;
        /* a client refusing what the server sent it is a protocol bug: stop */
        if (best->st != EF_OK && st == EF_OK) st = best->st;
        double at = best->f == F_LEAVE ? best->leave_at : best->reply_at;
        for (size_t k = 0; k < best->out.n; k++) {
            ef_buf *b = best->out.v[k].buf;
            best->out.v[k].buf = NULL;
            if (st == EF_OK) st = send_up(s, at, c, b);
            else ef_buf_unref(b);
        }
        best->out.n = 0;
        if (best->f == F_LEAVE && st == EF_OK) {
            double off = -s->cfg.profile.offline_s * log(1.0 - ef_rng_uniform_double(&s->rng));
            event e = {.t = best->leave_at + off, .client = c, .kind = EV_REJOIN};
            st = push_event(s, e);
        }
        ef_buf_unref(best->ev.buf);
        best->ev.buf = NULL;
    }
    return st;
}

/* ---- the run -------------------------------------------------------------- */

ef_status ef_sim_run(ef_sim *s, ef_sim_round_fn cb, void *user) {
    s->cb = cb;
    s->cb_user = user;
    s->t0 = s->t_last = ef_now();
    ef_status st = EF_OK;
    ef_outbox tmp = {0};
    /* every client checks in at time 0 */
    for (size_t c = 0; c < s->cfg.n_clients && st == EF_OK; c++) {
        if ((st = ef_client_checkin(s->clients[c], &tmp)) != EF_OK) break;
        st = send_up(s, 0.0, (uint32_t)c, tmp.v[0].buf);
        if (st != EF_OK) ef_buf_unref(tmp.v[0].buf);
        tmp.n = 0;
    }
    ef_outbox_free(&tmp);
    while (st == EF_OK && !ef_server_done(s->server)) {
        double timer = ef_server_next_timer(s->server);
        if (s->n_ev == 0 || timer <= s->heap[0].t) {
            if (!isfinite(timer)) {
                size_t nr;
                ef_server_records(s->server, &nr);
                return ef__fail(EF_ERR_STATE,
                                "simulation stalled after %zu rounds: no client can take part "
                                "(%u clients, %zu checked in)",
                                nr, s->cfg.n_clients, ef_server_clients(s->server));
            }
            s->now = timer;
            st = ef_server_tick(s->server, s->now, &s->out);
            if (st == EF_OK) st = route_server_out(s, s->now);
            continue;
        }
        if (s->heap[0].kind == EV_CLIENT) {
            s->now = s->heap[0].t;
            st = client_batch(s, timer);
            continue;
        }
        event e = pop_event(s);
        s->now = e.t;
        if (e.kind == EV_SERVER) {
            /* note the sender of an update first: accepting it may close the round */
            int is_update = e.buf->data[5] == EF_MSG_UPDATE || e.buf->data[5] == EF_MSG_SA_MASKED;
            if (is_update) {
                if (s->n_round_ids == s->cap_round_ids) {
                    size_t nc = s->cap_round_ids ? 2 * s->cap_round_ids : 64;
                    uint32_t *nv = ef_realloc(s->round_ids, nc * sizeof *nv);
                    if (!nv) {
                        ef_buf_unref(e.buf);
                        return EF_ERR_NOMEM;
                    }
                    s->round_ids = nv;
                    s->cap_round_ids = nc;
                }
                s->round_ids[s->n_round_ids++] = e.client;
            }
            ef_status hs = ef_server_handle(s->server, s->now, e.buf->data, e.buf->len, &s->out);
            if (hs != EF_OK && is_update && s->n_round_ids > 0 &&
                s->round_ids[s->n_round_ids - 1] == e.client)
                s->n_round_ids--; /* refused: not part of the round */
            if (hs == EF_ERR_NOMEM) st = hs;
            ef_buf_unref(e.buf);
        } else { /* EV_REJOIN */
            ef_outbox o = {0};
            st = ef_client_checkin(s->clients[e.client], &o);
            if (st == EF_OK) {
                st = send_up(s, s->now, e.client, o.v[0].buf);
                if (st != EF_OK) ef_buf_unref(o.v[0].buf);
                o.n = 0;
            }
            ef_outbox_free(&o);
        }
        if (st == EF_OK) st = route_server_out(s, s->now);
        if (st == EF_OK && s->cb_status != EF_OK) st = s->cb_status;
    }
    return st;
}

const ef_round_record *ef_sim_records(const ef_sim *s, size_t *n) {
    return ef_server_records(s->server, n);
}

const float *ef_sim_model(const ef_sim *s, size_t *n) { return ef_server_model(s->server, n); }
const ef_partition *ef_sim_partition(const ef_sim *s) { return &s->part_train; }
uint32_t ef_sim_malicious_count(const ef_sim *s) { return s->n_malicious; }
double ef_sim_time(const ef_sim *s) { return s->now; }
const ef_server *ef_sim_server(const ef_sim *s) { return s->server; }
