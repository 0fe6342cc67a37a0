import SwiftLeakCore
import SwiftLeakScanner

/// A fake process for classifier tests: a heap of blocks (glibc-like layout: 16-byte header, 16-byte
/// alignment) and one page of root memory.
final class Scenario {
    static let heapStart: UInt64 = 0x1000_0000
    static let rootStart: UInt64 = 0x2000_0000
    let memory = InMemoryProcessMemory()
    let blocks: [ScanBlock]
    var registers: [UInt64] = []
    var mappings: [MemoryMapping] = []

    init(sizes: [UInt64]) {
        var address = Scenario.heapStart + 16
        var blocks: [ScanBlock] = []
        for size in sizes {
            blocks.append(ScanBlock(address: address, size: size))
            address += ((size + 15) & ~15) + 16
        }
        self.blocks = blocks
        memory.map(Scenario.heapStart, size: Int(address - Scenario.heapStart) + 4096)
        memory.map(Scenario.rootStart, size: 4096)
    }

    convenience init(count: Int, size: UInt64 = 32) {
        self.init(sizes: Array(repeating: size, count: count))
    }

    func address(_ block: Int) -> UInt64 { blocks[block].address }

    /// Stores in block `from`, at byte `offset`, a pointer to block `to` plus `plus`.
    func link(_ from: Int, at offset: UInt64 = 0, to: Int, plus: UInt64 = 0) {
        memory.store(address(to) + plus, at: address(from) + offset)
    }

    /// Stores a word in root slot `slot`.
    func root(_ slot: Int, _ value: UInt64) {
        memory.store(value, at: Scenario.rootStart + UInt64(slot) * 8)
    }

    func store(_ value: UInt64, inBlock block: Int, at offset: UInt64) {
        memory.store(value, at: address(block) + offset)
    }

    func scan(heuristics: LeakHeuristics = .all) -> ScanResult {
        var configuration = LeakScanner.Configuration()
        configuration.heuristics = heuristics
        configuration.mappings = mappings
        return LeakScanner.scan(
            blocks: blocks,
            roots: [RootRegion(start: Scenario.rootStart, end: Scenario.rootStart + 4096, label: "root")],
            registerWords: registers, memory: memory, configuration: configuration)
    }
}
