// -O0: plain frames. Markers "@line:NAME" are found by the tests to know expected line numbers.
#include "report.h"

#ifdef SWL_VARIANT
// Built a second time with -DSWL_VARIANT to get a different build id at the same path.
__attribute__((noinline)) int swl_variant_only(int x) { return x * 3 + 1; }
#endif

__attribute__((noinline)) void leaf_function(void) { /* @line:leaf_function */
    swl_probe("in_leaf"); /* @line:probe_in_leaf */
}

static __attribute__((noinline)) void hidden_helper(void) {
    swl_probe("in_hidden"); /* @line:probe_in_hidden */
}

__attribute__((noinline)) void middle_function(void) {
    leaf_function(); /* @line:call_leaf */
    hidden_helper();
}

int main(void) {
    swl_report_self();
    SWL_REPORT_FUNC("leaf_function", leaf_function);
    middle_function();
    return 0;
}
