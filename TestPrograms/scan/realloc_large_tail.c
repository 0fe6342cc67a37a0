// realloc grows a block in place by more than 4 KiB over a free neighbour that sat in a large bin.
// The grown part begins with the neighbour's chunk header: its size word, then its four links (fd,
// bk, fd_nextsize, bk_nextsize), one word later than in a fresh block. The last, bk_nextsize,
// points at the header of the other chunk of that bin, i.e. into the last words of the block
// before it. Valgrind never counts those bytes (they are undefined), so they must not count here.
//
// `kept` (reachable from a global) grows over `neighbour`, whose nextsize links point at `other`'s
// header, inside `lost`; then `lost` is lost.
// Valgrind: 2,200 bytes in 1 block definitely lost, nothing possibly lost.
#include <stdio.h>
#include <stdlib.h>

/// Volatile globals, so that no compiler drops an allocation or a store the heap shape needs.
static void *volatile kept, *volatile first, *volatile neighbour, *volatile lost, *volatile other, *volatile fence,
    *volatile sorter;

int main(void) {
    // All bigger than any chunk start-up left free (the interposer's start-up frees one of ~2 KiB),
    // so each is carved from the top chunk right after the one before (checked: "adjacent").
    // NEIGHBOUR and OTHER: two sizes of one large bin (8,016 and 8,112-byte chunks), so each is the
    // other's fd_nextsize and bk_nextsize. GROWN fits first + neighbour with no remainder to split.
    enum { FIRST = 2400, NEIGHBOUR = 8000, LOST = 2200, OTHER = 8100, GROWN = 10400 };
    first = malloc(FIRST);
    neighbour = malloc(NEIGHBOUR);
    lost = malloc(LOST);
    other = malloc(OTHER);
    fence = malloc(LOST); // keeps `other` from merging into the top chunk
    int adjacent = (char *)neighbour == (char *)first + FIRST + 16 && (char *)lost == (char *)neighbour + NEIGHBOUR + 16 &&
                   (char *)other == (char *)lost + LOST + 8 && (char *)fence == (char *)other + OTHER + 12;
    free(neighbour);
    free(other); // both over the tcache's limit: to the unsorted bin
    sorter = malloc(20000); // served by neither: sorts both into their large bin
    free(sorter);
    kept = realloc(first, GROWN);
    printf("adjacent: %s, kept %s\n", adjacent ? "yes" : "no", kept == first ? "grown in place" : "moved");
    lost = first = neighbour = other = sorter = NULL;
    return 0;
}
