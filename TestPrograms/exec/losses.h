// The leaks the exec test programs make, each in a frame of its own so that no copy of the
// pointers stays in main's frame or registers.
#ifndef EXEC_LOSSES_H
#define EXEC_LOSSES_H

#include <stdlib.h>

struct node {
    struct node *next;
    char payload[24];
};

// One block of `size` bytes, definitely lost once the function returns.
__attribute__((noinline)) static void lose_block(size_t size) {
    volatile char *block = malloc(size);
    block[0] = 1;
}

// A two-node list of 32-byte nodes: the head definitely lost, the second node indirectly.
__attribute__((noinline, unused)) static void lose_list(void) {
    struct node *second = calloc(1, sizeof *second);
    struct node *first = calloc(1, sizeof *first);
    first->next = second;
}

#endif
