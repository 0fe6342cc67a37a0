import Foundation
import Testing

/// swiftleak against Valgrind Memcheck, run live, on programs that keep their pointers where real
/// programs do: Swift and Rust collections, module data of lld-linked binaries, anonymous mappings
/// the kernel merged with an mmapped chunk, stacks of joined threads, PROT_NONE memory, CPython.
/// Definitely and indirectly lost bytes and blocks must be Valgrind's; the program's stdout and
/// exit status must be those of its native run. Nothing here scrubs the stack.
@Suite("Valgrind differential on real programs")
struct AccuracyTests {
    typealias Differential = ValgrindDifferentialTests

    /// One build of TestPrograms/accuracy/roots.c and a mode of it.
    struct RootsCase: CustomStringConvertible, Sendable {
        var mode: String
        var optimization: String
        var linker: String
        var description: String { "\(mode) \(optimization) \(linker)" }
    }

    static let rootsModes = ["usable-size", "module-data", "merged-mapping", "exited-threads", "protected"]
    static let rootsCases: [RootsCase] =
        rootsModes.map { RootsCase(mode: $0, optimization: "-O0", linker: "bfd") }
        + rootsModes.map { RootsCase(mode: $0, optimization: "-O2", linker: "lld") }
        + [RootsCase(mode: "module-data", optimization: "-O2", linker: "bfd"),
           RootsCase(mode: "module-data", optimization: "-O0", linker: "lld")]

    /// Runs `program` natively, under Valgrind and under swiftleak; checks that swiftleak's lost
    /// figures are Valgrind's and that the program behaved as natively.
    static func compare(_ program: String, _ arguments: [String], _ label: String) throws {
        let native = try Harness.run([program] + arguments)
        let (traced, maybeReport) = try Harness.swiftleak(program, arguments)
        #expect(traced.stdout == native.stdout, "\(label): stdout")
        #expect(traced.status == native.status && traced.signal == native.signal, "\(label): exit status")
        let report = try #require(maybeReport, "\(label): no report")
        #expect(report.scanRan, "\(label): the exit scan did not run")
        let ours = Differential.Summary(
            definite: report.summary["definitely_lost"] ?? Report.Count(bytes: -1, blocks: -1),
            indirect: report.summary["indirectly_lost"] ?? Report.Count(bytes: -1, blocks: -1))
        let valgrind = try Differential.valgrind(program, arguments)
        #expect(ours == valgrind, "\(label)")
    }

    @Test("C: where a program keeps its pointers", arguments: rootsCases)
    func roots(_ test: RootsCase) throws {
        let program = try Harness.build("accuracy/roots.c", flags: [test.optimization, "-g", "-fuse-ld=\(test.linker)"])
        try Self.compare(program, [test.mode], test.description)
    }

    /// At -O2 main keeps a list's head in callee-saved registers, and the exit function's
    /// prologue saves them in frames the exit scan skips: the scan must still see them (as the
    /// caller's registers at the call), as Valgrind sees the saved slots.
    @Test("C at -O2 leaving by exit, _exit, abort or a fatal signal keeps main's registers live",
          arguments: ["exit", "_exit", "abort", "signal"], ["bfd", "lld"])
    func exitsAtO2(mode: String, linker: String) throws {
        let program = try Harness.build("accuracy/exits.c", flags: ["-O2", "-g", "-fuse-ld=\(linker)"])
        try Self.compare(program, [mode], "exits \(mode) -O2 \(linker)")
    }

    @Test("the lld build really has two writable PT_LOADs sharing a file page")
    func lldLayout() throws {
        let program = try Harness.build("accuracy/roots.c", flags: ["-O2", "-g", "-fuse-ld=lld"])
        let headers = try Harness.run(["/usr/bin/env", "readelf", "-lW", program])
        let writableLoads = headers.stdout.split(separator: "\n")
            .filter { $0.contains("LOAD") && $0.contains("RW") }
            .compactMap { line in line.split(separator: " ").dropFirst().first.flatMap { UInt64($0.dropFirst(2), radix: 16) } }
        #expect(writableLoads.count == 2)
        #expect(Set(writableLoads.map { $0 & ~4095 }).count == 1, "file offsets \(writableLoads)")
    }

    @Test("Swift: classes in arrays, dictionaries and sets")
    func swiftCollections() throws {
        let program = try Harness.build("accuracy/swift_collections.swift")
        try Self.compare(program, [], "swift_collections")
    }

    static let rustc: String? = {
        let environment = ProcessInfo.processInfo.environment
        let directories = (environment["PATH"] ?? "").split(separator: ":").map(String.init)
            + [(environment["HOME"] ?? "/root") + "/.cargo/bin", "/usr/bin", "/usr/local/bin"]
        return directories.map { $0 + "/rustc" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    @Test("Rust: Vec, HashMap, BTreeMap, Rc cycles and statics (linked by lld)",
          .enabled(if: rustc != nil, "rustc is not installed: the Rust differential is skipped"))
    func rustCollections() throws {
        let rustc = try #require(Self.rustc)
        let output = Harness.workDirectory.appendingPathComponent("rust_collections").path
        let source = Harness.testPrograms.appendingPathComponent("accuracy/rust_collections.rs").path
        let build = try Harness.run([rustc, "-O", "-g", "-o", output, source])
        try #require(build.status == 0, "rustc failed: \(build.stderr)")
        try Self.compare(output, [], "rust_collections")
    }

    /// One of perl's hash keys here is 58 bytes in a reused 80-byte chunk: its NUL and flags byte
    /// overwrote only the low bytes of a pointer an earlier block left in the word they share with
    /// the slack, which then pointed into a lost clique in about one run of five (it depends on
    /// where ASLR puts the heap). Valgrind runs once; swiftleak must give its figures on every run.
    @Test("perl: a hash of arrays through the system perl, the same figures on every run",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/perl"), "no /usr/bin/perl"))
    func perl() throws {
        let arguments = ["-e", "my %h = map { $_ => [$_] } 1..1000; print scalar(keys %h), qq(\\n)"]
        let native = try Harness.run(["/usr/bin/perl"] + arguments)
        #expect(native.stdout == "1000\n")
        let valgrind = try Differential.valgrind("/usr/bin/perl", arguments)
        for run in 1...8 {
            let (traced, maybeReport) = try Harness.swiftleak("/usr/bin/perl", arguments)
            #expect(traced.stdout == native.stdout && traced.status == native.status, "run \(run)")
            let report = try #require(maybeReport, "run \(run): no report")
            let ours = Differential.Summary(
                definite: report.summary["definitely_lost"] ?? Report.Count(bytes: -1, blocks: -1),
                indirect: report.summary["indirectly_lost"] ?? Report.Count(bytes: -1, blocks: -1))
            #expect(ours == valgrind, "run \(run)")
        }
    }

    @Test("CPython: a one-liner through the system python3",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "no /usr/bin/python3"))
    func python() throws {
        try Self.compare("/usr/bin/python3", ["-c", "import json; print(json.dumps({'a': [1, 2, 3]}))"], "python3 -c")
    }
}
