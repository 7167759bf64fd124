/*
 * Embedding lookup (token or position table) and its backward scatter-add.
 * Both are memory bound, so the optimized path is row copies and row adds;
 * the backward stays on one thread because repeated ids make rows of dtable
 * collide, and a fixed order keeps the sums reproducible.
 */
#include <string.h>

#include "fastmath_internal.h"
#include "nn_internal.h"

// ids (N); every id must lie in [0, V) before anything is written.
static ef_status check_ids(const int32_t *ids, int N, int V) {
    for (int i = 0; i < N; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return ef__fail(EF_ERR_RANGE, "embedding: ids[%d] = %d is outside [0, %d)", i,
                            (int)ids[i], V);
    return EF_OK;
}

ef_status ef_embedding_forward(float *out, const int32_t *ids, const float *table, int N,
                               int V, int C) {
    // out (N, C); ids (N); table (V, C)
    ef_status st = check_ids(ids, N, V);
    if (st != EF_OK) return st;
    for (int i = 0; i < N; i++)
        memcpy(out + (size_t)i * C, table + (size_t)ids[i] * C, (size_t)C * sizeof(float));
    return EF_OK;
}

void ef_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N, int C) {
    // dtable (V, C); dout (N, C); ids (N)
    if (!dtable) return;
    for (int i = 0; i < N; i++)
        ef__axpy(dtable + (size_t)ids[i] * C, 1.0f, dout + (size_t)i * C, C);
}

ef_status ef_embedding_forward_ref(float *out, const int32_t *ids, const float *table, int N,
                                   int V, int C) {
    ef_status st = check_ids(ids, N, V);
    if (st != EF_OK) return st;
    for (int i = 0; i < N; i++)
        for (int c = 0; c < C; c++) out[(size_t)i * C + c] = table[(size_t)ids[i] * C + c];
    return EF_OK;
}

void ef_embedding_backward_ref(float *dtable, const float *dout, const int32_t *ids, int N,
                               int C) {
    if (!dtable) return;
    for (int i = 0; i < N; i++)
        for (int c = 0; c < C; c++) dtable[(size_t)ids[i] * C + c] += dout[(size_t)i * C + c];
}
