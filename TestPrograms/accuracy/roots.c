// Where a real program keeps its heap pointers, one mode per way the exit scan once got it wrong.
// Usage: roots MODE. Each mode prints one line and returns 0; Valgrind Memcheck is the oracle.
// Built at -O0 and -O2, with the bfd and the lld linker (lld puts RELRO and .data in two writable
// PT_LOADs that share a file page). Nothing here scrubs the stack: real programs do not.
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

// Pointers escape through these, so -O2 keeps every allocation.
static void *volatile sink;
// Three pages of .data and of .bss holding pointers every 256 bytes: a bias a page off misses some.
struct module_roots {
    void *volatile roots[3 * 4096 / sizeof(void *)];
};
struct module_roots initialized_roots = {{(void *)1}}; // .data
struct module_roots zeroed_roots;                      // .bss
#define ROOT_STRIDE (256 / sizeof(void *))

// A growable array of pointers that, like Swift's arrays, takes as its capacity what
// malloc_usable_size says (under Valgrind: the requested size; under glibc: up to 24 bytes more).
struct vector {
    void **items;
    size_t count, capacity;
};
static struct vector *volatile global_vector;

static void vector_push(struct vector *v, void *item) {
    if (v->count == v->capacity) {
        size_t want = (v->capacity * 2 + 1) * sizeof(void *) + 4; // never a multiple of 16
        void **grown = malloc(want);
        if (v->count) memcpy(grown, v->items, v->count * sizeof(void *));
        free(v->items);
        v->items = grown;
        v->capacity = malloc_usable_size(grown) / sizeof(void *);
    }
    v->items[v->count++] = item;
}

static void usable_size(void) {
    struct vector *v = calloc(1, sizeof *v);
    // 93 items: the last two live past the 732 bytes asked for, in the slack of a 744-byte chunk.
    for (int i = 0; i < 93; i++) vector_push(v, malloc(32));
    global_vector = v;
    sink = malloc(48); // one real leak, so the summaries are not both empty
    sink = NULL;
    printf("vector of %zu items, capacity %zu\n", v->count, v->capacity);
}

// Globals in .data and .bss, the part of an lld-linked binary a page-off bias would miss.
static void module_data(void) {
    int held = 0;
    for (size_t i = 0; i < sizeof initialized_roots.roots / sizeof(void *); i += ROOT_STRIDE, held += 2) {
        initialized_roots.roots[i] = malloc(40 + i / ROOT_STRIDE % 4 * 8);
        zeroed_roots.roots[i] = malloc(80 + i / ROOT_STRIDE % 4 * 8);
    }
    sink = malloc(48);
    sink = NULL;
    printf("module data holds %d blocks\n", held);
}

// An anonymous mapping of the program right below an mmapped malloc chunk: the kernel merges
// the two into one VMA. The program's page holds the only pointers to 16 blocks.
static void merged_mapping(void) {
    size_t big = 256 * 1024; // above the mmap threshold: a chunk of its own mapping
    char *chunk = malloc(big);
    memset(chunk, 0, big);
    zeroed_roots.roots[1] = chunk;
    uintptr_t chunk_mapping = (uintptr_t)chunk & ~(uintptr_t)4095; // the chunk starts 16 bytes into it
    void **page = mmap((void *)(chunk_mapping - 4 * 4096), 4 * 4096, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (page == MAP_FAILED) page = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (int i = 0; i < 16; i++) page[i] = malloc(24);
    zeroed_roots.roots[0] = page;
    sink = malloc(48);
    sink = NULL;
    puts("16 blocks held by an anonymous page");
}

// Worker threads that each leak a block and are joined: glibc keeps their stacks cached, with the
// dead frames still holding the pointers. Valgrind: every one of them is definitely lost.
static void *leaking_worker(void *argument) {
    void *volatile block = malloc((size_t)(uintptr_t)argument);
    memset(block, 1, (size_t)(uintptr_t)argument);
    return NULL;
}

static void exited_threads(void) {
    for (int i = 0; i < 4; i++) {
        pthread_t thread;
        pthread_create(&thread, NULL, leaking_worker, (void *)(uintptr_t)(100 + 8 * i));
        pthread_join(thread, NULL);
    }
    puts("4 workers joined");
}

// PROT_NONE memory is not read for roots: the only pointers to 8 blocks sit in a page the program
// made inaccessible. And a pointer into an inaccessible page is not followed: a malloc'd block
// whose pages are all PROT_NONE, pointed to from .bss, is definitely lost, and so are the 4 blocks
// only its (unreadable) contents point to.
static void protected_memory(void) {
    void **page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (int i = 0; i < 8; i++) page[i] = memset(malloc(56), 0x5a, 56);
    mprotect(page, 4096, PROT_NONE);
    size_t big = 64 * 4096;
    char *chunk = malloc(big); // mmapped: its start is 16 bytes into a page
    void **inner = (void **)(chunk + 64);
    for (int i = 0; i < 4; i++) inner[i] = memset(malloc(72), 0x5a, 72);
    zeroed_roots.roots[1] = chunk;
    mprotect((void *)((uintptr_t)chunk & ~(uintptr_t)4095), big, PROT_NONE);
    sink = NULL;
    puts("8 + 4 blocks behind PROT_NONE");
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "usable-size")) usable_size();
    else if (!strcmp(mode, "module-data")) module_data();
    else if (!strcmp(mode, "merged-mapping")) merged_mapping();
    else if (!strcmp(mode, "exited-threads")) exited_threads();
    else if (!strcmp(mode, "protected")) protected_memory();
    else {
        fprintf(stderr, "usage: roots usable-size|module-data|merged-mapping|exited-threads|protected\n");
        return 2;
    }
    return 0;
}
