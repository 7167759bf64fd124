/*
 * --audit-dir of `edgefl server` and `edgefl client`: a testing and audit
 * aid that writes what the secure-aggregation audit hooks see
 * (ef_server_config.sa_audit, ef_client_config.sa_audit) to files, one per
 * round, so that a test or an auditor can check that the server's unmasked
 * sum is exactly the sum of the included clients' inputs. A client's file
 * reveals its quantized update: never in production. Format (docs/deploy.md,
 * "Audit files"), all little-endian, written atomically with mode 0600:
 *
 *   off size field
 *     0    4 magic    "EFSA"
 *     4    4 version  1
 *     8    4 kind     1: the server's unmasked sum, 2: a client's input
 *    12    4 round
 *    16    4 bits     the sum is mod 2^bits (server); 0: not known (client)
 *    20    4 n_ids    server: clients included in the sum; client: 1
 *    24    8 n_words  model parameters
 *    32    . ids      n_ids u32 (server: the included client ids; client: its id)
 *     .    . words    n_words u32
 *
 * Names: sa-round<R>-sum.bin (server), sa-round<R>-client<ID>.bin (client),
 * so one directory can serve a whole job on one machine.
 */
#ifndef EDGEFL_CLI_AUDIT_H
#define EDGEFL_CLI_AUDIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct cli_audit {
    const char *dir;
    unsigned failures;  /* files that could not be written (each logged) */
    unsigned written;
} cli_audit;

/*
 * Creates `dir` (mode 0700) if missing and checks that it is a writable
 * directory; 0, or CLI_EXIT_USAGE after printing the reason.
 */
int cli_audit_init(const char *cmd, cli_audit *a, const char *dir);

/* The hooks: user is the cli_audit. A failed write is logged and counted. */
void cli_audit_server(void *user, uint32_t round, const uint32_t *sum, size_t n, int bits,
                      const uint32_t *clients, size_t n_clients);
void cli_audit_client(void *user, uint32_t client, uint32_t round, const uint32_t *words,
                      size_t n);

#endif /* EDGEFL_CLI_AUDIT_H */
