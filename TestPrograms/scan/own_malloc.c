// An executable that defines its own malloc family (a bump allocator over a static arena): its
// calls, and libc's, never reach swiftleak's hooks. swiftleak must say so rather than report a
// clean heap in silence.
#include <stddef.h>
#include <stdio.h>
#include <string.h>

static _Alignas(16) unsigned char arena[1 << 22];
static size_t used;

void *malloc(size_t size) {
    size_t *header = (size_t *)(arena + used);
    size_t total = (sizeof(size_t) * 2 + size + 15) & ~(size_t)15;
    if (used + total > sizeof arena) return NULL;
    used += total;
    header[0] = size;
    return header + 2;
}

void free(void *p) { (void)p; }

void *calloc(size_t count, size_t size) {
    if (size != 0 && count > (size_t)-1 / size) return NULL;
    return malloc(count * size); // the arena is never reused: still zero
}

void *realloc(void *old, size_t size) {
    void *p = malloc(size);
    if (p && old) {
        size_t old_size = ((size_t *)old)[-2];
        memcpy(p, old, old_size < size ? old_size : size);
    }
    return p;
}

static void *volatile sink;

int main(void) {
    sink = malloc(48); // leaked, but not through swiftleak's malloc
    sink = NULL;
    printf("allocated with my own malloc\n");
    return 0;
}
