// A library that main_dlopen.c loads, calls, and unloads before exit.
#include <stdlib.h>

void *plugin_alloc(void) {
    return malloc(48); // @alloc plugin_alloc
}
