// Reads heap bytes it never wrote and prints them, run with glibc's perturbing on
// (MALLOC_PERTURB_ or GLIBC_TUNABLES=glibc.malloc.perturb, and mallopt(M_PERTURB) here): swiftleak
// must show the program glibc's fill byte there, not the zeros its interposer writes otherwise.
// Only the cases where glibc 2.36 itself makes the bytes certain are printed: blocks its arena
// code (_int_malloc) hands out, which it fills with perturb ^ 0xff up to the requested size. Not
// a block from the per-thread cache (sizes up to 1032 bytes freed before by this thread), which
// glibc leaves as it was.
// Then it leaks a block that points to another, so the report can be checked with the byte set:
// 48 bytes definitely lost, 32 indirectly (the fill words in them are no pointers).
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char output[4096];
static size_t used;

/// One line: what, then the bytes [from, to) as runs, "a5 x200" or "a5 x100 00 x4". Kept in a
/// static buffer and printed at the end, so stdout's buffer is not allocated among the cases.
static void show(const char *what, const unsigned char *bytes, size_t from, size_t to) {
    used += (size_t)snprintf(output + used, sizeof output - used, "%s:", what);
    for (size_t i = from; i < to;) {
        size_t run = i;
        while (run < to && bytes[run] == bytes[i]) run++;
        used += (size_t)snprintf(output + used, sizeof output - used, " %02x x%zu", bytes[i], run - i);
        i = run;
    }
    used += (size_t)snprintf(output + used, sizeof output - used, "\n");
}

/// A pointer the compiler cannot see dropped: the leak below must happen at -O2 too.
static void *volatile sink;

int main(void) {
    // A realloc that must move (a fence after the block; first, while no freed chunk can be the
    // fence, so both come from the top chunk, side by side): the part past the old block's
    // usable size is the new chunk's, perturbed up to its chunk size less 15 bytes (glibc's
    // _int_realloc asks _int_malloc for that much); the last few are not, so they are not printed.
    unsigned char *grown = malloc(104);
    void *fence2 = malloc(16);
    sink = fence2; // kept at -O2, where an unused malloc is deleted
    memset(grown, 0x22, 104);
    size_t old_usable = malloc_usable_size(grown);
    grown = realloc(grown, 3000);
    size_t perturbed = ((3000 + 8 + 15) & ~(size_t)15) - 15;
    show("realloc(104 -> 3000), moved, past the old usable size", grown, old_usable, perturbed);
    show("realloc(104 -> 3000), the program's bytes", grown, 0, 104);

    // A size no one asked for before: the cache is empty, the chunk comes from the arena.
    unsigned char *first = malloc(200);
    show("malloc(200), first of its size", first, 0, 200);

    // Over the cache's limit, recycled: the program's own bytes are gone, perturbed over. The
    // fence keeps the freed chunk from merging into the top one.
    unsigned char *big = malloc(5000);
    void *fence = malloc(16);
    sink = fence;
    memset(big, 0x11, 5000);
    free(big);
    big = malloc(5000);
    show("malloc(5000), recycled", big, 0, 5000);

    // Mapped by glibc (over the 128 KiB threshold): perturbed too.
    unsigned char *mapped = malloc(300000);
    show("malloc(300000), mmapped", mapped, 0, 300000);

    unsigned char *aligned = memalign(64, 232);
    show("memalign(64, 232)", aligned, 0, 232);
    void *posix = NULL;
    if (posix_memalign(&posix, 128, 312) != 0) return 1;
    show("posix_memalign(128, 312)", posix, 0, 312);
    unsigned char *aligned_c11 = aligned_alloc(256, 512);
    show("aligned_alloc(256, 512)", aligned_c11, 0, 512);

    // calloc zeroes, perturbing or not.
    unsigned char *zeroed = calloc(1, 600);
    show("calloc(1, 600)", zeroed, 0, 600);

    // mallopt changes the byte from the next allocation on.
    mallopt(M_PERTURB, 0x3c);
    unsigned char *after = malloc(6000);
    show("malloc(6000) after mallopt(M_PERTURB, 0x3c)", after, 0, 6000);

    free(first);
    free(big);
    free(fence);
    free(mapped);
    free(aligned);
    free(posix);
    free(aligned_c11);
    free(zeroed);
    free(grown);
    free(fence2);
    free(after);

    void **lost = malloc(48);
    lost[0] = malloc(32);
    sink = lost;
    sink = NULL;
    lost = NULL;
    fputs(output, stdout);
    return 0;
}
