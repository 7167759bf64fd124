/*
 * Tests of the safetensors reader and writer: a C round trip (names, order,
 * shapes, bit-exact values, metadata); interop both ways with numpy and
 * PyTorch through tests/io/safetensors_peer.py, an independent
 * implementation of the format (Debian has no safetensors package); every
 * kind of malformed file rejected with a message naming the file; and
 * ef_safetensors_load_params leaving the parameters untouched on failure.
 */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "edgefl/io.h"
#include "test_util.h"

#define PYTHON "/usr/bin/python3"
#define PEER EF_SOURCE_DIR "/tests/io/safetensors_peer.py"

static char g_dir[256];

static const char *tpath(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static uint32_t f2bits(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

static float bits2f(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}

/* ---- parameters used throughout ------------------------------------------- */

typedef struct tdesc {
    const char *name;
    int ndim;
    int64_t shape[4];
} tdesc;

/* Deliberately not in name order: the file must keep the params' order. */
static const tdesc k_layout[] = {
    {"fc2.weight", 2, {4, 6}},
    {"fc1.bias", 1, {6}},
    {"scale", 0, {0}},
    {"conv.w", 4, {2, 1, 3, 3}},
};
#define N_LAYOUT (sizeof k_layout / sizeof k_layout[0])

static ef_params *make_params(size_t n_tensors, const tdesc *layout) {
    ef_params *p = NULL;
    if (ef_params_new(&p) != EF_OK) return NULL;
    for (size_t i = 0; i < n_tensors; i++)
        if (ef_params_add(p, layout[i].name, layout[i].ndim, layout[i].shape) != EF_OK) {
            ef_params_free(p);
            return NULL;
        }
    if (ef_params_alloc(p) != EF_OK) {
        ef_params_free(p);
        return NULL;
    }
    return p;
}

/* Arbitrary floats plus the awkward ones: -0, subnormal, huge, inf, NaN. */
static void fill_values(ef_params *p) {
    float *d = ef_params_data(p);
    size_t n = ef_params_numel(p);
    for (size_t i = 0; i < n; i++) d[i] = sinf(0.37f * (float)i + 0.5f) * (1.0f + (float)i / 7);
    static const uint32_t special[] = {0x80000000u, 0x00000001u, 0x007fffffu, 0x7f7fffffu,
                                       0x7f800000u, 0xff800000u, 0x7fc00001u};
    for (size_t i = 0; i < sizeof special / sizeof *special && i < n; i++)
        d[i * 3] = bits2f(special[i]);
}

/* Tells the peer what was written: names, shapes and float bit patterns. */
static int write_expected_json(const char *path, ef_params *p, const ef_st_kv *meta,
                               size_t n_meta) {
    cJSON *root = cJSON_CreateObject();
    cJSON *m = cJSON_AddObjectToObject(root, "metadata");
    for (size_t i = 0; i < n_meta; i++) cJSON_AddStringToObject(m, meta[i].key, meta[i].value);
    cJSON *ts = cJSON_AddArrayToObject(root, "tensors");
    for (size_t i = 0; i < ef_params_count(p); i++) {
        const ef_tensor_info *ti = ef_params_info(p, i);
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(t, "name", ti->name);
        cJSON *sh = cJSON_AddArrayToObject(t, "shape");
        for (int d = 0; d < ti->ndim; d++)
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)ti->shape[d]));
        cJSON *bits = cJSON_AddArrayToObject(t, "bits");
        const float *v = ef_params_tensor(p, i);
        for (size_t j = 0; j < ti->numel; j++)
            cJSON_AddItemToArray(bits, cJSON_CreateNumber((double)f2bits(v[j])));
        cJSON_AddItemToArray(ts, t);
    }
    char *text = cJSON_Print(root);
    FILE *f = fopen(path, "w");
    int ok = f && text && fputs(text, f) >= 0;
    if (f) fclose(f);
    cJSON_free(text);
    cJSON_Delete(root);
    return ok;
}

static const ef_st_kv k_meta[] = {
    {"format", "pt"},
    {"round", "17"},
    {"note", "quotes \" backslash \\ newline \n unicode \xe2\x9c\x93"},
};
#define N_META (sizeof k_meta / sizeof k_meta[0])

/* ---- C round trip ---------------------------------------------------------- */

static void test_roundtrip(void) {
    ef_params *p = make_params(N_LAYOUT, k_layout);
    CHECK(p != NULL);
    if (!p) return;
    fill_values(p);
    const char *path = tpath("model.safetensors");
    CHECK_OK(ef_safetensors_save(path, p, k_meta, N_META));

    /* Layout on disk: the data section starts 8-byte aligned. */
    char *raw = NULL;
    size_t raw_len = 0;
    CHECK_OK(ef_read_file(path, 0, &raw, &raw_len));
    if (raw && raw_len >= 8) {
        uint64_t n = 0;
        for (int i = 0; i < 8; i++) n |= (uint64_t)(unsigned char)raw[i] << (8 * i);
        CHECK((8 + n) % 8 == 0);
        CHECK(raw_len == 8 + n + ef_params_numel(p) * 4);
        CHECK(strncmp(raw + 8, "{\"__metadata__\":", 16) == 0);
    }
    ef_free(raw);

    ef_safetensors *st = NULL;
    CHECK_OK(ef_safetensors_open(&st, path));
    if (st) {
        CHECK(ef_safetensors_count(st) == N_LAYOUT);
        for (size_t i = 0; i < N_LAYOUT && i < ef_safetensors_count(st); i++) {
            const ef_st_tensor *t = ef_safetensors_tensor(st, i);
            const ef_tensor_info *ti = ef_params_info(p, i);
            CHECK(strcmp(t->name, ti->name) == 0);
            CHECK(t->dtype == EF_ST_F32 && t->ndim == ti->ndim && t->numel == ti->numel);
            CHECK(t->nbytes == ti->numel * 4);
            for (int d = 0; d < t->ndim; d++) CHECK(t->shape[d] == ti->shape[d]);
            CHECK(ef_safetensors_find(st, ti->name) == t);
            float *v = malloc(t->numel * sizeof *v);
            CHECK_OK(ef_st_tensor_to_f32(t, v));
            CHECK(memcmp(v, ef_params_tensor(p, i), t->numel * 4) == 0);
            free(v);
        }
        CHECK(ef_safetensors_tensor(st, N_LAYOUT) == NULL);
        CHECK(ef_safetensors_find(st, "nope") == NULL);
        CHECK(ef_safetensors_find(st, "") == NULL);
        for (size_t i = 0; i < N_META; i++) {
            const char *v = ef_safetensors_meta(st, k_meta[i].key);
            CHECK_MSG(v && strcmp(v, k_meta[i].value) == 0, "meta %s", k_meta[i].key);
        }
        CHECK(ef_safetensors_meta(st, "absent") == NULL);
        ef_safetensors_close(st);
    }
    ef_safetensors_close(NULL);

    /* load_params into a fresh layout gives back the same bits. */
    ef_params *q = make_params(N_LAYOUT, k_layout);
    CHECK_OK(ef_safetensors_load_params(path, q));
    CHECK(memcmp(ef_params_data(p), ef_params_data(q), ef_params_numel(p) * 4) == 0);
    /* A subset of the tensors, in another order, loads too. */
    tdesc sub[2] = {k_layout[3], k_layout[1]};
    ef_params *r = make_params(2, sub);
    CHECK_OK(ef_safetensors_load_params(path, r));
    CHECK(memcmp(ef_params_tensor(r, 0), ef_params_tensor(p, 3), 18 * 4) == 0);
    CHECK(memcmp(ef_params_tensor(r, 1), ef_params_tensor(p, 1), 6 * 4) == 0);
    ef_params_free(r);

    /* No metadata: the header has no "__metadata__" and meta lookups miss. */
    CHECK_OK(ef_safetensors_save(tpath("nometa.safetensors"), p, NULL, 0));
    CHECK_OK(ef_safetensors_open(&st, tpath("nometa.safetensors")));
    if (st) CHECK(ef_safetensors_meta(st, "format") == NULL);
    ef_safetensors_close(st);

    /* Overwriting goes through a temp file: no leftovers. */
    CHECK_OK(ef_safetensors_save(path, q, k_meta, 1));

    /* Writer argument errors. */
    ef_params *unalloc = NULL;
    CHECK_OK(ef_params_new(&unalloc));
    CHECK(ef_safetensors_save(tpath("x.safetensors"), unalloc, NULL, 0) == EF_ERR_STATE);
    CHECK(ef_safetensors_load_params(path, unalloc) == EF_ERR_STATE);
    ef_params_free(unalloc);
    ef_st_kv dup[2] = {{"k", "a"}, {"k", "b"}};
    CHECK(ef_safetensors_save(tpath("x.safetensors"), p, dup, 2) == EF_ERR_INVALID);
    CHECK_MSG(strstr(ef_last_error(), "duplicate metadata key"), "%s", ef_last_error());
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no/such/dir/m.safetensors", g_dir);
    CHECK(ef_safetensors_save(missing, p, NULL, 0) == EF_ERR_IO);
    CHECK_MSG(strstr(ef_last_error(), missing), "%s", ef_last_error());
    CHECK(access(tpath("x.safetensors"), F_OK) != 0);
    ef_params_free(p);
    ef_params_free(q);
}

/* ---- interop with numpy and torch ------------------------------------------- */

static int python_has_torch(void) {
    return system(PYTHON " -c 'import torch, numpy' >/dev/null 2>&1") == 0;
}

static int run_peer(const char *mode, const char *st_path, const char *json_path) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s %s '%s' '%s'", PYTHON, PEER, mode, st_path, json_path);
    fflush(stdout);
    fflush(stderr);
    int rc = system(cmd);
    return rc == 0;
}

/* Our file, read by numpy and torch. */
static void test_peer_reads_ours(void) {
    ef_params *p = make_params(N_LAYOUT, k_layout);
    if (!p) return;
    fill_values(p);
    const char *st_path = tpath("c-written.safetensors"), *js = tpath("c-written.json");
    CHECK_OK(ef_safetensors_save(st_path, p, k_meta, N_META));
    CHECK(write_expected_json(js, p, k_meta, N_META));
    CHECK_MSG(run_peer("check", st_path, js), "python peer rejected %s", st_path);
    /* The peer must notice a single flipped bit, or the check above proves
     * nothing. */
    ef_params_data(p)[5] = bits2f(f2bits(ef_params_data(p)[5]) ^ 1u);
    CHECK(write_expected_json(js, p, k_meta, N_META));
    printf("(the python peer is expected to report a mismatch now)\n");
    CHECK_MSG(!run_peer("check", st_path, js), "python peer missed a flipped bit");
    ef_params_free(p);
}

static cJSON *load_json(const char *path) {
    char *text = NULL;
    size_t len = 0;
    if (ef_read_file(path, 0, &text, &len) != EF_OK) return NULL;
    cJSON *j = cJSON_ParseWithLength(text, len);
    ef_free(text);
    return j;
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* A torch-written file, read by us. */
static void test_we_read_peer(void) {
    const char *st_path = tpath("torch-written.safetensors"), *js = tpath("torch-written.json");
    CHECK_MSG(run_peer("write", st_path, js), "python peer could not write %s", st_path);
    cJSON *want = load_json(js);
    CHECK(want != NULL);
    ef_safetensors *st = NULL;
    CHECK_OK(ef_safetensors_open(&st, st_path));
    if (!want || !st) {
        cJSON_Delete(want);
        ef_safetensors_close(st);
        return;
    }
    const cJSON *tensors = cJSON_GetObjectItem(want, "tensors");
    CHECK((int)ef_safetensors_count(st) == cJSON_GetArraySize(tensors));
    /* Tensors come back in data order, which the peer records. */
    const cJSON *order = cJSON_GetObjectItem(want, "data_order");
    for (size_t i = 0; i < ef_safetensors_count(st); i++) {
        const cJSON *o = cJSON_GetArrayItem(order, (int)i);
        const ef_st_tensor *t = ef_safetensors_tensor(st, i);
        CHECK_MSG(o && strcmp(t->name, o->valuestring) == 0, "position %zu: %s", i, t->name);
    }
    int n_checked = 0;
    const cJSON *tj;
    cJSON_ArrayForEach(tj, tensors) {
        const char *name = cJSON_GetObjectItem(tj, "name")->valuestring;
        const char *dtype = cJSON_GetObjectItem(tj, "dtype")->valuestring;
        const ef_st_tensor *t = ef_safetensors_find(st, name);
        CHECK_MSG(t != NULL, "tensor %s missing", name);
        if (!t) continue;
        const cJSON *shape = cJSON_GetObjectItem(tj, "shape");
        CHECK(t->ndim == cJSON_GetArraySize(shape));
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            int64_t s = (int64_t)cJSON_GetArrayItem(shape, d)->valuedouble;
            CHECK(t->shape[d] == s);
            numel *= (size_t)s;
        }
        CHECK_MSG(t->numel == numel, "%s numel %zu", name, t->numel);
        const cJSON *bits = cJSON_GetObjectItem(tj, "f32_bits");
        if (bits) {
            float *v = malloc((numel ? numel : 1) * sizeof *v);
            CHECK_OK(ef_st_tensor_to_f32(t, v));
            CHECK(cJSON_GetArraySize(bits) == (int)numel);
            for (size_t j = 0; j < numel; j++) {
                uint32_t w = (uint32_t)cJSON_GetArrayItem(bits, (int)j)->valuedouble;
                CHECK_MSG(f2bits(v[j]) == w, "%s (%s)[%zu]: got 0x%08x (%g), want 0x%08x (%g)",
                          name, dtype, j, f2bits(v[j]), v[j], w, bits2f(w));
            }
            free(v);
        } else {
            /* Integer and bool tensors: raw little-endian bytes as written,
             * and no float conversion. */
            const char *hex = cJSON_GetObjectItem(tj, "raw")->valuestring;
            CHECK(strlen(hex) == 2 * t->nbytes);
            const unsigned char *b = t->data;
            int same = 1;
            for (size_t j = 0; j < t->nbytes; j++)
                if (b[j] != hexval(hex[2 * j]) * 16 + hexval(hex[2 * j + 1])) same = 0;
            CHECK_MSG(same, "%s raw bytes differ", name);
            float dummy[8];
            CHECK(ef_st_tensor_to_f32(t, dummy) == EF_ERR_UNSUPPORTED);
            CHECK_MSG(strstr(ef_last_error(), name), "%s", ef_last_error());
        }
        n_checked++;
    }
    CHECK(n_checked == 8);
    const ef_st_tensor *t = ef_safetensors_find(st, "ids_i64");
    CHECK(t && t->dtype == EF_ST_I64);
    t = ef_safetensors_find(st, "mask_bool");
    CHECK(t && t->dtype == EF_ST_BOOL && t->nbytes == 3);
    t = ef_safetensors_find(st, "scalar");
    CHECK(t && t->ndim == 0 && t->numel == 1);
    t = ef_safetensors_find(st, "empty");
    CHECK(t && t->ndim == 2 && t->numel == 0 && t->nbytes == 0);
    const cJSON *meta = cJSON_GetObjectItem(want, "metadata");
    const cJSON *m;
    cJSON_ArrayForEach(m, meta) {
        const char *v = ef_safetensors_meta(st, m->string);
        CHECK_MSG(v && strcmp(v, m->valuestring) == 0, "meta %s", m->string);
    }
    ef_safetensors_close(st);

    /* Into params: F16/BF16/F64/F32 tensors and the 0-d one convert on load;
     * an I64 tensor is refused and leaves everything untouched. */
    tdesc lay[4] = {{"h_f16", 2, {3, 4}}, {"w_f32", 2, {3, 4}}, {"d_f64", 2, {2, 4}},
                    {"scalar", 0, {0}}};
    ef_params *p = make_params(4, lay);
    CHECK_OK(ef_safetensors_load_params(st_path, p));
    if (p) {
        CHECK(ef_params_tensor(p, 3)[0] == 3.25f);
        CHECK(ef_params_tensor(p, 0)[2] == 1.0f && ef_params_tensor(p, 0)[3] == -2.5f);
        CHECK(ef_params_tensor(p, 2)[0] == 1.0f / 3.0f);
    }
    ef_params_free(p);
    tdesc lay2[2] = {{"w_f32", 2, {3, 4}}, {"ids_i64", 1, {5}}};
    p = make_params(2, lay2);
    if (p) {
        for (size_t i = 0; i < ef_params_numel(p); i++) ef_params_data(p)[i] = 42.0f;
        CHECK(ef_safetensors_load_params(st_path, p) == EF_ERR_UNSUPPORTED);
        CHECK_MSG(strstr(ef_last_error(), "ids_i64") && strstr(ef_last_error(), st_path), "%s",
                  ef_last_error());
        int untouched = 1;
        for (size_t i = 0; i < ef_params_numel(p); i++)
            if (ef_params_data(p)[i] != 42.0f) untouched = 0;
        CHECK(untouched);
    }
    ef_params_free(p);
    cJSON_Delete(want);
}

/* ---- half precision conversion, exhaustively ---------------------------------- */

static void test_f16_all(void) {
    /* All 65536 halves against a reference built from the definition. */
    static unsigned char data[65536 * 2];
    static float out[65536];
    for (uint32_t h = 0; h < 65536; h++) {
        data[2 * h] = (unsigned char)h;
        data[2 * h + 1] = (unsigned char)(h >> 8);
    }
    ef_st_tensor t = {"all_halves", EF_ST_F16, 1, {65536}, 65536, data, sizeof data};
    CHECK_OK(ef_st_tensor_to_f32(&t, out));
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        int e = (h >> 10) & 31, m = h & 1023;
        double sgn = (h & 0x8000) ? -1.0 : 1.0, want;
        if (e == 0) want = sgn * ldexp(m, -24);
        else if (e == 31) want = m ? NAN : sgn * INFINITY;
        else want = sgn * ldexp(1024 + m, e - 25);
        float got = out[h];
        int ok;
        if (e == 31 && m) ok = isnan(got) && (f2bits(got) & 0x007fe000u) == (uint32_t)m << 13 &&
                               (f2bits(got) >> 31) == (h >> 15);
        else ok = (double)got == want && !signbit(got) == !signbit(want);
        if (!ok && bad++ < 5) fprintf(stderr, "half 0x%04x -> %g, want %g\n", h, got, want);
    }
    CHECK(bad == 0);
    /* BF16 is the top half of a float. */
    unsigned char bf[4] = {0x80, 0x3f, 0x49, 0xc0}; /* 1.0, -3.140625 */
    ef_st_tensor tb = {"bf", EF_ST_BF16, 1, {2}, 2, bf, 4};
    float v[2];
    CHECK_OK(ef_st_tensor_to_f32(&tb, v));
    CHECK(v[0] == 1.0f && v[1] == -3.140625f);
}

/* ---- malformed files ------------------------------------------------------- */

/* Writes an 8-byte length (as given), the header text, then `data_len` bytes. */
static void write_st(const char *path, uint64_t hlen, const char *header, size_t data_len) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(hlen >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    for (size_t i = 0; i < data_len; i++) fputc((int)(i & 0xff), f);
    fclose(f);
}

static void write_hdr(const char *path, const char *header, size_t data_len) {
    write_st(path, strlen(header), header, data_len);
}

static void expect_open_fail(const char *name, ef_status want, const char *what) {
    const char *path = tpath(name);
    ef_safetensors *st = (ef_safetensors *)1;
    ef_status got = ef_safetensors_open(&st, path);
    const char *msg = ef_last_error();
    if (getenv("EF_TEST_VERBOSE")) printf("  expected failure: %s\n", msg);
    CHECK_MSG(got == want, "%s: got %s, want %s: %s", name, ef_strerror(got), ef_strerror(want),
              msg);
    CHECK(st == NULL);
    CHECK_MSG(strstr(msg, path) != NULL, "message does not name %s: %s", path, msg);
    CHECK_MSG(!what || strstr(msg, what), "%s: message lacks '%s': %s", name, what, msg);
    if (got == EF_OK) ef_safetensors_close(st);
}

#define T(name, spec) "\"" name "\":{\"dtype\":\"F32\",\"shape\":" spec "}"

static void test_malformed(void) {
    FILE *f = fopen(tpath("empty.st"), "wb");
    if (f) fclose(f);
    expect_open_fail("empty.st", EF_ERR_FORMAT, "too short");
    f = fopen(tpath("short.st"), "wb");
    if (f) {
        fwrite("\x02\0\0\0", 1, 4, f);
        fclose(f);
    }
    expect_open_fail("short.st", EF_ERR_FORMAT, "too short");
    expect_open_fail("missing.st", EF_ERR_IO, "No such file");
    write_st(tpath("hugehdr.st"), 200000000, "{}", 0);
    expect_open_fail("hugehdr.st", EF_ERR_FORMAT, "exceeds");
    write_st(tpath("hdrpastend.st"), 1000, "{}", 10);
    expect_open_fail("hdrpastend.st", EF_ERR_FORMAT, "past the end");
    write_st(tpath("maxhdr.st"), UINT64_MAX, "{}", 0);
    expect_open_fail("maxhdr.st", EF_ERR_FORMAT, "exceeds");

    /* Broken headers: file, header text, data bytes, status, message part. */
    static const struct {
        const char *file, *header;
        size_t data_len;
        ef_status want;
        const char *what;
    } cases[] = {
        {"notjson.st", "{not json at all}", 0, EF_ERR_FORMAT, "not valid JSON"},
        {"zerolen.st", "", 0, EF_ERR_FORMAT, "not valid JSON"},
        {"array.st", "[1, 2]", 0, EF_ERR_FORMAT, "not an object"},
        {"junk.st", "{}  x", 0, EF_ERR_FORMAT, "after the JSON"},
        {"utf8.st", "{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
         EF_ERR_FORMAT, "UTF-8"},
        {"overlong.st", "{\"\xc0\xaf\":{}}", 0, EF_ERR_FORMAT, "UTF-8"},
        {"range.st", "{" T("a", "[2],\"data_offsets\":[0,8]") "}", 4, EF_ERR_FORMAT,
         "outside the 4-byte data section"},
        {"backwards.st", "{" T("a", "[0],\"data_offsets\":[4,0]") "}", 4, EF_ERR_FORMAT, "outside"},
        {"overlap.st",
         "{" T("a", "[2],\"data_offsets\":[0,8]") "," T("b", "[2],\"data_offsets\":[4,12]") "}", 12,
         EF_ERR_FORMAT, "overlap"},
        {"same.st",
         "{" T("a", "[1],\"data_offsets\":[0,4]") "," T("b", "[1],\"data_offsets\":[0,4]") "}", 4,
         EF_ERR_FORMAT, "overlap"},
        {"hole.st",
         "{" T("a", "[1],\"data_offsets\":[0,4]") "," T("b", "[1],\"data_offsets\":[8,12]") "}", 12,
         EF_ERR_FORMAT, "hole"},
        {"uncovered.st", "{" T("a", "[1],\"data_offsets\":[0,4]") "}", 8, EF_ERR_FORMAT,
         "cover only 4"},
        {"nodata.st", "{}", 4, EF_ERR_FORMAT, "cover only 0"},
        {"gapfirst.st", "{" T("a", "[1],\"data_offsets\":[4,8]") "}", 8, EF_ERR_FORMAT, "hole"},
        {"dtype.st", "{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
         EF_ERR_FORMAT, "unknown dtype \"F33\""},
        {"dtype-u32.st", "{\"a\":{\"dtype\":\"U32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
         EF_ERR_UNSUPPORTED, "U32"},
        {"dtype-num.st", "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
         EF_ERR_FORMAT, "dtype"},
        {"nodtype.st", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, EF_ERR_FORMAT, "dtype"},
        {"mismatch.st", "{" T("w", "[3],\"data_offsets\":[0,8]") "}", 8, EF_ERR_FORMAT, "need 12"},
        {"negshape.st", "{" T("w", "[-1],\"data_offsets\":[0,0]") "}", 0, EF_ERR_FORMAT,
         "shape entry 0"},
        {"fracshape.st", "{" T("w", "[1.5],\"data_offsets\":[0,4]") "}", 4, EF_ERR_FORMAT,
         "shape entry 0"},
        {"strshape.st", "{" T("w", "[\"2\"],\"data_offsets\":[0,8]") "}", 8, EF_ERR_FORMAT,
         "shape entry 0"},
        {"ninedims.st", "{" T("w", "[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]") "}", 4,
         EF_ERR_FORMAT, "dimensions"},
        {"bigshape.st", "{" T("w", "[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]") "}",
         4, EF_ERR_FORMAT, "overflows"},
        {"noshape.st", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, EF_ERR_FORMAT,
         "shape"},
        {"nooffs.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, EF_ERR_FORMAT,
         "data_offsets"},
        {"threeoffs.st", "{" T("w", "[1],\"data_offsets\":[0,4,8]") "}", 4, EF_ERR_FORMAT,
         "data_offsets"},
        {"negoffs.st", "{" T("w", "[1],\"data_offsets\":[-4,0]") "}", 4, EF_ERR_FORMAT,
         "data_offsets"},
        {"notobj.st", "{\"w\":5}", 0, EF_ERR_FORMAT, "not an object"},
        {"dupname.st",
         "{" T("a", "[1],\"data_offsets\":[0,4]") "," T("a", "[1],\"data_offsets\":[4,8]") "}", 8,
         EF_ERR_FORMAT, "duplicate tensor name 'a'"},
        {"metaval.st", "{\"__metadata__\":{\"k\":1}}", 0, EF_ERR_FORMAT, "not a string"},
        {"metaobj.st", "{\"__metadata__\":[\"k\"]}", 0, EF_ERR_FORMAT, "__metadata__"},
        {"metadup.st", "{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, EF_ERR_FORMAT,
         "duplicate metadata key"},
        {"metatwice.st", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, EF_ERR_FORMAT,
         "duplicate \"__metadata__\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_hdr(tpath(cases[i].file), cases[i].header, cases[i].data_len);
        expect_open_fail(cases[i].file, cases[i].want, cases[i].what);
    }

    /* Truncated: a valid file missing its last bytes. */
    ef_params *p = make_params(N_LAYOUT, k_layout);
    if (p) {
        fill_values(p);
        CHECK_OK(ef_safetensors_save(tpath("full.st"), p, NULL, 0));
        struct stat sb;
        CHECK(stat(tpath("full.st"), &sb) == 0);
        CHECK(truncate(tpath("full.st"), sb.st_size - 4) == 0);
        expect_open_fail("full.st", EF_ERR_FORMAT, "outside");
        CHECK(truncate(tpath("full.st"), 40) == 0);
        expect_open_fail("full.st", EF_ERR_FORMAT, "past the end");
        ef_params_free(p);
    }

    /* Valid edge cases: no tensors; spaces and newlines after the JSON;
     * empty and zero-size tensors sharing an offset; unaligned data. */
    ef_safetensors *st = NULL;
    write_hdr(tpath("notensors.st"), "{}", 0);
    CHECK_OK(ef_safetensors_open(&st, tpath("notensors.st")));
    if (st) CHECK(ef_safetensors_count(st) == 0 && ef_safetensors_find(st, "a") == NULL);
    ef_safetensors_close(st);
    write_hdr(tpath("edge.st"),
              "{\"b\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[4,7]},"
              "\"z\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[4,4]},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
              "\"extra\":{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[7,8],\"x\":1}} \n ",
              8);
    CHECK_OK(ef_safetensors_open(&st, tpath("edge.st")));
    if (st) {
        CHECK(ef_safetensors_count(st) == 4);
        const char *order[4] = {"a", "z", "b", "extra"};
        for (size_t i = 0; i < 4 && i < ef_safetensors_count(st); i++)
            CHECK_MSG(strcmp(ef_safetensors_tensor(st, i)->name, order[i]) == 0, "%zu: %s", i,
                      ef_safetensors_tensor(st, i)->name);
        const ef_st_tensor *b = ef_safetensors_find(st, "b");
        CHECK(b && b->nbytes == 3 && ((const unsigned char *)b->data)[0] == 4);
    }
    ef_safetensors_close(st);
}

/* ---- load_params failure leaves params untouched ----------------------------- */

static int all_equal(ef_params *p, float v) {
    for (size_t i = 0; i < ef_params_numel(p); i++)
        if (ef_params_data(p)[i] != v) return 0;
    return 1;
}

static void test_load_params_errors(void) {
    ef_params *src = make_params(N_LAYOUT, k_layout);
    ef_params *dst = make_params(N_LAYOUT, k_layout);
    if (!src || !dst) return;
    fill_values(src);
    for (size_t i = 0; i < ef_params_numel(dst); i++) ef_params_data(dst)[i] = 42.0f;

    /* conv.w (the last tensor of dst) is absent; the others would load. */
    ef_params *three = make_params(3, k_layout);
    fill_values(three);
    CHECK_OK(ef_safetensors_save(tpath("three.st"), three, NULL, 0));
    ef_status st = ef_safetensors_load_params(tpath("three.st"), dst);
    CHECK(st == EF_ERR_NOT_FOUND);
    CHECK_MSG(strstr(ef_last_error(), "'conv.w'") && strstr(ef_last_error(), tpath("three.st")),
              "%s", ef_last_error());
    CHECK(all_equal(dst, 42.0f));
    ef_params_free(three);

    /* conv.w with another shape. */
    tdesc other[N_LAYOUT];
    memcpy(other, k_layout, sizeof other);
    other[3].shape[1] = 2;
    ef_params *wrong = make_params(N_LAYOUT, other);
    fill_values(wrong);
    CHECK_OK(ef_safetensors_save(tpath("wrong.st"), wrong, NULL, 0));
    st = ef_safetensors_load_params(tpath("wrong.st"), dst);
    CHECK(st == EF_ERR_FORMAT);
    CHECK_MSG(strstr(ef_last_error(), "'conv.w' has shape [2, 2, 3, 3], expected [2, 1, 3, 3]") &&
                  strstr(ef_last_error(), tpath("wrong.st")),
              "%s", ef_last_error());
    CHECK(all_equal(dst, 42.0f));
    ef_params_free(wrong);

    /* 0-d in params, [1] in the file: shapes must match exactly. */
    other[3] = k_layout[3];
    other[2].ndim = 1;
    other[2].shape[0] = 1;
    wrong = make_params(N_LAYOUT, other);
    CHECK_OK(ef_safetensors_save(tpath("scalar1.st"), wrong, NULL, 0));
    CHECK(ef_safetensors_load_params(tpath("scalar1.st"), dst) == EF_ERR_FORMAT);
    CHECK(all_equal(dst, 42.0f));
    ef_params_free(wrong);

    /* Malformed and missing files. */
    CHECK(ef_safetensors_load_params(tpath("overlap.st"), dst) == EF_ERR_FORMAT);
    CHECK(ef_safetensors_load_params(tpath("does-not-exist.st"), dst) == EF_ERR_IO);
    CHECK(all_equal(dst, 42.0f));

    /* And a good file does replace everything. */
    CHECK_OK(ef_safetensors_save(tpath("good.st"), src, NULL, 0));
    CHECK_OK(ef_safetensors_load_params(tpath("good.st"), dst));
    CHECK(memcmp(ef_params_data(dst), ef_params_data(src), ef_params_numel(src) * 4) == 0);
    ef_params_free(src);
    ef_params_free(dst);
}

/* ---- out of memory ----------------------------------------------------------- */

static long g_budget;
static void *oom_malloc(void *u, size_t n) {
    (void)u;
    return g_budget-- > 0 ? malloc(n) : NULL;
}
static void *oom_realloc(void *u, void *p, size_t n) {
    (void)u;
    return g_budget-- > 0 ? realloc(p, n) : NULL;
}
static void oom_free(void *u, void *p) {
    (void)u;
    free(p);
}

static void test_oom(void) {
    ef_params *p = make_params(N_LAYOUT, k_layout);
    if (!p) return;
    fill_values(p);
    ef_allocator a = {oom_malloc, oom_realloc, oom_free, NULL};
    int saved = 0, loaded = 0, opened = 0;
    for (long budget = 0; budget < 40 && !(saved && loaded && opened); budget++) {
        ef_set_allocator(&a);
        g_budget = budget;
        ef_status s1 = ef_safetensors_save(tpath("oom.st"), p, k_meta, N_META);
        g_budget = budget;
        ef_safetensors *st = NULL;
        ef_status s2 = ef_safetensors_open(&st, tpath("model.safetensors"));
        ef_safetensors_close(st);
        g_budget = budget;
        ef_status s3 = ef_safetensors_load_params(tpath("model.safetensors"), p);
        ef_set_allocator(NULL);
        CHECK(s1 == EF_OK || s1 == EF_ERR_NOMEM);
        CHECK(s2 == EF_OK || s2 == EF_ERR_NOMEM);
        CHECK(s3 == EF_OK || s3 == EF_ERR_NOMEM);
        saved |= s1 == EF_OK;
        opened |= s2 == EF_OK;
        loaded |= s3 == EF_OK;
    }
    CHECK(saved && opened && loaded);
    ef_params_free(p);
}

/* Tensors from separate buffers (ef_safetensors_save_views): read back
 * exactly, in order; bad names and shapes refused with nothing written. */
static void test_views(void) {
    float a[6] = {1, 2, 3, 4, 5, 6}, b[3] = {-1.5f, 0.25f, 1e-30f}, s = 42.0f;
    ef_st_view v[3] = {{"a", 2, {2, 3}, a}, {"opt.m", 1, {3}, b}, {"scalar", 0, {0}, &s}};
    ef_st_kv meta[1] = {{"k", "v"}};
    const char *path = tpath("views.safetensors");
    CHECK_OK(ef_safetensors_save_views(path, v, 3, meta, 1));
    ef_safetensors *st = NULL;
    CHECK_OK(ef_safetensors_open(&st, path));
    if (st) {
        CHECK(ef_safetensors_count(st) == 3);
        const ef_st_tensor *t = ef_safetensors_tensor(st, 0);
        CHECK(strcmp(t->name, "a") == 0 && t->ndim == 2 && t->shape[1] == 3);
        CHECK(memcmp(t->data, a, sizeof a) == 0);
        t = ef_safetensors_find(st, "opt.m");
        CHECK(t && t->numel == 3 && memcmp(t->data, b, sizeof b) == 0);
        t = ef_safetensors_find(st, "scalar");
        CHECK(t && t->ndim == 0 && t->numel == 1 && memcmp(t->data, &s, 4) == 0);
        CHECK(strcmp(ef_safetensors_meta(st, "k"), "v") == 0);
        ef_safetensors_close(st);
    }
    const char *bad = tpath("views-bad.safetensors");
    ef_st_view d[2] = {{"x", 1, {3}, b}, {"x", 1, {3}, b}};
    CHECK(ef_safetensors_save_views(bad, d, 2, NULL, 0) == EF_ERR_INVALID);
    d[1].name = "__metadata__";
    CHECK(ef_safetensors_save_views(bad, d, 2, NULL, 0) == EF_ERR_INVALID);
    d[1].name = "y", d[1].shape[0] = -1;
    CHECK(ef_safetensors_save_views(bad, d, 2, NULL, 0) != EF_OK);
    d[1].shape[0] = 3, d[1].data = NULL;
    CHECK(ef_safetensors_save_views(bad, d, 2, NULL, 0) == EF_ERR_INVALID);
    CHECK(access(bad, F_OK) != 0);
}

int main(void) {
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/edgefl-st-XXXXXX", tmp);
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_roundtrip();
    test_views();
    test_f16_all();
    test_malformed();
    test_load_params_errors();
    test_oom();
    if (python_has_torch()) {
        test_peer_reads_ours();
        test_we_read_peer();
    } else {
        printf("SKIPPED interop: %s cannot import torch and numpy "
               "(apt install python3-torch python3-numpy)\n", PYTHON);
    }
    tu_rmtree(g_dir);
    return tu_finish("io/test_safetensors");
}
