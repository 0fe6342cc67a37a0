// libswiftleak_preload.so: the interposer loaded into the traced program with LD_PRELOAD.
//
// Rules of the hot path (design.md §4): no lock, no stdio, nothing allocated through the hooked
// functions, and the event order is the program's real order for every address:
//   - a free is published before the real free runs (so nobody can get the address back first);
//   - an allocation is published after the real allocation returned;
//   - realloc reserves its "old block goes away" slot before the real call and fills it after,
//     then publishes the new block in a second slot.
// The real allocator is reached through glibc's exported __libc_* entry points, so there is no
// dlsym bootstrap problem (dlsym itself calls calloc).
#ifndef _GNU_SOURCE
#error "_GNU_SOURCE must be set by Package.swift"
#endif

#include "SwiftLeakPreload.h"
#include "SwiftLeakEventABI.h"
#include "own_stack.h"
#include "unwind.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <link.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

// SwiftPM links every product with swiftc, which adds -lswiftCore. This section entry is read by
// swift-autolink-extract and placed on the link line *before* -lswiftCore, so the linker drops
// every library nothing here uses: the interposer must not bring the Swift runtime (and its own
// allocations) into the traced program. Tests check `readelf -d` on the built library.
__attribute__((used, section(".swift1_autolink_entries"), aligned(1)))
static const char swl_preload_autolink[] = "-Wl,--as-needed";

#define SWL_EXPORT __attribute__((visibility("default")))
#define SWL_LIKELY(x) __builtin_expect(!!(x), 1)
#define SWL_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define SWL_TLS __attribute__((tls_model("initial-exec")))

// glibc's allocator entry points (exported for exactly this use).
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

/// STATE_NEW_PROCESS: written by swiftleak into a new process (a fork or raw clone() child) at its
/// first stop, before it runs. Its first hook takes the ring swiftleak offered it, as the fork
/// handler does (a raw clone() child runs no fork handler; a fork child's handler usually comes
/// first). Until then it never writes into its parent's ring.
enum { STATE_UNINIT = 0, STATE_INITIALIZING = 1, STATE_RECORDING = 2, STATE_QUIET = 3, STATE_NEW_PROCESS = 4 };

/// Frames captured at most; the header's max_frames is clamped to this.
#define SWL_MAX_FRAMES 128
/// Frames of our own (capture function, hook) that may precede the caller in a backtrace.
#define SWL_OWN_FRAMES 6

static int g_state = STATE_UNINIT;
static swl_ring_header *g_ring;
static swl_event *g_slots;
static uint64_t g_mask;
static uint32_t *g_buckets;
static uint32_t g_bucket_mask;
static char *g_store;
static uint64_t g_store_size;
static uint32_t g_max_frames;
/// Bumped whenever the interposer takes a ring (swl_use_ring): stack ids are ids in one ring's
/// store, and a thread's known stacks (unwind.h) kept for another ring's ids are not reused.
static uint64_t g_ring_epoch;

/// Set while this thread is inside our own bookkeeping: any allocation made meanwhile (by
/// libunwind, dl_iterate_phdr, pthread_atfork) belongs to swiftleak and is passed straight through.
static SWL_TLS __thread int t_busy;
static SWL_TLS __thread uint32_t t_tid;

/// The hot path's t_busy, set around work a signal handler's hooks must not interleave with on
/// this thread (the single-producer tail's relaxed load and store, the thread's known stacks). A
/// handler only reads t_busy, so the order that matters is the compiler's: C11 does not order a
/// plain store against the relaxed atomics after it, and t_busy's address never escapes, so the
/// compiler could sink `t_busy = 1` below them (or hoist `t_busy = 0` above). A signal fence is a
/// compiler-only barrier: it pins the stores where they are and emits no instruction.
static inline void swl_enter_busy(void) {
    t_busy = 1;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

static inline void swl_leave_busy(void) {
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    t_busy = 0;
}

static void swl_try_init(void);
static void swl_after_fork_in_child(void);

/// The hot path's rare calls (the first hook's start-up, a fork child's first hook, the thread's
/// first event, a full ring) keep every register but r11 for their caller (preserve_most): the
/// hooks then keep their values in the caller-saved registers across them and need not save and
/// restore callee-saved ones on every call for a call that almost never happens (free's hook pushed
/// and popped five for them).
#if __has_attribute(preserve_most)
#define SWL_RARE_PATH __attribute__((noinline, cold, preserve_most))
#else
#define SWL_RARE_PATH __attribute__((noinline, cold))
#endif

/// swl_should_record when the state is not "recording": the start, a fork child's first hook.
static SWL_RARE_PATH bool swl_should_record_slowly(int state) {
    if (t_busy) return false;
    if (state == STATE_NEW_PROCESS) {
        swl_after_fork_in_child();
        return __atomic_load_n(&g_state, __ATOMIC_ACQUIRE) == STATE_RECORDING;
    }
    if (state != STATE_UNINIT) return false;
    swl_try_init();
    if (__atomic_load_n(&g_state, __ATOMIC_ACQUIRE) != STATE_RECORDING) return false;
    return !t_busy;
}

static inline bool swl_should_record(void) {
    int state = __atomic_load_n(&g_state, __ATOMIC_ACQUIRE);
    if (SWL_UNLIKELY(state != STATE_RECORDING)) return swl_should_record_slowly(state);
    return !t_busy;
}

static SWL_RARE_PATH uint32_t swl_fetch_tid(void) {
    t_tid = (uint32_t)syscall(SYS_gettid);
    return t_tid;
}

static inline uint32_t swl_tid(void) {
    uint32_t tid = t_tid;
    return SWL_LIKELY(tid != 0) ? tid : swl_fetch_tid();
}

static void swl_go_quiet(void) {
    __atomic_store_n(&g_state, STATE_QUIET, __ATOMIC_RELEASE);
    if (g_ring) __atomic_store_n(&g_ring->disabled, 1, __ATOMIC_RELEASE);
}

// MARK: - Text without stdio (nothing here may allocate)

static void swl_write_stderr(const char *text) {
    size_t length = strlen(text);
    while (length > 0) {
        ssize_t n = write(2, text, length);
        if (n <= 0) return;
        text += n;
        length -= (size_t)n;
    }
}

static char *swl_append_hex(char *out, uint64_t value) {
    *out++ = '0';
    *out++ = 'x';
    int shift = 60;
    while (shift > 0 && ((value >> shift) & 15) == 0) shift -= 4;
    for (; shift >= 0; shift -= 4) *out++ = "0123456789abcdef"[(value >> shift) & 15];
    return out;
}

static char *swl_append_decimal(char *out, uint64_t value) {
    char digits[24];
    int n = 0;
    do digits[n++] = (char)('0' + value % 10); while ((value /= 10) != 0);
    while (n > 0) *out++ = digits[--n];
    return out;
}

// MARK: - Ring

/// Whether swiftleak still runs. A recorder killed outright can stay a zombie until its parent
/// reaps it, and kill(pid, 0) succeeds on a zombie. A zombie has no memory left: reading one word
/// of it fails with ESRCH, where a live swiftleak gives the word, EFAULT or EPERM. No descriptor
/// (this runs on a thread of the program, which may be about to open a file and must get the
/// number it would get without us) and no allocation.
static bool swl_recorder_alive(void) {
    pid_t pid = g_ring->recorder_pid;
    if (kill(pid, 0) != 0 && errno == ESRCH) return false;
    uint64_t word;
    struct iovec local = {.iov_base = &word, .iov_len = sizeof word};
    struct iovec remote = {.iov_base = (void *)(uintptr_t)4096, .iov_len = sizeof word};
    return syscall(SYS_process_vm_readv, (long)pid, &local, 1UL, &remote, 1UL, 0UL) >= 0 || errno != ESRCH;
}

/// Whether a slot whose sequence reads `sequence` has gone past position `pos` for good: it was
/// published for `pos` by another task, or freed for a later lap. Never so for a position this task
/// alone reserved; it happens when the tail moved back over used positions (two tasks on the
/// lock-free tail, one of them a CLONE_UNTRACED thread the tracer cannot see, or a program writing
/// the header). Waiting for such a slot would wait for ever while swiftleak lives.
static inline bool swl_slot_passed(uint64_t sequence, uint64_t pos) { return (int64_t)(sequence - pos) > 0; }

/// The slow part of swl_wait_for_slot: sleeps on the ring's space epoch until the slot is free.
static bool swl_wait_for_slot_sleeping(swl_event *slot, uint64_t pos) {
    uint64_t index = pos & g_mask;
    for (;;) {
        uint32_t epoch = __atomic_load_n(&g_ring->space_epoch, __ATOMIC_ACQUIRE);
        __atomic_fetch_add(&g_ring->producers_waiting, 1, __ATOMIC_SEQ_CST);
        uint64_t before = swl_slot_sequence_seq_cst(slot, index);
        if (before == pos || swl_slot_passed(before, pos)) {
            __atomic_fetch_sub(&g_ring->producers_waiting, 1, __ATOMIC_SEQ_CST);
            if (before == pos) return true;
            swl_go_quiet();
            return false;
        }
        struct timespec timeout = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
        long rc = syscall(SYS_futex, &g_ring->space_epoch, FUTEX_WAIT, epoch, &timeout, NULL, 0);
        int error = errno;
        __atomic_fetch_sub(&g_ring->producers_waiting, 1, __ATOMIC_SEQ_CST);
        uint64_t sequence = swl_slot_sequence(slot, index);
        if (sequence == pos) return true;
        if (swl_slot_passed(sequence, pos)) {
            // The ring's order is lost: the program runs on untracked rather than wait for ever.
            swl_go_quiet();
            return false;
        }
        if (rc == -1 && error == ETIMEDOUT && !swl_recorder_alive()) {
            swl_go_quiet();
            return false;
        }
    }
}

/// Waits until the consumer has freed the slot for `pos`. Returns false when the recorder is gone:
/// the interposer then goes quiet and the program runs on untracked.
/// errno is the program's: the futex wait and the liveness checks below set it, so it is kept
/// and given back (free must leave it alone, and a malloc that succeeds must not change it).
static SWL_RARE_PATH bool swl_wait_for_slot(swl_event *slot, uint64_t pos) {
    uint64_t index = pos & g_mask;
    for (int spin = 0; spin < 256; spin++) {
        if (swl_slot_sequence(slot, index) == pos) return true;
        __builtin_ia32_pause();
    }
    int saved_errno = errno;
    bool got = swl_wait_for_slot_sleeping(slot, pos);
    errno = saved_errno;
    return got;
}

/// Reserves the next position in the ring's total order. Returns NULL when the recorder is gone.
/// Called with t_busy set: a signal handler's hooks pass through meanwhile, so on one thread no
/// other reservation can come between the load and the store of the single-producer path.
static inline swl_event *swl_reserve(uint64_t *pos_out) {
    uint64_t pos;
    if (__atomic_load_n(&g_ring->single_producer, __ATOMIC_RELAXED)) {
        // No other task writes here (swl_ring_header.single_producer): no lock, no fence. The
        // slot's release store below still orders the event for the consumer.
        pos = __atomic_load_n(&g_ring->tail, __ATOMIC_RELAXED);
        __atomic_store_n(&g_ring->tail, pos + 1, __ATOMIC_RELAXED);
    } else {
        pos = __atomic_fetch_add(&g_ring->tail, 1, __ATOMIC_RELAXED);
    }
    swl_event *slot = &g_slots[pos & g_mask];
    if (SWL_UNLIKELY(swl_slot_sequence(slot, pos & g_mask) != pos)) {
        if (!swl_wait_for_slot(slot, pos)) return NULL;
    }
    *pos_out = pos;
    return slot;
}

static inline void swl_publish(swl_event *slot, uint64_t pos, uint64_t address, uint64_t info, uint32_t stack) {
    slot->address = address;
    slot->info = info;
    slot->stack = stack;
    slot->thread = swl_tid();
    swl_slot_set_sequence(slot, pos & g_mask, pos + 1);
}

static inline void swl_emit(swl_event_type type, swl_function fn, uint64_t address, uint64_t size, uint32_t stack) {
    uint64_t pos;
    swl_event *slot = swl_reserve(&pos);
    if (slot) swl_publish(slot, pos, address, swl_event_info(type, fn, size), stack);
}

// MARK: - Stack store

/// Bump-allocates `bytes` (a multiple of 8) in the store; returns its id, or 0 when full.
static uint32_t swl_store_allocate(uint64_t bytes, void **out) {
    uint64_t offset = __atomic_fetch_add(&g_ring->store_used, bytes, __ATOMIC_RELAXED);
    // Checked without overflow: the program can write store_used (the shared header is in its memory).
    if (offset > g_store_size || bytes > g_store_size - offset || offset / 8 > UINT32_MAX) return 0;
    *out = g_store + offset;
    return (uint32_t)(offset / 8);
}

static inline swl_stack_record *swl_stack_at(uint32_t id) {
    return (swl_stack_record *)(g_store + (uint64_t)id * 8);
}

static inline uint32_t swl_hash_frames(const uint64_t *frames, uint32_t depth) {
    // Four independent lanes: a chain of dependent multiplies costs ~4 cycles a frame, and this
    // runs on every allocation. Collisions only cost a comparison.
    uint64_t a = 0x9e3779b97f4a7c15ULL ^ depth, b = 0xc2b2ae3d27d4eb4fULL, c = 0x165667b19e3779f9ULL, d = 0;
    uint32_t i = 0;
    for (; i + 4 <= depth; i += 4) {
        a = (a ^ frames[i]) * 0xff51afd7ed558ccdULL;
        b = (b ^ frames[i + 1]) * 0xc4ceb9fe1a85ec53ULL;
        c = (c ^ frames[i + 2]) * 0x9e3779b97f4a7c15ULL;
        d = (d ^ frames[i + 3]) * 0xd6e8feb86659fd93ULL;
    }
    for (; i < depth; i++) a = (a ^ frames[i]) * 0xff51afd7ed558ccdULL;
    uint64_t h = a ^ (b >> 7) ^ (c << 11) ^ (d >> 17);
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    return (uint32_t)(h ^ (h >> 32));
}

/// Whether two stacks of `depth` frames are equal. Word by word, not memcmp: the walk has just
/// stored `frames` one word at a time, and memcmp's wide loads of words still in the store buffer
/// cannot be forwarded from those stores; each waits for the stores to reach the cache.
static inline bool swl_same_frames(const uint64_t *a, const uint64_t *b, uint32_t depth) {
    uint64_t difference = 0;
    for (uint32_t i = 0; i < depth; i++) difference |= a[i] ^ b[i];
    return difference == 0;
}

/// Walks a bucket chain from `id` until `stop`, looking for an equal stack.
static inline uint32_t swl_find_stack(uint32_t id, uint32_t stop, uint32_t hash, const uint64_t *frames, uint32_t depth) {
    while (id != 0 && id != stop) {
        swl_stack_record *record = swl_stack_at(id);
        if (record->hash == hash && record->depth == depth && swl_same_frames(record->frames, frames, depth)) {
            return id;
        }
        id = record->next;
    }
    return 0;
}

/// Interns a stack: equal stacks get one id, lock-free, across threads. A record is fully written
/// before the compare-and-swap that publishes it, so readers never see a partial one.
static uint32_t swl_intern_stack(const uint64_t *frames, uint32_t depth) {
    uint32_t hash = swl_hash_frames(frames, depth);
    uint32_t *bucket = &g_buckets[hash & g_bucket_mask];
    uint32_t head = __atomic_load_n(bucket, __ATOMIC_ACQUIRE);
    uint32_t found = swl_find_stack(head, 0, hash, frames, depth);
    if (found) return found;

    void *memory;
    uint32_t id = swl_store_allocate(sizeof(swl_stack_record) + (uint64_t)depth * 8, &memory);
    if (id == 0) return 0;
    swl_stack_record *record = memory;
    record->hash = hash;
    record->depth = depth;
    record->kind = SWL_RECORD_STACK;
    memcpy(record->frames, frames, depth * sizeof(uint64_t));
    for (;;) {
        record->next = head;
        if (__atomic_compare_exchange_n(bucket, &head, id, false, __ATOMIC_RELEASE, __ATOMIC_ACQUIRE)) return id;
        // Someone pushed first: look only at what was pushed since we last looked.
        found = swl_find_stack(head, record->next, hash, frames, depth);
        if (found) return found; // our record stays unreferenced in the store
    }
}

// MARK: - Stack capture

/// Which unwinder captures stacks. SWIFTLEAK_UNWINDER=libunwind forces libunwind (to compare
/// speed); =verify runs both on every stack and reports any difference on stderr at exit (tests).
/// libunwind is loaded (dlopen) only then: it keeps a pipe open in the program for its memory
/// checks, on fds the program believes are free, so it must never be part of a normal run.
enum { UNWINDER_OWN = 0, UNWINDER_LIBUNWIND = 1, UNWINDER_VERIFY = 2 };
static int g_unwinder = UNWINDER_OWN;
static int (*g_libunwind_backtrace)(void **frames, int max);

/// Loads libunwind for the diagnostic modes; false (and the own walker stays) when it is missing.
static bool swl_load_libunwind(void) {
    void *library = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) return false;
    g_libunwind_backtrace = (int (*)(void **, int))dlsym(library, "unw_backtrace");
    int (*set_caching_policy)(void *, int) = (int (*)(void *, int))dlsym(library, "_ULx86_64_set_caching_policy");
    void **local_address_space = (void **)dlsym(library, "_ULx86_64_local_addr_space");
    if (set_caching_policy && local_address_space) set_caching_policy(*local_address_space, 2 /* UNW_CACHE_PER_THREAD */);
    return g_libunwind_backtrace != NULL;
}

static struct {
    uint64_t stacks, walked_by_own, mismatches, known;
} g_verify;

/// Drops the frames of our own (this function, the hook) that precede the program's call. Returns
/// the index of `caller` in `raw`, or -1 when the unwinder did not walk out of the hook.
static inline int swl_first_program_frame(const uint64_t *raw, int count, void *caller) {
    for (int i = 0; i < count && i < SWL_OWN_FRAMES + 1; i++) {
        if (raw[i] == (uint64_t)(uintptr_t)caller) return i;
    }
    return -1;
}

/// Verify mode: walks the stack with both unwinders and reports (the first few) differences.
static __attribute__((noinline)) void swl_verify_walk(const uint64_t *own_raw, int own_count, void *caller) {
    uint64_t reference[SWL_MAX_FRAMES + SWL_OWN_FRAMES];
    int limit = (int)g_max_frames + SWL_OWN_FRAMES;
    int reference_count = g_libunwind_backtrace((void **)reference, limit);
    __atomic_fetch_add(&g_verify.stacks, 1, __ATOMIC_RELAXED);
    if (own_count < 0) return; // the walker is not available here: nothing to compare
    __atomic_fetch_add(&g_verify.walked_by_own, 1, __ATOMIC_RELAXED);
    int own_first = swl_first_program_frame(own_raw, own_count, caller);
    int reference_first = swl_first_program_frame(reference, reference_count, caller);
    int own_depth = own_count - own_first, reference_depth = reference_count - reference_first;
    // The walkers may start at different own frames but must agree from the program's call on,
    // up to the depth kept (a walk that hits the limit stops at a different outer frame).
    int kept = (int)g_max_frames;
    if (own_depth > kept) own_depth = kept;
    if (reference_depth > kept) reference_depth = kept;
    bool same = own_first >= 0 && reference_first >= 0 && own_depth == reference_depth &&
                memcmp(own_raw + own_first, reference + reference_first, (size_t)own_depth * 8) == 0;
    if (same) return;
    if (__atomic_fetch_add(&g_verify.mismatches, 1, __ATOMIC_RELAXED) >= 5) return;
    char line[64 + 2 * (SWL_MAX_FRAMES + SWL_OWN_FRAMES) * 20], *out = line;
    const char *intro = "swiftleak: unwinder mismatch: own";
    memcpy(out, intro, strlen(intro));
    out += strlen(intro);
    for (int i = 0; i < own_count; i++) { *out++ = ' '; out = swl_append_hex(out, own_raw[i]); }
    memcpy(out, " / libunwind", 12);
    out += 12;
    for (int i = 0; i < reference_count; i++) { *out++ = ' '; out = swl_append_hex(out, reference[i]); }
    *out++ = '\n';
    *out = 0;
    swl_write_stderr(line);
}

/// Verify mode, for a stack the walker knew without walking: its frames must be libunwind's, and
/// the id it was kept with the one interning them gives (a difference counts as a mismatch).
static __attribute__((noinline)) void swl_verify_known(const uint64_t *frames, int count, void *caller, uint32_t known) {
    __atomic_fetch_add(&g_verify.known, 1, __ATOMIC_RELAXED);
    swl_verify_walk(frames, count, caller);
    uint32_t interned = swl_intern_stack(frames, (uint32_t)count);
    if (interned == known || interned == 0) return;
    if (__atomic_fetch_add(&g_verify.mismatches, 1, __ATOMIC_RELAXED) >= 5) return;
    swl_write_stderr("swiftleak: unwinder mismatch: a known stack's id is not its frames' id\n");
}

static void swl_report_verify(void) {
    char line[256], *out = line;
    const char *parts[] = {"swiftleak: unwinder verify: ", " stacks, ", " walked by swiftleak, ", " mismatches\n"};
    uint64_t values[] = {__atomic_load_n(&g_verify.stacks, __ATOMIC_RELAXED),
                         __atomic_load_n(&g_verify.walked_by_own, __ATOMIC_RELAXED),
                         __atomic_load_n(&g_verify.mismatches, __ATOMIC_RELAXED)};
    for (int i = 0; i < 4; i++) {
        memcpy(out, parts[i], strlen(parts[i]));
        out += strlen(parts[i]);
        if (i < 3) out = swl_append_decimal(out, values[i]);
    }
    // How many of the stacks came from the threads' known stacks (no walk): the tests see that
    // the known stacks serve recurring paths, and that a thread resting from them comes back.
    const char *known = "swiftleak: unwinder verify known: ";
    memcpy(out, known, strlen(known));
    out = swl_append_decimal(out + strlen(known), __atomic_load_n(&g_verify.known, __ATOMIC_RELAXED));
    *out++ = '\n';
    *out = 0;
    swl_write_stderr(line);
}

/// Whether this thread was given its area for known stacks (or found it has none).
static SWL_TLS __thread bool t_walker_area_given;

/// On a thread's first capture: the walker keeps its known stacks at the far end of the thread's
/// own stack (nothing else uses that end; static TLS is too small a place, see unwind.c).
static __attribute__((noinline, cold)) void swl_give_walker_area(void) {
    t_walker_area_given = true;
    void *far_end = swl_own_stack_far_end();
    if (far_end && swl_unwind_area_bytes() <= SWL_OWN_STACK_SIZE / 16) swl_unwind_use_area(far_end);
}

/// Captures the stack of the program's call to an allocation function, from the program's frame
/// at the hooked call (`entry`: the hooks run on a stack of their own). libunwind, which walks
/// from here, goes through the stack switch's CFI; its own frames before the caller are dropped.
/// `known_looked_up`: the caller already found that no known stack fits (swl_stack_before_call).
static __attribute__((noinline)) uint32_t swl_capture_stack(swl_entry entry, bool known_looked_up) {
    uint64_t raw[SWL_MAX_FRAMES + SWL_OWN_FRAMES];
    void *caller = (void *)(uintptr_t)entry.sp[0];
    int limit = (int)g_max_frames + SWL_OWN_FRAMES;
    uint64_t epoch = __atomic_load_n(&g_ring_epoch, __ATOMIC_RELAXED);
    if (SWL_UNLIKELY(!t_walker_area_given)) swl_give_walker_area();
    if (g_unwinder != UNWINDER_LIBUNWIND && !known_looked_up) {
        uint32_t known;
        int known_count = 0;
        bool verify = g_unwinder == UNWINDER_VERIFY;
        if (swl_unwind_known(entry.sp, entry.rbp, epoch, &known, verify ? raw : NULL, &known_count)) {
            if (SWL_UNLIKELY(verify)) swl_verify_known(raw, known_count, caller, known);
            return known;
        }
    }
    int count = g_unwinder == UNWINDER_LIBUNWIND ? g_libunwind_backtrace((void **)raw, limit)
                                                 : swl_unwind_at(raw, (int)g_max_frames, entry.sp, entry.rbp);
    if (SWL_UNLIKELY(g_unwinder == UNWINDER_VERIFY)) swl_verify_walk(raw, count, caller);
    int first = swl_first_program_frame(raw, count, caller);
    if (first < 0) {
        // The unwinder could not walk out of the hook (no unwind info somewhere): keep the one
        // frame we know for sure.
        raw[0] = (uint64_t)(uintptr_t)caller;
        first = 0;
        count = 1;
    }
    int depth = count - first;
    if (depth > (int)g_max_frames) depth = (int)g_max_frames;
    uint32_t stack = swl_intern_stack(raw + first, (uint32_t)depth);
    // Our walker starts at the caller (first is 0) and stops at g_max_frames: raw is the stack.
    if (g_unwinder != UNWINDER_LIBUNWIND && stack != 0 && first == 0 && depth == count) swl_unwind_remember(epoch, stack);
    return stack;
}

/// Captures the caller's stack *before* the real allocation runs, so nothing of the walk holds a
/// copy of the new block's address (the own stack is not scanned either; this keeps libunwind's
/// caches clean too).
static inline __attribute__((always_inline)) uint32_t swl_stack_before_call(swl_entry entry) {
    swl_enter_busy();
    // The common case first, a stack the thread knows (unwind.h), without the frame that
    // swl_capture_stack sets up for a walk: 25 instructions of every allocation on malloc_heavy.
    // Inline in each hook with the look-up (always_inline: the compiler kept one shared copy,
    // whose call and saved registers took back half of what inlining the look-up saved).
    // `known` apart from `stack`: its address escapes, and a walk's id kept in it would be stored
    // and loaded again around the fence in swl_leave_busy.
    bool look_up = SWL_LIKELY(t_walker_area_given) && g_unwinder == UNWINDER_OWN;
    uint32_t known, stack;
    if (look_up && swl_unwind_known(entry.sp, entry.rbp, __atomic_load_n(&g_ring_epoch, __ATOMIC_RELAXED), &known, NULL, NULL)) {
        stack = known;
    } else {
        stack = swl_capture_stack(entry, look_up);
    }
    swl_leave_busy();
    return stack;
}

static inline void swl_publish_alloc(void *pointer, size_t size, swl_function fn, uint32_t stack) {
    swl_own_stack_returning(pointer);
    swl_enter_busy();
    swl_emit(SWL_EVENT_ALLOC, fn, (uint64_t)(uintptr_t)pointer, size, stack);
    swl_leave_busy();
}

/// A block fresh from glibc (malloc, the memalign family, operator new; not calloc, which zeroes,
/// nor realloc, which keeps the old contents) still holds what its memory held while it was free:
/// the free-list links glibc wrote there (fd/bk in a chunk's first words, fd_nextsize/bk_nextsize
/// after them for large chunks, and the same words of every freed chunk merged into a bigger free
/// one), and whatever the chunk's earlier owners left in it. A raw link points at a chunk header,
/// 16 bytes before a block, i.e. into the block before it (for sizes of 16k + 8); an earlier
/// owner's word may point anywhere into a block (a char * into a string, a struct's second field).
/// Inside a reachable block such a word makes a lost block "possibly lost", inside a lost one it
/// makes another lost block "indirectly" lost. Valgrind counts none of them: a fresh block's
/// contents are undefined to it. So the part of the block the program asked for is zeroed before
/// the program gets it: its contents are indeterminate, so no correct program can tell. (Until 2
/// Dec only the words that looked like links, non-zero and 16-byte aligned, were cleared: that
/// left the unaligned interior pointers, and testing every word cost more than the stores do.)
/// Chunks glibc mmapped are fresh zero pages and are left alone. Past 4 KiB, only the first four
/// words are zeroed (where glibc's links lie in a chunk it never merged), so that memory the
/// program may never touch is not written.
#define SWL_CLEAR_WHOLE_BLOCK_LIMIT 4096

/// What the bytes the hooks clear are set to: 0, or, while glibc perturbs (MALLOC_PERTURB_=N,
/// GLIBC_TUNABLES=glibc.malloc.perturb=N, mallopt(M_PERTURB, N)), glibc's allocation byte
/// N ^ 0xff in every byte of the word. A program runs with perturbing to make its reads of memory
/// it never wrote visible; zeros there would hide exactly those bugs. glibc 2.36 fills the
/// requested bytes of every block its arena code (_int_malloc) hands out with that byte: a fresh
/// or recycled chunk, mmapped ones, the memalign family, the part realloc copied to a new chunk
/// (up to 15 bytes short of the end: it perturbs its chunk size less 15); not a block from the
/// per-thread cache (tcache: sizes up to 1032 bytes freed by the same thread), which keeps its old
/// contents and the cache's two link words, nor a part realloc grew in place, nor calloc's zeros.
/// So the hooks write the byte wherever they would have written zeros: where glibc perturbed, the
/// same bytes it wrote; where it did not, what it writes for memory the program never wrote, in
/// place of contents no program can rely on. The slack gets it too (glibc leaves it as the chunk
/// was), so a word the hooks write is all of the byte, never that byte beside zeros: a word of one
/// repeated non-zero byte is never a canonical user-space pointer (its top byte is not zero), so
/// the exit scan follows no more than with zeros. After a realloc, a word the program shares with
/// the slack keeps the program's bytes with the byte above them: its top byte is not zero either.
/// Kept in a global, read once per allocation (a plain load, no branch: one instruction more per
/// malloc under callgrind), set at start-up from the environment as glibc reads it, and by the
/// mallopt hook.
static uint64_t g_fill_word;
/// mallopt(M_PERTURB) came first: the start-up's reading of the environment must not undo it.
static bool g_fill_set_by_mallopt;

/// Every byte of a word set to the byte glibc fills new memory with for perturb setting
/// `perturb` (memset's conversion of `perturb ^ 0xff` to unsigned char; 0 when `perturb` is 0, off).
static uint64_t swl_fill_word_for(int64_t perturb) {
    return perturb == 0 ? 0 : (uint64_t)((perturb ^ 0xff) & 0xff) * 0x0101010101010101ull;
}

/// The masks that keep a word's first 0...8 bytes (x86_64 is little-endian: its low bytes).
static const uint64_t swl_first_bytes_mask[9] = {
    0, 0xff, 0xffff, 0xffffff, 0xffffffff, 0xffffffffff, 0xffffffffffff, 0xffffffffffffff, ~(uint64_t)0,
};

/// Zeroes a block's slack: glibc rounds every request up to its chunk (malloc(58) gets 72 usable
/// bytes), and the bytes past the requested size still hold what the chunk's previous owner wrote
/// there (or, after a realloc that kept a shrunk block in place, the program's former data). The
/// exit scan reads a reached block up to its usable size, since programs that ask
/// malloc_usable_size (Swift's arrays) keep data there, and Valgrind never sees those bytes: a
/// stale pointer in them kept a lost block alive (perl's hash keys, their NUL overwriting only the
/// low bytes of an old pointer, in one run of five). The program cannot tell: the slack is not its
/// data until it asks for it, after this. An arena chunk's slack is at most 24 bytes but for
/// memalign's and realloc's kept remainders: its last three words are zeroed (a fresh block's
/// contents are indeterminate) or, after a realloc, masked to the bytes the program asked for,
/// with no branch on the size (the smallest chunk has three usable words). A
/// bigger slack (below 64 bytes, as the scan believes) is zeroed with memset. An mmapped chunk's
/// slack is fresh zero pages unless realloc kept it shrunk (`fresh` false): then it is zeroed where
/// the scan would read it (less than two pages; `GlibcChunk` in the scanner).
/// `size_field`: the chunk header word at `block - 8`, which the caller has read. `fill`: what
/// "zeroed" writes here and in swl_forget_grown_links, g_fill_word (0 unless glibc perturbs).
static inline void swl_forget_slack(void *block, uint64_t size_field, size_t requested, bool fresh, uint64_t fill) {
    uint64_t *words = block;
    bool mmapped = (size_field & 2) != 0;
    uint64_t usable = (size_field & ~(uint64_t)7) - (mmapped ? 16 : 8);
    uint64_t slack = usable - requested; // huge if usable < requested: a header we do not know
    if (SWL_LIKELY(!mmapped && slack <= 24 && usable >= 24)) {
        uint64_t last = usable / 8 - 3;
        if (fresh) {
            // Nothing in a fresh block is the program's yet: three stores, no load.
            words[last] = words[last + 1] = words[last + 2] = fill;
            return;
        }
        int64_t asked = (int64_t)requested - (int64_t)(last * 8); // bytes of `last` on the program's side
        for (int64_t i = 0; i < 3; i++) {
            int64_t kept = asked - 8 * i;
            uint64_t mask = swl_first_bytes_mask[kept < 0 ? 0 : kept > 8 ? 8 : kept];
            words[last + i] = (words[last + i] & mask) | (fill & ~mask);
        }
        return;
    }
    if (mmapped ? fresh || slack >= 2 * 4096 : slack >= 64) return;
    memset((char *)block + requested, (int)(fill & 0xff), slack);
}

/// Zeroes the block's slack (swl_forget_slack), then the part of a block past its first `kept`
/// bytes, up to `requested` (a fresh block keeps nothing). For a realloc'd block, `kept` is the old
/// block's usable size (what glibc copied, or what stayed in place): the part past it is memory
/// that was free a moment ago (a free neighbour the block grew over, or the rest of the chunk it
/// moved to), with its links and its earlier owners' words. Valgrind counts none of it
/// (undefined), so the program cannot have relied on it. Past 4 KiB of new bytes, only the first
/// four words (five after a realloc), so that memory the program may never touch is not written.
static inline void swl_forget_grown_links(void *block, size_t kept, size_t requested) {
    uint64_t *words = block;
    // Read once for both: the stores below lie past the header, so it still holds after them.
    uint64_t size_field = words[-1];
    uint64_t chunk_size = size_field & ~(uint64_t)7;
    if (kept == 0 && (size_field & 2) == 0 && chunk_size >= 32 && chunk_size - 8 <= SWL_CLEAR_WHOLE_BLOCK_LIMIT &&
        requested <= chunk_size - 8) {
        // A fresh arena chunk (nearly every malloc): the requested part and the slack are one
        // memset of the usable size, without swl_forget_slack's branches.
        // g_fill_word: 0 but while glibc perturbs. Read here and below, not once above: the
        // compiler then kept this path as short as with a constant 0 but for the load.
        memset(block, (int)(__atomic_load_n(&g_fill_word, __ATOMIC_RELAXED) & 0xff), chunk_size - 8);
        return;
    }
    uint64_t fill = __atomic_load_n(&g_fill_word, __ATOMIC_RELAXED);
    swl_forget_slack(block, size_field, requested, kept == 0, fill);
    if (requested <= kept) return;
    if (size_field & 2) return; // IS_MMAPPED: fresh zero pages (past the copy)
    if (chunk_size < 32) return;
    uint64_t first = (kept + 7) / 8;
    uint64_t end = (requested + 7) / 8;
    // Past 4 KiB, only where glibc's links lie: a fresh chunk's first four words, or, in a part
    // realloc grew over a free neighbour in place, that neighbour's size word and its four links
    // after it (its bk_nextsize, a fifth word, made a lost block possibly lost:
    // TestPrograms/scan/realloc_large_tail.c).
    if (requested - kept > SWL_CLEAR_WHOLE_BLOCK_LIMIT) end = first + (kept == 0 ? 4 : 5);
    uint64_t usable_words = (chunk_size - 8) / 8;
    if (end > usable_words) end = usable_words;
    if (first >= end) return;
    memset(words + first, (int)(fill & 0xff), (end - first) * 8);
}

/// A fresh block: nothing in it is the program's yet.
static inline void swl_forget_allocator_links(void *block, size_t requested) {
    swl_forget_grown_links(block, 0, requested);
}

static inline void swl_record_free(void *pointer, swl_function fn) {
    swl_enter_busy();
    swl_emit(SWL_EVENT_FREE, fn, (uint64_t)(uintptr_t)pointer, 0, 0);
    swl_leave_busy();
}

// MARK: - Modules

typedef struct swl_known_module {
    uint64_t load_bias;
    uint64_t start;
    uint32_t record;
    uint32_t seen; /* generation mark used while diffing */
} swl_known_module;

#define SWL_MAX_MODULES 4096
static swl_known_module g_modules[SWL_MAX_MODULES];
static int g_module_count;
static uint32_t g_module_generation;
static int g_module_lock;

static void swl_lock_modules(void) {
    while (__atomic_exchange_n(&g_module_lock, 1, __ATOMIC_ACQUIRE)) sched_yield();
}
static void swl_unlock_modules(void) { __atomic_store_n(&g_module_lock, 0, __ATOMIC_RELEASE); }

static size_t swl_find_build_id(const struct dl_phdr_info *info, const uint8_t **out) {
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE) continue;
        const uint8_t *note = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr);
        const uint8_t *end = note + ph->p_memsz;
        while (note + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)note;
            const uint8_t *name = note + sizeof(ElfW(Nhdr));
            const uint8_t *desc = name + ((nh->n_namesz + 3) & ~3u);
            if (desc + nh->n_descsz > end) break;
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && memcmp(name, "GNU", 4) == 0) {
                *out = desc;
                return nh->n_descsz;
            }
            note = desc + ((nh->n_descsz + 3) & ~3u);
        }
    }
    return 0;
}

static int swl_module_callback(struct dl_phdr_info *info, size_t size, void *context) {
    (void)size;
    int *index = context;
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD) continue;
        uint64_t s = info->dlpi_addr + ph->p_vaddr;
        uint64_t e = s + ph->p_memsz;
        if (s < lo) lo = s;
        if (e > hi) hi = e;
    }
    int position = (*index)++;
    if (lo >= hi) return 0;
    lo &= ~(uint64_t)4095;

    for (int i = 0; i < g_module_count; i++) {
        if (g_modules[i].load_bias == info->dlpi_addr && g_modules[i].start == lo) {
            g_modules[i].seen = g_module_generation;
            return 0;
        }
    }
    if (g_module_count == SWL_MAX_MODULES) return 0;

    char path[PATH_MAX];
    size_t path_length;
    if (position == 0 && (info->dlpi_name == NULL || info->dlpi_name[0] == 0)) {
        ssize_t n = readlink("/proc/self/exe", path, sizeof(path));
        path_length = n > 0 ? (size_t)n : 0;
    } else {
        const char *name = info->dlpi_name ? info->dlpi_name : "";
        path_length = strnlen(name, sizeof(path));
        memcpy(path, name, path_length);
    }
    const uint8_t *build_id = NULL;
    size_t build_id_length = swl_find_build_id(info, &build_id);
    if (build_id_length > 64) build_id_length = 64;

    uint64_t bytes = (sizeof(swl_module_record) + build_id_length + path_length + 7) & ~(uint64_t)7;
    void *memory;
    uint32_t id = swl_store_allocate(bytes, &memory);
    if (id == 0) return 0;
    swl_module_record *record = memory;
    record->kind = SWL_RECORD_MODULE;
    record->load_bias = info->dlpi_addr;
    record->start = lo;
    record->end = hi;
    record->build_id_length = (uint32_t)build_id_length;
    record->path_length = (uint32_t)path_length;
    if (build_id_length) memcpy(record->data, build_id, build_id_length);
    memcpy(record->data + build_id_length, path, path_length);

    g_modules[g_module_count++] = (swl_known_module){
        .load_bias = info->dlpi_addr, .start = lo, .record = id, .seen = g_module_generation};
    swl_emit(SWL_EVENT_MODULE_LOAD, SWL_FN_UNKNOWN, info->dlpi_addr, 0, id);
    return 0;
}

/// Publishes a load event for every module not seen before and an unload event for every module
/// that is gone. Called at start and after each dlopen/dlclose (rare: a lock is fine here).
static void swl_refresh_modules(void) {
    int was_busy = t_busy;
    t_busy = 1;
    swl_lock_modules();
    g_module_generation++;
    int index = 0;
    dl_iterate_phdr(swl_module_callback, &index);
    int kept = 0;
    for (int i = 0; i < g_module_count; i++) {
        if (g_modules[i].seen == g_module_generation) {
            g_modules[kept++] = g_modules[i];
        } else {
            swl_emit(SWL_EVENT_MODULE_UNLOAD, SWL_FN_UNKNOWN, g_modules[i].load_bias, 0, g_modules[i].record);
        }
    }
    g_module_count = kept;
    swl_unlock_modules();
    t_busy = was_busy;
}

// MARK: - Start-up

/// Finds glibc's main_arena: a chunk freed into the unsorted bin has its `bk` pointing at the bin,
/// which sits 96 bytes into struct malloc_state (glibc 2.26 and later, x86_64). The recorder only
/// uses the range if it lies in libc's writable data, so a wrong guess costs nothing.
static void swl_locate_main_arena(void) {
    void *probe = __libc_malloc(2048); // over the tcache limit (1032 bytes): goes to the unsorted bin
    void *guard = __libc_malloc(16);   // keeps `probe` from merging into the top chunk
    if (probe == NULL || guard == NULL) {
        __libc_free(probe);
        __libc_free(guard);
        return;
    }
    __libc_free(probe);
    uint64_t bin = ((volatile uint64_t *)probe)[1];
    __libc_free(guard);
    if (bin > 96) {
        g_ring->allocator_state_start = bin - 96;
        g_ring->allocator_state_end = bin - 96 + 2200; // sizeof(struct malloc_state)
    }
}

static void swl_record_caller_of_exit(void);

static void swl_announce_exit(void) {
    if (g_ring && __atomic_load_n(&g_state, __ATOMIC_ACQUIRE) == STATE_RECORDING) {
        int was_busy = t_busy;
        t_busy = 1; // libunwind may allocate
        swl_record_caller_of_exit();
        t_busy = was_busy;
        __atomic_store_n(&g_ring->exiting, 1, __ATOMIC_RELEASE);
    }
}

static int swl_open_ring(const char *path, struct stat *st);
static void swl_use_ring(swl_ring_header *ring);
static uint64_t g_ring_size;

/// In a fork child (its fork handler), or a raw clone() child (its first hook, see
/// STATE_NEW_PROCESS). It still maps its parent's ring and must never write into it: it is quiet
/// unless swiftleak offered it a ring of its own in the parent's fork table (see swl_fork_offer). That ring is taken from swiftleak's
/// descriptor through /proc, checked as at the start, mapped, and the descriptor closed again: the
/// child owns no fd of ours. Nothing here allocates.
static void swl_after_fork_in_child(void) {
    int32_t self = (int32_t)syscall(SYS_getpid);
    // Already done: the first hook of a child swiftleak marked new took its ring before this
    // handler ran.
    if (__atomic_load_n(&g_state, __ATOMIC_ACQUIRE) == STATE_RECORDING && g_ring && g_ring->traced_pid == self) return;
    __atomic_store_n(&g_state, STATE_QUIET, __ATOMIC_RELEASE);
    t_tid = 0;
    // Only this thread survived the fork: a lock another thread held is nobody's now.
    __atomic_store_n(&g_module_lock, 0, __ATOMIC_RELEASE);
    swl_ring_header *parent = g_ring;
    if (parent == NULL) return;
    swl_fork_offer *table = swl_fork_table(parent);
    int offered = -1;
    for (uint32_t i = 0; i < SWL_FORK_TABLE_ENTRIES; i++) {
        if (__atomic_load_n(&table[i].child_pid, __ATOMIC_ACQUIRE) == self) {
            offered = __atomic_load_n(&table[i].fd, __ATOMIC_RELAXED);
            break;
        }
    }
    if (offered < 0) return;
    char path[64] = "/proc/";
    char *end = swl_append_decimal(path + 6, (uint64_t)(unsigned)parent->recorder_pid);
    memcpy(end, "/fd/", 4);
    end = swl_append_decimal(end + 4, (uint64_t)(unsigned)offered);
    *end = 0;
    struct stat st;
    int fd = swl_open_ring(path, &st);
    if (fd < 0) return;
    swl_ring_header *ring = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (ring == MAP_FAILED) return;
    if (ring->traced_pid != self) {
        munmap(ring, (size_t)st.st_size);
        return;
    }
    madvise(ring, (size_t)st.st_size, MADV_DONTDUMP);
    // What the interposer learnt at its start holds in the copy of the address space.
    ring->allocator_state_start = parent->allocator_state_start;
    ring->allocator_state_end = parent->allocator_state_end;
    __atomic_store_n(&ring->foreign_malloc, __atomic_load_n(&parent->foreign_malloc, __ATOMIC_ACQUIRE), __ATOMIC_RELEASE);
    munmap(parent, g_ring_size);
    g_ring_size = (uint64_t)st.st_size;
    swl_use_ring(ring);
    __atomic_store_n(&g_state, STATE_RECORDING, __ATOMIC_RELEASE);
    __atomic_store_n(&g_ring->attached, 1, __ATOMIC_RELEASE);
}

/// The digits of a decimal number at `*text` (at most 9 of them), advancing past them; -1 when none.
static long swl_parse_decimal(const char **text) {
    long value = 0;
    int digits = 0;
    while (**text >= '0' && **text <= '9' && digits < 10) {
        value = value * 10 + (**text - '0');
        (*text)++;
        digits++;
    }
    return digits == 0 || digits > 9 ? -1 : value;
}

/// The ring's path as swiftleak writes it, `/proc/<swiftleak's pid>/fd/<n>`, split into its two
/// numbers; false for anything else (the variable is the program's to set too, and no other path
/// is ever opened).
static bool swl_parse_ring_path(const char *text, long *owner, long *fd) {
    if (text == NULL || strncmp(text, "/proc/", 6) != 0) return false;
    text += 6;
    *owner = swl_parse_decimal(&text);
    if (*owner <= 0 || strncmp(text, "/fd/", 4) != 0) return false;
    text += 4;
    *fd = swl_parse_decimal(&text);
    return *fd >= 0 && *text == 0;
}

/// Whether `fd` is a ring swiftleak created: a memfd of that name whose header says so and whose
/// size matches.
static bool swl_fd_is_a_ring(int fd, struct stat *st) {
    char path[64] = "/proc/self/fd/", target[128];
    char *end = swl_append_decimal(path + 14, (uint64_t)(unsigned)fd);
    *end = 0;
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n <= 0) return false;
    target[n] = 0;
    static const char expected[] = "/memfd:" SWL_RING_MEMFD_NAME " (deleted)";
    if (strcmp(target, expected) != 0) return false;
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode) || (uint64_t)st->st_size < sizeof(swl_ring_header)) return false;
    swl_ring_header header;
    if (pread(fd, &header, sizeof header, 0) != (ssize_t)sizeof header) return false;
    return header.magic == SWL_ABI_MAGIC && header.version == SWL_ABI_VERSION && header.total_size == (uint64_t)st->st_size;
}

/// Opens the ring a path names (the environment's, or the one a fork child builds from its
/// parent's offer), when it is one: the path must name a swiftleak ring before it is opened (so a
/// forged path to a FIFO or a device is never opened) and the descriptor must be one after
/// (swl_fd_is_a_ring), created by the process the path names. Allocates nothing. Returns the
/// descriptor, which the caller closes once the ring is mapped, or -1.
static int swl_open_ring(const char *path, struct stat *st) {
    long owner, number;
    if (!swl_parse_ring_path(path, &owner, &number)) return -1;
    char target[128];
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n <= 0) return -1;
    target[n] = 0;
    static const char expected[] = "/memfd:" SWL_RING_MEMFD_NAME " (deleted)";
    if (strcmp(target, expected) != 0) return -1;
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) return -1;
    swl_ring_header header;
    if (!swl_fd_is_a_ring(fd, st) || pread(fd, &header, sizeof header, 0) != (ssize_t)sizeof header ||
        header.recorder_pid != (int32_t)owner) {
        close(fd);
        return -1;
    }
    return fd;
}

/// The value of the first environment entry `name` (as getenv), read from `environ` itself: the
/// program may define its own getenv/unsetenv (bash does, over its shell variables, which do not
/// exist yet while constructors run), and those must not stand in for libc's here.
static const char *swl_env_lookup(const char *name) {
    extern char **environ;
    size_t length = strlen(name);
    for (char **entry = environ; entry && *entry; entry++) {
        if (strncmp(*entry, name, length) == 0 && (*entry)[length] == '=') return *entry + length + 1;
    }
    return NULL;
}

/// glibc 2.36's reading of a tunable's number (_dl_strtoul, then the tunable's bounds): blanks,
/// a sign, then decimal, 0x hex or 0 octal digits up to the first other character; "abc" is 0.
/// The perturb tunable takes 0...255; any other value (a negative one, an overflow, 256) is
/// ignored, as if it were not there. Returns whether `text` sets it.
static bool swl_parse_perturb(const char *text, int64_t *out) {
    while (*text == ' ' || *text == '\t') text++;
    bool negative = *text == '-';
    if (*text == '-' || *text == '+') text++;
    uint64_t value = 0;
    if (*text >= '0' && *text <= '9') {
        unsigned base = 10;
        if (text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
            base = 16;
            text += 2;
        } else if (text[0] == '0') {
            base = 8;
        }
        for (;; text++) {
            unsigned digit;
            if (*text >= '0' && *text <= '9' && (unsigned)(*text - '0') < base) digit = (unsigned)(*text - '0');
            else if (base == 16 && *text >= 'a' && *text <= 'f') digit = (unsigned)(*text - 'a' + 10);
            else if (base == 16 && *text >= 'A' && *text <= 'F') digit = (unsigned)(*text - 'A' + 10);
            else break;
            if (value >= (UINT64_MAX - digit) / base) return false; // UINT64_MAX: -1, out of bounds
            value = value * base + digit;
        }
    }
    int64_t number = (int64_t)(negative ? 0 - value : value); // glibc's unsigned negation
    if (number < 0 || number > 0xff) return false;
    *out = number;
    return true;
}

/// The perturb setting glibc took at start-up from the environment (ld.so's __tunables_init):
/// environ in order; every glibc.malloc.perturb=N in a GLIBC_TUNABLES list sets it, a
/// MALLOC_PERTURB_=N only while nothing has, so the tunable wins over the older variable wherever
/// each stands. (The AT_SECURE filtering is left out: such a program cannot be traced with
/// LD_PRELOAD.) Read before the environment can change: glibc reads it once, before main.
static int64_t swl_perturb_from_environment(void) {
    extern char **environ;
    static const char tunables[] = "GLIBC_TUNABLES=", alias[] = "MALLOC_PERTURB_=", name[] = "glibc.malloc.perturb";
    int64_t perturb = 0;
    bool set = false;
    for (char **entry = environ; entry && *entry; entry++) {
        const char *text = *entry;
        if (strncmp(text, tunables, sizeof tunables - 1) == 0) {
            // glibc's parse_tunables: name=value pairs split by ':'; a name without '=' before the
            // next ':' is skipped, one at the end stops the list.
            const char *p = text + sizeof tunables - 1;
            for (;;) {
                size_t length = strcspn(p, "=:");
                if (p[length] == '\0') break;
                if (p[length] == ':') {
                    p += length + 1;
                    continue;
                }
                bool ours = length == sizeof name - 1 && strncmp(p, name, length) == 0;
                p += length + 1;
                size_t value_length = strcspn(p, ":");
                // Read in place: the number stops at the ':' as glibc's at the NUL it puts there.
                if (ours && swl_parse_perturb(p, &perturb)) set = true;
                if (p[value_length] == '\0') break;
                p += value_length + 1;
            }
        } else if (!set && strncmp(text, alias, sizeof alias - 1) == 0) {
            if (swl_parse_perturb(text + sizeof alias - 1, &perturb)) set = true;
        }
    }
    return perturb;
}

/// Removes every entry `name` from `environ`, in place, keeping the others' order (as glibc's
/// unsetenv does, without calling what the program may have put in its place).
static void swl_env_remove(const char *name) {
    extern char **environ;
    if (environ == NULL) return;
    size_t length = strlen(name);
    char **out = environ;
    for (char **entry = environ; *entry; entry++) {
        if (strncmp(*entry, name, length) == 0 && (*entry)[length] == '=') continue;
        *out++ = *entry;
    }
    *out = NULL;
}

/// The launcher (or, after an exec, the tracer rewriting the new image's initial stack) puts this
/// library first in LD_PRELOAD, ahead of what the user had (if anything), and names the ring in its
/// own variable. Once read, both go: the program and its children see
/// the environment the user gave them (ld.so has already loaded what LD_PRELOAD named).
static void swl_restore_environment(void) {
    extern char **environ;
    swl_env_remove(SWL_ENV_RING);
    Dl_info self;
    if (dladdr((void *)&swl_restore_environment, &self) == 0 || self.dli_fname == NULL) return;
    size_t own_length = strlen(self.dli_fname);
    for (char **entry = environ; *entry; entry++) {
        if (strncmp(*entry, "LD_PRELOAD=", 11) != 0) continue;
        char *value = *entry + 11;
        if (strncmp(value, self.dli_fname, own_length) != 0) return;
        if (value[own_length] == 0) {
            swl_env_remove("LD_PRELOAD");
        } else if (value[own_length] == ':') {
            // Shorten the string in place (no allocation): what follows is the user's value.
            memmove(value, value + own_length + 1, strlen(value + own_length + 1) + 1);
        }
        return;
    }
}

/// ld.so reads each loaded object's RUNPATH into a search list the first time it looks for a
/// library through it, and keeps that list for ever. Ours (SwiftPM writes one) would be read at the
/// program's first dlopen and show up as the program's "still reachable" blocks, which Valgrind's
/// preloads never cause: look a name up once now, while our own allocations pass untracked. The
/// name is this library's own file name, which the search finds in the RUNPATH's $ORIGIN (about 8
/// lookups; a name that exists nowhere walked every directory ld.so knows, 120 system calls and
/// 0.15 ms of every start). RTLD_NOLOAD: whatever the search finds, nothing new is loaded. The
/// error it may leave is cleared, so the program's dlerror() still tells only of its own calls.
static void swl_settle_loader_search_path(void) {
    Dl_info self;
    const char *name = "libswiftleak-no-such-library.so";
    if (dladdr((void *)&swl_settle_loader_search_path, &self) != 0 && self.dli_fname != NULL) {
        const char *slash = strrchr(self.dli_fname, '/');
        if (slash != NULL && slash[1] != 0) name = slash + 1;
    }
    void *found = dlopen(name, RTLD_LAZY | RTLD_LOCAL | RTLD_NOLOAD);
    if (found) dlclose(found);
    (void)dlerror();
}

/// Makes `ring` the one events go to (at the start, and in a fork child that was given its own).
static void swl_use_ring(swl_ring_header *ring) {
    __atomic_fetch_add(&g_ring_epoch, 1, __ATOMIC_RELAXED);
    g_ring = ring;
    g_slots = swl_ring_slots(g_ring);
    g_mask = g_ring->capacity - 1;
    g_buckets = swl_ring_buckets(g_ring);
    g_bucket_mask = g_ring->bucket_count - 1;
    g_store = swl_ring_store(g_ring);
    g_store_size = g_ring->store_size;
    g_max_frames = g_ring->max_frames;
    if (g_max_frames == 0) g_max_frames = 1;
    if (g_max_frames > SWL_MAX_FRAMES) g_max_frames = SWL_MAX_FRAMES;
    __atomic_store_n(&g_ring->state_address, (uint64_t)(uintptr_t)&g_state, __ATOMIC_RELEASE);
    swl_own_stack_use_ring(g_ring);
}

static void swl_try_init(void) {
    extern char **environ;
    int expected = STATE_UNINIT;
    if (!__atomic_compare_exchange_n(&g_state, &expected, STATE_INITIALIZING, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) return;
    if (environ == NULL) {
        // Too early in libc's start-up to read the environment: try again on the next call.
        __atomic_store_n(&g_state, STATE_UNINIT, __ATOMIC_RELEASE);
        return;
    }
    t_busy = 1;
    int final_state = STATE_QUIET;
    const char *ring_variable = swl_env_lookup(SWL_ENV_RING);
    struct stat st;
    int fd = swl_open_ring(ring_variable, &st);
    if (fd >= 0) {
        swl_ring_header *probe = mmap(NULL, sizeof(swl_ring_header), PROT_READ, MAP_SHARED, fd, 0);
        if (probe != MAP_FAILED) {
            // One image per ring: after an exec the pid is the same, and a stale variable (a
            // program that copied its environment) must not reach the ring of the image before.
            bool valid = probe->traced_pid == (int32_t)getpid() && __atomic_load_n(&probe->attached, __ATOMIC_ACQUIRE) == 0;
            uint64_t total = probe->total_size;
            munmap(probe, sizeof(swl_ring_header));
            if (valid) {
                void *whole = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
                if (whole != MAP_FAILED) {
                    // A core file of the program must hold the program, not gigabytes of ring.
                    madvise(whole, total, MADV_DONTDUMP);
                    g_ring_size = total;
                    swl_use_ring(whole);
                    final_state = STATE_RECORDING;
                }
            }
        }
        // Opened here: the mapping stays, the descriptor must not show up in the program or its
        // children.
        close(fd);
    }
    if (ring_variable != NULL) swl_restore_environment();
    if (final_state == STATE_RECORDING) {
        const char *unwinder = swl_env_lookup(SWL_ENV_UNWINDER);
        if (unwinder && strcmp(unwinder, "libunwind") == 0) g_unwinder = UNWINDER_LIBUNWIND;
        if (unwinder && strcmp(unwinder, "verify") == 0) g_unwinder = UNWINDER_VERIFY;
        if (g_unwinder != UNWINDER_OWN && !swl_load_libunwind()) g_unwinder = UNWINDER_OWN;
        if (g_unwinder == UNWINDER_VERIFY) atexit(swl_report_verify);
        swl_settle_loader_search_path();
        pthread_atfork(NULL, NULL, swl_after_fork_in_child);
        // Registered first, so it runs after every handler the program registers later.
        atexit(swl_announce_exit);
        swl_locate_main_arena();
        // Before the first hook clears a block. Fork children keep their parent's; an exec'd
        // image reads its own environment, as its glibc does.
        if (!__atomic_load_n(&g_fill_set_by_mallopt, __ATOMIC_RELAXED)) {
            __atomic_store_n(&g_fill_word, swl_fill_word_for(swl_perturb_from_environment()), __ATOMIC_RELAXED);
        }
        __atomic_store_n(&g_state, STATE_RECORDING, __ATOMIC_RELEASE);
        swl_refresh_modules();
        __atomic_store_n(&g_ring->attached, 1, __ATOMIC_RELEASE);
    } else {
        __atomic_store_n(&g_state, STATE_QUIET, __ATOMIC_RELEASE);
    }
    t_busy = 0;
}

__attribute__((constructor(101))) static void swl_constructor(void) {
    if (__atomic_load_n(&g_state, __ATOMIC_ACQUIRE) == STATE_UNINIT) swl_try_init();
}

SWL_EXPORT int swl_preload_is_recording(void) {
    return __atomic_load_n(&g_state, __ATOMIC_ACQUIRE) == STATE_RECORDING;
}

// MARK: - The C allocation functions

// Each exported allocation function is a stub (own_stack.h) that runs its swl_hook_* on the
// thread's own stack; the hook gets the program's frame as `entry`. SWL_HOOK marks the
// implementations the stubs jump to; SWL_UNUSED pads a hook's arguments to three, so `entry` is
// always in rcx:r8.
#define SWL_HOOK __attribute__((used, visibility("hidden")))
#define SWL_UNUSED __attribute__((unused)) uintptr_t
#define CALLER ((void *)(uintptr_t)entry.sp[0])

int swl_own_stack_wanted(void) { return __atomic_load_n(&g_state, __ATOMIC_ACQUIRE) != STATE_QUIET; }

SWL_HOOK void *swl_hook_malloc(size_t size, SWL_UNUSED b, SWL_UNUSED c, swl_entry entry) {
    if (!swl_should_record()) return __libc_malloc(size);
    uint32_t stack = swl_stack_before_call(entry);
    void *p = __libc_malloc(size);
    if (p) {
        swl_forget_allocator_links(p, size);
        swl_publish_alloc(p, size, SWL_FN_MALLOC, stack);
    }
    return p;
}
SWL_HOOK_ON_OWN_STACK(malloc, swl_hook_malloc);

SWL_HOOK void *swl_hook_calloc(size_t count, size_t size, SWL_UNUSED c, swl_entry entry) {
    if (!swl_should_record()) return __libc_calloc(count, size);
    uint32_t stack = swl_stack_before_call(entry);
    void *p = __libc_calloc(count, size);
    if (p) swl_publish_alloc(p, count * size, SWL_FN_CALLOC, stack);
    return p;
}
SWL_HOOK_ON_OWN_STACK(calloc, swl_hook_calloc);

SWL_HOOK void swl_hook_free(void *p, SWL_UNUSED b, SWL_UNUSED c, swl_entry entry) {
    (void)entry;
    if (p && swl_should_record()) swl_record_free(p, SWL_FN_FREE);
    __libc_free(p);
}
SWL_HOOK_ON_OWN_STACK(free, swl_hook_free);

/// The usable size of a block glibc handed out (what malloc_usable_size says of a block in use),
/// from its chunk header alone: the word glibc's realloc and free read first. malloc_usable_size
/// also reads the next chunk's header, at an offset the size gives: for a pointer glibc never
/// handed out (a program's heap bug) that read faulted, and the program died of SIGSEGV in the
/// hook where glibc says "realloc(): invalid old size" and aborts. Only used after the real
/// realloc succeeded, i.e. once glibc found the header sound.
static inline size_t swl_usable_size_from_header(const void *block) {
    uint64_t size_field = ((const uint64_t *)block)[-1];
    uint64_t chunk_size = size_field & ~(uint64_t)7;
    uint64_t overhead = (size_field & 2) ? 16 : 8; // IS_MMAPPED: prev_size and size; else size only
    return chunk_size > overhead ? (size_t)(chunk_size - overhead) : 0;
}

/// realloc and reallocarray: the old block's "gone" slot is reserved before the real call, so an
/// address the real realloc releases cannot be handed to another thread and recorded as its
/// allocation ahead of our free.
static inline void *swl_realloc(void *old, size_t size, swl_function fn, swl_entry entry) {
    if (!swl_should_record()) return __libc_realloc(old, size);
    uint32_t stack = swl_stack_before_call(entry);
    if (old == NULL) {
        void *p = __libc_realloc(NULL, size);
        if (p) {
            swl_forget_allocator_links(p, size); // a fresh block, as from malloc
            swl_publish_alloc(p, size, fn, stack);
        }
        return p;
    }

    swl_enter_busy();
    uint64_t pos;
    swl_event *slot = swl_reserve(&pos);
    size_t kept = swl_usable_size_from_header(old);
    swl_leave_busy();
    void *p = __libc_realloc(old, size);
    int saved_errno = errno;
    if (p) swl_forget_grown_links(p, kept, size);
    swl_enter_busy();
    if (slot) {
        // realloc(p, 0) frees p and returns NULL in glibc; any other NULL is a failure that left p alone.
        bool old_released = p != NULL || size == 0;
        swl_publish(slot, pos, (uint64_t)(uintptr_t)old,
                    swl_event_info(old_released ? SWL_EVENT_FREE : SWL_EVENT_NOP, fn, 0), 0);
        if (p && __atomic_load_n(&g_state, __ATOMIC_ACQUIRE) == STATE_RECORDING) {
            swl_own_stack_returning(p);
            swl_emit(SWL_EVENT_ALLOC, fn, (uint64_t)(uintptr_t)p, size, stack);
        }
    }
    swl_leave_busy();
    errno = saved_errno;
    return p;
}

SWL_HOOK void *swl_hook_realloc(void *old, size_t size, SWL_UNUSED c, swl_entry entry) {
    return swl_realloc(old, size, SWL_FN_REALLOC, entry);
}
SWL_HOOK_ON_OWN_STACK(realloc, swl_hook_realloc);

SWL_HOOK void *swl_hook_reallocarray(void *old, size_t count, size_t size, swl_entry entry) {
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return swl_realloc(old, total, SWL_FN_REALLOCARRAY, entry);
}
SWL_HOOK_ON_OWN_STACK(reallocarray, swl_hook_reallocarray);

extern int __libc_mallopt(int, int);

/// mallopt: glibc's, with its result untouched; M_PERTURB also changes what the hooks fill
/// blocks with (g_fill_word), from the next allocation on, as glibc's perturb_byte does. glibc
/// takes any int there (on unless 0; the byte is the low one of value ^ 0xff) and returns 1.
SWL_EXPORT int mallopt(int parameter, int value) {
    int result = __libc_mallopt(parameter, value);
    if (parameter == M_PERTURB) {
        __atomic_store_n(&g_fill_set_by_mallopt, true, __ATOMIC_RELAXED);
        __atomic_store_n(&g_fill_word, swl_fill_word_for(value), __ATOMIC_RELAXED);
    }
    return result;
}

static inline bool swl_is_power_of_two(size_t x) { return x != 0 && (x & (x - 1)) == 0; }

SWL_HOOK int swl_hook_posix_memalign(void **out, size_t alignment, size_t size, swl_entry entry) {
    if (alignment % sizeof(void *) != 0 || !swl_is_power_of_two(alignment / sizeof(void *))) return EINVAL;
    bool record = swl_should_record();
    uint32_t stack = record ? swl_stack_before_call(entry) : 0;
    void *p = __libc_memalign(alignment, size);
    if (p == NULL) return ENOMEM;
    if (record) {
        swl_forget_allocator_links(p, size);
        swl_publish_alloc(p, size, SWL_FN_POSIX_MEMALIGN, stack);
    }
    *out = p;
    return 0;
}
SWL_HOOK_ON_OWN_STACK(posix_memalign, swl_hook_posix_memalign);

SWL_HOOK void *swl_hook_aligned_alloc(size_t alignment, size_t size, SWL_UNUSED c, swl_entry entry) {
    if (!swl_is_power_of_two(alignment)) {
        errno = EINVAL;
        return NULL;
    }
    if (!swl_should_record()) return __libc_memalign(alignment, size);
    uint32_t stack = swl_stack_before_call(entry);
    void *p = __libc_memalign(alignment, size);
    if (p) {
        swl_forget_allocator_links(p, size);
        swl_publish_alloc(p, size, SWL_FN_ALIGNED_ALLOC, stack);
    }
    return p;
}
SWL_HOOK_ON_OWN_STACK(aligned_alloc, swl_hook_aligned_alloc);

SWL_HOOK void *swl_hook_memalign(size_t alignment, size_t size, SWL_UNUSED c, swl_entry entry) {
    if (!swl_should_record()) return __libc_memalign(alignment, size);
    uint32_t stack = swl_stack_before_call(entry);
    void *p = __libc_memalign(alignment, size);
    if (p) {
        swl_forget_allocator_links(p, size);
        swl_publish_alloc(p, size, SWL_FN_MEMALIGN, stack);
    }
    return p;
}
SWL_HOOK_ON_OWN_STACK(memalign, swl_hook_memalign);

SWL_HOOK void *swl_hook_valloc(size_t size, SWL_UNUSED b, SWL_UNUSED c, swl_entry entry) {
    if (!swl_should_record()) return __libc_valloc(size);
    uint32_t stack = swl_stack_before_call(entry);
    void *p = __libc_valloc(size);
    if (p) {
        swl_forget_allocator_links(p, size);
        swl_publish_alloc(p, size, SWL_FN_VALLOC, stack);
    }
    return p;
}
SWL_HOOK_ON_OWN_STACK(valloc, swl_hook_valloc);

SWL_HOOK void *swl_hook_pvalloc(size_t size, SWL_UNUSED b, SWL_UNUSED c, swl_entry entry) {
    if (!swl_should_record()) return __libc_pvalloc(size);
    uint32_t stack = swl_stack_before_call(entry);
    void *p = __libc_pvalloc(size);
    if (p) {
        swl_forget_allocator_links(p, size);
        // The program owns whole pages: count them, as LeakSanitizer does.
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        size_t rounded = size == 0 ? page : (size + page - 1) & ~(page - 1);
        swl_publish_alloc(p, rounded, SWL_FN_PVALLOC, stack);
    }
    return p;
}
SWL_HOOK_ON_OWN_STACK(pvalloc, swl_hook_pvalloc);

// MARK: - Leaving: where libc's exit path begins

// At the exit stop, the thread that ends the process is deep in libc: exit's atexit and stdio
// work, _exit, abort's signal sets. Those frames were laid over the program's dead frames without
// writing most of their words, and the stale block addresses there are exactly what Valgrind's
// definedness bits ignore. The exit scan starts that thread's stack at the frame that called the
// exit function instead (SwiftLeakEventABI.h, exit_caller_sp); docs/scanner.md says what remains.

// The frames skipped also hold what the exit path saved there: the caller's callee-saved
// registers, often its live pointers at -O2 (a list head kept in rbx). Valgrind counts those slots;
// the stubs save the registers as they were at the call (own_stack.h), and they go with the record.
static void swl_record_exit_caller(uint64_t stack_pointer) {
    uint64_t saved = swl_exit_registers_saved;
    swl_exit_registers_saved = 0;
    if (g_ring == NULL || __atomic_load_n(&g_state, __ATOMIC_ACQUIRE) != STATE_RECORDING) return;
    if ((int32_t)syscall(SYS_getpid) != g_ring->traced_pid) return; // a vfork child leaving
    for (int i = 0; i < 6; i++) {
        __atomic_store_n(&g_ring->exit_caller_registers[i], saved ? swl_exit_registers[i] : 0, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&g_ring->exit_caller_tid, (uint32_t)syscall(SYS_gettid), __ATOMIC_RELAXED);
    __atomic_store_n(&g_ring->exit_caller_sp, stack_pointer, __ATOMIC_RELEASE);
}

/// exit: saves the caller's callee-saved registers for the atexit handler's record (below), then
/// goes on to libc's exit on the program's stack, where the program's atexit handlers and
/// destructors belong. A return from main reaches libc's exit without coming here: main's frame
/// is gone then, and so are its registers' meaning.
__attribute__((used, visibility("hidden"))) void (*swl_real_exit)(int);
__attribute__((used, visibility("hidden"), noreturn)) void swl_exit_unresolved(int status) {
    void (*real)(int) = (void (*)(int))dlsym(RTLD_NEXT, "exit");
    if (real) real(status);
    for (;;) syscall(SYS_exit_group, status);
}
__asm__(".text\n"
        ".globl exit\n"
        ".type exit, @function\n"
        ".p2align 4\n"
        "exit:\n"
        ".cfi_startproc\n"
        "    endbr64\n"
        SWL_SAVE_EXIT_REGISTERS
        "    movq swl_real_exit(%rip), %rax\n"
        "    testq %rax, %rax\n"
        "    jz swl_exit_unresolved\n"
        "    jmp *%rax\n"
        ".cfi_endproc\n"
        ".size exit, .-exit\n");

/// From the atexit handler, which libc's exit runs last: walks out to the frame that called exit
/// (the program's, or libc's __libc_start_call_main when main returned). A return address in
/// exit's code marks exit's frame; the next frame is its caller.
static __attribute__((noinline)) void swl_record_caller_of_exit(void) {
    Dl_info info;
    const ElfW(Sym) *symbol = NULL;
    void *libc_exit = (void *)swl_real_exit; // `exit` here names our own stub
    if (libc_exit == NULL) return;
    if (!dladdr1(libc_exit, &info, (void **)&symbol, RTLD_DL_SYMENT) || symbol == NULL || symbol->st_size == 0) return;
    uint64_t start = (uint64_t)(uintptr_t)info.dli_saddr, size = symbol->st_size;
    uint64_t frames[64], stack_pointers[64];
    int count = swl_unwind_with_stack_pointers(frames, stack_pointers, 64);
    bool in_exit = false;
    for (int depth = 0; depth < count; depth++) {
        if (in_exit) {
            swl_record_exit_caller(stack_pointers[depth]);
            return;
        }
        // exit ends in a call that does not return: its return address may be the next function's.
        in_exit = frames[depth] - 1 - start < size;
    }
}

static void (*g_real_exit_now)(int);
static void (*g_real_abort)(void);
static int (*g_real_raise)(int);
static void (*g_real_assert_fail)(const char *, const char *, unsigned int, const char *);

/// Whether the malloc the program's calls reach is ours. An executable that defines malloc comes
/// first in the lookup scope, and its calls (and libc's) never reach the hooks.
static void swl_check_malloc_is_ours(void) {
    Dl_info found, ours;
    void *program_malloc = dlsym(RTLD_DEFAULT, "malloc");
    if (program_malloc == NULL || !dladdr(program_malloc, &found) || !dladdr((void *)&swl_hook_malloc, &ours)) return;
    if (found.dli_fbase != ours.dli_fbase && g_ring && __atomic_load_n(&g_state, __ATOMIC_ACQUIRE) == STATE_RECORDING) {
        __atomic_store_n(&g_ring->foreign_malloc, 1, __ATOMIC_RELEASE);
    }
}

__attribute__((constructor(102))) static void swl_check_and_resolve_at_start(void) {
    int was_busy = t_busy;
    t_busy = 1;
    swl_check_malloc_is_ours();
    g_real_exit_now = (void (*)(int))dlsym(RTLD_NEXT, "_exit");
    swl_real_exit = (void (*)(int))dlsym(RTLD_NEXT, "exit");
    g_real_abort = (void (*)(void))dlsym(RTLD_NEXT, "abort");
    g_real_raise = (int (*)(int))dlsym(RTLD_NEXT, "raise");
    g_real_assert_fail = (void (*)(const char *, const char *, unsigned int, const char *))dlsym(RTLD_NEXT, "__assert_fail");
    t_busy = was_busy;
}

/// _exit and _Exit (one function in glibc). Calls from inside libc (exit's own) do not come here.
SWL_HOOK void swl_hook_exit_now(int status, SWL_UNUSED b, SWL_UNUSED c, swl_entry entry) {
    swl_record_exit_caller((uint64_t)(uintptr_t)(entry.sp + 1));
    if (g_real_exit_now) g_real_exit_now(status);
    for (;;) syscall(SYS_exit_group, status);
}
SWL_EXIT_HOOK_ON_OWN_STACK(_exit, swl_hook_exit_now);
SWL_EXIT_HOOK_ON_OWN_STACK(_Exit, swl_hook_exit_now);

SWL_HOOK void swl_hook_abort(SWL_UNUSED a, SWL_UNUSED b, SWL_UNUSED c, swl_entry entry) {
    swl_record_exit_caller((uint64_t)(uintptr_t)(entry.sp + 1));
    if (g_real_abort) g_real_abort();
    for (;;) {
        signal(SIGABRT, SIG_DFL);
        raise(SIGABRT);
    }
}
SWL_EXIT_HOOK_ON_OWN_STACK(abort, swl_hook_abort);

/// raise: the process may die of the signal right here. If raise returns, the signal was handled
/// or ignored and the program goes on: the record is withdrawn.
SWL_HOOK int swl_hook_raise(int signal_number, SWL_UNUSED b, SWL_UNUSED c, swl_entry entry) {
    uint64_t caller = (uint64_t)(uintptr_t)(entry.sp + 1);
    swl_record_exit_caller(caller);
    int result = g_real_raise ? g_real_raise(signal_number) : (int)syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), signal_number);
    if (g_ring) __atomic_compare_exchange_n(&g_ring->exit_caller_sp, &caller, 0, false, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
    return result;
}
SWL_EXIT_HOOK_ON_OWN_STACK(raise, swl_hook_raise);

/// A failed assert() leaves through libc's own abort, which does not come through the hook above.
/// (Four arguments: not a stub on the own stack; the frame address gives the caller's frame.)
SWL_EXPORT __attribute__((noreturn)) void __assert_fail(const char *assertion, const char *file, unsigned int line,
                                                        const char *function) {
    swl_record_exit_caller((uint64_t)(uintptr_t)__builtin_frame_address(0) + 16);
    if (g_real_assert_fail) g_real_assert_fail(assertion, file, line, function);
    for (;;) raise(SIGABRT);
}

// MARK: - dlopen / dlclose: keep the module map current

SWL_EXPORT void *dlopen(const char *file, int mode) {
    static void *(*real_dlopen)(const char *, int);
    if (real_dlopen == NULL) real_dlopen = (void *(*)(const char *, int))dlsym(RTLD_NEXT, "dlopen");
    void *handle = real_dlopen(file, mode);
    if (handle && swl_should_record()) swl_refresh_modules();
    return handle;
}

SWL_EXPORT int dlclose(void *handle) {
    static int (*real_dlclose)(void *);
    if (real_dlclose == NULL) real_dlclose = (int (*)(void *))dlsym(RTLD_NEXT, "dlclose");
    int rc = real_dlclose(handle);
    // Code of the closed module may be gone and another mapped at its addresses: the cached
    // unwind rules for them are stale. Whatever is on a live stack is re-read on the next miss.
    swl_unwind_forget();
    if (swl_should_record()) swl_refresh_modules();
    return rc;
}

// MARK: - C++ operator new / delete (Itanium names), so "operator new" is frame 0 as in Valgrind

typedef void (*swl_new_handler)(void);

/// The failure path of a throwing operator new: call the new_handler until it gives memory, or
/// throw std::bad_alloc through libstdc++ (this file is built with -fexceptions so the exception
/// can unwind through our frame).
static __attribute__((noinline)) void *swl_new_failed(size_t size, size_t alignment, bool nothrow) {
    static swl_new_handler (*get_new_handler)(void);
    static void (*throw_bad_alloc)(void);
    if (get_new_handler == NULL) get_new_handler = (swl_new_handler(*)(void))dlsym(RTLD_DEFAULT, "_ZSt15get_new_handlerv");
    if (throw_bad_alloc == NULL) throw_bad_alloc = (void (*)(void))dlsym(RTLD_DEFAULT, "_ZSt17__throw_bad_allocv");
    for (;;) {
        swl_new_handler handler = get_new_handler ? get_new_handler() : NULL;
        if (handler == NULL) {
            if (nothrow) return NULL;
            if (throw_bad_alloc) throw_bad_alloc();
            abort();
        }
        handler();
        void *p = alignment ? __libc_memalign(alignment, size) : __libc_malloc(size);
        if (p) return p;
    }
}

static inline void *swl_new(size_t requested, size_t alignment, bool nothrow, swl_function fn, swl_entry entry) {
    // new(0) must return a unique pointer, so the allocator is asked for a byte; the block is
    // recorded at the size the program asked for, as Valgrind counts it.
    size_t size = requested == 0 ? 1 : requested;
    bool record = swl_should_record();
    uint32_t stack = record ? swl_stack_before_call(entry) : 0;
    void *p = alignment ? __libc_memalign(alignment, size) : __libc_malloc(size);
    if (SWL_UNLIKELY(p == NULL)) p = swl_new_failed(size, alignment, nothrow);
    if (p && record) {
        swl_forget_allocator_links(p, requested);
        swl_publish_alloc(p, requested, fn, stack);
    }
    return p;
}

static inline void swl_delete(void *p, swl_function fn) {
    if (p && swl_should_record()) swl_record_free(p, fn);
    __libc_free(p);
}

/// One operator new: its hook (size, alignment or 0, the ignored nothrow tag) and its stub.
#define SWL_NEW(name, alignment_argument, nothrow, fn)                                              \
    SWL_HOOK void *swl_hook##name(size_t n, SWL_UNUSED b, SWL_UNUSED c, swl_entry entry) {          \
        return swl_new(n, alignment_argument, nothrow, fn, entry);                                  \
    }                                                                                               \
    SWL_HOOK_ON_OWN_STACK(name, swl_hook##name)

/// One operator delete: the size, alignment and nothrow arguments are ignored.
#define SWL_DELETE(name, fn)                                                                         \
    SWL_HOOK void swl_hook##name(void *p, SWL_UNUSED b, SWL_UNUSED c, swl_entry entry) {             \
        (void)entry;                                                                                \
        swl_delete(p, fn);                                                                          \
    }                                                                                               \
    SWL_HOOK_ON_OWN_STACK(name, swl_hook##name)

SWL_NEW(_Znwm, 0, false, SWL_FN_NEW);
SWL_NEW(_Znam, 0, false, SWL_FN_NEW_ARRAY);
SWL_NEW(_ZnwmRKSt9nothrow_t, 0, true, SWL_FN_NEW_NOTHROW);
SWL_NEW(_ZnamRKSt9nothrow_t, 0, true, SWL_FN_NEW_ARRAY_NOTHROW);
SWL_NEW(_ZnwmSt11align_val_t, b, false, SWL_FN_NEW_ALIGNED);
SWL_NEW(_ZnamSt11align_val_t, b, false, SWL_FN_NEW_ARRAY_ALIGNED);
SWL_NEW(_ZnwmSt11align_val_tRKSt9nothrow_t, b, true, SWL_FN_NEW_ALIGNED_NOTHROW);
SWL_NEW(_ZnamSt11align_val_tRKSt9nothrow_t, b, true, SWL_FN_NEW_ARRAY_ALIGNED_NOTHROW);

SWL_DELETE(_ZdlPv, SWL_FN_DELETE);
SWL_DELETE(_ZdaPv, SWL_FN_DELETE_ARRAY);
SWL_DELETE(_ZdlPvm, SWL_FN_DELETE);
SWL_DELETE(_ZdaPvm, SWL_FN_DELETE_ARRAY);
SWL_DELETE(_ZdlPvRKSt9nothrow_t, SWL_FN_DELETE);
SWL_DELETE(_ZdaPvRKSt9nothrow_t, SWL_FN_DELETE_ARRAY);
SWL_DELETE(_ZdlPvSt11align_val_t, SWL_FN_DELETE);
SWL_DELETE(_ZdaPvSt11align_val_t, SWL_FN_DELETE_ARRAY);
SWL_DELETE(_ZdlPvmSt11align_val_t, SWL_FN_DELETE);
SWL_DELETE(_ZdaPvmSt11align_val_t, SWL_FN_DELETE_ARRAY);
SWL_DELETE(_ZdlPvSt11align_val_tRKSt9nothrow_t, SWL_FN_DELETE);
SWL_DELETE(_ZdaPvSt11align_val_tRKSt9nothrow_t, SWL_FN_DELETE_ARRAY);
