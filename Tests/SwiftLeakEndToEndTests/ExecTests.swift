import Foundation
import Testing

/// Following exec (`--trace-children`): every image a traced process execs is recorded and
/// reported on its own, with figures equal to Valgrind's `--trace-children=yes`, and a program that
/// ran untracked is said in one line.
@Suite("Exec following")
struct ExecTests {
    typealias Summary = ValgrindDifferentialTests.Summary

    /// One image's report from the JSON, with the fields these tests need.
    struct Image {
        var report: Report
        var command: [String]
        var replacedByExec: String?
        var summary: Summary {
            Summary(definite: report.summary["definitely_lost"] ?? Report.Count(bytes: -1, blocks: -1),
                    indirect: report.summary["indirectly_lost"] ?? Report.Count(bytes: -1, blocks: -1))
        }
    }

    /// `swiftleak run --json FILE [options] -- command`: the result and every image reported.
    static func swiftleak(_ command: [String], options: [String] = [], environment: [String: String]? = nil) throws -> (Harness.Result, [Image]) {
        let json = Harness.workDirectory.appendingPathComponent("exec-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: json) }
        let result = try Harness.run([Harness.swiftleak, "run", "--no-trace", "--json", json] + options + ["--"] + command,
                                     timeout: 120, environment: environment)
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: json)),
              let root = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              let processes = root["processes"] as? [[String: Any]] else { return (result, []) }
        let images = try processes.map { process in
            // Report parses the first process of a document: give it one per process.
            let single = try JSONSerialization.data(withJSONObject: ["processes": [process]])
            return Image(report: try Report(json: single), command: process["command"] as? [String] ?? [],
                         replacedByExec: process["replaced_by_exec"] as? String)
        }
        return (result, images)
    }

    /// Valgrind with --trace-children=yes and a log per pid: each log's command (as Valgrind
    /// prints it, spaces escaped) and its lost figures. An exec keeps the pid, so a pid's log is its
    /// last image's.
    static func valgrind(_ command: [String]) throws -> [(command: String, summary: Summary)] {
        let path = ["/usr/bin/valgrind", "/usr/local/bin/valgrind"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let valgrind = try #require(path, "valgrind is needed (scripts/install-deps installs it)")
        let directory = Harness.workDirectory.appendingPathComponent("vg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        _ = try Harness.run([valgrind, "--leak-check=full", "--trace-children=yes", "--log-file=\(directory.path)/vg.%p"] + command,
                            timeout: 300)
        return try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted().map { name in
            let log = try String(contentsOfFile: directory.appendingPathComponent(name).path, encoding: .utf8)
            let commandLine = log.split(separator: "\n").first { $0.contains("Command: ") }
                .map { String($0[$0.range(of: "Command: ")!.upperBound...]) } ?? ""
            return (commandLine.replacingOccurrences(of: "\\ ", with: " "), ValgrindDifferentialTests.valgrindSummary(log))
        }
    }

    /// Each of Valgrind's logs (those whose command `compared` accepts) has a report of ours for the
    /// same command, with the same lost figures. Returns how many were compared.
    @discardableResult
    static func expectSameAsValgrind(_ images: [Image], _ command: [String], compared: (String) -> Bool = { _ in true },
                                     sourceLocation: SourceLocation = #_sourceLocation) throws -> Int {
        let logs = try valgrind(command).filter { compared($0.command) }
        #expect(!logs.isEmpty, sourceLocation: sourceLocation)
        for log in logs {
            let ours = images.last { $0.replacedByExec == nil && $0.command.joined(separator: " ") == log.command }
                ?? images.last { $0.command.joined(separator: " ") == log.command }
            #expect(ours?.summary == log.summary, "\(log.command)", sourceLocation: sourceLocation)
        }
        return logs.count
    }

    static var leaky: String { get throws { try Harness.build("demo/leaky.c") } }

    @Test("a shell running a leaking program, by exec or by fork and exec: the program's report is Valgrind's, and so is the shell's",
          arguments: ["/bin/bash -c LEAKY", "/bin/sh -c exec\\ LEAKY", "/bin/bash -c LEAKY;\\ true", "/bin/sh -c LEAKY;\\ true"])
    func shellRunsLeaky(_ shape: String) throws {
        let leaky = try Self.leaky
        // "a b\ c" is ["a", "b c"].
        let command = shape.replacingOccurrences(of: "\\ ", with: "\u{1}").split(separator: " ")
            .map { $0.replacingOccurrences(of: "\u{1}", with: " ").replacingOccurrences(of: "LEAKY", with: leaky) }
        let (result, images) = try Self.swiftleak(command, options: ["--error-exitcode=9"])
        // The leaks are found, so --error-exitcode applies: no false pass.
        #expect(result.status == 9, "\(command): \(result.stderr)")
        #expect(result.stdout == "first node: node 2\n")
        #expect(!result.stderr.contains("Untracked:"))
        let program = images.filter { $0.command == [leaky] }
        try #require(program.count == 1, "\(command): \(images.map(\.command))")
        #expect(program[0].report.scanRan && program[0].replacedByExec == nil)
        #expect(program[0].summary == Summary(definite: Report.Count(bytes: 42, blocks: 2), indirect: Report.Count(bytes: 64, blocks: 2)))
        // The image it replaced (the shell itself, or bash's fork child; dash runs a command of a
        // list in a vfork child, which has no image of its own): in use at exec, not
        // classified, no error. In the text, only the launched program's own: a fork child's
        // first image is its parent's copy, for which Valgrind prints nothing, and neither do we.
        let replaced = images.first { $0.replacedByExec == leaky }
        if !shape.contains(";") || shape.hasPrefix("/bin/bash") {
            #expect(replaced?.command == command && replaced?.report.pid == program[0].report.pid)
            #expect(replaced?.report.scanRan == false && replaced?.report.summary["definitely_lost"] == Report.Count(bytes: 0, blocks: 0))
            #expect(result.stderr.contains("in use at exec:") == !shape.contains(";"), "\(result.stderr)")
        }
        try Self.expectSameAsValgrind(images, command)
    }

    @Test("a forked child that execs: on stderr, one section per pid with its header, as Valgrind prints (none for the fork's copy of the parent)")
    func forkChildCopyNotReported() throws {
        let leaky = try Self.leaky
        let command = ["/bin/bash", "-c", "\(leaky); true"]
        let path = ["/usr/bin/valgrind", "/usr/local/bin/valgrind"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let valgrind = try #require(path, "valgrind is needed (scripts/install-deps installs it)")
        /// Per pid of the text report on stderr: its Command: headers and its HEAP SUMMARY count.
        func sections(_ stderr: String) -> [String] {
            var byPid: [String: (commands: [String], summaries: Int)] = [:]
            for line in stderr.split(separator: "\n") where line.hasPrefix("==") {
                let parts = line.split(separator: "==", maxSplits: 2, omittingEmptySubsequences: true)
                guard let pid = parts.first, let text = parts.dropFirst().first?.trimmingCharacters(in: .whitespaces) else { continue }
                // Valgrind escapes the spaces inside an argument.
                if text.hasPrefix("Command: ") {
                    byPid[String(pid), default: ([], 0)].commands.append(text.dropFirst(9).replacingOccurrences(of: "\\ ", with: " "))
                }
                if text == "HEAP SUMMARY:" { byPid[String(pid), default: ([], 0)].summaries += 1 }
            }
            return byPid.values.map { "\($0.commands.joined(separator: " | ")): \($0.summaries) summary" }.sorted()
        }
        let expected = try Harness.run([valgrind, "--leak-check=full", "--trace-children=yes"] + command, timeout: 300)
        let (result, images) = try Self.swiftleak(command)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(sections(result.stderr) == sections(expected.stderr), "\(result.stderr)\n---\n\(expected.stderr)")
        #expect(!result.stderr.contains("in use at exec:"), "\(result.stderr)")
        // The JSON still has the fork's copy, replaced by the exec.
        #expect(images.contains { $0.replacedByExec == leaky && $0.command == command })
    }

    @Test("children run through system(), posix_spawn and popen(): one report each, equal to Valgrind's, process by process")
    func spawnedChildren() throws {
        let program = try Harness.build("exec/spawns.c")
        let (result, images) = try Self.swiftleak([program, "parent"], options: ["--error-exitcode=9"])
        #expect(result.status == 9, "\(result.stderr)")
        #expect(result.stdout == "child 1\nchild 2\nthrough popen: child 3\nparent done\n")
        #expect(!result.stderr.contains("Untracked:"), "\(result.stderr)")
        for n in 1...3 {
            let child = images.filter { $0.command == [program, "child", "\(n)"] }
            try #require(child.count == 1, "child \(n): \(images.map(\.command))")
            #expect(child[0].summary == Summary(definite: Report.Count(bytes: 100 + n + 32, blocks: 2), indirect: Report.Count(bytes: 32, blocks: 1)))
        }
        let parent = try #require(images.first)
        #expect(parent.command == [program, "parent"])
        #expect(parent.summary == Summary(definite: Report.Count(bytes: 40, blocks: 1), indirect: Report.Count(bytes: 0, blocks: 0)))
        // The parent and the three children, as Valgrind reports them (the shells in between
        // are compared in shellExec).
        let compared = try Self.expectSameAsValgrind(images, [program, "parent"], compared: { $0.hasPrefix(program) })
        #expect(compared == 4)
    }

    @Test("a program that execs itself for 5 generations: 6 images, each with its own leaks")
    func generations() throws {
        let program = try Harness.build("exec/generations.c")
        let (result, images) = try Self.swiftleak([program, "5"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == (0...5).reversed().map { "generation \($0)\n" }.joined())
        try #require(images.count == 6, "\(result.stderr)")
        for (index, image) in images.enumerated() {
            #expect(image.command == [program, "\(5 - index)"])
            #expect(image.replacedByExec == (index < 5 ? program : nil))
            // Every generation's own blocks were seen: the lost block and the list.
            #expect(image.report.notFreed(allocatedIn: program) == Report.Count(bytes: 100 + (5 - index) + 64, blocks: 3))
        }
        #expect(images[5].summary == Summary(definite: Report.Count(bytes: 132, blocks: 2), indirect: Report.Count(bytes: 32, blocks: 1)))
        try Self.expectSameAsValgrind(images, [program, "5"])
    }

    @Test("a thread other than main execs: the kernel ends the others for it, and the new image is tracked")
    func execFromThread() throws {
        let program = try Harness.build("exec/thread_exec.c")
        let leaky = try Self.leaky
        let (result, images) = try Self.swiftleak([program, leaky], options: ["--error-exitcode=9"])
        #expect(result.status == 9, "\(result.stderr)")
        #expect(result.stdout == "first node: node 2\n")
        try #require(images.count == 2, "\(result.stderr)")
        #expect(images[0].replacedByExec == leaky && images[0].report.notFreed(allocatedIn: program) == Report.Count(bytes: 77, blocks: 1))
        #expect(images[1].summary == Summary(definite: Report.Count(bytes: 42, blocks: 2), indirect: Report.Count(bytes: 64, blocks: 2)))
        try Self.expectSameAsValgrind(images, [program, leaky], compared: { $0.hasPrefix(leaky) })
    }

    @Test("an exec that fails changes nothing: one image, its status, its leaks")
    func failedExec() throws {
        let program = try Harness.build("exec/generations.c")
        let (result, images) = try Self.swiftleak([program, "missing"])
        #expect(result.status == 3)
        #expect(result.stderr.contains("execv: No such file or directory"))
        try #require(images.count == 1)
        #expect(images[0].replacedByExec == nil && images[0].report.scanRan)
        #expect(images[0].summary == Summary(definite: Report.Count(bytes: 55, blocks: 1), indirect: Report.Count(bytes: 0, blocks: 0)))
        #expect(!result.stderr.contains("Untracked:"))
        try Self.expectSameAsValgrind(images, [program, "missing"])
    }

    @Test("a #! script that execs the real binary is tracked through to it")
    func script() throws {
        let leaky = try Self.leaky
        let script = Harness.workDirectory.appendingPathComponent("wrapper-\(UUID().uuidString).sh").path
        try "#!/bin/sh\nexec \(leaky) \"$@\"\n".write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        let (result, images) = try Self.swiftleak([script], options: ["--error-exitcode=9"])
        #expect(result.status == 9, "\(result.stderr)")
        try #require(images.count == 2, "\(result.stderr)")
        #expect(images[0].replacedByExec == leaky)
        #expect(images[1].summary == Summary(definite: Report.Count(bytes: 42, blocks: 2), indirect: Report.Count(bytes: 64, blocks: 2)))
        try Self.expectSameAsValgrind(images, [script])
    }

    @Test("--trace-children=no: the exec'd program runs untracked, as natively, and the run says so")
    func traceChildrenNo() throws {
        let leaky = try Self.leaky
        let (result, images) = try Self.swiftleak(["/bin/sh", "-c", "exec \(leaky)"], options: ["--error-exitcode=9"] + ["--trace-children=no"])
        #expect(result.status == 0)
        #expect(result.stdout == "first node: node 2\n")
        try #require(images.count == 1)
        #expect(images[0].replacedByExec == leaky)
        let untracked = result.stderr.split(separator: "\n").filter { $0.contains("Untracked:") }
        #expect(untracked.count == 1)
        #expect(untracked.first?.hasSuffix("Untracked: 1 program was not tracked, its leaks are not in this report: \(leaky) (pid \(images[0].report.pid), --trace-children=no)") == true,
                "\(result.stderr)")
        // Said under -q too; the option works in Valgrind's command line and in SWIFTLEAK_OPTS.
        let quiet = try Harness.run([Harness.swiftleak, "-q", "--no-trace", "--trace-children=no", "/bin/sh", "-c", "exec \(leaky)"], timeout: 120)
        #expect(quiet.stderr.contains("Untracked: 1 program was not tracked"))
        let environment = ProcessInfo.processInfo.environment.merging(["SWIFTLEAK_OPTS": "--trace-children=no"]) { $1 }
        let fromVariable = try Harness.run([Harness.swiftleak, "-q", "--no-trace", "/bin/sh", "-c", "exec \(leaky)"], timeout: 120,
                                           environment: environment)
        #expect(fromVariable.stderr.contains("(pid ") && fromVariable.stderr.contains(", --trace-children=no)"), "\(fromVariable.stderr)")
    }

    @Test("--trace-children-skip and --trace-children-skip-by-arg: Valgrind's glob patterns")
    func skipPatterns() throws {
        let leaky = try Self.leaky
        let (byPath, pathImages) = try Self.swiftleak(["/bin/sh", "-c", "exec \(leaky)"], options: ["--trace-children-skip=*/nothing,*/demo_leaky*"])
        #expect(pathImages.count == 1)
        #expect(byPath.stderr.contains("(pid \(pathImages.first?.report.pid ?? 0), --trace-children-skip=*/demo_leaky*)"), "\(byPath.stderr)")
        let (byArgument, argumentImages) = try Self.swiftleak(["/bin/sh", "-c", "exec \(leaky) --skip-me"], options: ["--trace-children-skip-by-arg=--skip-*"])
        #expect(argumentImages.count == 1)
        #expect(byArgument.stderr.contains("--trace-children-skip-by-arg=--skip-*)"), "\(byArgument.stderr)")
        let (noMatch, noMatchImages) = try Self.swiftleak(["/bin/sh", "-c", "exec \(leaky)"], options: ["--trace-children-skip=*/nothing"])
        #expect(noMatchImages.count == 2)
        #expect(!noMatch.stderr.contains("Untracked:"))
    }

    @Test("a statically linked program exec'd by a shell cannot be tracked, and the run says so")
    func staticChild() throws {
        let program = try Harness.build("demo/leaky.c", flags: ["-O0", "-g", "-static"], name: "leaky-static")
        let (result, images) = try Self.swiftleak(["/bin/sh", "-c", "exec \(program)"])
        #expect(result.status == 0)
        #expect(result.stdout == "first node: node 2\n")
        #expect(images.count == 1)
        #expect(result.stderr.contains("Untracked: 1 program was not tracked, its leaks are not in this report: \(program) (pid \(images.first?.report.pid ?? 0), statically linked)"),
                "\(result.stderr)")
    }

    @Test("a set-user-ID program exec'd by a shell: the loader ignores LD_PRELOAD for it, and the run says so")
    func setIDChild() throws {
        let path = Harness.workDirectory.appendingPathComponent("leaky-setid-\(UUID().uuidString)").path
        try Harness.makeSetIDCopy(of: try Self.leaky, at: path)
        let (result, images) = try Self.swiftleak(["/bin/sh", "-c", "exec \(path)"])
        #expect(result.status == 0)
        #expect(result.stdout == "first node: node 2\n")
        #expect(images.count == 1)
        #expect(result.stderr.contains("Untracked: 1 program was not tracked, its leaks are not in this report: \(path) (pid \(images.first?.report.pid ?? 0), set-user-ID, set-group-ID or with file capabilities)"),
                "\(result.stderr)")
    }

    /// Runs `sh -c SCRIPT` with $1 = the prefix to run the command under (empty: native) and $2 =
    /// the program, so that bytes that are not UTF-8 can be made by printf.
    static func shell(_ script: String, under prefix: String, program: String) throws -> Harness.Result {
        try Harness.run(["/bin/sh", "-c", script, "sh", prefix, program], timeout: 120)
    }

    @Test("the exec'd program gets exactly the arguments and environment bytes it gets natively, tracked or not",
          arguments: ["", "/lib/x86_64-linux-gnu/libm.so.6"], ["yes", "no"])
    func bytes(userPreload: String, traceChildren: String) throws {
        let program = try Harness.build("exec/print_args_env.c")
        // env -i: the same environment in both runs; a shell between, exec'ing the program with
        // arguments and variables that are not UTF-8, one with a newline, one empty.
        let script = """
            exec $1 /usr/bin/env -i A=1 "LD_PRELOAD=\(userPreload)" "B=$(printf 'caf\\351')" "NL=$(printf 'x\\ny')" /bin/bash -c \
            'export C=$(printf "\\377"); exec "$0" "$(printf "\\377a")" "" "two words"' "$2"
            """
        let native = try Self.shell(script, under: "", program: program)
        #expect(native.status == 0, "\(native.stderr)")
        #expect(native.stdout.contains("env 42 3d 63 61 66 e9"))
        let traced = try Self.shell(script, under: "\(Harness.swiftleak) -q --no-trace --trace-children=\(traceChildren) --", program: program)
        #expect(traced.status == 0, "\(traced.stderr)")
        #expect(traced.stderr.contains("Untracked:") == (traceChildren == "no"), "\(traced.stderr)")
        #expect(traced.stdout == native.stdout)
        #expect(!traced.stdout.contains(" 53 57 49 46 54 4c 45 41 4b"), "no SWIFTLEAK variable")
    }
}
