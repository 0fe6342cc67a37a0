#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Storage for the scan's big arrays (one entry or more per live block, the heap's copy): mapped
/// directly, zero-filled by the kernel and given back whole by munmap. No huge pages: with this
/// kernel's `defrag=madvise` a huge-page fault may compact memory first, and on the 2-core test
/// machine that made the first touch of a 200 MB heap copy several times slower than 4 KiB pages.
enum ScanMemory {
    /// `count` zeroed elements (at least one).
    static func allocate<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        allocateBytes(max(count, 1) * MemoryLayout<T>.stride).bindMemory(to: T.self, capacity: max(count, 1))
    }

    static func deallocate<T>(_ pointer: UnsafeMutablePointer<T>, count: Int) {
        deallocateBytes(UnsafeMutableRawPointer(pointer), byteCount: max(count, 1) * MemoryLayout<T>.stride)
    }

    /// `byteCount` zeroed bytes.
    static func allocateBytes(_ byteCount: Int) -> UnsafeMutableRawPointer {
        let mapped = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let mapped, mapped != MAP_FAILED else {
            preconditionFailure("the exit scan cannot map \(byteCount) bytes: \(String(cString: strerror(errno)))")
        }
        return mapped
    }

    /// Room for up to `count` elements, zeroed, of which only the pages touched cost memory
    /// (`MAP_NORESERVE`); nil when the address space cannot be had (strict overcommit).
    static func reserve<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T>? {
        let byteCount = max(count, 1) * MemoryLayout<T>.stride
        let mapped = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let mapped, mapped != MAP_FAILED else { return nil }
        return mapped.bindMemory(to: T.self, capacity: max(count, 1))
    }

    static func deallocateBytes(_ pointer: UnsafeMutableRawPointer, byteCount: Int) {
        munmap(pointer, byteCount)
    }
}
