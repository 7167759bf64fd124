/*
 * `edgefl server`: the federated server of a real deployment. It runs the
 * job described by the same options (or --config file) as `edgefl
 * simulate` over an MQTT broker: waits for the job's clients to check in,
 * runs the rounds, evaluates the global model on the test split after each
 * round, writes metrics, saves its state, and prints a summary (one JSON
 * object with --json). See docs/deploy.md.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>

#include "audit.h"
#include "cli.h"
#include "edgefl/identity.h"
#include "edgefl/serve.h"
#include "edgefl/transport.h"
#include "job.h"
#include "mqtt_args.h"

static const char *USAGE =
    "edgefl server --broker mqtt[s]://HOST:PORT --config job.json [--state-dir DIR]\n"
    "                     [--key FILE] [--allow FILE] [--tls-ca F --tls-cert F --tls-key F]\n"
    "                     [--http HOST:PORT] [--json] [--metrics FILE.jsonl]\n"
    "                     [--audit-dir DIR] [--workers FILE]";
static const char *DESC =
    "Runs the server of a federated job over an MQTT 5 broker. The job's options (or the\n"
    "--config JSON file, the same as 'edgefl simulate --config') set the rounds, strategy,\n"
    "model, secure aggregation and differential privacy. The server waits until --clients\n"
    "clients (or --min-clients) have checked in, publishes each model version once,\n"
    "retained, on edgefl/<job>/broadcast, sends tasks to edgefl/<job>/client/<id> and reads\n"
    "answers on edgefl/<job>/server. One progress line per round on stderr; after each\n"
    "round the global model is evaluated on the test split and the server checkpoints into\n"
    "--state-dir; started again with the same directory it resumes after the last round.\n"
    "--key signs every message (edgefl keygen); --allow accepts only clients on the\n"
    "allow-list, with valid signatures and fresh message counters. Start the clients with\n"
    "'edgefl client'. With --workers (a list of worker ids and public keys) aggregator\n"
    "workers ('edgefl worker') share the inbox and the server reads what they send on\n"
    "edgefl/<job>/server/workers instead. See docs/deploy.md.";

typedef struct srv_state {
    cli_progress prog;
    FILE *metrics;
    int metrics_wall, write_failed;
    ef_model *eval_model;
    const ef_dataset *test;
    uint32_t eval_every, eval_limit, rounds;
    double t0, t_last;
    ef_status eval_status;
    double best_acc;
    const char *state_dir;
    ef_dashboard *dash;
    char job[32];
    double dp_delta;
} srv_state;

/* The dashboard's view of the run (--http). */
static void dash_status(srv_state *ss, const ef_server *s, const char *phase,
                        const ef_mqtt_server_stats *st) {
    if (!ss->dash) return;
    ef_dashboard_status d = ef_dashboard_status_empty();
    size_t nr;
    const ef_round_record *recs = ef_server_records(s, &nr);
    d.job = ss->job;
    d.phase = phase;
    d.round = ef_server_done(s) ? (uint32_t)nr : (uint32_t)nr + 1;
    d.rounds = ss->rounds;
    d.clients_known = (uint32_t)ef_server_clients(s);
    for (size_t i = 0; i < nr; i++) d.bytes_up += recs[i].bytes_up, d.bytes_down += recs[i].bytes_down;
    if (st) {
        d.updates_received = st->updates_received;
        d.updates_rejected = st->refused;
    }
    double eps = ef_server_epsilon(s);
    if (isfinite(eps)) d.epsilon = eps, d.delta = ss->dp_delta;
    if (ef_dashboard_set_status(ss->dash, &d) != EF_OK)
        ef_log(EF_LOG_WARN, "server: dashboard: %s", ef_last_error());
}

static void on_round(void *user, ef_round_record *rec, const float *model, size_t n) {
    srv_state *ss = user;
    double wall = ef_now();
    rec->wall_s = wall - ss->t_last;
    ss->t_last = wall;
    int last = rec->round == ss->rounds;
    if (ss->test && (last || (ss->eval_every && rec->round % ss->eval_every == 0))) {
        memcpy(ef_params_data(ef_model_params(ss->eval_model)), model, n * sizeof(float));
        double acc, loss;
        ef_status st = ef_evaluate(ss->eval_model, ss->test, NULL,
                                   ss->eval_limit ? ss->eval_limit : ss->test->n, &acc, &loss);
        if (st == EF_OK) {
            rec->test_accuracy = acc;
            rec->test_loss = loss;
            if (acc > ss->best_acc) ss->best_acc = acc;
        } else if (ss->eval_status == EF_OK) {
            ss->eval_status = st;
        }
    }
    if (ss->metrics && ef_round_record_write_json(ss->metrics, rec, ss->metrics_wall) != EF_OK)
        ss->write_failed = 1;
    if (ss->metrics) fflush(ss->metrics);
    char up[16], down[16], eta[16], acc[32] = "", loss[32] = "", eps[32] = "";
    double elapsed = wall - ss->t0;
    cli_fmt_duration(eta, sizeof eta, elapsed / rec->round * (double)(ss->rounds - rec->round));
    job_human_bytes(up, sizeof up, (double)rec->bytes_up);
    job_human_bytes(down, sizeof down, (double)rec->bytes_down);
    if (isfinite(rec->epsilon)) snprintf(eps, sizeof eps, "  eps %.3f", rec->epsilon);
    if (!isnan(rec->test_accuracy)) snprintf(acc, sizeof acc, "  acc %.4f", rec->test_accuracy);
    else if (!isnan(rec->fed_accuracy)) snprintf(acc, sizeof acc, "  fed-acc %.4f", rec->fed_accuracy);
    if (!isnan(rec->train_loss)) snprintf(loss, sizeof loss, "  loss %.4f", rec->train_loss);
    cli_progress_show(&ss->prog, 1,
                      "round %u/%u  sel %u ok %u drop %u late %u rej %u%s%s%s  up %s down %s  "
                      "round %.1fs  wall %.1fs  ETA %s",
                      rec->round, ss->rounds, rec->selected, rec->completed, rec->dropped,
                      rec->late, rec->rejected, loss, acc, eps, up, down,
                      rec->sim_end - rec->sim_start, elapsed, eta);
    cli_progress_done(&ss->prog);
    if (rec->note[0] && !ss->prog.quiet) fprintf(stderr, "  round %u: %s\n", rec->round, rec->note);
    if (ss->dash && ef_dashboard_add_round(ss->dash, rec) != EF_OK)
        ef_log(EF_LOG_WARN, "server: dashboard: %s", ef_last_error());
}

/* After every round, once its messages are out: a checkpoint (written
 * atomically; the previous one stays valid if this one fails). */
static ef_status after_round(void *user, ef_server *s, const ef_mqtt_server_stats *stats) {
    srv_state *ss = user;
    dash_status(ss, s, ef_server_done(s) ? "done" : "training", stats);
    if (!ss->state_dir) return EF_OK;
    ef_status st = ef_server_checkpoint(s, ss->state_dir);
    if (st != EF_OK)
        ef_log(EF_LOG_ERROR, "server: checkpoint into %s: %s", ss->state_dir, ef_last_error());
    return st;
}

/* A fresh run must not inherit what an earlier server of this job left
 * queued in its broker session (check-ins meant for it, stale updates): a
 * throwaway clean connection with the same client id ends that session. */
static void purge_session(const ef_mqtt_config *mc) {
    ef_mqtt_config c = *mc;
    c.clean_start = 1;
    c.session_expiry_s = 0;
    c.will_topic = NULL;
    c.name = "server (clearing the old session)";
    ef_mqtt *p = NULL;
    if (ef_mqtt_new(&p, &c) != EF_OK) return;
    if (!ef_mqtt_wait_connected(p, 30))
        ef_log(EF_LOG_WARN, "server: could not reach the broker to clear an old session");
    ef_mqtt_close(p, 1);
}

static ef_status add_worker(void *user, uint32_t id, const uint8_t pk[EF_PK_BYTES]) {
    return ef_server_add_aggregator(user, id, pk);
}

/* --workers FILE: registers the aggregator workers ("<id> <public key hex>"
 * lines). 0 or an exit code. */
static int add_workers(const char *path, const ef_sim_config *sc, ef_server *s, int quiet) {
    if (sc->server.async || sc->server.secagg || sc->server.dp ||
        ef_strategy_keeps_updates(sc->strategy.kind)) {
        cli_error("server", "--workers needs synchronous rounds, a mean-based strategy (not %s), "
                            "no secure aggregation and no differential privacy",
                  ef_strategy_name(sc->strategy.kind));
        return CLI_EXIT_USAGE;
    }
    size_t count = 0;
    if (ef_keylist_load(path, add_worker, s, &count) != EF_OK) {
        cli_error("server", "%s", ef_last_error());
        return CLI_EXIT_USAGE;
    }
    if (count == 0) {
        cli_error("server", "--workers %s lists no worker", path);
        return CLI_EXIT_USAGE;
    }
    char topic[64];
    if (!quiet)
        fprintf(stderr, "edgefl server: %zu aggregator workers, reading %s\n", count,
                ef_mqtt_workers_topic(topic, sizeof topic, sc->server.job));
    return 0;
}

static int make_dir(const char *cmd, const char *dir) {
    if (mkdir(dir, 0700) == 0 || errno == EEXIST) {
        struct stat sb;
        if (stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode)) return 0;
    }
    cli_error(cmd, "cannot create the state directory %s: %s", dir, strerror(errno));
    return CLI_EXIT_USAGE;
}

int cmd_server(int argc, char **argv) {
    job_opts o;
    job_defaults(&o);
    mqtt_args ma;
    mqtt_args_defaults(&ma);
    const char *state_dir = NULL, *key_path = NULL, *allow_path = NULL, *http = NULL;
    const char *audit_dir = NULL, *workers_path = NULL;
    int min_clients = 0, keep_retained = 0;
    cli_opt mine[] = {
        {"state-dir", CLI_STR, &state_dir, "DIR", "checkpoint after every round into DIR and resume from it", 0, 0, NULL, 0},
        {"key", CLI_STR, &key_path, "FILE", "the server's secret key (edgefl keygen): sign every message", 0, 0, NULL, 0},
        {"allow", CLI_STR, &allow_path, "FILE", "allow-list of client ids and public keys: refuse everyone else", 0, 0, NULL, 0},
        {"http", CLI_STR, &http, "HOST:PORT", "serve the live dashboard (docs/dashboard.md) on HOST:PORT", 0, 0, NULL, 0},
        {"min-clients", CLI_INT, &min_clients, "N", "check-ins to wait for before the first round (default --clients)", 1, 10000000, NULL, 0},
        {"keep-retained", CLI_FLAG, &keep_retained, NULL, "leave the last model retained on the broker at the end", 0, 0, NULL, 0},
        {"audit-dir", CLI_STR, &audit_dir, "DIR", "testing/audit aid: write each secure-aggregation round's unmasked sum and included clients into DIR", 0, 0, NULL, 0},
        {"workers", CLI_STR, &workers_path, "FILE", "aggregator workers' ids and public keys: read their topic instead of the inbox", 0, 0, NULL, 0},
        {0},
    };
    void *keep = NULL;
    int help;
    int rc = job_parse_mqtt("server", argc, argv, &o, JOB_SERVER, &ma, mine, &help, USAGE, DESC,
                            &keep);
    if (rc || help) return rc;

    int status = CLI_EXIT_USAGE;
    ef_dataset test = {0};
    ef_model *init = NULL;
    ef_server *s = NULL;
    ef_mqtt *m = NULL;
    ef_pool *pool = NULL;
    ef_identity *ident = NULL;
    cJSON *cj = NULL;
    srv_state ss = {.metrics_wall = o.metrics_wall, .state_dir = state_dir};
    cli_audit audit = {0};
    cli_progress_init(&ss.prog, o.quiet);
    ef_sim_config sc;
    ef_mqtt_config mc;
    if ((rc = job_build("server", &o, &sc)) != 0) goto done;
    /* a deployment's secrets come from the operating system, and its
     * message counter never goes below one an earlier run used */
    sc.server.deterministic_noise = 0;
    sc.server.first_seq = ef_mqtt_clock_seq();
    sc.server.authenticate = allow_path != NULL;
    sc.server.min_clients = min_clients ? (uint32_t)min_clients : sc.n_clients;
    if ((rc = job_check_budget("server", &sc)) != 0) goto done;
    if ((rc = mqtt_args_config("server", &ma, o.quiet, &mc)) != 0) goto done;
    if (state_dir && (rc = make_dir("server", state_dir)) != 0) goto done;
    if (audit_dir) {
        if (!sc.server.secagg) {
            cli_error("server", "--audit-dir records secure aggregation: it needs --secagg on "
                                "or plain");
            goto done;
        }
        if ((rc = cli_audit_init("server", &audit, audit_dir)) != 0) goto done;
        sc.server.sa_audit = cli_audit_server;
        sc.server.sa_audit_user = &audit;
    }
    if (key_path && ef_identity_load(&ident, key_path) != EF_OK) {
        cli_error("server", "%s", ef_last_error());
        goto done;
    }
    if (ident) sc.server.sign_key = ef_identity_secret(ident);
    status = CLI_EXIT_FAIL;
    if (ef_dataset_load_n(&test, o.dataset, o.data_dir, 0, (uint32_t)o.eval_limit) != EF_OK) {
        cli_error("server", "%s", ef_last_error());
        goto done;
    }
    ef_model_config mcfg = job_model_config(&sc, &test);
    if (ef_pool_new(&pool, o.threads) != EF_OK || ef_model_new(&init, &mcfg, pool) != EF_OK) {
        cli_error("server", "%s", ef_last_error());
        goto done;
    }
    /* the initial model exactly as `edgefl simulate` draws it */
    ef_model_init(init, sc.seed);
    ss.eval_model = init;
    ss.test = &test;
    ss.dp_delta = sc.server.dp_delta;
    snprintf(ss.job, sizeof ss.job, "%llu", (unsigned long long)sc.server.job);
    ss.eval_every = sc.eval_every;
    ss.eval_limit = sc.eval_limit;
    ss.rounds = sc.server.rounds;
    if (o.metrics && !(ss.metrics = fopen(o.metrics, "w"))) {
        cli_error("server", "cannot write %s: %s", o.metrics, strerror(errno));
        goto done;
    }
    if (ef_server_new(&s, &sc.server, &sc.strategy, ef_model_params(init), on_round, &ss) !=
        EF_OK) {
        cli_error("server", "%s", ef_last_error());
        goto done;
    }
    size_t n_allowed = 0;
    if (allow_path && ef_allowlist_load(s, allow_path, &n_allowed) != EF_OK) {
        cli_error("server", "%s", ef_last_error());
        status = CLI_EXIT_USAGE;
        goto done;
    }
    if (workers_path && (rc = add_workers(workers_path, &sc, s, o.quiet)) != 0) {
        status = rc;
        goto done;
    }
    int restored = 0;
    if (state_dir && ef_server_restore(s, state_dir, &restored) != EF_OK) {
        cli_error("server", "%s", ef_last_error());
        goto done;
    }
    if (restored && !o.quiet) {
        size_t nr0;
        ef_server_records(s, &nr0);
        fprintf(stderr, "edgefl server: resumed from %s after round %zu (model version %u)\n",
                state_dir, nr0, ef_server_version(s));
    }
    char id[64];
    snprintf(id, sizeof id, "edgefl-%llu-server", (unsigned long long)sc.server.job);
    mc.client_id = id;
    mc.name = "server";
    if (!restored) purge_session(&mc);
    if (ef_mqtt_new(&m, &mc) != EF_OK) {
        cli_error("server", "%s", ef_last_error());
        status = CLI_EXIT_USAGE;
        goto done;
    }
    mqtt_args_free(&ma);
    if (!o.quiet)
        fprintf(stderr, "edgefl server: job %llu, %s, %s, %s, %u rounds x %u clients, waiting for "
                        "%u clients on %s\n",
                (unsigned long long)sc.server.job, o.model, o.dataset,
                ef_strategy_name(sc.strategy.kind), sc.server.rounds,
                sc.server.clients_per_round, sc.server.min_clients, ma.broker);
    if (http) {
        if (ef_dashboard_start(&ss.dash, http) != EF_OK) {
            cli_error("server", "--http %s: %s", http, ef_last_error());
            status = CLI_EXIT_USAGE;
            goto done;
        }
        if (!o.quiet)
            fprintf(stderr, "edgefl server: dashboard on http://%s (port %u)\n", http,
                    ef_dashboard_port(ss.dash));
        size_t nr0;
        const ef_round_record *old = ef_server_records(s, &nr0); /* restored rounds */
        for (size_t i = 0; i < nr0; i++) ef_dashboard_add_round(ss.dash, &old[i]);
        char phase[64];
        snprintf(phase, sizeof phase, "waiting for %u clients", sc.server.min_clients);
        dash_status(&ss, s, phase, NULL);
    }
    volatile sig_atomic_t stop = 0;
    cli_catch_stop_signals(&stop);
    if (allow_path && !o.quiet)
        fprintf(stderr, "edgefl server: %zu clients on the allow-list%s\n", n_allowed,
                ident ? ", messages signed" : "");
    ef_mqtt_server_opts so = {.job = sc.server.job, .stop = &stop, .after_round = after_round, .user = &ss,
                              .keep_retained = keep_retained};
    char workers_topic[64]; /* the workers pass everything on there */
    if (workers_path)
        so.inbox_topic = ef_mqtt_workers_topic(workers_topic, sizeof workers_topic, sc.server.job);
    ef_mqtt_server_stats st = {0};
    ss.t0 = ss.t_last = ef_now();
    ef_status run = ef_mqtt_run_server(m, s, &so, &st);
    dash_status(&ss, s, run == EF_OK ? "done" : "stopped", &st);
    int bad_metrics = ss.metrics && fclose(ss.metrics) != 0;
    ss.metrics = NULL;
    if (run != EF_OK) {
        cli_error("server", "%s", stop ? "interrupted" : ef_last_error());
        goto done;
    }
    if (ss.eval_status != EF_OK) {
        cli_error("server", "evaluation failed: %s", ef_strerror(ss.eval_status));
        goto done;
    }
    if (bad_metrics || ss.write_failed) {
        cli_error("server", "writing %s failed", o.metrics);
        goto done;
    }
    if (audit.failures) {
        cli_error("server", "%u audit files could not be written into %s", audit.failures,
                  audit_dir);
        goto done;
    }
    size_t nr;
    const ef_round_record *recs = ef_server_records(s, &nr);
    double final_acc = NAN;
    uint64_t bytes_up = 0, bytes_down = 0, completed = 0, dropped = 0, late = 0;
    for (size_t i = 0; i < nr; i++) {
        if (!isnan(recs[i].test_accuracy)) final_acc = recs[i].test_accuracy;
        bytes_up += recs[i].bytes_up, bytes_down += recs[i].bytes_down;
        completed += recs[i].completed, dropped += recs[i].dropped, late += recs[i].late;
    }
    if (o.out) {
        size_t n;
        const float *w = ef_server_model(s, &n);
        memcpy(ef_params_data(ef_model_params(init)), w, n * sizeof(float));
        if (ef_model_save(init, o.out, NULL, 0) != EF_OK) {
            cli_error("server", "%s", ef_last_error());
            goto done;
        }
    }
    cj = job_config_json(&o, &sc);
    if (o.report) {
        char title[256];
        snprintf(title, sizeof title, "%s, %s over MQTT, %u clients, %u rounds x %u",
                 ef_strategy_name(sc.strategy.kind), o.model, sc.n_clients, sc.server.rounds,
                 sc.server.clients_per_round);
        char *cfg_text = cJSON_Print(cj);
        ef_run_summary sum = {.title = title, .config_json = cfg_text, .rounds = (uint32_t)nr,
                              .final_accuracy = final_acc, .sim_time_s = st.wall_s,
                              .wall_s = st.wall_s, .bytes_up = bytes_up, .bytes_down = bytes_down,
                              .peak_rss_mb = ef_peak_rss_mb()};
        ef_status rs = ef_report_write_html(o.report, &sum, recs, nr);
        cJSON_free(cfg_text);
        if (rs != EF_OK) {
            cli_error("server", "%s", ef_last_error());
            goto done;
        }
    }
    const char *stop_reason = ef_server_stop_reason(s);
    double epsilon = ef_server_epsilon(s);
    if (!o.quiet && stop_reason[0]) fprintf(stderr, "edgefl server: %s\n", stop_reason);
    if (!o.quiet)
        fprintf(stderr, "edgefl server: final accuracy %.4f after %zu rounds, %llu updates "
                        "(%llu rejected), %.1f s\n",
                final_acc, nr, (unsigned long long)st.updates_received,
                (unsigned long long)st.updates_rejected, st.wall_s);
    if (o.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "command", "server");
        if (isnan(final_acc)) cJSON_AddNullToObject(j, "final_accuracy");
        else cJSON_AddNumberToObject(j, "final_accuracy", final_acc);
        cJSON_AddNumberToObject(j, "best_accuracy", ss.best_acc);
        cJSON_AddNumberToObject(j, "rounds", (double)nr);
        cJSON_AddNumberToObject(j, "clients", (double)ef_server_clients(s));
        cJSON_AddNumberToObject(j, "updates", (double)completed);
        cJSON_AddNumberToObject(j, "updates_received", (double)st.updates_received);
        cJSON_AddNumberToObject(j, "updates_rejected", (double)st.updates_rejected);
        cJSON_AddNumberToObject(j, "messages_refused", (double)st.refused);
        cJSON_AddNumberToObject(j, "dropped", (double)dropped);
        cJSON_AddNumberToObject(j, "late", (double)late);
        cJSON_AddNumberToObject(j, "bytes_up", (double)bytes_up);
        cJSON_AddNumberToObject(j, "bytes_down", (double)bytes_down);
        cJSON_AddNumberToObject(j, "bytes_in", (double)st.bytes_in);
        cJSON_AddNumberToObject(j, "bytes_out", (double)st.bytes_out);
        cJSON_AddNumberToObject(j, "models_broadcast", (double)st.models_broadcast);
        cJSON_AddNumberToObject(j, "model_version", (double)ef_server_version(s));
        if (workers_path) cJSON_AddNumberToObject(j, "partials_received", (double)st.partials_received);
        cJSON_AddNumberToObject(j, "wall_s", st.wall_s);
        cJSON_AddNumberToObject(j, "peak_rss_mb", ef_peak_rss_mb());
        if (isfinite(epsilon)) {
            cJSON_AddNumberToObject(j, "epsilon", epsilon);
            cJSON_AddNumberToObject(j, "delta", sc.server.dp_delta);
        }
        if (stop_reason[0]) cJSON_AddStringToObject(j, "stopped", stop_reason);
        cJSON_AddItemToObject(j, "config", cj);
        cj = NULL;
        if (cli_print_json("server", j) != 0) goto done;
    } else {
        printf("final_accuracy %.4f\n", final_acc);
    }
    status = 0;
done:
    if (ss.metrics) fclose(ss.metrics);
    ef_mqtt_close(m, status == 0); /* a finished job ends its session */
    ef_dashboard_stop(ss.dash);
    mqtt_args_free(&ma);
    cJSON_Delete(cj);
    ef_server_free(s);
    ef_model_free(init);
    ef_pool_free(pool);
    ef_identity_free(ident);
    ef_dataset_free(&test);
    cli_config_free(keep);
    return status;
}
