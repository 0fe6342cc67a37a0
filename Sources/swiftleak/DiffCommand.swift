import ArgumentParser
import Glibc
import SwiftLeakCore
import SwiftLeakModel
import SwiftLeakReports
import SwiftLeakTrace

extension SwiftLeakCommand {
    struct Diff: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "diff",
            abstract: "Compare two traces (or two moments of one): what grew, per stack.",
            discussion: """
                Stacks are matched by their symbols (function, file, module), not addresses, so two
                runs with ASLR or two builds match.
                Examples: swiftleak diff before.gz after.gz
                          swiftleak diff --at 5 --new-at 60 run.gz run.gz
                Traces of process trees are compared process with process, matched by their place
                in the tree (how each came from its parent, its program, its rank), not by pid.
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
            try requireYesOrNo(demangle, option: "--demangle")
            guard (1...500).contains(numCallers) else {
                throw ValidationError("--num-callers must be between 1 and 500")
            }
        }

        func run() throws {
            var options = ReportOptions()
            options.demangle = demangle == "yes"
            options.numCallers = numCallers
            func analyses(_ path: String, at: Double?) throws -> (tree: LoadedTraceTree, analyses: [HeapAnalysis]) {
                let tree = try loadTraceTree(path, at: at)
                var said: Set<String> = []
                for loaded in tree.processes {
                    for warning in loaded.exit.warnings where warning.hasPrefix("the trace is") && said.insert(warning).inserted {
                        writeError("\(path): \(warning)")
                    }
                }
                return (tree, tree.processes.map { loaded in
                    HeapAnalysis(heap: loaded.heap, exit: loaded.exit, symbols: loaded.symbols, options: options)
                })
            }
            let baseSide = try analyses(base, at: at), newSide = try analyses(new, at: newAt ?? at)
            guard baseSide.tree.processes.count > 1 || newSide.tree.processes.count > 1 else {
                let rows = DiffReport.compare(base: baseSide.analyses[0], new: newSide.analyses[0])
                if json {
                    printOut(DiffReport.json(rows, base: base, new: new))
                } else {
                    printOut(DiffReport.text(rows, base: base, new: new, numCallers: numCallers).map { $0 + "\n" }.joined())
                }
                return
            }
            // Trees: process with process by their place in the tree (pids differ between runs);
            // the launched programs always with each other.
            var basePositions = baseSide.tree.positions, newPositions = newSide.tree.positions
            basePositions[0] = newPositions[0]
            var empty = HeapModel()
            let nothing = HeapAnalysis(heap: empty.finish(), exit: ExitFacts(), symbols: SymbolTable(), options: options)
            var sections: [DiffSection] = []
            var matchedBase: Set<Int> = []
            for (index, position) in newPositions.enumerated() {
                let baseIndex = basePositions.firstIndex(of: position)
                if let baseIndex { matchedBase.insert(baseIndex) }
                let loaded = newSide.tree.processes[index]
                sections.append(DiffSection(position: position, basePid: baseIndex.map { baseSide.tree.processes[$0].process.pid },
                                            newPid: loaded.process.pid, command: loaded.process.command,
                                            rows: DiffReport.compare(base: baseIndex.map { baseSide.analyses[$0] } ?? nothing,
                                                                     new: newSide.analyses[index])))
            }
            for (index, position) in basePositions.enumerated() where !matchedBase.contains(index) {
                let loaded = baseSide.tree.processes[index]
                sections.append(DiffSection(position: position, basePid: loaded.process.pid, newPid: nil,
                                            command: loaded.process.command,
                                            rows: DiffReport.compare(base: baseSide.analyses[index], new: nothing)))
            }
            if json {
                printOut(DiffReport.json(sections, base: base, new: new))
            } else {
                printOut(DiffReport.text(sections, base: base, new: new, numCallers: numCallers).map { $0 + "\n" }.joined())
            }
        }
    }
}
