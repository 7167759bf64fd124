/*
 * libFuzzer target for the safetensors reader: any input must be refused
 * with a status or yield tensors whose data lies inside the file and whose
 * sizes agree with dtype and shape; converting each float tensor must not
 * read out of bounds.
 */
#include <stdlib.h>
#include <string.h>

#include "edgefl/io.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_file(data, size, path, sizeof path);
    if (fd < 0) return 0;
    ef_safetensors *st = NULL;
    if (ef_safetensors_open(&st, path) == EF_OK) {
        for (size_t i = 0; i < ef_safetensors_count(st); i++) {
            const ef_st_tensor *t = ef_safetensors_tensor(st, i);
            if (t->nbytes > size) abort();
            if (ef_safetensors_find(st, t->name) != t) abort();
            if (t->numel <= (1u << 20)) {
                float *out = malloc((t->numel ? t->numel : 1) * sizeof(float));
                if (out) {
                    (void)ef_st_tensor_to_f32(t, out);
                    free(out);
                }
            }
        }
        ef_safetensors_close(st);
    }
    close(fd);
    return 0;
}
