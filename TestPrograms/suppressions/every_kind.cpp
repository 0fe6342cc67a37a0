// One loss record of each kind, for the suppression round trips and the XML output: a
// definitely lost string (through strdup, which glibc also calls __strdup), a lost tree of
// `new`ed nodes (one definitely, two indirectly lost), a block reached only through an interior
// pointer (possibly lost) and a node held by a global (still reachable).
#include <cstdio>
#include <cstdlib>
#include <cstring>

struct Node {
    Node *left = nullptr;
    Node *right = nullptr;
    char payload[16] = {};
};

static Node *kept;
static char *middle;

__attribute__((noinline)) static void lose_string() {
    char *copy = strdup("a string nobody frees");
    std::printf("%zu\n", std::strlen(copy));
}

__attribute__((noinline)) static void lose_tree() {
    Node *root = new Node;
    root->left = new Node;
    root->right = new Node;
    std::printf("%p\n", static_cast<void *>(root->payload));
}

__attribute__((noinline)) static void keep_interior() {
    char *block = static_cast<char *>(std::malloc(64));
    middle = block + 24;
}

__attribute__((noinline)) static void keep_node() { kept = new Node; }

int main() {
    lose_string();
    lose_tree();
    keep_interior();
    keep_node();
    return 0;
}
