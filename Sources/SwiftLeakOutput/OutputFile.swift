import Glibc

/// Why a report file could not be opened or written, as one line for the user.
public struct OutputFileError: Error, Sendable, CustomStringConvertible {
    public var purpose: String
    public var path: String
    public var errno: Int32
    public var opening: Bool

    public var description: String {
        let reason = errno == ELOOP && opening
            ? "it is a symbolic link (swiftleak does not follow one at the last component)"
            : String(cString: strerror(errno))
        let target = path.isEmpty ? "" : " " + path
        return "cannot \(opening ? "open" : "write") \(purpose)\(target): \(reason)"
    }
}

/// A file a report goes to (`--log-file`, `--json`, a trace, XML), or standard error.
///
/// Every such file is opened before the program starts, so a typo or a full disk is known before
/// minutes of tracing, not after. Files are created with mode 0600 (they hold the command line,
/// paths and stacks) and never through a symbolic link at the last component (a link planted in a
/// shared directory cannot make swiftleak overwrite another file). A write error is kept, not
/// swallowed: `close()` throws it, and the caller says so in one line.
public final class OutputFile {
    public let purpose: String
    public let path: String
    public let fd: Int32
    private let owned: Bool
    private var firstError: Int32 = 0

    /// Creates (or truncates) `path` for writing.
    public init(path: String, purpose: String) throws(OutputFileError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw OutputFileError(purpose: purpose, path: path, errno: errno, opening: true) }
        self.fd = fd
        self.path = path
        self.purpose = purpose
        owned = true
    }

    private init(fd: Int32, purpose: String) {
        self.fd = fd
        path = ""
        self.purpose = purpose
        owned = false
    }

    /// Standard output (never closed).
    public static func standardOutput(purpose: String) -> OutputFile {
        OutputFile(fd: STDOUT_FILENO, purpose: purpose)
    }

    /// Standard error (never closed).
    public static func standardError(purpose: String) -> OutputFile {
        OutputFile(fd: STDERR_FILENO, purpose: purpose)
    }

    /// Writes all of `text`, retrying EINTR and short writes. After the first error nothing more
    /// is written; `close()` reports it.
    public func write(_ text: String) {
        guard firstError == 0 else { return }
        var text = text
        text.withUTF8 { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 {
                    firstError = n < 0 ? errno : EIO
                    return
                }
                offset += n
            }
        }
    }

    /// Closes the file (not standard error) and throws the first error any write or the close
    /// met (ENOSPC, EIO, EPIPE, …).
    public func close() throws(OutputFileError) {
        if owned && Glibc.close(fd) != 0 && firstError == 0 && errno != EINTR { firstError = errno }
        if firstError != 0 { throw OutputFileError(purpose: purpose, path: path, errno: firstError, opening: false) }
    }
}
