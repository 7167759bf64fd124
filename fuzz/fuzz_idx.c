/*
 * libFuzzer target for the IDX reader (plain and gzip input): any input must
 * be either decoded consistently or refused with a status, never crash,
 * hang or leak.
 */
#include <stdlib.h>
#include <string.h>

#include "edgefl/data.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_file(data, size, path, sizeof path);
    if (fd < 0) return 0;
    ef_idx idx;
    /* a small bound keeps huge declared sizes from exhausting memory */
    if (ef_idx_read(path, 1 << 24, &idx) == EF_OK) {
        size_t count = 1;
        for (int d = 0; d < idx.ndim; d++) count *= idx.dims[d];
        if (count != idx.count || idx.ndim < 1 || idx.ndim > 8) abort();
        ef_idx_free(&idx);
    }
    close(fd);
    return 0;
}
