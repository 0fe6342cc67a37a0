// Usage: spawns parent | spawns child N
// parent: loses 40 bytes, then runs `spawns child 1` through system(), `spawns child 2` through
// posix_spawn and `spawns child 3` through popen(), waiting for each. child N: loses one block of
// 100 + N bytes and a two-node list (32 bytes each, the second indirectly lost).
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "losses.h"

extern char **environ;

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "child") == 0) {
        int n = atoi(argv[2]);
        lose_block(100 + (size_t)n);
        lose_list();
        printf("child %d\n", n);
        return 0;
    }
    if (argc != 2 || strcmp(argv[1], "parent") != 0) return 2;
    lose_block(40);
    char command[4096];
    snprintf(command, sizeof command, "%s child 1", argv[0]);
    fflush(stdout);
    if (system(command) != 0) return 3;

    pid_t pid;
    char *const arguments[] = {argv[0], "child", "2", NULL};
    if (posix_spawn(&pid, argv[0], NULL, NULL, arguments, environ) != 0) return 4;
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 5;

    snprintf(command, sizeof command, "%s child 3", argv[0]);
    FILE *pipe = popen(command, "r");
    if (pipe == NULL) return 6;
    char line[64];
    while (fgets(line, sizeof line, pipe)) printf("through popen: %s", line);
    if (pclose(pipe) != 0) return 7;
    printf("parent done\n");
    return 0;
}
