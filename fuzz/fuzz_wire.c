/*
 * libFuzzer target for the wire decoders (include/edgefl/wire.h): any input
 * must be either decoded consistently or refused with EF_ERR_FORMAT and a
 * message, never crash, read outside the input, hang or leak.
 *
 * Random mutations almost never keep the CRC right, which would leave the
 * payload decoders unexplored; so every input with a full header is decoded
 * twice: as it is, and with its CRC field recomputed over what is there.
 * Seed corpus: tests/fl/wire_corpus/ (see fuzz/run.sh).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "edgefl/wire.h"

#define MAX_PAYLOAD ((size_t)1 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A refusal must be EF_ERR_FORMAT with a message. */
static void want_refusal(ef_status st) {
    if (st != EF_ERR_FORMAT || ef_last_error()[0] == '\0') abort();
}

/* Runs the decoder of type t; on success checks what the result promises. */
static ef_status decode_as(ef_msg_type t, const ef_msg *m, const uint8_t *end) {
    ef_status st = EF_ERR_INTERNAL;
    ef_clear_error();
    switch (t) {
    case EF_MSG_CHECKIN: {
        ef_checkin c;
        st = ef_decode_checkin(m, &c);
        if (st == EF_OK && m->payload_len != 8) abort();
        break;
    }
    case EF_MSG_MODEL: {
        ef_model_msg mm;
        st = ef_decode_model(m, &mm);
        if (st != EF_OK) break;
        /* n*4 + fixed part == payload, computed without wrapping */
        if (m->payload_len < EF_MODEL_FIXED || mm.n > (m->payload_len - EF_MODEL_FIXED) / 4 ||
            mm.n * 4 + EF_MODEL_FIXED != m->payload_len)
            abort();
        if (mm.raw != m->payload + EF_MODEL_FIXED || mm.raw + mm.n * 4 != end ||
            (const void *)mm.data != (const void *)mm.raw)
            abort();
        if (mm.n > 0) {
            /* touch every float: ASan checks they are inside the input */
            float *v = malloc(mm.n * sizeof(float));
            if (!v) abort();
            ef_wire_floats(v, mm.raw, mm.n);
            free(v);
        }
        break;
    }
    case EF_MSG_TASK: {
        ef_task tk;
        st = ef_decode_task(m, &tk);
        if (st != EF_OK) break;
        if (m->payload_len != EF_TASK_PAYLOAD || tk.epochs == 0 || tk.batch == 0 ||
            !(tk.lr > 0) || !isfinite(tk.lr) || !(tk.momentum >= 0 && tk.momentum < 1) ||
            !(tk.deadline_s >= 0) || !isfinite(tk.deadline_s) || !(tk.prox_mu >= 0) ||
            !isfinite(tk.prox_mu))
            abort();
        break;
    }
    case EF_MSG_UPDATE: {
        ef_update u;
        st = ef_decode_update(m, &u);
        if (st != EF_OK) break;
        if (m->payload_len < EF_UPDATE_FIXED || u.n > (m->payload_len - EF_UPDATE_FIXED) / 4 ||
            u.n * 4 + EF_UPDATE_FIXED != m->payload_len)
            abort();
        if (u.raw != m->payload + EF_UPDATE_FIXED || u.raw + u.n * 4 != end ||
            u.n_examples == 0 || !isfinite(u.train_loss))
            abort();
        if (u.n > 0) {
            float *v = malloc(u.n * sizeof(float));
            if (!v) abort();
            ef_wire_floats(v, u.raw, u.n);
            free(v);
        }
        break;
    }
    case EF_MSG_EVAL: {
        ef_eval_task e;
        st = ef_decode_eval(m, &e);
        if (st == EF_OK && m->payload_len != 8 + EF_HASH_BYTES) abort();
        break;
    }
    case EF_MSG_EVAL_RESULT: {
        ef_eval_result r;
        st = ef_decode_eval_result(m, &r);
        if (st == EF_OK &&
            (m->payload_len != 24 || r.correct > r.n_examples || !isfinite(r.loss_sum) ||
             !(r.loss_sum >= 0)))
            abort();
        break;
    }
    case EF_MSG_LEAVE: {
        uint32_t reason;
        st = ef_decode_leave(m, &reason);
        if (st == EF_OK && m->payload_len != 4) abort();
        break;
    }
    case EF_MSG_SA_SETUP: {
        ef_task tk;
        ef_sa_setup sa;
        st = ef_decode_sa_setup(m, &tk, &sa);
        if (st == EF_OK && (m->payload_len != EF_SA_SETUP_PAYLOAD || sa.index >= sa.n ||
                            sa.bits < 1 || sa.bits > 32 || !(sa.clip > 0) || sa.dp_kind > 2))
            abort();
        break;
    }
    case EF_MSG_SA_MASKED: {
        ef_sa_masked sm;
        st = ef_decode_sa_masked(m, &sm);
        if (st == EF_OK && (sm.raw != m->payload + EF_SA_MASKED_FIXED || sm.raw + sm.n * 4 != end ||
                            sm.n_examples == 0 || sm.flags > 1))
            abort();
        break;
    }
    case EF_MSG_PARTIAL: {
        ef_partial pa;
        st = ef_decode_partial(m, &pa);
        if (st != EF_OK) break;
        if (pa.count == 0 || pa.entries != m->payload + EF_PARTIAL_FIXED ||
            pa.raw != pa.entries + (size_t)pa.count * EF_PARTIAL_ENTRY || pa.raw + pa.n * 4 != end ||
            !isfinite(pa.loss_sum))
            abort();
        uint32_t prev = 0;
        for (uint32_t i = 0; i < pa.count; i++) {
            ef_partial_entry e;
            ef_partial_get(&pa, i, &e);
            if (e.n_examples == 0 || e.client >= EF_BROADCAST_ID || (i && e.client <= prev)) abort();
            prev = e.client;
        }
        break;
    }
    default: /* the other SecAgg+ payloads: fuzz_secagg */
        return EF_ERR_FORMAT;
    }
    if (st != EF_OK) want_refusal(st);
    return st;
}

static void check(const uint8_t *buf, size_t len) {
    ef_msg m;
    ef_clear_error();
    ef_status st = ef_wire_decode(buf, len, MAX_PAYLOAD, &m);
    if (st != EF_OK) {
        want_refusal(st);
        return;
    }
    /* the envelope: payload exactly the rest of the input (less a signature),
     * known type, no flags but EF_WIRE_SIGNED */
    size_t tail = (m.flags & EF_WIRE_SIGNED) ? EF_SIG_BYTES : 0;
    if (len < EF_WIRE_HEADER + tail || m.payload != buf + EF_WIRE_HEADER ||
        m.payload_len != len - EF_WIRE_HEADER - tail || m.payload_len > MAX_PAYLOAD ||
        m.type < EF_MSG_CHECKIN || m.type > EF_MSG_LAST || (m.flags & ~EF_WIRE_SIGNED) != 0 ||
        (tail && m.sig != buf + EF_WIRE_HEADER + m.payload_len) || (!tail && m.sig))
        abort();
    /* sealing the decoded fields again gives back the input byte for byte */
    if (!tail) {
        uint8_t *again = malloc(len);
        if (!again) abort();
        memcpy(again + EF_WIRE_HEADER, m.payload, m.payload_len);
        ef_wire_seal_task(again, m.type, m.job, m.round, m.sender, m.seq, m.task, m.payload_len);
        if (memcmp(again, buf, len) != 0) abort();
        free(again);
    }
    /* every decoder of another type refuses it; its own decides */
    for (int t = EF_MSG_CHECKIN; t <= EF_MSG_LAST; t++)
        if (t != (int)m.type && decode_as((ef_msg_type)t, &m, buf + len) == EF_OK) abort();
    decode_as(m.type, &m, buf + len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    check(data, size);
    if (size >= EF_WIRE_HEADER) {
        uint8_t *fixed = malloc(size);
        if (!fixed) abort();
        memcpy(fixed, data, size);
        uLong c = crc32(0L, Z_NULL, 0);
        c = crc32(c, fixed, EF_WIRE_HEADER - 4);
        c = crc32(c, fixed + EF_WIRE_HEADER, (uInt)(size - EF_WIRE_HEADER));
        for (int i = 0; i < 4; i++) fixed[EF_WIRE_HEADER - 4 + i] = (uint8_t)(c >> (8 * i));
        check(fixed, size);
        free(fixed);
    }
    return 0;
}
