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

/// The ptrace event loop of one traced process. It must run on the thread that spawned the
/// process (ptrace requests are only accepted from the tracing thread).
public final class Tracer {
    public let pid: Int32
    private enum ThreadState {
        case running
        /// At its exit stop, held for the exit work.
        case heldAtExit
        /// Past its own exit stop, alone (pthread_exit): dying, not part of the exit work.
        case released
    }
    private var threads: [Int32: ThreadState] = [:]
    /// Threads announced by a clone event whose first stop we have not seen yet, and threads whose
    /// first stop came before the clone event.
    private var awaitingFirstStop: Set<Int32> = []
    private var unannounced: Set<Int32> = []
    private var groupExitHandled = false
    /// The first thread held at its exit in the group exit.
    private var exitInitiator: Int32?
    private var execCount = 0
    /// See ``ExitStop/exitedThreads``.
    private var exitedThreads: [(tid: Int32, stackPointer: UInt64)] = []

    /// Whether the exit work ran (false after SIGKILL or an exec that replaced the image).
    public private(set) var exitStopSeen = false
    /// Set when the program replaced itself with exec: the recorded heap is gone with the image.
    public private(set) var replacedByExec = false

    /// Asked at a thread's exit stop: has the program announced that it is exiting as a whole
    /// (the interposer's atexit handler ran)?
    private let exitAnnounced: () -> Bool
    /// Set once we delivered a signal whose default action kills the process.
    private var fatalSignalDelivered = false

    public init(pid: Int32, exitAnnounced: @escaping () -> Bool = { false }) {
        self.pid = pid
        self.exitAnnounced = exitAnnounced
        threads[pid] = .running
    }

    /// Set when swiftleak stopped tracing because it was asked to end (SIGTERM, SIGINT, SIGHUP,
    /// SIGQUIT) while the program could not (see ``run(onExit:)``): the signal.
    public private(set) var interruptedBy: Int32?
    /// Termination requests seen so far, and when the first came (monotonic nanoseconds).
    private var terminationRequests: Int32 = 0
    private var firstTerminationRequest: UInt64?
    /// How long a termination request may wait on threads held at a stop of ours.
    static let terminationGrace: UInt64 = 2_000_000_000

    /// Runs the program to its end. `onExit` runs once, while every thread is held at its exit.
    ///
    /// While a group exit waits for threads still running, the wait polls: a thread can end
    /// without the exit stop we wait for (the main thread, held or about to stop at its
    /// pthread_exit, is woken by the SIGKILL of another thread's exit_group and becomes a zombie
    /// whose status the kernel gives only once every other thread, held by us, is gone).
    /// A termination request is forwarded to the program by the signal handler; if the program
    /// cannot act on it within a grace period because threads are held at a stop of ours, or at
    /// a second request, swiftleak does the exit work with what it has and returns the signal.
    public func run(onExit: (ExitStop) -> Void) -> ProcessExit {
        while true {
            if let forced = checkTerminationRequests(onExit: onExit) { return forced }
            var status: Int32 = 0
            let polling = groupExitPending || firstTerminationRequest != nil
            let tid = swl_wait_any(&status, !polling)
            if tid == 0 {
                if groupExitPending { noteThreadsGoneWithoutExitStop(onExit: onExit) }
                usleep(1000)
                continue
            }
            if tid < 0 {
                if errno == EINTR { continue }
                // ECHILD: nothing left to wait for (should not happen before the leader's status).
                return .exited(code: 255)
            }
            if swl_wifexited(status) || swl_wifsignaled(status) {
                threads[tid] = nil
                if tid == pid {
                    return swl_wifexited(status)
                        ? .exited(code: swl_wexitstatus(status))
                        : .signaled(signal: swl_wtermsig(status), coreDumped: swl_wcoredump(status))
                }
                handleExitStopsIfComplete(onExit: onExit)
                continue
            }
            guard swl_wifstopped(status) else { continue }
            handleStop(tid: tid, status: status, onExit: onExit)
        }
    }

    /// A group exit has begun (a thread is held at its exit) and waits for other threads.
    private var groupExitPending: Bool {
        !groupExitHandled && threads.values.contains(.heldAtExit)
    }

    /// While a group exit waits: a thread that is a zombie or gone will never stop at its exit.
    private func noteThreadsGoneWithoutExitStop(onExit: (ExitStop) -> Void) {
        var changed = false
        for (tid, state) in threads where state == .running && !Self.isAlive(pid: pid, tid: tid) {
            threads[tid] = .released
            changed = true
        }
        if changed { handleExitStopsIfComplete(onExit: onExit) }
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
    private func checkTerminationRequests(onExit: (ExitStop) -> Void) -> ProcessExit? {
        let count = swl_termination_count()
        if count > terminationRequests {
            terminationRequests = count
            if firstTerminationRequest == nil { firstTerminationRequest = monotonicNow() }
        }
        guard let first = firstTerminationRequest else { return nil }
        let stuck = groupExitPending && monotonicNow() &- first >= Self.terminationGrace
        guard terminationRequests >= 2 || stuck else { return nil }
        let signal = swl_termination_signal()
        interruptedBy = signal
        if groupExitPending {
            // Scan with the threads we hold; the ones that never stopped are not roots.
            for (tid, state) in threads where state == .running { threads[tid] = .released }
            handleExitStopsIfComplete(onExit: onExit)
        }
        for (tid, state) in threads where state == .heldAtExit { swl_ptrace_cont(tid, 0) }
        return .signaled(signal: signal, coreDumped: false)
    }

    private func handleStop(tid: Int32, status: Int32, onExit: (ExitStop) -> Void) {
        let signal = swl_wstopsig(status)
        let event = swl_wstopevent(status)
        if threads[tid] == nil {
            // A new thread's first stop (PTRACE_EVENT_STOP for a seized tracee, with SIGSTOP as
            // its signal: not a group-stop, whatever the signal says) can arrive before its
            // parent's clone event.
            threads[tid] = .running
            unannounced.insert(tid)
            if Int(event) == Int(SWL_EVENT_STOP_GROUP) {
                swl_ptrace_cont(tid, 0)
                return
            }
        }
        switch Int(event) {
        case Int(SWL_EVENT_STOP_CLONE):
            var message: UInt = 0
            swl_ptrace_geteventmsg(tid, &message)
            let child = Int32(truncatingIfNeeded: message)
            if unannounced.remove(child) == nil {
                awaitingFirstStop.insert(child)
                threads[child] = .running
            }
            swl_ptrace_cont(tid, 0)
        case Int(SWL_EVENT_STOP_EXEC):
            execCount += 1
            if execCount > 1 {
                // The program exec'd another image: the heap we recorded is gone with the old one.
                replacedByExec = true
                // After exec only the leader survives (the kernel reaped the other threads).
                threads = [pid: .running]
                exitedThreads = []
            }
            swl_ptrace_cont(tid, 0)
        case Int(SWL_EVENT_STOP_EXIT):
            if groupExitHandled || !isGroupExit(exitingThread: tid) {
                // A lone thread ending (pthread_exit) while the others run on: let it go now, or
                // a pthread_join on it would wait for ever.
                recordExitedThread(tid)
                threads[tid] = .released
                swl_ptrace_cont(tid, 0)
                return
            }
            threads[tid] = .heldAtExit
            if exitInitiator == nil { exitInitiator = tid }
            handleExitStopsIfComplete(onExit: onExit)
        case Int(SWL_EVENT_STOP_GROUP):
            if awaitingFirstStop.remove(tid) != nil || !Self.stopsTheProcess(signal) {
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
            if Self.killsByDefault(signal) && !Self.isHandledOrIgnored(signal, pid: pid) {
                fatalSignalDelivered = true
            }
            swl_ptrace_cont(tid, signal)
        }
    }

    /// Notes where a lone exiting thread's stack ends (its stack pointer at its exit stop).
    private func recordExitedThread(_ tid: Int32) {
        var words = [UInt64](repeating: 0, count: 32)
        var sp: UInt64 = 0
        let count = words.withUnsafeMutableBufferPointer { swl_ptrace_getregs(tid, $0.baseAddress, Int32($0.count), &sp) }
        if count > 0 { exitedThreads.append((tid, sp)) }
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
    private func isGroupExit(exitingThread: Int32) -> Bool {
        if exitingThread == pid || threads[pid] == .heldAtExit { return true }
        if fatalSignalDelivered || exitAnnounced() { return true }
        for (tid, state) in threads where tid != exitingThread && state == .running {
            if Self.hasPendingSIGKILL(pid: pid, tid: tid) { return true }
        }
        return false
    }

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

    private func handleExitStopsIfComplete(onExit: (ExitStop) -> Void) {
        // The main thread first: its /proc entry is the process's.
        let held = threads.filter { $0.value == .heldAtExit }.map(\.key).sorted { ($0 == pid ? 0 : $0) < ($1 == pid ? 0 : $1) }
        guard !groupExitHandled, !held.isEmpty, !threads.values.contains(.running) else { return }
        groupExitHandled = true
        guard !replacedByExec else {
            // The recorded heap belonged to the image exec replaced: nothing here to scan it in.
            for tid in held { swl_ptrace_cont(tid, 0) }
            return
        }
        exitStopSeen = true
        var snapshots: [ThreadSnapshot] = []
        for tid in held {
            var words = [UInt64](repeating: 0, count: 32)
            var sp: UInt64 = 0
            let count = words.withUnsafeMutableBufferPointer {
                swl_ptrace_getregs(tid, $0.baseAddress, Int32($0.count), &sp)
            }
            if count > 0 {
                snapshots.append(ThreadSnapshot(tid: tid, endedProcess: tid == exitInitiator,
                                                registers: Array(words[0..<Int(count)]), stackPointer: sp))
            }
        }
        onExit(ExitStop(pid: pid, procTID: held[0], threads: snapshots, exitedThreads: exitedThreads))
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
