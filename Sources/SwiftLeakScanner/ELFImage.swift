#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The parts of an ELF64 little-endian file the root-set builder needs: program headers (for the
/// load bias) and section headers with names (to keep only sections that can hold absolute
/// pointers). Every read is bounds-checked; a malformed file is an error, never a trap.
public struct ELFImage: Sendable {
    /// `e_type`: 2 executable, 3 shared object / PIE.
    public var fileType: UInt16
    /// `e_machine`: 62 for x86-64, 183 for AArch64.
    public var machine: UInt16
    public var segments: [ELFSegment]
    public var sections: [ELFSection]

    public init(fileType: UInt16, machine: UInt16, segments: [ELFSegment], sections: [ELFSection]) {
        self.fileType = fileType
        self.machine = machine
        self.segments = segments
        self.sections = sections
    }

    /// Why an ELF file could not be used.
    public struct Error: Swift.Error, Hashable, Sendable, CustomStringConvertible {
        public var path: String
        public var reason: String
        /// The errno of a failed system call, 0 otherwise.
        public var errno: Int32

        public var description: String {
            errno == 0 ? "\(path): \(reason)" : "\(path): \(reason) (errno \(errno))"
        }
    }

    /// Limits that keep a hostile or corrupt file from making us allocate or read much.
    static let maxProgramHeaders = 4096
    static let maxSectionHeaders = 1 << 17
    static let maxStringTable = 16 << 20

    /// Parses the file at `path`, reading only the headers and the section-name string table.
    public static func load(path: String) throws -> ELFImage {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Error(path: path, reason: "cannot open", errno: errno) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw Error(path: path, reason: "cannot stat", errno: errno) }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw Error(path: path, reason: "not a regular file", errno: 0) }
        let fileSize = UInt64(info.st_size)
        return try parse(fileSize: fileSize, path: path) { offset, count in
            var bytes = [UInt8](repeating: 0, count: count)
            var done = 0
            while done < count {
                let got = bytes.withUnsafeMutableBytes { buffer in
                    pread(fd, buffer.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                }
                if got < 0 && errno == EINTR { continue }
                if got <= 0 { return nil }
                done += got
            }
            return bytes
        }
    }

    /// Parses an ELF image given a way to read `count` bytes at a file offset (nil when it cannot).
    public static func parse(fileSize: UInt64, path: String = "<memory>",
                             read: (_ offset: UInt64, _ count: Int) -> [UInt8]?) throws -> ELFImage {
        func fail(_ reason: String) -> Error { Error(path: path, reason: reason, errno: 0) }
        func fetch(_ offset: UInt64, _ count: Int, _ what: String) throws -> [UInt8] {
            guard count >= 0, offset <= fileSize, UInt64(count) <= fileSize - offset,
                  let bytes = read(offset, count), bytes.count == count else {
                throw fail("truncated \(what)")
            }
            return bytes
        }
        let header = try fetch(0, 64, "ELF header")
        guard header[0] == 0x7F, header[1] == 0x45, header[2] == 0x4C, header[3] == 0x46 else {
            throw fail("not an ELF file")
        }
        guard header[4] == 2 else { throw fail("not a 64-bit ELF file") }
        guard header[5] == 1 else { throw fail("not a little-endian ELF file") }
        let fileType = header.u16(16)
        let machine = header.u16(18)
        let phoff = header.u64(0x20)
        let shoff = header.u64(0x28)
        let phentsize = Int(header.u16(0x36))
        var phnum = Int(header.u16(0x38))
        let shentsize = Int(header.u16(0x3A))
        var shnum = Int(header.u16(0x3C))
        var shstrndx = Int(header.u16(0x3E))

        // Section header 0 carries the real counts when they overflow 16 bits.
        var section0: [UInt8]? = nil
        if shoff != 0 {
            guard shentsize >= 64 else { throw fail("bad section header size \(shentsize)") }
            section0 = try fetch(shoff, 64, "section header 0")
            if shnum == 0 { shnum = Int(clamping: section0!.u64(32)) }
            if shstrndx == 0xFFFF { shstrndx = Int(section0!.u32(40)) }
            if phnum == 0xFFFF { phnum = Int(section0!.u32(44)) }
        } else {
            shnum = 0
        }

        var segments: [ELFSegment] = []
        if phoff != 0 && phnum > 0 {
            guard phentsize >= 56 else { throw fail("bad program header size \(phentsize)") }
            guard phnum <= maxProgramHeaders else { throw fail("too many program headers (\(phnum))") }
            let table = try fetch(phoff, phnum * phentsize, "program headers")
            for i in 0..<phnum {
                let at = i * phentsize
                segments.append(ELFSegment(
                    type: table.u32(at), flags: table.u32(at + 4), offset: table.u64(at + 8),
                    virtualAddress: table.u64(at + 16), fileSize: table.u64(at + 32),
                    memorySize: table.u64(at + 40), alignment: table.u64(at + 48)))
            }
        }

        var sections: [ELFSection] = []
        if shnum > 0 {
            guard shnum <= maxSectionHeaders else { throw fail("too many section headers (\(shnum))") }
            let table = try fetch(shoff, shnum * shentsize, "section headers")
            var names: [UInt8] = []
            if shstrndx > 0 && shstrndx < shnum {
                let at = shstrndx * shentsize
                let size = table.u64(at + 32)
                guard size <= UInt64(maxStringTable) else { throw fail("section name table too large") }
                names = try fetch(table.u64(at + 24), Int(size), "section name table")
            }
            for i in 0..<shnum {
                let at = i * shentsize
                sections.append(ELFSection(
                    name: names.cString(at: Int(table.u32(at))), type: table.u32(at + 4),
                    flags: table.u64(at + 8), address: table.u64(at + 16), offset: table.u64(at + 24),
                    size: table.u64(at + 32), alignment: table.u64(at + 48)))
            }
        }
        return ELFImage(fileType: fileType, machine: machine, segments: segments, sections: sections)
    }

    /// The load bias of this image in a process where `mapping` (a mapping of this file) is mapped:
    /// runtime address = link-time virtual address + bias. Found from the `PT_LOAD` segment that
    /// contains the mapping's file offset (page-aligned), preferring a writable one. Nil for a
    /// `---p` mapping: the dynamic linker leaves the gap between segments mapped from the file with
    /// no access, at a file offset that continues the previous mapping's and belongs to no segment.
    ///
    /// Prefer ``loadBias(for:moduleStart:)``: when two writable `PT_LOAD`s share a file page (lld
    /// puts RELRO and `.data` in one page of the file), the file offset cannot tell which segment
    /// a mapping is, and this guess may be a page off.
    public func loadBias(for mapping: MemoryMapping) -> UInt64? {
        guard mapping.perms.first != "-" || mapping.isWritable || mapping.isExecutable else { return nil }
        let loads = segments.filter { $0.type == ELFSegment.typeLoad }
        let containing = loads.filter { segment in
            let pageStart = segment.offset & ~4095
            return pageStart <= mapping.offset && mapping.offset < max(segment.offset &+ segment.fileSize, pageStart &+ 1)
        }
        guard let segment = containing.first(where: { $0.isWritable }) ?? containing.first else { return nil }
        // File offset O maps to virtual address vaddr - offset + O (vaddr ≡ offset modulo the page size).
        return mapping.start &- (segment.virtualAddress &- segment.offset &+ mapping.offset)
    }

    /// Bytes from the first page of the lowest `PT_LOAD` to the end of the highest, page-rounded:
    /// the span the dynamic linker reserves for the module.
    public var loadSpan: UInt64 {
        let loads = segments.filter { $0.type == ELFSegment.typeLoad }
        guard let low = loads.map(\.virtualAddress).min(),
              let high = loads.map({ $0.virtualAddress &+ $0.memorySize }).max(), high > low else { return 0 }
        return ((high &+ 4095) & ~4095) &- (low & ~4095)
    }

    /// The load bias (the dynamic linker's `l_addr`) from where the module really is: `moduleStart`
    /// is the start of the module's first mapping (file offset 0), where the dynamic linker (or the
    /// kernel, for the executable) put the page of the lowest `PT_LOAD`, so
    /// `bias = moduleStart − trunc_page(p_vaddr)`. Checked against `mapping`: under that bias the
    /// mapping must be a part of one `PT_LOAD` at its file offset (or the zero-filled rest of one);
    /// nil otherwise (a file mapped some other way).
    public func loadBias(for mapping: MemoryMapping, moduleStart: UInt64) -> UInt64? {
        guard mapping.start >= moduleStart, mapping.start - moduleStart < loadSpan else { return nil }
        let pageMask: UInt64 = 4095
        let loads = segments.filter { $0.type == ELFSegment.typeLoad }
        guard let lowest = loads.min(by: { $0.virtualAddress < $1.virtualAddress }),
              lowest.offset & ~pageMask == 0 else { return nil }
        let bias = moduleStart &- (lowest.virtualAddress & ~pageMask)
        let address = mapping.start &- bias
        let fits = loads.contains { segment in
            let first = segment.virtualAddress & ~pageMask
            let end = (segment.virtualAddress &+ segment.memorySize &+ pageMask) & ~pageMask
            guard first <= address, address < end else { return false }
            return address &- first &+ (segment.offset & ~pageMask) == mapping.offset
        }
        return fits ? bias : nil
    }
}

/// One program header.
public struct ELFSegment: Hashable, Sendable {
    public static let typeLoad: UInt32 = 1
    public var type: UInt32
    /// PF_X = 1, PF_W = 2, PF_R = 4.
    public var flags: UInt32
    public var offset: UInt64
    public var virtualAddress: UInt64
    public var fileSize: UInt64
    public var memorySize: UInt64
    public var alignment: UInt64

    public init(type: UInt32, flags: UInt32, offset: UInt64, virtualAddress: UInt64, fileSize: UInt64,
                memorySize: UInt64, alignment: UInt64 = 0x1000) {
        self.type = type
        self.flags = flags
        self.offset = offset
        self.virtualAddress = virtualAddress
        self.fileSize = fileSize
        self.memorySize = memorySize
        self.alignment = alignment
    }

    public var isWritable: Bool { flags & 2 != 0 }
}

/// One section header.
public struct ELFSection: Hashable, Sendable {
    public static let flagWrite: UInt64 = 0x1
    public static let flagAlloc: UInt64 = 0x2
    public static let flagExecInstr: UInt64 = 0x4
    public static let flagTLS: UInt64 = 0x400
    public static let typeNoBits: UInt32 = 8
    public static let typeNote: UInt32 = 7

    public var name: String
    public var type: UInt32
    public var flags: UInt64
    public var address: UInt64
    public var offset: UInt64
    public var size: UInt64
    public var alignment: UInt64

    public init(name: String, type: UInt32 = 1, flags: UInt64, address: UInt64, offset: UInt64, size: UInt64,
                alignment: UInt64 = 8) {
        self.name = name
        self.type = type
        self.flags = flags
        self.address = address
        self.offset = offset
        self.size = size
        self.alignment = alignment
    }

    /// Sections whose contents are only relative offsets, strings, unwind tables or other
    /// position-independent data, even when the linker placed them in a writable segment. Read as
    /// 64-bit words they can look like heap pointers (two packed 32-bit relative offsets often do),
    /// so scanning them would hide leaks.
    public static let relativeOnlyNames: Set<String> = [
        ".eh_frame", ".eh_frame_hdr", ".gcc_except_table", ".swift_modhash", ".lldbsummaries",
        ".gnu.hash", ".hash", ".dynsym", ".dynstr", ".gnu.version", ".gnu.version_d", ".gnu.version_r",
        ".interp", ".rela.dyn", ".rela.plt", ".rel.dyn", ".rel.plt", ".relr.dyn",
    ]

    /// Swift sections that are written at run time and hold ordinary absolute pointers, despite the
    /// `swift5_` prefix: the backtracer's settings page.
    public static let swiftDataNames: Set<String> = ["swift5_backtrace"]

    /// True when the program can store a heap pointer here at run time: an allocated, writable,
    /// non-TLS, non-code section that is not known to hold only relative offsets. Excluded:
    /// - `swift5_*` reflection and conformance metadata (32-bit relative offsets), except
    ///   ``swiftDataNames``;
    /// - `.rodata*` even when writable: libswiftCore's `.rodata` is linked into the RW segment
    ///   (flags `WA`), ~900 KiB of nominal type descriptors made of relative offsets; a constant
    ///   section is never a place the program stores a heap pointer;
    /// - ``relativeOnlyNames`` (unwind tables, hash tables, string tables) and notes;
    /// - `.tdata`/`.tbss`: the initialization image of thread-local storage; each thread's copy lives
    ///   in its TLS block (scanned with its stack or as anonymous memory), not here.
    public var mayHoldHeapPointers: Bool {
        guard flags & ELFSection.flagAlloc != 0, flags & ELFSection.flagWrite != 0,
              flags & ELFSection.flagTLS == 0, flags & ELFSection.flagExecInstr == 0,
              type != ELFSection.typeNote, size > 0 else { return false }
        if name.hasPrefix("swift5_") { return ELFSection.swiftDataNames.contains(name) }
        if name == ".rodata" || name.hasPrefix(".rodata.") { return false }
        if name.hasPrefix(".note") { return false }
        return !ELFSection.relativeOnlyNames.contains(name)
    }
}

extension Array where Element == UInt8 {
    func u16(_ at: Int) -> UInt16 { UInt16(self[at]) | UInt16(self[at + 1]) << 8 }
    func u32(_ at: Int) -> UInt32 { UInt32(u16(at)) | UInt32(u16(at + 2)) << 16 }
    func u64(_ at: Int) -> UInt64 { UInt64(u32(at)) | UInt64(u32(at + 4)) << 32 }

    /// The NUL-terminated string at `at`, or "" when out of bounds.
    func cString(at: Int) -> String {
        guard at >= 0 && at < count else { return "" }
        var end = at
        while end < count && self[end] != 0 { end += 1 }
        return String(decoding: self[at..<end], as: UTF8.self)
    }
}
