/*
 * Prefix reads: ef_idx_read_prefix and ef_dataset_load_n return exactly the
 * first N examples of the full read, report the file's declared count, still
 * refuse a bad header, and still check an uncompressed file's size.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgefl/data.h"
#include "test_util.h"

#define DIR EF_FASHION_MNIST_DIR

int main(void) {
    ef_idx full, part;
    char path[512];
    snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte.gz", DIR);
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "%s missing: skipped\n", path);
        return TU_SKIP;
    }
    CHECK_OK(ef_idx_read(path, 0, &full));
    CHECK_OK(ef_idx_read_prefix(path, 123, 0, &part));
    CHECK(part.dims[0] == 123 && part.file_dim0 == 10000 && full.file_dim0 == 10000);
    CHECK(part.count == 123u * 28 * 28 && part.dims[1] == 28 && part.dims[2] == 28);
    CHECK(memcmp(part.data, full.data, part.count) == 0);
    ef_idx_free(&part);
    /* a prefix at least as long as the file reads everything */
    CHECK_OK(ef_idx_read_prefix(path, 20000, 0, &part));
    CHECK(part.dims[0] == 10000 && memcmp(part.data, full.data, full.count) == 0);
    ef_idx_free(&part);

    ef_dataset a = {0}, b = {0};
    CHECK_OK(ef_dataset_load(&a, "fashion-mnist", NULL, 0));
    CHECK_OK(ef_dataset_load_n(&b, "fashion-mnist", NULL, 0, 500));
    CHECK(b.n == 500 && a.n == 10000 && b.mean == a.mean && b.std == a.std);
    CHECK(memcmp(a.images, b.images, 500 * 784) == 0 && memcmp(a.labels, b.labels, 500) == 0);
    ef_dataset_free(&a);
    ef_dataset_free(&b);

    /* an uncompressed file cut short is refused even when the prefix fits */
    char dir[] = "/tmp/edgefl-prefix-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char cut[600];
    snprintf(cut, sizeof cut, "%s/cut-idx3-ubyte", dir);
    FILE *f = fopen(cut, "wb");
    unsigned char hdr[16] = {0, 0, 8, 3, 0, 0, 0x27, 0x10, 0, 0, 0, 28, 0, 0, 0, 28};
    fwrite(hdr, 1, sizeof hdr, f);
    fwrite(full.data, 1, 5000 * 784, f); /* declares 10000 images, holds 5000 */
    fclose(f);
    CHECK(ef_idx_read_prefix(cut, 10, 0, &part) == EF_ERR_FORMAT);
    CHECK(strstr(ef_last_error(), "truncated") != NULL);
    /* a bad magic is refused whatever the prefix */
    f = fopen(cut, "wb");
    hdr[2] = 0x42;
    fwrite(hdr, 1, sizeof hdr, f);
    fclose(f);
    CHECK(ef_idx_read_prefix(cut, 1, 0, &part) == EF_ERR_FORMAT);
    unlink(cut);
    rmdir(dir);
    ef_idx_free(&full);
    return tu_finish("data/test_prefix");
}
