// Leaks N blocks from each of two call sites: `diff` of N=10 against N=20 must show +10 blocks on
// exactly these two stacks.
#include <stdlib.h>

void *volatile sink;

__attribute__((noinline)) static void site_a(void) { sink = malloc(24); }
__attribute__((noinline)) static void site_b(void) { sink = malloc(40); }

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 10;
    for (int i = 0; i < n; i++) {
        site_a();
        site_b();
    }
    // Some work that is the same in every run: allocated and freed.
    for (int i = 0; i < 100; i++) free(malloc(64 + i));
    sink = 0;
    return 0;
}
