#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads the memory of the (stopped) process being scanned.
///
/// The integrator implements this over `process_vm_readv` (or `/proc/PID/mem`); tests use
/// ``InMemoryProcessMemory``. The scanner only ever asks for ranges it found in `/proc/PID/maps` or
/// inside live blocks, and reads in large chunks (up to ``LeakScanner/Configuration/readChunkSize``),
/// so an implementation may make one system call per request.
public protocol ProcessMemoryReader {
    /// Copies up to `buffer.count` bytes starting at `address` into `buffer`.
    ///
    /// - Returns: the number of bytes copied: `buffer.count`, or fewer when the range runs into
    ///   unreadable memory (like `process_vm_readv`, a short count means the bytes after it could
    ///   not be read), or 0 when `address` itself is unreadable. Never throws, never traps.
    func read(_ address: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Int
}

/// A fake address space for tests and benchmarks: a few byte regions at chosen addresses.
///
/// Reads behave like `process_vm_readv`: they stop at the first byte that lies in no region.
public final class InMemoryProcessMemory: ProcessMemoryReader {
    /// One region: `bytes.count` bytes at `start`.
    private struct Region {
        var start: UInt64
        var bytes: UnsafeMutableRawBufferPointer
        var end: UInt64 { start + UInt64(bytes.count) }
    }

    /// Sorted by start, non-overlapping.
    private var regions: [Region] = []

    public init() {}

    deinit {
        for region in regions { region.bytes.deallocate() }
    }

    /// Adds a zero-filled region of `size` bytes at `start`. Regions must not overlap.
    public func map(_ start: UInt64, size: Int) {
        precondition(size > 0, "empty region")
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
        bytes.initializeMemory(as: UInt8.self, repeating: 0)
        let region = Region(start: start, bytes: bytes)
        let index = regions.firstIndex { $0.start > start } ?? regions.endIndex
        if index > 0 { precondition(regions[index - 1].end <= start, "overlapping regions") }
        if index < regions.endIndex { precondition(region.end <= regions[index].start, "overlapping regions") }
        regions.insert(region, at: index)
    }

    private func regionIndex(containing address: UInt64) -> Int? {
        var lo = 0
        var hi = regions.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if regions[mid].end <= address { lo = mid + 1 } else { hi = mid }
        }
        return lo < regions.count && regions[lo].start <= address ? lo : nil
    }

    /// Gives direct access to the bytes of the region that starts exactly at `start` (for building
    /// big fake heaps quickly).
    public func withRegionBytes<R>(startingAt start: UInt64, _ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        guard let index = regionIndex(containing: start), regions[index].start == start else {
            preconditionFailure("no region starts at \(start.hexString)")
        }
        return try body(regions[index].bytes)
    }

    /// Stores a little-endian 64-bit word at `address`, which must be mapped.
    public func store(_ value: UInt64, at address: UInt64) {
        guard let index = regionIndex(containing: address), address + 8 <= regions[index].end else {
            preconditionFailure("store outside the mapped regions at \(address.hexString)")
        }
        regions[index].bytes.storeBytes(of: value.littleEndian, toByteOffset: Int(address - regions[index].start), as: UInt64.self)
    }

    /// Stores raw bytes at `address`, which must be mapped.
    public func store(bytes: [UInt8], at address: UInt64) {
        guard let index = regionIndex(containing: address), address + UInt64(bytes.count) <= regions[index].end else {
            preconditionFailure("store outside the mapped regions at \(address.hexString)")
        }
        let offset = Int(address - regions[index].start)
        for (i, byte) in bytes.enumerated() { regions[index].bytes[offset + i] = byte }
    }

    /// Reads a little-endian 64-bit word, or nil when it is not wholly mapped.
    public func load(_ address: UInt64) -> UInt64? {
        var value: UInt64 = 0
        let count = withUnsafeMutableBytes(of: &value) { read(address, into: $0) }
        return count == 8 ? UInt64(littleEndian: value) : nil
    }

    public func read(_ address: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        var copied = 0
        var address = address
        while copied < buffer.count, let index = regionIndex(containing: address) {
            let region = regions[index]
            let offset = Int(address - region.start)
            let count = min(buffer.count - copied, region.bytes.count - offset)
            (buffer.baseAddress! + copied).copyMemory(from: region.bytes.baseAddress! + offset, byteCount: count)
            copied += count
            address += UInt64(count)
        }
        return copied
    }
}

/// Reads a process through `/proc/PID/mem` (one `pread` per request). Works on a process this one
/// is ptrace-attached to and stopped, and on this process itself; a range that runs into unmapped
/// memory gives a short count, as the protocol requires.
public final class ProcPIDMemReader: ProcessMemoryReader {
    private let fd: Int32

    /// Opens `/proc/<pid>/mem`; nil when it cannot be opened (no such process, no permission).
    public init?(pid: Int32) {
        let fd = open("/proc/\(pid)/mem", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        self.fd = fd
    }

    deinit { close(fd) }

    public func read(_ address: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0, address <= UInt64(Int64.max) else { return 0 }
        var done = 0
        while done < buffer.count {
            let got = pread(fd, base + done, buffer.count - done, off_t(Int64(bitPattern: address &+ UInt64(done))))
            if got < 0 && errno == EINTR { continue }
            if got <= 0 { break }
            done += got
        }
        return done
    }
}
