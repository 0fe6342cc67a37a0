// Heap bugs glibc catches itself: the program must die of them exactly as without swiftleak, with
// glibc's message on stderr and its SIGABRT.
//   realloc       realloc of a pointer glibc never handed out, whose "header" holds a size
//                 no chunk has (a forged or stale pointer): "realloc(): invalid old size"
//   realloc-zero  the same with size 0, which glibc's realloc turns into a free
//                 of it: "double free or corruption (out)"
// Printed before the call: its mode, so a run that survives shows where it got to.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/// Not heap memory: the "block" lies in the program's data, its header word before it.
static uint64_t not_heap[512] __attribute__((aligned(16)));

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "realloc";
    uint64_t *block = &not_heap[256];
    // A size past anything mapped after the block: a read of a "next chunk" header there faults.
    block[-1] = 0x7ffffff0;
    printf("%s\n", mode);
    fflush(stdout);
    void *volatile result = realloc(block, strcmp(mode, "realloc-zero") == 0 ? 0 : 32);
    printf("survived: %p\n", result);
    return 0;
}
