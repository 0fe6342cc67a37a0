/// What glibc's malloc header says about a live block, read from the stopped process.
///
/// The block's words before its start are glibc's chunk header (malloc/malloc.c, x86-64):
/// `prev_size` at `start − 16`, `size | flags` at `start − 8`. The scan needs two facts from it:
/// - the **usable size** (`malloc_usable_size`): programs that ask for it (Swift's arrays and
///   dictionaries size their capacity with it, so do some C containers) keep elements in the slack
///   past the requested size, and those words are as much the block's contents as the rest;
/// - whether the block is an **mmapped chunk**, and where that mapping is, so that the root set can
///   leave out exactly the allocator's memory when the kernel merged the chunk's mapping with a
///   neighbouring anonymous mapping of the program.
///
/// The program is untrusted: it may have overwritten the header (or not use glibc at all). Every
/// fact is checked against what glibc itself guarantees, and a header that fails a check gives nil:
/// the caller then uses the requested size (the block's words are still scanned up to it).
public struct GlibcChunk: Hashable, Sendable {
    /// glibc's flag bits in the size word.
    static let previousInUse: UInt64 = 0x1
    static let isMmapped: UInt64 = 0x2
    static let nonMainArena: UInt64 = 0x4
    /// `MALLOC_ALIGNMENT` on x86-64 and AArch64.
    static let alignment: UInt64 = 16
    /// The most an arena chunk can exceed the request: the 8-byte header rounding to 16 plus a
    /// remainder below `MINSIZE` (32) that realloc, memalign and the splitting of a free chunk keep.
    static let arenaSlackLimit: UInt64 = 64
    /// The most an mmapped chunk's usable size can exceed the request, beyond page rounding.
    static let pageSize: UInt64 = 4096

    /// Bytes from the block's start that belong to it (`malloc_usable_size`): ≥ the requested size.
    public var usableSize: UInt64
    /// For an mmapped chunk, the whole mapping glibc made for it (`[chunk − prev_size, chunk + size)`,
    /// page-aligned); nil for a chunk of an arena.
    public var mmappedRange: Range<UInt64>?

    public init(usableSize: UInt64, mmappedRange: Range<UInt64>?) {
        self.usableSize = usableSize
        self.mmappedRange = mmappedRange
    }

    /// Interprets the header of a block of `size` requested bytes at `start`; `word` reads one
    /// 8-byte word of the process (nil when unreadable). Reads `start − 8`, then for an mmapped
    /// chunk `start − 16` (`prev_size`), for an arena chunk the next chunk's size word, whose
    /// `PREV_INUSE` bit must be set since this chunk is in use.
    @inline(__always)
    public static func interpret(start: UInt64, size: UInt64, word: (UInt64) -> UInt64?) -> GlibcChunk? {
        guard start % alignment == 0, start >= 2 * alignment, let sizeWord = word(start &- 8) else { return nil }
        let chunkSize = sizeWord & ~7
        let chunkStart = start &- 16
        guard chunkSize >= 2 * alignment, chunkSize % alignment == 0, chunkStart &+ chunkSize > chunkStart else {
            return nil
        }
        if sizeWord & isMmapped != 0 {
            // An mmapped chunk: never in an arena, its mapping page-aligned and holding it whole.
            guard sizeWord & nonMainArena == 0, let prevSize = word(start &- 16), prevSize % alignment == 0,
                  prevSize <= chunkStart, (prevSize &+ chunkSize) % pageSize == 0 else { return nil }
            let usable = chunkSize &- 16
            guard usable >= size, usable &- size < 2 * pageSize else { return nil }
            return GlibcChunk(usableSize: usable, mmappedRange: (chunkStart &- prevSize)..<(chunkStart &+ chunkSize))
        }
        let usable = chunkSize &- 8
        guard usable >= size, usable &- size < arenaSlackLimit,
              let next = word(start &+ usable), next & previousInUse != 0 else { return nil }
        return GlibcChunk(usableSize: usable, mmappedRange: nil)
    }

    /// glibc's `HEAP_MAX_SIZE` on 64-bit: a non-main arena's heaps are mappings of this size,
    /// aligned to it, each wholly the allocator's.
    public static let arenaHeapSize: UInt64 = 64 << 20

    /// Reads and interprets the header of a block through `memory`.
    public static func read(start: UInt64, size: UInt64, memory: some ProcessMemoryReader) -> GlibcChunk? {
        func word(_ address: UInt64) -> UInt64? {
            var value: UInt64 = 0
            let got = withUnsafeMutableBytes(of: &value) { memory.read(address, into: $0) }
            return got == 8 ? UInt64(littleEndian: value) : nil
        }
        return interpret(start: start, size: size, word: word)
    }
}
