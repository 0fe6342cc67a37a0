/// A Valgrind suppression pattern: `*` matches any run of characters, `?` exactly one, `\` makes
/// the next character literal; the pattern must cover the whole name (Valgrind's
/// `VG_(string_match)`).
public struct Glob: Hashable, Sendable, CustomStringConvertible {
    public let pattern: String
    private let bytes: [UInt8]
    /// No wildcard: plain comparison, as Valgrind takes for `name_is_simple_str`.
    private let isLiteral: Bool

    public init(_ pattern: String) {
        self.pattern = pattern
        self.bytes = Array(pattern.utf8)
        self.isLiteral = !bytes.contains { $0 == UInt8(ascii: "*") || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "\\") }
    }

    public var description: String { pattern }

    public func matches(_ name: String) -> Bool {
        if isLiteral { return name == pattern }
        // A native string's bytes in place: no copy per name (this runs per frame and suppression).
        if let matched = name.utf8.withContiguousStorageIfAvailable({ text in
            bytes.withUnsafeBufferPointer { Self.match($0[...], text[...]) }
        }) {
            return matched
        }
        let text = Array(name.utf8)
        return bytes.withUnsafeBufferPointer { pattern in text.withUnsafeBufferPointer { Self.match(pattern[...], $0[...]) } }
    }

    /// Iterative glob matching with one backtracking point per `*`: linear in practice, never
    /// exponential on hostile patterns such as `*a*a*a*b`.
    private static func match(_ pattern: Slice<UnsafeBufferPointer<UInt8>>, _ text: Slice<UnsafeBufferPointer<UInt8>>) -> Bool {
        var p = pattern.startIndex, t = text.startIndex
        var starP: Int? = nil, starT = 0
        while t < text.endIndex {
            if p < pattern.endIndex {
                let c = pattern[p]
                if c == UInt8(ascii: "*") {
                    starP = p
                    starT = t
                    p += 1
                    continue
                }
                if c == UInt8(ascii: "?") {
                    p += 1
                    t += 1
                    continue
                }
                var literal = c
                var width = 1
                if c == UInt8(ascii: "\\"), p + 1 < pattern.endIndex {
                    literal = pattern[p + 1]
                    width = 2
                }
                if literal == text[t] {
                    p += width
                    t += 1
                    continue
                }
            }
            guard let star = starP else { return false }
            p = star + 1
            starT += 1
            t = starT
        }
        while p < pattern.endIndex && pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.endIndex
    }
}

/// A LeakSanitizer suppression pattern (`leak:PATTERN`), matched the way compiler-rt's
/// `TemplateMatch` does: a substring search where `*` matches any run of characters, a leading `^`
/// anchors at the start and `$` at the end. Like LSan, each literal piece is searched for at its
/// first occurrence (no backtracking), and an empty name never matches.
public struct SubstringTemplate: Hashable, Sendable, CustomStringConvertible {
    public let pattern: String
    private let bytes: [UInt8]

    public init(_ pattern: String) {
        self.pattern = pattern
        self.bytes = Array(pattern.utf8)
    }

    public var description: String { pattern }

    public func matches(_ name: String) -> Bool {
        let text = Array(name.utf8)
        guard !text.isEmpty else { return false }
        let star = UInt8(ascii: "*"), dollar = UInt8(ascii: "$")
        var p = 0, t = 0
        var anchored = false
        if bytes.first == UInt8(ascii: "^") {
            anchored = true
            p = 1
        }
        var afterStar = false
        while p < bytes.count {
            if bytes[p] == star {
                p += 1
                anchored = false
                afterStar = true
                continue
            }
            if bytes[p] == dollar { return t == text.count || afterStar }
            if t == text.count { return false }
            // The literal piece runs to the next `*` or `$`.
            var end = p
            while end < bytes.count && bytes[end] != star && bytes[end] != dollar { end += 1 }
            let piece = bytes[p..<end]
            guard let found = Self.find(piece, in: text, from: t) else { return false }
            if anchored && found != t { return false }
            t = found + piece.count
            p = end
            anchored = false
            afterStar = false
        }
        return true
    }

    private static func find(_ needle: ArraySlice<UInt8>, in haystack: [UInt8], from start: Int) -> Int? {
        guard haystack.count - start >= needle.count else { return nil }
        var index = start
        while index + needle.count <= haystack.count {
            if haystack[index..<(index + needle.count)].elementsEqual(needle) { return index }
            index += 1
        }
        return nil
    }
}
