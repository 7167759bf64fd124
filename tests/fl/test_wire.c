/*
 * Tests of the wire format (include/edgefl/wire.h): every message type built
 * by hand (payload written field by field, envelope by ef_wire_seal) and
 * decoded back field by field; the header bytes and CRC against zlib; then
 * every malformed variant we can think of -- short, corrupt (each single bit
 * of a message flipped), unknown type/version/flags, lengths that disagree
 * with the bytes present, vector counts that disagree or overflow n*4, bad
 * codecs and invalid settings -- each refused with EF_ERR_FORMAT and a
 * message saying which check failed. Also the reference-counted buffers
 * (under a counting allocator, with threads and out-of-memory), outboxes,
 * ef_wire_floats, the BLAKE2b-256 known answers and ef_msg_type_name.
 *
 * Messages under test live in exact-size heap blocks so that ASan (the
 * sanitizer build) flags any read past the end of a message.
 */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sodium.h>
#include <string.h>
#include <zlib.h>

#include "edgefl/wire.h"
#include "fl/fl_internal.h"
#include "test_util.h"

#define JOB 0x8877665544332211ull
#define ROUND 0xA1B2C3D4u
#define SENDER 42u
#define SEQ 0xF0E0D0C0B0A09080ull
#define MAXP ((size_t)1 << 20)

/* Expects EF_ERR_FORMAT and a last-error message containing `needle`. */
#define CHECK_REJECT(expr, needle)                                                        \
    do {                                                                                  \
        ef_clear_error();                                                                 \
        ef_status s_ = (expr);                                                            \
        const char *e_ = ef_last_error();                                                 \
        CHECK_MSG(s_ == EF_ERR_FORMAT && e_[0] != '\0' && strstr(e_, needle) != NULL,     \
                  "%s -> %s: \"%s\" (wanted \"%s\")", #expr, ef_strerror(s_), e_, needle); \
    } while (0)

/* ---- building messages ---------------------------------------------------- */

/* A sealed message of `type` around `payload`, in an exact-size heap block. */
static uint8_t *seal_msg(ef_msg_type type, const void *payload, size_t plen, size_t *len) {
    uint8_t *b = malloc(EF_WIRE_HEADER + plen);
    if (!b) abort();
    if (plen) memcpy(b + EF_WIRE_HEADER, payload, plen);
    ef_wire_seal(b, type, JOB, ROUND, SENDER, SEQ, plen);
    *len = EF_WIRE_HEADER + plen;
    return b;
}

/* Seals and decodes the envelope (which must pass) into *m; m points into the
 * returned block, which the caller frees. */
static uint8_t *envelope(ef_msg_type type, const void *payload, size_t plen, ef_msg *m) {
    size_t len;
    uint8_t *b = seal_msg(type, payload, plen, &len);
    CHECK_OK(ef_wire_decode(b, len, MAXP, m));
    return b;
}

static size_t pl_checkin(uint8_t *p, uint32_t n_train, uint32_t n_eval) {
    ef__wr32(p, n_train);
    ef__wr32(p + 4, n_eval);
    return 8;
}

static size_t pl_model(uint8_t *p, uint32_t version, uint32_t codec, uint64_t n, const float *v,
                       size_t nv) {
    ef__wr32(p, version);
    ef__wr32(p + 4, codec);
    ef__wr64(p + 8, n);
    for (size_t i = 0; i < nv; i++) ef__wrf32(p + EF_MODEL_FIXED + 4 * i, v[i]);
    return EF_MODEL_FIXED + 4 * nv;
}

static size_t pl_task(uint8_t *p, const ef_task *t) {
    ef__wr32(p, t->version);
    memcpy(p + 4, t->hash, EF_HASH_BYTES);
    ef__wrf32(p + 36, t->deadline_s);
    ef__wr16(p + 40, t->epochs);
    ef__wr16(p + 42, t->batch);
    ef__wrf32(p + 44, t->lr);
    ef__wrf32(p + 48, t->momentum);
    ef__wrf32(p + 52, t->prox_mu);
    ef__wr64(p + 56, t->seed);
    return EF_TASK_PAYLOAD;
}

static size_t pl_update(uint8_t *p, uint32_t version, uint32_t n_examples, float loss,
                        uint32_t steps, uint32_t codec, uint64_t n, const float *v, size_t nv) {
    ef__wr32(p, version);
    ef__wr32(p + 4, n_examples);
    ef__wrf32(p + 8, loss);
    ef__wr32(p + 12, steps);
    ef__wr32(p + 16, codec);
    ef__wr32(p + 20, 0);
    ef__wr64(p + 24, n);
    for (size_t i = 0; i < nv; i++) ef__wrf32(p + EF_UPDATE_FIXED + 4 * i, v[i]);
    return EF_UPDATE_FIXED + 4 * nv;
}

static size_t pl_eval(uint8_t *p, uint32_t version, const uint8_t *hash) {
    ef__wr32(p, version);
    ef__wr32(p + 4, 0);
    memcpy(p + 8, hash, EF_HASH_BYTES);
    return 8 + EF_HASH_BYTES;
}

static size_t pl_eval_result(uint8_t *p, uint32_t version, uint32_t n, double loss_sum,
                             uint32_t correct) {
    ef__wr32(p, version);
    ef__wr32(p + 4, n);
    ef__wrf64(p + 8, loss_sum);
    ef__wr32(p + 16, correct);
    ef__wr32(p + 20, 0);
    return 24;
}

static ef_task good_task(void) {
    ef_task t;
    memset(&t, 0, sizeof t);
    t.version = 7;
    for (int i = 0; i < EF_HASH_BYTES; i++) t.hash[i] = (uint8_t)(i * 7 + 1);
    t.deadline_s = 30.5f;
    t.epochs = 65535;
    t.batch = 1;
    t.lr = 0.05f;
    t.momentum = 0.9f;
    t.prox_mu = 0.01f;
    t.seed = 0x0102030405060708ull;
    return t;
}

/* Runs the typed decoder of `t` on m (output discarded). */
static ef_status decode_as(ef_msg_type t, const ef_msg *m) {
    ef_checkin ci;
    ef_model_msg mo;
    ef_task ta;
    ef_update up;
    ef_eval_task ev;
    ef_eval_result er;
    ef_sa_setup sa;
    ef_sa_masked sm;
    ef_partial pa;
    uint32_t reason;
    switch (t) {
    case EF_MSG_PARTIAL: return ef_decode_partial(m, &pa);
    case EF_MSG_CHECKIN: return ef_decode_checkin(m, &ci);
    case EF_MSG_MODEL: return ef_decode_model(m, &mo);
    case EF_MSG_TASK: return ef_decode_task(m, &ta);
    case EF_MSG_UPDATE: return ef_decode_update(m, &up);
    case EF_MSG_EVAL: return ef_decode_eval(m, &ev);
    case EF_MSG_EVAL_RESULT: return ef_decode_eval_result(m, &er);
    case EF_MSG_LEAVE: return ef_decode_leave(m, &reason);
    case EF_MSG_SA_SETUP: return ef_decode_sa_setup(m, &ta, &sa);
    case EF_MSG_SA_MASKED: return ef_decode_sa_masked(m, &sm);
    default: break; /* the other SecAgg+ payloads are the SecAgg+ machines' */
    }
    return EF_ERR_INTERNAL;
}

/* A valid payload of each type (into p); returns its length. */
static size_t good_payload(ef_msg_type t, uint8_t *p) {
    static const float v[3] = {1.0f, -2.0f, 0.5f};
    static const uint8_t hash[EF_HASH_BYTES] = {1, 2, 3};
    ef_task task = good_task();
    switch (t) {
    case EF_MSG_CHECKIN: return pl_checkin(p, 10, 2);
    case EF_MSG_MODEL: return pl_model(p, 1, 0, 3, v, 3);
    case EF_MSG_TASK: return pl_task(p, &task);
    case EF_MSG_UPDATE: return pl_update(p, 1, 5, 0.25f, 3, 0, 3, v, 3);
    case EF_MSG_EVAL: return pl_eval(p, 1, hash);
    case EF_MSG_EVAL_RESULT: return pl_eval_result(p, 1, 10, 3.5, 9);
    case EF_MSG_LEAVE: ef__wr32(p, 3); return 4;
    case EF_MSG_SA_SETUP: {
        size_t n = pl_task(p, &task);
        uint8_t *q = p + n;
        memset(q, 0, 64);
        ef__wr32(q, 2), ef__wr32(q + 4, 5), ef__wr32(q + 8, 4), ef__wr32(q + 12, 3);
        ef__wr32(q + 16, 32), ef__wr32(q + 20, 1000), ef__wr32(q + 24, 1);
        ef__wr32(q + 28, EF_SA_FLAG_NO_MASK);
        ef__wrf64(q + 32, 0.5), ef__wrf64(q + 40, 1000.0), ef__wrf64(q + 48, 2.0);
        ef__wrf64(q + 56, 77.25);
        return n + 64;
    }
    case EF_MSG_SA_MASKED:
        memset(p, 0, EF_SA_MASKED_FIXED);
        ef__wr32(p, 1), ef__wr32(p + 4, 5), ef__wrf32(p + 8, 0.25f), ef__wr32(p + 12, 3);
        ef__wr32(p + 16, 1), ef__wr64(p + 24, 3);
        for (int i = 0; i < 3; i++) ef__wr32(p + EF_SA_MASKED_FIXED + 4 * i, 0xDEADBEEFu + i);
        return EF_SA_MASKED_FIXED + 12;
    case EF_MSG_PARTIAL: /* 2 entries, 3 floats */
        memset(p, 0, EF_PARTIAL_FIXED + 2 * EF_PARTIAL_ENTRY);
        ef__wr32(p, 1), ef__wr32(p + 4, 2), ef__wr64(p + 8, 3), ef__wrf64(p + 16, 1.5);
        ef__wr32(p + 24, 4), ef__wr32(p + 28, 10), ef__wr64(p + 32, 99), ef__wr64(p + 40, 7);
        ef__wr32(p + 48, 9), ef__wr32(p + 52, 20), ef__wr64(p + 56, 98), ef__wr64(p + 64, 8);
        for (int i = 0; i < 3; i++) ef__wrf32(p + 72 + 4 * i, v[i]);
        return 84;
    default: break;
    }
    return 0;
}

/* PARTIAL: entries and floats read back; a count or entry list that does not
 * add up, decreasing or repeated ids, zero examples and a NaN loss are
 * refused. */
static void test_partial(void) {
    uint8_t pl[256];
    ef_msg m;
    size_t n = good_payload(EF_MSG_PARTIAL, pl);
    uint8_t *b = envelope(EF_MSG_PARTIAL, pl, n, &m);
    ef_partial pa;
    CHECK_OK(ef_decode_partial(&m, &pa));
    CHECK(pa.version == 1 && pa.count == 2 && pa.n == 3 && pa.loss_sum == 1.5);
    ef_partial_entry e;
    ef_partial_get(&pa, 1, &e);
    CHECK(e.client == 9 && e.n_examples == 20 && e.task == 98 && e.seq == 8);
    float f[3];
    ef_wire_floats(f, pa.raw, 3);
    CHECK(f[1] == -2.0f);
    free(b);
    struct { size_t off; int bytes; uint64_t v; const char *why; } bad[] = {
        {4, 4, 0, "no entries"},         {4, 4, 3, "entries"},
        {8, 8, 4, "declares"},           {16, 8, 0x7FF8000000000000ull, "loss"},
        {48, 4, 4, "ids must increase"}, {48, 4, 2, "ids must increase"},
        {28, 4, 0, "counts"},            {48, 4, EF_BROADCAST_ID, "ids"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t q[256];
        memcpy(q, pl, n);
        if (bad[i].bytes == 4) ef__wr32(q + bad[i].off, (uint32_t)bad[i].v);
        else ef__wr64(q + bad[i].off, bad[i].v);
        b = envelope(EF_MSG_PARTIAL, q, n, &m);
        CHECK_REJECT(ef_decode_partial(&m, &pa), bad[i].why);
        free(b);
    }
}

static void check_envelope_fields(const ef_msg *m, const uint8_t *buf, ef_msg_type type,
                                  size_t plen) {
    CHECK(m->type == type);
    CHECK(m->flags == 0);
    CHECK(m->job == JOB);
    CHECK(m->round == ROUND);
    CHECK(m->sender == SENDER);
    CHECK(m->seq == SEQ);
    CHECK(m->payload == buf + EF_WIRE_HEADER);
    CHECK(m->payload_len == plen);
}

static int same_bits32(float a, float b) { return memcmp(&a, &b, 4) == 0; }

/* ---- round trips ------------------------------------------------------------ */

/* The header bytes at their documented offsets, and the CRC against zlib. */
static void test_seal_layout(void) {
    uint8_t pl[8];
    size_t len, plen = pl_checkin(pl, 0x01020304u, 0x05060708u);
    uint8_t *b = seal_msg(EF_MSG_CHECKIN, pl, plen, &len);
    static const uint8_t want[44] = {
        'E',  'F',  'L',  '1',  2,    1,    0,    0,    /* magic, version, type, flags */
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, /* job */
        0xD4, 0xC3, 0xB2, 0xA1,                         /* round */
        42,   0,    0,    0,                            /* sender */
        0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0, 0xE0, 0xF0, /* seq */
        0,    0,    0,    0,    0,    0,    0,    0,    /* task */
        8,    0,    0,    0};                           /* length */
    CHECK(len == 56);
    CHECK(memcmp(b, want, 44) == 0);
    uLong c = crc32(0L, Z_NULL, 0);
    c = crc32(c, b, 44);
    c = crc32(c, b + EF_WIRE_HEADER, (uInt)plen);
    CHECK(ef__rd32(b + 44) == (uint32_t)c);
    CHECK(b[48] == 4 && b[49] == 3 && b[50] == 2 && b[51] == 1);
    free(b);
}

static void test_roundtrip_checkin(void) {
    uint8_t pl[8];
    ef_msg m;
    size_t plen = pl_checkin(pl, 60000, 0xFFFFFFFFu);
    uint8_t *b = envelope(EF_MSG_CHECKIN, pl, plen, &m);
    check_envelope_fields(&m, b, EF_MSG_CHECKIN, plen);
    ef_checkin ci;
    CHECK_OK(ef_decode_checkin(&m, &ci));
    CHECK(ci.n_train == 60000);
    CHECK(ci.n_eval == 0xFFFFFFFFu);
    free(b);
}

static void test_roundtrip_model(void) {
    const float v[6] = {1.0f, -0.0f, FLT_MIN / 4, FLT_MAX, -3.25f, 1e-7f};
    uint8_t pl[EF_MODEL_FIXED + sizeof v];
    size_t plen = pl_model(pl, 0xCAFEu, 0, 6, v, 6);
    /* in an ef_buf, as the server sends it: the floats are then aligned */
    ef_buf *eb = ef_buf_new(EF_WIRE_HEADER + plen);
    CHECK(eb != NULL);
    if (!eb) return;
    memcpy(eb->data + EF_WIRE_HEADER, pl, plen);
    ef_wire_seal(eb->data, EF_MSG_MODEL, JOB, ROUND, EF_SERVER_ID, SEQ, plen);
    ef_msg m;
    CHECK_OK(ef_wire_decode(eb->data, eb->len, MAXP, &m));
    CHECK(m.type == EF_MSG_MODEL && m.sender == EF_SERVER_ID && m.payload_len == plen);
    ef_model_msg mm;
    CHECK_OK(ef_decode_model(&m, &mm));
    CHECK(mm.version == 0xCAFEu);
    CHECK(mm.n == 6);
    CHECK(mm.raw == m.payload + EF_MODEL_FIXED);
    CHECK((const void *)mm.data == (const void *)mm.raw);
    CHECK(((uintptr_t)mm.data & 3) == 0);
    float got[6];
    ef_wire_floats(got, mm.raw, 6);
    for (int i = 0; i < 6; i++) {
        CHECK_MSG(same_bits32(got[i], v[i]), "model[%d] %g != %g", i, got[i], v[i]);
        CHECK(same_bits32(mm.data[i], v[i]));
    }
    ef_buf_unref(eb);

    /* an empty vector is well-formed */
    size_t len;
    plen = pl_model(pl, 1, 0, 0, NULL, 0);
    uint8_t *b = seal_msg(EF_MSG_MODEL, pl, plen, &len);
    CHECK_OK(ef_wire_decode(b, len, MAXP, &m));
    CHECK_OK(ef_decode_model(&m, &mm));
    CHECK(mm.n == 0);
    free(b);
}

static void test_roundtrip_task(void) {
    uint8_t pl[EF_TASK_PAYLOAD];
    ef_task t = good_task();
    ef_msg m;
    size_t plen = pl_task(pl, &t);
    CHECK(plen == 64);
    uint8_t *b = envelope(EF_MSG_TASK, pl, plen, &m);
    check_envelope_fields(&m, b, EF_MSG_TASK, plen);
    ef_task d;
    CHECK_OK(ef_decode_task(&m, &d));
    CHECK(d.version == 7);
    CHECK(memcmp(d.hash, t.hash, EF_HASH_BYTES) == 0);
    CHECK(same_bits32(d.deadline_s, 30.5f));
    CHECK(d.epochs == 65535);
    CHECK(d.batch == 1);
    CHECK(same_bits32(d.lr, 0.05f));
    CHECK(same_bits32(d.momentum, 0.9f));
    CHECK(same_bits32(d.prox_mu, 0.01f));
    CHECK(d.seed == 0x0102030405060708ull);
    free(b);

    /* boundary values that are valid: no deadline, no momentum, no proximal term */
    t.deadline_s = 0;
    t.momentum = 0;
    t.prox_mu = 0;
    t.epochs = 1;
    t.batch = 65535;
    t.lr = FLT_MIN;
    pl_task(pl, &t);
    b = envelope(EF_MSG_TASK, pl, plen, &m);
    CHECK_OK(ef_decode_task(&m, &d));
    CHECK(d.deadline_s == 0 && d.momentum == 0 && d.prox_mu == 0 && d.epochs == 1 &&
          d.batch == 65535 && d.lr == FLT_MIN);
    free(b);
}

static void test_roundtrip_update(void) {
    const float v[5] = {0.125f, -1e-3f, 0.0f, 42.0f, -FLT_MAX};
    uint8_t pl[EF_UPDATE_FIXED + sizeof v];
    size_t plen = pl_update(pl, 9, 600, 2.3125f, 19, 0, 5, v, 5);
    /* at an odd address: raw floats may sit at any alignment */
    uint8_t *b = malloc(1 + EF_WIRE_HEADER + plen);
    if (!b) abort();
    memcpy(b + 1 + EF_WIRE_HEADER, pl, plen);
    ef_wire_seal(b + 1, EF_MSG_UPDATE, JOB, ROUND, SENDER, SEQ, plen);
    ef_msg m;
    CHECK_OK(ef_wire_decode(b + 1, EF_WIRE_HEADER + plen, MAXP, &m));
    check_envelope_fields(&m, b + 1, EF_MSG_UPDATE, plen);
    ef_update u;
    CHECK_OK(ef_decode_update(&m, &u));
    CHECK(u.version == 9);
    CHECK(u.n_examples == 600);
    CHECK(same_bits32(u.train_loss, 2.3125f));
    CHECK(u.steps == 19);
    CHECK(u.n == 5);
    CHECK(u.raw == m.payload + EF_UPDATE_FIXED);
    float got[5];
    ef_wire_floats(got, u.raw, 5);
    for (int i = 0; i < 5; i++) CHECK_MSG(same_bits32(got[i], v[i]), "update[%d]", i);
    free(b);

    /* a negative training loss is allowed (some objectives go below zero) */
    size_t len;
    plen = pl_update(pl, 1, 1, -0.5f, 0, 0, 0, NULL, 0);
    b = seal_msg(EF_MSG_UPDATE, pl, plen, &len);
    CHECK_OK(ef_wire_decode(b, len, MAXP, &m));
    CHECK_OK(ef_decode_update(&m, &u));
    CHECK(u.n == 0 && u.train_loss == -0.5f);
    free(b);
}

static void test_roundtrip_eval(void) {
    uint8_t hash[EF_HASH_BYTES], pl[8 + EF_HASH_BYTES];
    for (int i = 0; i < EF_HASH_BYTES; i++) hash[i] = (uint8_t)(255 - i);
    ef_msg m;
    size_t plen = pl_eval(pl, 0x10203040u, hash);
    uint8_t *b = envelope(EF_MSG_EVAL, pl, plen, &m);
    check_envelope_fields(&m, b, EF_MSG_EVAL, plen);
    ef_eval_task e;
    CHECK_OK(ef_decode_eval(&m, &e));
    CHECK(e.version == 0x10203040u);
    CHECK(memcmp(e.hash, hash, EF_HASH_BYTES) == 0);
    free(b);
}

static void test_roundtrip_eval_result(void) {
    uint8_t pl[24];
    ef_msg m;
    size_t plen = pl_eval_result(pl, 3, 10000, 2345.125, 8765);
    uint8_t *b = envelope(EF_MSG_EVAL_RESULT, pl, plen, &m);
    check_envelope_fields(&m, b, EF_MSG_EVAL_RESULT, plen);
    ef_eval_result r;
    CHECK_OK(ef_decode_eval_result(&m, &r));
    CHECK(r.version == 3);
    CHECK(r.n_examples == 10000);
    CHECK(r.loss_sum == 2345.125);
    CHECK(r.correct == 8765);
    free(b);

    /* boundaries: everything correct, and an empty evaluation */
    const uint32_t ns[2] = {7, 0};
    for (int i = 0; i < 2; i++) {
        pl_eval_result(pl, 1, ns[i], 0.0, ns[i]);
        b = envelope(EF_MSG_EVAL_RESULT, pl, plen, &m);
        CHECK_OK(ef_decode_eval_result(&m, &r));
        CHECK(r.correct == ns[i] && r.n_examples == ns[i] && r.loss_sum == 0.0);
        free(b);
    }
}

static void test_roundtrip_leave(void) {
    uint8_t pl[4];
    ef__wr32(pl, 0xDEADBEEFu);
    ef_msg m;
    uint8_t *b = envelope(EF_MSG_LEAVE, pl, 4, &m);
    check_envelope_fields(&m, b, EF_MSG_LEAVE, 4);
    uint32_t reason = 0;
    CHECK_OK(ef_decode_leave(&m, &reason));
    CHECK(reason == 0xDEADBEEFu);
    free(b);
}

/* ---- malformed envelopes ---------------------------------------------------- */

static void test_envelope_rejects(void) {
    uint8_t pl[8];
    size_t len, plen = pl_checkin(pl, 1, 2);
    uint8_t *good = seal_msg(EF_MSG_CHECKIN, pl, plen, &len);
    ef_msg m;
    CHECK_OK(ef_wire_decode(good, len, MAXP, &m));

    /* too short for the header: every prefix, and NULL */
    CHECK_REJECT(ef_wire_decode(NULL, 0, MAXP, &m), "shorter than");
    CHECK_REJECT(ef_wire_decode(NULL, 100, MAXP, &m), "shorter than");
    for (size_t n = 0; n < EF_WIRE_HEADER; n++) {
        uint8_t *pre = malloc(n ? n : 1);
        if (!pre) abort();
        memcpy(pre, good, n);
        CHECK_REJECT(ef_wire_decode(pre, n, MAXP, &m), "shorter than");
        free(pre);
    }
    /* a complete header whose payload is cut short, one byte at a time */
    for (size_t n = EF_WIRE_HEADER; n < len; n++) {
        uint8_t *pre = malloc(n);
        if (!pre) abort();
        memcpy(pre, good, n);
        CHECK_REJECT(ef_wire_decode(pre, n, MAXP, &m), "payload bytes");
        free(pre);
    }

    uint8_t *b = malloc(len + 1);
    if (!b) abort();

    /* bad magic */
    memcpy(b, good, len);
    b[0] = 'X';
    CHECK_REJECT(ef_wire_decode(b, len, MAXP, &m), "bad magic");
    memcpy(b, good, len);
    b[3] = '2';
    CHECK_REJECT(ef_wire_decode(b, len, MAXP, &m), "bad magic");

    /* wrong version (re-sealing could not produce one: patch it in) */
    const uint8_t versions[3] = {0, 1, 255};
    for (int i = 0; i < 3; i++) {
        memcpy(b, good, len);
        b[4] = versions[i];
        CHECK_REJECT(ef_wire_decode(b, len, MAXP, &m), "wire version");
    }

    /* unknown types, with a correct CRC so only the type check can catch them */
    const int types[3] = {0, EF_MSG_LAST + 1, 255};
    for (int i = 0; i < 3; i++) {
        size_t l2;
        uint8_t *u = seal_msg((ef_msg_type)types[i], pl, plen, &l2);
        CHECK_REJECT(ef_wire_decode(u, l2, MAXP, &m), "unknown type");
        free(u);
    }

    /* unknown flags: every bit but EF_WIRE_SIGNED (which makes the
     * message 64 bytes short of its signature) */
    memcpy(b, good, len);
    ef__wr16(b + 6, EF_WIRE_SIGNED);
    CHECK_REJECT(ef_wire_decode(b, len, MAXP, &m), "and a signature");
    for (int bit = 1; bit < 16; bit++) {
        memcpy(b, good, len);
        ef__wr16(b + 6, (uint16_t)(1u << bit));
        CHECK_REJECT(ef_wire_decode(b, len, MAXP, &m), "flags");
    }

    /* length field larger / smaller than the bytes present (the bytes sealed
     * and passed are consistent otherwise, so the length check is what fires) */
    memcpy(b, good, len);
    CHECK_REJECT(ef_wire_decode(b, len - 1, MAXP, &m), "header says 8 payload bytes, 7 present");
    memcpy(b, good, len);
    b[len] = 0;
    CHECK_REJECT(ef_wire_decode(b, len + 1, MAXP, &m), "header says 8 payload bytes, 9 present");
    memcpy(b, good, len);
    ef__wr32(b + 40, 9);
    CHECK_REJECT(ef_wire_decode(b, len, MAXP, &m), "header says 9 payload bytes, 8 present");
    ef__wr32(b + 40, 0);
    CHECK_REJECT(ef_wire_decode(b, len, MAXP, &m), "header says 0 payload bytes, 8 present");
    ef__wr32(b + 40, 0xFFFFFFFFu);
    CHECK_REJECT(ef_wire_decode(b, len, MAXP, &m), "exceeds");
    CHECK_REJECT(ef_wire_decode(b, len, SIZE_MAX, &m), "header says 4294967295 payload bytes");

    /* payload over max_payload; exactly at the limit is fine */
    CHECK_REJECT(ef_wire_decode(good, len, 7, &m), "exceeds the 7-byte limit");
    CHECK_OK(ef_wire_decode(good, len, 8, &m));
    size_t l0;
    uint8_t *empty = seal_msg(EF_MSG_LEAVE, NULL, 0, &l0);
    CHECK_OK(ef_wire_decode(empty, l0, 0, &m));
    CHECK(m.payload_len == 0);
    free(empty);

    /* CRC mismatch: the CRC field itself, and a payload byte */
    memcpy(b, good, len);
    b[44] ^= 1;
    CHECK_REJECT(ef_wire_decode(b, len, MAXP, &m), "CRC mismatch");
    memcpy(b, good, len);
    b[len - 1] ^= 0x80;
    CHECK_REJECT(ef_wire_decode(b, len, MAXP, &m), "CRC mismatch");

    free(b);
    free(good);
}

/* Signed envelopes: the signature verifies with the signer's public key
 * only, covers every header and payload byte, and an unsigned message or a
 * stripped signature is refused. */
static void test_signatures(void) {
    uint8_t pk[EF_PK_BYTES], sk[EF_SK_BYTES], pk2[EF_PK_BYTES], sk2[EF_SK_BYTES];
    CHECK(sodium_init() >= 0);
    crypto_sign_keypair(pk, sk);
    crypto_sign_keypair(pk2, sk2);
    uint8_t pl[24];
    size_t plen = pl_eval_result(pl, 1, 10, 3.0, 4);
    size_t len = EF_WIRE_HEADER + plen + EF_SIG_BYTES;
    uint8_t *b = malloc(len), *t = malloc(len);
    if (!b || !t) abort();
    memcpy(b + EF_WIRE_HEADER, pl, plen);
    ef_wire_seal_task(b, EF_MSG_EVAL_RESULT, JOB, 3, 42, 77, 0xABCDEF0123ull, plen);
    ef_msg m;
    /* sealed but not signed: decodes as unsigned, verify says so */
    CHECK_OK(ef_wire_decode(b, EF_WIRE_HEADER + plen, MAXP, &m));
    CHECK(m.sig == NULL && m.task == 0xABCDEF0123ull);
    CHECK(ef_wire_verify(b, &m, pk) == EF_ERR_AUTH && strstr(ef_last_error(), "unsigned"));
    ef_wire_sign(b, plen, sk);
    CHECK_OK(ef_wire_decode(b, len, MAXP, &m));
    CHECK(m.sig == b + EF_WIRE_HEADER + plen && (m.flags & EF_WIRE_SIGNED));
    CHECK(m.payload_len == plen && m.seq == 77 && m.task == 0xABCDEF0123ull);
    CHECK_OK(ef_wire_verify(b, &m, pk));
    CHECK(ef_wire_verify(b, &m, pk2) == EF_ERR_AUTH);
    CHECK(strstr(ef_last_error(), "bad signature") != NULL);
    /* the signed message without its signature is a length error */
    CHECK_REJECT(ef_wire_decode(b, EF_WIRE_HEADER + plen, MAXP, &m), "and a signature");
    /* any byte changed and the CRC recomputed (an attacker can do that):
     * the signature no longer verifies */
    int caught = 0, total = 0;
    for (size_t off = 0; off < EF_WIRE_HEADER + plen; off++) {
        if (off < 8) continue; /* magic, version, type, flags: refused by decode */
        if (off >= 40 && off < 48) continue; /* length and CRC themselves */
        memcpy(t, b, len);
        t[off] ^= 0x10;
        ef__wr32(t + 44, 0);
        /* recompute the CRC the way an attacker would */
        uLong c = crc32(0L, Z_NULL, 0);
        c = crc32(c, t, 44);
        c = crc32(c, t + EF_WIRE_HEADER, (uInt)plen);
        ef__wr32(t + 44, (uint32_t)c);
        total++;
        if (ef_wire_decode(t, len, MAXP, &m) == EF_OK && ef_wire_verify(t, &m, pk) == EF_ERR_AUTH)
            caught++;
    }
    CHECK(caught == total && total > 50);
    /* a signature byte flipped */
    memcpy(t, b, len);
    t[len - 1] ^= 1;
    CHECK_OK(ef_wire_decode(t, len, MAXP, &m));
    CHECK(ef_wire_verify(t, &m, pk) == EF_ERR_AUTH);
    free(b);
    free(t);
}

/* Every single-bit error anywhere in a small message is caught, and by the
 * check responsible for that field. */
static void test_every_bit_flip(void) {
    uint8_t pl[24];
    size_t len, plen = pl_eval_result(pl, 1, 10, 3.0, 4);
    uint8_t *good = seal_msg(EF_MSG_EVAL_RESULT, pl, plen, &len);
    uint8_t *b = malloc(len);
    if (!b) abort();
    int caught = 0;
    for (size_t bit = 0; bit < 8 * len; bit++) {
        memcpy(b, good, len);
        b[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ef_msg m;
        ef_clear_error();
        ef_status st = ef_wire_decode(b, len, MAXP, &m);
        const char *e = ef_last_error();
        size_t off = bit / 8;
        const char *want1 = "CRC mismatch", *want2 = NULL;
        if (off < 4) want1 = "bad magic";
        else if (off == 4) want1 = "wire version";
        else if (off == 5) want2 = "unknown type"; /* or a valid type, then the CRC */
        else if (off < 8) want1 = "flags", want2 = "signature"; /* bit 0: EF_WIRE_SIGNED */
        else if (off >= 40 && off < 44) want1 = "payload bytes", want2 = "exceeds";
        int ok = st == EF_ERR_FORMAT &&
                 (strstr(e, want1) != NULL || (want2 && strstr(e, want2) != NULL));
        CHECK_MSG(ok, "bit %zu (byte %zu): %s: \"%s\"", bit, off, ef_strerror(st), e);
        caught += ok;
    }
    CHECK(caught == (int)(8 * len));
    free(b);
    free(good);
}

/* ---- malformed payloads ----------------------------------------------------- */

/* Each decoder refuses every other type, even with a well-formed payload. */
static int typed(int t) {
    return t <= EF_MSG_LEAVE || t == EF_MSG_SA_SETUP || t == EF_MSG_SA_MASKED || t == EF_MSG_PARTIAL;
}

static void test_wrong_type(void) {
    uint8_t pl[256];
    for (int t = EF_MSG_CHECKIN; t <= EF_MSG_LAST; t++) {
        if (!typed(t)) continue;
        ef_msg m;
        uint8_t *b = envelope((ef_msg_type)t, pl, good_payload((ef_msg_type)t, pl), &m);
        for (int d = EF_MSG_CHECKIN; d <= EF_MSG_LAST; d++) {
            if (!typed(d)) continue;
            if (d == t) {
                CHECK_MSG(decode_as((ef_msg_type)d, &m) == EF_OK, "%s: %s",
                          ef_msg_type_name((ef_msg_type)d), ef_last_error());
                continue;
            }
            char want[64];
            snprintf(want, sizeof want, "expected %s, got %s", ef_msg_type_name((ef_msg_type)d),
                     ef_msg_type_name((ef_msg_type)t));
            CHECK_REJECT(decode_as((ef_msg_type)d, &m), want);
        }
        free(b);
    }
}

/* Fixed-size payloads one byte short, one byte long, and empty. */
static void test_payload_sizes(void) {
    static const struct {
        ef_msg_type type;
        size_t size;
    } fixed[] = {{EF_MSG_CHECKIN, 8},         {EF_MSG_TASK, EF_TASK_PAYLOAD},
                 {EF_MSG_EVAL, 8 + EF_HASH_BYTES}, {EF_MSG_EVAL_RESULT, 24},
                 {EF_MSG_LEAVE, 4}, {EF_MSG_SA_SETUP, EF_SA_SETUP_PAYLOAD}};
    uint8_t pl[256];
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        size_t good = good_payload(fixed[i].type, pl);
        CHECK(good == fixed[i].size);
        const size_t sizes[3] = {good - 1, good + 1, 0};
        for (int k = 0; k < 3; k++) {
            ef_msg m;
            uint8_t *b = envelope(fixed[i].type, pl, sizes[k], &m);
            char want[64];
            snprintf(want, sizeof want, "%zu bytes, expected %zu", sizes[k], good);
            CHECK_REJECT(decode_as(fixed[i].type, &m), want);
            free(b);
        }
    }
    /* vector messages shorter than their fixed part */
    const size_t model_short[3] = {0, 8, EF_MODEL_FIXED - 1};
    const size_t update_short[3] = {0, 16, EF_UPDATE_FIXED - 1};
    for (int k = 0; k < 3; k++) {
        ef_msg m;
        good_payload(EF_MSG_MODEL, pl);
        uint8_t *b = envelope(EF_MSG_MODEL, pl, model_short[k], &m);
        CHECK_REJECT(decode_as(EF_MSG_MODEL, &m), "expected 16");
        free(b);
        good_payload(EF_MSG_UPDATE, pl);
        b = envelope(EF_MSG_UPDATE, pl, update_short[k], &m);
        CHECK_REJECT(decode_as(EF_MSG_UPDATE, &m), "expected 32");
        free(b);
    }
}

/* Vector counts that disagree with the bytes that follow, including counts
 * whose byte size n*4 wraps around to exactly the bytes present. */
static void test_vector_counts(void) {
    const float v[4] = {1, 2, 3, 4};
    const uint64_t bad_n[] = {
        0, 3, 5, 1000, UINT64_MAX, UINT64_MAX / 4, UINT64_MAX / 4 + 1,
        (1ull << 62) + 4, /* * 4 wraps to 16, the bytes present */
        (1ull << 63) + 4, (3ull << 62) + 4, 0x4000000000000000ull};
    uint8_t pl[EF_UPDATE_FIXED + 4 * 4 + 3];
    for (size_t i = 0; i < sizeof bad_n / sizeof bad_n[0]; i++) {
        ef_msg m;
        size_t plen = pl_model(pl, 1, 0, bad_n[i], v, 4);
        uint8_t *b = envelope(EF_MSG_MODEL, pl, plen, &m);
        CHECK_REJECT(decode_as(EF_MSG_MODEL, &m), "floats");
        free(b);
        plen = pl_update(pl, 1, 1, 0.5f, 1, 0, bad_n[i], v, 4);
        b = envelope(EF_MSG_UPDATE, pl, plen, &m);
        CHECK_REJECT(decode_as(EF_MSG_UPDATE, &m), "floats");
        free(b);
    }
    /* no count fits a tail that is not a multiple of 4 bytes */
    for (size_t extra = 1; extra < 4; extra++) {
        for (uint64_t n = 3; n <= 5; n++) {
            ef_msg m;
            size_t plen = pl_model(pl, 1, 0, n, v, 4);
            memset(pl + plen, 0, extra);
            uint8_t *b = envelope(EF_MSG_MODEL, pl, plen + extra, &m);
            CHECK_REJECT(decode_as(EF_MSG_MODEL, &m), "floats");
            free(b);
            plen = pl_update(pl, 1, 1, 0.5f, 1, 0, n, v, 4);
            memset(pl + plen, 0, extra);
            b = envelope(EF_MSG_UPDATE, pl, plen + extra, &m);
            CHECK_REJECT(decode_as(EF_MSG_UPDATE, &m), "floats");
            free(b);
        }
    }
}

static void test_unknown_codec(void) {
    const float v[2] = {1, 2};
    const uint32_t codecs[3] = {1, 2, 0xFFFFFFFFu};
    uint8_t pl[EF_UPDATE_FIXED + 8];
    for (int i = 0; i < 3; i++) {
        ef_msg m;
        char want[48];
        snprintf(want, sizeof want, "unknown codec %u", codecs[i]);
        uint8_t *b = envelope(EF_MSG_MODEL, pl, pl_model(pl, 1, codecs[i], 2, v, 2), &m);
        CHECK_REJECT(decode_as(EF_MSG_MODEL, &m), want);
        free(b);
        b = envelope(EF_MSG_UPDATE, pl, pl_update(pl, 1, 1, 0.5f, 1, codecs[i], 2, v, 2), &m);
        CHECK_REJECT(decode_as(EF_MSG_UPDATE, &m), want);
        free(b);
    }
}

static void test_task_settings(void) {
    struct variant {
        const char *what;
        ef_task t;
    } vs[32];
    int n = 0;
#define VARIANT(desc, field, value)                                                      \
    do {                                                                                 \
        vs[n].what = desc;                                                               \
        vs[n].t = good_task();                                                           \
        vs[n].t.field = value;                                                           \
        n++;                                                                             \
    } while (0)
    VARIANT("epochs 0", epochs, 0);
    VARIANT("batch 0", batch, 0);
    VARIANT("lr 0", lr, 0.0f);
    VARIANT("lr -0", lr, -0.0f);
    VARIANT("lr < 0", lr, -0.1f);
    VARIANT("lr NaN", lr, NAN);
    VARIANT("lr -NaN", lr, -NAN);
    VARIANT("lr inf", lr, INFINITY);
    VARIANT("lr -inf", lr, -INFINITY);
    VARIANT("momentum 1", momentum, 1.0f);
    VARIANT("momentum 1.5", momentum, 1.5f);
    VARIANT("momentum inf", momentum, INFINITY);
    VARIANT("momentum NaN", momentum, NAN);
    VARIANT("momentum < 0", momentum, -0.1f);
    VARIANT("deadline < 0", deadline_s, -1.0f);
    VARIANT("deadline tiny < 0", deadline_s, -FLT_MIN);
    VARIANT("deadline NaN", deadline_s, NAN);
    VARIANT("deadline inf", deadline_s, INFINITY);
    VARIANT("deadline -inf", deadline_s, -INFINITY);
    VARIANT("prox_mu < 0", prox_mu, -0.01f);
    VARIANT("prox_mu NaN", prox_mu, NAN);
    VARIANT("prox_mu inf", prox_mu, INFINITY);
#undef VARIANT
    uint8_t pl[EF_TASK_PAYLOAD];
    for (int i = 0; i < n; i++) {
        ef_msg m;
        uint8_t *b = envelope(EF_MSG_TASK, pl, pl_task(pl, &vs[i].t), &m);
        ef_task d;
        ef_clear_error();
        ef_status st = ef_decode_task(&m, &d);
        CHECK_MSG(st == EF_ERR_FORMAT && strstr(ef_last_error(), "invalid training settings"),
                  "task with %s: %s \"%s\"", vs[i].what, ef_strerror(st), ef_last_error());
        free(b);
    }
}

static void test_update_values(void) {
    const float v[2] = {1, 2};
    const struct {
        uint32_t n_examples;
        float loss;
        const char *want;
    } cases[] = {{0, 0.5f, "zero examples"},
                 {0, NAN, "update payload"},
                 {10, NAN, "non-finite training loss"},
                 {10, -NAN, "non-finite training loss"},
                 {10, INFINITY, "non-finite training loss"},
                 {10, -INFINITY, "non-finite training loss"}};
    uint8_t pl[EF_UPDATE_FIXED + 8];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ef_msg m;
        size_t plen = pl_update(pl, 1, cases[i].n_examples, cases[i].loss, 1, 0, 2, v, 2);
        uint8_t *b = envelope(EF_MSG_UPDATE, pl, plen, &m);
        CHECK_REJECT(decode_as(EF_MSG_UPDATE, &m), cases[i].want);
        free(b);
    }
}

static void test_eval_result_values(void) {
    const struct {
        uint32_t n, correct;
        double loss;
    } cases[] = {{10, 11, 1.0},      {0, 1, 0.0},        {10, 0xFFFFFFFFu, 1.0},
                 {10, 5, NAN},       {10, 5, -NAN},      {10, 5, -1.0},
                 {10, 5, -1e-300},   {10, 5, INFINITY},  {10, 5, -INFINITY}};
    uint8_t pl[24];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ef_msg m;
        size_t plen = pl_eval_result(pl, 1, cases[i].n, cases[i].loss, cases[i].correct);
        uint8_t *b = envelope(EF_MSG_EVAL_RESULT, pl, plen, &m);
        CHECK_REJECT(decode_as(EF_MSG_EVAL_RESULT, &m), "inconsistent values");
        free(b);
    }
}

/* ---- buffers, outboxes, helpers ---------------------------------------------- */

/* Counting allocator with an optional failure budget (-1: unlimited). */
static long g_live, g_budget = -1;
static pthread_mutex_t g_alloc_mu = PTHREAD_MUTEX_INITIALIZER;

static int take_budget(void) {
    pthread_mutex_lock(&g_alloc_mu);
    int ok = g_budget != 0;
    if (g_budget > 0) g_budget--;
    pthread_mutex_unlock(&g_alloc_mu);
    return ok;
}
static void *count_malloc(void *user, size_t size) {
    (void)user;
    if (!take_budget()) return NULL;
    void *p = malloc(size);
    pthread_mutex_lock(&g_alloc_mu);
    if (p) g_live++;
    pthread_mutex_unlock(&g_alloc_mu);
    return p;
}
static void *count_realloc(void *user, void *p, size_t size) {
    (void)user;
    if (!take_budget()) return NULL;
    void *q = realloc(p, size);
    pthread_mutex_lock(&g_alloc_mu);
    if (q && !p) g_live++;
    pthread_mutex_unlock(&g_alloc_mu);
    return q;
}
static void count_free(void *user, void *p) {
    (void)user;
    pthread_mutex_lock(&g_alloc_mu);
    if (p) g_live--;
    pthread_mutex_unlock(&g_alloc_mu);
    free(p);
}
static const ef_allocator counting = {count_malloc, count_realloc, count_free, NULL};

static void *ref_worker(void *arg) {
    ef_buf *b = arg;
    for (int i = 0; i < 100000; i++) {
        ef_buf_ref(b);
        ef_buf_unref(b);
    }
    /* each thread was handed one reference of its own */
    ef_buf_unref(b);
    return NULL;
}

static void test_buf(void) {
    ef_set_allocator(&counting);
    g_live = 0;
    ef_buf *b = ef_buf_new(100);
    CHECK(b != NULL);
    if (b) {
        CHECK(b->len == 100);
        CHECK(b->refs == 1);
        CHECK(((uintptr_t)b->data & 63) == 0);
        memset(b->data, 0xAB, b->len); /* the whole length is writable */
        CHECK(ef_buf_ref(b) == b);
        CHECK(ef_buf_ref(b) == b);
        CHECK(b->refs == 3);
        ef_buf_unref(b);
        ef_buf_unref(b);
        CHECK(b->refs == 1);
        CHECK(g_live == 1);
        ef_buf_unref(b);
    }
    CHECK(g_live == 0);
    ef_buf_unref(NULL);

    ef_buf *z = ef_buf_new(0);
    CHECK(z != NULL && z->len == 0);
    ef_buf_unref(z);
    CHECK(g_live == 0);

    ef_clear_error();
    CHECK(ef_buf_new(SIZE_MAX) == NULL);
    CHECK(ef_buf_new(SIZE_MAX - 64) == NULL);
    CHECK(ef_last_error()[0] != '\0');
    CHECK(g_live == 0);

    g_budget = 0;
    ef_clear_error();
    CHECK(ef_buf_new(16) == NULL);
    CHECK(ef_last_error()[0] != '\0');
    g_budget = -1;

    /* concurrent ref/unref: the count ends where it started, then frees */
    b = ef_buf_new(8);
    CHECK(b != NULL);
    if (b) {
        pthread_t th[4];
        for (int i = 0; i < 4; i++) {
            ef_buf_ref(b);
            pthread_create(&th[i], NULL, ref_worker, b);
        }
        for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
        CHECK(b->refs == 1);
        ef_buf_unref(b);
    }
    CHECK(g_live == 0);
    ef_set_allocator(NULL);
}

static void test_outbox(void) {
    ef_set_allocator(&counting);
    g_live = 0;
    ef_outbox o = {0};
    ef_outbox_clear(&o); /* empty: no-ops */
    ef_outbox_free(&o);

    ef_buf *shared = ef_buf_new(4);
    CHECK(shared != NULL);
    if (!shared) return;
    for (uint32_t i = 0; i < 40; i++) {
        ef_buf *b = (i % 5 == 0) ? ef_buf_ref(shared) : ef_buf_new(i + 1);
        CHECK(b != NULL);
        ef_msg_type t = (ef_msg_type)(EF_MSG_CHECKIN + i % 7);
        CHECK_OK(ef_outbox_push(&o, i == 39 ? EF_BROADCAST_ID : i, t, b));
    }
    CHECK(o.n == 40 && o.cap >= 40 && o.v != NULL);
    for (uint32_t i = 0; i < 40 && i < o.n; i++) {
        CHECK(o.v[i].to == (i == 39 ? EF_BROADCAST_ID : i));
        CHECK(o.v[i].type == (ef_msg_type)(EF_MSG_CHECKIN + i % 7));
        if (i % 5 == 0) CHECK(o.v[i].buf == shared);
        else CHECK(o.v[i].buf->len == i + 1);
    }
    CHECK(shared->refs == 9);
    size_t cap = o.cap;
    ef_outbox_clear(&o);
    CHECK(o.n == 0 && o.cap == cap && o.v != NULL);
    CHECK(shared->refs == 1);
    CHECK(g_live == 2); /* the array and `shared` */

    CHECK_OK(ef_outbox_push(&o, EF_SERVER_ID, EF_MSG_LEAVE, shared)); /* takes our reference */
    CHECK(o.n == 1 && o.cap == cap);
    ef_outbox_free(&o);
    CHECK(o.v == NULL && o.n == 0 && o.cap == 0);
    CHECK(g_live == 0);

    /* out of memory while growing: the push fails, the outbox and the
     * caller's reference are untouched */
    ef_buf *b = ef_buf_new(4);
    CHECK(b != NULL);
    if (!b) return;
    g_budget = 0;
    CHECK(ef_outbox_push(&o, 1, EF_MSG_TASK, b) == EF_ERR_NOMEM);
    CHECK(o.n == 0 && o.v == NULL && o.cap == 0);
    CHECK(b->refs == 1);
    g_budget = 1; /* the first array, not its growth */
    for (int i = 0; i < 16; i++)
        CHECK_OK(ef_outbox_push(&o, (uint32_t)i, EF_MSG_TASK, ef_buf_ref(b)));
    CHECK(o.n == 16 && o.cap == 16);
    CHECK(ef_outbox_push(&o, 16, EF_MSG_TASK, b) == EF_ERR_NOMEM);
    CHECK(o.n == 16 && o.cap == 16 && o.v[15].buf == b);
    CHECK(b->refs == 17);
    g_budget = -1;
    ef_buf_unref(b);
    ef_outbox_free(&o);
    CHECK(g_live == 0);
    ef_set_allocator(NULL);
}

static void test_wire_floats(void) {
    /* 1.0, -2.5, FLT_MAX, smallest denormal, -0.0, NaN payload -- at offset 1 */
    static const uint8_t raw[1 + 24] = {0xEE,
                                        0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0,
                                        0xff, 0xff, 0x7f, 0x7f, 0x01, 0x00, 0x00, 0x00,
                                        0x00, 0x00, 0x00, 0x80, 0x01, 0x00, 0xc0, 0x7f};
    const uint32_t want[6] = {0x3f800000u, 0xc0200000u, 0x7f7fffffu,
                              0x00000001u, 0x80000000u, 0x7fc00001u};
    float out[7];
    out[6] = 123.0f;
    ef_wire_floats(out, raw + 1, 6);
    for (int i = 0; i < 6; i++) {
        uint32_t u;
        memcpy(&u, &out[i], 4);
        CHECK_MSG(u == want[i], "float %d: 0x%08x != 0x%08x", i, u, want[i]);
    }
    CHECK(out[0] == 1.0f && out[1] == -2.5f && out[2] == FLT_MAX);
    CHECK(out[6] == 123.0f); /* nothing written past n */
}

static void hex(char *out, const uint8_t *h) {
    for (int i = 0; i < EF_HASH_BYTES; i++) sprintf(out + 2 * i, "%02x", h[i]);
}

/* Expected values from Python: hashlib.blake2b(data, digest_size=32). */
static void test_hash(void) {
    uint8_t h[EF_HASH_BYTES];
    char s[2 * EF_HASH_BYTES + 1];
    ef_hash(h, "abc", 3);
    hex(s, h);
    CHECK_MSG(strcmp(s, "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319") == 0,
              "blake2b-256(\"abc\") = %s", s);
    ef_hash(h, "", 0);
    hex(s, h);
    CHECK_MSG(strcmp(s, "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8") == 0,
              "blake2b-256(\"\") = %s", s);
    /* longer than one 128-byte block: bytes(i % 251 for i in range(1000)) */
    uint8_t data[1000];
    for (int i = 0; i < 1000; i++) data[i] = (uint8_t)(i % 251);
    ef_hash(h, data, sizeof data);
    hex(s, h);
    CHECK_MSG(strcmp(s, "b372d0608f720c8c3dd41e9c8eecb10143b41abe520b616607e754bf79c08331") == 0,
              "blake2b-256(1000 bytes) = %s", s);
}

static void test_type_names(void) {
    CHECK(strcmp(ef_msg_type_name(EF_MSG_CHECKIN), "checkin") == 0);
    CHECK(strcmp(ef_msg_type_name(EF_MSG_MODEL), "model") == 0);
    CHECK(strcmp(ef_msg_type_name(EF_MSG_TASK), "task") == 0);
    CHECK(strcmp(ef_msg_type_name(EF_MSG_UPDATE), "update") == 0);
    CHECK(strcmp(ef_msg_type_name(EF_MSG_EVAL), "eval") == 0);
    CHECK(strcmp(ef_msg_type_name(EF_MSG_EVAL_RESULT), "eval_result") == 0);
    CHECK(strcmp(ef_msg_type_name(EF_MSG_LEAVE), "leave") == 0);
    CHECK(strcmp(ef_msg_type_name((ef_msg_type)0), "unknown") == 0);
    CHECK(strcmp(ef_msg_type_name(EF_MSG_SA_SETUP), "sa_setup") == 0);
    CHECK(strcmp(ef_msg_type_name(EF_MSG_SA_MASKED), "sa_masked") == 0);
    CHECK(strcmp(ef_msg_type_name(EF_MSG_SA_REVEAL), "sa_reveal") == 0);
    CHECK(strcmp(ef_msg_type_name(EF_MSG_PARTIAL), "partial") == 0);
    CHECK(strcmp(ef_msg_type_name((ef_msg_type)(EF_MSG_LAST + 1)), "unknown") == 0);
    CHECK(strcmp(ef_msg_type_name((ef_msg_type)255), "unknown") == 0);
    CHECK(strcmp(ef_msg_type_name((ef_msg_type)-1), "unknown") == 0);
}

/* SA_SETUP and SA_MASKED decode to what good_payload wrote; every field. */
static void test_roundtrip_secagg(void) {
    uint8_t pl[256];
    ef_msg m;
    uint8_t *b = envelope(EF_MSG_SA_SETUP, pl, good_payload(EF_MSG_SA_SETUP, pl), &m);
    ef_task t;
    ef_sa_setup sa;
    CHECK_OK(ef_decode_sa_setup(&m, &t, &sa));
    ef_task want = good_task();
    CHECK(t.version == want.version && t.epochs == want.epochs && t.seed == want.seed);
    CHECK(sa.index == 2 && sa.n == 5 && sa.k == 4 && sa.t == 3 && sa.bits == 32);
    CHECK(sa.levels == 1000 && sa.dp_kind == 1 && sa.flags == EF_SA_FLAG_NO_MASK);
    CHECK(sa.clip == 0.5 && sa.weight_cap == 1000.0 && sa.dp_clip == 2.0 && sa.dp_noise == 77.25);
    free(b);
    /* each range check on its own */
    static const struct {
        int off;  /* offset in the SecAgg+ part */
        int f64;  /* a double field */
        double v;
        const char *what;
    } bad[] = {{0, 0, 5, "index == n"}, {4, 0, 1, "n == 1"},   {12, 0, 0, "t == 0"},
               {16, 0, 0, "bits 0"},    {16, 0, 33, "bits 33"}, {20, 0, 0, "levels 0"},
               {24, 0, 3, "dp kind 3"}, {28, 0, 2, "flags 2"},  {32, 1, 0.0, "clip 0"},
               {32, 1, NAN, "clip NaN"}, {40, 1, -1.0, "weight cap < 0"},
               {48, 1, INFINITY, "dp clip inf"}, {56, 1, -0.5, "dp noise < 0"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        size_t n = good_payload(EF_MSG_SA_SETUP, pl);
        uint8_t *q = pl + EF_TASK_PAYLOAD + bad[i].off;
        if (bad[i].f64) ef__wrf64(q, bad[i].v);
        else ef__wr32(q, (uint32_t)bad[i].v);
        b = envelope(EF_MSG_SA_SETUP, pl, n, &m);
        CHECK_MSG(ef_decode_sa_setup(&m, &t, &sa) == EF_ERR_FORMAT, "%s accepted", bad[i].what);
        free(b);
    }
    b = envelope(EF_MSG_SA_MASKED, pl, good_payload(EF_MSG_SA_MASKED, pl), &m);
    ef_sa_masked sm;
    CHECK_OK(ef_decode_sa_masked(&m, &sm));
    CHECK(sm.version == 1 && sm.n_examples == 5 && sm.train_loss == 0.25f && sm.steps == 3);
    CHECK(sm.flags == 1 && sm.n == 3 && sm.raw == m.payload + EF_SA_MASKED_FIXED);
    CHECK(ef__rd32(sm.raw + 8) == 0xDEADBEEFu + 2);
    free(b);
}

int main(void) {
    test_seal_layout();
    test_roundtrip_secagg();
    test_roundtrip_checkin();
    test_roundtrip_model();
    test_roundtrip_task();
    test_roundtrip_update();
    test_roundtrip_eval();
    test_roundtrip_eval_result();
    test_roundtrip_leave();
    test_envelope_rejects();
    test_partial();
    test_signatures();
    test_every_bit_flip();
    test_wrong_type();
    test_payload_sizes();
    test_vector_counts();
    test_unknown_codec();
    test_task_settings();
    test_update_values();
    test_eval_result_values();
    test_buf();
    test_outbox();
    test_wire_floats();
    test_hash();
    test_type_names();
    return tu_finish("test_wire");
}
