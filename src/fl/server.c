/*
 * The server round engine (see include/edgefl/server.h): client registry,
 * selection, task and model broadcast, update validation and aggregation
 * through an ef_strategy, deadlines, federated evaluation and FedBuff-style
 * asynchronous aggregation. Pure state machine: all input arrives through
 * ef_server_handle / ef_server_tick with the current time, all output goes
 * to the caller's outbox.
 */
#include <math.h>
#include <sodium.h>
#include <string.h>

#include "core/core_internal.h"
#include "edgefl/accountant.h"
#include "edgefl/rng.h"
#include "edgefl/server.h"
#include "fl_internal.h"
#include "server_internal.h"
#include "privacy/dp_internal.h"
#include "privacy/secagg_internal.h"

ef_server_config ef_server_defaults(void) {
    ef_server_config c = {0};
    c.rounds = 10;
    c.clients_per_round = 10;
    c.overselect = 1.0;
    c.min_updates = 1;
    c.buffer_k = 10;
    c.max_staleness = 10;
    c.staleness_exponent = 0.5;
    c.local_epochs = 1;
    c.batch = 32;
    c.lr = 0.05f;
    c.fed_eval_clients = 10;
    c.secagg_bits = 32;
    c.secagg_clip = 1.0;
    c.secagg_weight_cap = 1000.0;
    c.dp_delta = 1e-5;
    c.dp_mechanism = EF_DP_SKELLAM;
    c.dp_adaptive_quantile = 0.5;
    c.dp_min_survivors = 0.8;
    c.dp_adaptive_lr = 0.2;
    return c;
}

/* ---- client registry ------------------------------------------------------ */

client_rec *ef__server_find_client(ef_server *s, uint32_t id) {
    long i = ef__idmap_find(&s->ids, id, s->clients, sizeof *s->clients);
    return i < 0 ? NULL : &s->clients[i];
}

ef_status ef__server_add_client(ef_server *s, uint32_t id, client_rec **out) {
    if (s->n_clients == s->cap_clients) {
        size_t nc = s->cap_clients ? s->cap_clients * 2 : 64;
        client_rec *nv = ef_realloc(s->clients, nc * sizeof *nv);
        if (!nv) return EF_ERR_NOMEM;
        s->clients = nv;
        uint32_t *np = ef_realloc(s->pick, nc * sizeof *np);
        if (!np) return EF_ERR_NOMEM;
        s->pick = np;
        uint64_t *no = ef_realloc(s->order, nc * sizeof *no);
        if (!no) return EF_ERR_NOMEM;
        s->order = no;
        s->cap_clients = nc;
    }
    ef_status st = ef__idmap_put(&s->ids, id, s->n_clients, s->clients, sizeof *s->clients);
    if (st) return st;
    client_rec *c = &s->clients[s->n_clients++];
    memset(c, 0, sizeof *c);
    c->id = id;
    *out = c;
    return EF_OK;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Picks up to k idle clients (with training or evaluation data) at random.
 * The candidates are taken in client-id order, so the choice depends on the
 * seed and on who is idle, not on the order in which clients checked in (a
 * deployment's arrival order is not reproducible; the simulator's is). */
static size_t select_idle(ef_server *s, size_t k, int for_eval) {
    size_t n = 0;
    for (size_t i = 0; i < s->n_clients; i++) {
        const client_rec *c = &s->clients[i];
        if (c->state == C_IDLE && (for_eval ? c->n_eval : c->n_train) > 0)
            s->order[n++] = (uint64_t)c->id << 32 | i;
    }
    qsort(s->order, n, sizeof *s->order, cmp_u64);
    for (size_t i = 0; i < n; i++) s->pick[i] = (uint32_t)s->order[i];
    if (k > n) k = n;
    for (size_t i = 0; i < k; i++) { /* partial Fisher-Yates */
        size_t j = i + (size_t)ef_rng_below(&s->rng, n - i);
        uint32_t t = s->pick[i];
        s->pick[i] = s->pick[j];
        s->pick[j] = t;
    }
    return k;
}

/* ---- outgoing messages ---------------------------------------------------- */

static ef_status model_message(ef_server *s) {
    if (s->model_buf) return EF_OK;
    size_t plen = EF_MODEL_FIXED + s->n_params * 4;
    ef_buf *b = ef__msg_new(plen, s->sk != NULL);
    if (!b) return EF_ERR_NOMEM;
    uint8_t *p = b->data + EF_WIRE_HEADER;
    ef__wr32(p, s->version);
    ef__wr32(p + 4, 0);
    ef__wr64(p + 8, s->n_params);
    for (size_t i = 0; i < s->n_params; i++) ef__wrf32(p + EF_MODEL_FIXED + 4 * i, s->model[i]);
    ef_hash(s->hash, p + EF_MODEL_FIXED, s->n_params * 4);
    ef__msg_seal(b, EF_MSG_MODEL, s->cfg.job, s->version, EF_SERVER_ID, ++s->seq, 0, plen, s->sk);
    s->model_buf = b;
    return EF_OK;
}

/* Sends the current model ahead of a task and counts its bytes. Clients
 * keep a model only while they use it (a device cannot be assumed to keep
 * megabytes between tasks), so every task comes with its model. */
static ef_status send_model_to(ef_server *s, client_rec *c, ef_outbox *out) {
    ef_status st = model_message(s);
    if (st) return st;
    if ((st = ef_outbox_push(out, c->id, EF_MSG_MODEL, ef_buf_ref(s->model_buf))) != EF_OK) {
        ef_buf_unref(s->model_buf);
        return st;
    }
    s->rec.bytes_down += s->model_buf->len;
    return EF_OK;
}

static uint64_t task_seed(const ef_server *s, uint32_t id) {
    uint64_t x = s->cfg.seed ^ ((uint64_t)s->round << 32) ^ ((uint64_t)s->version << 48) ^ id;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* The TASK payload (EF_TASK_PAYLOAD bytes) for client c. */
static void write_task(ef_server *s, const client_rec *c, uint8_t *p) {
    memset(p, 0, EF_TASK_PAYLOAD);
    ef__wr32(p, s->version);
    memcpy(p + 4, s->hash, EF_HASH_BYTES);
    ef__wrf32(p + 36, (float)s->cfg.deadline_s);
    ef__wr16(p + 40, s->cfg.local_epochs);
    ef__wr16(p + 42, s->cfg.batch);
    ef__wrf32(p + 44, s->cfg.lr);
    ef__wrf32(p + 48, s->cfg.momentum);
    ef__wrf32(p + 52, s->prox_mu);
    ef__wr64(p + 56, task_seed(s, c->id));
}

/* Seals (and signs) the payload at b->data + EF_WIRE_HEADER and queues it
 * for client c. A TASK, SA_SETUP or EVAL message opens a task whose id is
 * its own seq; the other messages carry the id of c's current task. */
static ef_status send_buf(ef_server *s, client_rec *c, ef_msg_type type, ef_buf *b, size_t plen,
                          ef_outbox *out) {
    uint64_t seq = ++s->seq;
    if (type == EF_MSG_TASK || type == EF_MSG_SA_SETUP || type == EF_MSG_EVAL) c->task_id = seq;
    ef__msg_seal(b, type, s->cfg.job, s->round, EF_SERVER_ID, seq, c->task_id, plen, s->sk);
    ef_status st = ef_outbox_push(out, c->id, type, b);
    if (st != EF_OK) {
        ef_buf_unref(b);
        return st;
    }
    s->rec.bytes_down += b->len;
    return EF_OK;
}

static ef_status send_task(ef_server *s, double now, client_rec *c, ef_outbox *out) {
    ef_status st = send_model_to(s, c, out);
    if (st) return st;
    ef_buf *b = ef__msg_new(EF_TASK_PAYLOAD, s->sk != NULL);
    if (!b) return EF_ERR_NOMEM;
    write_task(s, c, b->data + EF_WIRE_HEADER);
    if ((st = send_buf(s, c, EF_MSG_TASK, b, EF_TASK_PAYLOAD, out)) != EF_OK) return st;
    s->rec.selected++;
    c->state = C_TRAINING;
    c->task_round = s->round;
    c->task_version = s->version;
    c->task_deadline = s->cfg.deadline_s > 0 ? now + s->cfg.deadline_s : INFINITY;
    return EF_OK;
}

static ef_status send_eval(ef_server *s, client_rec *c, ef_outbox *out) {
    ef_status st = send_model_to(s, c, out);
    if (st) return st;
    ef_buf *b = ef__msg_new(8 + EF_HASH_BYTES, s->sk != NULL);
    if (!b) return EF_ERR_NOMEM;
    uint8_t *p = b->data + EF_WIRE_HEADER;
    ef__wr32(p, s->version);
    ef__wr32(p + 4, 0);
    memcpy(p + 8, s->hash, EF_HASH_BYTES);
    if ((st = send_buf(s, c, EF_MSG_EVAL, b, 8 + EF_HASH_BYTES, out)) != EF_OK) return st;
    c->state = C_EVALUATING;
    c->task_version = s->version;
    return EF_OK;
}

/* ---- rounds --------------------------------------------------------------- */

static ef_status push_record(ef_server *s) {
    if (s->n_records == s->cap_records) {
        size_t nc = s->cap_records ? s->cap_records * 2 : 64;
        ef_round_record *nv = ef_realloc(s->records, nc * sizeof *nv);
        if (!nv) return EF_ERR_NOMEM;
        s->records = nv;
        s->cap_records = nc;
    }
    s->records[s->n_records++] = s->rec;
    return EF_OK;
}

static void open_record(ef_server *s, double now) {
    s->n_norms = 0;
    s->rec = ef_round_record_empty(s->round);
    s->rec.sim_start = now;
    s->loss_sum = s->loss_w = 0;
    s->st_sum = 0;
    s->spent = 0;
}

/* Sync: every selected client has answered (accepted or not), left or been
 * given up on. */
static int round_settled(const ef_server *s) {
    return s->rec.completed + s->rec.dropped + s->rec.late + s->spent >= s->rec.selected;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The round's record is complete: report it, store it, move on. */
static ef_status close_record(ef_server *s, double now) {
    s->rec.sim_end = now;
    if (s->n_norms > 0) {
        qsort(s->norms, s->n_norms, sizeof *s->norms, cmp_double);
        size_t h = s->n_norms / 2;
        s->rec.update_norm_median =
            s->n_norms % 2 ? s->norms[h] : 0.5 * (s->norms[h - 1] + s->norms[h]);
    }
    if (s->loss_w > 0) s->rec.train_loss = s->loss_sum / s->loss_w;
    if (s->on_round) s->on_round(s->user, &s->rec, s->model, s->n_params);
    ef_status st = push_record(s);
    if (st) return st;
    s->round++;
    s->rng_at_close = s->rng;
    if (s->round > s->cfg.rounds) s->ph = P_DONE;
    return EF_OK;
}

static ef_status aggregate(ef_server *s) {
    ef_status st = ef_strategy_apply(s->strat, s->model);
    if (st != EF_OK) return st; /* e.g. too few updates for Krum: model unchanged */
    s->version++;
    ef_buf_unref(s->model_buf);
    s->model_buf = NULL;
    s->rec.aggregated = 1;
    return EF_OK;
}

static ef_status sa_start(ef_server *s, double now, size_t k, ef_outbox *out);

/* DP: the round's sampling rate, and whether its release still fits the
 * budget; a run whose next round would exceed dp_target_epsilon ends here. */
static int dp_admit(ef_server *s, size_t selected) {
    if (!s->cfg.dp) return 1;
    double pop = s->cfg.dp_population ? (double)s->cfg.dp_population : (double)s->n_clients;
    s->dp_q = selected / (pop > selected ? pop : (double)selected);
    if (!(s->cfg.dp_target_epsilon > 0)) return 1;
    int exceeds = 0;
    double after = NAN;
    if (ef_accountant_would_exceed(s->acct, s->dp_q, s->cfg.dp_noise, 1, s->cfg.dp_delta,
                                   s->cfg.dp_target_epsilon, &exceeds, &after) != EF_OK)
        exceeds = 1;
    if (!exceeds) return 1;
    snprintf(s->stop_reason, sizeof s->stop_reason,
             "privacy budget: round %u would bring epsilon to %.4g, above the target %.4g "
             "(delta %g); stopping after %u rounds",
             s->round, after, s->cfg.dp_target_epsilon, s->cfg.dp_delta, s->round - 1);
    s->ph = P_DONE;
    return 0;
}

/* DP: mean_j = (sum_j + N(0, (z C)^2)) / clients_per_round, in place on a
 * float vector holding the sum; `noise` is 0 when the clients added it. */
static ef_status dp_noised_mean(ef_server *s, float *v, int noise) {
    if (noise) {
        ef_status st = ef__dp_gaussian(v, s->n_params, s->dp_stddev, &s->dp_rng);
        if (st != EF_OK) return st;
    }
    float inv = (float)(1.0 / s->cfg.clients_per_round);
    for (size_t j = 0; j < s->n_params; j++) v[j] *= inv;
    return EF_OK;
}

static ef_status start_round(ef_server *s, double now, ef_outbox *out) {
    if (s->ph == P_DONE) return EF_OK;
    size_t online = 0;
    for (size_t i = 0; i < s->n_clients; i++) online += s->clients[i].state != C_OFFLINE;
    /* min_clients gates the first round only: later rounds go ahead with
     * whoever is online (clients that dropped out come back by checking in) */
    if (online == 0 || (s->n_records == 0 && online < s->cfg.min_clients)) return EF_OK;
    size_t want = (size_t)ceil(s->cfg.clients_per_round * s->cfg.overselect);
    size_t k = select_idle(s, want, 0);
    if (k == 0) return EF_OK;
    if (!dp_admit(s, k)) return EF_OK;
    if (s->cfg.secagg) {
        if (k < 2) return EF_OK; /* secure aggregation needs two clients: wait for more */
        return sa_start(s, now, k, out);
    }
    open_record(s, now);
    ef_strategy_begin(s->strat);
    ef_status st;
    for (size_t i = 0; i < k; i++)
        if ((st = send_task(s, now, &s->clients[s->pick[i]], out)) != EF_OK) return st;
    s->deadline = s->cfg.deadline_s > 0 ? now + s->cfg.deadline_s : INFINITY;
    s->ph = P_TRAIN;
    return EF_OK;
}

static ef_status start_round(ef_server *s, double now, ef_outbox *out);

/* Closes the round's record and, unless the run is over, starts the next. */
static ef_status next_round(ef_server *s, double now, ef_outbox *out) {
    s->ph = P_WAIT;
    ef_status st = close_record(s, now);
    if (st != EF_OK || s->ph == P_DONE) return st;
    return start_round(s, now, out);
}

static ef_status finish_eval(ef_server *s, double now, ef_outbox *out) {
    for (size_t i = 0; i < s->n_clients; i++)
        if (s->clients[i].state == C_EVALUATING) s->clients[i].state = C_IDLE;
    if (s->ev_n > 0) {
        s->rec.fed_accuracy = (double)s->ev_correct / (double)s->ev_n;
        s->rec.fed_loss = s->ev_loss / (double)s->ev_n;
    }
    return next_round(s, now, out);
}

static ef_status finish_round(ef_server *s, double now, ef_outbox *out) {
    uint32_t outstanding = 0;
    for (size_t i = 0; i < s->n_clients; i++) {
        client_rec *c = &s->clients[i];
        if (c->state == C_TRAINING && c->task_round == s->round) {
            c->state = C_IDLE; /* its update, if any, will be stale */
            outstanding++;
        }
    }
    s->rec.late += outstanding;
    if (s->cfg.dp && !s->cfg.secagg && s->dp_count > 0 && s->rec.completed >= s->cfg.min_updates) {
        /* central DP: the noised mean of the clipped updates is the round's one update */
        float *mean = ef_malloc((s->n_params ? s->n_params : 1) * sizeof *mean);
        if (!mean) return EF_ERR_NOMEM;
        for (size_t j = 0; j < s->n_params; j++) mean[j] = (float)s->dp_sum[j];
        ef_status st = dp_noised_mean(s, mean, 1);
        if (st == EF_OK) st = ef_strategy_add(s->strat, mean, 1.0);
        ef_free(mean);
        if (st == EF_ERR_NOMEM) return st;
    }
    uint32_t below = s->dp_below, counted = s->dp_count;
    s->dp_count = s->dp_below = 0;
    if (s->cfg.dp) s->rec.dp_clip = s->adapt.clip;
    if (s->rec.completed >= s->cfg.min_updates) {
        ef_status st = aggregate(s);
        if (st == EF_ERR_NOMEM) return st;
        /* every released aggregate spends privacy */
        if (s->cfg.dp && s->rec.aggregated &&
            (st = ef_accountant_step(s->acct, s->dp_q, s->cfg.dp_noise, 1)) != EF_OK)
            return st;
    }
    if (s->cfg.dp) ef_accountant_epsilon(s->acct, s->cfg.dp_delta, &s->rec.epsilon, NULL);
    if (s->cfg.dp_adaptive && s->rec.aggregated && counted > 0) {
        /* the next round's C from this round's noised fraction within C */
        uint32_t m = counted > s->cfg.clients_per_round ? counted : s->cfg.clients_per_round;
        ef_status st = ef__dp_adaptive_update(&s->adapt, below, m, &s->dp_rng, NULL);
        if (st != EF_OK) return st;
        s->dp_stddev = s->dp_zdelta * s->adapt.clip;
    }
    if (s->cfg.fed_eval_every && s->round % s->cfg.fed_eval_every == 0) {
        size_t k = select_idle(s, s->cfg.fed_eval_clients, 1);
        s->ev_n = s->ev_correct = 0;
        s->ev_loss = 0;
        s->ev_pending = (uint32_t)k;
        for (size_t i = 0; i < k; i++) {
            ef_status st = send_eval(s, &s->clients[s->pick[i]], out);
            if (st) return st;
        }
        if (k > 0) {
            s->ph = P_EVAL;
            s->deadline = s->cfg.deadline_s > 0 ? now + s->cfg.deadline_s : INFINITY;
            return EF_OK;
        }
    }
    return next_round(s, now, out);
}

static ef_status refuse(ef_server *s, ef_status st);

/* ---- secure aggregation rounds ------------------------------------------- */

static void sa_reset(ef_server *s) {
    sa_round *a = &s->sa;
    ef_sa_server_free(a->srv);
    ef_free(a->part);
    ef_free(a->heard);
    ef_free(a->gone);
    ef_free(a->ratio);
    a->srv = NULL;
    a->part = NULL;
    a->heard = a->gone = NULL;
    a->ratio = NULL;
    a->stage = 0;
    a->waiting = 0;
}

static double sa_stage_timeout(const ef_server *s) {
    if (s->cfg.secagg_stage_timeout_s > 0) return s->cfg.secagg_stage_timeout_s;
    return s->cfg.deadline_s > 0 ? s->cfg.deadline_s : 60.0;
}

static int sa_in(const ef_server *s, uint32_t i) { return ef_sa_server_alive(s->sa.srv, i); }

/* Starts waiting for `stage` from every participant still in. */
static void sa_wait(ef_server *s, double now, int stage) {
    sa_round *a = &s->sa;
    a->stage = stage;
    a->waiting = 0;
    for (uint32_t i = 0; i < a->p.n; i++) {
        a->heard[i] = 0;
        a->waiting += (uint32_t)(sa_in(s, i) && !a->gone[i]);
    }
    double span = stage == 3 ? s->cfg.deadline_s : sa_stage_timeout(s);
    s->deadline = span > 0 ? now + span : INFINITY;
}

/* SA_SETUP: the task, then this round's secure-aggregation settings. */
static ef_status send_sa_setup(ef_server *s, client_rec *c, uint32_t index, ef_outbox *out) {
    ef_status st = send_model_to(s, c, out);
    if (st) return st;
    ef_buf *b = ef__msg_new(EF_SA_SETUP_PAYLOAD, s->sk != NULL);
    if (!b) return EF_ERR_NOMEM;
    uint8_t *p = b->data + EF_WIRE_HEADER;
    write_task(s, c, p);
    uint8_t *q = p + EF_TASK_PAYLOAD;
    memset(q, 0, EF_SA_SETUP_PAYLOAD - EF_TASK_PAYLOAD);
    const sa_round *a = &s->sa;
    ef__wr32(q, index);
    ef__wr32(q + 4, a->p.n);
    ef__wr32(q + 8, a->p.k);
    ef__wr32(q + 12, a->p.t);
    ef__wr32(q + 16, (uint32_t)a->p.bits);
    ef__wr32(q + 20, a->q.levels);
    ef__wr32(q + 24, a->dp_kind);
    ef__wr32(q + 28, a->p.no_mask ? EF_SA_FLAG_NO_MASK : 0);
    ef__wrf64(q + 32, a->q.clip);
    ef__wrf64(q + 40, s->cfg.secagg_weight_cap);
    ef__wrf64(q + 48, s->cfg.dp ? s->cfg.dp_clip : 0.0);
    ef__wrf64(q + 56, a->dp_param);
    if ((st = send_buf(s, c, EF_MSG_SA_SETUP, b, EF_SA_SETUP_PAYLOAD, out)) != EF_OK) return st;
    s->rec.selected++;
    c->state = C_TRAINING;
    c->task_round = s->round;
    c->task_version = s->version;
    c->task_deadline = INFINITY;
    c->sa_index = index;
    return EF_OK;
}

/* Picks the round's participants (already shuffled by select_idle) and
 * sends each its SA_SETUP. */
static ef_status sa_start(ef_server *s, double now, size_t k, ef_outbox *out) {
    sa_round *a = &s->sa;
    sa_reset(s);
    uint32_t n = (uint32_t)k;
    a->p.n = n;
    a->p.k = s->cfg.secagg_neighbors ? s->cfg.secagg_neighbors : ef_sa_default_k(n);
    if (a->p.k >= n - 1) a->p.k = n - 1;
    else a->p.k -= a->p.k % 2; /* the ring takes k/2 on each side */
    if (a->p.k < 2) a->p.k = n - 1;
    uint32_t holders = ef_sa_degree(&a->p) + 1;
    a->p.t = s->cfg.secagg_threshold ? s->cfg.secagg_threshold : ef_sa_default_t(n, a->p.k);
    if (a->p.t > holders) a->p.t = holders;
    a->p.bits = s->cfg.secagg_bits;
    a->p.d = s->n_params;
    a->p.round = ((uint64_t)s->cfg.job << 32) ^ s->round;
    a->p.no_mask = s->cfg.secagg == EF_SECAGG_PLAIN;
    /* distributed DP: the clients' noise needs room in the modulus beside
     * the n vectors; its total stddev is z C scale = z C L / 2R, so 6 z C / R
     * more summands of L cover 12 standard deviations */
    uint32_t room = 0;
    a->dp_kind = 0;
    a->dp_param = 0.0;
    if (s->cfg.dp == EF_DP_DISTRIBUTED)
        room = (uint32_t)ceil(6.0 * s->cfg.dp_noise * s->cfg.dp_clip / s->cfg.secagg_clip) + 1;
    ef_status st = ef__quant_init(&a->q, s->cfg.secagg_clip, s->cfg.secagg_bits, n + room);
    if (st != EF_OK) return st;
    if (s->cfg.dp == EF_DP_DISTRIBUTED) {
        /* sized so that dp_min survivors' noise adds up to the target; more
         * survivors only add noise, fewer would release too little */
        double scale = a->q.levels / (2.0 * a->q.clip);
        a->dp_min = (uint32_t)ceil(s->cfg.dp_min_survivors * n);
        if (a->dp_min < a->p.t) a->dp_min = a->p.t;
        if (a->dp_min > n) a->dp_min = n;
        a->dp_kind = s->cfg.dp_mechanism == EF_DP_DGAUSS ? 2 : 1;
        st = a->dp_kind == 2 ? ef__dp_calibrate_dgauss(s->cfg.dp_noise, s->cfg.dp_clip, scale, a->dp_min, &a->dp_param)
                             : ef__dp_calibrate_skellam(s->cfg.dp_noise, s->cfg.dp_clip, scale, a->dp_min, &a->dp_param);
        if (st != EF_OK) return st;
    }
    a->part = ef_malloc(n * sizeof *a->part);
    a->heard = ef_calloc(n, 1);
    a->gone = ef_calloc(n, 1);
    a->ratio = ef_calloc(n, sizeof *a->ratio);
    if (!a->part || !a->heard || !a->gone || !a->ratio) return EF_ERR_NOMEM;
    if ((st = ef_sa_server_new(&a->srv, &a->p)) != EF_OK) return st;
    open_record(s, now);
    ef_strategy_begin(s->strat);
    for (uint32_t i = 0; i < n; i++) {
        a->part[i] = s->pick[i];
        if ((st = send_sa_setup(s, &s->clients[s->pick[i]], i, out)) != EF_OK) return st;
    }
    s->ph = P_SA;
    sa_wait(s, now, 1);
    return EF_OK;
}

/* Queues the SecAgg+ payload `pl` for participant i's client. */
static ef_status sa_send(ef_server *s, uint32_t i, ef_msg_type type, const uint8_t *pl,
                         size_t plen, ef_outbox *out) {
    ef_buf *b = ef__msg_new(plen, s->sk != NULL);
    if (!b) return EF_ERR_NOMEM;
    memcpy(b->data + EF_WIRE_HEADER, pl, plen);
    return send_buf(s, &s->clients[s->sa.part[i]], type, b, plen, out);
}

/* The sum is known: dequantize, divide by the included weights, aggregate. */
static ef_status sa_finish(ef_server *s, double now, ef_outbox *out) {
    sa_round *a = &s->sa;
    const uint32_t *sum;
    uint32_t n_summed = 0, ns;
    double wsum = 0.0;
    for (uint32_t i = 0; i < a->p.n; i++) {
        if (!ef_sa_server_included(a->srv, i)) continue;
        n_summed++;
        wsum += a->ratio[i];
        client_rec *c = &s->clients[a->part[i]];
        if (c->state == C_TRAINING && c->task_round == s->round) c->state = C_IDLE;
    }
    ef_status st = ef_sa_server_result(a->srv, &sum, &ns);
    if (st != EF_OK) return st;
    if (ns != n_summed)
        return ef__fail(EF_ERR_INTERNAL, "secure aggregation: %u summed, %u included", ns, n_summed);
    if (s->cfg.sa_audit) {
        uint32_t *ids = ef_malloc((n_summed ? n_summed : 1) * sizeof *ids);
        if (!ids) return EF_ERR_NOMEM;
        uint32_t k = 0;
        for (uint32_t i = 0; i < a->p.n; i++)
            if (ef_sa_server_included(a->srv, i)) ids[k++] = s->clients[a->part[i]].id;
        s->cfg.sa_audit(s->cfg.sa_audit_user, s->round, sum, s->n_params, a->p.bits, ids, k);
        ef_free(ids);
    }
    if (a->dp_kind && n_summed < a->dp_min) {
        /* the clients' noise was sized for dp_min of them: releasing this sum
         * would spend more privacy than the accountant counts */
        snprintf(s->rec.note, sizeof s->rec.note,
                 "distributed DP: %u survivors, the noise was sized for at least %u: the sum "
                 "is not released", n_summed, a->dp_min);
        n_summed = 0;
    }
    if (n_summed > 0 && wsum > 0) {
        float *mean = ef_malloc((s->n_params ? s->n_params : 1) * sizeof *mean);
        if (!mean) return EF_ERR_NOMEM;
        if (a->dp_kind) {
            /* the clients' zero-mean noise may take a coordinate's sum below 0
             * or past n L: read it as the signed distance from n L / 2 */
            uint32_t mm = ef__mod_mask(a->p.bits);
            uint64_t mod = (uint64_t)mm + 1;
            uint32_t mid = (uint32_t)(((uint64_t)n_summed * a->q.levels) / 2);
            double step = 2.0 * a->q.clip / a->q.levels;
            for (size_t j = 0; j < s->n_params; j++) {
                int64_t dev = (int64_t)((sum[j] - mid) & mm);
                if ((uint64_t)dev >= mod / 2) dev -= (int64_t)mod;
                mean[j] = (float)(((double)mid + (double)dev) * step - n_summed * a->q.clip);
            }
        } else {
            ef__dequantize_sum(mean, sum, s->n_params, n_summed, &a->q);
        }
        if (s->cfg.dp) {
            st = dp_noised_mean(s, mean, s->cfg.dp == EF_DP_CENTRAL);
        } else {
            float inv = (float)(1.0 / wsum);
            for (size_t j = 0; j < s->n_params; j++) mean[j] *= inv;
        }
        if (st == EF_OK) st = ef_strategy_add(s->strat, mean, 1.0);
        ef_free(mean);
        if (st == EF_ERR_NOMEM) return st;
        if (st != EF_OK) s->rec.rejected++;
    }
    sa_reset(s);
    s->ph = P_TRAIN; /* finish_round aggregates and moves on */
    return finish_round(s, now, out);
}

/* The round cannot go on (too few participants left): keep the model. */
static ef_status sa_abort(ef_server *s, double now, ef_outbox *out) {
    ef_strategy_begin(s->strat); /* nothing of this round is aggregated */
    snprintf(s->rec.note, sizeof s->rec.note, "secure aggregation aborted: %s",
             ef_sa_server_abort_reason(s->sa.srv));
    s->rec.completed = 0;
    /* the participants still in are not late: the round ended under them */
    for (uint32_t i = 0; i < s->sa.p.n; i++) {
        client_rec *c = &s->clients[s->sa.part[i]];
        if (c->state == C_TRAINING && c->task_round == s->round) c->state = C_IDLE;
    }
    sa_reset(s);
    s->ph = P_TRAIN;
    return finish_round(s, now, out);
}

/* Closes the current stage and starts the next (or finishes the round). */
static ef_status sa_close(ef_server *s, double now, ef_outbox *out) {
    sa_round *a = &s->sa;
    ef_status st = ef_sa_server_close(a->srv);
    if (st != EF_OK) {
        if (st == EF_ERR_NOMEM) return st;
        return sa_abort(s, now, out);
    }
    int next = ef_sa_server_stage(a->srv);
    if (next == 5) return sa_finish(s, now, out);
    static const ef_msg_type type[5] = {0, 0, EF_MSG_SA_KEYS, EF_MSG_SA_FORWARD, EF_MSG_SA_UNMASK};
    for (uint32_t i = 0; i < a->p.n; i++) {
        if (!ef_sa_server_alive(a->srv, i)) continue;
        uint8_t *pl;
        size_t plen;
        if ((st = ef_sa_server_message_for(a->srv, i, &pl, &plen)) != EF_OK) return st;
        st = sa_send(s, i, type[next], pl, plen, out);
        ef_free(pl);
        if (st != EF_OK) return st;
    }
    sa_wait(s, now, next);
    return EF_OK;
}

/* A participant answered (or can no longer answer) the current stage. */
static ef_status sa_answered(ef_server *s, double now, uint32_t i, ef_outbox *out) {
    sa_round *a = &s->sa;
    if (a->heard[i]) return EF_OK;
    a->heard[i] = 1;
    if (a->waiting > 0) a->waiting--;
    if (a->waiting == 0) return sa_close(s, now, out);
    return EF_OK;
}

static ef_status on_sa_message(ef_server *s, double now, const ef_msg *m, size_t len,
                               client_rec *c, ef_outbox *out) {
    sa_round *a = &s->sa;
    if (s->ph != P_SA || m->round != s->round || c->state != C_TRAINING ||
        c->task_round != s->round || m->task != c->task_id || c->sa_index >= a->p.n ||
        a->part[c->sa_index] != (uint32_t)(c - s->clients))
        return refuse(s, ef__fail(EF_ERR_STATE, "%s from client %u for round %u: it has no "
                                                "secure aggregation task open",
                                  ef_msg_type_name(m->type), c->id, m->round));
    uint32_t i = c->sa_index;
    static const int stage_of[EF_MSG_LAST + 1] = {[EF_MSG_SA_ADVERTISE] = 1, [EF_MSG_SA_SHARES] = 2,
                                     [EF_MSG_SA_MASKED] = 3, [EF_MSG_SA_REVEAL] = 4};
    if (stage_of[m->type] != a->stage || a->heard[i] || !sa_in(s, i))
        return refuse(s, ef__fail(EF_ERR_STATE, "%s from client %u in secure aggregation stage %d",
                                  ef_msg_type_name(m->type), c->id, a->stage));
    ef_status st;
    switch (m->type) {
    case EF_MSG_SA_ADVERTISE: st = ef_sa_server_on_advertise(a->srv, i, m->payload, m->payload_len); break;
    case EF_MSG_SA_SHARES: st = ef_sa_server_on_shares(a->srv, i, m->payload, m->payload_len); break;
    case EF_MSG_SA_REVEAL: st = ef_sa_server_on_unmask(a->srv, i, m->payload, m->payload_len); break;
    default: { /* EF_MSG_SA_MASKED */
        ef_sa_masked sm;
        if ((st = ef_decode_sa_masked(m, &sm)) != EF_OK) break;
        if (sm.version != c->task_version || sm.n != s->n_params) {
            st = ef__fail(EF_ERR_FORMAT, "masked update from client %u: version %u with %llu "
                                         "words, the task has version %u and %zu parameters",
                          c->id, sm.version, (unsigned long long)sm.n, c->task_version, s->n_params);
            break;
        }
        uint32_t *y = a->words;
        if (!y && !(y = a->words = ef_malloc((s->n_params ? s->n_params : 1) * sizeof *y)))
            return EF_ERR_NOMEM;
        for (size_t j = 0; j < s->n_params; j++) y[j] = ef__rd32(sm.raw + 4 * j);
        if ((st = ef_sa_server_on_masked(a->srv, i, y)) != EF_OK) break;
        double cap = s->cfg.secagg_weight_cap;
        a->ratio[i] = s->cfg.dp ? 1.0 : (sm.n_examples < cap ? sm.n_examples : cap) / cap;
        s->rec.completed++;
        s->loss_sum += (double)sm.train_loss * sm.n_examples;
        s->loss_w += sm.n_examples;
        break;
    }
    }
    if (st != EF_OK) {
        if (st == EF_ERR_NOMEM) return st;
        return refuse(s, st); /* it stays silent for this stage: dropped at the close */
    }
    s->rec.bytes_up += len;
    return sa_answered(s, now, i, out);
}

/* Client c, a participant, left or restarted during the protocol: it will
 * not answer again, so no stage waits for it. What it already sent stays
 * (SecAgg+ includes a client that dropped after its masked update). */
static ef_status sa_leave(ef_server *s, double now, client_rec *c, ef_outbox *out) {
    sa_round *a = &s->sa;
    uint32_t i = c->sa_index;
    if (i >= a->p.n || a->part[i] != (uint32_t)(c - s->clients) || a->gone[i]) return EF_OK;
    a->gone[i] = 1;
    s->rec.dropped++;
    if (a->heard[i] || !sa_in(s, i)) return EF_OK;
    if (a->waiting > 0) a->waiting--;
    if (a->waiting == 0) return sa_close(s, now, out);
    return EF_OK;
}

/* ---- asynchronous mode ---------------------------------------------------- */

/* Keeps clients_per_round clients training. */
static ef_status refill(ef_server *s, double now, ef_outbox *out) {
    if (s->ph == P_DONE) return EF_OK;
    size_t online = 0;
    for (size_t i = 0; i < s->n_clients; i++) online += s->clients[i].state != C_OFFLINE;
    if (s->ph == P_WAIT) {
        if (online == 0 || (s->n_records == 0 && online < s->cfg.min_clients)) return EF_OK;
        s->ph = P_TRAIN;
        open_record(s, now);
        ef_strategy_begin(s->strat);
    }
    if (s->training >= s->cfg.clients_per_round) return EF_OK;
    size_t k = select_idle(s, s->cfg.clients_per_round - s->training, 0);
    for (size_t i = 0; i < k; i++) {
        ef_status st = send_task(s, now, &s->clients[s->pick[i]], out);
        if (st) return st;
        s->training++;
    }
    return EF_OK;
}

static ef_status async_accept(ef_server *s, double now, ef_outbox *out) {
    if (ef_strategy_count(s->strat) < s->cfg.buffer_k) return refill(s, now, out);
    ef_status st = aggregate(s);
    if (st == EF_ERR_NOMEM) return st;
    s->rec.staleness_mean = s->rec.completed ? s->st_sum / s->rec.completed : NAN;
    if ((st = close_record(s, now)) != EF_OK) return st;
    if (s->ph == P_DONE) {
        for (size_t i = 0; i < s->n_clients; i++)
            if (s->clients[i].state == C_TRAINING) s->clients[i].state = C_IDLE;
        s->training = 0;
        return EF_OK;
    }
    open_record(s, now);
    ef_strategy_begin(s->strat);
    return refill(s, now, out);
}

/* ---- message handling ----------------------------------------------------- */

static ef_status refuse(ef_server *s, ef_status st) {
    s->refused++;
    s->rec.rejected++;
    return st;
}

/* The n_params floats of a message, read in place when they are aligned on
 * a little-endian host, else copied into *tmp (freed by the caller; NULL
 * when nothing was copied). NULL on OOM. */
static const float *message_floats(const ef_server *s, const uint8_t *raw, float **tmp) {
    *tmp = NULL;
    if (((uintptr_t)raw & 3) == 0 && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
        return (const float *)(const void *)raw;
    if (!(*tmp = ef_malloc((s->n_params ? s->n_params : 1) * sizeof(float)))) return NULL;
    ef_wire_floats(*tmp, raw, s->n_params);
    return *tmp;
}

static ef_status on_update(ef_server *s, double now, const ef_msg *m, size_t len,
                           client_rec *c, ef_outbox *out) {
    ef_update u;
    ef_status st = ef_decode_update(m, &u);
    if (st) return refuse(s, st);
    if (!s->cfg.async && (m->round < s->round || (m->round == s->round && s->ph != P_TRAIN))) {
        /* a straggler of a closed round (already counted as late there),
         * whether or not the client holds a task of the current round, or
         * one arriving during the round's evaluation: not this round's */
        s->refused++;
        if (m->round == s->round && s->ph == P_WAIT)
            /* the round has not begun: an answer to a task sent before a
             * restart (ef_server_restore), not a straggler */
            return ef__fail(EF_ERR_STATE, "update from client %u for round %u, which has not "
                                          "started: a task from before a restart (stale)",
                            c->id, m->round);
        return ef__fail(EF_ERR_STATE, "update from client %u for closed round %u", c->id,
                        m->round);
    }
    if (c->state != C_TRAINING || u.version != c->task_version || m->task != c->task_id ||
        (!s->cfg.async && (m->round != s->round || c->task_round != s->round || s->ph != P_TRAIN)))
        return refuse(s, ef__fail(EF_ERR_STATE, "update from client %u for round %u, version %u: "
                                                "no such task open (stale or duplicate)",
                                  c->id, m->round, u.version));
    if (u.n != s->n_params)
        return refuse(s, ef__fail(EF_ERR_FORMAT, "update from client %u has %llu values, the model "
                                                 "has %zu", c->id, (unsigned long long)u.n,
                                  s->n_params));
    uint32_t staleness = s->version - c->task_version;
    double weight = (double)u.n_examples;
    if (s->cfg.async) {
        if (staleness > s->cfg.max_staleness) {
            c->state = C_IDLE;
            s->training--;
            s->refused++;
            s->rec.rejected++;
            st = refill(s, now, out);
            if (st) return st;
            return ef__fail(EF_ERR_STATE, "update from client %u is %u versions stale (bound %u)",
                            c->id, staleness, s->cfg.max_staleness);
        }
        weight *= ef_staleness_weight(staleness, s->cfg.staleness_exponent);
    }
    float *tmp;
    const float *delta = message_floats(s, u.raw, &tmp);
    if (!delta) return EF_ERR_NOMEM;
    if (s->n_norms == s->cap_norms) {
        size_t nc = s->cap_norms ? 2 * s->cap_norms : 64;
        double *nv = ef_realloc(s->norms, nc * sizeof *nv);
        if (!nv) {
            ef_free(tmp);
            return EF_ERR_NOMEM;
        }
        s->norms = nv, s->cap_norms = nc;
    }
    double unorm = ef__dp_l2_norm(delta, s->n_params);
    if (s->cfg.dp) {
        /* DP-FedAvg: clip to C, weight 1; finish_round adds the noise */
        float *cl = tmp ? tmp : ef_malloc((s->n_params ? s->n_params : 1) * sizeof *cl);
        if (!cl) return EF_ERR_NOMEM;
        if (cl != delta) memcpy(cl, delta, s->n_params * sizeof *cl);
        double norm = ef__dp_clip_l2(cl, s->n_params, s->adapt.clip);
        if (isnan(norm)) {
            st = ef__fail(EF_ERR_INVALID, "update from client %u has a non-finite value", c->id);
        } else {
            for (size_t j = 0; j < s->n_params; j++)
                s->dp_sum[j] = s->dp_count ? s->dp_sum[j] + cl[j] : (double)cl[j];
            s->dp_count++;
            s->dp_below += norm <= s->adapt.clip;
            st = EF_OK;
        }
        if (cl != tmp) ef_free(cl);
    } else {
        st = ef_strategy_add(s->strat, delta, weight);
    }
    ef_free(tmp);
    c->state = C_IDLE;
    if (s->cfg.async) s->training--;
    if (st == EF_OK && isfinite(unorm)) s->norms[s->n_norms++] = unorm;
    if (st != EF_OK) {
        if (st == EF_ERR_NOMEM) return st;
        st = refuse(s, st);
        ef_status r = EF_OK;
        if (s->cfg.async) {
            r = refill(s, now, out);
        } else {
            s->spent++; /* its answer, although refused, ends its task */
            if (round_settled(s)) r = finish_round(s, now, out);
        }
        return r ? r : st;
    }
    s->rec.completed++;
    s->rec.bytes_up += len;
    s->loss_sum += (double)u.train_loss * u.n_examples;
    s->loss_w += u.n_examples;
    if (s->cfg.async) {
        s->st_sum += staleness;
        if (staleness > s->rec.staleness_max) s->rec.staleness_max = staleness;
        return async_accept(s, now, out);
    }
    if (s->rec.completed >= s->cfg.clients_per_round || round_settled(s))
        return finish_round(s, now, out);
    return EF_OK;
}

/* A scale-out worker's partial aggregate: every entry must answer an open
 * task of this round, or the whole partial is refused (its clients' updates
 * are then late or stale anyway: the worker only batches updates whose task
 * it saw the server send). */
static ef_status on_partial(ef_server *s, double now, const ef_msg *m, size_t len,
                            client_rec *w, ef_outbox *out) {
    ef_partial pa;
    ef_status st = ef_decode_partial(m, &pa);
    if (st) return refuse(s, st);
    if (s->cfg.async || s->cfg.secagg || s->cfg.dp ||
        ef_strategy_keeps_updates(ef_strategy_get_config(s->strat)->kind))
        return refuse(s, ef__fail(EF_ERR_UNSUPPORTED, "partial from worker %u: partial aggregates "
                                                      "need synchronous rounds, a mean-based "
                                                      "strategy, no secure aggregation and no DP",
                                  w->id));
    if (s->ph != P_TRAIN || m->round != s->round || pa.version != s->version) {
        s->refused++;
        s->rec.rejected += m->round == s->round;
        return ef__fail(EF_ERR_STATE, "partial from worker %u for round %u, version %u: not the "
                                      "open round (%u)", w->id, m->round, pa.version, s->round);
    }
    if (pa.n != s->n_params)
        return refuse(s, ef__fail(EF_ERR_FORMAT, "partial from worker %u has %llu values, the "
                                                 "model has %zu", w->id,
                                  (unsigned long long)pa.n, s->n_params));
    double weight = 0;
    for (uint32_t i = 0; i < pa.count; i++) {
        ef_partial_entry e;
        ef_partial_get(&pa, i, &e);
        client_rec *c = ef__server_find_client(s, e.client);
        if (!c || c->aggregator || c->state != C_TRAINING || c->task_round != s->round ||
            c->task_id != e.task || c->task_version != s->version)
            return refuse(s, ef__fail(EF_ERR_STATE, "partial from worker %u: client %u has no "
                                                    "open task %llu", w->id, e.client,
                                      (unsigned long long)e.task));
        if (s->cfg.authenticate && e.seq <= c->last_seq)
            return refuse(s, ef__fail(EF_ERR_AUTH, "partial from worker %u: client %u's update "
                                                   "replayed (counter %llu)", w->id, e.client,
                                      (unsigned long long)e.seq));
        weight += e.n_examples;
    }
    float *tmp;
    const float *mean = message_floats(s, pa.raw, &tmp);
    if (!mean) return EF_ERR_NOMEM;
    st = ef_strategy_add(s->strat, mean, weight);
    ef_free(tmp);
    if (st == EF_ERR_NOMEM) return st;
    if (st != EF_OK) return refuse(s, st); /* the tasks stay open: the deadline settles them */
    for (uint32_t i = 0; i < pa.count; i++) {
        ef_partial_entry e;
        ef_partial_get(&pa, i, &e);
        client_rec *c = ef__server_find_client(s, e.client);
        c->state = C_IDLE;
        if (e.seq > c->last_seq) c->last_seq = e.seq;
    }
    s->rec.completed += pa.count;
    s->rec.bytes_up += len;
    s->loss_sum += pa.loss_sum;
    s->loss_w += weight;
    if (s->rec.completed >= s->cfg.clients_per_round || round_settled(s))
        return finish_round(s, now, out);
    return EF_OK;
}

static ef_status on_eval_result(ef_server *s, double now, const ef_msg *m, size_t len,
                                client_rec *c, ef_outbox *out) {
    ef_eval_result r;
    ef_status st = ef_decode_eval_result(m, &r);
    if (st) return refuse(s, st);
    if (m->round < s->round) { /* after its round's evaluation closed: not this round's */
        s->refused++;
        return ef__fail(EF_ERR_STATE, "evaluation result from client %u for closed round %u",
                        c->id, m->round);
    }
    if (s->ph != P_EVAL || c->state != C_EVALUATING || r.version != s->version ||
        m->task != c->task_id)
        return refuse(s, ef__fail(EF_ERR_STATE, "evaluation result from client %u not expected",
                                  c->id));
    c->state = C_IDLE;
    s->rec.bytes_up += len;
    s->ev_n += r.n_examples;
    s->ev_correct += r.correct;
    s->ev_loss += r.loss_sum;
    if (--s->ev_pending == 0) return finish_eval(s, now, out);
    return EF_OK;
}

/* Client c lost its task, if any, and is `after` from now on: C_OFFLINE
 * when it left, C_IDLE when it restarted (then a round its loss closes may
 * select it at once). */
static ef_status on_leave(ef_server *s, double now, client_rec *c, cstate after, ef_outbox *out) {
    cstate was = (cstate)c->state;
    c->state = (uint8_t)after;
    if (was == C_TRAINING && s->ph == P_SA && c->task_round == s->round)
        return sa_leave(s, now, c, out);
    if (was == C_TRAINING) {
        if (s->cfg.async) {
            s->rec.dropped++;
            s->training--;
            return refill(s, now, out);
        }
        if (c->task_round == s->round && s->ph == P_TRAIN) {
            s->rec.dropped++;
            if (round_settled(s)) return finish_round(s, now, out);
        }
    } else if (was == C_EVALUATING && s->ph == P_EVAL) {
        if (--s->ev_pending == 0) return finish_eval(s, now, out);
    }
    return EF_OK;
}

ef_status ef_server_handle(ef_server *s, double now, const uint8_t *buf, size_t len,
                           ef_outbox *out) {
    ef_msg m;
    ef_status st = ef_wire_decode(buf, len, s->cfg.max_message, &m);
    if (st) return refuse(s, st);
    if (m.job != s->cfg.job)
        return refuse(s, ef__fail(EF_ERR_STATE, "message for job %llu, this server runs job %llu",
                                  (unsigned long long)m.job, (unsigned long long)s->cfg.job));
    client_rec *c = ef__server_find_client(s, m.sender);
    if (s->cfg.authenticate &&
        (st = ef__auth_incoming(buf, &m, c && c->has_pk ? c->pk : NULL,
                                c ? &c->last_seq : NULL)) != EF_OK)
        return refuse(s, st);
    if (c && c->aggregator) {
        if (m.type == EF_MSG_PARTIAL) return on_partial(s, now, &m, len, c, out);
        return refuse(s, ef__fail(EF_ERR_STATE, "%s from aggregator worker %u: workers send "
                                                "partial aggregates only",
                                  ef_msg_type_name(m.type), c->id));
    }
    if (m.type == EF_MSG_CHECKIN) {
        ef_checkin ci;
        if ((st = ef_decode_checkin(&m, &ci)) != EF_OK) return refuse(s, st);
        if (m.sender >= EF_BROADCAST_ID)
            return refuse(s, ef__fail(EF_ERR_FORMAT, "checkin with reserved id %u", m.sender));
        if (!c && (st = ef__server_add_client(s, m.sender, &c)) != EF_OK) return st;
        c->n_train = ci.n_train;
        c->n_eval = ci.n_eval;
        if (c->state == C_TRAINING || c->state == C_EVALUATING) {
            /* it restarted and lost its task; it is idle again before its
             * loss can close the round, so the next round may select it */
            if ((st = on_leave(s, now, c, C_IDLE, out)) != EF_OK) return st;
        } else {
            c->state = C_IDLE;
        }
        if (s->ph == P_WAIT || (s->cfg.async && s->ph == P_TRAIN)) {
            if (s->cfg.async) return refill(s, now, out);
            return start_round(s, now, out);
        }
        return EF_OK;
    }
    if (!c)
        return refuse(s, ef__fail(EF_ERR_STATE, "%s from unknown client %u",
                                  ef_msg_type_name(m.type), m.sender));
    switch (m.type) {
    case EF_MSG_UPDATE: return on_update(s, now, &m, len, c, out);
    case EF_MSG_SA_ADVERTISE:
    case EF_MSG_SA_SHARES:
    case EF_MSG_SA_MASKED:
    case EF_MSG_SA_REVEAL: return on_sa_message(s, now, &m, len, c, out);
    case EF_MSG_EVAL_RESULT: return on_eval_result(s, now, &m, len, c, out);
    case EF_MSG_LEAVE: {
        uint32_t reason;
        if ((st = ef_decode_leave(&m, &reason)) != EF_OK) return refuse(s, st);
        return on_leave(s, now, c, C_OFFLINE, out);
    }
    default:
        return refuse(s, ef__fail(EF_ERR_STATE, "a server does not accept %s messages",
                                  ef_msg_type_name(m.type)));
    }
}

ef_status ef_server_tick(ef_server *s, double now, ef_outbox *out) {
    if (s->ph == P_DONE) return EF_OK;
    if (s->cfg.async) {
        int freed = 0;
        for (size_t i = 0; i < s->n_clients; i++) {
            client_rec *c = &s->clients[i];
            if (c->state == C_TRAINING && c->task_deadline <= now) {
                c->state = C_IDLE;
                s->training--;
                s->rec.late++;
                freed = 1;
            }
        }
        if (freed || s->ph == P_WAIT) return refill(s, now, out);
        return EF_OK;
    }
    if (s->ph == P_WAIT) return start_round(s, now, out);
    if (now >= s->deadline) {
        if (s->ph == P_SA) return sa_close(s, now, out);
        if (s->ph == P_TRAIN) return finish_round(s, now, out);
        if (s->ph == P_EVAL) return finish_eval(s, now, out);
    }
    return EF_OK;
}

double ef_server_next_timer(const ef_server *s) {
    if (s->ph == P_DONE) return INFINITY;
    if (s->cfg.async) {
        double t = INFINITY;
        for (size_t i = 0; i < s->n_clients; i++)
            if (s->clients[i].state == C_TRAINING && s->clients[i].task_deadline < t)
                t = s->clients[i].task_deadline;
        return t;
    }
    return (s->ph == P_TRAIN || s->ph == P_EVAL || s->ph == P_SA) ? s->deadline : INFINITY;
}

/* ---- construction --------------------------------------------------------- */

static ef_status check_config(const ef_server_config *c) {
    if (c->rounds == 0) return ef__fail(EF_ERR_INVALID, "server: rounds must be >= 1");
    if (c->clients_per_round == 0)
        return ef__fail(EF_ERR_INVALID, "server: clients per round must be >= 1");
    if (!(c->overselect >= 1.0) || !isfinite(c->overselect) || c->overselect > 100)
        return ef__fail(EF_ERR_INVALID, "server: over-selection must be in [1, 100]");
    if (!(c->deadline_s >= 0) || !isfinite(c->deadline_s) || c->deadline_s > 3.0e38)
        return ef__fail(EF_ERR_INVALID, "server: deadline must be >= 0 seconds");
    if (c->min_updates == 0) return ef__fail(EF_ERR_INVALID, "server: min_updates must be >= 1");
    if (c->local_epochs == 0 || c->batch == 0)
        return ef__fail(EF_ERR_INVALID, "server: local epochs and batch must be >= 1");
    if (!(c->lr > 0) || !isfinite(c->lr))
        return ef__fail(EF_ERR_INVALID, "server: client learning rate must be > 0");
    if (!(c->momentum >= 0 && c->momentum < 1))
        return ef__fail(EF_ERR_INVALID, "server: client momentum must be in [0, 1)");
    if (c->dp < EF_DP_OFF || c->dp > EF_DP_DISTRIBUTED)
        return ef__fail(EF_ERR_INVALID, "server: unknown differential privacy mode %d", c->dp);
    if (c->dp) {
        if (!(c->dp_noise > 0) || !isfinite(c->dp_noise))
            return ef__fail(EF_ERR_INVALID, "server: DP noise multiplier must be > 0");
        if (!(c->dp_clip > 0) || !isfinite(c->dp_clip))
            return ef__fail(EF_ERR_INVALID, "server: DP clipping norm must be > 0");
        if (!(c->dp_delta > 0 && c->dp_delta < 1))
            return ef__fail(EF_ERR_INVALID, "server: DP delta must be in (0, 1)");
        if (!(c->dp_target_epsilon >= 0) || !isfinite(c->dp_target_epsilon))
            return ef__fail(EF_ERR_INVALID, "server: DP target epsilon must be >= 0");
        if (c->async)
            return ef__fail(EF_ERR_UNSUPPORTED, "server: differential privacy runs with "
                                                "synchronous rounds only");
        if (c->dp == EF_DP_DISTRIBUTED && c->secagg != EF_SECAGG_PLUS && c->secagg != EF_SECAGG_PLAIN)
            return ef__fail(EF_ERR_INVALID, "server: distributed DP needs secure aggregation "
                                            "(the clients' noise is only private in the masked sum)");
        if (c->dp_mechanism != EF_DP_SKELLAM && c->dp_mechanism != EF_DP_DGAUSS)
            return ef__fail(EF_ERR_INVALID, "server: unknown DP mechanism %d", c->dp_mechanism);
        if (!(c->dp_min_survivors > 0 && c->dp_min_survivors <= 1))
            return ef__fail(EF_ERR_INVALID, "server: DP minimum survivors must be a fraction in (0, 1]");
        if (c->dp_adaptive && (c->dp != EF_DP_CENTRAL || c->secagg))
            return ef__fail(EF_ERR_UNSUPPORTED, "server: adaptive clipping needs central DP "
                                                "without secure aggregation (the server must "
                                                "see the update norms)");
    }
    if (c->secagg < EF_SECAGG_OFF || c->secagg > EF_SECAGG_PLAIN)
        return ef__fail(EF_ERR_INVALID, "server: unknown secure aggregation mode %d", c->secagg);
    if (c->secagg) {
        if (c->async)
            return ef__fail(EF_ERR_UNSUPPORTED, "server: secure aggregation runs with synchronous "
                                                "rounds only");
        if (c->secagg_bits < 1 || c->secagg_bits > 32)
            return ef__fail(EF_ERR_INVALID, "server: secure aggregation bits must be 1..32, got %d",
                            c->secagg_bits);
        if (!(c->secagg_clip > 0) || !isfinite(c->secagg_clip))
            return ef__fail(EF_ERR_INVALID, "server: secure aggregation clip must be > 0");
        if (!(c->secagg_weight_cap >= 1) || !isfinite(c->secagg_weight_cap))
            return ef__fail(EF_ERR_INVALID, "server: secure aggregation weight cap must be >= 1");
        if (!(c->secagg_stage_timeout_s >= 0) || !isfinite(c->secagg_stage_timeout_s))
            return ef__fail(EF_ERR_INVALID, "server: secure aggregation stage timeout must be >= 0");
        if (c->secagg_neighbors == 1 || (c->secagg_neighbors % 2 && c->secagg_neighbors + 1 <
                                                                        c->clients_per_round))
            return ef__fail(EF_ERR_INVALID, "server: secure aggregation neighbours must be even "
                                            "and >= 2 (or >= clients - 1), got %u",
                            c->secagg_neighbors);
    }
    if (c->async) {
        if (c->buffer_k == 0) return ef__fail(EF_ERR_INVALID, "server: buffer K must be >= 1");
        if (!(c->staleness_exponent >= 0) || !isfinite(c->staleness_exponent))
            return ef__fail(EF_ERR_INVALID, "server: staleness exponent must be >= 0");
        if (c->fed_eval_every)
            return ef__fail(EF_ERR_UNSUPPORTED, "server: federated evaluation runs with "
                                                "synchronous rounds only");
    }
    return EF_OK;
}

ef_status ef_server_new(ef_server **out, const ef_server_config *cfg,
                        const ef_strategy_config *strategy, ef_params *init, ef_round_fn on_round,
                        void *user) {
    *out = NULL;
    ef_status st = check_config(cfg);
    if (st) return st;
    if (sodium_init() < 0) return ef__fail(EF_ERR_INTERNAL, "libsodium failed to initialize");
    ef_server *s = ef_calloc(1, sizeof *s);
    if (!s) return EF_ERR_NOMEM;
    s->cfg = *cfg;
    s->n_params = ef_params_numel(init);
    if (s->cfg.max_message == 0) s->cfg.max_message = s->n_params * 4 + 1024;
    if (s->cfg.min_clients == 0) s->cfg.min_clients = 1;
    s->prox_mu = strategy->kind == EF_STRAT_FEDPROX ? strategy->proximal_mu : 0.0f;
    if (cfg->secagg && ef_strategy_keeps_updates(strategy->kind)) {
        ef_free(s);
        return ef__fail(EF_ERR_UNSUPPORTED, "server: %s needs every update, secure aggregation "
                                            "gives only their sum (use a mean-based strategy)",
                        ef_strategy_name(strategy->kind));
    }
    s->on_round = on_round;
    s->user = user;
    s->round = 1;
    s->seq = cfg->first_seq;
    s->cfg.sign_key = NULL; /* copied into secure memory below */
    if (cfg->sign_key) {
        if (!(s->sk = sodium_malloc(EF_SK_BYTES))) {
            ef_free(s);
            return EF_ERR_NOMEM;
        }
        memcpy(s->sk, cfg->sign_key, EF_SK_BYTES);
        sodium_mprotect_readonly(s->sk);
    }
    ef_rng_seed(&s->rng, cfg->seed ^ 0x5E1EC7ull);
    s->rng_at_close = s->rng;
    size_t max_updates = (size_t)ceil(cfg->clients_per_round * cfg->overselect);
    if (cfg->async && cfg->buffer_k > max_updates) max_updates = cfg->buffer_k;
    if ((st = ef_strategy_new(&s->strat, strategy, s->n_params, max_updates)) != EF_OK) goto fail;
    s->model = ef_malloc((s->n_params ? s->n_params : 1) * sizeof(float));
    if (!s->model) {
        st = EF_ERR_NOMEM;
        goto fail;
    }
    memcpy(s->model, ef_params_data(init), s->n_params * sizeof(float));
    s->rec = ef_round_record_empty(0);
    if (cfg->dp) {
        double sigma_b = cfg->dp_adaptive_noise > 0 ? cfg->dp_adaptive_noise
                                                    : cfg->clients_per_round / 20.0;
        s->dp_zdelta = cfg->dp_noise;
        if ((st = ef__dp_adaptive_init(&s->adapt, cfg->dp_clip, cfg->dp_adaptive_quantile,
                                       cfg->dp_adaptive_lr, cfg->dp_adaptive ? sigma_b : 0.0)) != EF_OK)
            goto fail;
        if (cfg->dp_adaptive &&
            (st = ef__dp_adaptive_noise_split(cfg->dp_noise, sigma_b, &s->dp_zdelta)) != EF_OK)
            goto fail;
        s->dp_stddev = s->dp_zdelta * cfg->dp_clip;
        if ((st = ef_accountant_new(&s->acct, NULL, 0)) != EF_OK) goto fail;
        if (!cfg->secagg &&
            !(s->dp_sum = ef_calloc(s->n_params ? s->n_params : 1, sizeof *s->dp_sum))) {
            st = EF_ERR_NOMEM;
            goto fail;
        }
        if (cfg->deterministic_noise) {
            uint8_t key[32];
            ef__drbg_key_from_seed(key, cfg->seed, "edgefl-server-dp-noise");
            ef__drbg_seed(&s->dp_rng, key, 0);
            sodium_memzero(key, sizeof key);
        } else if ((st = ef__drbg_seed_random(&s->dp_rng)) != EF_OK) {
            goto fail;
        }
    }
    *out = s;
    return EF_OK;
fail:
    ef_server_free(s);
    return st;
}

void ef_server_free(ef_server *s) {
    if (!s) return;
    sa_reset(s);
    ef_free(s->sa.words);
    ef_accountant_free(s->acct);
    ef_free(s->dp_sum);
    ef_free(s->norms);
    ef__drbg_wipe(&s->dp_rng);
    ef_strategy_free(s->strat);
    ef_free(s->model);
    ef_buf_unref(s->model_buf);
    ef_free(s->clients);
    ef__idmap_free(&s->ids);
    ef_free(s->pick);
    ef_free(s->order);
    if (s->sk) sodium_free(s->sk);
    ef_free(s->records);
    ef_free(s);
}

int ef_server_done(const ef_server *s) { return s->ph == P_DONE; }

const float *ef_server_model(const ef_server *s, size_t *n_params) {
    if (n_params) *n_params = s->n_params;
    return s->model;
}

uint32_t ef_server_version(const ef_server *s) { return s->version; }

const ef_round_record *ef_server_records(const ef_server *s, size_t *n) {
    *n = s->n_records;
    return s->records;
}

size_t ef_server_clients(const ef_server *s) { return s->n_clients; }

uint64_t ef_server_refused(const ef_server *s) { return s->refused; }

const char *ef_server_stop_reason(const ef_server *s) { return s->stop_reason; }

double ef_server_epsilon(const ef_server *s) {
    if (!s->acct) return NAN;
    double eps = NAN;
    if (ef_accountant_epsilon(s->acct, s->cfg.dp_delta, &eps, NULL) != EF_OK) return NAN;
    return eps;
}

static ef_status allow(ef_server *s, uint32_t id, const uint8_t *pk, int aggregator) {
    if (id >= EF_BROADCAST_ID)
        return ef__fail(EF_ERR_INVALID, "allow-list: reserved client id %u", id);
    client_rec *c = ef__server_find_client(s, id);
    if (c && c->aggregator != aggregator)
        return ef__fail(EF_ERR_INVALID, "allow-list: id %u is already a %s", id,
                        c->aggregator ? "worker" : "client");
    if (aggregator && c && c->state != C_OFFLINE)
        return ef__fail(EF_ERR_INVALID, "allow-list: id %u is a client that checked in", id);
    if (!pk) {
        if (!c) {
            ef_status st = ef__server_add_client(s, id, &c);
            if (st) return st;
        }
        c->aggregator = (uint8_t)aggregator;
        return EF_OK;
    }
    if (c && c->has_pk && sodium_memcmp(c->pk, pk, EF_PK_BYTES) != 0)
        return ef__fail(EF_ERR_INVALID, "allow-list: client %u already has another key", id);
    if (!c) {
        ef_status st = ef__server_add_client(s, id, &c);
        if (st) return st;
    }
    memcpy(c->pk, pk, EF_PK_BYTES);
    c->has_pk = 1;
    c->aggregator = (uint8_t)aggregator;
    return EF_OK;
}

ef_status ef_server_allow(ef_server *s, uint32_t id, const uint8_t pk[EF_PK_BYTES]) {
    if (!pk) return ef__fail(EF_ERR_INVALID, "allow-list: client %u without a key", id);
    return allow(s, id, pk, 0);
}

ef_status ef_server_add_aggregator(ef_server *s, uint32_t id, const uint8_t *pk) {
    if (s->cfg.authenticate && !pk)
        return ef__fail(EF_ERR_INVALID, "aggregator %u: an authenticating server needs its key", id);
    return allow(s, id, pk, 1);
}
