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

    /// Kills `process` if it is still running after 120 s (far above the termination tests' few).
    static func watchdog(_ process: Process) -> DispatchSourceTimer {
        let watchdog = DispatchSource.makeTimerSource()
        watchdog.schedule(deadline: .now() + 120)
        watchdog.setEventHandler { kill(process.processIdentifier, SIGKILL) }
        watchdog.resume()
        return watchdog
    }

    /// Reads `pipe` into `seen` until it holds `expected` (or the pipe ends).
    static func read(_ pipe: Pipe, into seen: inout String, until expected: String) {
        while !seen.contains(expected) {
            let data = pipe.fileHandleForReading.availableData
            if data.isEmpty { return }
            seen += String(decoding: data, as: UTF8.self)
        }
    }

    @Test("a program that outlives a termination request: a second one ends swiftleak with its report")
    func secondTerminationRequestEnds() throws {
        let (process, input, output, errors) = try NeverHarmTests.startWaitingProgram("term-caught", options: ["--no-trace"])
        let watchdog = Self.watchdog(process)
        defer { watchdog.cancel() }

        var seen = ""
        func readLine(_ expected: String) { Self.read(output, into: &seen, until: expected) }
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
        // It caught the request and ran on: it did not die of it.
        #expect(!report.contains("Process terminating"), "\(report)")
        #expect(report.contains("33 bytes in 1 blocks"), "\(report)")
        #expect(report.contains("LEAK SUMMARY"), "\(report)")
    }

    @Test("a termination request while swiftleak holds the program's threads at a stop of its own: after 2 s, the report and death by that signal")
    func terminationWhileThreadsHeld() throws {
        // held-main: main leaves by pthread_exit, which swiftleak holds at its exit stop for as long
        // as the process runs on; the other thread says "ready" only once main is held there, then
        // reads its input. SIGTERM is ignored by the program, so it cannot end: only swiftleak's
        // grace period can.
        let (process, input, output, errors) = try NeverHarmTests.startWaitingProgram("held-main", options: ["--no-trace"])
        let watchdog = Self.watchdog(process)
        defer { watchdog.cancel() }

        var seen = ""
        Self.read(output, into: &seen, until: "ready\n")
        let program = seen.split(separator: "\n").first { $0.hasPrefix("pid ") }.flatMap { Int32($0.dropFirst(4)) }
        defer { if let program { kill(program, SIGKILL) } }
        #expect(seen.hasSuffix("main has left\nready\n"), "\(seen)")
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        // swiftleak is gone, the program untraced: it ends at the end of its input.
        try input.fileHandleForWriting.close()
        let report = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationReason == .uncaughtSignal, "\(report)")
        #expect(process.terminationStatus == SIGTERM, "\(report)")
        // The exit work ran with the threads swiftleak held: the blocks were scanned.
        #expect(report.contains("LEAK SUMMARY"), "\(report)")
        #expect(report.contains("definitely lost: 33 bytes in 1 blocks"), "\(report)")
        #expect(!report.contains("No leak classification"), "\(report)")
        // The program did not die (it ignores SIGTERM): the report says what happened instead.
        #expect(!report.contains("Process terminating"), "\(report)")
        #expect(report.contains("swiftleak was ended by signal 15 while this process ran on"), "\(report)")
    }

    // MARK: Forked children

    static func forks() throws -> String { try Harness.build("tree/forks.c") }

    /// swiftleak on `forks MODE`: the run and every process's report, in the JSON's order.
    static func traced(_ mode: String, options: [String] = []) throws -> (Harness.Result, [Report]) {
        let json = Harness.workDirectory.appendingPathComponent("tree-\(UUID().uuidString).json").path
        let result = try Harness.run([Harness.swiftleak, "run", "--no-trace", "--json", json] + options + ["--", try forks(), mode],
                                     timeout: 120)
        defer { try? FileManager.default.removeItem(atPath: json) }
        let reports = (try? Data(contentsOf: URL(fileURLWithPath: json))).flatMap { try? Report.processes(json: $0) } ?? []
        return (result, reports)
    }

    /// One process's figures, placed in the tree by its depth (0: the launched program).
    struct Figures: Equatable, Comparable, CustomStringConvertible {
        var depth: Int
        var definite: Report.Count
        var indirect: Report.Count
        var description: String { "depth \(depth): definite \(definite), indirect \(indirect)" }
        static func < (a: Figures, b: Figures) -> Bool {
            (a.depth, a.definite.bytes, a.indirect.bytes) < (b.depth, b.definite.bytes, b.indirect.bytes)
        }
    }

    static func depths(_ parents: [Int: Int]) -> [Int: Int] {
        parents.keys.reduce(into: [:]) { depths, pid in
            var depth = 0, current = pid
            while let parent = parents[current], parents[parent] != nil { depth += 1; current = parent }
            depths[pid] = depth
        }
    }

    static func figures(_ reports: [Report], withoutInFlightFrom thread: String? = nil) -> [Figures] {
        let depth = depths(Dictionary(uniqueKeysWithValues: reports.map { ($0.pid, $0.ppid) }))
        return reports.map { report in
            var definite = report.summary["definitely_lost"] ?? Report.Count(bytes: -1, blocks: -1)
            if let thread, depth[report.pid] ?? 0 > 0 {
                let raced = total(of: report.lossRecords.filter { $0.kind == "definitely_lost" }, through: thread)
                definite = Report.Count(bytes: definite.bytes - raced.bytes, blocks: definite.blocks - raced.blocks)
            }
            return Figures(depth: depth[report.pid] ?? -1, definite: definite,
                           indirect: report.summary["indirectly_lost"] ?? Report.Count(bytes: -1, blocks: -1))
        }.sorted()
    }

    /// In `threads`, the child is forked while two threads allocate and free blocks of 64-127
    /// bytes: a block one of them had allocated and not yet freed at that instant stays the
    /// child's for good with no pointer left to it (the thread is not in the child), so it is
    /// definitely lost there, under Valgrind as under swiftleak, whenever the fork lands in that
    /// window (often on two cores; rarely under Valgrind, which runs one thread at a time). The
    /// figures are compared without such blocks: at most one per thread in each child, nothing
    /// else of that thread's, and none in the launched program.
    static func inFlightBlocks(_ reports: [Report], from thread: String) -> [Report.Count] {
        let depth = depths(Dictionary(uniqueKeysWithValues: reports.map { ($0.pid, $0.ppid) }))
        return reports.filter { depth[$0.pid] ?? 0 > 0 }.map { total(of: $0.lossRecords, through: thread) }
    }

    /// The bytes and blocks of the records whose stack passes through `function`.
    static func total(of records: [Report.LossRecord], through function: String) -> Report.Count {
        records.filter { $0.stack.contains { $0.function == function } }
            .reduce(Report.Count(bytes: 0, blocks: 0)) { Report.Count(bytes: $0.bytes + $1.bytes, blocks: $0.blocks + $1.blocks) }
    }

    /// Valgrind --trace-children=yes with one log per process (--log-file=…%p): each process's
    /// definite and indirect figures.
    static func valgrindFigures(_ mode: String, withoutInFlightFrom thread: String? = nil) throws -> [Figures] {
        let valgrind = try #require(SuppressionEndToEndTests.valgrindPath, "valgrind is needed (scripts/install-deps installs it)")
        let directory = Harness.workDirectory.appendingPathComponent("vg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try Harness.run([valgrind, "--leak-check=full", "--trace-children=yes",
                                      "--log-file=\(directory.path)/log.%p", try forks(), mode], timeout: 300)
        #expect(result.signal == nil)
        var parents: [Int: Int] = [:]
        var summaries: [Int: ValgrindDifferentialTests.Summary] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: directory.path) {
            let text = try String(contentsOfFile: directory.appendingPathComponent(name).path, encoding: .utf8)
            guard let pid = Int(name.dropFirst("log.".count)) else { continue }
            let parentLine = text.split(separator: "\n").first { $0.contains("Parent PID: ") }
            parents[pid] = parentLine.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
            summaries[pid] = ValgrindDifferentialTests.valgrindSummary(text)
            if let thread {
                let raced = Self.valgrindDefinitelyLost(in: text, from: thread)
                summaries[pid]?.definite.bytes -= raced.bytes
                summaries[pid]?.definite.blocks -= raced.blocks
            }
        }
        let depth = depths(parents)
        return summaries.map { Figures(depth: depth[$0.key] ?? -1, definite: $0.value.definite, indirect: $0.value.indirect) }.sorted()
    }

    /// The definitely lost loss records of a Valgrind log whose stack passes through `function`.
    static func valgrindDefinitelyLost(in log: String, from function: String) -> Report.Count {
        var total = Report.Count(bytes: 0, blocks: 0)
        let lines = log.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            // "==PID== " prefixes every line.
            line.split(separator: " ", maxSplits: 1).dropFirst().first.map(String.init) ?? ""
        }
        // Records with indirect bytes ("N (D direct, I indirect) bytes") are not these.
        for (index, line) in lines.enumerated() where line.contains(" are definitely lost in loss record ") && !line.contains(" direct, ") {
            let words = line.split(separator: " ")
            guard words.count > 3, let bytes = Int(words[0].filter(\.isNumber)), let blocks = Int(words[3].filter(\.isNumber)) else { continue }
            let stack = lines[(index + 1)...].prefix { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
            if stack.contains(where: { $0.contains(": \(function) (") }) {
                total = Report.Count(bytes: total.bytes + bytes, blocks: total.blocks + blocks)
            }
        }
        return total
    }

    /// Each log's `Parent PID:` (0 when it has none), by the pid its `%p` name holds.
    static func parentLines(in directory: URL, prefix: String) throws -> [Int: Int] {
        var parents: [Int: Int] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: directory.path) where name.hasPrefix(prefix) {
            guard let pid = Int(name.dropFirst(prefix.count)) else { continue }
            let text = try String(contentsOfFile: directory.appendingPathComponent(name).path, encoding: .utf8)
            let lines = text.split(separator: "\n")
            // Right after the Command: line, as Valgrind prints it.
            if let index = lines.firstIndex(where: { $0.contains(" Parent PID: ") }), index > 0, lines[index - 1].contains(" Command: ") {
                parents[pid] = Int(lines[index].split(separator: " ").last ?? "") ?? -1
            } else {
                parents[pid] = 0
            }
        }
        return parents
    }

    /// Every XML document's `<pid>` → `<ppid>` (Valgrind's fork child writes its document into
    /// its parent's file, which it inherits; ours gets a file of its own).
    static func xmlParents(in directory: URL, prefix: String) throws -> [Int: Int] {
        var parents: [Int: Int] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: directory.path) where name.hasPrefix(prefix) {
            let text = try String(contentsOfFile: directory.appendingPathComponent(name).path, encoding: .utf8)
            var rest = text[...]
            func next(_ tag: String) -> Int? {
                guard let open = rest.range(of: "<\(tag)>"), let close = rest.range(of: "</\(tag)>", range: open.upperBound..<rest.endIndex) else { return nil }
                defer { rest = rest[close.upperBound...] }
                return Int(rest[open.upperBound..<close.lowerBound])
            }
            while let pid = next("pid") { parents[pid] = next("ppid") ?? 0 }
        }
        return parents
    }

    @Test("a report in a log file says Parent PID as Valgrind's does (the launched program's is the runner's), XML's <ppid> too; stderr's header has none")
    func parentPID() throws {
        let valgrind = try #require(SuppressionEndToEndTests.valgrindPath, "valgrind is needed (scripts/install-deps installs it)")
        let directory = Harness.workDirectory.appendingPathComponent("ppid-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let me = Int(getpid())
        // Text and XML in runs of their own: Valgrind writes no text log with --xml=yes.
        for output in ["--log-file=\(directory.path)/vg.%p", "--xml=yes --xml-file=\(directory.path)/vgx.%p"] {
            let valgrindRun = try Harness.run([valgrind, "--leak-check=full", "--trace-children=yes"]
                                              + output.split(separator: " ").map(String.init) + [try Self.forks(), "both"], timeout: 300)
            #expect(valgrindRun.status == 0)
        }
        for output in ["--log-file=\(directory.path)/sl.%p", "--xml=yes --xml-file=\(directory.path)/slx.%p"] {
            let run = try Harness.run([Harness.swiftleak, "run", "--no-trace"] + output.split(separator: " ").map(String.init)
                                      + ["--", try Self.forks(), "both"], timeout: 120)
            #expect(run.status == 0, "\(run.stderr)")
        }
        /// The tree's shape: the launched program's parent is the runner (this test), the child's
        /// is the launched program.
        func shape(_ parents: [Int: Int]) -> [String] {
            parents.map { pid, parent in
                parent == me ? "launched, parent: the runner"
                    : parents[parent] == me ? "child of the launched program" : "pid \(pid): parent \(parent)"
            }.sorted()
        }
        let expected = ["child of the launched program", "launched, parent: the runner"]
        #expect(shape(try Self.parentLines(in: directory, prefix: "vg.")) == expected)
        #expect(shape(try Self.xmlParents(in: directory, prefix: "vgx.")) == expected)
        #expect(shape(try Self.parentLines(in: directory, prefix: "sl.")) == expected)
        #expect(shape(try Self.xmlParents(in: directory, prefix: "slx.")) == expected)
        // On stderr Valgrind prints no Parent PID line; neither do we.
        let onStderr = try Harness.run([Harness.swiftleak, "run", "--no-trace", "--", try Self.forks(), "both"], timeout: 120)
        #expect(onStderr.stderr.contains("Command: "), "\(onStderr.stderr)")
        #expect(!onStderr.stderr.contains("Parent PID"), "\(onStderr.stderr)")
    }

    @Test("parent and forked child both leak: one report each, figures equal Valgrind's per process",
          arguments: ["both", "nested", "threads"])
    func forkedChildrenAsValgrind(mode: String) throws {
        let (result, reports) = try Self.traced(mode)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(reports.count == (mode == "nested" ? 3 : 2), "\(result.stderr)")
        #expect(reports.allSatisfy { $0.scanRan }, "\(result.stderr)")
        // `threads` forks while threads allocate: see inFlightBlocks.
        let inFlight = mode == "threads" ? "allocating_thread" : nil
        let expected = try Self.valgrindFigures(mode, withoutInFlightFrom: inFlight)
        #expect(Self.figures(reports, withoutInFlightFrom: inFlight) == expected, "\(result.stderr)")
        if let inFlight {
            for raced in Self.inFlightBlocks(reports, from: inFlight) {
                #expect(raced.blocks <= 2 && raced.bytes >= 64 * raced.blocks && raced.bytes <= 127 * raced.blocks,
                        "more than the blocks in flight at the fork: \(raced)\n\(result.stderr)")
            }
        }
        // The launched program comes first, its children name it as their parent.
        #expect(reports.first?.pid == reports.dropFirst().first?.ppid)
    }

    @Test("a child inherits its parent's blocks: the inherited block it drops is its leak, not the parent's")
    func inheritedBlocks() throws {
        let (result, reports) = try Self.traced("both")
        let parent = try #require(reports.first, "\(result.stderr)")
        let child = try #require(reports.dropFirst().first, "\(result.stderr)")
        func sizes(_ report: Report) -> [Int] {
            report.lossRecords.filter { $0.kind == "definitely_lost" }.map(\.bytes).sorted()
        }
        #expect(sizes(parent) == [11, 33])
        #expect(sizes(child) == [11, 22, 100])
        // The text report: one section per process, each under its own ==PID== with its header.
        for report in reports {
            #expect(result.stderr.contains("==\(report.pid)== Command: "), "\(result.stderr)")
            #expect(result.stderr.contains("==\(report.pid)== LEAK SUMMARY:"), "\(result.stderr)")
        }
    }

    @Test("a fork child leaking from a call path its parent used before the fork: the stack is the child's own")
    func childStackFromParentsPath() throws {
        let (result, reports) = try Self.traced("samesite")
        #expect(result.status == 0, "\(result.stderr)")
        let parent = try #require(reports.first, "\(result.stderr)")
        let child = try #require(reports.dropFirst().first, "\(result.stderr)")
        #expect(parent.lossRecords.filter { $0.kind == "definitely_lost" }.isEmpty, "\(result.stderr)")
        let leaks = child.lossRecords.filter { $0.kind == "definitely_lost" }
        #expect(leaks.map(\.bytes) == [55], "\(result.stderr)")
        // The parent's thread knew this stack (and its id in the parent's ring) when it forked.
        let functions = leaks.first?.stack.compactMap(\.function) ?? []
        #expect(Array(functions.prefix(4)) == ["malloc", "shared_site", "shared_rounds", "main"], "\(functions)")
    }

    @Test("a fork child that crashes: its report says so, the parent's is unharmed")
    func crashingChild() throws {
        let (result, reports) = try Self.traced("crash")
        #expect(result.stdout == "child signal 11\n")
        #expect(result.status == 0)
        #expect(reports.count == 2)
        let child = try #require(reports.dropFirst().first)
        #expect(child.exit["signal"] == 11)
        #expect(child.summary["definitely_lost"] == Report.Count(bytes: 22, blocks: 1))
        #expect(reports.first?.summary["definitely_lost"] == Report.Count(bytes: 33, blocks: 1))
        #expect(result.stderr.contains("==\(child.pid)== Process terminating with default action of signal 11 (SIGSEGV)"))
    }

    @Test("a parent that exits before its child: the orphan's report still comes")
    func orphan() throws {
        let (result, reports) = try Self.traced("orphan")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(reports.count == 2, "\(result.stderr)")
        #expect(reports.first?.summary["definitely_lost"] == Report.Count(bytes: 33, blocks: 1))
        #expect(reports.dropFirst().first?.summary["definitely_lost"] == Report.Count(bytes: 22, blocks: 1))
        let expected = try Self.valgrindFigures("orphan")
        #expect(Self.figures(reports) == expected)
    }

    @Test("--follow-forks=no: the child runs untraced, the run says so in one line")
    func followForksNo() throws {
        let (result, reports) = try Self.traced("both", options: ["--follow-forks=no"])
        #expect(result.status == 0)
        #expect(result.stdout == "child\nparent\n")
        #expect(reports.count == 1)
        #expect(reports.first?.summary["definitely_lost"] == Report.Count(bytes: 44, blocks: 2))
        // The untracked line (one, at the end), with the child's pid and why.
        #expect(result.stderr.components(separatedBy: "Untracked: 1 program was not tracked").count == 2, "\(result.stderr)")
        #expect(result.stderr.contains(", forked, --follow-forks=no)"), "\(result.stderr)")
        let (bad, _) = try Self.traced("both", options: ["--follow-forks=maybe"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("--follow-forks must be yes or no"))
    }

    @Test("a fork child owns no descriptor of swiftleak's (its ring came through /proc and was closed)")
    func childOwnsNoDescriptor() throws {
        let native = try Harness.run([try Self.forks(), "fds"], timeout: 60)
        let (result, reports) = try Self.traced("fds")
        #expect(native.stdout == "child fds listed\n")
        #expect(result.stdout == native.stdout)
        #expect(reports.dropFirst().first?.summary["definitely_lost"] == Report.Count(bytes: 22, blocks: 1))
    }

    @Test("a raw clone() child runs no atfork handler: its first hook takes its own ring, figures as Valgrind's, the parent's ring stays its own")
    func rawClone() throws {
        let (result, reports) = try Self.traced("rawclone")
        #expect(result.status == 0)
        #expect(reports.count == 2)
        // Without the child writing into it, the parent's ring holds only the parent's blocks.
        #expect(reports.first?.summary["definitely_lost"] == Report.Count(bytes: 33, blocks: 1), "\(result.stderr)")
        // The child runs no fork handler: its first hook takes the ring offered to it.
        #expect(!result.stderr.contains("did not run the interposer's fork handler"), "\(result.stderr)")
        // The child runs on a malloc'd block: in use as its stack, so not lost (it was reported as
        // 262,144 bytes definitely lost). Valgrind agrees (it finds the block's address in the
        // parent's frames copied into the child) and reports the child's own 22-byte leak.
        let child = try #require(reports.dropFirst().first)
        #expect(child.summary["definitely_lost"] == Report.Count(bytes: 22, blocks: 1), "\(result.stderr)")
        #expect(child.summary["still_reachable"].map { $0.bytes >= 256 * 1024 } == true, "\(child.summary)")
        let valgrind = try Self.valgrindFigures("rawclone")
        #expect(valgrind.map(\.definite) == [Report.Count(bytes: 33, blocks: 1), Report.Count(bytes: 22, blocks: 1)], "\(valgrind)")
        #expect(reports.map { $0.summary["definitely_lost"] } == valgrind.map(\.definite))
    }

    @Test("--error-exitcode counts a child's leaks too")
    func errorExitCodeForChild() throws {
        let (result, reports) = try Self.traced("child-only", options: ["--error-exitcode=7"])
        #expect(reports.first?.summary["definitely_lost"] == Report.Count(bytes: 0, blocks: 0))
        #expect(reports.dropFirst().first?.summary["definitely_lost"] == Report.Count(bytes: 22, blocks: 1))
        #expect(result.status == 7)
        let (clean, _) = try Self.traced("child-only", options: ["--error-exitcode=7", "--follow-forks=no"])
        #expect(clean.status == 0)
    }

    @Test("a vfork child runs in its parent's memory: followed, no report of its own, the parent's exact")
    func vforkChild() throws {
        let (result, reports) = try Self.traced("vfork")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(reports.count == 1, "\(result.stderr)")
        #expect(reports.first?.summary["definitely_lost"] == Report.Count(bytes: 33, blocks: 1))
    }

    @Test("a vfork child's thread writes into its parent's ring beside the child: the ring leaves its lock-free tail, no event is lost")
    func vforkChildThread() throws {
        // The tracer told the child's process, which has no ring, to end the lock-free tail
        // (swl_ring_header.single_producer): the parent's ring kept it, two tasks advanced its
        // tail without the lock, and about one run in five recorded allocations too few.
        let (result, reports) = try Self.traced("vforkthreads")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(reports.count == 1, "\(result.stderr)")
        let report = try #require(reports.first, "\(result.stderr)")
        #expect(report.summary["definitely_lost"] == Report.Count(bytes: 33, blocks: 1), "\(result.stderr)")
        // Plus the few that libc and the thread library make and free themselves.
        #expect(report.allocations >= 1_000_001 && report.allocations < 1_000_001 + 200, "\(report.allocations) allocations")
        #expect(report.frees >= 1_000_000 && report.frees < 1_000_000 + 200, "\(report.frees) frees")
    }

    @Test("a clone(CLONE_VM | SIGCHLD) child runs in its parent's memory though the kernel reports a fork: no report of its own, the parent's exact")
    func vmCloneChild() throws {
        // Taken for a fork with memory of its own, the child was marked new in that memory, which
        // is the parent's: the parent's next hook went quiet, its frees were lost (3 blocks of
        // 70-72 bytes reported lost), and its ring kept its lock-free tail with two tasks in it.
        let (result, reports) = try Self.traced("vmclone")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(reports.count == 1, "\(result.stderr)")
        #expect(reports.first?.summary["definitely_lost"] == Report.Count(bytes: 33, blocks: 1), "\(result.stderr)")
        #expect(!result.stderr.contains("fork handler"), "\(result.stderr)")
    }

    @Test("a clone(CLONE_VFORK | SIGCHLD) child without CLONE_VM has memory of its own: its blocks are its own, as Valgrind counts them")
    func vforkCloneWithoutSharedMemory() throws {
        // The kernel reports any CLONE_VFORK clone as a vfork. Taken for one (a child in its
        // parent's memory), this child got no ring and wrote into its parent's: the parent's
        // report had the child's 22-byte leak and lost its own 100-byte one (55 bytes in 2 blocks
        // definitely lost), and the child had no report.
        let (result, reports) = try Self.traced("vforkclone")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(reports.map { $0.summary["definitely_lost"] }
                    == [Report.Count(bytes: 133, blocks: 2), Report.Count(bytes: 22, blocks: 1)], "\(result.stderr)")
        let valgrind = try Self.valgrindFigures("vforkclone")
        #expect(reports.map { $0.summary["definitely_lost"] } == valgrind.map(\.definite), "\(valgrind)")
    }

    @Test("XML and --log-file: one file per process where the name has %p, as Valgrind; --child-silent-after-fork=yes silences children")
    func xmlPerProcessAndSilentChildren() throws {
        let directory = Harness.workDirectory.appendingPathComponent("xml-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let (result, reports) = try Self.traced("both", options: ["--xml=yes", "--xml-file=\(directory.path)/x.%p.xml"])
        #expect(result.status == 0, "\(result.stderr)")
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        #expect(names == reports.map { "x.\($0.pid).xml" }.sorted())
        for report in reports {
            let xml = try String(contentsOfFile: directory.appendingPathComponent("x.\(report.pid).xml").path, encoding: .utf8)
            #expect(xml.contains("<pid>\(report.pid)</pid>"), "\(xml)")
        }
        // --log-file with %p: one log per process, each with its own section.
        let (logged, loggedReports) = try Self.traced("both", options: ["--log-file=\(directory.path)/log.%p"])
        #expect(logged.status == 0)
        for report in loggedReports {
            let log = try String(contentsOfFile: directory.appendingPathComponent("log.\(report.pid)").path, encoding: .utf8)
            #expect(log.contains("==\(report.pid)== Command: "), "\(log)")
            #expect(log.contains("==\(report.pid)== LEAK SUMMARY:"), "\(log)")
            #expect(!loggedReports.contains { $0.pid != report.pid && log.contains("==\($0.pid)==") }, "\(log)")
        }
        let (silent, silentReports) = try Self.traced("both", options: ["--child-silent-after-fork=yes"])
        let child = try #require(silentReports.dropFirst().first)
        #expect(!silent.stderr.contains("==\(child.pid)=="), "\(silent.stderr)")
        #expect(silent.stderr.contains("==\(silentReports[0].pid)== LEAK SUMMARY:"))
    }
}
