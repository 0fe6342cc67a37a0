#ifndef _GNU_SOURCE
#error "_GNU_SOURCE must be set by Package.swift"
#endif

#include "CSwiftLeakSys.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

_Static_assert(sizeof(struct user_regs_struct) == 27 * sizeof(uint64_t), "x86_64 register file is 27 words");

// MARK: - Ring

swl_ring_header *swl_ring_create(uint64_t capacity, uint32_t bucket_count, uint64_t store_size,
                                 uint32_t max_frames, int32_t recorder_pid, int *fd_out) {
    if (capacity == 0 || (capacity & (capacity - 1)) != 0 || bucket_count == 0 ||
        (bucket_count & (bucket_count - 1)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    uint64_t ring_offset, buckets_offset, store_offset;
    uint64_t total = swl_ring_layout(capacity, bucket_count, store_size, &ring_offset, &buckets_offset, &store_offset);
    int fd = memfd_create(SWL_RING_MEMFD_NAME, MFD_CLOEXEC);
    if (fd < 0) return NULL;
    if (ftruncate(fd, (off_t)total) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    void *memory = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (memory == MAP_FAILED) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    // Not in swiftleak's own core file either (4 GiB of mostly untouched store).
    madvise(memory, total, MADV_DONTDUMP);
    swl_ring_header *h = memory;
    h->magic = SWL_ABI_MAGIC;
    h->version = SWL_ABI_VERSION;
    h->header_size = sizeof(swl_ring_header);
    h->traced_pid = 0;
    h->recorder_pid = recorder_pid;
    h->max_frames = max_frames;
    h->bucket_count = bucket_count;
    h->capacity = capacity;
    h->ring_offset = ring_offset;
    h->buckets_offset = buckets_offset;
    h->store_offset = store_offset;
    h->store_size = store_size;
    h->total_size = total;
    h->tail = 0;
    h->head = 0;
    h->store_used = 16; // id 0 (and the first record slot) mean "none"
    // The tracer clears it at the first thread (swl_ring_set_multiple_producers).
    h->single_producer = 1;
    // The slots are left as the fresh memfd has them, zero: free for the first lap (see
    // swl_slot_sequence).
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    *fd_out = fd;
    return h;
}

void swl_ring_destroy(swl_ring_header *ring, uint64_t total_size) {
    if (ring) munmap(ring, total_size);
}

void swl_ring_reader_init(swl_ring_reader *reader, swl_ring_header *ring) {
    reader->header = ring;
    reader->slots = swl_ring_slots(ring);
    reader->capacity = ring->capacity;
    reader->head = 0;
}

/// After slots were freed: wakes the writers that wait for room, if any.
static void swl_ring_wake_writers(swl_ring_header *h) {
    // Pairs with the producer's increment-then-check in swl_wait_for_slot (Dekker style).
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&h->producers_waiting, __ATOMIC_SEQ_CST) != 0) {
        __atomic_fetch_add(&h->space_epoch, 1, __ATOMIC_SEQ_CST);
        syscall(SYS_futex, &h->space_epoch, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
    }
}

size_t swl_ring_consume(swl_ring_reader *reader, swl_event *out, size_t max, bool skip_unpublished, uint64_t *skipped) {
    swl_ring_header *h = reader->header;
    swl_event *slots = reader->slots;
    uint64_t capacity = reader->capacity, mask = capacity - 1;
    uint64_t head = reader->head;
    uint64_t tail = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
    size_t count = 0;
    uint64_t skipped_here = 0;
    bool freed = false;
    while (count < max && head < tail) {
        swl_event *slot = &slots[head & mask];
        uint64_t sequence = swl_slot_sequence(slot, head & mask);
        if (sequence != head + 1) {
            // At most one ring's worth per call: a forged tail far ahead must not keep us here.
            if (!skip_unpublished || skipped_here == capacity) break;
            skipped_here++;
            if (sequence == head) {
                // Reserved by a writer that will never publish: free it for good measure.
                swl_slot_set_sequence(slot, head & mask, head + capacity);
            }
            head++;
            continue;
        }
        out[count++] = *slot;
        swl_slot_set_sequence(slot, head & mask, head + capacity);
        head++;
        freed = true;
    }
    if (skipped) *skipped += skipped_here;
    reader->head = head;
    __atomic_store_n(&h->head, head, __ATOMIC_RELEASE);
    if (freed) swl_ring_wake_writers(h);
    return count;
}

size_t swl_ring_peek(swl_ring_reader *reader, size_t max, const swl_event **first) {
    swl_ring_header *h = reader->header;
    uint64_t capacity = reader->capacity, mask = capacity - 1;
    uint64_t head = reader->head;
    uint64_t tail = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
    // Contiguous slots only, none past the ring's end; and none past the tail (the program's
    // word: a forged one is bounded by the ring's end all the same).
    uint64_t limit = capacity - (head & mask);
    if (max < limit) limit = max;
    uint64_t reserved = tail > head ? tail - head : 0;
    if (reserved < limit) limit = reserved;
    const swl_event *slots = &reader->slots[head & mask];
    size_t count = 0;
    while (count < limit && swl_slot_sequence(&slots[count], (head + count) & mask) == head + count + 1) count++;
    *first = slots;
    return count;
}

void swl_ring_release(swl_ring_reader *reader, size_t count) {
    if (count == 0) return;
    swl_ring_header *h = reader->header;
    uint64_t capacity = reader->capacity, mask = capacity - 1;
    uint64_t head = reader->head;
    for (size_t i = 0; i < count; i++) {
        swl_slot_set_sequence(&reader->slots[(head + i) & mask], (head + i) & mask, head + i + capacity);
    }
    head += count;
    reader->head = head;
    __atomic_store_n(&h->head, head, __ATOMIC_RELEASE);
    swl_ring_wake_writers(h);
}

uint64_t swl_ring_reserved_ahead(const swl_ring_reader *reader) {
    uint64_t tail = __atomic_load_n(&reader->header->tail, __ATOMIC_ACQUIRE);
    return tail > reader->head ? tail - reader->head : 0;
}

uint64_t swl_ring_store_used(swl_ring_header *h) { return __atomic_load_n(&h->store_used, __ATOMIC_ACQUIRE); }
const void *swl_ring_store_base(swl_ring_header *h) { return swl_ring_store(h); }
uint64_t swl_ring_store_capacity(swl_ring_header *h) { return h->store_size; }
void swl_ring_allocator_state(swl_ring_header *h, uint64_t *start, uint64_t *end) {
    *start = h->allocator_state_start;
    *end = h->allocator_state_end;
}
void swl_ring_exit_caller(swl_ring_header *h, uint64_t *stack_pointer, uint32_t *tid, uint64_t registers[6]) {
    *stack_pointer = __atomic_load_n(&h->exit_caller_sp, __ATOMIC_ACQUIRE);
    *tid = __atomic_load_n(&h->exit_caller_tid, __ATOMIC_ACQUIRE);
    for (int i = 0; i < 6; i++) registers[i] = __atomic_load_n(&h->exit_caller_registers[i], __ATOMIC_RELAXED);
}
uint32_t swl_ring_own_stack_areas(swl_ring_header *h, uint64_t starts[SWL_OWN_STACK_AREAS], uint64_t ends[SWL_OWN_STACK_AREAS]) {
    swl_own_stack_area *table = swl_own_stack_table(h);
    for (uint32_t i = 0; i < SWL_OWN_STACK_AREAS; i++) {
        starts[i] = __atomic_load_n(&table[i].start, __ATOMIC_ACQUIRE);
        ends[i] = __atomic_load_n(&table[i].end, __ATOMIC_RELAXED);
    }
    return SWL_OWN_STACK_AREAS;
}
uint32_t swl_ring_foreign_malloc(swl_ring_header *h) { return __atomic_load_n(&h->foreign_malloc, __ATOMIC_ACQUIRE); }
uint32_t swl_ring_attached(swl_ring_header *h) { return __atomic_load_n(&h->attached, __ATOMIC_ACQUIRE); }
uint32_t swl_ring_exiting(swl_ring_header *h) { return __atomic_load_n(&h->exiting, __ATOMIC_ACQUIRE); }
uint32_t swl_ring_disabled(swl_ring_header *h) { return __atomic_load_n(&h->disabled, __ATOMIC_ACQUIRE); }
void swl_ring_set_multiple_producers(swl_ring_header *h) { __atomic_store_n(&h->single_producer, 0, __ATOMIC_SEQ_CST); }
uint32_t swl_ring_single_producer(swl_ring_header *h) { return __atomic_load_n(&h->single_producer, __ATOMIC_ACQUIRE); }
void swl_ring_set_traced_pid(swl_ring_header *h, int32_t pid) {
    __atomic_store_n(&h->traced_pid, pid, __ATOMIC_RELEASE);
}

uint64_t swl_ring_state_address(swl_ring_header *h) { return __atomic_load_n(&h->state_address, __ATOMIC_ACQUIRE); }

bool swl_ring_offer_to_child(swl_ring_header *parent, int32_t child, int32_t fd) {
    swl_fork_offer *table = swl_fork_table(parent);
    for (uint32_t i = 0; i < SWL_FORK_TABLE_ENTRIES; i++) {
        if (__atomic_load_n(&table[i].child_pid, __ATOMIC_ACQUIRE) != 0) continue;
        __atomic_store_n(&table[i].fd, fd, __ATOMIC_RELAXED);
        __atomic_store_n(&table[i].child_pid, child, __ATOMIC_RELEASE);
        return true;
    }
    return false;
}

void swl_ring_withdraw_offer(swl_ring_header *parent, int32_t child) {
    swl_fork_offer *table = swl_fork_table(parent);
    for (uint32_t i = 0; i < SWL_FORK_TABLE_ENTRIES; i++) {
        if (__atomic_load_n(&table[i].child_pid, __ATOMIC_ACQUIRE) == child) {
            __atomic_store_n(&table[i].child_pid, 0, __ATOMIC_RELEASE);
        }
    }
}

// MARK: - Launch

/// What the tracer asks to hear about: every thread's exit (the exit scan), new threads, execs.
static const long swl_trace_options = PTRACE_O_TRACEEXIT | PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC |
                                      PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK;

pid_t swl_spawn_traced(const char *path, char *const argv[], char *const shell_argv[], char *const envp[],
                       int *error_pipe) {
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(pipe_fds[0]);
        close(pipe_fds[1]);
        errno = e;
        return -1;
    }
    if (pid == 0) {
        // Child: async-signal-safe calls only from here on. Stop until the parent has seized us.
        close(pipe_fds[0]);
        raise(SIGSTOP);
        execve(path, argv, envp);
        // As execvp: a file the kernel does not know how to run is a shell script without #!.
        if (errno == ENOEXEC) execve("/bin/sh", shell_argv, envp);
        int e = errno;
        (void)!write(pipe_fds[1], &e, sizeof e);
        _exit(127);
    }
    close(pipe_fds[1]);
    int status;
    pid_t waited;
    do {
        waited = waitpid(pid, &status, WUNTRACED);
    } while (waited < 0 && errno == EINTR);
    int e = 0;
    if (waited != pid || !WIFSTOPPED(status)) {
        e = ECHILD;
    } else if (ptrace(PTRACE_SEIZE, pid, NULL, (void *)swl_trace_options) != 0) {
        // PTRACE_SEIZE (not TRACEME): only a seized tracee can be left in a group-stop with
        // PTRACE_LISTEN, which a SIGSTOP sent to the program needs.
        e = errno;
    }
    if (e != 0) {
        close(pipe_fds[0]);
        if (waited == pid && WIFSTOPPED(status)) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, __WALL);
        }
        errno = e;
        return -1;
    }
    *error_pipe = pipe_fds[0];
    return pid;
}

int swl_spawn_finish(pid_t pid, int error_pipe) {
    // The child is in the group-stop of its raise(SIGSTOP), now seen by us as a tracer: wait for
    // that report and resume it from there (PTRACE_CONT ends a tracee's group-stop; a SIGCONT
    // would stop it again for its delivery while we wait on the pipe).
    int status;
    pid_t waited;
    do {
        waited = waitpid(pid, &status, __WALL);
    } while (waited < 0 && errno == EINTR);
    if (waited != pid || !WIFSTOPPED(status) || ptrace(PTRACE_CONT, pid, NULL, NULL) != 0) {
        int e = waited == pid ? errno : ECHILD;
        close(error_pipe);
        kill(pid, SIGKILL);
        waitpid(pid, &status, __WALL);
        return e != 0 ? e : ECHILD;
    }
    int exec_errno = 0;
    ssize_t n;
    do {
        n = read(error_pipe, &exec_errno, sizeof exec_errno);
    } while (n < 0 && errno == EINTR);
    close(error_pipe);
    if (n == sizeof exec_errno) {
        // The exec failed and the child is on its way out (it stops once more at its exit).
        for (;;) {
            pid_t w = waitpid(pid, &status, __WALL);
            if (w < 0 && errno == EINTR) continue;
            if (w < 0 || WIFEXITED(status) || WIFSIGNALED(status)) break;
            ptrace(PTRACE_CONT, pid, NULL, NULL);
        }
        return exec_errno != 0 ? exec_errno : ENOEXEC;
    }
    return 0;
}

// MARK: - ptrace

long swl_ptrace_cont(pid_t tid, int signal) { return ptrace(PTRACE_CONT, tid, NULL, (void *)(long)signal); }
long swl_ptrace_detach(pid_t tid, int signal) { return ptrace(PTRACE_DETACH, tid, NULL, (void *)(long)signal); }
long swl_ptrace_listen(pid_t tid) { return ptrace(PTRACE_LISTEN, tid, NULL, NULL); }
long swl_ptrace_set_stack_pointer(pid_t tid, uint64_t stack_pointer) {
    return ptrace(PTRACE_POKEUSER, tid, (void *)offsetof(struct user_regs_struct, rsp), (void *)(uintptr_t)stack_pointer);
}

long swl_ptrace_geteventmsg(pid_t tid, unsigned long *message) {
    return ptrace(PTRACE_GETEVENTMSG, tid, NULL, message);
}

long swl_ptrace_getsiginfo(pid_t tid, int *signo, int *code) {
    siginfo_t info;
    long rc = ptrace(PTRACE_GETSIGINFO, tid, NULL, &info);
    if (rc == 0) {
        *signo = info.si_signo;
        *code = info.si_code;
    }
    return rc;
}

int swl_ptrace_getregs(pid_t tid, uint64_t *words, int capacity, uint64_t *stack_pointer) {
    struct user_regs_struct regs;
    if (ptrace(PTRACE_GETREGS, tid, NULL, &regs) != 0) return -1;
    int count = (int)(sizeof regs / sizeof(uint64_t));
    if (count > capacity) count = capacity;
    memcpy(words, &regs, (size_t)count * sizeof(uint64_t));
    *stack_pointer = regs.rsp;
    return count;
}

static volatile sig_atomic_t g_termination_signal;
static volatile sig_atomic_t g_termination_count;
static volatile pid_t g_tracer_tid;

bool swl_clone_flags(pid_t tid, bool *is_thread, bool *shares_memory) {
    struct user_regs_struct regs;
    if (ptrace(PTRACE_GETREGS, tid, NULL, &regs) != 0) return false;
    uint64_t flags;
    if (regs.orig_rax == SYS_clone) {
        flags = regs.rdi;
    } else if (regs.orig_rax == SYS_clone3) {
        // struct clone_args starts with its 64-bit flags.
        if (swl_read_process_memory(tid, regs.rdi, &flags, sizeof flags) != sizeof flags) return false;
    } else {
        return false;
    }
    *is_thread = (flags & CLONE_THREAD) != 0;
    *shares_memory = (flags & CLONE_VM) != 0;
    return true;
}

uint64_t swl_thread_involuntary_switches(void) {
    struct rusage usage;
    if (getrusage(RUSAGE_THREAD, &usage) != 0) return 0;
    return (uint64_t)usage.ru_nivcsw;
}

pid_t swl_thread_group_of(pid_t tid) {
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%d/status", (int)tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) return -1;
    text[n] = 0;
    const char *line = strstr(text, "\nTgid:");
    return line ? (pid_t)strtol(line + 6, NULL, 10) : -1;
}

int swl_poke_int32(pid_t tid, uint64_t address, int32_t value) {
    uint64_t aligned = address & ~(uint64_t)7;
    errno = 0;
    long word = ptrace(PTRACE_PEEKDATA, tid, (void *)aligned, NULL);
    if (word == -1 && errno != 0) return -1;
    uint64_t updated = (uint64_t)word;
    unsigned shift = (unsigned)(address - aligned) * 8;
    if (shift > 32) return -1;
    updated &= ~((uint64_t)0xffffffffu << shift);
    updated |= (uint64_t)(uint32_t)value << shift;
    return ptrace(PTRACE_POKEDATA, tid, (void *)aligned, (void *)updated) == 0 ? 0 : -1;
}

pid_t swl_wait_any(int *status, bool block) {
    pid_t pid;
    do {
        pid = waitpid(-1, status, __WALL | (block ? 0 : WNOHANG));
        // A termination request interrupts the wait (its handlers have no SA_RESTART, and one
        // running on another thread wakes this one): the tracer decides what to do about it.
    } while (pid < 0 && errno == EINTR && g_termination_count == 0);
    return pid;
}

int swl_termination_signal(void) { return g_termination_signal; }
int swl_termination_count(void) { return g_termination_count; }

bool swl_wifexited(int status) { return WIFEXITED(status); }
bool swl_wifsignaled(int status) { return WIFSIGNALED(status); }
bool swl_wifstopped(int status) { return WIFSTOPPED(status); }
int swl_wexitstatus(int status) { return WEXITSTATUS(status); }
int swl_wtermsig(int status) { return WTERMSIG(status); }
int swl_wstopsig(int status) { return WSTOPSIG(status); }
int swl_wstopevent(int status) { return (status >> 16) & 0xff; }
bool swl_wcoredump(int status) { return WCOREDUMP(status); }

// MARK: - Signals

static volatile pid_t g_forward_to;

/// Sent to the tracing thread when a termination request was handled on another thread, only to
/// interrupt its wait.
#define SWL_WAKE_SIGNAL (SIGRTMIN + 3)

static void swl_wake_handler(int signal) { (void)signal; }

/// SIGTERM, SIGHUP, SIGINT and SIGQUIT ask swiftleak to end: the tracer must hear of it even when
/// the program cannot act on it (held at a stop of ours), so that swiftleak never waits for ever.
static void swl_note_termination(int signal) {
    g_termination_signal = signal;
    g_termination_count = g_termination_count + 1;
    pid_t tracer = g_tracer_tid;
    if (tracer > 0 && (pid_t)syscall(SYS_gettid) != tracer) syscall(SYS_tgkill, getpid(), tracer, SWL_WAKE_SIGNAL);
}

static void swl_forward_signal(int signal) {
    int saved = errno;
    if (g_forward_to > 0) kill(g_forward_to, signal);
    if (signal == SIGTERM || signal == SIGHUP) swl_note_termination(signal);
    errno = saved;
}

/// SIGINT and SIGQUIT typed at the terminal reach the whole foreground process group, the program
/// included: swiftleak's own copy (from the kernel) is dropped. Sent to swiftleak alone by another
/// process (kill -INT), they are passed on.
static void swl_forward_if_sent_by_a_process(int signal, siginfo_t *info, void *context) {
    (void)context;
    int saved = errno;
    if (info != NULL && info->si_code <= 0) swl_forward_signal(signal);
    swl_note_termination(signal);
    errno = saved;
}

void swl_signals_forward_to(pid_t child) {
    g_forward_to = child;
    g_tracer_tid = (pid_t)syscall(SYS_gettid);
    struct sigaction old;
    struct sigaction wake = {0};
    wake.sa_handler = swl_wake_handler;
    sigemptyset(&wake.sa_mask);
    sigaction(SWL_WAKE_SIGNAL, &wake, NULL);
    struct sigaction keyboard = {0};
    keyboard.sa_sigaction = swl_forward_if_sent_by_a_process;
    // No SA_RESTART: the tracer's wait must return to look at the request (see swl_wait_any).
    keyboard.sa_flags = SA_SIGINFO;
    sigemptyset(&keyboard.sa_mask);
    const int keyboard_signals[] = {SIGINT, SIGQUIT};
    for (size_t i = 0; i < sizeof keyboard_signals / sizeof keyboard_signals[0]; i++) {
        // Replaces the Swift runtime's crash handler too (it catches SIGQUIT and would print a
        // backtrace of swiftleak and wait at a prompt); an ignored signal stays ignored.
        sigaction(keyboard_signals[i], NULL, &old);
        if (old.sa_handler != SIG_IGN) sigaction(keyboard_signals[i], &keyboard, NULL);
    }
    // A report written to a closed pipe fails with EPIPE (and says so); it must not kill swiftleak
    // and replace the program's exit status with 141. The program was forked before this and keeps
    // its own disposition.
    signal(SIGPIPE, SIG_IGN);
    struct sigaction forward = {0};
    forward.sa_handler = swl_forward_signal;
    forward.sa_flags = SA_RESTART;
    sigemptyset(&forward.sa_mask);
    const int forwarded[] = {SIGTERM, SIGHUP, SIGUSR1, SIGUSR2};
    sigset_t unblock;
    sigemptyset(&unblock);
    sigaddset(&unblock, SIGINT);
    sigaddset(&unblock, SIGQUIT);
    sigaddset(&unblock, SWL_WAKE_SIGNAL);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) {
        sigaction(forwarded[i], NULL, &old);
        // The termination requests interrupt the tracer's wait (no SA_RESTART, as above).
        forward.sa_flags = (forwarded[i] == SIGTERM || forwarded[i] == SIGHUP) ? 0 : SA_RESTART;
        if (old.sa_handler != SIG_IGN) sigaction(forwarded[i], &forward, NULL);
        sigaddset(&unblock, forwarded[i]);
    }
    // The child kept the signal mask swiftleak was started with (it forked before this); swiftleak
    // itself must receive these to pass them on, whatever its parent blocked (a signal the program
    // blocks then waits in the program, as it would without us). Threads started later inherit this.
    pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);
}

/// Whether a core file of swiftleak would be written somewhere else than the program's: a piped
/// handler (systemd-coredump, apport) or a name with the pid in it. A plain "core" would overwrite
/// the program's own core file in the same directory.
static bool swl_core_name_is_per_process(void) {
    char pattern[256] = {0}, uses_pid[8] = {0};
    int fd = open("/proc/sys/kernel/core_pattern", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t n = read(fd, pattern, sizeof pattern - 1);
    close(fd);
    if (n <= 0) return false;
    if (pattern[0] == '|' || strstr(pattern, "%p") != NULL) return true;
    fd = open("/proc/sys/kernel/core_uses_pid", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    n = read(fd, uses_pid, sizeof uses_pid - 1);
    close(fd);
    return n > 0 && uses_pid[0] == '1';
}

void swl_die_by_signal(int signal, bool program_dumped_core) {
    // The program's core flag stays in our status when our own core cannot replace its file (the
    // ring is left out of it, MADV_DONTDUMP); otherwise no core of ours at all.
    if (!program_dumped_core || !swl_core_name_is_per_process()) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
    }
    struct sigaction action = {0};
    action.sa_handler = SIG_DFL;
    sigemptyset(&action.sa_mask);
    sigaction(signal, &action, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signal);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    raise(signal);
    // Ignored-by-default signals (SIGCHLD, SIGWINCH, …) cannot kill: report it like a shell.
    _exit(128 + signal);
}

// MARK: - Memory of another process

size_t swl_read_process_memory(pid_t pid, uint64_t address, void *buffer, size_t length) {
    struct iovec local = {.iov_base = buffer, .iov_len = length};
    struct iovec remote = {.iov_base = (void *)(uintptr_t)address, .iov_len = length};
    ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (n > 0) return (size_t)n;
    if (n < 0 && errno != ENOSYS && errno != EPERM) return 0;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/mem", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t m = pread(fd, buffer, length, (off_t)address);
    close(fd);
    return m > 0 ? (size_t)m : 0;
}

int swl_write_process_memory(pid_t pid, uint64_t address, const void *buffer, size_t length) {
    // /proc/PID/mem, as a tracer: it writes even where the program may not (and never grows a
    // mapping: the caller checks the range lies in one).
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/mem", (int)pid);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t done = 0;
    while (done < length) {
        ssize_t n = pwrite(fd, (const char *)buffer + done, length - done, (off_t)(address + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            close(fd);
            errno = e;
            return -1;
        }
        done += (size_t)n;
    }
    close(fd);
    return 0;
}

// MARK: - ELF

int swl_elf_is_static(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    Elf64_Ehdr ehdr;
    int result = 0;
    if (pread(fd, &ehdr, sizeof ehdr, 0) != sizeof ehdr || memcmp(ehdr.e_ident, ELFMAG, SELFMAG) != 0) {
        close(fd);
        return 0; // not ELF: a script, run through its interpreter
    }
    if (ehdr.e_ident[EI_CLASS] != ELFCLASS64 || ehdr.e_phentsize != sizeof(Elf64_Phdr)) {
        close(fd);
        return 0;
    }
    bool has_interp = false;
    for (int i = 0; i < ehdr.e_phnum; i++) {
        Elf64_Phdr ph;
        if (pread(fd, &ph, sizeof ph, (off_t)(ehdr.e_phoff + (uint64_t)i * sizeof ph)) != sizeof ph) break;
        if (ph.p_type == PT_INTERP) has_interp = true;
    }
    // ET_DYN without PT_INTERP is a shared library or static-pie; ET_EXEC without it is static.
    result = has_interp ? 0 : 1;
    close(fd);
    return result;
}

// MARK: - Memory of our own

void *swl_remap_larger(void *address, size_t old_length, size_t new_length) {
    void *moved = mremap(address, old_length, new_length, MREMAP_MAYMOVE);
    if (moved == MAP_FAILED) return NULL;
#ifdef MADV_POPULATE_WRITE
    // The grown part is touched at once by the caller; one call maps it all (fails harmlessly
    // before Linux 5.14: the pages then fault in one by one).
    madvise((char *)moved + old_length, new_length - old_length, MADV_POPULATE_WRITE);
#endif
    return moved;
}
