// A program that names its own known leaks the LeakSanitizer way: __lsan_default_suppressions()
// returns leak: lines, which swiftleak reads (with the default suppressions on) as LSan does.
// Built with -DUNPARSABLE_DEFAULTS, the lines do not parse.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *__lsan_default_suppressions(void) {
#ifdef UNPARSABLE_DEFAULTS
    // A typo on line 2: swiftleak learns it at the end of the run, when the program has run.
    return "leak:known_cache_fill\nleek:real_leak\n";
#else
    return "# the cache is the library's business\nleak:known_cache_fill\n";
#endif
}

static void *cache;

__attribute__((noinline)) static void known_cache_fill(void) {
    char *entry = malloc(48);
    strcpy(entry, "cached");
    printf("%s\n", entry);
}

__attribute__((noinline)) static void real_leak(void) {
    char *lost = malloc(16);
    lost[0] = 1;
}

int main(void) {
    known_cache_fill();
    real_leak();
    cache = NULL;
    return 0;
}
