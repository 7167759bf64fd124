/*
 * The federated simulator: thousands of virtual clients in one process,
 * driving the very same server and client state machines as a deployment,
 * on a simulated clock.
 *
 * Every client is a device drawn from a profile: training speed (FLOP/s;
 * training time = examples x epochs x the model's training FLOPs per example
 * / speed), downlink and uplink bandwidth (bytes/s; a link carries one
 * message at a time), one-way latency, the probability of being available
 * when a task arrives and of dropping out during it (at a uniformly random
 * point, checking in again after an offline period). Device draws depend
 * only on the seed and the client id, so a client costs a few bytes of
 * memory whatever the profile; models exist once per worker thread.
 *
 * Client training runs in parallel on `threads` workers, each client
 * single-threaded: results do not depend on the thread count. The same
 * seed gives the same rounds, the same metrics and the same model.
 */
#ifndef EDGEFL_SIM_H
#define EDGEFL_SIM_H

#include "edgefl/client.h"
#include "edgefl/metrics.h"
#include "edgefl/partition.h"
#include "edgefl/server.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A positive random quantity. */
typedef enum ef_dist_kind {
    EF_DIST_CONST = 0,  /* a */
    EF_DIST_LOGNORMAL,  /* median a, sigma b of the underlying normal */
    EF_DIST_PARETO,     /* scale (minimum) a, shape b (heavy tail for b <= 2) */
    EF_DIST_UNIFORM,    /* [a, b] */
    EF_DIST_INVPARETO   /* a / X with X ~ Pareto(1, b): at most a, heavy tail towards 0
                         * (slow devices: training time is Pareto-distributed) */
} ef_dist_kind;

typedef struct ef_dist {
    ef_dist_kind kind;
    double a, b;
} ef_dist;

/* Draws from d (always > 0 for valid parameters). */
EF_API double ef_dist_sample(const ef_dist *d, ef_rng *r);

/* Parses "const:A", "lognormal:MEDIAN:SIGMA", "pareto:SCALE:SHAPE",
 * "invpareto:MAX:SHAPE", "uniform:LO:HI" (numbers may use k/M/G suffixes:
 * 5G = 5e9). */
EF_API ef_status ef_dist_parse(const char *text, ef_dist *out);

typedef struct ef_device_profile {
    char name[32];
    ef_dist flops;        /* training speed, FLOP/s */
    ef_dist down_bps;     /* bytes/s */
    ef_dist up_bps;       /* bytes/s */
    ef_dist latency_s;    /* one way */
    double availability;  /* probability a client is there when a task arrives */
    double dropout;       /* probability it drops out during a task */
    double offline_s;     /* mean offline time (exponential) before it checks in again */
} ef_device_profile;

/*
 * Built-in profiles:
 *   "ideal"       every device equal (20 GFLOP/s, 100 MB/s, 1 ms), always there
 *   "mobile"      phones on cellular links: lognormal speeds around 5 GFLOP/s,
 *                 10 MB/s down / 2 MB/s up, 50 ms, 95% available, 5% dropout
 *   "heavy-tail"  edge fleets: most devices fast, a Pareto (shape 1.5) tail of
 *                 very slow ones in compute (up to 10 GFLOP/s, 3% below 1) and in
 *                 both links (up to 20 MB/s down, 5 MB/s up), 50 ms lognormal
 *                 latency, 90% available, 10% dropout
 */
EF_API ef_status ef_device_profile_builtin(const char *name, ef_device_profile *out);

/* One client's device (deterministic in seed and id). */
typedef struct ef_device {
    double flops, down_bps, up_bps, latency_s;
} ef_device;
EF_API ef_device ef_device_draw(const ef_device_profile *p, uint64_t seed, uint32_t client);

typedef struct ef_sim_config {
    ef_server_config server;
    ef_strategy_config strategy;
    ef_model_config model;       /* arch; input shape and classes come from the data */
    uint32_t n_clients;
    ef_partition_spec partition;
    uint32_t min_per_client;     /* examples per client at least (default 1) */
    double holdout;              /* fraction of each client's data held out for federated eval */
    ef_device_profile profile;
    int threads;                 /* worker threads (0: CPUs) */
    uint64_t seed;
    uint32_t eval_every;         /* centralized test evaluation every k rounds (0: last only) */
    uint32_t eval_limit;         /* test examples used (0: all) */
    double malicious;            /* fraction of clients whose updates are attacks */
    float attack_scale;          /* an attacker sends -attack_scale x its honest update */
} ef_sim_config;

/* Defaults: 100 clients, iid, ideal devices, FedAvg, 10 rounds, 10 per round. */
EF_API ef_sim_config ef_sim_defaults(void);

/* Passed to the progress callback after each round. */
typedef struct ef_sim_progress {
    const ef_round_record *rec;
    uint32_t rounds;        /* total planned */
    double wall_s;          /* since the start of the run */
    double eta_s;
    const uint32_t *clients; /* ids of the clients whose updates the round accepted */
    size_t n_clients;
} ef_sim_progress;

typedef void (*ef_sim_round_fn)(void *user, const ef_sim_progress *p);

typedef struct ef_sim ef_sim;

/*
 * Prepares a simulation: partitions `train` among the clients, draws
 * malicious clients, builds the server, the clients and one model per
 * worker. `test` (may be NULL) serves centralized evaluation. Both datasets
 * must outlive the simulation.
 */
EF_API ef_status ef_sim_new(ef_sim **out, const ef_sim_config *cfg, const ef_dataset *train,
                            const ef_dataset *test);

/* Runs all rounds. `cb` (may be NULL) is called after every round. Fails with
 * EF_ERR_STATE if the run stalls (e.g. fewer clients than a round needs). */
EF_API ef_status ef_sim_run(ef_sim *s, ef_sim_round_fn cb, void *user);

/* The rounds so far (owned by the simulation). */
EF_API const ef_round_record *ef_sim_records(const ef_sim *s, size_t *n);

/* The global model after the run (owned by the simulation). */
EF_API const float *ef_sim_model(const ef_sim *s, size_t *n);

/* The client partition (train part) and the number of malicious clients. */
EF_API const ef_partition *ef_sim_partition(const ef_sim *s);
EF_API uint32_t ef_sim_malicious_count(const ef_sim *s);

/* Simulated seconds elapsed. */
EF_API double ef_sim_time(const ef_sim *s);

/* The server the simulation drives (owned by the simulation): e.g. for
 * ef_server_epsilon and ef_server_stop_reason. */
EF_API const ef_server *ef_sim_server(const ef_sim *s);

EF_API void ef_sim_free(ef_sim *s);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_SIM_H */
