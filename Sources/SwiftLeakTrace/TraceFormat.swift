import SwiftLeakCore

/// The trace file's layout (docs/trace-format.md describes every record): a gzip stream whose
/// content starts with `magic` and the format version, followed by records of one type byte and
/// varint fields.
public enum TraceFormat {
    /// "SWLTRACE": the first 8 bytes of the decompressed stream.
    public static let magic: [UInt8] = Array("SWLTRACE".utf8)
    /// Version 3 holds a process tree: one stream per process image (PROCESS opens one, SELECT
    /// switches between them). Version 2 (one process) named blocks by their allocation number and
    /// allocations by a site defined once, as version 3 does; this reader reads both.
    public static let version: UInt64 = 3
    /// The oldest version this reader reads.
    public static let oldestReadable: UInt64 = 2

    /// The content's first bytes: the magic and the version.
    public static func header(version: UInt64 = version) -> [UInt8] {
        var bytes = magic
        var value = version
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
        return bytes
    }

    // Records of the recording, in stream order.
    static let process: UInt8 = 0x01
    static let moduleLoad: UInt8 = 0x02
    static let moduleUnload: UInt8 = 0x03
    static let stack: UInt8 = 0x04
    static let time: UInt8 = 0x05
    static let residentMemory: UInt8 = 0x06
    static let thread: UInt8 = 0x07
    static let abandonedSlots: UInt8 = 0x08
    /// Defines the next allocation site: stack id, size, function.
    static let site: UInt8 = 0x09
    /// An allocation at the address of a block still live (a free the recorder never saw).
    static let allocationReplacing: UInt8 = 0x0a
    /// A free of an address that was never allocated in the recording.
    static let freeUnknown: UInt8 = 0x0b
    /// The program's own `__lsan_default_suppressions()`.
    static let programSuppressions: UInt8 = 0x0c
    /// The following records belong to the stream it names (version 3).
    static let select: UInt8 = 0x0d
    /// 0x40-0x7f: an allocation. Bits 0-4 are the low bits of the site id; with bit 5 set the
    /// rest of the id follows as a varint.
    static let allocation: UInt8 = 0x40
    /// 0x80-0xff: a free. Bits 0-5 are the low bits of the freed block's age; with bit 6 set the
    /// rest follows as a varint.
    static let free: UInt8 = 0x80

    /// The block a FREE_UNKNOWN names when read: no allocation has this number.
    public static let unknownBlock = UInt64.max

    // Records written after the program ended.
    static let exit: UInt8 = 0x10
    static let scan: UInt8 = 0x11
    static let liveBlocks: UInt8 = 0x12
    static let verdicts: UInt8 = 0x13
    static let warning: UInt8 = 0x14
    static let string: UInt8 = 0x15
    static let symbol: UInt8 = 0x16
    /// The run's line about the programs it started and did not track (version 3).
    static let untracked: UInt8 = 0x17
    static let end: UInt8 = 0x1f

    // Kinds of an EXIT record.
    static let exitUnknown: UInt8 = 0
    static let exitExited: UInt8 = 1
    static let exitSignaled: UInt8 = 2
    /// The image was replaced by an exec: the path exec'd follows (version 3).
    static let exitReplaced: UInt8 = 3

    // Limits the reader enforces, so a damaged file cannot make it allocate without bound.
    static let maximumStringBytes = 1 << 20
    static let maximumArguments = 1 << 20
    static let maximumFrames = 4096
    static let maximumBuildIDBytes = 64
    static let maximumFramesPerSymbol = 256
    /// Streams (process images) in one trace.
    static let maximumStreams = 1 << 20

    // Frame flags of a SYMBOL record.
    static let hasFunction: UInt8 = 1
    static let hasFile: UInt8 = 2
    static let hasLine: UInt8 = 4
    static let hasObject: UInt8 = 8
    static let isInlined: UInt8 = 16
    static let hasNote: UInt8 = 32
    static let hasModuleOffset: UInt8 = 64

    @inline(__always)
    static func zigzag(_ value: Int64) -> UInt64 { UInt64(bitPattern: (value << 1) ^ (value >> 63)) }
    @inline(__always)
    static func unzigzag(_ value: UInt64) -> Int64 { Int64(bitPattern: value >> 1) ^ -Int64(bitPattern: value & 1) }
}

/// Frees a buffer with the last copy of the value that holds it (`ByteWriter`, `SiteTable`). The
/// value keeps its own copy of the pointer for the hot path, and sets `pointer` here whenever it
/// moves to a bigger buffer.
final class BufferOwner<Element> {
    var pointer: UnsafeMutablePointer<Element>
    init(_ pointer: UnsafeMutablePointer<Element>) { self.pointer = pointer }
    deinit { pointer.deallocate() }
}

/// Appends varints and raw bytes to a buffer. Not an `Array`: the encoder writes a few bytes per
/// event, and `Array.append` pays a uniqueness and a capacity check for each one; here one
/// capacity check per record (`reserve`) covers its bytes. The buffer is shared by copies (its
/// owner frees it with the last one): move a writer, never copy it.
struct ByteWriter {
    private(set) var start: UnsafeMutablePointer<UInt8>
    private(set) var count = 0
    private var capacity: Int
    private var owner: BufferOwner<UInt8>

    init(capacity: Int = 1 << 16) {
        self.capacity = capacity
        start = .allocate(capacity: capacity)
        owner = BufferOwner(start)
    }

    /// Room for `bytes` more bytes without a further check (a record's fixed part: a varint is
    /// at most 10 bytes).
    @inline(__always)
    mutating func reserve(_ bytes: Int) {
        if count + bytes > capacity { grow(count + bytes) }
    }

    private mutating func grow(_ needed: Int) {
        let newCapacity = max(needed, 2 * capacity)
        let bigger = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
        bigger.update(from: start, count: count)
        start.deallocate()
        start = bigger
        owner.pointer = bigger
        capacity = newCapacity
    }

    /// Hands over the bytes written so far and starts again.
    mutating func take() -> [UInt8] {
        let taken = Array(UnsafeBufferPointer(start: start, count: count))
        count = 0
        return taken
    }

    /// Room for `bytes` more bytes, and where they go: for a run of records written through a
    /// cursor kept in a local (one capacity check for the run, no count stored back per byte),
    /// handed back with `advance(to:)`. Nothing else may write meanwhile.
    @inline(__always)
    mutating func cursor(reserving bytes: Int) -> ByteCursor {
        reserve(bytes)
        return ByteCursor(next: start + count)
    }

    /// Takes the bytes a cursor from `cursor(reserving:)` wrote.
    @inline(__always)
    mutating func advance(to cursor: ByteCursor) { count = cursor.next - start }

    /// Call `reserve` first.
    @inline(__always)
    mutating func byte(_ value: UInt8) {
        start[count] = value
        count += 1
    }

    /// Call `reserve` first (10 bytes).
    @inline(__always)
    mutating func varint(_ value: UInt64) {
        var cursor = ByteCursor(next: start + count)
        cursor.varint(value)
        advance(to: cursor)
    }

    /// Call `reserve` first (10 bytes).
    @inline(__always)
    mutating func signed(_ value: Int64) { varint(TraceFormat.zigzag(value)) }

    /// See `ByteCursor.tagged`. Call `reserve` first (11 bytes).
    @inline(__always)
    mutating func tagged(_ tag: UInt8, bits: UInt64, _ value: UInt64) {
        var cursor = ByteCursor(next: start + count)
        cursor.tagged(tag, bits: bits, value)
        advance(to: cursor)
    }

    mutating func data<C: Collection>(_ data: C) where C.Element == UInt8 {
        reserve(10 + data.count)
        varint(UInt64(data.count))
        for value in data { byte(value) }
    }

    mutating func string(_ text: String) { data(Array(text.utf8)) }

    mutating func fixed64(_ value: UInt64) {
        reserve(8)
        for shift in stride(from: 0, to: 64, by: 8) { byte(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }
}

/// Where the next byte of a `ByteWriter` goes, for a run of records whose room was reserved at
/// once (`ByteWriter.cursor(reserving:)`).
struct ByteCursor {
    var next: UnsafeMutablePointer<UInt8>

    @inline(__always)
    mutating func byte(_ value: UInt8) {
        next.pointee = value
        next += 1
    }

    /// At most 10 bytes.
    @inline(__always)
    mutating func varint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            byte(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        byte(UInt8(value))
    }

    /// A record type whose low `bits` carry the low bits of `value`, the bit above them saying
    /// that the rest of `value` follows as a varint. At most 11 bytes.
    @inline(__always)
    mutating func tagged(_ tag: UInt8, bits: UInt64, _ value: UInt64) {
        let low = UInt8(truncatingIfNeeded: value & ((1 << bits) - 1))
        if value >> bits == 0 {
            byte(tag | low)
        } else {
            byte(tag | UInt8(1 << bits) | low)
            varint(value >> bits)
        }
    }
}
