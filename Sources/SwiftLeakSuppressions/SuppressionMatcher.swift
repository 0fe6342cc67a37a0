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
        // Neighbouring frames are mostly in one module: its names are worked out once per run of it.
        var lastObject: String?? = .none
        var objects: [String] = []
        for frame in stackPrefix(record.stack, addresses: numCallers - 1) {
            if lastObject != .some(frame.object) {
                // The object as the loader named it and as Valgrind does (links resolved).
                objects = [frame.object ?? "???"]
                if let object = frame.object {
                    let canonical = ObjectPath.canonical(object)
                    if canonical != object { objects.append(canonical) }
                }
                lastObject = .some(frame.object)
            }
            frames.append(MatchFrame(mangledName: frame.mangledFunction ?? frame.function ?? "???",
                                     demangledName: frame.function, objects: objects,
                                     file: frame.file, line: frame.line))
        }
        return frames
    }

    /// The frames of the first `addresses` distinct code addresses: an address with inlined code
    /// expands into several frames that all count as one of Valgrind's stack entries.
    public static func stackPrefix(_ stack: [SymbolizedFrame], addresses: Int) -> ArraySlice<SymbolizedFrame> {
        var seen = 0
        var end = stack.startIndex
        while end < stack.endIndex {
            // A new address starts after a frame that is not inlined (the function the inlined
            // frames above it were expanded into).
            if end == stack.startIndex || !stack[end - 1].inlined { seen += 1 }
            if seen > addresses { break }
            end += 1
        }
        return stack[..<end]
    }
}

extension FramePattern {
    func matches(_ frame: MatchFrame) -> Bool {
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
        // Most suppressions start with a pattern for frame 0 that most stacks fail: settled
        // before any bookkeeping (the rows below would all be false after it).
        if let first = patterns.first {
            if case .anyFrames = first {
            } else if frames.isEmpty || !first.matches(frames[0]) {
                return false
            }
        }
        // reachable[i]: patterns[..<p] can consume frames[..<i]. One row per pattern: O(P·N).
        var reachable = [Bool](repeating: false, count: frames.count + 1)
        reachable[0] = true
        for pattern in patterns {
            var next = [Bool](repeating: false, count: frames.count + 1)
            if case .anyFrames = pattern {
                var any = false
                for i in 0...frames.count {
                    any = any || reachable[i]
                    next[i] = any
                }
            } else {
                for i in 0..<frames.count where reachable[i] && pattern.matches(frames[i]) {
                    next[i + 1] = true
                }
            }
            reachable = next
            if !reachable.contains(true) { return false }
        }
        return reachable.contains(true)
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
