// Stack shapes for swiftleak's own stack walker. Under SWIFTLEAK_UNWINDER=verify every stack is
// walked by swiftleak's walker and by libunwind, and the tests expect no difference. The shapes:
// frames deeper than the frame limit, frame-pointer frames with a variable-length array, a stack
// realigned to 64 bytes, a signal handler (a signal frame, which the walker hands to libunwind),
// C++ exceptions in flight, libc and libstdc++ frames between the program's (qsort, std::sort,
// std::function), tail calls, threads, a plugin that is dlopen'ed, dlclose'd and loaded again
// (stale cached rules must not survive dlclose), and one frame reached at one stack depth through
// different callers (the walker's memo of the thread's last stack must not lend them its frames).
//
// Usage: unwind_shapes [PLUGIN.so]   Everything allocated is freed; it exits 0.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <functional>
#include <map>
#include <pthread.h>
#include <stdexcept>
#include <string>
#include <vector>

#define NOINLINE __attribute__((noinline))

static void *volatile sink;

NOINLINE static void use(void *p) {
    __atomic_store_n(&sink, p, __ATOMIC_RELAXED); // atomic: the threads below call this at once
    free(p);
}

// Recursion past the default frame limit (--num-callers, 12) and past the walker's maximum (128).
NOINLINE static int deep(int n) {
    if (n == 0) {
        use(malloc(8));
        return 0;
    }
    int r = deep(n - 1);
    __asm__ volatile("" ::: "memory"); // no tail call: every level keeps its frame
    return r + 1;
}

// A variable-length array makes GCC address the frame through RBP: the CFA is RBP-based.
NOINLINE static void with_vla(int n) {
    char buffer[n];
    memset(buffer, 1, (size_t)n);
    use(malloc(16 + (size_t)buffer[n - 1]));
}

// -O0 code keeps a frame pointer everywhere, whatever the file's flags.
__attribute__((optimize("O0"))) NOINLINE static void unoptimized(int n) {
    use(malloc((size_t)n));
}

NOINLINE static void realigned(int n) {
    alignas(64) volatile char block[200];
    block[0] = (char)n;
    use(malloc(24 + (size_t)block[0]));
}

// A tail call: the walker and libunwind must both skip this frame the same way.
NOINLINE void *tail_alloc(size_t n) { return malloc(n); }

// The walker remembers each thread's last stack and takes its outer frames again once a walk
// reaches the same return address at the same stack pointer, after checking the words they were
// read from. Here one allocating frame is reached at one stack depth through callers that differ
// one frame out (same frame sizes, other return addresses), two frames out, and through -O0 frames
// (RBP-based CFAs, saved RBPs) whose own callers differ: each walk must see its own callers.
NOINLINE static void same_depth_leaf(int n) {
    use(malloc((size_t)n));
    __asm__ volatile("" ::: "memory");
}
NOINLINE static void via_first(int n) {
    same_depth_leaf(n);
    __asm__ volatile("" ::: "memory");
}
NOINLINE static void via_second(int n) {
    same_depth_leaf(n + 1);
    __asm__ volatile("" ::: "memory");
}
NOINLINE static void outer_first(int n) {
    via_first(n);
    __asm__ volatile("" ::: "memory");
}
NOINLINE static void outer_second(int n) {
    via_first(n + 2);
    __asm__ volatile("" ::: "memory");
}
__attribute__((optimize("O0"))) NOINLINE static void framed_via(int n) { via_second(n); }
__attribute__((optimize("O0"))) NOINLINE static void framed_first(int n) { framed_via(n); }
__attribute__((optimize("O0"))) NOINLINE static void framed_second(int n) { framed_via(n + 3); }

// One allocating frame at one stack pointer with two RBPs. The VLA makes its CFA RBP-based; it is
// reached through one call instruction either directly or one frame deeper (through vla_hop), and
// the VLA sizes tried include the one at which its call to malloc happens at the same stack
// pointer both ways. Then only the RBP tells the two stacks apart (the words the deeper walk read
// are still there, below the direct call's frame).
NOINLINE static void vla_leaf(int n) {
    volatile char buffer[n];
    buffer[0] = 0;
    use(malloc(24 + (size_t)buffer[0]));
}
NOINLINE static void vla_hop(int n) {
    volatile char pad[40];
    pad[0] = 0;
    vla_leaf(n + pad[0]);
    __asm__ volatile("" ::: "memory");
}
NOINLINE static void one_frame_two_rbps(void) {
    void (*volatile callees[2])(int) = {vla_hop, vla_leaf};
    for (int n = 16; n <= 1024; n += 16) {
        for (int i = 0; i < 40; i++) callees[i & 1](i & 1 ? n : 16);
    }
}

NOINLINE static void same_depth_other_callers(void) {
    for (int i = 0; i < 300; i++) {
        switch (i % 6) {
        case 0: via_first(8); break;
        case 1: via_second(8); break;
        case 2: outer_first(8); break;
        case 3: outer_second(8); break;
        case 4: framed_first(8); break;
        default: framed_second(8); break;
        }
    }
}

static void on_signal(int) {
    // Not async-signal-safe in general; safe here because the signal is raised synchronously
    // outside any allocator call.
    use(malloc(40));
}

NOINLINE static void throw_and_catch(int i) {
    try {
        std::vector<std::string> names(3, std::string(40, 'x'));
        if (i >= 0) throw std::runtime_error("a message long enough to be heap-allocated " + names[0]);
    } catch (const std::exception &error) {
        std::string copy = error.what();
        use(malloc(copy.size()));
    }
}

static int compare_allocating(const void *a, const void *b) {
    use(malloc(32));
    return *(const int *)a - *(const int *)b;
}

NOINLINE static void through_libraries(void) {
    int values[] = {5, 3, 9, 1, 7, 2};
    qsort(values, 6, sizeof values[0], compare_allocating);
    std::vector<std::string> words;
    for (int i = 0; i < 50; i++) words.push_back(std::string(30 + i % 7, (char)('a' + i % 26)));
    std::sort(words.begin(), words.end());
    std::map<std::string, std::vector<int>> index;
    for (const auto &word : words) index[word].push_back((int)word.size());
    std::function<void(int)> callback = [](int n) { use(malloc((size_t)n)); };
    for (int i = 1; i < 20; i++) callback(i);
}

static void *thread_main(void *) {
    for (int i = 0; i < 200; i++) {
        with_vla(8 + i % 5);
        through_libraries();
        if (i % 50 == 0) same_depth_other_callers();
    }
    return nullptr;
}

NOINLINE static void plugin_round(const char *path) {
    void *handle = dlopen(path, RTLD_NOW);
    if (handle == nullptr) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        exit(1);
    }
    auto plugin_alloc = (void *(*)(void))dlsym(handle, "plugin_alloc");
    for (int i = 0; i < 10; i++) free(plugin_alloc());
    dlclose(handle);
}

int main(int argc, char **argv) {
    // A test runner may start us with SIGUSR1 blocked; raise() must reach the handler.
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_UNBLOCK, &usr1, nullptr);
    signal(SIGUSR1, on_signal);
    for (int round = 0; round < 3; round++) {
        deep(20);
        deep(200);
        with_vla(12);
        unoptimized(20);
        realigned(7);
        free(tail_alloc(50));
        raise(SIGUSR1);
        throw_and_catch(round);
        through_libraries();
        same_depth_other_callers();
        one_frame_two_rbps();
    }
    pthread_t threads[3];
    for (auto &thread : threads) pthread_create(&thread, nullptr, thread_main, nullptr);
    for (auto &thread : threads) pthread_join(thread, nullptr);
    if (argc > 1) {
        plugin_round(argv[1]);
        plugin_round(argv[1]);
    }
    puts("unwind_shapes: done");
    return 0;
}
