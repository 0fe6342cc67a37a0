import CSwiftLeakPrefetch
import SwiftLeakCore
import SwiftLeakModel

/// Turns one process's stream into trace records (uncompressed), on the drain thread. What makes
/// it small (docs/trace-format.md): an allocation names its site (stack, size, function: defined
/// once by a SITE record) in one to three bytes, and a free names its block by its age (how many
/// allocations came after it), which the reader resolves from the blocks it keeps live, instead of
/// by an address. Addresses are written once, at the end, for the blocks still live. The bytes go to
/// a `TraceFileWriter`, which compresses them on its own thread.
///
/// The encoder keeps no table of live blocks: it feeds each event to the process's `HeapModel`,
/// whose table is numbered (`HeapModel.startNumbering()`) and hands back the number of the block
/// an allocation made or a free ended. One table and one probe per event serve both (two tables
/// were a quarter of the drain's time on malloc_heavy).
///
/// Memory: 8 bytes a slot in the model's table for the numbers, and 48-96 bytes per distinct
/// site (`SiteTable`); nothing grows with the number of events.
///
/// A value worked on in place (the session keeps it in a local while it encodes a batch): as a
/// class, every stored property would pay a dynamic exclusivity check per event. Its buffers are
/// shared by copies, so move it (`Optional.take()`, `swap`), never copy it.
public struct TraceEncoder {
    private var out = ByteWriter()
    private var lastThread: UInt32 = 0
    private var lastTime: UInt64 = 0
    private var lastStackStart: UInt64 = 0
    /// Allocations numbered so far (the first is number 1).
    private var allocations: UInt64 = 0
    private var sites = SiteTable()
    /// Scratch for `encode(_:model:)`: the block number of each event of a batch.
    private var numbers: [UInt64] = []

    public init() {}

    /// The encoder of a fork child's stream: it starts where this one is (the allocations
    /// numbered, the sites, the stack and time deltas; the live blocks' numbers are in the child's
    /// copy of the model), as the reader's copy of this stream does at the child's PROCESS record,
    /// with buffers of its own. Call it when everything this one encoded was handed over
    /// (`take()`), before the child's first event.
    public func forked() -> TraceEncoder {
        var child = TraceEncoder()
        child.lastThread = lastThread
        child.lastTime = lastTime
        child.lastStackStart = lastStackStart
        child.allocations = allocations
        child.sites = sites.copy()
        return child
    }

    /// Bytes encoded since the last `take()`.
    public var pendingBytes: Int { out.count }

    /// Hands over what is encoded so far.
    public mutating func take() -> [UInt8] { out.take() }

    /// The PROCESS record that opens this stream. `forkedFrom`: the stream of the parent a fork
    /// child's stream was copied from (`forked()`), nil for a stream that starts empty (the
    /// launched program, an exec'd image).
    public mutating func process(_ facts: ProcessFacts, forkedFrom: Int? = nil) {
        out.reserve(40)
        out.byte(TraceFormat.process)
        out.varint(UInt64(UInt32(bitPattern: facts.pid)))
        out.varint(UInt64(UInt32(bitPattern: facts.ppid)))
        out.varint(facts.startTime)
        out.varint(UInt64(facts.command.count))
        for argument in facts.command { out.string(argument) }
        out.reserve(10)
        out.varint(forkedFrom.map { UInt64($0) + 1 } ?? 0)
    }

    /// The program's own `__lsan_default_suppressions()`: its text, or why it could not be read,
    /// and the program file it came from (suppression reports name it).
    public mutating func programSuppressions(_ suppressions: ProgramSuppressionText) {
        out.reserve(1)
        out.byte(TraceFormat.programSuppressions)
        out.string(suppressions.program)
        switch suppressions.content {
        case .text(let text):
            out.reserve(1); out.byte(1); out.string(text)
        case .unreadable(let reason):
            out.reserve(1); out.byte(2); out.string(reason)
        }
    }

    /// Applies a batch of events to `model` (numbered: see `HeapModel.startNumbering()`) and
    /// encodes them: the drain's entry point. The model applies the whole batch first and hands
    /// back each allocation's and free's block number; then the records are written from the
    /// events and those numbers. Two tight loops, each inside its own module, instead of a call
    /// across modules per event; the bytes are the same as `event(_:model:)` on each in turn.
    public mutating func encode(_ events: UnsafeBufferPointer<HeapEvent>, model: inout HeapModel) {
        guard events.count > 0 else { return }
        // Taken out while the loop below changes the encoder (and put back: it is kept for the
        // next batch).
        var scratch: [UInt64] = []
        swap(&scratch, &numbers)
        defer { swap(&scratch, &numbers) }
        if scratch.count < events.count { scratch = [UInt64](repeating: 0, count: max(events.count, 2 * scratch.count)) }
        let first = allocations &+ 1
        scratch.withUnsafeMutableBufferPointer { numbers in
            model.apply(events, numberingFrom: first, into: numbers.baseAddress!)
            var index = 0
            while index < events.count {
                // A run of allocations and frees (nearly the whole batch), then the event that ended it.
                index = encodeAllocationsAndFrees(events, from: index, numbers: numbers.baseAddress!)
                if index < events.count {
                    other(events[index])
                    index += 1
                }
            }
        }
    }

    /// The most bytes one allocation or free writes: a THREAD record (1 + 5), a SITE record
    /// (1 + 5 + 10 + 1) and an ALLOCATION_REPLACING one (1 + 10 + 10).
    static let maximumBytesPerBlockEvent = 44

    /// How many events ahead `encodeAllocationsAndFrees` asks for an allocation's site slot.
    static let sitePrefetchDistance = 8

    /// Encodes the allocations and frees from `start` on, the room for all of them reserved at
    /// once and the encoder's counters in locals; returns the index of the first other event.
    @inline(__always)
    private mutating func encodeAllocationsAndFrees(_ events: UnsafeBufferPointer<HeapEvent>, from start: Int,
                                                    numbers: UnsafePointer<UInt64>) -> Int {
        var cursor = out.cursor(reserving: (events.count - start) * Self.maximumBytesPerBlockEvent)
        var state = BlockRecordState(allocations: allocations, lastThread: lastThread)
        var index = start
        while index < events.count {
            // The site table's slot is a miss (the model's table went through the cache since):
            // ask for the slot of the allocation a few events ahead, so the misses overlap.
            if index &+ Self.sitePrefetchDistance < events.count,
               case let .allocation(_, size, stack, function, _) = events[index &+ Self.sitePrefetchDistance] {
                sites.prefetch(stack: stack, function: function.rawValue, size: size & 0xffff_ffff_ffff)
            }
            if case let .allocation(address, size, stack, function, thread) = events[index] {
                if address != 0 {
                    Self.encodeAllocation(size: size, stack: stack, function: function, thread: thread,
                                          number: numbers[index], &cursor, &state, &sites)
                }
            } else if case let .free(_, thread) = events[index] {
                Self.encodeFree(thread: thread, number: numbers[index], &cursor, &state)
            } else {
                break
            }
            index += 1
        }
        out.advance(to: cursor)
        allocations = state.allocations
        lastThread = state.lastThread
        return index
    }

    /// Applies `event` to `model` (numbered: see `HeapModel.startNumbering()`) and encodes it.
    @inline(__always)
    public mutating func event(_ event: HeapEvent, model: inout HeapModel) {
        switch event {
        case let .allocation(address, size, stack, function, thread):
            allocation(address: address, size: size, stack: stack, function: function, thread: thread, model: &model)
        case let .free(address, thread):
            free(address: address, thread: thread, model: &model)
        default:
            model.apply(event)
            other(event)
        }
    }

    /// Encodes an event that is neither an allocation nor a free (those need the model's numbers).
    @inline(__always)
    public mutating func other(_ event: HeapEvent) {
        switch event {
        case .allocation, .free:
            preconditionFailure("allocations and frees are encoded with the model (allocation/free(…, model:))")
        case let .stack(_, frames):
            out.reserve(11)
            out.byte(TraceFormat.stack)
            out.varint(UInt64(frames.count))
            var previous = lastStackStart
            for frame in frames {
                out.reserve(10)
                out.signed(Int64(bitPattern: frame &- previous))
                previous = frame
            }
            lastStackStart = frames.first ?? lastStackStart
        case let .moduleLoad(id, module):
            out.reserve(41)
            out.byte(TraceFormat.moduleLoad)
            out.varint(UInt64(id))
            out.varint(module.loadBias)
            out.varint(module.start)
            out.varint(module.end)
            out.data(module.buildID)
            out.string(module.path)
        case let .moduleUnload(id):
            out.reserve(11)
            out.byte(TraceFormat.moduleUnload)
            out.varint(UInt64(id))
        case let .time(nanoseconds):
            guard nanoseconds >= lastTime else { return }
            out.reserve(11)
            out.byte(TraceFormat.time)
            out.varint(nanoseconds - lastTime)
            lastTime = nanoseconds
        case let .residentMemory(bytes):
            out.reserve(11)
            out.byte(TraceFormat.residentMemory)
            out.varint(bytes)
        case let .abandonedSlots(count):
            out.reserve(11)
            out.byte(TraceFormat.abandonedSlots)
            out.varint(count)
        }
    }

    /// Applies the allocation to `model` and encodes it.
    @inline(__always)
    public mutating func allocation(address: UInt64, size: UInt64, stack: UInt32, function: AllocationFunction,
                                    thread: UInt32, model: inout HeapModel) {
        // The model ignores address 0 (the ring never delivers it): so does the trace.
        guard address != 0 else {
            model.applyAllocation(address: address, size: size, stack: stack, function: function, thread: thread)
            return
        }
        let fresh = allocations &+ 1
        let number = model.applyAllocation(address: address, size: size, stack: stack, function: function,
                                           thread: thread, number: fresh)
        encodeAllocation(size: size, stack: stack, function: function, thread: thread, number: number)
    }

    /// Applies the free to `model` and encodes it.
    @inline(__always)
    public mutating func free(address: UInt64, thread: UInt32, model: inout HeapModel) {
        encodeFree(thread: thread, number: model.applyFree(address: address, thread: thread))
    }

    /// The encoder's figures an ALLOCATION or FREE record is written against, in a local while
    /// a run of them is encoded.
    struct BlockRecordState {
        var allocations: UInt64
        var lastThread: UInt32
    }

    /// An allocation whose block the model numbered `number`: the next fresh number, or the
    /// number of the live block it took the place of.
    @inline(__always)
    private mutating func encodeAllocation(size: UInt64, stack: UInt32, function: AllocationFunction, thread: UInt32,
                                           number: UInt64) {
        var cursor = out.cursor(reserving: Self.maximumBytesPerBlockEvent)
        var state = BlockRecordState(allocations: allocations, lastThread: lastThread)
        Self.encodeAllocation(size: size, stack: stack, function: function, thread: thread, number: number,
                              &cursor, &state, &sites)
        out.advance(to: cursor)
        allocations = state.allocations
        lastThread = state.lastThread
    }

    /// A free of the block numbered `number` (0: not live, or never numbered).
    @inline(__always)
    private mutating func encodeFree(thread: UInt32, number: UInt64) {
        var cursor = out.cursor(reserving: Self.maximumBytesPerBlockEvent)
        var state = BlockRecordState(allocations: allocations, lastThread: lastThread)
        Self.encodeFree(thread: thread, number: number, &cursor, &state)
        out.advance(to: cursor)
        lastThread = state.lastThread
    }

    /// Writes an allocation's records (a THREAD and a SITE record first when needed) at `cursor`,
    /// which has room for `maximumBytesPerBlockEvent`.
    @inline(__always)
    private static func encodeAllocation(size: UInt64, stack: UInt32, function: AllocationFunction, thread: UInt32,
                                         number: UInt64, _ cursor: inout ByteCursor, _ state: inout BlockRecordState,
                                         _ sites: inout SiteTable) {
        if thread != state.lastThread { switchThread(thread, &cursor, &state) }
        let size = size & 0xffff_ffff_ffff
        let (site, isNew) = sites.id(stack: stack, function: function.rawValue, size: size)
        if isNew {
            // The site's id is `site`: ids count from 0, in the order of these records.
            cursor.byte(TraceFormat.site)
            cursor.varint(UInt64(stack))
            cursor.varint(size)
            cursor.byte(function.rawValue)
        }
        if number == state.allocations &+ 1 {
            state.allocations = number
            cursor.tagged(TraceFormat.allocation, bits: 5, site)
        } else {
            // A block at a live block's address: the reader lets it take the old block's place,
            // so the new one keeps the old number (the model's table did the same).
            cursor.byte(TraceFormat.allocationReplacing)
            cursor.varint(site)
            cursor.varint(state.allocations &- number)
        }
    }

    /// Writes a free's records (a THREAD record first when needed) at `cursor`.
    @inline(__always)
    private static func encodeFree(thread: UInt32, number: UInt64, _ cursor: inout ByteCursor,
                                   _ state: inout BlockRecordState) {
        if thread != state.lastThread { switchThread(thread, &cursor, &state) }
        if number != 0 {
            cursor.tagged(TraceFormat.free, bits: 6, state.allocations &- number)
        } else {
            cursor.byte(TraceFormat.freeUnknown)
        }
    }

    @inline(__always)
    private static func switchThread(_ thread: UInt32, _ cursor: inout ByteCursor, _ state: inout BlockRecordState) {
        cursor.byte(TraceFormat.thread)
        cursor.varint(UInt64(thread))
        state.lastThread = thread
    }

    /// The records after the program ended: its exit (or the exec that replaced the image:
    /// `replacedBy`, the path exec'd), the scan, the verdict on every live block (`blocks`, the
    /// model's final heap, in the order of the verdicts), warnings, the run's `untracked` line (in
    /// one stream of the file), the symbols, and the stream's end marker. `strings`: the file's
    /// string table, shared by its streams (their tails are written one after the other).
    /// `handOff`: gets the bytes encoded so far, possibly in the middle of a record, whenever a
    /// megabyte (`handOffBytes`) is pending (a heap of millions of blocks has tens of them), so the compressor
    /// starts on them while the rest is encoded; the caller must append them to the stream
    /// unbroken (no other stream's bytes between two hand-offs) and hand over `take()` after.
    public mutating func finish(exit facts: ExitFacts, blocks: SortedBlocks, symbols: SymbolTable,
                                replacedBy: String? = nil, untracked: String? = nil,
                                strings: TraceStrings = TraceStrings(), handOff: (([UInt8]) -> Void)? = nil,
                                handOffBytes: Int = TraceEncoder.tailHandOffBytes) {
        func handOffIfLarge(_ index: Int) {
            if let handOff, index & 0xffff == 0xffff, out.count >= handOffBytes { handOff(out.take()) }
        }
        let addresses = blocks.addresses
        out.reserve(64)
        out.byte(TraceFormat.exit)
        switch facts.exit {
        case _ where replacedBy != nil:
            out.byte(TraceFormat.exitReplaced); out.varint(0); out.byte(0)
            out.string(replacedBy!)
        case nil:
            out.byte(TraceFormat.exitUnknown); out.varint(0); out.byte(0)
        case .exited(let code)?:
            out.byte(TraceFormat.exitExited); out.signed(Int64(code)); out.byte(0)
        case .signaled(let signal, let core)?:
            out.byte(TraceFormat.exitSignaled); out.signed(Int64(signal)); out.byte(core ? 1 : 0)
        }
        out.reserve(12)
        out.byte(TraceFormat.scan)
        out.byte(facts.scanNote == nil ? 0 : 1)
        out.varint(facts.scanBytes)
        out.fixed64(facts.scanSeconds.bitPattern)
        out.fixed64(facts.freezeSeconds.bitPattern)
        if let note = facts.scanNote { out.string(note) }
        // The blocks still live: their addresses (what the verdicts and the report go by) and
        // their ages, which tie them to the allocations above.
        out.reserve(11)
        out.byte(TraceFormat.liveBlocks)
        out.varint(UInt64(addresses.count))
        var previous: UInt64 = 0
        for (index, address) in addresses.enumerated() {
            out.reserve(20)
            out.varint(address &- previous)
            previous = address
            // 0: a block this trace never saw allocated (a fork child's inherited one).
            let number = index < blocks.numbers.count ? blocks.numbers[index] : 0
            out.varint(number == 0 ? allocations &+ 1 : allocations &- number)
            handOffIfLarge(index)
        }
        if let verdicts = facts.verdicts, verdicts.kinds.count == addresses.count {
            out.reserve(11)
            out.byte(TraceFormat.verdicts)
            out.varint(UInt64(addresses.count))
            for index in addresses.indices {
                out.reserve(11)
                let kind = verdicts.kinds[index]
                out.byte(UInt8(kind.index))
                if kind == .definitelyLost {
                    out.varint(index < verdicts.indirectBytes.count ? verdicts.indirectBytes[index] : 0)
                } else if kind == .indirectlyLost {
                    let leader = index < verdicts.leaders.count ? verdicts.leaders[index] : -1
                    out.varint(UInt64(Int64(leader) + 1))
                }
                handOffIfLarge(index)
            }
        }
        for warning in facts.warnings {
            out.reserve(1)
            out.byte(TraceFormat.warning)
            out.string(warning)
        }
        if let untracked {
            out.reserve(1)
            out.byte(TraceFormat.untracked)
            out.string(untracked)
        }
        // Sorted, so that one run gives one file.
        for key in symbols.frames.keys.sorted(by: { ($0.module, $0.ip) < ($1.module, $1.ip) }) {
            let frames = symbols.frames[key]!.prefix(TraceFormat.maximumFramesPerSymbol)
            var ids: [(UInt64, UInt64, UInt64, UInt64)] = []
            for frame in frames {
                ids.append((stringID(frame.function, strings), stringID(frame.file, strings),
                            stringID(frame.object, strings), stringID(frame.note, strings)))
            }
            out.reserve(31)
            out.byte(TraceFormat.symbol)
            out.varint(key.ip)
            out.signed(Int64(key.module))
            out.varint(UInt64(frames.count))
            for (frame, id) in zip(frames, ids) {
                out.reserve(61)
                var flags: UInt8 = 0
                if frame.function != nil { flags |= TraceFormat.hasFunction }
                if frame.file != nil { flags |= TraceFormat.hasFile }
                if frame.line != nil { flags |= TraceFormat.hasLine }
                if frame.object != nil { flags |= TraceFormat.hasObject }
                if frame.inlined { flags |= TraceFormat.isInlined }
                if frame.note != nil { flags |= TraceFormat.hasNote }
                if frame.moduleOffset != nil { flags |= TraceFormat.hasModuleOffset }
                out.byte(flags)
                if frame.function != nil { out.varint(id.0) }
                if frame.file != nil { out.varint(id.1) }
                if let line = frame.line { out.varint(UInt64(max(0, line))) }
                if frame.object != nil { out.varint(id.2) }
                if frame.note != nil { out.varint(id.3) }
                if let offset = frame.moduleOffset { out.varint(offset) }
            }
        }
        out.reserve(1)
        out.byte(TraceFormat.end)
    }

    /// See `finish`'s `handOff`.
    public static let tailHandOffBytes = 1 << 20

    /// The id of a string, writing its STRING record the first time (ids count from 1).
    private mutating func stringID(_ text: String?, _ strings: TraceStrings) -> UInt64 {
        guard let text else { return 0 }
        if let id = strings.ids[text] { return id }
        let id = UInt64(strings.ids.count + 1)
        strings.ids[text] = id
        out.reserve(1)
        out.byte(TraceFormat.string)
        out.string(text)
        return id
    }
}

/// The strings a trace file defined so far (STRING records), by id: one table for all its
/// streams, so that a tree's processes, which mostly share their symbols' names, store each once.
/// Used by the thread that writes the streams' tails, one after the other.
public final class TraceStrings {
    var ids: [String: UInt64] = [:]
    public init() {}
}

/// A program's own suppressions as a trace stores them (`__lsan_default_suppressions()`).
public struct ProgramSuppressionText: Sendable, Equatable {
    public enum Content: Sendable, Equatable {
        case text(String)
        /// The function exists but its string could not be read: why.
        case unreadable(String)
    }
    /// The program file the function is in.
    public var program: String
    public var content: Content

    public init(program: String, content: Content) {
        self.program = program
        self.content = content
    }
}

/// The trace's sites (stack, function, size) by id, in an open-addressing table with linear
/// probing: no SipHash per allocation (a Dictionary behind a 4096-slot direct-mapped cache still
/// took ~4% of the drain's perf samples on malloc_heavy, in its lookups and hashing). A slot
/// is three words: stack and function (with a bit that marks it used), size, id. At most half
/// full, doubled when it would be more: 48-96 bytes a site.
///
/// A value with raw storage (no dynamic exclusivity checks in the encoder); copies share it, so
/// `copy()` gives a fork child's encoder a table of its own.
struct SiteTable {
    private var slots: UnsafeMutablePointer<UInt64>
    private var capacity: Int
    private var shift: UInt64
    private(set) var count = 0
    /// Frees the slots with the last copy of the table.
    private var owner: BufferOwner<UInt64>

    init(capacity: Int = 1 << 12) {
        precondition(capacity.nonzeroBitCount == 1 && capacity >= 16)
        self.capacity = capacity
        shift = UInt64(64 - capacity.trailingZeroBitCount)
        slots = .allocate(capacity: 3 * capacity)
        slots.initialize(repeating: 0, count: 3 * capacity)
        owner = BufferOwner(slots)
    }

    func copy() -> SiteTable {
        var copy = SiteTable(capacity: capacity)
        copy.slots.update(from: slots, count: 3 * capacity)
        copy.count = count
        return copy
    }

    private static let used: UInt64 = 1 << 40

    @inline(__always)
    private func home(_ key: UInt64, _ size: UInt64) -> Int {
        let mixed = ((key &* 0x9e37_79b9_7f4a_7c15) ^ (size &* 0xc2b2_ae3d_27d4_eb4f)) &* 0x9e37_79b9_7f4a_7c15
        return Int(truncatingIfNeeded: mixed >> shift)
    }

    /// Starts loading the slot where the site's lookup begins (a hint: nothing changes).
    @inline(__always)
    func prefetch(stack: UInt32, function: UInt8, size: UInt64) {
        let key = UInt64(stack) | UInt64(function) << 32 | Self.used
        swl_prefetch_for_read(slots + 3 &* home(key, size))
    }

    /// The id of a site, and whether it was just given (ids count from 0, in order).
    @inline(__always)
    mutating func id(stack: UInt32, function: UInt8, size: UInt64) -> (id: UInt64, isNew: Bool) {
        let key = UInt64(stack) | UInt64(function) << 32 | Self.used
        var slot = home(key, size)
        // Wrapping arithmetic: the slot is below `capacity` by construction, and overflow checks
        // were a third of this loop's instructions.
        while true {
            let found = slots[3 &* slot]
            if found == key && slots[3 &* slot &+ 1] == size { return (slots[3 &* slot &+ 2], false) }
            if found == 0 { break }
            slot = (slot &+ 1) & (capacity &- 1)
        }
        let id = UInt64(count)
        count += 1
        slots[3 * slot] = key
        slots[3 * slot + 1] = size
        slots[3 * slot + 2] = id
        if 2 * count > capacity { grow() }
        return (id, true)
    }

    private mutating func grow() {
        let old = slots, oldCapacity = capacity
        capacity *= 2
        shift -= 1
        slots = .allocate(capacity: 3 * capacity)
        slots.initialize(repeating: 0, count: 3 * capacity)
        for index in 0..<oldCapacity where old[3 * index] != 0 {
            var slot = home(old[3 * index], old[3 * index + 1])
            while slots[3 * slot] != 0 { slot = (slot + 1) & (capacity - 1) }
            (slots + 3 * slot).update(from: old + 3 * index, count: 3)
        }
        owner.pointer.deallocate()
        owner.pointer = slots
    }
}
