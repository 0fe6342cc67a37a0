import Foundation
import Testing

/// Builds TestPrograms and runs the real swiftleak binary on them.
enum Harness {
    /// The package root, found from this file's path.
    static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let testPrograms = packageRoot.appendingPathComponent("TestPrograms")

    /// The build directory holding the test bundle, swiftleak and libswiftleak_preload.so.
    static let buildDirectory: URL = {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var directory = executable.deletingLastPathComponent()
        // An .xctest bundle may be a directory on some set-ups.
        while !FileManager.default.fileExists(atPath: directory.appendingPathComponent("swiftleak").path),
              directory.path != "/" {
            directory = directory.deletingLastPathComponent()
        }
        return directory
    }()

    static var swiftleak: String { buildDirectory.appendingPathComponent("swiftleak").path }
    static var preloadLibrary: String { buildDirectory.appendingPathComponent("libswiftleak_preload.so").path }

    static let workDirectory: URL = {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("swiftleak-tests-\(getpid())")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }()

    private static let buildLock = NSLock()
    nonisolated(unsafe) private static var built: [String: String] = [:]

    /// Compiles TestPrograms/<source> once per test run: C with cc, C++ with c++ (with `flags`),
    /// Swift with swiftc -g and -O when `flags` has -O2, else -Onone (the module named after the file).
    static func build(_ source: String, flags: [String] = ["-O0", "-g"], name: String? = nil) throws -> String {
        let key = source + " " + flags.joined(separator: " ")
        buildLock.lock()
        defer { buildLock.unlock() }
        if let path = built[key] { return path }
        let input = testPrograms.appendingPathComponent(source).path
        let output = workDirectory.appendingPathComponent(name ?? (source.replacingOccurrences(of: "/", with: "_") + "-\(built.count)")).path
        let command: [String]
        if source.hasSuffix(".swift") {
            let module = URL(fileURLWithPath: source).deletingPathExtension().lastPathComponent
            command = ["swiftc", flags.contains("-O2") ? "-O" : "-Onone", "-g", "-module-name", module, "-o", output, input]
        } else {
            command = [source.hasSuffix(".cpp") ? "c++" : "cc"] + flags + ["-pthread", "-o", output, input, "-ldl"]
        }
        let compiler = command[0]
        let result = try run(["/usr/bin/env"] + command)
        guard result.status == 0 else {
            throw HarnessError("\(compiler) failed on \(source): \(result.stderr)")
        }
        built[key] = output
        return output
    }

    struct Result {
        var status: Int32
        /// Set when the process died by a signal.
        var signal: Int32?
        var stdout: String
        var stderr: String
    }

    /// A copy of `program` at `path` owned by someone else with the set-user-ID bit (set-group-ID
    /// when not root): exec changes the credentials, the loader runs it in secure mode.
    static func makeSetIDCopy(of program: String, at path: String) throws {
        try FileManager.default.copyItem(atPath: program, toPath: path)
        if getuid() == 0 {
            try #require(chown(path, 65534, 65534) == 0)
            try #require(chmod(path, 0o4755) == 0)
        } else {
            try #require(chmod(path, 0o2755) == 0)
            try #require(chown(path, UInt32.max, 0) == 0 || getegid() != 0, "cannot make a set-group-ID file here")
        }
    }

    /// Runs a command to completion; kills it after `timeout` seconds (a hang is a failure).
    static func run(_ arguments: [String], stdin: String? = nil, timeout: TimeInterval = 300,
                    environment: [String: String]? = nil) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        if let environment { process.environment = environment }
        // swiftleak writes its trace into the working directory by default: keep them out of
        // the source tree.
        if arguments[0] == swiftleak { process.currentDirectoryURL = workDirectory }
        let out = Pipe(), err = Pipe(), input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        let timer = DispatchSource.makeTimerSource()
        timer.schedule(deadline: .now() + timeout)
        timer.setEventHandler { killTree(process.processIdentifier) }
        timer.resume()
        // Read both pipes to the end before waiting, so a chatty child never blocks on a full pipe.
        final class Box: @unchecked Sendable { var data = Data() }
        let outBox = Box()
        let group = DispatchGroup()
        group.enter()
        let outHandle = out.fileHandleForReading
        DispatchQueue.global().async {
            outBox.data = outHandle.readDataToEndOfFile()
            group.leave()
        }
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        let outData = outBox.data
        process.waitUntilExit()
        timer.cancel()
        let signaled = process.terminationReason == .uncaughtSignal
        return Result(status: process.terminationStatus, signal: signaled ? process.terminationStatus : nil,
                      stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self))
    }

    /// Sends SIGKILL to `pid` and to every process under it. A traced program outlives a killed
    /// swiftleak (the kernel detaches it) and holds the same pipes: killing swiftleak alone left a
    /// hung program's test reading them for ever.
    static func killTree(_ pid: Int32) {
        var found: [Int32] = [], pending = [pid]
        while let next = pending.popLast(), found.count < 4096 {
            found.append(next)
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(next)/task")) ?? []
            for task in tasks {
                let children = (try? String(contentsOfFile: "/proc/\(next)/task/\(task)/children", encoding: .utf8)) ?? ""
                pending += children.split(separator: " ").compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            }
        }
        for victim in found { kill(victim, SIGKILL) }
    }

    /// For a test that drives a run itself (its pipes, its signals): arms a timer that ends the
    /// run and every process under it after `seconds`, so that the test's reads of the pipes reach
    /// their end and its expectations fail, instead of the whole suite hanging until the CI's
    /// timeout. Call before `process.run()`; disarmed when the process ends (its
    /// `terminationHandler`).
    static func watch(_ process: Process, seconds: TimeInterval = 120) {
        final class Timer: @unchecked Sendable {
            let source = DispatchSource.makeTimerSource()
        }
        let timer = Timer()
        timer.source.schedule(deadline: .now() + seconds)
        timer.source.setEventHandler { [process] in killTree(process.processIdentifier) }
        process.terminationHandler = { _ in timer.source.cancel() }
        timer.source.resume()
    }

    /// Runs `swiftleak run --json FILE [options] -- program arguments` and parses the JSON report.
    /// `environment` is added to this process's environment.
    static func swiftleak(_ program: String, _ arguments: [String] = [], options: [String] = [],
                          stdin: String? = nil, timeout: TimeInterval = 300,
                          environment: [String: String] = [:]) throws -> (Result, Report?) {
        let json = workDirectory.appendingPathComponent("report-\(UUID().uuidString).json").path
        let merged = environment.isEmpty ? nil : ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let result = try run([swiftleak, "run", "--json", json] + options + ["--", program] + arguments,
                             stdin: stdin, timeout: timeout, environment: merged)
        let report = (try? Data(contentsOf: URL(fileURLWithPath: json))).flatMap { try? Report(json: $0) }
        try? FileManager.default.removeItem(atPath: json)
        return (result, report)
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The parts of the JSON report (design.md §3) the tests look at.
struct Report {
    struct Count: Equatable, CustomStringConvertible {
        var bytes: Int
        var blocks: Int
        var description: String { "\(bytes) bytes in \(blocks) blocks" }
    }
    struct Frame {
        var ip: String
        var function: String?
        var file: String?
        var line: Int?
        var object: String?
        var inlined: Bool
    }
    struct LossRecord {
        var kind: String
        var bytes: Int
        var blocks: Int
        var indirectBytes: Int
        var function: String
        var stack: [Frame]
        var firstUserFrame: Int?
        var suppressedBy: String? = nil
    }
    var pid: Int
    var ppid: Int
    var exit: [String: Int]
    var summary: [String: Count]
    var allocations: Int
    var frees: Int
    var inUseAtExit: Count
    var scanRan: Bool
    var scanSeconds: Double
    /// How long the program was held at its exit.
    var freezeSeconds: Double
    var lossRecords: [LossRecord]

    /// The first process's report (the launched program's).
    init(json: Data) throws {
        guard let first = try Self.processes(json: json).first else { throw HarnessError("malformed report") }
        self = first
    }

    /// Every process's report, in the JSON's order.
    static func processes(json: Data) throws -> [Report] {
        guard let root = try JSONSerialization.jsonObject(with: json) as? [String: Any],
              let processes = root["processes"] as? [[String: Any]] else {
            throw HarnessError("malformed report")
        }
        return processes.map { Report(process: $0) }
    }

    init(process: [String: Any]) {
        func count(_ any: Any?) -> Count {
            let dictionary = any as? [String: Any] ?? [:]
            return Count(bytes: dictionary["bytes"] as? Int ?? -1, blocks: dictionary["blocks"] as? Int ?? -1)
        }
        pid = process["pid"] as? Int ?? 0
        ppid = process["ppid"] as? Int ?? 0
        exit = process["exit"] as? [String: Int] ?? [:]
        let summaryObject = process["summary"] as? [String: Any] ?? [:]
        summary = summaryObject.mapValues { count($0) }
        let heap = process["heap"] as? [String: Any] ?? [:]
        allocations = heap["allocations"] as? Int ?? -1
        frees = heap["frees"] as? Int ?? -1
        inUseAtExit = count(heap["in_use_at_exit"])
        scanRan = (process["scan"] as? [String: Any])?["ran"] as? Bool ?? false
        scanSeconds = (process["scan"] as? [String: Any])?["seconds"] as? Double ?? -1
        freezeSeconds = (process["scan"] as? [String: Any])?["freeze_seconds"] as? Double ?? -1
        lossRecords = (process["loss_records"] as? [[String: Any]] ?? []).map { record in
            LossRecord(
                kind: record["kind"] as? String ?? "",
                bytes: record["bytes"] as? Int ?? -1,
                blocks: record["blocks"] as? Int ?? -1,
                indirectBytes: record["indirect_bytes"] as? Int ?? -1,
                function: record["function"] as? String ?? "",
                stack: (record["stack"] as? [[String: Any]] ?? []).map { frame in
                    Frame(ip: frame["ip"] as? String ?? "", function: frame["function"] as? String,
                          file: frame["file"] as? String, line: frame["line"] as? Int,
                          object: frame["object"] as? String, inlined: frame["inlined"] as? Bool ?? false)
                },
                firstUserFrame: record["first_user_frame"] as? Int,
                suppressedBy: record["suppressed_by"] as? String)
        }
    }

    /// Every block not freed at exit, whatever its kind, suppressed ones included.
    var notFreed: Count {
        summary.values.reduce(Count(bytes: 0, blocks: 0)) {
            Count(bytes: $0.bytes + $1.bytes, blocks: $0.blocks + $1.blocks)
        }
    }

    /// Blocks allocated directly by code in `object` (the first frame after the allocation
    /// function lies in it): the program's own leaks, without the C library's.
    func notFreed(allocatedIn object: String) -> Count {
        var total = Count(bytes: 0, blocks: 0)
        for record in lossRecords where record.stack.count > 1 && record.stack[1].object == object {
            total.bytes += record.bytes
            total.blocks += record.blocks
        }
        return total
    }
}
