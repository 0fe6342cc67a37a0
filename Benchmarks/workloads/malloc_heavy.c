/* malloc_heavy: single-threaded, malloc/free-dominated workload.
 *
 * Usage: malloc_heavy [ITERATIONS]   (default 3000000)
 *
 * Each iteration allocates one block of a varied small size (16..520 bytes)
 * through a chain of helper functions (so captured stacks are 6-9 frames deep,
 * like real code), writes to it, and stores it in a slot of a 512-entry table,
 * freeing the block the slot held before. So there are ~512 live blocks at a
 * time and ITERATIONS malloc/free pairs in total. Some iterations also
 * realloc or calloc. Pointers go through a volatile table and a checksum so
 * the optimizer cannot delete the pairs. Everything is freed at exit.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 512
#define NOINLINE __attribute__((noinline))

static void *volatile slots[SLOTS];
static volatile uint64_t checksum;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static inline uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

NOINLINE static void *alloc_bytes(size_t n, int zeroed) {
    void *p = zeroed ? calloc(1, n) : malloc(n);
    if (p == NULL) { perror("malloc"); exit(2); }
    return p;
}

NOINLINE static void *alloc_node(size_t n, uint64_t tag) {
    unsigned char *p = alloc_bytes(n, (tag & 15) == 0);
    p[0] = (unsigned char)tag;
    p[n - 1] = (unsigned char)(tag >> 8);
    return p;
}

NOINLINE static void *grow_node(void *p, size_t n) {
    void *q = realloc(p, n);
    if (q == NULL) { perror("realloc"); exit(2); }
    ((unsigned char *)q)[n - 1] = 1;
    return q;
}

NOINLINE static void *build_record(uint64_t r) {
    size_t n = 16 + (size_t)(r % 505);
    void *p = alloc_node(n, r);
    if (((r >> 8) & 31) == 7) p = grow_node(p, n * 2); /* 1 in 32 records */
    return p;
}

NOINLINE static void *build_string(uint64_t r) {
    size_t n = 16 + (size_t)(r % 48);
    char *p = alloc_node(n, r);
    memset(p, 'a' + (int)(r % 26), n - 1);
    p[n - 1] = 0;
    return p;
}

NOINLINE static void release(unsigned idx) {
    void *old = slots[idx];
    if (old != NULL) {
        checksum += *(unsigned char *)old;
        free(old);
    }
}

NOINLINE static void handle_request(uint64_t r) {
    unsigned idx = (unsigned)(r >> 40) % SLOTS;
    release(idx);
    slots[idx] = (r & 1) ? build_string(r) : build_record(r);
}

NOINLINE static void process_batch(long count) {
    for (long i = 0; i < count; i++) handle_request(rng());
}

NOINLINE static void run_phase(long iterations) {
    const long batch = 1000;
    for (long done = 0; done < iterations; done += batch)
        process_batch(iterations - done < batch ? iterations - done : batch);
}

int main(int argc, char **argv) {
    long iterations = argc > 1 ? atol(argv[1]) : 3000000;
    run_phase(iterations);
    for (unsigned i = 0; i < SLOTS; i++) { release(i); slots[i] = NULL; }
    printf("malloc_heavy: %ld iterations, checksum %llu\n", iterations,
           (unsigned long long)checksum);
    return 0;
}
