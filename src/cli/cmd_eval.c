/*
 * `edgefl eval`: evaluates a saved model on a dataset's test split.
 */
#include <cjson/cJSON.h>

#include "cli.h"

static const char *USAGE =
    "edgefl eval --model-file FILE [--dataset fashion-mnist] [--data-dir DIR] [--json]";
static const char *DESC =
    "Loads a safetensors model written by 'edgefl train' (or by PyTorch with the same\n"
    "tensor names) and reports its accuracy and loss on the test split.";

int cmd_eval(int argc, char **argv) {
    const char *file = NULL, *dataset = "fashion-mnist", *data_dir = NULL;
    int threads = 0, json = 0, batch = 256, limit = 0;
    cli_opt opts[] = {
        {"model-file", CLI_STR, &file, "FILE", "model to evaluate (required)", 0, 0, NULL, 0},
        {"dataset", CLI_CHOICE, &dataset, NULL, "dataset (default fashion-mnist)", 0, 0, "fashion-mnist", 0},
        {"data-dir", CLI_STR, &data_dir, "DIR", "dataset directory (default " EF_FASHION_MNIST_DIR ")", 0, 0, NULL, 0},
        {"batch", CLI_INT, &batch, "B", "evaluation batch size (default 256)", 1, 65536, NULL, 0},
        {"limit", CLI_INT, &limit, "N", "evaluate on the first N test examples only", 1, 1 << 30, NULL, 0},
        {"threads", CLI_INT, &threads, "T", "threads (default: all CPUs)", 1, 1024, NULL, 0},
        {"json", CLI_FLAG, &json, NULL, "print one JSON object on stdout", 0, 0, NULL, 0},
        {0},
    };
    int help;
    int rc = cli_parse("eval", argc, argv, 2, opts, &help, USAGE, DESC);
    if (rc || help) return rc;
    if (!file) {
        fprintf(stderr, "edgefl eval: --model-file is required\nTry 'edgefl eval --help'.\n");
        return CLI_EXIT_USAGE;
    }
    int status = CLI_EXIT_FAIL;
    ef_pool *pool = NULL;
    ef_model *m = NULL;
    ef_dataset test = {0};
    double t0 = ef_now();
    if (ef_pool_new(&pool, threads) != EF_OK || ef_model_load(&m, file, batch, pool) != EF_OK ||
        ef_dataset_load_n(&test, dataset, data_dir, 0, (uint32_t)limit) != EF_OK) {
        cli_error("eval", "%s", ef_last_error());
        goto done;
    }
    size_t n = limit && (size_t)limit < test.n ? (size_t)limit : test.n;
    double acc = 0, loss = 0;
    if (ef_evaluate(m, &test, NULL, n, &acc, &loss) != EF_OK) {
        cli_error("eval", "%s", ef_last_error());
        goto done;
    }
    const ef_model_config *mc = ef_model_get_config(m);
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "command", "eval");
        cJSON_AddStringToObject(j, "model_file", file);
        cJSON_AddStringToObject(j, "model", ef_model_arch_name(mc->arch));
        cJSON_AddStringToObject(j, "dataset", dataset);
        cJSON_AddNumberToObject(j, "test_accuracy", acc);
        cJSON_AddNumberToObject(j, "test_loss", loss);
        cJSON_AddNumberToObject(j, "test_examples", (double)n);
        cJSON_AddNumberToObject(j, "params", (double)ef_model_numel(m));
        cJSON_AddNumberToObject(j, "wall_s", ef_now() - t0);
        cJSON_AddNumberToObject(j, "peak_rss_mb", ef_peak_rss_mb());
        if (cli_print_json("eval", j) != 0) goto done;
    } else {
        printf("test_accuracy %.4f\ntest_loss %.4f\nexamples %zu\nmodel %s\n", acc, loss, n,
               ef_model_arch_name(mc->arch));
    }
    status = 0;
done:
    ef_model_free(m);
    ef_dataset_free(&test);
    ef_pool_free(pool);
    return status;
}
