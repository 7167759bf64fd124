/*
 * Tests of the flat parameter table (ef_params): offsets and shapes of
 * added tensors, lookup by name, the zeroed flat vector and tensor pointers
 * into it, layout comparison, and every error case (duplicate or bad names,
 * bad dimensions, size overflow, add or alloc after alloc), each of which
 * must leave the table unchanged and set a message.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "edgefl/params.h"
#include "test_util.h"

static ef_params *make(void) {
    ef_params *p = NULL;
    ef_status st = ef_params_new(&p);
    if (st != EF_OK || !p) {
        fprintf(stderr, "ef_params_new: %s\n", ef_strerror(st));
        exit(1);
    }
    return p;
}

static void add_ok(ef_params *p, const char *name, int ndim, const int64_t *shape) {
    CHECK_OK(ef_params_add(p, name, ndim, shape));
}

// Adds a tensor that must be rejected with `want`, a message, and no change.
static void add_bad(ef_params *p, const char *name, int ndim, const int64_t *shape,
                    ef_status want, const char *why) {
    size_t count = ef_params_count(p), numel = ef_params_numel(p);
    ef_clear_error();
    ef_status st = ef_params_add(p, name, ndim, shape);
    CHECK_MSG(st == want, "%s: status %s, expected %s", why, ef_strerror(st), ef_strerror(want));
    CHECK_MSG(ef_last_error()[0] != '\0', "%s: no message", why);
    CHECK_MSG(ef_params_count(p) == count && ef_params_numel(p) == numel, "%s: table changed",
              why);
}

static void test_layout(void) {
    ef_params *p = make();
    CHECK(ef_params_count(p) == 0 && ef_params_numel(p) == 0);
    CHECK(ef_params_data(p) == NULL);
    CHECK(ef_params_find(p, "x") == -1);
    CHECK(ef_params_info(p, 0) == NULL);
    CHECK(ef_params_tensor(p, 0) == NULL);

    const int64_t s_w[2] = {2, 3}, s_b[1] = {4}, s_8[8] = {1, 2, 1, 1, 1, 1, 1, 3};
    add_ok(p, "fc.weight", 2, s_w);
    add_ok(p, "fc.bias", 1, s_b);
    add_ok(p, "scale", 0, NULL); // a scalar: no dims, one element
    add_ok(p, "eight", 8, s_8);
    CHECK(ef_params_count(p) == 4);
    CHECK(ef_params_numel(p) == 6 + 4 + 1 + 6);
    CHECK(ef_params_data(p) == NULL);
    CHECK(ef_params_tensor(p, 0) == NULL); // nothing allocated yet

    static const struct {
        const char *name;
        int ndim;
        size_t offset, numel;
    } want[4] = {{"fc.weight", 2, 0, 6}, {"fc.bias", 1, 6, 4}, {"scale", 0, 10, 1},
                 {"eight", 8, 11, 6}};
    for (size_t i = 0; i < 4; i++) {
        const ef_tensor_info *ti = ef_params_info(p, i);
        CHECK(ti != NULL);
        if (!ti) continue;
        CHECK_MSG(strcmp(ti->name, want[i].name) == 0 && ti->ndim == want[i].ndim &&
                      ti->offset == want[i].offset && ti->numel == want[i].numel,
                  "tensor %zu: %s ndim %d offset %zu numel %zu", i, ti->name, ti->ndim,
                  ti->offset, ti->numel);
        CHECK(ef_params_find(p, want[i].name) == (long)i);
    }
    const ef_tensor_info *w = ef_params_info(p, 0), *e = ef_params_info(p, 3);
    CHECK(w->shape[0] == 2 && w->shape[1] == 3);
    CHECK(memcmp(e->shape, s_8, sizeof s_8) == 0);
    CHECK(ef_params_info(p, 4) == NULL);
    CHECK(ef_params_find(p, "fc") == -1);        // no prefix matches
    CHECK(ef_params_find(p, "fc.weight2") == -1);
    CHECK(ef_params_find(p, "FC.WEIGHT") == -1); // case matters

    CHECK_OK(ef_params_alloc(p));
    float *d = ef_params_data(p);
    CHECK(d != NULL);
    int zero = 1;
    for (size_t i = 0; d && i < ef_params_numel(p); i++) zero &= d[i] == 0.0f;
    CHECK(zero);
    for (size_t i = 0; i < 4; i++) CHECK(ef_params_tensor(p, i) == d + want[i].offset);
    CHECK(ef_params_tensor(p, 4) == NULL);
    // the infos are still valid (and unchanged) after alloc
    CHECK(ef_params_info(p, 0) == w && strcmp(w->name, "fc.weight") == 0);
    for (size_t i = 0; d && i < ef_params_numel(p); i++) d[i] = (float)i; // writable, in bounds

    // Nothing may change after alloc.
    const int64_t s1[1] = {5};
    add_bad(p, "late", 1, s1, EF_ERR_STATE, "add after alloc");
    CHECK(ef_params_find(p, "late") == -1);
    ef_clear_error();
    CHECK(ef_params_alloc(p) == EF_ERR_STATE);
    CHECK(ef_last_error()[0] != '\0');
    CHECK(ef_params_data(p) == d && d[16] == 16.0f); // the data survived
    ef_params_free(p);
    ef_params_free(NULL);

    // An empty table can be allocated (one float of storage, zero elements).
    p = make();
    CHECK_OK(ef_params_alloc(p));
    CHECK(ef_params_numel(p) == 0 && ef_params_data(p) != NULL);
    ef_params_free(p);
}

static void test_many(void) {
    // Growth of the table keeps names, shapes and running offsets.
    ef_params *p = make();
    size_t total = 0;
    for (int i = 0; i < 100; i++) {
        char name[32];
        snprintf(name, sizeof name, "layer%03d", i);
        int64_t shape[3] = {i % 3 + 1, i % 5 + 1, i % 7 + 1};
        add_ok(p, name, 3, shape);
        total += (size_t)shape[0] * shape[1] * shape[2];
    }
    CHECK(ef_params_count(p) == 100 && ef_params_numel(p) == total);
    size_t off = 0;
    int ok = 1;
    for (int i = 0; i < 100; i++) {
        char name[32];
        snprintf(name, sizeof name, "layer%03d", i);
        const ef_tensor_info *ti = ef_params_info(p, (size_t)i);
        size_t n = (size_t)(i % 3 + 1) * (i % 5 + 1) * (i % 7 + 1);
        ok &= strcmp(ti->name, name) == 0 && ti->offset == off && ti->numel == n &&
              ti->ndim == 3 && ti->shape[2] == i % 7 + 1;
        ok &= ef_params_find(p, name) == i;
        off += n;
    }
    CHECK(ok);
    ef_params_free(p);
}

static void test_errors(void) {
    ef_params *p = make();
    const int64_t s2[2] = {3, 4};
    add_ok(p, "a", 2, s2);

    add_bad(p, "a", 2, s2, EF_ERR_INVALID, "duplicate name");
    add_bad(p, "", 2, s2, EF_ERR_INVALID, "empty name");
    add_bad(p, NULL, 2, s2, EF_ERR_INVALID, "NULL name");

    char name[EF_MAX_NAME + 8];
    memset(name, 'n', sizeof name);
    name[EF_MAX_NAME] = '\0'; // 128 characters: one too many
    add_bad(p, name, 2, s2, EF_ERR_INVALID, "128-character name");
    name[EF_MAX_NAME - 1] = '\0'; // 127 characters: the longest allowed
    add_ok(p, name, 2, s2);
    CHECK(ef_params_find(p, name) == 1);
    CHECK(strlen(ef_params_info(p, 1)->name) == EF_MAX_NAME - 1);

    const int64_t s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    add_bad(p, "nine", 9, s9, EF_ERR_INVALID, "9 dims");
    add_bad(p, "neg", -1, s2, EF_ERR_INVALID, "negative ndim");
    const int64_t zero[2] = {3, 0}, neg[2] = {-2, 4};
    add_bad(p, "zero", 2, zero, EF_ERR_INVALID, "zero dim");
    add_bad(p, "negdim", 2, neg, EF_ERR_INVALID, "negative dim");
    const int64_t huge[2] = {INT64_C(1) << 40, INT64_C(1) << 40}; // 2^80 elements
    add_bad(p, "huge", 2, huge, EF_ERR_INVALID, "element count overflow");
    CHECK(ef_params_count(p) == 2 && ef_params_numel(p) == 24);
    // A rejected name can still be added correctly afterwards.
    add_ok(p, "zero", 2, s2);
    CHECK(ef_params_numel(p) == 36 && ef_params_info(p, 2)->offset == 24);
    ef_params_free(p);

    // The running total overflowing size_t is a range error.
    p = make();
    const int64_t big[2] = {INT64_C(1) << 62, 3}; // 3 * 2^62 fits in 64 bits
    add_ok(p, "big1", 2, big);
    add_bad(p, "big2", 2, big, EF_ERR_RANGE, "total overflow");
    // ...and allocating 3 * 2^62 floats fails cleanly.
    ef_clear_error();
    CHECK(ef_params_alloc(p) == EF_ERR_NOMEM);
    CHECK(ef_params_data(p) == NULL && ef_last_error()[0] != '\0');
    ef_params_free(p);
}

static void test_same_layout(void) {
    static const int64_t s23[2] = {2, 3}, s32[2] = {3, 2}, s6[1] = {6}, s4[1] = {4};
    ef_params *a = make(), *b = make();
    CHECK(ef_params_same_layout(a, b)); // both empty
    add_ok(a, "w", 2, s23);
    add_ok(a, "b", 1, s4);
    CHECK(!ef_params_same_layout(a, b)); // different count
    add_ok(b, "w", 2, s23);
    add_ok(b, "b", 1, s4);
    CHECK(ef_params_same_layout(a, b) && ef_params_same_layout(b, a));
    CHECK(ef_params_same_layout(a, a));
    CHECK_OK(ef_params_alloc(a)); // allocation does not matter
    CHECK(ef_params_same_layout(a, b));
    ef_params_free(b);

    static const struct {
        const char *n1;
        int nd1;
        const int64_t *s1;
        const char *n2;
        int nd2;
        const int64_t *s2;
        const char *why;
    } diff[] = {
        {"w", 2, s32, "b", 1, s4, "transposed shape"},
        {"w", 1, s6, "b", 1, s4, "same numel, fewer dims"},
        {"W", 2, s23, "b", 1, s4, "different name"},
        {"b", 1, s4, "w", 2, s23, "different order"},
    };
    for (size_t i = 0; i < sizeof diff / sizeof *diff; i++) {
        ef_params *c = make();
        add_ok(c, diff[i].n1, diff[i].nd1, diff[i].s1);
        add_ok(c, diff[i].n2, diff[i].nd2, diff[i].s2);
        CHECK(ef_params_numel(c) == ef_params_numel(a));
        CHECK_MSG(!ef_params_same_layout(a, c) && !ef_params_same_layout(c, a), "%s",
                  diff[i].why);
        ef_params_free(c);
    }
    // Same names and total size, split differently.
    ef_params *c = make();
    const int64_t s5[1] = {5}, s23b[2] = {1, 5};
    add_ok(c, "w", 2, s23b);
    add_ok(c, "b", 1, s5);
    CHECK(ef_params_numel(c) == ef_params_numel(a));
    CHECK(!ef_params_same_layout(a, c));
    ef_params_free(c);
    ef_params_free(a);
}

int main(void) {
    test_layout();
    test_many();
    test_errors();
    test_same_layout();
    return tu_finish("core/test_params");
}
