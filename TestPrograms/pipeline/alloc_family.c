// Calls every C allocation function the interposer hooks, leaks a known set of blocks, frees the
// rest, and prints (with write(2), so stdio allocates nothing) what it leaked and how many
// allocation calls it made, for the end-to-end tests to compare with swiftleak's report.
//
// Leaked: 12 blocks, 4,934 bytes (pvalloc counts a whole page, as in Valgrind).
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *volatile sink[64];
static int sunk;
static unsigned long allocations;

static void *leak(void *p) {
    sink[sunk++] = p;
    return p;
}

int main(void) {
    leak(malloc(10)); allocations++;
    leak(calloc(3, 7)); allocations++;

    // A realloc chain: only the last block survives.
    char *chain = malloc(5); allocations++;
    chain = realloc(chain, 50); allocations++;
    chain = realloc(chain, 500); allocations++;
    leak(chain);

    // realloc(p, 0) frees p. (A volatile, as below, or clang drops the pair.)
    char *volatile gone = malloc(20); allocations++;
    gone = realloc(gone, 0);
    if (gone != NULL) free(gone);

    leak(realloc(NULL, 33)); allocations++;
    leak(reallocarray(NULL, 4, 8)); allocations++;

    void *aligned = NULL;
    if (posix_memalign(&aligned, 64, 100) == 0) { leak(aligned); allocations++; }
    leak(aligned_alloc(32, 64)); allocations++;
    leak(memalign(128, 30)); allocations++;
    leak(valloc(40)); allocations++;
    leak(pvalloc(50)); allocations++;
    leak(malloc(0)); allocations++;

    // A failed realloc leaves the block where it was.
    char *kept = malloc(8); allocations++;
    volatile size_t huge = SIZE_MAX / 2;
    if (realloc(kept, huge) == NULL) leak(kept);
    // Through a volatile: clang (at -O1 and up) drops an allocation whose result is only compared
    // and takes it as successful, and the program would leave with 99.
    void *volatile failed = malloc(huge);
    if (failed != NULL) return 99;
    free(NULL);

    // Freed with every kind of pair. Through volatiles: clang drops a malloc or calloc freed
    // unused (at -O1 and up only 114 of the 315 calls were made).
    for (int i = 0; i < 100; i++) {
        void *volatile p = malloc(16 + i); allocations++;
        void *volatile q = calloc(1, 8); allocations++;
        void *r = NULL;
        posix_memalign(&r, 32, 24); allocations++;
        free(p);
        free(q);
        free(r);
    }

    // Forget every pointer: the blocks are lost, not merely unfreed.
    memset((void *)sink, 0, sizeof sink);

    char line[128];
    int n = snprintf(line, sizeof line, "leaked 12 blocks 4934 bytes, %lu allocation calls\n", allocations);
    write(1, line, (size_t)n);
    return 0;
}
