#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// The pointers in every block's contents, found before the marking starts, on several threads.
///
/// Marking is order-dependent only in what it does with a pointer (Valgrind's heuristics, the
/// set-aside of possibly lost blocks, the cliques), never in which words are pointers into which
/// block: that depends on the frozen memory alone. So the expensive part of a scan, reading every
/// block and looking each of its words up in the ``BlockIndex``, is done first, for all blocks at
/// once, by every core (the process is stopped, its cores are free): each thread takes chunks of
/// consecutive blocks, reads them into a small buffer of its own and writes down, per block, the
/// words that hit a block, in word order. The marking then runs on one thread exactly as before,
/// taking a block's pointers from this list instead of its words from memory, so every verdict,
/// heuristic and clique is the one the word-by-word scan gives (`PrefilterTests`).
///
/// Every block is scanned at least once by the sequential scan anyway (a block not reached from the
/// roots is scanned when its clique is gathered), so reading them all up front wastes nothing.
/// Blocks are read once and in address order, into a buffer that stays in the core's cache, instead
/// of into a copy of the whole heap whose first touch alone (a page fault per 4 KiB) cost more than
/// the copying.
///
/// A block this cannot describe is marked ``notFound`` and scanned word by word, as before: one
/// whose contents could not all be read (an unreadable page, a failing read), or one holding a
/// pointer more than 4 GiB into a block.
///
/// Memory is what this costs: on the test machine every fresh 4 KiB page costs 4-6 µs to fault in,
/// as much as scanning a few thousand words, so the list is kept small. A pointer is one 32-bit
/// entry, `target << offsetBits | offset`, when its offset into the target fits in the bits the
/// block count leaves (17 for clang's 14,535 blocks, 9 for 4 million); else two entries, the
/// target with the top bit set, then the offset. A block's pointers into itself are not listed,
/// but for the last that points into its interior (and every one to its start): a pointer into
/// the block being scanned can only change that block's heuristic, and only the last one does
/// (`ScanEngine.scanFoundPointers`).
final class BlockPointers {
    /// `slack` value of a block whose pointers were not found here.
    static let notFound: UInt16 = 0x8000
    /// `slack` bit: the block is the first of its chunk (its pointers start at its chunk's base).
    static let chunkFirst: UInt16 = 0x4000
    static let slackMask: UInt16 = 0x3FFF

    let count: Int
    /// Per block: the end of its pointers in `pointers` (they start where the previous block's end,
    /// or at its chunk's base for a chunk's first block).
    let ends: UnsafeMutablePointer<UInt32>
    /// Per block: its contents' end minus its requested end (glibc's slack, < 8 KiB), with the
    /// ``chunkFirst`` and ``notFound`` bits.
    let slack: UnsafeMutablePointer<UInt16>
    /// Room for two entries per word of every block: each chunk writes into its own part, so
    /// untouched pages cost nothing.
    let pointers: UnsafeMutablePointer<UInt32>
    let capacity: Int
    /// Bits of an entry that hold the offset; the target is above them.
    let offsetBits: UInt32
    /// An entry with this bit is a target whose offset is in the next entry.
    static let longEntry: UInt32 = 0x8000_0000
    /// Per chunk (plus a sentinel): its first block, and the start of its part of `pointers`.
    let chunkFirstBlock: UnsafeMutablePointer<Int>
    let chunkBase: UnsafeMutablePointer<Int>
    let chunkCount: Int
    /// The next chunk to take.
    let nextChunk: UnsafeMutablePointer<Atomic<Int>>
    /// Per chunk: ``ChunkState``. A thread works on a chunk only after claiming it, so the marking
    /// can take a chunk it needs before the other threads come to it.
    let chunkStates: UnsafeMutablePointer<Atomic<UInt8>>
    /// Chunks whose pointers are all found.
    let chunksDone: UnsafeMutablePointer<Atomic<Int>>
    /// Per block: what the heuristics ask of its own words (``HeuristicFacts``), worked out with
    /// its pointers; 0 for most blocks, whose pages are then never touched.
    let facts: UnsafeMutablePointer<UInt8>
    /// One bit per word of a block whose first word is a vtable address: set when the word could
    /// be one too (the multipleinheritance heuristic's `word(p)`). Each chunk has its own part,
    /// starting at `chunkBitBase`, a whole number of 64-bit words, so threads never share one.
    let vtableWords: UnsafeMutablePointer<UInt64>
    let chunkBitBase: UnsafeMutablePointer<Int>
    enum ChunkState {
        static let unclaimed: UInt8 = 0
        static let claimed: UInt8 = 1
        static let done: UInt8 = 2
    }

    /// Bytes of heap per chunk: small enough for the threads to share the work evenly, large
    /// enough that a chunk is a few big reads.
    static let chunkBytes: UInt64 = 512 << 10
    /// Bytes each thread reads at once (its buffer stays in the core's L2 cache).
    static let bufferBytes = 512 << 10
    /// Beyond a block's requested end, where the contents may end (glibc's slack of an mmapped
    /// chunk is less than two pages) and the next chunk's size word lies.
    static let slackBound: UInt64 = 2 * GlibcChunk.pageSize

    /// nil when the blocks' words cannot be described in 32-bit indices, or the room cannot be
    /// mapped (the caller then scans word by word).
    init?(index: BlockIndex) {
        count = index.count
        // Chunks of consecutive blocks, cut where a block starts `chunkBytes` or more after the
        // chunk's first (found by binary search: no pass over every block). A block's contents end
        // at most `slackBound` past its requested end and never past the next block's start, so a
        // chunk's words lie in its span plus `slackBound`; each takes at most two entries.
        var chunkFirstBlock: [Int] = []
        var chunkBase: [Int] = []
        var total = 0
        var first = 0
        while first < count {
            let limit = index.starts[first] &+ Self.chunkBytes
            var lo = first + 1
            var hi = count
            if limit < index.starts[first] { lo = count }  // the chunk reaches the top of the address space
            while lo < hi {
                let mid = (lo + hi) >> 1
                if index.starts[mid] < limit { lo = mid + 1 } else { hi = mid }
            }
            let end = index.ends[lo - 1] &+ Self.slackBound
            if end < index.ends[lo - 1] { return nil }
            chunkFirstBlock.append(first)
            chunkBase.append(total)
            total += 2 * (Int((end &- index.starts[first]) >> 3) + 1)
            if total > Int(UInt32.max) { return nil }
            first = lo
        }
        chunkFirstBlock.append(count)
        chunkBase.append(total)
        guard let room = ScanMemory.reserve(UInt32.self, count: total) else { return nil }
        // A chunk's words are at most half its entries (two per word, plus one).
        var bitBase: [Int] = []
        var bits = 0
        for c in 0..<chunkFirstBlock.count - 1 {
            bitBase.append(bits)
            bits += ((chunkBase[c + 1] - chunkBase[c]) / 2 + 63) & ~63
        }
        bitBase.append(bits)
        guard let wordBits = ScanMemory.reserve(UInt64.self, count: bits / 64),
              let facts = ScanMemory.reserve(UInt8.self, count: count) else {
            ScanMemory.deallocate(room, count: total)
            return nil
        }
        vtableWords = wordBits
        vtableWordCount = bits / 64
        self.facts = facts
        chunkBitBase = .allocate(capacity: bitBase.count)
        chunkBitBase.initialize(from: bitBase, count: bitBase.count)
        pointers = room
        capacity = total
        var targetBits: UInt32 = 1
        while targetBits < 31 && (1 << targetBits) < count { targetBits += 1 }
        offsetBits = 31 - targetBits
        chunkCount = chunkFirstBlock.count - 1
        self.chunkFirstBlock = .allocate(capacity: chunkFirstBlock.count)
        self.chunkFirstBlock.initialize(from: chunkFirstBlock, count: chunkFirstBlock.count)
        self.chunkBase = .allocate(capacity: chunkBase.count)
        self.chunkBase.initialize(from: chunkBase, count: chunkBase.count)
        ends = ScanMemory.allocate(UInt32.self, count: count)
        slack = ScanMemory.allocate(UInt16.self, count: count)
        for c in 0..<chunkCount { slack[chunkFirstBlock[c]] = Self.chunkFirst }
        nextChunk = .allocate(capacity: 1)
        nextChunk.initialize(to: Atomic(0))
        chunkStates = .allocate(capacity: max(chunkCount, 1))
        for c in 0..<max(chunkCount, 1) { (chunkStates + c).initialize(to: Atomic(ChunkState.unclaimed)) }
        chunksDone = .allocate(capacity: 1)
        chunksDone.initialize(to: Atomic(0))
    }

    let vtableWordCount: Int

    deinit {
        ScanMemory.deallocate(pointers, count: capacity)
        ScanMemory.deallocate(facts, count: count)
        ScanMemory.deallocate(vtableWords, count: vtableWordCount)
        chunkBitBase.deallocate()
        ScanMemory.deallocate(ends, count: count)
        ScanMemory.deallocate(slack, count: count)
        nextChunk.deinitialize(count: 1)
        nextChunk.deallocate()
        chunkStates.deinitialize(count: max(chunkCount, 1))
        chunkStates.deallocate()
        chunksDone.deinitialize(count: 1)
        chunksDone.deallocate()
        chunkFirstBlock.deallocate()
        chunkBase.deallocate()
    }

    /// Takes chunk `c` for this thread; false when another thread has.
    @inline(__always)
    func claim(_ c: Int) -> Bool {
        chunkStates[c].load(ordering: .relaxed) == ChunkState.unclaimed
            && chunkStates[c].compareExchange(expected: ChunkState.unclaimed, desired: ChunkState.claimed,
                                              ordering: .relaxed).exchanged
    }

    /// Publishes chunk `c`'s pointers (its entries, ends and slack) to the other threads.
    @inline(__always)
    func finish(_ c: Int) {
        chunkStates[c].store(ChunkState.done, ordering: .releasing)
        chunksDone.pointee.wrappingAdd(1, ordering: .releasing)
    }

    @inline(__always)
    func isDone(_ c: Int) -> Bool { chunkStates[c].load(ordering: .acquiring) == ChunkState.done }

    var allDone: Bool { chunksDone.pointee.load(ordering: .acquiring) == chunkCount }

    /// The chunk holding block `i`.
    func chunk(of i: Int) -> Int { list.chunk(of: i) }

    /// The list as the marking reads it.
    var list: List {
        List(ends: ends, slack: slack, pointers: pointers, offsetBits: offsetBits, chunkFirstBlock: chunkFirstBlock,
             chunkBase: chunkBase, chunkCount: chunkCount, facts: facts, vtableWords: vtableWords, chunkBitBase: chunkBitBase)
    }
}

extension BlockPointers {
    /// The found pointers as a plain value: the marking takes it per block, and a reference would
    /// be retained and released around every block's scan (measured: 7 % of a 4M-block lost list's
    /// clique phase).
    struct List {
        let ends: UnsafeMutablePointer<UInt32>
        let slack: UnsafeMutablePointer<UInt16>
        let pointers: UnsafeMutablePointer<UInt32>
        let offsetBits: UInt32
        let chunkFirstBlock: UnsafeMutablePointer<Int>
        let chunkBase: UnsafeMutablePointer<Int>
        let chunkCount: Int
        let facts: UnsafeMutablePointer<UInt8>
        let vtableWords: UnsafeMutablePointer<UInt64>
        let chunkBitBase: UnsafeMutablePointer<Int>

        /// The chunk holding block `i`.
        @inline(__always)
        func chunk(of i: Int) -> Int {
            var lo = 0
            var up = chunkCount
            while up - lo > 1 {
                let mid = (lo + up) >> 1
                if chunkFirstBlock[mid] <= i { lo = mid } else { up = mid }
            }
            return lo
        }

        /// Whether block `i`'s pointers were found (else it is scanned word by word).
        @inline(__always)
        func found(_ i: Int) -> Bool { slack[i] & BlockPointers.notFound == 0 }

        /// Block `i`'s contents end minus its requested end.
        @inline(__always)
        func slackBytes(_ i: Int) -> UInt64 { UInt64(slack[i] & BlockPointers.slackMask) }

        /// The pointer whose entry is at `k` (its target block and its offset there); moves `k` past it.
        @inline(__always)
        func entry(at k: inout Int) -> (target: Int, offset: UInt32) {
            let entry = pointers[k]
            if entry & BlockPointers.longEntry == 0 {
                k &+= 1
                return (Int(truncatingIfNeeded: entry >> offsetBits), entry & ((1 << offsetBits) &- 1))
            }
            k &+= 2
            return (Int(truncatingIfNeeded: entry & ~BlockPointers.longEntry), pointers[k &- 1])
        }

        /// Block `i`'s pointers, `lo..<hi` in `pointers`.
        @inline(__always)
        func range(_ i: Int) -> (lo: Int, hi: Int) {
            let hi = Int(ends[i])
            if slack[i] & BlockPointers.chunkFirst == 0 { return (Int(ends[i - 1]), hi) }
            // The first block of a chunk: find the chunk (once per chunk of many blocks).
            return (chunkBase[chunk(of: i)], hi)
        }
    }
}

/// One thread's part of finding the pointers: its buffer and what it read.
struct PointerFinder {
    let buffer: UnsafeMutableRawPointer
    let capacity: Int
    /// The process's bytes `[bufferStart, bufferStart + valid)` are in `buffer`.
    var bufferStart: UInt64 = 0
    var valid: Int = 0
    var reads: UInt64 = 0
    var bytesRead: UInt64 = 0
    var blocksFound = 0
    /// The block the last pointer found was into: `[hitStart, hitEnd)`, index `hitIndex`.
    var hitStart: UInt64 = 0
    var hitEnd: UInt64 = 0
    var hitIndex: UInt32 = 0
    /// The offset of the last pointer into its own interior found in the block being scanned (0: none).
    var lastSelfOffset: UInt64 = 0
    /// The last gap between file mappings a word was found in, `[fileGapStart, fileGapEnd)`: most
    /// first words are heap pointers, in the same gap as the one before (``ScanEngine/mayBeInReadableFile``).
    var fileGapStart: UInt64 = 0
    var fileGapEnd: UInt64 = 0
    /// This thread's answers of ``ScanEngine/isVtableAddress(_:)``, per address, and the latest
    /// ones in a small table in front (``ScanEngine/isVtableWord(_:_:)``).
    var vtables: [UInt64: Bool] = [:]
    let recentVtables: UnsafeMutablePointer<UInt64>

    init() {
        capacity = BlockPointers.bufferBytes
        buffer = .allocate(byteCount: capacity, alignment: 64)
        recentVtables = .allocate(capacity: 256)
        recentVtables.initialize(repeating: 0, count: 256)
    }

    func deallocate() {
        buffer.deallocate()
        recentVtables.deallocate()
    }

    /// Whether `[from, to)` is in the buffer.
    @inline(__always)
    func holds(_ from: UInt64, _ to: UInt64) -> Bool {
        from >= bufferStart && to <= bufferStart &+ UInt64(valid)
    }

    @inline(__always)
    func word(at address: UInt64) -> UInt64 {
        UInt64(littleEndian: (buffer + Int(address &- bufferStart)).loadUnaligned(as: UInt64.self))
    }
}

/// The work of finding the pointers, shared by the threads that do it.
private final class PointerJob {
    unowned let engine: ScanEngine
    let pointers: BlockPointers
    let blocks: UnsafeBufferPointer<ScanBlock>
    let reads = Atomic<UInt64>(0)
    let bytesRead = Atomic<UInt64>(0)
    let blocksFound = Atomic<Int>(0)
    /// CPU time of the helper threads, in nanoseconds.
    let helperNanoseconds = Atomic<UInt64>(0)

    init(engine: ScanEngine, pointers: BlockPointers, blocks: UnsafeBufferPointer<ScanBlock>) {
        self.engine = engine
        self.pointers = pointers
        self.blocks = blocks
    }

    /// Takes chunks until none is left.
    func work() {
        var finder = PointerFinder()
        defer { finder.deallocate() }
        while takeChunk(&finder) {}
        add(finder)
    }

    /// Finds the pointers of the next chunk not taken yet; false when there is none.
    func takeChunk(_ finder: inout PointerFinder) -> Bool {
        while true {
            let chunk = pointers.nextChunk.pointee.wrappingAdd(1, ordering: .relaxed).oldValue
            if chunk >= pointers.chunkCount { return false }
            guard pointers.claim(chunk) else { continue }  // the marking needed it first
            engine.findPointers(chunk: chunk, pointers, blocks: blocks, finder: &finder)
            pointers.finish(chunk)
            return true
        }
    }

    func add(_ finder: PointerFinder) {
        reads.wrappingAdd(finder.reads, ordering: .relaxed)
        bytesRead.wrappingAdd(finder.bytesRead, ordering: .relaxed)
        blocksFound.wrappingAdd(finder.blocksFound, ordering: .relaxed)
    }
}

/// What the marking thread keeps while other threads still find pointers (``ScanEngine/ensureFound(_:)``).
final class PointerHelpers {
    fileprivate let job: PointerJob
    let threads: [pthread_t]
    /// The marking thread's own buffer, for the chunks it finds itself.
    var finder = PointerFinder()

    fileprivate init(job: PointerJob, threads: [pthread_t]) {
        self.job = job
        self.threads = threads
    }
}

extension ScanEngine {
    /// Marks from the roots on this thread while the other threads find the blocks' pointers, then
    /// helps them: marking from the roots only pushes blocks (none is scanned before every root
    /// is), so it needs no pointers yet. Returns when every block's pointers are found.
    func markRootsFindingPointers(_ pointers: BlockPointers, blocks: UnsafeBufferPointer<ScanBlock>,
                                  roots: [RootRegion], registerWords: [UInt64]) {
        let job = PointerJob(engine: self, pointers: pointers, blocks: blocks)
        var heapBytes: UInt64 = 0
        for segment in 0..<index.segmentCount { heapBytes &+= index.segmentEnds[segment] &- index.segmentStarts[segment] }
        let threads = heapBytes >= UInt64(configuration.pointerThreadsMinimumBytes) ? configuration.pointerThreads : 1
        var helpers: [pthread_t] = []
        for _ in 1..<max(threads, 1) {
            var handle = pthread_t()
            let context = Unmanaged.passRetained(job).toOpaque()
            let rc = pthread_create(&handle, nil, { context in
                let job = Unmanaged<PointerJob>.fromOpaque(context!).takeRetainedValue()
                let cpuStart = LeakScanner.threadCPUSeconds()
                job.work()
                let seconds = LeakScanner.threadCPUSeconds() - cpuStart
                job.helperNanoseconds.wrappingAdd(UInt64(max(seconds, 0) * 1e9), ordering: .relaxed)
                return nil
            }, context)
            if rc == 0 {
                helpers.append(handle)
            } else {
                Unmanaged<PointerJob>.fromOpaque(context).release()
            }
        }
        if helpers.isEmpty {
            // Alone, this thread finds every block's pointers first: then the heuristics read
            // nothing while the roots are marked either (``HeuristicFacts``).
            job.work()
            addStatistics(of: job)
            pointersPending[3] = 1
            markRoots(roots: roots, registerWords: registerWords)
        } else {
            // The marking starts now: it finds the pointers of a block it needs whose chunk no
            // thread has taken yet, and the helpers go on with the rest meanwhile (the marking is
            // serial, so both cores stay busy).
            pointerHelpers = PointerHelpers(job: job, threads: helpers)
            pointersPending[0] = 1
            markRoots(roots: roots, registerWords: registerWords)
        }
    }

    /// Before block `i` is scanned from the list: makes sure its chunk's pointers are found (by
    /// finding them on this thread if no thread has taken its chunk yet, or, while another thread
    /// finishes it, finding those of a chunk not taken yet).
    @inline(never)
    func ensureFound(_ i: Int) {
        guard let helpers = pointerHelpers, let pointers = blockPointers else { return }
        let chunk = pointers.chunk(of: i)
        while !pointers.isDone(chunk) {
            if pointers.claim(chunk) {
                findPointers(chunk: chunk, pointers, blocks: helpers.job.blocks, finder: &helpers.finder)
                pointers.finish(chunk)
                break
            }
            if !helpers.job.takeChunk(&helpers.finder) { sched_yield() }
        }
        pointersPending[1] = pointers.chunkFirstBlock[chunk]
        pointersPending[2] = pointers.chunkFirstBlock[chunk + 1]
        if pointers.allDone { stopPointerHelpers() }
    }

    /// Whether block `i`'s chunk is done, after finding its pointers on this thread if no thread
    /// has taken it yet: someone must find them, and then no heuristic reads a word of its blocks.
    /// False while another thread is on it (the heuristics then read what they need).
    @inline(never)
    func findFacts(of i: Int, _ list: BlockPointers.List) -> Bool {
        guard let pointers = blockPointers else { return false }
        let chunk = list.chunk(of: i)
        if pointers.isDone(chunk) { return true }
        guard let helpers = pointerHelpers, pointers.claim(chunk) else { return false }
        findPointers(chunk: chunk, pointers, blocks: helpers.job.blocks, finder: &helpers.finder)
        pointers.finish(chunk)
        if pointers.allDone { stopPointerHelpers() }
        return true
    }

    /// Joins the helper threads (they are done or finishing their last chunk) and counts what
    /// every thread read.
    func stopPointerHelpers() {
        guard let helpers = pointerHelpers else { return }
        pointerHelpers = nil
        pointersPending[0] = 0
        for handle in helpers.threads { pthread_join(handle, nil) }
        // Every chunk was claimed (the helpers stop when none is left) and is done.
        pointersPending[3] = 1
        helpers.job.add(helpers.finder)
        helpers.finder.deallocate()
        addStatistics(of: helpers.job)
    }

    private func addStatistics(of job: PointerJob) {
        statistics.reads &+= job.reads.load(ordering: .relaxed)
        statistics.bytesRead &+= job.bytesRead.load(ordering: .relaxed)
        statistics.blocksWithPointersFound = job.blocksFound.load(ordering: .relaxed)
        statistics.cpuSeconds += Double(job.helperNanoseconds.load(ordering: .relaxed)) / 1e9
    }

    /// Finds the pointers of the blocks of one chunk, reading them through `finder`'s buffer.
    /// Touches nothing the marking thread uses meanwhile: only this chunk's entries of `pointers`.
    func findPointers(chunk: Int, _ pointers: BlockPointers, blocks: UnsafeBufferPointer<ScanBlock>,
                      finder: inout PointerFinder) {
        let firstBlock = pointers.chunkFirstBlock[chunk]
        let endBlock = pointers.chunkFirstBlock[chunk + 1]
        // How far this chunk's reads may usefully go: its last block's contents and the next
        // chunk's header, never into the next chunk's blocks' far side.
        var readLimit = index.ends[endBlock - 1] &+ BlockPointers.slackBound
        if endBlock < count && readLimit > index.starts[endBlock] &+ 16 { readLimit = index.starts[endBlock] &+ 16 }
        let capacity = UInt64(finder.capacity)
        var out = pointers.chunkBase[chunk]
        for i in firstBlock..<endBlock {
            let begin = out
            let start = blocks[i].address
            let size = blocks[i].size
            let requestedEnd = start &+ size
            var contentsEnd = requestedEnd
            if usesUsableSize {
                // The header, the block and the next chunk's header, usually in the buffer already.
                let headerEnd = requestedEnd &+ GlibcChunk.arenaSlackLimit &+ 16
                if start >= 16 && size < capacity / 2 && !finder.holds(start &- 16, headerEnd) {
                    fill(&finder, from: start &- 16, atLeast: headerEnd, limit: readLimit)
                }
                let glibc = GlibcChunk.interpret(start: start, size: size) { word(at: $0, &finder) }
                if let glibc {
                    var end = start &+ glibc.usableSize
                    if i + 1 < count && end > index.starts[i + 1] { end = index.starts[i + 1] }
                    contentsEnd = max(end, requestedEnd)
                }
            }
            // Valgrind scans [roundup(start, 8), rounddown(end, 8)).
            let first = (start &+ 7) & ~7
            let last = contentsEnd & ~7
            var complete = true
            finder.lastSelfOffset = 0
            var facts: UInt8 = 0
            let bitBase = pointers.chunkBitBase[chunk]
            let chunkStart = index.starts[firstBlock]
            if first < last {
                if last &- first <= capacity {
                    if !finder.holds(first, last) { fill(&finder, from: first, atLeast: last, limit: readLimit) }
                    if finder.holds(first, last) {
                        let words = (finder.buffer + Int(first &- finder.bufferStart)).assumingMemoryBound(to: UInt64.self)
                        complete = collect(words, Int((last &- first) >> 3), from: i, into: pointers.pointers,
                                           offsetBits: pointers.offsetBits, at: &out, finder: &finder)
                        if heuristicsEnabled {
                            facts = heuristicFacts(start: start, size: size, &finder)
                            if facts & HeuristicFacts.firstWordIsVtable != 0 {
                                markVtableWords(words, Int((last &- first) >> 3), from: first, into: pointers.vtableWords,
                                                bit: bitBase &+ Int((first &- chunkStart) >> 3), &finder)
                            }
                        }
                    } else {
                        complete = false
                    }
                } else {
                    if heuristicsEnabled { facts = heuristicFacts(start: start, size: size, &finder) }
                    // A block bigger than the buffer: streamed through it.
                    var address = first
                    while address < last && complete {
                        let want = Int(min(capacity, last &- address))
                        let got = readUncounted(address, into: UnsafeMutableRawBufferPointer(start: finder.buffer, count: want))
                        if got >= 0 { finder.reads &+= 1 }
                        finder.bytesRead &+= UInt64(max(got, 0))
                        finder.bufferStart = address
                        finder.valid = max(got, 0)
                        guard got == want else { complete = false; break }
                        complete = collect(finder.buffer.assumingMemoryBound(to: UInt64.self), want >> 3, from: i,
                                           into: pointers.pointers, offsetBits: pointers.offsetBits, at: &out,
                                           finder: &finder)
                        if facts & HeuristicFacts.firstWordIsVtable != 0 {
                            markVtableWords(finder.buffer.assumingMemoryBound(to: UInt64.self), want >> 3, from: address,
                                            into: pointers.vtableWords, bit: bitBase &+ Int((address &- chunkStart) >> 3), &finder)
                        }
                        address &+= UInt64(want)
                    }
                }
            } else if heuristicsEnabled {
                // No word to scan, but the heuristics may still read past the block (as Valgrind's do).
                facts = heuristicFacts(start: start, size: size, &finder)
            }
            // The last pointer into the block's own interior (see `scanFoundPointers`), unless the
            // block may be partly unreadable (then every one is checked as it is met).
            if complete && finder.lastSelfOffset != 0 {
                let offset = finder.lastSelfOffset
                let wholly = configuration.readableRanges == nil || (readableEnd(start).map { $0 >= index.ends[i] } ?? false)
                if wholly && offset <= UInt64(UInt32.max) {
                    if offset < UInt64(1) << UInt64(pointers.offsetBits) {
                        pointers.pointers[out] = UInt32(truncatingIfNeeded: i) << pointers.offsetBits | UInt32(truncatingIfNeeded: offset)
                        out &+= 1
                    } else {
                        pointers.pointers[out] = BlockPointers.longEntry | UInt32(truncatingIfNeeded: i)
                        pointers.pointers[out &+ 1] = UInt32(truncatingIfNeeded: offset)
                        out &+= 2
                    }
                } else {
                    complete = false
                }
            }
            let chunkFirst = pointers.slack[i] & BlockPointers.chunkFirst
            if complete {
                precondition(out <= pointers.chunkBase[chunk + 1], "block pointers beyond their bound")
                pointers.ends[i] = UInt32(truncatingIfNeeded: out)
                pointers.slack[i] = chunkFirst | UInt16(truncatingIfNeeded: contentsEnd &- requestedEnd)
                if facts != 0 { pointers.facts[i] = facts }
                finder.blocksFound &+= 1
            } else {
                // Scanned word by word when it is marked, as without this list.
                out = begin
                pointers.ends[i] = UInt32(truncatingIfNeeded: out)
                pointers.slack[i] = chunkFirst | BlockPointers.notFound
            }
        }
    }

    /// Reads `[from, …)` into the buffer: at least up to `atLeast` (if the buffer can hold it),
    /// up to `limit` if that fits, fewer bytes when the memory ends before.
    func fill(_ finder: inout PointerFinder, from: UInt64, atLeast: UInt64, limit: UInt64) {
        let start = from & ~7
        let want = Int(min(UInt64(finder.capacity), max(atLeast, limit) &- start))
        let got = readUncounted(start, into: UnsafeMutableRawBufferPointer(start: finder.buffer, count: want))
        if got >= 0 { finder.reads &+= 1 }
        finder.bytesRead &+= UInt64(max(got, 0))
        finder.bufferStart = start
        finder.valid = max(got, 0)
    }

    /// Appends the words of `words`, from block `source`, that point at or into a block, in order
    /// (but for pointers into the interior of `source` itself: only the last one is kept, in
    /// `finder.lastSelfOffset`). False when one points more than 4 GiB into a block.
    @inline(__always)
    func collect(_ words: UnsafePointer<UInt64>, _ n: Int, from source: Int,
                 into pointers: UnsafeMutablePointer<UInt32>, offsetBits: UInt32, at out: inout Int,
                 finder: inout PointerFinder) -> Bool {
        let minStart = index.minStart
        let span = index.span
        let sourceStart = index.starts[source]
        let sourceSize = index.ends[source] &- sourceStart
        let shortOffsets = UInt64(1) << UInt64(offsetBits)
        var hitStart = finder.hitStart
        var hitEnd = finder.hitEnd
        var hitIndex = finder.hitIndex
        var lastSelfOffset = finder.lastSelfOffset
        var next = out
        for k in 0..<n {
            let word = UInt64(littleEndian: words[k])
            if word &- minStart >= span { continue }
            let selfOffset = word &- sourceStart
            if selfOffset < sourceSize && selfOffset != 0 {
                lastSelfOffset = selfOffset
                continue
            }
            // Pointers often land in the block the previous one did (a slab's objects point at
            // each other): test that block before looking the word up.
            if word &- hitStart >= hitEnd &- hitStart {
                let i = index.lookup(word)
                if i < 0 { continue }
                hitStart = index.starts[i]
                hitEnd = index.ends[i]
                hitIndex = UInt32(truncatingIfNeeded: i)
            }
            let offset = word &- hitStart
            if offset < shortOffsets {
                pointers[next] = hitIndex << offsetBits | UInt32(truncatingIfNeeded: offset)
                next &+= 1
            } else {
                if offset > UInt64(UInt32.max) { return false }
                pointers[next] = BlockPointers.longEntry | hitIndex
                pointers[next &+ 1] = UInt32(truncatingIfNeeded: offset)
                next &+= 2
            }
        }
        out = next
        finder.hitStart = hitStart
        finder.hitEnd = hitEnd
        finder.hitIndex = hitIndex
        finder.lastSelfOffset = lastSelfOffset
        return true
    }
}
