import ArgumentParser
import CSwiftLeakSys
import Glibc
import SwiftLeakCore
import SwiftLeakReports
import SwiftLeakSession
import SwiftLeakSuppressions
import SwiftLeakTracer

@main
struct SwiftLeakCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftleak",
        abstract: "Track every heap allocation of a program and report what it leaks at exit.",
        version: "0.1.0",
        subcommands: [Run.self],
        // `swiftleak [options] ./prog args`, as `valgrind [options] ./prog args`.
        defaultSubcommand: Run.self
    )

    static func main() {
        ValgrindCommandLine.startTime = ValgrindCommandLine.now()
        let rewritten = ValgrindCommandLine.rewrite(Array(CommandLine.arguments.dropFirst()),
                                                    environment: getenv("SWIFTLEAK_OPTS").map { String(cString: $0) })
        for note in rewritten.notes { writeAll(STDERR_FILENO, note + "\n") }
        main(rewritten.arguments)
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
        guard ["yes", "no"].contains(demangle) else {
            throw ValidationError("--demangle must be yes or no, not '\(demangle)'")
        }
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
            abstract: "Run a program, record its allocations, and report its leaks when it exits.",
            discussion: "Example: swiftleak run --leak-check=full -- ./myapp arg1 arg2"
        )

        @OptionGroup var report: LeakReportOptions

        @OptionGroup var suppressions: SuppressionOptions

        @OptionGroup var valgrind: ValgrindOptions

        @Flag(name: .customLong("no-trace"), help: "Do not write a trace file (none is written yet: accepted for scripts written for later versions).")
        var noTrace = false

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
            if first.hasPrefix("-") {
                let hint = ValgrindCommandLine.suggestion(for: first).map { "; did you mean \($0)?" } ?? " (put the program after --)"
                throw ValidationError("unknown option '\(first)'" + hint)
            }
        }

        func run() throws {
            var configuration = RunConfiguration(program: command[0], arguments: Array(command.dropFirst()))
            configuration.report = report.reportOptions
            configuration.ring.maxFrames = UInt32(min(128, report.numCallers + 8))
            configuration.report.genSuppressions = suppressions.generateAll
            valgrind.apply(to: &configuration.report)
            let suppressionSet: SuppressionSet
            let suppressionWarnings: [String]
            do {
                let programPath = try? Launcher.resolveProgram(command[0], environment: ProcessEnvironment.dictionary)
                (suppressionSet, suppressionWarnings) = try suppressions.load(program: programPath)
            } catch {
                throw fail("\(error)")
            }

            let output: ReportOutput
            do {
                output = try ReportOutput(logFile: report.logFile)
            } catch {
                throw fail("\(error)")
            }
            var result: RunResult
            do {
                result = try RunSession.run(configuration) { pid in
                    valgrind.programStarted()
                    output.write(TextReport.header(command: command, options: configuration.report), pid: pid)
                }
            } catch let error as LaunchError {
                throw fail(error.description)
            } catch let error as SessionError {
                throw fail(error.description)
            }
            result.report = suppressionSet.apply(to: result.report.merged(resolution: configuration.report.leakResolution), numCallers: configuration.report.numCallers,
                                                 interposer: configuration.preloadLibrary ?? (try? PreloadLibrary.locate()))
            result.report.warnings += suppressionWarnings
            output.write(TextReport.render(result.report, options: configuration.report), pid: result.report.pid)
            if let jsonFile = report.jsonFile {
                let json = JSONReport.render([result.report], options: configuration.report)
                if !writeFile(jsonFile, json) {
                    output.writeError("cannot write the JSON report to \(jsonFile): \(String(cString: strerror(errno)))")
                }
            }
            if let problem = valgrind.writeXML(result.report, command: command, options: configuration.report,
                                               interposer: configuration.preloadLibrary ?? (try? PreloadLibrary.locate())) {
                output.writeError(problem)
            }
            output.close()

            // Valgrind's --error-exitcode=0 turns the option off.
            if let code = report.errorExitCode, code != 0, !result.report.errorRecords(configuration.report).isEmpty {
                Glibc.exit(code)
            }
            switch result.exit {
            case .exited(let code):
                Glibc.exit(code)
            case .signaled(let signal, _):
                swl_die_by_signal(signal)
            }
        }

        func fail(_ message: String) -> ExitCode {
            writeAll(STDERR_FILENO, "swiftleak: \(message)\n")
            return ExitCode(126)
        }
    }
}

/// Where the text report goes: stderr (each line prefixed "==PID== " like Valgrind's) or a file.
/// A `--log-file` name with `%p` is opened once the program's pid is known.
final class ReportOutput {
    private var fd: Int32 = STDERR_FILENO
    private var pendingName: String?

    init(logFile: String?) throws {
        guard let logFile else { return }
        // Checked now, so that a bad name stops swiftleak before the program runs.
        let checked = try ValgrindCommandLine.expandFileName(logFile, pid: 0, environment: ValgrindCommandLine.environment)
        if logFile.contains("%p") {
            pendingName = logFile
        } else {
            fd = try Self.open(checked)
        }
    }

    private static func open(_ name: String) throws -> Int32 {
        let fd = Glibc.open(name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw SessionError("cannot open the log file \(name): \(String(cString: strerror(errno)))")
        }
        return fd
    }

    func write(_ lines: [String], pid: Int32) {
        if let pattern = pendingName {
            pendingName = nil
            do {
                fd = try Self.open(try ValgrindCommandLine.expandFileName(pattern, pid: pid, environment: ValgrindCommandLine.environment))
            } catch {
                writeError("\(error); the report goes to stderr")
            }
        }
        var text = ""
        for line in lines {
            if line.first == TextReport.unprefixedMarker {
                text += line.dropFirst() + "\n"
            } else {
                text += "==\(pid)== " + line + "\n"
            }
        }
        writeAll(fd, text)
    }

    func writeError(_ message: String) {
        writeAll(STDERR_FILENO, "swiftleak: \(message)\n")
    }

    func close() {
        if fd != STDERR_FILENO { Glibc.close(fd) }
    }
}

/// write(2) until done, retrying EINTR; a report that cannot be written is not worth a crash.
func writeAll(_ fd: Int32, _ text: String) {
    var bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return }
        offset += n
    }
}

func writeFile(_ path: String, _ text: String) -> Bool {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { return false }
    writeAll(fd, text)
    return Glibc.close(fd) == 0
}
