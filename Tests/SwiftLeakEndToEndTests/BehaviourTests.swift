import Foundation
import Testing

/// The traced program behaves exactly as without swiftleak: output, input, exit status, signal.
@Suite("Program behaviour is unchanged")
struct BehaviourTests {
    static func native(_ program: String, _ arguments: [String], stdin: String? = nil) throws -> Harness.Result {
        try Harness.run([program] + arguments, stdin: stdin)
    }

    /// swiftleak's report lines start with "==PID== "; everything else on stderr is the program's.
    static func programStderr(_ stderr: String) -> String {
        stderr.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.hasPrefix("==") }
            .joined(separator: "\n")
    }

    @Test("exit status, stdout and stderr are the program's", arguments: [["exit", "0"], ["exit", "3"], ["_exit", "5"]])
    func exitStatus(arguments: [String]) throws {
        let program = try Harness.build("pipeline/behaviour.c")
        let expected = try Self.native(program, arguments)
        let (result, maybeReport) = try Harness.swiftleak(program, arguments)
        #expect(result.status == expected.status)
        #expect(result.signal == nil)
        #expect(result.stdout == expected.stdout)
        #expect(Self.programStderr(result.stderr) == expected.stderr)
        let report = try #require(maybeReport)
        #expect(report.exit == ["code": Int(expected.status)])
        #expect(report.notFreed(allocatedIn: program) == Report.Count(bytes: 77, blocks: 1))
    }

    @Test("std::bad_alloc thrown inside operator new's hook reaches the program's catch")
    func badAlloc() throws {
        let program = try Harness.build("behaviour/bad_alloc.cpp", flags: ["-O2", "-g"])
        let expected = try Self.native(program, [])
        #expect(expected.stdout == "caught 4, new_handler called 1, nothrow null 1\n")
        let (result, maybeReport) = try Harness.swiftleak(program)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.signal == nil)
        #expect(result.stdout == expected.stdout)
        let report = try #require(maybeReport)
        #expect(report.summary["definitely_lost"] == Report.Count(bytes: 40, blocks: 1))
    }

    @Test("a program killed by a signal kills swiftleak with the same signal, after the report",
          arguments: [("segv", SIGSEGV), ("abort", SIGABRT)])
    func fatalSignal(mode: String, signal: Int32) throws {
        let program = try Harness.build("pipeline/behaviour.c")
        let expected = try Self.native(program, [mode])
        #expect(expected.signal == signal)
        let (result, maybeReport) = try Harness.swiftleak(program, [mode])
        #expect(result.signal == signal)
        #expect(result.stdout == expected.stdout)
        #expect(Self.programStderr(result.stderr).hasPrefix("stderr line for \(mode)\n"))
        #expect(result.stderr.contains("LEAK SUMMARY:"))
        let report = try #require(maybeReport)
        #expect(report.exit == ["signal": Int(signal)])
        #expect(report.notFreed(allocatedIn: program) == Report.Count(bytes: 77, blocks: 1))
    }

    @Test("a heap bug glibc catches in realloc kills the program with glibc's message and SIGABRT, as without swiftleak",
          arguments: ["realloc", "realloc-zero"])
    func heapMisuse(mode: String) throws {
        let program = try Harness.build("behaviour/heap_misuse.c")
        let expected = try Self.native(program, [mode])
        #expect(expected.signal == SIGABRT)
        let (result, _) = try Harness.swiftleak(program, [mode])
        #expect(result.signal == expected.signal, "\(result.stderr)")
        #expect(result.stdout == expected.stdout)
        #expect(Self.programStderr(result.stderr) == expected.stderr)
    }

    /// glibc's perturbing, set three ways: the interposer fills what it clears with glibc's byte,
    /// and reads the setting as glibc does (the tunable wins over MALLOC_PERTURB_; a value out of
    /// bounds is ignored; octal and hex numbers). The program sets another byte with mallopt.
    @Test("with MALLOC_PERTURB_ set, bytes the program never wrote hold glibc's fill byte, and the leaks are the same",
          arguments: [
              (["MALLOC_PERTURB_": "0x5a"], "a5"),
              (["GLIBC_TUNABLES": "glibc.malloc.tcache_count=7:glibc.malloc.perturb=51", "MALLOC_PERTURB_": "0x5a"], "cc"),
              (["GLIBC_TUNABLES": "glibc.malloc.perturb=300", "MALLOC_PERTURB_": "0376"], "01"),
          ], ["-O0", "-O2"])
    func perturb(setting: ([String: String], String), optimization: String) throws {
        let (variables, byte) = setting
        let program = try Harness.build("behaviour/perturb.c", flags: [optimization, "-g"])
        let environment = ProcessInfo.processInfo.environment.merging(variables) { $1 }
        let expected = try Harness.run([program], environment: environment)
        #expect(expected.status == 0)
        // The setting took natively (the cases printed are those glibc perturbs for certain).
        #expect(expected.stdout.contains("malloc(200), first of its size: \(byte) x200\n"), "\(expected.stdout)")
        #expect(expected.stdout.contains("after mallopt(M_PERTURB, 0x3c): c3 x6000\n"), "\(expected.stdout)")
        let (result, maybeReport) = try Harness.swiftleak(program, environment: variables)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == expected.stdout)
        let report = try #require(maybeReport)
        #expect(report.summary["definitely_lost"] == Report.Count(bytes: 48, blocks: 1))
        #expect(report.summary["indirectly_lost"] == Report.Count(bytes: 32, blocks: 1))
        #expect(report.summary["possibly_lost"] == Report.Count(bytes: 0, blocks: 0))
    }

    @Test("SIGKILL: the blocks are still reported (scanned when the kernel gives an exit stop)")
    func sigkill() throws {
        let program = try Harness.build("pipeline/behaviour.c")
        let (result, maybeReport) = try Harness.swiftleak(program, ["kill"])
        #expect(result.signal == SIGKILL)
        let report = try #require(maybeReport)
        #expect(report.exit == ["signal": Int(SIGKILL)])
        #expect(report.notFreed(allocatedIn: program) == Report.Count(bytes: 77, blocks: 1))
        // Kernels differ: some stop a SIGKILLed tracee at PTRACE_EVENT_EXIT (then the scan runs),
        // some do not (then nothing can be classified).
        let unclassified = report.summary["unclassified"] ?? Report.Count(bytes: -1, blocks: -1)
        if report.scanRan {
            #expect(unclassified == Report.Count(bytes: 0, blocks: 0))
        } else {
            #expect(unclassified == report.inUseAtExit)
        }
    }

    @Test("a program that execs another: the old image's heap is reported, unclassified, with the new image's status")
    func exec() throws {
        let program = try Harness.build("pipeline/behaviour.c")
        let (result, maybeReport) = try Harness.swiftleak(program, ["exec"])
        #expect(result.status == 6)
        #expect(result.stdout == "stdout line for exec\nstdout line for exit\n")
        let report = try #require(maybeReport)
        #expect(!report.scanRan)
        // Everything is unclassified, but for glibc's stdout buffer, which the default
        // suppressions take.
        #expect(report.notFreed == report.inUseAtExit)
        #expect(report.summary["unclassified"].map { $0.blocks + (report.summary["suppressed"]?.blocks ?? 0) } == report.inUseAtExit.blocks)
        #expect(report.notFreed(allocatedIn: program) == Report.Count(bytes: 77, blocks: 1))
        #expect(result.stderr.contains("in use at exec:") && result.stderr.contains("the program exec'd \(program)"))
    }

    @Test("if swiftleak dies, the program runs on untracked to its end")
    func recorderDeath() throws {
        let program = try Harness.build("pipeline/long_runner.c")
        let started = Harness.workDirectory.appendingPathComponent("long_runner.started").path
        let done = Harness.workDirectory.appendingPathComponent("long_runner.done").path
        try? FileManager.default.removeItem(atPath: started)
        try? FileManager.default.removeItem(atPath: done)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.swiftleak)
        process.arguments = ["run", "--", program, "3", started, done]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Wait (bounded) until the program is running and recording, then kill swiftleak outright.
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: started) && Date() < deadline { usleep(20_000) }
        #expect(FileManager.default.fileExists(atPath: started))
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        // The program, now untraced, fills the ring, sees the recorder gone and goes on untracked.
        let finish = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: done) && Date() < finish { usleep(50_000) }
        let text = try? String(contentsOfFile: done, encoding: .utf8)
        #expect(text?.hasPrefix("done after ") == true)
    }

    @Test("signals sent to swiftleak reach the program, which dies by them, after the report",
          arguments: [SIGTERM, SIGINT])
    func forwardedSignal(signal: Int32) throws {
        let program = try Harness.build("pipeline/behaviour.c")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.swiftleak)
        process.arguments = ["run", "--", program, "stdin"]
        let input = Pipe(), output = Pipe(), errors = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        Harness.watch(process)
        try process.run()
        // The program prints its first line, then blocks reading stdin: it is running, traced.
        let firstLine = output.fileHandleForReading.availableData
        #expect(String(decoding: firstLine, as: UTF8.self).hasPrefix("stdout line for stdin"))
        kill(process.processIdentifier, signal)
        let report = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        try? input.fileHandleForWriting.close()
        #expect(process.terminationReason == .uncaughtSignal)
        #expect(process.terminationStatus == signal)
        #expect(String(decoding: report, as: UTF8.self).contains("LEAK SUMMARY"))
    }

    @Test("standard input reaches the program")
    func standardInput() throws {
        let program = try Harness.build("pipeline/behaviour.c")
        let text = "line one\nline two\n"
        let (result, _) = try Harness.swiftleak(program, ["stdin"], stdin: text)
        #expect(result.status == 0)
        #expect(result.stdout == "stdout line for stdin\n" + text)
    }
}

/// Bad input: one clear line, a non-zero exit, never a crash or a hang.
@Suite("Refused programs")
struct RefusedProgramTests {
    static func refusal(_ program: String) throws -> Harness.Result {
        try Harness.run([Harness.swiftleak, "run", "--", program], timeout: 60)
    }

    @Test("a missing program")
    func missing() throws {
        let result = try Self.refusal("/nonexistent/program")
        #expect(result.status != 0)
        #expect(result.stderr == "swiftleak: /nonexistent/program: no such file (and not found in PATH)\n")
    }

    @Test("a file that is not executable")
    func notExecutable() throws {
        let path = Harness.workDirectory.appendingPathComponent("not-executable").path
        FileManager.default.createFile(atPath: path, contents: Data("data".utf8), attributes: [.posixPermissions: 0o644])
        let result = try Self.refusal(path)
        #expect(result.status != 0)
        #expect(result.stderr.hasPrefix("swiftleak: \(path): not executable"))
        #expect(result.stderr.split(separator: "\n").count == 1)
    }

    @Test("a directory")
    func directory() throws {
        let result = try Self.refusal("/tmp")
        #expect(result.status != 0)
        #expect(result.stderr == "swiftleak: /tmp: is a directory, not a program\n")
    }

    @Test("a statically linked binary: LD_PRELOAD cannot work, and swiftleak says so")
    func staticBinary() throws {
        let program = try Harness.build("pipeline/behaviour.c", flags: ["-O0", "-static"])
        let result = try Self.refusal(program)
        #expect(result.status != 0)
        #expect(result.stderr.contains("statically linked"))
        #expect(result.stderr.contains("LD_PRELOAD"))
        #expect(result.stderr.split(separator: "\n").count == 1)
    }

    @Test("no program at all")
    func noProgram() throws {
        let result = try Harness.run([Harness.swiftleak, "run"], timeout: 60)
        #expect(result.status != 0)
        #expect(result.stderr.contains("missing the program to run"))
    }
}

@Suite("The preload library")
struct PreloadLibraryTests {
    @Test("needs nothing but the C library: no Swift runtime, no libunwind in the traced program")
    func dependencies() throws {
        let result = try Harness.run(["/usr/bin/env", "readelf", "-d", Harness.preloadLibrary])
        #expect(result.status == 0)
        let needed = result.stdout.split(separator: "\n").filter { $0.contains("(NEEDED)") }
            .compactMap { $0.split(separator: "[").last?.dropLast() }.map(String.init).sorted()
        #expect(needed == ["libc.so.6"])
    }
}
