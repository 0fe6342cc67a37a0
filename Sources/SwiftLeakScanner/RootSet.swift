#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One thread of the stopped process, as the tracer sees it.
public struct ThreadRoots: Hashable, Sendable {
    public var tid: Int32
    /// The stack pointer (`rsp` on x86-64, `sp` on AArch64).
    public var stackPointer: UInt64
    /// The general-register words to treat as roots (on x86-64 the 16 GPRs Valgrind scans: rax,
    /// rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8–r15; extra words such as rip or fs_base are harmless).
    public var registers: [UInt64]

    public init(tid: Int32, stackPointer: UInt64, registers: [UInt64]) {
        self.tid = tid
        self.stackPointer = stackPointer
        self.registers = registers
    }
}

/// A range of process memory whose aligned words are roots.
public struct RootRegion: Hashable, Sendable {
    public var start: UInt64
    public var end: UInt64
    /// For debugging: what this is, e.g. `stack of 4242`, `/usr/lib/libc.so.6 .data`, `anonymous`.
    public var label: String

    public init(start: UInt64, end: UInt64, label: String) {
        self.start = start
        self.end = end
        self.label = label
    }

    public var size: UInt64 { end > start ? end - start : 0 }
}

/// The roots of one scan, and what was left out and why.
public struct RootSet: Sendable {
    public var regions: [RootRegion]
    public var registerWords: [UInt64]
    /// Mappings (or their parts) that are not roots, with the reason, for `--verbose` output and tests.
    public var excluded: [(mapping: MemoryMapping, reason: String)]

    public init(regions: [RootRegion], registerWords: [UInt64], excluded: [(mapping: MemoryMapping, reason: String)] = []) {
        self.regions = regions
        self.registerWords = registerWords
        self.excluded = excluded
    }

    public var totalBytes: UInt64 { regions.reduce(0) { $0 + $1.size } }
}

/// Builds the root set of a stopped process from its `/proc/PID/maps`, its threads and its live blocks.
///
/// Roots: every thread's registers; every thread's stack from SP − red zone to the end of the
/// mapping that contains SP; the writable data of every loaded module, narrowed to the ELF sections
/// that can hold heap pointers (see ``ELFSection/mayHoldHeapPointers``), including the anonymous
/// `.bss` continuation after the module's last file-backed page; every other readable, writable,
/// non-executable anonymous (or non-ELF file) mapping.
///
/// Not roots: `[heap]`; anonymous mappings holding a live block (allocator arenas, mmap'd chunks);
/// swiftleak's own mappings (``Options/excludedPathPrefixes``); `[vdso]`, `[vvar]`, `[vsyscall]`
/// and other pseudo-mappings; `[stack]` when no thread's SP is in it; read-only, executable or
/// unreadable mappings; device files other than `/dev/zero`.
public struct RootSetBuilder {
    public struct Options: Sendable {
        /// Bytes below SP that are still live (the x86-64 System V red zone).
        public var redZone: UInt64 = 128
        /// Mappings whose path starts with one of these are swiftleak's own and never roots.
        public var excludedPathPrefixes: [String] = ["/memfd:swiftleak", "[anon:swiftleak"]
        /// Narrow module data to ELF sections; when false, whole writable module mappings are roots
        /// (what Valgrind and LeakSanitizer do).
        public var useELFSections: Bool = true

        public init() {}
    }

    public var options: Options
    /// Loads the ELF headers of a mapped file; nil when it cannot (the mapping is then scanned
    /// whole). The default reads `mapping.filePath` and checks that its inode is the mapped one.
    public var loadELF: (MemoryMapping) -> ELFImage?

    public init(options: Options = Options(), loadELF: ((MemoryMapping) -> ELFImage?)? = nil) {
        self.options = options
        self.loadELF = loadELF ?? RootSetBuilder.loadELFFromDisk
    }

    /// Reads the ELF file of a mapping from this machine's file system, when it is still the file
    /// that is mapped (same inode; a path the kernel marked `(deleted)` is not trusted).
    public static func loadELFFromDisk(_ mapping: MemoryMapping) -> ELFImage? {
        guard mapping.isFileBacked, !mapping.path.hasSuffix(" (deleted)") else { return nil }
        var info = stat()
        guard stat(mapping.path, &info) == 0, mapping.inode == 0 || UInt64(info.st_ino) == mapping.inode else { return nil }
        return try? ELFImage.load(path: mapping.path)
    }

    /// Builds the root set.
    ///
    /// - Parameters:
    ///   - mappings: the process's mappings (``MemoryMapping/parse(maps:)``), in address order.
    ///   - threads: every thread's stack pointer and registers.
    ///   - liveBlocks: the live blocks, sorted by address.
    public func build(mappings: [MemoryMapping], threads: [ThreadRoots], liveBlocks: [ScanBlock]) -> RootSet {
        let mappings = mappings.sorted { $0.start < $1.start }
        var regions: [RootRegion] = []
        var excluded: [(mapping: MemoryMapping, reason: String)] = []
        var isStack = [Bool](repeating: false, count: mappings.count)

        /// The first live block address at or above `address`, if below `limit`.
        func firstBlock(from address: UInt64, below limit: UInt64) -> UInt64? {
            var lo = 0
            var hi = liveBlocks.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if liveBlocks[mid].address < address { lo = mid + 1 } else { hi = mid }
            }
            return lo < liveBlocks.count && liveBlocks[lo].address < limit ? liveBlocks[lo].address : nil
        }
        func mappingIndex(containing address: UInt64) -> Int? {
            var lo = 0
            var hi = mappings.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if mappings[mid].end <= address { lo = mid + 1 } else { hi = mid }
            }
            return lo < mappings.count && mappings[lo].start <= address ? lo : nil
        }

        // Stacks: from SP - red zone to the end of the mapping holding SP (which, for a glibc thread,
        // also holds its TCB and static TLS). Cut at the first live block, should an arena ever have
        // been merged into the same mapping.
        for thread in threads {
            guard let i = mappingIndex(containing: thread.stackPointer) else { continue }
            let mapping = mappings[i]
            isStack[i] = true
            let start = max(mapping.start, thread.stackPointer >= options.redZone ? thread.stackPointer - options.redZone : 0)
            let end = firstBlock(from: start, below: mapping.end) ?? mapping.end
            regions.append(RootRegion(start: start, end: end, label: "stack of thread \(thread.tid)"))
        }

        // Modules: the ELF images of file-backed mappings, by path, with the bias and the end of the
        // module's writable segment in memory.
        var images: [String: ELFImage?] = [:]
        func image(for mapping: MemoryMapping) -> ELFImage? {
            if let cached = images[mapping.path] { return cached }
            let loaded = options.useELFSections ? loadELF(mapping) : nil
            images[mapping.path] = loaded
            return loaded
        }

        /// Roots for `[start, end)` of a module mapped with `bias`: the intersections with the
        /// sections that may hold heap pointers.
        func sectionRegions(_ image: ELFImage, bias: UInt64, start: UInt64, end: UInt64, path: String) -> [RootRegion] {
            var result: [RootRegion] = []
            for section in image.sections where section.mayHoldHeapPointers {
                let sectionStart = section.address &+ bias
                let sectionEnd = sectionStart &+ section.size
                let from = max(sectionStart, start)
                let to = min(sectionEnd, end)
                if from < to { result.append(RootRegion(start: from, end: to, label: "\(path) \(section.name)")) }
            }
            return result.sorted { $0.start < $1.start }
        }

        for (i, mapping) in mappings.enumerated() where !isStack[i] {
            if let reason = exclusionReason(mapping) {
                excluded.append((mapping, reason))
                continue
            }
            if mapping.isFileBacked {
                if let image = image(for: mapping), let bias = image.loadBias(for: mapping) {
                    regions += sectionRegions(image, bias: bias, start: mapping.start, end: mapping.end, path: mapping.filePath)
                } else {
                    regions.append(RootRegion(start: mapping.start, end: mapping.end, label: "\(mapping.filePath) (whole mapping)"))
                }
                continue
            }
            // Anonymous. Right after a module's file-backed writable mapping, its first part is the
            // module's .bss continuation.
            var start = mapping.start
            if i > 0, mappings[i - 1].end == mapping.start, mappings[i - 1].isFileBacked, !isStack[i - 1],
               let image = image(for: mappings[i - 1]), let bias = image.loadBias(for: mappings[i - 1]) {
                let moduleEnd = image.segments
                    .filter { $0.type == ELFSegment.typeLoad }
                    .map { ($0.virtualAddress &+ $0.memorySize &+ bias &+ 4095) & ~4095 }
                    .filter { $0 > mapping.start }
                    .min()
                if let moduleEnd {
                    let bssEnd = min(moduleEnd, mapping.end)
                    regions += sectionRegions(image, bias: bias, start: mapping.start, end: bssEnd, path: mappings[i - 1].filePath)
                    start = bssEnd
                }
            }
            guard start < mapping.end else { continue }
            if let block = firstBlock(from: start, below: mapping.end) {
                excluded.append((mapping, "holds live block \(block.hexString): allocator memory"))
                continue
            }
            regions.append(RootRegion(start: start, end: mapping.end, label: mapping.path.isEmpty ? "anonymous" : mapping.path))
        }
        return RootSet(regions: regions, registerWords: threads.flatMap(\.registers), excluded: excluded)
    }

    /// Why a (non-stack) mapping is never a root, or nil.
    func exclusionReason(_ mapping: MemoryMapping) -> String? {
        if let prefix = options.excludedPathPrefixes.first(where: { mapping.path.hasPrefix($0) }) {
            return "swiftleak's own memory (\(prefix))"
        }
        if !mapping.isReadable { return "not readable" }
        if mapping.isExecutable { return "executable" }
        if !mapping.isWritable { return "read-only" }
        if mapping.path == "[heap]" { return "the brk heap" }
        if mapping.path == "[stack]" { return "main stack without a thread in it" }
        if mapping.path.hasPrefix("[") && !mapping.isAnonymous { return "kernel pseudo-mapping \(mapping.path)" }
        if mapping.path.hasPrefix("/dev/") && mapping.path != "/dev/zero" && !mapping.path.hasPrefix("/dev/shm/") {
            return "device file"
        }
        return nil
    }
}
