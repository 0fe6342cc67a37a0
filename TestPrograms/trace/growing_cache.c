// An unbounded cache: entries are added all run and stay reachable (through a global) until exit,
// next to scratch buffers that come and go. `analyze` must name the cache's insertion site as a
// growth suspect and not the buffers.
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct entry {
    struct entry *next;
    char key[56];
};

struct entry *cache;   // reachable at exit
void *volatile sink;

__attribute__((noinline)) static void cache_insert(int i) {
    struct entry *e = malloc(sizeof *e);
    memset(e->key, 'a' + i % 26, sizeof e->key);
    e->next = cache;
    cache = e;
}

__attribute__((noinline)) static void scratch_work(int i) {
    char *buffer = malloc(4096 + i % 512);
    buffer[0] = (char)i;
    sink = buffer;
    free(buffer);
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 200;
    for (int i = 0; i < rounds; i++) {
        cache_insert(i);
        for (int j = 0; j < 4; j++) scratch_work(i * 4 + j);
        usleep(2000);
    }
    sink = 0;
    return 0;
}
