import SwiftLeakCore
import SwiftLeakModel

/// A trace read into the heap model: what `analyze` and `diff` work from.
public struct LoadedTrace: Sendable {
    public var process: ProcessFacts
    public var heap: FinalHeap
    /// As recorded, plus the trace's own problems as warnings. Without verdicts for a snapshot.
    public var exit: ExitFacts
    public var symbols: SymbolTable
    /// The moment of a snapshot (`--at`), in seconds since the start; nil: the whole run.
    public var snapshotTime: Double?
    public var complete: Bool
    public var events: UInt64
    /// The program's own `__lsan_default_suppressions()`, as `run` read it.
    public var programSuppressions: ProgramSuppressionText?

    /// Reads `path` and feeds its events to a fresh model; with `at`, only the events up to that
    /// moment (seconds since the start).
    public static func load(path: String, at: Double? = nil) throws(TraceError) -> LoadedTrace {
        var model = HeapModel()
        let limit = at.map { UInt64(max(0, $0) * 1e9) }
        var stopped = false
        let contents = try TraceReader.read(path: path) { event in
            guard !stopped else { return }
            if let limit, case .time(let nanoseconds) = event, nanoseconds > limit {
                stopped = true
                return
            }
            model.apply(event)
        }
        var heap = model.finish()
        var exit = contents.exit
        if let problem = contents.problem {
            exit.warnings.append(problem)
        }
        if at == nil && contents.sawLiveBlocks {
            if let blocks = Self.withAddresses(heap.blocks, numbers: contents.liveNumbers, addresses: contents.liveAddresses) {
                heap.blocks = blocks
            } else {
                exit.warnings.append("the trace's list of live blocks does not match its allocations; the blocks keep their allocation numbers")
            }
        }
        if at != nil {
            exit.verdicts = nil
            exit.scanNote = "a snapshot of the heap while the program ran: its blocks are not classified"
        } else if exit.verdicts != nil && contents.verdictAddresses != heap.blocks.addresses {
            exit.verdicts = nil
            exit.warnings.append("the trace's exit verdicts do not match its live blocks; they are left out")
        } else if exit.verdicts == nil && exit.scanNote == nil && !contents.complete {
            exit.scanNote = "the trace ends before the exit scan's verdicts"
        }
        let process = contents.process ?? ProcessFacts(pid: 0, ppid: 0, command: [], startTime: 0)
        return LoadedTrace(process: process, heap: heap, exit: exit, symbols: contents.symbols,
                           snapshotTime: at, complete: contents.complete, events: contents.events,
                           programSuppressions: contents.programSuppressions)
    }

    /// The model's live blocks (named by allocation number, sorted by it) with their real
    /// addresses from the trace's LIVE_BLOCKS record; nil unless that list names each block once.
    static func withAddresses(_ blocks: SortedBlocks, numbers: [UInt64], addresses: [UInt64]) -> SortedBlocks? {
        guard numbers.count == blocks.count, addresses.count == blocks.count else { return nil }
        var seen = [Bool](repeating: false, count: blocks.count)
        var placed: [LiveBlock] = []
        placed.reserveCapacity(blocks.count)
        for (number, address) in zip(numbers, addresses) {
            guard let index = Self.index(of: number, in: blocks.addresses), !seen[index] else { return nil }
            seen[index] = true
            var block = blocks[index]
            block.address = address
            placed.append(block)
        }
        return SortedBlocks(placed)
    }

    static func index(of value: UInt64, in sorted: [UInt64]) -> Int? {
        var low = 0, high = sorted.count
        while low < high {
            let middle = (low + high) / 2
            if sorted[middle] < value { low = middle + 1 } else { high = middle }
        }
        return low < sorted.count && sorted[low] == value ? low : nil
    }
}
