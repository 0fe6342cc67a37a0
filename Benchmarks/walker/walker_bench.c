/* walker_bench: the interposer's stack walker against libunwind's unw_backtrace, called in a loop
 * from stacks 6, 16 and 26 frames deep (both return the same frames; see UnwinderTests).
 *
 *   cc -O2 -D_GNU_SOURCE -ICShims/SwiftLeakPreload -o /tmp/walker_bench \
 *      Benchmarks/walker/walker_bench.c CShims/SwiftLeakPreload/unwind.c -lunwind
 *   /tmp/walker_bench
 */
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#define UNW_LOCAL_ONLY
#include <libunwind.h>

#include "unwind.h"

#define CALLS 2000000L
#define MAX_FRAMES 134

static volatile int sink;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

__attribute__((noinline)) static void measure(int use_libunwind) {
    uint64_t frames[MAX_FRAMES];
    long total = 0;
    double start = now();
    for (long i = 0; i < CALLS; i++) {
        total += use_libunwind ? unw_backtrace((void **)frames, MAX_FRAMES) : swl_unwind(frames, MAX_FRAMES);
    }
    double seconds = now() - start;
    printf("%-9s %3ld frames  %6.1f ns a stack\n", use_libunwind ? "libunwind" : "walker", total / CALLS,
           seconds / (double)CALLS * 1e9);
}

__attribute__((noinline)) static void nest(int depth, int use_libunwind) {
    if (depth == 0) measure(use_libunwind);
    else nest(depth - 1, use_libunwind);
    sink++; /* keeps the call from becoming a jump */
}

int main(void) {
    if (!swl_unwind_available()) {
        fprintf(stderr, "walker_bench: the walker needs x86_64 and glibc 2.35 or later\n");
        return 1;
    }
    for (int depth = 0; depth <= 20; depth += 10) {
        nest(depth, 0);
        nest(depth, 1);
    }
    return 0;
}
