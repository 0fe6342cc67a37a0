import Glibc
import SwiftLeakCore
import SwiftLeakScanner
import Testing

nonisolated(unsafe) private var rootSlot: UInt = 0

@Suite("Scanning this very process through /proc/self/mem")
struct RealProcessTests {
    @Test("a block held by a global of this binary, and one held only by that block, are reachable")
    func globalsAreRoots() throws {
        let outer = try #require(malloc(64))
        let inner = try #require(malloc(40))
        defer {
            rootSlot = 0
            free(inner)
            free(outer)
        }
        memset(outer, 0, 64)
        memset(inner, 0, 40)
        outer.storeBytes(of: UInt(bitPattern: inner), toByteOffset: 16, as: UInt.self)
        rootSlot = UInt(bitPattern: outer)

        let maps = MemoryMapping.parse(maps: readText("/proc/self/maps"))
        let blocks = [ScanBlock(address: UInt64(UInt(bitPattern: outer)), size: 64),
                      ScanBlock(address: UInt64(UInt(bitPattern: inner)), size: 40)]
            .sorted { $0.address < $1.address }
        // No threads: only module data and anonymous memory are roots, so the global must be found
        // through the ELF sections of this test binary at the right run-time address.
        let roots = RootSetBuilder().build(mappings: maps, threads: [], liveBlocks: blocks)
        let slot = withUnsafePointer(to: &rootSlot) { UInt64(UInt(bitPattern: $0)) }
        let holder = try #require(roots.regions.first { $0.start <= slot && slot < $0.end })
        #expect(holder.label.hasSuffix(".bss") || holder.label.hasSuffix(".data"))
        let reader = try #require(ProcPIDMemReader(pid: getpid()))
        var configuration = LeakScanner.Configuration()
        configuration.mappings = maps
        let result = LeakScanner.scan(blocks: blocks, rootSet: roots, memory: reader, configuration: configuration)
        #expect(result.kinds == [.stillReachable, .stillReachable])
        #expect(result.statistics.rootBytes == roots.totalBytes)
        #expect(result.statistics.wordsScanned > 1000)

        // Without the global, and without any thread stack, nothing points at them any more
        // (unless a stale copy lies in some anonymous root mapping: then they would be reachable,
        // never wrongly lost).
        rootSlot = 0
        let again = LeakScanner.scan(blocks: blocks, rootSet: roots, memory: reader, configuration: configuration)
        let outerIndex = blocks.firstIndex { $0.address == UInt64(UInt(bitPattern: outer)) }!
        let innerIndex = 1 - outerIndex
        print("this process: \(roots.regions.count) root regions, \(roots.totalBytes) bytes, scanned in " +
              "\(result.statistics.cpuSeconds) s CPU; without the global: \(again.kinds[outerIndex]), \(again.kinds[innerIndex])")
        if again.kinds[outerIndex] == .definitelyLost {
            #expect(again.kinds[innerIndex] == .indirectlyLost)
            #expect(again.indirectBytesCharged[outerIndex] == 40)
            #expect(again.leaderOf[innerIndex] == Int32(outerIndex))
        }
    }

    @Test("the /proc/PID/mem reader gives short counts at unmapped memory")
    func shortReads() throws {
        let reader = try #require(ProcPIDMemReader(pid: getpid()))
        let maps = MemoryMapping.parse(maps: readText("/proc/self/maps"))
        // The last page of a readable mapping followed by a hole.
        let pairs = zip(maps, maps.dropFirst())
        let edge = try #require(pairs.first { $0.0.isReadable && $0.0.end < $0.1.start }?.0)
        var buffer = [UInt8](repeating: 0, count: 8192)
        let got = buffer.withUnsafeMutableBytes { reader.read(edge.end - 4096, into: $0) }
        #expect(got == 4096)
        let none = buffer.withUnsafeMutableBytes { reader.read(edge.end, into: $0) }
        #expect(none == 0)
        #expect(ProcPIDMemReader(pid: -5) == nil)
    }
}
