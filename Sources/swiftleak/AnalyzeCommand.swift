import ArgumentParser
import Glibc
import SwiftLeakCore
import SwiftLeakOutput
import SwiftLeakReports
import SwiftLeakSession
import SwiftLeakSuppressions
import SwiftLeakTrace

extension SwiftLeakCommand {
    struct Analyze: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the leak report of a recorded run from its trace, then heap statistics.",
            discussion: """
                Needs only the trace: the program and its libraries may be gone.
                Examples: swiftleak analyze swiftleak.myapp.4242.gz
                          swiftleak analyze --at 12.5 swiftleak.myapp.4242.gz
                          swiftleak analyze --format=folded --weight=peak trace.gz | flamegraph.pl > peak.svg
                """
        )

        @OptionGroup var report: LeakReportOptions

        @OptionGroup var suppressions: SuppressionOptions

        @OptionGroup var valgrind: ValgrindOptions

        @Option(name: .customLong("at"), help: "Show the live heap at this moment (seconds since the start) instead.")
        var at: Double?

        @Option(name: .customLong("format"), help: "text (default) or folded (folded stacks for flame graphs, on stdout).")
        var format: String = "text"

        @Option(name: .customLong("weight"), help: "With --format=folded: leaked, peak, allocations or temporary.")
        var weight: String = "leaked"

        @Argument(help: "The trace file (swiftleak.<program>.<pid>.gz).")
        var trace: String

        func validate() throws {
            guard ["text", "folded"].contains(format) else {
                throw ValidationError("--format must be text or folded, not '\(format)'")
            }
            guard HeapAnalysis.Weight(rawValue: weight) != nil else {
                throw ValidationError("--weight must be leaked, peak, allocations or temporary, not '\(weight)'")
            }
            if let at, !(at >= 0 && at.isFinite) {
                throw ValidationError("--at must be a number of seconds, 0 or more")
            }
        }

        func run() throws {
            var options = report.reportOptions
            options.genSuppressions = suppressions.generateAll
            valgrind.apply(to: &options)
            let suppressionSet: SuppressionSet
            let suppressionWarnings: [String]
            let loaded = try loadTrace(trace, at: at)
            do {
                // The program's own __lsan_default_suppressions() as run read it, from the trace.
                (suppressionSet, suppressionWarnings) = try suppressions.load(programSuppressions: loaded.programSuppressions)
            } catch {
                throw failure("\(error)")
            }
            let interposer = try? PreloadLibrary.locate()
            let built = finishedReport(
                ReportBuilder.build(process: loaded.process, heap: loaded.heap, exit: loaded.exit,
                                    symbols: loaded.symbols, options: options),
                options: options, suppressions: suppressionSet, warnings: suppressionWarnings, interposer: interposer)
            let analysis = HeapAnalysis(heap: loaded.heap, exit: loaded.exit, symbols: loaded.symbols, options: options)
            if format == "folded" {
                let lines = analysis.foldedLines(weight: HeapAnalysis.Weight(rawValue: weight) ?? .leaked)
                printOut(lines.map { $0 + "\n" }.joined())
                return
            }
            let output: ReportOutput
            let jsonOutput: OutputFile?
            do {
                output = try ReportOutput(logFile: report.logFile, toStandardOutput: true)
                jsonOutput = try report.jsonFile.map { try OutputFile(path: $0, purpose: "the JSON report") }
            } catch {
                throw failure("\(error)")
            }
            var lines = TextReport.header(command: loaded.process.command, options: options)
            if let at {
                lines += built.warnings.map { "Warning: " + $0 }
                lines += analysis.snapshotLines(at: at)
            } else {
                lines += TextReport.render(built, options: options)
                lines += analysis.statisticsLines()
                lines += HeapAnalysis.growthLines(built.growthSuspects, numCallers: options.numCallers)
            }
            output.write(lines, pid: built.pid)
            if let jsonOutput {
                jsonOutput.write(JSONReport.render([built], options: options))
                do { try jsonOutput.close() } catch { writeError("\(error)") }
            }
            if at == nil, let problem = valgrind.writeXML(built, command: loaded.process.command, options: options,
                                                          interposer: interposer) {
                writeError(problem)
            }
            output.close()
            if at == nil, let code = report.errorExitCode, code != 0, !built.errorRecords(options).isEmpty {
                throw ExitCode(code)
            }
        }
    }
}

/// What `run` and `analyze` both do to the built report before printing it: Valgrind's leak
/// resolution, then the suppressions, as pure passes.
func finishedReport(_ report: ProcessReport, options: ReportOptions, suppressions: SuppressionSet,
                    warnings: [String], interposer: String?) -> ProcessReport {
    var finished = suppressions.apply(to: report.merged(resolution: options.leakResolution),
                                      numCallers: options.numCallers, interposer: interposer)
    finished.warnings += warnings
    return finished
}

/// Reads a trace, or fails with its one-line reason and status 1.
func loadTrace(_ path: String, at: Double?) throws -> LoadedTrace {
    do {
        return try LoadedTrace.load(path: path, at: at)
    } catch {
        throw failure(error.description, status: 1)
    }
}

/// Prints "swiftleak: message" and gives the exit code to throw.
func failure(_ message: String, status: Int32 = 1) -> ExitCode {
    writeError(message)
    return ExitCode(status)
}

/// Writes `text` to standard output (a closed pipe is said in one line on stderr).
func printOut(_ text: String) {
    let out = OutputFile.standardOutput(purpose: "the output")
    out.write(text)
    do { try out.close() } catch { writeError("\(error)") }
}
