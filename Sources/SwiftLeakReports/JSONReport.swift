import SwiftLeakCore

/// The JSON report of design.md §3. Keys are written in a fixed order so files diff cleanly; fields
/// may be added over time, never renamed.
public enum JSONReport {
    public static func render(_ reports: [ProcessReport], options: ReportOptions) -> String {
        var out = "{\n  \"tool\": \"swiftleak\", \"version\": \(quote(options.toolVersion)),\n  \"processes\": ["
        for (index, report) in reports.enumerated() {
            out += index == 0 ? "\n" : ",\n"
            out += process(report)
        }
        out += "\n  ]\n}\n"
        return out
    }

    static func process(_ report: ProcessReport) -> String {
        var fields: [String] = []
        fields.append("\"pid\": \(report.pid)")
        fields.append("\"ppid\": \(report.ppid)")
        fields.append("\"command\": [" + report.command.map(quote).joined(separator: ", ") + "]")
        switch report.exit {
        case .exited(let code)?: fields.append("\"exit\": {\"code\": \(code)}")
        case .signaled(let signal, _)?: fields.append("\"exit\": {\"signal\": \(signal)}")
        case nil: fields.append("\"exit\": null")
        }
        fields.append("\"replaced_by_exec\": \(report.replacedByExec.map(quote) ?? "null")")
        var summary: [String] = []
        for kind in [LeakKind.definitelyLost, .indirectlyLost, .possiblyLost, .stillReachable] {
            summary.append("\"\(kind.rawValue)\": \(count(report.total(kind)))")
        }
        summary.append("\"suppressed\": \(count(report.suppressed))")
        summary.append("\"unclassified\": \(count(report.total(.unclassified)))")
        fields.append("\"summary\": {\n        " + summary.joined(separator: ",\n        ") + "\n      }")
        let heap = report.heap
        fields.append("\"heap\": {\"allocations\": \(heap.allocations), \"frees\": \(heap.frees), \"bytes_allocated\": \(heap.bytesAllocated), \"in_use_at_exit\": \(count(heap.inUseAtExit))}")
        fields.append("\"scan\": {\"ran\": \(report.scanRan), \"note\": \(report.scanNote.map(quote) ?? "null"), "
            + "\"bytes_scanned\": \(report.scanBytes), \"seconds\": \(report.scanSeconds), \"freeze_seconds\": \(report.freezeSeconds)}")
        let uses = report.usedSuppressions.map { use in
            "{\"name\": \(quote(use.name)), \"location\": \(quote(use.location)), \"records\": \(use.records), "
                + "\"bytes\": \(use.suppressed.bytes), \"blocks\": \(use.suppressed.blocks)}"
        }
        fields.append("\"used_suppressions\": [" + uses.joined(separator: ", ") + "]")
        fields.append("\"warnings\": [" + report.warnings.map(quote).joined(separator: ", ") + "]")
        let suspects = report.growthSuspects.map { suspect in
            "        {\"bytes\": \(suspect.bytes), \"blocks\": \(suspect.blocks), "
                + "\"bytes_per_second\": \(suspect.bytesPerSecond), \"blocks_per_second\": \(suspect.blocksPerSecond), "
                + "\"function\": \(quote(suspect.function.displayName)), "
                + "\"stack\": [" + suspect.stack.map(frame).joined(separator: ", ") + "]}"
        }
        fields.append("\"growth_suspects\": [" + (suspects.isEmpty ? "]" : "\n" + suspects.joined(separator: ",\n") + "\n      ]"))
        let records = report.lossRecords.map { record in
            "        " + lossRecord(record)
        }
        fields.append("\"loss_records\": [" + (records.isEmpty ? "]" : "\n" + records.joined(separator: ",\n") + "\n      ]"))
        return "    {\n      " + fields.joined(separator: ",\n      ") + "\n    }"
    }

    static func count(_ value: ByteCount) -> String {
        "{\"bytes\": \(value.bytes), \"blocks\": \(value.blocks)}"
    }

    static func lossRecord(_ record: LossRecord) -> String {
        var frames = [frame(SymbolizedFrame(ip: 0, function: record.function.displayName, object: nil))]
        frames += record.stack.map(frame)
        return "{\"kind\": \"\(record.kind.rawValue)\", \"bytes\": \(record.bytes), \"blocks\": \(record.blocks), "
            + "\"indirect_bytes\": \(record.indirectBytes), \"function\": \(quote(record.function.displayName)), "
            + "\"stack\": [" + frames.joined(separator: ", ") + "], "
            // Counted in `stack` above, whose frame 0 is the allocation function.
            + "\"first_user_frame\": \(record.firstUserFrame.map { String($0 + 1) } ?? "null"), "
            + "\"suppressed_by\": \(record.suppressedBy.map(quote) ?? "null"), "
            + "\"suppressed_at\": \(record.suppressedAt.map(quote) ?? "null")}"
    }

    static func frame(_ frame: SymbolizedFrame) -> String {
        var parts = ["\"ip\": \(quote("0x" + String(frame.ip, radix: 16)))"]
        parts.append("\"function\": \(frame.function.map(quote) ?? "null")")
        parts.append("\"file\": \(frame.file.map(quote) ?? "null")")
        parts.append("\"line\": \(frame.line.map(String.init) ?? "null")")
        parts.append("\"object\": \(frame.object.map(quote) ?? "null")")
        parts.append("\"inlined\": \(frame.inlined)")
        if let note = frame.note { parts.append("\"note\": \(quote(note))") }
        if let offset = frame.moduleOffset { parts.append("\"module_offset\": \(quote("0x" + String(offset, radix: 16)))") }
        return "{" + parts.joined(separator: ", ") + "}"
    }

    /// A JSON string literal.
    public static func quote(_ text: String) -> String {
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
}
