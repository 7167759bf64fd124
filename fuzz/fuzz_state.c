/*
 * libFuzzer target: server state files (state.json) read by
 * ef_server_restore. The input becomes DIR/state.json next to a valid model
 * file; a refused state must leave the server as it was (version 0, no
 * records, not done), an accepted one must be consistent with its rounds.
 * The seed corpus is a real checkpoint (fuzz/run.sh makes one with
 * fuzz_state itself: `fuzz_state --make-seed DIR`).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgefl/io.h"
#include "edgefl/params.h"
#include "edgefl/server.h"

#define NP 6

static char dir[64];

static ef_params *params(void) {
    ef_params *p = NULL;
    int64_t shape[1] = {NP};
    if (ef_params_new(&p) || ef_params_add(p, "w", 1, shape) || ef_params_alloc(p)) abort();
    for (int i = 0; i < NP; i++) ef_params_data(p)[i] = 0.5f * (float)i;
    return p;
}

static ef_server *server(ef_params *p) {
    ef_server_config cfg = ef_server_defaults();
    cfg.job = 7;
    cfg.rounds = 5;
    cfg.clients_per_round = 2;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVGM);
    ef_server *s = NULL;
    if (ef_server_new(&s, &cfg, &sc, p, NULL, NULL) != EF_OK) abort();
    return s;
}

/* A checkpoint of a fresh server (round 0): the model file the fuzzed
 * state.json files can point at, and a valid state.json seed. */
static void make_checkpoint(const char *d) {
    ef_params *p = params();
    ef_server *s = server(p);
    if (ef_server_checkpoint(s, d) != EF_OK) abort();
    ef_server_free(s);
    ef_params_free(p);
}

static void cleanup(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "fuzz_state: could not remove %s\n", dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    for (int i = 1; i + 1 < *argc; i++)
        if (strcmp((*argv)[i], "--make-seed") == 0) {
            make_checkpoint((*argv)[i + 1]);
            exit(0);
        }
    snprintf(dir, sizeof dir, "/tmp/edgefl-fuzz-state-%d", (int)getpid());
    make_checkpoint(dir);
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[128];
    snprintf(path, sizeof path, "%s/state.json", dir);
    if (ef_write_file_atomic_mode(path, data, size, 0600) != EF_OK) abort();
    ef_params *p = params();
    ef_server *s = server(p);
    int restored = 0;
    ef_status st = ef_server_restore(s, dir, &restored);
    size_t nr;
    ef_server_records(s, &nr);
    if (st != EF_OK) {
        if (restored || nr != 0 || ef_server_version(s) != 0 || ef_server_done(s)) abort();
    } else if (restored) {
        /* the records are the rounds done; the model came from the file */
        size_t n;
        const float *m = ef_server_model(s, &n);
        if (n != NP || (nr >= 5 && !ef_server_done(s))) abort();
        (void)m;
    }
    ef_server_free(s);
    ef_params_free(p);
    return 0;
}
