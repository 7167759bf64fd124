/*
 * The client runtime (see include/edgefl/client.h): holds the model a task
 * needs, checks it against the task's hash, calls the trainer and encodes
 * the answer. The update is written by the trainer straight into the
 * outgoing message, so a client never holds a second copy of the model.
 */
#include <math.h>
#include <sodium.h>
#include <string.h>

#include "core/core_internal.h"
#include "edgefl/client.h"
#include "fl_internal.h"
#include "privacy/dp_internal.h"
#include "privacy/secagg_internal.h"

struct ef_client {
    ef_client_config cfg;
    ef_trainer tr;
    uint64_t seq;
    ef_buf *model;           /* MODEL message kept until a task uses it */
    uint32_t model_version;
    uint8_t model_hash[EF_HASH_BYTES];
    /* secure aggregation task in progress */
    ef_sa_client *sa;       /* NULL: none, or plain mode */
    ef_task sa_task;
    ef_sa_setup sa_set;
    uint32_t sa_round;
    uint64_t sa_task_id;    /* the SA_SETUP's task id, echoed by every SecAgg+ answer */
    /* authentication */
    uint8_t *sk;            /* signing key (secure memory), or NULL */
    uint8_t server_pk[EF_PK_BYTES];
    int check_server;       /* verify the server's signatures and counters */
    uint64_t server_seq;    /* highest counter seen from the server (MODEL excepted) */
};

ef_status ef_client_new(ef_client **out, const ef_client_config *cfg, const ef_trainer *trainer) {
    *out = NULL;
    if (cfg->id >= EF_BROADCAST_ID)
        return ef__fail(EF_ERR_INVALID, "client: id %u is reserved", cfg->id);
    if (!trainer || !trainer->fit)
        return ef__fail(EF_ERR_INVALID, "client: a trainer with a fit callback is required");
    ef_client *c = ef_calloc(1, sizeof *c);
    if (!c) return EF_ERR_NOMEM;
    c->cfg = *cfg;
    c->cfg.sign_key = c->cfg.server_pk = NULL; /* copied below */
    c->tr = *trainer;
    c->seq = cfg->first_seq;
    if (cfg->sign_key) {
        if (!(c->sk = sodium_malloc(EF_SK_BYTES))) {
            ef_free(c);
            return EF_ERR_NOMEM;
        }
        memcpy(c->sk, cfg->sign_key, EF_SK_BYTES);
        sodium_mprotect_readonly(c->sk);
    }
    if (cfg->server_pk) {
        memcpy(c->server_pk, cfg->server_pk, EF_PK_BYTES);
        c->check_server = 1;
    }
    *out = c;
    return EF_OK;
}

void ef_client_free(ef_client *c) {
    if (!c) return;
    ef_sa_client_free(c->sa);
    ef_buf_unref(c->model);
    if (c->sk) sodium_free(c->sk);
    ef_free(c);
}

uint32_t ef_client_id(const ef_client *c) { return c->cfg.id; }

void ef_client_forget(ef_client *c) {
    ef_buf_unref(c->model);
    c->model = NULL;
    ef_sa_client_free(c->sa);
    c->sa = NULL;
}

static ef_status send_small(ef_client *c, ef_msg_type type, uint32_t round, uint64_t task,
                            const uint8_t *payload, size_t plen, ef_outbox *out) {
    ef_buf *b = ef__msg_copy(type, c->cfg.job, round, c->cfg.id, ++c->seq, task, payload, plen,
                             c->sk);
    if (!b) return EF_ERR_NOMEM;
    ef_status st = ef_outbox_push(out, EF_SERVER_ID, type, b);
    if (st) ef_buf_unref(b);
    return st;
}

ef_status ef_client_checkin(ef_client *c, ef_outbox *out) {
    uint8_t p[8];
    ef__wr32(p, c->cfg.n_train);
    ef__wr32(p + 4, c->cfg.n_eval);
    return send_small(c, EF_MSG_CHECKIN, 0, 0, p, 8, out);
}

ef_status ef_client_leave(ef_client *c, uint32_t reason, ef_outbox *out) {
    uint8_t p[4];
    ef__wr32(p, reason);
    ef_buf_unref(c->model);
    c->model = NULL;
    return send_small(c, EF_MSG_LEAVE, 0, 0, p, 4, out);
}

/* The held model's floats (copied only on hosts where they cannot be read in place). */
static const float *model_floats(ef_client *c, float **copy) {
    ef_msg m;
    ef_model_msg mm;
    *copy = NULL;
    ef_wire_decode(c->model->data, c->model->len, (size_t)-1, &m);
    ef_decode_model(&m, &mm);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (((uintptr_t)mm.raw & 3) == 0) return (const float *)(const void *)mm.raw;
#endif
    *copy = ef_malloc(c->cfg.n_params * sizeof(float));
    if (!*copy) return NULL;
    ef_wire_floats(*copy, mm.raw, c->cfg.n_params);
    return *copy;
}

static ef_status need_model(ef_client *c, uint32_t version, const uint8_t *hash) {
    if (!c->model || c->model_version != version)
        return ef__fail(EF_ERR_STATE, "client %u: task for model version %u, which it does not "
                                      "hold", c->cfg.id, version);
    if (sodium_memcmp(hash, c->model_hash, EF_HASH_BYTES) != 0)
        return ef__fail(EF_ERR_FORMAT, "client %u: model version %u does not match the task's "
                                       "hash", c->cfg.id, version);
    return EF_OK;
}

static ef_status on_task(ef_client *c, const ef_msg *m, int worker, ef_outbox *out) {
    ef_task t;
    ef_status st = ef_decode_task(m, &t);
    if (st) return st;
    if ((st = need_model(c, t.version, t.hash)) != EF_OK) return st;
    size_t n = c->cfg.n_params;
    size_t plen = EF_UPDATE_FIXED + n * 4;
    ef_buf *b = ef__msg_new(plen, c->sk != NULL);
    if (!b) return EF_ERR_NOMEM;
    uint8_t *p = b->data + EF_WIRE_HEADER;
    float *copy = NULL;
    const float *global = model_floats(c, &copy);
    if (!global) {
        ef_buf_unref(b);
        return EF_ERR_NOMEM;
    }
    /* floats at payload + 32 = buffer + 80: aligned, written in place */
    float *delta = (float *)(void *)(p + EF_UPDATE_FIXED);
    ef_fit_result r = {0};
    st = c->tr.fit(c->tr.user, worker, c->cfg.id, global, n, &t, delta, &r);
    ef_free(copy);
    if (st != EF_OK) {
        ef_buf_unref(b);
        ef_client_forget(c); /* the task is over either way */
        return st;
    }
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    for (size_t i = 0; i < n; i++) ef__wrf32(p + EF_UPDATE_FIXED + 4 * i, delta[i]);
#endif
    ef__wr32(p, t.version);
    ef__wr32(p + 4, r.n_examples);
    ef__wrf32(p + 8, r.train_loss);
    ef__wr32(p + 12, r.steps);
    ef__wr32(p + 16, 0);
    ef__wr32(p + 20, 0);
    ef__wr64(p + 24, n);
    ef__msg_seal(b, EF_MSG_UPDATE, c->cfg.job, m->round, c->cfg.id, ++c->seq, m->task, plen, c->sk);
    if ((st = ef_outbox_push(out, EF_SERVER_ID, EF_MSG_UPDATE, b)) != EF_OK) {
        ef_buf_unref(b);
        return st;
    }
    ef_buf_unref(c->model); /* done with it */
    c->model = NULL;
    return EF_OK;
}

/* ---- secure aggregation ----------------------------------------------------- */

/* 32 key bytes for `label` from the task seed (deterministic_secrets), or
 * NULL for the operating system's randomness. */
static const uint8_t *task_key(const ef_client *c, const char *label, uint8_t key[32]) {
    if (!c->cfg.deterministic_secrets) return NULL;
    ef__drbg_key_from_seed(key, c->sa_task.seed, label);
    return key;
}

/* Trains, then sends the quantized, masked update (SA_MASKED); fwd/fwd_len:
 * the server's FORWARD payload. */
static ef_status sa_train_and_send(ef_client *c, uint32_t round, const uint8_t *fwd,
                                   size_t fwd_len, int worker, ef_outbox *out) {
    size_t n = c->cfg.n_params;
    ef_status st;
    float *delta = ef_malloc((n ? n : 1) * sizeof *delta);
    ef_buf *b = ef__msg_new(EF_SA_MASKED_FIXED + n * 4, c->sk != NULL);
    float *copy = NULL;
    const float *global = delta && b ? model_floats(c, &copy) : NULL;
    if (!global) {
        ef_free(delta);
        ef_buf_unref(b);
        return EF_ERR_NOMEM;
    }
    ef_fit_result r = {0};
    st = c->tr.fit(c->tr.user, worker, c->cfg.id, global, n, &c->sa_task, delta, &r);
    ef_free(copy);
    if (st == EF_OK && r.n_examples == 0)
        st = ef__fail(EF_ERR_STATE, "client %u: trained on no examples", c->cfg.id);
    uint8_t *p = b->data + EF_WIRE_HEADER;
    /* the words sit at buffer + 80: 4-byte aligned */
    uint32_t *words = (uint32_t *)(void *)(p + EF_SA_MASKED_FIXED);
    /* differential privacy: clipped to L2 norm C, and every client weighs the same */
    if (st == EF_OK && c->sa_set.dp_clip > 0 && isnan(ef__dp_clip_l2(delta, n, c->sa_set.dp_clip)))
        st = ef__fail(EF_ERR_STATE, "client %u: the update is not finite", c->cfg.id);
    if (st == EF_OK) {
        ef__quant q = {.clip = c->sa_set.clip, .levels = c->sa_set.levels, .bits = (int)c->sa_set.bits};
        double cap = c->sa_set.weight_cap;
        double ratio = c->sa_set.dp_clip > 0 ? 1.0 : (r.n_examples < cap ? r.n_examples : cap) / cap;
        uint8_t key[32];
        ef__drbg g;
        const uint8_t *k = task_key(c, "edgefl-secagg-rounding", key);
        if (k) ef__drbg_seed(&g, k, c->cfg.id);
        else st = ef__drbg_seed_random(&g);
        if (st == EF_OK) ef__quantize(words, delta, n, ratio, &q, &g);
        /* distributed DP: this client's share of the noise, before masking */
        uint32_t mm = ef__mod_mask(q.bits);
        if (st == EF_OK && c->sa_set.dp_kind == 1)
            st = ef__dp_add_skellam_u32(words, n, c->sa_set.dp_noise, mm, &g);
        else if (st == EF_OK && c->sa_set.dp_kind == 2)
            st = ef__dp_add_discrete_gaussian_u32(words, n, c->sa_set.dp_noise, mm, &g);
        ef__drbg_wipe(&g);
        sodium_memzero(key, sizeof key);
    }
    if (st == EF_OK && c->cfg.sa_audit)
        c->cfg.sa_audit(c->cfg.sa_audit_user, c->cfg.id, round, words, n);
    if (st == EF_OK) st = ef_sa_client_mask(c->sa, fwd, fwd_len, words, words);
    sodium_memzero(delta, (n ? n : 1) * sizeof *delta);
    ef_free(delta);
    if (st != EF_OK) {
        ef_buf_unref(b);
        ef_client_forget(c);
        return st;
    }
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    for (size_t i = 0; i < n; i++) ef__wr32(p + EF_SA_MASKED_FIXED + 4 * i, words[i]);
#endif
    ef__wr32(p, c->sa_task.version);
    ef__wr32(p + 4, r.n_examples);
    ef__wrf32(p + 8, r.train_loss);
    ef__wr32(p + 12, r.steps);
    ef__wr32(p + 16, 0);
    ef__wr32(p + 20, 0);
    ef__wr64(p + 24, n);
    ef__msg_seal(b, EF_MSG_SA_MASKED, c->cfg.job, round, c->cfg.id, ++c->seq, c->sa_task_id,
                 EF_SA_MASKED_FIXED + n * 4, c->sk);
    if ((st = ef_outbox_push(out, EF_SERVER_ID, EF_MSG_SA_MASKED, b)) != EF_OK) {
        ef_buf_unref(b);
        return st;
    }
    ef_buf_unref(c->model); /* done with it; the SecAgg+ state stays for unmasking */
    c->model = NULL;
    return EF_OK;
}

static ef_status on_sa_setup(ef_client *c, const ef_msg *m, ef_outbox *out) {
    ef_task t;
    ef_sa_setup set;
    ef_status st = ef_decode_sa_setup(m, &t, &set);
    if (st) return st;
    if ((st = need_model(c, t.version, t.hash)) != EF_OK) return st;
    ef_sa_client_free(c->sa);
    c->sa = NULL;
    c->sa_task = t;
    c->sa_set = set;
    c->sa_round = m->round;
    c->sa_task_id = m->task;
    ef_sa_params p = {.n = set.n, .k = set.k, .t = set.t, .bits = (int)set.bits,
                      .d = c->cfg.n_params, .round = (c->cfg.job << 32) ^ m->round,
                      .no_mask = (set.flags & EF_SA_FLAG_NO_MASK) != 0};
    uint8_t key[32], adv[2 * EF_SA_PK_BYTES];
    st = ef_sa_client_new(&c->sa, &p, set.index, task_key(c, "edgefl-secagg-keys", key));
    sodium_memzero(key, sizeof key);
    if (st == EF_OK) st = ef_sa_client_advertise(c->sa, adv);
    if (st == EF_OK) st = send_small(c, EF_MSG_SA_ADVERTISE, m->round, m->task, adv, sizeof adv, out);
    if (st != EF_OK) ef_client_forget(c);
    return st;
}

/* KEYS, FORWARD and UNMASK of the open SecAgg+ task. */
static ef_status on_sa_stage(ef_client *c, const ef_msg *m, int worker, ef_outbox *out) {
    if (!c->sa || m->round != c->sa_round || m->task != c->sa_task_id)
        return ef__fail(EF_ERR_STATE, "client %u: %s for round %u without a secure aggregation "
                                      "task (task %llu)", c->cfg.id, ef_msg_type_name(m->type),
                        m->round, (unsigned long long)m->task);
    uint8_t *pl = NULL;
    size_t plen = 0;
    ef_status st;
    switch (m->type) {
    case EF_MSG_SA_KEYS:
        st = ef_sa_client_share(c->sa, m->payload, m->payload_len, &pl, &plen);
        if (st == EF_OK) st = send_small(c, EF_MSG_SA_SHARES, m->round, m->task, pl, plen, out);
        break;
    case EF_MSG_SA_FORWARD:
        if (!c->model)
            return ef__fail(EF_ERR_STATE, "client %u: shares forwarded but no model held", c->cfg.id);
        return sa_train_and_send(c, m->round, m->payload, m->payload_len, worker, out);
    default: /* EF_MSG_SA_UNMASK */
        st = ef_sa_client_unmask(c->sa, m->payload, m->payload_len, &pl, &plen);
        if (st == EF_OK) st = send_small(c, EF_MSG_SA_REVEAL, m->round, m->task, pl, plen, out);
        break;
    }
    ef_free(pl);
    return st;
}

static ef_status on_eval(ef_client *c, const ef_msg *m, int worker, ef_outbox *out) {
    ef_eval_task e;
    ef_status st = ef_decode_eval(m, &e);
    if (st) return st;
    if ((st = need_model(c, e.version, e.hash)) != EF_OK) return st;
    if (!c->tr.evaluate)
        return ef__fail(EF_ERR_UNSUPPORTED, "client %u: the trainer cannot evaluate", c->cfg.id);
    float *copy = NULL;
    const float *global = model_floats(c, &copy);
    if (!global) return EF_ERR_NOMEM;
    ef_eval_counts r = {0};
    st = c->tr.evaluate(c->tr.user, worker, c->cfg.id, global, c->cfg.n_params, &r);
    ef_free(copy);
    if (st) return st;
    uint8_t p[24] = {0};
    ef__wr32(p, e.version);
    ef__wr32(p + 4, r.n_examples);
    ef__wrf64(p + 8, r.loss_sum);
    ef__wr32(p + 16, r.correct);
    if ((st = send_small(c, EF_MSG_EVAL_RESULT, m->round, m->task, p, 24, out)) != EF_OK) return st;
    ef_buf_unref(c->model);
    c->model = NULL;
    return EF_OK;
}

ef_status ef_client_handle(ef_client *c, ef_buf *buf, int worker, ef_outbox *out) {
    ef_msg m;
    size_t max_payload = EF_MODEL_FIXED + c->cfg.n_params * 4;
    /* a TASK (64 bytes) is larger than the MODEL of a model under 12 floats;
     * SecAgg+ key and share lists grow with the neighbourhood */
    if (max_payload < EF_SA_SETUP_PAYLOAD) max_payload = EF_SA_SETUP_PAYLOAD;
    if (c->sa) {
        size_t sa_max = 8 + (size_t)c->sa_set.n * (4 + EF_SA_CT_BYTES);
        if (max_payload < sa_max) max_payload = sa_max;
    }
    ef_status st = ef_wire_decode(buf->data, buf->len, max_payload, &m);
    if (st) return st;
    if (m.job != c->cfg.job || m.sender != EF_SERVER_ID)
        return ef__fail(EF_ERR_STATE, "client %u: message not from this job's server", c->cfg.id);
    if (c->check_server) {
        if ((st = ef_wire_verify(buf->data, &m, c->server_pk)) != EF_OK) return st;
        /* a MODEL may come again (the retained broadcast after a reconnect):
         * it is checked against the task's hash before use */
        if (m.type != EF_MSG_MODEL) {
            if (m.seq <= c->server_seq)
                return ef__fail(EF_ERR_AUTH, "client %u: %s replayed (server counter %llu, last "
                                             "seen %llu)", c->cfg.id, ef_msg_type_name(m.type),
                                (unsigned long long)m.seq, (unsigned long long)c->server_seq);
            c->server_seq = m.seq;
        }
    }
    switch (m.type) {
    case EF_MSG_MODEL: {
        ef_model_msg mm;
        if ((st = ef_decode_model(&m, &mm)) != EF_OK) return st;
        if (mm.n != c->cfg.n_params)
            return ef__fail(EF_ERR_FORMAT, "client %u: model of %llu values, expected %zu",
                            c->cfg.id, (unsigned long long)mm.n, c->cfg.n_params);
        ef_buf_unref(c->model);
        c->model = ef_buf_ref(buf);
        c->model_version = mm.version;
        ef_hash(c->model_hash, mm.raw, mm.n * 4);
        return EF_OK;
    }
    case EF_MSG_TASK: return on_task(c, &m, worker, out);
    case EF_MSG_SA_SETUP: return on_sa_setup(c, &m, out);
    case EF_MSG_SA_KEYS:
    case EF_MSG_SA_FORWARD:
    case EF_MSG_SA_UNMASK: return on_sa_stage(c, &m, worker, out);
    case EF_MSG_EVAL: return on_eval(c, &m, worker, out);
    default:
        return ef__fail(EF_ERR_STATE, "client %u: a client does not accept %s messages",
                        c->cfg.id, ef_msg_type_name(m.type));
    }
}
