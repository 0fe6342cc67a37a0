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
    /// Where the thread's live frames begin, when that is known better than from its stack
    /// pointer: the thread that ended the process by exit, _exit or abort is scanned from the
    /// frame that made the call, not from inside libc's exit path, and without a red zone below
    /// it. Ignored unless it lies at or above `stackPointer` in the mapping that holds it.
    public var liveStackStart: UInt64?

    public init(tid: Int32, stackPointer: UInt64, registers: [UInt64], liveStackStart: UInt64? = nil) {
        self.tid = tid
        self.stackPointer = stackPointer
        self.registers = registers
        self.liveStackStart = liveStackStart
    }
}

/// A thread that ended before the process did, with its stack pointer at its exit (the tracer's
/// `PTRACE_EVENT_EXIT` stop). glibc caches the stack mapping of a joined (or detached) thread for
/// the next `pthread_create`: below that stack pointer lie only the dead thread's frames, whose
/// words Valgrind no longer counts (they became inaccessible as the stack unwound). Above it are
/// `start_thread`'s frame, the thread's static TLS and its `struct pthread` (the descriptor glibc
/// keeps to reuse the stack, with its DTV pointer): memory that is still there, and roots as under
/// Valgrind.
public struct ExitedThread: Hashable, Sendable {
    public var tid: Int32
    public var stackPointer: UInt64

    public init(tid: Int32, stackPointer: UInt64) {
        self.tid = tid
        self.stackPointer = stackPointer
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
/// swiftleak's own mappings (``Options/excludedPathPrefixes``, ``Options/excludedRanges``); `[vdso]`, `[vvar]`, `[vsyscall]`
/// and other pseudo-mappings; `[stack]` when no thread's SP is in it; read-only, executable or
/// unreadable mappings; device files other than `/dev/zero`.
public struct RootSetBuilder {
    public struct Options: Sendable {
        /// Bytes below SP that are still live (the x86-64 System V red zone).
        public var redZone: UInt64 = 128
        /// Mappings whose path starts with one of these are swiftleak's own and never roots.
        public var excludedPathPrefixes: [String] = ["/memfd:swiftleak", "[anon:swiftleak"]
        /// Address ranges that are swiftleak's own memory with no name to tell it by (the
        /// interposer's own stacks, ``OwnStackAreas``): a mapping inside one is never a root.
        public var excludedRanges: [Range<UInt64>] = []
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
    ///   - exitedThreads: threads that ended earlier, in the order they exited: a mapping that holds
    ///     no live thread's stack pointer but the last stack pointer of one of them is a cached dead
    ///     stack, scanned only from that stack pointer up (see ``ExitedThread``).
    ///   - liveBlocks: the live blocks, sorted by address.
    ///   - memory: reads the process, to tell from glibc's chunk headers (``GlibcChunk``) which part
    ///     of an anonymous mapping holding live blocks is the allocator's. Without it, such a mapping
    ///     is left out whole.
    public func build(mappings: [MemoryMapping], threads: [ThreadRoots], liveBlocks: [ScanBlock],
                      exitedThreads: [ExitedThread] = [], memory: (any ProcessMemoryReader)? = nil) -> RootSet {
        let mappings = mappings.sorted { $0.start < $1.start }
        var regions: [RootRegion] = []
        var excluded: [(mapping: MemoryMapping, reason: String)] = []
        var isStack = [Bool](repeating: false, count: mappings.count)

        /// The first live block address at or above `address`, if below `limit`.
        func firstBlock(from address: UInt64, below limit: UInt64) -> UInt64? {
            let lo = firstBlockIndex(from: address)
            return lo < liveBlocks.count && liveBlocks[lo].address < limit ? liveBlocks[lo].address : nil
        }
        func firstBlockIndex(from address: UInt64) -> Int {
            var lo = 0
            var hi = liveBlocks.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if liveBlocks[mid].address < address { lo = mid + 1 } else { hi = mid }
            }
            return lo
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
            var start = max(mapping.start, thread.stackPointer >= options.redZone ? thread.stackPointer - options.redZone : 0)
            if let live = thread.liveStackStart, live >= thread.stackPointer, live < mapping.end { start = live }
            let end = firstBlock(from: start, below: mapping.end) ?? mapping.end
            regions.append(RootRegion(start: start, end: end, label: "stack of thread \(thread.tid)"))
        }
        // Cached stacks of exited threads (the last one to exit on a stack left it as it is).
        for thread in exitedThreads.reversed() {
            // Only a stack mapping of its own: a stack the program carved out of a malloc'd block
            // (pthread_attr_setstack) is block contents, judged with its block.
            guard let i = mappingIndex(containing: thread.stackPointer), !isStack[i],
                  exclusionReason(mappings[i]) == nil, mappings[i].isAnonymous,
                  firstBlock(from: mappings[i].start, below: mappings[i].end) == nil else { continue }
            let mapping = mappings[i]
            isStack[i] = true
            var dead = mapping
            dead.end = thread.stackPointer
            excluded.append((dead, "dead frames of exited thread \(thread.tid)"))
            let end = firstBlock(from: thread.stackPointer, below: mapping.end) ?? mapping.end
            regions.append(RootRegion(start: thread.stackPointer, end: end,
                                      label: "descriptor and TLS of exited thread \(thread.tid)"))
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

        /// The load bias of the module that file-backed `mappings[i]` belongs to: from its first
        /// mapping (where file offset 0 is mapped), else guessed from the
        /// mapping's own file offset.
        func bias(_ image: ELFImage, _ i: Int) -> UInt64? {
            let mapping = mappings[i]
            // The lowest offset-0 mapping of this file whose load span still covers `mapping` (a
            // module's later segment may map file page 0 too, as lld's data segment does).
            var moduleStart: UInt64?
            var j = i
            while j >= 0 && mappings[j].path == mapping.path && mappings[j].inode == mapping.inode {
                if mappings[j].offset == 0 && mapping.start &- mappings[j].start < image.loadSpan {
                    moduleStart = mappings[j].start
                }
                j -= 1
            }
            if let moduleStart, let bias = image.loadBias(for: mapping, moduleStart: moduleStart) { return bias }
            return image.loadBias(for: mapping)
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
                if let image = image(for: mapping), let bias = bias(image, i) {
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
               let image = image(for: mappings[i - 1]), let bias = bias(image, i - 1) {
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
            let label = mapping.path.isEmpty ? "anonymous" : mapping.path
            guard let block = firstBlock(from: start, below: mapping.end) else {
                regions.append(RootRegion(start: start, end: mapping.end, label: label))
                continue
            }
            // The kernel merges adjacent anonymous mappings with the same flags: an mmapped chunk
            // or an arena heap may share a mapping with the program's own anonymous memory (CPython
            // puts its arenas next to mmapped chunks). Leave out only what is the allocator's.
            guard let memory, let holes = allocatorRanges(in: start..<mapping.end, from: firstBlockIndex(from: start),
                                                          liveBlocks: liveBlocks, memory: memory) else {
                excluded.append((mapping, "holds live block \(block.hexString): allocator memory"))
                continue
            }
            var cursor = start
            for hole in holes {
                var part = mapping
                part.start = hole.lowerBound
                part.end = hole.upperBound
                excluded.append((part, hole.kind))
                if cursor < hole.lowerBound { regions.append(RootRegion(start: cursor, end: hole.lowerBound, label: label)) }
                cursor = max(cursor, hole.upperBound)
            }
            if cursor < mapping.end { regions.append(RootRegion(start: cursor, end: mapping.end, label: label)) }
        }
        return RootSet(regions: regions, registerWords: threads.flatMap(\.registers), excluded: excluded)
    }

    /// The allocator's parts of `range` (part of one anonymous mapping), from the chunk header of
    /// each live block in it, in address order, clipped to `range`: an mmapped chunk's mapping, or
    /// the aligned `HEAP_MAX_SIZE` heap of a non-main arena (its `heap_info`, `malloc_state`, free
    /// chunks and blocks). Nil when a block's header is not glibc's: then the caller leaves the
    /// whole mapping out, as it cannot tell the allocator's memory from the program's.
    func allocatorRanges(in range: Range<UInt64>, from first: Int, liveBlocks: [ScanBlock],
                         memory: any ProcessMemoryReader) -> [(lowerBound: UInt64, upperBound: UInt64, kind: String)]? {
        var holes: [(lowerBound: UInt64, upperBound: UInt64, kind: String)] = []
        var i = first
        while i < liveBlocks.count && liveBlocks[i].address < range.upperBound {
            let block = liveBlocks[i]
            if let last = holes.last, block.address < last.upperBound {
                i += 1
                continue
            }
            guard let chunk = GlibcChunk.read(start: block.address, size: block.size, memory: memory) else { return nil }
            let hole: Range<UInt64>
            let kind: String
            if let mapped = chunk.mmappedRange {
                hole = mapped
                kind = "glibc's mmapped chunk of live block \(block.address.hexString)"
            } else {
                let heap = block.address & ~(GlibcChunk.arenaHeapSize - 1)
                hole = heap..<(heap > UInt64.max - GlibcChunk.arenaHeapSize ? UInt64.max : heap + GlibcChunk.arenaHeapSize)
                kind = "glibc arena heap at \(heap.hexString) (holds live block \(block.address.hexString))"
            }
            // Compared before a Range is formed: the header is the program's to corrupt.
            let lower = max(hole.lowerBound, range.lowerBound)
            let upper = min(hole.upperBound, range.upperBound)
            guard lower <= block.address, block.address < upper else { return nil }
            holes.append((lower, upper, kind))
            i += 1
        }
        return holes
    }

    /// Why a (non-stack) mapping is never a root, or nil.
    func exclusionReason(_ mapping: MemoryMapping) -> String? {
        if let prefix = options.excludedPathPrefixes.first(where: { mapping.path.hasPrefix($0) }) {
            return "swiftleak's own memory (\(prefix))"
        }
        if options.excludedRanges.contains(where: { $0.lowerBound <= mapping.start && mapping.end <= $0.upperBound }) {
            return "swiftleak's own stack"
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
