/*
 * `edgefl corpus kjv|split`: text corpora for the small language models.
 * `kjv` runs Debian's `bible` (package bible-kjv) to print the King James
 * Bible one verse per line and splits it by verse label into DIR/train.txt
 * and DIR/valid.txt; `split` does the same for any line-oriented text file
 * (include/edgefl/corpus.h).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "edgefl/corpus.h"

static const char *TOP_USAGE =
    "Usage: edgefl corpus <kjv|split> [options]\n\n"
    "Text corpora for the small language models (docs/slm.md).\n\n"
    "  kjv     the King James Bible (Debian package bible-kjv), split by verse\n"
    "  split   any text file, split by line\n\n"
    "'edgefl corpus <sub> --help' describes a subcommand's options.\n";

/* Runs argv[0] (a path) with stdin from /dev/null and collects its stdout. */
static int run_capture(const char *cmd, char *const *av, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    int fd[2];
    if (pipe(fd) != 0) {
        cli_error(cmd, "pipe: %s", strerror(errno));
        return CLI_EXIT_FAIL;
    }
    pid_t pid = fork();
    if (pid < 0) {
        cli_error(cmd, "fork: %s", strerror(errno));
        close(fd[0]);
        close(fd[1]);
        return CLI_EXIT_FAIL;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, 0);
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execv(av[0], av);
        fprintf(stderr, "edgefl %s: cannot run %s: %s\n", cmd, av[0], strerror(errno));
        _exit(127);
    }
    close(fd[1]);
    size_t cap = 1 << 20, n = 0;
    char *buf = ef_malloc(cap + 1);
    int ok = buf != NULL;
    while (ok) {
        if (n == cap) {
            char *b = ef_realloc(buf, cap * 2 + 1);
            if (!b) {
                ok = 0;
                break;
            }
            buf = b;
            cap *= 2;
        }
        ssize_t r = read(fd[0], buf + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!ok || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        ef_free(buf);
        if (!ok) cli_error(cmd, "out of memory reading the output of %s", av[0]);
        else cli_error(cmd, "%s failed (%s %d)", av[0], WIFEXITED(status) ? "exit code" : "signal",
                       WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        return CLI_EXIT_FAIL;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

/* Splits text and writes DIR/train.txt and DIR/valid.txt. */
static int split_and_write(const char *cmd, const char *text, size_t len, ef_corpus_key key,
                           double holdout, int drop, const char *dir, int json, int quiet,
                           size_t expect_lines) {
    char *tr = NULL, *va = NULL;
    size_t trl = 0, val = 0;
    ef_corpus_stats st;
    int rc = CLI_EXIT_FAIL;
    char tp[4096], vp[4096];
    if (ef_corpus_split(text, len, key, holdout, drop, &tr, &trl, &va, &val, &st) != EF_OK) {
        cli_error(cmd, "%s", ef_last_error());
        return CLI_EXIT_FAIL;
    }
    if (expect_lines && st.train_lines + st.valid_lines != expect_lines) {
        cli_error(cmd, "got %zu verses, expected %zu: is this the KJV of bible-kjv?",
                  st.train_lines + st.valid_lines, expect_lines);
        goto done;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        cli_error(cmd, "cannot create %s: %s", dir, strerror(errno));
        goto done;
    }
    snprintf(tp, sizeof tp, "%s/train.txt", dir);
    snprintf(vp, sizeof vp, "%s/valid.txt", dir);
    if (ef_write_file_atomic(tp, tr, trl) != EF_OK || ef_write_file_atomic(vp, va, val) != EF_OK) {
        cli_error(cmd, "%s", ef_last_error());
        goto done;
    }
    if (!quiet)
        fprintf(stderr, "corpus: %zu lines: %zu for training (%zu bytes) in %s, %zu held out "
                        "(%zu bytes) in %s\n",
                st.train_lines + st.valid_lines, st.train_lines, st.train_bytes, tp,
                st.valid_lines, st.valid_bytes, vp);
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "command", cmd);
        cJSON_AddStringToObject(j, "train", tp);
        cJSON_AddStringToObject(j, "valid", vp);
        cJSON_AddStringToObject(j, "by", key == EF_CORPUS_BY_LABEL ? "label" : "text");
        cJSON_AddBoolToObject(j, "labels", key == EF_CORPUS_BY_LABEL && !drop);
        cJSON_AddNumberToObject(j, "holdout", holdout);
        cJSON_AddNumberToObject(j, "train_lines", (double)st.train_lines);
        cJSON_AddNumberToObject(j, "valid_lines", (double)st.valid_lines);
        cJSON_AddNumberToObject(j, "train_bytes", (double)st.train_bytes);
        cJSON_AddNumberToObject(j, "valid_bytes", (double)st.valid_bytes);
        if (cli_print_json(cmd, j)) goto done;
    }
    rc = 0;
done:
    ef_free(tr);
    ef_free(va);
    return rc;
}

static int corpus_kjv(int argc, char **argv) {
    static const char *USAGE =
        "edgefl corpus kjv --out DIR [--holdout F] [--drop-labels] [--bible PATH] [--json]";
    static const char *DESC =
        "Writes the King James Bible (31,102 verses, printed by `bible -f 'Gen1:1-Rev22:21'`\n"
        "from Debian's bible-kjv package) as DIR/train.txt and DIR/valid.txt, one verse per line\n"
        "as \"Ge1:1 In the beginning God created the heaven and the earth.\". A verse is held\n"
        "out when a hash of its label falls below F (see docs/slm.md): the split is the same on\n"
        "every machine and a larger F holds out a superset. --drop-labels writes the text only.";
    const char *out = NULL, *bible = EF_KJV_BIBLE;
    double holdout = EF_CORPUS_HOLDOUT;
    int drop = 0, json = 0, quiet = 0;
    cli_opt opts[] = {
        {"out", CLI_STR, &out, "DIR", "folder for train.txt and valid.txt (required)", 0, 0, NULL, 0},
        {"holdout", CLI_FLOAT, &holdout, "F", "fraction of verses held out (default 0.015)", 0, 1, NULL, 0},
        {"drop-labels", CLI_FLAG, &drop, NULL, "write the verse text without its label", 0, 0, NULL, 0},
        {"bible", CLI_STR, &bible, "PATH", "the bible program (default " EF_KJV_BIBLE ")", 0, 0, NULL, 0},
        {"json", CLI_FLAG, &json, NULL, "print one JSON object on stdout", 0, 0, NULL, 0},
        {"quiet", CLI_FLAG, &quiet, NULL, "no summary on stderr", 0, 0, NULL, 0},
        {0},
    };
    int help;
    int rc = cli_parse("corpus kjv", argc, argv, 3, opts, &help, USAGE, DESC);
    if (rc || help) return rc;
    if (!out) {
        fprintf(stderr, "edgefl corpus kjv: --out is required\nTry 'edgefl corpus kjv --help'.\n");
        return CLI_EXIT_USAGE;
    }
    if (access(bible, X_OK) != 0) {
        cli_error("corpus kjv", "%s not found: install Debian's bible-kjv (apt-get install "
                                "bible-kjv, or scripts/install-deps.sh)", bible);
        return CLI_EXIT_FAIL;
    }
    char *av[] = {(char *)bible, "-f", EF_KJV_RANGE, NULL};
    char *text;
    size_t len;
    if ((rc = run_capture("corpus kjv", av, &text, &len)) != 0) return rc;
    rc = split_and_write("corpus kjv", text, len, EF_CORPUS_BY_LABEL, holdout, drop, out, json,
                         quiet, EF_KJV_VERSES);
    ef_free(text);
    return rc;
}

static int corpus_split(int argc, char **argv) {
    static const char *USAGE =
        "edgefl corpus split --in FILE --out DIR [--by label|text] [--holdout F] [--drop-labels] [--json]";
    static const char *DESC =
        "Splits a line-oriented text file into DIR/train.txt and DIR/valid.txt. --by label\n"
        "(for \"LABEL text\" lines such as the output of `bible -f`) decides each line by a hash\n"
        "of its first field; --by text (the default) by a hash of the whole line, so repeated\n"
        "lines stay on one side; blank lines stay in training.";
    const char *in = NULL, *out = NULL, *by = "text";
    double holdout = EF_CORPUS_HOLDOUT;
    int drop = 0, json = 0, quiet = 0;
    cli_opt opts[] = {
        {"in", CLI_STR, &in, "FILE", "text file to split (required)", 0, 0, NULL, 0},
        {"out", CLI_STR, &out, "DIR", "folder for train.txt and valid.txt (required)", 0, 0, NULL, 0},
        {"by", CLI_CHOICE, &by, NULL, "what decides a line's side (default text)", 0, 0, "label|text", 0},
        {"holdout", CLI_FLOAT, &holdout, "F", "fraction held out (default 0.015)", 0, 1, NULL, 0},
        {"drop-labels", CLI_FLAG, &drop, NULL, "with --by label: write lines without their label", 0, 0, NULL, 0},
        {"json", CLI_FLAG, &json, NULL, "print one JSON object on stdout", 0, 0, NULL, 0},
        {"quiet", CLI_FLAG, &quiet, NULL, "no summary on stderr", 0, 0, NULL, 0},
        {0},
    };
    int help;
    int rc = cli_parse("corpus split", argc, argv, 3, opts, &help, USAGE, DESC);
    if (rc || help) return rc;
    if (!in || !out) {
        fprintf(stderr, "edgefl corpus split: --in and --out are required\nTry 'edgefl corpus split --help'.\n");
        return CLI_EXIT_USAGE;
    }
    ef_corpus_key key = strcmp(by, "label") == 0 ? EF_CORPUS_BY_LABEL : EF_CORPUS_BY_TEXT;
    if (drop && key != EF_CORPUS_BY_LABEL) {
        fprintf(stderr, "edgefl corpus split: --drop-labels needs --by label\n");
        return CLI_EXIT_USAGE;
    }
    char *text;
    size_t len;
    if (ef_read_file(in, (size_t)2 << 30, &text, &len) != EF_OK) {
        cli_error("corpus split", "%s", ef_last_error());
        return CLI_EXIT_FAIL;
    }
    rc = split_and_write("corpus split", text, len, key, holdout, drop, out, json, quiet, 0);
    ef_free(text);
    return rc;
}

int cmd_corpus(int argc, char **argv) {
    if (argc < 3 || !strcmp(argv[2], "-h") || !strcmp(argv[2], "--help")) {
        fputs(TOP_USAGE, argc < 3 ? stderr : stdout);
        return argc < 3 ? CLI_EXIT_USAGE : 0;
    }
    if (!strcmp(argv[2], "kjv")) return corpus_kjv(argc, argv);
    if (!strcmp(argv[2], "split")) return corpus_split(argc, argv);
    fprintf(stderr, "edgefl corpus: unknown subcommand '%s'\nTry 'edgefl corpus --help'.\n", argv[2]);
    return CLI_EXIT_USAGE;
}
