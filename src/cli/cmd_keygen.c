/*
 * `edgefl keygen --out FILE`: a new Ed25519 identity for a server or a
 * client. FILE gets the secret key (mode 0600), FILE.pub the public key;
 * the public key is printed (64 hex digits) for allow-lists.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "edgefl/identity.h"

static const char *USAGE = "edgefl keygen --out FILE [--force] [--json]";
static const char *DESC =
    "Generates an Ed25519 key pair: FILE holds the secret key (readable by its owner only),\n"
    "FILE.pub the public key, which is also printed. Give FILE to 'edgefl server --key' or\n"
    "'edgefl client --key'; put a client's public key on the server's allow-list\n"
    "('<client id> <public key>' per line, 'edgefl server --allow') and the server's\n"
    "FILE.pub to its clients ('edgefl client --server-key').";

int cmd_keygen(int argc, char **argv) {
    const char *out = NULL;
    int force = 0, json = 0;
    cli_opt opts[] = {
        {"out", CLI_STR, &out, "FILE", "secret key file to write (the public key goes to FILE.pub)", 0, 0, NULL, 0},
        {"force", CLI_FLAG, &force, NULL, "overwrite an existing key file", 0, 0, NULL, 0},
        {"json", CLI_FLAG, &json, NULL, "print {\"public_key\": ..., \"secret_key_file\": ...}", 0, 0, NULL, 0},
        {0},
    };
    int help;
    int rc = cli_parse("keygen", argc, argv, 2, opts, &help, USAGE, DESC);
    if (rc || help) return rc;
    if (!out) {
        cli_error("keygen", "--out FILE is required");
        return CLI_EXIT_USAGE;
    }
    if (!force && access(out, F_OK) == 0) {
        cli_error("keygen", "%s exists; not overwriting a key (use --force)", out);
        return CLI_EXIT_USAGE;
    }
    ef_identity *id = NULL;
    if (ef_identity_generate(&id) != EF_OK || ef_identity_save(id, out) != EF_OK) {
        cli_error("keygen", "%s", ef_last_error());
        ef_identity_free(id);
        return CLI_EXIT_FAIL;
    }
    char hex[2 * EF_PK_BYTES + 1];
    ef_identity_public_hex(id, hex);
    ef_identity_free(id);
    if (json) {
        char pub[4096];
        snprintf(pub, sizeof pub, "%s.pub", out);
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "public_key", hex);
        cJSON_AddStringToObject(j, "secret_key_file", out);
        cJSON_AddStringToObject(j, "public_key_file", pub);
        if (cli_print_json("keygen", j) != 0) return CLI_EXIT_FAIL;
    } else {
        printf("%s\n", hex);
    }
    return 0;
}
