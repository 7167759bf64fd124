/*
 * Tests of the client runtime (src/fl/client.c) against server messages
 * built by hand: a TASK needs the MODEL it names (version and hash), models
 * of the wrong size and messages from anyone but this job's server are
 * refused, the UPDATE and EVAL_RESULT carry exactly what the trainer
 * returned, and the client holds a model only while a task needs it (the
 * test owns a reference to each MODEL buffer and watches the count drop
 * back to its own).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "edgefl/client.h"
#include "edgefl/wire.h"
#include "fl_test_util.h"

#define JOB 0x0123456789ABCDEFull
#define CID 77u
#define MAXN 64

/* ---- messages a server would send ---------------------------------------- */

/* MODEL of n floats w (version `version`) as sent by `sender` of `job`. */
static ef_buf *mk_model(uint64_t job, uint32_t sender, uint32_t version, const float *w, size_t n) {
    size_t plen = EF_MODEL_FIXED + 4 * n;
    ef_buf *b = ef_buf_new(EF_WIRE_HEADER + plen);
    uint8_t *p = b->data + EF_WIRE_HEADER;
    wr32(p, version);
    wr32(p + 4, 0);
    wr64(p + 8, n);
    for (size_t i = 0; i < n; i++) wrf32(p + EF_MODEL_FIXED + 4 * i, w[i]);
    ef_wire_seal(b->data, EF_MSG_MODEL, job, version, sender, 1, plen);
    return b;
}

static ef_task std_task(uint32_t version, const float *w, size_t n) {
    ef_task t = {0};
    t.version = version;
    if (w) ef_hash(t.hash, w, 4 * n);
    t.deadline_s = 12.5f;
    t.epochs = 3;
    t.batch = 8;
    t.lr = 0.0625f;
    t.momentum = 0.875f;
    t.prox_mu = 0.25f;
    t.seed = 0xDEADBEEFCAFEull;
    return t;
}

static ef_buf *mk_task(uint64_t job, uint32_t sender, uint32_t round, const ef_task *t) {
    ef_buf *b = ef_buf_new(EF_WIRE_HEADER + EF_TASK_PAYLOAD);
    uint8_t *p = b->data + EF_WIRE_HEADER;
    memset(p, 0, EF_TASK_PAYLOAD);
    wr32(p, t->version);
    memcpy(p + 4, t->hash, EF_HASH_BYTES);
    wrf32(p + 36, t->deadline_s);
    wr16(p + 40, t->epochs);
    wr16(p + 42, t->batch);
    wrf32(p + 44, t->lr);
    wrf32(p + 48, t->momentum);
    wrf32(p + 52, t->prox_mu);
    wr64(p + 56, t->seed);
    ef_wire_seal(b->data, EF_MSG_TASK, job, round, sender, 2, EF_TASK_PAYLOAD);
    return b;
}

static ef_buf *mk_eval(uint64_t job, uint32_t sender, uint32_t round, uint32_t version,
                       const float *w, size_t n) {
    ef_buf *b = ef_buf_new(EF_WIRE_HEADER + 8 + EF_HASH_BYTES);
    uint8_t *p = b->data + EF_WIRE_HEADER;
    wr32(p, version);
    wr32(p + 4, 0);
    ef_hash(p + 8, w, 4 * n);
    ef_wire_seal(b->data, EF_MSG_EVAL, job, round, sender, 3, 8 + EF_HASH_BYTES);
    return b;
}

/* ---- fake trainer ------------------------------------------------------------ */

typedef struct fake {
    int fits, evals;
    ef_status fail; /* returned by fit when not EF_OK */
    uint32_t client;
    int worker;
    size_t n;
    float global[MAXN];
    ef_task task;
} fake;

static float delta_of(size_t i) { return 0.5f * (float)i - 3.0f; }

static ef_status fake_fit(void *user, int worker, uint32_t client, const float *global, size_t n,
                          const ef_task *task, float *delta, ef_fit_result *res) {
    fake *f = user;
    f->fits++;
    f->client = client;
    f->worker = worker;
    f->n = n;
    memcpy(f->global, global, n * sizeof(float));
    f->task = *task;
    if (f->fail) return f->fail;
    for (size_t i = 0; i < n; i++) delta[i] = delta_of(i);
    res->n_examples = 17;
    res->train_loss = 0.75f;
    res->steps = 9;
    return EF_OK;
}

static ef_status fake_eval(void *user, int worker, uint32_t client, const float *global, size_t n,
                           ef_eval_counts *res) {
    fake *f = user;
    f->evals++;
    f->client = client;
    f->worker = worker;
    f->n = n;
    memcpy(f->global, global, n * sizeof(float));
    res->n_examples = 20;
    res->loss_sum = 4.5;
    res->correct = 13;
    return EF_OK;
}

static ef_client *new_client(fake *f, size_t n, int with_eval) {
    ef_trainer tr = {fake_fit, with_eval ? fake_eval : NULL, f};
    ef_client_config cc = {.job = JOB, .id = CID, .n_train = 120, .n_eval = 30, .n_params = n};
    ef_client *c = NULL;
    CHECK_OK(ef_client_new(&c, &cc, &tr));
    return c;
}

/* ---- tests ------------------------------------------------------------------- */

static void test_new(void) {
    fake f = {0};
    ef_trainer tr = {fake_fit, fake_eval, &f};
    ef_client_config cc = {.job = JOB, .id = EF_BROADCAST_ID, .n_params = 4};
    ef_client *c = (ef_client *)&f;
    CHECK(ef_client_new(&c, &cc, &tr) == EF_ERR_INVALID && c == NULL);
    cc.id = EF_SERVER_ID;
    CHECK(ef_client_new(&c, &cc, &tr) == EF_ERR_INVALID);
    cc.id = 0;
    CHECK(ef_client_new(&c, &cc, NULL) == EF_ERR_INVALID);
    ef_trainer none = {NULL, fake_eval, &f};
    CHECK(ef_client_new(&c, &cc, &none) == EF_ERR_INVALID);
    cc.id = EF_BROADCAST_ID - 1;
    CHECK_OK(ef_client_new(&c, &cc, &tr));
    CHECK(ef_client_id(c) == EF_BROADCAST_ID - 1);
    ef_client_free(c);
    ef_client_free(NULL);
}

static void test_checkin_leave(void) {
    fake f = {0};
    ef_client *c = new_client(&f, 4, 1);
    ef_outbox o = {0};
    CHECK_OK(ef_client_checkin(c, &o));
    CHECK_OK(ef_client_leave(c, 5, &o));
    CHECK(o.n == 2);
    ef_msg m;
    CHECK(o.v[0].to == EF_SERVER_ID && o.v[0].type == EF_MSG_CHECKIN);
    CHECK_OK(ef_wire_decode(o.v[0].buf->data, o.v[0].buf->len, 64, &m));
    CHECK(m.type == EF_MSG_CHECKIN && m.job == JOB && m.sender == CID && m.round == 0);
    uint64_t seq0 = m.seq;
    ef_checkin ci;
    CHECK_OK(ef_decode_checkin(&m, &ci));
    CHECK(ci.n_train == 120 && ci.n_eval == 30);
    CHECK(o.v[1].to == EF_SERVER_ID && o.v[1].type == EF_MSG_LEAVE);
    CHECK_OK(ef_wire_decode(o.v[1].buf->data, o.v[1].buf->len, 64, &m));
    uint32_t reason = 0;
    CHECK_OK(ef_decode_leave(&m, &reason));
    CHECK(reason == 5 && m.sender == CID && m.job == JOB);
    CHECK(m.seq > seq0); /* the client's message counter advances */
    ef_outbox_free(&o);
    ef_client_free(c);
}

/* The TASK/MODEL pairing, refusals and the UPDATE, for a model of n floats
 * (n = 1 and 4: a TASK is larger than such a model's MODEL message). */
static void test_task(size_t n) {
    fake f = {0};
    ef_client *c = new_client(&f, n, 1);
    ef_outbox o = {0};
    float w[MAXN];
    for (size_t i = 0; i < n; i++) w[i] = 0.25f * (float)i + 1.0f;
    ef_task tk = std_task(3, w, n);

    /* a TASK without its MODEL */
    ef_buf *task = mk_task(JOB, EF_SERVER_ID, 11, &tk);
    CHECK(ef_client_handle(c, task, 0, &o) == EF_ERR_STATE);
    CHECK(f.fits == 0 && o.n == 0);

    ef_buf *model = mk_model(JOB, EF_SERVER_ID, 3, w, n);
    CHECK_OK(ef_client_handle(c, model, 0, &o));
    CHECK(o.n == 0);
    CHECK(model->refs == 2); /* the client holds the message itself, no copy */

    /* a TASK for another version, or whose hash does not match the model */
    ef_task other = tk;
    other.version = 2;
    ef_buf *b = mk_task(JOB, EF_SERVER_ID, 11, &other);
    CHECK(ef_client_handle(c, b, 0, &o) == EF_ERR_STATE);
    ef_buf_unref(b);
    other = tk;
    other.hash[7] ^= 0x10;
    b = mk_task(JOB, EF_SERVER_ID, 11, &other);
    CHECK(ef_client_handle(c, b, 0, &o) == EF_ERR_FORMAT);
    ef_buf_unref(b);
    float w2[MAXN];
    memcpy(w2, w, sizeof w2);
    w2[n - 1] += 1.0f; /* the hash of other floats */
    other = std_task(3, w2, n);
    b = mk_task(JOB, EF_SERVER_ID, 11, &other);
    CHECK(ef_client_handle(c, b, 0, &o) == EF_ERR_FORMAT);
    ef_buf_unref(b);
    CHECK(f.fits == 0 && o.n == 0 && model->refs == 2);

    /* not from this job's server */
    b = mk_task(JOB + 1, EF_SERVER_ID, 11, &tk);
    CHECK(ef_client_handle(c, b, 0, &o) == EF_ERR_STATE);
    ef_buf_unref(b);
    b = mk_task(JOB, 12, 11, &tk);
    CHECK(ef_client_handle(c, b, 0, &o) == EF_ERR_STATE);
    ef_buf_unref(b);
    b = mk_task(JOB, EF_BROADCAST_ID, 11, &tk);
    CHECK(ef_client_handle(c, b, 0, &o) == EF_ERR_STATE);
    ef_buf_unref(b);
    /* a MODEL from elsewhere, or of the wrong size, replaces nothing */
    b = mk_model(JOB, 12, 3, w2, n);
    CHECK(ef_client_handle(c, b, 0, &o) == EF_ERR_STATE);
    CHECK(b->refs == 1);
    ef_buf_unref(b);
    b = mk_model(JOB + 1, EF_SERVER_ID, 3, w2, n);
    CHECK(ef_client_handle(c, b, 0, &o) == EF_ERR_STATE);
    ef_buf_unref(b);
    b = mk_model(JOB, EF_SERVER_ID, 3, w2, n + 1);
    CHECK(ef_client_handle(c, b, 0, &o) == EF_ERR_FORMAT);
    CHECK(b->refs == 1);
    ef_buf_unref(b);
    b = mk_model(JOB, EF_SERVER_ID, 3, w2, n - 1);
    CHECK(ef_client_handle(c, b, 0, &o) == EF_ERR_FORMAT);
    CHECK(b->refs == 1);
    ef_buf_unref(b);
    /* a corrupted or truncated MODEL */
    b = mk_model(JOB, EF_SERVER_ID, 3, w2, n);
    b->data[b->len - 1] ^= 1;
    CHECK(ef_client_handle(c, b, 0, &o) == EF_ERR_FORMAT);
    b->data[b->len - 1] ^= 1;
    b->len--;
    CHECK(ef_client_handle(c, b, 0, &o) == EF_ERR_FORMAT);
    ef_buf_unref(b);
    CHECK(o.n == 0 && f.fits == 0 && model->refs == 2);

    /* the real TASK: fit sees the model and the task; the UPDATE carries
     * exactly its delta and results; the model is released */
    CHECK_OK(ef_client_handle(c, task, 5, &o));
    CHECK(f.fits == 1 && f.client == CID && f.worker == 5 && f.n == n);
    CHECK(memcmp(f.global, w, n * sizeof(float)) == 0);
    CHECK(memcmp(&f.task, &tk, sizeof tk) == 0);
    CHECK(model->refs == 1);
    CHECK(o.n == 1 && o.v[0].to == EF_SERVER_ID && o.v[0].type == EF_MSG_UPDATE);
    if (o.n == 1) {
        const ef_buf *u = o.v[0].buf;
        CHECK(u->len == EF_WIRE_HEADER + EF_UPDATE_FIXED + 4 * n);
        ef_msg m;
        CHECK_OK(ef_wire_decode(u->data, u->len, (size_t)-1, &m));
        CHECK(m.type == EF_MSG_UPDATE && m.job == JOB && m.sender == CID && m.round == 11);
        ef_update up;
        CHECK_OK(ef_decode_update(&m, &up));
        CHECK(up.version == 3 && up.n_examples == 17 && up.train_loss == 0.75f && up.steps == 9);
        CHECK(up.n == n);
        const uint8_t *p = u->data + EF_WIRE_HEADER;
        CHECK(rd32(p + 16) == 0 && rd32(p + 20) == 0); /* codec, pad */
        for (size_t i = 0; i < n; i++) CHECK(rdf32(up.raw + 4 * i) == delta_of(i));
    }
    ef_outbox_clear(&o);
    /* the same TASK again: the model is gone */
    CHECK(ef_client_handle(c, task, 0, &o) == EF_ERR_STATE);
    CHECK(f.fits == 1 && o.n == 0);

    /* a newer MODEL replaces an older one */
    ef_buf *m1 = mk_model(JOB, EF_SERVER_ID, 4, w, n);
    ef_buf *m2 = mk_model(JOB, EF_SERVER_ID, 5, w2, n);
    CHECK_OK(ef_client_handle(c, m1, 0, &o));
    CHECK_OK(ef_client_handle(c, m2, 0, &o));
    CHECK(m1->refs == 1 && m2->refs == 2);
    ef_task t5 = std_task(5, w2, n);
    b = mk_task(JOB, EF_SERVER_ID, 12, &t5);
    CHECK_OK(ef_client_handle(c, b, 0, &o));
    CHECK(f.fits == 2 && memcmp(f.global, w2, n * sizeof(float)) == 0);
    CHECK(m2->refs == 1 && o.n == 1);
    ef_buf_unref(b);
    ef_buf_unref(m1);
    ef_buf_unref(m2);
    ef_outbox_clear(&o);

    /* a failing fit: its status, no UPDATE */
    ef_buf *m3 = mk_model(JOB, EF_SERVER_ID, 6, w, n);
    ef_task t6 = std_task(6, w, n);
    b = mk_task(JOB, EF_SERVER_ID, 13, &t6);
    CHECK_OK(ef_client_handle(c, m3, 0, &o));
    f.fail = EF_ERR_RANGE;
    CHECK(ef_client_handle(c, b, 0, &o) == EF_ERR_RANGE);
    CHECK(f.fits == 3 && o.n == 0);
    f.fail = EF_OK;
    ef_buf_unref(b);
    ef_client_free(c); /* frees a held model too */
    CHECK(m3->refs == 1);
    ef_buf_unref(m3);

    ef_buf_unref(task);
    CHECK(model->refs == 1);
    ef_buf_unref(model);
    ef_outbox_free(&o);
}

static void test_eval(void) {
    const size_t n = 5;
    fake f = {0};
    ef_client *c = new_client(&f, n, 1);
    ef_outbox o = {0};
    float w[5] = {1, 2, 3, 4, 5};
    ef_buf *ev = mk_eval(JOB, EF_SERVER_ID, 9, 2, w, n);
    CHECK(ef_client_handle(c, ev, 0, &o) == EF_ERR_STATE); /* no model */
    ef_buf *model = mk_model(JOB, EF_SERVER_ID, 2, w, n);
    CHECK_OK(ef_client_handle(c, model, 0, &o));
    float w2[5] = {1, 2, 3, 4, 6};
    ef_buf *bad = mk_eval(JOB, EF_SERVER_ID, 9, 2, w2, n);
    CHECK(ef_client_handle(c, bad, 0, &o) == EF_ERR_FORMAT);
    ef_buf_unref(bad);
    bad = mk_eval(JOB, 3, 9, 2, w, n);
    CHECK(ef_client_handle(c, bad, 0, &o) == EF_ERR_STATE);
    ef_buf_unref(bad);
    CHECK(f.evals == 0 && o.n == 0 && model->refs == 2);
    CHECK_OK(ef_client_handle(c, ev, 1, &o));
    CHECK(f.evals == 1 && f.worker == 1 && memcmp(f.global, w, sizeof w) == 0);
    CHECK(model->refs == 1);
    CHECK(o.n == 1 && o.v[0].to == EF_SERVER_ID && o.v[0].type == EF_MSG_EVAL_RESULT);
    if (o.n == 1) {
        ef_msg m;
        CHECK_OK(ef_wire_decode(o.v[0].buf->data, o.v[0].buf->len, 64, &m));
        CHECK(m.sender == CID && m.job == JOB && m.round == 9);
        ef_eval_result r;
        CHECK_OK(ef_decode_eval_result(&m, &r));
        CHECK(r.version == 2 && r.n_examples == 20 && r.loss_sum == 4.5 && r.correct == 13);
        CHECK(rdf64(m.payload + 8) == 4.5);
    }
    ef_outbox_clear(&o);
    /* a trainer that cannot evaluate */
    ef_client *c2 = new_client(&f, n, 0);
    CHECK_OK(ef_client_handle(c2, model, 0, &o));
    CHECK(ef_client_handle(c2, ev, 0, &o) == EF_ERR_UNSUPPORTED);
    CHECK(o.n == 0);
    ef_client_free(c2);
    CHECK(model->refs == 1);
    ef_buf_unref(ev);
    ef_buf_unref(model);
    ef_outbox_free(&o);
    ef_client_free(c);
}

/* forget and leave drop the model (a crash, a departure). */
static void test_forget_leave(void) {
    const size_t n = 3;
    fake f = {0};
    ef_client *c = new_client(&f, n, 1);
    ef_outbox o = {0};
    float w[3] = {0.5f, -1.0f, 2.0f};
    ef_buf *model = mk_model(JOB, EF_SERVER_ID, 1, w, n);
    ef_task tk = std_task(1, w, n);
    ef_buf *task = mk_task(JOB, EF_SERVER_ID, 2, &tk);
    ef_client_forget(c); /* nothing held: a no-op */
    CHECK_OK(ef_client_handle(c, model, 0, &o));
    CHECK(model->refs == 2);
    ef_client_forget(c);
    CHECK(model->refs == 1);
    CHECK(ef_client_handle(c, task, 0, &o) == EF_ERR_STATE);
    CHECK(f.fits == 0 && o.n == 0);
    CHECK_OK(ef_client_handle(c, model, 0, &o));
    CHECK(model->refs == 2);
    CHECK_OK(ef_client_leave(c, 1, &o));
    CHECK(model->refs == 1);
    CHECK(o.n == 1 && o.v[0].type == EF_MSG_LEAVE);
    ef_outbox_clear(&o);
    CHECK(ef_client_handle(c, task, 0, &o) == EF_ERR_STATE);
    /* back again: it works as before */
    CHECK_OK(ef_client_handle(c, model, 0, &o));
    CHECK_OK(ef_client_handle(c, task, 0, &o));
    CHECK(f.fits == 1 && o.n == 1 && model->refs == 1);
    ef_buf_unref(model);
    ef_buf_unref(task);
    ef_outbox_free(&o);
    ef_client_free(c);
}

/* Messages a client does not take, and malformed ones. */
static void test_refusals(void) {
    const size_t n = 4;
    fake f = {0};
    ef_client *c = new_client(&f, n, 1);
    ef_outbox o = {0};
    float w[4] = {1, 2, 3, 4};
    ef_buf *model = mk_model(JOB, EF_SERVER_ID, 1, w, n);
    CHECK_OK(ef_client_handle(c, model, 0, &o));
    /* types only a server takes, even "from the server" */
    ef_msg_type types[] = {EF_MSG_CHECKIN, EF_MSG_UPDATE, EF_MSG_EVAL_RESULT, EF_MSG_LEAVE};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        ef_buf *b = ef_buf_new(EF_WIRE_HEADER + 8);
        memset(b->data + EF_WIRE_HEADER, 0, 8);
        ef_wire_seal(b->data, types[i], JOB, 1, EF_SERVER_ID, 1, 8);
        CHECK(ef_client_handle(c, b, 0, &o) != EF_OK);
        ef_buf_unref(b);
    }
    /* a TASK with invalid settings, a truncated TASK, a too-long one */
    ef_task tk = std_task(1, w, n);
    tk.lr = 0.0f;
    ef_buf *b = mk_task(JOB, EF_SERVER_ID, 1, &tk);
    CHECK(ef_client_handle(c, b, 0, &o) == EF_ERR_FORMAT);
    ef_buf_unref(b);
    tk = std_task(1, w, n);
    tk.momentum = NAN;
    b = mk_task(JOB, EF_SERVER_ID, 1, &tk);
    CHECK(ef_client_handle(c, b, 0, &o) == EF_ERR_FORMAT);
    ef_buf_unref(b);
    tk = std_task(1, w, n);
    b = mk_task(JOB, EF_SERVER_ID, 1, &tk);
    b->len = EF_WIRE_HEADER + 60;
    CHECK(ef_client_handle(c, b, 0, &o) == EF_ERR_FORMAT);
    ef_wire_seal(b->data, EF_MSG_TASK, JOB, 1, EF_SERVER_ID, 2, 60); /* consistent, too short */
    CHECK(ef_client_handle(c, b, 0, &o) == EF_ERR_FORMAT);
    b->len = 10;
    CHECK(ef_client_handle(c, b, 0, &o) == EF_ERR_FORMAT);
    ef_buf_unref(b);
    CHECK(f.fits == 0 && o.n == 0 && model->refs == 2);
    /* still usable */
    tk = std_task(1, w, n);
    b = mk_task(JOB, EF_SERVER_ID, 1, &tk);
    CHECK_OK(ef_client_handle(c, b, 0, &o));
    CHECK(f.fits == 1 && o.n == 1 && model->refs == 1);
    ef_buf_unref(b);
    ef_buf_unref(model);
    ef_outbox_free(&o);
    ef_client_free(c);
}

int main(void) {
    test_new();
    test_checkin_leave();
    test_task(1);
    test_task(4);
    test_task(37);
    test_eval();
    test_forget_leave();
    test_refusals();
    return tu_finish("fl/test_client");
}
