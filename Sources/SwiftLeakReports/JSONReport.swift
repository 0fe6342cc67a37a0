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
        var out = "{\"kind\": \"\(record.kind.rawValue)\", \"bytes\": \(record.bytes), \"blocks\": \(record.blocks), "
            + "\"indirect_bytes\": \(record.indirectBytes), \"function\": "
        appendQuoted(record.function.displayName, to: &out)
        out += ", \"stack\": ["
        appendFrame(SymbolizedFrame(ip: 0, function: record.function.displayName, object: nil), to: &out)
        for frame in record.stack {
            out += ", "
            appendFrame(frame, to: &out)
        }
        // Counted in `stack` above, whose frame 0 is the allocation function.
        out += "], \"first_user_frame\": \(record.firstUserFrame.map { String($0 + 1) } ?? "null"), \"suppressed_by\": "
        appendQuotedOrNull(record.suppressedBy, to: &out)
        out += ", \"suppressed_at\": "
        appendQuotedOrNull(record.suppressedAt, to: &out)
        out += "}"
        return out
    }

    static func frame(_ frame: SymbolizedFrame) -> String {
        var out = ""
        appendFrame(frame, to: &out)
        return out
    }

    /// One frame object, appended in place: a report of a big program has hundreds of thousands.
    static func appendFrame(_ frame: SymbolizedFrame, to out: inout String) {
        out += "{\"ip\": \"0x"
        out += String(frame.ip, radix: 16)
        out += "\", \"function\": "
        appendQuotedOrNull(frame.function, to: &out)
        out += ", \"file\": "
        appendQuotedOrNull(frame.file, to: &out)
        out += ", \"line\": "
        out += frame.line.map(String.init) ?? "null"
        out += ", \"object\": "
        appendQuotedOrNull(frame.object, to: &out)
        out += frame.inlined ? ", \"inlined\": true" : ", \"inlined\": false"
        if let note = frame.note {
            out += ", \"note\": "
            appendQuoted(note, to: &out)
        }
        if let offset = frame.moduleOffset {
            out += ", \"module_offset\": \"0x"
            out += String(offset, radix: 16)
            out += "\""
        }
        out += "}"
    }

    static func appendQuotedOrNull(_ text: String?, to out: inout String) {
        if let text { appendQuoted(text, to: &out) } else { out += "null" }
    }

    /// A JSON string literal.
    public static func quote(_ text: String) -> String {
        var out = ""
        appendQuoted(text, to: &out)
        return out
    }

    /// Appends `text` as a JSON string literal. Most texts (function names, paths) need no escape
    /// and are appended whole; the others byte by byte: every byte of a multi-byte UTF-8 sequence
    /// is at least 0x80, so only ASCII bytes are ever escaped.
    static func appendQuoted(_ text: String, to out: inout String) {
        let needsEscape = text.utf8.contains { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }
        out += "\""
        guard needsEscape else {
            out += text
            out += "\""
            return
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count + 16)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case UInt8(ascii: "\n"): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case UInt8(ascii: "\r"): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case UInt8(ascii: "\t"): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                bytes += Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 15)]]
            default: bytes.append(byte)
            }
        }
        out += String(decoding: bytes, as: UTF8.self)
        out += "\""
    }
}
