/*
 * libFuzzer target for the SecAgg+ payload parsers (src/privacy/secagg.c):
 * a small real round (6 clients, 4 neighbours, threshold 3) is brought to
 * the stage the first input byte picks, and the rest of the input is handed
 * as the payload of that stage to a client (KEYS, FORWARD, UNMASK) or to the
 * server (ADVERTISE, SHARES, REVEAL). Every input must be taken or refused
 * with a message, never crash or read out of bounds; and a refusal must
 * change nothing: the genuine payload is still taken afterwards.
 */
#include <stdlib.h>
#include <string.h>

#include "core/core_internal.h"
#include "privacy/secagg_internal.h"

#define N 6
#define D 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct round_state {
    ef_sa_params p;
    ef_sa_client *c[N];
    ef_sa_server *s;
    uint8_t *msg[N]; /* the server's message of the current stage to each client */
    size_t len[N];
} round_state;

static void must(ef_status st) {
    if (st != EF_OK) abort();
}

/* A refusal is an error with a message, never EF_ERR_INTERNAL. */
static void check_refusal(ef_status st) {
    if (st == EF_OK) return;
    if (st == EF_ERR_INTERNAL || ef_last_error()[0] == '\0') abort();
}

static void next_messages(round_state *r) {
    for (uint32_t i = 0; i < N; i++) {
        ef_free(r->msg[i]);
        r->msg[i] = NULL;
        must(ef_sa_server_message_for(r->s, i, &r->msg[i], &r->len[i]));
    }
}

/* Runs the round up to `stage`: the server expects that stage's answers and
 * r->msg holds what it sent each client for it (stage >= 2). */
static void setup(round_state *r, int stage) {
    memset(r, 0, sizeof *r);
    r->p = (ef_sa_params){.n = N, .k = 4, .t = 3, .bits = 16, .d = D, .round = 9};
    uint8_t key[32];
    ef__drbg_key_from_seed(key, 1, "fuzz-secagg");
    must(ef_sa_server_new(&r->s, &r->p));
    for (uint32_t i = 0; i < N; i++) must(ef_sa_client_new(&r->c[i], &r->p, i, key));
    if (stage == 1) return;
    for (uint32_t i = 0; i < N; i++) {
        uint8_t adv[2 * EF_SA_PK_BYTES];
        must(ef_sa_client_advertise(r->c[i], adv));
        must(ef_sa_server_on_advertise(r->s, i, adv, sizeof adv));
    }
    must(ef_sa_server_close(r->s));
    next_messages(r);
    if (stage == 2) return;
    for (uint32_t i = 0; i < N; i++) {
        uint8_t *out;
        size_t olen;
        must(ef_sa_client_share(r->c[i], r->msg[i], r->len[i], &out, &olen));
        must(ef_sa_server_on_shares(r->s, i, out, olen));
        ef_free(out);
    }
    must(ef_sa_server_close(r->s));
    next_messages(r);
    if (stage == 3) return;
    uint32_t x[D] = {0}, y[D];
    for (uint32_t i = 0; i < N; i++) {
        must(ef_sa_client_mask(r->c[i], r->msg[i], r->len[i], x, y));
        must(ef_sa_server_on_masked(r->s, i, y));
    }
    must(ef_sa_server_close(r->s));
    next_messages(r);
}

static void teardown(round_state *r) {
    for (uint32_t i = 0; i < N; i++) {
        ef_sa_client_free(r->c[i]);
        ef_free(r->msg[i]);
    }
    ef_sa_server_free(r->s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    int what = data[0] % 6;
    uint32_t who = data[1] % N;
    const uint8_t *pl = data + 2;
    size_t len = size - 2;
    static const int stage_of[6] = {2, 3, 4, 1, 2, 4};
    round_state r;
    setup(&r, stage_of[what]);
    uint8_t *out = NULL;
    size_t olen = 0;
    uint32_t x[D] = {0}, y[D];
    ef_clear_error();
    ef_status st;
    switch (what) {
    case 0: /* a client's KEYS */
        st = ef_sa_client_share(r.c[who], pl, len, &out, &olen);
        check_refusal(st);
        ef_free(out);
        if (st != EF_OK) { /* refused: the genuine list is still taken */
            must(ef_sa_client_share(r.c[who], r.msg[who], r.len[who], &out, &olen));
            ef_free(out);
        }
        break;
    case 1: /* a client's FORWARD */
        st = ef_sa_client_mask(r.c[who], pl, len, x, y);
        check_refusal(st);
        if (st != EF_OK) must(ef_sa_client_mask(r.c[who], r.msg[who], r.len[who], x, y));
        break;
    case 2: /* a client's UNMASK request: never both shares of one peer */
        st = ef_sa_client_unmask(r.c[who], pl, len, &out, &olen);
        check_refusal(st);
        ef_free(out);
        out = NULL;
        st = ef_sa_client_unmask(r.c[who], r.msg[who], r.len[who], &out, &olen);
        check_refusal(st); /* may be refused if the fuzz request revealed other shares */
        ef_free(out);
        break;
    case 3: { /* the server's ADVERTISE */
        st = ef_sa_server_on_advertise(r.s, who, pl, len);
        check_refusal(st);
        uint8_t adv[2 * EF_SA_PK_BYTES];
        must(ef_sa_client_advertise(r.c[who], adv));
        /* a refused message left no trace; an accepted one makes this a duplicate */
        ef_status st2 = ef_sa_server_on_advertise(r.s, who, adv, sizeof adv);
        if ((st == EF_OK) == (st2 == EF_OK)) abort();
        break;
    }
    case 4: /* the server's SHARES */
        st = ef_sa_server_on_shares(r.s, who, pl, len);
        check_refusal(st);
        if (st != EF_OK) {
            must(ef_sa_client_share(r.c[who], r.msg[who], r.len[who], &out, &olen));
            must(ef_sa_server_on_shares(r.s, who, out, olen));
            ef_free(out);
        }
        break;
    default: /* the server's REVEAL */
        st = ef_sa_server_on_unmask(r.s, who, pl, len);
        check_refusal(st);
        if (st != EF_OK) {
            must(ef_sa_client_unmask(r.c[who], r.msg[who], r.len[who], &out, &olen));
            must(ef_sa_server_on_unmask(r.s, who, out, olen));
            ef_free(out);
        }
        break;
    }
    teardown(&r);
    return 0;
}
