/* walker_bench: the interposer's stack walker against libunwind's unw_backtrace, called in a loop
 * from stacks 6, 16 and 26 frames deep (both return the same frames; see UnwinderTests); then the
 * walk the hooks make (swl_unwind_at, which follows the thread's memo of its last walk) against the
 * same walk without the memo, from stacks of 11 frames that alternate between two inner callers
 * (as an allocation function's callers do); and the hooks' capture with the thread's known stacks
 * (swl_unwind_known, which checks a kept stack instead of walking; interning is not in any case),
 * also with one leaf that both callers reach (the two paths then share their first frame).
 *
 *   cc -O2 -D_GNU_SOURCE -ICShims/SwiftLeakPreload -o /tmp/walker_bench \
 *      Benchmarks/walker/walker_bench.c CShims/SwiftLeakPreload/unwind.c -lunwind
 *   /tmp/walker_bench
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#define UNW_LOCAL_ONLY
#include <libunwind.h>

#include "unwind.h"

#ifndef CALLS
#define CALLS 2000000L
#endif
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

/* The hooks' entry: the walk starts at the caller's frame, from its stack pointer and RBP. */
int swl_unwind_from(uint64_t *frames, int max, const uint64_t *sp, uint64_t rbp);
enum { NO_MEMO = 0, MEMO = 1, KNOWN = 2, NO_WALK = 3 /* the loop and the calls alone */ };
static int use_memo;
__asm__(".text\n"
        ".type hook_like_entry, @function\n"
        "hook_like_entry:\n"
        ".cfi_startproc\n"
        "    movq %rsp, %rdx\n"
        "    movq %rbp, %rcx\n"
        "    jmp walk_from_entry\n"
        ".cfi_endproc\n"
        ".size hook_like_entry, .-hook_like_entry\n");
int hook_like_entry(uint64_t *frames, int max);
__attribute__((used)) int walk_from_entry(uint64_t *frames, int max, const uint64_t *sp, uint64_t rbp) {
    if (use_memo == NO_WALK) return 0;
    if (use_memo == NO_MEMO) return swl_unwind_from(frames, max, sp, rbp);
    if (use_memo == MEMO) return swl_unwind_at(frames, max, sp, rbp);
    uint32_t value;
    if (swl_unwind_known(sp, rbp, 1, &value, NULL, NULL)) return (int)value;
    int count = swl_unwind_at(frames, max, sp, rbp);
    swl_unwind_remember(1, (uint32_t)count); /* the hooks keep the stack's id; the depth will do */
    return count;
}

static volatile uint64_t walked;
__attribute__((noinline)) static void leaf_one(uint64_t r) {
    uint64_t frames[24];
    walked += (uint64_t)hook_like_entry(frames, 24) + r;
}
__attribute__((noinline)) static void leaf_two(uint64_t r) {
    uint64_t frames[24];
    walked += (uint64_t)hook_like_entry(frames, 24) + r * 3;
}
/* One leaf reached from both callers: the allocation helper of most programs (and malloc_heavy's
 * alloc_bytes), where the two call paths share their first frame. */
__attribute__((noinline)) static void leaf_shared(uint64_t r) {
    uint64_t frames[24];
    walked += (uint64_t)hook_like_entry(frames, 24) + r * 5;
}
static int shared_leaf;
__attribute__((noinline)) static void caller_one(uint64_t r) { if (shared_leaf) leaf_shared(r); else leaf_one(r); sink++; }
__attribute__((noinline)) static void caller_two(uint64_t r) { if (shared_leaf) leaf_shared(r); else leaf_two(r); sink++; }
__attribute__((noinline)) static void pick(uint64_t r) { if (r & 1) caller_one(r); else caller_two(r); sink++; }
__attribute__((noinline)) static void outer_one(uint64_t r) { pick(r + 1); sink++; }
__attribute__((noinline)) static void outer_two(uint64_t r) { outer_one(r ^ 5); sink++; }

__attribute__((noinline)) static void measure_memo(int memo, int shared) {
    use_memo = memo;
    shared_leaf = shared;
    uint64_t r = 0x9e3779b97f4a7c15ULL;
    double start = now();
    for (long i = 0; i < CALLS; i++) {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        outer_two(r);
    }
    double seconds = now() - start;
    static const char *names[] = {"no memo", "memo", "known", "no walk"};
    printf("%-9s  alternating callers%-13s  %6.1f ns a stack\n", names[memo], shared ? ", one leaf" : "",
           seconds / (double)CALLS * 1e9);
}

int main(void) {
    if (!swl_unwind_available()) {
        fprintf(stderr, "walker_bench: the walker needs x86_64 and glibc 2.35 or later\n");
        return 1;
    }
    // The hooks give each thread an area for its known stacks (the far end of its own stack).
    swl_unwind_use_area(aligned_alloc(64, (swl_unwind_area_bytes() + 63) / 64 * 64));
    for (int depth = 0; depth <= 20; depth += 10) {
        nest(depth, 0);
        nest(depth, 1);
    }
    for (int round = 0; round < 3; round++) {
        for (int shared = 0; shared <= 1; shared++) {
            measure_memo(NO_MEMO, shared);
            measure_memo(MEMO, shared);
            measure_memo(KNOWN, shared);
            measure_memo(NO_WALK, shared);
        }
    }
    return 0;
}
