/*
 * The simulator end to end on real Fashion-MNIST: runs are reproducible
 * (same seed: identical records and model, whatever the thread count;
 * another seed: different), device profiles produce what they promise
 * (dropouts, late clients cut by the deadline, over-selection closing a
 * round at clients_per_round), asynchronous mode aggregates every K updates
 * with bounded staleness, federated evaluation reports accuracy, attackers
 * are counted, and 10,000 registered clients cost little memory.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgefl/edgefl.h"
#include "test_util.h"

static int quick;
static ef_dataset train, test;

typedef struct run {
    ef_round_record *recs;
    size_t n;
    float *model;
    size_t n_params;
    double sim_time;
} run;

static run simulate(const ef_sim_config *cfg) {
    run r = {0};
    ef_sim *s = NULL;
    ef_status st = ef_sim_new(&s, cfg, &train, &test);
    CHECK_OK(st);
    if (st) return r;
    CHECK_OK(ef_sim_run(s, NULL, NULL));
    const ef_round_record *recs = ef_sim_records(s, &r.n);
    r.recs = malloc((r.n ? r.n : 1) * sizeof *r.recs);
    memcpy(r.recs, recs, r.n * sizeof *r.recs);
    const float *m = ef_sim_model(s, &r.n_params);
    r.model = malloc(r.n_params * sizeof(float));
    memcpy(r.model, m, r.n_params * sizeof(float));
    r.sim_time = ef_sim_time(s);
    ef_sim_free(s);
    return r;
}

static void run_free(run *r) {
    free(r->recs);
    free(r->model);
    memset(r, 0, sizeof *r);
}

/* Records equal in everything but wall-clock time. */
static int same_records(const run *a, const run *b) {
    if (a->n != b->n) return 0;
    for (size_t i = 0; i < a->n; i++) {
        ef_round_record x = a->recs[i], y = b->recs[i];
        x.wall_s = y.wall_s = 0;
        if (memcmp(&x, &y, sizeof x) != 0) return 0;
    }
    return 1;
}

static ef_sim_config base(void) {
    ef_sim_config c = ef_sim_defaults();
    c.model.arch = EF_MODEL_LOGREG;
    c.n_clients = 40;
    c.partition.kind = EF_PART_DIRICHLET;
    c.partition.alpha = 0.5;
    c.server.rounds = quick ? 2 : 4;
    c.server.clients_per_round = 8;
    c.server.lr = 0.01f;
    c.threads = 2;
    c.eval_limit = 1000;
    c.seed = 7;
    return c;
}

static void test_reproducible(void) {
    ef_sim_config c = base();
    ef_device_profile_builtin("heavy-tail", &c.profile);
    c.server.overselect = 1.5;
    c.server.deadline_s = 5.0;
    run a = simulate(&c), b = simulate(&c);
    c.threads = 1;
    run one = simulate(&c);
    c.threads = 2;
    c.seed = 8;
    run other = simulate(&c);
    CHECK(a.n == c.server.rounds);
    CHECK_MSG(same_records(&a, &b), "same seed, different rounds");
    CHECK_MSG(a.n_params && memcmp(a.model, b.model, a.n_params * 4) == 0,
              "same seed, different model");
    CHECK_MSG(same_records(&a, &one) && memcmp(a.model, one.model, a.n_params * 4) == 0,
              "1 and 2 threads differ");
    CHECK_MSG(!same_records(&a, &other), "another seed gives the same rounds");
    run_free(&a);
    run_free(&b);
    run_free(&one);
    run_free(&other);
}

static void test_profiles(void) {
    /* dropouts and unavailable clients are counted, and rounds still finish */
    ef_sim_config c = base();
    ef_device_profile_builtin("ideal", &c.profile);
    c.profile.dropout = 0.3;
    c.profile.availability = 0.8;
    c.profile.offline_s = 1.0;
    run r = simulate(&c);
    uint32_t dropped = 0;
    for (size_t i = 0; i < r.n; i++) {
        dropped += r.recs[i].dropped;
        CHECK(r.recs[i].completed + r.recs[i].dropped + r.recs[i].late == r.recs[i].selected);
    }
    CHECK_MSG(dropped > 0, "30%% dropout and 80%% availability but no client dropped");
    CHECK(r.n == c.server.rounds);
    run_free(&r);

    /* over-selection: the round closes at clients_per_round updates */
    c = base();
    ef_device_profile_builtin("heavy-tail", &c.profile);
    c.profile.dropout = 0;
    c.profile.availability = 1;
    c.server.overselect = 2.0;
    r = simulate(&c);
    for (size_t i = 0; i < r.n; i++) {
        CHECK(r.recs[i].selected == 16);
        CHECK(r.recs[i].completed == 8 && r.recs[i].late == 8);
        CHECK(r.recs[i].aggregated == 1);
    }
    double overselected = r.sim_time;
    run_free(&r);
    c.server.overselect = 1.0;
    r = simulate(&c);
    for (size_t i = 0; i < r.n; i++) CHECK(r.recs[i].completed == 8 && r.recs[i].late == 0);
    CHECK_MSG(overselected < r.sim_time, "over-selection did not shorten rounds (%.1f vs %.1f s)",
              overselected, r.sim_time);
    run_free(&r);

    /* a deadline shorter than the slow devices need cuts them */
    c.server.deadline_s = 0.15;
    c.server.overselect = 1.0;
    r = simulate(&c);
    uint32_t late = 0;
    for (size_t i = 0; i < r.n; i++) {
        late += r.recs[i].late;
        CHECK(r.recs[i].sim_end - r.recs[i].sim_start <= 0.15 + 1e-9);
    }
    CHECK_MSG(late > 0, "a 0.15 s deadline on heavy-tailed devices cut nobody");
    run_free(&r);
}

static void test_async_and_fed_eval(void) {
    ef_sim_config c = base();
    ef_device_profile_builtin("mobile", &c.profile);
    c.profile.dropout = 0;
    c.server.async = 1;
    c.server.buffer_k = 5;
    c.server.max_staleness = 3;
    run r = simulate(&c);
    CHECK(r.n == c.server.rounds);
    for (size_t i = 0; i < r.n; i++) {
        CHECK(r.recs[i].completed == 5 && r.recs[i].aggregated);
        CHECK(r.recs[i].staleness_max <= 3);
    }
    run_free(&r);

    c = base();
    c.holdout = 0.2;
    c.server.fed_eval_every = 1;
    c.server.fed_eval_clients = 5;
    r = simulate(&c);
    for (size_t i = 0; i < r.n; i++)
        CHECK_MSG(r.recs[i].fed_accuracy > 0.2 && r.recs[i].fed_accuracy <= 1,
                  "round %zu fed accuracy %f", i + 1, r.recs[i].fed_accuracy);
    run_free(&r);

    ef_sim *s = NULL;
    c.holdout = 0;
    CHECK(ef_sim_new(&s, &c, &train, &test) == EF_ERR_INVALID && s == NULL);
}

static void test_attackers(void) {
    ef_sim_config c = base();
    c.malicious = 0.25;
    ef_sim *s = NULL;
    CHECK_OK(ef_sim_new(&s, &c, &train, &test));
    if (s) CHECK(ef_sim_malicious_count(s) == 10);
    ef_sim_free(s);
}

static void test_many_clients(void) {
    ef_sim_config c = base();
    c.n_clients = quick ? 2000 : 10000;
    c.partition.kind = EF_PART_IID;
    c.server.clients_per_round = 50;
    c.server.rounds = 2;
    double before = ef_peak_rss_mb();
    run r = simulate(&c);
    CHECK(r.n == 2);
    for (size_t i = 0; i < r.n; i++) CHECK(r.recs[i].completed == 50);
    /* logreg is 31 KB: 10,000 clients must not cost anywhere near 10,000 models */
    CHECK_MSG(ef_peak_rss_mb() - before < 200, "peak RSS grew by %.0f MB",
              ef_peak_rss_mb() - before);
    run_free(&r);
}

int main(void) {
    quick = getenv("EDGEFL_TEST_QUICK") != NULL;
    if (ef_dataset_load(&train, "fashion-mnist", NULL, 1) != EF_OK ||
        ef_dataset_load_n(&test, "fashion-mnist", NULL, 0, 1000) != EF_OK) {
        fprintf(stderr, "fashion-mnist not available (%s): skipped\n", ef_last_error());
        return TU_SKIP;
    }
    test_reproducible();
    test_profiles();
    test_async_and_fed_eval();
    test_attackers();
    test_many_clients();
    ef_dataset_free(&train);
    ef_dataset_free(&test);
    return tu_finish("sim/test_sim");
}
