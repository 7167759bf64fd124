/*
 * Device profiles of the simulator: distributions of training speed, link
 * bandwidth and latency, availability and dropout, and the per-client draw,
 * which depends only on the seed and the client id (no per-client storage).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core_internal.h"
#include "edgefl/rng.h"
#include "edgefl/sim.h"

double ef_dist_sample(const ef_dist *d, ef_rng *r) {
    switch (d->kind) {
    case EF_DIST_CONST: return d->a;
    case EF_DIST_LOGNORMAL: return d->a * exp(d->b * ef_rng_normal(r));
    case EF_DIST_PARETO: {
        double u = 1.0 - ef_rng_uniform_double(r); /* (0, 1] */
        return d->a / pow(u, 1.0 / d->b);
    }
    case EF_DIST_INVPARETO: {
        double u = 1.0 - ef_rng_uniform_double(r);
        return d->a * pow(u, 1.0 / d->b);
    }
    case EF_DIST_UNIFORM: return d->a + (d->b - d->a) * ef_rng_uniform_double(r);
    }
    return d->a;
}

/* Number with an optional k/M/G suffix; 0 on failure. */
static int parse_num(const char *s, const char **end, double *out) {
    char *e;
    double v = strtod(s, &e);
    if (e == s || !isfinite(v)) return 0;
    if (*e == 'k') v *= 1e3, e++;
    else if (*e == 'M') v *= 1e6, e++;
    else if (*e == 'G') v *= 1e9, e++;
    *out = v;
    *end = e;
    return 1;
}

ef_status ef_dist_parse(const char *text, ef_dist *out) {
    static const struct {
        const char *name;
        ef_dist_kind kind;
        int args;
    } kinds[] = {{"const", EF_DIST_CONST, 1},         {"lognormal", EF_DIST_LOGNORMAL, 2},
                 {"pareto", EF_DIST_PARETO, 2},       {"invpareto", EF_DIST_INVPARETO, 2},
                 {"uniform", EF_DIST_UNIFORM, 2}};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        size_t n = strlen(kinds[k].name);
        if (strncmp(text, kinds[k].name, n) != 0 || text[n] != ':') continue;
        const char *p = text + n + 1;
        double v[2] = {0, 0};
        for (int i = 0; i < kinds[k].args; i++) {
            if (i > 0) {
                if (*p != ':') goto bad;
                p++;
            }
            if (!parse_num(p, &p, &v[i])) goto bad;
        }
        if (*p) goto bad;
        ef_dist d = {kinds[k].kind, v[0], v[1]};
        int ok = d.a > 0;
        if (d.kind == EF_DIST_LOGNORMAL) ok = ok && d.b >= 0;
        if (d.kind == EF_DIST_PARETO || d.kind == EF_DIST_INVPARETO) ok = ok && d.b > 0;
        if (d.kind == EF_DIST_UNIFORM) ok = ok && d.b >= d.a;
        if (!ok) goto bad;
        *out = d;
        return EF_OK;
    }
bad:
    return ef__fail(EF_ERR_INVALID,
                    "bad distribution '%s' (expected const:A, lognormal:MEDIAN:SIGMA, "
                    "pareto:SCALE:SHAPE, invpareto:MAX:SHAPE or uniform:LO:HI with positive "
                    "numbers, e.g. lognormal:5G:0.5)",
                    text);
}

ef_status ef_device_profile_builtin(const char *name, ef_device_profile *out) {
    memset(out, 0, sizeof *out);
    if (strcmp(name, "ideal") == 0) {
        out->flops = (ef_dist){EF_DIST_CONST, 20e9, 0};
        out->down_bps = out->up_bps = (ef_dist){EF_DIST_CONST, 100e6, 0};
        out->latency_s = (ef_dist){EF_DIST_CONST, 0.001, 0};
        out->availability = 1.0;
        out->dropout = 0.0;
        out->offline_s = 10;
    } else if (strcmp(name, "mobile") == 0) {
        out->flops = (ef_dist){EF_DIST_LOGNORMAL, 5e9, 0.5};
        out->down_bps = (ef_dist){EF_DIST_LOGNORMAL, 10e6, 0.7};
        out->up_bps = (ef_dist){EF_DIST_LOGNORMAL, 2e6, 0.7};
        out->latency_s = (ef_dist){EF_DIST_LOGNORMAL, 0.05, 0.5};
        out->availability = 0.95;
        out->dropout = 0.05;
        out->offline_s = 60;
    } else if (strcmp(name, "heavy-tail") == 0) {
        /* most devices fast, a Pareto tail of very slow ones (shape 1.5:
         * finite mean, infinite variance) in compute and in both links */
        out->flops = (ef_dist){EF_DIST_INVPARETO, 10e9, 1.5};
        out->down_bps = (ef_dist){EF_DIST_INVPARETO, 20e6, 1.5};
        out->up_bps = (ef_dist){EF_DIST_INVPARETO, 5e6, 1.5};
        out->latency_s = (ef_dist){EF_DIST_LOGNORMAL, 0.05, 0.5};
        out->availability = 0.9;
        out->dropout = 0.1;
        out->offline_s = 30;
    } else {
        return ef__fail(EF_ERR_INVALID,
                        "unknown device profile '%s' (built in: ideal, mobile, heavy-tail)", name);
    }
    snprintf(out->name, sizeof out->name, "%s", name);
    return EF_OK;
}

ef_device ef_device_draw(const ef_device_profile *p, uint64_t seed, uint32_t client) {
    ef_rng base, r;
    ef_rng_seed(&base, seed ^ 0xD5A61266F0C9392Cull);
    ef_rng_fork(&base, client, &r);
    ef_device d;
    d.flops = ef_dist_sample(&p->flops, &r);
    d.down_bps = ef_dist_sample(&p->down_bps, &r);
    d.up_bps = ef_dist_sample(&p->up_bps, &r);
    d.latency_s = ef_dist_sample(&p->latency_s, &r);
    return d;
}
