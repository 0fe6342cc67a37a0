import Foundation
import Testing

/// Many threads, many allocations, an exit in the middle of them (TestPrograms/stress/stress.c):
/// swiftleak must neither hang nor lose count. Each program prints what it leaked on purpose, and
/// "definitely lost" must be exactly that. The 50-million-allocation case is `scripts/stress`
/// (too long for `swift test`).
@Suite("Stress: threads, volume, exit under load")
struct StressTests {
    typealias Count = Report.Count

    /// The program's own "leaked B bytes in N blocks" line.
    static func ownCount(_ stdout: String) throws -> Count {
        let line = try #require(stdout.split(separator: "\n").first { $0.hasPrefix("leaked ") }, "no count in: \(stdout)")
        let numbers = line.split(separator: " ").compactMap { Int($0) }
        try #require(numbers.count == 2, "\(line)")
        return Count(bytes: numbers[0], blocks: numbers[1])
    }

    static func run(_ arguments: [String], status: Int32 = 0) throws -> (Report, Count) {
        let program = try Harness.build("stress/stress.c", flags: ["-O2", "-g", "-pthread"])
        let (result, maybeReport) = try Harness.swiftleak(program, arguments, options: ["--default-suppressions=no"],
                                                          timeout: 600)
        #expect(result.signal == nil, "\(result.stderr)")
        #expect(result.status == status, "\(result.stderr)")
        let report = try #require(maybeReport, "no report: \(result.stderr)")
        return (report, try ownCount(result.stdout))
    }

    @Test("16 threads in a ring, every free cross-thread: every allocation seen, exactly the leaked blocks lost")
    func crossThreadRing() throws {
        let (report, leaked) = try Self.run(["ring", "16", "20000"])
        #expect(leaked == Count(bytes: 16 * 17 / 2 * 32, blocks: 16 * 17 / 2))
        #expect(report.summary["definitely_lost"] == leaked)
        #expect(report.summary["indirectly_lost"] == Count(bytes: 0, blocks: 0))
        // 320,000 messages and 136 leaks, plus what libc and the thread library allocate.
        #expect(report.allocations >= 320_136 && report.allocations < 320_136 + 200, "\(report.allocations)")
        #expect(report.frees >= 320_000 && report.frees < 320_000 + 200, "\(report.frees)")
    }

    @Test("10,000 threads created and joined: no hang, every thread's leak counted")
    func threadChurn() throws {
        let (report, leaked) = try Self.run(["churn", "10000"])
        #expect(leaked == Count(bytes: 24_000, blocks: 1_000))
        #expect(report.summary["definitely_lost"] == leaked)
        #expect(report.allocations >= 10_000 * 20 + 1_000, "\(report.allocations)")
    }

    @Test("2 million allocations in one thread: the two leaked blocks and nothing else")
    func manyAllocations() throws {
        let (report, leaked) = try Self.run(["many", "2000000"])
        #expect(leaked == Count(bytes: 80, blocks: 2))
        #expect(report.summary["definitely_lost"] == leaked)
        #expect(report.allocations >= 1_999_998 && report.allocations < 1_999_998 + 100, "\(report.allocations)")
    }

    /// Four threads allocate and free in a loop, everything reachable from a table, while main
    /// leaks 5 blocks and exits. Threads the exit stops inside malloc or free are the program at
    /// its call: the block a free was given, or a malloc is returning, is still reachable.
    @Test("exit while 4 threads allocate: the exit status stays, exactly main's 5 blocks are lost", arguments: 1...5)
    func exitWhileAllocating(round: Int) throws {
        let (report, leaked) = try Self.run(["exit", "4"], status: 7)
        #expect(leaked == Count(bytes: 240, blocks: 5))
        #expect(report.summary["definitely_lost"] == leaked, "round \(round)")
        #expect(report.summary["indirectly_lost"] == Count(bytes: 0, blocks: 0))
    }
}
