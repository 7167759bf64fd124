/*
 * Ed25519 identities, key files and allow-lists (include/edgefl/identity.h).
 */
#include <ctype.h>
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/core_internal.h"
#include "edgefl/identity.h"
#include "edgefl/io.h"

#define SECRET_TAG "edgefl-ed25519-secret-v1"
#define PUBLIC_TAG "edgefl-ed25519-public-v1"

struct ef_identity {
    uint8_t pk[EF_PK_BYTES];
    uint8_t *sk; /* EF_SK_BYTES in sodium_malloc'd memory */
};

static ef_status alloc_identity(ef_identity **out) {
    *out = NULL;
    if (sodium_init() < 0) return ef__fail(EF_ERR_INTERNAL, "libsodium failed to initialize");
    ef_identity *id = ef_calloc(1, sizeof *id);
    if (!id) return EF_ERR_NOMEM;
    if (!(id->sk = sodium_malloc(EF_SK_BYTES))) {
        ef_free(id);
        return EF_ERR_NOMEM;
    }
    *out = id;
    return EF_OK;
}

ef_status ef_identity_generate(ef_identity **out) {
    ef_status st = alloc_identity(out);
    if (st) return st;
    crypto_sign_keypair((*out)->pk, (*out)->sk);
    return EF_OK;
}

void ef_identity_free(ef_identity *id) {
    if (!id) return;
    sodium_free(id->sk); /* wipes */
    ef_free(id);
}

const uint8_t *ef_identity_public(const ef_identity *id) { return id->pk; }
const uint8_t *ef_identity_secret(const ef_identity *id) { return id->sk; }

void ef_identity_public_hex(const ef_identity *id, char out[2 * EF_PK_BYTES + 1]) {
    sodium_bin2hex(out, 2 * EF_PK_BYTES + 1, id->pk, EF_PK_BYTES);
}

/* Exactly 2n hex digits at s, followed by the end of the token. */
static int parse_hex(const char *s, uint8_t *out, size_t n) {
    size_t len = 0;
    while (isxdigit((unsigned char)s[len])) len++;
    if (len != 2 * n || (s[len] && !isspace((unsigned char)s[len]))) return 0;
    size_t got = 0;
    return sodium_hex2bin(out, n, s, len, NULL, &got, NULL) == 0 && got == n;
}

ef_status ef_public_key_parse(const char *hex, uint8_t pk[EF_PK_BYTES]) {
    if (!hex || !parse_hex(hex, pk, EF_PK_BYTES))
        return ef__fail(EF_ERR_FORMAT, "public key: expected %d hex digits", 2 * EF_PK_BYTES);
    return EF_OK;
}

/* The first line of a small text file that is not blank or a comment,
 * with leading blanks skipped; *buf is the file (freed by the caller). */
static ef_status first_line(const char *path, char **buf, char **line) {
    size_t len;
    ef_status st = ef_read_file(path, 4096, buf, &len);
    if (st) return st;
    if (memchr(*buf, '\0', len))
        return ef__fail(EF_ERR_FORMAT, "%s: not a text key file", path);
    for (char *p = *buf; *p;) {
        while (*p == ' ' || *p == '\t') p++;
        char *e = p + strcspn(p, "\n");
        if (*p != '#' && *p != '\n' && *p != '\r' && *p) {
            *e = '\0';
            *line = p;
            return EF_OK;
        }
        p = *e ? e + 1 : e;
    }
    return ef__fail(EF_ERR_FORMAT, "%s: empty key file", path);
}

ef_status ef_identity_load(ef_identity **out, const char *path) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return ef__fail(EF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (sb.st_mode & 077)
        return ef__fail(EF_ERR_AUTH, "%s: secret key readable by others (mode %03o); "
                                     "chmod 600 it", path, (unsigned)(sb.st_mode & 0777));
    char *buf = NULL, *line = NULL;
    ef_status st = first_line(path, &buf, &line);
    uint8_t seed[crypto_sign_SEEDBYTES];
    if (st == EF_OK) {
        size_t tl = strlen(SECRET_TAG);
        if (strncmp(line, SECRET_TAG, tl) != 0 || (line[tl] != ' ' && line[tl] != '\t'))
            st = ef__fail(EF_ERR_FORMAT, "%s: not an edgefl secret key (expected '%s <hex>')",
                          path, SECRET_TAG);
        else {
            const char *h = line + tl;
            while (*h == ' ' || *h == '\t') h++;
            if (!parse_hex(h, seed, sizeof seed))
                st = ef__fail(EF_ERR_FORMAT, "%s: the secret key must be %d hex digits", path,
                              (int)(2 * sizeof seed));
        }
    }
    if (buf) {
        sodium_memzero(buf, strlen(buf));
        ef_free(buf);
    }
    if (st == EF_OK && (st = alloc_identity(out)) == EF_OK)
        crypto_sign_seed_keypair((*out)->pk, (*out)->sk, seed);
    sodium_memzero(seed, sizeof seed);
    return st;
}

ef_status ef_identity_save(const ef_identity *id, const char *path) {
    size_t pl = strlen(path);
    char *pub = ef_malloc(pl + 5);
    if (!pub) return EF_ERR_NOMEM;
    memcpy(pub, path, pl);
    memcpy(pub + pl, ".pub", 5);
    char hex[2 * EF_PK_BYTES + 1];
    ef_identity_public_hex(id, hex);
    char text[256];
    int n = snprintf(text, sizeof text, "# edgefl public key (give it to the server's allow-list)\n"
                                        "%s %s\n", PUBLIC_TAG, hex);
    ef_status st = ef_write_file_atomic_mode(pub, text, (size_t)n, 0644);
    ef_free(pub);
    if (st) return st;
    /* the seed is the first half of libsodium's secret key */
    char shex[2 * crypto_sign_SEEDBYTES + 1];
    sodium_bin2hex(shex, sizeof shex, id->sk, crypto_sign_SEEDBYTES);
    n = snprintf(text, sizeof text, "# edgefl secret key: keep it private (mode 0600)\n%s %s\n",
                 SECRET_TAG, shex);
    st = ef_write_file_atomic_mode(path, text, (size_t)n, 0600);
    sodium_memzero(shex, sizeof shex);
    sodium_memzero(text, sizeof text);
    return st;
}

ef_status ef_public_key_load(const char *path, uint8_t pk[EF_PK_BYTES]) {
    char *buf = NULL, *line = NULL;
    ef_status st = first_line(path, &buf, &line);
    if (st == EF_OK) {
        size_t tl = strlen(PUBLIC_TAG);
        if (strncmp(line, PUBLIC_TAG, tl) == 0) {
            line += tl;
            while (*line == ' ' || *line == '\t') line++;
        }
        if (!parse_hex(line, pk, EF_PK_BYTES))
            st = ef__fail(EF_ERR_FORMAT, "%s: expected '%s <%d hex digits>'", path, PUBLIC_TAG,
                          2 * EF_PK_BYTES);
    }
    ef_free(buf);
    return st;
}

ef_status ef_keylist_load(const char *path, ef_keylist_fn fn, void *user, size_t *n) {
    if (n) *n = 0;
    char *buf = NULL;
    size_t len, count = 0;
    ef_status st = ef_read_file(path, 64u << 20, &buf, &len);
    if (st) return st;
    size_t lineno = 0;
    for (char *p = buf; st == EF_OK && p < buf + len;) {
        char *e = p + strcspn(p, "\n");
        int last = *e == '\0';
        *e = '\0';
        lineno++;
        char *q = p;
        while (*q == ' ' || *q == '\t') q++;
        if (*q && *q != '#' && *q != '\r') {
            char *end;
            errno = 0;
            unsigned long id = strtoul(q, &end, 10);
            if (end == q || errno || id >= EF_BROADCAST_ID || (*end != ' ' && *end != '\t')) {
                st = ef__fail(EF_ERR_FORMAT, "%s:%zu: expected '<id> <public key hex>'",
                              path, lineno);
                break;
            }
            while (*end == ' ' || *end == '\t') end++;
            size_t tl = strlen(PUBLIC_TAG);
            if (strncmp(end, PUBLIC_TAG, tl) == 0) {
                end += tl;
                while (*end == ' ' || *end == '\t') end++;
            }
            uint8_t pk[EF_PK_BYTES];
            const char *rest = end + strspn(end, "0123456789abcdefABCDEF");
            rest += strspn(rest, " \t\r");
            if (!parse_hex(end, pk, EF_PK_BYTES) || (*rest && *rest != '#')) {
                st = ef__fail(EF_ERR_FORMAT, "%s:%zu: id %lu: the public key must be %d hex "
                                             "digits", path, lineno, id, 2 * EF_PK_BYTES);
                break;
            }
            if ((st = fn(user, (uint32_t)id, pk)) != EF_OK) {
                char why[256];
                snprintf(why, sizeof why, "%s", ef_last_error());
                st = ef__fail(st, "%s:%zu: %s", path, lineno, why);
                break;
            }
            count++;
        }
        if (last) break;
        p = e + 1;
    }
    ef_free(buf);
    if (n) *n = count;
    return st;
}

static ef_status allow_one(void *user, uint32_t id, const uint8_t pk[EF_PK_BYTES]) {
    return ef_server_allow(user, id, pk);
}

ef_status ef_allowlist_load(ef_server *s, const char *path, size_t *n) {
    return ef_keylist_load(path, allow_one, s, n);
}
