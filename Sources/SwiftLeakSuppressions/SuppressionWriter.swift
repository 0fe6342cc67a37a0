import SwiftLeakCore

/// `--gen-suppressions=all`: the block Valgrind prints after a loss record, byte for byte, so that
/// it can be pasted into a suppression file read by swiftleak or by Valgrind.
public enum SuppressionWriter {
    /// Valgrind's placeholder name.
    public static let placeholderName = "<insert_a_suppression_name_here>"

    /// The frame lines: `fun:` with the mangled name of every frame that has one (inlined frames
    /// included), else `obj:` with the object's path (links resolved, as Valgrind names it),
    /// else `obj:*`; frame 0 is the allocation
    /// function; `numCallers` stack entries in all, as Valgrind's stack holds.
    public static func frameLines(_ record: LossRecord, numCallers: Int) -> [String] {
        var lines = ["fun:" + record.function.symbolName]
        for frame in MatchFrame.stackPrefix(record.stack, addresses: numCallers - 1) {
            if let name = frame.mangledFunction ?? frame.function {
                lines.append("fun:" + name)
            } else if let object = frame.object {
                lines.append("obj:" + ObjectPath.canonical(object))
            } else {
                lines.append("obj:*")
            }
        }
        return lines
    }

    /// The `match-leak-kinds:` value of a record's own kind.
    public static func leakKindsLine(_ record: LossRecord) -> String {
        "match-leak-kinds: " + record.kind.optionName
    }

    /// The whole block, one element per line, without the `==PID==` prefix (Valgrind prints it
    /// bare, so it can be copied as is).
    public static func block(_ record: LossRecord, numCallers: Int) -> [String] {
        var lines = ["{", "   " + placeholderName, "   Memcheck:Leak", "   " + leakKindsLine(record)]
        lines += frameLines(record, numCallers: numCallers).map { "   " + $0 }
        lines.append("}")
        return lines
    }
}
