/*
 * edgefl HTTP serving. For now: the live dashboard of a federated server, a
 * small HTTP server (libmicrohttpd, on its own thread) that shows the state of
 * a run to people and to monitoring systems:
 *
 *   GET /            one self-contained HTML page (inline CSS, JS and SVG, no
 *                    external resources) that polls /api/state every second
 *                    and redraws: job, phase, round, clients, curves of
 *                    accuracy and loss, traffic and privacy spent per round
 *   GET /api/state   the status and the per-round records as JSON
 *                    (?since=R: only the records of rounds >= R)
 *   GET /metrics     Prometheus text exposition format 0.0.4
 *
 * Other paths answer 404, other methods 405 (HEAD works wherever GET does).
 * The dashboard only reads what its owner gives it: the owner (the server
 * loop) calls ef_dashboard_set_status() and ef_dashboard_add_round() from any
 * thread, and the HTTP thread serves copies. docs/dashboard.md has the JSON
 * fields, the metric names and a Prometheus scrape configuration.
 */
#ifndef EDGEFL_SERVE_H
#define EDGEFL_SERVE_H

#include <stdint.h>

#include "edgefl/core.h"
#include "edgefl/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The dashboard keeps at most this many round records, the newest ones; older
 * records are discarded (and counted in /api/state's history.dropped), so a
 * server that runs for years holds bounded memory (about 30 MB at the cap). */
#define EF_DASHBOARD_MAX_RECORDS 100000u

/* Longest job or phase string accepted by ef_dashboard_set_status, in bytes. */
#define EF_DASHBOARD_MAX_TEXT 1024u

/* A running dashboard (opaque). */
typedef struct ef_dashboard ef_dashboard;

/*
 * What the dashboard shows about the run as a whole. Start from
 * ef_dashboard_status_empty(), not from zeros: a zero epsilon would claim a
 * perfectly private run.
 */
typedef struct ef_dashboard_status {
    const char *job;             /* job name or id, shown in the title; NULL: "" */
    const char *phase;           /* what the server is doing, e.g. "waiting for clients",
                                  * "training", "secagg: unmasking", "done"; NULL: "" */
    uint32_t round;              /* current round, 1-based; 0 before the first */
    uint32_t rounds;             /* the run's total rounds; 0 if open-ended */
    uint32_t clients_online;     /* clients connected now */
    uint32_t clients_known;      /* clients that ever checked in */
    uint32_t participants;       /* clients taking part in the current round */
    uint64_t updates_received;   /* updates received so far (whole run) */
    uint64_t updates_rejected;   /* updates or messages refused so far */
    uint64_t bytes_up;           /* client -> server bytes so far */
    uint64_t bytes_down;         /* server -> client bytes so far */
    double epsilon;              /* differential privacy spent so far; NaN without DP */
    double delta;                /* the delta that epsilon is stated at; NaN without DP */
    double uptime_s;             /* seconds since the run started, as of this call (the
                                  * dashboard advances it with its own clock between
                                  * calls); NaN: seconds since ef_dashboard_start */
} ef_dashboard_status;

/* The status before anything is known: strings NULL, counts 0, epsilon,
 * delta and uptime_s NaN. This is also what a new dashboard shows (with the
 * phase "starting"). */
EF_API ef_dashboard_status ef_dashboard_status_empty(void);

/*
 * Starts a dashboard listening on `host_port` on a thread of its own.
 *
 * host_port: "HOST:PORT". HOST is an IPv4 address, a bracketed IPv6 address
 *   ("[::1]:8080") or a name resolved with getaddrinfo ("localhost:8080");
 *   the server binds that address only (use 0.0.0.0 or [::] to listen on every
 *   interface). PORT is 0..65535; 0 picks a free port, read it back with
 *   ef_dashboard_port().
 * out: receives the dashboard on success, NULL on failure. Free it with
 *   ef_dashboard_stop().
 * Returns EF_OK; EF_ERR_INVALID for a malformed or unresolvable address;
 * EF_ERR_IO when the address cannot be bound (in use, not local) or the HTTP
 * thread cannot start; EF_ERR_NOMEM. The last error says which.
 */
EF_API ef_status ef_dashboard_start(ef_dashboard **out, const char *host_port);

/* The TCP port the dashboard listens on (the chosen one when started with
 * port 0); 0 if `d` is NULL. */
EF_API uint16_t ef_dashboard_port(const ef_dashboard *d);

/*
 * Replaces the status shown. Thread-safe; everything is copied (the strings
 * too), so `st` and its strings may be freed after the call.
 * Returns EF_ERR_INVALID for NULL arguments and EF_ERR_RANGE for a job or
 * phase longer than EF_DASHBOARD_MAX_TEXT bytes; the status is then unchanged.
 * Bytes that are not UTF-8 are shown as U+FFFD.
 */
EF_API ef_status ef_dashboard_set_status(ef_dashboard *d, const ef_dashboard_status *st);

/*
 * Adds the record of a finished round (copied; see metrics.h for the fields,
 * NaN = not measured). Rounds must not go backwards: a record whose round
 * equals the newest one replaces it (e.g. when an evaluation arrives after
 * the aggregation), an older round is refused. Thread-safe.
 * Returns EF_ERR_INVALID for NULL arguments, round 0 or an older round
 * (nothing changes); EF_ERR_NOMEM.
 */
EF_API ef_status ef_dashboard_add_round(ef_dashboard *d, const ef_round_record *rec);

/* Stops the HTTP thread (open connections are closed), closes the listening
 * socket and frees the dashboard. NULL is a no-op. Call it once, after every
 * other call on `d` has returned. */
EF_API void ef_dashboard_stop(ef_dashboard *d);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_SERVE_H */
