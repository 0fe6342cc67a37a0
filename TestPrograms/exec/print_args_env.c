// Prints its arguments and environment as hex bytes, one entry a line, so that a run under
// swiftleak can be compared with a native run byte for byte (non-UTF-8 bytes included).
#include <stdio.h>

extern char **environ;

static void dump(const char *label, const char *text) {
    printf("%s", label);
    for (const unsigned char *c = (const unsigned char *)text; *c; c++) printf(" %02x", *c);
    printf("\n");
}

int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++) dump("arg", argv[i]);
    for (char **entry = environ; *entry; entry++) dump("env", *entry);
    return 0;
}
