#ifndef _GNU_SOURCE
#error "_GNU_SOURCE must be defined (Package.swift sets it for every C target)"
#endif

#include "CSwiftLeakDW.h"

#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwfl.h>
#include <stdbool.h>
#include <stdlib.h>

// The Itanium C++ ABI demangler, exported by libstdc++ (linked by this target).
extern char *__cxa_demangle(const char *mangled, char *buffer, size_t *length, int *status);

// One compile unit's address range, for modules without .debug_aranges (Swift, clang and rustc
// do not emit it by default; elfutils 0.188 then finds no CU for any address).
typedef struct swl_dw_cu_range {
    Dwarf_Addr low, high;
    Dwarf_Die cudie;
} swl_dw_cu_range;

struct swl_dw_module {
    Dwfl *dwfl;
    Dwfl_Module *mod;
    // Built on the first address dwfl_module_addrdie cannot place; sorted by `low`.
    swl_dw_cu_range *cu_ranges;
    size_t cu_range_count;
    bool cu_ranges_built;
};

// NULL: libdwfl's default, ":.debug:/usr/lib/debug" (next to the file, in .debug/ beside it, under
// /usr/lib/debug), with the CRC of a .gnu_debuglink target checked. Build-id lookup under
// /usr/lib/debug/.build-id is always tried as well.
static char *swl_dw_debuginfo_path = NULL;

static const Dwfl_Callbacks swl_dw_offline_callbacks = {
    .find_elf = dwfl_build_id_find_elf,
    .find_debuginfo = dwfl_standard_find_debuginfo,
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
    dwfl_end(module->dwfl);
    free(module->cu_ranges);
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

static int swl_dw_compare_ranges(const void *a, const void *b) {
    const swl_dw_cu_range *left = a, *right = b;
    return left->low < right->low ? -1 : left->low > right->low ? 1 : 0;
}

static void swl_dw_build_cu_ranges(swl_dw_module *module) {
    module->cu_ranges_built = true;
    Dwarf_Addr bias = 0;
    Dwarf *dwarf = dwfl_module_getdwarf(module->mod, &bias);
    if (dwarf == NULL) return;
    size_t capacity = 0, count = 0;
    swl_dw_cu_range *ranges = NULL;
    Dwarf_CU *cu = NULL;
    Dwarf_Die cudie;
    uint8_t unit_type = 0;
    while (dwarf_get_units(dwarf, cu, &cu, NULL, &unit_type, &cudie, NULL) == 0) {
        if (unit_type == DW_UT_type || unit_type == DW_UT_split_type) continue;
        Dwarf_Addr base = 0, low = 0, high = 0;
        ptrdiff_t offset = 0;
        while ((offset = dwarf_ranges(&cudie, offset, &base, &low, &high)) > 0) {
            if (high <= low) continue;
            if (count == capacity) {
                size_t grown = capacity == 0 ? 64 : capacity * 2;
                swl_dw_cu_range *bigger = realloc(ranges, grown * sizeof *ranges);
                if (bigger == NULL) goto done;
                ranges = bigger;
                capacity = grown;
            }
            ranges[count++] = (swl_dw_cu_range){.low = low, .high = high, .cudie = cudie};
        }
    }
done:
    if (count > 1) qsort(ranges, count, sizeof *ranges, swl_dw_compare_ranges);
    module->cu_ranges = ranges;
    module->cu_range_count = count;
}

// The compile unit covering `address` (a runtime address); *bias is set as dwfl_module_addrdie does.
static Dwarf_Die *swl_dw_find_cu(swl_dw_module *module, Dwarf_Addr address, Dwarf_Addr *bias) {
    Dwarf_Die *cudie = dwfl_module_addrdie(module->mod, address, bias);
    if (cudie != NULL) return cudie;
    if (!module->cu_ranges_built) swl_dw_build_cu_ranges(module);
    if (module->cu_range_count == 0) return NULL;
    if (dwfl_module_getdwarf(module->mod, bias) == NULL) return NULL;
    Dwarf_Addr target = address - *bias;
    // The last range starting at or below the target; ranges of different CUs rarely nest, so a
    // short walk back covers the cases where they do.
    size_t low = 0, high = module->cu_range_count;
    while (low < high) {
        size_t mid = low + (high - low) / 2;
        if (module->cu_ranges[mid].low <= target) low = mid + 1; else high = mid;
    }
    for (size_t i = low, steps = 0; i > 0 && steps < 64; i--, steps++) {
        swl_dw_cu_range *range = &module->cu_ranges[i - 1];
        if (target >= range->low && target < range->high) return &range->cudie;
    }
    return NULL;
}

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

static bool swl_dw_is_function(int tag) {
    return tag == DW_TAG_subprogram || tag == DW_TAG_inlined_subroutine || tag == DW_TAG_entry_point;
}

int swl_dw_lookup(swl_dw_module *module, uint64_t address, swl_dw_frame *frames, int capacity) {
    if (module == NULL || frames == NULL || capacity <= 0) return 0;
    Dwfl_Module *mod = module->mod;

    // The ELF symbol (.symtab, else .dynsym; from the debug file when the binary is stripped).
    GElf_Sym sym;
    GElf_Off offset = 0;
    const char *symbol = dwfl_module_addrinfo(mod, (GElf_Addr)address, &offset, &sym, NULL, NULL, NULL);
    if (symbol != NULL && symbol[0] == '\0') symbol = NULL;

    const char *file = NULL;
    int line = 0;
    Dwarf_Addr bias = 0;
    Dwarf_Die *cudie = swl_dw_find_cu(module, (Dwarf_Addr)address, &bias);
    const char *comp_dir = NULL;
    int count = 0;
    if (cudie != NULL) {
        Dwarf_Attribute attr;
        comp_dir = dwarf_formstring(dwarf_attr(cudie, DW_AT_comp_dir, &attr));

        // The line table row of the innermost code at the address.
        Dwarf_Line *row = dwarf_getsrc_die(cudie, (Dwarf_Addr)address - bias);
        if (row != NULL) {
            file = dwarf_linesrc(row, NULL, NULL);
            if (dwarf_lineno(row, &line) != 0) line = 0;
        }

        Dwarf_Die *scopes = NULL;
        int nscopes = dwarf_getscopes(cudie, (Dwarf_Addr)address - bias, &scopes);
        if (nscopes > 0) {
            // dwarf_getscopes continues into the abstract definition once it reaches an inlined
            // instance; the chain of concrete parents of the innermost scope is what we need.
            Dwarf_Die innermost = scopes[0];
            free(scopes);
            scopes = NULL;
            nscopes = dwarf_getscopes_die(&innermost, &scopes);
        }
        Dwarf_Files *files = NULL;
        size_t nfiles = 0;
        if (dwarf_getsrcfiles(cudie, &files, &nfiles) != 0) {
            files = NULL;
            nfiles = 0;
        }
        for (int i = 0; i < nscopes && count < capacity; i++) {
            Dwarf_Die *die = &scopes[i];
            int tag = dwarf_tag(die);
            if (!swl_dw_is_function(tag)) continue;
            if (tag == DW_TAG_inlined_subroutine) {
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
        free(scopes);
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
