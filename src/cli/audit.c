/*
 * Secure-aggregation audit files (--audit-dir; see audit.h for the format).
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit.h"
#include "cli.h"

#define HEADER 32
#define STEP 4096 /* words converted to little-endian at a time */

int cli_audit_init(const char *cmd, cli_audit *a, const char *dir) {
    memset(a, 0, sizeof *a);
    struct stat sb;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        cli_error(cmd, "--audit-dir: cannot create %s: %s", dir, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode) || access(dir, W_OK | X_OK) != 0) {
        cli_error(cmd, "--audit-dir: %s is not a writable directory", dir);
        return CLI_EXIT_USAGE;
    }
    a->dir = dir;
    return 0;
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Appends n u32 values in little-endian order. */
static ef_status write_words(ef_atomic_file *f, const uint32_t *v, size_t n) {
    uint8_t buf[4 * STEP];
    ef_status st = EF_OK;
    for (size_t i = 0; i < n && st == EF_OK; i += STEP) {
        size_t k = n - i < STEP ? n - i : STEP;
        for (size_t j = 0; j < k; j++) put32(buf + 4 * j, v[i + j]);
        st = ef_atomic_write(f, buf, 4 * k);
    }
    return st;
}

static void audit_write(cli_audit *a, const char *name, uint32_t kind, uint32_t round,
                        uint32_t bits, const uint32_t *ids, size_t n_ids, const uint32_t *words,
                        size_t n) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", a->dir, name) >= sizeof path) {
        ef_log(EF_LOG_ERROR, "audit: the path %s/%s is too long", a->dir, name);
        a->failures++;
        return;
    }
    uint8_t h[HEADER];
    memcpy(h, "EFSA", 4);
    put32(h + 4, 1);
    put32(h + 8, kind);
    put32(h + 12, round);
    put32(h + 16, bits);
    put32(h + 20, (uint32_t)n_ids);
    put32(h + 24, (uint32_t)((uint64_t)n & 0xffffffffu));
    put32(h + 28, (uint32_t)((uint64_t)n >> 32));
    /* a client's input is its (quantized) update: readable by the owner only */
    ef_atomic_file *f = NULL;
    ef_status st = ef_atomic_open_mode(&f, path, 0600);
    if (st == EF_OK) st = ef_atomic_write(f, h, sizeof h);
    if (st == EF_OK) st = write_words(f, ids, n_ids);
    if (st == EF_OK) st = write_words(f, words, n);
    if (st == EF_OK) {
        st = ef_atomic_commit(f);
    } else if (f) {
        ef_atomic_abort(f);
    }
    if (st != EF_OK) {
        ef_log(EF_LOG_ERROR, "audit: %s", ef_last_error()); /* names the file */
        a->failures++;
        return;
    }
    a->written++;
    ef_log(EF_LOG_DEBUG, "audit: wrote %s", path);
}

void cli_audit_server(void *user, uint32_t round, const uint32_t *sum, size_t n, int bits,
                      const uint32_t *clients, size_t n_clients) {
    char name[64];
    snprintf(name, sizeof name, "sa-round%u-sum.bin", round);
    audit_write(user, name, 1, round, (uint32_t)bits, clients, n_clients, sum, n);
}

void cli_audit_client(void *user, uint32_t client, uint32_t round, const uint32_t *words,
                      size_t n) {
    char name[64];
    snprintf(name, sizeof name, "sa-round%u-client%u.bin", round, client);
    audit_write(user, name, 2, round, 0, &client, 1, words, n);
}
