/// The verdict of the exit scan on one block, with Valgrind Memcheck's semantics (design.md §2).
public enum LeakKind: String, CaseIterable, Sendable, Codable, Comparable {
    case definitelyLost = "definitely_lost"
    case indirectlyLost = "indirectly_lost"
    case possiblyLost = "possibly_lost"
    case stillReachable = "still_reachable"
    /// The scan could not run (the process was killed by SIGKILL, or exec'd): the block was not
    /// freed, and nothing more is known.
    case unclassified = "unclassified"

    /// The words Valgrind uses in "N bytes in B blocks are definitely lost in loss record …".
    public var valgrindWords: String {
        switch self {
        case .definitelyLost: return "definitely lost"
        case .indirectlyLost: return "indirectly lost"
        case .possiblyLost: return "possibly lost"
        case .stillReachable: return "still reachable"
        case .unclassified: return "not freed (unclassified)"
        }
    }

    /// The name used by `--show-leak-kinds` and `--errors-for-leak-kinds`.
    public var optionName: String {
        switch self {
        case .definitelyLost: return "definite"
        case .indirectlyLost: return "indirect"
        case .possiblyLost: return "possible"
        case .stillReachable: return "reachable"
        case .unclassified: return "unclassified"
        }
    }

    /// Position in `allCases`: for per-kind arrays and for sorting.
    public var index: Int {
        switch self {
        case .definitelyLost: return 0
        case .indirectlyLost: return 1
        case .possiblyLost: return 2
        case .stillReachable: return 3
        case .unclassified: return 4
        }
    }

    public static func < (lhs: LeakKind, rhs: LeakKind) -> Bool { lhs.index < rhs.index }
}

/// A set of leak kinds as `--show-leak-kinds=definite,possible` spells it.
public struct LeakKindSet: Hashable, Sendable {
    public var kinds: Set<LeakKind>

    public init(_ kinds: Set<LeakKind>) { self.kinds = kinds }

    public func contains(_ kind: LeakKind) -> Bool { kinds.contains(kind) }

    public static let all = LeakKindSet([.definitelyLost, .indirectlyLost, .possiblyLost, .stillReachable, .unclassified])
    /// Valgrind's default for both `--show-leak-kinds` and `--errors-for-leak-kinds`. Unclassified
    /// blocks are shown with the lost ones: when the scan could not run, they may be leaks.
    public static let defaultKinds = LeakKindSet([.definitelyLost, .possiblyLost, .unclassified])

    /// Parses Valgrind's syntax: `all`, `none`, or a comma-separated list of
    /// `definite`, `indirect`, `possible`, `reachable`.
    public init?(parsing text: String) {
        switch text {
        case "all": self = .all; return
        case "none": self.init([]); return
        default: break
        }
        var kinds: Set<LeakKind> = []
        for word in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard let kind = LeakKind.allCases.first(where: { $0.optionName == word }) else { return nil }
            kinds.insert(kind)
        }
        // Blocks the scan could not classify are reported whenever lost blocks would be.
        if kinds.contains(.definitelyLost) || kinds.contains(.possiblyLost) { kinds.insert(.unclassified) }
        self.init(kinds)
    }
}
