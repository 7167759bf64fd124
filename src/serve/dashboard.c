/*
 * The live dashboard: a small HTTP server (libmicrohttpd, one internal polling
 * thread) over a copy of the run's status and round records.
 *
 * The owner's thread writes with ef_dashboard_set_status/add_round; the HTTP
 * thread reads. Both hold `mu` only to copy or format, never across I/O.
 * /api/state streams its records a chunk at a time (taking the lock per
 * chunk), so a request for 100,000 rounds costs a few kilobytes of memory
 * instead of a 40 MB response buffer; /metrics and the status part of
 * /api/state are formatted whole under the lock, which makes them consistent
 * snapshots. Numbers are always written in the "C" locale.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <sodium.h>

#include "core/core_internal.h"
#include "core/strbuf.h"
#include "edgefl/serve.h"
#include "serve/serve_internal.h"

struct ef_dashboard {
    struct MHD_Daemon *mhd;
    uint16_t port;
    locale_t c_locale;       /* "C" numbers for the HTTP thread */
    char *page;              /* the HTML page, assembled once */
    size_t page_len;
    char csp[512];           /* Content-Security-Policy of the page */
    char instance[40];       /* changes when a new dashboard starts: pages reset */
    double started;          /* ef_now() at start */

    pthread_mutex_t mu;      /* guards everything below */
    ef_dashboard_status st;  /* job and phase point at the owned copies below */
    char *job, *phase;
    double st_set_at;        /* ef_now() of the last set_status */
    ef_round_record *rec;    /* ring of records, oldest at rec[head] */
    uint32_t cap, head, n;
    uint64_t dropped;        /* records discarded at the cap */
    uint64_t seq;            /* bumped by every change */
};

/* ---- text and numbers ---------------------------------------------------- */

/* Appends s[0..n) as the inside of a JSON string: quotes, backslashes and
 * control bytes escaped, invalid UTF-8 replaced by U+FFFD. */
static void sb_json_text(ef__sb *b, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            ef__sb_put(b, e, 2);
            i++;
        } else if (c < 0x20) {
            if (c == '\n') ef__sb_puts(b, "\\n");
            else if (c == '\t') ef__sb_puts(b, "\\t");
            else if (c == '\r') ef__sb_puts(b, "\\r");
            else ef__sb_printf(b, "\\u%04x", c);
            i++;
        } else {
            size_t len = ef__utf8_seq(p + i, n - i);
            if (len == 0) {
                ef__sb_puts(b, "\\ufffd");
                i++;
            } else {
                ef__sb_put(b, s + i, len);
                i += len;
            }
        }
    }
}

static void sb_json_str(ef__sb *b, const char *s, size_t n) {
    ef__sb_put(b, "\"", 1);
    sb_json_text(b, s, n);
    ef__sb_put(b, "\"", 1);
}

/* A Prometheus label value: backslash, double quote and newline escaped,
 * invalid UTF-8 replaced by U+FFFD (label values must be UTF-8). */
static void sb_label_value(ef__sb *b, const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c == '\\') ef__sb_puts(b, "\\\\"), i++;
        else if (c == '"') ef__sb_puts(b, "\\\""), i++;
        else if (c == '\n') ef__sb_puts(b, "\\n"), i++;
        else {
            size_t len = ef__utf8_seq(p + i, n - i);
            if (len == 0) {
                ef__sb_puts(b, "\xEF\xBF\xBD");
                i++;
            } else {
                ef__sb_put(b, s + i, len);
                i += len;
            }
        }
    }
}

/* A JSON number, or null when not finite (JSON has no NaN). */
static void sb_json_num(ef__sb *b, double v) {
    if (!isfinite(v)) {
        ef__sb_puts(b, "null");
        return;
    }
    char num[40];
    ef__fmt_exact(num, sizeof num, v);
    ef__sb_puts(b, num);
}

/* A Prometheus sample value: Go's ParseFloat spellings of the non-finite. */
static void sb_prom_num(ef__sb *b, double v) {
    if (isnan(v)) ef__sb_puts(b, "NaN");
    else if (isinf(v)) ef__sb_puts(b, v > 0 ? "+Inf" : "-Inf");
    else {
        char num[40];
        ef__fmt_exact(num, sizeof num, v);
        ef__sb_puts(b, num);
    }
}

/* ---- state ----------------------------------------------------------------- */

ef_dashboard_status ef_dashboard_status_empty(void) {
    ef_dashboard_status s;
    memset(&s, 0, sizeof s);
    s.epsilon = s.delta = s.uptime_s = NAN;
    return s;
}

/* The i-th oldest record kept (i < n). Caller holds mu. */
static const ef_round_record *rec_at(const ef_dashboard *d, uint32_t i) {
    return &d->rec[(d->head + i) % d->cap];
}

/* Index of the oldest record whose round is >= `round` (n if none): records
 * are kept in increasing round order. Caller holds mu. */
static uint32_t rec_lower_bound(const ef_dashboard *d, uint32_t round) {
    uint32_t lo = 0, hi = d->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (rec_at(d, mid)->round < round) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static double uptime_locked(const ef_dashboard *d) {
    double now = ef_now();
    if (isnan(d->st.uptime_s)) return now - d->started;
    return d->st.uptime_s + (now - d->st_set_at);
}

ef_status ef_dashboard_set_status(ef_dashboard *d, const ef_dashboard_status *st) {
    if (!d || !st) return ef__fail(EF_ERR_INVALID, "ef_dashboard_set_status: NULL argument");
    const char *job = st->job ? st->job : "";
    const char *phase = st->phase ? st->phase : "";
    const char *too_long = strnlen(job, EF_DASHBOARD_MAX_TEXT + 1) > EF_DASHBOARD_MAX_TEXT ? "job"
                           : strnlen(phase, EF_DASHBOARD_MAX_TEXT + 1) > EF_DASHBOARD_MAX_TEXT ? "phase"
                                                                                             : NULL;
    if (too_long)
        return ef__fail(EF_ERR_RANGE, "dashboard status: the %s is longer than %u bytes", too_long,
                        EF_DASHBOARD_MAX_TEXT);
    char *job_copy = ef_strdup(job);
    char *phase_copy = ef_strdup(phase);
    if (!job_copy || !phase_copy) {
        ef_free(job_copy);
        ef_free(phase_copy);
        return ef__fail(EF_ERR_NOMEM, "dashboard status: out of memory");
    }
    double now = ef_now();
    pthread_mutex_lock(&d->mu);
    char *old_job = d->job, *old_phase = d->phase;
    d->st = *st;
    d->job = job_copy;
    d->phase = phase_copy;
    d->st.job = d->job;
    d->st.phase = d->phase;
    d->st_set_at = now;
    d->seq++;
    pthread_mutex_unlock(&d->mu);
    ef_free(old_job);
    ef_free(old_phase);
    return EF_OK;
}

ef_status ef_dashboard_add_round(ef_dashboard *d, const ef_round_record *rec) {
    if (!d || !rec) return ef__fail(EF_ERR_INVALID, "ef_dashboard_add_round: NULL argument");
    if (rec->round == 0) return ef__fail(EF_ERR_INVALID, "dashboard: round records start at round 1");
    ef_status rc = EF_OK;
    pthread_mutex_lock(&d->mu);
    if (d->n > 0) {
        ef_round_record *last = &d->rec[(d->head + d->n - 1) % d->cap];
        if (rec->round < last->round) {
            rc = ef__fail(EF_ERR_INVALID,
                          "dashboard: round %u is older than the newest record (round %u)",
                          (unsigned)rec->round, (unsigned)last->round);
            goto done;
        }
        if (rec->round == last->round) {
            *last = *rec;
            last->note[sizeof last->note - 1] = '\0';
            d->seq++;
            goto done;
        }
    }
    if (d->n == d->cap && d->cap < EF_DASHBOARD_MAX_RECORDS) {
        /* grow, unrolling the ring so the oldest record lands at index 0 */
        uint32_t cap = d->cap ? d->cap * 2 : 64;
        if (cap > EF_DASHBOARD_MAX_RECORDS) cap = EF_DASHBOARD_MAX_RECORDS;
        ef_round_record *r = ef_calloc(cap, sizeof *r);
        if (!r) {
            rc = ef__fail(EF_ERR_NOMEM, "dashboard: out of memory for %u round records",
                          (unsigned)cap);
            goto done;
        }
        for (uint32_t i = 0; i < d->n; i++) r[i] = *rec_at(d, i);
        ef_free(d->rec);
        d->rec = r;
        d->cap = cap;
        d->head = 0;
    }
    if (d->n == d->cap) { /* at the cap: the newest record replaces the oldest */
        d->rec[d->head] = *rec;
        d->rec[d->head].note[sizeof rec->note - 1] = '\0';
        d->head = (d->head + 1) % d->cap;
        d->dropped++;
    } else {
        ef_round_record *slot = &d->rec[(d->head + d->n) % d->cap];
        *slot = *rec;
        slot->note[sizeof slot->note - 1] = '\0';
        d->n++;
    }
    d->seq++;
done:
    pthread_mutex_unlock(&d->mu);
    return rc;
}

/* ---- JSON ------------------------------------------------------------------ */

static void j_u64(ef__sb *b, const char *key, uint64_t v, bool comma) {
    ef__sb_printf(b, "%s\"%s\":%llu", comma ? "," : "", key, (unsigned long long)v);
}

/* Records omit what was not measured, like the JSON lines of metrics.h. */
static void j_f64_opt(ef__sb *b, const char *key, double v) {
    if (!isfinite(v)) return;
    ef__sb_printf(b, ",\"%s\":", key);
    sb_json_num(b, v);
}

/* One record, with the field names and order of ef_round_record_write_json
 * (wall_s included). */
static void json_record(ef__sb *b, const ef_round_record *r) {
    ef__sb_put(b, "{", 1);
    j_u64(b, "round", r->round, false);
    j_f64_opt(b, "sim_start", r->sim_start);
    j_f64_opt(b, "sim_end", r->sim_end);
    j_f64_opt(b, "wall_s", r->wall_s);
    j_u64(b, "selected", r->selected, true);
    j_u64(b, "completed", r->completed, true);
    j_u64(b, "dropped", r->dropped, true);
    j_u64(b, "late", r->late, true);
    j_u64(b, "rejected", r->rejected, true);
    ef__sb_printf(b, ",\"aggregated\":%s", r->aggregated ? "true" : "false");
    j_f64_opt(b, "train_loss", r->train_loss);
    j_f64_opt(b, "test_accuracy", r->test_accuracy);
    j_f64_opt(b, "test_loss", r->test_loss);
    j_f64_opt(b, "fed_accuracy", r->fed_accuracy);
    j_f64_opt(b, "fed_loss", r->fed_loss);
    j_u64(b, "bytes_up", r->bytes_up, true);
    j_u64(b, "bytes_down", r->bytes_down, true);
    j_f64_opt(b, "staleness_mean", r->staleness_mean);
    j_u64(b, "staleness_max", r->staleness_max, true);
    j_f64_opt(b, "epsilon", r->epsilon);
    j_f64_opt(b, "dp_clip", r->dp_clip);
    j_f64_opt(b, "update_norm_median", r->update_norm_median);
    if (r->note[0]) {
        ef__sb_puts(b, ",\"note\":");
        sb_json_str(b, r->note, strnlen(r->note, sizeof r->note));
    }
    ef__sb_put(b, "}", 1);
}

/* Everything of /api/state before the first record: formatted whole under
 * the lock, so the status is one consistent snapshot. Returns the newest
 * round kept (records after it are left out of this response). */
static uint32_t json_head_locked(const ef_dashboard *d, ef__sb *b, uint32_t since) {
    const ef_dashboard_status *s = &d->st;
    ef__sb_puts(b, "{\"edgefl\":");
    sb_json_str(b, ef_version(), strlen(ef_version()));
    ef__sb_puts(b, ",\"instance\":");
    sb_json_str(b, d->instance, strlen(d->instance));
    j_u64(b, "seq", d->seq, true);
    ef__sb_puts(b, ",\"status\":{\"job\":");
    sb_json_str(b, s->job, strlen(s->job));
    ef__sb_puts(b, ",\"phase\":");
    sb_json_str(b, s->phase, strlen(s->phase));
    j_u64(b, "round", s->round, true);
    j_u64(b, "rounds", s->rounds, true);
    j_u64(b, "clients_online", s->clients_online, true);
    j_u64(b, "clients_known", s->clients_known, true);
    j_u64(b, "participants", s->participants, true);
    j_u64(b, "updates_received", s->updates_received, true);
    j_u64(b, "updates_rejected", s->updates_rejected, true);
    j_u64(b, "bytes_up", s->bytes_up, true);
    j_u64(b, "bytes_down", s->bytes_down, true);
    ef__sb_puts(b, ",\"epsilon\":");
    sb_json_num(b, s->epsilon);
    ef__sb_puts(b, ",\"delta\":");
    sb_json_num(b, s->delta);
    ef__sb_puts(b, ",\"uptime_s\":");
    sb_json_num(b, uptime_locked(d));
    uint32_t first = d->n ? rec_at(d, 0)->round : 0;
    uint32_t last = d->n ? rec_at(d, d->n - 1)->round : 0;
    ef__sb_puts(b, "},\"history\":{");
    j_u64(b, "kept", d->n, false);
    j_u64(b, "dropped", d->dropped, true);
    j_u64(b, "max", EF_DASHBOARD_MAX_RECORDS, true);
    j_u64(b, "first_round", first, true);
    j_u64(b, "last_round", last, true);
    ef__sb_puts(b, "}");
    j_u64(b, "since", since, true);
    ef__sb_puts(b, ",\"records\":[");
    return last;
}

/* A streamed /api/state response: the head, then the records of rounds
 * since..last one at a time, then the closing brackets. */
typedef struct state_stream {
    ef_dashboard *d;
    ef__sb out;         /* bytes formatted but not yet handed to MHD */
    size_t out_off;
    uint32_t next;    /* the next record to send is the oldest with round >= next */
    uint32_t last;    /* newest round at the time of the request */
    bool any;         /* a record was written (for the commas) */
    bool done;        /* the closing brackets are in `out` */
} state_stream;

static void state_stream_free(void *cls) {
    state_stream *s = cls;
    ef_free(s->out.p);
    ef_free(s);
}

/* Refills s->out with the next records (about `want` bytes). Returns false
 * when out of memory. */
static bool state_stream_fill(state_stream *s, size_t want) {
    ef_dashboard *d = s->d;
    s->out.len = 0;
    s->out_off = 0;
    pthread_mutex_lock(&d->mu);
    while (!s->done && s->out.len < want && !s->out.oom) {
        uint32_t i = s->next <= s->last ? rec_lower_bound(d, s->next) : d->n;
        const ef_round_record *r = i < d->n ? rec_at(d, i) : NULL;
        if (!r || r->round > s->last) {
            ef__sb_puts(&s->out, "]}\n");
            s->done = true;
            break;
        }
        if (s->any) ef__sb_puts(&s->out, ",\n");
        json_record(&s->out, r);
        s->any = true;
        s->next = r->round + 1;
        if (r->round == UINT32_MAX) s->last = 0; /* nothing can follow */
    }
    pthread_mutex_unlock(&d->mu);
    return !s->out.oom;
}

static ssize_t state_stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    state_stream *s = cls;
    if (s->out_off == s->out.len) {
        if (s->done) return MHD_CONTENT_READER_END_OF_STREAM;
        locale_t old = uselocale(s->d->c_locale);
        bool ok = state_stream_fill(s, max);
        uselocale(old);
        /* out of memory in the middle of a body: cut the connection (the
         * client sees a truncated response, not a wrong one) */
        if (!ok) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = s->out.len - s->out_off;
    if (n > max) n = max;
    memcpy(buf, s->out.p + s->out_off, n);
    s->out_off += n;
    return (ssize_t)n;
}

/* ---- Prometheus ------------------------------------------------------------ */

static void prom_meta(ef__sb *b, const char *name, const char *type, const char *help) {
    ef__sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void prom_u64(ef__sb *b, const char *name, const char *type, const char *help, uint64_t v) {
    prom_meta(b, name, type, help);
    ef__sb_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

/* A gauge that is left out while it has no value (NaN). */
static void prom_f64_opt(ef__sb *b, const char *name, const char *help, double v) {
    if (!isfinite(v)) return;
    prom_meta(b, name, "gauge", help);
    ef__sb_printf(b, "%s ", name);
    sb_prom_num(b, v);
    ef__sb_puts(b, "\n");
}

/* The newest finite value of a record field (evaluations may run every k
 * rounds; the gauge keeps the last measurement instead of vanishing). */
static double latest_locked(const ef_dashboard *d, size_t offset) {
    for (uint32_t i = d->n; i-- > 0;) {
        double v;
        memcpy(&v, (const char *)rec_at(d, i) + offset, sizeof v);
        if (isfinite(v)) return v;
    }
    return NAN;
}

static void metrics_locked(const ef_dashboard *d, ef__sb *b) {
    const ef_dashboard_status *s = &d->st;
    prom_meta(b, "edgefl_info", "gauge",
              "Facts about the run as labels (job, phase, edgefl version); the value is always 1.");
    ef__sb_puts(b, "edgefl_info{job=\"");
    sb_label_value(b, s->job);
    ef__sb_puts(b, "\",phase=\"");
    sb_label_value(b, s->phase);
    ef__sb_puts(b, "\",version=\"");
    sb_label_value(b, ef_version());
    ef__sb_puts(b, "\"} 1\n");
    prom_u64(b, "edgefl_round", "gauge", "Current round, 1-based (0 before the first).", s->round);
    prom_u64(b, "edgefl_rounds_planned", "gauge", "Total rounds of the run (0 if open-ended).",
             s->rounds);
    prom_u64(b, "edgefl_rounds_finished_total", "counter",
             "Rounds that ended, aggregated or abandoned.", d->n + d->dropped);
    prom_u64(b, "edgefl_clients_online", "gauge", "Clients connected now.", s->clients_online);
    prom_u64(b, "edgefl_clients_known", "gauge", "Clients that ever checked in.", s->clients_known);
    prom_u64(b, "edgefl_participants", "gauge", "Clients taking part in the current round.",
             s->participants);
    prom_u64(b, "edgefl_updates_received_total", "counter", "Client updates received.",
             s->updates_received);
    prom_u64(b, "edgefl_updates_rejected_total", "counter",
             "Client updates or messages refused (malformed, foreign, duplicate, non-finite).",
             s->updates_rejected);
    prom_u64(b, "edgefl_bytes_up_total", "counter", "Bytes sent by clients to the server.",
             s->bytes_up);
    prom_u64(b, "edgefl_bytes_down_total", "counter", "Bytes sent by the server to clients.",
             s->bytes_down);
    prom_f64_opt(b, "edgefl_epsilon", "Differential privacy spent so far (epsilon at edgefl_delta).",
                 s->epsilon);
    prom_f64_opt(b, "edgefl_delta", "The delta of the differential privacy guarantee.", s->delta);
    prom_f64_opt(b, "edgefl_uptime_seconds", "Seconds since the run started.", uptime_locked(d));
    if (d->n == 0) return;
    const ef_round_record *r = rec_at(d, d->n - 1);
    prom_u64(b, "edgefl_last_round", "gauge", "Round of the newest round record.", r->round);
    prom_meta(b, "edgefl_last_round_clients", "gauge",
              "Clients of the newest round record by outcome.");
    ef__sb_printf(b,
                  "edgefl_last_round_clients{outcome=\"selected\"} %u\n"
                  "edgefl_last_round_clients{outcome=\"completed\"} %u\n"
                  "edgefl_last_round_clients{outcome=\"late\"} %u\n"
                  "edgefl_last_round_clients{outcome=\"dropped\"} %u\n"
                  "edgefl_last_round_clients{outcome=\"rejected\"} %u\n",
                  (unsigned)r->selected, (unsigned)r->completed, (unsigned)r->late,
                  (unsigned)r->dropped, (unsigned)r->rejected);
    prom_f64_opt(b, "edgefl_round_duration_seconds", "Wall-clock seconds of the newest timed round.",
                 latest_locked(d, offsetof(ef_round_record, wall_s)));
    prom_f64_opt(b, "edgefl_train_loss", "Newest mean training loss of the clients.",
                 latest_locked(d, offsetof(ef_round_record, train_loss)));
    prom_f64_opt(b, "edgefl_test_accuracy", "Newest centralized test accuracy (0..1).",
                 latest_locked(d, offsetof(ef_round_record, test_accuracy)));
    prom_f64_opt(b, "edgefl_test_loss", "Newest centralized test loss.",
                 latest_locked(d, offsetof(ef_round_record, test_loss)));
    prom_f64_opt(b, "edgefl_fed_accuracy", "Newest federated evaluation accuracy (0..1).",
                 latest_locked(d, offsetof(ef_round_record, fed_accuracy)));
    prom_f64_opt(b, "edgefl_fed_loss", "Newest federated evaluation loss.",
                 latest_locked(d, offsetof(ef_round_record, fed_loss)));
}

/* ---- HTTP ------------------------------------------------------------------ */

static void free_buffer(void *p) { ef_free(p); }

static void add_common_headers(struct MHD_Response *r, const char *type) {
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, MHD_HTTP_HEADER_X_CONTENT_TYPE_OPTIONS, "nosniff");
}

/* Queues a short text/plain answer (errors). */
static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned code, const char *text) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    add_common_headers(r, "text/plain; charset=utf-8");
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

/* Queues `b` (ownership passes to the response) with status 200. */
static enum MHD_Result reply_sbuf(struct MHD_Connection *c, ef__sb *b, const char *type) {
    if (b->oom) {
        ef_free(b->p);
        return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer_with_free_callback(b->len, b->p, free_buffer);
    if (!r) {
        ef_free(b->p);
        return MHD_NO;
    }
    add_common_headers(r, type);
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* Parses a decimal round number 0..UINT32_MAX (digits only). */
static bool parse_u32(const char *s, uint32_t *out) {
    if (!s || !*s) return false;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return false;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > UINT32_MAX) return false;
    }
    *out = (uint32_t)v;
    return true;
}

static enum MHD_Result serve_state(ef_dashboard *d, struct MHD_Connection *c) {
    uint32_t since = 0;
    const char *q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "since");
    if (q && !parse_u32(q, &since))
        return reply_text(c, MHD_HTTP_BAD_REQUEST,
                          "bad request: since must be a round number (0..4294967295)\n");
    state_stream *s = ef_calloc(1, sizeof *s);
    if (!s) return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
    s->d = d;
    s->next = since;
    pthread_mutex_lock(&d->mu);
    s->last = json_head_locked(d, &s->out, since);
    pthread_mutex_unlock(&d->mu);
    if (s->out.oom) {
        state_stream_free(s);
        return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
    }
    if (s->last == 0) { /* no records: the whole answer is already formatted */
        ef__sb_puts(&s->out, "]}\n");
        s->done = true;
    }
    struct MHD_Response *r = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, 16 * 1024, state_stream_read, s, state_stream_free);
    if (!r) {
        state_stream_free(s);
        return MHD_NO;
    }
    add_common_headers(r, "application/json");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result serve_page(ef_dashboard *d, struct MHD_Connection *c) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(d->page_len, d->page, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    add_common_headers(r, "text/html; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_SECURITY_POLICY, d->csp);
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    (void)version;
    (void)upload_data;
    ef_dashboard *d = cls;
    static int seen; /* any non-NULL address marks a request already looked at */
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        /* answered at once, without reading a body: MHD then closes the
         * connection, which is what an unwanted upload deserves */
        return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: use GET or HEAD\n");
    if (*con_cls == NULL) {
        /* first call, headers only: answering now would make MHD close the
         * connection (the request might still have a body); answer on the
         * next call, when the request is complete, so browsers polling every
         * second keep their connection alive */
        *con_cls = &seen;
        return MHD_YES;
    }
    if (*upload_data_size != 0) { /* a GET with a body: ignore the body */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(url, "/") == 0) return serve_page(d, c);
    if (strcmp(url, "/api/state") == 0) {
        locale_t old = uselocale(d->c_locale);
        enum MHD_Result ret = serve_state(d, c);
        uselocale(old);
        return ret;
    }
    if (strcmp(url, "/metrics") == 0) {
        ef__sb b = {0};
        locale_t old = uselocale(d->c_locale);
        pthread_mutex_lock(&d->mu);
        metrics_locked(d, &b);
        pthread_mutex_unlock(&d->mu);
        uselocale(old);
        return reply_sbuf(c, &b, "text/plain; version=0.0.4; charset=utf-8");
    }
    return reply_text(c, MHD_HTTP_NOT_FOUND, "not found: try /, /api/state or /metrics\n");
}

/* libmicrohttpd's diagnostics (a refused connection, a client that went
 * away) are debug-level news for an embedded dashboard. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    ef_log(EF_LOG_DEBUG, "dashboard: %s", msg);
}

/* ---- start and stop -------------------------------------------------------- */

/* Splits "HOST:PORT" / "[V6]:PORT" into host (brackets removed) and port. */
static ef_status parse_host_port(const char *hp, char host[256], uint16_t *port) {
    if (!hp) return ef__fail(EF_ERR_INVALID, "dashboard address: NULL");
    const char *colon = strrchr(hp, ':');
    if (!colon)
        return ef__fail(EF_ERR_INVALID, "dashboard address '%s': expected HOST:PORT, e.g. 127.0.0.1:8080",
                        hp);
    const char *h = hp;
    size_t hl = (size_t)(colon - hp);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    } else if (memchr(h, ':', hl)) {
        return ef__fail(EF_ERR_INVALID,
                        "dashboard address '%s': write an IPv6 address in brackets, e.g. [::1]:8080", hp);
    }
    if (hl == 0)
        return ef__fail(EF_ERR_INVALID,
                        "dashboard address '%s': the host is missing (0.0.0.0 listens on every "
                        "interface)",
                        hp);
    if (hl >= 256) return ef__fail(EF_ERR_INVALID, "dashboard address: host name too long");
    if (memchr(h, '[', hl) || memchr(h, ']', hl))
        return ef__fail(EF_ERR_INVALID, "dashboard address '%s': misplaced brackets", hp);
    uint32_t p;
    if (!parse_u32(colon + 1, &p) || p > 65535)
        return ef__fail(EF_ERR_INVALID, "dashboard address '%s': the port must be 0..65535", hp);
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (uint16_t)p;
    return EF_OK;
}

/* Binds and listens on the first address `host` resolves to. */
static ef_status open_listener(const char *host, uint16_t port, const char *hp, int *out_fd,
                               uint16_t *bound_port) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG;
    char serv[8];
    snprintf(serv, sizeof serv, "%u", (unsigned)port);
    int gai = getaddrinfo(host, serv, &hints, &res);
    if (gai == EAI_ADDRFAMILY || gai == EAI_NONAME) {
        /* AI_ADDRCONFIG hides ::1 on hosts whose only IPv6 address is the
         * loopback; ask again without it before giving up */
        hints.ai_flags = AI_NUMERICSERV;
        gai = getaddrinfo(host, serv, &hints, &res);
    }
    if (gai != 0)
        return ef__fail(EF_ERR_INVALID, "dashboard address '%s': cannot resolve '%s': %s", hp, host,
                        gai_strerror(gai));
    ef_status rc = EF_ERR_IO;
    int fd = -1, err = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (a->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 64) == 0) break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return ef__fail(rc, "dashboard: cannot listen on %s: %s", hp, strerror(err ? err : EINVAL));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        err = errno;
        close(fd);
        return ef__fail(EF_ERR_IO, "dashboard: getsockname: %s", strerror(err));
    }
    *bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    *out_fd = fd;
    return EF_OK;
}

/* Joins the page (the CSS and the script inline at their markers) and
 * computes its Content-Security-Policy: the inline script and style are
 * allowed by their SHA-256 hashes, and nothing may load from anywhere else. */
static ef_status build_page(ef_dashboard *d) {
    const char *html = (const char *)ef__dash_html;
    const char *css = (const char *)ef__dash_css;
    const char *js = (const char *)ef__dash_js;
    static const char m_style[] = "<!--EF_STYLE-->", m_script[] = "<!--EF_SCRIPT-->";
    const char *at_style = strstr(html, m_style);
    const char *at_script = at_style ? strstr(at_style, m_script) : NULL;
    if (!at_script) return ef__fail(EF_ERR_INTERNAL, "dashboard: the page lacks its markers");
    ef__sb b = {0};
    ef__sb_put(&b, html, (size_t)(at_style - html));
    ef__sb_puts(&b, "<style>");
    ef__sb_puts(&b, css);
    ef__sb_puts(&b, "</style>");
    at_style += sizeof m_style - 1;
    ef__sb_put(&b, at_style, (size_t)(at_script - at_style));
    ef__sb_puts(&b, "<script>");
    ef__sb_puts(&b, js);
    ef__sb_puts(&b, "</script>");
    ef__sb_puts(&b, at_script + sizeof m_script - 1);
    if (b.oom) {
        ef_free(b.p);
        return ef__fail(EF_ERR_NOMEM, "dashboard: out of memory for the page");
    }
    d->page = b.p;
    d->page_len = b.len;
    unsigned char h_js[crypto_hash_sha256_BYTES], h_css[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h_js, ef__dash_js, strlen(js));
    crypto_hash_sha256(h_css, ef__dash_css, strlen(css));
    char b_js[64], b_css[64];
    sodium_bin2base64(b_js, sizeof b_js, h_js, sizeof h_js, sodium_base64_VARIANT_ORIGINAL);
    sodium_bin2base64(b_css, sizeof b_css, h_css, sizeof h_css, sodium_base64_VARIANT_ORIGINAL);
    snprintf(d->csp, sizeof d->csp,
             "default-src 'none'; script-src 'sha256-%s'; style-src 'sha256-%s'; "
             "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
             "frame-ancestors 'none'",
             b_js, b_css);
    return EF_OK;
}

ef_status ef_dashboard_start(ef_dashboard **out, const char *host_port) {
    if (!out) return ef__fail(EF_ERR_INVALID, "ef_dashboard_start: NULL out");
    *out = NULL;
    char host[256];
    uint16_t port = 0;
    ef_status rc = parse_host_port(host_port, host, &port);
    if (rc != EF_OK) return rc;
    if (sodium_init() < 0) return ef__fail(EF_ERR_INTERNAL, "libsodium failed to initialize");

    ef_dashboard *d = ef_calloc(1, sizeof *d);
    if (!d) return ef__fail(EF_ERR_NOMEM, "dashboard: out of memory");
    int fd = -1;
    bool mutex_ok = false;
    if (pthread_mutex_init(&d->mu, NULL) != 0) {
        rc = ef__fail(EF_ERR_INTERNAL, "dashboard: cannot create a mutex");
        goto fail;
    }
    mutex_ok = true;
    d->st = ef_dashboard_status_empty();
    d->job = ef_strdup("");
    d->phase = ef_strdup("starting");
    if (!d->job || !d->phase) {
        rc = ef__fail(EF_ERR_NOMEM, "dashboard: out of memory");
        goto fail;
    }
    d->st.job = d->job;
    d->st.phase = d->phase;
    d->started = d->st_set_at = ef_now();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(d->instance, sizeof d->instance, "%lld.%09ld-%08x", (long long)ts.tv_sec,
             (long)ts.tv_nsec, (unsigned)randombytes_random());
    d->c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (!d->c_locale) {
        rc = ef__fail(EF_ERR_NOMEM, "dashboard: cannot create the C locale");
        goto fail;
    }
    rc = build_page(d);
    if (rc != EF_OK) goto fail;
    rc = open_listener(host, port, host_port, &fd, &d->port);
    if (rc != EF_OK) goto fail;
    /* MHD_USE_ITC wakes the polling thread at stop instead of waiting out a
     * poll timeout; the connection limit and timeout bound what idle or slow
     * clients can hold. */
    d->mhd = MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, d,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, (void *)NULL, MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)100, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)20,
        MHD_OPTION_END);
    if (!d->mhd) {
        rc = ef__fail(EF_ERR_IO, "dashboard: cannot start the HTTP server on %s", host_port);
        goto fail;
    }
    *out = d;
    return EF_OK;
fail:
    if (fd >= 0) close(fd);
    if (d->c_locale) freelocale(d->c_locale);
    if (mutex_ok) pthread_mutex_destroy(&d->mu);
    ef_free(d->page);
    ef_free(d->job);
    ef_free(d->phase);
    ef_free(d);
    return rc;
}

uint16_t ef_dashboard_port(const ef_dashboard *d) { return d ? d->port : 0; }

void ef_dashboard_stop(ef_dashboard *d) {
    if (!d) return;
    /* joins the HTTP thread, frees pending responses and closes the socket */
    MHD_stop_daemon(d->mhd);
    freelocale(d->c_locale);
    pthread_mutex_destroy(&d->mu);
    ef_free(d->rec);
    ef_free(d->page);
    ef_free(d->job);
    ef_free(d->phase);
    ef_free(d);
}
