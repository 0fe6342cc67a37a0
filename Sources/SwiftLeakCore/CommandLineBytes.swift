/// Arguments, environment entries and paths are bytes on Linux, not Unicode: a program may get
/// `caf\xe9` in Latin-1 and must get exactly that. swiftleak keeps them as bytes end to end and
/// only turns them into text to show them.
public typealias Bytes = [UInt8]

extension Array where Element == UInt8 {
    /// The bytes as text for a report line: valid UTF-8 as it is, every other byte and every
    /// control character as `\xNN` (a newline as `\n`), and a backslash doubled, so that what is
    /// shown maps back to exactly one byte string and no argument can start a report line of its own.
    public var escapedForDisplay: String {
        var text = ""
        var index = 0
        while index < count {
            let byte = self[index]
            let length = Self.utf8SequenceLength(self, at: index)
            if length > 1 {
                text += String(decoding: self[index..<index + length], as: UTF8.self)
                index += length
                continue
            }
            switch byte {
            case UInt8(ascii: "\n"): text += "\\n"
            case UInt8(ascii: "\t"): text += "\\t"
            case UInt8(ascii: "\r"): text += "\\r"
            case UInt8(ascii: "\\"): text += "\\\\"
            case 0x20..<0x7f: text.unicodeScalars.append(Unicode.Scalar(byte))
            default: text += "\\x" + (byte < 16 ? "0" : "") + String(byte, radix: 16)
            }
            index += 1
        }
        return text
    }

    /// The length of the well-formed multi-byte UTF-8 sequence at `index`, or 1 (ASCII or invalid).
    private static func utf8SequenceLength(_ bytes: [UInt8], at index: Int) -> Int {
        let lead = bytes[index]
        let length: Int
        switch lead {
        case 0xc2...0xdf: length = 2
        case 0xe0...0xef: length = 3
        case 0xf0...0xf4: length = 4
        default: return 1
        }
        guard index + length <= bytes.count else { return 1 }
        let decoded = String(validating: bytes[index..<index + length], as: UTF8.self)
        return decoded == nil ? 1 : length
    }

    /// Calls `body` with the bytes as a NUL-terminated C string.
    public func withCString<R>(_ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
        try (self + [0]).withUnsafeBufferPointer { buffer in
            try buffer.withMemoryRebound(to: CChar.self) { try body($0.baseAddress!) }
        }
    }
}

extension String {
    /// A report line's worth of one argument given as text (see `escapedForDisplay`).
    public var escapedForDisplay: String { Array(utf8).escapedForDisplay }
}
