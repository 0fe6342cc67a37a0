/* ring_host: runs a program with the interposer and a ring, without swiftleak, so that the
 * program's own cost under the hooks can be measured alone (its CPU time, which swiftleak's drain
 * and exit work do not share) and counted by callgrind, which swiftleak cannot trace.
 *
 * It plays the recorder's part of the protocol only: it creates the ring with swiftleak's own
 * swl_ring_create (max_frames 20 as `run`'s default), names it in SWIFTLEAK_RING and puts the
 * interposer in LD_PRELOAD, and a thread frees the slots as fast as they come (swl_ring_peek and
 * swl_ring_release, as swiftleak's drain; keeping nothing).
 * RING_HOST_SINGLE_THREAD=1 (only for a program that never starts a thread: this host traces
 * nothing) sets the ring's single_producer, as swiftleak does until a process's first thread.
 * Prints the events drained and the program's CPU time (user + system) on stderr; exits with the
 * program's status.
 *
 *   cc -O2 -pthread -D_GNU_SOURCE -I CShims/SwiftLeakEventABI/include -I CShims/CSwiftLeakSys/include \
 *      -o /tmp/ring_host Benchmarks/hooks/ring_host.c CShims/CSwiftLeakSys/sys.c
 *   RING_HOST_SINGLE_THREAD=1 /tmp/ring_host $PWD/.build/release/libswiftleak_preload.so -- ./malloc_heavy 5000000
 *
 * Under callgrind: valgrind's launcher (/usr/bin/valgrind) is a dynamic program that would take
 * the ring itself, so run the tool directly; valgrind 3.19 cannot read the library's DWARF 5, so
 * give it a copy without debug information:
 *   strip --strip-debug -o /tmp/preload.so .build/release/libswiftleak_preload.so
 *   RING_HOST_SINGLE_THREAD=1 VALGRIND_LAUNCHER=/usr/bin/valgrind VALGRIND_LIB=/usr/libexec/valgrind \
 *     /tmp/ring_host /tmp/preload.so -- /usr/libexec/valgrind/callgrind-amd64-linux --tool=callgrind ./malloc_heavy 200000
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "CSwiftLeakSys.h"
#include "SwiftLeakEventABI.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static swl_ring_header *ring;
static volatile int child_done;
static uint64_t drained;

static void *drain(void *unused) {
    (void)unused;
    swl_ring_reader reader;
    swl_ring_reader_init(&reader, ring);
    for (;;) {
        const swl_event *first;
        size_t count = swl_ring_peek(&reader, 4096, &first);
        if (count > 0) {
            swl_ring_release(&reader, count);
            drained = reader.head;
        } else {
            if (child_done) return NULL;
            usleep(200);
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 4 || strcmp(argv[2], "--") != 0) {
        fprintf(stderr, "usage: ring_host /abs/path/libswiftleak_preload.so -- PROGRAM [ARGS...]\n");
        return 2;
    }
    int fd = -1;
    ring = swl_ring_create(1 << 18, 1 << 20, 1ULL << 32, 20, getpid(), &fd);
    if (ring == NULL) { perror("swl_ring_create"); return 2; }
    // swiftleak's tracer clears single_producer at a process's first thread; this host traces
    // nothing, so it keeps the promise of one producer only when told the program has one thread.
    if (getenv("RING_HOST_SINGLE_THREAD") == NULL) swl_ring_set_multiple_producers(ring);

    int go[2];
    if (pipe(go) != 0) { perror("pipe"); return 2; }
    pid_t child = fork();
    if (child == 0) {
        char path[64], preload[PATH_MAX + 16];
        snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)getppid(), fd);
        snprintf(preload, sizeof preload, "%s", argv[1]);
        close(fd);
        char byte;
        close(go[1]);
        if (read(go[0], &byte, 1) != 1) _exit(2);
        setenv(SWL_ENV_RING, path, 1);
        setenv("LD_PRELOAD", preload, 1);
        execvp(argv[3], argv + 3);
        perror("exec");
        _exit(127);
    }
    swl_ring_set_traced_pid(ring, child);
    pthread_t thread;
    pthread_create(&thread, NULL, drain, NULL);
    if (write(go[1], "g", 1) != 1) return 2;
    int status;
    struct rusage usage;
    while (wait4(child, &status, 0, &usage) < 0) {}
    child_done = 1;
    pthread_join(thread, NULL);
    double cpu = (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                 (double)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
    fprintf(stderr, "ring_host: %llu events, attached %u, program cpu %.3f s\n", (unsigned long long)drained,
            swl_ring_attached(ring), cpu);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
