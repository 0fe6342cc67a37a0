import Foundation
import Testing

/// The exit scan on real processes: Valgrind Memcheck's verdicts, checked against the known shape
/// of each TestPrograms/scan case and against Valgrind itself.
@Suite("Exit scan")
struct ScanTests {
    typealias Count = Report.Count

    /// What a scan_cases mode leaves, counting only blocks the program allocated itself.
    struct Case: CustomStringConvertible, Sendable {
        var mode: String
        var definite = Count(bytes: 0, blocks: 0)
        var indirect = Count(bytes: 0, blocks: 0)
        var possible = Count(bytes: 0, blocks: 0)
        var reachable = Count(bytes: 0, blocks: 0)
        var signal: Int32? = nil
        var status: Int32 = 0
        var description: String { mode }
    }

    static let exitPathLeak = (definite: Count(bytes: 48, blocks: 1), reachable: Count(bytes: 40, blocks: 1))

    static let cases: [Case] = [
        Case(mode: "tree", definite: Count(bytes: 32, blocks: 1), indirect: Count(bytes: 192, blocks: 6)),
        Case(mode: "cycle2", definite: Count(bytes: 32, blocks: 1), indirect: Count(bytes: 32, blocks: 1)),
        Case(mode: "cycle3", definite: Count(bytes: 32, blocks: 1), indirect: Count(bytes: 64, blocks: 2)),
        Case(mode: "reachable-cycle", reachable: Count(bytes: 64, blocks: 2)),
        Case(mode: "interior", possible: Count(bytes: 64, blocks: 1)),
        Case(mode: "globals", reachable: Count(bytes: 75, blocks: 3)),
        Case(mode: "list", reachable: Count(bytes: 3200, blocks: 100)),
        Case(mode: "thread-stack", reachable: Count(bytes: 72, blocks: 1)),
        Case(mode: "thread-tls", reachable: Count(bytes: 88, blocks: 1)),
        Case(mode: "thread-register", reachable: Count(bytes: 104, blocks: 1)),
        // The thread that ends the process: its registers are not roots (as Valgrind).
        Case(mode: "register", definite: Count(bytes: 96, blocks: 1)),
        Case(mode: "register-cleared", definite: Count(bytes: 96, blocks: 1)),
        Case(mode: "return", definite: exitPathLeak.definite, reachable: exitPathLeak.reachable),
        Case(mode: "exit", definite: exitPathLeak.definite, reachable: exitPathLeak.reachable, status: 4),
        Case(mode: "_exit", definite: exitPathLeak.definite, reachable: exitPathLeak.reachable, status: 5),
        Case(mode: "abort", definite: exitPathLeak.definite, reachable: exitPathLeak.reachable, signal: SIGABRT),
        Case(mode: "segv", definite: exitPathLeak.definite, reachable: exitPathLeak.reachable, signal: SIGSEGV),
    ]

    /// Blocks of `kind` whose allocation call is in `object` (not the C library's own, like the
    /// thread-local storage glibc allocates for a thread).
    static func total(_ report: Report, _ kind: String, allocatedIn object: String) -> Count {
        var total = Count(bytes: 0, blocks: 0)
        for record in report.lossRecords where record.kind == kind && record.stack.count > 1
            && record.stack[1].object == object {
            total.bytes += record.bytes
            total.blocks += record.blocks
        }
        return total
    }

    /// The accuracy programs are built as users build theirs, unoptimised and optimised, and their
    /// stacks are never scrubbed.
    static let optimizations = ["-O0", "-O2"]

    @Test("each heap shape gets Valgrind's verdict", arguments: cases, optimizations)
    func shape(_ expected: Case, optimization: String) throws {
        let program = try Harness.build("scan/scan_cases.c", flags: [optimization, "-g"])
        let (result, maybeReport) = try Harness.swiftleak(program, [expected.mode], options: ["--show-leak-kinds=all"])
        #expect(result.signal == expected.signal)
        if expected.signal == nil { #expect(result.status == expected.status) }
        let report = try #require(maybeReport)
        #expect(report.scanRan)
        #expect(report.summary["definitely_lost"] == expected.definite)
        #expect(report.summary["indirectly_lost"] == expected.indirect)
        #expect(Self.total(report, "possibly_lost", allocatedIn: program) == expected.possible)
        #expect(Self.total(report, "still_reachable", allocatedIn: program) == expected.reachable)
        // A lost group is one loss record: the leader's, charged with its indirect bytes.
        let definite = report.lossRecords.filter { $0.kind == "definitely_lost" }
        #expect(definite.map(\.indirectBytes).reduce(0, +) == expected.indirect.bytes)
    }

    @Test("a lost group's record says 'N (D direct, I indirect) bytes'")
    func lostTreeText() throws {
        let program = try Harness.build("scan/scan_cases.c")
        let (result, _) = try Harness.swiftleak(program, ["tree"])
        #expect(result.stderr.contains("224 (32 direct, 192 indirect) bytes in 1 blocks are definitely lost in loss record"))
        #expect(result.stderr.contains("definitely lost: 32 bytes in 1 blocks"))
        #expect(result.stderr.contains("indirectly lost: 192 bytes in 6 blocks"))
    }

    @Test("Swift reference cycles: one definitely lost node per cycle, the rest indirectly lost",
          arguments: optimizations)
    func swiftCycles(optimization: String) throws {
        let program = try Harness.build("scan/swift_cycles.swift", flags: [optimization])
        let (result, maybeReport) = try Harness.swiftleak(program)
        #expect(result.stdout == "leaked 5 cycles, 12 nodes\n")
        let report = try #require(maybeReport)
        let nodes = report.lossRecords.filter { record in
            record.stack.contains { $0.function?.hasPrefix("swift_cycles.makeCycle(") == true }
        }
        let definite = nodes.filter { $0.kind == "definitely_lost" }.reduce(0) { $0 + $1.blocks }
        let indirect = nodes.filter { $0.kind == "indirectly_lost" }.reduce(0) { $0 + $1.blocks }
        #expect(definite == 5)
        #expect(indirect == 7)
        #expect(report.summary["definitely_lost"]?.blocks == 5)
        #expect(report.summary["indirectly_lost"]?.blocks == 7)
    }

    @Test("the error exit code follows the error kinds, as Valgrind's --error-exitcode")
    func errorExitCode() throws {
        let program = try Harness.build("scan/scan_cases.c")
        let (lost, _) = try Harness.swiftleak(program, ["tree"], options: ["--error-exitcode=42"])
        #expect(lost.status == 42)
        let (reachable, _) = try Harness.swiftleak(program, ["globals"], options: ["--error-exitcode=42"])
        #expect(reachable.status == 0)
        let (onlyReachable, _) = try Harness.swiftleak(program, ["globals"],
                                                        options: ["--error-exitcode=42", "--errors-for-leak-kinds=reachable"])
        #expect(onlyReachable.status == 42)
    }

    @Test("nothing left allocated at the exit: classified without a scan, all freed, the program's status kept")
    func nothingLeft() throws {
        let (result, maybeReport) = try Harness.swiftleak("/bin/true", options: ["--show-leak-kinds=all"])
        let report = try #require(maybeReport, "\(result.stderr)")
        #expect(result.status == 0)
        #expect(report.inUseAtExit == Count(bytes: 0, blocks: 0))
        #expect(report.scanRan)
        #expect(report.scanSeconds == 0)
        #expect(result.stderr.contains("All heap blocks were freed -- no leaks are possible"), "\(result.stderr)")
        let (failing, _) = try Harness.swiftleak("/bin/false")
        #expect(failing.status == 1)
    }
}

/// swiftleak and Valgrind Memcheck on the same programs: identical definitely and indirectly
/// lost bytes and blocks.
@Suite("Valgrind differential")
struct ValgrindDifferentialTests {
    struct Summary: Equatable, CustomStringConvertible {
        var definite: Report.Count
        var indirect: Report.Count
        var description: String { "definite \(definite), indirect \(indirect)" }
    }

    /// Parses "definitely lost: 1,120 bytes in 4 blocks" from Valgrind's LEAK SUMMARY (absent
    /// lines, as when nothing leaked, are zero).
    static func valgrindSummary(_ stderr: String) -> Summary {
        func count(_ label: String) -> Report.Count {
            guard let line = stderr.split(separator: "\n").first(where: { $0.contains(label + ":") }) else {
                return Report.Count(bytes: 0, blocks: 0)
            }
            let numbers = line.split(separator: ":").last!.replacingOccurrences(of: ",", with: "")
                .split(separator: " ").compactMap { Int($0) }
            return Report.Count(bytes: numbers.first ?? -1, blocks: numbers.dropFirst().first ?? -1)
        }
        return Summary(definite: count("definitely lost"), indirect: count("indirectly lost"))
    }

    /// Valgrind's summary of the traced process (a fork child's own summary is silenced).
    static func valgrind(_ program: String, _ arguments: [String]) throws -> Summary {
        let path = ["/usr/bin/valgrind", "/usr/local/bin/valgrind"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let valgrind = try #require(path, "valgrind is needed (scripts/install-deps installs it)")
        let result = try Harness.run([valgrind, "--leak-check=full", "--error-exitcode=0", "--child-silent-after-fork=yes", program] + arguments, timeout: 300)
        #expect(result.stderr.contains("LEAK SUMMARY") || result.stderr.contains("All heap blocks were freed"))
        return valgrindSummary(result.stderr)
    }

    static func swiftleak(_ program: String, _ arguments: [String]) throws -> Summary {
        let (_, maybeReport) = try Harness.swiftleak(program, arguments)
        let report = try #require(maybeReport)
        return Summary(definite: report.summary["definitely_lost"] ?? Report.Count(bytes: -1, blocks: -1),
                       indirect: report.summary["indirectly_lost"] ?? Report.Count(bytes: -1, blocks: -1))
    }

    /// Every scan case. Differences outside these two kinds: in possibly lost, a live thread's DTV
    /// (possibly lost in both) is 32 bytes bigger here because the interposer and libunwind add TLS
    /// modules; in still reachable, Valgrind frees glibc's stdio buffers and libstdc++'s emergency
    /// pool at exit (__libc_freeres, __gnu_cxx::__freeres) while swiftleak reports them still
    /// reachable.
    @Test("scan cases", arguments: ScanTests.cases.map(\.mode), ScanTests.optimizations)
    func scanCases(mode: String, optimization: String) throws {
        let program = try Harness.build("scan/scan_cases.c", flags: [optimization, "-g"])
        #expect(try Self.swiftleak(program, [mode]) == (try Self.valgrind(program, [mode])))
    }

    @Test("the pipeline and demo programs")
    func otherPrograms() throws {
        for (source, arguments) in [("demo/leaky.c", [String]()), ("pipeline/cxx_family.cpp", []),
                                    ("pipeline/behaviour.c", ["exit", "0"]), ("stacks/c_site.c", [])] {
            let program = try Harness.build(source)
            #expect(try Self.swiftleak(program, arguments) == (try Self.valgrind(program, arguments)), "\(source)")
        }
    }

    @Test("Swift reference cycles", arguments: ScanTests.optimizations)
    func swiftCycles(optimization: String) throws {
        let program = try Harness.build("scan/swift_cycles.swift", flags: [optimization])
        #expect(try Self.swiftleak(program, []) == (try Self.valgrind(program, [])))
    }
}

/// Copies of block addresses that the program never made: left by swiftleak's hooks, its stack
/// walker and glibc's allocator running under them (the hooks run on a stack of their own), or
/// left in the frames of libc's exit path. Valgrind, run live, is the oracle.
@Suite("Stale copies of block addresses")
struct StaleCopyTests {
    typealias Count = Report.Count

    static func summary(_ report: Report) -> ValgrindDifferentialTests.Summary {
        ValgrindDifferentialTests.Summary(definite: report.summary["definitely_lost"] ?? Count(bytes: -1, blocks: -1),
                                          indirect: report.summary["indirectly_lost"] ?? Count(bytes: -1, blocks: -1))
    }

    /// Each mode forgets 1,000 blocks right after the call that returned them.
    static let forgotten: [String: Count] = [
        "loop": Count(bytes: 16_000, blocks: 1000),
        "families": Count(bytes: 200 * (24 + 40 + 56 + 72 + 96), blocks: 1000),
        "thread": Count(bytes: 16_000, blocks: 1000),
    ]

    @Test("no hooked call leaves a copy of the block it returned", arguments: ["loop", "families", "thread"],
          ScanTests.optimizations)
    func forgottenBlocks(mode: String, optimization: String) throws {
        let program = try Harness.build("scan/hook_copies.c", flags: [optimization, "-g"])
        let (result, maybeReport) = try Harness.swiftleak(program, [mode])
        #expect(result.status == 0)
        let report = try #require(maybeReport)
        #expect(report.summary["definitely_lost"] == Self.forgotten[mode])
        #expect(Self.summary(report) == (try ValgrindDifferentialTests.valgrind(program, [mode])))
    }

    /// How each exit_paths mode ends natively: status or signal.
    static let exitModes: [(mode: String, status: Int32, signal: Int32?)] = [
        ("return", 0, nil), ("exit", 4, nil), ("_exit", 5, nil), ("_Exit", 6, nil),
        ("abort", 0, SIGABRT), ("assert", 0, SIGABRT), ("raise", 0, SIGSEGV), ("fault", 0, SIGSEGV),
        ("raise-handled", 0, SIGSEGV),
    ]

    @Test("the exit path's frames hold no roots, however the program leaves",
          arguments: exitModes.map(\.mode), ScanTests.optimizations)
    func exitPaths(mode: String, optimization: String) throws {
        let program = try Harness.build("scan/exit_paths.c", flags: [optimization, "-g"])
        let expected = try #require(Self.exitModes.first { $0.mode == mode })
        let (result, maybeReport) = try Harness.swiftleak(program, [mode])
        #expect(result.signal == expected.signal)
        if expected.signal == nil { #expect(result.status == expected.status) }
        let report = try #require(maybeReport)
        #expect(report.summary["definitely_lost"] == Count(bytes: 48, blocks: 1))
        #expect(Self.summary(report) == (try ValgrindDifferentialTests.valgrind(program, [mode])))
        if mode == "raise-handled" {
            // raise returned: its record of an exit was withdrawn, and the faulting frame is live.
            #expect(ScanTests.total(report, "still_reachable", allocatedIn: program) == Count(bytes: 72, blocks: 1))
        }
    }

    @Test("the own stacks survive signal handlers that allocate inside hooks, fork and vfork",
          arguments: ["signals", "fork", "vfork"])
    func hookHazards(mode: String) throws {
        let program = try Harness.build("scan/hook_hazards.c", flags: ["-O2", "-g"])
        let (result, maybeReport) = try Harness.swiftleak(program, [mode], timeout: 120)
        #expect(result.status == 0)
        #expect(result.stdout == "done\n")
        let report = try #require(maybeReport)
        #expect(report.summary["definitely_lost"] == Count(bytes: 240, blocks: 10))
        #expect(Self.summary(report) == (try ValgrindDifferentialTests.valgrind(program, [mode])))
    }

    @Test("glibc's free-list links left in fresh blocks are not followed", arguments: ScanTests.optimizations)
    func allocatorLinks(optimization: String) throws {
        let program = try Harness.build("scan/allocator_links.c", flags: [optimization, "-g"])
        let (result, maybeReport) = try Harness.swiftleak(program)
        #expect(result.status == 0)
        #expect(result.stdout.hasPrefix("leaked block 0 of 24 bytes\n"))
        let report = try #require(maybeReport)
        #expect(report.summary["definitely_lost"] == Count(bytes: 1984, blocks: 50))
        #expect(Self.summary(report) == (try ValgrindDifferentialTests.valgrind(program, [])))
    }

    @Test("glibc's large-bin links left in big fresh blocks are not followed",
          arguments: ScanTests.optimizations)
    func largeBinLinks(optimization: String) throws {
        let program = try Harness.build("scan/allocator_links.c", flags: [optimization, "-g"])
        let (result, maybeReport) = try Harness.swiftleak(program, ["large"])
        #expect(result.status == 0)
        // Under swiftleak the two blocks come back from the large bin, links and all.
        #expect(result.stdout == "large blocks taken back\n")
        let report = try #require(maybeReport)
        #expect(report.summary["definitely_lost"] == Count(bytes: 10_390, blocks: 4))
        #expect(report.summary["indirectly_lost"] == Count(bytes: 0, blocks: 0))
        #expect(Self.summary(report) == (try ValgrindDifferentialTests.valgrind(program, ["large"])))
    }

    /// Runs a program that leaves an earlier owner's or glibc's stale words where a block's
    /// pointers would be, and checks that none is followed: the heap shape the program reports
    /// (`selfCheck`, its own check that glibc gave the chunks back as it needs), exactly
    /// `definitelyLost`, nothing possibly lost, and Valgrind's summary.
    static func expectStaleWordsNotFollowed(_ source: String, optimization: String, selfCheck: String,
                                            definitelyLost: Count) throws {
        let program = try Harness.build(source, flags: [optimization, "-g"])
        let (result, maybeReport) = try Harness.swiftleak(program)
        #expect(result.status == 0)
        #expect(result.stdout == selfCheck, "\(result.stdout)")
        let report = try #require(maybeReport)
        #expect(report.summary["definitely_lost"] == definitelyLost, "\(report.summary)")
        #expect(report.summary["possibly_lost"] == nil || report.summary["possibly_lost"] == Count(bytes: 0, blocks: 0),
                "\(report.summary)")
        #expect(summary(report) == (try ValgrindDifferentialTests.valgrind(program, [])))
    }

    @Test("a block realloc grew over a free neighbour: the neighbour's links in the new part are not followed",
          arguments: ScanTests.optimizations)
    func reallocGrownPart(optimization: String) throws {
        // The heap shape the program builds (checked by itself): its stale link points into `lost`.
        try Self.expectStaleWordsNotFollowed("scan/realloc_tail.c", optimization: optimization,
                                             selfCheck: "adjacent: yes, kept grown in place\n",
                                             definitelyLost: Count(bytes: 200, blocks: 1))
    }

    @Test("a block realloc grew in place by over 4 KiB: the neighbour's last link, a word past the old end's four, is not followed",
          arguments: ScanTests.optimizations)
    func reallocLargeGrownPart(optimization: String) throws {
        // The heap shape the program builds (checked by itself): the neighbour's bk_nextsize points into `lost`.
        try Self.expectStaleWordsNotFollowed("scan/realloc_large_tail.c", optimization: optimization,
                                             selfCheck: "adjacent: yes, kept grown in place\n",
                                             definitelyLost: Count(bytes: 2200, blocks: 1))
    }

    @Test("pointers an earlier owner left into the middle of a block, unaligned, are not followed in a fresh block",
          arguments: ScanTests.optimizations)
    func staleInteriorPointers(optimization: String) throws {
        // The holder's chunk came straight back from the tcache (checked by the program itself).
        try Self.expectStaleWordsNotFollowed("scan/stale_interior.c", optimization: optimization,
                                             selfCheck: "chunk taken back: yes\n",
                                             definitelyLost: Count(bytes: 64, blocks: 1))
    }

    @Test("a pointer an earlier owner left in a chunk's slack is not followed (malloc, realloc, the partial last word)",
          arguments: ScanTests.optimizations)
    func allocatorSlack(optimization: String) throws {
        // glibc gave every chunk back as the cases need (checked by the program itself).
        try Self.expectStaleWordsNotFollowed("scan/allocator_slack.c", optimization: optimization,
                                             selfCheck: "chunks taken back: yes yes yes yes\n",
                                             definitelyLost: Count(bytes: 1168, blocks: 4))
    }

    @Test("a program with its own malloc is told, in one line, that it is not tracked")
    func ownMalloc() throws {
        let program = try Harness.build("scan/own_malloc.c")
        let (result, _) = try Harness.swiftleak(program)
        #expect(result.status == 0)
        #expect(result.stdout == "allocated with my own malloc\n")
        let lines = result.stderr.split(separator: "\n").filter { $0.contains("defines its own malloc") }
        #expect(lines.count == 1)
        // A program that uses libc's malloc gets no such line.
        let (plain, _) = try Harness.swiftleak(try Harness.build("scan/hook_copies.c"), ["loop"])
        #expect(!plain.stderr.contains("defines its own malloc"))
    }

    @Test("a thread stopped inside operator new: its program stack is scanned from the call, the own stack not at all",
          arguments: ScanTests.optimizations)
    func threadInsideHook(optimization: String) throws {
        let program = try Harness.build("scan/inside_hook.cpp", flags: [optimization, "-g"])
        let (result, maybeReport) = try Harness.swiftleak(program, [], options: ["--show-leak-kinds=all"], timeout: 120)
        #expect(result.status == 0)
        let report = try #require(maybeReport)
        #expect(report.summary["definitely_lost"] == Count(bytes: 48, blocks: 1))
        #expect(ScanTests.total(report, "still_reachable", allocatedIn: program) == Count(bytes: 72, blocks: 1))
    }
}
