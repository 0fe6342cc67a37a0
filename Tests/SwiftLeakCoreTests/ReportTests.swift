import SwiftLeakCore
import SwiftLeakReports
import Testing

@Suite("Leak kinds and report text")
struct ReportTests {
    @Test("--show-leak-kinds parses Valgrind's syntax")
    func leakKindParsing() {
        #expect(LeakKindSet(parsing: "all") == .all)
        #expect(LeakKindSet(parsing: "none")?.kinds == [])
        #expect(LeakKindSet(parsing: "definite,possible") == .defaultKinds)
        #expect(LeakKindSet(parsing: "indirect")?.kinds == [.indirectlyLost])
        #expect(LeakKindSet(parsing: "reachable,definite")?.kinds == [.stillReachable, .definitelyLost, .unclassified])
        #expect(LeakKindSet(parsing: "definitely") == nil)
        #expect(LeakKindSet(parsing: "definite,") == nil)
        #expect(LeakKindSet(parsing: "") == nil)
    }

    @Test("numbers are grouped by thousands as Valgrind prints them")
    func grouping() {
        #expect(groupedDigits(0) == "0")
        #expect(groupedDigits(999) == "999")
        #expect(groupedDigits(1000) == "1,000")
        #expect(groupedDigits(72_704) == "72,704")
        #expect(groupedDigits(1_234_567_890) == "1,234,567,890")
    }

    static func sampleReport() -> ProcessReport {
        var report = ProcessReport(pid: 42, ppid: 41, command: ["./prog", "a b"])
        report.exit = .exited(code: 0)
        report.scanRan = true
        report.heap.allocations = 10
        report.heap.frees = 6
        report.heap.bytesAllocated = 2048
        report.heap.inUseAtExit = ByteCount(bytes: 1120, blocks: 4)
        report.summary = [.definitelyLost: ByteCount(bytes: 120, blocks: 3), .stillReachable: ByteCount(bytes: 1000, blocks: 1)]
        report.lossRecords = [
            LossRecord(kind: .definitelyLost, bytes: 120, blocks: 3, indirectBytes: 0, function: .malloc,
                       stack: [SymbolizedFrame(ip: 0x401136, function: "site_a", file: "/src/direct.c", line: 6, object: "/bin/direct")]),
            LossRecord(kind: .stillReachable, bytes: 1000, blocks: 1, indirectBytes: 0, function: .operatorNew,
                       stack: [SymbolizedFrame(ip: 0x401200, object: "/bin/direct")]),
        ]
        return report
    }

    @Test("the text report has Valgrind's shape and wording")
    func textShape() {
        let lines = TextReport.render(Self.sampleReport(), options: ReportOptions())
        #expect(lines.contains("    in use at exit: 1,120 bytes in 4 blocks"))
        #expect(lines.contains("  total heap usage: 10 allocs, 6 frees, 2,048 bytes allocated"))
        #expect(lines.contains("120 bytes in 3 blocks are definitely lost in loss record 1 of 2"))
        #expect(lines.contains("   at 0x0: malloc (in swiftleak's interposer)"))
        #expect(lines.contains("   by 0x401136: site_a (direct.c:6)"))
        #expect(lines.contains("   definitely lost: 120 bytes in 3 blocks"))
        #expect(lines.contains("   still reachable: 1,000 bytes in 1 blocks"))
        #expect(lines.contains("Reachable blocks (those to which a pointer was found) are not shown."))
        #expect(!lines.contains { $0.contains("are still reachable in loss record") })
        #expect(lines.last == "ERROR SUMMARY: 1 errors from 1 contexts (suppressed: 0 from 0)")
    }

    @Test("--show-leak-kinds=all lists reachable records; --leak-check=summary lists none")
    func showKinds() {
        var options = ReportOptions()
        options.showKinds = .all
        #expect(TextReport.render(Self.sampleReport(), options: options)
            .contains("1,000 bytes in 1 blocks are still reachable in loss record 2 of 2"))
        options.leakCheck = .summary
        let summary = TextReport.render(Self.sampleReport(), options: options)
        #expect(!summary.contains { $0.contains("in loss record") })
        #expect(summary.contains("Rerun with --leak-check=full to see details of leaked memory"))
    }

    @Test("a definite record with indirect bytes says so")
    func indirectTitle() {
        let record = LossRecord(kind: .definitelyLost, bytes: 32, blocks: 1, indirectBytes: 64, function: .malloc, stack: [])
        let lines = TextReport.render({
            var report = Self.sampleReport()
            report.lossRecords = [record]
            return report
        }(), options: ReportOptions())
        #expect(lines.contains("96 (32 direct, 64 indirect) bytes in 1 blocks are definitely lost in loss record 1 of 1"))
    }

    @Test("JSON follows the contract of design.md §3")
    func json() throws {
        let text = JSONReport.render([Self.sampleReport()], options: ReportOptions())
        #expect(text.contains("\"tool\": \"swiftleak\""))
        #expect(text.contains("\"command\": [\"./prog\", \"a b\"]"))
        #expect(text.contains("\"exit\": {\"code\": 0}"))
        #expect(text.contains("\"definitely_lost\": {\"bytes\": 120, \"blocks\": 3}"))
        #expect(text.contains("\"suppressed\": {\"bytes\": 0, \"blocks\": 0}"))
        #expect(text.contains("{\"ip\": \"0x401136\", \"function\": \"site_a\", \"file\": \"/src/direct.c\", \"line\": 6, \"object\": \"/bin/direct\", \"inlined\": false}"))
        #expect(text.contains("\"suppressed_by\": null"))
        #expect(JSONReport.quote("a\"b\\c\n\u{1}") == "\"a\\\"b\\\\c\\n\\u0001\"")
    }

    @Test("JSON string literals: every control character, quote and backslash escaped; other text byte for byte")
    func jsonQuote() {
        // The escapes as JSON defines them, scalar by scalar.
        func reference(_ text: String) -> String {
            var out = "\""
            for scalar in text.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                case _ where scalar.value < 0x20:
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                default: out.unicodeScalars.append(scalar)
                }
            }
            return out + "\""
        }
        let controls = String(String.UnicodeScalarView((0..<0x20).compactMap(Unicode.Scalar.init)))
        let samples = ["", "plain", "/usr/lib/x86_64-linux-gnu/libc.so.6", "std::vector<int>::push_back(int const&)",
                       controls, controls + "\u{7f}", "tab\there", "é ünïcödé 日本 🦀\n", "quote\" back\\ slash",
                       "\r\n", "mixed 日\u{1}本\u{1f}"]
        for sample in samples {
            #expect(JSONReport.quote(sample) == reference(sample), "\(sample.debugDescription)")
        }
        #expect(JSONReport.quote(controls).contains("\\u001f"))
    }
}
