import SwiftLeakCore
import SwiftLeakSuppressions

/// `--xml=yes --xml-file=FILE`: Valgrind's XML output, protocol 4 (the format CI plugins such as
/// ValgrindCI and Jenkins' Valgrind plugin read), laid out line for line as Memcheck 3.19 writes
/// it: one `<error>` per loss record shown, with the suppression that would hide it when
/// `--gen-suppressions` is on.
public enum XMLReport {
    /// What the XML says about the run besides the report itself.
    public struct Run: Sendable {
        /// swiftleak's own path and options (Valgrind's `<vargv>`).
        public var toolArguments: [String]
        /// The program and its arguments (`<argv>`).
        public var command: [String]
        /// Seconds from swiftleak's start to the program's start and to its end (`<time>`).
        public var startedAfter: Double
        public var finishedAfter: Double
        /// The object frame 0 (the allocation function) is in: swiftleak's interposer.
        public var interposer: String?

        public init(toolArguments: [String], command: [String], startedAfter: Double, finishedAfter: Double, interposer: String?) {
            self.toolArguments = toolArguments
            self.command = command
            self.startedAfter = startedAfter
            self.finishedAfter = finishedAfter
            self.interposer = interposer
        }
    }

    public static func render(_ report: ProcessReport, run: Run, options: ReportOptions) -> String {
        var out = "<?xml version=\"1.0\"?>\n\n<valgrindoutput>\n\n"
        out += "<protocolversion>4</protocolversion>\n<protocoltool>memcheck</protocoltool>\n\n"
        out += "<preamble>\n"
        out += "  <line>swiftleak-\(escape(options.toolVersion)), a memory leak tracker</line>\n"
        out += "  <line>Command: \(escape(run.command.joined(separator: " ")))</line>\n"
        out += "</preamble>\n\n"
        out += "<pid>\(report.pid)</pid>\n<ppid>\(report.ppid)</ppid>\n<tool>memcheck</tool>\n\n"
        out += "<args>\n  <vargv>\n"
        out += argumentList(run.toolArguments)
        out += "  </vargv>\n  <argv>\n"
        out += argumentList(run.command)
        out += "  </argv>\n</args>\n\n"
        out += status("RUNNING", run.startedAfter) + "\n\n"
        out += status("FINISHED", run.finishedAfter) + "\n\n"

        if options.leakCheck == .full {
            var unique = 0
            for (index, record) in report.lossRecords.enumerated()
            where options.showKinds.contains(record.kind) && record.suppressedBy == nil {
                out += error(record, unique: unique, number: index + 1, of: report.lossRecords.count, run: run, options: options)
                unique += 1
            }
        }
        out += "<errorcounts>\n</errorcounts>\n\n<suppcounts>\n"
        for use in report.usedSuppressions {
            out += "  <pair>\n    <count>\(use.records)</count>\n    <name>\(escape(use.name))</name>\n  </pair>\n"
        }
        out += "</suppcounts>\n\n</valgrindoutput>\n\n"
        return out
    }

    /// Memcheck's `<kind>` for a leak kind.
    public static func kindName(_ kind: LeakKind) -> String {
        switch kind {
        case .definitelyLost: return "Leak_DefinitelyLost"
        case .indirectlyLost: return "Leak_IndirectlyLost"
        case .possiblyLost: return "Leak_PossiblyLost"
        case .stillReachable: return "Leak_StillReachable"
        // Valgrind has no such kind: blocks the scan could not classify may be leaks, so CI
        // sees them as lost ones.
        case .unclassified: return "Leak_DefinitelyLost"
        }
    }

    static func error(_ record: LossRecord, unique: Int, number: Int, of total: Int, run: Run, options: ReportOptions) -> String {
        var out = "<error>\n"
        out += "  <unique>0x\(String(unique, radix: 16))</unique>\n  <tid>1</tid>\n"
        out += "  <kind>\(kindName(record.kind))</kind>\n"
        out += "  <xwhat>\n    <text>\(escape(TextReport.lossRecordTitle(record, number: number, of: total)))</text>\n"
        out += "    <leakedbytes>\(record.bytes + record.indirectBytes)</leakedbytes>\n"
        out += "    <leakedblocks>\(record.blocks)</leakedblocks>\n  </xwhat>\n"
        out += "  <stack>\n"
        out += frame(ip: 0, object: run.interposer, function: record.function.displayName, file: nil, line: nil)
        for frame in MatchFrame.stackPrefix(record.stack, addresses: options.numCallers - 1) {
            out += self.frame(ip: frame.ip, object: frame.object.map(ObjectPath.canonical), function: frame.function, file: frame.file, line: frame.line)
        }
        out += "  </stack>\n"
        if options.genSuppressions {
            let suppression = self.suppression(record, options: options)
            out += suppression + "</error>\n\n" + suppression
        } else {
            out += "</error>\n\n"
        }
        return out
    }

    static func frame(ip: UInt64, object: String?, function: String?, file: String?, line: Int?) -> String {
        var out = "    <frame>\n      <ip>0x\(String(ip, radix: 16, uppercase: true))</ip>\n"
        if let object { out += "      <obj>\(escape(object))</obj>\n" }
        if let function { out += "      <fn>\(escape(function))</fn>\n" }
        if let file {
            // Valgrind splits the path into <dir> and <file>.
            if let slash = file.lastIndex(of: "/") {
                out += "      <dir>\(escape(String(file[..<slash])))</dir>\n"
                out += "      <file>\(escape(String(file[file.index(after: slash)...])))</file>\n"
            } else {
                out += "      <file>\(escape(file))</file>\n"
            }
            if let line { out += "      <line>\(line)</line>\n" }
        }
        return out + "    </frame>\n"
    }

    /// The structured and the raw form of the record's suppression. Valgrind 3.19 writes it
    /// inside the `<error>` and again right after it; both copies are kept for parsers that
    /// expect either.
    static func suppression(_ record: LossRecord, options: ReportOptions) -> String {
        var out = "  <suppression>\n"
        out += "    <sname>insert_a_suppression_name_here</sname>\n"
        out += "    <skind>Memcheck:Leak</skind>\n"
        out += "    <skaux>\(escape(SuppressionWriter.leakKindsLine(record)))</skaux>\n"
        for line in SuppressionWriter.frameLines(record, numCallers: options.numCallers) {
            let isFunction = line.hasPrefix("fun:")
            let tag = isFunction ? "fun" : "obj"
            out += "    <sframe> <\(tag)>\(escape(String(line.dropFirst(4))))</\(tag)> </sframe>\n"
        }
        let raw = SuppressionWriter.block(record, numCallers: options.numCallers).joined(separator: "\n")
        // "]]>" cannot appear inside CDATA: split it across two sections, as the protocol says.
        out += "    <rawtext>\n<![CDATA[\n" + raw.replacing("]]>", with: "]]]]><![CDATA[>") + "\n]]>\n    </rawtext>\n"
        return out + "  </suppression>\n"
    }

    static func status(_ state: String, _ seconds: Double) -> String {
        "<status>\n  <state>\(state)</state>\n  <time>\(elapsed(seconds)) </time>\n</status>"
    }

    /// Valgrind's elapsed time: days:hours:minutes:seconds.milliseconds.
    static func elapsed(_ seconds: Double) -> String {
        let milliseconds = Int((max(0, seconds) * 1000).rounded())
        let ms = milliseconds % 1000, s = milliseconds / 1000 % 60, m = milliseconds / 60_000 % 60
        let h = milliseconds / 3_600_000 % 24, d = milliseconds / 86_400_000
        func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let msText = ms < 10 ? "00\(ms)" : ms < 100 ? "0\(ms)" : "\(ms)"
        return "\(two(d)):\(two(h)):\(two(m)):\(two(s)).\(msText)"
    }

    static func argumentList(_ arguments: [String]) -> String {
        guard let exe = arguments.first else { return "" }
        var out = "    <exe>\(escape(exe))</exe>\n"
        for argument in arguments.dropFirst() { out += "    <arg>\(escape(argument))</arg>\n" }
        return out
    }

    /// Text content escaped for XML; control characters other than tab and newline, which XML
    /// 1.0 cannot carry at all, become '?'.
    public static func escape(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\t", "\n": out.unicodeScalars.append(scalar)
            case _ where scalar.value < 0x20 || scalar.value == 0xFFFE || scalar.value == 0xFFFF: out += "?"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
