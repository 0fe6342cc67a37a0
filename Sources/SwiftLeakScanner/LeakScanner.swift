#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SwiftLeakCore
import Synchronization

/// The exit-time reachability scan: Valgrind Memcheck's leak check (`mc_leakcheck.c`) over a
/// stopped process whose memory is read through a ``ProcessMemoryReader``.
///
/// Semantics (design.md §2), exactly as Memcheck:
/// 1. Every aligned word of the root regions, then every register word, is a candidate pointer. A
///    pointer to a block's start makes it reachable; a pointer into it makes it possibly lost,
///    unless one of the enabled ``LeakHeuristics`` accepts it (then it counts as a start pointer).
///    A reachable block's contents are scanned in turn; a possibly lost block's contents are too,
///    but everything found through it is at best possibly lost. A block upgraded from possibly lost
///    to reachable is rescanned. Everything is driven by an explicit mark stack: no recursion.
/// 2. The blocks still unreached are visited in address order. Each one still unreached starts a
///    clique as its leader (definitely lost); every unreached block found from it, through start or
///    interior pointers, joins as indirectly lost and its size (plus the indirect bytes of an
///    earlier leader it absorbs) is charged to the leader.
public enum LeakScanner {
    /// Tuning and options of one scan.
    public struct Configuration: Sendable {
        /// The interior-pointer heuristics to apply (Valgrind's default: all).
        public var heuristics: LeakHeuristics = .all
        /// The address space of the process (its `/proc/PID/maps`), needed only by the
        /// multipleinheritance heuristic, which asks whether a word points into a file-backed
        /// readable (vtable) or executable (function) mapping. Without it that heuristic never matches.
        public var mappings: [MemoryMapping] = []
        /// Bytes read per call when streaming root regions and big blocks.
        public var readChunkSize: Int = 1 << 20
        /// Block contents are read through a cache of windows of this many bytes (a power of two).
        public var blockWindowSize: Int = 1 << 16
        /// The most memory that cache may use. It is sized to hold every window that contains a
        /// block, so that each is read once whatever order the marking visits blocks in; only when
        /// the heap is larger than this do windows compete for slots (and a heap traversed in random
        /// order is read more than once). Untouched slots cost no memory.
        public var blockCacheLimit: Int = 1 << 30
        /// How far a block's contents reach. The requested size decides whether a word points into a
        /// block (Valgrind's rule); the words scanned may go further, into the allocator's slack.
        public var contents: BlockContents = .requestedSize
        /// When set, the only memory that is readable (merged ranges, sorted; see
        /// ``MemoryMapping/readableRanges(_:)``): nothing outside them is read, and a pointer to an
        /// address outside them is not followed, even into a block (Valgrind's
        /// `am_is_valid_for_client(…, VKI_PROT_READ)` in `lc_scan_memory` and `lc_is_a_chunk_ptr`).
        /// Needed because `/proc/PID/mem` reads `PROT_NONE` pages as if they were readable.
        public var readableRanges: [Range<UInt64>]? = nil
        /// When the windows holding the blocks (the heap) come to at least this many bytes and all
        /// fit in the cache, a second thread reads them ahead of the marking, in address order: the
        /// process is stopped, so its core is free, and reading is a third of the work. 0 turns it
        /// off. The reader is then called from two threads at once. Only when ``pointerThreads`` is 0.
        public var readAheadMinimumBytes: Int = 4 << 20
        /// How many threads (this one included) read every block and find the words in it that
        /// point into blocks before the marking runs (``BlockPointers``); the marking then takes
        /// each block's pointers from that list. The verdicts are those of the word-by-word scan.
        /// The process is stopped, so its cores are free. 0: scan each block word by word when it is
        /// marked (with the read-ahead thread above), as before.
        public var pointerThreads: Int = LeakScanner.defaultPointerThreads
        /// Below this many bytes of blocks, the pointers are found on the calling thread alone.
        public var pointerThreadsMinimumBytes: Int = 4 << 20

        public init() {}
    }

    /// Which bytes of a block are scanned for pointers.
    public enum BlockContents: Sendable {
        /// The bytes the program asked for (what Valgrind's own allocator gives it).
        case requestedSize
        /// Up to glibc's `malloc_usable_size`, read from each block's chunk header at scan time
        /// (``GlibcChunk``); a header that fails glibc's invariants falls back to the requested size.
        /// Programs that ask for the usable size (Swift's arrays) keep live pointers in the slack.
        case glibcUsableSize
    }

    /// The online cores, at most 4: the program is stopped during the scan, so every core is free.
    public static var defaultPointerThreads: Int {
        min(max(Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), 1), 4)
    }

    /// Scans and classifies.
    ///
    /// - Parameters:
    ///   - blocks: the live blocks, sorted by address, not overlapping (traps otherwise).
    ///   - roots: the memory root regions (see ``RootSetBuilder``).
    ///   - registerWords: the general-register words of every thread.
    ///   - memory: reads the process.
    public static func scan<Reader: ProcessMemoryReader>(
        blocks: [ScanBlock], roots: [RootRegion], registerWords: [UInt64], memory: Reader,
        configuration: Configuration = Configuration()
    ) -> ScanResult {
        let wallStart = monotonicSeconds()
        let cpuStart = threadCPUSeconds()
        // The engine reads the blocks in place (no copy of their bounds) and never outlives this closure.
        var result = blocks.withUnsafeBufferPointer { blocks in
            let engine = ScanEngine(blocks: blocks, memory: memory, configuration: configuration)
            if let pointers = engine.blockPointers {
                engine.markRootsFindingPointers(pointers, blocks: blocks, roots: roots, registerWords: registerWords)
            } else {
                engine.startReadingAhead()
                engine.markRoots(roots: roots, registerWords: registerWords)
            }
            engine.processMarkStack(clique: -1)
            var lost = engine.gatherCliques()
            engine.stopPointerHelpers()
            engine.stopReadingAhead()
            return engine.result(lost: &lost)
        }
        result.statistics.cpuSeconds += threadCPUSeconds() - cpuStart
        result.statistics.wallSeconds = monotonicSeconds() - wallStart
        return result
    }

    /// Scans with a root set from ``RootSetBuilder``.
    public static func scan<Reader: ProcessMemoryReader>(
        blocks: [ScanBlock], rootSet: RootSet, memory: Reader, configuration: Configuration = Configuration()
    ) -> ScanResult {
        scan(blocks: blocks, roots: rootSet.regions, registerWords: rootSet.registerWords, memory: memory,
             configuration: configuration)
    }

    static func monotonicSeconds() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    static func threadCPUSeconds() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}

/// Block states, Valgrind's `Reachedness`, plus a pending bit (the block is on the mark stack).
enum BlockState {
    static let unreached: UInt8 = 0
    static let possible: UInt8 = 1
    static let reachable: UInt8 = 2
    static let indirect: UInt8 = 3
    static let mask: UInt8 = 3
    static let pending: UInt8 = 4
    /// Some byte of the block is outside the readable ranges: a pointer into it is checked.
    static let partlyUnreadable: UInt8 = 16
    /// The multipleinheritance heuristic has looked at the block's first word (whether it is a
    /// vtable address does not depend on the pointer: it is remembered in the next bit).
    static let firstWordChecked: UInt8 = 32
    static let firstWordIsVtable: UInt8 = 64
}

/// The fill state of one heap window of the cache when a second thread reads ahead.
private enum WindowFill {
    static let empty: UInt8 = 0
    static let reading: UInt8 = 1
    static let ready: UInt8 = 2
}

/// The mutable state of one scan. Raw storage, owned here, freed in deinit.
///
/// Not generic over the reader on purpose: a generic class used from another module runs
/// unspecialized, with every stored-property access going through runtime metadata in the hot
/// loops. Reads are few and large, so one dynamic call per read costs nothing.
final class ScanEngine {
    let memory: any ProcessMemoryReader
    let configuration: LeakScanner.Configuration
    let index: BlockIndex
    let count: Int
    let state: UnsafeMutablePointer<UInt8>
    let heuristic: UnsafeMutablePointer<UInt8>
    /// Phase 2 only (when some block is unreached): each block's clique parent (-1: none) and the
    /// indirect bytes charged to it, the storage of ``LostBlocks``' arrays, which become the
    /// result's as they are (one array each instead of a working copy and a result copy).
    var parent: UnsafeMutablePointer<Int32>? = nil
    var indirectBytes: UnsafeMutablePointer<UInt64>? = nil
    /// Phase 2: the leader of the clique each block joined (-1: none), resolved to the final
    /// leaders in ``result(lost:)``.
    var leader: UnsafeMutablePointer<Int32>? = nil
    /// The mark stack: a block is on it at most once (pending bit), so `count` entries suffice.
    let markStack: UnsafeMutablePointer<Int32>
    /// Mutable scalars live in raw storage: a stored `var` of a class pays a dynamic exclusivity
    /// check on every modification, which the hot loops cannot afford.
    let markTopStorage: UnsafeMutablePointer<Int>
    /// Possibly lost blocks set aside during marking from the roots (see `processMarkStack`); a
    /// block is set aside at most once, so `count` entries suffice. Allocated on first use.
    var deferred: UnsafeMutablePointer<Int32>? = nil
    var deferredTop: Int {
        @inline(__always) get { markTopStorage[1] }
        @inline(__always) set { markTopStorage[1] = newValue }
    }
    let counters: UnsafeMutablePointer<ScanStatistics>
    var markTop: Int {
        @inline(__always) get { markTopStorage.pointee }
        @inline(__always) set { markTopStorage.pointee = newValue }
    }
    var statistics: ScanStatistics {
        @inline(__always) get { counters.pointee }
        @inline(__always) _modify { yield &counters.pointee }
    }

    /// A block's requested size.
    @inline(__always)
    func size(_ i: Int) -> UInt64 { index.size(i) }
    let heuristicsEnabled: Bool

    /// Streaming buffer for root regions and big blocks.
    let chunk: UnsafeMutableRawBufferPointer
    /// A block's words are copied here from the cache before they are scanned, so that the
    /// heuristics may read other blocks through the cache meanwhile (and evict its window). Not
    /// needed when ``allWindowsFit``: then no heap window is ever evicted.
    let blockScratch: UnsafeMutableRawPointer
    /// Direct-mapped cache of block-content windows.
    let windowShift: Int
    let windowSize: Int
    let cacheSlots: Int
    let cacheBytes: Int
    /// Windows of the block-index segments (the heap): slots `0..<heapWindows`, one each.
    let heapWindows: Int
    /// Every heap window has a slot of its own, and other memory (vtables read by a heuristic)
    /// uses the slots above them: a heap window, once read, stays, and the windows of one segment
    /// lie next to each other in the cache, so a block spanning several is read in place.
    let allWindowsFit: Bool
    /// Per heap window, its ``WindowFill`` state, when a second thread reads ahead (else nil).
    let windowFill: UnsafeMutablePointer<Atomic<UInt8>>?
    let readAheadStop: UnsafeMutablePointer<Atomic<Bool>>
    var readAheadThread: pthread_t?
    /// What the read-ahead thread read (added to the statistics once it is joined).
    var readAheadReads: UInt64 = 0
    var readAheadBytes: UInt64 = 0
    var readAheadCPUSeconds: Double = 0
    /// Per block-index segment, the first slot number of its windows: the windows of the heap are
    /// numbered consecutively, so that they get distinct slots whenever they all fit.
    let segmentWindowBase: [Int]
    let segmentFirstWindow: [UInt64]
    let cache: UnsafeMutableRawPointer
    let cacheTags: UnsafeMutablePointer<UInt64>       // window number + 1; 0 = empty
    let cacheValidFrom: UnsafeMutablePointer<Int32>   // readable bytes [from, to) of the window
    let cacheValidTo: UnsafeMutablePointer<Int32>

    /// File-backed mappings, sorted, as plain ranges: the multipleinheritance heuristic looks up
    /// addresses in them for many interior pointers, and `MemoryMapping` carries strings (a retain
    /// per copy, a parse of `perms` per flag).
    struct FileRange {
        var start: UInt64
        var end: UInt64
        var isReadable: Bool
        var isExecutable: Bool
    }
    let fileRanges: [FileRange]
    var vtableMemo: [UInt64: Bool] = [:]
    /// ``LeakScanner/Configuration/readableRanges``, as parallel sorted arrays (empty: everything is readable).
    let readableStarts: [UInt64]
    let readableEnds: [UInt64]
    let usesUsableSize: Bool
    /// Every block's pointers, found before marking (nil: each block is scanned word by word).
    let blockPointers: BlockPointers?
    /// ``blockPointers``' list, as the marking reads it.
    let pointerList: BlockPointers.List?
    /// While other threads still find pointers during the marking (else nil).
    var pointerHelpers: PointerHelpers? = nil
    /// Raw storage read per block scanned: [0] is 1 while ``pointerHelpers`` runs; [1]..<[2] are
    /// the blocks of the last chunk known to be found; [3] is 1 once every chunk is.
    let pointersPending: UnsafeMutablePointer<Int>

    /// `blocks` must stay valid while the engine lives.
    init(blocks: UnsafeBufferPointer<ScanBlock>, memory: any ProcessMemoryReader, configuration: LeakScanner.Configuration) {
        self.memory = memory
        self.configuration = configuration
        index = BlockIndex(blocks)
        count = blocks.count
        // Zero-filled: every block unreached (0), no heuristic.
        state = ScanMemory.allocate(UInt8.self, count: count)
        heuristic = ScanMemory.allocate(UInt8.self, count: count)
        markStack = ScanMemory.allocate(Int32.self, count: count)
        markTopStorage = .allocate(capacity: 2)
        markTopStorage.initialize(repeating: 0, count: 2)
        counters = .allocate(capacity: 1)
        counters.initialize(to: ScanStatistics())
        heuristicsEnabled = !configuration.heuristics.isEmpty
        blockPointers = configuration.pointerThreads > 0 && !blocks.isEmpty ? BlockPointers(index: index) : nil
        pointerList = blockPointers?.list
        pointersPending = .allocate(capacity: 4)
        pointersPending.initialize(repeating: 0, count: 4)

        chunk = .allocate(byteCount: max(configuration.readChunkSize, 4096) & ~7, alignment: 16)
        // With the pointers found first, the cache only serves the heuristics' reads and the rare
        // block scanned word by word: small windows, a small cache.
        let windowBytes = blockPointers != nil ? min(configuration.blockWindowSize, 4096) : configuration.blockWindowSize
        let cacheLimit = blockPointers != nil ? min(configuration.blockCacheLimit, 4 << 20) : configuration.blockCacheLimit
        var shift = 12
        while (1 << shift) < windowBytes { shift += 1 }
        windowShift = shift
        windowSize = 1 << shift
        blockScratch = .allocate(byteCount: windowSize >> 2, alignment: 16)
        var bases: [Int] = []
        var firstWindows: [UInt64] = []
        var heapWindows = 0
        for segment in 0..<index.segmentCount {
            let first = index.segmentStarts[segment] >> UInt64(shift)
            let last = (index.segmentEnds[segment] - 1) >> UInt64(shift)
            bases.append(heapWindows)
            firstWindows.append(first)
            heapWindows += Int(last - first + 1)
        }
        segmentWindowBase = bases
        segmentFirstWindow = firstWindows
        // Room for every heap window plus some for other memory (vtables read by a heuristic).
        let maxSlots = max(cacheLimit >> shift, 16)
        var slots = 16
        while slots < heapWindows + 64 && slots < maxSlots { slots <<= 1 }
        cacheSlots = slots
        self.heapWindows = heapWindows
        allWindowsFit = slots >= heapWindows + 64
        cacheBytes = slots * windowSize
        cache = ScanMemory.allocateBytes(cacheBytes)
        readAheadStop = .allocate(capacity: 1)
        readAheadStop.initialize(to: Atomic(false))
        if allWindowsFit && blockPointers == nil && configuration.readAheadMinimumBytes > 0
            && heapWindows * windowSize >= configuration.readAheadMinimumBytes {
            let fill = UnsafeMutablePointer<Atomic<UInt8>>.allocate(capacity: heapWindows)
            for slot in 0..<heapWindows { (fill + slot).initialize(to: Atomic(WindowFill.empty)) }
            windowFill = fill
        } else {
            windowFill = nil
        }
        cacheTags = .allocate(capacity: slots)
        cacheTags.initialize(repeating: 0, count: slots)
        cacheValidFrom = .allocate(capacity: slots)
        cacheValidTo = .allocate(capacity: slots)
        fileRanges = configuration.mappings.filter { $0.isFileBacked }.sorted { $0.start < $1.start }.map {
            FileRange(start: $0.start, end: $0.end, isReadable: $0.isReadable, isExecutable: $0.isExecutable)
        }
        usesUsableSize = configuration.contents == .glibcUsableSize
        let readable = configuration.readableRanges ?? []
        readableStarts = readable.map(\.lowerBound)
        readableEnds = readable.map(\.upperBound)
        if configuration.readableRanges != nil {
            // Flag the blocks not wholly inside one readable range: those that meet a gap between
            // the (merged) ranges, or lie below the first or above the last. Found by binary search
            // per gap, so the blocks inside the ranges (all of them, usually) are not visited.
            var gapStart: UInt64 = 0
            for range in readable + [UInt64.max..<UInt64.max] {
                let gapEnd = range.lowerBound
                if gapStart < gapEnd {
                    var i = index.firstBlock(endingAbove: gapStart)
                    while i < count && index.starts[i] < gapEnd {
                        state[i] |= BlockState.partlyUnreadable
                        i += 1
                    }
                }
                gapStart = max(gapStart, range.upperBound)
            }
        }
    }

    deinit {
        ScanMemory.deallocate(state, count: count)
        ScanMemory.deallocate(heuristic, count: count)
        ScanMemory.deallocate(markStack, count: count)
        if let deferred { ScanMemory.deallocate(deferred, count: count) }
        markTopStorage.deallocate()
        stopPointerHelpers()
        pointersPending.deallocate()
        counters.deallocate()
        chunk.deallocate()
        stopReadingAhead()
        blockScratch.deallocate()
        ScanMemory.deallocateBytes(cache, byteCount: cacheBytes)
        if let windowFill {
            windowFill.deinitialize(count: heapWindows)
            windowFill.deallocate()
        }
        readAheadStop.deinitialize(count: 1)
        readAheadStop.deallocate()
        cacheTags.deallocate()
        cacheValidFrom.deallocate()
        cacheValidTo.deallocate()
    }

    // MARK: Reading

    /// The end of the readable range holding `address`, or nil when it is not readable.
    @inline(__always)
    func readableEnd(_ address: UInt64) -> UInt64? {
        var lo = 0
        var hi = readableEnds.count
        while lo < hi {
            let mid = (lo + hi) >> 1
            if readableEnds[mid] <= address { lo = mid + 1 } else { hi = mid }
        }
        return lo < readableEnds.count && readableStarts[lo] <= address ? readableEnds[lo] : nil
    }

    @inline(__always)
    func read(_ address: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let got = readUncounted(address, into: buffer)
        if got >= 0 { statistics.reads += 1 }
        let copied = max(got, 0)
        statistics.bytesRead += UInt64(copied)
        return copied
    }

    /// A read clipped to the readable ranges, without touching the statistics (the read-ahead
    /// thread calls it too): the bytes copied, or -1 when nothing was asked of the reader.
    @inline(__always)
    func readUncounted(_ address: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        var buffer = buffer
        if configuration.readableRanges != nil {
            guard let end = readableEnd(address) else { return -1 }
            if end &- address < UInt64(buffer.count) {
                buffer = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(end &- address)])
            }
        }
        return max(0, min(memory.read(address, into: buffer), buffer.count))
    }

    func readWord(_ address: UInt64) -> UInt64? {
        if let cached = cachedContents(address, 8) {
            return UInt64(littleEndian: cached.loadUnaligned(as: UInt64.self))
        }
        var value: UInt64 = 0
        let got = withUnsafeMutableBytes(of: &value) { read(address, into: $0) }
        return got == 8 ? UInt64(littleEndian: value) : nil
    }

    /// Calls `body` with the aligned words of `[start, end)` as they are read, chunk by chunk,
    /// skipping unreadable pages as Valgrind's `lc_scan_memory` does.
    @inline(__always)
    func streamWords(_ start: UInt64, _ end: UInt64, _ body: (UnsafePointer<UInt64>, Int) -> Void) {
        var address = (start &+ 7) & ~7
        let limit = end & ~7
        guard address < limit else { return }
        let chunkSize = UInt64(chunk.count)
        while address < limit {
            let want = Int(min(chunkSize, limit - address))
            let got = read(address, into: UnsafeMutableRawBufferPointer(rebasing: chunk[0..<want])) & ~7
            if got > 0 {
                statistics.wordsScanned += UInt64(got >> 3)
                body(chunk.baseAddress!.assumingMemoryBound(to: UInt64.self), got >> 3)
                address += UInt64(got)
            }
            if got < want {
                // Unreadable from `address`: skip to the next page.
                let next = min((address | 4095) &+ 1, limit)
                statistics.bytesUnreadable += next - address
                address = next
            }
        }
    }

    /// The bytes `[start, start + size)` from the window cache, or nil when they are not there
    /// whole (then the caller streams them): a range within one window when it is small, or, when
    /// every heap window has its own slot, any range of one segment's windows, read in place.
    @inline(__always)
    func cachedContents(_ start: UInt64, _ size: UInt64) -> UnsafeRawPointer? {
        let window = start >> UInt64(windowShift)
        let lastWindow = (start &+ size &- 1) >> UInt64(windowShift)
        let segment = index.segment(containing: start)
        guard size <= UInt64(windowSize >> 2), lastWindow == window else {
            return allWindowsFit && segment >= 0 && size > 0 ? spannedContents(start, size, segment: segment) : nil
        }
        let slot = self.slot(window, segment: segment)
        let slotBase = cache + slot << windowShift
        if cacheTags[slot] != window &+ 1 { fill(slot, window: window, forBlockAt: start, segment: segment) }
        let offset = Int(start - (window << UInt64(windowShift)))
        guard offset >= Int(cacheValidFrom[slot]), offset + Int(size) <= Int(cacheValidTo[slot]) else { return nil }
        return UnsafeRawPointer(slotBase + offset)
    }

    /// The cache slot of a window: a heap window's own (its segment's base plus its number there),
    /// others hashed into the slots above the heap's when they all fit.
    @inline(__always)
    func slot(_ window: UInt64, segment: Int) -> Int {
        if segment >= 0 {
            let slot = segmentWindowBase[segment] + Int(window - segmentFirstWindow[segment])
            return allWindowsFit ? slot : slot & (cacheSlots - 1)
        }
        let hash = (window &* 0x9E37_79B9_7F4A_7C15) >> 40
        return allWindowsFit ? heapWindows + Int(hash % UInt64(cacheSlots - heapWindows))
                             : Int(truncatingIfNeeded: hash) & (cacheSlots - 1)
    }

    /// Reads a window into its slot (a heap window the read-ahead thread may be reading: waits for it).
    func fill(_ slot: Int, window: UInt64, forBlockAt start: UInt64, segment: Int) {
        if segment >= 0, let windowFill {
            while true {
                let state = windowFill[slot].load(ordering: .acquiring)
                if state == WindowFill.ready { break }
                if state == WindowFill.empty,
                   windowFill[slot].compareExchange(expected: WindowFill.empty, desired: WindowFill.reading,
                                                    ordering: .acquiring).exchanged {
                    readWindow(slot, window: window, forBlockAt: start)
                    windowFill[slot].store(WindowFill.ready, ordering: .releasing)
                    break
                }
                sched_yield()  // the read-ahead thread is copying it
            }
            cacheTags[slot] = window &+ 1
            return
        }
        readWindow(slot, window: window, forBlockAt: start)
        cacheTags[slot] = window &+ 1
    }

    func readWindow(_ slot: Int, window: UInt64, forBlockAt start: UInt64) {
        let slotBase = cache + slot << windowShift
        let windowStart = window << UInt64(windowShift)
        var got = read(windowStart, into: UnsafeMutableRawBufferPointer(start: slotBase, count: windowSize))
        var from = 0
        if got == 0 && start > windowStart && start - windowStart < UInt64(windowSize) {
            // The window starts in unmapped memory (a mapping starting mid-window): read from
            // the block's page on.
            from = Int((start & ~4095) - windowStart)
            got = read(windowStart + UInt64(from),
                       into: UnsafeMutableRawBufferPointer(start: slotBase + from, count: windowSize - from))
        }
        cacheValidFrom[slot] = Int32(from)
        cacheValidTo[slot] = Int32(from + got)
    }

    /// `[start, start + size)` across the consecutive slots of its segment's windows, when every one
    /// of them could be read whole where the range covers it.
    func spannedContents(_ start: UInt64, _ size: UInt64, segment: Int) -> UnsafeRawPointer? {
        let first = start >> UInt64(windowShift)
        let last = (start &+ size &- 1) >> UInt64(windowShift)
        let segmentLast = (index.segmentEnds[segment] &- 1) >> UInt64(windowShift)
        guard last <= segmentLast, last > first || size > UInt64(windowSize >> 2) else { return nil }
        let firstSlot = slot(first, segment: segment)
        let startOffset = Int(start - (first << UInt64(windowShift)))
        let endOffset = Int((start &+ size) - (last << UInt64(windowShift)))
        for window in first...last {
            let slot = firstSlot + Int(window - first)
            if cacheTags[slot] != window &+ 1 { fill(slot, window: window, forBlockAt: start, segment: segment) }
            let from = Int(cacheValidFrom[slot]), to = Int(cacheValidTo[slot])
            if from > (window == first ? startOffset : 0) || to < (window == last ? endOffset : windowSize) { return nil }
        }
        return UnsafeRawPointer(cache + firstSlot << windowShift + startOffset)
    }

    // MARK: Reading ahead

    /// Starts the read-ahead thread, when the heap is big enough for it.
    func startReadingAhead() {
        guard windowFill != nil else { return }
        var handle = pthread_t()
        let rc = pthread_create(&handle, nil, { context in
            Unmanaged<ScanEngine>.fromOpaque(context!).takeUnretainedValue().readAhead()
            return nil
        }, Unmanaged.passUnretained(self).toOpaque())
        if rc == 0 { readAheadThread = handle }
    }

    /// Stops the read-ahead thread (if running) and counts what it read.
    func stopReadingAhead() {
        guard let thread = readAheadThread else { return }
        readAheadStop.pointee.store(true, ordering: .relaxed)
        pthread_join(thread, nil)
        readAheadThread = nil
        statistics.reads += readAheadReads
        statistics.bytesRead += readAheadBytes
        statistics.cpuSeconds += readAheadCPUSeconds
    }

    /// The read-ahead thread: reads every heap window the marking has not claimed, in address
    /// order. A window whose first byte is unreadable is handed back (the marking reads it from
    /// the block's page on, as without read-ahead).
    func readAhead() {
        guard let windowFill else { return }
        let cpuStart = LeakScanner.threadCPUSeconds()
        defer { readAheadCPUSeconds = LeakScanner.threadCPUSeconds() - cpuStart }
        var reads: UInt64 = 0
        var bytes: UInt64 = 0
        var segment = 0
        for slot in 0..<heapWindows {
            if readAheadStop.pointee.load(ordering: .relaxed) { break }
            while segment + 1 < index.segmentCount && segmentWindowBase[segment + 1] <= slot { segment += 1 }
            guard windowFill[slot].load(ordering: .relaxed) == WindowFill.empty,
                  windowFill[slot].compareExchange(expected: WindowFill.empty, desired: WindowFill.reading,
                                                   ordering: .acquiring).exchanged else { continue }
            let window = segmentFirstWindow[segment] + UInt64(slot - segmentWindowBase[segment])
            let got = readUncounted(window << UInt64(windowShift),
                                    into: UnsafeMutableRawBufferPointer(start: cache + slot << windowShift, count: windowSize))
            if got >= 0 { reads += 1 }
            if got <= 0 {
                windowFill[slot].store(WindowFill.empty, ordering: .releasing)
                continue
            }
            bytes += UInt64(got)
            cacheValidFrom[slot] = 0
            cacheValidTo[slot] = Int32(got)
            windowFill[slot].store(WindowFill.ready, ordering: .releasing)
        }
        readAheadReads = reads
        readAheadBytes = bytes
    }

    // MARK: Phase 1: reachability from the roots

    func push(_ i: Int) {
        if state[i] & BlockState.pending == 0 {
            markStack[markTop] = Int32(truncatingIfNeeded: i)
            markTop += 1
            state[i] |= BlockState.pending
        }
    }

    /// Valgrind's `lc_push_without_clique_if_a_chunk_ptr`.
    @inline(__always)
    func markPointer(_ pointer: UInt64, priorDefinite: Bool) {
        let i = index.lookup(pointer)
        if i < 0 { return }
        markBlock(i, pointer: pointer, priorDefinite: priorDefinite)
    }

    /// What `pointer`, found in a root or in a block of the given priority, does to block `i`, which
    /// it points at or into.
    @inline(__always)
    func markBlock(_ i: Int, pointer: UInt64, priorDefinite: Bool) {
        if state[i] & BlockState.partlyUnreadable != 0 && readableEnd(pointer) == nil { return }
        let current = state[i] & BlockState.mask
        if current == BlockState.reachable {
            if heuristic[i] != 0 && pointer == index.starts[i] { heuristic[i] = 0 }
            return
        }
        let viaStart: Bool
        if pointer == index.starts[i] {
            viaStart = true
        } else if heuristicsEnabled {
            let found = heuristicReachedness(pointer, block: i)
            heuristic[i] = found
            viaStart = found != 0
        } else {
            viaStart = false
        }
        if viaStart && priorDefinite {
            state[i] = (state[i] & ~BlockState.mask) | BlockState.reachable
            push(i)
        } else if current == BlockState.unreached {
            state[i] = (state[i] & ~BlockState.mask) | BlockState.possible
            push(i)
        }
    }

    func markWords(_ words: UnsafePointer<UInt64>, _ n: Int, priorDefinite: Bool) {
        let minStart = index.minStart
        let span = index.span
        for k in 0..<n {
            let word = UInt64(littleEndian: words[k])
            if word &- minStart < span { markPointer(word, priorDefinite: priorDefinite) }
        }
    }

    /// Marks what the roots point at (nothing is scanned yet: the blocks found are pushed).
    func markRoots(roots: [RootRegion], registerWords: [UInt64]) {
        guard count > 0 else { return }
        for region in roots where region.end > region.start {
            statistics.rootBytes += region.end - region.start
            streamWords(region.start, region.end) { words, n in markWords(words, n, priorDefinite: true) }
        }
        statistics.registerWords = registerWords.count
        for word in registerWords { markPointer(word, priorDefinite: true) }
    }

    /// Valgrind's `lc_process_markstack`: pops blocks and scans their contents.
    ///
    /// While marking from the roots, a possibly lost block is set aside (still pending) until the
    /// stack holds nothing else: a block first reached through an interior pointer is often reached
    /// through its start soon after (clang's arena slabs are), and scanning it once as reachable
    /// replaces scanning it as possibly lost and again after the upgrade. The states only rise, and
    /// every block is scanned in the state it has when it is taken, so the verdicts are the same
    /// fixpoint; on clang's heap this halves the words scanned.
    func processMarkStack(clique: Int) {
        processMarkStack(clique: clique, pointerList)
    }

    /// `pointerList` is the engine's own, passed in so that it is loaded once per call.
    func processMarkStack(clique: Int, _ pointerList: BlockPointers.List?) {
        while true {
            if markTop == 0 {
                guard clique < 0, deferredTop > 0 else { return }
                deferredTop -= 1
                scanPending(Int(deferred![deferredTop]), clique: clique, pointerList)
                continue
            }
            markTop -= 1
            let top = Int(markStack[markTop])
            if clique < 0 && state[top] & BlockState.mask == BlockState.possible {
                if deferred == nil { deferred = ScanMemory.allocate(Int32.self, count: count) }
                deferred![deferredTop] = Int32(truncatingIfNeeded: top)
                deferredTop += 1
                continue
            }
            scanPending(top, clique: clique, pointerList)
        }
    }

    /// Takes block `top` off the pending set and scans its words.
    @inline(__always)
    func scanPending(_ top: Int, clique: Int, _ pointerList: BlockPointers.List?) {
        state[top] &= ~BlockState.pending
        if let pointerList {
            if pointersPending[0] != 0 && (top < pointersPending[1] || top >= pointersPending[2]) { ensureFound(top) }
            if pointerList.found(top) {
                scanFoundPointers(top, clique: clique, pointerList)
                return
            }
        }
        do {
            let start = index.starts[top]
            // Valgrind scans [roundup(start, 8), rounddown(start + size, 8)).
            let first = (start &+ 7) & ~7
            let last = contentsEnd(top) & ~7
            guard first < last else { return }
            if clique < 0 {
                let priorDefinite = state[top] & BlockState.mask != BlockState.possible
                if let contents = cachedContents(first, last - first) {
                    let n = Int((last - first) >> 3)
                    statistics.wordsScanned += UInt64(n)
                    if allWindowsFit {
                        markWords(contents.assumingMemoryBound(to: UInt64.self), n, priorDefinite: priorDefinite)
                    } else {
                        blockScratch.copyMemory(from: contents, byteCount: n << 3)
                        markWords(blockScratch.assumingMemoryBound(to: UInt64.self), n, priorDefinite: priorDefinite)
                    }
                } else {
                    streamWords(first, last) { words, n in markWords(words, n, priorDefinite: priorDefinite) }
                }
            } else {
                if let contents = cachedContents(first, last - first) {
                    let n = Int((last - first) >> 3)
                    statistics.wordsScanned += UInt64(n)
                    cliqueWords(contents.assumingMemoryBound(to: UInt64.self), n, clique: clique, current: top)
                } else {
                    streamWords(first, last) { words, n in cliqueWords(words, n, clique: clique, current: top) }
                }
            }
        }
    }

    /// Where the words of block `i` end: its requested end, or glibc's usable end when the header
    /// says so, never past the next block's start.
    @inline(__always)
    func contentsEnd(_ i: Int) -> UInt64 {
        let start = index.starts[i]
        let size = self.size(i)
        let requestedEnd = start &+ size
        guard usesUsableSize else { return requestedEnd }
        // The header, the block and the next chunk's header are usually in one cached window: look
        // the window up once rather than once per header word.
        let span = size &+ 16 &+ GlibcChunk.arenaSlackLimit &+ 8
        let window = start >= 16 ? cachedContents(start &- 16, span) : nil
        let chunk = GlibcChunk.interpret(start: start, size: size) { address in
            if let window, address &- (start &- 16) <= span &- 8 {
                return UInt64(littleEndian: (window + Int(address &- (start &- 16))).loadUnaligned(as: UInt64.self))
            }
            return readWord(address)
        }
        guard let chunk else { return requestedEnd }
        var end = start &+ chunk.usableSize
        if i + 1 < count && end > index.starts[i + 1] { end = index.starts[i + 1] }
        if end > requestedEnd { statistics.slackBytesScanned &+= end - requestedEnd }
        return max(end, requestedEnd)
    }

    /// Scans block `top` from its pointers found beforehand: the same calls, in the same order, as
    /// scanning its words would make.
    @inline(__always)
    func scanFoundPointers(_ top: Int, clique: Int, _ blockPointers: BlockPointers.List) {
        let start = index.starts[top]
        let slack = blockPointers.slackBytes(top)
        statistics.slackBytesScanned &+= slack
        let first = (start &+ 7) & ~7
        let last = (start &+ size(top) &+ slack) & ~7
        guard first < last else { return }
        statistics.wordsScanned += (last - first) >> 3
        let (lo, hi) = blockPointers.range(top)
        var k = lo
        if clique < 0 {
            let priorDefinite = state[top] & BlockState.mask != BlockState.possible
            while k < hi {
                let (target, offset) = blockPointers.entry(at: &k)
                // Most pointers are into blocks already reachable: all markBlock would do is clear
                // a heuristic on a start pointer (a partly unreadable block takes the long way).
                if state[target] & (BlockState.mask | BlockState.partlyUnreadable) == BlockState.reachable {
                    if offset == 0 && heuristic[target] != 0 { heuristic[target] = 0 }
                    continue
                }
                // The block's pointers into itself were reduced to the last into its interior (and
                // those to its start): while it is scanned its state does not change, and the only
                // thing such a pointer does is set its heuristic (when it is possibly lost) or clear
                // it (a start pointer, when it is reachable), so the last interior one decides.
                markBlock(target, pointer: index.starts[target] &+ UInt64(offset), priorDefinite: priorDefinite)
            }
        } else {
            while k < hi {
                let (target, offset) = blockPointers.entry(at: &k)
                if state[target] & BlockState.mask != BlockState.unreached { continue }  // as cliqueBlock
                cliqueBlock(target, pointer: index.starts[target] &+ UInt64(offset), clique: clique, current: top)
            }
        }
    }

    // MARK: Phase 2: cliques of lost blocks

    /// Valgrind's `lc_push_with_clique_if_a_chunk_ptr`.
    func cliqueWords(_ words: UnsafePointer<UInt64>, _ n: Int, clique: Int, current: Int) {
        let minStart = index.minStart
        let span = index.span
        for k in 0..<n {
            let word = UInt64(littleEndian: words[k])
            if word &- minStart >= span { continue }
            let i = index.lookup(word)
            if i >= 0 { cliqueBlock(i, pointer: word, clique: clique, current: current) }
        }
    }

    /// What `pointer`, found in block `current` while gathering the clique led by `clique`, does to
    /// block `i`, which it points at or into.
    @inline(__always)
    func cliqueBlock(_ i: Int, pointer: UInt64, clique: Int, current: Int) {
        if i == clique || state[i] & BlockState.mask != BlockState.unreached { return }
        if state[i] & BlockState.partlyUnreadable != 0 && readableEnd(pointer) == nil { return }
        // An unreached block below the current leader is an earlier leader: it was scanned when
        // its own clique was gathered, and everything unreached that it reaches joined that
        // clique then. Valgrind pushes it again, but that rescan can only find blocks that are
        // no longer unreached, so skipping it gives the same result at half the cost on a lost
        // list built by prepending.
        if i > clique { push(i) }
        let indirectBytes = self.indirectBytes!
        indirectBytes[clique] &+= size(i) &+ indirectBytes[i]
        indirectBytes[i] = 0
        state[i] = (state[i] & ~BlockState.mask) | BlockState.indirect
        parent![i] = Int32(truncatingIfNeeded: current)
        leader![i] = Int32(truncatingIfNeeded: clique)
    }

    /// Phase 2: the cliques of the blocks still unreached, in address order. Returns every block's
    /// clique parent and indirect bytes; both empty when no block is lost.
    func gatherCliques() -> LostBlocks {
        guard let firstUnreached = (0..<count).first(where: { state[$0] & BlockState.mask == BlockState.unreached }) else {
            return LostBlocks(parents: [], charged: [], leaders: [])
        }
        // The result's own arrays, written in place: a block's parent is set once, when it joins a
        // clique, and only a leader still definitely lost at the end keeps indirect bytes (an
        // absorbed leader's are moved to its new leader).
        var parents = [Int32](repeating: -1, count: count)
        var charged = [UInt64](repeating: 0, count: count)
        var leaders = [Int32](repeating: -1, count: count)
        parents.withUnsafeMutableBufferPointer { parents in
            charged.withUnsafeMutableBufferPointer { charged in
                leaders.withUnsafeMutableBufferPointer { leaders in
                    parent = parents.baseAddress
                    indirectBytes = charged.baseAddress
                    leader = leaders.baseAddress
                    let pointerList = self.pointerList
                    for i in firstUnreached..<count where state[i] & BlockState.mask == BlockState.unreached {
                        push(i)
                        processMarkStack(clique: i, pointerList)
                    }
                    parent = nil
                    indirectBytes = nil
                    leader = nil
                }
            }
        }
        return LostBlocks(parents: parents, charged: charged, leaders: leaders)
    }

    /// What phase 2 found, per block: ``ScanResult/parentOf``, ``ScanResult/indirectBytesCharged``
    /// and the leader of the clique it joined (made ``ScanResult/leaderOf`` by ``result(lost:)``).
    struct LostBlocks {
        var parents: [Int32]
        var charged: [UInt64]
        var leaders: [Int32]
    }

    // MARK: Heuristics (Valgrind's heuristic_reachedness)

    func heuristicReachedness(_ pointer: UInt64, block i: Int) -> UInt8 {
        // Most blocks' facts were found with their pointers: then nothing needs reading.
        if let pointerList, let facts = knownFacts(i, pointerList) {
            return heuristicReachedness(pointer, block: i, facts: facts, pointerList)
        }
        let start = index.starts[i]
        let size = self.size(i)
        let heuristics = configuration.heuristics
        if heuristics.contains(.stdString), pointer == start &+ 24, let capacity = heuristicWord(start &+ 8) {
            // length, capacity, refcount, chars[capacity + 1]
            if 24 &+ capacity &+ 1 == size, let length = heuristicWord(start), length <= capacity {
                return LeakHeuristic.stdString.rawValue
            }
        }
        if heuristics.contains(.length64), pointer == start &+ 8, let remaining = heuristicWord(start) {
            if remaining > 0 && size &- 8 == remaining { return LeakHeuristic.length64.rawValue }
        }
        if heuristics.contains(.newArray), pointer == start &+ 8, let elements = heuristicWord(start) {
            if elements > 0 && (size &- 8) % elements == 0 { return LeakHeuristic.newArray.rawValue }
        }
        // The same conditions as Valgrind's, in the order that rejects most interior pointers
        // soonest: the block's first word (known once per block), then the word pointed at.
        if heuristics.contains(.multipleInheritance), pointer & 7 == 0, firstWordIsVtableAddress(i),
           let inner = heuristicWord(pointer), inner & 7 == 0, inner >= 4096, isVtableAddress(inner) {
            return LeakHeuristic.multipleInheritance.rawValue
        }
        return 0
    }

    /// A word of a block read for a heuristic (counted: ``ScanStatistics/heuristicWordsRead``).
    func heuristicWord(_ address: UInt64) -> UInt64? {
        statistics.heuristicWordsRead &+= 1
        return readWord(address)
    }

    /// The multipleinheritance condition on block `i`'s first word (aligned, above page 0, a vtable
    /// address), worked out once per block: the heap is frozen, and a block that is not a C++ object
    /// (an arena slab) may receive millions of interior pointers. Valgrind tests this word after
    /// the pointed-at one; both must hold, so the order does not change the verdict.
    @inline(__always)
    func firstWordIsVtableAddress(_ i: Int) -> Bool {
        let known = state[i]
        if known & BlockState.firstWordChecked != 0 { return known & BlockState.firstWordIsVtable != 0 }
        var answer = false
        if let first = heuristicWord(index.starts[i]), first & 7 == 0, first >= 4096, isVtableAddress(first) {
            answer = true
        }
        state[i] |= BlockState.firstWordChecked | (answer ? BlockState.firstWordIsVtable : 0)
        return answer
    }

    func fileMapping(containing address: UInt64) -> FileRange? {
        var lo = 0
        var hi = fileRanges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if fileRanges[mid].end <= address { lo = mid + 1 } else { hi = mid }
        }
        return lo < fileRanges.count && fileRanges[lo].start <= address ? fileRanges[lo] : nil
    }

    /// Valgrind's `aligned_ptr_above_page0_is_vtable_addr`: `address` lies in a readable file-backed
    /// mapping, and among the words from `address` (up to 21 of them, stopping before the last word of
    /// that mapping) the first two non-null ones point into executable file-backed mappings, with no
    /// non-null word before them pointing elsewhere.
    func isVtableAddress(_ address: UInt64) -> Bool {
        // Most candidates are heap addresses: a binary search over the few file mappings rejects
        // them without hashing into the memo.
        guard let mapping = fileMapping(containing: address), mapping.isReadable else { return false }
        if let known = vtableMemo[address] { return known }
        let answer = vtableTest(words: vtableWordCount(address, in: mapping)) { k in readWord(address &+ UInt64(k) * 8) }
        if vtableMemo.count < 1 << 16 { vtableMemo[address] = answer }
        return answer
    }

    // MARK: Result

    /// The result: the kinds and heuristics written once each, the leaders resolved in place.
    /// Nothing else is allocated: with millions of blocks every fresh page counts (a page
    /// fault costs 4-6 µs on the test machine), and the clique arrays are the result's already.
    func result(lost: inout LostBlocks) -> ScanResult {
        let state = self.state, heuristic = self.heuristic, count = self.count
        let kinds = [LeakKind](unsafeUninitializedCapacity: count) { buffer, initialized in
            for i in 0..<count {
                let kind: LeakKind = switch state[i] & BlockState.mask {
                case BlockState.reachable: .stillReachable
                case BlockState.possible: .possiblyLost
                case BlockState.indirect: .indirectlyLost
                default: .definitelyLost
                }
                buffer.initializeElement(at: i, to: kind)
            }
            initialized = count
        }
        let heuristics = [LeakHeuristic?](unsafeUninitializedCapacity: count) { buffer, initialized in
            for i in 0..<count {
                let reachable = state[i] & BlockState.mask == BlockState.reachable
                buffer.initializeElement(at: i, to: reachable ? LeakHeuristic(rawValue: heuristic[i]) : nil)
            }
            initialized = count
        }
        // Each indirect block's final leader. A block joined the clique of the leader gathering it;
        // that leader may itself have been absorbed later by a higher one (only earlier leaders are
        // absorbed, and only unreached blocks above a leader join it as members). So: absorbed
        // leaders from the top down (each one's absorber is above it, already final), then members
        // from the bottom up (each one's leader is below it, already final). Two sweeps instead of
        // following parent links, whose chain of dependent loads cost 38 ms on a 4M-block lost list.
        lost.leaders.withUnsafeMutableBufferPointer { leaders in
            for x in stride(from: leaders.count - 1, through: 0, by: -1) where Int(leaders[x]) > x {
                let absorber = Int(leaders[x])
                if leaders[absorber] >= 0 { leaders[x] = leaders[absorber] }
            }
            for x in 0..<leaders.count where leaders[x] >= 0 && Int(leaders[x]) < x {
                let first = Int(leaders[x])
                if leaders[first] >= 0 { leaders[x] = leaders[first] }
            }
        }
        return ScanResult(kinds: kinds, indirectBytesCharged: lost.charged, leaderOf: lost.leaders, parentOf: lost.parents,
                          heuristics: heuristics, statistics: statistics)
    }
}
