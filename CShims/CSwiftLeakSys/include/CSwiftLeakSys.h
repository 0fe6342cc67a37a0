// Thin wrappers over the system calls swiftleak's Swift side needs: the shared ring (memfd), a
// traced fork+exec, ptrace requests and wait-status macros, and reads of another process's memory.
// Every function returns -1 and leaves errno set on failure unless it says otherwise.
#ifndef CSWIFTLEAK_SYS_H
#define CSWIFTLEAK_SYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "SwiftLeakEventABI.h"

#ifdef __cplusplus
extern "C" {
#endif

// MARK: Ring (recorder side)

/// Creates the memfd (close-on-exec; the launcher hands it to the child) and maps it.
/// Returns NULL on failure. `*fd_out` receives the descriptor.
swl_ring_header *swl_ring_create(uint64_t capacity, uint32_t bucket_count, uint64_t store_size,
                                 uint32_t max_frames, int32_t recorder_pid, int *fd_out);
void swl_ring_destroy(swl_ring_header *ring, uint64_t total_size);

/// The consumer's own view of a ring, taken when swiftleak created it, before the program ran: the
/// program can write the shared header, so nothing that keeps the consumer in bounds is read from
/// there again.
typedef struct swl_ring_reader {
    swl_ring_header *header;
    swl_event *slots;
    uint64_t capacity;
    uint64_t head;
} swl_ring_reader;
void swl_ring_reader_init(swl_ring_reader *reader, swl_ring_header *ring);

/// Copies up to `max` published events, in ring order, into `out` and frees their slots.
/// Stops at the first slot whose writer has not published yet, unless `skip_unpublished` is set:
/// then (only valid when every producer is stopped for good, at the exit stop) up to one ring's
/// worth of such slots are skipped and counted in `*skipped`. The events' contents are the
/// program's: the caller validates them.
size_t swl_ring_consume(swl_ring_reader *reader, swl_event *out, size_t max, bool skip_unpublished,
                        uint64_t *skipped);
/// The published events from the reader's head on, where they lie, for a reader that converts
/// them in place instead of copying them out first: at most `max`, stopping at the first slot
/// whose writer has not published yet and at the ring's end (a next call goes on from its start).
/// `*first` gets the first slot. The slots stay the reader's until `swl_ring_release`; their
/// contents are the program's memory, which it can still change: read each slot once, with
/// `swl_slot_read`, and validate what was read.
size_t swl_ring_peek(swl_ring_reader *reader, size_t max, const swl_event **first);
/// Frees the first `count` slots of the last `swl_ring_peek` for the writers (and wakes a writer
/// that waits for room), as `swl_ring_consume` frees the slots it copied.
void swl_ring_release(swl_ring_reader *reader, size_t count);
/// One slot's event, each field loaded once (atomic loads: the compiler may neither repeat nor
/// split them), so that what was validated is what is used even if the program rewrites the slot
/// meanwhile. The sequence is not read (0).
static inline swl_event swl_slot_read(const swl_event *slot) {
    swl_event event;
    event.sequence = 0;
    event.address = __atomic_load_n(&slot->address, __ATOMIC_RELAXED);
    event.info = __atomic_load_n(&slot->info, __ATOMIC_RELAXED);
    event.stack = __atomic_load_n(&slot->stack, __ATOMIC_RELAXED);
    event.thread = __atomic_load_n(&slot->thread, __ATOMIC_RELAXED);
    return event;
}
/// How many slots producers have reserved past the consumer's head (published or not yet): a hint
/// for when to take the next batch, never a bound (the tail is written by the program).
uint64_t swl_ring_reserved_ahead(const swl_ring_reader *reader);
uint64_t swl_ring_store_used(swl_ring_header *ring);
/// The stack store (records are read by id * 8 from here) and its size in bytes.
const void *swl_ring_store_base(swl_ring_header *ring);
uint64_t swl_ring_store_capacity(swl_ring_header *ring);
uint32_t swl_ring_attached(swl_ring_header *ring);
uint32_t swl_ring_disabled(swl_ring_header *ring);
/// Non-zero once the program's exit handlers have run (see swl_ring_header.exiting).
uint32_t swl_ring_exiting(swl_ring_header *ring);
void swl_ring_set_traced_pid(swl_ring_header *ring, int32_t pid);
/// Clears swl_ring_header.single_producer: call it while every task that could write into the ring
/// is stopped (at the clone that starts a second one), before any of them runs on.
void swl_ring_set_multiple_producers(swl_ring_header *ring);
uint32_t swl_ring_single_producer(swl_ring_header *ring);
/// The interposer's state word in the program (0: not written); see swl_ring_header.state_address.
uint64_t swl_ring_state_address(swl_ring_header *ring);
/// Offers the ring at descriptor `fd` (swiftleak's) to fork child `child` in `parent`'s fork table.
/// Returns false when the table is full.
bool swl_ring_offer_to_child(swl_ring_header *parent, int32_t child, int32_t fd);
/// Clears `child`'s entry in `parent`'s fork table.
void swl_ring_withdraw_offer(swl_ring_header *parent, int32_t child);
/// Where the interposer found the allocator's own state (see swl_ring_header); 0, 0 when unknown.
void swl_ring_allocator_state(swl_ring_header *ring, uint64_t *start, uint64_t *end);
/// The own-stack areas the interposer listed (start 0: entry unused), as written: the program's
/// to forge, checked against its mappings by the exit scan. Returns the number of entries.
uint32_t swl_ring_own_stack_areas(swl_ring_header *ring, uint64_t starts[SWL_OWN_STACK_AREAS], uint64_t ends[SWL_OWN_STACK_AREAS]);
/// The geometry of those areas (SwiftLeakEventABI.h): stack bytes, guard bytes, slots of area 0.
static inline void swl_own_stack_geometry(uint64_t *stack, uint64_t *guard_bytes, uint64_t *first_area_slots) {
    *stack = SWL_OWN_STACK_SIZE;
    *guard_bytes = SWL_OWN_STACK_GUARD_SIZE;
    *first_area_slots = SWL_OWN_STACK_FIRST_AREA_SLOTS;
}
/// Non-zero when the program's malloc is not the interposer's (the executable defines its own).
uint32_t swl_ring_foreign_malloc(swl_ring_header *ring);
/// The frame that called exit, _exit, _Exit or abort, as the interposer recorded it (0, 0 when none).
void swl_ring_exit_caller(swl_ring_header *ring, uint64_t *stack_pointer, uint32_t *tid, uint64_t registers[6]);

// MARK: Launch

/// Forks a child that stops itself with SIGSTOP, seizes it (PTRACE_SEIZE with the tracing options),
/// and, once swl_spawn_finish continues it, has it exec `path`
/// (through /bin/sh with `shell_argv` when the kernel reports ENOEXEC, as execvp does). On success
/// returns the child's pid, still stopped, and `*error_pipe` the read end of a pipe that yields the
/// child's execve errno, or EOF once the exec succeeded.
pid_t swl_spawn_traced(const char *path, char *const argv[], char *const shell_argv[], char *const envp[],
                       int *error_pipe);
/// After swl_spawn_traced: set the tracing options, let the child exec, and report the exec's
/// outcome: 0 when the child is now stopped at its PTRACE_EVENT_EXEC, else the execve errno (the
/// child has then been reaped).
int swl_spawn_finish(pid_t pid, int error_pipe);

// MARK: ptrace

long swl_ptrace_cont(pid_t tid, int signal);
long swl_ptrace_geteventmsg(pid_t tid, unsigned long *message);
/// 0: a signal-delivery-stop (siginfo read); -1 with errno EINVAL: a group-stop.
long swl_ptrace_getsiginfo(pid_t tid, int *signo, int *code);
/// Reads the general registers of a stopped thread as 64-bit words (user_regs_struct, 27 words on
/// x86_64). Returns the number of words, or -1.
int swl_ptrace_getregs(pid_t tid, uint64_t *words, int capacity, uint64_t *stack_pointer);
long swl_ptrace_detach(pid_t tid, int signal);
/// Leaves a seized tracee in its group-stop (SIGSTOP and friends) while we keep waiting on it.
long swl_ptrace_listen(pid_t tid);
/// Sets a stopped thread's stack pointer (rsp).
long swl_ptrace_set_stack_pointer(pid_t tid, uint64_t stack_pointer);

enum {
    SWL_EVENT_STOP_NONE = 0,
    SWL_EVENT_STOP_FORK = 1,
    SWL_EVENT_STOP_VFORK = 2,
    SWL_EVENT_STOP_CLONE = 3,
    SWL_EVENT_STOP_EXEC = 4,
    SWL_EVENT_STOP_EXIT = 6,
    SWL_EVENT_STOP_GROUP = 128,
};

/// At a PTRACE_EVENT_CLONE stop of `tid` (inside clone or clone3): whether the new task is a
/// thread of the same process (CLONE_THREAD) and whether it shares the caller's memory (CLONE_VM),
/// from the call's flags. Returns false when they cannot be read.
bool swl_clone_flags(pid_t tid, bool *is_thread, bool *shares_memory);
/// How many times the calling thread was switched out while still runnable (preempted, or a
/// sched_yield that ran another task): getrusage(RUSAGE_THREAD)'s ru_nivcsw.
uint64_t swl_thread_involuntary_switches(void);
/// The thread-group id of `tid` from /proc (the pid of its process), -1 when it is gone.
pid_t swl_thread_group_of(pid_t tid);
/// Writes `value` at `address` in a stopped tracee (PTRACE_POKEDATA of the aligned word,
/// keeping the other half). Returns 0 on success.
int swl_poke_int32(pid_t tid, uint64_t address, int32_t value);

/// waitpid(-1, __WALL), WNOHANG unless `block`; retries EINTR unless swiftleak was asked to end
/// meanwhile. Returns the tid, 0 (nothing yet, without `block`) or -1 (errno ECHILD, or EINTR
/// for a termination request).
pid_t swl_wait_any(int *status, bool block);
/// The last of SIGTERM, SIGHUP, SIGINT, SIGQUIT that swiftleak received (0: none), and how many.
int swl_termination_signal(void);
int swl_termination_count(void);
bool swl_wifexited(int status);
bool swl_wifsignaled(int status);
bool swl_wifstopped(int status);
int swl_wexitstatus(int status);
int swl_wtermsig(int status);
int swl_wstopsig(int status);
/// The PTRACE_EVENT_* number of a stop, 0 for none.
int swl_wstopevent(int status);
bool swl_wcoredump(int status);

// MARK: Signals

/// Forwards SIGTERM, SIGHUP, SIGUSR1, SIGUSR2 to `child`, and SIGINT and SIGQUIT when another
/// process sent them; from the terminal, those two reach the program by themselves.
void swl_signals_forward_to(pid_t child);
/// Dies by `signal` the way the traced program did: default action; with a core file of our own
/// (so the status says "core dumped") only when the program dumped one and ours cannot overwrite it.
void swl_die_by_signal(int signal, bool program_dumped_core);

// MARK: Memory of another process

/// process_vm_readv, falling back to /proc/PID/mem. Returns bytes read (0 when unreadable).
size_t swl_read_process_memory(pid_t pid, uint64_t address, void *buffer, size_t length);

/// Writes `length` bytes at `address` of a process we trace (through /proc/PID/mem). 0 or -1.
int swl_write_process_memory(pid_t pid, uint64_t address, const void *buffer, size_t length);

// MARK: Memory of our own

/// Grows an anonymous mapping of ours (mremap, moving it when it cannot grow in place: the pages
/// move, their contents are not copied) and populates the new part, which reads as zeros.
/// Lengths in bytes, multiples of the page size. Returns the mapping's address, NULL on failure
/// (the old mapping is then untouched).
void *swl_remap_larger(void *address, size_t old_length, size_t new_length);

// MARK: ELF

/// 1 when the file is an ELF executable with no PT_INTERP (statically linked), 0 when dynamic or
/// not ELF (a script), -1 when it cannot be read.
int swl_elf_is_static(const char *path);

#ifdef __cplusplus
}
#endif
#endif
