/*
 * `edgefl tokenizer train|encode|decode|stats`: the byte-level BPE tokenizer
 * of the small language models (include/edgefl/tokenizer.h) from the
 * command line: learn one from a text file, turn text into token ids and
 * back, and measure bytes per token on a file.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "edgefl/tokenizer.h"

#define INPUT_MAX ((size_t)2 << 30)

static const char *TOP_USAGE =
    "Usage: edgefl tokenizer <train|encode|decode|stats> [options]\n\n"
    "The byte-level BPE tokenizer of the small language models (docs/slm.md).\n\n"
    "  train    learn a tokenizer from a text file\n"
    "  encode   text (stdin or --in) -> token ids\n"
    "  decode   token ids (stdin or --in) -> text\n"
    "  stats    bytes per token of a tokenizer on a file\n\n"
    "'edgefl tokenizer <sub> --help' describes a subcommand's options.\n";

/* Reads all of `path` ("-" or NULL: stdin) into a new ef_malloc'd buffer. */
static int read_input(const char *cmd, const char *path, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (path && strcmp(path, "-") != 0) {
        if (ef_read_file(path, INPUT_MAX, out, len) != EF_OK) {
            cli_error(cmd, "%s", ef_last_error());
            return CLI_EXIT_FAIL;
        }
        return 0;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = ef_malloc(cap + 1);
    while (buf) {
        if (n == cap) {
            if (cap >= INPUT_MAX) {
                ef_free(buf);
                cli_error(cmd, "standard input is larger than %zu bytes", INPUT_MAX);
                return CLI_EXIT_FAIL;
            }
            char *b = ef_realloc(buf, cap * 2 + 1);
            if (!b) break;
            buf = b;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, stdin);
        n += r;
        if (r == 0) {
            if (ferror(stdin)) {
                ef_free(buf);
                cli_error(cmd, "reading standard input: %s", strerror(errno));
                return CLI_EXIT_FAIL;
            }
            buf[n] = '\0';
            *out = buf;
            *len = n;
            return 0;
        }
    }
    ef_free(buf);
    cli_error(cmd, "out of memory reading standard input");
    return CLI_EXIT_FAIL;
}

static ef_tokenizer *load_tok(const char *cmd, const char *path) {
    ef_tokenizer *t = NULL;
    if (ef_tokenizer_load(path, &t) != EF_OK) cli_error(cmd, "%s", ef_last_error());
    return t;
}

/* ---- train ---------------------------------------------------------------------- */

typedef struct train_progress {
    cli_progress prog;
    double start; /* when merging began */
} train_progress;

static void on_progress(void *user, size_t done, size_t total) {
    train_progress *p = user;
    double now = ef_now();
    if (done == 0) p->start = now;
    double el = now - p->start, rate = el > 0 ? (double)done / el : 0;
    char eta[32];
    cli_fmt_duration(eta, sizeof eta, rate > 0 ? (double)(total - done) / rate : -1);
    cli_progress_show(&p->prog, done == total, "tokenizer: merges %zu/%zu (%.0f%%)  %.0f merges/s  ETA %s",
                      done, total, total ? 100.0 * (double)done / (double)total : 100.0, rate, eta);
}

static int tok_train(int argc, char **argv) {
    static const char *USAGE =
        "edgefl tokenizer train --vocab V --corpus FILE --out FILE [--min-frequency N] [--json]";
    static const char *DESC =
        "Learns a byte-level BPE tokenizer of V tokens (256 bytes + merges + the special token\n"
        "<|endoftext|>) from FILE (any bytes; UTF-8 text is what it is made for) and writes it\n"
        "to --out atomically. Text equal to <|endoftext|> in the corpus separates documents and\n"
        "is never learned. The same corpus always gives the same file. Progress (merges done,\n"
        "rate, ETA) goes to stderr; with --json, stdout is one JSON object.";
    int vocab = 0, json = 0, quiet = 0, min_freq = 2;
    const char *corpus = NULL, *out = NULL;
    cli_opt opts[] = {
        {"vocab", CLI_INT, &vocab, "V", "tokens in all, 257..16777216 (required)", 257, EF_TOK_MAX_VOCAB, NULL, 0},
        {"corpus", CLI_STR, &corpus, "FILE", "training text (required; - for stdin)", 0, 0, NULL, 0},
        {"out", CLI_STR, &out, "FILE", "tokenizer file to write (required)", 0, 0, NULL, 0},
        {"min-frequency", CLI_INT, &min_freq, "N", "stop when the best pair occurs fewer times (default 2)", 1, 1 << 30, NULL, 0},
        {"json", CLI_FLAG, &json, NULL, "print one JSON object with the results on stdout", 0, 0, NULL, 0},
        {"quiet", CLI_FLAG, &quiet, NULL, "no progress output", 0, 0, NULL, 0},
        {0},
    };
    int help;
    int rc = cli_parse("tokenizer train", argc, argv, 3, opts, &help, USAGE, DESC);
    if (rc || help) return rc;
    if (!vocab || !corpus || !out) {
        fprintf(stderr, "edgefl tokenizer train: --vocab, --corpus and --out are required\n"
                        "Try 'edgefl tokenizer train --help'.\n");
        return CLI_EXIT_USAGE;
    }
    char *text;
    size_t len;
    if ((rc = read_input("tokenizer train", corpus, &text, &len)) != 0) return rc;
    double t0 = ef_now();
    train_progress tp;
    cli_progress_init(&tp.prog, quiet);
    tp.start = t0;
    if (!quiet)
        fprintf(stderr, "tokenizer: %s: %.2f MB, counting words\n", corpus, (double)len / 1e6);
    ef_bpe_train_stats st;
    ef_bpe_train_opts o;
    ef_bpe_train_opts_init(&o);
    o.min_frequency = (uint64_t)min_freq;
    o.progress = on_progress;
    o.user = &tp;
    o.stats = &st;
    ef_tokenizer *tok = NULL;
    ef_status s = ef_bpe_train(text, len, (size_t)vocab, &o, &tok);
    cli_progress_done(&tp.prog);
    ef_free(text);
    if (s != EF_OK) {
        cli_error("tokenizer train", "%s", ef_last_error());
        return s == EF_ERR_INVALID ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
    }
    double secs = ef_now() - t0;
    if (ef_tokenizer_save(tok, out) != EF_OK) {
        cli_error("tokenizer train", "%s", ef_last_error());
        ef_tokenizer_free(tok);
        return CLI_EXIT_FAIL;
    }
    size_t n_tok = ef_tokenizer_n_tokens(tok);
    double bpt = st.corpus_tokens ? (double)len / (double)st.corpus_tokens : 0;
    if (n_tok < (size_t)vocab)
        fprintf(stderr, "tokenizer: note: the corpus supports only %zu merges (no pair left occurs "
                        "%d times): %zu tokens, not %d\n",
                st.merges, min_freq, n_tok, vocab);
    if (!quiet)
        fprintf(stderr, "tokenizer: %zu tokens (%zu merges, %zu special) in %.2f s (counting %.2f s, "
                        "merging %.2f s); %zu distinct words; %.3f bytes/token on the corpus; wrote %s\n",
                n_tok, st.merges, ef_tokenizer_n_specials(tok), secs, st.seconds_count,
                st.seconds_merge, st.unique_words, bpt, out);
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "command", "tokenizer train");
        cJSON_AddStringToObject(j, "out", out);
        cJSON_AddNumberToObject(j, "vocab", (double)n_tok);
        cJSON_AddNumberToObject(j, "merges", (double)st.merges);
        cJSON_AddNumberToObject(j, "specials", (double)ef_tokenizer_n_specials(tok));
        cJSON_AddNumberToObject(j, "eot_id", ef_tokenizer_eot_id(tok));
        cJSON_AddNumberToObject(j, "corpus_bytes", (double)st.corpus_bytes);
        cJSON_AddNumberToObject(j, "pretokens", (double)st.pretokens);
        cJSON_AddNumberToObject(j, "unique_words", (double)st.unique_words);
        cJSON_AddNumberToObject(j, "corpus_tokens", (double)st.corpus_tokens);
        cJSON_AddNumberToObject(j, "bytes_per_token", bpt);
        cJSON_AddNumberToObject(j, "last_merge_count", (double)st.last_count);
        cJSON_AddNumberToObject(j, "skipped_pairs", (double)st.skipped);
        cJSON_AddNumberToObject(j, "count_s", st.seconds_count);
        cJSON_AddNumberToObject(j, "merge_s", st.seconds_merge);
        cJSON_AddNumberToObject(j, "merges_per_s", st.seconds_merge > 0 ? (double)st.merges / st.seconds_merge : 0);
        cJSON_AddNumberToObject(j, "seconds", secs);
        cJSON_AddNumberToObject(j, "peak_rss_mb", ef_peak_rss_mb());
        ef_tokenizer_free(tok);
        return cli_print_json("tokenizer train", j) ? CLI_EXIT_FAIL : 0;
    }
    ef_tokenizer_free(tok);
    return 0;
}

/* ---- encode --------------------------------------------------------------------- */

static int tok_encode(int argc, char **argv) {
    static const char *USAGE =
        "edgefl tokenizer encode --tok FILE [--in FILE] [--ids | --count | --json] [--special]";
    static const char *DESC =
        "Encodes text (standard input, or --in) into token ids. By default prints one token per\n"
        "line: its id, a tab, and its text in GPT-2's byte-level alphabet (a space is shown as\n"
        "\"\xc4\xa0\", a newline as \"\xc4\x8a\"). --ids prints the ids on one line, separated by spaces\n"
        "(what 'edgefl tokenizer decode' reads); --count prints the number of tokens. With\n"
        "--special, text equal to a special token (<|endoftext|>) becomes that token;\n"
        "otherwise it is encoded like any other text.";
    const char *tokf = NULL, *in = NULL;
    int ids_only = 0, count = 0, json = 0, special = 0;
    cli_opt opts[] = {
        {"tok", CLI_STR, &tokf, "FILE", "tokenizer file (required)", 0, 0, NULL, 0},
        {"in", CLI_STR, &in, "FILE", "text to encode (default: standard input)", 0, 0, NULL, 0},
        {"ids", CLI_FLAG, &ids_only, NULL, "print only the ids, space-separated, on one line", 0, 0, NULL, 0},
        {"count", CLI_FLAG, &count, NULL, "print only the number of tokens", 0, 0, NULL, 0},
        {"json", CLI_FLAG, &json, NULL, "print {\"ids\": [...], \"tokens\": N, \"bytes\": B}", 0, 0, NULL, 0},
        {"special", CLI_FLAG, &special, NULL, "recognise special-token text", 0, 0, NULL, 0},
        {0},
    };
    int help;
    int rc = cli_parse("tokenizer encode", argc, argv, 3, opts, &help, USAGE, DESC);
    if (rc || help) return rc;
    if (!tokf) {
        fprintf(stderr, "edgefl tokenizer encode: --tok is required\nTry 'edgefl tokenizer encode --help'.\n");
        return CLI_EXIT_USAGE;
    }
    if (ids_only + count + json > 1) {
        fprintf(stderr, "edgefl tokenizer encode: --ids, --count and --json exclude each other\n");
        return CLI_EXIT_USAGE;
    }
    ef_tokenizer *tok = load_tok("tokenizer encode", tokf);
    if (!tok) return CLI_EXIT_FAIL;
    char *text = NULL;
    size_t len = 0;
    int32_t *ids = NULL;
    size_t n = 0;
    if ((rc = read_input("tokenizer encode", in, &text, &len)) != 0) goto done;
    if (ef_tokenizer_encode(tok, text, len, special ? EF_TOK_ALLOW_SPECIAL : 0, &ids, &n) != EF_OK) {
        cli_error("tokenizer encode", "%s", ef_last_error());
        rc = CLI_EXIT_FAIL;
        goto done;
    }
    if (count) {
        printf("%zu\n", n);
    } else if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON *a = cJSON_AddArrayToObject(j, "ids");
        for (size_t i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
        cJSON_AddNumberToObject(j, "tokens", (double)n);
        cJSON_AddNumberToObject(j, "bytes", (double)len);
        if (cli_print_json("tokenizer encode", j)) rc = CLI_EXIT_FAIL;
    } else if (ids_only) {
        for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
    } else {
        for (size_t i = 0; i < n; i++) printf("%d\t%s\n", ids[i], ef_tokenizer_token_text(tok, ids[i]));
    }
    if (fflush(stdout) != 0) {
        cli_error("tokenizer encode", "writing the output: %s", strerror(errno));
        rc = CLI_EXIT_FAIL;
    }
done:
    ef_free(ids);
    ef_free(text);
    ef_tokenizer_free(tok);
    return rc;
}

/* ---- decode --------------------------------------------------------------------- */

static int tok_decode(int argc, char **argv) {
    static const char *USAGE = "edgefl tokenizer decode --tok FILE [--in FILE]";
    static const char *DESC =
        "Decodes token ids (decimal, separated by spaces, tabs, commas or newlines; standard\n"
        "input, or --in) and writes the bytes they stand for to standard output, exactly. A\n"
        "special token gives its text. Nothing is written when any id is not a token.";
    const char *tokf = NULL, *in = NULL;
    cli_opt opts[] = {
        {"tok", CLI_STR, &tokf, "FILE", "tokenizer file (required)", 0, 0, NULL, 0},
        {"in", CLI_STR, &in, "FILE", "ids to decode (default: standard input)", 0, 0, NULL, 0},
        {0},
    };
    int help;
    int rc = cli_parse("tokenizer decode", argc, argv, 3, opts, &help, USAGE, DESC);
    if (rc || help) return rc;
    if (!tokf) {
        fprintf(stderr, "edgefl tokenizer decode: --tok is required\nTry 'edgefl tokenizer decode --help'.\n");
        return CLI_EXIT_USAGE;
    }
    ef_tokenizer *tok = load_tok("tokenizer decode", tokf);
    if (!tok) return CLI_EXIT_FAIL;
    char *text = NULL, *out = NULL;
    size_t len = 0, n = 0, cap = 0, olen = 0;
    int32_t *ids = NULL;
    if ((rc = read_input("tokenizer decode", in, &text, &len)) != 0) goto done;
    rc = CLI_EXIT_FAIL;
    for (size_t i = 0; i < len;) {
        char c = text[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',') {
            i++;
            continue;
        }
        size_t j = i;
        long long v = 0;
        while (j < len && text[j] >= '0' && text[j] <= '9' && v <= INT32_MAX) v = v * 10 + (text[j++] - '0');
        bool sep = j == len || text[j] == ' ' || text[j] == '\t' || text[j] == '\n' ||
                   text[j] == '\r' || text[j] == ',';
        if (j == i || !sep || v > INT32_MAX) {
            size_t e = i;
            while (e < len && e - i < 20 && text[e] != ' ' && text[e] != '\n') e++;
            cli_error("tokenizer decode", "item %zu ('%.*s') is not a token id", n + 1, (int)(e - i),
                      text + i);
            goto done;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            int32_t *b = ef_realloc(ids, cap * sizeof *ids);
            if (!b) {
                cli_error("tokenizer decode", "out of memory");
                goto done;
            }
            ids = b;
        }
        ids[n++] = (int32_t)v;
        i = j;
    }
    if (ef_tokenizer_decode(tok, ids, n, &out, &olen) != EF_OK) {
        cli_error("tokenizer decode", "%s", ef_last_error());
        goto done;
    }
    if ((olen && fwrite(out, 1, olen, stdout) != olen) || fflush(stdout) != 0) {
        cli_error("tokenizer decode", "writing the output: %s", strerror(errno));
        goto done;
    }
    rc = 0;
done:
    ef_free(out);
    ef_free(ids);
    ef_free(text);
    ef_tokenizer_free(tok);
    return rc;
}

/* ---- stats ------------------------------------------------------------------------ */

static int tok_stats(int argc, char **argv) {
    static const char *USAGE = "edgefl tokenizer stats --tok FILE --text FILE [--json]";
    static const char *DESC =
        "Encodes a file and reports its size in bytes and tokens, bytes per token, how many\n"
        "distinct tokens it uses, the encoding speed, and whether decoding gives the file back\n"
        "exactly (exit code 1 if not). Special-token text counts as special tokens.";
    const char *tokf = NULL, *textf = NULL;
    int json = 0;
    cli_opt opts[] = {
        {"tok", CLI_STR, &tokf, "FILE", "tokenizer file (required)", 0, 0, NULL, 0},
        {"text", CLI_STR, &textf, "FILE", "text to measure (required; - for stdin)", 0, 0, NULL, 0},
        {"json", CLI_FLAG, &json, NULL, "print one JSON object on stdout", 0, 0, NULL, 0},
        {0},
    };
    int help;
    int rc = cli_parse("tokenizer stats", argc, argv, 3, opts, &help, USAGE, DESC);
    if (rc || help) return rc;
    if (!tokf || !textf) {
        fprintf(stderr, "edgefl tokenizer stats: --tok and --text are required\n"
                        "Try 'edgefl tokenizer stats --help'.\n");
        return CLI_EXIT_USAGE;
    }
    ef_tokenizer *tok = load_tok("tokenizer stats", tokf);
    if (!tok) return CLI_EXIT_FAIL;
    char *text = NULL, *back = NULL;
    size_t len = 0, n = 0, blen = 0;
    int32_t *ids = NULL;
    uint8_t *used = NULL;
    if ((rc = read_input("tokenizer stats", textf, &text, &len)) != 0) goto done;
    rc = CLI_EXIT_FAIL;
    double t0 = ef_now();
    if (ef_tokenizer_encode(tok, text, len, EF_TOK_ALLOW_SPECIAL, &ids, &n) != EF_OK) {
        cli_error("tokenizer stats", "%s", ef_last_error());
        goto done;
    }
    double enc_s = ef_now() - t0;
    t0 = ef_now();
    if (ef_tokenizer_decode(tok, ids, n, &back, &blen) != EF_OK) {
        cli_error("tokenizer stats", "%s", ef_last_error());
        goto done;
    }
    double dec_s = ef_now() - t0;
    int exact = blen == len && memcmp(back, text, len) == 0;
    size_t nt = ef_tokenizer_n_tokens(tok), distinct = 0;
    used = ef_calloc(nt, 1);
    if (!used) {
        cli_error("tokenizer stats", "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        if (!used[ids[i]]) {
            used[ids[i]] = 1;
            distinct++;
        }
    double bpt = n ? (double)len / (double)n : 0;
    double mbs = enc_s > 0 ? (double)len / 1e6 / enc_s : 0;
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "command", "tokenizer stats");
        cJSON_AddStringToObject(j, "text", textf);
        cJSON_AddNumberToObject(j, "vocab", (double)nt);
        cJSON_AddNumberToObject(j, "merges", (double)ef_tokenizer_n_merges(tok));
        cJSON_AddNumberToObject(j, "bytes", (double)len);
        cJSON_AddNumberToObject(j, "tokens", (double)n);
        cJSON_AddNumberToObject(j, "bytes_per_token", bpt);
        cJSON_AddNumberToObject(j, "distinct_tokens", (double)distinct);
        cJSON_AddNumberToObject(j, "encode_s", enc_s);
        cJSON_AddNumberToObject(j, "encode_mb_per_s", mbs);
        cJSON_AddNumberToObject(j, "decode_s", dec_s);
        cJSON_AddBoolToObject(j, "round_trip_exact", exact);
        if (cli_print_json("tokenizer stats", j)) goto done;
    } else {
        printf("vocab            %zu tokens (%zu merges, %zu special)\n", nt,
               ef_tokenizer_n_merges(tok), ef_tokenizer_n_specials(tok));
        printf("text             %zu bytes -> %zu tokens\n", len, n);
        printf("bytes per token  %.3f\n", bpt);
        printf("distinct tokens  %zu of %zu\n", distinct, nt);
        printf("encode           %.3f s (%.1f MB/s); decode %.3f s\n", enc_s, mbs, dec_s);
        printf("round trip       %s\n", exact ? "exact" : "DIFFERENT");
    }
    if (!exact) {
        cli_error("tokenizer stats", "decoding did not give the text back");
        goto done;
    }
    rc = 0;
done:
    ef_free(used);
    ef_free(back);
    ef_free(ids);
    ef_free(text);
    ef_tokenizer_free(tok);
    return rc;
}

int cmd_tokenizer(int argc, char **argv) {
    if (argc < 3 || !strcmp(argv[2], "-h") || !strcmp(argv[2], "--help")) {
        fputs(TOP_USAGE, argc < 3 ? stderr : stdout);
        return argc < 3 ? CLI_EXIT_USAGE : 0;
    }
    const char *sub = argv[2];
    if (!strcmp(sub, "train")) return tok_train(argc, argv);
    if (!strcmp(sub, "encode")) return tok_encode(argc, argv);
    if (!strcmp(sub, "decode")) return tok_decode(argc, argv);
    if (!strcmp(sub, "stats")) return tok_stats(argc, argv);
    fprintf(stderr, "edgefl tokenizer: unknown subcommand '%s'\nTry 'edgefl tokenizer --help'.\n", sub);
    return CLI_EXIT_USAGE;
}
