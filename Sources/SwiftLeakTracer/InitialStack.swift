import CSwiftLeakSys
import SwiftLeakCore

/// How swiftleak's two variables enter a program's environment, whether the launcher builds it for
/// `execve` or the tracer rewrites a new image's initial stack after an exec: the interposer first
/// in `LD_PRELOAD` (in the user's entry's place, ahead of its value, or a new entry at the end), and
/// the ring's path in swiftleak's own variable, last. The interposer removes both once read and gives
/// `LD_PRELOAD` back its old value, so the program sees exactly the environment it was given.
public enum PreloadEnvironment {
    /// One entry of the environment to build.
    public enum Entry: Equatable, Sendable {
        /// The entry at this index of the original environment, unchanged.
        case kept(Int)
        /// A new entry (the user's `LD_PRELOAD` with the interposer ahead of it, or one of ours).
        case added(Bytes)
    }

    public static let preloadPrefix = Array("LD_PRELOAD=".utf8)
    public static let ringPrefix = Array((SWL_ENV_RING + "=").utf8)

    /// The value of the ring variable for the ring `descriptor` of process `owner` (swiftleak): a
    /// path the interposer opens itself, so the program never inherits a descriptor from us.
    public static func ringPath(owner: Int32, descriptor: Int32) -> Bytes {
        Array("/proc/\(owner)/fd/\(descriptor)".utf8)
    }

    /// The environment with swiftleak's entries, from the original `entries`. An entry of the ring
    /// variable already there is dropped: the name is swiftleak's, and a stale one would be found first.
    public static func plan<Entries: Collection>(_ entries: Entries, preload: Bytes, ring: Bytes) -> [Entry]
    where Entries.Element: Collection<UInt8>, Entries.Index == Int {
        var result: [Entry] = []
        result.reserveCapacity(entries.count + 2)
        var placed = false
        for index in entries.indices {
            let entry = entries[index]
            if entry.starts(with: ringPrefix) { continue }
            if !placed && entry.starts(with: preloadPrefix) {
                result.append(.added(preloadPrefix + preload + [UInt8(ascii: ":")] + entry.dropFirst(preloadPrefix.count)))
                placed = true
            } else {
                result.append(.kept(index))
            }
        }
        if !placed { result.append(.added(preloadPrefix + preload)) }
        result.append(.added(ringPrefix + ring))
        return result
    }

    /// `plan` applied: the entries themselves.
    public static func build(_ entries: [Bytes], preload: Bytes, ring: Bytes) -> [Bytes] {
        plan(entries, preload: preload, ring: ring).map {
            switch $0 {
            case .kept(let index): return entries[index]
            case .added(let entry): return entry
            }
        }
    }
}

/// The block a new image starts with, at its stack pointer (System V x86_64 ABI, "Process
/// Initialization"): argc, the argv pointers and a NULL, the envp pointers and a NULL, the auxiliary
/// vector's (type, value) pairs up to AT_NULL; the strings they point at lie above it, up to the
/// stack's top.
public struct InitialStack: Equatable, Sendable {
    /// Where `memory` starts in the process: its stack pointer before its first instruction.
    public var stackPointer: UInt64
    /// The process's memory from the stack pointer to the top of its stack mapping.
    public var memory: [UInt8]
    public var argv: [UInt64]
    public var envp: [UInt64]
    /// The auxiliary vector's words, AT_NULL's pair included.
    public var auxv: [UInt64]

    public static let atNull: UInt64 = 0
    public static let atBase: UInt64 = 7
    public static let atSecure: UInt64 = 23
    public static let atExecFn: UInt64 = 31

    /// Parses the vectors; nil when the block is not one (too short, no terminators).
    public init?(memory: [UInt8], stackPointer: UInt64) {
        self.memory = memory
        self.stackPointer = stackPointer
        let wordCount = memory.count / 8
        func word(_ index: Int) -> UInt64? {
            guard index < wordCount else { return nil }
            var value: UInt64 = 0
            for byte in (0..<8).reversed() { value = value << 8 | UInt64(memory[index * 8 + byte]) }
            return value
        }
        guard let argc = word(0), argc < UInt64(wordCount) else { return nil }
        var index = 1
        argv = []
        argv.reserveCapacity(Int(argc))
        for _ in 0..<Int(argc) {
            guard let pointer = word(index), pointer != 0 else { return nil }
            argv.append(pointer)
            index += 1
        }
        guard word(index) == 0 else { return nil }
        index += 1
        envp = []
        while true {
            guard let pointer = word(index) else { return nil }
            index += 1
            if pointer == 0 { break }
            envp.append(pointer)
        }
        auxv = []
        while true {
            guard let type = word(index), let value = word(index + 1) else { return nil }
            index += 2
            auxv += [type, value]
            if type == Self.atNull { break }
        }
    }

    /// The words of the vectors, as they are laid out at the stack pointer.
    public var vectorWords: [UInt64] { [UInt64(argv.count)] + argv + [0] + envp + [0] + auxv }

    /// The value of the auxiliary vector entry `type`, nil when there is none.
    public func auxiliaryValue(_ type: UInt64) -> UInt64? {
        stride(from: 0, to: auxv.count - 1, by: 2).first { auxv[$0] == type }.map { auxv[$0 + 1] }
    }

    /// The NUL-terminated string at `address`, when it lies in the block.
    public func string(at address: UInt64) -> Bytes? {
        guard address >= stackPointer, address - stackPointer < UInt64(memory.count) else { return nil }
        let start = Int(address - stackPointer)
        guard let end = memory[start...].firstIndex(of: 0) else { return nil }
        return Array(memory[start..<end])
    }

    /// The arguments and the environment as bytes (an entry pointing outside the block is empty).
    public var arguments: [Bytes] { argv.map { string(at: $0) ?? [] } }
    public var environment: [Bytes] { envp.map { string(at: $0) ?? [] } }
    /// The path the program was exec'd by (AT_EXECFN: for a `#!` script, the script's).
    public var execPath: Bytes? { auxiliaryValue(Self.atExecFn).flatMap { string(at: $0) } }
    /// Whether the image has a program interpreter (ld.so) to honour LD_PRELOAD: a static
    /// executable has AT_BASE 0.
    public var isDynamic: Bool { (auxiliaryValue(Self.atBase) ?? 0) != 0 }
    /// Whether the loader runs in secure mode (set-user-ID, set-group-ID, file capabilities), where
    /// it ignores a LD_PRELOAD path with a slash.
    public var isSecure: Bool { (auxiliaryValue(Self.atSecure) ?? 0) != 0 }

    /// What to write into the process and where its stack pointer then goes.
    public struct Rewrite: Equatable, Sendable {
        /// The first byte written.
        public var address: UInt64
        public var bytes: [UInt8]
        /// The new stack pointer: the start of the new vectors, 16-byte aligned.
        public var stackPointer: UInt64
    }

    public enum RewriteFailure: Error, Equatable, Sendable {
        /// The stack mapping ends `available` bytes below the stack pointer; `needed` are needed.
        case noRoom(needed: UInt64, available: UInt64)
    }

    /// The vectors with `entries` as the environment (new strings placed with them), laid out so
    /// that nothing the old vectors point at moves: the new vectors and strings replace the old
    /// vectors and reach below them, as little as needed, never below `lowestWritable` (the stack
    /// mapping's start: a tracer's write does not grow the stack). The strings sit at the top of
    /// the old vectors' place, the vectors below them; the auxiliary vector is copied unchanged (its
    /// pointers lead above the old vectors). Everything from the new stack pointer up is the
    /// program's initial block, so the words between are the ABI's, and no byte lies below it for
    /// the program's frames to overwrite.
    public func rewritten(environment entries: [PreloadEnvironment.Entry], lowestWritable: UInt64) -> Result<Rewrite, RewriteFailure> {
        let oldEnd = stackPointer + UInt64(vectorWords.count * 8)
        var strings: [UInt8] = []
        var stringOffsets: [Int] = []
        for case .added(let entry) in entries {
            stringOffsets.append(strings.count)
            strings += entry + [0]
        }
        let stringsStart = (oldEnd - UInt64(strings.count)) & ~7
        var newEnvp: [UInt64] = []
        newEnvp.reserveCapacity(entries.count)
        var added = 0
        for entry in entries {
            switch entry {
            case .kept(let index): newEnvp.append(envp[index])
            case .added:
                newEnvp.append(stringsStart + UInt64(stringOffsets[added]))
                added += 1
            }
        }
        let words = [UInt64(argv.count)] + argv + [0] + newEnvp + [0] + auxv
        let newStackPointer = (stringsStart - UInt64(words.count * 8)) & ~15
        guard newStackPointer >= lowestWritable else {
            return .failure(.noRoom(needed: stackPointer - min(newStackPointer, stackPointer),
                                    available: stackPointer - min(lowestWritable, stackPointer)))
        }
        var bytes = [UInt8](repeating: 0, count: Int(oldEnd - newStackPointer))
        for (index, word) in words.enumerated() {
            for byte in 0..<8 { bytes[index * 8 + byte] = UInt8(truncatingIfNeeded: word >> (8 * UInt64(byte))) }
        }
        let stringsOffset = Int(stringsStart - newStackPointer)
        bytes.replaceSubrange(stringsOffset..<stringsOffset + strings.count, with: strings)
        return .success(Rewrite(address: newStackPointer, bytes: bytes, stackPointer: newStackPointer))
    }
}
