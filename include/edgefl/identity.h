/*
 * Identities of the parties of a deployment: Ed25519 key pairs (libsodium),
 * the files that hold them, and the server's allow-list of client keys.
 *
 * Files (text, one item per line, '#' starts a comment):
 *   secret key  "edgefl-ed25519-secret-v1 <64 hex digits: the 32-byte seed>",
 *               written with mode 0600; loading refuses a file that group or
 *               others can read
 *   public key  "edgefl-ed25519-public-v1 <64 hex digits>"
 *   allow-list  "<client id> <64 hex digits of its public key>" per line
 *               (a public-key file's own line format is accepted after the id);
 *               the same format lists aggregator workers (ef_keylist_load)
 * Secret material lives in libsodium's guarded memory and is wiped on free;
 * it is never logged.
 */
#ifndef EDGEFL_IDENTITY_H
#define EDGEFL_IDENTITY_H

#include "edgefl/server.h"
#include "edgefl/wire.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ef_identity ef_identity;

/* A new random key pair. */
EF_API ef_status ef_identity_generate(ef_identity **out);

/* Loads a secret-key file (see above). EF_ERR_FORMAT for a malformed file,
 * EF_ERR_AUTH when its permissions let group or others read it. */
EF_API ef_status ef_identity_load(ef_identity **out, const char *path);

/* Writes the secret key to `path` (mode 0600) and the public key to
 * `path`.pub (0644), each atomically. */
EF_API ef_status ef_identity_save(const ef_identity *id, const char *path);

/* Wipes and frees. NULL is a no-op. */
EF_API void ef_identity_free(ef_identity *id);

/* The public key (EF_PK_BYTES) and the secret key (EF_SK_BYTES, for
 * ef_server_config.sign_key / ef_client_config.sign_key; owned by id). */
EF_API const uint8_t *ef_identity_public(const ef_identity *id);
EF_API const uint8_t *ef_identity_secret(const ef_identity *id);

/* The public key as 64 lowercase hex digits and a NUL (out: 65 bytes). */
EF_API void ef_identity_public_hex(const ef_identity *id, char out[2 * EF_PK_BYTES + 1]);

/* Reads a public key file, or a bare 64-digit hex key, into pk. */
EF_API ef_status ef_public_key_load(const char *path, uint8_t pk[EF_PK_BYTES]);

/* Parses 64 hex digits (NUL- or space-terminated) into pk. */
EF_API ef_status ef_public_key_parse(const char *hex, uint8_t pk[EF_PK_BYTES]);

/*
 * Reads an allow-list file and calls ef_server_allow for every entry.
 * Returns the number of entries in *n (may be NULL). Errors name the file
 * and line; on error the server may hold the entries read before it.
 */
EF_API ef_status ef_allowlist_load(ef_server *s, const char *path, size_t *n);

/*
 * A key list in the allow-list format ("<id> <public key hex>" per line):
 * calls fn(user, id, pk) for every entry in file order (pk valid during the
 * call). Used for the server's allow-list (ef_allowlist_load), its list of
 * aggregator workers (ef_server_add_aggregator) and a worker's allow-list
 * (ef_worker_allow). Malformed lines and a non-OK return of fn stop the
 * load with an error naming the file and line (fn's status is returned).
 * *n (may be NULL) gets the number of entries passed to fn successfully.
 */
typedef ef_status (*ef_keylist_fn)(void *user, uint32_t id, const uint8_t pk[EF_PK_BYTES]);
EF_API ef_status ef_keylist_load(const char *path, ef_keylist_fn fn, void *user, size_t *n);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_IDENTITY_H */
