// The loops that cleared glibc's free-list links out of a fresh block in the hooks until 2 Dec
// (every non-zero, 16-byte aligned word), kept here so that Benchmarks/clearing can time them
// against the memset of the block that replaced them (preload.c, swl_forget_grown_links says why).
#ifndef SWIFTLEAK_PRELOAD_CLEAR_LINKS_H
#define SWIFTLEAK_PRELOAD_CLEAR_LINKS_H

#include <immintrin.h>
#include <stdint.h>

/// Clears the words in [i, count) that look like links, two at a time (SSE2, which every x86_64
/// has; the block is 16-byte aligned), with one branch per pair instead of one per word: this runs
/// on every malloc, and the scalar loop's data-dependent branches cost a fifth of malloc-heavy
/// programs' time under swiftleak.
static inline void swl_clear_links_sse2(uint64_t *words, uint64_t i, uint64_t count) {
    const __m128i low_bits = _mm_set1_epi64x(15), zero = _mm_setzero_si128();
    for (; i + 2 <= count; i += 2) {
        __m128i pair = _mm_load_si128((const __m128i *)(words + i));
        // Per 32-bit lane: low dword without its 4 low bits (a high dword's test is always true).
        __m128i aligned = _mm_cmpeq_epi32(_mm_and_si128(pair, low_bits), zero);
        __m128i zero_half = _mm_cmpeq_epi32(pair, zero);
        // Per word: aligned as its low dword says, zero when both dwords are.
        __m128i word_aligned = _mm_shuffle_epi32(aligned, _MM_SHUFFLE(2, 2, 0, 0));
        __m128i word_zero = _mm_and_si128(zero_half, _mm_shuffle_epi32(zero_half, _MM_SHUFFLE(2, 3, 0, 1)));
        __m128i link = _mm_andnot_si128(word_zero, word_aligned);
        if (__builtin_expect(!!(_mm_movemask_epi8(link) != 0), 0)) {
            _mm_store_si128((__m128i *)(words + i), _mm_andnot_si128(link, pair));
        }
    }
    if (i < count && words[i] != 0 && (words[i] & 15) == 0) words[i] = 0;
}

/// The same where the processor has AVX2 (64-bit compares: a third of the SSE2 loop's
/// instructions), eight words per branch, any number of words (at least one). The last group of
/// eight is loaded and stored through masks (a masked-out word is neither read nor written, and
/// cannot fault), so the only branch that depends on the block's size is the loop's own: sizes
/// are what programs vary most, and the SSE2 loop's three size-dependent exits (the pairs, the
/// odd word, the choice between the loops) were mispredicted on most allocations.
/// A word w is a link here when ((w - 1) & (2^63 + 15)) == 15: non-zero, 16-byte aligned and below
/// 2^63 (every user-space address is), three instructions per four words instead of four. The
/// lanes' masks count down in vector registers, with no move from a general register per group.
/// The stores are not marked unlikely on purpose: the compiler would move them out of line, and
/// the call to them made every call save registers, realign the stack and spill a mask.
__attribute__((target("avx2"))) static void swl_clear_links_avx2(uint64_t *words, uint64_t i, uint64_t count) {
    const __m256i minus_one = _mm256_set1_epi64x(-1), zero = _mm256_setzero_si256();
    const __m256i link_bits = _mm256_set1_epi64x((long long)0x800000000000000FULL), fifteen = _mm256_set1_epi64x(15);
    const __m256i eight = _mm256_set1_epi64x(8);
    // Words left from each lane on: a lane is in the block while its count is positive.
    __m256i left_low = _mm256_sub_epi64(_mm256_set1_epi64x((long long)(count - i)), _mm256_set_epi64x(3, 2, 1, 0));
    __m256i left_high = _mm256_sub_epi64(left_low, _mm256_set1_epi64x(4));
    do {
        __m256i in_low = _mm256_cmpgt_epi64(left_low, zero), in_high = _mm256_cmpgt_epi64(left_high, zero);
        // Blocks are 16-byte aligned only: unaligned (masked) loads. A word masked out reads as 0.
        __m256i first = _mm256_maskload_epi64((const long long *)(words + i), in_low);
        __m256i second = _mm256_maskload_epi64((const long long *)(words + i + 4), in_high);
        __m256i first_link = _mm256_cmpeq_epi64(_mm256_and_si256(_mm256_add_epi64(first, minus_one), link_bits), fifteen);
        __m256i second_link = _mm256_cmpeq_epi64(_mm256_and_si256(_mm256_add_epi64(second, minus_one), link_bits), fifteen);
        __m256i any = _mm256_or_si256(first_link, second_link);
        if (!_mm256_testz_si256(any, any)) {
            // Only the links are written (a link is never a masked-out word).
            _mm256_maskstore_epi64((long long *)(words + i), first_link, zero);
            _mm256_maskstore_epi64((long long *)(words + i + 4), second_link, zero);
        }
        left_low = _mm256_sub_epi64(left_low, eight);
        left_high = _mm256_sub_epi64(left_high, eight);
        i += 8;
    } while (i < count);
}

#endif
