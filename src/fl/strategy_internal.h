/*
 * Kernels of the robust strategies (src/fl/strategy.c), exposed for the
 * tests, which check them against naive sort-based references.
 */
#ifndef EDGEFL_STRATEGY_INTERNAL_H
#define EDGEFL_STRATEGY_INTERNAL_H

#include <stddef.h>

/* Updates above this count use per-coordinate selection instead of the
 * sorting network. */
#define EF__STRATEGY_NET_MAX 512

/* Rearranges a[0..n) (no NaN) so that a[k] is the value of rank k, with
 * a[0..k) <= a[k] <= a[k+1..n): introselect. `budget` is the number of
 * partition rounds before it falls back to heapsort; < 0 picks the default
 * 2 log2(n) + 8 (tests pass small values to reach the fallback). */
void ef__select_kth(float *a, size_t n, size_t k, int budget);

/* Median of a[0..n) (reordered; n >= 1), the mean of the two middle values
 * for even n. */
double ef__median_select(float *a, size_t n);

/* Mean of a[0..n) (reordered) without its `cut` smallest and `cut` largest
 * values; 2 * cut < n. */
double ef__trimmed_select(float *a, size_t n, size_t cut);

/* Sorts, lane by lane, the n rows of B floats in r (row i at r + i * B):
 * afterwards r[i * B + x] is the value of rank i in lane x. */
void ef__sort_rows(float *r, size_t n, size_t B);

#endif /* EDGEFL_STRATEGY_INTERNAL_H */
