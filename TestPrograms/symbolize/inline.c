// -O2: swl_probe's call site sits in code inlined twice into outer_function.
#include "report.h"

static inline __attribute__((always_inline)) int inner_step(int value) {
    swl_probe("in_inlined"); /* @line:probe_in_inner */
    return value + 1;
}

static inline __attribute__((always_inline)) int middle_step(int value) {
    int result = inner_step(value * 2); /* @line:call_inner */
    return result + 3;
}

__attribute__((noinline)) int outer_function(int value) {
    int result = middle_step(value); /* @line:call_middle */
    return result * 5;
}

int main(int argc, char **argv) {
    (void)argv;
    swl_report_self();
    volatile int sink = outer_function(argc);
    (void)sink;
    return 0;
}
