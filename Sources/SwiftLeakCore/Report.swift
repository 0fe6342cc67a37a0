/// How the traced process ended.
public enum ProcessExit: Hashable, Sendable {
    case exited(code: Int32)
    case signaled(signal: Int32, coreDumped: Bool)
}

/// Bytes and blocks, as every line of the LEAK SUMMARY counts them.
public struct ByteCount: Hashable, Sendable {
    public var bytes: UInt64 = 0
    public var blocks: UInt64 = 0
    public init(bytes: UInt64 = 0, blocks: UInt64 = 0) {
        self.bytes = bytes
        self.blocks = blocks
    }
    public mutating func add(bytes: UInt64, blocks: UInt64 = 1) {
        self.bytes += bytes
        self.blocks += blocks
    }
}

/// One group of blocks with the same leak kind and allocation stack (Valgrind's "loss record").
public struct LossRecord: Sendable {
    public var kind: LeakKind
    public var bytes: UInt64
    public var blocks: UInt64
    /// For definitely lost records: the bytes of the blocks indirectly lost through them.
    public var indirectBytes: UInt64
    /// The allocation function (frame 0).
    public var function: AllocationFunction
    /// The program's frames, innermost first, already symbolized (inlined frames expanded).
    public var stack: [SymbolizedFrame]
    /// The name of the suppression that matched, if any.
    public var suppressedBy: String?
    /// Where that suppression was written (`file:line`).
    public var suppressedAt: String?

    /// Index in `stack` of the first frame of the program's own code: past the Swift runtime's
    /// allocation plumbing (swift_slowAlloc, swift_allocObject, …), which stays in the stack.
    public var firstUserFrame: Int? {
        stack.firstIndex { !SwiftRuntime.isAllocationPlumbing($0) }
    }

    public init(kind: LeakKind, bytes: UInt64, blocks: UInt64, indirectBytes: UInt64,
                function: AllocationFunction, stack: [SymbolizedFrame], suppressedBy: String? = nil) {
        self.kind = kind
        self.bytes = bytes
        self.blocks = blocks
        self.indirectBytes = indirectBytes
        self.function = function
        self.stack = stack
        self.suppressedBy = suppressedBy
    }
}

/// How much one suppression hid.
public struct SuppressionUse: Hashable, Sendable {
    public var name: String
    /// `file:line` of its name.
    public var location: String
    /// Loss records it matched (Valgrind's use count).
    public var records: Int = 0
    public var suppressed = ByteCount()

    public init(name: String, location: String) {
        self.name = name
        self.location = location
    }
}

/// What happened to the heap over the whole run (Valgrind's HEAP SUMMARY).
public struct HeapTotals: Hashable, Sendable {
    public var allocations: UInt64 = 0
    public var frees: UInt64 = 0
    public var bytesAllocated: UInt64 = 0
    public var inUseAtExit = ByteCount()
    public init() {}
}

/// Everything swiftleak knows about one traced process at its end.
public struct ProcessReport: Sendable {
    public var pid: Int32
    public var ppid: Int32
    public var command: [String]
    public var exit: ProcessExit?
    /// The path this image exec'd (it then ended without an exit of its own), nil for the image that
    /// ended the process.
    public var replacedByExec: String?
    public var heap = HeapTotals()
    public var summary: [LeakKind: ByteCount] = [:]
    public var suppressed = ByteCount()
    /// Sorted as Valgrind prints them: by total bytes ascending, so the biggest comes last.
    public var lossRecords: [LossRecord] = []
    /// Whether the exit scan classified the blocks; when false, `scanNote` says why.
    public var scanRan: Bool = false
    public var scanNote: String?
    /// What the scan read, and how long it took (swiftleak's own time, the process frozen).
    public var scanBytes: UInt64 = 0
    public var scanSeconds: Double = 0
    /// How long the program was held at its exit, the scan included (seconds).
    public var freezeSeconds: Double = 0
    /// Things the user should know about the recording itself (events lost because the recorder
    /// went away, a thread killed inside malloc, …).
    public var warnings: [String] = []
    /// The suppressions that matched at least one loss record, in the order they were given
    /// (Valgrind's `used_suppression` lines under `-v`).
    public var usedSuppressions: [SuppressionUse] = []
    /// Stacks whose reachable bytes grew all run, fastest first.
    public var growthSuspects: [GrowthSuspect] = []

    public init(pid: Int32, ppid: Int32, command: [String]) {
        self.pid = pid
        self.ppid = ppid
        self.command = command
    }

    public func total(_ kind: LeakKind) -> ByteCount { summary[kind] ?? ByteCount() }
}

/// Knows which frames belong to the Swift runtime's allocation path.
public enum SwiftRuntime {
    static let libraryNames: [String] = [
        "libswiftCore.so", "libswiftSwiftOnoneSupport.so", "libswift_Concurrency.so",
        "libswift_StringProcessing.so", "libswift_RegexParser.so", "libswiftRemoteMirror.so",
    ]

    public static func isAllocationPlumbing(_ frame: SymbolizedFrame) -> Bool {
        guard let object = frame.object else { return false }
        let file = object.split(separator: "/").last.map(String.init) ?? object
        return libraryNames.contains(file)
    }
}

/// A stack whose live bytes rose through the run (a trend, not one spike) and that still held
/// reachable (or unclassified) blocks at exit: the cache that only grows.
public struct GrowthSuspect: Sendable, Hashable {
    public var function: AllocationFunction
    public var stack: [SymbolizedFrame]
    /// Live at exit.
    public var bytes: UInt64
    public var blocks: UInt64
    /// The least-squares slope of its live bytes and blocks over the run.
    public var bytesPerSecond: Double
    public var blocksPerSecond: Double

    public init(function: AllocationFunction, stack: [SymbolizedFrame], bytes: UInt64, blocks: UInt64,
                bytesPerSecond: Double, blocksPerSecond: Double) {
        self.function = function
        self.stack = stack
        self.bytes = bytes
        self.blocks = blocks
        self.bytesPerSecond = bytesPerSecond
        self.blocksPerSecond = blocksPerSecond
    }
}
