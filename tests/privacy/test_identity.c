/*
 * Key files and allow-lists (src/privacy/identity.c): a saved key loads
 * back to the same key pair and signs verifiable messages; the secret file
 * is 0600 and a group/world-readable one is refused; malformed key files
 * and allow-list lines give errors that name the file and line.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgefl/identity.h"
#include "edgefl/io.h"
#include "test_util.h"

static char dir[] = "/tmp/edgefl-identity-XXXXXX";

static const char *in_dir(const char *name) {
    static char p[4][256];
    static int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof p[i], "%s/%s", dir, name);
    return p[i];
}

static void put(const char *name, const char *text, unsigned mode) {
    CHECK_OK(ef_write_file_atomic_mode(in_dir(name), text, strlen(text), mode));
    chmod(in_dir(name), mode);
}

static void test_roundtrip(void) {
    ef_identity *a = NULL, *b = NULL;
    CHECK_OK(ef_identity_generate(&a));
    CHECK_OK(ef_identity_save(a, in_dir("k")));
    struct stat sb;
    CHECK(stat(in_dir("k"), &sb) == 0 && (sb.st_mode & 0777) == 0600);
    CHECK(stat(in_dir("k.pub"), &sb) == 0);
    CHECK_OK(ef_identity_load(&b, in_dir("k")));
    CHECK(memcmp(ef_identity_public(a), ef_identity_public(b), EF_PK_BYTES) == 0);
    CHECK(memcmp(ef_identity_secret(a), ef_identity_secret(b), EF_SK_BYTES) == 0);
    uint8_t pk[EF_PK_BYTES];
    CHECK_OK(ef_public_key_load(in_dir("k.pub"), pk));
    CHECK(memcmp(pk, ef_identity_public(a), EF_PK_BYTES) == 0);
    char hex[2 * EF_PK_BYTES + 1];
    ef_identity_public_hex(a, hex);
    CHECK(strlen(hex) == 64);
    uint8_t pk2[EF_PK_BYTES];
    CHECK_OK(ef_public_key_parse(hex, pk2));
    CHECK(memcmp(pk2, pk, EF_PK_BYTES) == 0);
    /* the loaded key signs what the saved public key verifies */
    uint8_t sig[64], msg[3] = {1, 2, 3};
    crypto_sign_detached(sig, NULL, msg, 3, ef_identity_secret(b));
    CHECK(crypto_sign_verify_detached(sig, msg, 3, pk) == 0);
    /* the secret file does not contain the public hex only: it is the seed */
    char *text = NULL;
    size_t len;
    CHECK_OK(ef_read_file(in_dir("k"), 0, &text, &len));
    CHECK(strstr(text, "edgefl-ed25519-secret-v1 ") != NULL && strstr(text, hex) == NULL);
    ef_free(text);
    ef_identity_free(a);
    ef_identity_free(b);
}

static void test_bad_files(void) {
    ef_identity *k = NULL;
    const char *seed = "edgefl-ed25519-secret-v1 "
                       "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
    put("ok", seed, 0600);
    CHECK_OK(ef_identity_load(&k, in_dir("ok")));
    ef_identity_free(k);
    put("open", seed, 0644);
    CHECK(ef_identity_load(&k, in_dir("open")) == EF_ERR_AUTH && k == NULL);
    CHECK(strstr(ef_last_error(), "chmod 600") != NULL);
    const char *bad[] = {
        "",
        "# only a comment\n",
        "edgefl-ed25519-public-v1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
        "edgefl-ed25519-secret-v1 0001020304\n",
        "edgefl-ed25519-secret-v1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fff\n",
        "edgefl-ed25519-secret-v1 zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
        "edgefl-ed25519-secret-v1\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        put("bad", bad[i], 0600);
        k = NULL;
        CHECK_MSG(ef_identity_load(&k, in_dir("bad")) == EF_ERR_FORMAT && k == NULL, "case %zu", i);
    }
    CHECK(ef_identity_load(&k, in_dir("missing")) == EF_ERR_IO);
    uint8_t pk[EF_PK_BYTES];
    put("pub", "0001020304\n", 0644);
    CHECK(ef_public_key_load(in_dir("pub"), pk) == EF_ERR_FORMAT);
    CHECK(ef_public_key_parse("xyz", pk) == EF_ERR_FORMAT);
}

static void test_allowlist(void) {
    ef_params *p = NULL;
    int64_t shape[1] = {4};
    CHECK_OK(ef_params_new(&p));
    CHECK_OK(ef_params_add(p, "w", 1, shape));
    CHECK_OK(ef_params_alloc(p));
    ef_server_config cfg = ef_server_defaults();
    cfg.authenticate = 1;
    ef_strategy_config sc = ef_strategy_defaults(EF_STRAT_FEDAVG);
    ef_server *s = NULL;
    CHECK_OK(ef_server_new(&s, &cfg, &sc, p, NULL, NULL));
    const char *h1 = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const char *h2 = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";
    char text[512];
    snprintf(text, sizeof text, "# clients\n1 %s\n\n  7\tedgefl-ed25519-public-v1 %s\n", h1, h2);
    put("allow", text, 0644);
    size_t n = 0;
    CHECK_OK(ef_allowlist_load(s, in_dir("allow"), &n));
    CHECK(n == 2 && ef_server_clients(s) == 2);
    const char *bad[] = {"x %s\n", "1\n", "1 abc\n", "4294967295 %s\n", "-1 %s\n", "2 %s junk\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char line[256];
        snprintf(line, sizeof line, bad[i], h1);
        snprintf(text, sizeof text, "3 %s\n%s", h2, line);
        put("allow", text, 0644);
        CHECK_MSG(ef_allowlist_load(s, in_dir("allow"), &n) == EF_ERR_FORMAT, "case %zu", i);
        CHECK_MSG(strstr(ef_last_error(), ":2:") != NULL, "case %zu: %s", i, ef_last_error());
    }
    /* client 1 with another key: refused */
    snprintf(text, sizeof text, "1 %s\n", h2);
    put("allow", text, 0644);
    CHECK(ef_allowlist_load(s, in_dir("allow"), &n) == EF_ERR_INVALID);
    CHECK(strstr(ef_last_error(), "another key") != NULL);
    ef_server_free(s);
    ef_params_free(p);
}

int main(void) {
    CHECK(mkdtemp(dir) != NULL);
    test_roundtrip();
    test_bad_files();
    test_allowlist();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return tu_finish("privacy/test_identity");
}
