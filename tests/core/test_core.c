/*
 * Tests of the core services: status strings and the thread-local last
 * error, the allocator hook with injected out-of-memory failures (every
 * constructor must return EF_ERR_NOMEM, never crash, and leak nothing),
 * the arena's measuring pass, alignment and exhaustion, the RNG against
 * known answers and statistical sanity checks, and the thread pool
 * (coverage, nesting, serialization of concurrent callers, wake-ups).
 *
 * A counting allocator is installed for the whole run, so every allocation
 * edgefl makes is counted: "leaks nothing" means the number of live blocks
 * returns to its value before the call. pthread_create and pthread_join are
 * interposed (the library is linked statically into this program) to make
 * thread creation fail on demand and to catch joins of threads that were
 * never created. A watchdog alarm turns a deadlock in the pool into a
 * failure instead of a hang.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgefl/arena.h"
#include "edgefl/core.h"
#include "edgefl/model.h"
#include "edgefl/optim.h"
#include "edgefl/params.h"
#include "edgefl/pool.h"
#include "edgefl/rng.h"
#include "test_util.h"

static int quick; // EDGEFL_TEST_QUICK: smaller loops under the sanitizers

/* ---- counting, failing allocator --------------------------------------- */

// Pool workers free their start-up argument on their own thread, so the
// counters are atomic.
static atomic_long live_blocks; // blocks allocated and not yet freed
static atomic_long alloc_calls; // malloc + realloc calls since the last reset
static atomic_long fail_at;     // 1-based call that fails; 0: none
static atomic_int fail_after;   // nonzero: every call from fail_at on fails

static int should_fail(void) {
    long n = atomic_fetch_add(&alloc_calls, 1) + 1;
    long k = atomic_load(&fail_at);
    if (k <= 0) return 0;
    return atomic_load(&fail_after) ? n >= k : n == k;
}

static void *count_malloc(void *user, size_t size) {
    (void)user;
    if (should_fail()) return NULL;
    void *p = malloc(size);
    if (p) atomic_fetch_add(&live_blocks, 1);
    return p;
}

static void *count_realloc(void *user, void *ptr, size_t size) {
    (void)user;
    if (should_fail()) return NULL;
    void *p = realloc(ptr, size);
    if (p && !ptr) atomic_fetch_add(&live_blocks, 1);
    return p;
}

static void count_free(void *user, void *ptr) {
    (void)user;
    if (ptr) atomic_fetch_sub(&live_blocks, 1);
    free(ptr);
}

static const ef_allocator counting = {count_malloc, count_realloc, count_free, NULL};
static const ef_allocator counting_no_realloc = {count_malloc, NULL, count_free, NULL};

static void arm(long k, int persistent) {
    atomic_store(&alloc_calls, 0);
    atomic_store(&fail_after, persistent);
    atomic_store(&fail_at, k);
}

static void disarm(void) { atomic_store(&fail_at, 0); }

/* ---- interposed pthread_create / pthread_join --------------------------- */

static atomic_int create_calls;   // since the last arm_create
static atomic_int create_fail_at; // 1-based call that fails with EAGAIN; 0: none
static atomic_int bogus_joins;    // joins of handles pthread_create never returned
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t registry[4096];
static int n_registry;

typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
typedef int (*join_fn)(pthread_t, void **);
static create_fn real_create; // the next definitions (libc's, or ASan's wrappers)
static join_fn real_join;

// Resolved on first use: OpenBLAS starts its threads from a constructor,
// before main, while the process is still single-threaded.
static int resolve_pthread(void) {
    if (!real_create) *(void **)&real_create = dlsym(RTLD_NEXT, "pthread_create");
    if (!real_join) *(void **)&real_join = dlsym(RTLD_NEXT, "pthread_join");
    return real_create && real_join;
}

int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg) {
    if (!resolve_pthread()) abort();
    int k = atomic_fetch_add(&create_calls, 1) + 1;
    if (atomic_load(&create_fail_at) == k) return EAGAIN;
    int r = real_create(t, attr, fn, arg);
    if (r == 0) {
        pthread_mutex_lock(&reg_mu);
        if (n_registry < 4096) registry[n_registry++] = *t;
        pthread_mutex_unlock(&reg_mu);
    }
    return r;
}

int pthread_join(pthread_t t, void **ret) {
    if (!resolve_pthread()) abort();
    int found = 0;
    pthread_mutex_lock(&reg_mu);
    for (int i = 0; i < n_registry && !found; i++)
        if (pthread_equal(registry[i], t)) {
            registry[i] = registry[--n_registry];
            found = 1;
        }
    pthread_mutex_unlock(&reg_mu);
    if (!found) {
        // POSIX leaves this undefined (glibc returns ESRCH, others crash)
        atomic_fetch_add(&bogus_joins, 1);
        return ESRCH;
    }
    return real_join(t, ret);
}

static void arm_create(int k) {
    atomic_store(&create_calls, 0);
    atomic_store(&create_fail_at, k);
}

/* ---- status and errors --------------------------------------------------- */

static void *fail_in_thread(void *arg) {
    char *msg = arg;
    // Fresh thread: its last error starts empty.
    int empty = ef_last_error()[0] == '\0';
    ef_pool *p = NULL;
    ef_status st = ef_pool_new(&p, -5);
    snprintf(msg, 256, "%d|%d|%s", empty, (int)st, ef_last_error());
    return NULL;
}

static void test_status(void) {
    const char *s[10];
    for (int i = 0; i <= EF_ERR_INTERNAL; i++) {
        s[i] = ef_strerror((ef_status)i);
        CHECK_MSG(s[i] != NULL && s[i][0] != '\0', "status %d", i);
        for (int j = 0; j < i; j++)
            CHECK_MSG(strcmp(s[i], s[j]) != 0, "statuses %d and %d share '%s'", i, j, s[i]);
    }
    CHECK(strcmp(ef_strerror(EF_OK), ef_strerror(EF_ERR_NOMEM)) != 0);
    const char *unk = ef_strerror((ef_status)12345);
    CHECK(unk != NULL && unk[0] != '\0');
    for (int i = 0; i <= EF_ERR_INTERNAL; i++) CHECK(strcmp(unk, s[i]) != 0);
    CHECK(strcmp(ef_version(), EF_VERSION_STRING) == 0);

    ef_clear_error();
    CHECK(ef_last_error() != NULL && ef_last_error()[0] == '\0');
    ef_pool *p = (ef_pool *)&p; // must be reset to NULL on failure
    CHECK(ef_pool_new(&p, -1) == EF_ERR_INVALID);
    CHECK(p == NULL);
    CHECK(strstr(ef_last_error(), "-1") != NULL); // names the bad value
    char mine[1024];
    snprintf(mine, sizeof mine, "%s", ef_last_error());

    // The message is per thread: another thread's failure leaves ours alone.
    char theirs[256] = "";
    pthread_t th;
    CHECK(pthread_create(&th, NULL, fail_in_thread, theirs) == 0);
    pthread_join(th, NULL);
    CHECK_MSG(strncmp(theirs, "1|1|", 4) == 0 && strstr(theirs, "-5") != NULL, "thread: %s",
              theirs);
    CHECK(strcmp(ef_last_error(), mine) == 0);
    ef_clear_error();
    CHECK(ef_last_error()[0] == '\0');
}

/* ---- logging and CPU features ------------------------------------------- */

static char log_buf[256];
static void capture_log(void *user, ef_log_level level, const char *msg) {
    (*(int *)user)++;
    snprintf(log_buf, sizeof log_buf, "%d:%s", (int)level, msg);
}

static void test_log_and_cpu(void) {
    int calls = 0;
    ef_log_set(capture_log, &calls, EF_LOG_WARN);
    ef_log(EF_LOG_INFO, "hidden %d", 1);
    CHECK(calls == 0);
    ef_log(EF_LOG_ERROR, "shown %d %s", 7, "x");
    CHECK(calls == 1 && strcmp(log_buf, "0:shown 7 x") == 0);
    ef_log_set(capture_log, &calls, EF_LOG_DEBUG);
    ef_log(EF_LOG_DEBUG, "debug");
    CHECK(calls == 2 && strcmp(log_buf, "3:debug") == 0);
    ef_log_set(NULL, NULL, EF_LOG_WARN);

    unsigned all = ef_cpu_features();
    ef_cpu_limit(0);
    CHECK(ef_cpu_features() == 0);
    ef_cpu_limit(EF_CPU_AVX2);
    CHECK(ef_cpu_features() == (all & EF_CPU_AVX2));
    ef_cpu_limit(~0u);
    CHECK(ef_cpu_features() == all);

    double t0 = ef_now(), t1 = ef_now();
    CHECK(t1 >= t0 && t0 > 0.0);
    CHECK(ef_peak_rss_mb() > 0.0);
}

/* ---- allocator hook ------------------------------------------------------ */

static void test_alloc_basics(void) {
    long live0 = atomic_load(&live_blocks);
    // ef_malloc(0): unique, non-NULL, freeable.
    void *a = ef_malloc(0), *b = ef_malloc(0);
    CHECK(a != NULL && b != NULL && a != b);
    CHECK(atomic_load(&live_blocks) == live0 + 2);
    ef_free(a);
    ef_free(b);
    ef_free(NULL);
    CHECK(atomic_load(&live_blocks) == live0);

    // calloc zeroes and checks n * size for overflow without calling the hook.
    unsigned char *z = ef_calloc(33, 3);
    int zero = z != NULL;
    for (int i = 0; z && i < 99; i++) zero &= z[i] == 0;
    CHECK(zero);
    ef_free(z);
    arm(0, 0);
    ef_clear_error();
    CHECK(ef_calloc(SIZE_MAX / 2, 3) == NULL);
    CHECK(atomic_load(&alloc_calls) == 0);
    CHECK(ef_last_error()[0] != '\0');

    // A failing hook: NULL, EF_ERR_NOMEM's message, nothing leaked.
    arm(1, 0);
    ef_clear_error();
    CHECK(ef_malloc(10) == NULL);
    CHECK(strstr(ef_last_error(), "10") != NULL);
    arm(1, 0);
    CHECK(ef_strdup("hello") == NULL);
    char *s = ef_strdup("hello");
    CHECK(s != NULL && strcmp(s, "hello") == 0);

    // realloc: keeps content; on failure returns NULL and leaves the block.
    char *r = ef_realloc(s, 1000);
    CHECK(r != NULL && strcmp(r, "hello") == 0);
    arm(1, 0);
    CHECK(ef_realloc(r, 5000) == NULL);
    CHECK(strcmp(r, "hello") == 0);
    disarm();
    ef_free(r);
    CHECK(atomic_load(&live_blocks) == live0);

    // An allocator without realloc: ef_realloc(NULL, n) still works (malloc),
    // growing a block fails cleanly.
    ef_set_allocator(&counting_no_realloc);
    void *m = ef_realloc(NULL, 16);
    CHECK(m != NULL);
    ef_clear_error();
    CHECK(ef_realloc(m, 32) == NULL);
    CHECK(ef_last_error()[0] != '\0');
    ef_free(m);
    ef_set_allocator(&counting);
    CHECK(atomic_load(&live_blocks) == live0);
}

typedef struct run_ctx {
    atomic_int calls;
    atomic_int mask; // bit t: thread t ran
    atomic_int bad;
    int expect_nt;
} run_ctx;

static void run_fn(void *c, int t, int nt) {
    run_ctx *x = c;
    if (nt != x->expect_nt || t < 0 || t >= nt) atomic_fetch_add(&x->bad, 1);
    atomic_fetch_or(&x->mask, 1 << t);
    atomic_fetch_add(&x->calls, 1);
}

/* One constructor under test: build() returns a status and stores the object
 * in ctx; destroy() frees it. */
typedef struct oom_case {
    const char *name;
    ef_status (*build)(void *ctx);
    void (*destroy)(void *ctx);
    void *ctx;
} oom_case;

// Fails allocation k = 1, 2, ... (once, then every allocation from k on)
// until the constructor completes without reaching k.
static void oom_loop(const oom_case *c) {
    for (int persistent = 0; persistent < 2; persistent++) {
        long k;
        int injected = 0;
        for (k = 1; k < 100000; k++) {
            long live0 = atomic_load(&live_blocks);
            ef_clear_error();
            arm(k, persistent);
            ef_status st = c->build(c->ctx);
            long calls = atomic_load(&alloc_calls);
            disarm();
            if (st == EF_OK) {
                c->destroy(c->ctx);
                CHECK_MSG(atomic_load(&live_blocks) == live0, "%s: leak after success (k=%ld)",
                          c->name, k);
                CHECK_MSG(calls < k, "%s: succeeded although allocation %ld of %ld failed",
                          c->name, k, calls);
                break;
            }
            injected++;
            CHECK_MSG(st == EF_ERR_NOMEM, "%s: allocation %ld failed: status %s", c->name, k,
                      ef_strerror(st));
            CHECK_MSG(ef_last_error()[0] != '\0', "%s: no message (k=%ld)", c->name, k);
            long leaked = atomic_load(&live_blocks) - live0;
            CHECK_MSG(leaked == 0, "%s: %ld blocks leaked when allocation %ld failed%s", c->name,
                      leaked, k, persistent ? " (and all after)" : "");
        }
        // Every allocation point was reached: the loop injected k-1 failures.
        CHECK_MSG(k < 100000 && injected >= 1 && injected == k - 1, "%s: %d failures injected", c->name,
                  injected);
        if (persistent == 0 && getenv("EDGEFL_TEST_VERBOSE"))
            printf("    %s: %ld allocation points\n", c->name, k - 1);
    }
}

typedef struct pool_case {
    ef_pool *p;
    int n;
} pool_case;
static ef_status pool_build(void *v) {
    pool_case *c = v;
    ef_pool *p = (ef_pool *)v; // must become NULL on failure
    ef_status st = ef_pool_new(&p, c->n);
    if (st != EF_OK) CHECK(p == NULL);
    c->p = p;
    return st;
}
static void pool_destroy(void *v) {
    pool_case *c = v;
    CHECK(ef_pool_threads(c->p) == c->n);
    ef_pool_free(c->p);
}

static ef_status params_build(void *v) {
    ef_params **out = v, *p = NULL;
    ef_status st = ef_params_new(&p);
    if (st != EF_OK) return st;
    for (int i = 0; i < 20; i++) { // grows the table twice (8 -> 16 -> 32)
        char name[32];
        snprintf(name, sizeof name, "layer%d.weight", i);
        int64_t shape[2] = {i + 1, 3};
        size_t n0 = ef_params_numel(p);
        st = ef_params_add(p, name, 2, shape);
        if (st != EF_OK) {
            // the failed add left the table as it was
            CHECK(ef_params_count(p) == (size_t)i && ef_params_numel(p) == n0);
            CHECK(ef_params_find(p, name) == -1);
            ef_params_free(p);
            return st;
        }
    }
    st = ef_params_alloc(p);
    if (st != EF_OK) {
        CHECK(ef_params_data(p) == NULL);
        ef_params_free(p);
        return st;
    }
    *out = p;
    return EF_OK;
}
static void params_destroy(void *v) {
    ef_params **p = v;
    CHECK(ef_params_count(*p) == 20 && ef_params_data(*p) != NULL);
    ef_params_free(*p);
}

typedef struct optim_case {
    ef_optim_config cfg;
    ef_optim *o;
} optim_case;
static ef_status optim_build(void *v) {
    optim_case *c = v;
    return ef_optim_new(&c->o, &c->cfg, 1000);
}
static void optim_destroy(void *v) {
    optim_case *c = v;
    ef_optim_free(c->o);
}

typedef struct model_case {
    ef_model_config cfg;
    ef_pool *pool;
    ef_model *m;
} model_case;
static ef_status model_build(void *v) {
    model_case *c = v;
    ef_status st = ef_model_new(&c->m, &c->cfg, c->pool);
    if (st != EF_OK) CHECK(c->m == NULL);
    return st;
}
static void model_destroy(void *v) {
    model_case *c = v;
    CHECK(ef_model_numel(c->m) > 0 && ef_model_grads(c->m) != NULL);
    ef_model_free(c->m);
}

static ef_status arena_build(void *v) {
    ef_arena *a = v;
    memset(a, 0, sizeof *a);
    ef_status st = ef_arena_reserve(a, 4096);
    if (st != EF_OK) CHECK(a->base == NULL && a->block == NULL && a->cap == 0);
    return st;
}
static void arena_destroy(void *v) { ef_arena_free(v); }

static void test_oom(void) {
    pool_case pc2 = {NULL, 2}, pc4 = {NULL, 4};
    ef_params *params = NULL;
    optim_case sgd = {ef_optim_defaults(EF_OPTIM_SGD), NULL};
    sgd.cfg.momentum = 0.9f;
    optim_case sgd_plain = {ef_optim_defaults(EF_OPTIM_SGD), NULL};
    optim_case adamw = {ef_optim_defaults(EF_OPTIM_ADAMW), NULL};
    model_case cnn = {{EF_MODEL_CNN, 1, 28, 28, 10, 8}, NULL, NULL};
    model_case mlp = {{EF_MODEL_MLP, 1, 28, 28, 10, 8}, NULL, NULL};
    model_case logreg = {{EF_MODEL_LOGREG, 3, 8, 8, 5, 4}, NULL, NULL};
    ef_pool *pool2 = NULL;
    CHECK_OK(ef_pool_new(&pool2, 2));
    // Workers free their start-up block on their own thread; once a run has
    // completed they all have, and the live count is stable.
    run_ctx warm;
    atomic_init(&warm.calls, 0);
    atomic_init(&warm.mask, 0);
    atomic_init(&warm.bad, 0);
    warm.expect_nt = 2;
    ef_pool_run(pool2, run_fn, &warm);
    model_case cnn_pool = {{EF_MODEL_CNN, 1, 28, 28, 10, 8}, pool2, NULL};
    ef_arena arena;
    const oom_case cases[] = {
        {"ef_pool_new(2)", pool_build, pool_destroy, &pc2},
        {"ef_pool_new(4)", pool_build, pool_destroy, &pc4},
        {"ef_params new/add/alloc", params_build, params_destroy, &params},
        {"ef_optim_new(sgd, momentum)", optim_build, optim_destroy, &sgd},
        {"ef_optim_new(sgd)", optim_build, optim_destroy, &sgd_plain},
        {"ef_optim_new(adamw)", optim_build, optim_destroy, &adamw},
        {"ef_model_new(cnn)", model_build, model_destroy, &cnn},
        {"ef_model_new(cnn, 2 threads)", model_build, model_destroy, &cnn_pool},
        {"ef_model_new(mlp)", model_build, model_destroy, &mlp},
        {"ef_model_new(logreg)", model_build, model_destroy, &logreg},
        {"ef_arena_reserve", arena_build, arena_destroy, &arena},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) oom_loop(&cases[i]);
    ef_pool_free(pool2);

    // Thread creation failing at worker k: EF_ERR_NOMEM with a message, the
    // started workers joined, nothing leaked.
    for (int k = 1; k <= 3; k++) {
        long live0 = atomic_load(&live_blocks);
        ef_pool *p = NULL;
        ef_clear_error();
        arm_create(k);
        CHECK(ef_pool_new(&p, 4) == EF_ERR_NOMEM && p == NULL);
        arm_create(0);
        CHECK(strstr(ef_last_error(), "thread") != NULL);
        CHECK_MSG(atomic_load(&live_blocks) == live0, "pthread_create %d failing: leak", k);
    }
    CHECK_MSG(atomic_load(&bogus_joins) == 0, "%d joins of threads never created",
              atomic_load(&bogus_joins));

    // reserve on an arena holding a block frees it first; failing leaves it empty
    long live0 = atomic_load(&live_blocks);
    ef_arena a = {0};
    CHECK_OK(ef_arena_reserve(&a, 100));
    arm(1, 0);
    CHECK(ef_arena_reserve(&a, 200) == EF_ERR_NOMEM);
    disarm();
    CHECK(a.base == NULL && a.block == NULL && a.cap == 0 && a.used == 0);
    CHECK(ef_arena_alloc(&a, 1) == NULL);
    CHECK(atomic_load(&live_blocks) == live0);
    // a size that overflows with the alignment slack fails without allocating
    arm(0, 0);
    CHECK(ef_arena_reserve(&a, SIZE_MAX - 10) == EF_ERR_NOMEM);
    CHECK(atomic_load(&alloc_calls) == 0);
    CHECK(atomic_load(&live_blocks) == live0);
}

/* ---- arena ---------------------------------------------------------------- */

// Two passes of the same layout code, as models use it.
static void layout(ef_arena *a, void **p) {
    p[0] = ef_arena_alloc(a, 1);
    p[1] = ef_arena_alloc(a, 100);
    p[2] = ef_arena_floats(a, 3);
    p[3] = ef_arena_alloc(a, 64);
    p[4] = ef_arena_alloc(a, 0);
    p[5] = ef_arena_floats(a, 1000);
}

static void test_arena(void) {
    long live0 = atomic_load(&live_blocks);
    ef_arena a;
    memset(&a, 0, sizeof a);
    void *p[6];
    ef_arena_measure(&a);
    layout(&a, p);
    for (int i = 0; i < 6; i++) CHECK(p[i] == NULL);
    // 1 -> 64, 100 -> 128+100=228 -> 256, +12 = 268 -> 320, +64 = 384, +0 -> 384, +4000
    CHECK_MSG(a.used == 4320, "measured %zu bytes", a.used);
    CHECK(atomic_load(&live_blocks) == live0); // measuring allocates nothing

    CHECK_OK(ef_arena_reserve(&a, a.used));
    CHECK(a.cap == 4320 && a.used == 0 && !a.measuring);
    CHECK(atomic_load(&live_blocks) == live0 + 1);
    layout(&a, p);
    static const size_t off[6] = {0, 64, 192, 256, 320, 320};
    int zero = 1;
    for (int i = 0; i < 6; i++) {
        CHECK_MSG(p[i] != NULL && (uintptr_t)p[i] % EF_ARENA_ALIGN == 0, "block %d at %p", i,
                  p[i]);
        CHECK_MSG((unsigned char *)p[i] - (unsigned char *)p[0] == (ptrdiff_t)off[i],
                  "block %d at offset %td", i, (unsigned char *)p[i] - (unsigned char *)p[0]);
    }
    for (size_t i = 0; i < 4320; i++) zero &= ((unsigned char *)p[0])[i] == 0;
    CHECK(zero); // reserve zeroes the block
    CHECK(a.used == 4320);
    memset(p[0], 0xab, 4320); // the whole block is ours (ASan checks the bounds)

    // Exhausted: NULL and a message; the arena is unchanged.
    ef_clear_error();
    CHECK(ef_arena_alloc(&a, 1) == NULL);
    CHECK(strstr(ef_last_error(), "exhausted") != NULL);
    CHECK(a.used == 4320);
    CHECK(ef_arena_alloc(&a, SIZE_MAX) == NULL);
    CHECK(ef_arena_floats(&a, SIZE_MAX / 2) == NULL);

    // Reset hands out the same pointers again.
    void *q[6];
    ef_arena_reset(&a);
    layout(&a, q);
    CHECK(memcmp(p, q, sizeof p) == 0);

    // Measuring again frees the block.
    ef_arena_measure(&a);
    CHECK(a.block == NULL && a.measuring);
    CHECK(atomic_load(&live_blocks) == live0);
    CHECK(ef_arena_alloc(&a, 1) == NULL && a.used == 1);
    CHECK(ef_arena_alloc(&a, SIZE_MAX) == NULL && a.used == 1); // overflow: not counted
    ef_arena_free(&a);
    CHECK(a.base == NULL && a.cap == 0 && a.used == 0 && a.block == NULL && !a.measuring);
    ef_arena_free(&a); // twice is fine

    // A zeroed arena that was never reserved hands out nothing.
    CHECK(ef_arena_alloc(&a, 8) == NULL);

    // Reserve 0 bytes: valid, only zero-size allocations fit.
    CHECK_OK(ef_arena_reserve(&a, 0));
    CHECK(ef_arena_alloc(&a, 0) != NULL);
    CHECK(ef_arena_alloc(&a, 1) == NULL);
    ef_arena_free(&a);
    CHECK(atomic_load(&live_blocks) == live0);
}

/* ---- RNG ----------------------------------------------------------------- */

/*
 * Known answers from an independent Python implementation of splitmix64
 * seeding and xoshiro256** (Vigna's reference code, transcribed):
 *
 *   M = (1 << 64) - 1
 *   def splitmix(x):
 *       x = (x + 0x9E3779B97F4A7C15) & M; z = x
 *       z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
 *       z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
 *       return x, z ^ (z >> 31)
 *   def rotl(x, k): return ((x << k) | (x >> (64 - k))) & M
 *   def seed(s):
 *       st = []
 *       for _ in range(4): s, z = splitmix(s); st.append(z)
 *       return st
 *   def nxt(s):
 *       r = (rotl((s[1] * 5) & M, 7) * 9) & M; t = (s[1] << 17) & M
 *       s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t
 *       s[3] = rotl(s[3], 45)
 *       return r
 *
 * splitmix64's first output for seed 0, 0xe220a8397b1dcdaf, is also the
 * value published with Vigna's reference implementation.
 */
static const uint64_t seed0_state[4] = {0xe220a8397b1dcdafull, 0x6e789e6aa1b965f4ull,
                                        0x06c45d188009454full, 0xf88bb8a8724c81ecull};
static const uint64_t seed0_out[4] = {0x99ec5f36cb75f2b4ull, 0xbf6e1f784956452aull,
                                      0x1a5f849d4933e6e0ull, 0x6aa594f1262d2d2cull};
static const uint64_t seed42_state[4] = {0xbdd732262feb6e95ull, 0x28efe333b266f103ull,
                                         0x47526757130f9f52ull, 0x581ce1ff0e4ae394ull};
static const uint64_t seed42_out[4] = {0x15780b2e0c2ec716ull, 0x6104d9866d113a7eull,
                                       0xae17533239e499a1ull, 0xecb8ad4703b360a1ull};

static double chi2(const long *counts, int k, double expected) {
    double s = 0.0;
    for (int i = 0; i < k; i++) s += (counts[i] - expected) * (counts[i] - expected) / expected;
    return s;
}

static void test_rng(void) {
    ef_rng r;
    ef_rng_seed(&r, 0);
    CHECK(memcmp(r.s, seed0_state, sizeof r.s) == 0);
    for (int i = 0; i < 4; i++) CHECK_MSG(ef_rng_u64(&r) == seed0_out[i], "seed 0 output %d", i);
    ef_rng_seed(&r, 42);
    CHECK(memcmp(r.s, seed42_state, sizeof r.s) == 0);
    for (int i = 0; i < 4; i++) CHECK_MSG(ef_rng_u64(&r) == seed42_out[i], "seed 42 output %d", i);

    // uniform: the top 24 (float) or 53 (double) bits of the next output
    ef_rng_seed(&r, 0);
    CHECK(ef_rng_uniform(&r) == (float)(seed0_out[0] >> 40) / 16777216.0f);
    CHECK(ef_rng_uniform_double(&r) == (double)(seed0_out[1] >> 11) / 9007199254740992.0);

    // Same seed, same stream; a copy is a snapshot.
    ef_rng a, b;
    ef_rng_seed(&a, 123);
    ef_rng_seed(&b, 123);
    ef_rng snap = a;
    int same = 1;
    for (int i = 0; i < 100; i++) same &= ef_rng_u64(&a) == ef_rng_u64(&b);
    CHECK(same);
    CHECK(ef_rng_u64(&snap) != ef_rng_u64(&a));

    // Fork: deterministic, parent untouched, streams differ from each other
    // and from the parent.
    ef_rng parent, before, c0, c0b, c1;
    ef_rng_seed(&parent, 7);
    before = parent;
    ef_rng_fork(&parent, 0, &c0);
    ef_rng_fork(&parent, 0, &c0b);
    ef_rng_fork(&parent, 1, &c1);
    CHECK(memcmp(&parent, &before, sizeof parent) == 0);
    CHECK(memcmp(&c0, &c0b, sizeof c0) == 0);
    int diff01 = 0, diffp = 0;
    for (int i = 0; i < 64; i++) {
        uint64_t x0 = ef_rng_u64(&c0), x1 = ef_rng_u64(&c1), xp = ef_rng_u64(&parent);
        diff01 += x0 != x1;
        diffp += x0 != xp;
    }
    CHECK(diff01 == 64 && diffp == 64);

    // below: range, n = 1, and uniformity where a biased method would show.
    ef_rng_seed(&r, 99);
    int ok = 1;
    for (int i = 0; i < 1000; i++) ok &= ef_rng_below(&r, 1) == 0;
    for (int i = 0; i < 1000; i++) ok &= ef_rng_below(&r, 10) < 10;
    for (int i = 0; i < 1000; i++) ok &= ef_rng_below(&r, (1ull << 63) + 1) <= (1ull << 63);
    CHECK(ok);
    int nsamp = quick ? 30000 : 90000;
    long c7[7] = {0};
    for (int i = 0; i < nsamp; i++) c7[ef_rng_below(&r, 7)]++;
    double x7 = chi2(c7, 7, nsamp / 7.0);
    CHECK_MSG(x7 < 22.46, "below(7): chi-square %.2f (df 6, p = 0.001 at 22.46)", x7);
    // n = 3 * 2^62: `u64 % n` puts half the draws below 2^62 (instead of a
    // third), and multiply-shift without rejection makes r % 3 == 0 half the
    // time; both show in these two chi-squares (df 2, p = 0.001 at 13.82).
    const uint64_t n3 = 3ull << 62;
    long coarse[3] = {0}, mod3[3] = {0};
    for (int i = 0; i < nsamp; i++) {
        uint64_t v = ef_rng_below(&r, n3);
        ok &= v < n3;
        coarse[v >> 62]++;
        mod3[v % 3]++;
    }
    CHECK(ok);
    double xc = chi2(coarse, 3, nsamp / 3.0), xm = chi2(mod3, 3, nsamp / 3.0);
    CHECK_MSG(xc < 13.82 && xm < 13.82, "below(3*2^62): chi-square %.2f (coarse) %.2f (mod 3)",
              xc, xm);

    // uniform in [0, 1), mean 1/2, variance 1/12.
    int nu = 100000;
    double s = 0.0, s2 = 0.0, sd = 0.0;
    int in_range = 1;
    for (int i = 0; i < nu; i++) {
        float u = ef_rng_uniform(&r);
        double ud = ef_rng_uniform_double(&r);
        in_range &= u >= 0.0f && u < 1.0f && ud >= 0.0 && ud < 1.0;
        s += u;
        s2 += (double)u * u;
        sd += ud;
    }
    CHECK(in_range);
    double mean = s / nu, var = s2 / nu - mean * mean;
    // standard errors: mean 0.0009, variance 0.0003; bounds are ~5 of them
    CHECK_MSG(fabs(mean - 0.5) < 0.005 && fabs(sd / nu - 0.5) < 0.005, "uniform mean %.4f %.4f",
              mean, sd / nu);
    CHECK_MSG(fabs(var - 1.0 / 12) < 0.0015, "uniform variance %.5f", var);
    CHECK((float)(0xFFFFFFull) * 0x1.0p-24f < 1.0f); // the largest float it can return

    // normal: mean 0, variance 1, P(|x| < 1) = 0.6827 over 1e5 samples
    // (standard errors 0.0032, 0.0045 and 0.0015).
    double m = 0.0, v = 0.0;
    long inside = 0;
    int finite = 1;
    for (int i = 0; i < nu; i++) {
        double x = ef_rng_normal(&r);
        finite &= isfinite(x);
        m += x;
        v += x * x;
        inside += fabs(x) < 1.0;
    }
    m /= nu;
    v = v / nu - m * m;
    CHECK(finite);
    CHECK_MSG(fabs(m) < 0.016 && fabs(v - 1.0) < 0.025, "normal mean %.4f variance %.4f", m, v);
    CHECK_MSG(fabs((double)inside / nu - 0.682689) < 0.008, "normal P(|x|<1) = %.4f",
              (double)inside / nu);

    // shuffle: a permutation, and every ordering of 4 equally likely.
    static const size_t sizes[] = {0, 1, 2, 10, 1000};
    for (size_t t = 0; t < sizeof sizes / sizeof *sizes; t++) {
        size_t n = sizes[t];
        uint32_t *idx = malloc((n ? n : 1) * sizeof *idx);
        unsigned char *seen = calloc(n ? n : 1, 1);
        for (size_t i = 0; i < n; i++) idx[i] = (uint32_t)i;
        ef_rng_shuffle_u32(&r, idx, n);
        int perm = 1;
        size_t moved = 0;
        for (size_t i = 0; i < n; i++) {
            perm &= idx[i] < n && !seen[idx[i]];
            if (idx[i] < n) seen[idx[i]] = 1;
            moved += idx[i] != i;
        }
        CHECK_MSG(perm, "shuffle of %zu is not a permutation", n);
        if (n >= 10) CHECK(moved > n / 2);
        free(idx);
        free(seen);
    }
    long perms[24] = {0};
    int nshuf = quick ? 24000 : 72000;
    for (int i = 0; i < nshuf; i++) {
        uint32_t p4[4] = {0, 1, 2, 3};
        ef_rng_shuffle_u32(&r, p4, 4);
        // Lehmer code of the permutation -> 0..23
        int code = 0;
        for (int j = 0; j < 4; j++) {
            int smaller = 0;
            for (int k = j + 1; k < 4; k++) smaller += p4[k] < p4[j];
            code = code * (4 - j) + smaller;
        }
        perms[code]++;
    }
    double xs = chi2(perms, 24, nshuf / 24.0);
    CHECK_MSG(xs < 49.73, "shuffle of 4: chi-square %.2f (df 23, p = 0.001 at 49.73)", xs);
}

/* ---- thread pool ----------------------------------------------------------- */

typedef struct cover_ctx {
    atomic_int *hits;
    int64_t n;
    int threads;
    atomic_int bad; // a chunk that is not the thread's ef_split_range share
} cover_ctx;

static void cover_fn(void *c, int64_t b, int64_t e, int thread) {
    cover_ctx *x = c;
    int64_t eb, ee;
    ef_split_range(x->n, thread, x->threads, &eb, &ee);
    if (thread < 0 || thread >= x->threads || b != eb || e != ee || b >= e)
        atomic_fetch_add(&x->bad, 1);
    for (int64_t i = b; i < e; i++) atomic_fetch_add(&x->hits[i], 1);
}

static int covers_once(ef_pool *p, int64_t n) {
    cover_ctx c;
    c.hits = calloc((size_t)(n ? n : 1), sizeof(atomic_int));
    c.n = n;
    c.threads = ef_pool_threads(p);
    atomic_init(&c.bad, 0);
    ef_pool_for(p, n, cover_fn, &c);
    int ok = atomic_load(&c.bad) == 0;
    for (int64_t i = 0; i < n; i++) ok &= atomic_load(&c.hits[i]) == 1;
    free(c.hits);
    return ok;
}

typedef struct nest_ctx {
    ef_pool *p;
    atomic_int inner_calls, bad;
} nest_ctx;

static void nested_inner(void *c, int t, int nt) {
    nest_ctx *x = c;
    if (t != 0 || nt != 1) atomic_fetch_add(&x->bad, 1);
    atomic_fetch_add(&x->inner_calls, 1);
}

static void nested_outer(void *c, int t, int nt) {
    (void)t;
    (void)nt;
    nest_ctx *x = c;
    // From inside a task, ef_pool_run and ef_pool_for run inline.
    ef_pool_run(x->p, nested_inner, x);
    if (!covers_once(NULL, 37)) atomic_fetch_add(&x->bad, 1);
    atomic_int hits[50];
    for (int i = 0; i < 50; i++) atomic_init(&hits[i], 0);
    cover_ctx cc = {hits, 50, 1, 0};
    ef_pool_for(x->p, 50, cover_fn, &cc); // inline: one chunk, thread 0 of 1
    int ok = atomic_load(&cc.bad) == 0;
    for (int i = 0; i < 50; i++) ok &= atomic_load(&hits[i]) == 1;
    if (!ok) atomic_fetch_add(&x->bad, 1);
}

typedef struct caller_arg {
    ef_pool *p;
    int iters;
    int ok;
} caller_arg;

static void *concurrent_caller(void *v) {
    caller_arg *a = v;
    a->ok = 1;
    for (int i = 0; i < a->iters; i++) a->ok &= covers_once(a->p, 1 + i % 97);
    return NULL;
}

static void test_split_range(void) {
    int ok = 1;
    for (int64_t n = 0; n <= 50; n++)
        for (int parts = 1; parts <= 9; parts++) {
            int64_t prev_end = 0, prev_len = INT64_MAX;
            for (int part = 0; part < parts; part++) {
                int64_t b, e;
                ef_split_range(n, part, parts, &b, &e);
                int64_t len = e - b;
                // contiguous, in order, balanced within one, longer chunks first
                ok &= b == prev_end && len >= 0 && len <= prev_len;
                ok &= len == n / parts || len == n / parts + 1;
                prev_end = e;
                prev_len = len;
            }
            ok &= prev_end == n;
        }
    CHECK(ok);
    int64_t b, e;
    const int64_t big = (int64_t)1 << 40;
    ef_split_range(big + 5, 3, 4, &b, &e);
    CHECK(e == big + 5 && e - b == big / 4 + 1); // base 2^38 + 1, one extra
    ef_split_range(big + 5, 0, 4, &b, &e);
    CHECK(b == 0 && e == big / 4 + 2);
}

static void test_pool(void) {
    CHECK(ef_pool_threads(NULL) == 1);
    ef_pool *p = (ef_pool *)&p;
    CHECK(ef_pool_new(&p, 1025) == EF_ERR_INVALID && p == NULL);
    CHECK_OK(ef_pool_new(&p, 0)); // one per online CPU
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    CHECK(ef_pool_threads(p) == (ncpu > 0 ? (int)ncpu : 1));
    ef_pool_free(p);
    ef_pool_free(NULL);

    // ef_pool_for: every index exactly once, chunks as ef_split_range says.
    static const int64_t ns[] = {0, 1, 2, 3, 7, 1000};
    for (int threads = 0; threads <= 4; threads++) {
        ef_pool *q = NULL;
        if (threads > 0) CHECK_OK(ef_pool_new(&q, threads));
        for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
            CHECK_MSG(covers_once(q, ns[i]), "ef_pool_for n=%lld threads=%d",
                      (long long)ns[i], threads);
        // ef_pool_run: each thread once, with the right count.
        run_ctx rc;
        atomic_init(&rc.calls, 0);
        atomic_init(&rc.mask, 0);
        atomic_init(&rc.bad, 0);
        rc.expect_nt = threads > 0 ? threads : 1;
        ef_pool_run(q, run_fn, &rc);
        CHECK(atomic_load(&rc.calls) == rc.expect_nt && atomic_load(&rc.bad) == 0);
        CHECK(atomic_load(&rc.mask) == (1 << rc.expect_nt) - 1);
        ef_pool_free(q);
    }

    // Nested runs from every thread of a pool run inline (no deadlock).
    ef_pool *q = NULL;
    CHECK_OK(ef_pool_new(&q, 3));
    nest_ctx nc;
    nc.p = q;
    atomic_init(&nc.inner_calls, 0);
    atomic_init(&nc.bad, 0);
    ef_pool_run(q, nested_outer, &nc);
    CHECK(atomic_load(&nc.inner_calls) == 3 && atomic_load(&nc.bad) == 0);
    // The caller's thread is back to normal afterwards: a run uses all threads.
    run_ctx rc;
    atomic_init(&rc.calls, 0);
    atomic_init(&rc.mask, 0);
    atomic_init(&rc.bad, 0);
    rc.expect_nt = 3;
    ef_pool_run(q, run_fn, &rc);
    CHECK(atomic_load(&rc.calls) == 3 && atomic_load(&rc.bad) == 0);

    // Many tiny runs in a row, some after the workers have gone to sleep
    // (they spin ~2 ms first): a lost wake-up would hang until the alarm.
    int runs = quick ? 3000 : 10000;
    atomic_init(&rc.calls, 0);
    double t0 = ef_now();
    for (int i = 0; i < runs; i++) {
        if (i % 200 == 0) usleep(4000);
        ef_pool_run(q, run_fn, &rc);
    }
    double dt = ef_now() - t0;
    CHECK(atomic_load(&rc.calls) == 3 * runs && atomic_load(&rc.bad) == 0);
    CHECK_MSG(dt < 20.0, "%d tiny runs took %.1f s", runs, dt);
    printf("    %d tiny runs on 3 threads: %.3f s\n", runs, dt);

    // Calls from two threads at once are serialized, each sees its own work.
    caller_arg ca[2] = {{q, quick ? 200 : 1000, 0}, {q, quick ? 200 : 1000, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) CHECK(pthread_create(&th[i], NULL, concurrent_caller, &ca[i]) == 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    CHECK(ca[0].ok && ca[1].ok);
    ef_pool_free(q);

    // More threads than cores.
    int many = (int)(ncpu > 0 ? ncpu : 1) * 8;
    CHECK_OK(ef_pool_new(&q, many));
    int ok = 1;
    for (int i = 0; i < (quick ? 20 : 100); i++) ok &= covers_once(q, i * 13);
    CHECK_MSG(ok, "pool of %d threads", many);
    ef_pool_free(q);
}

int main(void) {
    quick = getenv("EDGEFL_TEST_QUICK") != NULL;
    alarm(quick ? 300 : 120); // watchdog: a deadlock fails instead of hanging
    ef_set_allocator(&counting);
    long live_start = atomic_load(&live_blocks);

    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"status", test_status},         {"log_and_cpu", test_log_and_cpu},
        {"alloc_basics", test_alloc_basics}, {"oom", test_oom},
        {"arena", test_arena},           {"rng", test_rng},
        {"split_range", test_split_range}, {"pool", test_pool},
    };
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
        int before = tu_failures;
        double t0 = ef_now();
        tests[i].fn();
        printf("  %-14s %s (%.2f s)\n", tests[i].name, tu_failures == before ? "ok" : "FAILED",
               ef_now() - t0);
    }
    CHECK_MSG(atomic_load(&live_blocks) == live_start, "%ld blocks still live at exit",
              atomic_load(&live_blocks) - live_start);
    ef_set_allocator(NULL);
    return tu_finish("core/test_core");
}
