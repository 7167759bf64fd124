/*
 * The two hash maps of the BPE tokenizer: pairs of token ids to a number
 * (merge ranks, pair indices during training) and byte strings to a number
 * (distinct words during training, token bytes, the encode cache). Both use
 * open addressing with linear probing at a load factor of at most 1/2. No
 * result of the tokenizer depends on the hash values or the table order:
 * they only find things.
 */
#include <string.h>

#include "bpe_internal.h"

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

uint64_t bpe_hash_bytes(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ ((uint64_t)n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    return mix64(h ^ w);
}

/* ---- u64 -> u32 ---------------------------------------------------------------- */

bool bpe_u64map_get(const bpe_u64map *m, uint64_t key, uint32_t *val) {
    if (m->cap == 0) return false;
    size_t mask = m->cap - 1;
    for (size_t i = mix64(key) & mask;; i = (i + 1) & mask) {
        if (m->keys[i] == key) {
            *val = m->vals[i];
            return true;
        }
        if (m->keys[i] == BPE_U64_EMPTY) return false;
    }
}

static void u64_insert(uint64_t *keys, uint32_t *vals, size_t cap, uint64_t key, uint32_t val) {
    size_t mask = cap - 1;
    size_t i = mix64(key) & mask;
    while (keys[i] != BPE_U64_EMPTY && keys[i] != key) i = (i + 1) & mask;
    keys[i] = key;
    vals[i] = val;
}

ef_status bpe_u64map_put(bpe_u64map *m, uint64_t key, uint32_t val) {
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        uint64_t *keys = ef_malloc(cap * sizeof *keys);
        uint32_t *vals = ef_malloc(cap * sizeof *vals);
        if (!keys || !vals) {
            ef_free(keys);
            ef_free(vals);
            return EF_ERR_NOMEM;
        }
        memset(keys, 0xff, cap * sizeof *keys);
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i] != BPE_U64_EMPTY) u64_insert(keys, vals, cap, m->keys[i], m->vals[i]);
        ef_free(m->keys);
        ef_free(m->vals);
        m->keys = keys;
        m->vals = vals;
        m->cap = cap;
    }
    size_t mask = m->cap - 1;
    size_t i = mix64(key) & mask;
    while (m->keys[i] != BPE_U64_EMPTY && m->keys[i] != key) i = (i + 1) & mask;
    if (m->keys[i] == BPE_U64_EMPTY) m->n++;
    m->keys[i] = key;
    m->vals[i] = val;
    return EF_OK;
}

void bpe_u64map_free(bpe_u64map *m) {
    ef_free(m->keys);
    ef_free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ---- bytes -> u32 ------------------------------------------------------------- */

bool bpe_bmap_get(const bpe_bmap *m, const uint8_t *base, const void *key, size_t len,
                  uint64_t h, uint32_t *val) {
    if (m->cap == 0) return false;
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const bpe_bslot *s = &m->slots[i];
        if (s->val == UINT32_MAX) return false;
        if (s->hash == h && s->len == len && memcmp(base + s->off, key, len) == 0) {
            *val = s->val;
            return true;
        }
    }
}

ef_status bpe_bmap_add(bpe_bmap *m, size_t off, size_t len, uint64_t h, uint32_t val) {
    if (len > UINT32_MAX) return ef__fail(EF_ERR_RANGE, "byte string of %zu bytes is too long", len);
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        bpe_bslot *slots = ef_malloc(cap * sizeof *slots);
        if (!slots) return EF_ERR_NOMEM;
        for (size_t i = 0; i < cap; i++) slots[i].val = UINT32_MAX;
        for (size_t i = 0; i < m->cap; i++) {
            if (m->slots[i].val == UINT32_MAX) continue;
            size_t j = m->slots[i].hash & (cap - 1);
            while (slots[j].val != UINT32_MAX) j = (j + 1) & (cap - 1);
            slots[j] = m->slots[i];
        }
        ef_free(m->slots);
        m->slots = slots;
        m->cap = cap;
    }
    size_t mask = m->cap - 1;
    size_t i = h & mask;
    while (m->slots[i].val != UINT32_MAX) i = (i + 1) & mask;
    m->slots[i] = (bpe_bslot){h, off, (uint32_t)len, val};
    m->n++;
    return EF_OK;
}

void bpe_bmap_clear(bpe_bmap *m) {
    for (size_t i = 0; i < m->cap; i++) m->slots[i].val = UINT32_MAX;
    m->n = 0;
}

void bpe_bmap_free(bpe_bmap *m) {
    ef_free(m->slots);
    memset(m, 0, sizeof *m);
}
