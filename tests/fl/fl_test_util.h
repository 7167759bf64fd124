/*
 * Helpers shared by the protocol tests in tests/fl (test_client.c,
 * test_server.c, test_gateway.c): the tests' own little-endian readers and
 * writers for crafting and inspecting messages (deliberately not the
 * library's, so that a bug in src/fl/wire.c cannot hide itself), message
 * copies with changed header fields, outbox and server-record accessors.
 * Everything is static inline: a test uses what it needs.
 */
#ifndef EF_TESTS_FL_TEST_UTIL_H
#define EF_TESTS_FL_TEST_UTIL_H

#include <stdint.h>
#include <string.h>

#include "edgefl/server.h"
#include "edgefl/wire.h"
#include "test_util.h"

/* ---- little-endian readers and writers ------------------------------------ */

static inline uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t rd64(const uint8_t *p) {
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}
static inline float rdf32(const uint8_t *p) {
    uint32_t u = rd32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline double rdf64(const uint8_t *p) {
    uint64_t u = rd64(p);
    double d;
    memcpy(&d, &u, 8);
    return d;
}
static inline void wr16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void wr64(uint8_t *p, uint64_t v) {
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}
static inline void wrf32(uint8_t *p, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    wr32(p, u);
}

/* ---- crafted messages ------------------------------------------------------ */

/* A copy of `len` bytes of `src` (len may differ from the source: the extra
 * bytes are zero). */
static inline ef_buf *buf_copy(const ef_buf *src, size_t len) {
    ef_buf *b = ef_buf_new(len);
    memset(b->data, 0, len);
    memcpy(b->data, src->data, len < src->len ? len : src->len);
    return b;
}

static inline ef_buf *dup_buf(const ef_buf *b) { return buf_copy(b, b->len); }

/* Recomputes the header (length and CRC) of a crafted, unsigned message
 * from its own header fields and length: a well-formed envelope. */
static inline void reseal(ef_buf *b) {
    ef_wire_seal_task(b->data, (ef_msg_type)b->data[5], rd64(b->data + 8), rd32(b->data + 16),
                      rd32(b->data + 20), rd64(b->data + 24), rd64(b->data + 32),
                      b->len - EF_WIRE_HEADER);
}

/* A resealed copy of `src` with the `bytes`-byte (4 or 8) header field at
 * offset `off` set to v. */
static inline ef_buf *with_header(const ef_buf *src, int off, uint64_t v, int bytes) {
    ef_buf *b = buf_copy(src, src->len);
    if (bytes == 8) wr64(b->data + off, v);
    else wr32(b->data + off, (uint32_t)v);
    reseal(b);
    return b;
}

/* ---- outboxes and records ---------------------------------------------------- */

/* Takes the oldest entry out of `o` (its reference passes to the caller),
 * or NULL when empty. */
static inline ef_buf *pop(ef_outbox *o, ef_msg_type *type) {
    if (o->n == 0) return NULL;
    ef_buf *b = o->v[0].buf;
    if (type) *type = o->v[0].type;
    memmove(o->v, o->v + 1, (o->n - 1) * sizeof *o->v);
    o->n--;
    return b;
}

/* The server's record i, or (a failed check and) a blank record when there
 * is none. */
static inline const ef_round_record *server_record(const ef_server *s, size_t i) {
    static ef_round_record none;
    size_t n;
    const ef_round_record *r = ef_server_records(s, &n);
    CHECK_MSG(i < n, "no record %zu (%zu stored)", i, n);
    if (i >= n) {
        none = ef_round_record_empty(0);
        return &none;
    }
    return &r[i];
}

static inline size_t server_n_records(const ef_server *s) {
    size_t n;
    ef_server_records(s, &n);
    return n;
}

/* The server configuration the protocol tests start from: job `job`, two
 * local epochs, batch 16, lr 1/8, momentum 1/2 (exact in float), seed 7. */
static inline ef_server_config fl_base_config(uint64_t job) {
    ef_server_config cfg = ef_server_defaults();
    cfg.job = job;
    cfg.local_epochs = 2;
    cfg.batch = 16;
    cfg.lr = 0.125f;
    cfg.momentum = 0.5f;
    cfg.seed = 7;
    return cfg;
}

#endif /* EF_TESTS_FL_TEST_UTIL_H */
