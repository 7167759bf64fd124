/*
 * safetensors checkpoints (https://github.com/huggingface/safetensors): the
 * format PyTorch and numpy users load models from. A file is an 8-byte
 * little-endian header length N, N bytes of UTF-8 JSON mapping tensor names
 * to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to
 * the data section) plus an optional "__metadata__" string map, then the
 * data section. The reader maps the file read-only and validates the header
 * completely before handing out pointers into it, because files come from
 * other machines; the writer goes through ef_atomic_* so a crash never
 * leaves a half-written checkpoint.
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

#include <cjson/cJSON.h>

#include "core/core_internal.h"
#include "core/strbuf.h"
#include "edgefl/io.h"

/* Same limit as the reference implementation: larger headers are refused
 * before anything is parsed. */
#define ST_MAX_HEADER ((uint64_t)100000000)
/* Largest integer a JSON number (a double in cJSON) holds exactly. */
#define ST_MAX_JSON_INT 9007199254740992.0

typedef struct st_dtype_desc {
    const char *name;
    size_t size;
} st_dtype_desc;

/* Indexed by ef_st_dtype. */
static const st_dtype_desc k_dtypes[] = {
    {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F64", 8}, {"I64", 8},
    {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U8", 1},  {"BOOL", 1},
};
#define N_DTYPES (sizeof k_dtypes / sizeof k_dtypes[0])

/* Valid in the format but not handled here: refused as unsupported rather
 * than as malformed, so the message points at the real limitation. */
static const char *const k_other_dtypes[] = {"U16", "U32", "U64", "F8_E4M3", "F8_E5M2"};

struct ef_safetensors {
    char *path;
    unsigned char *map;
    size_t map_size;
    size_t n;
    ef_st_tensor *t;            /* (n) sorted by data offset */
    const ef_st_tensor **by_name; /* (n) sorted by name, for find */
    size_t n_meta;
    ef_st_kv *meta;             /* (n_meta) sorted by key */
};

/* ---- little-endian loads (the format is little-endian on every host) ---- */

static uint16_t load_le16(const unsigned char *p) {
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t load_le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t load_le64(const unsigned char *p) {
    return (uint64_t)load_le32(p) | (uint64_t)load_le32(p + 4) << 32;
}

static float f32_from_bits(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}

/* IEEE half to float. Every half is exactly representable as a float; the
 * subnormal branch scales by a power of two, which is exact. */
static float half_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0) {
        float f = (float)mant * 0x1p-24f;
        return sign ? -f : f;
    }
    if (exp == 31) return f32_from_bits(sign | 0x7f800000u | mant << 13); /* inf, NaN payload */
    return f32_from_bits(sign | (exp + 112) << 23 | mant << 13);
}

/* ---- validation helpers -------------------------------------------------- */

/* Strict UTF-8 check (no overlong forms, surrogates or code points > U+10FFFF);
 * the offset of the first bad sequence goes to *bad_at. */
static int utf8_valid(const unsigned char *s, size_t n, size_t *bad_at) {
    for (size_t i = 0; i < n;) {
        size_t k = ef__utf8_seq(s + i, n - i);
        if (k == 0) {
            *bad_at = i;
            return 0;
        }
        i += k;
    }
    return 1;
}

/* A JSON number that is a non-negative integer cJSON's double holds exactly. */
static int json_uint(const cJSON *it, uint64_t *out) {
    if (!cJSON_IsNumber(it)) return 0;
    double v = it->valuedouble;
    if (!(v >= 0.0 && v <= ST_MAX_JSON_INT)) return 0;
    uint64_t u = (uint64_t)v;
    if ((double)u != v) return 0;
    *out = u;
    return 1;
}

static int u64_fits_size(uint64_t v) {
#if SIZE_MAX < UINT64_MAX
    return v <= SIZE_MAX;
#else
    EF_UNUSED(v);
    return 1;
#endif
}

static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t len = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && len < cap; d++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%" PRId64, d ? ", " : "", shape[d]);
    if (len < cap) snprintf(buf + len, cap - len, "]");
}

static int cmp_by_offset(const void *a, const void *b) {
    const ef_st_tensor *x = a, *y = b;
    const unsigned char *px = x->data, *py = y->data;
    if (px != py) return px < py ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name); /* deterministic order for empty tensors */
}

static int cmp_by_name(const void *a, const void *b) {
    const ef_st_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static int cmp_kv(const void *a, const void *b) {
    return strcmp(((const ef_st_kv *)a)->key, ((const ef_st_kv *)b)->key);
}

/* ---- reader -------------------------------------------------------------- */

static ef_status parse_metadata(ef_safetensors *st, const cJSON *obj) {
    if (!cJSON_IsObject(obj))
        return ef__fail(EF_ERR_FORMAT, "%s: \"__metadata__\" is not an object", st->path);
    size_t n = (size_t)cJSON_GetArraySize(obj);
    st->meta = ef_calloc(n ? n : 1, sizeof *st->meta);
    if (!st->meta) return EF_ERR_NOMEM;
    const cJSON *kv;
    cJSON_ArrayForEach(kv, obj) {
        if (!cJSON_IsString(kv))
            return ef__fail(EF_ERR_FORMAT, "%s: metadata value of \"%s\" is not a string",
                            st->path, kv->string);
        ef_st_kv *m = &st->meta[st->n_meta];
        m->key = ef_strdup(kv->string);
        m->value = m->key ? ef_strdup(kv->valuestring) : NULL;
        if (!m->key || !m->value) {
            ef_free((char *)m->key);
            m->key = NULL;
            return EF_ERR_NOMEM;
        }
        st->n_meta++;
    }
    qsort(st->meta, st->n_meta, sizeof *st->meta, cmp_kv);
    for (size_t i = 1; i < st->n_meta; i++)
        if (strcmp(st->meta[i - 1].key, st->meta[i].key) == 0)
            return ef__fail(EF_ERR_FORMAT, "%s: duplicate metadata key \"%s\"", st->path,
                            st->meta[i].key);
    return EF_OK;
}

/* Fills *t from one header entry; data points into the map. */
static ef_status parse_tensor(ef_safetensors *st, const cJSON *e, const unsigned char *data,
                              size_t data_len, ef_st_tensor *t) {
    const char *path = st->path, *name = e->string;
    if (!cJSON_IsObject(e))
        return ef__fail(EF_ERR_FORMAT, "%s: tensor '%s': entry is not an object", path, name);

    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!cJSON_IsString(dt))
        return ef__fail(EF_ERR_FORMAT, "%s: tensor '%s': missing or non-string \"dtype\"", path,
                        name);
    size_t k;
    for (k = 0; k < N_DTYPES; k++)
        if (strcmp(dt->valuestring, k_dtypes[k].name) == 0) break;
    if (k == N_DTYPES) {
        for (size_t j = 0; j < sizeof k_other_dtypes / sizeof *k_other_dtypes; j++)
            if (strcmp(dt->valuestring, k_other_dtypes[j]) == 0)
                return ef__fail(EF_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s is not supported",
                                path, name, dt->valuestring);
        return ef__fail(EF_ERR_FORMAT, "%s: tensor '%s': unknown dtype \"%.32s\"", path, name,
                        dt->valuestring);
    }
    t->dtype = (ef_st_dtype)k;

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (!cJSON_IsArray(shape))
        return ef__fail(EF_ERR_FORMAT, "%s: tensor '%s': missing or non-array \"shape\"", path,
                        name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > EF_MAX_DIMS)
        return ef__fail(EF_ERR_FORMAT, "%s: tensor '%s': %d dimensions (at most %d supported)",
                        path, name, ndim, EF_MAX_DIMS);
    t->ndim = ndim;
    size_t numel = 1;
    int d = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, shape) {
        uint64_t v;
        if (!json_uint(dim, &v))
            return ef__fail(EF_ERR_FORMAT,
                            "%s: tensor '%s': shape entry %d is not a non-negative integer",
                            path, name, d);
        if (!u64_fits_size(v) || !ef__mul_size(numel, (size_t)v, &numel))
            return ef__fail(EF_ERR_FORMAT, "%s: tensor '%s': shape product overflows", path,
                            name);
        t->shape[d++] = (int64_t)v;
    }
    size_t nbytes;
    if (!ef__mul_size(numel, k_dtypes[k].size, &nbytes))
        return ef__fail(EF_ERR_FORMAT, "%s: tensor '%s': byte size overflows", path, name);

    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    uint64_t begin, end;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
        !json_uint(cJSON_GetArrayItem(offs, 0), &begin) ||
        !json_uint(cJSON_GetArrayItem(offs, 1), &end))
        return ef__fail(EF_ERR_FORMAT,
                        "%s: tensor '%s': \"data_offsets\" must be two non-negative integers",
                        path, name);
    if (begin > end || end > data_len)
        return ef__fail(EF_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                        "] outside the %zu-byte data section%s",
                        path, name, begin, end, data_len,
                        begin <= end ? " (truncated file?)" : "");
    if (end - begin != nbytes) {
        char sh[160];
        format_shape(sh, sizeof sh, t->ndim, t->shape);
        return ef__fail(EF_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets span %" PRIu64
                        " bytes but dtype %s and shape %s need %zu",
                        path, name, end - begin, k_dtypes[k].name, sh, nbytes);
    }
    t->numel = numel;
    t->nbytes = nbytes;
    t->data = data + begin;
    t->name = ef_strdup(name);
    return t->name ? EF_OK : EF_ERR_NOMEM;
}

/* Tensors sorted by offset must tile the data section exactly. */
static ef_status check_layout(const ef_safetensors *st, const unsigned char *data,
                              size_t data_len) {
    size_t pos = 0;
    for (size_t i = 0; i < st->n; i++) {
        const ef_st_tensor *t = &st->t[i];
        size_t begin = (size_t)((const unsigned char *)t->data - data);
        if (begin < pos)
            return ef__fail(EF_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap in the data section",
                            st->path, st->t[i - 1].name, t->name);
        if (begin > pos)
            return ef__fail(EF_ERR_FORMAT,
                            "%s: hole in the data section: bytes [%zu, %zu) before tensor '%s' "
                            "belong to no tensor",
                            st->path, pos, begin, t->name);
        pos = begin + t->nbytes;
    }
    if (pos != data_len)
        return ef__fail(EF_ERR_FORMAT,
                        "%s: data section has %zu bytes but the tensors cover only %zu", st->path,
                        data_len, pos);
    return EF_OK;
}

ef_status ef_safetensors_open(ef_safetensors **out, const char *path) {
    ef_status st;
    int fd = -1;
    cJSON *root = NULL;
    ef_safetensors *s = NULL;
    if (out) *out = NULL;
    if (!out || !path) return ef__fail(EF_ERR_INVALID, "ef_safetensors_open: NULL argument");

    s = ef_calloc(1, sizeof *s);
    if (!s) return EF_ERR_NOMEM;
    s->path = ef_strdup(path);
    if (!s->path) {
        st = EF_ERR_NOMEM;
        goto fail;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        st = ef__fail(EF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
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
    size_t size = (size_t)sb.st_size;
    if (size < 8) {
        st = ef__fail(EF_ERR_FORMAT,
                      "%s: file is %zu bytes, too short for the 8-byte header length", path, size);
        goto fail;
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        st = ef__fail(EF_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
        goto fail;
    }
    s->map = map;
    s->map_size = size;
    close(fd);
    fd = -1;

    uint64_t hlen = load_le64(s->map);
    if (hlen > ST_MAX_HEADER) {
        st = ef__fail(EF_ERR_FORMAT, "%s: header length %" PRIu64 " exceeds the %" PRIu64
                      "-byte limit", path, hlen, ST_MAX_HEADER);
        goto fail;
    }
    if (hlen > size - 8) {
        st = ef__fail(EF_ERR_FORMAT,
                      "%s: truncated: header length %" PRIu64 " runs past the end of the "
                      "%zu-byte file",
                      path, hlen, size);
        goto fail;
    }
    const char *hdr = (const char *)s->map + 8;
    const unsigned char *data = s->map + 8 + hlen;
    size_t data_len = size - 8 - (size_t)hlen;
    size_t bad;
    if (!utf8_valid((const unsigned char *)hdr, (size_t)hlen, &bad)) {
        st = ef__fail(EF_ERR_FORMAT, "%s: header is not valid UTF-8 (at byte %zu)", path, bad);
        goto fail;
    }
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!root) {
        size_t at = end && end >= hdr && end <= hdr + hlen ? (size_t)(end - hdr) : 0;
        st = ef__fail(EF_ERR_FORMAT, "%s: header is not valid JSON (error near byte %zu of %"
                      PRIu64 ")", path, at, hlen);
        goto fail;
    }
    /* Writers pad the header with spaces; anything else after the JSON
     * value means the header is not what it claims to be. */
    for (const char *c = end; c < hdr + hlen; c++) {
        if (*c != ' ' && *c != '\t' && *c != '\n' && *c != '\r') {
            st = ef__fail(EF_ERR_FORMAT, "%s: unexpected bytes after the JSON header (at byte %zu)",
                          path, (size_t)(c - hdr));
            goto fail;
        }
    }
    if (!cJSON_IsObject(root)) {
        st = ef__fail(EF_ERR_FORMAT, "%s: header is JSON but not an object", path);
        goto fail;
    }

    size_t n_entries = (size_t)cJSON_GetArraySize(root);
    s->t = ef_calloc(n_entries ? n_entries : 1, sizeof *s->t);
    if (!s->t) {
        st = EF_ERR_NOMEM;
        goto fail;
    }
    int seen_meta = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (seen_meta++) {
                st = ef__fail(EF_ERR_FORMAT, "%s: duplicate \"__metadata__\" entry", path);
                goto fail;
            }
            if ((st = parse_metadata(s, e)) != EF_OK) goto fail;
            continue;
        }
        /* Count before parsing so a partly filled entry is still freed. */
        if ((st = parse_tensor(s, e, data, data_len, &s->t[s->n++])) != EF_OK) goto fail;
    }
    cJSON_Delete(root);
    root = NULL;

    qsort(s->t, s->n, sizeof *s->t, cmp_by_offset);
    /* cJSON keeps duplicate keys; sorting by name exposes them as neighbours. */
    s->by_name = ef_calloc(s->n ? s->n : 1, sizeof *s->by_name);
    if (!s->by_name) {
        st = EF_ERR_NOMEM;
        goto fail;
    }
    for (size_t i = 0; i < s->n; i++) s->by_name[i] = &s->t[i];
    qsort(s->by_name, s->n, sizeof *s->by_name, cmp_by_name);
    for (size_t i = 1; i < s->n; i++) {
        if (strcmp(s->by_name[i - 1]->name, s->by_name[i]->name) == 0) {
            st = ef__fail(EF_ERR_FORMAT, "%s: duplicate tensor name '%s'", path,
                          s->by_name[i]->name);
            goto fail;
        }
    }
    if ((st = check_layout(s, data, data_len)) != EF_OK) goto fail;

    *out = s;
    return EF_OK;

fail:
    if (fd >= 0) close(fd);
    cJSON_Delete(root);
    ef_safetensors_close(s);
    return st;
}

void ef_safetensors_close(ef_safetensors *st) {
    if (!st) return;
    for (size_t i = 0; i < st->n; i++) ef_free((char *)st->t[i].name);
    for (size_t i = 0; i < st->n_meta; i++) {
        ef_free((char *)st->meta[i].key);
        ef_free((char *)st->meta[i].value);
    }
    if (st->map) munmap(st->map, st->map_size);
    ef_free(st->t);
    ef_free(st->by_name);
    ef_free(st->meta);
    ef_free(st->path);
    ef_free(st);
}

size_t ef_safetensors_count(const ef_safetensors *st) { return st->n; }

const ef_st_tensor *ef_safetensors_tensor(const ef_safetensors *st, size_t i) {
    return i < st->n ? &st->t[i] : NULL;
}

const ef_st_tensor *ef_safetensors_find(const ef_safetensors *st, const char *name) {
    ef_st_tensor key;
    const ef_st_tensor *pkey = &key;
    key.name = name;
    const ef_st_tensor *const *hit =
        bsearch(&pkey, st->by_name, st->n, sizeof *st->by_name, cmp_by_name);
    return hit ? *hit : NULL;
}

const char *ef_safetensors_meta(const ef_safetensors *st, const char *key) {
    if (st->n_meta == 0) return NULL;
    ef_st_kv k = {key, NULL};
    const ef_st_kv *hit = bsearch(&k, st->meta, st->n_meta, sizeof *st->meta, cmp_kv);
    return hit ? hit->value : NULL;
}

ef_status ef_st_tensor_to_f32(const ef_st_tensor *t, float *out) {
    const unsigned char *p = t->data;
    size_t n = t->numel;
    switch (t->dtype) {
    case EF_ST_F32:
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (n) memcpy(out, p, n * 4);
#else
        for (size_t i = 0; i < n; i++) out[i] = f32_from_bits(load_le32(p + 4 * i));
#endif
        return EF_OK;
    case EF_ST_F16:
        for (size_t i = 0; i < n; i++) out[i] = half_to_f32(load_le16(p + 2 * i));
        return EF_OK;
    case EF_ST_BF16:
        for (size_t i = 0; i < n; i++) out[i] = f32_from_bits((uint32_t)load_le16(p + 2 * i) << 16);
        return EF_OK;
    case EF_ST_F64:
        for (size_t i = 0; i < n; i++) {
            uint64_t b = load_le64(p + 8 * i);
            double v;
            memcpy(&v, &b, 8);
            out[i] = (float)v; /* IEEE rounding: nearest, overflow to inf */
        }
        return EF_OK;
    default:
        break;
    }
    return ef__fail(EF_ERR_UNSUPPORTED, "tensor '%s': dtype %s cannot be converted to F32",
                    t->name ? t->name : "?",
                    (size_t)t->dtype < N_DTYPES ? k_dtypes[t->dtype].name : "?");
}

/* ---- writer -------------------------------------------------------------- */

/* Integers go into the header as raw text: cJSON would print numbers above
 * INT_MAX through "%g", which can turn into exponent notation. */
static cJSON *json_uint_array(const uint64_t *v, int n) {
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; arr && i < n; i++) {
        char buf[24];
        snprintf(buf, sizeof buf, "%" PRIu64, v[i]);
        cJSON *num = cJSON_CreateRaw(buf);
        if (!num || !cJSON_AddItemToArray(arr, num)) {
            cJSON_Delete(num);
            cJSON_Delete(arr);
            return NULL;
        }
    }
    return arr;
}

/* Builds the header text (JSON plus padding to 8-byte alignment of the data)
 * for tensors t[0..n) stored back to back in that order. */
static ef_status build_header(const char *path, const ef_st_view *t, size_t n,
                              const ef_st_kv *meta, size_t n_meta, char **out_json) {
    ef_status st = EF_ERR_NOMEM;
    cJSON *root = cJSON_CreateObject();
    if (!root) goto fail;
    if (n_meta > 0) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        if (!m) goto fail;
        for (size_t i = 0; i < n_meta; i++) {
            if (!meta[i].key || !meta[i].value) {
                st = ef__fail(EF_ERR_INVALID, "%s: metadata entry %zu has a NULL key or value",
                              path, i);
                goto fail;
            }
            if (cJSON_GetObjectItemCaseSensitive(m, meta[i].key)) {
                st = ef__fail(EF_ERR_INVALID, "%s: duplicate metadata key \"%s\"", path,
                              meta[i].key);
                goto fail;
            }
            if (!cJSON_AddStringToObject(m, meta[i].key, meta[i].value)) goto fail;
        }
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < n; i++) {
        if (!t[i].name || strcmp(t[i].name, "__metadata__") == 0 ||
            cJSON_GetObjectItemCaseSensitive(root, t[i].name)) {
            st = ef__fail(EF_ERR_INVALID, "%s: tensor %zu has a NULL, reserved or duplicate name",
                          path, i);
            goto fail;
        }
        if (t[i].ndim < 0 || t[i].ndim > EF_MAX_DIMS) {
            st = ef__fail(EF_ERR_INVALID, "%s: tensor '%s' has %d dimensions", path, t[i].name,
                          t[i].ndim);
            goto fail;
        }
        uint64_t shape[EF_MAX_DIMS], offs[2], numel = 1;
        for (int d = 0; d < t[i].ndim; d++) {
            if (t[i].shape[d] < 0) {
                st = ef__fail(EF_ERR_INVALID, "%s: tensor '%s' has a negative dimension", path,
                              t[i].name);
                goto fail;
            }
            shape[d] = (uint64_t)t[i].shape[d];
            numel *= shape[d];
        }
        /* Tensors are stored back to back in the given order. */
        offs[0] = offset;
        offs[1] = offs[0] + numel * 4;
        offset = offs[1];
        cJSON *e = cJSON_CreateObject();
        if (!e) goto fail;
        if (!cJSON_AddItemToObject(root, t[i].name, e)) {
            cJSON_Delete(e);
            goto fail;
        }
        cJSON *sh = json_uint_array(shape, t[i].ndim);
        if (!cJSON_AddStringToObject(e, "dtype", "F32") || !sh) {
            cJSON_Delete(sh);
            goto fail;
        }
        if (!cJSON_AddItemToObject(e, "shape", sh)) {
            cJSON_Delete(sh);
            goto fail;
        }
        cJSON *of = json_uint_array(offs, 2);
        if (!of || !cJSON_AddItemToObject(e, "data_offsets", of)) {
            cJSON_Delete(of);
            goto fail;
        }
    }
    char *text = cJSON_PrintUnformatted(root);
    if (!text) goto fail;
    size_t len = strlen(text);
    size_t padded = len + (8 - (8 + len) % 8) % 8;
    *out_json = ef_malloc(padded + 1);
    if (*out_json) {
        memcpy(*out_json, text, len);
        memset(*out_json + len, ' ', padded - len);
        (*out_json)[padded] = '\0';
    }
    cJSON_free(text);
    cJSON_Delete(root);
    return *out_json ? EF_OK : EF_ERR_NOMEM;

fail:
    if (st == EF_ERR_NOMEM) ef__fail(EF_ERR_NOMEM, "%s: out of memory building the header", path);
    cJSON_Delete(root);
    return st;
}

/* Appends n floats little-endian. */
static ef_status write_f32(ef_atomic_file *f, const float *data, size_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    /* The format is little-endian: swap through a small buffer. */
    uint32_t buf[1024];
    for (size_t i = 0; i < n;) {
        size_t m = n - i < 1024 ? n - i : 1024;
        for (size_t j = 0; j < m; j++) {
            uint32_t b;
            memcpy(&b, &data[i + j], 4);
            buf[j] = __builtin_bswap32(b);
        }
        ef_status st = ef_atomic_write(f, buf, m * 4);
        if (st != EF_OK) return st;
        i += m;
    }
    return EF_OK;
#else
    return ef_atomic_write(f, data, n * sizeof(float));
#endif
}

ef_status ef_safetensors_save_views(const char *path, const ef_st_view *t, size_t n,
                                    const ef_st_kv *meta, size_t n_meta) {
    ef_status st;
    char *json = NULL;
    ef_atomic_file *f = NULL;
    if (!path || (n && !t) || (n_meta && !meta))
        return ef__fail(EF_ERR_INVALID, "ef_safetensors_save_views: NULL argument");
    for (size_t i = 0; i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim && d < EF_MAX_DIMS; d++)
            if (t[i].shape[d] < 0 || !ef__mul_size(numel, (size_t)t[i].shape[d], &numel) ||
                numel > SIZE_MAX / 8)
                return ef__fail(EF_ERR_RANGE, "%s: tensor %zu is too large", path, i);
        if (numel && !t[i].data)
            return ef__fail(EF_ERR_INVALID, "%s: tensor %zu has no data", path, i);
    }

    if ((st = build_header(path, t, n, meta, n_meta, &json)) != EF_OK) goto fail;
    size_t hlen = strlen(json);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));

    if ((st = ef_atomic_open(&f, path)) != EF_OK) goto fail;
    if ((st = ef_atomic_write(f, len8, 8)) != EF_OK) goto fail;
    if ((st = ef_atomic_write(f, json, hlen)) != EF_OK) goto fail;
    for (size_t i = 0; i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= (size_t)t[i].shape[d];
        if ((st = write_f32(f, t[i].data, numel)) != EF_OK) goto fail;
    }
    st = ef_atomic_commit(f);
    f = NULL;
    if (st != EF_OK) goto fail;
    ef_free(json);
    return EF_OK;

fail:
    ef_atomic_abort(f);
    ef_free(json);
    return st;
}

ef_status ef_safetensors_save(const char *path, ef_params *p, const ef_st_kv *meta,
                              size_t n_meta) {
    if (!path || !p || (n_meta && !meta))
        return ef__fail(EF_ERR_INVALID, "ef_safetensors_save: NULL argument");
    float *data = ef_params_data(p);
    if (!data)
        return ef__fail(EF_ERR_STATE, "%s: params are not allocated (call ef_params_alloc)", path);
    size_t count = ef_params_count(p);
    ef_st_view *v = ef_calloc(count ? count : 1, sizeof *v);
    if (!v) return EF_ERR_NOMEM;
    for (size_t i = 0; i < count; i++) {
        const ef_tensor_info *ti = ef_params_info(p, i);
        v[i].name = ti->name;
        v[i].ndim = ti->ndim;
        memcpy(v[i].shape, ti->shape, sizeof v[i].shape);
        v[i].data = data + ti->offset;
    }
    ef_status st = ef_safetensors_save_views(path, v, count, meta, n_meta);
    ef_free(v);
    return st;
}

ef_status ef_safetensors_load_params(const char *path, ef_params *p) {
    ef_status st;
    ef_safetensors *s = NULL;
    float *tmp = NULL;
    if (!path || !p) return ef__fail(EF_ERR_INVALID, "ef_safetensors_load_params: NULL argument");
    float *dst = ef_params_data(p);
    if (!dst)
        return ef__fail(EF_ERR_STATE, "%s: params are not allocated (call ef_params_alloc)", path);
    if ((st = ef_safetensors_open(&s, path)) != EF_OK) goto fail;
    size_t total = ef_params_numel(p);
    /* Convert everything first so a failure halfway leaves p untouched. */
    tmp = ef_calloc(total ? total : 1, sizeof *tmp);
    if (!tmp) {
        st = EF_ERR_NOMEM;
        goto fail;
    }
    for (size_t i = 0; i < ef_params_count(p); i++) {
        const ef_tensor_info *ti = ef_params_info(p, i);
        const ef_st_tensor *t = ef_safetensors_find(s, ti->name);
        if (!t) {
            st = ef__fail(EF_ERR_NOT_FOUND, "%s: tensor '%s' not found", path, ti->name);
            goto fail;
        }
        int same = t->ndim == ti->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == ti->shape[d];
        if (!same) {
            char want[160], got[160];
            format_shape(want, sizeof want, ti->ndim, ti->shape);
            format_shape(got, sizeof got, t->ndim, t->shape);
            st = ef__fail(EF_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s", path,
                          ti->name, got, want);
            goto fail;
        }
        if ((st = ef_st_tensor_to_f32(t, tmp + ti->offset)) != EF_OK) {
            st = ef__fail(st, "%s: tensor '%s': dtype %s cannot be loaded as F32", path,
                          ti->name, k_dtypes[t->dtype].name);
            goto fail;
        }
    }
    memcpy(dst, tmp, total * sizeof *tmp);
    ef_free(tmp);
    ef_safetensors_close(s);
    return EF_OK;

fail:
    ef_free(tmp);
    ef_safetensors_close(s);
    return st;
}
