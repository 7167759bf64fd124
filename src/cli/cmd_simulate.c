/*
 * `edgefl simulate`: a federated run with virtual clients on a simulated
 * clock (the same server and client state machines a deployment runs).
 * One progress line per round on stderr; metrics as JSON lines, an HTML
 * report and a final JSON object on request. Every option can also come
 * from a JSON config file (--config), keys named like the options.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "edgefl/accountant.h"

static const char *USAGE =
    "edgefl simulate [--config FILE.json] [--dataset fashion-mnist] [--model logreg|mlp|cnn]\n"
    "                       [--clients N] [--partition iid|dirichlet:A|shards:K|quantity:A]\n"
    "                       [--strategy NAME] [--rounds R] [--clients-per-round K]\n"
    "                       [--local-epochs E] [--batch B] [--lr X] [--profile NAME]\n"
    "                       [--metrics FILE.jsonl] [--report FILE.html] [--json]";
static const char *DESC =
    "Simulates federated learning: N virtual clients hold a partition of the training set,\n"
    "a server runs synchronous rounds (or FedBuff-style asynchronous aggregation) through\n"
    "the same protocol code as a deployment, and devices are drawn from a profile (speed,\n"
    "bandwidth, latency, availability, dropout) that drives a simulated clock. Strategies:\n"
    "fedavg fedprox fedavgm fedadam fedyogi fedadagrad fedmedian fedtrimmedavg krum\n"
    "multikrum. Profiles: ideal, mobile, heavy-tail. Every option is also a key of the\n"
    "--config JSON object; options on the command line win. See docs/simulation.md.";

typedef struct sim_opts {
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
    uint64_t seed;
} sim_opts;

typedef struct run_state {
    cli_progress prog;
    FILE *metrics;
    FILE *trace;
    int metrics_wall;
    int write_failed;
    double target;
    double time_to_target;
    uint32_t rounds_to_target;
    double best_acc;
} run_state;

static void human_bytes(char *buf, size_t n, double b) {
    const char *u[] = {"B", "KB", "MB", "GB", "TB"};
    int i = 0;
    while (b >= 1000 && i < 4) b /= 1000, i++;
    snprintf(buf, n, i ? "%.1f%s" : "%.0f%s", b, u[i]);
}

static void on_round(void *user, const ef_sim_progress *p) {
    run_state *rs = user;
    const ef_round_record *r = p->rec;
    if (rs->metrics && ef_round_record_write_json(rs->metrics, r, rs->metrics_wall) != EF_OK)
        rs->write_failed = 1;
    if (rs->trace) {
        int bad = fprintf(rs->trace, "{\"round\":%u,\"clients\":[", r->round) < 0;
        for (size_t i = 0; i < p->n_clients; i++)
            bad |= fprintf(rs->trace, i ? ",%u" : "%u", p->clients[i]) < 0;
        bad |= fprintf(rs->trace, "]}\n") < 0;
        if (bad) rs->write_failed = 1;
    }
    if (!isnan(r->test_accuracy)) {
        if (r->test_accuracy > rs->best_acc) rs->best_acc = r->test_accuracy;
        if (rs->target > 0 && r->test_accuracy >= rs->target && rs->rounds_to_target == 0) {
            rs->rounds_to_target = r->round;
            rs->time_to_target = r->sim_end;
        }
    }
    char up[16], down[16], eta[16], acc[32] = "", loss[32] = "", eps[32] = "";
    if (isfinite(r->epsilon)) snprintf(eps, sizeof eps, "  eps %.3f", r->epsilon);
    human_bytes(up, sizeof up, (double)r->bytes_up);
    human_bytes(down, sizeof down, (double)r->bytes_down);
    cli_fmt_duration(eta, sizeof eta, p->eta_s);
    if (!isnan(r->test_accuracy)) snprintf(acc, sizeof acc, "  acc %.4f", r->test_accuracy);
    else if (!isnan(r->fed_accuracy)) snprintf(acc, sizeof acc, "  fed-acc %.4f", r->fed_accuracy);
    if (!isnan(r->train_loss)) snprintf(loss, sizeof loss, "  loss %.4f", r->train_loss);
    /* one line per round, also on a terminal */
    cli_progress_show(&rs->prog, 1,
                      "round %u/%u  sel %u ok %u drop %u late %u%s%s%s  up %s down %s  "
                      "round %.1fs sim %.1fs  wall %.1fs  ETA %s",
                      r->round, p->rounds, r->selected, r->completed, r->dropped, r->late, loss,
                      acc, eps, up, down, r->sim_end - r->sim_start, r->sim_end, p->wall_s, eta);
    cli_progress_done(&rs->prog);
    if (r->note[0] && !rs->prog.quiet) fprintf(stderr, "  round %u: %s\n", r->round, r->note);
}

/* Writes {"n_clients": N, "clients": [[indices of client 0], ...]}; 0 on success. */
static int write_partition(const char *path, const ef_partition *p) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    int bad = fprintf(f, "{\"n_clients\":%zu,\"clients\":[", p->n_clients) < 0;
    for (size_t c = 0; c < p->n_clients && !bad; c++) {
        bad |= fputs(c ? ",[" : "[", f) < 0;
        for (uint32_t i = p->offsets[c]; i < p->offsets[c + 1]; i++)
            bad |= fprintf(f, i > p->offsets[c] ? ",%u" : "%u", p->indices[i]) < 0;
        bad |= fputc(']', f) < 0;
    }
    bad |= fputs("]}\n", f) < 0;
    bad |= fclose(f) != 0;
    return bad ? -1 : 0;
}

/* Builds the simulation config from the options; returns 0 or an exit code. */
static int build_config(const sim_opts *o, ef_sim_config *c) {
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
    s->job = o->seed;
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
    cli_error("simulate", "%s", ef_last_error());
    return CLI_EXIT_USAGE;
}

/* A DP run whose planned rounds cannot fit its target epsilon is refused
 * before it starts: 0 when they fit. */
static int check_budget(const ef_sim_config *c) {
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
        cli_error("simulate", "%s", ef_last_error());
        return CLI_EXIT_USAGE;
    }
    if (!exceeds) return 0;
    cli_error("simulate",
              "%u rounds at sampling rate %.4g and noise multiplier %g spend epsilon %.4g "
              "(delta %g), above --dp-target-epsilon %g: only %llu rounds fit. Lower --rounds, "
              "raise --dp-noise or the target",
              s->rounds, q, s->dp_noise, eps, s->dp_delta, s->dp_target_epsilon,
              (unsigned long long)fit);
    return CLI_EXIT_USAGE;
}

/* The effective configuration as JSON (for the report and --json). */
static cJSON *config_json(const sim_opts *o, const ef_sim_config *c) {
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
    return j;
}

int cmd_simulate(int argc, char **argv) {
    sim_opts o = {.dataset = "fashion-mnist", .model = "mlp", .partition = "iid",
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
    cli_opt opts[] = {
        {"config", CLI_STR, &o.config, "FILE", "JSON object of options (keys = option names)", 0, 0, NULL, 0},
        {"dataset", CLI_CHOICE, &o.dataset, NULL, "dataset (default fashion-mnist)", 0, 0, "fashion-mnist", 0},
        {"data-dir", CLI_STR, &o.data_dir, "DIR", "dataset directory", 0, 0, NULL, 0},
        {"limit", CLI_INT, &o.limit, "N", "use the first N training examples only", 1, 1 << 30, NULL, 0},
        {"model", CLI_CHOICE, &o.model, NULL, "model (default mlp)", 0, 0, "logreg|mlp|cnn|lenet5", 0},
        {"clients", CLI_INT, &o.clients, "N", "virtual clients (default 100)", 1, 10000000, NULL, 0},
        {"partition", CLI_STR, &o.partition, "SPEC", "iid, dirichlet:ALPHA, shards:K, quantity:ALPHA (default iid)", 0, 0, NULL, 0},
        {"min-per-client", CLI_INT, &o.min_per_client, "N", "training examples per client at least (default 1)", 1, 1 << 20, NULL, 0},
        {"holdout", CLI_FLOAT, &o.holdout, "F", "fraction of each client's data held out for federated evaluation (default 0)", 0, 0.9, NULL, 0},
        {"strategy", CLI_STR, &o.strategy, "NAME", "aggregation strategy (default fedavg)", 0, 0, NULL, 0},
        {"server-lr", CLI_FLOAT, &o.server_lr, "X", "server learning rate (default 1; 0.01 for fedadam/yogi/adagrad)", 1e-9, 100, NULL, 0},
        {"server-momentum", CLI_FLOAT, &o.server_momentum, "B", "FedAvgM momentum (default 0.9)", 0, 0.999, NULL, 0},
        {"beta1", CLI_FLOAT, &o.beta1, "B", "FedAdam/FedYogi beta1 (default 0.9)", 0, 0.999, NULL, 0},
        {"beta2", CLI_FLOAT, &o.beta2, "B", "FedAdam/FedYogi beta2 (default 0.99)", 0, 0.9999, NULL, 0},
        {"tau", CLI_FLOAT, &o.tau, "T", "adaptivity of FedAdam/Yogi/Adagrad (default 1e-3)", 1e-12, 1, NULL, 0},
        {"proximal-mu", CLI_FLOAT, &o.prox_mu, "MU", "FedProx proximal term (default 0.01)", 0, 100, NULL, 0},
        {"trim-beta", CLI_FLOAT, &o.trim_beta, "B", "FedTrimmedAvg fraction cut per side (default 0.1)", 0, 0.49, NULL, 0},
        {"krum-f", CLI_INT, &o.krum_f, "F", "Krum: Byzantine clients tolerated (default 1)", 0, 100000, NULL, 0},
        {"multikrum-m", CLI_INT, &o.multikrum_m, "M", "Multi-Krum: updates averaged (default n - f)", 0, 100000, NULL, 0},
        {"rounds", CLI_INT, &o.rounds, "R", "rounds, or aggregations in --async mode (default 10)", 1, 1000000, NULL, 0},
        {"clients-per-round", CLI_INT, &o.cpr, "K", "updates per round; --async: clients training at once (default 10)", 1, 10000000, NULL, 0},
        {"overselect", CLI_FLOAT, &o.overselect, "F", "select F x clients-per-round, use the first to answer (default 1)", 1, 100, NULL, 0},
        {"deadline", CLI_FLOAT, &o.deadline, "S", "round deadline in simulated seconds (default 0: none)", 0, 1e9, NULL, 0},
        {"min-updates", CLI_INT, &o.min_updates, "N", "fewest updates aggregated at a deadline (default 1)", 1, 10000000, NULL, 0},
        {"async", CLI_FLAG, &o.async, NULL, "asynchronous buffered aggregation (FedBuff)", 0, 0, NULL, 0},
        {"buffer-k", CLI_INT, &o.buffer_k, "K", "--async: updates per aggregation (default 10)", 1, 1000000, NULL, 0},
        {"max-staleness", CLI_INT, &o.max_staleness, "S", "--async: refuse staler updates (default 10)", 0, 1000000, NULL, 0},
        {"staleness-exponent", CLI_FLOAT, &o.staleness_exp, "E", "--async: weight (1+s)^-E (default 0.5)", 0, 10, NULL, 0},
        {"secagg", CLI_CHOICE, &o.secagg, "MODE", "secure aggregation: off, on (SecAgg+), plain (same quantized sum, no masks) (default off)", 0, 0, "off|on|plain", 0},
        {"secagg-neighbors", CLI_INT, &o.sa_neighbors, "K", "SecAgg+ neighbours per client, even (default 2 ceil(log2 n); n-1: classic SecAgg)", 0, 1000000, NULL, 0},
        {"secagg-threshold", CLI_INT, &o.sa_threshold, "T", "shares needed to recover a secret (default a majority of K+1)", 0, 1000000, NULL, 0},
        {"secagg-bits", CLI_INT, &o.sa_bits, "B", "sums mod 2^B (default 32)", 1, 32, NULL, 0},
        {"secagg-clip", CLI_FLOAT, &o.sa_clip, "R", "clip each update coordinate to [-R, R] before quantizing (default 1)", 1e-9, 1e9, NULL, 0},
        {"secagg-weight-cap", CLI_FLOAT, &o.sa_weight_cap, "W", "an update counts min(examples, W) / W (default 1000)", 1, 1e12, NULL, 0},
        {"secagg-timeout", CLI_FLOAT, &o.sa_timeout, "S", "simulated seconds to wait at each key/share/unmask stage (default: --deadline or 60)", 0, 1e9, NULL, 0},
        {"dp-mode", CLI_CHOICE, &o.dp_mode, "MODE", "client-level differential privacy: off, central (the server adds the noise), distributed (each client adds its share before SecAgg+ masking) (default off)", 0, 0, "off|central|distributed", 0},
        {"dp-noise", CLI_FLOAT, &o.dp_noise, "Z", "noise multiplier: stddev Z x C on the sum of updates (default 1)", 1e-6, 1e6, NULL, 0},
        {"dp-clip", CLI_FLOAT, &o.dp_clip, "C", "clip every update to L2 norm C (default 0.1; see docs/privacy.md)", 1e-9, 1e9, NULL, 0},
        {"dp-delta", CLI_FLOAT, &o.dp_delta, "D", "delta of the reported epsilon (default 1e-5)", 1e-300, 0.5, NULL, 0},
        {"dp-target-epsilon", CLI_FLOAT, &o.dp_target, "E", "stop before a round that would spend more; refuse a run whose rounds cannot fit (default 0: no limit)", 0, 1e9, NULL, 0},
        {"dp-adaptive-clip", CLI_FLAG, &o.dp_adaptive, NULL, "central DP: adapt the clipping norm to a quantile of the update norms (Andrew et al. 2021)", 0, 0, NULL, 0},
        {"dp-adaptive-quantile", CLI_FLOAT, &o.dp_aq, "G", "--dp-adaptive-clip: target quantile (default 0.5)", 0, 1, NULL, 0},
        {"dp-adaptive-lr", CLI_FLOAT, &o.dp_alr, "ETA", "--dp-adaptive-clip: geometric learning rate (default 0.2)", 1e-6, 10, NULL, 0},
        {"dp-adaptive-noise", CLI_FLOAT, &o.dp_anoise, "S", "--dp-adaptive-clip: noise stddev on the count of clipped updates (default clients-per-round / 20)", 0, 1e9, NULL, 0},
        {"dp-min-survivors", CLI_FLOAT, &o.dp_min_surv, "F", "distributed DP: size the clients' noise for this fraction of a round's clients; fewer survivors and the round is not released (default 0.8)", 0.001, 1, NULL, 0},
        {"dp-mechanism", CLI_CHOICE, &o.dp_mech, "M", "distributed noise: skellam or dgauss (distributed discrete Gaussian) (default skellam)", 0, 0, "skellam|dgauss", 0},
        {"local-epochs", CLI_INT, &o.epochs, "E", "client epochs per task (default 1)", 1, 1000, NULL, 0},
        {"batch", CLI_INT, &o.batch, "B", "client batch size (default 32)", 1, 4096, NULL, 0},
        {"lr", CLI_FLOAT, &o.lr, "X", "client learning rate (default 0.05)", 1e-9, 100, NULL, 0},
        {"momentum", CLI_FLOAT, &o.momentum, "M", "client SGD momentum (default 0)", 0, 0.999, NULL, 0},
        {"eval-every", CLI_INT, &o.eval_every, "K", "centralized test evaluation every K rounds (default 1; 0: last round only)", 0, 1000000, NULL, 0},
        {"eval-limit", CLI_INT, &o.eval_limit, "N", "test examples used (default all)", 1, 1 << 30, NULL, 0},
        {"fed-eval-every", CLI_INT, &o.fed_eval_every, "K", "federated evaluation every K rounds (needs --holdout; default 0)", 0, 1000000, NULL, 0},
        {"fed-eval-clients", CLI_INT, &o.fed_eval_clients, "N", "clients per federated evaluation (default 10)", 1, 10000000, NULL, 0},
        {"profile", CLI_STR, &o.profile, "NAME", "device profile: ideal, mobile, heavy-tail (default ideal)", 0, 0, NULL, 0},
        {"flops", CLI_STR, &o.flops, "DIST", "device speed in FLOP/s, e.g. lognormal:5G:0.5", 0, 0, NULL, 0},
        {"down", CLI_STR, &o.down, "DIST", "downlink bytes/s, e.g. lognormal:10M:0.7", 0, 0, NULL, 0},
        {"up", CLI_STR, &o.up, "DIST", "uplink bytes/s", 0, 0, NULL, 0},
        {"latency", CLI_STR, &o.latency, "DIST", "one-way latency in seconds", 0, 0, NULL, 0},
        {"availability", CLI_FLOAT, &o.availability, "P", "probability a client is there for a task", 0.001, 1, NULL, 0},
        {"dropout", CLI_FLOAT, &o.dropout, "P", "probability a client drops out during a task", 0, 0.999, NULL, 0},
        {"offline", CLI_FLOAT, &o.offline, "S", "mean seconds a dropped client stays offline", 0, 1e9, NULL, 0},
        {"malicious", CLI_FLOAT, &o.malicious, "F", "fraction of attacking clients (default 0)", 0, 1, NULL, 0},
        {"attack-scale", CLI_FLOAT, &o.attack_scale, "S", "attackers send -S x their update (default 1)", 0, 1e6, NULL, 0},
        {"target-accuracy", CLI_FLOAT, &o.target, "A", "report rounds and simulated time to reach this test accuracy", 0, 1, NULL, 0},
        {"threads", CLI_INT, &o.threads, "T", "worker threads (default: all CPUs)", 1, 1024, NULL, 0},
        {"seed", CLI_U64, &o.seed, "S", "seed for everything (default 1)", 0, 0, NULL, 0},
        {"metrics", CLI_STR, &o.metrics, "FILE", "write one JSON object per round (JSON lines)", 0, 0, NULL, 0},
        {"metrics-wall", CLI_FLAG, &o.metrics_wall, NULL, "include wall-clock times in --metrics (not reproducible)", 0, 0, NULL, 0},
        {"trace", CLI_STR, &o.trace, "FILE", "write the clients aggregated in each round (JSON lines)", 0, 0, NULL, 0},
        {"partition-out", CLI_STR, &o.partition_out, "FILE", "write every client's training example indices (JSON)", 0, 0, NULL, 0},
        {"report", CLI_STR, &o.report, "FILE", "write a self-contained HTML report", 0, 0, NULL, 0},
        {"out", CLI_STR, &o.out, "FILE", "save the final global model (safetensors)", 0, 0, NULL, 0},
        {"json", CLI_FLAG, &o.json, NULL, "print one JSON object with the results on stdout", 0, 0, NULL, 0},
        {"quiet", CLI_FLAG, &o.quiet, NULL, "no progress output", 0, 0, NULL, 0},
        {0},
    };
    void *keep = NULL;
    const char *cfg_path = cli_config_path(argc, argv, 2);
    int rc;
    if (cfg_path && (rc = cli_load_config("simulate", cfg_path, opts, &keep)) != 0) return rc;
    int help;
    rc = cli_parse("simulate", argc, argv, 2, opts, &help, USAGE, DESC);
    if (rc || help) {
        cli_config_free(keep);
        return rc;
    }
    ef_sim_config sc;
    if ((rc = build_config(&o, &sc)) != 0) {
        cli_config_free(keep);
        return rc;
    }
    if (sc.server.dp && sc.server.dp_target_epsilon > 0 && (rc = check_budget(&sc)) != 0) {
        cli_config_free(keep);
        return rc;
    }

    int status = CLI_EXIT_FAIL;
    double t0 = ef_now();
    ef_dataset train = {0}, test = {0};
    ef_sim *sim = NULL;
    cJSON *cj = NULL;
    run_state rs = {.time_to_target = NAN, .target = o.target, .metrics_wall = o.metrics_wall};
    cli_progress_init(&rs.prog, o.quiet);
    if (ef_dataset_load_n(&train, o.dataset, o.data_dir, 1, (uint32_t)o.limit) != EF_OK ||
        ef_dataset_load_n(&test, o.dataset, o.data_dir, 0, (uint32_t)o.eval_limit) != EF_OK) {
        cli_error("simulate", "%s", ef_last_error());
        goto done;
    }
    if (ef_sim_new(&sim, &sc, &train, &test) != EF_OK) {
        cli_error("simulate", "%s", ef_last_error());
        goto done;
    }
    if (o.metrics) {
        rs.metrics = fopen(o.metrics, "w");
        if (!rs.metrics) {
            cli_error("simulate", "cannot write %s: %s", o.metrics, strerror(errno));
            goto done;
        }
    }
    if (o.trace && !(rs.trace = fopen(o.trace, "w"))) {
        cli_error("simulate", "cannot write %s: %s", o.trace, strerror(errno));
        goto done;
    }
    if (o.partition_out && write_partition(o.partition_out, ef_sim_partition(sim)) != 0) {
        cli_error("simulate", "cannot write %s: %s", o.partition_out, strerror(errno));
        goto done;
    }
    cj = config_json(&o, &sc);
    if (!o.quiet)
        fprintf(stderr, "edgefl simulate: %s, %s, %u clients (%s, %u malicious), %s, %u rounds x %u "
                        "clients, %s devices, %d threads\n",
                o.model, o.dataset, sc.n_clients, o.partition, ef_sim_malicious_count(sim),
                ef_strategy_name(sc.strategy.kind), sc.server.rounds, sc.server.clients_per_round,
                sc.profile.name, sc.threads ? sc.threads : (int)sysconf(_SC_NPROCESSORS_ONLN));
    if (ef_sim_run(sim, on_round, &rs) != EF_OK) {
        cli_error("simulate", "%s", ef_last_error());
        goto done;
    }
    int bad_metrics = rs.metrics && fclose(rs.metrics) != 0;
    int bad_trace = rs.trace && fclose(rs.trace) != 0;
    rs.metrics = rs.trace = NULL;
    if (bad_metrics || bad_trace || rs.write_failed) {
        cli_error("simulate", "writing %s failed", bad_trace ? o.trace : o.metrics);
        goto done;
    }
    size_t nr;
    const ef_round_record *recs = ef_sim_records(sim, &nr);
    ef_run_summary sum = {.rounds = (uint32_t)nr, .final_accuracy = NAN,
                          .sim_time_s = ef_sim_time(sim), .wall_s = ef_now() - t0,
                          .peak_rss_mb = ef_peak_rss_mb()};
    for (size_t i = 0; i < nr; i++) {
        sum.bytes_up += recs[i].bytes_up;
        sum.bytes_down += recs[i].bytes_down;
        if (!isnan(recs[i].test_accuracy)) sum.final_accuracy = recs[i].test_accuracy;
    }
    char title[256];
    snprintf(title, sizeof title, "%s, %s, %u clients, %s, %u rounds x %u", 
             ef_strategy_name(sc.strategy.kind), o.model, sc.n_clients, o.partition,
             sc.server.rounds, sc.server.clients_per_round);
    sum.title = title;
    char *cfg_text = cJSON_Print(cj);
    sum.config_json = cfg_text;
    if (o.report && ef_report_write_html(o.report, &sum, recs, nr) != EF_OK) {
        cli_error("simulate", "%s", ef_last_error());
        cJSON_free(cfg_text);
        goto done;
    }
    cJSON_free(cfg_text);
    if (o.out) {
        /* the final model as a checkpoint `edgefl eval` can read */
        ef_model_config mc = sc.model;
        mc.c = train.c, mc.h = train.h, mc.w = train.w, mc.n_classes = train.n_classes;
        ef_model *m = NULL;
        size_t n;
        const float *w = ef_sim_model(sim, &n);
        ef_status st = ef_model_new(&m, &mc, NULL);
        if (st == EF_OK) {
            memcpy(ef_params_data(ef_model_params(m)), w, n * sizeof(float));
            st = ef_model_save(m, o.out, NULL, 0);
        }
        ef_model_free(m);
        if (st != EF_OK) {
            cli_error("simulate", "%s", ef_last_error());
            goto done;
        }
    }
    double mean_round = nr ? sum.sim_time_s / (double)nr : 0;
    const char *stop = ef_server_stop_reason(ef_sim_server(sim));
    double epsilon = ef_server_epsilon(ef_sim_server(sim));
    if (!o.quiet && stop[0]) fprintf(stderr, "edgefl simulate: %s\n", stop);
    if (!o.quiet && isfinite(epsilon))
        fprintf(stderr, "edgefl simulate: privacy spent: epsilon %.4f at delta %g\n", epsilon,
                sc.server.dp_delta);
    if (!o.quiet)
        fprintf(stderr, "edgefl simulate: final accuracy %.4f after %zu rounds, %.1f s simulated "
                        "(%.1f s per round), %.1f s wall\n",
                sum.final_accuracy, nr, sum.sim_time_s, mean_round, sum.wall_s);
    if (o.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "command", "simulate");
        if (isnan(sum.final_accuracy)) cJSON_AddNullToObject(j, "final_accuracy");
        else cJSON_AddNumberToObject(j, "final_accuracy", sum.final_accuracy);
        cJSON_AddNumberToObject(j, "best_accuracy", rs.best_acc);
        /* one evaluation fluctuates by a point or more between rounds: the mean of
         * the last five evaluated rounds is the steadier figure to compare runs */
        double tail_sum = 0;
        int tail_n = 0;
        for (size_t i = nr; i-- > 0 && tail_n < 5;)
            if (!isnan(recs[i].test_accuracy)) tail_sum += recs[i].test_accuracy, tail_n++;
        if (tail_n) cJSON_AddNumberToObject(j, "final_accuracy_last5", tail_sum / tail_n);
        cJSON_AddNumberToObject(j, "rounds", (double)nr);
        cJSON_AddNumberToObject(j, "wall_s", sum.wall_s);
        cJSON_AddNumberToObject(j, "sim_time_s", sum.sim_time_s);
        cJSON_AddNumberToObject(j, "mean_round_s", mean_round);
        cJSON_AddNumberToObject(j, "bytes_up", (double)sum.bytes_up);
        cJSON_AddNumberToObject(j, "bytes_down", (double)sum.bytes_down);
        cJSON_AddNumberToObject(j, "peak_rss_mb", ef_peak_rss_mb());
        uint64_t completed = 0, dropped = 0, late = 0;
        for (size_t i = 0; i < nr; i++)
            completed += recs[i].completed, dropped += recs[i].dropped, late += recs[i].late;
        cJSON_AddNumberToObject(j, "updates", (double)completed);
        if (isfinite(epsilon)) {
            cJSON_AddNumberToObject(j, "epsilon", epsilon);
            cJSON_AddNumberToObject(j, "delta", sc.server.dp_delta);
        }
        if (stop[0]) cJSON_AddStringToObject(j, "stopped", stop);
        cJSON_AddNumberToObject(j, "dropped", (double)dropped);
        cJSON_AddNumberToObject(j, "late", (double)late);
        if (o.target > 0) {
            cJSON_AddNumberToObject(j, "target_accuracy", o.target);
            if (rs.rounds_to_target) {
                cJSON_AddNumberToObject(j, "rounds_to_target", rs.rounds_to_target);
                cJSON_AddNumberToObject(j, "time_to_target_s", rs.time_to_target);
            } else {
                cJSON_AddNullToObject(j, "rounds_to_target");
                cJSON_AddNullToObject(j, "time_to_target_s");
            }
        }
        cJSON_AddItemToObject(j, "config", cj);
        cj = NULL;
        char *s = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        if (!s) goto done;
        printf("%s\n", s);
        cJSON_free(s);
    } else {
        printf("final_accuracy %.4f\n", sum.final_accuracy);
    }
    status = 0;
done:
    if (rs.metrics) fclose(rs.metrics);
    if (rs.trace) fclose(rs.trace);
    cJSON_Delete(cj);
    ef_sim_free(sim);
    ef_dataset_free(&train);
    ef_dataset_free(&test);
    cli_config_free(keep);
    return status;
}
