// Usage: thread_exec PROGRAM [ARGS...]: loses 77 bytes, then a second thread execs PROGRAM while
// the main thread waits in pause(): the kernel ends the main thread for the exec.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "losses.h"

static char **target;

static void *run(void *unused) {
    (void)unused;
    execv(target[0], target);
    perror("execv");
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    target = argv + 1;
    lose_block(77);
    pthread_t thread;
    if (pthread_create(&thread, NULL, run, NULL) != 0) return 3;
    for (;;) pause();
}
