import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing

/// Valgrind's XML and command line: what CI jobs written for Valgrind read and run.
@Suite("Valgrind compatibility")
struct ValgrindCompatTests {
    /// An XML element: name, text, children.
    final class Element {
        let name: String
        var text = ""
        var children: [Element] = []
        init(name: String) { self.name = name }

        func child(_ name: String) -> Element? { children.first { $0.name == name } }
        /// Every path from here to a leaf, as "stack/frame/ip": the shape, without repeats.
        var shape: Set<String> {
            if children.isEmpty { return [name] }
            return Set(children.flatMap { $0.shape.map { name + "/" + $0 } })
        }
    }

    /// One parser for both files: Foundation's XMLParser building a plain tree.
    final class TreeBuilder: NSObject, XMLParserDelegate {
        var stack: [Element] = [Element(name: "#document")]
        func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                    attributes: [String: String] = [:]) {
            let element = Element(name: name)
            stack.last!.children.append(element)
            stack.append(element)
        }
        func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
            stack.removeLast()
        }
        func parser(_ parser: XMLParser, foundCharacters string: String) { stack.last!.text += string }
        func parser(_ parser: XMLParser, foundCDATA data: Data) { stack.last!.text += String(decoding: data, as: UTF8.self) }

        static func parse(_ path: String) throws -> Element {
            let parser = try #require(XMLParser(contentsOf: URL(fileURLWithPath: path)))
            let builder = TreeBuilder()
            parser.delegate = builder
            #expect(parser.parse(), "\(path): \(parser.parserError.map { "\($0)" } ?? "")")
            return try #require(builder.stack.first?.child("valgrindoutput"))
        }
    }

    struct LeakError: Hashable {
        var kind: String
        var bytes: String
        var blocks: String
    }

    static func leakErrors(_ root: Element) -> [LeakError] {
        root.children.filter { $0.name == "error" }.map { error in
            LeakError(kind: error.child("kind")?.text ?? "", bytes: error.child("xwhat")?.child("leakedbytes")?.text ?? "",
                      blocks: error.child("xwhat")?.child("leakedblocks")?.text ?? "")
        }
    }

    @Test("--xml=yes: the same element tree, kinds and counts as Valgrind's XML, and the same ValgrindCI summary")
    func xmlMatchesValgrind() throws {
        let program = try Harness.build("suppressions/every_kind.cpp")
        let valgrind = try #require(SuppressionEndToEndTests.valgrindPath, "valgrind is needed (scripts/install-deps installs it)")
        let directory = Harness.workDirectory.appendingPathComponent("xml-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let ours = directory.appendingPathComponent("swiftleak.xml").path
        let theirs = directory.appendingPathComponent("valgrind.xml").path
        let options = ["--leak-check=full", "--show-leak-kinds=all", "--gen-suppressions=all", "--xml=yes"]
        let run = try Harness.run([Harness.swiftleak] + options + ["--xml-file=" + ours, program])
        #expect(run.status == 0, "\(run.stderr)")
        _ = try Harness.run([valgrind] + options + ["--xml-file=" + theirs, program])

        let mine = try TreeBuilder.parse(ours), reference = try TreeBuilder.parse(theirs)
        // The top level: the same elements in the same order.
        let topLevel: (Element) -> [String] = { root in
            root.children.map(\.name).filter { $0 != "error" && $0 != "suppression" }
        }
        #expect(topLevel(mine) == topLevel(reference))
        #expect(mine.child("protocolversion")?.text == "4")
        #expect(mine.child("protocoltool")?.text == "memcheck")
        #expect(mine.children.filter { $0.name == "status" }.map { $0.child("state")?.text } == ["RUNNING", "FINISHED"])
        #expect(mine.child("args")?.child("argv")?.child("exe")?.text == program)
        // Each leak error: the same shape (every path from <error> to a leaf) and the same
        // kinds and counts.
        let myErrors = mine.children.filter { $0.name == "error" }, theirErrors = reference.children.filter { $0.name == "error" }
        #expect(myErrors.count == 6 && theirErrors.count == 6)
        #expect(Set(myErrors.flatMap(\.shape)) == Set(theirErrors.flatMap(\.shape)))
        #expect(Self.leakErrors(mine).sorted { "\($0)" < "\($1)" } == Self.leakErrors(reference).sorted { "\($0)" < "\($1)" })
        // The suppressions carried in the XML are the same text.
        let mySuppressions = myErrors.compactMap { $0.child("suppression")?.child("rawtext")?.text }
        let theirSuppressions = theirErrors.compactMap { $0.child("suppression")?.child("rawtext")?.text }
        #expect(Set(mySuppressions) == Set(theirSuppressions))

        // ValgrindCI (pip install ValgrindCI, which scripts/install-deps does).
        let ci = ["/usr/local/bin/valgrind-ci", "/usr/bin/valgrind-ci", NSHomeDirectory() + "/.local/bin/valgrind-ci"]
            .first { FileManager.default.isExecutableFile(atPath: $0) } ?? Self.onPath("valgrind-ci")
        let valgrindCI = try #require(ci, "valgrind-ci is needed: pip install ValgrindCI (scripts/install-deps)")
        let mySummary = try Harness.run([valgrindCI, ours, "--summary"])
        let theirSummary = try Harness.run([valgrindCI, theirs, "--summary"])
        #expect(mySummary.status == 0 && !mySummary.stdout.isEmpty, "\(mySummary.stderr)")
        #expect(mySummary.stdout == theirSummary.stdout)
    }

    static func onPath(_ name: String) -> String? {
        (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":")
            .map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Typical CI command lines with `valgrind` replaced by `swiftleak`: each runs the program,
    /// keeps its output and exit status, and gives Valgrind's exit status for the leaks.
    /// (options, the exit status Valgrind gives with every_kind's leaks)
    static let commandLines: [([String], Int32)] = [
        (["--leak-check=full", "--error-exitcode=1"], 1),
        (["--tool=memcheck", "--leak-check=full", "--show-leak-kinds=all", "--track-origins=yes", "--error-exitcode=3"], 3),
        (["-q", "--leak-check=full", "--show-reachable=yes", "--num-callers=20", "--error-exitcode=9"], 9),
        (["--leak-check=summary", "--error-exitcode=1"], 0),  // Valgrind: leaks are errors only with full
        (["--leak-check=full", "--errors-for-leak-kinds=definite", "--error-exitcode=2", "--malloc-fill=0xAB", "--free-fill=0xCD"], 2),
        (["--leak-check=full", "--error-exitcode=0"], 0),  // 0 turns it off
        (["--leak-check=full", "--leak-resolution=low", "--child-silent-after-fork=yes", "--error-exitcode=5"], 5),
        (["-v", "--leak-check=full", "--show-possibly-lost=no", "--error-exitcode=6"], 6),
        (["--leak-check=no", "--error-exitcode=1"], 0),
        (["--leak-check=full", "--run-libc-freeres=no", "--gen-suppressions=yes", "--error-exitcode=4"], 4),
    ]

    /// Typical CI command lines with `valgrind` replaced by `swiftleak`: each runs the program,
    /// keeps its output and exit status, and gives Valgrind's exit status for the leaks.
    @Test("typical Valgrind command lines work with valgrind replaced by swiftleak", arguments: commandLines)
    func typicalCommandLines(options: [String], status: Int32) throws {
        let program = try Harness.build("suppressions/every_kind.cpp")
        let valgrind = try #require(SuppressionEndToEndTests.valgrindPath, "valgrind is needed (scripts/install-deps installs it)")
        let ours = try Harness.run([Harness.swiftleak] + options + [program])
        let theirs = try Harness.run([valgrind] + options + [program])
        #expect(ours.status == status, "\(options): \(ours.stderr)")
        #expect(theirs.status == status, "\(options): Valgrind itself says \(theirs.status)")
        // The program prints a string's length, then an address (which differs run to run).
        #expect(ours.stdout.split(separator: "\n").first == theirs.stdout.split(separator: "\n").first)
        #expect(ours.stdout.split(separator: "\n").count == 2)
        // Ignored options are named once each, on one line.
        for option in options where ["--track-origins", "--malloc-fill", "--free-fill", "--run-libc-freeres"].contains(where: option.hasPrefix) {
            #expect(ours.stderr.components(separatedBy: "ignoring \(option):").count == 2, "\(ours.stderr)")
        }
        if options.contains("--gen-suppressions=yes") {
            #expect(ours.stderr.contains("\n{\n   <insert_a_suppression_name_here>\n   Memcheck:Leak\n"))
        }
        if options.contains("-q") {
            #expect(!ours.stderr.contains("LEAK SUMMARY") && !ours.stderr.contains("HEAP SUMMARY"))
            #expect(ours.stderr.contains("are definitely lost in loss record"))
        }
    }

    @Test("--leak-resolution=low merges records whose first two entries agree, as Valgrind's")
    func leakResolution() throws {
        let program = try Harness.build("suppressions/every_kind.cpp")
        let valgrind = try #require(SuppressionEndToEndTests.valgrindPath)
        for resolution in ["low", "med", "high"] {
            let ours = try Harness.run([Harness.swiftleak, "--leak-check=full", "--show-leak-kinds=all", "--leak-resolution=" + resolution, program])
            let theirs = try Harness.run([valgrind, "--leak-check=full", "--show-leak-kinds=all", "--leak-resolution=" + resolution, program])
            #expect(Self.recordTitles(ours.stderr) == Self.recordTitles(theirs.stderr), "\(resolution)")
        }
    }

    /// "N bytes in B blocks are KIND" of each loss record, without the "==PID== " prefix and the
    /// record numbers (which count swiftleak's default-suppressed records too).
    static func recordTitles(_ text: String) -> [String] {
        text.split(separator: "\n").compactMap { line -> String? in
            guard let record = line.range(of: " in loss record"), let prefix = line.range(of: "== ") else { return nil }
            return String(line[prefix.upperBound..<record.lowerBound])
        }
    }

    @Test("a misspelt option gets 'did you mean', and the program does not run")
    func didYouMean() throws {
        let marker = Harness.workDirectory.appendingPathComponent("ran-\(UUID().uuidString)").path
        let result = try Harness.run([Harness.swiftleak, "--leak-chek=full", "/usr/bin/touch", marker])
        #expect(result.status != 0)
        #expect(result.stderr.contains("unknown option '--leak-chek=full'; did you mean --leak-check?"), "\(result.stderr)")
        // One line, as every command-line mistake: not the parser's usage dump after it.
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        let missing = try Harness.run([Harness.swiftleak, "run", "--no-trace"])
        #expect(missing.status != 0 && missing.stderr.split(separator: "\n").count == 1, "\(missing.stderr)")
        #expect(!FileManager.default.fileExists(atPath: marker))
        let tool = try Harness.run([Harness.swiftleak, "--tool=helgrind", "/usr/bin/touch", marker])
        #expect(tool.status != 0 && tool.stderr.contains("only --tool=memcheck"))
        let children = try Harness.run([Harness.swiftleak, "--trace-children=maybe", "/usr/bin/touch", marker])
        #expect(children.status != 0 && children.stderr.contains("--trace-children must be yes or no, not 'maybe'"))
        let range = try Harness.run([Harness.swiftleak, "--error-exitcode=256", "/usr/bin/touch", marker])
        #expect(range.status != 0 && range.stderr.contains("between 0 (off) and 255"))
        #expect(!FileManager.default.fileExists(atPath: marker))
    }

    @Test("-q on a program that frees everything prints nothing")
    func quietCleanRun() throws {
        let program = try Harness.build("suppressions/clean_c.c")
        let result = try Harness.run([Harness.swiftleak, "-q", "--leak-check=full", "--error-exitcode=1", program])
        #expect(result.status == 0)
        #expect(result.stderr == "")
        #expect(result.stdout == "all freed\n")
    }

    @Test("--log-file expands %p and %q{VAR}; SWIFTLEAK_OPTS adds options")
    func logFileNames() throws {
        let program = try Harness.build("suppressions/every_kind.cpp")
        let directory = Harness.workDirectory.appendingPathComponent("logs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var environment = ProcessInfo.processInfo.environment
        environment["JOB_NAME"] = "ci-42"
        environment["SWIFTLEAK_OPTS"] = "--leak-check=full --error-exitcode=7"
        let pattern = directory.path + "/%q{JOB_NAME}.%p.log"
        let result = try Harness.run([Harness.swiftleak, "--log-file=" + pattern, program], environment: environment)
        #expect(result.status == 7)
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        #expect(files.count == 1)
        let name = try #require(files.first)
        #expect(name.hasPrefix("ci-42.") && name.hasSuffix(".log"))
        let pid = name.dropFirst("ci-42.".count).dropLast(".log".count)
        let log = try String(contentsOfFile: directory.path + "/" + name, encoding: .utf8)
        #expect(log.hasPrefix("==\(pid)== "), "the pid in the name is the program's")
        #expect(log.contains("definitely lost in loss record"))
        environment["JOB_NAME"] = nil
        let unset = try Harness.run([Harness.swiftleak, "--log-file=" + pattern, "/usr/bin/true"], environment: environment)
        #expect(unset.status != 0 && unset.stderr.contains("JOB_NAME"), "\(unset.stderr)")
    }
}
