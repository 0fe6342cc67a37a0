// A C program that frees everything it allocates, using what glibc keeps for itself: stdio
// buffers (stdout, a file), threads (whose stacks and DTVs glibc caches after they exit), tzset,
// setlocale and dlopen. With the default suppressions it must show zero blocks of every kind.
#include <dlfcn.h>
#include <locale.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static __thread char thread_buffer[64];

static void *worker(void *arg) {
    int id = *(int *)arg;
    char *scratch = malloc(100 + id);
    snprintf(scratch, 100, "worker %d", id);
    snprintf(thread_buffer, sizeof thread_buffer, "%s", scratch);
    free(scratch);
    return NULL;
}

int main(void) {
    // A named locale every glibc has, not the environment's (which may not be installed): the
    // same work in every run, wherever the tests run.
    setlocale(LC_ALL, "C.UTF-8");
    tzset();
    time_t now = time(NULL);
    struct tm parts;
    localtime_r(&now, &parts);

    pthread_t threads[4];
    int ids[4];
    for (int i = 0; i < 4; i++) {
        ids[i] = i;
        pthread_create(&threads[i], NULL, worker, &ids[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(threads[i], NULL);

    FILE *file = tmpfile();
    if (file) {
        fprintf(file, "%d\n", parts.tm_year);
        fclose(file);
    }
    void *math = dlopen("libm.so.6", RTLD_NOW);
    if (math) dlclose(math);

    char *line = strdup("all freed");
    printf("%s\n", line);
    free(line);
    return 0;
}
