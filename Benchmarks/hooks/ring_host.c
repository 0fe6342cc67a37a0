/* ring_host: runs a program with the interposer and a ring, without swiftleak, so that the
 * program's own cost under the hooks can be measured alone (its CPU time, which swiftleak's drain
 * and exit work do not share) and counted by callgrind, which swiftleak cannot trace.
 *
 * It plays the recorder's part of the protocol only: it creates the memfd ring as swiftleak does
 * (the same header, max_frames 20 as `run`'s default), names it in SWIFTLEAK_RING and puts the
 * interposer in LD_PRELOAD, and a thread frees the slots as fast as they come (keeping nothing).
 * RING_HOST_SINGLE_THREAD=1 (only for a program that never starts a thread: this host traces
 * nothing) sets the ring's single_producer, as swiftleak does until a process's first thread.
 * Prints the events drained and the program's CPU time (user + system) on stderr; exits with the
 * program's status.
 *
 *   cc -O2 -pthread -I CShims/SwiftLeakEventABI/include -o /tmp/ring_host Benchmarks/hooks/ring_host.c
 *   RING_HOST_SINGLE_THREAD=1 /tmp/ring_host $PWD/.build/release/libswiftleak_preload.so -- ./malloc_heavy 5000000
 *
 * Under callgrind: valgrind's launcher (/usr/bin/valgrind) is a dynamic program that would take
 * the ring itself, so run the tool directly; valgrind 3.19 cannot read the library's DWARF 5, so
 * give it a copy without debug information:
 *   strip --strip-debug -o /tmp/preload.so .build/release/libswiftleak_preload.so
 *   RING_HOST_SINGLE_THREAD=1 VALGRIND_LAUNCHER=/usr/bin/valgrind VALGRIND_LIB=/usr/libexec/valgrind \
 *     /tmp/ring_host /tmp/preload.so -- /usr/libexec/valgrind/callgrind-amd64-linux --tool=callgrind ./malloc_heavy 200000
 */
#define _GNU_SOURCE
#include "SwiftLeakEventABI.h"

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static swl_ring_header *ring;
static volatile int child_done;
static uint64_t drained;

static void *drain(void *unused) {
    (void)unused;
    swl_event *slots = swl_ring_slots(ring);
    uint64_t capacity = ring->capacity, mask = capacity - 1, head = 0;
    for (;;) {
        uint64_t tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
        bool freed = false;
        while (head < tail) {
            swl_event *slot = &slots[head & mask];
            if (swl_slot_sequence(slot, head & mask) != head + 1) break;
            swl_slot_set_sequence(slot, head & mask, head + capacity);
            head++;
            freed = true;
        }
        drained = head;
        if (freed) {
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            if (__atomic_load_n(&ring->producers_waiting, __ATOMIC_SEQ_CST) != 0) {
                __atomic_fetch_add(&ring->space_epoch, 1, __ATOMIC_SEQ_CST);
                syscall(SYS_futex, &ring->space_epoch, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
            }
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
    uint64_t capacity = 1 << 18, store_size = 1ULL << 32;
    uint32_t buckets = 1 << 20;
    uint64_t ring_offset, buckets_offset, store_offset;
    uint64_t total = swl_ring_layout(capacity, buckets, store_size, &ring_offset, &buckets_offset, &store_offset);
    int fd = memfd_create(SWL_RING_MEMFD_NAME, 0);
    if (fd < 0 || ftruncate(fd, (off_t)total) != 0) { perror("memfd"); return 2; }
    ring = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (ring == MAP_FAILED) { perror("mmap"); return 2; }
    ring->magic = SWL_ABI_MAGIC;
    ring->version = SWL_ABI_VERSION;
    ring->header_size = sizeof(swl_ring_header);
    ring->recorder_pid = getpid();
    ring->max_frames = 20;
    ring->bucket_count = buckets;
    ring->capacity = capacity;
    ring->ring_offset = ring_offset;
    ring->buckets_offset = buckets_offset;
    ring->store_offset = store_offset;
    ring->store_size = store_size;
    ring->total_size = total;
    ring->store_used = 16;
    // swiftleak's tracer clears single_producer at a process's first thread; this host traces
    // nothing, so it promises one producer only when told the program has one thread.
    ring->single_producer = getenv("RING_HOST_SINGLE_THREAD") != NULL;

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
    ring->traced_pid = child;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
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
            ring->attached, cpu);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
