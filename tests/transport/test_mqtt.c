/*
 * The MQTT connection against a real mosquitto broker started on a free
 * loopback port (skipped, exit 77, when the mosquitto binary is missing):
 * publish/subscribe round trips, chunking and reassembly of a multi-megabyte
 * payload, retained chunked messages and the removal of their leftovers,
 * corrupted and inconsistent chunks (sent by a raw libmosquitto client)
 * refused, incomplete messages timed out, and reconnects: the broker is
 * stopped and restarted on the same port with persistence, a live
 * connection reconnects by itself, re-subscribes and receives what is
 * published after the restart and what was published while the broker was
 * down, and a persistent session receives the QoS 1 messages queued for it
 * while its client was away.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <mosquitto.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "edgefl/edgefl.h"
#include "edgefl/transport.h"
#include "test_util.h"

static char g_dir[256];
static char g_url[64];
static int g_port;
static pid_t g_broker = -1;

static const char *find_mosquitto(void) {
    static const char *paths[] = {"/usr/sbin/mosquitto", "/usr/bin/mosquitto",
                                  "/usr/local/sbin/mosquitto", "/usr/local/bin/mosquitto"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (access(paths[i], X_OK) == 0) return paths[i];
    return NULL;
}

static int free_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(s, (struct sockaddr *)&a, &len) != 0) {
        if (s >= 0) close(s);
        return -1;
    }
    close(s);
    return ntohs(a.sin_port);
}

static int port_open(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0;
    if (s >= 0) close(s);
    return ok;
}

static int start_broker(const char *bin) {
    char conf[300];
    snprintf(conf, sizeof conf, "%s/mosquitto.conf", g_dir);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        char log[300];
        snprintf(log, sizeof log, "%s/broker.log", g_dir);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(bin, bin, "-c", conf, (char *)NULL);
        _exit(127);
    }
    g_broker = pid;
    for (int i = 0; i < 100; i++) {
        if (port_open(g_port)) return 0;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static void stop_broker(void) {
    if (g_broker <= 0) return;
    kill(g_broker, SIGTERM); /* mosquitto saves its persistence file on SIGTERM */
    int status;
    waitpid(g_broker, &status, 0);
    g_broker = -1;
}

static void cleanup(void) {
    stop_broker();
    if (g_dir[0]) tu_rmtree(g_dir);
}

static ef_mqtt *connect_client(const char *id, const char *sub, size_t max_packet) {
    ef_mqtt_config c = ef_mqtt_defaults();
    c.url = g_url;
    c.client_id = id;
    c.keepalive_s = 5;
    c.reconnect_min_s = 0.1;
    c.reconnect_max_s = 0.5;
    c.chunk_timeout_s = 1.0;
    if (max_packet) c.max_packet = max_packet;
    ef_mqtt *m = NULL;
    if (ef_mqtt_new(&m, &c) != EF_OK) {
        fprintf(stderr, "ef_mqtt_new: %s\n", ef_last_error());
        return NULL;
    }
    if (sub) ef_mqtt_subscribe(m, sub);
    return m;
}

/* Next event of kind `ev` within timeout_s (other events are skipped). */
static int next_event(ef_mqtt *m, ef_mqtt_event ev, double timeout_s, ef_mqtt_msg *out) {
    double end = ef_now() + timeout_s;
    for (;;) {
        double left = end - ef_now();
        if (left <= 0) return 0;
        if (ef_mqtt_next(m, left, out) != EF_OK) return 0;
        if (out->event == ev) return 1;
        ef_mqtt_msg_clear(out);
    }
}

/* Waits for a CONNECTED event of connection >= `conn`. */
static int wait_up(ef_mqtt *m, uint64_t conn, int *session_present) {
    ef_mqtt_msg msg;
    while (next_event(m, EF_MQTT_CONNECTED, 15, &msg)) {
        uint64_t c = msg.connection;
        if (session_present) *session_present = msg.session_present;
        ef_mqtt_msg_clear(&msg);
        if (c >= conn) return 1;
    }
    return 0;
}

static int expect_message(ef_mqtt *m, const char *topic, const void *data, size_t len,
                          double timeout_s) {
    ef_mqtt_msg msg;
    if (!next_event(m, EF_MQTT_MESSAGE, timeout_s, &msg)) {
        fprintf(stderr, "no message on %s within %.0f s\n", topic, timeout_s);
        return 0;
    }
    int ok = strcmp(msg.topic, topic) == 0 && msg.buf->len == len &&
             memcmp(msg.buf->data, data, len) == 0;
    if (!ok)
        fprintf(stderr, "got %zu bytes on %s, expected %zu on %s\n", msg.buf->len, msg.topic,
                len, topic);
    ef_mqtt_msg_clear(&msg);
    return ok;
}

/* Nothing but CONNECTED events for `s` seconds. */
static int quiet_for(ef_mqtt *m, double s) {
    ef_mqtt_msg msg;
    if (next_event(m, EF_MQTT_MESSAGE, s, &msg)) {
        fprintf(stderr, "unexpected message of %zu bytes on %s\n", msg.buf->len, msg.topic);
        ef_mqtt_msg_clear(&msg);
        return 0;
    }
    return 1;
}

/* ---- raw chunks through a plain libmosquitto client ------------------------ */

static void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void wr64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Builds chunk `index` of a message (data, total) cut by `stride` into out
 * (returns its length); the caller may then corrupt it. */
static size_t make_chunk(uint8_t *out, uint64_t id, const uint8_t *data, uint64_t total,
                         uint32_t index, uint32_t count, uint32_t stride, uint32_t msg_crc) {
    uint64_t off = (uint64_t)index * stride;
    size_t n = index + 1 < count ? stride : (size_t)(total - off);
    memcpy(out, "EFC1", 4);
    out[4] = 1;
    out[5] = out[6] = out[7] = 0;
    wr64(out + 8, id);
    wr64(out + 16, total);
    wr32(out + 24, index);
    wr32(out + 28, count);
    wr32(out + 32, stride);
    wr32(out + 36, msg_crc);
    memcpy(out + 44, data + off, n);
    uLong c = crc32(0L, Z_NULL, 0);
    c = crc32(c, out, 40);
    c = crc32(c, out + 44, (uInt)n);
    wr32(out + 40, (uint32_t)c);
    return 44 + n;
}

static void reseal(uint8_t *chunk, size_t len) {
    uLong c = crc32(0L, Z_NULL, 0);
    c = crc32(c, chunk, 40);
    c = crc32(c, chunk + 44, (uInt)(len - 44));
    wr32(chunk + 40, (uint32_t)c);
}

static void raw_pub(struct mosquitto *raw, const char *topic, const uint8_t *p, size_t n) {
    int mid;
    CHECK(mosquitto_publish(raw, &mid, topic, (int)n, p, 1, false) == MOSQ_ERR_SUCCESS);
}

static void test_bad_chunks(ef_mqtt *a) {
    struct mosquitto *raw = mosquitto_new("t-raw", true, NULL);
    CHECK(raw != NULL);
    if (!raw) return;
    CHECK(mosquitto_connect(raw, "127.0.0.1", g_port, 10) == MOSQ_ERR_SUCCESS);
    CHECK(mosquitto_loop_start(raw) == MOSQ_ERR_SUCCESS);
    enum { TOTAL = 3000, STRIDE = 1000 };
    uint8_t data[TOTAL], ch[44 + STRIDE];
    for (int i = 0; i < TOTAL; i++) data[i] = (uint8_t)(i * 7 + 3);
    uint32_t good_crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), data, TOTAL);
    ef_mqtt_stats s0, s1;
    ef_mqtt_get_stats(a, &s0);
    size_t n;

    /* 1: a flipped data byte in chunk 1: its checksum fails, the message never completes */
    n = make_chunk(ch, 101, data, TOTAL, 0, 3, STRIDE, good_crc);
    raw_pub(raw, "t/a", ch, n);
    n = make_chunk(ch, 101, data, TOTAL, 1, 3, STRIDE, good_crc);
    ch[500] ^= 0x40;
    raw_pub(raw, "t/a", ch, n);
    n = make_chunk(ch, 101, data, TOTAL, 2, 3, STRIDE, good_crc);
    raw_pub(raw, "t/a", ch, n);
    /* 2: index past count */
    n = make_chunk(ch, 102, data, TOTAL, 1, 3, STRIDE, good_crc);
    wr32(ch + 24, 3);
    reseal(ch, n);
    raw_pub(raw, "t/a", ch, n);
    /* 3: a chunk whose total disagrees with the message's earlier chunks */
    n = make_chunk(ch, 103, data, TOTAL, 0, 3, STRIDE, good_crc);
    raw_pub(raw, "t/a", ch, n);
    n = make_chunk(ch, 103, data, TOTAL, 1, 3, STRIDE, good_crc);
    wr64(ch + 16, TOTAL - 1);
    reseal(ch, n);
    raw_pub(raw, "t/a", ch, n);
    /* 4: every chunk sound but the message checksum wrong */
    for (uint32_t i = 0; i < 3; i++) {
        n = make_chunk(ch, 104, data, TOTAL, i, 3, STRIDE, good_crc ^ 1);
        raw_pub(raw, "t/a", ch, n);
    }
    /* 5: truncated chunk, size not matching its index */
    n = make_chunk(ch, 105, data, TOTAL, 0, 3, STRIDE, good_crc);
    reseal(ch, n - 10);
    raw_pub(raw, "t/a", ch, n - 10);
    /* 6: a valid message arrives whole (chunks out of order, one duplicated) */
    uint32_t order[4] = {2, 0, 0, 1};
    for (int k = 0; k < 4; k++) {
        n = make_chunk(ch, 106, data, TOTAL, order[k], 3, STRIDE, good_crc);
        raw_pub(raw, "t/a", ch, n);
    }
    CHECK(expect_message(a, "t/a", data, TOTAL, 10));
    /* the broken ones delivered nothing; the incomplete ones (101, 103) time out */
    CHECK(quiet_for(a, 2.5));
    ef_mqtt_get_stats(a, &s1);
    /* rejected: 101's chunk 1, 102, 103's chunk 1, 104 as a whole, 105 */
    CHECK_MSG(s1.chunks_rejected - s0.chunks_rejected == 5, "rejected %llu",
              (unsigned long long)(s1.chunks_rejected - s0.chunks_rejected));
    CHECK_MSG(s1.partial_dropped - s0.partial_dropped == 2, "dropped %llu",
              (unsigned long long)(s1.partial_dropped - s0.partial_dropped));
    CHECK(s1.messages_in - s0.messages_in == 1);
    mosquitto_disconnect(raw);
    mosquitto_loop_stop(raw, false);
    mosquitto_destroy(raw);
}

int main(void) {
    const char *bin = find_mosquitto();
    if (!bin) {
        printf("test_mqtt: mosquitto not installed, skipped\n");
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_dir, sizeof g_dir, "/tmp/edgefl-test-mqtt-XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    atexit(cleanup);
    g_port = free_port();
    CHECK(g_port > 0);
    snprintf(g_url, sizeof g_url, "mqtt://127.0.0.1:%d", g_port);
    char conf[300];
    snprintf(conf, sizeof conf, "%s/mosquitto.conf", g_dir);
    FILE *f = fopen(conf, "w");
    if (!f) return 1;
    /* `user`: a broker started as root would otherwise switch to the
     * mosquitto user and could not write its persistence file here */
    struct passwd *pw = getpwuid(geteuid());
    fprintf(f, "listener %d 127.0.0.1\nallow_anonymous true\npersistence true\n"
               "persistence_location %s/\nlog_dest stderr\nlog_type error\nlog_type warning\n"
               "user %s\n",
            g_port, g_dir, pw ? pw->pw_name : "root");
    fclose(f);
    if (start_broker(bin) != 0) {
        fprintf(stderr, "test_mqtt: the broker did not start\n");
        return 1;
    }
    if (getenv("EDGEFL_TEST_VERBOSE")) ef_log_set(NULL, NULL, EF_LOG_DEBUG);

    /* bad configurations are refused before anything starts */
    {
        ef_mqtt_config c = ef_mqtt_defaults();
        ef_mqtt *m = NULL;
        c.client_id = "x";
        c.url = "http://127.0.0.1:1";
        CHECK(ef_mqtt_new(&m, &c) == EF_ERR_INVALID && m == NULL);
        c.url = "mqtt://127.0.0.1:99999";
        CHECK(ef_mqtt_new(&m, &c) == EF_ERR_INVALID);
        c.url = "mqtt://:1883";
        CHECK(ef_mqtt_new(&m, &c) == EF_ERR_INVALID);
        c.url = "mqtt://127.0.0.1:1883";
        c.tls_ca = "/nonexistent";
        CHECK(ef_mqtt_new(&m, &c) == EF_ERR_INVALID);
        c.tls_ca = NULL;
        c.client_id = NULL;
        CHECK(ef_mqtt_new(&m, &c) == EF_ERR_INVALID);
    }
    char t[64];
    CHECK(strcmp(ef_mqtt_topic(t, sizeof t, 42, EF_SERVER_ID), "edgefl/42/server") == 0);
    CHECK(strcmp(ef_mqtt_topic(t, sizeof t, 42, EF_BROADCAST_ID), "edgefl/42/broadcast") == 0);
    CHECK(strcmp(ef_mqtt_topic(t, sizeof t, 42, 17), "edgefl/42/client/17") == 0);
    CHECK(strcmp(ef_mqtt_workers_topic(t, sizeof t, 42), "edgefl/42/server/workers") == 0);

    /* small packets so chunking is exercised on modest payloads */
    ef_mqtt *a = connect_client("t-a", "t/a", 64 * 1024);
    ef_mqtt *b = connect_client("t-b", "t/b", 64 * 1024);
    CHECK(a && b);
    if (!a || !b) return tu_finish("test_mqtt");
    int sp = -1;
    CHECK(wait_up(a, 1, &sp));
    CHECK(wait_up(b, 1, NULL));
    CHECK(sp == 0); /* the broker never saw t-a */

    /* round trips both ways */
    CHECK_OK(ef_mqtt_publish(b, "t/a", "hello a", 7, 0));
    CHECK(expect_message(a, "t/a", "hello a", 7, 10));
    CHECK_OK(ef_mqtt_publish(a, "t/b", "hello b", 7, 0));
    CHECK(expect_message(b, "t/b", "hello b", 7, 10));
    CHECK(ef_mqtt_publish(a, "t/+", "x", 1, 0) == EF_ERR_INVALID);
    CHECK(ef_mqtt_publish(a, "t/b", "x", 0, 0) == EF_ERR_INVALID);

    /* 5 MiB through 64 KiB packets */
    size_t big_n = 5u << 20;
    uint8_t *big = malloc(big_n);
    CHECK(big != NULL);
    if (!big) return tu_finish("test_mqtt");
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < big_n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        big[i] = (uint8_t)x;
    }
    ef_mqtt_stats sa0, sa1;
    ef_mqtt_get_stats(a, &sa0);
    double t0 = ef_now();
    CHECK_OK(ef_mqtt_publish(b, "t/a", big, big_n, 0));
    CHECK(expect_message(a, "t/a", big, big_n, 60));
    ef_mqtt_get_stats(a, &sa1);
    CHECK_MSG(sa1.chunks_in - sa0.chunks_in >= big_n / (64 * 1024), "%llu chunks",
              (unsigned long long)(sa1.chunks_in - sa0.chunks_in));
    CHECK(sa1.max_packet == 64 * 1024);
    printf("test_mqtt: 5 MiB in %llu chunks in %.2f s\n",
           (unsigned long long)(sa1.chunks_in - sa0.chunks_in), ef_now() - t0);
    /* a payload that starts like a chunk travels wrapped, so it arrives as sent */
    CHECK_OK(ef_mqtt_publish(b, "t/a", "EFC1 not a chunk", 16, 0));
    CHECK(expect_message(a, "t/a", "EFC1 not a chunk", 16, 10));
    CHECK_OK(ef_mqtt_flush(b, 10));

    /* retained, chunked: a late subscriber gets it whole under the base topic */
    CHECK_OK(ef_mqtt_publish(b, "t/r", big, 1u << 20, 1));
    CHECK_OK(ef_mqtt_flush(b, 10));
    ef_mqtt *c = connect_client("t-c", "t/r/#", 0);
    CHECK(c && wait_up(c, 1, NULL));
    {
        ef_mqtt_msg msg;
        CHECK(next_event(c, EF_MQTT_MESSAGE, 20, &msg));
        CHECK(msg.topic && strcmp(msg.topic, "t/r") == 0 && msg.retained);
        CHECK(msg.buf && msg.buf->len == 1u << 20 && memcmp(msg.buf->data, big, 1u << 20) == 0);
        ef_mqtt_msg_clear(&msg);
    }
    /* replaced by a small retained message: the chunks are deleted */
    CHECK_OK(ef_mqtt_publish(b, "t/r", "small", 5, 1));
    CHECK(expect_message(c, "t/r", "small", 5, 10));
    CHECK_OK(ef_mqtt_flush(b, 10));
    ef_mqtt *d = connect_client("t-d", "t/r/#", 0);
    CHECK(d && wait_up(d, 1, NULL));
    CHECK(expect_message(d, "t/r", "small", 5, 10));
    CHECK(quiet_for(d, 1.5));
    CHECK_OK(ef_mqtt_clear_retained(b, "t/r"));
    ef_mqtt_close(c, 1);
    ef_mqtt_close(d, 1);

    test_bad_chunks(a);

    /* the worker driver refuses a group that is not an MQTT share name,
     * before it subscribes anything */
    {
        ef_worker *w = NULL;
        ef_worker_config wc = {.job = 42, .id = 900, .n_params = 4};
        CHECK_OK(ef_worker_new(&w, &wc));
        const char *bad[] = {"", "a/b", "a+", "#",
                             "an-overlong-group-name-of-sixty-five-characters-xxxxxxxxxxxxxxxxx"};
        for (size_t i = 0; w && i < sizeof bad / sizeof bad[0]; i++) {
            ef_mqtt_worker_opts wo = {.job = 42, .group = bad[i]};
            ef_mqtt_worker_stats ws;
            CHECK_MSG(ef_mqtt_run_worker(a, w, &wo, &ws) == EF_ERR_INVALID, "group '%s'", bad[i]);
            CHECK(strstr(ef_last_error(), "group") != NULL && ws.messages_in == 0);
        }
        ef_worker_free(w);
    }

    /* a persistent session: q subscribes, goes away, messages queue for it */
    ef_mqtt *q = connect_client("t-q", "t/q", 64 * 1024);
    CHECK(q && wait_up(q, 1, NULL));
    ef_mqtt_close(q, 0);
    CHECK_OK(ef_mqtt_publish(b, "t/q", "queued while away", 17, 0));
    CHECK_OK(ef_mqtt_publish(b, "t/q", big, 300000, 0));
    CHECK_OK(ef_mqtt_flush(b, 10));

    /* broker down: a keeps running and reconnects by itself; b's publish
     * while the broker is away goes out after its own reconnect */
    stop_broker();
    CHECK(!port_open(g_port));
    CHECK_OK(ef_mqtt_publish(b, "t/a", "sent during the outage", 22, 0));
    struct timespec ts = {1, 0};
    nanosleep(&ts, NULL);
    CHECK(start_broker(bin) == 0);
    CHECK(wait_up(a, 2, &sp));
    CHECK(sp == 1); /* the broker kept a's session across its restart */
    CHECK(wait_up(b, 2, NULL));
    CHECK(expect_message(a, "t/a", "sent during the outage", 22, 15));
    CHECK_OK(ef_mqtt_publish(b, "t/a", big, 200000, 0));
    CHECK(expect_message(a, "t/a", big, 200000, 15));
    ef_mqtt_stats sa;
    ef_mqtt_get_stats(a, &sa);
    CHECK(sa.connects >= 2);

    /* q comes back: the QoS 1 messages queued for its session arrive */
    q = connect_client("t-q", NULL, 64 * 1024);
    CHECK(q && wait_up(q, 1, &sp));
    CHECK(sp == 1);
    CHECK(expect_message(q, "t/q", "queued while away", 17, 15));
    CHECK(expect_message(q, "t/q", big, 300000, 15));
    ef_mqtt_close(q, 1);

    /* an ended session keeps nothing */
    q = connect_client("t-q", NULL, 0);
    CHECK(q && wait_up(q, 1, &sp));
    CHECK(sp == 0);
    ef_mqtt_close(q, 1);

    CHECK_OK(ef_mqtt_flush(a, 10));
    CHECK_OK(ef_mqtt_flush(b, 10));
    ef_mqtt_close(a, 1);
    ef_mqtt_close(b, 1);
    free(big);
    return tu_finish("test_mqtt");
}
