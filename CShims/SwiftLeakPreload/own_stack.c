// The hooks' own stacks: see own_stack.h for why and how.
#ifndef _GNU_SOURCE
#error "_GNU_SOURCE must be set by Package.swift"
#endif

#include "own_stack.h"
#include "unwind.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <unistd.h>

#define SWL_TLS __attribute__((tls_model("initial-exec")))

// own_stack.h says what it holds.
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

/// Where area i starts (0 until it is made): SWL_OWN_STACK_FIRST_AREA_SLOTS << i slots of
/// SWL_OWN_STACK_SLOT_SIZE bytes, a guard page and a stack each. Set once, by compare-exchange.
static uint64_t g_area_start[SWL_OWN_STACK_AREAS];
/// One bit per slot, set while a thread has that stack: area i's words start at word (1 << i) - 1
/// (its slots are 64 << i, so each area has whole words of its own).
#define SWL_SLOT_WORDS ((1u << SWL_OWN_STACK_AREAS) - 1)
_Static_assert(SWL_OWN_STACK_FIRST_AREA_SLOTS == 64, "one bitmap word per 64 slots of the first area");
static uint64_t g_slot_taken[SWL_SLOT_WORDS];
/// The ring whose header lists the areas (see swl_own_stack_use_ring).
static swl_ring_header *g_table_ring;

static pthread_key_t g_release_key;
static bool g_release_key_made;
static pthread_once_t g_release_key_once = PTHREAD_ONCE_INIT;

static uint64_t swl_area_bytes(unsigned area) {
    return ((uint64_t)SWL_OWN_STACK_FIRST_AREA_SLOTS << area) * SWL_OWN_STACK_SLOT_SIZE;
}

/// Writes area `area` into the table of `ring`: end first, then start (a reader takes an entry
/// whose start is set as complete).
static void swl_list_area(swl_ring_header *ring, unsigned area, uint64_t start) {
    if (ring == NULL || start == 0) return;
    swl_own_stack_area *table = swl_own_stack_table(ring);
    __atomic_store_n(&table[area].end, start + swl_area_bytes(area), __ATOMIC_RELAXED);
    __atomic_store_n(&table[area].start, start, __ATOMIC_RELEASE);
}

void swl_own_stack_use_ring(swl_ring_header *ring) {
    __atomic_store_n(&g_table_ring, ring, __ATOMIC_SEQ_CST);
    swl_own_stack_area *table = swl_own_stack_table(ring);
    for (unsigned area = 0; area < SWL_OWN_STACK_AREAS; area++) {
        uint64_t start = __atomic_load_n(&g_area_start[area], __ATOMIC_SEQ_CST);
        if (start) {
            swl_list_area(ring, area, start);
        } else {
            // A child's ring is fresh, but a forged or stale entry must not survive either.
            __atomic_store_n(&table[area].start, 0, __ATOMIC_RELEASE);
            __atomic_store_n(&table[area].end, 0, __ATOMIC_RELAXED);
        }
    }
}

/// The start of area `area`, reserving it first if no thread has: inaccessible, unreserved
/// address space (only the stacks handed out become read-write), left out of core dumps.
static uint64_t swl_area(unsigned area) {
    uint64_t start = __atomic_load_n(&g_area_start[area], __ATOMIC_ACQUIRE);
    if (start) return start;
    uint64_t bytes = swl_area_bytes(area);
    void *base = mmap(NULL, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) return 0;
    madvise(base, bytes, MADV_DONTDUMP);
    uint64_t expected = 0;
    if (!__atomic_compare_exchange_n(&g_area_start[area], &expected, (uint64_t)(uintptr_t)base, false, __ATOMIC_SEQ_CST,
                                     __ATOMIC_ACQUIRE)) {
        munmap(base, bytes); // another thread made it first
        return expected;
    }
    swl_list_area(__atomic_load_n(&g_table_ring, __ATOMIC_SEQ_CST), area, (uint64_t)(uintptr_t)base);
    return (uint64_t)(uintptr_t)base;
}

/// The top of a free stack, now this thread's; 0 when every area is full or none can be made.
/// The lowest free slot wins, so a program that starts and joins threads reuses a few warm stacks.
static uint64_t swl_take_stack(void) {
    for (unsigned area = 0; area < SWL_OWN_STACK_AREAS; area++) {
        uint64_t start = swl_area(area);
        if (start == 0) return 0;
        unsigned first_word = (1u << area) - 1, words = 1u << area;
        for (unsigned w = 0; w < words; w++) {
            uint64_t *word = &g_slot_taken[first_word + w];
            uint64_t taken = __atomic_load_n(word, __ATOMIC_RELAXED);
            while (taken != ~(uint64_t)0) {
                unsigned bit = (unsigned)__builtin_ctzll(~taken);
                if (!__atomic_compare_exchange_n(word, &taken, taken | ((uint64_t)1 << bit), true, __ATOMIC_ACQUIRE,
                                                 __ATOMIC_RELAXED)) continue;
                uint64_t slot = start + ((uint64_t)w * 64 + bit) * SWL_OWN_STACK_SLOT_SIZE;
                void *stack = (void *)(uintptr_t)(slot + SWL_OWN_STACK_GUARD_SIZE);
                if (mprotect(stack, SWL_OWN_STACK_SIZE, PROT_READ | PROT_WRITE) != 0) {
                    __atomic_fetch_and(word, ~((uint64_t)1 << bit), __ATOMIC_RELEASE);
                    return 0;
                }
                return slot + SWL_OWN_STACK_SLOT_SIZE;
            }
        }
    }
    return 0;
}

/// Hands the stack whose top is `top` back. Stacks past the first area give their memory back
/// first (a program that had thousands of threads at once does not keep their pages).
static void swl_give_back_stack(uint64_t top) {
    for (unsigned area = 0; area < SWL_OWN_STACK_AREAS; area++) {
        uint64_t start = __atomic_load_n(&g_area_start[area], __ATOMIC_ACQUIRE);
        if (start == 0 || top <= start || top > start + swl_area_bytes(area)) continue;
        uint64_t index = (top - start) / SWL_OWN_STACK_SLOT_SIZE - 1;
        if (area > 0) madvise((void *)(uintptr_t)(top - SWL_OWN_STACK_SIZE), SWL_OWN_STACK_SIZE, MADV_DONTNEED);
        __atomic_fetch_and(&g_slot_taken[(1u << area) - 1 + index / 64], ~((uint64_t)1 << (index % 64)), __ATOMIC_RELEASE);
        return;
    }
}

/// At the thread's exit (its TSD destructors, which run on the thread's own stack): hand the
/// stack on. Hooked calls the thread still makes afterwards (later destructors) run where they are.
static void swl_release_stack(void *value) {
    uint64_t top = (uint64_t)(uintptr_t)value;
    t_no_own_stack = true;
    swl_unwind_use_area(NULL); // the next thread to take the stack may keep its own stacks there
    __atomic_store_n(&swl_own_stack_top, 0, __ATOMIC_RELAXED);
    swl_give_back_stack(top);
}

static void swl_make_release_key(void) {
    g_release_key_made = pthread_key_create(&g_release_key, swl_release_stack) == 0;
}

void *swl_own_stack_far_end(void) {
    uint64_t top = __atomic_load_n(&swl_own_stack_top, __ATOMIC_RELAXED);
    return top ? (void *)(uintptr_t)(top - SWL_OWN_STACK_SIZE) : NULL;
}

void swl_own_stack_make(void) {
    if (t_no_own_stack || t_making) return;
    if (!swl_own_stack_wanted()) {
        t_no_own_stack = true;
        return;
    }
    // errno is the program's: the key, the mappings and pthread_setspecific below may set it.
    int saved_errno = errno;
    t_making = true;
    pthread_once(&g_release_key_once, swl_make_release_key);
    uint64_t top = g_release_key_made ? swl_take_stack() : 0;
    if (top == 0) {
        t_no_own_stack = true;
    } else {
        // Published before pthread_setspecific, which may itself allocate (keys past the first 32).
        __atomic_store_n(&swl_own_stack_top, top, __ATOMIC_RELAXED);
        pthread_setspecific(g_release_key, (void *)(uintptr_t)top);
    }
    t_making = false;
    errno = saved_errno;
}
