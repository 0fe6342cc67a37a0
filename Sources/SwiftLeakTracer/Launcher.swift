import CSwiftLeakSys
import Glibc
import SwiftLeakCore

/// Why a program could not be started. The CLI prints `description` as its one-line error.
public struct LaunchError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: Hashable, Sendable {
        case notFound
        case notExecutable
        case isDirectory
        case staticBinary
        case execFailed
        case traceFailed
    }
    public var code: Code
    public var program: String
    public var errno: Int32

    public init(_ code: Code, program: String, errno: Int32 = 0) {
        self.code = code
        self.program = program
        self.errno = errno
    }

    public var description: String {
        switch code {
        case .notFound:
            return "\(program): no such file (and not found in PATH)"
        case .notExecutable:
            return "\(program): not executable (chmod +x it, or run it through its interpreter)"
        case .isDirectory:
            return "\(program): is a directory, not a program"
        case .staticBinary:
            return "\(program): statically linked; swiftleak records allocations through LD_PRELOAD, which a static binary ignores. Link it dynamically."
        case .execFailed:
            return "\(program): cannot execute: \(String(cString: strerror(errno)))"
        case .traceFailed:
            return "\(program): cannot trace the program (ptrace: \(String(cString: strerror(errno)))); in a container, allow ptrace (e.g. --cap-add=SYS_PTRACE)"
        }
    }
}

/// Starts a program stopped under ptrace, with the interposer preloaded.
public enum Launcher {
    /// Finds the file `execvp` would run, and refuses what cannot work, with the reason.
    public static func resolveProgram(_ name: String, environment: [String: String]) throws(LaunchError) -> String {
        var candidates: [String]
        if name.contains("/") {
            candidates = [name]
        } else {
            let path = environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
            candidates = path.split(separator: ":", omittingEmptySubsequences: false).map {
                ($0.isEmpty ? "." : String($0)) + "/" + name
            }
        }
        var sawNonExecutable = false
        for candidate in candidates {
            var info = stat()
            guard stat(candidate, &info) == 0 else { continue }
            if (info.st_mode & S_IFMT) == S_IFDIR {
                if name.contains("/") { throw LaunchError(.isDirectory, program: name) }
                continue
            }
            guard access(candidate, X_OK) == 0 else {
                sawNonExecutable = true
                continue
            }
            if swl_elf_is_static(candidate) == 1 { throw LaunchError(.staticBinary, program: name) }
            return candidate
        }
        throw LaunchError(sawNonExecutable ? .notExecutable : .notFound, program: name)
    }

    /// Forks and execs `path` under ptrace. `keepDescriptor` (the ring) is inherited by the child;
    /// `prepare` runs with the child's pid before it execs (to tell the ring who may attach). On
    /// return the child is stopped at its exec, and tracing options are set.
    public static func spawn(path: String, arguments: [String], environment: [String],
                             keepDescriptor: Int32, prepare: (Int32) -> Void) throws(LaunchError) -> Int32 {
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var errorPipe: Int32 = -1
        let pid = swl_spawn_traced(path, argv, envp, keepDescriptor, &errorPipe)
        guard pid > 0 else { throw LaunchError(.traceFailed, program: path, errno: errno) }
        prepare(pid)
        let execErrno = swl_spawn_finish(pid, errorPipe)
        guard execErrno == 0 else {
            if execErrno == EACCES { throw LaunchError(.notExecutable, program: path) }
            // ENOENT here means the file exists but its interpreter (#! or ELF) does not.
            throw LaunchError(.execFailed, program: path, errno: execErrno)
        }
        return pid
    }
}
