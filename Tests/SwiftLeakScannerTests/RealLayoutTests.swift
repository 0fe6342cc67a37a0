import Glibc
import SwiftLeakCore
import SwiftLeakScanner
import Testing

/// The layouts real programs have and the synthetic tests once missed: glibc's chunk headers and
/// slack, lld's two writable segments in one file page, anonymous mappings merged with mmapped
/// chunks, cached stacks of exited threads, PROT_NONE pages.
@Suite("Real layouts")
struct RealLayoutTests {
    /// A fake glibc arena: blocks with real chunk headers (size | PREV_INUSE), back to back.
    final class Arena {
        static let start: UInt64 = 0x5000_0000
        static let rootStart: UInt64 = 0x6000_0000
        let memory = InMemoryProcessMemory()
        var blocks: [ScanBlock] = []

        /// `sizes` are requested sizes; each chunk is glibc's request2size.
        init(sizes: [UInt64]) {
            memory.map(Arena.start, size: 1 << 16)
            memory.map(Arena.rootStart, size: 4096)
            var chunk = Arena.start
            for size in sizes {
                let chunkSize = max(32, (size + 8 + 15) & ~15)
                memory.store(chunkSize | 1, at: chunk + 8)
                blocks.append(ScanBlock(address: chunk + 16, size: size))
                chunk += chunkSize
            }
            memory.store(0x1000 | 1, at: chunk + 8) // the top chunk
        }

        func scan(_ contents: LeakScanner.BlockContents, readable: [Range<UInt64>]? = nil) -> ScanResult {
            var configuration = LeakScanner.Configuration()
            configuration.contents = contents
            configuration.readableRanges = readable
            return LeakScanner.scan(blocks: blocks, roots: [RootRegion(start: Arena.rootStart, end: Arena.rootStart + 4096, label: "root")],
                                    registerWords: [], memory: memory, configuration: configuration)
        }
    }

    @Test("glibc headers: usable size of arena and mmapped chunks; headers that break glibc's rules are refused")
    func chunkHeaders() {
        let arena = Arena(sizes: [20, 24, 100])
        let sizes = arena.blocks.map { GlibcChunk.read(start: $0.address, size: $0.size, memory: arena.memory)?.usableSize }
        #expect(sizes == [24, 24, 104])
        #expect(GlibcChunk.read(start: arena.blocks[2].address, size: 100, memory: arena.memory)?.mmappedRange == nil)

        // An mmapped chunk of 256 KiB: prev_size 0, size page-rounded | IS_MMAPPED.
        let memory = InMemoryProcessMemory()
        let mapping: UInt64 = 0x7000_0000
        memory.map(mapping, size: 0x41000)
        memory.store(0x41000 | 2, at: mapping + 8)
        let mapped = GlibcChunk.read(start: mapping + 16, size: 0x40000, memory: memory)
        #expect(mapped == GlibcChunk(usableSize: 0x41000 - 16, mmappedRange: mapping..<(mapping + 0x41000)))

        // Refused: a size below the request, a size that is not a multiple of 16, a next chunk without
        // PREV_INUSE, an mmapped chunk that is not page-sized, an unaligned block, an unreadable header.
        memory.store(0x41000 | 2, at: mapping + 8)
        #expect(GlibcChunk.read(start: mapping + 16, size: 0x50000, memory: memory) == nil)
        memory.store(0x41008 | 2, at: mapping + 8)
        #expect(GlibcChunk.read(start: mapping + 16, size: 0x40000, memory: memory) == nil)
        memory.store(0x40010 | 2, at: mapping + 8)
        #expect(GlibcChunk.read(start: mapping + 16, size: 0x40000, memory: memory) == nil)
        arena.memory.store(112, at: arena.blocks[1].address + 24) // block 2's header loses PREV_INUSE
        #expect(GlibcChunk.read(start: arena.blocks[0].address, size: 20, memory: arena.memory)?.usableSize == 24)
        #expect(GlibcChunk.read(start: arena.blocks[1].address, size: 24, memory: arena.memory) == nil)
        #expect(GlibcChunk.read(start: arena.blocks[0].address + 8, size: 8, memory: arena.memory) == nil)
        #expect(GlibcChunk.read(start: 0x10, size: 8, memory: arena.memory) == nil)
        arena.memory.store(0xFFFF_FFF0 | 1, at: arena.blocks[0].address - 8) // absurdly big
        #expect(GlibcChunk.read(start: arena.blocks[0].address, size: 20, memory: arena.memory) == nil)
    }

    @Test("a pointer kept in the slack past the requested size (Swift's arrays) is followed; the slack is not a target")
    func slack() {
        // Block 0 asked for 20 bytes and got 24: the program keeps its pointer to block 1 in bytes 16-24.
        let arena = Arena(sizes: [20, 32, 32])
        arena.memory.store(arena.blocks[0].address, at: Arena.rootStart)
        arena.memory.store(arena.blocks[1].address, at: arena.blocks[0].address + 16)
        // A word pointing into block 2's slack (bytes 32-40 of its 40 usable bytes) does not reach it.
        arena.memory.store(arena.blocks[2].address + 32, at: Arena.rootStart + 8)
        let requested = arena.scan(.requestedSize)
        #expect(requested.kinds == [.stillReachable, .definitelyLost, .definitelyLost])
        let usable = arena.scan(.glibcUsableSize)
        #expect(usable.kinds == [.stillReachable, .stillReachable, .definitelyLost])
        // Block 0's 4 bytes and block 1's 8 when marking, lost block 2's 8 when gathering its clique.
        #expect(usable.statistics.slackBytesScanned == 4 + 8 + 8)
    }

    @Test("unreadable pages: never read, and a pointer into one is not followed")
    func protNone() {
        let arena = Arena(sizes: [16, 16, 4096 + 4096, 16])
        // Root -> block 0 -> block 1. Root -> block 2, whose second page is PROT_NONE and holds the
        // only pointer to block 3; a second root points into that unreadable page of block 2.
        arena.memory.store(arena.blocks[0].address, at: Arena.rootStart)
        arena.memory.store(arena.blocks[1].address, at: arena.blocks[0].address)
        let big = arena.blocks[2].address
        let protectedPage = (big + 4095) & ~4095 // wholly inside block 2
        arena.memory.store(arena.blocks[3].address, at: protectedPage + 8)
        let readable = [Arena.start..<protectedPage, (protectedPage + 4096)..<(Arena.start + (1 << 16)),
                        Arena.rootStart..<(Arena.rootStart + 4096)]
        arena.memory.store(protectedPage + 64, at: Arena.rootStart + 8)
        let everything = arena.scan(.requestedSize)
        #expect(everything.kinds == [.stillReachable, .stillReachable, .possiblyLost, .possiblyLost])
        let honoured = arena.scan(.requestedSize, readable: readable)
        #expect(honoured.kinds == [.stillReachable, .stillReachable, .definitelyLost, .definitelyLost])
        // With a start pointer, block 2 is reachable but its unreadable page is not scanned.
        arena.memory.store(big, at: Arena.rootStart + 16)
        let started = arena.scan(.requestedSize, readable: readable)
        #expect(started.kinds == [.stillReachable, .stillReachable, .stillReachable, .definitelyLost])
        #expect(started.statistics.bytesUnreadable >= 4096)
    }

    /// An lld-linked executable: RELRO (vaddr 0x3110, offset 0x1110) and .data (vaddr 0x4300, offset
    /// 0x1300) are two writable PT_LOADs in the same file page.
    static let lldImage = ELFImage(
        fileType: 3, machine: 62,
        segments: [
            ELFSegment(type: 1, flags: 4, offset: 0, virtualAddress: 0, fileSize: 0xab0, memorySize: 0xab0),
            ELFSegment(type: 1, flags: 5, offset: 0xab0, virtualAddress: 0x1ab0, fileSize: 0x660, memorySize: 0x660),
            ELFSegment(type: 1, flags: 6, offset: 0x1110, virtualAddress: 0x3110, fileSize: 0x1d8, memorySize: 0xef0),
            ELFSegment(type: 1, flags: 6, offset: 0x1300, virtualAddress: 0x4300, fileSize: 0x3048, memorySize: 0x6148),
        ],
        sections: [
            ELFSection(name: ".got", flags: 0x3, address: 0x32c0, offset: 0x12c0, size: 0x28),
            ELFSection(name: ".relro_padding", type: 8, flags: 0x3, address: 0x32e8, offset: 0x12e8, size: 0xd18),
            ELFSection(name: ".data", flags: 0x3, address: 0x4300, offset: 0x1300, size: 0x3020),
            ELFSection(name: ".bss", type: 8, flags: 0x3, address: 0x7400, offset: 0x4348, size: 0x3048),
        ])

    @Test("lld: the bias comes from where the module starts, not from the file page two segments share")
    func lldBias() {
        let maps = MemoryMapping.parse(maps: """
            555500000000-555500001000 r--p 00000000 fe:00 42 /usr/bin/lldprog
            555500001000-555500003000 r-xp 00000000 fe:00 42 /usr/bin/lldprog
            555500003000-555500004000 r--p 00001000 fe:00 42 /usr/bin/lldprog
            555500004000-555500008000 rw-p 00001000 fe:00 42 /usr/bin/lldprog
            555500008000-55550000b000 rw-p 00000000 00:00 0
            """)
        let base: UInt64 = 0x5555_0000_0000
        #expect(Self.lldImage.loadBias(for: maps[3]) != base) // the old guess: RELRO's segment, a page off
        #expect(Self.lldImage.loadBias(for: maps[3], moduleStart: base) == base)
        #expect(Self.lldImage.loadBias(for: maps[2], moduleStart: base) == base)
        // A mapping the module's segments cannot explain gets no bias from it.
        #expect(Self.lldImage.loadBias(for: maps[3], moduleStart: base + 0x800) == nil)
        let roots = RootSetBuilder(loadELF: { $0.path == "/usr/bin/lldprog" ? Self.lldImage : nil })
            .build(mappings: maps, threads: [], liveBlocks: [])
        let regions = roots.regions.filter { $0.label.hasPrefix("/usr/bin/lldprog") }.map { [$0.start - base, $0.end - base] }
        #expect(regions == [[0x4300, 0x7320], [0x7400, 0x8000], [0x8000, 0xa448]])
    }

    @Test("an anonymous mapping merged with an mmapped chunk: only the chunk is left out")
    func mergedMapping() {
        // One VMA: a page of the program's own (pointers at 0x7000_0000), then glibc's mmapped chunk.
        let memory = InMemoryProcessMemory()
        let vma: UInt64 = 0x7000_0000
        memory.map(vma, size: 0x1000 + 0x41000 + 0x2000)
        let chunk = vma + 0x1000
        memory.store(0x41000 | 2, at: chunk + 8)
        let block = ScanBlock(address: chunk + 16, size: 0x40000)
        let maps = [MemoryMapping(start: vma, end: vma + 0x44000, perms: "rw-p")]
        let roots = RootSetBuilder().build(mappings: maps, threads: [], liveBlocks: [block], memory: memory)
        #expect(roots.regions.map { [$0.start, $0.end] } == [[vma, chunk], [chunk + 0x41000, vma + 0x44000]])
        #expect(roots.excluded.contains { $0.mapping.start == chunk && $0.mapping.end == chunk + 0x41000 })
        // Without a way to read headers, or with a header that is not glibc's: the whole mapping is out.
        #expect(RootSetBuilder().build(mappings: maps, threads: [], liveBlocks: [block]).regions.isEmpty)
        memory.store(0x41008 | 2, at: chunk + 8)
        #expect(RootSetBuilder().build(mappings: maps, threads: [], liveBlocks: [block], memory: memory).regions.isEmpty)
        // A header claiming a chunk that runs past the mapping's end: clipped to it, never a trap.
        memory.store(0x42000 | 2, at: chunk + 8)
        let short = [MemoryMapping(start: vma, end: chunk + 0x41800, perms: "rw-p")]
        let clipped = RootSetBuilder().build(mappings: short, threads: [], liveBlocks: [block], memory: memory)
        #expect(clipped.regions.map { [$0.start, $0.end] } == [[vma, chunk]])
    }

    @Test("a non-main arena's heap is left out whole, the rest of its mapping is scanned")
    func arenaHeap() {
        let memory = InMemoryProcessMemory()
        let heap: UInt64 = 0x7f00_0400_0000 // HEAP_MAX_SIZE-aligned
        memory.map(heap - 0x2000, size: 0x2000 + 0x10000)
        let chunk = heap + 0x8a0
        memory.store(48 | 5, at: chunk + 8)       // in use, NON_MAIN_ARENA | PREV_INUSE
        memory.store(0x1000 | 1, at: chunk + 48 + 8)
        let block = ScanBlock(address: chunk + 16, size: 40)
        let maps = [MemoryMapping(start: heap - 0x2000, end: heap + 0x10000, perms: "rw-p")]
        let roots = RootSetBuilder().build(mappings: maps, threads: [], liveBlocks: [block], memory: memory)
        #expect(roots.regions.map { [$0.start, $0.end] } == [[heap - 0x2000, heap]])
    }

    @Test("a cached stack of an exited thread: scanned only from its last stack pointer up")
    func exitedThreadStack() {
        let maps = MemoryMapping.parse(maps: """
            7f0000000000-7f0000001000 ---p 00000000 00:00 0
            7f0000001000-7f0000800000 rw-p 00000000 00:00 0
            7f0001000000-7f0001001000 ---p 00000000 00:00 0
            7f0001001000-7f0001800000 rw-p 00000000 00:00 0
            """)
        let exited = [ExitedThread(tid: 11, stackPointer: 0x7f00_007f_f000), ExitedThread(tid: 12, stackPointer: 0x7f00_007f_e000),
                      ExitedThread(tid: 13, stackPointer: 0x7f00_017f_e000)]
        // Thread 14 runs on the stack thread 13 left: that one is a live stack.
        let live = [ThreadRoots(tid: 14, stackPointer: 0x7f00_017f_0000, registers: [])]
        let roots = RootSetBuilder().build(mappings: maps, threads: live, liveBlocks: [], exitedThreads: exited)
        let regions: [[UInt64]] = roots.regions.map { [$0.start, $0.end] }.sorted { $0[0] < $1[0] }
        let expected: [[UInt64]] = [
            [0x7f00_007f_e000, 0x7f00_0080_0000],           // thread 12 exited last on this stack
            [0x7f00_017e_ff80, 0x7f00_0180_0000],           // the live thread's stack, from SP - 128
        ]
        #expect(regions == expected)
        #expect(roots.excluded.contains { $0.reason.contains("exited thread 12") && $0.mapping.end == 0x7f00_007f_e000 })

        // A stack carved out of a malloc'd block (pthread_attr_setstack) is that block's contents:
        // its mapping is judged as allocator memory, not as a dead stack.
        let inBlock = RootSetBuilder().build(mappings: maps, threads: [], liveBlocks: [ScanBlock(address: 0x7f00_0000_2010, size: 0x10000)],
                                             exitedThreads: [ExitedThread(tid: 15, stackPointer: 0x7f00_0000_9000)])
        #expect(!inBlock.regions.contains { $0.label.contains("exited thread") })
        #expect(!inBlock.regions.contains { $0.start < 0x7f00_0080_0000 && $0.end > 0x7f00_0000_1000 })
    }
}
