// The hooks' own stacks: see own_stack.h for why and how.
#ifndef _GNU_SOURCE
#error "_GNU_SOURCE must be set by Package.swift"
#endif

#include "own_stack.h"

#include <pthread.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <unistd.h>

#define SWL_TLS __attribute__((tls_model("initial-exec")))
#define SWL_GUARD_SIZE 4096u

/// The top of this thread's own stack (its highest address + 1), 0 while it has none. Read by
/// swl_own_stack_call on every hooked call.
__attribute__((visibility("hidden"))) SWL_TLS __thread uint64_t swl_own_stack_top;
__attribute__((visibility("hidden"))) SWL_TLS __thread uint64_t swl_exit_registers[6];
__attribute__((visibility("hidden"))) SWL_TLS __thread uint64_t swl_exit_registers_saved;
/// Set once no own stack will be made for this thread (failure, or the thread is exiting).
static SWL_TLS __thread bool t_no_own_stack;
/// Set while swl_own_stack_make runs: a call re-entering from inside it runs where it is.
static SWL_TLS __thread bool t_making;

// The stack switch. rax = the implementation, rdi/rsi/rdx = its arguments, [rsp] = the return
// address into the program. Nothing here writes to the program's stack except on a thread's very
// first call (the four saved registers, cleared again before the call goes on). The CFI describes
// the frame at every instruction, so libunwind and the C++ unwinder (bad_alloc from operator new)
// walk from the implementation's frames on the own stack back onto the program's.
#define SWL_STR2(x) #x
#define SWL_STR(x) SWL_STR2(x)
__asm__(".text\n"
        ".globl swl_own_stack_call\n"
        ".hidden swl_own_stack_call\n"
        ".type swl_own_stack_call, @function\n"
        ".p2align 4\n"
        "swl_own_stack_call:\n"
        ".cfi_startproc\n"
        "1:  movq %rsp, %rcx\n" // swl_entry.sp
        "    movq %rbp, %r8\n"  // swl_entry.rbp
        "    movq swl_own_stack_top@gottpoff(%rip), %r11\n"
        "    movq %fs:(%r11), %r11\n"
        "    testq %r11, %r11\n"
        "    jz 3f\n"
        // Already on the own stack (rsp in [top - SIZE, top))? Then stay on it.
        "    movq %rsp, %r10\n"
        "    subq %r11, %r10\n"
        "    addq $" SWL_STR(SWL_OWN_STACK_SIZE) ", %r10\n"
        "    cmpq $" SWL_STR(SWL_OWN_STACK_SIZE) ", %r10\n"
        "    jb 2f\n"
        // Switch first, then save the program's rsp on the own stack: a signal arriving in between
        // finds rsp already on the own stack and runs its handler's hooks there, without a switch
        // that would overwrite the saved word.
        "    movq %r11, %rsp\n"
        ".cfi_def_cfa %rcx, 8\n"
        "    pushq %rcx\n"
        ".cfi_escape 0x0f, 0x05, 0x77, 0x00, 0x06, 0x23, 0x08\n" // CFA = *(rsp + 0) + 8
        // The program's registers as they were at the call (SWL_OWN_STACK_SAVED_*): what the exit
        // scan takes as the roots of a thread that stops in here. The hook reuses the registers.
        "    movq %rdi, -8(%rsp)\n"
        "    movq %rsi, -16(%rsp)\n"
        "    movq %rbx, -24(%rsp)\n"
        "    movq %rbp, -32(%rsp)\n"
        "    movq %r12, -40(%rsp)\n"
        "    movq %r13, -48(%rsp)\n"
        "    movq %r14, -56(%rsp)\n"
        "    movq %r15, -64(%rsp)\n"
        "    movq $0, -72(%rsp)\n"
        "    subq $72, %rsp\n"
        ".cfi_escape 0x0f, 0x06, 0x77, 0xc8, 0x00, 0x06, 0x23, 0x08\n" // CFA = *(rsp + 72) + 8
        "    call *%rax\n"
        // Back on the program's stack, the result is in rax, a register root again: the block
        // being returned stops being one of this stack's words.
        "    movq %rsp, %r11\n"
        "    movq 72(%r11), %rsp\n"
        ".cfi_def_cfa %rsp, 8\n"
        "    movq $0, (%r11)\n"
        "    ret\n"
        "2:  jmp *%rax\n"
        // The thread's first call: make its stack, then start over.
        "3:  pushq %rdi\n"
        ".cfi_adjust_cfa_offset 8\n"
        "    pushq %rsi\n"
        ".cfi_adjust_cfa_offset 8\n"
        "    pushq %rdx\n"
        ".cfi_adjust_cfa_offset 8\n"
        "    pushq %rax\n"
        ".cfi_adjust_cfa_offset 8\n"
        "    subq $8, %rsp\n"
        ".cfi_adjust_cfa_offset 8\n"
        "    call swl_own_stack_make\n"
        "    addq $8, %rsp\n"
        ".cfi_adjust_cfa_offset -8\n"
        "    popq %rax\n"
        ".cfi_adjust_cfa_offset -8\n"
        "    popq %rdx\n"
        ".cfi_adjust_cfa_offset -8\n"
        "    popq %rsi\n"
        ".cfi_adjust_cfa_offset -8\n"
        "    popq %rdi\n"
        ".cfi_adjust_cfa_offset -8\n"
        // The saved arguments may be block addresses (free's): leave no copy of them behind.
        "    movq $0, -8(%rsp)\n"
        "    movq $0, -16(%rsp)\n"
        "    movq $0, -24(%rsp)\n"
        "    movq $0, -32(%rsp)\n"
        "    movq swl_own_stack_top@gottpoff(%rip), %r11\n"
        "    movq %fs:(%r11), %r11\n"
        "    testq %r11, %r11\n"
        "    jnz 1b\n"
        "    movq %rsp, %rcx\n"
        "    movq %rbp, %r8\n"
        "    jmp *%rax\n" // no own stack for this thread: run on the program's
        ".cfi_endproc\n"
        ".size swl_own_stack_call, .-swl_own_stack_call\n");

// MARK: - Making and recycling stacks

/// Stacks of exited threads, kept for the next threads (0 = empty slot). Taking one is an
/// exchange, so no slot is ever handed out twice; a full cache unmaps.
#define SWL_STACK_CACHE 64
static uint64_t g_cached_tops[SWL_STACK_CACHE];

static pthread_key_t g_release_key;
static bool g_release_key_made;
static pthread_once_t g_release_key_once = PTHREAD_ONCE_INIT;

static void swl_unmap_stack(uint64_t top) {
    munmap((void *)(uintptr_t)(top - SWL_OWN_STACK_SIZE - SWL_GUARD_SIZE), SWL_OWN_STACK_SIZE + SWL_GUARD_SIZE);
}

/// At the thread's exit (its TSD destructors, which run on the thread's own stack): hand the
/// stack on. Hooked calls the thread still makes afterwards (later destructors) run where they are.
static void swl_release_stack(void *value) {
    uint64_t top = (uint64_t)(uintptr_t)value;
    t_no_own_stack = true;
    __atomic_store_n(&swl_own_stack_top, 0, __ATOMIC_RELAXED);
    for (int i = 0; i < SWL_STACK_CACHE; i++) {
        uint64_t expected = 0;
        if (__atomic_compare_exchange_n(&g_cached_tops[i], &expected, top, false, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) return;
    }
    swl_unmap_stack(top);
}

static void swl_make_release_key(void) {
    g_release_key_made = pthread_key_create(&g_release_key, swl_release_stack) == 0;
}

static uint64_t swl_take_cached_stack(void) {
    for (int i = 0; i < SWL_STACK_CACHE; i++) {
        if (__atomic_load_n(&g_cached_tops[i], __ATOMIC_RELAXED) == 0) continue;
        uint64_t top = __atomic_exchange_n(&g_cached_tops[i], 0, __ATOMIC_ACQUIRE);
        if (top) return top;
    }
    return 0;
}

/// A guard page, then SWL_OWN_STACK_SIZE bytes of the memfd mapped privately (so a fork child
/// writes to its own copy). The name is what keeps it out of the exit scan's roots; an anonymous
/// mapping could be named with PR_SET_VMA_ANON_NAME only on kernels built with it.
static uint64_t swl_map_stack(void) {
    int fd = memfd_create(SWL_OWN_STACK_MEMFD_NAME, MFD_CLOEXEC);
    if (fd < 0) return 0;
    uint64_t top = 0;
    char *base = MAP_FAILED;
    if (ftruncate(fd, SWL_OWN_STACK_SIZE) == 0) {
        base = mmap(NULL, SWL_OWN_STACK_SIZE + SWL_GUARD_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    }
    if (base != MAP_FAILED) {
        void *stack = mmap(base + SWL_GUARD_SIZE, SWL_OWN_STACK_SIZE, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, fd, 0);
        if (stack == MAP_FAILED) {
            munmap(base, SWL_OWN_STACK_SIZE + SWL_GUARD_SIZE);
        } else {
            top = (uint64_t)(uintptr_t)base + SWL_GUARD_SIZE + SWL_OWN_STACK_SIZE;
        }
    }
    close(fd);
    return top;
}

void swl_own_stack_returning(void *block) {
    uint64_t top = __atomic_load_n(&swl_own_stack_top, __ATOMIC_RELAXED);
    if (top) *(void *volatile *)(uintptr_t)(top - SWL_OWN_STACK_FRAME_WORDS * 8) = block;
}

void swl_own_stack_make(void) {
    if (t_no_own_stack || t_making) return;
    if (!swl_own_stack_wanted()) {
        t_no_own_stack = true;
        return;
    }
    t_making = true;
    pthread_once(&g_release_key_once, swl_make_release_key);
    uint64_t top = swl_take_cached_stack();
    if (top == 0) top = swl_map_stack();
    if (top == 0 || !g_release_key_made) {
        if (top) swl_unmap_stack(top);
        t_no_own_stack = true;
    } else {
        // Published before pthread_setspecific, which may itself allocate (keys past the first 32).
        __atomic_store_n(&swl_own_stack_top, top, __ATOMIC_RELAXED);
        pthread_setspecific(g_release_key, (void *)(uintptr_t)top);
    }
    t_making = false;
}
