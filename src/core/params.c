/*
 * Flat parameter vector with a tensor table (see include/edgefl/params.h).
 */
#include <string.h>

#include "core_internal.h"
#include "edgefl/params.h"

struct ef_params {
    ef_tensor_info *t;
    size_t count, cap;
    size_t numel;
    float *data;
};

ef_status ef_params_new(ef_params **out) {
    *out = ef_calloc(1, sizeof **out);
    return *out ? EF_OK : EF_ERR_NOMEM;
}

void ef_params_free(ef_params *p) {
    if (!p) return;
    ef_free(p->t);
    ef_free(p->data);
    ef_free(p);
}

ef_status ef_params_add(ef_params *p, const char *name, int ndim, const int64_t *shape) {
    if (p->data) return ef__fail(EF_ERR_STATE, "params: add after alloc");
    if (!name || strlen(name) == 0 || strlen(name) >= EF_MAX_NAME)
        return ef__fail(EF_ERR_INVALID, "params: tensor name empty or longer than %d bytes",
                        EF_MAX_NAME - 1);
    if (ndim < 0 || ndim > EF_MAX_DIMS)
        return ef__fail(EF_ERR_INVALID, "params: tensor '%s' has %d dims (max %d)", name, ndim,
                        EF_MAX_DIMS);
    if (ef_params_find(p, name) >= 0)
        return ef__fail(EF_ERR_INVALID, "params: duplicate tensor name '%s'", name);
    size_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] <= 0 || !ef__mul_size(numel, (size_t)shape[d], &numel))
            return ef__fail(EF_ERR_INVALID, "params: tensor '%s' has a bad dimension", name);
    }
    size_t total;
    if (!ef__add_size(p->numel, numel, &total))
        return ef__fail(EF_ERR_RANGE, "params: total size overflows");
    if (p->count == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 8;
        ef_tensor_info *nt = ef_realloc(p->t, nc * sizeof *nt);
        if (!nt) return EF_ERR_NOMEM;
        p->t = nt;
        p->cap = nc;
    }
    ef_tensor_info *ti = &p->t[p->count];
    memset(ti, 0, sizeof *ti);
    strcpy(ti->name, name);
    ti->ndim = ndim;
    for (int d = 0; d < ndim; d++) ti->shape[d] = shape[d];
    ti->offset = p->numel;
    ti->numel = numel;
    p->count++;
    p->numel = total;
    return EF_OK;
}

ef_status ef_params_alloc(ef_params *p) {
    if (p->data) return ef__fail(EF_ERR_STATE, "params: already allocated");
    p->data = ef_calloc(p->numel ? p->numel : 1, sizeof(float));
    return p->data ? EF_OK : EF_ERR_NOMEM;
}

size_t ef_params_count(const ef_params *p) { return p->count; }
size_t ef_params_numel(const ef_params *p) { return p->numel; }
const ef_tensor_info *ef_params_info(const ef_params *p, size_t i) {
    return i < p->count ? &p->t[i] : NULL;
}

long ef_params_find(const ef_params *p, const char *name) {
    for (size_t i = 0; i < p->count; i++)
        if (strcmp(p->t[i].name, name) == 0) return (long)i;
    return -1;
}

float *ef_params_data(ef_params *p) { return p->data; }

float *ef_params_tensor(ef_params *p, size_t i) {
    return (p->data && i < p->count) ? p->data + p->t[i].offset : NULL;
}

int ef_params_same_layout(const ef_params *a, const ef_params *b) {
    if (a->count != b->count || a->numel != b->numel) return 0;
    for (size_t i = 0; i < a->count; i++) {
        const ef_tensor_info *x = &a->t[i], *y = &b->t[i];
        if (strcmp(x->name, y->name) != 0 || x->ndim != y->ndim) return 0;
        for (int d = 0; d < x->ndim; d++)
            if (x->shape[d] != y->shape[d]) return 0;
    }
    return 1;
}
