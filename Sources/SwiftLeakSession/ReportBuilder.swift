import SwiftLeakCore
import SwiftLeakRecorder
import SwiftLeakReports
import SwiftLeakSymbolizer
import SwiftLeakTracer

/// Turns the recorder's live blocks (and the exit scan's verdicts) into loss records.
struct ReportBuilder {
    var options: ReportOptions
    var ring: EventRing
    var symbolizer: Symbolizer

    func build(base: ProcessReport, table: LiveBlockTable, stats: RecorderStatistics,
               modules: [ModuleSpan], exitStop: ExitStop?) -> ProcessReport {
        var report = base
        report.heap.allocations = stats.allocations
        report.heap.frees = stats.frees
        report.heap.bytesAllocated = stats.bytesAllocated
        report.heap.inUseAtExit = ByteCount(bytes: table.totalBytes, blocks: UInt64(table.count))
        if stats.abandonedSlots > 0 {
            report.warnings.append("\(stats.abandonedSlots) allocation call(s) were cut short by the program's end; they are not counted")
        }

        let blocks = table.allBlocks().sorted { $0.address < $1.address }
        let kinds = [LeakKind](repeating: .unclassified, count: blocks.count)
        let indirectCharged = [UInt64](repeating: 0, count: blocks.count)
        report.scanRan = false
        report.scanNote = "the exit scan is not implemented yet; every block not freed is listed as not freed"

        report.summary = [:]
        struct Key: Hashable {
            var kind: LeakKind
            var function: AllocationFunction
            var frames: [UInt64]
        }
        var groups: [Key: (bytes: UInt64, blocks: UInt64, indirect: UInt64, generation: UInt8)] = [:]
        var stackCache: [UInt32: [UInt64]] = [:]
        for (index, block) in blocks.enumerated() {
            let kind = kinds[index]
            report.summary[kind, default: ByteCount()].add(bytes: block.size)
            let frames: [UInt64]
            if let cached = stackCache[block.stack] {
                frames = cached
            } else {
                frames = ring.stack(block.stack) ?? []
                stackCache[block.stack] = frames
            }
            let key = Key(kind: kind, function: block.function, frames: frames)
            var group = groups[key] ?? (0, 0, 0, block.moduleGeneration)
            group.bytes += block.size
            group.blocks += 1
            group.indirect += indirectCharged[index]
            groups[key] = group
        }
        let resolver = FrameResolver(modules: modules, symbolizer: symbolizer)
        report.lossRecords = groups.map { key, group in
            LossRecord(kind: key.kind, bytes: group.bytes, blocks: group.blocks, indirectBytes: group.indirect,
                       function: key.function,
                       stack: Self.cutBelowMain(key.frames.flatMap { resolver.frames(for: $0, generation: group.generation) }))
        }
        report.lossRecords.sort(by: Self.valgrindOrder)
        return report
    }

    /// Frames below `main` (the C library's start-up code) say nothing about a leak: Valgrind
    /// stops its stacks at main too.
    static func cutBelowMain(_ frames: [SymbolizedFrame]) -> [SymbolizedFrame] {
        guard let main = frames.firstIndex(where: { $0.function == "main" && !$0.inlined }) else { return frames }
        return Array(frames[...main])
    }

    /// Valgrind's order: by total bytes (direct + indirect) ascending, then by blocks, then kind.
    static func valgrindOrder(_ a: LossRecord, _ b: LossRecord) -> Bool {
        let totalA = a.bytes + a.indirectBytes, totalB = b.bytes + b.indirectBytes
        if totalA != totalB { return totalA < totalB }
        if a.blocks != b.blocks { return a.blocks < b.blocks }
        if a.kind != b.kind { return a.kind > b.kind }
        return a.stack.map(\.ip).lexicographicallyPrecedes(b.stack.map(\.ip))
    }
}

/// Symbolizes the captured return addresses of a stack against the module map of its time.
struct FrameResolver {
    var modules: [ModuleSpan]
    var symbolizer: Symbolizer

    func frames(for ip: UInt64, generation: UInt8) -> [SymbolizedFrame] {
        let module = modules.module(containing: ip, generation: generation)
        // Every captured address is a return address: the line wanted is the call's, at ip - 1.
        var frames = symbolizer.symbolize(ip, in: module, isReturnAddress: true)
        if let module {
            for index in frames.indices where frames[index].function == nil {
                frames[index].moduleOffset = ip &- module.loadBias
                frames[index].object = module.path
            }
        }
        return frames
    }
}
