import SwiftLeakCore
import SwiftLeakScanner
import Testing

@Suite("Large scans: iterative marking, performance", .serialized)
struct LargeScanTests {
    @Test("a lost list of 1,000,000 blocks built by prepending: 1 definite, 999,999 indirect")
    func millionLostDescending() {
        let bench = LinkedListScanBenchmark(blockCount: 1_000_000, shape: .lostDescending)
        let r = bench.run()
        let last = bench.blocks.count - 1
        let total = bench.blocks.reduce(UInt64(0)) { $0 + $1.size }
        #expect(r.kinds[last] == .definitelyLost)
        #expect(r.kinds.filter { $0 == .indirectlyLost }.count == 999_999)
        #expect(r.indirectBytesCharged[last] == total - bench.blocks[last].size)
        #expect(r.indirectBytesCharged.reduce(0, +) == total - bench.blocks[last].size)
        #expect(r.leaderOf[0] == Int32(last))
        #expect(r.leaderOf[last / 2] == Int32(last))
        #expect(r.leaderOf[last] == -1)
        #expect(r.parentOf[0] == 1)
    }

    @Test("a lost list of 1,000,000 blocks in address order: the head (lowest) is definite")
    func millionLostAscending() {
        let bench = LinkedListScanBenchmark(blockCount: 1_000_000, shape: .lostAscending)
        let r = bench.run()
        let total = bench.blocks.reduce(UInt64(0)) { $0 + $1.size }
        #expect(r.kinds[0] == .definitelyLost)
        #expect(r.kinds.dropFirst().allSatisfy { $0 == .indirectlyLost })
        #expect(r.indirectBytesCharged[0] == total - bench.blocks[0].size)
        #expect(r.leaderOf.dropFirst().allSatisfy { $0 == 0 })
    }

    @Test("4,000,000 reachable blocks in a list: all reachable (prints the time)")
    func fourMillionReachable() {
        let bench = LinkedListScanBenchmark(blockCount: 4_000_000, shape: .reachableAscending)
        let r = bench.run()
        #expect(r.kinds.allSatisfy { $0 == .stillReachable })
        let stats = r.statistics
        print("scan of 4,000,000 linked blocks: \(stats.cpuSeconds) s CPU, \(stats.wallSeconds) s wall, " +
              "\(stats.wordsScanned) words, \(stats.reads) reads")
    }

    @Test("4,000,000 reachable blocks scanned up to glibc's usable size: same verdicts, the slack read (prints the time)")
    func fourMillionUsableSize() {
        let bench = LinkedListScanBenchmark(blockCount: 4_000_000, shape: .reachableAscending)
        var configuration = LeakScanner.Configuration()
        configuration.contents = .glibcUsableSize
        let r = bench.run(configuration: configuration)
        #expect(r.kinds.allSatisfy { $0 == .stillReachable })
        // Each header says usable = the size rounded up to 16, plus 8.
        let slack = bench.blocks.reduce(UInt64(0)) { $0 + (($1.size + 15) & ~15) + 8 - $1.size }
        #expect(r.statistics.slackBytesScanned == slack)
        let stats = r.statistics
        print("scan of 4,000,000 linked blocks up to their usable size: \(stats.cpuSeconds) s CPU, " +
              "\(stats.wallSeconds) s wall, \(stats.wordsScanned) words, \(stats.reads) reads")
    }

    @Test("4,000,000 reachable blocks linked in random order: all reachable, each window read once")
    func fourMillionShuffled() {
        let bench = LinkedListScanBenchmark(blockCount: 4_000_000, shape: .reachableShuffled)
        let r = bench.run()
        #expect(r.kinds.allSatisfy { $0 == .stillReachable })
        let stats = r.statistics
        // The heap (about 190 MB) is read once, in 64 KiB windows: no window is read twice.
        let heapBytes = bench.blocks.last!.address + 64 - bench.heapStart
        #expect(stats.bytesRead < heapBytes + 2 * 65536 + 4096)
        print("scan of 4,000,000 shuffled linked blocks: \(stats.cpuSeconds) s CPU, \(stats.wallSeconds) s wall, " +
              "\(stats.wordsScanned) words, \(stats.reads) reads, \(stats.bytesRead) bytes read")
    }

    @Test("a small cache limit still gives the right answer on a shuffled list")
    func smallCache() {
        let bench = LinkedListScanBenchmark(blockCount: 50_000, shape: .reachableShuffled)
        var configuration = LeakScanner.Configuration()
        configuration.blockCacheLimit = 1 << 16
        configuration.readChunkSize = 4096
        configuration.pointerThreads = 0  // the word-by-word scan reads blocks through the cache
        let r = bench.run(configuration: configuration)
        #expect(r.kinds.allSatisfy { $0 == .stillReachable })
        #expect(r.statistics.reads > 10_000)  // windows evict each other
    }

    @Test("4,000,000 lost blocks in a list: 1 definite (prints the time)")
    func fourMillionLost() {
        let bench = LinkedListScanBenchmark(blockCount: 4_000_000, shape: .lostDescending)
        let r = bench.run()
        #expect(r.kinds.last == .definitelyLost)
        #expect(r.kinds.dropLast().allSatisfy { $0 == .indirectlyLost })
        let stats = r.statistics
        print("scan of 4,000,000 lost linked blocks: \(stats.cpuSeconds) s CPU, \(stats.wallSeconds) s wall, " +
              "\(stats.wordsScanned) words, \(stats.reads) reads")
    }
}
