// The interposer's own stack walker (x86_64 Linux), private to libswiftleak_preload.so.
//
// libunwind's unw_backtrace spent more than half of a malloc-heavy program's time under swiftleak,
// most of it setting up a cursor for every call. This walker keeps one rule per return address in
// a lock-free cache (how to find the caller's stack pointer, return address and frame pointer,
// read once from the module's .eh_frame) and then needs a couple of loads a frame. Signal frames,
// huge frames and code without unwind tables (a frame-pointer guess, as libunwind makes) take a
// slow path; call-frame information it cannot follow ends the stack there. libunwind itself is no
// longer part of a run: it keeps a pipe open in the program (see preload.c).
#ifndef SWIFTLEAK_PRELOAD_UNWIND_H
#define SWIFTLEAK_PRELOAD_UNWIND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/// Whether the walker can run in this process (it needs glibc's _dl_find_object, glibc 2.35+,
/// and x86_64). When false, swl_unwind always returns -1.
bool swl_unwind_available(void);

/// Writes the return addresses of the calling thread's stack into `frames`, innermost first:
/// frames[0] is the return address into the function that called swl_unwind. Returns how many
/// it wrote (at most `max`), or -1 when the walker is not available in this process.
int swl_unwind(uint64_t *frames, int max);

/// The same walk from a frame given by the caller: `sp` points at the return address of a call
/// (as at a function's first instruction) and `rbp` is the frame pointer there. frames[0] is then
/// `sp[0]`. The hooks use it to walk the program's stack while they run on a stack of their own.
int swl_unwind_at(uint64_t *frames, int max, const uint64_t *sp, uint64_t rbp);

/// The known stacks of a thread live in an area of this many bytes (8-byte aligned, any contents)
/// that the caller gives the thread with swl_unwind_use_area; a thread without one (NULL) keeps none.
size_t swl_unwind_area_bytes(void);
void swl_unwind_use_area(void *area);

/// Right after swl_unwind_at: keeps the stack it walked, with `value`, for swl_unwind_known, when
/// that walk recorded the whole stack (a walk that only followed its memo is not kept). `owner`
/// says what the values mean (the preload passes its ring's epoch: a fork child's ids are new).
void swl_unwind_remember(uint64_t owner, uint32_t value);

/// As swl_unwind, and `stack_pointers[i]` gets frame i's stack pointer (its value in that frame
/// at the call, as libunwind's UNW_REG_SP gives it).
int swl_unwind_with_stack_pointers(uint64_t *frames, uint64_t *stack_pointers, int max);

/// Forgets every cached rule. Called after dlclose: a new module may be mapped where the old
/// one's code was.
void swl_unwind_forget(void);

// MARK: - The thread's known stacks (unwind.c says what they are and how they are checked)
//
// The look-up runs on nearly every allocation and usually hits, so its hit path is here, inline in
// the hooks: as a call, its argument moves and its six saved registers were ~32 instructions of
// each malloc (4.8% of malloc_heavy's instructions under the hooks). What is rare (a thread
// resting, a new owner or new rules, a miss) is out of line in unwind.c and keeps the caller's
// registers (preserve_most), so the hooks need not save any for it.

#if __has_attribute(preserve_most)
#define SWL_UNWIND_RARE_PATH __attribute__((noinline, cold, preserve_most, visibility("hidden")))
#else
#define SWL_UNWIND_RARE_PATH __attribute__((noinline, cold, visibility("hidden")))
#endif

#define SWL_KNOWN_STACKS 8
#define SWL_KNOWN_FRAMES 32
#define SWL_KNOWN_PAIRS (2 * SWL_KNOWN_FRAMES)
#define SWL_KNOWN_MISSED_SLOTS 16
#define SWL_KNOWN_WINDOW 512
#define SWL_KNOWN_MIN_HITS (SWL_KNOWN_WINDOW / 4)
#define SWL_KNOWN_REST (16 * SWL_KNOWN_WINDOW)

typedef struct {
    uint64_t at, value; /* the word at `at` must hold `value` */
} swl_known_pair;

typedef struct {
    uint64_t value;       /* the caller's value */
    uint64_t entry_rbp;   /* the RBP the first frame must have, when needs_entry_rbp */
    uint8_t needs_entry_rbp;
    uint8_t count;        /* frames */
    uint8_t pairs;        /* entries of pair (at most 2 per step) */
    swl_known_pair pair[SWL_KNOWN_PAIRS];
    uint64_t ip[SWL_KNOWN_FRAMES]; /* the frames (verify mode writes them out) */
} swl_known_stack;

typedef struct {
    /// The first ip and rsp of each known stack (ip 0: none), apart from the stacks so that a
    /// look-up finds its candidates in two cache lines.
    uint64_t first_ip[SWL_KNOWN_STACKS];
    uint64_t first_rsp[SWL_KNOWN_STACKS];
    /// What every kept stack was kept for: the owner and the rules' generation. A look-up for
    /// another drops them all (a fresh area's owner, 0, is nobody's: the preload's start at 1).
    uint64_t owner;
    uint32_t generation;
    unsigned next;
    /// The hit-rate switch: look-ups and hits in the current window, captures left to rest.
    unsigned looked, found, resting;
    /// The stack the last hit took, looked at first: a thread's captures often repeat a path.
    unsigned last_hit;
    /// First frames of recent misses, as hashes.
    uint64_t missed[SWL_KNOWN_MISSED_SLOTS];
    swl_known_stack stacks[SWL_KNOWN_STACKS];
} swl_known_area;

/// This thread's area (swl_unwind_use_area), NULL while it has none.
extern __thread swl_known_area *swl_thread_known_area __attribute__((visibility("hidden"), tls_model("initial-exec")));
/// Bumped by swl_unwind_forget: stacks kept under other rules are not trusted.
extern uint32_t swl_rules_generation __attribute__((visibility("hidden")));

/// A look-up while the thread rests (counts the rest down, false) or for another owner or other
/// rules than its kept stacks were kept for (drops them, true).
SWL_UNWIND_RARE_PATH bool swl_unwind_known_begin_slowly(swl_known_area *area, uint64_t owner, uint32_t generation);
/// No kept stack fits a walk from (`ip`, `rsp`): notes its first frame, see unwind.c.
SWL_UNWIND_RARE_PATH void swl_unwind_known_missed(swl_known_area *area, uint64_t ip, uint64_t rsp);

/// Whether the words at `known`'s pairs hold their values and the first frame has the RBP it
/// needs, read in step order with an early exit: a word is read only once a real walk would read it.
/// Four to a turn after the odd ones (the first, in step order): a hit reads every pair of a
/// stack (9 on malloc_heavy), and the loop's own increment and compare were a third of its
/// instructions.
static inline __attribute__((always_inline)) bool swl_known_stack_holds(const swl_known_stack *known, uint64_t rbp) {
    if (known->needs_entry_rbp && rbp != known->entry_rbp) return false;
    const swl_known_pair *pair = known->pair;
#define SWL_PAIR_HOLDS(i) (*(const uint64_t *)(uintptr_t)pair[i].at == pair[i].value)
    switch (known->pairs & 3) {
    case 3: if (!SWL_PAIR_HOLDS(0)) return false; pair++; /* fall through */
    case 2: if (!SWL_PAIR_HOLDS(0)) return false; pair++; /* fall through */
    case 1: if (!SWL_PAIR_HOLDS(0)) return false; pair++; /* fall through */
    default: break;
    }
    for (unsigned turns = known->pairs >> 2; turns != 0; turns--, pair += 4) {
        if (!SWL_PAIR_HOLDS(0) || !SWL_PAIR_HOLDS(1) || !SWL_PAIR_HOLDS(2) || !SWL_PAIR_HOLDS(3)) return false;
    }
#undef SWL_PAIR_HOLDS
    return true;
}

/// Whether known stack `k` starts at (`ip`, `rsp`) and the words its steps read still hold.
static inline __attribute__((always_inline)) bool swl_known_stack_fits(const swl_known_area *area, unsigned k, uint64_t ip, uint64_t rsp, uint64_t rbp) {
    return area->first_ip[k] == ip && area->first_rsp[k] == rsp && swl_known_stack_holds(&area->stacks[k], rbp);
}

/// Whether a walk from (`sp`, `rbp`) would give exactly the frames of a whole stack this thread
/// walked before and kept (swl_unwind_remember) for `owner`; if so, `*value` is the value kept with
/// it and, when `frames` is given, the frames are written there and `*count` is their number.
/// Checks the words the walk would read; writes only the area's own counters. A miss may make the
/// next swl_unwind_at record its walk, so that swl_unwind_remember can keep it.
static inline __attribute__((always_inline)) bool swl_unwind_known(const uint64_t *sp, uint64_t rbp, uint64_t owner, uint32_t *value, uint64_t *frames, int *count) {
    swl_known_area *area = swl_thread_known_area;
    if (area == NULL) return false;
    uint32_t generation = __atomic_load_n(&swl_rules_generation, __ATOMIC_ACQUIRE);
    if (__builtin_expect(area->resting != 0 || area->owner != owner || area->generation != generation, 0)) {
        if (!swl_unwind_known_begin_slowly(area, owner, generation)) return false;
    }
    if (__builtin_expect(++area->looked == SWL_KNOWN_WINDOW, 0)) {
        if (area->found < SWL_KNOWN_MIN_HITS) area->resting = SWL_KNOWN_REST;
        area->looked = area->found = 0;
    }
    uint64_t ip = sp[0], rsp = (uint64_t)(uintptr_t)(sp + 1);
    unsigned last = area->last_hit, k = last;
    if (!swl_known_stack_fits(area, k, ip, rsp, rbp)) {
        for (k = 0; k < SWL_KNOWN_STACKS; k++) {
            if (k != last && swl_known_stack_fits(area, k, ip, rsp, rbp)) break;
        }
        if (k == SWL_KNOWN_STACKS) {
            swl_unwind_known_missed(area, ip, rsp);
            return false;
        }
    }
    const swl_known_stack *known = &area->stacks[k];
    area->last_hit = k;
    area->found++;
    *value = (uint32_t)known->value;
    if (frames) {
        for (int x = 0; x < known->count; x++) frames[x] = known->ip[x];
        *count = known->count;
    }
    return true;
}

#endif
