/*
 * The FedAvg CNN checked against PyTorch on one real batch: loss, every
 * parameter gradient, and two SGD steps (lr 0.03, momentum 0.9; the second
 * step is the first where the momentum buffer matters).
 *
 * How: the test builds a batch of 32 Fashion-MNIST test images with
 * ef_dataset_load + ef_dataset_batch and writes it (with its indices) to a
 * safetensors file in a fresh temporary directory. tests/nn/make_cnn_ref.py
 * rebuilds that batch from the IDX files with numpy and requires the same
 * bits (so the data path is checked too), builds the same CNN in torch with
 * torch's default initialization from a fixed seed, and writes the initial
 * parameters and the expected results, computed in float64 (and the
 * gradients also in float32, as a yardstick), to a second safetensors file.
 * The float64 reference takes the ReLU masks and max-pool indices of torch's
 * float32 forward: the gradient jumps at a tie, and real batches have
 * near-ties that float32 rounding decides (this one has two conv1 outputs
 * 1e-8 apart; against the unconstrained float64 gradient, torch's own
 * float32 conv1.weight gradient is off by 1.1e-4 of its largest entry). The
 * script checks that the unconstrained float64 logits agree to 1e-6, so
 * only near-ties differ.
 * The test loads the parameters with ef_safetensors_load_params into a model
 * from ef_model_new (cnn, 1x28x28, 10 classes, max_batch 32) and runs
 * ef_model_forward, ef_model_backward and ef_optim_step twice: once with a
 * 2-thread pool and once with a NULL pool.
 *
 * Tolerances, against the float64 reference b, for edgefl's float32 a:
 *   loss:      |a - b| <= 1e-4 |b|
 *   gradients: ||a - b||_2 <= 1e-4 ||b||_2   and   max|a - b| <= 1e-4 max|b|
 *              for every tensor;
 *   SGD steps: the same two bounds on the displacement from the initial
 *              parameters (a - p0 against b - p0), since the parameters
 *              themselves hide any error in an update of size lr * grad.
 * The achieved errors are printed per tensor, next to those of torch's own
 * float32 run. For the steps most of the error is the rounding of the new
 * parameters to float32 (half an ulp of |p| against an update lr * grad),
 * which torch's float32 run shows as much. The test skips (exit 77) only
 * when /usr/bin/python3 cannot import torch and numpy or the dataset is not
 * installed.
 */
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgefl/data.h"
#include "edgefl/io.h"
#include "edgefl/model.h"
#include "edgefl/optim.h"
#include "edgefl/params.h"
#include "edgefl/pool.h"
#include "test_util.h"

#define PYTHON "/usr/bin/python3"
#define SCRIPT EF_SOURCE_DIR "/tests/nn/make_cnn_ref.py"
#define BATCH 32
#define SEED 20240611
#define LR 0.03f
#define MOMENTUM 0.9f
#define TOL 1e-4

static const char *k_names[] = {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                                "fc1.weight",   "fc1.bias",   "fc2.weight",   "fc2.bias"};
#define N_PARAMS (sizeof k_names / sizeof k_names[0])

static char g_dir[256];
static ef_safetensors *g_ref; /* the reference file */
static char g_ref_path[512];
static float g_x[BATCH * 28 * 28]; /* (B, 1, 28, 28) */
static int32_t g_y[BATCH];         /* (B) */

/* The float64 tensor `name` of the reference file as doubles (caller frees),
 * or NULL (with a failed check) if it is missing or not F64 of n elements. */
static double *ref_f64(const char *name, size_t n) {
    const ef_st_tensor *t = ef_safetensors_find(g_ref, name);
    CHECK_MSG(t != NULL, "reference tensor %s missing", name);
    if (!t) return NULL;
    CHECK_MSG(t->dtype == EF_ST_F64 && t->numel == n, "%s: dtype %d numel %zu, want F64 %zu",
              name, (int)t->dtype, t->numel, n);
    if (t->dtype != EF_ST_F64 || t->numel != n) return NULL;
    double *d = malloc(n * sizeof *d);
    if (d) memcpy(d, t->data, n * sizeof *d); /* little-endian host, unaligned source */
    return d;
}

/* The tensor `name` converted to float32 (caller frees), or NULL. */
static float *ref_f32(const char *name, size_t n) {
    const ef_st_tensor *t = ef_safetensors_find(g_ref, name);
    CHECK_MSG(t != NULL && t->numel == n, "reference tensor %s missing or wrong size", name);
    if (!t || t->numel != n) return NULL;
    float *f = malloc(n * sizeof *f);
    if (f && ef_st_tensor_to_f32(t, f) != EF_OK) {
        free(f);
        return NULL;
    }
    return f;
}

typedef struct err2 {
    double rel_l2;  /* ||a - b||_2 / ||b||_2 */
    double max_rel; /* max|a - b| / max|b| */
} err2;

/* Errors of a against b, both taken relative to `base` when it is not NULL. */
static err2 compare(const float *a, const double *b, const float *base, size_t n) {
    double d2 = 0, b2 = 0, dmax = 0, bmax = 0;
    for (size_t i = 0; i < n; i++) {
        double o = base ? (double)base[i] : 0.0;
        double av = (double)a[i] - o, bv = b[i] - o;
        double d = fabs(av - bv);
        d2 += d * d;
        b2 += bv * bv;
        if (d > dmax || isnan(d)) dmax = d;
        if (fabs(bv) > bmax) bmax = fabs(bv);
    }
    err2 e = {sqrt(d2) / sqrt(b2), dmax / bmax};
    if (b2 == 0) e.rel_l2 = e.max_rel = d2 == 0 ? 0.0 : INFINITY;
    return e;
}

/* Compares, prints and checks one tensor; `yard` (may be NULL) is torch's
 * float32 result, printed for scale. */
static void check_tensor(const char *tag, const char *what, const char *name, const float *a,
                         const double *b, const float *base, size_t n, const float *yard) {
    err2 e = compare(a, b, base, n);
    printf("  %-10s %-6s %-13s %8zu  rel_l2 %.2e  max_rel %.2e", tag, what, name, n, e.rel_l2,
           e.max_rel);
    if (yard) {
        err2 y = compare(yard, b, base, n);
        printf("   (torch f32: rel_l2 %.2e  max_rel %.2e)", y.rel_l2, y.max_rel);
    }
    printf("\n");
    CHECK_MSG(e.rel_l2 <= TOL && e.max_rel <= TOL, "%s %s %s: rel_l2 %.3g max_rel %.3g > %g",
              tag, what, name, e.rel_l2, e.max_rel, TOL);
}

/* Params (after a step) against ref64.<prefix>.<name>, as displacements from p0. */
static void check_params(const char *tag, const char *prefix, ef_params *p, const float *p0) {
    for (size_t i = 0; i < N_PARAMS; i++) {
        long k = ef_params_find(p, k_names[i]);
        const ef_tensor_info *ti = ef_params_info(p, (size_t)k);
        char rn[160];
        snprintf(rn, sizeof rn, "ref64.%s.%s", prefix, k_names[i]);
        double *b = ref_f64(rn, ti->numel);
        snprintf(rn, sizeof rn, "ref32.%s.%s", prefix, k_names[i]);
        float *yard = ref_f32(rn, ti->numel);
        if (b)
            check_tensor(tag, prefix, k_names[i], ef_params_tensor(p, (size_t)k), b,
                         p0 + ti->offset, ti->numel, yard);
        free(b);
        free(yard);
    }
}

static void check_loss(const char *tag, const char *what, float loss, const char *ref_name) {
    double *b = ref_f64(ref_name, 1);
    if (!b) return;
    double rel = fabs((double)loss - b[0]) / fabs(b[0]);
    printf("  %-10s %-6s %-13s %8d  edgefl %.9f  torch f64 %.9f  rel %.2e\n", tag, what, "loss",
           1, (double)loss, b[0], rel);
    CHECK_MSG(rel <= TOL, "%s %s: loss %.9g vs %.9g, rel %.3g > %g", tag, what, (double)loss,
              b[0], rel, TOL);
    free(b);
}

/* One full comparison with the given pool (NULL: one thread). */
static void run_case(ef_pool *pool, const char *tag) {
    ef_model_config cfg = {.arch = EF_MODEL_CNN, .c = 1, .h = 28, .w = 28, .n_classes = 10,
                           .max_batch = BATCH};
    ef_model *m = NULL;
    ef_optim *opt = NULL;
    float *p0 = NULL;
    CHECK_OK(ef_model_new(&m, &cfg, pool));
    if (!m) return;
    ef_params *p = ef_model_params(m);
    CHECK(ef_params_count(p) == N_PARAMS);
    for (size_t i = 0; i < N_PARAMS && i < ef_params_count(p); i++)
        CHECK_MSG(strcmp(ef_params_info(p, i)->name, k_names[i]) == 0, "param %zu is %s", i,
                  ef_params_info(p, i)->name);
    ef_status st = ef_safetensors_load_params(g_ref_path, p);
    CHECK_OK(st);
    if (st != EF_OK) goto done;
    size_t n = ef_params_numel(p);
    p0 = malloc(n * sizeof *p0);
    if (!p0) goto done;
    memcpy(p0, ef_params_data(p), n * sizeof *p0);

    float loss = 0;
    CHECK_OK(ef_model_forward(m, g_x, g_y, BATCH, &loss));
    CHECK_OK(ef_model_backward(m));
    check_loss(tag, "fwd", loss, "ref64.loss");
    const float *g = ef_model_grads(m);
    for (size_t i = 0; i < N_PARAMS; i++) {
        const ef_tensor_info *ti = ef_params_info(p, i);
        char rn[160];
        snprintf(rn, sizeof rn, "ref64.grad.%s", k_names[i]);
        double *b = ref_f64(rn, ti->numel);
        snprintf(rn, sizeof rn, "ref32.grad.%s", k_names[i]);
        float *yard = ref_f32(rn, ti->numel);
        if (b) check_tensor(tag, "grad", k_names[i], g + ti->offset, b, NULL, ti->numel, yard);
        free(b);
        free(yard);
    }

    ef_optim_config oc = ef_optim_defaults(EF_OPTIM_SGD);
    oc.lr = LR;
    oc.momentum = MOMENTUM;
    CHECK_OK(ef_optim_new(&opt, &oc, n));
    if (!opt) goto done;
    ef_optim_step(opt, ef_params_data(p), g, pool);
    check_params(tag, "step1", p, p0);
    CHECK_OK(ef_model_forward(m, g_x, g_y, BATCH, &loss));
    CHECK_OK(ef_model_backward(m));
    check_loss(tag, "step1", loss, "ref64.loss2");
    ef_optim_step(opt, ef_params_data(p), g, pool);
    check_params(tag, "step2", p, p0);
done:
    free(p0);
    ef_optim_free(opt);
    ef_model_free(m);
}

/* Writes the batch for the python side: x, y (as floats) and metadata. */
static int write_batch(const char *path, const uint32_t *idx, const char *data_dir) {
    ef_params *b = NULL;
    int64_t xs[4] = {BATCH, 1, 28, 28}, ys[1] = {BATCH};
    int ok = ef_params_new(&b) == EF_OK && ef_params_add(b, "x", 4, xs) == EF_OK &&
             ef_params_add(b, "y", 1, ys) == EF_OK && ef_params_alloc(b) == EF_OK;
    if (ok) {
        memcpy(ef_params_tensor(b, 0), g_x, sizeof g_x);
        float *yf = ef_params_tensor(b, 1);
        for (int i = 0; i < BATCH; i++) yf[i] = (float)g_y[i];
        char ids[BATCH * 8] = "", seed[32];
        size_t len = 0;
        for (int i = 0; i < BATCH; i++)
            len += (size_t)snprintf(ids + len, sizeof ids - len, "%s%u", i ? "," : "", idx[i]);
        snprintf(seed, sizeof seed, "%d", SEED);
        ef_st_kv meta[] = {{"edgefl.indices", ids}, {"edgefl.data_dir", data_dir},
                           {"seed", seed}};
        ok = ef_safetensors_save(path, b, meta, 3) == EF_OK;
        if (!ok) fprintf(stderr, "writing the batch: %s\n", ef_last_error());
    }
    ef_params_free(b);
    return ok;
}

int main(void) {
    if (system(PYTHON " -c 'import torch, numpy' >/dev/null 2>&1") != 0) {
        printf("SKIPPED: %s cannot import torch and numpy "
               "(apt install python3-torch python3-numpy)\n", PYTHON);
        return TU_SKIP;
    }
    const char *data_dir = EF_FASHION_MNIST_DIR;
    ef_dataset test = {0};
    ef_status st = ef_dataset_load(&test, "fashion-mnist", data_dir, 0);
    if (st == EF_ERR_NOT_FOUND) {
        printf("SKIPPED: Fashion-MNIST is not installed (%s; apt install "
               "dataset-fashion-mnist)\n", ef_last_error());
        return TU_SKIP;
    }
    CHECK_OK(st);
    if (st != EF_OK) return tu_finish("nn/test_torch_cnn");
    CHECK(test.n >= BATCH && test.c == 1 && test.h == 28 && test.w == 28 && test.n_classes == 10);

    /* A fixed batch spread over the test set rather than its first rows. */
    uint32_t idx[BATCH];
    for (uint32_t i = 0; i < BATCH; i++) idx[i] = (i * 313u) % (uint32_t)test.n;
    ef_dataset_batch(&test, idx, BATCH, g_x, g_y);
    ef_dataset_free(&test);

    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/edgefl-cnn-XXXXXX", tmp);
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    char batch_path[512], cmd[2048];
    snprintf(batch_path, sizeof batch_path, "%s/batch.safetensors", g_dir);
    snprintf(g_ref_path, sizeof g_ref_path, "%s/ref.safetensors", g_dir);
    CHECK(write_batch(batch_path, idx, data_dir));
    snprintf(cmd, sizeof cmd, "%s %s '%s' '%s'", PYTHON, SCRIPT, batch_path, g_ref_path);
    fflush(stdout);
    int rc = system(cmd);
    CHECK_MSG(rc == 0, "%s failed (status %d)", SCRIPT, rc);
    if (rc == 0) {
        CHECK_OK(ef_safetensors_open(&g_ref, g_ref_path));
        if (g_ref) {
            printf("  errors against torch float64 (bounds: rel_l2 and max_rel <= %g)\n", TOL);
            ef_pool *pool = NULL;
            CHECK_OK(ef_pool_new(&pool, 2));
            if (pool) run_case(pool, "2 threads");
            ef_pool_free(pool);
            run_case(NULL, "no pool");
            ef_safetensors_close(g_ref);
        }
    }
    tu_rmtree(g_dir);
    return tu_finish("nn/test_torch_cnn");
}
