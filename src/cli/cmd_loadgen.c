/*
 * `edgefl loadgen`: N light federated clients in one process against a real
 * broker and server, for load tests (bench/mqtt_load). Every client has its
 * own MQTT connection, session, inbox and will; none trains: the synthetic
 * trainer (synth.h) answers a task in about a millisecond with a small
 * random delta. `--make-keys DIR` writes N client keys and the server's
 * allow-list instead. See loadgen.h for the engine and docs/deploy.md,
 * "Load testing".
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "edgefl/identity.h"
#include "job.h"
#include "loadgen.h"
#include "mqtt_args.h"
#include "synth.h"

static const char *USAGE =
    "edgefl loadgen --broker mqtt[s]://HOST:PORT --clients N [--first-id K] [--config job.json]\n"
    "                      [--model M] [--full-fanout] [--compute-ms MS] [--upload-window W]\n"
    "                      [--examples N|LO:HI] [--keys DIR --server-key FILE] [--max-tasks T]\n"
    "                      [--json]\n"
    "       edgefl loadgen --make-keys DIR --clients N [--first-id K] [--force]";
static const char *DESC =
    "Runs N light clients of a federated job in one process, each with its own MQTT\n"
    "connection (client id edgefl-<job>-client-<id>, persistent session, inbox, last will):\n"
    "the broker and 'edgefl server' see N real clients. They do not train: a task is\n"
    "answered with a delta of Gaussian noise (--noise) drawn from the task's seed and the\n"
    "client id, after --compute-ms of emulated device time. Ids are K..K+N-1 (--first-id,\n"
    "--clients). The job file is the server's: the model (its size), seed and job id come\n"
    "from it. The model is held once per process: one extra connection reads the broadcast\n"
    "for all clients, unless --full-fanout makes every client subscribe itself (the broker\n"
    "then sends it N times). At most --upload-window clients have updates the broker has\n"
    "not acknowledged. --keys DIR signs each client's messages with DIR/client-<id>.key;\n"
    "--make-keys DIR writes those keys and DIR/allow.txt for 'edgefl server --allow', then\n"
    "exits. Progress on stderr; SIGINT or SIGTERM (or --max-tasks answers per client) end\n"
    "the run: every client sends LEAVE. Secure aggregation is not supported.";

/* A field of /proc/self/status in kB (VmRSS, Threads), or -1. */
static long proc_status(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0 && line[n] == ':') {
            v = strtol(line + n + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* "N" or "LO:HI" with 1 <= LO <= HI. */
static int parse_examples(const char *text, uint32_t *lo, uint32_t *hi) {
    char *end = NULL;
    errno = 0;
    unsigned long a = strtoul(text, &end, 10), b;
    if (end == text || errno || *text == '-') return -1;
    if (*end == ':') {
        const char *p = end + 1;
        b = strtoul(p, &end, 10);
        if (end == p || errno || *p == '-' || *end) return -1;
    } else if (*end) {
        return -1;
    } else {
        b = a;
    }
    if (a < 1 || b < a || b > 1000000000ul) return -1;
    *lo = (uint32_t)a;
    *hi = (uint32_t)b;
    return 0;
}

static int make_dir(const char *dir) {
    if (mkdir(dir, 0700) == 0 || errno == EEXIST) {
        struct stat sb;
        if (stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode)) return 0;
    }
    cli_error("loadgen", "cannot create the directory %s: %s", dir, strerror(errno));
    return CLI_EXIT_USAGE;
}

/* --make-keys: DIR/client-<id>.key (+ .pub) for every id and DIR/allow.txt. */
static int make_keys(const char *dir, uint32_t first, uint32_t n, int force, int json) {
    int rc = make_dir(dir);
    if (rc) return rc;
    size_t plen = strlen(dir) + 64;
    char *path = malloc(plen);
    size_t cap = (size_t)n * 80 + 1, len = 0;
    char *allow = malloc(cap);
    if (!path || !allow) {
        free(path);
        free(allow);
        cli_error("loadgen", "out of memory");
        return CLI_EXIT_FAIL;
    }
    snprintf(path, plen, "%s/allow.txt", dir);
    if (!force && access(path, F_OK) == 0) {
        cli_error("loadgen", "%s exists; not overwriting keys (use --force)", path);
        rc = CLI_EXIT_USAGE;
        goto done;
    }
    for (uint32_t i = 0; i < n && !rc; i++) {
        snprintf(path, plen, "%s/client-%u.key", dir, first + i);
        if (!force && access(path, F_OK) == 0) {
            cli_error("loadgen", "%s exists; not overwriting keys (use --force)", path);
            rc = CLI_EXIT_USAGE;
            break;
        }
        ef_identity *id = NULL;
        if (ef_identity_generate(&id) != EF_OK || ef_identity_save(id, path) != EF_OK) {
            cli_error("loadgen", "%s", ef_last_error());
            ef_identity_free(id);
            rc = CLI_EXIT_FAIL;
            break;
        }
        char hex[2 * EF_PK_BYTES + 1];
        ef_identity_public_hex(id, hex);
        ef_identity_free(id);
        len += (size_t)snprintf(allow + len, cap - len, "%u %s\n", first + i, hex);
    }
    if (!rc) {
        snprintf(path, plen, "%s/allow.txt", dir);
        if (ef_write_file_atomic(path, allow, len) != EF_OK) {
            cli_error("loadgen", "%s", ef_last_error());
            rc = CLI_EXIT_FAIL;
        } else if (json) {
            printf("{\"command\":\"loadgen\",\"keys\":%u,\"first_id\":%u,\"allow\":\"%s\"}\n", n,
                   first, path);
        } else {
            fprintf(stderr, "edgefl loadgen: %u keys (clients %u..%u) in %s, allow-list %s\n", n,
                    first, first + n - 1, dir, path);
        }
    }
done:
    free(path);
    free(allow);
    return rc;
}

/* Prints the rounds [*printed + 1, upto] that have not been shown yet. */
static void print_rounds(lg *g, uint32_t upto, uint32_t *printed, int quiet) {
    if (quiet || upto <= *printed) return;
    size_t n = lg_rounds(g, NULL, 0);
    lg_round *r = malloc((n ? n : 1) * sizeof *r);
    if (!r) return;
    n = lg_rounds(g, r, n);
    for (size_t i = 0; i < n; i++) {
        if (r[i].round <= *printed || r[i].round > upto) continue;
        if (r[i].updates)
            fprintf(stderr, "edgefl loadgen: round %u: %u tasks, %u updates, %u evaluations; "
                            "tasks arrived over %.2f s, updates sent %.2f..%.2f s after the "
                            "first task; task to update p50 %.2f s, max %.2f s\n",
                    r[i].round, r[i].tasks, r[i].updates, r[i].evals,
                    r[i].last_task - r[i].first_task, r[i].first_update - r[i].first_task,
                    r[i].last_update - r[i].first_task, r[i].lat_p50, r[i].lat_max);
        else
            fprintf(stderr, "edgefl loadgen: round %u: %u tasks, %u updates, %u evaluations\n",
                    r[i].round, r[i].tasks, r[i].updates, r[i].evals);
    }
    *printed = upto;
    free(r);
}

int cmd_loadgen(int argc, char **argv) {
    job_opts o;
    job_defaults(&o);
    mqtt_args ma;
    mqtt_args_defaults(&ma);
    uint64_t first64 = 0, max_tasks = 0;
    int full_fanout = 0, window = 32, eval_examples = 20, force = 0;
    double compute_ms = 0, noise = 1e-3;
    const char *examples_text = "100", *keys_dir = NULL, *make_keys_dir = NULL,
               *server_key_path = NULL;
    cli_opt mine[] = {
        {"first-id", CLI_U64, &first64, "K", "id of the first client (default 0): ids K..K+N-1", 0, 0, NULL, 0},
        {"full-fanout", CLI_FLAG, &full_fanout, NULL, "every client subscribes to the broadcast model itself (default: one shared subscription per process)", 0, 0, NULL, 0},
        {"compute-ms", CLI_FLOAT, &compute_ms, "MS", "emulated device time per task, in milliseconds (default 0)", 0, 1e9, NULL, 0},
        {"noise", CLI_FLOAT, &noise, "S", "standard deviation of the synthetic update (default 0.001)", 1e-9, 1e3, NULL, 0},
        {"examples", CLI_STR, &examples_text, "N|LO:HI", "training examples a client reports: N, or drawn per client from LO..HI (default 100)", 0, 0, NULL, 0},
        {"eval-examples", CLI_INT, &eval_examples, "N", "held-out examples a client reports (default 20)", 0, 1000000000, NULL, 0},
        {"upload-window", CLI_INT, &window, "W", "clients with updates not yet acknowledged by the broker, at most (default 32; 0: no limit)", 0, 10000000, NULL, 0},
        {"max-tasks", CLI_U64, &max_tasks, "T", "a client leaves after answering T tasks; the run ends when all have (default: run until stopped)", 0, 0, NULL, 0},
        {"keys", CLI_STR, &keys_dir, "DIR", "sign every client's messages with DIR/client-<id>.key", 0, 0, NULL, 0},
        {"server-key", CLI_STR, &server_key_path, "FILE", "the server's public key: accept only messages it signed", 0, 0, NULL, 0},
        {"make-keys", CLI_STR, &make_keys_dir, "DIR", "write keys for the N clients and DIR/allow.txt, then exit", 0, 0, NULL, 0},
        {"force", CLI_FLAG, &force, NULL, "--make-keys: overwrite existing keys", 0, 0, NULL, 0},
        {0},
    };
    void *keep = NULL;
    int help;
    int rc = job_parse_mqtt("loadgen", argc, argv, &o, JOB_LOADGEN, &ma, mine, &help, USAGE, DESC,
                            &keep);
    if (rc || help) return rc;

    int status = CLI_EXIT_USAGE;
    synth *sy = NULL;
    lg *g = NULL;
    uint32_t *n_train = NULL;
    ef_identity **ids = NULL;
    const uint8_t **keys = NULL;
    uint8_t server_pk[EF_PK_BYTES];
    uint32_t n = (uint32_t)o.clients, lo = 0, hi = 0;
    if (first64 + n > EF_BROADCAST_ID) {
        cli_error("loadgen", "--first-id %llu + --clients %u reaches the reserved ids (ids must "
                             "stay below %u)", (unsigned long long)first64, n, EF_BROADCAST_ID);
        goto done;
    }
    uint32_t first = (uint32_t)first64;
    if (make_keys_dir) {
        status = make_keys(make_keys_dir, first, n, force, o.json);
        goto done;
    }
    if (parse_examples(examples_text, &lo, &hi) != 0) {
        cli_error("loadgen", "--examples '%s' must be N or LO:HI with 1 <= LO <= HI",
                  examples_text);
        goto done;
    }
    ef_sim_config sc;
    ef_mqtt_config mc;
    if ((rc = job_build("loadgen", &o, &sc)) != 0) goto done;
    if ((rc = mqtt_args_config("loadgen", &ma, o.quiet, &mc)) != 0) goto done;
    /* a thousand connections log a thousand "connected" lines at info */
    ef_log_set(NULL, NULL, ma.verbose ? EF_LOG_DEBUG : EF_LOG_WARN);
    if (server_key_path && ef_public_key_load(server_key_path, server_pk) != EF_OK) {
        cli_error("loadgen", "%s", ef_last_error());
        goto done;
    }
    if (keys_dir) {
        ids = calloc(n, sizeof *ids);
        keys = calloc(n, sizeof *keys);
        if (!ids || !keys) {
            cli_error("loadgen", "out of memory");
            status = CLI_EXIT_FAIL;
            goto done;
        }
        size_t plen = strlen(keys_dir) + 64;
        char *path = malloc(plen);
        for (uint32_t i = 0; path && i < n; i++) {
            snprintf(path, plen, "%s/client-%u.key", keys_dir, first + i);
            if (ef_identity_load(&ids[i], path) != EF_OK) {
                cli_error("loadgen", "%s (make keys with --make-keys %s)", ef_last_error(),
                          keys_dir);
                free(path);
                goto done;
            }
            keys[i] = ef_identity_secret(ids[i]);
        }
        if (!path) {
            cli_error("loadgen", "out of memory");
            status = CLI_EXIT_FAIL;
            goto done;
        }
        free(path);
    }
    status = CLI_EXIT_FAIL;
    size_t n_params;
    if (job_model_numel("loadgen", &o, &sc, &n_params) != 0) goto done;
    if (synth_new(&sy, noise, lo, hi, (uint32_t)eval_examples, sc.seed) != EF_OK ||
        !(n_train = malloc(n * sizeof *n_train))) {
        cli_error("loadgen", "out of memory");
        goto done;
    }
    for (uint32_t i = 0; i < n; i++) n_train[i] = synth_examples(sy, first + i);
    long threads = o.threads ? o.threads : sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1) threads = 1;
    if (threads > (long)n) threads = (long)n;
    lg_config lc = {.mqtt = mc, .job = sc.server.job, .first_id = first, .n_clients = n,
                    .n_params = n_params, .full_fanout = full_fanout,
                    .threads = (int)threads, .compute_s = compute_ms / 1000,
                    .upload_window = (uint32_t)window, .max_tasks = max_tasks,
                    .trainer = synth_trainer(sy), .n_train = n_train,
                    .n_eval = (uint32_t)eval_examples, .keys = keys,
                    .server_pk = server_key_path ? server_pk : NULL};
    double rss_base = (double)proc_status("VmRSS") / 1024;
    if (lg_new(&g, &lc) != EF_OK) {
        cli_error("loadgen", "%s", ef_last_error());
        status = CLI_EXIT_USAGE;
        goto done;
    }
    mqtt_args_free(&ma);
    if (!o.quiet)
        fprintf(stderr, "edgefl loadgen: %u clients (ids %u..%u), job %llu, %s (%zu parameters, "
                        "%.1f MB updates), %s, %ld workers, upload window %d, compute %.0f ms, "
                        "broker %s%s\n",
                n, first, first + n - 1, (unsigned long long)sc.server.job, o.model, n_params,
                (double)n_params * 4 / 1e6,
                full_fanout ? "full fan-out" : "one shared broadcast subscription", threads,
                window, compute_ms, ma.broker, keys ? ", signing" : "");
    volatile sig_atomic_t stop = 0;
    cli_catch_stop_signals(&stop);
    cli_progress prog;
    cli_progress_init(&prog, o.quiet);
    if (!prog.tty) prog.interval = 5.0;
    double t0 = ef_now();
    if (lg_start(g) != EF_OK) {
        cli_error("loadgen", "cannot start the worker threads");
        goto done;
    }
    double rss_connected = -1, connect_s = -1;
    long threads_max = 0;
    uint32_t printed = 0;
    lg_stats s;
    char why[256];
    int failed = 0;
    while (!stop && !lg_finished(g)) {
        if (lg_failed(g, why, sizeof why) != EF_OK) {
            failed = 1;
            break;
        }
        lg_get_stats(g, &s);
        if (rss_connected < 0 && s.ever_connected == n) {
            /* before any model: the cost of the connections themselves */
            rss_connected = (double)proc_status("VmRSS") / 1024;
            connect_s = s.all_connected_s;
            if (!o.quiet)
                fprintf(stderr, "edgefl loadgen: all %u clients connected in %.2f s; RSS %.1f MB "
                                "(%.1f kB per connection), %ld threads\n",
                        n, connect_s, rss_connected, (rss_connected - rss_base) * 1024 / n,
                        proc_status("Threads"));
        }
        long th = proc_status("Threads");
        if (th > threads_max) threads_max = th;
        if (s.round > 1) print_rounds(g, s.round - 1, &printed, o.quiet);
        cli_progress_show(&prog, 0,
                          "loadgen: %u/%u connected, %llu check-ins, round %u, tasks %llu, "
                          "updates %llu, refused %llu, superseded %llu, uploads in flight %u, "
                          "RSS %.0f MB%s%s",
                          s.connected, n, (unsigned long long)s.checkins, s.round,
                          (unsigned long long)s.tasks, (unsigned long long)s.updates,
                          (unsigned long long)s.refused, (unsigned long long)s.superseded,
                          s.window_used, (double)proc_status("VmRSS") / 1024,
                          s.server[0] ? "" : ", waiting for a server",
                          s.done ? ", some left" : "");
        /* poll often while connecting (the RSS sample), then twice a second */
        struct timespec ts = {0, rss_connected < 0 ? 20000000L : 500000000L};
        nanosleep(&ts, NULL);
    }
    cli_progress_done(&prog);
    lg_stop(g, 30);
    lg_get_stats(g, &s);
    print_rounds(g, s.round, &printed, o.quiet);
    double wall = ef_now() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu_user = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
    double cpu_sys = (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    if (failed) {
        cli_error("loadgen", "%s", why);
        goto done;
    }
    if (!o.quiet)
        fprintf(stderr, "edgefl loadgen: %llu tasks, %llu updates, %llu evaluations, %llu "
                        "refused, %llu superseded, %llu check-ins, %llu LEAVEs; %.1f s, CPU %.1f s "
                        "user + %.1f s system, peak RSS %.1f MB\n",
                (unsigned long long)s.tasks, (unsigned long long)s.updates,
                (unsigned long long)s.evals, (unsigned long long)s.refused,
                (unsigned long long)s.superseded, (unsigned long long)s.checkins,
                (unsigned long long)s.leaves, wall, cpu_user, cpu_sys, ef_peak_rss_mb());
    if (o.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "command", "loadgen");
        cJSON_AddNumberToObject(j, "clients", n);
        cJSON_AddNumberToObject(j, "first_id", first);
        cJSON_AddNumberToObject(j, "job", (double)sc.server.job);
        cJSON_AddStringToObject(j, "mode", full_fanout ? "full-fanout" : "shared");
        cJSON_AddStringToObject(j, "model", o.model);
        cJSON_AddNumberToObject(j, "n_params", (double)n_params);
        cJSON_AddNumberToObject(j, "workers", (double)threads);
        cJSON_AddNumberToObject(j, "upload_window", window);
        cJSON_AddNumberToObject(j, "compute_ms", compute_ms);
        cJSON_AddNumberToObject(j, "signed", keys != NULL);
        cJSON_AddNumberToObject(j, "ever_connected", s.ever_connected);
        cJSON_AddNumberToObject(j, "connect_s", connect_s);
        cJSON_AddNumberToObject(j, "checkins", (double)s.checkins);
        cJSON_AddNumberToObject(j, "tasks", (double)s.tasks);
        cJSON_AddNumberToObject(j, "updates", (double)s.updates);
        cJSON_AddNumberToObject(j, "evaluations", (double)s.evals);
        cJSON_AddNumberToObject(j, "refused", (double)s.refused);
        cJSON_AddNumberToObject(j, "superseded", (double)s.superseded);
        cJSON_AddNumberToObject(j, "renewals", (double)s.renewals);
        cJSON_AddNumberToObject(j, "leaves", (double)s.leaves);
        cJSON_AddNumberToObject(j, "done", s.done);
        cJSON_AddNumberToObject(j, "bytes_out", (double)s.bytes_out);
        cJSON_AddNumberToObject(j, "models", (double)s.models);
        cJSON_AddNumberToObject(j, "model_duplicates", (double)s.model_dups);
        cJSON *mq = cJSON_AddObjectToObject(j, "mqtt");
        cJSON_AddNumberToObject(mq, "connects", (double)s.mqtt_connects);
        cJSON_AddNumberToObject(mq, "messages_in", (double)s.mqtt_messages_in);
        cJSON_AddNumberToObject(mq, "bytes_in", (double)s.mqtt_bytes_in);
        cJSON_AddNumberToObject(mq, "chunks_out", (double)s.mqtt_chunks_out);
        cJSON_AddNumberToObject(mq, "publish_refused", (double)s.mqtt_publish_refused);
        cJSON_AddNumberToObject(mq, "chunks_rejected", (double)s.mqtt_chunks_rejected);
        cJSON_AddNumberToObject(mq, "partial_dropped", (double)s.mqtt_partial_dropped);
        cJSON_AddNumberToObject(j, "rss_base_mb", rss_base);
        cJSON_AddNumberToObject(j, "rss_connected_mb", rss_connected);
        cJSON_AddNumberToObject(j, "rss_per_connection_kb",
                                rss_connected < 0 ? -1 : (rss_connected - rss_base) * 1024 / n);
        cJSON_AddNumberToObject(j, "peak_rss_mb", ef_peak_rss_mb());
        cJSON_AddNumberToObject(j, "threads_max", (double)threads_max);
        cJSON_AddNumberToObject(j, "cpu_user_s", cpu_user);
        cJSON_AddNumberToObject(j, "cpu_sys_s", cpu_sys);
        cJSON_AddNumberToObject(j, "wall_s", wall);
        cJSON *ra = cJSON_AddArrayToObject(j, "rounds");
        size_t nr = lg_rounds(g, NULL, 0);
        lg_round *r = malloc((nr ? nr : 1) * sizeof *r);
        if (r) nr = lg_rounds(g, r, nr);
        for (size_t i = 0; r && i < nr; i++) {
            cJSON *x = cJSON_CreateObject();
            cJSON_AddNumberToObject(x, "round", r[i].round);
            cJSON_AddNumberToObject(x, "tasks", r[i].tasks);
            cJSON_AddNumberToObject(x, "updates", r[i].updates);
            cJSON_AddNumberToObject(x, "evaluations", r[i].evals);
            if (r[i].tasks) {
                cJSON_AddNumberToObject(x, "first_task_s", r[i].first_task);
                cJSON_AddNumberToObject(x, "last_task_s", r[i].last_task);
            }
            if (r[i].updates + r[i].evals) {
                cJSON_AddNumberToObject(x, "first_update_s", r[i].first_update);
                cJSON_AddNumberToObject(x, "last_update_s", r[i].last_update);
                cJSON_AddNumberToObject(x, "latency_p50_s", r[i].lat_p50);
                cJSON_AddNumberToObject(x, "latency_max_s", r[i].lat_max);
            }
            cJSON_AddItemToArray(ra, x);
        }
        free(r);
        if (cli_print_json("loadgen", j) != 0) goto done;
    }
    status = 0;
done:
    lg_free(g);
    mqtt_args_free(&ma);
    for (uint32_t i = 0; ids && i < n; i++) ef_identity_free(ids[i]);
    free(ids);
    free(keys);
    free(n_train);
    synth_free(sy);
    cli_config_free(keep);
    return status;
}
