import SwiftLeakCore
import SwiftLeakSuppressions

/// The Valgrind-shaped text report, one line per element, each to be prefixed with "==PID== ".
public enum TextReport {
    /// Marks a line to be written without the "==PID== " prefix: Valgrind prints the blocks of
    /// `--gen-suppressions` bare, so they can be pasted into a file as they are.
    public static let unprefixedMarker: Character = "\u{1}"

    /// `command` is the program and its arguments as display text, escaped (`escapedForDisplay`):
    /// an argument holding a newline must not start a report line of its own. `parentPID`: the
    /// `Parent PID:` line, which Valgrind prints when the report goes to a log file (not to stderr).
    public static func header(command: [String], options: ReportOptions, parentPID: Int32? = nil) -> [String] {
        if options.quiet { return [] }
        return [
            "swiftleak-\(options.toolVersion), a memory leak tracker",
            "Command: " + command.joined(separator: " "),
        ] + (parentPID.map { ["Parent PID: \($0)"] } ?? []) + [""]
    }

    public static func render(_ report: ProcessReport, options: ReportOptions) -> [String] {
        if options.quiet { return quietRender(report, options: options) }
        var lines: [String] = [""]
        if case .signaled(let signal, _) = report.exit {
            // Valgrind's words, so scripts that look for them find them.
            lines.append("Process terminating with default action of signal \(signal) (\(signalName(signal)))")
            lines.append("")
        }
        let heap = report.heap
        lines.append("HEAP SUMMARY:")
        lines.append("    in use at \(report.replacedByExec == nil ? "exit" : "exec"): \(groupedDigits(heap.inUseAtExit.bytes)) bytes in \(groupedDigits(heap.inUseAtExit.blocks)) blocks")
        lines.append("  total heap usage: \(groupedDigits(heap.allocations)) allocs, \(groupedDigits(heap.frees)) frees, \(groupedDigits(heap.bytesAllocated)) bytes allocated")
        lines.append("")
        for warning in report.warnings {
            lines.append("Warning: " + warning)
        }
        if options.leakCheck == .no {
            lines.append("For a detailed leak analysis, rerun with: --leak-check=full")
            lines.append("")
            lines.append(errorSummary(report, options: options))
            return lines
        }
        if !report.scanRan, let note = report.scanNote {
            lines.append("No leak classification: " + note)
            lines.append("")
        }
        if report.replacedByExec != nil {
            // Its memory went with the exec: nothing can be classified, and nothing counts as an
            // error (see `errorRecords`); the JSON report still lists the blocks.
            return lines
        }

        if heap.inUseAtExit.blocks == 0 {
            lines.append("All heap blocks were freed -- no leaks are possible")
            lines.append("")
            lines.append(errorSummary(report, options: options))
            return lines
        }

        lines += lossRecords(report, options: options)

        lines.append("LEAK SUMMARY:")
        let width = 15
        func line(_ label: String, _ count: ByteCount) -> String {
            String(repeating: " ", count: max(0, width - label.count)) + label
                + ": \(groupedDigits(count.bytes)) bytes in \(groupedDigits(count.blocks)) blocks"
        }
        if report.scanRan {
            lines.append("   " + line("definitely lost", report.total(.definitelyLost)))
            lines.append("   " + line("indirectly lost", report.total(.indirectlyLost)))
            lines.append("   " + line("possibly lost", report.total(.possiblyLost)))
            lines.append("   " + line("still reachable", report.total(.stillReachable)))
        } else {
            lines.append("   " + line("not freed", report.total(.unclassified)))
        }
        lines.append("   " + line("suppressed", report.suppressed))
        if options.leakCheck == .summary {
            lines.append("Rerun with --leak-check=full to see details of leaked memory")
        } else if !options.showKinds.contains(.stillReachable) && report.total(.stillReachable).blocks > 0 {
            // Valgrind's words; indirectly lost blocks are counted in their definite leader's record.
            lines.append("Reachable blocks (those to which a pointer was found) are not shown.")
            lines.append("To see them, rerun with: --leak-check=full --show-leak-kinds=all")
        }
        lines.append("")
        if options.verbose && !report.usedSuppressions.isEmpty {
            lines += usedSuppressions(report)
            lines.append("")
        }
        lines += growthPointer(report)
        lines.append(errorSummary(report, options: options))
        return lines
    }

    /// The loss records shown (not suppressed, of a kind --show-leak-kinds asks for), numbered
    /// among all records as Valgrind numbers them, each followed by its suppression block under
    /// --gen-suppressions.
    static func lossRecords(_ report: ProcessReport, options: ReportOptions) -> [String] {
        guard options.leakCheck == .full else { return [] }
        var lines: [String] = []
        for (index, record) in report.lossRecords.enumerated()
        where options.showKinds.contains(record.kind) && record.suppressedBy == nil {
            lines.append(lossRecordTitle(record, number: index + 1, of: report.lossRecords.count))
            lines += frames(record, options: options)
            lines.append("")
            if options.genSuppressions {
                lines += SuppressionWriter.block(record, numCallers: options.numCallers).map { String(unprefixedMarker) + $0 }
            }
        }
        return lines
    }

    /// `-q`: Valgrind prints the errors only, so a clean run prints nothing at all.
    static func quietRender(_ report: ProcessReport, options: ReportOptions) -> [String] {
        var lines = report.warnings.map { "Warning: " + $0 }
        if report.replacedByExec != nil { return lines }
        if !report.scanRan, let note = report.scanNote, options.leakCheck != .no { lines.append("No leak classification: " + note) }
        return lines + lossRecords(report, options: options)
    }

    /// Valgrind's `-v` lines: "used_suppression:      1 name file.supp:3 suppressed: 10 bytes in 1 blocks".
    static func usedSuppressions(_ report: ProcessReport) -> [String] {
        report.usedSuppressions.map { use in
            let count = String(use.records)
            return "used_suppression: " + String(repeating: " ", count: max(0, 6 - count.count)) + count
                + " \(use.name) \(use.location) suppressed: \(groupedDigits(use.suppressed.bytes)) bytes in \(groupedDigits(use.suppressed.blocks)) blocks"
        }
    }

    /// "SIGSEGV" for 11, as Valgrind names them; real-time signals as "SIGRT<n>".
    static func signalName(_ signal: Int32) -> String {
        let names = [1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS",
                     8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE",
                     14: "SIGALRM", 15: "SIGTERM", 16: "SIGSTKFLT", 17: "SIGCHLD", 18: "SIGCONT", 19: "SIGSTOP",
                     20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU", 23: "SIGURG", 24: "SIGXCPU", 25: "SIGXFSZ",
                     26: "SIGVTALRM", 27: "SIGPROF", 28: "SIGWINCH", 29: "SIGIO", 30: "SIGPWR", 31: "SIGSYS"]
        if let name = names[Int(signal)] { return name }
        return signal >= 32 ? "SIGRT\(signal - 32)" : "signal \(signal)"
    }

    /// One paragraph when stacks grew all run: the full list is `analyze`'s.
    static func growthPointer(_ report: ProcessReport) -> [String] {
        guard let fastest = report.growthSuspects.first else { return [] }
        let place = fastest.stack.first { !SwiftRuntime.isAllocationPlumbing($0) }.map(describe) ?? fastest.function.displayName
        let count = report.growthSuspects.count
        return [
            "Growth suspects: \(count) stack\(count == 1 ? "" : "s") held more reachable memory the longer the program ran;",
            "the fastest grew by \(formatted(fastest.bytesPerSecond)) bytes/s (\(groupedDigits(fastest.bytes)) bytes in \(groupedDigits(fastest.blocks)) blocks at exit) at",
            "   " + place,
            "`swiftleak analyze` on the trace lists them all.",
            "",
        ]
    }

    static func errorSummary(_ report: ProcessReport, options: ReportOptions) -> String {
        let errors = report.errorRecords(options)
        let suppressed = report.lossRecords.filter { $0.suppressedBy != nil }
        return "ERROR SUMMARY: \(groupedDigits(UInt64(errors.count))) errors from \(groupedDigits(UInt64(errors.count))) contexts (suppressed: \(suppressed.count) from \(suppressed.count))"
    }

    static func lossRecordTitle(_ record: LossRecord, number: Int, of total: Int) -> String {
        let blocks = "\(groupedDigits(record.blocks)) blocks" // Valgrind says "1 blocks" too
        let place = "in loss record \(groupedDigits(UInt64(number))) of \(groupedDigits(UInt64(total)))"
        if record.kind == .definitelyLost && record.indirectBytes > 0 {
            let all = record.bytes + record.indirectBytes
            return "\(groupedDigits(all)) (\(groupedDigits(record.bytes)) direct, \(groupedDigits(record.indirectBytes)) indirect) bytes in \(blocks) are definitely lost \(place)"
        }
        return "\(groupedDigits(record.bytes)) bytes in \(blocks) are \(record.kind.valgrindWords) \(place)"
    }

    /// "   at 0x…: malloc" then "   by 0x…: caller (file.c:12)": numCallers stack entries, each
    /// with the frames inlined at its address, as Valgrind prints them.
    static func frames(_ record: LossRecord, options: ReportOptions) -> [String] {
        var lines = ["   at 0x0: \(record.function.displayName) (in swiftleak's interposer)"]
        for frame in MatchFrame.stackPrefix(record.stack, addresses: max(0, options.numCallers - 1)) {
            lines.append("   by " + describe(frame))
        }
        return lines
    }

    public static func describe(_ frame: SymbolizedFrame) -> String {
        var text = frame.ip.hexString + ": "
        text += frame.function ?? "???"
        if let file = frame.file {
            let base = file.split(separator: "/").last.map(String.init) ?? file
            text += " (" + base + (frame.line.map { ":\($0)" } ?? "") + ")"
        } else if let object = frame.object {
            text += " (in " + object + (frame.moduleOffset.map { "+0x" + String($0, radix: 16) } ?? "") + ")"
        }
        if let note = frame.note { text += " [" + note + "]" }
        return text
    }
}
