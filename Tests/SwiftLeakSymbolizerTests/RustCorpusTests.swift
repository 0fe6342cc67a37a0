import Foundation
import SwiftLeakSymbolizer
import Testing

/// Every Rust symbol of a real program, demangled by us and by binutils' c++filt (libiberty's Rust
/// demangler), which prints crate hashes and const types that we leave out: those are normalized
/// away before comparing.
@Suite("Rust demangling against c++filt on a real binary")
struct RustCorpusTests {
    static var toolsAvailable: Bool {
        FileManager.default.isExecutableFile(atPath: tool("rustc")) &&
            FileManager.default.isExecutableFile(atPath: tool("c++filt"))
    }

    /// `mangling`: "v0", or nil for rustc's default (legacy, which stable rustc cannot ask for by name).
    func symbols(mangling: String?) throws -> [String] {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let binary = directory.appendingPathComponent("rust_names").path
        let flags = mangling.map { ["-C", "symbol-mangling-version=\($0)"] } ?? []
        try run(tool("rustc"), flags + [sourcePath("rust_names.rs"), "-o", binary])
        return try run(tool("nm"), [binary]).split(separator: "\n").compactMap { line in
            line.split(separator: " ").last.map(String.init)
        }
    }

    func cxxfilt(_ names: [String]) throws -> [String] {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let input = directory.appendingPathComponent("names").path
        try names.joined(separator: "\n").write(toFile: input, atomically: true, encoding: .utf8)
        let script = "\(tool("c++filt")) < \(input)"
        return try run("/bin/sh", ["-c", script]).split(separator: "\n", omittingEmptySubsequences: false)
            .prefix(names.count).map(String.init)
    }

    @Test("v0", .enabled(if: toolsAvailable))
    func v0() throws {
        let names = try symbols(mangling: "v0").filter { $0.hasPrefix("_R") }
        #expect(names.count > 300)
        let reference = try cxxfilt(names).map { line in
            line.replacing(/\[[0-9a-f]{1,16}\]/, with: "")
                .replacing(/(-?[0-9]+|true|false|'[^']*'): [a-z0-9]+/) { match in match.output.1 }
        }
        var mismatches: [String] = []
        for (name, expected) in zip(names, reference) {
            let ours = RustDemangler.demangleV0(name)
            if ours != expected { mismatches.append("\(name)\n  ours:    \(ours ?? "nil")\n  c++filt: \(expected)") }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) of \(names.count):\n\(mismatches.prefix(10).joined(separator: "\n"))")
    }

    @Test("legacy", .enabled(if: toolsAvailable))
    func legacy() throws {
        let names = try symbols(mangling: nil).filter { RustDemangler.isLegacy($0) }
        #expect(names.count > 100)
        let reference = try cxxfilt(names).map { $0.replacing(/::h[0-9a-f]{16}$/, with: "") }
        var mismatches: [String] = []
        for (name, expected) in zip(names, reference) {
            let ours = Demangler.demangle(name)
            // libiberty leaves non-ASCII escapes (`$uef$`) undecoded; DemanglerTests checks those.
            if expected.contains("$u") {
                #expect(!ours.contains("$"), "\(name) → \(ours)")
                continue
            }
            if ours != expected { mismatches.append("\(name)\n  ours:    \(ours)\n  c++filt: \(expected)") }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) of \(names.count):\n\(mismatches.prefix(10).joined(separator: "\n"))")
    }
}
