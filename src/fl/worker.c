/*
 * Scale-out aggregator workers (include/edgefl/worker.h): batches clients'
 * updates into PARTIAL messages. Pure state machine: messages and time come
 * from the driver, output goes to its outbox.
 */
#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "core/core_internal.h"
#include "edgefl/worker.h"
#include "fl_internal.h"

typedef struct wclient {
    uint32_t id;
    uint8_t has_pk, has_task;
    uint8_t pk[EF_PK_BYTES];
    uint64_t last_seq;      /* authentication: highest counter seen */
    uint64_t task;          /* the open task the worker saw the server send */
    uint64_t done_task;     /* the task whose update it batched (0: none) */
    uint32_t task_round, task_version;
} wclient;

typedef struct bentry {
    uint32_t client, n_examples;
    uint64_t task, seq;
} bentry;

struct ef_worker {
    ef_worker_config cfg;
    uint8_t *sk;            /* signing key in secure memory, or NULL */
    uint8_t server_pk[EF_PK_BYTES];
    int check_server;
    uint64_t seq;
    wclient *cl;
    size_t n_cl, cap_cl;
    ef__idmap ids;          /* client id -> index in cl */
    /* the open batch */
    int open;
    uint32_t b_round, b_version;
    double b_first;         /* time of its first update */
    double *acc;            /* sum n_i delta_i */
    double wsum, loss_sum;
    bentry *ent;            /* max_batch entries */
    uint32_t n_ent;
    float *tmp;             /* an update's floats, aligned */
    ef_worker_stats st;
};

static wclient *find(ef_worker *w, uint32_t id) {
    long i = ef__idmap_find(&w->ids, id, w->cl, sizeof *w->cl);
    return i < 0 ? NULL : &w->cl[i];
}

static ef_status add(ef_worker *w, uint32_t id, wclient **out) {
    if (w->n_cl == w->cap_cl) {
        size_t nc = w->cap_cl ? 2 * w->cap_cl : 64;
        wclient *nv = ef_realloc(w->cl, nc * sizeof *nv);
        if (!nv) return EF_ERR_NOMEM;
        w->cl = nv;
        w->cap_cl = nc;
    }
    ef_status st = ef__idmap_put(&w->ids, id, w->n_cl, w->cl, sizeof *w->cl);
    if (st) return st;
    wclient *c = &w->cl[w->n_cl++];
    memset(c, 0, sizeof *c);
    c->id = id;
    *out = c;
    return EF_OK;
}

ef_status ef_worker_new(ef_worker **out, const ef_worker_config *cfg) {
    *out = NULL;
    if (cfg->id >= EF_BROADCAST_ID) return ef__fail(EF_ERR_INVALID, "worker: id %u is reserved", cfg->id);
    if (!(cfg->flush_s >= 0) || !isfinite(cfg->flush_s))
        return ef__fail(EF_ERR_INVALID, "worker: flush interval must be >= 0 seconds");
    if (cfg->authenticate && !cfg->sign_key)
        return ef__fail(EF_ERR_INVALID, "worker: authenticating workers must sign (sign_key)");
    if (sodium_init() < 0) return ef__fail(EF_ERR_INTERNAL, "libsodium failed to initialize");
    ef_worker *w = ef_calloc(1, sizeof *w);
    if (!w) return EF_ERR_NOMEM;
    w->cfg = *cfg;
    w->cfg.sign_key = w->cfg.server_pk = NULL;
    if (!w->cfg.max_batch) w->cfg.max_batch = 32;
    if (cfg->flush_s == 0) w->cfg.flush_s = 0.2;
    w->seq = cfg->first_seq;
    size_t n = cfg->n_params ? cfg->n_params : 1;
    w->acc = ef_malloc(n * sizeof *w->acc);
    w->tmp = ef_malloc(n * sizeof *w->tmp);
    w->ent = ef_malloc(w->cfg.max_batch * sizeof *w->ent);
    if (!w->acc || !w->tmp || !w->ent) goto nomem;
    if (cfg->sign_key) {
        if (!(w->sk = sodium_malloc(EF_SK_BYTES))) goto nomem;
        memcpy(w->sk, cfg->sign_key, EF_SK_BYTES);
        sodium_mprotect_readonly(w->sk);
    }
    if (cfg->server_pk) {
        memcpy(w->server_pk, cfg->server_pk, EF_PK_BYTES);
        w->check_server = 1;
    }
    *out = w;
    return EF_OK;
nomem:
    ef_worker_free(w);
    return EF_ERR_NOMEM;
}

void ef_worker_free(ef_worker *w) {
    if (!w) return;
    if (w->sk) sodium_free(w->sk);
    ef_free(w->cl);
    ef__idmap_free(&w->ids);
    ef_free(w->acc);
    ef_free(w->tmp);
    ef_free(w->ent);
    ef_free(w);
}

ef_status ef_worker_allow(ef_worker *w, uint32_t id, const uint8_t pk[EF_PK_BYTES]) {
    if (id >= EF_BROADCAST_ID) return ef__fail(EF_ERR_INVALID, "worker allow-list: reserved id %u", id);
    wclient *c = find(w, id);
    if (!c) {
        ef_status st = add(w, id, &c);
        if (st) return st;
    }
    memcpy(c->pk, pk, EF_PK_BYTES);
    c->has_pk = 1;
    return EF_OK;
}

ef_worker_stats ef_worker_get_stats(const ef_worker *w) { return w->st; }

double ef_worker_next_timer(const ef_worker *w) {
    return w->open ? w->b_first + w->cfg.flush_s : INFINITY;
}

ef_status ef_worker_observe(ef_worker *w, uint32_t to, const uint8_t *msg, size_t len) {
    ef_msg m;
    /* TASK messages are small; anything larger is not one */
    ef_status st = ef_wire_decode(msg, len, EF_SA_SETUP_PAYLOAD + 1024, &m);
    if (st == EF_OK && (m.job != w->cfg.job || m.sender != EF_SERVER_ID))
        st = ef__fail(EF_ERR_STATE, "worker %u: observed message not from this job's server", w->cfg.id);
    if (st == EF_OK && w->check_server) st = ef_wire_verify(msg, &m, w->server_pk);
    if (st != EF_OK) {
        w->st.refused++;
        return st;
    }
    if (m.type != EF_MSG_TASK) return EF_OK;
    ef_task t;
    if ((st = ef_decode_task(&m, &t)) != EF_OK) {
        w->st.refused++;
        return st;
    }
    if (to >= EF_BROADCAST_ID) return ef__fail(EF_ERR_INVALID, "worker: task for reserved id %u", to);
    wclient *c = find(w, to);
    if (!c && (st = add(w, to, &c)) != EF_OK) return st;
    c->has_task = 1;
    c->task = m.task;
    c->task_round = m.round;
    c->task_version = t.version;
    return EF_OK;
}

static int cmp_entry(const void *a, const void *b) {
    uint32_t x = ((const bentry *)a)->client, y = ((const bentry *)b)->client;
    return x < y ? -1 : x > y;
}

/* Sends the open batch as a PARTIAL. */
static ef_status flush(ef_worker *w, ef_outbox *out) {
    if (!w->open) return EF_OK;
    size_t n = w->cfg.n_params;
    size_t plen = EF_PARTIAL_FIXED + (size_t)w->n_ent * EF_PARTIAL_ENTRY + n * 4;
    ef_buf *b = ef__msg_new(plen, w->sk != NULL);
    if (!b) return EF_ERR_NOMEM;
    qsort(w->ent, w->n_ent, sizeof *w->ent, cmp_entry);
    uint8_t *p = b->data + EF_WIRE_HEADER;
    ef__wr32(p, w->b_version);
    ef__wr32(p + 4, w->n_ent);
    ef__wr64(p + 8, n);
    ef__wrf64(p + 16, w->loss_sum);
    uint8_t *e = p + EF_PARTIAL_FIXED;
    for (uint32_t i = 0; i < w->n_ent; i++, e += EF_PARTIAL_ENTRY) {
        ef__wr32(e, w->ent[i].client);
        ef__wr32(e + 4, w->ent[i].n_examples);
        ef__wr64(e + 8, w->ent[i].task);
        ef__wr64(e + 16, w->ent[i].seq);
    }
    double inv = 1.0 / w->wsum;
    for (size_t j = 0; j < n; j++) ef__wrf32(e + 4 * j, (float)(w->acc[j] * inv));
    ef__msg_seal(b, EF_MSG_PARTIAL, w->cfg.job, w->b_round, w->cfg.id, ++w->seq, 0, plen, w->sk);
    ef_status st = ef_outbox_push(out, EF_SERVER_ID, EF_MSG_PARTIAL, b);
    if (st) {
        ef_buf_unref(b);
        return st;
    }
    w->st.partials++;
    w->st.batched += w->n_ent;
    w->open = 0;
    w->n_ent = 0;
    return EF_OK;
}

ef_status ef_worker_tick(ef_worker *w, double now, int force, ef_outbox *out) {
    if (w->open && (force || now >= w->b_first + w->cfg.flush_s)) return flush(w, out);
    return EF_OK;
}

static ef_status forward(ef_worker *w, const uint8_t *msg, size_t len, ef_outbox *out) {
    ef_buf *b = ef_buf_new(len ? len : 1);
    if (!b) return EF_ERR_NOMEM;
    memcpy(b->data, msg, len);
    b->len = len;
    ef_status st = ef_outbox_push(out, EF_SERVER_ID, len >= 6 ? (ef_msg_type)msg[5] : EF_MSG_CHECKIN, b);
    if (st) {
        ef_buf_unref(b);
        return st;
    }
    w->st.forwarded++;
    return EF_OK;
}

ef_status ef_worker_handle(ef_worker *w, double now, const uint8_t *msg, size_t len,
                           ef_outbox *out) {
    ef_msg m;
    size_t max = EF_UPDATE_FIXED + w->cfg.n_params * 4;
    /* only updates of the model's size are batched: anything else goes on */
    if (ef_wire_decode(msg, len, max, &m) != EF_OK || m.type != EF_MSG_UPDATE ||
        m.job != w->cfg.job)
        return forward(w, msg, len, out);
    wclient *c = find(w, m.sender);
    if (c && c->done_task && c->done_task == m.task) {
        /* a redelivered copy of an update already batched: forwarding it
         * would let the server take it first and refuse the partial */
        w->st.duplicates++;
        return EF_OK;
    }
    ef_update u;
    if (!c || !c->has_task || c->task != m.task || c->task_round != m.round ||
        ef_decode_update(&m, &u) != EF_OK || u.version != c->task_version ||
        u.n != w->cfg.n_params || u.n_examples == 0)
        return forward(w, msg, len, out);
    if (w->cfg.authenticate &&
        (!c->has_pk || m.seq <= c->last_seq || ef_wire_verify(msg, &m, c->pk) != EF_OK))
        return forward(w, msg, len, out); /* the server logs why */
    size_t n = w->cfg.n_params;
    ef_wire_floats(w->tmp, u.raw, n);
    for (size_t j = 0; j < n; j++)
        if (!isfinite(w->tmp[j])) return forward(w, msg, len, out);
    ef_status st;
    if (w->open && (w->b_round != m.round || w->b_version != u.version) &&
        (st = flush(w, out)) != EF_OK)
        return st;
    double wt = u.n_examples;
    if (!w->open) {
        w->open = 1;
        w->b_round = m.round;
        w->b_version = u.version;
        w->b_first = now;
        w->wsum = w->loss_sum = 0;
        for (size_t j = 0; j < n; j++) w->acc[j] = wt * w->tmp[j];
    } else {
        for (size_t j = 0; j < n; j++) w->acc[j] += wt * w->tmp[j];
    }
    w->wsum += wt;
    w->loss_sum += wt * u.train_loss;
    w->ent[w->n_ent++] = (bentry){m.sender, u.n_examples, m.task, m.seq};
    c->done_task = m.task;
    if (m.seq > c->last_seq) c->last_seq = m.seq;
    if (w->n_ent >= w->cfg.max_batch) return flush(w, out);
    return EF_OK;
}
