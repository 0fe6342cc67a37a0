import Foundation
import SwiftLeakCore
import Testing

/// Where the test programs live: TestPrograms/symbolize at the package root.
let programsDirectory: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("TestPrograms/symbolize")

func sourcePath(_ name: String) -> String { programsDirectory.appendingPathComponent(name).path }

/// The 1-based line of `// @line:NAME` (or `/* @line:NAME */`) in a test program's source.
func markerLine(_ marker: String, in source: String) throws -> Int {
    let text = try String(contentsOfFile: sourcePath(source), encoding: .utf8)
    for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
    where line.contains("@line:\(marker) ") || line.hasSuffix("@line:\(marker)") {
        return index + 1
    }
    throw TestFailure("no @line:\(marker) in \(source)")
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A fresh temporary directory, removed by the caller with `cleanUp`.
func makeTemporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("swiftleak-symbolize-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

@discardableResult
func run(_ executable: String, _ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    let errorData = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw TestFailure("\(executable) \(arguments.joined(separator: " ")) exited \(process.terminationStatus): "
            + String(decoding: errorData, as: UTF8.self))
    }
    return String(decoding: data, as: UTF8.self)
}

/// Finds a tool on PATH (cc, g++, strip) or in the Swift toolchain.
func tool(_ name: String) -> String {
    let environment = ProcessInfo.processInfo.environment
    let path = environment["PATH"] ?? "/usr/bin:/bin"
    let cargo = (environment["HOME"] ?? "/root") + "/.cargo/bin"
    for directory in path.split(separator: ":").map(String.init) + ["/usr/bin", "/opt/swift/usr/bin", cargo] {
        let candidate = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return "/usr/bin/\(name)"
}

/// What a test program printed about itself: its module as the interposer would record it, and
/// labelled code addresses.
struct ProgramRun {
    var module: LoadedModule
    var returnAddresses: [String: UInt64] = [:]
    var functions: [String: UInt64] = [:]

    init(output: String, path: String) throws {
        var module: LoadedModule?
        for line in output.split(separator: "\n") {
            let fields = line.split(separator: " ").map(String.init)
            switch fields.first {
            case "module" where fields.count == 5:
                let buildID = fields[4] == "-" ? [] : hexBytes(fields[4])
                module = LoadedModule(path: path, loadBias: try hex(fields[1]), start: try hex(fields[2]),
                                      end: try hex(fields[3]), buildID: buildID)
            case "ret" where fields.count == 3:
                returnAddresses[fields[1]] = try hex(fields[2])
            case "func" where fields.count == 3:
                functions[fields[1]] = try hex(fields[2])
            default:
                break
            }
        }
        guard let module else { throw TestFailure("no module line in output:\n\(output)") }
        self.module = module
    }

    func ret(_ label: String) throws -> UInt64 {
        guard let address = returnAddresses[label] else { throw TestFailure("no ret \(label)") }
        return address
    }

    func function(_ label: String) throws -> UInt64 {
        guard let address = functions[label] else { throw TestFailure("no func \(label)") }
        return address
    }
}

func hex(_ text: String) throws -> UInt64 {
    let digits = text.hasPrefix("0x") ? String(text.dropFirst(2)) : text
    guard let value = UInt64(digits, radix: 16) else { throw TestFailure("not hex: \(text)") }
    return value
}

func hexBytes(_ text: String) -> [UInt8] {
    var bytes: [UInt8] = []
    var index = text.startIndex
    while index < text.endIndex, let next = text.index(index, offsetBy: 2, limitedBy: text.endIndex) {
        if let byte = UInt8(text[index..<next], radix: 16) { bytes.append(byte) }
        index = next
    }
    return bytes
}

/// inline.c (code inlined twice into an outer function) built with `-g -O2` into
/// `directory` and run once, and the return address inside its inlined function: the frame the
/// symbolizer tests look up.
func inlineProgramAndReturn(in directory: URL) throws -> (program: ProgramRun, ip: UInt64) {
    let program = try buildAndRun("inline.c", compiler: "cc", flags: ["-g", "-O2"], output: "inline", in: directory)
    return (program, try program.ret("in_inlined"))
}

/// Compiles a test program into `directory` and runs it once.
func buildAndRun(_ source: String, compiler: String, flags: [String], output name: String,
                 in directory: URL) throws -> ProgramRun {
    let binary = directory.appendingPathComponent(name).path
    try run(tool(compiler), flags + [sourcePath(source), "-o", binary])
    return try ProgramRun(output: run(binary, []), path: binary)
}
