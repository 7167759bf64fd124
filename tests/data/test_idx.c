/*
 * Tests of the IDX reader and the image dataset: the real Fashion-MNIST files
 * from Debian's dataset-fashion-mnist package (shapes, label counts, known
 * values cross-checked with numpy), then crafted broken files (truncated,
 * corrupt gzip, bad headers, inconsistent label files) that must each fail
 * with the right status and a message naming the file. Exits 77 (skipped)
 * only when the dataset is not installed and everything else passed.
 */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "edgefl/data.h"
#include "test_util.h"

static char g_dir[256];

static const char *tpath(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static void write_plain(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len)) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

static void write_gz(const char *path, const void *data, size_t len) {
    gzFile g = gzopen(path, "wb9");
    if (!g || (len && gzwrite(g, data, (unsigned)len) != (int)len)) {
        fprintf(stderr, "%s: gzwrite failed\n", path);
        exit(1);
    }
    gzclose(g);
}

static size_t file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (size_t)sb.st_size : 0;
}

/* Builds an IDX image in buf: magic, big-endian dims, then payload bytes. */
static size_t make_idx(unsigned char *buf, int type, int ndim, const uint32_t *dims,
                       const void *payload, size_t payload_len) {
    size_t n = 0;
    buf[n++] = 0;
    buf[n++] = 0;
    buf[n++] = (unsigned char)type;
    buf[n++] = (unsigned char)ndim;
    for (int d = 0; d < ndim; d++) {
        buf[n++] = (unsigned char)(dims[d] >> 24);
        buf[n++] = (unsigned char)(dims[d] >> 16);
        buf[n++] = (unsigned char)(dims[d] >> 8);
        buf[n++] = (unsigned char)dims[d];
    }
    if (payload_len) memcpy(buf + n, payload, payload_len);
    return n + payload_len;
}

static int idx_is_zero(const ef_idx *x) {
    return x->data == NULL && x->count == 0 && x->ndim == 0;
}

/* ef_idx_read must fail with `want`, name the file, mention `what`, zero *out. */
static void expect_idx_fail(const char *path, size_t max_bytes, ef_status want,
                            const char *what) {
    ef_idx x;
    memset(&x, 0xab, sizeof x);
    ef_status st = ef_idx_read(path, max_bytes, &x);
    const char *msg = ef_last_error();
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    if (getenv("EF_TEST_VERBOSE")) printf("  expected failure: %s\n", msg);
    CHECK_MSG(st == want, "%s: got %s, want %s (%s)", base, ef_strerror(st), ef_strerror(want),
              msg);
    CHECK_MSG(strstr(msg, base) != NULL, "message does not name %s: %s", base, msg);
    CHECK_MSG(what == NULL || strstr(msg, what) != NULL, "message lacks '%s': %s", what, msg);
    CHECK(idx_is_zero(&x));
    if (st == EF_OK) ef_idx_free(&x);
}

static void expect_ds_fail(const char *images, const char *labels, ef_status want,
                           const char *names, const char *what) {
    ef_dataset ds;
    memset(&ds, 0xab, sizeof ds);
    ef_status st = ef_dataset_load_idx(&ds, images, labels, 10);
    const char *msg = ef_last_error();
    if (getenv("EF_TEST_VERBOSE")) printf("  expected failure: %s\n", msg);
    CHECK_MSG(st == want, "got %s, want %s (%s)", ef_strerror(st), ef_strerror(want), msg);
    CHECK_MSG(strstr(msg, names) != NULL, "message does not name %s: %s", names, msg);
    CHECK_MSG(what == NULL || strstr(msg, what) != NULL, "message lacks '%s': %s", what, msg);
    CHECK(ds.images == NULL && ds.labels == NULL && ds.n == 0);
    if (st == EF_OK) ef_dataset_free(&ds);
}

/* ---- real Fashion-MNIST -------------------------------------------------- */

static void check_split(const ef_dataset *ds, size_t n, const uint8_t *first_labels,
                        unsigned long first_sum, unsigned long last_sum,
                        unsigned long long total_sum) {
    CHECK(ds->n == n);
    CHECK(ds->c == 1 && ds->h == 28 && ds->w == 28);
    CHECK(ds->n_classes == 10);
    CHECK(ef_dataset_example_size(ds) == 784);
    CHECK(ds->mean == 0.2860f && ds->std == 0.3530f);
    if (ds->n != n) return;
    CHECK(memcmp(ds->labels, first_labels, 16) == 0);
    size_t counts[10] = {0}, out_of_range = 0;
    for (size_t i = 0; i < n; i++) {
        if (ds->labels[i] < 10)
            counts[ds->labels[i]]++;
        else
            out_of_range++;
    }
    CHECK(out_of_range == 0);
    for (int k = 0; k < 10; k++) CHECK_MSG(counts[k] == n / 10, "class %d: %zu", k, counts[k]);
    unsigned long s0 = 0, s1 = 0;
    unsigned long long all = 0;
    for (size_t j = 0; j < 784; j++) s0 += ds->images[j];
    for (size_t j = 0; j < 784; j++) s1 += ds->images[(n - 1) * 784 + j];
    for (size_t j = 0; j < n * 784; j++) all += ds->images[j];
    CHECK_MSG(s0 == first_sum, "first image sum %lu", s0);
    CHECK_MSG(s1 == last_sum, "last image sum %lu", s1);
    CHECK_MSG(all == total_sum, "pixel sum %llu", all);
}

static void test_real(void) {
    /* Reference values computed with numpy from the same files. */
    static const uint8_t train_first[16] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9, 5, 5, 7, 9};
    static const uint8_t test_first[16] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7, 4, 5, 7, 3, 4, 1};
    static const uint8_t row10[28] = {0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
                                      0,   0,   0,   193, 228, 218, 213, 198, 180, 212,
                                      210, 211, 213, 223, 220, 243, 202, 0};
    ef_dataset tr, te;
    double t0 = ef_now();
    CHECK_OK(ef_dataset_load(&tr, "fashion-mnist", NULL, 1));
    double t1 = ef_now();
    CHECK_OK(ef_dataset_load(&te, "fashion-mnist", EF_FASHION_MNIST_DIR, 0));
    printf("loaded Fashion-MNIST train in %.2f s\n", t1 - t0);
    check_split(&tr, 60000, train_first, 76247, 16684, 3431114169ull);
    check_split(&te, 10000, test_first, 33456, 24390, 573469082ull);
    if (tr.n == 60000) {
        CHECK(memcmp(tr.images + 10 * 28, row10, 28) == 0);
        /* The constants are the pixel statistics of the training split. */
        double s = 0, s2 = 0;
        for (size_t j = 0; j < tr.n * 784; j++) {
            double v = tr.images[j] / 255.0;
            s += v;
            s2 += v * v;
        }
        double mean = s / (tr.n * 784.0), var = s2 / (tr.n * 784.0) - mean * mean;
        CHECK_NEAR(mean, 0.2860405969887955, 1e-9);
        CHECK_NEAR(sqrt(var), 0.35302424451492237, 1e-7);
        CHECK_NEAR(mean, tr.mean, 1e-4);
        CHECK_NEAR(sqrt(var), tr.std, 1e-4);

        /* Batch gather: normalization and labels, against the formula. */
        uint32_t idx[3] = {0, 59999, 5};
        float *x = malloc(3 * 784 * sizeof *x);
        int32_t y[3] = {-1, -1, -1};
        ef_dataset_batch(&tr, idx, 3, x, y);
        int exact = 1;
        for (int b = 0; b < 3; b++)
            for (int j = 0; j < 784; j++) {
                float want = ((float)tr.images[(size_t)idx[b] * 784 + j] / 255.0f - tr.mean) /
                             tr.std;
                if (x[b * 784 + j] != want) exact = 0;
            }
        CHECK(exact);
        CHECK(y[0] == 9 && y[1] == tr.labels[59999] && y[2] == 2);
        CHECK_NEAR(x[10 * 28 + 13], (193 / 255.0 - 0.2860) / 0.3530, 1e-5);
        CHECK_NEAR(x[0], -0.2860 / 0.3530, 1e-6);
        /* y may be NULL. */
        ef_dataset_batch(&tr, idx + 2, 1, x, NULL);
        CHECK(x[0] == ((float)tr.images[5 * 784] / 255.0f - tr.mean) / tr.std);
        free(x);
    }
    ef_idx raw;
    CHECK_OK(ef_idx_read(EF_FASHION_MNIST_DIR "/t10k-labels-idx1-ubyte.gz", 0, &raw));
    CHECK(raw.type == EF_IDX_U8 && raw.ndim == 1 && raw.dims[0] == 10000 && raw.count == 10000 &&
          raw.elem_size == 1);
    ef_idx_free(&raw);
    CHECK(raw.data == NULL);
    ef_dataset_free(&tr);
    ef_dataset_free(&te);
    CHECK(tr.images == NULL && tr.n == 0);
}

/* ---- crafted files -------------------------------------------------------- */

static void test_types(void) {
    unsigned char buf[256];
    uint32_t d3 = 3, d2 = 2;
    /* Big-endian payloads of known values. */
    unsigned char i16[] = {0xff, 0xfe, 0x01, 0x02, 0x7f, 0xff};           /* -2, 258, 32767 */
    unsigned char i32[] = {0xff, 0xff, 0xff, 0xff, 0x01, 0x02, 0x03, 0x04}; /* -1, 0x01020304 */
    unsigned char f32[] = {0x3f, 0xc0, 0, 0, 0xc0, 0x10, 0, 0};            /* 1.5, -2.25 */
    unsigned char f64[] = {0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18}; /* pi */
    unsigned char i8[] = {0xff, 0x80, 0x7f};
    ef_idx x;
    size_t n;

    n = make_idx(buf, EF_IDX_I16, 1, &d3, i16, sizeof i16);
    write_plain(tpath("i16"), buf, n);
    CHECK_OK(ef_idx_read(tpath("i16"), 0, &x));
    CHECK(x.type == EF_IDX_I16 && x.count == 3 && x.elem_size == 2);
    if (x.data) {
        const int16_t *v = x.data;
        CHECK(v[0] == -2 && v[1] == 258 && v[2] == 32767);
    }
    ef_idx_free(&x);

    n = make_idx(buf, EF_IDX_I32, 1, &d2, i32, sizeof i32);
    write_gz(tpath("i32.gz"), buf, n);
    CHECK_OK(ef_idx_read(tpath("i32.gz"), 0, &x));
    if (x.data) {
        const int32_t *v = x.data;
        CHECK(v[0] == -1 && v[1] == 0x01020304);
    }
    ef_idx_free(&x);

    n = make_idx(buf, EF_IDX_F32, 1, &d2, f32, sizeof f32);
    write_plain(tpath("f32"), buf, n);
    CHECK_OK(ef_idx_read(tpath("f32"), 0, &x));
    if (x.data) {
        const float *v = x.data;
        CHECK(v[0] == 1.5f && v[1] == -2.25f);
    }
    ef_idx_free(&x);

    uint32_t d1 = 1;
    n = make_idx(buf, EF_IDX_F64, 1, &d1, f64, sizeof f64);
    write_plain(tpath("f64"), buf, n);
    CHECK_OK(ef_idx_read(tpath("f64"), 0, &x));
    if (x.data) CHECK(*(const double *)x.data == 3.141592653589793);
    ef_idx_free(&x);

    n = make_idx(buf, EF_IDX_I8, 1, &d3, i8, sizeof i8);
    write_plain(tpath("i8"), buf, n);
    CHECK_OK(ef_idx_read(tpath("i8"), 0, &x));
    if (x.data) {
        const int8_t *v = x.data;
        CHECK(v[0] == -1 && v[1] == -128 && v[2] == 127);
    }
    ef_idx_free(&x);

    /* A 4-D (n, c, h, w) image file loads with its channel count. */
    uint32_t d4[4] = {2, 3, 2, 2};
    unsigned char px[24], lab[2] = {1, 9};
    for (int i = 0; i < 24; i++) px[i] = (unsigned char)(i * 10);
    n = make_idx(buf, EF_IDX_U8, 4, d4, px, sizeof px);
    write_plain(tpath("img4"), buf, n);
    n = make_idx(buf, EF_IDX_U8, 1, &d2, lab, sizeof lab);
    write_gz(tpath("lab2.gz"), buf, n);
    ef_dataset ds;
    CHECK_OK(ef_dataset_load_idx(&ds, tpath("img4"), tpath("lab2.gz"), 10));
    CHECK(ds.n == 2 && ds.c == 3 && ds.h == 2 && ds.w == 2 && ds.n_classes == 10);
    CHECK(ds.mean == 0.0f && ds.std == 1.0f);
    CHECK(ef_dataset_example_size(&ds) == 12);
    if (ds.n == 2) {
        float xb[12];
        int32_t yb;
        uint32_t one = 1;
        ef_dataset_batch(&ds, &one, 1, xb, &yb);
        CHECK(yb == 9);
        CHECK(xb[0] == 120.0f / 255.0f && xb[11] == 230.0f / 255.0f);
    }
    ef_dataset_free(&ds);
}

static void test_named_dataset(void) {
    /* A tiny "fashion-mnist" directory: plain training files, gzip test files. */
    char dir[300];
    snprintf(dir, sizeof dir, "%s/fm", g_dir);
    CHECK(mkdir(dir, 0755) == 0);
    unsigned char buf[256];
    uint32_t di[3] = {3, 2, 2}, dl = 3;
    unsigned char img[12], lab[3] = {0, 5, 9};
    for (int i = 0; i < 12; i++) img[i] = (unsigned char)(i * 20);
    char p[400];
    size_t n = make_idx(buf, EF_IDX_U8, 3, di, img, sizeof img);
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte", dir);
    write_plain(p, buf, n);
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte.gz", dir);
    write_gz(p, buf, n);
    n = make_idx(buf, EF_IDX_U8, 1, &dl, lab, sizeof lab);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte", dir);
    write_plain(p, buf, n);

    ef_dataset ds;
    CHECK_OK(ef_dataset_load(&ds, "fashion-mnist", dir, 1));
    CHECK(ds.n == 3 && ds.c == 1 && ds.h == 2 && ds.w == 2 && ds.labels && ds.labels[2] == 9);
    CHECK(ds.mean == 0.2860f && ds.std == 0.3530f);
    ef_dataset_free(&ds);

    /* Test split: images exist (gz), labels in neither form. */
    ef_status st = ef_dataset_load(&ds, "fashion-mnist", dir, 0);
    CHECK(st == EF_ERR_NOT_FOUND);
    CHECK_MSG(strstr(ef_last_error(), "t10k-labels-idx1-ubyte") != NULL, "%s", ef_last_error());
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte.gz", dir);
    write_gz(p, buf, n);
    CHECK_OK(ef_dataset_load(&ds, "fashion-mnist", dir, 0));
    CHECK(ds.n == 3);
    ef_dataset_free(&ds);

    st = ef_dataset_load(&ds, "cifar-11", NULL, 1);
    CHECK(st == EF_ERR_NOT_FOUND);
    CHECK_MSG(strstr(ef_last_error(), "cifar-11") && strstr(ef_last_error(), "fashion-mnist"),
              "%s", ef_last_error());
    CHECK(ds.images == NULL);

    st = ef_dataset_load(&ds, "fashion-mnist", "/nonexistent/edgefl-dir", 1);
    CHECK(st == EF_ERR_NOT_FOUND);
    CHECK_MSG(strstr(ef_last_error(), "/nonexistent/edgefl-dir/train-images-idx3-ubyte"), "%s",
              ef_last_error());
}

static void test_bad_files(void) {
    static unsigned char buf[20000], payload[10000];
    uint32_t seed = 12345;
    for (size_t i = 0; i < sizeof payload; i++) {
        seed = seed * 1664525u + 1013904223u;
        payload[i] = (unsigned char)(seed >> 24);
    }
    uint32_t d100 = 100, d10000 = 10000;
    size_t n;

    expect_idx_fail(tpath("missing-idx1-ubyte"), 0, EF_ERR_IO, "No such file");
    write_plain(tpath("empty"), "", 0);
    expect_idx_fail(tpath("empty"), 0, EF_ERR_FORMAT, "empty");
    write_gz(tpath("empty.gz"), "", 0);
    expect_idx_fail(tpath("empty.gz"), 0, EF_ERR_FORMAT, "empty");
    expect_idx_fail(g_dir, 0, EF_ERR_IO, "directory");

    n = make_idx(buf, EF_IDX_U8, 1, &d100, payload, 100);
    buf[0] = 1;
    write_plain(tpath("badmagic"), buf, n);
    expect_idx_fail(tpath("badmagic"), 0, EF_ERR_FORMAT, "magic");
    write_plain(tpath("short-magic"), buf, 3);
    expect_idx_fail(tpath("short-magic"), 0, EF_ERR_FORMAT, "truncated");

    n = make_idx(buf, 0x07, 1, &d100, payload, 100);
    write_plain(tpath("badtype"), buf, n);
    expect_idx_fail(tpath("badtype"), 0, EF_ERR_FORMAT, "type 0x07");

    n = make_idx(buf, EF_IDX_U8, 0, NULL, NULL, 0);
    write_plain(tpath("ndim0"), buf, n);
    expect_idx_fail(tpath("ndim0"), 0, EF_ERR_FORMAT, "dimensions");
    buf[3] = 9;
    write_plain(tpath("ndim9"), buf, 4);
    expect_idx_fail(tpath("ndim9"), 0, EF_ERR_FORMAT, "dimensions");

    uint32_t dz[3] = {5, 0, 28};
    n = make_idx(buf, EF_IDX_U8, 3, dz, NULL, 0);
    write_plain(tpath("zerodim"), buf, n);
    expect_idx_fail(tpath("zerodim"), 0, EF_ERR_FORMAT, "dimension 1 is zero");

    uint32_t d3[3] = {5, 28, 28};
    n = make_idx(buf, EF_IDX_U8, 3, d3, NULL, 0);
    write_plain(tpath("shortdims"), buf, n - 2);
    expect_idx_fail(tpath("shortdims"), 0, EF_ERR_FORMAT, "truncated");

    uint32_t huge[8] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu,
                        0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
    n = make_idx(buf, EF_IDX_U8, 8, huge, NULL, 0);
    write_plain(tpath("overflow"), buf, n);
    expect_idx_fail(tpath("overflow"), 0, EF_ERR_RANGE, "overflow");

    n = make_idx(buf, EF_IDX_F64, 1, &d100, payload, 800);
    write_plain(tpath("toobig"), buf, n);
    expect_idx_fail(tpath("toobig"), 799, EF_ERR_RANGE, "limit");
    ef_idx ok;
    CHECK_OK(ef_idx_read(tpath("toobig"), 800, &ok));
    ef_idx_free(&ok);

    /* Truncated data, plain and gzip: the message says how much was missing. */
    n = make_idx(buf, EF_IDX_U8, 1, &d100, payload, 50);
    write_plain(tpath("trunc-labels-idx1-ubyte"), buf, n);
    expect_idx_fail(tpath("trunc-labels-idx1-ubyte"), 0, EF_ERR_FORMAT,
                    "truncated: expected 100 bytes of data, got 50");
    write_gz(tpath("trunc-labels-idx1-ubyte.gz"), buf, n);
    expect_idx_fail(tpath("trunc-labels-idx1-ubyte.gz"), 0, EF_ERR_FORMAT,
                    "truncated: expected 100 bytes of data, got 50");

    /* A gzip file claiming 1 GiB of data must fail without needing it. */
    uint32_t d1g = 1u << 30;
    n = make_idx(buf, EF_IDX_U8, 1, &d1g, payload, 10);
    write_gz(tpath("claims-1g.gz"), buf, n);
    expect_idx_fail(tpath("claims-1g.gz"), 0, EF_ERR_FORMAT, "got 10");

    /* Trailing bytes after the data. */
    n = make_idx(buf, EF_IDX_U8, 1, &d100, payload, 101);
    write_plain(tpath("trailing"), buf, n);
    expect_idx_fail(tpath("trailing"), 0, EF_ERR_FORMAT, "trailing");
    write_gz(tpath("trailing.gz"), buf, n);
    expect_idx_fail(tpath("trailing.gz"), 0, EF_ERR_FORMAT, "trailing");

    /* gzip stream cut in the middle, and with corrupted bytes. */
    n = make_idx(buf, EF_IDX_U8, 1, &d10000, payload, 10000);
    write_gz(tpath("good.gz"), buf, n);
    CHECK_OK(ef_idx_read(tpath("good.gz"), 0, &ok));
    CHECK(ok.count == 10000 && ok.data && memcmp(ok.data, payload, 10000) == 0);
    ef_idx_free(&ok);
    size_t gz_len = file_size(tpath("good.gz"));
    static unsigned char gz[20000];
    FILE *f = fopen(tpath("good.gz"), "rb");
    CHECK(f && fread(gz, 1, gz_len, f) == gz_len);
    if (f) fclose(f);
    write_plain(tpath("cut.gz"), gz, gz_len / 2);
    expect_idx_fail(tpath("cut.gz"), 0, EF_ERR_FORMAT, "gzip");
    write_plain(tpath("cut-trailer.gz"), gz, gz_len - 4);
    expect_idx_fail(tpath("cut-trailer.gz"), 0, EF_ERR_FORMAT, "gzip");
    memcpy(buf, gz, gz_len);
    for (size_t i = gz_len / 2; i < gz_len / 2 + 16; i++) buf[i] ^= 0x5a;
    write_plain(tpath("corrupt.gz"), buf, gz_len);
    expect_idx_fail(tpath("corrupt.gz"), 0, EF_ERR_FORMAT, "corrupt gzip stream");
    memcpy(buf, gz, gz_len);
    buf[10] ^= 0x06; /* first deflate block header: an invalid block type */
    write_plain(tpath("badblock.gz"), buf, gz_len);
    expect_idx_fail(tpath("badblock.gz"), 0, EF_ERR_FORMAT, "corrupt gzip stream");
    memcpy(buf, gz, gz_len);
    buf[gz_len - 8] ^= 1; /* CRC-32 of the trailer only */
    write_plain(tpath("badcrc.gz"), buf, gz_len);
    expect_idx_fail(tpath("badcrc.gz"), 0, EF_ERR_FORMAT, "incorrect data check");

    /* Dataset-level consistency between the image and label files. */
    uint32_t di[3] = {4, 2, 2}, dl4 = 4, dl3 = 3;
    unsigned char img[16] = {0}, lab[4] = {0, 1, 2, 3};
    n = make_idx(buf, EF_IDX_U8, 3, di, img, 16);
    write_gz(tpath("img-idx3-ubyte.gz"), buf, n);
    n = make_idx(buf, EF_IDX_U8, 1, &dl3, lab, 3);
    write_plain(tpath("lab3-idx1-ubyte"), buf, n);
    expect_ds_fail(tpath("img-idx3-ubyte.gz"), tpath("lab3-idx1-ubyte"), EF_ERR_FORMAT,
                   "lab3-idx1-ubyte", "3 labels");
    CHECK(strstr(ef_last_error(), "img-idx3-ubyte.gz") != NULL);
    lab[2] = 10;
    n = make_idx(buf, EF_IDX_U8, 1, &dl4, lab, 4);
    write_plain(tpath("lab10-idx1-ubyte"), buf, n);
    expect_ds_fail(tpath("img-idx3-ubyte.gz"), tpath("lab10-idx1-ubyte"), EF_ERR_FORMAT,
                   "lab10-idx1-ubyte", "label 10 at index 2");
    lab[2] = 2;
    n = make_idx(buf, EF_IDX_U8, 1, &dl4, lab, 4);
    write_plain(tpath("lab4-idx1-ubyte"), buf, n);
    ef_dataset ds;
    CHECK_OK(ef_dataset_load_idx(&ds, tpath("img-idx3-ubyte.gz"), tpath("lab4-idx1-ubyte"), 10));
    ef_dataset_free(&ds);
    uint32_t dflat[2] = {4, 4};
    n = make_idx(buf, EF_IDX_U8, 2, dflat, img, 16);
    write_plain(tpath("img2d-idx2-ubyte"), buf, n);
    expect_ds_fail(tpath("img2d-idx2-ubyte"), tpath("lab4-idx1-ubyte"), EF_ERR_FORMAT,
                   "img2d-idx2-ubyte", "dims");
    n = make_idx(buf, EF_IDX_I32, 1, &dl4, img, 16);
    write_plain(tpath("img-i32"), buf, n);
    expect_ds_fail(tpath("img-i32"), tpath("lab4-idx1-ubyte"), EF_ERR_FORMAT, "img-i32",
                   "type 0x0c");
    n = make_idx(buf, EF_IDX_U8, 3, di, img, 16);
    write_plain(tpath("lab-as-img"), buf, n);
    expect_ds_fail(tpath("img-idx3-ubyte.gz"), tpath("lab-as-img"), EF_ERR_FORMAT, "lab-as-img",
                   "label");
    expect_ds_fail(tpath("img-idx3-ubyte.gz"), tpath("nolabels"), EF_ERR_IO, "nolabels", NULL);
    expect_ds_fail(tpath("trunc-labels-idx1-ubyte.gz"), tpath("lab4-idx1-ubyte"), EF_ERR_FORMAT,
                   "trunc-labels-idx1-ubyte.gz", "truncated");
    CHECK(ef_dataset_load_idx(&ds, tpath("img-idx3-ubyte.gz"), tpath("lab4-idx1-ubyte"), 0) ==
          EF_ERR_INVALID);
}

/* ---- out-of-memory injection ----------------------------------------------- */

static long g_alloc_budget;
static void *oom_malloc(void *user, size_t size) {
    (void)user;
    if (g_alloc_budget-- <= 0) return NULL;
    return malloc(size);
}
static void *oom_realloc(void *user, void *p, size_t size) {
    (void)user;
    if (g_alloc_budget-- <= 0) return NULL;
    return realloc(p, size);
}
static void oom_free(void *user, void *p) {
    (void)user;
    free(p);
}

static void test_oom(void) {
    ef_allocator a = {oom_malloc, oom_realloc, oom_free, NULL};
    ef_set_allocator(&a);
    int succeeded = 0;
    for (long budget = 0; budget < 20 && !succeeded; budget++) {
        g_alloc_budget = budget;
        ef_dataset ds;
        ef_status st = ef_dataset_load_idx(&ds, tpath("img-idx3-ubyte.gz"),
                                           tpath("lab4-idx1-ubyte"), 10);
        if (st == EF_OK) {
            succeeded = 1;
            ef_dataset_free(&ds);
        } else {
            CHECK_MSG(st == EF_ERR_NOMEM, "budget %ld: %s", budget, ef_last_error());
            CHECK(ds.images == NULL && ds.labels == NULL);
        }
    }
    CHECK(succeeded);
    ef_set_allocator(NULL);
}

int main(void) {
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/edgefl-idx-XXXXXX", tmp);
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_types();
    test_named_dataset();
    test_bad_files();
    test_oom();
    tu_rmtree(g_dir);

    int have_real = access(EF_FASHION_MNIST_DIR "/train-images-idx3-ubyte.gz", R_OK) == 0 ||
                    access(EF_FASHION_MNIST_DIR "/train-images-idx3-ubyte", R_OK) == 0;
    if (have_real) {
        test_real();
    } else {
        printf("Fashion-MNIST not found in %s (Debian package dataset-fashion-mnist): "
               "skipping the real-data checks\n", EF_FASHION_MNIST_DIR);
    }
    int rc = tu_finish("data/test_idx");
    return rc == 0 && !have_real ? TU_SKIP : rc;
}
