import SwiftLeakCore
import SwiftLeakModel

/// Per-stack figures of a whole run or a snapshot, for `analyze`'s statistics, folded stacks and
/// `diff`. "Leaked" counts blocks live at the end that are not still reachable: definitely,
/// indirectly or possibly lost, or unclassified (no scan, or a snapshot).
public struct SiteFigures: Sendable, Hashable {
    public var stack: UInt32
    public var function: AllocationFunction = .unknown
    public var allocations: UInt64 = 0
    public var bytesAllocated: UInt64 = 0
    public var temporaryAllocations: UInt64 = 0
    public var bytesAtPeak: UInt64 = 0
    public var liveBytes: UInt64 = 0
    public var liveBlocks: UInt64 = 0
    public var leakedBytes: UInt64 = 0
    public var leakedBlocks: UInt64 = 0
    var generation: UInt8 = 0
}

/// What `analyze` prints after the leak report, in heaptrack_print's terms.
public struct HeapAnalysis: Sendable {
    public var heap: FinalHeap
    public var exit: ExitFacts
    public var symbols: SymbolTable
    public var options: ReportOptions
    /// Indexed by stack id.
    public private(set) var sites: [SiteFigures]

    public init(heap: FinalHeap, exit: ExitFacts, symbols: SymbolTable, options: ReportOptions) {
        self.heap = heap
        self.exit = exit
        self.symbols = symbols
        self.options = options
        var sites = heap.sites.indices.map { SiteFigures(stack: UInt32($0)) }
        for (index, site) in heap.sites.enumerated() {
            sites[index].allocations = site.allocations
            sites[index].bytesAllocated = site.bytesAllocated
            sites[index].temporaryAllocations = site.temporaryAllocations
            sites[index].bytesAtPeak = site.bytesAtPeak
            sites[index].generation = site.generation
            sites[index].function = site.function
        }
        let kinds = exit.verdicts.flatMap { $0.kinds.count == heap.blocks.count ? $0.kinds : nil }
        for index in 0..<heap.blocks.count {
            let stack = Int(heap.blocks.stacks[index])
            guard stack < sites.count else { continue }
            let size = heap.blocks.size(index)
            sites[stack].function = heap.blocks.function(index)
            sites[stack].generation = heap.blocks.moduleGeneration(index)
            sites[stack].liveBytes += size
            sites[stack].liveBlocks += 1
            if (kinds?[index] ?? .unclassified) != .stillReachable {
                sites[stack].leakedBytes += size
                sites[stack].leakedBlocks += 1
            }
        }
        self.sites = sites
    }

    /// The symbolized frames of a site, innermost first, cut below main and demangled.
    public func frames(of site: SiteFigures) -> [SymbolizedFrame] {
        var names = NameCache(demangle: options.demangle)
        return ReportBuilder.symbolize(heap.stacks.frames(site.stack), generation: site.generation, heap: heap,
                                       symbols: symbols, names: &names)
    }

    // MARK: Text

    static let topCount = 10

    /// heaptrack_print's summary and top lists.
    public func statisticsLines() -> [String] {
        let stats = heap.statistics
        let seconds = Double(heap.duration) / 1e9
        func perSecond(_ count: UInt64) -> String {
            seconds > 0 ? formatted(Double(count) / seconds) + "/s" : "-"
        }
        var lines = ["", "HEAP STATISTICS:"]
        lines.append("    runtime: \(formatted(seconds)) s")
        lines.append("    allocations: \(groupedDigits(stats.allocations)) (\(perSecond(stats.allocations))), frees: \(groupedDigits(stats.frees)) (\(perSecond(stats.frees)))")
        let share = stats.allocations > 0 ? 100 * Double(stats.temporaryAllocations) / Double(stats.allocations) : 0
        lines.append("    temporary allocations: \(groupedDigits(stats.temporaryAllocations)) (\(formatted(share))% of allocations)")
        lines.append("    bytes allocated: \(groupedDigits(stats.bytesAllocated))")
        lines.append("    peak heap: \(groupedDigits(stats.peakBytes)) bytes in \(groupedDigits(stats.peakBlocks)) blocks, at \(formatted(Double(stats.peakTime) / 1e9)) s")
        lines.append("    peak RSS: \(groupedDigits(heap.peakResidentBytes)) bytes (sampled every 100 ms)")
        let used = sites.filter { $0.allocations > 0 || $0.liveBlocks > 0 }
        lines += top("MOST CALLS", used, by: { $0.allocations }) {
            "\(groupedDigits($0.allocations)) calls, \(groupedDigits($0.bytesAllocated)) bytes"
        }
        lines += top("MOST BYTES ALLOCATED", used, by: { $0.bytesAllocated }) {
            "\(groupedDigits($0.bytesAllocated)) bytes in \(groupedDigits($0.allocations)) calls"
        }
        lines += top("PEAK HEAP CONTRIBUTIONS (at \(formatted(Double(stats.peakTime) / 1e9)) s)", used, by: { $0.bytesAtPeak }) {
            "\(groupedDigits($0.bytesAtPeak)) bytes at the peak"
        }
        lines += top("MOST BYTES LEAKED", used, by: { $0.leakedBytes }) {
            "\(groupedDigits($0.leakedBytes)) bytes in \(groupedDigits($0.leakedBlocks)) blocks not freed and not reachable"
        }
        lines += top("MOST TEMPORARY ALLOCATIONS", used, by: { $0.temporaryAllocations }) {
            "\(groupedDigits($0.temporaryAllocations)) temporary of \(groupedDigits($0.allocations)) calls"
        }
        lines.append("")
        lines.append("ALLOCATION SIZES:")
        for (bucket, count) in heap.sizeHistogram.enumerated() where count > 0 {
            let range = bucket == 0 ? "0" : bucket == 1 ? "1" : "\(groupedDigits(1 << UInt64(bucket - 1)))-\(groupedDigits((1 << UInt64(bucket)) - 1))"
            lines.append("    " + range.padding(toLength: 28) + " \(groupedDigits(count))")
        }
        return lines
    }

    /// The `topCount` sites with the largest `key`, ties by stack. `key` is a closure, not a key
    /// path: a key path read through `swift_getAtKeyPath` in the sort's comparator was half of
    /// `analyze`'s time on a clang trace.
    func top(_ title: String, _ sites: [SiteFigures], by key: (SiteFigures) -> UInt64,
             describe: (SiteFigures) -> String) -> [String] {
        let keyed: [(key: UInt64, site: SiteFigures)] = sites.compactMap { site in
            let value = key(site)
            return value > 0 ? (value, site) : nil
        }
        let sorted = keyed.sorted { a, b in a.key != b.key ? a.key > b.key : a.site.stack < b.site.stack }
        let ranked = sorted.prefix(Self.topCount).map { $0.site }
        guard !ranked.isEmpty else { return [] }
        var lines = ["", title + ":"]
        for site in ranked {
            lines.append("  " + describe(site))
            lines += siteFrames(site).map { "      " + $0 }
        }
        return lines
    }

    func siteFrames(_ site: SiteFigures) -> [String] {
        var lines = ["at " + site.function.displayName]
        for frame in frames(of: site).prefix(max(0, min(options.numCallers, 6) - 1)) {
            lines.append("by " + TextReport.describe(frame))
        }
        return lines
    }

    /// Growth suspects, biggest first.
    public static func growthLines(_ suspects: [GrowthSuspect], numCallers: Int) -> [String] {
        guard !suspects.isEmpty else { return ["", "GROWTH SUSPECTS: none (no stack's reachable bytes rose through the run)"] }
        var lines = ["", "GROWTH SUSPECTS (reachable at exit, growing through the run; fastest first):"]
        for suspect in suspects {
            lines.append("  +\(formatted(suspect.bytesPerSecond)) bytes/s, +\(formatted(suspect.blocksPerSecond)) blocks/s; \(groupedDigits(suspect.bytes)) bytes in \(groupedDigits(suspect.blocks)) blocks at exit")
            lines.append("      at " + suspect.function.displayName)
            for frame in suspect.stack.prefix(max(0, numCallers - 1)) {
                lines.append("      by " + TextReport.describe(frame))
            }
        }
        return lines
    }

    /// The live heap of a snapshot, by stack, biggest first.
    public func snapshotLines(at seconds: Double) -> [String] {
        let live = sites.filter { $0.liveBlocks > 0 }.sorted {
            $0.liveBytes != $1.liveBytes ? $0.liveBytes > $1.liveBytes : $0.stack < $1.stack
        }
        let total = live.reduce(ByteCount()) { sum, site in
            var sum = sum
            sum.add(bytes: site.liveBytes, blocks: site.liveBlocks)
            return sum
        }
        var lines = ["", "LIVE HEAP AT \(formatted(seconds)) s: \(groupedDigits(total.bytes)) bytes in \(groupedDigits(total.blocks)) blocks"]
        for site in live {
            lines.append("")
            lines.append("\(groupedDigits(site.liveBytes)) bytes in \(groupedDigits(site.liveBlocks)) blocks")
            var names = NameCache(demangle: options.demangle)
            lines.append("   at 0x0: \(site.function.displayName) (in swiftleak's interposer)")
            let frames = ReportBuilder.symbolize(heap.stacks.frames(site.stack), generation: site.generation, heap: heap,
                                                 symbols: symbols, names: &names)
            for frame in frames.prefix(max(0, options.numCallers - 1)) {
                lines.append("   by " + TextReport.describe(frame))
            }
        }
        return lines
    }

    // MARK: Folded stacks

    public enum Weight: String, CaseIterable, Sendable {
        case leaked, peak, allocations, temporary
    }

    /// Brendan Gregg's folded format: "outermost;…;innermost weight" per stack, for flamegraph.pl,
    /// speedscope and inferno.
    public func foldedLines(weight: Weight) -> [String] {
        var totals: [String: UInt64] = [:]
        for site in sites {
            let value: UInt64
            switch weight {
            case .leaked: value = site.leakedBytes
            case .peak: value = site.bytesAtPeak
            case .allocations: value = site.allocations
            case .temporary: value = site.temporaryAllocations
            }
            guard value > 0 else { continue }
            var names = frames(of: site).reversed().map(Self.foldedName)
            names.append(site.function.displayName)
            totals[names.joined(separator: ";"), default: 0] += value
        }
        return totals.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
    }

    static func foldedName(_ frame: SymbolizedFrame) -> String {
        let name: String
        if let function = frame.function {
            name = function
        } else if let object = frame.object {
            let file = object.split(separator: "/").last.map(String.init) ?? object
            name = file + "+0x" + String(frame.moduleOffset ?? frame.ip, radix: 16)
        } else {
            name = "0x" + String(frame.ip, radix: 16)
        }
        // The format's separators may not appear in a name.
        return name.replacingSeparators()
    }
}

extension String {
    func padding(toLength length: Int) -> String {
        count >= length ? self : self + String(repeating: " ", count: length - count)
    }

    func replacingSeparators() -> String {
        String(map { $0 == ";" ? ":" : $0 == "\n" ? " " : $0 })
    }
}

/// A number with at most two decimals, as the statistics print rates and seconds.
public func formatted(_ value: Double) -> String {
    guard value.isFinite else { return "-" }
    let rounded = (value * 100).rounded() / 100
    if rounded == rounded.rounded() && abs(rounded) < 1e15 { return String(Int64(rounded)) }
    var text = String(rounded)
    if let dot = text.firstIndex(of: "."), text.distance(from: dot, to: text.endIndex) > 3 {
        text = String(text[..<text.index(dot, offsetBy: 3)])
    }
    return text
}
