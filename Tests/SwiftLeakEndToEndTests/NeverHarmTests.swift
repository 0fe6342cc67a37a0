import Foundation
import Testing

/// swiftleak must never harm the program it watches (fds, environment, bytes, signals, files), and
/// the program must not be able to harm swiftleak. Each test runs TestPrograms/behaviour/harm.c
/// (or a Swift program) natively and under swiftleak where a native run is the reference.
@Suite("Never harm the program")
struct NeverHarmTests {
    static func harm() throws -> String {
        let include = Harness.packageRoot.appendingPathComponent("CShims/SwiftLeakEventABI/include").path
        return try Harness.build("behaviour/harm.c", flags: ["-O0", "-g", "-I", include])
    }

    static func traced(_ arguments: [String], options: [String] = [], environment: [String: String] = [:],
                       stdin: String? = nil) throws -> (Harness.Result, Report?) {
        let program = try harm()
        return try Harness.swiftleak(program, arguments, options: options, stdin: stdin, timeout: 120,
                                     environment: environment)
    }

    static func native(_ arguments: [String], environment: [String: String]? = nil) throws -> Harness.Result {
        try Harness.run([try harm()] + arguments, timeout: 120, environment: environment)
    }

    static func temporaryPath(_ name: String) -> String {
        Harness.workDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)").path
    }

    // MARK: fds

    @Test("a thread on the smallest stack glibc accepts starts as natively: the interposer's static TLS stays small")
    func smallestThreadStack() throws {
        let expected = try Self.native(["min-stack"])
        #expect(expected.stdout.hasSuffix("stack size 0, thread 0\n"), "\(expected.stdout)")
        let (result, report) = try Self.traced(["min-stack"])
        #expect(result.stdout == expected.stdout, "\(result.stderr)")
        #expect(report?.notFreed(allocatedIn: try Self.harm()) == Report.Count(bytes: 33, blocks: 1))
    }

    @Test("swiftleak owns no fd in the program: the first open() returns 3")
    func firstOpen() throws {
        let expected = try Self.native(["fds"])
        #expect(expected.stdout.hasSuffix("first open: 3\n"))
        let (result, report) = try Self.traced(["fds"])
        // The test runner's own descriptors (inherited by both runs) come and go with the tests
        // running beside this one: compare what matters, the first free fd and nothing of ours.
        #expect(result.stdout.hasSuffix("first open: 3\n"), "\(result.stdout)")
        #expect(!result.stdout.contains("swiftleak"), "\(result.stdout)")
        #expect(report?.notFreed(allocatedIn: try Self.harm()) == Report.Count(bytes: 33, blocks: 1))
    }

    @Test("no descriptor is made in the program once it runs, not even for an instant: new threads get their own stacks without one")
    func noTransientDescriptor() throws {
        // fd_watch defines libc's descriptor-making functions itself: every call the interposer
        // makes to one reaches it, however briefly the descriptor lives (no timing window).
        let program = try Harness.build("behaviour/fd_watch.c", flags: ["-O0", "-g", "-rdynamic"])
        let expected = try Harness.run([program, "16"], timeout: 120)
        #expect(expected.status == 0 && expected.stdout == "by others before main: 0\nby others since main: 0\nown open: 3\n",
                "status \(expected.status): \(expected.stdout)\(expected.stderr)")
        let (result, report) = try Harness.swiftleak(program, ["16"], timeout: 120)
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        try #require(lines.count == 3, "\(result.stdout)")
        // The interposer opens (and closes) the ring before the program's code runs: that call
        // reaching fd_watch shows its watch sees the interposer's calls.
        #expect(lines[0] == "by others before main: 1 open", "\(result.stdout)")
        #expect(lines[1] == "by others since main: 0", "\(result.stdout)")
        #expect(lines[2] == "own open: 3")
        #expect(report?.scanRan == true, "\(result.stderr)")
        #expect(report?.summary["definitely_lost"] == nil || report?.summary["definitely_lost"]?.blocks == 0,
                "\(String(describing: report?.summary))")
    }

    @Test("fds 3 and 4 dup2'd over by the program are never touched, even from a frame without unwind information")
    func dup2OverLowFds() throws {
        let nativeFile = Self.temporaryPath("dup2-native"), tracedFile = Self.temporaryPath("dup2-traced")
        let expected = try Self.native(["dup2", nativeFile])
        let (result, _) = try Self.traced(["dup2", tracedFile])
        #expect(result.status == expected.status)
        #expect(result.stdout == "done\n")
        let nativeText = try String(contentsOfFile: nativeFile, encoding: .utf8)
        #expect(nativeText == "line written to fd 3\nline written to fd 4\n")
        #expect(try String(contentsOfFile: tracedFile, encoding: .utf8) == nativeText)
    }

    @Test("a Swift program's own fds 3 and 4 are its own")
    func swiftProgramFds() throws {
        let program = try Harness.build("behaviour/swift_fds.swift")
        let nativeFile = Self.temporaryPath("swift-native"), tracedFile = Self.temporaryPath("swift-traced")
        let expected = try Harness.run([program, nativeFile], timeout: 120)
        #expect(expected.stdout.hasPrefix("first open: 3\n"), "\(expected.stdout)")
        let (result, _) = try Harness.swiftleak(program, [tracedFile], timeout: 120)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == expected.stdout)
        let nativeText = try String(contentsOfFile: nativeFile, encoding: .utf8)
        #expect(!nativeText.isEmpty)
        #expect(try String(contentsOfFile: tracedFile, encoding: .utf8) == nativeText)
    }

    // MARK: Inherited fds and the environment

    @Test("an inherited fd that carries the ring's number is the program's: it is not closed")
    func inheritedDescriptor() throws {
        let program = try Self.harm()
        let data = Self.temporaryPath("data")
        // Bigger than the ring's header, so that only a real check tells it from a ring.
        try Data(("inherited bytes\n" + String(repeating: "x", count: 2000)).utf8).write(to: URL(fileURLWithPath: data))
        let script = "'\(program)' readfd 3 3<'\(data)'"
        let result = try Harness.run([Harness.swiftleak, "run", "--", "/bin/sh", "-c", script], timeout: 120)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.hasPrefix("read: inherited bytes\n"))
    }

    @Test("the program's environment is the user's: no ring variable, LD_PRELOAD as it was",
          arguments: [nil, "", "libm.so.6"] as [String?])
    func environment(userPreload: String?) throws {
        var environment = ProcessInfo.processInfo.environment
        environment["LD_PRELOAD"] = userPreload
        environment["HARM_BYTES"] = "plain"
        let expected = try Self.native(["env"], environment: environment)
        let result = try Harness.run([Harness.swiftleak, "run", "--", try Self.harm(), "env"], timeout: 120,
                                     environment: environment)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == expected.stdout)
        #expect(!result.stdout.contains("SWIFTLEAK_RING"))
    }

    // MARK: Bytes

    /// Runs `sh -c SCRIPT` with $1 = swiftleak and $2 = the program, so that bytes that are not
    /// UTF-8 can be made by printf (Foundation's Process takes Strings).
    static func shell(_ script: String) throws -> Harness.Result {
        try Harness.run(["/bin/sh", "-c", script, "sh", Harness.swiftleak, try harm()], timeout: 120)
    }

    @Test("arguments, environment and the program path pass as bytes, untouched")
    func bytes() throws {
        let arguments = "args \"$(printf 'caf\\351')\" \"$(printf 'line\\nbreak')\" \"$(printf '\\377\\376')\" ''"
        let expected = try Self.shell("\"$2\" \(arguments)")
        #expect(expected.stdout.contains("[2] caf\\xe9\n"))
        let traced = try Self.shell("\"$1\" run -- \"$2\" \(arguments)")
        #expect(traced.status == 0, "\(traced.stderr)")
        #expect(traced.stdout == expected.stdout)

        let environment = "env HARM_LATIN1=\"$(printf 'caf\\351')\""
        let expectedEnvironment = try Self.shell("\(environment) \"$2\" env")
        #expect(expectedEnvironment.stdout.contains("HARM_LATIN1=caf\\xe9\n"))
        let tracedEnvironment = try Self.shell("\(environment) \"$1\" run -- \"$2\" env")
        #expect(tracedEnvironment.stdout == expectedEnvironment.stdout)

        // A program whose own path is not UTF-8.
        let copy = "d=$(mktemp -d) && cp \"$2\" \"$d/$(printf 'harm-\\351')\" && "
        let tracedPath = try Self.shell(copy + "\"$1\" run -- \"$d/$(printf 'harm-\\351')\" args")
        #expect(tracedPath.status == 0, "\(tracedPath.stderr)")
        #expect(tracedPath.stdout.contains("/harm-\\xe9\n"), "\(tracedPath.stdout)")
        #expect(tracedPath.stderr.contains("/harm-\\xe9 args\n"), "the Command: line shows the byte escaped")
    }

    @Test("50,000 arguments: all reach the program, started in linear time")
    func manyArguments() throws {
        let arguments = ["args"] + (1...50_000).map { "argument-\($0)" }
        let (result, _) = try Self.traced(arguments, options: ["--leak-check=no"])
        #expect(result.status == 0, "\(result.stderr.prefix(500))")
        #expect(result.stdout.hasPrefix("50002 arguments\n"))
        #expect(result.stdout.hasSuffix("[50000] argument-49999\n[50001] argument-50000\n"))
    }

    @Test("a newline in an argument is escaped in the Command: line: report lines cannot be forged")
    func commandLineEscaped() throws {
        let forged = "x\n==1== definitely lost: 0 bytes in 0 blocks"
        let (result, _) = try Self.traced(["args", forged])
        #expect(result.status == 0)
        let commandLines = result.stderr.split(separator: "\n").filter { $0.contains("Command: ") }
        #expect(commandLines.count == 1)
        #expect(commandLines.first?.hasSuffix(" args x\\n==1== definitely lost: 0 bytes in 0 blocks") == true)
        #expect(!result.stderr.contains("\n==1== definitely lost"))
    }

    // MARK: Exit statuses like a shell

    @Test("a missing program exits 127, one that cannot be executed 126, as in a shell")
    func shellStatuses() throws {
        let missing = try Harness.run([Harness.swiftleak, "run", "--", "/nonexistent/program"], timeout: 60)
        #expect(missing.status == 127)
        let notInPath = try Harness.run([Harness.swiftleak, "run", "--", "no-such-program-anywhere"], timeout: 60)
        #expect(notInPath.status == 127)
        let path = Self.temporaryPath("not-executable")
        try #require(FileManager.default.createFile(atPath: path, contents: Data("data".utf8), attributes: [.posixPermissions: 0o644]))
        let notExecutable = try Harness.run([Harness.swiftleak, "run", "--", path], timeout: 60)
        #expect(notExecutable.status == 126)
        #expect(notExecutable.stderr.split(separator: "\n").count == 1)
    }

    @Test("a script without #! runs through /bin/sh, as execvp runs it")
    func scriptWithoutInterpreterLine() throws {
        let path = Self.temporaryPath("script")
        try #require(FileManager.default.createFile(atPath: path, contents: Data("echo \"script ran with $# arguments: $*\"\nexit 4\n".utf8),
                                       attributes: [.posixPermissions: 0o755]))
        let result = try Harness.run([Harness.swiftleak, "run", "--", path, "a", "b"], timeout: 120)
        #expect(result.status == 4, "\(result.stderr)")
        #expect(result.stdout == "script ran with 2 arguments: a b\n")
    }

    @Test("a set-user-ID program is refused in one line, before it runs")
    func setuidProgram() throws {
        let path = Self.temporaryPath("setuid-harm")
        try Harness.makeSetIDCopy(of: try Self.harm(), at: path)
        let result = try Harness.run([Harness.swiftleak, "run", "--", path, "quiet-exit"], timeout: 60)
        #expect(result.status == 126)
        #expect(result.stdout.isEmpty, "the program must not run")
        #expect(result.stderr.split(separator: "\n").count == 1)
        #expect(result.stderr.contains("set-user-ID or set-group-ID"))
    }

    // MARK: Output files

    @Test("a report file on a full device: one line says so, the program's status stays", arguments: ["--log-file", "--json"])
    func writeErrorReported(option: String) throws {
        let result = try Harness.run([Harness.swiftleak, "run", option, "/dev/full", "--", try Self.harm(), "quiet-exit", "3"],
                                     timeout: 120)
        #expect(result.status == 3)
        #expect(result.stdout == "exiting quietly\n")
        let errors = result.stderr.split(separator: "\n").filter { $0.hasPrefix("swiftleak: ") }
        #expect(errors.count == 1, "\(result.stderr)")
        #expect(errors.first?.contains("/dev/full: No space left on device") == true, "\(result.stderr)")
    }

    @Test("a trace on a full device: the report calls it incomplete, never offers it to analyze, and the program's status stays")
    func traceWriteErrorReported() throws {
        let json = Harness.workDirectory.appendingPathComponent("trace-full-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: json) }
        let result = try Harness.run([Harness.swiftleak, "run", "-o", "/dev/full", "--json", json, "--", try Self.harm(), "quiet-exit", "3"],
                                     timeout: 120)
        #expect(result.status == 3)
        #expect(result.stdout == "exiting quietly\n")
        let lines = result.stderr.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasSuffix("Warning: writing the trace /dev/full failed after 0 bytes (No space left on device); it is cut short there") },
                "\(result.stderr)")
        let traceLines = lines.filter { $0.contains("Trace: ") }
        #expect(traceLines.count == 1 && traceLines[0].hasSuffix("Trace: /dev/full is incomplete or missing: writing it failed (see the warning above)"),
                "\(result.stderr)")
        #expect(!result.stderr.contains("swiftleak analyze"))
        // The JSON report does not name the trace; its warnings say the trace failed.
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any]
        let process = (object?["processes"] as? [[String: Any]])?.first
        let warnings = process?["warnings"] as? [String] ?? []
        #expect(warnings.contains { $0.hasPrefix("writing the trace /dev/full failed") }, "\(warnings)")
    }

    @Test("report files are checked before the program starts, not followed through a symlink, and private",
          arguments: ["--log-file", "--json"])
    func outputFileChecks(option: String) throws {
        let program = try Self.harm()
        let missingDirectory = try Harness.run([Harness.swiftleak, "run", option, "/nonexistent/dir/report", "--", program, "quiet-exit"],
                                               timeout: 60)
        #expect(missingDirectory.status != 0)
        #expect(missingDirectory.stdout.isEmpty, "the program must not have run")
        #expect(missingDirectory.stderr.split(separator: "\n").count == 1)

        let victim = Self.temporaryPath("victim"), link = Self.temporaryPath("link")
        try Data("precious\n".utf8).write(to: URL(fileURLWithPath: victim))
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: victim)
        let throughLink = try Harness.run([Harness.swiftleak, "run", option, link, "--", program, "quiet-exit"], timeout: 60)
        #expect(throughLink.status != 0)
        #expect(throughLink.stdout.isEmpty)
        #expect(throughLink.stderr.contains("symbolic link"))
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "precious\n")

        let report = Self.temporaryPath("report")
        let written = try Harness.run([Harness.swiftleak, "run", option, report, "--", program, "quiet-exit"], timeout: 120)
        #expect(written.status == 0)
        let attributes = try FileManager.default.attributesOfItem(atPath: report)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
    }

    // MARK: Signals

    @Test("swiftleak's stderr on a closed pipe: no SIGPIPE, the program's status stays")
    func closedStderr() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.swiftleak)
        process.arguments = ["run", "--", try Self.harm(), "quiet-exit", "3"]
        let errors = Pipe(), output = Pipe()
        process.standardError = errors
        process.standardOutput = output
        try errors.fileHandleForReading.close()
        try process.run()
        let text = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(String(decoding: text, as: UTF8.self) == "exiting quietly\n")
        #expect(process.terminationReason == .exit)
        #expect(process.terminationStatus == 3)
    }

    /// `swiftleak run -- harm stop` with every standard stream a pipe: the program prints
    /// "ready" and waits on stdin.
    /// swiftleak running `harm MODE` (a mode that waits on its input), its pipes open.
    static func startWaitingProgram(_ mode: String = "stop", options: [String] = []) throws -> (Process, input: Pipe, output: Pipe, errors: Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.swiftleak)
        process.arguments = ["run"] + options + ["--", try harm(), mode]
        process.currentDirectoryURL = Harness.workDirectory
        let input = Pipe(), output = Pipe(), errors = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        Harness.watch(process)
        try process.run()
        return (process, input, output, errors)
    }

    @Test("SIGQUIT sent to swiftleak reaches the program; no crash handler of swiftleak's runs")
    func sigquitForwarded() throws {
        let (process, input, output, errors) = try Self.startWaitingProgram()
        let ready = output.fileHandleForReading.availableData
        #expect(String(decoding: ready, as: UTF8.self) == "ready\n")
        kill(process.processIdentifier, SIGQUIT)
        let report = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        try? input.fileHandleForWriting.close()
        #expect(process.terminationReason == .uncaughtSignal)
        #expect(process.terminationStatus == SIGQUIT)
        #expect(report.contains("LEAK SUMMARY"))
        #expect(report.contains("Process terminating with default action of signal 3 (SIGQUIT)"))
        #expect(!report.contains("Crash"), "\(report)")
        #expect(!report.contains("Backtrace"), "\(report)")
    }

    /// The traced program's scheduler state letter from /proc/PID/stat ("T"/"t" when stopped).
    static func state(of pid: Int32) -> Character? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let end = text.lastIndex(of: ")") else { return nil }
        return text[text.index(end, offsetBy: 2)]
    }

    @Test("SIGSTOP sent to the program stops it, SIGCONT resumes it")
    func stopAndContinue() throws {
        let (process, input, output, errors) = try Self.startWaitingProgram()
        let ready = String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
        #expect(ready == "ready\n")
        // The header names the program's pid: "==PID== swiftleak-…".
        var header = ""
        while !header.contains("\n") {
            let more = errors.fileHandleForReading.availableData
            try #require(!more.isEmpty, "swiftleak's stderr ended before its first line: \(header)")
            header += String(decoding: more, as: UTF8.self)
        }
        let pid = try #require(Int32(header.dropFirst(2).prefix { $0.isNumber }))

        kill(pid, SIGSTOP)
        var stopped = false
        for _ in 0..<3000 where !stopped {
            stopped = ["T", "t"].contains(Self.state(of: pid))
            if !stopped { usleep(10_000) }
        }
        #expect(stopped, "the program never stopped")
        // Stopped means it does not run: a line written now is not echoed while it stays stopped.
        input.fileHandleForWriting.write(Data("while stopped\n".utf8))
        let flags = fcntl(output.fileHandleForReading.fileDescriptor, F_GETFL)
        _ = fcntl(output.fileHandleForReading.fileDescriptor, F_SETFL, flags | O_NONBLOCK)
        var echoedWhileStopped = false
        for _ in 0..<100 {
            var byte: UInt8 = 0
            if read(output.fileHandleForReading.fileDescriptor, &byte, 1) == 1 { echoedWhileStopped = true; break }
            usleep(10_000)
        }
        #expect(!echoedWhileStopped)
        #expect(["T", "t"].contains(Self.state(of: pid)))
        _ = fcntl(output.fileHandleForReading.fileDescriptor, F_SETFL, flags)

        kill(pid, SIGCONT)
        try input.fileHandleForWriting.close()
        let rest = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        _ = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(rest == "while stopped\n")
        #expect(process.terminationReason == .exit)
        #expect(process.terminationStatus == 0)
    }

    // MARK: Exit paths

    @Test("a program killed by a signal: the report says so in Valgrind's words")
    func signalLine() throws {
        let program = try Harness.build("pipeline/behaviour.c")
        let (result, _) = try Harness.swiftleak(program, ["segv"], timeout: 120)
        #expect(result.signal == SIGSEGV)
        #expect(result.stderr.contains("Process terminating with default action of signal 11 (SIGSEGV)\n"))
    }

    @Test("pthread_exit from main: the blocks are classified, scanned through a live thread")
    func pthreadExitFromMain() throws {
        let (result, maybeReport) = try Self.traced(["pthread-exit"])
        #expect(result.status == 0, "\(result.stderr)")
        let report = try #require(maybeReport)
        #expect(report.scanRan, "\(result.stderr)")
        #expect(report.summary["unclassified"] == nil || report.summary["unclassified"] == Report.Count(bytes: 0, blocks: 0))
        #expect(report.summary["definitely_lost"].map { $0.bytes >= 33 + 44 } == true, "\(report.summary)")
    }

    // MARK: Core dumps

    @Test("swiftleak's mappings in the program are left out of its core dumps")
    func dontDump() throws {
        let (result, _) = try Self.traced(["dontdump"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("swiftleak ring dumped: no\n"), "\(result.stdout)")
        // The own stacks are anonymous: found through the areas the ring's header lists.
        #expect(result.stdout.contains("swiftleak stack dumped: no\n"), "\(result.stdout)")
        #expect(!result.stdout.contains("dumped: yes"), "\(result.stdout)")
    }

    @Test("a crash's core file holds the program, not gigabytes of swiftleak's ring, and is never overwritten by ours")
    func coreFile() throws {
        let pattern = (try String(contentsOfFile: "/proc/sys/kernel/core_pattern", encoding: .utf8))
            .trimmingCharacters(in: .whitespacesAndNewlines)
        // Only a pattern that writes into the crashing process's directory can be checked here.
        guard !pattern.hasPrefix("|"), !pattern.contains("/") else { return }
        let perProcess = pattern.contains("%p")
            || (try? String(contentsOfFile: "/proc/sys/kernel/core_uses_pid", encoding: .utf8))?.hasPrefix("1") == true
        let program = try Harness.build("pipeline/behaviour.c")
        let directory = Self.temporaryPath("core")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // Python for the wait status: it says whether swiftleak itself dumped core.
        let script = """
        import os, resource, subprocess, sys
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        child = subprocess.Popen(sys.argv[2:], cwd=sys.argv[1], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status = os.waitpid(child.pid, 0)
        print(os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1, os.WCOREDUMP(status))
        """
        let result = try Harness.run(["/usr/bin/env", "python3", "-c", script, directory,
                                      Harness.swiftleak, "run", "--", program, "segv"], timeout: 120)
        #expect(result.stdout == "\(SIGSEGV) \(perProcess ? "True" : "False")\n", "\(result.stderr)")
        let cores = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix("core") }
        // The program's core, and swiftleak's own only where it cannot take the program's name.
        #expect(cores.count == (perProcess ? 2 : 1), "\(cores)")
        for core in cores {
            let size = try FileManager.default.attributesOfItem(atPath: directory + "/" + core)[.size] as? Int ?? -1
            #expect(size > 0 && size < 256 << 20, "\(core): \(size) bytes (the ring and the stack store are 4 GiB)")
        }
    }

    // MARK: The program is untrusted input

    @Test("garbage written into the ring: one warning, and the report goes on")
    func forgedRing() throws {
        let (result, maybeReport) = try Self.traced(["forge"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "forged\n")
        let report = try #require(maybeReport, "no report: \(result.stderr)")
        #expect(report.notFreed(allocatedIn: try Self.harm()) == Report.Count(bytes: 33, blocks: 1))
        let warnings = result.stderr.split(separator: "\n").filter { $0.contains("Warning: ") && $0.contains("invalid") }
        #expect(warnings.count == 1, "\(result.stderr)")
    }

    @Test("a tail moved back over used positions (two tasks on the lock-free tail) leaves the program running untracked, never waiting for ever")
    func tailMovedBack() throws {
        // A hook that reserved a position already used (and freed by the recorder for a later lap)
        // waited for that slot for as long as swiftleak lived: the program hung, and so did the run.
        let (result, maybeReport) = try Harness.swiftleak(try Self.harm(), ["tail-back"], timeout: 60)
        #expect(result.signal == nil && result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "done\n")
        // What the race overwrote is lost (here a free: its block looks leaked), and the report says
        // its figures are incomplete.
        let report = try #require(maybeReport, "no report: \(result.stderr)")
        #expect(report.summary["definitely_lost"].map { $0.bytes >= 33 } == true, "\(report.summary)")
        #expect(result.stderr.contains("the interposer stopped recording before the end"), "\(result.stderr)")
    }

    @Test("a forged own-stack table cannot hide the program's roots: the area is ignored with a warning")
    func forgedOwnStackTable() throws {
        let (result, maybeReport) = try Self.traced(["forge-stacks"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "forged the own-stack table\n")
        let report = try #require(maybeReport, "no report: \(result.stderr)")
        // The 33-byte leak every mode makes, lost; the 48-byte block, reachable from the memory the
        // forged entry claimed.
        #expect(report.summary["definitely_lost"] == Report.Count(bytes: 33, blocks: 1), "\(report.summary)")
        #expect(report.summary["still_reachable"].map { $0.bytes >= 48 } == true, "\(report.summary)")
        let warnings = result.stderr.split(separator: "\n").filter { $0.contains("Warning: ") && $0.contains("own-stack table") }
        #expect(warnings.count == 2, "\(result.stderr)")
    }

    @Test("forged allocations that overlap each other and a real block: one warning, the real block stays reachable")
    func forgedOverlappingBlocks() throws {
        let (result, maybeReport) = try Self.traced(["forge-overlap"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "forged overlapping blocks\n")
        let report = try #require(maybeReport, "no report: \(result.stderr)")
        #expect(report.scanRan, "\(result.stderr)")
        // The 33-byte leak every mode makes, with the forged blocks (unreadable or clamped to a
        // chunk header) lost beside it; the real 64-byte block reachable from its global.
        #expect(report.summary["definitely_lost"].map { $0.blocks >= 1 && $0.bytes >= 33 } == true, "\(report.summary)")
        #expect(report.summary["still_reachable"].map { $0.bytes >= 64 } == true, "\(report.summary)")
        let warnings = result.stderr.split(separator: "\n").filter { $0.contains("Warning: ") && $0.contains("overlapped") }
        #expect(warnings.count == 1, "\(result.stderr)")
        #expect(warnings.first?.contains("2 live block(s)") == true, "\(result.stderr)")
    }

    @Test("errno is the program's: hooks that sleep on a full ring past their timeout give it back unchanged")
    func errnoAcrossFullRing() throws {
        let expected = try Self.native(["errno-full-ring"])
        #expect(expected.stdout == "errno changed by malloc: 0, by free: 0; swiftleak continued: 0\n", "\(expected.stderr)")
        // The program stops swiftleak itself and a thread of its continues it once the hooks have
        // slept on the full ring for longer than their 100 ms futex timeout.
        let (result, report) = try Self.traced(["errno-full-ring"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "errno changed by malloc: 0, by free: 0; swiftleak continued: 1\n", "\(result.stderr)")
        #expect(report?.notFreed(allocatedIn: try Self.harm()) == Report.Count(bytes: 33, blocks: 1))
    }

    @Test("a forged module path naming a FIFO is not opened: no hang")
    func forgedFIFOModule() throws {
        let fifo = Self.temporaryPath("fifo")
        try #require(mkfifo(fifo, 0o600) == 0)
        let (result, maybeReport) = try Self.traced(["fifo", fifo])
        #expect(result.status == 0, "\(result.stderr)")
        let report = try #require(maybeReport, "no report: \(result.stderr)")
        #expect(report.notFreed(allocatedIn: try Self.harm()) == Report.Count(bytes: 33, blocks: 1))
        #expect(result.stderr.contains("Warning: "), "\(result.stderr)")
    }
}
