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
#include "job.h"

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
    job_human_bytes(up, sizeof up, (double)r->bytes_up);
    job_human_bytes(down, sizeof down, (double)r->bytes_down);
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

int cmd_simulate(int argc, char **argv) {
    job_opts o;
    job_defaults(&o);
    cli_opt table[JOB_MAX_OPTS + 1];
    void *keep = NULL;
    int help;
    int rc = job_parse("simulate", argc, argv, &o, JOB_SIM, NULL, table, &help, USAGE, DESC, &keep);
    if (rc || help) return rc;
    ef_sim_config sc;
    if ((rc = job_build("simulate", &o, &sc)) != 0) {
        cli_config_free(keep);
        return rc;
    }
    if ((rc = job_check_budget("simulate", &sc)) != 0) {
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
    cj = job_config_json(&o, &sc);
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
        ef_model_config mc = job_model_config(&sc, &train);
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
        if (cli_print_json("simulate", j) != 0) goto done;
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
