// operator new failing under swiftleak: std::bad_alloc is thrown from the hook, which runs on
// swiftleak's own stack, and must unwind through the stack switch back into the program's catch
// (the switch's call-frame information is what the C++ unwinder follows). A new_handler that
// gives memory back once lets one attempt succeed; the nothrow form returns null. 40 bytes leak.
#include <cstdio>
#include <cstdlib>
#include <new>

static void *volatile sink;
static int handler_calls;

static void give_up(void) {
    handler_calls++;
    std::set_new_handler(nullptr); // the next failure throws
}

int main() {
    const std::size_t huge = (std::size_t)1 << 62;
    int caught = 0;
    for (int i = 0; i < 3; i++) {
        try {
            sink = new char[huge];
        } catch (const std::bad_alloc &) {
            caught++;
        }
    }
    std::set_new_handler(give_up);
    try {
        sink = new char[huge];
    } catch (const std::bad_alloc &) {
        caught++;
    }
    sink = new (std::nothrow) char[huge];
    bool nothrow_null = sink == nullptr;
    sink = new int[10];
    sink = nullptr;
    std::printf("caught %d, new_handler called %d, nothrow null %d\n", caught, handler_calls, nothrow_null);
    return 0;
}
