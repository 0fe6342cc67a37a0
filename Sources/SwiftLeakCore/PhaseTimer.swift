import Glibc

/// Where the time of one `swiftleak run` goes, for measuring its fixed cost: with
/// `SWIFTLEAK_PHASES` set, each `mark` prints `swiftleak: phase NAME +D ms (T ms)` on stderr, D
/// since the mark before and T since the origin. The origin is `main` unless the variable holds the
/// wall-clock time (CLOCK_REALTIME, nanoseconds) at which a launcher started swiftleak: then T
/// counts the loader and the Swift runtime's start too. Off (one getenv at the first mark) otherwise.
public enum PhaseTimer {
    private struct State {
        var origin: Int64
        var last: Int64
    }
    nonisolated(unsafe) private static var state: State? = {
        guard let value = getenv("SWIFTLEAK_PHASES") else { return nil }
        let now = PhaseTimer.now()
        // A launcher's wall-clock timestamp: at most a minute old.
        if let given = Int64(String(cString: value)), given <= now, now - given < 60_000_000_000 {
            return State(origin: given, last: given)
        }
        return State(origin: now, last: now)
    }()

    static func now() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
    }

    /// Prints the phase that ends here (called from one thread at a time).
    public static func mark(_ name: StaticString) {
        guard var current = state else { return }
        let now = now()
        let line = "swiftleak: phase \(name) +\(milliseconds(now - current.last)) ms (\(milliseconds(now - current.origin)) ms)\n"
        current.last = now
        state = current
        _ = line.withCString { write(2, $0, strlen($0)) }
    }

    private static func milliseconds(_ nanoseconds: Int64) -> String {
        let hundredths = (nanoseconds + 5_000) / 10_000
        let fraction = hundredths % 100
        return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }
}
