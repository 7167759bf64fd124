/*
 * The MQTT connection (see include/edgefl/transport.h): libmosquitto driven
 * by a network thread of our own, a queue of received messages and events
 * for the application's thread, and chunking with bounded reassembly.
 *
 * Why our own network thread instead of mosquitto_loop_start: libmosquitto's
 * loop_forever waits whole seconds between attempts with a fixed (quadratic)
 * schedule and no jitter -- a thousand devices reconnect in lockstep after a
 * broker restart -- and it ends the thread for good on errors such as a
 * failed DNS lookup or TLS handshake, which on a device whose network comes
 * and goes are exactly the transient ones. Our thread reconnects with
 * exponential backoff and jitter whatever the error.
 *
 * Why poll() instead of mosquitto_loop: mosquitto_loop waits in select(),
 * whose fd_set cannot hold a descriptor >= FD_SETSIZE (1024), and refuses
 * such a connection (MOSQ_ERR_INVAL) -- a connection holds a socket and
 * libmosquitto's socket pair, so a process could not keep more than about
 * 330 of them (`edgefl loadgen` runs a thousand). Our step polls the
 * socket with mosquitto_socket / mosquitto_want_write and calls
 * mosquitto_loop_read / _write / _misc; an eventfd of ours replaces the
 * socket pair as the wake-up when the application queues a packet.
 *
 * Locking: `mu` guards our state (queue, reassembly, subscriptions, counters).
 * libmosquitto calls our callbacks from the network thread holding its own
 * callback mutex; they take `mu` briefly. The application's thread calls
 * mosquitto_publish / mosquitto_subscribe (thread-safe in libmosquitto with
 * mosquitto_threaded_set) without holding `mu`.
 */
#include <errno.h>
#include <math.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "core/core_internal.h"
#include "edgefl/transport.h"

#define CHUNK_MAGIC "EFC1"
#define CHUNK_VERSION 1
#define CHUNK_FLAG_RETAINED 1u
#define DONE_RING 256
/* Bytes of a PUBLISH packet besides topic and payload: fixed header (5),
 * topic length (2), packet id (2), properties length (4), and a margin. */
#define PUBLISH_OVERHEAD 32
/* "/<index>" after the topic of a retained chunk. */
#define INDEX_SUFFIX 11

typedef struct qitem {
    struct qitem *next;
    ef_mqtt_event event;
    char *topic;
    ef_buf *buf;
    int retained;
    int session_present;
    uint64_t connection;
} qitem;

/* A message being put together from its chunks. */
typedef struct partial {
    struct partial *next;
    char *topic;
    uint64_t msg_id, total;
    uint32_t count, stride, msg_crc, got;
    uint8_t *have;     /* (count) chunk received */
    ef_buf *buf;       /* (total) */
    double last;       /* when the last chunk came */
    int retained;
} partial;

/* What a retained topic holds from us, so leftovers can be deleted. */
typedef struct retained_rec {
    char *topic;
    int plain;         /* a whole message on the topic itself */
    uint32_t chunks;   /* chunks on topic/0 .. topic/chunks-1 */
} retained_rec;

struct ef_mqtt {
    struct mosquitto *mosq;
    ef_mqtt_config cfg; /* strings point at the copies below */
    char *url, *host, *client_id, *username, *password, *tls_ca, *tls_cert, *tls_key;
    char *will_topic, *name;
    uint8_t *will;
    int port, tls;
    pthread_t thread;
    int thread_ok;
    atomic_int stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    qitem *qhead, *qtail;
    size_t qbytes;
    int connected;      /* CONNACK accepted, connection not lost */
    int up;             /* ... and its CONNECTED event queued */
    int closing;
    int disconnected;   /* on_disconnect seen since the last connect */
    uint64_t connection;
    int session_present;
    char **subs;
    size_t n_subs;
    uint64_t outstanding; /* publishes not acknowledged */
    size_t broker_max;    /* from CONNACK; 0: none */
    size_t max_packet;    /* in force */
    partial *partials;
    size_t pending_bytes;
    uint64_t done_ids[DONE_RING];
    size_t done_pos;
    uint64_t id_base, id_next;
    retained_rec *ret;
    size_t n_ret;
    ef_mqtt_stats st;
    double next_sweep;
    int will_dirty;     /* ef_mqtt_set_will: apply before the next connect */
    int wake_fd;        /* eventfd: wakes the network thread out of poll() */
};

/* ---- small helpers ---------------------------------------------------------- */

static void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void wr64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static uint32_t crc_of(uint32_t c, const uint8_t *p, size_t n) {
    /* zlib's crc32 takes uInt lengths */
    while (n > 0) {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = (uint32_t)crc32(c, p, k);
        p += k;
        n -= k;
    }
    return c;
}

static uint32_t crc_init(void) { return (uint32_t)crc32(0L, Z_NULL, 0); }

static char *dup_or_null(const char *s, int *bad) {
    if (!s) return NULL;
    char *d = ef_strdup(s);
    if (!d) *bad = 1;
    return d;
}

static void set_deadline(struct timespec *ts, double timeout_s) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    double whole = floor(timeout_s);
    ts->tv_sec += (time_t)whole;
    ts->tv_nsec += (long)((timeout_s - whole) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void sleep_s(double s) {
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

ef_mqtt_config ef_mqtt_defaults(void) {
    ef_mqtt_config c;
    memset(&c, 0, sizeof c);
    c.keepalive_s = 30;
    c.session_expiry_s = 600;
    c.max_packet = EF_MQTT_DEFAULT_MAX_PACKET;
    c.max_message = (size_t)1 << 30;
    c.max_pending = (size_t)1 << 30;
    c.max_queue = (size_t)2 << 30;
    c.chunk_timeout_s = 120;
    c.reconnect_min_s = 0.5;
    c.reconnect_max_s = 30;
    c.connect_timeout_s = 30;
    c.will_delay_s = UINT32_MAX; /* "the session expiry" */
    return c;
}

const char *ef_mqtt_topic(char *buf, size_t n, uint64_t job, uint32_t to) {
    if (to == EF_SERVER_ID) snprintf(buf, n, "edgefl/%llu/server", (unsigned long long)job);
    else if (to == EF_BROADCAST_ID) snprintf(buf, n, "edgefl/%llu/broadcast", (unsigned long long)job);
    else snprintf(buf, n, "edgefl/%llu/client/%u", (unsigned long long)job, to);
    return buf;
}

/* ---- URL ---------------------------------------------------------------------- */

/* mqtt://HOST[:PORT] or mqtts://HOST[:PORT], HOST possibly [IPv6]. */
static ef_status parse_url(ef_mqtt *m, const char *url) {
    const char *p;
    if (strncmp(url, "mqtt://", 7) == 0) {
        m->tls = 0;
        p = url + 7;
    } else if (strncmp(url, "mqtts://", 8) == 0) {
        m->tls = 1;
        p = url + 8;
    } else {
        return ef__fail(EF_ERR_INVALID, "mqtt: broker URL '%s' must start with mqtt:// or "
                                        "mqtts://", url);
    }
    const char *host = p, *host_end, *port = NULL;
    if (*p == '[') {
        host = p + 1;
        host_end = strchr(host, ']');
        if (!host_end) return ef__fail(EF_ERR_INVALID, "mqtt: unterminated [ in '%s'", url);
        p = host_end + 1;
    } else {
        host_end = p + strcspn(p, ":/");
        p = host_end;
    }
    if (*p == ':') port = p + 1;
    else if (*p && strcmp(p, "/") != 0)
        return ef__fail(EF_ERR_INVALID, "mqtt: unexpected '%s' in broker URL '%s'", p, url);
    if (host_end == host) return ef__fail(EF_ERR_INVALID, "mqtt: no host in '%s'", url);
    m->port = m->tls ? 8883 : 1883;
    if (port) {
        char *end = NULL;
        errno = 0;
        long v = strtol(port, &end, 10);
        if (end == port || errno || v < 1 || v > 65535 || (*end && strcmp(end, "/") != 0))
            return ef__fail(EF_ERR_INVALID, "mqtt: bad port in broker URL '%s'", url);
        m->port = (int)v;
    }
    size_t hl = (size_t)(host_end - host);
    m->host = ef_malloc(hl + 1);
    if (!m->host) return EF_ERR_NOMEM;
    memcpy(m->host, host, hl);
    m->host[hl] = '\0';
    return EF_OK;
}

/* ---- the queue ------------------------------------------------------------------ */

/* Appends an item (mu held). */
static void q_push(ef_mqtt *m, qitem *it) {
    it->next = NULL;
    if (m->qtail) m->qtail->next = it;
    else m->qhead = it;
    m->qtail = it;
    if (it->buf) m->qbytes += it->buf->len;
    pthread_cond_broadcast(&m->cv);
}

static void q_free(qitem *it) {
    ef_free(it->topic);
    ef_buf_unref(it->buf);
    ef_free(it);
}

/* Queues a CONNECTED event (mu held). */
static void emit_up(ef_mqtt *m) {
    if (m->up) return;
    qitem *it = ef_calloc(1, sizeof *it);
    m->up = 1;
    if (!it) {
        ef_log(EF_LOG_ERROR, "mqtt %s: out of memory queueing a connection event", m->name);
        return;
    }
    it->event = EF_MQTT_CONNECTED;
    it->session_present = m->session_present;
    it->connection = m->connection;
    q_push(m, it);
}

/* Hands a complete message to the reader, waiting while the queue is over
 * its bound (mu held; takes the buffer reference and the topic). */
static void deliver(ef_mqtt *m, char *topic, ef_buf *buf, int retained) {
    while (m->qbytes > 0 && m->qbytes + buf->len > m->cfg.max_queue && !atomic_load(&m->stop)) {
        struct timespec ts;
        set_deadline(&ts, 0.2);
        pthread_cond_timedwait(&m->cv, &m->mu, &ts);
    }
    qitem *it = ef_calloc(1, sizeof *it);
    if (!it) {
        ef_log(EF_LOG_ERROR, "mqtt %s: out of memory: message on %s dropped", m->name, topic);
        ef_free(topic);
        ef_buf_unref(buf);
        return;
    }
    it->event = EF_MQTT_MESSAGE;
    it->topic = topic;
    it->buf = buf;
    it->retained = retained;
    m->st.messages_in++;
    m->st.bytes_in += buf->len;
    q_push(m, it);
}

/* ---- reassembly (mu held) ------------------------------------------------------- */

static void partial_free(ef_mqtt *m, partial *p) {
    m->pending_bytes -= p->total;
    ef_free(p->topic);
    ef_free(p->have);
    ef_buf_unref(p->buf);
    ef_free(p);
}

static void partial_unlink(ef_mqtt *m, partial *p) {
    for (partial **pp = &m->partials; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            return;
        }
}

/* Drops incomplete messages whose chunks stopped coming. */
static void sweep_partials(ef_mqtt *m, double now) {
    partial **pp = &m->partials;
    while (*pp) {
        partial *p = *pp;
        if (now - p->last > m->cfg.chunk_timeout_s) {
            *pp = p->next;
            ef_log(EF_LOG_WARN, "mqtt %s: message %016llx on %s dropped: %u of %u chunks after "
                                "%.0f s without more", m->name, (unsigned long long)p->msg_id,
                   p->topic, p->got, p->count, m->cfg.chunk_timeout_s);
            m->st.partial_dropped++;
            partial_free(m, p);
        } else {
            pp = &p->next;
        }
    }
}

static int recently_done(const ef_mqtt *m, uint64_t id) {
    for (size_t i = 0; i < DONE_RING; i++)
        if (m->done_ids[i] == id && id != 0) return 1;
    return 0;
}

static void forget_done(ef_mqtt *m, uint64_t id) {
    for (size_t i = 0; i < DONE_RING; i++)
        if (m->done_ids[i] == id) m->done_ids[i] = 0;
}

static void reject_chunk(ef_mqtt *m, const char *topic, const char *why, unsigned long long id) {
    m->st.chunks_rejected++;
    ef_log(EF_LOG_WARN, "mqtt %s: chunk on %s rejected (message %016llx): %s", m->name, topic, id,
           why);
}

/* Topic of a chunk without its "/<index>" (retained chunks); NULL on OOM. */
static char *base_topic(const char *topic, int retained_form) {
    size_t n = strlen(topic);
    if (retained_form) {
        const char *slash = strrchr(topic, '/');
        if (slash) n = (size_t)(slash - topic);
    }
    char *t = ef_malloc(n + 1);
    if (!t) return NULL;
    memcpy(t, topic, n);
    t[n] = '\0';
    return t;
}

static void on_chunk(ef_mqtt *m, const char *topic, const uint8_t *c, size_t len, int retained) {
    m->st.chunks_in++;
    unsigned long long id = len >= 16 ? (unsigned long long)rd64(c + 8) : 0;
    char why[128];
    if (len < EF_MQTT_CHUNK_HEADER) {
        reject_chunk(m, topic, "shorter than its header", id);
        return;
    }
    uint64_t msg_id = rd64(c + 8), total = rd64(c + 16);
    uint32_t index = rd32(c + 24), count = rd32(c + 28), stride = rd32(c + 32);
    uint32_t msg_crc = rd32(c + 36);
    size_t dlen = len - EF_MQTT_CHUNK_HEADER;
    uint64_t off = (uint64_t)index * stride;
    const char *bad = NULL;
    if (c[4] != CHUNK_VERSION) {
        bad = "unknown chunk version";
    } else if ((c[5] & ~CHUNK_FLAG_RETAINED) || c[6] || c[7]) {
        bad = "reserved header bits set";
    } else if (crc_of(crc_of(crc_init(), c, 40), c + EF_MQTT_CHUNK_HEADER, dlen) != rd32(c + 40)) {
        bad = "checksum mismatch";
    } else if (total == 0 || total > m->cfg.max_message) {
        snprintf(why, sizeof why, "message of %llu bytes (limit %zu)", (unsigned long long)total,
                 m->cfg.max_message);
        bad = why;
    } else if (stride == 0 || count == 0 || index >= count ||
               (total + stride - 1) / stride != count) {
        bad = "index, count, stride and total do not fit together";
    } else if (dlen != (index + 1 < count ? (uint64_t)stride : total - off)) {
        bad = "chunk size does not match its index";
    } else if (total > m->cfg.max_pending) {
        bad = "message larger than the reassembly memory";
    }
    if (bad) {
        reject_chunk(m, topic, bad, id);
        return;
    }
    char *base = base_topic(topic, (c[5] & CHUNK_FLAG_RETAINED) != 0);
    if (!base) return;
    partial *p = NULL;
    for (partial *q = m->partials; q; q = q->next)
        if (q->msg_id == msg_id && strcmp(q->topic, base) == 0) p = q;
    if (!p) {
        /* a QoS 1 redelivery of a chunk of a message already delivered;
         * a retained copy (after a new subscription) is a new delivery */
        if (!retained && recently_done(m, msg_id)) {
            ef_free(base);
            return;
        }
        forget_done(m, msg_id);
        /* make room: the least recently fed incomplete messages go first */
        while (m->pending_bytes + total > m->cfg.max_pending && m->partials) {
            partial *old = m->partials;
            for (partial *q = m->partials; q; q = q->next)
                if (q->last < old->last) old = q;
            ef_log(EF_LOG_WARN, "mqtt %s: reassembly memory full: message %016llx on %s dropped "
                                "(%u of %u chunks)", m->name, (unsigned long long)old->msg_id,
                   old->topic, old->got, old->count);
            m->st.partial_dropped++;
            partial_unlink(m, old);
            partial_free(m, old);
        }
        p = ef_calloc(1, sizeof *p);
        if (p) {
            p->have = ef_calloc(count, 1);
            p->buf = ef_buf_new((size_t)total);
        }
        if (!p || !p->have || !p->buf) {
            if (p) {
                ef_free(p->have);
                ef_buf_unref(p->buf);
                ef_free(p);
            }
            ef_free(base);
            ef_log(EF_LOG_ERROR, "mqtt %s: out of memory for a message of %llu bytes", m->name,
                   (unsigned long long)total);
            return;
        }
        p->topic = base;
        base = NULL;
        p->msg_id = msg_id;
        p->total = total;
        p->count = count;
        p->stride = stride;
        p->msg_crc = msg_crc;
        p->retained = retained;
        p->next = m->partials;
        m->partials = p;
        m->pending_bytes += total;
    }
    ef_free(base);
    if (p->total != total || p->count != count || p->stride != stride || p->msg_crc != msg_crc) {
        reject_chunk(m, topic, "header disagrees with the message's earlier chunks", id);
        return;
    }
    p->last = ef_now();
    if (p->have[index]) return; /* a duplicate (QoS 1 redelivery) */
    p->have[index] = 1;
    p->got++;
    memcpy(p->buf->data + off, c + EF_MQTT_CHUNK_HEADER, dlen);
    if (p->got < p->count) return;
    partial_unlink(m, p);
    if (crc_of(crc_init(), p->buf->data, p->buf->len) != p->msg_crc) {
        reject_chunk(m, p->topic, "the reassembled message fails its checksum", id);
        partial_free(m, p);
        return;
    }
    m->done_ids[m->done_pos++ % DONE_RING] = msg_id;
    m->pending_bytes -= p->total;
    char *t = p->topic;
    ef_buf *b = p->buf;
    int r = p->retained;
    ef_free(p->have);
    ef_free(p);
    deliver(m, t, b, r);
}

/* ---- libmosquitto callbacks (network thread) -------------------------------------- */

/* Re-subscribes on a new connection. The SUBSCRIBEs are queued before
 * anything the application publishes after the CONNECTED event, and the
 * broker handles a connection's packets in order. */
static void subscribe_all(ef_mqtt *m) {
    for (size_t i = 0; i < m->n_subs; i++) {
        int rc = mosquitto_subscribe_v5(m->mosq, NULL, m->subs[i], 1, 0, NULL);
        if (rc != MOSQ_ERR_SUCCESS)
            ef_log(EF_LOG_ERROR, "mqtt %s: subscribing to %s failed: %s", m->name, m->subs[i],
                   mosquitto_strerror(rc));
    }
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc, int flags,
                       const mosquitto_property *props) {
    (void)mosq;
    ef_mqtt *m = obj;
    if (rc != 0) {
        ef_log(EF_LOG_WARN, "mqtt %s: broker %s:%d refused the connection: %s", m->name, m->host,
               m->port, mosquitto_reason_string(rc));
        return;
    }
    uint32_t maxp = 0;
    const mosquitto_property *pr =
        mosquitto_property_read_int32(props, MQTT_PROP_MAXIMUM_PACKET_SIZE, &maxp, false);
    pthread_mutex_lock(&m->mu);
    m->broker_max = pr ? maxp : 0;
    m->max_packet = m->cfg.max_packet;
    if (m->broker_max && m->broker_max < m->max_packet) m->max_packet = m->broker_max;
    m->st.max_packet = m->max_packet;
    m->connected = 1;
    m->disconnected = 0;
    m->up = 0;
    m->connection++;
    m->st.connects++;
    m->session_present = (flags & 1) != 0;
    ef_log(EF_LOG_INFO, "mqtt %s: connected to %s:%d%s (%s session, packets up to %zu bytes)",
           m->name, m->host, m->port, m->tls ? " over TLS" : "",
           m->session_present ? "resumed" : "new", m->max_packet);
    subscribe_all(m);
    /* before any message of this connection: a resumed session's queued
     * messages follow the CONNACK at once */
    emit_up(m);
    pthread_mutex_unlock(&m->mu);
}

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid, int n, const int *granted,
                         const mosquitto_property *props) {
    (void)mosq;
    (void)mid;
    (void)props;
    ef_mqtt *m = obj;
    for (int i = 0; i < n; i++)
        if (granted[i] >= 0x80)
            ef_log(EF_LOG_ERROR, "mqtt %s: the broker refused a subscription: %s", m->name,
                   mosquitto_reason_string(granted[i]));
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc,
                          const mosquitto_property *props) {
    (void)mosq;
    (void)props;
    ef_mqtt *m = obj;
    pthread_mutex_lock(&m->mu);
    int was = m->connected;
    m->connected = 0;
    m->up = 0;
    m->disconnected = 1;
    int closing = m->closing;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    if (was && !closing)
        ef_log(EF_LOG_WARN, "mqtt %s: connection to %s:%d lost (%s)", m->name, m->host, m->port,
               rc ? mosquitto_strerror(rc) : "disconnected");
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid, int reason,
                       const mosquitto_property *props) {
    (void)mosq;
    (void)mid;
    (void)props;
    ef_mqtt *m = obj;
    pthread_mutex_lock(&m->mu);
    if (m->outstanding > 0) m->outstanding--;
    if (reason >= 0x80) m->st.publish_refused++;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    if (reason >= 0x80)
        ef_log(EF_LOG_WARN, "mqtt %s: the broker refused a message: %s", m->name,
               mosquitto_reason_string(reason));
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg,
                       const mosquitto_property *props) {
    (void)mosq;
    (void)props;
    ef_mqtt *m = obj;
    if (msg->payloadlen <= 0) return; /* deletes a retained message: nothing to deliver */
    const uint8_t *p = msg->payload;
    size_t len = (size_t)msg->payloadlen;
    pthread_mutex_lock(&m->mu);
    if (len >= 4 && memcmp(p, CHUNK_MAGIC, 4) == 0) {
        on_chunk(m, msg->topic, p, len, msg->retain);
    } else if (len > m->cfg.max_message) {
        ef_log(EF_LOG_WARN, "mqtt %s: message of %zu bytes on %s dropped (limit %zu)", m->name,
               len, msg->topic, m->cfg.max_message);
    } else {
        ef_buf *b = ef_buf_new(len);
        char *t = ef_strdup(msg->topic);
        if (!b || !t) {
            ef_buf_unref(b);
            ef_free(t);
            ef_log(EF_LOG_ERROR, "mqtt %s: out of memory: message on %s dropped", m->name,
                   msg->topic);
        } else {
            memcpy(b->data, p, len);
            deliver(m, t, b, msg->retain);
        }
    }
    pthread_mutex_unlock(&m->mu);
}

static void on_log(struct mosquitto *mosq, void *obj, int level, const char *str) {
    (void)mosq;
    ef_mqtt *m = obj;
    if (level & (MOSQ_LOG_ERR))
        ef_log(EF_LOG_DEBUG, "mqtt %s: libmosquitto: %s", m->name, str);
}

/* ---- the network thread ---------------------------------------------------------- */

static double backoff_delay(const ef_mqtt *m, unsigned attempt) {
    double d = m->cfg.reconnect_min_s * pow(2.0, attempt > 30 ? 30 : attempt);
    if (d > m->cfg.reconnect_max_s) d = m->cfg.reconnect_max_s;
    /* equal jitter: spread reconnects of many clients over [d/2, d] */
    double u = (double)randombytes_uniform(1000000) / 1e6;
    return d * (0.5 + 0.5 * u);
}

/* Hands the will to libmosquitto (before a connect; mu held). */
static int apply_will(ef_mqtt *m) {
    if (!m->will_topic) return mosquitto_will_clear(m->mosq);
    mosquitto_property *wp = NULL;
    if (m->cfg.will_delay_s > 0)
        mosquitto_property_add_int32(&wp, MQTT_PROP_WILL_DELAY_INTERVAL, m->cfg.will_delay_s);
    int rc = mosquitto_will_set_v5(m->mosq, m->will_topic, (int)m->cfg.will_len, m->will, 1,
                                   false, wp);
    if (rc) mosquitto_property_free_all(&wp); /* on success libmosquitto owns them */
    return rc;
}

static int try_connect(ef_mqtt *m) {
    pthread_mutex_lock(&m->mu);
    if (m->will_dirty) {
        int wrc = apply_will(m);
        if (wrc)
            ef_log(EF_LOG_ERROR, "mqtt %s: setting the last will: %s", m->name,
                   mosquitto_strerror(wrc));
        m->will_dirty = 0;
    }
    pthread_mutex_unlock(&m->mu);
    mosquitto_property *props = NULL;
    if (m->cfg.session_expiry_s > 0)
        mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
                                     m->cfg.session_expiry_s);
    /* mosquitto_connect_bind_v5 (re)initialises host and properties, so every
     * attempt carries the session expiry; it keeps unacknowledged messages */
    int rc = mosquitto_connect_bind_v5(m->mosq, m->host, m->port, m->cfg.keepalive_s, NULL, props);
    mosquitto_property_free_all(&props);
    return rc;
}

/* Wakes the network thread: a packet was queued for it (a full counter
 * means a wake-up is pending anyway). */
static void wake(ef_mqtt *m) {
    uint64_t one = 1;
    if (m->wake_fd >= 0 && write(m->wake_fd, &one, sizeof one) < 0) {
    }
}

/* One step of the network loop, mosquitto_loop with poll() (see the top of
 * this file): waits up to timeout_ms for the socket or a wake-up, then
 * reads, writes what is queued and keeps the connection alive. Returns a
 * MOSQ_ERR_* like mosquitto_loop. */
static int net_step(ef_mqtt *m, int timeout_ms) {
    int fd = mosquitto_socket(m->mosq);
    if (fd < 0) return MOSQ_ERR_NO_CONN;
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = m->wake_fd, .events = POLLIN}};
    if (mosquitto_want_write(m->mosq)) p[0].events |= POLLOUT;
    if (poll(p, 2, timeout_ms) < 0) return errno == EINTR ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ERRNO;
    int rc;
    if (p[1].revents & POLLIN) {
        uint64_t v;
        if (read(m->wake_fd, &v, sizeof v) < 0) {
        }
    }
    if ((p[0].revents & (POLLIN | POLLHUP | POLLERR)) &&
        (rc = mosquitto_loop_read(m->mosq, 1)) != MOSQ_ERR_SUCCESS)
        return rc;
    /* what the application queued, and the answers queued while reading */
    if (mosquitto_socket(m->mosq) >= 0 && mosquitto_want_write(m->mosq) &&
        (rc = mosquitto_loop_write(m->mosq, 1)) != MOSQ_ERR_SUCCESS)
        return rc;
    return mosquitto_loop_misc(m->mosq);
}

static void *net_thread(void *arg) {
    ef_mqtt *m = arg;
    unsigned attempt = 0;
    int need_connect = 1;
    double next_try = 0, attempt_start = 0;
    while (!atomic_load(&m->stop)) {
        double now = ef_now();
        if (now >= m->next_sweep) {
            pthread_mutex_lock(&m->mu);
            sweep_partials(m, now);
            pthread_mutex_unlock(&m->mu);
            m->next_sweep = now + 1.0;
        }
        if (need_connect) {
            pthread_mutex_lock(&m->mu);
            int closing = m->closing;
            pthread_mutex_unlock(&m->mu);
            if (closing) {
                sleep_s(0.05);
                continue;
            }
            if (now < next_try) {
                sleep_s(fmin(0.1, next_try - now));
                continue;
            }
            int rc = try_connect(m);
            if (rc != MOSQ_ERR_SUCCESS) {
                double d = backoff_delay(m, attempt++);
                ef_log(attempt == 1 ? EF_LOG_WARN : EF_LOG_INFO,
                       "mqtt %s: cannot connect to %s:%d: %s; retrying in %.1f s", m->name,
                       m->host, m->port,
                       rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc), d);
                next_try = ef_now() + d;
                continue;
            }
            need_connect = 0;
            attempt_start = ef_now();
        }
        /* 1 s: every packet the application queues, and close, wake the
         * thread at once; the tick only paces keepalives, the connect
         * timeout and the reassembly sweep (a thousand idle connections
         * cost 23% of a core at 100 ms, 5% at 1 s) */
        int rc = net_step(m, 1000);
        pthread_mutex_lock(&m->mu);
        int connected = m->connected, closing = m->closing;
        pthread_mutex_unlock(&m->mu);
        if (connected) attempt = 0;
        if (closing) { /* the DISCONNECT goes out; close() stops us */
            if (rc != MOSQ_ERR_SUCCESS) sleep_s(0.02);
            continue;
        }
        if (rc != MOSQ_ERR_SUCCESS) {
            double d = backoff_delay(m, attempt++);
            ef_log(EF_LOG_INFO, "mqtt %s: network loop: %s; reconnecting in %.1f s", m->name,
                   rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc), d);
            pthread_mutex_lock(&m->mu);
            m->connected = 0;
            m->up = 0;
            pthread_mutex_unlock(&m->mu);
            need_connect = 1;
            next_try = ef_now() + d;
        } else if (!connected && ef_now() - attempt_start > m->cfg.connect_timeout_s) {
            ef_log(EF_LOG_WARN, "mqtt %s: no answer from %s:%d within %.0f s; reconnecting",
                   m->name, m->host, m->port, m->cfg.connect_timeout_s);
            need_connect = 1;
            next_try = ef_now() + backoff_delay(m, attempt++);
        }
    }
    return NULL;
}

/* ---- construction --------------------------------------------------------------- */

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_rc;
static void lib_init(void) {
    lib_rc = mosquitto_lib_init();
    if (lib_rc == MOSQ_ERR_SUCCESS && sodium_init() < 0) lib_rc = MOSQ_ERR_UNKNOWN;
}

static ef_status check_config(const ef_mqtt_config *c) {
    if (!c->url) return ef__fail(EF_ERR_INVALID, "mqtt: no broker URL");
    if (!c->client_id || !*c->client_id || strlen(c->client_id) > 65535)
        return ef__fail(EF_ERR_INVALID, "mqtt: a client id is required");
    if (c->keepalive_s < 5 || c->keepalive_s > 65535)
        return ef__fail(EF_ERR_INVALID, "mqtt: keepalive must be 5..65535 s, got %d", c->keepalive_s);
    if (c->max_packet < 1024 || c->max_packet > 268435455)
        return ef__fail(EF_ERR_INVALID, "mqtt: maximum packet size must be 1 KiB..256 MiB");
    if (c->max_message == 0 || c->max_pending == 0 || c->max_queue == 0)
        return ef__fail(EF_ERR_INVALID, "mqtt: message, reassembly and queue limits must be > 0");
    if (!(c->chunk_timeout_s > 0) || !(c->reconnect_min_s > 0) ||
        !(c->reconnect_max_s >= c->reconnect_min_s) || !(c->connect_timeout_s > 0) ||
        !isfinite(c->chunk_timeout_s) || !isfinite(c->reconnect_max_s) ||
        !isfinite(c->connect_timeout_s))
        return ef__fail(EF_ERR_INVALID, "mqtt: timeouts and reconnect delays must be > 0 "
                                        "(and the maximum delay >= the minimum)");
    if ((c->tls_cert == NULL) != (c->tls_key == NULL))
        return ef__fail(EF_ERR_INVALID, "mqtt: a client certificate needs its key and a key its "
                                        "certificate");
    if (c->will_topic && (mosquitto_pub_topic_check(c->will_topic) != MOSQ_ERR_SUCCESS ||
                          c->will_len == 0 || c->will_len > (size_t)INT32_MAX))
        return ef__fail(EF_ERR_INVALID, "mqtt: bad last-will topic or payload");
    return EF_OK;
}

static ef_status mosq_fail(int rc, const char *what) {
    if (rc == MOSQ_ERR_NOMEM) return EF_ERR_NOMEM;
    return ef__fail(EF_ERR_INVALID, "mqtt: %s: %s", what, mosquitto_strerror(rc));
}

ef_status ef_mqtt_new(ef_mqtt **out, const ef_mqtt_config *cfg) {
    *out = NULL;
    ef_status st = check_config(cfg);
    if (st) return st;
    pthread_once(&lib_once, lib_init);
    if (lib_rc != MOSQ_ERR_SUCCESS)
        return ef__fail(EF_ERR_INTERNAL, "mqtt: libmosquitto or libsodium failed to initialize");
    ef_mqtt *m = ef_calloc(1, sizeof *m);
    if (!m) return EF_ERR_NOMEM;
    m->wake_fd = -1;
    m->cfg = *cfg;
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&m->stop, 0);
    int bad = 0;
    m->url = dup_or_null(cfg->url, &bad);
    m->client_id = dup_or_null(cfg->client_id, &bad);
    m->username = dup_or_null(cfg->username, &bad);
    m->password = dup_or_null(cfg->password, &bad);
    m->tls_ca = dup_or_null(cfg->tls_ca, &bad);
    m->tls_cert = dup_or_null(cfg->tls_cert, &bad);
    m->tls_key = dup_or_null(cfg->tls_key, &bad);
    m->will_topic = dup_or_null(cfg->will_topic, &bad);
    m->name = dup_or_null(cfg->name ? cfg->name : cfg->client_id, &bad);
    if (cfg->will_topic && !bad) {
        m->will = ef_malloc(cfg->will_len);
        if (m->will) memcpy(m->will, cfg->will, cfg->will_len);
        else bad = 1;
    }
    m->cfg.url = m->url, m->cfg.client_id = m->client_id, m->cfg.username = m->username;
    m->cfg.password = m->password, m->cfg.tls_ca = m->tls_ca, m->cfg.tls_cert = m->tls_cert;
    m->cfg.tls_key = m->tls_key, m->cfg.will_topic = m->will_topic, m->cfg.will = m->will;
    m->cfg.name = m->name;
    if (m->cfg.will_delay_s == UINT32_MAX) m->cfg.will_delay_s = m->cfg.session_expiry_s;
    m->max_packet = m->cfg.max_packet;
    m->st.max_packet = m->max_packet;
    if (bad) {
        st = EF_ERR_NOMEM;
        goto fail;
    }
    if ((st = parse_url(m, cfg->url)) != EF_OK) goto fail;
    if (!m->tls && (cfg->tls_ca || cfg->tls_cert)) {
        st = ef__fail(EF_ERR_INVALID, "mqtt: TLS files given for a plain mqtt:// URL (use "
                                      "mqtts://)");
        goto fail;
    }
    uint64_t base;
    randombytes_buf(&base, sizeof base);
    m->id_base = base & ~(uint64_t)0xFFFFFFFFu;
    if (m->id_base == 0) m->id_base = (uint64_t)1 << 32;

    if ((m->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        st = ef__fail(EF_ERR_INTERNAL, "mqtt: eventfd: %s", strerror(errno));
        goto fail;
    }
    m->mosq = mosquitto_new(m->client_id, cfg->clean_start != 0, m);
    if (!m->mosq) {
        st = errno == ENOMEM ? EF_ERR_NOMEM : ef__fail(EF_ERR_INVALID, "mqtt: cannot create a "
                                                                       "client for id '%s'",
                                                      m->client_id);
        goto fail;
    }
    int rc = mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    if (rc == MOSQ_ERR_SUCCESS) rc = mosquitto_threaded_set(m->mosq, true);
    if (rc) {
        st = mosq_fail(rc, "setting up the client");
        goto fail;
    }
    if (m->username && (rc = mosquitto_username_pw_set(m->mosq, m->username, m->password))) {
        st = mosq_fail(rc, "username");
        goto fail;
    }
    if (m->tls) {
        /* TLS 1.2 or newer (libmosquitto's default), the broker's certificate
         * verified and its name checked against HOST (insecure mode off) */
        if (!m->tls_ca) mosquitto_int_option(m->mosq, MOSQ_OPT_TLS_USE_OS_CERTS, 1);
        rc = mosquitto_tls_set(m->mosq, m->tls_ca, m->tls_ca ? NULL : "/etc/ssl/certs",
                               m->tls_cert, m->tls_key, NULL);
        if (rc == MOSQ_ERR_SUCCESS) rc = mosquitto_tls_opts_set(m->mosq, 1, NULL, NULL);
        if (rc == MOSQ_ERR_SUCCESS) rc = mosquitto_tls_insecure_set(m->mosq, false);
        if (rc) {
            st = mosq_fail(rc, "TLS setup (check the CA, certificate and key files)");
            goto fail;
        }
    }
    if (m->will_topic && (rc = apply_will(m)) != MOSQ_ERR_SUCCESS) {
        st = mosq_fail(rc, "last will");
        goto fail;
    }
    mosquitto_connect_v5_callback_set(m->mosq, on_connect);
    mosquitto_disconnect_v5_callback_set(m->mosq, on_disconnect);
    mosquitto_subscribe_v5_callback_set(m->mosq, on_subscribe);
    mosquitto_publish_v5_callback_set(m->mosq, on_publish);
    mosquitto_message_v5_callback_set(m->mosq, on_message);
    mosquitto_log_callback_set(m->mosq, on_log);
    if (pthread_create(&m->thread, NULL, net_thread, m) != 0) {
        st = ef__fail(EF_ERR_INTERNAL, "mqtt: cannot start the network thread");
        goto fail;
    }
    m->thread_ok = 1;
    *out = m;
    return EF_OK;
fail:
    ef_mqtt_close(m, 0);
    return st;
}

ef_status ef_mqtt_subscribe(ef_mqtt *m, const char *filter) {
    if (mosquitto_sub_topic_check(filter) != MOSQ_ERR_SUCCESS)
        return ef__fail(EF_ERR_INVALID, "mqtt: bad topic filter '%s'", filter);
    char *f = ef_strdup(filter);
    if (!f) return EF_ERR_NOMEM;
    pthread_mutex_lock(&m->mu);
    char **nv = ef_realloc(m->subs, (m->n_subs + 1) * sizeof *nv);
    if (!nv) {
        pthread_mutex_unlock(&m->mu);
        ef_free(f);
        return EF_ERR_NOMEM;
    }
    m->subs = nv;
    m->subs[m->n_subs++] = f;
    int connected = m->connected;
    pthread_mutex_unlock(&m->mu);
    /* connected: subscribe now; otherwise the next CONNACK subscribes it.
     * A connection coming up meanwhile may subscribe it twice: harmless. */
    if (connected) {
        int rc = mosquitto_subscribe_v5(m->mosq, NULL, f, 1, 0, NULL);
        wake(m);
        if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN)
            return ef__fail(EF_ERR_STATE, "mqtt: subscribing to %s: %s", f, mosquitto_strerror(rc));
    }
    return EF_OK;
}

ef_status ef_mqtt_set_will(ef_mqtt *m, const char *topic, const void *data, size_t len) {
    if (topic && (mosquitto_pub_topic_check(topic) != MOSQ_ERR_SUCCESS || len == 0 ||
                  len > (size_t)INT32_MAX))
        return ef__fail(EF_ERR_INVALID, "mqtt: bad last-will topic or payload");
    char *t = NULL;
    uint8_t *w = NULL;
    if (topic) {
        t = ef_strdup(topic);
        w = ef_malloc(len);
        if (!t || !w) {
            ef_free(t);
            ef_free(w);
            return EF_ERR_NOMEM;
        }
        memcpy(w, data, len);
    }
    pthread_mutex_lock(&m->mu);
    ef_free(m->will_topic);
    ef_free(m->will);
    m->will_topic = t;
    m->will = w;
    m->cfg.will_topic = t;
    m->cfg.will = w;
    m->cfg.will_len = topic ? len : 0;
    m->will_dirty = 1;
    pthread_mutex_unlock(&m->mu);
    return EF_OK;
}

/* ---- publishing ------------------------------------------------------------------- */

static ef_status publish_raw(ef_mqtt *m, const char *topic, const void *data, size_t len,
                             int retain) {
    pthread_mutex_lock(&m->mu);
    if (m->closing) {
        pthread_mutex_unlock(&m->mu);
        return ef__fail(EF_ERR_STATE, "mqtt: the connection is closing");
    }
    m->outstanding++;
    pthread_mutex_unlock(&m->mu);
    int rc = mosquitto_publish_v5(m->mosq, NULL, topic, (int)len, data, 1, retain != 0, NULL);
    wake(m);
    if (rc == MOSQ_ERR_SUCCESS || rc == MOSQ_ERR_NO_CONN) return EF_OK; /* NO_CONN: queued */
    pthread_mutex_lock(&m->mu);
    m->outstanding--;
    pthread_mutex_unlock(&m->mu);
    if (rc == MOSQ_ERR_NOMEM) return EF_ERR_NOMEM;
    return ef__fail(EF_ERR_STATE, "mqtt: publishing %zu bytes to %s: %s", len, topic,
                    mosquitto_strerror(rc));
}

/* The record of retained topic `topic`, created if missing (NULL on OOM). */
static retained_rec *retained_of(ef_mqtt *m, const char *topic) {
    for (size_t i = 0; i < m->n_ret; i++)
        if (strcmp(m->ret[i].topic, topic) == 0) return &m->ret[i];
    retained_rec *nv = ef_realloc(m->ret, (m->n_ret + 1) * sizeof *nv);
    if (!nv) return NULL;
    m->ret = nv;
    retained_rec *r = &m->ret[m->n_ret];
    memset(r, 0, sizeof *r);
    if (!(r->topic = ef_strdup(topic))) return NULL;
    m->n_ret++;
    return r;
}

/* Deletes retained chunks topic/from .. topic/to-1. */
static ef_status clear_chunks(ef_mqtt *m, const char *topic, uint32_t from, uint32_t to) {
    size_t tl = strlen(topic);
    char *t = ef_malloc(tl + INDEX_SUFFIX + 1);
    if (!t) return EF_ERR_NOMEM;
    ef_status st = EF_OK;
    for (uint32_t i = from; i < to && st == EF_OK; i++) {
        snprintf(t, tl + INDEX_SUFFIX + 1, "%s/%u", topic, i);
        st = publish_raw(m, t, NULL, 0, 1);
    }
    ef_free(t);
    return st;
}

ef_status ef_mqtt_publish(ef_mqtt *m, const char *topic, const void *data, size_t len,
                          int retain) {
    if (mosquitto_pub_topic_check(topic) != MOSQ_ERR_SUCCESS)
        return ef__fail(EF_ERR_INVALID, "mqtt: bad topic '%s'", topic);
    if (len == 0) return ef__fail(EF_ERR_INVALID, "mqtt: empty messages are not sent");
    if ((uint64_t)len > (uint64_t)m->cfg.max_message)
        return ef__fail(EF_ERR_RANGE, "mqtt: message of %zu bytes is over the limit of %zu",
                        len, m->cfg.max_message);
    size_t tl = strlen(topic);
    pthread_mutex_lock(&m->mu);
    size_t maxp = m->max_packet;
    m->st.messages_out++;
    m->st.bytes_out += len;
    pthread_mutex_unlock(&m->mu);
    const uint8_t *p = data;
    int looks_chunked = len >= 4 && memcmp(p, CHUNK_MAGIC, 4) == 0;
    ef_status st = EF_OK;
    if (!looks_chunked && len + tl + PUBLISH_OVERHEAD <= maxp) {
        if ((st = publish_raw(m, topic, data, len, retain)) != EF_OK) return st;
        if (retain) {
            pthread_mutex_lock(&m->mu);
            retained_rec *r = retained_of(m, topic);
            uint32_t old = r ? r->chunks : 0;
            if (r) r->plain = 1, r->chunks = 0;
            pthread_mutex_unlock(&m->mu);
            if (old) st = clear_chunks(m, topic, 0, old);
        }
        return st;
    }
    /* chunks: stride = what fits in a packet beside the header and topic */
    size_t over = tl + PUBLISH_OVERHEAD + EF_MQTT_CHUNK_HEADER + (retain ? INDEX_SUFFIX : 0);
    if (maxp <= over + 64)
        return ef__fail(EF_ERR_RANGE, "mqtt: packets of %zu bytes cannot carry chunks on %s",
                        maxp, topic);
    size_t stride = maxp - over;
    if (stride > UINT32_MAX) stride = UINT32_MAX;
    uint64_t count64 = ((uint64_t)len + stride - 1) / stride;
    if (count64 > UINT32_MAX) return ef__fail(EF_ERR_RANGE, "mqtt: message too large to chunk");
    uint32_t count = (uint32_t)count64;
    uint8_t *c = ef_malloc(EF_MQTT_CHUNK_HEADER + stride);
    char *ct = ef_malloc(tl + INDEX_SUFFIX + 1);
    if (!c || !ct) {
        ef_free(c);
        ef_free(ct);
        return EF_ERR_NOMEM;
    }
    pthread_mutex_lock(&m->mu);
    uint64_t msg_id = m->id_base | (++m->id_next & 0xFFFFFFFFu);
    pthread_mutex_unlock(&m->mu);
    uint32_t msg_crc = crc_of(crc_init(), p, len);
    for (uint32_t i = 0; i < count && st == EF_OK; i++) {
        size_t off = (size_t)i * stride;
        size_t n = i + 1 < count ? stride : len - off;
        memcpy(c, CHUNK_MAGIC, 4);
        c[4] = CHUNK_VERSION;
        c[5] = retain ? CHUNK_FLAG_RETAINED : 0;
        c[6] = c[7] = 0;
        wr64(c + 8, msg_id);
        wr64(c + 16, len);
        wr32(c + 24, i);
        wr32(c + 28, count);
        wr32(c + 32, (uint32_t)stride);
        wr32(c + 36, msg_crc);
        memcpy(c + EF_MQTT_CHUNK_HEADER, p + off, n);
        wr32(c + 40, crc_of(crc_of(crc_init(), c, 40), c + EF_MQTT_CHUNK_HEADER, n));
        const char *to = topic;
        if (retain) {
            snprintf(ct, tl + INDEX_SUFFIX + 1, "%s/%u", topic, i);
            to = ct;
        }
        st = publish_raw(m, to, c, EF_MQTT_CHUNK_HEADER + n, retain);
    }
    ef_free(c);
    ef_free(ct);
    pthread_mutex_lock(&m->mu);
    m->st.chunks_out += count;
    uint32_t old = 0;
    int plain = 0;
    if (retain && st == EF_OK) {
        retained_rec *r = retained_of(m, topic);
        if (r) {
            old = r->chunks, plain = r->plain;
            r->chunks = count, r->plain = 0;
        }
    }
    pthread_mutex_unlock(&m->mu);
    if (st == EF_OK && plain) st = publish_raw(m, topic, NULL, 0, 1);
    if (st == EF_OK && old > count) st = clear_chunks(m, topic, count, old);
    return st;
}

ef_status ef_mqtt_clear_retained(ef_mqtt *m, const char *topic) {
    if (mosquitto_pub_topic_check(topic) != MOSQ_ERR_SUCCESS)
        return ef__fail(EF_ERR_INVALID, "mqtt: bad topic '%s'", topic);
    pthread_mutex_lock(&m->mu);
    retained_rec *r = retained_of(m, topic);
    uint32_t chunks = r ? r->chunks : 0;
    if (r) r->chunks = 0, r->plain = 0;
    pthread_mutex_unlock(&m->mu);
    ef_status st = publish_raw(m, topic, NULL, 0, 1);
    if (st == EF_OK && chunks) st = clear_chunks(m, topic, 0, chunks);
    return st;
}

/* ---- reading ------------------------------------------------------------------- */

ef_status ef_mqtt_next(ef_mqtt *m, double timeout_s, ef_mqtt_msg *out) {
    memset(out, 0, sizeof *out);
    struct timespec ts;
    set_deadline(&ts, timeout_s > 0 ? timeout_s : 0);
    pthread_mutex_lock(&m->mu);
    while (!m->qhead && timeout_s > 0) {
        if (pthread_cond_timedwait(&m->cv, &m->mu, &ts) == ETIMEDOUT) break;
    }
    qitem *it = m->qhead;
    if (it) {
        m->qhead = it->next;
        if (!m->qhead) m->qtail = NULL;
        if (it->buf) m->qbytes -= it->buf->len;
        pthread_cond_broadcast(&m->cv); /* a network thread may wait for room */
    }
    pthread_mutex_unlock(&m->mu);
    if (!it) return EF_OK;
    out->event = it->event;
    out->topic = it->topic;
    out->buf = it->buf;
    out->retained = it->retained;
    out->session_present = it->session_present;
    out->connection = it->connection;
    ef_free(it);
    return EF_OK;
}

void ef_mqtt_msg_clear(ef_mqtt_msg *msg) {
    ef_free(msg->topic);
    ef_buf_unref(msg->buf);
    memset(msg, 0, sizeof *msg);
}

int ef_mqtt_wait_connected(ef_mqtt *m, double timeout_s) {
    struct timespec ts;
    set_deadline(&ts, timeout_s);
    pthread_mutex_lock(&m->mu);
    while (!m->up) {
        if (pthread_cond_timedwait(&m->cv, &m->mu, &ts) == ETIMEDOUT) break;
    }
    int up = m->up;
    pthread_mutex_unlock(&m->mu);
    return up;
}

ef_status ef_mqtt_flush(ef_mqtt *m, double timeout_s) {
    struct timespec ts;
    set_deadline(&ts, timeout_s);
    pthread_mutex_lock(&m->mu);
    while (m->outstanding > 0) {
        if (pthread_cond_timedwait(&m->cv, &m->mu, &ts) == ETIMEDOUT) break;
    }
    uint64_t left = m->outstanding;
    pthread_mutex_unlock(&m->mu);
    if (left)
        return ef__fail(EF_ERR_STATE, "mqtt: %llu messages not acknowledged by the broker "
                                      "within %.1f s", (unsigned long long)left, timeout_s);
    return EF_OK;
}

void ef_mqtt_get_stats(ef_mqtt *m, ef_mqtt_stats *out) {
    pthread_mutex_lock(&m->mu);
    *out = m->st;
    pthread_mutex_unlock(&m->mu);
}

void ef_mqtt_close(ef_mqtt *m, int end_session) {
    if (!m) return;
    if (m->thread_ok) {
        pthread_mutex_lock(&m->mu);
        m->closing = 1;
        int connected = m->connected;
        pthread_mutex_unlock(&m->mu);
        if (connected) {
            mosquitto_property *props = NULL;
            if (end_session)
                mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, 0);
            int rc = mosquitto_disconnect_v5(m->mosq, 0, props);
            mosquitto_property_free_all(&props);
            wake(m);
            if (rc == MOSQ_ERR_SUCCESS) {
                /* let the network thread write it out */
                struct timespec ts;
                set_deadline(&ts, 2.0);
                pthread_mutex_lock(&m->mu);
                while (!m->disconnected)
                    if (pthread_cond_timedwait(&m->cv, &m->mu, &ts) == ETIMEDOUT) break;
                pthread_mutex_unlock(&m->mu);
            }
        }
        atomic_store(&m->stop, 1);
        pthread_mutex_lock(&m->mu);
        pthread_cond_broadcast(&m->cv);
        pthread_mutex_unlock(&m->mu);
        wake(m);
        pthread_join(m->thread, NULL);
    }
    if (m->mosq) mosquitto_destroy(m->mosq);
    if (m->wake_fd >= 0) close(m->wake_fd);
    while (m->qhead) {
        qitem *it = m->qhead;
        m->qhead = it->next;
        q_free(it);
    }
    while (m->partials) {
        partial *p = m->partials;
        m->partials = p->next;
        partial_free(m, p);
    }
    for (size_t i = 0; i < m->n_subs; i++) ef_free(m->subs[i]);
    ef_free(m->subs);
    for (size_t i = 0; i < m->n_ret; i++) ef_free(m->ret[i].topic);
    ef_free(m->ret);
    if (m->password) sodium_memzero(m->password, strlen(m->password));
    ef_free(m->url);
    ef_free(m->host);
    ef_free(m->client_id);
    ef_free(m->username);
    ef_free(m->password);
    ef_free(m->tls_ca);
    ef_free(m->tls_cert);
    ef_free(m->tls_key);
    ef_free(m->will_topic);
    ef_free(m->will);
    ef_free(m->name);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    ef_free(m);
}
