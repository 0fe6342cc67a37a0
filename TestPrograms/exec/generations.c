// Usage: generations N | generations missing
// N: each generation loses one block of 100 + N bytes and a two-node list (definitely and
// indirectly lost once the image ends), then execs itself with N - 1; generation 0 exits with 0.
// missing: an exec of a path that does not exist fails; the program goes on, loses 55 bytes and
// exits with 3.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "losses.h"

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (strcmp(argv[1], "missing") == 0) {
        char *const arguments[] = {"/nonexistent/swiftleak-test-program", NULL};
        execv(arguments[0], arguments);
        perror("execv");
        lose_block(55);
        return 3;
    }
    int n = atoi(argv[1]);
    lose_block(100 + (size_t)n);
    lose_list();
    printf("generation %d\n", n);
    fflush(stdout);
    if (n == 0) return 0;
    char next[16];
    snprintf(next, sizeof next, "%d", n - 1);
    char *const arguments[] = {argv[0], next, NULL};
    execv(argv[0], arguments);
    perror("execv");
    return 1;
}
