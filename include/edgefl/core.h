/*
 * edgefl core: status codes and error messages, the allocator hook, logging,
 * version and CPU feature queries. Every other edgefl header includes this one.
 *
 * Error convention: functions return `ef_status` (EF_OK == 0). On failure they
 * also leave a human-readable message in a thread-local buffer, read with
 * ef_last_error(); the message names the file, field or argument at fault.
 */
#ifndef EDGEFL_CORE_H
#define EDGEFL_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "edgefl/export.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EF_VERSION_MAJOR 0
#define EF_VERSION_MINOR 1
#define EF_VERSION_PATCH 0
#define EF_VERSION_STRING "0.1.0"

/* The one status enum of the library. Values are stable across versions. */
typedef enum ef_status {
    EF_OK = 0,
    EF_ERR_INVALID = 1,     /* invalid argument or configuration */
    EF_ERR_NOMEM = 2,       /* allocation failed */
    EF_ERR_IO = 3,          /* open/read/write/rename failed */
    EF_ERR_FORMAT = 4,      /* malformed, truncated or corrupt input */
    EF_ERR_NOT_FOUND = 5,   /* a named item (file, tensor) does not exist */
    EF_ERR_UNSUPPORTED = 6, /* valid but not supported by this build */
    EF_ERR_RANGE = 7,       /* value or size out of range, overflow */
    EF_ERR_STATE = 8,       /* call not valid in the object's current state */
    EF_ERR_INTERNAL = 9,    /* a bug in edgefl */
    EF_ERR_AUTH = 10        /* unsigned, unknown sender, bad signature or replayed message */
} ef_status;

/* Short static description of a status code; never NULL. */
EF_API const char *ef_strerror(ef_status st);

/*
 * Detail of the most recent failure in the calling thread (thread-local,
 * overwritten by the next failure). Never NULL; "" if nothing failed yet.
 */
EF_API const char *ef_last_error(void);

/* Clears the calling thread's last error message. */
EF_API void ef_clear_error(void);

/* Library version string, e.g. "0.1.0". */
EF_API const char *ef_version(void);

/*
 * Allocator hook. Every allocation edgefl makes goes through these three
 * functions, so tests can inject out-of-memory and embedders can use their
 * own heaps. `realloc` may be NULL (edgefl then never reallocates through it).
 */
typedef struct ef_allocator {
    void *(*malloc)(void *user, size_t size);
    void *(*realloc)(void *user, void *ptr, size_t size);
    void (*free)(void *user, void *ptr);
    void *user;
} ef_allocator;

/*
 * Installs `a` (copied) as the allocator; NULL restores malloc/realloc/free.
 * Not thread-safe: call before creating any edgefl object, and free every
 * object allocated under one allocator before switching to another.
 */
EF_API void ef_set_allocator(const ef_allocator *a);

/* Allocate through the hook. Return NULL on failure (and set the last error).
 * ef_malloc(0) returns a unique non-NULL pointer. Free with ef_free. */
EF_API void *ef_malloc(size_t size);
/* Zeroed allocation of n*size bytes, overflow-checked. */
EF_API void *ef_calloc(size_t n, size_t size);
/* Resize; on failure the old block is untouched and NULL is returned. */
EF_API void *ef_realloc(void *ptr, size_t size);
/* Duplicate a NUL-terminated string; NULL on failure. */
EF_API char *ef_strdup(const char *s);
/* Frees memory from ef_malloc/ef_calloc/ef_realloc/ef_strdup; NULL is a no-op. */
EF_API void ef_free(void *ptr);

/* Log levels, most severe first. */
typedef enum ef_log_level {
    EF_LOG_ERROR = 0,
    EF_LOG_WARN = 1,
    EF_LOG_INFO = 2,
    EF_LOG_DEBUG = 3
} ef_log_level;

/* Receives each log line (no trailing newline). */
typedef void (*ef_log_fn)(void *user, ef_log_level level, const char *msg);

/*
 * Routes log lines at or above `max_level` to `fn` (NULL: stderr, the
 * default). Default level is EF_LOG_WARN.
 */
EF_API void ef_log_set(ef_log_fn fn, void *user, ef_log_level max_level);

/* printf-style logging through the installed sink. */
EF_API void ef_log(ef_log_level level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* CPU features used to pick kernels at run time. */
enum {
    EF_CPU_AVX2 = 1u << 0, /* AVX2 + FMA */
    EF_CPU_AVX512 = 1u << 1 /* AVX-512F */
};

/* Features detected on this CPU, masked by ef_cpu_limit(). */
EF_API unsigned ef_cpu_features(void);

/*
 * Restricts the kernels edgefl may use to `mask` (e.g. 0 forces the portable
 * scalar paths; tests use it). Also settable with the environment variable
 * EDGEFL_CPU=scalar|avx2. Call before heavy work; not thread-safe.
 */
EF_API void ef_cpu_limit(unsigned mask);

/* Peak resident set size of this process in MiB (from getrusage). */
EF_API double ef_peak_rss_mb(void);

/* Monotonic clock in seconds (for progress output and benchmarks). */
EF_API double ef_now(void);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_CORE_H */
