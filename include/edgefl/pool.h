/*
 * Thread pool for data-parallel kernels. The caller's thread takes part as
 * thread 0, so a pool of T threads starts T-1 workers. Work is split
 * statically (same thread count, same split), which keeps results
 * bit-identical from run to run.
 */
#ifndef EDGEFL_POOL_H
#define EDGEFL_POOL_H

#include "edgefl/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ef_pool ef_pool;

/* Function run once on each thread: `thread` in [0, n_threads). */
typedef void (*ef_pool_fn)(void *ctx, int thread, int n_threads);

/* Function run on one contiguous chunk [begin, end) of a range. */
typedef void (*ef_range_fn)(void *ctx, int64_t begin, int64_t end, int thread);

/*
 * Creates a pool of `n_threads` threads (the caller counts as one); 0 means
 * the number of online CPUs. Returns EF_ERR_INVALID for n_threads < 0 or
 * > 1024. On success *out must be freed with ef_pool_free.
 */
EF_API ef_status ef_pool_new(ef_pool **out, int n_threads);

/* Stops and joins the workers, frees the pool. NULL is a no-op. */
EF_API void ef_pool_free(ef_pool *p);

/* Number of threads, including the caller; 1 for a NULL pool. */
EF_API int ef_pool_threads(const ef_pool *p);

/*
 * Runs fn(ctx, t, T) on every thread t of the pool and returns when all are
 * done. With a NULL pool, a 1-thread pool, or when called from inside a pool
 * task, runs fn(ctx, 0, 1) on the calling thread. Calls from several
 * threads at once are serialized.
 */
EF_API void ef_pool_run(ef_pool *p, ef_pool_fn fn, void *ctx);

/*
 * Splits [0, n) into contiguous chunks, one per thread (static, balanced to
 * within one element), and runs fn on each non-empty chunk.
 */
EF_API void ef_pool_for(ef_pool *p, int64_t n, ef_range_fn fn, void *ctx);

/* The chunk [*begin, *end) of [0, n) that part `part` of `parts` gets
 * (empty for n <= 0 or a part outside [0, parts)). */
EF_API void ef_split_range(int64_t n, int part, int parts, int64_t *begin, int64_t *end);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_POOL_H */
