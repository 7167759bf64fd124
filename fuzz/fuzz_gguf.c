/*
 * libFuzzer target for the GGUF reader: any input must be refused with a
 * status or give a handle whose every pointer lies inside the input: tensor
 * data within the file and consistent with the type and shape, every key
 * and tensor findable by name, every metadata element readable through the
 * typed accessors, and small float tensors convertible without reading out
 * of bounds. Inputs go through ef_gguf_open (a memfd, so the mmap path is
 * exercised) and ef_gguf_open_memory, which must agree.
 */
#include <stdlib.h>
#include <string.h>

#include "edgefl/gguf.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void walk(const ef_gguf *g, const uint8_t *base, size_t size) {
    for (size_t k = 0; k < ef_gguf_kv_count(g); k++) {
        const ef_gguf_kv *kv = ef_gguf_kv_at(g, k);
        if (ef_gguf_find_key(g, kv->key) != (int64_t)k) abort();
        if (kv->elem_type == EF_GGUF_ARRAY) abort();
        for (uint64_t i = 0; i < kv->n && i < 64; i++) {
            int64_t iv;
            uint64_t uv;
            double dv;
            bool bv;
            const char *s;
            size_t len;
            (void)ef_gguf_kv_int(g, k, i, &iv);
            (void)ef_gguf_kv_uint(g, k, i, &uv);
            (void)ef_gguf_kv_float(g, k, i, &dv);
            (void)ef_gguf_kv_bool(g, k, i, &bv);
            if (ef_gguf_kv_str(g, k, i, &s, &len) == EF_OK && s[len] != '\0') abort();
        }
    }
    for (size_t i = 0; i < ef_gguf_tensor_count(g); i++) {
        const ef_gguf_tensor *t = ef_gguf_tensor_at(g, i);
        const uint8_t *d = t->data;
        if (t->nbytes > size || d < base || (size_t)(d - base) > size - t->nbytes) abort();
        if (ef_gguf_find_tensor(g, t->name) != t) abort();
        if (t->offset % ef_gguf_alignment(g) != 0) abort();
        size_t row;
        if (ef_ggml_row_size(t->type, t->ne[0], &row) != EF_OK) abort();
        if (t->n_elements > 0 && t->n_elements <= (1 << 16)) {
            float *out = malloc((size_t)t->n_elements * sizeof *out);
            if (out) {
                (void)ef_dequantize(t->type, t->data, out, t->n_elements);
                free(out);
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_file(data, size, path, sizeof path);
    if (fd < 0) return 0;
    ef_gguf *g = NULL, *gm = NULL;
    ef_status st = ef_gguf_open(&g, path);
    ef_status sm = ef_gguf_open_memory(&gm, data, size, "fuzz");
    if ((st == EF_OK) != (sm == EF_OK)) abort();
    if (g) {
        /* the file path maps its own copy: check against that mapping's bytes */
        const ef_gguf_tensor *t0 = ef_gguf_tensor_at(g, 0);
        if (t0 && t0->nbytes && memcmp(t0->data, data + ef_gguf_data_offset(g) + t0->offset,
                                       t0->nbytes) != 0)
            abort();
        if (ef_gguf_kv_count(g) != ef_gguf_kv_count(gm)) abort();
        ef_gguf_close(g);
    }
    if (gm) {
        walk(gm, data, size);
        ef_gguf_close(gm);
    }
    close(fd);
    return 0;
}
