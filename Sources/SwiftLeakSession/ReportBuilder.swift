import SwiftLeakCore
import SwiftLeakRecorder
import SwiftLeakSymbolizer
import SwiftLeakTracer

/// Turns the recorder's live blocks (and the exit scan's verdicts) into loss records.
struct ReportBuilder {
    var ring: EventRing
    var symbolizer: Symbolizer

    /// Fills in heap totals and loss records. `kinds[i]` is the verdict on `final.blocks[i]`, and
    /// `indirectBytes[i]` what a definitely lost leader was charged; without a scan every block is
    /// `.unclassified`.
    func build(base: ProcessReport, final: Recorder.FinalState, kinds: [LeakKind]?, indirectBytes: [UInt64]?) -> ProcessReport {
        var report = base
        let stats = final.statistics
        let blocks = final.blocks
        report.heap.allocations = stats.allocations
        report.heap.frees = stats.frees
        report.heap.bytesAllocated = stats.bytesAllocated
        report.heap.inUseAtExit = ByteCount()
        if stats.abandonedSlots > 0 {
            report.warnings.append("\(stats.abandonedSlots) allocation call(s) were cut short by the program's end; they are not counted")
        }

        // Group by (kind, function, stack id) first: cheap integer keys for millions of blocks.
        struct GroupKey: Hashable {
            var kind: LeakKind
            var function: AllocationFunction
            var stack: UInt32
        }
        struct Totals {
            var bytes: UInt64 = 0
            var blocks: UInt64 = 0
            var indirect: UInt64 = 0
            var generation: UInt8 = 0
        }
        var groups: [GroupKey: Totals] = [:]
        var summary = [ByteCount](repeating: ByteCount(), count: LeakKind.allCases.count)
        // Neighbouring blocks often share a key: sum runs first, touch the dictionary per run.
        var runKey: GroupKey?
        var run = Totals()
        func flush() {
            guard let key = runKey else { return }
            var totals = groups[key] ?? Totals(generation: run.generation)
            totals.bytes += run.bytes
            totals.blocks += run.blocks
            totals.indirect += run.indirect
            groups[key] = totals
        }
        for index in 0..<blocks.count {
            let kind = kinds?[index] ?? .unclassified
            let size = blocks.size(index)
            summary[kind.index].add(bytes: size)
            let key = GroupKey(kind: kind, function: blocks.function(index), stack: blocks.stacks[index])
            if key != runKey {
                flush()
                runKey = key
                run = Totals(generation: blocks.moduleGeneration(index))
            }
            run.bytes += size
            run.blocks += 1
            run.indirect += indirectBytes?[index] ?? 0
        }
        flush()
        report.summary = [:]
        for kind in LeakKind.allCases where summary[kind.index].blocks > 0 {
            report.summary[kind] = summary[kind.index]
            report.heap.inUseAtExit.add(bytes: summary[kind.index].bytes, blocks: summary[kind.index].blocks)
        }

        // Then merge groups whose stacks are equal (a race in the interposer can intern one stack
        // twice) and symbolize each distinct stack once.
        struct RecordKey: Hashable {
            var kind: LeakKind
            var function: AllocationFunction
            var frames: [UInt64]
        }
        var merged: [RecordKey: Totals] = [:]
        for (key, totals) in groups {
            let recordKey = RecordKey(kind: key.kind, function: key.function, frames: ring.stack(key.stack) ?? [])
            var sum = merged[recordKey] ?? Totals(generation: totals.generation)
            sum.bytes += totals.bytes
            sum.blocks += totals.blocks
            sum.indirect += totals.indirect
            merged[recordKey] = sum
        }
        let resolver = FrameResolver(modules: final.modules, symbolizer: symbolizer)
        report.lossRecords = merged.map { key, totals in
            LossRecord(kind: key.kind, bytes: totals.bytes, blocks: totals.blocks, indirectBytes: totals.indirect,
                       function: key.function,
                       stack: Self.cutBelowMain(key.frames.flatMap { resolver.frames(for: $0, generation: totals.generation) }))
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
