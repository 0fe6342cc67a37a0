import CSwiftLeakSys
import Glibc
import SwiftLeakCore
import SwiftLeakRecorder
import SwiftLeakSymbolizer
import SwiftLeakReports
import SwiftLeakTracer

/// Everything `swiftleak run` needs to know.
public struct RunConfiguration: Sendable {
    public var program: String
    public var arguments: [String]
    public var report = ReportOptions()
    /// Path of libswiftleak_preload.so; nil: look next to the swiftleak executable.
    public var preloadLibrary: String?
    public var ring = EventRing.Configuration()
    /// Demangle C++, Swift and Rust names (Valgrind's --demangle).
    public var demangle = true

    public init(program: String, arguments: [String]) {
        self.program = program
        self.arguments = arguments
    }
}

/// Why `swiftleak run` could not do its job (before the program ran).
public struct SessionError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The outcome of `swiftleak run`: the program's end and what was left on its heap.
public struct RunResult: Sendable {
    public var report: ProcessReport
    public var exit: ProcessExit
}

/// Runs one program under the tracer and the recorder, and builds its report.
public enum RunSession {
    /// Launches the program. `onStart` gets the pid before the program runs (to print the
    /// report header); the result comes back after the program is gone.
    public static func run(_ configuration: RunConfiguration, onStart: (Int32) -> Void = { _ in }) throws -> RunResult {
        let environment = ProcessInfoLite.environment()
        let programPath = try Launcher.resolveProgram(configuration.program, environment: environment.dictionary)
        let preload = try configuration.preloadLibrary ?? PreloadLibrary.locate()

        let ring: EventRing
        do {
            ring = try EventRing(configuration.ring)
        } catch {
            throw SessionError("cannot create the event ring: \(describe(error))")
        }
        var childEnvironment = environment.entries.filter {
            !$0.hasPrefix("LD_PRELOAD=") && !$0.hasPrefix(SWL_ENV_RING_FD + "=")
        }
        let existingPreload = environment.dictionary["LD_PRELOAD"].map { ":" + $0 } ?? ""
        childEnvironment.append("LD_PRELOAD=" + preload + existingPreload)
        childEnvironment.append(SWL_ENV_RING_FD + "=\(ring.fd)")

        let pid = try Launcher.spawn(path: programPath, arguments: [configuration.program] + configuration.arguments,
                                     environment: childEnvironment, keepDescriptor: ring.fd,
                                     prepare: { ring.setTracedProcess($0) })
        ring.closeDescriptor()
        swl_signals_forward_to(pid)
        onStart(pid)

        let recorder = Recorder(ring: ring)
        recorder.start()
        let tracer = Tracer(pid: pid, exitAnnounced: { ring.exitAnnounced })
        var report = ProcessReport(pid: pid, ppid: getpid(), command: [configuration.program] + configuration.arguments)
        let builder = ReportBuilder(ring: ring,
                                    symbolizer: Symbolizer(demangle: configuration.demangle))
        let exit = tracer.run { stop in
            // The process is frozen with its memory intact: drain what it published, then judge.
            let final = recorder.finish(processStopped: true)
            guard configuration.report.leakCheck != .no else {
                report = builder.build(base: report, final: final, kinds: nil, indirectBytes: nil)
                report.scanNote = "--leak-check=no"
                return
            }
            let scan = ExitScan.run(stop: stop, blocks: final.blocks, allocatorState: ring.allocatorState,
                                    exitCaller: ring.exitCaller)
            if let result = scan.result {
                report = builder.build(base: report, final: final, kinds: result.kinds, indirectBytes: result.indirectBytesCharged)
                report.scanRan = true
                report.scanBytes = result.statistics.bytesScanned
                report.scanSeconds = result.statistics.wallSeconds
            } else {
                report = builder.build(base: report, final: final, kinds: nil, indirectBytes: nil)
                report.scanNote = scan.failure
            }
        }
        if !tracer.exitStopSeen {
            let final = recorder.finish(processStopped: true)
            report = builder.build(base: report, final: final, kinds: nil, indirectBytes: nil)
            report.scanNote = tracer.replacedByExec
                ? "the program replaced itself with exec; its heap at that point is listed as not freed"
                : "the program was killed (SIGKILL) without an exit stop; its blocks were not freed but could not be scanned"
        }
        if !ring.interposerAttached {
            report.warnings.append("the interposer never attached in the program (was LD_PRELOAD removed, or is the program setuid?); no allocation was recorded")
        }
        if ring.programDefinesMalloc {
            report.warnings.append("the program defines its own malloc, which swiftleak does not replace: the blocks it allocates through it are not tracked")
        }
        if ring.interposerDisabled {
            report.warnings.append("the interposer stopped recording before the end; the figures are incomplete")
        }
        report.exit = exit
        return RunResult(report: report, exit: exit)
    }

    static func describe(_ error: Error) -> String {
        if let error = error as? SystemError {
            return "\(error.operation): \(String(cString: strerror(error.errno)))"
        }
        return "\(error)"
    }
}

/// Where libswiftleak_preload.so lives: beside the swiftleak binary (a build directory), or in the
/// `lib/` of its install prefix.
public enum PreloadLibrary {
    public static let fileName = "libswiftleak_preload.so"

    public static func locate() throws -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { throw SessionError("cannot find swiftleak's own path in /proc/self/exe") }
        let executable = String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let directory = executable.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let candidates = [directory + "/" + fileName, directory + "/../lib/" + fileName, directory + "/../lib/swiftleak/" + fileName]
        for candidate in candidates where access(candidate, R_OK) == 0 {
            return realPath(candidate) ?? candidate
        }
        throw SessionError("cannot find \(fileName) next to \(executable) or in its ../lib; reinstall swiftleak")
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}

/// The process environment without Foundation.
struct ProcessInfoLite {
    var entries: [String]
    var dictionary: [String: String]

    static func environment() -> ProcessInfoLite {
        var entries: [String] = []
        var dictionary: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            entries.append(text)
            if let equals = text.firstIndex(of: "=") {
                let key = String(text[..<equals])
                if dictionary[key] == nil { dictionary[key] = String(text[text.index(after: equals)...]) }
            }
            pointer += 1
        }
        return ProcessInfoLite(entries: entries, dictionary: dictionary)
    }
}
