import Glibc
import SwiftLeakCore
import SwiftLeakScanner
import Testing

@Suite("Root set")
struct RootSetTests {
    /// A program mapped with bias 0x400000 whose RW segment holds .got, .data, a writable .rodata,
    /// Swift metadata, and a .bss running past the file into an anonymous mapping.
    static let program = ELFImage(
        fileType: 3, machine: 62,
        segments: [
            ELFSegment(type: 1, flags: 4, offset: 0, virtualAddress: 0, fileSize: 0x1000, memorySize: 0x1000),
            ELFSegment(type: 1, flags: 5, offset: 0x1000, virtualAddress: 0x1000, fileSize: 0x1000, memorySize: 0x1000),
            ELFSegment(type: 1, flags: 6, offset: 0x2000, virtualAddress: 0x3000, fileSize: 0x1b00, memorySize: 0x2800),
        ],
        sections: [
            ELFSection(name: ".text", flags: 0x6, address: 0x1000, offset: 0x1000, size: 0x800),
            ELFSection(name: ".got", flags: 0x3, address: 0x3000, offset: 0x2000, size: 0x100),
            ELFSection(name: ".data", flags: 0x3, address: 0x3100, offset: 0x2100, size: 0x700),
            ELFSection(name: ".rodata", flags: 0x3, address: 0x3800, offset: 0x2800, size: 0x200),
            ELFSection(name: "swift5_typeref", flags: 0x3, address: 0x3a00, offset: 0x2a00, size: 0x100),
            ELFSection(name: ".tbss", type: 8, flags: 0x403, address: 0x3b00, offset: 0x2b00, size: 0x100),
            ELFSection(name: ".bss", type: 8, flags: 0x3, address: 0x3b00, offset: 0x2b00, size: 0x1d00),
            ELFSection(name: ".comment", flags: 0x30, address: 0, offset: 0x3000, size: 0x20),
        ])

    static let maps = MemoryMapping.parse(maps: """
        00400000-00401000 r--p 00000000 fe:01 77 /usr/bin/prog
        00401000-00402000 r-xp 00001000 fe:01 77 /usr/bin/prog
        00403000-00405000 rw-p 00002000 fe:01 77 /usr/bin/prog
        00405000-00407000 rw-p 00000000 00:00 0
        00600000-00700000 rw-p 00000000 00:00 0 [heap]
        7f0000000000-7f0000100000 rw-p 00000000 00:00 0
        7f0000200000-7f0000210000 rw-p 00000000 00:00 0
        7f0000300000-7f0000301000 rw-s 00000000 00:01 9 /memfd:swiftleak-ring (deleted)
        7f0000310000-7f0000311000 rw-p 00000000 00:00 0 [anon:swiftleak-tables]
        7f0000320000-7f0000321000 rw-p 00000000 00:00 0 [anon:glibc.pthread_stack]
        7f0000400000-7f0000401000 r--p 00000000 00:00 0
        7f0000500000-7f0000501000 ---p 00000000 00:00 0
        7f0000600000-7f0000601000 rwxp 00000000 00:00 0
        7f0000700000-7f0000708000 rw-p 00000000 00:00 0
        7f0000800000-7f0000802000 rw-p 00000000 fe:01 88 /usr/lib/libnotelf.so
        7f0000900000-7f0000901000 rw-s 00000000 00:05 3 /dev/dri/card0
        7f0000a00000-7f0000a01000 rw-p 00000000 00:05 4 /dev/zero
        7ffd00000000-7ffd00010000 rw-p 00000000 00:00 0 [stack]
        7ffd00100000-7ffd00104000 r--p 00000000 00:00 0 [vvar]
        7ffd00104000-7ffd00106000 r-xp 00000000 00:00 0 [vdso]
        ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]
        """)

    static let threads = [
        ThreadRoots(tid: 100, stackPointer: 0x7ffd_0000_1000, registers: [1, 2, 3]),
        ThreadRoots(tid: 101, stackPointer: 0x7f00_0070_4000, registers: [4, 5]),
    ]
    static let liveBlocks = [ScanBlock(address: 0x600010, size: 32), ScanBlock(address: 0x7f00_0000_0010, size: 64)]

    func build(loadELF: ((MemoryMapping) -> ELFImage?)? = nil) -> RootSet {
        let builder = RootSetBuilder(loadELF: loadELF ?? { $0.path == "/usr/bin/prog" ? RootSetTests.program : nil })
        return builder.build(mappings: RootSetTests.maps, threads: RootSetTests.threads, liveBlocks: RootSetTests.liveBlocks)
    }

    @Test("roots: stacks from SP - 128, module sections, .bss continuation, plain anonymous memory")
    func synthetic() {
        let roots = build()
        let regions = roots.regions.sorted { $0.start < $1.start }.map { [$0.start, $0.end] }
        #expect(regions == [
            [0x403000, 0x403100],            // .got
            [0x403100, 0x403800],            // .data (not .rodata, swift5_typeref, .tbss)
            [0x403b00, 0x405000],            // .bss, file-backed part
            [0x405000, 0x405800],            // .bss, anonymous continuation
            [0x406000, 0x407000],            // the rest of that anonymous mapping
            [0x7f00_0020_0000, 0x7f00_0021_0000],  // plain anonymous
            [0x7f00_0032_0000, 0x7f00_0032_1000],  // named anonymous (not ours)
            [0x7f00_0070_3f80, 0x7f00_0070_8000],  // thread 101's stack from SP - 128
            [0x7f00_0080_0000, 0x7f00_0080_2000],  // non-ELF file: whole mapping
            [0x7f00_00a0_0000, 0x7f00_00a0_1000],  // /dev/zero
            [0x7ffd_0000_0f80, 0x7ffd_0001_0000],  // main stack from SP - 128
        ])
        #expect(roots.registerWords == [1, 2, 3, 4, 5])
        let labels = Dictionary(roots.regions.map { ($0.start, $0.label) }, uniquingKeysWith: { a, _ in a })
        #expect(labels[0x403100] == "/usr/bin/prog .data")
        #expect(labels[0x405000] == "/usr/bin/prog .bss")
        #expect(labels[0x7ffd_0000_0f80] == "stack of thread 100")
        let reasons = Dictionary(roots.excluded.map { ($0.mapping.start, $0.reason) }, uniquingKeysWith: { a, _ in a })
        #expect(reasons[0x600000] == "the brk heap")
        #expect(reasons[0x7f00_0000_0000] == "holds live block 0x7F0000000010: allocator memory")
        #expect(reasons[0x7f00_0030_0000]?.hasPrefix("swiftleak's own memory") == true)
        #expect(reasons[0x7f00_0031_0000]?.hasPrefix("swiftleak's own memory") == true)
        #expect(reasons[0x7f00_0040_0000] == "read-only")
        #expect(reasons[0x7f00_0050_0000] == "not readable")
        #expect(reasons[0x7f00_0060_0000] == "executable")
        #expect(reasons[0x7f00_0090_0000] == "device file")
        #expect(reasons[0x400000] == "read-only")
        #expect(reasons[0x401000] == "executable")
        #expect(reasons[0x7ffd_0010_0000] == "read-only")
        #expect(reasons[0x7ffd_0010_4000] == "executable")
        #expect(reasons[0xffff_ffff_ff60_0000] == "not readable")
        #expect(roots.excluded.count == 13)
    }

    @Test("without ELF headers a module's writable mapping is scanned whole")
    func fallback() {
        let roots = build(loadELF: { _ in nil })
        let regions = roots.regions.sorted { $0.start < $1.start }.prefix(2).map { [$0.start, $0.end] }
        #expect(regions == [[0x403000, 0x405000], [0x405000, 0x407000]])
    }

    @Test("a stack without a thread in it is not scanned; a live block cuts a stack mapping")
    func stackEdges() {
        let builder = RootSetBuilder(loadELF: { _ in nil })
        let maps = [
            MemoryMapping(start: 0x7ffd_0000_0000, end: 0x7ffd_0001_0000, perms: "rw-p", path: "[stack]"),
            MemoryMapping(start: 0x7f00_0000_0000, end: 0x7f00_0010_0000, perms: "rw-p"),
        ]
        let noThreads = builder.build(mappings: maps, threads: [], liveBlocks: [])
        #expect(noThreads.regions.map(\.start) == [0x7f00_0000_0000])
        let merged = builder.build(
            mappings: maps, threads: [ThreadRoots(tid: 7, stackPointer: 0x7f00_0000_8000, registers: [])],
            liveBlocks: [ScanBlock(address: 0x7f00_0004_0010, size: 16)])
        #expect(merged.regions.map { [$0.start, $0.end] } == [[0x7f00_0000_7f80, 0x7f00_0004_0010]])
    }

    @Test("a pointer on the stack above SP - 128 is a root, one below is not")
    func stackRedZone() {
        let s = Scenario(count: 2)
        let stack: UInt64 = 0x7ffd_0000_0000
        let sp = stack + 0x1000
        s.memory.map(stack, size: 0x2000)
        s.memory.store(s.address(0), at: sp - 64)   // in the red zone: live
        s.memory.store(s.address(1), at: sp - 200)  // below it: dead
        let maps = [
            MemoryMapping(start: Scenario.heapStart, end: Scenario.heapStart + 0x10000, perms: "rw-p", path: "[heap]"),
            MemoryMapping(start: stack, end: stack + 0x2000, perms: "rw-p", path: "[stack]"),
        ]
        let roots = RootSetBuilder().build(mappings: maps, threads: [ThreadRoots(tid: 1, stackPointer: sp, registers: [])],
                                           liveBlocks: s.blocks)
        #expect(roots.regions.map { [$0.start, $0.end] } == [[sp - 128, stack + 0x2000]])
        let r = LeakScanner.scan(blocks: s.blocks, rootSet: roots, memory: s.memory)
        #expect(r.kinds == [.stillReachable, .definitelyLost])
    }

    @Test("this process: libswiftCore's metadata and writable .rodata are not roots, its .data is")
    func realProcess() throws {
        let maps = MemoryMapping.parse(maps: readText("/proc/self/maps"))
        var local: UInt64 = 0
        let sp = withUnsafeMutablePointer(to: &local) { UInt64(UInt(bitPattern: $0)) }
        let roots = RootSetBuilder().build(
            mappings: maps, threads: [ThreadRoots(tid: getpid(), stackPointer: sp, registers: [])], liveBlocks: [])
        #expect(roots.excluded.contains { $0.mapping.path == "[heap]" && $0.reason == "the brk heap" })
        #expect(roots.regions.contains { $0.label.hasPrefix("stack of thread") && $0.start <= sp && sp < $0.end })

        let coreMappings = maps.filter { $0.path.hasSuffix("/libswiftCore.so") }
        let path = try #require(coreMappings.first).path
        let image = try ELFImage.load(path: path)
        let rw = try #require(coreMappings.first { $0.isWritable })
        let bias = try #require(image.loadBias(for: rw))
        let coreRoots = roots.regions.filter { $0.label.hasPrefix(path + " ") }
        #expect(coreRoots.contains { $0.label == path + " .data" })
        #expect(coreRoots.contains { $0.label == path + " .bss" })
        for section in image.sections where section.name.hasPrefix("swift5_") && section.name != "swift5_backtrace" || section.name == ".rodata" {
            let start = section.address + bias
            let end = start + section.size
            #expect(!coreRoots.contains { $0.start < end && start < $0.end }, "\(section.name) is scanned")
        }
        // Far less than the writable mappings themselves.
        let rootBytes = coreRoots.reduce(UInt64(0)) { $0 + $1.size }
        let writableBytes = coreMappings.filter(\.isWritable).reduce(UInt64(0)) { $0 + $1.size }
        #expect(rootBytes > 0 && rootBytes * 2 < writableBytes)

        // libc's .bss runs into the anonymous mapping after its last file page.
        let libc = maps.filter { $0.path.hasSuffix("/libc.so.6") }
        let libcEnd = libc.last?.end ?? 0
        let libcBSS = try #require(roots.regions.first { $0.label.hasSuffix("/libc.so.6 .bss") && $0.start >= libcEnd })
        #expect(libcBSS.start == libcEnd)
    }
}
