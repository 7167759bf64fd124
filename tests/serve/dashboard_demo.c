/*
 * A dashboard driven from stdin, for the browser test
 * (test_dashboard_chromium.sh) and for looking at the page by hand.
 *
 *   dashboard_demo [--listen HOST:PORT] [--rounds N] [--initial K]
 *                  [--replay metrics.jsonl] [--job NAME]
 *
 * Starts a dashboard (default 127.0.0.1:0), runs rounds 1..K (default 3: the
 * page then shows "Round 3 / 10"), prints "port P" on stdout, then obeys one
 * command per stdin line:
 *   next          run the next round (its record, and the status shows it)
 *   phase TEXT    set the phase
 *   stop          stop the dashboard (the page must then show "disconnected")
 *   quit or EOF   stop and exit
 * and answers each with "ok ..." on stdout. Rounds come from --replay (the
 * JSON lines of `edgefl simulate --metrics`) or, without it, from simple
 * formulas (the job name then says "synthetic").
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgefl/serve.h"

#define MAX_REPLAY 100000

static ef_round_record *g_replay;
static size_t g_n_replay;

static double jnum(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static unsigned long long jcount(const cJSON *o, const char *key) {
    double v = jnum(o, key);
    return isfinite(v) && v >= 0 ? (unsigned long long)v : 0;
}

/* Reads the JSON lines of a metrics file into g_replay. */
static int load_replay(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return -1;
    }
    g_replay = calloc(MAX_REPLAY, sizeof *g_replay);
    if (!g_replay) {
        fclose(f);
        return -1;
    }
    char line[8192];
    while (g_n_replay < MAX_REPLAY && fgets(line, sizeof line, f)) {
        cJSON *o = cJSON_Parse(line);
        if (!o) continue;
        ef_round_record r = ef_round_record_empty((uint32_t)jcount(o, "round"));
        r.sim_start = jnum(o, "sim_start");
        r.sim_end = jnum(o, "sim_end");
        r.wall_s = jnum(o, "wall_s");
        if (isnan(r.wall_s) && isfinite(r.sim_end) && isfinite(r.sim_start))
            r.wall_s = r.sim_end - r.sim_start; /* files without wall time: show the simulated time */
        r.selected = (uint32_t)jcount(o, "selected");
        r.completed = (uint32_t)jcount(o, "completed");
        r.dropped = (uint32_t)jcount(o, "dropped");
        r.late = (uint32_t)jcount(o, "late");
        r.rejected = (uint32_t)jcount(o, "rejected");
        r.aggregated = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "aggregated"));
        r.train_loss = jnum(o, "train_loss");
        r.test_accuracy = jnum(o, "test_accuracy");
        r.test_loss = jnum(o, "test_loss");
        r.fed_accuracy = jnum(o, "fed_accuracy");
        r.fed_loss = jnum(o, "fed_loss");
        r.bytes_up = jcount(o, "bytes_up");
        r.bytes_down = jcount(o, "bytes_down");
        r.epsilon = jnum(o, "epsilon");
        r.dp_clip = jnum(o, "dp_clip");
        r.update_norm_median = jnum(o, "update_norm_median");
        const cJSON *note = cJSON_GetObjectItemCaseSensitive(o, "note");
        if (cJSON_IsString(note)) snprintf(r.note, sizeof r.note, "%s", note->valuestring);
        cJSON_Delete(o);
        if (r.round > 0) g_replay[g_n_replay++] = r;
    }
    fclose(f);
    if (g_n_replay == 0) {
        fprintf(stderr, "%s: no round records\n", path);
        return -1;
    }
    return 0;
}

/* Round r of the synthetic run: a saturating accuracy curve, falling loss. */
static ef_round_record synthetic(uint32_t r) {
    ef_round_record rec = ef_round_record_empty(r);
    rec.selected = 13;
    rec.completed = 10 + r % 3;
    rec.late = rec.selected - rec.completed > 1 ? 1 : 0;
    rec.dropped = rec.selected - rec.completed - rec.late;
    rec.rejected = r % 4 == 0 ? 1 : 0;
    rec.aggregated = 1;
    rec.train_loss = 0.35 + 1.9 * exp(-(double)r / 2.5);
    rec.test_loss = 0.40 + 1.8 * exp(-(double)r / 2.8);
    rec.test_accuracy = 0.88 - 0.75 * exp(-(double)r / 2.2);
    rec.bytes_up = 10ull * 6653480ull + 1000ull * r;
    rec.bytes_down = 13ull * 6653480ull;
    rec.epsilon = 0.31 * sqrt((double)r);
    rec.wall_s = 2.0 + 0.25 * (double)(r % 5);
    return rec;
}

typedef struct run {
    ef_dashboard *d;
    ef_dashboard_status st;
    char job[256];
    uint32_t done; /* rounds finished */
    uint32_t clients;
} run;

static ef_round_record record_of(uint32_t r) {
    if (g_replay) return g_replay[(r - 1) % g_n_replay];
    return synthetic(r);
}

/* Finishes round done+1: adds its record and moves the status on. */
static int finish_round(run *R) {
    ef_round_record rec = record_of(R->done + 1);
    rec.round = R->done + 1;
    if (ef_dashboard_add_round(R->d, &rec) != EF_OK) return -1;
    R->done++;
    R->st.updates_received += rec.completed + rec.late;
    R->st.updates_rejected += rec.rejected;
    R->st.bytes_up += rec.bytes_up;
    R->st.bytes_down += rec.bytes_down;
    R->st.epsilon = rec.epsilon;
    R->st.delta = isfinite(rec.epsilon) ? 1e-5 : NAN;
    /* the status shows the round just run (a real server shows the one in progress) */
    R->st.round = R->done;
    R->st.participants = rec.selected;
    if (R->st.rounds && R->done >= R->st.rounds) R->st.phase = "done";
    R->st.clients_online = R->clients - (R->done * 7) % (R->clients / 10 + 1);
    return ef_dashboard_set_status(R->d, &R->st) == EF_OK ? 0 : -1;
}

int main(int argc, char **argv) {
    const char *listen = "127.0.0.1:0", *replay = NULL, *job = NULL;
    unsigned rounds = 10, initial = 3;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--listen") == 0) listen = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--rounds") == 0) rounds = (unsigned)atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--initial") == 0) initial = (unsigned)atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--replay") == 0) replay = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--job") == 0) job = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--listen HOST:PORT] [--rounds N] [--initial K] "
                            "[--replay metrics.jsonl] [--job NAME]\n", argv[0]);
            return 2;
        }
    }
    if (replay && load_replay(replay) != 0) return 1;
    run R;
    memset(&R, 0, sizeof R);
    R.clients = 100;
    snprintf(R.job, sizeof R.job, "%s",
             job ? job : replay ? replay : "demo (synthetic rounds): FedAvg, cnn, 100 clients");
    if (ef_dashboard_start(&R.d, listen) != EF_OK) {
        fprintf(stderr, "dashboard_demo: %s\n", ef_last_error());
        return 1;
    }
    R.st = ef_dashboard_status_empty();
    R.st.job = R.job;
    R.st.phase = "training";
    R.st.rounds = rounds;
    R.st.clients_known = R.clients;
    R.st.clients_online = R.clients;
    R.st.round = 0;
    if (ef_dashboard_set_status(R.d, &R.st) != EF_OK) return 1;
    for (unsigned r = 0; r < initial; r++)
        if (finish_round(&R) != 0) {
            fprintf(stderr, "dashboard_demo: %s\n", ef_last_error());
            return 1;
        }
    printf("port %u\n", (unsigned)ef_dashboard_port(R.d));
    fflush(stdout);

    char line[512], phase[512];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strcmp(line, "next") == 0 && R.d) {
            if (finish_round(&R) != 0) {
                fprintf(stderr, "dashboard_demo: %s\n", ef_last_error());
                break;
            }
            printf("ok round %u\n", (unsigned)R.st.round);
        } else if (strncmp(line, "phase ", 6) == 0 && R.d) {
            snprintf(phase, sizeof phase, "%s", line + 6);
            R.st.phase = phase;
            if (ef_dashboard_set_status(R.d, &R.st) != EF_OK) break;
            printf("ok phase\n");
        } else if (strcmp(line, "stop") == 0) {
            ef_dashboard_stop(R.d);
            R.d = NULL;
            printf("ok stopped\n");
        } else if (strcmp(line, "quit") == 0) {
            break;
        } else {
            printf("error: unknown command '%s'\n", line);
        }
        fflush(stdout);
    }
    ef_dashboard_stop(R.d);
    free(g_replay);
    return 0;
}
