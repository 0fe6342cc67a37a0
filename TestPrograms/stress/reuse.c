// Cross-thread frees with immediate reuse: the per-address order swiftleak's recorder must keep
// across threads (docs/architecture.md, "Order is truth").
//
//   reuse THREADS ROUNDS
//
// THREADS threads in a ring pass one 48-byte message per round to the next thread through a
// one-slot mailbox. The receiver frees it and at once allocates its own next message, which glibc
// hands back from the chunk just freed (its per-thread cache is LIFO): thread A allocates p,
// thread B frees p, thread B allocates p, all within a few hundred nanoseconds, on every round. A
// recorder that applied B's events before A's would see B free an unknown block and allocate over a
// live one. Every fourth message is first grown by realloc (the old block goes back to the
// allocator inside the real call, while the other threads run), and every 997th round a thread
// leaks a message-sized block. The program prints its own counts:
//   calls A allocations F frees     (malloc + realloc calls, free + realloc calls)
//   leaked B bytes in N blocks
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))
enum { MESSAGE = 48, GROWN = 200, MAX_THREADS = 64 };

typedef struct {
    _Alignas(64) unsigned char *_Atomic slot;
} mailbox;

static mailbox boxes[MAX_THREADS];
static int threads;
static long rounds;
static void *volatile sink;

typedef struct {
    long allocations, frees, leaked_blocks, leaked_bytes;
} counts;
static counts per_thread[MAX_THREADS];

NOINLINE static unsigned char *message(counts *c, long round) {
    unsigned char *m = malloc(MESSAGE);
    if (m == NULL) abort();
    c->allocations++;
    if (round % 4 == 0) {
        unsigned char *grown = realloc(m, GROWN);
        if (grown == NULL) abort();
        c->allocations++;
        c->frees++; // counted as a free and an allocation, as Valgrind counts it
        m = grown;
    }
    m[0] = 0xab;
    return m;
}

NOINLINE static void leak(counts *c) {
    unsigned char *block = malloc(MESSAGE);
    if (block == NULL) abort();
    memset(block, 0x5a, MESSAGE);
    c->allocations++;
    sink = block; // escapes, so the compiler keeps the allocation
    sink = NULL;
    c->leaked_blocks++;
    c->leaked_bytes += MESSAGE;
}

static void *worker(void *argument) {
    int self = (int)(intptr_t)argument;
    mailbox *out = &boxes[(self + 1) % threads], *in = &boxes[self];
    counts *c = &per_thread[self];
    for (long round = 0; round < rounds; round++) {
        unsigned char *m = message(c, round);
        unsigned char *empty = NULL;
        while (!__atomic_compare_exchange_n(&out->slot, &empty, m, false, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
            empty = NULL;
            sched_yield();
        }
        unsigned char *received;
        while ((received = __atomic_exchange_n(&in->slot, NULL, __ATOMIC_ACQUIRE)) == NULL) sched_yield();
        if (received[0] != 0xab) abort();
        free(received);
        c->frees++;
        if (round % 997 == 996) leak(c);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3 || (threads = atoi(argv[1])) < 2 || threads > MAX_THREADS || (rounds = atol(argv[2])) < 1) {
        fprintf(stderr, "usage: reuse THREADS(2-64) ROUNDS\n");
        return 2;
    }
    pthread_t ids[MAX_THREADS];
    for (int t = 0; t < threads; t++) {
        if (pthread_create(&ids[t], NULL, worker, (void *)(intptr_t)t) != 0) abort();
    }
    for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    counts total = {0, 0, 0, 0};
    for (int t = 0; t < threads; t++) {
        total.allocations += per_thread[t].allocations;
        total.frees += per_thread[t].frees;
        total.leaked_blocks += per_thread[t].leaked_blocks;
        total.leaked_bytes += per_thread[t].leaked_bytes;
    }
    printf("calls %ld allocations %ld frees\n", total.allocations, total.frees);
    printf("leaked %ld bytes in %ld blocks\n", total.leaked_bytes, total.leaked_blocks);
    return 0;
}
