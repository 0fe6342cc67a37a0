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
        let heap = model.finish()
        var exit = contents.exit
        if let problem = contents.problem {
            exit.warnings.append(problem)
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
                           snapshotTime: at, complete: contents.complete, events: contents.events)
    }
}
