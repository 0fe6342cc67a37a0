// The slack of a block: glibc rounds every chunk up (a request of 57 to 72 bytes gets a chunk of
// 80, 72 usable bytes), and the bytes past the requested size still hold what the chunk's previous
// owner wrote there. swiftleak scans a block up to its usable size (programs that ask
// malloc_usable_size keep data there); Valgrind scans only the requested size, and never counts
// undefined bytes. A pointer the previous owner left in the slack must not keep a lost block alive.
//
// Each case has a 72-byte block hold a pointer in its last words, frees it, and takes the same
// chunk back for a shorter request, which stays reachable from a global; the block the old
// pointer pointed at is then lost:
// - malloc(58): a start pointer to `a` (40 bytes) in the slack's whole word (offset 64);
// - malloc(57): an interior pointer into `b` (1,024 bytes) at offset 56, whose first byte is the
//   program's (a string's NUL), the other seven the slack: perl's shape (a hash key whose last
//   bytes share a word with the slack). With its low byte zeroed the word still points into `b`;
// - realloc(NULL, 58): as malloc, a start pointer to `d` (56 bytes);
// - realloc(block, 58) of a 72-byte block that holds a pointer to `c` (48 bytes) at offset 64:
//   glibc keeps the chunk, whose slack then holds the program's own former data.
// It prints whether glibc gave each chunk back as expected (the test checks it: else the case
// tested nothing). Valgrind: 1,168 bytes in 4 blocks definitely lost (a, b, c, d), none indirectly.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *volatile kept[4];
static void *volatile a, *volatile b, *volatile c, *volatile d;

/// A 72-byte block whose word at `offset` is `value`, freed: the next request of 57 to 72 bytes
/// gets its chunk back from the tcache.
static void *free_holding(size_t offset, void *value) {
    char *block = malloc(72);
    memset(block, 'o', 72);
    // A volatile store: the compiler would drop a plain one, dead as the block is freed.
    *(void *volatile *)(block + offset) = value;
    free(block);
    return block;
}

int main(void) {
    a = malloc(40);
    b = malloc(1024);
    c = malloc(48);
    d = malloc(56);

    void *old = free_holding(64, a);
    kept[0] = malloc(58);
    memset(kept[0], 'a', 58);
    int whole_word = kept[0] == old;

    old = free_holding(56, (char *)b + 517);
    kept[1] = malloc(57);
    memset(kept[1], 'b', 56);
    kept[1][56] = '\0';
    int partial_word = kept[1] == old;

    old = free_holding(64, d);
    kept[2] = realloc(NULL, 58);
    memset(kept[2], 'd', 58);
    int realloc_null = kept[2] == old;

    char *shrunk = malloc(72);
    memset(shrunk, 'c', 72);
    *(void *volatile *)(shrunk + 64) = c;
    kept[3] = realloc(shrunk, 58);
    int in_place = kept[3] == shrunk;

    a = b = c = d = NULL;
    printf("chunks taken back: %s %s %s %s\n", whole_word ? "yes" : "no", partial_word ? "yes" : "no",
           realloc_null ? "yes" : "no", in_place ? "yes" : "no");
    return 0;
}
