/*
 * Partitioning a dataset among federated clients. A partition is one array
 * of example indices cut into consecutive per-client slices: memory is one
 * index per example plus one offset per client, whatever the client count.
 *
 *   iid              uniform random split into (near) equal sizes
 *   dirichlet:ALPHA  label skew: for each class, the class's examples are
 *                    split among clients with proportions ~ Dir(ALPHA)
 *                    (as in NIID-Bench, Li et al. 2022); small ALPHA = skewed
 *   shards:K         McMahan et al. 2017: sort by label, cut into
 *                    n_clients * K shards, each client gets K random shards
 *   quantity:ALPHA   size skew: client sizes ~ Dir(ALPHA), labels iid
 *   natural          one client per group of a given key (e.g. one client
 *                    per Bible book), via ef_partition_natural
 */
#ifndef EDGEFL_PARTITION_H
#define EDGEFL_PARTITION_H

#include "edgefl/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ef_partition_kind {
    EF_PART_IID = 0,
    EF_PART_DIRICHLET,
    EF_PART_SHARDS,
    EF_PART_QUANTITY,
    EF_PART_NATURAL
} ef_partition_kind;

typedef struct ef_partition_spec {
    ef_partition_kind kind;
    double alpha; /* dirichlet / quantity concentration, > 0 */
    int shards;   /* shards per client, >= 1 */
} ef_partition_spec;

/* Parses "iid", "dirichlet:0.5", "shards:2", "quantity:1.0" (EF_ERR_INVALID
 * with a message otherwise). "natural" is not parsed here: it needs keys. */
EF_API ef_status ef_partition_spec_parse(const char *text, ef_partition_spec *out);

/* Formats a spec back to text ("dirichlet:0.5"); returns buf. */
EF_API const char *ef_partition_spec_format(const ef_partition_spec *spec, char *buf, size_t n);

typedef struct ef_partition {
    size_t n_clients;
    uint32_t *offsets; /* (n_clients + 1): client c owns indices[offsets[c] .. offsets[c+1]) */
    uint32_t *indices; /* (offsets[n_clients]) example indices, owned */
} ef_partition;

/*
 * Splits examples 0..n-1 (labels (n) in [0, n_classes)) among n_clients with
 * `spec`, deterministically from `seed`. Every client receives at least
 * `min_per_client` examples (1 if 0 is given); EF_ERR_INVALID if that is
 * impossible (n < n_clients * min). Each index appears exactly once.
 */
EF_API ef_status ef_partition_make(ef_partition *out, const ef_partition_spec *spec,
                                   const uint8_t *labels, size_t n, int n_classes,
                                   size_t n_clients, size_t min_per_client, uint64_t seed);

/* One client per group: group_of (n) in [0, n_groups); empty groups are
 * dropped (n_clients = number of non-empty groups), order kept. */
EF_API ef_status ef_partition_natural(ef_partition *out, const uint32_t *group_of, size_t n,
                                      size_t n_groups);

/*
 * Splits every client's slice into a training part and a held-out part (the
 * last ceil(frac * size) of a seeded shuffle, at least one example kept for
 * training) for federated evaluation. frac in [0, 1). Both outputs have the
 * same n_clients.
 */
EF_API ef_status ef_partition_holdout(const ef_partition *p, double frac, uint64_t seed,
                                      ef_partition *train, ef_partition *heldout);

/* Examples of client c. */
static inline size_t ef_partition_size(const ef_partition *p, size_t c) {
    return (size_t)(p->offsets[c + 1] - p->offsets[c]);
}

/* Frees the arrays; safe on a zeroed partition. */
EF_API void ef_partition_free(ef_partition *p);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_PARTITION_H */
