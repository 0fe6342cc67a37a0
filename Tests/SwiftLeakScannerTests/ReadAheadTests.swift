import SwiftLeakCore
import SwiftLeakScanner
import SwiftLeakTestSupport
import Testing

/// The ways the scan reads a heap must not change a verdict: windows read ahead by a second thread,
/// blocks spanning several windows read in place, and the evicting cache of a heap that does not fit
/// (each block copied out of its window, big ones streamed), which is how every scan read before.
@Suite("Read-ahead and in-place reads give the same verdicts")
struct ReadAheadTests {
    /// A random glibc-like heap: small and big blocks (up to 5 windows), each word a start pointer,
    /// an interior pointer, a pointer past the heap or a number; a few roots; a quarter of the
    /// blocks lost.
    struct RandomHeap {
        let blocks: [ScanBlock]
        let memory = InMemoryProcessMemory()
        let roots: [RootRegion]
        let heapStart: UInt64 = 0x5555_0000_0000
        let rootStart: UInt64 = 0x7ffd_0000_0000

        init(seed: UInt64, count: Int) {
            var rng = SplitMix(seed: seed)
            var blocks: [ScanBlock] = []
            var address = heapStart + 16
            for _ in 0..<count {
                let size = rng.next() % 40 == 0 ? 16_384 + rng.next() % 300_000 : 8 + rng.next() % 200
                blocks.append(ScanBlock(address: address, size: size))
                address += ((size + 8 + 15) & ~15) + (rng.next() % 8 == 0 ? 4096 : 0)
            }
            let heapEnd = address + 4096
            memory.map(heapStart, size: Int(heapEnd - heapStart))
            // Blocks 0, 4, 8, ... are lost: only each other point at them (cliques, chains).
            func target(from block: Int) -> ScanBlock {
                var index = Int(rng.next() % UInt64(count))
                if block % 4 != 0 && index % 4 == 0 { index = (index + 1) % count }
                return blocks[index]
            }
            for (index, block) in blocks.enumerated() {
                let chunk = ((block.size + 8 + 15) & ~15)
                memory.store(chunk | 1, at: block.address - 8)  // glibc's size word, PREV_INUSE
                memory.store(chunk | 1, at: block.address - 8 + chunk)  // next chunk: PREV_INUSE
                var offset: UInt64 = 0
                while offset + 8 <= block.size {
                    let target = target(from: index)
                    switch rng.next() % 8 {
                    case 0, 1: memory.store(target.address, at: block.address + offset)
                    case 2: memory.store(target.address + rng.next() % max(target.size, 1), at: block.address + offset)
                    case 3: memory.store(heapEnd + rng.next() % 4096, at: block.address + offset)
                    default: memory.store(rng.next() % 1000, at: block.address + offset)
                    }
                    offset += rng.next() % 4 == 0 ? 8 : 8 * (1 + rng.next() % 64)
                }
            }
            memory.map(rootStart, size: 4096)
            for slot in 0..<8 {
                memory.store(blocks[Int(rng.next() % UInt64(count)) | 1].address, at: rootStart + UInt64(slot) * 64)
            }
            self.blocks = blocks
            roots = [RootRegion(start: rootStart, end: rootStart + 4096, label: "root")]
        }

        func scan(_ configure: (inout LeakScanner.Configuration) -> Void) -> ScanResult {
            var configuration = LeakScanner.Configuration()
            configuration.contents = .glibcUsableSize
            configuration.pointerThreads = 0  // the word-by-word scan, whose reading these tests are about
            configure(&configuration)
            return LeakScanner.scan(blocks: blocks, roots: roots, registerWords: [], memory: memory,
                                    configuration: configuration)
        }
    }

    static func expectSame(_ a: ScanResult, _ b: ScanResult, _ label: String) {
        #expect(a.kinds == b.kinds, "\(label): kinds")
        #expect(a.indirectBytesCharged == b.indirectBytesCharged, "\(label): indirect bytes")
        #expect(a.leaderOf == b.leaderOf, "\(label): leaders")
        #expect(a.parentOf == b.parentOf, "\(label): parents")
        #expect(a.heuristics == b.heuristics, "\(label): heuristics")
        #expect(a.statistics.wordsScanned == b.statistics.wordsScanned, "\(label): words scanned")
        #expect(a.statistics.slackBytesScanned == b.statistics.slackBytesScanned, "\(label): slack")
        expectLeadersFollowParents(a, label)
        expectLeadersFollowParents(b, label)
    }

    /// The scan resolves leaders without walking the parent links; walking them must give the same
    /// leader: the definitely lost block at the top of each indirect block's chain.
    static func expectLeadersFollowParents(_ r: ScanResult, _ label: String) {
        // top[i]: the block at the top of i's parent chain (memoized: a lost list is one long chain).
        var top = [Int](repeating: -1, count: r.kinds.count)
        var wrong = 0
        for i in r.kinds.indices {
            var chain: [Int] = []
            var node = i
            while r.kinds[node] == .indirectlyLost && top[node] < 0 && chain.count <= r.kinds.count {
                chain.append(node)
                node = Int(r.parent(node))
            }
            let root = r.kinds[node] == .indirectlyLost ? top[node] : node
            for member in chain { top[member] = root }
            let expected: Int32 = r.kinds[i] == .indirectlyLost ? Int32(root) : -1
            if r.leader(i) != expected || (r.kinds[i] == .indirectlyLost && r.kinds[root] != .definitelyLost) { wrong += 1 }
        }
        #expect(wrong == 0, "\(label): \(wrong) leaders differ from the parent links' top")
    }

    @Test("read ahead, in place, or through a cache too small for the heap: same result", arguments: [1, 2, 3, 4])
    func sameVerdicts(seed: UInt64) {
        let heap = RandomHeap(seed: seed, count: 3000)
        let readAhead = heap.scan { $0.readAheadMinimumBytes = 1 }
        let inPlace = heap.scan { $0.readAheadMinimumBytes = 0 }
        let evicting = heap.scan { $0.blockCacheLimit = 8 << 16 }
        #expect(readAhead.kinds.contains(.stillReachable) && readAhead.kinds.contains(.definitelyLost))
        Self.expectSame(readAhead, evicting, "read-ahead vs evicting cache")
        Self.expectSame(inPlace, evicting, "in place vs evicting cache")
        // The read-ahead thread read each heap window at most once (with the marking's reads).
        let heapBytes = heap.blocks.last!.address + heap.blocks.last!.size - heap.heapStart
        #expect(readAhead.statistics.bytesRead <= heapBytes + 2 * 65_536 + 2 * 4096)
    }

    @Test("unreadable pages inside the heap: same result read ahead or not", arguments: [5, 6])
    func unreadablePages(seed: UInt64) {
        let heap = RandomHeap(seed: seed, count: 2000)
        let end = heap.blocks.last!.address + heap.blocks.last!.size + 4096
        // Three holes of one to three pages, as PROT_NONE guard pages would leave.
        let third = (end - heap.heapStart) / 4 & ~4095
        let readable: [Range<UInt64>] = [
            heap.heapStart..<(heap.heapStart + third),
            (heap.heapStart + third + 4096)..<(heap.heapStart + 2 * third),
            (heap.heapStart + 2 * third + 3 * 4096)..<(heap.heapStart + 3 * third),
            (heap.heapStart + 3 * third + 2 * 4096)..<end,
            heap.rootStart..<(heap.rootStart + 4096),
        ]
        let readAhead = heap.scan { $0.readAheadMinimumBytes = 1; $0.readableRanges = readable }
        let evicting = heap.scan { $0.blockCacheLimit = 8 << 16; $0.readableRanges = readable }
        Self.expectSame(readAhead, evicting, "read-ahead vs evicting cache")
    }
}
