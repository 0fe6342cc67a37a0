import Foundation
import SwiftLeakCore
import SwiftLeakSymbolizer
import Testing

@Suite("Symbolizer on programs that have exited")
struct SymbolizerTests {
    @Test("C -O0: function start and a call site, with file and line")
    func plainFrames() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let program = try buildAndRun("frames.c", compiler: "cc", flags: ["-g", "-O0"], output: "frames", in: directory)
        #expect(!program.module.buildID.isEmpty)
        let symbolizer = Symbolizer()

        let start = symbolizer.symbolize(try program.function("leaf_function"), in: program.module, isReturnAddress: false)
        #expect(start.count == 1)
        #expect(start.first?.function == "leaf_function")
        #expect(start.first?.file == sourcePath("frames.c"))
        #expect(start.first?.line == (try markerLine("leaf_function", in: "frames.c")))
        #expect(start.first?.object == program.module.path)
        #expect(start.first?.inlined == false)
        #expect(start.first?.note == nil)

        // A return address: looked up at ip - 1, so the line is the call's, and ip is kept as given.
        let ip = try program.ret("in_leaf")
        let call = symbolizer.symbolize(ip, in: program.module, isReturnAddress: true)
        #expect(call == [SymbolizedFrame(ip: ip, function: "leaf_function", file: sourcePath("frames.c"),
                                         line: try markerLine("probe_in_leaf", in: "frames.c"),
                                         object: program.module.path, mangledFunction: "leaf_function")])

        // A static function: its name comes from .symtab / DWARF all the same.
        let hidden = symbolizer.symbolize(try program.ret("in_hidden"), in: program.module, isReturnAddress: true)
        #expect(hidden.first?.function == "hidden_helper")
        #expect(hidden.first?.line == (try markerLine("probe_in_hidden", in: "frames.c")))
    }

    @Test("C -O2: an address in code inlined twice gives three frames, innermost first")
    func inlinedFrames() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (program, ip) = try inlineProgramAndReturn(in: directory)
        let frames = Symbolizer().symbolize(ip, in: program.module, isReturnAddress: true)
        let source = sourcePath("inline.c")
        #expect(frames.map(\.function) == ["inner_step", "middle_step", "outer_function"])
        #expect(frames.map(\.inlined) == [true, true, false])
        #expect(frames.map(\.file) == [source, source, source])
        #expect(frames.map(\.line) == [
            try markerLine("probe_in_inner", in: "inline.c"),
            try markerLine("call_inner", in: "inline.c"),
            try markerLine("call_middle", in: "inline.c"),
        ])
        #expect(frames.allSatisfy { $0.ip == ip && $0.object == program.module.path })
    }

    @Test("C++: template and namespace names are demangled, or kept mangled on request")
    func cxxTemplates() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let program = try buildAndRun("templates.cpp", compiler: "g++", flags: ["-g", "-O0"], output: "templates", in: directory)
        let symbolizer = Symbolizer()

        let twice = symbolizer.symbolize(try program.function("twice_int"), in: program.module, isReturnAddress: false)
        #expect(twice.first?.function == "int twice<int>(int)")

        let inTwice = symbolizer.symbolize(try program.ret("in_twice"), in: program.module, isReturnAddress: true)
        #expect(inTwice.first?.function == "int twice<int>(int)")
        #expect(inTwice.first?.line == (try markerLine("probe_in_twice", in: "templates.cpp")))

        let get = symbolizer.symbolize(try program.ret("in_box_get"), in: program.module, isReturnAddress: true)
        #expect(get.first?.function == "shapes::Box<double>::get() const")
        #expect(get.first?.file == sourcePath("templates.cpp"))
        #expect(get.first?.line == (try markerLine("probe_in_get", in: "templates.cpp")))
        // The linker's name rides along for suppression files' fun: lines.
        #expect(get.first?.mangledFunction == "_ZNK6shapes3BoxIdE3getEv")

        let raw = Symbolizer(demangle: false).symbolize(try program.ret("in_box_get"), in: program.module, isReturnAddress: true)
        #expect(raw.first?.function == "_ZNK6shapes3BoxIdE3getEv")
    }

    @Test("Swift: initializer names come back demangled")
    func swiftNames() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let program = try buildAndRun("swift_cycle.swift", compiler: "swiftc",
                                      flags: ["-g", "-Onone", "-module-name", "swift_cycle"],
                                      output: "swift_cycle", in: directory)
        let symbolizer = Symbolizer()
        let initFrames = symbolizer.symbolize(try program.ret("node_frame0"), in: program.module, isReturnAddress: true)
        #expect(initFrames.first?.function == "swift_cycle.Node.init() -> swift_cycle.Node")
        #expect(initFrames.first?.file == sourcePath("swift_cycle.swift"))
        #expect(initFrames.first?.line == (try markerLine("backtrace_in_init", in: "swift_cycle.swift")))

        let allocating = symbolizer.symbolize(try program.ret("node_frame1"), in: program.module, isReturnAddress: true)
        #expect(allocating.last?.function == "swift_cycle.Node.__allocating_init() -> swift_cycle.Node")
        #expect(allocating.last?.inlined == false)
    }

    @Test("stripped binary: exported names from .dynsym, nothing invented for the rest")
    func strippedBinary() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let binary = directory.appendingPathComponent("frames-stripped").path
        try run(tool("cc"), ["-g", "-O0", "-rdynamic", sourcePath("frames.c"), "-o", binary])
        try run(tool("strip"), ["--strip-all", binary])
        let program = try ProgramRun(output: run(binary, []), path: binary)
        let symbolizer = Symbolizer()

        let exported = symbolizer.symbolize(try program.ret("in_leaf"), in: program.module, isReturnAddress: true)
        #expect(exported.count == 1)
        #expect(exported.first?.function == "leaf_function")
        #expect(exported.first?.file == nil)
        #expect(exported.first?.line == nil)
        #expect(exported.first?.object == binary)

        let ip = try program.ret("in_hidden")
        let hidden = symbolizer.symbolize(ip, in: program.module, isReturnAddress: true)
        #expect(hidden == [SymbolizedFrame(ip: ip, object: binary)])
        let offset = ip - program.module.loadBias
        #expect(Symbolizer.moduleOffset(of: ip, in: program.module) == "frames-stripped+0x\(String(offset, radix: 16))")
    }

    @Test("a stripped binary with its debug file named by .gnu_debuglink, beside it or in .debug/: names and lines",
          arguments: ["", ".debug"])
    func debugLinkedFile(subdirectory: String) throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let binary = directory.appendingPathComponent("frames-linked").path
        // No build id: only the .gnu_debuglink name (CRC checked) can lead to the debug file.
        try run(tool("cc"), ["-g", "-O0", "-Wl,--build-id=none", sourcePath("frames.c"), "-o", binary])
        let debugDirectory = subdirectory.isEmpty ? directory : directory.appendingPathComponent(subdirectory)
        try FileManager.default.createDirectory(at: debugDirectory, withIntermediateDirectories: true)
        let debugFile = debugDirectory.appendingPathComponent("frames-linked.dbg").path
        try run(tool("objcopy"), ["--only-keep-debug", binary, debugFile])
        try run(tool("objcopy"), ["--strip-all", "--add-gnu-debuglink=\(debugFile)", binary])
        let program = try ProgramRun(output: run(binary, []), path: binary)
        #expect(program.module.buildID.isEmpty)

        let hidden = Symbolizer().symbolize(try program.ret("in_hidden"), in: program.module, isReturnAddress: true)
        #expect(hidden.first?.function == "hidden_helper")
        #expect(hidden.first?.file == sourcePath("frames.c"))
        #expect(hidden.first?.line == (try markerLine("probe_in_hidden", in: "frames.c")))
    }

    /// The look-up finds the name in .strtab first: it must still take only a function of exactly
    /// that name, whether the name also ends other names (a variable's, here) and however often.
    @Test("__lsan_default_suppressions() is found by its exact name among names that end with it",
          arguments: [1, 20])
    func programSuppressionsAmongSimilarNames(similarNames: Int) throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let variables = (0..<similarNames).map { "int v\($0)__lsan_default_suppressions = \($0);" }.joined(separator: "\n")
        let withFunction = variables + "\nconst char *__lsan_default_suppressions(void) { return \"leak:known_fill\\n\"; }\nint main(void) { return v0__lsan_default_suppressions; }\n"
        let withoutFunction = variables + "\nint main(void) { return v0__lsan_default_suppressions; }\n"
        for (name, source, expected) in [("with", withFunction, ProgramSuppressions.Found.text("leak:known_fill\n")),
                                         ("without", withoutFunction, .none)] {
            let file = directory.appendingPathComponent("\(name).c")
            try source.write(to: file, atomically: true, encoding: .utf8)
            let binary = directory.appendingPathComponent(name).path
            try run(tool("cc"), ["-O1", file.path, "-o", binary])
            #expect(ProgramSuppressions.lsanDefaultSuppressions(inFile: binary) == expected, "\(name), \(similarNames) similar names")
        }
    }

    @Test("stripped files without debug info do not load libdw's debuginfod client while DEBUGINFOD_URLS is unset",
          .enabled(if: (ProcessInfo.processInfo.environment["DEBUGINFOD_URLS"] ?? "").isEmpty))
    func noDebuginfodWithoutServers() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let binary = directory.appendingPathComponent("frames-bare").path
        try run(tool("cc"), ["-O0", "-rdynamic", sourcePath("frames.c"), "-o", binary])
        try run(tool("strip"), ["--strip-all", binary])
        let program = try ProgramRun(output: run(binary, []), path: binary)
        let frames = Symbolizer().symbolize(try program.ret("in_leaf"), in: program.module, isReturnAddress: true)
        #expect(frames.first?.function == "leaf_function")
        #expect(ProgramSuppressions.lsanDefaultSuppressions(inFile: binary) == .none)
        // libdebuginfod brings libcurl and GnuTLS with it (6 ms of every run, and their exit handlers).
        // (/proc files have no size: read to their end, not by their length.)
        let maps = try #require(FileHandle(forReadingAtPath: "/proc/self/maps")).readDataToEndOfFile()
        #expect(!maps.isEmpty)
        #expect(!String(decoding: maps, as: UTF8.self).contains("libdebuginfod"))
    }

    @Test("a rebuilt file (build id differs) gives a note, never a name")
    func buildIDMismatch() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let program = try buildAndRun("frames.c", compiler: "cc", flags: ["-g", "-O0"], output: "frames", in: directory)
        // Rebuild at the same path with different code, as `make` would after the run.
        try run(tool("cc"), ["-g", "-O0", "-DSWL_VARIANT", sourcePath("frames.c"), "-o", program.module.path])

        let symbolizer = Symbolizer()
        let ip = try program.ret("in_leaf")
        let frames = symbolizer.symbolize(ip, in: program.module, isReturnAddress: true)
        #expect(frames.count == 1)
        #expect(frames.first?.ip == ip)
        #expect(frames.first?.function == nil)
        #expect(frames.first?.file == nil)
        #expect(frames.first?.object == program.module.path)
        #expect(frames.first?.note?.contains("changed since the program ran") == true)
        #expect(symbolizer.problems.count == 1)

        // Without a recorded build id nothing can be checked: the file is used as it is.
        var unchecked = program.module
        unchecked.buildID = []
        #expect(symbolizer.symbolize(ip, in: unchecked, isReturnAddress: true).first?.note == nil)
    }

    @Test("missing, unreadable and non-ELF files, and no module at all")
    func missingFiles() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let symbolizer = Symbolizer()

        let gone = LoadedModule(path: directory.appendingPathComponent("libgone.so").path, loadBias: 0x7f00_0000_0000,
                                start: 0x7f00_0000_0000, end: 0x7f00_0001_0000, buildID: [1, 2, 3])
        #expect(symbolizer.symbolize(0x7f00_0000_1234, in: gone, isReturnAddress: true)
            == [SymbolizedFrame(ip: 0x7f00_0000_1234, object: gone.path)])

        let textPath = directory.appendingPathComponent("not-elf.so").path
        try "this is not an ELF file\n".write(toFile: textPath, atomically: true, encoding: .utf8)
        var notELF = gone
        notELF.path = textPath
        #expect(symbolizer.symbolize(0x7f00_0000_1234, in: notELF, isReturnAddress: false)
            == [SymbolizedFrame(ip: 0x7f00_0000_1234, object: textPath)])

        // A truncated ELF file: the first 100 bytes of a real one.
        let truncatedPath = directory.appendingPathComponent("truncated.so").path
        let header = try Data(contentsOf: URL(fileURLWithPath: "/proc/self/exe")).prefix(100)
        try header.write(to: URL(fileURLWithPath: truncatedPath))
        var truncated = gone
        truncated.path = truncatedPath
        #expect(symbolizer.symbolize(0x7f00_0000_1234, in: truncated, isReturnAddress: true).first?.function == nil)

        #expect(symbolizer.symbolize(0x1234, in: nil, isReturnAddress: true) == [SymbolizedFrame(ip: 0x1234)])
        #expect(symbolizer.symbolize(0, in: gone, isReturnAddress: true) == [SymbolizedFrame(ip: 0, object: gone.path)])
        #expect(symbolizer.problems.count == 3)
    }

    @Test("each module file is opened once; repeated addresses come from the cache")
    func caching() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let program = try buildAndRun("frames.c", compiler: "cc", flags: ["-g", "-O0"], output: "frames", in: directory)
        let symbolizer = Symbolizer()
        let addresses = [try program.ret("in_leaf"), try program.ret("in_hidden"), try program.function("leaf_function")]
        let first = addresses.map { symbolizer.symbolize($0, in: program.module, isReturnAddress: true) }
        let second = addresses.map { symbolizer.symbolize($0, in: program.module, isReturnAddress: true) }
        #expect(first == second)
        #expect(symbolizer.statistics == Symbolizer.Statistics(filesOpened: 1, cacheHits: 3, lookups: 3))

        // A whole stack through the module list: the first address exact, the others return addresses.
        let stack = symbolizer.symbolize(stack: [try program.function("leaf_function"), try program.ret("in_leaf")],
                                         modules: [program.module], firstIsReturnAddress: false)
        #expect(stack.map(\.function) == ["leaf_function", "leaf_function"])
        #expect(stack.map(\.line) == [try markerLine("leaf_function", in: "frames.c"),
                                       try markerLine("probe_in_leaf", in: "frames.c")])
    }

    @Test("libc at an arbitrary bias: names and lines come from its build-id debug file when installed")
    func sharedLibraryAtBias() throws {
        let libc = "/lib/x86_64-linux-gnu/libc.so.6"
        guard FileManager.default.fileExists(atPath: libc) else { return }
        let output = try run(tool("nm"), ["-D", "--defined-only", libc])
        guard let line = output.split(separator: "\n").first(where: { $0.hasSuffix(" T malloc@@GLIBC_2.2.5") }),
              let value = UInt64(line.split(separator: " ")[0], radix: 16) else {
            throw TestFailure("no malloc in nm -D output")
        }
        let bias: UInt64 = 0x7f12_3400_0000
        let module = LoadedModule(path: libc, loadBias: bias, start: bias, end: bias + 0x20_0000, buildID: [])
        let frames = Symbolizer().symbolize(bias + value, in: module, isReturnAddress: false)
        #expect(frames.last?.function == "malloc" || frames.last?.function == "__libc_malloc")
        #expect(frames.last?.inlined == false)
        if FileManager.default.fileExists(atPath: "/usr/lib/debug/.build-id") {
            // Debian's libc6-dbg: source lines for a library without .debug_info of its own.
            #expect(frames.last?.file?.hasSuffix("malloc.c") == true)
            #expect(frames.last?.line != nil)
        }
    }
}
