#if canImport(Glibc)
import Glibc
#endif
import CSwiftLeakPrefetch
import CSwiftLeakSys
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

/// The live blocks of one process, keyed by address, in at most 26 bytes a live block plus a fixed
/// amount (16 KiB at the smallest shards; the model's table starts at 256 KiB, see `init`), at
/// every moment including a grow (the recorder's budget is 32).
///
/// - A slot is two words, no object: the address (48 bits) with the function and module generation
///   in its top 16 bits, then the size (32 bits) and the stack id (32 bits). A block that does not
///   fit (an address above 2^48, a size of 4 GiB or more) lives in a side dictionary instead.
/// - 64 shards, picked by the top bits of the address's Fibonacci hash, each an open-addressing
///   table with linear probing and backward-shift deletion (no tombstones). A shard's capacity is
///   any number (the slot is the hash scaled to it), grows by a fifth when it is three quarters
///   full, so the table is always between 62% and 75% full: 21-26 bytes a block. Only one shard
///   grows at a time: a small one is copied (a grow adds 1/64 of the table, not a second table),
///   a mapped one grows in place.
/// - A shard of 64 KiB or more is mapped directly, so the memory it gives up returns to the system
///   and malloc's mmap threshold is left alone. It grows where it is (mremap, then its blocks are
///   placed anew in the same memory: see `Storage.growInPlace`), so its pages are neither zeroed
///   again nor copied.
/// - Numbered (`startNumbering()`, when a trace is written): each slot has a third word, the
///   block's allocation number in the trace, in the slot's own cache line (8 bytes a slot more:
///   31-39 bytes a block). One table then serves the model and the trace encoder, one probe and
///   one cache line per event instead of two.
public struct LiveBlockTable: Sendable {
    private var storage: Storage

    /// The default (the model's table) starts sparse, 16,384 slots (256 KiB, 384 KiB numbered):
    /// with few blocks live, nearly every insert finds its home slot empty and nearly every
    /// remove finds its block there with an empty slot after it, so the probe loops' branches
    /// are foreseen. Denser, each further probe is a mispredicted branch: on malloc_heavy (~512
    /// blocks live) the drain took 310 ms at 1,024 slots, 229 ms at 4,096, 211 ms at 16,384
    /// (perf, 7-9 interleaved rounds). The slots a program's blocks use are the lines that stay
    /// cached, so the sparse table costs little cache. It grows as before once blocks fill it.
    public init(minimumCapacity: Int = 1 << 14) {
        storage = Storage(minimumCapacity: minimumCapacity)
    }

    public var count: Int { storage.count }
    public var totalBytes: UInt64 { storage.totalBytes }
    /// Slots in all shards.
    public var capacity: Int { storage.capacity }
    /// Bytes of memory the table holds (slots, shard headers and the side dictionary's entries).
    public var memoryFootprint: Int { storage.memoryFootprint }
    /// Whether blocks carry a number (see `startNumbering()`).
    public var isNumbered: Bool { storage.numbered }

    /// From now on every block carries a number beside it, given to `insert(_:number:replaced:)`;
    /// the blocks already live get 0 (a fork child's copy of its parent's table: its trace never
    /// saw them).
    public mutating func startNumbering() {
        makeUnique()
        storage.startNumbering()
    }

    /// Copies the storage if it is shared (copy on write); `insertIntoUnique`/`removeFromUnique`
    /// rely on a call before them.
    @inline(__always)
    mutating func makeUnique() {
        if !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
    }

    /// `insert(_:number:replacedNumber:)` without the uniqueness check, for a run of changes after
    /// one `makeUnique()` (the model's batches: the check was a runtime call per event).
    @inline(__always)
    mutating func insertIntoUnique(_ block: LiveBlock, number: UInt64, replacedNumber: inout UInt64) -> LiveBlock? {
        precondition(block.address != 0, "address 0 is the empty marker")
        return storage.insert(block, number: number, replacedNumber: &replacedNumber)
    }

    /// Starts loading the slot where a block at `address` is or would go (a hint: nothing
    /// changes), for an insert or remove a few events later.
    @inline(__always)
    func prefetch(_ address: UInt64) { storage.prefetch(address) }

    /// `remove(_:number:)` without the uniqueness check (see `insertIntoUnique`).
    @inline(__always)
    mutating func removeFromUnique(_ address: UInt64, number: inout UInt64) -> LiveBlock? {
        guard address != 0 else { return nil }
        return storage.remove(address, number: &number)
    }

    /// Inserts a block; returns the block it replaced at the same address (a free we never saw).
    @discardableResult
    public mutating func insert(_ block: LiveBlock) -> LiveBlock? {
        var replacedNumber: UInt64 = 0
        return insert(block, number: 0, replacedNumber: &replacedNumber)
    }

    /// Inserts a block with its number (kept only when the table is numbered); returns the block it
    /// replaced, whose number goes to `replacedNumber` (0 when there was none).
    @discardableResult
    public mutating func insert(_ block: LiveBlock, number: UInt64, replacedNumber: inout UInt64) -> LiveBlock? {
        precondition(block.address != 0, "address 0 is the empty marker")
        makeUnique()
        return storage.insert(block, number: number, replacedNumber: &replacedNumber)
    }

    /// Removes the block at `address`; nil when there is none.
    @discardableResult
    public mutating func remove(_ address: UInt64) -> LiveBlock? {
        var number: UInt64 = 0
        return remove(address, number: &number)
    }

    /// Removes the block at `address`, its number to `number` (0 when none or not numbered).
    @discardableResult
    public mutating func remove(_ address: UInt64, number: inout UInt64) -> LiveBlock? {
        guard address != 0 else { return nil }
        makeUnique()
        return storage.remove(address, number: &number)
    }

    /// Gives the live block at `address` another number (no-op when there is none).
    public mutating func renumber(_ address: UInt64, to number: UInt64) {
        guard address != 0 else { return }
        makeUnique()
        storage.renumber(address, to: number)
    }

    /// The number of the live block at `address`; 0 when there is none.
    public func number(of address: UInt64) -> UInt64 {
        guard address != 0 else { return 0 }
        return storage.number(of: address)
    }

    public func lookup(_ address: UInt64) -> LiveBlock? {
        guard address != 0 else { return nil }
        return storage.lookup(address)
    }

    /// Empties the table into its blocks sorted by address. Each shard is freed as soon as it is
    /// copied out, so the table and the sorted arrays (20 bytes a block) never coexist whole: no
    /// second copy of millions of blocks at the moment memory is tightest (the exit scan).
    public mutating func consumeSorted() -> SortedBlocks {
        makeUnique()
        let total = storage.count
        var addresses: [UInt64] = []
        var infos: [UInt64] = []
        var stacks: [UInt32] = []
        let storage = self.storage
        let numbered = storage.numbered
        var numbers = numbered ? [UInt64](repeating: 0, count: total) : []
        numbers.withUnsafeMutableBufferPointer { numberBuffer in
            addresses = [UInt64](unsafeUninitializedCapacity: total) { addressBuffer, addressCount in
                infos = [UInt64](unsafeUninitializedCapacity: total) { infoBuffer, infoCount in
                    stacks = [UInt32](unsafeUninitializedCapacity: total) { stackBuffer, stackCount in
                        let filled = storage.drain { index, block, number in
                            addressBuffer.initializeElement(at: index, to: block.address)
                            infoBuffer.initializeElement(at: index, to: SortedBlocks.pack(block))
                            stackBuffer.initializeElement(at: index, to: block.stack)
                            if numbered { numberBuffer[index] = number }
                        }
                        precondition(filled == total, "live-block count out of step")
                        stackCount = total
                    }
                    infoCount = total
                }
                addressCount = total
            }
        }
        self = LiveBlockTable(minimumCapacity: 16)
        addresses.withUnsafeMutableBufferPointer { k in
            infos.withUnsafeMutableBufferPointer { i in
                stacks.withUnsafeMutableBufferPointer { s in
                    numbers.withUnsafeMutableBufferPointer { n in
                        ParallelSort.sort(keys: k, infos: i, stacks: s, numbers: n)
                    }
                }
            }
        }
        return SortedBlocks(addresses: addresses, infos: infos, stacks: stacks, numbers: numbers)
    }

    /// Every live block, in no particular order.
    public func allBlocks() -> [LiveBlock] {
        var result: [LiveBlock] = []
        result.reserveCapacity(count)
        storage.forEach { result.append($0) }
        return result
    }
}

/// The shards of a ``LiveBlockTable``. Mutated only through a uniquely referenced table (copy on
/// write), hence the unchecked Sendable.
private final class Storage: @unchecked Sendable {
    static let shardBits = 6
    static let shardCount = 1 << shardBits
    static let minimumShardCapacity = 16
    /// How many old slots ahead `grow` prefetches the new home of.
    static let growPrefetchDistance = 16
    /// Shards of at least this many bytes are mapped directly.
    static let mappedShardBytes = 64 << 10

    /// One shard: `capacity` slots of `Storage.words` words each.
    struct Shard {
        var slots: UnsafeMutablePointer<UInt64>
        var capacity: Int
        var count: Int
    }

    let shards: UnsafeMutablePointer<Shard>
    /// Blocks whose address or size does not fit a slot, with their numbers.
    var oversized: [UInt64: (block: LiveBlock, number: UInt64)] = [:]
    var count = 0
    var totalBytes: UInt64 = 0
    /// Words a slot: key and value, and when numbered the number after them, in the slot's own
    /// cache line (a parallel array of numbers was a second line per insert and remove).
    private(set) var words: Int
    var numbered: Bool { words == 3 }

    static let addressMask: UInt64 = 0xffff_ffff_ffff
    static let sizeLimit: UInt64 = 1 << 32

    init(minimumCapacity: Int, numbered: Bool = false) {
        words = numbered ? 3 : 2
        let perShard = max(Self.minimumShardCapacity, (minimumCapacity + Self.shardCount - 1) / Self.shardCount)
        shards = .allocate(capacity: Self.shardCount)
        for index in 0..<Self.shardCount {
            (shards + index).initialize(to: Shard(slots: Self.allocateWords(words * perShard), capacity: perShard, count: 0))
        }
    }

    deinit {
        for index in 0..<Self.shardCount { free(shards[index]) }
        shards.deallocate()
    }

    func copy() -> Storage {
        let copy = Storage(minimumCapacity: 0, numbered: numbered)
        for index in 0..<Self.shardCount {
            let shard = shards[index]
            copy.free(copy.shards[index])
            let slots = Self.allocateWords(words * shard.capacity)
            slots.update(from: shard.slots, count: words * shard.capacity)
            copy.shards[index] = Shard(slots: slots, capacity: shard.capacity, count: shard.count)
        }
        copy.oversized = oversized
        copy.count = count
        copy.totalBytes = totalBytes
        return copy
    }

    /// Widens every slot by the number word, 0 for the blocks already live; a numbered table's
    /// numbers go back to 0.
    func startNumbering() {
        for index in 0..<Self.shardCount {
            let shard = shards[index]
            if numbered {
                for slot in 0..<shard.capacity { shard.slots[3 * slot + 2] = 0 }
                continue
            }
            let wide = Self.allocateWords(3 * shard.capacity)
            for slot in 0..<shard.capacity {
                wide[3 * slot] = shard.slots[2 * slot]
                wide[3 * slot + 1] = shard.slots[2 * slot + 1]
            }
            Self.freeWords(shard.slots, count: 2 * shard.capacity)
            shards[index].slots = wide
        }
        for key in oversized.keys { oversized[key]!.number = 0 }
        words = 3
    }

    var capacity: Int { (0..<Self.shardCount).reduce(0) { $0 + shards[$1].capacity } }
    var memoryFootprint: Int {
        capacity * 8 * words + Self.shardCount * MemoryLayout<Shard>.stride + oversized.capacity * 80
    }

    /// Whether an array of `count` words is mapped directly (`mappedShardBytes` on) and how many
    /// bytes its mapping takes (whole pages).
    @inline(__always)
    static func isMapped(words count: Int) -> Bool { count * 8 >= mappedShardBytes }
    static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
    static func mappedLength(words count: Int) -> Int { (count * 8 + pageSize - 1) / pageSize * pageSize }

    /// Zeroed words; mapped directly from `mappedShardBytes` on. Populated at once: a shard's
    /// blocks are spread over all its pages, so every page is touched anyway, and one call that
    /// maps them all costs less than a page fault each (a quarter of the drain's time when
    /// millions of blocks stay live).
    static func allocateWords(_ count: Int) -> UnsafeMutablePointer<UInt64> {
        if isMapped(words: count) {
            let length = mappedLength(words: count)
            let mapped = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0)
            guard let mapped, mapped != MAP_FAILED else {
                preconditionFailure("cannot map \(length) bytes for the live-block table: \(String(cString: strerror(errno)))")
            }
            return mapped.bindMemory(to: UInt64.self, capacity: count)  // zero-filled
        }
        let words = UnsafeMutablePointer<UInt64>.allocate(capacity: count)
        words.initialize(repeating: 0, count: count)
        return words
    }

    static func freeWords(_ words: UnsafeMutablePointer<UInt64>, count: Int) {
        if isMapped(words: count) {
            munmap(words, mappedLength(words: count))
        } else {
            words.deallocate()
        }
    }

    func free(_ shard: Shard) { Self.freeWords(shard.slots, count: words * shard.capacity) }

    // MARK: Slots

    @inline(__always)
    static func hash(_ address: UInt64) -> UInt64 { address &* 0x9e37_79b9_7f4a_7c15 }

    /// The home slot of a hash in a shard of `capacity` slots: the hash's bits below the shard
    /// number, scaled to the capacity.
    @inline(__always)
    static func home(_ hash: UInt64, _ capacity: Int) -> Int {
        Int(truncatingIfNeeded: (hash << UInt64(shardBits)).multipliedFullWidth(by: UInt64(capacity)).high)
    }

    @inline(__always)
    static func fits(_ block: LiveBlock) -> Bool {
        block.address <= addressMask && block.size < sizeLimit
    }

    @inline(__always)
    static func keyWord(_ block: LiveBlock) -> UInt64 {
        block.address | UInt64(block.function.rawValue) << 48 | UInt64(block.moduleGeneration) << 56
    }

    @inline(__always)
    static func valueWord(_ block: LiveBlock) -> UInt64 { block.size | UInt64(block.stack) << 32 }

    @inline(__always)
    static func block(key: UInt64, value: UInt64) -> LiveBlock {
        LiveBlock(address: key & addressMask, size: value & 0xffff_ffff, stack: UInt32(truncatingIfNeeded: value >> 32),
                  function: AllocationFunction(rawValue: UInt8(truncatingIfNeeded: key >> 48)),
                  moduleGeneration: UInt8(truncatingIfNeeded: key >> 56))
    }

    /// The first word of a slot.
    @inline(__always)
    func slot(_ shard: Shard, _ slot: Int) -> UnsafeMutablePointer<UInt64> { shard.slots + words * slot }

    /// Copies a slot's words (2 or 3): word by word, as `update(from:count:)` with a count known
    /// only at run time is a call to memmove.
    @inline(__always)
    static func copySlot(_ source: UnsafeMutablePointer<UInt64>, to target: UnsafeMutablePointer<UInt64>, words: Int) {
        target[0] = source[0]
        target[1] = source[1]
        if words == 3 { target[2] = source[2] }
    }

    @inline(__always)
    func prefetch(_ address: UInt64) {
        let hash = Self.hash(address)
        let shard = shards[Int(hash >> UInt64(64 - Self.shardBits))]
        swl_prefetch_for_write(slot(shard, Self.home(hash, shard.capacity)))
    }

    /// The slot holding `address` in its shard, or -1.
    @inline(__always)
    func find(_ address: UInt64, hash: UInt64, in shard: Shard) -> Int {
        var index = Self.home(hash, shard.capacity)
        while true {
            let key = slot(shard, index)[0]
            if key == 0 { return -1 }
            if key & Self.addressMask == address { return index }
            index += 1
            if index == shard.capacity { index = 0 }
        }
    }

    /// The shard and slot of an ordinary block at `address`, or nil.
    @inline(__always)
    func locate(_ address: UInt64) -> UnsafeMutablePointer<UInt64>? {
        guard address <= Self.addressMask else { return nil }
        let hash = Self.hash(address)
        let shard = shards[Int(hash >> UInt64(64 - Self.shardBits))]
        let index = find(address, hash: hash, in: shard)
        return index >= 0 ? slot(shard, index) : nil
    }

    func lookup(_ address: UInt64) -> LiveBlock? {
        if let found = locate(address) { return Self.block(key: found[0], value: found[1]) }
        return oversized.isEmpty ? nil : oversized[address]?.block
    }

    func number(of address: UInt64) -> UInt64 {
        if let found = locate(address) { return numbered ? found[2] : 0 }
        return oversized.isEmpty ? 0 : oversized[address]?.number ?? 0
    }

    func renumber(_ address: UInt64, to number: UInt64) {
        guard numbered else { return }
        if let found = locate(address) {
            found[2] = number
        } else if !oversized.isEmpty, oversized[address] != nil {
            oversized[address]!.number = number
        }
    }

    /// Inlined into the model's batch loop: nearly every block fits a slot and there is no
    /// oversized one, so that test is all an insert pays beyond its shard (a call per event with
    /// the optional block returned through memory was ~10% of the model's instructions).
    @inline(__always)
    func insert(_ block: LiveBlock, number: UInt64, replacedNumber: inout UInt64) -> LiveBlock? {
        if Self.fits(block) && oversized.isEmpty {
            return insertInShard(block, number: numbered ? number : 0, replacedNumber: &replacedNumber)
        }
        return insertRarely(block, number: number, replacedNumber: &replacedNumber)
    }

    /// `insert` for a block that does not fit a slot, or while some block does not.
    @inline(never)
    func insertRarely(_ block: LiveBlock, number: UInt64, replacedNumber: inout UInt64) -> LiveBlock? {
        let number = numbered ? number : 0
        guard Self.fits(block) else {
            // One entry per address: an ordinary block there moves out of its shard.
            let old: LiveBlock?
            if let inShard = removeFromShard(block.address, number: &replacedNumber) {
                old = inShard
            } else if let previous = oversized[block.address] {
                old = previous.block
                replacedNumber = previous.number
                count -= 1
                totalBytes &-= previous.block.size & 0xffff_ffff_ffff
            } else {
                old = nil
            }
            oversized[block.address] = (block, number)
            count += 1
            totalBytes &+= block.size & 0xffff_ffff_ffff
            return old
        }
        if !oversized.isEmpty, let old = oversized.removeValue(forKey: block.address) {
            count -= 1
            totalBytes &-= old.block.size & 0xffff_ffff_ffff
            var none: UInt64 = 0
            _ = insertInShard(block, number: number, replacedNumber: &none)
            replacedNumber = old.number
            return old.block
        }
        return insertInShard(block, number: number, replacedNumber: &replacedNumber)
    }

    /// Inserts or replaces an ordinary block in its shard.
    @inline(__always)
    func insertInShard(_ block: LiveBlock, number: UInt64, replacedNumber: inout UInt64) -> LiveBlock? {
        let hash = Self.hash(block.address)
        let shardIndex = Int(hash >> UInt64(64 - Self.shardBits))
        if (shards[shardIndex].count + 1) * 4 > shards[shardIndex].capacity * 3 { grow(shardIndex) }
        let shard = shards[shardIndex]
        let words = self.words
        var index = Self.home(hash, shard.capacity)
        while true {
            let here = shard.slots + words * index
            let key = here[0]
            if key == 0 {
                here[0] = Self.keyWord(block)
                here[1] = Self.valueWord(block)
                if words == 3 { here[2] = number }
                shards[shardIndex].count += 1
                count += 1
                totalBytes &+= block.size
                return nil
            }
            if key & Self.addressMask == block.address {
                let old = Self.block(key: key, value: here[1])
                here[0] = Self.keyWord(block)
                here[1] = Self.valueWord(block)
                if words == 3 {
                    replacedNumber = here[2]
                    here[2] = number
                }
                totalBytes = totalBytes &- old.size &+ block.size
                return old
            }
            index += 1
            if index == shard.capacity { index = 0 }
        }
    }

    /// Inlined into the model's batch loop, as `insert` is.
    @inline(__always)
    func remove(_ address: UInt64, number: inout UInt64) -> LiveBlock? {
        if let removed = removeFromShard(address, number: &number) { return removed }
        return oversized.isEmpty ? nil : removeOversized(address, number: &number)
    }

    @inline(never)
    func removeOversized(_ address: UInt64, number: inout UInt64) -> LiveBlock? {
        guard let removed = oversized.removeValue(forKey: address) else { return nil }
        count -= 1
        totalBytes &-= removed.block.size & 0xffff_ffff_ffff
        number = removed.number
        return removed.block
    }

    @inline(__always)
    func removeFromShard(_ address: UInt64, number: inout UInt64) -> LiveBlock? {
        guard address <= Self.addressMask else { return nil }
        let hash = Self.hash(address)
        let shardIndex = Int(hash >> UInt64(64 - Self.shardBits))
        let shard = shards[shardIndex]
        let found = find(address, hash: hash, in: shard)
        guard found >= 0 else { return nil }
        let words = self.words
        let slots = shard.slots
        let capacity = shard.capacity
        let removed = Self.block(key: slots[words * found], value: slots[words * found + 1])
        number = words == 3 ? slots[3 * found + 2] : 0
        shards[shardIndex].count -= 1
        count -= 1
        totalBytes &-= removed.size
        // Backward shift: pull later members of the probe run into the hole so lookups never
        // need tombstones.
        var hole = found
        var next = hole + 1 == capacity ? 0 : hole + 1
        while slots[words * next] != 0 {
            if Self.belongsBefore(slots[words * next], hole: hole, next: next, capacity) {
                Self.copySlot(slots + words * next, to: slots + words * hole, words: words)
                hole = next
            }
            next = next + 1 == capacity ? 0 : next + 1
        }
        slots[words * hole] = 0
        slots[words * hole + 1] = 0
        if words == 3 { slots[3 * hole + 2] = 0 }
        return removed
    }

    /// Whether the block keyed `key`, found at `next`, moves into `hole`: unless its home lies
    /// cyclically in (hole, next].
    @inline(__always)
    static func belongsBefore(_ key: UInt64, hole: Int, next: Int, _ capacity: Int) -> Bool {
        let wanted = home(hash(key & addressMask), capacity)
        var distanceToNext = next - wanted
        if distanceToNext < 0 { distanceToNext += capacity }
        var distanceToHole = hole - wanted
        if distanceToHole < 0 { distanceToHole += capacity }
        return distanceToHole < distanceToNext
    }

    /// Makes one shard a fifth larger: a mapped shard in place (`growInPlace`), a small one into
    /// a new array.
    func grow(_ shardIndex: Int) {
        let old = shards[shardIndex]
        let capacity = max(old.capacity + old.capacity / 5, old.capacity + 4)
        if Self.isMapped(words: words * old.capacity) {
            growInPlace(shardIndex, to: capacity)
            return
        }
        let words = self.words
        let slots = Self.allocateWords(words * capacity)
        for index in 0..<old.capacity where old.slots[words * index] != 0 {
            let key = old.slots[words * index]
            // The new slots are scattered over memory the shard has not touched yet: ask for the
            // target of a block a little further on while this one moves.
            let ahead = index + Self.growPrefetchDistance
            if ahead < old.capacity, old.slots[words * ahead] != 0 {
                let home = Self.home(Self.hash(old.slots[words * ahead] & Self.addressMask), capacity)
                swl_prefetch_for_write(slots + words * home)
            }
            var target = Self.home(Self.hash(key & Self.addressMask), capacity)
            while slots[words * target] != 0 {
                target += 1
                if target == capacity { target = 0 }
            }
            Self.copySlot(old.slots + words * index, to: slots + words * target, words: words)
        }
        free(old)
        shards[shardIndex] = Shard(slots: slots, capacity: capacity, count: old.count)
    }

    /// Grows a mapped shard where it is: the mapping is enlarged (its pages move, nothing is
    /// copied, only the new part is zeroed), then every block is placed anew in the larger shard
    /// within the same memory. Copying into a fresh mapping instead zeroed every page of it and
    /// unmapped the old one each time, and with millions of live blocks those page faults and
    /// unmaps were a third of the drain's time (live_blocks); nor does the table need room for
    /// the old shard and the new one at once.
    ///
    /// The placing visits every old slot and moves its block, unless already placed, to the first
    /// slot from its new home that is empty or holds a block not yet placed (which is then taken
    /// up and placed in its turn). A placed block never moves again, and a slot between a placed
    /// block's home and its slot never empties (it held a placed block when that one was placed),
    /// so when all are placed every probe run is unbroken, as linear probing needs. The walk goes
    /// from the last slot down: a block's new home is its old one scaled up, so it mostly lies
    /// past every block not yet placed, blocks rarely displace another, and the reads and the
    /// writes each stream through memory in order (walking up, nearly every block displaced
    /// another far ahead: a third slower than copying).
    func growInPlace(_ shardIndex: Int, to capacity: Int) {
        let old = shards[shardIndex]
        let words = self.words
        guard let grown = swl_remap_larger(old.slots, Self.mappedLength(words: words * old.capacity),
                                           Self.mappedLength(words: words * capacity)) else {
            preconditionFailure("cannot grow the live-block table to \(Self.mappedLength(words: words * capacity)) bytes: \(String(cString: strerror(errno)))")
        }
        let slots = grown.bindMemory(to: UInt64.self, capacity: words * capacity)
        // One bit a slot: placed in the larger shard.
        let placedWords = (capacity + 63) / 64
        let placed = UnsafeMutablePointer<UInt64>.allocate(capacity: placedWords)
        placed.initialize(repeating: 0, count: placedWords)
        defer { placed.deallocate() }
        @inline(__always) func isPlaced(_ slot: Int) -> Bool { placed[slot >> 6] & (1 << UInt64(slot & 63)) != 0 }
        @inline(__always) func markPlaced(_ slot: Int) { placed[slot >> 6] |= 1 << UInt64(slot & 63) }
        for index in stride(from: old.capacity - 1, through: 0, by: -1) where slots[words * index] != 0 && !isPlaced(index) {
            // The block in hand: taken out of its slot, which stays empty unless a block lands there.
            let here = slots + words * index
            var key = here[0], value = here[1], number = words == 3 ? here[2] : 0
            here[0] = 0
            here[1] = 0
            if words == 3 { here[2] = 0 }
            while true {
                var target = Self.home(Self.hash(key & Self.addressMask), capacity)
                while slots[words * target] != 0 && isPlaced(target) {
                    target += 1
                    if target == capacity { target = 0 }
                }
                let there = slots + words * target
                let displaced = (key: there[0], value: there[1], number: words == 3 ? there[2] : 0)
                there[0] = key
                there[1] = value
                if words == 3 { there[2] = number }
                markPlaced(target)
                if displaced.key == 0 { break }
                (key, value, number) = displaced
            }
        }
        shards[shardIndex] = Shard(slots: slots, capacity: capacity, count: old.count)
    }

    func forEach(_ body: (LiveBlock) -> Void) {
        for shardIndex in 0..<Self.shardCount {
            let shard = shards[shardIndex]
            for index in 0..<shard.capacity where slot(shard, index)[0] != 0 {
                let here = slot(shard, index)
                body(Self.block(key: here[0], value: here[1]))
            }
        }
        for entry in oversized.values { body(entry.block) }
    }

    /// Hands every block to `body` with its running index and its number, freeing each shard once
    /// it is done; leaves the storage empty. Returns how many there were.
    func drain(_ body: (Int, LiveBlock, UInt64) -> Void) -> Int {
        var index = 0
        for shardIndex in 0..<Self.shardCount {
            let shard = shards[shardIndex]
            for position in 0..<shard.capacity where slot(shard, position)[0] != 0 {
                let here = slot(shard, position)
                body(index, Self.block(key: here[0], value: here[1]), numbered ? here[2] : 0)
                index += 1
            }
            free(shard)
            shards[shardIndex] = Shard(slots: Self.allocateWords(words * Self.minimumShardCapacity),
                                       capacity: Self.minimumShardCapacity, count: 0)
        }
        for entry in oversized.values {
            body(index, entry.block, entry.number)
            index += 1
        }
        oversized = [:]
        count = 0
        totalBytes = 0
        return index
    }
}

/// The live blocks at the end, sorted by address, in parallel arrays (20 bytes a block, 28 when
/// the table was numbered).
public struct SortedBlocks: Sendable {
    public private(set) var addresses: [UInt64]
    private var infos: [UInt64]
    public private(set) var stacks: [UInt32]
    /// The blocks' numbers (see `LiveBlockTable.startNumbering()`); empty when not numbered.
    public private(set) var numbers: [UInt64]

    init(addresses: [UInt64], infos: [UInt64], stacks: [UInt32], numbers: [UInt64] = []) {
        self.addresses = addresses
        self.infos = infos
        self.stacks = stacks
        self.numbers = numbers
    }

    public init(_ blocks: [LiveBlock]) {
        var table = LiveBlockTable()
        blocks.forEach { table.insert($0) }
        self = table.consumeSorted()
    }

    /// A block's size (48 bits), function and module generation in one word.
    @inline(__always)
    static func pack(_ block: LiveBlock) -> UInt64 {
        (block.size & 0xffff_ffff_ffff) | UInt64(block.function.rawValue) << 48 | UInt64(block.moduleGeneration) << 56
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

/// Sorts parallel arrays by the first (the addresses, distinct) in place, so sorting needs no index
/// permutation or copy of the arrays: memory is tightest at the exit scan. `numbers` is either as
/// long as the keys or empty. The sort runs while the program is frozen at its exit.
///
/// A most-significant-digit radix sort, American flag style: a pass over a range counts the
/// digits of its keys, then moves every entry straight into its digit's part by cycles of swaps,
/// and each part is sorted the same way on the next digit down, the small ones by insertion. The
/// digit is taken from the highest bit in which the range's keys differ (the bits above it are
/// the same in every key between the smallest and the largest), so the clustered addresses of a
/// heap cost no pass over the bits they share, and every pass splits its range. Its width follows
/// the range's size, so a part holds about eight entries after a pass over uniform keys. A pass
/// moves an entry at most once, and 2,000,000 heap blocks take three passes, where the quicksort
/// this replaced went about 20 partitions deep: perf on live_blocks' 2,000,000 blocks, 180 ms of
/// CPU in the quicksort against 84 ms (digits of 8 bits at most: 11 scattered the stores over
/// more pages than the TLB holds, 116 ms), and the program's frozen exit 110 ms shorter.
///
/// From `twoThreadMinimum` blocks on, the parts left after the first passes are shared out
/// between two threads by size: the program's core is free while it is frozen.
enum ParallelSort {
    static let twoThreadMinimum = 1 << 16
    /// Ranges this small are finished by insertion sort.
    static let insertionMaximum = 16
    static let widestDigit = 8

    static func sort(keys: UnsafeMutableBufferPointer<UInt64>, infos: UnsafeMutableBufferPointer<UInt64>,
                     stacks: UnsafeMutableBufferPointer<UInt32>, numbers: UnsafeMutableBufferPointer<UInt64>) {
        let arrays = Arrays(keys: keys, infos: infos, stacks: stacks, numbers: numbers)
        guard keys.count >= twoThreadMinimum else {
            arrays.sort([(0, keys.count)])
            return
        }
        // Passes over the largest part until none holds more than half of the blocks (one pass
        // nearly always; more when most blocks share a digit, as in one arena of a wide range).
        var parts = arrays.pass(0, keys.count)
        while let largest = parts.indices.max(by: { parts[$0].1 - parts[$0].0 < parts[$1].1 - parts[$1].0 }),
              parts[largest].1 - parts[largest].0 > keys.count / 2 {
            let (low, high) = parts.remove(at: largest)
            parts += arrays.pass(low, high)
        }
        // Biggest first, each to the thread with less so far.
        parts.sort { $0.1 - $0.0 > $1.1 - $1.0 }
        var mine: [(Int, Int)] = [], theirs: [(Int, Int)] = []
        var mineCount = 0, theirsCount = 0
        for part in parts {
            if mineCount <= theirsCount {
                mine.append(part)
                mineCount += part.1 - part.0
            } else {
                theirs.append(part)
                theirsCount += part.1 - part.0
            }
        }
        // The parts are disjoint: each thread owns its ranges of all the arrays.
        final class Job {
            let arrays: Arrays
            let parts: [(Int, Int)]
            init(_ arrays: Arrays, _ parts: [(Int, Int)]) { self.arrays = arrays; self.parts = parts }
        }
        let job = Unmanaged.passRetained(Job(arrays, theirs))
        var thread = pthread_t()
        let started = pthread_create(&thread, nil, { context in
            let job = Unmanaged<Job>.fromOpaque(context!).takeRetainedValue()
            job.arrays.sort(job.parts)
            return nil
        }, job.toOpaque()) == 0
        if !started {
            job.release()
            arrays.sort(theirs)
        }
        arrays.sort(mine)
        if started { pthread_join(thread, nil) }
    }

    struct Arrays: @unchecked Sendable {
        let keys: UnsafeMutableBufferPointer<UInt64>
        let infos: UnsafeMutableBufferPointer<UInt64>
        let stacks: UnsafeMutableBufferPointer<UInt32>
        let numbers: UnsafeMutableBufferPointer<UInt64>

        @inline(__always) func swapAt(_ a: Int, _ b: Int) {
            keys.swapAt(a, b)
            infos.swapAt(a, b)
            stacks.swapAt(a, b)
            if !numbers.isEmpty { numbers.swapAt(a, b) }
        }

        /// Sorts each of the ranges `low..<high`.
        func sort(_ ranges: [(Int, Int)]) {
            var pending = ranges
            var counts = [Int](repeating: 0, count: 2 << ParallelSort.widestDigit)
            counts.withUnsafeMutableBufferPointer { counts in
                while let (low, high) = pending.popLast() {
                    if high - low <= ParallelSort.insertionMaximum {
                        insertionSort(low, high)
                    } else {
                        pass(low, high, counts) { pending.append($0) }
                    }
                }
            }
        }

        /// One pass over `low..<high`: returns its parts, each still to sort.
        func pass(_ low: Int, _ high: Int) -> [(Int, Int)] {
            var parts: [(Int, Int)] = []
            var counts = [Int](repeating: 0, count: 2 << ParallelSort.widestDigit)
            counts.withUnsafeMutableBufferPointer { counts in
                pass(low, high, counts) { parts.append($0) }
            }
            return parts
        }

        /// Moves the entries of `low..<high` into their parts by the next digit and hands each
        /// part of two entries or more to `part`. `scratch`: room for two counters per digit.
        @inline(__always)
        func pass(_ low: Int, _ high: Int, _ scratch: UnsafeMutableBufferPointer<Int>, part: ((Int, Int)) -> Void) {
            var smallest = keys[low], largest = keys[low]
            for index in (low + 1)..<high {
                let key = keys[index]
                smallest = Swift.min(smallest, key)
                largest = Swift.max(largest, key)
            }
            let differing = smallest ^ largest
            guard differing != 0 else { return }  // equal keys (never two live blocks): in order
            let topBit = 63 - differing.leadingZeroBitCount
            let size = high - low
            let width = Swift.min(ParallelSort.widestDigit, Swift.max(4, (64 - size.leadingZeroBitCount) - 3), topBit + 1)
            let shift = UInt64(topBit + 1 - width)
            let mask = (UInt64(1) << UInt64(width)) - 1
            let digits = 1 << width
            // scratch[d]: where part d's next entry goes; scratch[digits + d]: where part d ends.
            let next = scratch.baseAddress!, end = scratch.baseAddress! + digits
            next.update(repeating: 0, count: digits)
            for index in low..<high { next[Int(truncatingIfNeeded: (keys[index] >> shift) & mask)] += 1 }
            var start = low
            for digit in 0..<digits {
                let count = next[digit]
                next[digit] = start
                start += count
                end[digit] = start
            }
            for digit in 0..<digits {
                var position = next[digit]
                let stop = end[digit]
                while position < stop {
                    let home = Int(truncatingIfNeeded: (keys[position] >> shift) & mask)
                    if home == digit {
                        position += 1
                    } else {
                        // Into its part, and the entry there comes here to be placed in turn.
                        swapAt(position, next[home])
                        next[home] += 1
                    }
                }
            }
            var partStart = low
            for digit in 0..<digits {
                let partEnd = end[digit]
                if partEnd - partStart > 1 { part((partStart, partEnd)) }
                partStart = partEnd
            }
        }

        func insertionSort(_ low: Int, _ high: Int) {
            guard high - low > 1 else { return }
            for index in (low + 1)..<high {
                var position = index
                while position > low && keys[position - 1] > keys[position] {
                    swapAt(position - 1, position)
                    position -= 1
                }
            }
        }
    }
}
