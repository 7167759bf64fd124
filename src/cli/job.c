/*
 * The job option table and builder shared by simulate, server and client
 * (see job.h). The scopes say which commands take an option on their
 * command line; a --config file may set any of them.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgefl/accountant.h"
#include "job.h"

void job_defaults(job_opts *o) {
    *o = (job_opts){.dataset = "fashion-mnist", .model = "mlp", .partition = "iid",
                  .strategy = "fedavg", .profile = "ideal", .clients = 100, .rounds = 10,
                  .cpr = 10, .min_updates = 1, .buffer_k = 10, .max_staleness = 10,
                  .epochs = 1, .batch = 32, .eval_every = 1, .fed_eval_clients = 10,
                  .krum_f = -1, .multikrum_m = -1, .overselect = 1.0, .staleness_exp = 0.5,
                  .lr = 0.05, .server_lr = 0, .server_momentum = -1, .beta1 = -1, .beta2 = -1,
                  .prox_mu = -1, .trim_beta = -1, .availability = -1, .dropout = -1,
                  .offline = -1, .attack_scale = 1.0, .seed = 1, .min_per_client = 1,
                  .secagg = "off", .sa_bits = 32, .sa_clip = 1.0, .sa_weight_cap = 1000.0,
                  .dp_mode = "off", .dp_mech = "skellam", .dp_noise = 1.0, .dp_clip = 0.1,
                  .dp_delta = 1e-5, .dp_aq = 0.5, .dp_alr = 0.2, .dp_min_surv = 0.8};
}

size_t job_options(job_opts *o, unsigned scope, cli_opt *out) {
    const struct {
        unsigned scope;
        cli_opt opt;
    } all[] = {
        {JOB_ALL, {"config", CLI_STR, &o->config, "FILE", "JSON object of options (keys = option names)", 0, 0, NULL, 0}},
        {JOB_ALL, {"dataset", CLI_CHOICE, &o->dataset, NULL, "dataset (default fashion-mnist)", 0, 0, "fashion-mnist", 0}},
        {JOB_ALL, {"data-dir", CLI_STR, &o->data_dir, "DIR", "dataset directory", 0, 0, NULL, 0}},
        {JOB_SIM|JOB_CLIENT, {"limit", CLI_INT, &o->limit, "N", "use the first N training examples only", 1, 1 << 30, NULL, 0}},
        {JOB_ALL, {"model", CLI_CHOICE, &o->model, NULL, "model (default mlp)", 0, 0, "logreg|mlp|cnn|lenet5", 0}},
        {JOB_ALL, {"clients", CLI_INT, &o->clients, "N", "clients of the job (default 100; the server waits for this many check-ins)", 1, 10000000, NULL, 0}},
        {JOB_SIM|JOB_CLIENT, {"partition", CLI_STR, &o->partition, "SPEC", "iid, dirichlet:ALPHA, shards:K, quantity:ALPHA (default iid)", 0, 0, NULL, 0}},
        {JOB_SIM|JOB_CLIENT, {"min-per-client", CLI_INT, &o->min_per_client, "N", "training examples per client at least (default 1)", 1, 1 << 20, NULL, 0}},
        {JOB_SIM|JOB_CLIENT, {"holdout", CLI_FLOAT, &o->holdout, "F", "fraction of each client's data held out for federated evaluation (default 0)", 0, 0.9, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"strategy", CLI_STR, &o->strategy, "NAME", "aggregation strategy (default fedavg)", 0, 0, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"server-lr", CLI_FLOAT, &o->server_lr, "X", "server learning rate (default 1; 0.01 for fedadam/yogi/adagrad)", 1e-9, 100, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"server-momentum", CLI_FLOAT, &o->server_momentum, "B", "FedAvgM momentum (default 0.9)", 0, 0.999, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"beta1", CLI_FLOAT, &o->beta1, "B", "FedAdam/FedYogi beta1 (default 0.9)", 0, 0.999, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"beta2", CLI_FLOAT, &o->beta2, "B", "FedAdam/FedYogi beta2 (default 0.99)", 0, 0.9999, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"tau", CLI_FLOAT, &o->tau, "T", "adaptivity of FedAdam/Yogi/Adagrad (default 1e-3)", 1e-12, 1, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"proximal-mu", CLI_FLOAT, &o->prox_mu, "MU", "FedProx proximal term (default 0.01)", 0, 100, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"trim-beta", CLI_FLOAT, &o->trim_beta, "B", "FedTrimmedAvg fraction cut per side (default 0.1)", 0, 0.49, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"krum-f", CLI_INT, &o->krum_f, "F", "Krum: Byzantine clients tolerated (default 1)", 0, 100000, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"multikrum-m", CLI_INT, &o->multikrum_m, "M", "Multi-Krum: updates averaged (default n - f)", 0, 100000, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"rounds", CLI_INT, &o->rounds, "R", "rounds, or aggregations in --async mode (default 10)", 1, 1000000, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"clients-per-round", CLI_INT, &o->cpr, "K", "updates per round; --async: clients training at once (default 10)", 1, 10000000, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"overselect", CLI_FLOAT, &o->overselect, "F", "select F x clients-per-round, use the first to answer (default 1)", 1, 100, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"deadline", CLI_FLOAT, &o->deadline, "S", "round deadline in seconds (simulated in simulate) (default 0: none)", 0, 1e9, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"min-updates", CLI_INT, &o->min_updates, "N", "fewest updates aggregated at a deadline (default 1)", 1, 10000000, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"async", CLI_FLAG, &o->async, NULL, "asynchronous buffered aggregation (FedBuff)", 0, 0, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"buffer-k", CLI_INT, &o->buffer_k, "K", "--async: updates per aggregation (default 10)", 1, 1000000, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"max-staleness", CLI_INT, &o->max_staleness, "S", "--async: refuse staler updates (default 10)", 0, 1000000, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"staleness-exponent", CLI_FLOAT, &o->staleness_exp, "E", "--async: weight (1+s)^-E (default 0.5)", 0, 10, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"secagg", CLI_CHOICE, &o->secagg, "MODE", "secure aggregation: off, on (SecAgg+), plain (same quantized sum, no masks) (default off)", 0, 0, "off|on|plain", 0}},
        {JOB_SIM|JOB_SERVER, {"secagg-neighbors", CLI_INT, &o->sa_neighbors, "K", "SecAgg+ neighbours per client, even (default 2 ceil(log2 n); n-1: classic SecAgg)", 0, 1000000, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"secagg-threshold", CLI_INT, &o->sa_threshold, "T", "shares needed to recover a secret (default a majority of K+1)", 0, 1000000, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"secagg-bits", CLI_INT, &o->sa_bits, "B", "sums mod 2^B (default 32)", 1, 32, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"secagg-clip", CLI_FLOAT, &o->sa_clip, "R", "clip each update coordinate to [-R, R] before quantizing (default 1)", 1e-9, 1e9, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"secagg-weight-cap", CLI_FLOAT, &o->sa_weight_cap, "W", "an update counts min(examples, W) / W (default 1000)", 1, 1e12, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"secagg-timeout", CLI_FLOAT, &o->sa_timeout, "S", "seconds to wait at each key/share/unmask stage (default: --deadline or 60)", 0, 1e9, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"dp-mode", CLI_CHOICE, &o->dp_mode, "MODE", "client-level differential privacy: off, central (the server adds the noise), distributed (each client adds its share before SecAgg+ masking) (default off)", 0, 0, "off|central|distributed", 0}},
        {JOB_SIM|JOB_SERVER, {"dp-noise", CLI_FLOAT, &o->dp_noise, "Z", "noise multiplier: stddev Z x C on the sum of updates (default 1)", 1e-6, 1e6, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"dp-clip", CLI_FLOAT, &o->dp_clip, "C", "clip every update to L2 norm C (default 0.1; see docs/privacy.md)", 1e-9, 1e9, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"dp-delta", CLI_FLOAT, &o->dp_delta, "D", "delta of the reported epsilon (default 1e-5)", 1e-300, 0.5, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"dp-target-epsilon", CLI_FLOAT, &o->dp_target, "E", "stop before a round that would spend more; refuse a run whose rounds cannot fit (default 0: no limit)", 0, 1e9, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"dp-adaptive-clip", CLI_FLAG, &o->dp_adaptive, NULL, "central DP: adapt the clipping norm to a quantile of the update norms (Andrew et al. 2021)", 0, 0, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"dp-adaptive-quantile", CLI_FLOAT, &o->dp_aq, "G", "--dp-adaptive-clip: target quantile (default 0.5)", 0, 1, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"dp-adaptive-lr", CLI_FLOAT, &o->dp_alr, "ETA", "--dp-adaptive-clip: geometric learning rate (default 0.2)", 1e-6, 10, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"dp-adaptive-noise", CLI_FLOAT, &o->dp_anoise, "S", "--dp-adaptive-clip: noise stddev on the count of clipped updates (default clients-per-round / 20)", 0, 1e9, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"dp-min-survivors", CLI_FLOAT, &o->dp_min_surv, "F", "distributed DP: size the clients' noise for this fraction of a round's clients; fewer survivors and the round is not released (default 0.8)", 0.001, 1, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"dp-mechanism", CLI_CHOICE, &o->dp_mech, "M", "distributed noise: skellam or dgauss (distributed discrete Gaussian) (default skellam)", 0, 0, "skellam|dgauss", 0}},
        {JOB_SIM|JOB_SERVER, {"local-epochs", CLI_INT, &o->epochs, "E", "client epochs per task (default 1)", 1, 1000, NULL, 0}},
        {JOB_ALL, {"batch", CLI_INT, &o->batch, "B", "client batch size (default 32)", 1, 4096, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"lr", CLI_FLOAT, &o->lr, "X", "client learning rate (default 0.05)", 1e-9, 100, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"momentum", CLI_FLOAT, &o->momentum, "M", "client SGD momentum (default 0)", 0, 0.999, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"eval-every", CLI_INT, &o->eval_every, "K", "centralized test evaluation every K rounds (default 1; 0: last round only)", 0, 1000000, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"eval-limit", CLI_INT, &o->eval_limit, "N", "test examples used (default all)", 1, 1 << 30, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"fed-eval-every", CLI_INT, &o->fed_eval_every, "K", "federated evaluation every K rounds (needs --holdout; default 0)", 0, 1000000, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"fed-eval-clients", CLI_INT, &o->fed_eval_clients, "N", "clients per federated evaluation (default 10)", 1, 10000000, NULL, 0}},
        {JOB_SIM, {"profile", CLI_STR, &o->profile, "NAME", "device profile: ideal, mobile, heavy-tail (default ideal)", 0, 0, NULL, 0}},
        {JOB_SIM, {"flops", CLI_STR, &o->flops, "DIST", "device speed in FLOP/s, e.g. lognormal:5G:0.5", 0, 0, NULL, 0}},
        {JOB_SIM, {"down", CLI_STR, &o->down, "DIST", "downlink bytes/s, e.g. lognormal:10M:0.7", 0, 0, NULL, 0}},
        {JOB_SIM, {"up", CLI_STR, &o->up, "DIST", "uplink bytes/s", 0, 0, NULL, 0}},
        {JOB_SIM, {"latency", CLI_STR, &o->latency, "DIST", "one-way latency in seconds", 0, 0, NULL, 0}},
        {JOB_SIM, {"availability", CLI_FLOAT, &o->availability, "P", "probability a client is there for a task", 0.001, 1, NULL, 0}},
        {JOB_SIM, {"dropout", CLI_FLOAT, &o->dropout, "P", "probability a client drops out during a task", 0, 0.999, NULL, 0}},
        {JOB_SIM, {"offline", CLI_FLOAT, &o->offline, "S", "mean seconds a dropped client stays offline", 0, 1e9, NULL, 0}},
        {JOB_SIM, {"malicious", CLI_FLOAT, &o->malicious, "F", "fraction of attacking clients (default 0)", 0, 1, NULL, 0}},
        {JOB_SIM, {"attack-scale", CLI_FLOAT, &o->attack_scale, "S", "attackers send -S x their update (default 1)", 0, 1e6, NULL, 0}},
        {JOB_SIM, {"target-accuracy", CLI_FLOAT, &o->target, "A", "report rounds and simulated time to reach this test accuracy", 0, 1, NULL, 0}},
        {JOB_SIM|JOB_SERVER|JOB_CLIENT|JOB_LOADGEN, {"threads", CLI_INT, &o->threads, "T", "worker threads (default: all CPUs)", 1, 1024, NULL, 0}},
        {JOB_ALL, {"seed", CLI_U64, &o->seed, "S", "seed for everything (default 1)", 0, 0, NULL, 0}},
        {JOB_ALL, {"job", CLI_U64, &o->job, "ID", "job id: topics, message envelopes (default 0: the seed)", 0, 0, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"metrics", CLI_STR, &o->metrics, "FILE", "write one JSON object per round (JSON lines)", 0, 0, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"metrics-wall", CLI_FLAG, &o->metrics_wall, NULL, "include wall-clock times in --metrics (not reproducible)", 0, 0, NULL, 0}},
        {JOB_SIM, {"trace", CLI_STR, &o->trace, "FILE", "write the clients aggregated in each round (JSON lines)", 0, 0, NULL, 0}},
        {JOB_SIM, {"partition-out", CLI_STR, &o->partition_out, "FILE", "write every client's training example indices (JSON)", 0, 0, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"report", CLI_STR, &o->report, "FILE", "write a self-contained HTML report", 0, 0, NULL, 0}},
        {JOB_SIM|JOB_SERVER, {"out", CLI_STR, &o->out, "FILE", "save the final global model (safetensors)", 0, 0, NULL, 0}},
        {JOB_ALL, {"json", CLI_FLAG, &o->json, NULL, "print one JSON object with the results on stdout", 0, 0, NULL, 0}},
        {JOB_ALL, {"quiet", CLI_FLAG, &o->quiet, NULL, "no progress output", 0, 0, NULL, 0}},
    };
    size_t n = 0;
    for (size_t i = 0; i < sizeof all / sizeof all[0] && n < JOB_MAX_OPTS; i++)
        if (all[i].scope & scope) out[n++] = all[i].opt;
    return n;
}

int job_parse(const char *cmd, int argc, char **argv, job_opts *o, unsigned scope,
              cli_opt *extra, cli_opt *table, int *help, const char *usage, const char *desc,
              void **keep) {
    *keep = NULL;
    *help = 0;
    size_t n_extra = 0;
    while (extra && extra[n_extra].name) n_extra++;
    const char *cfg_path = cli_config_path(argc, argv, 2);
    int rc;
    if (cfg_path) {
        /* a job file may hold the keys of every command of the job */
        cli_opt *full = ef_calloc(JOB_MAX_OPTS + n_extra + 1, sizeof *full);
        if (!full) {
            cli_error(cmd, "out of memory");
            return CLI_EXIT_FAIL;
        }
        size_t n = job_options(o, JOB_ALL, full);
        if (n_extra) memcpy(full + n, extra, n_extra * sizeof *full);
        rc = cli_load_config(cmd, cfg_path, full, keep);
        ef_free(full);
        if (rc) return rc;
    }
    size_t n = job_options(o, scope, table);
    if (n_extra) memcpy(table + n, extra, n_extra * sizeof *table);
    memset(&table[n + n_extra], 0, sizeof *table);
    rc = cli_parse(cmd, argc, argv, 2, table, help, usage, desc);
    if (rc || *help) {
        cli_config_free(*keep);
        *keep = NULL;
    }
    return rc;
}

int job_build(const char *cmd, const job_opts *o, ef_sim_config *c) {
    *c = ef_sim_defaults();
    ef_status st;
    if ((st = ef_model_arch_parse(o->model, &c->model.arch)) != EF_OK) goto bad;
    c->model.max_batch = o->batch;
    c->n_clients = (uint32_t)o->clients;
    if ((st = ef_partition_spec_parse(o->partition, &c->partition)) != EF_OK) goto bad;
    c->min_per_client = (uint32_t)o->min_per_client;
    c->holdout = o->holdout;
    ef_strategy_kind sk;
    if ((st = ef_strategy_parse(o->strategy, &sk)) != EF_OK) goto bad;
    c->strategy = ef_strategy_defaults(sk);
    if (o->server_lr > 0) c->strategy.server_lr = (float)o->server_lr;
    if (o->server_momentum >= 0) c->strategy.server_momentum = (float)o->server_momentum;
    if (o->beta1 >= 0) c->strategy.beta1 = (float)o->beta1;
    if (o->beta2 >= 0) c->strategy.beta2 = (float)o->beta2;
    if (o->tau > 0) c->strategy.tau = (float)o->tau;
    if (o->prox_mu >= 0) c->strategy.proximal_mu = (float)o->prox_mu;
    if (o->trim_beta >= 0) c->strategy.trim_beta = (float)o->trim_beta;
    if (o->krum_f >= 0) c->strategy.krum_f = o->krum_f;
    if (o->multikrum_m >= 0) c->strategy.multikrum_m = o->multikrum_m;
    ef_server_config *s = &c->server;
    s->job = o->job ? o->job : o->seed;
    s->rounds = (uint32_t)o->rounds;
    s->clients_per_round = (uint32_t)o->cpr;
    s->overselect = o->overselect;
    s->deadline_s = o->deadline;
    s->min_updates = (uint32_t)o->min_updates;
    s->async = o->async;
    s->buffer_k = (uint32_t)o->buffer_k;
    s->max_staleness = (uint32_t)o->max_staleness;
    s->staleness_exponent = o->staleness_exp;
    s->local_epochs = (uint16_t)o->epochs;
    s->batch = (uint16_t)o->batch;
    s->lr = (float)o->lr;
    s->momentum = (float)o->momentum;
    s->fed_eval_every = (uint32_t)o->fed_eval_every;
    s->fed_eval_clients = (uint32_t)o->fed_eval_clients;
    s->seed = o->seed;
    s->secagg = strcmp(o->secagg, "on") == 0      ? EF_SECAGG_PLUS
                : strcmp(o->secagg, "plain") == 0 ? EF_SECAGG_PLAIN
                                                  : EF_SECAGG_OFF;
    s->secagg_neighbors = (uint32_t)o->sa_neighbors;
    s->secagg_threshold = (uint32_t)o->sa_threshold;
    s->secagg_bits = o->sa_bits;
    s->secagg_clip = o->sa_clip;
    s->secagg_weight_cap = o->sa_weight_cap;
    s->secagg_stage_timeout_s = o->sa_timeout;
    s->dp = strcmp(o->dp_mode, "central") == 0       ? EF_DP_CENTRAL
            : strcmp(o->dp_mode, "distributed") == 0 ? EF_DP_DISTRIBUTED
                                                     : EF_DP_OFF;
    s->dp_noise = o->dp_noise;
    s->dp_clip = o->dp_clip;
    s->dp_delta = o->dp_delta;
    s->dp_target_epsilon = o->dp_target;
    s->dp_mechanism = strcmp(o->dp_mech, "dgauss") == 0 ? EF_DP_DGAUSS : EF_DP_SKELLAM;
    s->dp_population = (uint32_t)o->clients;
    s->dp_adaptive = o->dp_adaptive;
    s->dp_min_survivors = o->dp_min_surv;
    s->dp_adaptive_quantile = o->dp_aq;
    s->dp_adaptive_lr = o->dp_alr;
    s->dp_adaptive_noise = o->dp_anoise;
    s->deterministic_noise = 1;
    if ((st = ef_device_profile_builtin(o->profile, &c->profile)) != EF_OK) goto bad;
    if (o->flops && (st = ef_dist_parse(o->flops, &c->profile.flops)) != EF_OK) goto bad;
    if (o->down && (st = ef_dist_parse(o->down, &c->profile.down_bps)) != EF_OK) goto bad;
    if (o->up && (st = ef_dist_parse(o->up, &c->profile.up_bps)) != EF_OK) goto bad;
    if (o->latency && (st = ef_dist_parse(o->latency, &c->profile.latency_s)) != EF_OK) goto bad;
    if (o->availability >= 0) c->profile.availability = o->availability;
    if (o->dropout >= 0) c->profile.dropout = o->dropout;
    if (o->offline >= 0) c->profile.offline_s = o->offline;
    c->threads = o->threads;
    c->seed = o->seed;
    c->eval_every = (uint32_t)o->eval_every;
    c->eval_limit = (uint32_t)o->eval_limit;
    c->malicious = o->malicious;
    c->attack_scale = (float)o->attack_scale;
    return 0;
bad:
    cli_error(cmd, "%s", ef_last_error());
    return CLI_EXIT_USAGE;
}

int job_check_budget(const char *cmd, const ef_sim_config *c) {
    if (!c->server.dp || !(c->server.dp_target_epsilon > 0)) return 0;
    const ef_server_config *s = &c->server;
    double selected = ceil(s->clients_per_round * s->overselect);
    double q = selected / (c->n_clients > selected ? c->n_clients : selected);
    ef_accountant *acc = NULL;
    int exceeds = 1;
    double eps = NAN;
    ef_status st = ef_accountant_new(&acc, NULL, 0);
    if (st == EF_OK)
        st = ef_accountant_would_exceed(acc, q, s->dp_noise, s->rounds, s->dp_delta,
                                        s->dp_target_epsilon, &exceeds, &eps);
    uint64_t fit = 0;
    if (st == EF_OK && exceeds)
        st = ef_accountant_max_steps(acc, q, s->dp_noise, s->dp_delta, s->dp_target_epsilon,
                                     s->rounds, &fit);
    ef_accountant_free(acc);
    if (st != EF_OK) {
        cli_error(cmd, "%s", ef_last_error());
        return CLI_EXIT_USAGE;
    }
    if (!exceeds) return 0;
    cli_error(cmd,
              "%u rounds at sampling rate %.4g and noise multiplier %g spend epsilon %.4g "
              "(delta %g), above --dp-target-epsilon %g: only %llu rounds fit. Lower --rounds, "
              "raise --dp-noise or the target",
              s->rounds, q, s->dp_noise, eps, s->dp_delta, s->dp_target_epsilon,
              (unsigned long long)fit);
    return CLI_EXIT_USAGE;
}

cJSON *job_config_json(const job_opts *o, const ef_sim_config *c) {
    cJSON *j = cJSON_CreateObject();
    char pbuf[64];
    cJSON_AddStringToObject(j, "dataset", o->dataset);
    cJSON_AddStringToObject(j, "model", o->model);
    cJSON_AddNumberToObject(j, "clients", c->n_clients);
    cJSON_AddStringToObject(j, "partition", ef_partition_spec_format(&c->partition, pbuf, sizeof pbuf));
    cJSON_AddNumberToObject(j, "holdout", c->holdout);
    cJSON_AddStringToObject(j, "strategy", ef_strategy_name(c->strategy.kind));
    cJSON_AddNumberToObject(j, "server-lr", c->strategy.server_lr);
    cJSON_AddNumberToObject(j, "rounds", c->server.rounds);
    cJSON_AddNumberToObject(j, "clients-per-round", c->server.clients_per_round);
    cJSON_AddNumberToObject(j, "overselect", c->server.overselect);
    cJSON_AddNumberToObject(j, "deadline", c->server.deadline_s);
    cJSON_AddBoolToObject(j, "async", c->server.async);
    if (c->server.async) {
        cJSON_AddNumberToObject(j, "buffer-k", c->server.buffer_k);
        cJSON_AddNumberToObject(j, "max-staleness", c->server.max_staleness);
    }
    cJSON_AddStringToObject(j, "secagg", o->secagg);
    if (c->server.secagg) {
        cJSON_AddNumberToObject(j, "secagg-neighbors", c->server.secagg_neighbors);
        cJSON_AddNumberToObject(j, "secagg-threshold", c->server.secagg_threshold);
        cJSON_AddNumberToObject(j, "secagg-bits", c->server.secagg_bits);
        cJSON_AddNumberToObject(j, "secagg-clip", c->server.secagg_clip);
        cJSON_AddNumberToObject(j, "secagg-weight-cap", c->server.secagg_weight_cap);
    }
    cJSON_AddStringToObject(j, "dp-mode", o->dp_mode);
    if (c->server.dp) {
        cJSON_AddNumberToObject(j, "dp-noise", c->server.dp_noise);
        cJSON_AddNumberToObject(j, "dp-clip", c->server.dp_clip);
        cJSON_AddNumberToObject(j, "dp-delta", c->server.dp_delta);
        cJSON_AddNumberToObject(j, "dp-target-epsilon", c->server.dp_target_epsilon);
        if (c->server.dp == EF_DP_DISTRIBUTED) {
            cJSON_AddStringToObject(j, "dp-mechanism", o->dp_mech);
            cJSON_AddNumberToObject(j, "dp-min-survivors", c->server.dp_min_survivors);
        }
        if (c->server.dp_adaptive) {
            cJSON_AddNumberToObject(j, "dp-adaptive-quantile", c->server.dp_adaptive_quantile);
            cJSON_AddNumberToObject(j, "dp-adaptive-lr", c->server.dp_adaptive_lr);
        }
    }
    cJSON_AddNumberToObject(j, "local-epochs", c->server.local_epochs);
    cJSON_AddNumberToObject(j, "batch", c->server.batch);
    cJSON_AddNumberToObject(j, "lr", o->lr);
    cJSON_AddNumberToObject(j, "momentum", o->momentum);
    cJSON_AddStringToObject(j, "profile", c->profile.name);
    cJSON_AddNumberToObject(j, "availability", c->profile.availability);
    cJSON_AddNumberToObject(j, "dropout", c->profile.dropout);
    cJSON_AddNumberToObject(j, "malicious", c->malicious);
    cJSON_AddNumberToObject(j, "seed", (double)c->seed);
    cJSON_AddNumberToObject(j, "job", (double)c->server.job);
    return j;
}

ef_model_config job_model_config(const ef_sim_config *c, const ef_dataset *data) {
    ef_model_config mc = c->model;
    mc.c = data->c, mc.h = data->h, mc.w = data->w, mc.n_classes = data->n_classes;
    if (mc.max_batch < c->server.batch) mc.max_batch = c->server.batch;
    return mc;
}

int job_model_numel(const char *cmd, const job_opts *o, const ef_sim_config *c, size_t *n) {
    ef_dataset data = {0};
    ef_model *probe = NULL;
    ef_status st = ef_dataset_load_n(&data, o->dataset, o->data_dir, 0, 1);
    if (st == EF_OK) {
        ef_model_config mc = job_model_config(c, &data);
        mc.max_batch = 1;
        st = ef_model_new(&probe, &mc, NULL);
    }
    if (st == EF_OK) *n = ef_model_numel(probe);
    else cli_error(cmd, "%s", ef_last_error());
    ef_model_free(probe);
    ef_dataset_free(&data);
    return st == EF_OK ? 0 : CLI_EXIT_FAIL;
}

void job_human_bytes(char *buf, size_t n, double b) {
    const char *u[] = {"B", "KB", "MB", "GB", "TB"};
    int i = 0;
    while (b >= 1000 && i < 4) b /= 1000, i++;
    snprintf(buf, n, i ? "%.1f%s" : "%.0f%s", b, u[i]);
}
