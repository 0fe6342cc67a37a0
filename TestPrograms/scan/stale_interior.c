// A block's earlier owner left pointers into the middle of another block in it, none 16-byte
// aligned (a pointer to a struct's second field, a char * into a string): the program frees the
// holder, takes its chunk back from the tcache at once without writing it, keeps it reachable
// from a global, and forgets the block those old words point into.
// Valgrind: 1 block (64 bytes) definitely lost (the new block's words are undefined to it), and
// the 200-byte block still reachable. Printed: whether the chunk came back.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void *volatile lost;
static void *volatile holder;
static void *volatile kept;

int main(void) {
    lost = malloc(64);
    holder = malloc(200);
    void *volatile *words = (void *volatile *)holder;
    for (int i = 0; i < 25; i++) words[i] = NULL;
    // Past the two words the tcache writes into a freed chunk (its next link and its key).
    words[3] = (char *)lost + 8;
    words[5] = (char *)lost + 5;
    words[7] = (char *)lost + 40;
    void *freed = holder;
    free(holder);
    holder = NULL;
    kept = malloc(200);
    printf("chunk taken back: %s\n", kept == freed ? "yes" : "no");
    freed = NULL;
    lost = NULL;
    return 0;
}
