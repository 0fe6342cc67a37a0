#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SwiftLeakCore
import Synchronization

/// One frame of a loss record's stack as suppressions see it.
public struct MatchFrame: Hashable, Sendable {
    /// The linker's name (mangled for C++, Swift and Rust), "???" when the frame has none:
    /// what `fun:` is matched against.
    public var mangledName: String
    /// The name as reports show it (demangled), nil when unknown: what LSan's `leak:` matches.
    public var demangledName: String?
    /// The object's full path, "???" when unknown: what `obj:` is matched against. Frame 0 (the
    /// allocation function) may have more than one: swiftleak's interposer and the name Valgrind
    /// gives its own, so that a Valgrind-written `obj:` line for it still matches.
    public var objects: [String]
    /// The source file's full path and line, when known.
    public var file: String?
    public var line: Int?

    public init(mangledName: String, demangledName: String?, objects: [String], file: String?, line: Int?) {
        self.mangledName = mangledName
        self.demangledName = demangledName
        self.objects = objects
        self.file = file
        self.line = line
    }

    /// The file name without its directory, as Valgrind's `src:` compares it.
    public var fileName: String? {
        guard let file else { return nil }
        guard let slash = file.lastIndex(of: "/") else { return file }
        return String(file[file.index(after: slash)...])
    }
}

extension MatchFrame {
    /// Where Valgrind's own allocation functions live, for `obj:` lines Valgrind wrote for frame 0.
    public static let valgrindPreloadObject = "/usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so"

    /// The frames of a loss record in Valgrind's terms: frame 0 is the allocation function by its
    /// mangled name (`malloc`, `_Znwm`), then the record's frames (inlined ones included) from at
    /// most `numCallers - 1` code addresses, as Valgrind's stack of `--num-callers` entries holds.
    public static func frames(of record: LossRecord, numCallers: Int, interposer: String?) -> [MatchFrame] {
        var frames = [MatchFrame(mangledName: record.function.symbolName, demangledName: record.function.displayName,
                                 objects: [interposer, valgrindPreloadObject].compactMap { $0 },
                                 file: nil, line: nil)]
        let count = prefixLength(record.stack, addresses: numCallers - 1)
        frames.reserveCapacity(1 + count)
        // Neighbouring frames are mostly in one module: its names are worked out once per run of it.
        var lastObject: String?? = .none
        var objects: [String] = []
        // Each frame's fields read in place (a copy of a frame is five strings retained).
        record.stack.withUnsafeBufferPointer { stack in
            for index in 0..<count {
                if lastObject != .some(stack[index].object) {
                    // The object as the loader named it and as Valgrind does (links resolved).
                    objects = [stack[index].object ?? "???"]
                    if let object = stack[index].object {
                        let canonical = ObjectPath.canonical(object)
                        if canonical != object { objects.append(canonical) }
                    }
                    lastObject = .some(stack[index].object)
                }
                frames.append(MatchFrame(mangledName: stack[index].mangledFunction ?? stack[index].function ?? "???",
                                         demangledName: stack[index].function, objects: objects,
                                         file: stack[index].file, line: stack[index].line))
            }
        }
        return frames
    }

    /// The frames of the first `addresses` distinct code addresses: an address with inlined code
    /// expands into several frames that all count as one of Valgrind's stack entries.
    public static func stackPrefix(_ stack: [SymbolizedFrame], addresses: Int) -> ArraySlice<SymbolizedFrame> {
        stack[..<prefixLength(stack, addresses: addresses)]
    }

    /// How many frames `stackPrefix` takes.
    static func prefixLength(_ stack: [SymbolizedFrame], addresses: Int) -> Int {
        var seen = 0
        var end = 0
        while end < stack.count {
            // A new address starts after a frame that is not inlined (the function the inlined
            // frames above it were expanded into).
            if end == 0 || !stack[end - 1].inlined { seen += 1 }
            if seen > addresses { break }
            end += 1
        }
        return end
    }
}

extension FramePattern {
    func matches(_ frame: borrowing MatchFrame) -> Bool {
        switch self {
        case .anyFrames: return true
        case .function(let glob): return glob.matches(frame.mangledName)
        case .object(let glob): return frame.objects.contains { glob.matches($0) }
        case .source(let glob, let line):
            guard let name = frame.fileName, glob.matches(name) else { return false }
            return line == nil || line == frame.line
        }
    }
}

extension LeakSuppression {
    /// Valgrind's rule: the patterns are matched from frame 0 on, each against one frame, `...`
    /// against zero or more; the suppression matches when its patterns are used up (the stack may
    /// go on).
    public func matches(_ frames: [MatchFrame], kind: LeakKind) -> Bool {
        if let kinds, !kinds.contains(kind) { return false }
        return Self.match(self.frames, frames)
    }

    static func match(_ patterns: [FramePattern], _ frames: [MatchFrame]) -> Bool {
        // The patterns between two `...` (a segment) match consecutive frames. The first segment
        // is anchored at frame 0 (unless the patterns start with `...`); each later one is placed
        // at its earliest fit after the one before: an earlier end never leaves a later segment
        // fewer frames to fit in, so if any placement of all segments exists, this one does.
        // No bookkeeping per frame and no allocation: this runs for every loss record against
        // every suppression (2,600 records x 12 entries for clang's report).
        // Through buffer pointers: an array's elements would be copied for each test (a frame's
        // strings and a pattern's glob retained and released), which cost more than the tests.
        patterns.withUnsafeBufferPointer { patterns in
            frames.withUnsafeBufferPointer { frames in
                var next = 0
                var segmentStart = 0
                var anchored = true
                while segmentStart <= patterns.count {
                    var segmentEnd = segmentStart
                    while segmentEnd < patterns.count, !patterns[segmentEnd].isAnyFrames { segmentEnd += 1 }
                    let segment = UnsafeBufferPointer(rebasing: patterns[segmentStart..<segmentEnd])
                    if !segment.isEmpty {
                        guard let start = firstFit(segment, frames, from: next, anchored: anchored) else { return false }
                        next = start + segment.count
                    }
                    anchored = false
                    segmentStart = segmentEnd + 1
                }
                return true
            }
        }
    }

    /// Where `segment` first matches `frames` pattern by frame, at `from` or (unless `anchored`)
    /// after it.
    private static func firstFit(_ segment: UnsafeBufferPointer<FramePattern>, _ frames: UnsafeBufferPointer<MatchFrame>,
                                 from: Int, anchored: Bool) -> Int? {
        let last = frames.count - segment.count
        guard from <= last else { return nil }
        search: for start in from...(anchored ? from : last) {
            for offset in 0..<segment.count where !segment[offset].matches(frames[start + offset]) {
                continue search
            }
            return start
        }
        return nil
    }
}

extension FramePattern {
    var isAnyFrames: Bool {
        if case .anyFrames = self { return true }
        return false
    }
}

extension LSanSuppression {
    /// LSan's rule: the pattern is searched in every frame's module, function (demangled, as LSan's
    /// symbolizer gives it) and file.
    public func matches(_ frames: [MatchFrame]) -> Bool {
        frames.contains { frame in
            frame.objects.first.map(template.matches) == true
                || frame.demangledName.map(template.matches) == true
                || frame.file.map(template.matches) == true
        }
    }
}

/// Objects as Valgrind names them: the file mapped, with every symbolic link resolved
/// (`/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30`, where the loader's path is
/// `/lib/x86_64-linux-gnu/libstdc++.so.6`). `obj:` lines Valgrind wrote name that file, and
/// `--gen-suppressions` writes it too; a path that no longer exists is kept as it is.
public enum ObjectPath {
    private static let cache = Mutex<[String: String]>([:])

    public static func canonical(_ path: String) -> String {
        if let known = cache.withLock({ $0[path] }) { return known }
        var resolved = path
        if let pointer = realpath(path, nil) {
            resolved = String(cString: pointer)
            free(pointer)
        }
        cache.withLock { $0[path] = resolved }
        return resolved
    }
}
