import CSwiftLeakSys
import Glibc
import SwiftLeakCore

/// A thread of the traced process held at its exit stop, as the exit scan needs it.
public struct ThreadSnapshot: Sendable {
    public var tid: Int32
    /// The thread that ended the process (the first to stop at its exit): its registers hold
    /// what exit() left in them, stale copies of values of frames that have returned.
    public var endedProcess: Bool
    /// General registers (x86_64 user_regs_struct order), every one a possible pointer.
    public var registers: [UInt64]
    public var stackPointer: UInt64
}

/// What the tracer hands to whoever runs the exit work: the process is frozen, every thread is
/// held at PTRACE_EVENT_EXIT and its memory is still there.
public struct ExitStop: Sendable {
    public var pid: Int32
    /// A thread held at its exit whose /proc/TID entry still shows the address space (the main
    /// thread may already be a zombie after pthread_exit).
    public var procTID: Int32
    public var threads: [ThreadSnapshot]
    /// Threads that ended before the process did (pthread_exit, a return from their start
    /// routine), in the order they exited, with their stack pointer at their exit stop. glibc keeps
    /// a joined thread's stack mapping cached for reuse: below that stack pointer it holds only
    /// dead frames, which are not roots.
    public var exitedThreads: [(tid: Int32, stackPointer: UInt64)] = []
}

/// What the tracer asks of whoever runs a traced process tree (the session): the decisions and
/// the work that need the program frozen. Every call comes on the tracing thread.
public protocol TracerDelegate: AnyObject {
    /// A new process: `parent` is stopped at its fork (fork, vfork, or clone without
    /// CLONE_THREAD) and `child` has not run yet. `sharesMemory`: vfork or CLONE_VM, the child runs
    /// in the parent's memory until it execs or exits. Return false to leave it untraced.
    func tracer(_ tracer: Tracer, forked child: Int32, parent: Int32, sharesMemory: Bool) -> Bool
    /// Every thread of `stop.pid` is held at its exit: the exit work (drain, scan) runs now.
    func tracer(_ tracer: Tracer, exitStop stop: ExitStop)
    /// `pid` replaced its image with exec (after its first one, for the launched program), and is
    /// stopped before the new image's first instruction. Return true to follow the new image (its
    /// exit is then scanned), false to let it go untraced, with everything it starts.
    func tracer(_ tracer: Tracer, execed pid: Int32) -> Bool
    /// `pid` is gone with this status.
    func tracer(_ tracer: Tracer, ended pid: Int32, exit: ProcessExit)
    /// Whether the interposer in `pid` announced that the process is exiting as a whole.
    func tracer(_ tracer: Tracer, exitAnnouncedIn pid: Int32) -> Bool
    /// The address of the interposer's state word in `pid` (see swl_ring_header.state_address),
    /// 0 when unknown: a child with memory of its own is marked new there before it runs.
    func tracer(_ tracer: Tracer, interposerStateIn pid: Int32) -> UInt64
    /// `pid` is starting a task that runs in its memory beside the ones it has (a thread, or a
    /// CLONE_VM child that is not a vfork), and neither has run on since: from now on more than one
    /// may write into its ring (swl_ring_header.single_producer).
    func tracer(_ tracer: Tracer, secondTaskIn pid: Int32)
}

public extension TracerDelegate {
    func tracer(_ tracer: Tracer, forked child: Int32, parent: Int32, sharesMemory: Bool) -> Bool { true }
    func tracer(_ tracer: Tracer, execed pid: Int32) -> Bool { false }
    func tracer(_ tracer: Tracer, ended pid: Int32, exit: ProcessExit) {}
    func tracer(_ tracer: Tracer, exitAnnouncedIn pid: Int32) -> Bool { false }
    func tracer(_ tracer: Tracer, interposerStateIn pid: Int32) -> UInt64 { 0 }
    func tracer(_ tracer: Tracer, secondTaskIn pid: Int32) {}
}

/// The tracer's view of one traced process: its threads and where they are in their exit.
public final class TracedProcessState {
    public let pid: Int32
    /// The traced process it forked from; nil for the launched program.
    public let parent: Int32?
    /// vfork or CLONE_VM: it runs in its parent's memory (no heap, no ring of its own).
    public internal(set) var sharesParentMemory: Bool
    enum ThreadState {
        case running
        /// At its exit stop, held for the exit work.
        case heldAtExit
        /// Past its own exit stop, alone (pthread_exit), or gone without one: not part of the exit work.
        case released
    }
    var threads: [Int32: ThreadState] = [:]
    /// Threads announced by a clone event whose first stop we have not seen yet, and threads whose
    /// first stop came before the clone event.
    var awaitingFirstStop: Set<Int32> = []
    var unannounced: Set<Int32> = []
    var groupExitHandled = false
    /// The first thread held at its exit in the group exit.
    var exitInitiator: Int32?
    /// Whether the next exec is the launcher's own (of the launched program), which does not
    /// replace a recorded image.
    var launchExecPending: Bool
    /// See ``ExitStop/exitedThreads``.
    var exitedThreads: [(tid: Int32, stackPointer: UInt64)] = []
    /// Set once we delivered a signal whose default action kills the process.
    var fatalSignalDelivered = false

    /// Whether the exit work ran (false after SIGKILL or an exec that replaced the image).
    public internal(set) var exitStopSeen = false
    /// Set when the process replaced itself with exec: the recorded heap is gone with the image.
    public internal(set) var replacedByExec = false

    init(pid: Int32, parent: Int32?, sharesParentMemory: Bool, launchExecPending: Bool) {
        self.pid = pid
        self.parent = parent
        self.sharesParentMemory = sharesParentMemory
        self.launchExecPending = launchExecPending
        threads[pid] = .running
    }

    /// A group exit has begun (a thread is held at its exit) and waits for other threads.
    var groupExitPending: Bool { !groupExitHandled && threads.values.contains(.heldAtExit) }
}

/// The ptrace event loop of a traced process tree: the launched program and, unless told
/// otherwise, every process it forks. It must run on the thread that spawned the program (ptrace
/// requests are only accepted from the tracing thread).
public final class Tracer {
    /// The launched program.
    public let pid: Int32
    /// Processes traced now, by pid.
    public private(set) var processes: [Int32: TracedProcessState] = [:]
    /// Which process each traced thread belongs to.
    private var processOf: [Int32: Int32] = [:]
    /// New processes: announced by their parent's fork event (with whether to follow them), or
    /// seen at their first stop first (held until the fork event).
    private var forkedAwaitingFirstStop: [Int32: NewChild] = [:]
    /// What to do with a new process at its first stop.
    private struct NewChild {
        var follow: Bool
        /// Where to write "quiet" into its interposer's state before it runs (0: nowhere).
        var interposerState: UInt64
    }
    private var firstStopBeforeFork: Set<Int32> = []
    private weak var delegate: TracerDelegate?
    private var rootExit: ProcessExit?

    /// Set when swiftleak stopped tracing because it was asked to end (SIGTERM, SIGINT, SIGHUP,
    /// SIGQUIT) while the program could not (see ``run()``): the signal.
    public private(set) var interruptedBy: Int32?
    /// The launched program's own end, nil while it has not ended (swiftleak was ended first).
    public var launchedProgramExit: ProcessExit? { rootExit }
    /// Termination requests seen so far, and when the first came (monotonic nanoseconds).
    private var terminationRequests: Int32 = 0
    private var firstTerminationRequest: UInt64?
    /// How long a termination request may wait on threads held at a stop of ours.
    static let terminationGrace: UInt64 = 2_000_000_000

    public init(pid: Int32, delegate: TracerDelegate) {
        self.pid = pid
        self.delegate = delegate
        processes[pid] = TracedProcessState(pid: pid, parent: nil, sharesParentMemory: false, launchExecPending: true)
        processOf[pid] = pid
    }

    /// The launched program's state (kept after it ended).
    public private(set) lazy var root: TracedProcessState = processes[pid]!

    /// Runs the process tree to its end: returns once every traced process is gone, with the
    /// launched program's status.
    ///
    /// While a group exit waits for threads still running, the wait polls: a thread can end
    /// without the exit stop we wait for (the main thread, held or about to stop at its
    /// pthread_exit, is woken by the SIGKILL of another thread's exit_group and becomes a zombie
    /// whose status the kernel gives only once every other thread, held by us, is gone).
    /// A termination request is forwarded to the program by the signal handler; if the program
    /// cannot act on it within a grace period because threads are held at a stop of ours, or at
    /// a second request, swiftleak does the exit work with what it has and returns the signal.
    public func run() -> ProcessExit {
        _ = root
        while !processes.isEmpty {
            if let forced = checkTerminationRequests() { return forced }
            var status: Int32 = 0
            let pending = processes.values.contains { $0.groupExitPending }
            let tid = swl_wait_any(&status, !(pending || firstTerminationRequest != nil))
            if tid == 0 {
                if pending { noteThreadsGoneWithoutExitStop() }
                usleep(1000)
                continue
            }
            if tid < 0 {
                if errno == EINTR { continue }
                // ECHILD: nothing left to wait for (should not happen before the statuses).
                break
            }
            if swl_wifexited(status) || swl_wifsignaled(status) {
                threadEnded(tid, exit: swl_wifexited(status)
                    ? .exited(code: swl_wexitstatus(status))
                    : .signaled(signal: swl_wtermsig(status), coreDumped: swl_wcoredump(status)))
                continue
            }
            guard swl_wifstopped(status) else { continue }
            handleStop(tid: tid, status: status)
        }
        return rootExit ?? .exited(code: 255)
    }

    private func threadEnded(_ tid: Int32, exit: ProcessExit) {
        guard let owner = processOf.removeValue(forKey: tid), let process = processes[owner] else { return }
        process.threads[tid] = nil
        if tid == process.pid {
            // A process's status comes with its main thread's, once every other thread is gone.
            for other in process.threads.keys { processOf[other] = nil }
            processes[owner] = nil
            if owner == pid { rootExit = exit }
            delegate?.tracer(self, ended: owner, exit: exit)
            return
        }
        handleExitStopsIfComplete(process)
    }

    /// While a group exit waits: a thread that is a zombie or gone will never stop at its exit.
    private func noteThreadsGoneWithoutExitStop() {
        for process in processes.values where process.groupExitPending {
            // The exec'ing thread may still have been running when the first thread stopped.
            if let held = process.threads.first(where: { $0.value == .heldAtExit })?.key,
               Self.anotherThreadIsExecing(process, besides: held) {
                releaseForExec(process)
                continue
            }
            var changed = false
            for (tid, state) in process.threads where state == .running && !Self.isAlive(pid: process.pid, tid: tid) {
                process.threads[tid] = .released
                changed = true
            }
            if changed { handleExitStopsIfComplete(process) }
        }
    }

    /// Whether a thread still runs (its /proc state is neither zombie nor dead).
    static func isAlive(pid: Int32, tid: Int32) -> Bool {
        guard let stat = readSmallFile("/proc/\(pid)/task/\(tid)/stat"),
              let close = stat.lastIndex(of: ")") else { return false }
        let rest = stat[stat.index(after: close)...].drop(while: { $0 == " " })
        guard let state = rest.first else { return false }
        return state != "Z" && state != "X" && state != "x"
    }

    /// Looks at new termination requests; returns the exit to report when tracing must end now.
    private func checkTerminationRequests() -> ProcessExit? {
        let count = swl_termination_count()
        if count > terminationRequests {
            terminationRequests = count
            if firstTerminationRequest == nil { firstTerminationRequest = monotonicNow() }
        }
        guard let first = firstTerminationRequest else { return nil }
        let pending = processes.values.filter(\.groupExitPending)
        let stuck = !pending.isEmpty && monotonicNow() &- first >= Self.terminationGrace
        guard terminationRequests >= 2 || stuck else { return nil }
        let signal = swl_termination_signal()
        interruptedBy = signal
        for process in pending {
            // Scan with the threads we hold; the ones that never stopped are not roots.
            for (tid, state) in process.threads where state == .running { process.threads[tid] = .released }
            handleExitStopsIfComplete(process)
        }
        for process in processes.values {
            for (tid, state) in process.threads where state == .heldAtExit { swl_ptrace_cont(tid, 0) }
        }
        return rootExit ?? .signaled(signal: signal, coreDumped: false)
    }

    private func handleStop(tid: Int32, status: Int32) {
        let signal = swl_wstopsig(status)
        let event = swl_wstopevent(status)
        if let child = forkedAwaitingFirstStop.removeValue(forKey: tid) {
            // A new process's first stop, after its parent's fork event.
            startChild(tid, child)
            return
        }
        guard let owner = processOf[tid], let process = processes[owner] else {
            firstStopOfUnknown(tid, event: event)
            return
        }
        switch Int(event) {
        case Int(SWL_EVENT_STOP_CLONE), Int(SWL_EVENT_STOP_FORK), Int(SWL_EVENT_STOP_VFORK):
            var message: UInt = 0
            swl_ptrace_geteventmsg(tid, &message)
            let child = Int32(truncatingIfNeeded: message)
            var isThread = false, sharesMemory = Int(event) == Int(SWL_EVENT_STOP_VFORK)
            if Int(event) == Int(SWL_EVENT_STOP_CLONE) && !swl_clone_flags(tid, &isThread, &sharesMemory) {
                // Unreadable flags: the kernel's view decides (a thread shares its group id).
                isThread = swl_thread_group_of(child) == process.pid
                sharesMemory = isThread
            }
            if Int(event) == Int(SWL_EVENT_STOP_FORK) && !swl_clone_flags(tid, &isThread, &sharesMemory) {
                // The kernel says fork for any clone whose exit signal is SIGCHLD, CLONE_VM (or
                // CLONE_THREAD) or not: only fork(2) itself, whose flags are unreadable, has
                // memory of its own for sure.
                isThread = false
                sharesMemory = false
            }
            if Int(event) == Int(SWL_EVENT_STOP_VFORK) && !swl_clone_flags(tid, &isThread, &sharesMemory) {
                // The kernel says vfork for any clone with CLONE_VFORK, CLONE_VM or not: only
                // vfork(2) itself, whose flags are unreadable, runs in its parent's memory for sure.
                isThread = false
                sharesMemory = true
            }
            if isThread || (sharesMemory && Int(event) != Int(SWL_EVENT_STOP_VFORK)) {
                // Before the parent runs on (the child waits for its first stop to be continued).
                // A vfork's parent waits for its child: they never run at once. The ring is that
                // of the process whose memory this is (a vfork child's threads write into its
                // parent's).
                delegate?.tracer(self, secondTaskIn: memoryOwner(of: process).pid)
            }
            if isThread {
                if process.unannounced.remove(child) == nil {
                    process.awaitingFirstStop.insert(child)
                    process.threads[child] = .running
                    processOf[child] = process.pid
                }
            } else {
                newProcess(child, parent: process, sharesMemory: sharesMemory)
            }
            swl_ptrace_cont(tid, 0)
        case Int(SWL_EVENT_STOP_EXEC):
            if process.launchExecPending {
                process.launchExecPending = false
            } else {
                // The program exec'd another image: the heap we recorded is gone with the old one.
                process.replacedByExec = true
                // After exec only the leader survives (the kernel reaped the other threads).
                for other in process.threads.keys where other != process.pid { processOf[other] = nil }
                process.threads = [process.pid: .running]
                processOf[process.pid] = process.pid
                process.exitedThreads = []
                guard delegate?.tracer(self, execed: process.pid) == true else {
                    letGoOfExecedImage(process)
                    return
                }
                // Followed: a new image of its own memory, whose exit is scanned.
                process.replacedByExec = false
                process.sharesParentMemory = false
            }
            swl_ptrace_cont(tid, 0)
        case Int(SWL_EVENT_STOP_EXIT):
            if Self.anotherThreadIsExecing(process, besides: tid) {
                // A thread other than the leader called execve: the kernel ends every other thread
                // (the leader too) before the exec goes on. Not the process's exit: let them go,
                // or the exec waits for ever.
                process.threads[tid] = .heldAtExit
                releaseForExec(process)
                return
            }
            if process.groupExitHandled || !isGroupExit(process, exitingThread: tid) {
                // A lone thread ending (pthread_exit) while the others run on: let it go now, or
                // a pthread_join on it would wait for ever.
                recordExitedThread(tid, of: process)
                process.threads[tid] = .released
                swl_ptrace_cont(tid, 0)
                return
            }
            process.threads[tid] = .heldAtExit
            if process.exitInitiator == nil { process.exitInitiator = tid }
            handleExitStopsIfComplete(process)
        case Int(SWL_EVENT_STOP_GROUP):
            if process.awaitingFirstStop.remove(tid) != nil || !Self.stopsTheProcess(signal) {
                // A new thread's first stop, or the wake-up a SIGCONT gives a thread we left
                // stopped (its SIGCONT comes next as a signal-delivery-stop).
                swl_ptrace_cont(tid, 0)
                return
            }
            // Group-stop (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU): the program stops, as without us,
            // until a SIGCONT; we keep hearing about it meanwhile.
            swl_ptrace_listen(tid)
        default:
            // Signal-delivery-stop: the program gets its signal, exactly as without us.
            if Self.killsByDefault(signal) && !Self.isHandledOrIgnored(signal, pid: process.pid) {
                process.fatalSignalDelivered = true
            }
            swl_ptrace_cont(tid, signal)
        }
    }

    /// The first stop (PTRACE_EVENT_STOP, with SIGSTOP as its signal: not a group-stop, whatever
    /// the signal says) of a task no event announced yet: a new thread, whose clone event comes
    /// later, or a new process, held until its parent's fork event says what to do with it.
    private func firstStopOfUnknown(_ tid: Int32, event: Int32) {
        let group = swl_thread_group_of(tid)
        if let process = processes[group], group != tid {
            // The parent is held at its clone event, which comes later: before the thread runs.
            delegate?.tracer(self, secondTaskIn: memoryOwner(of: process).pid)
            process.threads[tid] = .running
            process.unannounced.insert(tid)
            processOf[tid] = group
            swl_ptrace_cont(tid, 0)
        } else if group == tid {
            firstStopBeforeFork.insert(tid)
        } else {
            // Nothing we know of (it cannot be ours): let it go.
            swl_ptrace_detach(tid, 0)
        }
    }

    /// An exec'd image that is not followed runs untraced, and so does everything it starts (as
    /// Valgrind's --trace-children=no). The launched program stays in the table: we are its parent
    /// and still get its status; another process's status is its parent's, not ours.
    private func letGoOfExecedImage(_ process: TracedProcessState) {
        // The launch's SIGSTOP left the launched program's group "stopped" under ptrace; detached
        // as it is, the kernel would put it back into that stop. A SIGCONT ends it; the new image
        // has no handler yet (exec reset them) to see it.
        kill(process.pid, SIGCONT)
        swl_ptrace_detach(process.pid, 0)
        guard process.pid != pid else { return }
        processOf[process.pid] = nil
        processes[process.pid] = nil
    }

    /// The process whose memory (and so whose ring) `process` runs in: itself, or for a vfork or
    /// CLONE_VM child, the nearest ancestor with memory of its own.
    private func memoryOwner(of process: TracedProcessState) -> TracedProcessState {
        var owner = process
        var steps = 0
        while owner.sharesParentMemory, let parent = owner.parent, let next = processes[parent], steps < 64 {
            owner = next
            steps += 1
        }
        return owner
    }

    /// At its parent's fork event: a new process.
    private func newProcess(_ child: Int32, parent: TracedProcessState, sharesMemory: Bool) {
        // A child with memory of its own is marked new before it runs: it records nothing until
        // its fork handler, or its first hook (a raw clone() child runs no fork handler), takes
        // the ring offered to it, so it never writes into its parent's ring. (Not a vfork child:
        // its memory is its parent's.)
        let address = sharesMemory ? 0 : delegate?.tracer(self, interposerStateIn: parent.pid) ?? 0
        let follow = delegate?.tracer(self, forked: child, parent: parent.pid, sharesMemory: sharesMemory) ?? true
        if follow {
            let state = TracedProcessState(pid: child, parent: parent.pid, sharesParentMemory: sharesMemory, launchExecPending: false)
            processes[child] = state
            processOf[child] = child
        }
        let newChild = NewChild(follow: follow, interposerState: address)
        if firstStopBeforeFork.remove(child) != nil {
            startChild(child, newChild)
        } else {
            forkedAwaitingFirstStop[child] = newChild
        }
    }

    /// STATE_NEW_PROCESS in CShims/SwiftLeakPreload/preload.c.
    static let interposerNewProcessState: Int32 = 4

    /// A new process at its first stop (where ptrace may write into it), once its parent's fork
    /// event was handled.
    private func startChild(_ child: Int32, _ newChild: NewChild) {
        if newChild.interposerState != 0 {
            _ = swl_poke_int32(child, newChild.interposerState, Self.interposerNewProcessState)
        }
        if newChild.follow {
            swl_ptrace_cont(child, 0)
        } else {
            swl_ptrace_detach(child, 0)
        }
    }

    /// Notes where a lone exiting thread's stack ends (its stack pointer at its exit stop).
    private func recordExitedThread(_ tid: Int32, of process: TracedProcessState) {
        var words = [UInt64](repeating: 0, count: 32)
        var sp: UInt64 = 0
        let count = words.withUnsafeMutableBufferPointer { swl_ptrace_getregs(tid, $0.baseAddress, Int32($0.count), &sp) }
        if count > 0 { process.exitedThreads.append((tid, sp)) }
    }

    /// At a thread's exit stop: is the whole process exiting (exit, _exit, a fatal signal), or only
    /// this thread (pthread_exit)? Holding a lone thread would hang a pthread_join on it; letting go
    /// of a thread of a group exit loses its stack and registers from the scan's roots. Signs of a
    /// group exit, any of which is enough:
    /// - it is the main thread (a main thread that calls pthread_exit is rare, and is only held);
    /// - the main thread is already held at its exit;
    /// - the interposer's atexit handler ran, or we delivered a signal that kills by default;
    /// - another running thread has SIGKILL pending (the kernel queues it on every other thread
    ///   of an exiting group before the first one stops; it may already be dequeued, hence the rest).
    private func isGroupExit(_ process: TracedProcessState, exitingThread: Int32) -> Bool {
        let pid = process.pid
        if exitingThread == pid || process.threads[pid] == .heldAtExit { return true }
        if process.fatalSignalDelivered || delegate?.tracer(self, exitAnnouncedIn: pid) == true { return true }
        for (tid, state) in process.threads where tid != exitingThread && state == .running {
            if Self.hasPendingSIGKILL(pid: pid, tid: tid) { return true }
        }
        return false
    }
    /// Lets the threads held at their exit go on to their end: another thread's exec ends them.
    private func releaseForExec(_ process: TracedProcessState) {
        for (held, state) in process.threads where state == .heldAtExit {
            process.threads[held] = .released
            swl_ptrace_cont(held, 0)
        }
        process.exitInitiator = nil
    }

    /// Whether a running thread of `process` other than `thread` is inside execve (its
    /// /proc/PID/task/TID/syscall names execve or execveat while it waits for the others to end).
    static func anotherThreadIsExecing(_ process: TracedProcessState, besides thread: Int32) -> Bool {
        process.threads.contains { tid, state in
            guard tid != thread, state == .running,
                  let text = readSmallFile("/proc/\(process.pid)/task/\(tid)/syscall"),
                  let number = text.split(separator: " ").first else { return false }
            return execSyscalls.contains(String(number))
        }
    }

    /// execve and execveat on x86_64.
    static let execSyscalls: Set<String> = ["59", "322"]

    /// The signals that put a process into a group-stop.
    static func stopsTheProcess(_ signal: Int32) -> Bool {
        signal == SIGSTOP || signal == SIGTSTP || signal == SIGTTIN || signal == SIGTTOU
    }

    /// Signals whose default action terminates the process (with or without a core file).
    static func killsByDefault(_ signal: Int32) -> Bool {
        switch signal {
        case SIGCHLD, SIGCONT, SIGURG, SIGWINCH, SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU: return false
        default: return signal > 0 && signal <= 64 // real-time signals kill by default too
        }
    }

    /// Whether the process catches or ignores `signal` (SigCgt / SigIgn in /proc/PID/status).
    static func isHandledOrIgnored(_ signal: Int32, pid: Int32) -> Bool {
        guard let masks = statusMasks("/proc/\(pid)/status") else { return true }
        return ((masks["SigCgt"] ?? 0) | (masks["SigIgn"] ?? 0)) & signalBit(signal) != 0
    }

    static func hasPendingSIGKILL(pid: Int32, tid: Int32) -> Bool {
        guard let masks = statusMasks("/proc/\(pid)/task/\(tid)/status") else { return true }
        return (masks["SigPnd"] ?? 0) & signalBit(SIGKILL) != 0
    }

    static func signalBit(_ signal: Int32) -> UInt64 { UInt64(1) << UInt64(signal - 1) }

    /// The hexadecimal signal masks (`SigPnd`, `SigCgt`, `SigIgn`, …) of a /proc status file, by
    /// name; nil when the file cannot be read (the thread is gone).
    static func statusMasks(_ path: String) -> [String: UInt64]? {
        guard let text = readSmallFile(path) else { return nil }
        var masks: [String: UInt64] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("Sig") || line.hasPrefix("ShdPnd") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            masks[String(line[..<colon])] = UInt64(line[line.index(after: colon)...].trimmingCharacters(inSet: " \t"), radix: 16)
        }
        return masks
    }

    private func handleExitStopsIfComplete(_ process: TracedProcessState) {
        let pid = process.pid
        // The main thread first: its /proc entry is the process's.
        let held = process.threads.filter { $0.value == .heldAtExit }.map(\.key).sorted { ($0 == pid ? 0 : $0) < ($1 == pid ? 0 : $1) }
        guard !process.groupExitHandled, !held.isEmpty, !process.threads.values.contains(.running) else { return }
        process.groupExitHandled = true
        if !process.replacedByExec && !process.sharesParentMemory {
            // (After an exec the recorded heap belonged to the image exec replaced: nothing here to
            // scan it in. A vfork child has no heap of its own.)
            process.exitStopSeen = true
            var snapshots: [ThreadSnapshot] = []
            for tid in held {
                var words = [UInt64](repeating: 0, count: 32)
                var sp: UInt64 = 0
                let count = words.withUnsafeMutableBufferPointer {
                    swl_ptrace_getregs(tid, $0.baseAddress, Int32($0.count), &sp)
                }
                if count > 0 {
                    snapshots.append(ThreadSnapshot(tid: tid, endedProcess: tid == process.exitInitiator,
                                                    registers: Array(words[0..<Int(count)]), stackPointer: sp))
                }
            }
            delegate?.tracer(self, exitStop: ExitStop(pid: pid, procTID: held[0], threads: snapshots,
                                                      exitedThreads: process.exitedThreads))
        }
        for tid in held {
            swl_ptrace_cont(tid, 0)
        }
    }
}

private extension Substring {
    func trimmingCharacters(inSet characters: String) -> String {
        var s = self
        while let c = s.first, characters.contains(c) { s.removeFirst() }
        while let c = s.last, characters.contains(c) { s.removeLast() }
        return String(s)
    }
}

/// Reads a /proc file (whose size stat reports as 0) in one go.
public func readSmallFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        bytes += chunk[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}

func monotonicNow() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}
