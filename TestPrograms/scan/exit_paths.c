// A lost block whose address is left in a dead frame right below main's, where libc's exit path
// then lays its own frames without writing most of their words: Valgrind calls those words
// undefined and the block definitely lost, whichever way the program leaves.
// Usage: exit_paths MODE, MODE = return | exit | _exit | _Exit | abort | assert | raise | fault |
// raise-handled (raise a handled signal from main, then fault in a deeper frame that holds the only
// pointer to a second block: that block is still reachable, the frame is live).
#define _GNU_SOURCE
#include <assert.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *volatile sink;

__attribute__((noinline)) static void leak_leaving_copies_in_frame(void) {
    void *volatile copies[64];
    void *block = malloc(48);
    for (int i = 0; i < 64; i++) copies[i] = block;
    sink = copies[63];
    sink = NULL;
}

static void ignore_signal(int signal_number) { (void)signal_number; }

__attribute__((noinline)) static void fault_holding_a_block(void) {
    void *volatile held = malloc(72);
    *(volatile int *)sink = 1;
    sink = held;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    leak_leaving_copies_in_frame();
    if (!strcmp(mode, "return")) return 0;
    if (!strcmp(mode, "exit")) exit(4);
    if (!strcmp(mode, "_exit")) _exit(5);
    if (!strcmp(mode, "_Exit")) _Exit(6);
    if (!strcmp(mode, "abort")) abort();
    if (!strcmp(mode, "assert")) assert(!"leaving by a failed assertion");
    if (!strcmp(mode, "raise")) raise(SIGSEGV);
    if (!strcmp(mode, "fault")) *(volatile int *)sink = 1;
    if (!strcmp(mode, "raise-handled")) {
        signal(SIGUSR1, ignore_signal);
        raise(SIGUSR1);
        fault_holding_a_block();
    }
    return 2;
}
