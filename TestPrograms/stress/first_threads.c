// Allocations that race the start of a process's first threads: while a process has one thread,
// the interposer advances the ring's tail without a lock (swl_ring_header.single_producer), and
// swiftleak's tracer must end that before a second thread runs. Here the main thread allocates and
// frees without a pause while it starts the threads, each thread allocates from its first line on
// and starts a thread of its own (a second generation, started by a thread that is not main), and
// every thread leaks one block. A tail advanced by two threads at once without the lock loses
// events, so the recorded counts would fall short of the program's own.
//
//   first_threads THREADS ROUNDS
//
// Prints its own counts, as reuse.c does:
//   calls A allocations F frees
//   leaked B bytes in N blocks
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))
enum { MAX_THREADS = 32, LEAKED = 40 };

typedef struct {
    long allocations, frees;
} counts;

static long rounds;
static void *volatile sink;
static _Atomic long total_allocations, total_frees, leaked_blocks;

NOINLINE static void churn(counts *c, long pairs) {
    for (long i = 0; i < pairs; i++) {
        unsigned char *block = malloc(16 + (size_t)(i % 200));
        if (block == NULL) abort();
        block[0] = (unsigned char)i;
        sink = block;
        c->allocations++;
        free(block);
        c->frees++;
    }
}

NOINLINE static void leak(counts *c) {
    unsigned char *block = malloc(LEAKED);
    if (block == NULL) abort();
    memset(block, 0x5a, LEAKED);
    sink = block;
    sink = NULL;
    c->allocations++;
    leaked_blocks++;
}

static void publish(const counts *c) {
    total_allocations += c->allocations;
    total_frees += c->frees;
}

static void *grandchild(void *unused) {
    (void)unused;
    counts c = {0, 0};
    churn(&c, rounds);
    leak(&c);
    publish(&c);
    return NULL;
}

static void *child(void *unused) {
    (void)unused;
    counts c = {0, 0};
    churn(&c, 1);
    pthread_t next;
    if (pthread_create(&next, NULL, grandchild, NULL) != 0) abort();
    churn(&c, rounds);
    pthread_join(next, NULL);
    leak(&c);
    publish(&c);
    return NULL;
}

int main(int argc, char **argv) {
    int threads;
    if (argc < 3 || (threads = atoi(argv[1])) < 1 || threads > MAX_THREADS || (rounds = atol(argv[2])) < 1) {
        fprintf(stderr, "usage: first_threads THREADS(1-32) ROUNDS\n");
        return 2;
    }
    counts c = {0, 0};
    pthread_t ids[MAX_THREADS];
    churn(&c, rounds);
    for (int t = 0; t < threads; t++) {
        if (pthread_create(&ids[t], NULL, child, NULL) != 0) abort();
        churn(&c, rounds / threads);
    }
    churn(&c, rounds);
    for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    leak(&c);
    publish(&c);
    printf("calls %ld allocations %ld frees\n", (long)total_allocations, (long)total_frees);
    printf("leaked %ld bytes in %ld blocks\n", (long)leaked_blocks * LEAKED, (long)leaked_blocks);
    return 0;
}
