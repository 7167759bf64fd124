/*
 * `edgefl train`: trains a model on an image dataset on this machine, with a
 * live progress line, reports test accuracy, optionally saves a safetensors
 * checkpoint and prints one JSON object with --json.
 */
#include <cjson/cJSON.h>
#include <string.h>

#include "cli.h"

static const char *USAGE =
    "edgefl train [--model logreg|mlp|cnn] [--dataset fashion-mnist] [--epochs N] [--batch B]\n"
    "                    [--lr X] [--optimizer sgd|adamw] [--threads T] [--seed S]\n"
    "                    [--out model.safetensors] [--json]";
static const char *DESC =
    "Trains a model on the training split, then reports accuracy on the test split.\n"
    "Progress (epoch, step, loss, samples/s, ETA) goes to stderr; with --json, stdout\n"
    "carries exactly one JSON object. Default learning rates (SGD, momentum 0.9, cosine\n"
    "schedule): cnn 0.03, mlp 0.02, logreg 0.008; with --optimizer adamw, 0.001.";

typedef struct train_state {
    cli_progress prog;
} train_state;

static int on_progress(void *user, const ef_train_progress *p) {
    train_state *s = user;
    char eta[32];
    cli_fmt_duration(eta, sizeof eta, p->eta_s);
    int last = p->step == p->steps_per_epoch;
    cli_progress_show(&s->prog, last, "epoch %d/%d  step %zu/%zu  loss %.4f  %.0f samples/s  ETA %s",
                      p->epoch, p->epochs, p->step, p->steps_per_epoch, (double)p->loss,
                      p->samples_per_s, eta);
    if (last) cli_progress_done(&s->prog);
    return 0;
}

static double default_lr(ef_model_arch arch, ef_optim_kind kind) {
    /* tuned for Fashion-MNIST, batch 32, 3 epochs, cosine schedule */
    if (kind == EF_OPTIM_ADAMW) return 1e-3;
    switch (arch) {
    case EF_MODEL_LOGREG: return 0.008;
    case EF_MODEL_MLP: return 0.02;
    case EF_MODEL_CNN: return 0.03;
    case EF_MODEL_LENET5: return 0.05;
    }
    return 0.01;
}

int cmd_train(int argc, char **argv) {
    const char *model = "cnn", *dataset = "fashion-mnist", *data_dir = NULL, *out = NULL;
    const char *optimizer = "sgd", *schedule = "cosine";
    int epochs = 3, batch = 32, threads = 0, json = 0, quiet = 0, nesterov = 0;
    int limit = 0, eval_limit = 0, warmup = 0;
    double lr = 0, momentum = 0.9, wd = 0;
    uint64_t seed = 1;
    cli_opt opts[] = {
        {"model", CLI_CHOICE, &model, NULL, "model architecture (default cnn)", 0, 0, "logreg|mlp|cnn|lenet5", 0},
        {"dataset", CLI_CHOICE, &dataset, NULL, "dataset (default fashion-mnist)", 0, 0, "fashion-mnist", 0},
        {"data-dir", CLI_STR, &data_dir, "DIR", "dataset directory (default " EF_FASHION_MNIST_DIR ")", 0, 0, NULL, 0},
        {"epochs", CLI_INT, &epochs, "N", "passes over the training set (default 3)", 1, 10000, NULL, 0},
        {"batch", CLI_INT, &batch, "B", "mini-batch size (default 32)", 1, 65536, NULL, 0},
        {"lr", CLI_FLOAT, &lr, "X", "learning rate (default depends on model and optimizer)", 1e-12, 100, NULL, 0},
        {"optimizer", CLI_CHOICE, &optimizer, NULL, "optimizer (default sgd)", 0, 0, "sgd|adamw", 0},
        {"schedule", CLI_CHOICE, &schedule, NULL, "learning-rate schedule over the run (default cosine)", 0, 0, "constant|cosine|linear", 0},
        {"warmup", CLI_INT, &warmup, "N", "warm-up steps with a linear ramp (default 0)", 0, 1 << 30, NULL, 0},
        {"momentum", CLI_FLOAT, &momentum, "M", "SGD momentum (default 0.9)", 0, 0.999999, NULL, 0},
        {"nesterov", CLI_FLAG, &nesterov, NULL, "use Nesterov momentum (SGD)", 0, 0, NULL, 0},
        {"weight-decay", CLI_FLOAT, &wd, "W", "weight decay (default 0; AdamW's is decoupled)", 0, 10, NULL, 0},
        {"threads", CLI_INT, &threads, "T", "threads (default: all CPUs)", 1, 1024, NULL, 0},
        {"seed", CLI_U64, &seed, "S", "random seed for init and shuffling (default 1)", 0, 0, NULL, 0},
        {"limit", CLI_INT, &limit, "N", "train on the first N training examples only", 1, 1 << 30, NULL, 0},
        {"eval-limit", CLI_INT, &eval_limit, "N", "evaluate on the first N test examples only", 1, 1 << 30, NULL, 0},
        {"out", CLI_STR, &out, "FILE", "save the trained model (safetensors, written atomically)", 0, 0, NULL, 0},
        {"json", CLI_FLAG, &json, NULL, "print one JSON object with the results on stdout", 0, 0, NULL, 0},
        {"quiet", CLI_FLAG, &quiet, NULL, "no progress output", 0, 0, NULL, 0},
        {0},
    };
    int help;
    int rc = cli_parse("train", argc, argv, 2, opts, &help, USAGE, DESC);
    if (rc || help) return rc;

    ef_model_arch arch;
    ef_optim_kind okind;
    ef_lr_schedule sched;
    if (ef_model_arch_parse(model, &arch) != EF_OK || ef_optim_kind_parse(optimizer, &okind) != EF_OK ||
        ef_lr_schedule_parse(schedule, &sched) != EF_OK) {
        cli_error("train", "%s", ef_last_error());
        return CLI_EXIT_USAGE;
    }
    if (nesterov && okind != EF_OPTIM_SGD) {
        cli_error("train", "--nesterov applies to --optimizer sgd only");
        return CLI_EXIT_USAGE;
    }
    ef_optim_config oc = ef_optim_defaults(okind);
    if (!cli_find(opts, "lr")->seen) lr = default_lr(arch, okind);
    oc.lr = (float)lr;
    if (okind == EF_OPTIM_SGD) {
        oc.momentum = (float)momentum;
        oc.nesterov = nesterov;
    }
    if (cli_find(opts, "weight-decay")->seen || okind == EF_OPTIM_SGD) oc.weight_decay = (float)wd;

    double t0 = ef_now();
    int status = CLI_EXIT_FAIL;
    ef_pool *pool = NULL;
    ef_model *m = NULL;
    ef_optim *opt = NULL;
    ef_dataset train = {0}, test = {0};
    cJSON *j = NULL;
    train_state ts;
    cli_progress_init(&ts.prog, quiet);

    if (ef_pool_new(&pool, threads) != EF_OK) {
        cli_error("train", "%s", ef_last_error());
        goto done;
    }
    /* Memory holds only what is in use: the training examples while training
     * (--limit reads only those), the test examples (--eval-limit) after. The
     * test files are opened first (one example) so a missing or corrupt file
     * is reported before any training time is spent. */
    if (ef_dataset_load_n(&train, dataset, data_dir, 1, (uint32_t)limit) != EF_OK ||
        ef_dataset_load_n(&test, dataset, data_dir, 0, 1) != EF_OK) {
        cli_error("train", "%s", ef_last_error());
        goto done;
    }
    ef_dataset_free(&test);
    size_t n_train = train.n;
    ef_model_config mc = {.arch = arch, .c = train.c, .h = train.h, .w = train.w,
                          .n_classes = train.n_classes, .max_batch = batch};
    if (ef_model_new(&m, &mc, pool) != EF_OK || ef_optim_new(&opt, &oc, ef_model_numel(m)) != EF_OK) {
        cli_error("train", "%s", ef_last_error());
        goto done;
    }
    ef_model_init(m, seed);
    if (!quiet)
        fprintf(stderr, "edgefl train: %s (%zu parameters), %s, %zu training examples, "
                        "%s lr %g, batch %d, %d threads\n",
                model, ef_model_numel(m), dataset, n_train, optimizer, (double)oc.lr, batch,
                ef_pool_threads(pool));
    ef_train_config tc = {.epochs = epochs, .batch = batch, .seed = seed, .schedule = sched,
                          .warmup_steps = (uint64_t)warmup};
    ef_train_progress fin;
    if (ef_train(m, opt, &train, NULL, n_train, &tc, on_progress, &ts, &fin) != EF_OK) {
        cli_progress_done(&ts.prog);
        cli_error("train", "%s", ef_last_error());
        goto done;
    }
    double train_s = fin.elapsed_s;
    ef_dataset_free(&train);
    ef_optim_free(opt);
    opt = NULL;
    double acc = 0, tloss = 0;
    if (ef_dataset_load_n(&test, dataset, data_dir, 0, (uint32_t)eval_limit) != EF_OK) {
        cli_error("train", "%s", ef_last_error());
        goto done;
    }
    size_t n_test = test.n;
    if (ef_evaluate(m, &test, NULL, n_test, &acc, &tloss) != EF_OK) {
        cli_error("train", "%s", ef_last_error());
        goto done;
    }
    if (out) {
        char accs[32];
        snprintf(accs, sizeof accs, "%.6f", acc);
        ef_st_kv extra[] = {{"edgefl.dataset", dataset}, {"edgefl.test_accuracy", accs}};
        if (ef_model_save(m, out, extra, 2) != EF_OK) {
            cli_error("train", "%s", ef_last_error());
            goto done;
        }
    }
    double wall = ef_now() - t0;
    if (!quiet)
        fprintf(stderr, "edgefl train: test accuracy %.4f (%zu images), test loss %.4f, "
                        "%.0f samples/s, wall %.1f s%s%s\n",
                acc, n_test, tloss, (double)fin.samples_done / train_s, wall, out ? ", saved " : "",
                out ? out : "");
    if (json) {
        j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "command", "train");
        cJSON_AddStringToObject(j, "model", model);
        cJSON_AddStringToObject(j, "dataset", dataset);
        cJSON_AddNumberToObject(j, "test_accuracy", acc);
        cJSON_AddNumberToObject(j, "test_loss", tloss);
        cJSON_AddNumberToObject(j, "final_train_loss", fin.loss);
        cJSON_AddNumberToObject(j, "train_samples_per_s", (double)fin.samples_done / train_s);
        cJSON_AddNumberToObject(j, "train_s", train_s);
        cJSON_AddNumberToObject(j, "wall_s", wall);
        cJSON_AddNumberToObject(j, "peak_rss_mb", ef_peak_rss_mb());
        cJSON_AddNumberToObject(j, "params", (double)ef_model_numel(m));
        cJSON_AddNumberToObject(j, "epochs", epochs);
        cJSON_AddNumberToObject(j, "batch", batch);
        cJSON_AddNumberToObject(j, "lr", lr);
        cJSON_AddStringToObject(j, "schedule", schedule);
        cJSON_AddStringToObject(j, "optimizer", optimizer);
        cJSON_AddNumberToObject(j, "threads", ef_pool_threads(pool));
        cJSON_AddNumberToObject(j, "seed", (double)seed);
        cJSON_AddNumberToObject(j, "train_examples", (double)n_train);
        cJSON_AddNumberToObject(j, "test_examples", (double)n_test);
        if (out) cJSON_AddStringToObject(j, "out", out);
        int printed = cli_print_json("train", j);
        j = NULL;
        if (printed != 0) goto done;
    } else {
        printf("test_accuracy %.4f\n", acc);
    }
    status = 0;
done:
    cJSON_Delete(j);
    ef_optim_free(opt);
    ef_model_free(m);
    ef_dataset_free(&train);
    ef_dataset_free(&test);
    ef_pool_free(pool);
    return status;
}
