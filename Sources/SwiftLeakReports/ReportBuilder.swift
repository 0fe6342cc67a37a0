import SwiftLeakCore
import SwiftLeakModel
import SwiftLeakSymbolizer

/// The one place a `ProcessReport` is made: the heap model at the end, the exit scan's verdicts and
/// the symbols, for `run` (fed by the ring) and `analyze` (fed by a trace) alike. It reads values
/// only, so both commands print the same report from the same stream.
public enum ReportBuilder {
    /// Growth suspects need a trend over this long a run, this close to a straight rise, and
    /// this many blocks still live.
    static let growthMinimumSeconds = 0.2
    static let growthMinimumCorrelation = 0.8
    static let growthMinimumBlocks: UInt64 = 4

    /// `exit.verdicts.kinds[i]` is the verdict on `heap.blocks[i]`; without verdicts every block is
    /// `.unclassified`.
    public static func build(process: ProcessFacts, heap: FinalHeap, exit: ExitFacts, symbols: SymbolTable,
                             options: ReportOptions) -> ProcessReport {
        var report = ProcessReport(pid: process.pid, ppid: process.ppid, command: process.command)
        describeEnd(exit, heap: heap, in: &report)
        let stats = heap.statistics
        let blocks = heap.blocks
        let kinds = exit.verdicts.flatMap { $0.kinds.count == blocks.count ? $0.kinds : nil }
        let indirectBytes = exit.verdicts.flatMap { $0.indirectBytes.count == blocks.count ? $0.indirectBytes : nil }
        report.heap.allocations = stats.allocations
        report.heap.frees = stats.frees
        report.heap.bytesAllocated = stats.bytesAllocated

        // Group by (kind, function, stack id) first: cheap integer keys for millions of blocks,
        // numbered in the order first seen (by address).
        struct GroupKey: Hashable {
            var kind: LeakKind
            var function: AllocationFunction
            var stack: UInt32

            /// Stack in the low 32 bits, the function's number and the kind's index above it.
            var packed: UInt64 { UInt64(stack) | UInt64(function.rawValue) << 32 | UInt64(kind.index) << 40 }
        }
        struct Totals {
            var bytes: UInt64 = 0
            var blocks: UInt64 = 0
            var indirect: UInt64 = 0
            var generation: UInt8 = 0
        }
        var groupNumbers = PackedKeyIndex()
        var groupKeys: [GroupKey] = []
        var groupTotals: [Totals] = []
        var summary = [ByteCount](repeating: ByteCount(), count: LeakKind.allCases.count)
        // Neighbouring blocks often share a key: sum runs first, touch the table per run.
        var runKey: GroupKey?
        var run = Totals()
        func flush() {
            guard let key = runKey else { return }
            let (number, isNew) = groupNumbers.number(of: key.packed)
            if isNew {
                groupKeys.append(key)
                groupTotals.append(Totals(generation: run.generation))
            }
            groupTotals[number].bytes += run.bytes
            groupTotals[number].blocks += run.blocks
            groupTotals[number].indirect += run.indirect
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
        for kind in LeakKind.allCases where summary[kind.index].blocks > 0 {
            report.summary[kind] = summary[kind.index]
            report.heap.inUseAtExit.add(bytes: summary[kind.index].bytes, blocks: summary[kind.index].blocks)
        }
        // Per stack, in the order first seen: the function and module generation of its first
        // live block, and the bytes and blocks still reachable (or unclassified) at exit, for
        // growth suspects. A stack's first group is the one its first block started.
        var stackNumbers = PackedKeyIndex(expectedCount: groupKeys.count)
        var stackFirsts: [(function: AllocationFunction, generation: UInt8)] = []
        var stackReachable: [ByteCount] = []
        for (key, totals) in zip(groupKeys, groupTotals) {
            let (number, isNew) = stackNumbers.number(of: UInt64(key.stack))
            if isNew {
                stackFirsts.append((key.function, totals.generation))
                stackReachable.append(ByteCount())
            }
            if key.kind == .stillReachable || key.kind == .unclassified {
                stackReachable[number].add(bytes: totals.bytes, blocks: totals.blocks)
            }
        }
        var reachable: [(stack: UInt32, held: ByteCount, function: AllocationFunction, generation: UInt8)] = []
        for (number, held) in stackReachable.enumerated() where held.blocks > 0 {
            reachable.append((UInt32(truncatingIfNeeded: stackNumbers.keys[number]), held,
                              stackFirsts[number].function, stackFirsts[number].generation))
        }

        // Then merge groups whose stacks are equal (a race in the interposer can intern one stack
        // twice) and symbolize each distinct stack once.
        struct RecordKey: Hashable {
            var kind: LeakKind
            var function: AllocationFunction
            var frames: ArraySlice<UInt64>
        }
        var merged: [RecordKey: Totals] = [:]
        for (key, totals) in zip(groupKeys, groupTotals) {
            let recordKey = RecordKey(kind: key.kind, function: key.function, frames: heap.stacks.frames(key.stack))
            var sum = merged[recordKey] ?? Totals(generation: totals.generation)
            sum.bytes += totals.bytes
            sum.blocks += totals.blocks
            sum.indirect += totals.indirect
            merged[recordKey] = sum
        }
        var names = NameCache(demangle: options.demangle)
        report.lossRecords = merged.map { key, totals in
            LossRecord(kind: key.kind, bytes: totals.bytes, blocks: totals.blocks, indirectBytes: totals.indirect,
                       function: key.function,
                       stack: symbolize(key.frames, generation: totals.generation, heap: heap, symbols: symbols, names: &names))
        }
        sortInValgrindOrder(&report.lossRecords)

        report.growthSuspects = growthSuspects(heap: heap, reachable: reachable, symbols: symbols, names: &names)
        return report
    }

    /// Sets what the report says of the process's end from `exit`: its status, the warnings, and
    /// whether and how the scan ran. The rest of the report (the records, the summary) reads only
    /// the heap, the verdicts and the symbols, so `run` builds it from the exit stop on, before the
    /// program is gone, and sets these once its status is known (`exit.verdicts` must be the ones
    /// it was built with).
    public static func describeEnd(_ exit: ExitFacts, heap: FinalHeap, in report: inout ProcessReport) {
        report.exit = exit.exit
        report.warnings = []
        let abandoned = heap.statistics.abandonedSlots
        if abandoned > 0 {
            report.warnings.append("\(abandoned) allocation call(s) were cut short by the program's end; they are not counted")
        }
        report.warnings += exit.warnings
        report.scanRan = exit.verdicts.map { $0.kinds.count == heap.blocks.count } ?? false
        report.scanNote = report.scanRan ? nil
            : exit.scanNote ?? (exit.verdicts != nil ? "the scan's verdicts do not match the live blocks" : nil)
        report.scanBytes = exit.scanBytes
        report.scanSeconds = exit.scanSeconds
        report.freezeSeconds = exit.freezeSeconds
    }

    static func symbolize(_ frames: ArraySlice<UInt64>, generation: UInt8, heap: FinalHeap, symbols: SymbolTable,
                          names: inout NameCache) -> [SymbolizedFrame] {
        var result: [SymbolizedFrame] = []
        result.reserveCapacity(frames.count)
        for ip in frames {
            // Stacks share most frames: the frames shown for an address (of a module generation)
            // are worked out once per report, and where `main` is among them. Addresses above 48
            // bits (never code) are not cached.
            guard ip >> 48 == 0 else {
                let shown = displayFrames(ip, generation: generation, heap: heap, symbols: symbols, names: &names)
                if let main = mainFrame(in: shown) { return result + shown[...main] }
                result += shown
                continue
            }
            let (number, isNew) = names.shownFrameNumbers.number(of: ip | UInt64(generation) << 48)
            if isNew {
                let shown = displayFrames(ip, generation: generation, heap: heap, symbols: symbols, names: &names)
                names.shownFrames.append(shown)
                names.mainFrames.append(mainFrame(in: shown))
            }
            // Frames below `main` (the C library's start-up code) say nothing about a leak:
            // Valgrind stops its stacks at main too.
            if let main = names.mainFrames[number] {
                result += names.shownFrames[number][...main]
                return result
            }
            result += names.shownFrames[number]
        }
        return result
    }

    /// The index of the frame that is `main` itself (not code inlined into it), if any.
    static func mainFrame(in frames: [SymbolizedFrame]) -> Int? {
        frames.firstIndex { $0.function == "main" && !$0.inlined }
    }

    static func displayFrames(_ ip: UInt64, generation: UInt8, heap: FinalHeap, symbols: SymbolTable,
                              names: inout NameCache) -> [SymbolizedFrame] {
        var result = symbols.frames(for: ip, generation: generation, modules: heap.modules)
        for index in result.indices {
            result[index].function = result[index].function.map { names.display($0) }
        }
        return result
    }

    /// Stacks whose live bytes rose through the run and still held reachable blocks at exit.
    /// `reachable`: per stack with such blocks, what it holds, and the function and module
    /// generation of its first live block.
    static func growthSuspects(heap: FinalHeap,
                               reachable: [(stack: UInt32, held: ByteCount, function: AllocationFunction, generation: UInt8)],
                               symbols: SymbolTable, names: inout NameCache) -> [GrowthSuspect] {
        let duration = Double(heap.duration) / 1e9
        guard duration >= growthMinimumSeconds else { return [] }
        var suspects: [GrowthSuspect] = []
        for (stack, held, function, generation) in reachable
        where held.blocks >= growthMinimumBlocks && Int(stack) < heap.sites.count {
            let site = heap.sites[Int(stack)]
            let trend = site.trend(duration: duration)
            guard trend.correlation >= growthMinimumCorrelation, trend.bytesPerSecond > 0 else { continue }
            suspects.append(GrowthSuspect(
                function: function,
                stack: symbolize(heap.stacks.frames(stack), generation: generation, heap: heap,
                                 symbols: symbols, names: &names),
                bytes: held.bytes, blocks: held.blocks,
                bytesPerSecond: trend.bytesPerSecond, blocksPerSecond: trend.blocksPerSecond))
        }
        suspects.sort { a, b in
            if a.bytesPerSecond != b.bytesPerSecond { return a.bytesPerSecond > b.bytesPerSecond }
            return a.stack.lazy.map { $0.ip }.lexicographicallyPrecedes(b.stack.lazy.map { $0.ip })
        }
        return suspects
    }

    /// Sorts `records` stably in Valgrind's order: by total bytes (direct + indirect) ascending,
    /// then by blocks, then kind, then by the stacks' addresses. The records are big: the
    /// comparisons read keys of their own, and each record moves once (sorting the records
    /// themselves copied them on every merge and comparison, a third of the sort's time for
    /// clang's 2,600 records).
    static func sortInValgrindOrder(_ records: inout [LossRecord]) {
        let keys = records.map { (total: $0.bytes + $0.indirectBytes, blocks: $0.blocks, kind: $0.kind) }
        let order = records.withUnsafeBufferPointer { records in
            keys.indices.sorted { a, b in
                if keys[a].total != keys[b].total { return keys[a].total < keys[b].total }
                if keys[a].blocks != keys[b].blocks { return keys[a].blocks < keys[b].blocks }
                if keys[a].kind != keys[b].kind { return keys[a].kind > keys[b].kind }
                return records[a].stack.lazy.map { $0.ip }.lexicographicallyPrecedes(records[b].stack.lazy.map { $0.ip })
            }
        }
        records = order.map { records[$0] }
    }
}

/// Function names as the report shows them: demangled (once per distinct name) unless
/// `--demangle=no`; and the frames shown for each address of one heap and symbol table (one
/// cache per report).
struct NameCache {
    var demangle: Bool
    var cache: [String: String] = [:]
    /// Numbered by address | module generation << 48.
    var shownFrameNumbers = PackedKeyIndex()
    var shownFrames: [[SymbolizedFrame]] = []
    /// For each entry of `shownFrames`: where `main` is in it.
    var mainFrames: [Int?] = []

    init(demangle: Bool) { self.demangle = demangle }

    mutating func display(_ name: String) -> String {
        guard demangle else { return name }
        if let known = cache[name] { return known }
        let shown = Demangler.demangle(name)
        cache[name] = shown
        return shown
    }
}
