/*
 * Tests of the packing-free small matrix products behind the Winograd
 * convolution (src/nn/sgemm_small.h, internal) against cblas_sgemm, on both
 * ISA builds (ef_cpu_limit(0): portable; ~0u: AVX2+FMA when the CPU has it):
 *   nn: C (M, N)  = A (M, K) @ B (K, N)
 *   nt: C (M, N) += A (M, K) @ B (N, K)^T
 * M, N and K run over values that are and are not multiples of the register
 * blocks (nn: 6/4/2/1 rows x 16 columns; nt: 4 rows x 3 (or 2, 1) columns,
 * K in vectors of 8).
 *
 * The padding contracts are honoured exactly and no further: every buffer is
 * malloc'ed to the last element the contract lets the kernel touch, so
 * AddressSanitizer catches any read or write beyond it. nn: rows of B and C
 * readable/writable up to N rounded up to 16 (C's columns N..16k receive
 * garbage, so ldc >= that; columns past it hold a sentinel that must
 * survive). nt: rows of A and B zero from K to K rounded up to 8; C is
 * touched only in its M x N block (sentinels around it).
 *
 * Tolerance: both kernels and OpenBLAS compute in float with different
 * summation orders; each result is within gamma_K * S of the exact value,
 * S = |c0| + sum_k |a_ik b_kj| and gamma_K ~ K * 2^-24, so we require
 * |ours - cblas| <= 2 (K + 2) 2^-24 S. A dropped, doubled or misplaced term
 * (size ~S/K) exceeds that by orders of magnitude for every K used here.
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgefl/core.h"
#include "edgefl/rng.h"
#include "nn/sgemm_small.h"
#include "test_util.h"

static ef_rng rng;
static double worst_ratio = 0.0;
static long n_cases = 0;
#define SENTINEL 12345.5f

static float *alloc_floats(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

static void fill(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * ef_rng_uniform(&rng) - 1.0f;
}

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

// ours vs ref (M, N) with the bound above; s (M, N) holds S.
static int compare(const char *what, int M, int N, int K, const float *c, int ldc,
                   const float *r, int ldr, const double *s) {
    double bound = 2.0 * (K + 2) * 0x1.0p-24;
    double worst = 0.0;
    int wi = 0, wj = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double e = fabs((double)c[(size_t)i * ldc + j] - r[(size_t)i * ldr + j]) /
                       (bound * s[(size_t)i * N + j] + 1e-30);
            if (isnan(e)) e = INFINITY;
            if (e > worst) worst = e, wi = i, wj = j;
        }
    if (worst > worst_ratio) worst_ratio = worst;
    CHECK_MSG(worst <= 1.0, "%s M=%d N=%d K=%d: C[%d][%d] = %.9g, cblas %.9g", what, M, N, K, wi,
              wj, (double)c[(size_t)wi * ldc + wj], (double)r[(size_t)wi * ldr + wj]);
    return worst <= 1.0;
}

static void check_nn(int M, int N, int K, int extra_ld) {
    int N16 = round_up(N, 16);
    int lda = K + extra_ld, ldb = N + extra_ld, ldc = N16 + extra_ld + 3;
    // exactly what the contract allows the kernel to touch
    size_t na = (size_t)(M - 1) * lda + K;
    size_t nb = (size_t)(K - 1) * ldb + N16;
    size_t nc = (size_t)(M - 1) * ldc + N16;
    size_t nc_full = (size_t)M * ldc; // for the sentinel check
    float *A = alloc_floats(na), *B = alloc_floats(nb), *C = alloc_floats(nc_full);
    float *R = alloc_floats((size_t)M * N);
    fill(A, na);
    fill(B, nb); // padding columns hold ordinary values: they must not leak into C
    for (size_t i = 0; i < nc_full; i++) C[i] = SENTINEL;
    double *S = malloc((size_t)M * N * sizeof(double));
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += fabs((double)A[(size_t)i * lda + k] * B[(size_t)k * ldb + j]);
            S[(size_t)i * N + j] = s;
        }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, 0.0f,
                R, N);
    // The kernel sees a C of exactly nc floats (ASan: writes past N16 in
    // the last row are overflows); the rest of C_full is checked below.
    float *Cx = alloc_floats(nc);
    memcpy(Cx, C, nc * sizeof(float));
    ef__sgemm_nn_small(M, N, K, A, lda, B, ldb, Cx, ldc);
    memcpy(C, Cx, nc * sizeof(float));
    free(Cx);
    compare("nn", M, N, K, C, ldc, R, N, S);
    int sentinels = 1;
    for (int i = 0; i < M; i++)
        for (int j = N16; j < ldc; j++) sentinels &= C[(size_t)i * ldc + j] == SENTINEL;
    CHECK_MSG(sentinels, "nn M=%d N=%d K=%d wrote past column %d", M, N, K, N16);
    n_cases++;
    free(A);
    free(B);
    free(C);
    free(R);
    free(S);
}

static void check_nt(int M, int N, int K, int extra_ld) {
    int K8 = round_up(K, 8);
    int lda = K8 + extra_ld, ldb = K8 + extra_ld, ldc = N + 3;
    size_t na = (size_t)(M - 1) * lda + K8, nb = (size_t)(N - 1) * ldb + K8;
    size_t nc = (size_t)(M + 1) * ldc; // one sentinel row below
    float *A = alloc_floats(na), *B = alloc_floats(nb), *C = alloc_floats(nc);
    float *R = alloc_floats(nc);
    fill(A, na);
    fill(B, nb);
    for (int i = 0; i < M; i++)
        for (int k = K; k < K8; k++) A[(size_t)i * lda + k] = 0.0f; // the contract's zeros
    for (int j = 0; j < N; j++)
        for (int k = K; k < K8; k++) B[(size_t)j * ldb + k] = 0.0f;
    for (size_t i = 0; i < nc; i++) C[i] = SENTINEL;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = 2.0f * ef_rng_uniform(&rng) - 1.0f;
    memcpy(R, C, nc * sizeof(float));
    double *S = malloc((size_t)M * N * sizeof(double));
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = fabs((double)C[(size_t)i * ldc + j]);
            for (int k = 0; k < K; k++)
                s += fabs((double)A[(size_t)i * lda + k] * B[(size_t)j * ldb + k]);
            S[(size_t)i * N + j] = s;
        }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, lda, B, ldb, 1.0f, R,
                ldc);
    ef__sgemm_nt_small(M, N, K, A, lda, B, ldb, C, ldc);
    compare("nt", M, N, K, C, ldc, R, ldc, S);
    int sentinels = 1;
    for (int i = 0; i <= M; i++)
        for (int j = (i < M ? N : 0); j < ldc; j++) sentinels &= C[(size_t)i * ldc + j] == SENTINEL;
    CHECK_MSG(sentinels, "nt M=%d N=%d K=%d wrote outside its block", M, N, K);
    n_cases++;
    free(A);
    free(B);
    free(C);
    free(R);
    free(S);
}

int main(void) {
    int quick = getenv("EDGEFL_TEST_QUICK") != NULL;
    ef_rng_seed(&rng, 31337);
    unsigned all = ef_cpu_features();
    printf("  CPU: AVX2+FMA %s\n", (all & EF_CPU_AVX2) ? "available (both paths run)"
                                                    : "not available (portable path only)");
    // rows: the nn blocks are 6/4/2/1 rows, nt 4/1; channel counts of the CNN
    static const int Ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 17, 32, 64};
    // columns: nn panels of 16, nt blocks of 3/2/1; tile counts of the CNN
    static const int Ns[] = {1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 33, 48, 100, 197};
    // inner: nt vectors of 8; channel and tile counts
    static const int Ks[] = {1, 2, 3, 7, 8, 9, 16, 25, 32, 63, 64, 200};
    const size_t nM = sizeof Ms / sizeof *Ms, nN = sizeof Ns / sizeof *Ns,
                 nK = sizeof Ks / sizeof *Ks;
    for (int isa = 0; isa < 2; isa++) {
        ef_cpu_limit(isa == 0 ? 0u : ~0u);
        const char *name = isa == 0 ? "portable" : "avx2";
        int before = tu_failures;
        double t0 = ef_now();
        for (size_t a = 0; a < nM; a++)
            for (size_t b = 0; b < nN; b++)
                for (size_t c = 0; c < nK; c++) {
                    // quick mode: a deterministic third of the grid
                    if (quick && (a + b + c) % 3 != 0) continue;
                    int extra = (int)((a + 2 * b + c) % 3); // ld = the minimum, or a bit more
                    check_nn(Ms[a], Ns[b], Ks[c], extra);
                    check_nt(Ms[a], Ns[b], Ks[c], extra);
                }
        printf("  %-8s %s (%.2f s)\n", name, tu_failures == before ? "ok" : "FAILED",
               ef_now() - t0);
    }
    ef_cpu_limit(~0u);
    printf("  %ld products, worst error / bound: %.3g\n", n_cases, worst_ratio);
    return tu_finish("nn/test_sgemm_small");
}
