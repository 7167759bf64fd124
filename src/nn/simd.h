/*
 * Portable SIMD helpers for the optimized kernels: an 8-float vector type
 * from GCC's vector extensions (lowered to AVX, SSE pairs or scalars by the
 * target), unaligned load/store, and the attribute that compiles a copy of a
 * kernel for AVX2+FMA. A kernel body is written once as an INLINE function
 * and instantiated twice, for the baseline ISA and for AVX2, and the caller
 * picks one at run time with ef_cpu_features().
 */
#ifndef EDGEFL_SIMD_H
#define EDGEFL_SIMD_H

#include <string.h>

/* The helpers below are always inlined, so GCC's note that vector
 * arguments change the ABI without AVX does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"

#define INLINE static inline __attribute__((always_inline))

#if defined(__x86_64__)
#define EF_HAVE_AVX2_PATH 1
#define EF_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define EF_HAVE_AVX2_PATH 0
#define EF_TARGET_AVX2
#endif

typedef float v8 __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));

INLINE v8 ld8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

INLINE void st8(float *p, v8 v) { memcpy(p, &v, sizeof v); }

INLINE v8 zero8(void) { return (v8){0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f}; }

/* Broadcasting happens through scalar * vector (`x * v`), which GCC turns
 * into one vbroadcastss; a {x, x, ...} initializer can become a chain of
 * inserts. */

INLINE float hsum8(v8 v) {
    float t[8];
    st8(t, v);
    return ((t[0] + t[4]) + (t[1] + t[5])) + ((t[2] + t[6]) + (t[3] + t[7]));
}

#endif /* EDGEFL_SIMD_H */
