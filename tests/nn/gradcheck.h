/*
 * Finite-difference gradient check for any kernel pair, header-only for the
 * C tests. The op is a context plus two callbacks: forward(ctx) reads the
 * input buffers and writes `out` (and whatever it saves for backward);
 * backward(ctx) reads `dout` (and the saved state) and ACCUMULATES into the
 * gradient buffer of each input. Integer inputs (ids, targets) and sizes
 * live in the context and are not checked.
 *
 * The scalar loss is L = sum_i w_i out_i with fixed random weights w in
 * [-1, 1], so dL/dout = w is written to `dout`. The harness:
 *   1. runs forward twice and requires identical bits (a pure function is
 *      what the central difference assumes);
 *   2. fills every gradient buffer with random values g0, runs backward once
 *      and takes analytic = dx - g0, so a backward that overwrites (=)
 *      instead of accumulating (+=) fails; it also requires backward to leave
 *      every input buffer unchanged;
 *   3. for every element of each input, or for `max_samples` random elements
 *      (drawn with replacement) of larger inputs, computes the central
 *      difference numeric = (L(x + eps) - L(x - eps)) / (x+ - x-), with L
 *      summed in double and the denominator the step actually representable
 *      in float;
 *   4. passes an input when every checked element has
 *      |analytic - numeric| <= atol + rtol * |numeric|   and
 *      ||analytic - numeric||_2 <= max_rel_l2 * ||numeric||_2 (+ atol, for
 *      an all-zero gradient) over the checked elements.
 * Defaults (gc_defaults): eps = 1e-2, atol = 1e-3, rtol = 1e-2,
 * max_rel_l2 = 1e-2, max_samples = 200. With float forward passes and
 * inputs and outputs of order 1, rounding noise in the numeric gradient is
 * ~1e-5 and the O(eps^2) truncation error ~1e-4, well inside the bounds,
 * while a gradient that is 5% off (or one element off by 0.05) is rejected.
 * The noise grows with |out| and with how many outputs one input touches;
 * for outputs or gradients much larger than 1 (wide linear layers), scale
 * atol up with them, or keep the shapes small.
 * Ops with kinks (ReLU, max-pool) need inputs kept farther than eps from the
 * kink (or a smaller eps), else the numeric side is wrong, not the kernel.
 *
 * Example (linear, out = inp @ weight^T + bias):
 *     typedef struct { float *out, *inp, *w, *b, *dout, *dinp, *dw, *db; int N, IC, OC; } lin;
 *     static void lin_fwd(void *p) {
 *         lin *c = p;
 *         ef_linear_forward(c->out, c->inp, c->w, c->b, c->N, c->IC, c->OC, NULL);
 *     }
 *     static void lin_bwd(void *p) {
 *         lin *c = p;
 *         ef_linear_backward(c->dinp, c->dw, c->db, c->dout, c->inp, c->w, c->N, c->IC,
 *                            c->OC, NULL);
 *     }
 *     ...
 *     gc_input in[3] = {{"inp", c.inp, c.dinp, N * IC}, {"weight", c.w, c.dw, OC * IC},
 *                       {"bias", c.b, c.db, OC}};
 *     gc_op op = {"linear", &c, lin_fwd, lin_bwd, c.out, c.dout, N * OC, in, 3};
 *     CHECK(gc_check(&op, NULL, NULL) == 0);   // or gc_check(&op, &opts, &report)
 */
#ifndef EDGEFL_TESTS_GRADCHECK_H
#define EDGEFL_TESTS_GRADCHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgefl/rng.h"

/* One float input of the op. */
typedef struct gc_input {
    const char *name; /* for messages */
    float *x;         /* (n) read by forward; perturbed in place, always restored */
    float *dx;        /* (n) backward accumulates dL/dx here; NULL: not checked */
    size_t n;
} gc_input;

/* The op under test. All buffers are owned by the caller. */
typedef struct gc_op {
    const char *name;
    void *ctx;                   /* passed to both callbacks */
    void (*forward)(void *ctx);  /* reads inputs, writes out (and saved state) */
    void (*backward)(void *ctx); /* reads dout, accumulates into every non-NULL dx */
    float *out;                  /* (n_out) written by forward */
    float *dout;                 /* (n_out) read by backward; filled by the harness */
    size_t n_out;
    gc_input *inputs;
    int n_inputs;
} gc_op;

typedef struct gc_opts {
    float eps;          /* central-difference step, absolute */
    double atol, rtol;  /* per element: |a - n| <= atol + rtol * |n| */
    double max_rel_l2;  /* ||a - n|| <= max_rel_l2 * ||n|| + atol over checked elements */
    size_t max_samples; /* per input; more elements than this: random sample */
    uint64_t seed;      /* for w, g0 and the sample */
    int verbose;        /* -1 silent, 0 failures only, 1 also a line per input */
} gc_opts;

/* Worst figures over all checked inputs of one gc_check call. */
typedef struct gc_report {
    double max_abs_err; /* max |a - n| */
    double max_ratio;   /* max |a - n| / (atol + rtol |n|); > 1 fails */
    double max_rel_l2;  /* max over inputs of ||a - n|| / ||n|| */
    size_t checked;     /* elements compared */
} gc_report;

/* The defaults above; EDGEFL_GRADCHECK_VERBOSE=1 in the environment makes
 * them print a line per checked input. */
static inline gc_opts gc_defaults(void) {
    gc_opts o = {1e-2f, 1e-3, 1e-2, 1e-2, 200, 0x9c0ffee5ull, 0};
    const char *v = getenv("EDGEFL_GRADCHECK_VERBOSE");
    if (v && *v) o.verbose = atoi(v);
    return o;
}

static inline double gc__loss(const gc_op *op) {
    double l = 0.0;
    for (size_t i = 0; i < op->n_out; i++) l += (double)op->dout[i] * (double)op->out[i];
    return l;
}

/*
 * Checks op's backward against central differences of its forward. `opts`
 * NULL means gc_defaults(); `report` may be NULL. Returns 0 when every input
 * passes, else the number of failed inputs (plus 1 for each failed sanity
 * check: non-repeatable forward, backward writing an input, out of memory).
 * On return the inputs hold their original values and forward has been run
 * on them.
 */
static inline int gc_check(const gc_op *op, const gc_opts *opts, gc_report *report) {
    gc_opts o = opts ? *opts : gc_defaults();
    gc_report rep = {0, 0, 0, 0};
    int failed = 0;
    ef_rng rng;
    ef_rng_seed(&rng, o.seed);
    float *out_copy = malloc((op->n_out ? op->n_out : 1) * sizeof(float));
    float **g0 = calloc((size_t)op->n_inputs + 1, sizeof(float *));
    float **x0 = calloc((size_t)op->n_inputs + 1, sizeof(float *));
    if (!out_copy || !g0 || !x0) {
        fprintf(stderr, "gradcheck %s: out of memory\n", op->name);
        failed = 1;
        goto done;
    }

    for (size_t i = 0; i < op->n_out; i++) op->dout[i] = 2.0f * ef_rng_uniform(&rng) - 1.0f;
    op->forward(op->ctx);
    memcpy(out_copy, op->out, op->n_out * sizeof(float));
    op->forward(op->ctx);
    if (memcmp(out_copy, op->out, op->n_out * sizeof(float)) != 0) {
        if (o.verbose >= 0)
            fprintf(stderr, "gradcheck %s: forward is not repeatable\n", op->name);
        failed++;
    }

    for (int k = 0; k < op->n_inputs; k++) {
        const gc_input *in = &op->inputs[k];
        x0[k] = malloc((in->n ? in->n : 1) * sizeof(float));
        g0[k] = malloc((in->n ? in->n : 1) * sizeof(float));
        if (!x0[k] || !g0[k]) {
            fprintf(stderr, "gradcheck %s: out of memory\n", op->name);
            failed++;
            goto done;
        }
        memcpy(x0[k], in->x, in->n * sizeof(float));
        for (size_t i = 0; i < in->n; i++) g0[k][i] = ef_rng_uniform(&rng) - 0.5f;
        if (in->dx) memcpy(in->dx, g0[k], in->n * sizeof(float));
    }
    op->backward(op->ctx);
    for (int k = 0; k < op->n_inputs; k++) {
        const gc_input *in = &op->inputs[k];
        if (memcmp(x0[k], in->x, in->n * sizeof(float)) != 0) {
            if (o.verbose >= 0)
                fprintf(stderr, "gradcheck %s: backward modified input %s\n", op->name,
                        in->name);
            memcpy(in->x, x0[k], in->n * sizeof(float));
            failed++;
        }
    }

    for (int k = 0; k < op->n_inputs; k++) {
        const gc_input *in = &op->inputs[k];
        if (!in->dx || in->n == 0) continue;
        int sampled = in->n > o.max_samples;
        size_t count = sampled ? o.max_samples : in->n;
        double err2 = 0.0, ref2 = 0.0, worst_ratio = 0.0, worst_abs = 0.0;
        int bad = 0;
        for (size_t s = 0; s < count; s++) {
            size_t i = sampled ? (size_t)ef_rng_below(&rng, in->n) : s;
            float orig = in->x[i];
            float xp = orig + o.eps, xm = orig - o.eps;
            in->x[i] = xp;
            op->forward(op->ctx);
            double lp = gc__loss(op);
            in->x[i] = xm;
            op->forward(op->ctx);
            double lm = gc__loss(op);
            in->x[i] = orig;
            double num = (lp - lm) / ((double)xp - (double)xm);
            double ana = (double)in->dx[i] - (double)g0[k][i];
            double err = fabs(ana - num);
            double ratio = err / (o.atol + o.rtol * fabs(num));
            err2 += err * err;
            ref2 += num * num;
            if (err > worst_abs) worst_abs = err;
            if (ratio > worst_ratio) worst_ratio = ratio;
            if (!(ratio <= 1.0) || isnan(ana)) { // NaN anywhere fails
                if (bad < 5 && o.verbose >= 0)
                    fprintf(stderr, "gradcheck %s: d%s[%zu] analytic %.7g numeric %.7g\n",
                            op->name, in->name, i, ana, num);
                bad++;
            }
        }
        double rel_l2 = sqrt(err2) / (sqrt(ref2) > 0 ? sqrt(ref2) : 1.0);
        int l2_bad = sqrt(err2) > o.max_rel_l2 * sqrt(ref2) + o.atol;
        if (bad || l2_bad) {
            if (o.verbose >= 0)
                fprintf(stderr,
                        "gradcheck %s: d%s FAILED: %d of %zu elements out of tolerance, "
                        "max |err| %.3g, relative L2 error %.3g\n",
                        op->name, in->name, bad, count, worst_abs, rel_l2);
            failed++;
        } else if (o.verbose >= 1) {
            printf("gradcheck %s: d%s ok (%zu elements, max |err| %.3g, rel L2 %.3g)\n",
                   op->name, in->name, count, worst_abs, rel_l2);
        }
        rep.checked += count;
        if (worst_abs > rep.max_abs_err) rep.max_abs_err = worst_abs;
        if (worst_ratio > rep.max_ratio) rep.max_ratio = worst_ratio;
        if (rel_l2 > rep.max_rel_l2) rep.max_rel_l2 = rel_l2;
    }
    op->forward(op->ctx); // leave saved state matching the restored inputs

done:
    if (x0)
        for (int k = 0; k < op->n_inputs; k++) free(x0[k]);
    if (g0)
        for (int k = 0; k < op->n_inputs; k++) free(g0[k]);
    free(x0);
    free(g0);
    free(out_copy);
    if (report) *report = rep;
    return failed;
}

#endif /* EDGEFL_TESTS_GRADCHECK_H */
