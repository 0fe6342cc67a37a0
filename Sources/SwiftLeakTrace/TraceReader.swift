import CZlib
import Glibc
import SwiftLeakCore
import SwiftLeakModel

/// What a trace holds besides its event stream.
public struct TraceContents: Sendable {
    public var version: UInt64 = 0
    public var process: ProcessFacts?
    public var exit = ExitFacts()
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
    /// Whether the end marker was read: the trace is whole.
    public var complete = false
    /// Why the trace could not be read to its end (truncated or damaged, and where).
    public var problem: String?
    /// Bytes of the decompressed stream read as complete records.
    public var bytesRead: UInt64 = 0
    public var events: UInt64 = 0
}

/// Reads a trace file: the events go to `onEvent` as they are decoded (memory stays bounded by
/// what the consumer keeps, not by the number of events), the rest comes back as `TraceContents`.
///
/// The events name a block not by its address but by its allocation number (1 for the first
/// allocation, and so on): `.allocation` and `.free` carry that number as their address, and
/// `liveNumbers`/`liveAddresses` map the blocks still live at the end to their real addresses
/// (`LoadedTrace` does that).
///
/// A file that is not a trace or is of a newer format version throws. A trace that is truncated
/// or damaged after its header is read up to its last complete record, and `problem` says so.
public enum TraceReader {
    public static func read(path: String, onEvent: (HeapEvent) -> Void) throws(TraceError) -> TraceContents {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw TraceError("cannot open the trace \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var source = Inflater(fd: fd)
        defer { source.end() }
        var decoder = Decoder()
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
            throw TraceError("\(path) was written by a newer swiftleak (trace format version \(version); this one reads version \(TraceFormat.version))")
        }
        guard version == TraceFormat.version else {
            throw TraceError("\(path) was written by an older swiftleak (trace format version \(version); this one reads version \(TraceFormat.version))")
        }
        decoder.contents.version = version
        position = headerCursor.position

        while !decoder.contents.complete {
            var outcome: Cursor.Stop?
            data.withUnsafeBufferPointer { buffer in
                var cursor = Cursor(position: position)
                while !decoder.contents.complete {
                    let start = cursor.position
                    do throws(Cursor.Stop) {
                        try decoder.record(buffer, &cursor, onEvent: onEvent)
                    } catch {
                        cursor.position = start
                        outcome = error
                        break
                    }
                }
                position = cursor.position
            }
            if decoder.contents.complete { break }
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
                } else if data.isEmpty {
                    decoder.contents.problem = "the trace is truncated after byte \(offset) of its content (it ends before the end of the recording, \(decoder.stage)); read up to there"
                } else {
                    decoder.contents.problem = "the trace is truncated after byte \(offset) of its content (it ends inside a record, \(decoder.stage)); read up to there"
                }
            }
            break
        }
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

/// Decodes records into events and contents. A record changes the state only once it has been
/// read whole, so a record cut short can be read again after more bytes arrive.
struct Decoder {
    var contents = TraceContents()
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
    var strings: [String] = []
    var sawTail = false

    /// Where in the file a cut came, for the message.
    var stage: String {
        sawTail ? "in the records written after the program ended" : "in the events, \(contents.events) events in"
    }

    @inline(__always)
    mutating func record(_ buffer: UnsafeBufferPointer<UInt8>, _ cursor: inout Cursor,
                         onEvent: (HeapEvent) -> Void) throws(Cursor.Stop) {
        let type = try cursor.byte(buffer)
        if type >= TraceFormat.free {
            let age = try cursor.tagged(buffer, type, bits: 6)
            guard age < allocations else { throw .damaged("a free names block \(age) allocations back, of \(allocations)") }
            emit(.free(address: allocations - age, thread: thread), onEvent)
            return
        }
        if type >= TraceFormat.allocation {
            let site = try cursor.tagged(buffer, type, bits: 5)
            guard allocations < UInt64.max - 1 else { throw .damaged("too many allocations") }
            try allocation(site: site, number: allocations + 1, onEvent: onEvent)
            allocations += 1
            return
        }
        switch type {
        case TraceFormat.allocationReplacing:
            let site = try cursor.varint(buffer)
            let age = try cursor.varint(buffer)
            guard age < allocations else { throw .damaged("an allocation replaces block \(age) allocations back, of \(allocations)") }
            try allocation(site: site, number: allocations - age, onEvent: onEvent)
        case TraceFormat.freeUnknown:
            emit(.free(address: TraceFormat.unknownBlock, thread: thread), onEvent)
        case TraceFormat.site:
            let stack = try cursor.varint(buffer)
            let size = try cursor.varint(buffer)
            let function = try cursor.byte(buffer)
            guard stack <= UInt64(stackCount) else { throw .damaged("a site refers to stack \(stack), of \(stackCount) defined") }
            guard size <= 0xffff_ffff_ffff else { throw .damaged("a site's size \(size) is out of range") }
            siteStacks.append(UInt32(stack))
            siteSizes.append(size)
            siteFunctions.append(AllocationFunction(rawValue: function))
        case TraceFormat.programSuppressions:
            let program = try cursor.string(buffer, "a program path")
            let kind = try cursor.byte(buffer)
            let text = try cursor.string(buffer, "the program's suppressions")
            switch kind {
            case 1: contents.programSuppressions = ProgramSuppressionText(program: program, content: .text(text))
            case 2: contents.programSuppressions = ProgramSuppressionText(program: program, content: .unreadable(text))
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
                numbers.append(age < allocations ? allocations - age : 0)
            }
            contents.liveAddresses = addresses
            contents.liveNumbers = numbers
            contents.sawLiveBlocks = true
            sawTail = true
        case TraceFormat.thread:
            thread = UInt32(try cursor.bounded(buffer, max: UInt64(UInt32.max), "a thread id"))
        case TraceFormat.time:
            let delta = try cursor.varint(buffer)
            let (sum, overflow) = time.addingReportingOverflow(delta)
            guard !overflow else { throw .damaged("the time overflows") }
            time = sum
            emit(.time(nanoseconds: time), onEvent)
        case TraceFormat.stack:
            let depth = Int(try cursor.bounded(buffer, max: UInt64(TraceFormat.maximumFrames), "a stack depth"))
            var frames: [UInt64] = []
            frames.reserveCapacity(depth)
            var previous = lastStackStart
            for _ in 0..<depth {
                previous = previous &+ UInt64(bitPattern: try cursor.signed(buffer))
                frames.append(previous)
            }
            guard stackCount < UInt32.max - 1 else { throw .damaged("too many stacks") }
            lastStackStart = frames.first ?? lastStackStart
            stackCount += 1
            emit(.stack(id: stackCount, frames: frames), onEvent)
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
        case TraceFormat.process:
            let pid = Int32(bitPattern: UInt32(try cursor.bounded(buffer, max: UInt64(UInt32.max), "a pid")))
            let ppid = Int32(bitPattern: UInt32(try cursor.bounded(buffer, max: UInt64(UInt32.max), "a pid")))
            let start = try cursor.varint(buffer)
            let count = Int(try cursor.bounded(buffer, max: UInt64(TraceFormat.maximumArguments), "the number of arguments"))
            var command: [String] = []
            for _ in 0..<count { command.append(try cursor.string(buffer, "an argument")) }
            guard contents.process == nil else {
                throw .damaged("a second process record: traces of several processes need a newer swiftleak")
            }
            contents.process = ProcessFacts(pid: pid, ppid: ppid, command: command, startTime: start)
        case TraceFormat.exit:
            let kind = try cursor.byte(buffer)
            let value = try cursor.signed(buffer)
            let core = try cursor.byte(buffer)
            guard let code = Int32(exactly: value) else { throw .damaged("an exit status out of range") }
            switch kind {
            case 0: contents.exit.exit = nil
            case 1: contents.exit.exit = .exited(code: code)
            case 2: contents.exit.exit = .signaled(signal: code, coreDumped: core != 0)
            default: throw .damaged("an unknown kind of exit \(kind)")
            }
            sawTail = true
        case TraceFormat.scan:
            let flags = try cursor.byte(buffer)
            let bytes = try cursor.varint(buffer)
            let seconds = Double(bitPattern: try cursor.fixed64(buffer))
            let freeze = Double(bitPattern: try cursor.fixed64(buffer))
            let note = flags & 1 != 0 ? try cursor.string(buffer, "a scan note") : nil
            contents.exit.scanBytes = bytes
            contents.exit.scanSeconds = seconds.isFinite ? seconds : 0
            contents.exit.freezeSeconds = freeze.isFinite ? freeze : 0
            contents.exit.scanNote = note
            sawTail = true
        case TraceFormat.verdicts:
            let count = try cursor.bounded(buffer, max: UInt64(Int32.max), "the number of verdicts")
            guard count == UInt64(contents.liveAddresses.count) else {
                throw .damaged("\(count) verdicts for \(contents.liveAddresses.count) live blocks")
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
            contents.verdictAddresses = contents.liveAddresses
            contents.exit.verdicts = ExitVerdicts(kinds: kinds, indirectBytes: indirect, leaders: leaders)
            sawTail = true
        case TraceFormat.warning:
            contents.exit.warnings.append(try cursor.string(buffer, "a warning"))
        case TraceFormat.string:
            strings.append(try cursor.string(buffer, "a string"))
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
            contents.symbols.frames[SymbolKey(ip: ip, module: moduleIndex)] = frames
            sawTail = true
        case TraceFormat.end:
            contents.complete = true
        default:
            throw .damaged("an unknown record type 0x\(String(type, radix: 16))")
        }
    }

    @inline(__always)
    private mutating func allocation(site: UInt64, number: UInt64, onEvent: (HeapEvent) -> Void) throws(Cursor.Stop) {
        guard site < UInt64(siteStacks.count) else { throw .damaged("an allocation refers to site \(site), of \(siteStacks.count) defined") }
        let index = Int(site)
        emit(.allocation(address: number, size: siteSizes[index], stack: siteStacks[index], function: siteFunctions[index],
                         thread: thread), onEvent)
    }

    private func string(_ buffer: UnsafeBufferPointer<UInt8>, _ cursor: inout Cursor) throws(Cursor.Stop) -> String {
        let id = try cursor.varint(buffer)
        guard id >= 1, id <= UInt64(strings.count) else { throw .damaged("a string id \(id) is not defined") }
        return strings[Int(id - 1)]
    }

    @inline(__always)
    private mutating func emit(_ event: HeapEvent, _ onEvent: (HeapEvent) -> Void) {
        contents.events += 1
        onEvent(event)
    }
}
