import CSwiftLeakSys
import Glibc
import SwiftLeakCore

/// Why a program could not be started. The CLI prints `description` as its one-line error and
/// exits with `exitStatus`, the status a shell gives for the same failure.
public struct LaunchError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: Hashable, Sendable {
        case notFound
        case notExecutable
        case isDirectory
        case staticBinary
        case setID
        case execFailed
        case traceFailed
    }
    public var code: Code
    /// The program as the user named it, escaped for display.
    public var program: String
    public var errno: Int32

    public init(_ code: Code, program: Bytes, errno: Int32 = 0) {
        self.code = code
        self.program = program.escapedForDisplay
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
        case .setID:
            return "\(program): set-user-ID or set-group-ID; the kernel ignores LD_PRELOAD for it, so nothing could be recorded. Run a copy without the bit."
        case .execFailed:
            return "\(program): cannot execute: \(String(cString: strerror(errno)))"
        case .traceFailed:
            return "\(program): cannot trace the program (ptrace: \(String(cString: strerror(errno)))); in a container, allow ptrace (e.g. --cap-add=SYS_PTRACE)"
        }
    }

    /// As a POSIX shell: 127 when the command is not found, 126 when it is found but cannot run.
    public var exitStatus: Int32 {
        switch code {
        case .notFound: return 127
        case .execFailed: return errno == ENOENT ? 127 : 126
        default: return 126
        }
    }
}

/// Starts a program stopped under ptrace, with the interposer preloaded.
public enum Launcher {
    /// Finds the file `execvp` would run, and refuses what cannot work, with the reason.
    /// `searchPath` is the program's PATH (nil: unset).
    public static func resolveProgram(_ name: Bytes, searchPath: Bytes?) throws(LaunchError) -> Bytes {
        var candidates: [Bytes]
        let slash = UInt8(ascii: "/")
        if name.contains(slash) {
            candidates = [name]
        } else if name.isEmpty {
            throw LaunchError(.notFound, program: name)
        } else {
            let path = searchPath ?? Array("/usr/local/bin:/usr/bin:/bin".utf8)
            candidates = path.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false).map {
                ($0.isEmpty ? [UInt8(ascii: ".")] : Array($0)) + [slash] + name
            }
        }
        var sawNonExecutable = false
        for candidate in candidates {
            var info = stat()
            guard candidate.withCString({ stat($0, &info) }) == 0 else { continue }
            if (info.st_mode & S_IFMT) == S_IFDIR {
                if name.contains(slash) { throw LaunchError(.isDirectory, program: name) }
                continue
            }
            guard candidate.withCString({ access($0, X_OK) }) == 0 else {
                sawNonExecutable = true
                continue
            }
            if candidate.withCString({ swl_elf_is_static($0) }) == 1 { throw LaunchError(.staticBinary, program: name) }
            if grantsPrivileges(info) { throw LaunchError(.setID, program: name) }
            return candidate
        }
        throw LaunchError(sawNonExecutable ? .notExecutable : .notFound, program: name)
    }

    /// Whether exec would change the credentials (a set-user-ID file of another owner, a
    /// set-group-ID file of another group): the loader then runs in secure mode and ignores
    /// LD_PRELOAD, and a tracer may not see the process anyway.
    static func grantsPrivileges(_ info: stat) -> Bool {
        (info.st_mode & S_ISUID != 0 && info.st_uid != geteuid()) || (info.st_mode & S_ISGID != 0 && info.st_gid != getegid())
    }

    /// Forks and execs `path` under ptrace; the child inherits no descriptor of ours (the interposer
    /// opens its ring by the path its environment names). `prepare` runs with the child's pid before it execs (to tell the ring who may attach). On
    /// return the child is stopped at its exec, and tracing options are set. A file the kernel
    /// cannot execute (a script without `#!`) runs through /bin/sh, as execvp does.
    public static func spawn(path: Bytes, arguments: [Bytes], environment: [Bytes],
                             prepare: (Int32) -> Void) throws(LaunchError) -> Int32 {
        let argv = CStringArray(arguments)
        let shellArgv = CStringArray([Array("/bin/sh".utf8), path] + arguments.dropFirst())
        let envp = CStringArray(environment)
        var errorPipe: Int32 = -1
        let pid = path.withCString { swl_spawn_traced($0, argv.pointers, shellArgv.pointers, envp.pointers, &errorPipe) }
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

/// A NULL-terminated array of C strings built from byte strings, valid for the object's lifetime.
/// Built once, in linear time: argv and envp may hold tens of thousands of entries.
final class CStringArray {
    let pointers: [UnsafeMutablePointer<CChar>?]
    private let storage: UnsafeMutablePointer<CChar>

    init(_ strings: [Bytes]) {
        let total = strings.reduce(0) { $0 + $1.count + 1 }
        storage = .allocate(capacity: max(total, 1))
        var pointers: [UnsafeMutablePointer<CChar>?] = []
        pointers.reserveCapacity(strings.count + 1)
        var offset = 0
        for string in strings {
            let start = storage + offset
            string.withUnsafeBytes { bytes in
                if let base = bytes.baseAddress { UnsafeMutableRawPointer(start).copyMemory(from: base, byteCount: bytes.count) }
            }
            start[string.count] = 0
            pointers.append(start)
            offset += string.count + 1
        }
        pointers.append(nil)
        self.pointers = pointers
    }

    deinit { storage.deallocate() }
}
