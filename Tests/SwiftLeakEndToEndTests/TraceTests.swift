import Foundation
import Testing

/// The trace `run` writes, read back by `analyze` and `diff`.
@Suite("Trace: run writes, analyze and diff read")
struct TraceTests {
    static func tracePath() -> String {
        Harness.workDirectory.appendingPathComponent("trace-\(UUID().uuidString).gz").path
    }

    static func read(_ path: String) -> String {
        (try? String(contentsOfFile: path, encoding: .utf8)) ?? "<missing \(path)>"
    }

    /// Runs `program` with a trace and a JSON report, then `analyze --json` on the trace (after
    /// `beforeAnalyze`), and returns both JSON texts.
    static func runAndAnalyze(_ program: String, _ arguments: [String], options: [String] = [],
                              beforeAnalyze: () throws -> Void = {}) throws -> (run: String, analyze: String, analyzeOutput: Harness.Result) {
        let trace = tracePath()
        let runJSON = trace + ".run.json", analyzeJSON = trace + ".analyze.json"
        _ = try Harness.run([Harness.swiftleak, "run", "-o", trace, "--json", runJSON] + options + ["--", program] + arguments)
        try beforeAnalyze()
        let analyzed = try Harness.run([Harness.swiftleak, "analyze", "--json", analyzeJSON] + options + [trace])
        #expect(analyzed.status == 0, "\(analyzed.stderr)")
        return (read(runJSON), read(analyzeJSON), analyzed)
    }

    static let families: [(source: String, arguments: [String])] = [
        ("scan/scan_cases.c", ["tree"]), ("scan/scan_cases.c", ["cycle3"]), ("scan/scan_cases.c", ["interior"]),
        ("scan/scan_cases.c", ["globals"]), ("scan/scan_cases.c", ["thread-stack"]),
        ("scan/exit_paths.c", ["exit"]), ("scan/exit_paths.c", ["abort"]), ("scan/exit_paths.c", ["_exit"]),
        ("pipeline/cxx_family.cpp", []), ("pipeline/alloc_family.c", []), ("pipeline/threads.c", ["4", "200", "3"]),
        ("stacks/swift_objects.swift", []), ("scan/swift_cycles.swift", []),
        ("pipeline/behaviour.c", ["kill"]), ("pipeline/behaviour.c", ["exec"]),
    ]

    @Test("analyze --json equals run --json, record for record", arguments: 0..<families.count)
    func sameReport(_ index: Int) throws {
        let family = Self.families[index]
        let program = try Harness.build(family.source)
        let (run, analyze, _) = try Self.runAndAnalyze(program, family.arguments, options: ["--show-leak-kinds=all"])
        #expect(run.contains("\"loss_records\""), "\(family.source): \(run)")
        #expect(analyze == run, "\(family.source) \(family.arguments)")
    }

    @Test("a dlopen'd library's frames: analyze equals run with the library gone")
    func dlopenWithLibraryGone() throws {
        let directory = Harness.workDirectory.appendingPathComponent("gone-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let plugin = directory.appendingPathComponent("libplugin.so").path
        let build = try Harness.run(["/usr/bin/env", "cc", "-O0", "-g", "-shared", "-fPIC", "-o", plugin,
                                     Harness.testPrograms.appendingPathComponent("stacks/plugin.c").path])
        #expect(build.status == 0, "\(build.stderr)")
        let program = directory.appendingPathComponent("main_dlopen").path
        try FileManager.default.copyItem(atPath: try Harness.build("stacks/main_dlopen.c"), toPath: program)
        let (run, analyze, _) = try Self.runAndAnalyze(program, [plugin], options: ["--show-leak-kinds=all"]) {
            try FileManager.default.removeItem(at: directory)
        }
        #expect(run.contains("plugin_alloc"))
        #expect(analyze == run)
    }

    @Test("the program's __lsan_default_suppressions() is in the trace: analyze applies it with the program gone")
    func programSuppressions() throws {
        let directory = Harness.workDirectory.appendingPathComponent("lsan-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let program = directory.appendingPathComponent("lsan_defaults").path
        try FileManager.default.copyItem(atPath: try Harness.build("suppressions/lsan_defaults.c"), toPath: program)
        let (run, analyze, analyzed) = try Self.runAndAnalyze(program, [], options: ["-v"]) {
            try FileManager.default.removeItem(at: directory)
        }
        #expect(run.contains("\"suppressed_by\": \"leak:known_cache_fill\""), "\(run)")
        #expect(analyze == run)
        #expect(analyzed.stdout.contains("leak:known_cache_fill \(program): __lsan_default_suppressions():2 suppressed: 48 bytes in 1 blocks"),
                "\(analyzed.stdout)")
        // With the defaults off, analyze does not apply it either, as run would not.
        let trace = Self.tracePath()
        let again = directory.path + "-again"
        try FileManager.default.createDirectory(atPath: again, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: try Harness.build("suppressions/lsan_defaults.c"), toPath: again + "/lsan_defaults")
        _ = try Harness.run([Harness.swiftleak, "run", "-o", trace, "--", again + "/lsan_defaults"])
        let off = try Harness.run([Harness.swiftleak, "analyze", "--default-suppressions=no", trace])
        #expect(off.stdout.contains("definitely lost: 64 bytes in 2 blocks"), "\(off.stdout)")
    }

    @Test("the JSON report says how long the program was held at its exit: the scan and more; 0 without an exit stop")
    func exitFreeze() throws {
        let program = try Harness.build("scan/scan_cases.c")
        let (result, maybeReport) = try Harness.swiftleak(program, ["tree"])
        let report = try #require(maybeReport, "\(result.stderr)")
        #expect(report.scanRan)
        #expect(report.scanSeconds > 0)
        #expect(report.freezeSeconds >= report.scanSeconds, "freeze \(report.freezeSeconds) s, scan \(report.scanSeconds) s")
        let (_, execReport) = try Harness.swiftleak(try Harness.build("pipeline/behaviour.c"), ["exec"])
        #expect(try #require(execReport).freezeSeconds == 0)
    }

    @Test("the text report of analyze is run's, followed by heap statistics")
    func textReport() throws {
        let program = try Harness.build("scan/scan_cases.c")
        let trace = Self.tracePath()
        let ran = try Harness.run([Harness.swiftleak, "run", "-o", trace, "--", program, "tree"])
        #expect(ran.stderr.contains("Trace: \(trace)"))
        let analyzed = try Harness.run([Harness.swiftleak, "analyze", trace])
        let runLines = ran.stderr.split(separator: "\n").filter { $0.hasPrefix("==") && !$0.contains("Trace: ") }
        let analyzeLines = analyzed.stdout.split(separator: "\n")
        #expect(Array(analyzeLines.prefix(runLines.count)) == runLines)
        for heading in ["HEAP STATISTICS:", "MOST CALLS:", "MOST BYTES LEAKED:", "ALLOCATION SIZES:", "peak heap:", "peak RSS:"] {
            #expect(analyzed.stdout.contains(heading), "\(heading) missing in \(analyzed.stdout)")
        }
    }

    @Test("analyze's top lists rank the sites by their own figure, biggest first")
    func topListsRanked() throws {
        let program = try Harness.build("trace/ranked_sites.c")
        let trace = Self.tracePath()
        _ = try Harness.run([Harness.swiftleak, "run", "-q", "-o", trace, "--", program])
        let analyzed = try Harness.run([Harness.swiftleak, "analyze", trace]).stdout
        // 12 x 16 B, 7 x 100 B and 3 x 4096 B: the two lists' orders are each other's reverse.
        #expect(Array(Self.figures(under: "MOST CALLS:", in: analyzed).prefix(3)) == [12, 7, 3], "\(analyzed)")
        #expect(Array(Self.figures(under: "MOST BYTES ALLOCATED:", in: analyzed).prefix(3)) == [12288, 700, 192], "\(analyzed)")
    }

    /// The leading figure of each entry under `heading` in analyze's text ("  2,120 calls, ..."), in
    /// the order printed.
    static func figures(under heading: String, in text: String) -> [UInt64] {
        var figures: [UInt64] = []
        var inside = false
        for line in text.split(separator: "\n") {
            guard let prefixEnd = line.range(of: "== ") else { continue }
            let body = line[prefixEnd.upperBound...]
            if !body.hasPrefix(" ") && body.hasSuffix(":") {
                inside = body == heading
            } else if inside && body.hasPrefix("  ") && !body.hasPrefix("   ") {
                let digits = body.drop { $0 == " " }.prefix { $0.isNumber || $0 == "," }.filter { $0 != "," }
                if let figure = UInt64(digits) { figures.append(figure) }
            }
        }
        return figures
    }

    @Test("the default trace name is swiftleak.<program>.<pid>.gz in the working directory; --no-trace writes none")
    func defaultName() throws {
        let program = try Harness.build("scan/scan_cases.c")
        let result = try Harness.run([Harness.swiftleak, "run", "--", program, "tree"])
        let pid = try #require(result.stderr.split(separator: "=").first.flatMap { Int32($0) })
        let name = "swiftleak.\(URL(fileURLWithPath: program).lastPathComponent).\(pid).gz"
        #expect(FileManager.default.fileExists(atPath: Harness.workDirectory.appendingPathComponent(name).path))
        let quiet = try Harness.run([Harness.swiftleak, "run", "--no-trace", "--", program, "tree"])
        let quietPid = try #require(quiet.stderr.split(separator: "=").first.flatMap { Int32($0) })
        let quietName = "swiftleak.\(URL(fileURLWithPath: program).lastPathComponent).\(quietPid).gz"
        #expect(!FileManager.default.fileExists(atPath: Harness.workDirectory.appendingPathComponent(quietName).path))
        #expect(!quiet.stderr.contains("Trace:"))
    }

    @Test("an unwritable -o is refused before the program starts")
    func unwritableOutput() throws {
        let program = try Harness.build("pipeline/behaviour.c")
        let marker = Harness.workDirectory.appendingPathComponent("started-\(UUID().uuidString)").path
        let result = try Harness.run([Harness.swiftleak, "run", "-o", "/nonexistent/dir/trace.gz", "--", "/bin/sh", "-c", "touch \(marker)"])
        _ = program
        #expect(result.status != 0)
        #expect(result.stderr.contains("/nonexistent/dir/trace.gz"))
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: marker))
    }

    @Test("a trace that is not one, or a missing file, gives one line and status 1")
    func badInput() throws {
        let junk = Harness.workDirectory.appendingPathComponent("junk-\(UUID().uuidString).gz").path
        try Data("not a trace at all\n".utf8).write(to: URL(fileURLWithPath: junk))
        for path in [junk, "/nonexistent/trace.gz"] {
            for command in [["analyze", path], ["diff", path, path]] {
                let result = try Harness.run([Harness.swiftleak] + command)
                #expect(result.status == 1)
                #expect(result.stderr.hasPrefix("swiftleak: "))
                #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
            }
        }
    }

    @Test("a trace cut short analyzes up to its last complete record and says so")
    func truncatedTrace() throws {
        let program = try Harness.build("scan/scan_cases.c")
        let trace = Self.tracePath()
        _ = try Harness.run([Harness.swiftleak, "run", "-o", trace, "--", program, "list"])
        let bytes = try Data(contentsOf: URL(fileURLWithPath: trace))
        let cut = trace + ".cut.gz"
        for length in [bytes.count / 3, bytes.count / 2, bytes.count - 20] {
            try bytes.prefix(length).write(to: URL(fileURLWithPath: cut))
            let result = try Harness.run([Harness.swiftleak, "analyze", cut])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout.contains("Warning: the trace is"), "\(result.stdout)")
            #expect(result.stdout.contains("HEAP SUMMARY:"))
        }
    }

    static func diffJSON(_ base: String, _ new: String, _ options: [String] = []) throws -> [[String: Any]] {
        let result = try Harness.run([Harness.swiftleak, "diff", "--json"] + options + [base, new])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        return object?["changes"] as? [[String: Any]] ?? []
    }

    @Test("diff of N=10 against N=20: +10 blocks on exactly the two leaking stacks; the same input: no change")
    func diffTwoSites() throws {
        let program = try Harness.build("trace/two_sites.c")
        let ten = Self.tracePath(), twenty = Self.tracePath(), tenAgain = Self.tracePath()
        for (trace, n) in [(ten, "10"), (twenty, "20"), (tenAgain, "10")] {
            let result = try Harness.run([Harness.swiftleak, "run", "-o", trace, "--", program, n])
            #expect(result.status == 0, "\(result.stderr)")
        }
        let changes = try Self.diffJSON(ten, twenty)
        #expect(changes.count == 2, "\(changes)")
        var functions: Set<String> = []
        for change in changes {
            #expect(change["leaked_blocks"] as? Int == 10)
            #expect(change["allocations"] as? Int == 10)
            let stack = change["stack"] as? [[String: Any]] ?? []
            if let caller = stack.dropFirst().first?["function"] as? String { functions.insert(caller) }
        }
        #expect(functions == ["site_a", "site_b"])
        let bytes = Set(changes.compactMap { $0["leaked_bytes"] as? Int })
        #expect(bytes == [240, 400])
        #expect(try Self.diffJSON(ten, tenAgain).isEmpty)
        let text = try Harness.run([Harness.swiftleak, "diff", ten, tenAgain])
        #expect(text.stdout.contains("No change"))
    }

    @Test("an unbounded cache is a growth suspect at its insertion site; the scratch buffers are not")
    func growthSuspect() throws {
        let program = try Harness.build("trace/growing_cache.c")
        let trace = Self.tracePath()
        let ran = try Harness.run([Harness.swiftleak, "run", "-o", trace, "--", program, "200"])
        #expect(ran.stderr.contains("Growth suspects: 1 stack"), "\(ran.stderr)")
        let json = trace + ".json"
        let analyzed = try Harness.run([Harness.swiftleak, "analyze", "--json", json, trace])
        #expect(analyzed.stdout.contains("GROWTH SUSPECTS (reachable at exit"))
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any]
        let process = (object?["processes"] as? [[String: Any]])?.first
        let suspects = process?["growth_suspects"] as? [[String: Any]] ?? []
        #expect(suspects.count == 1, "\(suspects)")
        let stack = suspects.first?["stack"] as? [[String: Any]] ?? []
        #expect(stack.first?["function"] as? String == "cache_insert")
        #expect(suspects.first?["blocks"] as? Int == 200)
        #expect((suspects.first?["bytes_per_second"] as? Double ?? 0) > 0)
    }

    @Test("--at gives the live heap at that moment; folded stacks carry the weights")
    func snapshotAndFolded() throws {
        let program = try Harness.build("trace/growing_cache.c")
        let trace = Self.tracePath()
        _ = try Harness.run([Harness.swiftleak, "run", "-o", trace, "--", program, "200"])
        // A moment between the first insert and the last, found in the trace itself: no fixed
        // moment (0.05 s, or half the runtime) is sure to fall there, since the start-up's share
        // of the run grows with the machine's load (at load 11 half the runtime came before the
        // first insert). The cache only grows, so the count at a moment is monotonic and a
        // bisection between the start (none) and the end (all 200) finds one: the program sleeps
        // 2 ms between inserts and the trace's clock moves in steps of 1 ms.
        let whole = try Harness.run([Harness.swiftleak, "analyze", trace])
        // "==PID==     runtime: 0.55 s"
        let runtimeLine = whole.stdout.split(separator: "\n").first { $0.contains("runtime: ") }
        let runtime = try #require(runtimeLine.flatMap { Double($0.split(separator: " ").dropLast().last ?? "") },
                                   "\(whole.stdout)")
        func cacheBlocks(_ text: String) -> Int? {
            // "N bytes in B blocks" followed by the interposer line and "by …: cache_insert".
            let lines = text.split(separator: "\n").map(String.init)
            guard let index = lines.firstIndex(where: { $0.contains("cache_insert") }), index >= 2 else { return nil }
            let words = lines[index - 2].split(separator: " ")
            return words.firstIndex(of: "in").flatMap { Int(words[$0 + 1].replacingOccurrences(of: ",", with: "")) }
        }
        func cacheBlocks(at moment: Double) throws -> Int {
            let snapshot = try Harness.run([Harness.swiftleak, "analyze", "--at", String(moment), trace])
            // No loss record names cache_insert before its first block.
            return cacheBlocks(snapshot.stdout) ?? 0
        }
        var before = 0.0, after = runtime
        var middle = runtime / 2
        var earlyBlocks = try cacheBlocks(at: middle)
        var halvings = 0
        while earlyBlocks == 0 || earlyBlocks == 200, halvings < 40 {
            if earlyBlocks == 0 { before = middle } else { after = middle }
            middle = (before + after) / 2
            earlyBlocks = try cacheBlocks(at: middle)
            halvings += 1
        }
        #expect(earlyBlocks > 0 && earlyBlocks < 200, "no moment with part of the cache between 0 and \(runtime) s")
        let late = try Harness.run([Harness.swiftleak, "analyze", "--at", "1000", trace])
        #expect(cacheBlocks(late.stdout) == 200)
        let folded = try Harness.run([Harness.swiftleak, "analyze", "--format=folded", "--weight=allocations", trace])
        let line = try #require(folded.stdout.split(separator: "\n").first { $0.contains("cache_insert;malloc") })
        #expect(line.hasSuffix(" 200"))
        #expect(line.hasPrefix("main;"))
        let diff = try Self.diffJSON(trace, trace, ["--at", String(middle), "--new-at", "1000"])
        let cache = diff.first { ($0["stack"] as? [[String: Any]])?.dropFirst().first?["function"] as? String == "cache_insert" }
        #expect(cache?["leaked_blocks"] as? Int == 200 - earlyBlocks)
    }
}
