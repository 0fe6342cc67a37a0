import ArgumentParser
import Synchronization
import Glibc
import SwiftLeakSession
import SwiftLeakCore
import SwiftLeakReports
import SwiftLeakSuppressions
import SwiftLeakSymbolizer
import SwiftLeakTrace

/// `--suppressions`, `--default-suppressions` and `--gen-suppressions`, as Valgrind names them.
struct SuppressionOptions: ParsableArguments {
    @Option(name: .customLong("suppressions"), parsing: .singleValue,
            help: ArgumentHelp("A Valgrind .supp file or a LeakSanitizer file of leak: lines (repeatable).", valueName: "file"))
    var files: [String] = []

    @Option(name: .customLong("default-suppressions"),
            help: "yes or no: apply the shipped default.supp (glibc, ld.so, libstdc++, Swift runtime) and the program's __lsan_default_suppressions().")
    var defaults: String = "yes"

    @Option(name: .customLong("gen-suppressions"),
            help: "no or all (yes is taken as all): print a suppression after each loss record shown.")
    var generate: String = "no"

    func validate() throws {
        try requireYesOrNo(defaults, option: "--default-suppressions")
        // Valgrind's `yes` asks interactively for each error; there is no terminal dialogue at
        // exit here, so it prints them all.
        guard ["no", "yes", "all"].contains(generate) else {
            throw ValidationError("--gen-suppressions must be no, yes or all, not '\(generate)'")
        }
    }

    var useDefaults: Bool { defaults == "yes" }
    var generateAll: Bool { generate != "no" }

    /// Loads the defaults (unless turned off) and every given file: a file that cannot be used
    /// stops swiftleak with `FILE:LINE: what was expected` (before the program runs, for `run`).
    /// The program's own suppressions (`run` reads them from its file, `analyze` from the trace)
    /// are among the defaults, first.
    func load(programSuppressions: ProgramSuppressionText?) throws(SuppressionFileError) -> (set: SuppressionSet, warnings: [String]) {
        var (set, warnings) = Self.programSet(programSuppressions, useDefaults: useDefaults)
        let files = try loadFiles()
        set.append(files.set)
        return (set, warnings + files.warnings)
    }

    /// The shipped defaults (unless turned off) and every given file.
    func loadFiles() throws(SuppressionFileError) -> (set: SuppressionSet, warnings: [String]) {
        var set = SuppressionSet()
        var warnings: [String] = []
        if useDefaults {
            if let path = DefaultSuppressions.locate() {
                set.append(try SuppressionSet.load(path: path))
            } else {
                warnings.append("the default suppressions (\(DefaultSuppressions.fileName)) were not found next to swiftleak or in ../share/swiftleak; library pools show up as leaks (--default-suppressions=no silences this)")
            }
        }
        for file in files {
            set.append(try SuppressionSet.load(path: file))
        }
        return (set, warnings)
    }

    /// The program's own suppressions, unless the defaults are off. Text that does not parse is
    /// a warning, not an error: `run` learns it at the end, when the program has run already (the
    /// search is off the program's start), and `analyze` says the same of the same trace.
    static func programSet(_ programSuppressions: ProgramSuppressionText?, useDefaults: Bool) -> (set: SuppressionSet, warnings: [String]) {
        guard useDefaults, let programSuppressions else { return (SuppressionSet(), []) }
        switch programSuppressions.content {
        case .text(let text):
            do {
                return (try SuppressionSet.parse(text, file: programSuppressions.program + ": " + ProgramSuppressions.functionName + "()"), [])
            } catch {
                return (SuppressionSet(), ["\(error); the program's suppressions are not applied"])
            }
        case .unreadable(let reason):
            return (SuppressionSet(), [reason + "; its suppressions are not applied"])
        }
    }
}

/// `run`'s suppressions: the program's own (first, as `SuppressionOptions.load` orders them), known
/// once their search is done, and the files', loaded before the run. Worked out when a report
/// first needs them (on whichever thread builds it), then kept.
final class ReportSuppressions: Sendable {
    private let program: ProgramSuppressionSearch?
    private let useDefaults: Bool
    private let files: SuppressionSet
    private let combined = Mutex<(set: SuppressionSet, warnings: [String])?>(nil)

    init(program: ProgramSuppressionSearch?, useDefaults: Bool, files: SuppressionSet) {
        self.program = program
        self.useDefaults = useDefaults
        self.files = files
    }

    private var both: (set: SuppressionSet, warnings: [String]) {
        combined.withLock { combined in
            if let combined { return combined }
            var (set, warnings) = SuppressionOptions.programSet(program?.result, useDefaults: useDefaults)
            set.append(files)
            combined = (set, warnings)
            return (set, warnings)
        }
    }

    var set: SuppressionSet { both.set }
    /// What the program's suppressions could not give (once per run, for every report).
    var warnings: [String] { both.warnings }
}

/// Where `Suppressions/default.supp` is at run time: next to the swiftleak executable (a copied
/// build: swiftleak, libswiftleak_preload.so and default.supp in one directory), `share/swiftleak/`
/// of the install prefix, or the source tree the build directory is in
/// (`.build/<triple>/<configuration>/swiftleak`).
enum DefaultSuppressions {
    static let fileName = "default.supp"

    static func locate() -> String? {
        guard let executable = selfPath() else { return nil }
        var directory = parent(executable)
        for candidate in [directory + "/" + fileName, directory + "/../share/swiftleak/" + fileName]
        where access(candidate, R_OK) == 0 {
            return candidate
        }
        // A build tree: walk up to the directory that holds Package.swift.
        for _ in 0..<6 {
            directory = parent(directory)
            guard !directory.isEmpty else { break }
            let candidate = directory + "/Suppressions/" + fileName
            if access(directory + "/Package.swift", R_OK) == 0, access(candidate, R_OK) == 0 { return candidate }
        }
        return nil
    }

    static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "" }
        return String(path[..<slash])
    }

    static func selfPath() -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        return String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

