// A small program with the three classic leaks, for the README's first run.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node {
    struct node *next;
    char name[24];
};

static struct node *make_list(int n) {
    struct node *head = NULL;
    for (int i = 0; i < n; i++) {
        struct node *node = malloc(sizeof *node);
        snprintf(node->name, sizeof node->name, "node %d", i);
        node->next = head;
        head = node;
    }
    return head;
}

static char *copy_name(const char *name) {
    return strdup(name);
}

int main(void) {
    struct node *list = make_list(3);   // the whole list is lost when `list` goes away
    printf("first node: %s\n", list->name);
    list = NULL;

    char *name = copy_name("forgotten");  // one string never freed
    name = NULL;

    char *kept = malloc(64);             // freed: not a leak
    free(kept);
    return 0;
}
