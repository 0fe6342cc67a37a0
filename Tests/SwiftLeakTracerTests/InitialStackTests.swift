import SwiftLeakCore
import Testing
@testable import SwiftLeakTracer

/// The initial-stack rewrite that puts swiftleak's variables into an exec'd image, as a pure
/// function from the old block to the new one.
@Suite("Initial stack rewrite")
struct InitialStackTests {
    /// A block as the kernel lays it out: vectors at `stackPointer`, then (past some padding) the
    /// strings, up to the top of the stack. Returns the memory and the auxiliary vector.
    static func kernelBlock(arguments: [String], environment: [String], execPath: String, dynamic: Bool = true,
                            stackPointer: UInt64 = 0x7ffc_0000_1000) -> (memory: [UInt8], auxv: [UInt64]) {
        let auxvPairs = 5
        let vectorWords = 1 + arguments.count + 1 + environment.count + 1 + auxvPairs * 2
        var strings: [UInt8] = Array(repeating: 0xAA, count: 24) // AT_RANDOM bytes and padding
        var addresses: [UInt64] = []
        let stringsBase = stackPointer + UInt64(vectorWords * 8)
        for text in arguments + environment + [execPath] {
            addresses.append(stringsBase + UInt64(strings.count))
            strings += Array(text.utf8) + [0]
        }
        let auxv: [UInt64] = [6, 4096, 7, dynamic ? 0x7f00_0000_0000 : 0, 9, 0x401000, 31, addresses.last!, 0, 0]
        var words: [UInt64] = [UInt64(arguments.count)] + addresses[0..<arguments.count] + [0]
        words += addresses[arguments.count..<(arguments.count + environment.count)] + [0] + auxv
        var memory: [UInt8] = []
        for word in words { for byte in 0..<8 { memory.append(UInt8(truncatingIfNeeded: word >> (8 * UInt64(byte)))) } }
        return (memory + strings, auxv)
    }

    /// The process's memory after `rewrite`: the old block with the new bytes laid over it (and
    /// below it), as seen from the new stack pointer.
    static func apply(_ rewrite: InitialStack.Rewrite, to memory: [UInt8], at stackPointer: UInt64) -> [UInt8] {
        let below = Int(stackPointer - rewrite.address)
        return rewrite.bytes + memory[(rewrite.bytes.count - below)...]
    }

    static let sp: UInt64 = 0x7ffc_0000_1000
    static let preload = Array("/opt/swiftleak/lib/libswiftleak_preload.so".utf8)
    static let ring = Array("/proc/42/fd/7".utf8)

    @Test("parsing: argv, envp, the auxiliary vector, the exec'd path, dynamic or static")
    func parse() throws {
        let (memory, auxv) = Self.kernelBlock(arguments: ["./prog", "caf\u{e9}"], environment: ["A=1", "PATH=/bin"], execPath: "./prog")
        let stack = try #require(InitialStack(memory: memory, stackPointer: Self.sp))
        #expect(stack.arguments == [Array("./prog".utf8), Array("caf\u{e9}".utf8)])
        #expect(stack.environment == [Array("A=1".utf8), Array("PATH=/bin".utf8)])
        #expect(stack.auxv == auxv)
        #expect(stack.execPath == Array("./prog".utf8))
        #expect(stack.isDynamic && !stack.isSecure)
        let (staticMemory, _) = Self.kernelBlock(arguments: ["./s"], environment: [], execPath: "./s", dynamic: false)
        #expect(InitialStack(memory: staticMemory, stackPointer: Self.sp)?.isDynamic == false)
    }

    @Test("a truncated or unterminated block is not one")
    func malformed() {
        let (memory, _) = Self.kernelBlock(arguments: ["./prog"], environment: ["A=1"], execPath: "./prog")
        #expect(InitialStack(memory: Array(memory.prefix(40)), stackPointer: Self.sp) == nil)
        #expect(InitialStack(memory: [], stackPointer: Self.sp) == nil)
        var huge = memory
        huge[7] = 0x7f // argc far beyond the block
        #expect(InitialStack(memory: huge, stackPointer: Self.sp) == nil)
    }

    @Test("the rewrite: same argv and auxv pointers, the planned environment, 16-byte aligned, nothing above the old vectors touched",
          arguments: [["A=1", "B=2"], [], ["LD_PRELOAD=/usr/lib/libm.so.6", "X=y"], ["SWIFTLEAK_RING=/proc/1/fd/3", "Z=1"]])
    func rewrite(environment: [String]) throws {
        let (memory, auxv) = Self.kernelBlock(arguments: ["./prog", "x y"], environment: environment, execPath: "./prog")
        let stack = try #require(InitialStack(memory: memory, stackPointer: Self.sp))
        let plan = PreloadEnvironment.plan(stack.environment, preload: Self.preload, ring: Self.ring)
        let rewrite = try stack.rewritten(environment: plan, lowestWritable: Self.sp - 4096).get()
        #expect(rewrite.stackPointer % 16 == 0)
        #expect(rewrite.stackPointer < Self.sp && Self.sp - rewrite.stackPointer < 512)
        // Only the old vectors' bytes and what lies below them change.
        let vectorBytes = stack.vectorWords.count * 8
        #expect(rewrite.address + UInt64(rewrite.bytes.count) == Self.sp + UInt64(vectorBytes))
        let after = Self.apply(rewrite, to: memory, at: Self.sp)
        #expect(after.suffix(memory.count - vectorBytes) == memory.suffix(memory.count - vectorBytes))
        let new = try #require(InitialStack(memory: after, stackPointer: rewrite.stackPointer))
        #expect(new.argv == stack.argv)
        #expect(new.auxv == auxv)
        #expect(new.environment == PreloadEnvironment.build(stack.environment, preload: Self.preload, ring: Self.ring))
        #expect(new.environment.last == Array("SWIFTLEAK_RING=/proc/42/fd/7".utf8))
        #expect(new.execPath == Array("./prog".utf8))
    }

    @Test("no room below the stack pointer: refused, with the figures")
    func noRoom() throws {
        let (memory, _) = Self.kernelBlock(arguments: ["./prog"], environment: ["A=1"], execPath: "./prog")
        let stack = try #require(InitialStack(memory: memory, stackPointer: Self.sp))
        let plan = PreloadEnvironment.plan(stack.environment, preload: Self.preload, ring: Self.ring)
        guard case .failure(.noRoom(let needed, let available)) = stack.rewritten(environment: plan, lowestWritable: Self.sp - 16) else {
            Issue.record("a rewrite that needs more than 16 bytes below the stack pointer was accepted")
            return
        }
        #expect(available == 16 && needed > 16)
    }

    @Test("the environment plan: the interposer ahead of the user's LD_PRELOAD in its place, the ring last, a stale ring entry dropped")
    func plan() {
        let entries = ["A=1", "LD_PRELOAD=/u.so", "SWIFTLEAK_RING=/proc/1/fd/9", "B=2"].map { Array($0.utf8) }
        #expect(PreloadEnvironment.build(entries, preload: Self.preload, ring: Self.ring).map { String(decoding: $0, as: UTF8.self) } == [
            "A=1", "LD_PRELOAD=/opt/swiftleak/lib/libswiftleak_preload.so:/u.so", "B=2", "SWIFTLEAK_RING=/proc/42/fd/7",
        ])
        #expect(PreloadEnvironment.plan([Array("A=1".utf8)], preload: Self.preload, ring: Self.ring) == [
            .kept(0), .added(Array("LD_PRELOAD=".utf8) + Self.preload), .added(Array("SWIFTLEAK_RING=".utf8) + Self.ring),
        ])
    }

    @Test("skip patterns match as Valgrind's globs, on the path or on an argument")
    func skipPatterns() {
        let tracing = ChildTracing(traceChildren: true, skipPatterns: ChildTracing.patterns(parsing: "*/sh,,/usr/bin/python3*"),
                                   skipArgumentPatterns: ["--no-trace-me"])
        #expect(tracing.skipPatterns == ["*/sh", "/usr/bin/python3*"])
        #expect(tracing.skipReason(path: Array("/bin/sh".utf8), arguments: []) == .skipped(option: "--trace-children-skip", pattern: "*/sh"))
        #expect(tracing.skipReason(path: Array("/usr/bin/python3.11".utf8), arguments: []) == .skipped(option: "--trace-children-skip", pattern: "/usr/bin/python3*"))
        #expect(tracing.skipReason(path: Array("/bin/bash".utf8), arguments: [Array("x".utf8)]) == nil)
        #expect(tracing.skipReason(path: Array("./t".utf8), arguments: [Array("./t".utf8), Array("--no-trace-me".utf8)])
                == .skipped(option: "--trace-children-skip-by-arg", pattern: "--no-trace-me"))
    }

    @Test("the untracked line: how many, the first three with pid and reason")
    func untrackedLine() {
        #expect(UntrackedProgram.summaryLine([]) == nil)
        let programs = (1...5).map { UntrackedProgram(pid: Int32($0), path: "/p\($0)", reason: .staticImage) }
        #expect(UntrackedProgram.summaryLine(programs) ==
                "5 programs were not tracked, their leaks are not in this report: /p1 (pid 1, statically linked), /p2 (pid 2, statically linked), /p3 (pid 3, statically linked) and 2 more")
        #expect(UntrackedProgram.summaryLine([programs[0]]) == "1 program was not tracked, its leaks are not in this report: /p1 (pid 1, statically linked)")
    }
}
