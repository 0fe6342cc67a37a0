import Glibc
import SwiftLeakScanner
import Testing

nonisolated(unsafe) private var aWritableGlobal: Int = 42

@Suite("/proc/PID/maps parsing")
struct MapsTests {
    @Test("parses kernel lines: anonymous, pseudo, file paths with spaces, deleted files")
    func handWritten() {
        let text = """
        55d0c4a00000-55d0c4a02000 r--p 00000000 fe:01 1835071                    /usr/bin/my app
        55d0c4a02000-55d0c4a03000 rw-p 00002000 fe:01 1835071                    /usr/bin/my app
        55d0c5f1e000-55d0c5f3f000 rw-p 00000000 00:00 0                          [heap]
        7f1e2c000000-7f1e2c021000 rw-p 00000000 00:00 0 
        7f1e30a00000-7f1e30a01000 rw-s 00000000 00:01 4242                       /memfd:swiftleak-ring (deleted)
        7ffc1b2c4000-7ffc1b2e5000 rw-p 00000000 00:00 0                          [stack]
        ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
        garbage line
        """
        let maps = MemoryMapping.parse(maps: text)
        #expect(maps.count == 7)
        #expect(maps[0] == MemoryMapping(start: 0x55d0c4a00000, end: 0x55d0c4a02000, perms: "r--p", offset: 0,
                                         device: "fe:01", inode: 1835071, path: "/usr/bin/my app"))
        #expect(maps[1].offset == 0x2000 && maps[1].isWritable && !maps[1].isExecutable && maps[1].isFileBacked)
        #expect(maps[2].path == "[heap]" && !maps[2].isAnonymous && !maps[2].isFileBacked)
        #expect(maps[3].path == "" && maps[3].isAnonymous && maps[3].size == 0x21000)
        #expect(maps[4].path == "/memfd:swiftleak-ring (deleted)" && maps[4].filePath == "/memfd:swiftleak-ring")
        #expect(maps[4].isShared && maps[4].inode == 4242)
        #expect(maps[6].start == 0xffffffffff600000 && maps[6].isExecutable && !maps[6].isReadable)
    }

    @Test("parses this process's real /proc/self/maps")
    func realMaps() throws {
        let text = readText("/proc/self/maps")
        let lines = text.split(separator: "\n")
        let maps = MemoryMapping.parse(maps: text)
        #expect(maps.count == lines.count)
        #expect(maps.count > 10)
        #expect(zip(maps, maps.dropFirst()).allSatisfy { $0.end <= $1.start })
        #expect(maps.contains { $0.path == "[stack]" })
        // The mapping holding a writable global of this test binary is a private rw mapping of it.
        let global = withUnsafePointer(to: &aWritableGlobal) { UInt64(UInt(bitPattern: $0)) }
        let data = try #require(maps.first { $0.contains(global) })
        #expect(data.perms == "rw-p")
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        let exe = String(decoding: buffer[0..<max(count, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        #expect(data.path == exe)
        // The code of this function is in an executable mapping of the same file.
        let code = maps.first { $0.isExecutable && $0.path == exe }
        #expect(code != nil)
    }
}

@Suite("ELF64 section headers")
struct ELFTests {
    static let libc = "/lib/x86_64-linux-gnu/libc.so.6"
    /// The libswiftCore this test process runs with, wherever the toolchain is installed (it was
    /// /opt/swift/..., a path only this machine has; Swift's own images put it under /usr/lib).
    static let swiftCore: String = MemoryMapping.parse(maps: readText("/proc/self/maps"))
        .first { $0.path.hasSuffix("/libswiftCore.so") }?.path ?? "libswiftCore.so is not mapped in this process"

    @Test("libc: writable data sections are roots, TLS images and relro tables are not")
    func libc() throws {
        let image = try ELFImage.load(path: ELFTests.libc)
        #expect(image.fileType == 3 && image.machine == 62)
        let byName = Dictionary(image.sections.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        // As many sections as the file's own header says (e_shnum, at byte 60), whatever the libc build.
        var header = [UInt8](repeating: 0, count: 64)
        let fd = open(ELFTests.libc, O_RDONLY)
        defer { close(fd) }
        try #require(fd >= 0 && pread(fd, &header, 64, 0) == 64)
        let sectionCount = Int(header[60]) | Int(header[61]) << 8
        #expect(sectionCount > 20 && image.sections.count == sectionCount)
        let data = try #require(byName[".data"])
        #expect(data.mayHoldHeapPointers)
        #expect(data.flags & ELFSection.flagWrite != 0 && data.size > 0)
        #expect(byName[".bss"]?.type == ELFSection.typeNoBits)
        #expect(byName[".bss"]?.mayHoldHeapPointers == true)
        #expect(byName[".got"]?.mayHoldHeapPointers == true)
        #expect(byName[".data.rel.ro"]?.mayHoldHeapPointers == true)
        #expect(byName["__libc_subfreeres"]?.mayHoldHeapPointers == true)
        #expect(byName[".tdata"]?.mayHoldHeapPointers == false)
        #expect(byName[".tbss"]?.mayHoldHeapPointers == false)
        #expect(byName[".text"]?.mayHoldHeapPointers == false)
        #expect(byName[".rodata"]?.mayHoldHeapPointers == false)
        #expect(byName[".eh_frame"]?.mayHoldHeapPointers == false)
        let loads = image.segments.filter { $0.type == ELFSegment.typeLoad }
        #expect(loads.count == 4)
        #expect(loads.last?.isWritable == true)
        #expect(loads.last.map { $0.memorySize > $0.fileSize } == true)  // .bss beyond the file
    }

    @Test("libswiftCore: swift5_* metadata and the writable .rodata are excluded, .data and .bss kept")
    func swiftCore() throws {
        let image = try ELFImage.load(path: ELFTests.swiftCore)
        let swift5 = image.sections.filter { $0.name.hasPrefix("swift5_") }
        #expect(swift5.count >= 10)
        #expect(swift5.contains { $0.name == "swift5_fieldmd" })
        #expect(swift5.contains { $0.name == "swift5_protocol_conformances" })
        #expect(swift5.filter { $0.mayHoldHeapPointers }.map(\.name) == ["swift5_backtrace"])
        let rodata = try #require(image.sections.first { $0.name == ".rodata" })
        // The trap: libswiftCore's .rodata is linked writable, into the RW segment, and is large.
        #expect(rodata.flags & ELFSection.flagWrite != 0)
        #expect(rodata.size > 256 * 1024)
        #expect(!rodata.mayHoldHeapPointers)
        let kept = Set(image.sections.filter(\.mayHoldHeapPointers).map(\.name))
        #expect(kept.isSuperset(of: [".data", ".bss", ".got", ".got.plt", ".init_array", ".fini_array", ".data.rel.ro"]))
        #expect(!kept.contains(".tbss"))
    }

    @Test("this test binary (/proc/self/exe) parses; its sections have names and .text is not a root")
    func selfExe() throws {
        let image = try ELFImage.load(path: "/proc/self/exe")
        let names = image.sections.map(\.name)
        #expect(names.contains(".text") && names.contains(".data") && names.contains(".bss"))
        #expect(image.sections.first { $0.name == ".text" }?.mayHoldHeapPointers == false)
        #expect(image.sections.first { $0.name == ".data" }?.mayHoldHeapPointers == true)
        #expect(image.segments.contains { $0.type == ELFSegment.typeLoad && $0.isWritable })
    }

    @Test("the load bias from every mapping of a library is the address of its first page")
    func loadBias() throws {
        // libc and libswiftCore both link their first PT_LOAD at virtual address 0, file offset 0, so
        // the bias is where the kernel put the offset-0 mapping; the RELRO and RW mappings, at other
        // offsets and addresses, must give the same answer.
        let maps = MemoryMapping.parse(maps: readText("/proc/self/maps"))
        for suffix in ["/libc.so.6", "/libswiftCore.so"] {
            let all = maps.filter { $0.path.hasSuffix(suffix) }
            let first = try #require(all.first { $0.offset == 0 })
            let image = try ELFImage.load(path: first.path)
            // The library as the dynamic linker mapped it; other tests may map the same file
            // elsewhere meanwhile (libdw reads ELF files through mmap).
            let mappings = all.filter { $0.start >= first.start && $0.start - first.start < image.loadSpan }
            #expect(image.segments.first { $0.type == ELFSegment.typeLoad }?.virtualAddress == 0)
            #expect(mappings.count >= 3)
            #expect(mappings.contains { $0.isWritable })
            for mapping in mappings where mapping.isReadable {
                #expect(image.loadBias(for: mapping) == first.start, "\(mapping.path) \(mapping.perms) at offset \(mapping.offset)")
                #expect(image.loadBias(for: mapping, moduleStart: first.start) == first.start)
            }
            // The no-access gap the dynamic linker leaves between segments has no bias.
            for mapping in mappings where mapping.perms == "---p" {
                #expect(image.loadBias(for: mapping) == nil)
            }
        }
    }

    @Test("malformed files are errors, not traps")
    func malformed() throws {
        let real = try ELFImage.load(path: ELFTests.libc)
        _ = real
        // Read a real header, then cut the file at every interesting length.
        let fd = open(ELFTests.libc, O_RDONLY)
        #expect(fd >= 0)
        var bytes = [UInt8](repeating: 0, count: 4096)
        _ = pread(fd, &bytes, bytes.count, 0)
        close(fd)
        for length in [0, 3, 16, 63, 64, 1000, 4096] {
            let prefix = Array(bytes.prefix(length))
            #expect(throws: ELFImage.Error.self) {
                try ELFImage.parse(fileSize: UInt64(prefix.count)) { offset, count in
                    offset + UInt64(count) <= UInt64(prefix.count) ? Array(prefix[Int(offset)..<Int(offset) + count]) : nil
                }
            }
        }
        var notELF = bytes
        notELF[1] = 0x46
        #expect(throws: ELFImage.Error.self) {
            try ELFImage.parse(fileSize: 4096) { offset, count in Array(notELF[Int(offset)..<Int(offset) + count]) }
        }
        // A section count far beyond the file: refused before reading.
        var huge = bytes
        huge[0x3C] = 0xFF
        huge[0x3D] = 0xFE
        #expect(throws: ELFImage.Error.self) {
            try ELFImage.parse(fileSize: 4096) { offset, count in
                offset + UInt64(count) <= 4096 ? Array(huge[Int(offset)..<Int(offset) + count]) : nil
            }
        }
        #expect(throws: ELFImage.Error.self) { try ELFImage.load(path: "/nonexistent/libnothing.so") }
        #expect(throws: ELFImage.Error.self) { try ELFImage.load(path: "/proc/self/maps") }  // not ELF
    }
}
