// The hooks' own stacks: every hooked call runs its bookkeeping and the real allocator on a
// per-thread stack of swiftleak's, never on the program's (x86_64 Linux).
//
// Why: code running on the program's stack leaves copies of block addresses below the program's
// stack pointer (a prologue that pushes rax while it still holds the previous malloc's result,
// glibc's allocator spilling a chunk pointer, the walker's locals). The program's later frames
// need not overwrite them, and the exit scan would take such a stale copy for a live reference:
// a loop of 1,000 forgotten mallocs was reported as 999 lost. Valgrind runs its allocator off the
// program's stack; so do we. The only word a hooked call writes on the program's stack is the
// return address its caller pushed.
//
// How: each exported hook is a two-instruction stub (SWL_HOOK_ON_OWN_STACK) that jumps to
// swl_own_stack_call with the implementation's address in rax. That routine passes the program's
// frame (its stack pointer at the call and rbp) to the implementation as a trailing swl_entry
// argument, switches rsp to the top of the thread's own stack, calls the implementation, switches
// back and returns. The program's stack pointer is saved in the top word of the own stack, which
// is also how the exit scan finds the program's stack of a thread stopped inside a hook.
//
// The own stack is taken on the thread's first hooked call from anonymous memory the interposer
// reserves in areas (SWL_OWN_STACK_SIZE and the area layout are in SwiftLeakEventABI.h); making
// one opens no descriptor, so the program never sees an fd of ours, not even for an instant. The
// areas are listed in the ring's header page, which is how the exit scan knows those stacks are
// not roots; they are MADV_DONTDUMP (a core holds the program). Private memory: a fork child
// writes to its own copy. A call made
// while the thread already runs on its own stack (a signal handler that interrupted a hook, the C++
// unwinder throwing bad_alloc from operator new, the allocator's own re-entry) stays where it is:
// whether the thread is on its own stack is decided by rsp alone, so a longjmp or an exception out
// of a hook leaves nothing to repair. A thread for which no stack can be had (every area's slot
// taken, out of address space) runs its hooks on the program's stack, as before.
#ifndef SWIFTLEAK_PRELOAD_OWN_STACK_H
#define SWIFTLEAK_PRELOAD_OWN_STACK_H

#include <stdint.h>

#include "SwiftLeakEventABI.h"

/// The program's frame at the hooked call: `sp[0]` is the return address into the program (what
/// __builtin_return_address(0) gives in an ordinary function), `rbp` its frame pointer. Passed in
/// rcx:r8, after at most three integer arguments.
typedef struct swl_entry {
    const uint64_t *sp;
    uint64_t rbp;
} swl_entry;

// SWL_OWN_STACK_SIZE (SwiftLeakEventABI.h): usable bytes of each own stack (a guard page lies
// below). Virtual: only touched pages cost memory. Big enough for a signal handler that
// interrupts a hook to run on it.

/// The words at the top of a thread's own stack while a hook runs on it, from the top down: the
/// program's stack pointer at the call, the program's rdi, rsi, rbx, rbp, r12, r13, r14 and r15 as
/// they were at the call, and the block the hook is about to return (0 until it has one). A thread
/// the exit stops inside a hook is, for the exit scan, the program at its call: those registers
/// are its register roots (the hook has reused the real ones, and what it saved of them lies on
/// the own stack, which is not a root), plus the block on its way back, which the program would
/// have got in rax. Sources/SwiftLeakSession/ExitScan.swift reads them.
#define SWL_OWN_STACK_FRAME_WORDS 10

/// The top of this thread's own stack (its highest address + 1), 0 while it has none. Read by
/// swl_own_stack_call on every hooked call.
extern __thread uint64_t swl_own_stack_top __attribute__((tls_model("initial-exec"), visibility("hidden")));

/// Records `block` as the block this hook returns (the last of the words above), before the
/// allocation is published: from then on it is the program's, reachable from the call. Inline:
/// it runs on every allocation, and as a call it was 2% of a malloc-heavy program's time.
static inline void swl_own_stack_returning(void *block) {
    uint64_t top = __atomic_load_n(&swl_own_stack_top, __ATOMIC_RELAXED);
    if (top) *(void *volatile *)(uintptr_t)(top - SWL_OWN_STACK_FRAME_WORDS * 8) = block;
}

/// Defines the exported function `name` as a stub that runs `impl` on the thread's own stack.
/// `impl` takes the hook's (up to three integer) arguments, padded to three, then a swl_entry.
#define SWL_HOOK_ON_OWN_STACK(name, impl) SWL_OWN_STACK_STUB(name, impl, "")

/// The stub itself; `prologue` (assembly, may use r11) runs first, on the program's stack.
#define SWL_OWN_STACK_STUB(name, impl, prologue)                                                    \
    __asm__(".text\n"                                                                             \
            ".globl " #name "\n"                                                                  \
            ".type " #name ", @function\n"                                                        \
            ".p2align 4\n" #name ":\n"                                                            \
            ".cfi_startproc\n"                                                                    \
            "    endbr64\n"                                                                       \
            prologue                                                                              \
            "    leaq " #impl "(%rip), %rax\n"                                                    \
            "    jmp swl_own_stack_call\n"                                                        \
            ".cfi_endproc\n"                                                                      \
            ".size " #name ", .-" #name "\n")

/// The callee-saved registers (rbx, rbp, r12, r13, r14, r15) of the program's frame at its last
/// call to an exit function, saved by SWL_EXIT_HOOK_ON_OWN_STACK and by the `exit` stub before
/// anything can change them; swl_exit_registers_saved is 1 while they are unused.
extern __thread uint64_t swl_exit_registers[6] __attribute__((tls_model("initial-exec")));
extern __thread uint64_t swl_exit_registers_saved __attribute__((tls_model("initial-exec")));

/// The stub of SWL_HOOK_ON_OWN_STACK for a function that may end the process (_exit, abort,
/// raise): it first saves the caller's callee-saved registers (r11 is free in a stub), which
/// libc's exit path would have spilled into the frames the exit scan skips.
#define SWL_EXIT_HOOK_ON_OWN_STACK(name, impl) SWL_OWN_STACK_STUB(name, impl, SWL_SAVE_EXIT_REGISTERS)

#define SWL_SAVE_EXIT_REGISTERS                                                                    \
    "    movq swl_exit_registers@gottpoff(%rip), %r11\n"                                          \
    "    movq %rbx, %fs:0(%r11)\n"                                                                \
    "    movq %rbp, %fs:8(%r11)\n"                                                                \
    "    movq %r12, %fs:16(%r11)\n"                                                               \
    "    movq %r13, %fs:24(%r11)\n"                                                               \
    "    movq %r14, %fs:32(%r11)\n"                                                               \
    "    movq %r15, %fs:40(%r11)\n"                                                               \
    "    movq swl_exit_registers_saved@gottpoff(%rip), %r11\n"                                    \
    "    movq $1, %fs:(%r11)\n"

/// The far end (lowest usable byte) of this thread's own stack, NULL while it has none. The hooks
/// use far less than the stack's size: preload.c keeps the walker's known stacks there (unwind.h),
/// out of static TLS. They are dropped when the thread hands its stack back.
void *swl_own_stack_far_end(void);

/// Called by swl_own_stack_call on a thread without an own stack (hidden; not for C callers).
void swl_own_stack_make(void);

/// Makes `ring` the one whose header lists the own-stack areas (at the start, and in a fork child
/// given a ring of its own: the child's address space holds its parent's areas). Writes the areas
/// made so far; later ones are added as they are made. Called by preload.c.
void swl_own_stack_use_ring(swl_ring_header *ring);

/// Whether own stacks should be made at all (false in a process swiftleak does not trace, where
/// the hooks only pass calls through). Defined by preload.c.
int swl_own_stack_wanted(void);

#endif
