/// One thing that happened in a traced process, as recording hands it on: the value-level stream
/// that the heap model consumes and the trace file stores. The ring (during `run`) and the trace
/// reader (during `analyze`) produce exactly this stream, so everything downstream is shared.
///
/// Stack ids are dense (1, 2, 3, … in the order the stacks first appear; 0 is "no stack"), and a
/// `.stack` event always comes before the first event that uses its id.
public enum HeapEvent: Sendable, Equatable {
    /// A block was allocated by `function` in thread `thread` (kernel tid).
    case allocation(address: UInt64, size: UInt64, stack: UInt32, function: AllocationFunction, thread: UInt32)
    /// A block is about to be freed.
    case free(address: UInt64, thread: UInt32)
    /// A new stack: its return addresses, innermost first (the caller of the allocation function).
    case stack(id: UInt32, frames: [UInt64])
    /// A module was mapped; `id` names it for the matching unload. Boxed: rare, and its payload
    /// inline would double every event's size (the drain's batches are arrays of these).
    indirect case moduleLoad(id: UInt32, module: LoadedModule)
    /// The module loaded under `id` was unmapped (dlclose).
    case moduleUnload(id: UInt32)
    /// The time since recording started (monotonic clock) when the recorder reached this point of
    /// the stream: the events before it happened no later, the events after it no earlier than
    /// the previous `.time`.
    case time(nanoseconds: UInt64)
    /// The process's resident set size, sampled.
    case residentMemory(bytes: UInt64)
    /// Allocation calls that reserved an event slot and never filled it (the thread was killed
    /// inside the allocation function).
    case abandonedSlots(count: UInt64)
}

/// Who the traced process was: what a report and a trace say before any event.
public struct ProcessFacts: Sendable, Equatable {
    public var pid: Int32
    public var ppid: Int32
    public var command: [String]
    /// Wall-clock start, in nanoseconds since the Unix epoch.
    public var startTime: UInt64

    public init(pid: Int32, ppid: Int32, command: [String], startTime: UInt64) {
        self.pid = pid
        self.ppid = ppid
        self.command = command
        self.startTime = startTime
    }
}

/// The exit scan's verdict on every block still live at exit, in address order (the order of the
/// model's final blocks).
public struct ExitVerdicts: Sendable, Equatable {
    public var kinds: [LeakKind]
    /// For a definitely lost block: the bytes of the indirectly lost blocks charged to it; else 0.
    /// Empty when no block is lost (the exit scan does not make millions of zeros).
    public var indirectBytes: [UInt64]
    /// For an indirectly lost block: the index of the definitely lost leader it is charged to; else -1.
    /// Empty when no block is lost.
    public var leaders: [Int32]

    public init(kinds: [LeakKind], indirectBytes: [UInt64], leaders: [Int32]) {
        self.kinds = kinds
        self.indirectBytes = indirectBytes
        self.leaders = leaders
    }
}

/// How the process ended and what the exit scan could say about it.
public struct ExitFacts: Sendable, Equatable {
    public var exit: ProcessExit?
    /// Nil when the scan did not run; `scanNote` says why.
    public var verdicts: ExitVerdicts?
    public var scanNote: String?
    public var scanBytes: UInt64 = 0
    public var scanSeconds: Double = 0
    /// How long the program was held at its exit (seconds): from its exit stop to its release
    /// (the last drain, the model's end and the scan). 0 when it had no exit stop.
    public var freezeSeconds: Double = 0
    /// Things the user should know about the recording (interposer problems, trace problems).
    public var warnings: [String] = []

    public init(exit: ProcessExit? = nil, verdicts: ExitVerdicts? = nil, scanNote: String? = nil) {
        self.exit = exit
        self.verdicts = verdicts
        self.scanNote = scanNote
    }
}
