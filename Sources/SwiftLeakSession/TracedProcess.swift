import Glibc
import SwiftLeakCore
import SwiftLeakModel
import SwiftLeakRecorder
import SwiftLeakReports
import SwiftLeakSymbolizer
import SwiftLeakTrace
import SwiftLeakTracer

/// One traced process as `run` follows it: its own event stream (ring and recorder), its heap
/// model (for a fork child, a copy of its parent's at the fork: inherited blocks count in the
/// child, as Valgrind counts them), and what its end told us. The tracer's side of it (threads,
/// exit stops) is `TracedProcessState`.
final class TracedProcess {
    let facts: ProcessFacts
    /// Nil when the process has no ring of its own (none could be offered to it), and once
    /// `handOverRing` took it.
    private(set) var ring: EventRing?
    private(set) var recorder: Recorder?
    let model: ModelFeed
    /// The heap when the process ended (taken at its exit stop while it was frozen, or after).
    var heap: FinalHeap?
    var exitFacts = ExitFacts()
    /// Its status, once it is gone.
    var exit: ProcessExit?
    /// The path exec'd over this image (its report is then of the image that is gone), nil for
    /// the image that ended the process.
    var replacedBy: String?

    /// Whether its stream goes into a trace (which then carries the frames of every stack).
    let traced: Bool
    /// The heap's symbols and then its report, each worked out on a thread of its own from the
    /// exit stop on (see `exitWork`): `symbolsFound` and `reportWork` are read after
    /// `symbolsAhead.join()`, `reportAhead` after `reportWork.join()`. The report has all but what
    /// the end says (its status, its warnings: see `ReportBuilder.describeEnd`).
    private var symbolsAhead: BackgroundWork?
    private var symbolsFound: SymbolTable?
    private var reportWork: BackgroundWork?
    private var reportAhead: ProcessReport?

    /// `feed`: its model and trace stream (see `ModelFeed`). `stacksDefined` and `clockStart`: a
    /// fork child's, which go on from its parent's (see `Recorder.init`).
    init(facts: ProcessFacts, ring: EventRing?, feed: ModelFeed, traced: Bool, stacksDefined: UInt32 = 0,
         clockStart: UInt64? = nil) {
        self.facts = facts
        self.ring = ring
        self.traced = traced
        model = feed
        recorder = ring.map { Recorder(ring: $0, pid: facts.pid, stacksDefined: stacksDefined, clockStart: clockStart) { feed.consume($0) } }
    }

    /// A process image whose heap starts empty (the launched program, an exec'd image), with its
    /// own stream in the trace when there is one.
    convenience init(facts: ProcessFacts, ring: EventRing?, writer: TraceFileWriter?,
                     programSuppressions: ProgramSuppressionSearch? = nil, preloader: SymbolPreloader? = nil) {
        let feed = ModelFeed(process: facts, programSuppressions: programSuppressions, writer: writer, preloader: preloader)
        self.init(facts: facts, ring: ring, feed: feed, traced: writer != nil)
    }

    var pid: Int32 { facts.pid }

    /// At the process's exit stop (frozen, memory intact): drain what it published, judge, and
    /// let it go. Everything else (symbols, the report) waits until it is released; with a
    /// `symbolizer`, the symbols are looked up from then on, on a thread of their own, and the
    /// report built from them and passed through `finishReport` on another, while the kernel tears
    /// the program down (11-20 ms for clang on a quiet machine, 30-120 ms under load, the tracer
    /// only waiting) and the other images finish. The report's thread is a thread of its own so
    /// that `report` can take the symbols, which the trace's end needs, and encode that end while
    /// the report is still being built.
    func exitWork(_ stop: ExitStop, options: ReportOptions, symbolizer: Symbolizer? = nil,
                  finishReport: ReportPass? = nil) {
        let frozen = Recorder.monotonicNow()
        PhaseTimer.mark("to-exit-stop")
        defer {
            PhaseTimer.mark("exit-work")
            exitFacts.freezeSeconds = Double(Recorder.monotonicNow() &- frozen) / 1e9
            if let symbolizer, let heap {
                // What the end adds later (the status, warnings) the report gets when it is taken.
                let facts = exitFacts
                symbolsAhead = BackgroundWork { [self] in
                    let symbols = Self.symbols(of: heap, traced: traced, symbolizer: symbolizer)
                    symbolsFound = symbols
                    reportWork = BackgroundWork { [self] in
                        let report = ReportBuilder.build(process: self.facts, heap: heap, exit: facts, symbols: symbols, options: options)
                        reportAhead = finishReport?(report) ?? report
                    }
                }
            }
        }
        recorder?.finish(processStopped: true)
        let final = model.finish()
        heap = final
        guard options.leakCheck != .no else {
            exitFacts.scanNote = "--leak-check=no"
            return
        }
        // Nothing left to classify: the scan's setup (maps, module files, thread stacks) would be
        // most of a short program's freeze (0.5 ms of `run -- /bin/true`). Its verdicts are empty.
        guard !final.blocks.addresses.isEmpty else {
            exitFacts.verdicts = ExitVerdicts(kinds: [], indirectBytes: [], leaders: [])
            return
        }
        let scan = ExitScan.run(stop: stop, blocks: final.blocks, allocatorState: ring?.allocatorState,
                                exitCaller: ring?.exitCaller, ownStacksListed: ring?.ownStackAreasListed ?? [])
        exitFacts.warnings += scan.warnings
        if let result = scan.result {
            exitFacts.verdicts = ExitVerdicts(kinds: result.kinds, indirectBytes: result.indirectBytesCharged,
                                              leaders: result.leaderOf)
            exitFacts.scanBytes = result.statistics.bytesScanned
            exitFacts.scanSeconds = result.statistics.wallSeconds
        } else {
            exitFacts.scanNote = scan.failure
        }
    }

    /// The image was replaced by an exec of `path`: everything it still had allocated went with its
    /// memory, not freed and never classified (there is nothing left to scan).
    func finishReplaced(by path: Bytes) {
        recorder?.finish(processStopped: true)
        heap = model.finish()
        replacedBy = path.escapedForDisplay
        exitFacts.scanNote = "the program exec'd \(path.escapedForDisplay): what it had not freed went with its memory, unclassified, and is not counted as an error"
    }

    /// After the process is gone (or swiftleak stops tracing it): what is still missing.
    /// `isForkChild`: its ring was offered through the fork handler.
    func finish(exit: ProcessExit?, interruptedBy: Int32?, isForkChild: Bool) {
        // A process swiftleak's own end left running has no exit of its own to report (it was not
        // killed by the request: it ignored, caught or never received it).
        exitFacts.exit = replacedBy != nil ? nil : exit ?? self.exit
        if heap != nil, let signal = interruptedBy, exitFacts.exit == nil, replacedBy == nil {
            exitFacts.warnings.append("swiftleak was ended by signal \(signal) while this process ran on, its threads held at a stop of swiftleak's: its blocks were scanned as they were then, and it goes on untraced")
        }
        if heap == nil {
            recorder?.finish(processStopped: true)
            heap = model.finish()
            if let signal = interruptedBy, self.exit == nil {
                exitFacts.scanNote = "swiftleak was ended by signal \(signal) before the program's exit; its blocks not freed so far could not be scanned"
            } else {
                exitFacts.scanNote = "the program was killed (SIGKILL) without an exit stop; its blocks were not freed but could not be scanned"
            }
        }
        guard let ring, let recorder else {
            exitFacts.warnings.append("swiftleak could not give this process a ring of its own: its allocations after the fork were not tracked, the blocks listed are those it inherited")
            return
        }
        if !ring.interposerAttached {
            exitFacts.warnings.append(isForkChild
                ? "this process did not run the interposer's fork handler (a raw clone() without CLONE_VM): its allocations after the fork were not tracked, the blocks listed are those it inherited"
                : "the interposer never attached in the program (was LD_PRELOAD removed, or is the program setuid?); no allocation was recorded")
        }
        if ring.programDefinesMalloc {
            exitFacts.warnings.append("the program defines its own malloc, which swiftleak does not replace: the blocks it allocates through it are not tracked")
        }
        if recorder.invalidRecords > 0 {
            exitFacts.warnings.append("\(recorder.invalidRecords) invalid event(s) or record(s) in the ring were ignored: the program wrote into swiftleak's memory, the figures may be incomplete")
        }
        if ring.interposerDisabled {
            exitFacts.warnings.append("the interposer stopped recording before the end; the figures are incomplete")
        }
    }

    /// After `finish`, which read the ring for the last time: the ring and its recorder, for the
    /// caller to release on a thread of its own while the report is built. Left to swiftleak's
    /// exit, freeing the ring's pages (the 8 MiB of slots and the stack store) made the kernel's
    /// teardown of swiftleak, which the shell waits for, longer by half on malloc_heavy.
    func handOverRing() -> [AnyObject] {
        let objects: [AnyObject?] = [ring, recorder]
        ring = nil
        recorder = nil
        return objects.compactMap { $0 }
    }

    /// Symbols (after the program was released), the trace's last records, the report (passed
    /// through `finishReport`). `untracked`: the run's line about programs it did not track, for
    /// this image's stream.
    func report(options: ReportOptions, symbolizer: Symbolizer, extraWarnings: [String] = [],
                untracked: String? = nil, finishReport: ReportPass? = nil) -> ProcessReport {
        let final = heap!
        symbolsAhead?.join()
        symbolsAhead = nil
        let symbols = symbolsFound ?? Self.symbols(of: final, traced: traced, symbolizer: symbolizer)
        symbolsFound = nil
        // The trace's last records and the report need the same inputs and nothing of each
        // other: the trace's are encoded on a thread of their own while the report is finished.
        let facts = exitFacts, model = model, replacedBy = replacedBy
        let traceEnd = traced ? BackgroundWork {
            model.finishTrace(exit: facts, blocks: final.blocks, symbols: symbols, replacedBy: replacedBy, untracked: untracked)
        } : nil
        exitFacts.warnings += extraWarnings
        reportWork?.join()
        reportWork = nil
        var report: ProcessReport
        if let ahead = reportAhead {
            report = ahead
            ReportBuilder.describeEnd(exitFacts, heap: final, in: &report)
        } else {
            report = ReportBuilder.build(process: self.facts, heap: final, exit: exitFacts, symbols: symbols, options: options)
            report = finishReport?(report) ?? report
        }
        reportAhead = nil
        report.replacedByExec = replacedBy
        traceEnd?.join()
        return report
    }

    /// The symbols the report (and the trace) need, from the module files on disk. Raw names: the
    /// builder demangles (or not, for --demangle=no), and a trace keeps them as suppressions match
    /// them. A trace carries the frames of every stack it holds.
    static func symbols(of heap: FinalHeap, traced: Bool, symbolizer: Symbolizer) -> SymbolTable {
        let keys = traced ? heap.symbolKeysForAllStacks() : heap.symbolKeysForLiveBlocks()
        return SymbolResolution.resolve(keys, modules: heap.modules, symbolizer: symbolizer)
    }
}

/// The session's answers to the tracer for a whole process tree: which children to follow, the
/// exit work of each process, and a ring of its own for every fork child.
final class ProcessTreeSession: TracerDelegate {
    let configuration: RunConfiguration
    /// The interposer's path, for the images exec'd under the program.
    let preload: Bytes
    /// Each process's current image, by pid.
    private(set) var processes: [Int32: TracedProcess] = [:]
    /// Every image of every process, in the order they started (a process that exec'd has one
    /// per image; all but its last were replaced).
    private(set) var images: [TracedProcess] = []
    /// Programs started under the program that ran untracked.
    var untracked: [UntrackedProgram] = []
    /// Pids in the order the processes started, and in the order they ended.
    private(set) var startOrder: [Int32] = []
    private(set) var endOrder: [Int32] = []
    /// Pids of the processes started and not yet ended.
    private var running: Set<Int32> = []
    /// Fork children left untraced (--follow-forks=no).
    private(set) var unfollowedChildren = 0
    /// Processes that got their ring through their parent's fork table.
    private(set) var forkChildren: Set<Int32> = []
    /// Rings offered and not yet taken: (parent, child). Our descriptor of the child's ring stays
    /// open until the child has its own mapping, or is gone.
    private var openOffers: [(parent: Int32, child: Int32)] = []

    private let preloader: SymbolPreloader?
    /// The tree's one trace file: every image writes its own stream into it.
    let writer: TraceFileWriter?

    init(configuration: RunConfiguration, preload: Bytes, writer: TraceFileWriter? = nil, preloader: SymbolPreloader? = nil) {
        self.configuration = configuration
        self.preload = preload
        self.writer = writer
        self.preloader = preloader
    }

    func add(_ process: TracedProcess) {
        if processes[process.pid] == nil && !startOrder.contains(process.pid) { startOrder.append(process.pid) }
        processes[process.pid] = process
        running.insert(process.pid)
        images.append(process)
    }

    func tracer(_ tracer: Tracer, forked child: Int32, parent: Int32, sharesMemory: Bool) -> Bool {
        guard configuration.followForks else {
            unfollowedChildren += 1
            untracked.append(UntrackedProgram(pid: child, path: processes[parent]?.facts.command.first ?? "?", reason: .forkNotFollowed))
            return false
        }
        // A vfork child runs in its parent's memory until it execs or exits: no heap of its own.
        guard !sharesMemory, let parentProcess = processes[parent] else { return true }
        closeTakenOffers()
        let facts = ProcessFacts(pid: child, ppid: parent, command: parentProcess.facts.command,
                                 startTime: RunSession.wallClockNow())
        // The parent is stopped at its fork: what it published so far is its heap at the fork
        // (its other threads, if any, wait on the allocator's fork locks). The child's stream
        // opens in the trace right there, before any later event of the parent's.
        let openChild = { [writer, preloader] in
            ModelFeed(process: facts, writer: writer, preloader: preloader, forkedFrom: parentProcess.model.forkPoint())
        }
        let inherited: (ModelFeed, stacksDefined: UInt32)
        if let recorder = parentProcess.recorder {
            inherited = recorder.drainPublished(then: openChild)
        } else {
            inherited = (openChild(), 0)
        }
        var ring: EventRing?
        if let parentRing = parentProcess.ring, let childRing = try? EventRing(configuration.ring) {
            childRing.setTracedProcess(child)
            if parentRing.offer(childRing, toChild: child) {
                ring = childRing
                openOffers.append((parent, child))
            }
        }
        let process = TracedProcess(facts: facts, ring: ring, feed: inherited.0, traced: writer != nil,
                                    stacksDefined: inherited.stacksDefined, clockStart: parentProcess.recorder?.startTime)
        add(process)
        forkChildren.insert(child)
        process.recorder?.start()
        return true
    }

    /// At an exec of `pid` (`--trace-children`): the old image is over, and the new one is tracked
    /// (true: a ring of its own and the interposer in its environment) or runs untracked.
    func tracer(_ tracer: Tracer, execed pid: Int32) -> Bool {
        let stop = ExecStop.read(pid: pid)
        let path = stop?.path ?? ExecStop.executableLink(pid)
        let old = processes[pid]
        let ppid = old?.facts.ppid ?? tracer.processes[pid]?.parent ?? getpid()
        if let old {
            withdrawOffer(toChild: pid)
            old.finishReplaced(by: path)
            processes[pid] = nil
        }
        func untracked(_ reason: UntrackedReason) -> Bool {
            self.untracked.append(UntrackedProgram(pid: pid, path: path.escapedForDisplay, reason: reason))
            return false
        }
        guard let stop else { return untracked(.notInjected("its initial stack could not be read")) }
        let tracing = configuration.childTracing
        if !tracing.traceChildren { return untracked(.notRequested) }
        if let skip = tracing.skipReason(path: path, arguments: stop.stack.arguments) { return untracked(skip) }
        if let reason = stop.untrackableReason { return untracked(reason) }
        let ring: EventRing
        do {
            ring = try EventRing(configuration.ring)
        } catch {
            return untracked(.notInjected("no ring: \(RunSession.describe(error))"))
        }
        ring.setTracedProcess(pid)
        if let problem = stop.inject(preload: preload, ring: PreloadEnvironment.ringPath(owner: getpid(), descriptor: ring.fd)) {
            return untracked(.notInjected(problem))
        }
        let facts = ProcessFacts(pid: pid, ppid: ppid, command: stop.stack.arguments.map(\.escapedForDisplay),
                                 startTime: RunSession.wallClockNow())
        let image = TracedProcess(facts: facts, ring: ring, writer: writer, preloader: preloader)
        add(image)
        image.recorder?.start()
        return true
    }

    /// The offer of a fork child's ring, when the child execs: it took the ring or never will.
    private func withdrawOffer(toChild child: Int32) {
        openOffers.removeAll { offer in
            guard offer.child == child else { return false }
            processes[offer.parent]?.ring?.withdrawOffer(toChild: child)
            processes[child]?.ring?.closeDescriptor()
            return true
        }
    }

    func tracer(_ tracer: Tracer, exitStop stop: ExitStop) {
        // The last traced process is ending: nothing will queue symbol work any more, and what
        // the preloader has not done the end does itself (from the exit stop on, see `exitWork`),
        // so its jobs stop here rather than race the end's lookups for the symbolizer's lock,
        // and the scan gets its core.
        if running.allSatisfy({ $0 == stop.pid }) { preloader?.finish() }
        processes[stop.pid]?.exitWork(stop, options: configuration.report, symbolizer: preloader?.symbolizer,
                                      finishReport: configuration.finishReport)
    }


    func tracer(_ tracer: Tracer, ended pid: Int32, exit: ProcessExit) {
        guard let process = processes[pid] else { return }
        process.exit = exit
        endOrder.append(pid)
        running.remove(pid)
        closeTakenOffers()
    }

    func tracer(_ tracer: Tracer, exitAnnouncedIn pid: Int32) -> Bool {
        processes[pid]?.ring?.exitAnnounced ?? false
    }

    func tracer(_ tracer: Tracer, interposerStateIn pid: Int32) -> UInt64 {
        processes[pid]?.ring?.interposerStateAddress ?? 0
    }

    func tracer(_ tracer: Tracer, secondTaskIn pid: Int32) {
        processes[pid]?.ring?.setMultipleProducers()
    }

    /// Closes our descriptors of rings their child has mapped (or never will: it is gone), and
    /// clears their offers from the parent's table.
    func closeTakenOffers(all: Bool = false) {
        openOffers.removeAll { offer in
            guard let child = processes[offer.child], let ring = child.ring else { return true }
            guard all || ring.interposerAttached || child.exit != nil else { return false }
            processes[offer.parent]?.ring?.withdrawOffer(toChild: offer.child)
            ring.closeDescriptor()
            return true
        }
    }
}
