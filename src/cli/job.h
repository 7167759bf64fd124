/*
 * A federated job's settings, shared by `edgefl simulate`, `edgefl server`,
 * `edgefl client`, `edgefl loadgen` and `edgefl worker`: one option table (the keys of a
 * --config JSON file are the option names), one builder from options to the
 * library's configuration structs. Every option has a scope -- the
 * commands that use it; a job file may hold the keys of every scope (the
 * same file describes the job to the simulator, the server and its
 * clients), but the command line takes only the command's own options.
 */
#ifndef EDGEFL_CLI_JOB_H
#define EDGEFL_CLI_JOB_H

#include <cjson/cJSON.h>

#include "cli.h"
#include "mqtt_args.h"

enum {
    JOB_SIM = 1u, JOB_SERVER = 2u, JOB_CLIENT = 4u, JOB_LOADGEN = 8u,
    JOB_GATEWAY = 16u, /* edgefl aggregator: the job's identity and model shape only */
    JOB_WORKER = 32u,  /* edgefl worker: the job's identity and model shape only */
    JOB_ALL = 63u
};

typedef struct job_opts {
    const char *config, *dataset, *data_dir, *model, *partition, *strategy, *profile;
    const char *metrics, *report, *out, *flops, *down, *up, *latency, *trace, *partition_out;
    const char *secagg, *dp_mode, *dp_mech;
    double dp_noise, dp_clip, dp_delta, dp_target, dp_aq, dp_alr, dp_anoise, dp_min_surv;
    int dp_adaptive;
    int sa_neighbors, sa_threshold, sa_bits;
    double sa_clip, sa_weight_cap, sa_timeout;
    int clients, min_per_client, rounds, cpr, min_updates, async, buffer_k, max_staleness;
    int epochs, batch, eval_every, eval_limit, limit, fed_eval_every, fed_eval_clients, threads;
    int krum_f, multikrum_m, json, quiet, metrics_wall;
    double holdout, overselect, deadline, staleness_exp, lr, momentum, server_lr,
        server_momentum, beta1, beta2, tau, prox_mu, trim_beta, availability, dropout, offline,
        malicious, attack_scale, target;
    uint64_t seed, job;
} job_opts;

/* The defaults of every job option. */
void job_defaults(job_opts *o);

/* Most entries job_options can write (without the terminator). */
#define JOB_MAX_OPTS 96

/*
 * Writes the entries of the job options in `scope` (a mask of JOB_*) into
 * out[0..], pointing at the fields of `o`; returns how many. out needs room
 * for JOB_MAX_OPTS entries.
 */
size_t job_options(job_opts *o, unsigned scope, cli_opt *out);

/*
 * Option parsing for a job command: loads --config (any job key, whatever
 * its scope, and the command's `extra` options), then the command line
 * against the job options in `scope` followed by `extra` (zero-terminated,
 * may be NULL). `table` receives the command-line table (room for
 * JOB_MAX_OPTS + the extras + 1; cli_find works on it). Returns 0, or an
 * exit code; *help is set after --help. Release *keep with cli_config_free
 * once the options are no longer used.
 */
int job_parse(const char *cmd, int argc, char **argv, job_opts *o, unsigned scope,
              cli_opt *extra, cli_opt *table, int *help, const char *usage, const char *desc,
              void **keep);

/*
 * job_parse for the commands that talk to a broker: the job options in
 * `scope`, then the broker options of `ma` (mqtt_args_options), then the
 * command's own options `mine` (zero-terminated, may be NULL). Same
 * returns as job_parse.
 */
int job_parse_mqtt(const char *cmd, int argc, char **argv, job_opts *o, unsigned scope,
                   mqtt_args *ma, const cli_opt *mine, int *help, const char *usage,
                   const char *desc, void **keep);

/*
 * Builds the library configuration from the options: server, strategy,
 * model architecture, partition, device profile, seeds. The job id is
 * --job, or the seed when it is 0. Returns 0 or CLI_EXIT_USAGE (after
 * printing the reason as "edgefl <cmd>: error: ...").
 */
int job_build(const char *cmd, const job_opts *o, ef_sim_config *c);

/* A DP run whose planned rounds cannot fit its target epsilon is refused
 * before it starts: 0 when they fit (or without a target). */
int job_check_budget(const char *cmd, const ef_sim_config *c);

/* The effective configuration as JSON (the report and --json output). */
cJSON *job_config_json(const job_opts *o, const ef_sim_config *c);

/* The model configuration of a job on a dataset (input shape and classes
 * from the data, the batch capacity from the job). */
ef_model_config job_model_config(const ef_sim_config *c, const ef_dataset *data);

/* The number of parameters of the job's model, for a command that holds no
 * data (the input shape comes from one example of the dataset). Returns 0
 * or CLI_EXIT_FAIL after printing the reason. */
int job_model_numel(const char *cmd, const job_opts *o, const ef_sim_config *c, size_t *out);

/* "1.2MB": bytes in human units. */
void job_human_bytes(char *buf, size_t n, double bytes);

#endif /* EDGEFL_CLI_JOB_H */
