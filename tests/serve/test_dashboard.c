/*
 * The live dashboard over real TCP: a small HTTP/1.1 client in this file
 * fetches /, /api/state and /metrics from a dashboard on a free loopback
 * port and checks status codes, headers, the JSON (parsed with cJSON, record
 * fields compared with the JSON lines of metrics.h), the Prometheus text
 * format (every line parsed, values compared with what was set), 404/405,
 * malformed and hostile requests, the record cap, consistency of snapshots
 * while other threads update the dashboard, out-of-memory at every
 * allocation of start and growth, and that stop closes the socket.
 */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "edgefl/serve.h"
#include "test_util.h"

/* ---- a tiny HTTP client ---------------------------------------------------- */

typedef struct resp {
    int status;       /* 0: no parsable answer (connection closed) */
    char *head;       /* status line and headers, NUL-terminated */
    char *body;       /* NUL-terminated (after de-chunking) */
    size_t body_len;
    bool chunked;
} resp;

static void resp_free(resp *r) {
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

static int connect_port(int family, uint16_t port) {
    int fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct timeval tv = {20, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int rc;
    if (family == AF_INET6) {
        struct sockaddr_in6 a;
        memset(&a, 0, sizeof a);
        a.sin6_family = AF_INET6;
        a.sin6_port = htons(port);
        a.sin6_addr = in6addr_loopback;
        rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    }
    if (rc != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Case-insensitive header lookup; returns a pointer into r->head (the value
 * runs to "\r\n") or NULL. */
static const char *header(const resp *r, const char *name) {
    if (!r->head) return NULL;
    size_t n = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
            line += n + 1;
            while (*line == ' ') line++;
            return line;
        }
    }
    return NULL;
}

static bool header_is(const resp *r, const char *name, const char *value) {
    const char *v = header(r, name);
    return v && strncmp(v, value, strlen(value)) == 0 && v[strlen(value)] == '\r';
}

/* Decodes a chunked body in place; false if malformed. */
static bool dechunk(char *b, size_t len, size_t *out_len) {
    size_t in = 0, out = 0;
    for (;;) {
        char *end;
        unsigned long n = strtoul(b + in, &end, 16);
        char *crlf = strstr(b + in, "\r\n");
        if (end == b + in || !crlf) return false;
        in = (size_t)(crlf - b) + 2;
        if (n == 0) break;
        if (in + n + 2 > len) return false;
        memmove(b + out, b + in, n);
        out += n;
        in += n;
        if (b[in] != '\r' || b[in + 1] != '\n') return false;
        in += 2;
    }
    b[out] = '\0';
    *out_len = out;
    return true;
}

/* Sends `req` (raw bytes) and reads the answer to EOF. */
static void http_raw_fd(int fd, const char *req, size_t req_len, resp *r) {
    memset(r, 0, sizeof *r);
    size_t off = 0;
    while (off < req_len) {
        ssize_t w = send(fd, req + off, req_len - off, MSG_NOSIGNAL);
        if (w <= 0) break; /* the server may refuse early: read what it said */
        off += (size_t)w;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 4096 > cap) buf = realloc(buf, cap *= 2);
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n <= 0) break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    if (len < 12 || strncmp(buf, "HTTP/1.", 7) != 0 || !sep) {
        free(buf);
        return;
    }
    r->status = atoi(buf + 9);
    size_t hl = (size_t)(sep - buf) + 2;
    r->head = malloc(hl + 1);
    memcpy(r->head, buf, hl);
    r->head[hl] = '\0';
    size_t bl = len - (hl + 2);
    r->body = malloc(bl + 1);
    memcpy(r->body, sep + 4, bl);
    r->body[bl] = '\0';
    r->body_len = bl;
    free(buf);
    const char *te = header(r, "Transfer-Encoding");
    if (te && strncasecmp(te, "chunked", 7) == 0) {
        r->chunked = true;
        if (!dechunk(r->body, bl, &r->body_len)) r->status = -1;
    } else {
        const char *cl = header(r, "Content-Length");
        /* HEAD answers carry the length of the body they leave out; more
         * bytes than the length are the next answer on the connection */
        if (cl && strncmp(req, "HEAD ", 5) != 0 && (size_t)strtoull(cl, NULL, 10) > bl)
            r->status = -2;
    }
}

static void http_raw(uint16_t port, const char *req, size_t req_len, resp *r) {
    memset(r, 0, sizeof *r);
    int fd = connect_port(AF_INET, port);
    if (fd < 0) return;
    http_raw_fd(fd, req, req_len, r);
    close(fd);
}

static void http(uint16_t port, const char *method, const char *path, resp *r) {
    char req[1024];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                     method, path);
    http_raw(port, req, (size_t)n, r);
}

/* GET path and parse the JSON body (NULL on any failure). */
static cJSON *get_json(uint16_t port, const char *path) {
    resp r;
    http(port, "GET", path, &r);
    cJSON *j = NULL;
    if (r.status == 200 && header_is(&r, "Content-Type", "application/json"))
        j = cJSON_ParseWithLength(r.body, r.body_len);
    if (!j) fprintf(stderr, "GET %s: status %d, body %.200s\n", path, r.status, r.body ? r.body : "");
    resp_free(&r);
    return j;
}

static double jnum(const cJSON *o, const char *path) {
    /* path like "status.round" */
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *cur = o;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ".", &save); tok && cur; tok = strtok_r(NULL, ".", &save))
        cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
    return cJSON_IsNumber(cur) ? cur->valuedouble : NAN;
}

static const cJSON *jget(const cJSON *o, const char *a, const char *b) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
    return b ? cJSON_GetObjectItemCaseSensitive(x, b) : x;
}

/* ---- Prometheus text format parser ------------------------------------------ */

#define MAX_SAMPLES 128
typedef struct sample {
    char name[96];
    char labels[4][2][1200]; /* up to 4 name/value pairs, values unescaped */
    int n_labels;
    double value;
} sample;

typedef struct prom {
    sample s[MAX_SAMPLES];
    int n;
    int errors;
} prom;

static bool metric_name_ok(const char *s, size_t n) {
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                  (i > 0 && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

/* Parses an exposition: every line must be a HELP, a TYPE or a sample; every
 * sample's family has exactly one TYPE (after its HELP) before it; counters end
 * in _total. Problems are counted in p->errors and printed. */
static void prom_parse(const char *text, prom *p) {
    memset(p, 0, sizeof *p);
    char typed[MAX_SAMPLES][96], helped[MAX_SAMPLES][96], types[MAX_SAMPLES][16];
    int n_typed = 0, n_helped = 0;
    const char *line = text;
    size_t tl = strlen(text);
    if (tl == 0 || text[tl - 1] != '\n') {
        fprintf(stderr, "prometheus: the text does not end with a newline\n");
        p->errors++;
    }
    while (*line) {
        const char *eol = strchr(line, '\n');
        size_t n = eol ? (size_t)(eol - line) : strlen(line);
        char l[4096];
        if (n >= sizeof l) {
            p->errors++;
            break;
        }
        memcpy(l, line, n);
        l[n] = '\0';
        line += n + (eol ? 1 : 0);
        if (strncmp(l, "# HELP ", 7) == 0 || strncmp(l, "# TYPE ", 7) == 0) {
            char *name = l + 7, *sp = strchr(name, ' ');
            if (!sp || !metric_name_ok(name, (size_t)(sp - name)) || n_typed >= MAX_SAMPLES) {
                fprintf(stderr, "prometheus: bad comment line '%s'\n", l);
                p->errors++;
                continue;
            }
            *sp = '\0';
            if (l[2] == 'H') {
                for (int i = 0; i < n_helped; i++)
                    if (!strcmp(helped[i], name)) fprintf(stderr, "prometheus: HELP %s twice\n", name), p->errors++;
                snprintf(helped[n_helped++], 96, "%s", name);
                if (strlen(sp + 1) < 5) fprintf(stderr, "prometheus: HELP %s is empty\n", name), p->errors++;
            } else {
                const char *t = sp + 1;
                if (strcmp(t, "gauge") && strcmp(t, "counter")) {
                    fprintf(stderr, "prometheus: TYPE %s %s\n", name, t);
                    p->errors++;
                }
                for (int i = 0; i < n_typed; i++)
                    if (!strcmp(typed[i], name)) fprintf(stderr, "prometheus: TYPE %s twice\n", name), p->errors++;
                bool has_help = false;
                for (int i = 0; i < n_helped; i++) has_help |= !strcmp(helped[i], name);
                if (!has_help) fprintf(stderr, "prometheus: TYPE %s before its HELP\n", name), p->errors++;
                size_t nl = strlen(name);
                bool total = nl > 6 && !strcmp(name + nl - 6, "_total");
                if (!strcmp(t, "counter") != total) {
                    fprintf(stderr, "prometheus: %s %s: counters and only counters end in _total\n", t, name);
                    p->errors++;
                }
                snprintf(types[n_typed], 16, "%s", t);
                snprintf(typed[n_typed++], 96, "%s", name);
            }
            continue;
        }
        if (l[0] == '#' || l[0] == '\0') {
            fprintf(stderr, "prometheus: unexpected line '%s'\n", l);
            p->errors++;
            continue;
        }
        if (p->n >= MAX_SAMPLES) {
            p->errors++;
            break;
        }
        sample *s = &p->s[p->n];
        memset(s, 0, sizeof *s);
        size_t nn = strcspn(l, "{ ");
        if (!metric_name_ok(l, nn) || nn >= sizeof s->name) {
            fprintf(stderr, "prometheus: bad sample name in '%s'\n", l);
            p->errors++;
            continue;
        }
        memcpy(s->name, l, nn);
        const char *c = l + nn;
        bool bad = false;
        if (*c == '{') {
            c++;
            while (*c != '}' && !bad) {
                size_t ln = strcspn(c, "=");
                if (s->n_labels >= 4 || !metric_name_ok(c, ln) || c[ln] != '=' || c[ln + 1] != '"') {
                    bad = true;
                    break;
                }
                memcpy(s->labels[s->n_labels][0], c, ln);
                c += ln + 2;
                char *v = s->labels[s->n_labels][1];
                size_t vi = 0;
                while (*c && *c != '"' && vi + 1 < 1200) {
                    if (*c == '\\') {
                        c++;
                        if (*c == 'n') v[vi++] = '\n';
                        else if (*c == '\\' || *c == '"') v[vi++] = *c;
                        else bad = true;
                        c++;
                    } else {
                        v[vi++] = *c++;
                    }
                }
                if (*c != '"') bad = true;
                else c++;
                s->n_labels++;
                if (*c == ',') c++;
                else if (*c != '}') bad = true;
            }
            if (!bad) c++;
        }
        char *end;
        if (bad || *c != ' ') {
            fprintf(stderr, "prometheus: bad sample line '%s'\n", l);
            p->errors++;
            continue;
        }
        s->value = strtod(c + 1, &end);
        if (end == c + 1 || *end != '\0') {
            fprintf(stderr, "prometheus: bad value in '%s'\n", l);
            p->errors++;
            continue;
        }
        bool has_type = false;
        for (int i = 0; i < n_typed; i++) has_type |= !strcmp(typed[i], s->name);
        if (!has_type) {
            fprintf(stderr, "prometheus: sample %s without a TYPE before it\n", s->name);
            p->errors++;
        }
        p->n++;
    }
}

/* Value of the sample `name` (with label `lk`="lv" if given); NaN if absent. */
static double prom_get(const prom *p, const char *name, const char *lk, const char *lv) {
    for (int i = 0; i < p->n; i++) {
        if (strcmp(p->s[i].name, name)) continue;
        if (!lk) return p->s[i].value;
        for (int k = 0; k < p->s[i].n_labels; k++)
            if (!strcmp(p->s[i].labels[k][0], lk) && !strcmp(p->s[i].labels[k][1], lv)) return p->s[i].value;
    }
    return NAN;
}

static const char *prom_label(const prom *p, const char *name, const char *lk) {
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->s[i].name, name))
            for (int k = 0; k < p->s[i].n_labels; k++)
                if (!strcmp(p->s[i].labels[k][0], lk)) return p->s[i].labels[k][1];
    return NULL;
}

static bool get_metrics(uint16_t port, prom *p) {
    resp r;
    http(port, "GET", "/metrics", &r);
    bool ok = r.status == 200 && header_is(&r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    if (ok) prom_parse(r.body, p);
    else fprintf(stderr, "GET /metrics: status %d\n", r.status);
    resp_free(&r);
    return ok && p->errors == 0;
}

/* ---- helpers ------------------------------------------------------------------ */

static ef_round_record make_record(uint32_t round) {
    ef_round_record r = ef_round_record_empty(round);
    r.selected = 13;
    r.completed = 10;
    r.dropped = 2;
    r.late = 1;
    r.rejected = round % 2;
    r.aggregated = 1;
    r.wall_s = 1.5 + round;
    r.sim_start = 10.0 * round;
    r.sim_end = 10.0 * round + 7.25;
    r.train_loss = 2.0 / round;
    r.test_accuracy = round % 3 == 0 ? NAN : 0.5 + 0.01 * round; /* evaluated 2 rounds in 3 */
    r.test_loss = round % 3 == 0 ? NAN : 1.0 / round;
    r.bytes_up = 1000000ull * round;
    r.bytes_down = 3000000ull + round;
    r.epsilon = 0.1 * round;
    return r;
}

static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d) return -1;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_addresses(void) {
    static const char *bad[] = {"", "127.0.0.1", "127.0.0.1:", ":8080", "127.0.0.1:65536",
                                "127.0.0.1:-1", "127.0.0.1:80a", "127.0.0.1: 80", "::1:8080",
                                "[::1:8080", "[]:80", "[127.0.0.1:80", "no.such.host.invalid:0"};
    ef_dashboard *d = (ef_dashboard *)&d; /* must be overwritten with NULL */
    CHECK(ef_dashboard_start(&d, NULL) == EF_ERR_INVALID && d == NULL);
    CHECK(ef_dashboard_start(NULL, "127.0.0.1:0") == EF_ERR_INVALID);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        d = (ef_dashboard *)&d;
        ef_status st = ef_dashboard_start(&d, bad[i]);
        CHECK_MSG(st == EF_ERR_INVALID && d == NULL, "'%s' gave %s: %s", bad[i], ef_strerror(st),
                  ef_last_error());
        CHECK_MSG(strstr(ef_last_error(), "dashboard") != NULL, "'%s': %s", bad[i], ef_last_error());
    }
    /* a port in use, an address that is not ours */
    ef_dashboard *a = NULL;
    CHECK_OK(ef_dashboard_start(&a, "127.0.0.1:0"));
    char hp[64];
    snprintf(hp, sizeof hp, "127.0.0.1:%u", (unsigned)ef_dashboard_port(a));
    d = (ef_dashboard *)&d;
    CHECK(ef_dashboard_start(&d, hp) == EF_ERR_IO && d == NULL);
    CHECK_MSG(strstr(ef_last_error(), "in use") != NULL, "%s", ef_last_error());
    CHECK(ef_dashboard_start(&d, "192.0.2.1:0") == EF_ERR_IO && d == NULL); /* TEST-NET-1 */
    ef_dashboard_stop(a);
    ef_dashboard_stop(NULL);
    CHECK(ef_dashboard_port(NULL) == 0);

    /* "localhost" resolves; bound to the IPv6 loopback only, the IPv4
     * loopback at the same port is refused (the host given is the only one) */
    CHECK_OK(ef_dashboard_start(&a, "localhost:0"));
    CHECK(ef_dashboard_port(a) != 0);
    ef_dashboard_stop(a);
    a = NULL;
    if (ef_dashboard_start(&a, "[::1]:0") == EF_OK) {
        uint16_t port = ef_dashboard_port(a);
        int fd = connect_port(AF_INET, port);
        CHECK_MSG(fd < 0, "bound to [::1], but 127.0.0.1:%u answers", (unsigned)port);
        if (fd >= 0) close(fd);
        fd = connect_port(AF_INET6, port);
        CHECK(fd >= 0);
        if (fd >= 0) {
            resp r;
            static const char req[] = "GET /metrics HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n";
            http_raw_fd(fd, req, sizeof req - 1, &r);
            CHECK(r.status == 200);
            resp_free(&r);
            close(fd);
        }
        ef_dashboard_stop(a);
    } else {
        printf("note: no IPv6 loopback here (%s); the [::1] checks did not run\n", ef_last_error());
    }
}

/* The script's SHA-256 must be the one the Content-Security-Policy allows. */
static void check_csp(const resp *r) {
    const char *csp = header(r, "Content-Security-Policy");
    CHECK(csp != NULL);
    if (!csp) return;
    CHECK(strstr(csp, "default-src 'none'") != NULL);
    CHECK(strstr(csp, "connect-src 'self'") != NULL);
    const char *s0 = strstr(r->body, "<script>"), *s1 = s0 ? strstr(s0, "</script>") : NULL;
    const char *c0 = strstr(r->body, "<style>"), *c1 = c0 ? strstr(c0, "</style>") : NULL;
    CHECK(s1 && c1);
    if (!s1 || !c1) return;
    unsigned char h[32];
    char b64[64], want[100];
    crypto_hash_sha256(h, (const unsigned char *)s0 + 8, (size_t)(s1 - s0 - 8));
    sodium_bin2base64(b64, sizeof b64, h, sizeof h, sodium_base64_VARIANT_ORIGINAL);
    snprintf(want, sizeof want, "script-src 'sha256-%s'", b64);
    CHECK_MSG(strstr(csp, want) != NULL, "CSP %.120s lacks %s", csp, want);
    crypto_hash_sha256(h, (const unsigned char *)c0 + 7, (size_t)(c1 - c0 - 7));
    sodium_bin2base64(b64, sizeof b64, h, sizeof h, sodium_base64_VARIANT_ORIGINAL);
    snprintf(want, sizeof want, "style-src 'sha256-%s'", b64);
    CHECK_MSG(strstr(csp, want) != NULL, "CSP lacks %s", want);
    /* one script and one style element only: nothing else could run */
    CHECK(strstr(s1, "<script") == NULL && strstr(c1, "<style") == NULL);
}

static void test_page(uint16_t port) {
    resp r;
    http(port, "GET", "/", &r);
    CHECK(r.status == 200);
    CHECK(header_is(&r, "Content-Type", "text/html; charset=utf-8"));
    CHECK(header_is(&r, "Cache-Control", "no-store"));
    CHECK(r.body && strstr(r.body, "<!doctype html>") == r.body);
    CHECK(r.body && strstr(r.body, "id=\"round\"") && strstr(r.body, "data-round="));
    CHECK(r.body && strstr(r.body, "api/state") && strstr(r.body, "</html>"));
    /* self-contained: no external resources (the SVG namespace is a name, not a fetch) */
    if (r.body) {
        for (const char *p = r.body; (p = strstr(p, "http")) != NULL; p++)
            CHECK_MSG(strncmp(p, "http://www.w3.org/2000/svg", 26) == 0, "external reference: %.60s", p);
        CHECK(strstr(r.body, " src=") == NULL && strstr(r.body, "@import") == NULL &&
              strstr(r.body, "url(") == NULL);
        CHECK(strstr(r.body, "<!--EF_") == NULL); /* markers replaced */
        check_csp(&r);
    }
    size_t page_len = r.body_len;
    resp_free(&r);

    http(port, "HEAD", "/", &r);
    CHECK(r.status == 200 && r.body_len == 0);
    const char *cl = header(&r, "Content-Length");
    CHECK(cl && (size_t)strtoull(cl, NULL, 10) == page_len);
    resp_free(&r);
}

static void test_state_and_metrics(void) {
    ef_dashboard *d = NULL;
    CHECK_OK(ef_dashboard_start(&d, "127.0.0.1:0"));
    if (!d) return;
    uint16_t port = ef_dashboard_port(d);
    CHECK(port != 0);
    test_page(port);

    /* a new dashboard */
    cJSON *j = get_json(port, "/api/state");
    CHECK(j != NULL);
    if (j) {
        CHECK(jnum(j, "status.round") == 0 && jnum(j, "status.rounds") == 0);
        CHECK(cJSON_IsNull(jget(j, "status", "epsilon")) && cJSON_IsNull(jget(j, "status", "delta")));
        const cJSON *ph = jget(j, "status", "phase");
        CHECK(cJSON_IsString(ph) && !strcmp(ph->valuestring, "starting"));
        CHECK(cJSON_IsArray(jget(j, "records", NULL)) && cJSON_GetArraySize(jget(j, "records", NULL)) == 0);
        CHECK(jnum(j, "history.kept") == 0 && jnum(j, "history.max") == EF_DASHBOARD_MAX_RECORDS);
        CHECK(jnum(j, "status.uptime_s") >= 0 && jnum(j, "status.uptime_s") < 60);
        CHECK(cJSON_IsString(jget(j, "edgefl", NULL)) && !strcmp(jget(j, "edgefl", NULL)->valuestring, ef_version()));
        cJSON_Delete(j);
    }
    prom p;
    CHECK(get_metrics(port, &p));
    CHECK(prom_get(&p, "edgefl_round", NULL, NULL) == 0);
    CHECK(isnan(prom_get(&p, "edgefl_epsilon", NULL, NULL))); /* no DP: no sample */
    CHECK(isnan(prom_get(&p, "edgefl_test_accuracy", NULL, NULL)));
    CHECK(prom_get(&p, "edgefl_info", "phase", "starting") == 1);

    /* a status: strings that need escaping, one invalid UTF-8 byte */
    const char *job = "fedavg \"cnn\" \\ 100 clients\nline 2 \xc3\xa9 \xff end";
    const char *job_shown = "fedavg \"cnn\" \\ 100 clients\nline 2 \xc3\xa9 \xef\xbf\xbd end";
    ef_dashboard_status st = ef_dashboard_status_empty();
    st.job = job;
    st.phase = "secagg: unmasking";
    st.round = 3;
    st.rounds = 10;
    st.clients_online = 97;
    st.clients_known = 120;
    st.participants = 13;
    st.updates_received = 31;
    st.updates_rejected = 2;
    st.bytes_up = 123456789012ull;
    st.bytes_down = 9876543210ull;
    st.epsilon = 1.25;
    st.delta = 1e-5;
    st.uptime_s = 100.0;
    CHECK_OK(ef_dashboard_set_status(d, &st));
    for (uint32_t r = 1; r <= 3; r++) {
        ef_round_record rec = make_record(r);
        if (r == 2) snprintf(rec.note, sizeof rec.note, "secagg: \"recovered\" 2 dropouts");
        CHECK_OK(ef_dashboard_add_round(d, &rec));
    }

    j = get_json(port, "/api/state");
    CHECK(j != NULL);
    if (j) {
        const cJSON *js = jget(j, "status", "job");
        CHECK(cJSON_IsString(js) && !strcmp(js->valuestring, job_shown));
        CHECK(!strcmp(cJSON_GetStringValue(jget(j, "status", "phase")), "secagg: unmasking"));
        CHECK(jnum(j, "status.round") == 3 && jnum(j, "status.rounds") == 10);
        CHECK(jnum(j, "status.clients_online") == 97 && jnum(j, "status.clients_known") == 120);
        CHECK(jnum(j, "status.participants") == 13);
        CHECK(jnum(j, "status.updates_received") == 31 && jnum(j, "status.updates_rejected") == 2);
        CHECK(jnum(j, "status.bytes_up") == 123456789012.0 && jnum(j, "status.bytes_down") == 9876543210.0);
        CHECK(jnum(j, "status.epsilon") == 1.25 && jnum(j, "status.delta") == 1e-5);
        /* the given uptime, advanced by the dashboard's clock */
        CHECK(jnum(j, "status.uptime_s") >= 100.0 && jnum(j, "status.uptime_s") < 160.0);
        CHECK(jnum(j, "history.kept") == 3 && jnum(j, "history.first_round") == 1 &&
              jnum(j, "history.last_round") == 3 && jnum(j, "history.dropped") == 0);
        const cJSON *recs = jget(j, "records", NULL);
        CHECK(cJSON_GetArraySize(recs) == 3);
        /* each record as the JSON lines writer of metrics.h spells it */
        for (int i = 0; i < cJSON_GetArraySize(recs); i++) {
            const cJSON *got = cJSON_GetArrayItem(recs, i);
            ef_round_record rec = make_record((uint32_t)i + 1);
            if (i == 1) snprintf(rec.note, sizeof rec.note, "secagg: \"recovered\" 2 dropouts");
            char *line = NULL;
            size_t len = 0;
            FILE *f = open_memstream(&line, &len);
            CHECK_OK(ef_round_record_write_json(f, &rec, 1));
            fclose(f);
            cJSON *want = cJSON_Parse(line);
            free(line);
            CHECK(want != NULL);
            if (!want) continue;
            CHECK_MSG(cJSON_GetArraySize(got) == cJSON_GetArraySize(want), "round %d: %d keys, want %d",
                      i + 1, cJSON_GetArraySize(got), cJSON_GetArraySize(want));
            for (const cJSON *w = want->child; w; w = w->next) {
                const cJSON *g = cJSON_GetObjectItemCaseSensitive(got, w->string);
                CHECK_MSG(g && cJSON_Compare(g, w, 1), "round %d: field %s differs", i + 1, w->string);
            }
            cJSON_Delete(want);
        }
        /* round 3 was not evaluated: its accuracy is left out, not null */
        CHECK(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(recs, 2), "test_accuracy") == NULL);
        cJSON_Delete(j);
    }

    CHECK(get_metrics(port, &p));
    CHECK(prom_get(&p, "edgefl_round", NULL, NULL) == 3);
    CHECK(prom_get(&p, "edgefl_rounds_planned", NULL, NULL) == 10);
    CHECK(prom_get(&p, "edgefl_rounds_finished_total", NULL, NULL) == 3);
    CHECK(prom_get(&p, "edgefl_clients_online", NULL, NULL) == 97);
    CHECK(prom_get(&p, "edgefl_clients_known", NULL, NULL) == 120);
    CHECK(prom_get(&p, "edgefl_participants", NULL, NULL) == 13);
    CHECK(prom_get(&p, "edgefl_updates_received_total", NULL, NULL) == 31);
    CHECK(prom_get(&p, "edgefl_updates_rejected_total", NULL, NULL) == 2);
    CHECK(prom_get(&p, "edgefl_bytes_up_total", NULL, NULL) == 123456789012.0);
    CHECK(prom_get(&p, "edgefl_bytes_down_total", NULL, NULL) == 9876543210.0);
    CHECK(prom_get(&p, "edgefl_epsilon", NULL, NULL) == 1.25);
    CHECK(prom_get(&p, "edgefl_delta", NULL, NULL) == 1e-5);
    CHECK(prom_get(&p, "edgefl_uptime_seconds", NULL, NULL) >= 100.0);
    CHECK(prom_get(&p, "edgefl_last_round", NULL, NULL) == 3);
    CHECK(prom_get(&p, "edgefl_last_round_clients", "outcome", "selected") == 13);
    CHECK(prom_get(&p, "edgefl_last_round_clients", "outcome", "completed") == 10);
    CHECK(prom_get(&p, "edgefl_last_round_clients", "outcome", "late") == 1);
    CHECK(prom_get(&p, "edgefl_last_round_clients", "outcome", "dropped") == 2);
    CHECK(prom_get(&p, "edgefl_last_round_clients", "outcome", "rejected") == 1);
    CHECK(prom_get(&p, "edgefl_round_duration_seconds", NULL, NULL) == 4.5);
    CHECK(prom_get(&p, "edgefl_train_loss", NULL, NULL) == 2.0 / 3);
    /* round 3 has no evaluation: the gauges keep round 2's */
    CHECK(prom_get(&p, "edgefl_test_accuracy", NULL, NULL) == 0.5 + 0.01 * 2);
    CHECK(prom_get(&p, "edgefl_test_loss", NULL, NULL) == 1.0 / 2);
    CHECK(isnan(prom_get(&p, "edgefl_fed_accuracy", NULL, NULL)));
    const char *lj = prom_label(&p, "edgefl_info", "job");
    CHECK_MSG(lj && !strcmp(lj, job_shown), "job label '%s'", lj ? lj : "(none)");
    CHECK(prom_get(&p, "edgefl_info", "phase", "secagg: unmasking") == 1);

    /* ?since */
    j = get_json(port, "/api/state?since=2");
    CHECK(j && cJSON_GetArraySize(jget(j, "records", NULL)) == 2 && jnum(j, "since") == 2 &&
          jnum(cJSON_GetArrayItem(jget(j, "records", NULL), 0), "round") == 2);
    cJSON_Delete(j);
    j = get_json(port, "/api/state?since=4");
    CHECK(j && cJSON_GetArraySize(jget(j, "records", NULL)) == 0 && jnum(j, "history.kept") == 3);
    cJSON_Delete(j);
    j = get_json(port, "/api/state?since=0&unknown=1");
    CHECK(j && cJSON_GetArraySize(jget(j, "records", NULL)) == 3);
    cJSON_Delete(j);
    static const char *bad_since[] = {"/api/state?since=x", "/api/state?since=-1", "/api/state?since=",
                                      "/api/state?since=4294967296", "/api/state?since=1%200"};
    for (size_t i = 0; i < sizeof bad_since / sizeof *bad_since; i++) {
        resp r;
        http(port, "GET", bad_since[i], &r);
        CHECK_MSG(r.status == 400, "%s: %d", bad_since[i], r.status);
        CHECK(r.body && strstr(r.body, "since"));
        resp_free(&r);
    }

    /* records: the newest round may be replaced, older ones are refused */
    double seq0;
    j = get_json(port, "/api/state?since=3");
    seq0 = jnum(j, "seq");
    cJSON_Delete(j);
    ef_round_record rec = make_record(2);
    CHECK(ef_dashboard_add_round(d, &rec) == EF_ERR_INVALID);
    CHECK(strstr(ef_last_error(), "older") != NULL);
    rec = make_record(0);
    CHECK(ef_dashboard_add_round(d, &rec) == EF_ERR_INVALID);
    CHECK(ef_dashboard_add_round(d, NULL) == EF_ERR_INVALID && ef_dashboard_add_round(NULL, &rec) == EF_ERR_INVALID);
    CHECK(ef_dashboard_set_status(d, NULL) == EF_ERR_INVALID && ef_dashboard_set_status(NULL, &st) == EF_ERR_INVALID);
    char *long_job = malloc(EF_DASHBOARD_MAX_TEXT + 2);
    memset(long_job, 'x', EF_DASHBOARD_MAX_TEXT + 1);
    long_job[EF_DASHBOARD_MAX_TEXT + 1] = '\0';
    ef_dashboard_status st2 = st;
    st2.job = long_job;
    st2.round = 99;
    CHECK(ef_dashboard_set_status(d, &st2) == EF_ERR_RANGE);
    st2.job = NULL;
    st2.phase = long_job;
    CHECK(ef_dashboard_set_status(d, &st2) == EF_ERR_RANGE);
    CHECK(strstr(ef_last_error(), "phase") != NULL);
    long_job[EF_DASHBOARD_MAX_TEXT] = '\0'; /* exactly the limit is fine, later */
    j = get_json(port, "/api/state?since=3");
    CHECK(j && jnum(j, "seq") == seq0 && jnum(j, "status.round") == 3); /* nothing changed */
    cJSON_Delete(j);
    rec = make_record(3);
    rec.test_accuracy = 0.75;
    CHECK_OK(ef_dashboard_add_round(d, &rec));
    j = get_json(port, "/api/state");
    CHECK(j && cJSON_GetArraySize(jget(j, "records", NULL)) == 3 &&
          jnum(cJSON_GetArrayItem(jget(j, "records", NULL), 2), "test_accuracy") == 0.75 &&
          jnum(j, "seq") == seq0 + 1);
    cJSON_Delete(j);
    st2.phase = long_job;
    st2.job = NULL; /* NULL strings show as "" */
    CHECK_OK(ef_dashboard_set_status(d, &st2));
    j = get_json(port, "/api/state?since=9");
    CHECK(j && !strcmp(cJSON_GetStringValue(jget(j, "status", "job")), "") &&
          strlen(cJSON_GetStringValue(jget(j, "status", "phase"))) == EF_DASHBOARD_MAX_TEXT);
    cJSON_Delete(j);
    free(long_job);
    /* NaN uptime: the dashboard's own */
    st2 = ef_dashboard_status_empty();
    CHECK_OK(ef_dashboard_set_status(d, &st2));
    j = get_json(port, "/api/state?since=9");
    CHECK(j && jnum(j, "status.uptime_s") >= 0 && jnum(j, "status.uptime_s") < 100);
    cJSON_Delete(j);

    ef_dashboard_stop(d);
}

static void test_protocol(void) {
    ef_dashboard *d = NULL;
    CHECK_OK(ef_dashboard_start(&d, "127.0.0.1:0"));
    if (!d) return;
    uint16_t port = ef_dashboard_port(d);
    resp r;

    static const char *missing[] = {"/nope", "/api/state/", "/metrics/x", "/index.html", "/api",
                                    "//", "/%2e%2e/etc/passwd"};
    for (size_t i = 0; i < sizeof missing / sizeof *missing; i++) {
        http(port, "GET", missing[i], &r);
        CHECK_MSG(r.status == 404, "%s: %d", missing[i], r.status);
        resp_free(&r);
    }
    static const char *methods[] = {"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"};
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
        http(port, methods[i], i % 2 ? "/metrics" : "/", &r);
        CHECK_MSG(r.status == 405, "%s: %d", methods[i], r.status);
        CHECK(header_is(&r, "Allow", "GET, HEAD"));
        resp_free(&r);
    }
    /* a POST with a body it will not read */
    static const char post[] = "POST /api/state HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                               "Connection: close\r\n\r\nhello";
    http_raw(port, post, sizeof post - 1, &r);
    CHECK(r.status == 405);
    resp_free(&r);
    http(port, "HEAD", "/api/state", &r);
    CHECK(r.status == 200 && r.body_len == 0);
    resp_free(&r);
    http(port, "HEAD", "/metrics", &r);
    CHECK(r.status == 200 && r.body_len == 0);
    resp_free(&r);

    /* keep-alive: two requests on one connection */
    int fd = connect_port(AF_INET, port);
    CHECK(fd >= 0);
    if (fd >= 0) {
        static const char two[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        http_raw_fd(fd, two, sizeof two - 1, &r);
        CHECK_MSG(r.status == 200 && r.body && strstr(r.body, "HTTP/1.1 404") != NULL,
                  "pipelined second request not answered: %d", r.status);
        resp_free(&r);
        close(fd);
    }

    /* malformed and hostile requests: an error or a closed connection, and
     * the server keeps serving */
    char *big = malloc(200000);
    int n = snprintf(big, 200000, "GET /");
    memset(big + n, 'a', 150000);
    static const char tail[] = " HTTP/1.1\r\nHost: x\r\n\r\n";
    memcpy(big + n + 150000, tail, sizeof tail);
    http_raw(port, big, (size_t)n + 150000 + sizeof tail - 1, &r);
    CHECK_MSG(r.status == 0 || r.status == 414 || r.status == 431 || r.status == 400, "long URL: %d", r.status);
    resp_free(&r);
    n = snprintf(big, 200000, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(big + n, 'b', 150000);
    memcpy(big + n + 150000, "\r\n\r\n", 5);
    http_raw(port, big, (size_t)n + 150004, &r);
    CHECK_MSG(r.status == 0 || r.status == 431 || r.status == 413 || r.status == 400, "big header: %d", r.status);
    resp_free(&r);
    free(big);
    /* refused with an error status or a closed connection */
    static const char *garbage[] = {"\x01\x02\x03 garbage\r\n\r\n", "GET\r\n\r\n", "GET / HTTP/9.9\r\n\r\n",
                                    "GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                                    "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"};
    for (size_t i = 0; i < sizeof garbage / sizeof *garbage; i++) {
        http_raw(port, garbage[i], strlen(garbage[i]), &r);
        CHECK_MSG(r.status == 0 || (r.status >= 400 && r.status < 600), "garbage %zu: %d", i, r.status);
        resp_free(&r);
    }
    /* tolerated: HTTP/1.0, a missing Host, a GET with a body (ignored) */
    static const char *odd[] = {"GET /metrics HTTP/1.0\r\n\r\n", "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n",
                                "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"};
    for (size_t i = 0; i < sizeof odd / sizeof *odd; i++) {
        http_raw(port, odd[i], strlen(odd[i]), &r);
        CHECK_MSG(r.status == 200 && r.body && strstr(r.body, "edgefl_round "), "odd %zu: %d", i, r.status);
        resp_free(&r);
    }
    /* idle connections that send nothing do not block others */
    int idle[40];
    for (int i = 0; i < 40; i++) idle[i] = connect_port(AF_INET, port);
    double t0 = ef_now();
    http(port, "GET", "/metrics", &r);
    CHECK(r.status == 200);
    CHECK_MSG(ef_now() - t0 < 2.0, "a GET took %.2f s beside idle connections", ef_now() - t0);
    resp_free(&r);
    /* a client that sends half a request and vanishes */
    for (int i = 0; i < 40; i++)
        if (idle[i] >= 0) {
            if (i % 2) send(idle[i], "GET /api/st", 11, MSG_NOSIGNAL);
            close(idle[i]);
        }
    /* a client that asks for a big answer and does not read it */
    for (uint32_t k = 1; k <= 3000; k++) {
        ef_round_record rec = make_record(k);
        CHECK_OK(ef_dashboard_add_round(d, &rec));
    }
    fd = connect_port(AF_INET, port);
    if (fd >= 0) {
        static const char req[] = "GET /api/state HTTP/1.1\r\nHost: x\r\n\r\n";
        CHECK(send(fd, req, sizeof req - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof req - 1));
        http(port, "GET", "/metrics", &r);
        CHECK(r.status == 200);
        resp_free(&r);
        close(fd);
    }
    http(port, "GET", "/", &r);
    CHECK(r.status == 200);
    resp_free(&r);
    ef_dashboard_stop(d);
}

/* ---- concurrency ------------------------------------------------------------------ */

#define WRITER_ROUNDS 2500u

typedef struct shared {
    ef_dashboard *d;
    uint16_t port;
    atomic_int writer_done;
    int fetches, failures;
    pthread_mutex_t mu;
} shared;

/* Status and records whose fields all follow from the round, so a reader can
 * tell a torn snapshot. */
static void *writer(void *arg) {
    shared *sh = arg;
    int failures = 0;
    for (uint32_t i = 1; i <= WRITER_ROUNDS; i++) {
        ef_dashboard_status st = ef_dashboard_status_empty();
        char job[64];
        snprintf(job, sizeof job, "job at round %u", (unsigned)i);
        st.job = job;
        st.phase = i % 2 ? "training" : "aggregating";
        st.round = i;
        st.rounds = WRITER_ROUNDS;
        st.updates_received = 10ull * i;
        st.bytes_up = 100ull * i;
        st.bytes_down = 1000ull * i;
        st.participants = i % 50;
        st.epsilon = 0.5 * i;
        if (ef_dashboard_set_status(sh->d, &st) != EF_OK) failures++;
        ef_round_record rec = ef_round_record_empty(i);
        rec.completed = i % 97;
        rec.bytes_up = 3ull * i;
        rec.test_accuracy = 1.0 / i;
        if (ef_dashboard_add_round(sh->d, &rec) != EF_OK) failures++;
        if (i % 4 == 0) { /* replace the newest, as a late evaluation would */
            rec.test_loss = 2.0 * i;
            if (ef_dashboard_add_round(sh->d, &rec) != EF_OK) failures++;
        }
        if (i % 8 == 0) usleep(2000); /* about a second in all: many fetches interleave */
    }
    pthread_mutex_lock(&sh->mu);
    sh->failures += failures;
    pthread_mutex_unlock(&sh->mu);
    atomic_store(&sh->writer_done, 1);
    return NULL;
}

static void *reader(void *arg) {
    shared *sh = arg;
    int local_fetch = 0, bad = 0;
    uint32_t since = 0;
    while (!atomic_load(&sh->writer_done) || local_fetch < 4) {
        char path[64];
        snprintf(path, sizeof path, "/api/state?since=%u", (unsigned)(since > 5 ? since - 5 : 0));
        cJSON *j = get_json(sh->port, path);
        if (!j) {
            bad++;
            break;
        }
        double round = jnum(j, "status.round");
        if (round > 0) {
            char job[64];
            snprintf(job, sizeof job, "job at round %.0f", round);
            bad += jnum(j, "status.updates_received") != 10 * round;
            bad += jnum(j, "status.bytes_up") != 100 * round;
            bad += jnum(j, "status.bytes_down") != 1000 * round;
            bad += jnum(j, "status.epsilon") != 0.5 * round;
            bad += strcmp(cJSON_GetStringValue(jget(j, "status", "job")), job) != 0;
        }
        double prev = 0;
        const cJSON *recs = jget(j, "records", NULL);
        for (const cJSON *r = recs ? recs->child : NULL; r; r = r->next) {
            double k = jnum(r, "round");
            bad += !(k > prev);
            bad += jnum(r, "completed") != fmod(k, 97) || jnum(r, "bytes_up") != 3 * k ||
                   jnum(r, "test_accuracy") != 1.0 / k;
            const cJSON *tl = cJSON_GetObjectItemCaseSensitive(r, "test_loss");
            bad += tl && (fmod(k, 4) != 0 || tl->valuedouble != 2 * k);
            prev = k;
            since = (uint32_t)k;
        }
        cJSON_Delete(j);
        prom p;
        if (!get_metrics(sh->port, &p)) bad++;
        else {
            double rd = prom_get(&p, "edgefl_round", NULL, NULL);
            if (rd > 0) bad += prom_get(&p, "edgefl_updates_received_total", NULL, NULL) != 10 * rd;
        }
        local_fetch++;
    }
    pthread_mutex_lock(&sh->mu);
    sh->fetches += local_fetch;
    sh->failures += bad;
    pthread_mutex_unlock(&sh->mu);
    return NULL;
}

static void test_concurrency(void) {
    shared sh;
    memset(&sh, 0, sizeof sh);
    pthread_mutex_init(&sh.mu, NULL);
    CHECK_OK(ef_dashboard_start(&sh.d, "127.0.0.1:0"));
    if (!sh.d) return;
    sh.port = ef_dashboard_port(sh.d);
    pthread_t w, r[3];
    for (int i = 0; i < 3; i++) pthread_create(&r[i], NULL, reader, &sh);
    pthread_create(&w, NULL, writer, &sh);
    pthread_join(w, NULL);
    for (int i = 0; i < 3; i++) pthread_join(r[i], NULL);
    CHECK_MSG(sh.failures == 0, "%d inconsistent or failed fetches", sh.failures);
    CHECK(sh.fetches >= 12);
    printf("concurrency: %d fetches of /api/state and /metrics during %u rounds of updates\n", sh.fetches,
           WRITER_ROUNDS);
    cJSON *j = get_json(sh.port, "/api/state");
    CHECK(j && cJSON_GetArraySize(jget(j, "records", NULL)) == (int)WRITER_ROUNDS);
    cJSON_Delete(j);
    ef_dashboard_stop(sh.d);
    pthread_mutex_destroy(&sh.mu);
}

/* ---- the record cap ------------------------------------------------------------------ */

static void test_cap(void) {
    ef_dashboard *d = NULL;
    CHECK_OK(ef_dashboard_start(&d, "127.0.0.1:0"));
    if (!d) return;
    uint16_t port = ef_dashboard_port(d);
    const uint32_t extra = 7, total = EF_DASHBOARD_MAX_RECORDS + extra;
    for (uint32_t k = 1; k <= total; k++) {
        ef_round_record rec = ef_round_record_empty(k);
        rec.completed = k % 1000;
        if (ef_dashboard_add_round(d, &rec) != EF_OK) {
            CHECK_OK(ef_dashboard_add_round(d, &rec));
            break;
        }
    }
    cJSON *j = get_json(port, "/api/state?since=100000");
    CHECK(j != NULL);
    if (j) {
        CHECK(jnum(j, "history.kept") == EF_DASHBOARD_MAX_RECORDS);
        CHECK(jnum(j, "history.dropped") == extra);
        CHECK(jnum(j, "history.first_round") == extra + 1 && jnum(j, "history.last_round") == total);
        const cJSON *recs = jget(j, "records", NULL);
        CHECK(cJSON_GetArraySize(recs) == (int)(total - 100000 + 1));
        CHECK(jnum(cJSON_GetArrayItem(recs, 0), "round") == 100000);
        cJSON_Delete(j);
    }
    /* a round before the oldest kept one is refused like any older round */
    ef_round_record rec = ef_round_record_empty(3);
    CHECK(ef_dashboard_add_round(d, &rec) == EF_ERR_INVALID);
    /* the whole history in one streamed answer */
    resp r;
    http(port, "GET", "/api/state", &r);
    CHECK(r.status == 200 && r.chunked);
    j = r.status == 200 ? cJSON_ParseWithLength(r.body, r.body_len) : NULL;
    CHECK(j != NULL);
    if (j) {
        const cJSON *recs = jget(j, "records", NULL);
        CHECK(cJSON_GetArraySize(recs) == (int)EF_DASHBOARD_MAX_RECORDS);
        uint32_t want = extra + 1;
        int wrong = 0;
        for (const cJSON *x = recs ? recs->child : NULL; x; x = x->next, want++)
            wrong += jnum(x, "round") != want || jnum(x, "completed") != want % 1000;
        CHECK_MSG(wrong == 0, "%d records out of order or wrong", wrong);
        cJSON_Delete(j);
    }
    printf("cap: %zu bytes of JSON for %u records\n", r.body_len, EF_DASHBOARD_MAX_RECORDS);
    resp_free(&r);
    prom p;
    CHECK(get_metrics(port, &p));
    CHECK(prom_get(&p, "edgefl_rounds_finished_total", NULL, NULL) == total);
    ef_dashboard_stop(d);
}

/* ---- out of memory and resources ---------------------------------------------------- */

static long g_alloc_left;
static void *oom_malloc(void *u, size_t n) {
    (void)u;
    return g_alloc_left-- > 0 ? malloc(n) : NULL;
}
static void *oom_realloc(void *u, void *p, size_t n) {
    (void)u;
    return g_alloc_left-- > 0 ? realloc(p, n) : NULL;
}
static void oom_free(void *u, void *p) {
    (void)u;
    free(p);
}

static void test_oom(void) {
    ef_allocator a = {oom_malloc, oom_realloc, oom_free, NULL};
    int fds = count_fds();
    int started = 0;
    for (long k = 0; k < 40 && !started; k++) {
        g_alloc_left = k;
        ef_set_allocator(&a);
        ef_dashboard *d = (ef_dashboard *)&d;
        ef_status st = ef_dashboard_start(&d, "127.0.0.1:0");
        ef_set_allocator(NULL);
        if (st == EF_OK) {
            started = 1;
            ef_dashboard_stop(d);
        } else {
            CHECK_MSG(st == EF_ERR_NOMEM && d == NULL, "allocation %ld: %s", k, ef_strerror(st));
        }
    }
    CHECK(started);
    CHECK_MSG(count_fds() == fds, "%d descriptors before, %d after", fds, count_fds());

    /* growth fails: the records stay as they were */
    ef_dashboard *d = NULL;
    CHECK_OK(ef_dashboard_start(&d, "127.0.0.1:0"));
    if (!d) return;
    ef_round_record rec;
    for (uint32_t k = 1; k <= 64; k++) {
        rec = make_record(k);
        CHECK_OK(ef_dashboard_add_round(d, &rec));
    }
    g_alloc_left = 0;
    ef_set_allocator(&a);
    rec = make_record(65);
    ef_status st = ef_dashboard_add_round(d, &rec);
    ef_dashboard_status s = ef_dashboard_status_empty();
    s.job = "j";
    ef_status st2 = ef_dashboard_set_status(d, &s);
    ef_set_allocator(NULL);
    CHECK(st == EF_ERR_NOMEM && st2 == EF_ERR_NOMEM);
    cJSON *j = get_json(ef_dashboard_port(d), "/api/state");
    CHECK(j && jnum(j, "history.kept") == 64 && jnum(j, "history.last_round") == 64 &&
          !strcmp(cJSON_GetStringValue(jget(j, "status", "phase")), "starting"));
    cJSON_Delete(j);
    CHECK_OK(ef_dashboard_add_round(d, &rec)); /* and recover */
    ef_dashboard_stop(d);
}

static void test_stop_closes(void) {
    int fds = count_fds();
    ef_dashboard *d = NULL;
    CHECK_OK(ef_dashboard_start(&d, "127.0.0.1:0"));
    if (!d) return;
    uint16_t port = ef_dashboard_port(d);
    resp r;
    http(port, "GET", "/", &r);
    CHECK(r.status == 200);
    resp_free(&r);
    int open_conn = connect_port(AF_INET, port); /* stop must not wait for it */
    double t0 = ef_now();
    ef_dashboard_stop(d);
    CHECK_MSG(ef_now() - t0 < 3.0, "stop took %.2f s", ef_now() - t0);
    int fd = connect_port(AF_INET, port);
    CHECK_MSG(fd < 0, "port %u still accepts after stop", (unsigned)port);
    if (fd >= 0) close(fd);
    if (open_conn >= 0) close(open_conn);
    CHECK_MSG(count_fds() == fds, "%d descriptors before, %d after", fds, count_fds());
    /* the port is free again at once */
    char hp[32];
    snprintf(hp, sizeof hp, "127.0.0.1:%u", (unsigned)port);
    CHECK_OK(ef_dashboard_start(&d, hp));
    ef_dashboard_stop(d);
}

int main(void) {
    if (sodium_init() < 0) return 1;
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {{"addresses", test_addresses}, {"state and metrics", test_state_and_metrics},
                 {"protocol", test_protocol},   {"concurrency", test_concurrency},
                 {"record cap", test_cap},      {"out of memory", test_oom},
                 {"stop", test_stop_closes}};
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
        double t0 = ef_now();
        tests[i].fn();
        printf("%-18s %.2f s\n", tests[i].name, ef_now() - t0);
    }
    return tu_finish("test_dashboard");
}
