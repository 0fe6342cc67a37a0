import SwiftLeakCore

/// A live heap block as the scanner sees it: `size` bytes at `address` (the user-visible size the
/// program asked for, as Valgrind uses, not the allocator's usable size).
public struct ScanBlock: Hashable, Sendable {
    public var address: UInt64
    public var size: UInt64

    public init(address: UInt64, size: UInt64) {
        self.address = address
        self.size = size
    }
}

/// Valgrind Memcheck's interior-pointer heuristics (`--leak-check-heuristics`), all on by default
/// as in Valgrind 3.19. An interior pointer accepted by one of them counts as a start pointer.
public struct LeakHeuristics: OptionSet, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Pointer to the character array of a libstdc++ pre-C++11 `std::string` representation:
    /// `length, capacity, refcount, chars[]`.
    public static let stdString = LeakHeuristics(rawValue: 1 << 0)
    /// Pointer 8 bytes into a block whose first 8 bytes hold the remaining size (sqlite).
    public static let length64 = LeakHeuristics(rawValue: 1 << 1)
    /// Pointer 8 bytes into a `new T[n]` block whose first word is a plausible element count.
    public static let newArray = LeakHeuristics(rawValue: 1 << 2)
    /// Pointer to a secondary vtable pointer of a C++ object using multiple inheritance.
    public static let multipleInheritance = LeakHeuristics(rawValue: 1 << 3)

    public static let all: LeakHeuristics = [.stdString, .length64, .newArray, .multipleInheritance]
    public static let none: LeakHeuristics = []
}

/// The heuristic through which a block was found reachable (Valgrind prints these in the summary as
/// "reachable via heuristic").
public enum LeakHeuristic: UInt8, Hashable, Sendable, CaseIterable {
    case stdString = 1
    case length64 = 2
    case newArray = 3
    case multipleInheritance = 4

    /// The name `--leak-check-heuristics` uses.
    public var valgrindName: String {
        switch self {
        case .stdString: return "stdstring"
        case .length64: return "length64"
        case .newArray: return "newarray"
        case .multipleInheritance: return "multipleinheritance"
        }
    }
}

/// What one scan did and how long it took.
public struct ScanStatistics: Hashable, Sendable {
    /// Aligned 8-byte words examined (root regions and block contents; registers not included).
    public var wordsScanned: UInt64 = 0
    /// `wordsScanned * 8`: Valgrind's "Checked N bytes".
    public var bytesScanned: UInt64 { wordsScanned &* 8 }
    /// Bytes of root regions or blocks that could not be read and were skipped.
    public var bytesUnreadable: UInt64 = 0
    /// Bytes of blocks scanned past their requested size, in glibc's slack
    /// (``LeakScanner/BlockContents/glibcUsableSize``); a block scanned twice counts twice.
    public var slackBytesScanned: UInt64 = 0
    /// Root-region bytes requested (before alignment and unreadable parts).
    public var rootBytes: UInt64 = 0
    /// Register words examined.
    public var registerWords: Int = 0
    /// Calls made to the memory reader.
    public var reads: UInt64 = 0
    /// Bytes copied through the memory reader.
    public var bytesRead: UInt64 = 0
    /// Blocks whose pointers were found before the marking (``LeakScanner/Configuration/pointerThreads``);
    /// the others were scanned word by word.
    public var blocksWithPointersFound: Int = 0
    /// Words of blocks the heuristics read from memory as they ran; most of what they ask is
    /// worked out with the blocks' pointers (``blocksWithPointersFound``) without reading.
    public var heuristicWordsRead: UInt64 = 0
    /// Wall-clock time of the scan.
    public var wallSeconds: Double = 0
    /// CPU time of the scan's threads: the calling one and those that helped it (finding the
    /// blocks' pointers, reading ahead).
    public var cpuSeconds: Double = 0

    public init() {}
}

/// The verdict on every block, in the order of the input `[ScanBlock]` (sorted by address).
///
/// `indirectBytesCharged`, `leaderOf` and `parentOf` only say something about lost blocks, so they
/// are empty when no block is lost (read them with ``chargedBytes(_:)``, ``leader(_:)`` and
/// ``parent(_:)``, which give 0 and -1 then): three arrays of millions of zeros and -1s cost more
/// to fault in than a reachable heap costs to scan.
public struct ScanResult: Sendable {
    /// One of `.definitelyLost`, `.indirectlyLost`, `.possiblyLost`, `.stillReachable` per block.
    public var kinds: [LeakKind]
    /// Per block: for a definitely lost block (a clique leader), the bytes of the indirectly lost
    /// blocks charged to it (Valgrind's "N (D direct, I indirect) bytes"); 0 for every other block.
    /// Empty when no block is lost.
    public var indirectBytesCharged: [UInt64]
    /// Per block: for an indirectly lost block, the index of the definitely lost leader it is
    /// charged to; -1 for every other block. Empty when no block is lost.
    public var leaderOf: [Int32]
    /// Per block: for an indirectly lost block, the index of the lost block through which the clique
    /// walk found it (Valgrind's lower-level clique, for printing the lost tree); -1 otherwise.
    /// Empty when no block is lost.
    public var parentOf: [Int32]
    /// Per block: the heuristic that made a still-reachable block reachable (it had only interior
    /// pointers, one of them accepted by the heuristic), nil otherwise.
    public var heuristics: [LeakHeuristic?]
    public var statistics: ScanStatistics

    /// ``indirectBytesCharged`` of block `i` (0 when no block is lost).
    public func chargedBytes(_ i: Int) -> UInt64 { i < indirectBytesCharged.count ? indirectBytesCharged[i] : 0 }
    /// ``leaderOf`` of block `i` (-1 when no block is lost).
    public func leader(_ i: Int) -> Int32 { i < leaderOf.count ? leaderOf[i] : -1 }
    /// ``parentOf`` of block `i` (-1 when no block is lost).
    public func parent(_ i: Int) -> Int32 { i < parentOf.count ? parentOf[i] : -1 }

    /// Total bytes and block count of one kind.
    public func total(_ kind: LeakKind, blocks: [ScanBlock]) -> (bytes: UInt64, blocks: Int) {
        var bytes: UInt64 = 0
        var count = 0
        for (index, k) in kinds.enumerated() where k == kind {
            bytes += blocks[index].size
            count += 1
        }
        return (bytes, count)
    }
}
