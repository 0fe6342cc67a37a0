// Counts the descriptors anyone but this program creates in it, with no timing window to miss.
//
// The executable defines the libc functions that create descriptors (linked with -rdynamic, so
// they are in its dynamic symbol table). A shared library that calls one of them through its PLT,
// as the interposer does, binds to the executable's definition, the first in the lookup order:
// every such call passes through here, however short-lived the descriptor it makes. Calls the
// program makes itself are marked (t_mine) and not counted.
//
// Usage: fd_watch THREADS. Starts THREADS threads, four at a time (all four alive at once), each
// allocating and freeing; then opens /dev/null itself. Prints the calls made by others before main (the interposer maps
// its ring there) and since main started, and the number its own open() got.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static __thread int t_mine;
static volatile int g_main_started;
/// Calls by others, before main and since, with the first few functions' names.
static int g_counts[2];
static const char *g_names[2][8];

static void note(const char *function) {
    if (t_mine) return;
    int phase = g_main_started ? 1 : 0;
    int index = __atomic_fetch_add(&g_counts[phase], 1, __ATOMIC_RELAXED);
    if (index < 8) g_names[phase][index] = function;
}

#define WRAP_MODE(flags) ((flags) & (O_CREAT | O_TMPFILE) ? va_arg(list, int) : 0)

int openat(int dir, const char *path, int flags, ...) {
    note("openat");
    va_list list;
    va_start(list, flags);
    int mode = WRAP_MODE(flags);
    va_end(list);
    return (int)syscall(SYS_openat, dir, path, flags, mode);
}
int openat64(int dir, const char *path, int flags, ...) {
    note("openat64");
    va_list list;
    va_start(list, flags);
    int mode = WRAP_MODE(flags);
    va_end(list);
    return (int)syscall(SYS_openat, dir, path, flags, mode);
}
int open(const char *path, int flags, ...) {
    note("open");
    va_list list;
    va_start(list, flags);
    int mode = WRAP_MODE(flags);
    va_end(list);
    return (int)syscall(SYS_openat, AT_FDCWD, path, flags, mode);
}
int open64(const char *path, int flags, ...) {
    note("open64");
    va_list list;
    va_start(list, flags);
    int mode = WRAP_MODE(flags);
    va_end(list);
    return (int)syscall(SYS_openat, AT_FDCWD, path, flags, mode);
}
int creat(const char *path, mode_t mode) {
    note("creat");
    return (int)syscall(SYS_openat, AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}
int memfd_create(const char *name, unsigned int flags) {
    note("memfd_create");
    return (int)syscall(SYS_memfd_create, name, flags);
}
int pipe(int fds[2]) {
    note("pipe");
    return (int)syscall(SYS_pipe2, fds, 0);
}
int pipe2(int fds[2], int flags) {
    note("pipe2");
    return (int)syscall(SYS_pipe2, fds, flags);
}
int dup(int fd) {
    note("dup");
    return (int)syscall(SYS_dup, fd);
}
int dup2(int fd, int to) {
    note("dup2");
    return (int)syscall(SYS_dup2, fd, to);
}
int dup3(int fd, int to, int flags) {
    note("dup3");
    return (int)syscall(SYS_dup3, fd, to, flags);
}
int socket(int domain, int type, int protocol) {
    note("socket");
    return (int)syscall(SYS_socket, domain, type, protocol);
}
int eventfd(unsigned int initial, int flags) {
    note("eventfd");
    return (int)syscall(SYS_eventfd2, initial, flags);
}

static pthread_barrier_t g_batch;

static void *worker(void *arg) {
    (void)arg;
    // Each thread's own pointer: a shared one lets two threads free the same block.
    void *volatile block = malloc(16);
    free(block);
    // Every thread of a batch has made its first hooked call before any ends: each needs a stack.
    pthread_barrier_wait(&g_batch);
    for (int i = 0; i < 50; i++) {
        block = malloc(24 + (size_t)i);
        free(block);
    }
    return NULL;
}

static void print_calls(const char *when, int phase) {
    printf("%s: %d", when, g_counts[phase]);
    for (int i = 0; i < g_counts[phase] && i < 8; i++) printf(" %s", g_names[phase][i]);
    printf("\n");
}

int main(int argc, char **argv) {
    g_main_started = 1;
    int threads = argc > 1 ? atoi(argv[1]) : 16;
    for (int started = 0; started < threads; started += 4) {
        pthread_t ids[4];
        int batch = threads - started < 4 ? threads - started : 4;
        pthread_barrier_init(&g_batch, NULL, (unsigned)batch);
        for (int i = 0; i < batch; i++) pthread_create(&ids[i], NULL, worker, NULL);
        for (int i = 0; i < batch; i++) pthread_join(ids[i], NULL);
        pthread_barrier_destroy(&g_batch);
    }
    t_mine = 1;
    int own = open("/dev/null", O_RDONLY);
    t_mine = 0;
    print_calls("by others before main", 0);
    print_calls("by others since main", 1);
    printf("own open: %d\n", own);
    return 0;
}
