/*
 * libFuzzer target for the edge gateway (src/fl/gateway.c). Each input is a
 * list of messages for one gateway in the middle of a real round (a real
 * upstream server sent it a MODEL and a TASK, three real local clients hold
 * their tasks and have their genuine updates ready). A record is
 *
 *   kind u8, len u16 (little-endian), len bytes
 *
 * kind bit 0: 1 upstream, 0 local; bit 1: the bytes patch a genuine message
 * (local: client (kind >> 2) % 3's update; upstream: the server's TASK) as
 * (offset u16, value u8) triples, else they are the message itself; bit 2
 * clear: the envelope CRC is recomputed over what is there (random bytes
 * almost never keep it right, which would leave the payload checks
 * unexplored).
 *
 * Every message must be taken or refused with a message, never crash, read
 * out of bounds, leak or return EF_ERR_INTERNAL; a refusal sends nothing
 * (except a refused update that ends its sender's task, EF_ERR_INVALID /
 * EF_ERR_RANGE, which may complete the round). And refusals change nothing:
 * when every record was refused without ending a task, the three genuine
 * updates are still taken and their exact partial goes upstream.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "edgefl/client.h"
#include "edgefl/gateway.h"
#include "edgefl/params.h"
#include "edgefl/server.h"
#include "edgefl/strategy.h"

#define NP 4
#define NC 3
#define JOB 5

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void must(ef_status st) {
    if (st != EF_OK) abort();
}

static ef_status fit(void *user, int worker, uint32_t id, const float *global, size_t n,
                     const ef_task *task, float *delta, ef_fit_result *res) {
    (void)user, (void)worker, (void)global, (void)task;
    for (size_t j = 0; j < n; j++) delta[j] = 0.25f * (float)id - 0.5f * (float)j;
    res->n_examples = id;
    res->train_loss = 0.5f;
    res->steps = 1;
    return EF_OK;
}

static void fix_crc(uint8_t *b, size_t len) {
    if (len < EF_WIRE_HEADER) return;
    uint32_t plen = (uint32_t)b[40] | (uint32_t)b[41] << 8 | (uint32_t)b[42] << 16 |
                    (uint32_t)b[43] << 24;
    if (plen > len - EF_WIRE_HEADER) plen = (uint32_t)(len - EF_WIRE_HEADER);
    uLong c = crc32(0L, Z_NULL, 0);
    c = crc32(c, b, EF_WIRE_HEADER - 4);
    c = crc32(c, b + EF_WIRE_HEADER, (uInt)plen);
    for (int i = 0; i < 4; i++) b[44 + i] = (uint8_t)(c >> (8 * i));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ef_log_set(NULL, NULL, EF_LOG_ERROR);
    /* a real round: server -> gateway -> three clients */
    ef_params *p = NULL;
    int64_t shape[1] = {NP};
    must(ef_params_new(&p));
    must(ef_params_add(p, "w", 1, shape));
    must(ef_params_alloc(p));
    for (int j = 0; j < NP; j++) ef_params_data(p)[j] = 1.0f;
    ef_server_config sc = ef_server_defaults();
    sc.job = JOB;
    sc.rounds = 1;
    sc.clients_per_round = 1;
    ef_strategy_config st = ef_strategy_defaults(EF_STRAT_FEDAVG);
    ef_server *s;
    must(ef_server_new(&s, &sc, &st, p, NULL, NULL));
    ef_params_free(p);
    ef_gateway_config gc = ef_gateway_defaults();
    gc.job = JOB;
    gc.id = 77;
    gc.n_params = NP;
    gc.min_local = NC;
    ef_gateway *g;
    must(ef_gateway_new(&g, &gc));
    ef_trainer tr = {fit, NULL, NULL};
    ef_client *c[NC];
    ef_outbox up = {0}, down = {0}, gout = {0}, cup[NC] = {{0}};
    for (int k = 0; k < NC; k++) {
        ef_client_config cc = {.job = JOB, .id = (uint32_t)(k + 1), .n_train = 10, .n_params = NP};
        must(ef_client_new(&c[k], &cc, &tr));
        must(ef_client_checkin(c[k], &up));
        must(ef_gateway_handle_local(g, 0.0, up.v[0].buf->data, up.v[0].buf->len, &gout));
        ef_outbox_clear(&up);
    }
    if (gout.n != 1) abort();
    must(ef_server_handle(s, 0.0, gout.v[0].buf->data, gout.v[0].buf->len, &down));
    ef_outbox_clear(&gout);
    if (down.n != 2) abort();
    ef_buf *task = ef_buf_ref(down.v[1].buf);
    for (size_t i = 0; i < down.n; i++) must(ef_gateway_handle_upstream(g, 1.0, down.v[i].buf, &gout));
    for (size_t i = 0; i < gout.n; i++)
        must(ef_client_handle(c[gout.v[i].to - 1], gout.v[i].buf, 0, &cup[gout.v[i].to - 1]));
    ef_outbox_clear(&gout);
    for (int k = 0; k < NC; k++)
        if (cup[k].n != 1) abort();

    /* the fuzzed messages */
    int spent = 0; /* a record was taken, or refused in a way that ends a task */
    size_t off = 0;
    while (off + 3 <= size) {
        uint8_t kind = data[off];
        size_t len = (size_t)data[off + 1] | (size_t)data[off + 2] << 8;
        off += 3;
        if (len > size - off) len = size - off;
        const uint8_t *rec = data + off;
        off += len;
        int upstream = kind & 1;
        ef_buf *b;
        if (kind & 2) {
            const ef_buf *src = upstream ? task : cup[(kind >> 2) % NC].v[0].buf;
            b = ef_buf_new(src->len);
            if (!b) abort();
            memcpy(b->data, src->data, src->len);
            for (size_t i = 0; i + 3 <= len; i += 3) {
                size_t at = ((size_t)rec[i] | (size_t)rec[i + 1] << 8) % src->len;
                b->data[at] = rec[i + 2];
            }
        } else {
            b = ef_buf_new(len);
            if (!b) abort();
            if (len) memcpy(b->data, rec, len);
        }
        if (!(kind & 4)) fix_crc(b->data, b->len);
        ef_clear_error();
        ef_status r = upstream ? ef_gateway_handle_upstream(g, 2.0, b, &gout)
                               : ef_gateway_handle_local(g, 2.0, b->data, b->len, &gout);
        ef_buf_unref(b);
        if (r == EF_OK || r == EF_ERR_INVALID || r == EF_ERR_RANGE) {
            spent = 1;
        } else {
            if (r == EF_ERR_INTERNAL || ef_last_error()[0] == '\0') abort();
            if (gout.n != 0) abort(); /* a refusal sends nothing */
        }
        ef_outbox_clear(&gout);
    }

    /* the genuine updates */
    ef_gateway_stats before;
    ef_gateway_get_stats(g, &before);
    for (int k = 0; k < NC; k++) {
        ef_status r = ef_gateway_handle_local(g, 3.0, cup[k].v[0].buf->data, cup[k].v[0].buf->len,
                                              &gout);
        if (!spent && r != EF_OK) abort();
    }
    if (!spent) {
        ef_gateway_stats after;
        ef_gateway_get_stats(g, &after);
        if (after.partials_sent != before.partials_sent + 1 || gout.n != 1) abort();
        ef_msg m;
        ef_update u;
        must(ef_wire_decode(gout.v[0].buf->data, gout.v[0].buf->len, (size_t)-1, &m));
        must(ef_decode_update(&m, &u));
        if (u.n_examples != 1 + 2 + 3 || u.n != NP) abort();
        float d[NP];
        ef_wire_floats(d, u.raw, NP);
        for (int j = 0; j < NP; j++) /* sum_k k (k/4 - j/2) / 6 = 14/24 - j/2 */
            if (d[j] != (float)(14.0 / 24.0 - 0.5 * j)) abort();
    }
    ef_outbox_clear(&gout);
    must(ef_gateway_tick(g, 1e9, &gout));

    ef_buf_unref(task);
    ef_outbox_free(&up);
    ef_outbox_free(&down);
    ef_outbox_free(&gout);
    for (int k = 0; k < NC; k++) {
        ef_outbox_free(&cup[k]);
        ef_client_free(c[k]);
    }
    ef_gateway_free(g);
    ef_server_free(s);
    return 0;
}
