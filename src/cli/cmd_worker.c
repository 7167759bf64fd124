/*
 * `edgefl worker`: a scale-out aggregator worker of a real deployment. Several
 * workers share the server inbox of a job through an MQTT 5 shared
 * subscription, check and sum the clients' updates and send the server one
 * PARTIAL per batch instead (`edgefl server --workers`). Runs until SIGINT
 * or SIGTERM, then sends its open batch and prints a summary (one JSON
 * object with --json). See docs/deploy.md, "Shared subscriptions for
 * aggregator workers".
 */
#include <math.h>
#include <signal.h>
#include <string.h>

#include "cli.h"
#include "edgefl/identity.h"
#include "edgefl/transport.h"
#include "job.h"
#include "mqtt_args.h"

static const char *USAGE =
    "edgefl worker --broker mqtt[s]://HOST:PORT --config job.json --id W [--group NAME]\n"
    "                     [--key FILE] [--allow FILE] [--server-key FILE] [--max-batch N]\n"
    "                     [--flush S] [--json] [--tls-ca F --tls-cert F --tls-key F]";
static const char *DESC =
    "Runs a scale-out aggregator worker of a federated job over an MQTT 5 broker. The\n"
    "workers of a group (--group) share the server inbox edgefl/<job>/server through the\n"
    "shared subscription $share/<group>/edgefl/<job>/server; each also reads the client\n"
    "inboxes edgefl/<job>/client/+ to learn the tasks the server sends. A worker sums the\n"
    "updates that answer those tasks into one PARTIAL per batch (--max-batch updates, or\n"
    "--flush seconds after the batch's first update) and passes everything else on\n"
    "unchanged; it publishes both to edgefl/<job>/server/workers, which 'edgefl server\n"
    "--workers FILE' reads instead of its inbox (FILE lists each worker's --id and public\n"
    "key). The job file is the server's: the worker takes the job id and the model's size\n"
    "from it. --key signs the partials (edgefl keygen); --allow batches only updates\n"
    "signed by allow-listed clients (the others go on to the server, which refuses them);\n"
    "--server-key learns tasks only from messages the server signed. Start the workers\n"
    "before the server. Updates must fit in one MQTT packet (--max-packet above the update\n"
    "size): the broker may hand the chunks of one message to different workers. One\n"
    "progress line per partial; runs until SIGINT or SIGTERM, then sends its open batch.";

typedef struct wrk_state {
    cli_progress prog;
    uint32_t id;
} wrk_state;

static void on_partial(void *user, uint32_t round, uint32_t updates,
                       const ef_mqtt_worker_stats *st) {
    wrk_state *ws = user;
    cli_progress_show(&ws->prog, 1,
                      "worker %u: round %u partial of %u updates  batched %llu forwarded %llu "
                      "partials %llu refused %llu duplicates %llu",
                      ws->id, round, updates, (unsigned long long)st->worker.batched,
                      (unsigned long long)st->worker.forwarded,
                      (unsigned long long)st->worker.partials,
                      (unsigned long long)st->worker.refused,
                      (unsigned long long)st->worker.duplicates);
    cli_progress_done(&ws->prog);
}

static ef_status allow_one(void *user, uint32_t id, const uint8_t pk[EF_PK_BYTES]) {
    return ef_worker_allow(user, id, pk);
}

int cmd_worker(int argc, char **argv) {
    job_opts o;
    job_defaults(&o);
    mqtt_args ma;
    mqtt_args_defaults(&ma);
    const char *group = "edgefl", *key_path = NULL, *allow_path = NULL, *server_key_path = NULL;
    uint64_t id64 = UINT64_MAX;
    int max_batch = 32;
    double flush_s = 0.2;
    cli_opt mine[] = {
        {"id", CLI_U64, &id64, "W", "this worker's id, as in the server's --workers file (required)", 0, 0, NULL, 0},
        {"group", CLI_STR, &group, "NAME", "shared-subscription group: the workers of one group split the inbox (default edgefl)", 0, 0, NULL, 0},
        {"key", CLI_STR, &key_path, "FILE", "this worker's secret key (edgefl keygen): sign every partial", 0, 0, NULL, 0},
        {"allow", CLI_STR, &allow_path, "FILE", "the clients' allow-list (the server's --allow): batch only updates they signed", 0, 0, NULL, 0},
        {"server-key", CLI_STR, &server_key_path, "FILE", "the server's public key (FILE.pub or hex): learn tasks only from messages it signed", 0, 0, NULL, 0},
        {"max-batch", CLI_INT, &max_batch, "N", "updates per partial at most (default 32)", 1, 1000000, NULL, 0},
        {"flush", CLI_FLOAT, &flush_s, "S", "send a batch S seconds after its first update (default 0.2)", 0.001, 3600, NULL, 0},
        {0},
    };
    void *keep = NULL;
    int help;
    int rc = job_parse_mqtt("worker", argc, argv, &o, JOB_WORKER, &ma, mine, &help, USAGE, DESC,
                            &keep);
    if (rc || help) return rc;

    int status = CLI_EXIT_USAGE;
    ef_worker *w = NULL;
    ef_mqtt *m = NULL;
    ef_identity *ident = NULL;
    uint8_t server_pk[EF_PK_BYTES];
    ef_sim_config sc;
    ef_mqtt_config mc;
    wrk_state ws;
    cli_progress_init(&ws.prog, o.quiet);
    if (id64 == UINT64_MAX) {
        cli_error("worker", "--id W is required (the worker's id in the server's --workers file)");
        goto done;
    }
    if (id64 >= EF_BROADCAST_ID) {
        cli_error("worker", "--id must be below %u", EF_BROADCAST_ID);
        goto done;
    }
    ws.id = (uint32_t)id64;
    if (!group[0] || strlen(group) > 64 || strpbrk(group, "/+#")) {
        cli_error("worker", "--group '%s' must be 1 to 64 characters without '/', '+' or '#'",
                  group);
        goto done;
    }
    if (allow_path && !key_path) {
        cli_error("worker", "--allow needs --key: a worker that checks the clients' signatures "
                            "must sign its partials");
        goto done;
    }
    if ((rc = job_build("worker", &o, &sc)) != 0) goto done;
    if (sc.server.async || sc.server.secagg || sc.server.dp ||
        ef_strategy_keeps_updates(sc.strategy.kind)) {
        cli_error("worker", "aggregator workers need synchronous rounds, a mean-based strategy "
                            "(not %s), no secure aggregation and no differential privacy",
                  ef_strategy_name(sc.strategy.kind));
        goto done;
    }
    if ((rc = mqtt_args_config("worker", &ma, o.quiet, &mc)) != 0) goto done;
    if (key_path && ef_identity_load(&ident, key_path) != EF_OK) {
        cli_error("worker", "%s", ef_last_error());
        goto done;
    }
    if (server_key_path && ef_public_key_load(server_key_path, server_pk) != EF_OK) {
        cli_error("worker", "%s", ef_last_error());
        goto done;
    }
    status = CLI_EXIT_FAIL;
    size_t n_params = 0;
    if (job_model_numel("worker", &o, &sc, &n_params) != 0) goto done;
    ef_worker_config wc = {.job = sc.server.job, .id = ws.id, .n_params = n_params,
                           .max_batch = (uint32_t)max_batch, .flush_s = flush_s,
                           .sign_key = ident ? ef_identity_secret(ident) : NULL,
                           .server_pk = server_key_path ? server_pk : NULL,
                           .authenticate = allow_path != NULL,
                           /* never below a counter an earlier run of this worker used */
                           .first_seq = ef_mqtt_clock_seq()};
    if (ef_worker_new(&w, &wc) != EF_OK) {
        cli_error("worker", "%s", ef_last_error());
        goto done;
    }
    size_t n_allowed = 0;
    if (allow_path && ef_keylist_load(allow_path, allow_one, w, &n_allowed) != EF_OK) {
        cli_error("worker", "%s", ef_last_error());
        status = CLI_EXIT_USAGE;
        goto done;
    }
    char cid[64], name[32];
    snprintf(cid, sizeof cid, "edgefl-%llu-worker-%u", (unsigned long long)sc.server.job, ws.id);
    snprintf(name, sizeof name, "worker %u", ws.id);
    mc.client_id = cid;
    mc.name = name;
    if (ef_mqtt_new(&m, &mc) != EF_OK) {
        cli_error("worker", "%s", ef_last_error());
        status = CLI_EXIT_USAGE;
        goto done;
    }
    mqtt_args_free(&ma);
    if (!o.quiet)
        fprintf(stderr, "edgefl worker %u: job %llu, group %s, %s, %zu parameters, batches of "
                        "%d or %g s, broker %s%s%s\n",
                ws.id, (unsigned long long)sc.server.job, group, o.model, wc.n_params,
                max_batch, flush_s, ma.broker, ident ? ", signing" : "",
                allow_path ? ", checking client signatures" : "");
    if (allow_path && !o.quiet)
        fprintf(stderr, "edgefl worker %u: %zu clients on the allow-list\n", ws.id, n_allowed);
    volatile sig_atomic_t stop = 0;
    cli_catch_stop_signals(&stop);
    ef_mqtt_worker_opts wo = {.job = sc.server.job, .group = group, .stop = &stop,
                              .on_partial = on_partial, .user = &ws};
    ef_mqtt_worker_stats st = {0};
    if (ef_mqtt_run_worker(m, w, &wo, &st) != EF_OK) {
        cli_error("worker", "%s", ef_last_error());
        goto done;
    }
    if (!o.quiet)
        fprintf(stderr, "edgefl worker %u: %llu updates batched into %llu partials, %llu "
                        "messages passed on (%llu updates), %llu refused, %llu duplicates, "
                        "%.1f s\n",
                ws.id, (unsigned long long)st.worker.batched,
                (unsigned long long)st.worker.partials, (unsigned long long)st.worker.forwarded,
                (unsigned long long)st.updates_forwarded, (unsigned long long)st.worker.refused,
                (unsigned long long)st.worker.duplicates, st.wall_s);
    if (o.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "command", "worker");
        cJSON_AddNumberToObject(j, "id", ws.id);
        cJSON_AddStringToObject(j, "group", group);
        cJSON_AddNumberToObject(j, "batched", (double)st.worker.batched);
        cJSON_AddNumberToObject(j, "forwarded", (double)st.worker.forwarded);
        cJSON_AddNumberToObject(j, "partials", (double)st.worker.partials);
        cJSON_AddNumberToObject(j, "refused", (double)st.worker.refused);
        cJSON_AddNumberToObject(j, "duplicates", (double)st.worker.duplicates);
        cJSON_AddNumberToObject(j, "messages_in", (double)st.messages_in);
        cJSON_AddNumberToObject(j, "updates_in", (double)st.updates_in);
        cJSON_AddNumberToObject(j, "updates_forwarded", (double)st.updates_forwarded);
        cJSON_AddNumberToObject(j, "observed", (double)st.observed);
        cJSON_AddNumberToObject(j, "bytes_in", (double)st.bytes_in);
        cJSON_AddNumberToObject(j, "bytes_out", (double)st.bytes_out);
        cJSON_AddNumberToObject(j, "wall_s", st.wall_s);
        cJSON_AddNumberToObject(j, "peak_rss_mb", ef_peak_rss_mb());
        if (cli_print_json("worker", j) != 0) goto done;
    }
    status = 0;
done:
    /* A stopped worker ends its session: the broker would otherwise keep
     * handing it a share of the inbox until the session expires. After a
     * failure the session stays, and a worker restarted with the same id
     * gets what was queued for it (passed on unbatched: it has seen no task). */
    ef_mqtt_close(m, status == 0);
    mqtt_args_free(&ma);
    ef_worker_free(w);
    ef_identity_free(ident);
    cli_config_free(keep);
    return status;
}
