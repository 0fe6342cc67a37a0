import ArgumentParser
import Glibc
import SwiftLeakOutput
import SwiftLeakCore
import SwiftLeakReports
import SwiftLeakTracer

/// Valgrind's command line, as CI scripts write it: `valgrind --leak-check=full --error-exitcode=1
/// ./prog` becomes `swiftleak --leak-check=full --error-exitcode=1 ./prog` and means the same.
///
/// Before the argument parser sees the options, `rewrite` turns Valgrind's spellings into ours
/// (`--show-reachable=yes`), drops the options that mean nothing to a leak checker with one line
/// saying so, and prepends `SWIFTLEAK_OPTS`. Only the options before the program are touched.
enum ValgrindCommandLine {
    /// Memcheck and core options that concern errors other than leaks, instrumentation, or
    /// Valgrind's own machinery: accepted so that a Valgrind command line runs unchanged.
    static let ignoredOptions: [String: String] = [
        "--track-origins": "swiftleak reports leaks, not uses of undefined values",
        "--undef-value-errors": "swiftleak reports leaks, not uses of undefined values",
        "--expensive-definedness-checks": "swiftleak reports leaks, not uses of undefined values",
        "--partial-loads-ok": "swiftleak does not check memory accesses",
        "--malloc-fill": "swiftleak does not change what the allocator returns",
        "--free-fill": "swiftleak does not change freed memory",
        "--freelist-vol": "swiftleak does not delay frees",
        "--freelist-big-blocks": "swiftleak does not delay frees",
        "--redzone-size": "swiftleak adds no red zones",
        "--keep-stacktraces": "swiftleak records allocation stacks only",
        "--show-mismatched-frees": "swiftleak does not check free/delete pairing",
        "--show-realloc-size-zero": "swiftleak does not check realloc(p, 0)",
        "--workaround-gcc296-bugs": "swiftleak does not check memory accesses",
        "--ignore-ranges": "swiftleak does not check memory accesses",
        "--ignore-range-below-sp": "swiftleak does not check memory accesses",
        "--read-var-info": "swiftleak reads what it needs from the debug information",
        "--read-inline-info": "swiftleak always expands inlined frames",
        "--track-fds": "swiftleak reports heap blocks, not file descriptors",
        "--time-stamp": "swiftleak's report carries no time stamps",
        "--smc-check": "swiftleak runs the program natively",
        "--fair-sched": "swiftleak runs the program natively",
        "--max-stackframe": "swiftleak runs the program natively",
        "--main-stacksize": "swiftleak runs the program natively",
        "--max-threads": "swiftleak runs the program natively",
        "--sim-hints": "swiftleak runs the program natively",
        "--alignment": "swiftleak does not replace the allocator",
        "--run-libc-freeres": "swiftleak runs no code in the program; Suppressions/default.supp covers what glibc frees",
        "--run-cxx-freeres": "swiftleak runs no code in the program; Suppressions/default.supp covers what libstdc++ frees",
        "--show-below-main": "swiftleak stacks stop at main",
        "--fullpath-after": "swiftleak prints file names as the debug information has them",
        "--error-limit": "swiftleak reports every loss record",
        "--exit-on-first-error": "leaks are only known at exit",
        "--show-error-list": "swiftleak lists its loss records anyway",
        "-s": "swiftleak lists its loss records anyway",
        "--vgdb": "swiftleak has no gdbserver",
        "--vgdb-error": "swiftleak has no gdbserver",
        "--db-attach": "swiftleak has no debugger attachment",
        "--leak-check-heuristics": "swiftleak always applies Valgrind's four heuristics (stdstring, length64, newarray, multipleinheritance)",
        "--merge-recursive-frames": "swiftleak keeps every frame",
        "--num-transtab-sectors": "swiftleak runs the program natively",
        "--soname-synonyms": "swiftleak interposes the allocator wherever it is",
        "--extra-debuginfo-path": "swiftleak finds debug files by build id",
        "--allow-mismatched-debuginfo": "swiftleak refuses debug files whose build id differs",
        "--xml-user-comment": "swiftleak writes no user comment",
        "--show-emulation-warnings": "swiftleak runs the program natively",
    ]

    /// Every long option swiftleak or Valgrind knows, for "did you mean".
    static var knownOptions: [String] {
        [
            "--leak-check", "--show-leak-kinds", "--errors-for-leak-kinds", "--error-exitcode", "--num-callers",
            "--demangle", "--json", "--log-file", "--suppressions", "--default-suppressions", "--gen-suppressions",
            "--verbose", "--quiet", "--tool", "--show-reachable", "--show-possibly-lost", "--leak-resolution",
            "--child-silent-after-fork", "--trace-children", "--trace-children-skip", "--trace-children-skip-by-arg", "--xml", "--xml-file", "--no-trace", "--follow-forks", "--help", "--version",
        ] + ignoredOptions.keys.filter { $0.hasPrefix("--") }
    }

    struct Rewritten: Equatable {
        var arguments: [String]
        /// One line per ignored option, for stderr.
        var notes: [String]
    }

    /// The parser's argument list with Valgrind's spellings handled. `environment` supplies
    /// SWIFTLEAK_OPTS (whitespace-separated options put before the command line's own).
    static func rewrite(_ arguments: [String], environment: String? = nil) -> Rewritten {
        var input = arguments
        var prefix: [String] = []
        if input.first == "run" {
            prefix = ["run"]
            input.removeFirst()
        } else if let first = input.first, !first.hasPrefix("-") || ["-h", "--help", "--version"].contains(first) {
            return Rewritten(arguments: arguments, notes: [])  // another subcommand, or no options
        }
        if let environment {
            input = environment.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).map(String.init) + input
        }
        var output: [String] = []
        var notes: [String] = []
        var index = 0
        while index < input.count {
            let argument = input[index]
            // The options end at `--` or at the program.
            guard argument.hasPrefix("-"), argument != "--", argument != "-" else { break }
            index += 1
            let name = argument.split(separator: "=", maxSplits: 1).first.map(String.init) ?? argument
            let value = argument.contains("=") ? String(argument[argument.index(after: argument.firstIndex(of: "=")!)...]) : nil
            if let reason = ignoredOptions[name] {
                notes.append("swiftleak: ignoring \(argument): \(reason)")
                continue
            }
            switch (name, value) {
            case ("--show-reachable", "yes"?):
                output.append("--show-leak-kinds=all")
            case ("--show-reachable", "no"?):
                output.append("--show-leak-kinds=definite,possible")
            case ("--show-possibly-lost", "no"?):
                output.append("--show-leak-kinds=definite")
            case ("--show-possibly-lost", "yes"?):
                output.append("--show-leak-kinds=definite,possible")
            default:
                output.append(argument)
            }
        }
        return Rewritten(arguments: prefix + output + input[index...], notes: notes)
    }

    /// "did you mean --leak-check?" for an option nobody knows, or nil when nothing is close.
    static func suggestion(for option: String) -> String? {
        let name = option.split(separator: "=", maxSplits: 1).first.map(String.init) ?? option
        guard name.hasPrefix("-") else { return nil }
        let scored = knownOptions.map { ($0, editDistance(name, $0)) }.min { $0.1 < $1.1 }
        guard let (best, distance) = scored, distance <= max(2, name.count / 4) else { return nil }
        return best
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a.utf8), b = Array(b.utf8)
        var previous = Array(0...b.count)
        for i in 1...max(1, a.count) where i <= a.count {
            var current = [i] + [Int](repeating: 0, count: b.count)
            for j in 1...max(1, b.count) where j <= b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }

    /// `--log-file` and `--xml-file` names: `%p` is the program's pid, `%q{VAR}` the value of an
    /// environment variable, `%%` a percent sign, as in Valgrind.
    static func expandFileName(_ pattern: String, pid: Int32, environment: (String) -> String?) throws(ValgrindFileNameError) -> String {
        var out = ""
        var characters = pattern[...]
        while let character = characters.popFirst() {
            guard character == "%" else {
                out.append(character)
                continue
            }
            switch characters.popFirst() {
            case "p"?: out += String(pid)
            case "%"?: out += "%"
            case "q"?:
                guard characters.first == "{", let close = characters.firstIndex(of: "}") else {
                    throw ValgrindFileNameError("'\(pattern)': %q must be followed by {VARIABLE}")
                }
                let name = String(characters[characters.index(after: characters.startIndex)..<close])
                guard let value = environment(name) else {
                    throw ValgrindFileNameError("'\(pattern)': the environment variable \(name) in %q{\(name)} is not set")
                }
                out += value
                characters = characters[characters.index(after: close)...]
            case let other?:
                throw ValgrindFileNameError("'\(pattern)': unknown %\(other) (expected %p, %q{VARIABLE} or %%)")
            case nil:
                throw ValgrindFileNameError("'\(pattern)': a lone % at the end (write %% for a percent sign)")
            }
        }
        return out
    }
}

/// Checks a yes/no option as Valgrind spells them, with the one message every such option gives.
func requireYesOrNo(_ value: String, option: String) throws {
    guard value == "yes" || value == "no" else { throw ValidationError("\(option) must be yes or no, not '\(value)'") }
}

struct ValgrindFileNameError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The options of Valgrind's core and of Memcheck that a CI script passes.
struct ValgrindOptions: ParsableArguments {
    @Flag(name: [.customShort("v"), .customLong("verbose")],
          help: "More detail: the suppressions used (Valgrind's used_suppression lines).")
    var verbosity: Int

    @Flag(name: [.customShort("q"), .customLong("quiet")], help: "Print the loss records only, as Valgrind's -q.")
    var quiet = false

    @Option(name: .customLong("tool"), help: "memcheck (the only tool: swiftleak is a leak checker).")
    var tool: String = "memcheck"

    @Option(name: .customLong("leak-resolution"),
            help: "low, med or high: how many frames (2, 4, all) two stacks share to be one loss record.")
    var leakResolution: String = "high"

    @Option(name: .customLong("child-silent-after-fork"),
            help: "yes or no (default no): yes leaves forked children's sections out of the text and XML reports (the JSON keeps them).")
    var childSilentAfterFork: String = "no"

    @Option(name: .customLong("trace-children"),
            help: "yes or no: track the programs the program execs (shells, system(), posix_spawn, #! scripts); each image is a report of its own.")
    var traceChildren: String = "yes"

    @Option(name: .customLong("trace-children-skip"),
            help: "Comma-separated glob patterns on the exec'd path: a match runs untracked, with everything it starts.")
    var traceChildrenSkip: String = ""

    @Option(name: .customLong("trace-children-skip-by-arg"),
            help: "As --trace-children-skip, the patterns matched against the exec'd program's arguments instead.")
    var traceChildrenSkipByArg: String = ""

    @Option(name: .customLong("xml"), help: "yes or no: also write Valgrind's XML (protocol 4) to --xml-file.")
    var xml: String = "no"

    @Option(name: .customLong("xml-file"), help: "Where --xml=yes writes (%p and %q{VAR} are expanded).")
    var xmlFile: String?

    func validate() throws {
        guard tool == "memcheck" else {
            throw ValidationError("--tool=\(tool): swiftleak is a leak checker and does what Memcheck's leak check does; only --tool=memcheck is accepted")
        }
        guard ["low", "med", "high"].contains(leakResolution) else {
            throw ValidationError("--leak-resolution must be low, med or high, not '\(leakResolution)'")
        }
        for (name, value) in [("--child-silent-after-fork", childSilentAfterFork), ("--trace-children", traceChildren), ("--xml", xml)] {
            try requireYesOrNo(value, option: name)
        }
        if xml == "yes" && xmlFile == nil {
            throw ValidationError("--xml=yes needs an output file: add --xml-file=FILE")
        }
        if xml == "no" && xmlFile != nil {
            throw ValidationError("--xml-file is only used with --xml=yes")
        }
    }

    var writesXML: Bool { xml == "yes" }

    var childTracing: ChildTracing {
        ChildTracing(traceChildren: traceChildren == "yes",
                     skipPatterns: ChildTracing.patterns(parsing: traceChildrenSkip),
                     skipArgumentPatterns: ChildTracing.patterns(parsing: traceChildrenSkipByArg))
    }

    func apply(to options: inout ReportOptions) {
        options.verbose = verbosity > 0
        options.quiet = quiet
        options.leakResolution = ReportOptions.LeakResolution(rawValue: leakResolution) ?? .high
    }
}

extension ValgrindCommandLine {
    nonisolated(unsafe) static var startTime: Double = 0
    nonisolated(unsafe) static var programStartTime: Double?

    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }
}

extension ValgrindOptions {
    func programStarted() {
        ValgrindCommandLine.programStartTime = ValgrindCommandLine.now()
    }

    /// Writes `--xml-file` when `--xml=yes`; returns what went wrong, if anything.
    func writeXML(_ report: ProcessReport, command: [String], options: ReportOptions, interposer: String?) -> String? {
        guard writesXML, let pattern = xmlFile else { return nil }
        let name: String
        do {
            name = try ValgrindCommandLine.expandFileName(pattern, pid: report.pid, environment: ValgrindCommandLine.environment)
        } catch {
            return "cannot write the XML report: \(error)"
        }
        let start = ValgrindCommandLine.startTime
        let run = XMLReport.Run(toolArguments: [ValgrindCommandLine.selfPath] + Array(CommandLine.arguments.dropFirst().prefix(while: { $0 != command.first && $0 != "--" })),
                                command: command,
                                startedAfter: (ValgrindCommandLine.programStartTime ?? start) - start,
                                finishedAfter: ValgrindCommandLine.now() - start, interposer: interposer)
        do {
            let file = try OutputFile(path: name, purpose: "the XML report")
            file.write(XMLReport.render(report, run: run, options: options))
            try file.close()
        } catch {
            return "\(error)"
        }
        return nil
    }
}

extension ValgrindCommandLine {
    static var selfPath: String { DefaultSuppressions.selfPath() ?? CommandLine.arguments[0] }
}
