/// Finds the live block a candidate pointer points at, in O(1) for the common case.
///
/// Blocks are sorted by address and do not overlap. The address range they cover is cut into
/// *segments* wherever two consecutive blocks are far apart; each segment has a dense table with one
/// entry per granule (2^`granuleShift` bytes): the index of the first block whose end lies beyond
/// the granule's start. A lookup rejects words outside `[minStart, maxEnd)` with one compare, finds
/// the segment (there is usually one per heap arena, and more when glibc mmapped big blocks: a hash of
/// the word's 1 MiB region gives the one or few segments that region holds, and rejects words in
/// no heap region, such as pointers to code or stacks between two heap mappings, without a search),
/// reads one table entry and then steps over the
/// few blocks in that granule (a binary search when there are many, e.g. when one huge block forced
/// coarse granules). The granule size is the smallest power of two (≥ 16 bytes) that keeps the
/// table within about two entries per block.
///
/// Zero-size blocks cover one byte, as in Valgrind's `find_chunk_for`: only a pointer to their start
/// finds them.
final class BlockIndex {
    let count: Int
    /// The caller's blocks, read in place: a copy of their bounds would be 16 bytes of fresh memory
    /// per block, and on the test machine faulting in a fresh page costs as much as looking up a
    /// few thousand words. Valid as long as the index is used (the scan runs inside the closure
    /// that lends them).
    let blocks: UnsafePointer<ScanBlock>
    /// Block starts, sorted.
    struct Starts {
        let blocks: UnsafePointer<ScanBlock>
        @inline(__always) subscript(_ i: Int) -> UInt64 { blocks[i].address }
    }
    /// Block ends (start + size, or start + 1 for a zero-size block), sorted as well. A block's
    /// start and size share a cache line, so a lookup touches one line per block it looks at.
    struct Ends {
        let blocks: UnsafePointer<ScanBlock>
        @inline(__always) subscript(_ i: Int) -> UInt64 {
            let block = blocks[i]
            return block.address &+ (block.size == 0 ? 1 : block.size)
        }
    }
    let starts: Starts
    let ends: Ends
    /// The size the program asked for (0 for a zero-size block, which covers one byte here).
    @inline(__always) func size(_ i: Int) -> UInt64 { blocks[i].size }
    let minStart: UInt64
    /// `maxEnd - minStart`: a word `w` can point into a block only if `w &- minStart < span`.
    let span: UInt64
    let granuleShift: UInt64

    let segmentCount: Int
    let segmentStarts: UnsafeMutablePointer<UInt64>
    let segmentEnds: UnsafeMutablePointer<UInt64>
    /// Offset of each segment's first entry in `table`.
    private let segmentTableOffsets: UnsafeMutablePointer<Int>
    /// Per granule, the first block index whose end is above the granule start; each segment has one
    /// more (sentinel) entry than it has granules.
    private let table: UnsafeMutablePointer<Int32>
    let tableEntries: Int

    /// Open-addressing hash of the regions (2^`regionShift` bytes) that hold part of a segment:
    /// key region number + 1 (0: empty slot), value the first and last segment in the region
    /// (`first << 32 | last`). Only built when there are several segments.
    private let regionShift: UInt64
    private let regionKeys: UnsafeMutablePointer<UInt64>
    private let regionSegments: UnsafeMutablePointer<UInt64>
    private let regionSlots: Int
    private let regionHashShift: UInt64

    /// `blocks` must be sorted by address and must not overlap (checked: a violation is a bug of the
    /// caller and traps), and must stay valid while the index is used.
    init(_ blocks: UnsafeBufferPointer<ScanBlock>) {
        precondition(blocks.count < Int(Int32.max), "too many blocks for 32-bit indices")
        count = blocks.count
        // A dummy address for an empty buffer: nothing is ever read through it.
        let base = blocks.baseAddress ?? UnsafePointer(bitPattern: 16)!
        self.blocks = base
        starts = Starts(blocks: base)
        ends = Ends(blocks: base)
        let starts = self.starts, ends = self.ends
        minStart = count > 0 ? starts[0] : 1

        // Choose the granule: the smallest one whose table stays within the budget. One pass checks
        // the blocks' order and sizes the table for the four finest granules at once (what most
        // heaps take); coarser ones are sized a pass each. Every pass reads every block, and with
        // millions of blocks each costs more than the table it sizes.
        let budget = max(2 * count, 4096)
        let sizes = BlockIndex.checkedTableSizes(blocks, firstShift: 4)
        span = count > 0 ? ends[count - 1] - starts[0] : 0
        var shift: UInt64 = 4
        var (entries, segments) = sizes[0]
        while shift < 40 && entries > budget {
            shift += 1
            (entries, segments) = shift < 4 + UInt64(sizes.count) ? sizes[Int(shift - 4)]
                : BlockIndex.tableSize(starts: starts, ends: ends, count: count, shift: shift)
        }
        granuleShift = shift
        tableEntries = entries
        segmentCount = segments
        let segmentStarts = UnsafeMutablePointer<UInt64>.allocate(capacity: max(segments, 1))
        let segmentEnds = UnsafeMutablePointer<UInt64>.allocate(capacity: max(segments, 1))
        let segmentTableOffsets = UnsafeMutablePointer<Int>.allocate(capacity: max(segments, 1))
        let table = ScanMemory.allocate(Int32.self, count: entries)
        self.segmentStarts = segmentStarts
        self.segmentEnds = segmentEnds
        self.segmentTableOffsets = segmentTableOffsets
        self.table = table

        // Fill: walk the segments again. Block b is the first whose end is above the start of every
        // granule starting before its end and at or after the previous block's; the granules from
        // the last block's end on (the sentinel) get last + 1.
        var segment = 0
        var offset = 0
        BlockIndex.forEachSegment(starts: starts, ends: ends, count: count, shift: shift) { first, last, granules in
            let base = starts[first]
            segmentStarts[segment] = base
            segmentEnds[segment] = ends[last]
            segmentTableOffsets[segment] = offset
            let entries = table + offset
            let roundUp = (UInt64(1) << shift) - 1
            var granule = 0
            for block in first...last {
                let upTo = Int(truncatingIfNeeded: (ends[block] - base + roundUp) >> shift)
                while granule < upTo {
                    entries[granule] = Int32(truncatingIfNeeded: block)
                    granule += 1
                }
            }
            while granule <= granules {
                entries[granule] = Int32(truncatingIfNeeded: last + 1)
                granule += 1
            }
            offset += granules + 1
            segment += 1
        }

        // The regions: 1 MiB, or larger when the segments span too many of them (a huge block).
        var regionShift: UInt64 = 20
        var regions = 0
        while true {
            regions = 0
            var lastRegion = UInt64.max
            for s in 0..<segments {
                let first = segmentStarts[s] >> regionShift
                let last = (segmentEnds[s] &- 1) >> regionShift
                regions += Int(last - first) + (first == lastRegion ? 0 : 1)
                lastRegion = last
            }
            if regions <= 4 * count + 4096 || regionShift >= 40 { break }
            regionShift += 1
        }
        self.regionShift = regionShift
        var slots = 16
        var hashShift: UInt64 = 60
        if segments > 1 {
            while slots < 2 * regions { slots <<= 1; hashShift -= 1 }
        }
        regionSlots = slots
        regionHashShift = hashShift
        let regionKeys = ScanMemory.allocate(UInt64.self, count: slots)
        let regionSegments = ScanMemory.allocate(UInt64.self, count: slots)
        self.regionKeys = regionKeys
        self.regionSegments = regionSegments
        if segments > 1 {
            for s in 0..<segments {
                for region in (segmentStarts[s] >> regionShift)...((segmentEnds[s] &- 1) >> regionShift) {
                    var slot = Int(truncatingIfNeeded: (region &* 0x9E37_79B9_7F4A_7C15) >> hashShift)
                    while regionKeys[slot] != 0 && regionKeys[slot] != region &+ 1 { slot = (slot &+ 1) & (slots - 1) }
                    if regionKeys[slot] == 0 {
                        regionKeys[slot] = region &+ 1
                        regionSegments[slot] = UInt64(s) << 32 | UInt64(s)
                    } else {
                        // Segments come in address order: this one is the region's last so far.
                        regionSegments[slot] = regionSegments[slot] & ~0xFFFF_FFFF | UInt64(s)
                    }
                }
            }
        }
    }

    deinit {
        segmentStarts.deallocate()
        segmentEnds.deallocate()
        segmentTableOffsets.deallocate()
        ScanMemory.deallocate(table, count: tableEntries)
        ScanMemory.deallocate(regionKeys, count: regionSlots)
        ScanMemory.deallocate(regionSegments, count: regionSlots)
    }

    /// Calls `body` for each segment: a run of blocks `first...last` whose gaps are at most 64
    /// granules, covering `granules` granules from `starts[first]`.
    @inline(__always)
    private static func forEachSegment(starts: Starts, ends: Ends, count: Int, shift: UInt64,
                                       _ body: (_ first: Int, _ last: Int, _ granules: Int) -> Void) {
        let gapLimit = UInt64(64) << shift
        var first = 0
        while first < count {
            var last = first
            while last + 1 < count && starts[last + 1] - ends[last] <= gapLimit { last += 1 }
            body(first, last, Int((ends[last] - starts[first] + (UInt64(1) << shift) - 1) >> shift))
            first = last + 1
        }
    }

    /// Checks that `blocks` are sorted, do not overlap and do not wrap (traps otherwise: a bug of
    /// the caller), and returns what ``tableSize`` would for the shifts `firstShift ..< firstShift + 4`,
    /// in one pass.
    private static func checkedTableSizes(_ blocks: UnsafeBufferPointer<ScanBlock>,
                                           firstShift: UInt64) -> [(entries: Int, segments: Int)] {
        let shifts = 4
        var entries = [Int](repeating: 0, count: shifts)
        var segments = [Int](repeating: 0, count: shifts)
        var segmentStart = [UInt64](repeating: 0, count: shifts)
        guard !blocks.isEmpty else { return Array(repeating: (0, 0), count: shifts) }
        for k in 0..<shifts { segmentStart[k] = blocks[0].address }
        let smallestGapLimit = UInt64(64) << firstShift
        var previousEnd: UInt64 = 0
        @inline(__always) func close(_ k: Int, end: UInt64) {
            let shift = firstShift + UInt64(k)
            entries[k] += Int((end - segmentStart[k] + (UInt64(1) << shift) - 1) >> shift) + 1
            segments[k] += 1
        }
        for index in 0..<blocks.count {
            let block = blocks[index]
            let end = block.address &+ max(block.size, 1)
            precondition(end > block.address, "block at \(block.address.hexString) wraps the address space")
            if index > 0 {
                precondition(block.address >= previousEnd,
                             "blocks must be sorted by address and must not overlap (at \(block.address.hexString))")
                // A gap of more than 64 granules starts a segment (as in forEachSegment).
                let gap = block.address - previousEnd
                if gap > smallestGapLimit {
                    for k in 0..<shifts where gap > UInt64(64) << (firstShift + UInt64(k)) {
                        close(k, end: previousEnd)
                        segmentStart[k] = block.address
                    }
                }
            }
            previousEnd = end
        }
        for k in 0..<shifts { close(k, end: previousEnd) }
        return (0..<shifts).map { (entries[$0], segments[$0]) }
    }

    /// The table size (entries including one sentinel per segment) and segment count for a shift.
    private static func tableSize(starts: Starts, ends: Ends,
                                  count: Int, shift: UInt64) -> (entries: Int, segments: Int) {
        var entries = 0
        var segments = 0
        forEachSegment(starts: starts, ends: ends, count: count, shift: shift) { _, _, granules in
            entries += granules + 1
            segments += 1
        }
        return (entries, segments)
    }

    /// The segment holding `address`, or -1.
    @inline(__always)
    func segment(containing address: UInt64) -> Int {
        if address &- minStart >= span { return -1 }
        return segmentCount > 1 ? segmentOfHeapWord(address) : 0
    }

    /// The segment holding `address` (inside `[minStart, maxEnd)`), or -1; several segments.
    @inline(__always)
    private func segmentOfHeapWord(_ address: UInt64) -> Int {
        let region = address >> regionShift
        var slot = Int(truncatingIfNeeded: (region &* 0x9E37_79B9_7F4A_7C15) >> regionHashShift)
        while true {
            let key = regionKeys[slot]
            if key == region &+ 1 { break }
            if key == 0 { return -1 }
            slot = (slot &+ 1) & (regionSlots &- 1)
        }
        let segments = regionSegments[slot]
        var lo = Int(truncatingIfNeeded: segments >> 32)
        var hi = Int(truncatingIfNeeded: segments & 0xFFFF_FFFF) &+ 1
        // Last segment of the region whose start is <= address (usually the only one).
        while hi &- lo > 1 {
            let mid = (lo &+ hi) >> 1
            if segmentStarts[mid] <= address { lo = mid } else { hi = mid }
        }
        return address >= segmentStarts[lo] && address < segmentEnds[lo] ? lo : -1
    }

    /// The first block whose end is above `address` (`count` if none): binary search.
    func firstBlock(endingAbove address: UInt64) -> Int {
        var lo = 0
        var hi = count
        while lo < hi {
            let mid = (lo + hi) >> 1
            if ends[mid] <= address { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// The index of the block `pointer` points at or into, or -1.
    @inline(__always)
    func lookup(_ pointer: UInt64) -> Int {
        if pointer &- minStart >= span { return -1 }
        var segment = 0
        if segmentCount > 1 {
            segment = segmentOfHeapWord(pointer)
            if segment < 0 { return -1 }
        }
        let granule = Int(truncatingIfNeeded: (pointer &- segmentStarts[segment]) >> granuleShift)
        let entry = segmentTableOffsets[segment] &+ granule
        var lo = Int(truncatingIfNeeded: table[entry])
        var hi = Int(truncatingIfNeeded: table[entry &+ 1])  // first block whose end is above the next granule's start
        if hi >= count { hi = count &- 1 }
        // The block containing pointer, if any, is the first in [lo, hi] whose end is above pointer.
        while hi &- lo > 8 {
            let mid = (lo &+ hi) >> 1
            if ends[mid] <= pointer { lo = mid &+ 1 } else { hi = mid }
        }
        while lo <= hi && ends[lo] <= pointer { lo &+= 1 }
        if lo <= hi && starts[lo] <= pointer { return lo }
        return -1
    }
}
