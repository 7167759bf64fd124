/*
 * `edgefl lm train|eval`: small llama-style language models on this machine
 * (include/edgefl/lm.h, docs/slm.md "Training").
 *
 * train: reads a text corpus (and a held-out text, or holds out lines of
 * the corpus by a hash), tokenizes it with a given tokenizer or trains one
 * first, trains a model from scratch or resumes a checkpoint, prints
 * progress lines on stderr and validation loss / bits per byte at
 * intervals, writes atomic checkpoints, and saves the model (safetensors,
 * with the config and the tokenizer in the metadata).
 * eval: loss and bits per byte of a saved model on a text file.
 *
 * Token streams: <|endoftext|> (when the tokenizer has it) as a
 * beginning-of-text token, then the text encoded with special-token text
 * treated as ordinary bytes, so bits per byte count every byte of the text.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "edgefl/corpus.h"
#include "edgefl/lm.h"
#include "edgefl/rng.h"
#include "edgefl/tokenizer.h"

#define TEXT_MAX ((size_t)2 << 30)
#define META_TOKENIZER "edgefl.tokenizer"

static const char *TOP_USAGE =
    "Usage: edgefl lm <train|eval|export|sample> [options]\n\n"
    "Small llama-style language models (docs/slm.md).\n\n"
    "  train   train a model on a text corpus (or resume a checkpoint)\n"
    "  eval    loss and bits per byte of a saved model on a text\n"
    "  export  convert a model to GGUF (llama.cpp) or back to safetensors\n"
    "  sample  continue a prompt (greedy or with a temperature)\n\n"
    "'edgefl lm <sub> --help' describes a subcommand's options.\n";

static volatile sig_atomic_t g_stop = 0;
static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

/* Token stream of `len` bytes of text: [EOT] + tokens. *bytes (vocab) gets
 * each token's byte length, special tokens 0 (when bytes is not NULL). */
static int encode_stream(const char *cmd, const ef_tokenizer *tok, const char *text, size_t len,
                         int32_t **out, size_t *n) {
    int32_t *ids = NULL;
    size_t k = 0;
    if (ef_tokenizer_encode(tok, text, len, 0, &ids, &k) != EF_OK) {
        cli_error(cmd, "tokenizing: %s", ef_last_error());
        return CLI_EXIT_FAIL;
    }
    int32_t eot = ef_tokenizer_eot_id(tok);
    size_t extra = eot >= 0 ? 1 : 0;
    int32_t *s = ef_malloc((k + extra) * sizeof *s + 1);
    if (!s) {
        ef_free(ids);
        cli_error(cmd, "out of memory");
        return CLI_EXIT_FAIL;
    }
    if (extra) s[0] = eot;
    memcpy(s + extra, ids, k * sizeof *s);
    ef_free(ids);
    *out = s;
    *n = k + extra;
    return 0;
}

static uint32_t *token_lengths(const ef_tokenizer *tok) {
    size_t V = ef_tokenizer_n_tokens(tok);
    uint32_t *b = ef_calloc(V ? V : 1, sizeof *b);
    if (!b) return NULL;
    for (size_t i = 0; i < V; i++) {
        size_t len = 0;
        if (ef_tokenizer_token_type(tok, (int32_t)i) == EF_TOK_NORMAL &&
            ef_tokenizer_token_bytes(tok, (int32_t)i, &len))
            b[i] = (uint32_t)len;
    }
    return b;
}

/* The tokenizer stored in a model or checkpoint file's metadata. */
static ef_tokenizer *tok_from_file(const char *cmd, const char *path) {
    ef_safetensors *st = NULL;
    ef_tokenizer *tok = NULL;
    if (ef_safetensors_open(&st, path) != EF_OK) {
        cli_error(cmd, "%s", ef_last_error());
        return NULL;
    }
    const char *js = ef_safetensors_meta(st, META_TOKENIZER);
    if (!js)
        cli_error(cmd, "%s has no tokenizer in its metadata (%s); pass --tok", path,
                  META_TOKENIZER);
    else if (ef_tokenizer_parse(js, strlen(js), &tok) != EF_OK)
        cli_error(cmd, "%s: the stored tokenizer: %s", path, ef_last_error());
    ef_safetensors_close(st);
    return tok;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* A model file (.gguf, or safetensors from lm train) and its tokenizer
 * (tokf, else the one inside the file). Returns 0 or an exit code. */
static int load_model(const char *cmd, const char *path, const char *tokf, int batch,
                      ef_pool *pool, ef_lm **m, ef_tokenizer **tok) {
    *m = NULL;
    *tok = NULL;
    ef_tokenizer *inside = NULL;
    if (ends_with(path, ".gguf")) {
        if (ef_lm_load_gguf(m, &inside, path, batch, pool) != EF_OK) {
            cli_error(cmd, "%s", ef_last_error());
            return CLI_EXIT_FAIL;
        }
    } else {
        if (ef_lm_load(m, path, batch, pool) != EF_OK) {
            cli_error(cmd, "%s", ef_last_error());
            return CLI_EXIT_FAIL;
        }
        if (!tokf && !(inside = tok_from_file(cmd, path))) goto fail;
    }
    if (tokf) {
        ef_tokenizer_free(inside);
        inside = NULL;
        if (ef_tokenizer_load(tokf, tok) != EF_OK) {
            cli_error(cmd, "%s", ef_last_error());
            goto fail;
        }
    } else {
        *tok = inside;
    }
    if ((size_t)ef_lm_get_config(*m)->vocab != ef_tokenizer_n_tokens(*tok)) {
        cli_error(cmd, "the model has %d tokens, the tokenizer %zu", ef_lm_get_config(*m)->vocab,
                  ef_tokenizer_n_tokens(*tok));
        goto fail;
    }
    return 0;
fail:
    ef_lm_free(*m);
    ef_tokenizer_free(*tok);
    *m = NULL;
    *tok = NULL;
    return CLI_EXIT_FAIL;
}

/* Writes the model: GGUF (with the tokenizer) or safetensors (tokenizer and
 * the extra pairs in the metadata). */
static int save_model(const char *cmd, ef_lm *m, const ef_tokenizer *tok, const char *out,
                      const char *name, const ef_st_kv *extra, size_t n_extra) {
    ef_status st = ends_with(out, ".gguf") ? ef_lm_export_gguf(m, tok, out, name)
                                           : ef_lm_save(m, out, extra, n_extra);
    if (st != EF_OK) {
        cli_error(cmd, "%s", ef_last_error());
        return CLI_EXIT_FAIL;
    }
    return 0;
}

/* ---- train ------------------------------------------------------------------------ */

typedef struct eval_rec {
    uint64_t step;
    double loss, bpb, elapsed_s;
} eval_rec;

static void tok_progress(void *user, size_t done, size_t total) {
    cli_progress *p = user;
    cli_progress_show(p, done == total, "lm train: tokenizer merges %zu/%zu", done, total);
    if (done == total) cli_progress_done(p);
}

static int lm_train(int argc, char **argv) {
    static const char *USAGE =
        "edgefl lm train --corpus FILE [--valid FILE] (--tok FILE | --vocab V) --out FILE\n"
        "                      [--dim D] [--layers L] [--heads H] [--kv-heads K] [--ffn F]\n"
        "                      [--seq S] [--batch B] [--steps N] [--lr X] [--warmup N]\n"
        "                      [--weight-decay W] [--clip C] [--seed S] [--threads T]\n"
        "                      [--eval-every N] [--checkpoint FILE] [--checkpoint-every N]\n"
        "                      [--resume FILE] [--json]";
    static const char *DESC =
        "Trains a llama-style language model (RMSNorm, RoPE, SwiGLU, grouped-query attention)\n"
        "on a UTF-8 text corpus with AdamW, a cosine schedule with warm-up and gradient\n"
        "clipping. The tokenizer comes from --tok, or is trained first on the corpus with\n"
        "--vocab V. Validation loss and bits per byte are measured on --valid, or on the\n"
        "lines of the corpus held out by a hash (--holdout). Progress (step, loss, lr,\n"
        "tokens/s, ETA) goes to stderr; --json prints one JSON object on stdout.\n"
        "--out saves the model with its config and tokenizer: FILE.safetensors, or\n"
        "FILE.gguf (llama architecture, F32, loadable by llama.cpp); checkpoints\n"
        "(--checkpoint, written atomically every --checkpoint-every steps, at the end and\n"
        "on SIGINT/SIGTERM) hold the model, the AdamW state, the step and the data\n"
        "position: --resume continues the run and ends with the same bits as a run that\n"
        "was never interrupted (on any thread count). --stop-after and --time-limit end\n"
        "an invocation early on purpose: checkpoint, validation and model file as at the end.";
    const char *corpus = NULL, *valid = NULL, *tokf = NULL, *out = NULL, *ckpt = NULL;
    const char *resume = NULL, *tok_out = NULL;
    int vocab = 0, dim = 256, layers = 4, heads = 4, kv_heads = 0, ffn = 0, seq = 256;
    int batch = 16, threads = 0, json = 0, quiet = 0, untied = 0, log_every = 10;
    int eval_every = 200, ckpt_every = 0, eval_batches = 0, stop_after = 0;
    double time_limit = 0;
    uint64_t steps = 1000, warmup = 0, seed = 1;
    double lr = 1e-3, min_lr = -1, wd = 0.1, clip = 1.0, holdout = EF_CORPUS_HOLDOUT;
    double beta2 = 0.95, theta = 10000.0;
    cli_opt opts[] = {
        {"corpus", CLI_STR, &corpus, "FILE", "training text, UTF-8 (required)", 0, 0, NULL, 0},
        {"valid", CLI_STR, &valid, "FILE", "held-out text (default: lines of the corpus held out by --holdout)", 0, 0, NULL, 0},
        {"holdout", CLI_FLOAT, &holdout, "F", "without --valid: fraction of corpus lines held out by a hash of the line (default 0.015)", 0.0001, 0.5, NULL, 0},
        {"tok", CLI_STR, &tokf, "FILE", "tokenizer file (edgefl tokenizer train)", 0, 0, NULL, 0},
        {"vocab", CLI_INT, &vocab, "V", "train a tokenizer of V tokens on the corpus first", 257, EF_TOK_MAX_VOCAB, NULL, 0},
        {"tok-out", CLI_STR, &tok_out, "FILE", "with --vocab: also save the tokenizer here", 0, 0, NULL, 0},
        {"out", CLI_STR, &out, "FILE", "model file to write at the end: .safetensors or .gguf (required)", 0, 0, NULL, 0},
        {"dim", CLI_INT, &dim, "D", "model width (default 256)", 2, 65536, NULL, 0},
        {"layers", CLI_INT, &layers, "L", "transformer blocks (default 4)", 1, 1024, NULL, 0},
        {"heads", CLI_INT, &heads, "H", "attention heads; dim/heads must be even (default 4)", 1, 65536, NULL, 0},
        {"kv-heads", CLI_INT, &kv_heads, "K", "key/value heads, dividing H (default H)", 1, 65536, NULL, 0},
        {"ffn", CLI_INT, &ffn, "F", "SwiGLU hidden width (default 8/3 D rounded up to 32)", 1, 1 << 20, NULL, 0},
        {"untied", CLI_FLAG, &untied, NULL, "separate output matrix (default: tied to the embedding)", 0, 0, NULL, 0},
        {"rope-theta", CLI_FLOAT, &theta, "X", "RoPE base (default 10000)", 1.0001, 1e9, NULL, 0},
        {"seq", CLI_INT, &seq, "S", "tokens per sequence = context length (default 256)", 1, 1 << 16, NULL, 0},
        {"batch", CLI_INT, &batch, "B", "sequences per step (default 16)", 1, 1 << 16, NULL, 0},
        {"steps", CLI_U64, &steps, "N", "training steps (default 1000)", 0, 0, NULL, 0},
        {"lr", CLI_FLOAT, &lr, "X", "peak learning rate (default 1e-3)", 1e-12, 10, NULL, 0},
        {"min-lr", CLI_FLOAT, &min_lr, "X", "final learning rate of the cosine (default lr/10)", 0, 10, NULL, 0},
        {"warmup", CLI_U64, &warmup, "N", "linear warm-up steps (default steps/20, at most 200)", 0, 0, NULL, 0},
        {"weight-decay", CLI_FLOAT, &wd, "W", "AdamW decoupled weight decay on the matrices (default 0.1)", 0, 10, NULL, 0},
        {"beta2", CLI_FLOAT, &beta2, "X", "AdamW beta2 (default 0.95; beta1 0.9)", 0, 0.999999, NULL, 0},
        {"clip", CLI_FLOAT, &clip, "C", "global gradient-norm clip, 0 = off (default 1)", 0, 1e9, NULL, 0},
        {"seed", CLI_U64, &seed, "S", "seed of the initialization and the data order (default 1)", 0, 0, NULL, 0},
        {"threads", CLI_INT, &threads, "T", "threads (default: all CPUs)", 1, 1024, NULL, 0},
        {"log-every", CLI_INT, &log_every, "N", "progress line every N steps (default 10)", 1, 1 << 30, NULL, 0},
        {"eval-every", CLI_INT, &eval_every, "N", "validation every N steps, 0 = only at the end (default 200)", 0, 1 << 30, NULL, 0},
        {"eval-batches", CLI_INT, &eval_batches, "N", "validation on the first N batches only (default: the whole text)", 0, 1 << 30, NULL, 0},
        {"checkpoint", CLI_STR, &ckpt, "FILE", "checkpoint file (default OUT.ckpt)", 0, 0, NULL, 0},
        {"checkpoint-every", CLI_INT, &ckpt_every, "N", "checkpoint every N steps, 0 = only at the end (default 0)", 0, 1 << 30, NULL, 0},
        {"resume", CLI_STR, &resume, "FILE", "continue the run of this checkpoint (model and training options come from it)", 0, 0, NULL, 0},
        {"stop-after", CLI_INT, &stop_after, "N", "stop after N steps of this invocation (checkpoint, validate, save; resume later)", 1, 1 << 30, NULL, 0},
        {"time-limit", CLI_FLOAT, &time_limit, "SECONDS", "stop the same way once this much time has passed", 1, 1e9, NULL, 0},
        {"json", CLI_FLAG, &json, NULL, "print one JSON object with the results on stdout", 0, 0, NULL, 0},
        {"quiet", CLI_FLAG, &quiet, NULL, "no progress output", 0, 0, NULL, 0},
        {0},
    };
    int help;
    int rc = cli_parse("lm train", argc, argv, 3, opts, &help, USAGE, DESC);
    if (rc || help) return rc;
    const char *C = "lm train";
    if (!corpus || !out) {
        cli_error(C, "--corpus and --out are required");
        return CLI_EXIT_USAGE;
    }
    if (!ends_with(out, ".safetensors") && !ends_with(out, ".gguf")) {
        cli_error(C, "--out must end in .safetensors or .gguf");
        return CLI_EXIT_USAGE;
    }
    if (!resume && !!tokf == !!vocab) {
        cli_error(C, "give exactly one of --tok FILE and --vocab V");
        return CLI_EXIT_USAGE;
    }
    if (resume && (vocab || tokf)) {
        cli_error(C, "--resume takes the tokenizer from the checkpoint; drop --tok/--vocab");
        return CLI_EXIT_USAGE;
    }
    if (steps < 1) {
        cli_error(C, "--steps must be >= 1");
        return CLI_EXIT_USAGE;
    }

    int status = CLI_EXIT_FAIL;
    char *text = NULL, *vtext = NULL, *train_text = NULL, *valid_text = NULL;
    size_t text_len = 0, vlen = 0, train_len = 0, valid_len = 0;
    ef_tokenizer *tok = NULL;
    int32_t *tr = NULL, *va = NULL;
    size_t n_tr = 0, n_va = 0;
    uint32_t *tbytes = NULL;
    char *tok_json = NULL;
    ef_pool *pool = NULL;
    ef_lm *m = NULL;
    ef_lm_trainer *t = NULL;
    eval_rec *evals = NULL;
    size_t n_evals = 0;
    cJSON *j = NULL;
    char ckpt_buf[4096];
    double t_start = ef_now();

    // Model and training config: from the flags, or from the checkpoint.
    ef_lm_config mc = ef_lm_config_default();
    ef_lm_train_config tc = ef_lm_train_defaults();
    uint64_t resumed_at = 0;
    if (resume) {
        if (ef_lm_read_config(resume, &mc) != EF_OK ||
            ef_lm_checkpoint_info(resume, &tc, &resumed_at) != EF_OK) {
            cli_error(C, "%s", ef_last_error());
            goto done;
        }
        static const char *fixed[] = {"dim", "layers", "heads", "kv-heads", "ffn", "untied",
                                      "rope-theta", "seq", "batch", "steps", "lr", "min-lr",
                                      "warmup", "weight-decay", "beta2", "clip", "seed"};
        for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
            if (cli_find(opts, fixed[i])->seen) {
                cli_error(C, "--%s cannot be changed when resuming: the checkpoint fixes the "
                             "model and the run", fixed[i]);
                status = CLI_EXIT_USAGE;
                goto done;
            }
        if (!(tok = tok_from_file(C, resume))) goto done;
        if ((size_t)mc.vocab != ef_tokenizer_n_tokens(tok)) {
            cli_error(C, "%s: model vocab %d but its tokenizer has %zu tokens", resume, mc.vocab,
                      ef_tokenizer_n_tokens(tok));
            goto done;
        }
    } else {
        mc.dim = dim, mc.n_layers = layers, mc.n_heads = heads;
        mc.n_kv_heads = kv_heads ? kv_heads : heads;
        mc.ffn_dim = ffn ? ffn : ef_lm_default_ffn(dim);
        mc.max_seq = seq, mc.tied = !untied, mc.rope_theta = (float)theta;
        tc.batch = batch, tc.seq = seq, tc.steps = steps, tc.seed = seed;
        tc.lr = (float)lr, tc.min_lr = (float)(min_lr >= 0 ? min_lr : lr / 10);
        tc.warmup = cli_find(opts, "warmup")->seen ? warmup : (steps / 20 < 200 ? steps / 20 : 200);
        tc.weight_decay = (float)wd, tc.beta2 = (float)beta2, tc.clip = (float)clip;
        mc.vocab = 2; // checked for real once the tokenizer is known
        if (ef_lm_config_check(&mc) != EF_OK) {
            cli_error(C, "%s", ef_last_error());
            status = CLI_EXIT_USAGE;
            goto done;
        }
        if (tc.min_lr > tc.lr) {
            cli_error(C, "--min-lr must not exceed --lr");
            status = CLI_EXIT_USAGE;
            goto done;
        }
    }
    if (!ckpt) {
        snprintf(ckpt_buf, sizeof ckpt_buf, "%s.ckpt", out);
        ckpt = ckpt_buf;
    }

    // Text: the corpus, and the held-out text or lines held out of the corpus.
    if (ef_read_file(corpus, TEXT_MAX, &text, &text_len) != EF_OK) {
        cli_error(C, "%s", ef_last_error());
        goto done;
    }
    if (valid) {
        if (ef_read_file(valid, TEXT_MAX, &vtext, &vlen) != EF_OK) {
            cli_error(C, "%s", ef_last_error());
            goto done;
        }
        train_text = text, train_len = text_len, valid_text = vtext, valid_len = vlen;
    } else {
        ef_corpus_stats cs;
        if (ef_corpus_split(text, text_len, EF_CORPUS_BY_TEXT, holdout, 0, &train_text,
                            &train_len, &valid_text, &valid_len, &cs) != EF_OK) {
            cli_error(C, "%s", ef_last_error());
            goto done;
        }
        if (!quiet)
            fprintf(stderr, "lm train: %s: %zu lines for training, %zu held out (%zu bytes)\n",
                    corpus, cs.train_lines, cs.valid_lines, cs.valid_bytes);
        ef_free(text);
        text = NULL;
    }

    // Tokenizer.
    if (!tok && tokf && ef_tokenizer_load(tokf, &tok) != EF_OK) {
        cli_error(C, "%s", ef_last_error());
        goto done;
    }
    if (!tok) {
        cli_progress prog;
        cli_progress_init(&prog, quiet);
        ef_bpe_train_opts o;
        ef_bpe_train_opts_init(&o);
        o.progress = tok_progress;
        o.user = &prog;
        double t0 = ef_now();
        if (ef_bpe_train(train_text, train_len, (size_t)vocab, &o, &tok) != EF_OK) {
            cli_error(C, "training the tokenizer: %s", ef_last_error());
            goto done;
        }
        if (!quiet)
            fprintf(stderr, "lm train: tokenizer of %zu tokens trained in %.1f s\n",
                    ef_tokenizer_n_tokens(tok), ef_now() - t0);
        if (tok_out && ef_tokenizer_save(tok, tok_out) != EF_OK) {
            cli_error(C, "%s", ef_last_error());
            goto done;
        }
    }
    size_t tj_len;
    if (ef_tokenizer_serialize(tok, &tok_json, &tj_len) != EF_OK || !(tbytes = token_lengths(tok))) {
        cli_error(C, "%s", ef_last_error());
        goto done;
    }
    mc.vocab = (int)ef_tokenizer_n_tokens(tok);
    if ((rc = encode_stream(C, tok, train_text, train_len, &tr, &n_tr)) != 0 ||
        (rc = encode_stream(C, tok, valid_text, valid_len, &va, &n_va)) != 0)
        goto done;
    if (n_va < 2) {
        cli_error(C, "the held-out text is empty: pass --valid or a larger --holdout");
        goto done;
    }

    // Model and trainer.
    if (ef_pool_new(&pool, threads) != EF_OK || ef_lm_new(&m, &mc, tc.batch, pool) != EF_OK) {
        cli_error(C, "%s", ef_last_error());
        goto done;
    }
    ef_lm_init(m, tc.seed);
    if (ef_lm_trainer_new(&t, m, &tc, tr, n_tr) != EF_OK) {
        cli_error(C, "%s", ef_last_error());
        goto done;
    }
    if (resume && ef_lm_trainer_resume(t, resume) != EF_OK) {
        cli_error(C, "%s", ef_last_error());
        goto done;
    }
    double tok_per_step = (double)tc.batch * tc.seq;
    if (!quiet) {
        fprintf(stderr, "lm train: %.2fM parameters (dim %d, %d layers, %d heads, %d kv heads, "
                        "ffn %d, vocab %d, %s), activations %.0f MB, %d threads\n",
                (double)ef_lm_numel(m) / 1e6, mc.dim, mc.n_layers, mc.n_heads, mc.n_kv_heads,
                mc.ffn_dim, mc.vocab, mc.tied ? "tied" : "untied",
                (double)ef_lm_activation_bytes(m) / 1e6, ef_pool_threads(pool));
        fprintf(stderr, "lm train: %zu training tokens (%.2f epochs), %zu held-out tokens; "
                        "batch %dx%d, %llu steps, lr %g -> %g, warm-up %llu\n",
                n_tr, (double)tc.steps * tok_per_step / (double)n_tr, n_va, tc.batch, tc.seq,
                (unsigned long long)tc.steps, (double)tc.lr, (double)tc.min_lr,
                (unsigned long long)tc.warmup);
        if (resume) fprintf(stderr, "lm train: resumed %s at step %llu\n", resume,
                            (unsigned long long)resumed_at);
    }
    evals = ef_calloc(tc.steps / (eval_every ? (uint64_t)eval_every : tc.steps) + 3,
                      sizeof *evals);
    if (!evals) {
        cli_error(C, "out of memory");
        goto done;
    }
    ef_st_kv extra[2] = {{META_TOKENIZER, tok_json}, {"edgefl.corpus", corpus}};
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    int eval_B = tc.batch, eval_T = tc.seq;
    size_t eval_n = n_va;
    if (eval_batches > 0 && (size_t)eval_batches * eval_B * eval_T + 1 < eval_n)
        eval_n = (size_t)eval_batches * eval_B * eval_T + 1;
    double train_s = 0, last_loss = NAN, loss_acc = 0;
    uint64_t acc_n = 0, first_step = ef_lm_trainer_steps_done(t);
    double t_train0 = ef_now(), t_log = t_train0;
    uint64_t log_step = first_step;
    int interrupted = 0, stopped_early = 0;
    while (ef_lm_trainer_steps_done(t) < tc.steps) {
        ef_lm_step_info info;
        double s0 = ef_now();
        if (ef_lm_trainer_step(t, &info) != EF_OK) {
            cli_error(C, "%s", ef_last_error());
            goto done;
        }
        train_s += ef_now() - s0;
        last_loss = info.loss;
        loss_acc += info.loss;
        acc_n++;
        int last = info.step == tc.steps;
        if (!quiet && (info.step % (uint64_t)log_every == 0 || last || info.step == first_step + 1)) {
            double now = ef_now();
            double rate = (double)(info.step - log_step) * tok_per_step / (now - t_log);
            double per_step = train_s / (double)(info.step - first_step);
            char eta[32];
            cli_fmt_duration(eta, sizeof eta, per_step * (double)(tc.steps - info.step));
            fprintf(stderr, "step %6llu/%llu  loss %.4f  lr %.2e  |g| %.3f  %6.0f tok/s  "
                            "epoch %llu  ETA %s\n",
                    (unsigned long long)info.step, (unsigned long long)tc.steps,
                    loss_acc / (double)acc_n, (double)info.lr, info.grad_norm, rate,
                    (unsigned long long)info.epoch, eta);
            loss_acc = 0, acc_n = 0;
            t_log = ef_now(), log_step = info.step;
        }
        if ((eval_every > 0 && info.step % (uint64_t)eval_every == 0) || last) {
            double vl, vb, e0 = ef_now();
            if (ef_lm_evaluate(m, va, eval_n, eval_B, eval_T, tbytes, &vl, &vb, NULL) != EF_OK) {
                cli_error(C, "%s", ef_last_error());
                goto done;
            }
            evals[n_evals++] = (eval_rec){info.step, vl, vb, ef_now() - t_start};
            if (!quiet)
                fprintf(stderr, "step %6llu  validation loss %.4f  bits/byte %.4f  (%.1f s, "
                                "elapsed %.0f s)\n",
                        (unsigned long long)info.step, vl, vb, ef_now() - e0, ef_now() - t_start);
            t_log = ef_now(); // keep eval time out of tokens/s
        }
        if ((ckpt_every > 0 && info.step % (uint64_t)ckpt_every == 0 && !last) || g_stop) {
            if (ef_lm_trainer_save(t, ckpt, extra, 2) != EF_OK) {
                cli_error(C, "%s", ef_last_error());
                goto done;
            }
            if (!quiet) fprintf(stderr, "lm train: checkpoint %s (step %llu)\n", ckpt,
                                (unsigned long long)info.step);
        }
        if (g_stop) {
            interrupted = 1;
            break;
        }
        if (!last && ((stop_after > 0 && info.step - first_step >= (uint64_t)stop_after) ||
                      (time_limit > 0 && ef_now() - t_start >= time_limit))) {
            stopped_early = 1;
            double vl, vb;
            if (ef_lm_evaluate(m, va, eval_n, eval_B, eval_T, tbytes, &vl, &vb, NULL) != EF_OK) {
                cli_error(C, "%s", ef_last_error());
                goto done;
            }
            evals[n_evals++] = (eval_rec){info.step, vl, vb, ef_now() - t_start};
            if (!quiet)
                fprintf(stderr, "step %6llu  validation loss %.4f  bits/byte %.4f  (stopping: "
                                "%s)\n", (unsigned long long)info.step, vl, vb,
                        stop_after > 0 && info.step - first_step >= (uint64_t)stop_after
                            ? "--stop-after" : "--time-limit");
            break;
        }
    }
    if (interrupted) {
        cli_error(C, "interrupted at step %llu; continue with --resume %s",
                  (unsigned long long)ef_lm_trainer_steps_done(t), ckpt);
        status = 130;
        goto done;
    }
    if (n_evals == 0 || evals[n_evals - 1].step != ef_lm_trainer_steps_done(t)) {
        // e.g. resuming a finished run: validate what is saved
        double vl, vb;
        if (ef_lm_evaluate(m, va, eval_n, eval_B, eval_T, tbytes, &vl, &vb, NULL) != EF_OK) {
            cli_error(C, "%s", ef_last_error());
            goto done;
        }
        evals[n_evals++] = (eval_rec){ef_lm_trainer_steps_done(t), vl, vb, ef_now() - t_start};
    }
    if (ef_lm_trainer_save(t, ckpt, extra, 2) != EF_OK) {
        cli_error(C, "%s", ef_last_error());
        goto done;
    }
    if (save_model(C, m, tok, out, NULL, extra, 2) != 0) goto done;
    if (stopped_early && !quiet)
        fprintf(stderr, "lm train: stopped at step %llu of %llu; continue with --resume %s\n",
                (unsigned long long)ef_lm_trainer_steps_done(t), (unsigned long long)tc.steps,
                ckpt);
    double wall = ef_now() - t_start;
    uint64_t done_steps = ef_lm_trainer_steps_done(t) - first_step;
    double tps = train_s > 0 ? (double)done_steps * tok_per_step / train_s : 0;
    eval_rec *fin = n_evals ? &evals[n_evals - 1] : NULL;
    if (!quiet)
        fprintf(stderr, "lm train: done: validation loss %.4f, %.4f bits/byte; %.0f tok/s "
                        "training; wall %.1f s; saved %s (checkpoint %s)\n",
                fin ? fin->loss : NAN, fin ? fin->bpb : NAN, tps, wall, out, ckpt);
    if (json) {
        j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "command", "lm train");
        cJSON_AddNumberToObject(j, "params", (double)ef_lm_numel(m));
        cJSON_AddNumberToObject(j, "dim", mc.dim);
        cJSON_AddNumberToObject(j, "layers", mc.n_layers);
        cJSON_AddNumberToObject(j, "heads", mc.n_heads);
        cJSON_AddNumberToObject(j, "kv_heads", mc.n_kv_heads);
        cJSON_AddNumberToObject(j, "ffn", mc.ffn_dim);
        cJSON_AddNumberToObject(j, "vocab", mc.vocab);
        cJSON_AddBoolToObject(j, "tied", mc.tied);
        cJSON_AddNumberToObject(j, "seq", tc.seq);
        cJSON_AddNumberToObject(j, "batch", tc.batch);
        cJSON_AddNumberToObject(j, "steps", (double)tc.steps);
        cJSON_AddNumberToObject(j, "steps_run", (double)done_steps);
        cJSON_AddNumberToObject(j, "steps_done", (double)ef_lm_trainer_steps_done(t));
        cJSON_AddBoolToObject(j, "finished", ef_lm_trainer_steps_done(t) == tc.steps);
        cJSON_AddNumberToObject(j, "lr", tc.lr);
        cJSON_AddNumberToObject(j, "threads", ef_pool_threads(pool));
        cJSON_AddNumberToObject(j, "seed", (double)tc.seed);
        cJSON_AddNumberToObject(j, "train_tokens", (double)n_tr);
        cJSON_AddNumberToObject(j, "valid_tokens", (double)eval_n);
        cJSON_AddNumberToObject(j, "final_train_loss", last_loss);
        cJSON_AddNumberToObject(j, "valid_loss", fin ? fin->loss : NAN);
        cJSON_AddNumberToObject(j, "valid_bpb", fin ? fin->bpb : NAN);
        cJSON_AddNumberToObject(j, "train_tokens_per_s", tps);
        cJSON_AddNumberToObject(j, "train_s", train_s);
        cJSON_AddNumberToObject(j, "wall_s", wall);
        cJSON_AddNumberToObject(j, "peak_rss_mb", ef_peak_rss_mb());
        cJSON_AddNumberToObject(j, "activation_mb", (double)ef_lm_activation_bytes(m) / 1e6);
        cJSON *ev = cJSON_AddArrayToObject(j, "evals");
        for (size_t i = 0; ev && i < n_evals; i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "step", (double)evals[i].step);
            cJSON_AddNumberToObject(e, "valid_loss", evals[i].loss);
            cJSON_AddNumberToObject(e, "valid_bpb", evals[i].bpb);
            cJSON_AddNumberToObject(e, "elapsed_s", evals[i].elapsed_s);
            cJSON_AddItemToArray(ev, e);
        }
        cJSON_AddStringToObject(j, "out", out);
        cJSON_AddStringToObject(j, "checkpoint", ckpt);
        int printed = cli_print_json(C, j);
        j = NULL;
        if (printed != 0) goto done;
    }
    status = 0;
done:
    cJSON_Delete(j);
    ef_lm_trainer_free(t);
    ef_lm_free(m);
    ef_pool_free(pool);
    ef_free(evals);
    ef_free(tbytes);
    ef_free(tok_json);
    ef_free(tr);
    ef_free(va);
    ef_tokenizer_free(tok);
    if (train_text != text) ef_free(train_text);
    if (valid_text != vtext) ef_free(valid_text);
    ef_free(text);
    ef_free(vtext);
    return status;
}

/* ---- eval --------------------------------------------------------------------------- */

static int lm_eval(int argc, char **argv) {
    static const char *USAGE =
        "edgefl lm eval --model FILE --text FILE [--tok FILE] [--seq S] [--batch B] [--json]";
    static const char *DESC =
        "Loss (nats per token) and bits per byte of a model saved by 'edgefl lm train' on a\n"
        "text file: every token is predicted once, with up to S tokens of context (windows\n"
        "of the model's context length by default). The tokenizer comes from the model\n"
        "file unless --tok is given.";
    const char *model = NULL, *textf = NULL, *tokf = NULL;
    int seq = 0, batch = 8, threads = 0, json = 0;
    cli_opt opts[] = {
        {"model", CLI_STR, &model, "FILE", "model file (.safetensors or .gguf, required)", 0, 0, NULL, 0},
        {"text", CLI_STR, &textf, "FILE", "text to score (required)", 0, 0, NULL, 0},
        {"tok", CLI_STR, &tokf, "FILE", "tokenizer file (default: the one stored in the model)", 0, 0, NULL, 0},
        {"seq", CLI_INT, &seq, "S", "context window (default: the model's)", 1, 1 << 20, NULL, 0},
        {"batch", CLI_INT, &batch, "B", "windows per forward pass (default 8)", 1, 1 << 16, NULL, 0},
        {"threads", CLI_INT, &threads, "T", "threads (default: all CPUs)", 1, 1024, NULL, 0},
        {"json", CLI_FLAG, &json, NULL, "print one JSON object on stdout", 0, 0, NULL, 0},
        {0},
    };
    int help;
    int rc = cli_parse("lm eval", argc, argv, 3, opts, &help, USAGE, DESC);
    if (rc || help) return rc;
    const char *C = "lm eval";
    if (!model || !textf) {
        cli_error(C, "--model and --text are required");
        return CLI_EXIT_USAGE;
    }
    int status = CLI_EXIT_FAIL;
    ef_tokenizer *tok = NULL;
    ef_pool *pool = NULL;
    ef_lm *m = NULL;
    char *text = NULL;
    size_t len = 0, n = 0;
    int32_t *ids = NULL;
    uint32_t *tb = NULL;
    double t0 = ef_now();
    if (ef_pool_new(&pool, threads) != EF_OK) {
        cli_error(C, "%s", ef_last_error());
        goto done;
    }
    if (load_model(C, model, tokf, batch, pool, &m, &tok) != 0) goto done;
    const ef_lm_config *mc = ef_lm_get_config(m);
    if (seq == 0 || seq > mc->max_seq) seq = mc->max_seq;
    if (ef_read_file(textf, TEXT_MAX, &text, &len) != EF_OK) {
        cli_error(C, "%s", ef_last_error());
        goto done;
    }
    if (encode_stream(C, tok, text, len, &ids, &n) != 0) goto done;
    if (!(tb = token_lengths(tok))) goto done;
    double loss, bpb;
    uint64_t bytes;
    if (ef_lm_evaluate(m, ids, n, batch, seq, tb, &loss, &bpb, &bytes) != EF_OK) {
        cli_error(C, "%s", ef_last_error());
        goto done;
    }
    double wall = ef_now() - t0;
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "command", "lm eval");
        cJSON_AddNumberToObject(j, "loss", loss);
        cJSON_AddNumberToObject(j, "bpb", bpb);
        cJSON_AddNumberToObject(j, "tokens", (double)n);
        cJSON_AddNumberToObject(j, "bytes", (double)bytes);
        cJSON_AddNumberToObject(j, "seq", seq);
        cJSON_AddNumberToObject(j, "wall_s", wall);
        if (cli_print_json(C, j) != 0) goto done;
    } else {
        printf("loss %.4f nats/token  %.4f bits/byte  (%zu tokens, %llu bytes, window %d)\n", loss,
               bpb, n, (unsigned long long)bytes, seq);
    }
    status = 0;
done:
    ef_free(text);
    ef_free(ids);
    ef_free(tb);
    ef_lm_free(m);
    ef_pool_free(pool);
    ef_tokenizer_free(tok);
    return status;
}

/* ---- export -------------------------------------------------------------------------- */

static int lm_export(int argc, char **argv) {
    static const char *USAGE =
        "edgefl lm export --model FILE --out FILE.gguf [--tok FILE] [--name NAME]";
    static const char *DESC =
        "Converts a model saved by 'edgefl lm train' (model file or checkpoint) into GGUF:\n"
        "llama architecture, F32 tensors, the tokenizer inside, loadable by llama.cpp and by\n"
        "'edgefl quantize'. (Or the other way: --model FILE.gguf --out FILE.safetensors.)";
    const char *model = NULL, *out = NULL, *tokf = NULL, *name = NULL;
    cli_opt opts[] = {
        {"model", CLI_STR, &model, "FILE", "model to convert (required)", 0, 0, NULL, 0},
        {"out", CLI_STR, &out, "FILE", ".gguf or .safetensors file to write (required)", 0, 0, NULL, 0},
        {"tok", CLI_STR, &tokf, "FILE", "tokenizer file (default: the one stored in the model)", 0, 0, NULL, 0},
        {"name", CLI_STR, &name, "NAME", "general.name in the GGUF file (default edgefl-lm)", 0, 0, NULL, 0},
        {0},
    };
    int help;
    int rc = cli_parse("lm export", argc, argv, 3, opts, &help, USAGE, DESC);
    if (rc || help) return rc;
    const char *C = "lm export";
    if (!model || !out) {
        cli_error(C, "--model and --out are required");
        return CLI_EXIT_USAGE;
    }
    if (!ends_with(out, ".gguf") && !ends_with(out, ".safetensors")) {
        cli_error(C, "--out must end in .gguf or .safetensors");
        return CLI_EXIT_USAGE;
    }
    ef_lm *m = NULL;
    ef_tokenizer *tok = NULL;
    char *tj = NULL;
    size_t tjl;
    int status = load_model(C, model, tokf, 1, NULL, &m, &tok);
    if (status == 0 && ef_tokenizer_serialize(tok, &tj, &tjl) != EF_OK) {
        cli_error(C, "%s", ef_last_error());
        status = CLI_EXIT_FAIL;
    }
    if (status == 0) {
        ef_st_kv extra[1] = {{META_TOKENIZER, tj}};
        status = save_model(C, m, tok, out, name, extra, 1);
    }
    if (status == 0)
        fprintf(stderr, "lm export: %s -> %s (%.2fM parameters, vocab %d)\n", model, out,
                (double)ef_lm_numel(m) / 1e6, ef_lm_get_config(m)->vocab);
    ef_free(tj);
    ef_lm_free(m);
    ef_tokenizer_free(tok);
    return status;
}

/* ---- sample --------------------------------------------------------------------------- */

static int lm_sample(int argc, char **argv) {
    static const char *USAGE =
        "edgefl lm sample --model FILE [--prompt TEXT | --prompt-ids IDS] [-n N] [--temp T]\n"
        "                       [--seed S] [--ids] [--json]";
    static const char *DESC =
        "Continues a prompt with a model, recomputing the whole window for every token (the\n"
        "training-side forward pass: simple and exact, not fast; 'edgefl generate' is the\n"
        "quantized inference path). --temp 0 (the default) is greedy decoding. The prompt\n"
        "starts with <|endoftext|> like the training streams unless --prompt-ids gives the\n"
        "exact ids. Prints the continuation (or its ids with --ids).";
    const char *model = NULL, *prompt = "", *pids = NULL, *tokf = NULL;
    int n = 64, ids_only = 0, json = 0, threads = 0;
    double temp = 0;
    uint64_t seed = 1;
    cli_opt opts[] = {
        {"model", CLI_STR, &model, "FILE", "model file (.safetensors or .gguf, required)", 0, 0, NULL, 0},
        {"tok", CLI_STR, &tokf, "FILE", "tokenizer file (default: the one stored in the model)", 0, 0, NULL, 0},
        {"prompt", CLI_STR, &prompt, "TEXT", "text to continue (default: empty)", 0, 0, NULL, 0},
        {"prompt-ids", CLI_STR, &pids, "IDS", "the prompt as comma-separated token ids", 0, 0, NULL, 0},
        {"n", CLI_INT, &n, "N", "tokens to generate (default 64)", 1, 1 << 20, NULL, 0},
        {"temp", CLI_FLOAT, &temp, "T", "sampling temperature, 0 = greedy (default 0)", 0, 100, NULL, 0},
        {"seed", CLI_U64, &seed, "S", "sampling seed (default 1)", 0, 0, NULL, 0},
        {"threads", CLI_INT, &threads, "T", "threads (default: all CPUs)", 1, 1024, NULL, 0},
        {"ids", CLI_FLAG, &ids_only, NULL, "print the generated ids, comma-separated", 0, 0, NULL, 0},
        {"json", CLI_FLAG, &json, NULL, "print {\"ids\": [...], \"text\": ...}", 0, 0, NULL, 0},
        {0},
    };
    for (int i = 3; i < argc; i++) // -n N, as in 'edgefl generate'
        if (strcmp(argv[i], "-n") == 0) argv[i] = "--n";
    int help;
    int rc = cli_parse("lm sample", argc, argv, 3, opts, &help, USAGE, DESC);
    if (rc || help) return rc;
    const char *C = "lm sample";
    if (!model) {
        cli_error(C, "--model is required");
        return CLI_EXIT_USAGE;
    }
    int status = CLI_EXIT_FAIL;
    ef_pool *pool = NULL;
    ef_lm *m = NULL;
    ef_tokenizer *tok = NULL;
    int32_t *seq = NULL, *p = NULL;
    size_t np = 0, len = 0;
    char *text = NULL;
    if (ef_pool_new(&pool, threads) != EF_OK) {
        cli_error(C, "%s", ef_last_error());
        goto done;
    }
    if (load_model(C, model, tokf, 1, pool, &m, &tok) != 0) goto done;
    int V = ef_lm_get_config(m)->vocab, T = ef_lm_get_config(m)->max_seq;
    if (pids) {
        size_t cap = strlen(pids) / 2 + 2;
        p = ef_calloc(cap, sizeof *p);
        const char *q = pids;
        while (p && *q) {
            char *end;
            long v = strtol(q, &end, 10);
            if (end == q || v < 0 || v >= V || (*end && *end != ',')) {
                cli_error(C, "--prompt-ids: bad id list at '%s' (ids are 0..%d)", q, V - 1);
                status = CLI_EXIT_USAGE;
                goto done;
            }
            p[np++] = (int32_t)v;
            q = *end ? end + 1 : end;
        }
    } else if (encode_stream(C, tok, prompt, strlen(prompt), &p, &np) != 0) {
        goto done;
    }
    if (np == 0) {
        cli_error(C, "empty prompt (the tokenizer has no <|endoftext|>): give --prompt");
        status = CLI_EXIT_USAGE;
        goto done;
    }
    seq = ef_malloc((np + (size_t)n) * sizeof *seq);
    if (!seq) goto done;
    memcpy(seq, p, np * sizeof *seq);
    len = np;
    ef_rng rng;
    ef_rng_seed(&rng, seed);
    for (int i = 0; i < n; i++) {
        size_t w = len < (size_t)T ? len : (size_t)T; // the last T tokens
        if (ef_lm_forward(m, seq + len - w, NULL, 1, (int)w, NULL) != EF_OK) {
            cli_error(C, "%s", ef_last_error());
            goto done;
        }
        const float *lg = ef_lm_logits(m) + (w - 1) * (size_t)V;
        int best = 0;
        for (int j = 1; j < V; j++)
            if (lg[j] > lg[best]) best = j;
        if (temp > 0) { // softmax(lg / temp) sampled by inversion
            double sum = 0, u;
            for (int j = 0; j < V; j++) sum += exp((lg[j] - lg[best]) / temp);
            u = ef_rng_uniform_double(&rng) * sum;
            for (int j = 0; j < V; j++) {
                u -= exp((lg[j] - lg[best]) / temp);
                if (u <= 0) {
                    best = j;
                    break;
                }
            }
        }
        seq[len++] = best;
    }
    size_t tl = 0;
    if (ef_tokenizer_decode(tok, seq + np, (size_t)n, &text, &tl) != EF_OK) {
        cli_error(C, "%s", ef_last_error());
        goto done;
    }
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON *a = cJSON_AddArrayToObject(j, "ids");
        for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(seq[np + (size_t)i]));
        cJSON_AddStringToObject(j, "text", text);
        if (cli_print_json(C, j) != 0) goto done;
    } else if (ids_only) {
        for (int i = 0; i < n; i++) printf("%s%d", i ? "," : "", (int)seq[np + (size_t)i]);
        printf("\n");
    } else {
        fwrite(text, 1, tl, stdout);
        printf("\n");
    }
    status = 0;
done:
    ef_free(text);
    ef_free(seq);
    ef_free(p);
    ef_lm_free(m);
    ef_tokenizer_free(tok);
    ef_pool_free(pool);
    return status;
}

int cmd_lm(int argc, char **argv) {
    if (argc < 3 || strcmp(argv[2], "-h") == 0 || strcmp(argv[2], "--help") == 0) {
        fputs(TOP_USAGE, argc < 3 ? stderr : stdout);
        return argc < 3 ? CLI_EXIT_USAGE : 0;
    }
    if (strcmp(argv[2], "train") == 0) return lm_train(argc, argv);
    if (strcmp(argv[2], "eval") == 0) return lm_eval(argc, argv);
    if (strcmp(argv[2], "export") == 0) return lm_export(argc, argv);
    if (strcmp(argv[2], "sample") == 0) return lm_sample(argc, argv);
    fprintf(stderr, "edgefl lm: unknown subcommand '%s'\n%s", argv[2], TOP_USAGE);
    return CLI_EXIT_USAGE;
}
