// A thread that stops inside an allocation function: its operator new fails, and the program's
// new_handler waits there for ever while the process exits from main. The thread's live frames
// hold the only pointer to a 72-byte block (still reachable); a lost 48-byte block's address is
// left in a dead frame below them (definitely lost, as Valgrind would say of such stale words).
#include <new>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static void *volatile sink;
static int ready_pipe[2];

static void wait_for_ever() {
    (void)!write(ready_pipe[1], "x", 1);
    for (;;) pause();
}

__attribute__((noinline)) static void leak_leaving_copies_in_frame() {
    void *volatile copies[64];
    void *block = malloc(48);
    for (int i = 0; i < 64; i++) copies[i] = block;
    sink = copies[63];
    sink = nullptr;
}

static void *worker(void *) {
    void *volatile held = malloc(72);
    leak_leaving_copies_in_frame();
    std::set_new_handler(wait_for_ever);
    sink = new (std::nothrow) char[(size_t)1 << 60]; // fails: the handler runs inside operator new
    return (void *)held;
}

int main() {
    pthread_t thread;
    if (pipe(ready_pipe) != 0 || pthread_create(&thread, nullptr, worker, nullptr) != 0) return 2;
    char c;
    if (read(ready_pipe[0], &c, 1) != 1) return 2;
    return 0;
}
