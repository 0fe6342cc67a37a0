import SwiftLeakCore

/// The trace file's layout (docs/trace-format.md describes every record): a gzip stream whose
/// content starts with `magic` and the format version, followed by records of one type byte and
/// varint fields.
public enum TraceFormat {
    /// "SWLTRACE": the first 8 bytes of the decompressed stream.
    public static let magic: [UInt8] = Array("SWLTRACE".utf8)
    public static let version: UInt64 = 1

    // Records of the recording, in stream order.
    static let process: UInt8 = 0x01
    static let moduleLoad: UInt8 = 0x02
    static let moduleUnload: UInt8 = 0x03
    static let stack: UInt8 = 0x04
    static let time: UInt8 = 0x05
    static let residentMemory: UInt8 = 0x06
    static let thread: UInt8 = 0x07
    static let abandonedSlots: UInt8 = 0x08
    static let free: UInt8 = 0x09
    /// An allocation by a function numbered 32 or more: the function follows as a byte.
    static let allocationOther: UInt8 = 0x0a
    /// 0x20 + function: an allocation by one of the first 32 functions.
    static let allocationBase: UInt8 = 0x20

    // Records written after the program ended.
    static let exit: UInt8 = 0x40
    static let scan: UInt8 = 0x41
    static let verdicts: UInt8 = 0x42
    static let warning: UInt8 = 0x43
    static let string: UInt8 = 0x44
    static let symbol: UInt8 = 0x45
    static let end: UInt8 = 0x4f

    // Limits the reader enforces, so a damaged file cannot make it allocate without bound.
    static let maximumStringBytes = 1 << 20
    static let maximumArguments = 1 << 20
    static let maximumFrames = 4096
    static let maximumBuildIDBytes = 64
    static let maximumFramesPerSymbol = 256

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

/// Appends varints and raw bytes.
struct ByteWriter {
    var bytes: [UInt8] = []

    @inline(__always)
    mutating func byte(_ value: UInt8) { bytes.append(value) }

    @inline(__always)
    mutating func varint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    @inline(__always)
    mutating func signed(_ value: Int64) { varint(TraceFormat.zigzag(value)) }

    mutating func data<C: Collection>(_ data: C) where C.Element == UInt8 {
        varint(UInt64(data.count))
        bytes.append(contentsOf: data)
    }

    mutating func string(_ text: String) { data(Array(text.utf8)) }

    mutating func fixed64(_ value: UInt64) {
        for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }
}
