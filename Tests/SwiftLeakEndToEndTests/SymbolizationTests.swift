import Foundation
import Testing

/// Frames in real reports: function, file and line of the allocating code, through the whole tool.
@Suite("Symbolized stacks")
struct SymbolizationTests {
    /// The line of `// @<tag> <name>` in a test program.
    static func line(of tag: String, in source: String) throws -> Int {
        let text = try String(contentsOf: Harness.testPrograms.appendingPathComponent(source), encoding: .utf8)
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
        where line.contains("// @" + tag) {
            return index + 1
        }
        throw HarnessError("no marker \(tag) in \(source)")
    }

    /// Whether some loss record has, somewhere in its stack, `function` at `file`:`line`.
    static func hasFrame(_ report: Report, function: String, file: String, line: Int) -> Bool {
        report.lossRecords.contains { record in
            record.stack.contains { $0.function == function && $0.file?.hasSuffix("/" + file) == true && $0.line == line }
        }
    }

    static func describe(_ report: Report) -> String {
        report.lossRecords.map { record in
            record.function + ": " + record.stack.map { "\($0.function ?? "???") \($0.file ?? "-"):\($0.line ?? 0)" }.joined(separator: " <- ")
        }.joined(separator: "\n")
    }

    @Test("C: the allocating line and its caller")
    func cFrames() throws {
        let program = try Harness.build("stacks/c_site.c")
        let (_, maybeReport) = try Harness.swiftleak(program)
        let report = try #require(maybeReport)
        let record = try #require(report.lossRecords.first { $0.bytes == 41 })
        #expect(record.function == "malloc")
        #expect(record.stack.count >= 4)
        #expect(record.stack[1].function == "leaky_site")
        #expect(record.stack[1].file?.hasSuffix("stacks/c_site.c") == true)
        #expect(record.stack[1].line == (try Self.line(of: "alloc leaky_site", in: "stacks/c_site.c")))
        #expect(record.stack[2].function == "caller_of_site")
        #expect(record.stack[2].line == (try Self.line(of: "call caller_of_site", in: "stacks/c_site.c")))
        #expect(record.stack[3].function == "main")
        #expect(record.stack.count == 4, "frames below main are cut, as in Valgrind")
    }

    @Test("C++: demangled names with templates")
    func cxxFrames() throws {
        let source = "stacks/cxx_templates.cpp"
        let program = try Harness.build(source)
        let (_, maybeReport) = try Harness.swiftleak(program)
        let report = try #require(maybeReport)
        #expect(Self.hasFrame(report, function: "shapes::Factory<std::vector<int, std::allocator<int> > >::make()",
                              file: "cxx_templates.cpp", line: try Self.line(of: "alloc Factory::make", in: source)),
                "\(Self.describe(report))")
        #expect(Self.hasFrame(report, function: "double* make_array<double>(unsigned long)",
                              file: "cxx_templates.cpp", line: try Self.line(of: "alloc make_array", in: source)),
                "\(Self.describe(report))")
        let arrays = report.lossRecords.filter { $0.function == "operator new[](unsigned long)" }
        #expect(arrays.map(\.bytes) == [72])
    }

    @Test("-O2: an inlined function and the function it was inlined into both appear")
    func inlinedFrames() throws {
        let source = "stacks/inline_o2.c"
        let program = try Harness.build(source, flags: ["-O2", "-g"])
        let (_, maybeReport) = try Harness.swiftleak(program)
        let report = try #require(maybeReport)
        let record = try #require(report.lossRecords.first { $0.bytes == 33 }, "\(Self.describe(report))")
        #expect(record.stack[1].function == "inner_alloc")
        #expect(record.stack[1].inlined)
        #expect(record.stack[1].line == (try Self.line(of: "alloc inner_alloc", in: source)))
        #expect(record.stack[2].function == "outer_alloc")
        #expect(!record.stack[2].inlined)
        #expect(record.stack[2].line == (try Self.line(of: "call outer_alloc", in: source)))
        #expect(record.stack[1].ip == record.stack[2].ip, "inlined frames share the address")
    }

    @Test("a frame in a library dlclose'd before exit still resolves")
    func unloadedLibrary() throws {
        let plugin = Harness.workDirectory.appendingPathComponent("libplugin.so").path
        let build = try Harness.run(["/usr/bin/env", "cc", "-O0", "-g", "-shared", "-fPIC", "-o", plugin,
                                     Harness.testPrograms.appendingPathComponent("stacks/plugin.c").path])
        #expect(build.status == 0, "\(build.stderr)")
        let program = try Harness.build("stacks/main_dlopen.c")
        let (result, maybeReport) = try Harness.swiftleak(program, [plugin])
        #expect(result.status == 0, "\(result.stderr)")
        let report = try #require(maybeReport)
        let record = try #require(report.lossRecords.first { $0.bytes == 48 }, "\(Self.describe(report))")
        #expect(record.stack[1].function == "plugin_alloc")
        #expect(record.stack[1].object == plugin)
        #expect(record.stack[1].line == (try Self.line(of: "alloc plugin_alloc", in: "stacks/plugin.c")))
        #expect(record.stack[2].function == "main")
    }

    @Test("Swift: demangled names of the allocating functions")
    func swiftFrames() throws {
        let program = try Harness.build("stacks/swift_objects.swift")
        let (result, maybeReport) = try Harness.swiftleak(program)
        #expect(result.status == 0)
        let report = try #require(maybeReport)
        let line = try Self.line(of: "alloc makeCycle", in: "stacks/swift_objects.swift")
        #expect(Self.hasFrame(report, function: "swift_objects.makeCycle() -> ()", file: "swift_objects.swift", line: line),
                "\(Self.describe(report))")
        #expect(report.lossRecords.contains { $0.stack.contains { $0.function == "swift_allocObject" } })
        // Reports can lead with the program's own code: the runtime's plumbing is skipped.
        // The two Node objects (lines 9 and 10) lead with the allocating initializer, right after
        // swift_allocObject.
        let nodes = report.lossRecords.filter { record in
            record.firstUserFrame.map { record.stack[$0].function?.hasPrefix("swift_objects.Node.__allocating_init()") == true } ?? false
        }
        #expect(nodes.count == 2, "\(Self.describe(report))")
        for record in nodes {
            let first = try #require(record.firstUserFrame)
            #expect(record.stack[first - 1].function == "swift_allocObject")
            #expect(record.stack[first + 1].function == "swift_objects.makeCycle() -> ()")
        }
        // Whatever the program allocated, through the runtime or not, leads with its own code.
        for record in report.lossRecords where record.stack.contains(where: { $0.function == "swift_objects.makeCycle() -> ()" }) {
            let first = try #require(record.firstUserFrame)
            #expect(record.stack[first].object == program)
        }
    }

    @Test("no debug info: names from the symbol table; stripped: module+offset; never a crash")
    func withoutDebugInfo() throws {
        let noDebug = try Harness.build("stacks/c_site.c", flags: ["-O0"], name: "c_site_nodebug")
        let (_, maybeReport) = try Harness.swiftleak(noDebug)
        let report = try #require(maybeReport)
        let record = try #require(report.lossRecords.first { $0.bytes == 41 })
        #expect(record.stack[1].function == "leaky_site")
        #expect(record.stack[1].file == nil)
        #expect(record.stack[2].function == "caller_of_site")

        let stripped = try Harness.build("stacks/c_site.c", flags: ["-O0", "-s"], name: "c_site_stripped")
        let (result, maybeStripped) = try Harness.swiftleak(stripped)
        #expect(result.status == 0)
        let strippedReport = try #require(maybeStripped)
        let strippedRecord = try #require(strippedReport.lossRecords.first { $0.bytes == 41 })
        #expect(strippedRecord.stack[1].function == nil)
        #expect(strippedRecord.stack[1].object == stripped)
        // The text report falls back to module+offset, which addr2line takes.
        #expect(result.stderr.contains("??? (in \(stripped)+0x"))
        // Frames in libraries that keep their symbols are still named.
        #expect(strippedRecord.stack.contains { $0.function == "__libc_start_call_main" })
    }
}
