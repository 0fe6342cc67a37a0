// Processes that fork, for the process-tree tests. Usage: forks MODE. Every process leaks blocks of
// sizes no other process leaks, from its own sites, so each report can be told apart.
//   both      parent leaks 11 (before the fork, so the child inherits it too) and 33; the child
//             leaks 22 and the 100-byte block it inherited (the parent frees its copy)
//   crash     the child leaks 22, then dies of SIGSEGV; the parent leaks 33
//   orphan    the parent leaks 33 and exits first; the child waits for that (its pipe's write end
//             closes with the parent), then leaks 22
//   threads   two threads allocate while the main thread forks; the child leaks 22
//   nested    parent leaks 33, child 22, grandchild 44, each waiting for its own child
//   fds       the child prints its open descriptors that are memfds or name swiftleak
//   child-only  only the child leaks (22)
//   vfork     a vfork child (in the parent's memory) leaves by _exit; the parent leaks 33
//   rawclone  a clone() child without CLONE_VM (no atfork handlers run) leaks 22
//   vforkthreads  a vfork child (in the parent's memory) starts a thread; both allocate and free
//             500,000 blocks at once, then the child leaves by _exit; the parent leaks 33
//   vmclone   a clone(CLONE_VM | SIGCHLD) child (in the parent's memory, but reported to a tracer
//             as a fork, not a clone) ends at once; the parent frees the 3 blocks it allocated
//             before it and leaks 33
//   vforkclone  a clone(CLONE_VFORK | SIGCHLD) child without CLONE_VM (its own copy of the memory;
//             the parent waits, as for a vfork, until it ends: reported to a tracer as a vfork)
//             frees the 100-byte block it inherited and leaks 22; the parent leaks its copy of the
//             100-byte block and 33
//   samesite  the parent allocates (and frees) 55 bytes from one call path, forks, and the child
//             leaks 55 bytes from exactly that path (same return addresses, same stack pointers):
//             the stack the parent's thread knew by heart belongs to the parent's ring, not the child's
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void *volatile sink;

__attribute__((noinline)) static void parent_leak(void) { sink = malloc(33); sink = NULL; }
__attribute__((noinline)) static void child_leak(void) { sink = malloc(22); sink = NULL; }
__attribute__((noinline)) static void grandchild_leak(void) { sink = malloc(44); sink = NULL; }
__attribute__((noinline)) static void before_fork_leak(void) { sink = malloc(11); sink = NULL; }

static int wait_for(pid_t child) {
    int status = 0;
    while (waitpid(child, &status, 0) < 0) {}
    return status;
}

static void *allocating_thread(void *argument) {
    pthread_barrier_t *barrier = argument;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 2000; i++) free(malloc(64 + (size_t)i % 64));
        pthread_barrier_wait(barrier);
    }
    return NULL;
}

__attribute__((noinline)) static void *shared_site(void) { return malloc(55); }

/// Four blocks from shared_site; the last is leaked when `leak` is set.
__attribute__((noinline)) static void shared_rounds(int leak) {
    for (int i = 0; i < 4; i++) {
        void *p = shared_site();
        if (leak && i == 3) {
            sink = p;
            sink = NULL;
        } else {
            free(p);
        }
    }
}

static int raw_child(void *argument) {
    (void)argument;
    child_leak();
    return 0;
}

static void *volatile inherited_block;

/// A child with its own copy of the memory (no CLONE_VM): frees its copy of the inherited block.
static int copy_child(void *argument) {
    (void)argument;
    free(inherited_block);
    inherited_block = NULL;
    child_leak();
    return 0;
}

enum { VFORK_THREAD_PAIRS = 500000 };

static void churn(long pairs) {
    for (long i = 0; i < pairs; i++) {
        void *p = malloc(16 + (size_t)(i % 100));
        sink = p;
        free(p);
    }
}

static void *churning_thread(void *argument) {
    (void)argument;
    churn(VFORK_THREAD_PAIRS);
    return NULL;
}

/// Shares its parent's memory (and thread pointer): no hook, no libc state, only the exit syscall
/// that clone's own code makes when this returns.
static int vm_child(void *argument) {
    (void)argument;
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "both";
    if (strcmp(mode, "both") == 0) {
        char *inherited = malloc(100);
        before_fork_leak();
        pid_t child = fork();
        if (child == 0) {
            child_leak();
            inherited = NULL;
            printf("child\n");
            return 0;
        }
        wait_for(child);
        free(inherited);
        parent_leak();
        printf("parent\n");
    } else if (strcmp(mode, "crash") == 0) {
        pid_t child = fork();
        if (child == 0) {
            child_leak();
            raise(SIGSEGV);
            return 0;
        }
        int status = wait_for(child);
        parent_leak();
        printf("child signal %d\n", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    } else if (strcmp(mode, "orphan") == 0) {
        int fds[2];
        if (pipe(fds) != 0) return 1;
        pid_t child = fork();
        if (child == 0) {
            close(fds[1]);
            char byte;
            while (read(fds[0], &byte, 1) > 0) {}
            child_leak();
            return 0;
        }
        close(fds[0]);
        parent_leak();
        printf("parent leaves first\n");
        fflush(stdout);
        _exit(0); // the write end closes here, and the child goes on
    } else if (strcmp(mode, "threads") == 0) {
        pthread_barrier_t barrier;
        pthread_barrier_init(&barrier, NULL, 3);
        pthread_t threads[2];
        for (int i = 0; i < 2; i++) pthread_create(&threads[i], NULL, allocating_thread, &barrier);
        pthread_barrier_wait(&barrier);
        pid_t child = fork(); // while the threads allocate
        if (child == 0) {
            child_leak();
            return 0;
        }
        pthread_barrier_wait(&barrier);
        for (int i = 0; i < 2; i++) pthread_join(threads[i], NULL);
        wait_for(child);
        parent_leak();
    } else if (strcmp(mode, "nested") == 0) {
        pid_t child = fork();
        if (child == 0) {
            pid_t grandchild = fork();
            if (grandchild == 0) {
                grandchild_leak();
                return 0;
            }
            wait_for(grandchild);
            child_leak();
            return 0;
        }
        wait_for(child);
        parent_leak();
    } else if (strcmp(mode, "fds") == 0) {
        fflush(stdout);
        pid_t child = fork();
        if (child == 0) {
            child_leak();
            DIR *directory = opendir("/proc/self/fd");
            struct dirent *entry;
            while (directory && (entry = readdir(directory)) != NULL) {
                if (entry->d_name[0] == '.') continue;
                char path[300], target[256] = {0};
                snprintf(path, sizeof path, "/proc/self/fd/%s", entry->d_name);
                if (readlink(path, target, sizeof target - 1) < 0) continue;
                // The test runner's own descriptors come and go; swiftleak's would be memfds.
                if (strstr(target, "memfd:") || strstr(target, "swiftleak")) printf("child fd %s: %s\n", entry->d_name, target);
            }
            if (directory) closedir(directory);
            printf("child fds listed\n");
            return 0;
        }
        wait_for(child);
        parent_leak();
    } else if (strcmp(mode, "child-only") == 0) {
        pid_t child = fork();
        if (child == 0) {
            child_leak();
            return 0;
        }
        wait_for(child);
    } else if (strcmp(mode, "vfork") == 0) {
        pid_t child = vfork();
        if (child == 0) _exit(0);
        wait_for(child);
        parent_leak();
    } else if (strcmp(mode, "samesite") == 0) {
        pid_t child = -1;
        for (int round = 0; round < 2; round++) {
            shared_rounds(child == 0); // one call instruction for both processes and both rounds
            if (round == 0) child = fork();
        }
        if (child > 0) wait_for(child);
    } else if (strcmp(mode, "rawclone") == 0) {
        size_t size = 256 * 1024;
        char *stack = malloc(size);
        pid_t child = clone(raw_child, stack + size, SIGCHLD, NULL);
        if (child < 0) return 1;
        wait_for(child);
        free(stack);
        parent_leak();
    } else if (strcmp(mode, "vforkclone") == 0) {
        size_t size = 256 * 1024;
        char *stack = malloc(size);
        inherited_block = malloc(100);
        pid_t child = clone(copy_child, stack + size, CLONE_VFORK | SIGCHLD, NULL);
        if (child < 0) return 1;
        wait_for(child);
        free(stack);
        inherited_block = NULL;
        parent_leak();
    } else if (strcmp(mode, "vforkthreads") == 0) {
        pid_t child = vfork();
        if (child == 0) {
            pthread_t thread;
            if (pthread_create(&thread, NULL, churning_thread, NULL) != 0) _exit(3);
            churn(VFORK_THREAD_PAIRS);
            pthread_join(thread, NULL);
            _exit(0);
        }
        if (wait_for(child) != 0) return 1;
        parent_leak();
    } else if (strcmp(mode, "vmclone") == 0) {
        size_t size = 64 * 1024;
        char *stack = malloc(size);
        void *before[3];
        for (int i = 0; i < 3; i++) before[i] = malloc(70 + (size_t)i);
        pid_t child = clone(vm_child, stack + size, CLONE_VM | SIGCHLD, NULL);
        if (child < 0) return 1;
        wait_for(child);
        for (int i = 0; i < 3; i++) free(before[i]);
        free(stack);
        parent_leak();
    } else {
        fprintf(stderr, "forks: unknown mode %s\n", mode);
        return 2;
    }
    return 0;
}
