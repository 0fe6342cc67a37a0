/* live_blocks: keeps N small blocks live at exit, for the recorder's memory per live block.
 *
 * Usage: live_blocks [N]   (default 2000000; 0 gives the "tiny program" baseline)
 *
 * Allocates N blocks of 16..64 bytes from 4 different call sites (so there are
 * a few distinct stacks, not N), keeps them in a table that stays reachable,
 * and exits without freeing them: every block is "still reachable" at exit.
 * The tracking tool has to hold one live-block entry for each; the bench
 * compares its peak RSS here with its peak RSS on N = 0.
 */
#include <stdio.h>
#include <stdlib.h>

#define NOINLINE __attribute__((noinline))

static void **volatile table;

NOINLINE static void *new_block(size_t n) {
    char *p = malloc(n);
    if (p == NULL) { perror("malloc"); exit(2); }
    p[0] = 1;
    return p;
}
NOINLINE static void *site_a(long i) { return new_block(16 + (size_t)(i % 8)); }
NOINLINE static void *site_b(long i) { return new_block(24 + (size_t)(i % 16)); }
NOINLINE static void *site_c(long i) { return new_block(40 + (size_t)(i % 8)); }
NOINLINE static void *site_d(long i) { return new_block(48 + (size_t)(i % 16)); }

NOINLINE static void populate(void **t, long n) {
    for (long i = 0; i < n; i++) {
        switch (i & 3) {
        case 0: t[i] = site_a(i); break;
        case 1: t[i] = site_b(i); break;
        case 2: t[i] = site_c(i); break;
        default: t[i] = site_d(i); break;
        }
    }
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 2000000;
    table = malloc(sizeof(void *) * (size_t)(n > 0 ? n : 1));
    if (table == NULL) { perror("malloc"); return 2; }
    populate(table, n);
    printf("live_blocks: %ld blocks live at exit\n", n);
    return 0;
}
