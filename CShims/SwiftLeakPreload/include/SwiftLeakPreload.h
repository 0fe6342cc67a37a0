// The LD_PRELOAD interposer: libswiftleak_preload.so.
//
// It replaces the malloc family and the C++ operator new/delete family in the traced program,
// captures a backtrace for every allocation, interns it in the shared stack store and publishes a
// 32-byte event per call into the ring that swiftleak drains (CShims/SwiftLeakEventABI).
//
// The `swl_preload_*` functions below are for tests; the program only sees the standard names.
#ifndef SWIFTLEAK_PRELOAD_H
#define SWIFTLEAK_PRELOAD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Whether the interposer is attached to a ring and recording in this process.
int swl_preload_is_recording(void);

#ifdef __cplusplus
}
#endif
#endif
