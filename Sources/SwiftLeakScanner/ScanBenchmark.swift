/// A synthetic scan for benchmarks and tests: `blockCount` blocks of 16–48 bytes laid out as glibc
/// would (16-byte chunk header, 16-byte alignment) in one fake heap, linked in a list through their
/// first word. The integrator's benchmark (and our tests) call it; it needs no process.
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
        memory.map(heapStart, size: Int(address - heapStart))
        let heapStart = self.heapStart
        let descending: Bool
        switch shape {
        case .reachableAscending, .lostAscending: descending = false
        case .lostDescending: descending = true
        }
        blocks.withUnsafeBufferPointer { blocks in
            memory.withRegionBytes(startingAt: heapStart) { heap in
                for i in 0..<blockCount {
                    let next: UInt64
                    if descending {
                        next = i > 0 ? blocks[i - 1].address : 0
                    } else {
                        next = i + 1 < blockCount ? blocks[i + 1].address : 0
                    }
                    let offset = Int(blocks[i].address - heapStart)
                    heap.storeBytes(of: next.littleEndian, toByteOffset: offset, as: UInt64.self)
                    // A payload word that is not a pointer.
                    heap.storeBytes(of: UInt64(i).littleEndian, toByteOffset: offset + 8, as: UInt64.self)
                }
            }
        }
        memory.map(rootStart, size: 4096)
        if case .reachableAscending = shape, let first = blocks.first { memory.store(first.address, at: rootStart + 64) }
        self.blocks = blocks
        self.memory = memory
        self.roots = [RootRegion(start: rootStart, end: rootStart + 4096, label: "benchmark root")]
    }

    /// Runs the scan.
    public func run(configuration: LeakScanner.Configuration = LeakScanner.Configuration()) -> ScanResult {
        LeakScanner.scan(blocks: blocks, roots: roots, registerWords: [], memory: memory, configuration: configuration)
    }
}
