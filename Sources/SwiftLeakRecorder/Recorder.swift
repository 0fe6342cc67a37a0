import CSwiftLeakSys
import Glibc
import SwiftLeakCore
import SwiftLeakEventABI

/// Drains one process's ring on its own thread and hands on what it finds as `HeapEvent`s, in
/// batches, to one consumer (the session's heap model and trace writer). It turns ring facts into
/// values: stack ids become dense and each new stack is sent once with its frames, module records
/// become `LoadedModule`s, and the drain adds what only it sees (the time, the RSS every 100 ms,
/// abandoned slots).
///
/// One lock guards the consumer side: the background thread takes it per batch, and the exit
/// path takes it to drain the rest while the process is held at its exit. The consumer runs under
/// that lock, on the draining thread or the finishing one, never on two at once.
public final class Recorder: @unchecked Sendable {
    public typealias Consumer = (UnsafeBufferPointer<HeapEvent>) -> Void

    public let ring: EventRing
    private let pid: Int32
    private let consumer: Consumer
    private var lock = pthread_mutex_t()
    private var thread: pthread_t?
    private var stopRequested = false
    private let batch: UnsafeMutableBufferPointer<swl_event>
    /// What the conversion keeps between batches. Worked on as a local value per batch: a stored
    /// property of a class would pay a dynamic exclusivity check on every event.
    struct Conversion {
        /// Events handed on per batch: each ring event gives one, plus a `.stack` for a new stack.
        var events = EventBatch()
        /// Ring stack id → dense id (0: not seen yet, or damaged).
        var denseStacks: [UInt32] = []
        var stackCount: UInt32 = 0
        var lastTime: UInt64 = 0
        var lastResidentSample: UInt64 = 0
        /// Events and records the interposer cannot have written (forged or corrupted by the
        /// program): dropped here, at the reading edge.
        var invalidRecords: UInt64 = 0
    }
    private var conversion = Conversion()
    /// The threads of the last batch's first and last events, as the program wrote them (a hint
    /// for the drain's pause: see `CaughtUpPause.saw`).
    private var batchThreads: (first: UInt32, last: UInt32) = (0, 0)

    /// How many events and records were dropped as invalid (see `EventRing.isWellFormed`).
    public var invalidRecords: UInt64 { withLock { conversion.invalidRecords } }
    /// The clock's origin (monotonic nanoseconds): the time events count from it.
    public let startTime: UInt64

    /// The draining thread's name.
    public static let threadName = "swl-drain"

    /// Time events are sent when the clock moved at least this much (nanoseconds).
    static let timeResolution: UInt64 = 1_000_000
    static let residentInterval: UInt64 = 100_000_000
    /// Ring events taken per batch. Small enough that a batch's copies (32 bytes a ring event,
    /// as many for its `HeapEvent`) stay in the core's cache beside the model's table, and large
    /// enough that the per-batch work (lock, clock, consumer call) is a small part per event.
    static let batchCapacity = 1024

    /// `stacksDefined`: the stacks the consumer's model already holds (a fork child's model starts
    /// as a copy of its parent's), so that this ring's stacks get the ids after them.
    /// `clockStart`: the origin of the time events (a fork child's goes on from its parent's
    /// clock, as its model does); nil: now.
    public init(ring: EventRing, pid: Int32, stacksDefined: UInt32 = 0, clockStart: UInt64? = nil,
                consumer: @escaping Consumer) {
        self.ring = ring
        self.pid = pid
        self.consumer = consumer
        conversion.stackCount = stacksDefined
        pthread_mutex_init(&lock, nil)
        batch = .allocate(capacity: Self.batchCapacity)
        conversion.events.reserve(2 * Self.batchCapacity + 4)
        startTime = clockStart ?? Self.monotonicNow()
    }

    deinit {
        conversion.events.release()
        batch.deallocate()
        pthread_mutex_destroy(&lock)
    }

    /// Starts the draining thread.
    public func start() {
        let box = Unmanaged.passRetained(self)
        var handle = pthread_t()
        let rc = pthread_create(&handle, nil, { context in
            let recorder = Unmanaged<Recorder>.fromOpaque(context!).takeRetainedValue()
            // Named for `top -H` and perf (scripts/bench measures this thread's CPU by its name).
            nameCurrentThread(Recorder.threadName)
            recorder.drainLoop()
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create for the recorder failed: \(rc)")
        thread = handle
    }

    private func drainLoop() {
        var idleRounds = 0
        var pause = CaughtUpPause()
        while true {
            // Once stopped, the thread returns at its next look without draining: `finish` drains
            // the rest itself and does not wait for it (it may be in its idle sleep, up to 1 ms).
            let (consumed, stop, threads) = withLock { () -> (Int, Bool, (UInt32, UInt32)) in
                if stopRequested { return (0, true, (0, 0)) }
                return (drainBatch(skipUnpublished: false), false, batchThreads)
            }
            if stop { return }
            pause.after(batchOf: consumed, capacity: batch.count)
            if consumed > 0 { pause.saw(threads: threads.0, threads.1) }
            if consumed == batch.count {
                // A full batch: more is waiting.
                idleRounds = 0
                continue
            }
            if consumed > 0 {
                // We caught up: let the next batch fill before taking it (see `CaughtUpPause`),
                // on the core while the program writes fast and the core is ours, asleep otherwise.
                idleRounds = 0
                if pause.polls, !pause.coreShared, waitOnCoreForFullBatch(&pause) { continue }
                if pause.polls, pause.coreShared {
                    usleep(CaughtUpPause.sharedCoreMicroseconds)
                    pause.sleptOnSharedCore()
                    continue
                }
                usleep(pause.microseconds)
                continue
            }
            // Nothing published: back off up to 1 ms. Producers never wait for us unless the
            // ring is full, and then they sleep on a futex we wake.
            idleRounds += 1
            usleep(idleRounds < 50 ? 50 : 1000)
        }
    }

    /// Looks at the ring, handing the core to anyone else who wants it between looks
    /// (`sched_yield`), until a full batch is reserved, `CaughtUpPause.pollNanoseconds` passed, or
    /// the yields show that another task shares the core (`CaughtUpPause.yielded`). Returns
    /// whether there is anything to take on a core of our own. Bounded by the clock: the tail it
    /// reads is the program's.
    private func waitOnCoreForFullBatch(_ pause: inout CaughtUpPause) -> Bool {
        let full = UInt64(batch.count)
        let deadline = Self.monotonicNow() &+ CaughtUpPause.pollNanoseconds
        var switches = swl_thread_involuntary_switches()
        while ring.reservedAhead < full && Self.monotonicNow() < deadline && !pause.coreShared {
            sched_yield()
            let now = swl_thread_involuntary_switches()
            pause.yielded(handingOverTheCore: now != switches)
            switches = now
        }
        return !pause.coreShared && ring.reservedAhead > 0
    }

    /// Stops draining and drains the rest. With `processStopped` (every thread of the process is
    /// held at its exit, or it is gone), slots that were reserved but never published are
    /// skipped. The consumer has seen every event when this returns.
    ///
    /// Only the positions reserved when it is called are taken. Every thread is held at an exit
    /// (or gone) nearly always, and then that is all there is; but when swiftleak is ended while
    /// threads it did not hold run on, what they write meanwhile comes after the scan, and
    /// chasing it kept swiftleak from ending for as long as one of them allocated faster than the
    /// drain (`RecorderTests.finishStopsAtTheCallsTail`).
    public func finish(processStopped: Bool) {
        withLock {
            stopRequested = true
            let end = ring.consumedPosition &+ ring.reservedAhead
            while ring.consumedPosition < end,
                  drainBatch(skipUnpublished: processStopped,
                             limit: Int(min(end &- ring.consumedPosition, UInt64(Self.batchCapacity)))) > 0 {}
            var local = Conversion()
            swap(&local, &conversion)
            local.events.removeAll()
            addClockEvents(force: true, news: true, to: &local)
            deliver(local.events)
            swap(&local, &conversion)
        }
        // Not joined: a join waited out the thread's idle sleep at every exit stop (0-1 ms). The
        // thread holds its own reference to the recorder until it returns.
        if let thread { pthread_detach(thread) }
        thread = nil
    }

    /// Drains what is published now (the process runs on, or is stopped at a fork), then runs
    /// `body` before any later event reaches the consumer; returns `body`'s result and the stacks
    /// defined so far.
    ///
    /// Only the events reserved before the call are taken: what the program's other threads go
    /// on writing meanwhile comes after the instant the caller stopped at (a fork: after the
    /// child's copy of the memory was made). Chasing it kept a fork waiting for as long as another
    /// thread allocated faster than the drain took its events: seconds in a release build, for
    /// good in a debug one (`RecorderTests.drainPublishedStopsAtTheCallsTail`).
    public func drainPublished<T>(then body: () -> T) -> (T, stacksDefined: UInt32) {
        withLock {
            var left = ring.reservedAhead
            while left > 0 {
                let taken = drainBatch(skipUnpublished: false, limit: Int(min(left, UInt64(Self.batchCapacity))))
                if taken == 0 { break }
                left -= UInt64(taken)
            }
            return (body(), conversion.stackCount)
        }
    }

    private func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return try body()
    }

    /// Must hold the lock. Returns the number of ring events consumed (0 also when only the
    /// clock had news).
    ///
    /// The events are converted where they lie in the ring and their slots freed after: copying
    /// them out first (32 bytes an event, into a batch as large again as the one of `HeapEvent`s)
    /// was a second pass over every event and pushed the model's table out of the cache.
    private func drainBatch(skipUnpublished: Bool, limit: Int = Recorder.batchCapacity) -> Int {
        if skipUnpublished { return drainCopying(limit: limit) }
        var local = Conversion()
        swap(&local, &conversion)
        local.events.removeAll()
        var slots = ring.peek(max: limit)
        addClockEvents(force: false, news: slots.count > 0, to: &local)
        if slots.count > 0 { batchThreads.first = swl_slot_read(slots.baseAddress!).thread }
        var count = 0
        while slots.count > 0 {
            for index in 0..<slots.count {
                Self.convertChecked(swl_slot_read(slots.baseAddress! + index), ring: ring, into: &local)
            }
            batchThreads.last = swl_slot_read(slots.baseAddress! + slots.count - 1).thread
            ring.release(slots.count)
            count += slots.count
            // Cut short by the ring's end (or a slot not yet published): go on from there.
            guard count < limit else { break }
            slots = ring.peek(max: limit - count)
        }
        deliver(local.events)
        swap(&local, &conversion)
        return count
    }

    /// `drainBatch` for a stopped process, whose threads' reserved and never published slots are
    /// skipped: the events are copied out of the ring first (once per process, at its end).
    private func drainCopying(limit: Int) -> Int {
        var skipped: UInt64 = 0
        let count = ring.consume(into: UnsafeMutableBufferPointer(rebasing: batch[..<min(limit, batch.count)]),
                                 skipUnpublished: true, skipped: &skipped)
        var local = Conversion()
        swap(&local, &conversion)
        local.events.removeAll()
        addClockEvents(force: false, news: count > 0 || skipped > 0, to: &local)
        if skipped > 0 { local.events.append(.abandonedSlots(count: skipped)) }
        for index in 0..<count { Self.convertChecked(batch[index], ring: ring, into: &local) }
        deliver(local.events)
        swap(&local, &conversion)
        return count
    }

    private func deliver(_ events: EventBatch) {
        guard events.count > 0 else { return }
        consumer(events.buffer)
    }

    /// The clock goes into the stream when events follow or an RSS sample is due: an idle
    /// program costs the trace one time and one RSS record per 100 ms.
    private func addClockEvents(force: Bool, news: Bool, to state: inout Conversion) {
        let now = Self.monotonicNow() &- startTime
        let residentDue = force || now &- state.lastResidentSample >= Self.residentInterval
        if force || residentDue || (news && now &- state.lastTime >= Self.timeResolution) {
            state.lastTime = now
            state.events.append(.time(nanoseconds: now))
        }
        if residentDue {
            state.lastResidentSample = now
            if let bytes = Self.residentBytes(pid: pid) { state.events.append(.residentMemory(bytes: bytes)) }
        }
    }

    /// Converts an event the program wrote, or drops it when the interposer cannot have written it.
    @inline(__always)
    private static func convertChecked(_ event: swl_event, ring: EventRing, into state: inout Conversion) {
        guard EventRing.isWellFormed(event) else {
            state.invalidRecords += 1
            return
        }
        convert(event, ring: ring, into: &state)
    }

    @inline(__always)
    private static func convert(_ event: swl_event, ring: EventRing, into state: inout Conversion) {
        let info = event.info
        switch UInt32(info >> 56) {
        case SWL_EVENT_ALLOC.rawValue:
            let stack = denseStack(event.stack, ring: ring, state: &state)
            state.events.append(.allocation(address: event.address, size: info & 0xffff_ffff_ffff, stack: stack,
                                      function: AllocationFunction(rawValue: UInt8(truncatingIfNeeded: info >> 48)),
                                      thread: event.thread))
        case SWL_EVENT_FREE.rawValue:
            state.events.append(.free(address: event.address, thread: event.thread))
        case SWL_EVENT_MODULE_LOAD.rawValue:
            if let module = ring.module(event.stack) {
                state.events.append(.moduleLoad(id: event.stack, module: module))
            } else {
                state.invalidRecords += 1
            }
        case SWL_EVENT_MODULE_UNLOAD.rawValue:
            state.events.append(.moduleUnload(id: event.stack))
        default:
            break // NOP and anything newer than this recorder
        }
    }

    /// The dense id of a ring stack id; the first time, the `.stack` event that defines it goes
    /// out first. A damaged id (not a stack record in the store) is 0.
    @inline(__always)
    private static func denseStack(_ ringID: UInt32, ring: EventRing, state: inout Conversion) -> UInt32 {
        let index = Int(ringID)
        if index < state.denseStacks.count, state.denseStacks[index] != 0 { return state.denseStacks[index] }
        return newStack(ringID, ring: ring, state: &state)
    }

    private static func newStack(_ ringID: UInt32, ring: EventRing, state: inout Conversion) -> UInt32 {
        // `stack` validates the id against what the store holds, so the table below stays within
        // the store's size.
        guard let frames = ring.stack(ringID) else { return 0 }
        let index = Int(ringID)
        if index >= state.denseStacks.count {
            state.denseStacks += repeatElement(0, count: max(index + 1 - state.denseStacks.count, state.denseStacks.count))
        }
        state.stackCount += 1
        state.denseStacks[index] = state.stackCount
        state.events.append(.stack(id: state.stackCount, frames: frames))
        return state.stackCount
    }

    public static func monotonicNow() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    /// Resident bytes of `pid` from /proc/PID/statm (its second field, in pages).
    static func residentBytes(pid: Int32) -> UInt64? {
        let fd = open("/proc/\(pid)/statm", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 128)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        let fields = buffer[..<count].split(separator: UInt8(ascii: " "))
        guard fields.count >= 2, let pages = UInt64(String(decoding: fields[1], as: UTF8.self)) else { return nil }
        return pages * UInt64(sysconf(Int32(_SC_PAGESIZE)))
    }
}

/// The events of one batch, in a buffer kept from batch to batch. Not an `Array`: its append pays
/// a uniqueness check per event, and emptying it runs the enum's outlined destroy on every
/// element; nearly all of them (allocations, frees, times) hold no reference, so only the few
/// that do (`.stack`, `.moduleLoad`) are remembered and destroyed (perf on malloc_heavy: the two
/// were ~5% of all samples).
struct EventBatch {
    private var base: UnsafeMutablePointer<HeapEvent>?
    private(set) var count = 0
    private var capacity = 0
    /// Indices of the events holding references.
    private var owning: [Int] = []

    var buffer: UnsafeBufferPointer<HeapEvent> { UnsafeBufferPointer(start: base, count: count) }

    mutating func reserve(_ minimum: Int) {
        guard minimum > capacity else { return }
        let bigger = UnsafeMutablePointer<HeapEvent>.allocate(capacity: minimum)
        if let base {
            bigger.moveInitialize(from: base, count: count)
            base.deallocate()
        }
        base = bigger
        capacity = minimum
    }

    @inline(__always)
    mutating func append(_ event: HeapEvent) {
        if count == capacity { reserve(max(64, 2 * capacity)) }
        switch event {
        case .stack, .moduleLoad: owning.append(count)
        default: break
        }
        (base! + count).initialize(to: event)
        count += 1
    }

    /// Empties the batch, keeping its memory. The events without references need no destroying.
    mutating func removeAll() {
        if let base {
            for index in owning { (base + index).deinitialize(count: 1) }
        }
        owning.removeAll(keepingCapacity: true)
        count = 0
    }

    /// Frees the memory (the owner's deinit).
    mutating func release() {
        removeAll()
        base?.deallocate()
        base = nil
        capacity = 0
    }
}

/// How long the drain sleeps after a batch that caught up with the program: long enough for the
/// next batch to be worth taking, and no longer than the ring can absorb.
///
/// Taking every event as soon as it is published costs a batch's fixed work per few events and
/// pulls the slots' cache lines away while the program is still writing them. Worse, each wake-up
/// is a context switch on a core the program may be using: on a 2-core machine the drain's timer
/// often fires on the program's own core and preempts it. clang++ (~300 events per ms) woke a
/// drain pausing a fixed 50 µs about 7 times per ms, ~16,000 times per run, and paid for every
/// switch in its own caches (1.68 s of CPU against 1.07 s natively; 1.26 s with this pause).
/// So the pause doubles while the batches come back small and halves when one comes back full:
/// a slow producer gets about one wake-up per `longest`, a fast one keeps the short pause.
/// `longest` (2 ms) fills at most 20,000 of the ring's 262,144 slots even at 10M events/s, and a
/// producer that finds the ring full sleeps on a futex the drain wakes, so no event waits on it.
///
/// While the batches come back full (the pause at its shortest), the drain does not sleep at all:
/// it waits for the next full batch on its core, giving the core away between looks
/// (`sched_yield`), for at most `pollNanoseconds`. A sleeping drain leaves its core idle, and the
/// kernel fills an idle core at once: with a program of two busy threads that had settled on the
/// other core (handing it to each other), it pulls one of them over, and from then on the threads
/// run one per core and the drain preempts one of them on every wake-up while the other spins,
/// waiting for it (`xthread 2`: ~2,000 sleeps per run; 0.86 s against 0.54 s polling on a
/// quiet host, see docs/benchmarks.md). The fast producer that makes the pause shortest keeps
/// the drain busy anyway, so the polling costs little; a slow one (clang++: a few hundred events per ms) never
/// brings the pause down to it, and a program writing from one thread alone does not poll.
struct CaughtUpPause: Equatable {
    static let shortest: UInt32 = 50
    static let longest: UInt32 = 2000
    /// The longest the drain waits on its core for a full batch (as long as the longest pause).
    static let pollNanoseconds: UInt64 = 2_000_000
    /// Microseconds to sleep after the batch just taken, if it caught up.
    private(set) var microseconds = Self.shortest

    /// Batches since the last one in which, or between which, the writing thread changed.
    private(set) var batchesSinceThreadChange = Self.threadChangeMemory
    private var lastThread: UInt32 = 0
    /// How many batches of one thread alone end the polling.
    static let threadChangeMemory = 64

    /// Whether to wait for the next batch on the core (polling) rather than asleep: only for a
    /// fast program whose threads take turns writing. One thread alone keeps its own core when
    /// the drain sleeps, and polling would only burn the drain's (malloc_heavy: +40% drain CPU).
    var polls: Bool { microseconds == Self.shortest && batchesSinceThreadChange < Self.threadChangeMemory }

    /// Yields in a row, while polling, that handed the core to another task (the drain thread's
    /// involuntary switches went up across the `sched_yield`).
    private(set) var yieldsHandingOverTheCore = 0
    /// So many in a row: the drain shares its core with a busy task, and stops polling.
    static let sharedCoreYields = 3
    /// How long the drain sleeps instead, while its core is shared.
    static let sharedCoreMicroseconds: UInt32 = 1000

    /// Whether the drain's core is another task's too (a program thread, when the program's
    /// threads run one per core): polling then only hands the core back and forth. Each look is
    /// a switch between two processes, and when that thread itself yields (waiting for the other
    /// one), the two pass the core to each other every few microseconds: in the spread placement
    /// of `xthread 2` two thirds of the drain's CPU was the switches (`finish_task_switch`).
    /// Asleep, the drain leaves the core to that thread, which keeps it busy, so the kernel has
    /// no idle core to fill; the drain then wakes once per `sharedCoreMicroseconds` and takes
    /// what piled up in full batches.
    var coreShared: Bool { yieldsHandingOverTheCore >= Self.sharedCoreYields }

    /// Notes one yield while polling: whether another task ran before it returned.
    mutating func yielded(handingOverTheCore switched: Bool) {
        yieldsHandingOverTheCore = switched ? min(yieldsHandingOverTheCore + 1, Self.sharedCoreYields) : 0
    }

    /// After a sleep on a shared core: the next poll looks again, and one more yield that hands
    /// the core over sends the drain back to sleep (one that does not, back to polling).
    mutating func sleptOnSharedCore() {
        yieldsHandingOverTheCore = min(yieldsHandingOverTheCore, Self.sharedCoreYields - 1)
    }

    /// Notes the threads of a non-empty batch's first and last events (the program writes them:
    /// they only steer the polling).
    mutating func saw(threads first: UInt32, _ last: UInt32) {
        if first != lastThread || last != first {
            batchesSinceThreadChange = 0
        } else if batchesSinceThreadChange < Self.threadChangeMemory {
            batchesSinceThreadChange += 1
        }
        lastThread = last
    }

    /// Batches this small (of `capacity`) double the pause.
    static func isSmall(_ consumed: Int, capacity: Int) -> Bool { consumed < capacity / 4 }

    /// Adjusts the pause after a batch of `consumed` events taken with room for `capacity`. An
    /// empty batch (the program idle) leaves it alone: the idle back-off is the drain loop's.
    mutating func after(batchOf consumed: Int, capacity: Int) {
        if consumed >= capacity {
            microseconds = max(microseconds / 2, Self.shortest)
        } else if consumed > 0 && Self.isSmall(consumed, capacity: capacity) {
            microseconds = min(microseconds * 2, Self.longest)
        }
    }
}
