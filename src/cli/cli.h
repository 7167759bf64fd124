/*
 * Shared pieces of the edgefl command-line program: a table-driven flag
 * parser (unknown flags and bad values are refused with exit code 2), help
 * output, a live progress line and JSON printing. The CLI uses only the
 * public edgefl API.
 */
#ifndef EDGEFL_CLI_H
#define EDGEFL_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "edgefl/edgefl.h"

/* Exit codes: 0 success, 1 runtime failure, 2 usage error. */
#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2

typedef enum cli_kind {
    CLI_STR,    /* const char * */
    CLI_INT,    /* int, within [min, max] */
    CLI_U64,    /* uint64_t */
    CLI_FLOAT,  /* double, within [min, max] */
    CLI_FLAG,   /* int set to 1, takes no value */
    CLI_CHOICE  /* const char *, one of `choices` ("a|b|c") */
} cli_kind;

typedef struct cli_opt {
    const char *name;    /* without the leading "--" */
    cli_kind kind;
    void *dest;
    const char *metavar; /* shown in help, e.g. "N" */
    const char *help;
    double min, max;     /* CLI_INT / CLI_FLOAT bounds */
    const char *choices; /* CLI_CHOICE */
    int seen;            /* set by the parser */
} cli_opt;

/* A command: its name, one-line summary and entry point. */
typedef struct cli_cmd {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} cli_cmd;

/*
 * Parses argv[first..argc) against opts (terminated by a zero entry).
 * Accepts "--name value" and "--name=value". Prints help and sets *help when
 * -h/--help is given. On error prints "edgefl <cmd>: <message>" and a hint to
 * stderr and returns CLI_EXIT_USAGE; returns 0 on success.
 */
int cli_parse(const char *cmd, int argc, char **argv, int first, cli_opt *opts, int *help,
              const char *usage, const char *description);

/* The value of --config in argv[first..), or NULL. */
const char *cli_config_path(int argc, char **argv, int first);

/*
 * Sets options from a JSON object whose keys are option names (without
 * "--"); numbers and strings as on the command line, true/false for flags.
 * Unknown keys and wrong types are usage errors (exit code 2). Command-line
 * flags parsed afterwards override. *keep must be released with
 * cli_config_free after the options are no longer used.
 */
int cli_load_config(const char *cmd, const char *path, cli_opt *opts, void **keep);
void cli_config_free(void *keep);

/*
 * For commands with positional arguments (edgefl quantize IN OUT TYPE): moves
 * the words of argv[first..argc) that are neither options nor the value of
 * an option in `opts` into pos[0..max_pos), compacting argv in place, and
 * returns the new argc to hand to cli_parse. *n_pos gets the number of
 * positionals found, which may exceed max_pos (the extra ones are dropped).
 */
int cli_take_positionals(int argc, char **argv, int first, const cli_opt *opts, const char **pos,
                         int max_pos, int *n_pos);

/* Prints usage, description and the option table. */
void cli_print_help(FILE *f, const char *usage, const char *description, const cli_opt *opts);

/* Returns the option called `name` (for .seen). */
const cli_opt *cli_find(const cli_opt *opts, const char *name);

/* Live progress line on stderr: rewritten in place on a terminal, otherwise
 * printed at most every `interval` seconds. */
typedef struct cli_progress {
    int tty;
    int quiet;
    double last;
    double interval;
    int active; /* a \r line is on screen */
} cli_progress;

void cli_progress_init(cli_progress *p, int quiet);
/* Formats and shows a line; `force` prints even inside the interval. */
void cli_progress_show(cli_progress *p, int force, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Ends the in-place line (newline) if one is shown. */
void cli_progress_done(cli_progress *p);

/* Seconds as "1h02m", "3m05s" or "12s". */
void cli_fmt_duration(char *buf, size_t n, double s);

/* Prints `msg` as "edgefl <cmd>: error: ..." with the library's last error. */
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints JSON object j on one line of stdout (a command's --json result) and
 * deletes it. Returns 0, or CLI_EXIT_FAIL after an error message when it
 * cannot be printed (out of memory). */
struct cJSON;
int cli_print_json(const char *cmd, struct cJSON *j);

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_simulate(int argc, char **argv);
int cmd_privacy(int argc, char **argv);
int cmd_server(int argc, char **argv);
int cmd_client(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_loadgen(int argc, char **argv);
int cmd_aggregator(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_gguf_info(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);
int cmd_corpus(int argc, char **argv);
int cmd_lm(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);

#endif /* EDGEFL_CLI_H */
