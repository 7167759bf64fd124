/*
 * Per-round metrics of a federated run (simulated or deployed) and their
 * outputs: JSON lines (one object per round) and a self-contained HTML
 * report with inline SVG charts that reads offline.
 */
#ifndef EDGEFL_METRICS_H
#define EDGEFL_METRICS_H

#include <stdio.h>

#include "edgefl/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One round (synchronous) or one aggregation (asynchronous). Fields that do
 * not apply to a round are NaN (floating point) or 0 (counts). */
typedef struct ef_round_record {
    uint32_t round;          /* 1-based */
    double sim_start;        /* seconds on the run's clock when the round began */
    double sim_end;          /* ... when it ended (aggregated or abandoned) */
    double wall_s;           /* wall-clock seconds the round took (not reproducible) */
    uint32_t selected;       /* clients sent a task */
    uint32_t completed;      /* updates accepted */
    uint32_t dropped;        /* clients that failed or were unavailable */
    uint32_t late;           /* updates that missed the deadline */
    uint32_t rejected;       /* messages refused during the round: malformed, foreign,
                              * duplicate or non-finite updates (stragglers of closed
                              * rounds are counted late in their own round instead) */
    int aggregated;          /* 1 if the global model changed */
    double train_loss;       /* example-weighted mean of the clients' training losses */
    double test_accuracy;    /* centralized evaluation, 0..1 */
    double test_loss;
    double fed_accuracy;     /* federated evaluation on clients' held-out data */
    double fed_loss;
    uint64_t bytes_up;       /* client -> server bytes of accepted updates and results */
    uint64_t bytes_down;     /* server -> client bytes this round */
    double staleness_mean;   /* asynchronous mode: model versions behind */
    uint32_t staleness_max;
    double epsilon;          /* differential privacy spent so far (NaN without DP) */
    double dp_clip;          /* the clipping norm used this round (NaN without DP) */
    double update_norm_median; /* median L2 norm of the round's updates before any clipping
                              * (NaN when the server cannot see them: secure aggregation) */
    char note[160];          /* why a round did not aggregate, e.g. a secure aggregation
                              * abort; "" otherwise */
} ef_round_record;

/* Run-level facts shown at the top of the report and in the final JSON. */
typedef struct ef_run_summary {
    const char *title;       /* e.g. "FedAvg, cnn, 100 clients, dirichlet:0.5" */
    const char *config_json; /* the effective configuration as a JSON object text, or NULL */
    uint32_t rounds;
    double final_accuracy;   /* last centralized test accuracy (NaN if none) */
    double sim_time_s;
    double wall_s;
    uint64_t bytes_up, bytes_down;
    double peak_rss_mb;
} ef_run_summary;

/* Blank record: counts 0, floating-point fields NaN. */
EF_API ef_round_record ef_round_record_empty(uint32_t round);

/*
 * Writes one round as a single-line JSON object and a newline. NaN fields are
 * omitted; wall_s is written only when `with_wall` is set (leave it out to
 * make files from runs with the same seed byte-identical).
 */
EF_API ef_status ef_round_record_write_json(FILE *f, const ef_round_record *r, int with_wall);

/*
 * Writes a self-contained HTML report to `path` atomically: the summary, the
 * configuration, and inline SVG charts of test (and federated) accuracy and
 * loss against rounds and against simulated time, participation per round
 * (completed / late / dropped), bytes up and down per round, and the
 * distribution of round durations. No scripts, no external resources.
 */
EF_API ef_status ef_report_write_html(const char *path, const ef_run_summary *summary,
                                      const ef_round_record *rounds, size_t n_rounds);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_METRICS_H */
