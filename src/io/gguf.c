/*
 * GGUF reader and writer (see edgefl/gguf.h for the layout and the checks).
 *
 * The reader walks the file once with a bounds-checked cursor: every length
 * read from the file is compared with the bytes that remain before anything
 * is allocated for it, so a hostile count can cost at most a message, never
 * a huge allocation or a read past the mapping. Strings (keys, tensor names,
 * string values) are copied NUL-terminated into a chunked pool owned by the
 * handle; fixed-size values and tensor data stay in the mapping.
 *
 * The writer keeps each metadata value already serialized (the bytes after
 * its type fields), so copying an entry from an open file is a byte copy,
 * and lays out the data section as ggml's gguf writer does: tensors in the
 * order added, each at the next multiple of the alignment, zero padding
 * after every tensor, including the last.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core_internal.h"
#include "edgefl/gguf.h"
#include "edgefl/io.h"

#define GGUF_HEADER_BYTES 24
#define GGUF_MAX_KEY 65535u
/* Smallest encodings, used to bound counts by the bytes left before
 * allocating: a key/value is a key length (8), a 1-byte key, a type (4) and
 * a 1-byte value; a tensor info is a name length (8), a 1-byte name, n_dims
 * (4), one size (8), a type (4) and an offset (8). */
#define GGUF_MIN_KV_BYTES 14u
#define GGUF_MIN_TENSOR_BYTES 33u

static const char *const k_type_names[] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};
#define N_GGUF_TYPES 13

/* Byte size of one element of a fixed-size value type; 0 for STRING, ARRAY, unknown. */
static size_t type_size(int t) {
    switch (t) {
    case EF_GGUF_UINT8: case EF_GGUF_INT8: case EF_GGUF_BOOL: return 1;
    case EF_GGUF_UINT16: case EF_GGUF_INT16: return 2;
    case EF_GGUF_UINT32: case EF_GGUF_INT32: case EF_GGUF_FLOAT32: return 4;
    case EF_GGUF_UINT64: case EF_GGUF_INT64: case EF_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

const char *ef_gguf_type_name(int type) {
    return type >= 0 && type < N_GGUF_TYPES ? k_type_names[type] : NULL;
}

static const char *tname(int type) {
    const char *n = ef_gguf_type_name(type);
    return n ? n : "?";
}

/* ---- little-endian helpers --------------------------------------------------- */

static uint16_t ld16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

static uint32_t ld32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t ld64(const unsigned char *p) { return (uint64_t)ld32(p) | (uint64_t)ld32(p + 4) << 32; }

static void st32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void st64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* ---- reader state ------------------------------------------------------------ */

typedef struct gstr {
    const char *s;
    size_t len;
} gstr;

typedef struct kv_entry {
    ef_gguf_kv pub;
    const unsigned char *raw; /* fixed-size elements, in the mapping */
    gstr *strs;               /* string elements (n of them) */
    uint64_t at;              /* file offset of the entry, for messages */
} kv_entry;

typedef struct pool_chunk {
    struct pool_chunk *next;
    size_t used, cap;
    char data[];
} pool_chunk;

struct ef_gguf {
    char *name;
    const unsigned char *base;
    size_t size;
    void *map; /* mmap'd region (NULL for ef_gguf_open_memory) */
    uint32_t version;
    size_t alignment;
    uint64_t data_offset;
    size_t n_kv;
    kv_entry *kv;
    size_t *kv_by_key; /* (n_kv) indices sorted by key */
    size_t n_t;
    ef_gguf_tensor *t;
    size_t *t_by_name; /* (n_t) indices sorted by name */
    pool_chunk *pool;
};

/* Copies len bytes plus a NUL into the pool. */
static char *pool_dup(ef_gguf *g, const unsigned char *s, size_t len) {
    if (len > SIZE_MAX - 1 - sizeof(pool_chunk)) return NULL;
    if (!g->pool || g->pool->cap - g->pool->used < len + 1) {
        size_t cap = len + 1 > 65536 ? len + 1 : 65536;
        pool_chunk *c = ef_malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->next = g->pool;
        c->used = 0;
        c->cap = cap;
        g->pool = c;
    }
    char *d = g->pool->data + g->pool->used;
    if (len) memcpy(d, s, len);
    d[len] = '\0';
    g->pool->used += len + 1;
    return d;
}

/* Bounds-checked cursor over the file. */
typedef struct cursor {
    ef_gguf *g;
    size_t pos;
} cursor;

static size_t left(const cursor *c) { return c->g->size - c->pos; }

static ef_status need(const cursor *c, uint64_t n, const char *what) {
    if (n > left(c))
        return ef__fail(EF_ERR_FORMAT,
                        "%s: truncated: %s at byte %zu needs %" PRIu64 " bytes but the %zu-byte "
                        "file has %zu left",
                        c->g->name, what, c->pos, n, c->g->size, left(c));
    return EF_OK;
}

static ef_status rd_u32(cursor *c, uint32_t *v, const char *what) {
    ef_status st = need(c, 4, what);
    if (st != EF_OK) return st;
    *v = ld32(c->g->base + c->pos);
    c->pos += 4;
    return EF_OK;
}

static ef_status rd_u64(cursor *c, uint64_t *v, const char *what) {
    ef_status st = need(c, 8, what);
    if (st != EF_OK) return st;
    *v = ld64(c->g->base + c->pos);
    c->pos += 8;
    return EF_OK;
}

/* Reads a string (u64 length, bytes) into the pool. */
static ef_status rd_str(cursor *c, gstr *out, const char *what) {
    size_t at = c->pos;
    uint64_t len;
    ef_status st = rd_u64(c, &len, what);
    if (st != EF_OK) return st;
    if (len > left(c))
        return ef__fail(EF_ERR_FORMAT,
                        "%s: %s at byte %zu: string length %" PRIu64 " runs past the end of the "
                        "%zu-byte file",
                        c->g->name, what, at, len, c->g->size);
    char *s = pool_dup(c->g, c->g->base + c->pos, (size_t)len);
    if (!s) return ef__fail(EF_ERR_NOMEM, "%s: out of memory reading %s", c->g->name, what);
    out->s = s;
    out->len = (size_t)len;
    c->pos += (size_t)len;
    return EF_OK;
}

static int cmp_kv_key(const void *a, const void *b, void *ctx) {
    const kv_entry *kv = ctx;
    return strcmp(kv[*(const size_t *)a].pub.key, kv[*(const size_t *)b].pub.key);
}

static int cmp_t_name(const void *a, const void *b, void *ctx) {
    const ef_gguf_tensor *t = ctx;
    return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

static int cmp_t_offset(const void *a, const void *b, void *ctx) {
    const ef_gguf_tensor *t = ctx;
    const ef_gguf_tensor *x = &t[*(const size_t *)a], *y = &t[*(const size_t *)b];
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

/* ---- reader: metadata -------------------------------------------------------- */

static ef_status parse_kv(ef_gguf *g, cursor *c, size_t i) {
    kv_entry *e = &g->kv[i];
    e->at = c->pos;
    char what[96];
    snprintf(what, sizeof what, "key %zu", i);
    gstr key;
    ef_status st = rd_str(c, &key, what);
    if (st != EF_OK) return st;
    if (key.len == 0)
        return ef__fail(EF_ERR_FORMAT, "%s: key %zu at byte %" PRIu64 " is empty", g->name, i,
                        e->at);
    if (key.len > GGUF_MAX_KEY)
        return ef__fail(EF_ERR_FORMAT, "%s: key %zu at byte %" PRIu64 " is %zu bytes long "
                        "(at most %u)", g->name, i, e->at, key.len, GGUF_MAX_KEY);
    if (memchr(key.s, '\0', key.len))
        return ef__fail(EF_ERR_FORMAT, "%s: key %zu at byte %" PRIu64 " contains a NUL byte",
                        g->name, i, e->at);
    e->pub.key = key.s;
    snprintf(what, sizeof what, "the type of key '%.48s'", key.s);
    uint32_t type;
    if ((st = rd_u32(c, &type, what)) != EF_OK) return st;
    uint32_t elem = type;
    uint64_t n = 1;
    if (type == EF_GGUF_ARRAY) {
        snprintf(what, sizeof what, "the array header of key '%.48s'", key.s);
        if ((st = rd_u32(c, &elem, what)) != EF_OK || (st = rd_u64(c, &n, what)) != EF_OK)
            return st;
        if (elem == EF_GGUF_ARRAY)
            return ef__fail(EF_ERR_UNSUPPORTED, "%s: key '%s' at byte %" PRIu64 ": nested "
                            "arrays are not supported (ggml refuses them too)", g->name, key.s,
                            e->at);
    }
    if (elem >= N_GGUF_TYPES)
        return ef__fail(EF_ERR_FORMAT, "%s: key '%s' at byte %" PRIu64 ": unknown value type %"
                        PRIu32, g->name, key.s, e->at, elem);
    e->pub.type = (ef_gguf_type)type;
    e->pub.elem_type = (ef_gguf_type)elem;
    e->pub.n = n;
    snprintf(what, sizeof what, "the value of key '%.48s'", key.s);
    if (elem == EF_GGUF_STRING) {
        /* each string takes at least its 8-byte length */
        if (n > left(c) / 8)
            return ef__fail(EF_ERR_FORMAT, "%s: key '%s' at byte %" PRIu64 ": %" PRIu64
                            " strings cannot fit in the %zu bytes left", g->name, key.s, e->at, n,
                            left(c));
        e->strs = ef_calloc(n ? (size_t)n : 1, sizeof *e->strs);
        if (!e->strs) return EF_ERR_NOMEM;
        for (uint64_t k = 0; k < n; k++)
            if ((st = rd_str(c, &e->strs[k], what)) != EF_OK) return st;
        return EF_OK;
    }
    size_t sz = type_size((int)elem);
    if (n > left(c) / sz)
        return ef__fail(EF_ERR_FORMAT, "%s: key '%s' at byte %" PRIu64 ": %" PRIu64 " %s "
                        "values (%zu bytes each) run past the end of the %zu-byte file",
                        g->name, key.s, e->at, n, tname((int)elem), sz, g->size);
    e->raw = g->base + c->pos;
    if (elem == EF_GGUF_BOOL)
        for (uint64_t k = 0; k < n; k++)
            if (e->raw[k] > 1)
                return ef__fail(EF_ERR_FORMAT, "%s: key '%s': bool value %" PRIu64 " at byte %zu "
                                "is %u (must be 0 or 1)", g->name, key.s, k,
                                c->pos + (size_t)k, e->raw[k]);
    c->pos += (size_t)n * sz;
    return EF_OK;
}

static ef_status check_alignment(ef_gguf *g) {
    g->alignment = EF_GGUF_DEFAULT_ALIGNMENT;
    int64_t i = ef_gguf_find_key(g, "general.alignment");
    if (i < 0) return EF_OK;
    const kv_entry *e = &g->kv[i];
    if (e->pub.type != EF_GGUF_UINT32)
        return ef__fail(EF_ERR_FORMAT, "%s: general.alignment is %s%s, must be u32", g->name,
                        e->pub.type == EF_GGUF_ARRAY ? "an array of " : "",
                        tname(e->pub.elem_type));
    uint32_t a = ld32(e->raw);
    if (a == 0 || (a & (a - 1)) != 0)
        return ef__fail(EF_ERR_FORMAT, "%s: general.alignment %" PRIu32 " is not a power of two",
                        g->name, a);
    g->alignment = a;
    return EF_OK;
}

/* ---- reader: tensor infos ---------------------------------------------------- */

static ef_status parse_tensor_info(ef_gguf *g, cursor *c, size_t i) {
    ef_gguf_tensor *t = &g->t[i];
    size_t at = c->pos;
    char what[96];
    snprintf(what, sizeof what, "the name of tensor %zu", i);
    gstr name;
    ef_status st = rd_str(c, &name, what);
    if (st != EF_OK) return st;
    if (name.len == 0 || name.len > EF_GGUF_MAX_NAME)
        return ef__fail(EF_ERR_FORMAT, "%s: tensor %zu at byte %zu: name is %zu bytes (must be "
                        "1 to %d)", g->name, i, at, name.len, EF_GGUF_MAX_NAME);
    if (memchr(name.s, '\0', name.len))
        return ef__fail(EF_ERR_FORMAT, "%s: tensor %zu at byte %zu: name contains a NUL byte",
                        g->name, i, at);
    t->name = name.s;
    snprintf(what, sizeof what, "the shape of tensor '%s'", name.s);
    uint32_t n_dims;
    if ((st = rd_u32(c, &n_dims, what)) != EF_OK) return st;
    if (n_dims < 1 || n_dims > EF_GGUF_MAX_DIMS)
        return ef__fail(EF_ERR_FORMAT, "%s: tensor '%s' at byte %zu: %" PRIu32 " dimensions "
                        "(must be 1 to %d)", g->name, name.s, at, n_dims, EF_GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    int64_t n_el = 1;
    for (int d = 0; d < EF_GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d >= (int)n_dims) continue;
        uint64_t v;
        if ((st = rd_u64(c, &v, what)) != EF_OK) return st;
        if (v > (uint64_t)INT64_MAX)
            return ef__fail(EF_ERR_FORMAT, "%s: tensor '%s': dimension %d has size %" PRIu64
                            " (more than 2^63 - 1)", g->name, name.s, d, v);
        t->ne[d] = (int64_t)v;
        if (__builtin_mul_overflow(n_el, t->ne[d], &n_el))
            return ef__fail(EF_ERR_FORMAT, "%s: tensor '%s': element count overflows",
                            g->name, name.s);
    }
    t->n_elements = n_el;
    snprintf(what, sizeof what, "the type of tensor '%s'", name.s);
    uint32_t type;
    if ((st = rd_u32(c, &type, what)) != EF_OK) return st;
    int64_t blck = ef_ggml_blck_size((int)type);
    if (type >= EF_GGML_TYPE_END || blck == 0)
        return ef__fail(EF_ERR_FORMAT, "%s: tensor '%s': unknown or removed ggml type %" PRIu32,
                        g->name, name.s, type);
    t->type = (int)type;
    if (t->ne[0] % blck != 0)
        return ef__fail(EF_ERR_FORMAT, "%s: tensor '%s' of type %s has rows of %" PRId64
                        " elements, not a multiple of the block size %" PRId64,
                        g->name, name.s, ef_ggml_type_name(t->type), t->ne[0], blck);
    size_t row;
    if (ef_ggml_row_size(t->type, t->ne[0], &row) != EF_OK)
        return ef__fail(EF_ERR_FORMAT, "%s: tensor '%s': byte size overflows", g->name, name.s);
    size_t nbytes = row;
    for (int d = 1; d < EF_GGUF_MAX_DIMS; d++)
        if ((uint64_t)t->ne[d] > SIZE_MAX || !ef__mul_size(nbytes, (size_t)t->ne[d], &nbytes))
            return ef__fail(EF_ERR_FORMAT, "%s: tensor '%s': byte size overflows", g->name,
                            name.s);
    t->nbytes = nbytes;
    snprintf(what, sizeof what, "the offset of tensor '%s'", name.s);
    return rd_u64(c, &t->offset, what);
}

/* Data offsets: aligned, inside the data section, no overlaps. */
static ef_status check_tensor_data(ef_gguf *g, size_t *order) {
    uint64_t data_len = g->data_offset <= g->size ? g->size - g->data_offset : 0;
    for (size_t i = 0; i < g->n_t; i++) {
        ef_gguf_tensor *t = &g->t[i];
        if (t->offset % g->alignment != 0)
            return ef__fail(EF_ERR_FORMAT, "%s: tensor '%s': offset %" PRIu64 " is not a "
                            "multiple of the alignment %zu", g->name, t->name, t->offset,
                            g->alignment);
        if (t->offset > data_len || t->nbytes > data_len - t->offset)
            return ef__fail(EF_ERR_FORMAT, "%s: tensor '%s': %zu bytes at offset %" PRIu64
                            " run past the %" PRIu64 "-byte data section (file truncated?)",
                            g->name, t->name, t->nbytes, t->offset, data_len);
        /* an empty tensor may sit where a padded-out data section would start,
         * past the end of a file that stops right after the tensor infos */
        uint64_t at = g->data_offset + t->offset;
        t->data = g->base + (size_t)(at <= g->size ? at : g->size);
        order[i] = i;
    }
    qsort_r(order, g->n_t, sizeof *order, cmp_t_offset, g->t);
    /* after sorting by offset, it is enough to compare neighbours, skipping
     * empty tensors, which occupy no bytes */
    const ef_gguf_tensor *prev = NULL;
    for (size_t k = 0; k < g->n_t; k++) {
        const ef_gguf_tensor *t = &g->t[order[k]];
        if (t->nbytes == 0) continue;
        if (prev && prev->offset + prev->nbytes > t->offset)
            return ef__fail(EF_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap in the data section "
                            "(bytes %" PRIu64 "..%" PRIu64 " and %" PRIu64 "..%" PRIu64 ")",
                            g->name, prev->name, t->name, prev->offset,
                            prev->offset + prev->nbytes, t->offset, t->offset + t->nbytes);
        prev = t;
    }
    return EF_OK;
}

static ef_status parse(ef_gguf *g) {
    cursor c = {g, 0};
    ef_status st;
    if (g->size < 4)
        return ef__fail(EF_ERR_FORMAT, "%s: %zu bytes: too short for a GGUF file", g->name,
                        g->size);
    if (memcmp(g->base, "GGUF", 4) != 0) {
        char m[5];
        for (int i = 0; i < 4; i++) m[i] = g->base[i] >= 32 && g->base[i] < 127 ? (char)g->base[i] : '?';
        m[4] = '\0';
        return ef__fail(EF_ERR_FORMAT, "%s: not a GGUF file (magic '%s', expected 'GGUF')",
                        g->name, m);
    }
    c.pos = 4;
    if ((st = rd_u32(&c, &g->version, "the version")) != EF_OK) return st;
    if (g->version == 0)
        return ef__fail(EF_ERR_FORMAT, "%s: GGUF version 0 is invalid", g->name);
    if ((g->version & 0xffffu) == 0)
        return ef__fail(EF_ERR_UNSUPPORTED, "%s: GGUF version 0x%08" PRIx32 ": a big-endian file "
                        "(only little-endian GGUF is supported)", g->name, g->version);
    if (g->version == 1)
        return ef__fail(EF_ERR_UNSUPPORTED, "%s: GGUF version 1 is not supported (2 and 3 are)",
                        g->name);
    if (g->version > 3)
        return ef__fail(EF_ERR_UNSUPPORTED, "%s: GGUF version %" PRIu32 " is newer than this "
                        "reader (2 and 3 are supported)", g->name, g->version);
    uint64_t n_t, n_kv;
    if ((st = rd_u64(&c, &n_t, "the tensor count")) != EF_OK ||
        (st = rd_u64(&c, &n_kv, "the key/value count")) != EF_OK)
        return st;
    /* Both counts must fit in what is left of the file together. */
    if (n_kv > left(&c) / GGUF_MIN_KV_BYTES)
        return ef__fail(EF_ERR_FORMAT, "%s: header claims %" PRIu64 " key/value pairs; at least "
                        "%u bytes each cannot fit in the %zu-byte file", g->name, n_kv,
                        GGUF_MIN_KV_BYTES, g->size);
    if (n_t > (left(&c) - (size_t)n_kv * GGUF_MIN_KV_BYTES) / GGUF_MIN_TENSOR_BYTES)
        return ef__fail(EF_ERR_FORMAT, "%s: header claims %" PRIu64 " tensors; at least %u bytes "
                        "each cannot fit in the %zu-byte file", g->name, n_t,
                        GGUF_MIN_TENSOR_BYTES, g->size);
    g->kv = ef_calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
    g->kv_by_key = ef_calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv_by_key);
    if (!g->kv || !g->kv_by_key) return EF_ERR_NOMEM;
    for (size_t i = 0; i < (size_t)n_kv; i++) {
        g->n_kv = i + 1; /* count before parsing so a partly read entry is freed */
        if ((st = parse_kv(g, &c, i)) != EF_OK) return st;
    }
    for (size_t i = 0; i < g->n_kv; i++) g->kv_by_key[i] = i;
    qsort_r(g->kv_by_key, g->n_kv, sizeof *g->kv_by_key, cmp_kv_key, g->kv);
    for (size_t i = 1; i < g->n_kv; i++) {
        const kv_entry *a = &g->kv[g->kv_by_key[i - 1]], *b = &g->kv[g->kv_by_key[i]];
        if (strcmp(a->pub.key, b->pub.key) == 0)
            return ef__fail(EF_ERR_FORMAT, "%s: duplicate key '%s' (at bytes %" PRIu64 " and %"
                            PRIu64 ")", g->name, a->pub.key, a->at < b->at ? a->at : b->at,
                            a->at < b->at ? b->at : a->at);
    }
    if ((st = check_alignment(g)) != EF_OK) return st;

    g->t = ef_calloc(n_t ? (size_t)n_t : 1, sizeof *g->t);
    g->t_by_name = ef_calloc(n_t ? (size_t)n_t : 1, sizeof *g->t_by_name);
    if (!g->t || !g->t_by_name) return EF_ERR_NOMEM;
    g->n_t = (size_t)n_t;
    for (size_t i = 0; i < g->n_t; i++)
        if ((st = parse_tensor_info(g, &c, i)) != EF_OK) return st;
    for (size_t i = 0; i < g->n_t; i++) g->t_by_name[i] = i;
    qsort_r(g->t_by_name, g->n_t, sizeof *g->t_by_name, cmp_t_name, g->t);
    for (size_t i = 1; i < g->n_t; i++)
        if (strcmp(g->t[g->t_by_name[i - 1]].name, g->t[g->t_by_name[i]].name) == 0)
            return ef__fail(EF_ERR_FORMAT, "%s: duplicate tensor name '%s'", g->name,
                            g->t[g->t_by_name[i]].name);

    /* the data section starts at the next multiple of the alignment */
    uint64_t pad = (g->alignment - c.pos % g->alignment) % g->alignment;
    g->data_offset = (uint64_t)c.pos + pad;
    if (g->data_offset > g->size) {
        int any_data = 0;
        for (size_t i = 0; i < g->n_t; i++) any_data |= g->t[i].nbytes > 0;
        if (any_data)
            return ef__fail(EF_ERR_FORMAT, "%s: truncated: the data section would start at byte %"
                            PRIu64 ", past the end of the %zu-byte file", g->name,
                            g->data_offset, g->size);
    }
    size_t *order = ef_calloc(g->n_t ? g->n_t : 1, sizeof *order);
    if (!order) return EF_ERR_NOMEM;
    st = check_tensor_data(g, order);
    ef_free(order);
    return st;
}

static ef_status open_common(ef_gguf **out, ef_gguf *g) {
    ef_status st = parse(g);
    if (st != EF_OK) {
        ef_gguf_close(g);
        return st;
    }
    *out = g;
    return EF_OK;
}

ef_status ef_gguf_open_memory(ef_gguf **out, const void *data, size_t size, const char *name) {
    if (out) *out = NULL;
    if (!out || (!data && size))
        return ef__fail(EF_ERR_INVALID, "ef_gguf_open_memory: NULL argument");
    ef_gguf *g = ef_calloc(1, sizeof *g);
    if (!g) return EF_ERR_NOMEM;
    g->name = ef_strdup(name ? name : "<memory>");
    if (!g->name) {
        ef_free(g);
        return EF_ERR_NOMEM;
    }
    static const unsigned char empty[1];
    g->base = data ? data : empty;
    g->size = size;
    return open_common(out, g);
}

ef_status ef_gguf_open(ef_gguf **out, const char *path) {
    if (out) *out = NULL;
    if (!out || !path) return ef__fail(EF_ERR_INVALID, "ef_gguf_open: NULL argument");
    ef_gguf *g = ef_calloc(1, sizeof *g);
    if (!g) return EF_ERR_NOMEM;
    ef_status st;
    int fd = -1;
    g->name = ef_strdup(path);
    if (!g->name) {
        st = EF_ERR_NOMEM;
        goto fail;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        st = ef__fail(errno == ENOENT ? EF_ERR_NOT_FOUND : EF_ERR_IO, "%s: cannot open: %s", path,
                      strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = ef__fail(EF_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = ef__fail(EF_ERR_IO, "%s: not a regular file", path);
        goto fail;
    }
#if SIZE_MAX < UINT64_MAX
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        st = ef__fail(EF_ERR_RANGE, "%s: file too large to map", path);
        goto fail;
    }
#endif
    g->size = (size_t)sb.st_size;
    if (g->size < GGUF_HEADER_BYTES) {
        /* too short to map usefully; parse() names the problem */
        static const unsigned char empty[1];
        unsigned char head[GGUF_HEADER_BYTES];
        ssize_t r = g->size ? pread(fd, head, g->size, 0) : 0;
        if (r < 0 || (size_t)r != g->size) {
            st = ef__fail(EF_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
            goto fail;
        }
        close(fd);
        g->base = g->size ? head : empty;
        st = parse(g); /* fails: a GGUF header alone is 24 bytes */
        g->base = empty;
        if (st == EF_OK) st = ef__fail(EF_ERR_INTERNAL, "%s: short file accepted", path);
        ef_gguf_close(g);
        return st;
    }
    void *map = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        st = ef__fail(EF_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
        goto fail;
    }
    close(fd);
    g->map = map;
    g->base = map;
    return open_common(out, g);

fail:
    if (fd >= 0) close(fd);
    ef_gguf_close(g);
    return st;
}

void ef_gguf_close(ef_gguf *g) {
    if (!g) return;
    if (g->map) munmap(g->map, g->size);
    for (size_t i = 0; i < g->n_kv; i++) ef_free(g->kv[i].strs);
    ef_free(g->kv);
    ef_free(g->kv_by_key);
    ef_free(g->t);
    ef_free(g->t_by_name);
    while (g->pool) {
        pool_chunk *n = g->pool->next;
        ef_free(g->pool);
        g->pool = n;
    }
    ef_free(g->name);
    ef_free(g);
}

uint32_t ef_gguf_version(const ef_gguf *g) { return g->version; }
size_t ef_gguf_alignment(const ef_gguf *g) { return g->alignment; }
uint64_t ef_gguf_data_offset(const ef_gguf *g) { return g->data_offset; }
uint64_t ef_gguf_file_size(const ef_gguf *g) { return g->size; }
size_t ef_gguf_kv_count(const ef_gguf *g) { return g->n_kv; }

const ef_gguf_kv *ef_gguf_kv_at(const ef_gguf *g, size_t i) {
    return i < g->n_kv ? &g->kv[i].pub : NULL;
}

int64_t ef_gguf_find_key(const ef_gguf *g, const char *key) {
    if (!key) return -1;
    size_t lo = 0, hi = g->n_kv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->kv[g->kv_by_key[mid]].pub.key, key);
        if (c == 0) return (int64_t)g->kv_by_key[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

size_t ef_gguf_tensor_count(const ef_gguf *g) { return g->n_t; }

const ef_gguf_tensor *ef_gguf_tensor_at(const ef_gguf *g, size_t i) {
    return i < g->n_t ? &g->t[i] : NULL;
}

const ef_gguf_tensor *ef_gguf_find_tensor(const ef_gguf *g, const char *name) {
    if (!name) return NULL;
    size_t lo = 0, hi = g->n_t;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->t[g->t_by_name[mid]].name, name);
        if (c == 0) return &g->t[g->t_by_name[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* ---- reader: typed access ---------------------------------------------------- */

static ef_status elem_check(const ef_gguf *g, size_t kv, uint64_t i, const kv_entry **out) {
    if (kv >= g->n_kv)
        return ef__fail(EF_ERR_INVALID, "%s: no metadata entry %zu (%zu entries)", g->name, kv,
                        g->n_kv);
    const kv_entry *e = &g->kv[kv];
    if (i >= e->pub.n)
        return ef__fail(EF_ERR_INVALID, "%s: key '%s': no element %" PRIu64 " (%" PRIu64
                        " elements)", g->name, e->pub.key, i, e->pub.n);
    *out = e;
    return EF_OK;
}

static ef_status wrong_type(const ef_gguf *g, const kv_entry *e, const char *expected) {
    return ef__fail(EF_ERR_FORMAT, "%s: key '%s' is %s%s, expected %s", g->name, e->pub.key,
                    e->pub.type == EF_GGUF_ARRAY ? "an array of " : "", tname(e->pub.elem_type),
                    expected);
}

/* Integer element as a sign flag and magnitude-preserving pair. */
static int read_integer(const kv_entry *e, uint64_t i, int64_t *s, uint64_t *u, int *is_unsigned) {
    const unsigned char *p = e->raw + (size_t)i * type_size(e->pub.elem_type);
    *is_unsigned = 0;
    switch (e->pub.elem_type) {
    case EF_GGUF_UINT8: *u = p[0]; *is_unsigned = 1; return 1;
    case EF_GGUF_INT8: *s = (int8_t)p[0]; return 1;
    case EF_GGUF_UINT16: *u = ld16(p); *is_unsigned = 1; return 1;
    case EF_GGUF_INT16: *s = (int16_t)ld16(p); return 1;
    case EF_GGUF_UINT32: *u = ld32(p); *is_unsigned = 1; return 1;
    case EF_GGUF_INT32: *s = (int32_t)ld32(p); return 1;
    case EF_GGUF_UINT64: *u = ld64(p); *is_unsigned = 1; return 1;
    case EF_GGUF_INT64: *s = (int64_t)ld64(p); return 1;
    default: return 0;
    }
}

ef_status ef_gguf_kv_int(const ef_gguf *g, size_t kv, uint64_t i, int64_t *out) {
    const kv_entry *e = NULL;
    ef_status st = elem_check(g, kv, i, &e);
    if (st != EF_OK) return st;
    int64_t s = 0;
    uint64_t u = 0;
    int uns;
    if (!read_integer(e, i, &s, &u, &uns)) return wrong_type(g, e, "an integer");
    if (uns) {
        if (u > (uint64_t)INT64_MAX)
            return ef__fail(EF_ERR_RANGE, "%s: key '%s': value %" PRIu64 " does not fit int64",
                            g->name, e->pub.key, u);
        s = (int64_t)u;
    }
    *out = s;
    return EF_OK;
}

ef_status ef_gguf_kv_uint(const ef_gguf *g, size_t kv, uint64_t i, uint64_t *out) {
    const kv_entry *e = NULL;
    ef_status st = elem_check(g, kv, i, &e);
    if (st != EF_OK) return st;
    int64_t s = 0;
    uint64_t u = 0;
    int uns;
    if (!read_integer(e, i, &s, &u, &uns)) return wrong_type(g, e, "an integer");
    if (!uns) {
        if (s < 0)
            return ef__fail(EF_ERR_RANGE, "%s: key '%s': value %" PRId64 " is negative", g->name,
                            e->pub.key, s);
        u = (uint64_t)s;
    }
    *out = u;
    return EF_OK;
}

ef_status ef_gguf_kv_float(const ef_gguf *g, size_t kv, uint64_t i, double *out) {
    const kv_entry *e = NULL;
    ef_status st = elem_check(g, kv, i, &e);
    if (st != EF_OK) return st;
    if (e->pub.elem_type == EF_GGUF_FLOAT32) {
        uint32_t b = ld32(e->raw + (size_t)i * 4);
        float f;
        memcpy(&f, &b, 4);
        *out = f;
        return EF_OK;
    }
    if (e->pub.elem_type == EF_GGUF_FLOAT64) {
        uint64_t b = ld64(e->raw + (size_t)i * 8);
        memcpy(out, &b, 8);
        return EF_OK;
    }
    return wrong_type(g, e, "f32 or f64");
}

ef_status ef_gguf_kv_bool(const ef_gguf *g, size_t kv, uint64_t i, bool *out) {
    const kv_entry *e = NULL;
    ef_status st = elem_check(g, kv, i, &e);
    if (st != EF_OK) return st;
    if (e->pub.elem_type != EF_GGUF_BOOL) return wrong_type(g, e, "bool");
    *out = e->raw[i] != 0;
    return EF_OK;
}

ef_status ef_gguf_kv_str(const ef_gguf *g, size_t kv, uint64_t i, const char **out, size_t *len) {
    const kv_entry *e = NULL;
    ef_status st = elem_check(g, kv, i, &e);
    if (st != EF_OK) return st;
    if (e->pub.elem_type != EF_GGUF_STRING) return wrong_type(g, e, "string");
    *out = e->strs[i].s;
    if (len) *len = e->strs[i].len;
    return EF_OK;
}

/* The scalar entry called key, of exactly `type` (or any integer type if type < 0). */
static ef_status scalar(const ef_gguf *g, const char *key, int type, size_t *idx) {
    if (!g || !key) return ef__fail(EF_ERR_INVALID, "gguf getter: NULL argument");
    int64_t i = ef_gguf_find_key(g, key);
    if (i < 0) return ef__fail(EF_ERR_NOT_FOUND, "%s: no key '%s'", g->name, key);
    const kv_entry *e = &g->kv[i];
    if (e->pub.type == EF_GGUF_ARRAY)
        return wrong_type(g, e, type >= 0 ? tname(type) : "an integer");
    if (type >= 0 && (int)e->pub.type != type) return wrong_type(g, e, tname(type));
    *idx = (size_t)i;
    return EF_OK;
}

ef_status ef_gguf_get_u32(const ef_gguf *g, const char *key, uint32_t *out) {
    size_t i = 0;
    ef_status st = scalar(g, key, EF_GGUF_UINT32, &i);
    if (st == EF_OK) *out = ld32(g->kv[i].raw);
    return st;
}

ef_status ef_gguf_get_i32(const ef_gguf *g, const char *key, int32_t *out) {
    size_t i = 0;
    ef_status st = scalar(g, key, EF_GGUF_INT32, &i);
    if (st == EF_OK) *out = (int32_t)ld32(g->kv[i].raw);
    return st;
}

ef_status ef_gguf_get_u64(const ef_gguf *g, const char *key, uint64_t *out) {
    size_t i = 0;
    ef_status st = scalar(g, key, EF_GGUF_UINT64, &i);
    if (st == EF_OK) *out = ld64(g->kv[i].raw);
    return st;
}

ef_status ef_gguf_get_f32(const ef_gguf *g, const char *key, float *out) {
    size_t i = 0;
    ef_status st = scalar(g, key, EF_GGUF_FLOAT32, &i);
    if (st == EF_OK) {
        uint32_t b = ld32(g->kv[i].raw);
        memcpy(out, &b, 4);
    }
    return st;
}

ef_status ef_gguf_get_bool(const ef_gguf *g, const char *key, bool *out) {
    size_t i = 0;
    ef_status st = scalar(g, key, EF_GGUF_BOOL, &i);
    if (st == EF_OK) *out = g->kv[i].raw[0] != 0;
    return st;
}

ef_status ef_gguf_get_int(const ef_gguf *g, const char *key, int64_t *out) {
    size_t i = 0;
    ef_status st = scalar(g, key, -1, &i);
    if (st != EF_OK) return st;
    return ef_gguf_kv_int(g, i, 0, out);
}

ef_status ef_gguf_get_str(const ef_gguf *g, const char *key, const char **out, size_t *len) {
    size_t i = 0;
    ef_status st = scalar(g, key, EF_GGUF_STRING, &i);
    if (st != EF_OK) return st;
    *out = g->kv[i].strs[0].s;
    if (len) *len = g->kv[i].strs[0].len;
    return EF_OK;
}

static ef_status array(const ef_gguf *g, const char *key, size_t *idx) {
    if (!g || !key) return ef__fail(EF_ERR_INVALID, "gguf getter: NULL argument");
    int64_t i = ef_gguf_find_key(g, key);
    if (i < 0) return ef__fail(EF_ERR_NOT_FOUND, "%s: no key '%s'", g->name, key);
    if (g->kv[i].pub.type != EF_GGUF_ARRAY) return wrong_type(g, &g->kv[i], "an array");
    *idx = (size_t)i;
    return EF_OK;
}

ef_status ef_gguf_get_arr(const ef_gguf *g, const char *key, ef_gguf_type *elem_type,
                          uint64_t *n) {
    size_t i = 0;
    ef_status st = array(g, key, &i);
    if (st != EF_OK) return st;
    if (elem_type) *elem_type = g->kv[i].pub.elem_type;
    if (n) *n = g->kv[i].pub.n;
    return EF_OK;
}

ef_status ef_gguf_get_arr_str(const ef_gguf *g, const char *key, uint64_t k, const char **out,
                              size_t *len) {
    size_t i = 0;
    ef_status st = array(g, key, &i);
    if (st != EF_OK) return st;
    return ef_gguf_kv_str(g, i, k, out, len);
}

ef_status ef_gguf_get_arr_int(const ef_gguf *g, const char *key, int64_t *out, size_t n) {
    size_t i = 0;
    ef_status st = array(g, key, &i);
    if (st != EF_OK) return st;
    const kv_entry *e = &g->kv[i];
    if (e->pub.n != n)
        return ef__fail(EF_ERR_RANGE, "%s: key '%s' has %" PRIu64 " elements, expected %zu",
                        g->name, key, e->pub.n, n);
    for (size_t k = 0; k < n; k++)
        if ((st = ef_gguf_kv_int(g, i, k, &out[k])) != EF_OK) return st;
    return EF_OK;
}

/* ---- writer ------------------------------------------------------------------ */

typedef struct wkv {
    char *key;
    size_t key_len;
    ef_gguf_type type, elem;
    uint64_t n;
    unsigned char *val; /* serialized value: what follows the type fields */
    size_t val_len;
} wkv;

typedef struct wtensor {
    char *name;
    int type;
    int n_dims;
    int64_t ne[EF_GGUF_MAX_DIMS];
    size_t nbytes;
    const void *data;
    ef_gguf_fill_fn fill;
    void *user;
} wtensor;

struct ef_gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    uint32_t alignment;
};

ef_status ef_gguf_writer_new(ef_gguf_writer **out) {
    if (!out) return ef__fail(EF_ERR_INVALID, "ef_gguf_writer_new: NULL argument");
    *out = ef_calloc(1, sizeof **out);
    if (!*out) return EF_ERR_NOMEM;
    (*out)->alignment = EF_GGUF_DEFAULT_ALIGNMENT;
    return EF_OK;
}

void ef_gguf_writer_free(ef_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        ef_free(w->kv[i].key);
        ef_free(w->kv[i].val);
    }
    for (size_t i = 0; i < w->n_t; i++) ef_free(w->t[i].name);
    ef_free(w->kv);
    ef_free(w->t);
    ef_free(w);
}

static wkv *find_wkv(ef_gguf_writer *w, const char *key) {
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) return &w->kv[i];
    return NULL;
}

/* Stores an entry (takes ownership of val), replacing an existing key in place. */
static ef_status put_kv(ef_gguf_writer *w, const char *key, ef_gguf_type type, ef_gguf_type elem,
                        uint64_t n, unsigned char *val, size_t val_len) {
    if (!w || !key) {
        ef_free(val);
        return ef__fail(EF_ERR_INVALID, "gguf writer: NULL argument");
    }
    size_t klen = strlen(key);
    if (klen == 0 || klen > GGUF_MAX_KEY) {
        ef_free(val);
        return ef__fail(EF_ERR_INVALID, "gguf writer: key must be 1 to %u bytes (got %zu)",
                        GGUF_MAX_KEY, klen);
    }
    int is_align = strcmp(key, "general.alignment") == 0;
    if (is_align) {
        uint32_t a = type == EF_GGUF_UINT32 ? ld32(val) : 0;
        if (type != EF_GGUF_UINT32 || a == 0 || (a & (a - 1)) != 0) {
            ef_free(val);
            return ef__fail(EF_ERR_INVALID, "gguf writer: general.alignment must be a u32 power "
                            "of two");
        }
        w->alignment = a;
    }
    wkv *e = find_wkv(w, key);
    if (!e) {
        if (w->n_kv == w->cap_kv) {
            size_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
            wkv *nk = ef_realloc(w->kv, cap * sizeof *nk);
            if (!nk) {
                ef_free(val);
                return EF_ERR_NOMEM;
            }
            w->kv = nk;
            w->cap_kv = cap;
        }
        char *k = ef_strdup(key);
        if (!k) {
            ef_free(val);
            return EF_ERR_NOMEM;
        }
        e = &w->kv[w->n_kv++];
        memset(e, 0, sizeof *e);
        e->key = k;
        e->key_len = klen;
    } else {
        ef_free(e->val);
    }
    e->type = type;
    e->elem = elem;
    e->n = n;
    e->val = val;
    e->val_len = val_len;
    return EF_OK;
}

static ef_status set_scalar(ef_gguf_writer *w, const char *key, ef_gguf_type t, uint64_t bits) {
    size_t sz = type_size(t);
    unsigned char *v = ef_malloc(sz);
    if (!v) return EF_ERR_NOMEM;
    for (size_t i = 0; i < sz; i++) v[i] = (unsigned char)(bits >> (8 * i));
    return put_kv(w, key, t, t, 1, v, sz);
}

ef_status ef_gguf_set_u8(ef_gguf_writer *w, const char *key, uint8_t v) {
    return set_scalar(w, key, EF_GGUF_UINT8, v);
}
ef_status ef_gguf_set_i8(ef_gguf_writer *w, const char *key, int8_t v) {
    return set_scalar(w, key, EF_GGUF_INT8, (uint8_t)v);
}
ef_status ef_gguf_set_u16(ef_gguf_writer *w, const char *key, uint16_t v) {
    return set_scalar(w, key, EF_GGUF_UINT16, v);
}
ef_status ef_gguf_set_i16(ef_gguf_writer *w, const char *key, int16_t v) {
    return set_scalar(w, key, EF_GGUF_INT16, (uint16_t)v);
}
ef_status ef_gguf_set_u32(ef_gguf_writer *w, const char *key, uint32_t v) {
    return set_scalar(w, key, EF_GGUF_UINT32, v);
}
ef_status ef_gguf_set_i32(ef_gguf_writer *w, const char *key, int32_t v) {
    return set_scalar(w, key, EF_GGUF_INT32, (uint32_t)v);
}
ef_status ef_gguf_set_f32(ef_gguf_writer *w, const char *key, float v) {
    uint32_t b;
    memcpy(&b, &v, 4);
    return set_scalar(w, key, EF_GGUF_FLOAT32, b);
}
ef_status ef_gguf_set_bool(ef_gguf_writer *w, const char *key, bool v) {
    return set_scalar(w, key, EF_GGUF_BOOL, v ? 1 : 0);
}
ef_status ef_gguf_set_u64(ef_gguf_writer *w, const char *key, uint64_t v) {
    return set_scalar(w, key, EF_GGUF_UINT64, v);
}
ef_status ef_gguf_set_i64(ef_gguf_writer *w, const char *key, int64_t v) {
    return set_scalar(w, key, EF_GGUF_INT64, (uint64_t)v);
}
ef_status ef_gguf_set_f64(ef_gguf_writer *w, const char *key, double v) {
    uint64_t b;
    memcpy(&b, &v, 8);
    return set_scalar(w, key, EF_GGUF_FLOAT64, b);
}

/* Serializes n strings (u64 length + bytes each) into a new buffer. */
static ef_status ser_strings(const char *const *strs, const size_t *lens, size_t n,
                             unsigned char **out, size_t *out_len) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!strs[i] && !(lens && lens[i] == 0))
            return ef__fail(EF_ERR_INVALID, "gguf writer: string %zu is NULL", i);
        size_t l = lens ? lens[i] : strlen(strs[i]);
        if (!ef__add_size(total, 8, &total) || !ef__add_size(total, l, &total))
            return ef__fail(EF_ERR_RANGE, "gguf writer: strings too large");
    }
    unsigned char *v = ef_malloc(total ? total : 1);
    if (!v) return EF_ERR_NOMEM;
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = lens ? lens[i] : strlen(strs[i]);
        st64(v + pos, l);
        if (l) memcpy(v + pos + 8, strs[i], l);
        pos += 8 + l;
    }
    *out = v;
    *out_len = total;
    return EF_OK;
}

ef_status ef_gguf_set_str(ef_gguf_writer *w, const char *key, const char *s) {
    if (!s) return ef__fail(EF_ERR_INVALID, "gguf writer: NULL string for key '%s'",
                            key ? key : "(null)");
    unsigned char *v;
    size_t len;
    ef_status st = ser_strings(&s, NULL, 1, &v, &len);
    if (st != EF_OK) return st;
    return put_kv(w, key, EF_GGUF_STRING, EF_GGUF_STRING, 1, v, len);
}

ef_status ef_gguf_set_arr_str(ef_gguf_writer *w, const char *key, const char *const *strs,
                              const size_t *lens, size_t n) {
    if (!strs && n) return ef__fail(EF_ERR_INVALID, "gguf writer: NULL string array");
    unsigned char *v;
    size_t len;
    ef_status st = ser_strings(strs, lens, n, &v, &len);
    if (st != EF_OK) return st;
    return put_kv(w, key, EF_GGUF_ARRAY, EF_GGUF_STRING, n, v, len);
}

ef_status ef_gguf_set_arr(ef_gguf_writer *w, const char *key, ef_gguf_type elem, const void *data,
                          size_t n) {
    size_t sz = type_size(elem);
    if (sz == 0)
        return ef__fail(EF_ERR_INVALID, "gguf writer: ef_gguf_set_arr takes a fixed-size element "
                        "type, not %s", tname(elem));
    if (!data && n) return ef__fail(EF_ERR_INVALID, "gguf writer: NULL array data");
    size_t total;
    if (!ef__mul_size(n, sz, &total)) return ef__fail(EF_ERR_RANGE, "gguf writer: array too large");
    unsigned char *v = ef_malloc(total ? total : 1);
    if (!v) return EF_ERR_NOMEM;
    const unsigned char *src = data;
    for (size_t i = 0; i < n; i++) {
        unsigned char *d = v + i * sz;
        switch (elem) {
        case EF_GGUF_BOOL: d[0] = ((const bool *)data)[i] ? 1 : 0; break;
        case EF_GGUF_UINT8: case EF_GGUF_INT8: d[0] = src[i]; break;
        case EF_GGUF_UINT16: case EF_GGUF_INT16: {
            uint16_t x;
            memcpy(&x, src + 2 * i, 2);
            d[0] = (unsigned char)x;
            d[1] = (unsigned char)(x >> 8);
            break;
        }
        case EF_GGUF_UINT32: case EF_GGUF_INT32: case EF_GGUF_FLOAT32: {
            uint32_t x;
            memcpy(&x, src + 4 * i, 4);
            st32(d, x);
            break;
        }
        default: {
            uint64_t x;
            memcpy(&x, src + 8 * i, 8);
            st64(d, x);
            break;
        }
        }
    }
    return put_kv(w, key, EF_GGUF_ARRAY, elem, n, v, total);
}

ef_status ef_gguf_copy_kv(ef_gguf_writer *w, const ef_gguf *src, size_t kv) {
    if (!w || !src) return ef__fail(EF_ERR_INVALID, "ef_gguf_copy_kv: NULL argument");
    if (kv >= src->n_kv)
        return ef__fail(EF_ERR_INVALID, "ef_gguf_copy_kv: no entry %zu (%zu entries)", kv,
                        src->n_kv);
    const kv_entry *e = &src->kv[kv];
    unsigned char *v;
    size_t len;
    if (e->pub.elem_type == EF_GGUF_STRING) {
        /* n is bounded by the file size (checked when it was read) */
        const char **s = ef_calloc(e->pub.n ? (size_t)e->pub.n : 1, sizeof *s);
        size_t *l = ef_calloc(e->pub.n ? (size_t)e->pub.n : 1, sizeof *l);
        ef_status st = s && l ? EF_OK : EF_ERR_NOMEM;
        for (size_t i = 0; st == EF_OK && i < (size_t)e->pub.n; i++) {
            s[i] = e->strs[i].s;
            l[i] = e->strs[i].len;
        }
        if (st == EF_OK) st = ser_strings(s, l, (size_t)e->pub.n, &v, &len);
        ef_free(s);
        ef_free(l);
        if (st != EF_OK) return st;
    } else {
        len = (size_t)e->pub.n * type_size(e->pub.elem_type);
        v = ef_malloc(len ? len : 1);
        if (!v) return EF_ERR_NOMEM;
        if (len) memcpy(v, e->raw, len);
    }
    return put_kv(w, e->pub.key, e->pub.type, e->pub.elem_type, e->pub.n, v, len);
}

void ef_gguf_remove_key(ef_gguf_writer *w, const char *key) {
    if (!w || !key) return;
    wkv *e = find_wkv(w, key);
    if (!e) return;
    ef_free(e->key);
    ef_free(e->val);
    size_t i = (size_t)(e - w->kv);
    memmove(&w->kv[i], &w->kv[i + 1], (w->n_kv - i - 1) * sizeof *w->kv);
    w->n_kv--;
    if (strcmp(key, "general.alignment") == 0) w->alignment = EF_GGUF_DEFAULT_ALIGNMENT;
}

static ef_status add_tensor(ef_gguf_writer *w, const char *name, int type, int n_dims,
                            const int64_t *ne, const void *data, size_t nbytes,
                            ef_gguf_fill_fn fill, void *user) {
    if (!w || !name || !ne) return ef__fail(EF_ERR_INVALID, "ef_gguf_add_tensor: NULL argument");
    size_t nl = strlen(name);
    if (nl == 0 || nl > EF_GGUF_MAX_NAME)
        return ef__fail(EF_ERR_INVALID, "tensor name '%s' must be 1 to %d bytes", name,
                        EF_GGUF_MAX_NAME);
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return ef__fail(EF_ERR_INVALID, "duplicate tensor name '%s'", name);
    if (!ef_ggml_type_name(type))
        return ef__fail(EF_ERR_INVALID, "tensor '%s': unknown ggml type %d", name, type);
    if (n_dims < 1 || n_dims > EF_GGUF_MAX_DIMS)
        return ef__fail(EF_ERR_INVALID, "tensor '%s': %d dimensions (must be 1 to %d)", name,
                        n_dims, EF_GGUF_MAX_DIMS);
    wtensor t = {0};
    t.type = type;
    t.n_dims = n_dims;
    size_t want = 0;
    for (int d = 0; d < EF_GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (t.ne[d] < 0)
            return ef__fail(EF_ERR_INVALID, "tensor '%s': negative size in dimension %d", name, d);
    }
    if (ef_ggml_row_size(type, t.ne[0], &want) != EF_OK)
        return ef__fail(EF_ERR_INVALID, "tensor '%s': %s", name, ef_last_error());
    for (int d = 1; d < EF_GGUF_MAX_DIMS; d++)
        if ((uint64_t)t.ne[d] > SIZE_MAX || !ef__mul_size(want, (size_t)t.ne[d], &want))
            return ef__fail(EF_ERR_INVALID, "tensor '%s': byte size overflows", name);
    if (want != nbytes)
        return ef__fail(EF_ERR_INVALID, "tensor '%s': %zu bytes given, its type %s and shape "
                        "need %zu", name, nbytes, ef_ggml_type_name(type), want);
    if (!data && !fill && nbytes)
        return ef__fail(EF_ERR_INVALID, "tensor '%s': NULL data", name);
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 16;
        wtensor *nt = ef_realloc(w->t, cap * sizeof *nt);
        if (!nt) return EF_ERR_NOMEM;
        w->t = nt;
        w->cap_t = cap;
    }
    t.name = ef_strdup(name);
    if (!t.name) return EF_ERR_NOMEM;
    t.nbytes = nbytes;
    t.data = data;
    t.fill = fill;
    t.user = user;
    w->t[w->n_t++] = t;
    return EF_OK;
}

ef_status ef_gguf_add_tensor(ef_gguf_writer *w, const char *name, int type, int n_dims,
                             const int64_t *ne, const void *data, size_t nbytes) {
    return add_tensor(w, name, type, n_dims, ne, data, nbytes, NULL, NULL);
}

ef_status ef_gguf_add_tensor_fn(ef_gguf_writer *w, const char *name, int type, int n_dims,
                                const int64_t *ne, size_t nbytes, ef_gguf_fill_fn fill,
                                void *user) {
    if (!fill) return ef__fail(EF_ERR_INVALID, "ef_gguf_add_tensor_fn: NULL fill function");
    return add_tensor(w, name, type, n_dims, ne, NULL, nbytes, fill, user);
}

size_t ef_gguf_writer_tensor_count(const ef_gguf_writer *w) { return w->n_t; }

static uint64_t pad_to(uint64_t x, uint64_t a) { return (a - x % a) % a; }

/* Bytes of header + metadata + tensor infos (before the padding). */
static ef_status meta_size(const ef_gguf_writer *w, size_t *out) {
    size_t s = GGUF_HEADER_BYTES;
    for (size_t i = 0; i < w->n_kv; i++) {
        const wkv *e = &w->kv[i];
        size_t add = 8 + e->key_len + 4 + (e->type == EF_GGUF_ARRAY ? 12 : 0);
        if (!ef__add_size(s, add, &s) || !ef__add_size(s, e->val_len, &s))
            return ef__fail(EF_ERR_RANGE, "gguf writer: metadata too large");
    }
    for (size_t i = 0; i < w->n_t; i++) {
        size_t add = 8 + strlen(w->t[i].name) + 4 + 8 * (size_t)w->t[i].n_dims + 4 + 8;
        if (!ef__add_size(s, add, &s)) return ef__fail(EF_ERR_RANGE, "gguf writer: too large");
    }
    *out = s;
    return EF_OK;
}

ef_status ef_gguf_writer_size(const ef_gguf_writer *w, uint64_t *out) {
    size_t m;
    ef_status st = meta_size(w, &m);
    if (st != EF_OK) return st;
    uint64_t total = m + pad_to(m, w->alignment);
    for (size_t i = 0; i < w->n_t; i++) {
        uint64_t n = w->t[i].nbytes;
        if (__builtin_add_overflow(total, n + pad_to(n, w->alignment), &total))
            return ef__fail(EF_ERR_RANGE, "gguf writer: file size overflows");
    }
    *out = total;
    return EF_OK;
}

ef_status ef_gguf_writer_write(const ef_gguf_writer *w, const char *path) {
    if (!w || !path) return ef__fail(EF_ERR_INVALID, "ef_gguf_writer_write: NULL argument");
    size_t m;
    ef_status st = meta_size(w, &m);
    if (st != EF_OK) return st;
    size_t head_len = m + (size_t)pad_to(m, w->alignment);
    unsigned char *head = ef_calloc(head_len, 1);
    unsigned char *buf = NULL;
    ef_atomic_file *f = NULL;
    if (!head) return EF_ERR_NOMEM;

    /* header, metadata, tensor infos; the calloc left the padding zero */
    unsigned char *p = head;
    memcpy(p, "GGUF", 4);
    st32(p + 4, EF_GGUF_VERSION);
    st64(p + 8, w->n_t);
    st64(p + 16, w->n_kv);
    p += GGUF_HEADER_BYTES;
    for (size_t i = 0; i < w->n_kv; i++) {
        const wkv *e = &w->kv[i];
        st64(p, e->key_len);
        memcpy(p + 8, e->key, e->key_len);
        p += 8 + e->key_len;
        st32(p, (uint32_t)e->type);
        p += 4;
        if (e->type == EF_GGUF_ARRAY) {
            st32(p, (uint32_t)e->elem);
            st64(p + 4, e->n);
            p += 12;
        }
        if (e->val_len) memcpy(p, e->val, e->val_len);
        p += e->val_len;
    }
    uint64_t offset = 0, max_fill = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        size_t nl = strlen(t->name);
        st64(p, nl);
        memcpy(p + 8, t->name, nl);
        p += 8 + nl;
        st32(p, (uint32_t)t->n_dims);
        p += 4;
        for (int d = 0; d < t->n_dims; d++, p += 8) st64(p, (uint64_t)t->ne[d]);
        st32(p, (uint32_t)t->type);
        st64(p + 4, offset);
        p += 12;
        offset += t->nbytes + pad_to(t->nbytes, w->alignment);
        if (t->fill && t->nbytes > max_fill) max_fill = t->nbytes;
    }

    if (max_fill) {
        buf = ef_malloc((size_t)max_fill);
        if (!buf) {
            st = EF_ERR_NOMEM;
            goto fail;
        }
    }
    if ((st = ef_atomic_open(&f, path)) != EF_OK) goto fail;
    if ((st = ef_atomic_write(f, head, head_len)) != EF_OK) goto fail;
    static const unsigned char zeros[256];
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        const void *data = t->data;
        if (t->fill) {
            if (t->nbytes) memset(buf, 0, t->nbytes);
            if ((st = t->fill(t->user, buf, t->nbytes)) != EF_OK) goto fail;
            data = buf;
        }
        if (t->nbytes && (st = ef_atomic_write(f, data, t->nbytes)) != EF_OK) goto fail;
        size_t pad = (size_t)pad_to(t->nbytes, w->alignment);
        while (pad) {
            size_t k = pad < sizeof zeros ? pad : sizeof zeros;
            if ((st = ef_atomic_write(f, zeros, k)) != EF_OK) goto fail;
            pad -= k;
        }
    }
    st = ef_atomic_commit(f);
    f = NULL;
    if (st != EF_OK) goto fail;
    ef_free(head);
    ef_free(buf);
    return EF_OK;

fail:
    ef_atomic_abort(f);
    ef_free(head);
    ef_free(buf);
    return st;
}
