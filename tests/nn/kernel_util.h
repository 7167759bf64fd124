/*
 * Buffers of random floats for the kernel tests: one seeded generator per
 * test program (`rng`, seeded in main) and allocation helpers that abort the
 * test on out-of-memory.
 */
#ifndef EDGEFL_TEST_KERNEL_UTIL_H
#define EDGEFL_TEST_KERNEL_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgefl/rng.h"

static ef_rng rng;

/* Zeroed floats (n may be 0). */
static float *falloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

/* x (n) ~ Normal(mean, sd) from `rng`. */
static void fill(float *x, size_t n, double mean, double sd) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(mean + sd * ef_rng_normal(&rng));
}

static float *filled(size_t n, double mean, double sd) {
    float *x = falloc(n);
    fill(x, n, mean, sd);
    return x;
}

static float *dup(const float *x, size_t n) {
    float *y = falloc(n);
    memcpy(y, x, n * sizeof(float));
    return y;
}

#endif /* EDGEFL_TEST_KERNEL_UTIL_H */
