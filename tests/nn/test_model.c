/*
 * Models, trainer and checkpoints: parameter counts and the flat-vector
 * layout (names, shapes, offsets) of logreg, MLP and the FedAvg CNN; input
 * validation; whole-model gradients against finite differences; that
 * training is bit-identical for the same seed and thread count and lowers
 * the loss on real Fashion-MNIST; checkpoint save/load round trips,
 * architecture inference from tensor names, and refusal of mismatched files.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgefl/edgefl.h"
#include "test_util.h"

static ef_model *make(ef_model_arch arch, int max_batch, ef_pool *pool) {
    ef_model_config c = {.arch = arch, .c = 1, .h = 28, .w = 28, .n_classes = 10,
                         .max_batch = max_batch};
    ef_model *m = NULL;
    CHECK_OK(ef_model_new(&m, &c, pool));
    return m;
}

static void test_layouts(void) {
    struct {
        ef_model_arch arch;
        size_t numel;
        const char *names[8];
        int64_t dim0[8];
    } want[] = {
        {EF_MODEL_LOGREG, 7850, {"fc.weight", "fc.bias"}, {10, 10}},
        {EF_MODEL_MLP, 199210,
         {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"},
         {200, 200, 200, 200, 10, 10}},
        /* McMahan et al. 2017: 1,663,370 parameters */
        {EF_MODEL_CNN, 1663370,
         {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias",
          "fc2.weight", "fc2.bias"},
         {32, 32, 64, 64, 512, 512, 10, 10}},
    };
    for (size_t k = 0; k < 3; k++) {
        ef_model *m = make(want[k].arch, 4, NULL);
        if (!m) continue;
        ef_params *p = ef_model_params(m);
        CHECK_MSG(ef_model_numel(m) == want[k].numel, "%s: %zu params",
                  ef_model_arch_name(want[k].arch), ef_model_numel(m));
        size_t off = 0;
        for (size_t i = 0; i < ef_params_count(p); i++) {
            const ef_tensor_info *t = ef_params_info(p, i);
            CHECK_MSG(strcmp(t->name, want[k].names[i]) == 0, "tensor %zu is %s", i, t->name);
            CHECK(t->shape[0] == want[k].dim0[i]);
            CHECK(t->offset == off); /* tensors are packed back to back */
            off += t->numel;
        }
        CHECK(off == ef_params_numel(p));
        ef_model_free(m);
    }
    /* the CNN's exact shapes */
    ef_model *m = make(EF_MODEL_CNN, 2, NULL);
    const ef_tensor_info *c2 = ef_params_info(ef_model_params(m), 2);
    CHECK(c2->ndim == 4 && c2->shape[1] == 32 && c2->shape[2] == 5 && c2->shape[3] == 5);
    const ef_tensor_info *f1 = ef_params_info(ef_model_params(m), 4);
    CHECK(f1->ndim == 2 && f1->shape[1] == 3136);
    ef_model_free(m);
}

static void test_validation(void) {
    ef_model *m = NULL;
    ef_model_config bad = {.arch = EF_MODEL_CNN, .c = 1, .h = 30, .w = 28, .n_classes = 10,
                           .max_batch = 4};
    CHECK(ef_model_new(&m, &bad, NULL) == EF_ERR_INVALID && m == NULL);
    bad.h = 28;
    bad.max_batch = 0;
    CHECK(ef_model_new(&m, &bad, NULL) == EF_ERR_INVALID);
    bad.max_batch = 4;
    bad.n_classes = 1;
    CHECK(ef_model_new(&m, &bad, NULL) == EF_ERR_INVALID);
    CHECK(ef_model_arch_parse("resnet", &bad.arch) == EF_ERR_INVALID);

    m = make(EF_MODEL_MLP, 4, NULL);
    float x[4 * 784] = {0};
    int32_t y[4] = {1, 2, 3, 10};
    float loss;
    CHECK(ef_model_backward(m) == EF_ERR_STATE); /* nothing to back-propagate */
    CHECK(ef_model_forward(m, x, y, 5, &loss) == EF_ERR_INVALID);
    CHECK(ef_model_forward(m, x, y, 0, &loss) == EF_ERR_INVALID);
    CHECK(ef_model_forward(m, x, y, 4, &loss) == EF_ERR_INVALID); /* label 10 */
    y[3] = -1;
    CHECK(ef_model_forward(m, x, y, 4, &loss) == EF_ERR_INVALID);
    y[3] = 9;
    CHECK_OK(ef_model_forward(m, x, NULL, 4, NULL)); /* inference: no labels */
    CHECK(ef_model_backward(m) == EF_ERR_STATE);
    CHECK_OK(ef_model_forward(m, x, y, 4, &loss));
    CHECK_OK(ef_model_backward(m));
    ef_model_free(m);
}

/* Mean loss for the current parameters (double accumulation inside the model). */
static double model_loss(ef_model *m, const float *x, const int32_t *y, int n) {
    float l = 0;
    ef_model_forward(m, x, y, n, &l);
    return l;
}

/* Whole-model backprop against central differences on sampled parameters. */
static void test_model_gradcheck(void) {
    ef_model_arch archs[] = {EF_MODEL_LOGREG, EF_MODEL_MLP, EF_MODEL_CNN};
    ef_pool *pool = NULL;
    CHECK_OK(ef_pool_new(&pool, 2));
    for (int a = 0; a < 3; a++) {
        int n = 3;
        ef_model *m = make(archs[a], n, pool);
        ef_model_init(m, 7);
        ef_rng r;
        ef_rng_seed(&r, 11);
        float *x = malloc(sizeof(float) * (size_t)n * 784);
        int32_t y[3] = {0, 4, 9};
        for (int i = 0; i < n * 784; i++) x[i] = (float)ef_rng_normal(&r);
        float l0;
        CHECK_OK(ef_model_forward(m, x, y, n, &l0));
        CHECK_OK(ef_model_backward(m));
        size_t N = ef_model_numel(m);
        float *g = malloc(sizeof(float) * N);
        memcpy(g, ef_model_grads(m), sizeof(float) * N);
        float *P = ef_params_data(ef_model_params(m));
        int bad = 0, checked = 0;
        double eps = 1e-2;
        for (int s = 0; s < 60; s++) {
            size_t i = (size_t)ef_rng_below(&r, N);
            float keep = P[i];
            P[i] = keep + (float)eps;
            double lp = model_loss(m, x, y, n);
            P[i] = keep - (float)eps;
            double lm = model_loss(m, x, y, n);
            P[i] = keep;
            double num = (lp - lm) / (2 * eps);
            /* loss is a mean of float terms: tolerate ~1e-4 absolute noise */
            if (!(fabs(num - g[i]) <= 2e-3 + 2e-2 * fabs(num))) {
                if (bad < 5)
                    fprintf(stderr, "%s param %zu: backprop %.6g numeric %.6g\n",
                            ef_model_arch_name(archs[a]), i, (double)g[i], num);
                bad++;
            }
            checked++;
        }
        CHECK_MSG(bad == 0, "%s: %d of %d sampled gradients off", ef_model_arch_name(archs[a]),
                  bad, checked);
        free(g);
        free(x);
        ef_model_free(m);
    }
    ef_pool_free(pool);
}

/* Trains `arch` for a few hundred examples; returns the parameters (malloc). */
static float *train_once(ef_model_arch arch, const ef_dataset *ds, int threads, uint64_t seed,
                         double *loss_first, double *loss_last) {
    ef_pool *pool = NULL;
    ef_pool_new(&pool, threads);
    ef_model *m = make(arch, 16, pool);
    ef_model_init(m, seed);
    ef_optim_config oc = ef_optim_defaults(EF_OPTIM_SGD);
    oc.lr = 0.02f;
    oc.momentum = 0.9f;
    ef_optim *o = NULL;
    CHECK_OK(ef_optim_new(&o, &oc, ef_model_numel(m)));
    ef_train_config tc = {.epochs = 1, .batch = 16, .seed = seed, .schedule = EF_LR_CONSTANT};
    ef_train_progress p;
    uint32_t idx[320];
    for (int i = 0; i < 320; i++) idx[i] = (uint32_t)(i * 7);
    double acc0, l0, acc1, l1;
    CHECK_OK(ef_evaluate(m, ds, idx, 320, &acc0, &l0));
    CHECK_OK(ef_train(m, o, ds, idx, 320, &tc, NULL, NULL, &p));
    CHECK(p.samples_done == 320 && p.steps_per_epoch == 20);
    CHECK_OK(ef_evaluate(m, ds, idx, 320, &acc1, &l1));
    *loss_first = l0;
    *loss_last = l1;
    size_t n = ef_model_numel(m);
    float *out = malloc(n * sizeof(float));
    memcpy(out, ef_params_data(ef_model_params(m)), n * sizeof(float));
    ef_optim_free(o);
    ef_model_free(m);
    ef_pool_free(pool);
    return out;
}

static void test_training(const ef_dataset *ds) {
    ef_model_arch archs[] = {EF_MODEL_LOGREG, EF_MODEL_MLP, EF_MODEL_CNN};
    size_t sizes[] = {7850, 199210, 1663370};
    for (int a = 0; a < 3; a++) {
        double f1, l1, f2, l2, f3, l3;
        float *p1 = train_once(archs[a], ds, 2, 3, &f1, &l1);
        float *p2 = train_once(archs[a], ds, 2, 3, &f2, &l2);
        float *p3 = train_once(archs[a], ds, 2, 4, &f3, &l3);
        CHECK_MSG(memcmp(p1, p2, sizes[a] * sizeof(float)) == 0,
                  "%s: same seed and threads, different parameters", ef_model_arch_name(archs[a]));
        CHECK_MSG(memcmp(p1, p3, sizes[a] * sizeof(float)) != 0, "%s: seed has no effect",
                  ef_model_arch_name(archs[a]));
        CHECK_MSG(l1 < 0.8 * f1, "%s: loss %.4f -> %.4f did not drop",
                  ef_model_arch_name(archs[a]), f1, l1);
        free(p1);
        free(p2);
        free(p3);
    }
}

static void test_checkpoint(const ef_dataset *ds) {
    char dir[] = "/tmp/edgefl-model-XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0);
        return;
    }
    char path[256], other[256];
    snprintf(path, sizeof path, "%s/cnn.safetensors", dir);
    snprintf(other, sizeof other, "%s/mlp.safetensors", dir);
    ef_model *m = make(EF_MODEL_CNN, 8, NULL);
    ef_model_init(m, 99);
    ef_st_kv extra[] = {{"note", "unit test"}};
    CHECK_OK(ef_model_save(m, path, extra, 1));
    ef_model_config cfg = {0};
    CHECK_OK(ef_checkpoint_config(path, &cfg));
    CHECK(cfg.arch == EF_MODEL_CNN && cfg.c == 1 && cfg.h == 28 && cfg.w == 28 &&
          cfg.n_classes == 10);
    ef_model *back = NULL;
    CHECK_OK(ef_model_load(&back, path, 8, NULL));
    if (back) {
        CHECK(memcmp(ef_params_data(ef_model_params(m)), ef_params_data(ef_model_params(back)),
                     ef_model_numel(m) * sizeof(float)) == 0);
        double a1, a2;
        CHECK_OK(ef_evaluate(m, ds, NULL, 200, &a1, NULL));
        CHECK_OK(ef_evaluate(back, ds, NULL, 200, &a2, NULL));
        CHECK(a1 == a2);
        ef_model_free(back);
    }
    ef_safetensors *st = NULL;
    CHECK_OK(ef_safetensors_open(&st, path));
    if (st) {
        CHECK(strcmp(ef_safetensors_meta(st, "edgefl.arch"), "cnn") == 0);
        CHECK(strcmp(ef_safetensors_meta(st, "note"), "unit test") == 0);
        CHECK(strcmp(ef_safetensors_meta(st, "format"), "pt") == 0);
        ef_safetensors_close(st);
    }
    /* without edgefl metadata (as PyTorch would write it): inferred from names */
    ef_params *p = ef_model_params(m);
    CHECK_OK(ef_safetensors_save(other, p, NULL, 0));
    CHECK_OK(ef_checkpoint_config(other, &cfg));
    CHECK(cfg.arch == EF_MODEL_CNN && cfg.n_classes == 10);
    /* an MLP file is refused by a CNN layout, and the CNN stays unchanged */
    ef_model *mlp = make(EF_MODEL_MLP, 2, NULL);
    CHECK_OK(ef_safetensors_save(other, ef_model_params(mlp), NULL, 0));
    float before = ef_params_data(p)[123];
    CHECK(ef_safetensors_load_params(other, p) != EF_OK);
    CHECK(strstr(ef_last_error(), "conv1.weight") != NULL);
    CHECK(ef_params_data(p)[123] == before);
    ef_model_free(mlp);
    ef_model_free(m);
    unlink(path);
    unlink(other);
    rmdir(dir);
}

int main(void) {
    test_layouts();
    test_validation();
    test_model_gradcheck();
    ef_dataset ds = {0};
    if (ef_dataset_load(&ds, "fashion-mnist", NULL, 0) != EF_OK) {
        fprintf(stderr, "fashion-mnist not found (%s): skipping the data tests\n", ef_last_error());
        int rc = tu_finish("nn/test_model");
        return rc ? rc : TU_SKIP;
    }
    test_training(&ds);
    test_checkpoint(&ds);
    ef_dataset_free(&ds);
    return tu_finish("nn/test_model");
}
