import CZlib
import Glibc
import SwiftLeakCore
import SwiftLeakModel

/// What one stream of a trace (one process image) holds besides its events.
public struct StreamContents: Sendable {
    public var process = ProcessFacts(pid: 0, ppid: 0, command: [], startTime: 0)
    /// The stream this one was copied from at its start (a fork child's, from its parent's):
    /// its heap starts as that stream's was at this point. Nil: it starts empty.
    public var forkedFrom: Int?
    public var exit = ExitFacts()
    /// The path exec'd over this image, when an exec replaced it.
    public var replacedBy: String?
    /// The addresses the verdicts in `exit.verdicts` are about, in their order.
    public var verdictAddresses: [UInt64] = []
    /// The blocks still live at the end, by address (ascending), and each one's allocation number:
    /// the events name blocks by number, these give them back their addresses.
    public var liveAddresses: [UInt64] = []
    public var liveNumbers: [UInt64] = []
    /// Whether the LIVE_BLOCKS record was read.
    public var sawLiveBlocks = false
    /// The program's own `__lsan_default_suppressions()`, when it has one.
    public var programSuppressions: ProgramSuppressionText?
    public var symbols = SymbolTable()
    /// Whether its END record was read: the stream is whole.
    public var complete = false
    public var events: UInt64 = 0
}

/// What a trace holds besides its event streams.
public struct TraceContents: Sendable {
    public var version: UInt64 = 0
    /// One per process image, in the order they were opened (the launched program first).
    public var streams: [StreamContents] = []
    /// The run's line about programs it started and did not track, when it printed one.
    public var untracked: String?
    /// The streams in the order their END records came: the order `run` reported them in.
    public var endOrder: [Int] = []
    /// Whether the trace is whole: every stream ended, and so did the file.
    public var complete = false
    /// Why the trace could not be read to its end (truncated or damaged, and where).
    public var problem: String?
    /// Bytes of the decompressed stream read as complete records.
    public var bytesRead: UInt64 = 0
    public var events: UInt64 = 0

    // The first stream's (the launched program's), for a trace of one process.
    public var process: ProcessFacts? { streams.first?.process }
    public var exit: ExitFacts { streams.first?.exit ?? ExitFacts() }
    public var symbols: SymbolTable { streams.first?.symbols ?? SymbolTable() }
    public var programSuppressions: ProgramSuppressionText? { streams.first?.programSuppressions }
    public var verdictAddresses: [UInt64] { streams.first?.verdictAddresses ?? [] }
}

/// Reads a trace file: the events go to `onEvent` as they are decoded (memory stays bounded by
/// what the consumer keeps, not by the number of events), the rest comes back as `TraceContents`.
///
/// The events name a block not by its address but by its allocation number (1 for the first
/// allocation, and so on): `.allocation` and `.free` carry that number as their address, and
/// `liveNumbers`/`liveAddresses` map the blocks still live at the end to their real addresses
/// (`LoadedTrace` does that).
///
/// A file that is not a trace or is of a version this reader does not read throws. A trace that
/// is truncated or damaged after its header is read up to its last complete record, and
/// `problem` says so.
public enum TraceReader {
    /// A trace of one process, or the events of all its streams mixed (see the other `read`).
    public static func read(path: String, onEvent: (HeapEvent) -> Void) throws(TraceError) -> TraceContents {
        try read(path: path, onStream: { _, _ in }, onEvent: { _, event in onEvent(event) })
    }

    /// Reads every stream: `onStream(stream, forkedFrom)` when a stream opens (before its
    /// first event; `forkedFrom`: the stream whose state it starts from, see
    /// `StreamContents.forkedFrom`), `onEvent(stream, event)` for each event.
    public static func read(path: String, onStream: (Int, Int?) -> Void,
                            onEvent: (Int, HeapEvent) -> Void) throws(TraceError) -> TraceContents {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw TraceError("cannot open the trace \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var source = Inflater(fd: fd)
        defer { source.end() }
        var data: [UInt8] = []
        var position = 0
        var base: UInt64 = 0   // stream offset of data[0]

        // The header: magic and version.
        while data.count < TraceFormat.magic.count + 10 && source.fill(&data) {}
        guard data.count >= TraceFormat.magic.count, Array(data[..<TraceFormat.magic.count]) == TraceFormat.magic else {
            if let failure = source.failure, data.isEmpty {
                throw TraceError("\(path) is not a swiftleak trace (\(failure))")
            }
            throw TraceError("\(path) is not a swiftleak trace (it does not start with the trace's magic bytes)")
        }
        var headerCursor = Cursor(position: TraceFormat.magic.count)
        let version: UInt64
        do {
            version = try data.withUnsafeBufferPointer { try headerCursor.varint($0) }
        } catch {
            throw TraceError("\(path) is not a swiftleak trace (its header is cut short)")
        }
        guard version >= 1 else { throw TraceError("\(path) has an invalid trace format version \(version)") }
        guard version <= TraceFormat.version else {
            throw TraceError("\(path) was written by a newer swiftleak (trace format version \(version); this one reads versions \(TraceFormat.oldestReadable) to \(TraceFormat.version))")
        }
        guard version >= TraceFormat.oldestReadable else {
            throw TraceError("\(path) was written by an older swiftleak (trace format version \(version); this one reads versions \(TraceFormat.oldestReadable) to \(TraceFormat.version))")
        }
        var decoder = Decoder(version: version)
        position = headerCursor.position

        while !decoder.finished {
            var outcome: Cursor.Stop?
            data.withUnsafeBufferPointer { buffer in
                var cursor = Cursor(position: position)
                while !decoder.finished {
                    let start = cursor.position
                    do throws(Cursor.Stop) {
                        try decoder.record(buffer, &cursor, onStream: onStream, onEvent: onEvent)
                    } catch {
                        cursor.position = start
                        outcome = error
                        break
                    }
                }
                position = cursor.position
            }
            if decoder.finished { break }
            switch outcome {
            case .damaged(let reason)?:
                decoder.contents.problem = "the trace is damaged at byte \(base + UInt64(position)) of its content (\(reason)); read up to there"
            case .needMore?, nil:
                // Keep the unread tail, bring in more.
                if position > 0 {
                    data.removeSubrange(0..<position)
                    base += UInt64(position)
                    position = 0
                }
                if source.fill(&data) { continue }
                let offset = base + UInt64(position)
                if let failure = source.failure {
                    decoder.contents.problem = "the trace is damaged after byte \(offset) of its content (\(failure)); read up to there"
                } else if data.isEmpty && decoder.allStreamsEnded && source.streamEnded {
                    // Version 3: every stream ended, and so did the file.
                    decoder.contents.complete = true
                } else if data.isEmpty {
                    decoder.contents.problem = "the trace is truncated after byte \(offset) of its content (it ends before the end of the recording, \(decoder.stage)); read up to there"
                } else {
                    decoder.contents.problem = "the trace is truncated after byte \(offset) of its content (it ends inside a record, \(decoder.stage)); read up to there"
                }
            }
            break
        }
        decoder.close()
        decoder.contents.bytesRead = base + UInt64(position)
        return decoder.contents
    }
}

/// Decompresses a gzip file in chunks.
struct Inflater {
    let fd: Int32
    /// On the heap: zlib keeps a pointer back to it, so it must never move.
    let stream: UnsafeMutablePointer<z_stream>
    let input: UnsafeMutableBufferPointer<UInt8> = .allocate(capacity: 1 << 16)
    let output: UnsafeMutableBufferPointer<UInt8> = .allocate(capacity: 1 << 18)
    var started = false
    var finished = false
    /// Whether the gzip stream ended properly (its trailer was read).
    var streamEnded = false
    var failure: String?

    init(fd: Int32) {
        self.fd = fd
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        // 15 + 16: gzip only.
        if inflateInit2_(stream, 15 + 16, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK {
            started = true
        } else {
            failure = "zlib could not start"
            finished = true
        }
    }

    mutating func end() {
        if started { inflateEnd(stream) }
        started = false
        stream.deallocate()
        input.deallocate()
        output.deallocate()
    }

    /// Appends up to 256 KiB of decompressed bytes; false when nothing more comes (the end, or
    /// an error in `failure`).
    mutating func fill(_ data: inout [UInt8]) -> Bool {
        guard !finished else { return false }
        var produced = 0
        while produced == 0 && !finished {
            if stream.pointee.avail_in == 0 {
                let n = read(fd, input.baseAddress, input.count)
                if n < 0 && errno == EINTR { continue }
                if n < 0 {
                    failure = "reading it failed: \(String(cString: strerror(errno)))"
                    finished = true
                    break
                }
                if n == 0 {
                    finished = true  // the compressed file ends (truncated if before Z_STREAM_END)
                    break
                }
                stream.pointee.avail_in = UInt32(n)
                stream.pointee.next_in = input.baseAddress
            }
            stream.pointee.next_out = output.baseAddress
            stream.pointee.avail_out = UInt32(output.count)
            let rc = inflate(stream, Z_NO_FLUSH)
            produced = output.count - Int(stream.pointee.avail_out)
            switch rc {
            case Z_OK, Z_BUF_ERROR:
                break
            case Z_STREAM_END:
                finished = true
                streamEnded = true
            default:
                failure = rc == Z_DATA_ERROR ? "its compressed data is corrupt" : "zlib error \(rc)"
                finished = true
            }
        }
        data.append(contentsOf: UnsafeBufferPointer(rebasing: output[..<produced]))
        return produced > 0
    }
}

/// A read position in a buffer of decompressed bytes.
struct Cursor {
    enum Stop: Error {
        /// The record continues past the bytes at hand.
        case needMore
        case damaged(String)
    }

    var position: Int

    @inline(__always)
    mutating func byte(_ buffer: UnsafeBufferPointer<UInt8>) throws(Stop) -> UInt8 {
        guard position < buffer.count else { throw .needMore }
        defer { position += 1 }
        return buffer[position]
    }

    @inline(__always)
    mutating func varint(_ buffer: UnsafeBufferPointer<UInt8>) throws(Stop) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let byte = try self.byte(buffer)
            if shift == 63 && byte > 1 { throw .damaged("a number does not fit 64 bits") }
            result |= UInt64(byte & 0x7f) << shift
            if byte < 0x80 { return result }
            shift += 7
            if shift > 63 { throw .damaged("a number does not fit 64 bits") }
        }
    }

    @inline(__always)
    mutating func signed(_ buffer: UnsafeBufferPointer<UInt8>) throws(Stop) -> Int64 {
        TraceFormat.unzigzag(try varint(buffer))
    }

    /// A value whose low `bits` are in the record's type byte `type`, the bit above them saying
    /// that the rest follows as a varint.
    @inline(__always)
    mutating func tagged(_ buffer: UnsafeBufferPointer<UInt8>, _ type: UInt8, bits: UInt64) throws(Stop) -> UInt64 {
        let low = UInt64(type) & ((1 << bits) - 1)
        guard UInt64(type) & (1 << bits) != 0 else { return low }
        let rest = try varint(buffer)
        guard rest >> (64 - bits) == 0 else { throw .damaged("a number does not fit 64 bits") }
        return low | rest << bits
    }

    mutating func bounded(_ buffer: UnsafeBufferPointer<UInt8>, max: UInt64, _ what: String) throws(Stop) -> UInt64 {
        let value = try varint(buffer)
        guard value <= max else { throw .damaged("\(what) \(value) is out of range") }
        return value
    }

    mutating func bytes(_ buffer: UnsafeBufferPointer<UInt8>, max: Int, _ what: String) throws(Stop) -> ArraySlice<UInt8> {
        let count = Int(try bounded(buffer, max: UInt64(max), "the length of \(what)"))
        guard buffer.count - position >= count else { throw .needMore }
        defer { position += count }
        return ArraySlice(buffer[position..<position + count])
    }

    mutating func string(_ buffer: UnsafeBufferPointer<UInt8>, _ what: String) throws(Stop) -> String {
        String(decoding: try bytes(buffer, max: TraceFormat.maximumStringBytes, what), as: UTF8.self)
    }

    mutating func fixed64(_ buffer: UnsafeBufferPointer<UInt8>) throws(Stop) -> UInt64 {
        guard buffer.count - position >= 8 else { throw .needMore }
        var value: UInt64 = 0
        for index in 0..<8 { value |= UInt64(buffer[position + index]) << UInt64(8 * index) }
        position += 8
        return value
    }
}

/// One stream's decoding state: what its records are read against.
struct StreamState {
    var thread: UInt32 = 0
    /// Allocations read so far: the number of the latest one.
    var allocations: UInt64 = 0
    /// The sites defined so far, by id.
    var siteStacks: [UInt32] = []
    var siteSizes: [UInt64] = []
    var siteFunctions: [AllocationFunction] = []
    var time: UInt64 = 0
    var lastStackStart: UInt64 = 0
    var stackCount: UInt32 = 0
    var sawTail = false
    var contents = StreamContents()
}

/// Decodes records into events and contents. A record changes the state only once it has been
/// read whole, so a record cut short can be read again after more bytes arrive.
struct Decoder {
    let version: UInt64
    var contents = TraceContents()
    /// The selected stream's state. Its entry in `streams` holds a placeholder meanwhile (states
    /// are swapped in and out, never copied: a copy would make the next event copy its arrays).
    var state = StreamState()
    /// The selected stream, -1 before the first and after an END.
    var current = -1
    var streams: [StreamState] = []
    /// The file's strings, shared by its streams.
    var strings: [String] = []

    init(version: UInt64) { self.version = version }

    /// Nothing more to read: version 2 ends at its END record; version 3 at the end of the file.
    var finished: Bool { version < 3 && contents.complete }

    var allStreamsEnded: Bool {
        !streams.isEmpty && streams.indices.allSatisfy { $0 == current ? state.contents.complete : streams[$0].contents.complete }
    }

    /// Where in the file a cut came, for the message.
    var stage: String {
        guard current >= 0 else { return "between the streams of its processes" }
        let process = streams.count > 1 ? " of process \(state.contents.process.pid)" : ""
        return state.sawTail ? "in the records written after the program\(process) ended" : "in the events\(process), \(state.contents.events) events in"
    }

    /// Puts the selected stream's state back and hands over every stream's contents.
    mutating func close() {
        if current >= 0 { swap(&state, &streams[current]) }
        current = -1
        contents.streams = streams.map(\.contents)
    }

    private mutating func select(_ stream: Int) {
        guard stream != current else { return }
        if current >= 0 { swap(&state, &streams[current]) }
        swap(&state, &streams[stream])
        current = stream
    }

    @inline(__always)
    mutating func record(_ buffer: UnsafeBufferPointer<UInt8>, _ cursor: inout Cursor,
                         onStream: (Int, Int?) -> Void, onEvent: (Int, HeapEvent) -> Void) throws(Cursor.Stop) {
        let type = try cursor.byte(buffer)
        if type >= TraceFormat.free {
            let age = try cursor.tagged(buffer, type, bits: 6)
            guard current >= 0 else { throw .damaged("a free outside any process's stream") }
            guard age < state.allocations else { throw .damaged("a free names block \(age) allocations back, of \(state.allocations)") }
            emit(.free(address: state.allocations - age, thread: state.thread), onEvent)
            return
        }
        if type >= TraceFormat.allocation {
            let site = try cursor.tagged(buffer, type, bits: 5)
            guard current >= 0 else { throw .damaged("an allocation outside any process's stream") }
            guard state.allocations < UInt64.max - 1 else { throw .damaged("too many allocations") }
            try allocation(site: site, number: state.allocations + 1, onEvent: onEvent)
            state.allocations += 1
            return
        }
        switch type {
        case TraceFormat.process:
            try openStream(buffer, &cursor, onStream: onStream)
            return
        case TraceFormat.select where version >= 3:
            let stream = try cursor.bounded(buffer, max: UInt64(TraceFormat.maximumStreams), "a stream number")
            guard stream < UInt64(streams.count) else { throw .damaged("a SELECT of stream \(stream), of \(streams.count) opened") }
            let ended = Int(stream) == current ? state.contents.complete : streams[Int(stream)].contents.complete
            guard !ended else { throw .damaged("a SELECT of stream \(stream), which has ended") }
            select(Int(stream))
            return
        case TraceFormat.string:
            strings.append(try cursor.string(buffer, "a string"))
            return
        case TraceFormat.untracked where version >= 3:
            contents.untracked = try cursor.string(buffer, "the untracked programs")
            return
        default:
            guard current >= 0 else { throw .damaged("a record of type 0x\(String(type, radix: 16)) outside any process's stream") }
            try streamRecord(type, buffer, &cursor, onEvent: onEvent)
        }
    }

    /// A PROCESS record: it opens the next stream and selects it.
    private mutating func openStream(_ buffer: UnsafeBufferPointer<UInt8>, _ cursor: inout Cursor,
                                     onStream: (Int, Int?) -> Void) throws(Cursor.Stop) {
        let pid = Int32(bitPattern: UInt32(try cursor.bounded(buffer, max: UInt64(UInt32.max), "a pid")))
        let ppid = Int32(bitPattern: UInt32(try cursor.bounded(buffer, max: UInt64(UInt32.max), "a pid")))
        let start = try cursor.varint(buffer)
        let count = Int(try cursor.bounded(buffer, max: UInt64(TraceFormat.maximumArguments), "the number of arguments"))
        var command: [String] = []
        for _ in 0..<count { command.append(try cursor.string(buffer, "an argument")) }
        var forkedFrom: Int?
        if version >= 3 {
            let from = try cursor.bounded(buffer, max: UInt64(TraceFormat.maximumStreams), "a stream number")
            if from > 0 {
                guard from - 1 < UInt64(streams.count) else { throw .damaged("a process forked from stream \(from - 1), of \(streams.count) opened") }
                let parent = Int(from - 1)
                let ended = parent == current ? state.contents.complete : streams[parent].contents.complete
                guard !ended else { throw .damaged("a process forked from stream \(parent), which has ended") }
                forkedFrom = parent
            }
            guard streams.count < TraceFormat.maximumStreams else { throw .damaged("too many streams") }
        } else if !streams.isEmpty {
            throw .damaged("a second process record in a version \(version) trace")
        }
        // A fork child's stream goes on from its parent's state: its live blocks and their
        // numbers, its sites, stacks and clock.
        var opened = forkedFrom.map { $0 == current ? state : streams[$0] } ?? StreamState()
        opened.sawTail = false
        opened.contents = StreamContents()
        opened.contents.process = ProcessFacts(pid: pid, ppid: ppid, command: command, startTime: start)
        opened.contents.forkedFrom = forkedFrom
        if current >= 0 { swap(&state, &streams[current]) }
        streams.append(StreamState())
        current = streams.count - 1
        state = opened
        onStream(current, forkedFrom)
    }

    @inline(__always)
    private mutating func streamRecord(_ type: UInt8, _ buffer: UnsafeBufferPointer<UInt8>, _ cursor: inout Cursor,
                                       onEvent: (Int, HeapEvent) -> Void) throws(Cursor.Stop) {
        switch type {
        case TraceFormat.allocationReplacing:
            let site = try cursor.varint(buffer)
            let age = try cursor.varint(buffer)
            guard age < state.allocations else { throw .damaged("an allocation replaces block \(age) allocations back, of \(state.allocations)") }
            try allocation(site: site, number: state.allocations - age, onEvent: onEvent)
        case TraceFormat.freeUnknown:
            emit(.free(address: TraceFormat.unknownBlock, thread: state.thread), onEvent)
        case TraceFormat.site:
            let stack = try cursor.varint(buffer)
            let size = try cursor.varint(buffer)
            let function = try cursor.byte(buffer)
            guard stack <= UInt64(state.stackCount) else { throw .damaged("a site refers to stack \(stack), of \(state.stackCount) defined") }
            guard size <= 0xffff_ffff_ffff else { throw .damaged("a site's size \(size) is out of range") }
            state.siteStacks.append(UInt32(stack))
            state.siteSizes.append(size)
            state.siteFunctions.append(AllocationFunction(rawValue: function))
        case TraceFormat.programSuppressions:
            let program = try cursor.string(buffer, "a program path")
            let kind = try cursor.byte(buffer)
            let text = try cursor.string(buffer, "the program's suppressions")
            switch kind {
            case 1: state.contents.programSuppressions = ProgramSuppressionText(program: program, content: .text(text))
            case 2: state.contents.programSuppressions = ProgramSuppressionText(program: program, content: .unreadable(text))
            default: throw .damaged("an unknown kind of program suppressions \(kind)")
            }
        case TraceFormat.liveBlocks:
            let count = try cursor.bounded(buffer, max: UInt64(Int32.max), "the number of live blocks")
            var addresses: [UInt64] = [], numbers: [UInt64] = []
            var previous: UInt64 = 0
            for _ in 0..<count {
                let (address, overflow) = previous.addingReportingOverflow(try cursor.varint(buffer))
                guard !overflow else { throw .damaged("a live block's address overflows") }
                previous = address
                let age = try cursor.varint(buffer)
                addresses.append(address)
                numbers.append(age < state.allocations ? state.allocations - age : 0)
            }
            state.contents.liveAddresses = addresses
            state.contents.liveNumbers = numbers
            state.contents.sawLiveBlocks = true
            state.sawTail = true
        case TraceFormat.thread:
            state.thread = UInt32(try cursor.bounded(buffer, max: UInt64(UInt32.max), "a thread id"))
        case TraceFormat.time:
            let delta = try cursor.varint(buffer)
            let (sum, overflow) = state.time.addingReportingOverflow(delta)
            guard !overflow else { throw .damaged("the time overflows") }
            state.time = sum
            emit(.time(nanoseconds: sum), onEvent)
        case TraceFormat.stack:
            let depth = Int(try cursor.bounded(buffer, max: UInt64(TraceFormat.maximumFrames), "a stack depth"))
            var frames: [UInt64] = []
            frames.reserveCapacity(depth)
            var previous = state.lastStackStart
            for _ in 0..<depth {
                previous = previous &+ UInt64(bitPattern: try cursor.signed(buffer))
                frames.append(previous)
            }
            guard state.stackCount < UInt32.max - 1 else { throw .damaged("too many stacks") }
            state.lastStackStart = frames.first ?? state.lastStackStart
            state.stackCount += 1
            emit(.stack(id: state.stackCount, frames: frames), onEvent)
        case TraceFormat.residentMemory:
            emit(.residentMemory(bytes: try cursor.varint(buffer)), onEvent)
        case TraceFormat.abandonedSlots:
            emit(.abandonedSlots(count: try cursor.varint(buffer)), onEvent)
        case TraceFormat.moduleLoad:
            let id = UInt32(try cursor.bounded(buffer, max: UInt64(UInt32.max), "a module id"))
            let bias = try cursor.varint(buffer)
            let start = try cursor.varint(buffer)
            let end = try cursor.varint(buffer)
            let buildID = Array(try cursor.bytes(buffer, max: TraceFormat.maximumBuildIDBytes, "a build id"))
            let path = try cursor.string(buffer, "a module path")
            emit(.moduleLoad(id: id, module: LoadedModule(path: path, loadBias: bias, start: start, end: end, buildID: buildID)), onEvent)
        case TraceFormat.moduleUnload:
            emit(.moduleUnload(id: UInt32(try cursor.bounded(buffer, max: UInt64(UInt32.max), "a module id"))), onEvent)
        case TraceFormat.exit:
            let kind = try cursor.byte(buffer)
            let value = try cursor.signed(buffer)
            let core = try cursor.byte(buffer)
            guard let code = Int32(exactly: value) else { throw .damaged("an exit status out of range") }
            switch kind {
            case TraceFormat.exitUnknown: state.contents.exit.exit = nil
            case TraceFormat.exitExited: state.contents.exit.exit = .exited(code: code)
            case TraceFormat.exitSignaled: state.contents.exit.exit = .signaled(signal: code, coreDumped: core != 0)
            case TraceFormat.exitReplaced where version >= 3:
                let path = try cursor.string(buffer, "the path exec'd")
                state.contents.exit.exit = nil
                state.contents.replacedBy = path
            default: throw .damaged("an unknown kind of exit \(kind)")
            }
            state.sawTail = true
        case TraceFormat.scan:
            let flags = try cursor.byte(buffer)
            let bytes = try cursor.varint(buffer)
            let seconds = Double(bitPattern: try cursor.fixed64(buffer))
            let freeze = Double(bitPattern: try cursor.fixed64(buffer))
            let note = flags & 1 != 0 ? try cursor.string(buffer, "a scan note") : nil
            state.contents.exit.scanBytes = bytes
            state.contents.exit.scanSeconds = seconds.isFinite ? seconds : 0
            state.contents.exit.freezeSeconds = freeze.isFinite ? freeze : 0
            state.contents.exit.scanNote = note
            state.sawTail = true
        case TraceFormat.verdicts:
            let count = try cursor.bounded(buffer, max: UInt64(Int32.max), "the number of verdicts")
            guard count == UInt64(state.contents.liveAddresses.count) else {
                throw .damaged("\(count) verdicts for \(state.contents.liveAddresses.count) live blocks")
            }
            var kinds: [LeakKind] = [], indirect: [UInt64] = [], leaders: [Int32] = []
            for _ in 0..<count {
                let raw = try cursor.byte(buffer)
                guard Int(raw) < LeakKind.allCases.count else { throw .damaged("an unknown leak kind \(raw)") }
                let kind = LeakKind.allCases[Int(raw)]
                var charged: UInt64 = 0, leader: Int32 = -1
                if kind == .definitelyLost { charged = try cursor.varint(buffer) }
                if kind == .indirectlyLost {
                    leader = Int32(try cursor.bounded(buffer, max: count, "a leader index")) - 1
                }
                kinds.append(kind)
                indirect.append(charged)
                leaders.append(leader)
            }
            state.contents.verdictAddresses = state.contents.liveAddresses
            state.contents.exit.verdicts = ExitVerdicts(kinds: kinds, indirectBytes: indirect, leaders: leaders)
            state.sawTail = true
        case TraceFormat.warning:
            state.contents.exit.warnings.append(try cursor.string(buffer, "a warning"))
        case TraceFormat.symbol:
            let ip = try cursor.varint(buffer)
            let module = try cursor.signed(buffer)
            guard let moduleIndex = Int32(exactly: module), moduleIndex >= -1 else { throw .damaged("a symbol's module index is out of range") }
            let count = Int(try cursor.bounded(buffer, max: UInt64(TraceFormat.maximumFramesPerSymbol), "the number of frames of a symbol"))
            var frames: [SymbolizedFrame] = []
            for _ in 0..<count {
                let flags = try cursor.byte(buffer)
                var frame = SymbolizedFrame(ip: ip)
                if flags & TraceFormat.hasFunction != 0 {
                    // Traces keep names as the symbol table spells them.
                    frame.function = try string(buffer, &cursor)
                    frame.mangledFunction = frame.function
                }
                if flags & TraceFormat.hasFile != 0 { frame.file = try string(buffer, &cursor) }
                if flags & TraceFormat.hasLine != 0 { frame.line = Int(try cursor.bounded(buffer, max: UInt64(Int32.max), "a line number")) }
                if flags & TraceFormat.hasObject != 0 { frame.object = try string(buffer, &cursor) }
                frame.inlined = flags & TraceFormat.isInlined != 0
                if flags & TraceFormat.hasNote != 0 { frame.note = try string(buffer, &cursor) }
                if flags & TraceFormat.hasModuleOffset != 0 { frame.moduleOffset = try cursor.varint(buffer) }
                frames.append(frame)
            }
            state.contents.symbols.frames[SymbolKey(ip: ip, module: moduleIndex)] = frames
            state.sawTail = true
        case TraceFormat.end:
            state.contents.complete = true
            contents.endOrder.append(current)
            if version < 3 {
                contents.complete = true
            } else {
                // The stream is over: the next record selects or opens another.
                swap(&state, &streams[current])
                current = -1
            }
        default:
            throw .damaged("an unknown record type 0x\(String(type, radix: 16))")
        }
    }

    @inline(__always)
    private mutating func allocation(site: UInt64, number: UInt64, onEvent: (Int, HeapEvent) -> Void) throws(Cursor.Stop) {
        guard site < UInt64(state.siteStacks.count) else { throw .damaged("an allocation refers to site \(site), of \(state.siteStacks.count) defined") }
        let index = Int(site)
        emit(.allocation(address: number, size: state.siteSizes[index], stack: state.siteStacks[index],
                         function: state.siteFunctions[index], thread: state.thread), onEvent)
    }

    private func string(_ buffer: UnsafeBufferPointer<UInt8>, _ cursor: inout Cursor) throws(Cursor.Stop) -> String {
        let id = try cursor.varint(buffer)
        guard id >= 1, id <= UInt64(strings.count) else { throw .damaged("a string id \(id) is not defined") }
        return strings[Int(id - 1)]
    }

    @inline(__always)
    private mutating func emit(_ event: HeapEvent, _ onEvent: (Int, HeapEvent) -> Void) {
        contents.events += 1
        state.contents.events += 1
        onEvent(current, event)
    }
}
