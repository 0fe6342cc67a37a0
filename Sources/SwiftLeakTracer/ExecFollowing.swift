import CSwiftLeakSys
import Glibc
import SwiftLeakCore

/// Which exec'd programs are tracked (`--trace-children`, `--trace-children-skip`), as in Valgrind.
public struct ChildTracing: Sendable, Equatable {
    /// Whether an image a traced process execs is tracked at all.
    public var traceChildren: Bool
    /// Glob patterns (`*`, `?`, `[…]`) on the exec'd path: a match runs untracked, and so does
    /// everything it starts.
    public var skipPatterns: [String]
    /// The same, matched against each of the exec'd program's arguments (argv[0] included).
    public var skipArgumentPatterns: [String]

    public init(traceChildren: Bool = true, skipPatterns: [String] = [], skipArgumentPatterns: [String] = []) {
        self.traceChildren = traceChildren
        self.skipPatterns = skipPatterns
        self.skipArgumentPatterns = skipArgumentPatterns
    }

    /// Valgrind's syntax: comma-separated patterns, empty ones ignored.
    public static func patterns(parsing list: String) -> [String] {
        list.split(separator: ",").map(String.init).filter { !$0.isEmpty }
    }

    /// Why an exec of `path` with `arguments` is skipped (the option and the pattern that
    /// matched), nil when it is not.
    public func skipReason(path: Bytes, arguments: [Bytes]) -> UntrackedReason? {
        func matches(_ pattern: String, _ bytes: Bytes) -> Bool { bytes.withCString { fnmatch(pattern, $0, 0) == 0 } }
        if let pattern = skipPatterns.first(where: { matches($0, path) }) {
            return .skipped(option: "--trace-children-skip", pattern: pattern)
        }
        if let pattern = skipArgumentPatterns.first(where: { pattern in arguments.contains { matches(pattern, $0) } }) {
            return .skipped(option: "--trace-children-skip-by-arg", pattern: pattern)
        }
        return nil
    }
}

/// Why a program started under swiftleak ran without being tracked.
public enum UntrackedReason: Hashable, Sendable, CustomStringConvertible {
    case notRequested
    /// A forked child, with --follow-forks=no.
    case forkNotFollowed
    case skipped(option: String, pattern: String)
    case staticImage
    case secureImage
    /// Its initial stack could not be read or rewritten (the reason).
    case notInjected(String)

    public var description: String {
        switch self {
        case .notRequested: return "--trace-children=no"
        case .forkNotFollowed: return "forked, --follow-forks=no"
        case .skipped(let option, let pattern): return "\(option)=\(pattern)"
        case .staticImage: return "statically linked"
        case .secureImage: return "set-user-ID, set-group-ID or with file capabilities"
        case .notInjected(let reason): return reason
        }
    }
}

/// A program a traced process started that swiftleak did not track.
public struct UntrackedProgram: Hashable, Sendable {
    public var pid: Int32
    /// The path it was exec'd by (escaped for display).
    public var path: String
    public var reason: UntrackedReason

    public init(pid: Int32, path: String, reason: UntrackedReason) {
        self.pid = pid
        self.path = path
        self.reason = reason
    }

    /// The one line at the end of a run that started programs it did not track, nil when there
    /// were none: how many, and the first few with the reason.
    public static func summaryLine(_ programs: [UntrackedProgram], shown: Int = 3) -> String? {
        guard !programs.isEmpty else { return nil }
        let listed = programs.prefix(shown).map { "\($0.path) (pid \($0.pid), \($0.reason))" }.joined(separator: ", ")
        let more = programs.count > shown ? " and \(programs.count - shown) more" : ""
        let count = programs.count == 1 ? "1 program was not tracked, its leaks are" : "\(programs.count) programs were not tracked, their leaks are"
        return "\(count) not in this report: \(listed)\(more)"
    }
}

/// A traced process stopped at PTRACE_EVENT_EXEC, before the new image's first instruction (the
/// loader's entry): its initial stack as the kernel built it.
public struct ExecStop {
    public var pid: Int32
    public var stack: InitialStack
    /// The lowest address of the stack mapping (writes below it fail: a tracer's write does not grow it).
    public var stackMappingStart: UInt64

    /// The path the image was exec'd by (AT_EXECFN; /proc/PID/exe when that is unreadable).
    public var path: Bytes { stack.execPath ?? Self.executableLink(pid) }

    /// Where /proc/PID/exe leads (empty when unreadable).
    public static func executableLink(_ pid: Int32) -> Bytes {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink("/proc/\(pid)/exe", &buffer, buffer.count - 1)
        return length > 0 ? buffer[0..<length].map { UInt8(bitPattern: $0) } : []
    }

    /// Reads the stack of `pid`, stopped at its exec; nil when it cannot be read or parsed.
    public static func read(pid: Int32) -> ExecStop? {
        var words = [UInt64](repeating: 0, count: 32)
        var stackPointer: UInt64 = 0
        let count = words.withUnsafeMutableBufferPointer { swl_ptrace_getregs(pid, $0.baseAddress, Int32($0.count), &stackPointer) }
        guard count > 0, let mapping = mapping(containing: stackPointer, pid: pid) else { return nil }
        let length = Int(mapping.upperBound - stackPointer)
        var memory = [UInt8](repeating: 0, count: length)
        let read = memory.withUnsafeMutableBytes { swl_read_process_memory(pid, stackPointer, $0.baseAddress, length) }
        guard read == length, let stack = InitialStack(memory: memory, stackPointer: stackPointer) else { return nil }
        return ExecStop(pid: pid, stack: stack, stackMappingStart: mapping.lowerBound)
    }

    /// The range of the mapping of `pid` that holds `address`, from /proc/PID/maps.
    static func mapping(containing address: UInt64, pid: Int32) -> Range<UInt64>? {
        guard let maps = readSmallFile("/proc/\(pid)/maps") else { return nil }
        for line in maps.split(separator: "\n") {
            guard let range = line.split(separator: " ").first else { continue }
            let bounds = range.split(separator: "-")
            guard bounds.count == 2, let start = UInt64(bounds[0], radix: 16), let end = UInt64(bounds[1], radix: 16) else { continue }
            if start <= address && address < end { return start..<end }
        }
        return nil
    }

    /// Why the image cannot be tracked whatever swiftleak does, nil when it can.
    public var untrackableReason: UntrackedReason? {
        if !stack.isDynamic { return .staticImage }
        if stack.isSecure { return .secureImage }
        return nil
    }

    /// Puts swiftleak's variables into the image's environment: rewrites its initial stack (see
    /// `InitialStack.rewritten`) and moves its stack pointer to the new vectors. Nothing is changed
    /// when it fails (the reason is returned).
    public func inject(preload: Bytes, ring: Bytes) -> String? {
        let plan = PreloadEnvironment.plan(stack.environment, preload: preload, ring: ring)
        switch stack.rewritten(environment: plan, lowestWritable: stackMappingStart) {
        case .failure(.noRoom(let needed, let available)):
            return "its initial stack has \(available) bytes below the stack pointer, \(needed) needed"
        case .success(let rewrite):
            let written = rewrite.bytes.withUnsafeBytes { swl_write_process_memory(pid, rewrite.address, $0.baseAddress, $0.count) }
            if written == 0 && swl_ptrace_set_stack_pointer(pid, rewrite.stackPointer) == 0 { return nil }
            let problem = "its initial stack could not be rewritten (\(String(cString: strerror(errno))))"
            // The old vectors may be overwritten already: put them back (what lay below the old
            // stack pointer was nobody's).
            let oldVectors = Array(stack.memory[0..<(stack.vectorWords.count * 8)])
            _ = oldVectors.withUnsafeBytes { swl_write_process_memory(pid, stack.stackPointer, $0.baseAddress, $0.count) }
            _ = swl_ptrace_set_stack_pointer(pid, stack.stackPointer)
            return problem
        }
    }
}
