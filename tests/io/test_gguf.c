/*
 * Tests of the GGUF reader and writer (src/io/gguf.c):
 *   - write -> read round trip of every value type (scalars, arrays of each
 *     fixed-size type, arrays of strings with empty and NUL-holding strings),
 *     key replacement and removal, tensors of several ggml types and ranks,
 *     a tensor filled by callback, an empty tensor;
 *   - the exact bytes of a small file laid out by hand (header, padding,
 *     offsets, trailing padding, as ggml's writer does) and a custom
 *     general.alignment;
 *   - every validation error on crafted files, each with its status and a
 *     message naming the fault; every truncation of a valid file and every
 *     single-byte corruption refused cleanly or accepted consistently;
 *   - big counts: 200,000 strings and a 1,000,000-element array round trip;
 *     huge claimed counts refused before any allocation;
 *   - writer refusals and atomicity (a failing fill callback leaves the old
 *     file in place);
 *   - every allocation failure while opening, copying and writing gives
 *     EF_ERR_NOMEM, and the file finally written equals the source;
 *   - interop with tests/io/gguf_peer.py, an independent implementation in
 *     Python (skipped if /usr/bin/python3 is missing): it parses our files,
 *     we parse its files.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "edgefl/gguf.h"
#include "edgefl/io.h"
#include "test_util.h"

#define PYTHON "/usr/bin/python3"
#define PEER EF_SOURCE_DIR "/tests/io/gguf_peer.py"

static char g_dir[256];

static const char *tpath(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

/* ---- byte builder for crafted files ------------------------------------------ */

typedef struct bb {
    unsigned char *p;
    size_t n, cap;
} bb;

static void bb_put(bb *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void bb_u8(bb *b, unsigned v) {
    unsigned char c = (unsigned char)v;
    bb_put(b, &c, 1);
}
static void bb_u32(bb *b, uint32_t v) {
    unsigned char c[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    bb_put(b, c, 4);
}
static void bb_u64(bb *b, uint64_t v) {
    bb_u32(b, (uint32_t)v);
    bb_u32(b, (uint32_t)(v >> 32));
}
static void bb_strn(bb *b, const char *s, size_t n) {
    bb_u64(b, n);
    bb_put(b, s, n);
}
static void bb_str(bb *b, const char *s) { bb_strn(b, s, strlen(s)); }
static void bb_head(bb *b, uint32_t version, uint64_t n_t, uint64_t n_kv) {
    b->n = 0;
    bb_put(b, "GGUF", 4);
    bb_u32(b, version);
    bb_u64(b, n_t);
    bb_u64(b, n_kv);
}
static void bb_kv_u32(bb *b, const char *key, uint32_t v) {
    bb_str(b, key);
    bb_u32(b, EF_GGUF_UINT32);
    bb_u32(b, v);
}
static void bb_tinfo(bb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                     uint64_t off) {
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) bb_u64(b, ne[d]);
    bb_u32(b, type);
    bb_u64(b, off);
}
static void bb_pad(bb *b, size_t a) {
    while (b->n % a) bb_u8(b, 0);
}
static void bb_zeros(bb *b, size_t n) {
    for (size_t i = 0; i < n; i++) bb_u8(b, 0);
}

/* Opens b from memory and from a file; both must fail with `want` and a
 * message containing `needle` (and the file's name for the file path). */
static void expect_bad(const bb *b, ef_status want, const char *needle, const char *label) {
    ef_gguf *g = (ef_gguf *)1;
    ef_status st = ef_gguf_open_memory(&g, b->p, b->n, "crafted");
    CHECK_MSG(st == want, "%s: memory open gave %s (%s), want %s", label, ef_strerror(st),
              ef_last_error(), ef_strerror(want));
    CHECK_MSG(g == NULL, "%s: handle not NULL on failure", label);
    CHECK_MSG(strstr(ef_last_error(), needle) != NULL, "%s: message '%s' lacks '%s'", label,
              ef_last_error(), needle);
    ef_gguf_close(st == EF_OK ? g : NULL);
    const char *p = tpath("crafted.gguf");
    FILE *f = fopen(p, "wb");
    if (b->n) fwrite(b->p, 1, b->n, f);
    fclose(f);
    st = ef_gguf_open(&g, p);
    CHECK_MSG(st == want, "%s: file open gave %s (%s)", label, ef_strerror(st), ef_last_error());
    CHECK_MSG(strstr(ef_last_error(), needle) != NULL && strstr(ef_last_error(), p) != NULL,
              "%s: file message '%s' lacks '%s' or the path", label, ef_last_error(), needle);
    if (st == EF_OK) ef_gguf_close(g);
}

/* ---- round trip --------------------------------------------------------------- */

static ef_status fill_ramp(void *user, void *dst, size_t n) {
    unsigned char *d = dst;
    unsigned start = *(unsigned *)user;
    for (size_t i = 0; i < n; i++) d[i] = (unsigned char)(start + i);
    return EF_OK;
}

static ef_status fill_fail(void *user, void *dst, size_t n) {
    (void)user;
    (void)dst;
    (void)n;
    return EF_ERR_IO;
}

/* Data the round-trip tensors carry. */
static float g_f32[6] = {1.0f, -2.5f, 3.25f, 0.0f, -0.0f, 1e-40f};
static uint16_t g_f16[5];
static unsigned char g_q8[2 * 2 * 34];
static unsigned char g_q4[3 * 18];
static int32_t g_i32[7] = {1, -1, 2147483647, -2147483647 - 1, 0, 42, -42};
static unsigned char g_4d[2 * 3 * 1 * 2 * 4];

static ef_gguf_writer *build_writer(unsigned *fill_start) {
    ef_gguf_writer *w = NULL;
    CHECK_OK(ef_gguf_writer_new(&w));
    CHECK_OK(ef_gguf_set_str(w, "general.architecture", "llama"));
    CHECK_OK(ef_gguf_set_u8(w, "t.u8", 255));
    CHECK_OK(ef_gguf_set_i8(w, "t.i8", -128));
    CHECK_OK(ef_gguf_set_u16(w, "t.u16", 65535));
    CHECK_OK(ef_gguf_set_i16(w, "t.i16", -32768));
    CHECK_OK(ef_gguf_set_u32(w, "t.u32", 4000000000u));
    CHECK_OK(ef_gguf_set_i32(w, "t.i32", -2000000000));
    CHECK_OK(ef_gguf_set_f32(w, "t.f32", 1e-5f));
    CHECK_OK(ef_gguf_set_bool(w, "t.bool_t", true));
    CHECK_OK(ef_gguf_set_bool(w, "t.bool_f", false));
    CHECK_OK(ef_gguf_set_str(w, "t.str", "h\xc3\xa9llo \xe2\x82\xac"));
    CHECK_OK(ef_gguf_set_str(w, "t.empty", ""));
    CHECK_OK(ef_gguf_set_u64(w, "t.u64", UINT64_MAX));
    CHECK_OK(ef_gguf_set_i64(w, "t.i64", INT64_MIN));
    CHECK_OK(ef_gguf_set_f64(w, "t.f64", -1.0 / 3.0));
    CHECK_OK(ef_gguf_set_u32(w, "t.replaced", 1));
    const uint8_t a_u8[] = {0, 1, 255};
    const int8_t a_i8[] = {-128, 0, 127};
    const uint16_t a_u16[] = {0, 65535};
    const int16_t a_i16[] = {-32768, 32767, -1};
    const uint32_t a_u32[] = {0, 1, 4294967295u};
    const int32_t a_i32[] = {3, -3, 2147483647};
    const float a_f32[] = {0.5f, -1e30f, INFINITY};
    const bool a_bool[] = {true, false, true, true};
    const uint64_t a_u64[] = {UINT64_MAX, 0};
    const int64_t a_i64[] = {INT64_MIN, INT64_MAX, -5};
    const double a_f64[] = {1e300, -0.0};
    CHECK_OK(ef_gguf_set_arr(w, "a.u8", EF_GGUF_UINT8, a_u8, 3));
    CHECK_OK(ef_gguf_set_arr(w, "a.i8", EF_GGUF_INT8, a_i8, 3));
    CHECK_OK(ef_gguf_set_arr(w, "a.u16", EF_GGUF_UINT16, a_u16, 2));
    CHECK_OK(ef_gguf_set_arr(w, "a.i16", EF_GGUF_INT16, a_i16, 3));
    CHECK_OK(ef_gguf_set_arr(w, "a.u32", EF_GGUF_UINT32, a_u32, 3));
    CHECK_OK(ef_gguf_set_arr(w, "a.i32", EF_GGUF_INT32, a_i32, 3));
    CHECK_OK(ef_gguf_set_arr(w, "a.f32", EF_GGUF_FLOAT32, a_f32, 3));
    CHECK_OK(ef_gguf_set_arr(w, "a.bool", EF_GGUF_BOOL, a_bool, 4));
    CHECK_OK(ef_gguf_set_arr(w, "a.u64", EF_GGUF_UINT64, a_u64, 2));
    CHECK_OK(ef_gguf_set_arr(w, "a.i64", EF_GGUF_INT64, a_i64, 3));
    CHECK_OK(ef_gguf_set_arr(w, "a.f64", EF_GGUF_FLOAT64, a_f64, 2));
    CHECK_OK(ef_gguf_set_arr(w, "a.empty", EF_GGUF_INT32, NULL, 0));
    const char *strs[] = {"alpha", "", "g\xc4\xa0x", "nul\0inside"};
    const size_t lens[] = {5, 0, 4, 10};
    CHECK_OK(ef_gguf_set_arr_str(w, "a.str", strs, lens, 4));
    const char *plain[] = {"x y", "z"};
    CHECK_OK(ef_gguf_set_arr_str(w, "a.str_plain", plain, NULL, 2));
    CHECK_OK(ef_gguf_set_u32(w, "t.removed", 9));
    CHECK_OK(ef_gguf_set_str(w, "t.replaced", "now a string")); /* keeps its position */
    ef_gguf_remove_key(w, "t.removed");
    ef_gguf_remove_key(w, "t.never-there");

    for (int i = 0; i < 5; i++) g_f16[i] = ef_fp32_to_fp16((float)i - 1.5f);
    for (size_t i = 0; i < sizeof g_q8; i++) g_q8[i] = (unsigned char)(i * 7 + 3);
    for (size_t i = 0; i < sizeof g_q4; i++) g_q4[i] = (unsigned char)(i * 13 + 1);
    for (size_t i = 0; i < sizeof g_4d; i++) g_4d[i] = (unsigned char)(255 - i);
    const int64_t ne_f32[] = {3, 2}, ne_f16[] = {5}, ne_q8[] = {64, 2}, ne_q4[] = {32, 3},
                  ne_i32[] = {7}, ne_empty[] = {0, 4}, ne_4d[] = {2, 3, 1, 2}, ne_fill[] = {10};
    CHECK_OK(ef_gguf_add_tensor(w, "w.f32", EF_GGML_F32, 2, ne_f32, g_f32, sizeof g_f32));
    CHECK_OK(ef_gguf_add_tensor(w, "w.f16", EF_GGML_F16, 1, ne_f16, g_f16, sizeof g_f16));
    CHECK_OK(ef_gguf_add_tensor(w, "w.q8_0", EF_GGML_Q8_0, 2, ne_q8, g_q8, sizeof g_q8));
    CHECK_OK(ef_gguf_add_tensor(w, "w.empty", EF_GGML_F32, 2, ne_empty, NULL, 0));
    CHECK_OK(ef_gguf_add_tensor(w, "w.q4_0", EF_GGML_Q4_0, 2, ne_q4, g_q4, sizeof g_q4));
    CHECK_OK(ef_gguf_add_tensor(w, "w.i32", EF_GGML_I32, 1, ne_i32, g_i32, sizeof g_i32));
    CHECK_OK(ef_gguf_add_tensor(w, "w.4d", EF_GGML_F32, 4, ne_4d, g_4d, sizeof g_4d));
    CHECK_OK(ef_gguf_add_tensor_fn(w, "w.fill", EF_GGML_I8, 1, ne_fill, 10, fill_ramp,
                                   fill_start));
    return w;
}

static void check_round_trip(const ef_gguf *g) {
    uint8_t u8v;
    (void)u8v;
    int64_t iv;
    uint64_t uv;
    double dv;
    bool b;
    const char *s;
    size_t len;
    uint32_t u32;
    int32_t i32;
    float f;
    CHECK(ef_gguf_version(g) == 3);
    CHECK(ef_gguf_alignment(g) == 32);
    CHECK(ef_gguf_data_offset(g) % 32 == 0);
    CHECK_OK(ef_gguf_get_str(g, "general.architecture", &s, &len));
    CHECK(strcmp(s, "llama") == 0 && len == 5);
    CHECK_OK(ef_gguf_get_int(g, "t.u8", &iv));
    CHECK(iv == 255);
    CHECK_OK(ef_gguf_get_int(g, "t.i8", &iv));
    CHECK(iv == -128);
    CHECK_OK(ef_gguf_get_int(g, "t.u16", &iv));
    CHECK(iv == 65535);
    CHECK_OK(ef_gguf_get_int(g, "t.i16", &iv));
    CHECK(iv == -32768);
    CHECK_OK(ef_gguf_get_u32(g, "t.u32", &u32));
    CHECK(u32 == 4000000000u);
    CHECK_OK(ef_gguf_get_i32(g, "t.i32", &i32));
    CHECK(i32 == -2000000000);
    CHECK_OK(ef_gguf_get_f32(g, "t.f32", &f));
    CHECK(f == 1e-5f);
    CHECK_OK(ef_gguf_get_bool(g, "t.bool_t", &b));
    CHECK(b == true);
    CHECK_OK(ef_gguf_get_bool(g, "t.bool_f", &b));
    CHECK(b == false);
    CHECK_OK(ef_gguf_get_str(g, "t.str", &s, &len));
    CHECK(strcmp(s, "h\xc3\xa9llo \xe2\x82\xac") == 0 && len == 10);
    CHECK_OK(ef_gguf_get_str(g, "t.empty", &s, NULL));
    CHECK(s[0] == '\0');
    CHECK_OK(ef_gguf_get_u64(g, "t.u64", &uv));
    CHECK(uv == UINT64_MAX);
    CHECK(ef_gguf_get_int(g, "t.u64", &iv) == EF_ERR_RANGE);
    CHECK_OK(ef_gguf_get_int(g, "t.i64", &iv));
    CHECK(iv == INT64_MIN);
    int64_t k = ef_gguf_find_key(g, "t.f64");
    CHECK(k >= 0);
    CHECK_OK(ef_gguf_kv_float(g, (size_t)k, 0, &dv));
    CHECK(dv == -1.0 / 3.0);
    CHECK_OK(ef_gguf_get_str(g, "t.replaced", &s, NULL));
    CHECK(strcmp(s, "now a string") == 0);
    CHECK(ef_gguf_find_key(g, "t.removed") == -1);

    /* file order: first-set order, replaced key in its original place */
    const char *order[] = {"general.architecture", "t.u8", "t.i8", "t.u16", "t.i16", "t.u32",
                           "t.i32", "t.f32", "t.bool_t", "t.bool_f", "t.str", "t.empty",
                           "t.u64", "t.i64", "t.f64", "t.replaced", "a.u8"};
    CHECK(ef_gguf_kv_count(g) == 30);
    for (size_t i = 0; i < sizeof order / sizeof *order; i++)
        CHECK_MSG(strcmp(ef_gguf_kv_at(g, i)->key, order[i]) == 0, "key %zu is %s, want %s", i,
                  ef_gguf_kv_at(g, i)->key, order[i]);
    CHECK(ef_gguf_kv_at(g, 30) == NULL);
    const ef_gguf_kv *kv = ef_gguf_kv_at(g, (size_t)ef_gguf_find_key(g, "t.replaced"));
    CHECK(kv->type == EF_GGUF_STRING && kv->elem_type == EF_GGUF_STRING && kv->n == 1);

    /* typed getters refuse other types with a message naming both */
    CHECK(ef_gguf_get_u32(g, "t.i32", &u32) == EF_ERR_FORMAT);
    CHECK(strstr(ef_last_error(), "'t.i32' is i32, expected u32") != NULL);
    CHECK(ef_gguf_get_str(g, "t.u8", &s, NULL) == EF_ERR_FORMAT);
    CHECK(ef_gguf_get_u32(g, "a.u32", &u32) == EF_ERR_FORMAT);
    CHECK(strstr(ef_last_error(), "an array of u32") != NULL);
    CHECK(ef_gguf_get_int(g, "t.f32", &iv) == EF_ERR_FORMAT);
    CHECK(ef_gguf_get_u32(g, "no.such", &u32) == EF_ERR_NOT_FOUND);
    CHECK(strstr(ef_last_error(), "no.such") != NULL);
    CHECK(ef_gguf_get_arr(g, "t.u32", NULL, NULL) == EF_ERR_FORMAT);

    /* arrays */
    ef_gguf_type et;
    uint64_t n;
    CHECK_OK(ef_gguf_get_arr(g, "a.str", &et, &n));
    CHECK(et == EF_GGUF_STRING && n == 4);
    CHECK_OK(ef_gguf_get_arr_str(g, "a.str", 0, &s, &len));
    CHECK(strcmp(s, "alpha") == 0 && len == 5);
    CHECK_OK(ef_gguf_get_arr_str(g, "a.str", 1, &s, &len));
    CHECK(len == 0 && s[0] == '\0');
    CHECK_OK(ef_gguf_get_arr_str(g, "a.str", 2, &s, &len));
    CHECK(strcmp(s, "g\xc4\xa0x") == 0);
    CHECK_OK(ef_gguf_get_arr_str(g, "a.str", 3, &s, &len));
    CHECK(len == 10 && memcmp(s, "nul\0inside", 10) == 0 && s[10] == '\0');
    CHECK(ef_gguf_get_arr_str(g, "a.str", 4, &s, &len) == EF_ERR_INVALID);
    CHECK_OK(ef_gguf_get_arr_str(g, "a.str_plain", 0, &s, NULL));
    CHECK(strcmp(s, "x y") == 0);
    int64_t out[4];
    CHECK_OK(ef_gguf_get_arr_int(g, "a.i8", out, 3));
    CHECK(out[0] == -128 && out[1] == 0 && out[2] == 127);
    CHECK_OK(ef_gguf_get_arr_int(g, "a.u8", out, 3));
    CHECK(out[2] == 255);
    CHECK_OK(ef_gguf_get_arr_int(g, "a.u16", out, 2));
    CHECK(out[1] == 65535);
    CHECK_OK(ef_gguf_get_arr_int(g, "a.i16", out, 3));
    CHECK(out[0] == -32768 && out[2] == -1);
    CHECK_OK(ef_gguf_get_arr_int(g, "a.u32", out, 3));
    CHECK(out[2] == 4294967295ll);
    CHECK_OK(ef_gguf_get_arr_int(g, "a.i32", out, 3));
    CHECK(out[0] == 3 && out[1] == -3 && out[2] == 2147483647);
    CHECK_OK(ef_gguf_get_arr_int(g, "a.i64", out, 3));
    CHECK(out[0] == INT64_MIN && out[1] == INT64_MAX && out[2] == -5);
    CHECK(ef_gguf_get_arr_int(g, "a.u64", out, 2) == EF_ERR_RANGE);
    CHECK(ef_gguf_get_arr_int(g, "a.i32", out, 2) == EF_ERR_RANGE); /* wrong length */
    CHECK(ef_gguf_get_arr_int(g, "a.f32", out, 3) == EF_ERR_FORMAT);
    CHECK(ef_gguf_get_arr_int(g, "a.str", out, 4) == EF_ERR_FORMAT);
    CHECK_OK(ef_gguf_get_arr(g, "a.empty", &et, &n));
    CHECK(et == EF_GGUF_INT32 && n == 0);
    size_t ka = (size_t)ef_gguf_find_key(g, "a.u64");
    CHECK_OK(ef_gguf_kv_uint(g, ka, 0, &uv));
    CHECK(uv == UINT64_MAX);
    size_t kf = (size_t)ef_gguf_find_key(g, "a.f32");
    CHECK_OK(ef_gguf_kv_float(g, kf, 1, &dv));
    CHECK(dv == (double)-1e30f);
    CHECK_OK(ef_gguf_kv_float(g, kf, 2, &dv));
    CHECK(isinf(dv));
    size_t kd = (size_t)ef_gguf_find_key(g, "a.f64");
    CHECK_OK(ef_gguf_kv_float(g, kd, 0, &dv));
    CHECK(dv == 1e300);
    CHECK_OK(ef_gguf_kv_float(g, kd, 1, &dv));
    CHECK(dv == 0.0 && signbit(dv));
    size_t kb = (size_t)ef_gguf_find_key(g, "a.bool");
    bool bs[4];
    for (int i = 0; i < 4; i++) CHECK_OK(ef_gguf_kv_bool(g, kb, (uint64_t)i, &bs[i]));
    CHECK(bs[0] && !bs[1] && bs[2] && bs[3]);
    CHECK(ef_gguf_kv_bool(g, kb, 4, &b) == EF_ERR_INVALID);
    size_t ki = (size_t)ef_gguf_find_key(g, "a.i16");
    CHECK(ef_gguf_kv_uint(g, ki, 0, &uv) == EF_ERR_RANGE); /* negative */
    CHECK(ef_gguf_kv_int(g, 1000, 0, &iv) == EF_ERR_INVALID);

    /* tensors */
    CHECK(ef_gguf_tensor_count(g) == 8);
    const char *tnames[] = {"w.f32", "w.f16", "w.q8_0", "w.empty", "w.q4_0", "w.i32", "w.4d", "w.fill"};
    uint64_t prev_end = 0;
    for (size_t i = 0; i < 8; i++) {
        const ef_gguf_tensor *t = ef_gguf_tensor_at(g, i);
        CHECK(strcmp(t->name, tnames[i]) == 0);
        CHECK(ef_gguf_find_tensor(g, tnames[i]) == t);
        CHECK(t->offset % 32 == 0);
        /* ggml's layout: each tensor right after the previous one, padded */
        CHECK_MSG(t->offset == prev_end, "tensor %s at %llu, expected %llu", t->name,
                  (unsigned long long)t->offset, (unsigned long long)prev_end);
        prev_end = t->offset + (t->nbytes + 31) / 32 * 32;
    }
    CHECK(ef_gguf_tensor_at(g, 8) == NULL && ef_gguf_find_tensor(g, "nope") == NULL);
    CHECK(ef_gguf_file_size(g) == ef_gguf_data_offset(g) + prev_end);
    const ef_gguf_tensor *t = ef_gguf_find_tensor(g, "w.f32");
    CHECK(t->type == EF_GGML_F32 && t->n_dims == 2 && t->ne[0] == 3 && t->ne[1] == 2 &&
          t->ne[2] == 1 && t->ne[3] == 1 && t->n_elements == 6 && t->nbytes == 24);
    CHECK(memcmp(t->data, g_f32, 24) == 0);
    t = ef_gguf_find_tensor(g, "w.f16");
    CHECK(t->type == EF_GGML_F16 && t->nbytes == 10 && memcmp(t->data, g_f16, 10) == 0);
    t = ef_gguf_find_tensor(g, "w.q8_0");
    CHECK(t->type == EF_GGML_Q8_0 && t->nbytes == sizeof g_q8 &&
          memcmp(t->data, g_q8, sizeof g_q8) == 0);
    CHECK(((uintptr_t)t->data % 2) == 0); /* blocks can be read in place */
    t = ef_gguf_find_tensor(g, "w.q4_0");
    CHECK(t->ne[0] == 32 && t->ne[1] == 3 && t->nbytes == 54 && memcmp(t->data, g_q4, 54) == 0);
    t = ef_gguf_find_tensor(g, "w.empty");
    CHECK(t->nbytes == 0 && t->n_elements == 0 && t->ne[0] == 0 && t->ne[1] == 4);
    t = ef_gguf_find_tensor(g, "w.i32");
    CHECK(t->type == EF_GGML_I32 && memcmp(t->data, g_i32, sizeof g_i32) == 0);
    t = ef_gguf_find_tensor(g, "w.4d");
    CHECK(t->n_dims == 4 && t->ne[3] == 2 && t->n_elements == 12 && t->nbytes == 48 &&
          memcmp(t->data, g_4d, 48) == 0);
    t = ef_gguf_find_tensor(g, "w.fill");
    int ramp_ok = t->nbytes == 10;
    for (size_t i = 0; ramp_ok && i < 10; i++)
        ramp_ok = ((const unsigned char *)t->data)[i] == (unsigned char)(100 + i);
    CHECK(ramp_ok);
}

static void test_round_trip(void) {
    unsigned start = 100;
    ef_gguf_writer *w = build_writer(&start);
    const char *p = tpath("rt.gguf");
    CHECK_OK(ef_gguf_writer_write(w, p));
    uint64_t size;
    CHECK_OK(ef_gguf_writer_size(w, &size));
    struct stat sb;
    CHECK(stat(p, &sb) == 0 && (uint64_t)sb.st_size == size);
    CHECK(ef_gguf_writer_tensor_count(w) == 8);
    ef_gguf *g = NULL;
    CHECK_OK(ef_gguf_open(&g, p));
    if (g) check_round_trip(g);

    /* the same bytes read from memory */
    char *buf = NULL;
    size_t len = 0;
    CHECK_OK(ef_read_file(p, 0, &buf, &len));
    ef_gguf *gm = NULL;
    CHECK_OK(ef_gguf_open_memory(&gm, buf, len, "mem"));
    if (gm) check_round_trip(gm);
    ef_gguf_close(gm);

    /* copying every entry into a new writer reproduces the metadata bytes */
    ef_gguf_writer *w2 = NULL;
    CHECK_OK(ef_gguf_writer_new(&w2));
    for (size_t i = 0; g && i < ef_gguf_kv_count(g); i++) CHECK_OK(ef_gguf_copy_kv(w2, g, i));
    const char *p2 = tpath("copy.gguf");
    CHECK_OK(ef_gguf_writer_write(w2, p2));
    char *buf2 = NULL;
    size_t len2 = 0;
    CHECK_OK(ef_read_file(p2, 0, &buf2, &len2));
    /* same metadata; the tensor count (bytes 8..15) and infos differ */
    ef_gguf *g2 = NULL;
    CHECK_OK(ef_gguf_open(&g2, p2));
    size_t meta_end = 24;
    if (g2) {
        /* header without tensors: metadata runs to the padding */
        meta_end = len2;
        while (meta_end > 24 && buf2[meta_end - 1] == 0) meta_end--;
        CHECK(len2 >= 24 && memcmp(buf + 16, buf2 + 16, meta_end - 16) == 0);
        CHECK(ef_gguf_kv_count(g2) == ef_gguf_kv_count(g) && ef_gguf_tensor_count(g2) == 0);
    }
    ef_gguf_close(g2);
    ef_gguf_writer_free(w2);
    ef_free(buf);
    ef_free(buf2);
    ef_gguf_close(g);
    ef_gguf_writer_free(w);
}

/* ---- exact layout -------------------------------------------------------------- */

static void test_exact_bytes(void) {
    ef_gguf_writer *w = NULL;
    CHECK_OK(ef_gguf_writer_new(&w));
    CHECK_OK(ef_gguf_set_u32(w, "k", 7));
    const float d[3] = {1.0f, 2.0f, 3.0f};
    const int64_t ne[] = {3};
    CHECK_OK(ef_gguf_add_tensor(w, "t", EF_GGML_F32, 1, ne, d, 12));
    const char *p = tpath("exact.gguf");
    CHECK_OK(ef_gguf_writer_write(w, p));
    bb want = {0};
    bb_head(&want, 3, 1, 1);
    bb_kv_u32(&want, "k", 7);
    const uint64_t une[] = {3};
    bb_tinfo(&want, "t", 1, une, EF_GGML_F32, 0);
    bb_pad(&want, 32);  /* 24 + 17 + 33 = 74 -> 96 */
    CHECK(want.n == 96);
    bb_put(&want, d, 12);
    bb_pad(&want, 32);  /* the last tensor is padded too, as ggml does */
    char *buf = NULL;
    size_t len = 0;
    CHECK_OK(ef_read_file(p, 0, &buf, &len));
    CHECK_MSG(len == want.n && memcmp(buf, want.p, len) == 0, "file (%zu bytes) differs from the "
              "hand layout (%zu bytes)", len, want.n);
    ef_free(buf);

    /* general.alignment 64: data section and offsets move to multiples of 64 */
    CHECK_OK(ef_gguf_set_u32(w, "general.alignment", 64));
    const int64_t ne2[] = {5};
    const float d2[5] = {9, 8, 7, 6, 5};
    CHECK_OK(ef_gguf_add_tensor(w, "t2", EF_GGML_F32, 1, ne2, d2, 20));
    CHECK_OK(ef_gguf_writer_write(w, p));
    ef_gguf *g = NULL;
    CHECK_OK(ef_gguf_open(&g, p));
    if (g) {
        CHECK(ef_gguf_alignment(g) == 64);
        CHECK(ef_gguf_data_offset(g) % 64 == 0);
        CHECK(ef_gguf_find_tensor(g, "t2")->offset == 64);
        CHECK(ef_gguf_file_size(g) == ef_gguf_data_offset(g) + 128);
        CHECK(memcmp(ef_gguf_find_tensor(g, "t2")->data, d2, 20) == 0);
        ef_gguf_close(g);
    }
    /* alignment must be a u32 power of two */
    CHECK(ef_gguf_set_u32(w, "general.alignment", 48) == EF_ERR_INVALID);
    CHECK(ef_gguf_set_u32(w, "general.alignment", 0) == EF_ERR_INVALID);
    CHECK(ef_gguf_set_u64(w, "general.alignment", 64) == EF_ERR_INVALID);
    CHECK(ef_gguf_set_str(w, "general.alignment", "64") == EF_ERR_INVALID);
    ef_gguf_remove_key(w, "general.alignment");
    CHECK_OK(ef_gguf_writer_write(w, p));
    CHECK_OK(ef_gguf_open(&g, p));
    if (g) {
        CHECK(ef_gguf_alignment(g) == 32 && ef_gguf_find_tensor(g, "t2")->offset == 32);
        ef_gguf_close(g);
    }
    free(want.p);
    ef_gguf_writer_free(w);
}

/* ---- writer refusals and atomicity ---------------------------------------------- */

static void test_writer_errors(void) {
    ef_gguf_writer *w = NULL;
    CHECK_OK(ef_gguf_writer_new(&w));
    float x[64] = {0};
    int64_t ne[2] = {32, 2};
    CHECK(ef_gguf_set_u32(w, "", 1) == EF_ERR_INVALID);
    CHECK(ef_gguf_set_str(w, "k", NULL) == EF_ERR_INVALID);
    CHECK(ef_gguf_set_arr(w, "k", EF_GGUF_STRING, x, 1) == EF_ERR_INVALID);
    CHECK(ef_gguf_set_arr(w, "k", EF_GGUF_ARRAY, x, 1) == EF_ERR_INVALID);
    CHECK(ef_gguf_set_arr(w, "k", (ef_gguf_type)42, x, 1) == EF_ERR_INVALID);
    CHECK(ef_gguf_add_tensor(w, "", EF_GGML_F32, 2, ne, x, 256) == EF_ERR_INVALID);
    char longname[80];
    memset(longname, 'a', 64);
    longname[64] = '\0';
    CHECK(ef_gguf_add_tensor(w, longname, EF_GGML_F32, 2, ne, x, 256) == EF_ERR_INVALID);
    longname[63] = '\0';
    CHECK_OK(ef_gguf_add_tensor(w, longname, EF_GGML_F32, 2, ne, x, 256)); /* 63 is fine */
    CHECK(ef_gguf_add_tensor(w, longname, EF_GGML_F32, 2, ne, x, 256) == EF_ERR_INVALID);
    CHECK(strstr(ef_last_error(), "duplicate") != NULL);
    CHECK(ef_gguf_add_tensor(w, "b", EF_GGML_F32, 2, ne, x, 255) == EF_ERR_INVALID);
    CHECK(strstr(ef_last_error(), "need 256") != NULL);
    CHECK(ef_gguf_add_tensor(w, "b", 4, 2, ne, x, 256) == EF_ERR_INVALID);
    CHECK(ef_gguf_add_tensor(w, "b", EF_GGML_F32, 0, ne, x, 256) == EF_ERR_INVALID);
    CHECK(ef_gguf_add_tensor(w, "b", EF_GGML_F32, 5, ne, x, 256) == EF_ERR_INVALID);
    int64_t odd[2] = {33, 1};
    CHECK(ef_gguf_add_tensor(w, "b", EF_GGML_Q8_0, 2, odd, x, 34) == EF_ERR_INVALID);
    CHECK(strstr(ef_last_error(), "multiple") != NULL);
    int64_t neg[2] = {32, -1};
    CHECK(ef_gguf_add_tensor(w, "b", EF_GGML_F32, 2, neg, x, 0) == EF_ERR_INVALID);
    CHECK(ef_gguf_add_tensor(w, "b", EF_GGML_F32, 2, ne, NULL, 256) == EF_ERR_INVALID);
    CHECK(ef_gguf_add_tensor_fn(w, "b", EF_GGML_F32, 2, ne, 256, NULL, NULL) == EF_ERR_INVALID);
    CHECK(ef_gguf_writer_tensor_count(w) == 1);

    /* a failing fill callback aborts the write; the old file stays */
    const char *p = tpath("atomic.gguf");
    CHECK_OK(ef_gguf_writer_write(w, p));
    char *before = NULL, *after = NULL;
    size_t nb = 0, na = 0;
    CHECK_OK(ef_read_file(p, 0, &before, &nb));
    CHECK_OK(ef_gguf_add_tensor_fn(w, "c", EF_GGML_F32, 2, ne, 256, fill_fail, NULL));
    CHECK(ef_gguf_writer_write(w, p) == EF_ERR_IO);
    CHECK_OK(ef_read_file(p, 0, &after, &na));
    CHECK(nb == na && memcmp(before, after, nb) == 0);
    /* no temporary file left behind */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c tmp > /dev/null", g_dir);
    CHECK(system(cmd) != 0);
    CHECK(ef_gguf_writer_write(w, "/nonexistent-dir/x.gguf") == EF_ERR_IO);
    ef_free(before);
    ef_free(after);
    ef_gguf_writer_free(w);
}

/* ---- validation on crafted files -------------------------------------------------- */

/* A valid file: one u32 key, `n_t` F32 tensors of 8 floats each. */
static void make_valid(bb *b) {
    const uint64_t ne[] = {8};
    bb_head(b, 3, 2, 2);
    bb_kv_u32(b, "a", 1);
    bb_str(b, "s");
    bb_u32(b, EF_GGUF_STRING);
    bb_str(b, "text");
    bb_tinfo(b, "x", 1, ne, EF_GGML_F32, 0);
    bb_tinfo(b, "y", 1, ne, EF_GGML_F32, 32);
    bb_pad(b, 32);
    for (int i = 0; i < 16; i++) {
        float f = (float)i;
        bb_put(b, &f, 4);
    }
}

static void test_crafted(void) {
    bb b = {0};
    const uint64_t ne8[] = {8}, ne2[] = {8, 2};

    make_valid(&b);
    ef_gguf *g = NULL;
    CHECK_OK(ef_gguf_open_memory(&g, b.p, b.n, "valid"));
    if (g) {
        CHECK(ef_gguf_tensor_count(g) == 2 && ef_gguf_kv_count(g) == 2);
        CHECK(((const float *)ef_gguf_find_tensor(g, "y")->data)[7] == 15.0f);
        ef_gguf_close(g);
    }

    /* header */
    b.n = 0;
    expect_bad(&b, EF_ERR_FORMAT, "too short", "empty file");
    bb_put(&b, "GGU", 3);
    expect_bad(&b, EF_ERR_FORMAT, "too short", "3 bytes");
    b.n = 0;
    bb_put(&b, "GGML", 4);
    bb_zeros(&b, 20);
    expect_bad(&b, EF_ERR_FORMAT, "magic 'GGML'", "bad magic");
    bb_head(&b, 3, 0, 0);
    b.n = 10;
    expect_bad(&b, EF_ERR_FORMAT, "truncated", "truncated header");
    bb_head(&b, 0, 0, 0);
    expect_bad(&b, EF_ERR_FORMAT, "version 0", "version 0");
    bb_head(&b, 1, 0, 0);
    expect_bad(&b, EF_ERR_UNSUPPORTED, "version 1", "version 1");
    bb_head(&b, 4, 0, 0);
    expect_bad(&b, EF_ERR_UNSUPPORTED, "version 4", "version 4");
    bb_head(&b, 0x03000000u, 0, 0);
    expect_bad(&b, EF_ERR_UNSUPPORTED, "big-endian", "big-endian");
    bb_head(&b, 2, 0, 0);
    g = NULL;
    CHECK_OK(ef_gguf_open_memory(&g, b.p, b.n, "v2-empty"));
    if (g) {
        CHECK(ef_gguf_version(g) == 2 && ef_gguf_kv_count(g) == 0 && ef_gguf_tensor_count(g) == 0);
        ef_gguf_close(g);
    }

    /* counts that cannot fit: refused before allocating anything */
    bb_head(&b, 3, 0, (uint64_t)1 << 62);
    expect_bad(&b, EF_ERR_FORMAT, "key/value pairs", "huge kv count");
    bb_head(&b, 3, UINT64_MAX, 0);
    expect_bad(&b, EF_ERR_FORMAT, "tensors", "huge tensor count");
    bb_head(&b, 3, 1000, 1);
    bb_kv_u32(&b, "a", 1);
    bb_zeros(&b, 2000);
    expect_bad(&b, EF_ERR_FORMAT, "1000 tensors", "tensor count beyond the file");

    /* keys */
    bb_head(&b, 3, 0, 1);
    bb_u64(&b, (uint64_t)1 << 40);
    bb_put(&b, "abc", 3);
    bb_zeros(&b, 16);
    expect_bad(&b, EF_ERR_FORMAT, "string length 1099511627776", "key length past the end");
    bb_head(&b, 3, 0, 1);
    bb_str(&b, "");
    bb_u32(&b, EF_GGUF_UINT8);
    bb_u8(&b, 1);
    bb_zeros(&b, 8);
    expect_bad(&b, EF_ERR_FORMAT, "key 0 at byte 24 is empty", "empty key");
    bb_head(&b, 3, 0, 1);
    bb_strn(&b, "a\0b", 3);
    bb_u32(&b, EF_GGUF_UINT8);
    bb_u8(&b, 1);
    expect_bad(&b, EF_ERR_FORMAT, "NUL", "NUL in key");
    bb_head(&b, 3, 0, 2);
    bb_kv_u32(&b, "dup", 1);
    bb_kv_u32(&b, "dup", 2);
    expect_bad(&b, EF_ERR_FORMAT, "duplicate key 'dup'", "duplicate key");

    /* value types */
    bb_head(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, 13);
    bb_u32(&b, 0);
    expect_bad(&b, EF_ERR_FORMAT, "unknown value type 13", "unknown type");
    bb_head(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, EF_GGUF_ARRAY);
    bb_u32(&b, EF_GGUF_ARRAY);
    bb_u64(&b, 1);
    bb_zeros(&b, 16);
    expect_bad(&b, EF_ERR_UNSUPPORTED, "nested arrays", "nested array");
    bb_head(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, EF_GGUF_ARRAY);
    bb_u32(&b, 99);
    bb_u64(&b, 0);
    expect_bad(&b, EF_ERR_FORMAT, "unknown value type 99", "bad array element type");
    bb_head(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, EF_GGUF_ARRAY);
    bb_u32(&b, EF_GGUF_UINT64);
    bb_u64(&b, (uint64_t)1 << 61); /* 2^61 * 8 overflows 64 bits */
    bb_zeros(&b, 64);
    expect_bad(&b, EF_ERR_FORMAT, "run past the end", "huge fixed array");
    bb_head(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, EF_GGUF_ARRAY);
    bb_u32(&b, EF_GGUF_STRING);
    bb_u64(&b, (uint64_t)1 << 50);
    bb_zeros(&b, 64);
    expect_bad(&b, EF_ERR_FORMAT, "strings cannot fit", "huge string array");
    bb_head(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, EF_GGUF_ARRAY);
    bb_u32(&b, EF_GGUF_STRING);
    bb_u64(&b, 2);
    bb_str(&b, "ok");
    bb_u64(&b, 500);
    bb_put(&b, "short", 5);
    expect_bad(&b, EF_ERR_FORMAT, "string length 500", "string in array past the end");
    bb_head(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, EF_GGUF_UINT32);
    bb_u8(&b, 1);
    expect_bad(&b, EF_ERR_FORMAT, "run past the end", "truncated scalar");
    bb_head(&b, 3, 0, 1);
    bb_str(&b, "flag");
    bb_u32(&b, EF_GGUF_BOOL);
    bb_u8(&b, 2);
    expect_bad(&b, EF_ERR_FORMAT, "bool value 0 at byte", "bool 2");
    bb_head(&b, 3, 0, 1);
    bb_str(&b, "flags");
    bb_u32(&b, EF_GGUF_ARRAY);
    bb_u32(&b, EF_GGUF_BOOL);
    bb_u64(&b, 3);
    bb_u8(&b, 1);
    bb_u8(&b, 0);
    bb_u8(&b, 255);
    expect_bad(&b, EF_ERR_FORMAT, "bool value 2", "bool 255 in array");

    /* general.alignment */
    bb_head(&b, 3, 0, 1);
    bb_str(&b, "general.alignment");
    bb_u32(&b, EF_GGUF_UINT8);
    bb_u8(&b, 32);
    expect_bad(&b, EF_ERR_FORMAT, "general.alignment is u8, must be u32", "alignment type");
    bb_head(&b, 3, 0, 1);
    bb_kv_u32(&b, "general.alignment", 48);
    expect_bad(&b, EF_ERR_FORMAT, "not a power of two", "alignment 48");
    bb_head(&b, 3, 0, 1);
    bb_kv_u32(&b, "general.alignment", 0);
    expect_bad(&b, EF_ERR_FORMAT, "not a power of two", "alignment 0");

    /* tensor infos */
    bb_head(&b, 3, 1, 0);
    bb_tinfo(&b, "", 1, ne8, EF_GGML_F32, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 32);
    expect_bad(&b, EF_ERR_FORMAT, "name is 0 bytes", "empty tensor name");
    char name64[65];
    memset(name64, 'n', 64);
    name64[64] = '\0';
    bb_head(&b, 3, 1, 0);
    bb_tinfo(&b, name64, 1, ne8, EF_GGML_F32, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 32);
    expect_bad(&b, EF_ERR_FORMAT, "name is 64 bytes", "64-byte tensor name");
    bb_head(&b, 3, 1, 0);
    bb_strn(&b, "a\0", 2);
    bb_u32(&b, 1);
    bb_u64(&b, 8);
    bb_u32(&b, 0);
    bb_u64(&b, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 32);
    expect_bad(&b, EF_ERR_FORMAT, "NUL", "NUL in tensor name");
    bb_head(&b, 3, 2, 0);
    bb_tinfo(&b, "x", 1, ne8, EF_GGML_F32, 0);
    bb_tinfo(&b, "x", 1, ne8, EF_GGML_F32, 32);
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    expect_bad(&b, EF_ERR_FORMAT, "duplicate tensor name 'x'", "duplicate tensor");
    bb_head(&b, 3, 1, 0);
    bb_tinfo(&b, "x", 0, ne8, EF_GGML_F32, 0);
    bb_zeros(&b, 40);
    expect_bad(&b, EF_ERR_FORMAT, "0 dimensions", "0 dims");
    const uint64_t ne5[] = {1, 1, 1, 1, 1};
    bb_head(&b, 3, 1, 0);
    bb_tinfo(&b, "x", 5, ne5, EF_GGML_F32, 0);
    bb_zeros(&b, 40);
    expect_bad(&b, EF_ERR_FORMAT, "5 dimensions", "5 dims");
    const uint64_t neg[] = {(uint64_t)1 << 63};
    bb_head(&b, 3, 1, 0);
    bb_tinfo(&b, "x", 1, neg, EF_GGML_F32, 0);
    bb_zeros(&b, 40);
    expect_bad(&b, EF_ERR_FORMAT, "more than 2^63", "negative dimension");
    const uint64_t big[] = {(uint64_t)1 << 32, (uint64_t)1 << 32};
    bb_head(&b, 3, 1, 0);
    bb_tinfo(&b, "x", 2, big, EF_GGML_F32, 0);
    bb_zeros(&b, 40);
    expect_bad(&b, EF_ERR_FORMAT, "element count overflows", "element overflow");
    const uint64_t bytesbig[] = {(uint64_t)1 << 62};
    bb_head(&b, 3, 1, 0);
    bb_tinfo(&b, "x", 1, bytesbig, EF_GGML_F32, 0);
    bb_zeros(&b, 40);
    expect_bad(&b, EF_ERR_FORMAT, "byte size overflows", "byte size overflow");
    uint32_t bad_types[] = {4, 5, 31, 38, 40, 1000};
    for (size_t i = 0; i < sizeof bad_types / sizeof *bad_types; i++) {
        bb_head(&b, 3, 1, 0);
        bb_tinfo(&b, "x", 1, ne8, bad_types[i], 0);
        bb_pad(&b, 32);
        bb_zeros(&b, 64);
        expect_bad(&b, EF_ERR_FORMAT, "unknown or removed ggml type", "bad tensor type");
    }
    const uint64_t ne33[] = {33, 1};
    bb_head(&b, 3, 1, 0);
    bb_tinfo(&b, "q", 2, ne33, EF_GGML_Q8_0, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    expect_bad(&b, EF_ERR_FORMAT, "not a multiple of the block size 32", "q8_0 row 33");
    bb_head(&b, 3, 1, 0);
    bb_tinfo(&b, "x", 1, ne8, EF_GGML_F32, 16);
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    expect_bad(&b, EF_ERR_FORMAT, "offset 16 is not a multiple of the alignment 32", "unaligned");
    bb_head(&b, 3, 1, 0);
    bb_tinfo(&b, "x", 2, ne2, EF_GGML_F32, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 63);
    expect_bad(&b, EF_ERR_FORMAT, "run past the 63-byte data section", "data truncated");
    bb_head(&b, 3, 1, 0);
    bb_tinfo(&b, "x", 1, ne8, EF_GGML_F32, (uint64_t)-32);
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    expect_bad(&b, EF_ERR_FORMAT, "run past", "offset near 2^64");
    bb_head(&b, 3, 2, 0);
    bb_tinfo(&b, "x", 2, ne2, EF_GGML_F32, 0);
    bb_tinfo(&b, "y", 1, ne8, EF_GGML_F32, 32);
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    expect_bad(&b, EF_ERR_FORMAT, "tensors 'x' and 'y' overlap", "overlap");
    bb_head(&b, 3, 1, 0);
    bb_tinfo(&b, "x", 1, ne8, EF_GGML_F32, 0);
    expect_bad(&b, EF_ERR_FORMAT, "data section would start at byte 64", "no data section");

    /* accepted: a gap between tensors, an empty tensor past a short file */
    bb_head(&b, 3, 2, 0);
    bb_tinfo(&b, "x", 1, ne8, EF_GGML_F32, 64);
    bb_tinfo(&b, "y", 1, ne8, EF_GGML_F32, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 96);
    g = NULL;
    CHECK_OK(ef_gguf_open_memory(&g, b.p, b.n, "gap"));
    ef_gguf_close(g);
    const uint64_t ne0[] = {0};
    bb_head(&b, 3, 1, 0);
    bb_tinfo(&b, "e", 1, ne0, EF_GGML_F32, 0);
    g = NULL;
    CHECK_OK(ef_gguf_open_memory(&g, b.p, b.n, "empty-tensor"));
    if (g) CHECK(ef_gguf_find_tensor(g, "e")->nbytes == 0);
    ef_gguf_close(g);

    /* other errors */
    CHECK(ef_gguf_open(&g, tpath("missing.gguf")) == EF_ERR_NOT_FOUND);
    CHECK(strstr(ef_last_error(), "missing.gguf") != NULL);
    CHECK(ef_gguf_open(&g, g_dir) == EF_ERR_IO);
    CHECK(ef_gguf_open(NULL, "x") == EF_ERR_INVALID);
    free(b.p);
}

/* Every prefix of a valid file is refused (none is accepted or crashes), and
 * every single-byte change is either refused or yields a consistent file. */
static void test_truncations_and_flips(void) {
    unsigned start = 3;
    ef_gguf_writer *w = build_writer(&start);
    const char *p = tpath("flip.gguf");
    CHECK_OK(ef_gguf_writer_write(w, p));
    ef_gguf_writer_free(w);
    char *buf = NULL;
    size_t len = 0;
    CHECK_OK(ef_read_file(p, 0, &buf, &len));
    ef_gguf *g = NULL;
    CHECK_OK(ef_gguf_open_memory(&g, buf, len, "full"));
    uint64_t need = g ? ef_gguf_find_tensor(g, "w.fill")->offset + ef_gguf_data_offset(g) + 10 : 0;
    ef_gguf_close(g);
    int accepted_short = 0, wrong_status = 0;
    for (size_t n = 0; n < len; n++) {
        ef_status st = ef_gguf_open_memory(&g, buf, n, "prefix");
        if (st == EF_OK) {
            /* only the trailing padding of the last tensor may be cut */
            if (n < need) accepted_short++;
            ef_gguf_close(g);
        } else if (st != EF_ERR_FORMAT) {
            wrong_status++;
        }
    }
    CHECK_MSG(accepted_short == 0, "%d truncated files accepted", accepted_short);
    CHECK_MSG(wrong_status == 0, "%d truncations gave another status than EF_ERR_FORMAT",
              wrong_status);

    unsigned char *copy = malloc(len);
    const unsigned char vals[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
    int inconsistent = 0;
    long opened = 0, refused = 0;
    for (size_t i = 0; i < len; i++) {
        for (size_t v = 0; v < sizeof vals; v++) {
            memcpy(copy, buf, len);
            if (copy[i] == vals[v]) continue;
            copy[i] = vals[v];
            ef_status st = ef_gguf_open_memory(&g, copy, len, "flip");
            if (st != EF_OK) {
                refused++;
                continue;
            }
            opened++;
            for (size_t t = 0; t < ef_gguf_tensor_count(g); t++) {
                const ef_gguf_tensor *ti = ef_gguf_tensor_at(g, t);
                const unsigned char *d = ti->data;
                if (d < copy || d + ti->nbytes > copy + len) inconsistent++;
                if (ef_gguf_find_tensor(g, ti->name) != ti) inconsistent++;
            }
            for (size_t k = 0; k < ef_gguf_kv_count(g); k++)
                if (ef_gguf_find_key(g, ef_gguf_kv_at(g, k)->key) != (int64_t)k) inconsistent++;
            ef_gguf_close(g);
        }
    }
    CHECK_MSG(inconsistent == 0, "%d inconsistencies in corrupted files that opened", inconsistent);
    CHECK(refused > 0 && opened > 0);
    printf("corruption sweep: %zu prefixes refused, %ld byte changes refused, %ld accepted "
           "consistently\n", len, refused, opened);
    free(copy);
    ef_free(buf);
}

/* ---- big counts -------------------------------------------------------------------- */

static void test_big(void) {
    enum { NS = 200000, NU = 1000000 };
    char **strs = malloc(NS * sizeof *strs);
    char *pool = malloc((size_t)NS * 12);
    for (int i = 0; i < NS; i++) {
        strs[i] = pool + (size_t)i * 12;
        snprintf(strs[i], 12, "t%d", i);
    }
    uint32_t *u = malloc(NU * sizeof *u);
    for (int i = 0; i < NU; i++) u[i] = (uint32_t)i * 2654435761u;
    ef_gguf_writer *w = NULL;
    CHECK_OK(ef_gguf_writer_new(&w));
    CHECK_OK(ef_gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)strs, NULL, NS));
    CHECK_OK(ef_gguf_set_arr(w, "big.u32", EF_GGUF_UINT32, u, NU));
    const char *p = tpath("big.gguf");
    CHECK_OK(ef_gguf_writer_write(w, p));
    ef_gguf *g = NULL;
    CHECK_OK(ef_gguf_open(&g, p));
    if (g) {
        uint64_t n;
        CHECK_OK(ef_gguf_get_arr(g, "tokenizer.ggml.tokens", NULL, &n));
        CHECK(n == NS);
        int bad = 0;
        for (int i = 0; i < NS; i += 997) {
            const char *s;
            CHECK_OK(ef_gguf_get_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &s, NULL));
            bad += strcmp(s, strs[i]) != 0;
        }
        const char *last;
        CHECK_OK(ef_gguf_get_arr_str(g, "tokenizer.ggml.tokens", NS - 1, &last, NULL));
        CHECK(bad == 0 && strcmp(last, "t199999") == 0);
        int64_t *iv = malloc(NU * sizeof *iv);
        CHECK_OK(ef_gguf_get_arr_int(g, "big.u32", iv, NU));
        bad = 0;
        for (int i = 0; i < NU; i++) bad += iv[i] != (int64_t)u[i];
        CHECK(bad == 0);
        free(iv);
        ef_gguf_close(g);
    }
    ef_gguf_writer_free(w);
    free(u);
    free(pool);
    free(strs);
}

/* ---- out of memory ---------------------------------------------------------------- */

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

/* Every allocation failure in open, build and write is reported as
 * EF_ERR_NOMEM (or a clean status), never a crash or a leak (ASan builds). */
static void test_oom(void) {
    unsigned start = 1;
    ef_gguf_writer *w0 = build_writer(&start);
    const char *p = tpath("oom-src.gguf");
    CHECK_OK(ef_gguf_writer_write(w0, p));
    ef_gguf_writer_free(w0);
    char *buf = NULL;
    size_t len = 0;
    CHECK_OK(ef_read_file(p, 0, &buf, &len));
    ef_allocator a = {oom_malloc, oom_realloc, oom_free, NULL};
    int opened = 0, written = 0, bad = 0;
    for (long budget = 0; budget < 400 && !(opened && written); budget++) {
        ef_set_allocator(&a);
        g_budget = budget;
        ef_gguf *g = NULL;
        ef_status s1 = ef_gguf_open_memory(&g, buf, len, "oom");
        if (s1 == EF_OK) {
            opened = 1;
        } else if (s1 != EF_ERR_NOMEM || g != NULL) {
            bad++;
        }
        g_budget = budget;
        ef_gguf_writer *w = NULL;
        ef_status s2 = ef_gguf_writer_new(&w);
        for (size_t k = 0; s2 == EF_OK && g && k < ef_gguf_kv_count(g); k++)
            s2 = ef_gguf_copy_kv(w, g, k);
        for (size_t t = 0; s2 == EF_OK && g && t < ef_gguf_tensor_count(g); t++) {
            const ef_gguf_tensor *ti = ef_gguf_tensor_at(g, t);
            s2 = ef_gguf_add_tensor(w, ti->name, ti->type, ti->n_dims, ti->ne, ti->data,
                                    ti->nbytes);
        }
        if (s2 == EF_OK && g) {
            s2 = ef_gguf_writer_write(w, tpath("oom-out.gguf"));
            if (s2 == EF_OK) written = 1;
        }
        if (s2 != EF_OK && s2 != EF_ERR_NOMEM && s2 != EF_ERR_IO) bad++;
        ef_gguf_writer_free(w);
        ef_gguf_close(g);
        ef_set_allocator(NULL);
    }
    CHECK_MSG(opened && written, "never succeeded within the allocation budget");
    CHECK_MSG(bad == 0, "%d allocation failures gave another status", bad);
    if (written) {
        /* what finally got written is the same file */
        char *b2 = NULL;
        size_t l2 = 0;
        CHECK_OK(ef_read_file(tpath("oom-out.gguf"), 0, &b2, &l2));
        CHECK(l2 == len && memcmp(b2, buf, len) == 0);
        ef_free(b2);
    }
    ef_free(buf);
}

/* ---- interop with the Python peer ---------------------------------------------------- */

static cJSON *peer_json(const char *args) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s %s %s", PYTHON, PEER, args);
    FILE *f = popen(cmd, "r");
    if (!f) return NULL;
    static char out[1 << 20];
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    if (pclose(f) != 0) return NULL;
    return cJSON_Parse(out);
}

static const cJSON *peer_kv(const cJSON *dump, const char *key) {
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(dump, "kv")) {
        if (strcmp(cJSON_GetObjectItem(e, "key")->valuestring, key) == 0) return e;
    }
    return NULL;
}

static void test_peer(void) {
    if (access(PYTHON, X_OK) != 0) {
        printf("skipping the Python peer checks: %s not found\n", PYTHON);
        return;
    }
    /* the peer parses what we write */
    unsigned start = 100;
    ef_gguf_writer *w = build_writer(&start);
    const char *p = tpath("peer-in.gguf");
    CHECK_OK(ef_gguf_writer_write(w, p));
    ef_gguf_writer_free(w);
    char args[700];
    snprintf(args, sizeof args, "dump %s", p);
    cJSON *d = peer_json(args);
    CHECK_MSG(d != NULL, "the peer could not parse our file");
    if (d) {
        CHECK(cJSON_GetObjectItem(d, "version")->valueint == 3);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(d, "kv")) == 30);
        CHECK(cJSON_GetObjectItem(peer_kv(d, "t.u32"), "value")->valuedouble == 4000000000.0);
        CHECK(strcmp(cJSON_GetObjectItem(peer_kv(d, "t.str"), "value")->valuestring,
                     "h\xc3\xa9llo \xe2\x82\xac") == 0);
        CHECK(strcmp(cJSON_GetObjectItem(peer_kv(d, "t.replaced"), "type")->valuestring,
                     "string") == 0);
        const cJSON *arr = cJSON_GetObjectItem(peer_kv(d, "a.i16"), "value");
        CHECK(cJSON_GetArrayItem(arr, 0)->valueint == -32768);
        CHECK(strcmp(cJSON_GetObjectItem(peer_kv(d, "a.bool"), "elem")->valuestring, "bool") == 0);
        const cJSON *ts = cJSON_GetObjectItem(d, "tensors");
        CHECK(cJSON_GetArraySize(ts) == 8);
        const cJSON *t4 = cJSON_GetArrayItem(ts, 4);
        CHECK(strcmp(cJSON_GetObjectItem(t4, "name")->valuestring, "w.q4_0") == 0);
        CHECK(strcmp(cJSON_GetObjectItem(t4, "type")->valuestring, "q4_0") == 0);
        CHECK(cJSON_GetArrayItem(cJSON_GetObjectItem(t4, "ne"), 1)->valueint == 3);
        cJSON_Delete(d);
    }

    /* we parse what the peer writes */
    const char *spec = tpath("spec.json");
    FILE *f = fopen(spec, "w");
    fprintf(f, "{\"version\": 2, \"kv\": ["
               "[\"general.alignment\", \"u32\", 16],"
               "[\"p.name\", \"string\", \"peer \\u00e9\"],"
               "[\"p.f\", \"f32\", 0.25],"
               "[\"p.toks\", \"array:string\", [\"a\", \"\", \"ccc\"]],"
               "[\"p.ids\", \"array:i32\", [5, -6, 7]],"
               "[\"p.b\", \"bool\", true]],"
               "\"tensors\": ["
               "{\"name\": \"m\", \"type\": \"f32\", \"ne\": [3, 2], \"values\": [1, 2, 3, 4, 5, 6]},"
               "{\"name\": \"h\", \"type\": \"f16\", \"ne\": [3], \"values\": [0.5, -1, 65504]},"
               "{\"name\": \"q\", \"type\": \"q8_0\", \"ne\": [32], \"hex\": \"%s\"}]}",
            "003c"
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
    fclose(f);
    const char *pf = tpath("peer-out.gguf");
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s %s write %s %s", PYTHON, PEER, spec, pf);
    CHECK(system(cmd) == 0);
    ef_gguf *g = NULL;
    CHECK_OK(ef_gguf_open(&g, pf));
    if (g) {
        const char *s;
        float fv;
        bool bv;
        int64_t ids[3];
        CHECK(ef_gguf_version(g) == 2 && ef_gguf_alignment(g) == 16);
        CHECK(ef_gguf_data_offset(g) % 16 == 0);
        CHECK_OK(ef_gguf_get_str(g, "p.name", &s, NULL));
        CHECK(strcmp(s, "peer \xc3\xa9") == 0);
        CHECK_OK(ef_gguf_get_f32(g, "p.f", &fv));
        CHECK(fv == 0.25f);
        CHECK_OK(ef_gguf_get_bool(g, "p.b", &bv));
        CHECK(bv);
        CHECK_OK(ef_gguf_get_arr_str(g, "p.toks", 2, &s, NULL));
        CHECK(strcmp(s, "ccc") == 0);
        CHECK_OK(ef_gguf_get_arr_int(g, "p.ids", ids, 3));
        CHECK(ids[0] == 5 && ids[1] == -6 && ids[2] == 7);
        const ef_gguf_tensor *m = ef_gguf_find_tensor(g, "m");
        float mv[6];
        CHECK(m && m->ne[0] == 3 && m->ne[1] == 2);
        if (m) {
            CHECK_OK(ef_dequantize(m->type, m->data, mv, 6));
            CHECK(mv[0] == 1.0f && mv[5] == 6.0f);
        }
        const ef_gguf_tensor *h = ef_gguf_find_tensor(g, "h");
        float hv[3];
        if (h) {
            CHECK(h->offset % 16 == 0);
            CHECK_OK(ef_dequantize(h->type, h->data, hv, 3));
            CHECK(hv[0] == 0.5f && hv[1] == -1.0f && hv[2] == 65504.0f);
        }
        const ef_gguf_tensor *q = ef_gguf_find_tensor(g, "q");
        float qv[32];
        if (q) {
            CHECK_OK(ef_dequantize(q->type, q->data, qv, 32));
            CHECK(qv[0] == 0.0f && qv[31] == 31.0f);
        }
        ef_gguf_close(g);
    }
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/ef_test_gguf_%d", (int)getpid());
    mkdir(g_dir, 0700);
    test_round_trip();
    test_exact_bytes();
    test_writer_errors();
    test_crafted();
    test_truncations_and_flips();
    test_big();
    test_oom();
    test_peer();
    tu_rmtree(g_dir);
    return tu_finish("test_gguf");
}
