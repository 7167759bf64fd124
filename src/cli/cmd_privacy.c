/*
 * `edgefl privacy`: the (epsilon, delta) privacy a run of the
 * Poisson-subsampled Gaussian mechanism spends (RDP accountant,
 * include/edgefl/accountant.h), or with --target-epsilon the largest number
 * of steps that stays within a budget.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "edgefl/accountant.h"

static const char *USAGE =
    "edgefl privacy --q Q --sigma Z --delta D (--steps T | --target-epsilon E)\n"
    "                      [--orders A,B,...] [--json]";
static const char *DESC =
    "Privacy spent by T steps of the Poisson-subsampled Gaussian mechanism (each\n"
    "participant sampled with probability Q, Gaussian noise of Z times the clipping\n"
    "norm), by Renyi differential privacy (Mironov et al. 2019) converted to\n"
    "(epsilon, delta) with the bound of Balle et al. 2020, as Opacus and TensorFlow\n"
    "Privacy compute it. With --target-epsilon E instead of --steps: the largest T\n"
    "whose epsilon stays <= E. Default orders: 1.1, 1.2, ..., 10.9, 12, ..., 63.";

/* Largest step count searched for --target-epsilon (exact as a JSON number). */
#define STEPS_LIMIT (UINT64_C(1) << 53)

/* Parses "a,b,c" into a new array (caller frees); 0 and a message on error. */
static int parse_orders(const char *s, double **out, size_t *n) {
    size_t cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    double *v = malloc(cap * sizeof *v);
    if (!v) {
        cli_error("privacy", "out of memory");
        return 0;
    }
    size_t k = 0;
    const char *p = s;
    for (;;) {
        char *end = NULL;
        double x = strtod(p, &end);
        if (end == p || (*end && *end != ',') || !isfinite(x)) {
            fprintf(stderr, "edgefl privacy: --orders: '%s' is not a comma-separated list of "
                            "numbers\n", s);
            free(v);
            return 0;
        }
        v[k++] = x;
        if (!*end) break;
        p = end + 1;
    }
    *out = v;
    *n = k;
    return 1;
}

/* A note when the best order is at an end of the list: more orders beyond
 * it may give a smaller epsilon (as Opacus warns). */
static void note_edge_order(double eps, double order, const double *orders, size_t n) {
    if (isnan(order) || n < 2 || eps == 0.0) return; /* 0: every order ties */
    double lo = orders[0], hi = orders[0];
    for (size_t k = 1; k < n; k++) {
        lo = fmin(lo, orders[k]);
        hi = fmax(hi, orders[k]);
    }
    if (order == lo || order == hi)
        fprintf(stderr, "edgefl privacy: note: the best order %g is the %s one given; a wider "
                        "range of --orders may give a smaller epsilon\n",
                order, order == lo ? "smallest" : "largest");
}

int cmd_privacy(int argc, char **argv) {
    double q = 0, sigma = 0, delta = 0, target = 0;
    uint64_t steps = 0;
    const char *orders_arg = NULL;
    int json = 0;
    cli_opt opts[] = {
        {"q", CLI_FLOAT, &q, "Q", "chance a participant is in a step (required)", 0, 1, NULL, 0},
        {"sigma", CLI_FLOAT, &sigma, "Z", "noise multiplier: noise std / clip norm (required)", 0, 1e100, NULL, 0},
        {"delta", CLI_FLOAT, &delta, "D", "delta of the guarantee, in (0, 1) (required)", 0, 1, NULL, 0},
        {"steps", CLI_U64, &steps, "T", "steps (rounds) of the mechanism", 0, 0, NULL, 0},
        {"target-epsilon", CLI_FLOAT, &target, "E", "instead of --steps: most steps within epsilon E", 0, 1e300, NULL, 0},
        {"orders", CLI_STR, &orders_arg, "A,B,...", "RDP orders > 1 (default 1.1..10.9, 12..63)", 0, 0, NULL, 0},
        {"json", CLI_FLAG, &json, NULL, "print one JSON object on stdout", 0, 0, NULL, 0},
        {0},
    };
    int help;
    int rc = cli_parse("privacy", argc, argv, 2, opts, &help, USAGE, DESC);
    if (rc || help) return rc;
    static const char *required[] = {"q", "sigma", "delta"};
    for (int i = 0; i < 3; i++)
        if (!cli_find(opts, required[i])->seen) {
            fprintf(stderr, "edgefl privacy: --%s is required\nTry 'edgefl privacy --help'.\n",
                    required[i]);
            return CLI_EXIT_USAGE;
        }
    int has_steps = cli_find(opts, "steps")->seen;
    int has_target = cli_find(opts, "target-epsilon")->seen;
    if (has_steps == has_target) {
        fprintf(stderr, "edgefl privacy: give exactly one of --steps and --target-epsilon\n"
                        "Try 'edgefl privacy --help'.\n");
        return CLI_EXIT_USAGE;
    }
    if (!(delta > 0 && delta < 1)) {
        fprintf(stderr, "edgefl privacy: --delta: %g is not in (0, 1)\n", delta);
        return CLI_EXIT_USAGE;
    }

    double *own_orders = NULL;
    const double *orders;
    size_t n_orders;
    if (orders_arg) {
        if (!parse_orders(orders_arg, &own_orders, &n_orders)) return CLI_EXIT_USAGE;
        orders = own_orders;
    } else {
        orders = ef_rdp_default_orders(&n_orders);
    }

    int status = CLI_EXIT_FAIL;
    double *rdp = malloc(n_orders * sizeof *rdp);
    if (!rdp) {
        cli_error("privacy", "out of memory");
        goto done;
    }
    ef_status st = EF_OK;
    if (has_target)
        st = ef_rdp_max_steps(q, sigma, orders, n_orders, delta, target, STEPS_LIMIT, &steps);
    double eps = 0, order = NAN;
    if (st == EF_OK) st = ef_rdp_compute(q, sigma, steps, orders, n_orders, rdp);
    if (st == EF_OK) st = ef_rdp_epsilon(orders, rdp, n_orders, delta, &eps, &order);
    if (st != EF_OK) {
        cli_error("privacy", "%s", ef_last_error());
        status = st == EF_ERR_INVALID ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
        goto done;
    }
    if (!has_target || steps > 0) note_edge_order(eps, order, orders, n_orders);

    if (json) {
        cJSON *j = cJSON_CreateObject();
        if (!j) goto done;
        cJSON_AddStringToObject(j, "command", "privacy");
        cJSON_AddNumberToObject(j, "epsilon", eps); /* null when infinite */
        cJSON_AddNumberToObject(j, "order", order); /* null when there is none */
        cJSON_AddNumberToObject(j, "q", q);
        cJSON_AddNumberToObject(j, "sigma", sigma);
        cJSON_AddNumberToObject(j, "steps", (double)steps);
        cJSON_AddNumberToObject(j, "delta", delta);
        if (has_target) {
            cJSON_AddNumberToObject(j, "target_epsilon", target);
            cJSON_AddNumberToObject(j, "max_steps", (double)steps);
            cJSON_AddBoolToObject(j, "unbounded", steps == STEPS_LIMIT);
        }
        cJSON *arr = orders_arg ? cJSON_CreateDoubleArray(orders, (int)n_orders) : NULL;
        if (arr) cJSON_AddItemToObject(j, "orders", arr);
        else cJSON_AddStringToObject(j, "orders", "default");
        cJSON_AddStringToObject(j, "accountant", "rdp");
        if (cli_print_json("privacy", j) != 0) goto done;
    } else if (!has_target) {
        if (isinf(eps))
            printf("epsilon = inf at delta = %g: sigma = 0 adds no noise, no privacy "
                   "(%llu steps, q = %g)\n", delta, (unsigned long long)steps, q);
        else
            printf("epsilon = %.6g at delta = %g (best RDP order %g) after %llu steps with "
                   "q = %g, sigma = %g\n",
                   eps, delta, order, (unsigned long long)steps, q, sigma);
    } else if (steps == STEPS_LIMIT) {
        printf("max steps >= %llu (no limit found): epsilon = %.6g <= %g at delta = %g with "
               "q = %g, sigma = %g\n",
               (unsigned long long)steps, eps, target, delta, q, sigma);
    } else if (steps == 0) {
        printf("max steps = 0: one step already spends more than epsilon = %g at delta = %g "
               "with q = %g, sigma = %g\n", target, delta, q, sigma);
    } else {
        printf("max steps = %llu: epsilon = %.6g <= %g at delta = %g (best RDP order %g) with "
               "q = %g, sigma = %g\n",
               (unsigned long long)steps, eps, target, delta, order, q, sigma);
    }
    status = 0;
done:
    free(rdp);
    free(own_orders);
    return status;
}
