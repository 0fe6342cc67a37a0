#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SwiftLeakCore

/// Where a suppression was written: its file and the line of its name (what Valgrind's
/// `used_suppression` lines print), or the line of an LSan `leak:` entry.
public struct SuppressionLocation: Hashable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public init(file: String, line: Int) {
        self.file = file
        self.line = line
    }
    public var description: String { "\(file):\(line)" }
}

/// One frame line of a Valgrind suppression.
public enum FramePattern: Hashable, Sendable {
    /// `fun:NAME`: the frame's function, by its mangled (linker) name.
    case function(Glob)
    /// `obj:PATH`: the full path of the object the frame's code is in.
    case object(Glob)
    /// `src:FILE` or `src:FILE:LINE` (Valgrind 3.14+): the frame's source file name (without its
    /// directory) and, when given, its line.
    case source(Glob, line: Int?)
    /// `...`: zero or more frames of any kind.
    case anyFrames
}

/// A `Memcheck:Leak` entry of a Valgrind suppression file.
public struct LeakSuppression: Hashable, Sendable {
    public var name: String
    /// `match-leak-kinds:`; nil when the entry has none (it then matches every kind).
    public var kinds: Set<LeakKind>?
    public var frames: [FramePattern]
    public var location: SuppressionLocation

    public init(name: String, kinds: Set<LeakKind>?, frames: [FramePattern], location: SuppressionLocation) {
        self.name = name
        self.kinds = kinds
        self.frames = frames
        self.location = location
    }
}

/// A `leak:PATTERN` line of a LeakSanitizer suppression file.
public struct LSanSuppression: Hashable, Sendable {
    public var template: SubstringTemplate
    public var location: SuppressionLocation

    public init(template: SubstringTemplate, location: SuppressionLocation) {
        self.template = template
        self.location = location
    }

    /// LSan suppressions have no names: they are named by what they say, as LSan's own
    /// "Suppressions used:" table shows them.
    public var name: String { "leak:" + template.pattern }
}

/// A suppression file that cannot be used: `FILE:LINE: what was expected`.
public struct SuppressionFileError: Error, Hashable, Sendable, CustomStringConvertible {
    public var file: String
    /// nil when the file could not be read at all.
    public var line: Int?
    public var message: String

    public init(file: String, line: Int?, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String {
        if let line { return "\(file):\(line): \(message)" }
        return "\(file): \(message)"
    }
}

/// Every suppression given to one run: Valgrind `{ … }` entries and LSan `leak:` lines, in the
/// order their files were given.
public struct SuppressionSet: Hashable, Sendable {
    public var leaks: [LeakSuppression] = []
    public var lsan: [LSanSuppression] = []
    /// Entries for other tools or for non-leak Memcheck errors: parsed (so a project's whole file
    /// loads) and not used.
    public var skippedEntries = 0

    public init() {}

    public var isEmpty: Bool { leaks.isEmpty && lsan.isEmpty }

    public mutating func append(_ other: SuppressionSet) {
        leaks += other.leaks
        lsan += other.lsan
        skippedEntries += other.skippedEntries
    }

    /// Reads and parses one file (`--suppressions=FILE`).
    public static func load(path: String) throws(SuppressionFileError) -> SuppressionSet {
        guard let bytes = readWholeFile(path) else {
            throw SuppressionFileError(file: path, line: nil,
                                       message: "cannot read the suppression file (\(String(cString: strerror(errno))))")
        }
        return try parse(String(decoding: bytes, as: UTF8.self), file: path)
    }

    /// Parses a suppression file's text. The form is recognised from the first line that is
    /// neither blank nor a comment: `{` starts Valgrind's syntax, anything else is read as a
    /// LeakSanitizer file (`leak:PATTERN` lines).
    public static func parse(_ text: String, file: String) throws(SuppressionFileError) -> SuppressionSet {
        var lines = SignificantLines(text)
        guard let first = lines.peek() else { return SuppressionSet() }
        if first.text == "{" {
            var syntax = ValgrindSyntax(file: file, lines: lines)
            return try syntax.parse()
        }
        return try lsanSyntax(file: file, lines: &lines)
    }

    /// The sanitizer suppression types that may share a file with `leak:` (ASan, TSan, UBSan,
    /// MSan): parsed and ignored, as LSan itself ignores the other tools' types.
    static let otherSanitizerTypes: Set<String> = [
        "interceptor_name", "interceptor_via_fun", "interceptor_via_lib", "odr_violation", "race", "race_top",
        "mutex", "thread", "signal", "called_from_lib", "deadlock", "alloc_dealloc_mismatch", "memcmp",
        "strcmp", "init-order", "src", "fun", "type", "global", "alignment", "bool", "bounds", "enum",
        "float-cast-overflow", "function", "integer-divide-by-zero", "nonnull-attribute", "null",
        "object-size", "pointer-overflow", "return", "returns-nonnull-attribute", "shift", "shift-base",
        "shift-exponent", "signed-integer-overflow", "unreachable", "vla-bound", "vptr",
        "unsigned-integer-overflow", "implicit-conversion", "cfi-icall", "cfi-vcall", "cfi-nvcall",
        "cfi-derived-cast", "cfi-unrelated-cast", "cfi-cast-strict", "cfi-mfcall",
    ]

    static func lsanSyntax(file: String, lines: inout SignificantLines) throws(SuppressionFileError) -> SuppressionSet {
        var set = SuppressionSet()
        while let line = lines.next() {
            guard let colon = line.text.firstIndex(of: ":") else {
                throw SuppressionFileError(file: file, line: line.number,
                                           message: "expected '{' (a Valgrind suppression) or 'leak:PATTERN' (LeakSanitizer), found '\(line.text)'")
            }
            let type = String(line.text[..<colon])
            let pattern = String(line.text[line.text.index(after: colon)...])
            if type == "leak" {
                guard !pattern.isEmpty else {
                    throw SuppressionFileError(file: file, line: line.number, message: "expected a pattern after 'leak:'")
                }
                set.lsan.append(LSanSuppression(template: SubstringTemplate(pattern),
                                                location: SuppressionLocation(file: file, line: line.number)))
            } else if otherSanitizerTypes.contains(type) {
                set.skippedEntries += 1
            } else {
                throw SuppressionFileError(file: file, line: line.number,
                                           message: "unknown suppression type '\(type)': expected 'leak:PATTERN'")
            }
        }
        return set
    }
}

/// The lines of a file that mean something: trimmed of surrounding blanks, without blank lines
/// and `#` comment lines (Valgrind's `VG_(get_line)` skips the same).
struct SignificantLines {
    struct Line {
        var text: String
        var number: Int
    }
    private var all: [Substring]
    private var index = 0
    /// The number of the last significant line read: where an error at the end of the file is.
    private(set) var lastNumber = 0

    init(_ text: String) {
        all = text.split(separator: "\n", omittingEmptySubsequences: false)
    }

    mutating func peek() -> Line? {
        let saved = (index, lastNumber)
        defer { (index, lastNumber) = saved }
        return next()
    }

    mutating func next() -> Line? {
        while index < all.count {
            let raw = all[index]
            index += 1
            let text = raw.trimmingBlanks()
            if text.isEmpty || text.hasPrefix("#") { continue }
            lastNumber = index
            return Line(text: String(text), number: index)
        }
        return nil
    }
}

extension Substring {
    func trimmingBlanks() -> Substring {
        let blank: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\u{0B}" || $0 == "\u{0C}" }
        var text = self
        while let first = text.first, blank(first) { text = text.dropFirst() }
        while let last = text.last, blank(last) { text = text.dropLast() }
        return text
    }
}

/// Valgrind's suppression syntax, entry by entry:
///
///     {
///        name
///        Tool[,Tool…]:Kind
///        [extra line: match-leak-kinds: for Memcheck:Leak, the parameter for Memcheck:Param]
///        fun:… | obj:… | src:…[:line] | ...      (at least one)
///     }
struct ValgrindSyntax {
    let file: String
    var lines: SignificantLines

    /// Memcheck's error kinds (`mc_errors.c`). Only `Leak` concerns a leak checker; the others are
    /// accepted so that a project's existing file loads whole.
    static let memcheckKinds: Set<String> = [
        "Value0", "Value1", "Value2", "Value4", "Value8", "Value16", "Value32", "Cond",
        "Addr1", "Addr2", "Addr4", "Addr8", "Addr16", "Addr32", "Jump", "Param", "User", "Free",
        "Overlap", "Leak", "FishyValue", "ReallocZero",
    ]
    /// Valgrind's deepest stack (VG_DEEPEST_BACKTRACE).
    static let maximumFrames = 500

    init(file: String, lines: SignificantLines) {
        self.file = file
        self.lines = lines
    }

    func error(_ line: Int, _ message: String) -> SuppressionFileError {
        SuppressionFileError(file: file, line: line, message: message)
    }

    mutating func parse() throws(SuppressionFileError) -> SuppressionSet {
        var set = SuppressionSet()
        while let open = lines.next() {
            guard open.text == "{" else {
                throw error(open.number, "expected '{' to start a suppression, found '\(open.text)'")
            }
            guard let name = lines.next(), name.text != "}" else {
                throw error(lines.lastNumber, "expected the suppression's name after '{'")
            }
            guard let toolLine = lines.next(), toolLine.text != "}" else {
                throw error(lines.lastNumber, "expected 'Memcheck:Leak' (Tool:Kind) after the name '\(name.text)'")
            }
            guard let colon = toolLine.text.firstIndex(of: ":") else {
                throw error(toolLine.number, "expected Tool:Kind (such as Memcheck:Leak), found '\(toolLine.text)'")
            }
            let tools = toolLine.text[..<colon].split(separator: ",").map { $0.trimmingBlanks() }
            let kind = String(toolLine.text[toolLine.text.index(after: colon)...].trimmingBlanks())
            guard !tools.isEmpty, !kind.isEmpty else {
                throw error(toolLine.number, "expected Tool:Kind (such as Memcheck:Leak), found '\(toolLine.text)'")
            }
            guard tools.contains("Memcheck") || tools.contains("*") else {
                // Another tool's entry (Helgrind:Race, DRD:…): its body is that tool's business.
                try skipToClose(openedAt: open.number)
                set.skippedEntries += 1
                continue
            }
            guard Self.memcheckKinds.contains(kind) else {
                throw error(toolLine.number, "unknown Memcheck suppression kind '\(kind)': expected Leak (or one of \(Self.memcheckKinds.sorted().joined(separator: ", ")))")
            }
            guard kind == "Leak" else {
                if kind == "Param" {
                    // Param entries carry the system call parameter on the line after the kind.
                    guard let parameter = lines.next(), parameter.text != "}" else {
                        throw error(lines.lastNumber, "expected the system call parameter of a Memcheck:Param suppression")
                    }
                    _ = parameter
                }
                try frames(openedAt: open.number)  // checked as strictly as a leak entry's
                set.skippedEntries += 1
                continue
            }
            var kinds: Set<LeakKind>? = nil
            if let extra = lines.peek(), extra.text.hasPrefix("match-leak-kinds:") {
                _ = lines.next()
                let value = extra.text.dropFirst("match-leak-kinds:".count).trimmingBlanks()
                guard let parsed = LeakKindSet(parsing: String(value)) else {
                    throw error(extra.number, "bad match-leak-kinds '\(value)': expected all, none or a comma-separated list of definite, indirect, possible, reachable")
                }
                kinds = parsed.kinds.subtracting([.unclassified])
            }
            let patterns = try frames(openedAt: open.number)
            set.leaks.append(LeakSuppression(name: name.text, kinds: kinds, frames: patterns,
                                             location: SuppressionLocation(file: file, line: name.number)))
        }
        return set
    }

    /// The frame lines up to and including `}`.
    @discardableResult
    mutating func frames(openedAt: Int) throws(SuppressionFileError) -> [FramePattern] {
        var patterns: [FramePattern] = []
        while true {
            guard let line = lines.next() else {
                throw error(lines.lastNumber, "expected '}' to close the suppression opened at line \(openedAt)")
            }
            if line.text == "}" {
                guard !patterns.isEmpty else {
                    throw error(line.number, "expected at least one frame line (fun:, obj:, src: or ...) before '}'")
                }
                return patterns
            }
            if line.text == "{" {
                throw error(line.number, "expected '}' to close the suppression opened at line \(openedAt) before the next '{'")
            }
            guard patterns.count < Self.maximumFrames else {
                throw error(line.number, "too many frame lines: a suppression holds at most \(Self.maximumFrames)")
            }
            patterns.append(try frame(line))
        }
    }

    func frame(_ line: SignificantLines.Line) throws(SuppressionFileError) -> FramePattern {
        let text = line.text
        if text == "..." { return .anyFrames }
        if text.hasPrefix("fun:") {
            return .function(Glob(String(text.dropFirst(4))))
        }
        if text.hasPrefix("obj:") {
            return .object(Glob(String(text.dropFirst(4))))
        }
        if text.hasPrefix("src:") {
            let body = text.dropFirst(4)
            // `src:file.c:12`: a trailing all-digit part after the last colon is the line.
            if let colon = body.lastIndex(of: ":") {
                let digits = body[body.index(after: colon)...]
                if !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) {
                    guard let number = Int(digits), number > 0 else {
                        throw error(line.number, "bad line number '\(digits)' in '\(text)'")
                    }
                    return .source(Glob(String(body[..<colon])), line: number)
                }
            }
            return .source(Glob(String(body)), line: nil)
        }
        if text == "match-leak-kinds:" || text.hasPrefix("match-leak-kinds:") {
            throw error(line.number, "match-leak-kinds: must come right after Memcheck:Leak, before the frames")
        }
        throw error(line.number, "expected a frame line (fun:NAME, obj:PATH, src:FILE[:LINE] or ...) or '}', found '\(text)'")
    }

    mutating func skipToClose(openedAt: Int) throws(SuppressionFileError) {
        while let line = lines.next() {
            if line.text == "}" { return }
        }
        throw error(lines.lastNumber, "expected '}' to close the suppression opened at line \(openedAt)")
    }
}

/// The whole file, or nil with errno set.
func readWholeFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var result: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n < 0 { return nil }
        if n == 0 { return result }
        result += chunk[0..<n]
    }
}
