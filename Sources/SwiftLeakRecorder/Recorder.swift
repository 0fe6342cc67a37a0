import Glibc
import SwiftLeakCore
import SwiftLeakEventABI

/// Counts the recorder keeps while it drains (Valgrind's "total heap usage" and our own checks).
public struct RecorderStatistics: Sendable, Hashable {
    public var events: UInt64 = 0
    public var allocations: UInt64 = 0
    public var frees: UInt64 = 0
    public var bytesAllocated: UInt64 = 0
    /// Frees of addresses we never saw allocated (allocated before the interposer attached).
    public var unknownFrees: UInt64 = 0
    /// Allocations at an address that was still live: a free we never saw.
    public var replacedBlocks: UInt64 = 0
    /// Slots a thread reserved and never filled (it was killed inside an allocation function).
    public var abandonedSlots: UInt64 = 0
    public init() {}
}

/// A module of the traced process and the stretch of time it was mapped, counted in module
/// generations (the number of unloads seen before).
public struct ModuleSpan: Sendable {
    public var module: LoadedModule
    public var firstGeneration: UInt8
    public var lastGeneration: UInt8 = .max
    var record: UInt32
}

/// Drains one process's ring on its own thread into the table of live blocks.
///
/// One lock guards the consumer side: the background thread takes it per batch, and the exit
/// path takes it to drain the rest and take the table while the process is held at its exit.
public final class Recorder: @unchecked Sendable {
    /// Everything the events build up. Applied as a local value per batch: a stored property of a
    /// class would pay a dynamic exclusivity check on every event.
    struct State {
        var table = LiveBlockTable()
        var stats = RecorderStatistics()
        var modules: [ModuleSpan] = []
        var moduleGeneration: UInt8 = 0
    }

    public let ring: EventRing
    private var lock = pthread_mutex_t()
    private var state = State()
    private var thread: pthread_t?
    private var stopRequested = false
    private let batch: UnsafeMutableBufferPointer<swl_event>

    public init(ring: EventRing) {
        self.ring = ring
        pthread_mutex_init(&lock, nil)
        batch = .allocate(capacity: 8192)
    }

    deinit {
        batch.deallocate()
        pthread_mutex_destroy(&lock)
    }

    /// Starts the draining thread.
    public func start() {
        let box = Unmanaged.passRetained(self)
        var handle = pthread_t()
        let rc = pthread_create(&handle, nil, { context in
            let recorder = Unmanaged<Recorder>.fromOpaque(context!).takeRetainedValue()
            recorder.drainLoop()
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create for the recorder failed: \(rc)")
        thread = handle
    }

    /// Stops the draining thread after it has drained what is published.
    public func stop() {
        withLock { stopRequested = true }
        if let thread { pthread_join(thread, nil) }
        thread = nil
    }

    private func drainLoop() {
        var idleRounds = 0
        while true {
            let (consumed, stop) = withLock { () -> (Int, Bool) in
                (drainBatch(skipUnpublished: false), stopRequested)
            }
            if consumed > 0 {
                idleRounds = 0
                continue
            }
            if stop { return }
            // Nothing published: back off up to 1 ms. Producers never wait for us unless the
            // ring is full, and then they sleep on a futex we wake.
            idleRounds += 1
            usleep(idleRounds < 50 ? 50 : 1000)
        }
    }

    /// What the recorder knows once the process is frozen at its exit, or gone.
    public struct FinalState: Sendable {
        public var blocks: SortedBlocks
        public var statistics: RecorderStatistics
        public var modules: [ModuleSpan]
    }

    /// Stops draining, drains the rest, and hands over the live blocks sorted by address. With
    /// `processStopped` (every thread of the process is held at its exit, or it is gone), slots that
    /// were reserved but never published are skipped. The table's memory moves with the blocks:
    /// the recorder is empty afterwards.
    public func finish(processStopped: Bool) -> FinalState {
        stop()
        return withLock {
            while drainBatch(skipUnpublished: processStopped) > 0 {}
            return FinalState(blocks: state.table.consumeSorted(), statistics: state.stats, modules: state.modules)
        }
    }

    private func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return try body()
    }

    private static let placeholder = State()

    /// Must hold the lock.
    private func drainBatch(skipUnpublished: Bool) -> Int {
        var skipped: UInt64 = 0
        let count = ring.consume(into: batch, skipUnpublished: skipUnpublished, skipped: &skipped)
        guard count > 0 || skipped > 0 else { return 0 }
        var local = Self.placeholder
        swap(&local, &state)
        local.stats.abandonedSlots += skipped
        local.stats.events += UInt64(count)
        for index in 0..<count {
            Self.apply(batch[index], to: &local, ring: ring)
        }
        swap(&local, &state)
        return count
    }

    @inline(__always)
    private static func apply(_ event: swl_event, to state: inout State, ring: EventRing) {
        let info = event.info
        switch UInt32(info >> 56) {
        case SWL_EVENT_ALLOC.rawValue:
            let size = info & 0xffff_ffff_ffff
            let block = LiveBlock(address: event.address, size: size, stack: event.stack,
                                  function: AllocationFunction(rawValue: UInt8(truncatingIfNeeded: info >> 48)),
                                  moduleGeneration: state.moduleGeneration)
            state.stats.allocations += 1
            state.stats.bytesAllocated &+= size
            if state.table.insert(block) != nil { state.stats.replacedBlocks += 1 }
        case SWL_EVENT_FREE.rawValue:
            if state.table.remove(event.address) != nil {
                state.stats.frees += 1
            } else {
                state.stats.unknownFrees += 1
            }
        case SWL_EVENT_MODULE_LOAD.rawValue:
            if let module = ring.module(event.stack) {
                state.modules.append(ModuleSpan(module: module, firstGeneration: state.moduleGeneration, record: event.stack))
            }
        case SWL_EVENT_MODULE_UNLOAD.rawValue:
            if let index = state.modules.lastIndex(where: { $0.record == event.stack && $0.lastGeneration == .max }) {
                state.modules[index].lastGeneration = state.moduleGeneration
            }
            if state.moduleGeneration < .max - 1 { state.moduleGeneration += 1 }
        default:
            break // NOP and anything newer than this recorder
        }
    }
}

extension Array where Element == ModuleSpan {
    /// The module that covered `address` for a block of `generation`.
    public func module(containing address: UInt64, generation: UInt8) -> LoadedModule? {
        for span in self.reversed() where span.module.contains(address)
            && span.firstGeneration <= generation && generation <= span.lastGeneration {
            return span.module
        }
        return nil
    }
}
