/// A synthetic scan for benchmarks and tests: `blockCount` blocks of 16–48 bytes laid out as glibc
/// would (16-byte chunk header, 16-byte alignment) in one fake heap, linked in a list through their
/// first word, each with a glibc size word in its header (`chunk size | PREV_INUSE`, the chunk
/// being the block rounded up to 16 plus the 16-byte header), so that a scan with
/// ``LeakScanner/BlockContents/glibcUsableSize`` reads real headers and 8–15 bytes of slack per
/// block. The integrator's benchmark (and our tests) call it; it needs no process.
public struct LinkedListScanBenchmark {
    /// How the list is linked and whether a root points at it.
    public enum Shape: Sendable {
        /// Each block points to the next higher one; a root points at the lowest (a reachable list).
        case reachableAscending
        /// Each block points to the next lower one (a list built by prepending) and nothing points
        /// at the head: one definitely lost block (the highest) and the rest indirectly lost.
        case lostDescending
        /// Each block points to the next higher one, nothing points at the head (the lowest).
        case lostAscending
        /// The blocks are linked in a pseudo-random order (a list whose nodes were allocated out
        /// of order); a root points at the head. Worst case for memory locality.
        case reachableShuffled
    }

    public let blocks: [ScanBlock]
    public let memory: InMemoryProcessMemory
    public let roots: [RootRegion]
    public let heapStart: UInt64 = 0x5555_0000_0000
    public let rootStart: UInt64 = 0x7FFF_0000_0000

    public init(blockCount: Int, shape: Shape) {
        var blocks: [ScanBlock] = []
        blocks.reserveCapacity(blockCount)
        var address = heapStart + 16
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        for _ in 0..<blockCount {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            let size = 16 + (seed >> 33) % 33  // 16...48
            blocks.append(ScanBlock(address: address, size: size))
            address += ((size + 15) & ~15) + 16
        }
        let memory = InMemoryProcessMemory()
        memory.map(heapStart, size: Int(address - heapStart) + 16)
        let heapStart = self.heapStart
        // order[k] is the k-th block of the list.
        var order = Array(0..<blockCount)
        switch shape {
        case .reachableAscending, .lostAscending: break
        case .lostDescending: order.reverse()
        case .reachableShuffled:
            for k in stride(from: blockCount - 1, to: 0, by: -1) {
                seed = seed &* 6364136223846793005 &+ 1442695040888963407
                order.swapAt(k, Int((seed >> 33) % UInt64(k + 1)))
            }
        }
        blocks.withUnsafeBufferPointer { blocks in
            memory.withRegionBytes(startingAt: heapStart) { heap in
                for k in 0..<blockCount {
                    let i = order[k]
                    let next = k + 1 < blockCount ? blocks[order[k + 1]].address : 0
                    let offset = Int(blocks[i].address - heapStart)
                    heap.storeBytes(of: next.littleEndian, toByteOffset: offset, as: UInt64.self)
                    // A payload word that is not a pointer.
                    heap.storeBytes(of: UInt64(i).littleEndian, toByteOffset: offset + 8, as: UInt64.self)
                    // glibc's size word (PREV_INUSE set), so the usable-size scan finds real headers.
                    let chunkSize = ((blocks[i].size + 15) & ~15) + 16
                    heap.storeBytes(of: (chunkSize | 1).littleEndian, toByteOffset: offset - 8, as: UInt64.self)
                }
                // The top chunk after the last block.
                heap.storeBytes(of: UInt64(0x1001).littleEndian, toByteOffset: heap.count - 16 - 8, as: UInt64.self)
            }
        }
        memory.map(rootStart, size: 4096)
        switch shape {
        case .reachableAscending, .reachableShuffled:
            if let head = order.first { memory.store(blocks[head].address, at: rootStart + 64) }
        case .lostAscending, .lostDescending: break
        }
        self.blocks = blocks
        self.memory = memory
        self.roots = [RootRegion(start: rootStart, end: rootStart + 4096, label: "benchmark root")]
    }

    /// Runs the scan.
    public func run(configuration: LeakScanner.Configuration = LeakScanner.Configuration()) -> ScanResult {
        LeakScanner.scan(blocks: blocks, roots: roots, registerWords: [], memory: memory, configuration: configuration)
    }
}
