/*
 * Smallest complete use of the edgefl C API: load Fashion-MNIST, train a
 * logistic-regression model for one epoch with SGD, report test accuracy and
 * save the model as safetensors. Build against an installed edgefl with
 *   cc train_logreg.c $(pkg-config --cflags --libs edgefl) -o train_logreg
 * usage: train_logreg [DATA_DIR] [OUT.safetensors]
 */
#include <edgefl/edgefl.h>
#include <stdio.h>

int main(int argc, char **argv) {
    /* NULL (no argument, or ""): the Debian package's folder */
    const char *dir = argc > 1 && argv[1][0] ? argv[1] : NULL;
    const char *out = argc > 2 ? argv[2] : NULL;
    ef_dataset train = {0}, test = {0};
    ef_pool *pool = NULL;
    ef_model *model = NULL;
    ef_optim *opt = NULL;
    int rc = 1;
    if (ef_dataset_load(&train, "fashion-mnist", dir, 1) != EF_OK ||
        ef_dataset_load(&test, "fashion-mnist", dir, 0) != EF_OK) {
        fprintf(stderr, "data: %s\n", ef_last_error());
        goto done;
    }
    ef_model_config mc = {.arch = EF_MODEL_LOGREG, .c = train.c, .h = train.h, .w = train.w,
                          .n_classes = train.n_classes, .max_batch = 64};
    ef_optim_config oc = ef_optim_defaults(EF_OPTIM_SGD);
    oc.lr = 0.008f;
    oc.momentum = 0.9f;
    if (ef_pool_new(&pool, 0) != EF_OK || ef_model_new(&model, &mc, pool) != EF_OK ||
        ef_optim_new(&opt, &oc, ef_model_numel(model)) != EF_OK) {
        fprintf(stderr, "setup: %s\n", ef_last_error());
        goto done;
    }
    ef_model_init(model, 1);
    ef_train_config tc = {.epochs = 1, .batch = 64, .seed = 1, .schedule = EF_LR_COSINE};
    double acc = 0;
    if (ef_train(model, opt, &train, NULL, train.n, &tc, NULL, NULL, NULL) != EF_OK ||
        ef_evaluate(model, &test, NULL, test.n, &acc, NULL) != EF_OK) {
        fprintf(stderr, "train: %s\n", ef_last_error());
        goto done;
    }
    printf("edgefl %s: logreg test accuracy %.4f\n", ef_version(), acc);
    if (out && ef_model_save(model, out, NULL, 0) != EF_OK) {
        fprintf(stderr, "save: %s\n", ef_last_error());
        goto done;
    }
    rc = 0;
done:
    ef_optim_free(opt);
    ef_model_free(model);
    ef_pool_free(pool);
    ef_dataset_free(&train);
    ef_dataset_free(&test);
    return rc;
}
