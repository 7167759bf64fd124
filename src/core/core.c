/*
 * Core services: status strings, the thread-local last-error message, the
 * allocator hook, the log sink, CPU feature detection and process metrics.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "core_internal.h"

/* ---- status and errors ------------------------------------------------ */

const char *ef_strerror(ef_status st) {
    switch (st) {
    case EF_OK: return "success";
    case EF_ERR_INVALID: return "invalid argument";
    case EF_ERR_NOMEM: return "out of memory";
    case EF_ERR_IO: return "input/output error";
    case EF_ERR_FORMAT: return "malformed input";
    case EF_ERR_NOT_FOUND: return "not found";
    case EF_ERR_UNSUPPORTED: return "unsupported";
    case EF_ERR_RANGE: return "out of range";
    case EF_ERR_STATE: return "invalid state";
    case EF_ERR_INTERNAL: return "internal error";
    case EF_ERR_AUTH: return "authentication failed";
    }
    return "unknown status";
}

static _Thread_local char tls_error[1024];

ef_status ef__fail(ef_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_error, sizeof tls_error, fmt, ap);
    va_end(ap);
    return st;
}

const char *ef_last_error(void) { return tls_error; }

void ef_clear_error(void) { tls_error[0] = '\0'; }

const char *ef_version(void) { return EF_VERSION_STRING; }

/* ---- allocator hook ---------------------------------------------------- */

static void *default_malloc(void *user, size_t size) {
    EF_UNUSED(user);
    return malloc(size);
}
static void *default_realloc(void *user, void *ptr, size_t size) {
    EF_UNUSED(user);
    return realloc(ptr, size);
}
static void default_free(void *user, void *ptr) {
    EF_UNUSED(user);
    free(ptr);
}

static ef_allocator g_alloc = {default_malloc, default_realloc, default_free, NULL};

void ef_set_allocator(const ef_allocator *a) {
    if (a == NULL || a->malloc == NULL || a->free == NULL) {
        g_alloc = (ef_allocator){default_malloc, default_realloc, default_free, NULL};
    } else {
        g_alloc = *a;
    }
}

void *ef_malloc(size_t size) {
    void *p = g_alloc.malloc(g_alloc.user, size ? size : 1);
    if (p == NULL) ef__fail(EF_ERR_NOMEM, "out of memory allocating %zu bytes", size);
    return p;
}

void *ef_calloc(size_t n, size_t size) {
    size_t total;
    if (!ef__mul_size(n, size, &total)) {
        ef__fail(EF_ERR_NOMEM, "allocation of %zu x %zu bytes overflows", n, size);
        return NULL;
    }
    void *p = ef_malloc(total);
    if (p) memset(p, 0, total ? total : 1);
    return p;
}

void *ef_realloc(void *ptr, size_t size) {
    if (ptr == NULL) return ef_malloc(size);
    if (g_alloc.realloc == NULL) {
        ef__fail(EF_ERR_NOMEM, "allocator has no realloc");
        return NULL;
    }
    void *p = g_alloc.realloc(g_alloc.user, ptr, size ? size : 1);
    if (p == NULL) ef__fail(EF_ERR_NOMEM, "out of memory reallocating to %zu bytes", size);
    return p;
}

char *ef_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = ef_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

void ef_free(void *ptr) {
    if (ptr) g_alloc.free(g_alloc.user, ptr);
}

/* ---- logging ------------------------------------------------------------ */

static ef_log_fn g_log_fn = NULL;
static void *g_log_user = NULL;
static ef_log_level g_log_level = EF_LOG_WARN;

void ef_log_set(ef_log_fn fn, void *user, ef_log_level max_level) {
    g_log_fn = fn;
    g_log_user = user;
    g_log_level = max_level;
}

void ef_log(ef_log_level level, const char *fmt, ...) {
    if (level > g_log_level) return;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (g_log_fn) {
        g_log_fn(g_log_user, level, buf);
    } else {
        static const char *names[] = {"error", "warning", "info", "debug"};
        fprintf(stderr, "edgefl: %s: %s\n", names[level], buf);
    }
}

/* ---- CPU features ------------------------------------------------------- */

static unsigned g_cpu_mask = ~0u;
static int g_cpu_env_read = 0;

static unsigned detect_features(void) {
    unsigned f = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) f |= EF_CPU_AVX2;
    if (__builtin_cpu_supports("avx512f")) f |= EF_CPU_AVX512;
#endif
    return f;
}

unsigned ef_cpu_features(void) {
    if (!g_cpu_env_read) {
        g_cpu_env_read = 1;
        const char *e = getenv("EDGEFL_CPU");
        if (e && strcmp(e, "scalar") == 0) g_cpu_mask = 0;
        else if (e && strcmp(e, "avx2") == 0) g_cpu_mask = EF_CPU_AVX2;
    }
    static unsigned detected = 0;
    static int done = 0;
    if (!done) {
        detected = detect_features();
        done = 1;
    }
    return detected & g_cpu_mask;
}

void ef_cpu_limit(unsigned mask) {
    g_cpu_env_read = 1;
    g_cpu_mask = mask;
}

/* ---- process metrics ---------------------------------------------------- */

double ef_peak_rss_mb(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0.0;
    return (double)ru.ru_maxrss / 1024.0; /* Linux reports KiB */
}

double ef_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
