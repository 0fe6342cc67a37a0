#if canImport(Glibc)
import Glibc
#endif
import SwiftLeakCore

/// Loads the symbol and line tables of modules on a low-priority background thread as the program
/// loads them, so that symbolizing after the program's end only looks addresses up.
///
/// The program runs on one core and swiftleak has the other; reading and sorting a big binary's
/// symbol table and decompressing its debug sections takes about a second for clang, which the end
/// of the run would otherwise wait for. The thread runs at the lowest priority (nice 19), so the
/// recorder, which must keep up with the program, goes first. ``finish()`` drops what has not been
/// started: those modules are loaded on first lookup, as without a preloader.
///
/// The same thread also runs jobs queued with ``enqueue(job:)`` after every module queued before
/// them: symbolizing the frames of new stacks as the program makes them (``Symbolizer/symbolizeAhead(_:in:isReturnAddress:)``),
/// so that the end of the run mostly finds them in the symbolizer's cache.
public final class SymbolPreloader: @unchecked Sendable {
    public let symbolizer: Symbolizer
    private var lock = pthread_mutex_t()
    private var wake = pthread_cond_t()
    private enum Work {
        case prepare(LoadedModule)
        case job(@Sendable (Symbolizer) -> Void)
    }
    private var pending: [Work] = []
    /// The first entry of `pending` not yet taken (taken entries are dropped in batches).
    private var next = 0
    private var queued: Set<LoadedModule> = []
    private var stopping = false
    private var thread: pthread_t?
    private var prepared = 0

    public init(symbolizer: Symbolizer) {
        self.symbolizer = symbolizer
        pthread_mutex_init(&lock, nil)
        pthread_cond_init(&wake, nil)
    }

    deinit {
        _ = finish()
        pthread_cond_destroy(&wake)
        pthread_mutex_destroy(&lock)
    }

    /// Modules prepared so far.
    public var preparedCount: Int {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return prepared
    }

    /// Queues a module just loaded by the program (each module once). Cheap: never waits for
    /// the thread's work.
    public func enqueue(_ module: LoadedModule) {
        guard !module.path.isEmpty else { return }
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        guard !stopping, queued.insert(module).inserted else { return }
        pending.append(.prepare(module))
        if thread == nil { startThread() }
        pthread_cond_signal(&wake)
    }

    /// Queues work for the thread (run after the modules queued before it). Cheap: never waits
    /// for the thread's work. A job not started when ``finish()`` is called is dropped, so it must
    /// only do what the end of the run would otherwise do itself.
    public func enqueue(job: @escaping @Sendable (Symbolizer) -> Void) {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        guard !stopping else { return }
        pending.append(.job(job))
        if thread == nil { startThread() }
        pthread_cond_signal(&wake)
    }

    /// Whether ``finish()`` has been called: a long job checks it now and then and gives up, since
    /// the end of the run does what is left.
    public var isStopping: Bool {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return stopping
    }

    /// Jobs run so far.
    public var jobsRun: Int {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return jobs
    }
    private var jobs = 0

    /// Drops the work not started, tells the thread to stop after the item it is on, and returns the
    /// symbolizer for the lookups, without waiting for that item: a lookup that needs the module
    /// being prepared waits for it on the symbolizer's lock (as it would have to anyway), one that
    /// does not goes ahead. Waiting here cost a short program's end the whole of libc's debug-info
    /// decompression (40-70 ms) even when its report needed no frame at all. The thread owns a
    /// reference to the preloader and is detached, so it may still be finishing its item when the
    /// process exits.
    @discardableResult
    public func finish() -> Symbolizer {
        pthread_mutex_lock(&lock)
        stopping = true
        pending.removeAll()
        next = 0
        if let running = thread { pthread_detach(running) }
        thread = nil
        pthread_cond_signal(&wake)
        pthread_mutex_unlock(&lock)
        return symbolizer
    }

    /// Called with the lock held.
    private func startThread() {
        var handle = pthread_t()
        let box = Unmanaged.passRetained(self)
        let rc = pthread_create(&handle, nil, { context in
            let preloader = Unmanaged<SymbolPreloader>.fromOpaque(context!).takeRetainedValue()
            // Linux keeps the nice value per thread: who = 0 is this thread alone.
            _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 19)
            // Its own name: a thread inherits its creator's (often the drain thread's, swl-drain).
            nameCurrentThread("swl-symbols")
            preloader.run()
            return nil
        }, box.toOpaque())
        if rc == 0 {
            thread = handle
        } else {
            box.release()
        }
    }

    private func run() {
        while true {
            pthread_mutex_lock(&lock)
            while next == pending.count && !stopping { pthread_cond_wait(&wake, &lock) }
            if stopping {
                pthread_mutex_unlock(&lock)
                return
            }
            let work = pending[next]
            next += 1
            if next >= 1024 {
                pending.removeFirst(next)
                next = 0
            }
            pthread_mutex_unlock(&lock)
            switch work {
            case .prepare(let module):
                symbolizer.prepare(module)
                pthread_mutex_lock(&lock)
                prepared += 1
                pthread_mutex_unlock(&lock)
            case .job(let job):
                job(symbolizer)
                pthread_mutex_lock(&lock)
                jobs += 1
                pthread_mutex_unlock(&lock)
            }
        }
    }
}
