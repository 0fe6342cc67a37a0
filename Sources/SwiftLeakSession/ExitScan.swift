import CSwiftLeakSys
import SwiftLeakCore
import SwiftLeakModel
import SwiftLeakScanner
import SwiftLeakTracer

/// The exit scan of a process frozen at its exit stop: root set from its maps, threads and module
/// files; marking and lost groups as Valgrind Memcheck (Sources/SwiftLeakScanner).
enum ExitScan {
    struct Outcome {
        var result: ScanResult?
        /// Why there is no result.
        var failure: String?
        /// What the scan could not believe (a forged own-stack table), one line each.
        var warnings: [String] = []
    }

    /// x86_64 user_regs_struct indices of the 16 general-purpose registers Valgrind scans: r15…rdi
    /// (0…14) and rsp (19). orig_rax, rip, segment and flag words are not pointers to data.
    /// As in Valgrind, the registers of the thread that ended the process are not roots: at its
    /// exit_group they hold whatever exit() left, often a returned main's stale values, which would
    /// hide real leaks. Its stack is scanned from where its live frames begin: the frame that
    /// called the exit function when the interposer recorded one (with that frame's callee-saved
    /// registers as the exit path saved them, which Valgrind finds in those frames), else its stack pointer without
    /// the red zone (only a leaf function keeps data there, and its registers are not counted
    /// either). Other threads' registers are live state.
    static let generalRegisterIndices = Array(0...14) + [19]

    static func run(stop: ExitStop, blocks: SortedBlocks, allocatorState: Range<UInt64>?,
                    exitCaller: ExitCaller? = nil, ownStacksListed: [(start: UInt64, end: UInt64)] = []) -> Outcome {
        // Any held thread shows the address space while it is at its exit stop; one whose entry is
        // already empty (a leader past pthread_exit, a thread the kernel has begun to tear down)
        // gives way to the next.
        let candidates = [stop.procTID] + stop.threads.map(\.tid).filter { $0 != stop.procTID }
        guard let (mapsText, memory) = candidates.lazy.compactMap({ tid -> (String, ProcessVMReader)? in
            guard let maps = readSmallFile("/proc/\(tid)/maps"), !maps.isEmpty,
                  let memory = ProcessVMReader(pid: tid) else { return nil }
            return (maps, memory)
        }).first else {
            return Outcome(failure: "cannot read the memory of process \(stop.pid) at its exit")
        }
        let mappings = MemoryMapping.parse(maps: mapsText)
        let ownStacks = OwnStackAreas(listed: ownStacksListed, geometry: ownStackGeometry, mappings: mappings)
        let threads = stop.threads.map { thread in
            let atCall = hookCall(thread.stackPointer, ownStacks: ownStacks, memory: memory)
            let inHook = atCall?.stackPointer
            let leaving = exitCaller?.tid == thread.tid ? exitCaller : nil
            return ThreadRoots(tid: thread.tid, stackPointer: inHook ?? thread.stackPointer,
                               registers: leaving?.calleeSavedRegisters ?? atCall?.registers ?? (thread.endedProcess ? []
                                   : generalRegisterIndices.compactMap { $0 < thread.registers.count ? thread.registers[$0] : nil }),
                               liveStackStart: leaving?.stackPointer
                                   ?? inHook ?? (thread.endedProcess ? thread.stackPointer : nil))
        }
        let (scanBlocks, overlapping) = self.scanBlocks(blocks)
        var warnings = ownStacks.warnings
        if overlapping > 0 {
            warnings.append("\(overlapping) live block(s) overlapped the next one, which no allocator hands out: the program wrote into swiftleak's ring or freed memory behind the allocator's back; each was scanned up to the next block")
        }
        let exited = stop.exitedThreads.map { ExitedThread(tid: $0.tid, stackPointer: $0.stackPointer) }
        var rootOptions = RootSetBuilder.Options()
        rootOptions.excludedRanges = ownStacks.areas
        var rootSet = RootSetBuilder(options: rootOptions).build(mappings: mappings, threads: threads, liveBlocks: scanBlocks,
                                             exitedThreads: exited, memory: memory)
        rootSet.registerWords += stackBlocks(of: threads, in: scanBlocks)
        if let state = allocatorState, isInLibcData(state, mappings: mappings) {
            rootSet.regions = subtract(state, from: rootSet.regions)
        }
        var configuration = LeakScanner.Configuration()
        configuration.mappings = mappings
        // Swift's arrays (and C containers) fill malloc_usable_size; /proc/PID/mem reads PROT_NONE.
        configuration.contents = .glibcUsableSize
        configuration.readableRanges = MemoryMapping.readableRanges(mappings)
        return Outcome(result: LeakScanner.scan(blocks: scanBlocks, rootSet: rootSet, memory: memory,
                                                configuration: configuration),
                       warnings: warnings)
    }

    /// The scan's view of the live blocks (sorted by address), with how many overlapped the next.
    /// The interposer never records overlapping blocks, but the program can write the ring (or free
    /// through a path nobody hooks and get the memory back): the scanner requires disjoint blocks,
    /// so such a block is scanned only up to where the next begins. Every block keeps its index,
    /// so the result still lines up with `blocks`; the reports show the recorded sizes.
    static func scanBlocks(_ blocks: SortedBlocks) -> (blocks: [ScanBlock], overlapping: Int) {
        var scanBlocks: [ScanBlock] = []
        scanBlocks.reserveCapacity(blocks.count)
        var overlapping = 0
        for index in 0..<blocks.count {
            let address = blocks.addresses[index]
            var size = blocks.size(index)
            // Addresses are distinct and sorted, so the next one is above this one.
            if index + 1 < blocks.count, size > blocks.addresses[index + 1] - address {
                size = blocks.addresses[index + 1] - address
                overlapping += 1
            }
            scanBlocks.append(ScanBlock(address: address, size: size))
        }
        return (scanBlocks, overlapping)
    }

    /// For a thread stopped inside an allocation function, the program at its call: its stack
    /// pointer (where its live frames begin), and its registers as they were at the call plus the
    /// block the call is returning if it has one yet; nil for any other thread. Such a thread runs
    /// on the interposer's own stack (CShims/SwiftLeakPreload/own_stack.h), which is not a root and
    /// whose top words hold all that (SWL_OWN_STACK_FRAME_WORDS). Those are its roots, as if the
    /// call had not begun or had returned: Valgrind's allocator calls are atomic to its exit, and
    /// the registers the thread holds now are the hook's, not the program's.
    static func hookCall(_ stackPointer: UInt64, ownStacks: OwnStackAreas,
                         memory: some ProcessMemoryReader) -> (stackPointer: UInt64, registers: [UInt64])? {
        guard let ownStack = ownStacks.stack(containing: stackPointer) else { return nil }
        var words = [UInt64](repeating: 0, count: ownStackFrameWords)
        let copied = words.withUnsafeMutableBytes { memory.read(ownStack.upperBound - UInt64(ownStackFrameWords * 8), into: $0) }
        // words[0] the block being returned, [1 ..< 9] r15 ... rdi, [9] the saved stack pointer.
        guard copied == ownStackFrameWords * 8, let saved = words.last, saved != 0 else { return nil }
        return (saved, Array(words.dropLast()))
    }

    /// SWL_OWN_STACK_FRAME_WORDS (CShims/SwiftLeakPreload/own_stack.h).
    static let ownStackFrameWords = 10

    /// The interposer's own-stack areas (SwiftLeakEventABI.h).
    static let ownStackGeometry: OwnStackAreas.Geometry = {
        var stack: UInt64 = 0, guardBytes: UInt64 = 0, firstSlots: UInt64 = 0
        swl_own_stack_geometry(&stack, &guardBytes, &firstSlots)
        return OwnStackAreas.Geometry(stackSize: stack, guardSize: guardBytes, firstAreaSlots: firstSlots)
    }()

    /// The blocks a thread runs on as its stack (a raw clone() child or a coroutine on a malloc'd
    /// stack, a pthread_attr_setstack thread): in use as long as the thread is, so reachable, as if
    /// the thread held their address. The stack's contents from the stack pointer up are roots
    /// already (RootSetBuilder).
    static func stackBlocks(of threads: [ThreadRoots], in blocks: [ScanBlock]) -> [UInt64] {
        // The stack grows down from its block's end: a thread whose stack is empty (a raw clone()
        // child back in clone's exit path) has its stack pointer just past the block, so the word
        // below it counts too.
        threads.flatMap { thread in
            Set([thread.stackPointer, thread.stackPointer &- 1].compactMap { block(containing: $0, in: blocks) }).sorted()
        }
    }

    /// The block of `blocks` (sorted by address) that holds `address`, if any.
    static func block(containing address: UInt64, in blocks: [ScanBlock]) -> UInt64? {
        var lo = 0, hi = blocks.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if blocks[mid].address <= address { lo = mid + 1 } else { hi = mid }
        }
        guard lo > 0 else { return nil }
        let block = blocks[lo - 1]
        return address < block.address &+ block.size ? block.address : nil
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

/// Reads the stopped process with `process_vm_readv` (`swl_read_process_memory`): it copies straight
/// from the process's pages into the buffer, about 1.3-1.6 times as fast as `pread` of
/// `/proc/PID/mem` (which copies each page through a kernel buffer) for the scan's reads of 256 KiB
/// and more on the test machine. What it does not read whole, `/proc/PID/mem` (opened while the
/// thread was there, so it keeps the address space) reads as before: a `PROT_NONE` page (which
/// `/proc/PID/mem` reads and `process_vm_readv` does not; the scan never asks for one), and every
/// read once the thread is gone (a leader past `pthread_exit` has no memory of its own for
/// `process_vm_readv`). So the bytes are exactly those `/proc/PID/mem` gives.
final class ProcessVMReader: ProcessMemoryReader {
    let pid: Int32
    let procMem: ProcPIDMemReader

    init?(pid: Int32) {
        guard let procMem = ProcPIDMemReader(pid: pid) else { return nil }
        self.pid = pid
        self.procMem = procMem
    }

    func read(_ address: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        let got = min(swl_read_process_memory(pid, address, base, buffer.count), buffer.count)
        if got == buffer.count { return got }
        return got + procMem.read(address &+ UInt64(got), into: UnsafeMutableRawBufferPointer(rebasing: buffer[got...]))
    }
}
