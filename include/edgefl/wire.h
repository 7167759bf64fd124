/*
 * The wire format of the federated protocol: one versioned binary envelope
 * for every message, whatever carries it (the in-process simulator, MQTT).
 *
 * Envelope (little-endian, 48 bytes, then the payload, then the signature
 * when the message is signed):
 *
 *   off size field
 *     0    4 magic      "EFL1"
 *     4    1 version    EF_WIRE_VERSION (2)
 *     5    1 type       ef_msg_type
 *     6    2 flags      bit 0 EF_WIRE_SIGNED; other bits must be 0
 *     8    8 job        job id: messages of another job are refused
 *    16    4 round      round (or model version) the message belongs to
 *    20    4 sender     client id, or EF_SERVER_ID
 *    24    8 seq        the sender's message counter (strictly increasing: a
 *                       signed message whose seq is not above the last one
 *                       seen from its sender is a replay)
 *    32    8 task       the task the message assigns (server) or answers
 *                       (client): the seq of the server's TASK, SA_SETUP or
 *                       EVAL message; 0 for CHECKIN, MODEL and LEAVE
 *    40    4 length     payload bytes
 *    44    4 crc        CRC-32 of bytes 0..43 and of the payload
 *    48    . payload
 *     .   64 signature  (EF_WIRE_SIGNED) Ed25519 over "edgefl-msg-sig1\0" ||
 *                       BLAKE2b-256(bytes 0 .. 48 + length)
 *
 * Payloads (little-endian; float vectors are raw IEEE-754 binary32):
 *
 *   CHECKIN      n_train u32, n_eval u32
 *   MODEL        version u32, codec u32 (0: raw f32), n u64, n floats
 *   TASK         version u32, hash[32], deadline_s f32, epochs u16, batch u16,
 *                lr f32, momentum f32, prox_mu f32, seed u64
 *   UPDATE       version u32, n_examples u32, train_loss f32, steps u32,
 *                codec u32 (0), pad u32, n u64, n floats (w_local - w_global)
 *   EVAL         version u32, pad u32, hash[32]
 *   EVAL_RESULT  version u32, n_examples u32, loss_sum f64, correct u32, pad u32
 *   LEAVE        reason u32 (a client going away; over MQTT, its last will)
 *   PARTIAL      version u32, count u32, n u64, loss_sum f64 (sum of n_examples x
 *                train_loss), count entries of 24 bytes {client u32, n_examples u32,
 *                task u64, seq u64} in increasing client order, then n floats: the
 *                example-weighted mean of those clients' updates (an aggregator
 *                worker's share of a round; see docs/deploy.md, scale-out)
 *
 * Padding words are reserved and must be zero. Decoders check every length
 * against the bytes actually present, reject unknown types, versions, flags
 * and codecs, and never trust a count before multiplying it out with
 * overflow checks. They check scalar fields; the floats of a vector are
 * checked by whoever uses them (ef_strategy_add refuses non-finite updates).
 */
#ifndef EDGEFL_WIRE_H
#define EDGEFL_WIRE_H

#include "edgefl/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EF_WIRE_VERSION 2
#define EF_WIRE_HEADER 48
#define EF_WIRE_SIGNED 1u    /* flags: an Ed25519 signature follows the payload */
#define EF_SIG_BYTES 64
#define EF_PK_BYTES 32       /* Ed25519 public key */
#define EF_SK_BYTES 64       /* Ed25519 secret key (libsodium layout: seed || public key) */
#define EF_SERVER_ID 0xFFFFFFFFu
#define EF_BROADCAST_ID 0xFFFFFFFEu
#define EF_HASH_BYTES 32

typedef enum ef_msg_type {
    EF_MSG_CHECKIN = 1,
    EF_MSG_MODEL = 2,
    EF_MSG_TASK = 3,
    EF_MSG_UPDATE = 4,
    EF_MSG_EVAL = 5,
    EF_MSG_EVAL_RESULT = 6,
    EF_MSG_LEAVE = 7,
    /* secure aggregation (SecAgg+), synchronous rounds; see docs/privacy.md */
    EF_MSG_SA_SETUP = 8,      /* server -> client: the task and the round's SecAgg+ settings */
    EF_MSG_SA_ADVERTISE = 9,  /* client -> server: its two public keys */
    EF_MSG_SA_KEYS = 10,      /* server -> client: its neighbours' public keys */
    EF_MSG_SA_SHARES = 11,    /* client -> server: encrypted shares for its neighbours */
    EF_MSG_SA_FORWARD = 12,   /* server -> client: the shares addressed to it */
    EF_MSG_SA_MASKED = 13,    /* client -> server: its masked, quantized update */
    EF_MSG_SA_UNMASK = 14,    /* server -> client: whose shares to reveal */
    EF_MSG_SA_REVEAL = 15,    /* client -> server: the revealed shares */
    /* scale-out: an aggregator worker's partial aggregate of several clients' updates */
    EF_MSG_PARTIAL = 16       /* worker -> server */
} ef_msg_type;

#define EF_MSG_LAST EF_MSG_PARTIAL

/* Name of a message type ("update"), or "unknown". */
EF_API const char *ef_msg_type_name(ef_msg_type t);

/* A decoded envelope; `payload` points into the decoded buffer. */
typedef struct ef_msg {
    ef_msg_type type;
    uint16_t flags;
    uint64_t job;
    uint32_t round;
    uint32_t sender;
    uint64_t seq;
    uint64_t task;
    const uint8_t *payload;
    size_t payload_len;
    const uint8_t *sig;  /* EF_SIG_BYTES after the payload, or NULL when unsigned */
} ef_msg;

/*
 * Decodes and checks an envelope of `len` bytes: magic, version, type,
 * flags, length (header + payload (+ signature) == len exactly; payload <=
 * max_payload), CRC. EF_ERR_FORMAT with a message saying which check
 * failed. The signature, if any, is not checked here (ef_wire_verify).
 */
EF_API ef_status ef_wire_decode(const uint8_t *buf, size_t len, size_t max_payload, ef_msg *out);

/* Writes the 48-byte header (task 0, unsigned) for a payload already at
 * buf + EF_WIRE_HEADER, computing the CRC over header and payload.
 * payload_len must fit in 32 bits (encoders only build messages below 4 GiB). */
EF_API void ef_wire_seal(uint8_t *buf, ef_msg_type type, uint64_t job, uint32_t round,
                         uint32_t sender, uint64_t seq, size_t payload_len);
/* The same with the task field. */
EF_API void ef_wire_seal_task(uint8_t *buf, ef_msg_type type, uint64_t job, uint32_t round,
                              uint32_t sender, uint64_t seq, uint64_t task, size_t payload_len);

/* Signs a sealed message: sets EF_WIRE_SIGNED, recomputes the CRC and writes
 * the signature after the payload (buf must have EF_SIG_BYTES more bytes). */
EF_API void ef_wire_sign(uint8_t *buf, size_t payload_len, const uint8_t sk[EF_SK_BYTES]);

/* Checks the signature of message m (decoded from buf) against public key
 * pk: EF_ERR_AUTH ("unsigned", "bad signature") unless it verifies. */
EF_API ef_status ef_wire_verify(const uint8_t *buf, const ef_msg *m, const uint8_t pk[EF_PK_BYTES]);

/* ---- payloads ------------------------------------------------------------ */

typedef struct ef_checkin {
    uint32_t n_train, n_eval;
} ef_checkin;

typedef struct ef_model_msg {
    uint32_t version;
    uint64_t n;
    const float *data; /* n floats inside the message (4-byte aligned when the
                        * buffer is) -- use ef_wire_floats for safe access */
    const uint8_t *raw;
} ef_model_msg;

typedef struct ef_task {
    uint32_t version;
    uint8_t hash[EF_HASH_BYTES]; /* BLAKE2b-256 of the MODEL payload's floats */
    float deadline_s;            /* seconds from receipt the server will wait; 0: none */
    uint16_t epochs, batch;
    float lr, momentum, prox_mu;
    uint64_t seed;
} ef_task;

typedef struct ef_update {
    uint32_t version, n_examples;
    float train_loss;
    uint32_t steps;
    uint64_t n;
    const uint8_t *raw; /* n little-endian floats inside the message */
} ef_update;

/* The SecAgg+ part of an SA_SETUP message (after a TASK payload). */
typedef struct ef_sa_setup {
    uint32_t index;      /* this client's participant index, 0..n-1 */
    uint32_t n, k, t;    /* participants, neighbours, threshold */
    uint32_t bits;       /* sums mod 2^bits */
    uint32_t levels;     /* quantization levels L over [-clip, clip] */
    uint32_t dp_kind;    /* distributed noise: 0 none, 1 Skellam, 2 discrete Gaussian */
    uint32_t flags;      /* EF_SA_FLAG_NO_MASK: the unmasked baseline */
    double clip;         /* per-coordinate clipping range R */
    double weight_cap;   /* an update's weight is min(n_examples, weight_cap) / weight_cap */
    double dp_clip;      /* L2 clipping norm of the update (0: none) */
    double dp_noise;     /* distributed noise per client, in quantized units (mu or sigma) */
} ef_sa_setup;

/* The fixed part of an SA_MASKED message; the masked words follow. */
typedef struct ef_sa_masked {
    uint32_t version, n_examples;
    float train_loss;
    uint32_t steps;
    uint32_t flags;      /* bit 0: the update's L2 norm was within dp_clip (adaptive clipping) */
    uint64_t n;          /* words that follow */
    const uint8_t *raw;  /* n little-endian uint32 inside the message */
} ef_sa_masked;

typedef struct ef_eval_task {
    uint32_t version;
    uint8_t hash[EF_HASH_BYTES];
} ef_eval_task;

typedef struct ef_eval_result {
    uint32_t version, n_examples;
    double loss_sum;
    uint32_t correct;
} ef_eval_result;

/* Payload decoders: EF_ERR_FORMAT unless the payload has exactly the size its
 * fields imply and every scalar field is valid (finite, in range, known
 * codec, zero padding). */
EF_API ef_status ef_decode_checkin(const ef_msg *m, ef_checkin *out);
EF_API ef_status ef_decode_model(const ef_msg *m, ef_model_msg *out);
EF_API ef_status ef_decode_task(const ef_msg *m, ef_task *out);
EF_API ef_status ef_decode_update(const ef_msg *m, ef_update *out);
EF_API ef_status ef_decode_eval(const ef_msg *m, ef_eval_task *out);
EF_API ef_status ef_decode_eval_result(const ef_msg *m, ef_eval_result *out);
EF_API ef_status ef_decode_leave(const ef_msg *m, uint32_t *reason);
/* One client's update inside a PARTIAL. */
typedef struct ef_partial_entry {
    uint32_t client, n_examples;
    uint64_t task, seq;
} ef_partial_entry;

typedef struct ef_partial {
    uint32_t version, count;
    uint64_t n;
    double loss_sum;
    const uint8_t *entries; /* count x EF_PARTIAL_ENTRY bytes: use ef_partial_get */
    const uint8_t *raw;     /* n little-endian floats */
} ef_partial;

/* PARTIAL: count >= 1, entries with n_examples >= 1 and strictly
 * increasing client ids below EF_BROADCAST_ID, finite loss_sum. */
EF_API ef_status ef_decode_partial(const ef_msg *m, ef_partial *out);
/* Entry i (< count) of a decoded PARTIAL. */
EF_API void ef_partial_get(const ef_partial *p, uint32_t i, ef_partial_entry *out);

/* SA_SETUP: a TASK payload, then the SecAgg+ settings (checked for range:
 * index < n, 2 <= n, 1 <= t, 1 <= bits <= 32, levels >= 1, finite positive
 * clip and weight cap, dp_kind and flags known, dp values finite and >= 0). */
EF_API ef_status ef_decode_sa_setup(const ef_msg *m, ef_task *task, ef_sa_setup *out);
EF_API ef_status ef_decode_sa_masked(const ef_msg *m, ef_sa_masked *out);

/* Copies n little-endian floats from raw (any alignment) into out. */
EF_API void ef_wire_floats(float *out, const uint8_t *raw, size_t n);

/* Payload sizes (bytes) of the fixed parts, and of vector messages. */
#define EF_TASK_PAYLOAD 64
#define EF_MODEL_FIXED 16
#define EF_UPDATE_FIXED 32
#define EF_SA_SETUP_PAYLOAD (EF_TASK_PAYLOAD + 64)
#define EF_SA_MASKED_FIXED 32
#define EF_SA_FLAG_NO_MASK 1u
#define EF_PARTIAL_FIXED 24
#define EF_PARTIAL_ENTRY 24

/* ---- reference-counted message buffers and outboxes --------------------- */

/* An immutable encoded message shared by its recipients. */
typedef struct ef_buf {
    uint8_t *data; /* 64-byte aligned: payload floats at fixed offsets are aligned */
    size_t len;
    int refs;      /* atomic */
} ef_buf;

/* New buffer of `len` bytes (uninitialized) with one reference. NULL on OOM. */
EF_API ef_buf *ef_buf_new(size_t len);
/* Adds a reference; returns b. */
EF_API ef_buf *ef_buf_ref(ef_buf *b);
/* Drops a reference, freeing at zero. NULL is a no-op. Thread-safe. */
EF_API void ef_buf_unref(ef_buf *b);

/* A message to send: `to` is a client id, EF_SERVER_ID or EF_BROADCAST_ID. */
typedef struct ef_out_msg {
    uint32_t to;
    ef_msg_type type;
    ef_buf *buf; /* one reference owned by the outbox entry */
} ef_out_msg;

typedef struct ef_outbox {
    ef_out_msg *v;
    size_t n, cap;
} ef_outbox;

/* Appends (takes over the caller's reference to buf on success). */
EF_API ef_status ef_outbox_push(ef_outbox *o, uint32_t to, ef_msg_type type, ef_buf *buf);
/* Drops every entry's reference; keeps the array for reuse. */
EF_API void ef_outbox_clear(ef_outbox *o);
/* Clears and frees the array. */
EF_API void ef_outbox_free(ef_outbox *o);

/* BLAKE2b-256 (libsodium crypto_generichash) of n bytes. */
EF_API void ef_hash(uint8_t out[EF_HASH_BYTES], const void *data, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_WIRE_H */
