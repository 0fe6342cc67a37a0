/* linked_list: N blocks (16..48 bytes) linked in one list, live at exit, for the exit scan's speed.
 *
 * Usage: linked_list N reachable|lost
 *   reachable: a global points at the head, so the scan marks all N through the list;
 *   lost:      the head pointer is dropped, so the scan finds one definitely lost leader and
 *              N-1 indirectly lost blocks behind it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node {
    struct node *next;
    char payload[];
};

static struct node *volatile head;

/* Overwrites the dead frames below main, where malloc left copies of the last addresses. */
__attribute__((noinline)) static void scrub_stack(void) {
    volatile char area[16384];
    memset((char *)area, 0, sizeof area);
    __asm__ volatile("" : : "r"(area) : "memory"); /* keep the stores at any -O */
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 4000000;
    int lost = argc > 2 && strcmp(argv[2], "lost") == 0;
    struct node *list = NULL;
    for (long i = 0; i < n; i++) {
        struct node *node = malloc(16 + (size_t)(i % 5) * 8);
        if (node == NULL) { perror("malloc"); return 2; }
        node->next = list;
        list = node;
    }
    head = list;
    if (lost) {
        head = NULL;
        list = NULL;
        scrub_stack();
    }
    return 0;
}
