/// One line of `/proc/PID/maps`.
public struct MemoryMapping: Hashable, Sendable {
    /// First address of the mapping.
    public var start: UInt64
    /// One past the last address.
    public var end: UInt64
    /// The four permission characters, e.g. `rw-p`.
    public var perms: String
    /// Offset in the mapped file (0 for anonymous mappings).
    public var offset: UInt64
    /// Device, `major:minor` in hex as the kernel prints it.
    public var device: String
    /// Inode of the mapped file, 0 for anonymous mappings.
    public var inode: UInt64
    /// The path, a pseudo-name (`[heap]`, `[stack]`, `[anon:name]`, …) or "" for anonymous memory.
    /// A ` (deleted)` suffix is kept as the kernel prints it.
    public var path: String

    public init(start: UInt64, end: UInt64, perms: String, offset: UInt64 = 0, device: String = "00:00",
                inode: UInt64 = 0, path: String = "") {
        self.start = start
        self.end = end
        self.perms = perms
        self.offset = offset
        self.device = device
        self.inode = inode
        self.path = path
    }

    public var size: UInt64 { end - start }
    public var isReadable: Bool { perms.utf8.first == UInt8(ascii: "r") }
    public var isWritable: Bool { perms.utf8.dropFirst().first == UInt8(ascii: "w") }
    public var isExecutable: Bool { perms.utf8.dropFirst(2).first == UInt8(ascii: "x") }
    public var isShared: Bool { perms.utf8.dropFirst(3).first == UInt8(ascii: "s") }

    public func contains(_ address: UInt64) -> Bool { start <= address && address < end }

    /// Anonymous memory: no path, or a name given with `PR_SET_VMA_ANON_NAME` (`[anon:…]`).
    public var isAnonymous: Bool { path.isEmpty || path.hasPrefix("[anon:") }

    /// Backed by a file (a path that is not a bracketed pseudo-name). Valgrind's `SkFileC`.
    public var isFileBacked: Bool { !path.isEmpty && !path.hasPrefix("[") }

    /// The path without the kernel's ` (deleted)` suffix.
    public var filePath: String {
        let suffix = " (deleted)"
        return path.hasSuffix(suffix) ? String(path.dropLast(suffix.count)) : path
    }

    /// The readable address ranges of `mappings`, adjacent ones merged, sorted.
    public static func readableRanges(_ mappings: [MemoryMapping]) -> [Range<UInt64>] {
        var ranges: [Range<UInt64>] = []
        for mapping in mappings.sorted(by: { $0.start < $1.start }) where mapping.isReadable && mapping.start < mapping.end {
            if let last = ranges.last, last.upperBound == mapping.start {
                ranges[ranges.count - 1] = last.lowerBound..<mapping.end
            } else {
                ranges.append(mapping.start..<mapping.end)
            }
        }
        return ranges
    }

    /// Parses the text of `/proc/PID/maps`. Lines that do not parse are skipped (the kernel never
    /// writes them; a truncated last line can happen when the text was read while the map changed).
    public static func parse(maps text: String) -> [MemoryMapping] {
        var result: [MemoryMapping] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if let mapping = MemoryMapping(mapsLine: line) { result.append(mapping) }
        }
        return result
    }

    /// Parses one line: `start-end perms offset dev inode [path]`; the path may contain spaces.
    public init?<S: StringProtocol>(mapsLine line: S) {
        var rest = Substring(line)
        func field() -> Substring? {
            let trimmed = rest.drop { $0 == " " || $0 == "\t" }
            guard !trimmed.isEmpty else { return nil }
            let end = trimmed.firstIndex { $0 == " " || $0 == "\t" } ?? trimmed.endIndex
            rest = trimmed[end...]
            return trimmed[..<end]
        }
        guard let range = field(), let perms = field(), let offset = field(), let device = field(),
              let inode = field() else { return nil }
        let bounds = range.split(separator: "-", maxSplits: 1)
        guard bounds.count == 2, let start = UInt64(bounds[0], radix: 16), let end = UInt64(bounds[1], radix: 16),
              start <= end, perms.count == 4, let offsetValue = UInt64(offset, radix: 16),
              let inodeValue = UInt64(inode) else { return nil }
        let path = rest.drop { $0 == " " || $0 == "\t" }
        self.init(start: start, end: end, perms: String(perms), offset: offsetValue, device: String(device),
                  inode: inodeValue, path: String(path))
    }
}
