/* clearing_bench: the loops that cleared glibc's links out of fresh blocks until 2 Dec
 * (clear_links.h), and the memset of the block that replaced them in the hooks, alone, on the sizes
 * the hooks see. 512 blocks of 1 KiB (they stay in L2) hold odd words, so no word is
 * a link and nothing is written, as in most blocks; each call clears one block at a size from the
 * case's distribution, the block and size drawn from an xorshift generator. Prints the thread CPU
 * time per call, net of the same loop without the call (the generator's own mispredicted branch
 * in "malloc_heavy" is in both). First it checks each loop against the definition on random
 * words: every non-zero, 16-byte aligned word below 2^63 cleared, every other word below 2^63
 * kept (the SSE2 loop also clears aligned words above: no address of a block lies there).
 *
 *   cc -O2 -o /tmp/clearing_bench Benchmarks/clearing/clearing_bench.c
 *   /tmp/clearing_bench [CALLS]
 */
#include <cpuid.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clear_links.h"

#define BLOCKS 512
#define BLOCK_WORDS 128

static uint64_t state = 0x9e3779b97f4a7c15ull;
static inline uint64_t next_random(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

static bool have_avx2(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE) || !(c & bit_AVX)) return false;
    uint32_t xcr0_low, xcr0_high;
    __asm__("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0));
    if ((xcr0_low & 6) != 6) return false;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_AVX2);
}

enum { KERNEL_NONE, KERNEL_SSE2, KERNEL_AVX2, KERNEL_MEMSET };
static const char *kernel_names[] = {"none", "sse2", "avx2", "memset"};

static void clear_with(int kernel, uint64_t *words, uint64_t count) {
    if (kernel == KERNEL_SSE2) swl_clear_links_sse2(words, 0, count);
    if (kernel == KERNEL_AVX2) swl_clear_links_avx2(words, 0, count);
    if (kernel == KERNEL_MEMSET) memset(words, 0, count * 8);
}

/// Random words of every kind (zero, odd, aligned addresses, aligned words above 2^63) at random
/// counts; each loop must clear exactly the links of [0, count) and touch nothing past it.
static bool check(int kernel) {
    uint64_t words[BLOCK_WORDS + 8] __attribute__((aligned(16))), before[BLOCK_WORDS + 8];
    for (int round = 0; round < 100000; round++) {
        uint64_t count = 1 + next_random() % BLOCK_WORDS;
        for (int i = 0; i < BLOCK_WORDS + 8; i++) {
            uint64_t r = next_random();
            switch (r % 5) {
            case 0: words[i] = 0; break;
            case 1: words[i] = (r >> 8) | 1; break;
            case 2: words[i] = (r >> 17) & ~(uint64_t)15; break;           // an aligned address (or 0)
            case 3: words[i] = (r | (1ull << 63)) & ~(uint64_t)15; break; // aligned, above 2^63
            default: words[i] = (r >> 17) & ~(uint64_t)7; break;           // 8-aligned: half are links
            }
        }
        memcpy(before, words, sizeof words);
        clear_with(kernel, words, count);
        for (uint64_t i = 0; i < BLOCK_WORDS + 8; i++) {
            uint64_t w = before[i];
            bool link = i < count && w != 0 && (w & 15) == 0;
            bool high = w >> 63;
            if (link && !high ? words[i] != 0 : (!link && words[i] != w)) {
                printf("%s: word %lu of %lu: %#lx became %#lx\n", kernel_names[kernel], i, count, w, words[i]);
                return false;
            }
        }
    }
    return true;
}

typedef enum { SIZES_MALLOC_HEAVY, SIZES_UNIFORM, SIZES_FIXED, SIZES_SMALL } sizes;
static const char *size_names[] = {
    "malloc_heavy (1/2 16-63 B, 1/2 16-520 B)", "uniform 16-520 B", "fixed 272 B", "small 16-63 B"};

static double run(int kernel, sizes case_sizes, long calls, uint64_t *memory) {
    state = 0x9e3779b97f4a7c15ull;
    struct timespec t0, t1;
    uint64_t sum = 0;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    for (long k = 0; k < calls; k++) {
        uint64_t r = next_random();
        size_t size;
        switch (case_sizes) {
        case SIZES_MALLOC_HEAVY: size = (r & 1) ? 16 + r % 48 : 16 + r % 505; break;
        case SIZES_UNIFORM: size = 16 + r % 505; break;
        case SIZES_FIXED: size = 272; break;
        default: size = 16 + r % 48; break;
        }
        uint64_t *block = memory + ((r >> 40) % BLOCKS) * BLOCK_WORDS;
        clear_with(kernel, block, (size + 7) / 8);
        sum += block[0];
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    if (sum == 42) puts("");
    return ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / (double)calls;
}

int main(int argc, char **argv) {
    long calls = argc > 1 ? atol(argv[1]) : 10000000L;
    bool avx2 = have_avx2();
    int last = avx2 ? KERNEL_AVX2 : KERNEL_SSE2;
    for (int kernel = KERNEL_SSE2; kernel <= last; kernel++) {
        if (!check(kernel)) return 1;
    }
    printf("checked: %s clear exactly the links\n", avx2 ? "sse2 and avx2" : "sse2 (no avx2 here)");
    uint64_t *memory = aligned_alloc(64, BLOCKS * BLOCK_WORDS * 8);
    for (long i = 0; i < BLOCKS * BLOCK_WORDS; i++) memory[i] = (uint64_t)i * 8 + 1;
    for (int c = SIZES_MALLOC_HEAVY; c <= SIZES_SMALL; c++) {
        double harness = run(KERNEL_NONE, (sizes)c, calls, memory);
        printf("%-42s", size_names[c]);
        for (int kernel = KERNEL_SSE2; kernel <= KERNEL_MEMSET; kernel++) {
            if (kernel == KERNEL_AVX2 && !avx2) continue;
            printf("  %s %5.2f ns", kernel_names[kernel], run(kernel, (sizes)c, calls, memory) - harness);
        }
        printf("  (harness %.2f ns)\n", harness);
    }
    return 0;
}
