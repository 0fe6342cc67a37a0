import SwiftLeakCore
import SwiftLeakSuppressions

extension ProcessReport {
    /// `--leak-resolution=low|med`: loss records of one kind whose stacks agree on their first 2 or
    /// 4 entries (the allocation function counts as one, inlined frames belong to their address)
    /// become one record, as Valgrind merges them; it shows the stack of the first. `high` (the
    /// default) keeps the report as built.
    public func merged(resolution: ReportOptions.LeakResolution) -> ProcessReport {
        guard let entries = resolution.entries else { return self }
        struct Key: Hashable {
            var kind: LeakKind
            var function: AllocationFunction
            var addresses: [UInt64]
        }
        var order: [Key] = []
        var records: [Key: LossRecord] = [:]
        for record in lossRecords {
            let prefix = MatchFrame.stackPrefix(record.stack, addresses: entries - 1)
            var addresses: [UInt64] = []
            for frame in prefix where addresses.last != frame.ip { addresses.append(frame.ip) }
            let key = Key(kind: record.kind, function: record.function, addresses: addresses)
            if var existing = records[key] {
                existing.bytes += record.bytes
                existing.blocks += record.blocks
                existing.indirectBytes += record.indirectBytes
                records[key] = existing
            } else {
                order.append(key)
                records[key] = record
            }
        }
        var report = self
        report.lossRecords = order.compactMap { records[$0] }
        ReportBuilder.sortInValgrindOrder(&report.lossRecords)
        return report
    }
}
