/*
 * Arenas: one block of memory carved by a bump pointer, freed at once.
 * Models use one arena each for parameters, gradients, optimizer state and
 * activations. The two-pass pattern: run the layout code once on a measuring
 * arena (ef_arena_measure) to learn the total size, then ef_arena_reserve
 * one block and run the same layout code again to hand out pointers.
 */
#ifndef EDGEFL_ARENA_H
#define EDGEFL_ARENA_H

#include "edgefl/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Plain struct so it can live inside other objects; treat fields as private. */
typedef struct ef_arena {
    unsigned char *base; /* NULL while measuring */
    size_t cap;          /* usable bytes at base */
    size_t used;         /* bytes handed out, including alignment padding */
    void *block;         /* allocation returned by ef_malloc (to free) */
    int measuring;
} ef_arena;

/* Default alignment of ef_arena_alloc: 64 bytes (a cache line, any SIMD). */
#define EF_ARENA_ALIGN 64

/* Starts a measuring pass: allocations return NULL but count their size. */
EF_API void ef_arena_measure(ef_arena *a);

/*
 * Allocates one block of `bytes` (use the `used` total of a measuring pass)
 * and resets the arena to hand it out. Memory is zeroed. Any previous block
 * is freed. Returns EF_ERR_NOMEM on failure (arena left empty).
 */
EF_API ef_status ef_arena_reserve(ef_arena *a, size_t bytes);

/*
 * Hands out `bytes` aligned to EF_ARENA_ALIGN. While measuring returns NULL
 * and only counts. Otherwise returns NULL if the block is exhausted (a layout
 * bug: the measuring pass and the real pass disagreed).
 */
EF_API void *ef_arena_alloc(ef_arena *a, size_t bytes);

/* Same for `n` floats. */
EF_API float *ef_arena_floats(ef_arena *a, size_t n);

/* Rewinds to empty without freeing (the block is reused). */
EF_API void ef_arena_reset(ef_arena *a);

/* Frees the block; the arena becomes empty. Safe on a zeroed arena. */
EF_API void ef_arena_free(ef_arena *a);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_ARENA_H */
