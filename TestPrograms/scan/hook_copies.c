// Blocks whose address only ever passed through the allocation functions: each is forgotten as
// soon as the next call returns, so any copy left behind by swiftleak's hooks, its stack walker or
// glibc's allocator running under them would keep it "reachable".
// Usage: hook_copies MODE
//   loop      1,000 mallocs of 16 bytes, each forgotten at once: 1,000 blocks definitely lost
//   families  200 rounds of malloc, calloc, realloc, posix_memalign, aligned_alloc and a
//             malloc/free pair, every block forgotten: 1,000 blocks definitely lost
//   thread    the loop, on a thread that then waits for ever (its stack is a root at exit)
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *volatile sink;

static void forgotten_loop(void) {
    for (int i = 0; i < 1000; i++) sink = malloc(16);
    sink = NULL;
}

static void forgotten_families(void) {
    for (int i = 0; i < 200; i++) {
        sink = malloc(24);
        sink = calloc(1, 40);
        sink = realloc(NULL, 56);
        void *aligned = NULL;
        if (posix_memalign(&aligned, 64, 72) == 0) sink = aligned;
        sink = aligned_alloc(32, 96);
        free(malloc(200));
    }
    sink = NULL;
}

static int ready_pipe[2];

static void *looping_thread(void *arg) {
    (void)arg;
    forgotten_loop();
    (void)!write(ready_pipe[1], "x", 1);
    for (;;) pause();
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "loop")) {
        forgotten_loop();
    } else if (!strcmp(mode, "families")) {
        forgotten_families();
    } else if (!strcmp(mode, "thread")) {
        pthread_t thread;
        if (pipe(ready_pipe) != 0 || pthread_create(&thread, NULL, looping_thread, NULL) != 0) return 2;
        char c;
        if (read(ready_pipe[0], &c, 1) != 1) return 2;
    } else {
        return 2;
    }
    return 0;
}
