// An ordinary C program (a table of records, a lost list, a lost tree, some stdio) that leaves in
// the way its argument says: return, exit, _exit, abort or a fatal signal (SIGSEGV). For
// scripts/valgrind-compare's sweep, built at -O0 and -O2 with bfd and lld.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct record {
    struct record *next;
    char *name;
    long value;
};

static struct record *table[64];
static void *volatile sink;

static struct record *make_record(long value) {
    struct record *r = malloc(sizeof *r);
    char name[32];
    snprintf(name, sizeof name, "record-%ld", value);
    r->name = strdup(name);
    r->value = value;
    r->next = NULL;
    return r;
}

static void lose_list(int length) {
    struct record *head = NULL;
    for (int i = 0; i < length; i++) {
        struct record *r = make_record(1000 + i);
        r->next = head;
        head = r;
    }
    sink = head;
    sink = NULL;
}

int main(int argc, char **argv) {
    const char *how = argc > 1 ? argv[1] : "return";
    for (long i = 0; i < 500; i++) {
        struct record *r = make_record(i);
        r->next = table[i % 64];
        table[i % 64] = r;
    }
    for (int i = 0; i < 5; i++) lose_list(3 + i);
    long total = 0;
    for (int i = 0; i < 64; i++)
        for (struct record *r = table[i]; r; r = r->next) total += r->value;
    printf("total %ld\n", total);
    fflush(stdout);
    if (!strcmp(how, "exit")) exit(3);
    if (!strcmp(how, "_exit")) _exit(4);
    if (!strcmp(how, "abort")) abort();
    if (!strcmp(how, "signal")) raise(SIGSEGV);
    return 0;
}
