import CSwiftLeakSys
import Glibc
import SwiftLeakCore
import SwiftLeakEventABI

/// The shared memory between swiftleak and one traced process: the event ring and the stack store
/// (layout in CShims/SwiftLeakEventABI). The launcher hands `fd` to the child; the interposer maps it.
public final class EventRing: @unchecked Sendable {
    public struct Configuration: Sendable {
        /// Ring slots (32 bytes each); a power of two. 8 MiB: big enough to ride out the
        /// recorder losing its core for a few milliseconds, small enough to stay mostly in cache
        /// (a 32 MiB ring cost each side a cache miss per slot).
        public var capacity: UInt64 = 1 << 18
        /// Hash buckets for stack interning; a power of two.
        public var bucketCount: UInt32 = 1 << 20
        /// Virtual size of the stack store; only what is written takes memory.
        public var storeSize: UInt64 = 1 << 32
        /// Return addresses captured per allocation.
        public var maxFrames: UInt32 = 24
        public init() {}
    }

    /// swl_ring_header*: its aligned atomics keep it opaque to Swift; the C shim reads it.
    let header: OpaquePointer
    /// -1 once `closeDescriptor` ran.
    public private(set) var fd: Int32
    private let store: UnsafeRawPointer
    private let storeSize: UInt64
    private let totalSize: UInt64
    /// Where the slots are and how many: taken at creation, never re-read from the shared header.
    private let reader: UnsafeMutablePointer<swl_ring_reader>

    public init(_ configuration: Configuration) throws(SystemError) {
        var fd: Int32 = -1
        guard let header = swl_ring_create(configuration.capacity, configuration.bucketCount,
                                           configuration.storeSize, configuration.maxFrames,
                                           getpid(), &fd) else {
            throw SystemError(operation: "memfd_create for the event ring", errno: errno)
        }
        self.header = header
        self.fd = fd
        self.store = swl_ring_store_base(header)
        self.storeSize = swl_ring_store_capacity(header)
        var ringOffset: UInt64 = 0, bucketsOffset: UInt64 = 0, storeOffset: UInt64 = 0
        self.totalSize = swl_ring_layout(configuration.capacity, configuration.bucketCount, configuration.storeSize,
                                         &ringOffset, &bucketsOffset, &storeOffset)
        reader = .allocate(capacity: 1)
        swl_ring_reader_init(reader, header)
    }

    deinit {
        reader.deallocate()
        swl_ring_destroy(header, totalSize)
        if fd >= 0 { close(fd) }
    }

    /// Tells the interposer which process may attach (any other, e.g. a fork child, stays quiet).
    public func setTracedProcess(_ pid: Int32) { swl_ring_set_traced_pid(header, pid) }

    /// Tells the interposer that more than one task may now write into the ring (see
    /// swl_ring_header.single_producer): call it while the process is stopped at the clone of its
    /// first new thread, before that thread or its parent runs on.
    public func setMultipleProducers() { swl_ring_set_multiple_producers(header) }
    /// Whether the interposer may still advance the ring's tail without a lock.
    public var singleProducer: Bool { swl_ring_single_producer(header) != 0 }

    /// The interposer's state word in the program, 0 when it did not say (see
    /// swl_ring_header.state_address). Written by the program: only ever used to write into a
    /// child of that same program.
    public var interposerStateAddress: UInt64 { swl_ring_state_address(header) }

    /// Offers `ring` to fork child `child` of this ring's process (which must be stopped at the
    /// fork, the child not yet running); false when the offer table is full.
    public func offer(_ ring: EventRing, toChild child: Int32) -> Bool {
        guard ring.fd >= 0 else { return false }
        return swl_ring_offer_to_child(header, child, ring.fd)
    }

    /// Clears the offer for `child` (it attached, or it is gone).
    public func withdrawOffer(toChild child: Int32) { swl_ring_withdraw_offer(header, child) }

    /// Whether the interposer attached in the traced process.
    public var interposerAttached: Bool { swl_ring_attached(header) != 0 }
    /// Whether the program's exit handlers have run: it is about to exit as a whole.
    public var exitAnnounced: Bool { swl_ring_exiting(header) != 0 }
    /// Whether the program's `malloc` is not the interposer's: the executable defines its own, and
    /// the allocations it makes through it are not seen.
    public var programDefinesMalloc: Bool { swl_ring_foreign_malloc(header) != 0 }
    /// Whether the interposer gave up (it saw the recorder gone).
    public var interposerDisabled: Bool { swl_ring_disabled(header) != 0 }

    /// glibc's main_arena as the interposer located it, nil when it could not.
    public var allocatorState: Range<UInt64>? {
        var start: UInt64 = 0, end: UInt64 = 0
        swl_ring_allocator_state(header, &start, &end)
        return start != 0 && end > start ? start..<end : nil
    }

    /// The interposer's own-stack areas as its table lists them (start 0: unused), unchecked: the
    /// exit scan believes them only where the mappings agree (OwnStackAreas).
    public var ownStackAreasListed: [(start: UInt64, end: UInt64)] {
        var starts = [UInt64](repeating: 0, count: Int(SWL_OWN_STACK_AREAS))
        var ends = starts
        let count = starts.withUnsafeMutableBufferPointer { s in
            ends.withUnsafeMutableBufferPointer { swl_ring_own_stack_areas(header, s.baseAddress, $0.baseAddress) }
        }
        return (0..<Int(count)).map { (starts[$0], ends[$0]) }
    }

    /// The frame that called exit, _exit, _Exit, abort or raise, as the interposer recorded it;
    /// nil when the program left otherwise (a fatal signal).
    public var exitCaller: ExitCaller? {
        var stackPointer: UInt64 = 0, tid: UInt32 = 0
        var registers = [UInt64](repeating: 0, count: 6)
        registers.withUnsafeMutableBufferPointer { swl_ring_exit_caller(header, &stackPointer, &tid, $0.baseAddress) }
        guard stackPointer != 0, tid != 0 else { return nil }
        return ExitCaller(tid: Int32(bitPattern: tid), stackPointer: stackPointer, calleeSavedRegisters: registers.filter { $0 != 0 })
    }

    /// Closes our copy of the descriptor once the child has its own.
    /// Closing it only once matters: by deinit the number may belong to another file (the log
    /// file a `--log-file=%p` name opens once the pid is known).
    public func closeDescriptor() {
        guard fd >= 0 else { return }
        close(fd)
        fd = -1
    }

    /// The frames of an interned stack, innermost first; nil for id 0 or a damaged record.
    public func stack(_ id: UInt32) -> [UInt64]? {
        guard id != 0 else { return nil }
        let used = swl_ring_store_used(header)
        let offset = UInt64(id) * 8
        guard offset + 16 <= min(used, storeSize) else { return nil }
        let record = store + Int(offset)
        let depth = UInt64(record.load(fromByteOffset: 8, as: UInt32.self))
        let kind = record.load(fromByteOffset: 12, as: UInt32.self)
        // The interposer never writes more than this many frames; a bigger depth is forged.
        guard kind == UInt32(SWL_RECORD_STACK), depth <= Self.maxStackDepth,
              offset + 16 + depth * 8 <= min(used, storeSize) else { return nil }
        return (0..<Int(depth)).map { record.load(fromByteOffset: 16 + $0 * 8, as: UInt64.self) }
    }

    /// The module an event's record id describes; nil for a damaged record.
    public func module(_ id: UInt32) -> LoadedModule? {
        let used = min(swl_ring_store_used(header), storeSize)
        let offset = UInt64(id) * 8
        guard id != 0, offset + 40 <= used else { return nil }
        let record = store + Int(offset)
        let pathLength = UInt64(record.load(fromByteOffset: 4, as: UInt32.self))
        let buildIDLength = UInt64(record.load(fromByteOffset: 8, as: UInt32.self))
        let kind = record.load(fromByteOffset: 12, as: UInt32.self)
        guard kind == UInt32(SWL_RECORD_MODULE), buildIDLength <= 64, pathLength <= 4096,
              offset + 40 + buildIDLength + pathLength <= used else { return nil }
        let data = UnsafeRawBufferPointer(start: record + 40, count: Int(buildIDLength + pathLength))
        let path = Array(data[Int(buildIDLength)...])
        guard Self.mayBeOpened(path) else { return nil }
        return LoadedModule(
            path: String(decoding: path, as: UTF8.self),
            loadBias: record.load(fromByteOffset: 16, as: UInt64.self),
            start: record.load(fromByteOffset: 24, as: UInt64.self),
            end: record.load(fromByteOffset: 32, as: UInt64.self),
            buildID: Array(data[..<Int(buildIDLength)]))
    }

    /// Slots reserved past what was consumed, published or not: a hint only (the program writes
    /// the tail), for deciding when the next batch is worth taking.
    var reservedAhead: UInt64 { swl_ring_reserved_ahead(reader) }
    /// The next position this reader takes (its own copy, not the header's).
    var consumedPosition: UInt64 { reader.pointee.head }

    /// Moves published events out of the ring (see swl_ring_consume).
    func consume(into buffer: UnsafeMutableBufferPointer<swl_event>, skipUnpublished: Bool, skipped: inout UInt64) -> Int {
        swl_ring_consume(reader, buffer.baseAddress, buffer.count, skipUnpublished, &skipped)
    }

    /// The published events from the head on, where they lie (see swl_ring_peek): read each
    /// slot once with `swl_slot_read`, then `release` them.
    func peek(max: Int) -> UnsafeBufferPointer<swl_event> {
        var first: UnsafePointer<swl_event>?
        let count = swl_ring_peek(reader, max, &first)
        return UnsafeBufferPointer(start: first, count: count)
    }

    /// Frees the first `count` slots of the last `peek` for the program's threads.
    func release(_ count: Int) { swl_ring_release(reader, count) }

    // MARK: What the program wrote is untrusted

    /// Frames the interposer captures at most (SWL_MAX_FRAMES in preload.c).
    static let maxStackDepth: UInt64 = 128
    /// User-space addresses on x86_64 Linux lie below 2^47.
    static let addressLimit: UInt64 = 1 << 47

    /// Whether an event is one the interposer could have written: a known type, an allocation
    /// with a non-zero address, a known function and a block inside the user address space.
    /// Anything else was forged or corrupted by the program and is dropped (and counted).
    static func isWellFormed(_ event: swl_event) -> Bool {
        let type = UInt32(event.info >> 56)
        switch type {
        case SWL_EVENT_ALLOC.rawValue:
            let size = event.info & 0xffff_ffff_ffff
            let function = UInt32((event.info >> 48) & 0xff)
            return event.address != 0 && event.address < addressLimit && size <= addressLimit - event.address
                && function != 0 && function < SWL_FN_COUNT.rawValue
        case SWL_EVENT_FREE.rawValue, SWL_EVENT_NOP.rawValue, SWL_EVENT_MODULE_LOAD.rawValue, SWL_EVENT_MODULE_UNLOAD.rawValue:
            return true
        default:
            return false
        }
    }

    /// A module path is opened later (symbols, ELF sections): only a regular file (or a name with
    /// nothing behind it, such as the vdso's) may be, never a FIFO or a device, which could block
    /// swiftleak for ever while it holds the program at its exit.
    static func mayBeOpened(_ path: [UInt8]) -> Bool {
        guard !path.contains(0) else { return false }
        var info = stat()
        let found = path.withCString { stat($0, &info) } == 0
        return !found || (info.st_mode & S_IFMT) == S_IFREG
    }
}

