// Built with -O2: `inner_alloc` is inlined into `outer_alloc`; both must appear in the stack.
#include <stdlib.h>

void *volatile sink;

static inline __attribute__((always_inline)) void *inner_alloc(size_t n) {
    void *p = malloc(n * 3); // @alloc inner_alloc
    return p;
}

__attribute__((noinline)) void outer_alloc(size_t n) {
    sink = inner_alloc(n); // @call outer_alloc
}

int main(int argc, char **argv) {
    (void)argv;
    outer_alloc((size_t)argc + 10);
    sink = 0;
    return 0;
}
