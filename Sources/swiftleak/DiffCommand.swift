import ArgumentParser
import Glibc
import SwiftLeakCore
import SwiftLeakReports
import SwiftLeakTrace

extension SwiftLeakCommand {
    struct Diff: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Compare two traces (or two moments of one): what grew, per stack.",
            discussion: """
                Stacks are matched by their symbols (function, file, module), not addresses, so two
                runs with ASLR or two builds match.
                Examples: swiftleak diff before.gz after.gz
                          swiftleak diff --at 5 --new-at 60 run.gz run.gz
                """
        )

        @Option(name: .customLong("at"), help: "Compare the live heap at this moment (seconds) of each trace.")
        var at: Double?

        @Option(name: .customLong("new-at"), help: "The moment in NEW, when it differs from --at.")
        var newAt: Double?

        @Option(name: .customLong("num-callers"), help: "Frames shown per stack.")
        var numCallers: Int = 12

        @Option(name: .customLong("demangle"), help: "yes or no.")
        var demangle: String = "yes"

        @Flag(name: .customLong("json"), help: "Print JSON instead of text.")
        var json = false

        @Argument(help: "The baseline trace.")
        var base: String

        @Argument(help: "The trace to compare with it.")
        var new: String

        func validate() throws {
            for (name, value) in [("--at", at), ("--new-at", newAt)] {
                if let value, !(value >= 0 && value.isFinite) {
                    throw ValidationError("\(name) must be a number of seconds, 0 or more")
                }
            }
            guard ["yes", "no"].contains(demangle) else {
                throw ValidationError("--demangle must be yes or no, not '\(demangle)'")
            }
            guard (1...500).contains(numCallers) else {
                throw ValidationError("--num-callers must be between 1 and 500")
            }
        }

        func run() throws {
            var options = ReportOptions()
            options.demangle = demangle == "yes"
            options.numCallers = numCallers
            func analysis(_ path: String, at: Double?) throws -> HeapAnalysis {
                let loaded = try loadTrace(path, at: at)
                for warning in loaded.exit.warnings where warning.hasPrefix("the trace is") {
                    writeError("\(path): \(warning)")
                }
                return HeapAnalysis(heap: loaded.heap, exit: loaded.exit, symbols: loaded.symbols, options: options)
            }
            let rows = DiffReport.compare(base: try analysis(base, at: at), new: try analysis(new, at: newAt ?? at))
            if json {
                printOut(DiffReport.json(rows, base: base, new: new))
            } else {
                printOut(DiffReport.text(rows, base: base, new: new, numCallers: numCallers).map { $0 + "\n" }.joined())
            }
        }
    }
}
