import SwiftLeakCore
import SwiftLeakModel
import SwiftLeakReports
import Testing

@Suite("Report builder")
struct ReportBuilderTests {
    /// Four live blocks on two stacks, one allocation cut short by the end.
    static func heap() -> FinalHeap {
        var model = HeapModel()
        let events: [HeapEvent] = [
            .stack(id: 1, frames: [0x10, 0x11]), .stack(id: 2, frames: [0x20]),
            .allocation(address: 0x1000, size: 16, stack: 1, function: .malloc, thread: 1),
            .allocation(address: 0x2000, size: 32, stack: 2, function: .operatorNew, thread: 1),
            .allocation(address: 0x3000, size: 48, stack: 1, function: .malloc, thread: 1),
            .allocation(address: 0x4000, size: 64, stack: 2, function: .operatorNew, thread: 1),
            .abandonedSlots(count: 1),
        ]
        events.forEach { model.apply($0) }
        return model.finish()
    }

    /// What is known at the exit stop: the scan's verdicts (or why there are none) and its figures.
    static let atExitStop: [ExitFacts] = {
        var scanned = ExitFacts(verdicts: ExitVerdicts(kinds: [.definitelyLost, .stillReachable, .indirectlyLost, .possiblyLost],
                                                       indirectBytes: [48, 0, 0, 0], leaders: [-1, -1, 0, -1]))
        scanned.scanBytes = 4096
        scanned.scanSeconds = 0.01
        scanned.freezeSeconds = 0.02
        scanned.warnings = ["a warning of the scan's"]
        let notScanned = ExitFacts(scanNote: "--leak-check=no")
        return [scanned, notScanned]
    }()

    @Test("a report built at the exit stop, given the end's facts later, is the one built after the end",
          arguments: atExitStop)
    func endDescribedLater(atExitStop: ExitFacts) {
        let heap = Self.heap()
        var atEnd = atExitStop
        atEnd.exit = .exited(code: 3)
        atEnd.warnings.append("a warning of the end's")
        let process = ProcessFacts(pid: 7, ppid: 1, command: ["./prog"], startTime: 0)
        let options = ReportOptions()
        let after = ReportBuilder.build(process: process, heap: heap, exit: atEnd, symbols: SymbolTable(), options: options)
        var ahead = ReportBuilder.build(process: process, heap: heap, exit: atExitStop, symbols: SymbolTable(), options: options)
        // Without the end's facts the two differ: the comparison below tests describeEnd.
        #expect(JSONReport.render([ahead], options: options) != JSONReport.render([after], options: options))
        ReportBuilder.describeEnd(atEnd, heap: heap, in: &ahead)
        #expect(ahead.exit == .exited(code: 3))
        #expect(ahead.warnings == after.warnings)
        #expect(ahead.warnings.first?.contains("cut short") == true)
        #expect(JSONReport.render([ahead], options: options) == JSONReport.render([after], options: options))
        #expect(TextReport.render(ahead, options: options) == TextReport.render(after, options: options))
    }
}
