import SwiftLeakCore

/// One block the program has not freed.
public struct LiveBlock: Hashable, Sendable {
    public var address: UInt64
    public var size: UInt64
    public var stack: UInt32
    public var function: AllocationFunction
    /// How many modules had been unloaded when the block was allocated (saturating): picks the
    /// module map its stack is symbolized against.
    public var moduleGeneration: UInt8

    public init(address: UInt64, size: UInt64, stack: UInt32, function: AllocationFunction, moduleGeneration: UInt8) {
        self.address = address
        self.size = size
        self.stack = stack
        self.function = function
        self.moduleGeneration = moduleGeneration
    }
}

/// The live blocks of one process, keyed by address: open addressing with linear probing and
/// backward-shift deletion, in three parallel arrays (20 bytes a slot: at most 53 bytes a live block
/// right after growing, 27 when full, 64 at the peak of a grow). Swift's Dictionary would cost
/// about 64 bytes a block right after a resize and more while it resizes, over the recorder's
/// budget (under 64 bytes per live block).
public struct LiveBlockTable: Sendable {
    private var keys: [UInt64]       // 0 = empty (malloc never returns address 0)
    private var infos: [UInt64]      // size (48 bits) | function (8) | module generation (8)
    private var stacks: [UInt32]
    private var mask: Int
    public private(set) var count = 0
    public private(set) var totalBytes: UInt64 = 0

    public init(minimumCapacity: Int = 1 << 12) {
        var capacity = 16
        while capacity < minimumCapacity { capacity <<= 1 }
        keys = Array(repeating: 0, count: capacity)
        infos = Array(repeating: 0, count: capacity)
        stacks = Array(repeating: 0, count: capacity)
        mask = capacity - 1
    }

    public var capacity: Int { keys.count }
    /// Bytes of memory the table holds.
    public var memoryFootprint: Int { keys.count * 20 }

    @inline(__always)
    private func home(_ address: UInt64) -> Int {
        // Fibonacci hashing: heap addresses differ mostly in their middle bits.
        Int(truncatingIfNeeded: (address &* 0x9e37_79b9_7f4a_7c15) >> 20) & mask
    }

    @inline(__always)
    private static func pack(_ block: LiveBlock) -> UInt64 {
        (block.size & 0xffff_ffff_ffff) | UInt64(block.function.rawValue) << 48 | UInt64(block.moduleGeneration) << 56
    }

    @inline(__always)
    private func block(at slot: Int) -> LiveBlock {
        let info = infos[slot]
        return LiveBlock(address: keys[slot], size: info & 0xffff_ffff_ffff, stack: stacks[slot],
                         function: AllocationFunction(rawValue: UInt8(truncatingIfNeeded: info >> 48)),
                         moduleGeneration: UInt8(truncatingIfNeeded: info >> 56))
    }

    /// Inserts a block; returns the block it replaced at the same address (a free we never saw).
    @discardableResult
    public mutating func insert(_ block: LiveBlock) -> LiveBlock? {
        precondition(block.address != 0, "address 0 is the empty marker")
        if (count + 1) * 4 > keys.count * 3 { grow() }
        var slot = home(block.address)
        while true {
            let key = keys[slot]
            if key == 0 {
                keys[slot] = block.address
                infos[slot] = Self.pack(block)
                stacks[slot] = block.stack
                count += 1
                totalBytes &+= block.size & 0xffff_ffff_ffff
                return nil
            }
            if key == block.address {
                let old = self.block(at: slot)
                infos[slot] = Self.pack(block)
                stacks[slot] = block.stack
                totalBytes = totalBytes &- old.size &+ (block.size & 0xffff_ffff_ffff)
                return old
            }
            slot = (slot + 1) & mask
        }
    }

    /// Removes the block at `address`; nil when there is none.
    @discardableResult
    public mutating func remove(_ address: UInt64) -> LiveBlock? {
        guard address != 0 else { return nil }
        var slot = home(address)
        while true {
            let key = keys[slot]
            if key == 0 { return nil }
            if key == address { break }
            slot = (slot + 1) & mask
        }
        let removed = block(at: slot)
        count -= 1
        totalBytes &-= removed.size
        // Backward-shift: pull later members of the probe run into the hole so lookups never
        // need tombstones.
        var hole = slot
        var next = (hole + 1) & mask
        while keys[next] != 0 {
            let wanted = home(keys[next])
            // Move `next` into `hole` unless its home lies cyclically in (hole, next].
            let distanceToNext = (next - wanted) & mask
            let distanceToHole = (hole - wanted) & mask
            if distanceToHole < distanceToNext {
                keys[hole] = keys[next]
                infos[hole] = infos[next]
                stacks[hole] = stacks[next]
                hole = next
            }
            next = (next + 1) & mask
        }
        keys[hole] = 0
        return removed
    }

    public func lookup(_ address: UInt64) -> LiveBlock? {
        guard address != 0 else { return nil }
        var slot = home(address)
        while true {
            let key = keys[slot]
            if key == 0 { return nil }
            if key == address { return block(at: slot) }
            slot = (slot + 1) & mask
        }
    }

    /// Empties the table into its blocks sorted by address, reusing the table's own storage: no
    /// second copy of millions of blocks at the moment memory is tightest (the exit scan).
    public mutating func consumeSorted() -> SortedBlocks {
        // Compact occupied slots to the front (order does not matter: we sort next).
        var filled = 0
        for slot in 0..<keys.count where keys[slot] != 0 {
            keys[filled] = keys[slot]
            infos[filled] = infos[slot]
            stacks[filled] = stacks[slot]
            filled += 1
        }
        var sortedKeys = keys, sortedInfos = infos, sortedStacks = stacks
        self = LiveBlockTable(minimumCapacity: 16)
        // Now the only references: shrink one array at a time to what is used.
        sortedKeys = Self.shrunk(sortedKeys, to: filled)
        sortedInfos = Self.shrunk(sortedInfos, to: filled)
        sortedStacks = Self.shrunk(sortedStacks, to: filled)
        sortedKeys.withUnsafeMutableBufferPointer { k in
            sortedInfos.withUnsafeMutableBufferPointer { i in
                sortedStacks.withUnsafeMutableBufferPointer { s in
                    ParallelSort.sort(keys: k, infos: i, stacks: s)
                }
            }
        }
        return SortedBlocks(addresses: sortedKeys, infos: sortedInfos, stacks: sortedStacks)
    }

    /// A copy of the first `count` elements in storage of exactly that size.
    private static func shrunk<T: BitwiseCopyable>(_ array: [T], to count: Int) -> [T] {
        [T](unsafeUninitializedCapacity: count) { buffer, initialized in
            array.withUnsafeBufferPointer { source in
                _ = buffer.initialize(from: source[0..<count])
            }
            initialized = count
        }
    }

    /// Every live block, in no particular order.
    public func allBlocks() -> [LiveBlock] {
        var result: [LiveBlock] = []
        result.reserveCapacity(count)
        for slot in 0..<keys.count where keys[slot] != 0 {
            result.append(block(at: slot))
        }
        return result
    }

    /// Doubles the table one array at a time, so that old and new copies of all three arrays never
    /// coexist: the peak is 48 bytes per old slot instead of 60.
    private mutating func grow() {
        let oldCapacity = keys.count
        let capacity = oldCapacity * 2
        mask = capacity - 1
        let unoccupied = UInt32.max
        var destination = [UInt32](repeating: unoccupied, count: oldCapacity)
        var newKeys = [UInt64](repeating: 0, count: capacity)
        for slot in 0..<oldCapacity where keys[slot] != 0 {
            var target = home(keys[slot])
            while newKeys[target] != 0 { target = (target + 1) & mask }
            newKeys[target] = keys[slot]
            destination[slot] = UInt32(target)
        }
        keys = newKeys
        var newInfos = [UInt64](repeating: 0, count: capacity)
        for slot in 0..<oldCapacity where destination[slot] != unoccupied {
            newInfos[Int(destination[slot])] = infos[slot]
        }
        infos = newInfos
        var newStacks = [UInt32](repeating: 0, count: capacity)
        for slot in 0..<oldCapacity where destination[slot] != unoccupied {
            newStacks[Int(destination[slot])] = stacks[slot]
        }
        stacks = newStacks
    }
}

/// The live blocks at the end, sorted by address, in parallel arrays (20 bytes a block).
public struct SortedBlocks: Sendable {
    public private(set) var addresses: [UInt64]
    private var infos: [UInt64]
    public private(set) var stacks: [UInt32]

    init(addresses: [UInt64], infos: [UInt64], stacks: [UInt32]) {
        self.addresses = addresses
        self.infos = infos
        self.stacks = stacks
    }

    public init(_ blocks: [LiveBlock]) {
        var table = LiveBlockTable()
        blocks.forEach { table.insert($0) }
        self = table.consumeSorted()
    }

    public var count: Int { addresses.count }
    public func size(_ index: Int) -> UInt64 { infos[index] & 0xffff_ffff_ffff }
    public func function(_ index: Int) -> AllocationFunction {
        AllocationFunction(rawValue: UInt8(truncatingIfNeeded: infos[index] >> 48))
    }
    public func moduleGeneration(_ index: Int) -> UInt8 { UInt8(truncatingIfNeeded: infos[index] >> 56) }
    public subscript(index: Int) -> LiveBlock {
        LiveBlock(address: addresses[index], size: size(index), stack: stacks[index],
                  function: function(index), moduleGeneration: moduleGeneration(index))
    }
}

/// An in-place quicksort of three parallel arrays by the first (distinct addresses), so sorting
/// needs no index permutation or copy.
enum ParallelSort {
    static func sort(keys: UnsafeMutableBufferPointer<UInt64>, infos: UnsafeMutableBufferPointer<UInt64>,
                     stacks: UnsafeMutableBufferPointer<UInt32>) {
        @inline(__always) func swapAt(_ a: Int, _ b: Int) {
            keys.swapAt(a, b)
            infos.swapAt(a, b)
            stacks.swapAt(a, b)
        }
        // Explicit stack of ranges; the smaller side is pushed, so it holds at most log2(n) ranges.
        var pending: [(Int, Int)] = [(0, keys.count - 1)]
        while let (lowStart, highStart) = pending.popLast() {
            var low = lowStart, high = highStart
            while high - low > 16 {
                let middle = low + (high - low) / 2
                if keys[middle] < keys[low] { swapAt(middle, low) }
                if keys[high] < keys[low] { swapAt(high, low) }
                if keys[high] < keys[middle] { swapAt(high, middle) }
                let pivot = keys[middle]
                var i = low, j = high
                while i <= j {
                    while keys[i] < pivot { i += 1 }
                    while keys[j] > pivot { j -= 1 }
                    if i <= j {
                        swapAt(i, j)
                        i += 1
                        j -= 1
                    }
                }
                if j - low < high - i {
                    if low < j { pending.append((low, j)) }
                    low = i
                } else {
                    if i < high { pending.append((i, high)) }
                    high = j
                }
            }
            if high > low {
                for index in (low + 1)...high {
                    var position = index
                    while position > low && keys[position - 1] > keys[position] {
                        swapAt(position - 1, position)
                        position -= 1
                    }
                }
            }
        }
    }
}
