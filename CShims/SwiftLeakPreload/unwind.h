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

/// Whether a walk from (`sp`, `rbp`) would give exactly the frames of a whole stack this thread
/// walked before and kept (swl_unwind_remember) for `owner`; if so, `*value` is the value kept with
/// it and, when `frames` is given, the frames are written there and `*count` is their number.
/// Checks the words the walk would read, writes nothing when it succeeds. A miss may make the
/// next swl_unwind_at record its walk, so that swl_unwind_remember can keep it.
bool swl_unwind_known(const uint64_t *sp, uint64_t rbp, uint64_t owner, uint32_t *value, uint64_t *frames, int *count);

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

#endif
