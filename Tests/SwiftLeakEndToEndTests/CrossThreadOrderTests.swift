import Foundation
import Testing

/// "Order is truth" across threads (docs/architecture.md), end to end: threads that free each
/// other's blocks and get the addresses straight back (TestPrograms/stress/reuse.c) must be
/// recorded in every address's true order. A recorder that applied one thread's events ahead of
/// another's would count a free of an unknown block (one free short) and an allocation over a live
/// one, and could leave overlapping blocks for the exit scan; the program prints its own exact
/// counts to compare with.
@Suite("Cross-thread order: frees and immediate reuse across threads")
struct CrossThreadOrderTests {
    typealias Count = Report.Count

    /// The program's "calls A allocations F frees" and "leaked B bytes in N blocks" lines.
    static func ownCounts(_ stdout: String) throws -> (allocations: Int, frees: Int, leaked: Count) {
        let lines = stdout.split(separator: "\n")
        let calls = try #require(lines.first { $0.hasPrefix("calls ") }, "no calls in: \(stdout)").split(separator: " ").compactMap { Int($0) }
        let leaked = try #require(lines.first { $0.hasPrefix("leaked ") }, "no leaks in: \(stdout)").split(separator: " ").compactMap { Int($0) }
        try #require(calls.count == 2 && leaked.count == 2, "\(stdout)")
        return (calls[0], calls[1], Count(bytes: leaked[0], blocks: leaked[1]))
    }

    /// The recorded allocations and frees are the program's own, plus the few that libc and the
    /// thread library make and free themselves.
    static func expectCounts(_ report: Report, own: (allocations: Int, frees: Int, leaked: Count),
                             sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(report.allocations >= own.allocations && report.allocations < own.allocations + 200,
                "\(report.allocations) allocations recorded, the program made \(own.allocations)", sourceLocation: sourceLocation)
        #expect(report.frees >= own.frees && report.frees < own.frees + 200,
                "\(report.frees) frees recorded, the program made \(own.frees)", sourceLocation: sourceLocation)
    }

    @Test("threads free each other's blocks and reuse them at once: exact allocation, free and leak counts",
          arguments: [4, 8])
    func crossThreadReuse(threads: Int) throws {
        let program = try Harness.build("stress/reuse.c", flags: ["-O2", "-g", "-pthread"])
        let (result, maybeReport) = try Harness.swiftleak(program, ["\(threads)", "20000"],
                                                          options: ["--default-suppressions=no"], timeout: 600)
        #expect(result.signal == nil && result.status == 0, "\(result.stderr)")
        let report = try #require(maybeReport, "no report: \(result.stderr)")
        let own = try Self.ownCounts(result.stdout)
        #expect(own.leaked.blocks == threads * (20000 / 997))
        #expect(report.summary["definitely_lost"] == own.leaked)
        #expect(report.summary["indirectly_lost"] == Count(bytes: 0, blocks: 0))
        Self.expectCounts(report, own: own)
    }

    @Test("the first threads start while the main thread allocates: no event is lost (the ring leaves its lock-free tail in time)")
    func firstThreads() throws {
        let program = try Harness.build("stress/first_threads.c", flags: ["-O2", "-g", "-pthread"])
        let (result, maybeReport) = try Harness.swiftleak(program, ["4", "200000"],
                                                          options: ["--default-suppressions=no"], timeout: 600)
        #expect(result.signal == nil && result.status == 0, "\(result.stderr)")
        let report = try #require(maybeReport, "no report: \(result.stderr)")
        let own = try Self.ownCounts(result.stdout)
        #expect(own.leaked == Count(bytes: 9 * 40, blocks: 9))
        #expect(report.summary["definitely_lost"] == own.leaked)
        Self.expectCounts(report, own: own)
    }
}
