// Allocates and frees for SECONDS seconds, writing STARTED_FILE once running and DONE_FILE at the
// end: lets a test kill swiftleak mid-run and check that the program runs on to its end.
// Usage: long_runner SECONDS STARTED_FILE DONE_FILE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void touch(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    double seconds = atof(argv[1]);
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    touch(argv[2], "started\n");
    unsigned long rounds = 0;
    static void *volatile slots[256];
    do {
        for (int i = 0; i < 10000; i++) {
            free(slots[i & 255]);
            slots[i & 255] = malloc(16 + (size_t)(i & 127));
        }
        rounds++;
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9 < seconds);
    char text[64];
    snprintf(text, sizeof text, "done after %lu rounds\n", rounds);
    touch(argv[3], text);
    return 0;
}
