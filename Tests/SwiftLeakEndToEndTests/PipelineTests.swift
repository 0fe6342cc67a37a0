import Foundation
import Testing

/// The recording pipeline, end to end: the real swiftleak on the programs in TestPrograms/pipeline.
@Suite("Recording pipeline")
struct PipelineTests {
    @Test("swiftleak's drain, trace-writer and symbol threads carry their names (scripts/bench measures the drain by its name)")
    func threadNames() throws {
        let (process, input, output, errors) = try NeverHarmTests.startWaitingProgram(options: ["-q"])
        // The program runs (it said so), so the recorder and the trace writer are started.
        #expect(String(decoding: output.fileHandleForReading.availableData, as: UTF8.self) == "ready\n")
        let tasks = "/proc/\(process.processIdentifier)/task"
        func threadNames() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: tasks)) ?? []).compactMap {
                (try? String(contentsOfFile: "\(tasks)/\($0)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            }
        }
        // The symbol preloader starts when the drain hands it the program's first modules.
        var names = threadNames()
        for _ in 0..<1000 where !names.contains("swl-symbols") {
            usleep(10_000)
            names = threadNames()
        }
        try input.fileHandleForWriting.close()
        _ = output.fileHandleForReading.readDataToEndOfFile()
        _ = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        // One drain thread: the preloader, which the drain thread starts, does not keep its name.
        #expect(names.filter { $0 == "swl-drain" }.count == 1, "\(names)")
        #expect(names.contains("swl-trace-write"))
        #expect(names.contains("swl-symbols"))
        #expect(process.terminationStatus == 0)
    }

    @Test("every C allocation function is recorded, with exact blocks, bytes and call count")
    func cAllocationFamily() throws {
        let program = try Harness.build("pipeline/alloc_family.c")
        let (result, maybeReport) = try Harness.swiftleak(program)
        #expect(result.status == 0)
        #expect(result.stdout == "leaked 12 blocks 4934 bytes, 315 allocation calls\n")
        let report = try #require(maybeReport)
        #expect(report.notFreed == Report.Count(bytes: 4934, blocks: 12))
        // The program makes no allocation through stdio: the totals are its own calls, so the
        // interposer added none of its own.
        #expect(report.allocations == 315)
        #expect(report.frees == 303)
        let functions = Set(report.lossRecords.map { $0.function })
        #expect(functions == ["malloc", "calloc", "realloc", "reallocarray", "posix_memalign",
                              "aligned_alloc", "memalign", "valloc", "pvalloc"])
        // The allocating call site is the first frame after the allocation function.
        for record in report.lossRecords {
            #expect(record.stack.count >= 2)
            #expect(record.stack[1].object == program)
        }
    }

    @Test("every C++ operator new form is recorded and named")
    func cxxOperatorFamily() throws {
        let program = try Harness.build("pipeline/cxx_family.cpp")
        let (result, maybeReport) = try Harness.swiftleak(program)
        #expect(result.status == 0)
        #expect(result.stdout == "leaked 6 blocks 1144 bytes\n")
        let report = try #require(maybeReport)
        #expect(report.notFreed(allocatedIn: program) == Report.Count(bytes: 1144, blocks: 6))
        let functions = Set(report.lossRecords.filter { $0.stack.count > 1 && $0.stack[1].object == program }.map { $0.function })
        #expect(functions == [
            "operator new[](unsigned long)", "operator new(unsigned long)",
            "operator new[](unsigned long, std::nothrow_t const&)", "operator new(unsigned long, std::nothrow_t const&)",
            "operator new(unsigned long, std::align_val_t)", "operator new[](unsigned long, std::align_val_t)",
        ])
        // 50 rounds of 6 new/delete pairs, the 6 leaks, and libstdc++'s own emergency pool.
        #expect(report.allocations == 307)
        #expect(report.frees == 300)
    }

    @Test("cross-thread frees: counts equal the program's, with no event lost",
          arguments: [(2, 20_000), (4, 1_000_000)])
    func crossThreadFrees(threads: Int, iterations: Int) throws {
        let program = try Harness.build("pipeline/threads.c")
        let leaksPerThread = 10
        let (result, maybeReport) = try Harness.swiftleak(program, ["\(threads)", "\(iterations)", "\(leaksPerThread)"], timeout: 240)
        #expect(result.status == 0, "swiftleak failed or hung: \(result.stderr.suffix(2000))")
        let report = try #require(maybeReport)
        let programLeaks = report.notFreed(allocatedIn: program)
        #expect(programLeaks == Report.Count(bytes: threads * leaksPerThread * 24, blocks: threads * leaksPerThread))
        // Every malloc the program made (its blocks, 2 callocs in main, the leaks), plus what the C
        // library allocated for the threads and still holds at exit (thread-local storage).
        let libraryBlocks: Int = report.notFreed.blocks - programLeaks.blocks
        let programAllocations: Int = threads * iterations + threads * leaksPerThread + 2
        #expect(report.allocations == programAllocations + libraryBlocks)
        let programFrees: Int = threads * iterations + 2
        #expect(report.frees == programFrees)
    }

    @Test("SWIFTLEAK_PHASES prints where one run's time went, phase by phase, on stderr; without it nothing")
    func phaseTimes() throws {
        let phases = ["main", "parsed", "suppressions-loaded", "spawned", "to-exit-stop", "exit-work",
                      "program-released", "reports-built", "trace-closed", "reports-printed"]
        let (timed, report) = try Harness.swiftleak("/bin/true", options: ["-q"], environment: ["SWIFTLEAK_PHASES": "1"])
        #expect(timed.status == 0)
        #expect(report?.scanRan == true)
        let lines = timed.stderr.split(separator: "\n").filter { $0.hasPrefix("swiftleak: phase ") }
        #expect(lines.map { String($0.split(separator: " ")[2]) } == phases, "\(timed.stderr)")
        #expect(lines.allSatisfy { $0.hasSuffix(" ms)") && $0.contains(" ms (") }, "\(timed.stderr)")
        let (quiet, _) = try Harness.swiftleak("/bin/true", options: ["-q"])
        #expect(!quiet.stderr.contains("phase"), "\(quiet.stderr)")
    }
}
