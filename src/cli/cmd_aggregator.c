/*
 * `edgefl aggregator`: an edge gateway of hierarchical federated learning
 * (ef_gateway over MQTT, ef_mqtt_run_gateway). It is the server of the
 * `edgefl client`s on a local broker and one client, with its own id and
 * key, of the upstream server: each upstream task becomes one local round
 * whose example-weighted mean goes upstream as a single update. The
 * upstream side is a second connection (--upstream) or the local broker
 * itself under a prefix that the broker's bridge maps upstream
 * (--upstream-prefix). Runs until SIGINT or SIGTERM, then says goodbye
 * upstream (its LEAVE is also its last will). See docs/deploy.md.
 */
#include <math.h>
#include <signal.h>
#include <string.h>

#include "cli.h"
#include "edgefl/gateway.h"
#include "edgefl/identity.h"
#include "edgefl/transport.h"
#include "job.h"
#include "mqtt_args.h"

static const char *USAGE =
    "edgefl aggregator --broker mqtt[s]://LOCAL --id G --config job.json\n"
    "                     (--upstream mqtt[s]://REMOTE | --upstream-prefix up/)\n"
    "                     [--key FILE] [--allow FILE] [--server-key FILE]\n"
    "                     [--min-local N] [--max-local N] [--deadline-fraction F] [--json]";
static const char *DESC =
    "Runs an edge gateway: the server of the 'edgefl client's on a local MQTT broker and\n"
    "one client (id G) of the upstream server. Every upstream task becomes a local round\n"
    "over the local clients; their example-weighted mean goes upstream as one update, so\n"
    "with FedAvg the job trains the model a flat run over the same clients trains.\n"
    "Upstream is either a second connection (--upstream URL, with --upstream-tls-* and\n"
    "--upstream-username if it needs them) or the local broker itself: with\n"
    "--upstream-prefix P alone the gateway's upstream topics are P + the job's topics,\n"
    "which the local broker's bridge maps to the upstream broker (docs/deploy.md,\n"
    "'Bridged brokers'). The job's options give the job id and the model (its size);\n"
    "local clients use the same job file. --key signs everything the gateway sends (the\n"
    "upstream server allow-lists its public key under id G; local clients take it as\n"
    "--server-key); --allow accepts only allow-listed local clients; --server-key accepts\n"
    "only upstream messages the server signed. One progress line per upstream task.\n"
    "Runs until SIGINT or SIGTERM, then sends LEAVE upstream.";

typedef struct agg_state {
    int quiet;
} agg_state;

static void on_task(void *user, const ef_mqtt_gateway_report *rep,
                    const ef_mqtt_gateway_stats *st) {
    (void)st;
    agg_state *as = user;
    if (as->quiet) return;
    char what[96];
    if (rep->outcome == EF_MQTT_GATEWAY_SENT)
        snprintf(what, sizeof what, "partial sent (%u examples)", rep->n_examples);
    else if (rep->outcome == EF_MQTT_GATEWAY_SKIPPED)
        snprintf(what, sizeof what, "nothing sent (no local update)");
    else
        snprintf(what, sizeof what, "abandoned (a newer upstream task came)");
    fprintf(stderr, "task round %u: local asked %u answered %u rej %u late %u left %u  %s  "
                    "%.1fs\n",
            rep->round, rep->asked, rep->answered, rep->rejected, rep->late, rep->dropped, what,
            rep->seconds);
}

static ef_status allow_local(void *user, uint32_t id, const uint8_t pk[EF_PK_BYTES]) {
    return ef_gateway_allow(user, id, pk);
}

/* The upstream connection's options, from the --upstream-* flags and the
 * local tuning (keepalive, packet size, session expiry). */
static int upstream_config(const mqtt_args *local, mqtt_args *ua, int quiet, ef_mqtt_config *c) {
    ua->keepalive = local->keepalive;
    ua->max_packet_kib = local->max_packet_kib;
    ua->session_expiry = local->session_expiry;
    ua->verbose = local->verbose;
    return mqtt_args_config("aggregator", ua, quiet, c);
}

int cmd_aggregator(int argc, char **argv) {
    job_opts o;
    job_defaults(&o);
    mqtt_args ma, ua;
    mqtt_args_defaults(&ma);
    mqtt_args_defaults(&ua);
    const char *prefix = NULL, *key_path = NULL, *allow_path = NULL, *server_key_path = NULL;
    uint64_t id64 = UINT64_MAX;
    int min_local = 1, max_local = 0;
    double fraction = 0.8, recheckin = 0.5;
    cli_opt mine[] = {
        {"upstream", CLI_STR, &ua.broker, "URL", "upstream broker (a second connection): mqtt://HOST:PORT or mqtts://HOST:PORT", 0, 0, NULL, 0},
        {"upstream-prefix", CLI_STR, &prefix, "P", "prefix of the upstream topics; alone: upstream through the local broker's bridge (e.g. up/)", 0, 0, NULL, 0},
        {"upstream-tls-ca", CLI_STR, &ua.tls_ca, "FILE", "upstream mqtts: CA certificate (PEM) (default: the system's CAs)", 0, 0, NULL, 0},
        {"upstream-tls-cert", CLI_STR, &ua.tls_cert, "FILE", "upstream mqtts: client certificate (PEM), with --upstream-tls-key", 0, 0, NULL, 0},
        {"upstream-tls-key", CLI_STR, &ua.tls_key, "FILE", "upstream mqtts: client private key (PEM)", 0, 0, NULL, 0},
        {"upstream-username", CLI_STR, &ua.username, "NAME", "upstream broker user name", 0, 0, NULL, 0},
        {"upstream-password-file", CLI_STR, &ua.password_file, "FILE", "file holding the upstream broker password (first line)", 0, 0, NULL, 0},
        {"id", CLI_U64, &id64, "G", "the gateway's client id upstream (required)", 0, 0, NULL, 0},
        {"key", CLI_STR, &key_path, "FILE", "the gateway's secret key (edgefl keygen): sign every message, upstream and local", 0, 0, NULL, 0},
        {"allow", CLI_STR, &allow_path, "FILE", "allow-list of local client ids and public keys: refuse every other local client", 0, 0, NULL, 0},
        {"server-key", CLI_STR, &server_key_path, "FILE", "the upstream server's public key: accept only messages it signed", 0, 0, NULL, 0},
        {"min-local", CLI_INT, &min_local, "N", "local clients online before the first upstream check-in (default 1)", 1, 10000000, NULL, 0},
        {"max-local", CLI_INT, &max_local, "N", "local clients per upstream task, drawn at random (default 0: all)", 0, 10000000, NULL, 0},
        {"deadline-fraction", CLI_FLOAT, &fraction, "F", "local deadline = F x the upstream task's deadline, in (0, 1] (default 0.8)", 1e-6, 1, NULL, 0},
        {"recheckin-change", CLI_FLOAT, &recheckin, "F", "check in again upstream when the local example sums change by more than F (default 0.5)", 0, 1e9, NULL, 0},
        {0},
    };
    void *keep = NULL;
    int help;
    int rc = job_parse_mqtt("aggregator", argc, argv, &o, JOB_GATEWAY, &ma, mine, &help, USAGE,
                            DESC, &keep);
    if (rc || help) return rc;

    int status = CLI_EXIT_USAGE;
    ef_gateway *g = NULL;
    ef_mqtt *lm = NULL, *um = NULL;
    ef_buf *will = NULL;
    ef_identity *ident = NULL;
    uint8_t server_pk[EF_PK_BYTES];
    ef_sim_config sc;
    ef_mqtt_config lc, uc;
    int two = ua.broker != NULL;
    if (id64 == UINT64_MAX) {
        cli_error("aggregator", "--id G is required (the gateway's client id upstream)");
        goto done;
    }
    if (id64 >= EF_BROADCAST_ID) {
        cli_error("aggregator", "--id must be below %u", EF_BROADCAST_ID);
        goto done;
    }
    if (!two && !prefix) {
        cli_error("aggregator", "the upstream side is missing: --upstream URL (a second "
                                "connection) or --upstream-prefix P (through the local "
                                "broker's bridge)");
        goto done;
    }
    if (!two && (ua.tls_ca || ua.tls_cert || ua.tls_key || ua.username || ua.password_file)) {
        cli_error("aggregator", "--upstream-tls-* and --upstream-username/--upstream-password-"
                                "file need --upstream (without it the local connection's "
                                "options apply)");
        goto done;
    }
    if (prefix && (strpbrk(prefix, "+#") || strlen(prefix) > 100)) {
        cli_error("aggregator", "--upstream-prefix '%s' must not hold MQTT wildcards (+ #) and "
                                "must be at most 100 characters", prefix);
        goto done;
    }
    if (two && ma.broker && strcmp(ua.broker, ma.broker) == 0 && !prefix) {
        cli_error("aggregator", "--upstream is the local broker: give --upstream-prefix too, or "
                                "the local and upstream server inboxes would be one topic");
        goto done;
    }
    if ((rc = job_build("aggregator", &o, &sc)) != 0) goto done;
    if ((rc = mqtt_args_config("aggregator", &ma, o.quiet, &lc)) != 0) goto done;
    if (two && (rc = upstream_config(&ma, &ua, o.quiet, &uc)) != 0) goto done;
    if (key_path && ef_identity_load(&ident, key_path) != EF_OK) {
        cli_error("aggregator", "%s", ef_last_error());
        goto done;
    }
    if (server_key_path && ef_public_key_load(server_key_path, server_pk) != EF_OK) {
        cli_error("aggregator", "%s", ef_last_error());
        goto done;
    }
    status = CLI_EXIT_FAIL;
    size_t n_params;
    if (job_model_numel("aggregator", &o, &sc, &n_params) != 0) goto done;
    uint32_t id = (uint32_t)id64;
    ef_gateway_config gc = ef_gateway_defaults();
    gc.job = sc.server.job;
    gc.id = id;
    gc.n_params = n_params;
    gc.min_local = (uint32_t)min_local;
    gc.max_local = (uint32_t)max_local;
    gc.deadline_fraction = fraction;
    gc.recheckin_change = recheckin;
    gc.seed = sc.seed;
    gc.sign_key = ident ? ef_identity_secret(ident) : NULL;
    gc.server_pk = server_key_path ? server_pk : NULL;
    gc.authenticate = allow_path != NULL;
    /* never below a counter an earlier run of this gateway used */
    gc.first_seq = ef_mqtt_clock_seq();
    if (ef_gateway_new(&g, &gc) != EF_OK) {
        cli_error("aggregator", "%s", ef_last_error());
        status = CLI_EXIT_USAGE;
        goto done;
    }
    size_t n_allowed = 0;
    if (allow_path && ef_keylist_load(allow_path, allow_local, g, &n_allowed) != EF_OK) {
        cli_error("aggregator", "%s", ef_last_error());
        status = CLI_EXIT_USAGE;
        goto done;
    }
    if (ef_mqtt_gateway_will(&gc, &will) != EF_OK) {
        cli_error("aggregator", "%s", ef_last_error());
        goto done;
    }
    /* the last will goes upstream: the gateway's LEAVE, published by the
     * broker if the gateway vanishes and does not come back in time */
    char lid[64], uid[72], will_topic[192], t[64];
    snprintf(lid, sizeof lid, "edgefl-%llu-gateway-%u", (unsigned long long)gc.job, id);
    snprintf(uid, sizeof uid, "%s-up", lid);
    snprintf(will_topic, sizeof will_topic, "%s%s", prefix ? prefix : "",
             ef_mqtt_topic(t, sizeof t, gc.job, EF_SERVER_ID));
    lc.client_id = lid;
    lc.name = "gateway (local)";
    if (two) {
        uc.client_id = uid;
        uc.name = "gateway (upstream)";
        uc.will_topic = will_topic;
        uc.will = will->data;
        uc.will_len = will->len;
    } else {
        lc.name = "gateway";
        lc.will_topic = will_topic;
        lc.will = will->data;
        lc.will_len = will->len;
    }
    if (ef_mqtt_new(&lm, &lc) != EF_OK || (two && ef_mqtt_new(&um, &uc) != EF_OK)) {
        cli_error("aggregator", "%s", ef_last_error());
        status = CLI_EXIT_USAGE;
        goto done;
    }
    mqtt_args_free(&ma);
    mqtt_args_free(&ua);
    if (!o.quiet) {
        fprintf(stderr, "edgefl aggregator %u: job %llu, %s, %zu parameters, local broker %s, "
                        "upstream %s%s%s%s\n",
                id, (unsigned long long)gc.job, o.model, gc.n_params, ma.broker,
                two ? ua.broker : "through the local broker's bridge",
                prefix ? " under prefix " : "", prefix ? prefix : "",
                ident ? ", signing" : "");
        if (allow_path)
            fprintf(stderr, "edgefl aggregator %u: %zu local clients on the allow-list\n", id,
                    n_allowed);
    }
    volatile sig_atomic_t stop = 0;
    cli_catch_stop_signals(&stop);
    agg_state as = {.quiet = o.quiet};
    ef_mqtt_gateway_opts go = {.stop = &stop, .on_task = on_task, .user = &as};
    ef_mqtt_gateway_stats st = {0};
    if (ef_mqtt_run_gateway(lm, two ? um : lm, prefix, g, &gc, &go, &st) != EF_OK) {
        cli_error("aggregator", "%s", ef_last_error());
        goto done;
    }
    ef_gateway_stats gs;
    ef_gateway_get_stats(g, &gs);
    if (!o.quiet)
        fprintf(stderr, "edgefl aggregator %u: %llu upstream tasks, %llu partials sent, %llu "
                        "skipped; %llu local tasks, %llu local updates (%llu rejected); %.1f s\n",
                id, (unsigned long long)gs.tasks, (unsigned long long)st.partials,
                (unsigned long long)gs.partials_skipped, (unsigned long long)gs.local_tasks,
                (unsigned long long)gs.updates_received, (unsigned long long)gs.updates_rejected,
                st.wall_s);
    if (o.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "command", "aggregator");
        cJSON_AddNumberToObject(j, "id", id);
        cJSON_AddNumberToObject(j, "job", (double)gc.job);
        cJSON_AddStringToObject(j, "upstream", two ? "connection" : "bridge");
        cJSON_AddNumberToObject(j, "local_known", (double)ef_gateway_known(g));
        cJSON_AddNumberToObject(j, "local_online", (double)ef_gateway_online(g));
        cJSON_AddNumberToObject(j, "tasks", (double)gs.tasks);
        cJSON_AddNumberToObject(j, "local_tasks", (double)gs.local_tasks);
        cJSON_AddNumberToObject(j, "updates_received", (double)gs.updates_received);
        cJSON_AddNumberToObject(j, "updates_rejected", (double)gs.updates_rejected);
        cJSON_AddNumberToObject(j, "local_late", (double)gs.local_late);
        cJSON_AddNumberToObject(j, "local_dropped", (double)gs.local_dropped);
        cJSON_AddNumberToObject(j, "partials_sent", (double)st.partials);
        cJSON_AddNumberToObject(j, "partials_skipped", (double)gs.partials_skipped);
        cJSON_AddNumberToObject(j, "abandoned", (double)gs.abandoned);
        cJSON_AddNumberToObject(j, "evaluations", (double)gs.evals);
        cJSON_AddNumberToObject(j, "eval_results_sent", (double)st.eval_results);
        cJSON_AddNumberToObject(j, "checkins_sent", (double)st.checkins);
        cJSON_AddNumberToObject(j, "refused_local", (double)st.refused_local);
        cJSON_AddNumberToObject(j, "refused_upstream", (double)st.refused_upstream);
        cJSON_AddNumberToObject(j, "superseded", (double)st.superseded);
        cJSON_AddNumberToObject(j, "renewals", (double)st.renewals);
        cJSON_AddNumberToObject(j, "models_broadcast", (double)st.models_broadcast);
        cJSON_AddNumberToObject(j, "bytes_up", (double)st.bytes_up);
        cJSON_AddNumberToObject(j, "bytes_local", (double)st.bytes_local);
        cJSON_AddNumberToObject(j, "wall_s", st.wall_s);
        cJSON_AddNumberToObject(j, "peak_rss_mb", ef_peak_rss_mb());
        if (cli_print_json("aggregator", j) != 0) goto done;
    }
    status = 0;
done:
    /* leaving for good: the brokers may forget the sessions (the LEAVE went out) */
    ef_mqtt_close(um, status == 0);
    ef_mqtt_close(lm, status == 0);
    mqtt_args_free(&ma);
    mqtt_args_free(&ua);
    ef_buf_unref(will);
    ef_gateway_free(g);
    ef_identity_free(ident);
    cli_config_free(keep);
    return status;
}
