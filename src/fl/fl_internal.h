/*
 * Internal helpers of the protocol core: little-endian field access used by
 * the encoders and decoders.
 */
#ifndef EDGEFL_FL_INTERNAL_H
#define EDGEFL_FL_INTERNAL_H

#include <stdint.h>

#include "edgefl/wire.h"

uint16_t ef__rd16(const uint8_t *p);
uint32_t ef__rd32(const uint8_t *p);
uint64_t ef__rd64(const uint8_t *p);
float ef__rdf32(const uint8_t *p);
double ef__rdf64(const uint8_t *p);
void ef__wr16(uint8_t *p, uint16_t v);
void ef__wr32(uint8_t *p, uint32_t v);
void ef__wr64(uint8_t *p, uint64_t v);
void ef__wrf32(uint8_t *p, float f);
void ef__wrf64(uint8_t *p, double d);

/* A message buffer for a payload of payload_len bytes, with room for a
 * signature when `sign` is set. NULL on OOM. */
ef_buf *ef__msg_new(size_t payload_len, int sign);
/* Seals the payload already at b->data + EF_WIRE_HEADER and, when sk is not
 * NULL, signs it (b must come from ef__msg_new with sign set). */
void ef__msg_seal(ef_buf *b, ef_msg_type type, uint64_t job, uint32_t round, uint32_t sender,
                  uint64_t seq, uint64_t task, size_t payload_len, const uint8_t *sk);

/* Authenticates message m (decoded from buf) from a sender whose
 * allow-listed public key is pk (NULL: not on the allow-list): EF_ERR_AUTH
 * unless it is signed by pk and its counter is above *last_seq, which then
 * moves up to it. Shared by the server and the gateway, which check their
 * clients the same way. */
ef_status ef__auth_incoming(const uint8_t *buf, const ef_msg *m, const uint8_t *pk,
                            uint64_t *last_seq);

/* A new sealed (and, with sk, signed) message holding a copy of payload
 * (plen bytes). NULL on OOM. */
ef_buf *ef__msg_copy(ef_msg_type type, uint64_t job, uint32_t round, uint32_t sender,
                     uint64_t seq, uint64_t task, const uint8_t *payload, size_t plen,
                     const uint8_t *sk);

/* An open-addressing map from a client id to the index of its record in an
 * array whose records start with their uint32_t id (`stride` bytes apart).
 * Slots hold index + 1; the table is at most half full. */
typedef struct ef__idmap {
    uint32_t *slots;
    size_t n_slots;
} ef__idmap;

/* The index of the record with `id`, or -1. */
long ef__idmap_find(const ef__idmap *m, uint32_t id, const void *recs, size_t stride);
/* Maps `id` to index n (the records 0..n-1 already mapped), growing the
 * table first when needed. EF_ERR_NOMEM leaves the map as it was. */
ef_status ef__idmap_put(ef__idmap *m, uint32_t id, size_t n, const void *recs, size_t stride);
void ef__idmap_free(ef__idmap *m);

#endif /* EDGEFL_FL_INTERNAL_H */
