/*
 * Thread pool: workers spin briefly on a generation counter (kernels are
 * launched thousands of times a second, and a condition-variable wake-up per
 * launch would cost more than small kernels), then sleep on a condition
 * variable when idle.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#include "core_internal.h"
#include "edgefl/pool.h"

struct ef_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;     /* guards sleeping and stop */
    pthread_cond_t cv;
    pthread_mutex_t run_mu; /* one ef_pool_run at a time */
    _Atomic uint64_t gen;
    _Atomic int pending;
    int stop;
    int spin;               /* 0 when there are more threads than CPUs */
    ef_pool_fn fn;
    void *ctx;
};

typedef struct worker_arg {
    ef_pool *p;
    int tid;
} worker_arg;

static _Thread_local int tls_in_pool = 0;

/* Seconds a worker spins waiting for work before it sleeps. */
#define SPIN_SECONDS 0.002

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void *worker_main(void *argp) {
    worker_arg *wa = argp;
    ef_pool *p = wa->p;
    int tid = wa->tid;
    ef_free(wa);
    tls_in_pool = 1;
    uint64_t seen = 0;
    for (;;) {
        uint64_t g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g == seen && p->spin) {
            double t0 = ef_now();
            for (unsigned i = 1;; i++) {
                cpu_relax();
                g = atomic_load_explicit(&p->gen, memory_order_acquire);
                if (g != seen) break;
                if ((i & 255) == 0) {
                    if (ef_now() - t0 > SPIN_SECONDS) break;
                    sched_yield(); /* let a preempted peer finish its share */
                }
            }
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen && !p->stop)
                pthread_cond_wait(&p->cv, &p->mu);
            int stop = p->stop;
            pthread_mutex_unlock(&p->mu);
            if (stop && g == seen) return NULL;
        }
        seen = g;
        if (p->fn == NULL) return NULL; /* stop signal sent as an empty job */
        p->fn(p->ctx, tid, p->n);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
}

ef_status ef_pool_new(ef_pool **out, int n_threads) {
    *out = NULL;
    if (n_threads < 0 || n_threads > 1024)
        return ef__fail(EF_ERR_INVALID, "thread count %d out of range 0..1024", n_threads);
    if (n_threads == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)(c > 1024 ? 1024 : c) : 1;
    }
    ef_pool *p = ef_calloc(1, sizeof *p);
    if (!p) return EF_ERR_NOMEM;
    p->n = n_threads;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    /* Spinning only pays when every thread has a CPU of its own; otherwise a
     * spinning thread steals the time slice of the one it waits for. */
    p->spin = cpus <= 0 || n_threads <= cpus;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_mutex_init(&p->run_mu, NULL);
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    if (n_threads > 1) {
        p->threads = ef_calloc((size_t)n_threads - 1, sizeof(pthread_t));
        if (!p->threads) goto fail;
    }
    /* While the workers start, p->n counts the threads running so far (at
     * first only the caller), so that a failure before the first
     * pthread_create does not make ef_pool_free join handles never created. */
    p->n = 1;
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = ef_malloc(sizeof *wa);
        if (!wa) goto fail_threads;
        wa->p = p;
        wa->tid = i;
        if (pthread_create(&p->threads[i - 1], NULL, worker_main, wa) != 0) {
            ef_free(wa);
            ef__fail(EF_ERR_NOMEM, "cannot start thread %d of %d", i, n_threads);
            goto fail_threads;
        }
        p->n = i + 1; /* threads actually started, for cleanup */
    }
    p->n = n_threads;
    *out = p;
    return EF_OK;

fail_threads:
    /* p->n counts the started threads; ef_pool_free joins exactly those. */
    ef_pool_free(p);
    return EF_ERR_NOMEM;
fail:
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->run_mu);
    ef_free(p);
    return EF_ERR_NOMEM;
}

void ef_pool_free(ef_pool *p) {
    if (!p) return;
    int started = p->n;
    if (p->threads) {
        pthread_mutex_lock(&p->mu);
        p->stop = 1;
        p->fn = NULL;
        atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        for (int i = 1; i < started; i++) pthread_join(p->threads[i - 1], NULL);
        ef_free(p->threads);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->run_mu);
    ef_free(p);
}

int ef_pool_threads(const ef_pool *p) { return p ? p->n : 1; }

void ef_pool_run(ef_pool *p, ef_pool_fn fn, void *ctx) {
    if (p == NULL || p->n <= 1 || tls_in_pool) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&p->run_mu);
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);

    tls_in_pool = 1;
    fn(ctx, 0, p->n);
    tls_in_pool = 0;

    for (unsigned i = 1; atomic_load_explicit(&p->pending, memory_order_acquire) > 0; i++) {
        cpu_relax();
        if (!p->spin || (i & 1023) == 0) sched_yield();
    }
    pthread_mutex_unlock(&p->run_mu);
}

void ef_split_range(int64_t n, int part, int parts, int64_t *begin, int64_t *end) {
    if (parts < 1 || part < 0 || part >= parts || n <= 0) {
        *begin = *end = 0;
        return;
    }
    int64_t base = n / parts, extra = n % parts;
    int64_t b = part * base + (part < extra ? part : extra);
    *begin = b;
    *end = b + base + (part < extra ? 1 : 0);
}

typedef struct for_ctx {
    int64_t n;
    ef_range_fn fn;
    void *ctx;
} for_ctx;

static void for_trampoline(void *c, int t, int nt) {
    for_ctx *fc = c;
    int64_t b, e;
    ef_split_range(fc->n, t, nt, &b, &e);
    if (b < e) fc->fn(fc->ctx, b, e, t);
}

void ef_pool_for(ef_pool *p, int64_t n, ef_range_fn fn, void *ctx) {
    if (n <= 0) return;
    for_ctx fc = {n, fn, ctx};
    ef_pool_run(p, for_trampoline, &fc);
}
