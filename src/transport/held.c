/*
 * The receiving side shared by the MQTT client and gateway drivers (see
 * transport_internal.h): the broadcast models a client of some server
 * holds, the inbox messages waiting for the model they name, the server's
 * announcement, and the LEAVE left as a last will.
 */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "core/core_internal.h"
#include "transport_internal.h"

void ef__held_init(ef__held *h, uint64_t job, size_t n_params, const uint8_t *server_pk,
                   const char *name) {
    memset(h, 0, sizeof *h);
    h->job = job;
    h->n_params = n_params;
    h->server_pk = server_pk;
    snprintf(h->name, sizeof h->name, "%s", name);
}

void ef__held_drop(ef__held *h, size_t k) {
    if (k == 0) return;
    for (size_t i = 0; i < k; i++) ef_buf_unref(h->fifo[i]);
    memmove(h->fifo, h->fifo + k, (h->n_fifo - k) * sizeof *h->fifo);
    h->n_fifo -= k;
}

void ef__held_free(ef__held *h) {
    ef__held_drop(h, h->n_fifo);
    ef_free(h->fifo);
    h->fifo = NULL;
    h->cap_fifo = 0;
    for (int i = 0; i < 2; i++) {
        ef_buf_unref(h->models[i].buf);
        h->models[i].buf = NULL;
    }
}

ef_status ef__held_push(ef__held *h, ef_buf *b) {
    if (h->n_fifo == h->cap_fifo) {
        size_t nc = h->cap_fifo ? 2 * h->cap_fifo : 16;
        ef_buf **nv = ef_realloc(h->fifo, nc * sizeof *nv);
        if (!nv) return EF_ERR_NOMEM;
        h->fifo = nv;
        h->cap_fifo = nc;
    }
    h->fifo[h->n_fifo++] = ef_buf_ref(b);
    return EF_OK;
}

void ef__held_model(ef__held *h, ef_buf *b) {
    ef_msg m;
    ef_model_msg mm;
    if (ef_wire_decode(b->data, b->len, (size_t)-1, &m) != EF_OK || m.type != EF_MSG_MODEL ||
        m.job != h->job || m.sender != EF_SERVER_ID || ef_decode_model(&m, &mm) != EF_OK) {
        ef_log(EF_LOG_WARN, "%s: ignoring a broadcast that is not this job's model", h->name);
        return;
    }
    /* a forged model must not push a genuine one out of the cache */
    if (h->server_pk && ef_wire_verify(b->data, &m, h->server_pk) != EF_OK) {
        ef_log(EF_LOG_WARN, "%s: ignoring a broadcast model: %s", h->name, ef_last_error());
        return;
    }
    if (mm.n != h->n_params) {
        ef_log(EF_LOG_WARN, "%s: ignoring a model of %llu values (expected %zu)", h->name,
               (unsigned long long)mm.n, h->n_params);
        return;
    }
    uint8_t hash[EF_HASH_BYTES];
    ef_hash(hash, mm.raw, mm.n * 4);
    for (int i = 0; i < 2; i++)
        if (h->models[i].buf && h->models[i].version == mm.version &&
            sodium_memcmp(h->models[i].hash, hash, EF_HASH_BYTES) == 0)
            return; /* already held (a retained copy after a reconnect) */
    int slot = !h->models[0].buf ? 0 : !h->models[1].buf ? 1
               : h->models[0].version <= h->models[1].version ? 0 : 1;
    ef_buf_unref(h->models[slot].buf);
    h->models[slot].buf = ef_buf_ref(b);
    h->models[slot].version = mm.version;
    memcpy(h->models[slot].hash, hash, EF_HASH_BYTES);
    ef_log(EF_LOG_DEBUG, "%s: model version %u received", h->name, mm.version);
}

/* The model an inbox message needs: 1 and (version, hash) for TASK,
 * SA_SETUP and EVAL; 0 for the others (and for what does not decode: the
 * receiver refuses it). */
static int needs_model(const ef_buf *b, uint32_t *version, uint8_t hash[EF_HASH_BYTES],
                       uint32_t *round, ef_msg_type *type) {
    ef_msg h;
    if (ef_wire_decode(b->data, b->len, (size_t)-1, &h) != EF_OK) return 0;
    *type = h.type;
    *round = h.round;
    ef_task t;
    ef_sa_setup sa;
    ef_eval_task e;
    switch (h.type) {
    case EF_MSG_TASK:
        if (ef_decode_task(&h, &t) != EF_OK) return 0;
        break;
    case EF_MSG_SA_SETUP:
        if (ef_decode_sa_setup(&h, &t, &sa) != EF_OK) return 0;
        break;
    case EF_MSG_EVAL:
        if (ef_decode_eval(&h, &e) != EF_OK) return 0;
        *version = e.version;
        memcpy(hash, e.hash, EF_HASH_BYTES);
        return 1;
    default: return 0;
    }
    *version = t.version;
    memcpy(hash, t.hash, EF_HASH_BYTES);
    return 1;
}

/* What the queue's head can do now. */
typedef enum held_step {
    HELD_WAIT = 0,    /* nothing (empty, or the head waits for its model) */
    HELD_READY,       /* it->msg (a reference, the caller's) can go, after it->model */
    HELD_SUPERSEDED,  /* the head was dropped with what came before a newer task */
    HELD_PASSED       /* the head was dropped: the broadcast moved past its model */
} held_step;

static held_step held_next(ef__held *h, ef__held_item *it) {
    memset(it, 0, sizeof *it);
    if (h->n_fifo == 0) return HELD_WAIT;
    ef_buf *b = h->fifo[0];
    uint32_t version = 0;
    uint8_t hash[EF_HASH_BYTES];
    if (!needs_model(b, &version, hash, &it->round, &it->type)) {
        h->fifo[0] = NULL;
        ef__held_drop(h, 1);
        it->msg = b;
        return HELD_READY;
    }
    uint32_t newest = 0;
    for (int i = 0; i < 2; i++) {
        if (!h->models[i].buf) continue;
        if (h->models[i].version > newest) newest = h->models[i].version;
        if (h->models[i].version == version &&
            sodium_memcmp(h->models[i].hash, hash, EF_HASH_BYTES) == 0)
            it->model = h->models[i].buf;
    }
    if (it->model) {
        h->fifo[0] = NULL;
        ef__held_drop(h, 1);
        it->msg = b;
        return HELD_READY;
    }
    /* waiting for its model: unless a newer task came behind it, or the
     * broadcast has moved past its version (that model will not come) */
    size_t later = 0;
    uint32_t v2, rd2;
    uint8_t h2[EF_HASH_BYTES];
    ef_msg_type t2;
    for (size_t i = 1; i < h->n_fifo && !later; i++)
        if (needs_model(h->fifo[i], &v2, h2, &rd2, &t2)) later = i;
    if (later) {
        ef_log(EF_LOG_INFO, "%s: %s for round %u superseded by a newer one", h->name,
               ef_msg_type_name(it->type), it->round);
        ef__held_drop(h, later);
        return HELD_SUPERSEDED;
    }
    if (newest > version) {
        ef_log(EF_LOG_WARN, "%s: %s for model version %u given up: the broadcast model is at "
                            "version %u; checking in again", h->name,
               ef_msg_type_name(it->type), version, newest);
        ef__held_drop(h, 1);
        return HELD_PASSED;
    }
    return HELD_WAIT;
}

ef_status ef__held_drain(ef__held *h, const volatile sig_atomic_t *stop,
                         ef_status (*handle)(void *user, const ef__held_item *it),
                         ef_status (*checkin)(void *user), void *user, uint64_t *superseded) {
    for (;;) {
        if (stop && *stop) return EF_OK;
        ef__held_item it;
        ef_status st = EF_OK;
        switch (held_next(h, &it)) {
        case HELD_WAIT: return EF_OK;
        case HELD_READY:
            st = handle(user, &it);
            ef_buf_unref(it.msg);
            break;
        case HELD_SUPERSEDED: (*superseded)++; break;
        case HELD_PASSED:
            (*superseded)++;
            st = checkin(user);
            break;
        }
        if (st != EF_OK) return st;
    }
}

void ef__held_online(ef__held *h, const ef_buf *b) {
    char text[EF__BIRTH_MAX], inst[EF__BIRTH_MAX], mode[16];
    size_t len = b->len < sizeof text - 1 ? b->len : sizeof text - 1;
    memcpy(text, b->data, len);
    text[len] = '\0';
    if (sscanf(text, "edgefl-server %63s %15s", inst, mode) != 2 ||
        (strcmp(mode, "fresh") != 0 && strcmp(mode, "resumed") != 0)) {
        ef_log(EF_LOG_WARN, "%s: ignoring a malformed server announcement", h->name);
        return;
    }
    if (strcmp(inst, h->instance) == 0) return;
    int first = h->instance[0] == '\0';
    snprintf(h->instance, sizeof h->instance, "%s", inst);
    ef_log(EF_LOG_INFO, "%s: server %s is online (%s)", h->name, inst, mode);
    if (!first && h->checked_in && strcmp(mode, "fresh") == 0) {
        ef__held_drop(h, h->n_fifo);
        h->need_checkin = 1;
    }
}

ef_status ef__will_leave(uint64_t job, uint32_t id, uint64_t first_seq, const uint8_t *sk,
                         ef_buf **out) {
    *out = NULL;
    size_t plen = 4;
    ef_buf *b = ef_buf_new(EF_WIRE_HEADER + plen + (sk ? EF_SIG_BYTES : 0));
    if (!b) return EF_ERR_NOMEM;
    uint8_t *p = b->data + EF_WIRE_HEADER;
    p[0] = 1, p[1] = p[2] = p[3] = 0; /* reason 1: gone without a goodbye */
    ef_wire_seal_task(b->data, EF_MSG_LEAVE, job, 0, id, first_seq + EF_MQTT_WILL_GAP, 0, plen);
    if (sk) ef_wire_sign(b->data, plen, sk);
    *out = b;
    return EF_OK;
}
