// Usage: forked_sites N [CHURN]. The parent leaks 3 blocks of 24 bytes from parent_site and forks;
// the child leaks N blocks of 40 bytes from child_site, after CHURN (default 0) allocations it
// frees at once (a long stream of its own in the trace). The parent waits for the child.
// `diff` of N=10 against N=20 must show +10 blocks in the child only.
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

void *volatile sink;

__attribute__((noinline)) static void parent_site(void) { sink = malloc(24); }
__attribute__((noinline)) static void child_site(void) { sink = malloc(40); }

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 10;
    long churn = argc > 2 ? atol(argv[2]) : 0;
    for (int i = 0; i < 3; i++) parent_site();
    pid_t child = fork();
    if (child < 0) return 1;
    if (child == 0) {
        for (long i = 0; i < churn; i++) free(malloc(16 + (size_t)(i % 256)));
        for (int i = 0; i < n; i++) child_site();
        sink = 0;
        return 0;
    }
    int status = 0;
    while (waitpid(child, &status, 0) < 0) {}
    sink = 0;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 2;
}
