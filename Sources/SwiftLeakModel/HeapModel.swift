import SwiftLeakCore

/// Whole-run counts of one process's heap (Valgrind's "total heap usage" and heaptrack's figures).
public struct HeapStatistics: Sendable, Hashable {
    public var events: UInt64 = 0
    public var allocations: UInt64 = 0
    public var frees: UInt64 = 0
    public var bytesAllocated: UInt64 = 0
    /// Frees of addresses never seen allocated (allocated before the interposer attached).
    public var unknownFrees: UInt64 = 0
    /// Allocations at an address that was still live: a free we never saw.
    public var replacedBlocks: UInt64 = 0
    /// Slots a thread reserved and never filled (it was killed inside an allocation function).
    public var abandonedSlots: UInt64 = 0
    /// Allocations freed before any other allocation happened in their thread.
    public var temporaryAllocations: UInt64 = 0
    /// The most bytes live at once, and when (nanoseconds since the start).
    public var peakBytes: UInt64 = 0
    public var peakBlocks: UInt64 = 0
    public var peakTime: UInt64 = 0
    public init() {}
}

/// What one allocation stack did over the run.
public struct SiteStatistics: Sendable, Hashable {
    public var allocations: UInt64 = 0
    public var bytesAllocated: UInt64 = 0
    public var temporaryAllocations: UInt64 = 0
    public var liveBytes: UInt64 = 0
    public var liveBlocks: UInt64 = 0
    /// Its live bytes at the moment of the whole heap's peak (heaptrack's "peak contribution").
    public var bytesAtPeak: UInt64 = 0
    /// The peak number of the heap when `bytesAtPeak` was last brought up to date.
    var peakEpoch: UInt64 = 0
    /// Time integrals of its live bytes and blocks (seconds), for the growth trend.
    var lastChange: Double = 0
    var bytesIntegral: Double = 0
    var bytesTimeIntegral: Double = 0
    var bytesSquareIntegral: Double = 0
    var blocksIntegral: Double = 0
    var blocksTimeIntegral: Double = 0
    /// The first module generation a block of this stack was allocated in; whether others followed.
    public var generation: UInt8 = 0
    public var severalGenerations = false
    /// The allocation function of its first block.
    public var function: AllocationFunction = .unknown
    public init() {}

    /// Adds the time since the last change at the current live figures.
    @inline(__always)
    mutating func integrate(until time: Double) {
        let span = time - lastChange
        guard span > 0 else { return }
        let bytes = Double(liveBytes), blocks = Double(liveBlocks)
        let timeMoment = (time * time - lastChange * lastChange) / 2
        bytesIntegral += bytes * span
        bytesTimeIntegral += bytes * timeMoment
        bytesSquareIntegral += bytes * bytes * span
        blocksIntegral += blocks * span
        blocksTimeIntegral += blocks * timeMoment
        lastChange = time
    }

    /// The least-squares trend of its live bytes over [0, duration]: slope (bytes and blocks per
    /// second) and the correlation of live bytes with time (1: a steady rise; near 0: flat, or up
    /// and down again).
    public func trend(duration: Double) -> (bytesPerSecond: Double, blocksPerSecond: Double, correlation: Double) {
        guard duration > 0 else { return (0, 0, 0) }
        var closed = self
        closed.integrate(until: duration)
        let timeVariance = duration * duration / 12
        let meanBytes = closed.bytesIntegral / duration
        let bytesCovariance = closed.bytesTimeIntegral / duration - duration / 2 * meanBytes
        let bytesVariance = max(0, closed.bytesSquareIntegral / duration - meanBytes * meanBytes)
        let blocksCovariance = closed.blocksTimeIntegral / duration - duration / 2 * closed.blocksIntegral / duration
        let correlation = bytesVariance > 0 ? bytesCovariance / (timeVariance * bytesVariance).squareRoot() : 0
        return (bytesCovariance / timeVariance, blocksCovariance / timeVariance, min(1, correlation))
    }
}

/// An RSS sample: nanoseconds since the start, resident bytes.
public struct ResidentSample: Sendable, Hashable {
    public var time: UInt64
    public var bytes: UInt64
    public init(time: UInt64, bytes: UInt64) {
        self.time = time
        self.bytes = bytes
    }
}

/// The heap of one process as its event stream builds it: live blocks, per-stack statistics over
/// time, modules and stacks. A pure consumer of `HeapEvent`s: it knows neither the ring nor the
/// trace file, so `run` and `analyze` build the same model from the same stream.
///
/// Memory: the live-block table (see `LiveBlockTable`, ~20-53 bytes a live block) plus a few
/// hundred bytes per distinct stack and per thread; nothing grows with the number of events
/// (RSS samples aside: 16 bytes per 100 ms).
public struct HeapModel: Sendable {
    public private(set) var table = LiveBlockTable()
    public private(set) var statistics = HeapStatistics()
    public private(set) var modules: [ModuleSpan] = []
    public private(set) var moduleGeneration: UInt8 = 0
    public private(set) var stacks = StackTable()
    /// Indexed by stack id (index 0: blocks without a stack).
    public private(set) var sites: [SiteStatistics] = [SiteStatistics()]
    /// The time of the latest `.time` event, nanoseconds since the start.
    public private(set) var now: UInt64 = 0
    public private(set) var residentSamples: [ResidentSample] = []
    /// Allocations by size: bucket 0 holds size 0, bucket b > 0 sizes in [2^(b-1), 2^b).
    public private(set) var sizeHistogram = [UInt64](repeating: 0, count: 50)
    /// Stack ids that appeared in `.allocation` events but were never defined (a damaged source).
    public private(set) var undefinedStacks: UInt64 = 0
    /// Per thread: the address of its latest allocation while no other allocation followed in it.
    /// The current thread's entry and the one before it are kept apart, never in the dictionary:
    /// consecutive events mostly come from one thread, and two threads writing at once (one per
    /// core) alternate every few events, each switch then two dictionary lookups with their hashing
    /// (`xthread 2`: a fifth of the drain's CPU).
    private var lastAllocation: [UInt32: UInt64] = [:]
    private var currentThread: UInt32 = 0
    private var currentLastAllocation: UInt64 = 0
    private var previousThread: UInt32 = 0
    private var previousLastAllocation: UInt64 = 0
    private var peakEpoch: UInt64 = 0
    private var seconds: Double = 0

    public init() {}

    public mutating func apply(_ event: HeapEvent) {
        statistics.events += 1
        switch event {
        case let .allocation(address, size, stack, function, thread):
            _ = withHotArrays { model, hot in
                model.allocate(address: address, size: size, stack: stack, function: function, thread: thread, hot)
            }
        case let .free(address, thread):
            _ = withHotArrays { model, hot in model.free(address: address, thread: thread, hot) }
        case let .stack(_, frames):
            stacks.append(frames)
            sites.append(SiteStatistics())
        case let .moduleLoad(id, module):
            modules.append(ModuleSpan(module: module, firstGeneration: moduleGeneration, id: id))
        case let .moduleUnload(id):
            if let index = modules.lastIndex(where: { $0.id == id && $0.lastGeneration == .max }) {
                modules[index].lastGeneration = moduleGeneration
            }
            if moduleGeneration < .max - 1 { moduleGeneration += 1 }
        case let .time(nanoseconds):
            if nanoseconds > now {
                now = nanoseconds
                seconds = Double(nanoseconds) / 1e9
            }
        case let .residentMemory(bytes):
            residentSamples.append(ResidentSample(time: now, bytes: bytes))
        case let .abandonedSlots(count):
            statistics.abandonedSlots += count
        }
    }

    /// Applies a batch of events, in order: the drain's entry point (one call per batch, so the
    /// per-event work stays inside this module, where it is inlined).
    public mutating func apply(_ events: UnsafeBufferPointer<HeapEvent>) {
        apply(events, numbers: nil, firstNumber: 0)
    }

    /// Applies a batch of events to a numbered model (`startNumbering()`), numbering the new
    /// blocks `firstNumber`, `firstNumber + 1`, … in order. For each allocation and free,
    /// `numbers[i]` gets what `applyAllocation(…, number:)` or `applyFree` would return for
    /// `events[i]`: the number the block now carries (the next fresh one, or the number of the
    /// live block it took the place of), or the freed block's number (0 when unknown). The other
    /// entries are left alone. Returns how many fresh numbers were given.
    @discardableResult
    public mutating func apply(_ events: UnsafeBufferPointer<HeapEvent>, numberingFrom firstNumber: UInt64,
                               into numbers: UnsafeMutablePointer<UInt64>) -> UInt64 {
        apply(events, numbers: numbers, firstNumber: firstNumber) &- firstNumber
    }

    /// Returns the next fresh number.
    @inline(__always)
    private mutating func apply(_ events: UnsafeBufferPointer<HeapEvent>, numbers: UnsafeMutablePointer<UInt64>?,
                                firstNumber: UInt64) -> UInt64 {
        var fresh = firstNumber
        var index = 0
        while index < events.count {
            // A run of allocations and frees (nearly the whole batch) with the arrays held once,
            // then the event that ended it.
            index = withHotArrays { model, hot in
                model.applyAllocationsAndFrees(events, from: index, numbers: numbers, fresh: &fresh, hot)
            }
            if index < events.count {
                apply(events[index])
                index += 1
            }
        }
        return fresh
    }

    /// Applies the allocations and frees from `start` on; returns the index of the first other event.
    @inline(__always)
    private mutating func applyAllocationsAndFrees(_ events: UnsafeBufferPointer<HeapEvent>, from start: Int,
                                                   numbers: UnsafeMutablePointer<UInt64>?, fresh: inout UInt64,
                                                   _ hot: HotArrays) -> Int {
        var index = start
        // Each event's slot is a miss: to memory once the table outgrows the caches, and even a
        // small table (malloc_heavy's 512 blocks in 96 KiB) is out of the core's first-level
        // cache, and often further while the program and the trace's compressor share the cores
        // (perf: a quarter of the insert and remove samples sat on the slot's first load). So
        // ask for the slot of the event a few ahead, and the misses overlap.
        while index < events.count {
            if index + Self.prefetchDistance < events.count {
                if case let .allocation(address, _, _, _, _) = events[index + Self.prefetchDistance] {
                    table.prefetch(address)
                } else if case let .free(address, _) = events[index + Self.prefetchDistance] {
                    table.prefetch(address)
                }
            }
            if case let .allocation(address, size, stack, function, thread) = events[index] {
                statistics.events += 1
                let number = allocate(address: address, size: size, stack: stack, function: function, thread: thread,
                                      number: numbers == nil ? 0 : fresh, hot)
                if let numbers {
                    numbers[index] = number
                    if number == fresh { fresh &+= 1 }
                }
            } else if case let .free(address, thread) = events[index] {
                statistics.events += 1
                let number = free(address: address, thread: thread, hot)
                numbers?[index] = number
            } else {
                break
            }
            index += 1
        }
        return index
    }

    /// How many events ahead a batch prefetches the table's slots.
    static let prefetchDistance = 8

    /// The per-site figures and the size histogram as raw buffers, for the allocations and frees:
    /// an array's subscript pays a uniqueness check on every write. While `body` runs the model's
    /// own arrays are empty (the events it applies add no site).
    struct HotArrays {
        let sites: UnsafeMutableBufferPointer<SiteStatistics>
        let sizeHistogram: UnsafeMutableBufferPointer<UInt64>
    }

    @inline(__always)
    private mutating func withHotArrays<R>(_ body: (inout HeapModel, HotArrays) -> R) -> R {
        var sites: [SiteStatistics] = [], histogram: [UInt64] = []
        swap(&sites, &self.sites)
        swap(&histogram, &sizeHistogram)
        defer {
            swap(&sites, &self.sites)
            swap(&histogram, &sizeHistogram)
        }
        table.makeUnique()
        return sites.withUnsafeMutableBufferPointer { sites in
            histogram.withUnsafeMutableBufferPointer { histogram in
                body(&self, HotArrays(sites: sites, sizeHistogram: histogram))
            }
        }
    }

    /// From now on the live blocks carry numbers (the trace encoder's allocation numbers, see
    /// `LiveBlockTable.startNumbering()`), so the encoder needs no table of its own. Blocks already
    /// live get 0: the trace being started never saw them.
    public mutating func startNumbering() { table.startNumbering() }

    /// `apply(.allocation(…))` and `apply(.free(…))` for a caller that has the fields at hand:
    /// the drain's hot path, which so avoids copying each event out of its batch as an enum.
    ///
    /// Returns the number the block now carries in a numbered table: `number`, or, when it took
    /// the place of a live block that had a number (a free never seen), that block's number.
    /// 0 for address 0 (ignored).
    @inline(__always)
    @discardableResult
    public mutating func applyAllocation(address: UInt64, size: UInt64, stack: UInt32, function: AllocationFunction,
                                         thread: UInt32, number: UInt64 = 0) -> UInt64 {
        statistics.events += 1
        return withHotArrays { model, hot in
            model.allocate(address: address, size: size, stack: stack, function: function, thread: thread, number: number, hot)
        }
    }

    /// Returns the freed block's number; 0 when the address was not live (or had no number).
    @inline(__always)
    @discardableResult
    public mutating func applyFree(address: UInt64, thread: UInt32) -> UInt64 {
        statistics.events += 1
        return withHotArrays { model, hot in model.free(address: address, thread: thread, hot) }
    }

    @inline(__always)
    private mutating func allocate(address: UInt64, size: UInt64, stack: UInt32, function: AllocationFunction,
                                   thread: UInt32, number: UInt64 = 0, _ hot: HotArrays) -> UInt64 {
        guard address != 0 else { return 0 }
        var number = number
        var stack = stack
        let sites = hot.sites, sizeHistogram = hot.sizeHistogram
        if Int(stack) >= sites.count {
            undefinedStacks += 1
            stack = 0
        }
        let size = size & 0xffff_ffff_ffff
        statistics.allocations += 1
        statistics.bytesAllocated &+= size
        // The size has 48 bits: its bucket is at most 48, and size 0's is 0 (64 leading zeros).
        sizeHistogram[64 &- size.leadingZeroBitCount] += 1
        switchThread(thread)
        currentLastAllocation = address
        let block = LiveBlock(address: address, size: size, stack: stack, function: function, moduleGeneration: moduleGeneration)
        var replacedNumber: UInt64 = 0
        if let replaced = table.insertIntoUnique(block, number: number, replacedNumber: &replacedNumber) {
            number = replace(replaced, at: address, replacedNumber: replacedNumber, number: number, sites)
        }
        do {
            let index = Int(stack)
            sites[index].integrate(until: seconds)
            if sites[index].peakEpoch != peakEpoch {
                sites[index].bytesAtPeak = sites[index].liveBytes
                sites[index].peakEpoch = peakEpoch
            }
            sites[index].allocations += 1
            sites[index].bytesAllocated &+= size
            sites[index].liveBytes &+= size
            sites[index].liveBlocks += 1
            if sites[index].allocations == 1 {
                sites[index].generation = moduleGeneration
                sites[index].function = function
            } else if sites[index].generation != moduleGeneration {
                sites[index].severalGenerations = true
            }
        }
        if table.totalBytes > statistics.peakBytes { newPeak() }
        return number
    }

    /// An allocation took the place of a live block (a free we never saw): the old block leaves
    /// its site's figures. Returns the number the new block carries. Out of line: rare.
    @inline(never)
    private mutating func replace(_ replaced: LiveBlock, at address: UInt64, replacedNumber: UInt64, number: UInt64,
                                  _ sites: UnsafeMutableBufferPointer<SiteStatistics>) -> UInt64 {
        statistics.replacedBlocks += 1
        release(replaced, sites)
        // The trace's reader lets the new block take the old one's place and number.
        guard replacedNumber != 0 else { return number }
        table.renumber(address, to: replacedNumber)
        return replacedNumber
    }

    /// A new peak: every site's figure at the peak is its current one until it next changes
    /// (then `peakEpoch` tells it to save the figure first). Out of line: after the first
    /// moments of a run, rare.
    @inline(never)
    private mutating func newPeak() {
        statistics.peakBytes = table.totalBytes
        statistics.peakBlocks = UInt64(table.count)
        statistics.peakTime = now
        peakEpoch &+= 1
    }

    @inline(__always)
    private mutating func free(address: UInt64, thread: UInt32, _ hot: HotArrays) -> UInt64 {
        var number: UInt64 = 0
        guard let block = table.removeFromUnique(address, number: &number) else {
            statistics.unknownFrees += 1
            return 0
        }
        statistics.frees += 1
        switchThread(thread)
        if currentLastAllocation == address {
            statistics.temporaryAllocations += 1
            hot.sites[Int(block.stack)].temporaryAllocations += 1
        }
        currentLastAllocation = 0
        release(block, hot.sites)
        return number
    }

    @inline(__always)
    private mutating func switchThread(_ thread: UInt32) {
        guard thread != currentThread else { return }
        switchThreadRarely(thread)
    }

    /// The dictionary work of a thread switch, out of line: inlined, its lookups made the batch
    /// loop so large that the optimizer stopped inlining into it (`free` stayed a call per event).
    @inline(never)
    private mutating func switchThreadRarely(_ thread: UInt32) {
        if thread == previousThread {
            swap(&currentThread, &previousThread)
            swap(&currentLastAllocation, &previousLastAllocation)
            return
        }
        // A third thread: the one before last goes to the dictionary (a missing entry reads as 0,
        // so 0 need not be stored), the current one becomes the one before.
        if previousLastAllocation != 0 {
            lastAllocation[previousThread] = previousLastAllocation
        } else if !lastAllocation.isEmpty {
            lastAllocation[previousThread] = nil
        }
        previousThread = currentThread
        previousLastAllocation = currentLastAllocation
        currentThread = thread
        currentLastAllocation = lastAllocation.isEmpty ? 0 : (lastAllocation.removeValue(forKey: thread) ?? 0)
    }

    /// Takes a block that is no longer live off its site's figures.
    @inline(__always)
    private func release(_ block: LiveBlock, _ sites: UnsafeMutableBufferPointer<SiteStatistics>) {
        do {
            let index = Int(block.stack)
            sites[index].integrate(until: seconds)
            if sites[index].peakEpoch != peakEpoch {
                sites[index].bytesAtPeak = sites[index].liveBytes
                sites[index].peakEpoch = peakEpoch
            }
            sites[index].liveBytes &-= block.size
            sites[index].liveBlocks &-= 1
        }
    }

    /// The live blocks at `now`, without giving up the model (a snapshot for `--at`).
    public func liveBlocks() -> [LiveBlock] { table.allBlocks() }

    /// Ends the stream: hands over the live blocks sorted by address and the per-site figures
    /// brought up to date. The table's memory moves with the blocks.
    public mutating func finish() -> FinalHeap {
        for index in sites.indices where sites[index].peakEpoch != peakEpoch {
            sites[index].bytesAtPeak = sites[index].liveBytes
            sites[index].peakEpoch = peakEpoch
        }
        let blocks = table.consumeSorted()
        return FinalHeap(blocks: blocks, statistics: statistics, modules: modules, moduleGeneration: moduleGeneration,
                         stacks: stacks, sites: sites, duration: now, residentSamples: residentSamples, sizeHistogram: sizeHistogram)
    }
}

/// The model at the end of the stream.
public struct FinalHeap: Sendable {
    /// The blocks still live, sorted by address.
    public var blocks: SortedBlocks
    public var statistics: HeapStatistics
    public var modules: [ModuleSpan]
    /// The number of unloads seen (saturating): the generation of the last blocks.
    public var moduleGeneration: UInt8
    public var stacks: StackTable
    public var sites: [SiteStatistics]
    /// Nanoseconds from the start to the last event.
    public var duration: UInt64
    public var residentSamples: [ResidentSample]
    public var sizeHistogram: [UInt64]

    public var peakResidentBytes: UInt64 { residentSamples.map(\.bytes).max() ?? 0 }
}
