/*
 * Internal helpers shared by every edgefl source file: setting the thread's
 * last error while returning a status, checked size arithmetic.
 */
#ifndef EDGEFL_CORE_INTERNAL_H
#define EDGEFL_CORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgefl/core.h"

/* Records a formatted message as the thread's last error and returns `st`. */
ef_status ef__fail(ef_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* *out = a * b; false on overflow. */
static inline bool ef__mul_size(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}

/* *out = a + b; false on overflow. */
static inline bool ef__add_size(size_t a, size_t b, size_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

#define EF_UNUSED(x) ((void)(x))

#endif /* EDGEFL_CORE_INTERNAL_H */
