// Loads the plugin given as argv[1], leaks a block it allocates, and dlcloses it before exit:
// the frame inside the unloaded library must still be symbolized.
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

static void *volatile sink;

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    void *handle = dlopen(argv[1], RTLD_NOW);
    if (!handle) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    void *(*plugin_alloc)(void) = (void *(*)(void))dlsym(handle, "plugin_alloc");
    sink = plugin_alloc();
    sink = NULL;
    dlclose(handle);
    return 0;
}
