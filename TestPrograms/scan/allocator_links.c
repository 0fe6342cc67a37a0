// Blocks carved from chunks that were on glibc's free lists: until the program writes them, their
// first words still hold the links glibc kept there (fd/bk, pointing at other chunks' headers, 16
// bytes before those blocks: into the block before, for sizes of 16k + 8). The program frees 40
// blocks of 200 bytes in reverse order (seven to the tcache, the rest merged in the bins), then
// leaks 50 blocks of 24, 40 and 56 bytes without writing them, printing as it goes.
// Valgrind: 50 blocks (1,984 bytes) definitely lost, none indirectly.
//
// `allocator_links large`: two free chunks of one large bin (3,008 and 3,024 bytes, each right
// after a guard block) hold, in their third and fourth words, glibc's fd_nextsize/bk_nextsize
// links to chunk headers, i.e. into the last words of a guard. The program takes both back and
// leaks them with their guards, unwritten.
// Valgrind: 4 blocks (10,390 bytes) definitely lost, none indirectly.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *volatile sink;

static int large_bin_links(void) {
    static void *volatile held[4];
    // Bigger than any chunk left free before main (the interposer's start-up frees one of ~2 KiB):
    // carved from the top chunk one after the other, each block right after its guard.
    enum { GUARD = 2200, A = 2990, B = 3000 };
    held[0] = malloc(GUARD);
    void *a = malloc(A);
    held[1] = malloc(GUARD);
    void *b = malloc(B);
    void *volatile fence = malloc(24); // keeps b from merging into the top chunk
    free(a);
    free(b); // both over the tcache's limit: to the unsorted bin
    sink = malloc(5000); // served by neither: sorts both into their large bin
    free(sink);
    held[2] = malloc(A);
    held[3] = malloc(B);
    printf("large blocks %s\n", held[2] == a && held[3] == b ? "taken back" : "elsewhere");
    for (int i = 0; i < 4; i++) held[i] = NULL;
    sink = NULL;
    free(fence);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "large") == 0) return large_bin_links();
    static const size_t sizes[] = {24, 40, 56};
    void *freed[40];
    for (int i = 0; i < 40; i++) freed[i] = malloc(200);
    for (int i = 39; i >= 0; i--) free(freed[i]);
    for (int i = 0; i < 50; i++) {
        sink = malloc(sizes[i % 3]);
        printf("leaked block %d of %zu bytes\n", i, sizes[i % 3]);
    }
    sink = NULL;
    return 0;
}
