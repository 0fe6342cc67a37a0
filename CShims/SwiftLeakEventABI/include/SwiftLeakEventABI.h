// The contract between the interposer (inside the traced program) and the recorder (swiftleak).
//
// One memfd per traced process holds, at fixed offsets given by the header:
//   - the header (this struct), one page;
//   - the event ring: `capacity` fixed-size slots, many producers, one consumer;
//   - the stack store: append-only records (interned stacks, module descriptions) that events refer
//     to by id, plus the hash buckets the interposer uses to intern stacks.
// Everything here is plain data and static inline code, so both sides compile the same protocol.
#ifndef SWIFTLEAK_EVENT_ABI_H
#define SWIFTLEAK_EVENT_ABI_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SWL_ABI_MAGIC   0x4b41454c54465753ULL /* "SWFTLEAK" little-endian */
#define SWL_ABI_VERSION 6u

/// The name of the memfd: it shows as `/memfd:swiftleak-ring (deleted)` in /proc/PID/maps, which is
/// how the exit scan knows this mapping is swiftleak's own memory and not a root.
#define SWL_RING_MEMFD_NAME "swiftleak-ring"
/// Environment variable set by the launcher (or written into a new image's initial stack after an
/// exec) for the interposer: the path of the ring, `/proc/<swiftleak's pid>/fd/<n>`. The interposer
/// opens it itself, so the program never inherits a descriptor from swiftleak.
#define SWL_ENV_RING "SWIFTLEAK_RING"
/// Diagnostic knob read by the interposer: "libunwind" captures every stack with libunwind instead
/// of swiftleak's own walker; "verify" walks each stack with both and reports differences on stderr.
#define SWL_ENV_UNWINDER "SWIFTLEAK_UNWINDER"

/// What an event says. Stored in the top byte of `swl_event.info`.
typedef enum swl_event_type {
    SWL_EVENT_NONE = 0,
    /// A block was allocated: address, size, stack, function.
    SWL_EVENT_ALLOC = 1,
    /// A block is about to be freed (recorded before the real free runs): address, function.
    SWL_EVENT_FREE = 2,
    /// A slot reserved before a call whose outcome made it unnecessary (a failed realloc).
    SWL_EVENT_NOP = 3,
    /// A module was mapped: address = load bias, stack = id of its swl_module_record in the store.
    SWL_EVENT_MODULE_LOAD = 4,
    /// A module was unmapped (dlclose): address = load bias, stack = id of its record.
    SWL_EVENT_MODULE_UNLOAD = 5,
} swl_event_type;

/// The function a program called. Allocation and deallocation functions share one numbering, so a
/// report can say "operator new[]" and a later check can flag a mismatched `delete`.
typedef enum swl_function {
    SWL_FN_UNKNOWN = 0,
    SWL_FN_MALLOC = 1,
    SWL_FN_CALLOC = 2,
    SWL_FN_REALLOC = 3,
    SWL_FN_REALLOCARRAY = 4,
    SWL_FN_POSIX_MEMALIGN = 5,
    SWL_FN_ALIGNED_ALLOC = 6,
    SWL_FN_MEMALIGN = 7,
    SWL_FN_VALLOC = 8,
    SWL_FN_PVALLOC = 9,
    SWL_FN_NEW = 10,
    SWL_FN_NEW_ARRAY = 11,
    SWL_FN_NEW_NOTHROW = 12,
    SWL_FN_NEW_ARRAY_NOTHROW = 13,
    SWL_FN_NEW_ALIGNED = 14,
    SWL_FN_NEW_ARRAY_ALIGNED = 15,
    SWL_FN_NEW_ALIGNED_NOTHROW = 16,
    SWL_FN_NEW_ARRAY_ALIGNED_NOTHROW = 17,
    SWL_FN_FREE = 18,
    SWL_FN_DELETE = 19,
    SWL_FN_DELETE_ARRAY = 20,
    SWL_FN_COUNT = 21,
} swl_function;

/// One ring slot, 32 bytes.
typedef struct swl_event {
    /// Slot protocol (Vyukov's bounded queue): the sequence equals the slot's position while free
    /// for that position, position + 1 once an event for it is published. Stored minus the slot's
    /// index in the ring: read and write it only through swl_slot_sequence/swl_slot_set_sequence.
    uint64_t sequence;
    uint64_t address;
    /// size (low 48 bits) | function << 48 | type << 56
    uint64_t info;
    /// Stack record id (see swl_store) or module record id; 0 means none.
    uint32_t stack;
    /// Kernel thread id of the thread that made the call.
    uint32_t thread;
} swl_event;

_Static_assert(sizeof(swl_event) == 32, "swl_event is mirrored by the recorder: 32 bytes");

// A slot stores `sequence - index` (index: its place in the ring, the position modulo the
// capacity), so a zero-filled ring is already free for its first lap in every slot: creating a
// ring writes, and faults in, no slot page (writing them all was 2,048 shared-memory page faults
// for the 8 MiB ring, about 7 ms per process, and as much again to unmap).
static inline uint64_t swl_slot_sequence(const swl_event *slot, uint64_t index) {
    return __atomic_load_n(&slot->sequence, __ATOMIC_ACQUIRE) + index;
}
static inline uint64_t swl_slot_sequence_seq_cst(const swl_event *slot, uint64_t index) {
    return __atomic_load_n(&slot->sequence, __ATOMIC_SEQ_CST) + index;
}
static inline void swl_slot_set_sequence(swl_event *slot, uint64_t index, uint64_t sequence) {
    __atomic_store_n(&slot->sequence, sequence - index, __ATOMIC_RELEASE);
}

#define SWL_SIZE_MASK ((1ULL << 48) - 1)

static inline uint64_t swl_event_info(swl_event_type type, swl_function fn, uint64_t size) {
    if (size > SWL_SIZE_MASK) size = SWL_SIZE_MASK;
    return (size & SWL_SIZE_MASK) | ((uint64_t)fn << 48) | ((uint64_t)type << 56);
}
static inline swl_event_type swl_event_info_type(uint64_t info) { return (swl_event_type)(info >> 56); }
static inline swl_function swl_event_info_function(uint64_t info) { return (swl_function)((info >> 48) & 0xff); }
static inline uint64_t swl_event_info_size(uint64_t info) { return info & SWL_SIZE_MASK; }

/// The shared header at offset 0 of the memfd. Written by the launcher before the program starts;
/// the atomics are shared by both sides afterwards.
typedef struct swl_ring_header {
    uint64_t magic;
    uint32_t version;
    uint32_t header_size;
    /// The process the interposer may run in; any other process (a fork child) stays quiet.
    int32_t traced_pid;
    /// swiftleak's pid: producers waiting on a full ring give up once it is gone.
    int32_t recorder_pid;
    /// Number of return addresses the interposer captures per allocation.
    uint32_t max_frames;
    uint32_t bucket_count;          /* power of two */
    uint64_t capacity;              /* ring slots, power of two */
    uint64_t ring_offset;           /* bytes from the start of the mapping */
    uint64_t buckets_offset;
    uint64_t store_offset;
    uint64_t store_size;            /* bytes */
    uint64_t total_size;            /* bytes of the whole mapping */
    /* glibc's main_arena as the interposer located it (0 when unknown): allocator bookkeeping in
       libc's .data whose bin pointers aim at free chunk headers, i.e. into the last word of the
       live block before them. The exit scan must not take it for a root. */
    uint64_t allocator_state_start;
    uint64_t allocator_state_end;
    /* Written by the interposer when the program starts to leave by exit (from its atexit
       handler, found by walking out of libc's exit), _exit, _Exit or abort: the stack pointer of
       the frame that made the call, and the thread. The frames below it belong to libc's exit
       path, and the exit scan starts that thread's stack there (0 when unknown). */
    uint64_t exit_caller_sp;
    uint32_t exit_caller_tid;
    /* Set by the interposer when the program's malloc is not the interposer's (the executable
       defines its own): none of the program's allocations through it are seen. */
    uint32_t foreign_malloc;
    /* Written by the interposer at its start: the address of its state word in the program. A fork
       child has the same address space layout; the tracer writes "quiet" there in a child before it
       runs, so that a child that never runs the atfork handler (raw clone) never writes into this
       ring. */
    uint64_t state_address;
    uint8_t reserved0[8];

    /* Producers: next position to reserve. */
    _Alignas(64) uint64_t tail;
    /* Non-zero while one thread at most runs hooks into this ring: producers then advance `tail`
       with a plain store instead of a locked add (a lock is a full fence, and costs a malloc-heavy
       program a tenth of its time under the hooks). Set by swiftleak when it creates the ring;
       cleared by the tracer at the process's first new thread (or CLONE_VM child), while the
       parent is stopped at that clone and before the new task runs, so no two tasks ever advance
       `tail` at once while it is set. 0, the default, is always safe. In the tail's cache line:
       read with it on every event. */
    uint32_t single_producer;
    uint8_t pad1[52];
    /* Consumer: next position to consume. */
    _Alignas(64) uint64_t head;
    /* Futex word bumped by the consumer when it frees slots and producers are waiting. */
    uint32_t space_epoch;
    uint32_t producers_waiting;
    uint8_t pad2[48];
    /* Stack store bump pointer, in bytes from store_offset (record 0 is reserved). */
    _Alignas(64) uint64_t store_used;
    /* Non-zero once the interposer stopped recording (recorder gone): the trace is incomplete. */
    uint32_t disabled;
    /* Set by the interposer once it is initialised in the traced process. */
    uint32_t attached;
    /* Set by the interposer's atexit handler, which runs after the program's own: the process is
       about to exit_group, so the tracer holds every thread that stops at its exit from now on. */
    uint32_t exiting;
    uint8_t pad3[44];
    /* Written with exit_caller_sp: the callee-saved registers (rbx, rbp, r12, r13, r14, r15) of
       the frame that called the exit function, as they were at the call. libc's exit path saves
       them in its own frames, where Valgrind finds them (they are defined there); the exit scan,
       which skips those frames, takes them as that thread's register roots instead. */
    _Alignas(64) uint64_t exit_caller_registers[6];
    uint8_t pad4[16];
} swl_ring_header;

_Static_assert(sizeof(swl_ring_header) == 384, "swl_ring_header layout is shared with the recorder");
_Static_assert(sizeof(swl_ring_header) <= 512, "the fork table follows the header in its page");

/// swiftleak's own stacks in the program (CShims/SwiftLeakPreload/own_stack.h): plain anonymous
/// memory, so making one needs no descriptor. The interposer reserves them in areas, each a run of
/// slots of a guard page (never accessible) followed by one stack of SWL_OWN_STACK_SIZE bytes, and
/// lists every area it made in the table at SWL_OWN_STACK_TABLE_OFFSET of its ring's header page
/// (`start` written last). Area i holds SWL_OWN_STACK_FIRST_AREA_SLOTS << i slots. The exit scan
/// leaves those stacks out of the roots and finds a hooked thread's saved frame at a stack's top.
/// The table is in memory the program can write: the recorder believes an area only where the
/// process's mappings have exactly that shape (Sources/SwiftLeakScanner/OwnStackAreas.swift).
#define SWL_OWN_STACK_SIZE 1048576u
#define SWL_OWN_STACK_GUARD_SIZE 4096u
#define SWL_OWN_STACK_SLOT_SIZE (SWL_OWN_STACK_SIZE + SWL_OWN_STACK_GUARD_SIZE)
#define SWL_OWN_STACK_FIRST_AREA_SLOTS 64u
#define SWL_OWN_STACK_AREAS 8u
#define SWL_OWN_STACK_TABLE_OFFSET 384u

typedef struct swl_own_stack_area {
    uint64_t start; /* 0: not made */
    uint64_t end;
} swl_own_stack_area;

_Static_assert(SWL_OWN_STACK_TABLE_OFFSET >= sizeof(swl_ring_header), "the own-stack table follows the header");
_Static_assert(SWL_OWN_STACK_TABLE_OFFSET + SWL_OWN_STACK_AREAS * sizeof(swl_own_stack_area) <= 512u,
               "the own-stack table ends before the fork table");

static inline swl_own_stack_area *swl_own_stack_table(swl_ring_header *h) {
    return (swl_own_stack_area *)((char *)h + SWL_OWN_STACK_TABLE_OFFSET);
}

/// Rings for fork children, offered in the parent's header page after the header: when a traced
/// process forks, swiftleak creates the child's ring and writes {child pid, descriptor number in
/// swiftleak} into a free entry of the parent's ring while both are stopped. The child's atfork
/// handler finds its pid there, opens /proc/<recorder_pid>/fd/<fd>, checks it is a ring for it,
/// maps it and closes the descriptor. swiftleak clears the entry once the child attached or ended.
typedef struct swl_fork_offer {
    int32_t child_pid; /* 0: free */
    int32_t fd;
} swl_fork_offer;

#define SWL_FORK_TABLE_OFFSET 512u
#define SWL_FORK_TABLE_ENTRIES ((4096u - SWL_FORK_TABLE_OFFSET) / (uint32_t)sizeof(swl_fork_offer))

static inline swl_fork_offer *swl_fork_table(swl_ring_header *h) {
    return (swl_fork_offer *)((char *)h + SWL_FORK_TABLE_OFFSET);
}

/// An interned stack in the store. Its id is its offset from store_offset in 8-byte units.
typedef struct swl_stack_record {
    uint32_t next;      /* next record in the same hash bucket, 0 = end */
    uint32_t hash;
    uint32_t depth;     /* number of frames that follow */
    uint32_t kind;      /* SWL_RECORD_STACK */
    uint64_t frames[];  /* return addresses, innermost first (the caller of the allocation function) */
} swl_stack_record;

/// A module the program had mapped (the main executable, a shared library, the vdso).
typedef struct swl_module_record {
    uint32_t reserved;
    uint32_t path_length;
    uint32_t build_id_length;
    uint32_t kind;      /* SWL_RECORD_MODULE */
    uint64_t load_bias; /* l_addr: file virtual address + load_bias = runtime address */
    uint64_t start;     /* lowest mapped address of its PT_LOAD segments */
    uint64_t end;       /* one past the highest */
    uint8_t data[];     /* build id bytes, then the path (not NUL-terminated) */
} swl_module_record;

enum { SWL_RECORD_STACK = 0x5354u, SWL_RECORD_MODULE = 0x4d4fu };

_Static_assert(sizeof(swl_stack_record) == 16, "swl_stack_record layout is shared with the recorder");
_Static_assert(sizeof(swl_module_record) == 40, "swl_module_record layout is shared with the recorder");

static inline swl_event *swl_ring_slots(swl_ring_header *h) {
    return (swl_event *)((char *)h + h->ring_offset);
}
static inline uint32_t *swl_ring_buckets(swl_ring_header *h) {
    return (uint32_t *)((char *)h + h->buckets_offset);
}
static inline char *swl_ring_store(swl_ring_header *h) {
    return (char *)h + h->store_offset;
}

/// Sizes of a ring created with the given parameters; the launcher and the tests use this.
static inline uint64_t swl_ring_layout(uint64_t capacity, uint32_t bucket_count, uint64_t store_size,
                                       uint64_t *ring_offset, uint64_t *buckets_offset, uint64_t *store_offset) {
    const uint64_t page = 4096;
    uint64_t off = page;
    *ring_offset = off;
    off += capacity * sizeof(swl_event);
    off = (off + page - 1) & ~(page - 1);
    *buckets_offset = off;
    off += (uint64_t)bucket_count * sizeof(uint32_t);
    off = (off + page - 1) & ~(page - 1);
    *store_offset = off;
    off += store_size;
    return off;
}

#ifdef __cplusplus
}
#endif
#endif
