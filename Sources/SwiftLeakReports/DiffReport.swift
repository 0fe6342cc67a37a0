import SwiftLeakCore
import SwiftLeakModel

/// `swiftleak diff BASE NEW`: per stack, matched by its symbols (function, file and module of every
/// frame; not addresses, so runs with ASLR and rebuilt binaries match), what changed.
public struct DiffRow: Sendable, Hashable {
    /// The stack as both sides name it: the allocation function, then the frames innermost first.
    public var function: AllocationFunction
    public var frames: [SymbolizedFrame]
    public var leakedBytes: Int64 = 0
    public var leakedBlocks: Int64 = 0
    public var peakBytes: Int64 = 0
    public var allocations: Int64 = 0

    public var isZero: Bool { leakedBytes == 0 && leakedBlocks == 0 && peakBytes == 0 && allocations == 0 }
}

/// One process of a diff of two process trees: its place in the tree (see
/// `LoadedTraceTree.positions`), its pid on each side (nil: only the other side has it), and what
/// changed (against nothing for a process one side lacks).
public struct DiffSection: Sendable {
    public var position: String
    public var basePid: Int32?
    public var newPid: Int32?
    public var command: [String]
    public var rows: [DiffRow]

    public init(position: String, basePid: Int32?, newPid: Int32?, command: [String], rows: [DiffRow]) {
        self.position = position
        self.basePid = basePid
        self.newPid = newPid
        self.command = command
        self.rows = rows
    }
}

public enum DiffReport {
    struct Key: Hashable {
        var function: UInt8
        var frames: [FrameName]
    }
    struct FrameName: Hashable {
        var function: String?
        var file: String?
        var module: String?
        /// For frames without a name: the offset in the module, which is stable across ASLR.
        var offset: UInt64?
    }

    static func key(_ site: SiteFigures, _ analysis: HeapAnalysis) -> (Key, [SymbolizedFrame]) {
        let frames = analysis.frames(of: site)
        let names = frames.map { frame in
            FrameName(function: frame.function, file: frame.file.map(baseName),
                      module: frame.object.map(baseName), offset: frame.function == nil ? frame.moduleOffset : nil)
        }
        return (Key(function: site.function.rawValue, frames: names), frames)
    }

    static func baseName(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }

    /// Rows with a change, the largest growth of leaked bytes first (then peak, then calls).
    public static func compare(base: HeapAnalysis, new: HeapAnalysis) -> [DiffRow] {
        var rows: [Key: DiffRow] = [:]
        func add(_ analysis: HeapAnalysis, sign: Int64) {
            for site in analysis.sites where site.allocations > 0 || site.liveBlocks > 0 {
                let (key, frames) = key(site, analysis)
                var row = rows[key] ?? DiffRow(function: site.function, frames: frames)
                row.leakedBytes += sign * Int64(site.leakedBytes)
                row.leakedBlocks += sign * Int64(site.leakedBlocks)
                row.peakBytes += sign * Int64(site.bytesAtPeak)
                row.allocations += sign * Int64(site.allocations)
                if sign > 0 { row.frames = frames }
                rows[key] = row
            }
        }
        add(base, sign: -1)
        add(new, sign: 1)
        return rows.values.filter { !$0.isZero }.sorted { a, b in
            if a.leakedBytes != b.leakedBytes { return a.leakedBytes > b.leakedBytes }
            if a.peakBytes != b.peakBytes { return a.peakBytes > b.peakBytes }
            if a.allocations != b.allocations { return a.allocations > b.allocations }
            return a.frames.map { $0.function ?? "" }.lexicographicallyPrecedes(b.frames.map { $0.function ?? "" })
        }
    }

    static func signed(_ value: Int64) -> String {
        (value > 0 ? "+" : value < 0 ? "-" : "") + groupedDigits(value.magnitude)
    }

    public static func text(_ rows: [DiffRow], base: String, new: String, numCallers: Int) -> [String] {
        ["swiftleak diff: \(base) -> \(new)"] + rowLines(rows, numCallers: numCallers)
    }

    /// The diff of two traces of process trees: one section per process, matched by place.
    public static func text(_ sections: [DiffSection], base: String, new: String, numCallers: Int) -> [String] {
        var lines = ["swiftleak diff: \(base) -> \(new)"]
        for section in sections {
            lines.append("")
            let pids = [section.basePid.map { "pid \($0) in the base" } ?? "not in the base",
                        section.newPid.map { "pid \($0) in the new" } ?? "not in the new"]
            lines.append("Process \(section.position) (\(pids.joined(separator: ", "))):")
            lines += rowLines(section.rows, numCallers: numCallers)
        }
        return lines
    }

    static func rowLines(_ rows: [DiffRow], numCallers: Int) -> [String] {
        var lines: [String] = []
        guard !rows.isEmpty else {
            return lines + ["No change: every stack leaked, peaked and allocated the same."]
        }
        lines.append("\(rows.count) stack\(rows.count == 1 ? "" : "s") changed, largest growth first:")
        for row in rows {
            lines.append("")
            lines.append("\(signed(row.leakedBytes)) bytes in \(signed(row.leakedBlocks)) blocks leaked, \(signed(row.peakBytes)) bytes at the peak, \(signed(row.allocations)) allocations")
            lines.append("   at 0x0: \(row.function.displayName) (in swiftleak's interposer)")
            for frame in row.frames.prefix(max(0, numCallers - 1)) {
                lines.append("   by " + TextReport.describe(frame))
            }
        }
        return lines
    }

    public static func json(_ rows: [DiffRow], base: String, new: String) -> String {
        "{\n  \"tool\": \"swiftleak\", \"base\": \(JSONReport.quote(base)), \"new\": \(JSONReport.quote(new)),\n  \"changes\": "
            + changes(rows, indent: "  ") + "\n}\n"
    }

    /// Trees: `changes` is the launched programs' (the first section's), as for one process;
    /// `processes` has every section.
    public static func json(_ sections: [DiffSection], base: String, new: String) -> String {
        var out = "{\n  \"tool\": \"swiftleak\", \"base\": \(JSONReport.quote(base)), \"new\": \(JSONReport.quote(new)),\n  \"changes\": "
        out += changes(sections.first?.rows ?? [], indent: "  ") + ",\n  \"processes\": ["
        for (index, section) in sections.enumerated() {
            out += index == 0 ? "\n" : ",\n"
            out += "    {\"position\": \(JSONReport.quote(section.position)), "
                + "\"base_pid\": \(section.basePid.map(String.init) ?? "null"), \"new_pid\": \(section.newPid.map(String.init) ?? "null"), "
                + "\"command\": [" + section.command.map(JSONReport.quote).joined(separator: ", ") + "],\n"
                + "      \"changes\": " + changes(section.rows, indent: "      ") + "}"
        }
        out += sections.isEmpty ? "]\n}\n" : "\n  ]\n}\n"
        return out
    }

    static func changes(_ rows: [DiffRow], indent: String) -> String {
        var out = "["
        for (index, row) in rows.enumerated() {
            out += index == 0 ? "\n" : ",\n"
            var frames = [JSONReport.frame(SymbolizedFrame(ip: 0, function: row.function.displayName))]
            frames += row.frames.map(JSONReport.frame)
            out += indent + "  {\"leaked_bytes\": \(row.leakedBytes), \"leaked_blocks\": \(row.leakedBlocks), "
                + "\"peak_bytes\": \(row.peakBytes), \"allocations\": \(row.allocations), "
                + "\"function\": \(JSONReport.quote(row.function.displayName)), \"stack\": [" + frames.joined(separator: ", ") + "]}"
        }
        out += rows.isEmpty ? "]" : "\n" + indent + "]"
        return out
    }
}
