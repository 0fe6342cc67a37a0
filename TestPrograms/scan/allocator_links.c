// Blocks carved from chunks that were on glibc's free lists: until the program writes them, their
// first words still hold the links glibc kept there (fd/bk, pointing at other chunks' headers, 16
// bytes before those blocks: into the block before, for sizes of 16k + 8). The program frees 40
// blocks of 200 bytes in reverse order (seven to the tcache, the rest merged in the bins), then
// leaks 50 blocks of 24, 40 and 56 bytes without writing them, printing as it goes.
// Valgrind: 50 blocks (1,984 bytes) definitely lost, none indirectly.
#include <stdio.h>
#include <stdlib.h>

static void *volatile sink;

int main(void) {
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
