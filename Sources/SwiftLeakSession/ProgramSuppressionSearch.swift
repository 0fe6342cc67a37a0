import Synchronization
import SwiftLeakSymbolizer
import SwiftLeakTrace

/// The search of the program's file for its own `__lsan_default_suppressions()`, on a thread of its
/// own from the moment `run` knows the program: in a big binary it scans the whole string table
/// (clang's 163 MB file: 4-6 ms warm, hundreds cold), which, done before the launch, delayed the
/// program's start by that much. Nothing needs the answer before the end of the run (the
/// suppressions apply to the report; the trace records them when they are known).
public final class ProgramSuppressionSearch: Sendable {
    private let work: Mutex<BackgroundWork?>
    private let box: Box

    /// What the thread found, written by it before `finished` is set and read after (the thread
    /// holds only this, so an answer nobody asks for leaves nothing behind).
    private final class Box: @unchecked Sendable {
        var found: ProgramSuppressionText?
        let finished = Atomic<Bool>(false)
    }

    /// Starts the search of the file at `program`.
    public init(program: String) {
        let box = Box()
        self.box = box
        work = Mutex(BackgroundWork {
            box.found = Self.search(program)
            box.finished.store(true, ordering: .releasing)
        })
    }

    /// Whether the answer is in (then `result` does not wait).
    public var isFinished: Bool { box.finished.load(ordering: .acquiring) }

    /// The program's suppressions (nil when it defines none), waiting for the search if it is
    /// still on. Any thread, any number of times.
    public var result: ProgramSuppressionText? {
        if !isFinished {
            work.withLock { slot in
                slot?.join()
                slot = nil
            }
        }
        return box.found
    }

    static func search(_ path: String) -> ProgramSuppressionText? {
        switch ProgramSuppressions.lsanDefaultSuppressions(inFile: path) {
        case .none: return nil
        case .text(let text): return ProgramSuppressionText(program: path, content: .text(text))
        case .unreadable(let reason): return ProgramSuppressionText(program: path, content: .unreadable(reason))
        }
    }
}
