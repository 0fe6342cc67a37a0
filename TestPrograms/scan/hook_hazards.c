// What the hooks' own stacks must survive. Each mode leaks exactly 10 blocks of 24 bytes from main
// and prints "done"; nothing else may change.
// Usage: hook_hazards MODE
//   signals  a SIGALRM handler that allocates and frees interrupts a loop of malloc/free pairs
//            every 2 ms, 200 times, so it lands inside hooks
//   fork     a child allocates and leaks 1,000 blocks on its own stack copy, then exits; the parent
//            waits, then starts a thread that allocates too
//   vfork    a vfork child leaves by _exit(3) at once; the parent checks the status
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static void *volatile sink;

static volatile sig_atomic_t handled;
static void *volatile handler_sink, *volatile thread_sink;

// glibc's malloc is not async-signal-safe: a handler that takes a block of the size class the
// interrupted malloc is taking one of finds that tcache bin half updated (its count says 1, its
// list is empty) and crashes, natively too. The handler's blocks are of a size the loop never asks
// for, and every bin is warmed up before the timer starts, so that the loop's calls and the
// handler's each touch only their own tcache bin. The handler still lands inside the hooks.
#define HANDLER_BLOCK 200
#define LOOP_BLOCK(i) (24 + (size_t)((i) % 8) * 16) // 24 to 136 bytes: chunks of 32 to 144

static void allocate_in_handler(int signal_number) {
    (void)signal_number;
    handler_sink = malloc(HANDLER_BLOCK);
    free(handler_sink);
    handled++;
}

static void *allocating_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < 1000; i++) {
        thread_sink = malloc(64);
        free(thread_sink);
    }
    return NULL;
}

static int run_signals(void) {
    // Test runners hand their signal mask down: make sure SIGALRM can arrive.
    sigset_t alarm;
    sigemptyset(&alarm);
    sigaddset(&alarm, SIGALRM);
    sigprocmask(SIG_UNBLOCK, &alarm, NULL);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = allocate_in_handler;
    action.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &action, NULL);
    for (unsigned i = 0; i < 8; i++) {
        sink = malloc(LOOP_BLOCK(i));
        free(sink);
    }
    sink = malloc(HANDLER_BLOCK);
    free(sink);
    struct itimerval every = {.it_interval = {0, 2000}, .it_value = {0, 2000}};
    setitimer(ITIMER_REAL, &every, NULL);
    for (unsigned i = 0; handled < 200; i++) {
        sink = malloc(LOOP_BLOCK(i));
        free(sink);
    }
    struct itimerval stop = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &stop, NULL);
    return 0;
}

static int run_fork(void) {
    pid_t child = fork();
    if (child < 0) return 1;
    if (child == 0) {
        for (int i = 0; i < 1000; i++) sink = malloc(16);
        _exit(0);
    }
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
    pthread_t thread;
    if (pthread_create(&thread, NULL, allocating_thread, NULL) != 0) return 1;
    pthread_join(thread, NULL);
    return 0;
}

static int run_vfork(void) {
    pid_t child = vfork();
    if (child < 0) return 1;
    if (child == 0) _exit(3);
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 3) return 1;
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    int failed = 2;
    if (!strcmp(mode, "signals")) failed = run_signals();
    else if (!strcmp(mode, "fork")) failed = run_fork();
    else if (!strcmp(mode, "vfork")) failed = run_vfork();
    if (failed) return failed;
    for (int i = 0; i < 10; i++) sink = malloc(24);
    sink = NULL;
    printf("done\n");
    return 0;
}
