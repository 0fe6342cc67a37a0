import SwiftLeakCore

extension SuppressionSet {
    /// Marks the loss records a suppression matches and moves their bytes from their kind's
    /// summary line to `suppressed`, as Valgrind's LEAK SUMMARY counts them. A pure pass over a
    /// built report: `run` and `analyze` apply it alike.
    ///
    /// - Parameters:
    ///   - numCallers: `--num-callers`: Valgrind entries see that many stack entries, frame 0 (the
    ///     allocation function) included.
    ///   - interposer: the path of swiftleak's preload library, the object frame 0 is in.
    /// - Returns: the report, with `suppressedBy`/`suppressedAt` set on matched records and
    ///   `usedSuppressions` listing each suppression that matched, in the order they were given.
    public func apply(to report: ProcessReport, numCallers: Int, interposer: String? = nil) -> ProcessReport {
        guard !isEmpty else { return report }
        var report = report
        var uses: [Int: SuppressionUse] = [:]
        for index in report.lossRecords.indices {
            let record = report.lossRecords[index]
            guard record.suppressedBy == nil, let (number, name, location) = match(record, numCallers: numCallers, interposer: interposer) else {
                continue
            }
            report.lossRecords[index].suppressedBy = name
            report.lossRecords[index].suppressedAt = location.description
            var use = uses[number] ?? SuppressionUse(name: name, location: location.description)
            use.records += 1
            use.suppressed.add(bytes: record.bytes, blocks: record.blocks)
            uses[number] = use
            var line = report.summary[record.kind] ?? ByteCount()
            line.bytes -= min(line.bytes, record.bytes)
            line.blocks -= min(line.blocks, record.blocks)
            report.summary[record.kind] = line.blocks == 0 && line.bytes == 0 ? nil : line
            report.suppressed.add(bytes: record.bytes, blocks: record.blocks)
        }
        report.usedSuppressions += uses.sorted { $0.key < $1.key }.map(\.value)
        return report
    }

    /// The first suppression matching the record: Valgrind entries in file order, then LSan
    /// lines. Returns its number (for ordering), name and location.
    func match(_ record: LossRecord, numCallers: Int, interposer: String?) -> (Int, String, SuppressionLocation)? {
        if !leaks.isEmpty {
            let frames = MatchFrame.frames(of: record, numCallers: numCallers, interposer: interposer)
            for (number, suppression) in leaks.enumerated() where suppression.matches(frames, kind: record.kind) {
                return (number, suppression.name, suppression.location)
            }
        }
        if !lsan.isEmpty {
            // LSan looks at the whole stack it recorded, not only the frames a report prints.
            let frames = MatchFrame.frames(of: record, numCallers: Int.max / 2, interposer: interposer)
            for (number, suppression) in lsan.enumerated() where suppression.matches(frames) {
                return (leaks.count + number, suppression.name, suppression.location)
            }
        }
        return nil
    }
}
