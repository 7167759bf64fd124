/*
 * Server checkpoints (ef_server_checkpoint / ef_server_restore): the state
 * a server needs to resume a run after a crash, written atomically.
 *
 * DIR/model-<rounds>.safetensors  tensors "global" (the model, F32 [n]) and
 *                                 "strategy.<name>" (server-optimizer state)
 * DIR/state.json                  everything else: rounds completed, model
 *                                 version, message counter, the selection
 *                                 RNG, the round records, the clients known
 *                                 (id, data sizes, last message counter), the
 *                                 DP accountant and clipping norm, and the
 *                                 BLAKE2b-256 of the model file's tensors
 *
 * The model file is written first, state.json (which names it) second, then
 * older model files are removed: a crash at any point leaves a state.json
 * that names a complete model file.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <sodium.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core_internal.h"
#include "edgefl/io.h"
#include "fl_internal.h"
#include "server_internal.h"

#define STATE_FORMAT "edgefl-server-state-v1"
#define MAX_STATE_BYTES (1u << 30)

/* ---- round records <-> JSON ------------------------------------------------ */

typedef enum { F_U32, F_INT, F_U64, F_DBL } ftype;
typedef struct rfield {
    const char *name;
    ftype t;
    size_t off;
} rfield;

#define RF(n, t) {#n, t, offsetof(ef_round_record, n)}
static const rfield RFIELDS[] = {
    RF(round, F_U32),      RF(sim_start, F_DBL),     RF(sim_end, F_DBL),
    RF(wall_s, F_DBL),     RF(selected, F_U32),      RF(completed, F_U32),
    RF(dropped, F_U32),    RF(late, F_U32),          RF(rejected, F_U32),
    RF(aggregated, F_INT), RF(train_loss, F_DBL),    RF(test_accuracy, F_DBL),
    RF(test_loss, F_DBL),  RF(fed_accuracy, F_DBL),  RF(fed_loss, F_DBL),
    RF(bytes_up, F_U64),   RF(bytes_down, F_U64),    RF(staleness_mean, F_DBL),
    RF(staleness_max, F_U32), RF(epsilon, F_DBL),    RF(dp_clip, F_DBL),
    RF(update_norm_median, F_DBL)};
#define N_RFIELDS (sizeof RFIELDS / sizeof RFIELDS[0])

static cJSON *record_json(const ef_round_record *r) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    const char *base = (const char *)r;
    for (size_t i = 0; i < N_RFIELDS; i++) {
        const rfield *f = &RFIELDS[i];
        double v;
        switch (f->t) {
        case F_U32: v = *(const uint32_t *)(const void *)(base + f->off); break;
        case F_INT: v = *(const int *)(const void *)(base + f->off); break;
        case F_U64: v = (double)*(const uint64_t *)(const void *)(base + f->off); break;
        default: v = *(const double *)(const void *)(base + f->off); break;
        }
        if (isnan(v)) continue; /* absent: NaN when read back */
        if (!cJSON_AddNumberToObject(o, f->name, v)) goto fail;
    }
    if (r->note[0] && !cJSON_AddStringToObject(o, "note", r->note)) goto fail;
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

static ef_status record_from_json(const cJSON *o, ef_round_record *r, const char *path) {
    if (!cJSON_IsObject(o)) return ef__fail(EF_ERR_FORMAT, "%s: a round record is not an object", path);
    *r = ef_round_record_empty(0);
    char *base = (char *)r;
    for (size_t i = 0; i < N_RFIELDS; i++) {
        const rfield *f = &RFIELDS[i];
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, f->name);
        if (!it) {
            if (f->t != F_DBL)
                return ef__fail(EF_ERR_FORMAT, "%s: round record without '%s'", path, f->name);
            continue;
        }
        double v = it->valuedouble;
        if (!cJSON_IsNumber(it) || !isfinite(v) ||
            (f->t != F_DBL && (v < 0 || v != floor(v) || v > (f->t == F_U64 ? 9.007199254740992e15
                                                                              : 4294967295.0))))
            return ef__fail(EF_ERR_FORMAT, "%s: round record field '%s' out of range", path, f->name);
        switch (f->t) {
        case F_U32: *(uint32_t *)(void *)(base + f->off) = (uint32_t)v; break;
        case F_INT: *(int *)(void *)(base + f->off) = (int)v; break;
        case F_U64: *(uint64_t *)(void *)(base + f->off) = (uint64_t)v; break;
        default: *(double *)(void *)(base + f->off) = v; break;
        }
    }
    const cJSON *note = cJSON_GetObjectItemCaseSensitive(o, "note");
    if (cJSON_IsString(note)) snprintf(r->note, sizeof r->note, "%s", note->valuestring);
    return EF_OK;
}

/* ---- helpers ----------------------------------------------------------------- */

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = ef_malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static void hex_of(char *out, const uint8_t *b, size_t n) { sodium_bin2hex(out, 2 * n + 1, b, n); }

/* A u64 as a decimal string (JSON numbers lose precision above 2^53). */
static int add_u64(cJSON *o, const char *k, uint64_t v) {
    char b[24];
    snprintf(b, sizeof b, "%llu", (unsigned long long)v);
    return cJSON_AddStringToObject(o, k, b) != NULL;
}

static int get_u64(const cJSON *o, const char *k, uint64_t *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsString(it) || !it->valuestring[0]) return 0;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(it->valuestring, &end, 10);
    if (*end || errno || it->valuestring[0] == '-') return 0;
    *v = x;
    return 1;
}

static int get_num(const cJSON *o, const char *k, double lo, double hi, double *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(it) || !(it->valuedouble >= lo && it->valuedouble <= hi)) return 0;
    *v = it->valuedouble;
    return 1;
}

/* BLAKE2b-256 over the model's floats and the ns strategy-state vectors. */
static void state_hash(const float *model, float *const *sv, size_t ns, size_t n,
                       uint8_t out[EF_HASH_BYTES]) {
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, EF_HASH_BYTES);
    crypto_generichash_update(&h, (const uint8_t *)model, n * sizeof(float));
    for (size_t i = 0; i < ns; i++)
        crypto_generichash_update(&h, (const uint8_t *)sv[i], n * sizeof(float));
    crypto_generichash_final(&h, out, EF_HASH_BYTES);
}

/* ---- checkpoint ---------------------------------------------------------------- */

static ef_status write_model_file(ef_server *s, const char *path) {
    ef_params *p = NULL;
    ef_status st = ef_params_new(&p);
    if (st) return st;
    int64_t shape[1] = {(int64_t)s->n_params};
    size_t ns = ef_strategy_state_count(s->strat);
    st = ef_params_add(p, "global", 1, shape);
    for (size_t i = 0; st == EF_OK && i < ns; i++) {
        const char *name;
        ef_strategy_state(s->strat, i, &name);
        char tn[32];
        snprintf(tn, sizeof tn, "strategy.%s", name);
        st = ef_params_add(p, tn, 1, shape);
    }
    if (st == EF_OK) st = ef_params_alloc(p);
    if (st == EF_OK) {
        memcpy(ef_params_tensor(p, 0), s->model, s->n_params * sizeof(float));
        for (size_t i = 0; i < ns; i++)
            memcpy(ef_params_tensor(p, i + 1), ef_strategy_state(s->strat, i, NULL),
                   s->n_params * sizeof(float));
        ef_st_kv meta[1] = {{"edgefl.checkpoint", "server"}};
        st = ef_safetensors_save(path, p, meta, 1);
    }
    ef_params_free(p);
    return st;
}

/* Removes model-*.safetensors files in dir other than `keep`. */
static void remove_old_models(const char *dir, const char *keep) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, "model-", 6) != 0 || n < 18 ||
            strcmp(e->d_name + n - 12, ".safetensors") != 0 || strcmp(e->d_name, keep) == 0)
            continue;
        char *p = join(dir, e->d_name);
        if (p) unlink(p);
        ef_free(p);
    }
    closedir(d);
}

ef_status ef_server_checkpoint(ef_server *s, const char *dir) {
    if (!s || !dir) return ef__fail(EF_ERR_INVALID, "ef_server_checkpoint: NULL argument");
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return ef__fail(EF_ERR_IO, "%s: cannot create the state directory: %s", dir, strerror(errno));
    char model_name[64];
    snprintf(model_name, sizeof model_name, "model-%zu.safetensors", s->n_records);
    char *model_path = join(dir, model_name), *state_path = join(dir, "state.json");
    cJSON *o = cJSON_CreateObject();
    char *text = NULL;
    ef_status st = EF_ERR_NOMEM;
    if (!model_path || !state_path || !o) goto out;
    if ((st = write_model_file(s, model_path)) != EF_OK) goto out;
    st = EF_ERR_NOMEM;
    uint8_t h[EF_HASH_BYTES];
    float *sv[2] = {NULL, NULL};
    size_t ns = ef_strategy_state_count(s->strat);
    for (size_t i = 0; i < ns && i < 2; i++) sv[i] = ef_strategy_state(s->strat, i, NULL);
    state_hash(s->model, sv, ns, s->n_params, h);
    char hh[2 * EF_HASH_BYTES + 1], rng[2 * sizeof s->rng_at_close.s + 1];
    hex_of(hh, h, sizeof h);
    uint8_t rb[sizeof s->rng_at_close.s];
    for (int i = 0; i < 4; i++) ef__wr64(rb + 8 * i, s->rng_at_close.s[i]);
    hex_of(rng, rb, sizeof rb);
    if (!cJSON_AddStringToObject(o, "format", STATE_FORMAT) || !add_u64(o, "job", s->cfg.job) ||
        !cJSON_AddNumberToObject(o, "rounds_done", (double)s->n_records) ||
        !cJSON_AddNumberToObject(o, "version", s->version) || !add_u64(o, "seq", s->seq) ||
        !cJSON_AddNumberToObject(o, "n_params", (double)s->n_params) ||
        !cJSON_AddStringToObject(o, "strategy",
                                 ef_strategy_name(ef_strategy_get_config(s->strat)->kind)) ||
        !cJSON_AddStringToObject(o, "model_file", model_name) ||
        !cJSON_AddStringToObject(o, "model_hash", hh) || !cJSON_AddStringToObject(o, "rng", rng) ||
        !cJSON_AddStringToObject(o, "stop_reason", s->stop_reason) ||
        !cJSON_AddNumberToObject(o, "refused", (double)s->refused))
        goto out;
    if (s->cfg.dp && !cJSON_AddNumberToObject(o, "dp_clip", s->adapt.clip)) goto out;
    if (s->acct) {
        char *aj = NULL;
        if ((st = ef_accountant_to_json(s->acct, &aj)) != EF_OK) goto out;
        cJSON *a = cJSON_Parse(aj);
        ef_free(aj);
        st = EF_ERR_NOMEM;
        if (!a || !cJSON_AddItemToObject(o, "accountant", a)) {
            cJSON_Delete(a);
            goto out;
        }
    }
    cJSON *recs = cJSON_AddArrayToObject(o, "records");
    if (!recs) goto out;
    for (size_t i = 0; i < s->n_records; i++) {
        cJSON *r = record_json(&s->records[i]);
        if (!r || !cJSON_AddItemToArray(recs, r)) {
            cJSON_Delete(r);
            goto out;
        }
    }
    /* clients: [id, n_train, n_eval, last_seq as a string] */
    cJSON *cl = cJSON_AddArrayToObject(o, "clients");
    if (!cl) goto out;
    for (size_t i = 0; i < s->n_clients; i++) {
        const client_rec *c = &s->clients[i];
        if (c->aggregator) continue; /* registered by the driver at every start */
        char seq[24];
        snprintf(seq, sizeof seq, "%llu", (unsigned long long)c->last_seq);
        cJSON *e = cJSON_CreateArray();
        if (!e || !cJSON_AddItemToArray(cl, e)) {
            cJSON_Delete(e);
            goto out;
        }
        cJSON *v[4] = {cJSON_CreateNumber(c->id), cJSON_CreateNumber(c->n_train),
                       cJSON_CreateNumber(c->n_eval), cJSON_CreateString(seq)};
        for (int k = 0; k < 4; k++)
            if (!v[k] || !cJSON_AddItemToArray(e, v[k])) {
                for (int j = k; j < 4; j++) cJSON_Delete(v[j]);
                goto out;
            }
    }
    if (!(text = cJSON_PrintUnformatted(o))) goto out;
    if ((st = ef_write_file_atomic_mode(state_path, text, strlen(text), 0600)) != EF_OK) goto out;
    remove_old_models(dir, model_name);
out:
    if (text) cJSON_free(text);
    cJSON_Delete(o);
    ef_free(model_path);
    ef_free(state_path);
    return st;
}

/* ---- restore ----------------------------------------------------------------- */

ef_status ef_server_restore(ef_server *s, const char *dir, int *restored) {
    if (restored) *restored = 0;
    if (!s || !dir) return ef__fail(EF_ERR_INVALID, "ef_server_restore: NULL argument");
    if (s->n_records || s->version || s->ph != P_WAIT)
        return ef__fail(EF_ERR_STATE, "ef_server_restore: the server has already started");
    char *state_path = join(dir, "state.json"), *model_path = NULL, *text = NULL;
    if (!state_path) return EF_ERR_NOMEM;
    struct stat sb;
    if (stat(state_path, &sb) != 0 && errno == ENOENT) {
        ef_free(state_path);
        return EF_OK; /* a fresh run */
    }
    size_t len;
    ef_status st = ef_read_file(state_path, MAX_STATE_BYTES, &text, &len);
    cJSON *o = NULL;
    ef_safetensors *f = NULL;
    float *model = NULL, **sv = NULL;
    ef_round_record *recs = NULL;
    ef_accountant *acct = NULL;
    size_t ns = ef_strategy_state_count(s->strat), n_recs = 0;
    const char *P = state_path;
    if (st) goto out;
#define BAD(...)                                                                                  \
    do {                                                                                          \
        st = ef__fail(EF_ERR_FORMAT, __VA_ARGS__);                                                \
        goto out;                                                                                 \
    } while (0)
    if (!(o = cJSON_ParseWithLength(text, len))) BAD("%s: not valid JSON", P);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(o, "format");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, STATE_FORMAT) != 0)
        BAD("%s: not an edgefl server state (format %s expected)", P, STATE_FORMAT);
    uint64_t job, seq;
    double rounds_done, version, n_params, refused;
    if (!get_u64(o, "job", &job) || !get_u64(o, "seq", &seq) ||
        !get_num(o, "rounds_done", 0, 4294967295.0, &rounds_done) ||
        !get_num(o, "version", 0, 4294967295.0, &version) ||
        !get_num(o, "n_params", 0, 9.0e15, &n_params) || !get_num(o, "refused", 0, 9.0e15, &refused))
        BAD("%s: missing or invalid job, seq, rounds_done, version, n_params or refused", P);
    if (job != s->cfg.job)
        BAD("%s: state of job %llu, this server runs job %llu", P, (unsigned long long)job,
            (unsigned long long)s->cfg.job);
    if ((size_t)n_params != s->n_params)
        BAD("%s: model of %.0f parameters, this job's has %zu", P, n_params, s->n_params);
    const cJSON *sn = cJSON_GetObjectItemCaseSensitive(o, "strategy");
    const char *kind = ef_strategy_name(ef_strategy_get_config(s->strat)->kind);
    if (!cJSON_IsString(sn) || strcmp(sn->valuestring, kind) != 0)
        BAD("%s: state of a %s run, this job uses %s", P, cJSON_IsString(sn) ? sn->valuestring : "?",
            kind);
    const cJSON *mf = cJSON_GetObjectItemCaseSensitive(o, "model_file");
    if (!cJSON_IsString(mf) || strchr(mf->valuestring, '/') || strncmp(mf->valuestring, "model-", 6))
        BAD("%s: invalid model_file", P);
    uint8_t want[EF_HASH_BYTES], rb[32];
    const cJSON *mh = cJSON_GetObjectItemCaseSensitive(o, "model_hash");
    const cJSON *rg = cJSON_GetObjectItemCaseSensitive(o, "rng");
    size_t got = 0, got2 = 0;
    if (!cJSON_IsString(mh) || sodium_hex2bin(want, sizeof want, mh->valuestring,
                                              strlen(mh->valuestring), NULL, &got, NULL) != 0 ||
        got != sizeof want || !cJSON_IsString(rg) ||
        sodium_hex2bin(rb, sizeof rb, rg->valuestring, strlen(rg->valuestring), NULL, &got2,
                       NULL) != 0 || got2 != sizeof rb)
        BAD("%s: invalid model_hash or rng", P);
    const cJSON *ra = cJSON_GetObjectItemCaseSensitive(o, "records");
    const cJSON *ca = cJSON_GetObjectItemCaseSensitive(o, "clients");
    if (!cJSON_IsArray(ra) || !cJSON_IsArray(ca) || (size_t)cJSON_GetArraySize(ra) != (size_t)rounds_done)
        BAD("%s: records do not match rounds_done", P);
    /* the model file */
    if (!(model_path = join(dir, mf->valuestring))) {
        st = EF_ERR_NOMEM;
        goto out;
    }
    if ((st = ef_safetensors_open(&f, model_path)) != EF_OK) goto out;
    model = ef_malloc((s->n_params ? s->n_params : 1) * sizeof *model);
    sv = ef_calloc(ns ? ns : 1, sizeof *sv);
    if (!model || !sv) {
        st = EF_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i <= ns; i++) {
        char tn[32];
        const char *name = "global";
        if (i > 0) {
            ef_strategy_state(s->strat, i - 1, &name);
            snprintf(tn, sizeof tn, "strategy.%s", name);
            name = tn;
        }
        const ef_st_tensor *t = ef_safetensors_find(f, name);
        if (!t || t->dtype != EF_ST_F32 || t->numel != s->n_params)
            BAD("%s: tensor '%s' missing or not F32[%zu]", model_path, name, s->n_params);
        float *dst = model;
        if (i > 0 && !(dst = sv[i - 1] = ef_malloc((s->n_params ? s->n_params : 1) * sizeof(float)))) {
            st = EF_ERR_NOMEM;
            goto out;
        }
        memcpy(dst, t->data, s->n_params * sizeof(float));
    }
    /* records, accountant */
    n_recs = (size_t)rounds_done;
    if (n_recs && !(recs = ef_calloc(n_recs, sizeof *recs))) {
        st = EF_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < n_recs; i++)
        if ((st = record_from_json(cJSON_GetArrayItem(ra, (int)i), &recs[i], P)) != EF_OK) goto out;
    const cJSON *aj = cJSON_GetObjectItemCaseSensitive(o, "accountant");
    if (s->acct) {
        if (!aj) BAD("%s: a DP run's state without its accountant", P);
        char *at = cJSON_PrintUnformatted(aj);
        if (!at) {
            st = EF_ERR_NOMEM;
            goto out;
        }
        if ((st = ef_accountant_new(&acct, NULL, 0)) == EF_OK)
            st = ef_accountant_load_json(acct, at, strlen(at));
        cJSON_free(at);
        if (st) goto out;
    }
    double dp_clip = 0;
    if (s->cfg.dp && !get_num(o, "dp_clip", 1e-300, 1e300, &dp_clip)) BAD("%s: invalid dp_clip", P);
    /* clients: validate every entry before changing anything */
    int nc = cJSON_GetArraySize(ca);
    for (int i = 0; i < nc; i++) {
        const cJSON *e = cJSON_GetArrayItem(ca, i);
        double id, ntr, nev;
        uint64_t ls;
        const cJSON *x = cJSON_GetArrayItem(e, 3);
        if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 4 ||
            !cJSON_IsNumber(cJSON_GetArrayItem(e, 0)) || !cJSON_IsString(x))
            BAD("%s: client entry %d malformed", P, i);
        id = cJSON_GetArrayItem(e, 0)->valuedouble;
        ntr = cJSON_IsNumber(cJSON_GetArrayItem(e, 1)) ? cJSON_GetArrayItem(e, 1)->valuedouble : -1;
        nev = cJSON_IsNumber(cJSON_GetArrayItem(e, 2)) ? cJSON_GetArrayItem(e, 2)->valuedouble : -1;
        char *end;
        errno = 0;
        ls = strtoull(x->valuestring, &end, 10);
        if (!(id >= 0 && id < EF_BROADCAST_ID && id == floor(id)) || !(ntr >= 0 && ntr <= 4294967295.0) ||
            !(nev >= 0 && nev <= 4294967295.0) || *end || errno || !x->valuestring[0])
            BAD("%s: client entry %d out of range", P, i);
        (void)ls;
    }
    /* the hash covers model and strategy state as they will be installed */
    uint8_t have[EF_HASH_BYTES];
    state_hash(model, sv, ns, s->n_params, have);
    if (sodium_memcmp(have, want, EF_HASH_BYTES) != 0)
        BAD("%s: does not match the hash in %s (corrupted or from another run)", model_path, P);
    /* install: nothing below fails except on memory */
    for (int i = 0; i < nc; i++) {
        const cJSON *e = cJSON_GetArrayItem(ca, i);
        uint32_t id = (uint32_t)cJSON_GetArrayItem(e, 0)->valuedouble;
        client_rec *c = ef__server_find_client(s, id);
        if (!c && (st = ef__server_add_client(s, id, &c)) != EF_OK) goto out;
        c->n_train = (uint32_t)cJSON_GetArrayItem(e, 1)->valuedouble;
        c->n_eval = (uint32_t)cJSON_GetArrayItem(e, 2)->valuedouble;
        c->last_seq = strtoull(cJSON_GetArrayItem(e, 3)->valuestring, NULL, 10);
        /* still connected to the broker in all likelihood: selectable; a
         * client that is gone shows up as a dropout at the deadline */
        c->state = C_IDLE;
    }
    memcpy(s->model, model, s->n_params * sizeof(float));
    for (size_t i = 0; i < ns; i++)
        memcpy(ef_strategy_state(s->strat, i, NULL), sv[i], s->n_params * sizeof(float));
    ef_free(s->records);
    s->records = recs;
    s->n_records = s->cap_records = n_recs;
    recs = NULL;
    if (acct) {
        ef_accountant_free(s->acct);
        s->acct = acct;
        acct = NULL;
    }
    if (s->cfg.dp) s->adapt.clip = dp_clip;
    s->version = (uint32_t)version;
    if (seq > s->seq) s->seq = seq;
    s->refused = (uint64_t)refused;
    for (int i = 0; i < 4; i++) s->rng.s[i] = ef__rd64(rb + 8 * i);
    s->rng_at_close = s->rng;
    const cJSON *sr = cJSON_GetObjectItemCaseSensitive(o, "stop_reason");
    if (cJSON_IsString(sr)) snprintf(s->stop_reason, sizeof s->stop_reason, "%s", sr->valuestring);
    ef_buf_unref(s->model_buf);
    s->model_buf = NULL;
    s->round = (uint32_t)n_recs + 1;
    s->rec = ef_round_record_empty(s->round);
    if (s->round > s->cfg.rounds || s->stop_reason[0]) s->ph = P_DONE;
    if (restored) *restored = 1;
    st = EF_OK;
#undef BAD
out:
    if (sv)
        for (size_t i = 0; i < ns; i++) ef_free(sv[i]);
    ef_free(sv);
    ef_free(model);
    ef_free(recs);
    ef_accountant_free(acct);
    ef_safetensors_close(f);
    cJSON_Delete(o);
    ef_free(text);
    ef_free(model_path);
    ef_free(state_path);
    return st;
}
