import Glibc

/// Names the calling thread (what `top -H`, `ps -L` and perf show; at most 15 bytes), with glibc's
/// `pthread_setname_np` (a prctl for the calling thread), looked up once: Swift's Glibc module
/// declares neither it nor a callable (variadic) `prctl`. Not through /proc/thread-self/comm: a
/// process whose threads looked up their /proc/PID/task/TID entries is slow to reap (the kernel
/// prunes those dentries in its parent's wait4: 1-3 ms for four threads here, up to 250 ms for
/// swiftleak on a loaded machine; 0.01 ms without). A failure leaves the name as it was: nothing
/// depends on it but the people looking.
public func nameCurrentThread(_ name: String) {
    guard let setName = ThreadNaming.setName else { return }
    var bytes = Array(name.utf8.prefix(15)).map { CChar(bitPattern: $0) }
    bytes.append(0)
    _ = setName(pthread_self(), bytes)
}

enum ThreadNaming {
    typealias SetName = @convention(c) (pthread_t, UnsafePointer<CChar>) -> Int32
    /// RTLD_DEFAULT is the null handle in glibc.
    static let setName: SetName? = dlsym(nil, "pthread_setname_np").map { unsafeBitCast($0, to: SetName.self) }
}
