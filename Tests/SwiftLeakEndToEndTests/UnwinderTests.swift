import Foundation
import Testing

/// swiftleak's own stack walker (CShims/SwiftLeakPreload/unwind.c) against libunwind, stack by stack:
/// with SWIFTLEAK_UNWINDER=verify the interposer walks every allocation's stack both ways and
/// prints, at the program's exit, `swiftleak: unwinder verify: N stacks, W walked by swiftleak,
/// M mismatches` (and the first mismatching stacks).
@Suite("Own stack walker")
struct UnwinderTests {
    struct Verdict {
        var stacks: Int
        var walked: Int
        var mismatches: Int
    }

    static func verdict(_ stderr: String) throws -> Verdict {
        let line = try #require(stderr.split(separator: "\n").first { $0.hasPrefix("swiftleak: unwinder verify: ") },
                                "no verify line in: \(stderr)")
        let numbers = line.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        try #require(numbers.count == 3, "\(line)")
        return Verdict(stacks: numbers[0], walked: numbers[1], mismatches: numbers[2])
    }

    static func verify(_ program: String, _ arguments: [String] = []) throws -> (Verdict, Harness.Result) {
        let (result, _) = try Harness.swiftleak(program, arguments, options: ["--leak-check=summary"],
                                                environment: ["SWIFTLEAK_UNWINDER": "verify"])
        return (try verdict(result.stderr), result)
    }

    @Test("same stacks as libunwind: deep, VLA, -O0, realigned, signal, exceptions, library callbacks, threads, dlclose",
          arguments: [["-O0", "-g"], ["-O2", "-g"]])
    func shapes(flags: [String]) throws {
        let plugin = Harness.workDirectory.appendingPathComponent("libplugin-unwind\(flags[0]).so").path
        let build = try Harness.run(["/usr/bin/env", "cc", "-O2", "-g", "-shared", "-fPIC", "-o", plugin,
                                     Harness.testPrograms.appendingPathComponent("stacks/plugin.c").path])
        try #require(build.status == 0, "\(build.stderr)")
        let program = try Harness.build("stacks/unwind_shapes.cpp", flags: flags)
        let (verdict, result) = try Self.verify(program, [plugin])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "unwind_shapes: done\n")
        #expect(verdict.mismatches == 0, "\(result.stderr)")
        // 3 rounds and 3 threads of a few hundred allocations each, plus the C++ runtime's.
        #expect(verdict.stacks > 10_000)
        // Every stack is the walker's, signal frames included: libunwind is only the reference.
        #expect(verdict.walked == verdict.stacks, "\(verdict)")
    }

    /// How many of the verified stacks the threads' known stacks served without a walk.
    static func known(_ stderr: String) throws -> Int {
        let line = try #require(stderr.split(separator: "\n").first { $0.hasPrefix("swiftleak: unwinder verify known: ") },
                                "no known-stacks line in: \(stderr)")
        return try #require(Int(line.split(separator: " ").last ?? ""), "\(line)")
    }

    @Test("known stacks serve a recurring path; a thread rests from them while its stacks hardly recur, and takes them up again")
    func knownStackPhases() throws {
        let program = try Harness.build("stacks/known_phases.c")
        // Each phase is 30,000 allocations; a thread rests for 8,192 captures after a window of 512
        // with fewer than 128 hits (unwind.c).
        var served: [String: Int] = [:]
        for phases in [["recur"], ["scatter"], ["scatter", "recur"]] {
            let (verdict, result) = try Self.verify(program, phases)
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout == "known_phases: done\n")
            #expect(verdict.mismatches == 0, "\(result.stderr)")
            #expect(verdict.stacks >= 30_000 * phases.count, "\(verdict)")
            served[phases.joined(separator: " ")] = try Self.known(result.stderr)
        }
        // One path: all but the first few captures.
        #expect(try #require(served["recur"]) >= 29_000, "\(served)")
        // 200 first frames for 8 kept stacks: some 4% of the look-ups would hit (over 1,000), but
        // the thread looks only in one window of 512 captures out of every 8,704.
        #expect(try #require(served["scatter"]) < 400, "\(served)")
        // After the scattered phase, the recurring one is served again once the rest is over:
        // at most 8,192 + 2 * 512 of its captures are walked.
        #expect(try #require(served["scatter recur"]) >= 20_000, "\(served)")
    }

    @Test("same stacks as libunwind in Swift code and the Swift runtime")
    func swiftRuntime() throws {
        let program = try Harness.build("stacks/swift_objects.swift")
        let (verdict, result) = try Self.verify(program)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(verdict.mismatches == 0, "\(result.stderr)")
        #expect(verdict.stacks > 20)
        // Stacks through libswiftCore's thunks without unwind tables included: the walker guesses
        // their frame-pointer chain as libunwind does.
        #expect(verdict.walked == verdict.stacks, "\(verdict)")
    }

    @Test("the report is the same whichever unwinder captured the stacks")
    func sameReport() throws {
        let program = try Harness.build("stacks/cxx_templates.cpp", flags: ["-O2", "-g"])
        let (_, own) = try Harness.swiftleak(program)
        let (_, reference) = try Harness.swiftleak(program, environment: ["SWIFTLEAK_UNWINDER": "libunwind"])
        let ownReport = try #require(own), referenceReport = try #require(reference)
        // The stacks, not the kinds: libunwind's own frames (a cursor of ~1 KiB on the program's
        // stack per call) leave stale words below the stack pointer that the exit scan may take
        // for references, so in that diagnostic mode a lost block can come out "possibly lost".
        func stacks(_ report: Report) -> [String] {
            report.lossRecords.map { record in
                "\(record.bytes) " + record.stack.map { "\($0.function ?? "?"):\($0.line ?? 0)" }.joined(separator: " ")
            }.sorted()
        }
        #expect(!stacks(ownReport).isEmpty)
        #expect(stacks(ownReport) == stacks(referenceReport))
    }
}
