#if canImport(Glibc)
import Glibc
#endif
import SwiftLeakCore
@testable import SwiftLeakSuppressions
import Testing

@Suite struct GlobTests {
    @Test(arguments: [
        ("malloc", "malloc", true), ("malloc", "mallocx", false), ("mall*", "malloc", true),
        ("*", "", true), ("?", "", false), ("m?lloc", "malloc", true), ("*loc", "malloc", true),
        ("*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac", false), ("*a*a*b", "xaxab", true),
        ("a\\*b", "a*b", true), ("a\\*b", "axb", false), ("_ZN*4Node*", "_ZN3foo4NodeC1Ev", true),
        ("*libc.so*", "/usr/lib/x86_64-linux-gnu/libc.so.6", true), ("libc.so*", "/usr/lib/libc.so.6", false),
    ])
    func valgrindGlobsMatchTheWholeName(pattern: String, name: String, expected: Bool) {
        #expect(Glob(pattern).matches(name) == expected)
    }

    /// compiler-rt's TemplateMatch, including its first-occurrence quirk.
    @Test(arguments: [
        ("foo", "xfooy", true), ("^foo", "xfoo", false), ("^foo", "foox", true), ("foo$", "xfoo", true),
        ("foo$", "foox", false), ("^foo$", "foo", true), ("f*o", "fxxo", true), ("a*$", "abc", true),
        ("foo", "", false), ("*", "x", true), ("^*foo", "xfoo", true), ("a$", "aXa", false),
        ("libswift*.so", "/usr/lib/swift/linux/libswiftCore.so", true),
    ])
    func lsanTemplatesMatchSubstrings(pattern: String, name: String, expected: Bool) {
        #expect(SubstringTemplate(pattern).matches(name) == expected)
    }
}

@Suite struct MatcherTests {
    static func frame(_ name: String?, mangled: String? = nil, object: String? = "/bin/prog", file: String? = nil,
                      line: Int? = nil, inlined: Bool = false, ip: UInt64 = 0x1000) -> SymbolizedFrame {
        SymbolizedFrame(ip: ip, function: name, file: file, line: line, object: object, inlined: inlined,
                        mangledFunction: mangled ?? name)
    }

    static let record = LossRecord(
        kind: .definitelyLost, bytes: 10, blocks: 1, indirectBytes: 0, function: .operatorNew,
        stack: [
            frame("Node::make()", mangled: "_ZN4Node4makeEv", file: "/src/node.cpp", line: 7, inlined: true, ip: 0x10),
            frame("build()", mangled: "_Z5buildv", file: "/src/node.cpp", line: 20, ip: 0x10),
            frame(nil, object: "/usr/lib/libplugin.so", ip: 0x20),
            frame("main", file: "/src/main.cpp", line: 3, ip: 0x30),
        ])

    func suppressed(_ body: String, kind: LeakKind = .definitelyLost, numCallers: Int = 12) throws -> Bool {
        let set = try SuppressionSet.parse(body, file: "t.supp")
        var record = Self.record
        record.kind = kind
        var report = ProcessReport(pid: 1, ppid: 0, command: ["prog"])
        report.lossRecords = [record]
        report.summary[kind] = ByteCount(bytes: 10, blocks: 1)
        return set.apply(to: report, numCallers: numCallers, interposer: "/opt/lib/libswiftleak_preload.so")
            .lossRecords[0].suppressedBy != nil
    }

    func valgrind(_ frames: String, kinds: String? = nil) -> String {
        "{\n  s\n  Memcheck:Leak\n" + (kinds.map { "  match-leak-kinds: \($0)\n" } ?? "") + frames + "\n}\n"
    }

    @Test func anchoredAtTheAllocationFunctionByMangledName() throws {
        #expect(try suppressed(valgrind("fun:_Znwm")))
        #expect(try !suppressed(valgrind("fun:operator new(unsigned long)")))
        #expect(try !suppressed(valgrind("fun:malloc")))
        // Not anchored anywhere else: frame 1 alone does not match.
        #expect(try !suppressed(valgrind("fun:_ZN4Node4makeEv")))
        #expect(try suppressed(valgrind("...\nfun:_ZN4Node4makeEv")))
    }

    @Test func inlinedFramesCountAsFrames() throws {
        #expect(try suppressed(valgrind("fun:_Znwm\nfun:_ZN4Node4makeEv\nfun:_Z5buildv")))
        #expect(try !suppressed(valgrind("fun:_Znwm\nfun:_Z5buildv")))
    }

    @Test func objSrcAndGlobs() throws {
        #expect(try suppressed(valgrind("fun:_Znwm\nfun:*\nfun:_Z5build?\nobj:/usr/lib/libplugin.so\nfun:main")))
        #expect(try suppressed(valgrind("obj:/opt/lib/libswiftleak_preload.so\n...\nobj:*plugin*")))
        #expect(try suppressed(valgrind("obj:*vgpreload_memcheck*\n...\nobj:*plugin*")))
        #expect(try !suppressed(valgrind("...\nobj:libplugin.so")))  // full path, whole name
        // A frame with no name has fun "???" (so fun:* covers it), and a frame has an object.
        #expect(try suppressed(valgrind("...\nfun:\\?\\?\\?\nfun:main")))
        #expect(try suppressed(valgrind("...\nsrc:node.cpp:7\nsrc:node.cpp")))
        #expect(try !suppressed(valgrind("...\nsrc:node.cpp:8")))
        #expect(try !suppressed(valgrind("...\nsrc:/src/node.cpp")))  // the file name, no directory
    }

    /// Valgrind names an object by the file mapped, links resolved: its `obj:` lines match here,
    /// and generated blocks spell the object the same way.
    @Test func objectsMatchByTheirResolvedPathToo() throws {
        let directory = "/tmp/swiftleak-objpath-\(getpid())"
        mkdir(directory, 0o755)
        defer { unlink(directory + "/libreal.so.1.2"); unlink(directory + "/libalias.so.1"); rmdir(directory) }
        let real = directory + "/libreal.so.1.2"
        close(open(real, O_CREAT | O_WRONLY, 0o644))
        #expect(symlink("libreal.so.1.2", directory + "/libalias.so.1") == 0)
        let record = LossRecord(kind: .definitelyLost, bytes: 1, blocks: 1, indirectBytes: 0, function: .malloc,
                                stack: [Self.frame(nil, object: directory + "/libalias.so.1")])
        var report = ProcessReport(pid: 1, ppid: 0, command: ["p"])
        report.lossRecords = [record]
        for object in [real, directory + "/libalias.so.1"] {
            let set = try SuppressionSet.parse("{\n  s\n  Memcheck:Leak\n  fun:malloc\n  obj:\(object)\n}\n", file: "t.supp")
            #expect(set.apply(to: report, numCallers: 12).lossRecords[0].suppressedBy == "s", "\(object)")
        }
        #expect(SuppressionWriter.frameLines(record, numCallers: 12) == ["fun:malloc", "obj:" + real])
    }

    @Test func ellipsisMatchesZeroOrMoreFrames() throws {
        #expect(try suppressed(valgrind("...\nfun:_Znwm")))
        #expect(try suppressed(valgrind("fun:_Znwm\n...\n...\nfun:_ZN4Node4makeEv")))
        #expect(try suppressed(valgrind("...\nfun:main\n...")))
        #expect(try !suppressed(valgrind("...\nfun:main\nfun:anything")))  // runs past the stack
    }

    @Test func leakKindsRestrictTheMatch() throws {
        #expect(try suppressed(valgrind("fun:_Znwm", kinds: "definite"), kind: .definitelyLost))
        #expect(try !suppressed(valgrind("fun:_Znwm", kinds: "definite"), kind: .stillReachable))
        #expect(try suppressed(valgrind("fun:_Znwm", kinds: "reachable,indirect"), kind: .indirectlyLost))
        #expect(try !suppressed(valgrind("fun:_Znwm", kinds: "none")))
        #expect(try suppressed(valgrind("fun:_Znwm", kinds: "all"), kind: .possiblyLost))
    }

    @Test func numCallersBoundsTheStackByAddress() throws {
        // With --num-callers=3: frame 0 and two addresses (0x10 with its inlined frame, 0x20).
        #expect(try suppressed(valgrind("...\nobj:/usr/lib/libplugin.so"), numCallers: 3))
        #expect(try !suppressed(valgrind("...\nfun:main"), numCallers: 3))
    }

    @Test func lsanMatchesAnyFramesFunctionFileOrModule() throws {
        #expect(try suppressed("leak:Node::make"))
        #expect(try suppressed("leak:^build()$"))
        #expect(try suppressed("leak:libplugin.so"))
        #expect(try suppressed("leak:/src/main.cpp"))
        #expect(try suppressed("leak:operator new"))
        #expect(try !suppressed("leak:_ZN4Node"))  // LSan sees demangled names
        #expect(try !suppressed("leak:^main.cpp"))
    }

    @Test func accountingMovesBytesToSuppressed() throws {
        var set = try SuppressionSet.parse(valgrind("fun:malloc") + "{\n  n2\n  Memcheck:Leak\n  fun:calloc\n}\n", file: "a.supp")
        set.append(try SuppressionSet.parse("leak:never_matches_anything\n", file: "lsan.txt"))
        var report = ProcessReport(pid: 1, ppid: 0, command: ["p"])
        report.lossRecords = [
            LossRecord(kind: .definitelyLost, bytes: 10, blocks: 1, indirectBytes: 0, function: .malloc, stack: []),
            LossRecord(kind: .stillReachable, bytes: 30, blocks: 3, indirectBytes: 0, function: .malloc, stack: []),
            LossRecord(kind: .definitelyLost, bytes: 5, blocks: 1, indirectBytes: 0, function: .calloc, stack: []),
            LossRecord(kind: .definitelyLost, bytes: 7, blocks: 1, indirectBytes: 0, function: .realloc, stack: []),
        ]
        report.summary = [.definitelyLost: ByteCount(bytes: 22, blocks: 3), .stillReachable: ByteCount(bytes: 30, blocks: 3)]
        let after = set.apply(to: report, numCallers: 12)
        #expect(after.summary[.definitelyLost] == ByteCount(bytes: 7, blocks: 1))
        #expect(after.summary[.stillReachable] == nil)
        #expect(after.suppressed == ByteCount(bytes: 45, blocks: 5))
        #expect(after.lossRecords.map(\.suppressedBy) == ["s", "s", "n2", nil])
        #expect(after.lossRecords[2].suppressedAt == "a.supp:7")
        #expect(after.usedSuppressions.map(\.name) == ["s", "n2"])
        #expect(after.usedSuppressions[0].records == 2)
        #expect(after.usedSuppressions[0].suppressed == ByteCount(bytes: 40, blocks: 4))
        #expect(after.usedSuppressions[0].location == "a.supp:2")
    }
}

@Suite struct FrameMatchModelTests {
    /// Valgrind's rule written out recursively: `...` takes zero or more frames, any other pattern
    /// exactly one; the patterns must be used up, the stack may go on.
    static func reference(_ patterns: ArraySlice<FramePattern>, _ frames: ArraySlice<MatchFrame>) -> Bool {
        guard let first = patterns.first else { return true }
        if case .anyFrames = first {
            return (0...frames.count).contains { reference(patterns.dropFirst(), frames.dropFirst($0)) }
        }
        guard let frame = frames.first, LeakSuppression.match([first], [frame]) else { return false }
        return reference(patterns.dropFirst(), frames.dropFirst())
    }

    @Test("frame patterns against stacks: the matcher agrees with the rule on every small case")
    func againstReference() {
        let choices: [FramePattern] = [.anyFrames, .function(Glob("a")), .function(Glob("b")), .function(Glob("*")),
                                       .object(Glob("*lib*"))]
        func frame(_ name: String) -> MatchFrame {
            MatchFrame(mangledName: name, demangledName: name, objects: [name == "a" ? "/lib/liba.so" : "/bin/b"],
                       file: nil, line: nil)
        }
        var generator = SystemRandomNumberGenerator()
        var compared = 0
        for _ in 0..<4000 {
            let patterns = (0..<Int.random(in: 0...4, using: &generator)).map { _ in choices.randomElement(using: &generator)! }
            let frames = (0..<Int.random(in: 0...5, using: &generator)).map { _ in frame(Bool.random(using: &generator) ? "a" : "b") }
            #expect(LeakSuppression.match(patterns, frames) == Self.reference(patterns[...], frames[...]),
                    "\(patterns) \(frames.map(\.mangledName))")
            compared += 1
        }
        #expect(compared == 4000)
    }
}
