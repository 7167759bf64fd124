/*
 * Image-classification datasets held in memory as raw uint8 pixels and
 * labels, loaded from IDX files (by path or by dataset name), and the batch
 * gather that turns them into normalized floats for training.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/core_internal.h"
#include "edgefl/data.h"

/* Known datasets. File names follow the original MNIST distribution. */
typedef struct dataset_desc {
    const char *name;
    const char *default_dir;
    const char *train_prefix, *test_prefix; /* "<prefix>-images-idx3-ubyte" */
    int n_classes;
    float mean, std; /* of pixel/255 over the training split */
} dataset_desc;

static const dataset_desc k_datasets[] = {
    {"fashion-mnist", EF_FASHION_MNIST_DIR, "train", "t10k", 10, 0.2860f, 0.3530f},
};
#define N_DATASETS (sizeof k_datasets / sizeof k_datasets[0])

#define DS_PATH_MAX 4096

ef_status ef_dataset_load_idx(ef_dataset *out, const char *images_path, const char *labels_path,
                              int n_classes) {
    return ef_dataset_load_idx_n(out, images_path, labels_path, n_classes, 0);
}

ef_status ef_dataset_load_idx_n(ef_dataset *out, const char *images_path,
                                const char *labels_path, int n_classes, uint32_t max_examples) {
    ef_status st;
    ef_idx img, lab;
    memset(&img, 0, sizeof img);
    memset(&lab, 0, sizeof lab);
    if (out) memset(out, 0, sizeof *out);
    if (!out || !images_path || !labels_path)
        return ef__fail(EF_ERR_INVALID, "ef_dataset_load_idx: NULL argument");
    /* Labels are stored as bytes, so more than 256 classes cannot occur. */
    if (n_classes < 1 || n_classes > 256)
        return ef__fail(EF_ERR_INVALID, "ef_dataset_load_idx: n_classes %d not in 1..256",
                        n_classes);

    if ((st = ef_idx_read_prefix(images_path, max_examples, 0, &img)) != EF_OK) goto fail;
    if (img.type != EF_IDX_U8 || (img.ndim != 3 && img.ndim != 4)) {
        st = ef__fail(EF_ERR_FORMAT,
                      "%s: not an image file: expected u8 elements with dims (n, h, w) or "
                      "(n, c, h, w), got type 0x%02x with %d dims",
                      images_path, (unsigned)img.type, img.ndim);
        goto fail;
    }
    uint32_t c = img.ndim == 4 ? img.dims[1] : 1;
    uint32_t h = img.dims[img.ndim - 2], w = img.dims[img.ndim - 1];
    /* The struct keeps c, h, w as int; the product fits because ef_idx_read
     * bounded the whole file, but each factor must fit on its own too. */
    if (c > INT32_MAX || h > INT32_MAX || w > INT32_MAX) {
        st = ef__fail(EF_ERR_RANGE, "%s: image dimensions too large", images_path);
        goto fail;
    }

    if ((st = ef_idx_read_prefix(labels_path, max_examples, 0, &lab)) != EF_OK) goto fail;
    if (lab.type != EF_IDX_U8 || lab.ndim != 1) {
        st = ef__fail(EF_ERR_FORMAT,
                      "%s: not a label file: expected u8 elements with dims (n), got type "
                      "0x%02x with %d dims",
                      labels_path, (unsigned)lab.type, lab.ndim);
        goto fail;
    }
    if (lab.file_dim0 != img.file_dim0) {
        st = ef__fail(EF_ERR_FORMAT, "%s: %u labels, but %s has %u images", labels_path,
                      lab.file_dim0, images_path, img.file_dim0);
        goto fail;
    }
    const uint8_t *labels = lab.data;
    for (size_t i = 0; i < lab.count; i++) {
        if (labels[i] >= n_classes) {
            st = ef__fail(EF_ERR_FORMAT, "%s: label %u at index %zu is not below %d classes",
                          labels_path, labels[i], i, n_classes);
            goto fail;
        }
    }

    out->n = img.dims[0];
    out->c = (int)c;
    out->h = (int)h;
    out->w = (int)w;
    out->n_classes = n_classes;
    out->images = img.data; /* ownership moves: both were allocated with ef_malloc */
    out->labels = lab.data;
    out->mean = 0.0f;
    out->std = 1.0f;
    return EF_OK;

fail:
    ef_idx_free(&img);
    ef_idx_free(&lab);
    return st;
}

/*
 * Picks "<dir>/<base>.gz" if it exists, else "<dir>/<base>". When neither
 * exists the error names both candidates. Anything other than "does not
 * exist" (permissions, say) selects that path so ef_idx_read reports it.
 */
static ef_status pick_file(char *buf, const char *dsname, const char *dir, const char *base) {
    struct stat sb;
    int n = snprintf(buf, DS_PATH_MAX, "%s/%s.gz", dir, base);
    if (n < 0 || n >= DS_PATH_MAX)
        return ef__fail(EF_ERR_INVALID, "%s: directory path too long: %s", dsname, dir);
    if (stat(buf, &sb) == 0 || errno != ENOENT) return EF_OK;
    buf[n - 3] = '\0';
    if (stat(buf, &sb) == 0 || errno != ENOENT) return EF_OK;
    return ef__fail(EF_ERR_NOT_FOUND, "%s: neither %s.gz nor %s exists", dsname, buf, buf);
}

ef_status ef_dataset_load(ef_dataset *out, const char *name, const char *dir, int train) {
    return ef_dataset_load_n(out, name, dir, train, 0);
}

ef_status ef_dataset_load_n(ef_dataset *out, const char *name, const char *dir, int train,
                            uint32_t max_examples) {
    if (out) memset(out, 0, sizeof *out);
    if (!out || !name) return ef__fail(EF_ERR_INVALID, "ef_dataset_load: NULL argument");
    const dataset_desc *d = NULL;
    for (size_t i = 0; i < N_DATASETS; i++)
        if (strcmp(k_datasets[i].name, name) == 0) d = &k_datasets[i];
    if (!d) {
        char known[256] = "";
        size_t len = 0;
        for (size_t i = 0; i < N_DATASETS && len < sizeof known; i++)
            len += (size_t)snprintf(known + len, sizeof known - len, "%s%s", i ? ", " : "",
                                    k_datasets[i].name);
        return ef__fail(EF_ERR_NOT_FOUND, "unknown dataset '%s' (known: %s)", name, known);
    }
    if (!dir) dir = d->default_dir;
    const char *prefix = train ? d->train_prefix : d->test_prefix;

    char base[128];
    char images[DS_PATH_MAX], labels[DS_PATH_MAX];
    ef_status st;
    snprintf(base, sizeof base, "%s-images-idx3-ubyte", prefix);
    if ((st = pick_file(images, d->name, dir, base)) != EF_OK) return st;
    snprintf(base, sizeof base, "%s-labels-idx1-ubyte", prefix);
    if ((st = pick_file(labels, d->name, dir, base)) != EF_OK) return st;
    if ((st = ef_dataset_load_idx_n(out, images, labels, d->n_classes, max_examples)) != EF_OK)
        return st;
    out->mean = d->mean;
    out->std = d->std;
    return EF_OK;
}

void ef_dataset_free(ef_dataset *ds) {
    if (!ds) return;
    ef_free(ds->images);
    ef_free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

size_t ef_dataset_example_size(const ef_dataset *ds) {
    return (size_t)ds->c * (size_t)ds->h * (size_t)ds->w;
}

void ef_dataset_batch(const ef_dataset *ds, const uint32_t *idx, size_t n, float *x, int32_t *y) {
    /* Only 256 distinct inputs exist, so a table built per call (256 divides)
     * replaces a divide per pixel on the training hot path. The formula is
     * exactly the one documented, so results match it bit for bit. */
    float lut[256];
    for (int v = 0; v < 256; v++) lut[v] = ((float)v / 255.0f - ds->mean) / ds->std;
    size_t ex = ef_dataset_example_size(ds);
    for (size_t b = 0; b < n; b++) {
        const uint8_t *src = ds->images + (size_t)idx[b] * ex;
        float *dst = x + b * ex;
        for (size_t j = 0; j < ex; j++) dst[j] = lut[src[j]];
        if (y) y[b] = ds->labels[idx[b]];
    }
}
