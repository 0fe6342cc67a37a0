// Stress programs for swiftleak: many threads, many allocations, an exit in the middle of them.
// Each mode prints what it leaked on purpose (blocks whose last pointer it dropped) in one line,
// `leaked B bytes in N blocks`, so a test can compare swiftleak's "definitely lost" with the
// program's own count.
//
//   stress ring THREADS MESSAGES   THREADS threads in a ring, each allocating MESSAGES blocks of
//                                  16-127 bytes for the next thread to free (every free is
//                                  cross-thread); thread t also leaks t + 1 blocks of 32 bytes
//   stress churn THREADS           THREADS threads created and joined, 8 alive at a time; each
//                                  allocates and frees 20 blocks, every tenth leaks one of 24 bytes
//   stress many ALLOCATIONS        one thread: ALLOCATIONS malloc/free pairs of 16-527 bytes
//                                  through a 1,024-slot table; every millionth block is leaked
//   stress exit THREADS            THREADS threads allocate and free in a loop, their blocks all
//                                  reachable from a global table, while main leaks 5 blocks and
//                                  calls exit(7) in the middle of their work
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

static void *volatile sink;
static uint64_t leaked_bytes, leaked_blocks;
static pthread_mutex_t leak_lock = PTHREAD_MUTEX_INITIALIZER;

/// Allocates a block and drops the only pointer to it.
NOINLINE static void leak(size_t size) {
    // The block in a local: threads leak at once, and through the shared sink one thread's memset
    // would write its size over another's smaller block.
    char *block = malloc(size);
    if (block == NULL) abort();
    memset(block, 0x5a, size); // no stale pointers in it
    // Escapes, so the compiler keeps the allocation. Atomic stores: threads write the sink at
    // once, and a plain store from two threads is a data race (ThreadSanitizer says so every run).
    __atomic_store_n(&sink, block, __ATOMIC_RELAXED);
    __atomic_store_n(&sink, NULL, __ATOMIC_RELAXED);
    pthread_mutex_lock(&leak_lock);
    leaked_bytes += size;
    leaked_blocks++;
    pthread_mutex_unlock(&leak_lock);
}

static void report_leaks(void) {
    printf("leaked %llu bytes in %llu blocks\n", (unsigned long long)leaked_bytes, (unsigned long long)leaked_blocks);
    fflush(stdout);
}

static uint64_t next_random(uint64_t *state) {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

// MARK: - ring: cross-thread frees

#define QUEUE 256
typedef struct {
    pthread_mutex_t lock;
    void *items[QUEUE];
    unsigned head, count;
} queue;

static queue *queues;
static int ring_threads;
static long ring_messages;

static int push(queue *q, void *item) {
    pthread_mutex_lock(&q->lock);
    int ok = q->count < QUEUE;
    if (ok) q->items[(q->head + q->count++) % QUEUE] = item;
    pthread_mutex_unlock(&q->lock);
    return ok;
}

static long drain(queue *q) {
    void *taken[QUEUE];
    unsigned n;
    pthread_mutex_lock(&q->lock);
    n = q->count;
    for (unsigned i = 0; i < n; i++) taken[i] = q->items[(q->head + i) % QUEUE];
    q->head = (q->head + n) % QUEUE;
    q->count = 0;
    pthread_mutex_unlock(&q->lock);
    for (unsigned i = 0; i < n; i++) {
        if (((unsigned char *)taken[i])[0] != 0xab) abort();
        free(taken[i]);
    }
    return n;
}

static void *ring_thread(void *argument) {
    int self = (int)(intptr_t)argument;
    queue *mine = &queues[self], *next = &queues[(self + 1) % ring_threads];
    uint64_t state = 0x9e3779b97f4a7c15ull + (uint64_t)self;
    long sent = 0, received = 0;
    for (int i = 0; i <= self; i++) leak(32);
    while (sent < ring_messages || received < ring_messages) {
        if (sent < ring_messages) {
            size_t size = 16 + next_random(&state) % 112;
            unsigned char *message = malloc(size);
            if (message == NULL) abort();
            message[0] = 0xab;
            message[size - 1] = (unsigned char)size;
            while (!push(next, message)) {
                received += drain(mine);
                sched_yield();
            }
            sent++;
        }
        received += drain(mine);
    }
    return NULL;
}

static int run_ring(int threads, long messages) {
    ring_threads = threads;
    ring_messages = messages;
    queues = calloc((size_t)threads, sizeof(queue));
    pthread_t *ids = calloc((size_t)threads, sizeof(pthread_t));
    for (int t = 0; t < threads; t++) pthread_mutex_init(&queues[t].lock, NULL);
    for (int t = 0; t < threads; t++) pthread_create(&ids[t], NULL, ring_thread, (void *)(intptr_t)t);
    for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    free(ids);
    free(queues);
    report_leaks();
    return 0;
}

// MARK: - churn: threads created and joined

static void *churn_thread(void *argument) {
    long index = (long)(intptr_t)argument;
    void *blocks[20];
    for (int i = 0; i < 20; i++) {
        blocks[i] = malloc(16 + (size_t)i * 8);
        if (blocks[i] == NULL) abort();
    }
    for (int i = 0; i < 20; i++) free(blocks[i]);
    if (index % 10 == 0) leak(24);
    return NULL;
}

static int run_churn(long threads) {
    enum { ALIVE = 8 };
    pthread_t ids[ALIVE];
    for (long started = 0; started < threads; started += ALIVE) {
        int n = threads - started < ALIVE ? (int)(threads - started) : ALIVE;
        for (int i = 0; i < n; i++) {
            if (pthread_create(&ids[i], NULL, churn_thread, (void *)(intptr_t)(started + i)) != 0) abort();
        }
        for (int i = 0; i < n; i++) pthread_join(ids[i], NULL);
    }
    report_leaks();
    return 0;
}

// MARK: - many: a long run of allocations

static int run_many(long allocations) {
    enum { SLOTS = 1024 };
    static void *slots[SLOTS];
    uint64_t state = 0x2545f4914f6cdd1dull;
    for (long i = 1; i <= allocations; i++) {
        uint64_t r = next_random(&state);
        unsigned slot = (unsigned)(r >> 32) % SLOTS;
        free(slots[slot]);
        if (i % 1000000 == 0) {
            slots[slot] = NULL;
            leak(40);
            continue;
        }
        size_t size = 16 + (size_t)(r % 512);
        unsigned char *p = malloc(size);
        if (p == NULL) abort();
        p[0] = (unsigned char)r;
        slots[slot] = p;
    }
    for (unsigned i = 0; i < SLOTS; i++) free(slots[i]);
    report_leaks();
    return 0;
}

// MARK: - exit: the process leaves while its threads allocate

enum { EXIT_SLOTS = 64 };
static void *volatile exit_table[16][EXIT_SLOTS];
static volatile int running;

static void *exit_thread(void *argument) {
    int self = (int)(intptr_t)argument;
    uint64_t state = 0x51afd7ed558ccdull + (uint64_t)self;
    __atomic_fetch_add(&running, 1, __ATOMIC_SEQ_CST);
    for (;;) {
        uint64_t r = next_random(&state);
        unsigned slot = (unsigned)(r >> 40) % EXIT_SLOTS;
        void *old = exit_table[self][slot];
        exit_table[self][slot] = malloc(16 + (size_t)(r % 200));
        free(old);
    }
    return NULL;
}

static int run_exit(int threads) {
    if (threads > 16) threads = 16;
    pthread_t id;
    for (int t = 0; t < threads; t++) pthread_create(&id, NULL, exit_thread, (void *)(intptr_t)t);
    while (__atomic_load_n(&running, __ATOMIC_SEQ_CST) < threads) sched_yield();
    for (int i = 0; i < 5; i++) leak(48);
    // Let the threads get well into their loops: any moment will do, this is no measurement.
    for (int i = 0; i < 20; i++) sched_yield();
    usleep(20000);
    report_leaks();
    exit(7);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 4 && strcmp(argv[1], "ring") == 0) return run_ring(atoi(argv[2]), atol(argv[3]));
    if (argc >= 3 && strcmp(argv[1], "churn") == 0) return run_churn(atol(argv[2]));
    if (argc >= 3 && strcmp(argv[1], "many") == 0) return run_many(atol(argv[2]));
    if (argc >= 3 && strcmp(argv[1], "exit") == 0) return run_exit(atoi(argv[2]));
    fprintf(stderr, "usage: stress ring THREADS MESSAGES | churn THREADS | many ALLOCATIONS | exit THREADS\n");
    return 2;
}
