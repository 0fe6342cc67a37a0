import Foundation
import Testing

/// The tracer across threads and processes: exits that race with new threads, termination
/// requests, and (below) forked children.
@Suite("Process tree")
struct ProcessTreeTests {
    @Test("pthread_exit from main while the new thread starts: every run ends with its report")
    func pthreadExitNeverHangs() throws {
        // The main thread leaves while the thread it started may not have had its first stop:
        // a run used to hang about once in 20 under load (the main thread, woken from its exit
        // stop by the other thread's exit_group, became a zombie the tracer still waited for).
        let program = try NeverHarmTests.harm()
        for run in 0..<50 {
            let (result, maybeReport) = try Harness.swiftleak(program, ["pthread-exit"], options: ["--no-trace"],
                                                              timeout: 120)
            #expect(result.signal == nil, "run \(run) was killed: \(result.stderr)")
            #expect(result.status == 0, "run \(run): \(result.stderr)")
            let report = try #require(maybeReport, "run \(run) gave no report: \(result.stderr)")
            #expect(report.scanRan, "run \(run): \(result.stderr)")
            #expect(report.summary["definitely_lost"] == Report.Count(bytes: 33 + 44, blocks: 2), "run \(run): \(report.summary)")
        }
    }

    @Test("a program that outlives a termination request: a second one ends swiftleak with its report")
    func secondTerminationRequestEnds() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.swiftleak)
        process.arguments = ["run", "--no-trace", "--", try NeverHarmTests.harm(), "term-caught"]
        process.currentDirectoryURL = Harness.workDirectory
        let input = Pipe(), output = Pipe(), errors = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let watchdog = DispatchSource.makeTimerSource()
        watchdog.schedule(deadline: .now() + 120)
        watchdog.setEventHandler { kill(process.processIdentifier, SIGKILL) }
        watchdog.resume()
        defer { watchdog.cancel() }

        var seen = ""
        func readLine(_ expected: String) {
            while !seen.contains(expected) {
                let data = output.fileHandleForReading.availableData
                if data.isEmpty { return }
                seen += String(decoding: data, as: UTF8.self)
            }
        }
        readLine("ready\n")
        // The first request reaches the program, which catches it and runs on; swiftleak follows it.
        kill(process.processIdentifier, SIGTERM)
        readLine("term\n")
        #expect(seen == "ready\nterm\n")
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        // swiftleak is gone; the program, no longer traced, ends at the end of its input.
        try input.fileHandleForWriting.close()
        let report = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationReason == .uncaughtSignal)
        #expect(process.terminationStatus == SIGTERM)
        #expect(report.contains("swiftleak was ended by signal 15"), "\(report)")
        #expect(report.contains("33 bytes in 1 blocks"), "\(report)")
        #expect(report.contains("LEAK SUMMARY"), "\(report)")
    }
}
