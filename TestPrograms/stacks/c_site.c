// One leak at a known line, two calls deep.
#include <stdlib.h>

static void *volatile sink;

__attribute__((noinline)) void *leaky_site(size_t n) {
    return malloc(n); // @alloc leaky_site
}

__attribute__((noinline)) void caller_of_site(void) {
    sink = leaky_site(41); // @call caller_of_site
    sink = NULL;
}

int main(void) {
    caller_of_site();
    return 0;
}
