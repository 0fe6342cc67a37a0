/* xthread: N threads in a ring, each freeing what its neighbour allocated.
 *
 * Usage: xthread [THREADS [PAIRS_PER_THREAD]]   (default 2 threads, 1000000 pairs)
 *
 * Thread i allocates PAIRS_PER_THREAD messages of MESSAGE bytes (through a few helper frames),
 * writes their first and last bytes, and hands them, BATCH at a time in a malloc'd batch block,
 * through a lock-free single-producer/single-consumer ring to thread (i+1) % THREADS. After each
 * batch it pops the batches thread (i-1) % THREADS sent it, reads the messages and frees them and
 * the batch block. With 2 threads they pass blocks to each other; every free is a cross-thread
 * free. There are PAIRS_PER_THREAD * (1 + 1/BATCH) malloc/free pairs per thread.
 *
 * Why one message size and batches of 6: glibc keeps up to 7 freed chunks per size class in a
 * per-thread cache. A thread that frees 6 of its neighbour's messages and then allocates 6 of its
 * own recycles them through that cache, so the native run measures allocation and not glibc's
 * arena lock. An earlier version (messages of 16-256 bytes, filled byte by byte, batches of 16)
 * overflowed the cache: natively it made 1.4 million sched_yield and 1.5 million futex calls per
 * run, and its time swung between 0.8 s and 4.7 s from run to run, useless as a denominator.
 * A full outgoing ring makes the producer drain its own incoming ring and yield, so it works
 * (slowly) when threads are serialized (valgrind) or there are fewer CPUs than threads.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define NOINLINE __attribute__((noinline))
#ifndef RING
#define RING 64 /* batches, power of two */
#endif
#ifndef BATCH
#define BATCH 6 /* messages per batch: below glibc's tcache depth of 7 */
#endif
#ifndef MESSAGE
#define MESSAGE 64 /* bytes per message */
#endif

struct ring {
    _Alignas(64) _Atomic size_t head; /* next slot the consumer reads */
    _Alignas(64) _Atomic size_t tail; /* next slot the producer writes */
    _Alignas(64) void *slot[RING];
};

struct worker {
    pthread_t thread;
    int index;
    long pairs;
    struct ring *in, *out;
    uint64_t rng;
    uint64_t checksum;
    long freed;
};

static _Atomic int producers_left;

static inline uint64_t next_rng(struct worker *w) {
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    return w->rng;
}

static int ring_push(struct ring *r, void *p) {
    size_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    size_t h = atomic_load_explicit(&r->head, memory_order_acquire);
    if (t - h == RING) return 0;
    r->slot[t & (RING - 1)] = p;
    atomic_store_explicit(&r->tail, t + 1, memory_order_release);
    return 1;
}

static void *ring_pop(struct ring *r) {
    size_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    size_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
    if (h == t) return NULL;
    void *p = r->slot[h & (RING - 1)];
    atomic_store_explicit(&r->head, h + 1, memory_order_release);
    return p;
}

NOINLINE static void *make_message(struct worker *w) {
    uint64_t r = next_rng(w);
    unsigned char *p = malloc(MESSAGE);
    if (p == NULL) { perror("malloc"); exit(2); }
    p[0] = (unsigned char)r;
    p[MESSAGE - 1] = (unsigned char)(r >> 8);
    return p;
}

NOINLINE static void *encode_message(struct worker *w) { return make_message(w); }

NOINLINE static void consume_message(struct worker *w, void *p) {
    const volatile unsigned char *b = p;
    w->checksum += b[0] + b[MESSAGE - 1];
    free(p);
    w->freed++;
}

struct batch { void *msg[BATCH]; };

NOINLINE static long drain_inbox(struct worker *w) {
    long n = 0;
    struct batch *b;
    while ((b = ring_pop(w->in)) != NULL) {
        for (int k = 0; k < BATCH; k++) consume_message(w, b->msg[k]);
        free(b);
        n++;
    }
    return n;
}

NOINLINE static void send_batch(struct worker *w) {
    struct batch *b = malloc(sizeof *b);
    if (b == NULL) { perror("malloc"); exit(2); }
    for (int k = 0; k < BATCH; k++) b->msg[k] = encode_message(w);
    while (!ring_push(w->out, b)) {
        if (drain_inbox(w) == 0) sched_yield();
    }
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    for (long i = 0; i < w->pairs; i += BATCH) {
        send_batch(w);
        drain_inbox(w);
    }
    atomic_fetch_sub(&producers_left, 1);
    for (;;) {
        int left = atomic_load(&producers_left);
        if (drain_inbox(w) == 0) {
            if (left == 0) { drain_inbox(w); break; }
            sched_yield();
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    long pairs = argc > 2 ? atol(argv[2]) : 1000000;
    if (threads < 1 || pairs < 0) {
        fprintf(stderr, "usage: xthread [THREADS [PAIRS_PER_THREAD]]\n");
        return 2;
    }
    pairs = (pairs + BATCH - 1) / BATCH * BATCH;
    struct ring *rings = aligned_alloc(64, sizeof(struct ring) * (size_t)threads);
    struct worker *workers = calloc((size_t)threads, sizeof(struct worker));
    if (rings == NULL || workers == NULL) { perror("malloc"); return 2; }
    for (int i = 0; i < threads; i++) {
        atomic_init(&rings[i].head, 0);
        atomic_init(&rings[i].tail, 0);
    }
    atomic_store(&producers_left, threads);
    for (int i = 0; i < threads; i++) {
        struct worker *w = &workers[i];
        w->index = i;
        w->pairs = pairs;
        w->in = &rings[i];
        w->out = &rings[(i + 1) % threads];
        w->rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            fprintf(stderr, "xthread: pthread_create failed\n");
            return 2;
        }
    }
    long freed = 0;
    uint64_t checksum = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(workers[i].thread, NULL);
        freed += workers[i].freed;
        checksum += workers[i].checksum;
    }
    printf("xthread: %d threads x %ld messages, %ld cross-thread frees, checksum %llu\n",
           threads, pairs, freed, (unsigned long long)checksum);
    free(workers);
    free(rings);
    return freed == (long)threads * pairs ? 0 : 1;
}
