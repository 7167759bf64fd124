/*
 * Packing-free small matrix products used by the Winograd convolution
 * (see sgemm_small.c for the padding each operand needs).
 */
#ifndef EDGEFL_SGEMM_SMALL_H
#define EDGEFL_SGEMM_SMALL_H

/* C (M, N) = A (M, K) @ B (K, N). Rows of B and C must be readable/writable
 * up to N rounded up to 16; the extra columns of C receive garbage. */
void ef__sgemm_nn_small(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                        float *C, int ldc);

/* C (M, N) += A (M, K) @ B (N, K)^T. Rows of A and B must hold zeros from K
 * up to K rounded up to 8. */
void ef__sgemm_nt_small(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                        float *C, int ldc);

#endif /* EDGEFL_SGEMM_SMALL_H */
