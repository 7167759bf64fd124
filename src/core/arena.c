/*
 * Bump allocator with a measuring pass (see include/edgefl/arena.h).
 */
#include <string.h>

#include "core_internal.h"
#include "edgefl/arena.h"

void ef_arena_measure(ef_arena *a) {
    ef_arena_free(a);
    a->measuring = 1;
}

ef_status ef_arena_reserve(ef_arena *a, size_t bytes) {
    ef_arena_free(a);
    size_t total;
    if (!ef__add_size(bytes, EF_ARENA_ALIGN, &total))
        return ef__fail(EF_ERR_NOMEM, "arena of %zu bytes is too large", bytes);
    void *blk = ef_malloc(total);
    if (blk == NULL) return EF_ERR_NOMEM;
    memset(blk, 0, total);
    uintptr_t p = (uintptr_t)blk;
    uintptr_t aligned = (p + EF_ARENA_ALIGN - 1) & ~(uintptr_t)(EF_ARENA_ALIGN - 1);
    a->block = blk;
    a->base = (unsigned char *)aligned;
    a->cap = bytes;
    a->used = 0;
    a->measuring = 0;
    return EF_OK;
}

void *ef_arena_alloc(ef_arena *a, size_t bytes) {
    size_t start = (a->used + EF_ARENA_ALIGN - 1) & ~(size_t)(EF_ARENA_ALIGN - 1);
    size_t end;
    if (!ef__add_size(start, bytes, &end)) return NULL;
    if (a->measuring) {
        a->used = end;
        return NULL;
    }
    if (a->base == NULL || end > a->cap) {
        ef__fail(EF_ERR_INTERNAL, "arena exhausted: %zu of %zu bytes", end, a->cap);
        return NULL;
    }
    a->used = end;
    return a->base + start;
}

float *ef_arena_floats(ef_arena *a, size_t n) {
    size_t bytes;
    if (!ef__mul_size(n, sizeof(float), &bytes)) return NULL;
    return ef_arena_alloc(a, bytes);
}

void ef_arena_reset(ef_arena *a) { a->used = 0; }

void ef_arena_free(ef_arena *a) {
    ef_free(a->block);
    memset(a, 0, sizeof *a);
}
