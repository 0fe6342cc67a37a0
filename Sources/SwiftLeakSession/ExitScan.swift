import SwiftLeakCore
import SwiftLeakRecorder
import SwiftLeakScanner
import SwiftLeakTracer

/// The exit scan of a process frozen at its exit stop: root set from its maps, threads and module
/// files; marking and lost groups as Valgrind Memcheck (Sources/SwiftLeakScanner).
enum ExitScan {
    struct Outcome {
        var result: ScanResult?
        /// Why there is no result.
        var failure: String?
    }

    /// x86_64 user_regs_struct indices of the 16 general-purpose registers Valgrind scans: r15…rdi
    /// (0…14) and rsp (19). orig_rax, rip, segment and flag words are not pointers to data.
    /// As in Valgrind, the registers of the thread that ended the process are not roots: at its
    /// exit_group they hold whatever exit() left, often a returned main's stale values, which would
    /// hide real leaks. Its stack is scanned; other threads' registers are live state.
    static let generalRegisterIndices = Array(0...14) + [19]

    static func run(stop: ExitStop, blocks: SortedBlocks, allocatorState: Range<UInt64>?) -> Outcome {
        guard let mapsText = readSmallFile("/proc/\(stop.procTID)/maps"),
              let memory = ProcPIDMemReader(pid: stop.procTID) else {
            return Outcome(failure: "cannot read the memory of process \(stop.pid) at its exit")
        }
        let mappings = MemoryMapping.parse(maps: mapsText)
        let threads = stop.threads.map { thread in
            ThreadRoots(tid: thread.tid, stackPointer: thread.stackPointer,
                        registers: thread.endedProcess ? []
                            : generalRegisterIndices.compactMap { $0 < thread.registers.count ? thread.registers[$0] : nil })
        }
        var scanBlocks: [ScanBlock] = []
        scanBlocks.reserveCapacity(blocks.count)
        for index in 0..<blocks.count {
            scanBlocks.append(ScanBlock(address: blocks.addresses[index], size: blocks.size(index)))
        }
        let exited = stop.exitedThreads.map { ExitedThread(tid: $0.tid, stackPointer: $0.stackPointer) }
        var rootSet = RootSetBuilder().build(mappings: mappings, threads: threads, liveBlocks: scanBlocks,
                                             exitedThreads: exited, memory: memory)
        if let state = allocatorState, isInLibcData(state, mappings: mappings) {
            rootSet.regions = subtract(state, from: rootSet.regions)
        }
        var configuration = LeakScanner.Configuration()
        configuration.mappings = mappings
        // Swift's arrays (and C containers) fill malloc_usable_size; /proc/PID/mem reads PROT_NONE.
        configuration.contents = .glibcUsableSize
        configuration.readableRanges = MemoryMapping.readableRanges(mappings)
        return Outcome(result: LeakScanner.scan(blocks: scanBlocks, rootSet: rootSet, memory: memory,
                                                configuration: configuration))
    }

    /// The interposer's guess at main_arena is trusted only inside libc's writable data.
    static func isInLibcData(_ range: Range<UInt64>, mappings: [MemoryMapping]) -> Bool {
        mappings.contains { mapping in
            mapping.isWritable && mapping.path.contains("/libc.so")
                && mapping.start <= range.lowerBound && range.upperBound <= mapping.end
        }
    }

    /// Root regions without the bytes of `hole`.
    static func subtract(_ hole: Range<UInt64>, from regions: [RootRegion]) -> [RootRegion] {
        var result: [RootRegion] = []
        for region in regions {
            guard region.start < hole.upperBound, hole.lowerBound < region.end else {
                result.append(region)
                continue
            }
            if region.start < hole.lowerBound {
                result.append(RootRegion(start: region.start, end: hole.lowerBound, label: region.label))
            }
            if hole.upperBound < region.end {
                result.append(RootRegion(start: hole.upperBound, end: region.end, label: region.label))
            }
        }
        return result
    }
}
