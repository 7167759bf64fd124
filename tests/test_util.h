/*
 * Minimal test harness shared by the C tests: CHECK-style assertions that
 * count failures and print where they happened, and helpers to skip a test
 * (exit 77) when an optional peer is missing.
 */
#ifndef EDGEFL_TEST_UTIL_H
#define EDGEFL_TEST_UTIL_H

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static int tu_failures = 0;
static int tu_checks = 0;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        tu_checks++;                                                                   \
        if (!(cond)) {                                                                 \
            tu_failures++;                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);  \
        }                                                                              \
    } while (0)

#define CHECK_MSG(cond, ...)                                                           \
    do {                                                                               \
        tu_checks++;                                                                   \
        if (!(cond)) {                                                                 \
            tu_failures++;                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);  \
            fprintf(stderr, __VA_ARGS__);                                              \
            fprintf(stderr, "\n");                                                     \
        }                                                                              \
    } while (0)

#define CHECK_OK(expr)                                                                 \
    do {                                                                               \
        tu_checks++;                                                                   \
        ef_status st_ = (expr);                                                        \
        if (st_ != EF_OK) {                                                            \
            tu_failures++;                                                             \
            fprintf(stderr, "%s:%d: %s returned %s: %s\n", __FILE__, __LINE__, #expr,  \
                    ef_strerror(st_), ef_last_error());                                \
        }                                                                              \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                          \
    do {                                                                               \
        tu_checks++;                                                                   \
        double a_ = (a), b_ = (b);                                                     \
        if (!(fabs(a_ - b_) <= (tol))) {                                               \
            tu_failures++;                                                             \
            fprintf(stderr, "%s:%d: %s = %.9g, %s = %.9g, |diff| > %g\n", __FILE__,    \
                    __LINE__, #a, a_, #b, b_, (double)(tol));                          \
        }                                                                              \
    } while (0)

/* Prints the summary and returns the process exit code. */
static inline int tu_finish(const char *name) {
    if (tu_failures) {
        fprintf(stderr, "%s: %d of %d checks FAILED\n", name, tu_failures, tu_checks);
        return 1;
    }
    printf("%s: all %d checks passed\n", name, tu_checks);
    return 0;
}

static int tu_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes a directory tree made by a test (errors ignored). */
static inline void tu_rmtree(const char *dir) { nftw(dir, tu_rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* Exit code CTest treats as "skipped". */
#define TU_SKIP 77

#endif /* EDGEFL_TEST_UTIL_H */
