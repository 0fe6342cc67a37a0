import ArgumentParser
import CSwiftLeakSys
import Glibc
import SwiftLeakCore
import SwiftLeakOutput
import SwiftLeakReports
import SwiftLeakSession
import SwiftLeakSuppressions
import SwiftLeakTrace
import SwiftLeakTracer

@main
struct SwiftLeakCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftleak",
        abstract: "Track every heap allocation of a program and report what it leaks at exit.",
        version: "0.1.0",
        subcommands: [Run.self, Analyze.self, Diff.self],
        // `swiftleak [options] ./prog args`, as `valgrind [options] ./prog args`.
        defaultSubcommand: Run.self
    )

    /// The argument parser sees swiftleak's own options and the program's name, not the program's
    /// arguments after `--`: they are bytes (Strings would replace what is not UTF-8), and parsing
    /// tens of thousands of them costs quadratic time.
    static func main() {
        PhaseTimer.mark("main")
        ValgrindCommandLine.startTime = ValgrindCommandLine.now()
        RawCommandLine.capture()
        let rewritten = ValgrindCommandLine.rewrite(RawCommandLine.arguments.map { String(decoding: $0, as: UTF8.self) },
                                                    environment: getenv("SWIFTLEAK_OPTS").map { String(cString: $0) })
        let notes = OutputFile.standardError(purpose: "a note")
        for note in rewritten.notes { notes.write(note + "\n") }
        runReportingErrorsInOneLine(RawCommandLine.forParser(rewritten.arguments))
    }

    /// ArgumentParser's own `main` follows a usage error with the whole usage (a dozen options on
    /// one line) and a pointer to --help: three lines where a script's log wants one. A mistake in
    /// the command line is one line here; help, version and exit codes are as ArgumentParser's.
    static func runReportingErrorsInOneLine(_ arguments: [String]) -> Never {
        var command: ParsableCommand
        do {
            command = try parseAsRoot(arguments)
        } catch {
            exitInOneLine(error, hint: " (see 'swiftleak --help')")
        }
        PhaseTimer.mark("parsed")
        do {
            try command.run()
        } catch {
            exitInOneLine(error, hint: "")
        }
        exit(withError: nil)
    }

    private static func exitInOneLine(_ error: Error, hint: String) -> Never {
        let code = exitCode(for: error)
        if code == .success || error is ExitCode { exit(withError: error) }
        let message = self.message(for: error).split(separator: "\n").first.map(String.init) ?? ""
        if !message.isEmpty {
            OutputFile.standardError(purpose: "the error").write("swiftleak: \(message)\(hint)\n")
        }
        exit(withError: ExitCode(code.rawValue))
    }
}

/// The command line as bytes, and how much of it the argument parser gets.
enum RawCommandLine {
    /// argv[1...], as given.
    nonisolated(unsafe) private(set) static var arguments: [Bytes] = []
    /// Trailing arguments the parser does not see: those after the program that follows `--`.
    nonisolated(unsafe) private(set) static var unparsedCount = 0

    static func capture() {
        arguments = (1..<Int(CommandLine.argc)).map { index in
            let argument = CommandLine.unsafeArgv[index]!
            return Array(UnsafeRawBufferPointer(start: argument, count: strlen(argument)))
        }
    }

    /// `arguments` (as the Valgrind-style rewrite left them: it changes only options, never what
    /// follows the program) up to the program after the first `--`.
    static func forParser(_ rewritten: [String]) -> [String] {
        guard let separator = rewritten.firstIndex(of: "--"), separator + 2 < rewritten.count else { return rewritten }
        unparsedCount = rewritten.count - (separator + 2)
        return Array(rewritten[..<(separator + 2)])
    }

    /// The raw bytes of a trailing pass-through argument list the parser captured `count` of:
    /// what it got (a suffix of what it saw) and everything after.
    static func passthrough(capturedCount count: Int) -> [Bytes] {
        Array(arguments.suffix(count + unparsedCount))
    }
}

/// Options of the leak report, named as in Valgrind so habits and CI scripts carry over.
struct LeakReportOptions: ParsableArguments {
    @Option(name: .customLong("leak-check"), help: "no, summary or full; no skips the exit scan.")
    var leakCheck: String = "full"

    @Option(name: .customLong("show-leak-kinds"),
            help: "Kinds listed in full: definite,indirect,possible,reachable, all or none.")
    var showLeakKinds: String = "definite,possible"

    @Option(name: .customLong("errors-for-leak-kinds"), help: "Kinds that count as errors.")
    var errorsForLeakKinds: String = "definite,possible"

    @Option(name: .customLong("error-exitcode"),
            help: "Exit with this status when leaks of the error kinds were found.")
    var errorExitCode: Int32?

    @Option(name: .customLong("num-callers"), help: "Frames shown per stack.")
    var numCallers: Int = 12

    @Option(name: .customLong("demangle"), help: "yes or no; no shows C++, Swift and Rust names as the symbol table spells them.")
    var demangle: String = "yes"

    @Option(name: .customLong("json"), help: "Also write the report as JSON to this file.")
    var jsonFile: String?

    @Option(name: .customLong("log-file"), help: "Write the report to this file instead of stderr.")
    var logFile: String?

    func validate() throws {
        guard ReportOptions.LeakCheck(rawValue: leakCheck) != nil else {
            throw ValidationError("--leak-check must be no, summary or full, not '\(leakCheck)'")
        }
        guard LeakKindSet(parsing: showLeakKinds) != nil else {
            throw ValidationError("--show-leak-kinds: expected all, none or a list of definite,indirect,possible,reachable; got '\(showLeakKinds)'")
        }
        guard LeakKindSet(parsing: errorsForLeakKinds) != nil else {
            throw ValidationError("--errors-for-leak-kinds: expected all, none or a list of definite,indirect,possible,reachable; got '\(errorsForLeakKinds)'")
        }
        try requireYesOrNo(demangle, option: "--demangle")
        guard (1...500).contains(numCallers) else {
            throw ValidationError("--num-callers must be between 1 and 500")
        }
        if let errorExitCode, !(0...255).contains(errorExitCode) {
            throw ValidationError("--error-exitcode must be between 0 (off) and 255, not \(errorExitCode)")
        }
    }

    var reportOptions: ReportOptions {
        var options = ReportOptions()
        options.leakCheck = ReportOptions.LeakCheck(rawValue: leakCheck) ?? .full
        options.showKinds = LeakKindSet(parsing: showLeakKinds) ?? .defaultKinds
        options.errorKinds = LeakKindSet(parsing: errorsForLeakKinds) ?? .defaultKinds
        options.numCallers = numCallers
        options.demangle = demangle == "yes"
        return options
    }
}

extension SwiftLeakCommand {
    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "run",
            abstract: "Run a program, record its allocations, and report its leaks when it exits.",
            discussion: "Example: swiftleak run --leak-check=full -- ./myapp arg1 arg2"
        )

        @OptionGroup var report: LeakReportOptions

        @OptionGroup var suppressions: SuppressionOptions

        @OptionGroup var valgrind: ValgrindOptions

        @Option(name: [.customShort("o"), .customLong("output")],
                help: "Write the trace here (default: swiftleak.<program>.<pid>.gz in the working directory).")
        var traceOutput: String?

        @Flag(name: .customLong("no-trace"), help: "Do not write a trace file.")
        var noTrace = false

        @Option(name: .customLong("follow-forks"),
                help: "yes or no (default yes): trace forked children, each with its own report; no: they run untraced.")
        var followForks = "yes"

        @Argument(parsing: .captureForPassthrough, help: "The program and its arguments.")
        var command: [String] = []

        mutating func validate() throws {
            if command.first == "--" { command.removeFirst() }
            // With pass-through parsing, `swiftleak run --help` would otherwise run a program
            // called --help.
            if let first = command.first, ["--help", "-h", "-help"].contains(first) {
                throw CleanExit.helpRequest(self)
            }
            guard let first = command.first else {
                throw ValidationError("missing the program to run: swiftleak run [options] -- ./program [arguments]")
            }
            try requireYesOrNo(followForks, option: "--follow-forks")
            if first.hasPrefix("-") {
                let hint = ValgrindCommandLine.suggestion(for: first).map { "; did you mean \($0)?" } ?? " (put the program after --)"
                throw ValidationError("unknown option '\(first)'" + hint)
            }
        }

        func run() throws {
            var configuration = RunConfiguration(command: RawCommandLine.passthrough(capturedCount: command.count))
            configuration.report = report.reportOptions
            configuration.ring.maxFrames = UInt32(min(128, report.numCallers + 8))
            configuration.report.genSuppressions = suppressions.generateAll
            valgrind.apply(to: &configuration.report)
            // The program's own suppressions are looked for on a thread of their own while the
            // program runs (see `ProgramSuppressionSearch`), read whatever --default-suppressions
            // says when there is a trace (it keeps them for analyze).
            let programPath = try? Launcher.resolveProgram(configuration.command[0],
                                                           searchPath: getenv("PATH").map { Array(UnsafeRawBufferPointer(start: $0, count: strlen($0))) })
            if let programPath, suppressions.useDefaults || !noTrace {
                configuration.programSuppressions = ProgramSuppressionSearch(program: String(decoding: programPath, as: UTF8.self))
            }
            let fileSuppressions: (set: SuppressionSet, warnings: [String])
            do {
                fileSuppressions = try suppressions.loadFiles()
            } catch {
                throw fail("\(error)")
            }
            PhaseTimer.mark("suppressions-loaded")
            let reportSuppressions = ReportSuppressions(program: configuration.programSuppressions, useDefaults: suppressions.useDefaults,
                                                    files: fileSuppressions.set)
            let interposer = configuration.preloadLibrary ?? (try? PreloadLibrary.locate())
            let reportOptions = configuration.report
            configuration.finishReport = { report in
                suppressedReport(report, options: reportOptions, suppressions: reportSuppressions.set, interposer: interposer)
            }
            configuration.trace = noTrace ? .none : traceOutput.map { .path($0) } ?? .defaultName
            configuration.followForks = followForks == "yes"
            configuration.childTracing = valgrind.childTracing

            // Every file swiftleak writes is opened before the program starts: a wrong path is
            // known now, not after the run.
            let output: ReportOutput
            let jsonOutput: OutputFile?
            do {
                output = try ReportOutput(logFile: report.logFile)
                jsonOutput = try report.jsonFile.map { try OutputFile(path: $0, purpose: "the JSON report") }
            } catch {
                throw fail("\(error)")
            }
            // Valgrind prints `Parent PID:` in the header of a report written to a log file.
            let parentInHeader = report.logFile != nil
            var result: RunResult
            do {
                result = try RunSession.run(configuration) { pid in
                    valgrind.programStarted()
                    // Valgrind's Parent PID is that of the process that started the run: the
                    // launched program's is swiftleak's parent, as the program runs where
                    // Valgrind's own process would.
                    output.write(TextReport.header(command: configuration.command.map(\.escapedForDisplay), options: configuration.report,
                                                   parentPID: parentInHeader ? getppid() : nil), pid: pid)
                }
            } catch let error as LaunchError {
                throw fail(error.description, status: error.exitStatus)
            } catch let error as SessionError {
                throw fail(error.description)
            }
            // The run's memory is freed on the second core while the reports are finished and printed.
            result.releaseResourcesInBackground()
            // The session passed each report through `finishReport` (the suppressions).
            let suppressionWarnings = reportSuppressions.warnings + fileSuppressions.warnings
            for index in result.reports.indices {
                result.reports[index].warnings += suppressionWarnings
            }
            let rootPid = result.rootPid
            let launched = result.startOrder[0]
            // One section per image, in the order the processes ended, each under its own ==PID==
            // (a forked child's and an exec'd image's with its own header, as Valgrind prints one
            // for each; the launched program's went out when it started).
            // --child-silent-after-fork=yes, as Valgrind: a forked child writes nothing.
            let silentChildren = valgrind.childSilentAfterFork == "yes"
            // A forked child's first image is its parent's copy: replaced by an exec, it held only
            // what the child inherited (Valgrind prints nothing for it). Left out of the text, as
            // the XML leaves every replaced image out; the JSON lists it.
            var imagesSeen: Set<Int32> = [rootPid]
            var forkCopiesReplaced = Set<Int>()
            for index in result.startOrder where imagesSeen.insert(result.reports[index].pid).inserted {
                if result.reports[index].replacedByExec != nil { forkCopiesReplaced.insert(index) }
            }
            for (index, report) in result.reports.enumerated() where report.pid == rootPid || !silentChildren {
                if forkCopiesReplaced.contains(index) { continue }
                var lines = TextReport.render(report, options: configuration.report)
                if index != launched {
                    lines = TextReport.header(command: report.command, options: configuration.report,
                                              parentPID: parentInHeader ? report.ppid : nil) + lines
                }
                if index == launched, let trace = result.tracePath, !configuration.report.quiet {
                    lines.append(Self.traceLine(path: trace, failed: result.traceFailure != nil))
                }
                output.write(lines, pid: report.pid)
                // Valgrind writes one XML document per process: a child's only where the file
                // name has %p (one file each), as with Valgrind's; an exec'd image's replaces the
                // one before it under the same pid, as Valgrind's does.
                guard report.replacedByExec == nil, report.pid == rootPid || valgrind.xmlFile?.contains("%p") == true else { continue }
                if let problem = valgrind.writeXML(report, command: report.command, options: configuration.report,
                                                   interposer: interposer) {
                    writeError(problem)
                }
            }
            // Said even under -q: the figures above do not cover these programs.
            if let line = UntrackedProgram.summaryLine(result.untracked) {
                output.write(["Untracked: " + line], pid: rootPid)
            }
            output.close()
            if let jsonOutput {
                jsonOutput.write(JSONReport.render(result.reportsInStartOrder, options: configuration.report))
                do { try jsonOutput.close() } catch { writeError("\(error)") }
            }

            PhaseTimer.mark("reports-printed")
            // Valgrind's --error-exitcode=0 turns the option off.
            if let code = report.errorExitCode, code != 0,
               result.reports.contains(where: { !$0.errorRecords(configuration.report).isEmpty }) {
                Glibc.exit(code)
            }
            switch result.exit {
            case .exited(let code):
                Glibc.exit(code)
            case .signaled(let signal, let coreDumped):
                swl_die_by_signal(signal, coreDumped)
            }
        }

        /// The report's last line, where the trace is: offered to `analyze` only when it was
        /// written whole. After a write error (full disk, I/O error) the file is cut short or
        /// empty, and the warning above the leaks says why.
        static func traceLine(path: String, failed: Bool) -> String {
            failed ? "Trace: \(path) is incomplete or missing: writing it failed (see the warning above)"
                   : "Trace: \(path) (swiftleak analyze \(path))"
        }

        func fail(_ message: String, status: Int32 = 126) -> ExitCode {
            writeError(message)
            return ExitCode(status)
        }
    }
}

/// One line on standard error, "swiftleak: " first; an error about an error is not reported.
func writeError(_ message: String) {
    let stderr = OutputFile.standardError(purpose: "an error message")
    stderr.write("swiftleak: \(message)\n")
    try? stderr.close()
}

/// Where the text report goes: stderr (each line prefixed "==PID== " like Valgrind's) or a file.
/// A `--log-file` name with `%p` is opened once the program's pid is known.
final class ReportOutput {
    private var file: OutputFile
    /// A `--log-file` name with `%p`: one file per process, opened at its first line.
    private var pattern: String?
    private var perProcess: [Int32: OutputFile] = [:]

    init(logFile: String?, toStandardOutput: Bool = false) throws {
        file = toStandardOutput ? .standardOutput(purpose: "the report") : .standardError(purpose: "the report")
        guard let logFile else { return }
        // Checked now, so that a bad name stops swiftleak before the program runs.
        let checked = try ValgrindCommandLine.expandFileName(logFile, pid: 0, environment: ValgrindCommandLine.environment)
        if logFile.contains("%p") {
            pattern = logFile
        } else {
            file = try OutputFile(path: checked, purpose: "the log file")
        }
    }

    private func file(for pid: Int32) -> OutputFile {
        guard let pattern else { return file }
        if let opened = perProcess[pid] { return opened }
        do {
            let opened = try OutputFile(path: try ValgrindCommandLine.expandFileName(pattern, pid: pid, environment: ValgrindCommandLine.environment),
                                        purpose: "the log file")
            perProcess[pid] = opened
            return opened
        } catch {
            writeError("\(error); the report goes to stderr")
            perProcess[pid] = file
            return file
        }
    }

    func write(_ lines: [String], pid: Int32) {
        var text = ""
        for line in lines {
            if line.first == TextReport.unprefixedMarker {
                text += line.dropFirst() + "\n"
            } else {
                text += "==\(pid)== " + line + "\n"
            }
        }
        file(for: pid).write(text)
    }

    /// Closes the file; a report that could not be written is said in one line on stderr (which
    /// is itself the report's file only when nothing can be said anyway).
    func close() {
        for opened in perProcess.values where opened !== file {
            do { try opened.close() } catch { writeError("\(error)") }
        }
        do { try file.close() } catch { writeError("\(error)") }
    }
}

