// THREADS threads each make ITERATIONS allocations and hand every block to the next thread, which
// frees it (cross-thread frees), then each leaks LEAKS blocks of 24 bytes.
// Usage: threads THREADS ITERATIONS LEAKS. Prints what it did for the tests.
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QUEUE 1024

typedef struct {
    _Atomic uint64_t head, tail; // single producer (previous thread), single consumer (this thread)
    void *slots[QUEUE];
    atomic_int producer_done;
} handoff;

static int thread_count;
static long iterations, leaks;
static handoff *queues;          // queues[k]: blocks from thread k-1 to thread k
static void *volatile leaked_sink;

static int pop_and_free(handoff *in) {
    uint64_t head = atomic_load_explicit(&in->head, memory_order_relaxed);
    if (head == atomic_load_explicit(&in->tail, memory_order_acquire)) return 0;
    free(in->slots[head % QUEUE]);
    atomic_store_explicit(&in->head, head + 1, memory_order_release);
    return 1;
}

static void *site_leak(void) { return malloc(24); }

static void *worker(void *arg) {
    long k = (long)(intptr_t)arg;
    handoff *out = &queues[(k + 1) % thread_count];
    handoff *in = &queues[k];
    for (long i = 0; i < iterations; i++) {
        void *p = malloc(16 + (size_t)(i & 63));
        for (;;) {
            uint64_t tail = atomic_load_explicit(&out->tail, memory_order_relaxed);
            if (tail - atomic_load_explicit(&out->head, memory_order_acquire) < QUEUE) {
                out->slots[tail % QUEUE] = p;
                atomic_store_explicit(&out->tail, tail + 1, memory_order_release);
                break;
            }
            // Make room downstream by draining upstream; yield when neither moves (more threads
            // than cores).
            if (!pop_and_free(in)) sched_yield();
        }
        pop_and_free(in);
    }
    atomic_store(&out->producer_done, 1);
    for (;;) {
        int done = atomic_load(&in->producer_done);
        if (pop_and_free(in)) continue;
        if (done) break;
        sched_yield();
    }
    // Atomic stores: every thread writes the sink at once (plain stores would race).
    for (long i = 0; i < leaks; i++) __atomic_store_n(&leaked_sink, site_leak(), __ATOMIC_RELAXED);
    __atomic_store_n(&leaked_sink, NULL, __ATOMIC_RELAXED);
    return NULL;
}

int main(int argc, char **argv) {
    thread_count = argc > 1 ? atoi(argv[1]) : 4;
    iterations = argc > 2 ? atol(argv[2]) : 100000;
    leaks = argc > 3 ? atol(argv[3]) : 10;
    queues = calloc((size_t)thread_count, sizeof *queues);
    pthread_t *threads = calloc((size_t)thread_count, sizeof *threads);
    for (long k = 0; k < thread_count; k++) pthread_create(&threads[k], NULL, worker, (void *)(intptr_t)k);
    for (long k = 0; k < thread_count; k++) pthread_join(threads[k], NULL);
    free(threads);
    free(queues);
    char line[160];
    int n = snprintf(line, sizeof line, "threads %d iterations %ld leaked %ld blocks %ld bytes\n", thread_count,
                     iterations, thread_count * leaks, thread_count * leaks * 24);
    write(1, line, (size_t)n);
    return 0;
}
