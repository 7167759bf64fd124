/*
 * Internal pieces of the byte-level BPE tokenizer (src/data/bpe*.c): the
 * tokenizer object, two small open-addressing hash maps (u64 keys, and byte
 * strings stored as offsets into a caller's buffer so the buffer may move),
 * GPT-2's byte-to-unicode table and the character classes of the
 * pre-tokenizer.
 */
#ifndef EDGEFL_BPE_INTERNAL_H
#define EDGEFL_BPE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/core_internal.h"
#include "edgefl/tokenizer.h"

/* ---- u64 -> u32 map (pair of ids -> rank or pair index) ------------------ */

#define BPE_U64_EMPTY UINT64_MAX

typedef struct bpe_u64map {
    uint64_t *keys; /* BPE_U64_EMPTY marks a free slot */
    uint32_t *vals;
    size_t cap;     /* power of two, or 0 */
    size_t n;
} bpe_u64map;

/* Key of the ordered pair (a, b) of token ids. */
static inline uint64_t bpe_pair_key(int32_t a, int32_t b) {
    return (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
}

/* Finds key; returns true and *val when present. */
bool bpe_u64map_get(const bpe_u64map *m, uint64_t key, uint32_t *val);
/* Inserts or replaces. EF_ERR_NOMEM when growing fails (the map is unchanged). */
ef_status bpe_u64map_put(bpe_u64map *m, uint64_t key, uint32_t val);
void bpe_u64map_free(bpe_u64map *m);

/* ---- byte string -> u32 map ------------------------------------------------ */

typedef struct bpe_bslot {
    uint64_t hash;
    size_t off;   /* key bytes at base + off */
    uint32_t len;
    uint32_t val; /* UINT32_MAX: free slot */
} bpe_bslot;

typedef struct bpe_bmap {
    bpe_bslot *slots;
    size_t cap; /* power of two, or 0 */
    size_t n;
} bpe_bmap;

uint64_t bpe_hash_bytes(const void *p, size_t n);
/* Finds the key (bytes `key`, length len, hash h) whose stored bytes live at
 * base + off; returns true and *val when present. */
bool bpe_bmap_get(const bpe_bmap *m, const uint8_t *base, const void *key, size_t len,
                  uint64_t h, uint32_t *val);
/* Inserts a key known to be absent. EF_ERR_NOMEM when growing fails. */
ef_status bpe_bmap_add(bpe_bmap *m, size_t off, size_t len, uint64_t h, uint32_t val);
void bpe_bmap_clear(bpe_bmap *m); /* keeps the memory */
void bpe_bmap_free(bpe_bmap *m);

/* ---- byte-level text (GPT-2's bytes_to_unicode) ------------------------------ */

/* Code point standing for byte b: b itself for the printable bytes '!'..'~',
 * 0xA1..0xAC and 0xAE..0xFF, else 256 + n for the n-th other byte. */
uint32_t bpe_byte_cp(uint8_t b);
/* The byte that code point cp stands for, or -1. */
int bpe_cp_byte(uint32_t cp);

/* ---- pre-tokenizer classes ------------------------------------------------ */

enum { BPE_LETTER = 0, BPE_NUMBER = 1, BPE_SPACE = 2, BPE_OTHER = 3 };
/* Class of a non-ASCII code point (from the range tables). */
int bpe_cp_class(uint32_t cp);
/* Checks that the range tables are sorted and disjoint (for the tests). */
bool bpe_tables_ok(void);

/* ---- the tokenizer ---------------------------------------------------------- */

/* Pre-tokens up to this many bytes are cached by encode. */
#define BPE_CACHE_MAX_KEY 64
/* The cache is emptied when it holds this many entries. */
#define BPE_CACHE_MAX_ENTRIES (1u << 18)

typedef struct bpe_cache {
    pthread_mutex_t lock;
    bpe_bmap map;    /* key bytes in keys -> entry index */
    uint8_t *keys;   /* key bytes of all entries */
    size_t keys_len, keys_cap;
    int32_t *ids;    /* encodings of all entries */
    size_t ids_len, ids_cap;
    size_t *ent_off; /* entry i: ids[ent_off[i] .. ent_off[i] + ent_n[i]) */
    uint32_t *ent_n;
    size_t n_ent, ent_cap;
} bpe_cache;

struct ef_tokenizer {
    size_t n_tokens;
    uint8_t *bytes;    /* token bytes, concatenated */
    size_t *boff;      /* token i: bytes[boff[i] .. boff[i+1]) */
    char *text;        /* GGUF text of each token, each NUL-terminated */
    size_t *toff;      /* token i: text + toff[i] */
    uint8_t *types;    /* ef_tok_type */
    int32_t byte_id[256];
    size_t n_merges;
    int32_t *mleft, *mright, *mresult;
    char *mtext;       /* "A B" strings, each NUL-terminated */
    size_t *mtoff;
    bpe_u64map ranks;  /* (left, right) -> rank */
    size_t n_specials;
    int32_t *specials; /* ids of the control tokens, by id */
    uint8_t special_first[256]; /* 1 if some special text starts with the byte */
    int32_t eot;
    bpe_cache *cache;
};

/*
 * Builds a tokenizer from token bytes and types (tokens in id order, bytes
 * concatenated in `bytes` with offsets boff[0..n]) and merges given as ids
 * (left, right, result) in rank order. The inputs are copied. Checks what
 * ef_tokenizer_from_vocab promises (and fails with EF_ERR_FORMAT naming the
 * fault); the training path passes checked data.
 */
ef_status bpe_build(size_t n, const uint8_t *bytes, const size_t *boff, const uint8_t *types,
                    size_t n_merges, const int32_t *left, const int32_t *right,
                    const int32_t *result, ef_tokenizer **out);

#endif /* EDGEFL_BPE_INTERNAL_H */
