import SwiftLeakCore
import SwiftLeakModel

/// One process image of a trace read into the heap model: what `analyze` and `diff` work from.
public struct LoadedTrace: Sendable {
    public var process: ProcessFacts
    public var heap: FinalHeap
    /// As recorded, plus the trace's own problems as warnings. Without verdicts for a snapshot.
    public var exit: ExitFacts
    public var symbols: SymbolTable
    /// The moment of a snapshot (`--at`), in seconds since the start; nil: the whole run.
    public var snapshotTime: Double?
    /// Whether its stream is whole.
    public var complete: Bool
    public var events: UInt64
    /// The program's own `__lsan_default_suppressions()`, as `run` read it.
    public var programSuppressions: ProgramSuppressionText?
    /// The path exec'd over this image, when an exec replaced it.
    public var replacedBy: String?
    /// The image (index in `LoadedTraceTree.processes`) this fork child's heap was copied from.
    public var forkedFrom: Int?

    /// The launched program's image, the first of the trace (see `LoadedTraceTree.load` for all).
    public static func load(path: String, at: Double? = nil) throws(TraceError) -> LoadedTrace {
        try LoadedTraceTree.load(path: path, at: at).processes[0]
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

/// Every process image of a trace, each read into a heap model of its own (a fork child's
/// starting as a copy of its parent's at the fork, as `run` built it).
public struct LoadedTraceTree: Sendable {
    /// In the order they started (the trace's stream order): the launched program first.
    public var processes: [LoadedTrace]
    /// The run's line about the programs it started and did not track, when it printed one.
    public var untracked: String?
    public var complete: Bool
    /// Indices of `processes` in the order `run` reported them (the order they ended; those the
    /// trace does not see end come last).
    public var reportOrder: [Int]

    /// Reads `path` and feeds each stream's events to its model; with `at`, only the events up to
    /// that moment (seconds since the start) of each.
    public static func load(path: String, at: Double? = nil) throws(TraceError) -> LoadedTraceTree {
        var models: [HeapModel] = []
        var stopped: [Bool] = []
        let limit = at.map { UInt64(max(0, $0) * 1e9) }
        let contents = try TraceReader.read(path: path, onStream: { _, forkedFrom in
            models.append(forkedFrom.map { models[$0] } ?? HeapModel())
            stopped.append(forkedFrom.map { stopped[$0] } ?? false)
        }, onEvent: { stream, event in
            guard !stopped[stream] else { return }
            if let limit, case .time(let nanoseconds) = event, nanoseconds > limit {
                stopped[stream] = true
                return
            }
            models[stream].apply(event)
        })
        var processes: [LoadedTrace] = []
        for (index, stream) in contents.streams.enumerated() {
            var problems: [String] = []
            if let problem = contents.problem, !stream.complete || (index == 0 && contents.streams.allSatisfy(\.complete)) {
                // A stream cut short says where; a file cut between whole streams says it in the
                // launched program's report (what followed is missing).
                problems.append(problem)
            }
            processes.append(Self.loaded(stream, heap: models[index].finish(), problems: problems, at: at))
        }
        if processes.isEmpty {
            // A trace cut before its first process record.
            var stream = StreamContents()
            stream.complete = contents.complete
            var empty = HeapModel()
            processes.append(Self.loaded(stream, heap: empty.finish(), problems: contents.problem.map { [$0] } ?? [], at: at))
        }
        let ended = Set(contents.endOrder)
        let order = contents.endOrder + processes.indices.filter { !ended.contains($0) }
        return LoadedTraceTree(processes: processes, untracked: contents.untracked, complete: contents.complete,
                               reportOrder: order)
    }

    static func loaded(_ contents: StreamContents, heap: FinalHeap, problems: [String], at: Double?) -> LoadedTrace {
        var heap = heap
        var exit = contents.exit
        exit.warnings += problems
        if at == nil && contents.sawLiveBlocks {
            if let blocks = LoadedTrace.withAddresses(heap.blocks, numbers: contents.liveNumbers, addresses: contents.liveAddresses) {
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
        return LoadedTrace(process: contents.process, heap: heap, exit: exit, symbols: contents.symbols,
                           snapshotTime: at, complete: contents.complete, events: contents.events,
                           programSuppressions: contents.programSuppressions, replacedBy: contents.replacedBy,
                           forkedFrom: contents.forkedFrom)
    }
}

extension LoadedTraceTree {
    /// Each image's place in the tree, a name that two runs of one program share although their
    /// pids differ (what `diff` matches processes by): the launched program is its program's
    /// name; every other image is its parent's place, how it came from it (`fork`, `exec`: the
    /// image it replaced, `spawn`: a new process that exec'd, as posix_spawn and system() start
    /// them), its program's name and its rank among the parent's images that came the same way
    /// with the same name ("two_sites > fork two_sites #2" is the second child the program forked).
    public var positions: [String] {
        var result: [String] = []
        var siblings: [String: Int] = [:]
        for (index, image) in processes.enumerated() {
            let name = image.process.command.first.map { $0.split(separator: "/").last.map(String.init) ?? $0 } ?? "?"
            let parent: Int?, relation: String
            if let from = image.forkedFrom, from < index {
                (parent, relation) = (from, "fork")
            } else if let earlier = processes[..<index].lastIndex(where: { $0.process.pid == image.process.pid }) {
                (parent, relation) = (earlier, "exec")
            } else if index > 0, let spawner = processes[..<index].lastIndex(where: { $0.process.pid == image.process.ppid }) {
                (parent, relation) = (spawner, "spawn")
            } else {
                (parent, relation) = (nil, "")
            }
            guard let parent else {
                // The launched program, or an image whose parent the trace does not hold.
                let key = index == 0 ? name : "? > \(name)"
                let rank = (siblings[key] ?? 0) + 1
                siblings[key] = rank
                result.append(rank == 1 ? key : "\(key) #\(rank)")
                continue
            }
            let key = "\(result[parent]) > \(relation) \(name)"
            let rank = (siblings[key] ?? 0) + 1
            siblings[key] = rank
            result.append("\(key) #\(rank)")
        }
        return result
    }
}
