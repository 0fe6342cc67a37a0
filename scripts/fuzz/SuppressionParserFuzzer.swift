// libFuzzer entry point for the suppression parser and matcher (built by scripts/fuzz-suppressions).
// Any input must parse or fail with a located error, never trap; whatever parses is also matched
// against a fixed stack, so the matcher sees hostile globs and templates too.
import SwiftLeakCore
import SwiftLeakSuppressions

let record = LossRecord(
    kind: .definitelyLost, bytes: 8, blocks: 1, indirectBytes: 0, function: .malloc,
    stack: [
        SymbolizedFrame(ip: 0x10, function: "inlined()", file: "/s/a.c", line: 3, object: "/bin/p", inlined: true, mangledFunction: "_Z7inlinedv"),
        SymbolizedFrame(ip: 0x10, function: "f", file: "/s/a.c", line: 9, object: "/bin/p", mangledFunction: "f"),
        SymbolizedFrame(ip: 0x20, object: "/lib/libx.so"),
        SymbolizedFrame(ip: 0x30, function: "main", file: "/s/main.c", line: 1, object: "/bin/p", mangledFunction: "main"),
    ])

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    do {
        let set = try SuppressionSet.parse(text, file: "fuzz.supp")
        var report = ProcessReport(pid: 1, ppid: 0, command: ["p"])
        report.lossRecords = [record]
        report.summary[.definitelyLost] = ByteCount(bytes: 8, blocks: 1)
        let after = set.apply(to: report, numCallers: 12, interposer: "/lib/libswiftleak_preload.so")
        precondition(after.suppressed.bytes + (after.summary[.definitelyLost]?.bytes ?? 0) == 8)
    } catch {
        precondition(error.line.map { $0 >= 1 } ?? false, "error without a line: \(error)")
        precondition(error.description.hasPrefix("fuzz.supp:"))
    }
    return 0
}
