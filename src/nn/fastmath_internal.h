/*
 * Small math helpers for the optimized kernels, written so that GCC and Clang
 * vectorize the loops that call them at -O3 without -ffast-math: an expf with
 * no libm call and no branches, and float reductions split over eight
 * independent partial sums (the compiler may not reorder a single float sum,
 * so a plain `s += a[i] * b[i]` loop stays scalar). The partial-sum order is
 * fixed, so results do not depend on the thread count.
 */
#ifndef EDGEFL_FASTMATH_INTERNAL_H
#define EDGEFL_FASTMATH_INTERNAL_H

#include <stdint.h>

/*
 * e^x, relative error below 3e-7 (about 2 ulp) for x in [-87, 88]; inputs
 * outside (and NaN) are clamped there, so the result is always finite and positive
 * (e^-87 ~ 1.6e-38, e^88 ~ 1.7e38). Cephes-style: x = n ln2 + r with
 * |r| <= ln2/2, a degree-7 polynomial for e^r, 2^n built in the exponent bits.
 */
static inline float ef__expf(float x) {
    // Clamp on the bit pattern: a float clamp (x < lo ? lo : x) followed by
    // arithmetic stays a branch under the default -ftrapping-math, which
    // stops vectorization; integer selects do not. NaN clamps to +-87/88.
    union {
        float f;
        uint32_t u;
    } bits = {x};
    uint32_t sign = bits.u & 0x80000000u;
    int32_t mag = (int32_t)(bits.u & 0x7fffffffu);
    int32_t lim = sign ? 0x42AE0000 : 0x42B00000; // 87.0f : 88.0f
    mag = mag < lim ? mag : lim;
    bits.u = sign | (uint32_t)mag;
    x = bits.f;
    // Adding and removing 1.5 * 2^23 rounds to the nearest integer without
    // floorf, which SSE2 cannot vectorize.
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    // ln2 split in two (Cody-Waite) so n * ln2 is subtracted almost exactly.
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float z = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * z + r + 1.0f;
    union {
        int32_t i;
        float f;
    } scale;
    scale.i = ((int32_t)n + 127) * (1 << 23); // n in [-126, 127]: a normal float
    return p * scale.f;
}

/* sum_i a[i] * b[i] over n floats. */
static inline float ef__dot(const float *restrict a, const float *restrict b, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* sum_i a[i] over n floats. */
static inline float ef__sum(const float *restrict a, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i];
    return s;
}

/* y[i] += alpha * x[i] over n floats. */
static inline void ef__axpy(float *restrict y, float alpha, const float *restrict x, int n) {
    for (int i = 0; i < n; i++) y[i] += alpha * x[i];
}

#endif /* EDGEFL_FASTMATH_INTERNAL_H */
