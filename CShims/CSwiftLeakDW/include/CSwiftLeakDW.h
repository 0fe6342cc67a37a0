#ifndef CSWIFTLEAK_DW_H
#define CSWIFTLEAK_DW_H

// A thin shim over elfutils' libdwfl/libdw for the symbolizer: open one ELF file from disk at a
// given load bias (offline, no process needed), look an address up (symbol, source line, inline
// chain), read the file's build id, and demangle C++ names with libstdc++'s __cxa_demangle.
//
// Strings returned by swl_dw_lookup point into libdw's data for the module and stay valid until
// swl_dw_close. A swl_dw_module must not be used from two threads at once.

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// One ELF file (and its separate debug info, if found) loaded at a fixed bias.
typedef struct swl_dw_module swl_dw_module;

/// Opens `path` as if it was loaded with `l_addr == bias`. Debug info is searched the standard
/// libdwfl way: the file itself, `.gnu_debuglink` next to it, in `.debug/` beside it and under
/// /usr/lib/debug, and by build id under /usr/lib/debug/.build-id; debuginfod only when
/// DEBUGINFOD_URLS is set (docs/symbolization.md). Returns NULL when the file
/// cannot be opened or is not ELF; then `*error` (if not NULL) holds a static message.
swl_dw_module *swl_dw_open(const char *path, uint64_t bias, const char **error);

void swl_dw_close(swl_dw_module *module);

/// The calling thread's kernel id (gettid(2), which Swift's Glibc module does not export): the
/// symbolizer lends a lookup's priority to the thread preparing a module it waits for.
int32_t swl_dw_thread_id(void);

/// The GNU build id of the file on disk; 0 when it has none. `*bits` stays valid until close.
size_t swl_dw_build_id(swl_dw_module *module, const uint8_t **bits);

/// 1 when DWARF debug info was found for the module (in the file or a separate debug file).
int swl_dw_has_dwarf(swl_dw_module *module);

/// The runtime address range [start, end) libdwfl computed for the module.
void swl_dw_range(swl_dw_module *module, uint64_t *start, uint64_t *end);

/// One source-level frame for an address.
typedef struct swl_dw_frame {
    /// Function name as stored (linkage name when known: still mangled), or NULL.
    const char *name;
    /// Source file as the line table gives it (usually absolute), or NULL.
    const char *file;
    /// DW_AT_comp_dir of the compile unit, to resolve a relative `file`, or NULL.
    const char *comp_dir;
    /// 0 when unknown.
    int32_t line;
    /// 1 for a frame of inlined code (every frame but the last one of a lookup).
    int32_t inlined;
} swl_dw_frame;

/// Looks up the runtime address `address`. Fills at most `capacity` frames, innermost first (the
/// inlined functions, then the function the address belongs to) and returns how many it filled:
/// 0 when nothing at all is known about the address.
int swl_dw_lookup(swl_dw_module *module, uint64_t address, swl_dw_frame *frames, int capacity);

/// Builds now what the first lookups would otherwise build: the sorted function-symbol table, the
/// DWARF (reading and decompressing its sections) with its compile units and their address ranges.
/// For loading a module ahead, on a background thread, while the program runs; lookups do not need it.
void swl_dw_prepare(swl_dw_module *module);

/// The runtime address of the function symbol `name` (.symtab, else .dynsym); 0 when there is none.
uint64_t swl_dw_function_address(swl_dw_module *module, const char *name);

/// Copies at most `capacity` bytes of the loaded file's contents at runtime address `address`
/// (from the section that holds it; never past its end). Returns how many were copied: 0 when no
/// section with contents covers the address.
size_t swl_dw_read(swl_dw_module *module, uint64_t address, uint8_t *buffer, size_t capacity);

/// libstdc++'s Itanium demangler. Returns a malloc'd string (free it) or NULL when `mangled` is not
/// a valid C++ name.
char *swl_dw_cxa_demangle(const char *mangled);

#ifdef __cplusplus
}
#endif

#endif
