// Heap shapes with known Valgrind verdicts, one per mode, for the exit-scan tests.
// Usage: scan_cases MODE. Blocks lost on purpose are forgotten through a volatile sink; the code
// is built with -O0 so every malloc stays.
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct node {
    struct node *left, *right;
    char payload[16];
}; // 32 bytes

static void *volatile sink;
static void *volatile global_roots[8];
static struct node *volatile global_list;
static void *volatile global_interior;
static __thread void *volatile thread_local_root;

static struct node *new_node(void) {
    struct node *n = calloc(1, sizeof *n);
    return n;
}

// A full binary tree of depth 3 (7 nodes); only the root is lost directly.
static void lost_tree(void) {
    struct node *root = new_node();
    root->left = new_node();
    root->right = new_node();
    root->left->left = new_node();
    root->left->right = new_node();
    root->right->left = new_node();
    root->right->right = new_node();
    sink = root;
    sink = NULL;
}

static void lost_cycle(int length) {
    struct node *first = new_node(), *previous = first;
    for (int i = 1; i < length; i++) {
        struct node *n = new_node();
        previous->left = n;
        previous = n;
    }
    previous->left = first;
    sink = first;
    sink = NULL;
}

static void reachable_cycle(void) {
    struct node *a = new_node(), *b = new_node();
    a->left = b;
    b->left = a;
    global_roots[0] = a;
}

// Only a pointer 16 bytes into the block survives: possibly lost (no heuristic matches zeroed data).
static void interior_only(void) {
    char *block = calloc(1, 64);
    global_interior = block + 16;
}

static void held_by_globals(void) {
    for (int i = 0; i < 3; i++) global_roots[i + 1] = malloc(24 + (size_t)i);
}

static void reachable_list(void) {
    for (int i = 0; i < 100; i++) {
        struct node *n = new_node();
        n->left = global_list;
        global_list = n;
    }
}

// A thread that keeps its block in a stack variable (or a __thread variable) and waits for ever.
static int ready_pipe[2];

static void *stack_holder(void *arg) {
    (void)arg;
    void *volatile on_stack = malloc(72);
    (void)!write(ready_pipe[1], "x", 1);
    for (;;) pause();
    return (void *)on_stack;
}

static void *tls_holder(void *arg) {
    (void)arg;
    thread_local_root = malloc(88);
    (void)!write(ready_pipe[1], "x", 1);
    for (;;) pause();
    return NULL;
}

static void start_and_wait(void *(*body)(void *)) {
    pthread_t thread;
    if (pipe(ready_pipe) != 0) abort();
    pthread_create(&thread, NULL, body, NULL);
    char c;
    (void)!read(ready_pipe[0], &c, 1);
}

// The block's only copy is in r12 when the process exits (exit_group straight from asm). The
// red zone and the stack below it are scrubbed so no stale copy is left for the scan to find.
__attribute__((noinline)) static void exit_holding_in_register(int keep) {
    __asm__ volatile(
        "mov $96, %%edi\n\t"
        "call malloc@PLT\n\t"
        "mov %%rax, %%r12\n\t"
        "test %0, %0\n\t"
        "jnz 1f\n\t"
        "xor %%r12d, %%r12d\n\t"
        "1:\n\t"
        "lea -4096(%%rsp), %%rdi\n\t"
        "xor %%eax, %%eax\n\t"
        "mov $512, %%ecx\n\t"
        "rep stosq\n\t"
        "xor %%eax, %%eax\n\t"
        "xor %%ecx, %%ecx\n\t"
        "xor %%edx, %%edx\n\t"
        "xor %%esi, %%esi\n\t"
        "xor %%r8d, %%r8d\n\t"
        "xor %%r9d, %%r9d\n\t"
        "xor %%r10d, %%r10d\n\t"
        "xor %%r11d, %%r11d\n\t"
        "mov $231, %%eax\n\t"
        "xor %%edi, %%edi\n\t"
        "syscall\n\t"
        :
        : "r"((long)keep)
        : "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "memory");
    __builtin_unreachable();
}

// A live thread whose only copy of its block is in r12 while it sleeps in pause(2) for ever.
static void *register_holder(void *arg) {
    (void)arg;
    __asm__ volatile(
        "mov $104, %%edi\n\t"
        "call malloc@PLT\n\t"
        "mov %%rax, %%r12\n\t"
        "lea -4096(%%rsp), %%rdi\n\t"
        "xor %%eax, %%eax\n\t"
        "mov $512, %%ecx\n\t"
        "rep stosq\n\t"
        "mov $1, %%eax\n\t"          // write(ready_pipe[1], rsp, 1)
        "mov %0, %%edi\n\t"
        "mov %%rsp, %%rsi\n\t"
        "mov $1, %%edx\n\t"
        "syscall\n\t"
        "xor %%esi, %%esi\n\t"
        "xor %%edx, %%edx\n\t"
        "2:\n\t"
        "mov $34, %%eax\n\t"         // pause()
        "syscall\n\t"
        "jmp 2b\n\t"
        :
        : "r"(ready_pipe[1])
        : "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "memory");
    return NULL;
}

// Exit paths: each leaks one 48-byte block and keeps one 40-byte block reachable from a global.
static void leak_for_exit_path(void) {
    sink = malloc(48);
    sink = NULL;
    global_roots[7] = malloc(40);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "tree")) lost_tree();
    else if (!strcmp(mode, "cycle2")) lost_cycle(2);
    else if (!strcmp(mode, "cycle3")) lost_cycle(3);
    else if (!strcmp(mode, "reachable-cycle")) reachable_cycle();
    else if (!strcmp(mode, "interior")) interior_only();
    else if (!strcmp(mode, "globals")) held_by_globals();
    else if (!strcmp(mode, "list")) reachable_list();
    else if (!strcmp(mode, "thread-stack")) start_and_wait(stack_holder);
    else if (!strcmp(mode, "thread-tls")) start_and_wait(tls_holder);
    else if (!strcmp(mode, "register")) exit_holding_in_register(1);
    else if (!strcmp(mode, "thread-register")) start_and_wait(register_holder);
    else if (!strcmp(mode, "register-cleared")) exit_holding_in_register(0);
    else {
        leak_for_exit_path();
        if (!strcmp(mode, "return")) return 0;
        if (!strcmp(mode, "exit")) exit(4);
        if (!strcmp(mode, "_exit")) _exit(5);
        if (!strcmp(mode, "abort")) abort();
        if (!strcmp(mode, "segv")) raise(SIGSEGV);
        return 2;
    }
    return 0;
}
