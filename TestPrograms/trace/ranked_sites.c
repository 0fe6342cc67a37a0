// Three call sites whose order by calls (many_small, middle, few_big) is the reverse of their
// order by bytes: analyze's top lists must rank each by its own figure, biggest first.
#include <stdlib.h>

void *volatile sink;

__attribute__((noinline)) static void few_big(void) { free(sink = malloc(4096)); }
__attribute__((noinline)) static void middle(void) { free(sink = malloc(100)); }
__attribute__((noinline)) static void many_small(void) { free(sink = malloc(16)); }

int main(void) {
    for (int i = 0; i < 3; i++) few_big();
    for (int i = 0; i < 7; i++) middle();
    for (int i = 0; i < 12; i++) many_small();
    return 0;
}
