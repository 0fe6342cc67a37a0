// Shared by the symbolizer's test programs: print what swiftleak's interposer would record about
// the main executable (load bias, runtime range, GNU build id) and code addresses to symbolize.
// Output lines: "module <bias> <start> <end> <build-id hex>", "ret <label> <address>",
// "func <label> <address>". Addresses in hex with 0x.
#ifndef SWL_SYMBOLIZE_REPORT_H
#define SWL_SYMBOLIZE_REPORT_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <elf.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int swl_report_main_module(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    (void)data;
    uintptr_t start = UINTPTR_MAX, end = 0;
    char build_id[128] = "";
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD) {
            uintptr_t low = info->dlpi_addr + ph->p_vaddr;
            uintptr_t high = low + ph->p_memsz;
            if (low < start) start = low;
            if (high > end) end = high;
        } else if (ph->p_type == PT_NOTE) {
            const unsigned char *p = (const unsigned char *)(info->dlpi_addr + ph->p_vaddr);
            const unsigned char *limit = p + ph->p_memsz;
            while (p + sizeof(ElfW(Nhdr)) <= limit) {
                const ElfW(Nhdr) *note = (const ElfW(Nhdr) *)p;
                const unsigned char *name = p + sizeof *note;
                const unsigned char *desc = name + ((note->n_namesz + 3) & ~3u);
                if (note->n_type == NT_GNU_BUILD_ID && note->n_namesz == 4 && memcmp(name, "GNU", 4) == 0 &&
                    note->n_descsz * 2 < sizeof build_id) {
                    for (unsigned j = 0; j < note->n_descsz; j++) sprintf(build_id + 2 * j, "%02x", desc[j]);
                }
                p = desc + ((note->n_descsz + 3) & ~3u);
            }
        }
    }
    printf("module 0x%lx 0x%lx 0x%lx %s\n", (unsigned long)info->dlpi_addr, (unsigned long)start,
           (unsigned long)end, build_id[0] ? build_id : "-");
    return 1;  // the first entry is the main program
}

static void swl_report_self(void) { dl_iterate_phdr(swl_report_main_module, NULL); }

// Prints its own return address: an address inside the call instruction's function, at the line
// of the call.
__attribute__((noinline, noipa)) static void swl_probe(const char *label) {
    printf("ret %s %p\n", label, __builtin_return_address(0));
    __asm__ volatile("" ::: "memory");
}

#define SWL_REPORT_FUNC(label, fn) printf("func %s %p\n", label, (void *)(fn))

#endif
