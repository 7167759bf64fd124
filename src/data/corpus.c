/*
 * Deterministic held-out split of a line-oriented corpus (include/edgefl/
 * corpus.h): each line goes to training or validation by a hash of its key
 * (the verse label, or the line), so the split never depends on line order,
 * a seed or the platform.
 */
#include <string.h>

#include "core/core_internal.h"
#include "core/strbuf.h"
#include "edgefl/corpus.h"

uint64_t ef_corpus_hash(const void *key, size_t len) {
    const uint8_t *p = key;
    uint64_t x = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        x ^= p[i];
        x *= 0x100000001b3ull;
    }
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

int ef_corpus_heldout(const void *key, size_t len, double fraction) {
    double u = (double)(ef_corpus_hash(key, len) >> 11) * 0x1.0p-53;
    return u < fraction;
}

static bool blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\f' && s[i] != '\v') return false;
    return true;
}

ef_status ef_corpus_split(const char *text, size_t len, ef_corpus_key key, double fraction,
                          int drop_labels, char **train, size_t *train_len, char **valid,
                          size_t *valid_len, ef_corpus_stats *stats) {
    if (train) *train = NULL;
    if (valid) *valid = NULL;
    if (train_len) *train_len = 0;
    if (valid_len) *valid_len = 0;
    if ((!text && len) || !train || !valid || !train_len || !valid_len)
        return ef__fail(EF_ERR_INVALID, "ef_corpus_split: NULL argument");
    if (!(fraction >= 0.0 && fraction <= 1.0))
        return ef__fail(EF_ERR_INVALID, "held-out fraction %g is not in [0, 1]", fraction);
    if (key != EF_CORPUS_BY_LABEL && key != EF_CORPUS_BY_TEXT)
        return ef__fail(EF_ERR_INVALID, "unknown split key %d", (int)key);
    if (drop_labels && key != EF_CORPUS_BY_LABEL)
        return ef__fail(EF_ERR_INVALID, "labels can only be dropped when splitting by label");
    ef_corpus_stats s = {0};
    ef__sb tr = {0}, va = {0};
    /* both outputs together are at most the input plus one newline */
    if (!ef__sb_reserve(&tr, len / 8 * 7 + 64) || !ef__sb_reserve(&va, len / 16 + 64)) goto nomem;
    size_t line_no = 0;
    for (size_t pos = 0; pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        const char *line = text + pos;
        size_t n = end - pos;
        pos = nl ? end + 1 : len;
        line_no++;
        if (n && line[n - 1] == '\r') n--;
        const char *k = line, *body = line;
        size_t kn = n, bn = n;
        int held = 0;
        if (key == EF_CORPUS_BY_LABEL) {
            if (n == 0) {
                s.skipped_empty++;
                continue;
            }
            const char *space = memchr(line, ' ', n);
            if (!space || space == line) {
                ef__sb_free(&tr);
                ef__sb_free(&va);
                return ef__fail(EF_ERR_FORMAT, "line %zu has no label (\"LABEL text\"): \"%.40s\"",
                                line_no, line);
            }
            kn = (size_t)(space - line);
            if (drop_labels) {
                body = space + 1;
                bn = n - kn - 1;
            }
            held = ef_corpus_heldout(k, kn, fraction);
        } else {
            held = !blank(line, n) && ef_corpus_heldout(k, kn, fraction);
        }
        ef__sb *dst = held ? &va : &tr;
        ef__sb_put(dst, body, bn);
        ef__sb_put(dst, "\n", 1);
        if (held) {
            s.valid_lines++;
            s.valid_bytes += bn + 1;
        } else {
            s.train_lines++;
            s.train_bytes += bn + 1;
        }
    }
    /* an empty side is still a valid (empty) text */
    if (!ef__sb_reserve(&tr, 0) || !ef__sb_reserve(&va, 0) || tr.oom || va.oom) goto nomem;
    tr.p[tr.len] = '\0';
    va.p[va.len] = '\0';
    *train = tr.p;
    *train_len = tr.len;
    *valid = va.p;
    *valid_len = va.len;
    if (stats) *stats = s;
    return EF_OK;
nomem:
    ef__sb_free(&tr);
    ef__sb_free(&va);
    return ef__fail(EF_ERR_NOMEM, "out of memory splitting %zu bytes", len);
}
