/*
 * bench/secagg_bench: one SecAgg+ round of n clients with d-word vectors run
 * for real in one process (the same client and server state machines the
 * federated server drives), timing each client's work and the server's, and
 * counting the bytes each client sends and receives. A fraction of the
 * clients drops out after sharing its keys (the expensive recovery case: the
 * server recovers their mask keys and removes their pairwise masks). The
 * unmasked sum is checked against the plain sum of the survivors' inputs.
 *
 * Inputs are regenerated from a seed where they are needed, so memory stays
 * a few vectors of d words whatever n is.
 *
 * usage: secagg_bench --n N --d D [--k K | --classic] [--t T] [--dropout P]
 *                     [--bits B] [--seed S] [--json]
 * Prints a summary line (or, with --json, one JSON object).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/core_internal.h"
#include "edgefl/core.h"
#include "privacy/secagg_internal.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double quantile(double *v, size_t n, double q) {
    if (n == 0) return NAN;
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* Client i's input: d words from a seeded stream, reduced mod 2^bits. */
static void input_of(uint32_t *x, size_t d, uint32_t i, const uint8_t key[32], uint32_t mm) {
    ef__chacha_stream(x, d * sizeof *x, key, 1000000 + (uint64_t)i);
    for (size_t j = 0; j < d; j++) x[j] &= mm;
}

static void die(const char *what) {
    fprintf(stderr, "secagg_bench: %s: %s\n", what, ef_last_error());
    exit(1);
}

int main(int argc, char **argv) {
    uint32_t n = 100, k = 0, t = 0;
    size_t d = 100000;
    int classic = 0, json = 0, bits = 32;
    double dropout = 0.1;
    unsigned long long seed = 1;
    for (int a = 1; a < argc; a++) {
        const char *f = argv[a], *v = a + 1 < argc ? argv[a + 1] : NULL;
        if (!strcmp(f, "--classic")) classic = 1;
        else if (!strcmp(f, "--json")) json = 1;
        else if (v && !strcmp(f, "--n")) n = (uint32_t)strtoul(v, NULL, 10), a++;
        else if (v && !strcmp(f, "--d")) d = (size_t)strtod(v, NULL), a++;
        else if (v && !strcmp(f, "--k")) k = (uint32_t)strtoul(v, NULL, 10), a++;
        else if (v && !strcmp(f, "--t")) t = (uint32_t)strtoul(v, NULL, 10), a++;
        else if (v && !strcmp(f, "--bits")) bits = atoi(v), a++;
        else if (v && !strcmp(f, "--dropout")) dropout = strtod(v, NULL), a++;
        else if (v && !strcmp(f, "--seed")) seed = strtoull(v, NULL, 10), a++;
        else {
            fprintf(stderr, "usage: secagg_bench --n N --d D [--k K | --classic] [--t T] "
                            "[--dropout P] [--bits B] [--seed S] [--json]\n");
            return 2;
        }
    }
    if (n < 2 || d == 0 || !(dropout >= 0 && dropout < 1)) {
        fprintf(stderr, "secagg_bench: need n >= 2, d >= 1, 0 <= dropout < 1\n");
        return 2;
    }
    if (classic) k = n - 1;
    else if (k == 0) k = ef_sa_default_k(n);
    if (t == 0) t = ef_sa_default_t(n, k);
    ef_sa_params p = {.n = n, .k = k, .t = t, .bits = bits, .d = d, .round = seed};
    if (ef_sa_params_check(&p) != EF_OK) die("parameters");
    uint32_t mm = ef__mod_mask(bits);
    uint8_t key[32];
    ef__drbg_key_from_seed(key, seed, "secagg-bench");

    /* who drops after sharing: a seeded choice of round(dropout * n) clients */
    uint8_t *drop = calloc(n, 1);
    uint32_t *perm = malloc(n * sizeof *perm);
    ef_sa_client **cl = calloc(n, sizeof *cl);
    uint32_t *x = malloc(d * sizeof *x), *y = malloc(d * sizeof *y), *plain = calloc(d, sizeof *plain);
    double *t_share = calloc(n, sizeof(double)), *t_mask = calloc(n, sizeof(double));
    double *b_up = calloc(n, sizeof(double)), *b_down = calloc(n, sizeof(double));
    if (!drop || !perm || !cl || !x || !y || !plain || !t_share || !t_mask || !b_up || !b_down) {
        fprintf(stderr, "secagg_bench: out of memory\n");
        return 1;
    }
    ef__drbg g;
    ef__drbg_seed(&g, key, 7);
    for (uint32_t i = 0; i < n; i++) perm[i] = i;
    for (uint32_t i = n - 1; i > 0; i--) {
        uint32_t j = (uint32_t)ef__drbg_below(&g, i + 1), tmp = perm[i];
        perm[i] = perm[j], perm[j] = tmp;
    }
    uint32_t n_drop = (uint32_t)(dropout * n + 0.5);
    for (uint32_t i = 0; i < n_drop; i++) drop[perm[i]] = 1;

    ef_sa_server *s;
    if (ef_sa_server_new(&s, &p) != EF_OK) die("server");
    double srv_s[5] = {0};
    double t0;

    /* stage 1 */
    for (uint32_t i = 0; i < n; i++) {
        uint8_t adv[2 * EF_SA_PK_BYTES];
        double c0 = now_s();
        if (ef_sa_client_new(&cl[i], &p, i, key) != EF_OK || ef_sa_client_advertise(cl[i], adv) != EF_OK)
            die("advertise");
        t_share[i] += now_s() - c0;
        b_up[i] += sizeof adv;
        t0 = now_s();
        if (ef_sa_server_on_advertise(s, i, adv, sizeof adv) != EF_OK) die("server keys");
        srv_s[1] += now_s() - t0;
    }
    t0 = now_s();
    if (ef_sa_server_close(s) != EF_OK) die("close 1");
    srv_s[1] += now_s() - t0;
    /* stage 2 */
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *msg, *out;
        size_t len, olen;
        t0 = now_s();
        if (ef_sa_server_message_for(s, i, &msg, &len) != EF_OK) die("keys message");
        srv_s[2] += now_s() - t0;
        double c0 = now_s();
        if (ef_sa_client_share(cl[i], msg, len, &out, &olen) != EF_OK) die("share");
        t_share[i] += now_s() - c0;
        b_down[i] += (double)len;
        b_up[i] += (double)olen;
        t0 = now_s();
        if (ef_sa_server_on_shares(s, i, out, olen) != EF_OK) die("server shares");
        srv_s[2] += now_s() - t0;
        ef_free(msg);
        ef_free(out);
    }
    t0 = now_s();
    if (ef_sa_server_close(s) != EF_OK) die("close 2");
    srv_s[2] += now_s() - t0;
    /* stage 3: the droppers leave here */
    uint32_t n_mask = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *msg;
        size_t len;
        t0 = now_s();
        if (ef_sa_server_message_for(s, i, &msg, &len) != EF_OK) die("forward message");
        srv_s[3] += now_s() - t0;
        b_down[i] += (double)len;
        if (!drop[i]) {
            input_of(x, d, i, key, mm);
            for (size_t j = 0; j < d; j++) plain[j] = (plain[j] + x[j]) & mm;
            double c0 = now_s();
            if (ef_sa_client_mask(cl[i], msg, len, x, y) != EF_OK) die("mask");
            t_mask[n_mask++] = now_s() - c0;
            b_up[i] += 4.0 * (double)d;
            t0 = now_s();
            if (ef_sa_server_on_masked(s, i, y) != EF_OK) die("server masked");
            srv_s[3] += now_s() - t0;
        }
        ef_free(msg);
    }
    t0 = now_s();
    if (ef_sa_server_close(s) != EF_OK) die("close 3");
    srv_s[3] += now_s() - t0;
    /* stage 4 */
    for (uint32_t i = 0; i < n; i++) {
        if (!ef_sa_server_alive(s, i)) continue;
        uint8_t *msg, *out;
        size_t len, olen;
        t0 = now_s();
        if (ef_sa_server_message_for(s, i, &msg, &len) != EF_OK) die("unmask message");
        srv_s[4] += now_s() - t0;
        double c0 = now_s();
        if (ef_sa_client_unmask(cl[i], msg, len, &out, &olen) != EF_OK) die("unmask");
        t_share[i] += now_s() - c0;
        b_down[i] += (double)len;
        b_up[i] += (double)olen;
        t0 = now_s();
        if (ef_sa_server_on_unmask(s, i, out, olen) != EF_OK) die("server unmask");
        srv_s[4] += now_s() - t0;
        ef_free(msg);
        ef_free(out);
    }
    t0 = now_s();
    ef_status st = ef_sa_server_close(s);
    double unmask_s = now_s() - t0;
    if (st != EF_OK) die("close 4 (unmasking)");
    const uint32_t *sum;
    uint32_t n_summed;
    if (ef_sa_server_result(s, &sum, &n_summed) != EF_OK) die("result");
    int exact = memcmp(sum, plain, d * sizeof *sum) == 0 && n_summed == n - n_drop;

    /* a survivor's bytes (droppers send less) */
    double up_med, down_med;
    {
        double *u = malloc(n * sizeof *u), *w = malloc(n * sizeof *w);
        size_t m = 0;
        for (uint32_t i = 0; i < n; i++)
            if (!drop[i]) u[m] = b_up[i], w[m] = b_down[i], m++;
        up_med = quantile(u, m, 0.5);
        down_med = quantile(w, m, 0.5);
        free(u);
        free(w);
    }
    double mask_med = quantile(t_mask, n_mask, 0.5), mask_max = quantile(t_mask, n_mask, 1.0);
    double share_med = quantile(t_share, n, 0.5);
    double server_other = srv_s[1] + srv_s[2] + srv_s[3] + srv_s[4];
    if (json) {
        printf("{\"n\":%u,\"d\":%zu,\"k\":%u,\"t\":%u,\"bits\":%d,\"dropped\":%u,"
               "\"client_mask_s_median\":%.6f,\"client_mask_s_max\":%.6f,"
               "\"client_other_s_median\":%.6f,\"server_unmask_s\":%.6f,"
               "\"server_other_s\":%.6f,\"client_bytes_up\":%.0f,\"client_bytes_down\":%.0f,"
               "\"exact\":%s}\n",
               n, d, k, t, bits, n_drop, mask_med, mask_max, share_med, unmask_s, server_other,
               up_med, down_med, exact ? "true" : "false");
    } else {
        printf("n %u d %zu k %u t %u: client masking %.3f s (median, max %.3f), other client "
               "stages %.3f s; server unmasking %.3f s (+ %.3f s collecting); a client sends "
               "%.0f bytes, receives %.0f; %u dropped; sum %s\n",
               n, d, k, t, mask_med, mask_max, share_med, unmask_s, server_other, up_med, down_med,
               n_drop, exact ? "exact" : "WRONG");
    }
    for (uint32_t i = 0; i < n; i++) ef_sa_client_free(cl[i]);
    ef_sa_server_free(s);
    ef__drbg_wipe(&g);
    free(drop), free(perm), free(cl), free(x), free(y), free(plain);
    free(t_share), free(t_mask), free(b_up), free(b_down);
    return exact ? 0 : 1;
}
