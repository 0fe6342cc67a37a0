import Foundation
import Testing

/// The trace of a process tree: one stream per process image, read back by `analyze` and `diff`.
@Suite("Trace of a process tree: analyze and diff per process")
struct TraceTreeTests {
    /// Programs that fork (TestPrograms/tree) or exec (TestPrograms/exec): with the program's
    /// path as `{}` where the command needs it again.
    static let cases: [(source: String, command: [String])] = [
        ("tree/forks.c", ["{}", "both"]), ("tree/forks.c", ["{}", "crash"]), ("tree/forks.c", ["{}", "orphan"]),
        ("tree/forks.c", ["{}", "threads"]), ("tree/forks.c", ["{}", "nested"]), ("tree/forks.c", ["{}", "child-only"]),
        ("tree/forks.c", ["{}", "vfork"]), ("tree/forks.c", ["{}", "rawclone"]),
        ("exec/spawns.c", ["{}", "parent"]), ("exec/generations.c", ["{}", "2"]),
        ("exec/thread_exec.c", ["{}", "/bin/true"]), ("exec/generations.c", ["/bin/sh", "-c", "exec {} 1"]),
    ]

    /// A copy of the test program in a directory of its own, so that the test can delete it.
    static func privateCopy(of source: String) throws -> (program: String, directory: URL) {
        let built = try Harness.build(source)
        let directory = Harness.workDirectory.appendingPathComponent("tree-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let program = directory.appendingPathComponent(URL(fileURLWithPath: source).deletingPathExtension().lastPathComponent).path
        try FileManager.default.copyItem(atPath: built, toPath: program)
        return (program, directory)
    }

    static func processes(_ json: String) -> [[String: Any]] {
        let root = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        return root?["processes"] as? [[String: Any]] ?? []
    }

    @Test("analyze --json equals run --json, process for process, record for record, also with the programs deleted",
          arguments: 0..<cases.count)
    func sameReports(_ index: Int) throws {
        let (source, template) = Self.cases[index]
        let (program, directory) = try Self.privateCopy(of: source)
        let command = template.map { $0.replacingOccurrences(of: "{}", with: program) }
        let trace = TraceTests.tracePath()
        let runJSON = trace + ".run.json"
        let run = try Harness.run([Harness.swiftleak, "run", "-o", trace, "--json", runJSON, "--show-leak-kinds=all", "--"] + command,
                                  timeout: 300)
        let runReport = TraceTests.read(runJSON)
        // A vfork child lives in its parent's memory until it leaves: no process of its own.
        #expect(Self.processes(runReport).count >= (template.last == "vfork" ? 1 : 2), "\(command): \(run.stderr)")
        for programsGone in [false, true] {
            if programsGone { try FileManager.default.removeItem(at: directory) }
            let analyzeJSON = trace + ".analyze-\(programsGone).json"
            let analyzed = try Harness.run([Harness.swiftleak, "analyze", "--json", analyzeJSON, "--show-leak-kinds=all", trace],
                                           timeout: 300)
            #expect(analyzed.status == 0, "\(analyzed.stderr)")
            #expect(TraceTests.read(analyzeJSON) == runReport, "\(command), programs gone: \(programsGone)")
        }
    }

    @Test("the text of analyze has every line run printed, each process under its ==PID==, in run's order")
    func textSections() throws {
        let program = try Harness.build("exec/spawns.c")
        let trace = TraceTests.tracePath()
        let run = try Harness.run([Harness.swiftleak, "run", "-o", trace, "--leak-check=full", "--", program, "parent"], timeout: 300)
        let analyzed = try Harness.run([Harness.swiftleak, "analyze", "--leak-check=full", trace], timeout: 300)
        #expect(analyzed.status == 0, "\(analyzed.stderr)")
        let runLines = run.stderr.split(separator: "\n").map(String.init).filter { $0.hasPrefix("==") && !$0.contains(" Trace: ") }
        let pids = Set(runLines.compactMap { $0.split(separator: " ").first })
        #expect(pids.count >= 4, "\(run.stderr)")
        // Every line of run's report comes in analyze's, in the same order (analyze adds each
        // process's heap statistics after its section).
        var remaining = analyzed.stdout.split(separator: "\n").map(String.init)[...]
        for line in runLines {
            guard let found = remaining.firstIndex(of: line) else {
                Issue.record("analyze lacks, or has out of order: \(line)\n\(analyzed.stdout)")
                break
            }
            remaining = remaining[(found + 1)...]
        }
    }

    @Test("--xml-file with %p: analyze writes each process's document as run wrote it; --child-silent-after-fork as run")
    func xmlPerProcess() throws {
        let forks = try Harness.build("tree/forks.c")
        let trace = TraceTests.tracePath()
        let prefix = trace + ".xml"
        let run = try Harness.run([Harness.swiftleak, "run", "-o", trace, "--xml=yes", "--xml-file=\(prefix).run.%p", "--", forks, "both"],
                                  timeout: 300)
        let analyzed = try Harness.run([Harness.swiftleak, "analyze", "--xml=yes", "--xml-file=\(prefix).analyze.%p", trace], timeout: 300)
        #expect(analyzed.status == 0, "\(analyzed.stderr)")
        let pids = Set(run.stderr.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) })
            .map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "=")) }
        #expect(pids.count == 2, "\(run.stderr)")
        // The same documents but for swiftleak's own command line (run's, analyze's) and the
        // status times (the time since swiftleak started, Valgrind's elapsed time).
        func document(_ path: String) -> String {
            var text = TraceTests.read(path)
            if let start = text.range(of: "<vargv>"), let end = text.range(of: "</vargv>") {
                text = String(text[..<start.lowerBound]) + String(text[end.upperBound...])
            }
            return text.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.contains("<time>") }.joined(separator: "\n")
        }
        for pid in pids {
            let written = document("\(prefix).run.\(pid)")
            #expect(written.contains("<pid>\(pid)</pid>"), "\(written)")
            #expect(document("\(prefix).analyze.\(pid)") == written, "pid \(pid)")
        }
        let silent = try Harness.run([Harness.swiftleak, "analyze", "--child-silent-after-fork=yes", trace], timeout: 300)
        let shown = Set(silent.stdout.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) })
        #expect(shown.count == 1, "\(silent.stdout)")
    }

    @Test("the old image's blocks are in use at exec, not errors; --error-exitcode and Untracked: as run")
    func execAndUntracked() throws {
        let threadExec = try Harness.build("exec/thread_exec.c")
        let trace = TraceTests.tracePath()
        // The 77 bytes the old image lost went with it: no error, in run as in analyze.
        let run = try Harness.run([Harness.swiftleak, "run", "-o", trace, "--error-exitcode=9", "--", threadExec, "/bin/true"],
                                  timeout: 300)
        #expect(run.status == 0, "\(run.stderr)")
        let json = trace + ".json"
        let analyzed = try Harness.run([Harness.swiftleak, "analyze", "--error-exitcode=9", "--json", json, trace], timeout: 300)
        #expect(analyzed.status == 0, "\(analyzed.stdout)")
        #expect(analyzed.stdout.contains("in use at exec: "), "\(analyzed.stdout)")
        let old = Self.processes(TraceTests.read(json)).first ?? [:]
        #expect(old["replaced_by_exec"] as? String == "/bin/true", "\(old)")
        let summary = old["summary"] as? [String: [String: Int]] ?? [:]
        #expect((summary["unclassified"]?["bytes"] ?? 0) >= 77, "\(summary)")
        #expect(summary["definitely_lost"]?["bytes"] == 0, "\(summary)")

        // A leak in a child is an error of the run's: in analyze too.
        let forks = try Harness.build("tree/forks.c")
        let childTrace = TraceTests.tracePath()
        let childRun = try Harness.run([Harness.swiftleak, "run", "-o", childTrace, "--error-exitcode=9", "--", forks, "child-only"],
                                       timeout: 300)
        #expect(childRun.status == 9, "\(childRun.stderr)")
        let childAnalyzed = try Harness.run([Harness.swiftleak, "analyze", "--error-exitcode=9", childTrace], timeout: 300)
        #expect(childAnalyzed.status == 9, "\(childAnalyzed.stdout)")

        // Programs the run did not track: the same Untracked line.
        let leaky = try Harness.build("demo/leaky.c")
        let untrackedTrace = TraceTests.tracePath()
        let shell = try Harness.run([Harness.swiftleak, "run", "-o", untrackedTrace, "--trace-children=no", "--",
                                     "/bin/sh", "-c", "\(leaky); true"], timeout: 300)
        let untracked = shell.stderr.split(separator: "\n").first { $0.contains("Untracked: ") }
        #expect(untracked != nil, "\(shell.stderr)")
        let shellAnalyzed = try Harness.run([Harness.swiftleak, "analyze", untrackedTrace], timeout: 300)
        #expect(untracked.map { shellAnalyzed.stdout.contains($0) } == true, "\(shellAnalyzed.stdout)")
    }

    @Test("--pid keeps one process, for the report and --format=folded; an unknown pid is one line and status 1")
    func pidSelector() throws {
        let forks = try Harness.build("tree/forks.c")
        let trace = TraceTests.tracePath()
        let json = trace + ".json"
        _ = try Harness.run([Harness.swiftleak, "run", "-o", trace, "--json", json, "--", forks, "both"], timeout: 300)
        let all = Self.processes(TraceTests.read(json))
        #expect(all.count == 2)
        guard let child = all.last?["pid"] as? Int else { return }
        let one = try Harness.run([Harness.swiftleak, "analyze", "--json", json + ".child", "--pid", "\(child)", trace], timeout: 300)
        #expect(one.status == 0, "\(one.stderr)")
        let selected = Self.processes(TraceTests.read(json + ".child"))
        #expect(selected.count == 1 && selected.first?["pid"] as? Int == child)
        #expect(!one.stdout.contains("==\(all[0]["pid"] as? Int ?? 0)=="), "\(one.stdout)")
        // The child leaks 22 bytes from child_leak, the parent 33 from parent_leak.
        let folded = try Harness.run([Harness.swiftleak, "analyze", "--format=folded", "--pid", "\(child)", trace], timeout: 300)
        #expect(folded.stdout.contains("child_leak"), "\(folded.stdout)")
        #expect(!folded.stdout.contains("parent_leak"), "\(folded.stdout)")
        let foldedAll = try Harness.run([Harness.swiftleak, "analyze", "--format=folded", trace], timeout: 300)
        #expect(foldedAll.stdout.contains("child_leak") && foldedAll.stdout.contains("parent_leak"), "\(foldedAll.stdout)")
        // --at without --pid: every image's snapshot, each under its own ==PID==.
        let snapshot = try Harness.run([Harness.swiftleak, "analyze", "--at", "1000", trace], timeout: 300)
        for process in all {
            let pid = process["pid"] as? Int ?? 0
            #expect(snapshot.stdout.split(separator: "\n").contains { $0.hasPrefix("==\(pid)== ") && $0.contains("LIVE HEAP") },
                    "\(snapshot.stdout)")
        }
        let unknown = try Harness.run([Harness.swiftleak, "analyze", "--pid", "1", trace], timeout: 300)
        #expect(unknown.status == 1)
        #expect(unknown.stderr.hasPrefix("swiftleak: ") && unknown.stderr.split(separator: "\n").count == 1, "\(unknown.stderr)")
    }

    @Test("diff of two tree runs, N=10 and N=20 leaks in the child: +10 blocks in the child only")
    func diffByPosition() throws {
        let program = try Harness.build("trace/forked_sites.c")
        let ten = TraceTests.tracePath(), twenty = TraceTests.tracePath()
        for (trace, n) in [(ten, "10"), (twenty, "20")] {
            let result = try Harness.run([Harness.swiftleak, "run", "-o", trace, "--", program, n], timeout: 300)
            #expect(result.status == 0, "\(result.stderr)")
        }
        let result = try Harness.run([Harness.swiftleak, "diff", "--json", ten, twenty], timeout: 300)
        #expect(result.status == 0, "\(result.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        let processes = object?["processes"] as? [[String: Any]] ?? []
        #expect(processes.count == 2, "\(result.stdout)")
        // The launched programs, matched whatever their pids: no change (also the top-level list).
        #expect((object?["changes"] as? [Any])?.isEmpty == true, "\(result.stdout)")
        #expect((processes.first?["changes"] as? [Any])?.isEmpty == true)
        #expect(processes.first?["base_pid"] as? Int != processes.first?["new_pid"] as? Int)
        // The child: +10 blocks of 40 bytes at child_site.
        let changes = processes.last?["changes"] as? [[String: Any]] ?? []
        #expect(changes.count == 1, "\(result.stdout)")
        #expect(changes.first?["leaked_blocks"] as? Int == 10)
        #expect(changes.first?["leaked_bytes"] as? Int == 400)
        let stack = changes.first?["stack"] as? [[String: Any]] ?? []
        #expect(stack.dropFirst().first?["function"] as? String == "child_site", "\(stack)")
        #expect((processes.last?["position"] as? String)?.contains("> fork ") == true)
        // A process only one side has (the grandchild of `nested`) is compared with nothing.
        let forks = try Harness.build("tree/forks.c")
        let nested = TraceTests.tracePath(), both = TraceTests.tracePath()
        _ = try Harness.run([Harness.swiftleak, "run", "-o", nested, "--", forks, "nested"], timeout: 300)
        _ = try Harness.run([Harness.swiftleak, "run", "-o", both, "--", forks, "both"], timeout: 300)
        let lopsided = try Harness.run([Harness.swiftleak, "diff", "--json", nested, both], timeout: 300)
        let sides = (try JSONSerialization.jsonObject(with: Data(lopsided.stdout.utf8)) as? [String: Any])?["processes"] as? [[String: Any]] ?? []
        #expect(sides.count == 3, "\(lopsided.stdout)")
        let gone = sides.filter { $0["new_pid"] is NSNull }
        #expect(gone.count == 1, "\(lopsided.stdout)")
        let goneChanges = gone.first?["changes"] as? [[String: Any]] ?? []
        #expect(!goneChanges.isEmpty && goneChanges.allSatisfy { ($0["allocations"] as? Int ?? 0) <= 0 }, "\(goneChanges)")
        let text = try Harness.run([Harness.swiftleak, "diff", ten, twenty], timeout: 300)
        #expect(text.stdout.contains("No change"), "\(text.stdout)")
        #expect(text.stdout.contains("+400 bytes in +10 blocks leaked"), "\(text.stdout)")
    }

    @Test("a tree's trace cut inside the child's stream: analyzed up to there, with a warning in each process cut short")
    func truncatedInChild() throws {
        let program = try Harness.build("trace/forked_sites.c")
        let trace = TraceTests.tracePath()
        let run = try Harness.run([Harness.swiftleak, "run", "-o", trace, "--", program, "10", "300000"], timeout: 300)
        #expect(run.status == 0, "\(run.stderr)")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: trace))
        let cut = trace + ".cut.gz"
        // The child's 600,000 events are most of the file: its middle is inside the child's stream.
        for length in [bytes.count / 3, bytes.count / 2, 2 * bytes.count / 3] {
            try bytes.prefix(length).write(to: URL(fileURLWithPath: cut))
            let json = cut + ".json"
            let result = try Harness.run([Harness.swiftleak, "analyze", "--json", json, cut], timeout: 300)
            #expect(result.status == 0, "\(result.stderr)")
            let processes = Self.processes(TraceTests.read(json))
            #expect(processes.count == 2, "cut at \(length): \(result.stdout)")
            for process in processes {
                let warnings = process["warnings"] as? [String] ?? []
                #expect(warnings.contains { $0.hasPrefix("the trace is truncated") }, "cut at \(length): \(warnings)")
            }
        }
    }
}
