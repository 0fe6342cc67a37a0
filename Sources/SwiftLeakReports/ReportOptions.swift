import SwiftLeakCore

/// How much of a report to show, in Valgrind's terms.
public struct ReportOptions: Sendable {
    public enum LeakCheck: String, Sendable, CaseIterable {
        /// No exit scan: the heap summary only (Valgrind's --leak-check=no).
        case no
        case summary, full
    }
    public var leakCheck: LeakCheck = .full
    public var showKinds: LeakKindSet = .defaultKinds
    public var errorKinds: LeakKindSet = .defaultKinds
    /// Frames printed per loss record (the allocation function counts as one, as in Valgrind).
    public var numCallers: Int = 12
    /// Demangle C++, Swift and Rust names (Valgrind's --demangle).
    public var demangle = true
    public var toolVersion: String = "0.1.0"
    /// `-v`: also list the suppressions used (Valgrind's `used_suppression` lines).
    public var verbose = false
    /// `--gen-suppressions=all`: print a ready-to-paste suppression after each loss record shown.
    public var genSuppressions = false
    /// `-q`: the loss records only, without the header and the summaries.
    public var quiet = false
    /// `--leak-resolution`: how many stack entries two records must share to be merged.
    public enum LeakResolution: String, Sendable {
        case low, med, high
        /// Stack entries compared, the allocation function included; nil: all of them.
        public var entries: Int? {
            switch self {
            case .low: return 2
            case .med: return 4
            case .high: return nil
            }
        }
    }
    public var leakResolution: LeakResolution = .high
    public init() {}
}

extension ProcessReport {
    /// Loss records that count as errors (Valgrind's ERROR SUMMARY and --error-exitcode). As in
    /// Valgrind, leaks are errors only with --leak-check=full. An image replaced by exec has none:
    /// what it had not freed went with its memory and cannot be judged (Valgrind says nothing).
    public func errorRecords(_ options: ReportOptions) -> [LossRecord] {
        guard options.leakCheck == .full, replacedByExec == nil else { return [] }
        return lossRecords.filter { options.errorKinds.contains($0.kind) && $0.suppressedBy == nil }
    }
}

/// Groups digits by thousands, as Valgrind prints byte counts ("1,120 bytes").
public func groupedDigits(_ value: UInt64) -> String {
    let digits = Array(String(value))
    var out = ""
    for (index, digit) in digits.enumerated() {
        if index > 0 && (digits.count - index) % 3 == 0 { out.append(",") }
        out.append(digit)
    }
    return out
}
