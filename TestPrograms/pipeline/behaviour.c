// Exit paths and output, for checking that swiftleak changes nothing the program does.
// Usage: behaviour MODE [CODE]. Modes: exit CODE | segv | abort | kill | _exit CODE | stdin | exec.
// Each mode leaks one 77-byte block first and writes to stdout and stderr.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *volatile sink;

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "exit";
    // Test runners hand their signal mask down (Foundation's Process keeps it): start clean, so a
    // signal forwarded to us acts as it would on a program started from a shell.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int code = argc > 2 ? atoi(argv[2]) : 0;
    sink = malloc(77);
    sink = NULL;
    printf("stdout line for %s\n", mode);
    fprintf(stderr, "stderr line for %s\n", mode);
    fflush(stdout);
    if (strcmp(mode, "segv") == 0) {
        volatile int *p = NULL;
        *p = 1;
    } else if (strcmp(mode, "abort") == 0) {
        abort();
    } else if (strcmp(mode, "kill") == 0) {
        kill(getpid(), SIGKILL);
    } else if (strcmp(mode, "_exit") == 0) {
        _exit(code);
    } else if (strcmp(mode, "exec") == 0) {
        // Replace this image with another program; its heap goes with it.
        char *const arguments[] = {argv[0], "exit", "6", NULL};
        execv(argv[0], arguments);
        return 99;
    } else if (strcmp(mode, "stdin") == 0) {
        char buffer[256];
        size_t n;
        while ((n = fread(buffer, 1, sizeof buffer, stdin)) > 0) fwrite(buffer, 1, n, stdout);
    }
    return code;
}
