/*
 * Flag parsing, help text, progress line and error output for the CLI.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

const cli_opt *cli_find(const cli_opt *opts, const char *name) {
    for (const cli_opt *o = opts; o->name; o++)
        if (strcmp(o->name, name) == 0) return o;
    return NULL;
}

static int in_choices(const char *choices, const char *v) {
    size_t n = strlen(v);
    const char *p = choices;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0) return 1;
        if (!bar) break;
        p = bar + 1;
    }
    return 0;
}

static int set_value(const char *cmd, cli_opt *o, const char *v) {
    char *end = NULL;
    errno = 0;
    switch (o->kind) {
    case CLI_STR:
        if (!*v) {
            fprintf(stderr, "edgefl %s: --%s needs a non-empty value\n", cmd, o->name);
            return CLI_EXIT_USAGE;
        }
        *(const char **)o->dest = v;
        return 0;
    case CLI_CHOICE:
        if (!in_choices(o->choices, v)) {
            fprintf(stderr, "edgefl %s: --%s: '%s' is not one of %s\n", cmd, o->name, v,
                    o->choices);
            return CLI_EXIT_USAGE;
        }
        *(const char **)o->dest = v;
        return 0;
    case CLI_INT: {
        long x = strtol(v, &end, 10);
        if (end == v || *end || errno || x < o->min || x > o->max) {
            fprintf(stderr, "edgefl %s: --%s: '%s' is not an integer in %.0f..%.0f\n", cmd,
                    o->name, v, o->min, o->max);
            return CLI_EXIT_USAGE;
        }
        *(int *)o->dest = (int)x;
        return 0;
    }
    case CLI_U64: {
        if (*v == '-') goto bad_u64;
        unsigned long long x = strtoull(v, &end, 10);
        if (end == v || *end || errno) goto bad_u64;
        *(uint64_t *)o->dest = (uint64_t)x;
        return 0;
    bad_u64:
        fprintf(stderr, "edgefl %s: --%s: '%s' is not a non-negative integer\n", cmd, o->name, v);
        return CLI_EXIT_USAGE;
    }
    case CLI_FLOAT: {
        double x = strtod(v, &end);
        if (end == v || *end || errno || !isfinite(x) || x < o->min || x > o->max) {
            fprintf(stderr, "edgefl %s: --%s: '%s' is not a number in [%g, %g]\n", cmd, o->name,
                    v, o->min, o->max);
            return CLI_EXIT_USAGE;
        }
        *(double *)o->dest = x;
        return 0;
    }
    case CLI_FLAG:
        *(int *)o->dest = 1;
        return 0;
    }
    return CLI_EXIT_USAGE;
}

int cli_parse(const char *cmd, int argc, char **argv, int first, cli_opt *opts, int *help,
              const char *usage, const char *description) {
    *help = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            cli_print_help(stdout, usage, description, opts);
            *help = 1;
            return 0;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            fprintf(stderr, "edgefl %s: unexpected argument '%s'\n", cmd, a);
            fprintf(stderr, "Try 'edgefl %s --help'.\n", cmd);
            return CLI_EXIT_USAGE;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        cli_opt *o = NULL;
        for (cli_opt *p = opts; p->name; p++)
            if (strlen(p->name) == nlen && strncmp(p->name, name, nlen) == 0) o = p;
        if (!o) {
            fprintf(stderr, "edgefl %s: unknown option '--%.*s'\n", cmd, (int)nlen, name);
            fprintf(stderr, "Try 'edgefl %s --help'.\n", cmd);
            return CLI_EXIT_USAGE;
        }
        if (o->seen) {
            fprintf(stderr, "edgefl %s: --%s given twice\n", cmd, o->name);
            return CLI_EXIT_USAGE;
        }
        o->seen = 1;
        const char *v = NULL;
        if (o->kind == CLI_FLAG) {
            if (eq) {
                fprintf(stderr, "edgefl %s: --%s takes no value\n", cmd, o->name);
                return CLI_EXIT_USAGE;
            }
        } else if (eq) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            fprintf(stderr, "edgefl %s: --%s needs a value\n", cmd, o->name);
            return CLI_EXIT_USAGE;
        }
        int rc = set_value(cmd, o, v);
        if (rc) {
            fprintf(stderr, "Try 'edgefl %s --help'.\n", cmd);
            return rc;
        }
    }
    return 0;
}

void cli_print_help(FILE *f, const char *usage, const char *description, const cli_opt *opts) {
    fprintf(f, "Usage: %s\n\n%s\n\nOptions:\n", usage, description);
    for (const cli_opt *o = opts; o->name; o++) {
        char left[64];
        if (o->kind == CLI_FLAG) snprintf(left, sizeof left, "--%s", o->name);
        else if (o->kind == CLI_CHOICE) snprintf(left, sizeof left, "--%s {%s}", o->name, o->choices);
        else snprintf(left, sizeof left, "--%s %s", o->name, o->metavar ? o->metavar : "X");
        if (strlen(left) > 26) fprintf(f, "  %s\n  %-26s %s\n", left, "", o->help);
        else fprintf(f, "  %-26s %s\n", left, o->help);
    }
    fprintf(f, "  %-26s %s\n", "-h, --help", "show this help and exit");
}

void cli_progress_init(cli_progress *p, int quiet) {
    memset(p, 0, sizeof *p);
    p->tty = isatty(2);
    p->quiet = quiet;
    p->interval = p->tty ? 0.2 : 10.0;
    p->last = -1e9;
}

void cli_progress_show(cli_progress *p, int force, const char *fmt, ...) {
    if (p->quiet) return;
    double now = ef_now();
    if (!force && now - p->last < p->interval) return;
    p->last = now;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (p->tty) {
        fprintf(stderr, "\r\033[K%s", buf);
        p->active = 1;
    } else {
        fprintf(stderr, "%s\n", buf);
    }
    fflush(stderr);
}

void cli_progress_done(cli_progress *p) {
    if (p->active) fputc('\n', stderr);
    p->active = 0;
}

void cli_fmt_duration(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 1e8) {
        snprintf(buf, n, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, n, "%lds", t);
}

void cli_error(const char *cmd, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "edgefl %s: error: %s\n", cmd, buf);
}

const char *cli_config_path(int argc, char **argv, int first) {
    for (int i = first; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) return argv[i + 1];
        if (strncmp(argv[i], "--config=", 9) == 0) return argv[i] + 9;
    }
    return NULL;
}

int cli_load_config(const char *cmd, const char *path, cli_opt *opts, void **keep) {
    *keep = NULL;
    char *text = NULL;
    size_t len = 0;
    if (ef_read_file(path, 16u << 20, &text, &len) != EF_OK) {
        fprintf(stderr, "edgefl %s: %s\n", cmd, ef_last_error());
        return CLI_EXIT_USAGE;
    }
    const char *end = NULL;
    cJSON *root = strlen(text) == len ? cJSON_ParseWithOpts(text, &end, 1) : NULL;
    ef_free(text);
    if (!root || !cJSON_IsObject(root)) {
        fprintf(stderr, "edgefl %s: %s: not a JSON object\n", cmd, path);
        cJSON_Delete(root);
        return CLI_EXIT_USAGE;
    }
    for (cJSON *it = root->child; it; it = it->next) {
        cli_opt *o = NULL;
        for (cli_opt *p = opts; p->name; p++)
            if (strcmp(p->name, it->string) == 0) o = p;
        if (!o || strcmp(it->string, "config") == 0) {
            fprintf(stderr, "edgefl %s: %s: unknown key \"%s\" (keys are the option names, "
                            "see 'edgefl %s --help')\n", cmd, path, it->string, cmd);
            cJSON_Delete(root);
            return CLI_EXIT_USAGE;
        }
        char num[64];
        const char *v = NULL;
        if (o->kind == CLI_FLAG) {
            if (!cJSON_IsBool(it)) goto type_error;
            *(int *)o->dest = cJSON_IsTrue(it) ? 1 : 0;
            continue;
        }
        if (cJSON_IsString(it)) {
            v = it->valuestring;
        } else if (cJSON_IsNumber(it) && o->kind != CLI_STR && o->kind != CLI_CHOICE) {
            snprintf(num, sizeof num, "%.17g", it->valuedouble);
            v = num;
        } else {
            goto type_error;
        }
        if (set_value(cmd, o, v) != 0) {
            fprintf(stderr, "(in %s)\n", path);
            cJSON_Delete(root);
            return CLI_EXIT_USAGE;
        }
        continue;
    type_error:
        fprintf(stderr, "edgefl %s: %s: \"%s\" has the wrong type (%s expected)\n", cmd, path,
                it->string, o->kind == CLI_FLAG ? "true or false" : "a string or a number");
        cJSON_Delete(root);
        return CLI_EXIT_USAGE;
    }
    *keep = root; /* string values point into it */
    return 0;
}

void cli_config_free(void *keep) { cJSON_Delete(keep); }

int cli_print_json(const char *cmd, cJSON *j) {
    char *text = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!text) {
        cli_error(cmd, "out of memory");
        return CLI_EXIT_FAIL;
    }
    printf("%s\n", text);
    cJSON_free(text);
    return 0;
}

int cli_take_positionals(int argc, char **argv, int first, const cli_opt *opts, const char **pos,
                         int max_pos, int *n_pos) {
    int out = first, n = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) == 0 && a[2] != '\0') {
            argv[out++] = argv[i];
            /* an option that takes a value and has no "=..." owns the next word */
            const char *name = a + 2;
            if (strchr(name, '=')) continue;
            const cli_opt *o = cli_find(opts, name);
            if (o && o->kind != CLI_FLAG && i + 1 < argc) argv[out++] = argv[++i];
            continue;
        }
        if (a[0] == '-' && a[1] != '\0') { /* -h, or an error cli_parse reports */
            argv[out++] = argv[i];
            continue;
        }
        if (n < max_pos) pos[n] = a;
        n++;
    }
    *n_pos = n;
    return out;
}
