import SwiftLeakCore
import SwiftLeakScanner
import SwiftLeakTestSupport
import Testing

/// Finding every block's pointers first, on several threads (`Configuration.pointerThreads`), must
/// not change a thing: the same verdicts, cliques, parents, heuristics and words scanned as the
/// word-by-word scan, on heaps generated to hit every path (heuristic shapes, C++-like objects with
/// vtables, pointers into a block's own interior, blocks bigger than a thread's buffer, zero-size
/// blocks, heaps cut into many segments and regions, unreadable pages, lost cliques).
@Suite("Pointers found first, on several threads: the word-by-word scan's result")
struct PointerThreadsTests {
    struct GeneratedHeap {
        var blocks: [ScanBlock] = []
        let memory = InMemoryProcessMemory()
        var roots: [RootRegion] = []
        var registers: [UInt64] = []
        var mappings: [MemoryMapping] = []
        var readable: [Range<UInt64>] = []
        static let rodata: UInt64 = 0x40_0000
        static let text: UInt64 = 0x50_0000
        static let rootStart: UInt64 = 0x7ffd_0000_0000

        init(seed: UInt64, count: Int, unreadablePages: Bool = false) {
            var rng = SplitMix(seed: seed)
            // A library with vtables (two function pointers, or a null then two) and code.
            memory.map(Self.rodata, size: 4096)
            memory.map(Self.text, size: 4096)
            mappings = [
                MemoryMapping(start: Self.rodata, end: Self.rodata + 4096, perms: "r--p", inode: 7, path: "/usr/lib/libshapes.so"),
                MemoryMapping(start: Self.text, end: Self.text + 4096, perms: "r-xp", offset: 0x1000, inode: 7, path: "/usr/lib/libshapes.so"),
            ]
            let vtables: [UInt64] = [Self.rodata + 0x100, Self.rodata + 0x200, Self.rodata + 0x300]
            memory.store(Self.text + 0x10, at: Self.rodata + 0x100)
            memory.store(Self.text + 0x20, at: Self.rodata + 0x108)
            memory.store(0, at: Self.rodata + 0x200)
            memory.store(Self.text + 0x30, at: Self.rodata + 0x208)
            memory.store(Self.text + 0x40, at: Self.rodata + 0x210)
            memory.store(Self.rodata + 0x100, at: Self.rodata + 0x300)  // not a vtable: data first
            memory.store(Self.text + 0x40, at: Self.rodata + 0x308)

            // Heap areas: several, some far apart (more than one 1 MiB region and segment).
            var areas: [(start: UInt64, end: UInt64)] = []
            var areaStart: UInt64 = 0x5555_0000_0000
            var address = areaStart + 16
            for _ in 0..<count {
                let pick = rng.next() % 200
                let size: UInt64
                if pick == 0 { size = 600_000 + rng.next() % 700_000 }          // bigger than a buffer
                else if pick < 6 { size = 16_384 + rng.next() % 200_000 }
                else if pick < 8 { size = 0 }
                else { size = 8 + rng.next() % 300 }
                blocks.append(ScanBlock(address: address, size: size))
                let chunk = (max(size, 8) + 8 + 15) & ~15
                address += chunk + (rng.next() % 10 == 0 ? 4096 * (1 + rng.next() % 3) : 0)
                if rng.next() % 300 == 0 {
                    // A new area far away: a gap of several regions.
                    areas.append((areaStart, address + 4096))
                    areaStart = (address + 4096 + (rng.next() % 5 + 2) << 20 + 0xFFFF) & ~0xFFFF
                    address = areaStart + 16
                }
            }
            areas.append((areaStart, address + 4096))
            for area in areas { memory.map(area.start, size: Int(area.end - area.start)) }

            func target(from block: Int) -> ScanBlock {
                var index = Int(rng.next() % UInt64(count))
                if block % 5 != 0 && index % 5 == 0 { index = (index + 1) % count }  // every fifth mostly lost
                return blocks[index]
            }
            for (index, block) in blocks.enumerated() {
                let chunk = (max(block.size, 8) + 8 + 15) & ~15
                memory.store(chunk | 1, at: block.address - 8)
                memory.store(chunk | 1, at: block.address - 8 + chunk)
                guard block.size >= 8 else { continue }
                // Heuristic shapes in the first words, now and then.
                switch rng.next() % 12 {
                case 0: if block.size >= 25 { memory.store(block.size - 25, at: block.address + 8); memory.store(rng.next() % 3, at: block.address) }
                case 1: memory.store(block.size - 8, at: block.address)                        // length64
                case 2: memory.store(1 + rng.next() % 4, at: block.address)                     // newarray
                case 3, 4: memory.store(vtables[Int(rng.next() % 3)], at: block.address)         // a C++ object
                default: break
                }
                var offset: UInt64 = 8
                while offset + 8 <= block.size {
                    let t = target(from: index)
                    let slot = block.address + offset
                    switch rng.next() % 14 {
                    case 0, 1: memory.store(t.address, at: slot)
                    case 2: memory.store(t.address + rng.next() % max(t.size, 1), at: slot)
                    case 3: memory.store(t.address + [8, 24, 16][Int(rng.next() % 3)], at: slot)
                    case 4: memory.store(block.address + rng.next() % block.size, at: slot)   // into itself
                    case 5: memory.store(block.address, at: slot)                             // its own start
                    case 6: memory.store(vtables[Int(rng.next() % 3)], at: slot)               // a second vtable
                    case 7: memory.store(Self.text + rng.next() % 4096, at: slot)
                    default: memory.store(rng.next() % 100_000, at: slot)
                    }
                    offset += block.size > 4096 ? 8 * (1 + rng.next() % 200) : 8 * (1 + rng.next() % 3)
                }
            }
            memory.map(Self.rootStart, size: 4096)
            for slot in 0..<24 {
                let t = blocks[Int(rng.next() % UInt64(count)) | 1]
                let plus = rng.next() % 3 == 0 ? [8, 16, 24][Int(rng.next() % 3)] : 0
                memory.store(t.address + UInt64(plus), at: Self.rootStart + UInt64(slot) * 64)
            }
            registers = (0..<4).map { _ in blocks[Int(rng.next() % UInt64(count))].address }
            roots = [RootRegion(start: Self.rootStart, end: Self.rootStart + 4096, label: "root")]
            readable = [Self.rodata..<(Self.rodata + 4096), Self.text..<(Self.text + 4096)]
            for area in areas {
                if unreadablePages && area.end - area.start > 5 * 4096 {
                    // A PROT_NONE page in the middle of the area.
                    let hole = (area.start + (area.end - area.start) / 2) & ~4095
                    readable += [area.start..<hole, (hole + 4096)..<area.end]
                } else {
                    readable.append(area.start..<area.end)
                }
            }
            readable.append(Self.rootStart..<(Self.rootStart + 4096))
            readable.sort { $0.lowerBound < $1.lowerBound }
        }

        func scan(threads: Int, usableSize: Bool, heuristics: LeakHeuristics = .all, readableRanges: Bool) -> ScanResult {
            var configuration = LeakScanner.Configuration()
            configuration.mappings = mappings
            configuration.heuristics = heuristics
            configuration.contents = usableSize ? .glibcUsableSize : .requestedSize
            configuration.readableRanges = readableRanges ? readable : nil
            configuration.pointerThreads = threads
            configuration.pointerThreadsMinimumBytes = 0  // threads even on these small heaps
            return LeakScanner.scan(blocks: blocks, roots: roots, registerWords: registers, memory: memory,
                                    configuration: configuration)
        }
    }

    static func expectSame(_ a: ScanResult, _ b: ScanResult, _ label: String) {
        ReadAheadTests.expectSame(a, b, label)
        #expect(a.statistics.bytesUnreadable == b.statistics.bytesUnreadable, "\(label): unreadable")
    }

    @Test("1, 2 and 3 threads give the word-by-word result", arguments: [11, 12, 13, 14, 15, 16])
    func sameAsWordByWord(seed: UInt64) {
        let heap = GeneratedHeap(seed: seed, count: 2500)
        for usableSize in [false, true] {
            let reference = heap.scan(threads: 0, usableSize: usableSize, readableRanges: true)
            // The generator reaches every kind and some heuristic, else the comparison proves little.
            #expect(Set(reference.kinds).count == 4, "seed \(seed): every kind")
            #expect(reference.heuristics.contains { $0 != nil }, "seed \(seed): some heuristic")
            #expect(reference.statistics.blocksWithPointersFound == 0)
            for threads in [1, 2, 3] {
                let found = heap.scan(threads: threads, usableSize: usableSize, readableRanges: true)
                #expect(found.statistics.blocksWithPointersFound == heap.blocks.count, "seed \(seed): every block's pointers found")
                Self.expectSame(found, reference, "seed \(seed), \(threads) threads, usable size \(usableSize)")
            }
        }
    }

    @Test("without heuristics, without readable ranges: the same", arguments: [21, 22])
    func otherConfigurations(seed: UInt64) {
        let heap = GeneratedHeap(seed: seed, count: 2000)
        let plain = heap.scan(threads: 0, usableSize: true, heuristics: .none, readableRanges: true)
        Self.expectSame(heap.scan(threads: 2, usableSize: true, heuristics: .none, readableRanges: true), plain, "no heuristics")
        let unclipped = heap.scan(threads: 0, usableSize: true, readableRanges: false)
        Self.expectSame(heap.scan(threads: 2, usableSize: true, readableRanges: false), unclipped, "no readable ranges")
    }

    @Test("the heuristics ask the facts found with the pointers: no word is read for them", arguments: [41, 42])
    func heuristicsFromFoundFacts(seed: UInt64) {
        var heap = GeneratedHeap(seed: seed, count: 2500)
        // C++ objects reached only through a pointer to their second vtable pointer, from the
        // roots (past the generator's root slots): multipleinheritance decides their verdict.
        let objects = heap.blocks.indices.filter { $0 % 5 == 0 && heap.blocks[$0].size >= 32 }.prefix(20)
        for (k, i) in objects.enumerated() {
            let object = heap.blocks[i].address
            heap.memory.store(GeneratedHeap.rodata + 0x100, at: object)
            heap.memory.store(GeneratedHeap.rodata + 0x200, at: object + 16)
            heap.memory.store(object + 16, at: GeneratedHeap.rootStart + 2048 + UInt64(k) * 8)
        }
        let reference = heap.scan(threads: 0, usableSize: true, readableRanges: true)
        let found = heap.scan(threads: 1, usableSize: true, readableRanges: true)
        Self.expectSame(found, reference, "seed \(seed)")
        #expect(reference.statistics.heuristicWordsRead > 0)
        // multipleinheritance decides some verdicts here (its facts are the per-word bits).
        var withoutIt = LeakHeuristics.all
        withoutIt.remove(.multipleInheritance)
        #expect(heap.scan(threads: 0, usableSize: true, heuristics: withoutIt, readableRanges: true).kinds != reference.kinds,
                "seed \(seed): multipleinheritance changes some verdict")
        // One thread finds every block's pointers before it marks the roots, and with the usable
        // size every word a pointer may point at is among the words it looked at: nothing is read.
        #expect(found.statistics.heuristicWordsRead == 0, "seed \(seed): \(found.statistics.heuristicWordsRead) words read")
        Self.expectSame(heap.scan(threads: 3, usableSize: true, readableRanges: true), reference, "seed \(seed), 3 threads")
        // Without file mappings no word is a vtable address (multipleinheritance never holds).
        heap.mappings = []
        let noVtables = heap.scan(threads: 0, usableSize: true, readableRanges: true)
        #expect(noVtables.statistics.heuristicWordsRead > 0)
        let noVtablesFound = heap.scan(threads: 1, usableSize: true, readableRanges: true)
        Self.expectSame(noVtablesFound, noVtables, "seed \(seed), no file mappings")
        #expect(noVtablesFound.statistics.heuristicWordsRead == 0, "seed \(seed): no word read without file mappings")
        Self.expectSame(heap.scan(threads: 2, usableSize: true, readableRanges: true), noVtables, "seed \(seed), 2 threads")
    }

    @Test("unreadable pages inside the heap: those blocks are scanned word by word, the result is the same",
          arguments: [31, 32, 33])
    func unreadablePages(seed: UInt64) {
        let heap = GeneratedHeap(seed: seed, count: 2500, unreadablePages: true)
        let reference = heap.scan(threads: 0, usableSize: true, readableRanges: true)
        #expect(reference.statistics.bytesUnreadable > 0, "seed \(seed): some block runs into a hole")
        let found = heap.scan(threads: 2, usableSize: true, readableRanges: true)
        #expect(found.statistics.blocksWithPointersFound > heap.blocks.count / 2)
        #expect(found.statistics.blocksWithPointersFound < heap.blocks.count, "seed \(seed): some block scanned word by word")
        Self.expectSame(found, reference, "seed \(seed)")
    }

    @Test("the 4,000,000-block benchmark lists: same result with the pointers found first")
    func benchmarkLists() {
        for shape in [LinkedListScanBenchmark.Shape.reachableAscending, .lostDescending] {
            let bench = LinkedListScanBenchmark(blockCount: 200_000, shape: shape)
            var reference = LeakScanner.Configuration()
            reference.contents = .glibcUsableSize
            reference.pointerThreads = 0
            var found = reference
            found.pointerThreads = 2
            found.pointerThreadsMinimumBytes = 0
            Self.expectSame(bench.run(configuration: found), bench.run(configuration: reference), "\(shape)")
        }
    }
}
