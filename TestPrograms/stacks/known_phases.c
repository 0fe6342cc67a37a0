/* known_phases: allocations whose stacks hardly recur, or recur all the time, phase after phase,
 * for the stack walker's known stacks: a thread rests from them while they serve few captures
 * and takes them up again once its paths recur (UnwinderTests).
 *
 * Usage: known_phases PHASE...   each PHASE is 30,000 malloc/free pairs:
 *   scatter  from a recursion 0-199 calls deep, the depth drawn at random: the first frame (the
 *            leaf's return address and stack pointer) is one of 200, and a thread keeps 8 stacks;
 *   recur    always from the same path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))
#define PAIRS 30000

static void *volatile sink;
static unsigned long long rng_state = 0x9e3779b97f4a7c15ULL;

static unsigned next_random(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state >> 11);
}

NOINLINE static void leaf(void) {
    void *p = malloc(24);
    sink = p;
    free(p);
}

NOINLINE static void descend(int depth) {
    if (depth == 0) leaf();
    else descend(depth - 1);
    sink = NULL; /* not a tail call: each level keeps its frame */
}

int main(int argc, char **argv) {
    for (int a = 1; a < argc; a++) {
        int scatter = strcmp(argv[a], "scatter") == 0;
        if (!scatter && strcmp(argv[a], "recur") != 0) {
            fprintf(stderr, "known_phases: unknown phase %s\n", argv[a]);
            return 2;
        }
        for (int i = 0; i < PAIRS; i++) descend(scatter ? (int)(next_random() % 200) : 3);
    }
    puts("known_phases: done");
    return 0;
}
