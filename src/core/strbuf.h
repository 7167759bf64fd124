/*
 * Internal: a growable NUL-terminated text buffer and the small text helpers
 * the report writer (src/sim/metrics.c) and the dashboard (src/serve) share.
 * Appends never fail loudly: the first allocation failure sets `oom`, later
 * appends do nothing, and the caller checks `oom` once at the end.
 */
#ifndef EF_CORE_STRBUF_H
#define EF_CORE_STRBUF_H

#include <stddef.h>

typedef struct ef__sb {
    char *p;      /* the text (NUL-terminated once anything was appended), ef_malloc'd */
    size_t len;   /* bytes of text */
    size_t cap;   /* bytes allocated */
    int oom;      /* an append failed: the content is incomplete */
} ef__sb;

/* Room for `extra` more bytes (and the NUL). 0 (and oom set) on failure. */
int ef__sb_reserve(ef__sb *b, size_t extra);

/* Appends n bytes of s / the string s / printf-formatted text. */
void ef__sb_put(ef__sb *b, const char *s, size_t n);
void ef__sb_puts(ef__sb *b, const char *s);
void ef__sb_printf(ef__sb *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Frees the text and zeroes the buffer. */
void ef__sb_free(ef__sb *b);

/* Length in bytes of the valid UTF-8 sequence at s (at most n bytes), or 0
 * when the bytes there are not one (overlong forms, surrogates and code
 * points above U+10FFFF included). */
size_t ef__utf8_seq(const unsigned char *s, size_t n);

/* The shortest of %.15g/%.16g/%.17g that reads back as the same double:
 * exact like %.17g, but 0.9 stays "0.9". The caller has the "C" numeric
 * locale in effect. `cap` >= 32. */
void ef__fmt_exact(char *out, size_t cap, double v);

#endif /* EF_CORE_STRBUF_H */
