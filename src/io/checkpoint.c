/*
 * Model checkpoints on top of the safetensors reader and writer: records the
 * architecture in the header metadata so `edgefl eval` can rebuild the model
 * from the file alone.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core_internal.h"
#include "edgefl/checkpoint.h"

ef_status ef_model_save(ef_model *m, const char *path, const ef_st_kv *extra, size_t n_extra) {
    const ef_model_config *c = ef_model_get_config(m);
    char input[64], classes[32];
    snprintf(input, sizeof input, "%d,%d,%d", c->c, c->h, c->w);
    snprintf(classes, sizeof classes, "%d", c->n_classes);
    ef_st_kv meta[16];
    size_t nm = 0;
    meta[nm++] = (ef_st_kv){"format", "pt"};
    meta[nm++] = (ef_st_kv){"edgefl.arch", ef_model_arch_name(c->arch)};
    meta[nm++] = (ef_st_kv){"edgefl.input", input};
    meta[nm++] = (ef_st_kv){"edgefl.classes", classes};
    meta[nm++] = (ef_st_kv){"edgefl.version", EF_VERSION_STRING};
    if (n_extra > sizeof meta / sizeof meta[0] - nm)
        return ef__fail(EF_ERR_INVALID, "checkpoint: too many metadata entries");
    for (size_t i = 0; i < n_extra; i++) meta[nm++] = extra[i];
    return ef_safetensors_save(path, ef_model_params(m), meta, nm);
}

static int parse_int(const char *s, int lo, int hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || v < lo || v > hi) return 0;
    *out = (int)v;
    return (int)(end - s);
}

ef_status ef_checkpoint_config(const char *path, ef_model_config *cfg) {
    ef_safetensors *st = NULL;
    ef_status rc = ef_safetensors_open(&st, path);
    if (rc != EF_OK) return rc;
    const char *arch = ef_safetensors_meta(st, "edgefl.arch");
    const char *input = ef_safetensors_meta(st, "edgefl.input");
    const char *classes = ef_safetensors_meta(st, "edgefl.classes");
    if (arch) {
        if ((rc = ef_model_arch_parse(arch, &cfg->arch)) != EF_OK) {
            rc = ef__fail(EF_ERR_FORMAT, "%s: %s", path, ef_last_error());
            goto done;
        }
    } else if (ef_safetensors_find(st, "conv1.weight")) {
        cfg->arch = ef_safetensors_find(st, "fc3.weight") ? EF_MODEL_LENET5 : EF_MODEL_CNN;
    } else if (ef_safetensors_find(st, "fc3.weight")) {
        cfg->arch = EF_MODEL_MLP;
    } else if (ef_safetensors_find(st, "fc.weight")) {
        cfg->arch = EF_MODEL_LOGREG;
    } else {
        rc = ef__fail(EF_ERR_FORMAT, "%s: not an edgefl model (no edgefl.arch metadata and no "
                                     "known tensor names)", path);
        goto done;
    }
    if (input) {
        int n1, n2, n3;
        const char *p = input;
        if (!(n1 = parse_int(p, 1, 4096, &cfg->c)) || p[n1] != ',' ||
            !(n2 = parse_int(p + n1 + 1, 1, 4096, &cfg->h)) || p[n1 + 1 + n2] != ',' ||
            !(n3 = parse_int(p + n1 + n2 + 2, 1, 4096, &cfg->w)) || p[n1 + n2 + n3 + 2] != 0) {
            rc = ef__fail(EF_ERR_FORMAT, "%s: bad edgefl.input metadata '%s'", path, input);
            goto done;
        }
    } else {
        /* without metadata: the 28x28 grayscale images these models were made for */
        cfg->c = 1, cfg->h = 28, cfg->w = 28;
    }
    if (classes) {
        int n = parse_int(classes, 2, 1000000, &cfg->n_classes);
        if (!n || classes[n] != 0) {
            rc = ef__fail(EF_ERR_FORMAT, "%s: bad edgefl.classes metadata '%s'", path, classes);
            goto done;
        }
    } else {
        const char *last = cfg->arch == EF_MODEL_CNN      ? "fc2.bias"
                           : cfg->arch == EF_MODEL_LOGREG ? "fc.bias"
                                                          : "fc3.bias";
        const ef_st_tensor *t = ef_safetensors_find(st, last);
        if (!t || t->ndim != 1 || t->shape[0] < 2) {
            rc = ef__fail(EF_ERR_FORMAT, "%s: cannot tell the number of classes (%s)", path, last);
            goto done;
        }
        cfg->n_classes = (int)t->shape[0];
    }
done:
    ef_safetensors_close(st);
    return rc;
}

ef_status ef_model_load(ef_model **out, const char *path, int max_batch, ef_pool *pool) {
    *out = NULL;
    ef_model_config cfg = {.max_batch = max_batch};
    ef_status rc = ef_checkpoint_config(path, &cfg);
    if (rc != EF_OK) return rc;
    ef_model *m = NULL;
    if ((rc = ef_model_new(&m, &cfg, pool)) != EF_OK) return rc;
    if ((rc = ef_safetensors_load_params(path, ef_model_params(m))) != EF_OK) {
        ef_model_free(m);
        return rc;
    }
    *out = m;
    return EF_OK;
}
