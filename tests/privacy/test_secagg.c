/*
 * SecAgg+ state machines driven end to end in one process: the unmasked sum
 * equals the plain sum mod 2^bits of the vectors the server included,
 * exactly, with 0%, 10% and 30% of the clients dropping out at each of the
 * four stages, for SecAgg+ neighbourhoods (k = O(log n)) and classic SecAgg
 * (k = n - 1). Also: too few survivors abort with a reason and no result; a
 * client asked for both shares of one peer refuses; the server's view of a
 * masked vector is uniform bytes; malformed payloads are refused without
 * changing state.
 */
#include <stdlib.h>
#include <string.h>

#include "core/core_internal.h"
#include "privacy/secagg_internal.h"
#include "test_util.h"

typedef struct run {
    ef_sa_params p;
    ef_sa_client **c;
    ef_sa_server *s;
    uint32_t **x;  /* (n, d) inputs */
    uint32_t *y;   /* (d) scratch */
    int *drop_at;  /* stage at which client i stops answering (5: never) */
    uint8_t key[32];
} run;

static uint32_t mod_mask(int bits) { return bits == 32 ? 0xFFFFFFFFu : (1u << bits) - 1u; }

static void run_init(run *r, uint32_t n, uint32_t k, uint32_t t, int bits, size_t d,
                     uint64_t seed) {
    memset(r, 0, sizeof *r);
    r->p = (ef_sa_params){.n = n, .k = k, .t = t, .bits = bits, .d = d, .round = seed};
    ef__drbg_key_from_seed(r->key, seed, "test-secagg");
    r->c = calloc(n, sizeof *r->c);
    r->x = calloc(n, sizeof *r->x);
    r->drop_at = calloc(n, sizeof *r->drop_at);
    r->y = calloc(d, sizeof *r->y);
    ef__drbg g;
    ef__drbg_seed(&g, r->key, 999);
    for (uint32_t i = 0; i < n; i++) {
        r->x[i] = malloc(d * sizeof **r->x);
        for (size_t j = 0; j < d; j++) r->x[i][j] = (uint32_t)ef__drbg_u64(&g) & mod_mask(bits);
        r->drop_at[i] = 5;
        CHECK_OK(ef_sa_client_new(&r->c[i], &r->p, i, r->key));
    }
    ef__drbg_wipe(&g);
    CHECK_OK(ef_sa_server_new(&r->s, &r->p));
}

static void run_free(run *r) {
    for (uint32_t i = 0; i < r->p.n; i++) {
        ef_sa_client_free(r->c[i]);
        free(r->x[i]);
    }
    ef_sa_server_free(r->s);
    free(r->c);
    free(r->x);
    free(r->drop_at);
    free(r->y);
}

/* Drops round(frac * n) clients, chosen by a seeded shuffle, at `stage`. */
static void drop_some(run *r, double frac, int stage, uint64_t seed) {
    uint32_t n = r->p.n, m = (uint32_t)(frac * n + 0.5);
    uint32_t *idx = malloc(n * sizeof *idx);
    for (uint32_t i = 0; i < n; i++) idx[i] = i;
    ef__drbg g;
    ef__drbg_seed(&g, r->key, seed);
    for (uint32_t i = n - 1; i > 0; i--) {
        uint32_t j = (uint32_t)ef__drbg_below(&g, i + 1), tmp = idx[i];
        idx[i] = idx[j], idx[j] = tmp;
    }
    for (uint32_t i = 0; i < m; i++) r->drop_at[idx[i]] = stage;
    free(idx);
}

/* Runs stages 1..last (each closed by the server); returns the status of
 * the first failing close. r->y keeps the last masked vector. */
static ef_status run_stages(run *r, int last) {
    uint32_t n = r->p.n;
    ef_status st;
    for (uint32_t i = 0; i < n; i++) {
        if (r->drop_at[i] <= 1) continue;
        uint8_t adv[2 * EF_SA_PK_BYTES];
        CHECK_OK(ef_sa_client_advertise(r->c[i], adv));
        CHECK_OK(ef_sa_server_on_advertise(r->s, i, adv, sizeof adv));
    }
    if ((st = ef_sa_server_close(r->s)) != EF_OK || last == 1) return st;
    /* stage 2: keys out, shares in */
    for (uint32_t i = 0; i < n; i++) {
        if (!ef_sa_server_alive(r->s, i)) continue;
        uint8_t *msg, *out;
        size_t len, olen;
        CHECK_OK(ef_sa_server_message_for(r->s, i, &msg, &len));
        if (r->drop_at[i] > 2) {
            CHECK_OK(ef_sa_client_share(r->c[i], msg, len, &out, &olen));
            CHECK_OK(ef_sa_server_on_shares(r->s, i, out, olen));
            ef_free(out);
        }
        ef_free(msg);
    }
    if ((st = ef_sa_server_close(r->s)) != EF_OK || last == 2) return st;
    /* stage 3: forwarded shares out, masked inputs in */
    for (uint32_t i = 0; i < n; i++) {
        if (!ef_sa_server_alive(r->s, i)) continue;
        uint8_t *msg;
        size_t len;
        CHECK_OK(ef_sa_server_message_for(r->s, i, &msg, &len));
        if (r->drop_at[i] > 3) {
            CHECK_OK(ef_sa_client_mask(r->c[i], msg, len, r->x[i], r->y));
            CHECK_OK(ef_sa_server_on_masked(r->s, i, r->y));
        }
        ef_free(msg);
    }
    if ((st = ef_sa_server_close(r->s)) != EF_OK || last == 3) return st;
    /* stage 4: unmask requests out, shares in */
    for (uint32_t i = 0; i < n; i++) {
        if (!ef_sa_server_alive(r->s, i)) continue;
        uint8_t *msg, *out;
        size_t len, olen;
        CHECK_OK(ef_sa_server_message_for(r->s, i, &msg, &len));
        if (r->drop_at[i] > 4) {
            CHECK_OK(ef_sa_client_unmask(r->c[i], msg, len, &out, &olen));
            CHECK_OK(ef_sa_server_on_unmask(r->s, i, out, olen));
            ef_free(out);
        }
        ef_free(msg);
    }
    return ef_sa_server_close(r->s);
}

static ef_status run_protocol(run *r) { return run_stages(r, 4); }

/* The result must be the plain sum of exactly the included clients' inputs. */
static void check_sum(run *r, const char *what) {
    const uint32_t *sum;
    uint32_t n_summed;
    CHECK_OK(ef_sa_server_result(r->s, &sum, &n_summed));
    uint32_t mm = mod_mask(r->p.bits), expect_n = 0;
    uint32_t *plain = calloc(r->p.d, sizeof *plain);
    for (uint32_t i = 0; i < r->p.n; i++) {
        /* included exactly when it sent its masked input */
        int in = ef_sa_server_included(r->s, i);
        CHECK_MSG(in == (r->drop_at[i] > 3), "%s: client %u included %d, dropped at %d", what, i,
                  in, r->drop_at[i]);
        if (!in) continue;
        expect_n++;
        for (size_t j = 0; j < r->p.d; j++) plain[j] = (plain[j] + r->x[i][j]) & mm;
    }
    CHECK_MSG(n_summed == expect_n, "%s: %u summed, expected %u", what, n_summed, expect_n);
    CHECK_MSG(memcmp(plain, sum, r->p.d * sizeof *sum) == 0, "%s: the unmasked sum differs", what);
    free(plain);
}

static void test_dropouts(void) {
    static const double fracs[] = {0.0, 0.1, 0.3};
    /* Thresholds that survive 30% dropouts: with k + 1 holders a secret is
     * lost when more than k + 1 - t of them drop, so at 30% the SecAgg+
     * neighbourhoods (k = 12, k = 6) need t near a third of the holders,
     * while classic SecAgg (k = n - 1) keeps a majority. */
    struct {
        uint32_t n, k, t;
        int bits;
    } cases[] = {{40, 0, 5, 20}, {40, 39, 20, 32}, {23, 6, 3, 16}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        uint32_t n = cases[c].n, k = cases[c].k ? cases[c].k : ef_sa_default_k(n);
        uint32_t t = cases[c].t;
        for (size_t f = 0; f < sizeof fracs / sizeof *fracs; f++)
            for (int stage = 1; stage <= 4; stage++) {
                if (fracs[f] == 0.0 && stage > 1) continue;
                char what[96];
                snprintf(what, sizeof what, "n=%u k=%u t=%u bits=%d drop %.0f%% at stage %d", n, k,
                         t, cases[c].bits, 100 * fracs[f], stage);
                run r;
                run_init(&r, n, k, t, cases[c].bits, 1031, 100 * c + 10 * f + (uint64_t)stage);
                drop_some(&r, fracs[f], stage, 7 + (uint64_t)stage);
                ef_status st = run_protocol(&r);
                CHECK_MSG(st == EF_OK, "%s: %s (%s)", what, ef_last_error(),
                          ef_sa_server_abort_reason(r.s));
                if (st == EF_OK) check_sum(&r, what);
                run_free(&r);
            }
    }
}

/* A neighbourhood that loses more than k + 1 - t holders cannot recover
 * the secret of a client that dropped: the round aborts with the reason,
 * however many clients survive overall. */
static void test_abort_lost_neighbourhood(void) {
    run r;
    run_init(&r, 40, 12, 13, 16, 32, 61); /* t = every holder */
    r.drop_at[5] = 3;                      /* drops after sharing: its key is needed */
    r.drop_at[6] = 4;                      /* a neighbour that does not answer the unmask */
    ef_status st = run_protocol(&r);
    CHECK(st == EF_ERR_STATE);
    CHECK_MSG(strstr(ef_sa_server_abort_reason(r.s), "participant 5") != NULL ||
                  strstr(ef_sa_server_abort_reason(r.s), "shares needed") != NULL,
              "reason: %s", ef_sa_server_abort_reason(r.s));
    run_free(&r);
}

static void test_abort_below_threshold(void) {
    /* t = 30 of 40 holders (classic), 30% drop before sharing: 28 left < 30 */
    run r;
    run_init(&r, 40, 39, 30, 24, 64, 5);
    drop_some(&r, 0.3, 2, 11);
    ef_status st = run_protocol(&r);
    CHECK(st == EF_ERR_STATE);
    CHECK(ef_sa_server_stage(r.s) == 0);
    CHECK_MSG(strstr(ef_sa_server_abort_reason(r.s), "threshold is 30") != NULL, "reason: %s",
              ef_sa_server_abort_reason(r.s));
    const uint32_t *sum;
    uint32_t ns;
    CHECK(ef_sa_server_result(r.s, &sum, &ns) == EF_ERR_STATE);
    run_free(&r);
}

/* Runs stages 1-3 for everyone; returns with every client at stage 4. */
static void run_to_unmask(run *r) {
    for (uint32_t i = 0; i < r->p.n; i++) r->drop_at[i] = 5;
    CHECK_OK(run_stages(r, 3));
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void test_refuses_both_shares(void) {
    run r;
    run_init(&r, 12, 4, 3, 16, 16, 21);
    run_to_unmask(&r);
    uint32_t nb[4];
    ef_sa_neighbors(&r.p, 0, nb);
    uint8_t req[8 + 4 * 3], *out = NULL;
    size_t olen;
    /* peer nb[0] named alive and dropped in one request */
    put32(req, 2), put32(req + 4, 1);
    put32(req + 8, 0), put32(req + 12, nb[0]), put32(req + 16, nb[0]);
    CHECK(ef_sa_client_unmask(r.c[0], req, sizeof req, &out, &olen) == EF_ERR_STATE);
    CHECK(out == NULL);
    /* my own key while alive */
    put32(req, 1), put32(req + 4, 1);
    put32(req + 8, nb[1]), put32(req + 12, 0);
    CHECK(ef_sa_client_unmask(r.c[0], req, 16, &out, &olen) == EF_ERR_STATE);
    /* a peer outside the neighbourhood */
    uint32_t far = 6; /* ring distance 6 > k/2 = 2 from 0 */
    CHECK(!ef_sa_is_neighbor(&r.p, 0, far));
    put32(req, 1), put32(req + 4, 0), put32(req + 8, far);
    CHECK(ef_sa_client_unmask(r.c[0], req, 12, &out, &olen) == EF_ERR_STATE);
    /* self-mask share of nb[0] first: fine; then its key share: refused */
    put32(req, 1), put32(req + 4, 0), put32(req + 8, nb[0]);
    CHECK_OK(ef_sa_client_unmask(r.c[0], req, 12, &out, &olen));
    ef_free(out);
    out = NULL;
    put32(req, 0), put32(req + 4, 1), put32(req + 8, nb[0]);
    CHECK(ef_sa_client_unmask(r.c[0], req, 12, &out, &olen) == EF_ERR_STATE);
    CHECK(out == NULL);
    /* asking again for the same kind is answered (a lost answer) */
    put32(req, 1), put32(req + 4, 0), put32(req + 8, nb[0]);
    CHECK_OK(ef_sa_client_unmask(r.c[0], req, 12, &out, &olen));
    ef_free(out);
    run_free(&r);
}

static void test_masked_uniform(void) {
    /* the server sees y = x + masks: with x all zeros the bytes of y must be
     * uniform. Chi-square over 256 byte values with 255 degrees of freedom:
     * 330.5 is its 0.999 quantile, so an honest mask fails 1 run in 1000. */
    run r;
    size_t d = 100000;
    run_init(&r, 10, 4, 3, 32, d, 31);
    for (uint32_t i = 0; i < r.p.n; i++) memset(r.x[i], 0, d * sizeof **r.x);
    run_to_unmask(&r);
    /* r.y holds the last client's masked vector */
    long count[256] = {0};
    const uint8_t *b = (const uint8_t *)r.y;
    for (size_t i = 0; i < d * 4; i++) count[b[i]]++;
    double e = d * 4 / 256.0, chi = 0.0;
    for (int v = 0; v < 256; v++) chi += (count[v] - e) * (count[v] - e) / e;
    CHECK_MSG(chi < 330.5, "chi-square of the masked bytes %.1f", chi);
    run_free(&r);
}

static void test_bad_input(void) {
    run r;
    run_init(&r, 8, 4, 3, 16, 8, 41);
    uint8_t adv[2 * EF_SA_PK_BYTES];
    CHECK_OK(ef_sa_client_advertise(r.c[0], adv));
    CHECK(ef_sa_server_on_advertise(r.s, 0, adv, sizeof adv - 1) == EF_ERR_FORMAT);
    CHECK(ef_sa_server_on_advertise(r.s, 99, adv, sizeof adv) == EF_ERR_FORMAT);
    uint8_t zero[2 * EF_SA_PK_BYTES] = {0};
    CHECK(ef_sa_server_on_advertise(r.s, 0, zero, sizeof zero) == EF_ERR_FORMAT);
    CHECK_OK(ef_sa_server_on_advertise(r.s, 0, adv, sizeof adv));
    CHECK(ef_sa_server_on_advertise(r.s, 0, adv, sizeof adv) == EF_ERR_STATE);
    CHECK(ef_sa_server_on_masked(r.s, 0, r.y) == EF_ERR_STATE); /* wrong stage */
    /* clients out of order */
    uint8_t *out;
    size_t olen;
    CHECK(ef_sa_client_unmask(r.c[1], adv, sizeof adv, &out, &olen) == EF_ERR_STATE);
    CHECK(ef_sa_client_advertise(r.c[0], adv) == EF_ERR_STATE);
    /* a key list naming a non-neighbour, or truncated, is refused; the
     * client can still take the right one */
    uint8_t bad[4 + 4 + 2 * EF_SA_PK_BYTES];
    put32(bad, 1), put32(bad + 4, 4); /* 4 is at ring distance 4 > 2 */
    memset(bad + 8, 7, 2 * EF_SA_PK_BYTES);
    CHECK(ef_sa_client_share(r.c[0], bad, sizeof bad, &out, &olen) == EF_ERR_FORMAT);
    CHECK(ef_sa_client_share(r.c[0], bad, 3, &out, &olen) == EF_ERR_FORMAT);
    for (uint32_t i = 1; i < r.p.n; i++) {
        CHECK_OK(ef_sa_client_advertise(r.c[i], adv));
        CHECK_OK(ef_sa_server_on_advertise(r.s, i, adv, sizeof adv));
    }
    CHECK_OK(ef_sa_server_close(r.s));
    uint8_t *msg;
    size_t len;
    CHECK_OK(ef_sa_server_message_for(r.s, 0, &msg, &len));
    CHECK_OK(ef_sa_client_share(r.c[0], msg, len, &out, &olen));
    /* a truncated share list is refused; the whole one is taken */
    ef_free(msg);
    CHECK(ef_sa_server_on_shares(r.s, 0, out, olen - 1) == EF_ERR_FORMAT);
    CHECK_OK(ef_sa_server_on_shares(r.s, 0, out, olen));
    ef_free(out);
    ef_sa_params bp = r.p;
    bp.k = 3;
    CHECK(ef_sa_params_check(&bp) == EF_ERR_INVALID);
    bp = r.p, bp.t = 6;
    CHECK(ef_sa_params_check(&bp) == EF_ERR_INVALID);
    bp = r.p, bp.bits = 33;
    CHECK(ef_sa_params_check(&bp) == EF_ERR_INVALID);
    run_free(&r);
}

static void test_tampered_forward(void) {
    run r;
    run_init(&r, 8, 4, 3, 16, 8, 51);
    CHECK_OK(run_stages(&r, 2));
    uint8_t *msg;
    size_t len;
    CHECK_OK(ef_sa_server_message_for(r.s, 0, &msg, &len));
    msg[len - 1] ^= 1; /* flip a tag bit */
    CHECK(ef_sa_client_mask(r.c[0], msg, len, r.x[0], r.y) == EF_ERR_FORMAT);
    msg[len - 1] ^= 1;
    CHECK_OK(ef_sa_client_mask(r.c[0], msg, len, r.x[0], r.y));
    ef_free(msg);
    run_free(&r);
}

static void test_graph(void) {
    ef_sa_params p = {.n = 1000, .k = 0, .t = 1, .bits = 32, .d = 1, .round = 1};
    p.k = ef_sa_default_k(1000);
    CHECK(p.k == 20);
    p.t = ef_sa_default_t(1000, p.k);
    CHECK(p.t == 11);
    CHECK_OK(ef_sa_params_check(&p));
    uint32_t nb[20];
    ef_sa_neighbors(&p, 0, nb);
    /* symmetric, degree k, the ring's k/2 either side */
    int ok = 1;
    for (int j = 0; j < 20; j++) ok &= ef_sa_is_neighbor(&p, nb[j], 0);
    CHECK(ok);
    CHECK(nb[0] == 1 && nb[9] == 10 && nb[10] == 990 && nb[19] == 999);
    CHECK(ef_sa_default_k(5) == 4);
    /* two participants: each the other's only neighbour */
    ef_sa_params two = {.n = 2, .k = 1, .t = 2, .bits = 8, .d = 1, .round = 1};
    CHECK_OK(ef_sa_params_check(&two));
    two.k = 0;
    CHECK(ef_sa_params_check(&two) == EF_ERR_INVALID);
}

int main(void) {
    test_graph();
    test_dropouts();
    test_abort_below_threshold();
    test_abort_lost_neighbourhood();
    test_refuses_both_shares();
    test_masked_uniform();
    test_bad_input();
    test_tampered_forward();
    return tu_finish("test_secagg");
}
