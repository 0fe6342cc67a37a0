// The interposer's own stack walker: see unwind.h for why it exists.
//
// How a frame is stepped (x86_64, System V): every frame's canonical frame address (CFA) is the
// caller's stack pointer, computed from either RSP or RBP plus an offset (or, in functions that
// realign their stack, loaded from RBP+offset). The return address sits at CFA-8, and RBP is
// either untouched or saved at a fixed offset. Those few numbers are "the rule" for a return
// address; the compiler's DWARF call-frame information (.eh_frame, found through the
// .eh_frame_hdr search table that glibc's _dl_find_object hands out lock-free) says what they are
// at each instruction. A rule is computed once per return address and cached in one 64-bit word,
// so threads share the cache without locks and without ever reading a torn entry.
#ifndef _GNU_SOURCE
#error "_GNU_SOURCE must be set by Package.swift"
#endif

#include "unwind.h"

#include <dlfcn.h>
#include <stddef.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#if defined(__x86_64__) && defined(DLFO_STRUCT_HAS_EH_DBASE)
#define SWL_HAVE_WALKER 1
#else
#define SWL_HAVE_WALKER 0
#endif

bool swl_unwind_available(void) { return SWL_HAVE_WALKER; }

/// The entry point only records the stack pointer and frame pointer as they are at the call and
/// jumps on: [rsp] is then the return address into the caller, rsp+8 the caller's stack pointer
/// after the return, and rbp the caller's (nothing has touched it). That is exactly the state of
/// the caller's frame, so walking starts from known values, not from guesses about our own frame.
__asm__(".text\n"
        ".globl swl_unwind\n"
        ".hidden swl_unwind\n"
        ".type swl_unwind, @function\n"
        "swl_unwind:\n"
        ".cfi_startproc\n"
        "    movq %rsp, %rdx\n"
        "    movq %rbp, %rcx\n"
        "    jmp swl_unwind_from\n"
        ".cfi_endproc\n"
        ".size swl_unwind, .-swl_unwind\n");

/// The same entry, also recording each frame's stack pointer (see swl_unwind_with_stack_pointers).
__asm__(".text\n"
        ".globl swl_unwind_with_stack_pointers\n"
        ".hidden swl_unwind_with_stack_pointers\n"
        ".type swl_unwind_with_stack_pointers, @function\n"
        "swl_unwind_with_stack_pointers:\n"
        ".cfi_startproc\n"
        "    movq %rsp, %rcx\n"
        "    movq %rbp, %r8\n"
        "    jmp swl_unwind_with_stack_pointers_from\n"
        ".cfi_endproc\n"
        ".size swl_unwind_with_stack_pointers, .-swl_unwind_with_stack_pointers\n");

__attribute__((used, visibility("hidden"))) int swl_unwind_from(uint64_t *frames, int max, const uint64_t *sp, uint64_t rbp);
__attribute__((used, visibility("hidden"))) int swl_unwind_with_stack_pointers_from(uint64_t *frames, uint64_t *stack_pointers, int max,
                                                                                   const uint64_t *sp, uint64_t rbp);

// Read by swl_unwind_known, inline in the hooks (unwind.h): defined with or without the walker
// (without it, no thread ever has an area).
__thread swl_known_area *swl_thread_known_area;
uint32_t swl_rules_generation;

#if !SWL_HAVE_WALKER

int swl_unwind_at(uint64_t *frames, int max, const uint64_t *sp, uint64_t rbp) {
    (void)frames, (void)max, (void)sp, (void)rbp;
    return -1;
}

int swl_unwind_from(uint64_t *frames, int max, const uint64_t *sp, uint64_t rbp) {
    (void)frames, (void)max, (void)sp, (void)rbp;
    return -1;
}

int swl_unwind_with_stack_pointers_from(uint64_t *frames, uint64_t *stack_pointers, int max, const uint64_t *sp, uint64_t rbp) {
    (void)frames, (void)stack_pointers, (void)max, (void)sp, (void)rbp;
    return -1;
}

void swl_unwind_forget(void) {}

bool swl_unwind_known_begin_slowly(swl_known_area *area, uint64_t owner, uint32_t generation) {
    (void)area, (void)owner, (void)generation;
    return false;
}

void swl_unwind_known_missed(swl_known_area *area, uint64_t ip, uint64_t rsp) { (void)area, (void)ip, (void)rsp; }

void swl_unwind_remember(uint64_t owner, uint32_t value) { (void)owner, (void)value; }

size_t swl_unwind_area_bytes(void) { return 0; }

void swl_unwind_use_area(void *area) { (void)area; }

#else

// MARK: - Rules and their cache

enum {
    RULE_EMPTY = 0,      // cache slot never filled (a valid word never has kind 0)
    RULE_STEP = 1,       // step with the fields below
    RULE_OUTERMOST = 2,  // the return address is undefined here: the stack ends
    RULE_SLOW = 3,       // no cacheable rule (signal frame, huge frame, no unwind information with
                         // a frame pointer, CFI the walker cannot follow): step_slowly decides
};

enum { RBP_SAME = 0, RBP_AT_CFA = 1, RBP_AT_RBP = 2 };

/// Flag on RULE_OUTERMOST: no unwind information covers this address. There the stack ends only if
/// RBP is 0, as libunwind decides: ld.so's _dl_start_user, at the base of every library
/// constructor's stack, clears RBP before its call. With any other RBP (thunks in libswiftCore
/// built without unwind tables, JIT code, hand-written assembly) the caller is guessed from a
/// frame-pointer chain, as libunwind guesses it, reading the guessed words only through a system
/// call that cannot fault (step_slowly).
#define RULE_NO_INFO 4u

typedef struct {
    int kind;
    bool cfa_from_rbp; // else from RSP
    bool cfa_deref;    // CFA = *(base + offset), as in stack-realigning (DRAP) functions
    int rbp_rule;
    int64_t cfa_offset;
    int64_t rbp_offset;
    bool no_info;      // RULE_OUTERMOST because no FDE covers the address (RULE_NO_INFO)
    bool signal_frame; // RULE_SLOW: a signal trampoline (the 'S' augmentation)
    bool follows;      // RULE_SLOW: the other fields say how to step, only the packing failed
    uint64_t cfa_addend; // CFA = *(base + cfa_offset) + cfa_addend (a stack switch): slow path only
} swl_rule;

// Cache word: bits 63..32 the tag (pc >> INDEX_BITS; user-space code lies below 2^47, so the tag
// and the slot index together identify the pc exactly), bits 31..0 the packed rule:
// 0-1 kind, 2 cfa_from_rbp (RULE_NO_INFO for RULE_OUTERMOST), 3 cfa_deref, 4-5 rbp_rule,
// 6-21 cfa_offset/8, 22-31 rbp_offset/8.
#define INDEX_BITS 15
#define INDEX_MASK ((1u << INDEX_BITS) - 1)
static uint64_t g_rules[1u << INDEX_BITS];

static inline uint32_t rule_slot(uint64_t pc) { return (uint32_t)((pc ^ (pc >> INDEX_BITS)) & INDEX_MASK); }

static uint32_t pack_rule(swl_rule rule) {
    if (rule.kind == RULE_OUTERMOST) return RULE_OUTERMOST | (rule.no_info ? RULE_NO_INFO : 0);
    if (rule.kind != RULE_STEP) return (uint32_t)rule.kind;
    int64_t cfa = rule.cfa_offset / 8, rbp = rule.rbp_offset / 8;
    bool fits = rule.cfa_offset % 8 == 0 && rule.rbp_offset % 8 == 0 && cfa >= -32768 && cfa <= 32767 &&
                rbp >= -512 && rbp <= 511;
    if (!fits || rule.cfa_addend != 0) return RULE_SLOW; // a frame over 256 KiB, an odd offset, a stack switch: rare
    return RULE_STEP | (uint32_t)rule.cfa_from_rbp << 2 | (uint32_t)rule.cfa_deref << 3 |
           (uint32_t)rule.rbp_rule << 4 | ((uint32_t)cfa & 0xffff) << 6 | ((uint32_t)rbp & 0x3ff) << 22;
}

static inline int packed_kind(uint32_t packed) { return (int)(packed & 3); }
static inline int64_t packed_cfa_offset(uint32_t packed) { return (int64_t)(int16_t)(packed >> 6) * 8; }
static inline int64_t packed_rbp_offset(uint32_t packed) {
    int32_t field = (int32_t)(packed >> 22); // 10 bits, sign-extend
    return (int64_t)((field ^ 0x200) - 0x200) * 8;
}

// swl_rules_generation (unwind.h), bumped by swl_unwind_forget: a thread's memo of an earlier
// walk (below) was made with the old rules.

void swl_unwind_forget(void) {
    __atomic_fetch_add(&swl_rules_generation, 1, __ATOMIC_RELEASE);
    for (size_t i = 0; i < sizeof g_rules / sizeof g_rules[0]; i++) __atomic_store_n(&g_rules[i], 0, __ATOMIC_RELAXED);
}

// MARK: - Reading DWARF

static inline uint64_t read_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t read_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint16_t read_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

/// Reads a LEB128 number; `last_byte` gets its final byte (bit 6 is the sign of a signed one).
static uint64_t read_leb(const uint8_t **p, unsigned *shift_out, uint8_t *last_byte) {
    uint64_t value = 0;
    unsigned shift = 0;
    uint8_t byte;
    do {
        byte = *(*p)++;
        if (shift < 64) value |= (uint64_t)(byte & 0x7f) << shift;
        shift += 7;
    } while (byte & 0x80);
    *shift_out = shift;
    *last_byte = byte;
    return value;
}

static uint64_t read_uleb(const uint8_t **p) {
    unsigned shift;
    uint8_t last;
    return read_leb(p, &shift, &last);
}

static int64_t read_sleb(const uint8_t **p) {
    unsigned shift;
    uint8_t last;
    uint64_t value = read_leb(p, &shift, &last);
    if (shift < 64 && (last & 0x40)) value |= ~(uint64_t)0 << shift;
    return (int64_t)value;
}

enum {
    PE_OMIT = 0xff, PE_INDIRECT = 0x80,
    PE_ABSPTR = 0x00, PE_ULEB = 0x01, PE_UDATA2 = 0x02, PE_UDATA4 = 0x03, PE_UDATA8 = 0x04,
    PE_SLEB = 0x09, PE_SDATA2 = 0x0a, PE_SDATA4 = 0x0b, PE_SDATA8 = 0x0c,
    PE_PCREL = 0x10, PE_DATAREL = 0x30,
};

/// Reads a pointer in DW_EH_PE encoding `encoding`. `data_base` is what DW_EH_PE_datarel is
/// relative to (the .eh_frame_hdr section). With `follow_indirect` false an indirect pointer is
/// only skipped (personality routines: we never need them).
static bool read_encoded(const uint8_t **p, uint8_t encoding, uint64_t data_base, bool follow_indirect, uint64_t *out) {
    if (encoding == PE_OMIT) return false;
    const uint8_t *field = *p;
    uint64_t value;
    switch (encoding & 0x0f) {
    case PE_ABSPTR: case PE_UDATA8: case PE_SDATA8: value = read_u64(field); *p += 8; break;
    case PE_UDATA4: value = read_u32(field); *p += 4; break;
    case PE_SDATA4: value = (uint64_t)(int64_t)(int32_t)read_u32(field); *p += 4; break;
    case PE_UDATA2: value = read_u16(field); *p += 2; break;
    case PE_SDATA2: value = (uint64_t)(int64_t)(int16_t)read_u16(field); *p += 2; break;
    case PE_ULEB: value = read_uleb(p); break;
    case PE_SLEB: value = (uint64_t)read_sleb(p); break;
    default: return false;
    }
    switch (encoding & 0x70) {
    case 0: break;
    case PE_PCREL: value += (uint64_t)(uintptr_t)field; break;
    case PE_DATAREL: value += data_base; break;
    default: return false; // textrel, funcrel, aligned: not produced for x86_64 Linux
    }
    if ((encoding & PE_INDIRECT) && follow_indirect) value = read_u64((const uint8_t *)(uintptr_t)value);
    *out = value;
    return true;
}

/// Finds the FDE covering `pc` through the module's .eh_frame_hdr binary-search table.
static const uint8_t *find_fde(uint64_t pc) {
    struct dl_find_object found;
    if (_dl_find_object((void *)(uintptr_t)pc, &found) != 0 || found.dlfo_eh_frame == NULL) return NULL;
    const uint8_t *header = found.dlfo_eh_frame;
    uint64_t base = (uint64_t)(uintptr_t)header;
    if (header[0] != 1) return NULL;
    const uint8_t *p = header + 4;
    uint64_t eh_frame, count;
    if (!read_encoded(&p, header[1], base, true, &eh_frame) || !read_encoded(&p, header[2], base, true, &count)) return NULL;
    if (header[3] != (PE_DATAREL | PE_SDATA4) || count == 0) return NULL; // the only table form linkers write
    const uint8_t *table = p;
    uint64_t low = 0, high = count; // invariant: entry[low].start <= pc < entry[high].start
    if (base + (uint64_t)(int64_t)(int32_t)read_u32(table) > pc) return NULL;
    while (high - low > 1) {
        uint64_t middle = low + (high - low) / 2;
        uint64_t start = base + (uint64_t)(int64_t)(int32_t)read_u32(table + middle * 8);
        if (start <= pc) low = middle; else high = middle;
    }
    return (const uint8_t *)(uintptr_t)(base + (uint64_t)(int64_t)(int32_t)read_u32(table + low * 8 + 4));
}

/// Reads a CIE/FDE length field; returns the end of the entry and moves `p` past the field.
static const uint8_t *entry_end(const uint8_t **p, bool *is64) {
    uint64_t length = read_u32(*p);
    *p += 4;
    *is64 = length == 0xffffffffu;
    if (*is64) {
        length = read_u64(*p);
        *p += 8;
    }
    return length == 0 ? NULL : *p + length;
}

typedef struct {
    uint64_t code_align;
    int64_t data_align;
    uint64_t ra_register;
    uint8_t fde_encoding;
    bool has_augmentation_data;
    bool signal_frame;
    const uint8_t *instructions, *end;
} swl_cie;

static bool parse_cie(const uint8_t *p, swl_cie *cie) {
    bool is64;
    const uint8_t *end = entry_end(&p, &is64);
    if (end == NULL) return false;
    uint64_t id = is64 ? read_u64(p) : read_u32(p);
    p += is64 ? 8 : 4;
    if (id != 0) return false;
    uint8_t version = *p++;
    if (version != 1 && version != 3 && version != 4) return false;
    const char *augmentation = (const char *)p;
    p += strlen(augmentation) + 1;
    if (version == 4) p += 2; // address_size, segment_selector_size
    cie->code_align = read_uleb(&p);
    cie->data_align = read_sleb(&p);
    cie->ra_register = version == 1 ? *p++ : read_uleb(&p);
    cie->fde_encoding = PE_ABSPTR;
    cie->has_augmentation_data = false;
    cie->signal_frame = false;
    if (augmentation[0] == 'z') {
        cie->has_augmentation_data = true;
        uint64_t length = read_uleb(&p);
        const uint8_t *data = p, *data_end = p + length;
        bool known = true;
        // 'S' and 'B' carry no data: they may come after the last byte ("zRS" of signal trampolines).
        for (const char *a = augmentation + 1; *a && known; a++) {
            uint64_t ignored;
            if ((*a == 'R' || *a == 'L' || *a == 'P') && data >= data_end) return false;
            switch (*a) {
            case 'R': cie->fde_encoding = *data++; break;
            case 'L': data++; break; // LSDA encoding
            case 'P': { // personality routine
                uint8_t encoding = *data++;
                if (!read_encoded(&data, encoding, 0, false, &ignored)) return false;
                break;
            }
            case 'S': cie->signal_frame = true; break;
            case 'B': break;
            default: known = false; break; // the data length lets us skip what we do not know
            }
        }
        p = data_end;
    } else if (augmentation[0] != 0) {
        return false;
    }
    cie->instructions = p;
    cie->end = end;
    return true;
}

// MARK: - Running the call-frame program

enum { HOW_SAME = 0, HOW_UNDEFINED, HOW_AT_CFA, HOW_AT_RBP, HOW_UNSUPPORTED };
enum { CFA_REGISTER = 0, CFA_DEREF, CFA_UNSUPPORTED };
enum { DW_RBP = 6, DW_RSP = 7 };

typedef struct {
    int how;
    int64_t offset;
} swl_register_rule;

typedef struct {
    int cfa_how;
    uint64_t cfa_register;
    int64_t cfa_offset;
    uint64_t cfa_addend; // added after the dereference of CFA_DEREF
    swl_register_rule rbp, ra;
} swl_frame_state;

static swl_register_rule *tracked(swl_frame_state *state, uint64_t reg, const swl_cie *cie) {
    if (reg == DW_RBP) return &state->rbp;
    if (reg == cie->ra_register) return &state->ra;
    return NULL;
}

static void set_rule(swl_frame_state *state, uint64_t reg, const swl_cie *cie, int how, int64_t offset) {
    swl_register_rule *rule = tracked(state, reg, cie);
    if (rule) *rule = (swl_register_rule){how, offset};
}

/// Recognizes the DWARF expressions GCC and Clang emit around stack realignment,
/// "DW_OP_breg6/7 N; DW_OP_deref" for the CFA and "DW_OP_breg6 N" for where RBP is saved, and the
/// CFA of a stack switch (the interposer's own stack, own_stack.c), "DW_OP_breg7 N; DW_OP_deref;
/// DW_OP_plus_uconst K": `*addend` gets K (0 without it).
static bool match_breg(const uint8_t *p, const uint8_t *end, bool deref, uint64_t *reg, int64_t *offset, uint64_t *addend) {
    *addend = 0;
    if (p >= end || *p < 0x70 || *p > 0x8f) return false; // DW_OP_breg0..31
    *reg = (uint64_t)(*p++ - 0x70);
    *offset = read_sleb(&p);
    if (deref) {
        if (p >= end || *p != 0x06) return false; // DW_OP_deref
        p++;
        if (p < end && *p == 0x23) { // DW_OP_plus_uconst
            p++;
            *addend = read_uleb(&p);
        }
    }
    return p == end;
}

/// Runs call-frame instructions from `p` to `end`, starting at code address `location`, until the
/// row that covers `target`. Returns false on anything it cannot parse.
static bool run_program(const uint8_t *p, const uint8_t *end, uint64_t location, uint64_t target, const swl_cie *cie,
                        const swl_frame_state *initial, swl_frame_state *state) {
    swl_frame_state saved[8];
    int depth = 0;
    while (p < end) {
        uint8_t op = *p++;
        uint64_t reg, delta;
        int64_t offset;
        switch (op & 0xc0) {
        case 0x40: // DW_CFA_advance_loc
            location += (uint64_t)(op & 0x3f) * cie->code_align;
            if (location > target) return true;
            continue;
        case 0x80: // DW_CFA_offset
            set_rule(state, op & 0x3f, cie, HOW_AT_CFA, (int64_t)read_uleb(&p) * cie->data_align);
            continue;
        case 0xc0: { // DW_CFA_restore
            swl_register_rule *rule = tracked(state, op & 0x3f, cie);
            if (rule) *rule = *tracked((swl_frame_state *)initial, op & 0x3f, cie);
            continue;
        }
        }
        switch (op) {
        case 0x00: break; // nop
        case 0x01: // set_loc
            if (!read_encoded(&p, cie->fde_encoding, 0, true, &location)) return false;
            if (location > target) return true;
            break;
        case 0x02: delta = *p; p += 1; goto advance;
        case 0x03: delta = read_u16(p); p += 2; goto advance;
        case 0x04: delta = read_u32(p); p += 4; goto advance;
        advance:
            location += delta * cie->code_align;
            if (location > target) return true;
            break;
        case 0x05: // offset_extended
            reg = read_uleb(&p);
            set_rule(state, reg, cie, HOW_AT_CFA, (int64_t)read_uleb(&p) * cie->data_align);
            break;
        case 0x06: { // restore_extended
            reg = read_uleb(&p);
            swl_register_rule *rule = tracked(state, reg, cie);
            if (rule) *rule = *tracked((swl_frame_state *)initial, reg, cie);
            break;
        }
        case 0x07: set_rule(state, read_uleb(&p), cie, HOW_UNDEFINED, 0); break;
        case 0x08: set_rule(state, read_uleb(&p), cie, HOW_SAME, 0); break;
        case 0x09: // register: the value lives in another register, which we do not track
            reg = read_uleb(&p);
            (void)read_uleb(&p);
            set_rule(state, reg, cie, HOW_UNSUPPORTED, 0);
            break;
        case 0x0a: // remember_state (the CFA included, as GCC's and LLVM's unwinders do)
            if (depth == 8) return false;
            saved[depth++] = *state;
            break;
        case 0x0b: // restore_state
            if (depth == 0) return false;
            *state = saved[--depth];
            break;
        case 0x0c: // def_cfa
            state->cfa_how = CFA_REGISTER;
            state->cfa_register = read_uleb(&p);
            state->cfa_offset = (int64_t)read_uleb(&p);
            break;
        case 0x0d: state->cfa_register = read_uleb(&p); break; // def_cfa_register
        case 0x0e: state->cfa_offset = (int64_t)read_uleb(&p); break; // def_cfa_offset
        case 0x0f: { // def_cfa_expression
            uint64_t length = read_uleb(&p);
            uint64_t addend;
            bool ok = match_breg(p, p + length, true, &reg, &offset, &addend);
            state->cfa_how = ok ? CFA_DEREF : CFA_UNSUPPORTED;
            state->cfa_register = reg;
            state->cfa_offset = ok ? offset : 0;
            state->cfa_addend = ok ? addend : 0;
            p += length;
            break;
        }
        case 0x10: { // expression: the register is saved at the address the expression computes
            reg = read_uleb(&p);
            uint64_t length = read_uleb(&p);
            uint64_t base;
            uint64_t addend;
            bool ok = reg == DW_RBP && match_breg(p, p + length, false, &base, &offset, &addend) && base == DW_RBP;
            set_rule(state, reg, cie, ok ? HOW_AT_RBP : HOW_UNSUPPORTED, ok ? offset : 0);
            p += length;
            break;
        }
        case 0x11: // offset_extended_sf
            reg = read_uleb(&p);
            set_rule(state, reg, cie, HOW_AT_CFA, read_sleb(&p) * cie->data_align);
            break;
        case 0x12: // def_cfa_sf
            state->cfa_how = CFA_REGISTER;
            state->cfa_register = read_uleb(&p);
            state->cfa_offset = read_sleb(&p) * cie->data_align;
            break;
        case 0x13: state->cfa_offset = read_sleb(&p) * cie->data_align; break; // def_cfa_offset_sf
        case 0x14: case 0x15: // val_offset(_sf): the value, not a save slot
            reg = read_uleb(&p);
            (void)(op == 0x14 ? (int64_t)read_uleb(&p) : read_sleb(&p));
            set_rule(state, reg, cie, HOW_UNSUPPORTED, 0);
            break;
        case 0x16: { // val_expression
            reg = read_uleb(&p);
            uint64_t length = read_uleb(&p);
            set_rule(state, reg, cie, HOW_UNSUPPORTED, 0);
            p += length;
            break;
        }
        case 0x2e: (void)read_uleb(&p); break; // GNU_args_size
        case 0x2f: // GNU_negative_offset_extended
            reg = read_uleb(&p);
            set_rule(state, reg, cie, HOW_AT_CFA, -(int64_t)read_uleb(&p) * cie->data_align);
            break;
        default: return false;
        }
    }
    return true;
}

/// Computes the rule for a return address: the row of its FDE that covers `pc - 1` (the call
/// instruction; a call to a noreturn function can leave the return address past the function's end).
static swl_rule compute_rule(uint64_t return_address) {
    swl_rule slow = {.kind = RULE_SLOW};
    uint64_t pc = return_address - 1;
    swl_rule no_info = {.kind = RULE_OUTERMOST, .no_info = true};
    const uint8_t *fde = find_fde(pc);
    if (fde == NULL) return no_info;
    const uint8_t *p = fde;
    bool is64;
    const uint8_t *fde_end = entry_end(&p, &is64);
    if (fde_end == NULL) return slow;
    uint64_t cie_offset = is64 ? read_u64(p) : read_u32(p);
    if (cie_offset == 0) return slow; // a CIE, not an FDE
    swl_cie cie;
    if (!parse_cie(p - cie_offset, &cie)) return slow;
    p += is64 ? 8 : 4;
    uint64_t start, range;
    if (!read_encoded(&p, cie.fde_encoding, 0, true, &start)) return slow;
    if (!read_encoded(&p, cie.fde_encoding & 0x0f, 0, false, &range)) return slow;
    if (pc < start || pc - start >= range) return no_info; // code between FDEs
    if (cie.has_augmentation_data) p += read_uleb(&p);
    if (cie.signal_frame) return (swl_rule){.kind = RULE_SLOW, .signal_frame = true};

    swl_frame_state initial = {.cfa_how = CFA_UNSUPPORTED, .rbp = {HOW_SAME, 0}, .ra = {HOW_UNSUPPORTED, 0}};
    if (!run_program(cie.instructions, cie.end, start, pc, &cie, &initial, &initial)) return slow;
    swl_frame_state state = initial;
    if (!run_program(p, fde_end, start, pc, &cie, &initial, &state)) return slow;

    if (state.ra.how == HOW_UNDEFINED) return (swl_rule){.kind = RULE_OUTERMOST};
    if (state.ra.how != HOW_AT_CFA || state.ra.offset != -8) return slow;
    if (state.cfa_how == CFA_UNSUPPORTED || (state.cfa_register != DW_RBP && state.cfa_register != DW_RSP)) return slow;
    swl_rule rule = {
        .kind = RULE_STEP,
        .cfa_from_rbp = state.cfa_register == DW_RBP,
        .cfa_deref = state.cfa_how == CFA_DEREF,
        .cfa_offset = state.cfa_offset,
        .cfa_addend = state.cfa_addend,
    };
    switch (state.rbp.how) {
    case HOW_SAME: rule.rbp_rule = RBP_SAME; break;
    case HOW_AT_CFA: rule.rbp_rule = RBP_AT_CFA; rule.rbp_offset = state.rbp.offset; break;
    case HOW_AT_RBP: rule.rbp_rule = RBP_AT_RBP; rule.rbp_offset = state.rbp.offset; break;
    default: return slow;
    }
    rule.follows = true;
    return rule;
}

/// The cache miss: kept out of line so the walking loop stays small and keeps its registers.
static __attribute__((noinline, cold)) uint32_t learn_rule(uint64_t return_address) {
    if (return_address >> 47) return RULE_SLOW; // not user-space code: the tag would not fit
    uint32_t packed = pack_rule(compute_rule(return_address));
    uint64_t tag = return_address >> INDEX_BITS;
    __atomic_store_n(&g_rules[rule_slot(return_address)], tag << 32 | packed, __ATOMIC_RELAXED);
    return packed;
}

static inline uint32_t rule_for(uint64_t return_address) {
    uint64_t word = __atomic_load_n(&g_rules[rule_slot(return_address)], __ATOMIC_RELAXED);
    // A word whose tag matches has a kind; an address at or above 2^47 never matches a tag.
    if (__builtin_expect((word >> 32) == (return_address >> INDEX_BITS) && packed_kind((uint32_t)word) != RULE_EMPTY, 1)) {
        return (uint32_t)word;
    }
    return learn_rule(return_address);
}

// MARK: - Walking

/// Reads one word of this process's memory that may not be mapped: a guess must never fault.
/// process_vm_readv on ourselves needs no descriptor (libunwind validates such reads through a pipe
/// it keeps open in the program, on fds the program may have reused) and fails with EFAULT.
static bool read_word_safely(uint64_t address, uint64_t *out) {
    struct iovec local = {.iov_base = out, .iov_len = 8};
    struct iovec remote = {.iov_base = (void *)(uintptr_t)address, .iov_len = 8};
    return syscall(SYS_process_vm_readv, (long)getpid(), &local, 1UL, &remote, 1UL, 0UL) == 8;
}

/// Where the kernel's rt_sigframe keeps the interrupted registers: the handler returns into the
/// trampoline with RSP at the ucontext_t, whose uc_mcontext.gregs follow uc_flags, uc_link and
/// uc_stack (x86_64 Linux, fixed by the kernel ABI).
enum { UCONTEXT_GREGS = 40, GREG_RBP = 10, GREG_RSP = 15, GREG_RIP = 16 };

/// Steps a frame the cache cannot describe. Returns false when the stack ends here. `exact_ip` is
/// set when the next ip is an interrupted instruction (after a signal frame), not a return address.
static __attribute__((noinline, cold)) bool step_slowly(uint64_t *ip, uint64_t *rsp, uint64_t *rbp, bool exact_ip, bool *next_exact) {
    *next_exact = false;
    // compute_rule looks at ip - 1: an interrupted instruction is itself the one to look up.
    swl_rule rule = compute_rule(exact_ip ? *ip + 1 : *ip);
    if (rule.kind == RULE_OUTERMOST && !rule.no_info) return false;
    if (rule.signal_frame) {
        const uint64_t *gregs = (const uint64_t *)(uintptr_t)(*rsp + UCONTEXT_GREGS);
        uint64_t new_rsp = gregs[GREG_RSP];
        *rbp = gregs[GREG_RBP];
        *ip = gregs[GREG_RIP];
        *rsp = new_rsp;
        *next_exact = true;
        return true;
    }
    if (rule.kind == RULE_OUTERMOST) {
        // No unwind information: the end of the stack if RBP is 0, else libunwind's guess. RBP
        // must point a little above the current frame at a saved RBP and a return address.
        if (*rbp == 0) return false;
        uint64_t saved_rbp, return_address;
        if (*rbp < *rsp || *rbp - *rsp > 0x4000) return false;
        if (!read_word_safely(*rbp, &saved_rbp) || !read_word_safely(*rbp + 8, &return_address)) return false;
        *rbp = saved_rbp;
        *ip = return_address;
        *rsp += 16;
        return true;
    }
    if (rule.kind != RULE_STEP || !rule.follows) return false; // CFI this walker cannot follow: stop here
    uint64_t cfa = (rule.cfa_from_rbp ? *rbp : *rsp) + (uint64_t)rule.cfa_offset;
    if (rule.cfa_deref && !read_word_safely(cfa, &cfa)) return false;
    cfa += rule.cfa_addend;
    // A loaded CFA may lie on another stack (a switch back to the program's); a computed one must
    // lie above the callee's frame.
    if (cfa == 0 || (!rule.cfa_deref && (cfa <= *rsp || cfa - *rsp > (1u << 30)))) return false;
    uint64_t new_rbp = *rbp;
    if (rule.rbp_rule == RBP_AT_CFA && !read_word_safely(cfa + (uint64_t)rule.rbp_offset, &new_rbp)) return false;
    if (rule.rbp_rule == RBP_AT_RBP && !read_word_safely(*rbp + (uint64_t)rule.rbp_offset, &new_rbp)) return false;
    uint64_t return_address;
    if (!read_word_safely(cfa - 8, &return_address)) return false;
    *rbp = new_rbp;
    *ip = return_address;
    *rsp = cfa;
    return true;
}

// MARK: - The thread's memo of an earlier walk
//
// Stepping a frame is a chain of dependent loads (the return address gives the rule, the rule the
// caller's frame, that frame the next return address), ~5 ns a frame. Consecutive stacks of one
// thread mostly share their outer frames. Each thread keeps the states (ip, rsp, rbp) of one
// earlier walk; a new walk that reaches a remembered ip at the same rsp takes the remembered
// frames after it, as long as the words they came from still hold. That is exact: a fast step's
// result depends only on the frame's state, the rule for its ip (fixed for given code; a memo
// made before a dlclose is dropped) and the words it reads. The return address at CFA-8 must
// equal the remembered one; the saved RBP is read as the step reads it, and a later step that
// uses RBP (an RBP-based CFA) goes on only with the RBP it was remembered with. The addresses of
// those words are known in advance, so following the memo is a row of independent loads instead
// of a chain. The memo holds fast steps only: it ends at a frame stepped by the slow path or
// through a loaded CFA, and the step out of its last frame is always taken for real.
//
// The memo lives in TLS, which the exit scan reads as a root, and RBP may hold a block address
// (so may RSP, on a stack the program allocated): every word is stored XOR MEMO_MASK, which sets
// bit 63 (never a user-space address) and bit 0 (never aligned), so nothing there can look like a
// reference to a block.
#define MEMO_FRAMES 64
#define MEMO_MASK 0x8000000000000001ULL
#define MEMO_STEP_USES_RBP 1u /* the step computes the CFA or the saved RBP's address from RBP */

typedef struct {
    uint64_t ip, rsp, rbp; /* the frame's state, masked */
    uint64_t rbp_word;     /* masked address of the saved RBP its step reads; 0: none */
} memo_frame;

static __thread memo_frame t_memo[MEMO_FRAMES];
static __thread uint8_t t_memo_flags[MEMO_FRAMES];
static __thread int t_memo_count;
/// swl_rules_generation when the memo was recorded.
static __thread uint32_t t_memo_generation;
/// The last walk found the memo a poor guess: the next one records a new memo.
static __thread bool t_memo_stale;
/// The last walk recorded every one of its frames in the memo and ended for a reason that depends
/// on its last frame's ip alone (that ip's rule says the stack ends, or the frame limit was
/// reached): the memo then describes the whole stack, and swl_unwind_remember may keep it.
static __thread bool t_memo_complete;

enum { MEMO_OFF = 0, MEMO_USE = 1, MEMO_RECORD = 2 };

typedef struct {
    int count, last; // frames written in all; the memo frame the walk goes on from
    uint64_t rbp;    // rbp in that frame
} memo_followed;

/// Whether the step out of remembered frame `here` (its memo flags `flags`) still leads to the
/// remembered frame `next`, given the walk's `*rbp` in `here`: the RBP the step uses, if it uses
/// one, is the remembered one, and the return address at next's CFA-8 is next's ip. Then `*rbp`
/// becomes what the step reads as the saved RBP: its value matters only to a later step that uses
/// RBP, and that step compares it. Every address read is one the real step would read.
static inline bool memo_step_holds(const memo_frame *here, uint8_t flags, const memo_frame *next, uint64_t *rbp) {
    if ((flags & MEMO_STEP_USES_RBP) && *rbp != (here->rbp ^ MEMO_MASK)) return false;
    if (*(const uint64_t *)(uintptr_t)((next->rsp ^ MEMO_MASK) - 8) != (next->ip ^ MEMO_MASK)) return false;
    if (here->rbp_word != 0) *rbp = *(const uint64_t *)(uintptr_t)(here->rbp_word ^ MEMO_MASK);
    return true;
}

/// The walk has reached memo frame `x` (same ip, same rsp; `frames[count]` is still to be
/// written, `rbp` is the walk's). Writes that frame and the memo's next ones as long as the words
/// their steps read still hold, and marks the memo stale when it was a poor guess. Out of line:
/// the walking loop keeps its registers.
static __attribute__((noinline)) memo_followed follow_memo(uint64_t *frames, int count, int max, int x, int memo_count,
                                                           uint64_t rbp) {
    int walked = count;
    frames[count++] = t_memo[x].ip ^ MEMO_MASK;
    for (; x + 1 < memo_count && count < max; x++) {
        if (!memo_step_holds(&t_memo[x], t_memo_flags[x], &t_memo[x + 1], &rbp)) break;
        frames[count++] = t_memo[x + 1].ip ^ MEMO_MASK;
    }
    // A guess that saved fewer frames than were walked to reach it, or that broke off, is replaced
    // by this stack's own on the next walk.
    t_memo_stale = count - walked - 1 < walked || (x + 1 < memo_count && count < max);
    return (memo_followed){count, x, rbp};
}

/// Walks from a caller's frame: `sp` points at its return address, `rbp` is its frame pointer.
/// `stack_pointers`, when given, gets each frame's stack pointer (where its callee returned to).
/// `memo_mode` (a constant at each call) says whether the thread's memo is used, recorded, or neither.
static inline int walk(uint64_t *frames, uint64_t *stack_pointers, int max, const uint64_t *sp, uint64_t rbp,
                       int memo_mode) {
    uint64_t ip = sp[0];
    uint64_t rsp = (uint64_t)(uintptr_t)(sp + 1);
    int count = 0;
    bool exact_ip = false; // ip is an interrupted instruction (the frame below was a signal frame)
    int memo_count = memo_mode == MEMO_USE ? t_memo_count : 0;
    int cursor = 0;        // the first memo frame whose rsp is not below this frame's
    bool recording = memo_mode == MEMO_RECORD;
    if (recording) t_memo_count = 0;
    while (count < max && ip != 0) {
        if (memo_mode == MEMO_USE && memo_count != 0) {
            while (cursor < memo_count && (t_memo[cursor].rsp ^ MEMO_MASK) < rsp) cursor++;
            if (cursor < memo_count && (t_memo[cursor].rsp ^ MEMO_MASK) == rsp && (t_memo[cursor].ip ^ MEMO_MASK) == ip &&
                !exact_ip) {
                memo_followed followed = follow_memo(frames, count, max, cursor, memo_count, rbp);
                count = followed.count;
                if (count >= max) return count;
                // Its last frame is exact (with the rbp carried along): step out of it for real.
                ip = t_memo[followed.last].ip ^ MEMO_MASK;
                rsp = t_memo[followed.last].rsp ^ MEMO_MASK;
                rbp = followed.rbp;
                memo_count = 0;
                count--; // re-written just below, then stepped
            }
        }
        if (stack_pointers) stack_pointers[count] = rsp;
        frames[count++] = ip;
        memo_frame *memo = NULL;
        if (recording) {
            memo = &t_memo[count - 1];
            *memo = (memo_frame){ip ^ MEMO_MASK, rsp ^ MEMO_MASK, rbp ^ MEMO_MASK, 0};
            t_memo_flags[count - 1] = 0;
            t_memo_count = count;
            // This frame's step decides whether the memo goes on after it.
            recording = count < MEMO_FRAMES && !exact_ip;
        }
        uint32_t rule = exact_ip ? RULE_SLOW : rule_for(ip);
        switch (packed_kind(rule)) {
        case RULE_OUTERMOST:
            if ((rule & RULE_NO_INFO) && rbp != 0) break;
            // With no unwind information the end depends on RBP too: such a stack is not kept whole.
            if (memo_mode == MEMO_RECORD && t_memo_count == count && !(rule & RULE_NO_INFO)) t_memo_complete = true;
            return count;
        case RULE_STEP: {
            uint64_t cfa = ((rule & 4) ? rbp : rsp) + (uint64_t)packed_cfa_offset(rule);
            if (rule & 8) {
                cfa = *(const uint64_t *)(uintptr_t)cfa;
                recording = false; // a loaded CFA: the memo cannot check this step
            }
            // Each caller's frame lies above its callee's. Anything else means the rules and the
            // stack disagree (hand-written code with wrong CFI, a stack switch): do not follow it.
            if (cfa <= rsp || cfa - rsp > (1u << 30)) return count;
            uint64_t rbp_word = 0;
            switch ((rule >> 4) & 3) {
            case RBP_AT_CFA: rbp_word = cfa + (uint64_t)packed_rbp_offset(rule); break;
            case RBP_AT_RBP: rbp_word = rbp + (uint64_t)packed_rbp_offset(rule); break;
            default: break;
            }
            if (memo) {
                memo->rbp_word = rbp_word ? rbp_word ^ MEMO_MASK : 0;
                if ((rule & 4) || ((rule >> 4) & 3) == RBP_AT_RBP) t_memo_flags[count - 1] = MEMO_STEP_USES_RBP;
            }
            if (rbp_word) rbp = *(const uint64_t *)(uintptr_t)rbp_word;
            ip = *(const uint64_t *)(uintptr_t)(cfa - 8);
            rsp = cfa;
            continue;
        }
        default: break;
        }
        recording = false; // the slow path's reads are not the memo's to check
        // Copies: with their addresses taken, ip, rsp and rbp themselves would live in memory for
        // the whole loop and every fast step would wait on a store and a reload.
        uint64_t slow_ip = ip, slow_rsp = rsp, slow_rbp = rbp;
        bool next_exact;
        if (!step_slowly(&slow_ip, &slow_rsp, &slow_rbp, exact_ip, &next_exact)) return count;
        ip = slow_ip, rsp = slow_rsp, rbp = slow_rbp;
        exact_ip = next_exact;
    }
    // Ended at the frame limit (or at a return address of 0, which is not an ip-only reason).
    if (memo_mode == MEMO_RECORD && count >= max && t_memo_count == count) t_memo_complete = true;
    return count;
}

int swl_unwind_from(uint64_t *frames, int max, const uint64_t *sp, uint64_t rbp) {
    return walk(frames, NULL, max, sp, rbp, MEMO_OFF);
}

int swl_unwind_at(uint64_t *frames, int max, const uint64_t *sp, uint64_t rbp) {
    uint32_t generation = __atomic_load_n(&swl_rules_generation, __ATOMIC_ACQUIRE);
    t_memo_complete = false;
    if (t_memo_stale || t_memo_count == 0 || t_memo_generation != generation) {
        t_memo_stale = false;
        t_memo_generation = generation;
        return walk(frames, NULL, max, sp, rbp, MEMO_RECORD);
    }
    // A walk that never reaches the memo leaves it stale; follow_memo gives its own verdict.
    t_memo_stale = true;
    return walk(frames, NULL, max, sp, rbp, MEMO_USE);
}

// MARK: - The thread's known stacks
//
// Following the memo still writes every frame, and the caller then hashes and looks the stack up
// to intern it. Most allocations come from a few call paths that recur over and over: each thread
// also keeps a few whole stacks it has walked (every frame recorded, as in the memo, and the
// stack ended for a reason that depends only on the last frame's ip), each with the value its
// caller interned it as. A walk that starts at a known stack's first frame (same ip, same rsp)
// and finds every word that stack's steps read unchanged would give exactly its frames (the same
// argument as for the memo), so the caller can take the value without walking or interning.
//
// The check. The steps' conditions (memo_step_holds, for every frame but the last) all read "the
// word at this address holds this value": the return address at the next frame's CFA-8, and for
// a step that uses RBP, the RBP it was remembered with, which is either the RBP at the first frame
// or the word the latest earlier step read as the saved RBP (at an address the memo holds). So a
// kept stack is compiled once into (address, value) pairs in step order, and the check compares
// them in that order with an early exit: the same words memo_step_holds reads, each only once a
// real walk would read it, for about two thirds of the instructions, loads and branches.
// (Comparing every candidate's pairs without branches and picking the stack from the mask of those
// that hold was slower: the choice then waits on every load.)
//
// Which stacks are kept: a walk that records the memo anyway is kept. A miss first only notes its
// first frame (the area's `missed`); a second miss from the same first frame makes the next walk record, and
// that stack is kept. So a stack seen once (most of a compiler's) costs no recording, and a
// thread's recurring paths are soon all known. Unlike the memo's, these words are kept as they
// are: the area lies on the thread's own stack, which the exit scan never reads (its other words,
// the hooks' spilled registers, hold block addresses anyway). With the stack of the thread's last
// hit tried first, that is 15% fewer instructions per look-up (163 -> 141 on malloc_heavy).
//
// Where few captures are served (a compiler: most of its stacks recur rarely), the look-ups, the
// recording walks they ask for and the keeping cost about what the hits save: a thread with fewer
// than SWL_KNOWN_MIN_HITS hits in a window of SWL_KNOWN_WINDOW look-ups rests for SWL_KNOWN_REST
// captures (no look-up, no keeping), then tries another window. So a later phase of the program
// whose paths recur gets its known stacks back within SWL_KNOWN_REST + SWL_KNOWN_WINDOW captures.
//
// They take ~11 KB a thread, too much for static TLS: glibc carves a thread's TLS out of its stack
// and refuses a stack of PTHREAD_STACK_MIN once the TLS leaves too little of it. So they live in
// an area the caller hands each thread (the preload: the far end of the thread's own stack); a
// thread without one keeps no stacks.
//
// The types, the constants (SWL_KNOWN_*) and the look-up (swl_unwind_known) are in unwind.h, so
// that the hooks have it inline; only its rare paths are here.

size_t swl_unwind_area_bytes(void) { return sizeof(swl_known_area); }

void swl_unwind_use_area(void *area) {
    swl_known_area *known = area;
    // The memory may have been another thread's: its stacks would still be exact (the check reads
    // this thread's words), but start empty.
    if (known) memset(known, 0, offsetof(swl_known_area, stacks));
    swl_thread_known_area = known;
}

bool swl_unwind_known_begin_slowly(swl_known_area *area, uint64_t owner, uint32_t generation) {
    if (area->resting != 0) {
        area->resting--;
        return false;
    }
    memset(area->first_ip, 0, sizeof area->first_ip);
    area->owner = owner;
    area->generation = generation;
    return true;
}

void swl_unwind_known_missed(swl_known_area *area, uint64_t ip, uint64_t rsp) {
    uint64_t missed = ((ip ^ (rsp * 0x9e3779b97f4a7c15ULL)) | MEMO_MASK);
    uint64_t *slot = &area->missed[(missed >> 17) % SWL_KNOWN_MISSED_SLOTS];
    if (*slot == missed) {
        t_memo_stale = true; // the walk that follows records, and swl_unwind_remember keeps it
        *slot = 0;
    } else {
        *slot = missed;
    }
}

void swl_unwind_remember(uint64_t owner, uint32_t value) {
    swl_known_area *area = swl_thread_known_area;
    if (area == NULL || !t_memo_complete || t_memo_count > SWL_KNOWN_FRAMES) return;
    t_memo_complete = false;
    // Resting, or the memo was made for other ids or other rules than the kept stacks.
    if (area->resting != 0 || area->owner != owner || area->generation != t_memo_generation) return;
    unsigned k = area->next++ % SWL_KNOWN_STACKS;
    area->first_ip[k] = 0;
    swl_known_stack *known = &area->stacks[k];
    int count = t_memo_count, pairs = 0;
    known->needs_entry_rbp = 0;
    known->entry_rbp = 0;
    int rbp_source = -1; // the latest step that read a saved RBP (-1: the RBP is still the first frame's)
    for (int x = 0; x + 1 < count; x++) {
        const memo_frame *here = &t_memo[x], *next = &t_memo[x + 1];
        if (t_memo_flags[x] & MEMO_STEP_USES_RBP) {
            if (rbp_source < 0) {
                known->needs_entry_rbp = 1;
                known->entry_rbp = here->rbp ^ MEMO_MASK;
            } else {
                known->pair[pairs++] = (swl_known_pair){t_memo[rbp_source].rbp_word ^ MEMO_MASK, here->rbp ^ MEMO_MASK};
            }
        }
        known->pair[pairs++] = (swl_known_pair){(next->rsp ^ MEMO_MASK) - 8, next->ip ^ MEMO_MASK};
        if (here->rbp_word != 0) rbp_source = x;
    }
    known->pairs = (uint8_t)pairs;
    known->count = (uint8_t)count;
    known->value = value;
    for (int x = 0; x < count; x++) known->ip[x] = t_memo[x].ip ^ MEMO_MASK;
    area->first_rsp[k] = t_memo[0].rsp ^ MEMO_MASK;
    area->first_ip[k] = t_memo[0].ip ^ MEMO_MASK;
}

int swl_unwind_with_stack_pointers_from(uint64_t *frames, uint64_t *stack_pointers, int max, const uint64_t *sp, uint64_t rbp) {
    return walk(frames, stack_pointers, max, sp, rbp, MEMO_OFF);
}

#endif
