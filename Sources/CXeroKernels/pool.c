// A fork–join pool for the engine's parallel loops. Dispatch's concurrentPerform costs tens of
// microseconds per call; decoding one token makes ~150 parallel calls, so helpers here spin for a
// while between calls (ggml does the same) and sleep on a condition variable only when idle.
#include "xero_kernels.h"
#include <immintrin.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#define XK_MAX_THREADS 256
// How long an idle helper spins before sleeping: long enough to span the gaps between one
// token's matrix products, short enough that an idle worker process uses no CPU.
#define XK_SPIN_NS 2000000

static struct {
    pthread_once_t once;
    pthread_mutex_t run;      // one job at a time; a second caller runs its job inline
    pthread_mutex_t sleep;
    pthread_cond_t wake;
    int helpers;
    // Odd while the caller writes a job, even once it is published (a seqlock): a helper joins a
    // job only by counting itself in `active` and then seeing the generation unchanged, and the
    // caller writes the next job only when `active` is 0, so no helper ever reads a half-written
    // job and none is left behind in an old one.
    atomic_uint generation;
    atomic_int active;
    atomic_int sleepers;
    xk_task_fn fn;
    void *ctx;
    int tasks;
    atomic_int next;          // the next task to hand out
    atomic_int done;          // tasks finished
} pool = { .once = PTHREAD_ONCE_INIT, .run = PTHREAD_MUTEX_INITIALIZER,
           .sleep = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER };

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

// Tasks are handed out one at a time, so a thread that starts late or runs slower takes fewer;
// the caller does not wait for helpers that never got a task, only for the tasks. (Yielding the
// core in these waits was tried: beside two CPU hogs it cost decode 40 %.)
static void run_share(void) {
    for (int i; (i = atomic_fetch_add(&pool.next, 1)) < pool.tasks;) {
        pool.fn(pool.ctx, i);
        atomic_fetch_add(&pool.done, 1);
    }
}

static void *helper_main(void *arg) {
    (void)arg;
    unsigned seen = 0;
    for (;;) {
        uint64_t since = 0;
        unsigned g;
        for (unsigned spins = 0; ((g = atomic_load(&pool.generation)) & 1) || g == seen; spins++) {
            _mm_pause();
            if ((spins & 255) != 0) continue;
            const uint64_t t = now_ns();
            if (since == 0) since = t;
            if (t - since < XK_SPIN_NS) continue;
            pthread_mutex_lock(&pool.sleep);
            atomic_fetch_add(&pool.sleepers, 1);
            while (atomic_load(&pool.generation) == seen) pthread_cond_wait(&pool.wake, &pool.sleep);
            atomic_fetch_sub(&pool.sleepers, 1);
            pthread_mutex_unlock(&pool.sleep);
            since = 0;
        }
        atomic_fetch_add(&pool.active, 1);
        if (atomic_load(&pool.generation) == g) {
            seen = g;
            run_share();
        }
        atomic_fetch_sub(&pool.active, 1);
    }
    return 0;
}

static void start_pool(void) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1) cores = 1;
    if (cores > XK_MAX_THREADS) cores = XK_MAX_THREADS;
    for (int k = 1; k < cores; k++) {
        pthread_t t;
        if (pthread_create(&t, 0, helper_main, 0) != 0) break;
        pthread_detach(t);
        pool.helpers = k;
    }
}

int xk_threads(void) {
    pthread_once(&pool.once, start_pool);
    return pool.helpers + 1;
}

void xk_parallel(int tasks, xk_task_fn fn, void *ctx) {
    pthread_once(&pool.once, start_pool);
    if (tasks <= 1 || pool.helpers == 0 || pthread_mutex_trylock(&pool.run) != 0) {
        // Nothing to share, no helpers, or the pool is busy (a nested or concurrent call).
        for (int i = 0; i < tasks; i++) fn(ctx, i);
        return;
    }
    atomic_fetch_add(&pool.generation, 1);  // odd: writing
    while (atomic_load(&pool.active) != 0) _mm_pause();
    pool.fn = fn;
    pool.ctx = ctx;
    pool.tasks = tasks;
    atomic_store(&pool.next, 0);
    atomic_store(&pool.done, 0);
    atomic_fetch_add(&pool.generation, 1);  // even: published
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.sleep);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.sleep);
    }
    run_share();
    while (atomic_load(&pool.done) != tasks) _mm_pause();
    pthread_mutex_unlock(&pool.run);
}
