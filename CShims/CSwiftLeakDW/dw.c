#ifndef _GNU_SOURCE
#error "_GNU_SOURCE must be defined (Package.swift sets it for every C target)"
#endif

#include "CSwiftLeakDW.h"

#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwfl.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// The Itanium C++ ABI demangler, exported by libstdc++ (linked by this target).
extern char *__cxa_demangle(const char *mangled, char *buffer, size_t *length, int *status);

// elfutils 0.188 answers each dwfl_module_addrinfo with a linear scan of the symbol table, and each
// dwarf_getscopes with a walk of the whole compile unit: far too slow for tens of thousands of
// addresses in libraries with large symbol tables and compile units. So each module gets, built on
// first use, a sorted function-symbol table, and each compile unit a sorted table of the address
// ranges of its functions and inlined instances.

/// A function symbol at its runtime address.
typedef struct swl_dw_symbol {
    Dwarf_Addr address, size;
    const char *name;
} swl_dw_symbol;

/// A subprogram or inlined-subroutine DIE, with the nearest enclosing one.
typedef struct swl_dw_function {
    Dwarf_Die die;
    int32_t parent;  // index in the CU's functions, -1 for none
    int32_t depth;
} swl_dw_function;

/// One contiguous address range (DWARF addresses, i.e. without bias) of a function.
typedef struct swl_dw_span {
    Dwarf_Addr low, high;
    int32_t function;
    int32_t depth;
} swl_dw_span;

typedef struct swl_dw_unit {
    Dwarf_Off offset;
    Dwarf_Die cudie;
    bool indexed;
    swl_dw_function *functions;
    size_t function_count, function_capacity;
    swl_dw_span *spans;        // sorted by low, then depth
    size_t span_count, span_capacity;
} swl_dw_unit;

/// One compile unit's address range, for modules without .debug_aranges (Swift, clang and rustc
/// do not emit it by default; elfutils 0.188 then finds no CU for any address).
typedef struct swl_dw_unit_range {
    Dwarf_Addr low, high;
    size_t unit;
} swl_dw_unit_range;

struct swl_dw_module {
    Dwfl *dwfl;
    Dwfl_Module *mod;

    bool symbols_built;
    swl_dw_symbol *symbols;  // sorted by address, one per address
    size_t symbol_count;

    bool units_built;
    Dwarf *dwarf;
    Dwarf_Addr dwarf_bias;
    swl_dw_unit *units;      // in .debug_info order, so sorted by offset
    size_t unit_count;

    bool unit_ranges_built;
    swl_dw_unit_range *unit_ranges;  // sorted by low
    size_t unit_range_count;
};

// NULL: libdwfl's default, ":.debug:/usr/lib/debug" (next to the file, in .debug/ beside it, under
// /usr/lib/debug), with the CRC of a .gnu_debuglink target checked. Build-id lookup under
// /usr/lib/debug/.build-id is always tried as well.
static char *swl_dw_debuginfo_path = NULL;

// MARK: Where the debug info is

// dwfl_standard_find_debuginfo ends, when its build-id and path searches found nothing, in
// libdw's debuginfod client: libdw dlopens libdebuginfod (with libcurl, GnuTLS, Kerberos, LDAP:
// about 30 libraries here, whose constructors and exit handlers run too) the first time, whether
// DEBUGINFOD_URLS is set or not, only for the client to find no server. Every stripped file
// (/bin/true, most system libraries) gets there: that cost 6 ms of every `swiftleak run`, the
// first file being the program, read for its __lsan_default_suppressions before it starts.
// So the standard search runs only when it can find something without debuginfod (a debug file
// by build id, or a file where the path search looks), or when DEBUGINFOD_URLS names a server.

static bool swl_dw_debuginfod_wanted(void) {
    const char *urls = getenv("DEBUGINFOD_URLS");
    return urls != NULL && urls[0] != '\0';
}

// Whether `directory`/`subdirectory`/`name` (each may be NULL or empty) exists and is not the
// module's own file.
static bool swl_dw_candidate_exists(const char *directory, const char *subdirectory, const char *name,
                                    const struct stat *own) {
    char path[PATH_MAX];
    int length = snprintf(path, sizeof path, "%s%s%s%s%s", directory ? directory : "",
                          directory && directory[0] ? "/" : "", subdirectory ? subdirectory : "",
                          subdirectory && subdirectory[0] ? "/" : "", name);
    if (length <= 0 || (size_t)length >= sizeof path) return false;
    struct stat found;
    if (stat(path, &found) != 0) return false;
    return own == NULL || found.st_dev != own->st_dev || found.st_ino != own->st_ino;
}

// Whether the path search of dwfl_standard_find_debuginfo could find a file for a module at
// `file` with the .gnu_debuglink (or .gnu_debugaltlink) name `link`: a superset of the places it
// opens with the default path (the file's directory, its .debug/ and .dwz/, /usr/lib/debug and
// /usr/lib/debug/.dwz, /usr/lib/debug/ followed by every tail of the file's absolute directory;
// the link name, its basename, and the file's basename with and without .debug).
static bool swl_dw_path_search_may_find(const char *file, const char *link) {
    if (file == NULL) return false;
    struct stat own_stat;
    const struct stat *own = stat(file, &own_stat) == 0 ? &own_stat : NULL;
    const char *names[4];
    int name_count = 0;
    const char *file_base = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
    char made_up[PATH_MAX];
    if (link != NULL && link[0] != '\0') {
        if (link[0] == '/' && swl_dw_candidate_exists(NULL, NULL, link, own)) return true;
        names[name_count++] = link;
        if (strrchr(link, '/')) names[name_count++] = strrchr(link, '/') + 1;
    }
    if (snprintf(made_up, sizeof made_up, "%s.debug", file_base) < (int)sizeof made_up) names[name_count++] = made_up;
    names[name_count++] = file_base;

    // The file's directory as named, and as its real path names it (a symlink's target).
    char directories[2][PATH_MAX];
    int directory_count = 0;
    if (file_base != file && (size_t)(file_base - 1 - file) < sizeof directories[0]) {
        memcpy(directories[0], file, (size_t)(file_base - 1 - file));
        directories[0][file_base - 1 - file] = '\0';
        directory_count = 1;
    }
    char *real = realpath(file, NULL);
    if (real != NULL) {
        char *slash = strrchr(real, '/');
        if (slash != NULL && (size_t)(slash - real) < sizeof directories[0]) {
            memcpy(directories[directory_count], real, (size_t)(slash - real));
            directories[directory_count][slash - real] = '\0';
            if (directory_count == 0 || strcmp(directories[0], directories[1]) != 0) directory_count++;
        }
        free(real);
    }
    static const char *const debug_root = "/usr/lib/debug";
    for (int n = 0; n < name_count; n++) {
        if (swl_dw_candidate_exists(debug_root, NULL, names[n], own)) return true;
        if (swl_dw_candidate_exists(debug_root, ".dwz", names[n], own)) return true;
        for (int d = 0; d < directory_count; d++) {
            const char *directory = directories[d];
            if (swl_dw_candidate_exists(directory, NULL, names[n], own)) return true;
            if (swl_dw_candidate_exists(directory, ".debug", names[n], own)) return true;
            if (swl_dw_candidate_exists(directory, ".dwz", names[n], own)) return true;
            if (directory[0] != '/') continue;
            for (const char *tail = directory; tail != NULL; tail = strchr(tail + 1, '/')) {
                if (swl_dw_candidate_exists(debug_root, tail + 1, names[n], own)) return true;
            }
        }
    }
    return false;
}

static int swl_dw_find_debuginfo(Dwfl_Module *mod, void **userdata, const char *modname, GElf_Addr base,
                                 const char *file_name, const char *debuglink_file, GElf_Word debuglink_crc,
                                 char **debuginfo_file_name) {
    if (swl_dw_debuginfod_wanted() || swl_dw_path_search_may_find(file_name, debuglink_file)) {
        return dwfl_standard_find_debuginfo(mod, userdata, modname, base, file_name, debuglink_file, debuglink_crc,
                                            debuginfo_file_name);
    }
    // By build id only (the standard search's first step); nothing on the path could match.
    errno = 0;
    int fd = dwfl_build_id_find_debuginfo(mod, userdata, modname, base, file_name, debuglink_file, debuglink_crc,
                                          debuginfo_file_name);
    if (fd < 0) errno = 0;
    return fd;
}

static const Dwfl_Callbacks swl_dw_offline_callbacks = {
    .find_elf = dwfl_build_id_find_elf,
    .find_debuginfo = swl_dw_find_debuginfo,
    .section_address = dwfl_offline_section_address,
    .debuginfo_path = &swl_dw_debuginfo_path,
};

swl_dw_module *swl_dw_open(const char *path, uint64_t bias, const char **error) {
    if (error != NULL) *error = NULL;
    if (path == NULL || path[0] == '\0') {
        if (error != NULL) *error = "empty path";
        return NULL;
    }
    Dwfl *dwfl = dwfl_begin(&swl_dw_offline_callbacks);
    if (dwfl == NULL) {
        if (error != NULL) *error = dwfl_errmsg(-1);
        return NULL;
    }
    dwfl_report_begin(dwfl);
    // add_p_vaddr = true: `bias` is added to the file's virtual addresses (ld.so's l_addr). With
    // false it would be the address of the first PT_LOAD, which differs for prelinked libraries.
    Dwfl_Module *mod = dwfl_report_elf(dwfl, path, path, -1, (GElf_Addr)bias, true);
    if (mod == NULL) {
        if (error != NULL) *error = dwfl_errmsg(-1);
        dwfl_end(dwfl);
        return NULL;
    }
    if (dwfl_report_end(dwfl, NULL, NULL) != 0) {
        if (error != NULL) *error = dwfl_errmsg(-1);
        dwfl_end(dwfl);
        return NULL;
    }
    swl_dw_module *module = calloc(1, sizeof *module);
    if (module == NULL) {
        if (error != NULL) *error = "out of memory";
        dwfl_end(dwfl);
        return NULL;
    }
    module->dwfl = dwfl;
    module->mod = mod;
    return module;
}

void swl_dw_close(swl_dw_module *module) {
    if (module == NULL) return;
    for (size_t i = 0; i < module->unit_count; i++) {
        free(module->units[i].functions);
        free(module->units[i].spans);
    }
    free(module->units);
    free(module->unit_ranges);
    free(module->symbols);
    dwfl_end(module->dwfl);
    free(module);
}

size_t swl_dw_build_id(swl_dw_module *module, const uint8_t **bits) {
    *bits = NULL;
    if (module == NULL) return 0;
    const unsigned char *found = NULL;
    GElf_Addr vaddr = 0;
    int length = dwfl_module_build_id(module->mod, &found, &vaddr);
    if (length <= 0 || found == NULL) return 0;
    *bits = found;
    return (size_t)length;
}

int swl_dw_has_dwarf(swl_dw_module *module) {
    if (module == NULL) return 0;
    Dwarf_Addr bias = 0;
    return dwfl_module_getdwarf(module->mod, &bias) != NULL;
}

void swl_dw_range(swl_dw_module *module, uint64_t *start, uint64_t *end) {
    Dwarf_Addr low = 0, high = 0;
    if (module != NULL) {
        dwfl_module_info(module->mod, NULL, &low, &high, NULL, NULL, NULL, NULL);
    }
    *start = low;
    *end = high;
}

// Grows `*array` (of `size`-byte elements) so that one more fits. False when out of memory.
static bool swl_dw_reserve(void **array, size_t *capacity, size_t count, size_t size) {
    if (count < *capacity) return true;
    size_t grown = *capacity == 0 ? 64 : *capacity * 2;
    void *bigger = realloc(*array, grown * size);
    if (bigger == NULL) return false;
    *array = bigger;
    *capacity = grown;
    return true;
}

// MARK: Symbols

static int swl_dw_leading_underscores(const char *name) {
    int count = 0;
    while (name[count] == '_') count++;
    return count;
}

static int swl_dw_binding_rank(int binding) {
    return binding == STB_GLOBAL ? 3 : binding == STB_WEAK ? 2 : 1;
}

typedef struct swl_dw_symbol_candidate {
    swl_dw_symbol symbol;
    int rank;
} swl_dw_symbol_candidate;

// Same address: the better name first (the name kept for the address). Among aliases the one
// with fewer leading underscores (`malloc` over `__libc_malloc`, `strdup` over `__strdup` although
// only the latter is global), as Valgrind names frames and so as suppression files spell them;
// then global over weak over local, sized over sizeless.
static int swl_dw_compare_symbols(const void *a, const void *b) {
    const swl_dw_symbol_candidate *left = a, *right = b;
    if (left->symbol.address != right->symbol.address) return left->symbol.address < right->symbol.address ? -1 : 1;
    int lu = swl_dw_leading_underscores(left->symbol.name), ru = swl_dw_leading_underscores(right->symbol.name);
    if (lu != ru) return lu < ru ? -1 : 1;
    if (left->rank != right->rank) return left->rank > right->rank ? -1 : 1;
    if ((left->symbol.size != 0) != (right->symbol.size != 0)) return left->symbol.size != 0 ? -1 : 1;
    return strcmp(left->symbol.name, right->symbol.name);
}

// Symbol `index` of the module's table when it is a defined, named function (or IFUNC): its name,
// with `*sym` and its runtime `*address`; NULL for any other symbol.
static const char *swl_dw_function_symbol(swl_dw_module *module, int index, GElf_Sym *sym, GElf_Addr *address) {
    GElf_Word shndx = 0;
    Elf *elf = NULL;
    Dwarf_Addr bias = 0;
    const char *name = dwfl_module_getsym_info(module->mod, index, sym, address, &shndx, &elf, &bias);
    if (name == NULL || name[0] == '\0' || shndx == SHN_UNDEF) return NULL;
    int type = GELF_ST_TYPE(sym->st_info);
    if (type != STT_FUNC && type != STT_GNU_IFUNC) return NULL;
    return name;
}

// An address with the candidate it belongs to, for sorting: 16 bytes instead of the candidate's 32.
typedef struct swl_dw_sort_key {
    Dwarf_Addr address;
    size_t candidate;
} swl_dw_sort_key;

// Sorts `keys` by address, stably (equal addresses keep their order), with a least-significant-digit
// radix sort through `scratch` (as long as `keys`): clang's 120,000 function symbols took qsort with
// the name-comparing callback about 35 ms, this takes a few (only the digits in which the addresses
// differ are sorted). Returns the array that holds the result, `keys` or `scratch`.
static swl_dw_sort_key *swl_dw_radix_sort(swl_dw_sort_key *keys, swl_dw_sort_key *scratch, size_t count) {
    if (count < 2) return keys;
    Dwarf_Addr lowest = keys[0].address, highest = keys[0].address;
    for (size_t i = 1; i < count; i++) {
        if (keys[i].address < lowest) lowest = keys[i].address;
        if (keys[i].address > highest) highest = keys[i].address;
    }
    Dwarf_Addr span = highest - lowest;
    for (unsigned shift = 0; shift < 64 && (span >> shift) != 0; shift += 8) {
        size_t offsets[256] = {0};
        for (size_t i = 0; i < count; i++) offsets[((keys[i].address - lowest) >> shift) & 0xff]++;
        size_t position = 0;
        for (int digit = 0; digit < 256; digit++) {
            size_t here = offsets[digit];
            offsets[digit] = position;
            position += here;
        }
        for (size_t i = 0; i < count; i++) scratch[offsets[((keys[i].address - lowest) >> shift) & 0xff]++] = keys[i];
        swl_dw_sort_key *sorted = scratch;
        scratch = keys;
        keys = sorted;
    }
    return keys;
}

static void swl_dw_build_symbols(swl_dw_module *module) {
    module->symbols_built = true;
    int total = dwfl_module_getsymtab(module->mod);  // .symtab, else .dynsym; from the debug file if stripped
    if (total <= 1) return;
    swl_dw_symbol_candidate *candidates = calloc((size_t)total, sizeof *candidates);
    swl_dw_sort_key *keys = malloc((size_t)total * 2 * sizeof *keys);
    if (candidates == NULL || keys == NULL) {
        free(candidates);
        free(keys);
        return;
    }
    size_t count = 0;
    for (int i = 1; i < total; i++) {
        GElf_Sym sym;
        GElf_Addr address = 0;
        const char *name = swl_dw_function_symbol(module, i, &sym, &address);
        if (name == NULL) continue;
        candidates[count].symbol = (swl_dw_symbol){.address = address, .size = sym.st_size, .name = name};
        candidates[count].rank = swl_dw_binding_rank(GELF_ST_BIND(sym.st_info));
        keys[count] = (swl_dw_sort_key){.address = address, .candidate = count};
        count++;
    }
    swl_dw_sort_key *sorted = swl_dw_radix_sort(keys, keys + total, count);
    swl_dw_symbol *symbols = malloc((count == 0 ? 1 : count) * sizeof *symbols);
    if (symbols == NULL) {
        free(candidates);
        free(keys);
        return;
    }
    // One symbol per address: the best name among those there (the first best in table order, as
    // a stable sort by swl_dw_compare_symbols would put first).
    size_t kept = 0;
    for (size_t i = 0; i < count;) {
        const swl_dw_symbol_candidate *best = &candidates[sorted[i].candidate];
        size_t next = i + 1;
        for (; next < count && sorted[next].address == sorted[i].address; next++) {
            const swl_dw_symbol_candidate *other = &candidates[sorted[next].candidate];
            if (swl_dw_compare_symbols(other, best) < 0) best = other;
        }
        symbols[kept++] = best->symbol;
        i = next;
    }
    free(candidates);
    free(keys);
    module->symbols = symbols;
    module->symbol_count = kept;
}

// The function symbol covering a runtime address, or NULL.
static const char *swl_dw_symbol_at(swl_dw_module *module, Dwarf_Addr address) {
    if (!module->symbols_built) swl_dw_build_symbols(module);
    size_t low = 0, high = module->symbol_count;
    while (low < high) {
        size_t mid = low + (high - low) / 2;
        if (module->symbols[mid].address <= address) low = mid + 1; else high = mid;
    }
    if (low == 0) return NULL;
    const swl_dw_symbol *candidate = &module->symbols[low - 1];
    // A sizeless symbol (hand-written assembly) reaches to the next symbol, as libdwfl has it.
    if (candidate->size == 0 || address < candidate->address + candidate->size) return candidate->name;
    // Rarely, a bigger symbol starting earlier encloses this one.
    for (size_t i = low - 1, steps = 0; i > 0 && steps < 16; i--, steps++) {
        const swl_dw_symbol *earlier = &module->symbols[i - 1];
        if (earlier->size != 0 && address < earlier->address + earlier->size) return earlier->name;
    }
    return NULL;
}

// MARK: Compile units

static void swl_dw_build_units(swl_dw_module *module) {
    module->units_built = true;
    module->dwarf = dwfl_module_getdwarf(module->mod, &module->dwarf_bias);
    if (module->dwarf == NULL) return;
    size_t capacity = 0;
    Dwarf_CU *cu = NULL;
    Dwarf_Die cudie;
    uint8_t unit_type = 0;
    while (dwarf_get_units(module->dwarf, cu, &cu, NULL, &unit_type, &cudie, NULL) == 0) {
        if (unit_type == DW_UT_type || unit_type == DW_UT_split_type) continue;
        if (!swl_dw_reserve((void **)&module->units, &capacity, module->unit_count, sizeof *module->units)) return;
        module->units[module->unit_count++] = (swl_dw_unit){.offset = dwarf_dieoffset(&cudie), .cudie = cudie};
    }
}

static swl_dw_unit *swl_dw_unit_at_offset(swl_dw_module *module, Dwarf_Off offset) {
    size_t low = 0, high = module->unit_count;
    while (low < high) {
        size_t mid = low + (high - low) / 2;
        if (module->units[mid].offset < offset) low = mid + 1; else high = mid;
    }
    if (low < module->unit_count && module->units[low].offset == offset) return &module->units[low];
    return NULL;
}

static int swl_dw_compare_unit_ranges(const void *a, const void *b) {
    const swl_dw_unit_range *left = a, *right = b;
    return left->low < right->low ? -1 : left->low > right->low ? 1 : 0;
}

static void swl_dw_build_unit_ranges(swl_dw_module *module) {
    module->unit_ranges_built = true;
    size_t capacity = 0;
    for (size_t unit = 0; unit < module->unit_count; unit++) {
        Dwarf_Addr base = 0, low = 0, high = 0;
        ptrdiff_t offset = 0;
        while ((offset = dwarf_ranges(&module->units[unit].cudie, offset, &base, &low, &high)) > 0) {
            if (high <= low) continue;
            if (!swl_dw_reserve((void **)&module->unit_ranges, &capacity, module->unit_range_count,
                                sizeof *module->unit_ranges)) goto done;
            module->unit_ranges[module->unit_range_count++] = (swl_dw_unit_range){.low = low, .high = high, .unit = unit};
        }
    }
done:
    if (module->unit_range_count > 1) {
        qsort(module->unit_ranges, module->unit_range_count, sizeof *module->unit_ranges, swl_dw_compare_unit_ranges);
    }
}

// The compile unit covering a DWARF address (runtime address minus dwarf_bias), or NULL.
static swl_dw_unit *swl_dw_find_unit(swl_dw_module *module, Dwarf_Addr address) {
    if (module->unit_count == 0) return NULL;
    Dwarf_Addr bias = 0;
    Dwarf_Die *cudie = dwfl_module_addrdie(module->mod, address + module->dwarf_bias, &bias);
    if (cudie != NULL) return swl_dw_unit_at_offset(module, dwarf_dieoffset(cudie));
    if (!module->unit_ranges_built) swl_dw_build_unit_ranges(module);
    size_t low = 0, high = module->unit_range_count;
    while (low < high) {
        size_t mid = low + (high - low) / 2;
        if (module->unit_ranges[mid].low <= address) low = mid + 1; else high = mid;
    }
    // Ranges of different CUs rarely nest; a short walk back covers the cases where they do.
    for (size_t i = low, steps = 0; i > 0 && steps < 64; i--, steps++) {
        const swl_dw_unit_range *range = &module->unit_ranges[i - 1];
        if (address >= range->low && address < range->high) return &module->units[range->unit];
    }
    return NULL;
}

void swl_dw_prepare(swl_dw_module *module) {
    if (module == NULL) return;
    if (!module->symbols_built) swl_dw_build_symbols(module);
    if (!module->units_built) swl_dw_build_units(module);
    if (module->dwarf != NULL) {
        // libdw's address-to-CU table (decompresses .debug_aranges), which dwfl_module_addrdie builds
        // on first use.
        Dwarf_Aranges *aranges = NULL;
        size_t count = 0;
        (void)dwarf_getaranges(module->dwarf, &aranges, &count);
    }
    if (!module->unit_ranges_built && module->unit_count > 0) swl_dw_build_unit_ranges(module);
}

// MARK: Functions of a compile unit

static bool swl_dw_is_function(int tag) {
    return tag == DW_TAG_subprogram || tag == DW_TAG_inlined_subroutine || tag == DW_TAG_entry_point;
}

// Type DIEs hold only declarations of member functions: no code to find below them.
static bool swl_dw_is_type(int tag) {
    return tag == DW_TAG_structure_type || tag == DW_TAG_class_type || tag == DW_TAG_union_type ||
           tag == DW_TAG_enumeration_type || tag == DW_TAG_subroutine_type;
}

static void swl_dw_index_children(swl_dw_unit *unit, Dwarf_Die *parent_die, int32_t parent, int32_t depth) {
    if (depth > 256) return;
    Dwarf_Die die;
    if (dwarf_child(parent_die, &die) != 0) return;
    do {
        int tag = dwarf_tag(&die);
        int32_t enclosing = parent;
        if (swl_dw_is_function(tag)) {
            int32_t index = (int32_t)unit->function_count;
            size_t first = unit->span_count;
            Dwarf_Addr base = 0, low = 0, high = 0;
            ptrdiff_t offset = 0;
            while ((offset = dwarf_ranges(&die, offset, &base, &low, &high)) > 0) {
                if (high <= low) continue;
                if (!swl_dw_reserve((void **)&unit->spans, &unit->span_capacity, unit->span_count, sizeof *unit->spans)) return;
                unit->spans[unit->span_count++] = (swl_dw_span){.low = low, .high = high, .function = index, .depth = depth};
            }
            if (unit->span_count > first) {
                if (!swl_dw_reserve((void **)&unit->functions, &unit->function_capacity, unit->function_count,
                                    sizeof *unit->functions)) {
                    unit->span_count = first;
                    return;
                }
                unit->functions[unit->function_count++] = (swl_dw_function){
                    .die = die, .parent = parent, .depth = depth,
                };
                enclosing = index;
            }
        }
        if (!swl_dw_is_type(tag) && dwarf_haschildren(&die)) {
            swl_dw_index_children(unit, &die, enclosing, depth + 1);
        }
    } while (dwarf_siblingof(&die, &die) == 0);
}

static int swl_dw_compare_spans(const void *a, const void *b) {
    const swl_dw_span *left = a, *right = b;
    if (left->low != right->low) return left->low < right->low ? -1 : 1;
    return left->depth < right->depth ? -1 : left->depth > right->depth ? 1 : 0;
}

static void swl_dw_index_unit(swl_dw_unit *unit) {
    unit->indexed = true;
    swl_dw_index_children(unit, &unit->cudie, -1, 0);
    if (unit->span_count > 1) qsort(unit->spans, unit->span_count, sizeof *unit->spans, swl_dw_compare_spans);
}

static bool swl_dw_function_contains(swl_dw_unit *unit, int32_t index, Dwarf_Addr address) {
    return dwarf_haspc(&unit->functions[index].die, address) == 1;
}

// The innermost function or inlined instance containing a DWARF address: -1 for none.
// Among properly nested ranges, every range starting between the innermost container's start and
// the address lies inside that container, so walking up from the last range starting at or before
// the address finds it.
static int32_t swl_dw_innermost_function(swl_dw_unit *unit, Dwarf_Addr address) {
    if (!unit->indexed) swl_dw_index_unit(unit);
    size_t low = 0, high = unit->span_count;
    while (low < high) {
        size_t mid = low + (high - low) / 2;
        if (unit->spans[mid].low <= address) low = mid + 1; else high = mid;
    }
    if (low == 0) return -1;
    const swl_dw_span *span = &unit->spans[low - 1];
    if (address < span->high) return span->function;
    for (int32_t index = unit->functions[span->function].parent; index >= 0; index = unit->functions[index].parent) {
        if (swl_dw_function_contains(unit, index, address)) return index;
    }
    return -1;
}

// MARK: Lookup

// The name to show for a subprogram or inlined-subroutine DIE: its linkage (mangled) name when it
// has one, following DW_AT_abstract_origin and DW_AT_specification, else its plain name.
static const char *swl_dw_die_name(Dwarf_Die *die) {
    Dwarf_Attribute attr;
    const char *name = dwarf_formstring(dwarf_attr_integrate(die, DW_AT_linkage_name, &attr));
    if (name == NULL) {
        name = dwarf_formstring(dwarf_attr_integrate(die, DW_AT_MIPS_linkage_name, &attr));
    }
    if (name == NULL) {
        name = dwarf_formstring(dwarf_attr_integrate(die, DW_AT_name, &attr));
    }
    return name;
}

int swl_dw_lookup(swl_dw_module *module, uint64_t address, swl_dw_frame *frames, int capacity) {
    if (module == NULL || frames == NULL || capacity <= 0) return 0;

    // The ELF symbol (.symtab, else .dynsym; from the debug file when the binary is stripped).
    const char *symbol = swl_dw_symbol_at(module, (Dwarf_Addr)address);

    const char *file = NULL;
    const char *comp_dir = NULL;
    int line = 0;
    int count = 0;
    if (!module->units_built) swl_dw_build_units(module);  // sets dwarf_bias
    swl_dw_unit *unit = swl_dw_find_unit(module, (Dwarf_Addr)address - module->dwarf_bias);
    if (unit != NULL) {
        Dwarf_Addr pc = (Dwarf_Addr)address - module->dwarf_bias;
        Dwarf_Attribute attr;
        comp_dir = dwarf_formstring(dwarf_attr(&unit->cudie, DW_AT_comp_dir, &attr));

        // The line table row of the innermost code at the address.
        Dwarf_Line *row = dwarf_getsrc_die(&unit->cudie, pc);
        if (row != NULL) {
            file = dwarf_linesrc(row, NULL, NULL);
            if (dwarf_lineno(row, &line) != 0) line = 0;
        }
        Dwarf_Files *files = NULL;
        size_t nfiles = 0;
        if (dwarf_getsrcfiles(&unit->cudie, &files, &nfiles) != 0) {
            files = NULL;
            nfiles = 0;
        }
        for (int32_t index = swl_dw_innermost_function(unit, pc); index >= 0 && count < capacity;
             index = unit->functions[index].parent) {
            Dwarf_Die *die = &unit->functions[index].die;
            if (dwarf_tag(die) == DW_TAG_inlined_subroutine) {
                frames[count++] = (swl_dw_frame){
                    .name = swl_dw_die_name(die), .file = file, .comp_dir = comp_dir,
                    .line = line, .inlined = 1,
                };
                // The caller's position is where this instance was inlined.
                Dwarf_Word call_file = 0, call_line = 0;
                file = NULL;
                line = 0;
                if (dwarf_formudata(dwarf_attr(die, DW_AT_call_file, &attr), &call_file) == 0 &&
                    files != NULL && call_file < nfiles) {
                    file = dwarf_filesrc(files, call_file, NULL, NULL);
                }
                if (dwarf_formudata(dwarf_attr(die, DW_AT_call_line, &attr), &call_line) == 0) {
                    line = (int)call_line;
                }
            } else {
                // The function the address really belongs to: prefer the ELF symbol, which is what
                // Valgrind shows and suppressions match (e.g. `foo.cold`, `foo.constprop.0`).
                const char *name = symbol != NULL ? symbol : swl_dw_die_name(die);
                frames[count++] = (swl_dw_frame){
                    .name = name, .file = file, .comp_dir = comp_dir, .line = line, .inlined = 0,
                };
                break;
            }
        }
        if (count > 0 && frames[count - 1].inlined) {
            // No enclosing subprogram DIE (or capacity exhausted): close the chain with the symbol.
            if (count < capacity) {
                frames[count++] = (swl_dw_frame){
                    .name = symbol, .file = file, .comp_dir = comp_dir, .line = line, .inlined = 0,
                };
            } else {
                frames[count - 1].inlined = 0;
            }
        }
    }
    if (count == 0) {
        if (symbol == NULL && file == NULL) return 0;
        frames[0] = (swl_dw_frame){
            .name = symbol, .file = file, .comp_dir = comp_dir, .line = line, .inlined = 0,
        };
        count = 1;
    }
    return count;
}

// MARK: Reading the file

// The answer of swl_dw_function_address when the file itself has a .symtab, which is then the table
// libdwfl uses: read straight from the section, for it runs before the program starts. Through
// dwfl_module_getsym_info, every one of clang's 197,000 symbols cost a call that looks its section
// up again (8-14 ms); here a symbol costs a type test and, for a function, a name compare.
// false when the file has no .symtab (or it cannot be read): then libdwfl's search decides.
static bool swl_dw_function_address_in_symtab(swl_dw_module *module, const char *name, uint64_t *address) {
    GElf_Addr bias = 0;
    Elf *elf = dwfl_module_getelf(module->mod, &bias);
    if (elf == NULL) return false;
    Elf_Scn *section = NULL;
    while ((section = elf_nextscn(elf, section)) != NULL) {
        GElf_Shdr header;
        if (gelf_getshdr(section, &header) == NULL || header.sh_type != SHT_SYMTAB || header.sh_entsize == 0) continue;
        if (gelf_getclass(elf) != ELFCLASS64 || header.sh_entsize != sizeof(Elf64_Sym)) return false;
        Elf_Data *symbols = elf_getdata(section, NULL);
        Elf_Scn *names_section = elf_getscn(elf, header.sh_link);
        GElf_Shdr names_header;
        if (symbols == NULL || names_section == NULL || gelf_getshdr(names_section, &names_header) == NULL ||
            (names_header.sh_flags & SHF_COMPRESSED) != 0) return false;
        Elf_Data *names = elf_getdata(names_section, NULL);
        if (names == NULL || names->d_buf == NULL || symbols->d_buf == NULL) return false;
        const Elf64_Sym *table = symbols->d_buf;
        size_t count = symbols->d_size / sizeof *table;
        const char *strings = names->d_buf;
        size_t length = strlen(name);
        *address = 0;
        // Every name a symbol can have ends in .strtab as `name` and its NUL (a name may share the
        // tail of a longer string, so not always after a NUL). One sequential pass finds where:
        // comparing at each function's own offset instead was a cache miss per symbol, 197,000 in
        // clang's 20 MB table (10-15 ms before the program could start). Most programs have no such
        // name, and then the table is not read at all.
        enum { most_places = 16 };
        size_t places[most_places], place_count = 0;
        bool too_many = false;
        for (const char *from = strings, *end = strings + names->d_size, *hit;
             from < end && (hit = memmem(from, (size_t)(end - from), name, length + 1)) != NULL;
             from = hit + 1) {
            if (place_count == most_places) { too_many = true; break; }
            places[place_count++] = (size_t)(hit - strings);
        }
        if (place_count == 0) return true;
        for (size_t i = 1; i < count; i++) {
            int type = ELF64_ST_TYPE(table[i].st_info);
            if ((type != STT_FUNC && type != STT_GNU_IFUNC) || table[i].st_shndx == SHN_UNDEF) continue;
            size_t offset = table[i].st_name;
            bool named = false;
            if (too_many) {
                named = offset < names->d_size && names->d_size - offset > length &&
                        memcmp(strings + offset, name, length + 1) == 0;
            } else {
                for (size_t p = 0; p < place_count && !named; p++) named = places[p] == offset;
            }
            if (named) {
                *address = table[i].st_value + bias;
                break;
            }
        }
        return true;
    }
    return false;
}

uint64_t swl_dw_function_address(swl_dw_module *module, const char *name) {
    if (module == NULL || name == NULL || name[0] == '\0') return 0;
    uint64_t found = 0;
    if (swl_dw_function_address_in_symtab(module, name, &found)) return found;
    int total = dwfl_module_getsymtab(module->mod);
    for (int i = 1; i < total; i++) {
        GElf_Sym sym;
        GElf_Addr address = 0;
        const char *symbol = swl_dw_function_symbol(module, i, &sym, &address);
        if (symbol != NULL && strcmp(symbol, name) == 0) return address;
    }
    return 0;
}

size_t swl_dw_read(swl_dw_module *module, uint64_t address, uint8_t *buffer, size_t capacity) {
    if (module == NULL || buffer == NULL || capacity == 0) return 0;
    GElf_Addr bias = 0;
    Elf *elf = dwfl_module_getelf(module->mod, &bias);
    if (elf == NULL || address < bias) return 0;
    GElf_Addr wanted = (GElf_Addr)address - bias;
    Elf_Scn *section = NULL;
    while ((section = elf_nextscn(elf, section)) != NULL) {
        GElf_Shdr header;
        if (gelf_getshdr(section, &header) == NULL) continue;
        if (header.sh_type == SHT_NOBITS || !(header.sh_flags & SHF_ALLOC)) continue;
        if (wanted < header.sh_addr || wanted - header.sh_addr >= header.sh_size) continue;
        Elf_Data *data = elf_getdata(section, NULL);
        if (data == NULL || data->d_buf == NULL) return 0;
        size_t offset = (size_t)(wanted - header.sh_addr);
        if (offset >= data->d_size) return 0;
        size_t count = data->d_size - offset < capacity ? data->d_size - offset : capacity;
        memcpy(buffer, (const uint8_t *)data->d_buf + offset, count);
        return count;
    }
    return 0;
}

char *swl_dw_cxa_demangle(const char *mangled) {
    if (mangled == NULL) return NULL;
    int status = 0;
    char *result = __cxa_demangle(mangled, NULL, NULL, &status);
    if (status != 0) {
        free(result);
        return NULL;
    }
    return result;
}

int32_t swl_dw_thread_id(void) {
    return (int32_t)gettid();
}
