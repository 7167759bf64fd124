/*
 * `edgefl generate`: text generation with a GGUF language model. The prompt
 * is tokenized with the tokenizer stored in the file (or given as token ids),
 * processed in batches, then tokens are sampled one at a time and printed
 * as they are decoded (a character split across tokens is held back until
 * complete). Timings and peak memory go to stderr, or into the --json
 * object.
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h> /* getpid */

#include "slm_opts.h"

static const char *USAGE =
    "edgefl generate --model M.gguf (--prompt TEXT | --prompt-ids IDS) [-n N] [--temp T]\n"
    "       [--top-k K] [--top-p P] [--seed S] [--threads T] [--json]";
static const char *DESC =
    "Generates a continuation of the prompt with a llama-architecture GGUF model (F32, F16,\n"
    "Q8_0 or Q4_0 weights), printing it as it is decoded. --temp 0 decodes greedily. Prompt\n"
    "and generation tokens/s and peak RSS are reported on stderr; with --json stdout is one\n"
    "object (text, ids, prompt_tokens_per_s, gen_tokens_per_s, peak_rss_mb, ...).";

typedef struct gen_state {
    const ef_tokenizer *tok;
    int eos, stop_at_eos, stream;
    int32_t *ids;
    int n_ids;
    ef_slm_utf8 u8;
    char *text; /* the continuation, valid UTF-8 */
    size_t len, cap;
    int oom;
} gen_state;

static void append(gen_state *g, const char *s, size_t n) {
    if (g->oom || n == 0) return;
    if (g->len + n + 1 > g->cap) {
        size_t cap = (g->len + n + 1) * 2;
        char *p = ef_realloc(g->text, cap);
        if (!p) {
            g->oom = 1;
            return;
        }
        g->text = p;
        g->cap = cap;
    }
    memcpy(g->text + g->len, s, n);
    g->len += n;
    g->text[g->len] = 0;
    if (g->stream) {
        fwrite(s, 1, n, stdout);
        fflush(stdout);
    }
}

static int on_token(void *user, int32_t t) {
    gen_state *g = user;
    g->ids[g->n_ids++] = t;
    if (!g->tok || (g->stop_at_eos && t == g->eos)) return 0; /* the EOS that ends the text is not printed */
    size_t n = 0;
    const uint8_t *b = ef_tokenizer_token_bytes(g->tok, t, &n);
    if (!b) return 0;
    char *out = ef_malloc(3 * n + 12);
    if (!out) {
        g->oom = 1;
        return 1;
    }
    append(g, out, ef_slm_utf8_feed(&g->u8, b, n, 0, out));
    ef_free(out);
    return 0;
}

int cmd_generate(int argc, char **argv) {
    /* `-n N` is accepted for --n N */
    char **av = ef_malloc(sizeof(char *) * (size_t)(argc + 1));
    if (!av) return CLI_EXIT_FAIL;
    for (int i = 0; i < argc; i++) av[i] = strcmp(argv[i], "-n") == 0 && i >= 2 ? "--n" : argv[i];
    av[argc] = NULL;
    slm_run_opts ro = {NULL, 0, 0, 0, "f16", "auto"};
    const char *prompt = NULL, *prompt_ids = NULL, *bos = "auto";
    int n_gen = 64, top_k = 40, json = 0, quiet = 0, no_eos = 0;
    double temp = 0.8, top_p = 0.95;
    uint64_t seed = 0;
    cli_opt opts[] = {
        {"model", CLI_STR, &ro.model, "M.gguf", "GGUF model (llama architecture; required)", 0, 0, NULL, 0},
        {"prompt", CLI_STR, &prompt, "TEXT", "prompt text, tokenized with the model's tokenizer", 0, 0, NULL, 0},
        {"prompt-ids", CLI_STR, &prompt_ids, "IDS", "the prompt as comma-separated token ids instead", 0, 0, NULL, 0},
        {"n", CLI_INT, &n_gen, "N", "tokens to generate, also -n N (default 64)", 0, 1 << 24, NULL, 0},
        {"temp", CLI_FLOAT, &temp, "T", "temperature; 0 = greedy (default 0.8)", 0, 100, NULL, 0},
        {"top-k", CLI_INT, &top_k, "K", "sample among the K most likely tokens, 0 = all (default 40)", 0, 1 << 24,
         NULL, 0},
        {"top-p", CLI_FLOAT, &top_p, "P", "then among the fewest reaching probability P (default 0.95)", 0, 1, NULL,
         0},
        {"seed", CLI_U64, &seed, "S", "sampling seed (default: from the clock, reported)", 0, 0, NULL, 0},
        {"threads", CLI_INT, &ro.threads, "T", "threads (default: all CPUs)", 1, 1024, NULL, 0},
        {"ctx", CLI_INT, &ro.n_ctx, "N", "context size in tokens (default: the model's context_length)", 2, 1 << 24,
         NULL, 0},
        {"batch", CLI_INT, &ro.n_batch, "B", "prompt tokens per forward pass (default 64)", 1, 65536, NULL, 0},
        {"kv", CLI_CHOICE, &ro.kv, NULL, "KV cache type: f16 (default, as llama.cpp) or f32", 0, 0, "f16|f32", 0},
        {"kernels", CLI_CHOICE, &ro.kernels, NULL, "kernel set (default auto; also EDGEFL_CPU=scalar)", 0, 0,
         "auto|scalar|avx2|avx512", 0},
        {"bos", CLI_CHOICE, &bos, NULL, "start with the BOS token: auto (the file's add_bos_token), yes, no", 0, 0,
         "auto|yes|no", 0},
        {"no-eos", CLI_FLAG, &no_eos, NULL, "do not stop at the end-of-text token", 0, 0, NULL, 0},
        {"json", CLI_FLAG, &json, NULL, "print one JSON object on stdout (no streaming)", 0, 0, NULL, 0},
        {"quiet", CLI_FLAG, &quiet, NULL, "no timings on stderr", 0, 0, NULL, 0},
        {0},
    };
    int help, rc = cli_parse("generate", argc, av, 2, opts, &help, USAGE, DESC);
    ef_free(av);
    if (rc || help) return rc;
    if (!ro.model || (!prompt == !prompt_ids)) {
        fprintf(stderr, "edgefl generate: --model and one of --prompt / --prompt-ids are required\n"
                        "Try 'edgefl generate --help'.\n");
        return CLI_EXIT_USAGE;
    }
    if (top_p <= 0) {
        fprintf(stderr, "edgefl generate: --top-p must be above 0\n");
        return CLI_EXIT_USAGE;
    }
    int32_t *given = NULL, *ptoks = NULL;
    int n_given = 0;
    if (prompt_ids && (rc = slm_parse_ids("generate", prompt_ids, &given, &n_given)) != 0) return rc;
    if (!cli_find(opts, "seed")->seen) seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);

    int status = CLI_EXIT_FAIL;
    slm_run r;
    gen_state g = {0};
    ef_slm_sampler *smp = NULL;
    double t_start = ef_now();
    if (slm_run_open("generate", &ro, prompt != NULL, &r) != 0) goto done;
    const ef_slm_config *cf = ef_slm_model_config(r.model);
    /* the prompt's tokens */
    size_t n_text = 0;
    int32_t *text_ids = NULL;
    if (prompt && ef_tokenizer_encode(r.tok, prompt, strlen(prompt), EF_TOK_ALLOW_SPECIAL, &text_ids, &n_text) != EF_OK) {
        cli_error("generate", "%s", ef_last_error());
        goto done;
    }
    int add_bos = slm_want_bos(&r, bos);
    int n_prompt = add_bos + (prompt ? (int)n_text : n_given);
    ptoks = ef_malloc(sizeof(int32_t) * (size_t)(n_prompt + 1));
    g.ids = ef_malloc(sizeof(int32_t) * (size_t)(n_gen + 1));
    if (!ptoks || !g.ids) {
        ef_free(text_ids);
        cli_error("generate", "out of memory");
        goto done;
    }
    if (add_bos) ptoks[0] = cf->bos_id;
    memcpy(ptoks + add_bos, prompt ? text_ids : given, sizeof(int32_t) * (size_t)(n_prompt - add_bos));
    ef_free(text_ids);
    if (n_prompt == 0) {
        cli_error("generate", "the prompt has no tokens (and the model no BOS token to start from)");
        goto done;
    }
    for (int i = 0; i < n_prompt; i++)
        if (ptoks[i] < 0 || ptoks[i] >= cf->vocab) {
            cli_error("generate", "prompt token %d is outside the vocabulary of %d", (int)ptoks[i], cf->vocab);
            goto done;
        }
    if (n_prompt + (n_gen > 0 ? n_gen - 1 : 0) > ef_slm_ctx_size(r.ctx) && !quiet)
        fprintf(stderr, "edgefl generate: note: %d prompt + %d new tokens exceed the context of %d; generation "
                        "stops when it is full\n", n_prompt, n_gen, ef_slm_ctx_size(r.ctx));
    if (n_prompt > ef_slm_ctx_size(r.ctx)) {
        cli_error("generate", "the prompt has %d tokens, the context only %d (--ctx)", n_prompt,
                  ef_slm_ctx_size(r.ctx));
        goto done;
    }
    ef_slm_sampling sp = {(float)temp, top_k, (float)top_p, seed};
    if (ef_slm_sampler_new(&smp, &sp, cf->vocab) != EF_OK) {
        cli_error("generate", "%s", ef_last_error());
        goto done;
    }
    g.tok = r.tok;
    g.eos = cf->eos_id;
    g.stop_at_eos = !no_eos;
    g.stream = !json && r.tok;
    ef_slm_gen_stats st;
    if (ef_slm_generate(r.ctx, smp, ptoks, n_prompt, n_gen, !no_eos, on_token, &g, &st) != EF_OK) {
        cli_error("generate", "%s", ef_last_error());
        goto done;
    }
    if (r.tok) {
        char tail[16];
        append(&g, tail, ef_slm_utf8_feed(&g.u8, NULL, 0, 1, tail));
    }
    if (g.oom) {
        cli_error("generate", "out of memory");
        goto done;
    }
    if (g.stream) {
        fputc('\n', stdout);
        fflush(stdout);
    }
    double ptps = st.prompt_seconds > 0 ? st.n_prompt / st.prompt_seconds : 0;
    double gtps = st.n_gen > 1 && st.gen_seconds > 0 ? (st.n_gen - 1) / st.gen_seconds : 0;
    double rss = ef_peak_rss_mb();
    if (!quiet)
        fprintf(stderr,
                "edgefl generate: prompt %d tokens, %.1f tokens/s; generation %d tokens, %.1f tokens/s%s; "
                "%s kernels, %d threads; peak RSS %.1f MB\n",
                st.n_prompt, ptps, st.n_gen, gtps, st.stopped_eos ? " (stopped at end of text)"
                                                   : st.stopped_ctx ? " (context full)" : "",
                ef_slm_ctx_isa(r.ctx), ef_slm_ctx_threads(r.ctx), rss);
    if (!json && !r.tok) { /* no tokenizer: the ids are the output */
        for (int i = 0; i < g.n_ids; i++) printf("%s%d", i ? "," : "", (int)g.ids[i]);
        printf("\n");
    }
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "command", "generate");
        cJSON_AddStringToObject(j, "model", ro.model);
        cJSON_AddStringToObject(j, "weights", ef_slm_type_name(ef_slm_model_type(r.model)));
        if (r.tok) cJSON_AddStringToObject(j, "text", g.text ? g.text : "");
        else cJSON_AddNullToObject(j, "text");
        cJSON *ids = cJSON_AddArrayToObject(j, "ids");
        for (int i = 0; i < g.n_ids; i++) cJSON_AddItemToArray(ids, cJSON_CreateNumber(g.ids[i]));
        cJSON *pids = cJSON_AddArrayToObject(j, "prompt_ids");
        for (int i = 0; i < n_prompt; i++) cJSON_AddItemToArray(pids, cJSON_CreateNumber(ptoks[i]));
        cJSON_AddNumberToObject(j, "tokens", st.n_gen);
        cJSON_AddNumberToObject(j, "prompt_tokens", st.n_prompt);
        cJSON_AddNumberToObject(j, "prompt_tokens_per_s", ptps);
        cJSON_AddNumberToObject(j, "gen_tokens_per_s", gtps);
        cJSON_AddNumberToObject(j, "prompt_s", st.prompt_seconds);
        cJSON_AddNumberToObject(j, "gen_s", st.gen_seconds);
        cJSON_AddBoolToObject(j, "stopped_eos", st.stopped_eos);
        cJSON_AddBoolToObject(j, "stopped_ctx", st.stopped_ctx);
        cJSON_AddNumberToObject(j, "peak_rss_mb", rss);
        cJSON_AddNumberToObject(j, "wall_s", ef_now() - t_start);
        char sbuf[32];
        snprintf(sbuf, sizeof sbuf, "%llu", (unsigned long long)seed);
        cJSON_AddStringToObject(j, "seed", sbuf);
        cJSON_AddNumberToObject(j, "temp", temp);
        cJSON_AddNumberToObject(j, "top_k", top_k);
        cJSON_AddNumberToObject(j, "top_p", top_p);
        cJSON_AddNumberToObject(j, "threads", ef_slm_ctx_threads(r.ctx));
        cJSON_AddNumberToObject(j, "ctx", ef_slm_ctx_size(r.ctx));
        cJSON_AddStringToObject(j, "kernels", ef_slm_ctx_isa(r.ctx));
        cJSON_AddStringToObject(j, "kv", ro.kv);
        if (cli_print_json("generate", j) != 0) goto done;
    }
    status = 0;
done:
    ef_slm_sampler_free(smp);
    ef_free(g.ids);
    ef_free(g.text);
    ef_free(ptoks);
    ef_free(given);
    slm_run_free(&r);
    return status;
}
