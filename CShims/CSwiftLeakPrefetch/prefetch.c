/* Everything is inline in include/CSwiftLeakPrefetch.h; a C target needs one source file. */
#include "CSwiftLeakPrefetch.h"
