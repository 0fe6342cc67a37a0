import Glibc

/// Names the calling thread (what `top -H`, `ps -L` and perf show; at most 15 bytes). Through
/// /proc: Swift's Glibc module has neither `pthread_setname_np` nor a callable (variadic) `prctl`.
/// A failure leaves the name as it was: nothing depends on it but the people looking.
public func nameCurrentThread(_ name: String) {
    let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { return }
    defer { close(fd) }
    let bytes = Array(name.utf8.prefix(15))
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
}
