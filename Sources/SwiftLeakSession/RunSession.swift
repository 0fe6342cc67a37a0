import CSwiftLeakSys
import Glibc
import SwiftLeakCore
import SwiftLeakModel
import SwiftLeakRecorder
import SwiftLeakSymbolizer
import SwiftLeakReports
import SwiftLeakTrace
import SwiftLeakTracer

/// Everything `swiftleak run` needs to know.
public struct RunConfiguration: Sendable {
    /// The program and its arguments, as the bytes the user gave (argv is not text).
    public var command: [Bytes]
    /// The program and its arguments for display (see `escapedForDisplay`).
    public var program: String { command[0].escapedForDisplay }
    public var arguments: [String] { command.dropFirst().map(\.escapedForDisplay) }
    public var report = ReportOptions()
    /// Path of libswiftleak_preload.so; nil: look next to the swiftleak executable.
    public var preloadLibrary: String?
    public var ring = EventRing.Configuration()
    /// Where the trace goes.
    public var trace: TraceDestination = .defaultName
    /// The search for the program's own `__lsan_default_suppressions()` (started before the run,
    /// see `ProgramSuppressionSearch`), whose answer the trace stores for `analyze`.
    public var programSuppressions: ProgramSuppressionSearch?
    /// Whether forked children are traced (`--follow-forks`); when not, they run untraced.
    public var followForks = true
    /// Which exec'd programs are tracked (`--trace-children`, `--trace-children-skip`).
    public var childTracing = ChildTracing()
    /// A pass over every report once its records are known (the CLI's leak resolution and
    /// suppressions): it may run before the process's status and last warnings are in the report,
    /// so it must read and change only what the records decide (records, summary, suppressed).
    public var finishReport: ReportPass?

    public init(command: [Bytes]) {
        precondition(!command.isEmpty, "a command has at least the program")
        self.command = command
    }

    public init(program: String, arguments: [String]) {
        self.init(command: ([program] + arguments).map { Array($0.utf8) })
    }
}

/// A pure pass over a built report (see `RunConfiguration.finishReport`).
public typealias ReportPass = @Sendable (ProcessReport) -> ProcessReport

/// Where `run` writes its trace.
public enum TraceDestination: Sendable, Equatable {
    /// `swiftleak.<program>.<pid>.gz` in the working directory.
    case defaultName
    case path(String)
    /// `--no-trace`.
    case none

    /// The default file name for a program and pid.
    public static func defaultFileName(program: String, pid: Int32) -> String {
        let name = program.split(separator: "/").last.map(String.init) ?? program
        return "swiftleak.\(name.isEmpty ? "program" : name).\(pid).gz"
    }
}

/// Why `swiftleak run` could not do its job (before the program ran).
public struct SessionError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The outcome of `swiftleak run`: the program's end and what was left on its heap.
public struct RunResult: Sendable {
    /// One report per image of each traced process (a process that exec'd has one per image, in
    /// order), in the order the processes ended (the text report's order).
    public var reports: [ProcessReport]
    /// Where each report goes in the order the images started, the launched program first (the
    /// JSON report's order): `reports[startOrder[0]]` is the launched program's first image.
    public var startOrder: [Int]
    /// The launched program's end.
    public var exit: ProcessExit
    /// The trace written, nil with --no-trace or when it could not be opened.
    public var tracePath: String?
    /// Why the trace at `tracePath` is cut short or empty (a write failed: full disk, I/O error),
    /// nil when it was written whole. The report must not offer such a file as usable.
    public var traceFailure: String?
    /// Programs started under the program that ran untracked.
    public var untracked: [UntrackedProgram]
    /// The run's heap models and symbol tables, released with the result (or by
    /// `releaseResourcesInBackground`) rather than when `run` returns.
    let resources: KeptAlive?

    /// Frees the run's heap models and symbol tables on a thread of their own while the caller
    /// goes on with the reports: done on the way out of `run`, that took clang's run 13-21 ms
    /// before a line of the report was printed, and left to the process's exit it costs as much
    /// there (medians of 5, phase timer). The reports hold their own copies of what they show.
    public func releaseResourcesInBackground() {
        resources?.releaseInBackground()
    }

    /// The launched program's pid.
    public var rootPid: Int32 { reports[startOrder[0]].pid }

    /// The reports in the order the images started.
    public var reportsInStartOrder: [ProcessReport] { startOrder.map { reports[$0] } }
}

/// Objects whose release costs time (big mappings: rings, heap models, symbol tables), let go on
/// a thread of their own. Never read: only their release matters. Used from one thread.
final class KeptAlive: @unchecked Sendable {
    private var objects: [AnyObject]
    init(_ objects: [AnyObject]) { self.objects = objects }

    /// Hands the objects to a detached thread that drops them (their deinitializers run there,
    /// unless someone else still holds one). Without a thread, they are released here.
    func releaseInBackground() {
        guard !objects.isEmpty else { return }
        let box = Unmanaged.passRetained(KeptAlive(objects))
        objects = []
        var thread = pthread_t()
        let started = pthread_create(&thread, nil, { context in
            Unmanaged<KeptAlive>.fromOpaque(context!).release()
            return nil
        }, box.toOpaque())
        if started == 0 {
            pthread_detach(thread)
        } else {
            box.release()
        }
    }
}

/// Runs one program under the tracer: record → heap model → exit scan → (program released) →
/// symbols → the report. Recording and the model meet only through `HeapEvent`s, and the report
/// comes from `ReportBuilder`, the same as `analyze`'s.
public enum RunSession {
    /// Launches the program. `onStart` gets the pid before the program runs (to print the
    /// report header); the result comes back after the program is gone.
    public static func run(_ configuration: RunConfiguration, onStart: (Int32) -> Void = { _ in }) throws -> RunResult {
        let environment = Environment.current()
        let programPath = try Launcher.resolveProgram(configuration.command[0], searchPath: environment["PATH"])
        let preload = try configuration.preloadLibrary ?? PreloadLibrary.locate()

        // Optional so that `run` lets go of it once the root's image holds it (see `handOverRing`).
        var ring: EventRing?
        do {
            ring = try EventRing(configuration.ring)
        } catch {
            throw SessionError("cannot create the event ring: \(describe(error))")
        }
        let childEnvironment = PreloadEnvironment.build(environment.entries, preload: Array(preload.utf8),
                                                        ring: PreloadEnvironment.ringPath(owner: getpid(), descriptor: ring!.fd))
        // For display (the report, the trace): escaped, so no argument can forge a line.
        let command = [configuration.program] + configuration.arguments
        // An unwritable trace path is refused before the program starts: the file is opened
        // here, or (for the default name, which needs the pid) its directory is checked here and
        // the file opened while the child waits before exec.
        var writer: TraceFileWriter?
        var traceWarning: String?
        switch configuration.trace {
        case .path(let path):
            do {
                writer = try TraceFileWriter(path: path)
            } catch {
                throw SessionError("\(error.description) (use -o FILE elsewhere, or --no-trace)")
            }
        case .defaultName:
            guard access(".", W_OK) == 0 else {
                throw SessionError("cannot write the trace in the working directory: \(String(cString: strerror(errno))) (use -o FILE, or --no-trace)")
            }
        case .none:
            break
        }
        let pid = try Launcher.spawn(path: programPath, arguments: configuration.command,
                                     environment: childEnvironment,
                                     prepare: { pid in
            ring!.setTracedProcess(pid)
            if configuration.trace == .defaultName {
                do {
                    writer = try TraceFileWriter(path: TraceDestination.defaultFileName(program: configuration.program, pid: pid))
                } catch {
                    traceWarning = "\(error); no trace is written"
                }
            }
        })
        PhaseTimer.mark("spawned")
        swl_signals_forward_to(pid)
        // The parent Valgrind reports for it: the process that started the run (swiftleak stands
        // where Valgrind's own process would), not swiftleak.
        let process = ProcessFacts(pid: pid, ppid: getppid(), command: command, startTime: wallClockNow())
        onStart(pid)

        // Modules' symbol tables load in the background as the programs load them (one loader
        // for the whole tree: a fork child maps its parent's modules).
        let preloader = SymbolPreloader(symbolizer: Symbolizer(demangle: false))
        let session = ProcessTreeSession(configuration: configuration, preload: Array(preload.utf8), writer: writer,
                                         preloader: preloader)
        let root = TracedProcess(facts: process, ring: ring, writer: writer,
                                 programSuppressions: configuration.programSuppressions, preloader: preloader)
        ring = nil
        session.add(root)
        root.recorder?.start()
        let tracer = Tracer(pid: pid, delegate: session)
        let exit = tracer.run()
        PhaseTimer.mark("program-released")
        session.closeTakenOffers(all: true)
        for image in session.images {
            // The interposer opened its own descriptor by path long ago (or never will): ours can go.
            image.ring?.closeDescriptor()
            // Ended by a termination request, `exit` is swiftleak's: the program's is its own, if any.
            let programExit = tracer.interruptedBy == nil ? exit : tracer.launchedProgramExit
            image.finish(exit: image.pid == pid ? programExit : nil, interruptedBy: tracer.interruptedBy,
                         isForkChild: session.forkChildren.contains(image.pid))
        }
        // Nothing reads the rings any more: their memory is freed on another thread while the
        // symbols are looked up and the reports built, rather than by the kernel's teardown of
        // swiftleak after the report (which the shell waits for).
        KeptAlive(session.images.flatMap { $0.handOverRing() }).releaseInBackground()
        var rootWarnings: [String] = []
        if let traceWarning { rootWarnings.append(traceWarning) }
        // Reports in the order the processes ended (as Valgrind writes one log per process at its
        // end); one still running when swiftleak was ended comes last.
        // A process that exec'd: its images in order.
        let order = session.endOrder + session.startOrder.filter { !session.endOrder.contains($0) }
        let symbolizer = preloader.finish()
        let images = order.flatMap { child in session.images.filter { $0.pid == child } }
        // The run's Untracked line goes into the launched program's stream of the trace.
        let untrackedLine = UntrackedProgram.summaryLine(session.untracked)
        var reports = images.map { image in
            image.report(options: configuration.report, symbolizer: symbolizer,
                         extraWarnings: image === session.images[0] ? rootWarnings : [],
                         untracked: image === session.images[0] ? untrackedLine : nil,
                         finishReport: configuration.finishReport)
        }
        PhaseTimer.mark("reports-built")
        let startOrder = session.images.map { image in images.firstIndex { $0 === image }! }
        // Every stream has its end: the file can be closed. A trace that could not be written
        // whole says so in the launched program's report.
        let traceFailure = writer?.close()
        if let traceFailure {
            reports[startOrder[0]].warnings.append(traceFailure)
        }
        PhaseTimer.mark("trace-closed")
        return RunResult(reports: reports, startOrder: startOrder, exit: exit, tracePath: writer?.path, traceFailure: traceFailure,
                         untracked: session.untracked, resources: KeptAlive([session]))
    }

    static func describe(_ error: Error) -> String {
        if let error = error as? SystemError {
            return "\(error.operation): \(String(cString: strerror(error.errno)))"
        }
        return "\(error)"
    }

    static func wallClockNow() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}

/// The recorder's consumer: the heap model, and the trace encoder whose bytes go to the writer's
/// compressing thread, into this process image's stream of the trace. Only the recorder calls
/// `consume`, under its lock; `finish` and `finishTrace` run after the recorder has finished.
final class ModelFeed: @unchecked Sendable {
    private var model = HeapModel()
    private var encoder: TraceEncoder?
    private let writer: TraceFileWriter?
    /// This image's stream in the trace (nil without a trace).
    private var stream = 0
    private let preloader: SymbolPreloader?
    /// The program's suppressions, until this stream has their record: written at the first batch
    /// after the search is done, at the latest before the stream's end (a truncated trace keeps
    /// them if the search ended early, as it nearly always does).
    private var programSuppressions: ProgramSuppressionSearch?
    private var modulesPreloaded = 0
    private var stacksPreloaded = 0
    private var lastHandOff = Recorder.monotonicNow()
    /// Encoded bytes go to the compressor at this size or after this long (nanoseconds).
    static let handOffBytes = 1 << 18
    static let handOffInterval: UInt64 = 250_000_000

    /// Where a fork child starts: its parent's model and trace encoder at the fork, and the
    /// parent's stream.
    struct ForkPoint {
        var model: HeapModel
        var encoder: TraceEncoder?
        var stream: Int
    }

    /// Opens the image's stream in the trace (its PROCESS record). `forkedFrom`: a fork child's
    /// start (`forkPoint()`), nil for an image that starts empty.
    init(process: ProcessFacts, programSuppressions: ProgramSuppressionSearch? = nil, writer: TraceFileWriter?,
         preloader: SymbolPreloader? = nil, forkedFrom start: ForkPoint? = nil) {
        model = start?.model ?? HeapModel()
        // A fork child's copy of its parent's model holds modules the loader already has, and
        // stacks its parent hands to the preloader itself.
        modulesPreloaded = model.modules.count
        stacksPreloaded = model.stacks.count
        self.writer = writer
        self.preloader = preloader
        if let writer {
            // The encoder numbers the blocks in the model's table. A fork child's model is a
            // copy of its parent's, numbers and all, as its encoder continues the parent's.
            if !model.table.isNumbered { model.startNumbering() }
            var encoder = start?.encoder ?? TraceEncoder()
            encoder.process(process, forkedFrom: start?.stream)
            stream = writer.openStream(encoder.take())
            self.encoder = encoder
            self.programSuppressions = programSuppressions
            recordProgramSuppressions(waiting: false)
        }
    }

    /// The model and encoder as they are, for a fork child's feed, with everything encoded so far
    /// handed to the writer: the child's stream must open after this stream's events up to the
    /// fork, and before any later one. Call it where `consume` cannot run meanwhile (under the
    /// recorder's lock, see `Recorder.drainPublished`), and open the child's feed there too.
    func forkPoint() -> ForkPoint {
        var child: TraceEncoder?
        if var trace = encoder.take(), let writer {
            writer.submit(trace.take(), stream: stream)
            lastHandOff = Recorder.monotonicNow()
            child = trace.forked()
            encoder = trace
        }
        return ForkPoint(model: model, encoder: child, stream: stream)
    }

    /// One batch of the drain: one call into the model (and the encoder) for the whole batch, each
    /// stored property passed inout once, so no per-event exclusivity check or per-batch copy.
    func consume(_ events: UnsafeBufferPointer<HeapEvent>) {
        if encoder != nil, let writer {
            encoder!.encode(events, model: &model)
            if programSuppressions != nil { recordProgramSuppressions(waiting: false) }
            let now = Recorder.monotonicNow()
            if encoder!.pendingBytes >= Self.handOffBytes || now &- lastHandOff >= Self.handOffInterval {
                writer.submit(encoder!.take(), stream: stream)
                lastHandOff = now
            }
        } else {
            model.apply(events)
        }
        preloadNewModules()
        preloadNewStacks()
    }

    /// Encodes the program's suppressions once their search is done (`waiting`: waits for it).
    private func recordProgramSuppressions(waiting: Bool) {
        guard let search = programSuppressions, waiting || search.isFinished else { return }
        if let found = search.result { encoder?.programSuppressions(found) }
        programSuppressions = nil
    }

    /// Hands the modules loaded since the last batch to the preloader (once per batch, not per event).
    private func preloadNewModules() {
        let count = model.modules.count
        if count < modulesPreloaded { modulesPreloaded = 0 }  // a new image after exec
        guard let preloader, count > modulesPreloaded else { return }
        for index in modulesPreloaded..<count { preloader.enqueue(model.modules[index].module) }
        modulesPreloaded = count
    }

    /// Hands the frames of the stacks made since the last hand-off to the preloader, to symbolize
    /// while the program runs (a count compare per batch; a copy of the new stacks' frames every
    /// `stackHandOff` new stacks).
    private func preloadNewStacks() {
        let stacks = model.stacks.count
        if stacks < stacksPreloaded { stacksPreloaded = 0 }  // a new image after exec
        guard let preloader, stacks >= stacksPreloaded + Self.stackHandOff else { return }
        var frames: [UInt64] = []
        for id in (stacksPreloaded + 1)...stacks { frames += model.stacks.frames(UInt32(id)) }
        stacksPreloaded = stacks
        let modules = model.modules, generation = model.moduleGeneration
        preloader.enqueue { [frames] symbolizer in
            SymbolResolution.symbolizeAhead(frames, generation: generation, modules: modules, symbolizer: symbolizer,
                                            stopping: { [weak preloader] in preloader?.isStopping ?? true })
        }
    }
    static let stackHandOff = 64

    func finish() -> FinalHeap { model.finish() }

    /// Writes the stream's records after the program's end (`replacedBy`: the path exec'd over
    /// the image; `untracked`: the run's line about programs it did not track, in one stream).
    /// The session closes the file once every stream is finished.
    func finishTrace(exit: ExitFacts, blocks: SortedBlocks, symbols: SymbolTable, replacedBy: String?, untracked: String?) {
        recordProgramSuppressions(waiting: true)
        guard var trace = encoder.take(), let writer else { return }
        // The tail goes to the compressor in parts as it is encoded (2M live blocks: 10 MB that
        // the writer's thread compressed and wrote alone after the report was built). Nothing
        // else submits meanwhile: every recorder has finished, and the session writes the
        // streams' tails one after the other (`TracedProcess.report`), so the parts stay unbroken.
        let stream = stream
        trace.finish(exit: exit, blocks: blocks, symbols: symbols, replacedBy: replacedBy, untracked: untracked,
                     strings: writer.strings, handOff: { writer.submit($0, stream: stream) })
        writer.submit(trace.take(), stream: stream)
    }
}


/// Where libswiftleak_preload.so lives: beside the swiftleak binary (a build directory), or in the
/// `lib/` of its install prefix.
public enum PreloadLibrary {
    public static let fileName = "libswiftleak_preload.so"

    public static func locate() throws -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { throw SessionError("cannot find swiftleak's own path in /proc/self/exe") }
        let executable = String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let directory = executable.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let candidates = [directory + "/" + fileName, directory + "/../lib/" + fileName, directory + "/../lib/swiftleak/" + fileName]
        for candidate in candidates where access(candidate, R_OK) == 0 {
            return realPath(candidate) ?? candidate
        }
        throw SessionError("cannot find \(fileName) next to \(executable) or in its ../lib; reinstall swiftleak")
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}

/// swiftleak's environment, entry by entry, as bytes (an environment is not text either).
struct Environment {
    var entries: [Bytes]

    static func current() -> Environment {
        var entries: [Bytes] = []
        var pointer = environ
        while let entry = pointer.pointee {
            entries.append(Array(UnsafeRawBufferPointer(start: entry, count: strlen(entry))))
            pointer += 1
        }
        return Environment(entries: entries)
    }

    /// The value of the first entry named `name` (as getenv), nil when there is none.
    subscript(name: String) -> Bytes? {
        let prefix = Array(name.utf8) + [UInt8(ascii: "=")]
        guard let entry = entries.first(where: { $0.starts(with: prefix) }) else { return nil }
        return Array(entry[prefix.count...])
    }
}
