/*
 * Training of the byte-level BPE tokenizer.
 *
 * 1. The corpus is cut at special-token text and pre-tokenized; distinct
 *    pre-tokens ("words") are counted in a hash map, in order of first
 *    appearance, without copying them (keys are offsets into the corpus).
 * 2. Each word becomes a sequence of token ids (its bytes). Every adjacent
 *    pair of ids gets a count (summed over words, weighted by the word's
 *    frequency) and the list of words that contain it.
 * 3. Repeatedly the most frequent pair (a, b) becomes a new token X: only the
 *    words on (a, b)'s list are rewritten, left to right without overlap as
 *    GPT-2 does, and only the pair counts around each rewrite change:
 *    (p, a) and (b, n) lose the word's frequency, (p, X) and (X, n) gain it,
 *    where p is the symbol already written before the rewrite (possibly an X)
 *    and n the one after. The best pair comes from a max-heap ordered by
 *    (count desc, a asc, b asc); counts of old pairs only fall, so heap
 *    entries are upper bounds: a popped entry whose count is out of date is
 *    pushed back with the current count, and an up-to-date one is the true
 *    maximum. Pairs with X are pushed once when X is made.
 * Cost per merge is proportional to the words that contain the pair, not to
 * the corpus: a 4096-token vocabulary on the 4.4 MB KJV takes well under a
 * second (docs/slm.md has measurements).
 */
#include <string.h>

#include "bpe_internal.h"
#include "core/strbuf.h"

void ef_bpe_train_opts_init(ef_bpe_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->min_frequency = 2;
}

typedef struct pair_info {
    int64_t count;
    uint32_t *words; /* words that contain (or contained) the pair, each once */
    uint32_t n_words, cap_words;
    int32_t a, b;
    uint32_t stamp;  /* merge step that last listed it as new */
    bool banned;     /* its bytes are already a token: never merge it */
} pair_info;

typedef struct heap_top {
    int64_t count;
    int32_t a, b;
} heap_top;

typedef struct trainer {
    const uint8_t *corpus;
    /* words */
    bpe_bmap word_map;
    size_t *woff;      /* word i: corpus[woff[i] .. + wlen0[i]) */
    uint32_t *wlen0;   /* length in bytes */
    uint64_t *wcount;  /* occurrences */
    size_t n_words, cap_words;
    int32_t *syms;     /* symbols of all words; word i starts at sstart[i] */
    size_t *sstart;
    uint32_t *slen;    /* current number of symbols */
    /* pairs */
    bpe_u64map pair_map;
    pair_info *pairs;
    size_t n_pairs, cap_pairs;
    uint32_t *fresh;   /* pairs created by the current merge */
    size_t n_fresh, cap_fresh;
    /* heap */
    heap_top *heap;
    size_t n_heap, cap_heap;
    /* tokens */
    uint8_t *tb;       /* bytes of all tokens */
    size_t tb_len, tb_cap;
    size_t *tboff;     /* token i: tb[tboff[i] .. tboff[i+1]) */
    size_t n_tok, cap_tok;
    bpe_bmap tok_map;  /* token bytes -> id */
    uint8_t *resv;     /* byte strings that are special tokens' byte-level text */
    size_t resv_len;
    bpe_bmap resv_map;
    int32_t *mleft, *mright;
    size_t n_merges;
} trainer;

static bool grow_arr(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    void *q = ef_realloc(*p, c * elem);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

static void trainer_free(trainer *t) {
    bpe_bmap_free(&t->word_map);
    ef_free(t->woff);
    ef_free(t->wlen0);
    ef_free(t->wcount);
    ef_free(t->syms);
    ef_free(t->sstart);
    ef_free(t->slen);
    bpe_u64map_free(&t->pair_map);
    for (size_t i = 0; i < t->n_pairs; i++) ef_free(t->pairs[i].words);
    ef_free(t->pairs);
    ef_free(t->fresh);
    ef_free(t->heap);
    ef_free(t->tb);
    ef_free(t->tboff);
    bpe_bmap_free(&t->tok_map);
    ef_free(t->resv);
    bpe_bmap_free(&t->resv_map);
    ef_free(t->mleft);
    ef_free(t->mright);
}

/* ---- counting words ------------------------------------------------------------ */

static ef_status count_word(trainer *t, size_t off, size_t len) {
    if (len > UINT32_MAX)
        return ef__fail(EF_ERR_RANGE, "a pre-token of %zu bytes is too long to train on", len);
    const uint8_t *w = t->corpus + off;
    uint64_t h = bpe_hash_bytes(w, len);
    uint32_t id;
    if (bpe_bmap_get(&t->word_map, t->corpus, w, len, h, &id)) {
        t->wcount[id]++;
        return EF_OK;
    }
    if (t->n_words >= UINT32_MAX - 1)
        return ef__fail(EF_ERR_RANGE, "more than %u distinct pre-tokens", UINT32_MAX - 1);
    size_t c = t->cap_words;
    if (!grow_arr((void **)&t->woff, &c, t->n_words + 1, sizeof *t->woff)) return EF_ERR_NOMEM;
    c = t->cap_words;
    if (!grow_arr((void **)&t->wlen0, &c, t->n_words + 1, sizeof *t->wlen0)) return EF_ERR_NOMEM;
    c = t->cap_words;
    if (!grow_arr((void **)&t->wcount, &c, t->n_words + 1, sizeof *t->wcount)) return EF_ERR_NOMEM;
    t->cap_words = c;
    ef_status st = bpe_bmap_add(&t->word_map, off, len, h, (uint32_t)t->n_words);
    if (st != EF_OK) return st;
    t->woff[t->n_words] = off;
    t->wlen0[t->n_words] = (uint32_t)len;
    t->wcount[t->n_words] = 1;
    t->n_words++;
    return EF_OK;
}

/* Length of the longest special token at s[0..n), or 0. */
static size_t special_len_at(const char *const *sp, const size_t *sp_len, size_t n_sp,
                             const uint8_t *first, const uint8_t *s, size_t n) {
    if (!first[s[0]]) return 0;
    size_t best = 0;
    for (size_t k = 0; k < n_sp; k++)
        if (sp_len[k] <= n && sp_len[k] > best && memcmp(s, sp[k], sp_len[k]) == 0)
            best = sp_len[k];
    return best;
}

/* ---- pairs ------------------------------------------------------------------------- */

/* Adds delta to the count of (a, b), creating the pair when new (then it is
 * listed in t->fresh); lists word w for the pair when w != UINT32_MAX. */
static ef_status pair_add(trainer *t, int32_t a, int32_t b, int64_t delta, uint32_t w,
                          uint32_t stamp) {
    uint64_t key = bpe_pair_key(a, b);
    uint32_t p;
    if (!bpe_u64map_get(&t->pair_map, key, &p)) {
        if (delta < 0) return ef__fail(EF_ERR_INTERNAL, "bpe: pair (%d, %d) vanished", a, b);
        if (t->n_pairs >= UINT32_MAX - 1) return ef__fail(EF_ERR_RANGE, "too many token pairs");
        if (!grow_arr((void **)&t->pairs, &t->cap_pairs, t->n_pairs + 1, sizeof *t->pairs))
            return EF_ERR_NOMEM;
        p = (uint32_t)t->n_pairs;
        if (bpe_u64map_put(&t->pair_map, key, p) != EF_OK) return EF_ERR_NOMEM;
        t->pairs[p] = (pair_info){0, NULL, 0, 0, a, b, 0, false};
        t->n_pairs++;
    }
    pair_info *pi = &t->pairs[p];
    pi->count += delta;
    if (pi->count < 0) return ef__fail(EF_ERR_INTERNAL, "bpe: pair (%d, %d) count below 0", a, b);
    if (w != UINT32_MAX && (pi->n_words == 0 || pi->words[pi->n_words - 1] != w)) {
        if (pi->n_words == pi->cap_words) {
            uint32_t c = pi->cap_words ? pi->cap_words * 2 : 4;
            uint32_t *q = ef_realloc(pi->words, (size_t)c * sizeof *q);
            if (!q) return EF_ERR_NOMEM;
            pi->words = q;
            pi->cap_words = c;
        }
        pi->words[pi->n_words++] = w;
    }
    if (stamp && pi->stamp != stamp) {
        pi->stamp = stamp;
        if (!grow_arr((void **)&t->fresh, &t->cap_fresh, t->n_fresh + 1, sizeof *t->fresh))
            return EF_ERR_NOMEM;
        t->fresh[t->n_fresh++] = p;
    }
    return EF_OK;
}

/* ---- max-heap by (count desc, a asc, b asc) ---------------------------------------- */

static bool top_before(const heap_top *x, const heap_top *y) {
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

static bool heap_push(trainer *t, heap_top v) {
    if (!grow_arr((void **)&t->heap, &t->cap_heap, t->n_heap + 1, sizeof *t->heap)) return false;
    size_t i = t->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!top_before(&v, &t->heap[p])) break;
        t->heap[i] = t->heap[p];
        i = p;
    }
    t->heap[i] = v;
    return true;
}

static heap_top heap_pop(trainer *t) {
    heap_top top = t->heap[0];
    heap_top v = t->heap[--t->n_heap];
    size_t i = 0, n = t->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && top_before(&t->heap[c + 1], &t->heap[c])) c++;
        if (!top_before(&t->heap[c], &v)) break;
        t->heap[i] = t->heap[c];
        i = c;
    }
    if (n) t->heap[i] = v;
    return top;
}

/* ---- tokens ---------------------------------------------------------------------- */

static ef_status add_token(trainer *t, const uint8_t *a, size_t la, const uint8_t *b, size_t lb) {
    if (!grow_arr((void **)&t->tb, &t->tb_cap, t->tb_len + la + lb, 1) ||
        !grow_arr((void **)&t->tboff, &t->cap_tok, t->n_tok + 2, sizeof *t->tboff))
        return EF_ERR_NOMEM;
    /* a and b never point into t->tb (which may just have moved) */
    memcpy(t->tb + t->tb_len, a, la);
    if (lb) memcpy(t->tb + t->tb_len + la, b, lb);
    size_t off = t->tb_len;
    t->tb_len += la + lb;
    ef_status st = bpe_bmap_add(&t->tok_map, off, la + lb, bpe_hash_bytes(t->tb + off, la + lb),
                                (uint32_t)t->n_tok);
    if (st != EF_OK) return st;
    t->tboff[t->n_tok] = off;
    t->tboff[t->n_tok + 1] = t->tb_len;
    t->n_tok++;
    return EF_OK;
}

/* ---- one merge --------------------------------------------------------------------- */

/* Rewrites word w with (a, b) -> x and updates the pair counts around each
 * rewrite. */
static ef_status merge_word(trainer *t, uint32_t w, int32_t a, int32_t b, int32_t x,
                            uint32_t stamp) {
    int32_t *s = t->syms + t->sstart[w];
    size_t n = t->slen[w];
    int64_t f = (int64_t)t->wcount[w];
    size_t i = 0, o = 0;
    ef_status st = EF_OK;
    while (i < n) {
        if (i + 1 < n && s[i] == a && s[i + 1] == b) {
            if (o > 0) {
                if ((st = pair_add(t, s[o - 1], a, -f, UINT32_MAX, 0)) != EF_OK ||
                    (st = pair_add(t, s[o - 1], x, f, w, stamp)) != EF_OK)
                    return st;
            }
            if ((st = pair_add(t, a, b, -f, UINT32_MAX, 0)) != EF_OK) return st;
            if (i + 2 < n) {
                if ((st = pair_add(t, b, s[i + 2], -f, UINT32_MAX, 0)) != EF_OK ||
                    (st = pair_add(t, x, s[i + 2], f, w, stamp)) != EF_OK)
                    return st;
            }
            s[o++] = x;
            i += 2;
        } else {
            s[o++] = s[i++];
        }
    }
    t->slen[w] = (uint32_t)o;
    return EF_OK;
}

/* ---- the whole training ----------------------------------------------------------- */

static ef_status check_specials(const char *const *sp, size_t n_sp, size_t *sp_len) {
    for (size_t k = 0; k < n_sp; k++) {
        if (!sp[k]) return ef__fail(EF_ERR_INVALID, "special token %zu is NULL", k);
        sp_len[k] = strlen(sp[k]);
        if (sp_len[k] == 0 || sp_len[k] > EF_TOK_MAX_SPECIAL_LEN)
            return ef__fail(EF_ERR_INVALID, "special token %zu must be 1..%d bytes", k,
                            EF_TOK_MAX_SPECIAL_LEN);
        for (size_t i = 0; i < sp_len[k];) {
            size_t q = ef__utf8_seq((const unsigned char *)sp[k] + i, sp_len[k] - i);
            if (q == 0) return ef__fail(EF_ERR_INVALID, "special token %zu is not valid UTF-8", k);
            i += q;
        }
        for (size_t j = 0; j < k; j++)
            if (strcmp(sp[j], sp[k]) == 0)
                return ef__fail(EF_ERR_INVALID, "special token \"%s\" given twice", sp[k]);
    }
    return EF_OK;
}

/* If `s` is made only of byte-level characters, the bytes they stand for
 * (*n of them, in out); else *n = 0. */
static void byte_level_bytes(const char *s, size_t len, uint8_t *out, size_t *n) {
    size_t k = 0;
    *n = 0;
    for (size_t i = 0; i < len;) {
        const unsigned char *u = (const unsigned char *)s + i;
        size_t q = ef__utf8_seq(u, len - i);
        uint32_t cp;
        if (q == 1) cp = u[0];
        else if (q == 2) cp = (uint32_t)(u[0] & 0x1F) << 6 | (u[1] & 0x3F);
        else return;
        int b = bpe_cp_byte(cp);
        if (b < 0) return;
        out[k++] = (uint8_t)b;
        i += q;
    }
    *n = k;
}

ef_status ef_bpe_train(const void *corpus, size_t len, size_t vocab_size,
                       const ef_bpe_train_opts *opts, ef_tokenizer **out) {
    static const char *const DEFAULT_SPECIALS[] = {EF_TOK_EOT};
    ef_bpe_train_opts defaults;
    if (out) *out = NULL;
    if (!out || (!corpus && len))
        return ef__fail(EF_ERR_INVALID, "ef_bpe_train: NULL argument");
    if (!opts) {
        ef_bpe_train_opts_init(&defaults);
        opts = &defaults;
    }
    const char *const *sp = opts->specials ? opts->specials : DEFAULT_SPECIALS;
    size_t n_sp = opts->specials ? opts->n_specials : 1;
    if (opts->min_frequency == 0)
        return ef__fail(EF_ERR_INVALID, "ef_bpe_train: min_frequency must be at least 1");
    if (n_sp > 1024) return ef__fail(EF_ERR_INVALID, "ef_bpe_train: %zu special tokens", n_sp);
    if (vocab_size > EF_TOK_MAX_VOCAB || vocab_size < 256 + n_sp)
        return ef__fail(EF_ERR_INVALID, "vocabulary size %zu: must be %zu..%d (256 bytes + %zu special)",
                        vocab_size, 256 + n_sp, EF_TOK_MAX_VOCAB, n_sp);
    size_t sp_len[1024];
    ef_status st = check_specials(sp, n_sp, sp_len);
    if (st != EF_OK) return st;

    double t0 = ef_now();
    trainer T;
    memset(&T, 0, sizeof T);
    trainer *t = &T;
    t->corpus = corpus;
    size_t target = vocab_size - 256 - n_sp;
    st = EF_ERR_NOMEM;

    /* byte tokens, and the byte strings reserved by special tokens */
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        if ((st = add_token(t, &c, 1, NULL, 0)) != EF_OK) goto fail;
    }
    for (size_t k = 0; k < n_sp; k++) {
        uint8_t buf[EF_TOK_MAX_SPECIAL_LEN];
        size_t nb;
        byte_level_bytes(sp[k], sp_len[k], buf, &nb);
        if (nb == 1) {
            st = ef__fail(EF_ERR_INVALID, "special token \"%s\" is the text of the byte token %u",
                          sp[k], buf[0]);
            goto fail;
        }
        if (nb == 0) continue;
        size_t cap = t->resv_len;
        if (!grow_arr((void **)&t->resv, &cap, t->resv_len + nb, 1)) goto fail;
        memcpy(t->resv + t->resv_len, buf, nb);
        if ((st = bpe_bmap_add(&t->resv_map, t->resv_len, nb, bpe_hash_bytes(buf, nb), 0)) != EF_OK)
            goto fail;
        t->resv_len += nb;
        st = EF_ERR_NOMEM;
    }

    /* 1. count pre-tokens between special tokens */
    uint8_t first[256] = {0};
    for (size_t k = 0; k < n_sp; k++) first[(uint8_t)sp[k][0]] = 1;
    const uint8_t *c = corpus;
    size_t pretokens = 0, n_special_occ = 0, seg = 0;
    for (size_t i = 0; i <= len; i++) {
        size_t sl = i < len && n_sp ? special_len_at(sp, sp_len, n_sp, first, c + i, len - i) : 0;
        if (i < len && sl == 0) continue;
        for (size_t pos = seg; pos < i;) {
            size_t end = ef_pretoken_end(c + seg, i - seg, pos - seg) + seg;
            if ((st = count_word(t, pos, end - pos)) != EF_OK) goto fail;
            pretokens++;
            pos = end;
        }
        if (sl) n_special_occ++;
        i += sl ? sl - 1 : 0;
        seg = i + 1;
    }
    double t1 = ef_now();

    /* 2. symbols and pairs */
    size_t total = 0;
    for (size_t w = 0; w < t->n_words; w++) total += t->wlen0[w];
    t->syms = ef_malloc((total ? total : 1) * sizeof *t->syms);
    t->sstart = ef_malloc((t->n_words ? t->n_words : 1) * sizeof *t->sstart);
    t->slen = ef_malloc((t->n_words ? t->n_words : 1) * sizeof *t->slen);
    t->mleft = ef_malloc((target ? target : 1) * sizeof *t->mleft);
    t->mright = ef_malloc((target ? target : 1) * sizeof *t->mright);
    if (!t->syms || !t->sstart || !t->slen || !t->mleft || !t->mright) goto fail;
    for (size_t w = 0, k = 0; w < t->n_words; w++) {
        t->sstart[w] = k;
        t->slen[w] = t->wlen0[w];
        for (uint32_t j = 0; j < t->wlen0[w]; j++) t->syms[k++] = c[t->woff[w] + j];
        for (uint32_t j = 0; j + 1 < t->wlen0[w]; j++) {
            int32_t *s = t->syms + t->sstart[w];
            if ((st = pair_add(t, s[j], s[j + 1], (int64_t)t->wcount[w], (uint32_t)w, 0)) != EF_OK)
                goto fail;
        }
    }
    for (size_t p = 0; p < t->n_pairs; p++)
        if (!heap_push(t, (heap_top){t->pairs[p].count, t->pairs[p].a, t->pairs[p].b})) goto fail;

    /* 3. merge */
    size_t skipped = 0;
    uint64_t last_count = 0;
    if (opts->progress) opts->progress(opts->user, 0, target);
    while (t->n_merges < target && t->n_heap) {
        heap_top top = heap_pop(t);
        uint32_t p;
        if (!bpe_u64map_get(&t->pair_map, bpe_pair_key(top.a, top.b), &p)) {
            st = ef__fail(EF_ERR_INTERNAL, "bpe: heap names an unknown pair");
            goto fail;
        }
        pair_info *pi = &t->pairs[p];
        if (pi->banned) continue;
        if (pi->count != top.count) {
            if (pi->count >= (int64_t)opts->min_frequency &&
                !heap_push(t, (heap_top){pi->count, top.a, top.b}))
                goto fail;
            continue;
        }
        if (pi->count < (int64_t)opts->min_frequency) break;
        int32_t a = top.a, b = top.b;
        size_t la = t->tboff[a + 1] - t->tboff[a], lb = t->tboff[b + 1] - t->tboff[b];
        uint8_t stackbuf[256];
        uint8_t *joined = la + lb <= sizeof stackbuf ? stackbuf : ef_malloc(la + lb);
        if (!joined) goto fail;
        memcpy(joined, t->tb + t->tboff[a], la);
        memcpy(joined + la, t->tb + t->tboff[b], lb);
        uint64_t h = bpe_hash_bytes(joined, la + lb);
        uint32_t dummy;
        if (bpe_bmap_get(&t->tok_map, t->tb, joined, la + lb, h, &dummy) ||
            bpe_bmap_get(&t->resv_map, t->resv, joined, la + lb, h, &dummy)) {
            /* another split of these bytes is already a token (or a special
             * token's text): keep token bytes unique */
            if (joined != stackbuf) ef_free(joined);
            pi->banned = true;
            skipped++;
            continue;
        }
        st = add_token(t, joined, la + lb, NULL, 0);
        if (joined != stackbuf) ef_free(joined);
        if (st != EF_OK) goto fail;
        int32_t x = (int32_t)(256 + t->n_merges);
        t->mleft[t->n_merges] = a;
        t->mright[t->n_merges] = b;
        t->n_merges++;
        last_count = (uint64_t)pi->count;
        uint32_t stamp = (uint32_t)t->n_merges; /* >= 1 */
        t->n_fresh = 0;
        uint32_t *list = pi->words, nl = pi->n_words;
        for (uint32_t k = 0; k < nl; k++)
            if ((st = merge_word(t, list[k], a, b, x, stamp)) != EF_OK) goto fail;
        pi = &t->pairs[p]; /* the pair array may have moved */
        if (pi->count != 0) {
            st = ef__fail(EF_ERR_INTERNAL, "bpe: pair (%d, %d) still counted %lld after its merge",
                          a, b, (long long)pi->count);
            goto fail;
        }
        ef_free(pi->words);
        pi->words = NULL;
        pi->n_words = pi->cap_words = 0;
        for (size_t k = 0; k < t->n_fresh; k++) {
            pair_info *q = &t->pairs[t->fresh[k]];
            if (q->count >= (int64_t)opts->min_frequency &&
                !heap_push(t, (heap_top){q->count, q->a, q->b}))
                goto fail;
        }
        if (opts->progress && (t->n_merges % 16 == 0)) opts->progress(opts->user, t->n_merges, target);
    }
    if (opts->progress) opts->progress(opts->user, t->n_merges, target);
    double t2 = ef_now();

    /* the tokenizer: bytes, merges, specials */
    size_t n_tok = 256 + t->n_merges + n_sp;
    uint8_t *types = ef_malloc(n_tok);
    int32_t *res = ef_malloc((t->n_merges ? t->n_merges : 1) * sizeof *res);
    if (!types || !res) {
        ef_free(types);
        ef_free(res);
        goto fail;
    }
    for (size_t k = 0; k < n_sp; k++) {
        if ((st = add_token(t, (const uint8_t *)sp[k], sp_len[k], NULL, 0)) != EF_OK) {
            ef_free(types);
            ef_free(res);
            goto fail;
        }
    }
    memset(types, EF_TOK_NORMAL, n_tok);
    memset(types + 256 + t->n_merges, EF_TOK_CONTROL, n_sp);
    for (size_t k = 0; k < t->n_merges; k++) res[k] = (int32_t)(256 + k);
    st = bpe_build(n_tok, t->tb, t->tboff, types, t->n_merges, t->mleft, t->mright, res, out);
    ef_free(types);
    ef_free(res);
    if (st != EF_OK) goto fail;

    if (opts->stats) {
        ef_bpe_train_stats *s = opts->stats;
        s->corpus_bytes = len;
        s->pretokens = pretokens;
        s->unique_words = t->n_words;
        s->merges = t->n_merges;
        s->skipped = skipped;
        s->last_count = last_count;
        uint64_t ct = n_special_occ;
        for (size_t w = 0; w < t->n_words; w++) ct += (uint64_t)t->slen[w] * t->wcount[w];
        s->corpus_tokens = ct;
        s->seconds_count = t1 - t0;
        s->seconds_merge = t2 - t1;
    }
    trainer_free(t);
    return EF_OK;
fail:
    /* allocation failures jump here with st still EF_OK or EF_ERR_NOMEM */
    if (st == EF_OK || st == EF_ERR_NOMEM) {
        st = EF_ERR_NOMEM;
        ef__fail(EF_ERR_NOMEM, "out of memory training a tokenizer on %zu bytes", len);
    }
    trainer_free(t);
    return st;
}
