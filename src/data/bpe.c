/*
 * The byte-level BPE tokenizer object: construction from token bytes and
 * merges (shared by training, the file reader and the GGUF arrays), the
 * vocabulary accessors, encoding and decoding.
 *
 * Encoding cuts the text at special tokens (when asked), cuts each piece into
 * pre-tokens (bpe_pretok.c) and applies the merges inside each pre-token:
 * the symbols form a linked list and a min-heap holds the candidate adjacent
 * pairs by (rank, position), so a pre-token of n bytes takes O(n log n) even
 * when it is long (a run of spaces, an unbroken script). Popped candidates
 * whose symbols changed are skipped: a symbol's id only changes by merging,
 * which makes it strictly longer, so equal ids mean an unchanged pair. This
 * is GPT-2's rule (merge the lowest-ranked pair everywhere, then the next)
 * because a merge only creates pairs that involve its new token, which rank
 * after it. Short pre-tokens are cached.
 */
#include <stdlib.h>
#include <string.h>

#include "bpe_internal.h"
#include "core/strbuf.h"

/* ---- construction ----------------------------------------------------------- */

static size_t utf8_put(char *out, uint32_t cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
}

/* Byte-level text of b[0..n): at most 2 bytes of UTF-8 per byte (code points
 * below 0x800). */
static size_t byte_level_text(char *out, const uint8_t *b, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += utf8_put(out + k, bpe_byte_cp(b[i]));
    return k;
}

static bool valid_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t k = ef__utf8_seq(s + i, n - i);
        if (k == 0) return false;
        i += k;
    }
    return true;
}

static bpe_cache *cache_new(void) {
    bpe_cache *c = ef_calloc(1, sizeof *c);
    if (!c) return NULL;
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        ef_free(c);
        ef__fail(EF_ERR_NOMEM, "cannot create the tokenizer's cache lock");
        return NULL;
    }
    return c;
}

static void cache_free(bpe_cache *c) {
    if (!c) return;
    pthread_mutex_destroy(&c->lock);
    bpe_bmap_free(&c->map);
    ef_free(c->keys);
    ef_free(c->ids);
    ef_free(c->ent_off);
    ef_free(c->ent_n);
    ef_free(c);
}

void ef_tokenizer_free(ef_tokenizer *tok) {
    if (!tok) return;
    ef_free(tok->bytes);
    ef_free(tok->boff);
    ef_free(tok->text);
    ef_free(tok->toff);
    ef_free(tok->types);
    ef_free(tok->mleft);
    ef_free(tok->mright);
    ef_free(tok->mresult);
    ef_free(tok->mtext);
    ef_free(tok->mtoff);
    bpe_u64map_free(&tok->ranks);
    ef_free(tok->specials);
    cache_free(tok->cache);
    ef_free(tok);
}

ef_status bpe_build(size_t n, const uint8_t *bytes, const size_t *boff, const uint8_t *types,
                    size_t n_merges, const int32_t *left, const int32_t *right,
                    const int32_t *result, ef_tokenizer **out) {
    ef_status st = EF_ERR_NOMEM;
    bpe_bmap texts = {0};
    *out = NULL;
    if (n < 256 || n > EF_TOK_MAX_VOCAB)
        return ef__fail(n > EF_TOK_MAX_VOCAB ? EF_ERR_RANGE : EF_ERR_FORMAT,
                        "a tokenizer needs 256..%d tokens, not %zu", EF_TOK_MAX_VOCAB, n);
    if (n_merges > EF_TOK_MAX_VOCAB)
        return ef__fail(EF_ERR_RANGE, "%zu merges: at most %d", n_merges, EF_TOK_MAX_VOCAB);
    ef_tokenizer *t = ef_calloc(1, sizeof *t);
    if (!t) return EF_ERR_NOMEM;
    t->n_tokens = n;
    t->eot = -1;
    size_t nbytes = boff[n];
    t->bytes = ef_malloc(nbytes);
    t->boff = ef_malloc((n + 1) * sizeof *t->boff);
    t->types = ef_malloc(n);
    t->toff = ef_malloc((n + 1) * sizeof *t->toff);
    t->text = ef_malloc(2 * nbytes + n); /* byte-level text: <= 2 bytes per byte, + NULs */
    t->cache = cache_new();
    if (!t->bytes || !t->boff || !t->types || !t->toff || !t->text || !t->cache) goto fail;
    memcpy(t->bytes, bytes, nbytes);
    memcpy(t->boff, boff, (n + 1) * sizeof *boff);
    memcpy(t->types, types, n);
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;

    /* tokens: types, bytes, text; unique texts */
    size_t tk = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *b = bytes + boff[i];
        size_t len = boff[i + 1] - boff[i];
        t->toff[i] = tk;
        if (types[i] == EF_TOK_NORMAL) {
            if (len == 0) {
                st = ef__fail(EF_ERR_FORMAT, "token %zu is empty", i);
                goto fail;
            }
            if (len == 1) t->byte_id[b[0]] = (int32_t)i;
            tk += byte_level_text(t->text + tk, b, len);
        } else if (types[i] == EF_TOK_CONTROL) {
            if (len == 0 || len > EF_TOK_MAX_SPECIAL_LEN || memchr(b, 0, len) ||
                !valid_utf8(b, len)) {
                st = ef__fail(EF_ERR_FORMAT,
                              "special token %zu must be 1..%d bytes of UTF-8 without NUL", i,
                              EF_TOK_MAX_SPECIAL_LEN);
                goto fail;
            }
            memcpy(t->text + tk, b, len);
            tk += len;
            t->n_specials++;
            t->special_first[b[0]] = 1;
            if (len == strlen(EF_TOK_EOT) && memcmp(b, EF_TOK_EOT, len) == 0) t->eot = (int32_t)i;
        } else {
            st = ef__fail(EF_ERR_UNSUPPORTED, "token %zu has type %d (only %d normal and %d control)",
                          i, types[i], EF_TOK_NORMAL, EF_TOK_CONTROL);
            goto fail;
        }
        size_t tl = tk - t->toff[i];
        t->text[tk++] = '\0';
        uint64_t h = bpe_hash_bytes(t->text + t->toff[i], tl);
        uint32_t other;
        if (bpe_bmap_get(&texts, (const uint8_t *)t->text, t->text + t->toff[i], tl, h, &other)) {
            st = ef__fail(EF_ERR_FORMAT, "tokens %u and %zu have the same text \"%.64s\"", other, i,
                          t->text + t->toff[i]);
            goto fail;
        }
        if ((st = bpe_bmap_add(&texts, t->toff[i], tl, h, (uint32_t)i)) != EF_OK) goto fail;
        st = EF_ERR_NOMEM;
    }
    t->toff[n] = tk;
    for (int b = 0; b < 256; b++)
        if (t->byte_id[b] < 0) {
            st = ef__fail(EF_ERR_FORMAT, "no token for the byte 0x%02x", b);
            goto fail;
        }

    /* specials by id */
    t->specials = ef_malloc((t->n_specials ? t->n_specials : 1) * sizeof *t->specials);
    if (!t->specials) goto fail;
    for (size_t i = 0, k = 0; i < n; i++)
        if (types[i] == EF_TOK_CONTROL) t->specials[k++] = (int32_t)i;

    /* merges */
    t->n_merges = n_merges;
    size_t nm = n_merges ? n_merges : 1;
    t->mleft = ef_malloc(nm * sizeof(int32_t));
    t->mright = ef_malloc(nm * sizeof(int32_t));
    t->mresult = ef_malloc(nm * sizeof(int32_t));
    t->mtoff = ef_malloc((nm + 1) * sizeof(size_t));
    if (!t->mleft || !t->mright || !t->mresult || !t->mtoff) goto fail;
    size_t mlen = 0;
    for (size_t k = 0; k < n_merges; k++) {
        int32_t a = left[k], b = right[k], r = result[k];
        if (a < 0 || b < 0 || r < 0 || (size_t)a >= n || (size_t)b >= n || (size_t)r >= n) {
            st = ef__fail(EF_ERR_FORMAT, "merge %zu names a token outside 0..%zu", k, n - 1);
            goto fail;
        }
        if (types[a] != EF_TOK_NORMAL || types[b] != EF_TOK_NORMAL || types[r] != EF_TOK_NORMAL) {
            st = ef__fail(EF_ERR_FORMAT, "merge %zu involves a special token", k);
            goto fail;
        }
        size_t la = boff[a + 1] - boff[a], lb = boff[b + 1] - boff[b], lr = boff[r + 1] - boff[r];
        if (lr != la + lb || memcmp(bytes + boff[r], bytes + boff[a], la) != 0 ||
            memcmp(bytes + boff[r] + la, bytes + boff[b], lb) != 0) {
            st = ef__fail(EF_ERR_FORMAT, "merge %zu: token %d is not tokens %d and %d joined", k,
                          r, a, b);
            goto fail;
        }
        uint32_t prev;
        if (bpe_u64map_get(&t->ranks, bpe_pair_key(a, b), &prev)) {
            st = ef__fail(EF_ERR_FORMAT, "merges %u and %zu join the same pair", prev, k);
            goto fail;
        }
        if (bpe_u64map_put(&t->ranks, bpe_pair_key(a, b), (uint32_t)k) != EF_OK) goto fail;
        t->mleft[k] = a;
        t->mright[k] = b;
        t->mresult[k] = r;
        t->mtoff[k] = mlen;
        mlen += (t->toff[a + 1] - t->toff[a]) + (t->toff[b + 1] - t->toff[b]) + 1;
    }
    t->mtoff[n_merges] = mlen;
    t->mtext = ef_malloc(mlen ? mlen : 1);
    if (!t->mtext) goto fail;
    for (size_t k = 0; k < n_merges; k++) {
        char *p = t->mtext + t->mtoff[k];
        size_t la = t->toff[t->mleft[k] + 1] - t->toff[t->mleft[k]] - 1;
        size_t lb = t->toff[t->mright[k] + 1] - t->toff[t->mright[k]] - 1;
        memcpy(p, t->text + t->toff[t->mleft[k]], la);
        p[la] = ' ';
        memcpy(p + la + 1, t->text + t->toff[t->mright[k]], lb + 1);
    }
    bpe_bmap_free(&texts);
    *out = t;
    return EF_OK;
fail:
    if (st == EF_OK || st == EF_ERR_NOMEM) {
        st = EF_ERR_NOMEM;
        ef__fail(EF_ERR_NOMEM, "out of memory building a tokenizer of %zu tokens", n);
    }
    bpe_bmap_free(&texts);
    ef_tokenizer_free(t);
    return st;
}

/* ---- accessors --------------------------------------------------------------- */

size_t ef_tokenizer_n_tokens(const ef_tokenizer *tok) { return tok->n_tokens; }
size_t ef_tokenizer_n_merges(const ef_tokenizer *tok) { return tok->n_merges; }
size_t ef_tokenizer_n_specials(const ef_tokenizer *tok) { return tok->n_specials; }

const uint8_t *ef_tokenizer_token_bytes(const ef_tokenizer *tok, int32_t id, size_t *len) {
    if (id < 0 || (size_t)id >= tok->n_tokens) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = tok->boff[id + 1] - tok->boff[id];
    return tok->bytes + tok->boff[id];
}

const char *ef_tokenizer_token_text(const ef_tokenizer *tok, int32_t id) {
    if (id < 0 || (size_t)id >= tok->n_tokens) return NULL;
    return tok->text + tok->toff[id];
}

int ef_tokenizer_token_type(const ef_tokenizer *tok, int32_t id) {
    if (id < 0 || (size_t)id >= tok->n_tokens) return 0;
    return tok->types[id];
}

const char *ef_tokenizer_merge_text(const ef_tokenizer *tok, size_t i) {
    if (i >= tok->n_merges) return NULL;
    return tok->mtext + tok->mtoff[i];
}

ef_status ef_tokenizer_merge(const ef_tokenizer *tok, size_t i, int32_t *left, int32_t *right,
                             int32_t *result) {
    if (i >= tok->n_merges)
        return ef__fail(EF_ERR_RANGE, "merge %zu: the tokenizer has %zu merges", i, tok->n_merges);
    if (left) *left = tok->mleft[i];
    if (right) *right = tok->mright[i];
    if (result) *result = tok->mresult[i];
    return EF_OK;
}

int32_t ef_tokenizer_special_id(const ef_tokenizer *tok, const char *text) {
    if (!text) return -1;
    size_t len = strlen(text);
    for (size_t k = 0; k < tok->n_specials; k++) {
        int32_t id = tok->specials[k];
        if (tok->boff[id + 1] - tok->boff[id] == len &&
            memcmp(tok->bytes + tok->boff[id], text, len) == 0)
            return id;
    }
    return -1;
}

int32_t ef_tokenizer_eot_id(const ef_tokenizer *tok) { return tok->eot; }

/* ---- encoding ---------------------------------------------------------------- */

typedef struct heap_ent {
    uint32_t rank, pos;
    int32_t left, right;
} heap_ent;

/* Scratch space of one encode call and its growing output. */
typedef struct enc_state {
    const ef_tokenizer *tok;
    int32_t *out;
    size_t n_out, cap_out;
    int32_t *sym, *prev, *next; /* one per byte of the pre-token */
    size_t cap_sym;
    heap_ent *heap;
    size_t n_heap, cap_heap;
} enc_state;

static bool grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = ef_realloc(*p, c * elem);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

static bool out_push(enc_state *e, const int32_t *ids, size_t n) {
    if (!grow((void **)&e->out, &e->cap_out, e->n_out + n, sizeof *e->out)) return false;
    memcpy(e->out + e->n_out, ids, n * sizeof *ids);
    e->n_out += n;
    return true;
}

static bool heap_less(const heap_ent *a, const heap_ent *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static bool heap_push(enc_state *e, heap_ent v) {
    if (!grow((void **)&e->heap, &e->cap_heap, e->n_heap + 1, sizeof *e->heap)) return false;
    size_t i = e->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&v, &e->heap[p])) break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = v;
    return true;
}

static heap_ent heap_pop(enc_state *e) {
    heap_ent top = e->heap[0];
    heap_ent v = e->heap[--e->n_heap];
    size_t i = 0, n = e->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_less(&e->heap[c + 1], &e->heap[c])) c++;
        if (!heap_less(&e->heap[c], &v)) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n) e->heap[i] = v;
    return top;
}

/* Pushes the pair of symbols at positions l and r when it is a merge. */
static bool try_pair(enc_state *e, int32_t l, int32_t r) {
    uint32_t rank;
    if (!bpe_u64map_get(&e->tok->ranks, bpe_pair_key(e->sym[l], e->sym[r]), &rank)) return true;
    return heap_push(e, (heap_ent){rank, (uint32_t)l, e->sym[l], e->sym[r]});
}

/* BPE of one pre-token w[0..n), n >= 2; the ids are left in e->sym, linked
 * from position 0 through e->next. */
static bool bpe_word(enc_state *e, const uint8_t *w, size_t n) {
    const ef_tokenizer *t = e->tok;
    if (n > e->cap_sym) {
        size_t c = e->cap_sym ? e->cap_sym : 64;
        while (c < n) c *= 2;
        int32_t **arrs[3] = {&e->sym, &e->prev, &e->next};
        for (int k = 0; k < 3; k++) {
            int32_t *p = ef_realloc(*arrs[k], c * sizeof(int32_t));
            if (!p) return false;
            *arrs[k] = p;
        }
        e->cap_sym = c;
    }
    for (size_t i = 0; i < n; i++) {
        e->sym[i] = t->byte_id[w[i]];
        e->prev[i] = (int32_t)i - 1;
        e->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    e->n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (!try_pair(e, (int32_t)i, (int32_t)i + 1)) return false;
    while (e->n_heap) {
        heap_ent h = heap_pop(e);
        int32_t l = (int32_t)h.pos;
        if (e->sym[l] != h.left) continue; /* merged into its left neighbour, or grew */
        int32_t r = e->next[l];
        if (r < 0 || e->sym[r] != h.right) continue;
        e->sym[l] = t->mresult[h.rank];
        e->sym[r] = -1;
        e->next[l] = e->next[r];
        if (e->next[r] >= 0) e->prev[e->next[r]] = l;
        if (e->prev[l] >= 0 && !try_pair(e, e->prev[l], l)) return false;
        if (e->next[l] >= 0 && !try_pair(e, l, e->next[l])) return false;
    }
    return true;
}

/* Appends the encoding of pre-token w[0..n) to the output. */
static bool encode_word(enc_state *e, const uint8_t *w, size_t n) {
    const ef_tokenizer *t = e->tok;
    if (n == 1) return out_push(e, &t->byte_id[w[0]], 1);
    bpe_cache *c = t->cache;
    bool cacheable = n <= BPE_CACHE_MAX_KEY;
    uint64_t h = 0;
    if (cacheable) {
        h = bpe_hash_bytes(w, n);
        pthread_mutex_lock(&c->lock);
        uint32_t ent;
        if (bpe_bmap_get(&c->map, c->keys, w, n, h, &ent)) {
            bool ok = out_push(e, c->ids + c->ent_off[ent], c->ent_n[ent]);
            pthread_mutex_unlock(&c->lock);
            return ok;
        }
        pthread_mutex_unlock(&c->lock);
    }
    if (!bpe_word(e, w, n)) return false;
    size_t start = e->n_out;
    for (int32_t i = 0; i >= 0; i = e->next[i])
        if (!out_push(e, &e->sym[i], 1)) return false;
    if (!cacheable) return true;
    size_t k = e->n_out - start;
    pthread_mutex_lock(&c->lock);
    uint32_t ent;
    if (!bpe_bmap_get(&c->map, c->keys, w, n, h, &ent)) {
        if (c->n_ent >= BPE_CACHE_MAX_ENTRIES) {
            bpe_bmap_clear(&c->map);
            c->n_ent = c->keys_len = c->ids_len = 0;
        }
        /* a failed allocation here only means this entry is not cached */
        size_t ent_cap = c->ent_cap;
        if (grow((void **)&c->keys, &c->keys_cap, c->keys_len + n, 1) &&
            grow((void **)&c->ids, &c->ids_cap, c->ids_len + k, sizeof(int32_t)) &&
            grow((void **)&c->ent_n, &ent_cap, c->n_ent + 1, sizeof(uint32_t)) &&
            grow((void **)&c->ent_off, &c->ent_cap, c->n_ent + 1, sizeof(size_t)) &&
            bpe_bmap_add(&c->map, c->keys_len, n, h, (uint32_t)c->n_ent) == EF_OK) {
            memcpy(c->keys + c->keys_len, w, n);
            c->keys_len += n;
            memcpy(c->ids + c->ids_len, e->out + start, k * sizeof(int32_t));
            c->ent_off[c->n_ent] = c->ids_len;
            c->ent_n[c->n_ent] = (uint32_t)k;
            c->ids_len += k;
            c->n_ent++;
        }
        ef_clear_error();
    }
    pthread_mutex_unlock(&c->lock);
    return true;
}

/* Encodes a piece of text that holds no special token. */
static bool encode_plain(enc_state *e, const uint8_t *s, size_t n) {
    for (size_t pos = 0; pos < n;) {
        size_t end = ef_pretoken_end(s, n, pos);
        if (!encode_word(e, s + pos, end - pos)) return false;
        pos = end;
    }
    return true;
}

/* Id of the longest special token whose text starts at s[0..n), or -1. */
static int32_t special_at(const ef_tokenizer *t, const uint8_t *s, size_t n) {
    if (!t->special_first[s[0]]) return -1;
    int32_t best = -1;
    size_t best_len = 0;
    for (size_t k = 0; k < t->n_specials; k++) {
        int32_t id = t->specials[k];
        size_t len = t->boff[id + 1] - t->boff[id];
        if (len <= n && len > best_len && memcmp(s, t->bytes + t->boff[id], len) == 0) {
            best = id;
            best_len = len;
        }
    }
    return best;
}

ef_status ef_tokenizer_encode(const ef_tokenizer *tok, const void *text, size_t len,
                              unsigned flags, int32_t **ids, size_t *n_ids) {
    if (ids) *ids = NULL;
    if (n_ids) *n_ids = 0;
    if (!tok || (!text && len) || !ids || !n_ids)
        return ef__fail(EF_ERR_INVALID, "ef_tokenizer_encode: NULL argument");
    if (flags & ~EF_TOK_ALLOW_SPECIAL)
        return ef__fail(EF_ERR_INVALID, "ef_tokenizer_encode: unknown flags 0x%x", flags);
    /* symbol positions inside a pre-token are int32_t */
    if (len > INT32_MAX)
        return ef__fail(EF_ERR_RANGE, "ef_tokenizer_encode: %zu bytes in one call (at most %d)", len,
                        INT32_MAX);
    enc_state e = {.tok = tok};
    const uint8_t *s = text;
    bool ok = grow((void **)&e.out, &e.cap_out, len / 3 + 16, sizeof *e.out);
    if (ok && (flags & EF_TOK_ALLOW_SPECIAL) && tok->n_specials) {
        size_t start = 0;
        for (size_t i = 0; ok && i < len; i++) {
            int32_t sp = special_at(tok, s + i, len - i);
            if (sp < 0) continue;
            ok = encode_plain(&e, s + start, i - start) && out_push(&e, &sp, 1);
            i += tok->boff[sp + 1] - tok->boff[sp] - 1;
            start = i + 1;
        }
        if (ok) ok = encode_plain(&e, s + start, len - start);
    } else if (ok) {
        ok = encode_plain(&e, s, len);
    }
    ef_free(e.sym);
    ef_free(e.prev);
    ef_free(e.next);
    ef_free(e.heap);
    if (!ok) {
        ef_free(e.out);
        return ef__fail(EF_ERR_NOMEM, "out of memory encoding %zu bytes", len);
    }
    *ids = e.out;
    *n_ids = e.n_out;
    return EF_OK;
}

/* ---- decoding ----------------------------------------------------------------- */

ef_status ef_tokenizer_decode(const ef_tokenizer *tok, const int32_t *ids, size_t n, char **text,
                              size_t *len) {
    if (text) *text = NULL;
    if (len) *len = 0;
    if (!tok || (!ids && n) || !text || !len)
        return ef__fail(EF_ERR_INVALID, "ef_tokenizer_decode: NULL argument");
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= tok->n_tokens)
            return ef__fail(EF_ERR_RANGE, "token %zu of %zu is %d, outside 0..%zu", i, n, ids[i],
                            tok->n_tokens - 1);
        total += tok->boff[ids[i] + 1] - tok->boff[ids[i]];
    }
    char *out = ef_malloc(total + 1);
    if (!out) return EF_ERR_NOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = tok->boff[ids[i] + 1] - tok->boff[ids[i]];
        memcpy(out + k, tok->bytes + tok->boff[ids[i]], l);
        k += l;
    }
    out[k] = '\0';
    *text = out;
    *len = k;
    return EF_OK;
}
