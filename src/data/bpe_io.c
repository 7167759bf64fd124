/*
 * The tokenizer's vocabulary as text: construction from GGUF-style arrays
 * (token texts in GPT-2's byte-level alphabet, types, "A B" merges) and the
 * tokenizer file, a JSON object holding the same arrays. Nothing in a file
 * is trusted: every array, type and string is checked, and the first fault is
 * reported with its index.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "bpe_internal.h"
#include "core/strbuf.h"
#include "edgefl/io.h"

#define FILE_FORMAT "edgefl-bpe"
#define FILE_VERSION 1
#define FILE_MAX_BYTES ((size_t)512 << 20)

/* Decodes byte-level text s into bytes (out has room for strlen(s)); returns
 * the byte count, or SIZE_MAX at the first character outside the alphabet
 * (its offset in *bad). */
static size_t from_byte_level(const char *s, uint8_t *out, size_t *bad) {
    size_t len = strlen(s), k = 0;
    for (size_t i = 0; i < len;) {
        const unsigned char *u = (const unsigned char *)s + i;
        size_t q = ef__utf8_seq(u, len - i);
        int b = -1;
        if (q == 1) b = bpe_cp_byte(u[0]);
        else if (q == 2) b = bpe_cp_byte((uint32_t)(u[0] & 0x1F) << 6 | (u[1] & 0x3F));
        if (b < 0) {
            *bad = i;
            return SIZE_MAX;
        }
        out[k++] = (uint8_t)b;
        i += q;
    }
    return k;
}

/* Id of the normal token with bytes b[0..n), or -1. */
static int32_t find_bytes(const bpe_bmap *m, const uint8_t *base, const uint8_t *b, size_t n) {
    uint32_t id;
    return bpe_bmap_get(m, base, b, n, bpe_hash_bytes(b, n), &id) ? (int32_t)id : -1;
}

ef_status ef_tokenizer_from_vocab(const char *const *tokens, const int32_t *types,
                                  size_t n_tokens, const char *const *merges, size_t n_merges,
                                  ef_tokenizer **out) {
    if (out) *out = NULL;
    if (!out || (!tokens && n_tokens) || (!merges && n_merges))
        return ef__fail(EF_ERR_INVALID, "ef_tokenizer_from_vocab: NULL argument");
    if (n_tokens > EF_TOK_MAX_VOCAB || n_merges > EF_TOK_MAX_VOCAB)
        return ef__fail(EF_ERR_RANGE, "%zu tokens and %zu merges: at most %d each", n_tokens,
                        n_merges, EF_TOK_MAX_VOCAB);
    if (n_tokens < 256)
        return ef__fail(EF_ERR_FORMAT, "%zu tokens: a byte-level tokenizer has at least 256",
                        n_tokens);
    ef_status st = EF_ERR_NOMEM;
    uint8_t *bytes = NULL, *ty = NULL;
    size_t *boff = NULL;
    int32_t *ml = NULL, *mr = NULL, *mres = NULL;
    bpe_bmap map = {0};
    size_t total = 0;
    for (size_t i = 0; i < n_tokens; i++) {
        if (!tokens[i]) return ef__fail(EF_ERR_FORMAT, "token %zu is missing", i);
        total += strlen(tokens[i]);
    }
    bytes = ef_malloc(total ? total : 1);
    boff = ef_malloc((n_tokens + 1) * sizeof *boff);
    ty = ef_malloc(n_tokens);
    if (!bytes || !boff || !ty) goto fail;
    size_t k = 0;
    for (size_t i = 0; i < n_tokens; i++) {
        int32_t type = types ? types[i] : EF_TOK_NORMAL;
        boff[i] = k;
        if (type == EF_TOK_NORMAL) {
            size_t bad;
            size_t nb = from_byte_level(tokens[i], bytes + k, &bad);
            if (nb == SIZE_MAX) {
                st = ef__fail(EF_ERR_FORMAT,
                              "token %zu (\"%.64s\"): byte %zu is not a character of the "
                              "byte-level alphabet",
                              i, tokens[i], bad);
                goto fail;
            }
            if (nb == 0) {
                st = ef__fail(EF_ERR_FORMAT, "token %zu is empty", i);
                goto fail;
            }
            int32_t dup = find_bytes(&map, bytes, bytes + k, nb);
            if (dup >= 0) {
                st = ef__fail(EF_ERR_FORMAT, "tokens %d and %zu have the same text \"%.64s\"", dup,
                              i, tokens[i]);
                goto fail;
            }
            if ((st = bpe_bmap_add(&map, k, nb, bpe_hash_bytes(bytes + k, nb), (uint32_t)i)) != EF_OK)
                goto fail;
            st = EF_ERR_NOMEM;
            k += nb;
        } else if (type == EF_TOK_CONTROL) {
            size_t l = strlen(tokens[i]);
            memcpy(bytes + k, tokens[i], l);
            k += l;
        } else if (type < 0 || type > 6) {
            st = ef__fail(EF_ERR_FORMAT, "token %zu has type %d, not a GGUF token type (0..6)", i,
                          (int)type);
            goto fail;
        } else {
            st = ef__fail(EF_ERR_UNSUPPORTED,
                          "token %zu has type %d; this tokenizer has only type %d (normal) "
                          "and %d (control)",
                          i, (int)type, EF_TOK_NORMAL, EF_TOK_CONTROL);
            goto fail;
        }
        ty[i] = (uint8_t)type;
    }
    boff[n_tokens] = k;

    size_t nm = n_merges ? n_merges : 1;
    ml = ef_malloc(nm * sizeof *ml);
    mr = ef_malloc(nm * sizeof *mr);
    mres = ef_malloc(nm * sizeof *mres);
    if (!ml || !mr || !mres) goto fail;
    for (size_t m = 0; m < n_merges; m++) {
        const char *s = merges[m];
        if (!s) {
            st = ef__fail(EF_ERR_FORMAT, "merge %zu is missing", m);
            goto fail;
        }
        /* "A B": byte-level text never holds a space, so the first one splits */
        const char *sp = s[0] ? strchr(s + 1, ' ') : NULL;
        if (!sp || !sp[1] || strchr(sp + 1, ' ')) {
            st = ef__fail(EF_ERR_FORMAT, "merge %zu (\"%.64s\") is not two tokens separated by "
                          "one space", m, s);
            goto fail;
        }
        size_t la = (size_t)(sp - s), lb = strlen(sp + 1);
        uint8_t *buf = ef_malloc(la + lb + 1);
        char *part = ef_malloc(la + lb + 2);
        if (!buf || !part) {
            ef_free(buf);
            ef_free(part);
            goto fail;
        }
        memcpy(part, s, la);
        part[la] = '\0';
        size_t bad, na = from_byte_level(part, buf, &bad), nbb = SIZE_MAX;
        if (na != SIZE_MAX) nbb = from_byte_level(sp + 1, buf + na, &bad);
        int32_t a = -1, b = -1, r = -1;
        if (na != SIZE_MAX && nbb != SIZE_MAX) {
            a = find_bytes(&map, bytes, buf, na);
            b = find_bytes(&map, bytes, buf + na, nbb);
            r = find_bytes(&map, bytes, buf, na + nbb);
        }
        ef_free(buf);
        ef_free(part);
        if (a < 0 || b < 0) {
            st = ef__fail(EF_ERR_FORMAT, "merge %zu (\"%.64s\") names a token that does not exist",
                          m, s);
            goto fail;
        }
        if (r < 0) {
            st = ef__fail(EF_ERR_FORMAT, "merge %zu (\"%.64s\"): the joined text is not a token",
                          m, s);
            goto fail;
        }
        ml[m] = a;
        mr[m] = b;
        mres[m] = r;
    }
    st = bpe_build(n_tokens, bytes, boff, ty, n_merges, ml, mr, mres, out);
    if (st == EF_ERR_NOMEM) goto fail;
    goto done;
fail:
    if (st == EF_OK || st == EF_ERR_NOMEM) {
        st = EF_ERR_NOMEM;
        ef__fail(EF_ERR_NOMEM, "out of memory reading a vocabulary");
    }
done:
    bpe_bmap_free(&map);
    ef_free(bytes);
    ef_free(boff);
    ef_free(ty);
    ef_free(ml);
    ef_free(mr);
    ef_free(mres);
    return st;
}

/* ---- the file ---------------------------------------------------------------------- */

static void json_string(ef__sb *b, const char *s) {
    ef__sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            ef__sb_put(b, e, 2);
        } else if (*p < 0x20) {
            ef__sb_printf(b, "\\u%04x", *p);
        } else {
            ef__sb_put(b, (const char *)p, 1);
        }
    }
    ef__sb_put(b, "\"", 1);
}

ef_status ef_tokenizer_serialize(const ef_tokenizer *tok, char **out, size_t *len) {
    if (out) *out = NULL;
    if (len) *len = 0;
    if (!tok || !out || !len) return ef__fail(EF_ERR_INVALID, "ef_tokenizer_serialize: NULL argument");
    ef__sb b = {0};
    ef__sb_printf(&b,
                  "{\n\"format\": \"%s\",\n\"version\": %d,\n\"pre_tokenizer\": \"%s\",\n"
                  "\"tokens\": [\n",
                  FILE_FORMAT, FILE_VERSION, EF_TOK_GGUF_PRE);
    for (size_t i = 0; i < tok->n_tokens; i++) {
        json_string(&b, tok->text + tok->toff[i]);
        ef__sb_puts(&b, i + 1 < tok->n_tokens ? ",\n" : "\n");
    }
    ef__sb_puts(&b, "],\n\"token_types\": [");
    for (size_t i = 0; i < tok->n_tokens; i++)
        ef__sb_printf(&b, "%s%d", i == 0 ? "" : (i % 32 == 0 ? ",\n" : ","), tok->types[i]);
    ef__sb_puts(&b, "],\n\"merges\": [\n");
    for (size_t m = 0; m < tok->n_merges; m++) {
        json_string(&b, tok->mtext + tok->mtoff[m]);
        ef__sb_puts(&b, m + 1 < tok->n_merges ? ",\n" : "\n");
    }
    ef__sb_puts(&b, "]\n}\n");
    if (b.oom) {
        ef__sb_free(&b);
        return ef__fail(EF_ERR_NOMEM, "out of memory writing a tokenizer");
    }
    *out = b.p;
    *len = b.len;
    return EF_OK;
}

/* A "\u0000" escape would silently cut a string short in cJSON: refuse it,
 * and raw NUL bytes too. */
static bool has_nul(const char *s, size_t n) {
    if (memchr(s, 0, n)) return true;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        if (!in_str) {
            if (s[i] == '"') in_str = true;
            continue;
        }
        if (s[i] == '"') {
            in_str = false;
        } else if (s[i] == '\\' && i + 1 < n) {
            if (s[i + 1] == 'u' && i + 5 < n && memcmp(s + i + 2, "0000", 4) == 0) return true;
            i++; /* skip the escaped character */
        }
    }
    return false;
}

/* A JSON number that is an integer in [lo, hi]. */
static bool json_int(const cJSON *it, double lo, double hi, int *out) {
    if (!cJSON_IsNumber(it)) return false;
    double d = it->valuedouble;
    if (!(d >= lo && d <= hi) || d != (double)(long long)d) return false;
    *out = (int)d;
    return true;
}

/* The value of `key` in object o; EF_ERR_FORMAT when missing or repeated. */
static ef_status get_field(const cJSON *o, const char *key, const cJSON **v) {
    *v = NULL;
    for (const cJSON *it = o->child; it; it = it->next) {
        if (!it->string || strcmp(it->string, key) != 0) continue;
        if (*v) return ef__fail(EF_ERR_FORMAT, "\"%s\" appears twice", key);
        *v = it;
    }
    if (!*v) return ef__fail(EF_ERR_FORMAT, "\"%s\" is missing", key);
    return EF_OK;
}

/* Collects the strings of array a into a new array (*n of them). */
static ef_status string_array(const cJSON *a, const char *key, const char ***out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (!cJSON_IsArray(a)) return ef__fail(EF_ERR_FORMAT, "\"%s\" is not an array", key);
    size_t cnt = 0;
    for (const cJSON *it = a->child; it; it = it->next) cnt++;
    if (cnt > EF_TOK_MAX_VOCAB)
        return ef__fail(EF_ERR_RANGE, "\"%s\" has %zu entries: at most %d", key, cnt, EF_TOK_MAX_VOCAB);
    const char **s = ef_malloc((cnt ? cnt : 1) * sizeof *s);
    if (!s) return EF_ERR_NOMEM;
    size_t i = 0;
    for (const cJSON *it = a->child; it; it = it->next, i++) {
        if (!cJSON_IsString(it) || !it->valuestring) {
            ef_free(s);
            return ef__fail(EF_ERR_FORMAT, "\"%s\"[%zu] is not a string", key, i);
        }
        s[i] = it->valuestring;
    }
    *out = s;
    *n = cnt;
    return EF_OK;
}

ef_status ef_tokenizer_parse(const char *text, size_t len, ef_tokenizer **out) {
    if (out) *out = NULL;
    if (!out || (!text && len)) return ef__fail(EF_ERR_INVALID, "ef_tokenizer_parse: NULL argument");
    if (len == 0) return ef__fail(EF_ERR_FORMAT, "empty tokenizer file");
    if (has_nul(text, len)) return ef__fail(EF_ERR_FORMAT, "a NUL character (not allowed in any token)");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        return ef__fail(EF_ERR_FORMAT, "not valid JSON (near byte %zu)", at);
    }
    ef_status st;
    const char **toks = NULL, **merges = NULL;
    int32_t *types = NULL;
    size_t n_tok = 0, n_merge = 0;
    for (const char *p = end; p < text + len; p++)
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') {
            st = ef__fail(EF_ERR_FORMAT, "text after the JSON object (byte %zu)", (size_t)(p - text));
            goto done;
        }
    if (!cJSON_IsObject(root)) {
        st = ef__fail(EF_ERR_FORMAT, "not a JSON object");
        goto done;
    }
    const cJSON *v;
    if ((st = get_field(root, "format", &v)) != EF_OK) goto done;
    if (!cJSON_IsString(v) || strcmp(v->valuestring, FILE_FORMAT) != 0) {
        st = ef__fail(EF_ERR_FORMAT, "not an edgefl tokenizer (\"format\" must be \"%s\")", FILE_FORMAT);
        goto done;
    }
    if ((st = get_field(root, "version", &v)) != EF_OK) goto done;
    int version;
    if (!json_int(v, 1, 1e9, &version)) {
        st = ef__fail(EF_ERR_FORMAT, "\"version\" is not a positive integer");
        goto done;
    }
    if (version > FILE_VERSION) {
        st = ef__fail(EF_ERR_UNSUPPORTED, "version %d is newer than this edgefl reads (%d)",
                      version, FILE_VERSION);
        goto done;
    }
    if ((st = get_field(root, "pre_tokenizer", &v)) != EF_OK) goto done;
    if (!cJSON_IsString(v)) {
        st = ef__fail(EF_ERR_FORMAT, "\"pre_tokenizer\" is not a string");
        goto done;
    }
    if (strcmp(v->valuestring, EF_TOK_GGUF_PRE) != 0) {
        st = ef__fail(EF_ERR_UNSUPPORTED, "pre-tokenizer \"%.64s\" (only \"%s\")", v->valuestring,
                      EF_TOK_GGUF_PRE);
        goto done;
    }
    if ((st = get_field(root, "tokens", &v)) != EF_OK) goto done;
    if ((st = string_array(v, "tokens", &toks, &n_tok)) != EF_OK) goto done;
    if ((st = get_field(root, "merges", &v)) != EF_OK) goto done;
    if ((st = string_array(v, "merges", &merges, &n_merge)) != EF_OK) goto done;
    if ((st = get_field(root, "token_types", &v)) != EF_OK) goto done;
    if (!cJSON_IsArray(v)) {
        st = ef__fail(EF_ERR_FORMAT, "\"token_types\" is not an array");
        goto done;
    }
    types = ef_malloc((n_tok ? n_tok : 1) * sizeof *types);
    if (!types) {
        st = EF_ERR_NOMEM;
        goto done;
    }
    size_t n_types = 0;
    for (const cJSON *it = v->child; it; it = it->next) n_types++;
    if (n_types != n_tok) {
        st = ef__fail(EF_ERR_FORMAT, "\"token_types\" has %zu entries for %zu tokens", n_types,
                      n_tok);
        goto done;
    }
    size_t i = 0;
    for (const cJSON *it = v->child; it; it = it->next, i++) {
        int ty;
        if (!json_int(it, -1e9, 1e9, &ty)) {
            st = ef__fail(EF_ERR_FORMAT, "\"token_types\"[%zu] is not an integer", i);
            goto done;
        }
        types[i] = ty;
    }
    st = ef_tokenizer_from_vocab(toks, types, n_tok, merges, n_merge, out);
done:
    ef_free(toks);
    ef_free(merges);
    ef_free(types);
    cJSON_Delete(root);
    return st;
}

ef_status ef_tokenizer_save(const ef_tokenizer *tok, const char *path) {
    if (!tok || !path) return ef__fail(EF_ERR_INVALID, "ef_tokenizer_save: NULL argument");
    char *text;
    size_t len;
    ef_status st = ef_tokenizer_serialize(tok, &text, &len);
    if (st != EF_OK) return st;
    st = ef_write_file_atomic(path, text, len);
    ef_free(text);
    return st;
}

ef_status ef_tokenizer_load(const char *path, ef_tokenizer **out) {
    if (out) *out = NULL;
    if (!path || !out) return ef__fail(EF_ERR_INVALID, "ef_tokenizer_load: NULL argument");
    char *text;
    size_t len;
    ef_status st = ef_read_file(path, FILE_MAX_BYTES, &text, &len);
    if (st != EF_OK) return st;
    st = ef_tokenizer_parse(text, len, out);
    ef_free(text);
    if (st != EF_OK) {
        char msg[900];
        snprintf(msg, sizeof msg, "%s", ef_last_error());
        ef__fail(st, "%s: %s", path, msg);
    }
    return st;
}
