// realloc's grown part holds what that memory held while it was free: glibc's free-list links
// (fd/bk point at chunk headers, i.e. into the last words of the block before a free chunk).
// Valgrind never counts those bytes (they are undefined), so they must not count here either.
//
// `kept` (reachable from a global) is grown in place over a freed neighbour whose forward link
// points at the header of another free chunk, i.e. into `lost`'s last word; then `lost` is lost.
// Valgrind: 200 bytes in 1 block definitely lost, nothing possibly lost.
#include <stdio.h>
#include <stdlib.h>

static void *volatile kept;
static void *volatile sink;
/// Takes every free chunk start-up left that these requests could be carved from, so that the
/// blocks below come from the top chunk, one after the other (checked: "adjacent").
static void *volatile drain[64];
/// Volatile globals, so that no compiler drops an allocation or a store the heap shape needs.
static void *volatile filler[7], *volatile first, *volatile neighbour, *volatile lost, *volatile after, *volatile fence;

int main(void) {
    // Fill the tcache for this size, so that the frees below go to the unsorted bin, where the
    // links are raw pointers (the tcache's are safe-linked and never look like addresses).
    for (int i = 0; i < 64; i++) drain[i] = malloc(200);
    for (int i = 0; i < 7; i++) filler[i] = malloc(200);
    first = malloc(200);     // kept
    neighbour = malloc(200); // freed: kept grows over it
    lost = malloc(200);
    after = malloc(200);     // freed first: neighbour's link points at its header, in `lost`
    fence = malloc(200);     // keeps `after` from merging into the top chunk
    for (int i = 0; i < 7; i++) free(filler[i]);
    free(after);
    free(neighbour);
    kept = realloc(first, 400);
    int adjacent = (char *)neighbour == (char *)first + 208 && (char *)lost == (char *)neighbour + 208 &&
                   (char *)after == (char *)lost + 208 && (char *)fence == (char *)after + 208;
    printf("adjacent: %s, kept %s\n", adjacent ? "yes" : "no", kept == first ? "grown in place" : "moved");
    lost = first = neighbour = after = NULL;
    sink = fence;
    return 0;
}
