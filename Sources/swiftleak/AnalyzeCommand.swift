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
            commandName: "analyze",
            abstract: "Print the leak report of a recorded run from its trace, then heap statistics.",
            discussion: """
                Needs only the trace: the program and its libraries may be gone.
                Examples: swiftleak analyze swiftleak.myapp.4242.gz
                          swiftleak analyze --at 12.5 swiftleak.myapp.4242.gz
                          swiftleak analyze --format=folded --weight=peak trace.gz | flamegraph.pl > peak.svg
                A trace of a process tree gives one section per process, as run printed them;
                --pid PID keeps one process (all its images), for --at and --format=folded too.
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

        @Option(name: .customLong("pid"),
                help: "In a trace of several processes: only the process with this pid (each of its images).")
        var pid: Int32?

        func run() throws {
            var options = report.reportOptions
            options.genSuppressions = suppressions.generateAll
            valgrind.apply(to: &options)
            let suppressionSet: SuppressionSet
            let suppressionWarnings: [String]
            let tree = try loadTraceTree(trace, at: at)
            let root = tree.processes[0]
            do {
                // The program's own __lsan_default_suppressions() as run read it (the launched
                // program's, applied to every process as run does), from the trace.
                (suppressionSet, suppressionWarnings) = try suppressions.load(programSuppressions: root.programSuppressions)
            } catch {
                throw failure("\(error)")
            }
            let interposer = try? PreloadLibrary.locate()
            // Every image, as run built its report, in the order run printed them.
            var images = tree.reportOrder
            if let pid {
                images = images.filter { tree.processes[$0].process.pid == pid }
                guard !images.isEmpty else {
                    var pids: [Int32] = []
                    for loaded in tree.processes where !pids.contains(loaded.process.pid) { pids.append(loaded.process.pid) }
                    let listed = pids.map(String.init).joined(separator: ", ")
                    throw failure("\(trace) holds no process with pid \(pid) (it holds \(listed))")
                }
            }
            var built: [Int: ProcessReport] = [:]
            var analyses: [Int: HeapAnalysis] = [:]
            for index in images {
                let loaded = tree.processes[index]
                var processReport = ReportBuilder.build(process: loaded.process, heap: loaded.heap, exit: loaded.exit,
                                                        symbols: loaded.symbols, options: options)
                processReport.replacedByExec = loaded.replacedBy
                built[index] = finishedReport(processReport, options: options, suppressions: suppressionSet,
                                              warnings: suppressionWarnings, interposer: interposer)
                analyses[index] = HeapAnalysis(heap: loaded.heap, exit: loaded.exit, symbols: loaded.symbols, options: options)
            }
            if format == "folded" {
                let lines = images.flatMap { analyses[$0]!.foldedLines(weight: HeapAnalysis.Weight(rawValue: weight) ?? .leaked) }
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
            let rootPid = root.process.pid
            // As run prints them: the launched program's header first, then each image's section
            // (any other with its own header), each followed by its heap statistics.
            let silentChildren = valgrind.childSilentAfterFork == "yes"
            if built[0] != nil {
                output.write(TextReport.header(command: root.process.command, options: options), pid: rootPid)
            }
            for index in images where tree.processes[index].process.pid == rootPid || !silentChildren {
                let processReport = built[index]!
                let analysis = analyses[index]!
                var lines = index == 0 ? [] : TextReport.header(command: processReport.command, options: options)
                if let at {
                    lines += processReport.warnings.map { "Warning: " + $0 }
                    lines += analysis.snapshotLines(at: at)
                } else {
                    lines += TextReport.render(processReport, options: options)
                    lines += analysis.statisticsLines()
                    lines += HeapAnalysis.growthLines(processReport.growthSuspects, numCallers: options.numCallers)
                }
                output.write(lines, pid: processReport.pid)
                // One XML document per process, as run writes them.
                guard at == nil, processReport.replacedByExec == nil,
                      processReport.pid == rootPid || valgrind.xmlFile?.contains("%p") == true else { continue }
                if let problem = valgrind.writeXML(processReport, command: processReport.command, options: options,
                                                   interposer: interposer) {
                    writeError(problem)
                }
            }
            if pid == nil, let untracked = tree.untracked {
                output.write(["Untracked: " + untracked], pid: rootPid)
            }
            if let jsonOutput {
                // In the order the images started, as run's.
                jsonOutput.write(JSONReport.render(images.sorted().map { built[$0]! }, options: options))
                do { try jsonOutput.close() } catch { writeError("\(error)") }
            }
            output.close()
            if at == nil, let code = report.errorExitCode, code != 0,
               built.values.contains(where: { !$0.errorRecords(options).isEmpty }) {
                throw ExitCode(code)
            }
        }
    }
}

/// What `run` and `analyze` both do to the built report before printing it: Valgrind's leak
/// resolution, then the suppressions, as pure passes (`run` has the session run them as soon as
/// the records are known: `RunConfiguration.finishReport`), then the suppressions' warnings.
func finishedReport(_ report: ProcessReport, options: ReportOptions, suppressions: SuppressionSet,
                    warnings: [String], interposer: String?) -> ProcessReport {
    var finished = suppressedReport(report, options: options, suppressions: suppressions, interposer: interposer)
    finished.warnings += warnings
    return finished
}

/// Valgrind's leak resolution, then the suppressions: reads and changes only the records and
/// what they decide (the summary, the suppressed totals).
func suppressedReport(_ report: ProcessReport, options: ReportOptions, suppressions: SuppressionSet,
                      interposer: String?) -> ProcessReport {
    suppressions.apply(to: report.merged(resolution: options.leakResolution), numCallers: options.numCallers,
                       interposer: interposer)
}

/// Reads a trace, every process in it, or fails with its one-line reason and status 1.
func loadTraceTree(_ path: String, at: Double?) throws -> LoadedTraceTree {
    do {
        return try LoadedTraceTree.load(path: path, at: at)
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
