// -O0: C++ names that need demangling: a function template and a member of a class template in a
// namespace.
#include "report.h"

namespace shapes {
template <typename T> struct Box {
    T value;
    __attribute__((noinline)) T get() const {
        swl_probe("in_box_get"); /* @line:probe_in_get */
        return value;
    }
};
}  // namespace shapes

template <typename T> __attribute__((noinline)) T twice(T value) {
    swl_probe("in_twice"); /* @line:probe_in_twice */
    return value * 2;
}

int main() {
    swl_report_self();
    SWL_REPORT_FUNC("twice_int", &twice<int>);
    shapes::Box<double> box{1.5};
    volatile double d = box.get() + twice<int>(3);
    (void)d;
    return 0;
}
