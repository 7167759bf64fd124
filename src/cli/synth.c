/*
 * The synthetic trainer of `edgefl loadgen` (see synth.h). Gaussian values
 * come from a table of 2^16 quantiles of the standard normal distribution,
 * Phi^-1((i + 0.5) / 2^16), indexed by 16-bit slices of xoshiro256**
 * output: four values per random number, a few nanoseconds each where
 * Box-Muller (ef_rng_normal) takes about 30. The table truncates the tails
 * at 4.3 standard deviations, which is all a load test needs.
 */
#include <math.h>
#include <string.h>

#include "edgefl/rng.h"
#include "synth.h"

#define TABLE_BITS 16
#define TABLE_N (1u << TABLE_BITS)

struct synth {
    float table[TABLE_N]; /* noise x Phi^-1((i + 0.5) / TABLE_N) */
    double noise;
    uint32_t lo, hi, eval;
    uint64_t seed;
};

/* Phi^-1(p) for 0.5 <= p < 1 by bisection on Phi(x) = erfc(-x / sqrt 2) / 2:
 * slow (64 erfc calls) but exact to double precision; the table needs it
 * 2^15 times. */
static double normal_quantile_upper(double p) {
    double lo = 0.0, hi = 10.0;
    for (int i = 0; i < 64; i++) {
        double mid = 0.5 * (lo + hi);
        if (0.5 * erfc(-mid / sqrt(2.0)) < p) lo = mid;
        else hi = mid;
    }
    return 0.5 * (lo + hi);
}

ef_status synth_new(synth **out, double noise, uint32_t lo, uint32_t hi, uint32_t eval,
                    uint64_t seed) {
    *out = NULL;
    if (!(noise > 0) || !isfinite(noise) || noise > 1e6)
        return EF_ERR_INVALID;
    if (lo < 1 || hi < lo) return EF_ERR_INVALID;
    synth *s = ef_malloc(sizeof *s);
    if (!s) return EF_ERR_NOMEM;
    s->noise = noise, s->lo = lo, s->hi = hi, s->eval = eval, s->seed = seed;
    for (uint32_t i = TABLE_N / 2; i < TABLE_N; i++) {
        double q = normal_quantile_upper((i + 0.5) / TABLE_N);
        s->table[i] = (float)(noise * q);
        s->table[TABLE_N - 1 - i] = (float)(-noise * q); /* symmetric */
    }
    *out = s;
    return EF_OK;
}

void synth_free(synth *s) { ef_free(s); }

uint32_t synth_examples(const synth *s, uint32_t id) {
    if (s->lo == s->hi) return s->lo;
    ef_rng base, r;
    ef_rng_seed(&base, s->seed ^ 0x6c6f616467656e31ull); /* "loadgen1" */
    ef_rng_fork(&base, id, &r);
    return s->lo + (uint32_t)ef_rng_below(&r, (uint64_t)(s->hi - s->lo) + 1);
}

uint32_t synth_eval_examples(const synth *s) { return s->eval; }

void synth_delta(const synth *s, uint64_t seed, uint32_t id, float *out, size_t n) {
    ef_rng base, r;
    ef_rng_seed(&base, seed);
    ef_rng_fork(&base, id, &r);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint64_t u = ef_rng_u64(&r);
        out[i] = s->table[u & 0xFFFF];
        out[i + 1] = s->table[(u >> 16) & 0xFFFF];
        out[i + 2] = s->table[(u >> 32) & 0xFFFF];
        out[i + 3] = s->table[u >> 48];
    }
    if (i < n) {
        uint64_t u = ef_rng_u64(&r);
        for (; i < n; i++, u >>= 16) out[i] = s->table[u & 0xFFFF];
    }
}

/* A value in [0, 1) of client `id` for `stream` (per task when seed is the
 * task's). */
static double draw(uint64_t seed, uint32_t id, uint64_t stream) {
    ef_rng base, r;
    ef_rng_seed(&base, seed ^ stream);
    ef_rng_fork(&base, id, &r);
    return ef_rng_uniform_double(&r);
}

static ef_status synth_fit(void *user, int worker, uint32_t client, const float *global,
                           size_t n, const ef_task *task, float *delta, ef_fit_result *res) {
    (void)worker;
    (void)global; /* the light client only checked that it holds the task's model */
    const synth *s = user;
    synth_delta(s, task->seed, client, delta, n);
    uint32_t ex = synth_examples(s, client);
    uint32_t batch = task->batch ? task->batch : 1;
    res->n_examples = ex;
    res->steps = (uint32_t)task->epochs * ((ex + batch - 1) / batch);
    double z = 2.0 * draw(task->seed, client, 0x6c6f7373ull) - 1.0; /* "loss" */
    res->train_loss = (float)(2.302585 * exp(-0.05 * task->version) * (1.0 + 0.05 * z));
    return EF_OK;
}

static ef_status synth_evaluate(void *user, int worker, uint32_t client, const float *global,
                                size_t n, ef_eval_counts *res) {
    (void)worker;
    (void)global;
    (void)n;
    const synth *s = user;
    double u = draw(s->seed, client, 0x6576616cull); /* "eval" */
    res->n_examples = s->eval;
    res->correct = (uint32_t)floor(s->eval * (0.5 + 0.3 * u));
    res->loss_sum = s->eval * (1.0 + 0.2 * u);
    return EF_OK;
}

ef_trainer synth_trainer(synth *s) {
    ef_trainer t = {synth_fit, synth_evaluate, s};
    return t;
}
