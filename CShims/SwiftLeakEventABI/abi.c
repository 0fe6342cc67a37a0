// The event ABI is header-only; this file checks the layout once more in a translation unit.
#ifndef _GNU_SOURCE
#error "_GNU_SOURCE must be set by Package.swift"
#endif
#include "SwiftLeakEventABI.h"
_Static_assert(offsetof(swl_ring_header, tail) == 128, "tail on its own cache line");
_Static_assert(offsetof(swl_ring_header, head) == 192, "head on its own cache line");
_Static_assert(offsetof(swl_ring_header, store_used) == 256, "store_used on its own cache line");
