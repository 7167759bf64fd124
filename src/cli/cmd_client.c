/*
 * `edgefl client`: one federated client of a real deployment. It holds slice
 * I of N of the training set, partitioned exactly as `edgefl simulate`
 * partitions it (same --partition, --clients, --seed, --min-per-client,
 * --holdout and --limit give the same slices), trains the job's model with
 * the built-in trainer when the server sends a task, and answers over an
 * MQTT broker until SIGINT or SIGTERM, when it says goodbye (LEAVE). Its
 * LEAVE is also the connection's last will. See docs/deploy.md.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "cli.h"
#include "edgefl/identity.h"
#include "edgefl/transport.h"
#include "job.h"
#include "mqtt_args.h"

static const char *USAGE =
    "edgefl client --broker mqtt[s]://HOST:PORT --client-index I/N [--id ID]\n"
    "                     [--config job.json] [--dataset fashion-mnist] [--partition SPEC]\n"
    "                     [--model mlp] [--seed S] [--key FILE --server-key FILE]\n"
    "                     [--tls-ca F --tls-cert F --tls-key F] [--delay S] [--audit-dir DIR]";
static const char *DESC =
    "Runs one client of a federated job over an MQTT 5 broker. It trains on slice I of\n"
    "the job's N-way partition of the training set (computed as 'edgefl simulate' does:\n"
    "give it the same job file or the same --partition, --clients, --seed), receives the\n"
    "model on edgefl/<job>/broadcast and tasks on edgefl/<job>/client/<id>, and answers on\n"
    "edgefl/<job>/server. Its id defaults to I (the simulator's client ids are 0..N-1).\n"
    "Of the job's options the client uses those that shape its data and model (dataset,\n"
    "limit, model, clients, partition, min-per-client, holdout, batch, seed, job).\n"
    "With --key every message is signed with the client's Ed25519 key (edgefl keygen) and\n"
    "with --server-key only messages signed by the server are accepted. Runs until SIGINT\n"
    "or SIGTERM, then sends LEAVE. Progress: one line per task. --delay and --audit-dir\n"
    "are for tests and demonstrations (a straggler; the secure-aggregation inputs).";

/* The built-in trainer knows clients by partition slice: the client's id
 * may differ from its slice index. */
typedef struct slice_trainer {
    ef_trainer inner;
    uint32_t index;
} slice_trainer;

static ef_status slice_fit(void *user, int worker, uint32_t client, const float *global, size_t n,
                           const ef_task *task, float *delta, ef_fit_result *res) {
    (void)client;
    slice_trainer *t = user;
    return t->inner.fit(t->inner.user, worker, t->index, global, n, task, delta, res);
}

static ef_status slice_eval(void *user, int worker, uint32_t client, const float *global,
                            size_t n, ef_eval_counts *res) {
    (void)client;
    slice_trainer *t = user;
    return t->inner.evaluate(t->inner.user, worker, t->index, global, n, res);
}

/* "I/N" or "I" (N from --clients); 0 or an exit code. */
static int parse_index(const char *text, int clients, int clients_given, uint32_t *index,
                       uint32_t *n) {
    char *end = NULL;
    errno = 0;
    unsigned long i = strtoul(text, &end, 10);
    unsigned long total = (unsigned long)clients;
    if (end == text || errno || *text == '-') goto bad;
    if (*end == '/') {
        const char *p = end + 1;
        total = strtoul(p, &end, 10);
        if (end == p || errno || *p == '-' || *end) goto bad;
        if (clients_given && total != (unsigned long)clients) {
            cli_error("client", "--client-index %s: the job has %d clients", text, clients);
            return CLI_EXIT_USAGE;
        }
    } else if (*end) {
        goto bad;
    }
    if (total == 0 || total > 10000000 || i >= total) goto bad;
    *index = (uint32_t)i;
    *n = (uint32_t)total;
    return 0;
bad:
    cli_error("client", "--client-index '%s' must be I/N with 0 <= I < N (or I, with N from "
                        "--clients)", text);
    return CLI_EXIT_USAGE;
}

int cmd_client(int argc, char **argv) {
    job_opts o;
    job_defaults(&o);
    o.clients = 0; /* 0 after parsing: N comes from --client-index alone */
    mqtt_args ma;
    mqtt_args_defaults(&ma);
    const char *index_text = NULL, *key_path = NULL, *server_key_path = NULL, *audit_dir = NULL;
    double delay = 0;
    uint64_t id64 = UINT64_MAX, max_tasks = 0;
    cli_opt mine[] = {
        {"client-index", CLI_STR, &index_text, "I/N", "this client's slice of the N-way partition (required)", 0, 0, NULL, 0},
        {"id", CLI_U64, &id64, "ID", "client id on the wire and in topics (default: I)", 0, 0, NULL, 0},
        {"max-tasks", CLI_U64, &max_tasks, "N", "leave after answering N tasks (default: run until stopped)", 0, 0, NULL, 0},
        {"key", CLI_STR, &key_path, "FILE", "this client's secret key (edgefl keygen): sign every message", 0, 0, NULL, 0},
        {"server-key", CLI_STR, &server_key_path, "FILE", "the server's public key (FILE.pub or hex): accept only messages it signed", 0, 0, NULL, 0},
        {"delay", CLI_FLOAT, &delay, "S", "hold every update S seconds before sending it: a slow device, for tests and demos of stragglers (default 0)", 0, 86400, NULL, 0},
        {"audit-dir", CLI_STR, &audit_dir, "DIR", "testing/audit aid: write this client's secure-aggregation input (its quantized update) each round into DIR", 0, 0, NULL, 0},
        {0},
    };
    void *keep = NULL;
    int help;
    int rc = job_parse_mqtt("client", argc, argv, &o, JOB_CLIENT, &ma, mine, &help, USAGE, DESC,
                            &keep);
    if (rc || help) return rc;

    int status = CLI_EXIT_USAGE;
    ef_dataset train = {0};
    ef_partition part = {0}, part_train = {0}, part_eval = {0};
    ef_nn_trainer *nt = NULL;
    ef_model *probe = NULL;
    ef_mqtt *m = NULL;
    ef_buf *will = NULL;
    ef_identity *ident = NULL;
    uint8_t server_pk[EF_PK_BYTES];
    ef_sim_config sc;
    ef_mqtt_config mc;
    cli_audit audit = {0};
    uint32_t index = 0, n_clients = 0;
    if (!index_text) {
        cli_error("client", "--client-index I/N is required");
        goto done;
    }
    int clients_given = o.clients != 0;
    if ((rc = parse_index(index_text, clients_given ? o.clients : 100, clients_given, &index,
                          &n_clients)) != 0)
        goto done;
    o.clients = (int)n_clients;
    uint32_t id = id64 == UINT64_MAX ? index : (uint32_t)id64;
    if (id64 != UINT64_MAX && id64 >= EF_BROADCAST_ID) {
        cli_error("client", "--id must be below %u", EF_BROADCAST_ID);
        goto done;
    }
    if ((rc = job_build("client", &o, &sc)) != 0) goto done;
    if ((rc = mqtt_args_config("client", &ma, o.quiet, &mc)) != 0) goto done;
    if (audit_dir && (rc = cli_audit_init("client", &audit, audit_dir)) != 0) goto done;
    if (key_path && ef_identity_load(&ident, key_path) != EF_OK) {
        cli_error("client", "%s", ef_last_error());
        goto done;
    }
    if (server_key_path && ef_public_key_load(server_key_path, server_pk) != EF_OK) {
        cli_error("client", "%s", ef_last_error());
        goto done;
    }
    status = CLI_EXIT_FAIL;
    if (ef_dataset_load_n(&train, o.dataset, o.data_dir, 1, (uint32_t)o.limit) != EF_OK) {
        cli_error("client", "%s", ef_last_error());
        goto done;
    }
    /* the partition exactly as the simulator computes it (src/sim/sim.c) */
    if (ef_partition_make(&part, &sc.partition, train.labels, train.n, train.n_classes,
                          sc.n_clients, sc.min_per_client ? sc.min_per_client : 1, sc.seed) !=
            EF_OK ||
        ef_partition_holdout(&part, sc.holdout, sc.seed + 1, &part_train, &part_eval) != EF_OK) {
        cli_error("client", "%s", ef_last_error());
        goto done;
    }
    ef_model_config mcfg = job_model_config(&sc, &train);
    if (ef_nn_trainer_new(&nt, &mcfg, &train, &part_train, sc.holdout > 0 ? &part_eval : NULL,
                          1) != EF_OK ||
        ef_model_new(&probe, &mcfg, NULL) != EF_OK) {
        cli_error("client", "%s", ef_last_error());
        goto done;
    }
    slice_trainer st = {.inner = ef_nn_trainer_callbacks(nt), .index = index};
    ef_trainer tr = {slice_fit, slice_eval, &st};
    ef_client_config cc = {.job = sc.server.job, .id = id,
                           .n_train = (uint32_t)ef_partition_size(&part_train, index),
                           .n_eval = (uint32_t)ef_partition_size(&part_eval, index),
                           .n_params = ef_model_numel(probe),
                           .sign_key = ident ? ef_identity_secret(ident) : NULL,
                           .server_pk = server_key_path ? server_pk : NULL,
                           /* never below a counter an earlier run of this client used */
                           .first_seq = ef_mqtt_clock_seq(),
                           .sa_audit = audit_dir ? cli_audit_client : NULL,
                           .sa_audit_user = &audit};
    ef_model_free(probe);
    probe = NULL;
    if (ef_mqtt_client_will(&cc, &will) != EF_OK) {
        cli_error("client", "%s", ef_last_error());
        goto done;
    }
    char cid[64], name[32], server_topic[64];
    snprintf(cid, sizeof cid, "edgefl-%llu-client-%u", (unsigned long long)sc.server.job, id);
    snprintf(name, sizeof name, "client %u", id);
    mc.client_id = cid;
    mc.name = name;
    /* the last will: this client's LEAVE, published by the broker if the
     * client vanishes and does not come back within the session expiry */
    mc.will_topic = ef_mqtt_topic(server_topic, sizeof server_topic, sc.server.job, EF_SERVER_ID);
    mc.will = will->data;
    mc.will_len = will->len;
    if (ef_mqtt_new(&m, &mc) != EF_OK) {
        cli_error("client", "%s", ef_last_error());
        status = CLI_EXIT_USAGE;
        goto done;
    }
    mqtt_args_free(&ma);
    if (!o.quiet)
        fprintf(stderr, "edgefl client %u: job %llu, slice %u of %u (%u training, %u held-out "
                        "examples), %s, %zu parameters, broker %s%s\n",
                id, (unsigned long long)sc.server.job, index, n_clients, cc.n_train, cc.n_eval,
                o.model, cc.n_params, ma.broker, ident ? ", signing" : "");
    volatile sig_atomic_t stop = 0;
    cli_catch_stop_signals(&stop);
    ef_mqtt_client_opts co = {.stop = &stop, .max_tasks = max_tasks, .answer_delay_s = delay};
    ef_mqtt_client_stats cs = {0};
    double t0 = ef_now();
    if (ef_mqtt_run_client(m, &cc, &tr, &co, &cs) != EF_OK) {
        cli_error("client", "%s", ef_last_error());
        goto done;
    }
    if (audit.failures) {
        cli_error("client", "%u audit files could not be written into %s", audit.failures,
                  audit_dir);
        goto done;
    }
    if (!o.quiet)
        fprintf(stderr, "edgefl client %u: %llu tasks, %llu evaluations, %.1f s training, "
                        "%.1f s in all\n",
                id, (unsigned long long)cs.tasks, (unsigned long long)cs.evals, cs.train_s,
                ef_now() - t0);
    if (o.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "command", "client");
        cJSON_AddNumberToObject(j, "id", id);
        cJSON_AddNumberToObject(j, "index", index);
        cJSON_AddNumberToObject(j, "n_train", cc.n_train);
        cJSON_AddNumberToObject(j, "tasks", (double)cs.tasks);
        cJSON_AddNumberToObject(j, "evaluations", (double)cs.evals);
        cJSON_AddNumberToObject(j, "checkins", (double)cs.checkins);
        cJSON_AddNumberToObject(j, "refused", (double)cs.refused);
        cJSON_AddNumberToObject(j, "superseded", (double)cs.superseded);
        cJSON_AddNumberToObject(j, "bytes_out", (double)cs.bytes_out);
        cJSON_AddNumberToObject(j, "train_s", cs.train_s);
        cJSON_AddNumberToObject(j, "wall_s", ef_now() - t0);
        cJSON_AddNumberToObject(j, "peak_rss_mb", ef_peak_rss_mb());
        if (cli_print_json("client", j) != 0) goto done;
    }
    status = 0;
done:
    /* leaving for good: the broker may forget the session (the LEAVE went out) */
    ef_mqtt_close(m, status == 0);
    mqtt_args_free(&ma);
    ef_buf_unref(will);
    ef_identity_free(ident);
    ef_model_free(probe);
    ef_nn_trainer_free(nt);
    ef_partition_free(&part);
    ef_partition_free(&part_train);
    ef_partition_free(&part_eval);
    ef_dataset_free(&train);
    cli_config_free(keep);
    return status;
}
