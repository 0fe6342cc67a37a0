#ifndef CSWIFTLEAK_PREFETCH_H
#define CSWIFTLEAK_PREFETCH_H

/* Cache prefetch, which C has as a compiler builtin and Swift does not. The live-block table
 * asks for the slots of the events a few ahead in a batch: once the table outgrows the caches
 * each insert or remove is a miss to memory, and with the loads in flight together the drain
 * waits for one miss at a time instead of one per event. */

/* Starts loading the cache line at `address`, to be written soon. A hint only: any address may
 * be given (no fault). */
static inline __attribute__((always_inline)) void swl_prefetch_for_write(const void *address) {
    __builtin_prefetch(address, 1, 3);
}
/* The same for a line that is only to be read (the trace encoder's site table). */
static inline __attribute__((always_inline)) void swl_prefetch_for_read(const void *address) {
    __builtin_prefetch(address, 0, 3);
}

#endif
