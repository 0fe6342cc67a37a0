import Glibc
import SwiftLeakCore

/// Compresses trace bytes into a gzip file on its own thread, so the drain that encodes them never
/// waits for the compressor or the disk. At least once a second it flushes the compressor (an
/// empty stored block, as zlib's Z_SYNC_FLUSH) and writes out what it has: a SIGKILL, a crash or a
/// full disk loses at most the last second, and the file reads correctly up to there.
///
/// A write error (full disk, I/O error) stops the writing and is kept as `failure`; submitting
/// more is then harmless, and the program goes on untouched.
public final class TraceFileWriter: @unchecked Sendable {
    public let path: String
    private let fd: Int32
    private var lock = pthread_mutex_t()
    private var wake = pthread_cond_t()
    private var queue: [[UInt8]] = []
    private var closing = false
    private var thread: pthread_t?
    /// Used by the writer's thread only.
    private var compressor = HuffmanGzip()
    /// Read by the thread that closes, after joining.
    private var error: String?
    private var written: UInt64 = 0
    /// Streams opened so far, and the one the bytes queued last belong to.
    private var streams = 0
    private var currentStream = -1
    /// The file's string table, shared by its streams' tails (see `TraceEncoder.finish`).
    public let strings = TraceStrings()

    /// Flush at least this often (seconds) while there is news.
    static let flushInterval: Double = 0.5

    /// Opens (creates, truncates) `path`. Throws a one-line reason when it cannot be written.
    /// Huffman coding only, no string matching (`HuffmanGzip`): the event records leave little for
    /// matching to find. malloc_heavy's 18.2 MB of records, through zlib: level 1 with matching
    /// 15.58 MB for 0.54 s of CPU, Huffman only (memLevel 9) 15.78 MB for 0.22 s; through
    /// `HuffmanGzip` 15.77 MB for 0.06 s.
    public init(path: String) throws(TraceError) {
        self.path = path
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw TraceError("cannot write the trace \(path): \(String(cString: strerror(errno)))")
        }
        self.fd = fd
        pthread_mutex_init(&lock, nil)
        pthread_cond_init(&wake, nil)
        let box = Unmanaged.passRetained(self)
        var handle = pthread_t()
        let created = pthread_create(&handle, nil, { context in
            let writer = Unmanaged<TraceFileWriter>.fromOpaque(context!).takeRetainedValue()
            nameCurrentThread("swl-trace-write")  // for `top -H` and perf
            writer.loop()
            return nil
        }, box.toOpaque())
        precondition(created == 0, "pthread_create for the trace writer failed: \(created)")
        thread = handle
    }

    deinit {
        compressor.release()
        pthread_cond_destroy(&wake)
        pthread_mutex_destroy(&lock)
    }

    /// Queues bytes for compression as they are (no stream: the caller wrote the header and
    /// every record); never blocks on the compressor.
    public func submit(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        pthread_mutex_lock(&lock)
        queue.append(bytes)
        pthread_cond_signal(&wake)
        pthread_mutex_unlock(&lock)
    }

    /// Opens the file's next stream (one per process image) with `opening`, which starts with
    /// its PROCESS record, and returns the stream's number (0 for the first: the streams count in
    /// file order, which is why the number is given here, under the queue's lock). The first
    /// stream also writes the content's header.
    public func openStream(_ opening: [UInt8]) -> Int {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        if streams == 0 { queue.append(TraceFormat.header()) }
        let number = streams
        streams += 1
        currentStream = number
        queue.append(opening)
        pthread_cond_signal(&wake)
        return number
    }

    /// Queues whole records of stream `stream`, after a SELECT record when the bytes queued last
    /// were of another stream (a single process's trace has none).
    public func submit(_ bytes: [UInt8], stream: Int) {
        guard !bytes.isEmpty else { return }
        pthread_mutex_lock(&lock)
        if stream != currentStream {
            var select = ByteWriter(capacity: 16)
            select.reserve(11)
            select.byte(TraceFormat.select)
            select.varint(UInt64(stream))
            queue.append(select.take())
            currentStream = stream
        }
        queue.append(bytes)
        pthread_cond_signal(&wake)
        pthread_mutex_unlock(&lock)
    }

    /// Compresses what is queued, finishes the gzip stream and closes the file. Returns the
    /// reason the trace is incomplete, nil when it was written whole.
    public func close() -> String? {
        pthread_mutex_lock(&lock)
        closing = true
        pthread_cond_signal(&wake)
        pthread_mutex_unlock(&lock)
        if let thread { pthread_join(thread, nil) }
        thread = nil
        return error
    }

    private func loop() {
        var lastFlush = Self.now()
        var unflushed = false
        while true {
            pthread_mutex_lock(&lock)
            while queue.isEmpty && !closing {
                if unflushed {
                    var deadline = timespec()
                    clock_gettime(CLOCK_REALTIME, &deadline)
                    deadline.tv_nsec += Int(Self.flushInterval * 1e9)
                    if deadline.tv_nsec >= 1_000_000_000 {
                        deadline.tv_sec += 1
                        deadline.tv_nsec -= 1_000_000_000
                    }
                    if pthread_cond_timedwait(&wake, &lock, &deadline) == ETIMEDOUT { break }
                } else {
                    pthread_cond_wait(&wake, &lock)
                }
            }
            let chunks = queue
            queue.removeAll()
            let finishing = closing && chunks.isEmpty
            pthread_mutex_unlock(&lock)

            for chunk in chunks {
                compress(chunk)
                unflushed = true
            }
            if finishing {
                compressor.finish()
                writeOut()
                if Glibc.close(fd) != 0 && error == nil {
                    error = "closing the trace \(path) failed: \(String(cString: strerror(errno)))"
                }
                return
            }
            if unflushed && Self.now() - lastFlush >= Self.flushInterval {
                compressor.flush()
                writeOut()
                lastFlush = Self.now()
                unflushed = false
            }
        }
    }

    private func compress(_ bytes: [UInt8]) {
        guard error == nil else { return }
        bytes.withUnsafeBufferPointer { compressor.compress($0) }
        writeOut()
    }

    /// Writes what the compressor has ready (whole blocks; a few bits stay until the next).
    private func writeOut() {
        guard error == nil else { return }
        let ready = compressor.ready
        defer { compressor.consumed() }
        guard let output = ready.baseAddress else { return }
        let count = ready.count
        var offset = 0
        while offset < count {
            let n = Glibc.write(fd, output + offset, count - offset)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                let reason = n < 0 ? String(cString: strerror(errno)) : "nothing written"
                error = "writing the trace \(path) failed after \(written) bytes (\(reason)); it is cut short there"
                return
            }
            offset += n
            written += UInt64(n)
        }
    }

    static func now() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}

/// A trace that cannot be written or read, in one line that names the file.
public struct TraceError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
