/*
 * Encoding and bounds-checked decoding of protocol messages (see
 * include/edgefl/wire.h for the layout), reference-counted message buffers
 * and outboxes. Every decoder works from the byte count it was given and
 * rejects anything that does not add up exactly.
 */
#include <math.h>
#include <sodium.h>
#include <stdatomic.h>
#include <string.h>
#include <zlib.h>

#include "core/core_internal.h"
#include "fl_internal.h"

static const uint8_t MAGIC[4] = {'E', 'F', 'L', '1'};

const char *ef_msg_type_name(ef_msg_type t) {
    switch (t) {
    case EF_MSG_CHECKIN: return "checkin";
    case EF_MSG_MODEL: return "model";
    case EF_MSG_TASK: return "task";
    case EF_MSG_UPDATE: return "update";
    case EF_MSG_EVAL: return "eval";
    case EF_MSG_EVAL_RESULT: return "eval_result";
    case EF_MSG_LEAVE: return "leave";
    case EF_MSG_SA_SETUP: return "sa_setup";
    case EF_MSG_SA_ADVERTISE: return "sa_advertise";
    case EF_MSG_SA_KEYS: return "sa_keys";
    case EF_MSG_SA_SHARES: return "sa_shares";
    case EF_MSG_SA_FORWARD: return "sa_forward";
    case EF_MSG_SA_MASKED: return "sa_masked";
    case EF_MSG_SA_UNMASK: return "sa_unmask";
    case EF_MSG_SA_REVEAL: return "sa_reveal";
    case EF_MSG_PARTIAL: return "partial";
    }
    return "unknown";
}

/* ---- little-endian helpers ---------------------------------------------- */

uint16_t ef__rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
uint32_t ef__rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
uint64_t ef__rd64(const uint8_t *p) { return (uint64_t)ef__rd32(p) | (uint64_t)ef__rd32(p + 4) << 32; }
float ef__rdf32(const uint8_t *p) {
    uint32_t u = ef__rd32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
double ef__rdf64(const uint8_t *p) {
    uint64_t u = ef__rd64(p);
    double d;
    memcpy(&d, &u, 8);
    return d;
}
void ef__wr16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
void ef__wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
void ef__wr64(uint8_t *p, uint64_t v) {
    ef__wr32(p, (uint32_t)v);
    ef__wr32(p + 4, (uint32_t)(v >> 32));
}
void ef__wrf32(uint8_t *p, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    ef__wr32(p, u);
}
void ef__wrf64(uint8_t *p, double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    ef__wr64(p, u);
}

void ef_wire_floats(float *out, const uint8_t *raw, size_t n) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(out, raw, n * sizeof(float));
#else
    for (size_t i = 0; i < n; i++) out[i] = ef__rdf32(raw + 4 * i);
#endif
}

/* ---- envelope ------------------------------------------------------------ */

static uint32_t envelope_crc(const uint8_t *buf, size_t payload_len) {
    uLong c = crc32(0L, Z_NULL, 0);
    c = crc32(c, buf, EF_WIRE_HEADER - 4);
    /* zlib takes uInt lengths: feed large payloads in pieces */
    const uint8_t *p = buf + EF_WIRE_HEADER;
    size_t left = payload_len;
    while (left > 0) {
        uInt chunk = left > (1u << 30) ? (1u << 30) : (uInt)left;
        c = crc32(c, p, chunk);
        p += chunk;
        left -= chunk;
    }
    return (uint32_t)c;
}

void ef_wire_seal_task(uint8_t *buf, ef_msg_type type, uint64_t job, uint32_t round,
                       uint32_t sender, uint64_t seq, uint64_t task, size_t payload_len) {
    memcpy(buf, MAGIC, 4);
    buf[4] = EF_WIRE_VERSION;
    buf[5] = (uint8_t)type;
    ef__wr16(buf + 6, 0);
    ef__wr64(buf + 8, job);
    ef__wr32(buf + 16, round);
    ef__wr32(buf + 20, sender);
    ef__wr64(buf + 24, seq);
    ef__wr64(buf + 32, task);
    ef__wr32(buf + 40, (uint32_t)payload_len);
    ef__wr32(buf + 44, envelope_crc(buf, payload_len));
}

void ef_wire_seal(uint8_t *buf, ef_msg_type type, uint64_t job, uint32_t round, uint32_t sender,
                  uint64_t seq, size_t payload_len) {
    ef_wire_seal_task(buf, type, job, round, sender, seq, 0, payload_len);
}

/* What a signature covers: BLAKE2b-256 of the header and payload, after a
 * domain-separation prefix (so that no other edgefl signature can be
 * replayed as a message signature). */
static void signed_digest(uint8_t out[16 + EF_HASH_BYTES], const uint8_t *buf, size_t payload_len) {
    static const char PREFIX[16] = "edgefl-msg-sig1";
    memcpy(out, PREFIX, 16);
    ef_hash(out + 16, buf, EF_WIRE_HEADER + payload_len);
}

void ef_wire_sign(uint8_t *buf, size_t payload_len, const uint8_t sk[EF_SK_BYTES]) {
    ef__wr16(buf + 6, (uint16_t)(ef__rd16(buf + 6) | EF_WIRE_SIGNED));
    ef__wr32(buf + 44, envelope_crc(buf, payload_len));
    uint8_t d[16 + EF_HASH_BYTES];
    signed_digest(d, buf, payload_len);
    crypto_sign_detached(buf + EF_WIRE_HEADER + payload_len, NULL, d, sizeof d, sk);
}

ef_status ef_wire_verify(const uint8_t *buf, const ef_msg *m, const uint8_t pk[EF_PK_BYTES]) {
    if (!m->sig)
        return ef__fail(EF_ERR_AUTH, "%s from %u: unsigned", ef_msg_type_name(m->type), m->sender);
    uint8_t d[16 + EF_HASH_BYTES];
    signed_digest(d, buf, m->payload_len);
    if (crypto_sign_verify_detached(m->sig, d, sizeof d, pk) != 0)
        return ef__fail(EF_ERR_AUTH, "%s from %u: bad signature", ef_msg_type_name(m->type),
                        m->sender);
    return EF_OK;
}

ef_buf *ef__msg_new(size_t payload_len, int sign) {
    return ef_buf_new(EF_WIRE_HEADER + payload_len + (sign ? EF_SIG_BYTES : 0));
}

void ef__msg_seal(ef_buf *b, ef_msg_type type, uint64_t job, uint32_t round, uint32_t sender,
                  uint64_t seq, uint64_t task, size_t payload_len, const uint8_t *sk) {
    ef_wire_seal_task(b->data, type, job, round, sender, seq, task, payload_len);
    if (sk) ef_wire_sign(b->data, payload_len, sk);
}

ef_status ef__auth_incoming(const uint8_t *buf, const ef_msg *m, const uint8_t *pk,
                            uint64_t *last_seq) {
    if (!pk)
        return ef__fail(EF_ERR_AUTH, "%s from client %u: not on the allow-list",
                        ef_msg_type_name(m->type), m->sender);
    ef_status st = ef_wire_verify(buf, m, pk);
    if (st != EF_OK) return st;
    if (m->seq <= *last_seq)
        return ef__fail(EF_ERR_AUTH, "%s from client %u: replayed (message counter %llu, last "
                                     "seen %llu)",
                        ef_msg_type_name(m->type), m->sender, (unsigned long long)m->seq,
                        (unsigned long long)*last_seq);
    *last_seq = m->seq;
    return EF_OK;
}

ef_status ef_wire_decode(const uint8_t *buf, size_t len, size_t max_payload, ef_msg *out) {
    memset(out, 0, sizeof *out);
    if (buf == NULL || len < EF_WIRE_HEADER)
        return ef__fail(EF_ERR_FORMAT, "message: %zu bytes, shorter than the %d-byte header", len,
                        EF_WIRE_HEADER);
    if (memcmp(buf, MAGIC, 4) != 0)
        return ef__fail(EF_ERR_FORMAT, "message: bad magic (not an edgefl message)");
    if (buf[4] != EF_WIRE_VERSION)
        return ef__fail(EF_ERR_FORMAT, "message: wire version %u, this build speaks %d", buf[4],
                        EF_WIRE_VERSION);
    uint8_t type = buf[5];
    if (type < EF_MSG_CHECKIN || type > EF_MSG_LAST)
        return ef__fail(EF_ERR_FORMAT, "message: unknown type %u", type);
    uint16_t flags = ef__rd16(buf + 6);
    if (flags & ~EF_WIRE_SIGNED)
        return ef__fail(EF_ERR_FORMAT, "message: unknown flags 0x%04x", flags);
    size_t tail = (flags & EF_WIRE_SIGNED) ? EF_SIG_BYTES : 0;
    uint32_t plen = ef__rd32(buf + 40);
    if (plen > max_payload)
        return ef__fail(EF_ERR_FORMAT, "message: %s payload of %u bytes exceeds the %zu-byte limit",
                        ef_msg_type_name((ef_msg_type)type), plen, max_payload);
    if (len - EF_WIRE_HEADER < tail || (size_t)plen != len - EF_WIRE_HEADER - tail)
        return ef__fail(EF_ERR_FORMAT, "message: header says %u payload bytes%s, %zu present", plen,
                        tail ? " and a signature" : "", len - EF_WIRE_HEADER);
    if (ef__rd32(buf + 44) != envelope_crc(buf, plen))
        return ef__fail(EF_ERR_FORMAT, "message: CRC mismatch (corrupted in transit)");
    out->type = (ef_msg_type)type;
    out->flags = flags;
    out->job = ef__rd64(buf + 8);
    out->round = ef__rd32(buf + 16);
    out->sender = ef__rd32(buf + 20);
    out->seq = ef__rd64(buf + 24);
    out->task = ef__rd64(buf + 32);
    out->payload = buf + EF_WIRE_HEADER;
    out->sig = tail ? buf + EF_WIRE_HEADER + plen : NULL;
    out->payload_len = plen;
    return EF_OK;
}

/* ---- payloads ------------------------------------------------------------ */

static ef_status want_type(const ef_msg *m, ef_msg_type t) {
    if (m->type != t)
        return ef__fail(EF_ERR_FORMAT, "message: expected %s, got %s", ef_msg_type_name(t),
                        ef_msg_type_name(m->type));
    return EF_OK;
}

static ef_status want_len(const ef_msg *m, size_t n) {
    if (m->payload_len != n)
        return ef__fail(EF_ERR_FORMAT, "%s payload: %zu bytes, expected %zu",
                        ef_msg_type_name(m->type), m->payload_len, n);
    return EF_OK;
}

/* Vector messages: fixed part, then n floats; checks n*4 == what is left. */
static ef_status vector_len(const ef_msg *m, size_t fixed, uint64_t n) {
    if (m->payload_len < fixed)
        return ef__fail(EF_ERR_FORMAT, "%s payload: %zu bytes, shorter than its %zu-byte fixed part",
                        ef_msg_type_name(m->type), m->payload_len, fixed);
    if (n > (m->payload_len - fixed) / 4 || n * 4 != m->payload_len - fixed)
        return ef__fail(EF_ERR_FORMAT, "%s payload: declares %llu floats, %zu bytes follow",
                        ef_msg_type_name(m->type), (unsigned long long)n,
                        m->payload_len - fixed);
    return EF_OK;
}

ef_status ef_decode_checkin(const ef_msg *m, ef_checkin *out) {
    ef_status st;
    if ((st = want_type(m, EF_MSG_CHECKIN)) || (st = want_len(m, 8))) return st;
    out->n_train = ef__rd32(m->payload);
    out->n_eval = ef__rd32(m->payload + 4);
    return EF_OK;
}

ef_status ef_decode_model(const ef_msg *m, ef_model_msg *out) {
    ef_status st;
    if ((st = want_type(m, EF_MSG_MODEL))) return st;
    if (m->payload_len < EF_MODEL_FIXED) return want_len(m, EF_MODEL_FIXED);
    const uint8_t *p = m->payload;
    if (ef__rd32(p + 4) != 0)
        return ef__fail(EF_ERR_FORMAT, "model payload: unknown codec %u", ef__rd32(p + 4));
    out->version = ef__rd32(p);
    out->n = ef__rd64(p + 8);
    if ((st = vector_len(m, EF_MODEL_FIXED, out->n))) return st;
    out->raw = p + EF_MODEL_FIXED;
    out->data = (const float *)(const void *)out->raw;
    return EF_OK;
}

static ef_status task_fields(const uint8_t *p, ef_task *out) {
    out->version = ef__rd32(p);
    memcpy(out->hash, p + 4, EF_HASH_BYTES);
    out->deadline_s = ef__rdf32(p + 36);
    out->epochs = ef__rd16(p + 40);
    out->batch = ef__rd16(p + 42);
    out->lr = ef__rdf32(p + 44);
    out->momentum = ef__rdf32(p + 48);
    out->prox_mu = ef__rdf32(p + 52);
    out->seed = ef__rd64(p + 56);
    if (!isfinite(out->deadline_s) || out->deadline_s < 0 || out->epochs == 0 ||
        out->batch == 0 || !(out->lr > 0) || !isfinite(out->lr) || !(out->momentum >= 0) ||
        !(out->momentum < 1) || !(out->prox_mu >= 0) || !isfinite(out->prox_mu))
        return ef__fail(EF_ERR_FORMAT, "task payload: invalid training settings");
    return EF_OK;
}

ef_status ef_decode_task(const ef_msg *m, ef_task *out) {
    ef_status st;
    if ((st = want_type(m, EF_MSG_TASK)) || (st = want_len(m, EF_TASK_PAYLOAD))) return st;
    return task_fields(m->payload, out);
}

ef_status ef_decode_sa_setup(const ef_msg *m, ef_task *task, ef_sa_setup *out) {
    ef_status st;
    if ((st = want_type(m, EF_MSG_SA_SETUP)) || (st = want_len(m, EF_SA_SETUP_PAYLOAD))) return st;
    if ((st = task_fields(m->payload, task)) != EF_OK) return st;
    const uint8_t *p = m->payload + EF_TASK_PAYLOAD;
    out->index = ef__rd32(p);
    out->n = ef__rd32(p + 4);
    out->k = ef__rd32(p + 8);
    out->t = ef__rd32(p + 12);
    out->bits = ef__rd32(p + 16);
    out->levels = ef__rd32(p + 20);
    out->dp_kind = ef__rd32(p + 24);
    out->flags = ef__rd32(p + 28);
    if (out->flags & ~EF_SA_FLAG_NO_MASK)
        return ef__fail(EF_ERR_FORMAT, "sa_setup payload: unknown flags 0x%x", out->flags);
    out->clip = ef__rdf64(p + 32);
    out->weight_cap = ef__rdf64(p + 40);
    out->dp_clip = ef__rdf64(p + 48);
    out->dp_noise = ef__rdf64(p + 56);
    if (out->n < 2 || out->index >= out->n || out->t < 1 || out->bits < 1 || out->bits > 32 ||
        out->levels < 1 || out->dp_kind > 2 || !(out->clip > 0) || !isfinite(out->clip) ||
        !(out->weight_cap > 0) || !isfinite(out->weight_cap) || !(out->dp_clip >= 0) ||
        !isfinite(out->dp_clip) || !(out->dp_noise >= 0) || !isfinite(out->dp_noise))
        return ef__fail(EF_ERR_FORMAT, "sa_setup payload: invalid secure aggregation settings");
    return EF_OK;
}

ef_status ef_decode_sa_masked(const ef_msg *m, ef_sa_masked *out) {
    ef_status st;
    if ((st = want_type(m, EF_MSG_SA_MASKED))) return st;
    if (m->payload_len < EF_SA_MASKED_FIXED) return want_len(m, EF_SA_MASKED_FIXED);
    const uint8_t *p = m->payload;
    out->version = ef__rd32(p);
    out->n_examples = ef__rd32(p + 4);
    out->train_loss = ef__rdf32(p + 8);
    out->steps = ef__rd32(p + 12);
    out->flags = ef__rd32(p + 16);
    if (ef__rd32(p + 20) != 0) return ef__fail(EF_ERR_FORMAT, "sa_masked payload: padding not zero");
    if (out->flags > 1) return ef__fail(EF_ERR_FORMAT, "sa_masked payload: unknown flags 0x%x", out->flags);
    out->n = ef__rd64(p + 24);
    if ((st = vector_len(m, EF_SA_MASKED_FIXED, out->n))) return st;
    if (out->n_examples == 0 || !isfinite(out->train_loss))
        return ef__fail(EF_ERR_FORMAT, "sa_masked payload: %s",
                        out->n_examples == 0 ? "zero examples" : "non-finite training loss");
    out->raw = p + EF_SA_MASKED_FIXED;
    return EF_OK;
}

ef_status ef_decode_partial(const ef_msg *m, ef_partial *out) {
    ef_status st;
    if ((st = want_type(m, EF_MSG_PARTIAL))) return st;
    if (m->payload_len < EF_PARTIAL_FIXED) return want_len(m, EF_PARTIAL_FIXED);
    const uint8_t *p = m->payload;
    out->version = ef__rd32(p);
    out->count = ef__rd32(p + 4);
    out->n = ef__rd64(p + 8);
    out->loss_sum = ef__rdf64(p + 16);
    if (out->count == 0) return ef__fail(EF_ERR_FORMAT, "partial payload: no entries");
    if (!isfinite(out->loss_sum)) return ef__fail(EF_ERR_FORMAT, "partial payload: non-finite loss");
    size_t fixed = EF_PARTIAL_FIXED;
    if ((size_t)out->count > (m->payload_len - fixed) / EF_PARTIAL_ENTRY)
        return ef__fail(EF_ERR_FORMAT, "partial payload: %u entries, %zu bytes follow", out->count,
                        m->payload_len - fixed);
    fixed += (size_t)out->count * EF_PARTIAL_ENTRY;
    if ((st = vector_len(m, fixed, out->n))) return st;
    out->entries = p + EF_PARTIAL_FIXED;
    out->raw = p + fixed;
    uint64_t prev = 0;
    for (uint32_t i = 0; i < out->count; i++) {
        ef_partial_entry e;
        ef_partial_get(out, i, &e);
        if (e.client >= EF_BROADCAST_ID || (i > 0 && e.client <= prev) || e.n_examples == 0)
            return ef__fail(EF_ERR_FORMAT, "partial payload: entry %u (client %u, %u examples): "
                                           "ids must increase, counts be >= 1", i, e.client,
                            e.n_examples);
        prev = e.client;
    }
    return EF_OK;
}

void ef_partial_get(const ef_partial *p, uint32_t i, ef_partial_entry *out) {
    const uint8_t *e = p->entries + (size_t)i * EF_PARTIAL_ENTRY;
    out->client = ef__rd32(e);
    out->n_examples = ef__rd32(e + 4);
    out->task = ef__rd64(e + 8);
    out->seq = ef__rd64(e + 16);
}

ef_status ef_decode_update(const ef_msg *m, ef_update *out) {
    ef_status st;
    if ((st = want_type(m, EF_MSG_UPDATE))) return st;
    if (m->payload_len < EF_UPDATE_FIXED) return want_len(m, EF_UPDATE_FIXED);
    const uint8_t *p = m->payload;
    out->version = ef__rd32(p);
    out->n_examples = ef__rd32(p + 4);
    out->train_loss = ef__rdf32(p + 8);
    out->steps = ef__rd32(p + 12);
    if (ef__rd32(p + 16) != 0)
        return ef__fail(EF_ERR_FORMAT, "update payload: unknown codec %u", ef__rd32(p + 16));
    if (ef__rd32(p + 20) != 0) return ef__fail(EF_ERR_FORMAT, "update payload: padding not zero");
    out->n = ef__rd64(p + 24);
    if ((st = vector_len(m, EF_UPDATE_FIXED, out->n))) return st;
    if (out->n_examples == 0 || !isfinite(out->train_loss))
        return ef__fail(EF_ERR_FORMAT, "update payload: %s",
                        out->n_examples == 0 ? "zero examples" : "non-finite training loss");
    out->raw = p + EF_UPDATE_FIXED;
    return EF_OK;
}

ef_status ef_decode_eval(const ef_msg *m, ef_eval_task *out) {
    ef_status st;
    if ((st = want_type(m, EF_MSG_EVAL)) || (st = want_len(m, 8 + EF_HASH_BYTES))) return st;
    if (ef__rd32(m->payload + 4) != 0)
        return ef__fail(EF_ERR_FORMAT, "eval payload: padding not zero");
    out->version = ef__rd32(m->payload);
    memcpy(out->hash, m->payload + 8, EF_HASH_BYTES);
    return EF_OK;
}

ef_status ef_decode_eval_result(const ef_msg *m, ef_eval_result *out) {
    ef_status st;
    if ((st = want_type(m, EF_MSG_EVAL_RESULT)) || (st = want_len(m, 24))) return st;
    const uint8_t *p = m->payload;
    out->version = ef__rd32(p);
    out->n_examples = ef__rd32(p + 4);
    out->loss_sum = ef__rdf64(p + 8);
    out->correct = ef__rd32(p + 16);
    if (ef__rd32(p + 20) != 0)
        return ef__fail(EF_ERR_FORMAT, "eval_result payload: padding not zero");
    if (!isfinite(out->loss_sum) || out->loss_sum < 0 || out->correct > out->n_examples)
        return ef__fail(EF_ERR_FORMAT, "eval_result payload: inconsistent values");
    return EF_OK;
}

ef_status ef_decode_leave(const ef_msg *m, uint32_t *reason) {
    ef_status st;
    if ((st = want_type(m, EF_MSG_LEAVE)) || (st = want_len(m, 4))) return st;
    *reason = ef__rd32(m->payload);
    return EF_OK;
}

/* ---- buffers and outboxes ------------------------------------------------ */

ef_buf *ef_buf_new(size_t len) {
    /* the struct and its data in one block, the data 64-byte aligned */
    size_t total;
    if (!ef__add_size(sizeof(ef_buf) + 63, len, &total)) {
        ef__fail(EF_ERR_NOMEM, "message of %zu bytes is too large", len);
        return NULL;
    }
    ef_buf *b = ef_malloc(total);
    if (!b) return NULL;
    b->data = (uint8_t *)(((uintptr_t)(b + 1) + 63) & ~(uintptr_t)63);
    b->len = len;
    atomic_init((_Atomic int *)&b->refs, 1);
    return b;
}

ef_buf *ef_buf_ref(ef_buf *b) {
    atomic_fetch_add_explicit((_Atomic int *)&b->refs, 1, memory_order_relaxed);
    return b;
}

void ef_buf_unref(ef_buf *b) {
    if (!b) return;
    if (atomic_fetch_sub_explicit((_Atomic int *)&b->refs, 1, memory_order_acq_rel) == 1)
        ef_free(b);
}

ef_status ef_outbox_push(ef_outbox *o, uint32_t to, ef_msg_type type, ef_buf *buf) {
    if (o->n == o->cap) {
        size_t nc = o->cap ? o->cap * 2 : 16;
        ef_out_msg *nv = ef_realloc(o->v, nc * sizeof *nv);
        if (!nv) return EF_ERR_NOMEM;
        o->v = nv;
        o->cap = nc;
    }
    o->v[o->n++] = (ef_out_msg){to, type, buf};
    return EF_OK;
}

void ef_outbox_clear(ef_outbox *o) {
    for (size_t i = 0; i < o->n; i++) ef_buf_unref(o->v[i].buf);
    o->n = 0;
}

void ef_outbox_free(ef_outbox *o) {
    ef_outbox_clear(o);
    ef_free(o->v);
    memset(o, 0, sizeof *o);
}

void ef_hash(uint8_t out[EF_HASH_BYTES], const void *data, size_t n) {
    crypto_generichash(out, EF_HASH_BYTES, data, n, NULL, 0);
}

ef_buf *ef__msg_copy(ef_msg_type type, uint64_t job, uint32_t round, uint32_t sender,
                     uint64_t seq, uint64_t task, const uint8_t *payload, size_t plen,
                     const uint8_t *sk) {
    ef_buf *b = ef__msg_new(plen, sk != NULL);
    if (!b) return NULL;
    if (plen) memcpy(b->data + EF_WIRE_HEADER, payload, plen);
    ef__msg_seal(b, type, job, round, sender, seq, task, plen, sk);
    return b;
}

/* ---- client id map (server, worker) ----------------------------------------- */

static uint32_t idmap_hash(uint32_t id) { return (uint32_t)(((uint64_t)id * 0x9E3779B97F4A7C15ull) >> 32); }

static uint32_t rec_id(const void *recs, size_t stride, size_t i) {
    uint32_t id;
    memcpy(&id, (const char *)recs + i * stride, sizeof id);
    return id;
}

long ef__idmap_find(const ef__idmap *m, uint32_t id, const void *recs, size_t stride) {
    if (!m->n_slots) return -1;
    for (size_t i = idmap_hash(id) & (m->n_slots - 1);; i = (i + 1) & (m->n_slots - 1)) {
        uint32_t v = m->slots[i];
        if (v == 0) return -1;
        if (rec_id(recs, stride, v - 1) == id) return (long)(v - 1);
    }
}

static void idmap_place(uint32_t *slots, size_t n_slots, uint32_t id, size_t idx) {
    size_t i = idmap_hash(id) & (n_slots - 1);
    while (slots[i]) i = (i + 1) & (n_slots - 1);
    slots[i] = (uint32_t)(idx + 1);
}

ef_status ef__idmap_put(ef__idmap *m, uint32_t id, size_t n, const void *recs, size_t stride) {
    if ((n + 1) * 2 > m->n_slots) {
        size_t ns = m->n_slots ? 2 * m->n_slots : 128;
        uint32_t *slots = ef_calloc(ns, sizeof *slots);
        if (!slots) return EF_ERR_NOMEM;
        for (size_t k = 0; k < n; k++) idmap_place(slots, ns, rec_id(recs, stride, k), k);
        ef_free(m->slots);
        m->slots = slots;
        m->n_slots = ns;
    }
    idmap_place(m->slots, m->n_slots, id, n);
    return EF_OK;
}

void ef__idmap_free(ef__idmap *m) {
    ef_free(m->slots);
    m->slots = NULL;
    m->n_slots = 0;
}
