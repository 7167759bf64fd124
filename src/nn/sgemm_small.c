/*
 * Small matrix products for the Winograd convolution, where one dimension is
 * a channel count (32, 64) and the other a few hundred tiles. OpenBLAS packs
 * both operands before every call, which costs as much as the arithmetic at
 * these sizes; these kernels read the operands in place instead.
 *
 *   nn:  C (M, N)  = A (M, K) @ B (K, N)      B, C rows padded to a multiple of 16
 *   nt:  C (M, N) += A (M, K) @ B (N, K)^T    A, B rows zero-padded to a multiple of 8
 *
 * Register blocking: nn keeps 6 rows x 16 columns of C in 12 vector
 * accumulators; nt keeps 4 x 3 dot products. Written with GCC vector
 * extensions and compiled twice (AVX2+FMA and the baseline ISA), chosen at
 * run time. The reference for both is cblas_sgemm (tests compare them).
 */
#include <string.h>

#include "nn_internal.h"
#include "sgemm_small.h"
#include "simd.h"

/* R rows x 16 columns of C = A @ B, K inner. */
INLINE void nn_block(int R, const float *restrict A, int lda, const float *restrict B, int ldb,
                     float *restrict C, int ldc, int K) {
    v8 acc[6][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = zero8();
    for (int k = 0; k < K; k++) {
        v8 b0 = ld8(B + (size_t)k * ldb), b1 = ld8(B + (size_t)k * ldb + 8);
        for (int r = 0; r < R; r++) {
            /* scalar * vector: GCC emits one vbroadcastss (a {x,x,...}
             * initializer here became a chain of inserts) */
            float a = A[(size_t)r * lda + k];
            acc[r][0] += a * b0;
            acc[r][1] += a * b1;
        }
    }
    for (int r = 0; r < R; r++) {
        st8(C + (size_t)r * ldc, acc[r][0]);
        st8(C + (size_t)r * ldc + 8, acc[r][1]);
    }
}

INLINE void nn_body(int M, int N, int K, const float *restrict A, int lda,
                    const float *restrict B, int ldb, float *restrict C, int ldc) {
    for (int n0 = 0; n0 < N; n0 += 16) {
        int m0 = 0;
        for (; m0 + 6 <= M; m0 += 6)
            nn_block(6, A + (size_t)m0 * lda, lda, B + n0, ldb, C + (size_t)m0 * ldc + n0, ldc, K);
        for (; m0 + 4 <= M; m0 += 4)
            nn_block(4, A + (size_t)m0 * lda, lda, B + n0, ldb, C + (size_t)m0 * ldc + n0, ldc, K);
        for (; m0 + 2 <= M; m0 += 2)
            nn_block(2, A + (size_t)m0 * lda, lda, B + n0, ldb, C + (size_t)m0 * ldc + n0, ldc, K);
        for (; m0 < M; m0++)
            nn_block(1, A + (size_t)m0 * lda, lda, B + n0, ldb, C + (size_t)m0 * ldc + n0, ldc, K);
    }
}

/* R x Q block of C += A @ B^T, K inner in vectors of 8. */
INLINE void nt_block(int R, int Q, const float *restrict A, int lda, const float *restrict B,
                     int ldb, float *restrict C, int ldc, int K8) {
    v8 acc[4][3];
    for (int r = 0; r < R; r++)
        for (int q = 0; q < Q; q++) acc[r][q] = zero8();
    for (int k = 0; k < K8; k += 8) {
        v8 b[3];
        for (int q = 0; q < Q; q++) b[q] = ld8(B + (size_t)q * ldb + k);
        for (int r = 0; r < R; r++) {
            v8 a = ld8(A + (size_t)r * lda + k);
            for (int q = 0; q < Q; q++) acc[r][q] += a * b[q];
        }
    }
    for (int r = 0; r < R; r++)
        for (int q = 0; q < Q; q++) C[(size_t)r * ldc + q] += hsum8(acc[r][q]);
}

INLINE void nt_rows(int R, int N, int K8, const float *restrict A, int lda,
                    const float *restrict B, int ldb, float *restrict C, int ldc) {
    int n0 = 0;
    for (; n0 + 3 <= N; n0 += 3)
        nt_block(R, 3, A, lda, B + (size_t)n0 * ldb, ldb, C + n0, ldc, K8);
    if (n0 + 2 <= N) {
        nt_block(R, 2, A, lda, B + (size_t)n0 * ldb, ldb, C + n0, ldc, K8);
        n0 += 2;
    }
    for (; n0 < N; n0++) nt_block(R, 1, A, lda, B + (size_t)n0 * ldb, ldb, C + n0, ldc, K8);
}

INLINE void nt_body(int M, int N, int K, const float *restrict A, int lda,
                    const float *restrict B, int ldb, float *restrict C, int ldc) {
    int K8 = (K + 7) & ~7;
    int m0 = 0;
    for (; m0 + 4 <= M; m0 += 4)
        nt_rows(4, N, K8, A + (size_t)m0 * lda, lda, B, ldb, C + (size_t)m0 * ldc, ldc);
    for (; m0 < M; m0++)
        nt_rows(1, N, K8, A + (size_t)m0 * lda, lda, B, ldb, C + (size_t)m0 * ldc, ldc);
}

#if EF_HAVE_AVX2_PATH
EF_TARGET_AVX2 static void nn_avx2(int M, int N, int K, const float *A,
                                                        int lda, const float *B, int ldb,
                                                        float *C, int ldc) {
    nn_body(M, N, K, A, lda, B, ldb, C, ldc);
}
EF_TARGET_AVX2 static void nt_avx2(int M, int N, int K, const float *A,
                                                        int lda, const float *B, int ldb,
                                                        float *C, int ldc) {
    nt_body(M, N, K, A, lda, B, ldb, C, ldc);
}
#endif
static void nn_base(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                    float *C, int ldc) {
    nn_body(M, N, K, A, lda, B, ldb, C, ldc);
}
static void nt_base(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                    float *C, int ldc) {
    nt_body(M, N, K, A, lda, B, ldb, C, ldc);
}

void ef__sgemm_nn_small(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                        float *C, int ldc) {
#if EF_HAVE_AVX2_PATH
    if (ef_cpu_features() & EF_CPU_AVX2) {
        nn_avx2(M, N, K, A, lda, B, ldb, C, ldc);
        return;
    }
#endif
    nn_base(M, N, K, A, lda, B, ldb, C, ldc);
}

void ef__sgemm_nt_small(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                        float *C, int ldc) {
#if EF_HAVE_AVX2_PATH
    if (ef_cpu_features() & EF_CPU_AVX2) {
        nt_avx2(M, N, K, A, lda, B, ldb, C, ldc);
        return;
    }
#endif
    nt_base(M, N, K, A, lda, B, ldb, C, ldc);
}
