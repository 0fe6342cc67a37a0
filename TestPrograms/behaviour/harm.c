// Things a program may do that swiftleak must not disturb or be disturbed by.
// Usage: harm MODE [ARGS]. Each mode leaks one 33-byte block first (so there is something to report)
// and prints what it saw on stdout, for the tests to compare with a native run.
//   fds              the program's open fds above 2 (and what they are), then the fd its first open() returns
//   dup2 PATH        puts PATH on fds 3 and 4, allocates from a frame without unwind information,
//                    writes a line into each and prints nothing; the test reads PATH
//   readfd FD        prints what can be read from FD (an inherited descriptor)
//   env              prints the environment entries swiftleak could have touched (and HARM_*)
//   args ...         prints every argument as escaped bytes
//   dontdump         prints whether swiftleak's mappings in this process (none natively) are dumped
//   quiet-exit CODE  writes nothing to stderr, exits with CODE
//   stop             prints "ready", then echoes stdin
//   term-caught      as stop, but catches SIGTERM and prints "term" for each one (it does not end)
//   pthread-exit     main leaks, starts a thread that leaks, and leaves by pthread_exit
//   min-stack        starts a thread on the smallest stack glibc accepts (PTHREAD_STACK_MIN; glibc
//                    takes the thread's static TLS out of it) that allocates, and prints the result
//   held-main        ignores SIGTERM; main leaves by pthread_exit, another thread then prints its
//                    pid and "main has left" and echoes stdin as stop does
//   forge            writes garbage into swiftleak's ring (found by name in /proc/self/maps)
//   forge-stacks     keeps its only pointer to a block in memory a forged own-stack table claims
//   fifo PATH        forges a module record whose path is PATH (a FIFO), then exits
//   forge-overlap    forges allocations that overlap each other and a real live block
//   tail-back        moves the ring's tail back over positions already used, as two tasks advancing
//                    the lock-free tail at once can (a thread started with CLONE_UNTRACED, which the
//                    tracer never sees), then allocates and frees 1,000 blocks and prints "done"
//   errno-full-ring  stops swiftleak, fills the ring until the hooks sleep on it past their timeout
//                    (a thread continues swiftleak then), and counts the calls that changed errno
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "SwiftLeakEventABI.h"

static void *volatile sink;

static void *allocating_thread(void *argument) {
    for (int i = 0; i < 100; i++) free(malloc(16 + (size_t)i));
    return argument;
}

// Calls fn(arg) from a frame no unwind information covers (as JIT code or hand-written assembly),
// with a frame pointer, as such code often has.
void call_without_unwind_info(void (*fn)(void));
__asm__(".text\n"
        ".globl call_without_unwind_info\n"
        ".type call_without_unwind_info, @function\n"
        "call_without_unwind_info:\n"
        "    pushq %rbp\n"
        "    movq %rsp, %rbp\n"
        "    callq *%rdi\n"
        "    popq %rbp\n"
        "    retq\n"
        ".size call_without_unwind_info, .-call_without_unwind_info\n");

static void allocate_some(void) {
    for (int i = 0; i < 100; i++) free(malloc(16 + i));
}

static void list_fds(void) {
    DIR *dir = opendir("/proc/self/fd");
    int own = dirfd(dir);
    struct dirent *entry;
    int fds[256], count = 0;
    while ((entry = readdir(dir)) != NULL && count < 256) {
        if (!isdigit((unsigned char)entry->d_name[0])) continue;
        int fd = atoi(entry->d_name);
        if (fd > 2 && fd != own) fds[count++] = fd;
    }
    closedir(dir);
    for (int i = 0; i < count; i++) {
        char path[64], target[256];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fds[i]);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n > 0 ? n : 0] = 0;
        printf("open fd %d: %s\n", fds[i], target);
    }
}

static void print_escaped(const char *s) {
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c >= 0x20 && *c < 0x7f && *c != '\\') putchar(*c);
        else printf("\\x%02x", *c);
    }
}

/// Finds swiftleak's ring mapping in this process; NULL natively.
static swl_ring_header *find_ring(void) {
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    void *found = NULL;
    while (fgets(line, sizeof line, maps)) {
        if (strstr(line, "/memfd:" SWL_RING_MEMFD_NAME) == NULL) continue;
        found = (void *)(uintptr_t)strtoull(line, NULL, 16);
        break;
    }
    fclose(maps);
    return found;
}

/// Publishes one event in the ring exactly as the interposer would, with whatever content.
static void forge_event(swl_ring_header *ring, uint64_t address, uint64_t info, uint32_t stack) {
    uint64_t pos = __atomic_fetch_add(&ring->tail, 1, __ATOMIC_RELAXED);
    uint64_t index = pos & (ring->capacity - 1);
    swl_event *slot = &swl_ring_slots(ring)[index];
    while (swl_slot_sequence(slot, index) != pos) usleep(1000);
    slot->address = address;
    slot->info = info;
    slot->stack = stack;
    slot->thread = 1;
    swl_slot_set_sequence(slot, index, pos + 1);
}

/// Appends a record to the store and returns its id.
static uint32_t forge_record(swl_ring_header *ring, const void *bytes, uint64_t length) {
    uint64_t rounded = (length + 7) & ~(uint64_t)7;
    uint64_t offset = __atomic_fetch_add(&ring->store_used, rounded, __ATOMIC_RELAXED);
    memcpy(swl_ring_store(ring) + offset, bytes, length);
    return (uint32_t)(offset / 8);
}

static void forge(swl_ring_header *ring) {
    // Stack records that lie about their depth, and events that name nonsense.
    swl_stack_record deep = {.next = 0, .hash = 1, .depth = 0xffffffffu, .kind = SWL_RECORD_STACK};
    uint32_t deep_id = forge_record(ring, &deep, sizeof deep);
    struct {
        swl_module_record record;
        char path[16];
    } module = {{.path_length = 0xfffffff0u, .kind = SWL_RECORD_MODULE, .load_bias = 1, .start = 2, .end = 1}, "x"};
    uint32_t module_id = forge_record(ring, &module, sizeof module);
    forge_event(ring, 0, swl_event_info(SWL_EVENT_ALLOC, SWL_FN_MALLOC, 16), 0);
    forge_event(ring, 0x1000, swl_event_info(SWL_EVENT_ALLOC, 200, SWL_SIZE_MASK), deep_id);
    forge_event(ring, 0x2000, swl_event_info(SWL_EVENT_ALLOC, SWL_FN_MALLOC, 8), 0xfffffff0u);
    forge_event(ring, 0x3000, swl_event_info(SWL_EVENT_FREE, 250, 0), 0);
    forge_event(ring, 1, swl_event_info(SWL_EVENT_MODULE_LOAD, 0, 0), module_id);
    forge_event(ring, 1, swl_event_info(SWL_EVENT_MODULE_LOAD, 0, 0), 0xfffffff0u);
    forge_event(ring, 1, swl_event_info(SWL_EVENT_MODULE_UNLOAD, 0, 0), 12345);
    forge_event(ring, 1, (uint64_t)0xee << 56, 7);
    // Header fields the recorder must not trust: where the ring is, how big, how far it was used.
    ring->capacity = 3;
    ring->ring_offset = 1ull << 40;
    ring->store_size = ~0ull;
    ring->store_used = ~0ull - 4;
    ring->total_size = 1;
    // A reservation far ahead that nobody will publish: draining to it must not hang.
    __atomic_fetch_add(&ring->tail, 1ull << 40, __ATOMIC_RELAXED);
}

static void forge_fifo_module(swl_ring_header *ring, const char *path) {
    size_t length = strlen(path);
    uint8_t buffer[sizeof(swl_module_record) + 4096];
    swl_module_record *record = (swl_module_record *)buffer;
    memset(record, 0, sizeof *record);
    record->kind = SWL_RECORD_MODULE;
    record->load_bias = 0x10000;
    record->start = 0x10000;
    record->end = 0x20000;
    record->path_length = (uint32_t)length;
    memcpy(record->data, path, length);
    uint32_t id = forge_record(ring, buffer, sizeof *record + length);
    forge_event(ring, 0x10000, swl_event_info(SWL_EVENT_MODULE_LOAD, 0, 0), id);
}

/// Says "ready", then echoes each line of input, so a test can stop, signal or talk to the
/// program at a moment it knows, without sleeping.
static void echo_input_after_ready(void) {
    printf("ready\n");
    fflush(stdout);
    char buffer[256];
    while (fgets(buffer, sizeof buffer, stdin)) {
        fputs(buffer, stdout);
        fflush(stdout);
    }
}

static void note_term(int signal) {
    (void)signal;
    (void)!write(1, "term\n", 5);
}

static void *leaking_thread(void *argument) {
    (void)argument;
    sink = malloc(44);
    sink = NULL;
    return NULL;
}

/// held-main's second thread: once main has left (natively a zombie; under swiftleak held at its
/// exit stop, "t"), says so and reads its input.
static int32_t g_recorder_pid;
static char g_main_syscall_path[64];
static volatile int g_recorder_continued, g_waker_running;

/// Waits (without allocating) until the main thread sleeps in futex, which it only does on a full
/// ring, keeps swiftleak stopped past the hooks' 100 ms sleep, then continues it.
static void *continue_recorder_when_waiting(void *argument) {
    (void)argument;
    g_waker_running = 1;
    for (;;) {
        char buffer[32] = {0};
        int fd = open(g_main_syscall_path, O_RDONLY);
        ssize_t got = fd >= 0 ? read(fd, buffer, sizeof buffer - 1) : -1;
        if (fd >= 0) close(fd);
        if (got > 0 && atol(buffer) == SYS_futex) break;
        usleep(1000);
    }
    struct timespec past_timeout = {.tv_sec = 0, .tv_nsec = 350 * 1000 * 1000};
    nanosleep(&past_timeout, NULL);
    kill(g_recorder_pid, SIGCONT);
    g_recorder_continued = 1;
    return NULL;
}

static void *echo_after_main_left(void *argument) {
    (void)argument;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)getpid());
    for (;;) {
        char text[512] = {0};
        FILE *stat = fopen(path, "r");
        if (stat == NULL) break;
        size_t length = fread(text, 1, sizeof text - 1, stat);
        fclose(stat);
        text[length] = 0;
        const char *name_end = strrchr(text, ')');
        char state = name_end && name_end[1] ? name_end[2] : 0;
        if (state == 'Z' || state == 't' || state == 'X') break;
        usleep(1000);
    }
    printf("pid %d\nmain has left\n", (int)getpid());
    echo_input_after_ready();
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "fds";
    // Test runners hand their signal mask down (Foundation's Process keeps it): start clean, so a
    // signal forwarded to us acts as it would on a program started from a shell.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    sink = malloc(33);
    sink = NULL;
    if (strcmp(mode, "fds") == 0) {
        list_fds();
        int fd = open("/dev/null", O_RDONLY);
        printf("first open: %d\n", fd);
    } else if (strcmp(mode, "dup2") == 0 && argc > 2) {
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd != 3) dup2(fd, 3);
        dup2(3, 4);
        if (fd != 3 && fd != 4) close(fd);
        call_without_unwind_info(allocate_some);
        dprintf(3, "line written to fd 3\n");
        dprintf(4, "line written to fd 4\n");
        close(3);
        close(4);
        printf("done\n");
    } else if (strcmp(mode, "readfd") == 0 && argc > 2) {
        char buffer[256];
        ssize_t n = read(atoi(argv[2]), buffer, sizeof buffer - 1);
        if (n < 0) {
            perror("read");
            return 1;
        }
        buffer[n] = 0;
        printf("read: %s\n", buffer);
    } else if (strcmp(mode, "env") == 0) {
        extern char **environ;
        for (char **e = environ; *e; e++) {
            if (strncmp(*e, "SWIFTLEAK", 9) == 0 || strncmp(*e, "LD_PRELOAD", 10) == 0 || strncmp(*e, "HARM_", 5) == 0) {
                print_escaped(*e);
                printf("\n");
            }
        }
        printf("end of environment\n");
    } else if (strcmp(mode, "args") == 0) {
        printf("%d arguments\n", argc);
        // Only the first and last few: the long-argv test passes thousands.
        for (int i = 0; i < argc; i++) {
            if (i >= 8 && i < argc - 2) continue;
            printf("[%d] ", i);
            print_escaped(argv[i]);
            printf("\n");
        }
    } else if (strcmp(mode, "dontdump") == 0) {
        // The ring by its name; the own stacks (anonymous) by the areas the ring's table lists.
        swl_ring_header *ring = find_ring();
        FILE *smaps = fopen("/proc/self/smaps", "r");
        char line[512];
        const char *ours = NULL;
        while (fgets(line, sizeof line, smaps)) {
            if (strchr(line, '-') && strchr(line, ' ') > strchr(line, '-') && isxdigit((unsigned char)line[0])) {
                uint64_t start = strtoull(line, NULL, 16);
                ours = strstr(line, "/memfd:" SWL_RING_MEMFD_NAME) != NULL ? "ring" : NULL;
                for (unsigned i = 0; ring && i < SWL_OWN_STACK_AREAS; i++) {
                    swl_own_stack_area area = swl_own_stack_table(ring)[i];
                    if (area.start && area.start <= start && start < area.end) ours = strstr(line, " rw-p ") ? "stack" : "stack guard";
                }
            } else if (ours && strncmp(line, "VmFlags:", 8) == 0) {
                printf("swiftleak %s dumped: %s\n", ours, strstr(line, " dd") ? "no" : "yes");
            }
        }
        fclose(smaps);
        printf("end of mappings\n");
    } else if (strcmp(mode, "quiet-exit") == 0) {
        printf("exiting quietly\n");
        return argc > 2 ? atoi(argv[2]) : 0;
    } else if (strcmp(mode, "stop") == 0) {
        echo_input_after_ready();
    } else if (strcmp(mode, "term-caught") == 0) {
        struct sigaction on_term = {0};
        on_term.sa_handler = note_term;
        on_term.sa_flags = SA_RESTART;
        sigaction(SIGTERM, &on_term, NULL);
        echo_input_after_ready();
    } else if (strcmp(mode, "pthread-exit") == 0) {
        pthread_t thread;
        pthread_create(&thread, NULL, leaking_thread, NULL);
        printf("main leaves by pthread_exit\n");
        fflush(stdout);
        pthread_exit(NULL);
    } else if (strcmp(mode, "min-stack") == 0) {
        pthread_attr_t attributes;
        pthread_attr_init(&attributes);
        int set = pthread_attr_setstacksize(&attributes, PTHREAD_STACK_MIN);
        pthread_t thread;
        int created = pthread_create(&thread, &attributes, allocating_thread, NULL);
        if (created == 0) pthread_join(thread, NULL);
        printf("stack size %d, thread %d\n", set, created);
    } else if (strcmp(mode, "held-main") == 0) {
        signal(SIGTERM, SIG_IGN);
        pthread_t thread;
        pthread_create(&thread, NULL, echo_after_main_left, NULL);
        pthread_exit(NULL);
    } else if (strcmp(mode, "forge") == 0) {
        swl_ring_header *ring = find_ring();
        printf("forged\n");
        fflush(stdout);
        if (ring) forge(ring);
        // No allocation after the forged tail: the interposer would wait for ever for a slot the
        // recorder never frees (the program only harms itself there); leave at once instead.
        _exit(0);
    } else if (strcmp(mode, "tail-back") == 0) {
        swl_ring_header *ring = find_ring();
        for (int i = 0; i < 16; i++) free(malloc(24));
        // The interposer's single-producer path is a load and a store: a second task's
        // reservations between them are overwritten, and the positions they took are taken again.
        if (ring) __atomic_store_n(&ring->tail, __atomic_load_n(&ring->tail, __ATOMIC_RELAXED) - 8, __ATOMIC_RELAXED);
        for (int i = 0; i < 1000; i++) {
            sink = malloc(24);
            free(sink);
        }
        sink = NULL;
        printf("done\n");
    } else if (strcmp(mode, "forge-stacks") == 0) {
        // The only pointer to a 48-byte block sits in the program's own anonymous memory, which a
        // forged own-stack table entry claims is swiftleak's: the block must stay reachable.
        // The claimed area is reserved whole (nothing of ours overlaps it); 3 MiB of it are the
        // program's read-write memory, not shaped like a stack of ours.
        unsigned entry = 3;
        uint64_t bytes = ((uint64_t)SWL_OWN_STACK_FIRST_AREA_SLOTS << entry) * SWL_OWN_STACK_SLOT_SIZE;
        char *own = mmap(NULL, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        mprotect(own + (1 << 20), 3 << 20, PROT_READ | PROT_WRITE);
        void **slot = (void **)(own + (1 << 20) + 4096);
        *slot = malloc(48);
        swl_ring_header *ring = find_ring();
        if (ring) {
            swl_own_stack_area *table = swl_own_stack_table(ring);
            table[entry].end = (uint64_t)(uintptr_t)own + bytes;
            table[entry].start = (uint64_t)(uintptr_t)own;
            table[entry + 1].start = 4096; // and one of the wrong size
            table[entry + 1].end = 8192;
        }
        printf("forged the own-stack table\n");
    } else if (strcmp(mode, "forge-overlap") == 0) {
        // Well-formed allocation events no allocator could have made: one that covers a real
        // reachable block from 16 bytes before it, and two (in unmapped memory) over each other.
        char *real = malloc(64);
        sink = real;
        swl_ring_header *ring = find_ring();
        if (ring) {
            forge_event(ring, (uint64_t)(uintptr_t)real - 16, swl_event_info(SWL_EVENT_ALLOC, SWL_FN_MALLOC, 256), 0);
            forge_event(ring, 0x10000000, swl_event_info(SWL_EVENT_ALLOC, SWL_FN_MALLOC, 200), 0);
            forge_event(ring, 0x10000040, swl_event_info(SWL_EVENT_ALLOC, SWL_FN_MALLOC, 48), 0);
        }
        printf("forged overlapping blocks\n");
    } else if (strcmp(mode, "errno-full-ring") == 0) {
        swl_ring_header *ring = find_ring();
        long pairs = 1000;
        pthread_t waker;
        if (ring) {
            pairs = (long)ring->capacity; // twice the ring's events: it fills while swiftleak is stopped
            g_recorder_pid = ring->recorder_pid;
            snprintf(g_main_syscall_path, sizeof g_main_syscall_path, "/proc/self/task/%ld/syscall", (long)syscall(SYS_gettid));
            pthread_create(&waker, NULL, continue_recorder_when_waiting, NULL);
            // A new thread starts only when swiftleak (its tracer) lets it: stopping swiftleak
            // before then would leave nobody to continue it.
            while (!g_waker_running) usleep(1000);
            kill(g_recorder_pid, SIGSTOP);
        }
        int by_malloc = 0, by_free = 0;
        for (long i = 0; i < pairs; i++) {
            errno = 4242;
            void *volatile block = malloc(24);
            if (errno != 4242) by_malloc++;
            errno = 4242;
            free(block);
            if (errno != 4242) by_free++;
        }
        if (ring) pthread_join(waker, NULL);
        printf("errno changed by malloc: %d, by free: %d; swiftleak continued: %d\n", by_malloc, by_free,
               g_recorder_continued);
    } else if (strcmp(mode, "fifo") == 0 && argc > 2) {
        swl_ring_header *ring = find_ring();
        if (ring) forge_fifo_module(ring, argv[2]);
        printf("forged a module at %s\n", argv[2]);
    } else {
        fprintf(stderr, "harm: unknown mode %s\n", mode);
        return 2;
    }
    return 0;
}
